//! Trigger sources beyond webhooks and NATS: `poll:` (an HTTP API read through a connector)
//! and `schedule:` (a cron expression).
//!
//! ```yaml
//! trigger:
//!   poll:
//!     connector: helpdesk
//!     path: "/api/tickets?updated_since={{ cursor }}"
//!     every: 30s
//!     items: /tickets
//!     key: "{{ item.id }}:{{ item.updated_at }}"
//!     cursor: { max: /updated_at, start: "2026-01-01T00:00:00Z" }
//! ```
//!
//! ```yaml
//! trigger:
//!   schedule: { cron: "0 9 * * mon-fri", timezone: Europe/Paris }
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::config::components::charter::{CharterChecker, Known};
use crate::config::components::names::Scope;
use crate::config::diag::{Check, list};
use crate::config::raw::{Location, S, Scalar};
use crate::cron::{Cron, Zone};
use crate::template::Template;

/// `trigger: { poll: ... }`: fetch a page from an HTTP API every `every`, one event per
/// item.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoll {
    /// An HTTP connector in the charter's `uses`.
    pub connector: Option<S<String>>,
    /// Path (and query) under the connector's `base_url`; a template over `cursor`, such as
    /// `/tickets?since={{ cursor }}`.
    pub path: Option<S<String>>,
    /// Time between polls, such as `30s` (default `60s`).
    pub every: Option<S<Scalar>>,
    /// JSON pointer to the array of items in the response (`/results`); empty or `/` when
    /// the response is the array.
    pub items: Option<S<String>>,
    /// Each item's dedupe key: a JSON pointer into the item (`/id`) or a template over
    /// `item` (`"{{ item.id }}:{{ item.updated_at }}"`).
    pub key: Option<S<String>>,
    /// How the next cursor is found: `{ next: /pointer/in/response }` or
    /// `{ max: /pointer/in/item }`, plus an optional `start` value.
    pub cursor: Option<S<RawPollCursor>>,
}

/// `poll.cursor`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPollCursor {
    /// JSON pointer into the response giving the next cursor (a page token, a `since`).
    pub next: Option<S<String>>,
    /// JSON pointer into each item; the largest value seen becomes the cursor.
    pub max: Option<S<Scalar>>,
    /// The cursor of the first poll (default: empty).
    pub start: Option<S<Scalar>>,
}

/// `trigger: { schedule: ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// A cron expression: 5 fields (`minute hour day-of-month month day-of-week`), or 6
    /// with a leading `second`; or `@daily`, `@hourly`, ...
    pub cron: Option<S<String>>,
    /// The time zone the fields are read in: an IANA name or `+HH:MM` (default UTC).
    pub timezone: Option<S<String>>,
}

/// `trigger: { poll: ... }`: every `every`, fetch `path` from an HTTP connector, take the
/// array at `items`, store each item as an event whose dedupe key is `key`, then move the
/// cursor on. The cursor is stored only after the page's events are.
#[derive(Debug, Clone)]
pub struct PollTrigger {
    /// The HTTP connector polled (in the charter's `uses`).
    pub connector: String,
    /// Path and query under the connector's `base_url`; rendered with `cursor`.
    pub path: Template,
    /// Time between polls (the next page of a multi-page answer is fetched at once).
    pub every: Duration,
    /// JSON pointer to the items array in the response (`""` when the response is one).
    pub items: String,
    /// Each item's dedupe key.
    pub key: PollKey,
    /// How the next cursor is computed.
    pub cursor: PollCursor,
    /// The cursor of the very first poll.
    pub start: String,
}

/// How a polled item's dedupe key is computed.
#[derive(Debug, Clone)]
pub enum PollKey {
    /// A JSON pointer into the item (`/id`); the value as text.
    Pointer(String),
    /// A template over `item` (and `cursor`).
    Template(Template),
}

/// Where a poll's next cursor comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollCursor {
    /// A JSON pointer into the response (a page token or `since` the API returns). A
    /// missing or null value keeps the cursor.
    Next(String),
    /// A JSON pointer into each item: the largest value seen, never below the current
    /// cursor. Numbers (and strings of decimal digits) compare as numbers, RFC 3339 times as
    /// instants, other text as text.
    Max(String),
}

/// `trigger: { schedule: { cron: ..., timezone: ... } }`: one event per fire time, the
/// cron fields read as wall-clock times in `zone` (UTC unless `timezone:` says otherwise).
#[derive(Debug, Clone)]
pub struct ScheduleTrigger {
    pub cron: crate::cron::Cron,
    pub zone: crate::cron::Zone,
}

