//! Source state (polling cursors, schedule fire times) on SQLite.

use charter_core::model::UnixMillis;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::rows::db;
use crate::{Result, SourceStateStore};

impl SourceStateStore for SqliteStore {
    /// One SQLite file has one server: it always runs every source.
    type SourceLock = ();

    async fn try_lock_source(&self, _charter: &str, _source: &str) -> Result<Option<()>> {
        Ok(Some(()))
    }

    async fn get_cursor(&self, charter: &str, source: &str) -> Result<Option<String>> {
        let (charter, source) = (charter.to_string(), source.to_string());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT cursor FROM source_state WHERE charter = ?1 AND source = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![charter, source], |r| r.get(0))
                    .optional()
            })
            .map_err(db("reading a source cursor"))
        })
        .await
    }

    async fn put_cursor(
        &self,
        charter: &str,
        source: &str,
        cursor: &str,
        now: UnixMillis,
    ) -> Result<()> {
        let (charter, source, cursor) =
            (charter.to_string(), source.to_string(), cursor.to_string());
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO source_state (charter, source, cursor, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (charter, source) DO UPDATE SET cursor = excluded.cursor,
                     updated_at = excluded.updated_at",
            )
            .and_then(|mut s| s.execute(params![charter, source, cursor, now]))
            .map_err(db("storing a source cursor"))?;
            Ok(())
        })
        .await
    }
}
