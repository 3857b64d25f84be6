//! Alerts declared in charters (`alerts:`), evaluated by the server on a schedule.
//!
//! Each alert condition is checked against the store every tick. When it starts to hold,
//! an incident is opened (at most one open incident per charter and alert, kept in the
//! store so it survives restarts) and a "firing" notification is sent once; when it stops
//! holding, the incident is resolved and a "resolved" notification is sent once. A
//! notification that cannot be delivered is retried on the next tick. On PostgreSQL only
//! the node holding the alert job lock evaluates (see [`charter_store::AlertStore::try_lead`]).
//!
//! Notifications go through a connector: an HTTP connector receives a JSON `POST` with a
//! human-readable `text` (so a Slack or Mattermost incoming webhook shows it as is) and the
//! structured fields; a Slack connector posts the text to its channel (`slack:#ops-alerts`);
//! an SMTP connector mails it (`mail:oncall@acme.example`).

use std::sync::Arc;
use std::time::Duration;

use charter_connect::email::Email;
use charter_connect::{Connection, HttpExecutor};
use charter_core::config::{AlertCondition, AlertRule, Charter, NotifyChannel};
use charter_core::model::EventStatus;
use charter_core::routing::eval_context;
use charter_store::{EventFilter, Incident, IncidentState, NewIncident, Store, StoreError};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{AppState, now_millis};

/// How often alerts are evaluated by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// Most stuck events inspected per alert and status.
const STUCK_SCAN: usize = 1000;

/// Attempts per notification within one tick (then retried next tick).
const SEND_ATTEMPTS: u32 = 3;

/// The measured state of one alert condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Whether the condition holds (the alert fires).
    pub firing: bool,
    /// The measured value (a rate, an age in ms, a count).
    pub value: f64,
    /// One line for people.
    pub summary: String,
    pub detail: Value,
}

/// What one evaluation did (for tests and logs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tick {
    /// False when another node holds the alert lock.
    pub led: bool,
    pub opened: Vec<(String, String)>,
    pub resolved: Vec<(String, String)>,
    /// Notifications delivered: (charter, alert, `firing` | `resolved`).
    pub sent: Vec<(String, String, &'static str)>,
    pub failed_sends: usize,
}

/// Evaluate every `every` until `shutdown` is cancelled.
pub async fn run<S: Store>(
    state: AppState<S>,
    executor: Arc<HttpExecutor>,
    every: Duration,
    shutdown: CancellationToken,
) {
    crate::every(every, &shutdown, || async {
        if let Err(e) = evaluate(&state, &executor, now_millis()).await {
            tracing::warn!(error = %e, "alert evaluation failed; will retry");
        }
    })
    .await;
}

/// Whether any charter of the runtime declares alerts.
pub fn has_alerts(runtime: &crate::Runtime) -> bool {
    runtime
        .charters
        .values()
        .any(|c| !c.charter.alerts.is_empty())
}

fn pct(x: f64) -> String {
    let p = x * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if s > 0 {
        format!("{s}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn window_start(now: i64, window: Duration) -> i64 {
    now.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX))
}

