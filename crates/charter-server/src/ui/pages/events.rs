//! `GET /events`: the events list, newest first (or oldest first), filtered by charter,
//! status and time received, or found by dedupe key or id; paged by cursor with the true
//! total. Each row links to the event's timeline.

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Html;
use charter_core::model::{EventRecord, EventStatus};
use charter_store::{EventFilter, Store};
use serde::Deserialize;

use super::{PAGE_LIMIT, Pager, charter_select, event_link, form_time, non_empty};
use crate::ui::html::{badge, esc, page, time, url_enc};
use crate::ui::session::Session;
use crate::ui::{UiError, UiState};

/// Events on one page of the events list.
const EVENTS_PAGE: usize = 100;

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    pub charter: Option<String>,
    pub status: Option<String>,
    /// An exact dedupe key, or an event id or its first hexadecimal digits.
    pub q: Option<String>,
    /// Received at or after / before (`datetime-local`, on the configured clock).
    pub since: Option<String>,
    pub until: Option<String>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub msg: Option<String>,
}

/// The list's filters as the form sent them (empty fields dropped).
struct Filters {
    charter: Option<String>,
    status: Option<EventStatus>,
    search: Option<String>,
    since_text: Option<String>,
    until_text: Option<String>,
    sort_text: Option<String>,
    cursor: Option<String>,
}

/// One page of the list: the events, the true total and the next page's cursor.
type Listing = (Vec<EventRecord>, u64, Option<String>);

/// `GET /events`: the events list, or a search's matches.
pub async fn events<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<EventsQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let status = match non_empty(q.status.clone()) {
        None => None,
        Some(st) => Some(
            EventStatus::parse(&st)
                .ok_or_else(|| UiError::BadRequest(format!("unknown status `{st}`")))?,
        ),
    };
    let f = Filters {
        charter: non_empty(q.charter),
        status,
        search: non_empty(q.q).map(|v| v.trim().to_string()),
        since_text: non_empty(q.since),
        until_text: non_empty(q.until),
        sort_text: non_empty(q.sort),
        cursor: non_empty(q.cursor),
    };
    let (list, total, next) = listing(&ui, &s, &f).await?;
    let mut body = filter_form(&ui, &s, &f);
    body.push_str(&events_table(&ui, &list));
    let params = [
        ("charter", f.charter.as_deref()),
        ("status", q.status.as_deref().filter(|_| f.status.is_some())),
        ("since", f.since_text.as_deref()),
        ("until", f.until_text.as_deref()),
        ("sort", f.sort_text.as_deref()),
    ];
    let pager = Pager {
        path: "/events",
        params: &params,
        cursor: f.cursor.as_deref(),
        previous: None,
        next: next.as_deref(),
    };
    body.push_str(&pager.html(list.len(), total));
    Ok(Html(page(
        "Events",
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}

/// The events the filters select: a search's matches (one page, no cursor), or a page of
/// the filtered list; nothing for a charter outside the session's scope.
async fn listing<S: Store>(ui: &UiState<S>, s: &Session, f: &Filters) -> Result<Listing, UiError> {
    let since = form_time(ui, f.since_text.as_deref(), "since")?;
    let until = form_time(ui, f.until_text.as_deref(), "until")?;
    let sort = crate::lists::parse_sort(f.sort_text.as_deref())?;
    let after = crate::lists::event_cursor(f.cursor.as_deref())?;
    let store = &ui.app.store;
    if !f.charter.as_deref().is_none_or(|c| s.sees(c)) {
        return Ok((Vec::new(), 0, None));
    }
    if let Some(text) = &f.search {
        let found = crate::lists::search_events(store, &s.charters, text, PAGE_LIMIT).await?;
        let n = found.len() as u64;
        return Ok((found, n, None));
    }
    let page = crate::lists::events(
        store,
        EventFilter {
            charter: f.charter.clone(),
            status: f.status,
            since,
            until,
            charters: s.charters.clone(),
            sort,
            after,
            limit: EVENTS_PAGE,
            ..EventFilter::default()
        },
    )
    .await?;
    Ok((page.items, page.total, page.next))
}

/// The heading and the filter form, filled in with the current filters.
fn filter_form<S: Store>(ui: &UiState<S>, s: &Session, f: &Filters) -> String {
    let mut body =
        String::from("<h1>Events</h1><form class=\"filters\" method=\"get\" action=\"/events\">");
    let _ = write!(
        body,
        "<label>Charter {}</label>",
        charter_select(ui, s, f.charter.as_deref())
    );
    body.push_str("<label>Status <select name=\"status\"><option value=\"\">any status</option>");
    for st in ["pending", "processing", "waiting", "done", "failed"] {
        let sel = if f.status.is_some_and(|x| x.as_str() == st) {
            " selected"
        } else {
            ""
        };
        let _ = write!(body, "<option value=\"{st}\"{sel}>{st}</option>");
    }
    let _ = write!(
        body,
        "</select></label><label>From <input type=\"datetime-local\" name=\"since\" value=\"{}\"></label><label>To <input type=\"datetime-local\" name=\"until\" value=\"{}\"></label><label>Order <select name=\"sort\"><option value=\"\">newest first</option><option value=\"oldest\"{}>oldest first</option></select></label><label>Search <input type=\"text\" name=\"q\" placeholder=\"dedupe key, or event id (or its start)\" value=\"{}\" size=\"34\"></label><button type=\"submit\">Show</button></form>",
        esc(f.since_text.as_deref().unwrap_or("")),
        esc(f.until_text.as_deref().unwrap_or("")),
        if f.sort_text.as_deref() == Some("oldest") {
            " selected"
        } else {
            ""
        },
        esc(f.search.as_deref().unwrap_or(""))
    );
    body
}

/// The table of events (or a line saying none matches).
fn events_table<S: Store>(ui: &UiState<S>, list: &[EventRecord]) -> String {
    if list.is_empty() {
        return "<p class=\"meta\">No event matches.</p>".into();
    }
    let mut body = format!(
        "<table><thead><tr><th>Event</th><th>Charter</th><th>Status</th><th>Received ({})</th><th>Dedupe key</th><th>Source</th><th>Runs</th></tr></thead><tbody>",
        esc(ui.zone().name())
    );
    for e in list {
        let _ = write!(
            body,
            "<tr><td>{}</td><td><a href=\"/charters/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            event_link(e.event.id),
            url_enc(&e.event.charter),
            esc(&e.event.charter),
            badge(e.status.as_str()),
            time(ui.zone(), e.event.received_at),
            esc(e.event.dedupe_key.as_deref().unwrap_or("")),
            esc(&e.event.source),
            e.attempts
        );
    }
    body.push_str("</tbody></table>");
    body
}
