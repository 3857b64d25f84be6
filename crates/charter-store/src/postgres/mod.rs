//! The PostgreSQL backend, for several stateless `charter serve` nodes sharing one database.
//!
//! * Same tables and the same behaviour as the SQLite backend (the [`crate::conformance`]
//!   suite runs against both). Ids are `UUID`, times `BIGINT` Unix milliseconds, JSON `JSONB`.
//! * A pool of connections ([`deadpool_postgres`]); every write method runs in its own
//!   transaction and returns after `COMMIT`. With PostgreSQL's default
//!   `synchronous_commit = on` a committed transaction has been flushed to the WAL on disk.
//! * The schema is a list of embedded migrations (`migrations/postgres/*.sql`), recorded in
//!   the `charter_schema_version` table and applied on [`PgStore::connect`] (or by
//!   [`migrate`]) in one transaction that first takes a transaction-scoped advisory lock, so
//!   nodes starting at the same moment apply each migration exactly once.
//! * Claims take slot rows and events with `FOR UPDATE SKIP LOCKED` in one statement, so
//!   the per-charter limit holds across nodes without a lock every claim waits for
//!   (see [`queue`]).
//! * Ingest is group-committed: events arriving together are stored by one multi-row insert
//!   (see [`ingest`]). A run's writes up to each durable point are one pipelined transaction,
//!   one round trip (see [`runs`]).
//! * Stored events are announced after their commit with `NOTIFY charter_events` (payload:
//!   the charter name), coalesced per charter by one background task; [`PgStore::listen`]
//!   receives them so that idle workers wake up without polling.
//! * [`PgStore::try_lock_job`] gives a cluster-wide "only one node runs this" lock for
//!   scheduled jobs.
//!
//! Connections are made without TLS (the usual set-up is a database on a private network or
//! the same host); a TLS connector is a later addition.
//!
//! Payloads, and every column derived from them, are `JSON` rather than `JSONB` (migration
//! 0008): `JSONB` cannot hold the character U+0000 (`"\u0000"` inside a JSON string).

mod approvals;
mod decision;
mod ingest;
mod knowledge;
mod lists;
mod notifications;
mod notify;
mod operator;
mod queue;
mod report;
mod retention;
mod rollout;
mod rows;
mod runs;
mod sessions;
mod sources;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use charter_core::model::{
    ActionRecord, ActionStatus, AttemptRecord, Decision, EventRecord, NewEvent, RejectedPayload,
    RunOutcome, RunRecord, UnixMillis,
};
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod,
};
use tokio::sync::watch;
use tokio_postgres::NoTls;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use crate::{
    CharterStateStore, EventFilter, EventStore, IngestOutcome, RejectedFilter, Result, RunFilter,
    RunStore, RunWrite, RunWritten, StoreError,
};
use crate::{InDoubtAction, InDoubtFilter};
use rows::{EVENT_COLS, db, enum_name, get, parse_enum, u32_of};

pub use notify::{JobLock, NOTIFY_CHANNEL};

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

/// Default page size of listings when the caller passes 0.
const DEFAULT_LIMIT: usize = 100;

/// How long a new connection may take when the URL does not say (`connect_timeout`).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL store. Cloning is cheap: every clone shares one connection pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// The ingest batches' connections (see [`ingest`]).
    ingest_pool: Pool,
    config: tokio_postgres::Config,
    /// Set to true by [`PgStore::close`]; background listeners watch it.
    shutdown: watch::Sender<bool>,
    /// Announces stored events to other nodes after their commit.
    announcer: Arc<notify::Announcer>,
    /// Claim slots already created by this process, per charter.
    slots: queue::SlotsMade,
    /// Events waiting for the next ingest batch (group commit).
    ingest: ingest::IngestQueue,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("PgStore")
            .field("hosts", &self.inner.config.get_hosts())
            .field("dbname", &self.inner.config.get_dbname())
            .field("user", &self.inner.config.get_user())
            .finish_non_exhaustive()
    }
}

