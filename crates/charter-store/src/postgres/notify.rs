//! Cluster coordination over PostgreSQL: ingest notifications (`LISTEN`/`NOTIFY`) and
//! "only one node runs this job" locks (session advisory locks).

use std::time::Duration;

use deadpool_postgres::Object;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{PgStore, rows::db};
use crate::{Result, StoreError};

/// The channel every stored event is announced on; the payload is the charter name.
pub const NOTIFY_CHANNEL: &str = "charter_events";

/// Notifications buffered for a slow receiver before the listener stops reading (the
/// server keeps queueing them meanwhile).
const LISTEN_BUFFER: usize = 1024;

/// Longest pause between reconnection attempts of a listener.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// First half of the two-part advisory lock key used for job locks ("CHJB"); the second is
/// a hash of the job name. Two-part keys never collide with the one-part migration lock.
const JOB_LOCK_CLASS: i32 = 0x4348_4a42;

/// A dedicated connection that has run `LISTEN`, and the task reading its messages.
struct Listener {
    client: tokio_postgres::Client,
    driver: JoinHandle<()>,
}

impl Listener {
    async fn open(config: &tokio_postgres::Config, tx: mpsc::Sender<String>) -> Result<Listener> {
        let (client, mut connection) = config
            .connect(NoTls)
            .await
            .map_err(db("connecting the listener"))?;
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if n.channel() == NOTIFY_CHANNEL
                            && tx.send(n.payload().to_string()).await.is_err()
                        {
                            return; // The receiver is gone.
                        }
                    }
                    Some(Ok(_)) => {} // Notices and future message kinds.
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "PostgreSQL listener connection failed");
                        return;
                    }
                    None => return,
                }
            }
        });
        if let Err(e) = client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
            .await
        {
            driver.abort();
            return Err(db("starting LISTEN")(e));
        }
        Ok(Listener { client, driver })
    }
}

/// Keep a listener alive until the receiver is dropped or the store is closed, reconnecting
/// with capped exponential backoff when its connection breaks.
async fn keep_listening(
    config: tokio_postgres::Config,
    tx: mpsc::Sender<String>,
    mut shutdown: watch::Receiver<bool>,
    mut listener: Listener,
) {
    loop {
        tokio::select! {
            _ = &mut listener.driver => {}
            _ = tx.closed() => {
                listener.driver.abort();
                return;
            }
            _ = shutdown.wait_for(|closed| *closed) => {
                listener.driver.abort();
                return;
            }
        }
        drop(listener.client);
        tracing::warn!("PostgreSQL listener disconnected; reconnecting");
        let mut backoff = Duration::from_millis(100);
        listener = loop {
            if tx.is_closed() || *shutdown.borrow() {
                return;
            }
            match Listener::open(&config, tx.clone()).await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "PostgreSQL listener reconnect failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
    }
}

/// Announces stored events on [`NOTIFY_CHANNEL`] after their ingest committed, from one
/// background task, instead of a `pg_notify` inside each ingest transaction. PostgreSQL
/// serialises the commits of every transaction that notifies (one lock, held through the
/// commit's WAL flush), which kept concurrent ingests from sharing a flush; a `pg_notify`
/// in a statement of its own writes no WAL. Charters announced while a round is being sent
/// go out together in the next one, so a burst costs a few statements, not one per event.
#[derive(Default)]
pub(super) struct Announcer {
    pending: std::sync::Mutex<std::collections::BTreeSet<String>>,
    wake: tokio::sync::Notify,
    started: std::sync::atomic::AtomicBool,
}

impl Announcer {
    /// Queue `charter` for the next announcement (starting the task on first use).
    pub(super) fn announce(&self, store: &PgStore, charter: &str) {
        match self.pending.lock() {
            Ok(mut p) => {
                p.insert(charter.to_string());
            }
            Err(poisoned) => {
                poisoned.into_inner().insert(charter.to_string());
            }
        }
        if !self.started.swap(true, std::sync::atomic::Ordering::AcqRel) {
            tokio::spawn(announce_loop(
                std::sync::Arc::clone(&store.inner.announcer),
                store.inner.pool.clone(),
                store.inner.shutdown.subscribe(),
            ));
        }
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<String> {
        let mut p = match self.pending.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::take(&mut *p).into_iter().collect()
    }
}

/// Send what is queued, round after round, until the store is closed or dropped (its
/// shutdown sender goes with it). A failed round is logged and dropped: notifications are
/// hints, and workers also poll.
async fn announce_loop(
    announcer: std::sync::Arc<Announcer>,
    pool: deadpool_postgres::Pool,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = announcer.wake.notified() => {}
            _ = shutdown.wait_for(|closed| *closed) => return,
        }
        let charters = announcer.take();
        if charters.is_empty() {
            continue;
        }
        let sent = match pool.get().await {
            Ok(client) => client
                .execute(
                    "SELECT pg_notify($1, c) FROM unnest($2::text[]) AS c",
                    &[&NOTIFY_CHANNEL, &charters],
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, charters = ?charters, "announcing stored events failed (other nodes find them at their next poll)");
        }
    }
}

