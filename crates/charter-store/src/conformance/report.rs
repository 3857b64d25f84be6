//! Conformance checks of [`crate::ReportStore`] and [`crate::AlertStore`], run by
//! the conformance tests against every backend.

use std::collections::BTreeMap;
use std::time::Duration;

use charter_core::model::{
    ActionRecord, ActionStatus, EventStatus, NewEvent, RejectedPayload, RunOutcome, UnixMillis,
};
use uuid::Uuid;

use super::CheckResult;
use crate::report::{IncidentState, NewIncident, NewMeasurement, ReportQuery};
use crate::{NewApproval, NewAuditEntry, NewEscalation, Store, Verdict};

fn ctx<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn charter(name: &str) -> String {
    let tag = Uuid::now_v7().simple().to_string();
    format!("conf-{name}-{}", &tag[tag.len() - 12..])
}

fn now() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn event(charter: &str, received_at: UnixMillis, source: &str) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        charter: charter.to_string(),
        source: source.to_string(),
        event_type: None,
        dedupe_key: None,
        received_at,
        headers: BTreeMap::new(),
        payload: serde_json::json!({"n": 1}),
    }
}

/// Store an event, claim it, run it to `outcome` finishing at `finished`, and release it
/// with `status`. Returns (event id, run id).
async fn run_one<S: Store>(
    store: &S,
    c: &str,
    received: UnixMillis,
    finished: UnixMillis,
    outcome: RunOutcome,
    status: EventStatus,
) -> Result<(Uuid, Uuid), String> {
    let ev = event(c, received, "webhook:/hooks/conf");
    let id = ev.id;
    ctx(store.ingest(ev).await, "ingest")?;
    let claimed = ctx(
        store
            .claim(c, "conf-worker", 1, 8, Duration::from_secs(30), received)
            .await,
        "claim",
    )?;
    ensure!(
        claimed.len() == 1 && claimed[0].event.id == id,
        "claim gave {} events",
        claimed.len()
    );
    let run = Uuid::now_v7();
    ctx(
        store.start_run(run, id, c, "v1", "live", received).await,
        "start_run",
    )?;
    ctx(
        store
            .finish_run(run, Some(0), outcome, None, finished)
            .await,
        "finish_run",
    )?;
    ctx(
        store.release(id, "conf-worker", status, finished).await,
        "release",
    )?;
    Ok((id, run))
}

/// A report counts exactly what happened in its window, and nothing outside it; the
/// backlog shows queued work, pending approvals and open escalations with their ages.
pub async fn check_reports<S: Store>(store: &S) -> CheckResult {
    let c = charter("report");
    let t0 = now() - 10_000;
    // Outside the window (before `since`): must not count.
    run_one(
        store,
        &c,
        t0 - 50_000,
        t0 - 40_000,
        RunOutcome::Completed,
        EventStatus::Done,
    )
    .await?;
    let since = t0 - 1_000;
    let (r1, failed_ev) = record_report_runs(store, &c, t0).await?;
    record_report_approvals(store, &c, t0, r1, failed_ev).await?;
    let queued_at = record_report_extras(store, &c, t0, r1, failed_ev).await?;
    let until = now() + 60_000;
    let r = report_counts_the_window(store, &c, since, until).await?;
    report_queries_agree(store, &c, since, until, &r).await?;
    backlog_and_readiness(store, &c, t0, queued_at).await
}

