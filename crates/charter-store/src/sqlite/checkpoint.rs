//! The WAL checkpointer: copies committed pages from the WAL into the database file on a
//! thread (and connection) of its own, so the writer thread spends little of a batch's time
//! on it.
//!
//! It runs a `PASSIVE` checkpoint every [`INTERVAL`]: that copies what no reader still
//! needs, without taking the write lock, so commits go on meanwhile. Copying is not enough
//! to keep the WAL short, though: SQLite writes the WAL from its beginning again only when a
//! write transaction starts and every frame has been copied, which a steady stream of
//! commits never leaves time for (the WAL grew to the writer's old fallback of 32,768 pages,
//! ~134 MB, within 1.5 s of the ingest benchmark). So the writer keeps its own
//! auto-checkpoint at `wal_autocheckpoint_pages`: by then this thread has copied all but
//! the last [`INTERVAL`]'s frames, the writer copies that tail under its write lock, and its
//! next transaction starts the WAL over. Rewriting the same WAL blocks keeps the commit's
//! fsync an overwrite (0.12-0.14 ms here) rather than an append that must also journal the
//! file's new size (0.20-0.25 ms).
//!
//! Measured (BENCHMARKS.md, ninth pass): p99.9 ack at 32 connections 5.8-6.8 ms against
//! 9.7-16.5 ms with the WAL left to grow; throughput unchanged within the noise.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::{Result, StoreError};

/// How often the checkpointer runs. A pass with nothing to copy only reads the WAL index.
pub(crate) const INTERVAL: Duration = Duration::from_millis(20);

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
