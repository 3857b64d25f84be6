//! The operations layer: every operator and agent operation as a plain typed function.
//!
//! Each operation takes the [`Caller`](crate::auth::Caller) it acts for (and the state it
//! needs) plus typed inputs, checks the caller's role and charter scope itself, writes the
//! audit entry, and returns a typed record or an [`OpError`]. The admin API's handlers
//! ([`crate::api`]), the web UI's forms, Slack's interactive callback and the MCP endpoint
//! are adapters over these functions; nothing here knows HTTP.

use charter_core::config::Role;
use charter_store::StoreError;

use crate::auth::Caller;

pub mod approvals;
pub mod charters;
pub mod dead_letters;
pub mod escalations;
pub mod events;
pub mod rejected;
pub mod rollout;
pub mod tools;

pub use crate::record::requeue_soon;

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The object does not exist, or the caller's scope hides it.
    #[error("not found")]
    NotFound,
    /// The caller's role (or the approval's reviewers) does not allow it.
    #[error("forbidden")]
    Forbidden,
    /// The object's state does not allow it now.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The input is wrong; the message says how.
    #[error("bad request: {0}")]
    Invalid(String),
    /// A payload broke the charter's input contract; each entry names a JSON pointer.
    #[error("contract violation")]
    Contract {
        /// The kept payload's id, if it was kept.
        event_id: Option<String>,
        violations: Vec<String>,
    },
    /// The charter's backlog is over its bound; retry after this many seconds.
    #[error("backlog full; retry later")]
    BacklogFull { retry_after: u64 },
    /// The store is closed: the server is shutting down.
    #[error("shutting down")]
    Unavailable,
    /// Something failed inside (the store, serialisation); logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed => OpError::Unavailable,
            StoreError::NotFound(_) => OpError::NotFound,
            other => OpError::Internal(other.to_string()),
        }
    }
}

/// Errors of the ingest path and older helpers that still answer in HTTP terms, read back
/// as domain errors (the HTTP mapping of [`OpError`] gives the same answer again).
impl From<crate::error::ApiError> for OpError {
    fn from(e: crate::error::ApiError) -> Self {
        use crate::error::ApiError as A;
        match e {
            A::NotFound => OpError::NotFound,
            A::Forbidden | A::Unauthorized => OpError::Forbidden,
            A::BadRequest(m) => OpError::Invalid(m),
            A::Conflict(m) => OpError::Conflict(m),
            A::Contract {
                event_id,
                violations,
            } => OpError::Contract {
                event_id,
                violations,
            },
            A::BacklogFull { retry_after } => OpError::BacklogFull { retry_after },
            A::Unavailable => OpError::Unavailable,
            other => OpError::Internal(other.to_string()),
        }
    }
}

/// `Ok` when `caller`'s role includes `need`, else [`OpError::Forbidden`].
pub fn require(caller: &Caller, need: Role) -> Result<(), OpError> {
    if caller.may(need) {
        Ok(())
    } else {
        Err(OpError::Forbidden)
    }
}

/// An object id as the API names it: a UUID, or nothing that exists.
pub fn parse_id(id: &str) -> Result<uuid::Uuid, OpError> {
    uuid::Uuid::parse_str(id).map_err(|_| OpError::NotFound)
}

/// A listing's `limit`: 100 when absent, at most 10,000.
pub fn listing_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(100).min(10_000)
}

/// Append one entry to the audit log (see [`crate::record::audit`]).
pub async fn audit<S: charter_store::Store>(
    state: &crate::AppState<S>,
    actor: &str,
    action: &str,
    charter: Option<&str>,
    target: Option<String>,
    detail: serde_json::Value,
) -> Result<(), OpError> {
    Ok(crate::record::audit(state, actor, action, charter, target, detail).await?)
}
