//! Operator controls on SQLite: a charter's mode override and holding an event for a human.

use charter_core::model::UnixMillis;
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::rows::{self, db};
use super::{SqliteStore, collect};
use crate::{ModeOverride, OperatorStore, Result};

/// Columns of a stored override; rows without one are filtered out by `mode IS NOT NULL`.
const MODE_COLS: &str = "charter, mode, mode_base, mode_by, mode_at";

fn mode_row(r: &rusqlite::Row<'_>) -> Result<ModeOverride> {
    Ok(ModeOverride {
        charter: rows::get_col(r, 0)?,
        mode: rows::get_col(r, 1)?,
        base: rows::get_col(r, 2)?,
        by: rows::get_col(r, 3)?,
        at: rows::get_col(r, 4)?,
    })
}

pub(super) fn read_modes(conn: &Connection, charter: Option<&str>) -> Result<Vec<ModeOverride>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {MODE_COLS} FROM charter_state
             WHERE mode IS NOT NULL AND (?1 IS NULL OR charter = ?1) ORDER BY charter"
        ))
        .map_err(db("preparing mode overrides"))?;
    let rows = stmt
        .query(params![charter])
        .map_err(db("reading mode overrides"))?;
    collect(rows, mode_row)
}

impl OperatorStore for SqliteStore {
    async fn set_mode(&self, mode: ModeOverride) -> Result<()> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO charter_state (charter, paused, updated_at, mode, mode_base, mode_by, mode_at)
                 VALUES (?1, 0, ?5, ?2, ?3, ?4, ?5)
                 ON CONFLICT (charter) DO UPDATE SET mode = excluded.mode,
                     mode_base = excluded.mode_base, mode_by = excluded.mode_by,
                     mode_at = excluded.mode_at, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| {
                s.execute(params![mode.charter, mode.mode, mode.base, mode.by, mode.at])
            })
            .map_err(db("setting a charter's mode"))?;
            Ok(())
        })
        .await
    }

    async fn clear_mode(&self, charter: &str, now: UnixMillis) -> Result<bool> {
        let charter = charter.to_string();
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE charter_state SET mode = NULL, mode_base = NULL, mode_by = NULL,
                         mode_at = NULL, updated_at = ?2
                     WHERE charter = ?1 AND mode IS NOT NULL",
                )
                .and_then(|mut s| s.execute(params![charter, now]))
                .map_err(db("clearing a charter's mode"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn mode_override(&self, charter: &str) -> Result<Option<ModeOverride>> {
        let charter = charter.to_string();
        self.read(move |conn| Ok(read_modes(conn, Some(&charter))?.into_iter().next()))
            .await
    }

    async fn mode_overrides(&self) -> Result<Vec<ModeOverride>> {
        self.read(|conn| read_modes(conn, None)).await
    }

    async fn hold_event(&self, id: Uuid, now: UnixMillis) -> Result<bool> {
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE events SET status = 'waiting', lease_owner = NULL, lease_until = NULL,
                         updated_at = ?2
                     WHERE id = ?1 AND status <> 'processing'",
                )
                .and_then(|mut s| s.execute(params![id.to_string(), now]))
                .map_err(db("holding an event"))?;
            Ok(n == 1)
        })
        .await
    }
}
