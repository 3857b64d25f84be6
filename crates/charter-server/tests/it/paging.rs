//! Runs and rejected payloads page like the other listings: a real SQLite store seeded with
//! more rows than one page, walked through the API (both orders, a scoped token) and the
//! `/rejected` page (next and previous links), checking the true total and that every row
//! comes exactly once.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::{BTreeMap, HashSet};

use charter_core::model::{NewEvent, RejectedPayload};
use charter_store::{CharterStateStore, EventStore, IngestOutcome, RunStore};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Harness, Ui, charter_yaml};

const AT: i64 = 1_700_000_000_000;

async fn harness() -> Harness {
    let h = Harness::start(
        &[
            (
                "backlog",
                charter_yaml("backlog", "live", "{ reviewers: [admin] }", "escalate"),
            ),
            (
                "elsewhere",
                charter_yaml("elsewhere", "live", "{ reviewers: [admin] }", "escalate"),
            ),
        ],
        &[
            ("admin", "admin", &[]),
            ("viewer", "viewer", &[]),
            ("scoped", "viewer", &["backlog"]),
        ],
    )
    .await;
    // Nothing should run the seeded events while the test looks at them.
    for c in ["backlog", "elsewhere"] {
        h.store.set_paused(c, true, 0).await.unwrap();
    }
    h
}

/// Start `n` runs of `charter`, three to a millisecond (the id breaks the ties); returns
/// their ids in the listing's oldest-first order.
async fn seed_runs(h: &Harness, charter: &str, n: usize) -> Vec<Uuid> {
    let mut runs = Vec::new();
    for i in 0..n {
        let event = NewEvent {
            id: Uuid::now_v7(),
            charter: charter.to_string(),
            source: "webhook:/hooks/seed".into(),
            event_type: None,
            dedupe_key: None,
            received_at: AT,
            headers: BTreeMap::new(),
            payload: json!({"n": i}),
        };
        let IngestOutcome::Stored(ev) = h.store.ingest(event).await.unwrap() else {
            panic!("a fresh event was not stored");
        };
        let run = Uuid::now_v7();
        let started = AT + i64::try_from(i / 3).unwrap();
        h.store
            .start_run(run, ev, charter, "v1", "live", started)
            .await
            .unwrap();
        runs.push(run);
    }
    runs
}

/// Keep `n` rejected payloads of `charter`; returns their ids, oldest first.
async fn seed_rejected(h: &Harness, charter: &str, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let r = RejectedPayload {
            id: Uuid::now_v7(),
            charter: charter.to_string(),
            source: "webhook:/hooks/seed".into(),
            received_at: AT + i64::try_from(i).unwrap(),
            headers: BTreeMap::new(),
            body: format!("{{\"ticket\": {{\"id\": \"x{i}\"}}}}"),
            reasons: vec!["/ticket/id: not an integer".into()],
        };
        ids.push(r.id);
        h.store.reject(r).await.unwrap();
    }
    ids
}

/// Walk an API listing from its first page, `query` plus `cursor`; returns every row's id
/// in order and checks each page's total is `total` and no id comes twice.
async fn walk(h: &Harness, who: &str, path: &str, key: &str, total: u64) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100 {
        let r = h.get(&format!("{path}&cursor={cursor}"), Some(who)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let v = r.json();
        assert_eq!(v["total"], total, "{path}");
        for row in v[key].as_array().unwrap() {
            let id = row["id"].as_str().unwrap().to_string();
            assert!(!seen.contains(&id), "{path}: {id} on two pages");
            seen.push(id);
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return seen,
        }
    }
    panic!("{path}: more than 100 pages");
}