impl ScheduleTrigger {
    /// The first fire time strictly after `t` (Unix seconds).
    pub fn next_after(&self, t: i64) -> Option<i64> {
        self.cron.next_after_in(&self.zone, t)
    }

    /// The last fire time at or before `t` (Unix seconds).
    pub fn latest_at_or_before(&self, t: i64) -> Option<i64> {
        self.cron.latest_at_or_before_in(&self.zone, t)
    }
}

/// Time between polls when `every` is not given.
pub const DEFAULT_POLL_EVERY: Duration = Duration::from_secs(60);

/// Shortest allowed `every`.
const MIN_POLL_EVERY: Duration = Duration::from_millis(100);

/// Whether `p` is a JSON pointer (RFC 6901): empty, or `/`-separated tokens.
fn pointer_ok(p: &str) -> bool {
    p.is_empty() || (p.starts_with('/') && !p.contains(char::is_whitespace))
}

impl CharterChecker<'_> {
    /// Check `trigger.poll`; `None` when anything is invalid (each problem is reported).
    pub(crate) fn poll(&mut self, raw: S<RawPoll>, known: &Known) -> Option<PollTrigger> {
        let at = raw.referenced;
        let p = raw.value;

        let connector = self.poll_connector(&p.connector, at, known);

        let path = self.poll_path(&p, at);

        let every = match &p.every {
            Some(v) => match self.duration(v, "every") {
                Some(d) if d < MIN_POLL_EVERY => {
                    self.err(
                        v.referenced,
                        format!(
                            "`every` is {}ms; expected at least 100ms between polls",
                            d.as_millis()
                        ),
                    );
                    None
                }
                d => d,
            },
            None => Some(DEFAULT_POLL_EVERY),
        };

        let items = self.poll_items(&p, at);

        let key = self.poll_key(&p, at);

        let (cursor, start) = self.poll_cursor(&p, at);

        Some(PollTrigger {
            connector: connector?,
            path: path?,
            every: every?,
            items: items?,
            key: key?,
            cursor: cursor?,
            start: start?,
        })
    }

    /// `path:`: a template under the connector's `base_url`, not a URL.
    fn poll_path(&mut self, p: &RawPoll, at: Location) -> Option<Template> {
        match self.required_text(
            &p.path,
            at,
            "path",
            "the path (and query) to fetch under the connector's `base_url`, such as \
             `/tickets?since={{ cursor }}`",
        ) {
            Some(text) => {
                let place = p.path.as_ref().map_or(at, |v| v.referenced);
                if text.contains("://") || text.starts_with("//") {
                    self.err(
                        place,
                        format!(
                            "poll path `{text}` is a URL; expected a path under the connector's \
                             `base_url`, such as `/tickets?since={{{{ cursor }}}}`"
                        ),
                    );
                    None
                } else {
                    self.scoped_template(&S::new(text, place, place), "path", Scope::PollPath)
                }
            }
            None => None,
        }
    }

    /// `items:`: the JSON pointer to the array of items in the response.
    fn poll_items(&mut self, p: &RawPoll, at: Location) -> Option<String> {
        match &p.items {
            Some(v) => {
                let ptr = v.value.trim();
                let ptr = if ptr == "/" { "" } else { ptr };
                if pointer_ok(ptr) {
                    Some(ptr.to_string())
                } else {
                    self.err(
                        v.referenced,
                        format!(
                            "`items` `{ptr}` is not a JSON pointer; expected the place of the \
                             items array in the response, such as `/results` (or `/` when the \
                             response is the array)"
                        ),
                    );
                    None
                }
            }
            None => {
                self.err(
                    at,
                    "missing `items`: expected the JSON pointer to the array of items in the \
                     response, such as `/results` (or `/` when the response is the array)",
                );
                None
            }
        }
    }

    /// `key:`: each item's dedupe key, a JSON pointer or a template.
    fn poll_key(&mut self, p: &RawPoll, at: Location) -> Option<PollKey> {
        match self.required_text(
            &p.key,
            at,
            "key",
            "each item's dedupe key: a JSON pointer such as `/id`, or a template such as \
             `\"{{ item.id }}:{{ item.updated_at }}\"`",
        ) {
            Some(text) => {
                let place = p.key.as_ref().map_or(at, |v| v.referenced);
                if text.starts_with('/') && !text.contains("{{") {
                    if pointer_ok(&text) {
                        Some(PollKey::Pointer(text))
                    } else {
                        self.err(
                            place,
                            format!(
                                "`key` `{text}` is not a JSON pointer; expected one such as `/id`"
                            ),
                        );
                        None
                    }
                } else {
                    self.scoped_template(&S::new(text, place, place), "key", Scope::PollKey)
                        .map(PollKey::Template)
                }
            }
            None => None,
        }
    }

    /// `cursor:`: how the next poll continues (`next` or `max`), and its `start` value.
    fn poll_cursor(&mut self, p: &RawPoll, at: Location) -> (Option<PollCursor>, Option<String>) {
        match &p.cursor {
            None => {
                self.err(
                    at,
                    "missing `cursor`: expected how the next poll continues, either \
                     `{ next: /next_cursor }` (a value in the response) or \
                     `{ max: /updated_at }` (the largest value of an item field)",
                );
                (None, None)
            }
            Some(c) => {
                let cat = c.referenced;
                let start = c
                    .value
                    .start
                    .as_ref()
                    .map(|s| s.value.0.clone())
                    .unwrap_or_default();
                let pointer = |v: &S<String>| (v.value.trim().to_string(), v.referenced);
                let chosen = match (&c.value.next, &c.value.max) {
                    (Some(n), None) => Some((true, pointer(n))),
                    (None, Some(m)) => Some((false, (m.value.0.trim().to_string(), m.referenced))),
                    (Some(_), Some(_)) => {
                        self.err(
                            cat,
                            "`cursor` has both `next` and `max`; expected one of them",
                        );
                        None
                    }
                    (None, None) => {
                        self.err(
                            cat,
                            "`cursor` needs `next` (a JSON pointer into the response, such as \
                             `/next_cursor`) or `max` (a JSON pointer into each item, such as \
                             `/updated_at`)",
                        );
                        None
                    }
                };
                let cursor = match chosen {
                    Some((next, (ptr, place))) => {
                        let key = if next { "next" } else { "max" };
                        if ptr.is_empty() || !pointer_ok(&ptr) {
                            self.err(
                                place,
                                format!(
                                    "cursor `{key}` `{ptr}` is not a JSON pointer; expected one \
                                     such as `/next_cursor`"
                                ),
                            );
                            None
                        } else if next {
                            Some(PollCursor::Next(ptr))
                        } else {
                            Some(PollCursor::Max(ptr))
                        }
                    }
                    None => None,
                };
                (cursor, Some(start))
            }
        }
    }

    /// The polled connector: defined, in `uses`, and an HTTP connector.
    fn poll_connector(
        &mut self,
        raw: &Option<S<String>>,
        at: Location,
        known: &Known,
    ) -> Option<String> {
        let name = self.required_text(
            raw,
            at,
            "connector",
            "the HTTP connector to poll, one of this charter's `uses`",
        )?;
        let place = raw.as_ref().map_or(at, |v| v.referenced);
        if let Some(connectors) = self.connectors
            && !connectors.contains(&name)
        {
            self.err(
                place,
                format!(
                    "poll connector `{name}` is not defined in charter.yaml; expected one of {}",
                    list(connectors.iter())
                ),
            );
            return None;
        }
        if !known.uses.contains(&name) {
            self.err(
                place,
                format!(
                    "poll connector `{name}` is not in this charter's `uses` list; expected one \
                     of {} (or add it to `uses`)",
                    list(&known.uses)
                ),
            );
            return None;
        }
        if let Some(t) = self.connector_types.and_then(|m| m.get(&name))
            && t != "http"
        {
            self.err(
                place,
                format!(
                    "connector `{name}` is a `{t}` connector; `poll` needs an `http` connector"
                ),
            );
            return None;
        }
        Some(name)
    }

    /// Check `trigger.schedule`.
    pub(crate) fn schedule(&mut self, raw: S<RawSchedule>) -> Option<ScheduleTrigger> {
        let at = raw.referenced;
        let text = self.required_text(
            &raw.value.cron,
            at,
            "cron",
            "a cron expression, such as `\"0 9 * * mon-fri\"` (minute hour \
             day-of-month month day-of-week), in UTC unless `timezone:` is given",
        )?;
        let place = raw.value.cron.as_ref().map_or(at, |v| v.referenced);
        let cron = Cron::parse(&text).map_err(|e| self.err(place, e.to_string()));
        let zone = match &raw.value.timezone {
            None => Ok(Zone::utc()),
            Some(z) => Zone::parse(&z.value).map_err(|e| self.err(z.referenced, e.to_string())),
        };
        Some(ScheduleTrigger {
            cron: cron.ok()?,
            zone: zone.ok()?,
        })
    }
}
