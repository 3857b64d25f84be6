//! The inbox on a real backlog: a store seeded (through the store API, concurrently) with
//! thousands of events, escalations and approvals; the UI and the API page through them
//! with true totals, decide from the detail pane, offer only what the user may do, and
//! show only known flash messages. The browser test drives the same by keyboard in
//! headless Chromium, with axe-core and a 390 px viewport (`tests/ui/inbox.mjs`).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::Path;
use std::time::Duration;

use charter_core::model::{Decision, DecisionStage, NewEvent, StageAnswer};
use charter_store::sqlite::SqliteStore;
use charter_store::{
    ApprovalStore, EscalationStore, EventStore, IngestOutcome, NewApproval, NewEscalation,
    OperatorStore, RunStore,
};
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::support::{Harness, Ui, charter_yaml, csrf_in};

/// What was seeded.
pub struct Seeded {
    pub events: Vec<Uuid>,
    pub approvals: Vec<Uuid>,
    pub decisions: Vec<Uuid>,
    pub dead: Vec<Uuid>,
}

fn event(charter: &str, n: usize, at: i64) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        charter: charter.to_string(),
        source: "webhook:/hooks/seed".into(),
        event_type: None,
        dedupe_key: Some(format!("seed-{n}")),
        received_at: at,
        headers: Default::default(),
        payload: json!({"ticket": {"id": n, "subject": format!("seeded ticket {n}")}}),
    }
}

/// Evidence with the stages' answers (the model's guess is `guess` at 62%).
fn detail(guess: &str) -> Value {
    json!({
        "payload": {"ticket": {"subject": "unsure"}},
        "stages": [
            {"stage": "embedded", "label": "other", "confidence": 0.31, "accepted": false, "note": ""},
            {"stage": "llm", "label": guess, "confidence": 0.62, "accepted": false, "note": ""}
        ]
    })
}

/// Seed `charter` with `events` events, of which the first `approvals` wait for an
/// approval of `assign_billing`, the next `decisions` for a human's label and the next
/// `dead` are dead letters (their events held as `waiting`). Writes go concurrently (the store groups them into few commits).
pub async fn seed(
    store: &SqliteStore,
    charter: &str,
    events: usize,
    approvals: usize,
    decisions: usize,
    dead: usize,
) -> Seeded {
    let base = 1_760_000_000_000_i64;
    let mut ids = Vec::with_capacity(events);
    for chunk in (0..events).collect::<Vec<_>>().chunks(500) {
        let stored = join_all(
            chunk
                .iter()
                .map(|&n| store.ingest(event(charter, n, base + n as i64))),
        )
        .await;
        for s in stored {
            match s.unwrap() {
                IngestOutcome::Stored(id) => ids.push(id),
                d => panic!("seeded twice: {d:?}"),
            }
        }
    }
    let waiting = approvals + decisions + dead;
    // The waiting events are held out of the queue (the charter is paused anyway).
    join_all((0..waiting).map(|i| store.hold_event(ids[i], base)))
        .await
        .into_iter()
        .for_each(|r| assert!(r.unwrap()));
    let runs: Vec<Uuid> = (0..waiting).map(|_| Uuid::now_v7()).collect();
    join_all(
        (0..waiting)
            .map(|i| store.start_run(runs[i], ids[i], charter, "v1", "live", base + i as i64)),
    )
    .await
    .into_iter()
    .for_each(|r| r.unwrap());
    join_all((0..approvals).map(|i| {
        let d = Decision {
            label: Some("billing".into()),
            confidence: 0.91,
            fields: Default::default(),
            stage: DecisionStage::Rule,
            reason: "seeded".into(),
            stages: vec![StageAnswer {
                stage: DecisionStage::Rule,
                label: Some("billing".into()),
                confidence: Some(0.91),
                accepted: true,
                note: String::new(),
                usage: None,
            }],
            escalation: None,
        };
        let run = runs[i];
        async move { store.record_decision(run, &d).await }
    }))
    .await
    .into_iter()
    .for_each(|r| r.unwrap());
    let made_approvals = join_all((0..approvals).map(|i| {
        store.create_approval(NewApproval {
            id: Uuid::now_v7(),
            run_id: runs[i],
            event_id: ids[i],
            charter: charter.to_string(),
            action: "assign_billing".into(),
            params: json!({"target": format!("/api/tickets/{i}"), "json": {"ticket": {"group": "billing"}}}),
            params_hash: format!("seed-{i}"),
            reviewers: if i % 2 == 1 { vec!["lead".into()] } else { vec![] },
            created_at: base + i as i64,
            expires_at: Some(base + 365 * 86_400_000 * 20),
            on_expiry: None,
        })
    }))
    .await;
    let escalate = |i: usize, reason: &str| NewEscalation {
        id: Uuid::now_v7(),
        run_id: Some(runs[i]),
        event_id: ids[i],
        charter: charter.to_string(),
        reason: reason.to_string(),
        detail: if reason == "dead_letter" {
            json!({"action": "assign_billing", "attempts": [], "stages": []})
        } else {
            detail("billing")
        },
        target: Some("support-leads".into()),
        created_at: base + i as i64,
    };
    let made_decisions = join_all(
        (approvals..approvals + decisions)
            .map(|i| store.create_escalation(escalate(i, "low_confidence"))),
    )
    .await;
    let made_dead = join_all(
        (approvals + decisions..waiting)
            .map(|i| store.create_escalation(escalate(i, "dead_letter"))),
    )
    .await;
    Seeded {
        events: ids,
        approvals: made_approvals.into_iter().map(|a| a.unwrap().id).collect(),
        decisions: made_decisions.into_iter().map(|e| e.unwrap().id).collect(),
        dead: made_dead.into_iter().map(|e| e.unwrap().id).collect(),
    }
}