/// Parse a connection string (`postgres://user@host:port/db?...` or `host=... dbname=...`)
/// and fill in Charter's defaults (application name, connect timeout) where it says nothing.
fn parse_config(url: &str) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Database(format!("invalid PostgreSQL connection string: {e}")))?;
    if config.get_application_name().is_none() {
        config.application_name("charter");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// Open one plain connection (outside the pool) and drive it on a Tokio task.
async fn connect_one(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(db("connecting to PostgreSQL"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

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
async fn apply_migrations(client: &mut tokio_postgres::Client) -> Result<u32> {
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

/// The same connection string pointing at database `name`: the path of a
/// `postgres://…/db?…` URL is replaced (the query kept), and a libpq key=value string gets a
/// trailing `dbname=` (a later key overrides an earlier one).
pub fn with_dbname(url: &str, name: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let (base, query) = match url.find('?') {
            Some(q) => (&url[..q], &url[q..]),
            None => (url, ""),
        };
        let authority_start = scheme_end + 3;
        let path_start = base[authority_start..]
            .find('/')
            .map_or(base.len(), |i| authority_start + i);
        format!("{}/{name}{query}", &base[..path_start])
    } else {
        format!("{url} dbname={name}")
    }
}

impl PgStore {
    /// Connect to the database at `url` with a pool of at most `pool_size` connections (at
    /// least 1) and apply pending migrations.
    ///
    /// `url` is a libpq-style connection string: `postgres://user:pass@host:5432/db` or
    /// `host=... user=... dbname=...`. Fails if the server cannot be reached or its schema
    /// is newer than this build's.
    pub async fn connect(url: &str, pool_size: usize) -> Result<PgStore> {
        let config = parse_config(url)?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .build()
            .map_err(|e| StoreError::Database(format!("building the connection pool: {e}")))?;
        // Ingest batches have connections of their own, so that acknowledgements never
        // wait behind the worker's run writes for a pooled connection (opened on first use:
        // a worker-only node opens none).
        let ingest_pool = Pool::builder(Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        ))
        .max_size(ingest::WRITERS)
        .build()
        .map_err(|e| StoreError::Database(format!("building the ingest connection pool: {e}")))?;
        let (shutdown, _) = watch::channel(false);
        let store = PgStore {
            inner: Arc::new(Inner {
                pool,
                ingest_pool,
                config,
                shutdown,
                announcer: Arc::default(),
                slots: queue::SlotsMade::default(),
                ingest: ingest::IngestQueue::default(),
            }),
        };
        {
            let mut client = store.client().await?;
            apply_migrations(&mut client).await?;
        }
        tracing::debug!(store = ?store, "PostgreSQL store connected");
        Ok(store)
    }

    /// Readiness: a pooled connection works and can commit a (tiny) write.
    pub async fn ready(&self) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO store_meta (key, value) VALUES ('last_ready_check', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )
            .await
            .map_err(db("preparing the readiness write"))?;
        client
            .execute(&stmt, &[&now_millis().to_string()])
            .await
            .map_err(db("readiness write"))?;
        Ok(())
    }

    /// Stop the store: new calls fail with [`StoreError::Closed`], idle pooled connections
    /// are closed, and [`PgStore::listen`] tasks end. Calls already running finish.
    pub async fn close(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.pool.close();
        self.inner.ingest_pool.close();
    }

    /// The schema version recorded in the database.
    pub async fn schema_version(&self) -> Result<u32> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT COALESCE(max(version), 0) FROM charter_schema_version",
                &[],
            )
            .await
            .map_err(db("reading the schema version"))?;
        let v: i32 = get(&row, 0)?;
        u32_of("schema version", i64::from(v))
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<Object> {
        self.client_of(&self.inner.pool).await
    }

    /// A connection for an ingest batch.
    async fn ingest_client(&self) -> Result<Object> {
        self.client_of(&self.inner.ingest_pool).await
    }

    async fn client_of(&self, pool: &Pool) -> Result<Object> {
        if *self.inner.shutdown.borrow() {
            return Err(StoreError::Closed);
        }
        pool.get().await.map_err(|e| match e {
            PoolError::Closed => StoreError::Closed,
            PoolError::Backend(e) => db("getting a pooled connection")(e),
            other => StoreError::Database(format!("getting a pooled connection: {other}")),
        })
    }
}

/// Wall-clock time, for the few records whose trait method carries no `now`.
fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn limit_of(limit: usize) -> i64 {
    let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A query parameter of any supported type, for queries assembled at run time.
type Param = Box<dyn ToSql + Sync + Send>;

/// The `WHERE` of a listing query, built from its optional filters, numbering the
/// parameters as it goes.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    params: Vec<Param>,
}

impl Conditions {
    /// Add `<prefix> $n` (for example `"charter ="`) when `value` is set.
    fn when<T: ToSql + Sync + Send + 'static>(&mut self, prefix: &str, value: Option<T>) {
        if let Some(v) = value {
            self.params.push(Box::new(v));
            self.clauses
                .push(format!("{prefix} ${}", self.params.len()));
        }
    }

    /// Add a clause that takes no parameter.
    fn always(&mut self, clause: &str) {
        self.clauses.push(clause.to_string());
    }

    /// Add a parameter and return its placeholder (`$n`), for a clause built by the caller.
    fn param<T: ToSql + Sync + Send + 'static>(&mut self, value: T) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// Add a clause built by the caller (with placeholders from [`Conditions::param`]).
    fn clause(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    /// Add `column = ANY($n)` when `values` is not empty.
    fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let p = self.param(values.to_vec());
        self.clauses.push(format!("{column} = ANY({p})"));
    }

    /// The `WHERE …` text and the parameters, for a query without a limit.
    fn without_limit(self) -> (String, Vec<Param>) {
        (crate::where_clause(&self.clauses), self.params)
    }

    /// The `WHERE …` text, the parameters with the listing's limit as the last one, and
    /// that limit's placeholder (for a `LIMIT $n` after the `WHERE`).
    fn with_limit(self, limit: usize) -> (String, Vec<Param>, String) {
        let where_sql = crate::where_clause(&self.clauses);
        let mut params = self.params;
        params.push(Box::new(limit_of(limit)));
        let placeholder = format!("${}", params.len());
        (where_sql, params, placeholder)
    }
}

