//! Checks of [`crate::RetentionStore`]: purging old data.

use std::collections::BTreeMap;
use std::time::Duration;

use charter_core::model::{
    ActionRecord, ActionStatus, AttemptRecord, EventStatus, NewEvent, RejectedPayload, RunOutcome,
    UnixMillis,
};
use uuid::Uuid;

use super::{CheckResult, Ctx, charter, event, measured, new_approval, now, stored};
use crate::{
    EscalationStatus, HumanDecision, IngestOutcome, NewEscalation, NewMeasurement, RunWrite, Store,
    Verdict,
};

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
    let c = charter("retention");
    let t = now();
    let (old, cutoff) = (t - 10 * 86_400_000, t - 86_400_000);
    // Created (so claimed) in this order.
    let done = stored(store, received(&c, "done", old)).await?;
    let failed_open = stored(store, received(&c, "failed-open", old + 1)).await?;
    let recent = stored(store, received(&c, "recent", t)).await?;
    let history = record_done_history(store, &c, done, old, t).await?;
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
        .create_escalation(escalation(&c, failed_open, failed_run, old))
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
    let pending = stored(store, received(&c, "pending", old + 2)).await?;
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
    purged_are_gone(store, done, &history).await?;
    let kept = Kept {
        failed_open,
        recent,
        pending,
        open: open.id,
        new_rejected: new_rejected.id,
    };
    kept_are_kept(store, &c, (old, cutoff, t), kept).await
}

/// An event received at `at`, with the UUIDv7 of that moment (as ingest gives it).
fn received(c: &str, key: &str, at: UnixMillis) -> NewEvent {
    let ms = u64::try_from(at).unwrap_or(0);
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        ms / 1000,
        u32::try_from(ms % 1000).unwrap_or(0) * 1_000_000,
    );
    NewEvent {
        id: Uuid::new_v7(ts),
        ..event(c, Some(key), at)
    }
}

fn escalation(c: &str, event_id: Uuid, run_id: Uuid, old: UnixMillis) -> NewEscalation {
    NewEscalation {
        id: Uuid::now_v7(),
        run_id: Some(run_id),
        event_id,
        charter: c.to_string(),
        reason: "low_confidence".into(),
        detail: serde_json::json!({}),
        target: None,
        created_at: old,
    }
}

/// What the old finished event of [`check_retention`] has, all to be purged with it.
struct DoneHistory {
    run: Uuid,
    approval: Uuid,
    resolved: Uuid,
}

/// Run the old event `done` to the end with an approval, a resolved escalation, their
/// notifications and a run extra.
async fn record_done_history<S: Store>(
    store: &S,
    c: &str,
    done: Uuid,
    old: UnixMillis,
    t: UnixMillis,
) -> Result<DoneHistory, String> {
    use crate::decision::{EXTRA_DRAFT, RunExtra};
    use crate::notifications::{NewNotification, NotificationKind};
    let run = run_to_the_end(store, c, done, &format!("{c}-done"), EventStatus::Done, old).await?;
    let approval = store
        .create_approval(new_approval(c, done, run, "h-done", None))
        .await
        .ctx("create_approval")?;
    store
        .decide_approval(approval.id, Verdict::Approve { edited: None }, "lead", t)
        .await
        .ctx("decide_approval")?;
    let resolved = store
        .create_escalation(escalation(c, done, run, old))
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
        charter: c.to_string(),
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
    Ok(DoneHistory {
        run,
        approval: approval.id,
        resolved: resolved.id,
    })
}

/// The purged event, its runs, extras, approval, escalation and notifications are gone.
async fn purged_are_gone<S: Store>(store: &S, done: Uuid, h: &DoneHistory) -> CheckResult {
    let run = h.run;
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
            .get_approval(h.approval)
            .await
            .ctx("get_approval")?
            .is_none()
            && store
                .get_escalation(h.resolved)
                .await
                .ctx("get_escalation")?
                .is_none(),
        "the purged event's approval or escalation is still there"
    );
    for item in [h.approval, h.resolved] {
        ensure!(
            store
                .list_notifications(Some(item), 10)
                .await
                .ctx("list_notifications")?
                .is_empty(),
            "a purged item's notification is still there"
        );
    }
    Ok(())
}

/// What [`check_retention`]'s purge must keep.
struct Kept {
    failed_open: Uuid,
    recent: Uuid,
    pending: Uuid,
    open: Uuid,
    new_rejected: Uuid,
}

/// Events not finished, recent or waiting for a human stay, with the open escalation, the
/// recent rejected payload, succeeded keys and measurements; a second purge finds nothing;
/// the purged event's dedupe key is free again.
async fn kept_are_kept<S: Store>(
    store: &S,
    c: &str,
    (old, cutoff, t): (UnixMillis, UnixMillis, UnixMillis),
    k: Kept,
) -> CheckResult {
    let Kept {
        failed_open,
        recent,
        pending,
        open,
        new_rejected,
    } = k;
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
            .get_escalation(open)
            .await
            .ctx("get_escalation")?
            .is_some_and(|e| e.status == EscalationStatus::Open),
        "the open escalation was purged"
    );
    let left: Vec<Uuid> = store
        .list_rejected(Some(c.to_string()), 10)
        .await
        .ctx("list_rejected")?
        .into_iter()
        .map(|r| r.id)
        .collect();
    ensure!(left == vec![new_rejected], "rejected left: {left:?}");
    ensure!(
        store
            .action_succeeded(&format!("{c}-done"))
            .await
            .ctx("action_succeeded")?,
        "the purged run's succeeded key is forgotten"
    );
    let kept = measured(store, c, "kept", old - 1_000, t + 60_000).await?;
    ensure!(kept == 3, "{kept} measurements after the purge, want 3");
    ensure!(
        store
            .purge(cutoff, Some(c), 100)
            .await
            .ctx("purge")?
            .is_empty(),
        "a second purge found more"
    );
    ensure!(
        matches!(
            store.ingest(received(c, "done", t)).await.ctx("ingest")?,
            IngestOutcome::Stored(_)
        ),
        "the purged event's dedupe key still dedupes"
    );
    Ok(())
}
