//! The PostgreSQL backend, for several stateless `charter serve` nodes sharing one database.
//!
//! * Same tables and the same behaviour as the SQLite backend (the `conformance`
//!   suite runs against both). Ids are `UUID`, times `BIGINT` Unix milliseconds, JSON `JSONB`.
//! * A pool of connections ([`deadpool_postgres`]); every write method runs in its own
//!   transaction and returns after `COMMIT`. With PostgreSQL's default
//!   `synchronous_commit = on` a committed transaction has been flushed to the WAL on disk.
//! * The schema is a list of embedded migrations (`migrations/postgres/*.sql`), recorded in
//!   the `charter_schema_version` table and applied on [`PgStore::connect`] (or by
//!   [`migrate()`]) in one transaction that first takes a transaction-scoped advisory lock, so
//!   nodes starting at the same moment apply each migration exactly once.
//! * Claims take slot rows and events with `FOR UPDATE SKIP LOCKED` in one statement, so
//!   the per-charter limit holds across nodes without a lock every claim waits for
//!   (see [`queue`]).
//! * Ingest is group-committed: events arriving together are stored by one multi-row insert
//!   (see [`ingest`]). A run's writes up to each durable point are one pipelined transaction,
//!   one round trip (see [`run_writes`]).
//! * Stored events are announced after their commit with `NOTIFY charter_events` (payload:
//!   the charter name), coalesced per charter by one background task; [`PgStore::listen`]
//!   receives them so that idle workers wake up without polling.
//! * [`PgStore::try_lock_job`] gives a cluster-wide "only one node runs this" lock for
//!   scheduled jobs.
//!
//! This file connects and holds what every concern shares (the pool, listing conditions);
//! each store trait is implemented in the file of its concern, named as in the SQLite
//! backend (`events.rs`, `queue.rs`, `runs.rs` and `run_writes.rs`, `approvals.rs`, ...).
//!
//! Connections are made without TLS (the usual set-up is a database on a private network or
//! the same host); a TLS connector is a later addition.
//!
//! Payloads, and every column derived from them, are `JSON` rather than `JSONB` (migration
//! 0008): `JSONB` cannot hold the character U+0000 (`"\u0000"` inside a JSON string).

mod approvals;
mod audit;
mod decision;
mod escalations;
mod events;
mod ingest;
mod knowledge;
mod lists;
mod migrate;
mod notifications;
mod notify;
mod operator;
mod queue;
mod report;
mod retention;
mod rollout;
mod rows;
mod run_writes;
mod runs;
mod sessions;
mod sources;
mod state;

use std::sync::Arc;
use std::time::Duration;

use charter_core::model::UnixMillis;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod,
};
use tokio::sync::watch;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use crate::{Result, StoreError};
use rows::{db, get, u32_of};

pub use migrate::{SCHEMA_VERSION, migrate};
pub use notify::{JobLock, NOTIFY_CHANNEL};

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
            migrate::apply_migrations(&mut client).await?;
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
