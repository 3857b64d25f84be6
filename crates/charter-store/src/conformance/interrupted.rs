//! Checks of runs cut off before they finished: closed as interrupted by the next claim of
//! their event, with the actions they left in doubt.

use std::time::Duration;

use charter_core::model::{
    ActionRecord, ActionStatus, AttemptRecord, EventStatus, RunOutcome, UnixMillis,
};
use uuid::Uuid;

use super::{CheckResult, Ctx, charter, event, now, stored};
use crate::{INTERRUPTED_ERROR, InDoubtFilter, InDoubtRef, InterruptedRun};
use crate::{Requeue, RunWrite, Store};

/// A run cut off before it finished is closed as interrupted by the next claim of its event,
/// in the claim's transaction; the actions it had begun without an outcome become in doubt
/// (visible in the run and listed), settled once the same key succeeds.
pub async fn check_interrupted_runs<S: Store>(store: &S) -> CheckResult {
    let s = run_cut_off(store).await?;
    // w1 dies; its lease expires and w2 claims the event: the run is closed in that claim.
    let at = s.t + 10_001;
    claim_closes_the_run(store, &s, at).await?;
    in_doubt_is_listed(store, &s, at).await?;
    success_settles(store, &s, at).await?;
    finished_runs_stay_closed(store, &s, at).await
}

/// The run of [`check_interrupted_runs`] and what the later steps need of it.
struct CutOff {
    c: String,
    t: UnixMillis,
    lease: Duration,
    event_id: Uuid,
    run: Uuid,
}

impl CutOff {
    fn key(&self, a: &str) -> String {
        format!("{}:{a}", self.event_id)
    }
}

fn params(a: &str) -> serde_json::Value {
    serde_json::json!({"action": a, "order": 7})
}

/// Claim an event and record a run that finished one action, began two more (one with a
/// failed attempt) and was cut off there; nothing is in doubt while it is in flight.
async fn run_cut_off<S: Store>(store: &S) -> Result<CutOff, String> {
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
    Ok(CutOff {
        c,
        t,
        lease,
        event_id,
        run,
    })
}

/// The next claim of the event closes the run as interrupted, its begun actions in doubt.
async fn claim_closes_the_run<S: Store>(store: &S, s: &CutOff, at: UnixMillis) -> CheckResult {
    let (c, lease, event_id, run) = (&s.c, s.lease, s.event_id, s.run);
    let key = |a: &str| s.key(a);
    let got = store.claim(c, "w2", 1, 1, lease, at).await.ctx("claim")?;
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
    Ok(())
}

/// The in-doubt actions are listed newest first, per charter, with a limit.
async fn in_doubt_is_listed<S: Store>(store: &S, s: &CutOff, at: UnixMillis) -> CheckResult {
    let (c, t, event_id, run) = (&s.c, s.t, s.event_id, s.run);
    let key = |a: &str| s.key(a);
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
            && a1.charter == *c
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
    Ok(())
}

/// The next run sends a1 again with the same key and it succeeds: settled.
async fn success_settles<S: Store>(store: &S, s: &CutOff, at: UnixMillis) -> CheckResult {
    let (c, event_id) = (&s.c, s.event_id);
    let key = |a: &str| s.key(a);
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
    Ok(())
}

/// A finished run is never closed again: a replay's claim finds nothing interrupted.
async fn finished_runs_stay_closed<S: Store>(store: &S, s: &CutOff, at: UnixMillis) -> CheckResult {
    let (c, lease, event_id) = (&s.c, s.lease, s.event_id);
    store
        .requeue(Requeue::Event(event_id), at + 3)
        .await
        .ctx("requeue")?;
    let got = store
        .claim(c, "w3", 1, 1, lease, at + 4)
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
