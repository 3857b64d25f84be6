//! The charter page's forms (admin): pause, resume, replay the failed events or a time
//! range, promote to live, back to shadow. Those hard to undo ask first ([`unconfirmed`]).
//! Each calls the operation in [`crate::ops`] as the session's [`Caller`].

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use charter_core::config::Role;
use charter_store::Store;

use super::forms::back;
use super::html::{self, esc};
use super::session::Session;
use super::{UiError, UiState, parse_form_time, redirect, with_count, with_msg};
use crate::auth::Caller;
use crate::ops;
use crate::ops::charters::ModeChange;
use crate::ops::events::ReplaySelection;

/// Redirect after an operation on a charter: to the form's `back`, else the charter's page,
/// with `msg` shown there.
fn back_to_charter(form: &HashMap<String, String>, name: &str, msg: &str) -> Response {
    let to = back(form, &format!("/charters/{}", html::url_enc(name)));
    redirect(&to_msg(&to, msg))
}

/// `to` with `msg`: a code, or a code with a count after a `-` (`requeued_failed-3`).
fn to_msg(to: &str, msg: &str) -> String {
    match msg.rsplit_once('-') {
        Some((code, n)) if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => {
            with_count(to, code, n.parse().unwrap_or(0))
        }
        _ => with_msg(to, msg),
    }
}

/// Operations that are hard to undo ask first: without `confirm=yes` the form answers with
/// a page that says what will happen and posts the same fields again with it.
/// Those who may not do it are refused first (the API's answer: 404 for a charter out of
/// scope, 403 below admin), so the question is never asked in vain.
fn unconfirmed<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    (charter, uri): (&str, &str),
    form: &HashMap<String, String>,
    title: &str,
    what: &str,
) -> Result<Option<Response>, UiError> {
    if !s.sees(charter) {
        return Err(UiError::NotFound);
    }
    if !s.may(Role::Admin) {
        return Err(UiError::Forbidden);
    }
    if form.get("confirm").map(String::as_str) == Some("yes") {
        return Ok(None);
    }
    let mut fields = String::new();
    for (k, v) in form {
        if k != "confirm" && k != "csrf" {
            fields.push_str(&format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                esc(k),
                esc(v)
            ));
        }
    }
    let cancel = back(form, "/charters");
    let body = format!(
        "<h1>{}</h1><div class=\"card narrow\"><p>{}</p><form method=\"post\" action=\"{}\">{}{}<input type=\"hidden\" name=\"confirm\" value=\"yes\"><div class=\"actions\"><button type=\"submit\" class=\"primary\" autofocus>{}</button><a href=\"{}\">Cancel</a></div></form></div>",
        esc(title),
        esc(what),
        esc(uri),
        html::csrf_field(&s.csrf),
        fields,
        esc(title),
        esc(&cancel)
    );
    Ok(Some(
        Html(html::page(title, Some(&ui.viewer(s)), None, &body)).into_response(),
    ))
}

/// `POST /charters/{name}/pause`.
pub(super) async fn pause<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    ops::charters::set_paused(&ui.app, &Caller::from(&s), &name, true).await?;
    Ok(back_to_charter(&form, &name, "paused"))
}

/// `POST /charters/{name}/resume`.
pub(super) async fn resume<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    ops::charters::set_paused(&ui.app, &Caller::from(&s), &name, false).await?;
    Ok(back_to_charter(&form, &name, "resumed"))
}

/// `POST /charters/{name}/replay`: every failed event of the charter back in the queue,
/// after a confirmation.
pub(super) async fn replay_failed<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    if !ui.app.runtime.charters.contains_key(&name) {
        return Err(UiError::NotFound);
    }
    let failed = ui
        .app
        .store
        .count_events(charter_store::EventFilter {
            charter: Some(name.clone()),
            status: Some(charter_core::model::EventStatus::Failed),
            ..charter_store::EventFilter::default()
        })
        .await?;
    if let Some(page) = unconfirmed(
        &ui,
        &s,
        (&name, &format!("/charters/{}/replay", html::url_enc(&name))),
        &form,
        "Replay failed events",
        &format!(
            "Put all {failed} failed event(s) of {name} back in the queue? Each runs again; actions that already succeeded are not sent again."
        ),
    )? {
        return Ok(page);
    }
    let selection = ReplaySelection {
        charter: Some(name.clone()),
        ..ReplaySelection::default()
    };
    let done = ops::events::replay_many(&ui.app, &Caller::from(&s), selection).await?;
    let n = done.requeued.len();
    Ok(back_to_charter(
        &form,
        &name,
        &format!("requeued_failed-{n}"),
    ))
}

/// The range of a time-range replay form (`since`, `until`), read on the UI's clock.
fn form_range<S: Store>(
    ui: &UiState<S>,
    form: &HashMap<String, String>,
) -> Result<(Option<i64>, Option<i64>), UiError> {
    let field = |k: &str| -> Result<Option<i64>, UiError> {
        match form.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => parse_form_time(v, ui.zone()).map(Some).ok_or_else(|| {
                UiError::BadRequest(format!(
                    "`{k}` is not a date and time like 2026-01-02T15:04 ({})",
                    ui.zone().name()
                ))
            }),
        }
    };
    let (since, until) = (field("since")?, field("until")?);
    if since.is_none() && until.is_none() {
        return Err(UiError::BadRequest(
            "give the start or the end of the range (or both)".into(),
        ));
    }
    if let (Some(a), Some(b)) = (since, until)
        && a >= b
    {
        return Err(UiError::BadRequest(
            "the start of the range must be before its end".into(),
        ));
    }
    Ok((since, until))
}

/// The charter page's time-range replay (admin): every event of the charter received in
/// `[since, until)` goes back in the queue, through the one replay operation (audited
/// `events.replay_range`).
pub(super) async fn replay_range<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    if !ui.app.runtime.charters.contains_key(&name) {
        return Err(UiError::NotFound);
    }
    let (since, until) = form_range(&ui, &form)?;
    if let Some(page) = unconfirmed(
        &ui,
        &s,
        (
            &name,
            &format!("/charters/{}/replay-range", html::url_enc(&name)),
        ),
        &form,
        "Replay the range",
        &format!(
            "Put every event of {name} received in this range back in the queue, whatever its status? Actions that already succeeded are not sent again."
        ),
    )? {
        return Ok(page);
    }
    let selection = ReplaySelection {
        charter: Some(name.clone()),
        since,
        until,
    };
    let done = ops::events::replay_many(&ui.app, &Caller::from(&s), selection).await?;
    let n = done.requeued.len();
    Ok(back_to_charter(
        &form,
        &name,
        &format!("requeued_range-{n}"),
    ))
}

/// `POST /charters/{name}/promote`: shadow to live, after a confirmation.
pub(super) async fn promote<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    if let Some(page) = unconfirmed(
        &ui,
        &s,
        (
            &name,
            &format!("/charters/{}/promote", html::url_enc(&name)),
        ),
        &form,
        "Promote to live",
        &format!(
            "Promote {name} to live? New runs then execute their actions against the real systems instead of only recording them."
        ),
    )? {
        return Ok(page);
    }
    ops::charters::promote(&ui.app, &Caller::from(&s), &name).await?;
    Ok(back_to_charter(&form, &name, "promoted"))
}

/// `POST /charters/{name}/demote`: back to shadow.
pub(super) async fn demote<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let change = ModeChange {
        mode: "shadow".into(),
    };
    ops::charters::set_mode(&ui.app, &Caller::from(&s), &name, Ok(change)).await?;
    Ok(back_to_charter(&form, &name, "demoted"))
}
