//! `GET /charters/{name}`: one charter. Its header table (owner, connectors, webhook,
//! version, events by status, pending work) with the operator buttons, the rollout link and
//! the time-range replay form (admins); the last week's measurements with their charts; its
//! history (pauses, mode changes, replays); and the shadow record: what its shadow runs
//! would have done and whether a human later agreed.

use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Html;
use charter_core::config::{Charter, Role};
use charter_core::model::RunRecord;
use charter_store::{
    ApprovalFilter, ApprovalRecord, ApprovalStatus, EscalationFilter, EscalationRecord,
    EscalationStatus, EventFilter, Store,
};
use uuid::Uuid;

use super::charters::{Summary, counts_text, operator_buttons, summary};
use super::{MsgQuery, PAGE_LIMIT, decision_line, event_link};
use crate::ui::html::{badge, csrf_field, esc, json_block, page, time, url_enc};
use crate::ui::session::Session;
use crate::ui::{UiError, UiState, charts};

/// Records read for the shadow record's comparison (a bounded sample, not a count).
const COUNT_LIMIT: usize = 10_000;
/// The window of the charter page's measurements and charts.
const MEASURE_WINDOW_MS: i64 = 7 * 24 * 3_600_000;
/// Size of each chart on the charter page, in pixels.
const CHART_W: u32 = 360;
const CHART_H: u32 = 160;

/// One shadow run and what a human later said about the same event.
struct ShadowRow {
    run: RunRecord,
    /// `Some(true)`: a human later corrected it; `Some(false)`: a human later agreed;
    /// `None`: no human looked at this event afterwards.
    corrected: Option<bool>,
    note: String,
}

