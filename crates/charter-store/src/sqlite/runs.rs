//! Runs on SQLite: the [`crate::RunStore`] methods and the reads of runs with their actions.

use charter_core::model::{
    ActionRecord, ActionStatus, AttemptRecord, Decision, RunOutcome, RunRecord, UnixMillis,
};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::rows::{self, db, parse_uuid, to_json};
use super::run_writes::{
    DecisionRow, PreparedWrite, merge_start_decision, sql_action_succeeded, sql_begin_action,
    sql_finish_action, sql_finish_run, sql_record_attempt, sql_record_decision, sql_start_run,
};
use super::{Conditions, SqliteStore, collect, now_millis};
use crate::{INTERRUPTED_ERROR, InDoubtAction, InDoubtFilter, InDoubtRef, InterruptedRun};
use crate::{Result, RunFilter, RunStore, RunWrite, RunWritten, StoreError};

pub(super) fn ensure_run(conn: &Connection, run_id: &str) -> Result<()> {
    let found: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")
        .and_then(|mut s| s.query_row([run_id], |r| r.get(0)).optional())
        .map_err(db("looking up a run"))?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(format!("run {run_id}"))),
    }
}

pub(super) fn action_id(conn: &Connection, run_id: &str, action: &str) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM action_records WHERE run_id = ?1 AND action = ?2")
        .and_then(|mut s| s.query_row([run_id, action], |r| r.get(0)).optional())
        .map_err(db("looking up an action"))
}

pub(super) fn insert_attempt(
    conn: &Connection,
    action_id: i64,
    a: &AttemptRecord,
    replace: bool,
) -> Result<()> {
    let sql = if replace {
        "INSERT INTO action_attempts (action_id, attempt, started_at, duration_ms, http_status,
             error, ok)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (action_id, attempt) DO UPDATE SET started_at = excluded.started_at,
             duration_ms = excluded.duration_ms, http_status = excluded.http_status,
             error = excluded.error, ok = excluded.ok"
    } else {
        "INSERT INTO action_attempts (action_id, attempt, started_at, duration_ms, http_status,
             error, ok)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (action_id, attempt) DO NOTHING"
    };
    let duration = i64::try_from(a.duration_ms).unwrap_or(i64::MAX);
    conn.prepare_cached(sql)
        .and_then(|mut s| {
            s.execute(params![
                action_id,
                a.attempt,
                a.started_at,
                duration,
                a.status,
                a.error,
                a.ok
            ])
        })
        .map_err(db("recording an attempt"))?;
    Ok(())
}

/// Close the runs of event `event_id` that never finished (cut off by a crash or a lost
/// lease) as interrupted, and mark the actions they had begun without an outcome as in
/// doubt. Part of a claim's command; usually finds nothing (one indexed lookup).
pub(super) fn sql_close_interrupted(
    conn: &Connection,
    event_id: &str,
    now: UnixMillis,
) -> Result<Vec<InterruptedRun>> {
    let open: Vec<String> = {
        let mut stmt = conn
            .prepare_cached("SELECT id FROM runs WHERE event_id = ?1 AND outcome IS NULL")
            .map_err(db("preparing the open-runs lookup"))?;
        let rows = stmt.query([event_id]).map_err(db("looking up open runs"))?;
        collect(rows, |r| rows::get_col::<String>(r, 0))?
    };
    let mut closed = Vec::with_capacity(open.len());
    for run in open {
        conn.prepare_cached(
            "UPDATE runs SET outcome = 'interrupted', finished_at = ?2, error = ?3 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![run, now, INTERRUPTED_ERROR]))
        .map_err(db("closing an interrupted run"))?;
        let mut stmt = conn
            .prepare_cached(
                "UPDATE action_records SET status = 'in_doubt'
                 WHERE run_id = ?1 AND status = 'pending'
                 RETURNING action, idempotency_key",
            )
            .map_err(db("preparing the in-doubt update"))?;
        let rows = stmt.query([&run]).map_err(db("marking actions in doubt"))?;
        let mut in_doubt = collect(rows, |r| {
            Ok(InDoubtRef {
                action: rows::get_col(r, 0)?,
                idempotency_key: rows::get_col(r, 1)?,
            })
        })?;
        in_doubt.sort_by(|a, b| a.action.cmp(&b.action));
        closed.push(InterruptedRun {
            run_id: parse_uuid(&run)?,
            in_doubt,
        });
    }
    Ok(closed)
}

/// Assemble one run's actions (finished or in doubt; see [`RunStore::runs_for_event`] impl).
fn load_actions(conn: &Connection, run_id: &str) -> Result<Vec<ActionRecord>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, action, idempotency_key, params, status FROM action_records
             WHERE run_id = ?1 ORDER BY id",
        )
        .map_err(db("preparing actions"))?;
    let rows = stmt.query([run_id]).map_err(db("loading actions"))?;
    let raw = collect(rows, |r| {
        Ok((
            rows::get_col::<i64>(r, 0)?,
            rows::get_col::<String>(r, 1)?,
            rows::get_col::<String>(r, 2)?,
            rows::get_col::<String>(r, 3)?,
            rows::get_col::<String>(r, 4)?,
        ))
    })?;
    let mut attempts_stmt = conn
        .prepare_cached(
            "SELECT attempt, started_at, duration_ms, http_status, error, ok
             FROM action_attempts WHERE action_id = ?1 ORDER BY attempt",
        )
        .map_err(db("preparing attempts"))?;
    let mut actions = Vec::with_capacity(raw.len());
    for (id, action, key, params_json, status) in raw {
        // 'pending' = begun and still in flight (a run cut off by a crash has its pending
        // actions marked 'in_doubt' when its event is claimed again). Not reported.
        if status == "pending" {
            continue;
        }
        let rows = attempts_stmt.query([id]).map_err(db("loading attempts"))?;
        let attempts = collect(rows, |r| {
            let duration: i64 = rows::get_col(r, 2)?;
            let http: Option<i64> = rows::get_col(r, 3)?;
            Ok(AttemptRecord {
                attempt: rows::u32_col(r, 0, "attempt")?,
                started_at: rows::get_col(r, 1)?,
                duration_ms: u64::try_from(duration).map_err(|_| {
                    StoreError::Corrupt(format!("attempt duration out of range: {duration}"))
                })?,
                status: http
                    .map(|h| {
                        u16::try_from(h).map_err(|_| {
                            StoreError::Corrupt(format!("HTTP status out of range: {h}"))
                        })
                    })
                    .transpose()?,
                error: rows::get_col(r, 4)?,
                ok: rows::get_col(r, 5)?,
            })
        })?;
        actions.push(ActionRecord {
            action,
            idempotency_key: key,
            params: rows::parse_json("action params", &params_json)?,
            status: rows::parse_enum::<ActionStatus>("action status", &status)?,
            attempts,
        });
    }
    Ok(actions)
}

