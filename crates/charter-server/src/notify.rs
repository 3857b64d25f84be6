//! Notifications of new approvals and escalations, and Slack's interactive callback.
//!
//! A charter's `escalation: { notify: [...] }` names where each new approval and escalation
//! is announced. The worker queues one outbox row per item and target right after creating
//! the item ([`approval_created`], [`escalation_created`]; idempotent, so a re-run queues
//! nothing new and a crash between the two is healed by the next run of the event). Queuing
//! never fails a run: a store error is logged and counted. [`run`] delivers due rows: an
//! `http` connector gets a JSON `POST` (with a `text` that chat webhooks show as is), a
//! `slack` connector a Block Kit message with Approve/Reject buttons (a label menu for an
//! escalation), an `smtp` connector a plain-text email; each carries a link into the UI
//! (`server.public_url`). A failed delivery is retried with exponential backoff up to
//! [`MAX_ATTEMPTS`] times, then given up; every outcome is logged and counted in
//! `charter_notifications_total`.
//!
//! Slack's interactive callback ([`slack_interactive`], `POST /slack/interactive`) is
//! verified with a Slack connector's `signing_secret` (v0 HMAC-SHA256 over
//! `v0:{timestamp}:{body}`, 5-minute window, constant-time compare; 401 and nothing done
//! otherwise). The Slack user must be listed in that connector's `users:`, which maps them
//! to a token: they decide with its role, charter scopes and reviewer name, through the same
//! [`crate::api::approve_as`] / [`crate::api::reject_as`] /
//! [`crate::api::decide_escalation_as`] the API and UI use, and the audit log records
//! `slack:<user id>`. Anyone else gets an ephemeral refusal and nothing changes. Reject
//! opens a dialog asking for the reason (`views.open`); its `view_submission` rejects with
//! that reason and replaces the message through the press's `response_url`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use charter_connect::{AttemptOutcome, Connection, HttpExecutor};
use charter_core::config::{Charter, ConnectorKind, NotifyChannel, NotifyTarget, Role};
use charter_core::verify::{self, VerifySpec};
use charter_store::{
    ApprovalRecord, ApprovalStatus, Delivery, EscalationRecord, EscalationStatus, NewNotification,
    NotificationKind, NotificationRecord, Store, StoreError,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::Caller;
use crate::error::ApiError;
use crate::{AppState, Runtime, now_millis};

/// Where Slack sends button presses (the Slack app's Interactivity "Request URL").
pub const SLACK_INTERACTIVE_PATH: &str = "/slack/interactive";

/// Delivery attempts per notification before it is given up.
pub const MAX_ATTEMPTS: u32 = 8;

/// How often due notifications are looked for.
const POLL: Duration = Duration::from_millis(500);

/// How long a claimed notification is held before another claim may take it (a node that
/// dies mid-delivery loses it to the others after this).
const LEASE: Duration = Duration::from_secs(60);

/// Notifications delivered per poll.
const BATCH: usize = 32;

/// Backoff before the second attempt, doubled each time, at most [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Longest parameter or evidence excerpt put into a message.
const EXCERPT: usize = 600;

/// Whether any charter announces its approvals and escalations.
pub fn has_targets(runtime: &Runtime) -> bool {
    runtime
        .charters
        .values()
        .any(|c| !c.charter.escalation.notify.is_empty())
}

/// Whether some Slack connector has a signing secret (so button presses can be verified).
pub fn slack_interactive_enabled(runtime: &Runtime) -> bool {
    !runtime.slack_signing_secrets.is_empty()
}

/// Queue the notifications of a pending approval. Never fails the caller.
pub async fn approval_created<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    a: &ApprovalRecord,
) {
    enqueue(state, charter, NotificationKind::Approval, a.id).await;
}

/// Queue the notifications of an open escalation. Never fails the caller.
pub async fn escalation_created<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    e: &EscalationRecord,
) {
    enqueue(state, charter, NotificationKind::Escalation, e.id).await;
}

/// Queue the owner's notice of a route's promotion (suggested or made) or demotion; `sample`
/// is the review that tipped it. Never fails the caller.
pub async fn rollout_changed<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    kind: NotificationKind,
    sample: Uuid,
) {
    enqueue(state, charter, kind, sample).await;
}

