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
    let id: String = get(row, 0)?;
    let headers: String = get(row, 6)?;
    let payload: String = get(row, 7)?;
    let status: String = get(row, 8)?;
    let attempts: i64 = get(row, 9)?;
    Ok(EventRecord {
        event: NewEvent {
            id: parse_uuid(&id)?,
            charter: get(row, 1)?,
            source: get(row, 2)?,
            event_type: get(row, 3)?,
            dedupe_key: get(row, 4)?,
            received_at: get(row, 5)?,
            headers: parse_json::<BTreeMap<String, String>>("headers", &headers)?,
            payload: parse_json("payload", &payload)?,
        },
        status: EventStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown event status {status:?}")))?,
        attempts: u32_of("attempts", attempts)?,
        updated_at: get(row, 10)?,
    })
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
