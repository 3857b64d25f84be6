//! The web UI: server-rendered HTML pages and plain forms (POST, then a redirect), so it
//! works without JavaScript and needs no build step.
//!
//! Pages: `/login`, `/inbox` (approvals and escalations waiting for a human, oldest first),
//! `/events` (filters and search), `/events/{id}` (the run timeline), `/charters` and
//! `/charters/{name}` (status, counts, operator buttons, the time-range replay form and the
//! shadow-mode record), `/rollout/{name}` and `/rollout/{name}/review` (routes, modes,
//! reviews of sampled runs and draft rewrites: [`rollout`]).
//!
//! Auth: a user logs in with one of the API tokens from `charter.yaml`; the session (see
//! [`session`]) carries that token's name, role and charter scopes, and every change goes
//! through the same admin-API handler the CLI uses, called with that token, so roles,
//! scopes, audit entries and re-queueing are exactly the API's: a viewer cannot decide, a
//! reviewer cannot pause, replay or promote (403), another charter's objects do not exist
//! (404). Every form carries the session's CSRF token and every POST without it is refused
//! (403). Failed logins are limited per client address (429); every login, successful or
//! not, is in the audit log (`ui.login`, `ui.login_failed`, with the client address, never
//! the token). With no tokens defined the UI
//! is open, like the API, and says so on every page.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use charter_core::config::Role;
use charter_store::Store;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

mod assets;
mod cards;
pub mod charts;
mod flash;
mod forms;
pub mod html;
mod pages;
pub mod rollout;
pub mod session;

// The pages at the paths the router and the form handlers name.
pub use pages::inbox;
pub(crate) use pages::knowledge;
use pages::{audit, rejected, runs};

use html::esc;
use session::{LOGIN_COOKIE, LoginLimiter, SESSION_COOKIE, SESSION_TTL, Session};

/// The user name of the open UI's sessions (no tokens configured).
const LOCAL_USER: &str = "local";

/// Largest form body the UI accepts.
const FORM_LIMIT: usize = 256 * 1024;

/// State of the UI handlers: the server's state (sessions are in its store) plus this
/// node's login rate limit.
pub struct UiState<S> {
    pub app: AppState<S>,
    pub logins: Arc<LoginLimiter>,
}

impl<S: Clone> Clone for UiState<S> {
    fn clone(&self) -> Self {
        UiState {
            app: self.app.clone(),
            logins: self.logins.clone(),
        }
    }
}

/// The UI's routes, ready to merge into the server's router.
pub fn router<S: Store>(state: AppState<S>) -> Router {
    let ui = UiState {
        app: state,
        logins: Arc::new(LoginLimiter::default()),
    };
    Router::new()
        .route("/", get(root::<S>))
        .route("/login", get(login_page::<S>).post(login::<S>))
        .route("/logout", post(logout::<S>))
        .route("/inbox", get(inbox::inbox::<S>))
        .route("/inbox/counts", get(inbox::counts_json::<S>))
        .route("/inbox/bulk-approve", post(forms::bulk_approve::<S>))
        .route("/audit", get(audit::audit::<S>))
        .route("/assets/inbox.js", get(assets::inbox_js))
        .route("/events", get(pages::events::<S>))
        .route("/events/{id}", get(pages::timeline::<S>))
        .route("/events/{id}/replay", post(replay_event::<S>))
        .route("/rejected", get(rejected::rejected::<S>))
        .route("/runs", get(runs::runs::<S>))
        .route("/knowledge", get(knowledge::page_handler::<S>))
        .route("/rejected/{id}/replay", post(replay_rejected::<S>))
        .route("/charters", get(pages::charters::<S>))
        .route("/charters/{name}", get(pages::charter::<S>))
        .route("/charters/{name}/pause", post(pause::<S>))
        .route("/charters/{name}/resume", post(resume::<S>))
        .route("/charters/{name}/replay", post(replay_failed::<S>))
        .route("/charters/{name}/replay-range", post(replay_range::<S>))
        .route("/charters/{name}/promote", post(promote::<S>))
        .route("/charters/{name}/demote", post(demote::<S>))
        .route("/events/{id}/reroute", post(reroute::<S>))
        .route("/approvals/{id}/approve", post(approve::<S>))
        .route("/approvals/{id}/reject", post(reject::<S>))
        .route("/escalations/{id}/decide", post(decide::<S>))
        .route("/rollout/{name}", get(rollout::page_rollout::<S>))
        .route("/rollout/{name}/review", get(rollout::page_review::<S>))
        .route(
            "/rollout/{name}/routes/{route}/mode",
            post(rollout::post_route_mode::<S>),
        )
        .route("/samples/{id}/review", post(rollout::post_review::<S>))
        .route("/escalations/{id}/retry", post(forms::retry::<S>))
        .route("/escalations/{id}/dismiss", post(forms::dismiss::<S>))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .with_state(ui)
}

