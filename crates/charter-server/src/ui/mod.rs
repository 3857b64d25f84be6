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
//! through the same operation in [`crate::ops`] the admin API uses, as the session's
//! [`crate::auth::Caller`], so roles, scopes, audit entries and re-queueing are exactly the
//! API's: a viewer cannot decide, a
//! reviewer cannot pause, replay or promote (403), another charter's objects do not exist
//! (404). Every form carries the session's CSRF token and every POST without it is refused
//! (403). Failed logins are limited per client address (429); every login, successful or
//! not, is in the audit log (`ui.login`, `ui.login_failed`, with the client address, never
//! the token). With no tokens defined the UI
//! is open, like the API, and says so on every page.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Form;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use charter_core::config::Role;
use charter_store::Store;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;

mod assets;
mod cards;
mod charter_forms;
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

use charter_forms::{demote, pause, promote, replay_failed, replay_range, resume};
use forms::{approve, decide, reject, replay_event, replay_rejected, reroute};
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

impl From<crate::ops::OpError> for UiError {
    fn from(e: crate::ops::OpError) -> Self {
        UiError::Api(e.into())
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

/// The client's address ([`crate::client::ClientAddr`]: the peer, or the address a trusted
/// proxy forwarded; unspecified when the server provides neither, so every such client shares one login-limit bucket).
pub struct ClientIp(pub IpAddr);

impl<T: Send + Sync> FromRequestParts<T> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &T) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<crate::client::ClientAddr>()
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
        crate::record::audit(
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
    crate::record::audit(
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
