//! The work queue on SQLite: claims under the per-charter limit, leases, releases and requeues.

use charter_core::model::{EventStatus, UnixMillis};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use std::time::Duration;

use super::escalations::sql_latest_resolution;
use super::operator;
use super::rows::{self, EVENT_COLS, db, parse_uuid};
use super::run_writes::sql_release;
use super::runs::sql_close_interrupted;
use super::{SqliteStore, collect, now_millis};
use crate::{Claimed, QueueStore, Requeue, Result};

// The claim's candidate queries walk `events_claim` (charter, status, id), so rows come in id
// order (oldest first, ids being UUIDv7) without an ORDER BY: SQLite marks any statement whose
// ORDER BY it checks against a bound `WHERE` value, or that binds a `LIMIT`, to be re-prepared
// whenever its bindings change, and the statement cache clears bindings on every reuse.
// `INDEXED BY` pins the plan (and fails loudly if the index were ever dropped).

/// A charter's pending events, oldest first.
pub(super) const CLAIM_PENDING_SQL: &str =
    "SELECT id FROM events INDEXED BY events_claim WHERE charter = ?1 AND status = 'pending'";
/// A charter's processing events whose lease expired (or was never set), oldest first.
pub(super) const CLAIM_EXPIRED_SQL: &str = "SELECT id FROM events INDEXED BY events_claim \
     WHERE charter = ?1 AND status = 'processing' AND (lease_until IS NULL OR lease_until <= ?2)";
/// Take one claim candidate (the row as it is after the update is then read by id).
pub(super) const CLAIM_UPDATE_SQL: &str = "UPDATE events SET status = 'processing', lease_owner = ?2, \
     lease_until = ?3, attempts = attempts + 1, updated_at = ?4 WHERE id = ?1";

/// Ids of a charter's claim candidates, oldest first: pending events and processing events
/// whose lease expired (or was never set), at most `take` of each kind, merged.
///
/// The queries step through the index and stop after `take` rows instead of binding a
/// `LIMIT ?` (see above: re-preparing the claim's statements on every claim was ~5% of the
/// writer thread's time in the end-to-end profile, BENCHMARKS.md 2026-11-28 third pass).
fn claim_candidates(
    conn: &Connection,
    charter: &str,
    now: i64,
    take: usize,
) -> Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for (sql, expired) in [(CLAIM_PENDING_SQL, false), (CLAIM_EXPIRED_SQL, true)] {
        let mut stmt = conn
            .prepare_cached(sql)
            .map_err(db("preparing claim candidates"))?;
        let id = |r: &rusqlite::Row<'_>| r.get::<_, String>(0);
        // `query_map` steps lazily, so `take` stops the scan.
        let found = if expired {
            stmt.query_map(params![charter, now], id)
        } else {
            stmt.query_map(params![charter], id)
        }
        .map_err(db("selecting claim candidates"))?;
        for found in found.take(take) {
            ids.push(found.map_err(db("selecting claim candidates"))?);
        }
    }
    ids.sort();
    ids.truncate(take);
    Ok(ids)
}

impl QueueStore for SqliteStore {
    async fn claim(
        &self,
        charter: &str,
        worker: &str,
        max: usize,
        charter_limit: usize,
        lease: Duration,
        now: UnixMillis,
    ) -> Result<Vec<Claimed>> {
        let charter = charter.to_string();
        let worker = worker.to_string();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let lease_until = now.saturating_add(lease_ms);
        let (claimed, mode_override) = self
            .write(move |conn| {
                let paused: Option<bool> = conn
                    .prepare_cached("SELECT paused FROM charter_state WHERE charter = ?1")
                    .and_then(|mut s| s.query_row([&charter], |r| r.get(0)).optional())
                    .map_err(db("reading charter state"))?;
                if paused == Some(true) {
                    return Ok((Vec::new(), None));
                }
                let live: i64 = conn
                    .prepare_cached(
                        "SELECT count(*) FROM events
                     WHERE charter = ?1 AND status = 'processing' AND lease_until > ?2",
                    )
                    .and_then(|mut s| s.query_row(params![charter, now], |r| r.get(0)))
                    .map_err(db("counting live leases"))?;
                let live = usize::try_from(live).unwrap_or(0);
                let take = max.min(charter_limit.saturating_sub(live));
                if take == 0 {
                    return Ok((Vec::new(), None));
                }
                let ids = claim_candidates(conn, &charter, now, take)?;
                // An UPDATE then a read by primary key, not `UPDATE … RETURNING`: SQLite buffers
                // RETURNING rows in an ephemeral table that it builds and frees per statement
                // (~3% of the writer thread in the end-to-end profile).
                let mut update = conn
                    .prepare_cached(CLAIM_UPDATE_SQL)
                    .map_err(db("preparing claim"))?;
                let mut read = conn
                    .prepare_cached(&format!("SELECT {EVENT_COLS} FROM events WHERE id = ?1"))
                    .map_err(db("preparing claim"))?;
                let mut claimed = Vec::with_capacity(ids.len());
                for id in ids {
                    let n = update
                        .execute(params![id, worker, lease_until, now])
                        .map_err(db("claiming an event"))?;
                    if n != 1 {
                        continue;
                    }
                    let rows = read.query([&id]).map_err(db("reading a claimed event"))?;
                    // What each run needs to know before deciding, read here (one command on
                    // the writer's hot connection) instead of by reads per run on the pool.
                    for raw in collect(rows, rows::raw_event)? {
                        let resolution = sql_latest_resolution(conn, raw.id)?;
                        let interrupted = sql_close_interrupted(conn, &id, now)?;
                        claimed.push((raw, resolution, interrupted));
                    }
                }
                if claimed.is_empty() {
                    return Ok((claimed, None));
                }
                let mode = operator::read_modes(conn, Some(&charter))?
                    .into_iter()
                    .next();
                Ok((claimed, mode))
            })
            .await?;
        // The payloads are parsed here, off the writer thread. A row that does not parse is
        // reported as corrupt, as any read of it would be.
        claimed
            .into_iter()
            .map(|(raw, resolution, interrupted)| {
                let record = raw.decode()?;
                Ok(Claimed {
                    event: record.event,
                    attempt: record.attempts,
                    lease_until,
                    mode_override: mode_override.clone(),
                    resolution,
                    interrupted,
                })
            })
            .collect()
    }

