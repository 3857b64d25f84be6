//! The work queue on PostgreSQL, built for several nodes claiming at once (issue #29).
//!
//! * **Claims do not serialise nodes.** The per-charter limit is a set of slot rows
//!   (`claim_slots`, migration 0015): a charter with limit N uses slots `0..N-1`. One claim
//!   is one statement (one round trip, its own transaction) that locks free slots with
//!   `FOR UPDATE SKIP LOCKED`, picks as many of the charter's oldest claimable events (also
//!   `SKIP LOCKED`), and records each event in its slot with the lease's expiry. Two nodes
//!   claiming the same charter at the same moment lock different slots and different events;
//!   neither waits for the other. The limit holds because an event in processing with a
//!   live lease always holds a slot whose lease is live (renewing a lease renews its slot,
//!   releasing an event frees its slot), and a slot is only taken while free.
//! * **Claims cost the same whatever the backlog.** The events are found through partial
//!   indexes matching the claim (`events_pending (charter, id) WHERE status = 'pending'`,
//!   `events_leased (charter, lease_until) WHERE status = 'processing'`): reading the oldest
//!   k pending events reads k index entries, however many are queued or done.
//! * A lowered limit: slots at or above the new limit that still hold a live lease are
//!   subtracted from what a claim may take, so the limit holds across a configuration change.
//! * A paused charter's claim takes nothing; the pause is read by the claim statement itself
//!   (without a lock: a claim already running when the pause commits may still take events).
//! * What a run needs before deciding (the charter's mode override, human resolutions, the
//!   runs of the claimed events that were cut off) is read right after the claim, as three
//!   statements pipelined on the connection (one more round trip). Closing the interrupted
//!   runs is its own statement: a failure there leaves the events leased until their lease
//!   expires, then they are claimed again and the close is retried.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use charter_core::model::{EventStatus, UnixMillis};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::rows::{self, db, get};
use super::{PgStore, escalations, now_millis, operator};
use crate::{Claimed, INTERRUPTED_ERROR, InDoubtRef, InterruptedRun, QueueStore, Requeue, Result};

/// The slot count already ensured per charter by this process (slot rows are created once,
/// on a charter's first claim at a given limit).
#[derive(Debug, Default)]
pub(super) struct SlotsMade(Mutex<HashMap<String, usize>>);

impl SlotsMade {
    /// Whether slots `0..limit` of `charter` are known to exist.
    fn has(&self, charter: &str, limit: usize) -> bool {
        let made = self.0.lock().unwrap_or_else(|e| e.into_inner());
        made.get(charter).is_some_and(|&n| n >= limit)
    }

    fn note(&self, charter: &str, limit: usize) {
        let mut made = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = made.entry(charter.to_string()).or_default();
        *n = (*n).max(limit);
    }
}

/// The claim, one statement. Parameters: $1 charter, $2 now, $3 the charter's limit,
/// $4 the most to take, $5 the worker, $6 the lease's expiry.
fn claim_sql() -> String {
    format!(
        "WITH free AS (
             SELECT slot FROM claim_slots
             WHERE charter = $1 AND slot < $3 AND (lease_until IS NULL OR lease_until <= $2)
               AND NOT EXISTS (SELECT 1 FROM charter_state WHERE charter = $1 AND paused)
             ORDER BY slot
             LIMIT $4
             FOR UPDATE SKIP LOCKED
         ),
         cap AS (
             SELECT least($4, (SELECT count(*) FROM free)
                 - (SELECT count(*) FROM claim_slots
                    WHERE charter = $1 AND slot >= $3 AND lease_until > $2)) AS n
         ),
         expired AS (
             SELECT id FROM events
             WHERE charter = $1 AND status = 'processing' AND lease_until <= $2
             ORDER BY lease_until
             LIMIT (SELECT greatest(n, 0) FROM cap)
             FOR UPDATE SKIP LOCKED
         ),
         pending AS (
             SELECT id FROM events
             WHERE charter = $1 AND status = 'pending'
             ORDER BY id
             LIMIT (SELECT greatest(n, 0) FROM cap)
             FOR UPDATE SKIP LOCKED
         ),
         picked AS (
             SELECT id, row_number() OVER (ORDER BY id) AS k
             FROM (SELECT id FROM expired UNION ALL SELECT id FROM pending
                   ORDER BY id LIMIT (SELECT greatest(n, 0) FROM cap)) AS p
         ),
         numbered AS (
             SELECT slot, row_number() OVER (ORDER BY slot) AS k FROM free
         ),
         taken AS (
             UPDATE claim_slots AS s SET event_id = picked.id, lease_until = $6
             FROM picked JOIN numbered ON numbered.k = picked.k
             WHERE s.charter = $1 AND s.slot = numbered.slot
             RETURNING s.slot, s.event_id
         )
         UPDATE events AS e SET status = 'processing', lease_owner = $5, lease_until = $6,
             attempts = e.attempts + 1, updated_at = $2, claim_slot = taken.slot
         FROM taken WHERE e.id = taken.event_id
         RETURNING {}",
        rows::EVENT_COLS_E
    )
}

