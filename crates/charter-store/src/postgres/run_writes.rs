//! The writes of a run on PostgreSQL.
//!
//! The single writes (`start_run`, `begin_action`, …) are functions of a client or an open
//! transaction. A batch ([`record_run`]) is written in one round trip per durable point
//! (issue #29).
//!
//! [`record_run`] turns every write of a batch into one prepared statement (cached per
//! connection), then sends `BEGIN`, the statements and `COMMIT` together: the driver
//! pipelines requests whose futures are polled at once on one connection, so the batch costs
//! one round trip and one WAL flush whatever its length. The meaning is the one
//! [`crate::RunStore::record_run`] documents:
//!
//! * All or nothing. A write that must find its row (a decision or a run's end for a run
//!   that exists, an attempt of an action that was begun) asserts it inside its statement
//!   (`charter_expect_found`, migration 0015), so a miss fails the statement, PostgreSQL
//!   turns the pipelined `COMMIT` into a rollback, and the batch reports "not found". A
//!   write for an unknown run fails on its foreign key, with the same effect.
//! * An action's intent is written only if its idempotency key has not succeeded: the check
//!   is part of the insert (`WHERE NOT EXISTS`), and an intent that inserted nothing reports
//!   [`RunWritten::already_succeeded`].
//! * A release by a worker without the lease changes nothing and reports `released: false`;
//!   the batch's other writes stand.
//! * An action's attempts carried by its finished record are one multi-row insert, and a
//!   run's start directly followed by its decision is one insert (as on SQLite).

use std::future::Future;
use std::pin::Pin;

use charter_core::model::{ActionStatus, UnixMillis};
use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use tokio_postgres::{Row, Statement};
use uuid::Uuid;

use super::rows::{db, enum_name, get};
use super::{Param, PgStore, now_millis, param_refs, queue};
use crate::{Result, RunWrite, RunWritten, StoreError};
use charter_core::model::{ActionRecord, AttemptRecord, Decision, RunOutcome};
use deadpool_postgres::GenericClient;

/// A write that references run `run_id` failed: the run does not exist (its foreign key)
/// is "not found"; anything else is a database error about `context`.
fn run_write_error(
    run_id: Uuid,
    context: &'static str,
) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
            StoreError::NotFound(format!("run {run_id}"))
        } else {
            db(context)(e)
        }
    }
}

/// Add one attempt to an action. `replace`: an attempt with the same number is overwritten
/// (recorded one by one); otherwise an existing one is kept (carried by a finished record).
async fn insert_attempt(
    tx: &deadpool_postgres::Transaction<'_>,
    action_id: i64,
    a: &AttemptRecord,
    replace: bool,
) -> Result<()> {
    let sql = if replace {
        "INSERT INTO action_attempts (action_id, attempt, started_at, duration_ms, http_status,
             error, ok)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (action_id, attempt) DO UPDATE SET started_at = EXCLUDED.started_at,
             duration_ms = EXCLUDED.duration_ms, http_status = EXCLUDED.http_status,
             error = EXCLUDED.error, ok = EXCLUDED.ok"
    } else {
        "INSERT INTO action_attempts (action_id, attempt, started_at, duration_ms, http_status,
             error, ok)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (action_id, attempt) DO NOTHING"
    };
    let stmt = tx
        .prepare_cached(sql)
        .await
        .map_err(db("preparing an attempt"))?;
    let attempt = i64::from(a.attempt);
    let duration = i64::try_from(a.duration_ms).unwrap_or(i64::MAX);
    let http = a.status.map(i32::from);
    tx.execute(
        &stmt,
        &[
            &action_id,
            &attempt,
            &a.started_at,
            &duration,
            &http,
            &a.error,
            &a.ok,
        ],
    )
    .await
    .map_err(db("recording an attempt"))?;
    Ok(())
}

// The run writes as functions of a client or an open transaction, shared by the
// single-write methods and by `record_run` (several in one transaction).

pub(super) async fn pg_action_succeeded<C: GenericClient>(
    c: &C,
    idempotency_key: &str,
) -> Result<bool> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM succeeded_keys WHERE idempotency_key = $1")
        .await
        .map_err(db("preparing action_succeeded"))?;
    let found = c
        .query_opt(&stmt, &[&idempotency_key])
        .await
        .map_err(db("looking up a succeeded key"))?;
    Ok(found.is_some())
}

