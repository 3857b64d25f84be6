//! The inbox's and event page's forms: approve (with an edit), reject, decide, bulk
//! approval, a dead letter's Retry and Dismiss, replay and reroute of an event, and the
//! replay of a rejected payload. Each calls the operation in [`crate::ops`] as the
//! session's [`Caller`] (so roles, scopes, audit entries and re-queueing are exactly the
//! API's) and answers with a redirect and a flash message.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use charter_core::config::Role;
use charter_store::Store;
use serde_json::Value;

use super::html::{self, esc};
use super::session::Session;
use super::{UiError, UiState, inbox, local_path, redirect, with_count, with_msg};
use crate::auth::Caller;
use crate::ops::{self, OpError};

/// Where to go after a form: its `back` field when it is a local path, else `default`.
pub(super) fn back(form: &HashMap<String, String>, default: &str) -> String {
    local_path(form.get("back").map(String::as_str), default)
}

/// An edit that did not take: the approval again, with the user's text kept, its
/// difference from the proposal, and what was wrong (422, nothing decided).
pub(super) async fn edit_again<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    id: &str,
    form: &HashMap<String, String>,
    text: &str,
    why: &str,
) -> Result<Response, UiError> {
    let uuid = uuid::Uuid::parse_str(id).map_err(|_| UiError::NotFound)?;
    let a = ui
        .app
        .store
        .get_approval(uuid)
        .await?
        .filter(|a| s.sees(&a.charter))
        .ok_or(UiError::NotFound)?;
    let back = back(form, "/inbox");
    let body = format!(
        "<h1>Approval: {}</h1><div class=\"error\" role=\"alert\">{}</div><div class=\"card\">{}</div>",
        esc(&a.action),
        esc(why),
        inbox::approval_forms(s, &a, &back, Some(text))
    );
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        Html(html::page("Approval", Some(&ui.viewer(s)), None, &body)),
    )
        .into_response())
}

/// `POST /approvals/{id}/approve`, with the reviewer's edit of the parameters in `params`
/// (JSON) if any. An edit that is not JSON, or that the approval refuses, is shown again.
pub(super) async fn approve<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let edited = form
        .get("params")
        .map(|p| p.trim())
        .filter(|p| !p.is_empty());
    let edit = match edited {
        Some(p) => match serde_json::from_str::<Value>(p) {
            Ok(params) => Some(params),
            Err(e) => {
                let why = format!("The edited parameters are not valid JSON: {e}");
                return edit_again(&ui, &s, &id, &form, p, &why).await;
            }
        },
        None => None,
    };
    let answer = ops::approvals::approve(&ui.app, &Caller::from(&s), &id, Ok(edit)).await;
    let decided = match (answer, edited) {
        (Ok(d), _) => d,
        (Err(OpError::Invalid(why)), Some(p)) => {
            return edit_again(&ui, &s, &id, &form, p, &why).await;
        }
        (Err(e), _) => return Err(e.into()),
    };
    let code = if decided
        .approval
        .edited_params
        .as_ref()
        .is_some_and(Value::is_object)
    {
        "approved_edited"
    } else {
        "approved"
    };
    Ok(redirect(&with_msg(&back(&form, "/inbox"), code)))
}

/// `POST /approvals/{id}/reject` with a `reason`.
pub(super) async fn reject<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let reason = form.get("reason").cloned().unwrap_or_default();
    ops::approvals::reject(&ui.app, &Caller::from(&s), &id, Ok(reason)).await?;
    Ok(redirect(&with_msg(&back(&form, "/inbox"), "rejected")))
}

