//! Starter projects: the files `charter init` writes and the self-contained demo.
//!
//! Both return `(relative path, contents)` pairs; the caller writes them. Every project
//! returned here passes [`crate::config::load_project`] (see the tests).

/// `charter.yaml` of a new project: one HTTP connector on the local machine.
const INIT_PROJECT_YAML: &str = r#"# Charter project settings. See `charter check` for validation.
server:
  listen: 127.0.0.1:8080
  body_limit: 1MiB
  # timezone: Europe/Paris   # the web UI's clock (default UTC)
store: charter.db
worker:
  concurrency: 16
  # retention: 90d           # purge finished work older than this, hourly (default: keep)

connectors:
  helpdesk:
    type: http
    base_url: http://127.0.0.1:9000
    # auth: { bearer: env:HELPDESK_TOKEN }
    timeout: 10s
    allow_private: true    # the helpdesk runs on this machine
"#;

/// The starter charter: keyword rules, shadow mode.
const INIT_CHARTER_YAML: &str = r#"name: support-triage
description: Sort inbound helpdesk tickets into billing, bug or other and route them to the right team.
owner: ops-lead@example.com
maintainer: integrations@example.com
system_of_record: helpdesk
mode: shadow                 # records what it would do; switch to `live` when the record looks right
uses: [helpdesk]

trigger:
  webhook:
    path: /hooks/helpdesk/tickets
    verify: { preset: standard-webhooks, secret: env:SUPPORT_WEBHOOK_SECRET }
  dedupe: "{{ payload.ticket.id }}:{{ payload.ticket.updated_at }}"
  input_schema: schemas/ticket.json
  text: "{{ payload.ticket.subject }}"

decide:
  labels: [billing, bug, other]
  stages:
    - rules:
        - when: 'payload.ticket.subject.matches("(?i)refund|invoice|charge")'
          label: billing
        - when: 'payload.ticket.subject.matches("(?i)error|crash|broken")'
          label: bug
        - when: "true"
          label: other
  otherwise: escalate

routes:
  - when: decision.label == "billing"
    do: [assign_billing, note]
  - when: "true"
    do: [note]

actions:
  assign_billing:
    connector: helpdesk
    request:
      method: PUT
      path: "/api/v2/tickets/{{ payload.ticket.id }}"
      json: { ticket: { group: billing } }
    approval: auto
    measure: ticket_routed
  note:
    log: "ticket {{ payload.ticket.id }} classified as {{ decision.label }}"
    approval: auto

escalation: { to: support-leads }
measure:
  success: [ticket_routed]
"#;

/// The data contract of the starter charter.
const TICKET_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "Helpdesk ticket event",
  "type": "object",
  "required": ["ticket"],
  "properties": {
    "ticket": {
      "type": "object",
      "required": ["id", "subject"],
      "properties": {
        "id": { "type": "integer" },
        "subject": { "type": "string" },
        "description": { "type": "string" },
        "updated_at": { "type": "string" }
      }
    }
  }
}
"#;

const SAMPLE_TICKET: &str = r#"{
  "ticket": {
    "id": 1001,
    "subject": "Please refund my last invoice",
    "description": "I was charged twice this month.",
    "updated_at": "2026-01-05T10:00:00Z"
  }
}
"#;

/// Files of a small working project: (relative path, contents).
pub fn init_project() -> Vec<(&'static str, String)> {
    vec![
        ("charter.yaml", INIT_PROJECT_YAML.to_string()),
        (
            "charters/support-triage.yaml",
            INIT_CHARTER_YAML.to_string(),
        ),
        ("schemas/ticket.json", TICKET_SCHEMA.to_string()),
        ("samples/ticket.json", SAMPLE_TICKET.to_string()),
    ]
}

/// The demo's support charter: live, standard-webhooks, keyword rules, HTTP actions on the
/// local sink plus a log action; a refund waits for an approval and a ticket no rule
/// decides is escalated.
const DEMO_SUPPORT_YAML: &str = r#"name: support-triage
description: Demo. Classify helpdesk tickets by keywords and update them in the (local) helpdesk.
owner: ops-lead@example.com
maintainer: integrations@example.com
system_of_record: helpdesk
mode: live
uses: [helpdesk]

