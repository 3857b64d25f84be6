//! The UI's GET pages. Reads go straight to the store, filtered by the session's charter
//! scopes exactly as the API filters them (another charter's objects answer 404).

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Html;
use charter_core::config::Role;
use charter_core::model::{ActionRecord, ActionStatus, EventStatus, RunRecord};
use charter_store::{
    ApprovalFilter, ApprovalStatus, EscalationFilter, EscalationStatus, EventFilter, Store,
};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::operator::{ContextView, DraftView, TimelineRun};

use super::html::{badge, button_form, csrf_field, esc, json_block, page, time, url_enc};
use super::session::Session;
use super::{UiError, UiState};
use charter_core::cron::Zone;

/// Most items one page lists.
const PAGE_LIMIT: usize = 200;
/// Records read for the shadow record's comparison (a bounded sample, not a count).
const COUNT_LIMIT: usize = 10_000;
/// Events on one page of the events list.
const EVENTS_PAGE: usize = 100;

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

/// The events page's query string without its cursor (for the next-page link).
fn events_url(q: &[(&str, Option<&str>)], cursor: Option<&str>) -> String {
    let mut url = String::from("/events?");
    for (k, v) in q.iter().chain([("cursor", cursor)].iter()) {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            let _ = write!(url, "{k}={}&", url_enc(v));
        }
    }
    url.trim_end_matches(['&', '?']).to_string()
}