/// Measure one alert condition of `charter` at `now`.
pub async fn check<S: Store>(
    store: &S,
    charter: &Charter,
    rule: &AlertRule,
    now: i64,
) -> Result<Check, StoreError> {
    match &rule.condition {
        AlertCondition::ErrorRate {
            above,
            window,
            min_runs,
        } => {
            let outcomes = store
                .run_outcomes(&charter.name, window_start(now, *window), now + 1)
                .await?;
            let runs: u64 = outcomes.values().sum();
            let failed = outcomes.get("failed").copied().unwrap_or(0);
            let rate = if runs == 0 {
                0.0
            } else {
                failed as f64 / runs as f64
            };
            Ok(Check {
                firing: runs >= (*min_runs).max(1) && rate > *above,
                value: rate,
                summary: format!(
                    "error rate {} over {} ({failed} of {runs} runs failed; alert above {})",
                    pct(rate),
                    human(*window),
                    pct(*above)
                ),
                detail: json!({"runs": runs, "failed": failed, "rate": rate, "above": above}),
            })
        }
        AlertCondition::Stuck { older_than, when } => {
            let cutoff = window_start(now, *older_than);
            let mut stuck = Vec::new();
            for status in [
                EventStatus::Pending,
                EventStatus::Processing,
                EventStatus::Waiting,
            ] {
                let events = store
                    .list_events(EventFilter {
                        charter: Some(charter.name.clone()),
                        status: Some(status),
                        since: None,
                        until: Some(cutoff),
                        limit: STUCK_SCAN,
                        ..EventFilter::default()
                    })
                    .await?;
                for e in events {
                    if e.event.received_at > cutoff {
                        continue;
                    }
                    if let Some(expr) = when {
                        let ctx = eval_context(&e.event, None);
                        if !expr.eval_bool(&ctx).unwrap_or(false) {
                            continue;
                        }
                    }
                    stuck.push(e);
                }
            }
            let oldest = stuck.iter().map(|e| e.event.received_at).min();
            let age_ms = oldest.map_or(0, |t| (now - t).max(0));
            let which = when
                .as_ref()
                .map(|w| format!(" matching `{}`", w.source()))
                .unwrap_or_default();
            Ok(Check {
                firing: !stuck.is_empty(),
                value: age_ms as f64,
                summary: format!(
                    "{} event(s){which} older than {} not finished (oldest {})",
                    stuck.len(),
                    human(*older_than),
                    human(Duration::from_millis(u64::try_from(age_ms).unwrap_or(0)))
                ),
                detail: json!({
                    "count": stuck.len(),
                    "oldest_age_ms": age_ms,
                    "events": stuck.iter().take(10).map(|e| e.event.id).collect::<Vec<_>>(),
                }),
            })
        }
        AlertCondition::BudgetExhausted { window } => {
            let reasons = store
                .escalation_reasons(&charter.name, window_start(now, *window), now + 1)
                .await?;
            let n = reasons.get("budget").copied().unwrap_or(0);
            Ok(Check {
                firing: n > 0,
                value: n as f64,
                summary: format!(
                    "LLM budget exhausted: {n} escalation(s) over {}",
                    human(*window)
                ),
                detail: json!({"escalations": n}),
            })
        }
        AlertCondition::DeadLetters { window, above } => {
            let reasons = store
                .escalation_reasons(&charter.name, window_start(now, *window), now + 1)
                .await?;
            let n = reasons.get("dead_letter").copied().unwrap_or(0);
            Ok(Check {
                firing: n > *above,
                value: n as f64,
                summary: format!(
                    "{n} dead-lettered action(s) over {} (alert above {above})",
                    human(*window)
                ),
                detail: json!({"dead_letters": n, "above": above}),
            })
        }
    }
}

/// One evaluation: check every alert, open and resolve incidents, deliver what is owed.
pub async fn evaluate<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    now: i64,
) -> Result<Tick, StoreError> {
    let store = &state.store;
    let mut tick = Tick::default();
    let Some(lead) = store.try_lead().await? else {
        return Ok(tick);
    };
    tick.led = true;
    let open = store.open_incidents(None).await?;
    for cr in state.runtime.charters.values() {
        let charter = &cr.charter;
        for rule in &charter.alerts {
            let c = match check(store, charter, rule, now).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(charter = %charter.name, alert = %rule.key, error = %e, "alert check failed");
                    continue;
                }
            };
            let current = open
                .iter()
                .find(|i| i.charter == charter.name && i.alert == rule.key);
            match (c.firing, current) {
                (true, None) => {
                    let mut detail = c.detail.clone();
                    detail["summary"] = Value::String(c.summary.clone());
                    let (inc, created) = store
                        .open_incident(NewIncident {
                            id: Uuid::now_v7(),
                            charter: charter.name.clone(),
                            alert: rule.key.clone(),
                            opened_at: now,
                            value: c.value,
                            detail,
                        })
                        .await?;
                    if created {
                        tracing::warn!(charter = %charter.name, alert = %rule.key, incident = %inc.id, summary = %c.summary, "alert firing");
                        tick.opened.push((charter.name.clone(), rule.key.clone()));
                    }
                }
                (false, Some(inc)) => {
                    if let Some(inc) = store.resolve_incident(inc.id, now).await? {
                        tracing::info!(charter = %charter.name, alert = %rule.key, incident = %inc.id, summary = %c.summary, "alert resolved");
                        tick.resolved.push((charter.name.clone(), rule.key.clone()));
                    }
                }
                _ => {}
            }
        }
    }
    // Incidents of alerts no longer declared (the charter changed) are closed quietly.
    for inc in &open {
        if find_rule(state, inc).is_none() {
            store.resolve_incident(inc.id, now).await?;
            store
                .mark_notified(inc.id, IncidentState::Resolved, now)
                .await?;
        }
    }
    for inc in store.unnotified_incidents().await? {
        let Some((charter, rule)) = find_rule(state, &inc) else {
            continue;
        };
        let phase = match inc.state {
            IncidentState::Open => "firing",
            IncidentState::Resolved => "resolved",
        };
        match notify(state, executor, charter, rule, &inc, phase).await {
            Ok(()) => {
                store.mark_notified(inc.id, inc.state, now_millis()).await?;
                state
                    .metrics
                    .alert_notification(&inc.charter, &inc.alert, phase, true);
                tick.sent
                    .push((inc.charter.clone(), inc.alert.clone(), phase));
            }
            Err(e) => {
                state
                    .metrics
                    .alert_notification(&inc.charter, &inc.alert, phase, false);
                tracing::warn!(charter = %inc.charter, alert = %inc.alert, incident = %inc.id, error = %e, "alert notification failed; will retry");
                tick.failed_sends += 1;
            }
        }
    }
    drop(lead);
    Ok(tick)
}