async fn enqueue<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    kind: NotificationKind,
    item: Uuid,
) {
    let targets = &charter.escalation.notify;
    if targets.is_empty() {
        return;
    }
    let now = now_millis();
    let rows = targets
        .iter()
        .map(|t| NewNotification {
            id: Uuid::now_v7(),
            kind,
            item_id: item,
            charter: charter.name.clone(),
            target: t.spec.clone(),
            created_at: now,
        })
        .collect();
    if let Err(e) = state.store.enqueue_notifications(rows).await {
        for t in targets {
            state
                .metrics
                .notification(&charter.name, kind.as_str(), &t.connector, "failed");
        }
        tracing::error!(charter = %charter.name, kind = kind.as_str(), item = %item, error = %e, "could not queue notifications; the item is in the inbox but nobody was told");
    }
}

/// What one delivery pass did (for tests and logs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub sent: usize,
    pub retried: usize,
    pub failed: usize,
}

/// Deliver due notifications every [`POLL`] until `shutdown` is cancelled.
pub async fn run<S: Store>(
    state: AppState<S>,
    executor: Arc<HttpExecutor>,
    shutdown: CancellationToken,
) {
    if state.runtime.project.settings.public_url.is_none() {
        tracing::warn!(
            "charters send notifications but `server.public_url` is not set in charter.yaml: their links are paths without a host"
        );
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let pass = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = deliver_due(&state, &executor, now_millis()) => p,
        };
        if let Err(e) = pass {
            tracing::warn!(error = %e, "delivering notifications failed; will retry");
        }
    }
}

