//! `GET /rollout/{name}/review`: the review queue of a charter's sampled runs (of one route
//! when asked), oldest first. Each sample's card shows the payload and the decision; a
//! reviewer marks the decision and each action right or wrong (and picks the right label).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Html;
use charter_core::config::Role;
use charter_core::model::RunRecord;
use charter_store::Store;
use charter_store::rollout::{NewSample, SampleFilter};
use serde_json::{Value, json};

use super::rollout::{RolloutQuery, visible_charter};
use crate::ui::html::{badge, csrf_field, esc, json_block, page, time, url_enc};
use crate::ui::session::Session;
use crate::ui::{UiError, UiState};

/// `GET /rollout/{name}/review`: sampled runs waiting for a review, oldest first.
pub async fn page_review<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
    Query(q): Query<RolloutQuery>,
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
        body.push_str(&sample_card(&ui, &s, &name, &labels, &sample.sample).await?);
    }
    Ok(Html(page(
        &format!("Review · {name}"),
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}

/// One sample's card: its route, mode, event and time, the payload, the decision, and for
/// reviewers the review form.
async fn sample_card<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    name: &str,
    labels: &[String],
    smp: &NewSample,
) -> Result<String, UiError> {
    let run = ui
        .app
        .store
        .runs_for_event(smp.event_id)
        .await?
        .into_iter()
        .find(|r| r.id == smp.run_id);
    let event = ui.app.store.get_event(smp.event_id).await?;
    let mut body = String::new();
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
    if !s.may(Role::Reviewer) {
        body.push_str("<p class=\"meta\">Only reviewers review samples.</p></div>");
        return Ok(body);
    }
    body.push_str(&review_form(s, name, labels, smp, run.as_ref()));
    Ok(body)
}

/// The review form: the decision right or wrong (with the right label), each action right
/// or wrong (with what the run recorded for it), and a note.
fn review_form(
    s: &Session,
    name: &str,
    labels: &[String],
    smp: &NewSample,
    run: Option<&RunRecord>,
) -> String {
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
    let mut body = String::new();
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/samples/{}/review\" class=\"review\">{}<input type=\"hidden\" name=\"next\" value=\"/rollout/{}/review\">",
        smp.id,
        csrf_field(&s.csrf),
        url_enc(name)
    );
    let _ = write!(
        body,
        "<p><label><input type=\"radio\" name=\"decision\" value=\"right\" required> decision right</label> <label><input type=\"radio\" name=\"decision\" value=\"wrong\"> decision wrong</label>"
    );
    if !labels.is_empty() {
        let mut opts = String::from("<option value=\"\">(right label)</option>");
        for l in labels {
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
    body
}