impl PgStore {
    /// Make sure slots `0..limit` of `charter` exist (once per charter and limit per process).
    async fn ensure_slots<C: GenericClient>(
        &self,
        c: &C,
        charter: &str,
        limit: usize,
    ) -> Result<()> {
        if self.inner.slots.has(charter, limit) {
            return Ok(());
        }
        let n = i32::try_from(limit).unwrap_or(i32::MAX);
        let stmt = c
            .prepare_cached(
                "INSERT INTO claim_slots (charter, slot)
                 SELECT $1, g FROM generate_series(0, $2 - 1) AS g
                 ON CONFLICT (charter, slot) DO NOTHING",
            )
            .await
            .map_err(db("preparing the claim slots"))?;
        c.execute(&stmt, &[&charter, &n])
            .await
            .map_err(db("creating the claim slots"))?;
        self.inner.slots.note(charter, limit);
        Ok(())
    }
}

impl QueueStore for PgStore {
    async fn claim(
        &self,
        charter: &str,
        worker: &str,
        max: usize,
        charter_limit: usize,
        lease: Duration,
        now: UnixMillis,
    ) -> Result<Vec<Claimed>> {
        let take = max.min(charter_limit);
        if take == 0 {
            return Ok(Vec::new());
        }
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let lease_until = now.saturating_add(lease_ms);
        let client = self.client().await?;
        self.ensure_slots(&client, charter, charter_limit).await?;
        let limit = i32::try_from(charter_limit).unwrap_or(i32::MAX);
        let take = i64::try_from(take).unwrap_or(i64::MAX);
        let stmt = client
            .prepare_cached(&claim_sql())
            .await
            .map_err(db("preparing claim"))?;
        let rows = client
            .query(
                &stmt,
                &[&charter, &now, &limit, &take, &worker, &lease_until],
            )
            .await
            .map_err(db("claiming events"))?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let record = rows::event_record(row)?;
                Ok(Claimed {
                    event: record.event,
                    attempt: record.attempts,
                    lease_until,
                    mode_override: None,
                    resolution: None,
                    interrupted: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|c| c.event.id);
        if claimed.is_empty() {
            return Ok(claimed);
        }
        // What each run needs before deciding: three statements sent together (the driver
        // pipelines futures polled at once on one connection), one round trip.
        let ids: Vec<Uuid> = claimed.iter().map(|c| c.event.id).collect();
        let (mode, resolutions, interrupted) = tokio::join!(
            operator::read_mode(&client, charter),
            escalations::latest_resolutions(&client, &ids),
            close_interrupted(&client, &ids, now),
        );
        let (mode, mut resolutions, mut interrupted) = (mode?, resolutions?, interrupted?);
        for c in &mut claimed {
            c.mode_override = mode.clone();
            if let Some(i) = resolutions.iter().position(|r| r.event_id == c.event.id) {
                c.resolution = Some(resolutions.swap_remove(i));
            }
            c.interrupted = interrupted.remove(&c.event.id).unwrap_or_default();
        }
        Ok(claimed)
    }

    async fn renew(&self, event_id: Uuid, worker: &str, lease_until: UnixMillis) -> Result<bool> {
        let client = self.client().await?;
        // The event's lease and its slot's together; a slot taken by another event since
        // (the lease had expired) means the lease is lost.
        let stmt = client
            .prepare_cached(
                "WITH held AS (
                     SELECT charter, claim_slot FROM events
                     WHERE id = $1 AND lease_owner = $2 AND status = 'processing'
                 ),
                 slot AS (
                     UPDATE claim_slots AS s SET lease_until = $3
                     FROM held
                     WHERE s.charter = held.charter AND s.slot = held.claim_slot
                       AND s.event_id = $1
                     RETURNING s.slot
                 ),
                 renewed AS (
                     UPDATE events SET lease_until = $3
                     WHERE id = $1 AND lease_owner = $2 AND status = 'processing'
                       AND (claim_slot IS NULL OR EXISTS (SELECT 1 FROM slot))
                     RETURNING id
                 )
                 SELECT count(*) FROM renewed",
            )
            .await
            .map_err(db("preparing renew"))?;
        let row = client
            .query_one(&stmt, &[&event_id, &worker, &lease_until])
            .await
            .map_err(db("renewing a lease"))?;
        let n: i64 = get(&row, 0)?;
        Ok(n == 1)
    }