/// One pass: claim the notifications due at `now` and deliver each once.
pub async fn deliver_due<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    now: i64,
) -> Result<Pass, StoreError> {
    let lease_until = now.saturating_add(millis(LEASE));
    let due = state
        .store
        .claim_notifications(now, lease_until, BATCH)
        .await?;
    let mut pass = Pass::default();
    for n in due {
        let connector = n.target.split(':').next().unwrap_or_default().to_string();
        let outcome = deliver(state, executor, &n).await;
        let (delivery, result) = match outcome {
            Ok(()) => (Delivery::Sent, "sent"),
            Err(e) if e.retryable && n.attempts < MAX_ATTEMPTS => {
                let wait = backoff(n.attempts);
                (
                    Delivery::Retry {
                        at: now_millis().saturating_add(millis(wait)),
                        error: e.message,
                    },
                    "retry",
                )
            }
            Err(e) => (Delivery::Failed { error: e.message }, "failed"),
        };
        match &delivery {
            Delivery::Sent => {
                pass.sent += 1;
                tracing::info!(charter = %n.charter, kind = n.kind.as_str(), item = %n.item_id, target = %n.target, "notification sent");
            }
            Delivery::Retry { error, at } => {
                pass.retried += 1;
                tracing::warn!(charter = %n.charter, kind = n.kind.as_str(), item = %n.item_id, target = %n.target, attempt = n.attempts, retry_at = at, error = %error, "notification failed; will retry");
            }
            Delivery::Failed { error } => {
                pass.failed += 1;
                tracing::error!(charter = %n.charter, kind = n.kind.as_str(), item = %n.item_id, target = %n.target, attempts = n.attempts, error = %error, "notification given up");
            }
        }
        state
            .metrics
            .notification(&n.charter, n.kind.as_str(), &connector, result);
        state
            .store
            .finish_notification(n.id, delivery, now_millis())
            .await?;
    }
    Ok(pass)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The wait after failed attempt `attempt` (1-based): 2 s, 4 s, 8 s, ... at most 5 min.
fn backoff(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Why a delivery failed; the message never holds a secret.
#[derive(Debug)]
struct Failed {
    message: String,
    retryable: bool,
}

impl Failed {
    fn permanent(message: impl Into<String>) -> Self {
        Failed {
            message: message.into(),
            retryable: false,
        }
    }
}

fn outcome(out: AttemptOutcome) -> Result<(), Failed> {
    if out.ok {
        return Ok(());
    }
    Err(Failed {
        message: out
            .error
            .or(out.status.map(|s| format!("HTTP {s}")))
            .unwrap_or_else(|| "unknown error".into()),
        retryable: out.retryable,
    })
}

/// What a notification says, whatever the channel.
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: NotificationKind,
    pub item: Uuid,
    pub charter: String,
    pub event: Uuid,
    /// One line: "Approval needed: refund (refunds)".
    pub title: String,
    /// Facts, in order: (name, value).
    pub facts: Vec<(String, String)>,
    /// The run's decision and the item's evidence, shortened.
    pub evidence: String,
    /// The event's run timeline in the UI.
    pub link: String,
    /// The charter's inbox in the UI.
    pub inbox: String,
    /// Labels a reviewer may pick (escalations).
    pub labels: Vec<String>,
}

fn excerpt(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= EXCERPT {
        return s;
    }
    let mut end = EXCERPT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn ui_base(runtime: &Runtime) -> String {
    runtime
        .project
        .settings
        .public_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_string()
}

/// The decision of the run that asked, in one line.
async fn decision_line<S: Store>(state: &AppState<S>, event: Uuid, run: Option<Uuid>) -> String {
    let runs = state.store.runs_for_event(event).await.unwrap_or_default();
    let r = run
        .and_then(|id| runs.iter().find(|r| r.id == id))
        .or(runs.last());
    match r.and_then(|r| r.decision.as_ref()) {
        Some(d) => format!(
            "decision: {} (confidence {:.2}, stage {}): {}",
            d.label.as_deref().unwrap_or("no label"),
            d.confidence,
            format!("{:?}", d.stage).to_lowercase(),
            d.reason
        ),
        None => "no decision recorded".into(),
    }
}

/// Build the notice of a queued notification; `None` when the item is gone or no longer
/// waits (decided before the notification went out).
async fn notice<S: Store>(
    state: &AppState<S>,
    n: &NotificationRecord,
) -> Result<Option<Notice>, StoreError> {
    let base = ui_base(&state.runtime);
    let inbox = format!("{base}/inbox?charter={}", n.charter);
    match n.kind {
        NotificationKind::Promotion | NotificationKind::Demotion => {
            crate::rollout::notice(state, n, &base).await
        }
        NotificationKind::Approval => {
            let Some(a) = state.store.get_approval(n.item_id).await? else {
                return Ok(None);
            };
            if a.status != ApprovalStatus::Pending {
                return Ok(None);
            }
            let decision = decision_line(state, a.event_id, Some(a.run_id)).await;
            let mut facts = vec![
                ("Charter".to_string(), a.charter.clone()),
                ("Action".to_string(), a.action.clone()),
                (
                    "Reviewers".to_string(),
                    if a.reviewers.is_empty() {
                        "any reviewer".into()
                    } else {
                        a.reviewers.join(", ")
                    },
                ),
            ];
            if let Some(t) = a.expires_at {
                let mins = (t - now_millis()).max(0) / 60_000;
                facts.push(("Expires".into(), format!("in {mins} min")));
            }
            facts.push(("Event".into(), a.event_id.to_string()));
            Ok(Some(Notice {
                kind: n.kind,
                item: a.id,
                charter: a.charter.clone(),
                event: a.event_id,
                title: format!("Approval needed: {} ({})", a.action, a.charter),
                facts,
                evidence: format!("{decision}\nparameters: {}", excerpt(&a.params)),
                // Where it can be decided: the inbox with this approval selected.
                link: format!("{base}/inbox?tab=approvals&item={}", a.id),
                inbox,
                labels: Vec::new(),
            }))
        }
        NotificationKind::Escalation => {
            let Some(e) = state.store.get_escalation(n.item_id).await? else {
                return Ok(None);
            };
            if e.status != EscalationStatus::Open {
                return Ok(None);
            }
            let decision = decision_line(state, e.event_id, e.run_id).await;
            let labels = state
                .runtime
                .charters
                .get(&e.charter)
                .and_then(|c| c.charter.decide.as_ref())
                .map(|d| d.labels.clone())
                .unwrap_or_default();
            Ok(Some(Notice {
                kind: n.kind,
                item: e.id,
                charter: e.charter.clone(),
                event: e.event_id,
                title: format!("Escalated to a human: {} ({})", e.reason, e.charter),
                facts: vec![
                    ("Charter".into(), e.charter.clone()),
                    ("Reason".into(), e.reason.clone()),
                    (
                        "For".into(),
                        e.target.clone().unwrap_or_else(|| "a reviewer".into()),
                    ),
                    ("Event".into(), e.event_id.to_string()),
                ],
                evidence: format!("{decision}\ndetail: {}", excerpt(&e.detail)),
                link: format!(
                    "{base}/inbox?tab={}&item={}",
                    if e.reason == crate::dead_letters::DEAD_LETTER {
                        "dead"
                    } else {
                        "decisions"
                    },
                    e.id
                ),
                inbox,
                labels,
            }))
        }
    }
}

impl Notice {
    /// Plain text (email bodies, chat-webhook `text`).
    pub fn text(&self) -> String {
        let mut out = format!("{}\n\n", self.title);
        for (k, v) in &self.facts {
            out.push_str(&format!("{k}: {v}\n"));
        }
        out.push_str(&format!(
            "\n{}\n\nOpen: {}\nInbox: {}\n",
            self.evidence, self.link, self.inbox
        ));
        out
    }

    /// The JSON body for an HTTP connector.
    pub fn json(&self) -> Value {
        json!({
            "text": format!("{} — {}", self.title, self.link),
            "kind": self.kind.as_str(),
            "id": self.item,
            "charter": self.charter,
            "event": self.event,
            "title": self.title,
            "facts": self.facts.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
            "evidence": self.evidence,
            "link": self.link,
            "inbox": self.inbox,
        })
    }

    /// Slack Block Kit blocks: the facts, the evidence, and Approve/Reject buttons (an
    /// approval) or a label menu (an escalation), plus a link into the UI.
    pub fn slack_blocks(&self) -> Value {
        let facts = self
            .facts
            .iter()
            .map(|(k, v)| format!("*{}:* {}", slack_escape(k), slack_escape(v)))
            .collect::<Vec<_>>()
            .join("\n");
        let mut elements = Vec::new();
        match self.kind {
            NotificationKind::Approval => {
                let value = format!("approval:{}", self.item);
                elements.push(json!({
                    "type": "button", "action_id": "charter_approve", "style": "primary",
                    "text": {"type": "plain_text", "text": "Approve"}, "value": value,
                }));
                elements.push(json!({
                    "type": "button", "action_id": "charter_reject", "style": "danger",
                    "text": {"type": "plain_text", "text": "Reject"}, "value": value,
                }));
            }
            NotificationKind::Escalation if !self.labels.is_empty() => {
                let options: Vec<Value> = self
                    .labels
                    .iter()
                    .take(100)
                    .map(|l| {
                        json!({
                            "text": {"type": "plain_text", "text": truncate(l, 75)},
                            "value": format!("escalation:{}:{l}", self.item),
                        })
                    })
                    .collect();
                elements.push(json!({
                    "type": "static_select", "action_id": "charter_decide",
                    "placeholder": {"type": "plain_text", "text": "Decide the label"},
                    "options": options,
                }));
            }
            NotificationKind::Escalation
            | NotificationKind::Promotion
            | NotificationKind::Demotion => {}
        }
        elements.push(json!({
            "type": "button", "action_id": "charter_open",
            "text": {"type": "plain_text", "text": "Open in Charter"}, "url": self.link,
        }));
        json!([
            {"type": "header", "text": {"type": "plain_text", "text": truncate(&self.title, 150)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&facts, 2900)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&format!("```{}```", slack_escape(&self.evidence)), 2900)}},
            {"type": "actions", "block_id": format!("charter:{}", self.item), "elements": elements},
        ])
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's mrkdwn escaping (`&`, `<`, `>`): text from events cannot form links or mentions.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn target_of<'a>(
    state: &'a AppState<impl Store>,
    n: &NotificationRecord,
) -> Option<&'a NotifyTarget> {
    state
        .runtime
        .charters
        .get(&n.charter)?
        .charter
        .escalation
        .notify
        .iter()
        .find(|t| t.spec == n.target)
}

/// One delivery attempt of one notification.
async fn deliver<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    n: &NotificationRecord,
) -> Result<(), Failed> {
    let Some(target) = target_of(state, n) else {
        return Err(Failed::permanent(format!(
            "target `{}` is no longer in charter `{}`'s `escalation.notify`",
            n.target, n.charter
        )));
    };
    let notice = match notice(state, n).await {
        Ok(Some(notice)) => notice,
        Ok(None) => {
            tracing::info!(item = %n.item_id, target = %n.target, "the item was decided before its notification went out; not sent");
            return Ok(());
        }
        Err(e) => {
            return Err(Failed {
                message: format!("reading the item: {e}"),
                retryable: true,
            });
        }
    };
    let Some(conn) = state.runtime.connections.get(&target.connector) else {
        return Err(Failed::permanent(format!(
            "connector `{}` is not configured",
            target.connector
        )));
    };
    let key = format!("notify-{}", n.id);
    match (&target.channel, conn.as_ref()) {
        (NotifyChannel::Http { path }, Connection::Http(h)) => {
            let req = h
                .prepare_post(path.as_deref(), notice.json(), &key)
                .map_err(|e| Failed::permanent(e.to_string()))?;
            outcome(h.attempt(executor, &req).await)
        }
        (NotifyChannel::Slack { channel }, Connection::Slack(slack)) => {
            let blocks = notice.slack_blocks();
            let req = slack
                .prepare_blocks(
                    channel.as_deref(),
                    &format!("{} — {}", notice.title, notice.link),
                    Some(&blocks),
                    &key,
                )
                .map_err(|e| Failed::permanent(e.to_string()))?;
            outcome(slack.attempt(executor, &req).await)
        }
        (NotifyChannel::Email { to }, Connection::Smtp(smtp)) => {
            let email = charter_connect::email::Email {
                to: to.clone(),
                subject: format!("[Charter] {}", notice.title),
                body: notice.text(),
            };
            outcome(smtp.attempt(&email, &key).await)
        }
        _ => Err(Failed::permanent(format!(
            "connector `{}` is not of the kind target `{}` needs",
            target.connector, target.spec
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Slack's interactive callback
// ---------------------------------------------------------------------------------------

/// The client that answers Slack through `response_url`.
fn responder() -> Option<&'static HttpExecutor> {
    static EXECUTOR: OnceLock<Option<HttpExecutor>> = OnceLock::new();
    EXECUTOR
        .get_or_init(|| match HttpExecutor::new() {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client for Slack responses");
                None
            }
        })
        .as_ref()
}

/// The Slack connector whose signing secret signed this request, if any.
fn verified_connector<'a>(
    runtime: &'a Runtime,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<&'a str> {
    let headers: verify::Headers = headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().to_ascii_lowercase(),
                v.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    let spec = VerifySpec::Slack {
        tolerance: verify::DEFAULT_TOLERANCE,
    };
    let now = now_millis() / 1000;
    let mut found = None;
    // Every secret is tried (no early exit), each compare constant-time.
    for (name, secret) in &runtime.slack_signing_secrets {
        if verify::verify(&spec, std::slice::from_ref(secret), &headers, body, now).is_ok()
            && found.is_none()
        {
            found = Some(name.as_str());
        }
    }
    found
}

/// The reviewer a Slack user acts as, through the connector's `users:` mapping.
fn slack_caller(runtime: &Runtime, connector: &str, user: &str) -> Option<Caller> {
    let ConnectorKind::Slack(s) = &runtime.project.connectors.get(connector)?.kind else {
        return None;
    };
    let name = s.users.get(user)?;
    let actor = format!("slack:{user}");
    if runtime.tokens.is_empty() {
        // Open mode: listed users act like the open UI.
        return Some(Caller {
            name: actor,
            role: Role::Admin,
            charters: vec![],
            reviewer_as: Some(name.clone()),
        });
    }
    let (def, _) = runtime.tokens.iter().find(|(d, _)| &d.name == name)?;
    Some(Caller {
        name: actor,
        role: def.role,
        charters: def.charters.clone(),
        reviewer_as: Some(def.name.clone()),
    })
}

/// What a button press asks for.
#[derive(Debug, PartialEq)]
enum Ask {
    Approve(String),
    Reject(String),
    Decide {
        escalation: String,
        label: String,
    },
    /// The "Open in Charter" link button, or an action this server does not know.
    Nothing,
}

fn ask_of(action: &Value) -> Ask {
    let id = action["action_id"].as_str().unwrap_or_default();
    let value = action["value"]
        .as_str()
        .or(action["selected_option"]["value"].as_str())
        .unwrap_or_default();
    match (id, value.split_once(':')) {
        ("charter_approve", Some(("approval", item))) => Ask::Approve(item.to_string()),
        ("charter_reject", Some(("approval", item))) => Ask::Reject(item.to_string()),
        ("charter_decide", Some(("escalation", rest))) => match rest.split_once(':') {
            Some((item, label)) => Ask::Decide {
                escalation: item.to_string(),
                label: label.to_string(),
            },
            None => Ask::Nothing,
        },
        _ => Ask::Nothing,
    }
}

fn refusal(e: &ApiError) -> String {
    match e {
        ApiError::Forbidden => {
            "You may not decide this item (your role or the approval's reviewers do not allow it)."
                .into()
        }
        ApiError::NotFound => "This item does not exist or is not visible to you.".into(),
        ApiError::Conflict(m) | ApiError::BadRequest(m) => m.clone(),
        _ => "Charter could not record the decision (internal error); try the web UI.".into(),
    }
}

/// `POST /slack/interactive`: a verified button press decides the item as the UI would.
pub async fn slack_interactive<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(connector) = verified_connector(&state.runtime, &headers, &body) else {
        tracing::warn!("Slack interactive callback refused: signature missing, stale or wrong");
        return (StatusCode::UNAUTHORIZED, "invalid Slack signature").into_response();
    };
    let payload = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "payload")
        .and_then(|(_, v)| serde_json::from_str::<Value>(&v).ok());
    let Some(payload) = payload else {
        return (
            StatusCode::BAD_REQUEST,
            "expected a form field `payload` holding JSON",
        )
            .into_response();
    };
    match payload["type"].as_str() {
        Some("block_actions") => {}
        Some("view_submission") => return reject_submission(&state, connector, &payload).await,
        _ => return StatusCode::OK.into_response(),
    }
    let user = payload["user"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let user_name = payload["user"]["username"]
        .as_str()
        .or(payload["user"]["name"].as_str())
        .unwrap_or(&user)
        .to_string();
    let response_url = payload["response_url"].as_str().map(str::to_string);
    let ask = payload["actions"]
        .as_array()
        .and_then(|a| a.first())
        .map(ask_of)
        .unwrap_or(Ask::Nothing);
    if ask == Ask::Nothing {
        return StatusCode::OK.into_response();
    }
    let Some(caller) = slack_caller(&state.runtime, connector, &user) else {
        tracing::warn!(connector, slack_user = %user, "Slack user not mapped in `users:`; decision refused");
        let text = format!(
            "You are not allowed to decide from Slack: your Slack user `{user}` is not listed under `users:` of connector `{connector}` in charter.yaml."
        );
        return answer(&state, connector, response_url, false, text).await;
    };
    let result = match &ask {
        Ask::Approve(id) => crate::api::approve_as(state.clone(), &caller, id, Bytes::new())
            .await
            .map(|_| format!("Approved by <@{user}>. The action runs now.")),
        Ask::Reject(id) => {
            let trigger = payload["trigger_id"].as_str();
            match reject_dialog(&state, connector, &caller, id, trigger, &response_url).await {
                Ok(()) => return StatusCode::OK.into_response(),
                Err(Some(text)) => {
                    return answer(&state, connector, response_url, false, text).await;
                }
                // A connector without a bot token cannot open a dialog: the press rejects
                // with a reason naming the reviewer, as the button said.
                Err(None) => {
                    let body = json!({ "reason": format!("rejected in Slack by {user_name}") });
                    crate::api::reject_as(state.clone(), &caller, id, Bytes::from(body.to_string()))
                        .await
                        .map(|_| format!("Rejected by <@{user}>."))
                }
            }
        }
        Ask::Decide { escalation, label } => {
            let body = json!({ "label": label });
            crate::api::decide_escalation_as(
                state.clone(),
                &caller,
                escalation,
                Bytes::from(body.to_string()),
            )
            .await
            .map(|_| {
                format!(
                    "Decided `{}` by <@{user}>; the run continues.",
                    slack_escape(label)
                )
            })
        }
        Ask::Nothing => return StatusCode::OK.into_response(),
    };
    match result {
        Ok(text) => {
            tracing::info!(connector, slack_user = %user, ?ask, "decided from Slack");
            answer(&state, connector, response_url, true, text).await
        }
        Err(e) => {
            tracing::info!(connector, slack_user = %user, ?ask, error = %e, "Slack decision refused");
            answer(&state, connector, response_url, false, refusal(&e)).await
        }
    }
}

/// The `callback_id` of the dialog asking for a rejection's reason.
const REJECT_DIALOG: &str = "charter_reject";

/// Ask the reviewer who pressed Reject for the reason, in a Slack modal (`views.open`). The
/// decision is checked first, so nobody is asked for a reason in vain; the modal carries the
/// approval and the message's `response_url` in its `private_metadata`.
///
/// `Err(Some(text))`: tell the reviewer `text`, nothing changes. `Err(None)`: the connector
/// posts through an incoming webhook and cannot open dialogs.
async fn reject_dialog<S: Store>(
    state: &AppState<S>,
    connector: &str,
    caller: &Caller,
    id: &str,
    trigger_id: Option<&str>,
    response_url: &Option<String>,
) -> Result<(), Option<String>> {
    if let Err(e) = crate::api::check_decidable(state, caller, id).await {
        return Err(Some(refusal(&e)));
    }
    let slack = match state.runtime.connections.get(connector).map(|c| c.as_ref()) {
        Some(Connection::Slack(s)) => s,
        _ => return Err(None),
    };
    if !matches!(slack.auth, charter_connect::slack::SlackAuth::Bot { .. }) {
        return Err(None);
    }
    let unavailable = |why: &str| {
        Some(format!(
            "Charter could not ask for a reason ({why}); reject in the web UI instead."
        ))
    };
    let Some(trigger_id) = trigger_id else {
        return Err(unavailable("Slack sent no trigger_id"));
    };
    let metadata = json!({ "approval": id, "response_url": response_url }).to_string();
    let view = json!({
        "trigger_id": trigger_id,
        "view": {
            "type": "modal",
            "callback_id": REJECT_DIALOG,
            "private_metadata": metadata,
            "title": {"type": "plain_text", "text": "Reject"},
            "submit": {"type": "plain_text", "text": "Reject"},
            "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [{
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Why is it rejected?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "reason",
                    "multiline": true,
                    "max_length": 2000
                }
            }]
        }
    });
    let key = format!("slack-view-{}", Uuid::now_v7());
    let (req, executor) = match (slack.prepare_api("views.open", view, &key), responder()) {
        (Ok(req), Some(executor)) => (req, executor),
        (Err(e), _) => return Err(unavailable(&e.to_string())),
        (_, None) => return Err(unavailable("no HTTP client")),
    };
    let out = slack.attempt(executor, &req).await;
    if out.ok {
        Ok(())
    } else {
        let why = out.error.unwrap_or_else(|| "views.open failed".into());
        tracing::warn!(connector, error = %why, "opening Slack's reject dialog failed");
        Err(unavailable(&why))
    }
}

