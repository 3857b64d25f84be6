//! `alerts:` of a charter: a list of conditions, each with the connector that is notified.
//!
//! ```yaml
//! alerts:
//!   - error_rate: { above: 5%, window: 15m, notify: ops-webhook:/hooks/alerts }
//!   - stuck: { older_than: 10m, when: 'payload.priority == "high"', notify: ops-webhook }
//!   - budget_exhausted: { window: 1h, notify: ops-webhook }
//!   - dead_letters: { window: 15m, notify: ops-webhook }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::NotifyChannel;
use crate::config::components::charter::CharterChecker;
use crate::config::components::names::Scope;
use crate::config::components::notify::NotifyWording;
use crate::config::diag::Check;
use crate::config::raw::{Location, S, Scalar};
use crate::expr::Expr;

/// One entry of `alerts:`: exactly one kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlert {
    pub error_rate: Option<S<RawAlertSpec>>,
    pub stuck: Option<S<RawAlertSpec>>,
    pub budget_exhausted: Option<S<RawAlertSpec>>,
    pub dead_letters: Option<S<RawAlertSpec>>,
}

/// The settings of one alert (which apply depends on the kind).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertSpec {
    /// `5%` / `0.05` (error_rate) or a count (dead_letters).
    pub above: Option<S<Scalar>>,
    pub window: Option<S<Scalar>>,
    pub older_than: Option<S<Scalar>>,
    pub when: Option<S<Scalar>>,
    pub min_runs: Option<S<i64>>,
    /// `connector` or `connector:/path`.
    pub notify: Option<S<String>>,
}

/// One entry of a charter's `alerts:`.
#[derive(Debug, Clone)]
pub struct AlertRule {
    /// The alert's key within the charter: its kind (`error_rate`), with `#2`, `#3`, ... for
    /// a second and third alert of the same kind.
    pub key: String,
    pub condition: AlertCondition,
    pub notify: AlertTarget,
}

/// When an alert fires.
#[derive(Debug, Clone)]
pub enum AlertCondition {
    /// Failed runs / finished runs over the last `window` is above `above` (a fraction),
    /// with at least `min_runs` runs finished in the window.
    ErrorRate {
        above: f64,
        window: Duration,
        min_runs: u64,
    },
    /// Some event (pending, processing or waiting for a human) was received more than
    /// `older_than` ago; with `when`, only events whose context matches count.
    Stuck {
        older_than: Duration,
        when: Option<Expr>,
    },
    /// A run escalated because the LLM budget or rate limit was exhausted in the window.
    BudgetExhausted { window: Duration },
    /// More than `above` actions were dead-lettered in the window.
    DeadLetters { window: Duration, above: u64 },
}

/// Where an alert is delivered: `notify: <connector>` or `<connector>:<where>`, any connector
/// of charter.yaml that can notify (`http`, `slack`, `smtp`), read as in `escalation.notify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertTarget {
    pub connector: String,
    pub channel: NotifyChannel,
}

