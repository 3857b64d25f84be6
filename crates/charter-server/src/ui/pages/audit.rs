//! `GET /audit`: the audit log, newest first, filtered by actor, charter, kind and time,
//! paged by cursor with the true total; and a charter's history (pauses, mode changes,
//! replays) for its page.

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Html;
use charter_store::{AuditEntry, AuditFilter, Store};
use serde::Deserialize;

use super::{Pager, charter_select, form_time, non_empty};
use crate::lists;
use crate::ui::html::{esc, page, time, url_enc};
use crate::ui::session::Session;
use crate::ui::{UiError, UiState};

/// Entries on one page.
const AUDIT_PAGE: usize = 100;

/// The kinds offered in the filter (any other recorded kind can still be typed in the URL).
const KINDS: &[&str] = &[
    "approval.approve",
    "approval.reject",
    "escalation.resolve",
    "escalation.retry",
    "escalation.dismiss",
    "escalation.close",
    "charter.pause",
    "charter.resume",
    "charter.mode",
    "event.replay",
    "event.rerun",
    "event.reroute",
    "events.replay_failed",
    "events.replay_range",
    "ui.login",
    "ui.login_failed",
];

/// The kinds that make a charter's history: pauses, mode changes and replays.
pub const HISTORY: &[&str] = &[
    "charter.pause",
    "charter.resume",
    "charter.mode",
    "event.replay",
    "event.rerun",
    "events.replay_failed",
    "events.replay_range",
];

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub charter: Option<String>,
    pub kind: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub cursor: Option<String>,
}

/// The session's scope for the audit log: a scoped session sees its charters' entries only.
fn scope(s: &Session) -> Vec<String> {
    s.charters.clone()
}

/// A table of audit entries.
pub fn entries_table<S: Store>(ui: &UiState<S>, entries: &[AuditEntry]) -> String {
    let mut out = format!(
        "<table><thead><tr><th>When ({})</th><th>Who</th><th>What</th><th>Charter</th><th>Target</th><th>Detail</th></tr></thead><tbody>",
        esc(ui.zone().name())
    );
    for e in entries {
        let detail = if e.detail.is_null() {
            String::new()
        } else {
            e.detail.to_string()
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            time(ui.zone(), e.at),
            esc(&e.actor),
            esc(&e.action),
            e.charter
                .as_deref()
                .map(|c| format!("<a href=\"/charters/{}\">{}</a>", url_enc(c), esc(c)))
                .unwrap_or_default(),
            esc(e.target.as_deref().unwrap_or("")),
            esc(&detail)
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// `GET /audit`: the audit log page.
pub async fn audit<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<AuditQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let actor = non_empty(q.actor);
    let charter = non_empty(q.charter);
    let kind = non_empty(q.kind);
    let since_text = non_empty(q.since);
    let until_text = non_empty(q.until);
    let since = form_time(&ui, since_text.as_deref(), "since")?;
    let until = form_time(&ui, until_text.as_deref(), "until")?;
    let cursor = non_empty(q.cursor);
    let after = lists::seq_cursor(cursor.as_deref())?;
    let page_of = if charter.as_deref().is_some_and(|c| !s.sees(c)) {
        lists::Page {
            items: Vec::new(),
            total: 0,
            next: None,
        }
    } else {
        lists::audit(
            &ui.app.store,
            AuditFilter {
                charter: charter.clone(),
                actor: actor.clone(),
                action: kind.clone(),
                charters: scope(&s),
                since,
                until,
                after,
                limit: AUDIT_PAGE,
                ..AuditFilter::default()
            },
        )
        .await?
    };
    let mut body = String::from(
        "<h1>Audit log</h1><p class=\"meta\">Who did what and when: every decision, pause, mode change, replay and login, newest first.</p><form class=\"filters\" method=\"get\" action=\"/audit\">",
    );
    let _ = write!(
        body,
        "<label>Actor <input type=\"text\" name=\"actor\" value=\"{}\" size=\"14\"></label><label>Charter {}</label><label>Kind <select name=\"kind\"><option value=\"\">any kind</option>",
        esc(actor.as_deref().unwrap_or("")),
        charter_select(&ui, &s, charter.as_deref())
    );
    for k in KINDS {
        let sel = if kind.as_deref() == Some(*k) {
            " selected"
        } else {
            ""
        };
        let _ = write!(body, "<option{sel}>{k}</option>");
    }
    let _ = write!(
        body,
        "</select></label><label>From <input type=\"datetime-local\" name=\"since\" value=\"{}\"></label><label>To <input type=\"datetime-local\" name=\"until\" value=\"{}\"></label><button type=\"submit\">Show</button></form>",
        esc(since_text.as_deref().unwrap_or("")),
        esc(until_text.as_deref().unwrap_or(""))
    );
    if page_of.items.is_empty() {
        body.push_str("<p class=\"meta\">No entry matches.</p>");
    } else {
        body.push_str(&entries_table(&ui, &page_of.items));
    }
    let params = [
        ("actor", actor.as_deref()),
        ("charter", charter.as_deref()),
        ("kind", kind.as_deref()),
        ("since", since_text.as_deref()),
        ("until", until_text.as_deref()),
    ];
    let pager = Pager {
        path: "/audit",
        params: &params,
        cursor: cursor.as_deref(),
        previous: None,
        next: page_of.next.as_deref(),
    };
    body.push_str(&pager.html(page_of.items.len(), page_of.total));
    Ok(Html(page("Audit", Some(&ui.viewer(&s)), None, &body)))
}

/// A charter's history (its latest pauses, mode changes and replays), for its page.
pub async fn history<S: Store>(ui: &UiState<S>, name: &str) -> Result<String, UiError> {
    let page_of = lists::audit(
        &ui.app.store,
        AuditFilter {
            charter: Some(name.to_string()),
            actions: HISTORY.iter().map(|s| (*s).to_string()).collect(),
            limit: 20,
            ..AuditFilter::default()
        },
    )
    .await?;
    let mut out = format!(
        "<h2>History</h2><p class=\"meta\">Pauses, mode changes and replays: {} in all; <a href=\"/audit?charter={}\">the charter's whole audit log</a>.</p>",
        page_of.total,
        url_enc(name)
    );
    if page_of.items.is_empty() {
        out.push_str("<p class=\"meta\">Nobody has paused, promoted or replayed this charter.</p>");
    } else {
        out.push_str(&entries_table(ui, &page_of.items));
    }
    Ok(out)
}
