//! Checks of [`crate::RunStore`]: a run's lifecycle, batched run writes, run listings.

use std::collections::BTreeMap;
use std::time::Duration;

use charter_core::model::{
    ActionRecord, ActionStatus, AttemptRecord, Decision, DecisionStage, EventStatus, RunOutcome,
    StageAnswer, UnixMillis,
};
use uuid::Uuid;

use super::{CheckResult, Ctx, charter, event, measured, now, stored};
use crate::{NewMeasurement, RunFilter, RunWrite, Store};

/// A run's decision, actions, attempts and outcome read back exactly; a succeeded action's
/// key is remembered across runs.
pub async fn check_run_lifecycle<S: Store>(store: &S) -> CheckResult {
    let c = charter("runs");
    let t = now();
    let event_id = stored(store, event(&c, None, t)).await?;
    let run1 = Uuid::now_v7();
    let run2 = Uuid::now_v7();

    ensure!(
        store
            .runs_for_event(event_id)
            .await
            .ctx("runs_for_event")?
            .is_empty(),
        "a new event already has runs"
    );
    let first = record_first_run(store, &c, t, event_id, run1).await?;
    let (key_a, key_b) = (
        &first.action_a.idempotency_key,
        &first.action_b.idempotency_key,
    );
    ensure!(
        store
            .action_succeeded(key_a)
            .await
            .ctx("action_succeeded")?,
        "a succeeded action's key is not remembered"
    );
    ensure!(
        !store
            .action_succeeded(key_b)
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
        ..first.action_a.clone()
    };
    store
        .finish_action(run2, &action_a2)
        .await
        .ctx("finish_action without begin")?;
    store
        .finish_run(run2, None, RunOutcome::Completed, None, t + 10_500)
        .await
        .ctx("finish_run")?;

    runs_read_back(store, &c, t, event_id, (run1, run2), first, action_a2).await
}

/// The first run of [`check_run_lifecycle`]: decided, one action succeeded after a retry,
/// one dead-lettered, finished as failed.
struct FirstRun {
    decision: Decision,
    action_a: ActionRecord,
    action_b: ActionRecord,
}

async fn record_first_run<S: Store>(
    store: &S,
    c: &str,
    t: UnixMillis,
    event_id: Uuid,
    run1: Uuid,
) -> Result<FirstRun, String> {
    let key_a = format!("{}:assign", Uuid::now_v7());
    let key_b = format!("{}:notify", Uuid::now_v7());
    store
        .start_run(run1, event_id, c, "v-abc", "live", t)
        .await
        .ctx("start_run")?;
    let decision = billing_decision();
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

    Ok(FirstRun {
        decision,
        action_a,
        action_b,
    })
}

/// The first run's decision: billing, by the embedded classifier, with two fields.
fn billing_decision() -> Decision {
    Decision {
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
    }
}

/// Both runs read back exactly, oldest first; another event's runs are not mixed in.
async fn runs_read_back<S: Store>(
    store: &S,
    c: &str,
    t: UnixMillis,
    event_id: Uuid,
    (run1, run2): (Uuid, Uuid),
    first: FirstRun,
    action_a2: ActionRecord,
) -> CheckResult {
    let FirstRun {
        decision,
        action_a,
        action_b,
    } = first;
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
    let lonely = stored(store, event(c, None, t)).await?;
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
    let r = record_intent_batch(store).await?;
    record_outcome_batch(store, &r).await?;
    let run2 = failed_batches_write_nothing(store, &r).await?;
    stale_release_is_reported(store, &r, run2).await?;
    succeeded_key_is_not_begun_again(store, &r).await
}

/// The run of [`check_record_run`], once its intent batch is written.
struct RecordedRun {
    c: String,
    t: UnixMillis,
    event_id: Uuid,
    run: Uuid,
    key: String,
    params: serde_json::Value,
    decision: Decision,
}

/// The intent batch (start, decision, begin action) writes the run, its decision and no
/// finished action.
async fn record_intent_batch<S: Store>(store: &S) -> Result<RecordedRun, String> {
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
    Ok(RecordedRun {
        c,
        t,
        event_id,
        run,
        key,
        params,
        decision,
    })
}

/// The outcome batch (attempt, finish, measurement, finish run, release) finishes all of it.
async fn record_outcome_batch<S: Store>(store: &S, r: &RecordedRun) -> CheckResult {
    let (c, t, event_id, run) = (&r.c, r.t, r.event_id, r.run);
    let (key, params) = (&r.key, &r.params);
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
        store.action_succeeded(key).await.ctx("action_succeeded")?,
        "the succeeded key is not remembered"
    );
    let ev = store
        .get_event(event_id)
        .await
        .ctx("get_event")?
        .ok_or("event vanished")?;
    ensure!(ev.status == EventStatus::Done, "event is {:?}", ev.status);
    let routed = measured(store, c, "ticket_routed", t - 1_000, t + 60_000).await?;
    ensure!(routed == 1, "{routed} ticket_routed measurements, want 1");

    Ok(())
}

/// All or nothing: a decision for an unknown run fails the batch, and its start is gone; an
/// action of a run that does not exist is "not found". Returns the run id the failed batch
/// used.
async fn failed_batches_write_nothing<S: Store>(
    store: &S,
    r: &RecordedRun,
) -> Result<Uuid, String> {
    let (c, t, event_id, decision) = (&r.c, r.t, r.event_id, &r.decision);
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

    Ok(run2)
}

/// A release without the lease says so; the batch's other writes stand.
async fn stale_release_is_reported<S: Store>(
    store: &S,
    r: &RecordedRun,
    run2: Uuid,
) -> CheckResult {
    let (c, t, event_id) = (&r.c, r.t, r.event_id);
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

    Ok(())
}

/// An intent for a key that already succeeded is not written, and the batch says so.
async fn succeeded_key_is_not_begun_again<S: Store>(store: &S, r: &RecordedRun) -> CheckResult {
    let (c, t, event_id, key, params) = (&r.c, r.t, r.event_id, &r.key, &r.params);
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

/// Runs across events: newest first, filtered by charter, outcome, running, start time and
/// limit, each with its event and finished actions.
pub async fn check_list_runs<S: Store>(store: &S) -> CheckResult {
    let c = charter("runs");
    let other = charter("runs-other");
    let t = now();
    let (runs, events, record) = three_runs_and_another(store, &c, &other, t).await?;
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

/// Three runs of `c` a second apart (the first completed with an action, the second
/// failed, the third running) and one of `other`. Returns the runs, their events and the
/// first run's action.
async fn three_runs_and_another<S: Store>(
    store: &S,
    c: &str,
    other: &str,
    t: UnixMillis,
) -> Result<(Vec<Uuid>, Vec<Uuid>, ActionRecord), String> {
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
        let event_id = stored(store, event(c, None, t + i * 1_000)).await?;
        let run = Uuid::now_v7();
        store
            .record_run(vec![start(run, event_id, c, t + i * 1_000)])
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
    let elsewhere = stored(store, event(other, None, t + 500)).await?;
    store
        .record_run(vec![start(Uuid::now_v7(), elsewhere, other, t + 500)])
        .await
        .ctx("record_run (other charter)")?;
    Ok((runs, events, record))
}
