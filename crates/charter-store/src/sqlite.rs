//! The embedded SQLite backend.
//!
//! * One database file in WAL mode with `synchronous=FULL`: a committed transaction has been
//!   fsynced.
//! * Writes go through ONE writer thread with group commit (see [`writer`]): commands queued
//!   together share one transaction and one fsync, each in its own savepoint. A write method
//!   returns only after its batch committed.
//! * Reads use a small pool of separate connections on the blocking thread pool; WAL lets
//!   them run beside the writer and they see everything committed before they start.
//! * The schema is a list of embedded migrations (`migrations/sqlite/*.sql`) tracked with
//!   `PRAGMA user_version`, applied on open.

mod checkpoint;
mod decision;
mod knowledge;
mod lists;
mod notifications;
mod operator;
mod report;
mod retention;
mod rollout;
mod rows;
mod sessions;
mod sources;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use charter_core::model::{
    ActionRecord, ActionStatus, AttemptRecord, Decision, EventRecord, EventStatus, NewEvent,
    RejectedPayload, RunOutcome, RunRecord, UnixMillis,
};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::{
    ApprovalFilter, ApprovalRecord, ApprovalStatus, ApprovalStore, AuditEntry, AuditFilter,
    AuditStore, CharterStateStore, Claimed, EscalationFilter, EscalationRecord, EscalationStatus,
    EscalationStore, EventFilter, EventStore, HumanDecision, IngestOutcome, NewApproval,
    NewAuditEntry, NewEscalation, QueueStore, RejectedFilter, Requeue, Result, RunFilter, RunStore,
    RunWrite, RunWritten, StoreError, Verdict,
};
use crate::{INTERRUPTED_ERROR, InDoubtAction, InDoubtFilter, InDoubtRef, InterruptedRun};
use rows::{EVENT_COLS, db, parse_uuid, to_json};
pub use writer::{Durability, Gather, WriterStats};

/// Embedded migrations, applied in order. Entry `i` moves the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_approvals.sql"),
    include_str!("../migrations/sqlite/0003_evidence.sql"),
    include_str!("../migrations/sqlite/0004_sources.sql"),
    include_str!("../migrations/sqlite/0005_notifications.sql"),
    include_str!("../migrations/sqlite/0006_charter_mode.sql"),
    include_str!("../migrations/sqlite/0007_decision.sql"),
    include_str!("../migrations/sqlite/0008_json_nul.sql"),
    include_str!("../migrations/sqlite/0009_events_status_check.sql"),
    include_str!("../migrations/sqlite/0010_llm_spend.sql"),
    include_str!("../migrations/sqlite/0011_ui_sessions.sql"),
    include_str!("../migrations/sqlite/0012_in_doubt.sql"),
    include_str!("../migrations/sqlite/0013_rollout.sql"),
    include_str!("../migrations/sqlite/0014_knowledge.sql"),
    include_str!("../migrations/sqlite/0015_claim_path.sql"),
    include_str!("../migrations/sqlite/0016_lists.sql"),
];

/// The schema version this build creates and expects.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Default page size of listings when the caller passes 0.
const DEFAULT_LIMIT: usize = 100;

/// Tuning knobs of [`SqliteStore`]. The defaults suit one machine serving webhooks.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Read connections kept open (and the number of reads run at once).
    pub readers: usize,
    /// Most write commands committed in one transaction.
    pub max_batch: usize,
    /// Write commands that may wait for the writer before callers are made to wait.
    pub queue: usize,
    /// How long a connection waits for a lock held by another process.
    pub busy_timeout: Duration,
    /// Where the fsync of each batch happens (see [`Durability`]).
    pub durability: Durability,
    /// Page cache of the write connection, in MiB (SQLite's default is 2 MiB). Pages are
    /// cached as they are used, so an idle store does not hold it; a busy one keeps its hot
    /// indexes here instead of re-reading them from the OS after each commit.
    pub writer_cache_mib: u32,
    /// WAL size (in pages) at which the writer checkpoints and the WAL starts over from its
    /// beginning (SQLite's default is 1,000). A checkpointer thread of the store copies the
    /// WAL into the database file every 20 ms off the writer thread, so the writer's own
    /// checkpoint only copies the frames committed since that thread's last pass.
    pub wal_autocheckpoint_pages: u32,
    /// Whether the writer waits to gather larger batches while the machine's CPUs are
    /// saturated (see [`Gather`]); `None` commits every batch as soon as it is taken.
    pub gather: Option<Gather>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            readers: 4,
            max_batch: 1024,
            queue: 16_384,
            busy_timeout: Duration::from_secs(5),
            durability: Durability::Full,
            writer_cache_mib: 8,
            wal_autocheckpoint_pages: 2048,
            gather: Some(Gather::default()),
        }
    }
}

/// The SQLite store. Cloning is cheap: every clone shares the same writer and read pool.
///
/// Dropping the last clone stops the writer once its queue is empty; call
/// [`SqliteStore::close`] to wait for that.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    options: SqliteOptions,
    writer: writer::Writer,
    /// Taken (and stopped) by [`SqliteStore::close`].
    checkpointer: Mutex<Option<checkpoint::Checkpointer>>,
    readers: Mutex<Vec<Connection>>,
    read_permits: Arc<Semaphore>,
    closed: AtomicBool,
    /// The serving lock, once taken (see [`SqliteStore::lock_for_serving`]).
    serving_lock: Mutex<Option<std::fs::File>>,
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` with default options, apply pending
    /// migrations and start the writer thread.
    ///
    /// This is a synchronous call: it blocks briefly for file I/O and migrations, so call it
    /// at start-up (or from `spawn_blocking`). It does not need a Tokio runtime, but the
    /// returned store's methods do.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// [`SqliteStore::open`] with explicit options.
    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<SqliteStore> {
        let mut conn = Connection::open(path).map_err(db("opening the database"))?;
        configure_writer(&conn, &options)?;
        migrate(&mut conn)?;
        let wal = match options.durability {
            Durability::Full => None,
            Durability::Pipelined => Some(open_wal(path)?),
        };
        let writer =
            writer::Writer::start(conn, options.max_batch, options.queue, wal, options.gather)?;
        let checkpointer = checkpoint::Checkpointer::start(path, options.busy_timeout)?;
        let readers = options.readers.max(1);
        tracing::debug!(path = %path.display(), "SQLite store open");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer,
                checkpointer: Mutex::new(Some(checkpointer)),
                readers: Mutex::new(Vec::with_capacity(readers)),
                read_permits: Arc::new(Semaphore::new(readers)),
                options,
                closed: AtomicBool::new(false),
                serving_lock: Mutex::new(None),
            }),
        })
    }

    /// Make this store the only one serving its file: take an exclusive lock on
    /// `<file>.lock` (created beside the file; flock(2), so the kernel drops it when the
    /// process ends, however it ends, and a file left by a crash blocks nothing), held
    /// until the process ends. A
    /// `charter serve` takes it before its worker starts, so a second server on the same
    /// file is refused, and every lease found in the file at start-up belongs to a process
    /// that has stopped ([`QueueStore::single_process`]). Commands that only read or purge
    /// (`charter purge`, `backup`) do not take it. Fails when another process holds it.
    pub fn lock_for_serving(&self) -> Result<()> {
        let mut held = match self.inner.serving_lock.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if held.is_some() {
            return Ok(());
        }
        let mut name = self.inner.path.as_os_str().to_os_string();
        name.push(".lock");
        let lock_path = PathBuf::from(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::Database(format!(
                    "cannot open the serving lock {}: {e}",
                    lock_path.display()
                ))
            })?;
        match file.try_lock() {
            Ok(()) => {
                *held = Some(file);
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Database(format!(
                "another process is serving {} (it holds {}): the store is already served by \
                 another `charter serve`; a SQLite store is served by one process (stop that one, \
                 give this one its own --store, or use PostgreSQL for several nodes)",
                self.inner.path.display(),
                lock_path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Database(format!(
                "cannot lock {}: {e}",
                lock_path.display()
            ))),
        }
    }

    /// Whether this store holds the serving lock ([`SqliteStore::lock_for_serving`]).
    pub fn holds_serving_lock(&self) -> bool {
        match self.inner.serving_lock.lock() {
            Ok(g) => g.is_some(),
            Err(poisoned) => poisoned.into_inner().is_some(),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Readiness: the writer is running and can commit a (tiny) write to disk.
    pub async fn ready(&self) -> Result<()> {
        let now = now_millis().to_string();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO store_meta (key, value) VALUES ('last_ready_check', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut s| s.execute([now]))
            .map_err(db("readiness write"))?;
            Ok(())
        })
        .await
    }

    /// Stop the store: new calls fail with [`StoreError::Closed`]; writes already queued are
    /// committed and answered; then the writer thread ends and the connections close.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.writer.shutdown().await;
        let checkpointer = match self.inner.checkpointer.lock() {
            Ok(mut c) => c.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(c) = checkpointer {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
        let _permits = self
            .inner
            .read_permits
            .acquire_many(self.inner.options.readers.max(1) as u32)
            .await;
        match self.inner.readers.lock() {
            Ok(mut pool) => pool.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
        self.inner.read_permits.close();
    }

    /// Write a consistent copy of the database to `target` while the store keeps serving
    /// (see [`backup_file`]). Returns the copy's size in bytes.
    pub async fn backup_to(&self, target: &Path) -> Result<u64> {
        self.check_open()?;
        let (source, target) = (self.inner.path.clone(), target.to_path_buf());
        tokio::task::spawn_blocking(move || backup_file(&source, &target))
            .await
            .map_err(|e| StoreError::Database(format!("the backup task failed: {e}")))?
    }

    /// Counters of the writer thread (batches committed, commands run).
    pub fn stats(&self) -> WriterStats {
        self.inner.writer.stats()
    }

    /// The schema version recorded in the database file.
    pub async fn schema_version(&self) -> Result<u32> {
        self.read(|conn| {
            let v = user_version(conn)?;
            u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("schema version {v}")))
        })
        .await
    }

    /// Run `f` in the writer's next batch, in its own savepoint; resolves once that batch
    /// committed.
    async fn write<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.writer()?.submit(f).await
    }

    /// The writer, while the store is open. Commands with at most one write statement go
    /// straight to [`writer::Writer::submit_atomic`]; the rest through [`SqliteStore::write`].
    fn writer(&self) -> Result<&writer::Writer> {
        self.check_open()?;
        Ok(&self.inner.writer)
    }

    /// [`StoreError::Closed`] once [`SqliteStore::close`] has begun.
    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// Run `f` on a pooled read connection on the blocking thread pool.
    async fn read<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.check_open()?;
        let permit = Arc::clone(&self.inner.read_permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = inner.take_reader()?;
            let out = f(&conn);
            inner.put_reader(conn);
            out
        })
        .await
        .map_err(|e| StoreError::Database(format!("read task failed: {e}")))?
    }
}

impl Inner {
    fn take_reader(&self) -> Result<Connection> {
        let pooled = match self.readers.lock() {
            Ok(mut pool) => pool.pop(),
            Err(poisoned) => poisoned.into_inner().pop(),
        };
        match pooled {
            Some(conn) => Ok(conn),
            None => open_reader(&self.path, &self.options),
        }
    }

    fn put_reader(&self, conn: Connection) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut pool = match self.readers.lock() {
            Ok(pool) => pool,
            Err(poisoned) => poisoned.into_inner(),
        };
        if pool.len() < self.options.readers.max(1) {
            pool.push(conn);
        }
    }
}

/// Prepared statements kept per connection. The writer alone runs some 30 distinct
/// statements in steady state (ingest, claim, every run write, the savepoints); rusqlite's
/// default of 16 made it re-parse most of them on every use.
const STATEMENT_CACHE: usize = 128;

/// Write a consistent copy of the store file `source` to `target` with SQLite's `VACUUM
/// INTO`, from a connection of its own, so it works beside a running server (even another
/// process): the copy is one snapshot (every commit before it, none after), compacted, and
/// opens like any store file. `target` must not exist. Blocking; returns the copy's size in
/// bytes.
pub fn backup_file(source: &Path, target: &Path) -> Result<u64> {
    if !source.exists() {
        return Err(StoreError::Database(format!(
            "no store at {} (`charter migrate` or `charter serve` creates it)",
            source.display()
        )));
    }
    if target.exists() {
        return Err(StoreError::Database(format!(
            "backup target {} already exists; choose a new file",
            target.display()
        )));
    }
    let into = target.to_str().ok_or_else(|| {
        StoreError::Database(format!(
            "backup target {} is not valid UTF-8",
            target.display()
        ))
    })?;
    let conn = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(db("opening the database for a backup"))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(db("setting the busy timeout"))?;
    conn.execute("VACUUM INTO ?1", [into])
        .map_err(db("writing the backup"))?;
    std::fs::metadata(target)
        .map(|m| m.len())
        .map_err(|e| StoreError::Database(format!("reading the backup's size: {e}")))
}

