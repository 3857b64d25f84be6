//! Approvals on PostgreSQL (same behaviour as SQLite).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::PgStore;
use super::rows::{db, get};
use crate::{
    ApprovalFilter, ApprovalRecord, ApprovalStatus, ApprovalStore, NewApproval, Result, StoreError,
    Verdict,
};
use charter_core::model::UnixMillis;

/// Columns selected for an [`ApprovalRecord`], in the order [`approval_record`] reads them.
pub(super) const APPROVAL_COLS: &str = "id, run_id, event_id, charter, action, params, params_hash, \
     reviewers, status, created_at, expires_at, on_expiry, decided_by, decided_at, comment, \
     edited_params, edited_hash";

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
