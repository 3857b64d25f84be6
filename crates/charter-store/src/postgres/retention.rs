//! Retention on PostgreSQL: one purge round is one transaction.

use charter_core::model::UnixMillis;
use uuid::Uuid;

use super::PgStore;
use super::rows::{db, get};
use crate::Result;
use crate::retention::{Purged, RetentionStore};

/// The statements of one round, in foreign-key order, over the chosen events' ids (`$1`).
const CASCADE: &[(&str, &str)] = &[
    (
        "DELETE FROM action_attempts WHERE action_id IN (
             SELECT a.id FROM action_records a JOIN runs r ON r.id = a.run_id
             WHERE r.event_id = ANY($1))",
        "purging action attempts",
    ),
    (
        "DELETE FROM action_records WHERE run_id IN (
             SELECT id FROM runs WHERE event_id = ANY($1))",
        "purging actions",
    ),
    (
        "DELETE FROM run_extras WHERE run_id IN (SELECT id FROM runs WHERE event_id = ANY($1))",
        "purging run extras",
    ),
    (
        "DELETE FROM notifications WHERE item_id IN (
             SELECT a.id FROM approvals a JOIN runs r ON r.id = a.run_id
             WHERE r.event_id = ANY($1)
             UNION ALL
             SELECT id FROM escalations WHERE event_id = ANY($1))",
        "purging notifications",
    ),
    (
        "DELETE FROM approvals WHERE run_id IN (SELECT id FROM runs WHERE event_id = ANY($1))",
        "purging approvals",
    ),
    (
        "DELETE FROM escalations WHERE event_id = ANY($1)",
        "purging escalations",
    ),
];

impl RetentionStore for PgStore {
    async fn purge(
        &self,
        before: UnixMillis,
        charter: Option<&str>,
        limit: usize,
    ) -> Result<Purged> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        // Ids are UUIDv7s of the receipt time: the id range lets the primary key find the
        // old events without scanning the table.
        let floor = crate::report::v7_floor(before);
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("beginning a purge"))?;
        let rows = tx
            .query(
                "SELECT id FROM events
                 WHERE id < $4 AND received_at < $1 AND status IN ('done', 'failed')
                   AND ($2::text IS NULL OR charter = $2)
                   AND NOT EXISTS (SELECT 1 FROM escalations x
                                   WHERE x.event_id = events.id AND x.status = 'open')
                   AND NOT EXISTS (SELECT 1 FROM runs r JOIN approvals a ON a.run_id = r.id
                                   WHERE r.event_id = events.id AND a.status = 'pending')
                 ORDER BY id LIMIT $3
                 FOR UPDATE SKIP LOCKED",
                &[&before, &charter, &limit, &floor],
            )
            .await
            .map_err(db("choosing events to purge"))?;
        let ids = rows
            .iter()
            .map(|r| get::<Uuid>(r, 0))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Purged::default();
        if !ids.is_empty() {
            for (sql, what) in CASCADE {
                tx.execute(*sql, &[&ids]).await.map_err(db(what))?;
            }
            out.runs = tx
                .execute("DELETE FROM runs WHERE event_id = ANY($1)", &[&ids])
                .await
                .map_err(db("purging runs"))?;
            out.events = tx
                .execute("DELETE FROM events WHERE id = ANY($1)", &[&ids])
                .await
                .map_err(db("purging events"))?;
        }
        out.rejected = tx
            .execute(
                "DELETE FROM rejected WHERE id IN (
                     SELECT id FROM rejected
                     WHERE received_at < $1 AND ($2::text IS NULL OR charter = $2)
                     LIMIT $3)",
                &[&before, &charter, &limit],
            )
            .await
            .map_err(db("purging rejected payloads"))?;
        tx.commit().await.map_err(db("committing a purge"))?;
        Ok(out)
    }
}
