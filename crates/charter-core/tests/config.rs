//! Loading and validating projects: a complete valid project, the scaffolds, and the
//! diagnostics for broken charters (snapshots of the full output).

/// `knowledge:` sources, `retrieve` steps and `draft.cite`.
#[path = "config/knowledge_config.rs"]
mod knowledge_config;
/// The `escalation.notify` checks, compiled into this one test binary.
#[path = "config/notify_config.rs"]
mod notify_config;

/// Expressions of a loaded charter (`matches()` patterns compiled once).
#[path = "config/expressions.rs"]
mod expressions;
/// Fields of `context`, and the names polls, context fetches, extractors, recipients and
/// alerts see.
#[path = "config/names_config.rs"]
mod names_config;
/// A route's rollout keys and which mode it runs in.
#[path = "config/rollout_config.rs"]
mod rollout_config;
/// URL templates, e-mail recipients, MCP conditions, unreachable connector addresses.
#[path = "config/safety_config.rs"]
mod safety_config;
/// The published JSON Schemas and key reference: generated, committed, and satisfied by
/// every project in the repository.
#[path = "config/schema_files.rs"]
mod schema_files;

use std::time::Duration;

use charter_core::config::{
    ActionKind, Approval, ConnectorKind, Dedupe, FieldType, HttpAuth, Mode, OnExpiry, Otherwise,
    ProjectSource, RetryPolicy, Role, SecretRef, Stage, WorkerSettings, load_project,
};
use charter_core::scaffold::{demo_project, init_project};
use charter_core::verify::{self, HmacAlgorithm, SignatureEncoding, VerifySpec};
use serde_json::json;

const PROJECT: &str = r#"server:
  listen: 0.0.0.0:9090
  body_limit: 512KiB
  public_url: https://charter.acme.example
store: data/charter.db
worker:
  lease: 45s
  concurrency: 8
connectors:
  helpdesk:
    type: http
    base_url: http://127.0.0.1:9000
    headers: { X-Team: ops, X-Version: 2 }
    auth: { bearer: env:HELPDESK_TOKEN }
    timeout: 3s
    allow_private: true
  crm:
    type: http
    base_url: https://crm.example.com
    auth: { basic: { username: bot, password: file:secrets/crm } }
tokens:
  - { name: ops, role: admin, secret: env:CHARTER_ADMIN_TOKEN, charters: [support-triage] }
  - { name: viewer, role: viewer, secret: file:secrets/viewer }
