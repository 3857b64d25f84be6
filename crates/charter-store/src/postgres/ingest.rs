//! Group commit of ingest on PostgreSQL (issue #29): the events of requests that arrive
//! together are stored by one multi-row `INSERT` in one transaction, as the SQLite store's
//! writer does with its batches.
//!
//! Each call queues its event and then either waits for a writer to store it or becomes a
//! writer itself: at most [`WRITERS`] batches are in flight at once, and a writer takes every
//! queued event (up to [`MAX_BATCH`]). While a batch is on its way to the database the next
//! requests queue up, so the batch size follows the load by itself: one event when the
//! server is quiet (no added latency), dozens under load. A caller returns once the batch
//! holding its event has committed.
//!
//! Duplicates keep their meaning: `ON CONFLICT DO NOTHING` skips an event whose
//! (charter, dedupe key) or id is already stored (or earlier in the same batch), and the id
//! it duplicates is looked up after the commit. If a batch fails as a whole, each of its
//! events is tried alone, so one bad event fails only its own request.
//!
//! Batches use connections of their own (at most [`WRITERS`], opened on first use), so an
//! acknowledgement never waits behind the worker's run writes for a pooled connection.
//!
//! The batch itself is written by a spawned task that the writer awaits: a request dropped
//! while it was writing (a client that disconnected) does not leave the others waiting. The
//! task only runs the batch's statements and ends with them.

use std::collections::HashMap;
use std::sync::Mutex;

use charter_core::model::NewEvent;
use tokio::sync::{Semaphore, oneshot};
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::PgStore;
use super::events::JsonText;
use super::rows::{db, get};
use crate::{IngestOutcome, Result, StoreError};

/// Batches written at once (and the connections the ingest pool holds).
pub(super) const WRITERS: usize = 4;

/// Most events in one batch.
const MAX_BATCH: usize = 256;

struct Job {
    event: NewEvent,
    /// The payload's JSON text (as received, or serialised from the parsed value).
    payload: String,
    done: oneshot::Sender<Result<IngestOutcome>>,
}

/// The queue of events waiting for a batch, and the writers' permits.
pub(super) struct IngestQueue {
    jobs: Mutex<Vec<Job>>,
    writers: Semaphore,
}

impl Default for IngestQueue {
    fn default() -> Self {
        IngestQueue {
            jobs: Mutex::new(Vec::new()),
            writers: Semaphore::new(WRITERS),
        }
    }
}

impl std::fmt::Debug for IngestQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestQueue").finish_non_exhaustive()
    }
}

impl IngestQueue {
    fn take(&self) -> Vec<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let n = jobs.len().min(MAX_BATCH);
        jobs.drain(..n).collect()
    }
}

/// Store `event` in the next batch; returns once that batch has committed.
pub(super) async fn ingest(
    store: &PgStore,
    event: NewEvent,
    payload: Option<String>,
) -> Result<IngestOutcome> {
    let payload = match payload {
        Some(p) => p,
        None => serde_json::to_string(&event.payload)
            .map_err(|e| StoreError::Database(format!("serialising a payload: {e}")))?,
    };
    let queue = &store.inner.ingest;
    let (done, mut answer) = oneshot::channel();
    queue
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Job {
            event,
            payload,
            done,
        });
    loop {
        let permit = tokio::select! {
            biased;
            a = &mut answer => return answered(a),
            p = queue.writers.acquire() => p.map_err(|_| StoreError::Closed)?,
        };
        let batch = queue.take();
        if batch.is_empty() {
            // Another writer took this event: its answer comes from there.
            drop(permit);
            return answered(answer.await);
        }
        let writer = store.clone();
        let written = tokio::spawn(async move { write_batch(&writer, batch).await });
        if let Err(e) = written.await {
            tracing::error!(error = %e, "an ingest batch task failed");
        }
        drop(permit);
    }
}

fn answered(
    a: std::result::Result<Result<IngestOutcome>, oneshot::error::RecvError>,
) -> Result<IngestOutcome> {
    a.unwrap_or_else(|_| {
        Err(StoreError::Database(
            "the ingest batch holding this event was abandoned".into(),
        ))
    })
}

