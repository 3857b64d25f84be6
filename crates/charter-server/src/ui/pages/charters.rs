//! `GET /charters`: every charter the session sees, with its owner, mode, state, events
//! by status, pending work and (for admins) the operator buttons. The summary of one
//! charter and its buttons are shared with the charter's own page ([`super::charter`]).

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Html;
use charter_core::config::Role;
use charter_core::model::EventStatus;
use charter_store::{
    ApprovalFilter, ApprovalStatus, EscalationFilter, EscalationStatus, EventFilter, Store,
};

use super::MsgQuery;
use crate::ui::html::{badge, csrf_field, esc, page, url_enc};
use crate::ui::session::Session;
use crate::ui::{UiError, UiState};

/// What the charters pages show about one charter.
pub(super) struct Summary {
    pub mode: String,
    pub paused: bool,
    pub counts: BTreeMap<&'static str, usize>,
    pub queued: u64,
    pub approvals: usize,
    pub escalations: usize,
}

/// One charter's summary; `paused` and `pending` are the store's lists for all charters.
pub(super) async fn summary<S: Store>(
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
        Some(c) => Ok(crate::mode::effective_mode(&ui.app.store, &c.charter)
            .await?
            .as_str()
            .to_string()),
        None => Ok(String::new()),
    }
}

/// Events by status, as badges with their counts.
pub(super) fn counts_text(c: &BTreeMap<&'static str, usize>) -> String {
    if c.is_empty() {
        return "<span class=\"meta\">no events</span>".into();
    }
    c.iter()
        .map(|(k, v)| format!("{} {v}", badge(k)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Pause or resume, replay failed, promote or demote (admins; a note for the others).
pub(super) fn operator_buttons(name: &str, s: &Session, sum: &Summary, back: &str) -> String {
    if !s.may(Role::Admin) {
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

/// `GET /charters`: the charters list.
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
