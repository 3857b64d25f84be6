//! Per-charter state on PostgreSQL: pause and the mode override.

use charter_core::model::UnixMillis;
use deadpool_postgres::GenericClient;

use super::PgStore;
use super::rows::{db, get};
use crate::{CharterStateStore, Result};

impl CharterStateStore for PgStore {
    async fn set_paused(&self, charter: &str, paused: bool, now: UnixMillis) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO charter_state (charter, paused, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (charter) DO UPDATE SET paused = EXCLUDED.paused,
                     updated_at = EXCLUDED.updated_at",
                &[&charter, &paused, &now],
            )
            .await
            .map_err(db("setting charter state"))?;
        Ok(())
    }

    async fn is_paused(&self, charter: &str) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT paused FROM charter_state WHERE charter = $1")
            .await
            .map_err(db("preparing is_paused"))?;
        let row = client
            .query_opt(&stmt, &[&charter])
            .await
            .map_err(db("reading charter state"))?;
        match row {
            Some(row) => get(&row, 0),
            None => Ok(false),
        }
    }

    async fn paused(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT charter FROM charter_state WHERE paused ORDER BY charter",
                &[],
            )
            .await
            .map_err(db("listing paused charters"))?;
        rows.iter().map(|r| get(r, 0)).collect()
    }
}
