//! Web UI sessions on SQLite.

use charter_core::model::UnixMillis;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::rows::{db, parse_json};
use crate::{Result, SessionStore, StoreError, UiSession};

impl SessionStore for SqliteStore {
    async fn create_session(&self, s: UiSession) -> Result<()> {
        let charters = serde_json::to_string(&s.charters)
            .map_err(|e| StoreError::Corrupt(format!("session charters: {e}")))?;
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM ui_sessions WHERE expires_at <= ?1")
                .and_then(|mut st| st.execute(params![s.created_at]))
                .map_err(db("deleting expired sessions"))?;
            conn.prepare_cached(
                "INSERT INTO ui_sessions (id_hash, name, role, charters, csrf, grant_hash, created_at,
                     expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.id_hash,
                    s.name,
                    s.role,
                    charters,
                    s.csrf,
                    s.grant,
                    s.created_at,
                    s.expires_at
                ])
            })
            .map_err(db("storing a session"))?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id_hash: &str, now: UnixMillis) -> Result<Option<UiSession>> {
        let id_hash = id_hash.to_string();
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT name, role, charters, csrf, grant_hash, created_at, expires_at
                     FROM ui_sessions WHERE id_hash = ?1 AND expires_at > ?2",
                )
                .and_then(|mut st| {
                    st.query_row(params![id_hash, now], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, i64>(6)?,
                        ))
                    })
                    .optional()
                })
                .map_err(db("reading a session"))?;
            row.map(
                |(name, role, charters, csrf, grant, created_at, expires_at)| {
                    Ok(UiSession {
                        id_hash,
                        name,
                        role,
                        charters: parse_json("session charters", &charters)?,
                        csrf,
                        grant,
                        created_at,
                        expires_at,
                    })
                },
            )
            .transpose()
        })
        .await
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let id_hash = id_hash.to_string();
        self.write(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM ui_sessions WHERE id_hash = ?1")
                .and_then(|mut st| st.execute(params![id_hash]))
                .map_err(db("ending a session"))?;
            Ok(n == 1)
        })
        .await
    }
}
