//! Event sources beyond webhooks and NATS: polled HTTP APIs (`trigger: { poll: ... }`) and
//! cron schedules (`trigger: { schedule: ... }`).
//!
//! **Polling.** One task per charter with a `poll` trigger. Each tick it reads the stored
//! cursor (or the trigger's `start`), renders the path with it, sends one `GET` through the
//! connector (auth, SSRF guard, timeout, rate limit, circuit breaker, as actions do), takes
//! the array at `items`, and stores every item as an event with the item's `key` as its
//! dedupe key — the same store path a webhook delivery takes, so an item seen again (pages
//! that overlap, a restart that re-reads) is recognised as a duplicate. Only after every
//! item of the page is stored is the next cursor stored: a crash in between re-reads the
//! page, and dedupe absorbs it. When the cursor moved and the page had items, the next
//! page is fetched at once (up to [`MAX_PAGES_PER_TICK`]); otherwise the task waits
//! `every`. On PostgreSQL one node at a time polls a charter's API (a job lock).
//!
//! **Schedules.** One task per charter with a `schedule` trigger. At each fire time of the
//! cron expression (UTC, or wall-clock times in the trigger's `timezone`; see
//! [`charter_core::cron`] for daylight-saving changes) it stores an event whose dedupe key is `schedule:<fire time>`, so
//! two nodes, or a restart, never make two events for one fire time; then it stores the
//! fire time as the schedule's cursor. After downtime the most recent missed fire time is
//! fired once (older missed ones are skipped); on the very first start nothing in the past
//! is fired.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use charter_connect::{ConnectError, HttpExecutor};
use charter_core::config::{PollCursor, PollKey, PollTrigger, ScheduleTrigger};
use charter_core::cron::format_utc;
use charter_core::model::{NewEvent, RejectedPayload};
use charter_store::{IngestOutcome, Store, StoreError};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::project::CharterRuntime;
use crate::{AppState, ingest, now_millis};

/// Source name of a poll trigger in the source state store.
pub const POLL_SOURCE: &str = "poll";
/// Source name of a schedule trigger in the source state store.
pub const SCHEDULE_SOURCE: &str = "schedule";
/// Pages fetched one after the other in one tick while the cursor keeps moving.
pub const MAX_PAGES_PER_TICK: usize = 100;
/// Largest page read (the rest of a longer answer is not read; the poll fails).
pub const MAX_PAGE_BYTES: usize = charter_connect::BODY_READ_LIMIT;
/// Header kept with a polled event: the cursor of the request that returned it.
pub const CURSOR_HEADER: &str = "poll-cursor";
/// Wait before trying again after a schedule could not store its event.
const SCHEDULE_RETRY: Duration = Duration::from_secs(1);

