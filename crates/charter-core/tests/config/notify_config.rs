//! `escalation.notify` targets and the Slack connector's interactive settings: what a
//! valid project yields, and the `file:line:column` diagnostics of broken ones.

use std::collections::BTreeMap;

use charter_core::config::{ConnectorKind, NotifyChannel, ProjectSource, SecretRef, load_project};

const PROJECT: &str = r#"server:
  public_url: https://charter.acme.example
connectors:
  helpdesk:
    type: http
    base_url: http://helpdesk.acme.example:9000
  hook:
    type: http
    base_url: https://hooks.acme.example
  slack:
    type: slack
    token: env:SLACK_BOT_TOKEN
    signing_secret: env:SLACK_SIGNING_SECRET
    users:
      U024BE7LH: leads
      W0ADMIN01: ops
  mail:
    type: smtp
    host: smtp.acme.example
    tls: starttls
    from: charter@acme.example
  db:
    type: sql
    url: sqlite:data/x.db
tokens:
  - { name: ops, role: admin, secret: env:OPS }
  - { name: leads, role: reviewer, secret: env:LEADS }
"#;

const CHARTER: &str = r#"name: refunds
description: Refunds need a human.
owner: a@acme.example
maintainer: b@acme.example
system_of_record: helpdesk
mode: live
uses: [helpdesk, hook, slack, mail, db]
trigger:
  webhook: { path: /hooks/refunds, verify: none }
routes:
  - when: "true"
    do: [refund]
actions:
  refund:
    connector: helpdesk
    request: { method: POST, path: /refunds }
    approval: { reviewers: [leads], expires: 1h, on_expiry: escalate }
escalation:
  to: leads
  notify: NOTIFY
measure:
  success: [refunded]
"#;

fn source(project: &str, notify: &str) -> ProjectSource {
    let mut files = BTreeMap::new();
    files.insert("charter.yaml".to_string(), project.to_string());
    files.insert(
        "charters/refunds.yaml".to_string(),
        CHARTER.replace("NOTIFY", notify),
    );
    ProjectSource { files }
}

fn problems(src: &ProjectSource) -> String {
    match load_project(src) {
        Ok(_) => panic!("expected the project to fail validation"),
        Err(d) => d.to_string(),
    }
}

#[test]
fn targets_of_every_kind_parse() {
    let p = load_project(&source(
        PROJECT,
        r#"[slack:#refund-approvals, "hook:/charter/notify", "mail:leads@acme.example, ops@acme.example"]"#,
    ))
    .unwrap_or_else(|d| panic!("{d}"));
    let c = &p.charters["refunds"];
    let got: Vec<_> = c
        .escalation
        .notify
        .iter()
        .map(|t| (t.spec.as_str(), t.connector.as_str(), t.channel.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "slack:#refund-approvals",
                "slack",
                NotifyChannel::Slack {
                    channel: Some("#refund-approvals".into())
                }
            ),
            (
                "hook:/charter/notify",
                "hook",
                NotifyChannel::Http {
                    path: Some("/charter/notify".into())
                }
            ),
            (
                "mail:leads@acme.example, ops@acme.example",
                "mail",
                NotifyChannel::Email {
                    to: "leads@acme.example, ops@acme.example".into()
                }
            ),
        ]
    );
    let ConnectorKind::Slack(s) = &p.connectors["slack"].kind else {
        panic!("slack connector")
    };
    assert_eq!(
        s.signing_secret,
        Some(SecretRef::Env("SLACK_SIGNING_SECRET".into()))
    );
    assert_eq!(s.users["U024BE7LH"], "leads");
    assert_eq!(s.users["W0ADMIN01"], "ops");
    assert_eq!(
        p.settings.public_url.as_deref(),
        Some("https://charter.acme.example")
    );
    // One target may be written without a list.
    let p = load_project(&source(PROJECT, "hook")).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        p.charters["refunds"].escalation.notify[0].channel,
        NotifyChannel::Http { path: None }
    );
}

