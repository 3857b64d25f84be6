//! Operator controls on PostgreSQL: a charter's mode override and holding an event for a
//! human (same behaviour as SQLite).

use charter_core::model::UnixMillis;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::PgStore;
use super::rows::{db, get};
use crate::{ModeOverride, OperatorStore, Result};

/// Columns of a stored override; rows without one are filtered out by `mode IS NOT NULL`.
const MODE_COLS: &str = "charter, mode, mode_base, mode_by, mode_at";

fn mode_row(r: &Row) -> Result<ModeOverride> {
    Ok(ModeOverride {
        charter: get(r, 0)?,
        mode: get(r, 1)?,
        base: get(r, 2)?,
        by: get(r, 3)?,
        at: get(r, 4)?,
    })
}

/// `charter`'s stored mode override, if any.
pub(super) async fn read_mode<C: GenericClient>(
    c: &C,
    charter: &str,
) -> Result<Option<ModeOverride>> {
    let row = c
        .query_opt(
            &format!(
                "SELECT {MODE_COLS} FROM charter_state WHERE charter = $1 AND mode IS NOT NULL"
            ),
            &[&charter],
        )
        .await
        .map_err(db("reading a charter's mode"))?;
    row.as_ref().map(mode_row).transpose()
}

impl OperatorStore for PgStore {
    async fn set_mode(&self, mode: ModeOverride) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO charter_state (charter, paused, updated_at, mode, mode_base, mode_by, mode_at)
                 VALUES ($1, FALSE, $5, $2, $3, $4, $5)
                 ON CONFLICT (charter) DO UPDATE SET mode = EXCLUDED.mode,
                     mode_base = EXCLUDED.mode_base, mode_by = EXCLUDED.mode_by,
                     mode_at = EXCLUDED.mode_at, updated_at = EXCLUDED.updated_at",
                &[&mode.charter, &mode.mode, &mode.base, &mode.by, &mode.at],
            )
            .await
            .map_err(db("setting a charter's mode"))?;
        Ok(())
    }

    async fn clear_mode(&self, charter: &str, now: UnixMillis) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE charter_state SET mode = NULL, mode_base = NULL, mode_by = NULL,
                     mode_at = NULL, updated_at = $2
                 WHERE charter = $1 AND mode IS NOT NULL",
                &[&charter, &now],
            )
            .await
            .map_err(db("clearing a charter's mode"))?;
        Ok(n == 1)
    }

    async fn mode_override(&self, charter: &str) -> Result<Option<ModeOverride>> {
        let client = self.client().await?;
        read_mode(&client, charter).await
    }

    async fn mode_overrides(&self) -> Result<Vec<ModeOverride>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {MODE_COLS} FROM charter_state WHERE mode IS NOT NULL ORDER BY charter"
                ),
                &[],
            )
            .await
            .map_err(db("reading mode overrides"))?;
        rows.iter().map(mode_row).collect()
    }

    async fn hold_event(&self, id: Uuid, now: UnixMillis) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE events SET status = 'waiting', lease_owner = NULL, lease_until = NULL,
                     updated_at = $2
                 WHERE id = $1 AND status <> 'processing'",
                &[&id, &now],
            )
            .await
            .map_err(db("holding an event"))?;
        Ok(n == 1)
    }
}
