//! The behaviour every store backend must show.
//!
//! Each `check_*` function exercises one part of the [`Store`] contract against a live store
//! and returns `Err` with a description of the first broken expectation. The checks use
//! charter names unique to the call, so they can share one store (even one that already
//! holds data) and run in any order. [`run_all`] runs every check and reports all failures.
//!
//! ```ignore
//! let store = SqliteStore::open(&path)?;
//! charter_store::conformance::run_all(&store).await.unwrap();
//! ```
//!
//! The checks need a multi-threaded Tokio runtime (they spawn concurrent tasks).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use charter_core::model::{
    ActionRecord, ActionStatus, AttemptRecord, Decision, DecisionStage, EventStatus, NewEvent,
    RejectedPayload, RunOutcome, StageAnswer, UnixMillis,
};
use uuid::Uuid;

use crate::{
    ApprovalFilter, ApprovalStatus, AuditFilter, EscalationFilter, EscalationStatus, EventFilter,
    HumanDecision, IngestOutcome, ModeOverride, NewApproval, NewAuditEntry, NewEscalation,
    NewMeasurement, ReportQuery, Requeue, RunFilter, RunWrite, Store, Verdict,
};
use crate::{INTERRUPTED_ERROR, InDoubtFilter, InDoubtRef, InterruptedRun};

pub use crate::knowledge_conformance::check_knowledge;
pub use crate::lists_conformance::{
    check_close_escalation, check_paged_events, check_paged_queues, check_paged_rejected,
    check_paged_runs,
};
pub use crate::notifications_conformance::check_notifications;
pub use crate::report_conformance::{check_incidents, check_reports};
pub use crate::rollout_conformance::check_rollout;

/// Outcome of one check: `Err` describes what the backend got wrong.
pub type CheckResult = Result<(), String>;

/// Fail the check with a formatted message unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Turn a store error into a check failure that says which call failed.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// A charter name no other check (or earlier run against the same database) uses.
fn charter(name: &str) -> String {
    // The tail of a UUIDv7 is random; the head is the clock.
    let tag = Uuid::now_v7().simple().to_string();
    format!("conf-{name}-{}", &tag[tag.len() - 12..])
}

fn now() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An event for `charter` with a fresh UUIDv7 (ids made later sort later).
fn event(charter: &str, dedupe: Option<&str>, received_at: UnixMillis) -> NewEvent {
    let mut headers = BTreeMap::new();
    headers.insert("content-type".to_string(), "application/json".to_string());
    headers.insert("x-request-id".to_string(), Uuid::now_v7().to_string());
    NewEvent {
        id: Uuid::now_v7(),
        charter: charter.to_string(),
        source: "webhook:/hooks/conformance".to_string(),
        event_type: Some("ticket.updated".to_string()),
        dedupe_key: dedupe.map(str::to_string),
        received_at,
        headers,
        payload: serde_json::json!({
            "ticket": { "id": 42, "subject": "Refund — ünïcode ✓", "tags": ["a", "b"] },
            "n": 1.5,
            "nil": null
        }),
    }
}

async fn stored<S: Store>(store: &S, ev: NewEvent) -> Result<Uuid, String> {
    match store.ingest(ev).await.ctx("ingest")? {
        IngestOutcome::Stored(id) => Ok(id),
        other => Err(format!("ingest of a fresh event returned {other:?}")),
    }
}

/// Run every check; `Err` lists every failed check.
pub async fn run_all<S: Store>(store: &S) -> CheckResult {
    let checks: Vec<(&str, CheckResult)> = vec![
        ("ingest_get", check_ingest_get(store).await),
        ("dedupe", check_dedupe(store).await),
        ("ingest_json", check_ingest_json(store).await),
        ("concurrent_dedupe", check_concurrent_dedupe(store).await),
        ("rejected", check_rejected(store).await),
        ("rejected_cap", check_rejected_cap(store).await),
        ("claim_limit", check_claim_limit(store).await),
        ("pause", check_pause(store).await),
        ("lease_expiry", check_lease_expiry(store).await),
        ("release_leases", check_release_leases(store).await),
        ("interrupted_runs", check_interrupted_runs(store).await),
        ("requeue", check_requeue(store).await),
        ("run_lifecycle", check_run_lifecycle(store).await),
        ("record_run", check_record_run(store).await),
        ("claim_context", check_claim_context(store).await),
        ("list_events", check_list_events(store).await),
        ("list_runs", check_list_runs(store).await),
        ("paged_events", check_paged_events(store).await),
        ("paged_queues", check_paged_queues(store).await),
        ("paged_runs", check_paged_runs(store).await),
        ("paged_rejected", check_paged_rejected(store).await),
        ("close_escalation", check_close_escalation(store).await),
        ("pending_counts", check_pending_counts(store).await),
        ("approvals", check_approvals(store).await),
        (
            "concurrent_approval",
            check_concurrent_approval(store).await,
        ),
        ("approval_expiry", check_approval_expiry(store).await),
        ("escalations", check_escalations(store).await),
        ("audit_log", check_audit_log(store).await),
        ("reports", check_reports(store).await),
        ("incidents", check_incidents(store).await),
        ("notifications", check_notifications(store).await),
        ("rollout", check_rollout(store).await),
        ("operator", check_operator(store).await),
        ("source_state", check_source_state(store).await),
        ("decision_store", check_decision_store(store).await),
        ("retention", check_retention(store).await),
        ("nul_characters", check_nul_characters(store).await),
        ("ui_sessions", check_ui_sessions(store).await),
        ("knowledge", check_knowledge(store).await),
    ];
    let failures: Vec<String> = checks
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// An ingested event reads back exactly, pending, with no attempts.
pub async fn check_ingest_get<S: Store>(store: &S) -> CheckResult {
    let c = charter("ingest");
    let t = now();
    let ev = event(&c, Some("k1"), t);
    let id = stored(store, ev.clone()).await?;
    ensure!(id == ev.id, "Stored({id}) is not the event's id {}", ev.id);

    let mut bare = event(&c, None, t);
    bare.event_type = None;
    bare.headers.clear();
    bare.payload = serde_json::json!([1, "two", { "three": 3 }]);
    stored(store, bare.clone()).await?;

    for original in [ev, bare] {
        let got = store
            .get_event(original.id)
            .await
            .ctx("get_event")?
            .ok_or_else(|| format!("event {} not found after ingest", original.id))?;
        ensure!(
            got.event == original,
            "event read back differs:\n  stored {original:?}\n  read   {:?}",
            got.event
        );
        ensure!(
            got.status == EventStatus::Pending,
            "new event has status {:?}",
            got.status
        );
        ensure!(got.attempts == 0, "new event has {} attempts", got.attempts);
    }
    let missing = store.get_event(Uuid::now_v7()).await.ctx("get_event")?;
    ensure!(missing.is_none(), "unknown id returned {missing:?}");
    Ok(())
}

/// `ingest_json` stores the payload text it is given and reads back the same payload; its
/// dedupe answers are those of `ingest`.
pub async fn check_ingest_json<S: Store>(store: &S) -> CheckResult {
    let c = charter("ingest-json");
    // Keys out of sorted order, spacing, an escaped character and a number spelled with an
    // exponent: what a sender may send, as it may send it.
    let text = "{ \"zeta\": [1, 2.5e3, {\"k\": \"v\\u00e9\"}],\n  \"alpha\": null, \"mid\": true }";
    let payload: serde_json::Value = serde_json::from_str(text).ctx("test payload")?;
    let mut ev = event(&c, Some("json-1"), now());
    ev.payload = payload.clone();
    let id = match store
        .ingest_json(ev, text.to_string())
        .await
        .ctx("ingest_json")?
    {
        IngestOutcome::Stored(id) => id,
        other => return Err(format!("ingest_json of a fresh event returned {other:?}")),
    };
    let got = store
        .get_event(id)
        .await
        .ctx("get_event")?
        .ok_or("the event stored by ingest_json is not found")?;
    ensure!(
        got.event.payload == payload,
        "payload read back {} differs from the one sent {payload}",
        got.event.payload
    );
    let mut again = event(&c, Some("json-1"), now());
    again.payload = payload;
    match store
        .ingest_json(again, text.to_string())
        .await
        .ctx("ingest_json again")?
    {
        IngestOutcome::Duplicate(first) if first == id => Ok(()),
        other => Err(format!(
            "a second ingest_json with the same dedupe key returned {other:?}, not Duplicate({id})"
        )),
    }
}

/// Same (charter, dedupe key) is a duplicate of the first; other charters and events without
/// a key are not.
pub async fn check_dedupe<S: Store>(store: &S) -> CheckResult {
    let c = charter("dedupe");
    let other = charter("dedupe-other");
    let t = now();
    let first = stored(store, event(&c, Some("ticket-1:v1"), t)).await?;
    let again = store
        .ingest(event(&c, Some("ticket-1:v1"), t + 5))
        .await
        .ctx("ingest")?;
    ensure!(
        again == IngestOutcome::Duplicate(first),
        "second delivery returned {again:?}, want Duplicate({first})"
    );
    // A different key, another charter with the same key, and key-less events are all new.
    stored(store, event(&c, Some("ticket-1:v2"), t)).await?;
    stored(store, event(&other, Some("ticket-1:v1"), t)).await?;
    stored(store, event(&c, None, t)).await?;
    stored(store, event(&c, None, t)).await?;
    // The same event (same id) delivered twice is not stored twice.
    let ev = event(&c, None, t);
    stored(store, ev.clone()).await?;
    let same = store.ingest(ev.clone()).await.ctx("ingest same id")?;
    ensure!(
        same == IngestOutcome::Duplicate(ev.id),
        "re-ingesting the same id returned {same:?}"
    );

    let listed = store
        .list_events(EventFilter {
            charter: Some(c.clone()),
            limit: 1000,
            ..EventFilter::default()
        })
        .await
        .ctx("list_events")?;
    ensure!(
        listed.len() == 5,
        "charter holds {} events, want 5",
        listed.len()
    );
    Ok(())
}

/// 100 concurrent ingests of one dedupe key: exactly one `Stored`, 99 `Duplicate` of it.
pub async fn check_concurrent_dedupe<S: Store>(store: &S) -> CheckResult {
    let c = charter("dedupe-race");
    let t = now();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let store = store.clone();
        let ev = event(&c, Some("same-key"), t);
        tasks.push(tokio::spawn(async move { store.ingest(ev).await }));
    }
    let mut stored_ids = Vec::new();
    let mut duplicate_ids = Vec::new();
    for task in tasks {
        match task.await.ctx("ingest task")?.ctx("ingest")? {
            IngestOutcome::Stored(id) => stored_ids.push(id),
            IngestOutcome::Duplicate(id) => duplicate_ids.push(id),
        }
    }
    ensure!(
        stored_ids.len() == 1,
        "{} of 100 concurrent ingests were Stored, want exactly 1",
        stored_ids.len()
    );
    let winner = stored_ids[0];
    ensure!(
        duplicate_ids.iter().all(|id| *id == winner),
        "a Duplicate named another id than the stored {winner}"
    );
    let listed = store
        .list_events(EventFilter {
            charter: Some(c),
            ..EventFilter::default()
        })
        .await
        .ctx("list_events")?;
    ensure!(
        listed.len() == 1 && listed[0].event.id == winner,
        "after the race the charter holds {} events",
        listed.len()
    );
    Ok(())
}

/// Rejected payloads are kept, listed newest first per charter, and deletable once.
pub async fn check_rejected<S: Store>(store: &S) -> CheckResult {
    let c = charter("rejected");
    let t = now();
    let mk = |body: &str| RejectedPayload {
        id: Uuid::now_v7(),
        charter: c.clone(),
        source: "webhook:/hooks/x".to_string(),
        received_at: t,
        headers: BTreeMap::from([("content-type".to_string(), "text/plain".to_string())]),
        body: body.to_string(),
        reasons: vec![
            "/ticket/id: \"x\" is not of type \"integer\"".to_string(),
            "/ticket: \"subject\" is a required property".to_string(),
        ],
    };
    let older = mk("{\"ticket\": {\"id\": \"x\"}}");
    let newer = mk("not json at all \u{fffd}");
    store.reject(older.clone()).await.ctx("reject")?;
    store.reject(newer.clone()).await.ctx("reject")?;

    let listed = store
        .list_rejected(Some(c.clone()), 10)
        .await
        .ctx("list_rejected")?;
    ensure!(
        listed == vec![newer.clone(), older.clone()],
        "list_rejected (newest first) returned {listed:?}"
    );
    let one = store
        .list_rejected(Some(c.clone()), 1)
        .await
        .ctx("list_rejected")?;
    ensure!(one == vec![newer.clone()], "limit 1 returned {one:?}");
    let all = store.list_rejected(None, 0).await.ctx("list_rejected")?;
    ensure!(
        all.iter().any(|r| r.id == older.id),
        "unfiltered list_rejected misses the payload"
    );
    let elsewhere = store
        .list_rejected(Some(charter("rejected-none")), 10)
        .await
        .ctx("list_rejected")?;
    ensure!(elsewhere.is_empty(), "another charter lists {elsewhere:?}");

    ensure!(
        store
            .delete_rejected(older.id)
            .await
            .ctx("delete_rejected")?,
        "delete_rejected of a kept payload returned false"
    );
    ensure!(
        !store
            .delete_rejected(older.id)
            .await
            .ctx("delete_rejected")?,
        "deleting twice returned true"
    );
    let left = store
        .list_rejected(Some(c), 10)
        .await
        .ctx("list_rejected")?;
    ensure!(left == vec![newer], "after delete the list is {left:?}");
    Ok(())
}