trigger:
  webhook:
    path: /hooks/helpdesk/tickets
    verify: { preset: standard-webhooks, secret: file:secrets/support-webhook }
  dedupe: { header: webhook-id }
  input_schema: schemas/ticket.json
  text: "{{ payload.ticket.subject }}"

decide:
  labels: [billing, bug, other]
  stages:
    - rules:
        - when: 'payload.ticket.subject.matches("(?i)refund|invoice|charge|payment")'
          label: billing
        - when: 'payload.ticket.subject.matches("(?i)error|crash|bug|broken")'
          label: bug
        - when: 'payload.ticket.subject.matches("(?i)how (do|can|to)|where|question")'
          label: other
  # No rule matches: a human picks the label (an escalation in the inbox).
  otherwise: escalate

routes:
  # A refund moves money: it waits for a reviewer's approval.
  - when: decision.label == "billing" && payload.ticket.subject.matches("(?i)refund")
    do: [issue_refund, note]
  - when: decision.label == "billing"
    do: [assign_billing, note]
  - when: decision.label == "bug"
    do: [tag_bug, note]
  - when: "true"
    do: [note]

actions:
  assign_billing:
    connector: helpdesk
    request:
      method: PUT
      path: "/api/v2/tickets/{{ payload.ticket.id }}"
      headers: { X-Source: charter-demo }
      json: { ticket: { id: "{{ payload.ticket.id }}", group: billing } }
    approval: auto
    retry: { attempts: 3, backoff: 200ms, max_backoff: 2s }
    measure: ticket_routed
  issue_refund:
    connector: helpdesk
    request:
      method: POST
      path: "/api/v2/tickets/{{ payload.ticket.id }}/refunds"
      json: { ticket: "{{ payload.ticket.id }}", reason: "{{ payload.ticket.subject }}" }
    # Waits in the inbox until a reviewer approves it (admins always may; the demo has
    # no tokens, so the open UI decides as admin). Unanswered for a day: escalated.
    approval: { reviewers: [support-leads], expires: 24h, on_expiry: escalate }
    measure: ticket_routed
  tag_bug:
    connector: helpdesk
    request:
      method: PUT
      path: "/api/v2/tickets/{{ payload.ticket.id }}/tags"
      json: { tags: [bug] }
    approval: auto
    measure: ticket_routed
  note:
    log: "ticket {{ payload.ticket.id }} classified as {{ decision.label }}"
    approval: auto

escalation: { to: support-leads }
measure:
  success: [ticket_routed]
"#;

/// The demo's GitHub charter: shadow mode, GitHub signatures, delivery-id dedupe.
const DEMO_GITHUB_YAML: &str = r#"name: github-issues
description: Demo. Label new GitHub issues as bug, feature or question (shadow mode, nothing is sent).
owner: eng-lead@example.com
maintainer: integrations@example.com
system_of_record: github
mode: shadow
uses: [github]

trigger:
  webhook:
    path: /hooks/github/issues
    verify: { preset: github, secret: file:secrets/github-webhook }
  dedupe: { header: x-github-delivery }
  text: "{{ payload.issue.title }}"

decide:
  labels: [bug, feature, question]
  stages:
    - rules:
        - when: 'payload.issue.title.matches("(?i)bug|error|crash|fail")'
          label: bug
        - when: 'payload.issue.title.matches("(?i)feature|support for|add ")'
          label: feature
        - when: "true"
          label: question
  otherwise: escalate

routes:
  - when: has(payload.issue) && decision.label != "question"
    do: [add_label]
  - when: "true"
    do: [note]

actions:
  add_label:
    connector: github
    request:
      method: POST
      # `safe_path`: full_name is `owner/repo`, two segments (other values are encoded)
      path: "/repos/{{ payload.repository.full_name | safe_path }}/issues/{{ payload.issue.number }}/labels"
      json: { labels: ["{{ decision.label }}"] }
    approval: auto
    measure: issue_labelled
  note:
    log: "issue {{ payload.issue.number }} looks like a {{ decision.label }}"
    approval: auto

