//! The WAL checkpointer: copies committed pages from the WAL into the database file on a
//! thread (and connection) of its own, so the writer thread never spends a batch's time on
//! it.
//!
//! It runs a `PASSIVE` checkpoint every [`INTERVAL`]: that copies what no reader still
//! needs, without taking the write lock, so commits go on meanwhile; once everything is
//! copied, SQLite restarts the WAL from its beginning at the next write. The writer keeps
//! its own auto-checkpoint as a safety net at a larger size ([`WRITER_FALLBACK_FACTOR`]
//! times `wal_autocheckpoint_pages`), in case this thread falls behind.
//!
//! Measured (BENCHMARKS.md, eighth pass): a checkpoint of ~32 MB of WAL takes ~11 ms on
//! that VM; on the writer thread it stalled every acknowledgement waiting on that batch.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::{Result, StoreError};

/// How often the checkpointer runs.
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

/// The writer's own auto-checkpoint, as a multiple of `wal_autocheckpoint_pages`.
pub(crate) const WRITER_FALLBACK_FACTOR: u32 = 4;

/// Handle to the checkpointer thread; [`Checkpointer::stop`] ends it.
pub(crate) struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Open a connection of its own to `path` and start checkpointing.
    pub(crate) fn start(path: &Path, busy_timeout: Duration) -> Result<Checkpointer> {
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Database(format!("opening the checkpoint connection: {e}")))?;
        conn.busy_timeout(busy_timeout)
            .map_err(|e| StoreError::Database(format!("setting busy_timeout: {e}")))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("charter-sqlite-checkpoint".into())
            .spawn(move || {
                // Ends on `stop` or when the store (holding the sender) is dropped.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                    }
                }
                // A last pass, so a clean shutdown leaves little WAL behind.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            })
            .map_err(|e| StoreError::Database(format!("starting the checkpoint thread: {e}")))?;
        Ok(Checkpointer { stop, thread })
    }

    /// Stop the thread and wait for it.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the WAL checkpoint thread panicked");
        }
    }
}