/// The reason dialog was submitted: reject as the UI would, with that reason. The answer is
/// empty (Slack closes the modal) or names the problem next to the reason field; the
/// original message is replaced through its `response_url`.
async fn reject_submission<S: Store>(
    state: &AppState<S>,
    connector: &str,
    payload: &Value,
) -> Response {
    let view = &payload["view"];
    if view["callback_id"].as_str() != Some(REJECT_DIALOG) {
        return StatusCode::OK.into_response();
    }
    let in_dialog = |text: String| {
        (
            StatusCode::OK,
            Json(json!({ "response_action": "errors", "errors": { "reason": text } })),
        )
            .into_response()
    };
    let user = payload["user"]["id"].as_str().unwrap_or_default();
    let metadata: Value = view["private_metadata"]
        .as_str()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or(Value::Null);
    let Some(id) = metadata["approval"].as_str() else {
        return in_dialog("This dialog does not name an approval; reject in the web UI.".into());
    };
    let response_url = metadata["response_url"].as_str().map(str::to_string);
    let reason = view["state"]["values"]["reason"]["reason"]["value"]
        .as_str()
        .unwrap_or_default()
        .trim();
    if reason.is_empty() {
        return in_dialog("A rejection needs a reason.".into());
    }
    let Some(caller) = slack_caller(&state.runtime, connector, user) else {
        tracing::warn!(connector, slack_user = %user, "Slack user not mapped in `users:`; rejection refused");
        return in_dialog(format!(
            "Your Slack user `{user}` is not listed under `users:` of connector `{connector}`."
        ));
    };
    let body = json!({ "reason": reason }).to_string();
    match crate::api::reject_as(state.clone(), &caller, id, Bytes::from(body)).await {
        Ok(_) => {
            tracing::info!(connector, slack_user = %user, approval = id, "rejected from Slack");
            let text = format!("Rejected by <@{user}>: {}", slack_escape(reason));
            let update = json!({ "replace_original": true, "text": text });
            post_response(state, connector, response_url, &update).await;
            StatusCode::OK.into_response()
        }
        Err(e) => {
            tracing::info!(connector, slack_user = %user, approval = id, error = %e, "Slack rejection refused");
            in_dialog(refusal(&e))
        }
    }
}

