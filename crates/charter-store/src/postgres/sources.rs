//! Source state (polling cursors, schedule fire times) on PostgreSQL (same behaviour as
//! SQLite). One node at a time runs a source, under a cluster-wide job lock.

use charter_core::model::UnixMillis;

use super::rows::{db, get};
use super::{JobLock, PgStore};
use crate::{Result, SourceStateStore};

impl SourceStateStore for PgStore {
    type SourceLock = JobLock;

    async fn try_lock_source(&self, charter: &str, source: &str) -> Result<Option<JobLock>> {
        self.try_lock_job(&format!("charter-source:{charter}:{source}"))
            .await
    }

    async fn get_cursor(&self, charter: &str, source: &str) -> Result<Option<String>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT cursor FROM source_state WHERE charter = $1 AND source = $2",
                &[&charter, &source],
            )
            .await
            .map_err(db("reading a source cursor"))?;
        row.map(|r| get(&r, 0)).transpose()
    }

    async fn put_cursor(
        &self,
        charter: &str,
        source: &str,
        cursor: &str,
        now: UnixMillis,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO source_state (charter, source, cursor, updated_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (charter, source) DO UPDATE SET cursor = EXCLUDED.cursor,
                     updated_at = EXCLUDED.updated_at",
                &[&charter, &source, &cursor, &now],
            )
            .await
            .map_err(db("storing a source cursor"))?;
        Ok(())
    }
}
