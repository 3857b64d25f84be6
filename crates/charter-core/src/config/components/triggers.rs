//! `trigger:` of a charter: event types, input contract, webhook, NATS and dedupe (polls and
//! schedules are in [`super::sources`]).

use serde::Deserialize;

use crate::config::components::charter::{CharterChecker, Known};
use crate::config::components::names::Scope;
use crate::config::diag::{Check, strip_position};
use crate::config::raw::{Location, RawPoll, RawSchedule, RawVerify, S, WordOr};
use crate::config::{Diagnostic, PollTrigger, ScheduleTrigger, SecretRef};
use crate::template::Template;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    pub webhook: Option<S<RawWebhook>>,
    pub nats: Option<S<RawNats>>,
    /// Poll an HTTP API through a connector (`poll: { connector, path, every, ... }`).
    pub poll: Option<S<RawPoll>>,
    /// Create an event at set times (`schedule: { cron: "0 9 * * *" }`).
    pub schedule: Option<S<RawSchedule>>,
    /// A template string, or `{ header: Name }`.
    pub dedupe: Option<S<WordOr<RawDedupe>>>,
    pub input_schema: Option<S<String>>,
    pub text: Option<S<String>>,
    /// Event types the webhook takes (`events: [issues, "invoice.*"]`).
    pub events: Option<S<Vec<S<String>>>>,
}

/// `trigger: { nats: ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNats {
    pub url: Option<S<String>>,
    pub stream: Option<S<String>>,
    pub subject: Option<S<String>>,
    pub durable: Option<S<String>>,
    pub create_stream: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDedupe {
    pub header: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub path: Option<S<String>>,
    /// `none`, or a mapping with a `preset`.
    pub verify: Option<S<WordOr<RawVerify>>>,
}

#[derive(Debug, Clone)]
pub struct Trigger {
    pub webhook: Option<Webhook>,
    /// A NATS JetStream subject consumed through a durable consumer.
    pub nats: Option<NatsTrigger>,
    /// An HTTP API polled through a connector, one event per item.
    pub poll: Option<PollTrigger>,
    /// An event at each fire time of a cron expression.
    pub schedule: Option<ScheduleTrigger>,
    pub dedupe: Option<Dedupe>,
    /// The data contract: JSON schema (already parsed) and the file it came from.
    pub input_schema: Option<InputSchema>,
    /// The text the decision layer reads.
    pub text: Option<Template>,
    /// The event types a webhook takes (`trigger.events`); `None`: every type. A delivery
    /// of another type is answered 200 and not stored.
    pub events: Option<EventTypes>,
}

/// `trigger.events`: event types matched against the provider's event type (GitHub's
/// `X-GitHub-Event`, Shopify's `X-Shopify-Topic`, else the payload's `type`), each an exact
/// name or a prefix ending in `*` (`invoice.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypes(pub Vec<String>);

impl EventTypes {
    /// Whether a delivery of `event_type` is taken (one without a type never is).
    pub fn takes(&self, event_type: Option<&str>) -> bool {
        let Some(t) = event_type else {
            return false;
        };
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => t.starts_with(prefix),
            None => p == t,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputSchema {
    pub file: String,
    pub schema: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    /// Absolute URL path, starts with `/` (for example `/hooks/zendesk/tickets`).
    pub path: String,
    pub verify: crate::verify::VerifySpec,
    /// Secrets accepted (several during rotation); resolved at start-up.
    pub secrets: Vec<SecretRef>,
}

/// `trigger: { nats: ... }`: events come from a JetStream stream, read by a durable pull
/// consumer. A message is acknowledged only once its event is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTrigger {
    /// Server URL, `nats://host:port`.
    pub url: String,
    /// The JetStream stream to read.
    pub stream: String,
    /// Subject (wildcards allowed) the consumer filters on; also the stream's subject when
    /// Charter creates the stream.
    pub subject: String,
    /// Durable consumer name; its position survives restarts (default `charter-<charter>`).
    pub durable: String,
    /// Create the stream (file storage, `subject`) when it does not exist.
    pub create_stream: bool,
}

/// How a delivery is recognised as a repeat.
#[derive(Debug, Clone)]
pub enum Dedupe {
    /// A provider header such as `webhook-id` or `X-GitHub-Delivery` (lower-cased).
    Header(String),
    /// A template over `payload`, `headers` and `event`.
    Template(Template),
}

/// Drops a trailing ` at line N column M` (the diagnostic carries the position).
/// `nats://host[:port]`, possibly several comma-separated.
pub(crate) fn nats_url_ok(url: &str) -> bool {
    url.split(',').all(|u| {
        u.strip_prefix("nats://")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
    })
}

/// Dot-separated non-empty tokens; `*` only as a whole token, `>` only as the last one.
pub(crate) fn nats_subject_ok(subject: &str) -> bool {
    if subject.contains(char::is_whitespace) {
        return false;
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    tokens.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && (!t.contains('*') || *t == "*")
            && (!t.contains('>') || (*t == ">" && i + 1 == tokens.len()))
    })
}

