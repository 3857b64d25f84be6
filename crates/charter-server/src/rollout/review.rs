//! Reviews of sampled runs, and what a review may change: a promotion suggested or made, a
//! demotion, the owner's notice.

use super::*;

// ---------------------------------------------------------------------------------------
// Reviews
// ---------------------------------------------------------------------------------------

async fn visible_sample<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<SampleRecord, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    match state.store.sample(id).await? {
        Some(s) if caller.sees(&s.sample.charter) => Ok(s),
        _ => Err(ApiError::NotFound),
    }
}

/// Body of `POST /api/v1/samples/{id}/review`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// Whether the decision (label) was right; required.
    pub decision_right: Option<bool>,
    /// The right label when it was wrong (one of the charter's labels).
    pub right_label: Option<String>,
    /// Every action of the sample: right (`true`) or wrong.
    #[serde(default)]
    pub actions: BTreeMap<String, bool>,
    pub note: Option<String>,
}

/// Check a review against the sample and charter; the review to store.
pub fn check_review(
    charter: &Charter,
    sample: &NewSample,
    body: ReviewBody,
    by: &str,
    at: UnixMillis,
) -> Result<SampleReview, ApiError> {
    let Some(decision_right) = body.decision_right else {
        return Err(ApiError::BadRequest(
            "missing `decision_right`: expected true or false".into(),
        ));
    };
    let names: Vec<String> = sample
        .actions
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for (i, name) in body.actions.keys().enumerate() {
        if !names.contains(name) {
            return Err(ApiError::BadRequest(format!(
                "/actions/{name}: the sample has no action `{name}` (entry {i}); expected one of {}",
                names.join(", ")
            )));
        }
    }
    if let Some(missing) = names.iter().find(|n| !body.actions.contains_key(*n)) {
        return Err(ApiError::BadRequest(format!(
            "/actions/{missing}: missing the verdict on action `{missing}`: expected true (right) or false (wrong)"
        )));
    }
    let right_label = match (decision_right, body.right_label) {
        (true, Some(_)) => {
            return Err(ApiError::BadRequest(
                "/right_label: a right label is given only when the decision was wrong".into(),
            ));
        }
        (true, None) => None,
        (false, label) => {
            let labels = charter.decide.as_ref().map(|d| d.labels.as_slice());
            match (labels, label) {
                (Some(ls), Some(l)) if !ls.contains(&l) => {
                    return Err(ApiError::BadRequest(format!(
                        "/right_label: `{l}` is not a label of {}; expected one of {}",
                        charter.name,
                        ls.join(", ")
                    )));
                }
                (Some(_), None) => {
                    return Err(ApiError::BadRequest(
                        "/right_label: missing: the decision was wrong, so name the right label"
                            .into(),
                    ));
                }
                (_, l) => l,
            }
        }
    };
    Ok(SampleReview {
        by: by.to_string(),
        at,
        decision_right,
        right_label,
        actions: body.actions,
        note: body.note.filter(|n| !n.trim().is_empty()),
    })
}

/// Review a sample as `caller` (the API's and UI's one way in): checked, stored, audited as
/// `sample.review`, then the route is evaluated for promotion or demotion.
pub async fn review_as<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
    body: ReviewBody,
) -> Result<SampleRecord, ApiError> {
    let s = visible_sample(state, caller, id).await?;
    let Some(cr) = state.runtime.charters.get(&s.sample.charter) else {
        return Err(ApiError::NotFound);
    };
    if s.review.is_some() {
        return Err(ApiError::Conflict("the sample was reviewed already".into()));
    }
    let reviewer = caller.reviewer_as.as_deref().unwrap_or(&caller.name);
    let r = check_review(&cr.charter, &s.sample, body, reviewer, now_millis())?;
    let agreed = r.agreed();
    let Some(done) = state.store.review_sample(s.sample.id, r).await? else {
        return Err(ApiError::Conflict("the sample was reviewed already".into()));
    };
    let review = done.review.as_ref();
    audit(
        state,
        &caller.name,
        "sample.review",
        Some(&s.sample.charter),
        Some(s.sample.id.to_string()),
        json!({
            "route": s.sample.route,
            "event": s.sample.event_id,
            "run": s.sample.run_id,
            "label": s.sample.label,
            "agreed": agreed,
            "decision_right": review.map(|r| r.decision_right),
            "right_label": review.and_then(|r| r.right_label.clone()),
            "actions": review.map(|r| &r.actions),
        }),
    )
    .await?;
    state
        .metrics
        .sample_review(&s.sample.charter, &s.sample.route, agreed);
    evaluate(state, &cr.charter, &s.sample.route, s.sample.id).await?;
    Ok(done)
}

/// After a review: suggest (or, with `auto: true`, make) a promotion, or demote a live route
/// whose reviewers disagree too often. `sample` is the review that triggered it (the
/// notification's item).
pub async fn evaluate<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    route: &str,
    sample: Uuid,
) -> Result<(), ApiError> {
    let views = route_views(state, charter).await?;
    let Some((v, r)) = views
        .iter()
        .zip(&charter.routes)
        .find(|(v, _)| v.name == route)
    else {
        return Ok(());
    };
    if v.demotion_due {
        let reason = format!(
            "{} of {} reviewed samples marked wrong since the route went live, above demote_when.corrections {:.1}%",
            v.agreement.reviewed - v.agreement.agreed,
            v.agreement.reviewed,
            100.0 * r.rollout.demote_when.map_or(0.0, |d| d.corrections)
        );
        change_route_mode(
            state,
            AUTOMATIC,
            charter,
            route,
            Some(Mode::Approve),
            Some(reason),
        )
        .await?;
        tell_owner(state, charter, NotificationKind::Demotion, sample).await;
        return Ok(());
    }
    if !v.suggest_promotion {
        return Ok(());
    }
    if r.rollout.promote_when.is_some_and(|p| p.auto) {
        let reason = format!("promote_when met: {}", v.agreement.describe());
        change_route_mode(
            state,
            AUTOMATIC,
            charter,
            route,
            Some(Mode::Live),
            Some(reason),
        )
        .await?;
        tell_owner(state, charter, NotificationKind::Promotion, sample).await;
    } else if state
        .store
        .mark_suggested(&charter.name, route, now_millis())
        .await?
    {
        audit(
            state,
            AUTOMATIC,
            "route.promotion_suggested",
            Some(&charter.name),
            Some(route.to_string()),
            json!({ "route": route, "agreement": v.agreement }),
        )
        .await?;
        tell_owner(state, charter, NotificationKind::Promotion, sample).await;
    }
    Ok(())
}

/// Queue the owner's notice through the charter's notification channels (never fails).
async fn tell_owner<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    kind: NotificationKind,
    sample: Uuid,
) {
    crate::outbox::rollout_changed(state, charter, kind, sample).await;
}
