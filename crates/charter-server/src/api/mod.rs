//! The admin API under `/api/v1` (JSON), used by the CLI: the route table and its HTTP
//! adapters over [`crate::ops`].
//!
//! Auth: when `charter.yaml` defines tokens, every request needs `Authorization: Bearer
//! <token>`; viewers may read, reviewers may also decide approvals and escalations and
//! reroute events to the manual queue, admins may also pause, resume, replay and change a
//! charter's mode (promote). A token scoped to some charters sees only those
//! (another charter's event, approval or escalation answers 404). An approval that names
//! `reviewers` can be decided only by a token of one of those names, or by an admin. With no
//! tokens defined the API is open, which is meant for local use only (the server warns when
//! it listens beyond loopback without tokens).
//!
//! Every route lives in [`routes`], the one table the router is built from and the OpenAPI
//! document (`GET /api/v1/openapi.json`, [`crate::openapi`]) is checked against. Each entry
//! names the role it needs ([`Need`]); [`crate::auth::require`] enforces it before the
//! handler runs and hands the handler its [`Caller`]. The handlers only read the request,
//! call the operation and write its typed answer as JSON; every decision, pause/resume,
//! mode change, reroute and replay is audited by the operation itself.

use axum::Json;
use axum::http::Method;
use axum::routing::MethodRouter;
use charter_core::config::Role;
use charter_store::Store;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;
use crate::ops::OpError;

pub mod charters;
pub mod decisions;
pub mod events;
pub mod rollout;

pub use crate::auth::Need;

/// A typed answer as the API's JSON: serialised through [`Value`], so object keys are in
/// sorted order as they always were.
pub(crate) fn reply<T: Serialize>(answer: T) -> Result<Json<Value>, ApiError> {
    serde_json::to_value(answer)
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// A request body read as `T`; `expected` shows the shape in the 400's message.
pub(crate) fn body<T: DeserializeOwned>(bytes: &[u8], expected: &str) -> Result<T, OpError> {
    serde_json::from_slice(bytes).map_err(|e| OpError::Invalid(format!("{expected}: {e}")))
}

/// An optional request body: empty (or blank) is `T::default()`.
pub(crate) fn optional_body<T: DeserializeOwned + Default>(
    bytes: &[u8],
    expected: &str,
) -> Result<T, OpError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        body(bytes, expected)
    }
}

// ---------------------------------------------------------------------------------------
// The route table
// ---------------------------------------------------------------------------------------

/// One admin API route: method, path (axum syntax, `{param}`), the role it needs and the
/// handler. `need` has no default: a route cannot be added without saying who may call it.
pub struct ApiRoute<S> {
    pub method: Method,
    pub path: &'static str,
    pub need: Need,
    pub handler: MethodRouter<AppState<S>>,
}

/// A route of the table.
pub(crate) fn route<S>(
    method: Method,
    path: &'static str,
    need: Need,
    handler: MethodRouter<AppState<S>>,
) -> ApiRoute<S> {
    ApiRoute {
        method,
        path,
        need,
        handler,
    }
}

/// Read access: a viewer's token (or better).
pub(crate) const VIEWER: Need = Need::Role(Role::Viewer);
/// Deciding approvals, escalations, samples; rerouting: a reviewer's token (or an admin's).
pub(crate) const REVIEWER: Need = Need::Role(Role::Reviewer);
/// Operating charters: an admin's token.
pub(crate) const ADMIN: Need = Need::Role(Role::Admin);

/// Every `/api/v1` route, in one place: [`crate::router`] registers exactly these (each
/// behind [`crate::auth::require`] with its `need`), and the OpenAPI test compares them with
/// the document's paths and methods.
pub fn routes<S: Store>() -> Vec<ApiRoute<S>> {
    let mut all = vec![route(
        Method::GET,
        "/api/v1/openapi.json",
        Need::Public,
        axum::routing::get(crate::openapi::serve),
    )];
    all.extend(events::routes());
    all.extend(charters::routes());
    all.extend(decisions::routes());
    all.extend(listing_routes());
    all.extend(knowledge_routes());
    all.extend(rollout::routes());
    all
}

