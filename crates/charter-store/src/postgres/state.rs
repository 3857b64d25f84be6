//! Per-charter state on PostgreSQL: pause and the mode override.

use charter_core::model::{
    ActionRecord, ActionStatus, AttemptRecord, Decision, EventRecord, NewEvent, RejectedPayload,
    RunOutcome, RunRecord, UnixMillis,
};
use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use super::rows::{EVENT_COLS, db, enum_name, get, parse_enum, u32_of};
use super::{Conditions, DEFAULT_LIMIT, Param, PgStore, limit_of, now_millis, param_refs};
use crate::{
    CharterStateStore, EventFilter, EventStore, IngestOutcome, RejectedFilter, Result, RunFilter,
    RunStore, RunWrite, RunWritten, StoreError,
};
use crate::{InDoubtAction, InDoubtFilter};

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
