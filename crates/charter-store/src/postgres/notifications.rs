//! The notification outbox on PostgreSQL (same behaviour as SQLite).

use charter_core::model::UnixMillis;
use tokio_postgres::Row;
use uuid::Uuid;

use super::rows::{db, get, u32_of};
use super::{PgStore, limit_of};
use crate::notifications::{
    Delivery, NewNotification, NotificationKind, NotificationRecord, NotificationState,
    NotificationStore,
};
use crate::{Result, StoreError};

const COLS: &str = "id, kind, item_id, charter, target, state, attempts, next_attempt_at, \
     created_at, sent_at, last_error";

fn record(r: &Row) -> Result<NotificationRecord> {
    let kind: String = get(r, 1)?;
    let state: String = get(r, 5)?;
    let attempts: i64 = get(r, 6)?;
    Ok(NotificationRecord {
        id: get(r, 0)?,
        kind: NotificationKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown notification kind {kind:?}")))?,
        item_id: get(r, 2)?,
        charter: get(r, 3)?,
        target: get(r, 4)?,
        state: NotificationState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown notification state {state:?}")))?,
        attempts: u32_of("notification attempts", attempts)?,
        next_attempt_at: get(r, 7)?,
        created_at: get(r, 8)?,
        sent_at: get(r, 9)?,
        last_error: get(r, 10)?,
    })
}

impl NotificationStore for PgStore {
    async fn enqueue_notifications(&self, items: Vec<NewNotification>) -> Result<usize> {
        if items.is_empty() {
            return Ok(0);
        }
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("beginning a notification insert"))?;
        let mut added = 0;
        for n in &items {
            added += tx
                .execute(
                    "INSERT INTO notifications (id, kind, item_id, charter, target, state,
                         attempts, next_attempt_at, created_at)
                     VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)
                     ON CONFLICT (item_id, target) DO NOTHING",
                    &[
                        &n.id,
                        &n.kind.as_str(),
                        &n.item_id,
                        &n.charter,
                        &n.target,
                        &n.created_at,
                    ],
                )
                .await
                .map_err(db("queuing a notification"))?;
        }
        tx.commit()
            .await
            .map_err(db("committing a notification insert"))?;
        Ok(usize::try_from(added).unwrap_or(usize::MAX))
    }

    async fn claim_notifications(
        &self,
        now: UnixMillis,
        lease_until: UnixMillis,
        limit: usize,
    ) -> Result<Vec<NotificationRecord>> {
        let client = self.client().await?;
        // SKIP LOCKED: concurrent claims on other nodes take other rows.
        let rows = client
            .query(
                &format!(
                    "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = $2
                     WHERE id IN (
                         SELECT id FROM notifications
                         WHERE state = 'pending' AND next_attempt_at <= $1
                         ORDER BY next_attempt_at, id LIMIT $3
                         FOR UPDATE SKIP LOCKED)
                     RETURNING {COLS}"
                ),
                &[&now, &lease_until, &limit_of(limit)],
            )
            .await
            .map_err(db("claiming notifications"))?;
        let mut out = rows.iter().map(record).collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn finish_notification(
        &self,
        id: Uuid,
        delivery: Delivery,
        now: UnixMillis,
    ) -> Result<()> {
        let client = self.client().await?;
        let res =
            match &delivery {
                Delivery::Sent => client
                    .execute(
                        "UPDATE notifications SET state = 'sent', sent_at = $2, last_error = NULL
                         WHERE id = $1 AND state = 'pending'",
                        &[&id, &now],
                    )
                    .await,
                Delivery::Retry { at, error } => {
                    client
                        .execute(
                            "UPDATE notifications SET next_attempt_at = $2, last_error = $3
                         WHERE id = $1 AND state = 'pending'",
                            &[&id, at, error],
                        )
                        .await
                }
                Delivery::Failed { error } => {
                    client
                        .execute(
                            "UPDATE notifications SET state = 'failed', last_error = $2
                         WHERE id = $1 AND state = 'pending'",
                            &[&id, error],
                        )
                        .await
                }
            };
        res.map_err(db("recording a notification delivery"))?;
        Ok(())
    }

    async fn list_notifications(
        &self,
        item_id: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<NotificationRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLS} FROM notifications
                     WHERE ($1::uuid IS NULL OR item_id = $1)
                     ORDER BY created_at, id LIMIT $2"
                ),
                &[&item_id, &limit_of(limit)],
            )
            .await
            .map_err(db("listing notifications"))?;
        rows.iter().map(record).collect()
    }
}