/// `reject_within` keeps payloads up to the cap per charter, then keeps nothing more for
/// that charter (other charters unaffected); a freed place is used again.
pub async fn check_rejected_cap<S: Store>(store: &S) -> CheckResult {
    let c = charter("rejected-cap");
    let other = charter("rejected-cap-other");
    let mk = |charter: &str| RejectedPayload {
        id: Uuid::now_v7(),
        charter: charter.to_string(),
        source: "webhook:/hooks/x".to_string(),
        received_at: now(),
        headers: BTreeMap::new(),
        body: "{".to_string(),
        reasons: vec!["not JSON".to_string()],
    };
    let mut kept = Vec::new();
    for i in 0..3 {
        let r = mk(&c);
        ensure!(
            store
                .reject_within(r.clone(), 3)
                .await
                .ctx("reject_within")?,
            "payload {i} of 3 was not kept"
        );
        kept.push(r.id);
    }
    let fourth = mk(&c);
    ensure!(
        !store
            .reject_within(fourth.clone(), 3)
            .await
            .ctx("reject_within")?,
        "a fourth payload was kept past the cap of 3"
    );
    let listed = store
        .list_rejected(Some(c.clone()), 10)
        .await
        .ctx("list_rejected")?;
    ensure!(
        listed.len() == 3 && !listed.iter().any(|r| r.id == fourth.id),
        "after the cap the charter lists {listed:?}"
    );
    ensure!(
        store
            .reject_within(mk(&other), 3)
            .await
            .ctx("reject_within")?,
        "another charter's payload was refused by this charter's cap"
    );
    ensure!(
        store
            .delete_rejected(kept[0])
            .await
            .ctx("delete_rejected")?,
        "delete_rejected returned false"
    );
    ensure!(
        store.reject_within(mk(&c), 3).await.ctx("reject_within")?,
        "a freed place was not used again"
    );
    ensure!(
        !store.reject_within(mk(&c), 0).await.ctx("reject_within")?,
        "a cap of 0 kept a payload"
    );
    Ok(())
}

/// Claims take the oldest events first, count attempts, and never exceed the charter limit
/// across workers.
pub async fn check_claim_limit<S: Store>(store: &S) -> CheckResult {
    let c = charter("claim");
    let t = now();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(stored(store, event(&c, None, t)).await?);
    }
    let lease = Duration::from_secs(60);

    let got = store.claim(&c, "w1", 10, 2, lease, t).await.ctx("claim")?;
    let got_ids: Vec<Uuid> = got.iter().map(|c| c.event.id).collect();
    ensure!(
        got_ids == ids[..2],
        "first claim took {got_ids:?}, want the two oldest {:?}",
        &ids[..2]
    );
    for claimed in &got {
        ensure!(
            claimed.attempt == 1,
            "first claim has attempt {}",
            claimed.attempt
        );
        ensure!(
            claimed.lease_until == t + 60_000,
            "lease_until {} want {}",
            claimed.lease_until,
            t + 60_000
        );
        ensure!(
            claimed.event.charter == c,
            "claimed another charter's event"
        );
    }
    let rec = store
        .get_event(ids[0])
        .await
        .ctx("get_event")?
        .ok_or("claimed event vanished")?;
    ensure!(
        rec.status == EventStatus::Processing && rec.attempts == 1,
        "claimed event is {:?} with {} attempts",
        rec.status,
        rec.attempts
    );

    // The limit is per charter, whoever asks.
    for worker in ["w1", "w2"] {
        let more = store
            .claim(&c, worker, 10, 2, lease, t + 1)
            .await
            .ctx("claim")?;
        ensure!(
            more.is_empty(),
            "{worker} claimed {} events beyond the charter limit",
            more.len()
        );
    }
    // A higher limit leaves room for exactly the difference; `max` caps it too.
    let more = store
        .claim(&c, "w2", 1, 4, lease, t + 2)
        .await
        .ctx("claim")?;
    ensure!(
        more.len() == 1 && more[0].event.id == ids[2],
        "claim with max 1 took {:?}",
        more.iter().map(|c| c.event.id).collect::<Vec<_>>()
    );

    // Releasing one frees one slot under limit 3.
    ensure!(
        store
            .release(ids[0], "w1", EventStatus::Done, t + 3)
            .await
            .ctx("release")?,
        "release by the owner returned false"
    );
    let more = store
        .claim(&c, "w2", 10, 3, lease, t + 4)
        .await
        .ctx("claim")?;
    ensure!(
        more.len() == 1 && more[0].event.id == ids[3],
        "after release, claim took {:?}",
        more.iter().map(|c| c.event.id).collect::<Vec<_>>()
    );
    // Another charter's queue is untouched by all this.
    let other = charter("claim-other");
    let ev = stored(store, event(&other, None, t)).await?;
    let o = store
        .claim(&other, "w3", 10, 1, lease, t + 5)
        .await
        .ctx("claim")?;
    ensure!(
        o.len() == 1 && o[0].event.id == ev,
        "the other charter's claim took {} events",
        o.len()
    );
    Ok(())
}

/// A paused charter keeps storing but claims nothing until resumed.
pub async fn check_pause<S: Store>(store: &S) -> CheckResult {
    let c = charter("pause");
    let t = now();
    ensure!(
        !store.is_paused(&c).await.ctx("is_paused")?,
        "an unknown charter reports paused"
    );
    store.set_paused(&c, true, t).await.ctx("set_paused")?;
    ensure!(
        store.is_paused(&c).await.ctx("is_paused")?,
        "pause did not stick"
    );
    ensure!(
        store.paused().await.ctx("paused")?.contains(&c),
        "paused() misses the paused charter"
    );
    let id = stored(store, event(&c, None, t)).await?;
    let got = store
        .claim(&c, "w", 10, 10, Duration::from_secs(30), t)
        .await
        .ctx("claim")?;
    ensure!(
        got.is_empty(),
        "claimed {} events of a paused charter",
        got.len()
    );

    store.set_paused(&c, false, t + 1).await.ctx("set_paused")?;
    ensure!(
        !store.is_paused(&c).await.ctx("is_paused")?,
        "resume did not stick"
    );
    ensure!(
        !store.paused().await.ctx("paused")?.contains(&c),
        "paused() still lists the resumed charter"
    );
    let got = store
        .claim(&c, "w", 10, 10, Duration::from_secs(30), t + 2)
        .await
        .ctx("claim")?;
    ensure!(
        got.len() == 1 && got[0].event.id == id,
        "after resume claimed {} events",
        got.len()
    );
    Ok(())
}

/// An expired lease is reclaimed by another worker with the attempt count incremented; the
/// old owner can then neither renew nor release.
pub async fn check_lease_expiry<S: Store>(store: &S) -> CheckResult {
    let c = charter("lease");
    let t = now();
    let id = stored(store, event(&c, None, t)).await?;
    let lease = Duration::from_secs(10);

    let first = store.claim(&c, "w1", 1, 1, lease, t).await.ctx("claim")?;
    ensure!(first.len() == 1, "w1 claimed {} events", first.len());
    let early = store
        .claim(&c, "w2", 1, 5, lease, t + 5_000)
        .await
        .ctx("claim")?;
    ensure!(early.is_empty(), "w2 took an event under a live lease");

    // The owner may renew while it holds the lease.
    ensure!(
        store.renew(id, "w1", t + 15_000).await.ctx("renew")?,
        "owner's renew returned false"
    );
    ensure!(
        !store.renew(id, "w2", t + 99_000).await.ctx("renew")?,
        "a non-owner renewed the lease"
    );
    let still = store
        .claim(&c, "w2", 1, 5, lease, t + 12_000)
        .await
        .ctx("claim")?;
    ensure!(still.is_empty(), "w2 took an event whose lease was renewed");

    // After expiry, w2 takes it over: attempt 2.
    let second = store
        .claim(&c, "w2", 1, 1, lease, t + 15_000)
        .await
        .ctx("claim")?;
    ensure!(
        second.len() == 1 && second[0].event.id == id,
        "expired lease not reclaimed ({} claimed)",
        second.len()
    );
    ensure!(
        second[0].attempt == 2,
        "reclaimed event has attempt {}, want 2",
        second[0].attempt
    );
    ensure!(
        second[0].lease_until == t + 25_000,
        "reclaimed lease_until {}",
        second[0].lease_until
    );
    ensure!(
        !store.renew(id, "w1", t + 30_000).await.ctx("renew")?,
        "the old owner renewed a lost lease"
    );
    ensure!(
        !store
            .release(id, "w1", EventStatus::Done, t + 16_000)
            .await
            .ctx("release")?,
        "the old owner released a lost lease"
    );
    ensure!(
        store.renew(id, "w2", t + 30_000).await.ctx("renew")?,
        "the new owner could not renew"
    );
    ensure!(
        store
            .release(id, "w2", EventStatus::Done, t + 17_000)
            .await
            .ctx("release")?,
        "the new owner could not release"
    );
    ensure!(
        !store
            .release(id, "w2", EventStatus::Failed, t + 18_000)
            .await
            .ctx("release")?,
        "released an event that is no longer processing"
    );
    let rec = store
        .get_event(id)
        .await
        .ctx("get_event")?
        .ok_or("event vanished")?;
    ensure!(
        rec.status == EventStatus::Done && rec.attempts == 2 && rec.updated_at == t + 17_000,
        "final record is {:?}, {} attempts, updated_at {}",
        rec.status,
        rec.attempts,
        rec.updated_at
    );
    // A released (done) event is not claimable again.
    let none = store
        .claim(&c, "w3", 1, 5, lease, t + 60_000)
        .await
        .ctx("claim")?;
    ensure!(none.is_empty(), "a done event was claimed again");
    Ok(())
}

/// A restarted worker releases the leases of its previous incarnation at once, live or not:
/// one owner's, or every one; finished events stay as they are.
pub async fn check_release_leases<S: Store>(store: &S) -> CheckResult {
    let c = charter("relleases");
    let t = now();
    let lease = Duration::from_secs(60);
    let done = stored(store, event(&c, None, t)).await?;
    let got = store
        .claim(&c, "node-a", 1, 10, lease, t)
        .await
        .ctx("claim")?;
    ensure!(got.len() == 1 && got[0].event.id == done, "claimed {got:?}");
    store
        .release(done, "node-a", EventStatus::Done, t + 1)
        .await
        .ctx("release")?;
    let a1 = stored(store, event(&c, None, t + 2)).await?;
    let a2 = stored(store, event(&c, None, t + 3)).await?;
    let b = stored(store, event(&c, None, t + 4)).await?;
    let got = store
        .claim(&c, "node-a", 2, 10, lease, t + 5)
        .await
        .ctx("claim")?;
    ensure!(got.len() == 2, "node-a claimed {} events", got.len());
    let got = store
        .claim(&c, "node-b", 5, 10, lease, t + 5)
        .await
        .ctx("claim")?;
    ensure!(
        got.len() == 1 && got[0].event.id == b,
        "node-b claimed {got:?}"
    );

    // node-a restarts: its leases (still live for a minute) are released, node-b's are not.
    let released = store
        .release_leases(Some("node-a"), t + 6)
        .await
        .ctx("release_leases(node-a)")?;
    ensure!(
        released == vec![a1, a2],
        "release_leases(node-a) returned {released:?}, want [{a1}, {a2}]"
    );
    for id in [a1, a2] {
        let rec = store
            .get_event(id)
            .await
            .ctx("get_event")?
            .ok_or("event vanished")?;
        ensure!(
            rec.status == EventStatus::Pending && rec.attempts == 1 && rec.updated_at == t + 6,
            "a released event is {:?} with {} attempts, updated_at {}",
            rec.status,
            rec.attempts,
            rec.updated_at
        );
        ensure!(
            !store.renew(id, "node-a", t + 99_000).await.ctx("renew")?,
            "the old incarnation renewed a released lease"
        );
    }
    let rec = store
        .get_event(b)
        .await
        .ctx("get_event")?
        .ok_or("event vanished")?;
    ensure!(
        rec.status == EventStatus::Processing,
        "node-b's event is {:?} after node-a's leases were released",
        rec.status
    );
    // Well inside the old leases, the released events are claimable again (attempt 2);
    // node-b's live lease still counts against the limit of 3.
    let again = store
        .claim(&c, "node-a", 5, 3, lease, t + 7)
        .await
        .ctx("claim")?;
    let ids: Vec<Uuid> = again.iter().map(|x| x.event.id).collect();
    ensure!(
        ids == vec![a1, a2] && again.iter().all(|x| x.attempt == 2),
        "claim after the release took {again:?}"
    );

    // A store served by one process releases every lease found at start-up.
    let released = store
        .release_leases(None, t + 8)
        .await
        .ctx("release_leases(all)")?;
    for id in [a1, a2, b] {
        ensure!(
            released.contains(&id),
            "release_leases(None) left {id} leased: {released:?}"
        );
    }
    ensure!(
        !released.contains(&done),
        "release_leases(None) touched a done event"
    );
    let rec = store
        .get_event(done)
        .await
        .ctx("get_event")?
        .ok_or("event vanished")?;
    ensure!(
        rec.status == EventStatus::Done,
        "the done event is {:?}",
        rec.status
    );
    let none = store
        .release_leases(Some("node-a"), t + 9)
        .await
        .ctx("release_leases")?;
    ensure!(none.is_empty(), "a second release found {none:?}");
    Ok(())
}

