//! Approvals, escalations and the audit log on PostgreSQL (same behaviour as SQLite).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::PgStore;
use super::rows::{db, get};
use crate::{
    ApprovalFilter, ApprovalRecord, ApprovalStatus, ApprovalStore, AuditEntry, AuditFilter,
    AuditStore, EscalationFilter, EscalationRecord, EscalationStatus, EscalationStore,
    HumanDecision, NewApproval, NewAuditEntry, NewEscalation, Result, StoreError, Verdict,
};
use charter_core::model::UnixMillis;

/// Columns selected for an [`ApprovalRecord`], in the order [`approval_record`] reads them.
pub(super) const APPROVAL_COLS: &str = "id, run_id, event_id, charter, action, params, params_hash, \
     reviewers, status, created_at, expires_at, on_expiry, decided_by, decided_at, comment, \
     edited_params, edited_hash";

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

pub(super) fn approval_record(r: &Row) -> Result<ApprovalRecord> {
    let Json(reviewers): Json<Vec<String>> = get(r, 7)?;
    let status: String = get(r, 8)?;
    Ok(ApprovalRecord {
        id: get(r, 0)?,
        run_id: get(r, 1)?,
        event_id: get(r, 2)?,
        charter: get(r, 3)?,
        action: get(r, 4)?,
        params: get(r, 5)?,
        params_hash: get(r, 6)?,
        reviewers,
        status: ApprovalStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown approval status {status:?}")))?,
        created_at: get(r, 9)?,
        expires_at: get(r, 10)?,
        on_expiry: get(r, 11)?,
        decided_by: get(r, 12)?,
        decided_at: get(r, 13)?,
        comment: get(r, 14)?,
        edited_params: get(r, 15)?,
        edited_hash: get(r, 16)?,
    })
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

impl ApprovalStore for PgStore {
    async fn create_approval(&self, a: NewApproval) -> Result<ApprovalRecord> {
        let client = self.client().await?;
        // Insert-or-read in one statement: the CTE's insert yields nothing on conflict, and
        // the fallback select then sees the row committed by the concurrent winner.
        let row = client
            .query_opt(
                &format!(
                    "WITH ins AS (
                         INSERT INTO approvals (id, run_id, event_id, charter, action, params,
                             params_hash, reviewers, status, created_at, expires_at, on_expiry)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11)
                         ON CONFLICT (event_id, action, params_hash) DO NOTHING
                         RETURNING {APPROVAL_COLS})
                     SELECT {APPROVAL_COLS} FROM ins"
                ),
                &[
                    &a.id,
                    &a.run_id,
                    &a.event_id,
                    &a.charter,
                    &a.action,
                    &a.params,
                    &a.params_hash,
                    &Json(&a.reviewers),
                    &a.created_at,
                    &a.expires_at,
                    &a.on_expiry,
                ],
            )
            .await
            .map_err(db("inserting an approval"))?;
        if let Some(row) = row {
            return approval_record(&row);
        }
        self.find_approval(a.event_id, &a.action, &a.params_hash)
            .await?
            .ok_or_else(|| StoreError::Database("the conflicting approval is missing".into()))
    }

    async fn get_approval(&self, id: Uuid) -> Result<Option<ApprovalRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(db("querying an approval"))?;
        row.as_ref().map(approval_record).transpose()
    }

    async fn find_approval(
        &self,
        event_id: Uuid,
        action: &str,
        params_hash: &str,
    ) -> Result<Option<ApprovalRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {APPROVAL_COLS} FROM approvals
                     WHERE event_id = $1 AND action = $2 AND params_hash = $3"
                ),
                &[&event_id, &action, &params_hash],
            )
            .await
            .map_err(db("querying an approval"))?;
        row.as_ref().map(approval_record).transpose()
    }

    async fn list_approvals(&self, filter: ApprovalFilter) -> Result<Vec<ApprovalRecord>> {
        self.page_approvals(filter).await
    }

    async fn count_approvals(&self, filter: ApprovalFilter) -> Result<u64> {
        self.count_approvals_matching(filter).await
    }

    async fn decide_approval(
        &self,
        id: Uuid,
        verdict: Verdict,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<ApprovalRecord>> {
        let (status, comment, edited, edited_hash) = match verdict {
            Verdict::Approve { edited: None } => (ApprovalStatus::Approved, None, None, None),
            Verdict::Approve {
                edited: Some((p, h)),
            } => (ApprovalStatus::Approved, None, Some(p), Some(h)),
            Verdict::Reject { reason } => (ApprovalStatus::Rejected, Some(reason), None, None),
        };
        let client = self.client().await?;
        // Under READ COMMITTED a concurrent UPDATE re-checks the WHERE clause after the
        // winner commits, so only one call finds the approval still pending.
        let row = client
            .query_opt(
                &format!(
                    "UPDATE approvals SET status = $2, decided_by = $3, decided_at = $4,
                         comment = $5, edited_params = $6, edited_hash = $7
                     WHERE id = $1 AND status = 'pending'
                       AND (expires_at IS NULL OR expires_at > $4)
                     RETURNING {APPROVAL_COLS}"
                ),
                &[
                    &id,
                    &status.as_str(),
                    &by,
                    &now,
                    &comment,
                    &edited,
                    &edited_hash,
                ],
            )
            .await
            .map_err(db("deciding an approval"))?;
        row.as_ref().map(approval_record).transpose()
    }

    async fn expire_approvals(&self, now: UnixMillis) -> Result<Vec<ApprovalRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "UPDATE approvals SET status = 'expired', decided_by = 'system',
                         decided_at = $1
                     WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= $1
                     RETURNING {APPROVAL_COLS}"
                ),
                &[&now],
            )
            .await
            .map_err(db("expiring approvals"))?;
        rows.iter().map(approval_record).collect()
    }
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

impl AuditStore for PgStore {
    async fn append_audit(&self, entry: NewAuditEntry) -> Result<i64> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO audit_log (at, actor, action, charter, target, detail)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
            )
            .await
            .map_err(db("preparing an audit entry"))?;
        let row = client
            .query_one(
                &stmt,
                &[
                    &entry.at,
                    &entry.actor,
                    &entry.action,
                    &entry.charter,
                    &entry.target,
                    &entry.detail,
                ],
            )
            .await
            .map_err(db("appending to the audit log"))?;
        get(&row, 0)
    }

    async fn list_audit(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>> {
        self.page_audit(filter).await
    }

    async fn count_audit(&self, filter: AuditFilter) -> Result<u64> {
        self.count_audit_matching(filter).await
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
