//! Error mapping and row decoding for PostgreSQL. Bad rows become [`StoreError::Corrupt`],
//! never panics.

use std::collections::BTreeMap;

use charter_core::model::{AttemptRecord, EventRecord, EventStatus, NewEvent, RejectedPayload};
use serde::de::DeserializeOwned;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Json};

use crate::{Result, StoreError};

/// Columns selected for an [`EventRecord`], in the order [`event_record`] reads them.
pub(crate) const EVENT_COLS: &str = "id, charter, source, event_type, dedupe_key, received_at, \
     headers, payload, status, attempts, updated_at";

/// [`EVENT_COLS`] qualified with the alias `e` (for `UPDATE events AS e ... FROM ...`).
pub(crate) const EVENT_COLS_E: &str = "e.id, e.charter, e.source, e.event_type, e.dedupe_key, \
     e.received_at, e.headers, e.payload, e.status, e.attempts, e.updated_at";

/// Columns selected for a [`RejectedPayload`], in the order [`rejected_payload`] reads them.
pub(crate) const REJECTED_COLS: &str = "id, charter, source, received_at, headers, body, reasons";

/// Map a driver error to a store error, with what the store was doing. The server's own
/// message (severity, text, detail) is kept when there is one.
pub(crate) fn db(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| match e.as_db_error() {
        Some(server) => StoreError::Database(format!("{context}: {server}")),
        None if e.is_closed() => StoreError::Database(format!("{context}: connection closed")),
        None => StoreError::Database(format!("{context}: {e}")),
    }
}

/// Read one column; a value that does not fit the expected type is corruption.
pub(crate) fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx)
        .map_err(|e| StoreError::Corrupt(format!("column {idx}: {e}")))
}

pub(crate) fn u32_of(what: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} out of range: {v}")))
}

/// Parse a snake_case enum stored by its serde name (e.g. `RunOutcome`, `ActionStatus`).
pub(crate) fn parse_enum<T: DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| StoreError::Corrupt(format!("unknown {what} {s:?}")))
}

/// The serde (snake_case) name of a unit enum value, as stored.
pub(crate) fn enum_name<T: serde::Serialize>(value: &T) -> Option<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
}

/// Decode the leading [`EVENT_COLS`] columns of `row`.
pub(crate) fn event_record(row: &Row) -> Result<EventRecord> {
    let Json(headers): Json<BTreeMap<String, String>> = get(row, 6)?;
    let status: String = get(row, 8)?;
    let attempts: i64 = get(row, 9)?;
    Ok(EventRecord {
        event: NewEvent {
            id: get(row, 0)?,
            charter: get(row, 1)?,
            source: get(row, 2)?,
            event_type: get(row, 3)?,
            dedupe_key: get(row, 4)?,
            received_at: get(row, 5)?,
            headers,
            payload: get(row, 7)?,
        },
        status: EventStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown event status {status:?}")))?,
        attempts: u32_of("attempts", attempts)?,
        updated_at: get(row, 10)?,
    })
}

/// Decode the [`REJECTED_COLS`] columns of `row`.
pub(crate) fn rejected_payload(row: &Row) -> Result<RejectedPayload> {
    let Json(headers): Json<BTreeMap<String, String>> = get(row, 4)?;
    let body: Vec<u8> = get(row, 5)?;
    let Json(reasons): Json<Vec<String>> = get(row, 6)?;
    Ok(RejectedPayload {
        id: get(row, 0)?,
        charter: get(row, 1)?,
        source: get(row, 2)?,
        received_at: get(row, 3)?,
        headers,
        body: String::from_utf8(body)
            .map_err(|e| StoreError::Corrupt(format!("rejected body is not UTF-8: {e}")))?,
        reasons,
    })
}

/// Decode `(action_id, attempt, started_at, duration_ms, http_status, error, ok)`; the
/// action id (column 0) is read by the caller.
pub(crate) fn attempt_record(row: &Row) -> Result<AttemptRecord> {
    let attempt: i64 = get(row, 1)?;
    let duration: i64 = get(row, 3)?;
    let http: Option<i32> = get(row, 4)?;
    Ok(AttemptRecord {
        attempt: u32_of("attempt", attempt)?,
        started_at: get(row, 2)?,
        duration_ms: u64::try_from(duration).map_err(|_| {
            StoreError::Corrupt(format!("attempt duration out of range: {duration}"))
        })?,
        status: http
            .map(|h| {
                u16::try_from(h)
                    .map_err(|_| StoreError::Corrupt(format!("HTTP status out of range: {h}")))
            })
            .transpose()?,
        error: get(row, 5)?,
        ok: get(row, 6)?,
    })
}
