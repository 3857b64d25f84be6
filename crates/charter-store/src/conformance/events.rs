//! Checks of [`crate::EventStore`]: ingest, dedupe, JSON fidelity, rejected payloads, listings.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use charter_core::model::{ActionRecord, ActionStatus, EventStatus, RejectedPayload};
use uuid::Uuid;

use super::{CheckResult, Ctx, charter, event, now, stored};
use crate::{EventFilter, IngestOutcome, NewEscalation, Store};

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

/// Listing is newest first and honours charter, status, time range and limit.
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