providers:
  default: { type: openai, base_url: http://127.0.0.1:8081/v1, model: qwen2.5-0.5b, mode: json_object }
"#;

const TRIAGE: &str = r#"name: support-triage
description: Classify inbound helpdesk tickets and route them.
owner: ops-lead@acme.example
maintainer: integrations@acme.example
system_of_record: helpdesk
mode: shadow
uses: [helpdesk, crm]
concurrency: 2
trigger:
  webhook:
    path: /hooks/helpdesk/tickets
    verify: { preset: stripe, secrets: [env:A, env:B], tolerance: 2m }
  dedupe: "{{ payload.ticket.id }}:{{ payload.ticket.updated_at }}"
  input_schema: schemas/ticket.json
  text: "{{ payload.ticket.subject }}"
decide:
  labels: [billing, bug, other]
  stages:
    - rules:
        - { when: 'payload.ticket.subject.contains("refund")', label: billing }
        - { when: true, label: other, fields: { priority: "{{ payload.ticket.priority }}" } }
    - embedded: { examples: data/tickets.csv, accept_above: 0.85 }
    - llm: { provider: default, prompt: prompts/triage.md, accept_above: 0.7 }
  otherwise: other
  extract:
    order_id: { type: string, pattern: "ORD-[0-9]+", required: false }
    urgency: { enum: [low, medium, high], required: true }
routes:
  - when: decision.label == "billing"
    do: [assign_billing, note]
  - when: "true"
    do: [note]
actions:
  assign_billing:
    connector: helpdesk
    request:
      method: put
      path: "/api/v2/tickets/{{ payload.ticket.id }}"
      headers: { X-Source: charter }
      json: { ticket: { group_id: 42, id: "{{ payload.ticket.id }}" } }
      timeout: 5s
    approval: { reviewers: [leads], expires: 4h, on_expiry: reject }
    retry: { attempts: 3, backoff: 1s }
    measure: ticket_routed
  note:
    log: "routed {{ event.id }} as {{ decision.label }}"
    approval: auto
escalation: { to: support-leads }
measure:
  success: [ticket_routed]
  failure: [ticket_bounced]
"#;

const HOOKS: &str = r#"name: hooks
description: Generic HMAC.
owner: a@b.example
maintainer: c@d.example
system_of_record: crm
mode: live
uses: [crm]
trigger:
  webhook:
    path: /hooks/generic
    verify:
      preset: hmac
      header: X-Signature
      algorithm: sha512
      encoding: base64
      prefix: "sha512="
      timestamp_header: X-Timestamp
      signed: "{timestamp}.{body}"
      secret: env:S
  dedupe: { header: X-Delivery-Id }
routes:
  - when: "true"
    do: [post]
actions:
  post:
    request: { method: POST, url: "https://hooks.example.com/in" }
    approval: auto
escalation: { to: ops }
measure:
  done: [posted]
"#;

const SCHEMA: &str = r#"{"type": "object", "required": ["ticket"]}"#;

fn source(files: &[(&str, &str)]) -> ProjectSource {
    ProjectSource {
        files: files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect(),
    }
}

/// The valid project with `charters/triage.yaml` replaced by `triage`.
fn with_triage(triage: &str) -> ProjectSource {
    source(&[
        ("charter.yaml", PROJECT),
        ("charters/triage.yaml", triage),
        ("schemas/ticket.json", SCHEMA),
        ("data/tickets.csv", "text,label\nrefund please,billing\n"),
        ("prompts/triage.md", "Classify: {{ text }}"),
    ])
}

/// The full diagnostics output for a project expected to fail.
fn diagnostics(src: &ProjectSource) -> String {
    match load_project(src) {
        Ok(_) => panic!("expected the project to fail validation"),
        Err(d) => {
            assert!(!d.0.is_empty());
            d.to_string()
        }
    }
}

#[test]
fn valid_project_parses_into_expected_values() {
    let mut src = with_triage(TRIAGE);
    src.files
        .insert("charters/hooks.yml".to_string(), HOOKS.to_string());
    let project = load_project(&src).unwrap_or_else(|d| panic!("{d}"));

    let s = &project.settings;
    assert_eq!(s.listen.as_deref(), Some("0.0.0.0:9090"));
    assert_eq!(s.body_limit, 512 * 1024);
    assert_eq!(
        s.public_url.as_deref(),
        Some("https://charter.acme.example")
    );
    assert_eq!(s.store, "data/charter.db");
    assert_eq!(s.worker.lease, Duration::from_secs(45));
    assert_eq!(s.worker.concurrency, 8);
    assert_eq!(
        s.worker.poll_interval,
        WorkerSettings::default().poll_interval
    );

    let ConnectorKind::Http(h) = &project.connectors["helpdesk"].kind else {
        panic!("expected an http connector")
    };
    assert_eq!(h.base_url, "http://127.0.0.1:9000");
    assert_eq!(h.headers["X-Team"], "ops");
    assert_eq!(h.headers["X-Version"], "2");
    assert_eq!(
        h.auth,
        Some(HttpAuth::Bearer(SecretRef::Env("HELPDESK_TOKEN".into())))
    );
    assert_eq!(h.timeout, Duration::from_secs(3));
    assert!(h.allow_private);
    let ConnectorKind::Http(crm) = &project.connectors["crm"].kind else {
        panic!("expected an http connector")
    };
    assert_eq!(
        crm.timeout,
        Duration::from_secs(10),
        "default connector timeout"
    );
    assert!(!crm.allow_private);
    assert_eq!(
        crm.auth,
        Some(HttpAuth::Basic {
            username: "bot".into(),
            password: SecretRef::File("secrets/crm".into())
        })
    );

    assert_eq!(project.tokens.len(), 2);
    assert_eq!(project.tokens[0].role, Role::Admin);
    assert_eq!(project.tokens[0].charters, vec!["support-triage"]);
    assert_eq!(
        project.tokens[1].secret,
        SecretRef::File("secrets/viewer".into())
    );

    assert_eq!(
        project.charters.keys().collect::<Vec<_>>(),
        vec!["hooks", "support-triage"]
    );
    let c = &project.charters["support-triage"];
    assert_eq!(c.file, "charters/triage.yaml");
    assert_eq!(c.version.len(), 16);
    assert!(c.version.chars().all(|ch| ch.is_ascii_hexdigit()));
    assert_eq!(c.owner, "ops-lead@acme.example");
    assert_eq!(c.system_of_record, "helpdesk");
    assert_eq!(c.mode, Mode::Shadow);
    assert_eq!(c.uses, vec!["helpdesk", "crm"]);
    assert_eq!(c.concurrency, 2);

    let wh = c.trigger.webhook.as_ref().unwrap();
    assert_eq!(wh.path, "/hooks/helpdesk/tickets");
    assert_eq!(
        wh.verify,
        VerifySpec::Stripe {
            tolerance: Duration::from_secs(120)
        }
    );
    assert_eq!(
        wh.secrets,
        vec![SecretRef::Env("A".into()), SecretRef::Env("B".into())]
    );
    let ctx = json!({
        "payload": { "ticket": { "id": 7, "updated_at": "t1", "subject": "I want a refund", "priority": "high" } },
        "event": { "id": "ev-1" },
        "decision": { "label": "billing" },
    });
    let Some(Dedupe::Template(dedupe)) = &c.trigger.dedupe else {
        panic!("expected a dedupe template")
    };
    assert_eq!(dedupe.render(&ctx).unwrap(), "7:t1");
    assert_eq!(
        c.trigger.text.as_ref().unwrap().render(&ctx).unwrap(),
        "I want a refund"
    );
    let schema = c.trigger.input_schema.as_ref().unwrap();
    assert_eq!(schema.file, "schemas/ticket.json");
    assert_eq!(schema.schema["required"], json!(["ticket"]));

    let decide = c.decide.as_ref().unwrap();
    assert_eq!(decide.labels, vec!["billing", "bug", "other"]);
    assert_eq!(decide.otherwise, Otherwise::Label("other".into()));
    assert_eq!(decide.stages.len(), 3);
    let Stage::Rules(rules) = &decide.stages[0] else {
        panic!("rules first")
    };
    assert_eq!(rules.len(), 2);
    assert!(rules[0].when.eval_bool(&ctx).unwrap());
    assert_eq!(rules[1].when.source(), "true");
    assert_eq!(rules[1].fields["priority"].render(&ctx).unwrap(), "high");
    let Stage::Embedded(e) = &decide.stages[1] else {
        panic!("embedded second")
    };
    assert_eq!(e.examples, "data/tickets.csv");
    assert_eq!(e.accept_above, 0.85);
    let Stage::Llm(l) = &decide.stages[2] else {
        panic!("llm third")
    };
    assert_eq!(
        (l.provider.as_str(), l.prompt.as_str(), l.accept_above),
        ("default", "prompts/triage.md", 0.7)
    );
    let order = &decide.extract["order_id"];
    assert_eq!(order.kind, FieldType::String);
    assert_eq!(order.pattern.as_deref(), Some("ORD-[0-9]+"));
    assert!(!order.required);
    let urgency = &decide.extract["urgency"];
    assert_eq!(urgency.enumeration, vec!["low", "medium", "high"]);
    assert!(urgency.required);

    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[0].actions, vec!["assign_billing", "note"]);
    assert!(c.routes[0].when.eval_bool(&ctx).unwrap());

    let assign = &c.actions["assign_billing"];
    let ActionKind::Http(req) = &assign.kind else {
        panic!("http action")
    };
    assert_eq!(req.connector.as_deref(), Some("helpdesk"));
    assert_eq!(req.method, "PUT");
    assert_eq!(req.target.render(&ctx).unwrap(), "/api/v2/tickets/7");
    assert_eq!(req.headers["X-Source"].render(&ctx).unwrap(), "charter");
    assert_eq!(
        req.json.as_ref().unwrap().render(&ctx).unwrap(),
        json!({ "ticket": { "group_id": 42, "id": 7 } })
    );
    assert_eq!(req.timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        assign.approval,
        Approval::Required {
            reviewers: vec!["leads".into()],
            expires: Duration::from_secs(4 * 3600),
            on_expiry: OnExpiry::Reject
        }
    );
    assert_eq!(
        assign.retry,
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: RetryPolicy::default().max_backoff
        }
    );
    assert_eq!(assign.measure.as_deref(), Some("ticket_routed"));
    let note = &c.actions["note"];
    let ActionKind::Log { message } = &note.kind else {
        panic!("log action")
    };
    assert_eq!(message.render(&ctx).unwrap(), "routed ev-1 as billing");
    assert_eq!(note.approval, Approval::Auto);
    assert_eq!(note.retry, RetryPolicy::default());
    assert_eq!(c.escalation.to, "support-leads");
    // Notification targets are covered by tests/notify_config.rs.
    assert!(c.escalation.notify.is_empty());
    assert_eq!(
        c.measure.names().collect::<Vec<_>>(),
        vec!["ticket_bounced", "ticket_routed"]
    );

    // The second charter: generic HMAC, header dedupe, absolute URL, default concurrency.
    let h = &project.charters["hooks"];
    assert_eq!(h.mode, Mode::Live);
    assert_eq!(h.concurrency, 4);
    assert!(h.decide.is_none());
    let VerifySpec::Hmac(g) = &h.trigger.webhook.as_ref().unwrap().verify else {
        panic!("generic hmac")
    };
    assert_eq!(g.header, "x-signature");
    assert_eq!(g.algorithm, HmacAlgorithm::Sha512);
    assert_eq!(g.encoding, SignatureEncoding::Base64);
    assert_eq!(g.prefix.as_deref(), Some("sha512="));
    assert_eq!(g.timestamp_header.as_deref(), Some("x-timestamp"));
    assert_eq!(g.signed, "{timestamp}.{body}");
    assert_eq!(g.tolerance, verify::DEFAULT_TOLERANCE);
    assert!(matches!(&h.trigger.dedupe, Some(Dedupe::Header(n)) if n == "x-delivery-id"));
    let ActionKind::Http(post) = &h.actions["post"].kind else {
        panic!("http")
    };
    assert_eq!(post.connector, None);
    assert_eq!(post.target.source(), "https://hooks.example.com/in");
}

#[test]
fn version_changes_with_the_file_text() {
    let a = load_project(&with_triage(TRIAGE)).unwrap();
    let b = load_project(&with_triage(&format!("{TRIAGE}# a comment\n"))).unwrap();
    let (va, vb) = (
        &a.charters["support-triage"].version,
        &b.charters["support-triage"].version,
    );
    assert_ne!(va, vb);
    let again = load_project(&with_triage(TRIAGE)).unwrap();
    assert_eq!(va, &again.charters["support-triage"].version);
}

#[test]
fn defaults_apply_to_an_empty_charter_yaml() {
    let triage = TRIAGE.replace("uses: [helpdesk, crm]", "uses: [helpdesk]");
    let mut src = with_triage(&triage);
    src.files.insert(
        "charter.yaml".into(),
        "connectors:\n  helpdesk: { type: http, base_url: http://helpdesk.example:9000 }\n\
         providers:\n  default: { type: openai, model: gpt-4o-mini }\n"
            .into(),
    );
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.settings.store, "charter.db");
    assert_eq!(p.settings.body_limit, 1024 * 1024);
    assert_eq!(p.settings.listen, None);
    assert_eq!(p.settings.worker, WorkerSettings::default());
    assert!(p.tokens.is_empty());
}