pub(super) async fn pg_start_run<C: GenericClient>(
    c: &C,
    run_id: Uuid,
    event_id: Uuid,
    charter: &str,
    charter_version: &str,
    mode: &str,
    now: UnixMillis,
) -> Result<()> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO runs (id, event_id, charter, charter_version, mode, started_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(db("preparing start_run"))?;
    c.execute(
        &stmt,
        &[&run_id, &event_id, &charter, &charter_version, &mode, &now],
    )
    .await
    .map_err(db("starting a run"))?;
    Ok(())
}

pub(super) async fn pg_record_decision<C: GenericClient>(
    c: &C,
    run_id: Uuid,
    decision: &Decision,
) -> Result<()> {
    let stage = enum_name(&decision.stage);
    let stmt = c
        .prepare_cached(
            "UPDATE runs SET decision = $2, decision_label = $3, decision_stage = $4,
                 decision_confidence = $5
             WHERE id = $1",
        )
        .await
        .map_err(db("preparing record_decision"))?;
    let n = c
        .execute(
            &stmt,
            &[
                &run_id,
                &Json(decision),
                &decision.label,
                &stage,
                &decision.confidence,
            ],
        )
        .await
        .map_err(db("recording a decision"))?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("run {run_id}")));
    }
    Ok(())
}

pub(super) async fn pg_begin_action(
    tx: &deadpool_postgres::Transaction<'_>,
    run_id: Uuid,
    action: &str,
    idempotency_key: &str,
    params: &serde_json::Value,
) -> Result<()> {
    // An unknown run fails the insert on its foreign key (reported as not found).
    let stmt = tx
        .prepare_cached(
            "INSERT INTO action_records (run_id, action, idempotency_key, params, status)
             VALUES ($1, $2, $3, $4, 'pending')
             ON CONFLICT (run_id, action) DO UPDATE SET
                 idempotency_key = EXCLUDED.idempotency_key, params = EXCLUDED.params,
                 status = 'pending'",
        )
        .await
        .map_err(db("preparing begin_action"))?;
    tx.execute(&stmt, &[&run_id, &action, &idempotency_key, params])
        .await
        .map_err(run_write_error(run_id, "beginning an action"))?;
    Ok(())
}

pub(super) async fn pg_record_attempt(
    tx: &deadpool_postgres::Transaction<'_>,
    run_id: Uuid,
    action: &str,
    attempt: &AttemptRecord,
) -> Result<()> {
    let stmt = tx
        .prepare_cached("SELECT id FROM action_records WHERE run_id = $1 AND action = $2")
        .await
        .map_err(db("preparing an action lookup"))?;
    let row = tx
        .query_opt(&stmt, &[&run_id, &action])
        .await
        .map_err(db("looking up an action"))?
        .ok_or_else(|| {
            StoreError::NotFound(format!("action {action} was not begun in run {run_id}"))
        })?;
    let id: i64 = get(&row, 0)?;
    insert_attempt(tx, id, attempt, true).await
}

pub(super) async fn pg_finish_action(
    tx: &deadpool_postgres::Transaction<'_>,
    run_id: Uuid,
    record: &ActionRecord,
    succeeded_at: UnixMillis,
) -> Result<()> {
    // An unknown run fails the insert on its foreign key (reported as not found).
    let stmt = tx
        .prepare_cached(
            "INSERT INTO action_records (run_id, action, idempotency_key, params, status)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (run_id, action) DO UPDATE SET status = EXCLUDED.status,
                 idempotency_key = EXCLUDED.idempotency_key, params = EXCLUDED.params
             RETURNING id",
        )
        .await
        .map_err(db("preparing finish_action"))?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &run_id,
                &record.action,
                &record.idempotency_key,
                &record.params,
                &record.status.as_str(),
            ],
        )
        .await
        .map_err(run_write_error(run_id, "finishing an action"))?;
    let id: i64 = get(&row, 0)?;
    // Attempts recorded one by one are kept; ones only carried by the record are added.
    for attempt in &record.attempts {
        insert_attempt(tx, id, attempt, false).await?;
    }
    if record.status == ActionStatus::Succeeded {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO succeeded_keys (idempotency_key, run_id, action, succeeded_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .await
            .map_err(db("preparing a succeeded key"))?;
        tx.execute(
            &stmt,
            &[
                &record.idempotency_key,
                &run_id,
                &record.action,
                &succeeded_at,
            ],
        )
        .await
        .map_err(db("recording a succeeded key"))?;
    }
    Ok(())
}