/// Why a UI request was not served.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No (live) session: go to the login page, then back to `next`.
    #[error("login required")]
    Login { next: String },
    #[error("you do not have the role this needs")]
    Forbidden,
    #[error(
        "the form is stale or was not sent by this UI (CSRF check failed); reload the page and try again"
    )]
    Csrf,
    #[error("not found")]
    NotFound,
    #[error("too many failed logins from this address; wait a minute")]
    RateLimited,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl UiError {
    fn status(&self) -> StatusCode {
        match self {
            UiError::Login { .. } => StatusCode::SEE_OTHER,
            UiError::Forbidden | UiError::Csrf => StatusCode::FORBIDDEN,
            UiError::NotFound => StatusCode::NOT_FOUND,
            UiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::Api(e) => e.status(),
        }
    }
}

impl From<charter_store::StoreError> for UiError {
    fn from(e: charter_store::StoreError) -> Self {
        UiError::Api(e.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if let UiError::Login { next } = &self {
            return redirect(&format!("/login?next={}", html::url_enc(next)));
        }
        if let UiError::Api(ApiError::Unauthorized) = &self {
            return redirect("/login");
        }
        let status = self.status();
        let message = match &self {
            UiError::Api(ApiError::Internal(m)) => {
                tracing::error!(error = %m, "internal error in the UI");
                "Something failed inside the server; the details are in its log.".to_string()
            }
            UiError::Api(ApiError::BadRequest(m) | ApiError::Conflict(m)) => m.clone(),
            UiError::Api(ApiError::Forbidden) => UiError::Forbidden.to_string(),
            other => other.to_string(),
        };
        let body = format!(
            "<h1>{} {}</h1><div class=\"error\">{}</div><p><a href=\"/inbox\">Back to the inbox</a></p>",
            status.as_u16(),
            esc(status.canonical_reason().unwrap_or("")),
            esc(&message)
        );
        (status, Html(html::page("Error", None, None, &body))).into_response()
    }
}

/// A 303 redirect (the answer to every successful form POST).
fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Only same-site paths are followed after a login or a form (no open redirects).
fn local_path(p: Option<&str>, default: &str) -> String {
    match p {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_string(),
        _ => default.to_string(),
    }
}

/// Append a message code (see [`flash`]) for the next page to show.
fn with_msg(path: &str, code: &str) -> String {
    flash::with_code(path, code, None)
}

/// Append a message code with a count.
fn with_count(path: &str, code: &str, n: usize) -> String {
    flash::with_code(path, code, Some(n))
}

/// The client's address ([`crate::guard::ClientAddr`]: the peer, or the address a trusted
/// proxy forwarded; unspecified when the server provides neither, so every such client shares one login-limit bucket).
pub struct ClientIp(pub IpAddr);

impl<T: Send + Sync> FromRequestParts<T> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &T) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<crate::guard::ClientAddr>()
                .map(|c| c.0)
                .or_else(|| {
                    parts
                        .extensions
                        .get::<ConnectInfo<SocketAddr>>()
                        .map(|c| c.0.ip())
                })
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
        ))
    }
}

/// Whether the request came over https (as told by a proxy); cookies then get `Secure`.
fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

impl<S: Store> UiState<S> {
    /// The time zone pages show and forms read times in (`server.timezone`).
    pub fn zone(&self) -> &charter_core::cron::Zone {
        &self.app.runtime.project.settings.timezone
    }

    /// No tokens configured: the UI is open (local use).
    pub fn open(&self) -> bool {
        self.app.runtime.tokens.is_empty()
    }