/// The paged listings ([`crate::list_api`]).
fn listing_routes<S: Store>() -> Vec<ApiRoute<S>> {
    use crate::list_api as l;
    use axum::routing::get;
    vec![
        route(
            Method::GET,
            "/api/v1/events",
            VIEWER,
            get(l::list_events::<S>),
        ),
        route(Method::GET, "/api/v1/runs", VIEWER, get(l::list_runs::<S>)),
        route(
            Method::GET,
            "/api/v1/rejected",
            VIEWER,
            get(l::list_rejected::<S>),
        ),
        route(
            Method::GET,
            "/api/v1/approvals",
            VIEWER,
            get(l::list_approvals::<S>),
        ),
        route(
            Method::GET,
            "/api/v1/escalations",
            VIEWER,
            get(l::list_escalations::<S>),
        ),
        route(
            Method::GET,
            "/api/v1/audit",
            VIEWER,
            get(l::list_audit::<S>),
        ),
    ]
}

/// The knowledge routes ([`crate::knowledge::api`]).
fn knowledge_routes<S: Store>() -> Vec<ApiRoute<S>> {
    use crate::knowledge::api as k;
    use axum::routing::{get, post};
    vec![
        route(
            Method::GET,
            "/api/v1/knowledge/sources",
            VIEWER,
            get(k::list_sources::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/knowledge/sources/{name}/refresh",
            ADMIN,
            post(k::refresh::<S>),
        ),
        route(
            Method::GET,
            "/api/v1/knowledge/gaps",
            VIEWER,
            get(k::list_gaps::<S>),
        ),
        route(
            Method::GET,
            "/api/v1/knowledge/search",
            VIEWER,
            get(k::search::<S>),
        ),
    ]
}

/// The HTTP answer to a failed operation: 404, 403, 409, 400, 422 (with the kept payload's
/// id and the violations), 503 with `Retry-After`, 503, 500.
impl From<crate::ops::OpError> for ApiError {
    fn from(e: crate::ops::OpError) -> Self {
        use crate::ops::OpError as O;
        match e {
            O::NotFound => ApiError::NotFound,
            O::Forbidden => ApiError::Forbidden,
            O::Conflict(m) => ApiError::Conflict(m),
            O::Invalid(m) => ApiError::BadRequest(m),
            O::Contract {
                event_id,
                violations,
            } => ApiError::Contract {
                event_id,
                violations,
            },
            O::BacklogFull { retry_after } => ApiError::BacklogFull { retry_after },
            O::Unavailable => ApiError::Unavailable,
            O::Internal(m) => ApiError::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use charter_store::sqlite::SqliteStore;

    /// Deny by default, in the table: only the OpenAPI document is public, every write
    /// needs at least a reviewer, and what only admins did before still needs an admin.
    #[test]
    fn every_route_names_the_role_it_needs() {
        let table = routes::<SqliteStore>();
        for r in &table {
            let public = r.need == Need::Public;
            assert_eq!(public, r.path == "/api/v1/openapi.json", "{}", r.path);
            if r.method == Method::POST {
                assert!(
                    matches!(r.need, Need::Role(Role::Reviewer | Role::Admin)),
                    "{} {}",
                    r.method,
                    r.path
                );
            }
        }
        let need = |m: Method, p: &str| {
            table
                .iter()
                .find(|r| r.method == m && r.path == p)
                .map(|r| r.need)
        };
        for admin in [
            "/api/v1/events/{id}/replay",
            "/api/v1/events/{id}/rerun",
            "/api/v1/replay",
            "/api/v1/rejected/{id}/replay",
            "/api/v1/charters/{name}/pause",
            "/api/v1/charters/{name}/resume",
            "/api/v1/charters/{name}/promote",
            "/api/v1/charters/{name}/mode",
            "/api/v1/charters/{name}/routes/{route}/mode",
            "/api/v1/knowledge/sources/{name}/refresh",
        ] {
            assert_eq!(need(Method::POST, admin), Some(ADMIN), "{admin}");
        }
        for reviewer in [
            "/api/v1/approvals/{id}/approve",
            "/api/v1/approvals/{id}/reject",
            "/api/v1/escalations/{id}/decide",
            "/api/v1/escalations/{id}/retry",
            "/api/v1/escalations/{id}/dismiss",
            "/api/v1/events/{id}/reroute",
            "/api/v1/samples/{id}/review",
        ] {
            assert_eq!(need(Method::POST, reviewer), Some(REVIEWER), "{reviewer}");
        }
    }
}