/// Why a poll failed (the cursor is left where it was; the next tick tries again).
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("connector `{0}` is not an HTTP connector")]
    NotHttp(String),
    #[error("cannot render the poll path: {0}")]
    Path(String),
    #[error("cannot prepare the request: {0}")]
    Prepare(#[from] ConnectError),
    #[error("GET {url} failed: {error}")]
    Http { url: String, error: String },
    #[error("GET {url}: the response is larger than {MAX_PAGE_BYTES} bytes; ask for smaller pages")]
    TooLarge { url: String },
    #[error("GET {url}: the response is not JSON: {error}")]
    NotJson { url: String, error: String },
    #[error("GET {url}: the response has no array at `{pointer}`")]
    NoItems { url: String, pointer: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one page did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Items in the page.
    pub items: usize,
    /// Items stored as new events.
    pub stored: usize,
    /// Items recognised as events already stored.
    pub duplicates: usize,
    /// Items kept as rejected (contract violated, no dedupe key).
    pub rejected: usize,
    /// The cursor after this page (stored when it differs from the one polled with).
    pub cursor: String,
}

/// Whether any charter of the runtime polls an API or runs on a schedule.
pub fn has_sources(runtime: &crate::Runtime) -> bool {
    runtime
        .charters
        .values()
        .any(|c| c.charter.trigger.poll.is_some() || c.charter.trigger.schedule.is_some())
}

/// Run every charter's poll and schedule until `shutdown` is cancelled.
pub async fn run<S: Store>(
    state: AppState<S>,
    executor: Arc<HttpExecutor>,
    shutdown: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (name, cr) in &state.runtime.charters {
        if let Some(poll) = &cr.charter.trigger.poll {
            tasks.spawn(poll_loop(
                state.clone(),
                executor.clone(),
                name.clone(),
                poll.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(schedule) = &cr.charter.trigger.schedule {
            tasks.spawn(schedule_loop(
                state.clone(),
                name.clone(),
                schedule.clone(),
                shutdown.clone(),
            ));
        }
    }
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res {
            tracing::error!(error = %e, "a source task panicked");
        }
    }
    // Stay up until shutdown, so the supervisor does not take this for a failure.
    shutdown.cancelled().await;
}

/// Poll one charter's API every `every` until shutdown.
async fn poll_loop<S: Store>(
    state: AppState<S>,
    executor: Arc<HttpExecutor>,
    charter: String,
    poll: PollTrigger,
    shutdown: CancellationToken,
) {
    tracing::info!(charter = %charter, connector = %poll.connector, every_ms = poll.every.as_millis() as u64, "polling");
    loop {
        if let Some(r) = crate::backlog::refusal(&state, &charter) {
            // Paused while the backlog is full: the cursor stays, the next tick resumes.
            tracing::debug!(charter = %charter, bound = r.bound, "poll skipped: backlog full");
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = poll_tick(&state, &executor, &charter, &poll, &shutdown) => {}
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll.every) => {}
        }
    }
}

/// One tick: take the source lock, then fetch pages while the cursor moves.
async fn poll_tick<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    charter: &str,
    poll: &PollTrigger,
    shutdown: &CancellationToken,
) {
    let Some(cr) = state.runtime.charters.get(charter) else {
        return;
    };
    let _lock = match state.store.try_lock_source(charter, POLL_SOURCE).await {
        Ok(Some(lock)) => lock,
        Ok(None) => return, // another node polls this charter now
        Err(e) => {
            tracing::warn!(charter, error = %e, "cannot take the poll lock; will retry");
            return;
        }
    };
    let mut cursor = match state.store.get_cursor(charter, POLL_SOURCE).await {
        Ok(c) => c.unwrap_or_else(|| poll.start.clone()),
        Err(e) => {
            tracing::warn!(charter, error = %e, "cannot read the poll cursor; will retry");
            state.metrics.source_poll(charter, POLL_SOURCE, false);
            return;
        }
    };
    for _ in 0..MAX_PAGES_PER_TICK {
        if shutdown.is_cancelled() {
            return;
        }
        match poll_page(state, executor, cr, poll, &cursor).await {
            Ok(page) => {
                state.metrics.source_poll(charter, POLL_SOURCE, true);
                tracing::debug!(charter, cursor = %cursor, next = %page.cursor, items = page.items, stored = page.stored, duplicates = page.duplicates, "polled");
                if page.items == 0 || page.cursor == cursor {
                    return;
                }
                cursor = page.cursor;
            }
            Err(e) => {
                state.metrics.source_poll(charter, POLL_SOURCE, false);
                tracing::warn!(charter, error = %e, "poll failed; will retry");
                return;
            }
        }
    }
}

/// Fetch one page with `cursor`, store each item as an event, then store the next cursor.
pub async fn poll_page<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    cr: &CharterRuntime,
    poll: &PollTrigger,
    cursor: &str,
) -> Result<Page, PollError> {
    let charter = &cr.charter.name;
    let conn = state
        .runtime
        .connections
        .get(&poll.connector)
        .and_then(|c| c.http())
        .ok_or_else(|| PollError::NotHttp(poll.connector.clone()))?;
    let path = poll
        .path
        .render(&json!({ "cursor": encode_query(cursor), "cursor_raw": cursor }))
        .map_err(|e| PollError::Path(e.to_string()))?;
    let request_id = Uuid::now_v7().to_string();
    let req = HttpExecutor::prepare(
        Some(&conn.connector),
        "GET",
        &path,
        &[("Accept".to_string(), "application/json".to_string())],
        None,
        None,
        &request_id,
    )?;
    let url = req.url.to_string();
    let out = conn.attempt_keeping(executor, &req, MAX_PAGE_BYTES).await;
    if !out.ok {
        return Err(PollError::Http {
            url,
            error: out.error.unwrap_or_else(|| "no answer".into()),
        });
    }
    if out.body_truncated {
        return Err(PollError::TooLarge { url });
    }
    let body: Value = serde_json::from_slice(&out.body).map_err(|e| PollError::NotJson {
        url: url.clone(),
        error: e.to_string(),
    })?;
    let items = body
        .pointer(&poll.items)
        .and_then(Value::as_array)
        .ok_or_else(|| PollError::NoItems {
            url: url.clone(),
            pointer: poll.items.clone(),
        })?;

    let received_at = now_millis();
    let source = format!("poll:{}", poll.connector);
    let ids: Vec<Uuid> = items.iter().map(|_| Uuid::now_v7()).collect();
    let outcomes =
        futures_util::future::join_all(items.iter().zip(&ids).map(|(item, id)| {
            store_item(state, cr, poll, item, *id, cursor, &source, received_at)
        }))
        .await;
    let mut page = Page {
        items: items.len(),
        ..Page::default()
    };
    for outcome in outcomes {
        match outcome? {
            Stored::New => page.stored += 1,
            Stored::Duplicate => page.duplicates += 1,
            Stored::Rejected => page.rejected += 1,
        }
    }
    if page.stored > 0 {
        state.wake.notify_one();
    }

    page.cursor = next_cursor(&poll.cursor, cursor, &body, items);
    // Only now that every item of the page is stored.
    if page.cursor != cursor {
        state
            .store
            .put_cursor(charter, POLL_SOURCE, &page.cursor, now_millis())
            .await?;
    }
    Ok(page)
}