#[test]
fn bad_targets_are_reported_where_written() {
    let out = problems(&source(
        PROJECT,
        "[crm:/x, db, mail, hook:charter, slack:#a, slack:#a]",
    ));
    let expected = [
        "charters/refunds.yaml:20:12: `notify`: connector `crm` is not in this charter's `uses` list; expected one of `db`, `helpdesk`, `hook`, `mail`, `slack`",
        "charters/refunds.yaml:20:20: `notify`: connector `db` is of type `sql`; notifications go through an `http`, `slack` or `smtp` connector",
        "charters/refunds.yaml:20:24: `notify`: an email target needs its recipients, such as `mail:leads@acme.example`",
        "charters/refunds.yaml:20:30: `notify`: `charter` is not a path; expected `hook:/path` under the connector's base URL",
        "charters/refunds.yaml:20:54: `notify`: `slack:#a` is listed twice",
    ];
    for e in expected {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
    assert_eq!(out.lines().count(), expected.len(), "{out}");
}

#[test]
fn slack_users_must_name_tokens_and_need_a_signing_secret() {
    let broken = PROJECT
        .replace(
            "      U024BE7LH: leads\n",
            "      U024BE7LH: nobody\n      alice: ops\n",
        )
        .replace("    signing_secret: env:SLACK_SIGNING_SECRET\n", "");
    let out = problems(&source(&broken, "slack:#x"));
    let expected = [
        "charter.yaml:14:7: `users` needs `signing_secret: env:SLACK_SIGNING_SECRET` to verify Slack's button callbacks",
        "charter.yaml:14:18: `users`: `nobody` is not the name of a token in `tokens:`; expected one of `leads`, `ops`",
        "charter.yaml:15:7: `users`: `alice` is not a Slack user id; expected an id such as `U024BE7LH` (profile → Copy member ID)",
    ];
    for e in expected {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
    // A signing secret written in the file is refused like every other secret.
    let inline = PROJECT.replace(
        "signing_secret: env:SLACK_SIGNING_SECRET",
        "signing_secret: abc123",
    );
    let out = problems(&source(&inline, "slack:#x"));
    assert!(
        out.contains("charter.yaml:13:21: `signing_secret`: "),
        "{out}"
    );
    // Slack-only settings on another connector type are named as such.
    let misplaced = PROJECT.replace(
        "    base_url: https://hooks.acme.example\n",
        "    base_url: https://hooks.acme.example\n    signing_secret: env:X\n",
    );
    let out = problems(&source(&misplaced, "hook"));
    assert!(
        out.contains(
            "`signing_secret` is not a setting of a `http` connector (it belongs to `slack`)"
        ),
        "{out}"
    );
}

/// The charter with `alerts:` notifying `targets` (one alert each).
fn with_alerts(targets: &[&str]) -> ProjectSource {
    let mut src = source(PROJECT, "hook");
    let alerts: String = targets
        .iter()
        .map(|t| format!("  - dead_letters: {{ window: 15m, notify: \"{t}\" }}\n"))
        .collect();
    let charter = format!("{}alerts:\n{alerts}", CHARTER.replace("NOTIFY", "hook"));
    src.files.insert("charters/refunds.yaml".into(), charter);
    src
}

#[test]
fn alerts_are_delivered_through_http_slack_or_smtp_connectors() {
    let p = load_project(&with_alerts(&[
        "hook:/alerts",
        "slack:#ops-alerts",
        "mail:oncall@acme.example",
    ]))
    .unwrap_or_else(|d| panic!("{d}"));
    let got: Vec<_> = p.charters["refunds"]
        .alerts
        .iter()
        .map(|a| (a.notify.connector.as_str(), a.notify.channel.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "hook",
                NotifyChannel::Http {
                    path: Some("/alerts".into())
                }
            ),
            (
                "slack",
                NotifyChannel::Slack {
                    channel: Some("#ops-alerts".into())
                }
            ),
            (
                "mail",
                NotifyChannel::Email {
                    to: "oncall@acme.example".into()
                }
            ),
        ]
    );
    let out = problems(&with_alerts(&["slack", "mail", "db", "hook:alerts"]));
    let expected = [
        "`notify`: connector `slack` posts with a bot token, which needs a channel, such as `slack:#ops-alerts`",
        "`notify`: an email alert needs its recipients, such as `mail:oncall@acme.example`",
        "`notify`: connector `db` is of type `sql`, which cannot deliver alerts",
        "`notify`: `alerts` is not a path; expected `hook:/path`",
    ];
    for e in expected {
        let line = out.lines().find(|l| l.contains(e));
        assert!(
            line.is_some_and(|l| l.starts_with("charters/refunds.yaml:")),
            "missing {e:?} (with its file and line) in:\n{out}"
        );
    }
    assert_eq!(out.lines().count(), expected.len(), "{out}");
}