    async fn renew(&self, event_id: Uuid, worker: &str, lease_until: UnixMillis) -> Result<bool> {
        let worker = worker.to_string();
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE events SET lease_until = ?3
                     WHERE id = ?1 AND lease_owner = ?2 AND status = 'processing'",
                )
                .and_then(|mut s| s.execute(params![event_id.to_string(), worker, lease_until]))
                .map_err(db("renewing a lease"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn release(
        &self,
        event_id: Uuid,
        worker: &str,
        status: EventStatus,
        now: UnixMillis,
    ) -> Result<bool> {
        let worker = worker.to_string();
        self.write(move |conn| sql_release(conn, &event_id.to_string(), &worker, status, now))
            .await
    }

    async fn requeue(&self, selector: Requeue, now: UnixMillis) -> Result<Vec<Uuid>> {
        self.write(move |conn| {
            const SET: &str = "UPDATE events SET status = 'pending', lease_owner = NULL,
                 lease_until = NULL, updated_at = ?1";
            let (sql, args) = match selector {
                Requeue::Event(id) => (
                    format!("{SET} WHERE id = ?2 AND status <> 'processing' RETURNING id"),
                    vec![Value::Integer(now), Value::Text(id.to_string())],
                ),
                Requeue::AllFailed { charter: Some(c) } => (
                    format!("{SET} WHERE charter = ?2 AND status = 'failed' RETURNING id"),
                    vec![Value::Integer(now), Value::Text(c)],
                ),
                Requeue::AllFailed { charter: None } => (
                    format!("{SET} WHERE status = 'failed' RETURNING id"),
                    vec![Value::Integer(now)],
                ),
                Requeue::Received {
                    charter,
                    since,
                    until,
                } => (
                    format!(
                        "{SET} WHERE status <> 'processing' AND (?2 IS NULL OR charter = ?2)
                             AND (?3 IS NULL OR received_at >= ?3)
                             AND (?4 IS NULL OR received_at < ?4) RETURNING id"
                    ),
                    vec![
                        Value::Integer(now),
                        charter.map_or(Value::Null, Value::Text),
                        since.map_or(Value::Null, Value::Integer),
                        until.map_or(Value::Null, Value::Integer),
                    ],
                ),
            };
            let mut stmt = conn.prepare(&sql).map_err(db("preparing requeue"))?;
            let rows = stmt
                .query(rusqlite::params_from_iter(args))
                .map_err(db("requeueing events"))?;
            let mut ids = collect(rows, |r| parse_uuid(&rows::get_col::<String>(r, 0)?))?;
            ids.sort();
            Ok(ids)
        })
        .await
    }

    async fn release_leases(&self, owner: Option<&str>, now: UnixMillis) -> Result<Vec<Uuid>> {
        let owner = owner.map(str::to_string);
        self.write(move |conn| {
            let mut stmt = conn
                .prepare(
                    "UPDATE events SET status = 'pending', lease_owner = NULL, lease_until = NULL,
                         updated_at = ?1
                     WHERE status = 'processing' AND (?2 IS NULL OR lease_owner = ?2)
                     RETURNING id",
                )
                .map_err(db("preparing the lease release"))?;
            let rows = stmt
                .query(params![now, owner])
                .map_err(db("releasing leases"))?;
            let mut ids = collect(rows, |r| parse_uuid(&rows::get_col::<String>(r, 0)?))?;
            ids.sort();
            Ok(ids)
        })
        .await
    }

    fn single_process(&self) -> bool {
        self.holds_serving_lock()
    }

    /// Leases are judged expired against this machine's wall clock (the trait passes no `now`).
    async fn pending_counts(&self) -> Result<Vec<(String, u64)>> {
        let now = now_millis();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT charter, count(*) FROM events
                     WHERE status = 'pending'
                        OR (status = 'processing' AND (lease_until IS NULL OR lease_until <= ?1))
                     GROUP BY charter ORDER BY charter",
                )
                .map_err(db("preparing pending_counts"))?;
            let rows = stmt.query([now]).map_err(db("counting pending events"))?;
            collect(rows, |r| {
                let n: i64 = rows::get_col(r, 1)?;
                Ok((rows::get_col(r, 0)?, u64::try_from(n).unwrap_or(0)))
            })
        })
        .await
    }
}