/// The runs [`check_reports`] counts: three completed with cycle times 100, 200 and 400 ms,
/// one failed with a dead-lettered action, one escalated. Returns (first run, failed event).
async fn record_report_runs<S: Store>(
    store: &S,
    c: &str,
    t0: UnixMillis,
) -> Result<(Uuid, Uuid), String> {
    let (_, r1) = run_one(
        store,
        c,
        t0,
        t0 + 100,
        RunOutcome::Completed,
        EventStatus::Done,
    )
    .await?;
    run_one(
        store,
        c,
        t0,
        t0 + 200,
        RunOutcome::Completed,
        EventStatus::Done,
    )
    .await?;
    run_one(
        store,
        c,
        t0,
        t0 + 400,
        RunOutcome::Completed,
        EventStatus::Done,
    )
    .await?;
    let (failed_ev, failed_run) = run_one(
        store,
        c,
        t0,
        t0 + 500,
        RunOutcome::Failed,
        EventStatus::Failed,
    )
    .await?;
    let key = format!("{failed_ev}:act");
    let params = serde_json::json!({"x": 1});
    ctx(
        store.begin_action(failed_run, "act", &key, &params).await,
        "begin_action",
    )?;
    ctx(
        store
            .finish_action(
                failed_run,
                &ActionRecord {
                    action: "act".into(),
                    idempotency_key: key.clone(),
                    params: params.clone(),
                    status: ActionStatus::DeadLettered,
                    attempts: vec![],
                },
            )
            .await,
        "finish_action",
    )?;
    let (esc_ev, esc_run) = run_one(
        store,
        c,
        t0,
        t0 + 600,
        RunOutcome::Escalated,
        EventStatus::Waiting,
    )
    .await?;
    ctx(
        store
            .create_escalation(NewEscalation {
                id: Uuid::now_v7(),
                run_id: Some(esc_run),
                event_id: esc_ev,
                charter: c.to_string(),
                reason: "low_confidence".into(),
                detail: serde_json::json!({}),
                target: None,
                created_at: t0 + 600,
            })
            .await,
        "create_escalation",
    )?;
    Ok((r1, failed_ev))
}

/// Approvals: one approved with an edit, one rejected, one still pending.
async fn record_report_approvals<S: Store>(
    store: &S,
    c: &str,
    t0: UnixMillis,
    r1: Uuid,
    failed_ev: Uuid,
) -> CheckResult {
    let params = serde_json::json!({"x": 1});
    let mut approval_ids = Vec::new();
    for h in ["h1", "h2", "h3"] {
        let a = ctx(
            store
                .create_approval(NewApproval {
                    id: Uuid::now_v7(),
                    run_id: r1,
                    event_id: failed_ev,
                    charter: c.to_string(),
                    action: "reply".into(),
                    params: params.clone(),
                    params_hash: h.into(),
                    reviewers: vec![],
                    created_at: t0 + 700,
                    expires_at: None,
                    on_expiry: None,
                })
                .await,
            "create_approval",
        )?;
        approval_ids.push(a.id);
    }
    let edit = Some((serde_json::json!({"x": 2}), "h1-edited".to_string()));
    ctx(
        store
            .decide_approval(
                approval_ids[0],
                Verdict::Approve { edited: edit },
                "rev",
                t0 + 800,
            )
            .await,
        "approve",
    )?;
    ctx(
        store
            .decide_approval(
                approval_ids[1],
                Verdict::Reject {
                    reason: "no".into(),
                },
                "rev",
                t0 + 800,
            )
            .await,
        "reject",
    )?;
    Ok(())
}

/// A replay of the failed event, a rejected payload, two measurements, one queued event.
/// Returns when the queued event was received.
async fn record_report_extras<S: Store>(
    store: &S,
    c: &str,
    t0: UnixMillis,
    r1: Uuid,
    failed_ev: Uuid,
) -> Result<UnixMillis, String> {
    ctx(
        store
            .append_audit(NewAuditEntry {
                at: t0 + 900,
                actor: "admin".into(),
                action: "event.replay".into(),
                charter: Some(c.to_string()),
                target: Some(failed_ev.to_string()),
                detail: serde_json::json!({"requeued": [failed_ev]}),
            })
            .await,
        "append_audit",
    )?;
    ctx(
        store
            .reject(RejectedPayload {
                id: Uuid::now_v7(),
                charter: c.to_string(),
                source: "webhook:/hooks/conf".into(),
                received_at: t0,
                headers: BTreeMap::new(),
                body: "{}".into(),
                reasons: vec!["bad".into()],
            })
            .await,
        "reject",
    )?;
    for v in [1.0, 2.5] {
        ctx(
            store
                .record_measurement(NewMeasurement {
                    charter: c.to_string(),
                    name: "ticket_routed".into(),
                    run_id: Some(r1),
                    event_id: None,
                    value: v,
                    at: t0 + 150,
                    detail: serde_json::json!({}),
                })
                .await,
            "record_measurement",
        )?;
    }
    let queued_at = t0 + 1_000;
    ctx(
        store
            .ingest(event(c, queued_at, "webhook:/hooks/conf"))
            .await,
        "ingest queued",
    )?;

    Ok(queued_at)
}

