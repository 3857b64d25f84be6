//! Events on SQLite: ingest (through the writer), reads, listings and rejected payloads.

use charter_core::model::{EventRecord, NewEvent, RejectedPayload};
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::rows::{self, EVENT_COLS, db, parse_uuid, to_json};
use super::{SqliteStore, collect};
use crate::{EventFilter, EventStore, IngestOutcome, RejectedFilter, Result};

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
