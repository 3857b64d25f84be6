//! The rollout pages: a charter's routes with their modes, agreement and promotion
//! suggestions (`/rollout/{name}`), the review queue of sampled runs
//! (`/rollout/{name}/review`), and the rewrite chart of drafts.
//!
//! Every change goes through the operations in [`crate::ops::rollout`] as the session's
//! caller, as the other pages' forms do: a reviewer reviews samples, only an admin changes a route's mode.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{Html, Response};
use charter_core::config::{Charter, Mode, Role};
use charter_core::rollout::Agreement;
use charter_store::rollout::SampleFilter;
use charter_store::{AuditFilter, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use super::html::{badge, csrf_field, esc, json_block, page, time, url_enc};
use super::{UiError, UiState, redirect};
use crate::report::{Series, svg_bar_chart};
use crate::rollout::{RouteView, route_views};

#[derive(Debug, Deserialize)]
pub struct MsgQuery {
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

fn visible_charter<S: Store>(
    ui: &UiState<S>,
    s: &super::session::Session,
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
    Query(q): Query<MsgQuery>,
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
                if s.role >= Role::Admin {
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
        let control = if s.role >= Role::Admin {
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

/// `GET /rollout/{name}/review`: sampled runs waiting for a review, oldest first.
pub async fn page_review<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
    Query(q): Query<MsgQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let c = visible_charter(&ui, &s, &name)?;
    let queue = ui
        .app
        .store
        .samples(SampleFilter {
            charter: Some(name.clone()),
            route: q.route.clone().filter(|r| !r.is_empty()),
            reviewed: Some(false),
            limit: 20,
        })
        .await?;
    let mut body = format!(
        "<h1>Review sampled runs of <a href=\"/rollout/{}\">{}</a>{}</h1><p class=\"meta\">Mark the decision and each action right or wrong. When the decision was wrong, pick the right label: it is kept as a correction (exported with <code>charter export-corrections</code>).</p>",
        url_enc(&name),
        esc(&name),
        q.route
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(|r| format!(" · route {}", esc(r)))
            .unwrap_or_default()
    );
    if queue.is_empty() {
        body.push_str("<p class=\"meta empty-queue\">Nothing waits for a review.</p>");
    }
    let labels = c
        .decide
        .as_ref()
        .map(|d| d.labels.clone())
        .unwrap_or_default();
    for sample in &queue {
        let smp = &sample.sample;
        let run = ui
            .app
            .store
            .runs_for_event(smp.event_id)
            .await?
            .into_iter()
            .find(|r| r.id == smp.run_id);
        let event = ui.app.store.get_event(smp.event_id).await?;
        let names: Vec<String> = smp
            .actions
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let recorded: BTreeMap<String, Value> = run
            .as_ref()
            .map(|r| {
                r.actions
                    .iter()
                    .map(|a| {
                        (
                            a.action.clone(),
                            json!({"status": a.status.as_str(), "params": a.params}),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let _ = write!(
            body,
            "<div class=\"card sample\" data-sample=\"{}\"><h3>Route {} · {} · <a href=\"/events/{}\">event</a> · {}</h3>",
            smp.id,
            esc(&smp.route),
            badge(&smp.mode),
            smp.event_id,
            time(ui.zone(), smp.created_at)
        );
        if let Some(ev) = &event {
            let _ = write!(
                body,
                "<details><summary>Payload</summary>{}</details>",
                json_block(&ev.event.payload)
            );
        }
        let decision = run.as_ref().and_then(|r| r.decision.as_ref());
        let _ = write!(
            body,
            "<p>Decision: <strong>{}</strong>{}</p>",
            esc(smp
                .label
                .as_deref()
                .unwrap_or("(none: the charter does not decide)")),
            decision
                .map(|d| format!(
                    " <span class=\"meta\">confidence {:.2}: {}</span>",
                    d.confidence,
                    esc(&d.reason)
                ))
                .unwrap_or_default()
        );
        if s.role < Role::Reviewer {
            body.push_str("<p class=\"meta\">Only reviewers review samples.</p></div>");
            continue;
        }
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/samples/{}/review\" class=\"review\">{}<input type=\"hidden\" name=\"next\" value=\"/rollout/{}/review\">",
            smp.id,
            csrf_field(&s.csrf),
            url_enc(&name)
        );
        let _ = write!(
            body,
            "<p><label><input type=\"radio\" name=\"decision\" value=\"right\" required> decision right</label> <label><input type=\"radio\" name=\"decision\" value=\"wrong\"> decision wrong</label>"
        );
        if !labels.is_empty() {
            let mut opts = String::from("<option value=\"\">(right label)</option>");
            for l in &labels {
                let _ = write!(opts, "<option value=\"{}\">{}</option>", esc(l), esc(l));
            }
            let _ = write!(
                body,
                " <select name=\"right_label\" aria-label=\"right label\">{opts}</select>"
            );
        }
        body.push_str("</p>");
        for a in &names {
            let rec = recorded.get(a);
            let _ = write!(
                body,
                "<div class=\"sample-action\"><strong>{}</strong> {} <label><input type=\"radio\" name=\"action.{}\" value=\"right\" required> right</label> <label><input type=\"radio\" name=\"action.{}\" value=\"wrong\"> wrong</label>{}</div>",
                esc(a),
                rec.and_then(|r| r["status"].as_str())
                    .map(badge)
                    .unwrap_or_default(),
                esc(a),
                esc(a),
                rec.map(|r| format!(
                    "<details><summary>parameters</summary>{}</details>",
                    json_block(&r["params"])
                ))
                .unwrap_or_default()
            );
        }
        body.push_str("<p><input type=\"text\" name=\"note\" placeholder=\"note (optional)\" class=\"wide\"></p><button type=\"submit\" class=\"primary\">Submit review</button></form></div>");
    }
    Ok(Html(page(
        &format!("Review · {name}"),
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}

/// `POST /samples/{id}/review` (form): the review, through the one review operation.
pub async fn post_review<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let decision_right = match form.get("decision").map(String::as_str) {
        Some("right") => true,
        Some("wrong") => false,
        _ => {
            return Err(UiError::BadRequest(
                "say whether the decision was right or wrong".into(),
            ));
        }
    };
    let actions = form
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("action.")?.to_string(), v == "right")))
        .collect();
    let right_label = form
        .get("right_label")
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !decision_right)
        .map(str::to_string);
    let review = crate::rollout::ReviewBody {
        decision_right: Some(decision_right),
        right_label,
        actions,
        note: form
            .get("note")
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(str::to_string),
    };
    let caller = crate::auth::Caller::from(&s);
    let done = crate::ops::rollout::review(&ui.app, &caller, &id, Ok(review)).await?;
    let next = super::local_path(form.get("next").map(String::as_str), "/charters");
    let agreed = done
        .sample
        .review
        .as_ref()
        .is_some_and(|r| r.decision_right && r.actions.values().all(|right| *right));
    let code = if agreed {
        "review_agreed"
    } else {
        "review_corrected"
    };
    Ok(redirect(&super::flash::with_code(&next, code, None)))
}

/// `POST /rollout/{name}/routes/{route}/mode` (form, admin): set a route's mode.
pub async fn post_route_mode<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path((name, route)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let change = crate::rollout::RouteModeBody {
        mode: form.get("mode").cloned().unwrap_or_default(),
        reason: None,
    };
    let caller = crate::auth::Caller::from(&s);
    let changed =
        crate::ops::rollout::set_route_mode(&ui.app, &caller, (&name, &route), Ok(change)).await?;
    let code = match changed.mode {
        Mode::Shadow => "route_shadow",
        Mode::Approve => "route_approve",
        Mode::Live => "route_live",
    };
    Ok(redirect(&super::flash::with_code(
        &format!("/rollout/{}", url_enc(&name)),
        code,
        None,
    )))
}

/// A link to the rollout page, for the charter page.
pub fn link(name: &str) -> String {
    format!(
        "<a href=\"/rollout/{}\" class=\"rollout-link\">Rollout per route</a>",
        url_enc(name)
    )
}