/// Tell the Slack user how it went: a decision replaces the message (its buttons go), a
/// refusal is ephemeral (only they see it). Sent through `response_url`, and also as the
/// answer body.
async fn answer<S: Store>(
    state: &AppState<S>,
    connector: &str,
    response_url: Option<String>,
    decided: bool,
    text: String,
) -> Response {
    let body = if decided {
        json!({ "replace_original": true, "text": text })
    } else {
        json!({ "response_type": "ephemeral", "replace_original": false, "text": text })
    };
    post_response(state, connector, response_url, &body).await;
    (StatusCode::OK, Json(body)).into_response()
}

/// Post `body` to a message's `response_url` (if Slack gave one); failures are logged.
async fn post_response<S: Store>(
    state: &AppState<S>,
    connector: &str,
    response_url: Option<String>,
    body: &Value,
) {
    if let (Some(url), Some(executor)) = (response_url, responder()) {
        let allow_private = match state
            .runtime
            .project
            .connectors
            .get(connector)
            .map(|c| &c.kind)
        {
            Some(ConnectorKind::Slack(s)) => s.allow_private,
            _ => false,
        };
        let key = format!("slack-response-{}", Uuid::now_v7());
        match HttpExecutor::prepare(
            None,
            "POST",
            &url,
            &[],
            Some(body.clone()),
            Some(Duration::from_secs(2)),
            &key,
        ) {
            Ok(mut req) => {
                req.allow_private = allow_private;
                let out = executor.attempt(&req).await;
                if !out.ok {
                    tracing::warn!(connector, status = ?out.status, error = ?out.error, "answering Slack through response_url failed");
                }
            }
            Err(e) => tracing::warn!(connector, error = %e, "Slack's response_url is not usable"),
        }
    }
}

