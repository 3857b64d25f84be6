//! The inbox: what waits for a human, as a compact paged list with a detail pane.
//!
//! Three tabs, each with its true total: **Approvals** (actions waiting for a reviewer),
//! **Decisions** (escalations a human labels) and **Dead letters** (actions that exhausted
//! their retries: retried or dismissed, never labelled; see [`crate::dead_letters`]). A row
//! shows the charter, the action or reason, the model's label and confidence, how long it
//! has waited and when it expires; the selected row's full card (evidence, forms) is in the
//! detail pane. After a decision the next row of the page is selected. Paging is by cursor
//! (the store's keyset), so a page of a 3,000-item backlog costs what the first does.
//!
//! Only what the user may do is offered: viewers see no forms, and a reviewer not on an
//! approval's `reviewers` list sees no Approve or Reject. The small script
//! `/assets/inbox.js` adds keyboard shortcuts and live counts; every page works without it.

use std::fmt::Write;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Html;
use charter_core::config::Role;
use charter_core::model::UnixMillis;
use charter_store::{
    ApprovalFilter, ApprovalRecord, ApprovalStatus, EscalationFilter, EscalationRecord,
    EscalationStatus, Sort, Store,
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{charter_select, non_empty};
use crate::dead_letters::DEAD_LETTER;
use crate::lists;
use crate::ui::cards::{self, model_guess};
use crate::ui::html::{csrf_field, esc, page, url_enc};
use crate::ui::session::Session;
use crate::ui::{UiError, UiState};

// The cards' helpers at the inbox's old path, for the form handlers (`ui::forms`, `ui::mod`).
pub use crate::ui::cards::{approval_forms, may_decide, typed_fields};

/// Rows on one page of the inbox.
pub const INBOX_PAGE: usize = 50;

/// The inbox's tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Approvals,
    Decisions,
    Dead,
}