impl RunStore for SqliteStore {
    async fn start_run(
        &self,
        run_id: Uuid,
        event_id: Uuid,
        charter: &str,
        charter_version: &str,
        mode: &str,
        now: UnixMillis,
    ) -> Result<()> {
        let (charter, version, mode) = (
            charter.to_string(),
            charter_version.to_string(),
            mode.to_string(),
        );
        self.write(move |conn| {
            sql_start_run(
                conn,
                &run_id.to_string(),
                &event_id.to_string(),
                &charter,
                &version,
                &mode,
                now,
                None,
            )
        })
        .await
    }

    async fn record_decision(&self, run_id: Uuid, decision: &Decision) -> Result<()> {
        let row = DecisionRow::new(decision)?;
        self.write(move |conn| sql_record_decision(conn, &run_id.to_string(), &row))
            .await
    }

    async fn begin_action(
        &self,
        run_id: Uuid,
        action: &str,
        idempotency_key: &str,
        params: &serde_json::Value,
    ) -> Result<()> {
        let action = action.to_string();
        let key = idempotency_key.to_string();
        let params_json = to_json("action params", params)?;
        self.write(move |conn| {
            sql_begin_action(conn, &run_id.to_string(), &action, &key, &params_json)
        })
        .await
    }

    async fn record_attempt(
        &self,
        run_id: Uuid,
        action: &str,
        attempt: &AttemptRecord,
    ) -> Result<()> {
        let action = action.to_string();
        let attempt = attempt.clone();
        self.write(move |conn| sql_record_attempt(conn, &run_id.to_string(), &action, &attempt))
            .await
    }

    async fn finish_action(&self, run_id: Uuid, record: &ActionRecord) -> Result<()> {
        let record = record.clone();
        let params_json = to_json("action params", &record.params)?;
        let succeeded_at = now_millis();
        self.write(move |conn| {
            sql_finish_action(
                conn,
                &run_id.to_string(),
                &record,
                &params_json,
                succeeded_at,
            )
        })
        .await
    }

    async fn record_run(&self, writes: Vec<RunWrite>) -> Result<RunWritten> {
        let now = now_millis();
        let prepared = writes
            .into_iter()
            .map(|w| PreparedWrite::new(w, now))
            .collect::<Result<Vec<_>>>()?;
        let prepared = merge_start_decision(prepared);
        // One writer command: one savepoint, so all of them or none.
        self.write(move |conn| {
            let mut out = RunWritten::default();
            for w in &prepared {
                w.apply(conn, &mut out)?;
            }
            Ok(out)
        })
        .await
    }

    async fn action_succeeded(&self, idempotency_key: &str) -> Result<bool> {
        let key = idempotency_key.to_string();
        self.read(move |conn| sql_action_succeeded(conn, &key))
            .await
    }