fn param_refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

/// A JSON text passed to a `json`/`jsonb` parameter as it is (the caller parsed it already).
#[derive(Debug)]
struct JsonText<'a>(&'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        if *ty == tokio_postgres::types::Type::JSONB {
            // jsonb's binary format: a version byte, then the text.
            out.extend_from_slice(&[1]);
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        matches!(
            *ty,
            tokio_postgres::types::Type::JSON | tokio_postgres::types::Type::JSONB
        )
    }

    tokio_postgres::types::to_sql_checked!();
}

impl EventStore for PgStore {
    async fn ingest(&self, event: NewEvent) -> Result<IngestOutcome> {
        ingest::ingest(self, event, None).await
    }

    async fn ingest_json(&self, event: NewEvent, payload_json: String) -> Result<IngestOutcome> {
        ingest::ingest(self, event, Some(payload_json)).await
    }

    async fn reject(&self, rejected: RejectedPayload) -> Result<()> {
        // The same insert as a capped one, with no cap.
        self.reject_within(rejected, u64::MAX).await.map(|_| ())
    }

    async fn reject_within(&self, rejected: RejectedPayload, keep: u64) -> Result<bool> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO rejected (id, charter, source, received_at, headers, body, reasons)
                 SELECT $1, $2, $3, $4, $5, $6, $7
                 WHERE (SELECT count(*) FROM rejected WHERE charter = $2) < $8
                 ON CONFLICT (id) DO NOTHING",
            )
            .await
            .map_err(db("preparing reject_within"))?;
        let n = client
            .execute(
                &stmt,
                &[
                    &rejected.id,
                    &rejected.charter,
                    &rejected.source,
                    &rejected.received_at,
                    &Json(&rejected.headers),
                    &rejected.body.as_bytes(),
                    &Json(&rejected.reasons),
                    &keep,
                ],
            )
            .await
            .map_err(db("inserting a rejected payload"))?;
        Ok(n == 1)
    }

    async fn get_event(&self, id: Uuid) -> Result<Option<EventRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {EVENT_COLS} FROM events WHERE id = $1"))
            .await
            .map_err(db("preparing get_event"))?;
        let row = client
            .query_opt(&stmt, &[&id])
            .await
            .map_err(db("querying an event"))?;
        row.as_ref().map(rows::event_record).transpose()
    }

    async fn list_events(&self, filter: EventFilter) -> Result<Vec<EventRecord>> {
        self.page_events(filter).await
    }

    async fn count_events(&self, filter: EventFilter) -> Result<u64> {
        self.count_events_matching(filter).await
    }

    async fn page_rejected(&self, filter: RejectedFilter) -> Result<Vec<RejectedPayload>> {
        self.page_rejected_matching(filter).await
    }

    async fn count_rejected(&self, filter: RejectedFilter) -> Result<u64> {
        self.count_rejected_matching(filter).await
    }

    async fn delete_rejected(&self, id: Uuid) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM rejected WHERE id = $1", &[&id])
            .await
            .map_err(db("deleting a rejected payload"))?;
        Ok(n > 0)
    }
}