/// A run cut off before it finished is closed as interrupted by the next claim of its event,
/// in the claim's transaction; the actions it had begun without an outcome become in doubt
/// (visible in the run and listed), settled once the same key succeeds.
pub async fn check_interrupted_runs<S: Store>(store: &S) -> CheckResult {
    let c = charter("interrupted");
    let t = now();
    let lease = Duration::from_secs(10);
    let event_id = stored(store, event(&c, None, t)).await?;
    let got = store.claim(&c, "w1", 1, 1, lease, t).await.ctx("claim")?;
    ensure!(
        got.len() == 1 && got[0].interrupted.is_empty(),
        "first claim: {got:?}"
    );
    let run = Uuid::now_v7();
    let key = |a: &str| format!("{event_id}:{a}");
    let params = |a: &str| serde_json::json!({"action": a, "order": 7});
    let done = ActionRecord {
        action: "a0_log".to_string(),
        idempotency_key: key("a0_log"),
        params: params("a0_log"),
        status: ActionStatus::Succeeded,
        attempts: Vec::new(),
    };
    let failed_attempt = AttemptRecord {
        attempt: 1,
        started_at: t + 2,
        duration_ms: 5,
        status: Some(503),
        error: Some("HTTP 503".to_string()),
        ok: false,
    };
    store
        .record_run(vec![
            RunWrite::Start {
                run_id: run,
                event_id,
                charter: c.clone(),
                charter_version: "v-1".to_string(),
                mode: "live".to_string(),
                now: t + 1,
            },
            RunWrite::BeginAction {
                run_id: run,
                action: "a0_log".to_string(),
                idempotency_key: key("a0_log"),
                params: params("a0_log"),
            },
            RunWrite::FinishAction {
                run_id: run,
                record: done.clone(),
            },
            RunWrite::BeginAction {
                run_id: run,
                action: "a1_push".to_string(),
                idempotency_key: key("a1_push"),
                params: params("a1_push"),
            },
            RunWrite::BeginAction {
                run_id: run,
                action: "a2_mail".to_string(),
                idempotency_key: key("a2_mail"),
                params: params("a2_mail"),
            },
            RunWrite::Attempt {
                run_id: run,
                action: "a2_mail".to_string(),
                attempt: failed_attempt,
            },
        ])
        .await
        .ctx("record_run (intents)")?;
    // While the run is in flight its unfinished actions are not reported, and nothing is
    // in doubt.
    let runs = store.runs_for_event(event_id).await.ctx("runs_for_event")?;
    ensure!(
        runs.len() == 1 && runs[0].outcome.is_none() && runs[0].actions == vec![done.clone()],
        "in flight: {runs:?}"
    );
    let listed = store
        .list_in_doubt(InDoubtFilter {
            charter: Some(c.clone()),
            ..Default::default()
        })
        .await
        .ctx("list_in_doubt")?;
    ensure!(listed.is_empty(), "in doubt while in flight: {listed:?}");

    // w1 dies; its lease expires and w2 claims the event: the run is closed in that claim.
    let at = t + 10_001;
    let got = store.claim(&c, "w2", 1, 1, lease, at).await.ctx("claim")?;
    let want = vec![InterruptedRun {
        run_id: run,
        in_doubt: vec![
            InDoubtRef {
                action: "a1_push".to_string(),
                idempotency_key: key("a1_push"),
            },
            InDoubtRef {
                action: "a2_mail".to_string(),
                idempotency_key: key("a2_mail"),
            },
        ],
    }];
    ensure!(
        got.len() == 1 && got[0].attempt == 2 && got[0].interrupted == want,
        "the claim after the crash returned {got:?}, want interrupted {want:?}"
    );
    let runs = store.runs_for_event(event_id).await.ctx("runs_for_event")?;
    let r = runs.first().ok_or("the run vanished")?;
    ensure!(
        runs.len() == 1
            && r.outcome == Some(RunOutcome::Interrupted)
            && r.finished_at == Some(at)
            && r.error.as_deref() == Some(INTERRUPTED_ERROR),
        "the interrupted run reads {r:?}"
    );
    let statuses: Vec<(&str, ActionStatus, usize)> = r
        .actions
        .iter()
        .map(|a| (a.action.as_str(), a.status, a.attempts.len()))
        .collect();
    ensure!(
        statuses
            == vec![
                ("a0_log", ActionStatus::Succeeded, 0),
                ("a1_push", ActionStatus::InDoubt, 0),
                ("a2_mail", ActionStatus::InDoubt, 1),
            ]
            && r.actions[1].idempotency_key == key("a1_push")
            && r.actions[1].params == params("a1_push"),
        "the interrupted run's actions: {:?}",
        r.actions
    );
    let listed = store
        .list_in_doubt(InDoubtFilter {
            charter: Some(c.clone()),
            ..Default::default()
        })
        .await
        .ctx("list_in_doubt")?;
    let seen: Vec<(&str, u32, bool)> = listed
        .iter()
        .map(|a| (a.action.as_str(), a.attempts, a.settled))
        .collect();
    ensure!(
        seen == vec![("a2_mail", 1, false), ("a1_push", 0, false)],
        "listed in doubt (newest first): {listed:?}"
    );
    let a1 = &listed[1];
    ensure!(
        a1.run_id == run
            && a1.event_id == event_id
            && a1.charter == c
            && a1.idempotency_key == key("a1_push")
            && a1.params == params("a1_push")
            && a1.started_at == t + 1
            && a1.interrupted_at == Some(at),
        "listed in-doubt action: {a1:?}"
    );
    let other = store
        .list_in_doubt(InDoubtFilter {
            charter: Some(charter("interrupted-other")),
            ..Default::default()
        })
        .await
        .ctx("list_in_doubt")?;
    ensure!(other.is_empty(), "another charter lists {other:?}");
    let limited = store
        .list_in_doubt(InDoubtFilter {
            charter: Some(c.clone()),
            limit: 1,
            ..Default::default()
        })
        .await
        .ctx("list_in_doubt")?;
    ensure!(
        limited.len() == 1 && limited[0].action == "a2_mail",
        "limit 1: {limited:?}"
    );

    // The next run sends a1 again with the same key and it succeeds: settled.
    let run2 = Uuid::now_v7();
    store
        .record_run(vec![
            RunWrite::Start {
                run_id: run2,
                event_id,
                charter: c.clone(),
                charter_version: "v-1".to_string(),
                mode: "live".to_string(),
                now: at + 1,
            },
            RunWrite::BeginAction {
                run_id: run2,
                action: "a1_push".to_string(),
                idempotency_key: key("a1_push"),
                params: params("a1_push"),
            },
            RunWrite::FinishAction {
                run_id: run2,
                record: ActionRecord {
                    action: "a1_push".to_string(),
                    idempotency_key: key("a1_push"),
                    params: params("a1_push"),
                    status: ActionStatus::Succeeded,
                    attempts: Vec::new(),
                },
            },
            RunWrite::FinishRun {
                run_id: run2,
                route: Some(0),
                outcome: RunOutcome::Failed,
                error: Some("a2_mail dead-lettered".to_string()),
                now: at + 2,
            },
            RunWrite::Release {
                event_id,
                worker: "w2".to_string(),
                status: EventStatus::Failed,
                now: at + 2,
            },
        ])
        .await
        .ctx("record_run (second run)")?;
    let listed = store
        .list_in_doubt(InDoubtFilter {
            charter: Some(c.clone()),
            ..Default::default()
        })
        .await
        .ctx("list_in_doubt")?;
    let seen: Vec<(&str, bool)> = listed
        .iter()
        .map(|a| (a.action.as_str(), a.settled))
        .collect();
    ensure!(
        seen == vec![("a2_mail", false), ("a1_push", true)],
        "after a1 succeeded again: {listed:?}"
    );
    let unsettled = store
        .list_in_doubt(InDoubtFilter {
            charter: Some(c.clone()),
            unsettled: true,
            limit: 0,
        })
        .await
        .ctx("list_in_doubt(unsettled)")?;
    ensure!(
        unsettled.len() == 1 && unsettled[0].action == "a2_mail",
        "unsettled only: {unsettled:?}"
    );

    // A finished run is never closed again: a replay's claim finds nothing interrupted.
    store
        .requeue(Requeue::Event(event_id), at + 3)
        .await
        .ctx("requeue")?;
    let got = store
        .claim(&c, "w3", 1, 1, lease, at + 4)
        .await
        .ctx("claim")?;
    ensure!(
        got.len() == 1 && got[0].interrupted.is_empty(),
        "a replay's claim closed finished runs: {got:?}"
    );
    let runs = store.runs_for_event(event_id).await.ctx("runs_for_event")?;
    ensure!(
        runs.len() == 2
            && runs[0].outcome == Some(RunOutcome::Interrupted)
            && runs[1].outcome == Some(RunOutcome::Failed),
        "runs after the replay's claim: {:?}",
        runs.iter().map(|r| r.outcome).collect::<Vec<_>>()
    );
    Ok(())
}

/// Requeue one event (not while processing) or all failed events, per charter or overall.
pub async fn check_requeue<S: Store>(store: &S) -> CheckResult {
    let c = charter("requeue");
    let other = charter("requeue-other");
    let t = now();
    let lease = Duration::from_secs(60);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(stored(store, event(&c, None, t)).await?);
    }
    let other_id = stored(store, event(&other, None, t)).await?;
    let claimed = store.claim(&c, "w", 4, 10, lease, t).await.ctx("claim")?;
    ensure!(claimed.len() == 4, "claimed {} of 4", claimed.len());
    let oc = store
        .claim(&other, "w", 1, 10, lease, t)
        .await
        .ctx("claim")?;
    ensure!(oc.len() == 1, "claimed {} of the other charter", oc.len());
    // ids[0], ids[1] failed; ids[2] done; ids[3] still processing; other failed.
    for (id, status) in [
        (ids[0], EventStatus::Failed),
        (ids[1], EventStatus::Failed),
        (ids[2], EventStatus::Done),
        (other_id, EventStatus::Failed),
    ] {
        ensure!(
            store.release(id, "w", status, t + 1).await.ctx("release")?,
            "release of {id} failed"
        );
    }

    let none = store
        .requeue(Requeue::Event(ids[3]), t + 2)
        .await
        .ctx("requeue")?;
    ensure!(none.is_empty(), "requeued an event in processing: {none:?}");
    let done = store
        .requeue(Requeue::Event(ids[2]), t + 2)
        .await
        .ctx("requeue")?;
    ensure!(
        done == vec![ids[2]],
        "requeue of a done event returned {done:?}"
    );
    let missing = store
        .requeue(Requeue::Event(Uuid::now_v7()), t + 2)
        .await
        .ctx("requeue")?;
    ensure!(
        missing.is_empty(),
        "requeue of an unknown id returned {missing:?}"
    );

    let failed = store
        .requeue(
            Requeue::AllFailed {
                charter: Some(c.clone()),
            },
            t + 3,
        )
        .await
        .ctx("requeue")?;
    let mut want = vec![ids[0], ids[1]];
    want.sort();
    ensure!(
        failed == want,
        "requeue of the charter's failed returned {failed:?}"
    );
    for id in [ids[0], ids[1], ids[2]] {
        let rec = store
            .get_event(id)
            .await
            .ctx("get_event")?
            .ok_or("event vanished")?;
        ensure!(
            rec.status == EventStatus::Pending,
            "requeued event is {:?}",
            rec.status
        );
    }
    let rec = store
        .get_event(other_id)
        .await
        .ctx("get_event")?
        .ok_or("event vanished")?;
    ensure!(
        rec.status == EventStatus::Failed,
        "another charter's failed event was requeued"
    );

    let all = store
        .requeue(Requeue::AllFailed { charter: None }, t + 4)
        .await
        .ctx("requeue")?;
    ensure!(
        all.contains(&other_id) && !all.contains(&ids[3]),
        "requeue of all failed returned {all:?}"
    );

    // Requeued events are claimable again, oldest first, with another attempt.
    let again = store
        .claim(&c, "w2", 10, 10, lease, t + 5)
        .await
        .ctx("claim")?;
    let again_ids: Vec<Uuid> = again.iter().map(|c| c.event.id).collect();
    ensure!(
        again_ids == ids[..3],
        "after requeue claimed {again_ids:?}, want {:?}",
        &ids[..3]
    );
    ensure!(
        again.iter().all(|c| c.attempt == 2),
        "requeued events claimed with attempts {:?}",
        again.iter().map(|c| c.attempt).collect::<Vec<_>>()
    );
    Ok(())
}