pub(super) async fn pg_finish_run<C: GenericClient>(
    c: &C,
    run_id: Uuid,
    route: Option<usize>,
    outcome: RunOutcome,
    error: Option<&str>,
    now: UnixMillis,
) -> Result<()> {
    let route = route.map(|r| i64::try_from(r).unwrap_or(i64::MAX));
    let stmt = c
        .prepare_cached(
            "UPDATE runs SET finished_at = $2, outcome = $3, route = $4, error = $5
             WHERE id = $1",
        )
        .await
        .map_err(db("preparing finish_run"))?;
    let n = c
        .execute(&stmt, &[&run_id, &now, &outcome.as_str(), &route, &error])
        .await
        .map_err(db("finishing a run"))?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("run {run_id}")));
    }
    Ok(())
}

/// How a statement's answer is read.
enum Check {
    /// Nothing to read; an error is a database error about the context.
    Plain(&'static str),
    /// A write about run `run_id`: a foreign-key violation or a failed
    /// `charter_expect_found` means `what` was not found.
    Found { what: String, context: &'static str },
    /// An action's intent: no row returned means its key had already succeeded.
    Intent(Uuid),
    /// A release: one row with the number of events released.
    Release,
}

/// One write of the batch, ready to send.
struct Step {
    stmt: Statement,
    params: Vec<Param>,
    check: Check,
}

const START_SQL: &str =
    "INSERT INTO runs (id, event_id, charter, charter_version, mode, started_at)
     VALUES ($1, $2, $3, $4, $5, $6)";

/// A run's start directly followed by its decision: one row written once.
const START_DECIDED_SQL: &str =
    "INSERT INTO runs (id, event_id, charter, charter_version, mode, started_at, decision,
         decision_label, decision_stage, decision_confidence)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

const DECISION_SQL: &str = "WITH u AS (
         UPDATE runs SET decision = $2, decision_label = $3, decision_stage = $4,
             decision_confidence = $5
         WHERE id = $1 RETURNING 1
     )
     SELECT charter_expect_found(count(*), 'run') FROM u";

const INTENT_SQL: &str =
    "INSERT INTO action_records (run_id, action, idempotency_key, params, status)
     SELECT $1, $2, $3, $4, 'pending'
     WHERE NOT EXISTS (SELECT 1 FROM succeeded_keys WHERE idempotency_key = $3)
     ON CONFLICT (run_id, action) DO UPDATE SET
         idempotency_key = EXCLUDED.idempotency_key, params = EXCLUDED.params,
         status = 'pending'
     RETURNING 1";

/// One attempt recorded on its own (replacing one with the same number).
const ATTEMPT_SQL: &str = "WITH a AS (
         INSERT INTO action_attempts (action_id, attempt, started_at, duration_ms,
             http_status, error, ok)
         SELECT id, $3, $4, $5, $6, $7, $8 FROM action_records
         WHERE run_id = $1 AND action = $2
         ON CONFLICT (action_id, attempt) DO UPDATE SET started_at = EXCLUDED.started_at,
             duration_ms = EXCLUDED.duration_ms, http_status = EXCLUDED.http_status,
             error = EXCLUDED.error, ok = EXCLUDED.ok
         RETURNING 1
     )
     SELECT charter_expect_found(count(*), 'action') FROM a";

const FINISH_ACTION_SQL: &str =
    "INSERT INTO action_records (run_id, action, idempotency_key, params, status)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (run_id, action) DO UPDATE SET status = EXCLUDED.status,
         idempotency_key = EXCLUDED.idempotency_key, params = EXCLUDED.params";

