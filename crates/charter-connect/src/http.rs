//! One outbound HTTP attempt: preparing the request and classifying the outcome.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url, redirect};

use crate::connector::{ResolvedAuth, ResolvedHttpConnector};
use crate::retry::parse_retry_after;

/// Per-attempt timeout when neither the action nor a connector sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this much of a response body is kept in [`AttemptOutcome::body`].
pub const BODY_KEEP_BYTES: usize = 64 * 1024;
/// Reading a response body stops after this many bytes (the rest is never read).
pub const BODY_READ_LIMIT: usize = 1024 * 1024;
/// Length of [`AttemptOutcome::body_excerpt`].
pub const BODY_EXCERPT_BYTES: usize = 512;

const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
const CONTENT_TYPE: &str = "Content-Type";
const AUTHORIZATION: &str = "Authorization";

/// Errors building the executor or preparing a request. Messages name headers, never
/// their values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnectError {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("invalid HTTP method {0:?}")]
    InvalidMethod(String),
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    #[error("URL scheme {0:?} is not allowed (http or https only)")]
    UnsupportedScheme(String),
    #[error("connector {connector}: the action target must be a path, not an absolute URL")]
    AbsoluteTargetWithConnector { connector: String },
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
    #[error("invalid value for header {name}")]
    InvalidHeaderValue { name: String },
    #[error("empty idempotency key")]
    EmptyIdempotencyKey,
    /// The rendered path has a `.` or `..` segment (also spelled `%2e`, or appearing once
    /// the path is percent-decoded, as in `..%2F..%2Fadmin`): it would address another
    /// resource than the one the template names. Nothing is sent.
    #[error(
        "the rendered path `{path}` has a `.` or `..` segment (also counted once percent-decoded); refused, nothing sent"
    )]
    DotSegment { path: String },
    /// The request would leave the connector's base URL (another origin, or a path outside
    /// the base path). Nothing is sent.
    #[error(
        "connector {connector}: the rendered request `{path}` leaves the connector's base URL `{base}`; refused, nothing sent"
    )]
    OutsideBase {
        connector: String,
        path: String,
        base: String,
    },
}

/// One prepared request (already rendered by the worker), ready for
/// [`HttpExecutor::attempt`]. Build it with [`HttpExecutor::prepare`].
#[derive(Clone, PartialEq)]
pub struct HttpRequest {
    /// Upper-case HTTP method.
    pub method: String,
    /// Absolute http(s) URL, parsed once when the request is prepared (every attempt reuses
    /// it: the SSRF guard and the HTTP client both take the parsed form).
    pub url: Url,
    /// Final headers: connector defaults, action headers, auth, `Idempotency-Key`,
    /// `Content-Type`.
    pub headers: Vec<(String, String)>,
    /// JSON body, if any.
    pub json: Option<serde_json::Value>,
    /// Timeout for the whole attempt (connect, send, read the capped body).
    pub timeout: Duration,
    /// Names of headers whose values are secrets (the auth header). They are redacted in
    /// `Debug` and marked sensitive for the HTTP stack; callers recording a request must
    /// leave them out.
    pub sensitive_headers: Vec<String>,
    /// Whether loopback/private destinations are allowed (the connector's `allow_private`).
    /// Without a connector this is false: absolute URLs always go through the guard.
    pub allow_private: bool,
}

impl HttpRequest {
    /// Whether `name` (any case) carries a secret.
    pub fn is_sensitive(&self, name: &str) -> bool {
        self.sensitive_headers
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name))
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let shown = if self.is_sensitive(k) {
                    "[redacted]"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field("headers", &headers)
            .field("json", &self.json)
            .field("timeout", &self.timeout)
            .field("allow_private", &self.allow_private)
            .finish()
    }
}

/// The result of one attempt, classified for the worker.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptOutcome {
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// A 2xx response arrived.
    pub ok: bool,
    /// Worth another attempt: network error, timeout, 408, 429 or 5xx.
    pub retryable: bool,
    /// From the response's `Retry-After` (seconds or HTTP-date).
    pub retry_after: Option<Duration>,
    /// Short description of the failure: no secrets, no header values, no body dump.
    pub error: Option<String>,
    /// The first [`BODY_EXCERPT_BYTES`] of the response body (lossy UTF-8), if non-empty.
    pub body_excerpt: Option<String>,
    /// The response body, at most [`BODY_KEEP_BYTES`]; untrusted input.
    pub body: Vec<u8>,
    /// The body was longer than what is kept (or could not be read completely).
    pub body_truncated: bool,
    /// Wall time of the attempt.
    pub duration: Duration,
}