    /// The request's live session, looked up in the store by its id's hash.
    async fn session(&self, headers: &HeaderMap) -> Result<Option<Session>, UiError> {
        let Some(id) = session::cookie_for(headers, SESSION_COOKIE, is_https(headers)) else {
            return Ok(None);
        };
        let Some(row) = self
            .app
            .store
            .session(&session::id_hash(&id), crate::now_millis())
            .await?
        else {
            return Ok(None);
        };
        // The session holds only while the open UI, or a loaded token, still gives the grant
        // it was opened under: a token removed, rotated or re-scoped since ends it.
        let holds =
            |grant: String| session::constant_time_eq(grant.as_bytes(), row.grant.as_bytes());
        let token = if self.open() {
            if !holds(session::grant(&id, LOCAL_USER, Role::Admin, &[], "")) {
                return Ok(None);
            }
            None
        } else {
            let found = self.app.runtime.tokens.iter().position(|(def, secret)| {
                def.name == row.name
                    && holds(session::grant(
                        &id,
                        &def.name,
                        def.role,
                        &def.charters,
                        secret,
                    ))
            });
            let Some(i) = found else {
                return Ok(None);
            };
            Some(i)
        };
        Ok(Session::from_stored(row).map(|s| Session { token, ..s }))
    }

    /// Open a session for a token (`secret` is the token's; empty for the open UI), stored
    /// before this returns; returns the cookie's id.
    async fn start_session(
        &self,
        name: String,
        role: Role,
        charters: Vec<String>,
        secret: &str,
    ) -> Result<String, UiError> {
        let id = session::random_token();
        let (_, row) = Session::open(&id, name, role, charters, secret, crate::now_millis());
        self.app.store.create_session(row).await?;
        Ok(id)
    }

    /// The session for a page view, or a redirect to the login page.
    async fn require(&self, headers: &HeaderMap, uri: &Uri) -> Result<Session, UiError> {
        self.session(headers).await?.ok_or_else(|| UiError::Login {
            next: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/inbox".into()),
        })
    }

    /// The session for a form POST, with its CSRF token checked.
    async fn require_post(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<Session, UiError> {
        let s = self.session(headers).await?.ok_or(UiError::Csrf)?;
        let sent = form.get("csrf").map(String::as_str).unwrap_or("");
        if !session::constant_time_eq(sent.as_bytes(), s.csrf.as_bytes()) {
            return Err(UiError::Csrf);
        }
        Ok(s)
    }

    /// Headers that make the admin API see this session's token (none when open).
    fn api_headers(&self, s: &Session) -> HeaderMap {
        let mut h = HeaderMap::new();
        let token = s.token.and_then(|i| self.app.runtime.tokens.get(i));
        if let Some((_, secret)) = token
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {secret}"))
        {
            h.insert(header::AUTHORIZATION, v);
        }
        h
    }

    /// The header's view of the session.
    fn viewer<'a>(&self, s: &'a Session) -> html::Viewer<'a> {
        html::Viewer {
            name: &s.name,
            role: s.role_name(),
            csrf: &s.csrf,
            open: self.open(),
        }
    }
}

