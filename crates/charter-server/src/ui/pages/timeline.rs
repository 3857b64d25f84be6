//! `GET /events/{id}`: an event's timeline. The header names the event, its status and
//! charter; those allowed get the operator forms (replay, reroute) and the cards of what
//! waits on the event (approvals, escalations: the inbox's cards); then every step in time
//! order: the event received, each run (its decision, context fetched, drafts written,
//! actions with their attempts, how it finished), approvals, escalations and audit entries.

use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Html;
use charter_core::config::Role;
use charter_core::cron::Zone;
use charter_core::model::{ActionRecord, ActionStatus, EventRecord, RunRecord};
use charter_store::{
    ApprovalRecord, ApprovalStatus, AuditEntry, EscalationRecord, EscalationStatus, Store,
};
use serde_json::Value;
use uuid::Uuid;

use super::{MsgQuery, decision_line};
use crate::timeline::{ContextView, DraftView, Timeline, TimelineRun};
use crate::ui::html::{badge, button_form, csrf_field, esc, json_block, page, time, url_enc};
use crate::ui::session::Session;
use crate::ui::{UiError, UiState, cards};

/// One item of a timeline.
struct Item {
    at: i64,
    seq: usize,
    kind: String,
    html: String,
}

/// The timeline's items, kept in the order they were added for equal times.
#[derive(Default)]
struct Items(Vec<Item>);

impl Items {
    fn push(&mut self, at: i64, kind: String, html: String) {
        let seq = self.0.len();
        self.0.push(Item {
            at,
            seq,
            kind,
            html,
        });
    }
}

/// `GET /events/{id}`: the event's timeline (404 outside the session's scope).
pub async fn timeline<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Query(q): Query<MsgQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let id = Uuid::parse_str(&id).map_err(|_| UiError::NotFound)?;
    let t = crate::timeline::timeline_data(&ui.app, id, |c| s.sees(c)).await?;
    let zone = ui.zone();
    let mut items = Items::default();
    event_item(&mut items, &t.event);
    for (n, tr) in t.runs.iter().enumerate() {
        run_items(&mut items, zone, n, tr);
    }
    approval_items(&mut items, zone, &t.approvals);
    escalation_items(&mut items, &t.escalations);
    audit_items(&mut items, &t.audit);
    let mut items = items.0;
    items.sort_by_key(|i| (i.at, i.seq));

    let mut body = header(zone, id, &t);
    body.push_str(&operator_forms(&s, id));
    body.push_str(&waiting_cards(&ui, &s, id, &t).await?);
    body.push_str("<h2>Timeline</h2><ol class=\"timeline\">");
    for i in &items {
        let _ = write!(
            body,
            "<li><div><span class=\"kind\">{}</span> <span class=\"meta\">{}</span></div>{}</li>",
            i.kind,
            time(zone, i.at),
            i.html
        );
    }
    body.push_str("</ol>");
    Ok(Html(page(
        "Event",
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}

/// The heading: the event, its status, charter, runs and last change.
fn header(zone: &Zone, id: Uuid, t: &Timeline) -> String {
    let charter = &t.event.event.charter;
    format!(
        "<h1>Event <code>{}</code> {}</h1><div class=\"meta\">charter <a href=\"/charters/{}\">{}</a> · {} run(s) · last change {}</div>",
        id,
        badge(t.event.status.as_str()),
        url_enc(charter),
        esc(charter),
        t.runs.len(),
        time(zone, t.event.updated_at)
    )
}

/// Replay (admins) and reroute to the manual queue (reviewers and up); nothing for viewers.
fn operator_forms(s: &Session, id: Uuid) -> String {
    let mut body = String::new();
    if s.may(Role::Reviewer) {
        body.push_str("<div class=\"actions\">");
        if s.may(Role::Admin) {
            let _ = write!(
                body,
                "{}<span class=\"meta\">Actions that already succeeded are not executed again.</span> ",
                button_form(&format!("/events/{id}/replay"), &s.csrf, "Replay", "")
            );
        }
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/events/{id}/reroute\" class=\"inline\">{}<label>Note <input type=\"text\" name=\"note\" placeholder=\"for the human (optional)\"></label> <button type=\"submit\">Reroute to the manual queue</button></form>",
            csrf_field(&s.csrf)
        );
        body.push_str("</div>");
    }
    body
}

/// What waits on this event, decidable here by those allowed (the inbox's cards).
async fn waiting_cards<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    id: Uuid,
    t: &Timeline,
) -> Result<String, UiError> {
    let back = format!("/events/{id}");
    let mut body = String::new();
    for a in t
        .approvals
        .iter()
        .filter(|a| a.status == ApprovalStatus::Pending)
    {
        body.push_str("<h2>Waiting for approval</h2>");
        body.push_str(&cards::approval_card(ui, s, a, &back).await?);
    }
    for x in t
        .escalations
        .iter()
        .filter(|x| x.status == EscalationStatus::Open)
    {
        body.push_str("<h2>Waiting for a human</h2>");
        body.push_str(&cards::escalation_card(ui, s, x, &back).await?);
    }
    Ok(body)
}

