//! Web UI sessions on PostgreSQL (same behaviour as SQLite), shared by every node.

use charter_core::model::UnixMillis;
use tokio_postgres::types::Json;

use super::PgStore;
use super::rows::{db, get};
use crate::{Result, SessionStore, UiSession};

impl SessionStore for PgStore {
    async fn create_session(&self, s: UiSession) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("starting a session write"))?;
        tx.execute(
            "DELETE FROM ui_sessions WHERE expires_at <= $1",
            &[&s.created_at],
        )
        .await
        .map_err(db("deleting expired sessions"))?;
        tx.execute(
            "INSERT INTO ui_sessions (id_hash, name, role, charters, csrf, grant_hash, created_at,
                 expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &s.id_hash,
                &s.name,
                &s.role,
                &Json(&s.charters),
                &s.csrf,
                &s.grant,
                &s.created_at,
                &s.expires_at,
            ],
        )
        .await
        .map_err(db("storing a session"))?;
        tx.commit().await.map_err(db("committing a session"))?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: UnixMillis) -> Result<Option<UiSession>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT name, role, charters, csrf, grant_hash, created_at, expires_at
                 FROM ui_sessions WHERE id_hash = $1 AND expires_at > $2",
                &[&id_hash, &now],
            )
            .await
            .map_err(db("reading a session"))?;
        let Some(r) = row else {
            return Ok(None);
        };
        let Json(charters): Json<Vec<String>> = get(&r, 2)?;
        Ok(Some(UiSession {
            id_hash: id_hash.to_string(),
            name: get(&r, 0)?,
            role: get(&r, 1)?,
            charters,
            csrf: get(&r, 3)?,
            grant: get(&r, 4)?,
            created_at: get(&r, 5)?,
            expires_at: get(&r, 6)?,
        }))
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM ui_sessions WHERE id_hash = $1", &[&id_hash])
            .await
            .map_err(db("ending a session"))?;
        Ok(n == 1)
    }
}