async fn root<S: Store>(State(ui): State<UiState<S>>, headers: HeaderMap) -> Response {
    if matches!(ui.session(&headers).await, Ok(Some(_))) {
        redirect("/inbox")
    } else {
        redirect("/login")
    }
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_page<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, UiError> {
    let next = local_path(q.next.as_deref(), "/inbox");
    if ui.session(&headers).await?.is_some() {
        return Ok(redirect(&next));
    }
    let https = is_https(&headers);
    if ui.open() {
        // Open access: no credential to ask for; start a local admin session.
        let id = ui
            .start_session(LOCAL_USER.into(), Role::Admin, vec![], "")
            .await?;
        let mut r = redirect(&next);
        set_cookie(&mut r, SESSION_COOKIE, &id, Some(SESSION_TTL), https);
        return Ok(r);
    }
    let csrf = session::random_token();
    let mut r = Html(login_html(&csrf, &next, None)).into_response();
    set_cookie(&mut r, LOGIN_COOKIE, &csrf, None, https);
    Ok(r)
}

fn set_cookie(
    r: &mut Response,
    name: &str,
    value: &str,
    age: Option<std::time::Duration>,
    https: bool,
) {
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(name, value, age, https)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn login_html(csrf: &str, next: &str, error: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<div class=\"error\" role=\"alert\">{}</div>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "<div class=\"card narrow\"><h1>Log in</h1>{err}\
         <form method=\"post\" action=\"/login\">{}\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <p><label for=\"token\">API token</label><br>\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" class=\"wide\" required></p>\
         <button type=\"submit\" class=\"primary\">Log in</button></form>\
         <p class=\"meta\">Use a token from <code>charter.yaml</code>; you get its role and charter scopes. Sessions last 12 hours (or until you log out).</p></div>",
        html::csrf_field(csrf),
        esc(next)
    );
    html::page("Log in", None, None, &body)
}

async fn login<S: Store>(
    State(ui): State<UiState<S>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let expected =
        session::cookie_for(&headers, LOGIN_COOKIE, is_https(&headers)).unwrap_or_default();
    let sent = form.get("csrf").map(String::as_str).unwrap_or("");
    if expected.is_empty() || !session::constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        return Err(UiError::Csrf);
    }
    let next = local_path(form.get("next").map(String::as_str), "/inbox");
    if ui.logins.blocked(Some(ip)) {
        tracing::warn!(%ip, "login refused: too many failures");
        return Err(UiError::RateLimited);
    }
    let presented = form.get("token").map(|t| t.trim()).unwrap_or("");
    let mut found = None;
    for (def, secret) in &ui.app.runtime.tokens {
        if session::constant_time_eq(presented.as_bytes(), secret.as_bytes()) {
            found = Some((def, secret));
        }
    }
    let https = is_https(&headers);
    let Some((def, secret)) = found else {
        ui.logins.failed(Some(ip));
        tracing::info!(%ip, "failed UI login");
        // Audited without the presented token (it may be a real token with a typo).
        crate::api::audit(
            &ui.app,
            "anonymous",
            "ui.login_failed",
            None,
            None,
            json!({ "ip": ip.to_string() }),
        )
        .await?;
        let page = login_html(&expected, &next, Some("That token is not valid."));
        return Ok((StatusCode::UNAUTHORIZED, Html(page)).into_response());
    };
    if def.role == Role::Agent {
        tracing::info!(user = %def.name, %ip, "UI login refused: an agent token");
        let page = login_html(
            &expected,
            &next,
            Some("That token belongs to an agent: it reaches the MCP endpoint only."),
        );
        return Ok((StatusCode::FORBIDDEN, Html(page)).into_response());
    }
    let id = ui
        .start_session(def.name.clone(), def.role, def.charters.clone(), secret)
        .await?;
    tracing::info!(user = %def.name, %ip, "UI login");
    crate::api::audit(
        &ui.app,
        &def.name,
        "ui.login",
        None,
        None,
        json!({ "ip": ip.to_string(), "role": def.role.as_str() }),
    )
    .await?;
    let mut r = redirect(&next);
    set_cookie(&mut r, SESSION_COOKIE, &id, Some(SESSION_TTL), https);
    set_cookie(
        &mut r,
        LOGIN_COOKIE,
        "",
        Some(std::time::Duration::ZERO),
        https,
    );
    Ok(r)
}

async fn logout<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    ui.require_post(&headers, &form).await?;
    if let Some(id) = session::cookie_for(&headers, SESSION_COOKIE, is_https(&headers)) {
        ui.app.store.delete_session(&session::id_hash(&id)).await?;
    }
    let mut r = redirect("/login");
    set_cookie(
        &mut r,
        SESSION_COOKIE,
        "",
        Some(std::time::Duration::ZERO),
        is_https(&headers),
    );
    Ok(r)
}

/// Where to go after a form: its `back` field when it is a local path, else `default`.
fn back(form: &HashMap<String, String>, default: &str) -> String {
    local_path(form.get("back").map(String::as_str), default)
}

/// Redirect after an operation on a charter: to the form's `back`, else the charter's page,
/// with `msg` shown there.
fn back_to_charter(form: &HashMap<String, String>, name: &str, msg: &str) -> Response {
    let to = back(form, &format!("/charters/{}", html::url_enc(name)));
    redirect(&to_msg(&to, msg))
}

/// `to` with `msg`: a code, or a code with a count after a `-` (`requeued_failed-3`).
fn to_msg(to: &str, msg: &str) -> String {
    match msg.rsplit_once('-') {
        Some((code, n)) if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => {
            with_count(to, code, n.parse().unwrap_or(0))
        }
        _ => with_msg(to, msg),
    }
}