    async fn release(
        &self,
        event_id: Uuid,
        worker: &str,
        status: EventStatus,
        now: UnixMillis,
    ) -> Result<bool> {
        let client = self.client().await?;
        pg_release(&client, event_id, worker, status, now).await
    }

    async fn requeue(&self, selector: Requeue, now: UnixMillis) -> Result<Vec<Uuid>> {
        const SET: &str = "UPDATE events SET status = 'pending', lease_owner = NULL,
             lease_until = NULL, updated_at = $1";
        let client = self.client().await?;
        let rows = match selector {
            Requeue::Event(id) => {
                client
                    .query(
                        &format!("{SET} WHERE id = $2 AND status <> 'processing' RETURNING id"),
                        &[&now, &id],
                    )
                    .await
            }
            Requeue::AllFailed { charter: Some(c) } => {
                client
                    .query(
                        &format!("{SET} WHERE charter = $2 AND status = 'failed' RETURNING id"),
                        &[&now, &c],
                    )
                    .await
            }
            Requeue::AllFailed { charter: None } => {
                client
                    .query(
                        &format!("{SET} WHERE status = 'failed' RETURNING id"),
                        &[&now],
                    )
                    .await
            }
            Requeue::Received {
                charter,
                since,
                until,
            } => {
                client
                    .query(
                        &format!(
                            "{SET} WHERE status <> 'processing'
                                 AND ($2::TEXT IS NULL OR charter = $2)
                                 AND ($3::BIGINT IS NULL OR received_at >= $3)
                                 AND ($4::BIGINT IS NULL OR received_at < $4) RETURNING id"
                        ),
                        &[&now, &charter, &since, &until],
                    )
                    .await
            }
        }
        .map_err(db("requeueing events"))?;
        let mut ids = rows
            .iter()
            .map(|r| get::<Uuid>(r, 0))
            .collect::<Result<Vec<_>>>()?;
        ids.sort();
        Ok(ids)
    }