// ---------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------

/// A write that references run `run_id` failed: the run does not exist (its foreign key)
/// is "not found"; anything else is a database error about `context`.
fn run_write_error(
    run_id: Uuid,
    context: &'static str,
) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
            StoreError::NotFound(format!("run {run_id}"))
        } else {
            db(context)(e)
        }
    }
}

/// Add one attempt to an action. `replace`: an attempt with the same number is overwritten
/// (recorded one by one); otherwise an existing one is kept (carried by a finished record).
async fn insert_attempt(
    tx: &deadpool_postgres::Transaction<'_>,
    action_id: i64,
    a: &AttemptRecord,
    replace: bool,
) -> Result<()> {
    let sql = if replace {
        "INSERT INTO action_attempts (action_id, attempt, started_at, duration_ms, http_status,
             error, ok)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (action_id, attempt) DO UPDATE SET started_at = EXCLUDED.started_at,
             duration_ms = EXCLUDED.duration_ms, http_status = EXCLUDED.http_status,
             error = EXCLUDED.error, ok = EXCLUDED.ok"
    } else {
        "INSERT INTO action_attempts (action_id, attempt, started_at, duration_ms, http_status,
             error, ok)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (action_id, attempt) DO NOTHING"
    };
    let stmt = tx
        .prepare_cached(sql)
        .await
        .map_err(db("preparing an attempt"))?;
    let attempt = i64::from(a.attempt);
    let duration = i64::try_from(a.duration_ms).unwrap_or(i64::MAX);
    let http = a.status.map(i32::from);
    tx.execute(
        &stmt,
        &[
            &action_id,
            &attempt,
            &a.started_at,
            &duration,
            &http,
            &a.error,
            &a.ok,
        ],
    )
    .await
    .map_err(db("recording an attempt"))?;
    Ok(())
}

// The run writes as functions of a client or an open transaction, shared by the
// single-write methods and by `record_run` (several in one transaction).

async fn pg_action_succeeded<C: GenericClient>(c: &C, idempotency_key: &str) -> Result<bool> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM succeeded_keys WHERE idempotency_key = $1")
        .await
        .map_err(db("preparing action_succeeded"))?;
    let found = c
        .query_opt(&stmt, &[&idempotency_key])
        .await
        .map_err(db("looking up a succeeded key"))?;
    Ok(found.is_some())
}

async fn pg_start_run<C: GenericClient>(
    c: &C,
    run_id: Uuid,
    event_id: Uuid,
    charter: &str,
    charter_version: &str,
    mode: &str,
    now: UnixMillis,
) -> Result<()> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO runs (id, event_id, charter, charter_version, mode, started_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(db("preparing start_run"))?;
    c.execute(
        &stmt,
        &[&run_id, &event_id, &charter, &charter_version, &mode, &now],
    )
    .await
    .map_err(db("starting a run"))?;
    Ok(())
}

async fn pg_record_decision<C: GenericClient>(
    c: &C,
    run_id: Uuid,
    decision: &Decision,
) -> Result<()> {
    let stage = enum_name(&decision.stage);
    let stmt = c
        .prepare_cached(
            "UPDATE runs SET decision = $2, decision_label = $3, decision_stage = $4,
                 decision_confidence = $5
             WHERE id = $1",
        )
        .await
        .map_err(db("preparing record_decision"))?;
    let n = c
        .execute(
            &stmt,
            &[
                &run_id,
                &Json(decision),
                &decision.label,
                &stage,
                &decision.confidence,
            ],
        )
        .await
        .map_err(db("recording a decision"))?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("run {run_id}")));
    }
    Ok(())
}