pub async fn events<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<EventsQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let charter = non_empty(q.charter);
    let search = non_empty(q.q).map(|v| v.trim().to_string());
    let status = match non_empty(q.status.clone()) {
        None => None,
        Some(st) => Some(
            EventStatus::parse(&st)
                .ok_or_else(|| UiError::BadRequest(format!("unknown status `{st}`")))?,
        ),
    };
    let since_text = non_empty(q.since);
    let until_text = non_empty(q.until);
    let when = |t: &Option<String>, k: &str| -> Result<Option<i64>, UiError> {
        match t {
            None => Ok(None),
            Some(v) => super::parse_form_time(v, ui.zone())
                .map(Some)
                .ok_or_else(|| {
                    UiError::BadRequest(format!(
                        "`{k}` is not a date and time like 2026-01-02T15:04 ({})",
                        ui.zone().name()
                    ))
                }),
        }
    };
    let (since, until) = (when(&since_text, "since")?, when(&until_text, "until")?);
    let sort_text = non_empty(q.sort);
    let sort = crate::lists::parse_sort(sort_text.as_deref())?;
    let cursor = non_empty(q.cursor);
    let after = crate::lists::event_cursor(cursor.as_deref())?;
    let store = &ui.app.store;
    let visible = charter.as_deref().is_none_or(|c| s.sees(c));
    let (list, total, next) = match (&search, visible) {
        (_, false) => (Vec::new(), 0, None),
        (Some(text), true) => {
            let found = crate::lists::search_events(store, &s.charters, text, PAGE_LIMIT).await?;
            let n = found.len() as u64;
            (found, n, None)
        }
        (None, true) => {
            let page = crate::lists::events(
                store,
                EventFilter {
                    charter: charter.clone(),
                    status,
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
            (page.items, page.total, page.next)
        }
    };
    let mut body =
        String::from("<h1>Events</h1><form class=\"filters\" method=\"get\" action=\"/events\">");
    let _ = write!(
        body,
        "<label>Charter {}</label>",
        charter_select(&ui, &s, charter.as_deref())
    );
    body.push_str("<label>Status <select name=\"status\"><option value=\"\">any status</option>");
    for st in ["pending", "processing", "waiting", "done", "failed"] {
        let sel = if status.is_some_and(|x| x.as_str() == st) {
            " selected"
        } else {
            ""
        };
        let _ = write!(body, "<option value=\"{st}\"{sel}>{st}</option>");
    }
    let _ = write!(
        body,
        "</select></label><label>From <input type=\"datetime-local\" name=\"since\" value=\"{}\"></label><label>To <input type=\"datetime-local\" name=\"until\" value=\"{}\"></label><label>Order <select name=\"sort\"><option value=\"\">newest first</option><option value=\"oldest\"{}>oldest first</option></select></label><label>Search <input type=\"text\" name=\"q\" placeholder=\"dedupe key, or event id (or its start)\" value=\"{}\" size=\"34\"></label><button type=\"submit\">Show</button></form>",
        esc(since_text.as_deref().unwrap_or("")),
        esc(until_text.as_deref().unwrap_or("")),
        if sort_text.as_deref() == Some("oldest") {
            " selected"
        } else {
            ""
        },
        esc(search.as_deref().unwrap_or(""))
    );
    if list.is_empty() {
        body.push_str("<p class=\"meta\">No event matches.</p>");
    } else {
        let _ = write!(
            body,
            "<table><thead><tr><th>Event</th><th>Charter</th><th>Status</th><th>Received ({})</th><th>Dedupe key</th><th>Source</th><th>Runs</th></tr></thead><tbody>",
            esc(ui.zone().name())
        );
        for e in &list {
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
    }
    let _ = write!(
        body,
        "<p class=\"pager meta\">{} shown of {total} · ",
        list.len()
    );
    let params = [
        ("charter", charter.as_deref()),
        ("status", q.status.as_deref().filter(|_| status.is_some())),
        ("since", since_text.as_deref()),
        ("until", until_text.as_deref()),
        ("sort", sort_text.as_deref()),
    ];
    if cursor.is_some() {
        let _ = write!(
            body,
            "<a href=\"{}\">First page</a> · ",
            esc(&events_url(&params, None))
        );
    }
    match &next {
        Some(n) => {
            let _ = write!(
                body,
                "<a rel=\"next\" href=\"{}\">Next page</a></p>",
                esc(&events_url(&params, Some(n)))
            );
        }
        None => body.push_str("last page</p>"),
    }
    Ok(Html(page(
        "Events",
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}

#[derive(Debug, Default, Deserialize)]
pub struct MsgQuery {
    pub msg: Option<String>,
}

/// One item of a timeline.
struct Item {
    at: i64,
    seq: usize,
    kind: String,
    html: String,
}

fn action_html(zone: &Zone, a: &ActionRecord) -> String {
    let in_doubt = a.status == ActionStatus::InDoubt;
    // An in-doubt request is checked downstream by its whole key.
    let key = if in_doubt {
        &a.idempotency_key[..]
    } else {
        &a.idempotency_key[..a.idempotency_key.len().min(16)]
    };
    let mut out = format!(
        "{} <span class=\"meta\">idempotency key <code>{}</code></span>{}",
        badge(a.status.as_str()),
        esc(key),
        json_block(&a.params)
    );
    if in_doubt {
        out.push_str(
            "<div class=\"meta\">In doubt: the intent was recorded before the request left, \
             but the run was cut off before its outcome was. The request may have reached the \
             target with this idempotency key; a later run sends it again with the same key.</div>",
        );
    }
    if a.attempts.is_empty() {
        out.push_str("<div class=\"meta\">no attempt (not executed)</div>");
    } else {
        let _ = write!(
            out,
            "<table><thead><tr><th>#</th><th>Started ({})</th><th>Took</th><th>Response status</th><th>Result</th></tr></thead><tbody>",
            esc(zone.name())
        );
        for t in &a.attempts {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{} ms</td><td>{}</td><td>{}</td></tr>",
                t.attempt,
                time(zone, t.started_at),
                t.duration_ms,
                t.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "—".into()),
                if t.ok {
                    badge("ok")
                } else {
                    format!(
                        "{} {}",
                        badge("failed"),
                        esc(t.error.as_deref().unwrap_or(""))
                    )
                }
            );
        }
        out.push_str("</tbody></table>");
    }
    out
}

fn run_started_html(tr: &TimelineRun) -> String {
    let run = &tr.run;
    let mut out = format!(
        "<div class=\"meta\">mode {} · charter version <code>{}</code></div>",
        esc(&run.mode),
        esc(&run.charter_version[..run.charter_version.len().min(12)])
    );
    if let Some(d) = &run.decision {
        let _ = write!(out, "<div>Decision: {}</div>", decision_line(run));
        if !d.stages.is_empty() {
            out.push_str("<table><thead><tr><th>Stage</th><th>Label</th><th>Confidence</th><th>Accepted</th><th>Note</th></tr></thead><tbody>");
            for st in &d.stages {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&format!("{:?}", st.stage).to_lowercase()),
                    esc(st.label.as_deref().unwrap_or("—")),
                    st.confidence
                        .map(|c| format!("{c:.3}"))
                        .unwrap_or_else(|| "—".into()),
                    if st.accepted { "yes" } else { "no" },
                    esc(&st.note)
                );
            }
            out.push_str("</tbody></table>");
        }
        if !d.fields.is_empty() {
            let fields = serde_json::to_value(&d.fields).unwrap_or(Value::Null);
            let _ = write!(out, "<div>Extracted fields:</div>{}", json_block(&fields));
        }
    }
    match run.route {
        Some(i) => {
            let _ = write!(
                out,
                "<div>Route #{} matched{}</div>",
                i + 1,
                tr.route_rule
                    .as_ref()
                    .map(|r| format!(
                        ": <code>{}</code> → {}",
                        esc(&r.when),
                        esc(&r.actions.join(", "))
                    ))
                    .unwrap_or_default()
            );
        }
        None if run.finished_at.is_some() => out.push_str("<div>No route taken.</div>"),
        None => {}
    }
    out
}

fn context_html(c: &ContextView) -> String {
    format!(
        "{} <span class=\"meta\">connector {} · status {} · {}</span>{}",
        badge(if c.ok { "ok" } else { "failed" }),
        esc(c.connector.as_deref().unwrap_or("—")),
        c.status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "—".into()),
        c.duration_ms
            .map(|d| format!("{d} ms"))
            .unwrap_or_else(|| "—".into()),
        c.error
            .as_deref()
            .map(|e| format!("<div class=\"meta\">{}</div>", esc(e)))
            .unwrap_or_default()
    )
}