escalation: { to: maintainers }
measure:
  success: [issue_labelled]
"#;

const DEMO_SAMPLE_BILLING: &str = r#"{
  "ticket": {
    "id": 2001,
    "subject": "Double charge on my March invoice",
    "description": "My card was charged twice for the March invoice.",
    "updated_at": "2026-03-02T09:15:00Z"
  }
}
"#;

const DEMO_SAMPLE_BUG: &str = r#"{
  "ticket": {
    "id": 2002,
    "subject": "App crashes when I open settings",
    "description": "Version 4.2 on Android, every time.",
    "updated_at": "2026-03-02T09:20:00Z"
  }
}
"#;

const DEMO_SAMPLE_OTHER: &str = r#"{
  "ticket": {
    "id": 2003,
    "subject": "How do I change my display name?",
    "description": "Could not find it in the profile page.",
    "updated_at": "2026-03-02T09:25:00Z"
  }
}
"#;

const DEMO_SAMPLE_REFUND: &str = r#"{
  "ticket": {
    "id": 2004,
    "subject": "Please refund order ORD-7731",
    "description": "The parcel never arrived; I would like my money back.",
    "updated_at": "2026-03-02T09:30:00Z"
  }
}
"#;

const DEMO_SAMPLE_UNCLEAR: &str = r#"{
  "ticket": {
    "id": 2005,
    "subject": "Call me back today please",
    "description": "It is about my account.",
    "updated_at": "2026-03-02T09:35:00Z"
  }
}
"#;

const DEMO_SAMPLE_ISSUE: &str = r#"{
  "action": "opened",
  "issue": {
    "number": 17,
    "title": "Crash on start-up with an empty config",
    "body": "Steps: run with an empty charter.yaml."
  },
  "repository": { "full_name": "acme/widgets" }
}
"#;

/// The demo project: two charters that need no keys and no network beyond 127.0.0.1.
///
/// `sink_base_url` is the local HTTP server that stands in for the helpdesk and GitHub
/// (for example `http://127.0.0.1:9911`). The webhook secrets are demo values written into
/// the project (`secrets/*`, referenced as `file:`) so that nothing has to be exported.
/// Sample events are under `samples/<charter name>/`.
pub fn demo_project(sink_base_url: &str) -> Vec<(&'static str, String)> {
    let base = sink_base_url.trim_end_matches('/');
    let project = format!(
        r#"# Charter demo project: everything runs on this machine.
server:
  listen: 127.0.0.1:8080
store: charter-demo.db
worker:
  poll_interval: 200ms

connectors:
  helpdesk:
    type: http
    base_url: {base}/helpdesk
    timeout: 5s
    allow_private: true
  github:
    type: http
    base_url: {base}/github
    timeout: 5s
    allow_private: true
"#
    );
    vec![
        ("charter.yaml", project),
        (
            "charters/support-triage.yaml",
            DEMO_SUPPORT_YAML.to_string(),
        ),
        ("charters/github-issues.yaml", DEMO_GITHUB_YAML.to_string()),
        ("schemas/ticket.json", TICKET_SCHEMA.to_string()),
        (
            "samples/support-triage/ticket-billing.json",
            DEMO_SAMPLE_BILLING.to_string(),
        ),
        (
            "samples/support-triage/ticket-bug.json",
            DEMO_SAMPLE_BUG.to_string(),
        ),
        (
            "samples/support-triage/ticket-other.json",
            DEMO_SAMPLE_OTHER.to_string(),
        ),
        (
            "samples/support-triage/ticket-refund.json",
            DEMO_SAMPLE_REFUND.to_string(),
        ),
        (
            "samples/support-triage/ticket-unclear.json",
            DEMO_SAMPLE_UNCLEAR.to_string(),
        ),
        (
            "samples/github-issues/issue-opened.json",
            DEMO_SAMPLE_ISSUE.to_string(),
        ),
        (
            "secrets/support-webhook",
            "whsec_ZGVtby1zdXBwb3J0LXdlYmhvb2stc2VjcmV0\n".to_string(),
        ),
        (
            "secrets/github-webhook",
            "demo-github-webhook-secret\n".to_string(),
        ),
    ]
}