    async fn release_leases(&self, owner: Option<&str>, now: UnixMillis) -> Result<Vec<Uuid>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "WITH released AS (
                     UPDATE events SET status = 'pending', lease_owner = NULL,
                         lease_until = NULL, updated_at = $1
                     WHERE status = 'processing' AND ($2::TEXT IS NULL OR lease_owner = $2)
                     RETURNING id, charter, claim_slot
                 ),
                 freed AS (
                     UPDATE claim_slots AS s SET event_id = NULL, lease_until = NULL
                     FROM released AS r
                     WHERE s.charter = r.charter AND s.slot = r.claim_slot AND s.event_id = r.id
                 )
                 SELECT id FROM released",
                &[&now, &owner],
            )
            .await
            .map_err(db("releasing leases"))?;
        let mut ids = rows
            .iter()
            .map(|r| get::<Uuid>(r, 0))
            .collect::<Result<Vec<_>>>()?;
        ids.sort();
        Ok(ids)
    }

    /// Several nodes share a PostgreSQL store: a lease found at start-up may be a live
    /// node's, so only this node's own (by its stable identity) are released.
    fn single_process(&self) -> bool {
        false
    }

    async fn pending_counts(&self) -> Result<Vec<(String, u64)>> {
        let client = self.client().await?;
        // Two counts, each over its partial index, rather than one scan under an `OR`.
        let stmt = client
            .prepare_cached(
                "SELECT charter, sum(n)::BIGINT FROM (
                     SELECT charter, count(*) AS n FROM events
                     WHERE status = 'pending' GROUP BY charter
                     UNION ALL
                     SELECT charter, count(*) FROM events
                     WHERE status = 'processing' AND (lease_until IS NULL OR lease_until <= $1)
                     GROUP BY charter
                 ) AS q
                 GROUP BY charter ORDER BY charter",
            )
            .await
            .map_err(db("preparing pending_counts"))?;
        let rows = client
            .query(&stmt, &[&now_millis()])
            .await
            .map_err(db("counting pending events"))?;
        rows.iter()
            .map(|r| {
                let n: i64 = get(r, 1)?;
                Ok((get(r, 0)?, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }
}

/// Set the final status of a claimed event and free its claim slot (only the lease's
/// holder may). One statement.
pub(super) async fn pg_release<C: GenericClient>(
    c: &C,
    event_id: Uuid,
    worker: &str,
    status: EventStatus,
    now: UnixMillis,
) -> Result<bool> {
    let stmt = c
        .prepare_cached(RELEASE_SQL)
        .await
        .map_err(db("preparing release"))?;
    let row = c
        .query_one(&stmt, &[&event_id, &worker, &status.as_str(), &now])
        .await
        .map_err(db("releasing a lease"))?;
    let n: i64 = get(&row, 0)?;
    Ok(n == 1)
}

/// The release: $1 event, $2 worker, $3 status, $4 now. Returns one row: how many events
/// were released (0 or 1).
pub(super) const RELEASE_SQL: &str = "WITH released AS (
         UPDATE events SET status = $3, lease_owner = NULL, lease_until = NULL, updated_at = $4
         WHERE id = $1 AND lease_owner = $2 AND status = 'processing'
         RETURNING charter, claim_slot
     ),
     freed AS (
         UPDATE claim_slots AS s SET event_id = NULL, lease_until = NULL
         FROM released AS r
         WHERE s.charter = r.charter AND s.slot = r.claim_slot AND s.event_id = $1
     )
     SELECT count(*) FROM released";

/// Close the runs of the claimed `events` that never finished (cut off by a crash or a lost
/// lease) as interrupted and mark the actions they had begun without an outcome as in
/// doubt, in one statement. By event id.
async fn close_interrupted<C: GenericClient>(
    c: &C,
    events: &[Uuid],
    now: UnixMillis,
) -> Result<BTreeMap<Uuid, Vec<InterruptedRun>>> {
    let stmt = c
        .prepare_cached(
            "WITH closed AS (
                 UPDATE runs SET outcome = 'interrupted', finished_at = $2, error = $3
                 WHERE event_id = ANY($1) AND outcome IS NULL
                 RETURNING id, event_id
             ),
             marked AS (
                 UPDATE action_records AS a SET status = 'in_doubt'
                 FROM closed
                 WHERE a.run_id = closed.id AND a.status = 'pending'
                 RETURNING a.run_id, a.action, a.idempotency_key
             )
             SELECT closed.id, closed.event_id, marked.action, marked.idempotency_key
             FROM closed LEFT JOIN marked ON marked.run_id = closed.id",
        )
        .await
        .map_err(db("preparing the interrupted-run close"))?;
    let rows = c
        .query(&stmt, &[&events, &now, &INTERRUPTED_ERROR])
        .await
        .map_err(db("closing interrupted runs"))?;
    let mut by_run: BTreeMap<(Uuid, Uuid), Vec<InDoubtRef>> = BTreeMap::new();
    for r in &rows {
        let run_id: Uuid = get(r, 0)?;
        let event_id: Uuid = get(r, 1)?;
        let entry = by_run.entry((run_id, event_id)).or_default();
        let action: Option<String> = get(r, 2)?;
        let key: Option<String> = get(r, 3)?;
        if let (Some(action), Some(idempotency_key)) = (action, key) {
            entry.push(InDoubtRef {
                action,
                idempotency_key,
            });
        }
    }
    let mut out: BTreeMap<Uuid, Vec<InterruptedRun>> = BTreeMap::new();
    for ((run_id, event_id), mut in_doubt) in by_run {
        in_doubt.sort_by(|a, b| a.action.cmp(&b.action));
        out.entry(event_id)
            .or_default()
            .push(InterruptedRun { run_id, in_doubt });
    }
    Ok(out)
}
