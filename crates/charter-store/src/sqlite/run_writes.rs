//! The writes of a run on SQLite, as functions of the open write transaction: shared by the
//! single-write methods and by `record_run` (which applies several in one command).

use charter_core::model::{
    ActionRecord, ActionStatus, AttemptRecord, Decision, EventStatus, RunOutcome, UnixMillis,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::report;
use super::rows::{self, db, to_json};
use super::runs::{action_id, ensure_run, insert_attempt};
use crate::{Result, RunWrite, RunWritten, StoreError};

/// Insert a run; with `decision`, its decision columns too (a `Start` and its `Decision`
/// written together, see [`merge_start_decision`]), otherwise they stay NULL until decided.
pub(super) fn sql_start_run(
    conn: &Connection,
    run: &str,
    event: &str,
    charter: &str,
    version: &str,
    mode: &str,
    now: UnixMillis,
    decision: Option<&DecisionRow>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO runs (id, event_id, charter, charter_version, mode, started_at,
             decision, decision_label, decision_stage, decision_confidence)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            run,
            event,
            charter,
            version,
            mode,
            now,
            decision.map(|d| &d.json),
            decision.and_then(|d| d.label.as_ref()),
            decision.and_then(|d| d.stage.as_ref()),
            decision.map(|d| d.confidence)
        ])
    })
    .map_err(db("starting a run"))?;
    Ok(())
}

/// Give each `Start` that is directly followed by the same run's `Decision` that decision,
/// and drop the `Decision`: one INSERT instead of an INSERT and an UPDATE of the same row.
/// Everything else keeps its order.
pub(super) fn merge_start_decision(prepared: Vec<PreparedWrite>) -> Vec<PreparedWrite> {
    let mut out: Vec<PreparedWrite> = Vec::with_capacity(prepared.len());
    for w in prepared {
        match (w, out.last_mut()) {
            (
                PreparedWrite::Decision { run, row },
                Some(PreparedWrite::Start {
                    run: started,
                    decision: decision @ None,
                    ..
                }),
            ) if *started == run => *decision = Some(row),
            (w, _) => out.push(w),
        }
    }
    out
}

/// A decision serialised on the caller's thread.
pub(super) struct DecisionRow {
    pub(super) json: String,
    pub(super) label: Option<String>,
    pub(super) stage: Option<String>,
    pub(super) confidence: f64,
}

impl DecisionRow {
    pub(super) fn new(decision: &Decision) -> Result<DecisionRow> {
        Ok(DecisionRow {
            json: to_json("decision", decision)?,
            label: decision.label.clone(),
            stage: rows::enum_name(&decision.stage),
            confidence: decision.confidence,
        })
    }
}

pub(super) fn sql_record_decision(conn: &Connection, run: &str, d: &DecisionRow) -> Result<()> {
    let n = conn
        .prepare_cached(
            "UPDATE runs SET decision = ?2, decision_label = ?3, decision_stage = ?4,
                 decision_confidence = ?5
             WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![run, d.json, d.label, d.stage, d.confidence]))
        .map_err(db("recording a decision"))?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("run {run}")));
    }
    Ok(())
}

pub(super) fn sql_action_succeeded(conn: &Connection, key: &str) -> Result<bool> {
    let found: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM succeeded_keys WHERE idempotency_key = ?1")
        .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
        .map_err(db("looking up a succeeded key"))?;
    Ok(found.is_some())
}

pub(super) fn sql_begin_action(
    conn: &Connection,
    run: &str,
    action: &str,
    key: &str,
    params_json: &str,
) -> Result<()> {
    ensure_run(conn, run)?;
    conn.prepare_cached(
        "INSERT INTO action_records (run_id, action, idempotency_key, params, status)
         VALUES (?1, ?2, ?3, ?4, 'pending')
         ON CONFLICT (run_id, action) DO UPDATE SET
             idempotency_key = excluded.idempotency_key, params = excluded.params,
             status = 'pending'",
    )
    .and_then(|mut s| s.execute(params![run, action, key, params_json]))
    .map_err(db("beginning an action"))?;
    Ok(())
}

