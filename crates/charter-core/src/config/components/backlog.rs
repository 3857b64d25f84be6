//! `server.backlog:` of `charter.yaml`: the bounds on unprocessed work.
//!
//! ```yaml
//! server:
//!   backlog: { max_events: 500000, max_per_charter: 100000, max_age: 2h }
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::config::components::project::ProjectChecker;
use crate::config::diag::Check;
use crate::config::raw::{S, Scalar};

/// `server.backlog:`: how much unprocessed work the store may hold before ingest refuses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBacklog {
    pub max_events: Option<S<i64>>,
    pub max_per_charter: Option<S<i64>>,
    pub max_age: Option<S<Scalar>>,
}

/// How much unprocessed work the store may hold (`server.backlog:` in charter.yaml). Past a
/// bound, webhooks of the charters concerned are answered 503 with `Retry-After` (nothing
/// stored; providers retry) and their poll sources skip their polls, until the workers
/// have drained the backlog below it.
#[derive(Debug, Clone, PartialEq)]
pub struct BacklogSettings {
    /// Events waiting for a worker across all charters (`max_events`, default 1,000,000);
    /// `None`: unbounded (`max_events: 0`).
    pub max_events: Option<u64>,
    /// Events waiting for a worker in one charter (`max_per_charter`; default: the same as
    /// `max_events`).
    pub max_per_charter: Option<u64>,
    /// Age of a charter's oldest waiting event beyond which it takes no more
    /// (`max_age`; default off).
    pub max_age: Option<Duration>,
}

impl BacklogSettings {
    /// The default bound: about 1-2 GB of stored events at typical webhook sizes, so that a
    /// backlog that grows for hours is refused long before it fills a disk.
    pub const DEFAULT_MAX_EVENTS: u64 = 1_000_000;
}

impl Default for BacklogSettings {
    fn default() -> Self {
        BacklogSettings {
            max_events: Some(Self::DEFAULT_MAX_EVENTS),
            max_per_charter: None,
            max_age: None,
        }
    }
}

impl ProjectChecker<'_> {
    pub(crate) fn backlog(&mut self, raw: &RawBacklog) -> BacklogSettings {
        let mut out = BacklogSettings::default();
        if let Some(v) = &raw.max_events {
            out.max_events = self.count(v, "max_events").unwrap_or(out.max_events);
        }
        if let Some(v) = &raw.max_per_charter {
            out.max_per_charter = self.count(v, "max_per_charter").unwrap_or(None);
        }
        if let Some(v) = &raw.max_age {
            out.max_age = self.duration(v, "backlog.max_age");
            if out.max_age.is_some_and(|d| d.is_zero()) {
                self.err(
                    v.referenced,
                    "`max_age` is 0; expected a duration such as `2h` (leave it out for no age bound)",
                );
                out.max_age = None;
            }
        }
        out
    }

    /// A bound in events: 0 means unbounded (`Some(None)`); a negative number is an error
    /// (`None`).
    fn count(&mut self, v: &S<i64>, key: &str) -> Option<Option<u64>> {
        match u64::try_from(v.value) {
            Ok(0) => Some(None),
            Ok(n) => Some(Some(n)),
            Err(_) => {
                self.err(
                    v.referenced,
                    format!(
                        "`backlog.{key}` is {}; expected a number of events (0: unbounded)",
                        v.value
                    ),
                );
                None
            }
        }
    }
}