impl PgStore {
    /// Receive the charter name of every event stored from now on, by any node.
    ///
    /// Opens a dedicated connection (outside the pool) that `LISTEN`s on [`NOTIFY_CHANNEL`];
    /// returns once it is listening. If the connection breaks, it reconnects in the
    /// background; notifications sent while it was down are lost, so a worker should also
    /// poll now and then. Notifications are hints ("charter X has new work"), not a queue:
    /// sent just after the event's commit, one per charter for a burst of events stored
    /// meanwhile. The listener ends when the receiver is dropped or the store is closed.
    pub async fn listen(&self) -> Result<mpsc::Receiver<String>> {
        if *self.inner.shutdown.borrow() {
            return Err(StoreError::Closed);
        }
        let (tx, rx) = mpsc::channel(LISTEN_BUFFER);
        let listener = Listener::open(&self.inner.config, tx.clone()).await?;
        tokio::spawn(keep_listening(
            self.inner.config.clone(),
            tx,
            self.inner.shutdown.subscribe(),
            listener,
        ));
        Ok(rx)
    }

    /// Try to become the one node that runs job `name` (a scheduled job, say) right now.
    ///
    /// Returns `Some(lock)` if no other session holds the lock, `None` otherwise; never
    /// waits. The lock is a PostgreSQL session advisory lock held by a pooled connection
    /// that the [`JobLock`] keeps out of the pool; it is released by [`JobLock::release`],
    /// or by dropping the `JobLock` (which closes that connection), or by the server if the
    /// connection or the node dies. Names are hashed to 32 bits: two different names may,
    /// rarely, share a lock, which only makes them run one at a time.
    pub async fn try_lock_job(&self, name: &str) -> Result<Option<JobLock>> {
        let key = job_key(name);
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&JOB_LOCK_CLASS, &key],
            )
            .await
            .map_err(db("trying a job lock"))?;
        let locked: bool = super::rows::get(&row, 0)?;
        Ok(locked.then(|| JobLock {
            client: Some(client),
            name: name.to_string(),
            key,
        }))
    }
}

/// FNV-1a (32-bit) of the job name: the same on every node and every build.
fn job_key(name: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(h.to_ne_bytes())
}

/// A held cluster-wide job lock (see [`PgStore::try_lock_job`]).
///
/// Dropping it releases the lock by closing its connection; [`JobLock::release`] unlocks
/// explicitly and gives the connection back to the pool.
pub struct JobLock {
    client: Option<Object>,
    name: String,
    key: i32,
}

impl std::fmt::Debug for JobLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobLock")
            .field("name", &self.name)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl JobLock {
    /// The job name the lock was taken for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the connection holding the lock is still open. If it closed, the server has
    /// released the lock and another node may have taken it: a long job should check this
    /// between steps.
    pub fn is_connected(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Release the lock now and return the connection to the pool.
    pub async fn release(mut self) -> Result<()> {
        let Some(client) = self.client.take() else {
            return Ok(());
        };
        let unlocked = client
            .query_one(
                "SELECT pg_advisory_unlock($1, $2)",
                &[&JOB_LOCK_CLASS, &self.key],
            )
            .await
            .map_err(db("releasing a job lock"));
        match unlocked.and_then(|row| super::rows::get::<bool>(&row, 0)) {
            Ok(true) => Ok(()), // `client` goes back to the pool, unlocked.
            Ok(false) => {
                // Not held by this session any more; do not reuse a connection in an
                // unexpected state.
                drop(Object::take(client));
                Err(StoreError::Database(format!(
                    "job lock {:?} was no longer held",
                    self.name
                )))
            }
            Err(e) => {
                // Closing the connection releases the lock on the server.
                drop(Object::take(client));
                Err(e)
            }
        }
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Detach from the pool and close: the session ends and with it the lock.
            drop(Object::take(client));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::job_key;

    #[test]
    fn job_keys_are_stable_and_distinct() {
        // FNV-1a 32 of "" is the offset basis; of "a" a published value.
        assert_eq!(job_key(""), 0x811c_9dc5_u32 as i32);
        assert_eq!(job_key("a"), 0xe40c_292c_u32 as i32);
        assert_ne!(job_key("nightly-report"), job_key("hourly-sync"));
    }
}