#[test]
fn scaffolds_load() {
    let init = init_project();
    let src = source(
        &init
            .iter()
            .map(|(p, t)| (*p, t.as_str()))
            .collect::<Vec<_>>(),
    );
    let p = load_project(&src).unwrap_or_else(|d| panic!("init project: {d}"));
    assert_eq!(
        p.charters.keys().collect::<Vec<_>>(),
        vec!["support-triage"]
    );
    let c = &p.charters["support-triage"];
    assert_eq!(c.mode, Mode::Shadow);
    assert!(matches!(
        c.trigger.webhook.as_ref().unwrap().verify,
        VerifySpec::StandardWebhooks { .. }
    ));
    assert!(init.iter().any(|(p, _)| *p == "samples/ticket.json"));
    // The sample event satisfies the schema and is routed to billing by the rules.
    let sample: serde_json::Value = serde_json::from_str(
        &init
            .iter()
            .find(|(p, _)| *p == "samples/ticket.json")
            .unwrap()
            .1,
    )
    .unwrap();
    let schema = &c.trigger.input_schema.as_ref().unwrap().schema;
    assert!(jsonschema::is_valid(schema, &sample));
    let Stage::Rules(rules) = &c.decide.as_ref().unwrap().stages[0] else {
        panic!()
    };
    assert!(
        rules[0]
            .when
            .eval_bool(&json!({ "payload": sample }))
            .unwrap()
    );

    let demo = demo_project("http://127.0.0.1:9911/");
    let src = source(
        &demo
            .iter()
            .map(|(p, t)| (*p, t.as_str()))
            .collect::<Vec<_>>(),
    );
    let p = load_project(&src).unwrap_or_else(|d| panic!("demo project: {d}"));
    assert_eq!(
        p.charters.keys().collect::<Vec<_>>(),
        vec!["github-issues", "support-triage"]
    );
    let ConnectorKind::Http(h) = &p.connectors["helpdesk"].kind else {
        panic!("expected an http connector")
    };
    assert_eq!(h.base_url, "http://127.0.0.1:9911/helpdesk");
    let gh = &p.charters["github-issues"];
    assert_eq!(gh.mode, Mode::Shadow);
    assert_eq!(
        gh.trigger.webhook.as_ref().unwrap().verify,
        VerifySpec::Github
    );
    assert_eq!(
        gh.trigger.webhook.as_ref().unwrap().secrets,
        vec![SecretRef::File("secrets/github-webhook".into())]
    );
    assert!(matches!(&gh.trigger.dedupe, Some(Dedupe::Header(n)) if n == "x-github-delivery"));
    // The repository's `owner/repo` goes in as two segments (`safe_path`), the rest encoded.
    let ActionKind::Http(label) = &gh.actions["add_label"].kind else {
        panic!("add_label is a request")
    };
    let issue: serde_json::Value = src
        .files
        .iter()
        .find(|(k, _)| k.starts_with("samples/github-issues/"))
        .map(|(_, v)| serde_json::from_str(v).unwrap())
        .unwrap();
    assert_eq!(
        label.target.render(&json!({ "payload": issue })).unwrap(),
        format!(
            "/repos/acme/widgets/issues/{}/labels",
            issue["issue"]["number"]
        )
    );
    assert_eq!(p.charters["support-triage"].mode, Mode::Live);
    // Every demo sample decides as its name says.
    for (file, label) in [
        ("samples/support-triage/ticket-billing.json", "billing"),
        ("samples/support-triage/ticket-bug.json", "bug"),
        ("samples/support-triage/ticket-other.json", "other"),
        ("samples/support-triage/ticket-refund.json", "billing"),
    ] {
        let payload: serde_json::Value = serde_json::from_str(&src.files[file]).unwrap();
        let Stage::Rules(rules) = &p.charters["support-triage"].decide.as_ref().unwrap().stages[0]
        else {
            panic!()
        };
        let ctx = json!({ "payload": payload });
        let first = rules
            .iter()
            .find(|r| r.when.eval_bool(&ctx).unwrap())
            .unwrap();
        assert_eq!(first.label, label, "{file}");
    }
    // The unclear ticket matches no rule, so `otherwise: escalate` hands it to a human; the
    // refund takes the route whose action waits for an approval.
    let support = &p.charters["support-triage"];
    let Stage::Rules(rules) = &support.decide.as_ref().unwrap().stages[0] else {
        panic!()
    };
    let unclear: serde_json::Value =
        serde_json::from_str(&src.files["samples/support-triage/ticket-unclear.json"]).unwrap();
    let ctx = json!({ "payload": unclear });
    assert!(rules.iter().all(|r| !r.when.eval_bool(&ctx).unwrap()));
    assert!(matches!(
        support.decide.as_ref().unwrap().otherwise,
        Otherwise::Escalate
    ));
    assert!(matches!(
        support.actions["issue_refund"].approval,
        Approval::Required { .. }
    ));
}

// ---------------------------------------------------------------------------------------
// Diagnostics

#[test]
fn unknown_key() {
    let broken = TRIAGE.replace("    approval: auto\n", "    approval: auto\n    bogus: 1\n");
    insta::assert_snapshot!("unknown_key", diagnostics(&with_triage(&broken)));
}

#[test]
fn unknown_keys_do_not_hide_other_problems() {
    // Unknown keys at the top, in a nested mapping, in a flow mapping and in a list item,
    // next to an action without `approval` and a connector missing from `uses`: all reported.
    let broken = TRIAGE
        .replace("owner:", "bogus_key: 1\nowner:")
        .replace(
            "    log: \"routed {{ event.id }} as {{ decision.label }}\"\n    approval: auto\n",
            "    log: \"routed {{ event.id }} as {{ decision.label }}\"\n    aproval: auto\n",
        )
        .replace(
            "retry: { attempts: 3, backoff: 1s }",
            "retry: { attempts: 3, jitter: full, backoff: 1s }",
        )
        .replace("    do: [note]\n", "    do: [note]\n    priority: 1\n")
        .replace("uses: [helpdesk, crm]", "uses: [crm]");
    insta::assert_snapshot!(
        "unknown_keys_and_other_problems",
        diagnostics(&with_triage(&broken))
    );
}

#[test]
fn unknown_key_and_missing_approvals_in_the_init_scaffold() {
    // What `charter check` reports for the scaffold with an unknown key added and every
    // `approval: auto` removed (the CLI test makes the same edit).
    let mut files = init_project();
    let charter = files
        .iter_mut()
        .find(|(p, _)| *p == "charters/support-triage.yaml")
        .expect("the scaffold has a charter");
    charter.1 = charter
        .1
        .replacen("owner:", "bogus_key: 1\nowner:", 1)
        .replace("approval: auto", "");
    let src = source(
        &files
            .iter()
            .map(|(p, t)| (*p, t.as_str()))
            .collect::<Vec<_>>(),
    );
    let out = diagnostics(&src);
    assert!(out.contains("unknown field `bogus_key`"), "{out}");
    assert!(out.lines().count() >= 2, "{out}");
    insta::assert_snapshot!("init_unknown_key_missing_approvals", out);
}

#[test]
fn unknown_keys_in_charter_yaml_do_not_hide_other_problems() {
    let project = PROJECT
        .replace("  lease: 45s\n", "  lease: 45s\n  threads: 4\n")
        .replace("    timeout: 3s\n", "    timeout: 3s\n    retries: 2\n")
        .replace("role: viewer", "role: superuser")
        .replace(
            "auth: { bearer: env:HELPDESK_TOKEN }",
            "auth: { token: env:HELPDESK_TOKEN }",
        );
    let mut src = with_triage(TRIAGE);
    src.files.insert("charter.yaml".into(), project);
    insta::assert_snapshot!("unknown_keys_in_project", diagnostics(&src));
}

#[test]
fn unknown_key_next_to_a_type_error() {
    // A type error still stops the file, but the unknown key before it is reported too.
    let broken = TRIAGE
        .replace("owner:", "bogus_key: 1\nowner:")
        .replace("uses: [helpdesk, crm]", "uses: { helpdesk: crm }");
    let out = diagnostics(&with_triage(&broken));
    assert!(out.contains("3:1: unknown field `bogus_key`"), "{out}");
    assert!(out.lines().count() >= 2, "{out}");
}

#[test]
fn missing_governance_field() {
    let broken = TRIAGE.replace("owner: ops-lead@acme.example\n", "");
    insta::assert_snapshot!("missing_owner", diagnostics(&with_triage(&broken)));
    let broken = TRIAGE
        .replace(
            "maintainer: integrations@acme.example\n",
            "maintainer: \"\"\n",
        )
        .replace("escalation: { to: support-leads }\n", "");
    insta::assert_snapshot!(
        "empty_maintainer_no_escalation",
        diagnostics(&with_triage(&broken))
    );
}

