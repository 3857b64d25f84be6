//! Per-charter state on SQLite: pause and the mode override.

use charter_core::model::UnixMillis;
use rusqlite::{OptionalExtension, params};

use super::rows::{self, db};
use super::{SqliteStore, collect};
use crate::{CharterStateStore, Result};

impl CharterStateStore for SqliteStore {
    async fn set_paused(&self, charter: &str, paused: bool, now: UnixMillis) -> Result<()> {
        let charter = charter.to_string();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO charter_state (charter, paused, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (charter) DO UPDATE SET paused = excluded.paused,
                     updated_at = excluded.updated_at",
            )
            .and_then(|mut s| s.execute(params![charter, paused, now]))
            .map_err(db("setting charter state"))?;
            Ok(())
        })
        .await
    }

    async fn is_paused(&self, charter: &str) -> Result<bool> {
        let charter = charter.to_string();
        self.read(move |conn| {
            let paused: Option<bool> = conn
                .prepare_cached("SELECT paused FROM charter_state WHERE charter = ?1")
                .and_then(|mut s| s.query_row([charter], |r| r.get(0)).optional())
                .map_err(db("reading charter state"))?;
            Ok(paused.unwrap_or(false))
        })
        .await
    }

    async fn paused(&self) -> Result<Vec<String>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT charter FROM charter_state WHERE paused <> 0 ORDER BY charter",
                )
                .map_err(db("preparing paused"))?;
            let rows = stmt.query([]).map_err(db("listing paused charters"))?;
            collect(rows, |r| rows::get_col(r, 0))
        })
        .await
    }
}
