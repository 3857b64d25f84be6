//! The PostgreSQL schema: the embedded migrations and how they are applied, once, by
//! whichever node gets the migration lock first.

use super::now_millis;
use super::rows::{db, get, u32_of};
use super::{connect_one, parse_config};
use crate::{Result, StoreError};

/// Embedded migrations, applied in order. Entry `i` moves the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_approvals.sql"),
    include_str!("../../migrations/postgres/0003_evidence.sql"),
    include_str!("../../migrations/postgres/0004_sources.sql"),
    include_str!("../../migrations/postgres/0005_notifications.sql"),
    include_str!("../../migrations/postgres/0006_charter_mode.sql"),
    include_str!("../../migrations/postgres/0007_decision.sql"),
    include_str!("../../migrations/postgres/0008_json_nul.sql"),
    include_str!("../../migrations/postgres/0009_events_status_check.sql"),
    include_str!("../../migrations/postgres/0010_llm_spend.sql"),
    include_str!("../../migrations/postgres/0011_ui_sessions.sql"),
    include_str!("../../migrations/postgres/0012_in_doubt.sql"),
    include_str!("../../migrations/postgres/0013_rollout.sql"),
    include_str!("../../migrations/postgres/0014_knowledge.sql"),
    include_str!("../../migrations/postgres/0015_claim_path.sql"),
    include_str!("../../migrations/postgres/0016_lists.sql"),
];

/// The schema version this build creates and expects.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Key of the transaction-scoped advisory lock held while migrating ("charter" + 1).
const MIGRATION_LOCK: i64 = 0x6368_6172_7465_7201;
/// Apply the schema migrations to the database at `url` and return the schema version.
///
/// Safe to run while nodes are starting or running: migrations are applied in one transaction
/// under an advisory lock, and a database already at [`SCHEMA_VERSION`] is left unchanged.
/// Fails if the database has a newer schema than this build knows.
pub async fn migrate(url: &str) -> Result<u32> {
    let config = parse_config(url)?;
    let mut client = connect_one(&config).await?;
    apply_migrations(&mut client).await
}

/// Bring the schema to [`SCHEMA_VERSION`] in one transaction under [`MIGRATION_LOCK`].
pub(super) async fn apply_migrations(client: &mut tokio_postgres::Client) -> Result<u32> {
    let tx = client
        .transaction()
        .await
        .map_err(db("beginning the migration transaction"))?;
    // Held until commit/rollback: a second node waits here, then finds the work done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db("taking the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS charter_schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at BIGINT NOT NULL
         )",
    )
    .await
    .map_err(db("creating charter_schema_version"))?;
    let row = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM charter_schema_version",
            &[],
        )
        .await
        .map_err(db("reading the schema version"))?;
    let current: i32 = get(&row, 0)?;
    let current = u32_of("schema version", i64::from(current))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Database(format!(
            "the database has schema version {current}, newer than this build's {SCHEMA_VERSION}"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let target = i as i32 + 1;
        tx.batch_execute(sql)
            .await
            .map_err(db("applying a migration"))?;
        tx.execute(
            "INSERT INTO charter_schema_version (version, applied_at) VALUES ($1, $2)",
            &[&target, &now_millis()],
        )
        .await
        .map_err(db("recording the schema version"))?;
        tracing::info!(version = target, "applied PostgreSQL migration");
    }
    tx.commit().await.map_err(db("committing the migrations"))?;
    Ok(SCHEMA_VERSION)
}
