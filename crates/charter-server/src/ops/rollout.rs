//! Rollout per route: the routes' modes and agreement, an admin's change of a route's mode,
//! sampled runs and their reviews, and the reviewers' rewrites of drafts. The rules
//! themselves (sampling, agreement, promotion and demotion) are in [`crate::rollout`].

use charter_core::config::{Charter, Mode, Role};
use charter_core::model::RunRecord;
use charter_store::Store;
use charter_store::rollout::{DraftRewrite, SampleFilter, SampleRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::charters::visible;
use super::{OpError, parse_id, require};
use crate::AppState;
use crate::auth::Caller;
use crate::rollout::{
    ReviewBody, RewritesQuery, RouteModeBody, change_route_mode, parse_target, review_as,
    route_views, totals_json,
};

/// Every route of a charter: mode, sampling, agreement and promotion state.
#[derive(Debug, Serialize)]
pub struct Routes {
    pub charter: String,
    pub routes: Vec<Value>,
}

/// A route after an admin changed its mode.
#[derive(Debug, Serialize)]
pub struct RouteChanged {
    pub charter: String,
    /// The route as [`Routes`] shows it (null if it is gone).
    pub route: Value,
    /// The mode it runs in now.
    #[serde(skip)]
    pub mode: Mode,
}

/// Sampled runs.
#[derive(Debug, Serialize)]
pub struct Samples {
    pub samples: Vec<SampleRecord>,
}

/// One sample with the run it points at.
#[derive(Debug, Serialize)]
pub struct SampleView {
    pub run: Option<RunRecord>,
    pub sample: SampleRecord,
}

/// A reviewed sample.
#[derive(Debug, Serialize)]
pub struct Reviewed {
    pub sample: SampleRecord,
}

/// Rewrite totals per charter, route and action, and the edited pairs.
#[derive(Debug, Serialize)]
pub struct Rewrites {
    pub rewrites: Vec<DraftRewrite>,
    pub totals: Vec<Value>,
}

/// Which samples to list.
#[derive(Debug, Deserialize)]
pub struct SamplesQuery {
    pub charter: Option<String>,
    pub route: Option<String>,
    /// `pending` (default), `reviewed` or `all`.
    pub status: Option<String>,
    pub limit: Option<usize>,
}

async fn routes_of<S: Store>(state: &AppState<S>, charter: &Charter) -> Result<Routes, OpError> {
    let views = route_views(state, charter).await?;
    let routes = views
        .iter()
        .zip(&charter.routes)
        .map(|(v, r)| v.json(r))
        .collect();
    Ok(Routes {
        charter: charter.name.clone(),
        routes,
    })
}

/// The routes of charter `name`.
pub async fn routes<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    name: &str,
) -> Result<Routes, OpError> {
    let charter = visible(state, caller, name)?;
    routes_of(state, &charter).await
}

/// Set the mode of route `route` of charter `name` (admin): `shadow`, `approve`, `live` or
/// `file` (drop the override). `change` is read as input, reported after the charter is
/// found.
pub async fn set_route_mode<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    (name, route): (&str, &str),
    change: Result<RouteModeBody, OpError>,
) -> Result<RouteChanged, OpError> {
    require(caller, Role::Admin)?;
    let charter = visible(state, caller, name)?;
    let change = change?;
    let target = parse_target(&change.mode)?;
    let (_, after) =
        change_route_mode(state, &caller.name, &charter, route, target, change.reason).await?;
    let all = routes_of(state, &charter).await?;
    let one = all
        .routes
        .into_iter()
        .find(|r| r["name"] == route)
        .unwrap_or(Value::Null);
    Ok(RouteChanged {
        charter: charter.name.clone(),
        route: one,
        mode: after,
    })
}

/// Sampled runs of the charters the caller sees.
pub async fn samples<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    q: SamplesQuery,
) -> Result<Samples, OpError> {
    let reviewed = match q.status.as_deref().unwrap_or("pending") {
        "pending" => Some(false),
        "reviewed" => Some(true),
        "all" => None,
        s => {
            return Err(OpError::Invalid(format!(
                "unknown status `{s}`: expected pending, reviewed or all"
            )));
        }
    };
    if let Some(c) = &q.charter
        && !caller.sees(c)
    {
        return Ok(Samples { samples: vec![] });
    }
    let list = state
        .store
        .samples(SampleFilter {
            charter: q.charter.clone(),
            route: q.route.clone(),
            reviewed,
            limit: q.limit.unwrap_or(100).min(1000),
        })
        .await?;
    let samples = list
        .into_iter()
        .filter(|s| caller.sees(&s.sample.charter))
        .collect();
    Ok(Samples { samples })
}

/// Sample `id` with the run it points at.
pub async fn sample<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<SampleView, OpError> {
    let sample = match state.store.sample(parse_id(id)?).await? {
        Some(s) if caller.sees(&s.sample.charter) => s,
        _ => return Err(OpError::NotFound),
    };
    let run = state
        .store
        .runs_for_event(sample.sample.event_id)
        .await?
        .into_iter()
        .find(|r| r.id == sample.sample.run_id);
    Ok(SampleView { run, sample })
}

/// Review sample `id` (reviewer); `review` is read as input. 409 when it was reviewed
/// already. See [`review_as`].
pub async fn review<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
    review: Result<ReviewBody, OpError>,
) -> Result<Reviewed, OpError> {
    require(caller, Role::Reviewer)?;
    let sample = review_as(state, caller, id, review?).await?;
    Ok(Reviewed { sample })
}

/// Rewrites of drafts by reviewers, of the charters the caller sees.
pub async fn rewrites<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    q: RewritesQuery,
) -> Result<Rewrites, OpError> {
    if let Some(c) = &q.charter
        && !caller.sees(c)
    {
        return Err(OpError::NotFound);
    }
    let since = q.since.unwrap_or(0);
    let stats = state
        .store
        .rewrite_stats(q.charter.as_deref(), since)
        .await?;
    let stats: charter_store::rollout::RewriteStats = stats
        .into_iter()
        .filter(|((c, _, _), _)| caller.sees(c))
        .collect();
    let limit = q.limit.unwrap_or(100).min(10_000);
    let rewrites = state
        .store
        .rewrites(q.charter.as_deref(), since, limit)
        .await?
        .into_iter()
        .filter(|w| caller.sees(&w.charter))
        .collect();
    Ok(Rewrites {
        rewrites,
        totals: totals_json(&stats),
    })
}