impl AttemptOutcome {
    fn failed(error: String, retryable: bool, started: Instant) -> Self {
        AttemptOutcome {
            status: None,
            ok: false,
            retryable,
            retry_after: None,
            error: Some(error),
            body_excerpt: None,
            body: Vec::new(),
            body_truncated: false,
            duration: started.elapsed(),
        }
    }
}

/// Sends prepared requests. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct HttpExecutor {
    /// Resolves through the SSRF guard; used unless a connector allows private addresses.
    guarded: reqwest::Client,
    /// No address checks; only for connectors with `allow_private: true`.
    open: reqwest::Client,
}

impl HttpExecutor {
    /// Clients that follow no redirects and ignore proxy environment variables; the
    /// default one connects only to addresses the SSRF guard accepted.
    pub fn new() -> Result<Self, ConnectError> {
        crate::install_crypto_provider();
        let builder = || {
            reqwest::Client::builder()
                .redirect(redirect::Policy::none())
                .no_proxy()
                .user_agent(concat!("charter/", env!("CARGO_PKG_VERSION")))
        };
        let guarded = builder()
            .dns_resolver(std::sync::Arc::new(crate::ssrf::GuardedResolver))
            .build()
            .map_err(|e| ConnectError::Client(root_cause(&e)))?;
        let open = builder()
            .build()
            .map_err(|e| ConnectError::Client(root_cause(&e)))?;
        Ok(HttpExecutor { guarded, open })
    }

    /// Build the final request.
    ///
    /// With a connector, `target` is a path (and query) appended to its `base_url`; without
    /// one it must be an absolute http(s) URL. Headers are merged case-insensitively, later
    /// ones replacing earlier ones: connector defaults, then `headers` (the action's), then
    /// the connector's auth header, then `Idempotency-Key: <idempotency_key>`. With a JSON
    /// body, `Content-Type: application/json` is added unless the action set a content type.
    /// The timeout is `timeout`, else the connector's, else [`DEFAULT_TIMEOUT`].
    pub fn prepare(
        connector: Option<&ResolvedHttpConnector>,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        json: Option<serde_json::Value>,
        timeout: Option<Duration>,
        idempotency_key: &str,
    ) -> Result<HttpRequest, ConnectError> {
        let method = method.trim().to_ascii_uppercase();
        if method.is_empty() || Method::from_bytes(method.as_bytes()).is_err() {
            return Err(ConnectError::InvalidMethod(method));
        }
        if idempotency_key.is_empty() {
            return Err(ConnectError::EmptyIdempotencyKey);
        }
        let url = build_url(connector, target)?;

        let mut out: Vec<(String, String)> = Vec::new();
        let mut sensitive = Vec::new();
        if let Some(c) = connector {
            for (k, v) in &c.headers {
                set_header(&mut out, k, v.clone())?;
            }
        }
        for (k, v) in headers {
            set_header(&mut out, k, v.clone())?;
        }
        if let Some(auth) = connector.and_then(|c| c.auth.as_ref()) {
            let (name, value) = match auth {
                ResolvedAuth::Bearer(token) => {
                    (AUTHORIZATION, format!("Bearer {}", token.expose()))
                }
                ResolvedAuth::Basic { username, password } => {
                    let raw = format!("{username}:{}", password.expose());
                    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                    (AUTHORIZATION, format!("Basic {encoded}"))
                }
                ResolvedAuth::Header { name, value } => (name.as_str(), value.expose().to_string()),
            };
            set_header(&mut out, name, value)?;
            sensitive.push(name.to_string());
        }
        set_header(&mut out, IDEMPOTENCY_KEY, idempotency_key.to_string())?;
        if json.is_some()
            && !out
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(CONTENT_TYPE))
        {
            out.push((CONTENT_TYPE.to_string(), "application/json".to_string()));
        }

