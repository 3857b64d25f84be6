//! Connector and action configuration: loading, presets and their auth kinds, `check` and
//! load agreeing, located errors, secrets resolved into connections.

use super::*;

// ---------------------------------------------------------------------------------------
// Configuration

fn project(charter_yaml: &str, triage: &str) -> ProjectSource {
    let mut files = BTreeMap::new();
    files.insert("charter.yaml".to_string(), charter_yaml.to_string());
    files.insert("charters/triage.yaml".to_string(), triage.to_string());
    files.insert(
        "schemas/crm-answer.json".to_string(),
        r#"{"type": "object", "required": ["id"]}"#.to_string(),
    );
    ProjectSource { files }
}

const CONNECTORS: &str = r#"connectors:
  crm:
    type: http
    preset: rest_crm
    base_url: https://crm.acme.example/api
    auth: { oauth2: { token_url: https://auth.acme.example/token, client_id: charter, client_secret: env:CRM_SECRET, scope: contacts } }
    rate_limit: 600/m
    concurrency: 3
    circuit_breaker: { failures: 4, cool_down: 1m }
    response_schema: schemas/crm-answer.json
  hubspot:
    type: http
    preset: hubspot
    auth: { bearer: env:HUBSPOT_TOKEN }
  slack:
    type: slack
    webhook_url: env:SLACK_WEBHOOK
  mail:
    type: smtp
    host: smtp.acme.example
    tls: starttls
    username: charter
    password: env:SMTP_PASSWORD
    from: Charter <charter@acme.example>
  warehouse:
    type: sql
    url: sqlite:data/warehouse.db
"#;

const TRIAGE: &str = r##"name: triage
description: Route tickets.
owner: ops@acme.example
maintainer: int@acme.example
system_of_record: crm
mode: live
uses: [crm, slack, mail, warehouse]
trigger:
  webhook: { path: /hooks/t, verify: none }
routes:
  - { when: "true", do: [notify, mail_lead, record] }
actions:
  notify:
    connector: slack
    message: { channel: "#ops", text: "New: {{ payload.subject }}" }
    approval: auto
  mail_lead:
    connector: mail
    email: { to: "{{ payload.lead }}", subject: "Ticket {{ payload.id }}", body: "{{ payload.subject }}" }
    approval: auto
  record:
    connector: warehouse
    sql: { statement: "INSERT INTO tickets (id, label) VALUES ($1, $2)", params: ["{{ payload.id }}", ~] }
    approval: auto
escalation: { to: ops }
measure: { success: [done] }
"##;

#[test]
fn connectors_and_actions_load() {
    let p = load_project(&project(CONNECTORS, TRIAGE)).unwrap_or_else(|d| panic!("{d}"));
    let ConnectorKind::Http(crm) = &p.connectors["crm"].kind else {
        panic!()
    };
    assert_eq!(crm.preset.as_deref(), Some("rest_crm"));
    assert!((crm.rate_limit.unwrap() - 10.0).abs() < 1e-9);
    assert_eq!(crm.concurrency, Some(3));
    assert_eq!(crm.circuit_breaker.unwrap().failures, 4);
    assert_eq!(
        crm.circuit_breaker.unwrap().cool_down,
        Duration::from_secs(60)
    );
    assert_eq!(
        crm.response_schema.as_ref().unwrap().file,
        "schemas/crm-answer.json"
    );
    assert!(
        matches!(&crm.auth, Some(HttpAuth::OAuth2 { client_id, .. }) if client_id == "charter")
    );
    let ConnectorKind::Http(hub) = &p.connectors["hubspot"].kind else {
        panic!()
    };
    assert_eq!(hub.base_url, "https://api.hubapi.com");
    assert!(matches!(
        &p.connectors["slack"].kind,
        ConnectorKind::Slack(s) if matches!(s.auth, SlackCfg::Webhook(_))
    ));
    let ConnectorKind::Smtp(mail) = &p.connectors["mail"].kind else {
        panic!()
    };
    assert_eq!((mail.port, mail.tls), (587, SmtpTls::StartTls));
    assert!(matches!(
        &p.connectors["warehouse"].kind,
        ConnectorKind::Sql(s) if s.database == SqlDatabase::Sqlite("data/warehouse.db".into())
    ));
    let t = &p.charters["triage"];
    assert!(matches!(&t.actions["notify"].kind, ActionKind::Message(m) if m.connector == "slack"));
    assert!(matches!(&t.actions["mail_lead"].kind, ActionKind::Email(_)));
    let ActionKind::Sql(q) = &t.actions["record"].kind else {
        panic!()
    };
    assert_eq!(q.params.len(), 2);
    assert!(q.params[1].is_none());

    // Presets fill their defaults without overriding what is written.
    let hub = charter_connect::presets::apply(hub).unwrap();
    assert_eq!(
        hub.headers.get("Accept").map(String::as_str),
        Some("application/json")
    );
    assert!(hub.rate_limit.is_some() && hub.circuit_breaker.is_some());
    let crm2 = charter_connect::presets::apply(crm).unwrap();
    assert_eq!(crm2.concurrency, Some(3));
}

#[test]
fn every_preset_name_has_a_preset_and_a_snippet_that_loads() {
    for rule in charter_core::config::HTTP_PRESETS {
        let name = rule.name;
        let p = charter_connect::presets::preset(name).unwrap();
        let yaml = format!(
            "connectors:\n{}\n",
            p.snippet
                .lines()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let mut src = project(&yaml, "");
        src.files.remove("charters/triage.yaml");
        load_project(&src).unwrap_or_else(|d| panic!("{name}: {d}\n{yaml}"));
    }
    assert_eq!(
        charter_connect::presets::PRESETS.len(),
        charter_core::config::HTTP_PRESETS.len()
    );
}

#[test]
fn preset_refuses_an_auth_kind_the_system_does_not_take() {
    // `charter check` (load_project) refuses it, located at the `auth:` line...
    let mut src = project(
        "connectors:\n  hub:\n    type: http\n    preset: hubspot\n    auth: { basic: { username: u, password: env:P } }\n",
        "",
    );
    src.files.remove("charters/triage.yaml");
    let err = diagnostics(&src);
    assert!(
        err.contains("charter.yaml:5:")
            && err.contains("`preset: hubspot` does not accept `basic` auth"),
        "{err}"
    );
    // ...and so does applying the preset at load, for a connector built without check.
    let mut ok = project(
        "connectors:\n  hub:\n    type: http\n    preset: hubspot\n    auth: { bearer: env:P }\n",
        "",
    );
    ok.files.remove("charters/triage.yaml");
    let p = load_project(&ok).unwrap();
    let ConnectorKind::Http(h) = &p.connectors["hub"].kind else {
        panic!("hub is an http connector")
    };
    let mut h = h.clone();
    h.auth = Some(charter_core::config::HttpAuth::Basic {
        username: "u".into(),
        password: charter_core::config::SecretRef::Env("P".into()),
    });
    let err = charter_connect::presets::apply(&h).unwrap_err().to_string();
    assert!(err.contains("does not accept `basic` auth"), "{err}");
}

/// Every auth shape a preset refuses at load is refused by `charter check` too, for every
/// preset: the two can never disagree.
#[test]
fn check_and_load_agree_on_every_preset_and_auth_shape() {
    let shapes = [
        ("bearer", "{ bearer: env:P }"),
        ("basic", "{ basic: { username: u, password: env:P } }"),
        ("header", "{ header: { name: X-Key, value: env:P } }"),
        (
            "oauth2",
            "{ oauth2: { token_url: https://auth.example.com/t, client_id: c, client_secret: env:P } }",
        ),
    ];
    for rule in charter_core::config::HTTP_PRESETS {
        for (word, auth) in shapes {
            let mut src = project(
                &format!(
                    "connectors:\n  c:\n    type: http\n    preset: {}\n    base_url: https://acme.example.com\n    auth: {auth}\n",
                    rule.name
                ),
                "",
            );
            src.files.remove("charters/triage.yaml");
            let checked = load_project(&src);
            let accepted = rule.auth.iter().any(|k| k.word() == word);
            match checked {
                Ok(p) => {
                    assert!(
                        accepted,
                        "{} + {word}: check passed a refused shape",
                        rule.name
                    );
                    let ConnectorKind::Http(h) = &p.connectors["c"].kind else {
                        panic!("c is an http connector")
                    };
                    charter_connect::presets::apply(h).unwrap_or_else(|e| {
                        panic!("{} + {word}: check passed, load refused: {e}", rule.name)
                    });
                }
                Err(d) => {
                    assert!(!accepted, "{} + {word}: refused: {d}", rule.name);
                    assert!(d.to_string().contains("charter.yaml:6:"), "{d}");
                }
            }
        }
    }
}

fn diagnostics(src: &ProjectSource) -> String {
    load_project(src).unwrap_err().to_string()
}

#[test]
fn misconfigured_connectors_and_actions_are_located() {
    let bad_connectors = r#"connectors:
  crm:
    type: http
    preset: salesforce
    base_url: https://x.example
    rate_limit: fast
    response_schema: schemas/missing.json
  jira:
    type: http
    preset: jira
  slack:
    type: slack
    webhook_url: env:HOOK
    token: env:TOKEN
  mail:
    type: smtp
    host: smtp.example
    port: 99999
    from: nobody
    url: sqlite:x.db
  warehouse:
    type: sql
    url: postgres://app:hunter2@db/app
"#;
    let d = diagnostics(&{
        let mut s = project(bad_connectors, "");
        s.files.remove("charters/triage.yaml");
        s
    });
    for want in [
        "charter.yaml:4:13: `preset` is `salesforce`; expected one of `zendesk`, `hubspot`, `jira`, `rest_crm`",
        "charter.yaml:6:17: `rate_limit`: `fast`",
        "charter.yaml:7:22: `response_schema` file `schemas/missing.json` does not exist",
        "connector `jira` (preset `jira`) has no `base_url`",
        "give either `webhook_url` (an incoming webhook) or `token`",
        "`port` is 99999; expected a port from 1 to 65535",
        "smtp connector `mail` has no `tls`",
        "`from` is `nobody`; expected a sender address",
        "`url` is not a setting of a `smtp` connector (it belongs to `sql`)",
        "`url` holds a password; secrets are only given by reference",
    ] {
        assert!(d.contains(want), "missing {want:?} in:\n{d}");
    }

    let bad_actions = TRIAGE
        .replace(
            "connector: slack\n    message",
            "connector: mail\n    message",
        )
        .replace(
            "INSERT INTO tickets (id, label) VALUES ($1, $2)",
            "INSERT INTO tickets (id) VALUES ('{{ payload.id }}')",
        )
        .replace("connector: mail\n    email", "connector: crm\n    email");
    let d = diagnostics(&project(CONNECTORS, &bad_actions));
    for want in [
        "connector `mail` is a `smtp` connector; a `message` action needs a `slack` connector",
        "connector `crm` is a `http` connector; a `email` action needs a `smtp` connector",
        "`statement` contains a template; values never go into SQL text",
    ] {
        assert!(d.contains(want), "missing {want:?} in:\n{d}");
    }

    // A connector not in `uses` is refused for the new action kinds too.
    let not_used = TRIAGE.replace(
        "uses: [crm, slack, mail, warehouse]",
        "uses: [crm, mail, warehouse]",
    );
    let d = diagnostics(&project(CONNECTORS, &not_used));
    assert!(
        d.contains(
            "action `notify` uses connector `slack`, which is not in this charter's `uses` list"
        ),
        "{d}"
    );
}

#[test]
fn connection_from_config_resolves_secrets() {
    let p = load_project(&project(CONNECTORS, TRIAGE)).unwrap();
    let mut asked = Vec::new();
    for (name, c) in &p.connectors {
        let conn = Connection::from_config(name, &c.kind, std::path::Path::new("/srv/proj"), |r| {
            asked.push(r.to_string());
            Ok(format!("value-of-{r}"))
        })
        .unwrap();
        let shown = format!("{conn:?}");
        assert!(
            !shown.contains("value-of-"),
            "{name}: secrets shown in {shown}"
        );
        if name == "warehouse" {
            assert!(shown.contains("/srv/proj/data/warehouse.db"), "{shown}");
        }
        if name == "crm" {
            let h = conn.http().unwrap();
            assert!(h.oauth.is_some() && h.contract.is_some() && h.breaker.is_some());
        }
    }
    asked.sort();
    assert_eq!(
        asked,
        [
            "env:CRM_SECRET",
            "env:HUBSPOT_TOKEN",
            "env:SLACK_WEBHOOK",
            "env:SMTP_PASSWORD"
        ]
    );
    let err = Connection::from_config(
        "crm",
        &p.connectors["crm"].kind,
        std::path::Path::new("."),
        |_| Err("secret env:CRM_SECRET is not set".to_string()),
    )
    .unwrap_err();
    assert!(err.contains("not set"));
}
