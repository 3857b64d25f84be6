//! Charters the tests share.

/// A charter whose `billing` decision PUTs the ticket to the downstream server under
/// `approval`; other subjects go to `otherwise` (a label, or `escalate`).
pub fn charter_yaml(name: &str, mode: &str, approval: &str, otherwise: &str) -> String {
    format!(
        r#"
name: {name}
description: test charter {name}
owner: ops@example.test
maintainer: integrations@example.test
system_of_record: helpdesk
mode: {mode}
uses: [helpdesk]
trigger:
  webhook:
    path: /hooks/{name}
    verify: none
  dedupe: "{{{{ payload.ticket.id }}}}"
  text: "{{{{ payload.ticket.subject }}}}"
decide:
  labels: [billing, other]
  stages:
    - rules:
        - {{ when: 'payload.ticket.subject.contains("refund")', label: billing }}
  otherwise: {otherwise}
routes:
  - when: decision.label == "billing"
    do: [assign_billing]
  - when: "true"
    do: [note]
actions:
  assign_billing:
    connector: helpdesk
    request:
      method: PUT
      path: "/api/tickets/{{{{ payload.ticket.id }}}}"
      json: {{ ticket: {{ group: billing }} }}
    approval: {approval}
  note:
    log: "ticket {{{{ payload.ticket.id }}}} is {{{{ decision.label }}}}"
    approval: auto
escalation: {{ to: support-leads }}
measure:
  success: [ticket_routed]
"#
    )
}