/// Notifications per target, for tests and the UI: (target, state) of one item.
pub async fn states_of<S: Store>(
    state: &AppState<S>,
    item: Uuid,
) -> Result<BTreeMap<String, String>, StoreError> {
    Ok(state
        .store
        .list_notifications(Some(item), 100)
        .await?
        .into_iter()
        .map(|n| (n.target, n.state.as_str().to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn button_values_name_the_item() {
        let a = json!({"action_id": "charter_approve", "value": "approval:0190"});
        assert_eq!(ask_of(&a), Ask::Approve("0190".into()));
        let r = json!({"action_id": "charter_reject", "value": "approval:0190"});
        assert_eq!(ask_of(&r), Ask::Reject("0190".into()));
        let d = json!({"action_id": "charter_decide", "selected_option": {"value": "escalation:0191:billing"}});
        assert_eq!(
            ask_of(&d),
            Ask::Decide {
                escalation: "0191".into(),
                label: "billing".into()
            }
        );
        let open = json!({"action_id": "charter_open", "url": "https://x"});
        assert_eq!(ask_of(&open), Ask::Nothing);
        let forged = json!({"action_id": "charter_approve", "value": "escalation:0191:x"});
        assert_eq!(ask_of(&forged), Ask::Nothing);
    }

    #[test]
    fn mrkdwn_is_escaped() {
        assert_eq!(
            slack_escape("<@U1> & <!channel>"),
            "&lt;@U1&gt; &amp; &lt;!channel&gt;"
        );
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