pub(super) fn sql_record_attempt(
    conn: &Connection,
    run: &str,
    action: &str,
    attempt: &AttemptRecord,
) -> Result<()> {
    let id = action_id(conn, run, action)?.ok_or_else(|| {
        StoreError::NotFound(format!("action {action} was not begun in run {run}"))
    })?;
    insert_attempt(conn, id, attempt, true)
}

pub(super) fn sql_finish_action(
    conn: &Connection,
    run: &str,
    record: &ActionRecord,
    params_json: &str,
    succeeded_at: UnixMillis,
) -> Result<()> {
    ensure_run(conn, run)?;
    let status = record.status.as_str();
    // No `RETURNING id`: SQLite builds and frees an ephemeral table for RETURNING rows on
    // every execution; the id is looked up by the (run_id, action) key only when needed.
    conn.prepare_cached(
        "INSERT INTO action_records (run_id, action, idempotency_key, params, status)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (run_id, action) DO UPDATE SET status = excluded.status,
             idempotency_key = excluded.idempotency_key, params = excluded.params",
    )
    .and_then(|mut s| {
        s.execute(params![
            run,
            record.action,
            record.idempotency_key,
            params_json,
            status
        ])
    })
    .map_err(db("finishing an action"))?;
    // Attempts recorded one by one are kept; ones only carried by the record are added.
    if !record.attempts.is_empty() {
        let id = action_id(conn, run, &record.action)?.ok_or_else(|| {
            StoreError::Database(format!("action {} of run {run} vanished", record.action))
        })?;
        for attempt in &record.attempts {
            insert_attempt(conn, id, attempt, false)?;
        }
    }
    if record.status == ActionStatus::Succeeded {
        conn.prepare_cached(
            "INSERT INTO succeeded_keys (idempotency_key, run_id, action, succeeded_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                record.idempotency_key,
                run,
                record.action,
                succeeded_at
            ])
        })
        .map_err(db("recording a succeeded key"))?;
    }
    Ok(())
}

pub(super) fn sql_finish_run(
    conn: &Connection,
    run: &str,
    route: Option<usize>,
    outcome: RunOutcome,
    error: Option<&str>,
    now: UnixMillis,
) -> Result<()> {
    let route = route.map(|r| i64::try_from(r).unwrap_or(i64::MAX));
    let n = conn
        .prepare_cached(
            "UPDATE runs SET finished_at = ?2, outcome = ?3, route = ?4, error = ?5
             WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![run, now, outcome.as_str(), route, error]))
        .map_err(db("finishing a run"))?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("run {run}")));
    }
    Ok(())
}

pub(super) fn sql_release(
    conn: &Connection,
    event: &str,
    worker: &str,
    status: EventStatus,
    now: UnixMillis,
) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE events SET status = ?3, lease_owner = NULL, lease_until = NULL,
                 updated_at = ?4
             WHERE id = ?1 AND lease_owner = ?2 AND status = 'processing'",
        )
        .and_then(|mut s| s.execute(params![event, worker, status.as_str(), now]))
        .map_err(db("releasing a lease"))?;
    Ok(n == 1)
}

/// A [`RunWrite`] with its JSON serialised on the caller's thread.
pub(super) enum PreparedWrite {
    Start {
        run: String,
        event: String,
        charter: String,
        version: String,
        mode: String,
        now: UnixMillis,
        /// Set by [`merge_start_decision`] when the run's `Decision` directly follows.
        decision: Option<DecisionRow>,
    },
    Decision {
        run: String,
        row: DecisionRow,
    },
    BeginAction {
        run: String,
        action: String,
        key: String,
        params: String,
    },
    Attempt {
        run: String,
        action: String,
        attempt: AttemptRecord,
    },
    FinishAction {
        run: String,
        record: ActionRecord,
        params: String,
        succeeded_at: UnixMillis,
    },
    Measurement {
        m: crate::NewMeasurement,
        detail: String,
    },
    FinishRun {
        run: String,
        route: Option<usize>,
        outcome: RunOutcome,
        error: Option<String>,
        now: UnixMillis,
    },
    Release {
        event: String,
        worker: String,
        status: EventStatus,
        now: UnixMillis,
    },
}