fn configure_writer(conn: &Connection, options: &SqliteOptions) -> Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(options.busy_timeout)
        .map_err(db("setting busy_timeout"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(db("setting journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "the database refused WAL mode (journal_mode is {mode})"
        )));
    }
    // Pipelined: COMMIT does not fsync; the writer's syncer thread does before answering.
    let synchronous = match options.durability {
        Durability::Full => "FULL",
        Durability::Pipelined => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(db("setting synchronous"))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db("setting foreign_keys"))?;
    // A negative cache_size is in KiB.
    conn.pragma_update(
        None,
        "cache_size",
        -(i64::from(options.writer_cache_mib) * 1024),
    )
    .map_err(db("setting cache_size"))?;
    // The checkpointer thread does most of the copying; the writer's own checkpoint copies
    // the rest and lets the WAL start over (see `checkpoint`).
    conn.pragma_update(None, "wal_autocheckpoint", options.wal_autocheckpoint_pages)
        .map_err(db("setting wal_autocheckpoint"))?;
    // Every writer command runs in its own SAVEPOINT, so each page a command first touches
    // is copied to the statement journal. With temporary files on disk that journal spills
    // to a temp file past 64 KiB, which cost a `pwrite` per page (~8% of the end-to-end
    // profile); in memory it is a copy that is freed at the savepoint's release.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(db("setting temp_store"))?;
    Ok(())
}

/// Open the WAL file for the syncer thread, and make its directory entry durable (SQLite
/// does that itself on its first fsync of a new WAL, which pipelined mode bypasses).
fn open_wal(path: &Path) -> Result<std::fs::File> {
    let mut wal_path = path.as_os_str().to_owned();
    wal_path.push("-wal");
    let wal = std::fs::File::open(&wal_path).map_err(|e| {
        StoreError::Database(format!("opening {}: {e}", Path::new(&wal_path).display()))
    })?;
    wal.sync_data()
        .map_err(|e| StoreError::Database(format!("syncing the WAL: {e}")))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Database(format!("syncing {}: {e}", dir.display())))?;
    Ok(wal)
}

fn open_reader(path: &Path, options: &SqliteOptions) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(db("opening a read connection"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(options.busy_timeout)
        .map_err(db("setting busy_timeout"))?;
    conn.pragma_update(None, "query_only", "ON")
        .map_err(db("setting query_only"))?;
    Ok(conn)
}

/// Apply every migration newer than the file's `user_version`, each in its own immediate
/// transaction (so two processes opening the same file do not both apply it).
/// The schema version recorded in the file (`PRAGMA user_version`).
fn user_version(conn: &Connection) -> Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db("reading the schema version"))
}

fn migrate(conn: &mut Connection) -> Result<u32> {
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

/// The `WHERE` of a listing query, built from its optional filters, with the arguments for
/// its `?`s in order.
#[derive(Default)]
struct Conditions {
    clauses: Vec<std::borrow::Cow<'static, str>>,
    args: Vec<Value>,
}

impl Conditions {
    /// Add `clause` (with one `?`) when `value` is set.
    fn when(&mut self, clause: &'static str, value: Option<impl Into<Value>>) {
        if let Some(v) = value {
            self.clauses.push(clause.into());
            self.args.push(v.into());
        }
    }

    /// Add a clause that takes no argument.
    fn always(&mut self, clause: &'static str) {
        self.clauses.push(clause.into());
    }

    /// Add a clause built at run time with its arguments (one per `?`, in order).
    fn raw(&mut self, clause: String, args: Vec<Value>) {
        self.clauses.push(clause.into());
        self.args.extend(args);
    }

    /// Add `column IN (?, …)` when `values` is not empty.
    fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let marks = vec!["?"; values.len()].join(", ");
        self.raw(
            format!("{column} IN ({marks})"),
            values.iter().map(|v| Value::Text(v.clone())).collect(),
        );
    }

    /// The `WHERE …` text and the arguments, for a query without a limit.
    fn without_limit(self) -> (String, Vec<Value>) {
        (crate::where_clause(&self.clauses), self.args)
    }

    /// The `WHERE …` text and the arguments, with the listing's limit as the last one (for
    /// a `LIMIT ?` after the `WHERE`).
    fn with_limit(self, limit: usize) -> (String, Vec<Value>) {
        let mut args = self.args;
        args.push(Value::Integer(limit_of(limit)));
        (crate::where_clause(&self.clauses), args)
    }
}