impl CharterChecker<'_> {
    pub(crate) fn trigger(
        &mut self,
        raw: S<RawTrigger>,
        charter: Option<&str>,
        known: &Known,
    ) -> Option<Trigger> {
        let t: RawTrigger = raw.value;
        let poll = match t.poll {
            Some(p) => self.poll(p, known).map(Some),
            None => Some(None),
        };
        let schedule = match t.schedule {
            Some(s) => self.schedule(s).map(Some),
            None => Some(None),
        };
        // Polled items and fire times carry their own dedupe keys.
        if let Some(d) = &t.dedupe
            && (poll.as_ref().is_some_and(Option::is_some)
                || schedule.as_ref().is_some_and(Option::is_some))
        {
            self.err(
                d.referenced,
                "`dedupe` cannot be used with `poll` or `schedule`: a polled item's dedupe key \
                 is `poll.key`, and a scheduled event's is its fire time",
            );
        }
        let webhook = match t.webhook {
            Some(w) => self.webhook(w).map(Some),
            None => Some(None),
        };
        let nats = match t.nats {
            Some(n) => self.nats(n, charter).map(Some),
            None => Some(None),
        };
        let dedupe = match t.dedupe {
            None => Some(None),
            Some(d) => match d.value {
                WordOr::Word(template) => {
                    let at = d.referenced;
                    self.scoped_template(&S::new(template, at, at), "dedupe", Scope::Ingest)
                        .map(|t| Some(Dedupe::Template(t)))
                }
                WordOr::Map(m) => match m.header {
                    Some(h) if !h.value.trim().is_empty() => {
                        Some(Some(Dedupe::Header(h.value.trim().to_ascii_lowercase())))
                    }
                    _ => {
                        self.err(
                            d.referenced,
                            "`dedupe` needs a `header` (such as `{ header: X-GitHub-Delivery }`) \
                             or a template string (such as `\"{{ payload.id }}\"`)",
                        );
                        None
                    }
                },
            },
        };
        let input_schema = match &t.input_schema {
            Some(path) => self.input_schema(path).map(Some),
            None => Some(None),
        };
        let text = match &t.text {
            Some(s) => self
                .scoped_template(s, "text", Scope::BeforeDecision)
                .map(Some),
            None => Some(None),
        };
        let events = match &t.events {
            None => Some(None),
            Some(list) => {
                let mut ok = true;
                let mut types = Vec::new();
                if webhook.as_ref().is_some_and(Option::is_none) {
                    self.err(
                        list.referenced,
                        "`events` filters webhook deliveries by their event type; this trigger has no `webhook`",
                    );
                    ok = false;
                }
                if list.value.is_empty() {
                    self.err(
                        list.referenced,
                        "`events` is empty: it would take nothing; list event types such as `[issues, pull_request]` or leave it out",
                    );
                    ok = false;
                }
                for e in &list.value {
                    let name = e.value.trim();
                    if name.is_empty()
                        || name.contains(char::is_whitespace)
                        || name[..name.len().saturating_sub(1)].contains('*')
                    {
                        self.err(
                            e.referenced,
                            format!("`events`: `{}` is not an event type; expected a name such as `issues` or a prefix ending in `*` such as `invoice.*`", e.value),
                        );
                        ok = false;
                    } else {
                        types.push(name.to_string());
                    }
                }
                ok.then_some(Some(EventTypes(types)))
            }
        };
        Some(Trigger {
            webhook: webhook?,
            nats: nats?,
            poll: poll?,
            schedule: schedule?,
            dedupe: dedupe?,
            input_schema: input_schema?,
            text: text?,
            events: events?,
        })
    }

    pub(crate) fn input_schema(&mut self, path: &S<String>) -> Option<InputSchema> {
        let file = path.value.trim().trim_start_matches("./").to_string();
        let Some(text) = self.src.files.get(&file) else {
            self.err(
                path.referenced,
                format!("input_schema file `{file}` does not exist; expected a JSON Schema file in the project"),
            );
            return None;
        };
        let schema: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.diags.push(Diagnostic {
                    file: file.clone(),
                    line: e.line().max(1),
                    column: e.column().max(1),
                    message: format!(
                        "invalid JSON in input schema: {}; expected a JSON Schema document",
                        strip_position(&e.to_string())
                    ),
                });
                return None;
            }
        };
        if let Err(e) = jsonschema::validator_for(&schema) {
            let at = e.instance_path().to_string();
            let place = if at.is_empty() {
                String::new()
            } else {
                format!(" at `{at}`")
            };
            self.err(
                path.referenced,
                format!("`{file}` is not a valid JSON Schema{place}: {e}; expected a schema valid under its `$schema` draft (2020-12 by default)"),
            );
            return None;
        }
        Some(InputSchema { file, schema })
    }

    pub(crate) fn nats(&mut self, raw: S<RawNats>, charter: Option<&str>) -> Option<NatsTrigger> {
        let at = raw.referenced;
        let n: RawNats = raw.value;
        let url = match self.required_text(
            &n.url,
            at,
            "url",
            "the NATS server's URL, such as `nats://127.0.0.1:4222`",
        ) {
            Some(u) if nats_url_ok(&u) => Some(u),
            Some(u) => {
                let place = n.url.as_ref().map_or(at, |v| v.referenced);
                self.err(
                    place,
                    format!(
                        "NATS url `{u}` is not valid; expected `nats://host:port` (several servers: comma-separated `nats://` URLs)"
                    ),
                );
                None
            }
            None => None,
        };
        let stream = self
            .required_text(
                &n.stream,
                at,
                "stream",
                "the JetStream stream's name, such as `ORDERS`",
            )
            .and_then(|v| self.nats_name(v, &n.stream, at, "stream"));
        let subject = match self.required_text(
            &n.subject,
            at,
            "subject",
            "the subject to consume, such as `orders.>`",
        ) {
            Some(v) if nats_subject_ok(&v) => Some(v),
            Some(v) => {
                let place = n.subject.as_ref().map_or(at, |s| s.referenced);
                self.err(
                    place,
                    format!(
                        "NATS subject `{v}` is not valid; expected dot-separated tokens without spaces, where `*` is a whole token and `>` only the last one (such as `orders.>`)"
                    ),
                );
                None
            }
            None => None,
        };
        let durable = match &n.durable {
            Some(_) => self
                .required_text(
                    &n.durable,
                    at,
                    "durable",
                    "the durable consumer's name, such as `charter-orders`",
                )
                .and_then(|v| self.nats_name(v, &n.durable, at, "durable")),
            None => charter.map(|c| format!("charter-{c}")),
        };
        let create_stream = n.create_stream.as_ref().is_some_and(|b| b.value);
        Some(NatsTrigger {
            url: url?,
            stream: stream?,
            subject: subject?,
            durable: durable?,
            create_stream,
        })
    }

    /// A stream or consumer name: no spaces, dots, wildcards or path separators.
    pub(crate) fn nats_name(
        &mut self,
        value: String,
        raw: &Option<S<String>>,
        parent: Location,
        key: &str,
    ) -> Option<String> {
        let bad = |c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\');
        if value.contains(bad) {
            let place = raw.as_ref().map_or(parent, |v| v.referenced);
            self.err(
                place,
                format!(
                    "NATS {key} name `{value}` is not valid; expected a name without spaces, `.`, `*`, `>`, `/` or `\\` (such as `ORDERS` or `charter-orders`)"
                ),
            );
            return None;
        }
        Some(value)
    }

    pub(crate) fn webhook(&mut self, raw: S<RawWebhook>) -> Option<Webhook> {
        let at = raw.referenced;
        let w: RawWebhook = raw.value;
        let path = match &w.path {
            Some(p) if p.value.starts_with('/') && !p.value.contains(char::is_whitespace) => {
                Some(p.value.clone())
            }
            Some(p) => {
                self.err(
                    p.referenced,
                    format!(
                        "webhook path `{}` must start with `/` and contain no spaces; expected a path such as `/hooks/helpdesk/tickets`",
                        p.value
                    ),
                );
                None
            }
            None => {
                self.err(at, "missing `path`: expected the URL path the webhook is received on, such as `/hooks/helpdesk/tickets`");
                None
            }
        };
        let verify = match w.verify {
            Some(v) => self.verify(v, path.as_deref()),
            None => {
                self.err(
                    at,
                    "missing `verify`: expected how deliveries are authenticated, such as \
                     `verify: { preset: github, secret: env:GITHUB_WEBHOOK_SECRET }`, or `verify: none` \
                     to accept unsigned deliveries",
                );
                None
            }
        };
        let (verify, secrets) = verify?;
        Some(Webhook {
            path: path?,
            verify,
            secrets,
        })
    }
}
