//! `GET /runs`: runs across events, newest first (or oldest first), filtered by charter and
//! outcome, paged by cursor with the true total (the same store page and count as
//! `GET /api/v1/runs`).

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Html;
use charter_core::model::RunRecord;
use charter_store::{RunFilter, Store};
use serde::Deserialize;

use super::{Pager, charter_select, decision_line, event_link, non_empty};
use crate::lists;
use crate::ui::html::{badge, esc, page, time, url_enc};
use crate::ui::session::Session;
use crate::ui::{UiError, UiState};

/// Runs on one page.
const RUNS_PAGE: usize = 50;

/// The outcomes offered in the filter (`running`: not finished yet).
const OUTCOMES: &[&str] = &[
    "completed",
    "shadow",
    "no_route",
    "failed",
    "escalated",
    "awaiting_approval",
    "rejected",
    "interrupted",
    "running",
];

#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    pub charter: Option<String>,
    pub outcome: Option<String>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub msg: Option<String>,
}

/// `GET /runs`: the runs list.
pub async fn runs<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<RunsQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let charter = non_empty(q.charter);
    let outcome_text = non_empty(q.outcome);
    let (outcome, running) = lists::parse_outcome(outcome_text.as_deref())?;
    let sort_text = non_empty(q.sort);
    let sort = lists::parse_sort(sort_text.as_deref())?;
    let cursor = non_empty(q.cursor);
    let after = lists::created_cursor(cursor.as_deref())?;
    let page_of = if charter.as_deref().is_some_and(|c| !s.sees(c)) {
        lists::Page {
            items: Vec::new(),
            total: 0,
            next: None,
        }
    } else {
        lists::runs(
            &ui.app.store,
            RunFilter {
                charter: charter.clone(),
                outcome,
                running,
                since: None,
                until: None,
                charters: s.charters.clone(),
                sort,
                after,
                limit: RUNS_PAGE,
            },
        )
        .await?
    };
    let mut body = filter_form(
        &ui,
        &s,
        [
            charter.as_deref(),
            outcome_text.as_deref(),
            sort_text.as_deref(),
        ],
    );
    body.push_str(&runs_table(&ui, &page_of.items));
    let params = [
        ("charter", charter.as_deref()),
        ("outcome", outcome_text.as_deref()),
        ("sort", sort_text.as_deref()),
    ];
    let pager = Pager {
        path: "/runs",
        params: &params,
        cursor: cursor.as_deref(),
        previous: None,
        next: page_of.next.as_deref(),
    };
    body.push_str(&pager.html(page_of.items.len(), page_of.total));
    Ok(Html(page(
        "Runs",
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}

/// The heading and the filter form; `chosen` are the charter, outcome and sort chosen.
fn filter_form<S: Store>(ui: &UiState<S>, s: &Session, chosen: [Option<&str>; 3]) -> String {
    let [charter, outcome_text, sort_text] = chosen;
    let mut body = String::from(
        "<h1>Runs</h1><p class=\"meta\">Every run of every event: how it was decided, the route it took and how it ended. An event's timeline shows its runs with their actions.</p><form class=\"filters\" method=\"get\" action=\"/runs\">",
    );
    let mut options = String::from("<option value=\"\">any</option>");
    for o in OUTCOMES {
        let _ = write!(
            options,
            "<option value=\"{o}\"{}>{}</option>",
            if outcome_text == Some(o) {
                " selected"
            } else {
                ""
            },
            o.replace('_', " ")
        );
    }
    let _ = write!(
        body,
        "<label>Charter {}</label><label>Outcome <select name=\"outcome\">{options}</select></label><label>Order <select name=\"sort\"><option value=\"\">newest first</option><option value=\"oldest\"{}>oldest first</option></select></label><button type=\"submit\">Show</button></form>",
        charter_select(ui, s, charter),
        if sort_text == Some("oldest") {
            " selected"
        } else {
            ""
        },
    );
    body
}

/// The table of runs (or a line saying none matches).
fn runs_table<S: Store>(ui: &UiState<S>, runs: &[RunRecord]) -> String {
    if runs.is_empty() {
        return "<p class=\"meta\">No run matches.</p>".into();
    }
    let mut body = format!(
        "<table><thead><tr><th>Started ({})</th><th>Charter</th><th>Event</th><th>Outcome</th><th>Decision</th><th>Actions</th></tr></thead><tbody>",
        esc(ui.zone().name())
    );
    for r in runs {
        let outcome = r.outcome.map(|o| o.as_str()).unwrap_or("running");
        let actions: Vec<String> = r
            .actions
            .iter()
            .map(|a| format!("{} {}", esc(&a.action), badge(a.status.as_str())))
            .collect();
        let _ = write!(
            body,
            "<tr data-run=\"{}\"><td>{}</td><td><a href=\"/charters/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.id,
            time(ui.zone(), r.started_at),
            url_enc(&r.charter),
            esc(&r.charter),
            event_link(r.event_id),
            badge(outcome),
            decision_line(r),
            actions.join(" · "),
        );
    }
    body.push_str("</tbody></table>");
    body
}