fn draft_html(d: &DraftView) -> String {
    let u = &d.usage;
    format!(
        "<div class=\"meta\">provider {} · model {} · {} call(s) · {} prompt + {} completion tokens · cost {:.6}{}</div><pre class=\"draft\">{}</pre>",
        esc(d.provider.as_deref().unwrap_or("—")),
        esc(d.model.as_deref().unwrap_or("—")),
        u.calls,
        u.prompt_tokens,
        u.completion_tokens,
        u.cost,
        d.reused_from_run
            .map(|r| format!(" · reused from run <code>{r}</code>"))
            .unwrap_or_default(),
        esc(&d.text)
    )
}

pub async fn timeline<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Query(q): Query<MsgQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let id = Uuid::parse_str(&id).map_err(|_| UiError::NotFound)?;
    let t = crate::operator::timeline_data(&ui.app, id, |c| s.sees(c)).await?;
    let (ev, runs, approvals, escalations, audit) =
        (&t.event, &t.runs, &t.approvals, &t.escalations, &t.audit);
    let charter = ev.event.charter.clone();

    let mut items: Vec<Item> = Vec::new();
    let mut push = |at: i64, kind: String, html: String| {
        let seq = items.len();
        items.push(Item {
            at,
            seq,
            kind,
            html,
        });
    };
    let e = &ev.event;
    push(
        e.received_at,
        "Event received".into(),
        format!(
            "<div class=\"meta\">source {} · type {} · dedupe key {}</div>{}{}",
            esc(&e.source),
            esc(e.event_type.as_deref().unwrap_or("—")),
            esc(e.dedupe_key.as_deref().unwrap_or("—")),
            if e.headers.is_empty() {
                String::new()
            } else {
                json_block(&serde_json::to_value(&e.headers).unwrap_or(Value::Null))
            },
            json_block(&e.payload)
        ),
    );
    for (n, tr) in runs.iter().enumerate() {
        let run = &tr.run;
        push(
            run.started_at,
            format!("Run {} started", n + 1),
            run_started_html(tr),
        );
        for c in &tr.context {
            push(c.at, format!("Context {}", esc(&c.name)), context_html(c));
        }
        for d in &tr.drafts {
            push(d.at, format!("Draft for {}", esc(&d.action)), draft_html(d));
        }
        for a in &run.actions {
            let at = a
                .attempts
                .first()
                .map(|t| t.started_at)
                .unwrap_or(run.started_at);
            push(
                at,
                format!("Action {}", esc(&a.action)),
                action_html(ui.zone(), a),
            );
        }
        if let Some(done) = run.finished_at {
            push(
                done,
                format!("Run {} finished", n + 1),
                format!(
                    "{}{}",
                    run.outcome.map(|o| badge(o.as_str())).unwrap_or_default(),
                    run.error
                        .as_deref()
                        .map(|m| format!(" <span class=\"meta\">{}</span>", esc(m)))
                        .unwrap_or_default()
                ),
            );
        }
    }
    for a in approvals {
        push(
            a.created_at,
            format!("Approval requested for {}", esc(&a.action)),
            format!(
                "<span class=\"meta\">reviewers: {} · {}</span>",
                esc(&if a.reviewers.is_empty() {
                    "any reviewer".to_string()
                } else {
                    a.reviewers.join(", ")
                }),
                a.expires_at
                    .map(|t| format!("expires {}", time(ui.zone(), t)))
                    .unwrap_or_else(|| "no deadline".into())
            ),
        );
        if let Some(at) = a.decided_at {
            push(
                at,
                format!("Approval {}", a.status.as_str()),
                format!(
                    "by <strong>{}</strong>{}{}",
                    esc(a.decided_by.as_deref().unwrap_or("?")),
                    a.comment
                        .as_deref()
                        .map(|c| format!(" — {}", esc(c)))
                        .unwrap_or_default(),
                    a.edited_params
                        .as_ref()
                        .map(|p| format!("<div>with edited parameters:</div>{}", json_block(p)))
                        .unwrap_or_default()
                ),
            );
        }
    }
    for x in escalations {
        push(
            x.created_at,
            format!("Escalated: {}", esc(&x.reason.replace('_', " "))),
            format!(
                "{} <span class=\"meta\">to {}</span>",
                badge(x.status.as_str()),
                esc(x.target.as_deref().unwrap_or("any reviewer"))
            ),
        );
        if let (Some(at), Some(r)) = (x.resolved_at, &x.resolution) {
            push(
                at,
                "Escalation resolved".into(),
                format!(
                    "by <strong>{}</strong>: label <strong>{}</strong>",
                    esc(x.resolved_by.as_deref().unwrap_or("?")),
                    esc(&r.label)
                ),
            );
        }
    }
    for a in audit {
        push(
            a.at,
            format!("Audit: {}", esc(&a.action)),
            format!(
                "by <strong>{}</strong>{}",
                esc(&a.actor),
                json_block(&a.detail)
            ),
        );
    }
    items.sort_by_key(|i| (i.at, i.seq));

    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Event <code>{}</code> {}</h1><div class=\"meta\">charter <a href=\"/charters/{}\">{}</a> · {} run(s) · last change {}</div>",
        id,
        badge(ev.status.as_str()),
        url_enc(&charter),
        esc(&charter),
        runs.len(),
        time(ui.zone(), ev.updated_at)
    );
    if s.role >= Role::Reviewer {
        body.push_str("<div class=\"actions\">");
        if s.role >= Role::Admin {
            let _ = write!(
                body,
                "{}<span class=\"meta\">Actions that already succeeded are not executed again.</span> ",
                button_form(&format!("/events/{id}/replay"), &s.csrf, "Replay", "")
            );
        }
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/events/{id}/reroute\" class=\"inline\">{}<label>Note <input type=\"text\" name=\"note\" placeholder=\"for the human (optional)\"></label> <button type=\"submit\">Reroute to the manual queue</button></form>",
            csrf_field(&s.csrf)
        );
        body.push_str("</div>");
    }
    // What waits on this event, decidable here by those allowed (the inbox's cards).
    let back = format!("/events/{id}");
    for a in approvals
        .iter()
        .filter(|a| a.status == ApprovalStatus::Pending)
    {
        body.push_str("<h2>Waiting for approval</h2>");
        body.push_str(&super::inbox::approval_card(&ui, &s, a, &back).await?);
    }
    for x in escalations
        .iter()
        .filter(|x| x.status == EscalationStatus::Open)
    {
        body.push_str("<h2>Waiting for a human</h2>");
        body.push_str(&super::inbox::escalation_card(&ui, &s, x, &back).await?);
    }
    body.push_str("<h2>Timeline</h2><ol class=\"timeline\">");
    for i in &items {
        let _ = write!(
            body,
            "<li><div><span class=\"kind\">{}</span> <span class=\"meta\">{}</span></div>{}</li>",
            i.kind,
            time(ui.zone(), i.at),
            i.html
        );
    }
    body.push_str("</ol>");
    Ok(Html(page(
        "Event",
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}

/// What the charters pages show about one charter.
struct Summary {
    mode: String,
    paused: bool,
    counts: BTreeMap<&'static str, usize>,
    queued: u64,
    approvals: usize,
    escalations: usize,
}

async fn summary<S: Store>(
    ui: &UiState<S>,
    name: &str,
    paused: &[String],
    pending: &[(String, u64)],
) -> Result<Summary, UiError> {
    let store = &ui.app.store;
    // True counts (indexed), however many events the charter holds.
    let mut counts = BTreeMap::new();
    for st in [
        EventStatus::Pending,
        EventStatus::Processing,
        EventStatus::Waiting,
        EventStatus::Done,
        EventStatus::Failed,
    ] {
        let n = store
            .count_events(EventFilter {
                charter: Some(name.to_string()),
                status: Some(st),
                ..EventFilter::default()
            })
            .await?;
        if n > 0 {
            counts.insert(st.as_str(), usize::try_from(n).unwrap_or(usize::MAX));
        }
    }
    let approvals = store
        .count_approvals(ApprovalFilter {
            charter: Some(name.to_string()),
            status: Some(ApprovalStatus::Pending),
            ..ApprovalFilter::default()
        })
        .await?;
    let escalations = store
        .count_escalations(EscalationFilter {
            charter: Some(name.to_string()),
            status: Some(EscalationStatus::Open),
            ..EscalationFilter::default()
        })
        .await?;
    let approvals = usize::try_from(approvals).unwrap_or(usize::MAX);
    let escalations = usize::try_from(escalations).unwrap_or(usize::MAX);
    Ok(Summary {
        mode: effective_mode(ui, name).await?,
        paused: paused.iter().any(|p| p == name),
        counts,
        queued: pending
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, k)| *k),
        approvals,
        escalations,
    })
}