/// Default window of `error_rate`, `budget_exhausted` and `dead_letters`.
const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Parse `5%`, `0.05` (a fraction) as a rate in `[0, 1]`.
pub(crate) fn parse_fraction(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let expected = "expected a rate such as `5%` or `0.05`";
    let (num, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 100.0),
        None => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{t}` is not a rate; {expected}"))?;
    let v = v / scale;
    if !(0.0..=1.0).contains(&v) || !v.is_finite() {
        return Err(format!("`{t}` is outside 0%..100%; {expected}"));
    }
    Ok(v)
}

impl CharterChecker<'_> {
    /// Check `alerts:`; `None` when any entry is invalid (each problem is reported).
    pub(crate) fn alerts(&mut self, raw: Option<S<Vec<S<RawAlert>>>>) -> Option<Vec<AlertRule>> {
        let Some(list) = raw else {
            return Some(Vec::new());
        };
        let mut out = Vec::new();
        let mut ok = true;
        let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
        for entry in list.value {
            let at = entry.referenced;
            let a = entry.value;
            let kinds: Vec<(&'static str, S<RawAlertSpec>)> = [
                ("error_rate", a.error_rate),
                ("stuck", a.stuck),
                ("budget_exhausted", a.budget_exhausted),
                ("dead_letters", a.dead_letters),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            if kinds.len() != 1 {
                self.err(
                    at,
                    "an alert needs exactly one of `error_rate`, `stuck`, `budget_exhausted`, \
                     `dead_letters`, such as `- error_rate: { above: 5%, window: 15m, notify: ops }`",
                );
                ok = false;
                continue;
            }
            let Some((kind, spec)) = kinds.into_iter().next() else {
                continue;
            };
            let n = seen.entry(kind).or_insert(0);
            *n += 1;
            let key = if *n == 1 {
                kind.to_string()
            } else {
                format!("{kind}#{n}")
            };
            match self.alert(kind, spec) {
                Some((condition, notify)) => out.push(AlertRule {
                    key,
                    condition,
                    notify,
                }),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn alert(
        &mut self,
        kind: &str,
        spec: S<RawAlertSpec>,
    ) -> Option<(AlertCondition, AlertTarget)> {
        let at = spec.referenced;
        let s = spec.value;
        let mut ok = true;
        // Keys that do not belong to this kind.
        let allowed: &[&str] = match kind {
            "error_rate" => &["above", "window", "min_runs", "notify"],
            "stuck" => &["older_than", "when", "notify"],
            "budget_exhausted" => &["window", "notify"],
            _ => &["above", "window", "notify"],
        };
        let present = [
            ("above", s.above.as_ref().map(|v| v.referenced)),
            ("window", s.window.as_ref().map(|v| v.referenced)),
            ("older_than", s.older_than.as_ref().map(|v| v.referenced)),
            ("when", s.when.as_ref().map(|v| v.referenced)),
            ("min_runs", s.min_runs.as_ref().map(|v| v.referenced)),
        ];
        for (k, loc) in present {
            if let Some(loc) = loc
                && !allowed.contains(&k)
            {
                self.err(
                    loc,
                    format!(
                        "`{k}` does not apply to a `{kind}` alert; expected {}",
                        allowed
                            .iter()
                            .map(|a| format!("`{a}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                ok = false;
            }
        }
        let notify = self.alert_target(&s.notify, at);
        let window = match &s.window {
            Some(w) => self.duration(w, "window"),
            None => Some(DEFAULT_WINDOW),
        };
        let condition = match kind {
            "error_rate" => self.error_rate_alert(&s, at, window),
            "stuck" => self.stuck_alert(&s, at),
            "budget_exhausted" => window.map(|window| AlertCondition::BudgetExhausted { window }),
            _ => {
                let above = match &s.above {
                    Some(v) => match v.value.0.trim().parse::<u64>() {
                        Ok(n) => Some(n),
                        Err(_) => {
                            self.err(
                                v.referenced,
                                "`above`: expected a count of dead-lettered actions, such as `above: 0`",
                            );
                            None
                        }
                    },
                    None => Some(0),
                };
                match (above, window) {
                    (Some(above), Some(window)) => {
                        Some(AlertCondition::DeadLetters { window, above })
                    }
                    _ => None,
                }
            }
        };
        if !ok {
            return None;
        }
        Some((condition?, notify?))
    }

    /// `error_rate:`: the rate `above` which it trips, over `window` and `min_runs`.
    fn error_rate_alert(
        &mut self,
        s: &RawAlertSpec,
        at: Location,
        window: Option<Duration>,
    ) -> Option<AlertCondition> {
        let above = match &s.above {
            Some(v) => match parse_fraction(&v.value.0) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.err(v.referenced, format!("`above`: {e}"));
                    None
                }
            },
            None => {
                self.err(at, "missing `above`: expected the error rate that trips the alert, such as `above: 5%`");
                None
            }
        };
        let min_runs = match &s.min_runs {
            Some(m) => self.positive(m, "min_runs").map(|n| n as u64),
            None => Some(1),
        };
        match (above, window, min_runs) {
            (Some(above), Some(window), Some(min_runs)) => Some(AlertCondition::ErrorRate {
                above,
                window,
                min_runs,
            }),
            _ => None,
        }
    }

    /// `stuck:`: work unfinished for longer than `older_than`, optionally only `when`.
    fn stuck_alert(&mut self, s: &RawAlertSpec, at: Location) -> Option<AlertCondition> {
        let older_than = match &s.older_than {
            Some(v) => self.duration(v, "older_than"),
            None => {
                self.err(at, "missing `older_than`: expected how old unfinished work may get, such as `older_than: 10m`");
                None
            }
        };
        let when = match &s.when {
            Some(w) => match Expr::parse(&w.value.0) {
                Ok(e) => {
                    let names = super::names::expr_names(&w.value.0);
                    self.check_names(w.referenced, "when", &w.value.0, &names, Scope::Alert)
                        .then_some(Some(e))
                }
                Err(e) => {
                    self.err(w.referenced, format!("`when`: {e}"));
                    None
                }
            },
            None => Some(None),
        };
        match (older_than, when) {
            (Some(older_than), Some(when)) => Some(AlertCondition::Stuck { older_than, when }),
            _ => None,
        }
    }

    /// `notify: <connector>` or `<connector>:<where>`: an `http` connector (and a path under
    /// its base URL), a `slack` connector (and a channel, required with a bot token) or an
    /// `smtp` connector (and the recipients) of charter.yaml.
    fn alert_target(
        &mut self,
        raw: &Option<S<String>>,
        at: crate::config::raw::Location,
    ) -> Option<AlertTarget> {
        let Some(n) = raw else {
            self.err(at, "missing `notify`: expected the connector that receives the alert, such as `notify: ops-webhook:/alerts`, `notify: slack:#ops-alerts` or `notify: mail:oncall@acme.example`");
            return None;
        };
        let text = n.value.trim();
        let (connector, path) = match text.split_once(':') {
            Some((c, p)) => (
                c.trim(),
                Some(p.trim().to_string()).filter(|p| !p.is_empty()),
            ),
            None => (text, None),
        };
        if connector.is_empty() {
            self.err(
                n.referenced,
                "`notify`: expected a connector name before `:`",
            );
            return None;
        }
        if let Some(known) = self.connectors
            && !known.contains(connector)
        {
            let list = known
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ");
            self.err(
                n.referenced,
                format!("`notify`: connector `{connector}` is not declared in charter.yaml; expected one of {list}"),
            );
            return None;
        }
        let channel =
            self.notify_channel(connector, path.as_deref(), n.referenced, &ALERT_WORDING)?;
        Some(AlertTarget {
            connector: connector.to_string(),
            channel,
        })
    }
}

const ALERT_WORDING: NotifyWording = NotifyWording {
    slack_channel: "#ops-alerts",
    email: "alert",
    recipients: "oncall@acme.example",
    unusable: ", which cannot deliver alerts; expected an `http` connector (a JSON POST with a `text` field), a `slack` connector (`slack:#ops-alerts`) or an `smtp` connector (`mail:oncall@acme.example`)",
};

#[cfg(test)]
mod tests {
    use super::parse_fraction;

    #[test]
    fn rates_accept_percent_and_fractions() {
        assert_eq!(parse_fraction("5%"), Ok(0.05));
        assert_eq!(parse_fraction(" 50 % "), Ok(0.5));
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert!(parse_fraction("150%").is_err());
        assert!(parse_fraction("-1").is_err());
        assert!(parse_fraction("lots").is_err());
    }
}
