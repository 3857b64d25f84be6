//! Access control in one place: who is calling ([`Caller`]), what a role allows
//! ([`allows`]), which charters a caller sees ([`sees`]), and the bearer-token check of the
//! admin API ([`authorize`], applied to every `/api/v1` route by [`layer`] from the role
//! column of the route table, [`crate::api::routes`]).
//!
//! Every front end builds a [`Caller`]: the admin API from the bearer token, the web UI from
//! its session (`From<&Session>` in [`crate::ui::session`]), Slack from the connector's
//! `users:` mapping, MCP from the agent's token. The operations in [`crate::ops`] take that
//! caller and check roles and scopes themselves, so the answer is the same whichever front
//! end asks.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use charter_core::config::Role;
use charter_store::Store;

use crate::AppState;
use crate::error::ApiError;

/// Who is calling, after the token (or session) check.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// Charters visible to this caller; empty = all.
    pub charters: Vec<String>,
    /// The reviewer name this caller decides as when it differs from `name`: a Slack user
    /// (`name` `slack:U024BE7LH`) mapped to a token decides as that token's name.
    pub reviewer_as: Option<String>,
}

impl Caller {
    /// The caller of an open server (no tokens configured): `local`, admin, every charter.
    pub fn local() -> Caller {
        Caller {
            name: "local".into(),
            role: Role::Admin,
            charters: vec![],
            reviewer_as: None,
        }
    }

    /// Whether this caller may see `charter`'s objects.
    pub fn sees(&self, charter: &str) -> bool {
        sees(&self.charters, charter)
    }

    /// Whether this caller's role includes `need`.
    pub fn may(&self, need: Role) -> bool {
        allows(self.role, need)
    }
}

/// Whether a caller scoped to `scopes` (empty: every charter) sees `charter`. The one copy
/// of the rule, for API callers and UI sessions alike.
pub fn sees(scopes: &[String], charter: &str) -> bool {
    scopes.is_empty() || scopes.iter().any(|c| c == charter)
}

/// Whether `role` includes what `need` allows (admin > reviewer > viewer > agent).
pub fn allows(role: Role, need: Role) -> bool {
    role >= need
}

/// Compare two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0
}

/// Check the bearer token and the role it needs.
pub fn authorize<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    need: Role,
) -> Result<Caller, ApiError> {
    let tokens = &state.runtime.tokens;
    if tokens.is_empty() {
        return Ok(Caller::local());
    }
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials)
        .ok_or(ApiError::Unauthorized)?;
    let mut found = None;
    for (def, secret) in tokens {
        if constant_time_eq(presented.as_bytes(), secret.as_bytes()) {
            found = Some(def);
        }
    }
    let def = found.ok_or(ApiError::Unauthorized)?;
    if !allows(def.role, need) {
        return Err(ApiError::Forbidden);
    }
    Ok(Caller {
        name: def.name.clone(),
        role: def.role,
        charters: def.charters.clone(),
        reviewer_as: None,
    })
}

/// The credentials of an `Authorization: Bearer <token>` value. The scheme is matched
/// without regard to case (RFC 9110, section 11.1) and surrounding blanks are ignored.
pub fn bearer_credentials(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start();
    (!token.is_empty()).then_some(token)
}

/// What a route of the admin API asks of its caller: nothing (the OpenAPI document) or a
/// token of at least a role. Every entry of the route table names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No token needed: the route holds no data.
    Public,
    /// A token with at least this role.
    Role(Role),
}

/// The one layer that enforces the route table's role column: the caller's token is
/// checked before the handler runs (401 without a valid token, 403 below `need`), and the
/// [`Caller`] is handed to the handler through the request's extensions.
pub async fn require<S: Store>(
    State((state, need)): State<(AppState<S>, Need)>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Need::Role(role) = need {
        match authorize(&state, request.headers(), role) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
            }
            Err(e) => return e.into_response(),
        }
    }
    next.run(request).await
}

/// A handler's caller, as [`require`] found it. A handler on a route without a role (or
/// outside the table) gets no caller: refused, never served as anyone.
impl<T: Send + Sync> FromRequestParts<T> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &T) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}