async fn approve<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let edited = form
        .get("params")
        .map(|p| p.trim())
        .filter(|p| !p.is_empty());
    let body = match edited {
        Some(p) => match serde_json::from_str::<Value>(p) {
            Ok(params) => serde_json::to_vec(&json!({ "params": params }))
                .map_err(|e| UiError::BadRequest(e.to_string()))?,
            Err(e) => {
                let why = format!("The edited parameters are not valid JSON: {e}");
                return forms::edit_again(&ui, &s, &id, &form, p, &why).await;
            }
        },
        None => Vec::new(),
    };
    let answer = crate::api::approve(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Path(id.clone()),
        Bytes::from(body),
    )
    .await;
    let v = match (answer, edited) {
        (Ok(Json(v)), _) => v,
        (Err(ApiError::BadRequest(why)), Some(p)) => {
            return forms::edit_again(&ui, &s, &id, &form, p, &why).await;
        }
        (Err(e), _) => return Err(e.into()),
    };
    let code = if v["approval"]["edited_params"].is_object() {
        "approved_edited"
    } else {
        "approved"
    };
    Ok(redirect(&with_msg(&back(&form, "/inbox"), code)))
}

async fn reject<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let reason = form.get("reason").cloned().unwrap_or_default();
    let body = serde_json::to_vec(&json!({ "reason": reason }))
        .map_err(|e| UiError::BadRequest(e.to_string()))?;
    let Json(_) = crate::api::reject(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Path(id),
        Bytes::from(body),
    )
    .await?;
    Ok(redirect(&with_msg(&back(&form, "/inbox"), "rejected")))
}

async fn decide<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let label = form.get("label").cloned().unwrap_or_default();
    let mut fields: Value = match form.get("fields").map(|f| f.trim()) {
        Some(f) if !f.is_empty() => serde_json::from_str(f)
            .map_err(|e| UiError::BadRequest(format!("the fields are not valid JSON: {e}")))?,
        _ => json!({}),
    };
    let Some(map) = fields.as_object_mut() else {
        return Err(UiError::BadRequest(
            "the fields must be a JSON object like {\"order_id\": \"ORD-1\"}".into(),
        ));
    };
    let charter = match uuid::Uuid::parse_str(&id) {
        Ok(u) => ui.app.store.get_escalation(u).await?.map(|e| e.charter),
        Err(_) => None,
    };
    if let Some(c) = charter {
        map.extend(inbox::typed_fields(&ui, &c, &form)?);
    }
    let body = serde_json::to_vec(&json!({ "label": label, "fields": fields }))
        .map_err(|e| UiError::BadRequest(e.to_string()))?;
    let Json(_) = crate::api::decide_escalation(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Path(id),
        Bytes::from(body),
    )
    .await?;
    Ok(redirect(&with_msg(&back(&form, "/inbox"), "decided")))
}

async fn replay_event<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let Json(_) =
        crate::api::replay_event(State(ui.app.clone()), ui.api_headers(&s), Path(id.clone()))
            .await?;
    Ok(redirect(&with_msg(
        &format!("/events/{}", html::url_enc(&id)),
        "replayed",
    )))
}

/// Replay a rejected payload: stored as an event when it passes the contract now (then its
/// timeline is shown), otherwise back to the list with what is still wrong.
async fn replay_rejected<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let answer = crate::rejected::replay_rejected(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Path(id.clone()),
    )
    .await;
    let response = match answer {
        Ok(r) => r,
        Err(ApiError::Contract { violations, .. }) => {
            tracing::debug!(payload = %id, violations = violations.len(), "replayed payload still invalid");
            return Ok(redirect(&with_msg("/rejected", "still_invalid")));
        }
        Err(e) => return Err(e.into()),
    };
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map_err(|e| ApiError::Internal(format!("reading the replay's answer: {e}")))?;
    let ack: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Internal(format!("reading the replay's answer: {e}")))?;
    let event = ack["id"].as_str().unwrap_or_default();
    Ok(redirect(&with_msg(
        &format!("/events/{}", html::url_enc(event)),
        "stored",
    )))
}