/// A run's decision, actions, attempts and outcome read back exactly; a succeeded action's
/// key is remembered across runs.
pub async fn check_run_lifecycle<S: Store>(store: &S) -> CheckResult {
    let c = charter("runs");
    let t = now();
    let event_id = stored(store, event(&c, None, t)).await?;
    let run1 = Uuid::now_v7();
    let run2 = Uuid::now_v7();
    let key_a = format!("{}:assign", Uuid::now_v7());
    let key_b = format!("{}:notify", Uuid::now_v7());

    ensure!(
        store
            .runs_for_event(event_id)
            .await
            .ctx("runs_for_event")?
            .is_empty(),
        "a new event already has runs"
    );
    store
        .start_run(run1, event_id, &c, "v-abc", "live", t)
        .await
        .ctx("start_run")?;
    let decision = Decision {
        label: Some("billing".to_string()),
        confidence: 0.93,
        fields: BTreeMap::from([
            ("order_id".to_string(), serde_json::json!("ORD-17")),
            ("urgency".to_string(), serde_json::json!("high")),
        ]),
        stage: DecisionStage::Embedded,
        reason: "embedded classifier above 0.85".to_string(),
        stages: vec![StageAnswer {
            stage: DecisionStage::Embedded,
            label: Some("billing".to_string()),
            confidence: Some(0.93),
            accepted: true,
            note: String::new(),
            usage: None,
        }],
        escalation: None,
    };
    store
        .record_decision(run1, &decision)
        .await
        .ctx("record_decision")?;

    let params_a = serde_json::json!({"method": "PUT", "path": "/api/v2/tickets/42", "json": {"group_id": 42}});
    let params_b = serde_json::json!({"channel": "#x", "text": "hi"});
    ensure!(
        !store
            .action_succeeded(&key_a)
            .await
            .ctx("action_succeeded")?,
        "a fresh key is reported succeeded"
    );
    store
        .begin_action(run1, "assign_billing", &key_a, &params_a)
        .await
        .ctx("begin_action")?;
    let attempts_a = vec![
        AttemptRecord {
            attempt: 1,
            started_at: t + 1,
            duration_ms: 120,
            status: Some(503),
            error: Some("service unavailable".to_string()),
            ok: false,
        },
        AttemptRecord {
            attempt: 2,
            started_at: t + 300,
            duration_ms: 80,
            status: Some(200),
            error: None,
            ok: true,
        },
    ];
    for a in &attempts_a {
        store
            .record_attempt(run1, "assign_billing", a)
            .await
            .ctx("record_attempt")?;
    }
    ensure!(
        !store
            .action_succeeded(&key_a)
            .await
            .ctx("action_succeeded")?,
        "a key is succeeded before finish_action said so"
    );
    let action_a = ActionRecord {
        action: "assign_billing".to_string(),
        idempotency_key: key_a.clone(),
        params: params_a.clone(),
        status: ActionStatus::Succeeded,
        attempts: attempts_a.clone(),
    };
    store
        .finish_action(run1, &action_a)
        .await
        .ctx("finish_action")?;

    store
        .begin_action(run1, "notify", &key_b, &params_b)
        .await
        .ctx("begin_action")?;
    let attempts_b = vec![AttemptRecord {
        attempt: 1,
        started_at: t + 400,
        duration_ms: 5_000,
        status: None,
        error: Some("timed out".to_string()),
        ok: false,
    }];
    store
        .record_attempt(run1, "notify", &attempts_b[0])
        .await
        .ctx("record_attempt")?;
    let action_b = ActionRecord {
        action: "notify".to_string(),
        idempotency_key: key_b.clone(),
        params: params_b,
        status: ActionStatus::DeadLettered,
        attempts: attempts_b,
    };
    store
        .finish_action(run1, &action_b)
        .await
        .ctx("finish_action")?;
    store
        .finish_run(
            run1,
            Some(1),
            RunOutcome::Failed,
            Some("notify dead-lettered"),
            t + 6_000,
        )
        .await
        .ctx("finish_run")?;

    ensure!(
        store
            .action_succeeded(&key_a)
            .await
            .ctx("action_succeeded")?,
        "a succeeded action's key is not remembered"
    );
    ensure!(
        !store
            .action_succeeded(&key_b)
            .await
            .ctx("action_succeeded")?,
        "a dead-lettered action's key is reported succeeded"
    );

    // A second run (a replay): the first action is already done.
    store
        .start_run(run2, event_id, &c, "v-def", "live", t + 10_000)
        .await
        .ctx("start_run")?;
    let action_a2 = ActionRecord {
        status: ActionStatus::AlreadyDone,
        attempts: Vec::new(),
        ..action_a.clone()
    };
    store
        .finish_action(run2, &action_a2)
        .await
        .ctx("finish_action without begin")?;
    store
        .finish_run(run2, None, RunOutcome::Completed, None, t + 10_500)
        .await
        .ctx("finish_run")?;

    let runs = store.runs_for_event(event_id).await.ctx("runs_for_event")?;
    ensure!(
        runs.len() == 2,
        "runs_for_event returned {} runs",
        runs.len()
    );
    let r1 = &runs[0];
    ensure!(
        r1.id == run1 && runs[1].id == run2,
        "runs are not oldest first"
    );
    ensure!(
        r1.event_id == event_id
            && r1.charter == c
            && r1.charter_version == "v-abc"
            && r1.mode == "live"
            && r1.started_at == t
            && r1.finished_at == Some(t + 6_000)
            && r1.outcome == Some(RunOutcome::Failed)
            && r1.route == Some(1)
            && r1.error.as_deref() == Some("notify dead-lettered"),
        "run 1 header differs: {r1:?}"
    );
    ensure!(
        r1.decision.as_ref() == Some(&decision),
        "decision differs: {:?}",
        r1.decision
    );
    ensure!(
        r1.actions == vec![action_a, action_b],
        "run 1 actions differ: {:?}",
        r1.actions
    );
    let r2 = &runs[1];
    ensure!(
        r2.decision.is_none()
            && r2.route.is_none()
            && r2.error.is_none()
            && r2.outcome == Some(RunOutcome::Completed)
            && r2.actions == vec![action_a2],
        "run 2 differs: {r2:?}"
    );

    // Runs of other events are not mixed in.
    let lonely = stored(store, event(&c, None, t)).await?;
    ensure!(
        store
            .runs_for_event(lonely)
            .await
            .ctx("runs_for_event")?
            .is_empty(),
        "an event without runs lists runs"
    );
    Ok(())
}

/// `record_run` applies several run writes in one transaction with the meaning of the
/// single methods: the intent batch (start, decision, begin) leaves a run with its decision
/// and no finished action; the outcome batch (attempt, finish, measurement, finish run,
/// release) finishes all of it; a failing write commits none of its batch; a release
/// without the lease is reported, not an error, and the rest of its batch commits.
pub async fn check_record_run<S: Store>(store: &S) -> CheckResult {
    let c = charter("recrun");
    let t = now();
    let event_id = stored(store, event(&c, None, t)).await?;
    let lease = Duration::from_secs(60);
    let got = store.claim(&c, "w1", 1, 1, lease, t).await.ctx("claim")?;
    ensure!(got.len() == 1, "claimed {} events", got.len());
    let run = Uuid::now_v7();
    let key = format!("{}:update", Uuid::now_v7());
    let params = serde_json::json!({"method": "PUT", "target": "/api/tickets/7", "json": {"label": "billing"}});
    let decision = Decision {
        label: Some("billing".to_string()),
        confidence: 0.91,
        fields: BTreeMap::new(),
        stage: DecisionStage::Embedded,
        reason: "embedded classifier: billing (0.910) reaches threshold 0.6".to_string(),
        stages: vec![StageAnswer {
            stage: DecisionStage::Embedded,
            label: Some("billing".to_string()),
            confidence: Some(0.91),
            accepted: true,
            note: "embedded".to_string(),
            usage: None,
        }],
        escalation: None,
    };
    let w = store
        .record_run(vec![
            RunWrite::Start {
                run_id: run,
                event_id,
                charter: c.clone(),
                charter_version: "v-1".to_string(),
                mode: "live".to_string(),
                now: t,
            },
            RunWrite::Decision {
                run_id: run,
                decision: decision.clone(),
            },
            RunWrite::BeginAction {
                run_id: run,
                action: "update".to_string(),
                idempotency_key: key.clone(),
                params: params.clone(),
            },
        ])
        .await
        .ctx("record_run (intent)")?;
    ensure!(
        w.released.is_none() && !w.already_succeeded,
        "no release and a fresh key, yet {w:?}"
    );
    let runs = store.runs_for_event(event_id).await.ctx("runs_for_event")?;
    ensure!(
        runs.len() == 1
            && runs[0].id == run
            && runs[0].decision.as_ref() == Some(&decision)
            && runs[0].finished_at.is_none()
            && runs[0].actions.is_empty(),
        "after the intent batch: {runs:?}"
    );
    ensure!(
        !store.action_succeeded(&key).await.ctx("action_succeeded")?,
        "a begun action's key is reported succeeded"
    );

    let attempt = AttemptRecord {
        attempt: 1,
        started_at: t + 1,
        duration_ms: 3,
        status: Some(200),
        error: None,
        ok: true,
    };
    let record = ActionRecord {
        action: "update".to_string(),
        idempotency_key: key.clone(),
        params: params.clone(),
        status: ActionStatus::Succeeded,
        attempts: vec![attempt.clone()],
    };
    let w = store
        .record_run(vec![
            RunWrite::Attempt {
                run_id: run,
                action: "update".to_string(),
                attempt,
            },
            RunWrite::FinishAction {
                run_id: run,
                record: record.clone(),
            },
            RunWrite::Measurement(NewMeasurement {
                charter: c.clone(),
                name: "ticket_routed".to_string(),
                run_id: Some(run),
                event_id: Some(event_id),
                value: 1.0,
                at: t + 5,
                detail: serde_json::json!({"action": "update"}),
            }),
            RunWrite::FinishRun {
                run_id: run,
                route: Some(0),
                outcome: RunOutcome::Completed,
                error: None,
                now: t + 6,
            },
            RunWrite::Release {
                event_id,
                worker: "w1".to_string(),
                status: EventStatus::Done,
                now: t + 6,
            },
        ])
        .await
        .ctx("record_run (outcome)")?;
    ensure!(w.released == Some(true), "release with the lease: {w:?}");
    let runs = store.runs_for_event(event_id).await.ctx("runs_for_event")?;
    ensure!(
        runs.len() == 1
            && runs[0].finished_at == Some(t + 6)
            && runs[0].outcome == Some(RunOutcome::Completed)
            && runs[0].route == Some(0)
            && runs[0].actions == vec![record],
        "after the outcome batch: {runs:?}"
    );
    ensure!(
        store.action_succeeded(&key).await.ctx("action_succeeded")?,
        "the succeeded key is not remembered"
    );
    let ev = store
        .get_event(event_id)
        .await
        .ctx("get_event")?
        .ok_or("event vanished")?;
    ensure!(ev.status == EventStatus::Done, "event is {:?}", ev.status);
    let routed = measured(store, &c, "ticket_routed", t - 1_000, t + 60_000).await?;
    ensure!(routed == 1, "{routed} ticket_routed measurements, want 1");

    // All or nothing: a decision for an unknown run fails the batch, and its start is gone.
    let run2 = Uuid::now_v7();
    let failed = store
        .record_run(vec![
            RunWrite::Start {
                run_id: run2,
                event_id,
                charter: c.clone(),
                charter_version: "v-1".to_string(),
                mode: "live".to_string(),
                now: t + 10,
            },
            RunWrite::Decision {
                run_id: Uuid::now_v7(),
                decision: decision.clone(),
            },
        ])
        .await;
    ensure!(failed.is_err(), "a batch with a broken write succeeded");
    let runs = store.runs_for_event(event_id).await.ctx("runs_for_event")?;
    ensure!(runs.len() == 1, "a failed batch left {} runs", runs.len());
    // An action of a run that does not exist is "not found", and nothing is written.
    let ghost = Uuid::now_v7();
    let orphan = store
        .record_run(vec![RunWrite::BeginAction {
            run_id: ghost,
            action: "update".to_string(),
            idempotency_key: format!("ghost-{ghost}"),
            params: serde_json::json!({}),
        }])
        .await;
    ensure!(
        matches!(orphan, Err(crate::StoreError::NotFound(_))),
        "an action of an unknown run answered {orphan:?}"
    );

    // A release without the lease says so; the batch's other writes stand.
    let w = store
        .record_run(vec![
            RunWrite::Start {
                run_id: run2,
                event_id,
                charter: c.clone(),
                charter_version: "v-1".to_string(),
                mode: "live".to_string(),
                now: t + 20,
            },
            RunWrite::FinishRun {
                run_id: run2,
                route: None,
                outcome: RunOutcome::NoRoute,
                error: Some("no route matched".to_string()),
                now: t + 21,
            },
            RunWrite::Release {
                event_id,
                worker: "w1".to_string(),
                status: EventStatus::Failed,
                now: t + 21,
            },
        ])
        .await
        .ctx("record_run (stale release)")?;
    ensure!(
        w.released == Some(false),
        "release without the lease: {w:?}"
    );
    let runs = store.runs_for_event(event_id).await.ctx("runs_for_event")?;
    ensure!(
        runs.len() == 2 && runs[1].outcome == Some(RunOutcome::NoRoute),
        "the stale batch's run: {runs:?}"
    );
    let ev = store
        .get_event(event_id)
        .await
        .ctx("get_event")?
        .ok_or("event vanished")?;
    ensure!(
        ev.status == EventStatus::Done,
        "a stale release changed the event to {:?}",
        ev.status
    );

    // An intent for a key that already succeeded is not written, and the batch says so.
    let run3 = Uuid::now_v7();
    let w = store
        .record_run(vec![
            RunWrite::Start {
                run_id: run3,
                event_id,
                charter: c.clone(),
                charter_version: "v-1".to_string(),
                mode: "live".to_string(),
                now: t + 30,
            },
            RunWrite::BeginAction {
                run_id: run3,
                action: "update".to_string(),
                idempotency_key: key.clone(),
                params: params.clone(),
            },
        ])
        .await
        .ctx("record_run (intent for a succeeded key)")?;
    ensure!(w.already_succeeded, "a succeeded key's intent: {w:?}");
    let runs = store.runs_for_event(event_id).await.ctx("runs_for_event")?;
    ensure!(
        runs.len() == 3 && runs[2].id == run3 && runs[2].actions.is_empty(),
        "the succeeded key's intent was written: {runs:?}"
    );
    Ok(())
}

/// A claim carries what a run needs before deciding: the charter's stored mode override and
/// each event's latest human resolution (none for an event nobody resolved).
pub async fn check_claim_context<S: Store>(store: &S) -> CheckResult {
    let c = charter("claimctx");
    let t = now();
    let resolved = stored(store, event(&c, None, t)).await?;
    let plain = stored(store, event(&c, None, t + 1)).await?;
    let lease = Duration::from_secs(60);
    let before = store.claim(&c, "w1", 10, 10, lease, t).await.ctx("claim")?;
    ensure!(
        before.len() == 2
            && before
                .iter()
                .all(|c| c.mode_override.is_none() && c.resolution.is_none()),
        "claimed without an override or resolution: {before:?}"
    );
    for (id, status) in [
        (resolved, EventStatus::Waiting),
        (plain, EventStatus::Failed),
    ] {
        store
            .release(id, "w1", status, t + 2)
            .await
            .ctx("release")?;
    }
    let esc = store
        .create_escalation(NewEscalation {
            id: Uuid::now_v7(),
            run_id: None,
            event_id: resolved,
            charter: c.clone(),
            reason: "low_confidence".into(),
            detail: serde_json::json!({}),
            target: None,
            created_at: t + 3,
        })
        .await
        .ctx("create_escalation")?;
    let decision = HumanDecision {
        label: "billing".into(),
        fields: BTreeMap::new(),
    };
    let r = store
        .resolve_escalation(esc.id, &decision, "lead", t + 4)
        .await
        .ctx("resolve")?
        .ok_or("resolving did not win")?;
    let mode = ModeOverride {
        charter: c.clone(),
        mode: "live".into(),
        base: "shadow".into(),
        by: "ops".into(),
        at: t + 5,
    };
    store.set_mode(mode.clone()).await.ctx("set_mode")?;
    let ids = store
        .requeue(Requeue::Event(resolved), t + 6)
        .await
        .ctx("requeue")?;
    ensure!(ids == vec![resolved], "requeued {ids:?}");
    let ids = store
        .requeue(Requeue::Event(plain), t + 6)
        .await
        .ctx("requeue")?;
    ensure!(ids == vec![plain], "requeued {ids:?}");
    let mut after = store
        .claim(&c, "w1", 10, 10, lease, t + 7)
        .await
        .ctx("claim again")?;
    after.sort_by_key(|c| c.event.id);
    ensure!(after.len() == 2, "claimed {} events", after.len());
    ensure!(
        after
            .iter()
            .all(|c| c.mode_override.as_ref() == Some(&mode)),
        "the override is not carried: {after:?}"
    );
    ensure!(
        after[0].event.id == resolved && after[0].resolution.as_ref() == Some(&r),
        "the resolved event's claim: {:?}",
        after[0]
    );
    ensure!(
        after[1].event.id == plain && after[1].resolution.is_none(),
        "the other event's claim: {:?}",
        after[1]
    );
    Ok(())
}