/// The report over the window counts exactly what [`check_reports`] recorded in it.
async fn report_counts_the_window<S: Store>(
    store: &S,
    c: &str,
    since: UnixMillis,
    until: UnixMillis,
) -> Result<crate::CharterReport, String> {
    let r = ctx(
        store
            .report(ReportQuery {
                charter: c.to_string(),
                since,
                until,
                buckets: 4,
            })
            .await,
        "report",
    )?;
    ensure!(
        r.events_received == 6,
        "events_received {}",
        r.events_received
    );
    ensure!(
        r.rejected_payloads == 1,
        "rejected_payloads {}",
        r.rejected_payloads
    );
    ensure!(
        r.outcome("completed") == 3 && r.outcome("failed") == 1 && r.outcome("escalated") == 1,
        "outcomes {:?}",
        r.outcomes
    );
    ensure!(r.runs() == 5, "runs {}", r.runs());
    ensure!(
        r.cycle.count == 3 && r.cycle.p50_ms == 200 && r.cycle.max_ms == 400,
        "cycle {:?}",
        r.cycle
    );
    ensure!(
        r.approvals.requested == 3
            && r.approvals.approved == 1
            && r.approvals.rejected == 1
            && r.approvals.edited == 1
            && r.approvals.expired == 0,
        "approvals {:?}",
        r.approvals
    );
    ensure!(
        r.escalations.by_reason.get("low_confidence") == Some(&1) && r.escalations.resolved == 0,
        "escalations {:?}",
        r.escalations
    );
    ensure!(r.dead_letters == 1, "dead_letters {}", r.dead_letters);
    ensure!(r.replays == 1, "replays {}", r.replays);
    let m = r.measurements.get("ticket_routed");
    ensure!(
        m.is_some_and(|m| m.count == 2 && (m.sum - 3.5).abs() < 1e-9),
        "measurements {:?}",
        r.measurements
    );
    ensure!(r.buckets.len() == 4, "buckets {}", r.buckets.len());
    let bucket_received: u64 = r.buckets.iter().map(|b| b.received).sum();
    let bucket_runs: u64 = r.buckets.iter().flat_map(|b| b.outcomes.values()).sum();
    ensure!(
        bucket_received == 6 && bucket_runs == 5,
        "buckets add up to {bucket_received} events, {bucket_runs} runs"
    );
    let rates = r.rates();
    ensure!(
        rates.error_rate == Some(0.2),
        "error rate {:?}",
        rates.error_rate
    );
    ensure!(
        rates.approval_rate == Some(0.5),
        "approval rate {:?}",
        rates.approval_rate
    );

    Ok(r)
}

/// The single queries agree with the report, and a window after everything is empty.
async fn report_queries_agree<S: Store>(
    store: &S,
    c: &str,
    since: UnixMillis,
    until: UnixMillis,
    r: &crate::CharterReport,
) -> CheckResult {
    let outcomes = ctx(store.run_outcomes(c, since, until).await, "run_outcomes")?;
    ensure!(outcomes == r.outcomes, "run_outcomes {outcomes:?}");
    let reasons = ctx(
        store.escalation_reasons(c, since, until).await,
        "escalation_reasons",
    )?;
    ensure!(
        reasons == r.escalations.by_reason,
        "escalation_reasons {reasons:?}"
    );
    let empty = ctx(
        store
            .report(ReportQuery {
                charter: c.to_string(),
                since: until,
                until: until + 1_000,
                buckets: 1,
            })
            .await,
        "empty report",
    )?;
    ensure!(
        empty.events_received == 0 && empty.runs() == 0 && empty.measurements.is_empty(),
        "a window after everything is not empty: {empty:?}"
    );

    Ok(())
}

/// The backlog shows the queued event, the pending approval and the open escalation with
/// their ages; the store reports itself migrated.
async fn backlog_and_readiness<S: Store>(
    store: &S,
    c: &str,
    t0: UnixMillis,
    queued_at: UnixMillis,
) -> CheckResult {
    let backlog = ctx(store.backlog(now()).await, "backlog")?;
    let b = backlog.iter().find(|b| b.charter == c);
    ensure!(
        b.is_some_and(|b| b.queued == 1
            && b.oldest_queued_at == Some(queued_at)
            && b.approvals_pending == 1
            && b.oldest_approval_at == Some(t0 + 700)
            && b.escalations_open == 1
            && b.oldest_escalation_at == Some(t0 + 600)),
        "backlog {b:?}"
    );
    let ready = ctx(store.readiness().await, "readiness")?;
    ensure!(ready.migrated(), "readiness {ready:?}");
    Ok(())
}