    async fn finish_run(
        &self,
        run_id: Uuid,
        route: Option<usize>,
        outcome: RunOutcome,
        error: Option<&str>,
        now: UnixMillis,
    ) -> Result<()> {
        let error = error.map(str::to_string);
        self.write(move |conn| {
            sql_finish_run(
                conn,
                &run_id.to_string(),
                route,
                outcome,
                error.as_deref(),
                now,
            )
        })
        .await
    }

    /// Runs oldest first. An action begun and still in flight is left out; one cut off by a
    /// crash is reported as in doubt once its event was claimed again.
    async fn runs_for_event(&self, event_id: Uuid) -> Result<Vec<RunRecord>> {
        self.read(move |conn| {
            load_runs(
                conn,
                "WHERE event_id = ? ORDER BY started_at, rowid",
                vec![Value::Text(event_id.to_string())],
            )
        })
        .await
    }

    async fn list_in_doubt(&self, filter: InDoubtFilter) -> Result<Vec<InDoubtAction>> {
        self.read(move |conn| {
            let mut c = Conditions::default();
            c.always("a.status = 'in_doubt'");
            c.when("r.charter = ?", filter.charter);
            if filter.unsettled {
                c.always(
                    "NOT EXISTS (SELECT 1 FROM succeeded_keys k
                                 WHERE k.idempotency_key = a.idempotency_key)",
                );
            }
            let (where_sql, args) = c.with_limit(filter.limit);
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT a.run_id, r.event_id, r.charter, a.action, a.idempotency_key,
                         a.params, r.started_at, r.finished_at,
                         (SELECT count(*) FROM action_attempts t WHERE t.action_id = a.id),
                         EXISTS (SELECT 1 FROM succeeded_keys k
                                 WHERE k.idempotency_key = a.idempotency_key)
                     FROM action_records a INDEXED BY action_records_in_doubt
                     JOIN runs r ON r.id = a.run_id
                     {where_sql} ORDER BY a.id DESC LIMIT ?"
                ))
                .map_err(db("preparing the in-doubt listing"))?;
            let rows = stmt
                .query(rusqlite::params_from_iter(args))
                .map_err(db("listing in-doubt actions"))?;
            collect(rows, |r| {
                let attempts: i64 = rows::get_col(r, 8)?;
                Ok(InDoubtAction {
                    run_id: parse_uuid(&rows::get_col::<String>(r, 0)?)?,
                    event_id: parse_uuid(&rows::get_col::<String>(r, 1)?)?,
                    charter: rows::get_col(r, 2)?,
                    action: rows::get_col(r, 3)?,
                    idempotency_key: rows::get_col(r, 4)?,
                    params: rows::parse_json("action params", &rows::get_col::<String>(r, 5)?)?,
                    started_at: rows::get_col(r, 6)?,
                    interrupted_at: rows::get_col(r, 7)?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    settled: rows::get_col(r, 9)?,
                })
            })
        })
        .await
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>> {
        self.page_runs(filter).await
    }

    async fn count_runs(&self, filter: RunFilter) -> Result<u64> {
        self.count_runs_matching(filter).await
    }
}

/// Runs selected by `tail` (a `WHERE … ORDER BY …` over `runs`, with `args` for its `?`s),
/// each with its decision and finished actions.
pub(super) fn load_runs(conn: &Connection, tail: &str, args: Vec<Value>) -> Result<Vec<RunRecord>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT id, charter, charter_version, mode, started_at, finished_at, outcome,
                 decision, route, error, event_id
             FROM runs {tail}"
        ))
        .map_err(db("preparing a runs query"))?;
    let rows = stmt
        .query(rusqlite::params_from_iter(args))
        .map_err(db("loading runs"))?;
    let runs = collect(rows, |r| {
        let id: String = rows::get_col(r, 0)?;
        let outcome: Option<String> = rows::get_col(r, 6)?;
        let decision: Option<String> = rows::get_col(r, 7)?;
        let route: Option<i64> = rows::get_col(r, 8)?;
        let event_id: String = rows::get_col(r, 10)?;
        Ok((
            id.clone(),
            RunRecord {
                id: parse_uuid(&id)?,
                event_id: parse_uuid(&event_id)?,
                charter: rows::get_col(r, 1)?,
                charter_version: rows::get_col(r, 2)?,
                mode: rows::get_col(r, 3)?,
                started_at: rows::get_col(r, 4)?,
                finished_at: rows::get_col(r, 5)?,
                outcome: outcome
                    .map(|o| rows::parse_enum::<RunOutcome>("run outcome", &o))
                    .transpose()?,
                decision: decision
                    .map(|d| rows::parse_json::<Decision>("decision", &d))
                    .transpose()?,
                route: rows::opt_u32("route", route)?.map(|r| r as usize),
                actions: Vec::new(),
                error: rows::get_col(r, 9)?,
            },
        ))
    })?;
    let mut out = Vec::with_capacity(runs.len());
    for (id, mut run) in runs {
        run.actions = load_actions(conn, &id)?;
        out.push(run);
    }
    Ok(out)
}