/// Listing is newest first and honours charter, status, time range and limit.
/// Runs across events: newest first, filtered by charter, outcome, running, start time and
/// limit, each with its event and finished actions.
pub async fn check_list_runs<S: Store>(store: &S) -> CheckResult {
    let c = charter("runs");
    let other = charter("runs-other");
    let t = now();
    let start = |run_id: Uuid, event_id: Uuid, charter: &str, at: UnixMillis| RunWrite::Start {
        run_id,
        event_id,
        charter: charter.to_string(),
        charter_version: "v-1".to_string(),
        mode: "live".to_string(),
        now: at,
    };
    let finish = |run_id: Uuid, outcome: RunOutcome, at: UnixMillis| RunWrite::FinishRun {
        run_id,
        route: Some(0),
        outcome,
        error: (outcome == RunOutcome::Failed).then(|| "the helpdesk said 500".to_string()),
        now: at,
    };
    let mut runs = Vec::new();
    let mut events = Vec::new();
    for i in 0..3 {
        let event_id = stored(store, event(&c, None, t + i * 1_000)).await?;
        let run = Uuid::now_v7();
        store
            .record_run(vec![start(run, event_id, &c, t + i * 1_000)])
            .await
            .ctx("record_run (start)")?;
        runs.push(run);
        events.push(event_id);
    }
    let key = format!("{}:update", Uuid::now_v7());
    let attempt = AttemptRecord {
        attempt: 1,
        started_at: t + 10,
        duration_ms: 4,
        status: Some(200),
        error: None,
        ok: true,
    };
    let record = ActionRecord {
        action: "update".to_string(),
        idempotency_key: key.clone(),
        params: serde_json::json!({"method": "PUT"}),
        status: ActionStatus::Succeeded,
        attempts: vec![attempt.clone()],
    };
    store
        .record_run(vec![
            RunWrite::BeginAction {
                run_id: runs[0],
                action: "update".to_string(),
                idempotency_key: key,
                params: record.params.clone(),
            },
            RunWrite::Attempt {
                run_id: runs[0],
                action: "update".to_string(),
                attempt,
            },
            RunWrite::FinishAction {
                run_id: runs[0],
                record: record.clone(),
            },
            finish(runs[0], RunOutcome::Completed, t + 20),
            finish(runs[1], RunOutcome::Failed, t + 1_020),
        ])
        .await
        .ctx("record_run (finish)")?;
    let elsewhere = stored(store, event(&other, None, t + 500)).await?;
    store
        .record_run(vec![start(Uuid::now_v7(), elsewhere, &other, t + 500)])
        .await
        .ctx("record_run (other charter)")?;

    let of_c = |f: RunFilter| RunFilter {
        charter: Some(c.clone()),
        ..f
    };
    let ids = |f: RunFilter| async move {
        store
            .list_runs(f)
            .await
            .map(|v| v.into_iter().map(|r| r.id).collect::<Vec<Uuid>>())
            .ctx("list_runs")
    };
    let all = store
        .list_runs(of_c(RunFilter::default()))
        .await
        .ctx("list_runs")?;
    ensure!(
        all.iter().map(|r| r.id).collect::<Vec<_>>() == vec![runs[2], runs[1], runs[0]],
        "newest first: {all:?}"
    );
    ensure!(
        all.iter().map(|r| r.event_id).collect::<Vec<_>>() == vec![events[2], events[1], events[0]]
            && all.iter().all(|r| r.charter == c),
        "each run names its event and charter: {all:?}"
    );
    ensure!(
        all[2].actions == vec![record]
            && all[2].outcome == Some(RunOutcome::Completed)
            && all[2].finished_at == Some(t + 20),
        "the completed run carries its action and attempt: {:?}",
        all[2]
    );
    ensure!(
        all[1].error.as_deref() == Some("the helpdesk said 500") && all[0].outcome.is_none(),
        "the failed run's error, the open run's missing outcome: {all:?}"
    );
    let completed = ids(of_c(RunFilter {
        outcome: Some(RunOutcome::Completed),
        ..Default::default()
    }))
    .await?;
    ensure!(
        completed == vec![runs[0]],
        "outcome completed: {completed:?}"
    );
    let running = ids(of_c(RunFilter {
        running: true,
        ..Default::default()
    }))
    .await?;
    ensure!(running == vec![runs[2]], "running: {running:?}");
    let since = ids(of_c(RunFilter {
        since: Some(t + 1_000),
        ..Default::default()
    }))
    .await?;
    ensure!(since == vec![runs[2], runs[1]], "since: {since:?}");
    let until = ids(of_c(RunFilter {
        until: Some(t + 1_000),
        ..Default::default()
    }))
    .await?;
    ensure!(until == vec![runs[0]], "until: {until:?}");
    let limited = ids(of_c(RunFilter {
        limit: 2,
        ..Default::default()
    }))
    .await?;
    ensure!(limited == vec![runs[2], runs[1]], "limit 2: {limited:?}");
    let everywhere = ids(RunFilter {
        since: Some(t),
        until: Some(t + 2_001),
        ..Default::default()
    })
    .await?;
    ensure!(
        everywhere.len() >= 4 && everywhere.contains(&runs[0]),
        "without a charter every charter's runs are listed: {everywhere:?}"
    );
    Ok(())
}

pub async fn check_list_events<S: Store>(store: &S) -> CheckResult {
    let c = charter("list");
    let t = now();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(stored(store, event(&c, None, t + i * 1_000)).await?);
    }
    let filter = |f: EventFilter| EventFilter {
        charter: Some(c.clone()),
        ..f
    };
    let list = |f: EventFilter| async move {
        store
            .list_events(f)
            .await
            .map(|v| v.into_iter().map(|r| r.event.id).collect::<Vec<Uuid>>())
            .ctx("list_events")
    };

    let newest_first: Vec<Uuid> = ids.iter().rev().copied().collect();
    let all = list(filter(EventFilter::default())).await?;
    ensure!(all == newest_first, "listing is not newest first: {all:?}");
    let top2 = list(filter(EventFilter {
        limit: 2,
        ..EventFilter::default()
    }))
    .await?;
    ensure!(top2 == newest_first[..2], "limit 2 returned {top2:?}");

    // since is inclusive, until exclusive.
    let range = list(filter(EventFilter {
        since: Some(t + 1_000),
        until: Some(t + 4_000),
        ..EventFilter::default()
    }))
    .await?;
    ensure!(
        range == vec![ids[3], ids[2], ids[1]],
        "time range returned {range:?}"
    );

    // Status filter: claim the two oldest and fail one.
    let claimed = store
        .claim(&c, "w", 2, 10, Duration::from_secs(60), t)
        .await
        .ctx("claim")?;
    ensure!(claimed.len() == 2, "claimed {}", claimed.len());
    ensure!(
        store
            .release(ids[0], "w", EventStatus::Failed, t + 1)
            .await
            .ctx("release")?,
        "release failed"
    );
    let failed = list(filter(EventFilter {
        status: Some(EventStatus::Failed),
        ..EventFilter::default()
    }))
    .await?;
    ensure!(failed == vec![ids[0]], "status failed returned {failed:?}");
    let processing = list(filter(EventFilter {
        status: Some(EventStatus::Processing),
        ..EventFilter::default()
    }))
    .await?;
    ensure!(
        processing == vec![ids[1]],
        "status processing returned {processing:?}"
    );
    let pending = list(filter(EventFilter {
        status: Some(EventStatus::Pending),
        ..EventFilter::default()
    }))
    .await?;
    ensure!(
        pending == newest_first[..4],
        "status pending returned {pending:?}"
    );

    // Without a charter filter, other charters' events appear too (and ours among them).
    let any = store
        .list_events(EventFilter {
            limit: 1_000_000,
            ..EventFilter::default()
        })
        .await
        .ctx("list_events")?;
    let seen: HashSet<Uuid> = any.iter().map(|r| r.event.id).collect();
    ensure!(
        ids.iter().all(|id| seen.contains(id)),
        "unfiltered listing misses events"
    );
    ensure!(
        any.windows(2).all(|w| w[0].event.id > w[1].event.id),
        "unfiltered listing is not newest first"
    );
    Ok(())
}

/// Pending counts include pending events and expired leases, per charter.
pub async fn check_pending_counts<S: Store>(store: &S) -> CheckResult {
    let c = charter("counts");
    let t = now();
    for _ in 0..3 {
        stored(store, event(&c, None, t)).await?;
    }
    let count = |counts: Vec<(String, u64)>| {
        counts
            .into_iter()
            .find(|(name, _)| *name == c)
            .map(|(_, n)| n)
            .unwrap_or(0)
    };
    let n = count(store.pending_counts().await.ctx("pending_counts")?);
    ensure!(n == 3, "pending count {n}, want 3");
    // One claimed under a long lease is not pending; one under an already-expired lease is.
    store
        .claim(&c, "w", 1, 10, Duration::from_secs(3600), t)
        .await
        .ctx("claim")?;
    store
        .claim(&c, "w", 1, 10, Duration::from_millis(1), t - 60_000)
        .await
        .ctx("claim")?;
    let n = count(store.pending_counts().await.ctx("pending_counts")?);
    ensure!(n == 2, "pending count after claims {n}, want 2");
    Ok(())
}

/// An event with a started run, for the approval and escalation checks.
async fn event_with_run<S: Store>(store: &S, c: &str) -> Result<(Uuid, Uuid), String> {
    let id = stored(store, event(c, None, now())).await?;
    let run = Uuid::now_v7();
    store
        .start_run(run, id, c, "v1", "live", now())
        .await
        .ctx("start_run")?;
    Ok((id, run))
}

fn new_approval(
    c: &str,
    event_id: Uuid,
    run_id: Uuid,
    hash: &str,
    expires_at: Option<UnixMillis>,
) -> NewApproval {
    NewApproval {
        id: Uuid::now_v7(),
        run_id,
        event_id,
        charter: c.to_string(),
        action: "reply".to_string(),
        params: serde_json::json!({"json": {"body": "hello ✓"}, "target": "/t/1"}),
        params_hash: hash.to_string(),
        reviewers: vec!["lead".to_string(), "ops".to_string()],
        created_at: now(),
        expires_at,
        on_expiry: Some("reject".to_string()),
    }
}

/// Approvals: created once per (event, action, hash), read back exactly, listed oldest
/// first by charter and status; approve with an edit and reject with a reason stick, and a
/// decided approval cannot be decided again.
pub async fn check_approvals<S: Store>(store: &S) -> CheckResult {
    let c = charter("approvals");
    let (ev, run) = event_with_run(store, &c).await?;
    let first = new_approval(&c, ev, run, "h1", Some(now() + 60_000));
    let a = store.create_approval(first.clone()).await.ctx("create")?;
    ensure!(a.id == first.id, "create returned another id: {a:?}");
    ensure!(
        a.status == ApprovalStatus::Pending,
        "new approval is {:?}",
        a.status
    );
    ensure!(a.params == first.params, "params changed: {:?}", a.params);
    ensure!(
        a.reviewers == first.reviewers,
        "reviewers changed: {:?}",
        a.reviewers
    );
    ensure!(a.expires_at == first.expires_at, "deadline changed");
    ensure!(
        a.on_expiry.as_deref() == Some("reject"),
        "on_expiry changed"
    );
    // The same key again (a re-run) gives back the stored approval, not a second one.
    let again = store
        .create_approval(new_approval(&c, ev, run, "h1", None))
        .await
        .ctx("create again")?;
    ensure!(
        again.id == first.id,
        "a second approval was created for the same key"
    );
    let other = store
        .create_approval(new_approval(&c, ev, run, "h2", None))
        .await
        .ctx("create other")?;
    ensure!(
        other.id != first.id,
        "another hash must be another approval"
    );
    let found = store.find_approval(ev, "reply", "h2").await.ctx("find")?;
    ensure!(
        found.as_ref().map(|f| f.id) == Some(other.id),
        "find: {found:?}"
    );
    ensure!(
        store
            .find_approval(ev, "reply", "nope")
            .await
            .ctx("find")?
            .is_none(),
        "found an approval for an unknown hash"
    );
    let pending = store
        .list_approvals(ApprovalFilter {
            charter: Some(c.clone()),
            status: Some(ApprovalStatus::Pending),
            ..Default::default()
        })
        .await
        .ctx("list")?;
    let ids: Vec<Uuid> = pending.iter().map(|p| p.id).collect();
    ensure!(
        ids == vec![first.id, other.id],
        "pending list (oldest first): {ids:?}"
    );

    let edited = serde_json::json!({"json": {"body": "edited"}, "target": "/t/1"});
    let won = store
        .decide_approval(
            first.id,
            Verdict::Approve {
                edited: Some((edited.clone(), "h1-edited".into())),
            },
            "lead",
            now(),
        )
        .await
        .ctx("approve")?;
    let won = won.ok_or("approving a pending approval did not win")?;
    ensure!(
        won.status == ApprovalStatus::Approved,
        "approved is {:?}",
        won.status
    );
    ensure!(
        won.decided_by.as_deref() == Some("lead"),
        "decided_by {:?}",
        won.decided_by
    );
    ensure!(
        won.edited_params.as_ref() == Some(&edited),
        "edit lost: {won:?}"
    );
    ensure!(
        won.edited_hash.as_deref() == Some("h1-edited"),
        "edit hash lost"
    );
    ensure!(
        won.effective_params() == &edited,
        "effective params are not the edit"
    );
    ensure!(
        won.params == first.params,
        "the original params must be kept"
    );
    let second = store
        .decide_approval(
            first.id,
            Verdict::Reject {
                reason: "late".into(),
            },
            "ops",
            now(),
        )
        .await
        .ctx("decide again")?;
    ensure!(second.is_none(), "a decided approval was decided again");

    let rejected = store
        .decide_approval(
            other.id,
            Verdict::Reject {
                reason: "wrong customer".into(),
            },
            "ops",
            now(),
        )
        .await
        .ctx("reject")?
        .ok_or("rejecting a pending approval did not win")?;
    ensure!(
        rejected.status == ApprovalStatus::Rejected,
        "rejected is {:?}",
        rejected.status
    );
    ensure!(
        rejected.comment.as_deref() == Some("wrong customer"),
        "reason lost"
    );
    let got = store.get_approval(other.id).await.ctx("get")?;
    ensure!(
        got.as_ref() == Some(&rejected),
        "get differs from the decided record: {got:?}"
    );
    ensure!(
        store
            .decide_approval(
                Uuid::now_v7(),
                Verdict::Approve { edited: None },
                "x",
                now()
            )
            .await
            .ctx("decide unknown")?
            .is_none(),
        "deciding an unknown approval won"
    );
    let left = store
        .list_approvals(ApprovalFilter {
            charter: Some(c.clone()),
            status: Some(ApprovalStatus::Pending),
            ..Default::default()
        })
        .await
        .ctx("list")?;
    ensure!(left.is_empty(), "decided approvals still listed as pending");
    Ok(())
}

