//! `GET /rollout/{name}`: a charter's routes with their modes, sampling, agreement (in the
//! current mode and over all reviews) and promotion suggestions, with the mode controls for
//! admins; then the draft rewrites chart and the routes' history. Also the pieces of the
//! rollout the charter page shows: which runs count as shadow runs, the agreement line and
//! the link here.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Html;
use charter_core::config::{Charter, Role};
use charter_core::rollout::Agreement;
use charter_store::{AuditFilter, Store};
use serde::Deserialize;

use crate::rollout::{RouteView, route_views};
use crate::ui::charts::{Series, svg_bar_chart};
use crate::ui::html::{badge, csrf_field, esc, page, time, url_enc};
use crate::ui::session::Session;
use crate::ui::{UiError, UiState};

/// The query of the rollout pages: a message after a form, and (review page) one route.
#[derive(Debug, Deserialize)]
pub struct RolloutQuery {
    pub msg: Option<String>,
    pub route: Option<String>,
}

/// The agreement line of the charter page's shadow record: the rate only over runs a human
/// reviewed, and "not enough reviewed" below the minimum (never a rate over nothing).
pub fn agreement_line(
    charter: &str,
    reviewed: usize,
    corrected: usize,
    decided: usize,
    abstained: usize,
) -> String {
    let a = Agreement::new(
        reviewed as u64,
        reviewed.saturating_sub(corrected) as u64,
        corrected as u64,
        charter_core::config::DEFAULT_MIN_REVIEWED,
    );
    let head = match (a.rate, a.enough) {
        (Some(_), true) => format!("<strong>{}</strong>", esc(&capitalise(&a.describe()))),
        _ => format!(
            "<strong>Agreement: not enough reviewed</strong> ({} of {} needed{})",
            a.reviewed,
            a.min_reviewed,
            a.rate
                .map(|r| format!("; {:.1}% so far", 100.0 * r))
                .unwrap_or_default()
        ),
    };
    format!(
        "<p class=\"agreement\">{head} — {decided} shadow runs decided, {reviewed} reviewed by a human, {corrected} of them corrected ({abstained} abstained and went to a human). Sampled reviews per route are on the <a href=\"/rollout/{}\">rollout page</a>.</p>",
        url_enc(charter)
    )
}

/// Whether a run belongs in the shadow record: it ran a route in shadow (outcome `shadow`),
/// or it ran under a shadow charter and executed nothing (it escalated, failed or matched no
/// route). A run whose route executed (completed, or went to a reviewer) is not.
pub fn is_shadow_run(run: &charter_core::model::RunRecord) -> bool {
    use charter_core::model::RunOutcome;
    run.outcome == Some(RunOutcome::Shadow)
        || (run.mode == "shadow"
            && !matches!(
                run.outcome,
                Some(RunOutcome::Completed | RunOutcome::AwaitingApproval | RunOutcome::Rejected)
            ))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The charter `name`, when it exists and the session sees it; 404 otherwise.
pub(super) fn visible_charter<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    name: &str,
) -> Result<std::sync::Arc<Charter>, UiError> {
    match ui.app.runtime.charters.get(name) {
        Some(cr) if s.sees(name) => Ok(cr.charter.clone()),
        _ => Err(UiError::NotFound),
    }
}

fn agreement_html(a: &Agreement) -> String {
    let bar = match (a.rate, a.low, a.high) {
        (Some(r), Some(l), Some(h)) if a.enough => format!(
            "<strong>{:.1}%</strong> <span class=\"meta\">95% interval {:.1}–{:.1}% · {} reviewed, {} corrected</span>",
            100.0 * r,
            100.0 * l,
            100.0 * h,
            a.reviewed,
            a.corrected
        ),
        _ => format!(
            "<span class=\"not-enough\">not enough reviewed</span> <span class=\"meta\">{} of {} needed</span>",
            a.reviewed, a.min_reviewed
        ),
    };
    format!("<span class=\"route-agreement\">{bar}</span>")
}

