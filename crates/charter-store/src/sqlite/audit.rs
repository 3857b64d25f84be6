//! The audit log on SQLite.

use rusqlite::params;

use super::SqliteStore;
use super::rows::{db, to_json};
use crate::{AuditEntry, AuditFilter, AuditStore, NewAuditEntry, Result};

impl AuditStore for SqliteStore {
    async fn append_audit(&self, entry: NewAuditEntry) -> Result<i64> {
        let detail = to_json("audit detail", &entry.detail)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO audit_log (at, actor, action, charter, target, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING seq",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        entry.at,
                        entry.actor,
                        entry.action,
                        entry.charter,
                        entry.target,
                        detail
                    ],
                    |r| r.get(0),
                )
            })
            .map_err(db("appending to the audit log"))
        })
        .await
    }

    async fn list_audit(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>> {
        self.page_audit(filter).await
    }

    async fn count_audit(&self, filter: AuditFilter) -> Result<u64> {
        self.count_audit_matching(filter).await
    }
}
