//! Escalations on PostgreSQL (same behaviour as SQLite).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::PgStore;
use super::rows::{db, get};
use crate::{
    EscalationFilter, EscalationRecord, EscalationStatus, EscalationStore, HumanDecision,
    NewEscalation, Result, StoreError,
};
use charter_core::model::UnixMillis;

/// Columns selected for an [`EscalationRecord`], in the order [`escalation_record`] reads.
pub(super) const ESCALATION_COLS: &str = "id, run_id, event_id, charter, reason, detail, target, status, \
     created_at, resolved_by, resolved_at, resolution";

/// The latest human resolution of each of `events` that has one (at most one record per
/// event, in no particular order).
pub(super) async fn latest_resolutions<C: GenericClient>(
    c: &C,
    events: &[Uuid],
) -> Result<Vec<EscalationRecord>> {
    let rows = c
        .query(
            &format!(
                "SELECT DISTINCT ON (event_id) {ESCALATION_COLS} FROM escalations
                 WHERE event_id = ANY($1) AND status = 'resolved' AND resolution IS NOT NULL
                 ORDER BY event_id, resolved_at DESC, id DESC"
            ),
            &[&events],
        )
        .await
        .map_err(db("querying resolutions"))?;
    rows.iter().map(escalation_record).collect()
}

pub(super) fn escalation_record(r: &Row) -> Result<EscalationRecord> {
    let status: String = get(r, 7)?;
    let detail: Option<serde_json::Value> = get(r, 5)?;
    let resolution: Option<Json<HumanDecision>> = get(r, 11)?;
    Ok(EscalationRecord {
        id: get(r, 0)?,
        run_id: get(r, 1)?,
        event_id: get(r, 2)?,
        charter: get(r, 3)?,
        reason: get(r, 4)?,
        detail: detail.unwrap_or(serde_json::Value::Null),
        target: get(r, 6)?,
        status: EscalationStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown escalation status {status:?}")))?,
        created_at: get(r, 8)?,
        resolved_by: get(r, 9)?,
        resolved_at: get(r, 10)?,
        resolution: resolution.map(|Json(d)| d),
    })
}

impl EscalationStore for PgStore {
    async fn create_escalation(&self, e: NewEscalation) -> Result<EscalationRecord> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO escalations (id, run_id, event_id, charter, reason, detail,
                         target, status, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8)
                     ON CONFLICT DO NOTHING
                     RETURNING {ESCALATION_COLS}"
                ),
                &[
                    &e.id,
                    &e.run_id,
                    &e.event_id,
                    &e.charter,
                    &e.reason,
                    &e.detail,
                    &e.target,
                    &e.created_at,
                ],
            )
            .await
            .map_err(db("inserting an escalation"))?;
        if let Some(row) = row {
            return escalation_record(&row);
        }
        let row = client
            .query_opt(
                &format!(
                    "SELECT {ESCALATION_COLS} FROM escalations
                     WHERE event_id = $1 AND status = 'open'"
                ),
                &[&e.event_id],
            )
            .await
            .map_err(db("querying an open escalation"))?;
        row.as_ref()
            .map(escalation_record)
            .transpose()?
            .ok_or_else(|| StoreError::Database("the conflicting escalation is missing".into()))
    }

    async fn get_escalation(&self, id: Uuid) -> Result<Option<EscalationRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {ESCALATION_COLS} FROM escalations WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(db("querying an escalation"))?;
        row.as_ref().map(escalation_record).transpose()
    }

    async fn list_escalations(&self, filter: EscalationFilter) -> Result<Vec<EscalationRecord>> {
        self.page_escalations(filter).await
    }

    async fn count_escalations(&self, filter: EscalationFilter) -> Result<u64> {
        self.count_escalations_matching(filter).await
    }

    async fn resolve_escalation(
        &self,
        id: Uuid,
        decision: &HumanDecision,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<EscalationRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE escalations SET status = 'resolved', resolved_by = $2,
                         resolved_at = $3, resolution = $4
                     WHERE id = $1 AND status = 'open'
                     RETURNING {ESCALATION_COLS}"
                ),
                &[&id, &by, &now, &Json(decision)],
            )
            .await
            .map_err(db("resolving an escalation"))?;
        row.as_ref().map(escalation_record).transpose()
    }

    async fn close_escalation(
        &self,
        id: Uuid,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<EscalationRecord>> {
        self.close_where("id = $1", id, None, by, now).await
    }

    async fn close_event_escalation(
        &self,
        event_id: Uuid,
        reason: &str,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<EscalationRecord>> {
        self.close_where("event_id = $1", event_id, Some(reason), by, now)
            .await
    }

    async fn latest_resolution(&self, event_id: Uuid) -> Result<Option<EscalationRecord>> {
        let client = self.client().await?;
        Ok(latest_resolutions(&client, &[event_id]).await?.pop())
    }
}

impl PgStore {
    /// Close the open escalation matching `key` (`id = $1` or `event_id = $1`), and `reason`
    /// when given, without a resolution.
    async fn close_where(
        &self,
        key: &str,
        value: Uuid,
        reason: Option<&str>,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<EscalationRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE escalations SET status = 'resolved', resolved_by = $2,
                         resolved_at = $3, resolution = NULL
                     WHERE {key} AND status = 'open' AND ($4::TEXT IS NULL OR reason = $4)
                     RETURNING {ESCALATION_COLS}"
                ),
                &[&value, &by, &now, &reason],
            )
            .await
            .map_err(db("closing an escalation"))?;
        row.as_ref().map(escalation_record).transpose()
    }
}