#[test]
fn action_without_approval() {
    let broken = TRIAGE.replace(
        "    log: \"routed {{ event.id }} as {{ decision.label }}\"\n    approval: auto\n",
        "    log: \"routed {{ event.id }} as {{ decision.label }}\"\n",
    );
    insta::assert_snapshot!(
        "action_without_approval",
        diagnostics(&with_triage(&broken))
    );
}

#[test]
fn connector_not_in_uses() {
    let broken = TRIAGE.replace("uses: [helpdesk, crm]", "uses: [crm]");
    insta::assert_snapshot!("connector_not_in_uses", diagnostics(&with_triage(&broken)));
}

#[test]
fn route_names_undeclared_action() {
    let broken = TRIAGE.replace(
        "do: [assign_billing, note]",
        "do: [assign_billing, notify_manager]",
    );
    insta::assert_snapshot!("undeclared_action", diagnostics(&with_triage(&broken)));
}

#[test]
fn bad_cel_expression() {
    let broken = TRIAGE.replace(
        "when: decision.label == \"billing\"",
        "when: decision.label == = \"billing\"",
    );
    insta::assert_snapshot!("bad_expression", diagnostics(&with_triage(&broken)));
}

#[test]
fn bad_template() {
    let broken = TRIAGE.replace(
        "path: \"/api/v2/tickets/{{ payload.ticket.id }}\"",
        "path: \"/api/v2/tickets/{{ payload.ticket.id }\"",
    );
    insta::assert_snapshot!("bad_template", diagnostics(&with_triage(&broken)));
}

#[test]
fn yaml_syntax_error() {
    let broken = TRIAGE.replace("uses: [helpdesk, crm]", "uses: [helpdesk, crm");
    insta::assert_snapshot!("yaml_unclosed_bracket", diagnostics(&with_triage(&broken)));
    let broken = TRIAGE.replace("mode: shadow\n", "mode: shadow\n  extra: indented\n");
    insta::assert_snapshot!("yaml_bad_indentation", diagnostics(&with_triage(&broken)));
}

#[test]
fn several_problems_at_once() {
    let broken = TRIAGE
        .replace("owner: ops-lead@acme.example\n", "")
        .replace("mode: shadow", "mode: dry-run")
        .replace("uses: [helpdesk, crm]", "uses: [helpdesk, crm, zendesk]")
        .replace(
            "verify: { preset: stripe, secrets: [env:A, env:B], tolerance: 2m }",
            "verify: { preset: github, secret: hunter2, tolerance: 5m }",
        )
        .replace(
            "input_schema: schemas/ticket.json",
            "input_schema: schemas/missing.json",
        )
        .replace("label: billing }", "label: refunds }")
        .replace("accept_above: 0.85", "accept_above: 85")
        .replace("when: \"true\"", "when: payload.ticket.id +")
        .replace("timeout: 5s", "timeout: 5 seconds")
        .replace("measure: ticket_routed", "measure: ticket_closed")
        .replace(
            "json: { ticket: { group_id: 42, id: \"{{ payload.ticket.id }}\" } }",
            "json: { ticket: { group_id: 42, id: \"{{ payload.ticket.id\" } }",
        )
        .replace(
            "    log: \"routed {{ event.id }} as {{ decision.label }}\"\n    approval: auto\n",
            "    log: \"routed {{ event.id }} as {{ decision.label }}\"\n    approval: sometimes\n",
        );
    let mut src = with_triage(&broken);
    // A second charter with the same name and path, and a broken third file: all reported.
    src.files
        .insert("charters/copy.yaml".into(), TRIAGE.to_string());
    src.files.insert(
        "charters/zz-broken.yaml".into(),
        "name: broken\nowner: [x\n".into(),
    );
    // charter.yaml problems are reported too.
    src.files.insert(
        "charter.yaml".into(),
        PROJECT
            .replace("body_limit: 512KiB", "body_limit: lots")
            .replace(
                "type: http\n    base_url: https://crm",
                "type: grpc\n    base_url: https://crm",
            )
            .replace("role: viewer", "role: superuser")
            .replace("secret: env:CHARTER_ADMIN_TOKEN", "secret: s3cr3t"),
    );
    insta::assert_snapshot!("several_problems", diagnostics(&src));
}

#[test]
fn missing_everything() {
    let src = source(&[
        ("charter.yaml", ""),
        ("charters/empty.yaml", "# nothing yet\n"),
    ]);
    insta::assert_snapshot!("empty_charter", diagnostics(&src));
}

#[test]
fn invalid_schema_files() {
    let mut src = with_triage(TRIAGE);
    src.files.insert(
        "schemas/ticket.json".into(),
        "{\n  \"type\": \"object\",\n  oops\n}".into(),
    );
    insta::assert_snapshot!("schema_not_json", diagnostics(&src));
    src.files.insert(
        "schemas/ticket.json".into(),
        r#"{"type": "no-such-type"}"#.into(),
    );
    insta::assert_snapshot!("schema_not_a_schema", diagnostics(&src));
}

#[test]
fn missing_project_file() {
    let mut src = with_triage(TRIAGE);
    src.files.remove("charter.yaml");
    let out = diagnostics(&src);
    // Without charter.yaml connectors are unknown; only the missing file is reported.
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("charter.yaml:1:1: the project has no charter.yaml"),
        "{out}"
    );
}

#[test]
fn other_files_are_ignored() {
    let mut src = with_triage(TRIAGE);
    src.files
        .insert("charters/README.md".into(), "not yaml: [".into());
    src.files
        .insert("charters/old/x.yaml".into(), "not: [valid".into());
    assert!(load_project(&src).is_ok());
}

#[test]
fn providers_and_llm_stage_options() {
    let project = format!(
        "{PROJECT}  claude:\n    type: anthropic\n    api_key: env:ANTHROPIC_API_KEY\n    model: claude-haiku\n    timeout: 20s\n    max_retries: 1\n    allow_private: true\n    price: {{ input_per_mtok: 0.8, output_per_mtok: 4 }}\n"
    );
    let triage = TRIAGE.replace(
        "- llm: { provider: default, prompt: prompts/triage.md, accept_above: 0.7 }",
        "- llm: { provider: default, prompt: prompts/triage.md, accept_above: 0.7, fallback: [claude], rate_limit: 60, budget: { tokens_per_day: 200000, on_exhausted: wait, max_wait: 5s }, redact: [email] }",
    );
    let mut src = with_triage(&triage);
    src.files.insert("charter.yaml".into(), project.clone());
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    let d = &p.providers["default"];
    assert_eq!(d.kind, charter_core::config::ProviderType::OpenAi);
    assert_eq!(d.mode, charter_core::config::StructuredMode::JsonObject);
    assert_eq!(d.base_url, "http://127.0.0.1:8081/v1");
    assert_eq!((d.max_retries, d.max_tokens), (3, 1024));
    assert!(!d.allow_private, "the outbound guard applies by default");
    assert_eq!(d.api_version, None);
    let c = &p.providers["claude"];
    assert!(c.allow_private);
    assert_eq!(c.base_url, "https://api.anthropic.com/v1");
    assert_eq!(c.api_key, Some(SecretRef::Env("ANTHROPIC_API_KEY".into())));
    assert_eq!(c.timeout, Duration::from_secs(20));
    assert_eq!(c.price.unwrap().output_per_mtok, 4.0);
    let decide = p.charters["support-triage"].decide.clone().unwrap();
    let Stage::Llm(l) = &decide.stages[2] else {
        panic!("llm third")
    };
    assert_eq!(l.fallback, vec!["claude"]);
    assert_eq!(l.rate_limit, Some(60));
    assert_eq!(l.budget.tokens_per_day, Some(200_000));
    assert_eq!(
        l.budget.on_exhausted,
        charter_core::config::OnExhausted::Wait
    );
    assert_eq!(l.budget.max_wait, Duration::from_secs(5));
    assert_eq!(l.redact, vec!["email"]);
    assert_eq!(
        l.template.render(&json!({"text": "hello"})).unwrap(),
        "Classify: hello"
    );

    // Every problem at once: an undeclared fallback, a bad mode, a bad behaviour, a broken
    // prompt template.
    let bad_triage = triage
        .replace("fallback: [claude]", "fallback: [claude, nope]")
        .replace("on_exhausted: wait", "on_exhausted: panic");
    let mut src = with_triage(&bad_triage);
    src.files.insert(
        "charter.yaml".into(),
        project.replace("mode: json_object", "mode: grammar"),
    );
    src.files
        .insert("prompts/triage.md".into(), "Classify: {{ text ".into());
    let out = diagnostics(&src);
    assert!(out.contains("provider `nope` is not declared"), "{out}");
    assert!(out.contains("`mode` is `grammar`"), "{out}");
    assert!(out.contains("`on_exhausted` is `panic`"), "{out}");
    assert!(out.contains("prompt file `prompts/triage.md`"), "{out}");
}

