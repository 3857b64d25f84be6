//! `GET /rejected`: payloads kept because they broke their charter's contract, with each
//! violation and the body as received; admins can replay one once the contract is fixed.
//! Paged by cursor (newest first unless sorted oldest first) with the true total, links to
//! the first, previous and next pages, and a time range on when the payloads arrived.

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Html;
use charter_core::config::Role;
use charter_core::model::RejectedPayload;
use charter_store::{RejectedFilter, Store};
use serde::Deserialize;

use super::{Pager, charter_select, form_time, non_empty};
use crate::lists;
use crate::ui::html::{button_form, esc, page, time, url_enc};
use crate::ui::session::Session;
use crate::ui::{UiError, UiState};

/// Payloads on one page.
const REJECTED_PAGE: usize = 50;

#[derive(Debug, Default, Deserialize)]
pub struct RejectedQuery {
    pub charter: Option<String>,
    /// Received at or after / before (`datetime-local`, on the configured clock).
    pub since: Option<String>,
    pub until: Option<String>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub msg: Option<String>,
}

/// `GET /rejected`: the rejected payloads page.
pub async fn rejected<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<RejectedQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let charter = non_empty(q.charter);
    let since_text = non_empty(q.since);
    let until_text = non_empty(q.until);
    let since = form_time(&ui, since_text.as_deref(), "since")?;
    let until = form_time(&ui, until_text.as_deref(), "until")?;
    let sort_text = non_empty(q.sort);
    let sort = lists::parse_sort(sort_text.as_deref())?;
    let cursor = non_empty(q.cursor);
    let after = lists::event_cursor(cursor.as_deref())?;
    let filter = RejectedFilter {
        charter: charter.clone(),
        charters: s.charters.clone(),
        since,
        until,
        sort,
        after,
        limit: REJECTED_PAGE,
    };
    let store = &ui.app.store;
    let (page_of, previous) = if charter.as_deref().is_some_and(|c| !s.sees(c)) {
        let empty = lists::Page {
            items: Vec::new(),
            total: 0,
            next: None,
        };
        (empty, None)
    } else {
        let page_of = lists::rejected(store, filter.clone()).await?;
        let previous = match (&cursor, page_of.items.first()) {
            (Some(_), Some(first)) => lists::rejected_previous(store, filter, first.id).await?,
            _ => None,
        };
        (page_of, previous)
    };
    let mut body = filter_form(
        &ui,
        &s,
        [
            charter.as_deref(),
            since_text.as_deref(),
            until_text.as_deref(),
            sort_text.as_deref(),
        ],
    );
    body.push_str(&rejected_table(&ui, &s, &page_of.items));
    let params = [
        ("charter", charter.as_deref()),
        ("since", since_text.as_deref()),
        ("until", until_text.as_deref()),
        ("sort", sort_text.as_deref()),
    ];
    let pager = Pager {
        path: "/rejected",
        params: &params,
        cursor: cursor.as_deref(),
        previous: previous.as_ref().map(|p| p.as_deref()),
        next: page_of.next.as_deref(),
    };
    body.push_str(&pager.html(page_of.items.len(), page_of.total));
    Ok(Html(page(
        "Rejected payloads",
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}

/// The heading and the filter form; `chosen` are the charter, start, end and sort chosen.
fn filter_form<S: Store>(ui: &UiState<S>, s: &Session, chosen: [Option<&str>; 4]) -> String {
    let [charter, since_text, until_text, sort_text] = chosen;
    let mut body = String::from(
        "<h1>Rejected payloads</h1><p class=\"meta\">Deliveries that broke their charter's input contract are kept here with what was wrong. Once the contract (or the sender) is fixed, a replay checks the payload again and stores it as an event.</p><form class=\"filters\" method=\"get\" action=\"/rejected\">",
    );
    let _ = write!(
        body,
        "<label>Charter {}</label><label>From <input type=\"datetime-local\" name=\"since\" value=\"{}\"></label><label>To <input type=\"datetime-local\" name=\"until\" value=\"{}\"></label><label>Order <select name=\"sort\"><option value=\"\">newest first</option><option value=\"oldest\"{}>oldest first</option></select></label><button type=\"submit\">Show</button></form>",
        charter_select(ui, s, charter),
        esc(since_text.unwrap_or("")),
        esc(until_text.unwrap_or("")),
        if sort_text == Some("oldest") {
            " selected"
        } else {
            ""
        },
    );
    body
}

/// The table of payloads with their violations and, for admins, Replay.
fn rejected_table<S: Store>(ui: &UiState<S>, s: &Session, items: &[RejectedPayload]) -> String {
    if items.is_empty() {
        return "<p class=\"meta\">Nothing was rejected.</p>".into();
    }
    let mut body = format!(
        "<table><thead><tr><th>Payload</th><th>Charter</th><th>Received ({})</th><th>Source</th><th>Violations</th><th></th></tr></thead><tbody>",
        esc(ui.zone().name())
    );
    for r in items {
        let violations: String = r
            .reasons
            .iter()
            .map(|v| format!("<li><code>{}</code></li>", esc(v)))
            .collect();
        let replay = if s.may(Role::Admin) {
            button_form(&format!("/rejected/{}/replay", r.id), &s.csrf, "Replay", "")
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr><td><code>{}</code><details><summary>body</summary><pre class=\"json\">{}</pre></details></td><td><a href=\"/charters/{}\">{}</a></td><td>{}</td><td>{}</td><td><ul>{violations}</ul></td><td>{replay}</td></tr>",
            r.id,
            esc(&r.body),
            url_enc(&r.charter),
            esc(&r.charter),
            time(ui.zone(), r.received_at),
            esc(&r.source),
        );
    }
    body.push_str("</tbody></table>");
    body
}
