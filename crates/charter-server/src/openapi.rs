//! The OpenAPI 3.1 document of the admin API, served at `GET /api/v1/openapi.json`.
//!
//! The document is written by hand (`openapi.json` next to this file) rather than derived,
//! so it needs no macro dependency. It is kept honest by `tests/it/openapi.rs`: the set of
//! (method, path) it documents must equal [`crate::api::routes`], the table the router is
//! built from, and every documented GET answers as documented, its JSON validated against
//! the documented schema.

use axum::http::header;
use axum::response::IntoResponse;

/// The document's text (JSON).
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /api/v1/openapi.json` (no token needed: it describes the API, it holds no data).
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