/// A charter.yaml with one connector and no token scopes.
const NATS_PROJECT: &str =
    "connectors:\n  crm: { type: http, base_url: https://crm.example.com }\n";

/// A minimal charter consuming a NATS subject; `nats` is the body of `trigger.nats`.
fn nats_charter(name: &str, nats: &str) -> String {
    format!(
        r#"name: {name}
description: Orders from NATS.
owner: a@b.example
maintainer: c@d.example
system_of_record: crm
mode: shadow
uses: [crm]
trigger:
  nats:
{nats}
  dedupe: "{{{{ payload.order_id }}}}"
routes:
  - when: "true"
    do: [note]
actions:
  note:
    log: "order {{{{ payload.order_id }}}}"
    approval: auto
escalation: {{ to: ops }}
measure:
  done: [noted]
"#
    )
}

#[test]
fn nats_trigger_parses_with_a_default_durable() {
    let full = nats_charter(
        "orders",
        "    url: nats://127.0.0.1:4222\n    stream: ORDERS\n    subject: orders.>\n    durable: charter-orders-v2\n    create_stream: true",
    );
    let short = nats_charter(
        "refunds",
        "    { url: nats://127.0.0.1:4222, stream: REFUNDS, subject: refunds.*.created }",
    );
    let src = source(&[
        ("charter.yaml", NATS_PROJECT),
        ("charters/orders.yaml", &full),
        ("charters/refunds.yaml", &short),
    ]);
    let project = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    let orders = project.charters["orders"].trigger.nats.clone().unwrap();
    assert_eq!(orders.url, "nats://127.0.0.1:4222");
    assert_eq!(orders.stream, "ORDERS");
    assert_eq!(orders.subject, "orders.>");
    assert_eq!(orders.durable, "charter-orders-v2");
    assert!(orders.create_stream);
    assert!(project.charters["orders"].trigger.webhook.is_none());
    let refunds = project.charters["refunds"].trigger.nats.clone().unwrap();
    assert_eq!(refunds.durable, "charter-refunds");
    assert_eq!(refunds.subject, "refunds.*.created");
    assert!(!refunds.create_stream);
}

#[test]
fn nats_trigger_problems_are_each_reported_with_their_place() {
    let bad = nats_charter(
        "orders",
        "    url: http://127.0.0.1:4222\n    stream: OR DERS\n    subject: orders.>.x\n    durable: charter.orders\n    bogus: 1",
    );
    let src = source(&[
        ("charter.yaml", NATS_PROJECT),
        ("charters/orders.yaml", &bad),
    ]);
    let out = diagnostics(&src);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[0].starts_with(
            "charters/orders.yaml:10:10: NATS url `http://127.0.0.1:4222` is not valid"
        ),
        "{out}"
    );
    assert!(
        lines[1].starts_with("charters/orders.yaml:11:13: NATS stream name `OR DERS` is not valid"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("charters/orders.yaml:12:14: NATS subject `orders.>.x` is not valid"),
        "{out}"
    );
    assert!(
        lines[3].starts_with(
            "charters/orders.yaml:13:14: NATS durable name `charter.orders` is not valid"
        ),
        "{out}"
    );
    assert!(
        lines[4].starts_with("charters/orders.yaml:14:5: unknown field `bogus`"),
        "{out}"
    );

    let missing = nats_charter("orders", "    { durable: \"\" }");
    let src = source(&[
        ("charter.yaml", NATS_PROJECT),
        ("charters/orders.yaml", &missing),
    ]);
    let out = diagnostics(&src);
    for key in [
        "missing `url`",
        "missing `stream`",
        "missing `subject`",
        "`durable` is empty",
    ] {
        assert!(out.contains(key), "no `{key}` in:\n{out}");
    }
    assert_eq!(out.lines().count(), 4, "{out}");
}

#[test]
fn two_charters_cannot_share_a_durable_consumer() {
    let nats =
        "    { url: nats://127.0.0.1:4222, stream: ORDERS, subject: orders.>, durable: shared }";
    let a = nats_charter("orders-a", nats);
    let b = nats_charter("orders-b", nats);
    let src = source(&[
        ("charter.yaml", NATS_PROJECT),
        ("charters/a.yaml", &a),
        ("charters/b.yaml", &b),
    ]);
    let out = diagnostics(&src);
    assert_eq!(
        out,
        "charters/b.yaml:10:5: durable consumer `shared` on stream `ORDERS` is already used by charters/a.yaml; each charter needs its own `durable`"
    );
}

#[test]
fn extractors_drafts_and_context_parse_and_report_file_lines() {
    let triage = TRIAGE
        .replace(
            "order_id: { type: string, pattern: \"ORD-[0-9]+\", required: false }",
            "order_id: { type: string, pattern: \"ORD-[0-9]+\", required: true, regex: 'order (ORD-[0-9]+)', in: payload.ticket.body }\n    customer: { template: \"{{ payload.customer.id }}\" }",
        )
        .replace(
            "  note:\n    log:",
            "  note:\n    draft: { prompt: prompts/reply.md }\n    log:",
        )
        .replace(
            "escalation:",
            "context:\n  customer: { connector: crm, get: \"/customers/{{ payload.customer.id }}\", timeout: 2s, on_error: retry }\nescalation:",
        );
    let mut src = with_triage(&triage);
    src.files
        .insert("prompts/reply.md".into(), "Reply to: {{ text }}".into());
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    let c = &p.charters["support-triage"];
    let extract = &c.decide.as_ref().unwrap().extract;
    match &extract["order_id"].extractor {
        Some(charter_core::config::Extractor::Regex { regex, input }) => {
            assert_eq!(regex.first_capture("re order ORD-12 now"), Some("ORD-12"));
            assert_eq!(
                input.as_deref(),
                Some(&["payload".to_string(), "ticket".into(), "body".into()][..])
            );
        }
        other => panic!("expected a regex extractor, got {other:?}"),
    }
    assert!(matches!(
        extract["customer"].extractor,
        Some(charter_core::config::Extractor::Template(_))
    ));
    let draft = c.actions["note"].draft.as_ref().expect("draft");
    assert_eq!(
        (draft.prompt.as_str(), draft.provider.as_str()),
        ("prompts/reply.md", "default")
    );
    assert_eq!(c.context.len(), 1);
    assert_eq!(c.context[0].name, "customer");
    assert_eq!(c.context[0].timeout, Duration::from_secs(2));
    assert_eq!(
        c.context[0].on_error,
        charter_core::config::ContextOnError::Retry
    );

    // Every problem at once, each at its line.
    let bad = triage
        .replace("regex: 'order (ORD-[0-9]+)'", "regex: 'order (ORD-[0-9+'")
        .replace(
            "draft: { prompt: prompts/reply.md }",
            "draft: { prompt: prompts/reply.md, provider: nope }",
        )
        .replace("connector: crm, get:", "connector: helpdesk2, get:")
        .replace("on_error: retry", "on_error: ignore");
    let mut src = with_triage(&bad);
    src.files
        .insert("prompts/reply.md".into(), "Reply to: {{ text }}".into());
    let out = diagnostics(&src);
    let line_of = |needle: &str| {
        bad.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{needle} not in the charter"))
    };
    assert!(
        out.contains(&format!("charters/triage.yaml:{}:", line_of("ORD-[0-9+")))
            && out.contains("`regex` `order (ORD-[0-9+` is not a valid regular expression"),
        "{out}"
    );
    assert!(out.contains("provider `nope` is not declared"), "{out}");
    assert!(
        out.contains(&format!("charters/triage.yaml:{}:", line_of("helpdesk2")))
            && out.contains("context `customer` uses connector `helpdesk2`"),
        "{out}"
    );
    assert!(out.contains("`on_error` is `ignore`"), "{out}");
}