/// Operations that are hard to undo ask first: without `confirm=yes` the form answers with
/// a page that says what will happen and posts the same fields again with it.
/// Those who may not do it are refused first (the API's answer: 404 for a charter out of
/// scope, 403 below admin), so the question is never asked in vain.
fn unconfirmed<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    (charter, uri): (&str, &str),
    form: &HashMap<String, String>,
    title: &str,
    what: &str,
) -> Result<Option<Response>, UiError> {
    if !s.sees(charter) {
        return Err(UiError::NotFound);
    }
    if s.role < Role::Admin {
        return Err(UiError::Forbidden);
    }
    if form.get("confirm").map(String::as_str) == Some("yes") {
        return Ok(None);
    }
    let mut fields = String::new();
    for (k, v) in form {
        if k != "confirm" && k != "csrf" {
            fields.push_str(&format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                esc(k),
                esc(v)
            ));
        }
    }
    let cancel = back(form, "/charters");
    let body = format!(
        "<h1>{}</h1><div class=\"card narrow\"><p>{}</p><form method=\"post\" action=\"{}\">{}{}<input type=\"hidden\" name=\"confirm\" value=\"yes\"><div class=\"actions\"><button type=\"submit\" class=\"primary\" autofocus>{}</button><a href=\"{}\">Cancel</a></div></form></div>",
        esc(title),
        esc(what),
        esc(uri),
        html::csrf_field(&s.csrf),
        fields,
        esc(title),
        esc(&cancel)
    );
    Ok(Some(
        Html(html::page(title, Some(&ui.viewer(s)), None, &body)).into_response(),
    ))
}

async fn pause<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let Json(_) = crate::api::pause(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Path(name.clone()),
    )
    .await?;
    Ok(back_to_charter(&form, &name, "paused"))
}

async fn resume<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let Json(_) = crate::api::resume(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Path(name.clone()),
    )
    .await?;
    Ok(back_to_charter(&form, &name, "resumed"))
}

async fn replay_failed<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    if !ui.app.runtime.charters.contains_key(&name) {
        return Err(UiError::NotFound);
    }
    let failed = ui
        .app
        .store
        .count_events(charter_store::EventFilter {
            charter: Some(name.clone()),
            status: Some(charter_core::model::EventStatus::Failed),
            ..charter_store::EventFilter::default()
        })
        .await?;
    if let Some(page) = unconfirmed(
        &ui,
        &s,
        (&name, &format!("/charters/{}/replay", html::url_enc(&name))),
        &form,
        "Replay failed events",
        &format!(
            "Put all {failed} failed event(s) of {name} back in the queue? Each runs again; actions that already succeeded are not sent again."
        ),
    )? {
        return Ok(page);
    }
    let Json(v) = crate::api::replay_failed(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Json(crate::api::ReplayFailed {
            charter: Some(name.clone()),
            ..crate::api::ReplayFailed::default()
        }),
    )
    .await?;
    let n = v["requeued"].as_array().map_or(0, Vec::len);
    Ok(back_to_charter(
        &form,
        &name,
        &format!("requeued_failed-{n}"),
    ))
}

/// A `datetime-local` form value (`2026-01-02T15:04`, optional `:05` and `.123`), read on
/// `zone`'s wall clock like every time the UI shows, in Unix milliseconds. `None` when it
/// is not one. A time shown twice (clocks going back) is its first moment; a time the
/// clocks skip is the moment they jump.
fn parse_form_time(text: &str, zone: &charter_core::cron::Zone) -> Option<i64> {
    let (date, clock) = text.trim().split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=month_days).contains(&day) || !(1..=9999).contains(&y) {
        return None;
    }
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut c = hms.splitn(3, ':');
    let h: i64 = c.next()?.parse().ok()?;
    let mi: i64 = c.next()?.parse().ok()?;
    let sec: i64 = c.next().map_or(Some(0), |v| v.parse().ok())?;
    if h > 23 || mi > 59 || sec > 59 || frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let ms: i64 = format!("{frac:0<3}").parse().ok()?;
    let days = charter_core::calendar::days_from_civil(y, m, day);
    zone.instant_millis(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

/// The charter page's time-range replay (admin): every event of the charter received in
/// `[since, until)` goes back in the queue, through the API's replay (audited
/// `events.replay_range`).
async fn replay_range<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    if !ui.app.runtime.charters.contains_key(&name) {
        return Err(UiError::NotFound);
    }
    let field = |k: &str| -> Result<Option<i64>, UiError> {
        match form.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => parse_form_time(v, ui.zone()).map(Some).ok_or_else(|| {
                UiError::BadRequest(format!(
                    "`{k}` is not a date and time like 2026-01-02T15:04 ({})",
                    ui.zone().name()
                ))
            }),
        }
    };
    let (since, until) = (field("since")?, field("until")?);
    if since.is_none() && until.is_none() {
        return Err(UiError::BadRequest(
            "give the start or the end of the range (or both)".into(),
        ));
    }
    if let (Some(a), Some(b)) = (since, until)
        && a >= b
    {
        return Err(UiError::BadRequest(
            "the start of the range must be before its end".into(),
        ));
    }
    if let Some(page) = unconfirmed(
        &ui,
        &s,
        (
            &name,
            &format!("/charters/{}/replay-range", html::url_enc(&name)),
        ),
        &form,
        "Replay the range",
        &format!(
            "Put every event of {name} received in this range back in the queue, whatever its status? Actions that already succeeded are not sent again."
        ),
    )? {
        return Ok(page);
    }
    let Json(v) = crate::api::replay_failed(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Json(crate::api::ReplayFailed {
            charter: Some(name.clone()),
            since,
            until,
        }),
    )
    .await?;
    let n = v["requeued"].as_array().map_or(0, Vec::len);
    Ok(back_to_charter(
        &form,
        &name,
        &format!("requeued_range-{n}"),
    ))
}