enum Stored {
    New,
    Duplicate,
    Rejected,
}

/// Store one polled item as an event (or keep it as rejected).
async fn store_item<S: Store>(
    state: &AppState<S>,
    cr: &CharterRuntime,
    poll: &PollTrigger,
    item: &Value,
    id: Uuid,
    cursor: &str,
    source: &str,
    received_at: i64,
) -> Result<Stored, StoreError> {
    let charter = &cr.charter.name;
    let mut headers = BTreeMap::new();
    headers.insert(CURSOR_HEADER.to_string(), cursor.to_string());
    let reject = |reasons: Vec<String>| RejectedPayload {
        id,
        charter: charter.clone(),
        source: source.to_string(),
        received_at,
        headers: headers.clone(),
        body: item.to_string(),
        reasons,
    };
    if let Some(contract) = &cr.contract {
        let violations = ingest::contract_violations(contract, item);
        if !violations.is_empty() {
            state.store.reject(reject(violations)).await?;
            state.metrics.rejected("contract");
            return Ok(Stored::Rejected);
        }
    }
    let key = match item_key(&poll.key, item, cursor) {
        Ok(k) => k,
        Err(reason) => {
            state.store.reject(reject(vec![reason])).await?;
            state.metrics.rejected("malformed");
            return Ok(Stored::Rejected);
        }
    };
    let event = NewEvent {
        id,
        charter: charter.clone(),
        source: source.to_string(),
        event_type: item.get("type").and_then(Value::as_str).map(str::to_string),
        dedupe_key: Some(key),
        received_at,
        headers,
        payload: item.clone(),
    };
    match state.store.ingest(event).await? {
        IngestOutcome::Stored(_) => {
            state.metrics.received(charter);
            state.metrics.backlog.stored(charter);
            Ok(Stored::New)
        }
        IngestOutcome::Duplicate(_) => {
            state.metrics.duplicate(charter);
            Ok(Stored::Duplicate)
        }
    }
}

/// An item's dedupe key, or why it has none.
pub fn item_key(key: &PollKey, item: &Value, cursor: &str) -> Result<String, String> {
    let k = match key {
        PollKey::Pointer(p) => match item.pointer(p) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => {
                return Err(format!("the item has no value at `{p}` for its dedupe key"));
            }
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            Some(_) => {
                return Err(format!(
                    "the item's `{p}` is not a text or number, so it cannot be a dedupe key"
                ));
            }
        },
        PollKey::Template(t) => t
            .render(&json!({ "item": item, "payload": item, "cursor": cursor }))
            .map_err(|e| format!("cannot compute the dedupe key: {e}"))?,
    };
    if k.trim().is_empty() {
        return Err("the item's dedupe key is empty".to_string());
    }
    Ok(k)
}