/// A charter.yaml for the poll and schedule tests: two HTTP connectors and a Slack one.
const SOURCES_PROJECT: &str = r#"connectors:
  helpdesk: { type: http, base_url: http://127.0.0.1:9000, allow_private: true }
  crm: { type: http, base_url: https://crm.example.com }
  chat: { type: slack, webhook_url: env:SLACK_WEBHOOK }
"#;

/// A minimal charter whose trigger body (indented under `trigger:`) is `trigger`.
fn source_charter(name: &str, uses: &str, trigger: &str) -> String {
    format!(
        r#"name: {name}
description: Items from a polled API or a schedule.
owner: a@b.example
maintainer: c@d.example
system_of_record: crm
mode: shadow
uses: [{uses}]
trigger:
{trigger}
routes:
  - when: "true"
    do: [note]
actions:
  note:
    log: "item {{{{ event.id }}}}"
    approval: auto
escalation: {{ to: ops }}
measure:
  done: [noted]
"#
    )
}

fn sources_project(charters: &[(&str, &str)]) -> ProjectSource {
    let mut files = vec![("charter.yaml", SOURCES_PROJECT)];
    files.extend_from_slice(charters);
    source(&files)
}

#[test]
fn poll_and_schedule_triggers_parse() {
    use charter_core::config::{PollCursor, PollKey};
    let tickets = source_charter(
        "tickets",
        "crm, helpdesk",
        r#"  poll:
    connector: helpdesk
    path: "/api/tickets?since={{ cursor }}"
    every: 30s
    items: /results
    key: "{{ item.id }}:{{ item.updated_at }}"
    cursor: { max: /updated_at, start: "2026-01-01T00:00:00Z" }"#,
    );
    let pages = source_charter(
        "pages",
        "crm",
        "  poll: { connector: crm, path: /contacts, items: /, key: /id, cursor: { next: /meta/next } }",
    );
    let digest = source_charter("digest", "crm", "  schedule: { cron: \"0 9 * * mon-fri\" }");
    let src = sources_project(&[
        ("charters/tickets.yaml", &tickets),
        ("charters/pages.yaml", &pages),
        ("charters/digest.yaml", &digest),
    ]);
    let project = load_project(&src).unwrap_or_else(|d| panic!("{d}"));

    let poll = project.charters["tickets"].trigger.poll.clone().unwrap();
    assert_eq!(poll.connector, "helpdesk");
    assert_eq!(poll.path.source(), "/api/tickets?since={{ cursor }}");
    assert_eq!(poll.every, Duration::from_secs(30));
    assert_eq!(poll.items, "/results");
    assert!(
        matches!(&poll.key, PollKey::Template(t) if t.source() == "{{ item.id }}:{{ item.updated_at }}")
    );
    assert_eq!(poll.cursor, PollCursor::Max("/updated_at".into()));
    assert_eq!(poll.start, "2026-01-01T00:00:00Z");

    let pages = project.charters["pages"].trigger.poll.clone().unwrap();
    assert_eq!(pages.items, "", "`/` means the response is the array");
    assert!(matches!(&pages.key, PollKey::Pointer(p) if p == "/id"));
    assert_eq!(pages.cursor, PollCursor::Next("/meta/next".into()));
    assert_eq!(pages.every, Duration::from_secs(60), "default interval");
    assert_eq!(pages.start, "");

    let digest = &project.charters["digest"].trigger;
    assert!(digest.poll.is_none() && digest.webhook.is_none());
    let cron = &digest.schedule.as_ref().unwrap().cron;
    // Friday 2026-11-06 10:00 UTC -> Monday 09:00.
    assert_eq!(
        cron.next_after(1_793_959_200)
            .map(charter_core::cron::format_utc),
        Some("2026-11-09T09:00:00Z".to_string())
    );
}

#[test]
fn a_schedule_reads_its_cron_in_its_time_zone() {
    let paris = source_charter(
        "paris",
        "crm",
        "  schedule: { cron: \"0 9 * * mon-fri\", timezone: Europe/Paris }",
    );
    let fixed = source_charter(
        "fixed",
        "crm",
        "  schedule: { cron: \"0 9 * * mon-fri\", timezone: \"-05:00\" }",
    );
    let project = load_project(&sources_project(&[
        ("charters/paris.yaml", &paris),
        ("charters/fixed.yaml", &fixed),
    ]))
    .unwrap_or_else(|d| panic!("{d}"));
    let next = |name: &str| {
        let s = project.charters[name].trigger.schedule.clone().unwrap();
        (
            s.zone.name().to_string(),
            s.next_after(1_793_959_200)
                .map(charter_core::cron::format_utc),
        )
    };
    // Friday 2026-11-06 10:00 UTC -> Monday 09:00 in Paris (CET, 08:00Z) / at -05:00 (14:00Z).
    assert_eq!(
        next("paris"),
        ("Europe/Paris".into(), Some("2026-11-09T08:00:00Z".into()))
    );
    assert_eq!(
        next("fixed"),
        ("-05:00".into(), Some("2026-11-06T14:00:00Z".into()))
    );
}

#[test]
fn poll_trigger_problems_are_each_reported_with_their_place() {
    let bad = source_charter(
        "tickets",
        "crm",
        r#"  poll:
    connector: nowhere
    path: "https://evil.example/{{ cursor }}"
    every: 10ms
    items: results
    cursor: { next: /next, max: /updated_at }
    bogus: 1"#,
    );
    let src = sources_project(&[("charters/tickets.yaml", &bad)]);
    insta::assert_snapshot!("poll_problems", diagnostics(&src));
}

#[test]
fn poll_connector_must_be_in_uses_and_http() {
    let not_in_uses = source_charter(
        "tickets",
        "crm",
        "  poll: { connector: helpdesk, path: /t, items: /, key: /id, cursor: { next: /n } }",
    );
    let not_http = source_charter(
        "chatter",
        "crm, chat",
        "  poll: { connector: chat, path: /t, items: /, key: /id, cursor: { next: /n } }",
    );
    let src = sources_project(&[
        ("charters/tickets.yaml", &not_in_uses),
        ("charters/chatter.yaml", &not_http),
    ]);
    insta::assert_snapshot!("poll_connector_not_in_uses", diagnostics(&src));
}

#[test]
fn bad_cron_expressions_are_reported_with_their_place() {
    let cases = [
        ("a", "  schedule: { cron: \"61 * * * *\" }"),
        ("b", "  schedule: { cron: \"0 9 * *\" }"),
        ("c", "  schedule: { cron: \"0 0 30 feb *\" }"),
        ("d", "  schedule: {}"),
        (
            "e",
            "  schedule: { cron: \"0 9 * * *\", timezone: Europe/Pariss }",
        ),
        (
            "f",
            "  schedule: { cron: \"@daily\" }\n  dedupe: \"{{ payload.x }}\"",
        ),
    ];
    let texts: Vec<(String, String)> = cases
        .iter()
        .map(|(n, t)| (format!("charters/{n}.yaml"), source_charter(n, "crm", t)))
        .collect();
    let files: Vec<(&str, &str)> = texts
        .iter()
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .collect();
    let src = sources_project(&files);
    insta::assert_snapshot!("bad_cron", diagnostics(&src));
}

/// Slack through a bot token (chat.postMessage) needs a channel; an incoming webhook's is fixed.
const SLACK_PROJECT: &str = r#"connectors:
  bot: { type: slack, token: env:SLACK_BOT_TOKEN }
  hook: { type: slack, webhook_url: env:SLACK_WEBHOOK }
"#;

fn slack_charter(notify: &str, message: &str) -> String {
    format!(
        r#"name: alerts
description: Tell people.
owner: a@b.example
maintainer: c@d.example
system_of_record: bot
mode: shadow
uses: [bot, hook]
trigger:
  webhook: {{ path: /hooks/alerts, verify: none }}
routes:
  - when: "true"
    do: [tell]
actions:
  tell:
    connector: {message}
    approval: {{ reviewers: [leads], expires: 1h }}
escalation:
  to: leads
  notify: {notify}
measure:
  done: [told]
"#
    )
}

#[test]
fn slack_with_a_bot_token_needs_a_channel() {
    let ok = slack_charter(
        "[\"bot:#approvals\", hook]",
        "bot\n    message: { channel: \"#ops\", text: hi }",
    );
    load_project(&source(&[
        ("charter.yaml", SLACK_PROJECT),
        ("charters/alerts.yaml", &ok),
    ]))
    .unwrap_or_else(|d| panic!("{d}"));
    let webhook_only = slack_charter("hook", "hook\n    message: { text: hi }");
    load_project(&source(&[
        ("charter.yaml", SLACK_PROJECT),
        ("charters/alerts.yaml", &webhook_only),
    ]))
    .unwrap_or_else(|d| panic!("{d}"));

    let broken = slack_charter("[bot, hook]", "bot\n    message: { text: hi }");
    let src = source(&[
        ("charter.yaml", SLACK_PROJECT),
        ("charters/alerts.yaml", &broken),
    ]);
    insta::assert_snapshot!("slack_bot_without_channel", diagnostics(&src));
}

#[test]
fn the_ui_time_zone_is_read_and_an_unknown_one_is_named_with_its_line() {
    let project = load_project(&with_triage(TRIAGE)).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(project.settings.timezone.name(), "UTC", "the default");

    let mut src = with_triage(TRIAGE);
    let zoned = PROJECT.replace(
        "  public_url: https://charter.acme.example\n",
        "  public_url: https://charter.acme.example\n  timezone: europe/paris\n",
    );
    src.files.insert("charter.yaml".into(), zoned.clone());
    let project = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        project.settings.timezone.name(),
        "Europe/Paris",
        "read case-insensitively, kept in its canonical case"
    );

    src.files.insert(
        "charter.yaml".into(),
        zoned.replace("europe/paris", "Mars/Olympus"),
    );
    let d = diagnostics(&src);
    assert!(
        d.contains("charter.yaml:5") && d.contains("unknown time zone `Mars/Olympus`"),
        "{d}"
    );
}

#[test]
fn retention_is_optional_and_at_least_an_hour() {
    let project = load_project(&with_triage(TRIAGE)).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        project.settings.worker.retention, None,
        "kept forever by default"
    );

    let mut src = with_triage(TRIAGE);
    let with = |r: &str| {
        PROJECT.replace(
            "  concurrency: 8\n",
            &format!("  concurrency: 8\n  retention: {r}\n"),
        )
    };
    src.files.insert("charter.yaml".into(), with("90d"));
    let project = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        project.settings.worker.retention,
        Some(Duration::from_secs(90 * 86_400))
    );
    src.files.insert("charter.yaml".into(), with("10m"));
    let d = diagnostics(&src);
    assert!(
        d.contains("charter.yaml:9") && d.contains("`retention` is shorter than 1h"),
        "{d}"
    );
}

