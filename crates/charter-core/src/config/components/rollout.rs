//! A route's rollout settings: its name, own mode, shadow sampling and the criteria for
//! promoting it (and demoting it again).
//!
//! ```yaml
//! routes:
//!   - name: billing
//!     when: 'decision.label == "billing"'
//!     do: [assign_billing]
//!     mode: shadow
//!     sample: 10%
//!     promote_when: { agreement: 0.95, reviewed: 200 }
//!     demote_when: { corrections: 10%, reviewed: 20 }
//! ```

use serde::Deserialize;

use crate::config::Mode;
use crate::config::components::alerts::parse_fraction;
use crate::config::components::charter::CharterChecker;
use crate::config::diag::{Check, valid_name};
use crate::config::raw::{Location, S, Scalar};

/// `promote_when:` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPromoteWhen {
    pub agreement: Option<S<Scalar>>,
    pub reviewed: Option<S<i64>>,
    pub auto: Option<S<bool>>,
}

/// `demote_when:` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDemoteWhen {
    pub corrections: Option<S<Scalar>>,
    pub reviewed: Option<S<i64>>,
}

/// A route's rollout settings (`mode`, `sample`, `promote_when`, `demote_when`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteRollout {
    /// `mode:` on the route; `None`: the charter's mode.
    pub mode: Option<Mode>,
    /// Share of the route's runs queued for a reviewer (0 to 1; default 0).
    pub sample: f64,
    /// Reviewed samples needed before agreement is reported (`promote_when.reviewed`, else 30).
    pub min_reviewed: u64,
    pub promote_when: Option<PromoteWhen>,
    pub demote_when: Option<DemoteWhen>,
}

/// `promote_when: { agreement: 0.95, reviewed: 200, auto: false }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromoteWhen {
    /// Share of reviewed samples the reviewer agreed with (0 to 1).
    pub agreement: f64,
    /// Reviewed samples needed at least.
    pub reviewed: u64,
    /// Promote without a human (only when written `auto: true`).
    pub auto: bool,
}

/// `demote_when: { corrections: 10%, reviewed: 20 }`: a live route whose reviewed samples
/// since it went live hold more than `corrections` corrections (at least `reviewed` of them)
/// is demoted to `approve`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemoteWhen {
    pub corrections: f64,
    pub reviewed: u64,
}

/// Reviewed samples needed before a route's agreement is shown, unless `promote_when` says.
pub const DEFAULT_MIN_REVIEWED: u64 = 30;

/// Reviewed samples needed before a demotion when `demote_when.reviewed` is not written.
const DEFAULT_DEMOTE_REVIEWED: u64 = 20;

/// The rollout keys of one route, as written.
pub(crate) struct RawRollout {
    pub mode: Option<S<String>>,
    pub sample: Option<S<Scalar>>,
    pub promote_when: Option<S<RawPromoteWhen>>,
    pub demote_when: Option<S<RawDemoteWhen>>,
}

impl CharterChecker<'_> {
    /// The route's name: as written (checked), else `route-<position>`.
    pub(crate) fn route_name(
        &mut self,
        name: Option<S<String>>,
        position: usize,
    ) -> Option<String> {
        let Some(n) = name else {
            return Some(format!("route-{position}"));
        };
        if valid_name(&n.value) {
            Some(n.value)
        } else {
            self.err(
                n.referenced,
                format!(
                    "route name `{}` is not allowed; expected lower-case letters, digits, `-` and `_`, such as `billing`",
                    n.value
                ),
            );
            None
        }
    }

    /// Check a route's `mode`, `sample`, `promote_when` and `demote_when`.
    pub(crate) fn route_rollout(&mut self, raw: RawRollout) -> Option<RouteRollout> {
        let mut ok = true;
        let mode = match &raw.mode {
            None => None,
            Some(m) => {
                let opts = [
                    ("shadow", Mode::Shadow),
                    ("approve", Mode::Approve),
                    ("live", Mode::Live),
                ];
                let got = self.one_of(m, "mode", &opts);
                ok &= got.is_some();
                got
            }
        };
        let sample = match &raw.sample {
            None => 0.0,
            Some(s) => self.rate(s, "sample").unwrap_or_else(|| {
                ok = false;
                0.0
            }),
        };
        let promote_when = match raw.promote_when {
            None => None,
            Some(p) => {
                let got = self.promote_when(p);
                ok &= got.is_some();
                got
            }
        };
        let demote_when = match raw.demote_when {
            None => None,
            Some(d) => {
                let got = self.demote_when(d);
                ok &= got.is_some();
                got
            }
        };
        ok.then(|| RouteRollout {
            mode,
            sample,
            min_reviewed: promote_when.map_or(DEFAULT_MIN_REVIEWED, |p| p.reviewed),
            promote_when,
            demote_when,
        })
    }

    fn rate(&mut self, v: &S<Scalar>, key: &str) -> Option<f64> {
        match parse_fraction(&v.value.0) {
            Ok(r) => Some(r),
            Err(e) => {
                self.err(v.referenced, format!("`{key}`: {e}"));
                None
            }
        }
    }

    fn count(&mut self, v: &S<i64>, key: &str) -> Option<u64> {
        match u64::try_from(v.value) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                self.err(
                    v.referenced,
                    format!(
                        "`{key}` is {}; expected a whole number of at least 1",
                        v.value
                    ),
                );
                None
            }
        }
    }

    fn required_rate(
        &mut self,
        v: &Option<S<Scalar>>,
        at: Location,
        key: &str,
        example: &str,
    ) -> Option<f64> {
        match v {
            Some(v) => self.rate(v, key),
            None => {
                self.err(
                    at,
                    format!("missing `{key}`: expected a rate, such as `{example}`"),
                );
                None
            }
        }
    }

    fn promote_when(&mut self, raw: S<RawPromoteWhen>) -> Option<PromoteWhen> {
        let at = raw.referenced;
        let p = raw.value;
        let agreement = self.required_rate(
            &p.agreement,
            at,
            "promote_when.agreement",
            "promote_when: { agreement: 0.95, reviewed: 200 }",
        );
        let reviewed = match &p.reviewed {
            Some(n) => self.count(n, "promote_when.reviewed"),
            None => {
                self.err(
                    at,
                    "missing `promote_when.reviewed`: expected the reviewed samples needed, such as `promote_when: { agreement: 0.95, reviewed: 200 }`",
                );
                None
            }
        };
        Some(PromoteWhen {
            agreement: agreement?,
            reviewed: reviewed?,
            auto: p.auto.map(|a| a.value).unwrap_or(false),
        })
    }

    fn demote_when(&mut self, raw: S<RawDemoteWhen>) -> Option<DemoteWhen> {
        let at = raw.referenced;
        let d = raw.value;
        let corrections = self.required_rate(
            &d.corrections,
            at,
            "demote_when.corrections",
            "demote_when: { corrections: 10%, reviewed: 20 }",
        );
        let reviewed = match &d.reviewed {
            Some(n) => self.count(n, "demote_when.reviewed"),
            None => Some(DEFAULT_DEMOTE_REVIEWED),
        };
        Some(DemoteWhen {
            corrections: corrections?,
            reviewed: reviewed?,
        })
    }
}