async fn pg_begin_action(
    tx: &deadpool_postgres::Transaction<'_>,
    run_id: Uuid,
    action: &str,
    idempotency_key: &str,
    params: &serde_json::Value,
) -> Result<()> {
    // An unknown run fails the insert on its foreign key (reported as not found).
    let stmt = tx
        .prepare_cached(
            "INSERT INTO action_records (run_id, action, idempotency_key, params, status)
             VALUES ($1, $2, $3, $4, 'pending')
             ON CONFLICT (run_id, action) DO UPDATE SET
                 idempotency_key = EXCLUDED.idempotency_key, params = EXCLUDED.params,
                 status = 'pending'",
        )
        .await
        .map_err(db("preparing begin_action"))?;
    tx.execute(&stmt, &[&run_id, &action, &idempotency_key, params])
        .await
        .map_err(run_write_error(run_id, "beginning an action"))?;
    Ok(())
}

async fn pg_record_attempt(
    tx: &deadpool_postgres::Transaction<'_>,
    run_id: Uuid,
    action: &str,
    attempt: &AttemptRecord,
) -> Result<()> {
    let stmt = tx
        .prepare_cached("SELECT id FROM action_records WHERE run_id = $1 AND action = $2")
        .await
        .map_err(db("preparing an action lookup"))?;
    let row = tx
        .query_opt(&stmt, &[&run_id, &action])
        .await
        .map_err(db("looking up an action"))?
        .ok_or_else(|| {
            StoreError::NotFound(format!("action {action} was not begun in run {run_id}"))
        })?;
    let id: i64 = get(&row, 0)?;
    insert_attempt(tx, id, attempt, true).await
}

async fn pg_finish_action(
    tx: &deadpool_postgres::Transaction<'_>,
    run_id: Uuid,
    record: &ActionRecord,
    succeeded_at: UnixMillis,
) -> Result<()> {
    // An unknown run fails the insert on its foreign key (reported as not found).
    let stmt = tx
        .prepare_cached(
            "INSERT INTO action_records (run_id, action, idempotency_key, params, status)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (run_id, action) DO UPDATE SET status = EXCLUDED.status,
                 idempotency_key = EXCLUDED.idempotency_key, params = EXCLUDED.params
             RETURNING id",
        )
        .await
        .map_err(db("preparing finish_action"))?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &run_id,
                &record.action,
                &record.idempotency_key,
                &record.params,
                &record.status.as_str(),
            ],
        )
        .await
        .map_err(run_write_error(run_id, "finishing an action"))?;
    let id: i64 = get(&row, 0)?;
    // Attempts recorded one by one are kept; ones only carried by the record are added.
    for attempt in &record.attempts {
        insert_attempt(tx, id, attempt, false).await?;
    }
    if record.status == ActionStatus::Succeeded {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO succeeded_keys (idempotency_key, run_id, action, succeeded_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .await
            .map_err(db("preparing a succeeded key"))?;
        tx.execute(
            &stmt,
            &[
                &record.idempotency_key,
                &run_id,
                &record.action,
                &succeeded_at,
            ],
        )
        .await
        .map_err(db("recording a succeeded key"))?;
    }
    Ok(())
}

async fn pg_finish_run<C: GenericClient>(
    c: &C,
    run_id: Uuid,
    route: Option<usize>,
    outcome: RunOutcome,
    error: Option<&str>,
    now: UnixMillis,
) -> Result<()> {
    let route = route.map(|r| i64::try_from(r).unwrap_or(i64::MAX));
    let stmt = c
        .prepare_cached(
            "UPDATE runs SET finished_at = $2, outcome = $3, route = $4, error = $5
             WHERE id = $1",
        )
        .await
        .map_err(db("preparing finish_run"))?;
    let n = c
        .execute(&stmt, &[&run_id, &now, &outcome.as_str(), &route, &error])
        .await
        .map_err(db("finishing a run"))?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("run {run_id}")));
    }
    Ok(())
}