/// The attempts carried by a finished record, in one insert (ones recorded one by one are
/// kept). Runs after [`FINISH_ACTION_SQL`] in the same transaction, so it finds the action.
const CARRIED_ATTEMPTS_SQL: &str =
    "INSERT INTO action_attempts (action_id, attempt, started_at, duration_ms, http_status,
         error, ok)
     SELECT a.id, t.attempt, t.started_at, t.duration_ms, t.http_status, t.error, t.ok
     FROM action_records AS a,
          unnest($3::BIGINT[], $4::BIGINT[], $5::BIGINT[], $6::INTEGER[], $7::TEXT[],
                 $8::BOOLEAN[]) AS t(attempt, started_at, duration_ms, http_status, error, ok)
     WHERE a.run_id = $1 AND a.action = $2
     ON CONFLICT (action_id, attempt) DO NOTHING";

const SUCCEEDED_KEY_SQL: &str =
    "INSERT INTO succeeded_keys (idempotency_key, run_id, action, succeeded_at)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (idempotency_key) DO NOTHING";

const MEASUREMENT_SQL: &str =
    "INSERT INTO measurements (charter, name, run_id, event_id, value, at, detail)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

const FINISH_RUN_SQL: &str = "WITH u AS (
         UPDATE runs SET finished_at = $2, outcome = $3, route = $4, error = $5
         WHERE id = $1 RETURNING 1
     )
     SELECT charter_expect_found(count(*), 'run') FROM u";

async fn step(client: &Object, sql: &str, params: Vec<Param>, check: Check) -> Result<Step> {
    let stmt = client
        .prepare_cached(sql)
        .await
        .map_err(db("preparing a run write"))?;
    Ok(Step {
        stmt,
        params,
        check,
    })
}

/// The statements of one write (most are one; a finished action is up to three).
async fn steps_of(
    client: &Object,
    w: &RunWrite,
    now: UnixMillis,
    out: &mut Vec<Step>,
) -> Result<()> {
    for (sql, params, check) in statements_of(w, now) {
        out.push(step(client, sql, params, check).await?);
    }
    Ok(())
}

