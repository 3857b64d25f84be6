//! `server.backlog:` of `charter.yaml`: the bounds on unprocessed work.
//!
//! ```yaml
//! server:
//!   backlog: { max_events: 500000, max_per_charter: 100000, max_age: 2h }
//! ```

use super::super::raw::{RawBacklog, S};
use super::{Check, ProjectChecker};
use crate::config::BacklogSettings;

impl ProjectChecker<'_> {
    pub(super) fn backlog(&mut self, raw: &RawBacklog) -> BacklogSettings {
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