/// The event as received: source, type, dedupe key, headers and payload.
fn event_item(items: &mut Items, ev: &EventRecord) {
    let e = &ev.event;
    items.push(
        e.received_at,
        "Event received".into(),
        format!(
            "<div class=\"meta\">source {} · type {} · dedupe key {}</div>{}{}",
            esc(&e.source),
            esc(e.event_type.as_deref().unwrap_or("—")),
            esc(e.dedupe_key.as_deref().unwrap_or("—")),
            if e.headers.is_empty() {
                String::new()
            } else {
                json_block(&serde_json::to_value(&e.headers).unwrap_or(Value::Null))
            },
            json_block(&e.payload)
        ),
    );
}

/// Run `n`'s steps: started (with its decision), context, drafts, actions, finished.
fn run_items(items: &mut Items, zone: &Zone, n: usize, tr: &TimelineRun) {
    let run = &tr.run;
    items.push(
        run.started_at,
        format!("Run {} started", n + 1),
        run_started_html(tr),
    );
    for c in &tr.context {
        items.push(c.at, format!("Context {}", esc(&c.name)), context_html(c));
    }
    for d in &tr.drafts {
        items.push(d.at, format!("Draft for {}", esc(&d.action)), draft_html(d));
    }
    for a in &run.actions {
        let at = a
            .attempts
            .first()
            .map(|t| t.started_at)
            .unwrap_or(run.started_at);
        items.push(
            at,
            format!("Action {}", esc(&a.action)),
            action_html(zone, a),
        );
    }
    if let Some(done) = run.finished_at {
        items.push(
            done,
            format!("Run {} finished", n + 1),
            run_finished_html(run),
        );
    }
}

/// A run's outcome and error, when it finished.
fn run_finished_html(run: &RunRecord) -> String {
    format!(
        "{}{}",
        run.outcome.map(|o| badge(o.as_str())).unwrap_or_default(),
        run.error
            .as_deref()
            .map(|m| format!(" <span class=\"meta\">{}</span>", esc(m)))
            .unwrap_or_default()
    )
}

/// Each approval requested, and decided when it was.
fn approval_items(items: &mut Items, zone: &Zone, approvals: &[ApprovalRecord]) {
    for a in approvals {
        items.push(
            a.created_at,
            format!("Approval requested for {}", esc(&a.action)),
            format!(
                "<span class=\"meta\">reviewers: {} · {}</span>",
                esc(&if a.reviewers.is_empty() {
                    "any reviewer".to_string()
                } else {
                    a.reviewers.join(", ")
                }),
                a.expires_at
                    .map(|t| format!("expires {}", time(zone, t)))
                    .unwrap_or_else(|| "no deadline".into())
            ),
        );
        if let Some(at) = a.decided_at {
            items.push(
                at,
                format!("Approval {}", a.status.as_str()),
                format!(
                    "by <strong>{}</strong>{}{}",
                    esc(a.decided_by.as_deref().unwrap_or("?")),
                    a.comment
                        .as_deref()
                        .map(|c| format!(" — {}", esc(c)))
                        .unwrap_or_default(),
                    a.edited_params
                        .as_ref()
                        .map(|p| format!("<div>with edited parameters:</div>{}", json_block(p)))
                        .unwrap_or_default()
                ),
            );
        }
    }
}

/// Each escalation opened, and resolved when it was.
fn escalation_items(items: &mut Items, escalations: &[EscalationRecord]) {
    for x in escalations {
        items.push(
            x.created_at,
            format!("Escalated: {}", esc(&x.reason.replace('_', " "))),
            format!(
                "{} <span class=\"meta\">to {}</span>",
                badge(x.status.as_str()),
                esc(x.target.as_deref().unwrap_or("any reviewer"))
            ),
        );
        if let (Some(at), Some(r)) = (x.resolved_at, &x.resolution) {
            items.push(
                at,
                "Escalation resolved".into(),
                format!(
                    "by <strong>{}</strong>: label <strong>{}</strong>",
                    esc(x.resolved_by.as_deref().unwrap_or("?")),
                    esc(&r.label)
                ),
            );
        }
    }
}

/// The audit entries about the event.
fn audit_items(items: &mut Items, audit: &[AuditEntry]) {
    for a in audit {
        items.push(
            a.at,
            format!("Audit: {}", esc(&a.action)),
            format!(
                "by <strong>{}</strong>{}",
                esc(&a.actor),
                json_block(&a.detail)
            ),
        );
    }
}