fn find_rule<'a, S>(
    state: &'a AppState<S>,
    inc: &Incident,
) -> Option<(&'a Charter, &'a AlertRule)> {
    let cr = state.runtime.charters.get(&inc.charter)?;
    let rule = cr.charter.alerts.iter().find(|r| r.key == inc.alert)?;
    Some((&cr.charter, rule))
}

/// The notification body.
pub fn message(charter: &Charter, rule: &AlertRule, inc: &Incident, phase: &str) -> Value {
    let summary = inc.detail["summary"].as_str().unwrap_or_default();
    let text = match phase {
        "resolved" => format!(
            "[RESOLVED] {}: alert `{}` cleared (was: {summary})",
            charter.name, rule.key
        ),
        _ => format!(
            "[FIRING] {}: alert `{}`: {summary}. Owner {}, maintainer {}.",
            charter.name, rule.key, charter.owner, charter.maintainer
        ),
    };
    json!({
        "text": text,
        "state": phase,
        "charter": charter.name,
        "alert": rule.key,
        "incident": inc.id,
        "value": inc.value,
        "summary": summary,
        "opened_at": inc.opened_at,
        "resolved_at": inc.resolved_at,
        "owner": charter.owner,
        "maintainer": charter.maintainer,
        "detail": inc.detail,
    })
}

/// Why a notification could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("connector `{0}` is not configured as the kind of connector its target needs")]
    UnknownConnector(String),
    #[error("the request could not be built: {0}")]
    Prepare(String),
    #[error("delivery failed: {0}")]
    Delivery(String),
}

/// Deliver one incident notification through the rule's connector (retried within the tick
/// on retryable failures; the next tick tries again after that).
async fn notify<S>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    charter: &Charter,
    rule: &AlertRule,
    inc: &Incident,
    phase: &str,
) -> Result<(), NotifyError> {
    let target = &rule.notify;
    let unknown = || NotifyError::UnknownConnector(target.connector.clone());
    let conn = state
        .runtime
        .connections
        .get(&target.connector)
        .ok_or_else(unknown)?;
    let body = message(charter, rule, inc, phase);
    let text = body["text"].as_str().unwrap_or_default().to_string();
    let key = format!("alert:{}:{phase}", inc.id);
    let prepare = |e: charter_connect::ConnectError| NotifyError::Prepare(e.to_string());
    let mut last = String::new();
    for attempt in 1..=SEND_ATTEMPTS {
        let out = match (&target.channel, conn.as_ref()) {
            (NotifyChannel::Http { path }, Connection::Http(h)) => {
                let req = h
                    .prepare_post(path.as_deref(), body.clone(), &key)
                    .map_err(prepare)?;
                h.attempt(executor, &req).await
            }
            (NotifyChannel::Slack { channel }, Connection::Slack(slack)) => {
                let req = slack
                    .prepare(channel.as_deref(), &text, &key)
                    .map_err(prepare)?;
                slack.attempt(executor, &req).await
            }
            (NotifyChannel::Email { to }, Connection::Smtp(smtp)) => {
                let email = Email {
                    to: to.clone(),
                    subject: format!(
                        "[Charter] {} {}: {}",
                        phase.to_uppercase(),
                        charter.name,
                        rule.key
                    ),
                    body: text.clone(),
                };
                smtp.attempt(&email, &key).await
            }
            _ => return Err(unknown()),
        };
        if out.ok {
            return Ok(());
        }
        last = out
            .error
            .or(out.status.map(|s| format!("HTTP {s}")))
            .unwrap_or_else(|| "unknown error".into());
        if !out.retryable {
            break;
        }
        if attempt < SEND_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
    }
    Err(NotifyError::Delivery(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_and_durations_read_well() {
        assert_eq!(pct(0.05), "5%");
        assert_eq!(pct(1.0), "100%");
        assert_eq!(pct(0.125), "12.5%");
        assert_eq!(human(Duration::from_secs(900)), "15m");
        assert_eq!(human(Duration::from_secs(7200)), "2h");
        assert_eq!(human(Duration::from_secs(90)), "90s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn window_start_saturates() {
        assert_eq!(window_start(10_000, Duration::from_secs(2)), 8_000);
        assert_eq!(window_start(i64::MIN + 1, Duration::from_secs(2)), i64::MIN);
    }
}
