//! Approvals on SQLite.

use charter_core::model::UnixMillis;
use rusqlite::types::Value;
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::rows::{self, db, parse_uuid, to_json};
use super::{SqliteStore, collect};
use crate::{
    ApprovalFilter, ApprovalRecord, ApprovalStatus, ApprovalStore, NewApproval, Result, StoreError,
    Verdict,
};

/// Columns selected for an [`ApprovalRecord`], in the order [`approval_record`] reads them.
pub(super) const APPROVAL_COLS: &str = "id, run_id, event_id, charter, action, params, params_hash, \
     reviewers, status, created_at, expires_at, on_expiry, decided_by, decided_at, comment, \
     edited_params, edited_hash";

fn approval_record(r: &rusqlite::Row<'_>) -> Result<ApprovalRecord> {
    let params: String = rows::get_col(r, 5)?;
    let reviewers: String = rows::get_col(r, 7)?;
    let status: String = rows::get_col(r, 8)?;
    let edited: Option<String> = rows::get_col(r, 15)?;
    Ok(ApprovalRecord {
        id: parse_uuid(&rows::get_col::<String>(r, 0)?)?,
        run_id: parse_uuid(&rows::get_col::<String>(r, 1)?)?,
        event_id: parse_uuid(&rows::get_col::<String>(r, 2)?)?,
        charter: rows::get_col(r, 3)?,
        action: rows::get_col(r, 4)?,
        params: rows::parse_json("approval params", &params)?,
        params_hash: rows::get_col(r, 6)?,
        reviewers: rows::parse_json("reviewers", &reviewers)?,
        status: ApprovalStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown approval status {status:?}")))?,
        created_at: rows::get_col(r, 9)?,
        expires_at: rows::get_col(r, 10)?,
        on_expiry: rows::get_col(r, 11)?,
        decided_by: rows::get_col(r, 12)?,
        decided_at: rows::get_col(r, 13)?,
        comment: rows::get_col(r, 14)?,
        edited_params: edited
            .map(|e| rows::parse_json("edited params", &e))
            .transpose()?,
        edited_hash: rows::get_col(r, 16)?,
    })
}

pub(super) fn query_approvals(
    conn: &Connection,
    sql: &str,
    args: Vec<Value>,
) -> Result<Vec<ApprovalRecord>> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(db("preparing an approval query"))?;
    let rows = stmt
        .query(rusqlite::params_from_iter(args))
        .map_err(db("querying approvals"))?;
    collect(rows, approval_record)
}

impl ApprovalStore for SqliteStore {
    async fn create_approval(&self, a: NewApproval) -> Result<ApprovalRecord> {
        let params_json = to_json("approval params", &a.params)?;
        let reviewers = to_json("reviewers", &a.reviewers)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO approvals (id, run_id, event_id, charter, action, params,
                     params_hash, reviewers, status, created_at, expires_at, on_expiry)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?10, ?11)
                 ON CONFLICT (event_id, action, params_hash) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    a.id.to_string(),
                    a.run_id.to_string(),
                    a.event_id.to_string(),
                    a.charter,
                    a.action,
                    params_json,
                    a.params_hash,
                    reviewers,
                    a.created_at,
                    a.expires_at,
                    a.on_expiry,
                ])
            })
            .map_err(db("inserting an approval"))?;
            query_approvals(
                conn,
                &format!(
                    "SELECT {APPROVAL_COLS} FROM approvals
                     WHERE event_id = ?1 AND action = ?2 AND params_hash = ?3"
                ),
                vec![
                    Value::Text(a.event_id.to_string()),
                    Value::Text(a.action),
                    Value::Text(a.params_hash),
                ],
            )?
            .pop()
            .ok_or_else(|| StoreError::Database("the approval just stored is missing".into()))
        })
        .await
    }

    async fn get_approval(&self, id: Uuid) -> Result<Option<ApprovalRecord>> {
        self.read(move |conn| {
            Ok(query_approvals(
                conn,
                &format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = ?1"),
                vec![Value::Text(id.to_string())],
            )?
            .pop())
        })
        .await
    }

    async fn find_approval(
        &self,
        event_id: Uuid,
        action: &str,
        params_hash: &str,
    ) -> Result<Option<ApprovalRecord>> {
        let args = vec![
            Value::Text(event_id.to_string()),
            Value::Text(action.to_string()),
            Value::Text(params_hash.to_string()),
        ];
        self.read(move |conn| {
            Ok(query_approvals(
                conn,
                &format!(
                    "SELECT {APPROVAL_COLS} FROM approvals
                     WHERE event_id = ?1 AND action = ?2 AND params_hash = ?3"
                ),
                args,
            )?
            .pop())
        })
        .await
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
        let by = by.to_string();
        let (status, comment, edited, edited_hash) = match verdict {
            Verdict::Approve { edited: None } => (ApprovalStatus::Approved, None, None, None),
            Verdict::Approve {
                edited: Some((p, h)),
            } => (
                ApprovalStatus::Approved,
                None,
                Some(to_json("edited params", &p)?),
                Some(h),
            ),
            Verdict::Reject { reason } => (ApprovalStatus::Rejected, Some(reason), None, None),
        };
        self.write(move |conn| {
            // The status check and the update are one statement: of concurrent calls only
            // the first to run finds the approval still pending.
            let mut found = query_approvals(
                conn,
                &format!(
                    "UPDATE approvals SET status = ?2, decided_by = ?3, decided_at = ?4,
                         comment = ?5, edited_params = ?6, edited_hash = ?7
                     WHERE id = ?1 AND status = 'pending'
                       AND (expires_at IS NULL OR expires_at > ?4)
                     RETURNING {APPROVAL_COLS}"
                ),
                vec![
                    Value::Text(id.to_string()),
                    Value::Text(status.as_str().to_string()),
                    Value::Text(by),
                    Value::Integer(now),
                    comment.map_or(Value::Null, Value::Text),
                    edited.map_or(Value::Null, Value::Text),
                    edited_hash.map_or(Value::Null, Value::Text),
                ],
            )?;
            Ok(found.pop())
        })
        .await
    }

    async fn expire_approvals(&self, now: UnixMillis) -> Result<Vec<ApprovalRecord>> {
        self.write(move |conn| {
            query_approvals(
                conn,
                &format!(
                    "UPDATE approvals SET status = 'expired', decided_by = 'system',
                         decided_at = ?1
                     WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= ?1
                     RETURNING {APPROVAL_COLS}"
                ),
                vec![Value::Integer(now)],
            )
        })
        .await
    }
}