/// An action: its status, key, parameters, and each attempt.
fn action_html(zone: &Zone, a: &ActionRecord) -> String {
    let in_doubt = a.status == ActionStatus::InDoubt;
    // An in-doubt request is checked downstream by its whole key.
    let key = if in_doubt {
        &a.idempotency_key[..]
    } else {
        &a.idempotency_key[..a.idempotency_key.len().min(16)]
    };
    let mut out = format!(
        "{} <span class=\"meta\">idempotency key <code>{}</code></span>{}",
        badge(a.status.as_str()),
        esc(key),
        json_block(&a.params)
    );
    if in_doubt {
        out.push_str(
            "<div class=\"meta\">In doubt: the intent was recorded before the request left, \
             but the run was cut off before its outcome was. The request may have reached the \
             target with this idempotency key; a later run sends it again with the same key.</div>",
        );
    }
    if a.attempts.is_empty() {
        out.push_str("<div class=\"meta\">no attempt (not executed)</div>");
    } else {
        let _ = write!(
            out,
            "<table><thead><tr><th>#</th><th>Started ({})</th><th>Took</th><th>Response status</th><th>Result</th></tr></thead><tbody>",
            esc(zone.name())
        );
        for t in &a.attempts {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{} ms</td><td>{}</td><td>{}</td></tr>",
                t.attempt,
                time(zone, t.started_at),
                t.duration_ms,
                t.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "—".into()),
                if t.ok {
                    badge("ok")
                } else {
                    format!(
                        "{} {}",
                        badge("failed"),
                        esc(t.error.as_deref().unwrap_or(""))
                    )
                }
            );
        }
        out.push_str("</tbody></table>");
    }
    out
}

/// A run's start: its mode and version, the decision with each stage, the fields it
/// extracted, and the route it took.
fn run_started_html(tr: &TimelineRun) -> String {
    let run = &tr.run;
    let mut out = format!(
        "<div class=\"meta\">mode {} · charter version <code>{}</code></div>",
        esc(&run.mode),
        esc(&run.charter_version[..run.charter_version.len().min(12)])
    );
    if let Some(d) = &run.decision {
        let _ = write!(out, "<div>Decision: {}</div>", decision_line(run));
        if !d.stages.is_empty() {
            out.push_str("<table><thead><tr><th>Stage</th><th>Label</th><th>Confidence</th><th>Accepted</th><th>Note</th></tr></thead><tbody>");
            for st in &d.stages {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&format!("{:?}", st.stage).to_lowercase()),
                    esc(st.label.as_deref().unwrap_or("—")),
                    st.confidence
                        .map(|c| format!("{c:.3}"))
                        .unwrap_or_else(|| "—".into()),
                    if st.accepted { "yes" } else { "no" },
                    esc(&st.note)
                );
            }
            out.push_str("</tbody></table>");
        }
        if !d.fields.is_empty() {
            let fields = serde_json::to_value(&d.fields).unwrap_or(Value::Null);
            let _ = write!(out, "<div>Extracted fields:</div>{}", json_block(&fields));
        }
    }
    match run.route {
        Some(i) => {
            let _ = write!(
                out,
                "<div>Route #{} matched{}</div>",
                i + 1,
                tr.route_rule
                    .as_ref()
                    .map(|r| format!(
                        ": <code>{}</code> → {}",
                        esc(&r.when),
                        esc(&r.actions.join(", "))
                    ))
                    .unwrap_or_default()
            );
        }
        None if run.finished_at.is_some() => out.push_str("<div>No route taken.</div>"),
        None => {}
    }
    out
}

/// A context fetch: whether it worked, the connector, status and time taken.
fn context_html(c: &ContextView) -> String {
    format!(
        "{} <span class=\"meta\">connector {} · status {} · {}</span>{}",
        badge(if c.ok { "ok" } else { "failed" }),
        esc(c.connector.as_deref().unwrap_or("—")),
        c.status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "—".into()),
        c.duration_ms
            .map(|d| format!("{d} ms"))
            .unwrap_or_else(|| "—".into()),
        c.error
            .as_deref()
            .map(|e| format!("<div class=\"meta\">{}</div>", esc(e)))
            .unwrap_or_default()
    )
}

/// A draft: who wrote it, what it cost, and its text.
fn draft_html(d: &DraftView) -> String {
    let u = &d.usage;
    format!(
        "<div class=\"meta\">provider {} · model {} · {} call(s) · {} prompt + {} completion tokens · cost {:.6}{}</div><pre class=\"draft\">{}</pre>",
        esc(d.provider.as_deref().unwrap_or("—")),
        esc(d.model.as_deref().unwrap_or("—")),
        u.calls,
        u.prompt_tokens,
        u.completion_tokens,
        u.cost,
        d.reused_from_run
            .map(|r| format!(" · reused from run <code>{r}</code>"))
            .unwrap_or_default(),
        esc(&d.text)
    )
}
