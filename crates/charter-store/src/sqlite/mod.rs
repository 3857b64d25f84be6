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
//!   `PRAGMA user_version`, applied on open (`migrate.rs`).
//!
//! This file opens the store and holds what every concern shares (the reader pool, listing
//! conditions); each store trait is implemented in the file of its concern, named as in
//! the PostgreSQL backend (`events.rs`, `queue.rs`, `runs.rs` and `run_writes.rs`,
//! `approvals.rs`, ...).

mod approvals;
mod audit;
mod checkpoint;
mod decision;
mod escalations;
mod events;
mod knowledge;
mod lists;
mod migrate;
mod notifications;
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
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use charter_core::model::UnixMillis;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::{Result, StoreError};
pub use migrate::SCHEMA_VERSION;
use rows::db;
pub use writer::{Durability, Gather, WriterStats};

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
        migrate::migrate(&mut conn)?;
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
    /// that has stopped ([`QueueStore::single_process`](crate::QueueStore::single_process)). Commands that only read or purge
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
            let v = migrate::user_version(conn)?;
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