        let timeout = timeout
            .or(connector.map(|c| c.timeout))
            .unwrap_or(DEFAULT_TIMEOUT);
        Ok(HttpRequest {
            method,
            url,
            headers: out,
            json,
            timeout,
            sensitive_headers: sensitive,
            allow_private: connector.is_some_and(|c| c.allow_private),
        })
    }

    /// Send once and classify the outcome. Never panics and never retries.
    pub async fn attempt(&self, req: &HttpRequest) -> AttemptOutcome {
        self.attempt_keeping(req, BODY_KEEP_BYTES).await
    }

    /// [`HttpExecutor::attempt`], keeping up to `keep` bytes of the response body (at most
    /// [`BODY_READ_LIMIT`]) instead of [`BODY_KEEP_BYTES`]: for callers that read the
    /// answer, such as a polled API page.
    pub async fn attempt_keeping(&self, req: &HttpRequest, keep: usize) -> AttemptOutcome {
        let keep = keep.min(BODY_READ_LIMIT);
        let started = Instant::now();
        let builder = match self.request_builder(req) {
            Ok(b) => b,
            Err(error) => return AttemptOutcome::failed(error, false, started),
        };
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                let (error, retryable) = describe_send_error(&e, req.timeout);
                tracing::debug!(method = %req.method, error = %error, "http attempt failed");
                return AttemptOutcome::failed(error, retryable, started);
            }
        };

        let status = response.status();
        let code = status.as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let (body, truncated, body_error) = read_body(response, keep).await;

        let ok = status.is_success();
        let retryable = !ok && (code == 408 || code == 429 || status.is_server_error());
        let error = if ok {
            if let Some(e) = &body_error {
                // The request was accepted; an incomplete body does not undo that.
                tracing::warn!(status = code, error = %e, "response body incomplete");
            }
            None
        } else {
            Some(status_error(status, body_error))
        };
        let body_excerpt = (!body.is_empty()).then(|| {
            String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT_BYTES)]).into_owned()
        });
        let duration = started.elapsed();
        tracing::debug!(method = %req.method, status = code, ?duration, "http attempt");
        AttemptOutcome {
            status: Some(code),
            ok,
            retryable,
            retry_after,
            error,
            body_excerpt,
            body,
            body_truncated: truncated,
            duration,
        }
    }

    /// The request ready to send: method, headers (sensitive ones marked), timeout and JSON
    /// body, on the client that guards private addresses unless the request allows them.
    /// An error says why it cannot be sent (never retryable).
    fn request_builder(&self, req: &HttpRequest) -> Result<reqwest::RequestBuilder, String> {
        let method =
            Method::from_bytes(req.method.as_bytes()).map_err(|_| "invalid HTTP method")?;
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("invalid header name {k:?}"))?;
            let mut value =
                HeaderValue::from_str(v).map_err(|_| format!("invalid value for header {k}"))?;
            if req.is_sensitive(k) {
                value.set_sensitive(true);
            }
            headers.append(name, value);
        }
        let client = if req.allow_private {
            &self.open
        } else {
            crate::ssrf::check_url(&req.url).map_err(|refused| refused.to_string())?;
            &self.guarded
        };
        let mut builder = client
            .request(method, req.url.clone())
            .headers(headers)
            .timeout(req.timeout);
        if let Some(json) = &req.json {
            let bytes =
                serde_json::to_vec(json).map_err(|e| format!("cannot encode JSON body: {e}"))?;
            builder = builder.body(bytes);
        }
        Ok(builder)
    }
}

/// Read a response body with caps: keep `keep` bytes, stop after [`BODY_READ_LIMIT`]. The
/// bytes kept, whether any were left out, and why the read stopped early, if it failed.
async fn read_body(
    mut response: reqwest::Response,
    keep: usize,
) -> (Vec<u8>, bool, Option<String>) {
    let mut body = Vec::new();
    let mut read = 0usize;
    let mut truncated = false;
    let mut body_error = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read = read.saturating_add(chunk.len());
                let room = keep.saturating_sub(body.len());
                if chunk.len() > room {
                    truncated = true;
                }
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if read >= BODY_READ_LIMIT {
                    truncated = true;
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                truncated = true;
                body_error = Some(if e.is_timeout() {
                    "timed out reading the response body".to_string()
                } else {
                    format!("response body read failed: {}", root_cause(&e))
                });
                break;
            }
        }
    }
    (body, truncated, body_error)
}

/// The error of a response that is not a success: `HTTP <code> <reason>`, a note on
/// redirects, and the body's read error if any.
fn status_error(status: reqwest::StatusCode, body_error: Option<String>) -> String {
    let mut msg = format!("HTTP {}", status.as_u16());
    if let Some(reason) = status.canonical_reason() {
        msg.push(' ');
        msg.push_str(reason);
    }
    if status.is_redirection() {
        msg.push_str(" (redirects are not followed)");
    }
    if let Some(e) = body_error {
        msg.push_str("; ");
        msg.push_str(&e);
    }
    msg
}

/// The URL a rendered `target` addresses (see [`HttpExecutor::prepare`]), refused when its
/// path has a dot segment, or, with a connector, when it leaves the connector's base URL
/// (scheme, host and port, and the base path as a whole-segment prefix) after the URL
/// parser's normalisation. The worker calls it before recording or gating an action, so a
/// refused target is never sent, approved or recorded as would-run.
pub fn target_url(
    connector: Option<&ResolvedHttpConnector>,
    target: &str,
) -> Result<Url, ConnectError> {
    build_url(connector, target)
}

