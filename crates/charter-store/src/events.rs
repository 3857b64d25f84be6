//! Events as received and payloads rejected by their contract: [`EventStore`] and its filters.

use std::future::Future;

use charter_core::model::{EventRecord, EventStatus, NewEvent, RejectedPayload, UnixMillis};
use uuid::Uuid;

use crate::{Result, Sort};

/// Result of storing an incoming event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Newly stored (durable) under this id.
    Stored(Uuid),
    /// The charter already has an event with this dedupe key; nothing stored.
    Duplicate(Uuid),
}

/// Filters for listing events. `None` means no constraint.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub charter: Option<String>,
    pub status: Option<EventStatus>,
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
    /// Only these charters (a caller's scope); empty = all.
    pub charters: Vec<String>,
    /// Only events whose id starts with these hexadecimal digits (hyphens ignored); a prefix
    /// that is not hexadecimal matches nothing. Searched as a range of the primary key.
    pub id_prefix: Option<String>,
    /// Only events with exactly this dedupe key (indexed; any charter).
    pub dedupe_key: Option<String>,
    /// Newest first (by id, so arrival) unless `OldestFirst`.
    pub sort: Option<Sort>,
    /// Keyset paging: only events after this id in the listing's order.
    pub after: Option<Uuid>,
    /// At most this many (default 100 when 0).
    pub limit: usize,
}
/// Filters for listing rejected payloads. `None` means no constraint.
#[derive(Debug, Clone, Default)]
pub struct RejectedFilter {
    pub charter: Option<String>,
    /// Only these charters (a caller's scope); empty = all.
    pub charters: Vec<String>,
    /// Received at or after.
    pub since: Option<UnixMillis>,
    /// Received before.
    pub until: Option<UnixMillis>,
    /// Newest first (by id, so arrival) unless `OldestFirst`.
    pub sort: Option<Sort>,
    /// Keyset paging: only payloads after this id in the listing's order.
    pub after: Option<Uuid>,
    /// At most this many (default 100 when 0).
    pub limit: usize,
}
/// Events as received and payloads rejected by their contract.
pub trait EventStore: Send + Sync + 'static {
    /// Store an event unless `(charter, dedupe_key)` was seen before. Returns only after the
    /// event is durable. Safe under concurrent calls with the same dedupe key: exactly one
    /// caller gets `Stored`, the others `Duplicate` with the same id.
    fn ingest(&self, event: NewEvent) -> impl Future<Output = Result<IngestOutcome>> + Send;

    /// [`EventStore::ingest`] for a payload that arrived as JSON text: `payload_json` is that
    /// text, already parsed into `event.payload` by the caller. The store keeps the text as
    /// received (the sender's key order and number spelling) rather than serialising the
    /// parsed value again, which also saves the webhook path that serialisation.
    fn ingest_json(
        &self,
        event: NewEvent,
        payload_json: String,
    ) -> impl Future<Output = Result<IngestOutcome>> + Send;

    /// Keep a payload that broke its charter's contract (durable on return).
    fn reject(&self, rejected: RejectedPayload) -> impl Future<Output = Result<()>> + Send;

    /// [`EventStore::reject`] unless the charter already keeps `keep` rejected payloads:
    /// then nothing is written and the answer is `false` (the count and the insert are one
    /// statement, so concurrent callers cannot overshoot by more than the writers racing).
    fn reject_within(
        &self,
        rejected: RejectedPayload,
        keep: u64,
    ) -> impl Future<Output = Result<bool>> + Send;

    fn get_event(&self, id: Uuid) -> impl Future<Output = Result<Option<EventRecord>>> + Send;

    fn list_events(
        &self,
        filter: EventFilter,
    ) -> impl Future<Output = Result<Vec<EventRecord>>> + Send;

    /// How many events match `filter` (its `after`, `sort` and `limit` aside).
    fn count_events(&self, filter: EventFilter) -> impl Future<Output = Result<u64>> + Send;

    /// Rejected payloads of `charter` (all when `None`), newest first, at most `limit`
    /// (default 100 when 0): the first page of [`EventStore::page_rejected`].
    fn list_rejected(
        &self,
        charter: Option<String>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RejectedPayload>>> + Send {
        self.page_rejected(RejectedFilter {
            charter,
            limit,
            ..RejectedFilter::default()
        })
    }

    /// Rejected payloads matching `filter`, newest first unless it sorts oldest first.
    fn page_rejected(
        &self,
        filter: RejectedFilter,
    ) -> impl Future<Output = Result<Vec<RejectedPayload>>> + Send;

    /// How many rejected payloads match `filter` (its `after`, `sort` and `limit` aside).
    fn count_rejected(&self, filter: RejectedFilter) -> impl Future<Output = Result<u64>> + Send;

    /// Remove a rejected payload (after it has been replayed into an event).
    fn delete_rejected(&self, id: Uuid) -> impl Future<Output = Result<bool>> + Send;
}