impl PreparedWrite {
    pub(super) fn new(w: RunWrite, now: UnixMillis) -> Result<PreparedWrite> {
        Ok(match w {
            RunWrite::Start {
                run_id,
                event_id,
                charter,
                charter_version,
                mode,
                now,
            } => PreparedWrite::Start {
                run: run_id.to_string(),
                event: event_id.to_string(),
                charter,
                version: charter_version,
                mode,
                now,
                decision: None,
            },
            RunWrite::Decision { run_id, decision } => PreparedWrite::Decision {
                run: run_id.to_string(),
                row: DecisionRow::new(&decision)?,
            },
            RunWrite::BeginAction {
                run_id,
                action,
                idempotency_key,
                params,
            } => PreparedWrite::BeginAction {
                run: run_id.to_string(),
                action,
                key: idempotency_key,
                params: to_json("action params", &params)?,
            },
            RunWrite::Attempt {
                run_id,
                action,
                attempt,
            } => PreparedWrite::Attempt {
                run: run_id.to_string(),
                action,
                attempt,
            },
            RunWrite::FinishAction { run_id, record } => PreparedWrite::FinishAction {
                run: run_id.to_string(),
                params: to_json("action params", &record.params)?,
                record,
                succeeded_at: now,
            },
            RunWrite::Measurement(m) => PreparedWrite::Measurement {
                detail: to_json("measurement detail", &m.detail)?,
                m,
            },
            RunWrite::FinishRun {
                run_id,
                route,
                outcome,
                error,
                now,
            } => PreparedWrite::FinishRun {
                run: run_id.to_string(),
                route,
                outcome,
                error,
                now,
            },
            RunWrite::Release {
                event_id,
                worker,
                status,
                now,
            } => PreparedWrite::Release {
                event: event_id.to_string(),
                worker,
                status,
                now,
            },
        })
    }

    pub(super) fn apply(&self, conn: &Connection, out: &mut RunWritten) -> Result<()> {
        match self {
            PreparedWrite::Start {
                run,
                event,
                charter,
                version,
                mode,
                now,
                decision,
            } => sql_start_run(
                conn,
                run,
                event,
                charter,
                version,
                mode,
                *now,
                decision.as_ref(),
            ),
            PreparedWrite::Decision { run, row } => sql_record_decision(conn, run, row),
            PreparedWrite::BeginAction {
                run,
                action,
                key,
                params,
            } => {
                if sql_action_succeeded(conn, key)? {
                    out.already_succeeded = true;
                    Ok(())
                } else {
                    sql_begin_action(conn, run, action, key, params)
                }
            }
            PreparedWrite::Attempt {
                run,
                action,
                attempt,
            } => sql_record_attempt(conn, run, action, attempt),
            PreparedWrite::FinishAction {
                run,
                record,
                params,
                succeeded_at,
            } => sql_finish_action(conn, run, record, params, *succeeded_at),
            PreparedWrite::Measurement { m, detail } => report::insert_measurement(conn, m, detail),
            PreparedWrite::FinishRun {
                run,
                route,
                outcome,
                error,
                now,
            } => sql_finish_run(conn, run, *route, *outcome, error.as_deref(), *now),
            PreparedWrite::Release {
                event,
                worker,
                status,
                now,
            } => {
                out.released = Some(sql_release(conn, event, worker, *status, *now)?);
                Ok(())
            }
        }
    }
}