/// Whether the path part of `target` (before `?` or `#`) has a `.` or `..` segment, also
/// once percent-decoded (up to three times): `%2e` is a dot to the URL parser, and a
/// downstream that decodes `%2F` before routing would see `..%2F..%2Fadmin` as two `..`
/// segments. A backslash separates segments as `/` does in http URLs.
fn has_dot_segment(target: &str) -> bool {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let dotted = |text: &str| {
        text.split(['/', '\\'])
            .any(|segment| segment == "." || segment == "..")
    };
    let mut text = path.to_string();
    for _ in 0..4 {
        if dotted(&text) {
            return true;
        }
        let decoded = percent_decode(&text);
        if decoded == text {
            break;
        }
        text = decoded;
    }
    false
}

/// `s` with every `%XY` (hex) replaced by its byte (lossy UTF-8).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path of `url` lies under `base`'s path: equal, or `base`'s path followed by `/...`.
fn under_base(url: &Url, base: &Url) -> bool {
    if url.scheme() != base.scheme()
        || url.host() != base.host()
        || url.port_or_known_default() != base.port_or_known_default()
    {
        return false;
    }
    let base_path = base.path().trim_end_matches('/');
    let path = url.path();
    base_path.is_empty()
        || path == base_path
        || path
            .strip_prefix(base_path)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn build_url(connector: Option<&ResolvedHttpConnector>, target: &str) -> Result<Url, ConnectError> {
    let target = target.trim();
    if has_dot_segment(target) {
        return Err(ConnectError::DotSegment {
            path: shorten(target),
        });
    }
    let joined = match connector {
        Some(c) => {
            if target.contains("://") || target.starts_with("//") {
                return Err(ConnectError::AbsoluteTargetWithConnector {
                    connector: c.name.clone(),
                });
            }
            let base = c.base_url.trim().trim_end_matches('/');
            if target.is_empty() || target.starts_with('?') || target.starts_with('#') {
                format!("{base}{target}")
            } else {
                format!("{base}/{}", target.trim_start_matches('/'))
            }
        }
        None => target.to_string(),
    };
    let url = Url::parse(&joined).map_err(|e| ConnectError::InvalidUrl(e.to_string()))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(ConnectError::UnsupportedScheme(other.to_string())),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConnectError::InvalidUrl("no host".to_string()));
    }
    if let Some(c) = connector {
        let base = Url::parse(c.base_url.trim())
            .map_err(|e| ConnectError::InvalidUrl(format!("base_url: {e}")))?;
        if !under_base(&url, &base) {
            return Err(ConnectError::OutsideBase {
                connector: c.name.clone(),
                path: shorten(target),
                base: base.as_str().to_string(),
            });
        }
    }
    Ok(url)
}

/// `s` cut to 200 bytes (at a character boundary) for an error message.
fn shorten(s: &str) -> String {
    let mut cut = s.len().min(200);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut < s.len() {
        format!("{}…", &s[..cut])
    } else {
        s.to_string()
    }
}

/// Set `name: value`, replacing any header of the same name (any case).
fn set_header(
    headers: &mut Vec<(String, String)>,
    name: &str,
    value: String,
) -> Result<(), ConnectError> {
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(ConnectError::InvalidHeaderName(name.to_string()));
    }
    if HeaderValue::from_str(&value).is_err() {
        return Err(ConnectError::InvalidHeaderValue {
            name: name.to_string(),
        });
    }
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    headers.push((name.to_string(), value));
    Ok(())
}

/// A short description of a failed send and whether it is worth retrying. Built from the
/// error kind and its innermost cause — never the URL or request headers.
fn describe_send_error(e: &reqwest::Error, timeout: Duration) -> (String, bool) {
    // A refusal by the SSRF guard is permanent: retrying cannot change the address.
    let mut current: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = current {
        if let Some(refused) = err.downcast_ref::<crate::ssrf::Refused>() {
            return (refused.to_string(), false);
        }
        current = err.source();
    }
    if e.is_timeout() {
        (format!("timed out after {} ms", timeout.as_millis()), true)
    } else if e.is_connect() {
        (format!("connection failed: {}", root_cause(e)), true)
    } else if e.is_builder() {
        (format!("invalid request: {}", root_cause(e)), false)
    } else if e.is_redirect() {
        (format!("redirect error: {}", root_cause(e)), false)
    } else {
        (format!("request failed: {}", root_cause(e)), true)
    }
}

/// The innermost error in the chain (for reqwest, without the URL).
fn root_cause(e: &reqwest::Error) -> String {
    let mut current: &dyn std::error::Error = e;
    let mut depth = 0;
    while let Some(next) = current.source() {
        current = next;
        depth += 1;
    }
    if depth == 0 {
        // No source: describe the error itself, without its URL.
        let mut text = e.to_string();
        if let Some(url) = e.url() {
            text = text.replace(url.as_str(), "<url>");
        }
        return text;
    }
    current.to_string()
}