impl RunStore for PgStore {
    async fn start_run(
        &self,
        run_id: Uuid,
        event_id: Uuid,
        charter: &str,
        charter_version: &str,
        mode: &str,
        now: UnixMillis,
    ) -> Result<()> {
        let client = self.client().await?;
        pg_start_run(
            &client,
            run_id,
            event_id,
            charter,
            charter_version,
            mode,
            now,
        )
        .await
    }

    async fn record_decision(&self, run_id: Uuid, decision: &Decision) -> Result<()> {
        let client = self.client().await?;
        pg_record_decision(&client, run_id, decision).await
    }

    async fn begin_action(
        &self,
        run_id: Uuid,
        action: &str,
        idempotency_key: &str,
        params: &serde_json::Value,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("beginning begin_action"))?;
        pg_begin_action(&tx, run_id, action, idempotency_key, params).await?;
        tx.commit().await.map_err(db("committing begin_action"))?;
        Ok(())
    }

    async fn record_attempt(
        &self,
        run_id: Uuid,
        action: &str,
        attempt: &AttemptRecord,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("beginning record_attempt"))?;
        pg_record_attempt(&tx, run_id, action, attempt).await?;
        tx.commit().await.map_err(db("committing an attempt"))?;
        Ok(())
    }

    async fn finish_action(&self, run_id: Uuid, record: &ActionRecord) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("beginning finish_action"))?;
        pg_finish_action(&tx, run_id, record, now_millis()).await?;
        tx.commit().await.map_err(db("committing finish_action"))?;
        Ok(())
    }

    async fn record_run(&self, writes: Vec<RunWrite>) -> Result<RunWritten> {
        runs::record_run(self, writes).await
    }

    async fn action_succeeded(&self, idempotency_key: &str) -> Result<bool> {
        let client = self.client().await?;
        pg_action_succeeded(&client, idempotency_key).await
    }

    async fn finish_run(
        &self,
        run_id: Uuid,
        route: Option<usize>,
        outcome: RunOutcome,
        error: Option<&str>,
        now: UnixMillis,
    ) -> Result<()> {
        let client = self.client().await?;
        pg_finish_run(&client, run_id, route, outcome, error, now).await
    }

    /// Runs oldest first. An action begun and still in flight is left out; one cut off by a
    /// crash is reported as in doubt once its event was claimed again.
    async fn runs_for_event(&self, event_id: Uuid) -> Result<Vec<RunRecord>> {
        self.load_runs(
            "WHERE event_id = $1 ORDER BY started_at, seq".to_string(),
            vec![Box::new(event_id)],
        )
        .await
    }

    async fn list_in_doubt(&self, filter: InDoubtFilter) -> Result<Vec<InDoubtAction>> {
        let mut c = Conditions::default();
        c.always("a.status = 'in_doubt'");
        c.when("r.charter =", filter.charter);
        if filter.unsettled {
            c.always(
                "NOT EXISTS (SELECT 1 FROM succeeded_keys k
                             WHERE k.idempotency_key = a.idempotency_key)",
            );
        }
        let (where_sql, params, limit) = c.with_limit(filter.limit);
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT a.run_id, r.event_id, r.charter, a.action, a.idempotency_key,
                         a.params, r.started_at, r.finished_at,
                         (SELECT count(*) FROM action_attempts t WHERE t.action_id = a.id),
                         EXISTS (SELECT 1 FROM succeeded_keys k
                                 WHERE k.idempotency_key = a.idempotency_key)
                     FROM action_records a JOIN runs r ON r.id = a.run_id
                     {where_sql} ORDER BY a.id DESC LIMIT {limit}"
                ),
                &param_refs(&params),
            )
            .await
            .map_err(db("listing in-doubt actions"))?;
        rows.iter()
            .map(|r| {
                let attempts: i64 = get(r, 8)?;
                Ok(InDoubtAction {
                    run_id: get(r, 0)?,
                    event_id: get(r, 1)?,
                    charter: get(r, 2)?,
                    action: get(r, 3)?,
                    idempotency_key: get(r, 4)?,
                    params: get(r, 5)?,
                    started_at: get(r, 6)?,
                    interrupted_at: get(r, 7)?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    settled: get(r, 9)?,
                })
            })
            .collect()
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>> {
        self.page_runs(filter).await
    }

    async fn count_runs(&self, filter: RunFilter) -> Result<u64> {
        self.count_runs_matching(filter).await
    }
}

