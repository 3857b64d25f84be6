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
use charter_core::config::{FieldType, Role};
use charter_core::model::UnixMillis;
use charter_store::{
    ApprovalFilter, ApprovalRecord, ApprovalStatus, EscalationFilter, EscalationRecord,
    EscalationStatus, Store,
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::html::{badge, csrf_field, esc, json_block, page, time, url_enc};
use super::pages::{charter_select, decision_line, event_link, non_empty};
use super::session::Session;
use super::{UiError, UiState};
use crate::dead_letters::DEAD_LETTER;
use crate::lists;

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

/// The model's best guess in an escalation's evidence: the stage answer with a label and
/// the highest confidence.
pub fn model_guess(detail: &Value) -> Option<(String, f64)> {
    detail["stages"]
        .as_array()?
        .iter()
        .filter_map(|st| {
            let label = st["label"].as_str()?;
            Some((label.to_string(), st["confidence"].as_f64().unwrap_or(0.0)))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Every label a stage gave, with its confidence (the highest per label), best first.
fn label_confidences(detail: &Value) -> Vec<(String, f64)> {
    let mut best: Vec<(String, f64)> = Vec::new();
    for st in detail["stages"].as_array().into_iter().flatten() {
        let Some(label) = st["label"].as_str() else {
            continue;
        };
        let conf = st["confidence"].as_f64().unwrap_or(0.0);
        match best.iter_mut().find(|(l, _)| l == label) {
            Some(entry) => entry.1 = entry.1.max(conf),
            None => best.push((label.to_string(), conf)),
        }
    }
    best.sort_by(|a, b| b.1.total_cmp(&a.1));
    best
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
    let store = &ui.app.store;
    let now = crate::now_millis();
    let counts = counts(store, &s, charter.clone()).await?;
    if asked_tab.is_none() {
        // No tab asked for: the first with work in it.
        tab = [Tab::Approvals, Tab::Decisions, Tab::Dead]
            .into_iter()
            .find(|t| counts.of(*t) > 0)
            .unwrap_or(Tab::Approvals);
    }
    let visible = charter.as_deref().is_none_or(|c| s.sees(c));
    let (rows, next, approvals, escalations) = if !visible {
        (Vec::new(), None, Vec::new(), Vec::new())
    } else if tab == Tab::Approvals {
        let page = lists::approvals(
            store,
            ApprovalFilter {
                sort,
                after,
                limit: INBOX_PAGE,
                ..approval_filter(charter.clone(), &s.charters)
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
        (rows, page.next, page.items, Vec::new())
    } else {
        let page = lists::escalations(
            store,
            EscalationFilter {
                sort,
                after,
                limit: INBOX_PAGE,
                ..escalation_filter(tab, charter.clone(), &s.charters)
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
        (rows, page.next, Vec::new(), page.items)
    };

    // The selected item: the one asked for (a notification's link may point past this
    // page), else the page's first.
    let asked = q.item.as_deref().and_then(|i| Uuid::parse_str(i).ok());
    let selected = asked.or(rows.first().map(|r| r.id));
    let position = selected.and_then(|id| rows.iter().position(|r| r.id == id));
    // Where a decision on the selected item leads: the row after it (or before, at the end).
    let next_item = position.and_then(|p| {
        rows.get(p + 1)
            .or_else(|| p.checked_sub(1).and_then(|b| rows.get(b)))
            .map(|r| r.id)
    });
    let back = inbox_url(
        tab,
        charter.as_deref(),
        sort_text.as_deref(),
        cursor.as_deref(),
        next_item,
    );
    let detail = match selected {
        None => String::new(),
        Some(id) => detail_card(&ui, &s, tab, id, &approvals, &escalations, &back).await?,
    };

    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Inbox</h1><form class=\"filters\" method=\"get\" action=\"/inbox\"><input type=\"hidden\" name=\"tab\" value=\"{}\"><label>Charter {}</label><label>Order <select name=\"sort\"><option value=\"\">oldest first</option><option value=\"newest\"{}>newest first</option></select></label><button type=\"submit\">Show</button></form>",
        tab.as_str(),
        charter_select(&ui, &s, charter.as_deref()),
        if sort_text.as_deref() == Some("newest") {
            " selected"
        } else {
            ""
        },
    );
    body.push_str("<nav class=\"tabs\" aria-label=\"Inbox tabs\">");
    for t in [Tab::Approvals, Tab::Decisions, Tab::Dead] {
        let current = if t == tab {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(
            body,
            "<a href=\"{}\"{current}>{} <span class=\"count\" data-count=\"{}\" data-scoped=\"{}\">{}</span></a>",
            esc(&inbox_url(
                t,
                charter.as_deref(),
                sort_text.as_deref(),
                None,
                None
            )),
            t.title(),
            t.as_str(),
            charter.is_some(),
            counts.of(t)
        );
    }
    body.push_str("</nav><div class=\"split\">");
    let bulk = tab == Tab::Approvals && s.role >= Role::Reviewer && rows.len() > 1;
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
            if cursor.is_some() {
                " on this page"
            } else {
                ""
            }
        );
    } else {
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
                esc(&back)
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
        for r in &rows {
            let sel = if Some(r.id) == selected {
                " class=\"selected\" aria-selected=\"true\""
            } else {
                ""
            };
            let link = inbox_url(
                tab,
                charter.as_deref(),
                sort_text.as_deref(),
                cursor.as_deref(),
                Some(r.id),
            );
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
            let _ = write!(
                body,
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
            );
        }
        body.push_str("</tbody></table>");
    }
    let _ = write!(
        body,
        "<p class=\"pager meta\">{} shown of {} · ",
        rows.len(),
        counts.of(tab)
    );
    if cursor.is_some() {
        let _ = write!(
            body,
            "<a href=\"{}\">First page</a> · ",
            esc(&inbox_url(
                tab,
                charter.as_deref(),
                sort_text.as_deref(),
                None,
                None
            ))
        );
    }
    match &next {
        Some(n) => {
            let _ = write!(
                body,
                "<a rel=\"next\" href=\"{}\">Next page</a>",
                esc(&inbox_url(
                    tab,
                    charter.as_deref(),
                    sort_text.as_deref(),
                    Some(n),
                    None
                ))
            );
        }
        None => body.push_str("last page"),
    }
    body.push_str("</p><p class=\"meta keys\">Keys: <kbd>j</kbd>/<kbd>k</kbd> next/previous, <kbd>a</kbd> approve, <kbd>r</kbd> reject, <kbd>e</kbd> edit, <kbd>d</kbd> decide.</p></section>");
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
    tab: Tab,
    id: Uuid,
    approvals: &[ApprovalRecord],
    escalations: &[EscalationRecord],
    back: &str,
) -> Result<String, UiError> {
    let store = &ui.app.store;
    if tab == Tab::Approvals {
        let a = match approvals.iter().find(|a| a.id == id) {
            Some(a) => Some(a.clone()),
            None => store.get_approval(id).await?,
        };
        return match a.filter(|a| s.sees(&a.charter)) {
            Some(a) => approval_card(ui, s, &a, back).await,
            None => Ok("<p class=\"meta\">No such approval.</p>".into()),
        };
    }
    let e = match escalations.iter().find(|e| e.id == id) {
        Some(e) => Some(e.clone()),
        None => store.get_escalation(id).await?,
    };
    match e.filter(|e| s.sees(&e.charter)) {
        Some(e) => escalation_card(ui, s, &e, back).await,
        None => Ok("<p class=\"meta\">No such escalation.</p>".into()),
    }
}

/// Where an approval's or escalation's notifications went, one entry per target: state,
/// attempts, and the send time or the last error. Empty when nothing was queued.
async fn notifications_line<S: Store>(ui: &UiState<S>, item: Uuid) -> Result<String, UiError> {
    let list = ui.app.store.list_notifications(Some(item), 100).await?;
    if list.is_empty() {
        return Ok(String::new());
    }
    let mut out = String::from("<div class=\"meta notifications\">notified: ");
    for (i, n) in list.iter().enumerate() {
        if i > 0 {
            out.push_str(" · ");
        }
        let _ = write!(
            out,
            "<span data-target=\"{0}\"><code>{0}</code> {1} {2} attempt{3}",
            esc(&n.target),
            badge(n.state.as_str()),
            n.attempts,
            if n.attempts == 1 { "" } else { "s" }
        );
        match (n.sent_at, &n.last_error) {
            (Some(at), _) => {
                let _ = write!(out, ", sent {}", time(ui.zone(), at));
            }
            (None, Some(e)) => {
                let _ = write!(out, ", last error: {}", esc(e));
            }
            (None, None) => {}
        }
        out.push_str("</span>");
    }
    out.push_str("</div>");
    Ok(out)
}

/// May this session decide this approval (the API's rule: admins always, reviewers when
/// the approval names no reviewers or names them)?
pub fn may_decide(s: &Session, a: &ApprovalRecord) -> bool {
    s.role == Role::Admin
        || (s.role >= Role::Reviewer
            && (a.reviewers.is_empty() || a.reviewers.iter().any(|r| r == &s.name)))
}

/// An approval's full card: parameters, evidence, and the forms the session may use.
pub async fn approval_card<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    a: &ApprovalRecord,
    back: &str,
) -> Result<String, UiError> {
    let store = &ui.app.store;
    let event = store.get_event(a.event_id).await?;
    let runs = store.runs_for_event(a.event_id).await?;
    let run = runs.iter().find(|r| r.id == a.run_id).or(runs.last());
    let mut out = String::new();
    let _ = write!(
        out,
        "<div class=\"card approval\" data-approval=\"{}\" data-event=\"{}\"><h2>{} <span class=\"meta\">· {}</span> {}</h2>",
        a.id,
        a.event_id,
        esc(&a.action),
        esc(&a.charter),
        badge(a.status.as_str())
    );
    let _ = write!(
        out,
        "<div class=\"meta\">requested {} · {} · reviewers: {} · event {}</div>",
        time(ui.zone(), a.created_at),
        a.expires_at
            .map(|t| format!("expires {}", time(ui.zone(), t)))
            .unwrap_or_else(|| "no deadline".into()),
        if a.reviewers.is_empty() {
            "any reviewer".to_string()
        } else {
            esc(&a.reviewers.join(", "))
        },
        event_link(a.event_id)
    );
    out.push_str(&notifications_line(ui, a.id).await?);
    if a.status == ApprovalStatus::Pending && may_decide(s, a) {
        out.push_str(&approval_forms(s, a, back, None));
    } else if a.status == ApprovalStatus::Pending {
        out.push_str(
            "<p class=\"meta\">You are not among this approval's reviewers, so you cannot decide it.</p>",
        );
    }
    out.push_str("<div class=\"grid\"><div><h3>Parameters it will run with</h3>");
    out.push_str(&json_block(&a.params));
    let _ = write!(
        out,
        "<div class=\"meta\">bound to <code>{}</code></div></div><div><h3>Evidence</h3>",
        esc(&a.params_hash[..a.params_hash.len().min(16)])
    );
    if let Some(r) = run {
        let _ = write!(out, "<div>Decision: {}</div>", decision_line(r));
    }
    if let Some(e) = &event {
        out.push_str(&json_block(&e.event.payload));
    }
    out.push_str("</div></div>");
    // The knowledge passages a drafted action cites, beside the draft (empty otherwise).
    out.push_str(&super::knowledge::cited_block(ui, a.run_id).await?);
    out.push_str("</div>");
    Ok(out)
}

/// Approve, reject, and edit-then-approve. `edited` is the user's text to keep after a
/// failed edit (shown with its difference from the proposal).
pub fn approval_forms(s: &Session, a: &ApprovalRecord, back: &str, edited: Option<&str>) -> String {
    let base = format!("/approvals/{}", a.id);
    let pretty = serde_json::to_string_pretty(&a.params).unwrap_or_default();
    let text = edited.unwrap_or(&pretty);
    let open = if edited.is_some() { " open" } else { "" };
    // After a failed edit the server shows the diff; while typing, the page script keeps
    // the same diff current in the placeholder (the proposal travels in `data-proposal`).
    let diff = edited
        .map(|e| diff_lines(&pretty, e))
        .unwrap_or_else(|| "<div class=\"diff\" data-live-diff hidden></div>".to_string());
    format!(
        "<div class=\"actions\">\
         <form method=\"post\" action=\"{base}/approve\" class=\"inline\" data-key=\"a\">{csrf}<input type=\"hidden\" name=\"back\" value=\"{back}\"><button type=\"submit\" class=\"primary\">Approve</button></form>\
         <form method=\"post\" action=\"{base}/reject\" class=\"inline\" data-key=\"r\">{csrf}<input type=\"hidden\" name=\"back\" value=\"{back}\"><label>Reason <input type=\"text\" name=\"reason\" required></label> <button type=\"submit\" class=\"danger\">Reject</button></form>\
         </div>\
         <details{open} data-key=\"e\"><summary>Edit the parameters, then approve</summary>\
         <form method=\"post\" action=\"{base}/approve\">{csrf}<input type=\"hidden\" name=\"back\" value=\"{back}\">\
         <p class=\"meta\">Only the request body (<code>json</code>) or a log message (<code>log</code>) may change; the approval is then bound to the edited parameters.</p>\
         <label class=\"wide\">Parameters (JSON)<textarea name=\"params\" rows=\"10\" data-proposal=\"{proposal}\">{}</textarea></label>{diff}<button type=\"submit\" class=\"primary\">Approve with these parameters</button></form></details>",
        esc(text),
        csrf = csrf_field(&s.csrf),
        back = esc(back),
        proposal = esc(&pretty),
    )
}

/// A line diff of `proposal` and `edited`: lines removed and added, as a small table.
pub fn diff_lines(proposal: &str, edited: &str) -> String {
    let old: Vec<&str> = proposal.lines().collect();
    let new: Vec<&str> = edited.lines().collect();
    let mut out = String::from("<div class=\"diff\"><h3>Your edit against the proposal</h3><pre>");
    let mut changed = false;
    for l in &old {
        if !new.contains(l) {
            changed = true;
            let _ = writeln!(out, "<del>- {}</del>", esc(l));
        }
    }
    for l in &new {
        if !old.contains(l) {
            changed = true;
            let _ = writeln!(out, "<ins>+ {}</ins>", esc(l));
        }
    }
    if !changed {
        out.push_str("no change");
    }
    out.push_str("</pre></div>");
    out
}

/// An escalation's full card: evidence and, for those allowed, the decision form (a
/// label preselected to the model's guess, typed inputs for the declared fields), or for
/// a dead letter Retry and Dismiss.
pub async fn escalation_card<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    e: &EscalationRecord,
    back: &str,
) -> Result<String, UiError> {
    let mut out = String::new();
    let _ = write!(
        out,
        "<div class=\"card escalation\" data-escalation=\"{}\" data-event=\"{}\"><h2>{} <span class=\"meta\">· {}</span> {}</h2>",
        e.id,
        e.event_id,
        esc(&e.reason.replace('_', " ")),
        esc(&e.charter),
        badge(e.status.as_str())
    );
    let _ = write!(
        out,
        "<div class=\"meta\">opened {} · for {} · event {}</div>{}",
        time(ui.zone(), e.created_at),
        esc(e.target.as_deref().unwrap_or("any reviewer")),
        event_link(e.event_id),
        notifications_line(ui, e.id).await?,
    );
    let open = e.status == EscalationStatus::Open;
    if open && s.role >= Role::Reviewer {
        if e.reason == DEAD_LETTER {
            out.push_str(&dead_letter_forms(s, e, back));
        } else {
            out.push_str(&decide_form(ui, s, e, back));
        }
    } else if open {
        out.push_str("<p class=\"meta\">Viewers cannot decide escalations.</p>");
    }
    let _ = write!(out, "<h3>Evidence</h3>{}</div>", json_block(&e.detail));
    Ok(out)
}

fn dead_letter_forms(s: &Session, e: &EscalationRecord, back: &str) -> String {
    format!(
        "<p class=\"meta\">An action failed after all its retries. Retry the event once the cause is fixed (the dead letter closes when it succeeds; actions that already succeeded are not sent again), or dismiss it with a reason (the event stays failed). No label is asked: this is not a decision to correct.</p>\
         <div class=\"actions\">\
         <form method=\"post\" action=\"/escalations/{id}/retry\" class=\"inline\" data-key=\"a\">{csrf}<input type=\"hidden\" name=\"back\" value=\"{back}\"><button type=\"submit\" class=\"primary\">Retry</button></form>\
         <form method=\"post\" action=\"/escalations/{id}/dismiss\" class=\"inline\" data-key=\"r\">{csrf}<input type=\"hidden\" name=\"back\" value=\"{back}\"><label>Reason <input type=\"text\" name=\"reason\" required></label> <button type=\"submit\" class=\"danger\">Dismiss</button></form>\
         </div>",
        id = e.id,
        csrf = csrf_field(&s.csrf),
        back = esc(back),
    )
}

fn decide_form<S: Store>(ui: &UiState<S>, s: &Session, e: &EscalationRecord, back: &str) -> String {
    let Some(d) = ui
        .app
        .runtime
        .charters
        .get(&e.charter)
        .and_then(|c| c.charter.decide.clone())
    else {
        return "<p class=\"meta\">This charter has no decision stage, so there is no label to pick; replay the event once the cause is fixed.</p>".into();
    };
    let confidences = label_confidences(&e.detail);
    let guess = confidences.first().map(|(l, _)| l.clone());
    let mut options = String::new();
    for l in &d.labels {
        let sel = if guess.as_deref() == Some(l.as_str()) {
            " selected"
        } else {
            ""
        };
        let conf = confidences
            .iter()
            .find(|(c, _)| c == l)
            .map(|(_, c)| format!(" ({:.0}%)", c * 100.0))
            .unwrap_or_default();
        let _ = write!(
            options,
            "<option value=\"{0}\"{sel}>{0}{conf}</option>",
            esc(l)
        );
    }
    let mut fields = String::new();
    for (name, spec) in &d.extract {
        let id = format!("f-{}-{}", e.id, name);
        let label = format!(
            "<label for=\"{}\">{}{}</label>",
            esc(&id),
            esc(name),
            if spec.required { " (required)" } else { "" }
        );
        let input = if !spec.enumeration.is_empty() {
            let mut sel = format!(
                "<select id=\"{0}\" name=\"field.{1}\"><option value=\"\">—</option>",
                esc(&id),
                esc(name)
            );
            for v in &spec.enumeration {
                let _ = write!(sel, "<option>{}</option>", esc(v));
            }
            sel + "</select>"
        } else {
            match spec.kind {
                FieldType::Boolean => format!(
                    "<select id=\"{0}\" name=\"field.{1}\"><option value=\"\">—</option><option>true</option><option>false</option></select>",
                    esc(&id),
                    esc(name)
                ),
                FieldType::Number => format!(
                    "<input id=\"{0}\" name=\"field.{1}\" type=\"number\" step=\"any\">",
                    esc(&id),
                    esc(name)
                ),
                FieldType::Integer => format!(
                    "<input id=\"{0}\" name=\"field.{1}\" type=\"number\" step=\"1\">",
                    esc(&id),
                    esc(name)
                ),
                FieldType::String => format!(
                    "<input id=\"{0}\" name=\"field.{1}\" type=\"text\">",
                    esc(&id),
                    esc(name)
                ),
            }
        };
        let _ = write!(fields, "<div class=\"field\">{label}{input}</div>");
    }
    format!(
        "<form method=\"post\" action=\"/escalations/{}/decide\" data-key=\"d\">{}<input type=\"hidden\" name=\"back\" value=\"{}\">\
         <div class=\"actions\"><label>Label <select name=\"label\">{options}</select></label></div>{}{fields}\
         <div class=\"actions\"><button type=\"submit\" class=\"primary\">Decide</button></div></form>",
        e.id,
        csrf_field(&s.csrf),
        esc(back),
        if guess.is_some() {
            "<p class=\"meta\">The model's label is preselected; the percentages are its confidences.</p>"
        } else {
            ""
        },
    )
}

/// The typed field inputs of a decide form (`field.<name>`) as a JSON object: empty inputs
/// are left out; numbers, integers and booleans are converted, with an error naming the field.
pub fn typed_fields<S: Store>(
    ui: &UiState<S>,
    charter: &str,
    form: &std::collections::HashMap<String, String>,
) -> Result<serde_json::Map<String, Value>, UiError> {
    let specs = ui
        .app
        .runtime
        .charters
        .get(charter)
        .and_then(|c| c.charter.decide.as_ref())
        .map(|d| d.extract.clone())
        .unwrap_or_default();
    let mut out = serde_json::Map::new();
    for (key, raw) in form {
        let Some(name) = key.strip_prefix("field.") else {
            continue;
        };
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let kind = specs.get(name).map(|s| s.kind).unwrap_or(FieldType::String);
        let bad =
            |what: &str| UiError::BadRequest(format!("field `{name}`: `{raw}` is not {what}"));
        let v = match kind {
            FieldType::String => Value::String(raw.to_string()),
            FieldType::Integer => json!(raw.parse::<i64>().map_err(|_| bad("an integer"))?),
            FieldType::Number => {
                let n = raw.parse::<f64>().map_err(|_| bad("a number"))?;
                serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .ok_or_else(|| bad("a finite number"))?
            }
            FieldType::Boolean => match raw {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(bad("true or false")),
            },
        };
        out.insert(name.to_string(), v);
    }
    Ok(out)
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

    #[test]
    fn the_models_guess_is_its_most_confident_label() {
        let d = json!({"stages": [
            {"stage": "embedded", "label": "billing", "confidence": 0.41},
            {"stage": "llm", "label": "refund", "confidence": 0.62},
            {"stage": "rules", "label": null}
        ]});
        assert_eq!(model_guess(&d), Some(("refund".into(), 0.62)));
        let all = label_confidences(&d);
        assert_eq!(all[0].0, "refund");
        assert_eq!(all[1].0, "billing");
        assert_eq!(model_guess(&json!({})), None);
    }

    #[test]
    fn the_diff_shows_removed_and_added_lines() {
        let d = diff_lines("{\n  \"a\": 1\n}", "{\n  \"a\": 2\n}");
        assert!(d.contains("<del>-   &quot;a&quot;: 1</del>"), "{d}");
        assert!(d.contains("<ins>+   &quot;a&quot;: 2</ins>"), "{d}");
        assert!(diff_lines("x", "x").contains("no change"));
    }
}
