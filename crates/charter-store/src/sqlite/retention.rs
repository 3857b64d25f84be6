//! Retention on SQLite: one purge round is one write command (one transaction).

use charter_core::model::UnixMillis;
use rusqlite::params;

use super::SqliteStore;
use super::rows::db;
use crate::Result;
use crate::retention::{Purged, RetentionStore};

/// The statements of one round, in foreign-key order, over the chosen events' ids (a JSON
/// array in `?1`).
const CASCADE: &[(&str, &str)] = &[
    (
        "DELETE FROM action_attempts WHERE action_id IN (
             SELECT a.id FROM action_records a JOIN runs r ON r.id = a.run_id
             WHERE r.event_id IN (SELECT value FROM json_each(?1)))",
        "purging action attempts",
    ),
    (
        "DELETE FROM action_records WHERE run_id IN (
             SELECT id FROM runs WHERE event_id IN (SELECT value FROM json_each(?1)))",
        "purging actions",
    ),
    (
        "DELETE FROM run_extras WHERE run_id IN (
             SELECT id FROM runs WHERE event_id IN (SELECT value FROM json_each(?1)))",
        "purging run extras",
    ),
    (
        "DELETE FROM notifications WHERE item_id IN (
             SELECT a.id FROM approvals a JOIN runs r ON r.id = a.run_id
             WHERE r.event_id IN (SELECT value FROM json_each(?1))
             UNION ALL
             SELECT id FROM escalations WHERE event_id IN (SELECT value FROM json_each(?1)))",
        "purging notifications",
    ),
    (
        "DELETE FROM approvals WHERE run_id IN (
             SELECT id FROM runs WHERE event_id IN (SELECT value FROM json_each(?1)))",
        "purging approvals",
    ),
    (
        "DELETE FROM escalations WHERE event_id IN (SELECT value FROM json_each(?1))",
        "purging escalations",
    ),
];

impl RetentionStore for SqliteStore {
    async fn purge(
        &self,
        before: UnixMillis,
        charter: Option<&str>,
        limit: usize,
    ) -> Result<Purged> {
        let charter = charter.map(str::to_string);
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        // Ids are UUIDv7s of the receipt time: the id range lets the primary key find the
        // old events without scanning the table (an event whose id is newer than its
        // receipt time, say one replayed from a rejected payload, waits for the id's time).
        let floor = crate::report::v7_floor(before).to_string();
        self.write(move |conn| {
            let ids: Vec<String> = conn
                .prepare_cached(
                    "SELECT id FROM events
                     WHERE id < ?4 AND received_at < ?1
                       AND (status = 'done' OR status = 'failed')
                       AND (?2 IS NULL OR charter = ?2)
                       AND NOT EXISTS (SELECT 1 FROM escalations x
                                       WHERE x.event_id = events.id AND x.status = 'open')
                       AND NOT EXISTS (SELECT 1 FROM runs r JOIN approvals a ON a.run_id = r.id
                                       WHERE r.event_id = events.id AND a.status = 'pending')
                     ORDER BY id LIMIT ?3",
                )
                .and_then(|mut s| {
                    s.query_map(params![before, charter, limit, floor], |r| r.get(0))?
                        .collect()
                })
                .map_err(db("choosing events to purge"))?;
            let mut out = Purged::default();
            if !ids.is_empty() {
                let list = serde_json::to_string(&ids)
                    .map_err(|e| crate::StoreError::Database(format!("listing ids: {e}")))?;
                for (sql, what) in CASCADE {
                    conn.prepare_cached(sql)
                        .and_then(|mut s| s.execute([&list]))
                        .map_err(db(what))?;
                }
                out.runs = conn
                    .prepare_cached(
                        "DELETE FROM runs WHERE event_id IN (SELECT value FROM json_each(?1))",
                    )
                    .and_then(|mut s| s.execute([&list]))
                    .map_err(db("purging runs"))? as u64;
                out.events = conn
                    .prepare_cached(
                        "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?1))",
                    )
                    .and_then(|mut s| s.execute([&list]))
                    .map_err(db("purging events"))? as u64;
            }
            out.rejected = conn
                .prepare_cached(
                    "DELETE FROM rejected WHERE id IN (
                         SELECT id FROM rejected
                         WHERE received_at < ?1 AND (?2 IS NULL OR charter = ?2)
                         LIMIT ?3)",
                )
                .and_then(|mut s| s.execute(params![before, charter, limit]))
                .map_err(db("purging rejected payloads"))? as u64;
            Ok(out)
        })
        .await
    }
}
