//! Operator controls of the admin API against a real server (127.0.0.1:0, SQLite, the worker
//! running, a downstream axum server receiving the actions): roles and scopes of promote,
//! mode, reroute, replay and the timeline; promotion making the next event execute its
//! action; reroute to the manual queue; replay of a time range; login audit entries; the UI
//! buttons with CSRF.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use crate::support;

use std::time::Duration;

use charter_store::{EventStore, ModeOverride, OperatorStore, RunStore, effective_mode};
use reqwest::Method;
use serde_json::{Value, json};
use support::{Harness, Ui, charter_yaml};

/// Tokens: `root` (admin, all charters), `ops` (admin of alpha), `lead` (reviewer of alpha),
/// `view` (viewer of alpha).
const TOKENS: &[(&str, &str, &[&str])] = &[
    ("root", "admin", &[]),
    ("ops", "admin", &["alpha"]),
    ("lead", "reviewer", &["alpha"]),
    ("view", "viewer", &["alpha"]),
];

async fn two_charters() -> Harness {
    Harness::start(
        &[
            ("alpha", charter_yaml("alpha", "shadow", "auto", "other")),
            ("beta", charter_yaml("beta", "shadow", "auto", "other")),
        ],
        TOKENS,
    )
    .await
}

async fn audit_actions(h: &Harness, action: &str) -> Vec<Value> {
    let r = h
        .get(&format!("/api/v1/audit?action={action}"), Some("root"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["audit"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_scopes_of_the_operator_endpoints() {
    let h = two_charters().await;
    let a = h.send("alpha", 1, "hello").await;
    let b = h.send("beta", 2, "hello").await;
    h.wait_status(&a, "done").await;
    h.wait_status(&b, "done").await;

    let mode = json!({"mode": "live"});
    let range = json!({"charter": "alpha", "since": 0});
    let ops: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "/api/v1/charters/alpha/promote".into(), None),
        (
            Method::POST,
            "/api/v1/charters/alpha/mode".into(),
            Some(mode.clone()),
        ),
        (Method::POST, format!("/api/v1/events/{a}/reroute"), None),
        (Method::POST, format!("/api/v1/events/{a}/replay"), None),
        (Method::POST, "/api/v1/replay".into(), Some(range.clone())),
        (Method::GET, format!("/api/v1/events/{a}/timeline"), None),
    ];
    // No token: 401 everywhere; a wrong token too.
    for (m, path, body) in &ops {
        let r = h.api(m.clone(), path, None, body.clone()).await;
        assert_eq!(r.status, 401, "{m} {path} without a token");
        let r = h.api(m.clone(), path, Some("nobody"), body.clone()).await;
        assert_eq!(r.status, 401, "{m} {path} with an unknown token");
    }
    // A viewer reads the timeline but may not promote, change modes, reroute or replay.
    for (m, path, body) in &ops {
        let r = h.api(m.clone(), path, Some("view"), body.clone()).await;
        let want = if *m == Method::GET { 200 } else { 403 };
        assert_eq!(r.status, want, "viewer: {m} {path}: {}", r.body);
    }
    // A reviewer may reroute, but not promote, change modes or replay.
    for (m, path, body) in &ops[..2] {
        let r = h.api(m.clone(), path, Some("lead"), body.clone()).await;
        assert_eq!(r.status, 403, "reviewer: {m} {path}");
    }
    for (m, path, body) in &ops[3..5] {
        let r = h.api(m.clone(), path, Some("lead"), body.clone()).await;
        assert_eq!(r.status, 403, "reviewer: {m} {path}");
    }
    // Another charter's objects do not exist for scoped tokens, whatever their role.
    for who in ["ops", "lead", "view"] {
        let r = h
            .get(&format!("/api/v1/events/{b}/timeline"), Some(who))
            .await;
        assert_eq!(r.status, 404, "{who}: beta's timeline");
    }
    let r = h
        .post(&format!("/api/v1/events/{b}/reroute"), Some("lead"), None)
        .await;
    assert_eq!(r.status, 404, "reviewer of alpha rerouting beta's event");
    let r = h
        .post(&format!("/api/v1/events/{b}/reroute"), Some("ops"), None)
        .await;
    assert_eq!(r.status, 404, "admin of alpha rerouting beta's event");
    let r = h
        .post("/api/v1/charters/beta/promote", Some("ops"), None)
        .await;
    assert_eq!(r.status, 404, "admin of alpha promoting beta");
    let r = h
        .post(
            "/api/v1/charters/beta/mode",
            Some("ops"),
            Some(mode.clone()),
        )
        .await;
    assert_eq!(r.status, 404, "admin of alpha setting beta's mode");
    let r = h
        .post(
            "/api/v1/replay",
            Some("ops"),
            Some(json!({"charter": "beta", "since": 0})),
        )
        .await;
    assert_eq!(r.status, 404, "admin of alpha replaying beta's range");
    let r = h
        .post("/api/v1/replay", Some("ops"), Some(json!({"since": 0})))
        .await;
    assert_eq!(r.status, 403, "a scoped admin must name a charter");
    let r = h
        .post("/api/v1/charters/nope/promote", Some("root"), None)
        .await;
    assert_eq!(r.status, 404, "unknown charter");
    let r = h
        .get(
            "/api/v1/events/00000000-0000-0000-0000-000000000000/timeline",
            Some("root"),
        )
        .await;
    assert_eq!(r.status, 404, "unknown event");

    // Nothing was changed by the refused calls.
    assert!(h.store.mode_override("alpha").await.unwrap().is_none());
    assert!(h.store.mode_override("beta").await.unwrap().is_none());
    assert_eq!(h.status(&a).await, "done");
    assert!(audit_actions(&h, "charter.mode").await.is_empty());
    assert!(audit_actions(&h, "event.reroute").await.is_empty());

    // Bad bodies are 400 with a message.
    let r = h
        .post(
            "/api/v1/charters/alpha/mode",
            Some("ops"),
            Some(json!({"mode": "turbo"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("turbo"));
    let r = h
        .post(
            "/api/v1/replay",
            Some("ops"),
            Some(json!({"charter": "alpha", "since": 10, "until": 5})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_makes_the_next_event_execute_its_action() {
    let h = two_charters().await;
    // In shadow mode the action is only recorded as what would have run.
    let first = h.send("alpha", 101, "refund please").await;
    h.wait_status(&first, "done").await;
    assert_eq!(h.puts(101), 0, "shadow mode executed an action");
    let t = h
        .get(&format!("/api/v1/events/{first}/timeline"), Some("view"))
        .await;
    assert_eq!(t.status, 200, "{}", t.body);
    let t = t.json();
    assert_eq!(t["runs"][0]["mode"], "shadow");
    assert_eq!(t["runs"][0]["actions"][0]["status"], "would_run");
    assert_eq!(t["runs"][0]["route_rule"]["actions"][0], "assign_billing");
    assert_eq!(t["runs"][0]["decision"]["stages"][0]["stage"], "rule");

    let r = h
        .post("/api/v1/charters/alpha/promote", Some("ops"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["mode"], "live");
    assert_eq!(v["file_mode"], "shadow");
    assert_eq!(v["override"]["by"], "ops");
    let r = h
        .post("/api/v1/charters/alpha/promote", Some("ops"), None)
        .await;
    assert_eq!(r.status, 409, "promoting a live charter");
    let list = h.get("/api/v1/charters", Some("root")).await.json();
    let alpha = list["charters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "alpha")
        .unwrap()
        .clone();
    assert_eq!(alpha["mode"], "live");
    assert_eq!(alpha["file_mode"], "shadow");

    // The next event executes its action at the downstream server, exactly once.
    let second = h.send("alpha", 102, "refund again").await;
    h.wait_status(&second, "done").await;
    assert_eq!(h.puts(102), 1, "the promoted charter did not execute");
    let t = h
        .get(&format!("/api/v1/events/{second}/timeline"), Some("root"))
        .await
        .json();
    assert_eq!(t["runs"][0]["mode"], "live");
    assert_eq!(t["runs"][0]["actions"][0]["status"], "succeeded");
    assert_eq!(t["runs"][0]["actions"][0]["attempts"][0]["ok"], true);
    // The other charter is still in shadow.
    let other = h.send("beta", 103, "refund").await;
    h.wait_status(&other, "done").await;
    assert_eq!(h.puts(103), 0, "promoting alpha promoted beta");

    // Demote: new runs record only.
    let r = h
        .post(
            "/api/v1/charters/alpha/mode",
            Some("root"),
            Some(json!({"mode": "shadow"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["mode"], "shadow");
    assert!(
        r.json()["override"].is_null(),
        "back to the file's mode leaves no override"
    );
    let third = h.send("alpha", 104, "refund three").await;
    h.wait_status(&third, "done").await;
    assert_eq!(h.puts(104), 0, "the demoted charter executed");

    // Every change is audited, with who, from and to.
    let audit = audit_actions(&h, "charter.mode").await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[1]["actor"], "ops");
    assert_eq!(audit[1]["detail"]["from"], "shadow");
    assert_eq!(audit[1]["detail"]["to"], "live");
    assert_eq!(audit[0]["actor"], "root");
    assert_eq!(audit[0]["detail"]["to"], "shadow");
    assert_eq!(audit[0]["charter"], "alpha");
}

#[test]
fn a_file_edit_after_an_override_wins() {
    let promoted = ModeOverride {
        charter: "alpha".into(),
        mode: "live".into(),
        base: "shadow".into(),
        by: "ops".into(),
        at: 1,
    };
    assert_eq!(effective_mode("shadow", Some(&promoted)), "live");
    assert_eq!(effective_mode("shadow", None), "shadow");
    // Someone changed `mode:` in the file after the promotion: the file decides again.
    let demoted = ModeOverride {
        mode: "shadow".into(),
        base: "live".into(),
        ..promoted.clone()
    };
    assert_eq!(effective_mode("shadow", Some(&demoted)), "shadow");
    assert_eq!(effective_mode("live", Some(&promoted)), "live");
    assert_eq!(effective_mode("live", Some(&demoted)), "shadow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reroute_hands_the_event_to_a_human_and_stops_automatic_processing() {
    let h = two_charters().await;
    // Paused: the event is stored and waits in the queue; the reviewer reroutes it.
    let r = h
        .post("/api/v1/charters/alpha/pause", Some("ops"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = h.send("alpha", 201, "refund please").await;
    assert_eq!(h.status(&id).await, "pending");
    let r = h
        .post(
            &format!("/api/v1/events/{id}/reroute"),
            Some("lead"),
            Some(json!({"note": "VIP customer, handle by hand"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let esc = v["escalation"].clone();
    assert_eq!(esc["reason"], "rerouted");
    assert_eq!(esc["status"], "open");
    assert_eq!(esc["event_id"], id.as_str());
    assert_eq!(esc["target"], "support-leads");
    assert_eq!(esc["detail"]["message"], "rerouted by lead");
    assert_eq!(esc["detail"]["note"], "VIP customer, handle by hand");
    assert_eq!(v["already_open"], false);
    assert_eq!(h.status(&id).await, "waiting");

    // Resumed, the worker leaves it alone: no run, no request downstream.
    let r = h
        .post("/api/v1/charters/alpha/resume", Some("ops"), None)
        .await;
    assert_eq!(r.status, 200);
    let control = h.send("alpha", 202, "hello").await;
    h.wait_status(&control, "done").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.status(&id).await, "waiting");
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    assert!(h.store.runs_for_event(uuid).await.unwrap().is_empty());
    let open = h
        .get("/api/v1/escalations?charter=alpha", Some("view"))
        .await
        .json();
    assert_eq!(open["escalations"].as_array().unwrap().len(), 1);

    // A second reroute finds the open escalation instead of opening another.
    let r = h
        .post(&format!("/api/v1/events/{id}/reroute"), Some("lead"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["already_open"], true);
    assert_eq!(r.json()["escalation"]["id"], esc["id"]);

    // The human decides; the run continues with the human's label.
    let r = h
        .post(
            &format!("/api/v1/escalations/{}/decide", esc["id"].as_str().unwrap()),
            Some("lead"),
            Some(json!({"label": "other"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.wait_status(&id, "done").await;
    let runs = h.store.runs_for_event(uuid).await.unwrap();
    assert_eq!(runs.len(), 1);
    let d = runs[0].decision.as_ref().unwrap();
    assert_eq!(d.label.as_deref(), Some("other"));
    assert_eq!(h.puts(201), 0, "the human's label routes to the log action");

    let audit = audit_actions(&h, "event.reroute").await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(audit.iter().all(|a| a["actor"] == "lead"));
    assert_eq!(audit[1]["target"], id.as_str());
    assert_eq!(audit[1]["detail"]["previous_status"], "pending");
    // The timeline shows the escalation and the audit entries.
    let t = h
        .get(&format!("/api/v1/events/{id}/timeline"), Some("view"))
        .await
        .json();
    assert_eq!(t["escalations"][0]["reason"], "rerouted");
    let actions: Vec<&str> = t["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"event.reroute") && actions.contains(&"escalation.resolve"),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_a_time_range_requeues_only_that_range() {
    let h = two_charters().await;
    let old = h.send("alpha", 301, "hello").await;
    h.wait_status(&old, "done").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let recent = h.send("alpha", 302, "hello").await;
    let elsewhere = h.send("beta", 303, "hello").await;
    h.wait_status(&recent, "done").await;
    h.wait_status(&elsewhere, "done").await;
    let rec = h
        .store
        .get_event(uuid::Uuid::parse_str(&recent).unwrap())
        .await
        .unwrap()
        .unwrap();
    let r = h
        .post(
            "/api/v1/replay",
            Some("ops"),
            Some(json!({"charter": "alpha", "since": rec.event.received_at})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["requeued"], json!([recent]));
    h.wait_status(&recent, "done").await;
    let runs = h
        .store
        .runs_for_event(uuid::Uuid::parse_str(&recent).unwrap())
        .await
        .unwrap();
    assert_eq!(runs.len(), 2, "the replayed event ran again");
    let audit = audit_actions(&h, "events.replay_range").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["actor"], "ops");
    assert_eq!(audit[0]["detail"]["since"], rec.event.received_at);
    // No bounds and no `failed` events: the failed-only replay finds nothing.
    let r = h
        .post("/api/v1/replay", Some("root"), Some(json!({})))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["requeued"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_logins_are_audited_without_the_token() {
    let h = two_charters().await;
    let (r, _) = Ui::try_login(&h, "not-a-token-xyz").await;
    assert_eq!(r.status, 401);
    let ui = Ui::login(&h, "lead").await;
    assert!(ui.cookie.starts_with("charter_session="));

    let failed = audit_actions(&h, "ui.login_failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["actor"], "anonymous");
    assert!(
        failed[0]["detail"]["ip"]
            .as_str()
            .unwrap()
            .starts_with("127.")
    );
    let ok = audit_actions(&h, "ui.login").await;
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0]["actor"], "lead");
    assert_eq!(ok[0]["detail"]["role"], "reviewer");
    let all = h.get("/api/v1/audit", Some("root")).await.body;
    assert!(!all.contains("not-a-token-xyz"), "a presented token leaked");
    assert!(!all.contains("secret-lead"), "a token leaked");
    // Login entries belong to no charter: a scoped token does not see them.
    let scoped = h.get("/api/v1/audit?action=ui.login", Some("ops")).await;
    assert_eq!(scoped.json()["audit"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_promote_demote_and_reroute_buttons_need_csrf_and_the_role() {
    let h = two_charters().await;
    let admin = Ui::login(&h, "ops").await;
    let page = admin.get("/charters").await;
    assert!(
        page.body.contains("action=\"/charters/alpha/promote\""),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("/charters/beta/"),
        "another charter's buttons"
    );
    let r = admin.post("/charters/alpha/promote", &[]).await;
    assert_eq!(r.status, 403, "no CSRF token");
    assert!(h.store.mode_override("alpha").await.unwrap().is_none());
    let csrf = admin.csrf().await;
    // Promote asks first: nothing changes until it is confirmed.
    let r = admin
        .post("/charters/alpha/promote", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Promote alpha to live?"), "{}", r.body);
    assert!(h.store.mode_override("alpha").await.unwrap().is_none());
    let r = admin
        .post(
            "/charters/alpha/promote",
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        h.store.mode_override("alpha").await.unwrap().unwrap().mode,
        "live"
    );
    let page = admin.get("/charters/alpha").await;
    assert!(page.body.contains("action=\"/charters/alpha/demote\""));
    let r = admin
        .post(
            "/charters/alpha/promote",
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status, 409, "already live");
    let r = admin
        .post("/charters/alpha/demote", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(h.store.mode_override("alpha").await.unwrap().is_none());

    // A reviewer cannot promote, but can reroute from the timeline page.
    let lead = Ui::login(&h, "lead").await;
    let lcsrf = lead.csrf().await;
    let r = lead
        .post("/charters/alpha/promote", &[("csrf", &lcsrf)])
        .await;
    assert_eq!(r.status, 403);
    let id = h.send("alpha", 401, "hello").await;
    h.wait_status(&id, "done").await;
    let page = lead.get(&format!("/events/{id}")).await;
    assert!(
        page.body
            .contains(&format!("action=\"/events/{id}/reroute\""))
    );
    let r = lead
        .post(&format!("/events/{id}/reroute"), &[("note", "x")])
        .await;
    assert_eq!(r.status, 403, "no CSRF token");
    let r = lead
        .post(
            &format!("/events/{id}/reroute"),
            &[("csrf", &lcsrf), ("note", "check by hand")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(h.status(&id).await, "waiting");
    let inbox = lead.get("/inbox").await;
    assert!(inbox.body.contains("rerouted"), "{}", inbox.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reroute_closes_a_pending_approval_so_it_can_no_longer_execute() {
    let h = Harness::start(
        &[(
            "alpha",
            charter_yaml(
                "alpha",
                "live",
                "{ reviewers: [lead], expires: 1h }",
                "other",
            ),
        )],
        TOKENS,
    )
    .await;
    let id = h.send("alpha", 501, "refund please").await;
    h.wait_status(&id, "waiting").await;
    let pending = h
        .get("/api/v1/approvals?charter=alpha", Some("lead"))
        .await
        .json();
    let approvals = pending["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1, "{pending}");
    let approval = approvals[0]["id"].as_str().unwrap().to_string();

    let r = h
        .post(&format!("/api/v1/events/{id}/reroute"), Some("lead"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["closed_approvals"], json!([approval]));
    let esc = v["escalation"]["id"].as_str().unwrap().to_string();

    // The approval is closed: approving it now is a conflict and nothing runs.
    let r = h
        .post(
            &format!("/api/v1/approvals/{approval}/approve"),
            Some("lead"),
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("already rejected"), "{}", r.body);
    let a = h
        .get(&format!("/api/v1/approvals/{approval}"), Some("view"))
        .await
        .json();
    assert_eq!(a["approval"]["status"], "rejected");
    assert_eq!(a["approval"]["comment"], "rerouted by lead");
    assert_eq!(a["approval"]["decided_by"], "lead");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.status(&id).await,
        "waiting",
        "the event left the manual queue"
    );
    assert_eq!(h.puts(501), 0, "the closed approval executed");

    // The closing is audited as a rejection, marked as coming from the reroute.
    let rejects = audit_actions(&h, "approval.reject").await;
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0]["actor"], "lead");
    assert_eq!(rejects[0]["target"], approval.as_str());
    assert_eq!(rejects[0]["detail"]["rerouted"], true);
    assert_eq!(rejects[0]["detail"]["reason"], "rerouted by lead");
    let reroutes = audit_actions(&h, "event.reroute").await;
    assert_eq!(reroutes[0]["detail"]["closed_approvals"], json!([approval]));

    // The escalation decides the run instead.
    let r = h
        .post(
            &format!("/api/v1/escalations/{esc}/decide"),
            Some("lead"),
            Some(json!({"label": "other"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.wait_status(&id, "done").await;
    let runs = h
        .store
        .runs_for_event(uuid::Uuid::parse_str(&id).unwrap())
        .await
        .unwrap();
    let last = runs.last().unwrap();
    let d = last.decision.as_ref().unwrap();
    assert_eq!(d.label.as_deref(), Some("other"));
    assert_eq!(last.actions[0].action, "note");
    assert_eq!(h.puts(501), 0, "the downstream server received the action");
}

async fn received(h: &Harness, id: &str) -> i64 {
    let id = uuid::Uuid::parse_str(id).unwrap();
    h.store
        .get_event(id)
        .await
        .unwrap()
        .unwrap()
        .event
        .received_at
}

async fn runs(h: &Harness, id: &str) -> usize {
    let id = uuid::Uuid::parse_str(id).unwrap();
    h.store.runs_for_event(id).await.unwrap().len()
}

/// `2026-01-02T15:04:05.123` (UTC) for Unix milliseconds, as a `datetime-local` input sends it.
fn form_time(ms: i64) -> String {
    let secs = charter_core::cron::format_utc(ms.div_euclid(1000));
    format!("{}.{:03}", secs.trim_end_matches('Z'), ms.rem_euclid(1000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_replays_a_time_range_from_the_charter_page() {
    let h = two_charters().await;
    let old = h.send("alpha", 601, "hello").await;
    h.wait_status(&old, "done").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let recent = h.send("alpha", 602, "hello").await;
    let elsewhere = h.send("beta", 603, "hello").await;
    h.wait_status(&recent, "done").await;
    h.wait_status(&elsewhere, "done").await;
    let since = form_time(received(&h, &recent).await);
    // Only admins get the form, and posting it needs the role and the CSRF token.
    let lead = Ui::login(&h, "lead").await;
    let page = lead.get("/charters/alpha").await;
    assert!(!page.body.contains("/charters/alpha/replay-range"));
    let lcsrf = lead.csrf().await;
    let r = lead
        .post(
            "/charters/alpha/replay-range",
            &[("csrf", &lcsrf), ("since", &since)],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let admin = Ui::login(&h, "ops").await;
    let page = admin.get("/charters/alpha").await;
    assert!(
        page.body
            .contains("action=\"/charters/alpha/replay-range\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("type=\"datetime-local\" name=\"since\""));
    let r = admin
        .post("/charters/alpha/replay-range", &[("since", &since)])
        .await;
    assert_eq!(r.status, 403, "no CSRF token");
    let csrf = admin.csrf().await;
    for (fields, why) in [
        (vec![], "no bounds"),
        (vec![("since", "yesterday")], "not a time"),
        (
            vec![("since", since.as_str()), ("until", "1970-01-01T00:00")],
            "until before since",
        ),
    ] {
        let mut f = vec![("csrf", csrf.as_str())];
        f.extend(fields);
        let r = admin.post("/charters/alpha/replay-range", &f).await;
        assert_eq!(r.status, 400, "{why}: {}", r.body);
    }
    assert!(audit_actions(&h, "events.replay_range").await.is_empty());
    assert_eq!(runs(&h, &recent).await, 1);

    // From the recent event on: it runs again; the older one and the other charter's don't.
    let r = admin
        .post(
            "/charters/alpha/replay-range",
            &[
                ("csrf", &csrf),
                ("since", &since),
                ("back", "/charters/alpha"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location, "/charters/alpha?msg=requeued_range-1");
    for _ in 0..200 {
        if runs(&h, &recent).await == 2 && h.status(&recent).await == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        runs(&h, &recent).await,
        2,
        "the event in the range ran again"
    );
    assert_eq!(
        runs(&h, &old).await,
        1,
        "an event before the range ran again"
    );
    assert_eq!(
        runs(&h, &elsewhere).await,
        1,
        "another charter's event ran again"
    );
    let audit = audit_actions(&h, "events.replay_range").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["actor"], "ops");
    assert_eq!(audit[0]["charter"], "alpha");
    assert_eq!(audit[0]["detail"]["since"], received(&h, &recent).await);
    assert_eq!(audit[0]["detail"]["requeued"], json!([recent]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_executes_succeeded_actions_again_as_a_new_event() {
    let h = Harness::start(
        &[("alpha", charter_yaml("alpha", "live", "auto", "other"))],
        TOKENS,
    )
    .await;
    let a = h.send("alpha", 1, "refund please").await;
    h.wait_status(&a, "done").await;
    assert_eq!(h.puts(1), 1);
    // A replay does not repeat what succeeded.
    let r = h
        .post(&format!("/api/v1/events/{a}/replay"), Some("root"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.wait_status(&a, "done").await;
    assert_eq!(runs(&h, &a).await, 2);
    assert_eq!(h.puts(1), 1, "replay: the PUT is not sent again");

    // A reviewer may not ask for the effects again; another charter's admin sees nothing.
    let path = format!("/api/v1/events/{a}/rerun");
    assert_eq!(h.post(&path, Some("lead"), None).await.status, 403);
    assert_eq!(h.post(&path, Some("view"), None).await.status, 403);
    // The operator asks: a copy runs from the start and the PUT goes out again.
    let r = h.post(&path, Some("ops"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["rerun_of"], a.as_str());
    let copy = v["event_id"].as_str().unwrap().to_string();
    assert_ne!(copy, a);
    h.wait_status(&copy, "done").await;
    assert_eq!(h.puts(1), 2, "rerun: the PUT is sent again");
    let keys: Vec<Option<String>> = h
        .sink
        .received()
        .iter()
        .filter(|r| r.path == "/api/tickets/1")
        .map(|r| r.idempotency_key.clone())
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(
        keys[0].is_some() && keys[0] != keys[1],
        "a new event, a new key: {keys:?}"
    );
    let copied = h
        .store
        .get_event(copy.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(copied.event.source, format!("rerun:{a}"));
    assert_eq!(copied.event.dedupe_key, None);
    // The original keeps its record: two runs, one PUT.
    assert_eq!(runs(&h, &a).await, 2);
    let audit = audit_actions(&h, "event.rerun").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["actor"], "ops");
    assert_eq!(audit[0]["target"], a.as_str());
    assert_eq!(audit[0]["detail"]["event_id"], copy.as_str());
    let r = h
        .post(
            &format!("/api/v1/events/{}/rerun", uuid::Uuid::now_v7()),
            Some("root"),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_presenting_bad_tokens_is_refused_for_a_while() {
    let h = two_charters().await;
    // Requests without any token are answered 401 but are not guesses: they do not count.
    for _ in 0..charter_server::limits::TOKEN_FAILURES_ALLOWED * 2 {
        assert_eq!(h.get("/api/v1/events", None).await.status, 401);
    }
    for i in 0..charter_server::limits::TOKEN_FAILURES_ALLOWED {
        let r = h.get("/api/v1/events", Some("guessed")).await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let r = h.get("/api/v1/events", Some("guessed")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("too many failed authentications from this address"),
        "{}",
        r.body
    );
    let retry = h
        .http
        .get(format!("{}/api/v1/events", h.base))
        .bearer_auth("secret-root")
        .send()
        .await
        .unwrap();
    assert_eq!(
        retry.status().as_u16(),
        429,
        "the address is blocked, whatever it sends"
    );
    let secs: u64 = retry.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    // The MCP endpoint shares the limit; webhooks, health and the UI's own limit do not.
    let r = h
        .post(
            "/mcp",
            Some("root"),
            Some(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})),
        )
        .await;
    assert_eq!(r.status, 429);
    let id = h.send("alpha", 5, "hello").await;
    h.wait_status(&id, "done").await;
    assert_eq!(h.get("/healthz", None).await.status, 200);
}
