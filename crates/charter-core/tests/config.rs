//! Loading and validating projects: a complete valid project, the scaffolds, and the
//! diagnostics for broken charters (snapshots of the full output).

/// `knowledge:` sources, `retrieve` steps and `draft.cite`.
#[path = "config/knowledge_config.rs"]
mod knowledge_config;
/// The `escalation.notify` checks, compiled into this one test binary.
#[path = "config/notify_config.rs"]
mod notify_config;

/// Extractors, drafts, context fetches and names in expressions and templates.
#[path = "config/decide_config.rs"]
mod decide_config;
/// Expressions of a loaded charter (`matches()` patterns compiled once).
#[path = "config/expressions.rs"]
mod expressions;
/// Every refusal at load that depends only on the files is also a `check` diagnostic.
#[path = "config/load_refusals.rs"]
mod load_refusals;
/// Fields of `context`, and the names polls, context fetches, extractors, recipients and
/// alerts see.
#[path = "config/names_config.rs"]
mod names_config;
/// The scaffolds, defaults, and charter.yaml settings: providers, UI time zone, retention, tokens, backlog.
#[path = "config/project_config.rs"]
mod project_config;
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
/// NATS triggers, webhook verify presets and event types.
#[path = "config/triggers_config.rs"]
mod triggers_config;

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