/// Collect every row of a query through a decoder.
fn collect<T>(
    mut rows: rusqlite::Rows<'_>,
    mut decode: impl FnMut(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db("reading rows"))? {
        out.push(decode(row)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

impl SqliteStore {
    /// The event's INSERT with its payload already as JSON text.
    async fn insert_event(&self, event: NewEvent, payload: String) -> Result<IngestOutcome> {
        let id = event.id;
        let headers = to_json("headers", &event.headers)?;
        // One INSERT (the duplicate lookup after it only reads): no savepoint needed.
        self.writer()?
            .submit_atomic(move |conn| {
                let inserted = conn
                .prepare_cached(
                    "INSERT INTO events (id, charter, source, event_type, dedupe_key, received_at,
                         headers, payload, status, attempts, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, ?6)
                     ON CONFLICT DO NOTHING",
                )
                .and_then(|mut s| {
                    let mut buf = Uuid::encode_buffer();
                    s.execute(params![
                        &*id.hyphenated().encode_lower(&mut buf),
                        event.charter,
                        event.source,
                        event.event_type,
                        event.dedupe_key,
                        event.received_at,
                        headers,
                        payload,
                    ])
                })
                .map_err(db("inserting an event"))?;
                if inserted == 1 {
                    return Ok(IngestOutcome::Stored(id));
                }
                if let Some(key) = &event.dedupe_key {
                    let existing: Option<String> = conn
                        .prepare_cached(
                            "SELECT id FROM events WHERE charter = ?1 AND dedupe_key = ?2",
                        )
                        .and_then(|mut s| {
                            s.query_row(params![event.charter, key], |r| r.get(0))
                                .optional()
                        })
                        .map_err(db("looking up a duplicate"))?;
                    if let Some(existing) = existing {
                        return Ok(IngestOutcome::Duplicate(parse_uuid(&existing)?));
                    }
                }
                // The only other uniqueness constraint is the id: the same event delivered twice.
                Ok(IngestOutcome::Duplicate(id))
            })
            .await
    }
}

impl EventStore for SqliteStore {
    async fn ingest(&self, event: NewEvent) -> Result<IngestOutcome> {
        // Serialise on the caller's thread; the writer thread only runs SQL.
        let payload = to_json("payload", &event.payload)?;
        self.insert_event(event, payload).await
    }

    async fn ingest_json(&self, event: NewEvent, payload_json: String) -> Result<IngestOutcome> {
        self.insert_event(event, payload_json).await
    }

    async fn reject(&self, rejected: RejectedPayload) -> Result<()> {
        // The same insert as a capped one, with no cap.
        self.reject_within(rejected, u64::MAX).await.map(|_| ())
    }

    async fn reject_within(&self, rejected: RejectedPayload, keep: u64) -> Result<bool> {
        let headers = to_json("headers", &rejected.headers)?;
        let reasons = to_json("reasons", &rejected.reasons)?;
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.writer()?
            .submit_atomic(move |conn| {
                let n = conn
                    .prepare_cached(
                        "INSERT INTO rejected (id, charter, source, received_at, headers, body, reasons)
                         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
                         WHERE (SELECT count(*) FROM rejected WHERE charter = ?2) < ?8
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            rejected.id.to_string(),
                            rejected.charter,
                            rejected.source,
                            rejected.received_at,
                            headers,
                            rejected.body,
                            reasons,
                            keep,
                        ])
                    })
                    .map_err(db("inserting a rejected payload"))?;
                Ok(n == 1)
            })
            .await
    }

    async fn get_event(&self, id: Uuid) -> Result<Option<EventRecord>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {EVENT_COLS} FROM events WHERE id = ?1"))
                .map_err(db("preparing get_event"))?;
            let rows = stmt
                .query([id.to_string()])
                .map_err(db("querying an event"))?;
            Ok(collect(rows, rows::event_record)?.pop())
        })
        .await
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
        self.write(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM rejected WHERE id = ?1")
                .and_then(|mut s| s.execute([id.to_string()]))
                .map_err(db("deleting a rejected payload"))?;
            Ok(n > 0)
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------------------

// The claim's candidate queries walk `events_claim` (charter, status, id), so rows come in id
// order (oldest first, ids being UUIDv7) without an ORDER BY: SQLite marks any statement whose
// ORDER BY it checks against a bound `WHERE` value, or that binds a `LIMIT`, to be re-prepared
// whenever its bindings change, and the statement cache clears bindings on every reuse.
// `INDEXED BY` pins the plan (and fails loudly if the index were ever dropped).

/// A charter's pending events, oldest first.
const CLAIM_PENDING_SQL: &str =
    "SELECT id FROM events INDEXED BY events_claim WHERE charter = ?1 AND status = 'pending'";
/// A charter's processing events whose lease expired (or was never set), oldest first.
const CLAIM_EXPIRED_SQL: &str = "SELECT id FROM events INDEXED BY events_claim \
     WHERE charter = ?1 AND status = 'processing' AND (lease_until IS NULL OR lease_until <= ?2)";
/// Take one claim candidate (the row as it is after the update is then read by id).
const CLAIM_UPDATE_SQL: &str = "UPDATE events SET status = 'processing', lease_owner = ?2, \
     lease_until = ?3, attempts = attempts + 1, updated_at = ?4 WHERE id = ?1";

/// Ids of a charter's claim candidates, oldest first: pending events and processing events
/// whose lease expired (or was never set), at most `take` of each kind, merged.
///
/// The queries step through the index and stop after `take` rows instead of binding a
/// `LIMIT ?` (see above: re-preparing the claim's statements on every claim was ~5% of the
/// writer thread's time in the end-to-end profile, BENCHMARKS.md 2026-11-28 third pass).
fn claim_candidates(
    conn: &Connection,
    charter: &str,
    now: i64,
    take: usize,
) -> Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for (sql, expired) in [(CLAIM_PENDING_SQL, false), (CLAIM_EXPIRED_SQL, true)] {
        let mut stmt = conn
            .prepare_cached(sql)
            .map_err(db("preparing claim candidates"))?;
        let id = |r: &rusqlite::Row<'_>| r.get::<_, String>(0);
        // `query_map` steps lazily, so `take` stops the scan.
        let found = if expired {
            stmt.query_map(params![charter, now], id)
        } else {
            stmt.query_map(params![charter], id)
        }
        .map_err(db("selecting claim candidates"))?;
        for found in found.take(take) {
            ids.push(found.map_err(db("selecting claim candidates"))?);
        }
    }
    ids.sort();
    ids.truncate(take);
    Ok(ids)
}

impl QueueStore for SqliteStore {
    async fn claim(
        &self,
        charter: &str,
        worker: &str,
        max: usize,
        charter_limit: usize,
        lease: Duration,
        now: UnixMillis,
    ) -> Result<Vec<Claimed>> {
        let charter = charter.to_string();
        let worker = worker.to_string();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let lease_until = now.saturating_add(lease_ms);
        let (claimed, mode_override) = self
            .write(move |conn| {
                let paused: Option<bool> = conn
                    .prepare_cached("SELECT paused FROM charter_state WHERE charter = ?1")
                    .and_then(|mut s| s.query_row([&charter], |r| r.get(0)).optional())
                    .map_err(db("reading charter state"))?;
                if paused == Some(true) {
                    return Ok((Vec::new(), None));
                }
                let live: i64 = conn
                    .prepare_cached(
                        "SELECT count(*) FROM events
                     WHERE charter = ?1 AND status = 'processing' AND lease_until > ?2",
                    )
                    .and_then(|mut s| s.query_row(params![charter, now], |r| r.get(0)))
                    .map_err(db("counting live leases"))?;
                let live = usize::try_from(live).unwrap_or(0);
                let take = max.min(charter_limit.saturating_sub(live));
                if take == 0 {
                    return Ok((Vec::new(), None));
                }
                let ids = claim_candidates(conn, &charter, now, take)?;
                // An UPDATE then a read by primary key, not `UPDATE … RETURNING`: SQLite buffers
                // RETURNING rows in an ephemeral table that it builds and frees per statement
                // (~3% of the writer thread in the end-to-end profile).
                let mut update = conn
                    .prepare_cached(CLAIM_UPDATE_SQL)
                    .map_err(db("preparing claim"))?;
                let mut read = conn
                    .prepare_cached(&format!("SELECT {EVENT_COLS} FROM events WHERE id = ?1"))
                    .map_err(db("preparing claim"))?;
                let mut claimed = Vec::with_capacity(ids.len());
                for id in ids {
                    let n = update
                        .execute(params![id, worker, lease_until, now])
                        .map_err(db("claiming an event"))?;
                    if n != 1 {
                        continue;
                    }
                    let rows = read.query([&id]).map_err(db("reading a claimed event"))?;
                    // What each run needs to know before deciding, read here (one command on
                    // the writer's hot connection) instead of by reads per run on the pool.
                    for raw in collect(rows, rows::raw_event)? {
                        let resolution = sql_latest_resolution(conn, raw.id)?;
                        let interrupted = sql_close_interrupted(conn, &id, now)?;
                        claimed.push((raw, resolution, interrupted));
                    }
                }
                if claimed.is_empty() {
                    return Ok((claimed, None));
                }
                let mode = operator::read_modes(conn, Some(&charter))?
                    .into_iter()
                    .next();
                Ok((claimed, mode))
            })
            .await?;
        // The payloads are parsed here, off the writer thread. A row that does not parse is
        // reported as corrupt, as any read of it would be.
        claimed
            .into_iter()
            .map(|(raw, resolution, interrupted)| {
                let record = raw.decode()?;
                Ok(Claimed {
                    event: record.event,
                    attempt: record.attempts,
                    lease_until,
                    mode_override: mode_override.clone(),
                    resolution,
                    interrupted,
                })
            })
            .collect()
    }

