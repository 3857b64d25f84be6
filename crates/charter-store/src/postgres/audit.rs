//! The audit log on PostgreSQL (same behaviour as SQLite).

use deadpool_postgres::GenericClient;

use super::PgStore;
use super::rows::{db, get};
use crate::{AuditEntry, AuditFilter, AuditStore, NewAuditEntry, Result};

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