async fn promote<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    if let Some(page) = unconfirmed(
        &ui,
        &s,
        (
            &name,
            &format!("/charters/{}/promote", html::url_enc(&name)),
        ),
        &form,
        "Promote to live",
        &format!(
            "Promote {name} to live? New runs then execute their actions against the real systems instead of only recording them."
        ),
    )? {
        return Ok(page);
    }
    let Json(_) = crate::operator::promote(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Path(name.clone()),
    )
    .await?;
    Ok(back_to_charter(&form, &name, "promoted"))
}

async fn demote<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let Json(_) = crate::operator::set_mode(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Path(name.clone()),
        Bytes::from_static(br#"{"mode": "shadow"}"#),
    )
    .await?;
    Ok(back_to_charter(&form, &name, "demoted"))
}

async fn reroute<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let note = form.get("note").map(|n| n.trim()).filter(|n| !n.is_empty());
    let body = serde_json::to_vec(&json!({ "note": note }))
        .map_err(|e| UiError::BadRequest(e.to_string()))?;
    let Json(_) = crate::operator::reroute(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Path(id.clone()),
        Bytes::from(body),
    )
    .await?;
    Ok(redirect(&with_msg(
        &format!("/events/{}", html::url_enc(&id)),
        "rerouted",
    )))
}

#[cfg(test)]
mod tests {
    use super::parse_form_time;
    use charter_core::cron::Zone;

    #[test]
    fn form_times_are_read_on_the_configured_clock() {
        let utc = Zone::utc();
        let read = |text: &str| parse_form_time(text, &utc);
        assert_eq!(read("1970-01-01T00:00"), Some(0));
        assert_eq!(read("1970-01-01T00:00:01.5"), Some(1500));
        // 2026-03-01T12:30:05.123Z
        assert_eq!(read("2026-03-01T12:30:05.123"), Some(1_772_368_205_123));
        assert_eq!(read("2024-02-29T00:00"), Some(1_709_164_800_000));
        for bad in [
            "",
            "2026-01-02",
            "2026-02-29T00:00",
            "2026-13-01T00:00",
            "2026-01-01T24:00",
            "2026-01-01T10:00:00.1234",
            "2026-01-01T10:00:00.-1",
            "2026-01-01T10:00Z",
        ] {
            assert_eq!(read(bad), None, "{bad}");
        }
        // Paris: 10:00 in January is 09:00Z; 02:30 on 2026-03-29 is skipped (the clocks
        // jump at 01:00Z, which it reads as); 02:30 on 2026-10-25 is shown twice (its first
        // moment, 00:30Z, is taken).
        let paris = Zone::parse("Europe/Paris").unwrap();
        let read = |text: &str| parse_form_time(text, &paris);
        assert_eq!(read("2026-01-15T10:00"), Some(1_768_467_600_000));
        assert_eq!(read("2026-03-29T02:30"), Some(1_774_746_000_000));
        assert_eq!(read("2026-10-25T02:30"), Some(1_792_888_200_000));
    }
}