    async fn renew(&self, event_id: Uuid, worker: &str, lease_until: UnixMillis) -> Result<bool> {
        let worker = worker.to_string();
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE events SET lease_until = ?3
                     WHERE id = ?1 AND lease_owner = ?2 AND status = 'processing'",
                )
                .and_then(|mut s| s.execute(params![event_id.to_string(), worker, lease_until]))
                .map_err(db("renewing a lease"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn release(
        &self,
        event_id: Uuid,
        worker: &str,
        status: EventStatus,
        now: UnixMillis,
    ) -> Result<bool> {
        let worker = worker.to_string();
        self.write(move |conn| sql_release(conn, &event_id.to_string(), &worker, status, now))
            .await
    }

    async fn requeue(&self, selector: Requeue, now: UnixMillis) -> Result<Vec<Uuid>> {
        self.write(move |conn| {
            const SET: &str = "UPDATE events SET status = 'pending', lease_owner = NULL,
                 lease_until = NULL, updated_at = ?1";
            let (sql, args) = match selector {
                Requeue::Event(id) => (
                    format!("{SET} WHERE id = ?2 AND status <> 'processing' RETURNING id"),
                    vec![Value::Integer(now), Value::Text(id.to_string())],
                ),
                Requeue::AllFailed { charter: Some(c) } => (
                    format!("{SET} WHERE charter = ?2 AND status = 'failed' RETURNING id"),
                    vec![Value::Integer(now), Value::Text(c)],
                ),
                Requeue::AllFailed { charter: None } => (
                    format!("{SET} WHERE status = 'failed' RETURNING id"),
                    vec![Value::Integer(now)],
                ),
                Requeue::Received {
                    charter,
                    since,
                    until,
                } => (
                    format!(
                        "{SET} WHERE status <> 'processing' AND (?2 IS NULL OR charter = ?2)
                             AND (?3 IS NULL OR received_at >= ?3)
                             AND (?4 IS NULL OR received_at < ?4) RETURNING id"
                    ),
                    vec![
                        Value::Integer(now),
                        charter.map_or(Value::Null, Value::Text),
                        since.map_or(Value::Null, Value::Integer),
                        until.map_or(Value::Null, Value::Integer),
                    ],
                ),
            };
            let mut stmt = conn.prepare(&sql).map_err(db("preparing requeue"))?;
            let rows = stmt
                .query(rusqlite::params_from_iter(args))
                .map_err(db("requeueing events"))?;
            let mut ids = collect(rows, |r| parse_uuid(&rows::get_col::<String>(r, 0)?))?;
            ids.sort();
            Ok(ids)
        })
        .await
    }

    async fn release_leases(&self, owner: Option<&str>, now: UnixMillis) -> Result<Vec<Uuid>> {
        let owner = owner.map(str::to_string);
        self.write(move |conn| {
            let mut stmt = conn
                .prepare(
                    "UPDATE events SET status = 'pending', lease_owner = NULL, lease_until = NULL,
                         updated_at = ?1
                     WHERE status = 'processing' AND (?2 IS NULL OR lease_owner = ?2)
                     RETURNING id",
                )
                .map_err(db("preparing the lease release"))?;
            let rows = stmt
                .query(params![now, owner])
                .map_err(db("releasing leases"))?;
            let mut ids = collect(rows, |r| parse_uuid(&rows::get_col::<String>(r, 0)?))?;
            ids.sort();
            Ok(ids)
        })
        .await
    }

    fn single_process(&self) -> bool {
        self.holds_serving_lock()
    }

    /// Leases are judged expired against this machine's wall clock (the trait passes no `now`).
    async fn pending_counts(&self) -> Result<Vec<(String, u64)>> {
        let now = now_millis();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT charter, count(*) FROM events
                     WHERE status = 'pending'
                        OR (status = 'processing' AND (lease_until IS NULL OR lease_until <= ?1))
                     GROUP BY charter ORDER BY charter",
                )
                .map_err(db("preparing pending_counts"))?;
            let rows = stmt.query([now]).map_err(db("counting pending events"))?;
            collect(rows, |r| {
                let n: i64 = rows::get_col(r, 1)?;
                Ok((rows::get_col(r, 0)?, u64::try_from(n).unwrap_or(0)))
            })
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------

fn ensure_run(conn: &Connection, run_id: &str) -> Result<()> {
    let found: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")
        .and_then(|mut s| s.query_row([run_id], |r| r.get(0)).optional())
        .map_err(db("looking up a run"))?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(format!("run {run_id}"))),
    }
}

fn action_id(conn: &Connection, run_id: &str, action: &str) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM action_records WHERE run_id = ?1 AND action = ?2")
        .and_then(|mut s| s.query_row([run_id, action], |r| r.get(0)).optional())
        .map_err(db("looking up an action"))
}

fn insert_attempt(
    conn: &Connection,
    action_id: i64,
    a: &AttemptRecord,
    replace: bool,
) -> Result<()> {
    let sql = if replace {
        "INSERT INTO action_attempts (action_id, attempt, started_at, duration_ms, http_status,
             error, ok)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (action_id, attempt) DO UPDATE SET started_at = excluded.started_at,
             duration_ms = excluded.duration_ms, http_status = excluded.http_status,
             error = excluded.error, ok = excluded.ok"
    } else {
        "INSERT INTO action_attempts (action_id, attempt, started_at, duration_ms, http_status,
             error, ok)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (action_id, attempt) DO NOTHING"
    };
    let duration = i64::try_from(a.duration_ms).unwrap_or(i64::MAX);
    conn.prepare_cached(sql)
        .and_then(|mut s| {
            s.execute(params![
                action_id,
                a.attempt,
                a.started_at,
                duration,
                a.status,
                a.error,
                a.ok
            ])
        })
        .map_err(db("recording an attempt"))?;
    Ok(())
}

/// Close the runs of event `event_id` that never finished (cut off by a crash or a lost
/// lease) as interrupted, and mark the actions they had begun without an outcome as in
/// doubt. Part of a claim's command; usually finds nothing (one indexed lookup).
fn sql_close_interrupted(
    conn: &Connection,
    event_id: &str,
    now: UnixMillis,
) -> Result<Vec<InterruptedRun>> {
    let open: Vec<String> = {
        let mut stmt = conn
            .prepare_cached("SELECT id FROM runs WHERE event_id = ?1 AND outcome IS NULL")
            .map_err(db("preparing the open-runs lookup"))?;
        let rows = stmt.query([event_id]).map_err(db("looking up open runs"))?;
        collect(rows, |r| rows::get_col::<String>(r, 0))?
    };
    let mut closed = Vec::with_capacity(open.len());
    for run in open {
        conn.prepare_cached(
            "UPDATE runs SET outcome = 'interrupted', finished_at = ?2, error = ?3 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![run, now, INTERRUPTED_ERROR]))
        .map_err(db("closing an interrupted run"))?;
        let mut stmt = conn
            .prepare_cached(
                "UPDATE action_records SET status = 'in_doubt'
                 WHERE run_id = ?1 AND status = 'pending'
                 RETURNING action, idempotency_key",
            )
            .map_err(db("preparing the in-doubt update"))?;
        let rows = stmt.query([&run]).map_err(db("marking actions in doubt"))?;
        let mut in_doubt = collect(rows, |r| {
            Ok(InDoubtRef {
                action: rows::get_col(r, 0)?,
                idempotency_key: rows::get_col(r, 1)?,
            })
        })?;
        in_doubt.sort_by(|a, b| a.action.cmp(&b.action));
        closed.push(InterruptedRun {
            run_id: parse_uuid(&run)?,
            in_doubt,
        });
    }
    Ok(closed)
}

/// Assemble one run's actions (finished or in doubt; see [`RunStore::runs_for_event`] impl).
fn load_actions(conn: &Connection, run_id: &str) -> Result<Vec<ActionRecord>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, action, idempotency_key, params, status FROM action_records
             WHERE run_id = ?1 ORDER BY id",
        )
        .map_err(db("preparing actions"))?;
    let rows = stmt.query([run_id]).map_err(db("loading actions"))?;
    let raw = collect(rows, |r| {
        Ok((
            rows::get_col::<i64>(r, 0)?,
            rows::get_col::<String>(r, 1)?,
            rows::get_col::<String>(r, 2)?,
            rows::get_col::<String>(r, 3)?,
            rows::get_col::<String>(r, 4)?,
        ))
    })?;
    let mut attempts_stmt = conn
        .prepare_cached(
            "SELECT attempt, started_at, duration_ms, http_status, error, ok
             FROM action_attempts WHERE action_id = ?1 ORDER BY attempt",
        )
        .map_err(db("preparing attempts"))?;
    let mut actions = Vec::with_capacity(raw.len());
    for (id, action, key, params_json, status) in raw {
        // 'pending' = begun and still in flight (a run cut off by a crash has its pending
        // actions marked 'in_doubt' when its event is claimed again). Not reported.
        if status == "pending" {
            continue;
        }
        let rows = attempts_stmt.query([id]).map_err(db("loading attempts"))?;
        let attempts = collect(rows, |r| {
            let duration: i64 = rows::get_col(r, 2)?;
            let http: Option<i64> = rows::get_col(r, 3)?;
            Ok(AttemptRecord {
                attempt: rows::u32_col(r, 0, "attempt")?,
                started_at: rows::get_col(r, 1)?,
                duration_ms: u64::try_from(duration).map_err(|_| {
                    StoreError::Corrupt(format!("attempt duration out of range: {duration}"))
                })?,
                status: http
                    .map(|h| {
                        u16::try_from(h).map_err(|_| {
                            StoreError::Corrupt(format!("HTTP status out of range: {h}"))
                        })
                    })
                    .transpose()?,
                error: rows::get_col(r, 4)?,
                ok: rows::get_col(r, 5)?,
            })
        })?;
        actions.push(ActionRecord {
            action,
            idempotency_key: key,
            params: rows::parse_json("action params", &params_json)?,
            status: rows::parse_enum::<ActionStatus>("action status", &status)?,
            attempts,
        });
    }
    Ok(actions)
}

// The run writes as functions of the open write transaction, shared by the single-write
// methods and by `record_run` (which applies several in one command).

/// Insert a run; with `decision`, its decision columns too (a `Start` and its `Decision`
/// written together, see [`merge_start_decision`]), otherwise they stay NULL until decided.
#[allow(clippy::too_many_arguments)]
fn sql_start_run(
    conn: &Connection,
    run: &str,
    event: &str,
    charter: &str,
    version: &str,
    mode: &str,
    now: UnixMillis,
    decision: Option<&DecisionRow>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO runs (id, event_id, charter, charter_version, mode, started_at,
             decision, decision_label, decision_stage, decision_confidence)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            run,
            event,
            charter,
            version,
            mode,
            now,
            decision.map(|d| &d.json),
            decision.and_then(|d| d.label.as_ref()),
            decision.and_then(|d| d.stage.as_ref()),
            decision.map(|d| d.confidence)
        ])
    })
    .map_err(db("starting a run"))?;
    Ok(())
}

/// Give each `Start` that is directly followed by the same run's `Decision` that decision,
/// and drop the `Decision`: one INSERT instead of an INSERT and an UPDATE of the same row.
/// Everything else keeps its order.
fn merge_start_decision(prepared: Vec<PreparedWrite>) -> Vec<PreparedWrite> {
    let mut out: Vec<PreparedWrite> = Vec::with_capacity(prepared.len());
    for w in prepared {
        match (w, out.last_mut()) {
            (
                PreparedWrite::Decision { run, row },
                Some(PreparedWrite::Start {
                    run: started,
                    decision: decision @ None,
                    ..
                }),
            ) if *started == run => *decision = Some(row),
            (w, _) => out.push(w),
        }
    }
    out
}

/// A decision serialised on the caller's thread.
struct DecisionRow {
    json: String,
    label: Option<String>,
    stage: Option<String>,
    confidence: f64,
}

