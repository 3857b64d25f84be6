//! The rollout's forms: a sample's review and a route's mode (`POST`), through the admin
//! API's handlers with the session's token, as the other forms do: a reviewer reviews
//! samples, only an admin changes a route's mode. The pages are in [`super::pages::rollout`]
//! and [`super::pages::review`].

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Form, Json};
use charter_store::Store;
use serde_json::{Value, json};

use super::html::url_enc;
use super::{UiError, UiState, redirect};

// The pages at their old paths, for the router.
pub use super::pages::review::page_review;
pub use super::pages::rollout::page_rollout;

/// `POST /samples/{id}/review` (form): the review, through the API's handler.
pub async fn post_review<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let decision_right = match form.get("decision").map(String::as_str) {
        Some("right") => true,
        Some("wrong") => false,
        _ => {
            return Err(UiError::BadRequest(
                "say whether the decision was right or wrong".into(),
            ));
        }
    };
    let mut actions = serde_json::Map::new();
    for (k, v) in &form {
        if let Some(a) = k.strip_prefix("action.") {
            actions.insert(a.to_string(), Value::Bool(v == "right"));
        }
    }
    let right_label = form
        .get("right_label")
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !decision_right);
    let body = json!({
        "decision_right": decision_right,
        "right_label": right_label,
        "actions": actions,
        "note": form.get("note").map(|n| n.trim()).filter(|n| !n.is_empty()),
    });
    let bytes = serde_json::to_vec(&body).map_err(|e| UiError::BadRequest(e.to_string()))?;
    let Json(v) = crate::rollout::review(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Path(id),
        Bytes::from(bytes),
    )
    .await?;
    let next = super::local_path(form.get("next").map(String::as_str), "/charters");
    let agreed = v["sample"]["review"]["decision_right"] == json!(true)
        && v["sample"]["review"]["actions"]
            .as_object()
            .is_none_or(|m| m.values().all(|x| x == &json!(true)));
    let code = if agreed {
        "review_agreed"
    } else {
        "review_corrected"
    };
    Ok(redirect(&super::flash::with_code(&next, code, None)))
}

/// `POST /rollout/{name}/routes/{route}/mode` (form, admin): set a route's mode.
pub async fn post_route_mode<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    Path((name, route)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let s = ui.require_post(&headers, &form).await?;
    let mode = form.get("mode").cloned().unwrap_or_default();
    let body = serde_json::to_vec(&json!({ "mode": mode }))
        .map_err(|e| UiError::BadRequest(e.to_string()))?;
    let Json(v) = crate::rollout::set_route_mode(
        State(ui.app.clone()),
        ui.api_headers(&s),
        Path((name.clone(), route.clone())),
        Bytes::from(body),
    )
    .await?;
    let code = match v["route"]["mode"].as_str() {
        Some("shadow") => "route_shadow",
        Some("approve") => "route_approve",
        _ => "route_live",
    };
    Ok(redirect(&super::flash::with_code(
        &format!("/rollout/{}", url_enc(&name)),
        code,
        None,
    )))
}