/// A statement of a batch: its SQL, its parameters and how its answer is read.
type Planned = (&'static str, Vec<Param>, Check);

/// The statements that write `w`, in order (`now` is the batch's time, for a succeeded key).
fn statements_of(w: &RunWrite, now: UnixMillis) -> Vec<Planned> {
    match w {
        RunWrite::Start {
            run_id,
            event_id,
            charter,
            charter_version,
            mode,
            now,
        } => {
            let params: Vec<Param> = vec![
                Box::new(*run_id),
                Box::new(*event_id),
                Box::new(charter.clone()),
                Box::new(charter_version.clone()),
                Box::new(mode.clone()),
                Box::new(*now),
            ];
            vec![(START_SQL, params, Check::Plain("starting a run"))]
        }
        RunWrite::Decision { run_id, decision } => {
            let params: Vec<Param> = vec![
                Box::new(*run_id),
                Box::new(Json(decision.clone())),
                Box::new(decision.label.clone()),
                Box::new(enum_name(&decision.stage)),
                Box::new(decision.confidence),
            ];
            let check = Check::Found {
                what: format!("run {run_id}"),
                context: "recording a decision",
            };
            vec![(DECISION_SQL, params, check)]
        }
        RunWrite::BeginAction {
            run_id,
            action,
            idempotency_key,
            params,
        } => {
            let p: Vec<Param> = vec![
                Box::new(*run_id),
                Box::new(action.clone()),
                Box::new(idempotency_key.clone()),
                Box::new(params.clone()),
            ];
            vec![(INTENT_SQL, p, Check::Intent(*run_id))]
        }
        RunWrite::Attempt {
            run_id,
            action,
            attempt,
        } => vec![attempt_statement(*run_id, action, attempt)],
        RunWrite::FinishAction { run_id, record } => finish_action_statements(*run_id, record, now),
        RunWrite::Measurement(m) => {
            let params: Vec<Param> = vec![
                Box::new(m.charter.clone()),
                Box::new(m.name.clone()),
                Box::new(m.run_id),
                Box::new(m.event_id),
                Box::new(m.value),
                Box::new(m.at),
                Box::new(m.detail.clone()),
            ];
            vec![(
                MEASUREMENT_SQL,
                params,
                Check::Plain("recording a measurement"),
            )]
        }
        RunWrite::FinishRun {
            run_id,
            route,
            outcome,
            error,
            now,
        } => {
            let params: Vec<Param> = vec![
                Box::new(*run_id),
                Box::new(*now),
                Box::new(outcome.as_str()),
                Box::new(route.map(|r| i64::try_from(r).unwrap_or(i64::MAX))),
                Box::new(error.clone()),
            ];
            let check = Check::Found {
                what: format!("run {run_id}"),
                context: "finishing a run",
            };
            vec![(FINISH_RUN_SQL, params, check)]
        }
        RunWrite::Release {
            event_id,
            worker,
            status,
            now,
        } => {
            let params: Vec<Param> = vec![
                Box::new(*event_id),
                Box::new(worker.clone()),
                Box::new(status.as_str()),
                Box::new(*now),
            ];
            vec![(queue::RELEASE_SQL, params, Check::Release)]
        }
    }
}

/// The statement of one attempt of an action begun in run `run_id`.
fn attempt_statement(run_id: Uuid, action: &str, a: &AttemptRecord) -> Planned {
    let params: Vec<Param> = vec![
        Box::new(run_id),
        Box::new(action.to_string()),
        Box::new(i64::from(a.attempt)),
        Box::new(a.started_at),
        Box::new(i64::try_from(a.duration_ms).unwrap_or(i64::MAX)),
        Box::new(a.status.map(i32::from)),
        Box::new(a.error.clone()),
        Box::new(a.ok),
    ];
    let check = Check::Found {
        what: format!("action {action} was not begun in run {run_id}"),
        context: "recording an attempt",
    };
    (ATTEMPT_SQL, params, check)
}

/// The statements of a finished action: its record, the attempts it carries (one
/// multi-row insert) and, when it succeeded, its idempotency key.
fn finish_action_statements(run_id: Uuid, record: &ActionRecord, now: UnixMillis) -> Vec<Planned> {
    let params: Vec<Param> = vec![
        Box::new(run_id),
        Box::new(record.action.clone()),
        Box::new(record.idempotency_key.clone()),
        Box::new(record.params.clone()),
        Box::new(record.status.as_str()),
    ];
    let check = Check::Found {
        what: format!("run {run_id}"),
        context: "finishing an action",
    };
    let mut out = vec![(FINISH_ACTION_SQL, params, check)];
    if !record.attempts.is_empty() {
        let at = &record.attempts;
        let params: Vec<Param> = vec![
            Box::new(run_id),
            Box::new(record.action.clone()),
            Box::new(at.iter().map(|a| i64::from(a.attempt)).collect::<Vec<_>>()),
            Box::new(at.iter().map(|a| a.started_at).collect::<Vec<_>>()),
            Box::new(
                at.iter()
                    .map(|a| i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
                    .collect::<Vec<_>>(),
            ),
            Box::new(
                at.iter()
                    .map(|a| a.status.map(i32::from))
                    .collect::<Vec<_>>(),
            ),
            Box::new(at.iter().map(|a| a.error.clone()).collect::<Vec<_>>()),
            Box::new(at.iter().map(|a| a.ok).collect::<Vec<_>>()),
        ];
        let check = Check::Plain("recording an action's attempts");
        out.push((CARRIED_ATTEMPTS_SQL, params, check));
    }
    if record.status == ActionStatus::Succeeded {
        let params: Vec<Param> = vec![
            Box::new(record.idempotency_key.clone()),
            Box::new(run_id),
            Box::new(record.action.clone()),
            Box::new(now),
        ];
        out.push((
            SUCCEEDED_KEY_SQL,
            params,
            Check::Plain("recording a succeeded key"),
        ));
    }
    out
}

/// A run's `Start` directly followed by its own `Decision` (how the worker writes them) as
/// one insert: one row version and one index entry set instead of an insert and an update.
async fn start_decided(client: &Object, writes: &[RunWrite]) -> Result<Option<Step>> {
    let [
        RunWrite::Start {
            run_id,
            event_id,
            charter,
            charter_version,
            mode,
            now,
        },
        RunWrite::Decision {
            run_id: decided,
            decision,
        },
        ..,
    ] = writes
    else {
        return Ok(None);
    };
    if run_id != decided {
        return Ok(None);
    }
    let params: Vec<Param> = vec![
        Box::new(*run_id),
        Box::new(*event_id),
        Box::new(charter.clone()),
        Box::new(charter_version.clone()),
        Box::new(mode.clone()),
        Box::new(*now),
        Box::new(Json(decision.clone())),
        Box::new(decision.label.clone()),
        Box::new(enum_name(&decision.stage)),
        Box::new(decision.confidence),
    ];
    let step = step(
        client,
        START_DECIDED_SQL,
        params,
        Check::Plain("starting a run"),
    )
    .await?;
    Ok(Some(step))
}

/// The error a failed statement reports.
fn step_error(check: &Check, e: tokio_postgres::Error) -> StoreError {
    match check {
        Check::Found { what, context } => {
            let missing = matches!(
                e.code(),
                Some(&SqlState::FOREIGN_KEY_VIOLATION) | Some(&SqlState::NO_DATA_FOUND)
            );
            if missing {
                StoreError::NotFound(what.clone())
            } else {
                db(context)(e)
            }
        }
        Check::Intent(run_id) => {
            if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
                StoreError::NotFound(format!("run {run_id}"))
            } else {
                db("beginning an action")(e)
            }
        }
        Check::Plain(context) => db(context)(e),
        Check::Release => db("releasing a lease")(e),
    }
}

type Sent<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

/// Apply `writes` in one transaction, sent as one pipeline (see the module's documentation).
pub(super) async fn record_run(store: &PgStore, writes: Vec<RunWrite>) -> Result<RunWritten> {
    let now = now_millis();
    let client = store.client().await?;
    let mut steps = Vec::with_capacity(writes.len() + 2);
    let mut i = 0;
    while i < writes.len() {
        if let Some(step) = start_decided(&client, &writes[i..]).await? {
            steps.push(step);
            i += 2;
            continue;
        }
        steps_of(&client, &writes[i], now, &mut steps).await?;
        i += 1;
    }
    let refs: Vec<Vec<_>> = steps.iter().map(|s| param_refs(&s.params)).collect();
    // BEGIN, every statement, COMMIT: the futures are polled in this order on their first
    // poll, which is when each request is queued on the connection. (A parameter the driver
    // could not encode would fail before its request is queued, while the COMMIT still
    // goes: the parameters' types are fixed by the statements above, so that is a bug
    // caught by the conformance suite, not an input error.)
    let mut sent: Vec<Sent<'_>> = Vec::with_capacity(steps.len() + 2);
    sent.push(Box::pin(async {
        client.batch_execute("BEGIN").await.map(|()| Vec::new())
    }));
    for (s, p) in steps.iter().zip(&refs) {
        sent.push(Box::pin(client.query(&s.stmt, p)));
    }
    sent.push(Box::pin(async {
        client.batch_execute("COMMIT").await.map(|()| Vec::new())
    }));
    let mut answers = futures_util::future::join_all(sent).await.into_iter();

    answers
        .next()
        .unwrap_or(Ok(Vec::new()))
        .map_err(db("beginning record_run"))?;
    let mut out = RunWritten::default();
    let mut failed: Option<StoreError> = None;
    for s in &steps {
        let answer = answers.next().unwrap_or(Ok(Vec::new()));
        if failed.is_some() {
            continue; // The transaction was aborted at the first failure.
        }
        match answer {
            Err(e) => failed = Some(step_error(&s.check, e)),
            Ok(rows) => match s.check {
                Check::Intent(_) => {
                    if rows.is_empty() {
                        out.already_succeeded = true;
                    }
                }
                Check::Release => {
                    let n: i64 = match rows.first() {
                        Some(r) => get(r, 0)?,
                        None => 0,
                    };
                    out.released = Some(n == 1);
                }
                Check::Plain(_) | Check::Found { .. } => {}
            },
        }
    }
    // After a failure PostgreSQL answers the COMMIT with a rollback.
    let committed = answers
        .next()
        .unwrap_or(Ok(Vec::new()))
        .map_err(db("committing record_run"));
    match failed {
        Some(e) => Err(e),
        None => committed.map(|_| out),
    }
}