/// Concurrent approvals of one item: exactly one call wins.
pub async fn check_concurrent_approval<S: Store>(store: &S) -> CheckResult {
    let c = charter("approve-race");
    let (ev, run) = event_with_run(store, &c).await?;
    let a = store
        .create_approval(new_approval(&c, ev, run, "race", None))
        .await
        .ctx("create")?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let s = store.clone();
        tasks.spawn(async move {
            let verdict = if i % 2 == 0 {
                Verdict::Approve { edited: None }
            } else {
                Verdict::Reject {
                    reason: format!("no {i}"),
                }
            };
            s.decide_approval(a.id, verdict, &format!("r{i}"), now())
                .await
        });
    }
    let mut wins = 0;
    while let Some(r) = tasks.join_next().await {
        if r.map_err(|e| e.to_string())?.ctx("decide")?.is_some() {
            wins += 1;
        }
    }
    ensure!(
        wins == 1,
        "{wins} concurrent decisions won, expected exactly 1"
    );
    Ok(())
}

/// An approval past its deadline cannot be approved; expiry marks it once.
pub async fn check_approval_expiry<S: Store>(store: &S) -> CheckResult {
    let c = charter("approve-expiry");
    let (ev, run) = event_with_run(store, &c).await?;
    let t = now();
    let due = store
        .create_approval(new_approval(&c, ev, run, "due", Some(t + 1_000)))
        .await
        .ctx("create")?;
    let later = store
        .create_approval(new_approval(&c, ev, run, "later", Some(t + 3_600_000)))
        .await
        .ctx("create")?;
    let late = store
        .decide_approval(due.id, Verdict::Approve { edited: None }, "lead", t + 1_000)
        .await
        .ctx("approve at the deadline")?;
    ensure!(late.is_none(), "an approval was approved at its deadline");
    let expired = store.expire_approvals(t + 2_000).await.ctx("expire")?;
    let mine: Vec<Uuid> = expired
        .iter()
        .filter(|a| a.charter == c)
        .map(|a| a.id)
        .collect();
    ensure!(
        mine == vec![due.id],
        "expired {mine:?}, expected only the due one"
    );
    ensure!(
        expired.iter().all(|a| a.status == ApprovalStatus::Expired),
        "expired records are not marked expired"
    );
    let again = store
        .expire_approvals(t + 2_000)
        .await
        .ctx("expire again")?;
    ensure!(
        !again.iter().any(|a| a.id == due.id),
        "an approval was expired twice"
    );
    let got = store.get_approval(due.id).await.ctx("get")?.ok_or("lost")?;
    ensure!(
        got.status == ApprovalStatus::Expired,
        "status after expiry {:?}",
        got.status
    );
    ensure!(
        store
            .decide_approval(due.id, Verdict::Approve { edited: None }, "lead", t)
            .await
            .ctx("approve expired")?
            .is_none(),
        "an expired approval was approved"
    );
    let still = store
        .get_approval(later.id)
        .await
        .ctx("get")?
        .ok_or("lost")?;
    ensure!(
        still.status == ApprovalStatus::Pending,
        "a future deadline expired"
    );
    Ok(())
}

/// Escalations: one open per event, resolved once with the human decision, which is then
/// the event's latest resolution.
pub async fn check_escalations<S: Store>(store: &S) -> CheckResult {
    let c = charter("escalations");
    let (ev, run) = event_with_run(store, &c).await?;
    let detail = serde_json::json!({"payload": {"a": 1}, "stages": [{"stage": "embedded"}]});
    let new = NewEscalation {
        id: Uuid::now_v7(),
        run_id: Some(run),
        event_id: ev,
        charter: c.clone(),
        reason: "low_confidence".into(),
        detail: detail.clone(),
        target: Some("support-leads".into()),
        created_at: now(),
    };
    ensure!(
        store.latest_resolution(ev).await.ctx("latest")?.is_none(),
        "a resolution before any escalation"
    );
    let e = store.create_escalation(new.clone()).await.ctx("create")?;
    ensure!(
        e.id == new.id && e.status == EscalationStatus::Open,
        "created {e:?}"
    );
    ensure!(
        e.detail == detail && e.reason == "low_confidence",
        "evidence changed: {e:?}"
    );
    let dup = store
        .create_escalation(NewEscalation {
            id: Uuid::now_v7(),
            ..new.clone()
        })
        .await
        .ctx("create again")?;
    ensure!(dup.id == new.id, "a second open escalation for one event");
    let open = store
        .list_escalations(EscalationFilter {
            charter: Some(c.clone()),
            status: Some(EscalationStatus::Open),
            limit: 0,
            ..EscalationFilter::default()
        })
        .await
        .ctx("list")?;
    ensure!(
        open.len() == 1 && open[0].id == new.id,
        "open list: {open:?}"
    );
    let mut fields = BTreeMap::new();
    fields.insert("order_id".to_string(), serde_json::json!("ORD-7"));
    let decision = HumanDecision {
        label: "billing".into(),
        fields,
    };
    let r = store
        .resolve_escalation(new.id, &decision, "lead", now())
        .await
        .ctx("resolve")?
        .ok_or("resolving an open escalation did not win")?;
    ensure!(
        r.status == EscalationStatus::Resolved,
        "resolved is {:?}",
        r.status
    );
    ensure!(
        r.resolution.as_ref() == Some(&decision),
        "decision lost: {r:?}"
    );
    ensure!(r.resolved_by.as_deref() == Some("lead"), "resolved_by lost");
    ensure!(
        store
            .resolve_escalation(new.id, &decision, "other", now())
            .await
            .ctx("resolve again")?
            .is_none(),
        "an escalation was resolved twice"
    );
    let latest = store.latest_resolution(ev).await.ctx("latest")?;
    ensure!(latest.as_ref() == Some(&r), "latest resolution: {latest:?}");
    // Resolved, the event may be escalated again (a later run fails again).
    let next = store
        .create_escalation(NewEscalation {
            id: Uuid::now_v7(),
            reason: "dead_letter".into(),
            ..new.clone()
        })
        .await
        .ctx("create after resolve")?;
    ensure!(
        next.id != new.id && next.status == EscalationStatus::Open,
        "{next:?}"
    );
    let got = store.get_escalation(new.id).await.ctx("get")?;
    ensure!(got.as_ref() == Some(&r), "get: {got:?}");
    Ok(())
}

/// The audit log: appended entries read back newest first, filtered by charter and actor.
pub async fn check_audit_log<S: Store>(store: &S) -> CheckResult {
    let c = charter("audit");
    let mut seqs = Vec::new();
    for (i, actor) in ["alice", "bob", "alice"].iter().enumerate() {
        let seq = store
            .append_audit(NewAuditEntry {
                at: now(),
                actor: actor.to_string(),
                action: format!("test.step{i}"),
                charter: Some(c.clone()),
                target: Some(format!("t{i}")),
                detail: serde_json::json!({"i": i}),
            })
            .await
            .ctx("append")?;
        seqs.push(seq);
    }
    ensure!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence not increasing: {seqs:?}"
    );
    let all = store
        .list_audit(AuditFilter {
            charter: Some(c.clone()),
            ..Default::default()
        })
        .await
        .ctx("list")?;
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    ensure!(
        actions == ["test.step2", "test.step1", "test.step0"],
        "newest first: {actions:?}"
    );
    ensure!(all[2].detail == serde_json::json!({"i": 0}), "detail lost");
    ensure!(all[2].target.as_deref() == Some("t0"), "target lost");
    let alice = store
        .list_audit(AuditFilter {
            charter: Some(c.clone()),
            actor: Some("alice".into()),
            ..Default::default()
        })
        .await
        .ctx("list by actor")?;
    ensure!(
        alice.len() == 2,
        "actor filter gave {} entries",
        alice.len()
    );
    let one = store
        .list_audit(AuditFilter {
            charter: Some(c.clone()),
            limit: 1,
            ..Default::default()
        })
        .await
        .ctx("list with limit")?;
    ensure!(one.len() == 1 && one[0].seq == seqs[2], "limit: {one:?}");
    Ok(())
}