async fn seeded_harness(
    events: usize,
    approvals: usize,
    decisions: usize,
    dead: usize,
) -> (Harness, Seeded) {
    let h = Harness::start(
        &[(
            "backlog",
            charter_yaml("backlog", "live", "{ reviewers: [lead, ops] }", "escalate"),
        )],
        &[
            ("admin", "admin", &[]),
            ("lead", "reviewer", &[]),
            ("ops", "reviewer", &[]),
            ("viewer", "viewer", &[]),
        ],
    )
    .await;
    // Nothing should run the seeded events while the test looks at them.
    charter_store::CharterStateStore::set_paused(&h.store, "backlog", true, 0)
        .await
        .unwrap();
    let s = seed(&h.store, "backlog", events, approvals, decisions, dead).await;
    (h, s)
}

/// The number in a tab's count badge.
fn tab_count(body: &str, tab: &str) -> u64 {
    let marker = format!("data-count=\"{tab}\"");
    let at = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {tab} tab in {body}"));
    let rest = &body[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    rest[start..end].trim().parse().unwrap()
}

fn rows(body: &str) -> Vec<String> {
    body.match_indices("<tr data-item=\"")
        .map(|(i, m)| body[i + m.len()..i + m.len() + 36].to_string())
        .collect()
}

fn next_link(body: &str) -> Option<String> {
    let at = body.find("rel=\"next\" href=\"")?;
    let rest = &body[at + 17..];
    Some(rest[..rest.find('"')?].replace("&amp;", "&"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_pages_a_real_backlog_with_true_totals() {
    let (h, s) = seeded_harness(2_000, 230, 260, 40).await;
    let ui = Ui::login(&h, "admin").await;
    let p = ui.get("/inbox").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(tab_count(&p.body, "approvals"), 230);
    assert_eq!(tab_count(&p.body, "decisions"), 260);
    assert_eq!(tab_count(&p.body, "dead"), 40);
    assert!(
        p.body.len() < 100_000,
        "first page is {} bytes",
        p.body.len()
    );
    // Every approval once, oldest first, 50 a page.
    let mut seen = rows(&p.body);
    assert_eq!(seen.len(), 50);
    assert_eq!(seen[0], s.approvals[0].to_string(), "oldest first");
    let mut link = next_link(&p.body);
    while let Some(l) = link {
        let page = ui.get(&l).await;
        assert_eq!(page.status, 200);
        let r = rows(&page.body);
        assert!(r.iter().all(|id| !seen.contains(id)), "a row repeated");
        seen.extend(r);
        link = next_link(&page.body);
    }
    assert_eq!(seen.len(), 230);
    let want: Vec<String> = s.approvals.iter().map(Uuid::to_string).collect();
    assert_eq!(seen, want);

    // The first row is selected and its card is in the detail pane.
    assert!(
        p.body
            .contains(&format!("data-approval=\"{}\"", s.approvals[0]))
    );
    // The decisions tab: the model's label is preselected with its confidence.
    let d = ui.get("/inbox?tab=decisions").await;
    assert!(d.body.contains(&format!(
        "<tr data-item=\"{}\" class=\"selected\"",
        s.decisions[0]
    )));
    assert!(
        d.body
            .contains("<option value=\"billing\" selected>billing (62%)</option>"),
        "{}",
        d.body
    );
    // Dead letters: Retry and Dismiss, no label.
    let dead = ui.get("/inbox?tab=dead").await;
    assert!(
        dead.body
            .contains(&format!("/escalations/{}/retry", s.dead[0]))
    );
    assert!(
        dead.body
            .contains(&format!("/escalations/{}/dismiss", s.dead[0]))
    );
    assert!(!dead.body.contains("name=\"label\""), "{}", dead.body);

    // After deciding, the next item is selected.
    let csrf = csrf_in(&p.body);
    let back = format!("/inbox?tab=approvals&item={}", s.approvals[1]);
    let r = ui
        .post(
            &format!("/approvals/{}/approve", s.approvals[0]),
            &[("csrf", &csrf), ("back", &back)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location, format!("{back}&msg=approved"));
    let after = ui.get(&r.location).await;
    assert!(after.body.contains("Approved; the action runs now."));
    assert!(after.body.contains(&format!(
        "<tr data-item=\"{}\" class=\"selected\"",
        s.approvals[1]
    )));
    assert_eq!(tab_count(&after.body, "approvals"), 229);

    // The events list: true total, pages, indexed search by dedupe key and id prefix.
    let ev = ui.get("/events?charter=backlog").await;
    assert!(ev.body.contains("100 shown of 2000"), "{}", ev.body);
    let found = ui.get("/events?q=seed-1234").await;
    assert!(
        found.body.contains(&s.events[1234].to_string()),
        "{}",
        found.body
    );
    let prefix = &s.events[1999].simple().to_string()[..20];
    let found = ui.get(&format!("/events?q={prefix}")).await;
    assert!(found.body.contains(&s.events[1999].to_string()));
    // The charter's counts are true counts.
    let c = ui.get("/charters").await;
    // 1,470 never waited, plus the approved one once it is back in the queue (the approval
    // requeues its event a moment after answering; the charter is paused).
    assert!(
        c.body.contains("pending</span> 1470") || c.body.contains("pending</span> 1471"),
        "{}",
        c.body
    );

    // Flash messages come from a fixed set: free text in the URL is not shown.
    let planted = ui
        .get("/inbox?msg=Your+session+expired,+call+555-0100")
        .await;
    assert!(!planted.body.contains("555-0100"));
    assert!(!planted.body.contains("class=\"flash\""));
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_the_user_may_do_is_offered_and_notifications_land_where_it_can_be_decided() {
    let (h, s) = seeded_harness(20, 4, 1, 1).await;
    // Approval 1 names `lead` only: `ops` is a reviewer but not on its list.
    let ops = Ui::login(&h, "ops").await;
    let p = ops
        .get(&format!("/inbox?tab=approvals&item={}", s.approvals[1]))
        .await;
    assert!(
        p.body
            .contains(&format!("data-approval=\"{}\"", s.approvals[1]))
    );
    assert!(
        !p.body
            .contains(&format!("/approvals/{}/approve", s.approvals[1]))
    );
    assert!(p.body.contains("not among this approval's reviewers"));
    let lead = Ui::login(&h, "lead").await;
    let p = lead
        .get(&format!("/inbox?tab=approvals&item={}", s.approvals[1]))
        .await;
    assert!(
        p.body
            .contains(&format!("/approvals/{}/approve", s.approvals[1]))
    );
    // A viewer sees no form at all.
    let viewer = Ui::login(&h, "viewer").await;
    let p = viewer.get("/inbox").await;
    assert!(!p.body.contains("/approve\""), "{}", p.body);
    // The waiting event's timeline offers the decision.
    let approval = charter_store::ApprovalStore::get_approval(&h.store, s.approvals[0])
        .await
        .unwrap()
        .unwrap();
    let t = lead.get(&format!("/events/{}", approval.event_id)).await;
    assert!(t.body.contains("Waiting for approval"), "{}", t.body);
    assert!(
        t.body
            .contains(&format!("/approvals/{}/approve", s.approvals[0]))
    );

    // Bulk approval: all or nothing. `ops` may decide approval 2 but not 3 (lead only).
    let ocsrf = csrf_in(&ops.get("/inbox").await.body);
    let (two, three) = (s.approvals[2].to_string(), s.approvals[3].to_string());
    let r = ops
        .post(
            "/inbox/bulk-approve",
            &[("csrf", &ocsrf), ("id", &two), ("id", &three)],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let store = h.store.clone();
    let pending = move |id: Uuid| {
        let store = store.clone();
        async move {
            charter_store::ApprovalStore::get_approval(&store, id)
                .await
                .unwrap()
                .unwrap()
                .status
                == charter_store::ApprovalStatus::Pending
        }
    };
    assert!(pending(s.approvals[2]).await, "nothing was approved");
    let lcsrf = csrf_in(&lead.get("/inbox").await.body);
    let r = lead
        .post(
            "/inbox/bulk-approve",
            &[
                ("csrf", &lcsrf),
                ("id", &two),
                ("id", &three),
                ("back", "/inbox"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location, "/inbox?msg=bulk_approved-2");
    assert!(!pending(s.approvals[2]).await && !pending(s.approvals[3]).await);

    // Edit-then-approve keeps the user's text on an error, with the diff.
    let csrf = csrf_in(&t.body);
    let r = lead
        .post(
            &format!("/approvals/{}/approve", s.approvals[0]),
            &[
                ("csrf", &csrf),
                ("params", "{\"target\": \"/api/tickets/0\", oops"),
            ],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("oops"), "{}", r.body);
    assert!(r.body.contains("not valid JSON"));
    assert!(r.body.contains("class=\"diff\""));
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_filters_and_promote_asks_first() {
    let (h, _) = seeded_harness(5, 0, 0, 0).await;
    let ui = Ui::login(&h, "admin").await;
    let c = ui.get("/charters/backlog").await;
    let csrf = csrf_in(&c.body);
    // Promote asks first, then promotes.
    let r = ui
        .post("/charters/backlog/promote", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Promote backlog to live?"), "{}", r.body);
    assert!(r.body.contains("name=\"confirm\" value=\"yes\""));
    let r = ui
        .post("/charters/backlog/resume", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    let r = ui
        .post("/charters/backlog/replay", &[("csrf", &csrf)])
        .await;
    assert!(
        r.body.contains("Put all 0 failed event(s) of backlog back"),
        "{}",
        r.body
    );
    // The audit page: the resume, filtered by kind and actor.
    let a = ui.get("/audit?kind=charter.resume&actor=admin").await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("1 shown of 1"), "{}", a.body);
    let none = ui.get("/audit?kind=charter.resume&actor=nobody").await;
    assert!(none.body.contains("No entry matches."));
    // The charter's history lists it.
    let c = ui.get("/charters/backlog").await;
    assert!(c.body.contains("<h2>History</h2>"));
    assert!(c.body.contains("charter.resume"), "{}", c.body);
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_pages_with_cursors_and_true_totals() {
    let (h, s) = seeded_harness(1_200, 0, 130, 0).await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = h
            .get(
                &format!("/api/v1/events?charter=backlog&limit=500&cursor={cursor}"),
                Some("viewer"),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["total"], 1200);
        seen.extend(
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let mut want: Vec<String> = s.events.iter().map(Uuid::to_string).collect();
    want.reverse();
    assert_eq!(seen, want, "newest first, each once");
    let v = h
        .get(
            "/api/v1/escalations?charter=backlog&limit=100",
            Some("viewer"),
        )
        .await
        .json();
    assert_eq!(v["total"], 130);
    assert_eq!(v["escalations"].as_array().unwrap().len(), 100);
    let next = v["next_cursor"].as_str().unwrap();
    let v2 = h
        .get(
            &format!("/api/v1/escalations?charter=backlog&limit=100&cursor={next}"),
            Some("viewer"),
        )
        .await
        .json();
    assert_eq!(v2["escalations"].as_array().unwrap().len(), 30);
    assert_eq!(v2["next_cursor"], Value::Null);
    let bad = h
        .get("/api/v1/escalations?cursor=garbage", Some("viewer"))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let key = h
        .get("/api/v1/events?dedupe_key=seed-77", Some("viewer"))
        .await
        .json();
    assert_eq!(key["events"][0]["id"], s.events[77].to_string());
    h.shutdown.cancel();
}

/// Node and Chromium (see `ui.rs`), plus axe-core.
fn browser() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let (dir, chromium) = crate::ui::browser_tools()?;
    dir.join("node_modules/axe-core")
        .exists()
        .then_some((dir, chromium))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_works_the_backlog_by_keyboard_with_no_accessibility_violations() {
    let Some((ui_dir, chromium)) = browser() else {
        return;
    };
    let (h, s) = seeded_harness(10_500, 210, 3_000, 30).await;
    let outdir = if std::env::var("CHARTER_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/images")
    } else {
        h.dir.join("screenshots")
    };
    let expected = json!({
        "approvals": 210, "decisions": 3000, "dead": 30, "guess": "billing",
        "event": s.events[0], "charter": "backlog",
    });
    let mut child = tokio::process::Command::new("node")
        .arg(ui_dir.join("inbox.mjs"))
        .arg(&h.base)
        .arg("secret-admin")
        .arg(&outdir)
        .arg(expected.to_string())
        .env("CHROMIUM_PATH", &chromium)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut summary = Value::Null;
    let run = async {
        while let Some(line) = out.next_line().await.unwrap() {
            if line == "NEED_NEW_APPROVAL" {
                // A new approval arrives while the page is open.
                let extra = seed_one_approval(&h.store).await;
                stdin
                    .write_all(format!("{extra}\n").as_bytes())
                    .await
                    .unwrap();
            } else if line.starts_with('{') {
                summary = serde_json::from_str(&line).unwrap();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser script finished within 4 minutes");
    let status = child.wait().await.unwrap();
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut err)
        .await
        .unwrap();
    assert!(status.success(), "browser script failed:\n{err}");
    assert!(summary["live_ms"].as_u64().unwrap() <= 5_000, "{summary}");
    h.shutdown.cancel();
}

/// One more pending approval on a fresh event of `backlog`, created now.
async fn seed_one_approval(store: &SqliteStore) -> Uuid {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ev = match store.ingest(event("backlog", 99_999, now)).await.unwrap() {
        IngestOutcome::Stored(id) => id,
        d => panic!("{d:?}"),
    };
    let run = Uuid::now_v7();
    store
        .start_run(run, ev, "backlog", "v1", "live", now)
        .await
        .unwrap();
    store
        .create_approval(NewApproval {
            id: Uuid::now_v7(),
            run_id: run,
            event_id: ev,
            charter: "backlog".into(),
            action: "assign_billing".into(),
            params: json!({"target": "/api/tickets/99999"}),
            params_hash: "live-1".into(),
            reviewers: vec![],
            created_at: now,
            expires_at: None,
            on_expiry: None,
        })
        .await
        .unwrap()
        .id
}