fn strings(ids: &[Uuid]) -> Vec<String> {
    ids.iter().map(Uuid::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_page_through_the_api_with_true_totals() {
    let h = harness().await;
    let runs = seed_runs(&h, "backlog", 230).await;
    let other = seed_runs(&h, "elsewhere", 20).await;
    let newest: Vec<String> = strings(&runs).into_iter().rev().collect();

    // A token scoped to `backlog` pages and counts only its runs, with no charter given.
    let seen = walk(&h, "scoped", "/api/v1/runs?limit=50", "runs", 230).await;
    assert_eq!(seen, newest, "newest first, each once");
    let seen = walk(
        &h,
        "viewer",
        "/api/v1/runs?charter=backlog&limit=70&sort=oldest",
        "runs",
        230,
    )
    .await;
    assert_eq!(seen, strings(&runs), "oldest first, each once");
    // Unscoped: every charter's runs.
    let all = walk(&h, "viewer", "/api/v1/runs?limit=100", "runs", 250).await;
    let want: HashSet<String> = strings(&runs).into_iter().chain(strings(&other)).collect();
    assert_eq!(all.into_iter().collect::<HashSet<_>>(), want);
    // Filters count what they list.
    let v = h
        .get(
            "/api/v1/runs?charter=backlog&outcome=running&until=1700000000010&limit=5",
            Some("viewer"),
        )
        .await
        .json();
    assert_eq!(v["total"], 30, "{v}");
    assert_eq!(v["runs"].as_array().unwrap().len(), 5);
    let v = h
        .get("/api/v1/runs?charter=elsewhere", Some("scoped"))
        .await
        .json();
    assert_eq!(v, json!({"runs": [], "total": 0, "next_cursor": null}));
    for bad in ["cursor=garbage", "cursor=12_nope", "sort=sideways"] {
        let r = h.get(&format!("/api/v1/runs?{bad}"), Some("viewer")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }

    // The web UI's /runs page: 50 a page with the true total, next links to the end, every
    // run of the charter once, newest first; a bad outcome is refused.
    let ui = Ui::login(&h, "admin").await;
    let mut url = "/runs?charter=backlog".to_string();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let p = ui.get(&url).await;
        assert_eq!(p.status, 200, "{}", p.body);
        let rows = run_rows(&p.body);
        assert!(
            p.body.contains(&format!("{} shown of 230", rows.len())),
            "{url}: no true total in {}",
            p.body
        );
        seen.extend(rows);
        pages += 1;
        match link(&p.body, "next") {
            Some(n) => url = n,
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen, newest, "the pages show every run once, newest first");
    let p = ui.get("/runs?outcome=running&charter=elsewhere").await;
    assert!(p.body.contains("20 shown of 20"), "{}", p.body);
    assert_eq!(ui.get("/runs?outcome=sideways").await.status, 400);
    h.shutdown.cancel();
}

/// The run ids in the `/runs` table, in order.
fn run_rows(body: &str) -> Vec<String> {
    let marker = "<tr data-run=\"";
    body.match_indices(marker)
        .map(|(i, m)| body[i + m.len()..i + m.len() + 36].to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_payloads_page_through_the_api_and_the_ui() {
    let h = harness().await;
    let ids = seed_rejected(&h, "backlog", 130).await;
    seed_rejected(&h, "elsewhere", 10).await;
    let newest: Vec<String> = strings(&ids).into_iter().rev().collect();

    let seen = walk(&h, "scoped", "/api/v1/rejected?limit=40", "rejected", 130).await;
    assert_eq!(seen, newest, "newest first, each once");
    let seen = walk(
        &h,
        "viewer",
        "/api/v1/rejected?charter=backlog&limit=60&sort=oldest",
        "rejected",
        130,
    )
    .await;
    assert_eq!(seen, strings(&ids), "oldest first, each once");
    walk(&h, "viewer", "/api/v1/rejected?limit=100", "rejected", 140).await;
    let v = h
        .get(
            &format!(
                "/api/v1/rejected?charter=backlog&since={}&until={}",
                AT + 10,
                AT + 20
            ),
            Some("viewer"),
        )
        .await
        .json();
    assert_eq!(v["total"], 10, "{v}");
    assert_eq!(v["rejected"][0]["id"], Value::String(ids[19].to_string()));
    let r = h
        .get("/api/v1/rejected?cursor=garbage", Some("viewer"))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // The page: 50 a page, the true total, next links to the end, previous links back.
    let ui = Ui::login(&h, "admin").await;
    let mut url = "/rejected?charter=backlog".to_string();
    let mut pages: Vec<(String, Vec<String>)> = Vec::new();
    loop {
        let p = ui.get(&url).await;
        assert_eq!(p.status, 200, "{}", p.body);
        let rows = payload_rows(&p.body);
        assert!(
            p.body.contains(&format!("{} shown of 130", rows.len())),
            "{url}: no true total in {}",
            p.body
        );
        let next = link(&p.body, "next");
        let prev = link(&p.body, "prev");
        if pages.is_empty() {
            assert_eq!(prev, None, "the first page has no previous page");
        } else {
            // The previous link leads to exactly the page before.
            let back = ui.get(&prev.clone().unwrap()).await;
            assert_eq!(payload_rows(&back.body), pages.last().unwrap().1, "{url}");
        }
        pages.push((url.clone(), rows));
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    let seen: Vec<String> = pages.iter().flat_map(|(_, rows)| rows.clone()).collect();
    assert_eq!(pages.len(), 3);
    assert_eq!(
        seen, newest,
        "the pages show every payload once, newest first"
    );
    h.shutdown.cancel();
}

/// The payload ids in the `/rejected` table, in order.
fn payload_rows(body: &str) -> Vec<String> {
    let marker = "<tr><td><code>";
    body.match_indices(marker)
        .map(|(i, m)| body[i + m.len()..i + m.len() + 36].to_string())
        .collect()
}

/// The `rel` link's target.
fn link(body: &str, rel: &str) -> Option<String> {
    let marker = format!("rel=\"{rel}\" href=\"");
    let at = body.find(&marker)?;
    let rest = &body[at + marker.len()..];
    Some(rest[..rest.find('"')?].replace("&amp;", "&"))
}