impl DecisionRow {
    fn new(decision: &Decision) -> Result<DecisionRow> {
        Ok(DecisionRow {
            json: to_json("decision", decision)?,
            label: decision.label.clone(),
            stage: rows::enum_name(&decision.stage),
            confidence: decision.confidence,
        })
    }
}

fn sql_record_decision(conn: &Connection, run: &str, d: &DecisionRow) -> Result<()> {
    let n = conn
        .prepare_cached(
            "UPDATE runs SET decision = ?2, decision_label = ?3, decision_stage = ?4,
                 decision_confidence = ?5
             WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![run, d.json, d.label, d.stage, d.confidence]))
        .map_err(db("recording a decision"))?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("run {run}")));
    }
    Ok(())
}

fn sql_action_succeeded(conn: &Connection, key: &str) -> Result<bool> {
    let found: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM succeeded_keys WHERE idempotency_key = ?1")
        .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
        .map_err(db("looking up a succeeded key"))?;
    Ok(found.is_some())
}

fn sql_begin_action(
    conn: &Connection,
    run: &str,
    action: &str,
    key: &str,
    params_json: &str,
) -> Result<()> {
    ensure_run(conn, run)?;
    conn.prepare_cached(
        "INSERT INTO action_records (run_id, action, idempotency_key, params, status)
         VALUES (?1, ?2, ?3, ?4, 'pending')
         ON CONFLICT (run_id, action) DO UPDATE SET
             idempotency_key = excluded.idempotency_key, params = excluded.params,
             status = 'pending'",
    )
    .and_then(|mut s| s.execute(params![run, action, key, params_json]))
    .map_err(db("beginning an action"))?;
    Ok(())
}

fn sql_record_attempt(
    conn: &Connection,
    run: &str,
    action: &str,
    attempt: &AttemptRecord,
) -> Result<()> {
    let id = action_id(conn, run, action)?.ok_or_else(|| {
        StoreError::NotFound(format!("action {action} was not begun in run {run}"))
    })?;
    insert_attempt(conn, id, attempt, true)
}

fn sql_finish_action(
    conn: &Connection,
    run: &str,
    record: &ActionRecord,
    params_json: &str,
    succeeded_at: UnixMillis,
) -> Result<()> {
    ensure_run(conn, run)?;
    let status = record.status.as_str();
    // No `RETURNING id`: SQLite builds and frees an ephemeral table for RETURNING rows on
    // every execution; the id is looked up by the (run_id, action) key only when needed.
    conn.prepare_cached(
        "INSERT INTO action_records (run_id, action, idempotency_key, params, status)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (run_id, action) DO UPDATE SET status = excluded.status,
             idempotency_key = excluded.idempotency_key, params = excluded.params",
    )
    .and_then(|mut s| {
        s.execute(params![
            run,
            record.action,
            record.idempotency_key,
            params_json,
            status
        ])
    })
    .map_err(db("finishing an action"))?;
    // Attempts recorded one by one are kept; ones only carried by the record are added.
    if !record.attempts.is_empty() {
        let id = action_id(conn, run, &record.action)?.ok_or_else(|| {
            StoreError::Database(format!("action {} of run {run} vanished", record.action))
        })?;
        for attempt in &record.attempts {
            insert_attempt(conn, id, attempt, false)?;
        }
    }
    if record.status == ActionStatus::Succeeded {
        conn.prepare_cached(
            "INSERT INTO succeeded_keys (idempotency_key, run_id, action, succeeded_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                record.idempotency_key,
                run,
                record.action,
                succeeded_at
            ])
        })
        .map_err(db("recording a succeeded key"))?;
    }
    Ok(())
}

fn sql_finish_run(
    conn: &Connection,
    run: &str,
    route: Option<usize>,
    outcome: RunOutcome,
    error: Option<&str>,
    now: UnixMillis,
) -> Result<()> {
    let route = route.map(|r| i64::try_from(r).unwrap_or(i64::MAX));
    let n = conn
        .prepare_cached(
            "UPDATE runs SET finished_at = ?2, outcome = ?3, route = ?4, error = ?5
             WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![run, now, outcome.as_str(), route, error]))
        .map_err(db("finishing a run"))?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("run {run}")));
    }
    Ok(())
}

fn sql_release(
    conn: &Connection,
    event: &str,
    worker: &str,
    status: EventStatus,
    now: UnixMillis,
) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE events SET status = ?3, lease_owner = NULL, lease_until = NULL,
                 updated_at = ?4
             WHERE id = ?1 AND lease_owner = ?2 AND status = 'processing'",
        )
        .and_then(|mut s| s.execute(params![event, worker, status.as_str(), now]))
        .map_err(db("releasing a lease"))?;
    Ok(n == 1)
}

/// A [`RunWrite`] with its JSON serialised on the caller's thread.
enum PreparedWrite {
    Start {
        run: String,
        event: String,
        charter: String,
        version: String,
        mode: String,
        now: UnixMillis,
        /// Set by [`merge_start_decision`] when the run's `Decision` directly follows.
        decision: Option<DecisionRow>,
    },
    Decision {
        run: String,
        row: DecisionRow,
    },
    BeginAction {
        run: String,
        action: String,
        key: String,
        params: String,
    },
    Attempt {
        run: String,
        action: String,
        attempt: AttemptRecord,
    },
    FinishAction {
        run: String,
        record: ActionRecord,
        params: String,
        succeeded_at: UnixMillis,
    },
    Measurement {
        m: crate::NewMeasurement,
        detail: String,
    },
    FinishRun {
        run: String,
        route: Option<usize>,
        outcome: RunOutcome,
        error: Option<String>,
        now: UnixMillis,
    },
    Release {
        event: String,
        worker: String,
        status: EventStatus,
        now: UnixMillis,
    },
}

impl PreparedWrite {
    fn new(w: RunWrite, now: UnixMillis) -> Result<PreparedWrite> {
        Ok(match w {
            RunWrite::Start {
                run_id,
                event_id,
                charter,
                charter_version,
                mode,
                now,
            } => PreparedWrite::Start {
                run: run_id.to_string(),
                event: event_id.to_string(),
                charter,
                version: charter_version,
                mode,
                now,
                decision: None,
            },
            RunWrite::Decision { run_id, decision } => PreparedWrite::Decision {
                run: run_id.to_string(),
                row: DecisionRow::new(&decision)?,
            },
            RunWrite::BeginAction {
                run_id,
                action,
                idempotency_key,
                params,
            } => PreparedWrite::BeginAction {
                run: run_id.to_string(),
                action,
                key: idempotency_key,
                params: to_json("action params", &params)?,
            },
            RunWrite::Attempt {
                run_id,
                action,
                attempt,
            } => PreparedWrite::Attempt {
                run: run_id.to_string(),
                action,
                attempt,
            },
            RunWrite::FinishAction { run_id, record } => PreparedWrite::FinishAction {
                run: run_id.to_string(),
                params: to_json("action params", &record.params)?,
                record,
                succeeded_at: now,
            },
            RunWrite::Measurement(m) => PreparedWrite::Measurement {
                detail: to_json("measurement detail", &m.detail)?,
                m,
            },
            RunWrite::FinishRun {
                run_id,
                route,
                outcome,
                error,
                now,
            } => PreparedWrite::FinishRun {
                run: run_id.to_string(),
                route,
                outcome,
                error,
                now,
            },
            RunWrite::Release {
                event_id,
                worker,
                status,
                now,
            } => PreparedWrite::Release {
                event: event_id.to_string(),
                worker,
                status,
                now,
            },
        })
    }

    fn apply(&self, conn: &Connection, out: &mut RunWritten) -> Result<()> {
        match self {
            PreparedWrite::Start {
                run,
                event,
                charter,
                version,
                mode,
                now,
                decision,
            } => sql_start_run(
                conn,
                run,
                event,
                charter,
                version,
                mode,
                *now,
                decision.as_ref(),
            ),
            PreparedWrite::Decision { run, row } => sql_record_decision(conn, run, row),
            PreparedWrite::BeginAction {
                run,
                action,
                key,
                params,
            } => {
                if sql_action_succeeded(conn, key)? {
                    out.already_succeeded = true;
                    Ok(())
                } else {
                    sql_begin_action(conn, run, action, key, params)
                }
            }
            PreparedWrite::Attempt {
                run,
                action,
                attempt,
            } => sql_record_attempt(conn, run, action, attempt),
            PreparedWrite::FinishAction {
                run,
                record,
                params,
                succeeded_at,
            } => sql_finish_action(conn, run, record, params, *succeeded_at),
            PreparedWrite::Measurement { m, detail } => report::insert_measurement(conn, m, detail),
            PreparedWrite::FinishRun {
                run,
                route,
                outcome,
                error,
                now,
            } => sql_finish_run(conn, run, *route, *outcome, error.as_deref(), *now),
            PreparedWrite::Release {
                event,
                worker,
                status,
                now,
            } => {
                out.released = Some(sql_release(conn, event, worker, *status, *now)?);
                Ok(())
            }
        }
    }
}

impl RunStore for SqliteStore {
    async fn start_run(
        &self,
        run_id: Uuid,
        event_id: Uuid,
        charter: &str,
        charter_version: &str,
        mode: &str,
        now: UnixMillis,
    ) -> Result<()> {
        let (charter, version, mode) = (
            charter.to_string(),
            charter_version.to_string(),
            mode.to_string(),
        );
        self.write(move |conn| {
            sql_start_run(
                conn,
                &run_id.to_string(),
                &event_id.to_string(),
                &charter,
                &version,
                &mode,
                now,
                None,
            )
        })
        .await
    }

    async fn record_decision(&self, run_id: Uuid, decision: &Decision) -> Result<()> {
        let row = DecisionRow::new(decision)?;
        self.write(move |conn| sql_record_decision(conn, &run_id.to_string(), &row))
            .await
    }