const BATCH_SQL: &str = "INSERT INTO events (id, charter, source, event_type, dedupe_key,
         received_at, headers, payload, status, attempts, updated_at)
     SELECT t.id, t.charter, t.source, t.event_type, t.dedupe_key, t.received_at, t.headers,
         t.payload, 'pending', 0, t.received_at
     FROM unnest($1::UUID[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[],
                 $7::JSON[], $8::JSON[])
         AS t(id, charter, source, event_type, dedupe_key, received_at, headers, payload)
     ON CONFLICT DO NOTHING
     RETURNING id";

/// Write one batch and answer each of its callers.
async fn write_batch(store: &PgStore, batch: Vec<Job>) {
    match insert_batch(store, &batch).await {
        Ok(outcomes) => {
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                let _ = job.done.send(Ok(outcome));
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.done.send(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, events = batch.len(), "an ingest batch failed; storing its events one by one");
            for job in batch {
                let one = std::slice::from_ref(&job);
                let outcome = insert_batch(store, one).await.and_then(|mut o| {
                    o.pop()
                        .ok_or_else(|| StoreError::Database("an empty batch answer".into()))
                });
                let _ = job.done.send(outcome);
            }
        }
    }
}

/// One multi-row insert, then the lookup of what the skipped events duplicate. The
/// outcomes in the batch's order.
async fn insert_batch(store: &PgStore, batch: &[Job]) -> Result<Vec<IngestOutcome>> {
    let client = store.ingest_client().await?;
    let stmt = client
        .prepare_cached(BATCH_SQL)
        .await
        .map_err(db("preparing the ingest batch"))?;
    let ids: Vec<Uuid> = batch.iter().map(|j| j.event.id).collect();
    let charters: Vec<&str> = batch.iter().map(|j| j.event.charter.as_str()).collect();
    let sources: Vec<&str> = batch.iter().map(|j| j.event.source.as_str()).collect();
    let types: Vec<Option<&str>> = batch
        .iter()
        .map(|j| j.event.event_type.as_deref())
        .collect();
    let keys: Vec<Option<&str>> = batch
        .iter()
        .map(|j| j.event.dedupe_key.as_deref())
        .collect();
    let received: Vec<i64> = batch.iter().map(|j| j.event.received_at).collect();
    let headers: Vec<Json<_>> = batch.iter().map(|j| Json(&j.event.headers)).collect();
    let payloads: Vec<JsonText<'_>> = batch.iter().map(|j| JsonText(&j.payload)).collect();
    let rows = client
        .query(
            &stmt,
            &[
                &ids, &charters, &sources, &types, &keys, &received, &headers, &payloads,
            ],
        )
        .await
        .map_err(db("inserting events"))?;
    let mut stored = std::collections::HashSet::with_capacity(rows.len());
    for r in &rows {
        stored.insert(get::<Uuid>(r, 0)?);
    }
    // The events skipped as duplicates of a (charter, dedupe key): what they duplicate.
    let skipped: Vec<&Job> = batch
        .iter()
        .filter(|j| !stored.contains(&j.event.id) && j.event.dedupe_key.is_some())
        .collect();
    let mut existing: HashMap<(String, String), Uuid> = HashMap::new();
    if !skipped.is_empty() {
        let stmt = client
            .prepare_cached(
                "SELECT e.charter, e.dedupe_key, e.id FROM events AS e
                 JOIN unnest($1::TEXT[], $2::TEXT[]) AS k(charter, dedupe_key)
                   ON e.charter = k.charter AND e.dedupe_key = k.dedupe_key",
            )
            .await
            .map_err(db("preparing the duplicate lookup"))?;
        let cs: Vec<&str> = skipped.iter().map(|j| j.event.charter.as_str()).collect();
        let ks: Vec<&str> = skipped
            .iter()
            .filter_map(|j| j.event.dedupe_key.as_deref())
            .collect();
        for r in client
            .query(&stmt, &[&cs, &ks])
            .await
            .map_err(db("looking up duplicates"))?
        {
            existing.insert((get(&r, 0)?, get(&r, 1)?), get(&r, 2)?);
        }
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    for j in batch {
        let e = &j.event;
        // `remove`: the same id twice in one batch is stored once, then a duplicate.
        if stored.remove(&e.id) {
            // Committed: tell other nodes' workers (after the commit, outside it).
            store.inner.announcer.announce(store, &e.charter);
            outcomes.push(IngestOutcome::Stored(e.id));
            continue;
        }
        let dup = e
            .dedupe_key
            .as_ref()
            .and_then(|k| existing.get(&(e.charter.clone(), k.clone())).copied());
        // Otherwise the conflict was on the id: the same event delivered twice.
        outcomes.push(IngestOutcome::Duplicate(dup.unwrap_or(e.id)));
    }
    Ok(outcomes)
}
