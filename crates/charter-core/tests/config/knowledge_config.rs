//! `knowledge:` sources, `retrieve` context steps and `draft.cite`: valid values load into
//! typed ones, and each mistake is reported at its file:line:column.

use std::time::Duration;

use charter_core::config::{KnowledgeKind, load_project};
use charter_core::knowledge::DocFormat;

use super::source;

const PROJECT: &str = r#"connectors:
  helpdesk: { type: http, base_url: https://helpdesk.example.com }
  zendesk: { type: http, preset: zendesk, base_url: https://acme.zendesk.com, auth: { bearer: env:ZD } }
  wiki: { type: http, base_url: https://wiki.example.com }
  mail: { type: smtp, host: smtp.example.com, tls: starttls, from: bot@example.com }
providers:
  default: { type: openai, base_url: https://llm.example.com/v1, model: m }
knowledge:
  handbook:
    owner: docs@example.com
    folder: knowledge/handbook
    url: "https://help.example.com/{path}"
    refresh: 10m
    max_age: 180d
    on_gap: helpdesk:/tasks
  helpcenter: { owner: support@example.com, connector: zendesk, preset: zendesk_help_center }
  pages:
    owner: wiki@example.com
    connector: wiki
    list: { path: /api/pages, items: /items, next: /next, id: /id, title: /title, body: /content, format: markdown, max_pages: 5 }
"#;

const CHARTER: &str = r#"name: answers
description: answers questions
owner: a@example.com
maintainer: b@example.com
system_of_record: helpdesk
mode: live
uses: [helpdesk]
trigger:
  webhook: { path: /hooks/answers, verify: none }
context:
  kb:
    retrieve: { query: "{{ payload.question }}", sources: [handbook, helpcenter], top_k: 3, min_score: 0.25 }
routes:
  - when: size(context.kb.passages) > 0
    do: [reply]
actions:
  reply:
    connector: helpdesk
    draft: { prompt: prompts/answer.md, cite: kb, cite_every_sentence: true }
    request: { method: POST, path: /replies, json: { body: "{{ draft }}" } }
    approval: { reviewers: [support] }
    measure: done
escalation: { to: support }
measure:
  success: [done]
"#;

const PROMPT: &str =
    "{% for p in context.kb.passages %}[{{ p.n }}] {{ p.text }}\n{% endfor %}{{ text }}";

fn project(project: &str, charter: &str) -> charter_core::config::ProjectSource {
    source(&[
        ("charter.yaml", project),
        ("charters/answers.yaml", charter),
        ("prompts/answer.md", PROMPT),
    ])
}

fn errors(project_text: &str, charter: &str) -> String {
    match load_project(&project(project_text, charter)) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d.to_string(),
    }
}

#[test]
fn knowledge_sources_retrieve_steps_and_citations_load() {
    let p = load_project(&project(PROJECT, CHARTER)).unwrap_or_else(|e| panic!("{e}"));
    let h = &p.knowledge["handbook"];
    assert_eq!(h.owner, "docs@example.com");
    assert_eq!(h.refresh, Some(Duration::from_secs(600)));
    assert_eq!(h.max_age, Some(Duration::from_secs(180 * 86_400)));
    assert_eq!(h.chunk_words, 120);
    assert_eq!(h.on_gap.as_ref().unwrap().connector, "helpdesk");
    assert_eq!(h.on_gap.as_ref().unwrap().path.as_deref(), Some("/tasks"));
    assert!(
        matches!(&h.kind, KnowledgeKind::Folder { path, url: Some(_) } if path == "knowledge/handbook")
    );
    match &p.knowledge["helpcenter"].kind {
        KnowledgeKind::Http { connector, list } => {
            assert_eq!(connector, "zendesk");
            assert!(list.path.starts_with("/api/v2/help_center/articles.json"));
            assert_eq!(list.items, "/articles");
            assert_eq!(list.next.as_deref(), Some("/next_page"));
            assert_eq!(list.url.as_deref(), Some("/html_url"));
            assert_eq!(list.format, DocFormat::Html);
        }
        other => panic!("{other:?}"),
    }
    match &p.knowledge["pages"].kind {
        KnowledgeKind::Http { list, .. } => {
            assert_eq!(list.body, "/content");
            assert_eq!(list.format, DocFormat::Markdown);
            assert_eq!(list.max_pages, 5);
            assert_eq!(list.updated_at, None);
        }
        other => panic!("{other:?}"),
    }
    let c = &p.charters["answers"];
    assert!(c.context.is_empty(), "a retrieve step is not an HTTP fetch");
    assert_eq!(c.retrieve.len(), 1);
    assert_eq!(c.retrieve[0].name, "kb");
    assert_eq!(c.retrieve[0].sources, ["handbook", "helpcenter"]);
    assert_eq!(c.retrieve[0].top_k, 3);
    assert_eq!(c.retrieve[0].min_score, 0.25);
    let cite = c.actions["reply"]
        .draft
        .as_ref()
        .unwrap()
        .cite
        .clone()
        .unwrap();
    assert_eq!(cite.context, "kb");
    assert!(cite.every_sentence);
}

#[test]
fn knowledge_mistakes_are_reported_where_they_are() {
    let broken = PROJECT
        .replace("folder: knowledge/handbook", "folder: ../outside")
        .replace("preset: zendesk_help_center", "preset: zendesk_guide")
        .replace("on_gap: helpdesk:/tasks", "on_gap: mail")
        .replace("id: /id, ", "id: id, ")
        .replace("    refresh: 10m\n", "    refresh: 2s\n");
    let out = errors(&broken, CHARTER);
    for expected in [
        "charter.yaml:11:13: knowledge `handbook`: `folder` is `../outside`; expected a folder inside the project",
        "charter.yaml:13:14: `refresh` is shorter than 10s",
        "charter.yaml:15:13: knowledge `handbook`: `on_gap` names connector `mail`, a `smtp` connector",
        "charter.yaml:16:73: knowledge `helpcenter`: unknown `preset` `zendesk_guide`; expected one of `zendesk_help_center`",
        "charter.yaml:20:63: knowledge `pages`: `list.id` is `id`; expected a JSON pointer such as `/id`",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn retrieve_and_cite_mistakes_name_the_place() {
    let broken = CHARTER
        .replace(
            "sources: [handbook, helpcenter]",
            "sources: [handbook, faq]",
        )
        .replace("min_score: 0.25", "min_score: 2")
        .replace("cite: kb", "cite: customer");
    let out = errors(PROJECT, &broken);
    for expected in [
        "charters/answers.yaml:12:70: context `kb`: knowledge source `faq` is not declared; expected one of `handbook`, `helpcenter`, `pages`",
        "charters/answers.yaml:12:97: `min_score` is 2; expected a share of the question's terms between 0 and 1",
        "charters/answers.yaml:19:47: `cite` names `customer`, which is not a `retrieve` context of this charter; expected one of `kb`",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // A retrieve step takes no connector keys; a source needs folder or connector.
    let mixed = CHARTER.replace(
        "    retrieve: {",
        "    connector: helpdesk\n    retrieve: {",
    );
    let out = errors(PROJECT, &mixed);
    assert!(
        out.contains("context `kb`: `connector` belongs to a fetched record"),
        "{out}"
    );
    let none = PROJECT.replace(
        "  helpcenter: { owner: support@example.com, connector: zendesk, preset: zendesk_help_center }",
        "  helpcenter: { owner: support@example.com }",
    );
    let out = errors(&none, CHARTER);
    assert!(
        out.contains("knowledge `helpcenter` has neither `folder`"),
        "{out}"
    );
    // A prompt reading a context the charter does not declare is still refused.
    let src = project(PROJECT, CHARTER);
    let mut files = src.files.clone();
    files.insert(
        "prompts/answer.md".into(),
        "{{ context.faq.passages }}".into(),
    );
    let out = match load_project(&charter_core::config::ProjectSource { files }) {
        Ok(_) => panic!("expected an error"),
        Err(d) => d.to_string(),
    };
    assert!(out.contains("faq"), "{out}");
}
