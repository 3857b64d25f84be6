//! Where a payload may steer an action, through the real worker, against real downstreams
//! on 127.0.0.1 (the sink records every request it receives; aiosmtpd writes every message
//! it accepts): values rendered into URLs are encoded and a request that would leave its
//! path is refused before it is sent; a templated e-mail recipient is one address, inside
//! the connector's `allowed_domains`; an MCP call runs an action only where a route's
//! `when:` holds, unless the action opts out.

use std::time::Duration;

use charter_core::model::{ActionStatus, RunOutcome};
use charter_store::RunStore;
use serde_json::{Value, json};

use crate::notify::start_smtp;
use crate::support::Harness;

fn charter(name: &str, uses: &str, routes: &str, actions: &str) -> String {
    format!(
        r#"
name: {name}
description: test charter {name}
owner: ops@example.test
maintainer: integrations@example.test
system_of_record: helpdesk
mode: live
uses: [{uses}]
trigger:
  webhook: {{ path: /hooks/{name}, verify: none }}
routes:
{routes}
actions:
{actions}
escalation: {{ to: support-leads }}
measure:
  success: [done]
"#
    )
}

/// POST `payload` to a charter's webhook; the event's id.
async fn deliver(h: &Harness, charter: &str, payload: Value) -> String {
    let r = h
        .http
        .post(format!("{}/hooks/{charter}", h.base))
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The one run of an event, once it reached `status`.
async fn run_of(h: &Harness, id: &str, status: &str) -> charter_core::model::RunRecord {
    h.wait_status(id, status).await;
    let mut runs = h.store.runs_for_event(id.parse().unwrap()).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_values_cannot_steer_an_action_path() {
    let things = charter(
        "things",
        "helpdesk",
        r#"  - when: '"repo" in payload'
    do: [label]
  - when: "true"
    do: [touch]"#,
        r#"  touch:
    connector: helpdesk
    request: { method: POST, path: "/things/{{ payload.id }}?note={{ payload.note }}", json: { id: "{{ payload.id }}" } }
    approval: auto
  label:
    connector: helpdesk
    request: { method: POST, path: "/repos/{{ payload.repo | safe_path }}/labels" }
    approval: auto"#,
    );
    let h = Harness::start(&[("things", things)], &[]).await;

    // Issue #23's delivery: before, it reached the downstream as `POST /admin?x=1` with the
    // connector's credentials. Now the run records a failed action and nothing is sent.
    let id = deliver(&h, "things", json!({"id": "../../admin?x=1#", "note": "n"})).await;
    let run = run_of(&h, &id, "failed").await;
    assert_eq!(run.outcome, Some(RunOutcome::Failed));
    let error = run.error.clone().unwrap_or_default();
    assert!(
        error.contains("action `touch`")
            && error.contains("has a `.` or `..` segment")
            && error.contains("nothing sent"),
        "{error}"
    );
    assert_eq!(run.actions.len(), 1);
    assert_eq!(run.actions[0].status, ActionStatus::Invalid);
    assert!(run.actions[0].attempts.is_empty());
    // Every spelling of a traversal is refused the same way.
    for bad in ["..", ".", "%2e%2e", "..\\..\\admin", "x/../../admin"] {
        let id = deliver(&h, "things", json!({"id": bad, "note": "n"})).await;
        let run = run_of(&h, &id, "failed").await;
        assert_eq!(run.actions[0].status, ActionStatus::Invalid, "{bad}");
    }
    // A `safe_path` value holding a dot segment fails at render.
    let id = deliver(&h, "things", json!({"repo": "acme/../admin"})).await;
    let run = run_of(&h, &id, "failed").await;
    assert!(
        run.error.clone().unwrap_or_default().contains("safe_path"),
        "{:?}",
        run.error
    );
    assert!(
        h.sink.received().is_empty(),
        "nothing reaches the downstream: {:?}",
        h.sink.received()
    );

    // Ordinary values render as before; odd ones are encoded into their one segment or
    // query value.
    let id = deliver(&h, "things", json!({"id": 42, "note": "hi"})).await;
    run_of(&h, &id, "done").await;
    let id = deliver(&h, "things", json!({"id": "A 1/2?#", "note": "a&b=c"})).await;
    run_of(&h, &id, "done").await;
    let id = deliver(&h, "things", json!({"repo": "acme/widgets"})).await;
    run_of(&h, &id, "done").await;
    let paths: Vec<(String, String)> = h
        .sink
        .received()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        paths,
        [
            ("POST".to_string(), "/things/42".to_string()),
            ("POST".to_string(), "/things/A%201%2F2%3F%23".to_string()),
            ("POST".to_string(), "/repos/acme/widgets/labels".to_string()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_cannot_add_email_recipients() {
    let Some(smtp) = start_smtp().await else {
        return;
    };
    let mail = format!(
        "  mail:\n    type: smtp\n    host: 127.0.0.1\n    port: {}\n    tls: none\n    allow_private: true\n    from: Charter <charter@example.test>\n    allowed_domains: [example.test]\n",
        smtp.port
    );
    let leads = charter(
        "leads",
        "helpdesk, mail",
        r#"  - when: '"team" in payload'
    do: [team]
  - when: "true"
    do: [welcome]"#,
        r#"  welcome:
    connector: mail
    email: { to: "{{ payload.lead }}", subject: "Welcome", body: "Hello {{ payload.lead }}" }
    approval: auto
  team:
    connector: mail
    email:
      to: ["{{ payload.team }}", "sales@example.test"]
      subject: "New lead"
      body: "{{ payload.team }}"
    approval: auto"#,
    );
    let h = Harness::start_with_connectors(&[("leads", leads)], &[], &[], &mail).await;
    let message = |n: usize| std::fs::read_to_string(smtp.dir.join(format!("{n}.eml")));

    // Issue #23's delivery: before, both addresses were mailed.
    let id = deliver(
        &h,
        "leads",
        json!({"lead": "a@example.test, attacker@evil.example"}),
    )
    .await;
    let run = run_of(&h, &id, "failed").await;
    let error = run.error.clone().unwrap_or_default();
    assert!(
        error.contains("action `welcome`")
            && error.contains("is 2 addresses; a templated recipient must be exactly one address"),
        "{error}"
    );
    assert_eq!(run.actions[0].status, ActionStatus::Invalid);
    // One address outside `allowed_domains`: refused before any connection.
    let id = deliver(&h, "leads", json!({"lead": "attacker@evil.example"})).await;
    let run = run_of(&h, &id, "failed").await;
    let error = run.error.clone().unwrap_or_default();
    assert!(
        error.contains("attacker@evil.example is not in the connector's allowed_domains"),
        "{error}"
    );
    // A list entry is one address too.
    let id = deliver(
        &h,
        "leads",
        json!({"team": "x@example.test; y@example.test"}),
    )
    .await;
    run_of(&h, &id, "failed").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(message(1).is_err(), "nothing was mailed");

    // One address: delivered. A declared list: each entry delivered.
    let id = deliver(&h, "leads", json!({"lead": "Ann <ann@example.test>"})).await;
    run_of(&h, &id, "done").await;
    let first = message(1).unwrap();
    assert!(first.starts_with("X-Rcpt: ann@example.test\r\n"), "{first}");
    let id = deliver(&h, "leads", json!({"team": "bo@eu.example.test"})).await;
    run_of(&h, &id, "done").await;
    let second = message(2).unwrap();
    assert!(
        second.starts_with("X-Rcpt: bo@eu.example.test,sales@example.test\r\n"),
        "{second}"
    );
    assert!(message(3).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_calls_honour_route_conditions() {
    let gate = charter(
        "gate",
        "helpdesk",
        r#"  - when: 'payload.ticket.subject.contains("refund")'
    do: [assign_billing]
  - when: decision.label == "billing"
    do: [escalate_note]"#,
        r#"  assign_billing:
    connector: helpdesk
    request: { method: PUT, path: "/api/tickets/{{ payload.ticket.id }}", json: { group: billing } }
    approval: auto
  escalate_note:
    log: "ticket {{ payload.ticket.id }}"
    approval: auto
  anytime:
    connector: helpdesk
    request: { method: PUT, path: "/api/tickets/{{ payload.ticket.id }}", json: { group: any } }
    approval: auto
    mcp_skip_when: true"#,
    );
    let h = Harness::start(&[("gate", gate)], &[("bot", "agent", &["gate"])]).await;
    let call = |tool: &'static str, id: i64, subject: &'static str| {
        let h = &h;
        async move {
            let r = h
                .post(
                    "/mcp",
                    Some("bot"),
                    Some(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": tool, "arguments":
                            {"ticket": {"id": id, "subject": subject}}}})),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["result"].clone()
        }
    };

    // The route's condition does not hold for this call: refused, nothing sent.
    let res = call("gate__assign_billing", 1, "hello").await;
    assert_eq!(res["isError"], true, "{res}");
    assert_eq!(res["structuredContent"]["outcome"], "no_route", "{res}");
    let text = res["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("only when the `when:` of a route that lists it holds")
            && text.contains("route 1 does not match")
            && text.contains("mcp_skip_when: true"),
        "{text}"
    );
    assert_eq!(h.puts(1), 0);
    // It holds: the action runs.
    let res = call("gate__assign_billing", 2, "refund please").await;
    assert_eq!(res["structuredContent"]["outcome"], "completed", "{res}");
    assert_eq!(h.puts(2), 1);
    // A condition on the decision cannot hold for a call, which is not decided.
    let res = call("gate__escalate_note", 3, "refund please").await;
    assert_eq!(res["structuredContent"]["outcome"], "no_route", "{res}");
    let text = res["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("route 2"), "{text}");
    // The explicit opt-out: no route lists it and it runs.
    let res = call("gate__anytime", 4, "hello").await;
    assert_eq!(res["structuredContent"]["outcome"], "completed", "{res}");
    assert_eq!(h.puts(4), 1);
}