fn mode_form(name: &str, v: &RouteView, csrf: &str) -> String {
    let mut opts = String::new();
    for m in ["shadow", "approve", "live", "file"] {
        let sel = if m == v.mode.as_str() {
            " selected"
        } else {
            ""
        };
        let label = if m == "file" {
            format!("as the file says ({})", v.declared.as_str())
        } else {
            m.to_string()
        };
        let _ = write!(opts, "<option value=\"{m}\"{sel}>{}</option>", esc(&label));
    }
    format!(
        "<form method=\"post\" action=\"/rollout/{}/routes/{}/mode\" class=\"inline route-mode\">{}<select name=\"mode\" aria-label=\"mode of {}\">{opts}</select> <button type=\"submit\">Set mode</button></form>",
        url_enc(name),
        url_enc(&v.name),
        csrf_field(csrf),
        esc(&v.name)
    )
}

/// `GET /rollout/{name}`: the charter's routes, their modes and reviews.
pub async fn page_rollout<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
    Query(q): Query<RolloutQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let c = visible_charter(&ui, &s, &name)?;
    let views = route_views(&ui.app, &c).await?;
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Rollout of <a href=\"/charters/{}\">{}</a></h1><p class=\"meta\">Each route runs in its own mode: <strong>shadow</strong> records what it would do, <strong>approve</strong> makes every action wait for a reviewer, <strong>live</strong> executes. A share of each route's runs (its <code>sample</code>) is queued for review; agreement counts the samples reviewed in the route's current mode since its mode last changed, with a 95% Wilson interval, and is shown only once enough were reviewed.</p>",
        url_enc(&name),
        esc(&name)
    );
    for v in &views {
        if v.suggest_promotion {
            let _ = write!(
                body,
                "<div class=\"banner suggestion\" data-route=\"{}\">Route <strong>{}</strong> meets its promotion criteria ({}): promote it to live?{}</div>",
                esc(&v.name),
                esc(&v.name),
                esc(&v.agreement.describe()),
                if s.may(Role::Admin) {
                    format!(" {}", promote_button(&name, &v.name, &s.csrf))
                } else {
                    String::new()
                }
            );
        }
    }
    body.push_str("<table class=\"routes\"><thead><tr><th>Route</th><th>Runs</th><th>Mode</th><th>Sample</th><th>Agreement (current mode)</th><th>All reviews</th><th>Queue</th></tr></thead><tbody>");
    for v in &views {
        let override_note = match v.state.as_ref().filter(|st| st.mode.is_some()) {
            Some(st) => format!(
                "<div class=\"meta\">set by {} at {}{}</div>",
                esc(st.by.as_deref().unwrap_or("?")),
                time(ui.zone(), st.at.unwrap_or(0)),
                st.reason
                    .as_deref()
                    .map(|r| format!(": {}", esc(r)))
                    .unwrap_or_default()
            ),
            None => format!(
                "<div class=\"meta\">as {} says</div>",
                if v.own_mode {
                    "the route's <code>mode:</code>"
                } else {
                    "the charter"
                }
            ),
        };
        let control = if s.may(Role::Admin) {
            mode_form(&name, v, &s.csrf)
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr data-route=\"{}\"><td><strong>{}</strong></td><td>{}</td><td><span class=\"route-mode-now\">{}</span>{override_note}{control}</td><td>{:.1}%</td><td>{}</td><td>{}</td><td><a href=\"/rollout/{}/review?route={}\">{} waiting</a></td></tr>",
            esc(&v.name),
            esc(&v.name),
            esc(&v.actions.join(", ")),
            badge(v.mode.as_str()),
            100.0 * v.sample,
            agreement_html(&v.agreement),
            agreement_html(&v.all_time),
            url_enc(&name),
            url_enc(&v.name),
            v.pending
        );
    }
    body.push_str("</tbody></table>");
    let _ = write!(
        body,
        "<p><a href=\"/rollout/{}/review\">Review sampled runs</a></p>",
        url_enc(&name)
    );
    body.push_str(&rewrites_section(&ui, &name).await?);
    body.push_str(&history_section(&ui, &name).await?);
    Ok(Html(page(
        &format!("Rollout · {name}"),
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}

fn promote_button(charter: &str, route: &str, csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/rollout/{}/routes/{}/mode\" class=\"inline\">{}<input type=\"hidden\" name=\"mode\" value=\"live\"><button type=\"submit\" class=\"primary promote-route\">Promote {} to live</button></form>",
        url_enc(charter),
        url_enc(route),
        csrf_field(csrf),
        esc(route)
    )
}

/// How much reviewers rewrote approved drafts, per route and action: charts and a table.
async fn rewrites_section<S: Store>(ui: &UiState<S>, name: &str) -> Result<String, UiError> {
    let stats = ui.app.store.rewrite_stats(Some(name), 0).await?;
    let mut o = String::from("<h2>Draft rewrites</h2>");
    if stats.is_empty() {
        o.push_str("<p class=\"meta\">No approved draft yet.</p>");
        return Ok(o);
    }
    let labels: Vec<String> = stats.keys().map(|(_, r, a)| format!("{r}/{a}")).collect();
    let chars: Vec<f64> = stats
        .values()
        .map(|t| 100.0 * t.distance.char_ratio())
        .collect();
    let words: Vec<f64> = stats
        .values()
        .map(|t| 100.0 * t.distance.word_ratio())
        .collect();
    let _ = write!(
        o,
        "<div class=\"charts\">{}{}</div>",
        svg_bar_chart(
            "Characters rewritten (%)",
            &labels,
            &[Series {
                name: "characters".into(),
                values: chars
            }],
            360,
            180
        ),
        svg_bar_chart(
            "Words rewritten (%)",
            &labels,
            &[Series {
                name: "words".into(),
                values: words
            }],
            360,
            180
        )
    );
    o.push_str("<table class=\"rewrites\"><thead><tr><th>Route / action</th><th>Approved drafts</th><th>Edited</th><th>Characters rewritten</th><th>Words rewritten</th></tr></thead><tbody>");
    for (label, t) in labels.iter().zip(stats.values()) {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}% ({} of {})</td><td>{:.1}% ({} of {})</td></tr>",
            esc(label),
            t.drafts,
            t.edited,
            100.0 * t.distance.char_ratio(),
            t.distance.chars,
            t.distance.draft_chars,
            100.0 * t.distance.word_ratio(),
            t.distance.words,
            t.distance.draft_words
        );
    }
    o.push_str("</tbody></table><p class=\"meta\">The pairs (draft, approved text) export with <code>charter export-rewrites</code>.</p>");
    Ok(o)
}