/// `GET /charters/{name}`: the charter page (404 outside the session's scope).
pub async fn charter<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
    Query(q): Query<MsgQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let Some(cr) = ui.app.runtime.charters.get(&name) else {
        return Err(UiError::NotFound);
    };
    if !s.sees(&name) {
        return Err(UiError::NotFound);
    }
    let store = &ui.app.store;
    let paused = store.paused().await?;
    let pending = store.pending_counts().await?;
    let sum = summary(&ui, &name, &paused, &pending).await?;
    let c = &cr.charter;
    let mut body = header_table(&name, c, &s, &sum);
    let _ = write!(body, "<p>{}</p>", super::rollout::link(&name));
    body.push_str(&replay_range_form(&ui, &s, &name));
    body.push_str(&measurements(&ui, &name, c).await?);
    body.push_str(&super::audit::history(&ui, &name).await?);
    let rows = shadow_rows(&ui, &name).await?;
    body.push_str(&shadow_record(&ui, &name, &rows));
    Ok(Html(page(
        &name,
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}

/// The heading, the charter's facts and counts, and the operator buttons.
fn header_table(name: &str, c: &Charter, s: &Session, sum: &Summary) -> String {
    format!(
        "<h1>{} {} {}</h1><p>{}</p><table><tbody>\
         <tr><th>Owner</th><td>{}</td></tr><tr><th>Maintainer</th><td>{}</td></tr>\
         <tr><th>System of record</th><td>{}</td></tr><tr><th>Connectors</th><td>{}</td></tr>\
         <tr><th>Webhook</th><td>{}</td></tr><tr><th>Version</th><td><code>{}</code></td></tr>\
         <tr><th>Events by status</th><td>{}</td></tr>\
         <tr><th>Pending work</th><td>{} queued · <a href=\"/inbox?charter={}\">{} approvals · {} escalations</a></td></tr>\
         </tbody></table><div class=\"actions\">{}</div>",
        esc(name),
        badge(&sum.mode),
        if sum.paused {
            badge("paused")
        } else {
            String::new()
        },
        esc(&c.description),
        esc(&c.owner),
        esc(&c.maintainer),
        esc(&c.system_of_record),
        esc(&c.uses.join(", ")),
        esc(c
            .trigger
            .webhook
            .as_ref()
            .map(|w| w.path.as_str())
            .unwrap_or("—")),
        esc(&c.version[..c.version.len().min(12)]),
        counts_text(&sum.counts),
        sum.queued,
        url_enc(name),
        sum.approvals,
        sum.escalations,
        operator_buttons(name, s, sum, &format!("/charters/{}", url_enc(name)))
    )
}

/// The time-range replay form (admins only; empty otherwise).
fn replay_range_form<S: Store>(ui: &UiState<S>, s: &Session, name: &str) -> String {
    if !s.may(Role::Admin) {
        return String::new();
    }
    format!(
        "<form method=\"post\" action=\"/charters/{0}/replay-range\" class=\"actions\">{1}\
         <input type=\"hidden\" name=\"back\" value=\"/charters/{0}\">\
         <label>Replay events received from <input type=\"datetime-local\" name=\"since\" step=\"1\"></label> \
         <label>until <input type=\"datetime-local\" name=\"until\" step=\"1\"></label> \
         <span class=\"meta\">({2}; either end may be left open; actions that already succeeded are not executed again)</span> \
         <button type=\"submit\">Replay range</button></form>",
        url_enc(name),
        csrf_field(&s.csrf),
        esc(ui.zone().name())
    )
}

/// Measurements over the last week, with server-rendered charts and the figures.
async fn measurements<S: Store>(
    ui: &UiState<S>,
    name: &str,
    c: &Charter,
) -> Result<String, UiError> {
    let now = crate::now_millis();
    let report = charter_store::ReportStore::report(
        &ui.app.store,
        charter_store::ReportQuery {
            charter: name.to_string(),
            since: now.saturating_sub(MEASURE_WINDOW_MS),
            until: now + 1,
            buckets: crate::report::DEFAULT_BUCKETS,
        },
    )
    .await?;
    let declared: Vec<String> = c.measure.names().map(str::to_string).collect();
    Ok(format!(
        "<h2>Measurements, last 7 days</h2><div class=\"charts\">{}{}{}</div>\
         <details><summary>Figures</summary><pre>{}</pre></details>",
        charts::volume_chart(&report, CHART_W, CHART_H),
        charts::outcome_chart(&report, CHART_W, CHART_H),
        charts::cycle_chart(&report, CHART_W, CHART_H),
        esc(&crate::report::render_text(&report, "7d", &declared)),
    ))
}

/// The shadow runs among the charter's latest events, each with what a human later said
/// about the same event (a resolved escalation, a decided approval).
async fn shadow_rows<S: Store>(ui: &UiState<S>, name: &str) -> Result<Vec<ShadowRow>, UiError> {
    let store = &ui.app.store;
    let events = store
        .list_events(EventFilter {
            charter: Some(name.to_string()),
            limit: PAGE_LIMIT,
            ..EventFilter::default()
        })
        .await?;
    let resolved = store
        .list_escalations(EscalationFilter {
            charter: Some(name.to_string()),
            status: Some(EscalationStatus::Resolved),
            limit: COUNT_LIMIT,
            ..EscalationFilter::default()
        })
        .await?;
    let decided_approvals = store
        .list_approvals(ApprovalFilter {
            charter: Some(name.to_string()),
            limit: COUNT_LIMIT,
            ..ApprovalFilter::default()
        })
        .await?;
    let mut rows: Vec<ShadowRow> = Vec::new();
    for e in &events {
        for run in store.runs_for_event(e.event.id).await? {
            // A route's own mode may differ from the charter's (see `rollout`): a run whose
            // route executed is not a shadow run, one whose route was in shadow is.
            if !super::rollout::is_shadow_run(&run) {
                continue;
            }
            rows.push(later_verdict(
                run,
                e.event.id,
                &resolved,
                &decided_approvals,
            ));
        }
    }
    Ok(rows)
}

/// What humans decided about `event` after `run` started: corrected when one labelled it
/// differently, or rejected or edited an approval for it; agreed otherwise.
fn later_verdict(
    run: RunRecord,
    event: Uuid,
    resolved: &[EscalationRecord],
    decided_approvals: &[ApprovalRecord],
) -> ShadowRow {
    let label = run.decision.as_ref().and_then(|d| d.label.clone());
    let later = |t: Option<i64>| t.is_some_and(|t| t >= run.started_at);
    let mut corrected = None;
    let mut note = String::new();
    for x in resolved
        .iter()
        .filter(|x| x.event_id == event && later(x.resolved_at))
    {
        if let Some(r) = &x.resolution {
            let differs = label.as_deref() != Some(r.label.as_str());
            corrected = Some(corrected.unwrap_or(false) || differs);
            note = format!(
                "{} decided {}",
                x.resolved_by.as_deref().unwrap_or("a human"),
                r.label
            );
        }
    }
    for a in decided_approvals
        .iter()
        .filter(|a| a.event_id == event && later(a.decided_at))
    {
        let differs = a.status == ApprovalStatus::Rejected || a.edited_params.is_some();
        if a.status == ApprovalStatus::Expired {
            continue;
        }
        corrected = Some(corrected.unwrap_or(false) || differs);
        note = format!(
            "{} {} {}{}",
            a.decided_by.as_deref().unwrap_or("a human"),
            a.status.as_str(),
            a.action,
            if a.edited_params.is_some() {
                " with an edit"
            } else {
                ""
            }
        );
    }
    ShadowRow {
        run,
        corrected,
        note,
    }
}

/// The shadow record: what agreement means, the agreement line, and one row per run.
fn shadow_record<S: Store>(ui: &UiState<S>, name: &str, rows: &[ShadowRow]) -> String {
    let decided: Vec<&ShadowRow> = rows
        .iter()
        .filter(|r| r.run.decision.as_ref().is_none_or(|d| d.label.is_some()))
        .collect();
    let corrected = decided.iter().filter(|r| r.corrected == Some(true)).count();
    let reviewed = decided.iter().filter(|r| r.corrected.is_some()).count();
    let mut body = String::from("<h2>Shadow record</h2>");
    body.push_str("<p class=\"meta\">In shadow mode the charter decides and records what it would have done, and executes nothing. <strong>Agreement</strong> is the share of the shadow runs a human reviewed that were <em>not</em> corrected, shown once enough were reviewed. A run counts as corrected when, after it, a human decided the same event differently (resolved an escalation with another label) or rejected or edited an approval for it. Runs no human looked at are not counted.</p>");
    if decided.is_empty() {
        body.push_str(
            "<p class=\"meta\">No shadow run with a decision among the latest events.</p>",
        );
    } else if reviewed == 0 {
        let _ = write!(
            body,
            "<p class=\"agreement\"><strong>Agreement: not reviewed</strong> — {} shadow runs decided, none reviewed by a human yet, so there is nothing to agree with ({} abstained and went to a human).</p>",
            decided.len(),
            rows.len() - decided.len()
        );
    } else {
        body.push_str(&super::rollout::agreement_line(
            name,
            reviewed,
            corrected,
            decided.len(),
            rows.len() - decided.len(),
        ));
    }
    if !rows.is_empty() {
        body.push_str(&shadow_table(ui, rows));
    }
    body
}

/// One row per shadow run: its decision, what it would have run, and what a human said.
fn shadow_table<S: Store>(ui: &UiState<S>, rows: &[ShadowRow]) -> String {
    let mut body = format!(
        "<table><thead><tr><th>Event</th><th>Run started ({})</th><th>Decision</th><th>Would have run</th><th>A human later</th></tr></thead><tbody>",
        esc(ui.zone().name())
    );
    for r in rows {
        let would: Vec<String> = r
            .run
            .actions
            .iter()
            .map(|a| {
                format!(
                    "<details><summary>{} {}</summary>{}</details>",
                    esc(&a.action),
                    badge(a.status.as_str()),
                    json_block(&a.params)
                )
            })
            .collect();
        let later = match r.corrected {
            None => "<span class=\"meta\">not reviewed</span>".to_string(),
            Some(false) => format!("{} {}", badge("agreed"), esc(&r.note)),
            Some(true) => format!("{} {}", badge("corrected"), esc(&r.note)),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            event_link(r.run.event_id),
            time(ui.zone(), r.run.started_at),
            decision_line(&r.run),
            if would.is_empty() {
                "<span class=\"meta\">nothing</span>".to_string()
            } else {
                would.join("")
            },
            later
        );
    }
    body.push_str("</tbody></table>");
    body
}
