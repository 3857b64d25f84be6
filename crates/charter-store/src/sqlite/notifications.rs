//! The notification outbox on SQLite.

use charter_core::model::UnixMillis;
use rusqlite::types::Value;
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::rows::{db, get_col, parse_uuid, u32_col};
use super::{SqliteStore, collect, limit_of};
use crate::notifications::{
    Delivery, NewNotification, NotificationKind, NotificationRecord, NotificationState,
    NotificationStore,
};
use crate::{Result, StoreError};

const COLS: &str = "id, kind, item_id, charter, target, state, attempts, next_attempt_at, \
     created_at, sent_at, last_error";

fn record(r: &rusqlite::Row<'_>) -> Result<NotificationRecord> {
    let id: String = get_col(r, 0)?;
    let kind: String = get_col(r, 1)?;
    let item: String = get_col(r, 2)?;
    let state: String = get_col(r, 5)?;
    Ok(NotificationRecord {
        id: parse_uuid(&id)?,
        kind: NotificationKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown notification kind {kind:?}")))?,
        item_id: parse_uuid(&item)?,
        charter: get_col(r, 3)?,
        target: get_col(r, 4)?,
        state: NotificationState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown notification state {state:?}")))?,
        attempts: u32_col(r, 6, "notification attempts")?,
        next_attempt_at: get_col(r, 7)?,
        created_at: get_col(r, 8)?,
        sent_at: get_col(r, 9)?,
        last_error: get_col(r, 10)?,
    })
}

fn query(conn: &Connection, sql: &str, args: Vec<Value>) -> Result<Vec<NotificationRecord>> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(db("preparing a notification query"))?;
    let rows = stmt
        .query(rusqlite::params_from_iter(args))
        .map_err(db("querying notifications"))?;
    collect(rows, record)
}

impl NotificationStore for SqliteStore {
    async fn enqueue_notifications(&self, items: Vec<NewNotification>) -> Result<usize> {
        if items.is_empty() {
            return Ok(0);
        }
        self.write(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "INSERT INTO notifications (id, kind, item_id, charter, target, state,
                         attempts, next_attempt_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6)
                     ON CONFLICT (item_id, target) DO NOTHING",
                )
                .map_err(db("preparing a notification insert"))?;
            let mut added = 0;
            for n in items {
                added += stmt
                    .execute(params![
                        n.id.to_string(),
                        n.kind.as_str(),
                        n.item_id.to_string(),
                        n.charter,
                        n.target,
                        n.created_at
                    ])
                    .map_err(db("queuing a notification"))?;
            }
            Ok(added)
        })
        .await
    }

    async fn claim_notifications(
        &self,
        now: UnixMillis,
        lease_until: UnixMillis,
        limit: usize,
    ) -> Result<Vec<NotificationRecord>> {
        let limit = limit_of(limit);
        // One writer: the select and the update cannot interleave with another claim.
        self.write(move |conn| {
            let due = query(
                conn,
                &format!(
                    "SELECT {COLS} FROM notifications
                     WHERE state = 'pending' AND next_attempt_at <= ?1
                     ORDER BY next_attempt_at, id LIMIT ?2"
                ),
                vec![Value::Integer(now), Value::Integer(limit)],
            )?;
            let mut stmt = conn
                .prepare_cached(
                    "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = ?2
                     WHERE id = ?1",
                )
                .map_err(db("preparing a notification claim"))?;
            let mut out = Vec::with_capacity(due.len());
            for mut n in due {
                stmt.execute(params![n.id.to_string(), lease_until])
                    .map_err(db("claiming a notification"))?;
                n.attempts += 1;
                n.next_attempt_at = lease_until;
                out.push(n);
            }
            out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
            Ok(out)
        })
        .await
    }

    async fn finish_notification(
        &self,
        id: Uuid,
        delivery: Delivery,
        now: UnixMillis,
    ) -> Result<()> {
        self.write(move |conn| {
            let id = id.to_string();
            let res = match delivery {
                Delivery::Sent => conn.execute(
                    "UPDATE notifications SET state = 'sent', sent_at = ?2, last_error = NULL
                     WHERE id = ?1 AND state = 'pending'",
                    params![id, now],
                ),
                Delivery::Retry { at, error } => conn.execute(
                    "UPDATE notifications SET next_attempt_at = ?2, last_error = ?3
                     WHERE id = ?1 AND state = 'pending'",
                    params![id, at, error],
                ),
                Delivery::Failed { error } => conn.execute(
                    "UPDATE notifications SET state = 'failed', last_error = ?2
                     WHERE id = ?1 AND state = 'pending'",
                    params![id, error],
                ),
            };
            res.map_err(db("recording a notification delivery"))?;
            Ok(())
        })
        .await
    }

    async fn list_notifications(
        &self,
        item_id: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<NotificationRecord>> {
        let limit = limit_of(limit);
        self.read(move |conn| {
            query(
                conn,
                &format!(
                    "SELECT {COLS} FROM notifications WHERE (?1 IS NULL OR item_id = ?1)
                     ORDER BY created_at, id LIMIT ?2"
                ),
                vec![
                    item_id.map_or(Value::Null, |i| Value::Text(i.to_string())),
                    Value::Integer(limit),
                ],
            )
        })
        .await
    }
}