    async fn begin_action(
        &self,
        run_id: Uuid,
        action: &str,
        idempotency_key: &str,
        params: &serde_json::Value,
    ) -> Result<()> {
        let action = action.to_string();
        let key = idempotency_key.to_string();
        let params_json = to_json("action params", params)?;
        self.write(move |conn| {
            sql_begin_action(conn, &run_id.to_string(), &action, &key, &params_json)
        })
        .await
    }

    async fn record_attempt(
        &self,
        run_id: Uuid,
        action: &str,
        attempt: &AttemptRecord,
    ) -> Result<()> {
        let action = action.to_string();
        let attempt = attempt.clone();
        self.write(move |conn| sql_record_attempt(conn, &run_id.to_string(), &action, &attempt))
            .await
    }

    async fn finish_action(&self, run_id: Uuid, record: &ActionRecord) -> Result<()> {
        let record = record.clone();
        let params_json = to_json("action params", &record.params)?;
        let succeeded_at = now_millis();
        self.write(move |conn| {
            sql_finish_action(
                conn,
                &run_id.to_string(),
                &record,
                &params_json,
                succeeded_at,
            )
        })
        .await
    }

    async fn record_run(&self, writes: Vec<RunWrite>) -> Result<RunWritten> {
        let now = now_millis();
        let prepared = writes
            .into_iter()
            .map(|w| PreparedWrite::new(w, now))
            .collect::<Result<Vec<_>>>()?;
        let prepared = merge_start_decision(prepared);
        // One writer command: one savepoint, so all of them or none.
        self.write(move |conn| {
            let mut out = RunWritten::default();
            for w in &prepared {
                w.apply(conn, &mut out)?;
            }
            Ok(out)
        })
        .await
    }

    async fn action_succeeded(&self, idempotency_key: &str) -> Result<bool> {
        let key = idempotency_key.to_string();
        self.read(move |conn| sql_action_succeeded(conn, &key))
            .await
    }

    async fn finish_run(
        &self,
        run_id: Uuid,
        route: Option<usize>,
        outcome: RunOutcome,
        error: Option<&str>,
        now: UnixMillis,
    ) -> Result<()> {
        let error = error.map(str::to_string);
        self.write(move |conn| {
            sql_finish_run(
                conn,
                &run_id.to_string(),
                route,
                outcome,
                error.as_deref(),
                now,
            )
        })
        .await
    }

    /// Runs oldest first. An action begun and still in flight is left out; one cut off by a
    /// crash is reported as in doubt once its event was claimed again.
    async fn runs_for_event(&self, event_id: Uuid) -> Result<Vec<RunRecord>> {
        self.read(move |conn| {
            load_runs(
                conn,
                "WHERE event_id = ? ORDER BY started_at, rowid",
                vec![Value::Text(event_id.to_string())],
            )
        })
        .await
    }

    async fn list_in_doubt(&self, filter: InDoubtFilter) -> Result<Vec<InDoubtAction>> {
        self.read(move |conn| {
            let mut c = Conditions::default();
            c.always("a.status = 'in_doubt'");
            c.when("r.charter = ?", filter.charter);
            if filter.unsettled {
                c.always(
                    "NOT EXISTS (SELECT 1 FROM succeeded_keys k
                                 WHERE k.idempotency_key = a.idempotency_key)",
                );
            }
            let (where_sql, args) = c.with_limit(filter.limit);
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT a.run_id, r.event_id, r.charter, a.action, a.idempotency_key,
                         a.params, r.started_at, r.finished_at,
                         (SELECT count(*) FROM action_attempts t WHERE t.action_id = a.id),
                         EXISTS (SELECT 1 FROM succeeded_keys k
                                 WHERE k.idempotency_key = a.idempotency_key)
                     FROM action_records a INDEXED BY action_records_in_doubt
                     JOIN runs r ON r.id = a.run_id
                     {where_sql} ORDER BY a.id DESC LIMIT ?"
                ))
                .map_err(db("preparing the in-doubt listing"))?;
            let rows = stmt
                .query(rusqlite::params_from_iter(args))
                .map_err(db("listing in-doubt actions"))?;
            collect(rows, |r| {
                let attempts: i64 = rows::get_col(r, 8)?;
                Ok(InDoubtAction {
                    run_id: parse_uuid(&rows::get_col::<String>(r, 0)?)?,
                    event_id: parse_uuid(&rows::get_col::<String>(r, 1)?)?,
                    charter: rows::get_col(r, 2)?,
                    action: rows::get_col(r, 3)?,
                    idempotency_key: rows::get_col(r, 4)?,
                    params: rows::parse_json("action params", &rows::get_col::<String>(r, 5)?)?,
                    started_at: rows::get_col(r, 6)?,
                    interrupted_at: rows::get_col(r, 7)?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    settled: rows::get_col(r, 9)?,
                })
            })
        })
        .await
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>> {
        self.page_runs(filter).await
    }

    async fn count_runs(&self, filter: RunFilter) -> Result<u64> {
        self.count_runs_matching(filter).await
    }
}

/// Runs selected by `tail` (a `WHERE … ORDER BY …` over `runs`, with `args` for its `?`s),
/// each with its decision and finished actions.
pub(super) fn load_runs(conn: &Connection, tail: &str, args: Vec<Value>) -> Result<Vec<RunRecord>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT id, charter, charter_version, mode, started_at, finished_at, outcome,
                 decision, route, error, event_id
             FROM runs {tail}"
        ))
        .map_err(db("preparing a runs query"))?;
    let rows = stmt
        .query(rusqlite::params_from_iter(args))
        .map_err(db("loading runs"))?;
    let runs = collect(rows, |r| {
        let id: String = rows::get_col(r, 0)?;
        let outcome: Option<String> = rows::get_col(r, 6)?;
        let decision: Option<String> = rows::get_col(r, 7)?;
        let route: Option<i64> = rows::get_col(r, 8)?;
        let event_id: String = rows::get_col(r, 10)?;
        Ok((
            id.clone(),
            RunRecord {
                id: parse_uuid(&id)?,
                event_id: parse_uuid(&event_id)?,
                charter: rows::get_col(r, 1)?,
                charter_version: rows::get_col(r, 2)?,
                mode: rows::get_col(r, 3)?,
                started_at: rows::get_col(r, 4)?,
                finished_at: rows::get_col(r, 5)?,
                outcome: outcome
                    .map(|o| rows::parse_enum::<RunOutcome>("run outcome", &o))
                    .transpose()?,
                decision: decision
                    .map(|d| rows::parse_json::<Decision>("decision", &d))
                    .transpose()?,
                route: rows::opt_u32("route", route)?.map(|r| r as usize),
                actions: Vec::new(),
                error: rows::get_col(r, 9)?,
            },
        ))
    })?;
    let mut out = Vec::with_capacity(runs.len());
    for (id, mut run) in runs {
        run.actions = load_actions(conn, &id)?;
        out.push(run);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Charter state
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Approvals
// ---------------------------------------------------------------------------------------

/// Columns selected for an [`ApprovalRecord`], in the order [`approval_record`] reads them.
const APPROVAL_COLS: &str = "id, run_id, event_id, charter, action, params, params_hash, \
     reviewers, status, created_at, expires_at, on_expiry, decided_by, decided_at, comment, \
     edited_params, edited_hash";

fn approval_record(r: &rusqlite::Row<'_>) -> Result<ApprovalRecord> {
    let params: String = rows::get_col(r, 5)?;
    let reviewers: String = rows::get_col(r, 7)?;
    let status: String = rows::get_col(r, 8)?;
    let edited: Option<String> = rows::get_col(r, 15)?;
    Ok(ApprovalRecord {
        id: parse_uuid(&rows::get_col::<String>(r, 0)?)?,
        run_id: parse_uuid(&rows::get_col::<String>(r, 1)?)?,
        event_id: parse_uuid(&rows::get_col::<String>(r, 2)?)?,
        charter: rows::get_col(r, 3)?,
        action: rows::get_col(r, 4)?,
        params: rows::parse_json("approval params", &params)?,
        params_hash: rows::get_col(r, 6)?,
        reviewers: rows::parse_json("reviewers", &reviewers)?,
        status: ApprovalStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown approval status {status:?}")))?,
        created_at: rows::get_col(r, 9)?,
        expires_at: rows::get_col(r, 10)?,
        on_expiry: rows::get_col(r, 11)?,
        decided_by: rows::get_col(r, 12)?,
        decided_at: rows::get_col(r, 13)?,
        comment: rows::get_col(r, 14)?,
        edited_params: edited
            .map(|e| rows::parse_json("edited params", &e))
            .transpose()?,
        edited_hash: rows::get_col(r, 16)?,
    })
}

fn query_approvals(conn: &Connection, sql: &str, args: Vec<Value>) -> Result<Vec<ApprovalRecord>> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(db("preparing an approval query"))?;
    let rows = stmt
        .query(rusqlite::params_from_iter(args))
        .map_err(db("querying approvals"))?;
    collect(rows, approval_record)
}