/// `POST /escalations/{id}/decide` with a `label`, and the fields as JSON (`fields`) and as
/// typed inputs (`field.<name>`).
pub(super) async fn decide<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let label = form.get("label").cloned().unwrap_or_default();
    let fields: Value = match form.get("fields").map(|f| f.trim()) {
        Some(f) if !f.is_empty() => serde_json::from_str(f)
            .map_err(|e| UiError::BadRequest(format!("the fields are not valid JSON: {e}")))?,
        _ => Value::Object(serde_json::Map::new()),
    };
    let Value::Object(mut map) = fields else {
        return Err(UiError::BadRequest(
            "the fields must be a JSON object like {\"order_id\": \"ORD-1\"}".into(),
        ));
    };
    let charter = match uuid::Uuid::parse_str(&id) {
        Ok(u) => ui.app.store.get_escalation(u).await?.map(|e| e.charter),
        Err(_) => None,
    };
    if let Some(c) = charter {
        map.extend(inbox::typed_fields(&ui, &c, &form)?);
    }
    let decision = ops::escalations::Decision {
        label,
        fields: map.into_iter().collect(),
    };
    ops::escalations::decide(&ui.app, &Caller::from(&s), &id, Ok(decision)).await?;
    Ok(redirect(&with_msg(&back(&form, "/inbox"), "decided")))
}

/// Approve several pending approvals of one action at once (the inbox's bulk select):
/// each through the one approval operation, with its own checks (reviewers, deadline).
pub(super) async fn bulk_approve<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let form: HashMap<String, String> = pairs.iter().cloned().collect();
    let s = ui.require_post(&headers, &form).await?;
    let caller = Caller::from(&s);
    let ids: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v.as_str())
        .collect();
    if ids.is_empty() {
        return Err(UiError::BadRequest("select at least one approval".into()));
    }
    let mut action: Option<String> = None;
    for id in &ids {
        let a = match ops::approvals::visible(&ui.app, &caller, id).await {
            Err(OpError::NotFound) => return Err(UiError::NotFound),
            other => other?,
        };
        // All or none: a selection with one the user may not decide approves nothing.
        if !caller.may(Role::Reviewer) || !ops::approvals::may_decide(&caller, &a) {
            return Err(UiError::Forbidden);
        }
        let key = format!("{}/{}", a.charter, a.action);
        match &action {
            None => action = Some(key),
            Some(k) if *k == key => {}
            Some(_) => {
                return Err(UiError::BadRequest(
                    "bulk approval takes approvals of one action of one charter only".into(),
                ));
            }
        }
    }
    for id in &ids {
        ops::approvals::approve(&ui.app, &caller, id, Ok(None)).await?;
    }
    Ok(redirect(&with_count(
        &back(&form, "/inbox"),
        "bulk_approved",
        ids.len(),
    )))
}

/// A dead letter's Retry.
pub(super) async fn retry<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    ops::dead_letters::retry(&ui.app, &Caller::from(&s), &id).await?;
    Ok(redirect(&with_msg(
        &back(&form, "/inbox?tab=dead"),
        "retried",
    )))
}

/// A dead letter's Dismiss, with a `reason`.
pub(super) async fn dismiss<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let reason = form.get("reason").cloned().unwrap_or_default();
    ops::dead_letters::dismiss(&ui.app, &Caller::from(&s), &id, &reason).await?;
    Ok(redirect(&with_msg(
        &back(&form, "/inbox?tab=dead"),
        "dismissed",
    )))
}

/// `POST /events/{id}/replay` (admin).
pub(super) async fn replay_event<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    ops::events::replay(&ui.app, &Caller::from(&s), &id).await?;
    Ok(redirect(&with_msg(
        &format!("/events/{}", html::url_enc(&id)),
        "replayed",
    )))
}

/// `POST /events/{id}/reroute` with an optional `note`.
pub(super) async fn reroute<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let note = form
        .get("note")
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    ops::events::reroute(&ui.app, &Caller::from(&s), &id, Ok(note)).await?;
    Ok(redirect(&with_msg(
        &format!("/events/{}", html::url_enc(&id)),
        "rerouted",
    )))
}

/// Replay a rejected payload: stored as an event when it passes the contract now (then its
/// timeline is shown), otherwise back to the list with what is still wrong.
pub(super) async fn replay_rejected<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let stored = match ops::rejected::replay(&ui.app, &Caller::from(&s), &id).await {
        Ok(r) => r,
        Err(OpError::Contract { violations, .. }) => {
            tracing::debug!(payload = %id, violations = violations.len(), "replayed payload still invalid");
            return Ok(redirect(&with_msg("/rejected", "still_invalid")));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(redirect(&with_msg(
        &format!("/events/{}", html::url_enc(&stored.id.to_string())),
        "stored",
    )))
}