/// The mode a charter runs in now (an operator's stored promotion or demotion included).
async fn effective_mode<S: Store>(ui: &UiState<S>, name: &str) -> Result<String, UiError> {
    match ui.app.runtime.charters.get(name) {
        Some(c) => Ok(crate::operator::effective_mode(&ui.app.store, &c.charter)
            .await?
            .as_str()
            .to_string()),
        None => Ok(String::new()),
    }
}

fn counts_text(c: &BTreeMap<&'static str, usize>) -> String {
    if c.is_empty() {
        return "<span class=\"meta\">no events</span>".into();
    }
    c.iter()
        .map(|(k, v)| format!("{} {v}", badge(k)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn operator_buttons(name: &str, s: &Session, sum: &Summary, back: &str) -> String {
    if s.role < Role::Admin {
        return "<span class=\"meta\">admins only</span>".into();
    }
    let enc = url_enc(name);
    let with_back = |action: &str, label: &str, class: &str| {
        format!(
            "<form method=\"post\" action=\"/charters/{enc}/{action}\" class=\"inline\">{}<input type=\"hidden\" name=\"back\" value=\"{}\"><button type=\"submit\" class=\"{class}\">{label}</button></form>",
            csrf_field(&s.csrf),
            esc(back)
        )
    };
    let mut out = String::new();
    if sum.paused {
        out.push_str(&with_back("resume", "Resume", "primary"));
    } else {
        out.push_str(&with_back("pause", "Pause", ""));
    }
    out.push(' ');
    out.push_str(&with_back("replay", "Replay failed", ""));
    out.push(' ');
    if sum.mode == "shadow" {
        out.push_str(&with_back("promote", "Promote to live", "primary"));
    } else {
        out.push_str(&with_back("demote", "Back to shadow", ""));
    }
    out
}

pub async fn charters<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<MsgQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let paused = ui.app.store.paused().await?;
    let pending = ui.app.store.pending_counts().await?;
    let mut body = String::from(
        "<h1>Charters</h1><table><thead><tr><th>Charter</th><th>Owner</th><th>Maintainer</th><th>Mode</th><th>State</th><th>Events by status</th><th>Pending work</th><th>Operator</th></tr></thead><tbody>",
    );
    for (name, cr) in &ui.app.runtime.charters {
        if !s.sees(name) {
            continue;
        }
        let sum = summary(&ui, name, &paused, &pending).await?;
        let _ = write!(
            body,
            "<tr><td><a href=\"/charters/{}\">{}</a><div class=\"meta\">{}</div></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} queued · {} approvals · {} escalations</td><td>{}</td></tr>",
            url_enc(name),
            esc(name),
            esc(&cr.charter.description),
            esc(&cr.charter.owner),
            esc(&cr.charter.maintainer),
            badge(&sum.mode),
            if sum.paused {
                badge("paused")
            } else {
                badge("running")
            },
            counts_text(&sum.counts),
            sum.queued,
            sum.approvals,
            sum.escalations,
            operator_buttons(name, &s, &sum, "/charters")
        );
    }
    body.push_str(
        "</tbody></table><p class=\"meta\">Counts cover each charter's latest 10,000 events.</p>",
    );
    Ok(Html(page(
        "Charters",
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}

/// One shadow run and what a human later said about the same event.
struct ShadowRow {
    run: RunRecord,
    /// `Some(true)`: a human later corrected it; `Some(false)`: a human later agreed;
    /// `None`: no human looked at this event afterwards.
    corrected: Option<bool>,
    note: String,
}

/// The window of the charter page's measurements and charts.
const MEASURE_WINDOW_MS: i64 = 7 * 24 * 3_600_000;
/// Size of each chart on the charter page, in pixels.
const CHART_W: u32 = 360;
const CHART_H: u32 = 160;

pub async fn charter<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
    Query(q): Query<MsgQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let Some(cr) = ui.app.runtime.charters.get(&name) else {
        return Err(UiError::NotFound);
    };
    if !s.sees(&name) {
        return Err(UiError::NotFound);
    }
    let store = &ui.app.store;
    let paused = store.paused().await?;
    let pending = store.pending_counts().await?;
    let sum = summary(&ui, &name, &paused, &pending).await?;
    let c = &cr.charter;
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>{} {} {}</h1><p>{}</p><table><tbody>\
         <tr><th>Owner</th><td>{}</td></tr><tr><th>Maintainer</th><td>{}</td></tr>\
         <tr><th>System of record</th><td>{}</td></tr><tr><th>Connectors</th><td>{}</td></tr>\
         <tr><th>Webhook</th><td>{}</td></tr><tr><th>Version</th><td><code>{}</code></td></tr>\
         <tr><th>Events by status</th><td>{}</td></tr>\
         <tr><th>Pending work</th><td>{} queued · <a href=\"/inbox?charter={}\">{} approvals · {} escalations</a></td></tr>\
         </tbody></table><div class=\"actions\">{}</div>",
        esc(&name),
        badge(&sum.mode),
        if sum.paused {
            badge("paused")
        } else {
            String::new()
        },
        esc(&c.description),
        esc(&c.owner),
        esc(&c.maintainer),
        esc(&c.system_of_record),
        esc(&c.uses.join(", ")),
        esc(c
            .trigger
            .webhook
            .as_ref()
            .map(|w| w.path.as_str())
            .unwrap_or("—")),
        esc(&c.version[..c.version.len().min(12)]),
        counts_text(&sum.counts),
        sum.queued,
        url_enc(&name),
        sum.approvals,
        sum.escalations,
        operator_buttons(&name, &s, &sum, &format!("/charters/{}", url_enc(&name)))
    );
    let _ = write!(body, "<p>{}</p>", super::rollout::link(&name));
    if s.role >= Role::Admin {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/charters/{0}/replay-range\" class=\"actions\">{1}\
             <input type=\"hidden\" name=\"back\" value=\"/charters/{0}\">\
             <label>Replay events received from <input type=\"datetime-local\" name=\"since\" step=\"1\"></label> \
             <label>until <input type=\"datetime-local\" name=\"until\" step=\"1\"></label> \
             <span class=\"meta\">({2}; either end may be left open; actions that already succeeded are not executed again)</span> \
             <button type=\"submit\">Replay range</button></form>",
            url_enc(&name),
            csrf_field(&s.csrf),
            esc(ui.zone().name())
        );
    }

    // Measurements over the last week, with server-rendered charts.
    let now = crate::now_millis();
    let report = charter_store::ReportStore::report(
        store,
        charter_store::ReportQuery {
            charter: name.clone(),
            since: now.saturating_sub(MEASURE_WINDOW_MS),
            until: now + 1,
            buckets: crate::report::DEFAULT_BUCKETS,
        },
    )
    .await?;
    let declared: Vec<String> = c.measure.names().map(str::to_string).collect();
    let _ = write!(
        body,
        "<h2>Measurements, last 7 days</h2><div class=\"charts\">{}{}{}</div>\
         <details><summary>Figures</summary><pre>{}</pre></details>",
        crate::report::volume_chart(&report, CHART_W, CHART_H),
        crate::report::outcome_chart(&report, CHART_W, CHART_H),
        crate::report::cycle_chart(&report, CHART_W, CHART_H),
        esc(&crate::report::render_text(&report, "7d", &declared)),
    );

    body.push_str(&super::audit::history(&ui, &name).await?);

    // The shadow record.
    let events = store
        .list_events(EventFilter {
            charter: Some(name.clone()),
            limit: PAGE_LIMIT,
            ..EventFilter::default()
        })
        .await?;
    let resolved = store
        .list_escalations(EscalationFilter {
            charter: Some(name.clone()),
            status: Some(EscalationStatus::Resolved),
            limit: COUNT_LIMIT,
            ..EscalationFilter::default()
        })
        .await?;
    let decided_approvals = store
        .list_approvals(ApprovalFilter {
            charter: Some(name.clone()),
            limit: COUNT_LIMIT,
            ..ApprovalFilter::default()
        })
        .await?;
    let mut rows: Vec<ShadowRow> = Vec::new();
    for e in &events {
        for run in store.runs_for_event(e.event.id).await? {
            // A route's own mode may differ from the charter's (see `rollout`): a run whose
            // route executed is not a shadow run, one whose route was in shadow is.
            if !super::rollout::is_shadow_run(&run) {
                continue;
            }
            let label = run.decision.as_ref().and_then(|d| d.label.clone());
            let later = |t: Option<i64>| t.is_some_and(|t| t >= run.started_at);
            let mut corrected = None;
            let mut note = String::new();
            for x in resolved
                .iter()
                .filter(|x| x.event_id == e.event.id && later(x.resolved_at))
            {
                if let Some(r) = &x.resolution {
                    let differs = label.as_deref() != Some(r.label.as_str());
                    corrected = Some(corrected.unwrap_or(false) || differs);
                    note = format!(
                        "{} decided {}",
                        x.resolved_by.as_deref().unwrap_or("a human"),
                        r.label
                    );
                }
            }
            for a in decided_approvals
                .iter()
                .filter(|a| a.event_id == e.event.id && later(a.decided_at))
            {
                let differs = a.status == ApprovalStatus::Rejected || a.edited_params.is_some();
                if a.status == ApprovalStatus::Expired {
                    continue;
                }
                corrected = Some(corrected.unwrap_or(false) || differs);
                note = format!(
                    "{} {} {}{}",
                    a.decided_by.as_deref().unwrap_or("a human"),
                    a.status.as_str(),
                    a.action,
                    if a.edited_params.is_some() {
                        " with an edit"
                    } else {
                        ""
                    }
                );
            }
            rows.push(ShadowRow {
                run,
                corrected,
                note,
            });
        }
    }
    let decided: Vec<&ShadowRow> = rows
        .iter()
        .filter(|r| r.run.decision.as_ref().is_none_or(|d| d.label.is_some()))
        .collect();
    let corrected = decided.iter().filter(|r| r.corrected == Some(true)).count();
    let reviewed = decided.iter().filter(|r| r.corrected.is_some()).count();
    body.push_str("<h2>Shadow record</h2>");
    body.push_str("<p class=\"meta\">In shadow mode the charter decides and records what it would have done, and executes nothing. <strong>Agreement</strong> is the share of the shadow runs a human reviewed that were <em>not</em> corrected, shown once enough were reviewed. A run counts as corrected when, after it, a human decided the same event differently (resolved an escalation with another label) or rejected or edited an approval for it. Runs no human looked at are not counted.</p>");
    if decided.is_empty() {
        body.push_str(
            "<p class=\"meta\">No shadow run with a decision among the latest events.</p>",
        );
    } else if reviewed == 0 {
        let _ = write!(
            body,
            "<p class=\"agreement\"><strong>Agreement: not reviewed</strong> — {} shadow runs decided, none reviewed by a human yet, so there is nothing to agree with ({} abstained and went to a human).</p>",
            decided.len(),
            rows.len() - decided.len()
        );
    } else {
        body.push_str(&super::rollout::agreement_line(
            &name,
            reviewed,
            corrected,
            decided.len(),
            rows.len() - decided.len(),
        ));
    }
    if !rows.is_empty() {
        let _ = write!(
            body,
            "<table><thead><tr><th>Event</th><th>Run started ({})</th><th>Decision</th><th>Would have run</th><th>A human later</th></tr></thead><tbody>",
            esc(ui.zone().name())
        );
        for r in &rows {
            let would: Vec<String> = r
                .run
                .actions
                .iter()
                .map(|a| {
                    format!(
                        "<details><summary>{} {}</summary>{}</details>",
                        esc(&a.action),
                        badge(a.status.as_str()),
                        json_block(&a.params)
                    )
                })
                .collect();
            let later = match r.corrected {
                None => "<span class=\"meta\">not reviewed</span>".to_string(),
                Some(false) => format!("{} {}", badge("agreed"), esc(&r.note)),
                Some(true) => format!("{} {}", badge("corrected"), esc(&r.note)),
            };
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                event_link(r.run.event_id),
                time(ui.zone(), r.run.started_at),
                decision_line(&r.run),
                if would.is_empty() {
                    "<span class=\"meta\">nothing</span>".to_string()
                } else {
                    would.join("")
                },
                later
            );
        }
        body.push_str("</tbody></table>");
    }
    Ok(Html(page(
        &name,
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}
