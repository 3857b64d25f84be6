//! The UI's GET pages, one module per page. Each page reads the store directly, filtered
//! by the session's charter scopes exactly as the API filters them (another charter's
//! objects answer 404), and is put together from section renderers that each return a
//! piece of HTML. The approval and escalation cards shared by the inbox and the timeline
//! are in [`super::cards`]; the SVG charts in [`super::charts`].
//!
//! This module holds the pieces several pages use: the charter filter, event links, a
//! run's decision line, the time fields of filter forms and the list pages' pager.

use std::fmt::Write;

use charter_core::model::RunRecord;
use charter_store::Store;
use serde::Deserialize;
use uuid::Uuid;

use super::html::{esc, page_url};
use super::session::Session;
use super::{UiError, UiState};

pub mod audit;
pub mod charter;
pub mod charters;
pub mod events;
pub mod inbox;
pub mod knowledge;
pub mod rejected;
pub mod review;
pub mod rollout;
pub mod runs;
pub mod timeline;

pub use charter::charter;
pub use charters::charters;
pub use events::events;
pub use timeline::timeline;

/// Most items one page lists.
pub(super) const PAGE_LIMIT: usize = 200;

/// The query of a page that only shows a message after a form (`?msg=`).
#[derive(Debug, Default, Deserialize)]
pub struct MsgQuery {
    pub msg: Option<String>,
}

/// A query value, `None` when missing or blank.
pub(super) fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.trim().is_empty())
}

/// A `<select>` of the charters this session sees, for a filter form.
pub(super) fn charter_select<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    selected: Option<&str>,
) -> String {
    let mut out = String::from(
        "<select name=\"charter\" aria-label=\"Charter\"><option value=\"\">all charters</option>",
    );
    for name in ui.app.runtime.charters.keys().filter(|n| s.sees(n)) {
        let sel = if selected == Some(name.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, "<option value=\"{0}\"{sel}>{0}</option>", esc(name));
    }
    out.push_str("</select>");
    out
}

/// A link to an event's timeline, showing its id.
pub(super) fn event_link(id: Uuid) -> String {
    format!("<a href=\"/events/{id}\"><code>{id}</code></a>")
}

/// The decision a run took, in one line.
pub(super) fn decision_line(run: &RunRecord) -> String {
    match &run.decision {
        None => "no decision stage".into(),
        Some(d) => format!(
            "{} <span class=\"meta\">confidence {:.2} · stage {} · {}</span>",
            d.label
                .as_deref()
                .map(|l| format!("<strong>{}</strong>", esc(l)))
                .unwrap_or_else(|| "<em>no label</em>".into()),
            d.confidence,
            esc(&format!("{:?}", d.stage).to_lowercase()),
            esc(&d.reason)
        ),
    }
}

/// A filter form's time field (`key`: `since` or `until`), read on the configured clock;
/// a 400 naming the field when it is not a date and time.
pub(super) fn form_time<S: Store>(
    ui: &UiState<S>,
    text: Option<&str>,
    key: &str,
) -> Result<Option<i64>, UiError> {
    match text {
        None => Ok(None),
        Some(v) => super::parse_form_time(v, ui.zone())
            .map(Some)
            .ok_or_else(|| {
                UiError::BadRequest(format!(
                    "`{key}` is not a date and time like 2026-01-02T15:04 ({})",
                    ui.zone().name()
                ))
            }),
    }
}

/// Where a list page is: its path and filters, the cursor it was opened at, and the
/// cursors of the pages around it.
pub(super) struct Pager<'a> {
    pub path: &'a str,
    pub params: &'a [(&'a str, Option<&'a str>)],
    pub cursor: Option<&'a str>,
    /// The previous page's cursor (`Some(None)`: the first page), when the list knows it.
    pub previous: Option<Option<&'a str>>,
    pub next: Option<&'a str>,
}

impl Pager<'_> {
    /// `<p class="pager">`: how many are shown of the total, and links to the first,
    /// previous and next pages ("last page" at the end).
    pub(super) fn html(&self, shown: usize, total: u64) -> String {
        let mut out = format!("<p class=\"pager meta\">{shown} shown of {total} · ");
        if self.cursor.is_some() {
            let _ = write!(
                out,
                "<a href=\"{}\">First page</a> · ",
                esc(&page_url(self.path, self.params, None))
            );
        }
        if let Some(prev) = self.previous {
            let _ = write!(
                out,
                "<a rel=\"prev\" href=\"{}\">Previous page</a> · ",
                esc(&page_url(self.path, self.params, prev))
            );
        }
        match self.next {
            Some(n) => {
                let _ = write!(
                    out,
                    "<a rel=\"next\" href=\"{}\">Next page</a></p>",
                    esc(&page_url(self.path, self.params, Some(n)))
                );
            }
            None => out.push_str("last page</p>"),
        }
        out
    }
}