impl ApprovalStore for SqliteStore {
    async fn create_approval(&self, a: NewApproval) -> Result<ApprovalRecord> {
        let params_json = to_json("approval params", &a.params)?;
        let reviewers = to_json("reviewers", &a.reviewers)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO approvals (id, run_id, event_id, charter, action, params,
                     params_hash, reviewers, status, created_at, expires_at, on_expiry)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?10, ?11)
                 ON CONFLICT (event_id, action, params_hash) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    a.id.to_string(),
                    a.run_id.to_string(),
                    a.event_id.to_string(),
                    a.charter,
                    a.action,
                    params_json,
                    a.params_hash,
                    reviewers,
                    a.created_at,
                    a.expires_at,
                    a.on_expiry,
                ])
            })
            .map_err(db("inserting an approval"))?;
            query_approvals(
                conn,
                &format!(
                    "SELECT {APPROVAL_COLS} FROM approvals
                     WHERE event_id = ?1 AND action = ?2 AND params_hash = ?3"
                ),
                vec![
                    Value::Text(a.event_id.to_string()),
                    Value::Text(a.action),
                    Value::Text(a.params_hash),
                ],
            )?
            .pop()
            .ok_or_else(|| StoreError::Database("the approval just stored is missing".into()))
        })
        .await
    }

    async fn get_approval(&self, id: Uuid) -> Result<Option<ApprovalRecord>> {
        self.read(move |conn| {
            Ok(query_approvals(
                conn,
                &format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = ?1"),
                vec![Value::Text(id.to_string())],
            )?
            .pop())
        })
        .await
    }

    async fn find_approval(
        &self,
        event_id: Uuid,
        action: &str,
        params_hash: &str,
    ) -> Result<Option<ApprovalRecord>> {
        let args = vec![
            Value::Text(event_id.to_string()),
            Value::Text(action.to_string()),
            Value::Text(params_hash.to_string()),
        ];
        self.read(move |conn| {
            Ok(query_approvals(
                conn,
                &format!(
                    "SELECT {APPROVAL_COLS} FROM approvals
                     WHERE event_id = ?1 AND action = ?2 AND params_hash = ?3"
                ),
                args,
            )?
            .pop())
        })
        .await
    }

    async fn list_approvals(&self, filter: ApprovalFilter) -> Result<Vec<ApprovalRecord>> {
        self.page_approvals(filter).await
    }

    async fn count_approvals(&self, filter: ApprovalFilter) -> Result<u64> {
        self.count_approvals_matching(filter).await
    }

    async fn decide_approval(
        &self,
        id: Uuid,
        verdict: Verdict,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<ApprovalRecord>> {
        let by = by.to_string();
        let (status, comment, edited, edited_hash) = match verdict {
            Verdict::Approve { edited: None } => (ApprovalStatus::Approved, None, None, None),
            Verdict::Approve {
                edited: Some((p, h)),
            } => (
                ApprovalStatus::Approved,
                None,
                Some(to_json("edited params", &p)?),
                Some(h),
            ),
            Verdict::Reject { reason } => (ApprovalStatus::Rejected, Some(reason), None, None),
        };
        self.write(move |conn| {
            // The status check and the update are one statement: of concurrent calls only
            // the first to run finds the approval still pending.
            let mut found = query_approvals(
                conn,
                &format!(
                    "UPDATE approvals SET status = ?2, decided_by = ?3, decided_at = ?4,
                         comment = ?5, edited_params = ?6, edited_hash = ?7
                     WHERE id = ?1 AND status = 'pending'
                       AND (expires_at IS NULL OR expires_at > ?4)
                     RETURNING {APPROVAL_COLS}"
                ),
                vec![
                    Value::Text(id.to_string()),
                    Value::Text(status.as_str().to_string()),
                    Value::Text(by),
                    Value::Integer(now),
                    comment.map_or(Value::Null, Value::Text),
                    edited.map_or(Value::Null, Value::Text),
                    edited_hash.map_or(Value::Null, Value::Text),
                ],
            )?;
            Ok(found.pop())
        })
        .await
    }

    async fn expire_approvals(&self, now: UnixMillis) -> Result<Vec<ApprovalRecord>> {
        self.write(move |conn| {
            query_approvals(
                conn,
                &format!(
                    "UPDATE approvals SET status = 'expired', decided_by = 'system',
                         decided_at = ?1
                     WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= ?1
                     RETURNING {APPROVAL_COLS}"
                ),
                vec![Value::Integer(now)],
            )
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Escalations
// ---------------------------------------------------------------------------------------

/// Columns selected for an [`EscalationRecord`], in the order [`escalation_record`] reads.
const ESCALATION_COLS: &str = "id, run_id, event_id, charter, reason, detail, target, status, \
     created_at, resolved_by, resolved_at, resolution";

fn escalation_record(r: &rusqlite::Row<'_>) -> Result<EscalationRecord> {
    let run_id: Option<String> = rows::get_col(r, 1)?;
    let detail: Option<String> = rows::get_col(r, 5)?;
    let status: String = rows::get_col(r, 7)?;
    let resolution: Option<String> = rows::get_col(r, 11)?;
    Ok(EscalationRecord {
        id: parse_uuid(&rows::get_col::<String>(r, 0)?)?,
        run_id: run_id.map(|s| parse_uuid(&s)).transpose()?,
        event_id: parse_uuid(&rows::get_col::<String>(r, 2)?)?,
        charter: rows::get_col(r, 3)?,
        reason: rows::get_col(r, 4)?,
        detail: detail
            .map(|d| rows::parse_json("escalation detail", &d))
            .transpose()?
            .unwrap_or(serde_json::Value::Null),
        target: rows::get_col(r, 6)?,
        status: EscalationStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown escalation status {status:?}")))?,
        created_at: rows::get_col(r, 8)?,
        resolved_by: rows::get_col(r, 9)?,
        resolved_at: rows::get_col(r, 10)?,
        resolution: resolution
            .map(|d| rows::parse_json::<HumanDecision>("escalation resolution", &d))
            .transpose()?,
    })
}

/// The latest human resolution of an event (by `resolved_at`, then id). Picked here rather
/// than with `ORDER BY … LIMIT 1`: a sorting statement is re-prepared on every reuse from the
/// statement cache, and this runs once per claimed event on the writer.
fn sql_latest_resolution(conn: &Connection, event_id: Uuid) -> Result<Option<EscalationRecord>> {
    let all = query_escalations(
        conn,
        &format!(
            "SELECT {ESCALATION_COLS} FROM escalations
             WHERE event_id = ?1 AND status = 'resolved' AND resolution IS NOT NULL"
        ),
        vec![Value::Text(event_id.to_string())],
    )?;
    Ok(all
        .into_iter()
        .max_by(|a, b| (a.resolved_at, a.id).cmp(&(b.resolved_at, b.id))))
}

fn query_escalations(
    conn: &Connection,
    sql: &str,
    args: Vec<Value>,
) -> Result<Vec<EscalationRecord>> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(db("preparing an escalation query"))?;
    let rows = stmt
        .query(rusqlite::params_from_iter(args))
        .map_err(db("querying escalations"))?;
    collect(rows, escalation_record)
}

impl EscalationStore for SqliteStore {
    async fn create_escalation(&self, e: NewEscalation) -> Result<EscalationRecord> {
        let detail = to_json("escalation detail", &e.detail)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO escalations (id, run_id, event_id, charter, reason, detail, target,
                     status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8)
                 ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    e.id.to_string(),
                    e.run_id.map(|r| r.to_string()),
                    e.event_id.to_string(),
                    e.charter,
                    e.reason,
                    detail,
                    e.target,
                    e.created_at,
                ])
            })
            .map_err(db("inserting an escalation"))?;
            query_escalations(
                conn,
                &format!(
                    "SELECT {ESCALATION_COLS} FROM escalations
                     WHERE event_id = ?1 AND status = 'open'"
                ),
                vec![Value::Text(e.event_id.to_string())],
            )?
            .pop()
            .ok_or_else(|| StoreError::Database("the escalation just stored is missing".into()))
        })
        .await
    }

    async fn get_escalation(&self, id: Uuid) -> Result<Option<EscalationRecord>> {
        self.read(move |conn| {
            Ok(query_escalations(
                conn,
                &format!("SELECT {ESCALATION_COLS} FROM escalations WHERE id = ?1"),
                vec![Value::Text(id.to_string())],
            )?
            .pop())
        })
        .await
    }

    async fn list_escalations(&self, filter: EscalationFilter) -> Result<Vec<EscalationRecord>> {
        self.page_escalations(filter).await
    }

    async fn count_escalations(&self, filter: EscalationFilter) -> Result<u64> {
        self.count_escalations_matching(filter).await
    }

    async fn resolve_escalation(
        &self,
        id: Uuid,
        decision: &HumanDecision,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<EscalationRecord>> {
        let resolution = to_json("escalation resolution", decision)?;
        let by = by.to_string();
        self.write(move |conn| {
            Ok(query_escalations(
                conn,
                &format!(
                    "UPDATE escalations SET status = 'resolved', resolved_by = ?2,
                         resolved_at = ?3, resolution = ?4
                     WHERE id = ?1 AND status = 'open'
                     RETURNING {ESCALATION_COLS}"
                ),
                vec![
                    Value::Text(id.to_string()),
                    Value::Text(by),
                    Value::Integer(now),
                    Value::Text(resolution),
                ],
            )?
            .pop())
        })
        .await
    }

    async fn close_escalation(
        &self,
        id: Uuid,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<EscalationRecord>> {
        self.close_where("id = ?1", Value::Text(id.to_string()), None, by, now)
            .await
    }

    async fn close_event_escalation(
        &self,
        event_id: Uuid,
        reason: &str,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<EscalationRecord>> {
        let reason = Some(reason.to_string());
        self.close_where(
            "event_id = ?1",
            Value::Text(event_id.to_string()),
            reason,
            by,
            now,
        )
        .await
    }

    async fn latest_resolution(&self, event_id: Uuid) -> Result<Option<EscalationRecord>> {
        self.read(move |conn| sql_latest_resolution(conn, event_id))
            .await
    }
}

// ---------------------------------------------------------------------------------------
// Audit log
// ---------------------------------------------------------------------------------------

impl AuditStore for SqliteStore {
    async fn append_audit(&self, entry: NewAuditEntry) -> Result<i64> {
        let detail = to_json("audit detail", &entry.detail)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO audit_log (at, actor, action, charter, target, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING seq",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        entry.at,
                        entry.actor,
                        entry.action,
                        entry.charter,
                        entry.target,
                        detail
                    ],
                    |r| r.get(0),
                )
            })
            .map_err(db("appending to the audit log"))
        })
        .await
    }

    async fn list_audit(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>> {
        self.page_audit(filter).await
    }

    async fn count_audit(&self, filter: AuditFilter) -> Result<u64> {
        self.count_audit_matching(filter).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;
    use std::collections::BTreeMap;

    fn event(charter: &str, received_at: UnixMillis) -> NewEvent {
        NewEvent {
            id: Uuid::now_v7(),
            charter: charter.to_string(),
            source: "test".to_string(),
            event_type: None,
            dedupe_key: None,
            received_at,
            headers: BTreeMap::new(),
            payload: serde_json::json!({"n": 1}),
        }
    }

    /// A run's `Start` followed at once by its `Decision` becomes one insert; a `Decision`
    /// of another run, or one separated from its `Start`, stays as it was, in order.
    #[test]
    fn start_and_its_decision_merge_only_when_adjacent() {
        let start = |run: &str| PreparedWrite::Start {
            run: run.to_string(),
            event: "e".to_string(),
            charter: "c".to_string(),
            version: "v".to_string(),
            mode: "live".to_string(),
            now: 1,
            decision: None,
        };
        let decision = |run: &str| PreparedWrite::Decision {
            run: run.to_string(),
            row: DecisionRow {
                json: "{}".to_string(),
                label: Some("billing".to_string()),
                stage: Some("rule".to_string()),
                confidence: 1.0,
            },
        };
        let finish = |run: &str| PreparedWrite::FinishRun {
            run: run.to_string(),
            route: None,
            outcome: RunOutcome::Completed,
            error: None,
            now: 2,
        };
        let kinds = |ws: &[PreparedWrite]| -> Vec<String> {
            ws.iter()
                .map(|w| match w {
                    PreparedWrite::Start {
                        run,
                        decision: None,
                        ..
                    } => format!("start:{run}"),
                    PreparedWrite::Start {
                        run,
                        decision: Some(row),
                        ..
                    } => format!("decided:{run}:{}", row.label.as_deref().unwrap_or("-")),
                    PreparedWrite::Decision { run, .. } => format!("decision:{run}"),
                    PreparedWrite::FinishRun { run, .. } => format!("finish:{run}"),
                    _ => "other".to_string(),
                })
                .collect()
        };
        let merged = merge_start_decision(vec![start("a"), decision("a"), finish("a")]);
        assert_eq!(kinds(&merged), ["decided:a:billing", "finish:a"]);
        let merged = merge_start_decision(vec![start("a"), decision("b")]);
        assert_eq!(kinds(&merged), ["start:a", "decision:b"]);
        let merged = merge_start_decision(vec![start("a"), finish("a"), decision("a")]);
        assert_eq!(kinds(&merged), ["start:a", "finish:a", "decision:a"]);
        let merged = merge_start_decision(vec![decision("a")]);
        assert_eq!(kinds(&merged), ["decision:a"]);
    }

    /// The database file's own page count (its header's "in-header database size", bytes
    /// 28..32): what has been checkpointed into it, whatever the WAL still holds.
    fn pages_in_file(path: &Path) -> u32 {
        let bytes = std::fs::read(path).expect("read the database file");
        u32::from_be_bytes([bytes[28], bytes[29], bytes[30], bytes[31]])
    }

    /// Committed pages reach the database file without the writer checkpointing: the
    /// checkpointer thread copies them (the writer's own threshold, 2,048 pages, is not
    /// reached here), and it stops with the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_thread_copies_the_wal_into_the_file() {
        let dir = std::env::temp_dir().join(format!("charter-ckpt-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("s.db");
        let store = SqliteStore::open(&path).expect("open");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = pages_in_file(&path);
        let t = now_millis();
        let text = "x".repeat(2_000);
        for i in 0..400 {
            let mut e = event("c", t + i);
            e.payload = serde_json::json!({ "text": text });
            store.ingest(e).await.expect("ingest");
        }
        let mut after = before;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            after = pages_in_file(&path);
            if after >= before + 150 {
                break;
            }
        }
        assert!(
            after >= before + 150,
            "400 events of 2 KB: the file grew from {before} to {after} pages"
        );
        store.close().await;
        // Closed: the thread is gone and the file is whole.
        let conn = Connection::open(&path).expect("reopen");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 400);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `ingest_json` keeps the text it is given, byte for byte; `ingest` serialises the value.
    #[tokio::test]
    async fn a_received_json_text_is_stored_as_it_came() {
        let dir = std::env::temp_dir().join(format!("charter-jsontext-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("s.db");
        let store = SqliteStore::open(&path).expect("open");
        let text = "{ \"b\": 1.50,\n \"a\": [ \"\\u00e9\" ] }";
        let mut sent = event("c", now_millis());
        sent.payload = serde_json::from_str(text).expect("test payload");
        let id = match store.ingest_json(sent.clone(), text.to_string()).await {
            Ok(IngestOutcome::Stored(id)) => id,
            other => panic!("ingest_json: {other:?}"),
        };
        let mut plain = event("c", now_millis());
        plain.payload = sent.payload.clone();
        let plain_id = match store.ingest(plain).await {
            Ok(IngestOutcome::Stored(id)) => id,
            other => panic!("ingest: {other:?}"),
        };
        store.close().await;
        let conn = Connection::open(&path).expect("reopen");
        let column = |id: Uuid| -> String {
            conn.query_row(
                "SELECT payload FROM events WHERE id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .expect("payload column")
        };
        assert_eq!(column(id), text);
        assert_eq!(column(plain_id), r#"{"a":["é"],"b":1.5}"#);
        drop(conn);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Under a steady stream of commits the WAL starts over at the writer's threshold instead
    /// of growing: the checkpointer thread alone never finds every frame copied at the start
    /// of a write, so before this the WAL reached four times the threshold.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_steady_stream_of_commits_keeps_the_wal_at_its_threshold() {
        let dir = std::env::temp_dir().join(format!("charter-walcap-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("s.db");
        let threshold: u32 = 64;
        let options = SqliteOptions {
            wal_autocheckpoint_pages: threshold,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open_with(&path, options).expect("open");
        let wal = dir.join("s.db-wal");
        let t = now_millis();
        let text = "x".repeat(2_000);
        let mut largest = 0u64;
        // Eight concurrent senders, so commits follow each other with no pause.
        let mut senders = tokio::task::JoinSet::new();
        for k in 0..8i64 {
            let store = store.clone();
            let text = text.clone();
            senders.spawn(async move {
                for i in 0..150i64 {
                    let mut e = event("c", t + k * 1_000 + i);
                    e.payload = serde_json::json!({ "text": text });
                    store.ingest(e).await.expect("ingest");
                }
            });
        }
        while !senders.is_empty() {
            tokio::select! {
                done = senders.join_next() => {
                    if let Some(joined) = done {
                        joined.expect("sender");
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        // 1,200 events of 2 KB are ~600 pages of rows alone (many times the threshold); a
        // WAL frame is a 4 KiB page and a 24-byte header. The writer's checkpoint is skipped
        // when it finds the checkpointer thread mid-pass (tried again at the next commit),
        // and the WAL cannot start over while that thread reads it, so allow twice the
        // threshold plus one batch of eight events with their index pages; left to grow,
        // it reached 296 frames here.
        let frame = 4096 + 24;
        let bound = u64::from(2 * threshold + 64) * frame + 32;
        assert!(
            largest <= bound,
            "the WAL reached {largest} bytes ({} frames); threshold {threshold} frames",
            largest / frame
        );
        store.close().await;
        let conn = Connection::open(&path).expect("reopen");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1_200, "every event was written");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The claim runs on the writer for every batch of work; its statements must come from
    /// the statement cache as they are, not be re-prepared on each use (a bound `LIMIT` or a
    /// sort makes SQLite expire a statement whenever its bindings are cleared).
    #[tokio::test]
    async fn claim_statements_are_not_reprepared() {
        let dir = std::env::temp_dir().join(format!("charter-claim-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = SqliteStore::open(&dir.join("s.db")).expect("open");
        let t = now_millis();
        for i in 0..12 {
            store.ingest(event("c", t + i)).await.expect("ingest");
        }
        let lease = Duration::from_secs(60);
        let mut claimed = 0;
        for (k, max) in [1usize, 2, 3, 4].into_iter().enumerate() {
            let worker = format!("w{k}");
            let got = store
                .claim("c", &worker, max, 100, lease, t + 20)
                .await
                .expect("claim");
            assert_eq!(got.len(), max, "claim {k} took {max}");
            claimed += got.len();
        }
        assert_eq!(claimed, 10);
        let resolution_sql = format!(
            "SELECT {ESCALATION_COLS} FROM escalations
             WHERE event_id = ?1 AND status = 'resolved' AND resolution IS NOT NULL"
        );
        let counts = store
            .write(move |conn| {
                let mut out = Vec::new();
                for sql in [
                    CLAIM_PENDING_SQL,
                    CLAIM_EXPIRED_SQL,
                    CLAIM_UPDATE_SQL,
                    &resolution_sql,
                ] {
                    let stmt = conn.prepare_cached(sql).map_err(db("test"))?;
                    out.push((
                        sql.split_whitespace().take(6).collect::<Vec<_>>().join(" "),
                        stmt.get_status(StatementStatus::RePrepare),
                        stmt.get_status(StatementStatus::Run) > 0
                            || stmt.get_status(StatementStatus::VmStep) > 0,
                    ));
                }
                Ok(out)
            })
            .await
            .expect("statement status");
        for (sql, reprepared, ran) in counts {
            assert!(ran, "{sql} never ran, so the check says nothing");
            assert_eq!(reprepared, 0, "{sql} was re-prepared {reprepared} times");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
