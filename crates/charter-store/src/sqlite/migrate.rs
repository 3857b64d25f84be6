//! The SQLite schema: the embedded migrations and how they are applied on open.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::rows::db;
use crate::{Result, StoreError};

/// Embedded migrations, applied in order. Entry `i` moves the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_approvals.sql"),
    include_str!("../../migrations/sqlite/0003_evidence.sql"),
    include_str!("../../migrations/sqlite/0004_sources.sql"),
    include_str!("../../migrations/sqlite/0005_notifications.sql"),
    include_str!("../../migrations/sqlite/0006_charter_mode.sql"),
    include_str!("../../migrations/sqlite/0007_decision.sql"),
    include_str!("../../migrations/sqlite/0008_json_nul.sql"),
    include_str!("../../migrations/sqlite/0009_events_status_check.sql"),
    include_str!("../../migrations/sqlite/0010_llm_spend.sql"),
    include_str!("../../migrations/sqlite/0011_ui_sessions.sql"),
    include_str!("../../migrations/sqlite/0012_in_doubt.sql"),
    include_str!("../../migrations/sqlite/0013_rollout.sql"),
    include_str!("../../migrations/sqlite/0014_knowledge.sql"),
    include_str!("../../migrations/sqlite/0015_claim_path.sql"),
    include_str!("../../migrations/sqlite/0016_lists.sql"),
];

/// The schema version this build creates and expects.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Apply every migration newer than the file's `user_version`, each in its own immediate
/// transaction (so two processes opening the same file do not both apply it).
/// The schema version recorded in the file (`PRAGMA user_version`).
pub(super) fn user_version(conn: &Connection) -> Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db("reading the schema version"))
}

pub(super) fn migrate(conn: &mut Connection) -> Result<u32> {
    let current = user_version(conn)?;
    if current < 0 || current > i64::from(SCHEMA_VERSION) {
        return Err(StoreError::Database(format!(
            "the database has schema version {current}, newer than this build's {SCHEMA_VERSION}"
        )));
    }
    if current == i64::from(SCHEMA_VERSION) {
        return Ok(SCHEMA_VERSION);
    }
    // A migration may rebuild a table that others reference (SQLite's documented procedure:
    // create, copy, drop, rename), which foreign-key enforcement would turn into a cascade
    // of failures at the DROP. Enforcement is off while migrating (the pragma is a no-op
    // inside a transaction, so it is set here) and every migration is checked with
    // `foreign_key_check` before it commits; it is back on afterwards, whatever happened.
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(db("turning foreign keys off to migrate"))?;
    let applied = apply_migrations(conn);
    let restored = conn
        .pragma_update(None, "foreign_keys", "ON")
        .map_err(db("turning foreign keys back on after migrating"));
    applied.and(restored).map(|()| SCHEMA_VERSION)
}

fn apply_migrations(conn: &mut Connection) -> Result<()> {
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let target = i as i64 + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("beginning a migration"))?;
        if user_version(&tx)? >= target {
            continue;
        }
        tx.execute_batch(sql).map_err(db("applying a migration"))?;
        // One row per broken reference: (table, rowid or NULL, parent table, fk index).
        let broken: Option<(String, Option<i64>, String)> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(db("checking foreign keys after a migration"))?;
        if let Some((table, rowid, parent)) = broken {
            let rowid = rowid.map_or_else(|| "?".to_string(), |r| r.to_string());
            return Err(StoreError::Database(format!(
                "migration {target} left a row of {table} (rowid {rowid}) referring to a \
                 missing row of {parent}"
            )));
        }
        tx.pragma_update(None, "user_version", target)
            .map_err(db("recording the schema version"))?;
        tx.commit().map_err(db("committing a migration"))?;
        tracing::info!(version = target, "applied SQLite migration");
    }
    Ok(())
}
