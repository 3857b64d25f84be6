//! The rollout's forms: a sample's review and a route's mode (`POST`), through the
//! operations in [`crate::ops::rollout`] as the session's caller, as the other forms do: a
//! reviewer reviews samples, only an admin changes a route's mode. The pages are in [`super::pages::rollout`]
//! and [`super::pages::review`].

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use charter_core::config::Mode;
use charter_store::Store;

use super::html::url_enc;
use super::{UiError, UiState, redirect};

// The pages at their old paths, for the router.
pub use super::pages::review::page_review;
pub use super::pages::rollout::page_rollout;

/// `POST /samples/{id}/review` (form): the review, through the one review operation.
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
    let actions = form
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("action.")?.to_string(), v == "right")))
        .collect();
    let right_label = form
        .get("right_label")
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !decision_right)
        .map(str::to_string);
    let review = crate::rollout::ReviewBody {
        decision_right: Some(decision_right),
        right_label,
        actions,
        note: form
            .get("note")
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(str::to_string),
    };
    let caller = crate::auth::Caller::from(&s);
    let done = crate::ops::rollout::review(&ui.app, &caller, &id, Ok(review)).await?;
    let next = super::local_path(form.get("next").map(String::as_str), "/charters");
    let agreed = done
        .sample
        .review
        .as_ref()
        .is_some_and(|r| r.decision_right && r.actions.values().all(|right| *right));
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
    let change = crate::rollout::RouteModeBody {
        mode: form.get("mode").cloned().unwrap_or_default(),
        reason: None,
    };
    let caller = crate::auth::Caller::from(&s);
    let changed =
        crate::ops::rollout::set_route_mode(&ui.app, &caller, (&name, &route), Ok(change)).await?;
    let code = match changed.mode {
        Mode::Shadow => "route_shadow",
        Mode::Approve => "route_approve",
        Mode::Live => "route_live",
    };
    Ok(redirect(&super::flash::with_code(
        &format!("/rollout/{}", url_enc(&name)),
        code,
        None,
    )))
}
