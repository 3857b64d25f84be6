//! Notifications of new approvals and escalations (Slack's interactive callback, which
//! decides from their buttons, is [`crate::slack`]).
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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use charter_connect::{AttemptOutcome, Connection, HttpExecutor};
use charter_core::config::{Mode, NotifyChannel, NotifyTarget};
use charter_store::{
    ApprovalStatus, Delivery, EscalationStatus, NotificationKind, NotificationRecord, Store,
    StoreError,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{AppState, Runtime, now_millis};

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
            rollout_notice(state, n, &base).await
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
pub(crate) fn slack_escape(s: &str) -> String {
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

/// The notice of a promotion suggestion or demotion (`n.item_id` is the review's sample);
/// `None` when the sample or charter is gone.
async fn rollout_notice<S: Store>(
    state: &AppState<S>,
    n: &NotificationRecord,
    base: &str,
) -> Result<Option<Notice>, StoreError> {
    let Some(s) = state.store.sample(n.item_id).await? else {
        return Ok(None);
    };
    let Some(cr) = state.runtime.charters.get(&s.sample.charter) else {
        return Ok(None);
    };
    let charter = &cr.charter;
    let views = crate::rollout::route_views(state, charter).await?;
    let Some(v) = views.iter().find(|v| v.name == s.sample.route) else {
        return Ok(None);
    };
    let title = match n.kind {
        NotificationKind::Demotion => format!(
            "Route {} of {} demoted to approve: reviewers corrected it too often",
            v.name, charter.name
        ),
        _ if v.mode == Mode::Live => {
            format!("Route {} of {} was promoted to live", v.name, charter.name)
        }
        _ => format!(
            "Route {} of {} has earned promotion to live",
            v.name, charter.name
        ),
    };
    let reason = v
        .state
        .as_ref()
        .and_then(|s| s.reason.clone())
        .unwrap_or_else(|| v.agreement.describe());
    Ok(Some(Notice {
        kind: n.kind,
        item: n.item_id,
        charter: charter.name.clone(),
        event: s.sample.event_id,
        title,
        facts: vec![
            ("Charter".into(), charter.name.clone()),
            ("Owner".into(), charter.owner.clone()),
            ("Route".into(), v.name.clone()),
            ("Mode now".into(), v.mode.as_str().into()),
            ("Reviews".into(), v.agreement.describe()),
        ],
        evidence: reason,
        link: format!("{base}/rollout/{}", charter.name),
        inbox: format!("{base}/rollout/{}", charter.name),
        labels: Vec::new(),
    }))
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
    fn mrkdwn_is_escaped() {
        assert_eq!(
            slack_escape("<@U1> & <!channel>"),
            "&lt;@U1&gt; &amp; &lt;!channel&gt;"
        );
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
