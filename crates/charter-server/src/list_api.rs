//! The API's paged listings: events, approvals, escalations, runs, rejected payloads and
//! the audit log, each with
//! `cursor`, `sort`, time-range filters, the listing's true `total` and a `next_cursor`
//! (absent on the last page). A token scoped to some charters pages and counts only theirs.

use axum::Json;
use axum::extract::{Query, State};
use charter_core::model::EventStatus;
use charter_store::{
    ApprovalFilter, ApprovalStatus, AuditFilter, EscalationFilter, EscalationStatus, EventFilter,
    RejectedFilter, RunFilter, Store,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::lists::{self, Page};

/// The listing's answer: the rows under `key`, the total and the next page's cursor.
fn answer<T: serde::Serialize>(key: &str, page: Page<T>) -> Json<Value> {
    Json(json!({ key: page.items, "total": page.total, "next_cursor": page.next }))
}

/// A scoped caller asking for a charter it does not see gets an empty listing.
fn hidden(caller: &Caller, charter: Option<&String>) -> bool {
    charter.is_some_and(|c| !caller.sees(c))
}

fn empty(key: &str) -> Json<Value> {
    Json(json!({ key: [], "total": 0, "next_cursor": null }))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    pub charter: Option<String>,
    pub status: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Events whose id starts with these hexadecimal digits.
    pub id_prefix: Option<String>,
    /// Events with exactly this dedupe key (any charter).
    pub dedupe_key: Option<String>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /api/v1/events`: newest first (unless `sort=oldest`), paged.
pub async fn list_events<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(EventStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown status `{s}`: expected pending, processing, done, failed or waiting"
            ))
        })?),
    };
    if let Some(p) = &q.id_prefix
        && charter_store::uuid_prefix_range(p).is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "id_prefix `{p}` is not 1 to 32 hexadecimal digits"
        )));
    }
    let sort = lists::parse_sort(q.sort.as_deref())?;
    let after = lists::event_cursor(q.cursor.as_deref())?;
    if hidden(&caller, q.charter.as_ref()) {
        return Ok(empty("events"));
    }
    let page = lists::events(
        &state.store,
        EventFilter {
            charter: q.charter,
            status,
            since: q.since,
            until: q.until,
            charters: caller.charters.clone(),
            id_prefix: q.id_prefix,
            dedupe_key: q.dedupe_key,
            sort,
            after,
            limit: lists::page_size(q.limit),
        },
    )
    .await?;
    Ok(answer("events", page))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    pub charter: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /api/v1/audit`: newest first, paged. A token scoped to some charters sees only their
/// entries (entries not tied to a charter are shown to unscoped tokens only).
pub async fn list_audit<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let sort = lists::parse_sort(q.sort.as_deref())?;
    let after = lists::seq_cursor(q.cursor.as_deref())?;
    if hidden(&caller, q.charter.as_ref()) {
        return Ok(empty("audit"));
    }
    let page = lists::audit(
        &state.store,
        AuditFilter {
            charter: q.charter,
            actor: q.actor,
            action: q.action,
            charters: caller.charters.clone(),
            since: q.since,
            until: q.until,
            sort,
            after,
            limit: lists::page_size(q.limit),
            ..AuditFilter::default()
        },
    )
    .await?;
    Ok(answer("audit", page))
}

#[derive(Debug, Deserialize)]
pub struct ApprovalsQuery {
    pub charter: Option<String>,
    /// `pending` (default), `approved`, `rejected`, `expired` or `all`.
    pub status: Option<String>,
    pub action: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /api/v1/approvals?charter=&status=`: oldest first, paged.
pub async fn list_approvals<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Query(q): Query<ApprovalsQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref() {
        None => Some(ApprovalStatus::Pending),
        Some("all") => None,
        Some(s) => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown status `{s}`: expected pending, approved, rejected, expired or all"
            ))
        })?),
    };
    let sort = lists::parse_sort(q.sort.as_deref())?;
    let after = lists::created_cursor(q.cursor.as_deref())?;
    if hidden(&caller, q.charter.as_ref()) {
        return Ok(empty("approvals"));
    }
    let page = lists::approvals(
        &state.store,
        ApprovalFilter {
            charter: q.charter,
            status,
            charters: caller.charters.clone(),
            action: q.action,
            since: q.since,
            until: q.until,
            sort,
            after,
            limit: lists::page_size(q.limit),
            ..ApprovalFilter::default()
        },
    )
    .await?;
    Ok(answer("approvals", page))
}

#[derive(Debug, Deserialize)]
pub struct EscalationsQuery {
    pub charter: Option<String>,
    /// `open` (default), `resolved` or `all`.
    pub status: Option<String>,
    /// `dead_letter`, `low_confidence`, ...
    pub reason: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /api/v1/escalations?charter=&status=&reason=`: oldest first, paged.
pub async fn list_escalations<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Query(q): Query<EscalationsQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref() {
        None => Some(EscalationStatus::Open),
        Some("all") => None,
        Some(s) => Some(EscalationStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown status `{s}`: expected open, resolved or all"
            ))
        })?),
    };
    let sort = lists::parse_sort(q.sort.as_deref())?;
    let after = lists::created_cursor(q.cursor.as_deref())?;
    if hidden(&caller, q.charter.as_ref()) {
        return Ok(empty("escalations"));
    }
    let page = lists::escalations(
        &state.store,
        EscalationFilter {
            charter: q.charter,
            status,
            charters: caller.charters.clone(),
            reason: q.reason,
            since: q.since,
            until: q.until,
            sort,
            after,
            limit: lists::page_size(q.limit),
            ..EscalationFilter::default()
        },
    )
    .await?;
    Ok(answer("escalations", page))
}

#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    pub charter: Option<String>,
    /// A run outcome, or `running` for runs not finished yet.
    pub outcome: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /api/v1/runs`: runs across events, newest first (by start), paged.
pub async fn list_runs<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    let (outcome, running) = lists::parse_outcome(q.outcome.as_deref())?;
    let sort = lists::parse_sort(q.sort.as_deref())?;
    let after = lists::created_cursor(q.cursor.as_deref())?;
    if hidden(&caller, q.charter.as_ref()) {
        return Ok(empty("runs"));
    }
    let page = lists::runs(
        &state.store,
        RunFilter {
            charter: q.charter,
            outcome,
            running,
            since: q.since,
            until: q.until,
            charters: caller.charters.clone(),
            sort,
            after,
            limit: lists::page_size(q.limit),
        },
    )
    .await?;
    Ok(answer("runs", page))
}

#[derive(Debug, Deserialize)]
pub struct RejectedQuery {
    pub charter: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /api/v1/rejected`: payloads rejected by their contract, newest first, paged.
pub async fn list_rejected<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Query(q): Query<RejectedQuery>,
) -> Result<Json<Value>, ApiError> {
    let sort = lists::parse_sort(q.sort.as_deref())?;
    let after = lists::event_cursor(q.cursor.as_deref())?;
    if hidden(&caller, q.charter.as_ref()) {
        return Ok(empty("rejected"));
    }
    let page = lists::rejected(
        &state.store,
        RejectedFilter {
            charter: q.charter,
            charters: caller.charters.clone(),
            since: q.since,
            until: q.until,
            sort,
            after,
            limit: lists::page_size(q.limit),
        },
    )
    .await?;
    Ok(answer("rejected", page))
}
