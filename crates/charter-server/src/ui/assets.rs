//! The UI's one static script, served from this origin so the content security policy can
//! allow scripts from `'self'` and nothing inline.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The inbox's keyboard shortcuts and live counts (see the file's header).
pub const INBOX_JS: &str = include_str!("assets/inbox.js");

/// `GET /assets/inbox.js`.
pub async fn inbox_js() -> Response {
    let mut r = INBOX_JS.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