impl PgStore {
    /// Runs selected by `tail` (a `WHERE … ORDER BY …` over `runs` with `params` for its
    /// placeholders), each with its decision and finished actions, read in one snapshot so
    /// runs, actions and attempts agree.
    async fn load_runs(&self, tail: String, params: Vec<Param>) -> Result<Vec<RunRecord>> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db("beginning a runs query"))?;
        let runs_stmt = tx
            .prepare_cached(&format!(
                "SELECT id, charter, charter_version, mode, started_at, finished_at, outcome,
                     decision, route, error, event_id
                 FROM runs {tail}"
            ))
            .await
            .map_err(db("preparing a runs query"))?;
        let actions_stmt = tx
            .prepare_cached(
                "SELECT a.id, a.run_id, a.action, a.idempotency_key, a.params, a.status
                 FROM action_records a
                 WHERE a.run_id = ANY($1) AND a.status <> 'pending'
                 ORDER BY a.id",
            )
            .await
            .map_err(db("preparing actions"))?;
        let attempts_stmt = tx
            .prepare_cached(
                "SELECT t.action_id, t.attempt, t.started_at, t.duration_ms, t.http_status,
                     t.error, t.ok
                 FROM action_attempts t
                 JOIN action_records a ON a.id = t.action_id
                 WHERE a.run_id = ANY($1)
                 ORDER BY t.action_id, t.attempt",
            )
            .await
            .map_err(db("preparing attempts"))?;
        let run_rows = tx
            .query(&runs_stmt, &param_refs(&params))
            .await
            .map_err(db("loading runs"))?;
        let run_ids = run_rows
            .iter()
            .map(|r| get::<Uuid>(r, 0))
            .collect::<Result<Vec<Uuid>>>()?;
        let action_rows = tx
            .query(&actions_stmt, &[&run_ids])
            .await
            .map_err(db("loading actions"))?;
        let attempt_rows = tx
            .query(&attempts_stmt, &[&run_ids])
            .await
            .map_err(db("loading attempts"))?;
        tx.commit().await.map_err(db("ending a runs query"))?;

        let mut attempts: BTreeMap<i64, Vec<AttemptRecord>> = BTreeMap::new();
        for r in &attempt_rows {
            let action_id: i64 = get(r, 0)?;
            attempts
                .entry(action_id)
                .or_default()
                .push(rows::attempt_record(r)?);
        }
        let mut actions: BTreeMap<Uuid, Vec<ActionRecord>> = BTreeMap::new();
        for r in &action_rows {
            let id: i64 = get(r, 0)?;
            let run_id: Uuid = get(r, 1)?;
            let status: String = get(r, 5)?;
            actions.entry(run_id).or_default().push(ActionRecord {
                action: get(r, 2)?,
                idempotency_key: get(r, 3)?,
                params: get(r, 4)?,
                status: parse_enum::<ActionStatus>("action status", &status)?,
                attempts: attempts.remove(&id).unwrap_or_default(),
            });
        }
        run_rows
            .iter()
            .map(|r| {
                let id: Uuid = get(r, 0)?;
                let outcome: Option<String> = get(r, 6)?;
                let decision: Option<Json<Decision>> = get(r, 7)?;
                let route: Option<i64> = get(r, 8)?;
                Ok(RunRecord {
                    id,
                    event_id: get(r, 10)?,
                    charter: get(r, 1)?,
                    charter_version: get(r, 2)?,
                    mode: get(r, 3)?,
                    started_at: get(r, 4)?,
                    finished_at: get(r, 5)?,
                    outcome: outcome
                        .map(|o| parse_enum::<RunOutcome>("run outcome", &o))
                        .transpose()?,
                    decision: decision.map(|Json(d)| d),
                    route: route
                        .map(|r| {
                            usize::try_from(r).map_err(|_| {
                                StoreError::Corrupt(format!("route out of range: {r}"))
                            })
                        })
                        .transpose()?,
                    actions: actions.remove(&id).unwrap_or_default(),
                    error: get(r, 9)?,
                })
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Charter state
// ---------------------------------------------------------------------------------------

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