impl Tab {
    fn parse(s: Option<&str>) -> Result<Tab, UiError> {
        match s.unwrap_or("") {
            "" | "approvals" => Ok(Tab::Approvals),
            "decisions" => Ok(Tab::Decisions),
            "dead" => Ok(Tab::Dead),
            other => Err(UiError::BadRequest(format!(
                "unknown tab `{other}`: expected approvals, decisions or dead"
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Tab::Approvals => "approvals",
            Tab::Decisions => "decisions",
            Tab::Dead => "dead",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Tab::Approvals => "Approvals",
            Tab::Decisions => "Decisions",
            Tab::Dead => "Dead letters",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct InboxQuery {
    pub charter: Option<String>,
    pub tab: Option<String>,
    pub cursor: Option<String>,
    /// The selected item (an approval's or escalation's id).
    pub item: Option<String>,
    pub sort: Option<String>,
    pub msg: Option<String>,
}

/// The open escalations of one tab (decisions leave the dead letters out).
fn escalation_filter(tab: Tab, charter: Option<String>, scope: &[String]) -> EscalationFilter {
    let (reason, not_reason) = match tab {
        Tab::Dead => (Some(DEAD_LETTER.to_string()), None),
        _ => (None, Some(DEAD_LETTER.to_string())),
    };
    EscalationFilter {
        charter,
        status: Some(EscalationStatus::Open),
        charters: scope.to_vec(),
        reason,
        not_reason,
        ..EscalationFilter::default()
    }
}

/// The pending approvals (of `charter`, within `scope`).
fn approval_filter(charter: Option<String>, scope: &[String]) -> ApprovalFilter {
    ApprovalFilter {
        charter,
        status: Some(ApprovalStatus::Pending),
        charters: scope.to_vec(),
        ..ApprovalFilter::default()
    }
}

/// What waits, per tab, for this session (and charter filter).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Counts {
    pub approvals: u64,
    pub decisions: u64,
    pub dead: u64,
}

impl Counts {
    fn of(&self, tab: Tab) -> u64 {
        match tab {
            Tab::Approvals => self.approvals,
            Tab::Decisions => self.decisions,
            Tab::Dead => self.dead,
        }
    }
}

/// What waits per tab for this session (nothing for a charter outside its scope).
pub async fn counts<S: Store>(
    store: &S,
    s: &Session,
    charter: Option<String>,
) -> Result<Counts, UiError> {
    if charter.as_deref().is_some_and(|c| !s.sees(c)) {
        return Ok(Counts::default());
    }
    let (approvals, decisions, dead) = tokio::try_join!(
        store.count_approvals(approval_filter(charter.clone(), &s.charters)),
        store.count_escalations(escalation_filter(
            Tab::Decisions,
            charter.clone(),
            &s.charters
        )),
        store.count_escalations(escalation_filter(Tab::Dead, charter, &s.charters)),
    )?;
    Ok(Counts {
        approvals,
        decisions,
        dead,
    })
}

/// `GET /inbox/counts`: what waits, as JSON, for the live counts in the navigation and the
/// tab title (polled by `/assets/inbox.js`).
pub async fn counts_json<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Value>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let c = counts(&ui.app.store, &s, None).await?;
    Ok(Json(json!({
        "approvals": c.approvals,
        "decisions": c.decisions,
        "dead": c.dead,
        "total": c.approvals + c.decisions + c.dead,
    })))
}

/// A duration as a short phrase: `45 s`, `12 min`, `3 h`, `2 d`.
pub fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

fn guess_cell(guess: Option<(String, f64)>) -> String {
    match guess {
        Some((l, c)) => format!("{} <span class=\"meta\">{:.0}%</span>", esc(&l), c * 100.0),
        None => "<span class=\"meta\">none</span>".into(),
    }
}

/// One row of the list.
struct Row {
    id: Uuid,
    charter: String,
    what: String,
    guess: String,
    created_at: UnixMillis,
    expires_at: Option<UnixMillis>,
}

/// The inbox URL for a tab, filter, page and selected item.
fn inbox_url(
    tab: Tab,
    charter: Option<&str>,
    sort: Option<&str>,
    cursor: Option<&str>,
    item: Option<Uuid>,
) -> String {
    let mut url = format!("/inbox?tab={}", tab.as_str());
    for (k, v) in [("charter", charter), ("sort", sort), ("cursor", cursor)] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            let _ = write!(url, "&{k}={}", url_enc(v));
        }
    }
    if let Some(i) = item {
        let _ = write!(url, "&item={i}");
    }
    url
}

/// Where the inbox is: the tab, charter filter, order and page (the query, parsed).
struct View {
    tab: Tab,
    charter: Option<String>,
    sort_text: Option<String>,
    cursor: Option<String>,
}

impl View {
    /// This view's URL on `tab` at `cursor` with `item` selected.
    fn url(&self, tab: Tab, cursor: Option<&str>, item: Option<Uuid>) -> String {
        inbox_url(
            tab,
            self.charter.as_deref(),
            self.sort_text.as_deref(),
            cursor,
            item,
        )
    }
}

/// One page of a tab: its rows, the next page's cursor, and the records behind the rows
/// (approvals or escalations, for the detail pane).
#[derive(Default)]
struct Listing {
    rows: Vec<Row>,
    next: Option<String>,
    approvals: Vec<ApprovalRecord>,
    escalations: Vec<EscalationRecord>,
}

/// `GET /inbox`: the tabs, one page of the tab's list, and the selected item's card.
pub async fn inbox<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<InboxQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let asked_tab = non_empty(q.tab);
    let mut tab = Tab::parse(asked_tab.as_deref())?;
    let charter = non_empty(q.charter);
    let sort_text = non_empty(q.sort);
    let sort = lists::parse_sort(sort_text.as_deref())?;
    let cursor = non_empty(q.cursor);
    let after = lists::created_cursor(cursor.as_deref())?;
    let now = crate::now_millis();
    let counts = counts(&ui.app.store, &s, charter.clone()).await?;
    if asked_tab.is_none() {
        // No tab asked for: the first with work in it.
        tab = [Tab::Approvals, Tab::Decisions, Tab::Dead]
            .into_iter()
            .find(|t| counts.of(*t) > 0)
            .unwrap_or(Tab::Approvals);
    }
    let v = View {
        tab,
        charter,
        sort_text,
        cursor,
    };
    let list = if !v.charter.as_deref().is_none_or(|c| s.sees(c)) {
        Listing::default()
    } else if tab == Tab::Approvals {
        approval_rows(&ui, &s, &v, sort, after).await?
    } else {
        escalation_rows(&ui, &s, &v, sort, after).await?
    };

    // The selected item: the one asked for (a notification's link may point past this
    // page), else the page's first.
    let asked = q.item.as_deref().and_then(|i| Uuid::parse_str(i).ok());
    let selected = asked.or(list.rows.first().map(|r| r.id));
    let position = selected.and_then(|id| list.rows.iter().position(|r| r.id == id));
    // Where a decision on the selected item leads: the row after it (or before, at the end).
    let next_item = position.and_then(|p| {
        list.rows
            .get(p + 1)
            .or_else(|| p.checked_sub(1).and_then(|b| list.rows.get(b)))
            .map(|r| r.id)
    });
    let back = v.url(tab, v.cursor.as_deref(), next_item);
    let detail = match selected {
        None => String::new(),
        Some(id) => detail_card(&ui, &s, &v, id, &list, &back).await?,
    };

    let mut body = filter_form(&ui, &s, &v);
    body.push_str(&tabs_nav(&v, &counts));
    body.push_str("<div class=\"split\">");
    body.push_str(&list_section(&s, &v, &list, selected, &back, now));
    body.push_str(&pager(
        &v,
        list.rows.len(),
        counts.of(tab),
        list.next.as_deref(),
    ));
    let _ = write!(
        body,
        "<section class=\"detail\" id=\"detail\" tabindex=\"-1\" aria-label=\"Selected item\">{}</section></div>",
        if detail.is_empty() {
            "<p class=\"meta\">Select an item.</p>".to_string()
        } else {
            detail
        }
    );
    Ok(Html(page(
        "Inbox",
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}

/// A page of pending approvals, each row with the model's label from its run.
async fn approval_rows<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    v: &View,
    sort: Option<Sort>,
    after: Option<(UnixMillis, Uuid)>,
) -> Result<Listing, UiError> {
    let store = &ui.app.store;
    let page = lists::approvals(
        store,
        ApprovalFilter {
            sort,
            after,
            limit: INBOX_PAGE,
            ..approval_filter(v.charter.clone(), &s.charters)
        },
    )
    .await?;
    // The rows' decisions, read concurrently (a pooled store answers them in parallel).
    let runs = futures_util::future::try_join_all(
        page.items.iter().map(|a| store.runs_for_event(a.event_id)),
    )
    .await?;
    let mut rows = Vec::new();
    for (a, run) in page.items.iter().zip(runs) {
        let guess = run
            .iter()
            .find(|r| r.id == a.run_id)
            .and_then(|r| r.decision.as_ref())
            .and_then(|d| d.label.clone().map(|l| (l, d.confidence)));
        rows.push(Row {
            id: a.id,
            charter: a.charter.clone(),
            what: a.action.clone(),
            guess: guess_cell(guess),
            created_at: a.created_at,
            expires_at: a.expires_at,
        });
    }
    Ok(Listing {
        rows,
        next: page.next,
        approvals: page.items,
        escalations: Vec::new(),
    })
}

/// A page of open escalations of the view's tab (decisions, or dead letters).
async fn escalation_rows<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    v: &View,
    sort: Option<Sort>,
    after: Option<(UnixMillis, Uuid)>,
) -> Result<Listing, UiError> {
    let tab = v.tab;
    let page = lists::escalations(
        &ui.app.store,
        EscalationFilter {
            sort,
            after,
            limit: INBOX_PAGE,
            ..escalation_filter(tab, v.charter.clone(), &s.charters)
        },
    )
    .await?;
    let rows = page
        .items
        .iter()
        .map(|e| Row {
            id: e.id,
            charter: e.charter.clone(),
            what: if tab == Tab::Dead {
                e.detail["action"]
                    .as_str()
                    .map_or_else(|| e.reason.replace('_', " "), str::to_string)
            } else {
                e.reason.replace('_', " ")
            },
            guess: guess_cell(model_guess(&e.detail)),
            created_at: e.created_at,
            expires_at: None,
        })
        .collect();
    Ok(Listing {
        rows,
        next: page.next,
        approvals: Vec::new(),
        escalations: page.items,
    })
}

/// The heading and the filter form (charter, order).
fn filter_form<S: Store>(ui: &UiState<S>, s: &Session, v: &View) -> String {
    format!(
        "<h1>Inbox</h1><form class=\"filters\" method=\"get\" action=\"/inbox\"><input type=\"hidden\" name=\"tab\" value=\"{}\"><label>Charter {}</label><label>Order <select name=\"sort\"><option value=\"\">oldest first</option><option value=\"newest\"{}>newest first</option></select></label><button type=\"submit\">Show</button></form>",
        v.tab.as_str(),
        charter_select(ui, s, v.charter.as_deref()),
        if v.sort_text.as_deref() == Some("newest") {
            " selected"
        } else {
            ""
        },
    )
}

/// The tabs with their counts.
fn tabs_nav(v: &View, counts: &Counts) -> String {
    let mut body = String::from("<nav class=\"tabs\" aria-label=\"Inbox tabs\">");
    for t in [Tab::Approvals, Tab::Decisions, Tab::Dead] {
        let current = if t == v.tab {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(
            body,
            "<a href=\"{}\"{current}>{} <span class=\"count\" data-count=\"{}\" data-scoped=\"{}\">{}</span></a>",
            esc(&v.url(t, None, None)),
            t.title(),
            t.as_str(),
            v.charter.is_some(),
            counts.of(t)
        );
    }
    body.push_str("</nav>");
    body
}

/// The list section up to its pager: the bulk-approve form (reviewers, several approvals)
/// and the rows, the selected one marked.
fn list_section(
    s: &Session,
    v: &View,
    list: &Listing,
    selected: Option<Uuid>,
    back: &str,
    now: i64,
) -> String {
    let tab = v.tab;
    let rows = &list.rows;
    let mut body = String::new();
    let bulk = tab == Tab::Approvals && s.may(Role::Reviewer) && rows.len() > 1;
    let _ = write!(
        body,
        "<section class=\"list\" tabindex=\"0\" aria-label=\"{} waiting\" data-tab=\"{}\">",
        t_lower(tab),
        tab.as_str()
    );
    if rows.is_empty() {
        let _ = write!(
            body,
            "<p class=\"meta\">Nothing waits here{}.</p>",
            if v.cursor.is_some() {
                " on this page"
            } else {
                ""
            }
        );
        return body;
    }
    let head = match tab {
        Tab::Approvals => "Action",
        Tab::Decisions => "Reason",
        Tab::Dead => "Failed action",
    };
    if bulk {
        let _ = write!(
            body,
            "<form id=\"bulk\" method=\"post\" action=\"/inbox/bulk-approve\" class=\"actions\">{}<input type=\"hidden\" name=\"back\" value=\"{}\"><button type=\"submit\">Approve selected</button><span class=\"meta\">approvals of one action of one charter, each checked as if approved alone</span></form>",
            csrf_field(&s.csrf),
            esc(back)
        );
    }
    let _ = write!(
        body,
        "<table class=\"rows\"><thead><tr>{}<th>Charter</th><th>{head}</th><th>Model</th><th>Waiting</th><th>Expires</th></tr></thead><tbody>",
        if bulk {
            "<th><span class=\"sr\">Select</span></th>"
        } else {
            ""
        }
    );
    for r in rows {
        body.push_str(&row_html(v, r, Some(r.id) == selected, bulk, now));
    }
    body.push_str("</tbody></table>");
    body
}

/// One row of the list: a link selecting it, its charter, what, guess, wait and expiry.
fn row_html(v: &View, r: &Row, selected: bool, bulk: bool, now: i64) -> String {
    let sel = if selected {
        " class=\"selected\" aria-selected=\"true\""
    } else {
        ""
    };
    let link = v.url(v.tab, v.cursor.as_deref(), Some(r.id));
    let check = if bulk {
        format!(
            "<td><input type=\"checkbox\" name=\"id\" value=\"{0}\" form=\"bulk\" aria-label=\"select {1} of {2}\"></td>",
            r.id,
            esc(&r.what),
            esc(&r.charter)
        )
    } else {
        String::new()
    };
    format!(
        "<tr data-item=\"{}\"{sel}>{check}<td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        r.id,
        esc(&link),
        esc(&r.charter),
        esc(&r.what),
        r.guess,
        span(now - r.created_at),
        match r.expires_at {
            Some(t) if t > now => format!("in {}", span(t - now)),
            Some(_) => "expired".into(),
            None => "<span class=\"meta\">never</span>".into(),
        }
    )
}

/// The end of the list section: how many are shown of the tab's total, the first and next
/// pages, and the keyboard shortcuts.
fn pager(v: &View, shown: usize, total: u64, next: Option<&str>) -> String {
    let mut body = format!("<p class=\"pager meta\">{shown} shown of {total} · ");
    if v.cursor.is_some() {
        let _ = write!(
            body,
            "<a href=\"{}\">First page</a> · ",
            esc(&v.url(v.tab, None, None))
        );
    }
    match next {
        Some(n) => {
            let _ = write!(
                body,
                "<a rel=\"next\" href=\"{}\">Next page</a>",
                esc(&v.url(v.tab, Some(n), None))
            );
        }
        None => body.push_str("last page"),
    }
    body.push_str("</p><p class=\"meta keys\">Keys: <kbd>j</kbd>/<kbd>k</kbd> next/previous, <kbd>a</kbd> approve, <kbd>r</kbd> reject, <kbd>e</kbd> edit, <kbd>d</kbd> decide.</p></section>");
    body
}

fn t_lower(tab: Tab) -> &'static str {
    match tab {
        Tab::Approvals => "approvals",
        Tab::Decisions => "decisions",
        Tab::Dead => "dead letters",
    }
}

/// The selected item's card: from the page when it is there, else read (a link from a
/// notification); another charter's or an unknown item is reported, not shown.
async fn detail_card<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    v: &View,
    id: Uuid,
    list: &Listing,
    back: &str,
) -> Result<String, UiError> {
    let store = &ui.app.store;
    if v.tab == Tab::Approvals {
        let a = match list.approvals.iter().find(|a| a.id == id) {
            Some(a) => Some(a.clone()),
            None => store.get_approval(id).await?,
        };
        return match a.filter(|a| s.sees(&a.charter)) {
            Some(a) => cards::approval_card(ui, s, &a, back).await,
            None => Ok("<p class=\"meta\">No such approval.</p>".into()),
        };
    }
    let e = match list.escalations.iter().find(|e| e.id == id) {
        Some(e) => Some(e.clone()),
        None => store.get_escalation(id).await?,
    };
    match e.filter(|e| s.sees(&e.charter)) {
        Some(e) => cards::escalation_card(ui, s, &e, back).await,
        None => Ok("<p class=\"meta\">No such escalation.</p>".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_short_phrases() {
        assert_eq!(span(1_500), "1 s");
        assert_eq!(span(125_000), "2 min");
        assert_eq!(span(3 * 3_600_000), "3 h");
        assert_eq!(span(50 * 3_600_000), "2 d");
        assert_eq!(span(-5), "0 s");
    }
}
