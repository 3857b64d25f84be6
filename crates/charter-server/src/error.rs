//! The one error type HTTP handlers return, with an explicit status mapping. Internal error
//! text (store, I/O) is logged, never sent to clients.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden")]
    Forbidden,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// Input broke a contract; each entry names a JSON pointer.
    #[error("contract violation")]
    Contract {
        /// The kept payload's id; `None` when the charter's cap left it unkept.
        event_id: Option<String>,
        violations: Vec<String>,
    },
    #[error("conflict: {0}")]
    Conflict(String),
    /// Something failed inside; the message is logged only.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("shutting down")]
    Unavailable,
    /// The request body did not arrive within `server.body_timeout`.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// Over a rate limit; retry after this many seconds.
    #[error("too many requests; retry later")]
    TooManyRequests { retry_after: u64 },
    /// The charter's backlog is over a bound (`server.backlog`); retry after this many
    /// seconds. Nothing was stored.
    #[error("backlog full; retry later")]
    BacklogFull { retry_after: u64 },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Contract { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BacklogFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<charter_store::StoreError> for ApiError {
    fn from(e: charter_store::StoreError) -> Self {
        match e {
            charter_store::StoreError::Closed => ApiError::Unavailable,
            charter_store::StoreError::NotFound(_) => ApiError::NotFound,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                json!({"error": "internal error"})
            }
            ApiError::Contract {
                event_id,
                violations,
            } => json!({
                "error": "payload violates the charter's input contract",
                "rejected_id": event_id,
                "violations": violations,
            }),
            ApiError::BadRequest(m) => json!({"error": m}),
            ApiError::UnsupportedMediaType(m) => json!({"error": m}),
            ApiError::Conflict(m) => json!({"error": m}),
            other => json!({"error": other.to_string()}),
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after } | ApiError::BacklogFull { retry_after } =
            self
            && let Ok(v) = axum::http::HeaderValue::from_str(&retry_after.max(1).to_string())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        response
    }
}