/// Source cursors: absent until stored, replaced by each put, kept per (charter, source),
/// and a source lock can be taken (and taken again once released).
pub async fn check_source_state<S: Store>(store: &S) -> CheckResult {
    let c = charter("sources");
    let other = charter("sources-other");
    let got = store
        .get_cursor(&c, "poll")
        .await
        .ctx("get_cursor (none)")?;
    ensure!(
        got.is_none(),
        "a cursor never stored reads as {got:?}, expected none"
    );
    store
        .put_cursor(&c, "poll", "2026-01-01T00:00:00Z", now())
        .await
        .ctx("put_cursor (first)")?;
    store
        .put_cursor(&c, "schedule", "1767225600000", now())
        .await
        .ctx("put_cursor (schedule)")?;
    store
        .put_cursor(&other, "poll", "other", now())
        .await
        .ctx("put_cursor (other charter)")?;
    store
        .put_cursor(&c, "poll", "page-2 ünïcode", now())
        .await
        .ctx("put_cursor (replace)")?;
    let got = store.get_cursor(&c, "poll").await.ctx("get_cursor")?;
    ensure!(
        got.as_deref() == Some("page-2 ünïcode"),
        "after replacing, the cursor reads {got:?}, expected the last one stored"
    );
    let got = store
        .get_cursor(&c, "schedule")
        .await
        .ctx("get_cursor (schedule)")?;
    ensure!(
        got.as_deref() == Some("1767225600000"),
        "the schedule cursor reads {got:?}; sources of one charter must be kept apart"
    );
    let got = store
        .get_cursor(&other, "poll")
        .await
        .ctx("get_cursor (other)")?;
    ensure!(
        got.as_deref() == Some("other"),
        "another charter's cursor reads {got:?}; charters must be kept apart"
    );

    let lock = store
        .try_lock_source(&c, "poll")
        .await
        .ctx("try_lock_source")?;
    ensure!(lock.is_some(), "the first lock of a source was refused");
    let second = store
        .try_lock_source(&c, "schedule")
        .await
        .ctx("try_lock_source (another source)")?;
    ensure!(
        second.is_some(),
        "a lock on another source was refused while the first is held"
    );
    drop(lock);
    drop(second);
    // A dropped lock is released by the server (PostgreSQL: the session closes); allow it
    // a moment.
    let mut again = None;
    for _ in 0..50 {
        again = store
            .try_lock_source(&c, "poll")
            .await
            .ctx("try_lock_source (again)")?;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(
        again.is_some(),
        "a released source lock could not be taken again"
    );
    Ok(())
}

/// Mode overrides (set, replace, list, clear; independent of pause), holding an event for a
/// human (not while processing; a held event is not claimed until requeued), and requeueing
/// the events received in a time range.
pub async fn check_operator<S: Store>(store: &S) -> CheckResult {
    let c = charter("operator");
    let t = now();
    ensure!(
        store
            .mode_override(&c)
            .await
            .ctx("mode_override")?
            .is_none(),
        "an unknown charter has a mode override"
    );
    ensure!(
        !store.clear_mode(&c, t).await.ctx("clear_mode")?,
        "clearing a mode that was never set reported a change"
    );
    store.set_paused(&c, true, t).await.ctx("set_paused")?;
    let live = crate::ModeOverride {
        charter: c.clone(),
        mode: "live".into(),
        base: "shadow".into(),
        by: "ops-admin".into(),
        at: t,
    };
    store.set_mode(live.clone()).await.ctx("set_mode")?;
    let got = store.mode_override(&c).await.ctx("mode_override")?;
    ensure!(got.as_ref() == Some(&live), "mode read back as {got:?}");
    ensure!(
        store.is_paused(&c).await.ctx("is_paused")?,
        "setting the mode resumed a paused charter"
    );
    store.set_paused(&c, false, t + 1).await.ctx("set_paused")?;
    let got = store.mode_override(&c).await.ctx("mode_override")?;
    ensure!(
        got.as_ref() == Some(&live),
        "resume changed the mode: {got:?}"
    );
    let shadow = crate::ModeOverride {
        mode: "shadow".into(),
        base: "live".into(),
        at: t + 2,
        ..live.clone()
    };
    store
        .set_mode(shadow.clone())
        .await
        .ctx("set_mode (replace)")?;
    let all = store.mode_overrides().await.ctx("mode_overrides")?;
    let mine: Vec<_> = all.iter().filter(|m| m.charter == c).collect();
    ensure!(
        mine == vec![&shadow],
        "mode_overrides lists {mine:?} for the charter"
    );
    ensure!(
        store.clear_mode(&c, t + 3).await.ctx("clear_mode")?,
        "clearing a set mode reported no change"
    );
    ensure!(
        store
            .mode_override(&c)
            .await
            .ctx("mode_override")?
            .is_none(),
        "the mode override survived clear_mode"
    );
    ensure!(
        !store
            .mode_overrides()
            .await
            .ctx("mode_overrides")?
            .iter()
            .any(|m| m.charter == c),
        "mode_overrides still lists a cleared charter"
    );

    // Holding: a pending event goes to waiting and is not claimed; one in processing is
    // left alone; a requeue brings a held event back.
    let held = stored(store, event(&c, None, t)).await?;
    let busy = stored(store, event(&c, None, t)).await?;
    let lease = Duration::from_secs(60);
    ensure!(
        store.hold_event(held, t + 4).await.ctx("hold_event")?,
        "holding a pending event reported no change"
    );
    let claimed = store
        .claim(&c, "w", 10, 10, lease, t + 5)
        .await
        .ctx("claim")?;
    ensure!(
        claimed.len() == 1 && claimed[0].event.id == busy,
        "claimed {:?}, expected only the event not held",
        claimed.iter().map(|c| c.event.id).collect::<Vec<_>>()
    );
    ensure!(
        !store.hold_event(busy, t + 6).await.ctx("hold_event")?,
        "an event in processing was held"
    );
    ensure!(
        !store
            .hold_event(Uuid::now_v7(), t + 6)
            .await
            .ctx("hold_event")?,
        "holding an unknown event reported a change"
    );
    let rec = store
        .get_event(held)
        .await
        .ctx("get_event")?
        .ok_or("held event vanished")?;
    ensure!(
        rec.status == EventStatus::Waiting,
        "a held event is {:?}",
        rec.status
    );
    let back = store
        .requeue(Requeue::Event(held), t + 7)
        .await
        .ctx("requeue")?;
    ensure!(
        back == vec![held],
        "requeue of a held event returned {back:?}"
    );

    // A time range: received in [since, until), any status but processing, this charter.
    let r = charter("operator-range");
    let other = charter("operator-range-other");
    let base = t - 100_000;
    let before = stored(store, event(&r, None, base)).await?;
    let first = stored(store, event(&r, None, base + 10)).await?;
    let second = stored(store, event(&r, None, base + 20)).await?;
    let at_end = stored(store, event(&r, None, base + 30)).await?;
    let elsewhere = stored(store, event(&other, None, base + 10)).await?;
    let got = store.claim(&r, "w", 10, 10, lease, t).await.ctx("claim")?;
    ensure!(got.len() == 4, "claimed {} of 4", got.len());
    ensure!(
        store
            .release(first, "w", EventStatus::Done, t)
            .await
            .ctx("release")?,
        "release failed"
    );
    // `second` stays in processing.
    let ids = store
        .requeue(
            Requeue::Received {
                charter: Some(r.clone()),
                since: Some(base + 5),
                until: Some(base + 30),
            },
            t + 8,
        )
        .await
        .ctx("requeue range")?;
    ensure!(
        ids == vec![first],
        "range requeue returned {ids:?}, expected only {first} (not {before}, the one in processing {second}, the one at `until` {at_end}, or another charter's {elsewhere})"
    );
    let open = store
        .requeue(
            Requeue::Received {
                charter: Some(other.clone()),
                since: None,
                until: None,
            },
            t + 9,
        )
        .await
        .ctx("requeue open range")?;
    ensure!(
        open == vec![elsewhere],
        "an open range of the other charter returned {open:?}"
    );
    Ok(())
}

/// How many `name` measurements `charter`'s report counts in `[since, until)`.
async fn measured<S: Store>(
    store: &S,
    charter: &str,
    name: &str,
    since: UnixMillis,
    until: UnixMillis,
) -> Result<u64, String> {
    let report = store
        .report(ReportQuery {
            charter: charter.to_string(),
            since,
            until,
            buckets: 1,
        })
        .await
        .ctx("report")?;
    Ok(report.measurements.get(name).map_or(0, |m| m.count))
}

/// Claim `charter`'s next event (it must be `expected`) and record a whole run for it: an
/// action begun, attempted and finished (succeeded, key `key`), a measurement, the run's
/// end and the event's release with `status`. Returns the run id.
async fn run_to_the_end<S: Store>(
    store: &S,
    charter: &str,
    expected: Uuid,
    key: &str,
    status: EventStatus,
    t: UnixMillis,
) -> Result<Uuid, String> {
    let got = store
        .claim(charter, "w1", 1, 1, Duration::from_secs(60), t)
        .await
        .ctx("claim")?;
    ensure!(
        got.len() == 1 && got[0].event.id == expected,
        "claimed {:?}, expected {expected}",
        got.iter().map(|c| c.event.id).collect::<Vec<_>>()
    );
    let run = Uuid::now_v7();
    let params = serde_json::json!({"method": "PUT", "target": "/t/1"});
    store
        .record_run(vec![
            RunWrite::Start {
                run_id: run,
                event_id: expected,
                charter: charter.to_string(),
                charter_version: "v-1".to_string(),
                mode: "live".to_string(),
                now: t,
            },
            RunWrite::BeginAction {
                run_id: run,
                action: "update".to_string(),
                idempotency_key: key.to_string(),
                params: params.clone(),
            },
        ])
        .await
        .ctx("record_run (intent)")?;
    let attempt = AttemptRecord {
        attempt: 1,
        started_at: t,
        duration_ms: 2,
        status: Some(200),
        error: None,
        ok: true,
    };
    store
        .record_run(vec![
            RunWrite::Attempt {
                run_id: run,
                action: "update".to_string(),
                attempt: attempt.clone(),
            },
            RunWrite::FinishAction {
                run_id: run,
                record: ActionRecord {
                    action: "update".to_string(),
                    idempotency_key: key.to_string(),
                    params,
                    status: ActionStatus::Succeeded,
                    attempts: vec![attempt],
                },
            },
            RunWrite::Measurement(NewMeasurement {
                charter: charter.to_string(),
                name: "kept".to_string(),
                run_id: Some(run),
                event_id: Some(expected),
                value: 1.0,
                at: t,
                detail: serde_json::json!({}),
            }),
            RunWrite::FinishRun {
                run_id: run,
                route: Some(0),
                outcome: RunOutcome::Completed,
                error: None,
                now: t,
            },
            RunWrite::Release {
                event_id: expected,
                worker: "w1".to_string(),
                status,
                now: t,
            },
        ])
        .await
        .ctx("record_run (outcome)")?;
    Ok(run)
}

/// Retention: a purge removes old finished events with their runs, actions, extras,
/// approvals, escalations and notifications, and old rejected payloads; it keeps recent
/// events, events not finished or still waiting for a human, measurements and succeeded
/// keys; a purged event's dedupe key is free again; a second purge finds nothing.
pub async fn check_retention<S: Store>(store: &S) -> CheckResult {
    use crate::decision::{EXTRA_DRAFT, RunExtra};
    use crate::notifications::{NewNotification, NotificationKind};
    let c = charter("retention");
    let t = now();
    let (old, cutoff) = (t - 10 * 86_400_000, t - 86_400_000);
    // An event received at `at`, with the UUIDv7 of that moment (as ingest gives it).
    let received = |key: &str, at: UnixMillis| {
        let ms = u64::try_from(at).unwrap_or(0);
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            ms / 1000,
            u32::try_from(ms % 1000).unwrap_or(0) * 1_000_000,
        );
        NewEvent {
            id: Uuid::new_v7(ts),
            ..event(&c, Some(key), at)
        }
    };
    // Created (so claimed) in this order.
    let done = stored(store, received("done", old)).await?;
    let failed_open = stored(store, received("failed-open", old + 1)).await?;
    let recent = stored(store, received("recent", t)).await?;

    let run = run_to_the_end(
        store,
        &c,
        done,
        &format!("{c}-done"),
        EventStatus::Done,
        old,
    )
    .await?;
    let approval = store
        .create_approval(new_approval(&c, done, run, "h-done", None))
        .await
        .ctx("create_approval")?;
    store
        .decide_approval(approval.id, Verdict::Approve { edited: None }, "lead", t)
        .await
        .ctx("decide_approval")?;
    let escalation = |event_id, run_id| NewEscalation {
        id: Uuid::now_v7(),
        run_id: Some(run_id),
        event_id,
        charter: c.clone(),
        reason: "low_confidence".into(),
        detail: serde_json::json!({}),
        target: None,
        created_at: old,
    };
    let resolved = store
        .create_escalation(escalation(done, run))
        .await
        .ctx("create_escalation")?;
    let decision = HumanDecision {
        label: "billing".into(),
        fields: BTreeMap::new(),
    };
    store
        .resolve_escalation(resolved.id, &decision, "lead", t)
        .await
        .ctx("resolve_escalation")?;
    let notify = |item, kind| NewNotification {
        id: Uuid::now_v7(),
        kind,
        item_id: item,
        charter: c.clone(),
        target: "hooks:/in".into(),
        created_at: old,
    };
    store
        .enqueue_notifications(vec![
            notify(approval.id, NotificationKind::Approval),
            notify(resolved.id, NotificationKind::Escalation),
        ])
        .await
        .ctx("enqueue_notifications")?;
    store
        .record_run_extra(&RunExtra {
            run_id: run,
            event_id: done,
            kind: EXTRA_DRAFT.into(),
            name: "update".into(),
            body: serde_json::json!({"text": "draft"}),
            at: old,
        })
        .await
        .ctx("record_run_extra")?;

    let failed_run = run_to_the_end(
        store,
        &c,
        failed_open,
        &format!("{c}-failed"),
        EventStatus::Failed,
        old,
    )
    .await?;
    let open = store
        .create_escalation(escalation(failed_open, failed_run))
        .await
        .ctx("create_escalation (open)")?;
    run_to_the_end(
        store,
        &c,
        recent,
        &format!("{c}-recent"),
        EventStatus::Done,
        t,
    )
    .await?;
    // Old but never claimed.
    let pending = stored(store, received("pending", old + 2)).await?;
    let rejected = |received_at| RejectedPayload {
        id: Uuid::now_v7(),
        charter: c.clone(),
        source: "webhook:/hooks/x".to_string(),
        received_at,
        headers: BTreeMap::new(),
        body: "not json".to_string(),
        reasons: vec!["not JSON".to_string()],
    };
    let (old_rejected, new_rejected) = (rejected(old), rejected(t));
    store.reject(old_rejected.clone()).await.ctx("reject")?;
    store.reject(new_rejected.clone()).await.ctx("reject")?;

    let purged = store.purge(cutoff, Some(&c), 100).await.ctx("purge")?;
    ensure!(
        purged
            == crate::Purged {
                events: 1,
                runs: 1,
                rejected: 1
            },
        "the purge removed {purged:?}"
    );
    ensure!(
        store.get_event(done).await.ctx("get_event")?.is_none(),
        "the old finished event is still there"
    );
    ensure!(
        store
            .runs_for_event(done)
            .await
            .ctx("runs_for_event")?
            .is_empty()
            && store.run_extras(run).await.ctx("run_extras")?.is_empty(),
        "the purged event's runs or extras are still there"
    );
    ensure!(
        store
            .get_approval(approval.id)
            .await
            .ctx("get_approval")?
            .is_none()
            && store
                .get_escalation(resolved.id)
                .await
                .ctx("get_escalation")?
                .is_none(),
        "the purged event's approval or escalation is still there"
    );
    for item in [approval.id, resolved.id] {
        ensure!(
            store
                .list_notifications(Some(item), 10)
                .await
                .ctx("list_notifications")?
                .is_empty(),
            "a purged item's notification is still there"
        );
    }
    for (id, what) in [
        (failed_open, "a failed event with an open escalation"),
        (recent, "a recent event"),
        (pending, "an unfinished event"),
    ] {
        ensure!(
            store.get_event(id).await.ctx("get_event")?.is_some(),
            "{what} was purged"
        );
    }
    ensure!(
        store
            .get_escalation(open.id)
            .await
            .ctx("get_escalation")?
            .is_some_and(|e| e.status == EscalationStatus::Open),
        "the open escalation was purged"
    );
    let left: Vec<Uuid> = store
        .list_rejected(Some(c.clone()), 10)
        .await
        .ctx("list_rejected")?
        .into_iter()
        .map(|r| r.id)
        .collect();
    ensure!(left == vec![new_rejected.id], "rejected left: {left:?}");
    ensure!(
        store
            .action_succeeded(&format!("{c}-done"))
            .await
            .ctx("action_succeeded")?,
        "the purged run's succeeded key is forgotten"
    );
    let kept = measured(store, &c, "kept", old - 1_000, t + 60_000).await?;
    ensure!(kept == 3, "{kept} measurements after the purge, want 3");
    ensure!(
        store
            .purge(cutoff, Some(&c), 100)
            .await
            .ctx("purge")?
            .is_empty(),
        "a second purge found more"
    );
    ensure!(
        matches!(
            store.ingest(received("done", t)).await.ctx("ingest")?,
            IngestOutcome::Stored(_)
        ),
        "the purged event's dedupe key still dedupes"
    );
    Ok(())
}