#[test]
fn shopify_zendesk_and_hubspot_presets() {
    let stripe = "verify: { preset: stripe, secrets: [env:A, env:B], tolerance: 2m }";
    let load = |verify: &str, project: &str| {
        let mut src = with_triage(&TRIAGE.replace(stripe, verify));
        src.files.insert("charter.yaml".into(), project.to_string());
        load_project(&src)
    };
    let verify_of = |verify: &str| {
        let p = load(verify, PROJECT).unwrap_or_else(|d| panic!("{verify}: {d}"));
        p.charters["support-triage"]
            .trigger
            .webhook
            .as_ref()
            .unwrap()
            .verify
            .clone()
    };
    assert_eq!(
        verify_of("verify: { preset: shopify, secret: env:SHOPIFY }"),
        VerifySpec::Shopify
    );
    assert_eq!(
        verify_of("verify: { preset: zendesk, secret: env:ZD, tolerance: 2m }"),
        VerifySpec::Zendesk {
            tolerance: Duration::from_secs(120)
        }
    );
    // HubSpot signs the URL it calls: the public URL followed by the webhook path.
    assert_eq!(
        verify_of("verify: { preset: hubspot-v3, secret: env:HUBSPOT }"),
        VerifySpec::HubspotV3 {
            tolerance: verify::DEFAULT_TOLERANCE,
            url: "https://charter.acme.example/hooks/helpdesk/tickets".into(),
        }
    );
    let no_public_url = PROJECT.replace("  public_url: https://charter.acme.example\n", "");
    let err = load(
        "verify: { preset: hubspot-v3, secret: env:HUBSPOT }",
        &no_public_url,
    )
    .unwrap_err()
    .to_string();
    let line = err
        .lines()
        .find(|l| l.contains("`preset: hubspot-v3` signs the full URL"));
    assert!(
        line.is_some_and(
            |l| l.starts_with("charters/triage.yaml:") && l.contains("`server.public_url`")
        ),
        "{err}"
    );
    let err = load(
        "verify: { preset: shopify, secret: env:S, tolerance: 5m }",
        PROJECT,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`tolerance` does not apply to `preset: shopify`: Shopify signs no timestamp"),
        "{err}"
    );
    let err = load("verify: { preset: hubspot, secret: env:S }", PROJECT)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown verify preset `hubspot`; expected one of")
            && err.contains("`hubspot-v3`"),
        "{err}"
    );
}

#[test]
fn agent_tokens_are_a_role_of_their_own() {
    // An agent calls the charter's actions as MCP tools, without a decision: an action
    // template that needs `decision` is refused (issue 23, item 8).
    let mut src = with_triage(TRIAGE);
    src.files.insert(
        "charter.yaml".into(),
        PROJECT.replace(
            "  - { name: viewer, role: viewer, secret: file:secrets/viewer }\n",
            "  - { name: viewer, role: viewer, secret: file:secrets/viewer }\n  - { name: triage-bot, role: agent, secret: env:BOT, charters: [support-triage] }\n",
        ),
    );
    let err = load_project(&src).unwrap_err().to_string();
    assert!(
        err.starts_with("charters/triage.yaml:")
            && err.contains("action `note`: `log` uses `decision`, but agent token `triage-bot` may call this action as an MCP tool"),
        "{err}"
    );
    src.files.insert(
        "charters/triage.yaml".into(),
        TRIAGE.replace(
            "log: \"routed {{ event.id }} as {{ decision.label }}\"",
            "log: \"routed {{ event.id }}\"",
        ),
    );
    let project = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    let bot = project
        .tokens
        .iter()
        .find(|t| t.name == "triage-bot")
        .unwrap();
    assert_eq!(bot.role, Role::Agent);
    assert_eq!(bot.charters, vec!["support-triage"]);
    // Below every other role (it reaches no admin endpoint), yet it may call tools.
    assert!(Role::Agent < Role::Viewer);
    assert!(Role::Agent.calls_tools() && Role::Admin.calls_tools());
    assert!(!Role::Viewer.calls_tools() && !Role::Reviewer.calls_tools());
}

#[test]
fn a_drafting_action_is_reviewed_unless_it_says_otherwise() {
    let triage = TRIAGE.replace(
        "    log: \"routed {{ event.id }} as {{ decision.label }}\"\n    approval: auto\n",
        "    draft: { prompt: prompts/reply.md }\n    log: \"routed {{ event.id }} as {{ decision.label }}\"\n",
    );
    assert_ne!(triage, TRIAGE, "the note action lost its approval");
    let mut src = with_triage(&triage);
    src.files
        .insert("prompts/reply.md".into(), "Reply to: {{ text }}".into());
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        p.charters["support-triage"].actions["note"].approval,
        charter_core::config::Approval::Required {
            reviewers: vec![],
            expires: charter_core::config::DRAFT_APPROVAL_EXPIRES,
            on_expiry: charter_core::config::OnExpiry::Escalate,
        }
    );
    // `approval: auto` still sends drafts unreviewed.
    let auto = triage.replace(
        "    draft: { prompt: prompts/reply.md }\n",
        "    draft: { prompt: prompts/reply.md }\n    approval: auto\n",
    );
    let mut src = with_triage(&auto);
    src.files
        .insert("prompts/reply.md".into(), "Reply to: {{ text }}".into());
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        p.charters["support-triage"].actions["note"].approval,
        charter_core::config::Approval::Auto
    );
}

