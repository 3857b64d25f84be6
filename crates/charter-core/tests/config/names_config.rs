//! The names `check` knows each place sees: fields of `context` against the charter's
//! `context:`, and the templates and expressions of polls, context fetches, extractors,
//! e-mail recipients and alerts, each reported at its file:line:column.

use std::collections::BTreeMap;

use charter_core::config::{ProjectSource, load_project};

const PROJECT: &str = r#"connectors:
  crm:
    type: http
    base_url: http://127.0.0.1:9000
    allow_private: true
  mail:
    type: smtp
    host: smtp.acme.example
    tls: starttls
    from: charter@acme.example
providers:
  default: { type: openai, base_url: http://127.0.0.1:8081/v1, model: m }
"#;

/// Every place that may read `context.customer` reads it; the places that run before the
/// records are fetched (`dedupe`, `get`, an alert's `when`) read the event only.
const ORDERS: &str = r#"name: orders
description: Orders are answered.
owner: a@acme.example
maintainer: b@acme.example
system_of_record: crm
mode: live
uses: [crm, mail]
trigger:
  webhook: { path: /hooks/orders, verify: none }
  dedupe: "{{ payload.id }}:{{ event.type }}"
  text: "{{ payload.subject }} {{ context.customer.tier }}"
context:
  customer: { connector: crm, get: "/customers/{{ payload.customer_id }}" }
decide:
  labels: [vip, other]
  stages:
    - rules:
        - { when: 'context.customer.tier == "gold"', label: vip, fields: { tier: "{{ context.customer.tier }}" } }
  otherwise: other
  extract:
    email: { template: "{{ context.customer.email }}" }
    city: { regex: '(\w+)', in: context.customer.city }
routes:
  - when: 'decision.label == "vip" && context.customer != null'
    do: [note, mail_customer]
  - when: "true"
    do: [note]
actions:
  note:
    log: "{{ decision.label }} for {{ context.customer.name }}"
    approval: auto
  mail_customer:
    connector: mail
    email: { to: "{{ context.customer.email }}", subject: "Hi", body: "Hello {{ context.customer.name }}" }
    approval: auto
alerts:
  - stuck: { older_than: 10m, when: 'payload.priority == "high"', notify: crm }
escalation: { to: ops }
measure:
  success: [answered]
"#;

const TICKETS: &str = r#"name: tickets
description: Polled tickets.
owner: a@acme.example
maintainer: b@acme.example
system_of_record: crm
mode: live
uses: [crm]
trigger:
  poll:
    connector: crm
    path: "/tickets?since={{ cursor }}&raw={{ cursor_raw }}"
    items: /results
    key: "{{ item.id }}:{{ payload.updated_at }}:{{ cursor }}"
    cursor: { max: /updated_at }
routes:
  - when: "true"
    do: [note]
actions:
  note:
    log: "{{ payload.id }}"
    approval: auto
escalation: { to: ops }
measure:
  success: [noted]
"#;

fn source(charters: &[(&str, &str)]) -> ProjectSource {
    let mut files = BTreeMap::new();
    files.insert("charter.yaml".to_string(), PROJECT.to_string());
    files.insert(
        "prompts/classify.md".to_string(),
        "Classify for {{ context.customer.name }} ({{ event.type }}, {{ labels }}, {{ fields }}, {{ context.payload.id }}): {{ text }}".to_string(),
    );
    files.insert(
        "prompts/reply.md".to_string(),
        "Answer {{ payload.subject }} as {{ decision.label }} for {{ context.customer.name }}: {{ text }}".to_string(),
    );
    for (path, text) in charters {
        files.insert(path.to_string(), text.to_string());
    }
    ProjectSource { files }
}

/// The diagnostics, one per line; the project must fail.
fn problems(src: &ProjectSource) -> Vec<String> {
    match load_project(src) {
        Ok(_) => panic!("expected the project to fail validation"),
        Err(d) => d.to_string().lines().map(str::to_string).collect(),
    }
}

/// `bad` made of `ORDERS` with each `(from, to)` replaced (each `from` must be there).
fn orders_with(changes: &[(&str, &str)]) -> String {
    let mut text = ORDERS.to_string();
    for (from, to) in changes {
        assert!(text.contains(from), "the fixture has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    text
}

/// Each expected line starts a reported line, and nothing else is reported.
fn assert_exactly(lines: &[String], expect: &[&str]) {
    for e in expect {
        assert!(
            lines.iter().any(|l| l.starts_with(e)),
            "missing {e:?} in:\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(lines.len(), expect.len(), "{}", lines.join("\n"));
}

/// `ORDERS` with an `llm` stage reading `prompts/classify.md` (line 19) and a draft on
/// `note` reading `prompts/reply.md` (line 31).
fn orders_with_prompts() -> String {
    orders_with(&[
        (
            "  otherwise: other\n",
            "    - llm: { provider: default, prompt: prompts/classify.md, accept_above: 0.7 }\n  otherwise: other\n",
        ),
        (
            "    log: \"{{ decision.label }}",
            "    draft: { prompt: prompts/reply.md }\n    log: \"{{ decision.label }}",
        ),
    ])
}

#[test]
fn declared_context_records_are_read_everywhere_they_exist() {
    load_project(&source(&[
        ("charters/orders.yaml", ORDERS),
        ("charters/tickets.yaml", TICKETS),
    ]))
    .unwrap_or_else(|d| panic!("{d}"));
    load_project(&source(&[("charters/orders.yaml", &orders_with_prompts())]))
        .unwrap_or_else(|d| panic!("{d}"));
}

/// Prompt files see `text`, `labels`, `fields`, `payload`, `event`, `decision` (null for
/// an `llm` stage) and `context` (the records, and the evaluation context's own keys).
#[test]
fn prompt_files_are_checked_at_their_prompt_key() {
    let mut src = source(&[("charters/orders.yaml", &orders_with_prompts())]);
    src.files.insert(
        "prompts/classify.md".into(),
        "{{ txt }} {{ decision.label }} {{ context.custmer.name }} {{ context.event.id }}".into(),
    );
    src.files.insert(
        "prompts/reply.md".into(),
        "{{ decision.label }} {{ headers.x }} {{ event.idd }}".into(),
    );
    let lines = problems(&src);
    assert_exactly(
        &lines,
        &[
            "charters/orders.yaml:19:41: prompt file `prompts/classify.md`: `context` has no field `custmer` (did you mean `context.customer`?)",
            "charters/orders.yaml:19:41: prompt file `prompts/classify.md`: `decision.label` is not known here: an `llm` stage's prompt is rendered to make the decision (`decision` is null)",
            "charters/orders.yaml:19:41: prompt file `prompts/classify.md`: unknown name `txt` (did you mean `text`?); expected one of `text`, `labels`, `fields`, `payload`, `event`, `decision`, `context`",
            "charters/orders.yaml:31:22: prompt file `prompts/reply.md`: `event` has no field `idd` (did you mean `event.id`?)",
            "charters/orders.yaml:31:22: prompt file `prompts/reply.md`: unknown name `headers`",
        ],
    );
}

#[test]
fn undeclared_context_fields_are_found_in_expressions_and_templates() {
    let bad = orders_with(&[
        (
            "{{ context.customer.tier }}\"\n",
            "{{ context.custmer.tier }}\"\n",
        ),
        (
            "{ when: 'context.customer.tier",
            "{ when: 'context.custmer.tier",
        ),
        (
            "template: \"{{ context.customer.email }}\"",
            "template: \"{{ context.customr.email }}\"",
        ),
        ("in: context.customer.city", "in: context.cust.city"),
        (
            "&& context.customer != null",
            "&& context.customers != null",
        ),
        (
            "{{ context.customer.name }}\"\n",
            "{{ context.client.name }}\"\n",
        ),
        (
            "to: \"{{ context.customer.email }}\"",
            "to: \"{{ context.custmer.email }}\"",
        ),
    ]);
    let lines = problems(&source(&[("charters/orders.yaml", &bad)]));
    assert_exactly(
        &lines,
        &[
            "charters/orders.yaml:11:9: `text`: `context` has no field `custmer` (did you mean `context.customer`?); expected one of `customer` (the names under `context:`)",
            "charters/orders.yaml:18:19: `when`: `context` has no field `custmer` (did you mean `context.customer`?)",
            "charters/orders.yaml:21:24: `template`: `context` has no field `customr` (did you mean `context.customer`?)",
            "charters/orders.yaml:22:33: `in`: `context` has no field `cust`; expected one of `customer`",
            "charters/orders.yaml:24:11: `when`: `context` has no field `customers` (did you mean `context.customer`?)",
            "charters/orders.yaml:30:10: `log`: `context` has no field `client`; expected one of `customer`",
            "charters/orders.yaml:34:18: `to`: `context` has no field `custmer` (did you mean `context.customer`?)",
        ],
    );
}

#[test]
fn without_a_context_section_any_context_field_is_an_error() {
    let bad = orders_with(&[(
        "context:\n  customer: { connector: crm, get: \"/customers/{{ payload.customer_id }}\" }\n",
        "",
    )]);
    let lines = problems(&source(&[("charters/orders.yaml", &bad)]));
    let not_declared = "is not declared: this charter has no `context:`";
    // text, rule when and fields, extractor template and `in`, route, log, to, body.
    for (at, name) in [
        (
            "charters/orders.yaml:11:9: `text`: `context.customer`",
            "text",
        ),
        (
            "charters/orders.yaml:16:19: `when`: `context.customer`",
            "rule",
        ),
        (
            "charters/orders.yaml:16:82: `fields.tier`: `context.customer`",
            "fields",
        ),
        (
            "charters/orders.yaml:19:24: `template`: `context.customer`",
            "template",
        ),
        ("charters/orders.yaml:20:33: `in`: `context.customer`", "in"),
        (
            "charters/orders.yaml:22:11: `when`: `context.customer`",
            "route",
        ),
        (
            "charters/orders.yaml:28:10: `log`: `context.customer`",
            "log",
        ),
        ("charters/orders.yaml:32:18: `to`: `context.customer`", "to"),
        (
            "charters/orders.yaml:32:71: `body`: `context.customer`",
            "body",
        ),
    ] {
        let want = format!("{at} {not_declared}");
        assert!(
            lines.iter().any(|l| l.starts_with(&want)),
            "{name}: missing {want:?} in:\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(lines.len(), 9, "{}", lines.join("\n"));
}

#[test]
fn places_before_the_context_and_the_decision_see_the_event_only() {
    let bad = orders_with(&[
        (
            "dedupe: \"{{ payload.id }}:{{ event.type }}\"",
            "dedupe: \"{{ payload.id }}:{{ context.customer.id }}:{{ event.tyep }}\"",
        ),
        (
            "get: \"/customers/{{ payload.customer_id }}\"",
            "get: \"/customers/{{ payload.customer_id }}/{{ context.customer.id }}/{{ decision.label }}\"",
        ),
        (
            "when: 'payload.priority == \"high\"'",
            "when: 'context.customer.tier == \"gold\" && decision.label == \"vip\" && paylod.x'",
        ),
    ]);
    let lines = problems(&source(&[("charters/orders.yaml", &bad)]));
    assert_exactly(
        &lines,
        &[
            "charters/orders.yaml:10:11: `dedupe`: `context.customer` is not known here: `dedupe` is computed when the event arrives, before `context:` is fetched (`context` is empty)",
            "charters/orders.yaml:10:11: `dedupe`: `event` has no field `tyep` (did you mean `event.type`?)",
            "charters/orders.yaml:13:36: `get`: `context.customer` is not known here: a context `get` is rendered before any record is fetched (fetches do not see each other) (`context` is empty)",
            "charters/orders.yaml:13:36: `get`: `decision.label` is not known here: a context `get` is rendered before the decision (`decision` is null)",
            "charters/orders.yaml:37:37: `when`: `context.customer` is not known here: an alert's `when` sees the stored event, without its context (`context` is empty)",
            "charters/orders.yaml:37:37: `when`: `decision.label` is not known here: an alert's `when` sees the stored event, without its decision (`decision` is null)",
            "charters/orders.yaml:37:37: `when`: unknown name `paylod` (did you mean `payload`?)",
        ],
    );
}

#[test]
fn poll_templates_see_the_cursor_and_each_item() {
    let bad = TICKETS
        .replace(
            "&raw={{ cursor_raw }}",
            "&raw={{ cursor_raw }}&since={{ payload.since }}",
        )
        .replace("{{ item.id }}", "{{ itme.id }}");
    assert_ne!(bad, TICKETS);
    let lines = problems(&source(&[("charters/tickets.yaml", &bad)]));
    assert_exactly(
        &lines,
        &[
            "charters/tickets.yaml:11:11: `path`: unknown name `payload`; expected one of `cursor`, `cursor_raw`",
            "charters/tickets.yaml:13:10: `key`: unknown name `itme` (did you mean `item`?); expected one of `item`, `payload`, `cursor`",
        ],
    );
}

/// A draft prompt that reads `decision` is refused, like an action template, when an agent
/// token may call the action as an MCP tool (which runs without a decision).
#[test]
fn a_draft_prompt_reading_the_decision_is_refused_for_mcp_callers() {
    let mut src = source(&[("charters/orders.yaml", &orders_with_prompts())]);
    src.files.insert(
        "charter.yaml".into(),
        format!("{PROJECT}tokens:\n  - {{ name: bot, role: agent, secret: env:BOT }}\n"),
    );
    let lines = problems(&src);
    let mcp = "uses `decision`, but agent token `bot` may call this action as an MCP tool";
    assert_exactly(
        &lines,
        &[
            &format!("charters/orders.yaml:31:22: action `note`: `prompt` {mcp}"),
            &format!("charters/orders.yaml:32:10: action `note`: `log` {mcp}"),
        ],
    );
}