/// The cursor after a page: `next` from the response (kept when missing or null), or the
/// largest `max` value among the items (never below the current cursor).
pub fn next_cursor(how: &PollCursor, current: &str, body: &Value, items: &[Value]) -> String {
    match how {
        PollCursor::Next(p) => match body.pointer(p) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(v @ Value::Number(_)) => v.to_string(),
            _ => current.to_string(),
        },
        PollCursor::Max(p) => {
            let mut best = current.to_string();
            for v in items.iter().filter_map(|i| i.pointer(p)) {
                let candidate = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => continue,
                };
                if greater(&candidate, &best, v.is_number()) {
                    best = candidate;
                }
            }
            best
        }
    }
}

/// Whether `a` comes after `b`. Anything is after an empty cursor. Two numbers (a JSON
/// number, or two strings that are plain decimals such as `"10"` and `"9"`) compare as
/// numbers, integers exactly; two RFC 3339 times compare as instants, so offsets and
/// fractional seconds order correctly (`…T10:00:00+02:00` is before `…T09:00:00Z`, and
/// `…:00.5Z` after `…:00Z`); anything else compares as text.
fn greater(a: &str, b: &str, numeric: bool) -> bool {
    if b.is_empty() {
        return true;
    }
    if numeric || (is_decimal(a) && is_decimal(b)) {
        if let (Ok(x), Ok(y)) = (a.parse::<i128>(), b.parse::<i128>()) {
            return x > y;
        }
        if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
            return x > y;
        }
    }
    if let (Ok(x), Ok(y)) = (a.parse::<jiff::Timestamp>(), b.parse::<jiff::Timestamp>()) {
        return x > y;
    }
    a > b
}

/// An optional minus, digits, and optionally a point followed by digits.
fn is_decimal(s: &str) -> bool {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits)
}