#[test]
fn an_azure_provider_takes_an_api_version() {
    let azure = "  azure:\n    type: openai\n    base_url: https://acme.openai.azure.com/openai/deployments/gpt-4o\n    api_key: env:AZURE_OPENAI_KEY\n    api_version: 2024-10-21\n    model: gpt-4o\n";
    let mut src = with_triage(TRIAGE);
    src.files
        .insert("charter.yaml".into(), format!("{PROJECT}{azure}"));
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        p.providers["azure"].api_version.as_deref(),
        Some("2024-10-21")
    );
    let mut src = with_triage(TRIAGE);
    src.files.insert(
        "charter.yaml".into(),
        format!("{PROJECT}{}", azure.replace("2024-10-21", "2024 10&x=1")),
    );
    let err = load_project(&src).unwrap_err().to_string();
    assert!(
        err.lines().any(|l| l.starts_with("charter.yaml:")
            && l.contains("`api_version` is `2024 10&x=1`; expected an Azure OpenAI API version")),
        "{err}"
    );
}

#[test]
fn trigger_events_are_checked_where_they_are_written() {
    let text_line = "  text: \"{{ payload.ticket.subject }}\"\n";
    assert!(TRIAGE.contains(text_line));
    let ok = TRIAGE.replace(
        text_line,
        &format!("{text_line}  events: [issues, \"invoice.*\"]\n"),
    );
    let project = load_project(&with_triage(&ok)).unwrap_or_else(|d| panic!("{d}"));
    let triage = &project.charters["support-triage"];
    let types = triage.trigger.events.clone().expect("events");
    assert!(types.takes(Some("issues")) && types.takes(Some("invoice.paid")));
    assert!(!types.takes(Some("push")) && !types.takes(None));
    let bad = TRIAGE.replace(text_line, &format!("{text_line}  events: [\"in*voice\"]\n"));
    let out = diagnostics(&with_triage(&bad));
    assert!(
        out.contains("charters/triage.yaml:") && out.contains("`in*voice` is not an event type"),
        "{out}"
    );
}

/// `check` finds the names a template or an expression uses that its place cannot see
/// (they would fail every event at run time), at the value's file:line:column.
#[test]
fn unknown_names_in_expressions_and_templates_are_found_where_they_are_written() {
    let bad = TRIAGE
        .replace(
            "  - when: decision.label == \"billing\"",
            "  - when: decison.label == \"billing\" && payload.tags.exists(t, t == \"vip\")",
        )
        .replace(
            "log: \"routed {{ event.id }} as {{ decision.label }}\"",
            "log: \"routed {{ event.idd }} as {{ decision.confidance }} for {{ paylod.x }}\"",
        )
        .replace(
            "json: { ticket: { group_id: 42, id: \"{{ payload.ticket.id }}\" } }",
            "json: { ticket: { group_id: 42, id: \"{{ payload.ticket.id }}\", by: \"{{ desicion.label }}\" } }",
        )
        .replace(
            "  dedupe: \"{{ payload.ticket.id }}:{{ payload.ticket.updated_at }}\"",
            "  dedupe: \"{{ payload.ticket.id }}:{{ decision.label }}\"",
        );
    let err = load_project(&with_triage(&bad)).unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    let expect = [
        "charters/triage.yaml:13:11: `dedupe`: `decision.label` is not known here: `dedupe` is computed when the event arrives, before the decision (`decision` is null)",
        "charters/triage.yaml:29:11: `when`: unknown name `decison` (did you mean `decision`?); expected one of `payload`, `event`, `decision`, `headers`, `context`",
        "charters/triage.yaml:40:13: `json`: unknown name `desicion` (did you mean `decision`?)",
        "charters/triage.yaml:46:10: `log`: `decision` has no field `confidance` (did you mean `decision.confidence`?)",
        "charters/triage.yaml:46:10: `log`: `event` has no field `idd` (did you mean `event.id`?)",
        "charters/triage.yaml:46:10: `log`: unknown name `paylod` (did you mean `payload`?)",
    ];
    for e in expect {
        assert!(
            lines.iter().any(|l| l.starts_with(e)),
            "missing {e:?} in:\n{err}"
        );
    }
    assert_eq!(lines.len(), expect.len(), "{err}");
    // The macro's own variable `t` is not an unknown name; `draft` is known to actions only.
    assert!(!err.contains("`t`"), "{err}");
    let draft_in_route = TRIAGE.replace(
        "  - when: \"true\"\n    do: [note]",
        "  - when: draft == \"x\"\n    do: [note]",
    );
    let err = load_project(&with_triage(&draft_in_route))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown name `draft`"), "{err}");
    load_project(&with_triage(TRIAGE)).unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn a_provider_takes_a_circuit_breaker() {
    let local = "  local:\n    type: openai\n    base_url: http://127.0.0.1:8089/v1\n    model: m\n    allow_private: true\n";
    let mut src = with_triage(TRIAGE);
    src.files
        .insert("charter.yaml".into(), format!("{PROJECT}{local}"));
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    let b = p.providers["local"].circuit_breaker;
    assert_eq!((b.failures, b.cool_down), (5, Duration::from_secs(30)));
    let mut src = with_triage(TRIAGE);
    src.files.insert(
        "charter.yaml".into(),
        format!("{PROJECT}{local}    circuit_breaker: {{ failures: 2, cool_down: 10s }}\n"),
    );
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    let b = p.providers["local"].circuit_breaker;
    assert_eq!((b.failures, b.cool_down), (2, Duration::from_secs(10)));
    let mut src = with_triage(TRIAGE);
    src.files.insert(
        "charter.yaml".into(),
        format!("{PROJECT}{local}    circuit_breaker: {{ failures: 0 }}\n"),
    );
    let err = load_project(&src).unwrap_err().to_string();
    assert!(
        err.lines()
            .any(|l| l.starts_with("charter.yaml:") && l.contains("failures")),
        "{err}"
    );
}

#[test]
fn an_llm_stage_sets_its_cache_lifetime() {
    let stage = |ttl: &str| {
        let src = with_triage(&TRIAGE.replace(
            "accept_above: 0.7",
            &format!("accept_above: 0.7, cache_ttl: {ttl}"),
        ));
        load_project(&src)
    };
    assert!(TRIAGE.contains("accept_above: 0.7"), "the fixture changed");
    let get = |p: &charter_core::config::Project| {
        p.charters["support-triage"]
            .decide
            .as_ref()
            .unwrap()
            .stages
            .iter()
            .find_map(|s| match s {
                charter_core::config::Stage::Llm(l) => Some(l.cache_ttl),
                _ => None,
            })
            .unwrap()
    };
    let p = load_project(&with_triage(TRIAGE)).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(get(&p), Duration::from_secs(7 * 24 * 3600));
    let p = stage("0").unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(get(&p), Duration::ZERO);
    let p = stage("1h").unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(get(&p), Duration::from_secs(3600));
    let err = stage("soon").unwrap_err().to_string();
    assert!(err.contains("`cache_ttl`"), "{err}");
}

#[test]
fn backlog_bounds_default_parse_and_are_checked() {
    use charter_core::config::BacklogSettings;
    use std::time::Duration;
    let triage = TRIAGE.replace("uses: [helpdesk, crm]", "uses: [helpdesk]");
    let base = "connectors:\n  helpdesk: { type: http, base_url: http://helpdesk.example:9000 }\n\
                providers:\n  default: { type: openai, model: gpt-4o-mini }\n";
    let with = |server: &str| {
        let mut src = with_triage(&triage);
        src.files
            .insert("charter.yaml".into(), format!("{base}{server}"));
        src
    };
    // The default bounds the backlog (a disk cannot fill silently).
    let p = load_project(&with("")).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.settings.net.backlog, BacklogSettings::default());
    assert_eq!(p.settings.net.backlog.max_events, Some(1_000_000));
    // Set, and 0 for unbounded.
    let p = load_project(&with(
        "server:\n  backlog: { max_events: 0, max_per_charter: 5000, max_age: 2h }\n",
    ))
    .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        p.settings.net.backlog,
        BacklogSettings {
            max_events: None,
            max_per_charter: Some(5000),
            max_age: Some(Duration::from_secs(7200)),
        }
    );
    // Bad values name the key and the place.
    let d = diagnostics(&with(
        "server:\n  backlog: { max_events: -1, max_age: 0s }\n",
    ));
    assert!(
        d.contains("charter.yaml:") && d.contains("`backlog.max_events` is -1"),
        "{d}"
    );
    assert!(d.contains("`max_age` is 0"), "{d}");
    let d = diagnostics(&with("server:\n  backlog: { max_event: 5 }\n"));
    assert!(d.contains("max_event"), "{d}");
}