/// The LLM response cache (expiry, replacement, keys kept apart), the LLM spend (per
/// charter and day, concurrent adds) and run extras (per run, latest per event,
/// replacement by run, kind and name).
pub async fn check_decision_store<S: Store>(store: &S) -> CheckResult {
    use crate::decision::{EXTRA_CONTEXT, EXTRA_DRAFT, RunExtra};
    let t = now();
    let key = format!("conf-cache-{}", Uuid::now_v7().simple());
    let other = format!("{key}-other");
    ensure!(
        store.cache_get(&key, t).await.ctx("cache_get")?.is_none(),
        "an unknown key is found in the cache"
    );
    store
        .cache_put(&key, "{\"label\":\"bug\"}", t, t + 60_000)
        .await
        .ctx("cache_put")?;
    let got = store.cache_get(&key, t + 1).await.ctx("cache_get")?;
    ensure!(
        got.as_deref() == Some("{\"label\":\"bug\"}"),
        "the cached value reads {got:?}"
    );
    ensure!(
        store
            .cache_get(&other, t + 1)
            .await
            .ctx("cache_get")?
            .is_none(),
        "a different key reads another key's value"
    );
    ensure!(
        store
            .cache_get(&key, t + 60_000)
            .await
            .ctx("cache_get")?
            .is_none(),
        "an expired entry is still served"
    );
    store
        .cache_put(&key, "second", t + 1, t + 120_000)
        .await
        .ctx("cache_put (replace)")?;
    let got = store.cache_get(&key, t + 60_000).await.ctx("cache_get")?;
    ensure!(
        got.as_deref() == Some("second"),
        "a replaced entry reads {got:?}"
    );

    // The LLM spend: per charter and day; adds accumulate, concurrent adds all count.
    use crate::decision::LlmSpend;
    let spender = charter("spend");
    let day = 20_000;
    ensure!(
        store.llm_spent(&spender, day).await.ctx("llm_spent")? == LlmSpend::default(),
        "a charter that spent nothing reads non-zero"
    );
    let first = LlmSpend {
        tokens: 150,
        cost: 0.25,
    };
    let total = store
        .add_llm_spend(&spender, day, first)
        .await
        .ctx("add_llm_spend")?;
    ensure!(total == first, "the first add returns {total:?}");
    let total = store
        .add_llm_spend(
            &spender,
            day,
            LlmSpend {
                tokens: 50,
                cost: 0.5,
            },
        )
        .await
        .ctx("add_llm_spend")?;
    ensure!(
        total.tokens == 200 && (total.cost - 0.75).abs() < 1e-9,
        "two adds total {total:?}"
    );
    let seven = LlmSpend {
        tokens: 7,
        cost: 0.0,
    };
    let (a, b, c, d) = tokio::join!(
        store.add_llm_spend(&spender, day, seven),
        store.add_llm_spend(&spender, day, seven),
        store.add_llm_spend(&spender, day, seven),
        store.add_llm_spend(&spender, day, seven),
    );
    for r in [a, b, c, d] {
        r.ctx("concurrent add_llm_spend")?;
    }
    let read = store.llm_spent(&spender, day).await.ctx("llm_spent")?;
    ensure!(
        read.tokens == 228 && (read.cost - 0.75).abs() < 1e-9,
        "after 4 concurrent adds of 7 tokens the day reads {read:?} (want 228 tokens)"
    );
    // Signed adjustments (a budget reservation given back, a settlement below it): they
    // count, and neither part goes below zero.
    let total = store
        .adjust_llm_spend(&spender, day, -28, -0.25)
        .await
        .ctx("adjust_llm_spend")?;
    ensure!(
        total.tokens == 200 && (total.cost - 0.5).abs() < 1e-9,
        "228 tokens less 28 read {total:?}"
    );
    let total = store
        .adjust_llm_spend(&spender, day, -1_000, -5.0)
        .await
        .ctx("adjust_llm_spend")?;
    ensure!(
        total == LlmSpend::default(),
        "an adjustment below zero leaves {total:?}"
    );
    let total = store
        .adjust_llm_spend(&spender, day, 228, 0.75)
        .await
        .ctx("adjust_llm_spend")?;
    ensure!(
        total.tokens == 228 && (total.cost - 0.75).abs() < 1e-9,
        "adding back reads {total:?}"
    );
    let fresh = store
        .adjust_llm_spend(&charter("spend-new"), day, -5, -1.0)
        .await
        .ctx("adjust_llm_spend")?;
    ensure!(
        fresh == LlmSpend::default(),
        "a first negative adjustment reads {fresh:?}"
    );
    ensure!(
        store.llm_spent(&spender, day + 1).await.ctx("llm_spent")? == LlmSpend::default(),
        "the next day starts with another day's spend"
    );
    ensure!(
        store
            .llm_spent(&charter("spend-other"), day)
            .await
            .ctx("llm_spent")?
            == LlmSpend::default(),
        "another charter reads this charter's spend"
    );

    // LLM rate windows: a window starts at its first request and admits `max`; the next
    // request is refused until the window's end, after which a new window starts; charters
    // are apart; concurrent takes never admit more than `max`.
    let rated = charter("rate");
    let take = |at: UnixMillis| store.take_llm_slot(&rated, at, 1_000, 2);
    ensure!(
        take(t).await.ctx("take_llm_slot")?.is_none(),
        "the first request is refused"
    );
    ensure!(
        take(t + 10).await.ctx("take_llm_slot")?.is_none(),
        "the second request of a window of 2 is refused"
    );
    let refused = take(t + 20).await.ctx("take_llm_slot")?;
    ensure!(
        refused == Some(t + 1_000),
        "a third request in the window answered {refused:?} (want refused until {})",
        t + 1_000
    );
    ensure!(
        take(t + 1_000).await.ctx("take_llm_slot")?.is_none(),
        "the next window does not admit"
    );
    ensure!(
        store
            .take_llm_slot(&charter("rate-other"), t + 20, 1_000, 2)
            .await
            .ctx("take_llm_slot")?
            .is_none(),
        "another charter shares the window"
    );
    let fresh = charter("rate-race");
    let (a, b, c3, d) = tokio::join!(
        store.take_llm_slot(&fresh, t, 60_000, 2),
        store.take_llm_slot(&fresh, t, 60_000, 2),
        store.take_llm_slot(&fresh, t, 60_000, 2),
        store.take_llm_slot(&fresh, t, 60_000, 2),
    );
    let admitted = [a, b, c3, d]
        .into_iter()
        .map(|r| r.ctx("concurrent take_llm_slot"))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(Option::is_none)
        .count();
    ensure!(
        admitted == 2,
        "{admitted} of 4 concurrent requests admitted by a window of 2"
    );

    let c = charter("extras");
    let event_id = stored(store, event(&c, None, t)).await?;
    let (run1, run2) = (Uuid::now_v7(), Uuid::now_v7());
    store
        .start_run(run1, event_id, &c, "v1", "live", t)
        .await
        .ctx("start_run")?;
    store
        .start_run(run2, event_id, &c, "v1", "live", t + 10)
        .await
        .ctx("start_run")?;
    let extra = |run_id, kind: &str, name: &str, body, at| RunExtra {
        run_id,
        event_id,
        kind: kind.to_string(),
        name: name.to_string(),
        body,
        at,
    };
    let ctx1 = extra(
        run1,
        EXTRA_CONTEXT,
        "customer",
        serde_json::json!({"ok": true, "value": {"tier": "gold", "ü": [1, 2.5, null]}}),
        t + 1,
    );
    let draft1 = extra(
        run1,
        EXTRA_DRAFT,
        "reply",
        serde_json::json!({"text": "first draft"}),
        t + 2,
    );
    store
        .record_run_extra(&ctx1)
        .await
        .ctx("record_run_extra")?;
    store
        .record_run_extra(&draft1)
        .await
        .ctx("record_run_extra")?;
    let draft2 = extra(
        run2,
        EXTRA_DRAFT,
        "reply",
        serde_json::json!({"text": "second draft"}),
        t + 11,
    );
    store
        .record_run_extra(&draft2)
        .await
        .ctx("record_run_extra")?;
    let got = store.run_extras(run1).await.ctx("run_extras")?;
    ensure!(
        got == vec![ctx1.clone(), draft1.clone()],
        "run 1's extras read {got:?}"
    );
    let latest = store
        .latest_run_extra(event_id, EXTRA_DRAFT, "reply")
        .await
        .ctx("latest_run_extra")?;
    ensure!(
        latest.as_ref() == Some(&draft2),
        "the latest draft reads {latest:?}"
    );
    ensure!(
        store
            .latest_run_extra(event_id, EXTRA_DRAFT, "other")
            .await
            .ctx("latest_run_extra")?
            .is_none(),
        "an extra of another name is returned"
    );
    let replaced = extra(
        run2,
        EXTRA_DRAFT,
        "reply",
        serde_json::json!({"text": "edited"}),
        t + 12,
    );
    store
        .record_run_extra(&replaced)
        .await
        .ctx("record_run_extra (replace)")?;
    let got = store.run_extras(run2).await.ctx("run_extras")?;
    ensure!(got == vec![replaced], "a replaced extra reads {got:?}");
    Ok(())
}

/// A payload whose strings hold U+0000 is stored and read back exactly, and so are the run
/// parameters and escalation evidence derived from it (PostgreSQL's JSONB cannot hold it).
pub async fn check_nul_characters<S: Store>(store: &S) -> CheckResult {
    let c = charter("nul");
    let mut ev = event(&c, Some("nul-1"), now());
    ev.payload = serde_json::json!({ "text": "before\u{0}after", "nested": ["\u{0}"] });
    let id = stored(store, ev.clone()).await?;
    let got = store
        .get_event(id)
        .await
        .ctx("get_event")?
        .ok_or("event with U+0000 not found after ingest")?;
    ensure!(
        got.event == ev,
        "event with U+0000 read back differs: {:?}",
        got.event.payload
    );
    let run = Uuid::now_v7();
    store
        .start_run(run, id, &c, "v1", "live", now())
        .await
        .ctx("start_run")?;
    let params = serde_json::json!({ "json": { "note": "x\u{0}y" } });
    store
        .begin_action(run, "reply", "key-nul", &params)
        .await
        .ctx("begin_action")?;
    store
        .finish_action(
            run,
            &ActionRecord {
                action: "reply".to_string(),
                idempotency_key: "key-nul".to_string(),
                params: params.clone(),
                status: ActionStatus::Succeeded,
                attempts: Vec::new(),
            },
        )
        .await
        .ctx("finish_action")?;
    let runs = store.runs_for_event(id).await.ctx("runs_for_event")?;
    let action = runs
        .iter()
        .flat_map(|r| r.actions.iter())
        .find(|a| a.action == "reply")
        .ok_or("action with U+0000 parameters not found")?;
    ensure!(
        action.params == params,
        "parameters with U+0000 read back differ: {:?}",
        action.params
    );
    let detail = serde_json::json!({ "payload": ev.payload });
    let esc = store
        .create_escalation(NewEscalation {
            id: Uuid::now_v7(),
            run_id: Some(run),
            event_id: id,
            charter: c.clone(),
            reason: "low_confidence".into(),
            detail: detail.clone(),
            target: None,
            created_at: now(),
        })
        .await
        .ctx("create_escalation")?;
    let back = store
        .get_escalation(esc.id)
        .await
        .ctx("get_escalation")?
        .ok_or("escalation with U+0000 evidence not found")?;
    ensure!(
        back.detail == detail,
        "escalation evidence with U+0000 reads back differently: {:?}",
        back.detail
    );
    Ok(())
}

/// A UI session reads back exactly while live, is gone once expired or deleted, and
/// creating one deletes the sessions expired by then.
pub async fn check_ui_sessions<S: Store>(store: &S) -> CheckResult {
    let now = now();
    let tag = Uuid::now_v7().simple().to_string();
    let live = crate::UiSession {
        id_hash: format!("live-{tag}"),
        name: "ann".into(),
        role: "reviewer".into(),
        charters: vec!["a".into(), "b — ü".into()],
        csrf: format!("csrf-{tag}"),
        grant: format!("grant-{tag}"),
        created_at: now,
        expires_at: now + 60_000,
    };
    let stale = crate::UiSession {
        id_hash: format!("stale-{tag}"),
        charters: vec![],
        created_at: now - 120_000,
        expires_at: now - 60_000,
        ..live.clone()
    };
    store
        .create_session(stale.clone())
        .await
        .ctx("create_session (already expired)")?;
    let got = store
        .session(&stale.id_hash, now - 90_000)
        .await
        .ctx("session (stale, before its expiry)")?;
    ensure!(
        got.as_ref() == Some(&stale),
        "a session before its expiry read back as {got:?}"
    );
    ensure!(
        store
            .session(&stale.id_hash, now)
            .await
            .ctx("session (stale)")?
            .is_none(),
        "an expired session was still returned"
    );
    store
        .create_session(live.clone())
        .await
        .ctx("create_session")?;
    let got = store
        .session(&live.id_hash, now)
        .await
        .ctx("session (live)")?;
    ensure!(
        got.as_ref() == Some(&live),
        "a live session read back as {got:?}, expected {live:?}"
    );
    ensure!(
        store
            .session(&stale.id_hash, now - 90_000)
            .await
            .ctx("session (stale, after a create)")?
            .is_none(),
        "creating a session did not delete one expired by then"
    );
    ensure!(
        store
            .session(&format!("other-{tag}"), now)
            .await
            .ctx("session (unknown)")?
            .is_none(),
        "an unknown id hash found a session"
    );
    ensure!(
        store
            .delete_session(&live.id_hash)
            .await
            .ctx("delete_session")?,
        "deleting a live session said there was none"
    );
    ensure!(
        !store
            .delete_session(&live.id_hash)
            .await
            .ctx("delete_session (again)")?,
        "deleting a session twice said it was there the second time"
    );
    ensure!(
        store
            .session(&live.id_hash, now)
            .await
            .ctx("session (deleted)")?
            .is_none(),
        "a deleted session was still returned"
    );
    Ok(())
}