/// Percent-encode everything but RFC 3986 unreserved characters (for a query value).
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Fire one charter's schedule until shutdown.
async fn schedule_loop<S: Store>(
    state: AppState<S>,
    charter: String,
    schedule: ScheduleTrigger,
    shutdown: CancellationToken,
) {
    tracing::info!(charter = %charter, cron = %schedule.cron, timezone = %schedule.zone, "schedule started");
    loop {
        if let Some(r) = crate::backlog::refusal(&state, &charter) {
            // Paused while the backlog is full; the due fire time is fired once it is not.
            tracing::debug!(charter = %charter, bound = r.bound, "schedule waits: backlog full");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(crate::backlog::RETRY_AFTER) => {}
            }
            continue;
        }
        let wait = match schedule_step(&state, &charter, &schedule, now_millis()).await {
            Ok(wait) => wait,
            Err(e) => {
                state.metrics.source_poll(&charter, SCHEDULE_SOURCE, false);
                tracing::warn!(charter = %charter, error = %e, "schedule could not store its event; will retry");
                SCHEDULE_RETRY
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// What is due at `now_ms`: fire the latest fire time not fired yet (if any), and return how
/// long to wait before the next one.
pub async fn schedule_step<S: Store>(
    state: &AppState<S>,
    charter: &str,
    schedule: &ScheduleTrigger,
    now_ms: i64,
) -> Result<Duration, StoreError> {
    let now = now_ms.div_euclid(1000);
    let last: Option<i64> = state
        .store
        .get_cursor(charter, SCHEDULE_SOURCE)
        .await?
        .and_then(|c| c.parse().ok());
    match last {
        None => {
            // First start: nothing before now is owed.
            state
                .store
                .put_cursor(charter, SCHEDULE_SOURCE, &now.to_string(), now_ms)
                .await?;
        }
        Some(last) => {
            if let Some(due) = schedule.latest_at_or_before(now)
                && due > last
            {
                fire(state, charter, schedule, due).await?;
                state
                    .store
                    .put_cursor(charter, SCHEDULE_SOURCE, &due.to_string(), now_ms)
                    .await?;
                state.metrics.source_poll(charter, SCHEDULE_SOURCE, true);
            }
        }
    }
    let next = schedule.next_after(now).unwrap_or(now + 86_400);
    let wait_ms = (next * 1000 - now_ms).max(1);
    Ok(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1)))
}

/// Store the event of fire time `at` (Unix seconds).
async fn fire<S: Store>(
    state: &AppState<S>,
    charter: &str,
    schedule: &ScheduleTrigger,
    at: i64,
) -> Result<(), StoreError> {
    let when = format_utc(at);
    let event = NewEvent {
        id: Uuid::now_v7(),
        charter: charter.to_string(),
        source: SCHEDULE_SOURCE.to_string(),
        event_type: Some("schedule".to_string()),
        dedupe_key: Some(format!("schedule:{when}")),
        received_at: now_millis(),
        headers: BTreeMap::new(),
        payload: json!({
            "scheduled_for": when,
            "scheduled_for_local": schedule.zone.format_local(at),
            "timezone": schedule.zone.name(),
            "charter": charter,
            "cron": schedule.cron.source(),
        }),
    };
    match state.store.ingest(event).await? {
        IngestOutcome::Stored(id) => {
            tracing::info!(charter, scheduled_for = %when, event = %id, "scheduled event");
            state.metrics.received(charter);
            state.metrics.backlog.stored(charter);
            state.wake.notify_one();
        }
        IngestOutcome::Duplicate(_) => state.metrics.duplicate(charter),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_move_forward_only() {
        let items = vec![
            json!({"updated_at": "2026-01-02T00:00:00Z", "n": 5}),
            json!({"updated_at": "2026-01-03T00:00:00Z", "n": 10}),
            json!({"n": 2}),
        ];
        let body = json!({"next": "tok-2", "items": items});
        let max = |p: &str, cur: &str| next_cursor(&PollCursor::Max(p.into()), cur, &body, &items);
        assert_eq!(max("/updated_at", ""), "2026-01-03T00:00:00Z");
        assert_eq!(
            max("/updated_at", "2026-02-01T00:00:00Z"),
            "2026-02-01T00:00:00Z"
        );
        // Numbers compare as numbers: 10 > 9 although "10" < "9" as text.
        assert_eq!(max("/n", "9"), "10");
        assert_eq!(max("/n", "10.5"), "10.5");
        let next = |p: &str| next_cursor(&PollCursor::Next(p.into()), "tok-1", &body, &items);
        assert_eq!(next("/next"), "tok-2");
        assert_eq!(next("/missing"), "tok-1");
    }

    #[test]
    fn max_cursors_order_numeric_strings_and_times_by_value() {
        let items = vec![
            json!({"id": "9", "at": "2026-01-01T09:30:00Z", "big": "9007199254740993"}),
            json!({"id": "10", "at": "2026-01-01T10:00:00+02:00", "big": "9007199254740992"}),
            json!({"id": "v2", "at": "2026-01-01T09:30:00.5Z"}),
        ];
        let body = json!({});
        let max = |p: &str, cur: &str| next_cursor(&PollCursor::Max(p.into()), cur, &body, &items);
        // Decimal strings as numbers ("10" > "9"); a non-number keeps text order ("v2" > "9"
        // and "v2" > "10" as text, so it wins when present).
        assert_eq!(max("/id", "1"), "v2");
        assert!(greater("10", "9", false) && !greater("9", "10", false));
        assert!(greater("-1", "-2", false) && greater("2.50", "2.4", false));
        // Integers past 2^53 stay exact.
        assert_eq!(max("/big", "1"), "9007199254740993");
        // Times by instant: 10:00+02:00 is 08:00Z, before 09:30Z; a half second later wins.
        assert_eq!(max("/at", ""), "2026-01-01T09:30:00.5Z");
        assert!(!greater(
            "2026-01-01T10:00:00+02:00",
            "2026-01-01T09:30:00Z",
            false
        ));
        // Text that is neither stays text order.
        assert!(greater("b", "a", false) && !greater("1.2.3", "1.3", false));
        assert!(!is_decimal("1e5") && !is_decimal("NaN") && !is_decimal("1.") && !is_decimal("-"));
    }

    #[test]
    fn item_keys_from_pointers_and_templates() {
        let item = json!({"id": 7, "ref": "A-1", "nested": {"x": null}});
        assert_eq!(
            item_key(&PollKey::Pointer("/id".into()), &item, "").as_deref(),
            Ok("7")
        );
        assert_eq!(
            item_key(&PollKey::Pointer("/ref".into()), &item, "").as_deref(),
            Ok("A-1")
        );
        assert!(item_key(&PollKey::Pointer("/nested/x".into()), &item, "").is_err());
        let t = charter_core::template::Template::parse("{{ item.ref }}:{{ cursor }}")
            .expect("template");
        assert_eq!(
            item_key(&PollKey::Template(t), &item, "c1").as_deref(),
            Ok("A-1:c1")
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            encode_query("2026-01-01T00:00:00+00:00"),
            "2026-01-01T00%3A00%3A00%2B00%3A00"
        );
        assert_eq!(encode_query("a b&c"), "a%20b%26c");
    }
}