/// The routes' mode changes and promotion suggestions, newest first.
async fn history_section<S: Store>(ui: &UiState<S>, name: &str) -> Result<String, UiError> {
    let mut entries = Vec::new();
    for action in ["route.mode", "route.promotion_suggested"] {
        entries.extend(
            ui.app
                .store
                .list_audit(AuditFilter {
                    charter: Some(name.to_string()),
                    actor: None,
                    action: Some(action.to_string()),
                    limit: 50,
                    ..Default::default()
                })
                .await?,
        );
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.at));
    let mut o = String::from("<h2>Route history</h2>");
    if entries.is_empty() {
        o.push_str("<p class=\"meta\">No route mode changed yet.</p>");
        return Ok(o);
    }
    o.push_str("<table class=\"history\"><thead><tr><th>When</th><th>Who</th><th>What</th></tr></thead><tbody>");
    for e in entries {
        let d = &e.detail;
        let what = if e.action == "route.mode" {
            format!(
                "route {}: {} → {}{}",
                d["route"].as_str().unwrap_or("?"),
                d["from"].as_str().unwrap_or("?"),
                d["to"].as_str().unwrap_or("?"),
                d["reason"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
        } else {
            format!(
                "route {} meets its promotion criteria",
                d["route"].as_str().unwrap_or("?")
            )
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(ui.zone(), e.at),
            esc(&e.actor),
            esc(&what)
        );
    }
    o.push_str("</tbody></table>");
    Ok(o)
}

/// A link to the rollout page, for the charter page.
pub fn link(name: &str) -> String {
    format!(
        "<a href=\"/rollout/{}\" class=\"rollout-link\">Rollout per route</a>",
        url_enc(name)
    )
}
