//! Settings that keep payloads from steering where an action goes: URL templates, e-mail
//! recipients and their domains, MCP calls and route conditions, and connectors whose
//! address could never pass the outbound guard.

use std::collections::BTreeMap;

use charter_core::config::{ActionKind, ConnectorKind, ProjectSource, Recipients, load_project};
use serde_json::json;

const PROJECT: &str = r#"connectors:
  helpdesk:
    type: http
    base_url: https://helpdesk.acme.example/api
  local:
    type: http
    base_url: http://127.0.0.1:9000
    allow_private: true
  mail:
    type: smtp
    host: smtp.acme.example
    tls: starttls
    from: charter@acme.example
    allowed_domains: [acme.example, Partner.Example]
"#;

const CHARTER: &str = r#"name: leads
description: Leads are answered.
owner: a@acme.example
maintainer: b@acme.example
system_of_record: helpdesk
mode: live
uses: [helpdesk, local, mail]
trigger:
  webhook: { path: /hooks/leads, verify: none }
routes:
  - when: payload.kind == "lead"
    do: [note, welcome, team]
actions:
  note:
    connector: helpdesk
    request: { method: POST, path: "/things/{{ payload.id }}" }
    approval: auto
    mcp_skip_when: true
  welcome:
    connector: mail
    email: { to: "{{ payload.lead }}", subject: "Hi", body: "Hello" }
    approval: auto
  team:
    connector: mail
    email:
      to: ["{{ payload.owner }}", sales@acme.example]
      subject: "New lead"
      body: "{{ payload.lead }}"
    approval: auto
escalation: { to: sales }
measure:
  success: [answered]
"#;

fn source(project: &str, charter: &str) -> ProjectSource {
    let mut files = BTreeMap::new();
    files.insert("charter.yaml".to_string(), project.to_string());
    files.insert("charters/leads.yaml".to_string(), charter.to_string());
    ProjectSource { files }
}

fn problems(src: &ProjectSource) -> String {
    match load_project(src) {
        Ok(_) => panic!("expected the project to fail validation"),
        Err(d) => d.to_string(),
    }
}

#[test]
fn url_templates_recipients_domains_and_the_mcp_opt_out_parse() {
    let p = load_project(&source(PROJECT, CHARTER)).unwrap_or_else(|d| panic!("{d}"));
    let ConnectorKind::Smtp(mail) = &p.connectors["mail"].kind else {
        panic!("mail is smtp");
    };
    assert_eq!(mail.allowed_domains, ["acme.example", "partner.example"]);
    let c = &p.charters["leads"];
    let note = &c.actions["note"];
    assert!(note.mcp_skip_when);
    assert!(!c.actions["welcome"].mcp_skip_when);
    // The action path encodes what it inserts.
    let ActionKind::Http(h) = &note.kind else {
        panic!("note is a request");
    };
    let ctx = json!({"payload": {"id": "../../admin?x=1#"}});
    assert_eq!(
        h.target.render(&ctx).unwrap(),
        "/things/..%2F..%2Fadmin%3Fx%3D1%23"
    );
    let ActionKind::Email(welcome) = &c.actions["welcome"].kind else {
        panic!("welcome is an email");
    };
    assert!(matches!(&welcome.to, Recipients::One(t) if !t.is_literal()));
    let ActionKind::Email(team) = &c.actions["team"].kind else {
        panic!("team is an email");
    };
    let Recipients::List(list) = &team.to else {
        panic!("team mails a list");
    };
    assert_eq!(list.len(), 2);
    assert!(list[1].is_literal());
}

#[test]
fn a_literal_private_base_url_needs_allow_private() {
    let broken = PROJECT
        .replace(
            "    base_url: https://helpdesk.acme.example/api",
            "    base_url: http://10.1.2.3:8080/api",
        )
        .replace("    allow_private: true\n", "")
        .replace("    host: smtp.acme.example", "    host: \"[::1]\"");
    let out = problems(&source(&broken, CHARTER));
    let expected = [
        "charter.yaml:4:15: `base_url` is `http://10.1.2.3:8080/api`, whose host is a private address: the outbound guard refuses it, so connector `helpdesk` could never be reached; set `allow_private: true` on the connector if it is meant to reach a local service",
        "charter.yaml:7:15: `base_url` is `http://127.0.0.1:9000`, whose host is a loopback address",
        "charter.yaml:10:11: `host` is `[::1]`, a loopback address: the outbound guard refuses it, so this connector could never send; set `allow_private: true` on connector `mail`",
    ];
    for e in expected {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
    // Names are left to the resolver; `allow_private` admits a literal address.
    assert!(load_project(&source(PROJECT, CHARTER)).is_ok());
}

#[test]
fn bad_recipient_settings_are_reported_where_written() {
    let broken = PROJECT.replace(
        "allowed_domains: [acme.example, Partner.Example]",
        "allowed_domains: [\"a@b.example\"]",
    );
    let charter = CHARTER.replace(
        "      to: [\"{{ payload.owner }}\", sales@acme.example]",
        "      to: []",
    );
    let out = problems(&source(&broken, &charter));
    let expected = [
        "charter.yaml:14:23: `allowed_domains` has `a@b.example`; expected a domain such as `acme.example`",
        "charters/leads.yaml:26:11: `to` is an empty list; expected at least one recipient",
    ];
    for e in expected {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
}
