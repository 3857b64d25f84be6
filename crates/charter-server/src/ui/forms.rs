//! The inbox's forms beyond a single approve, reject or decide: the edit kept after an
//! error, bulk approval, and a dead letter's Retry and Dismiss. Each goes through the same
//! API handler the CLI uses, with the session's token.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use charter_store::Store;
use serde_json::json;

use super::html::{self, esc};
use super::session::Session;
use super::{UiError, UiState, back, inbox, redirect, with_count, with_msg};

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

/// Approve several pending approvals of one action at once (the inbox's bulk select):
/// each goes through the API's approval, with its own checks (reviewers, deadline).
pub(super) async fn bulk_approve<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let form: HashMap<String, String> = pairs.iter().cloned().collect();
    let s = ui.require_post(&headers, &form).await?;
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
        let uuid = uuid::Uuid::parse_str(id).map_err(|_| UiError::NotFound)?;
        let a = ui
            .app
            .store
            .get_approval(uuid)
            .await?
            .filter(|a| s.sees(&a.charter))
            .ok_or(UiError::NotFound)?;
        // All or none: a selection with one the user may not decide approves nothing.
        if !inbox::may_decide(&s, &a) {
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
        let Json(_) = crate::api::approve(
            State(ui.app.clone()),
            ui.api_headers(&s),
            Path((*id).to_string()),
            Bytes::new(),
        )
        .await?;
    }
    Ok(redirect(&with_count(
        &back(&form, "/inbox"),
        "bulk_approved",
        ids.len(),
    )))
}

pub(super) async fn retry<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let Json(_) =
        crate::dead_letters::retry(State(ui.app.clone()), ui.api_headers(&s), Path(id)).await?;
    Ok(redirect(&with_msg(
        &back(&form, "/inbox?tab=dead"),
        "retried",
    )))
}

pub(super) async fn dismiss<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let reason = form.get("reason").cloned().unwrap_or_default();
    let body = serde_json::to_vec(&json!({ "reason": reason }))
        .map_err(|e| UiError::BadRequest(e.to_string()))?;
    let Json(_) = crate::dead_letters::dismiss(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Path(id),
        Bytes::from(body),
    )
    .await?;
    Ok(redirect(&with_msg(
        &back(&form, "/inbox?tab=dead"),
        "dismissed",
    )))
}
