//! Error mapping and row decoding. Bad rows become [`StoreError::Corrupt`], never panics.

use std::collections::BTreeMap;

use charter_core::model::{EventRecord, EventStatus, NewEvent, RejectedPayload};
use rusqlite::Row;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{Result, StoreError};

/// Columns selected for an [`EventRecord`], in the order [`event_record`] reads them.
pub(crate) const EVENT_COLS: &str = "id, charter, source, event_type, dedupe_key, received_at, \
     headers, payload, status, attempts, updated_at";

/// Columns selected for a [`RejectedPayload`], in the order [`rejected_payload`] reads them.
pub(crate) const REJECTED_COLS: &str = "id, charter, source, received_at, headers, body, reasons";

/// Map a rusqlite error to a store error, with what the store was doing. Values that do not
/// fit their column type are corruption, anything else is a database error.
pub(crate) fn db(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| match e {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => {
            StoreError::Corrupt(format!("{context}: {e}"))
        }
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound(context.to_string()),
        other => StoreError::Database(format!("{context}: {other}")),
    }
}

pub(crate) fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("bad id {s:?}: {e}")))
}

pub(crate) fn parse_json<T: DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("bad {what} JSON: {e}")))
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

pub(crate) fn to_json<T: serde::Serialize + ?Sized>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Database(format!("serialising {what}: {e}")))
}

fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, idx: usize) -> Result<T> {
    row.get(idx).map_err(db("reading a column"))
}

fn u32_of(what: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} out of range: {v}")))
}

/// Decode the leading [`EVENT_COLS`] columns of `row`.
pub(crate) fn event_record(row: &Row<'_>) -> Result<EventRecord> {
    raw_event(row)?.decode()
}

/// An `events` row as stored, its JSON columns (headers, payload) not parsed yet. The claim
/// reads these on the writer thread and the caller decodes them after the write, so parsing
/// payloads does not hold up the one thread every write waits for.
pub(crate) struct RawEvent {
    pub(crate) id: Uuid,
    charter: String,
    source: String,
    event_type: Option<String>,
    dedupe_key: Option<String>,
    received_at: i64,
    headers: String,
    payload: String,
    status: String,
    attempts: i64,
    updated_at: i64,
}

/// Read the leading [`EVENT_COLS`] columns of `row` without parsing the JSON ones.
pub(crate) fn raw_event(row: &Row<'_>) -> Result<RawEvent> {
    let id: String = get(row, 0)?;
    Ok(RawEvent {
        id: parse_uuid(&id)?,
        charter: get(row, 1)?,
        source: get(row, 2)?,
        event_type: get(row, 3)?,
        dedupe_key: get(row, 4)?,
        received_at: get(row, 5)?,
        headers: get(row, 6)?,
        payload: get(row, 7)?,
        status: get(row, 8)?,
        attempts: get(row, 9)?,
        updated_at: get(row, 10)?,
    })
}

impl RawEvent {
    /// Parse the JSON columns and check the status and counters.
    pub(crate) fn decode(self) -> Result<EventRecord> {
        let status = self.status;
        Ok(EventRecord {
            event: NewEvent {
                id: self.id,
                charter: self.charter,
                source: self.source,
                event_type: self.event_type,
                dedupe_key: self.dedupe_key,
                received_at: self.received_at,
                headers: parse_json::<BTreeMap<String, String>>("headers", &self.headers)?,
                payload: parse_json("payload", &self.payload)?,
            },
            status: EventStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown event status {status:?}")))?,
            attempts: u32_of("attempts", self.attempts)?,
            updated_at: self.updated_at,
        })
    }
}

/// Decode the [`REJECTED_COLS`] columns of `row`.
pub(crate) fn rejected_payload(row: &Row<'_>) -> Result<RejectedPayload> {
    let id: String = get(row, 0)?;
    let headers: String = get(row, 4)?;
    let reasons: String = get(row, 6)?;
    Ok(RejectedPayload {
        id: parse_uuid(&id)?,
        charter: get(row, 1)?,
        source: get(row, 2)?,
        received_at: get(row, 3)?,
        headers: parse_json("headers", &headers)?,
        body: get(row, 5)?,
        reasons: parse_json("reasons", &reasons)?,
    })
}

pub(crate) fn opt_u32(what: &str, v: Option<i64>) -> Result<Option<u32>> {
    v.map(|v| u32_of(what, v)).transpose()
}

pub(crate) fn get_col<T: rusqlite::types::FromSql>(row: &Row<'_>, idx: usize) -> Result<T> {
    get(row, idx)
}

pub(crate) fn u32_col(row: &Row<'_>, idx: usize, what: &str) -> Result<u32> {
    let v: i64 = get(row, idx)?;
    u32_of(what, v)
}