/// One open incident per (charter, alert); each notification is recorded once; a resolved
/// incident makes room for a new one.
pub async fn check_incidents<S: Store>(store: &S) -> CheckResult {
    let c = charter("alerts");
    let t = now();
    let new = |alert: &str| NewIncident {
        id: Uuid::now_v7(),
        charter: c.clone(),
        alert: alert.to_string(),
        opened_at: t,
        value: 0.5,
        detail: serde_json::json!({"runs": 4}),
    };
    let first = new("error_rate");
    let (a, created) = ctx(store.open_incident(first.clone()).await, "open")?;
    ensure!(created && a.id == first.id, "first open: {created} {a:?}");
    ensure!(
        a.state == IncidentState::Open && a.value == 0.5 && a.detail["runs"] == 4,
        "stored incident {a:?}"
    );
    // Concurrent opens of the same alert find the one open incident.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = store.clone();
        let i = new("error_rate");
        tasks.push(tokio::spawn(async move { s.open_incident(i).await }));
    }
    for task in tasks {
        let (b, created) = ctx(ctx(task.await, "join")?, "open again")?;
        ensure!(!created && b.id == a.id, "a second open incident: {b:?}");
    }
    let (other, created) = ctx(store.open_incident(new("stuck")).await, "open other")?;
    ensure!(
        created && other.id != a.id,
        "another alert shares the incident"
    );

    let owed = ctx(store.unnotified_incidents().await, "unnotified")?;
    ensure!(
        owed.iter().filter(|i| i.charter == c).count() == 2,
        "owed before notifying: {owed:?}"
    );
    ensure!(
        ctx(
            store.mark_notified(a.id, IncidentState::Open, t + 1).await,
            "mark"
        )?,
        "first mark_notified refused"
    );
    ensure!(
        !ctx(
            store.mark_notified(a.id, IncidentState::Open, t + 2).await,
            "mark again"
        )?,
        "a notification was recorded twice"
    );
    ensure!(
        !ctx(
            store
                .mark_notified(a.id, IncidentState::Resolved, t + 2)
                .await,
            "mark resolved early"
        )?,
        "resolution recorded for an open incident"
    );
    let resolved = ctx(store.resolve_incident(a.id, t + 10).await, "resolve")?;
    ensure!(
        resolved
            .as_ref()
            .is_some_and(|r| r.state == IncidentState::Resolved
                && r.resolved_at == Some(t + 10)
                && r.notified_open_at == Some(t + 1)),
        "resolve returned {resolved:?}"
    );
    ensure!(
        ctx(store.resolve_incident(a.id, t + 11).await, "resolve again")?.is_none(),
        "resolved twice"
    );
    let owed = ctx(store.unnotified_incidents().await, "unnotified")?;
    ensure!(
        owed.iter()
            .any(|i| i.id == a.id && i.state == IncidentState::Resolved),
        "the resolution is not owed: {owed:?}"
    );
    ensure!(
        ctx(
            store
                .mark_notified(a.id, IncidentState::Resolved, t + 12)
                .await,
            "mark resolved"
        )?,
        "resolution not recorded"
    );
    let owed = ctx(store.unnotified_incidents().await, "unnotified")?;
    ensure!(
        !owed.iter().any(|i| i.id == a.id),
        "a fully notified incident is still owed"
    );
    // The alert can fire again: a new incident.
    let (again, created) = ctx(store.open_incident(new("error_rate")).await, "reopen")?;
    ensure!(
        created && again.id != a.id,
        "no new incident after resolution"
    );
    let open = ctx(
        store.open_incidents(Some(c.clone())).await,
        "open_incidents",
    )?;
    ensure!(
        open.len() == 2 && open.iter().all(|i| i.state == IncidentState::Open),
        "open incidents {open:?}"
    );
    let all = ctx(store.list_incidents(Some(c.clone()), 0).await, "list")?;
    ensure!(all.len() == 3, "listed {}", all.len());
    let lead = ctx(store.try_lead().await, "try_lead")?;
    ensure!(lead.is_some(), "a lone node could not lead");
    Ok(())
}
