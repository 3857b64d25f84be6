//! `routes:` of a charter: the ordered `when` -> actions table and each route's mode.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::config::RouteRollout;
use crate::config::components::charter::{CharterChecker, Known};
use crate::config::components::names::Scope;
use crate::config::diag::{Check, list_set};
use crate::config::raw::{Location, RawDemoteWhen, RawPromoteWhen, S, Scalar};
use crate::expr::Expr;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// A name for the route (its rollout state is kept under it); default `route-<n>`.
    pub name: Option<S<String>>,
    pub when: Option<S<Scalar>>,
    #[serde(rename = "do")]
    pub actions: Option<S<Vec<S<String>>>>,
    /// `shadow`, `approve` or `live`; default the charter's mode.
    pub mode: Option<S<String>>,
    /// Share of runs queued for review: `10%` or `0.1`.
    pub sample: Option<S<Scalar>>,
    pub promote_when: Option<S<RawPromoteWhen>>,
    pub demote_when: Option<S<RawDemoteWhen>>,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// `name:`, or `route-<n>` (1-based position) when none is written; unique per charter.
    pub name: String,
    pub when: Expr,
    /// Action names, in order; each is in the charter's `actions`.
    pub actions: Vec<String>,
    /// The route's rollout: its own mode, shadow sampling and promotion criteria.
    pub rollout: RouteRollout,
}

impl CharterChecker<'_> {
    pub(crate) fn routes(&mut self, raw: S<Vec<S<RawRoute>>>, known: &Known) -> Option<Vec<Route>> {
        if raw.value.is_empty() {
            self.err(raw.referenced, "`routes` is empty; expected at least one `- when: <condition>` with `do: [action, ...]`");
            return None;
        }
        let parsed: Vec<Option<(Route, Location)>> = raw
            .value
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let at = r.referenced;
                self.route(r, known, i + 1).map(|route| (route, at))
            })
            .collect();
        let routes: Vec<(Route, Location)> = parsed.into_iter().collect::<Option<_>>()?;
        let mut seen = BTreeSet::new();
        let mut ok = true;
        for (r, at) in &routes {
            if !seen.insert(r.name.as_str()) {
                self.err(
                    *at,
                    format!(
                        "route name `{}` is used twice; expected each route's `name` to be unique",
                        r.name
                    ),
                );
                ok = false;
            }
        }
        ok.then(|| routes.into_iter().map(|(r, _)| r).collect())
    }

    pub(crate) fn route(
        &mut self,
        raw: S<RawRoute>,
        known: &Known,
        position: usize,
    ) -> Option<Route> {
        let at = raw.referenced;
        let r: RawRoute = raw.value;
        let name = self.route_name(r.name, position);
        let rollout = self.route_rollout(super::rollout::RawRollout {
            mode: r.mode,
            sample: r.sample,
            promote_when: r.promote_when,
            demote_when: r.demote_when,
        });
        let when = self.expr(&r.when, at, "when", Scope::Route);
        let actions = match r.actions {
            Some(list) if list.value.is_empty() => {
                self.err(list.referenced, "`do` is empty; expected the names of the actions to run, such as `do: [assign_billing]`");
                None
            }
            Some(list) => {
                let mut ok = true;
                for a in &list.value {
                    if !known.actions.contains(&a.value) {
                        self.err(
                            a.referenced,
                            format!(
                                "route runs action `{}`, which is not declared under `actions`; expected one of {}",
                                a.value,
                                list_set(&known.actions)
                            ),
                        );
                        ok = false;
                    }
                }
                ok.then(|| list.value.into_iter().map(|a| a.value).collect())
            }
            None => {
                self.err(at, "missing `do`: expected the list of actions this route runs, such as `do: [assign_billing]`");
                None
            }
        };
        Some(Route {
            name: name?,
            when: when?,
            actions: actions?,
            rollout: rollout?,
        })
    }
}
