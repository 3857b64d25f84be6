//! The YAML formats as written: `charter.yaml` and `charters/*.yaml`.
//!
//! Every struct denies unknown fields, and nearly every field is optional here even when the
//! format requires it: serde stops at its first error, so required fields are checked by
//! [`super::validate`], which reports all missing ones at once. For the same reason unknown
//! keys are found before deserializing, by [`strip_unknown_keys`] walking the YAML against
//! [`Shape`]s that mirror these structs. Values that a message may
//! point at are wrapped in [`Spanned`] to keep their line and column.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
pub use serde_saphyr::{Location, Spanned};

/// A value with the place it was written.
pub type S<T> = Spanned<T>;

/// A mapping kept in file order, with the location of every key.
#[derive(Debug, Clone)]
pub struct Entries<V>(pub Vec<(S<String>, V)>);

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<S<String>>()? {
                    let value = map.next_value::<V>()?;
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Entries(Vec::new()))
            }
        }

        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

/// Any scalar (string, number, boolean) kept as the text it denotes: sizes (`1048576` or
/// `1MiB`), durations, header values and expressions (`when: true`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a single value (text, number or true/false)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A value written either as one word (`approval: auto`, `verify: none`, a dedupe template)
/// or as a mapping.
#[derive(Debug, Clone)]
pub enum WordOr<M> {
    Word(String),
    Map(M),
}

impl<'de, M: Deserialize<'de>> Deserialize<'de> for WordOr<M> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WordOrVisitor<M>(PhantomData<M>);

        impl<'de, M: Deserialize<'de>> Visitor<'de> for WordOrVisitor<M> {
            type Value = WordOr<M>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a word or a mapping")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WordOr::Word(v.to_string()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(WordOr::Word(v.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                M::deserialize(de::value::MapAccessDeserializer::new(map)).map(WordOr::Map)
            }
        }

        deserializer.deserialize_any(WordOrVisitor(PhantomData))
    }
}

/// One text or a list of texts (`notify: slack:#ops` or `notify: [slack:#ops, mail:a@b.example]`).
/// A single text takes its location from the enclosing [`Spanned`].
#[derive(Debug, Clone)]
pub enum OneOrList {
    One(String),
    List(Vec<S<String>>),
}

impl<'de> Deserialize<'de> for OneOrList {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrListVisitor;

        impl<'de> Visitor<'de> for OneOrListVisitor {
            type Value = OneOrList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text or a list of texts")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrList, E> {
                Ok(OneOrList::One(v.to_string()))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrList, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<S<String>>()? {
                    out.push(v);
                }
                Ok(OneOrList::List(out))
            }
        }

        deserializer.deserialize_any(OneOrListVisitor)
    }
}

// ---------------------------------------------------------------------------------------
// charter.yaml

/// `charter.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    pub server: Option<S<RawServer>>,
    pub store: Option<S<String>>,
    pub worker: Option<S<RawWorker>>,
    pub connectors: Option<S<Entries<S<RawConnector>>>>,
    pub tokens: Option<S<Vec<S<RawToken>>>>,
    pub providers: Option<S<Entries<S<RawProvider>>>>,
    /// Approved knowledge sources by name (`knowledge:`).
    pub knowledge: Option<S<Entries<S<RawKnowledge>>>>,
}

/// A knowledge source (`knowledge:` in charter.yaml): a folder in the project, or a list
/// read through an `http` connector (a `preset` or a `list:` description).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKnowledge {
    pub owner: Option<S<String>>,
    pub folder: Option<S<String>>,
    pub url: Option<S<String>>,
    pub connector: Option<S<String>>,
    pub preset: Option<S<String>>,
    pub list: Option<S<RawKnowledgeList>>,
    pub refresh: Option<S<Scalar>>,
    pub max_age: Option<S<Scalar>>,
    pub chunk_words: Option<S<i64>>,
    pub on_gap: Option<S<String>>,
}

/// `list:` of a knowledge source: a paginated JSON list of documents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKnowledgeList {
    pub path: Option<S<String>>,
    pub items: Option<S<String>>,
    pub next: Option<S<String>>,
    pub id: Option<S<String>>,
    pub title: Option<S<String>>,
    pub body: Option<S<String>>,
    pub url: Option<S<String>>,
    pub updated_at: Option<S<String>>,
    pub format: Option<S<String>>,
    pub max_pages: Option<S<i64>>,
}

/// A model provider (`providers:` in charter.yaml).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub base_url: Option<S<String>>,
    pub api_key: Option<S<String>>,
    pub model: Option<S<String>>,
    pub mode: Option<S<String>>,
    pub timeout: Option<S<Scalar>>,
    pub max_retries: Option<S<i64>>,
    pub max_tokens: Option<S<i64>>,
    pub price: Option<S<RawPrice>>,
    pub allow_private: Option<S<bool>>,
    pub api_version: Option<S<String>>,
    pub circuit_breaker: Option<S<RawBreaker>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input_per_mtok: Option<S<f64>>,
    pub output_per_mtok: Option<S<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<S<Scalar>>,
    pub body_limit: Option<S<Scalar>>,
    pub public_url: Option<S<String>>,
    pub timezone: Option<S<String>>,
    pub allowed_hosts: Option<S<Vec<S<String>>>>,
    pub trusted_proxies: Option<S<Vec<S<String>>>>,
    pub insecure_open_admin: Option<S<bool>>,
    pub header_timeout: Option<S<Scalar>>,
    pub body_timeout: Option<S<Scalar>>,
    pub max_connections: Option<S<i64>>,
    pub webhook_rate: Option<S<Scalar>>,
    pub webhook_client_rate: Option<S<Scalar>>,
    pub rejected_keep: Option<S<i64>>,
    pub backlog: Option<S<RawBacklog>>,
}

/// `server.backlog:`: how much unprocessed work the store may hold before ingest refuses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBacklog {
    pub max_events: Option<S<i64>>,
    pub max_per_charter: Option<S<i64>>,
    pub max_age: Option<S<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    pub lease: Option<S<Scalar>>,
    pub poll_interval: Option<S<Scalar>>,
    pub concurrency: Option<S<i64>>,
    pub shutdown_grace: Option<S<Scalar>>,
    pub alert_interval: Option<S<Scalar>>,
    pub retention: Option<S<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnector {
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub base_url: Option<S<String>>,
    pub headers: Option<Entries<S<Scalar>>>,
    pub auth: Option<S<RawAuth>>,
    pub timeout: Option<S<Scalar>>,
    pub allow_private: Option<S<bool>>,
    // http extras
    pub preset: Option<S<String>>,
    /// `10/s`, `600/m` or a number per second.
    pub rate_limit: Option<S<Scalar>>,
    pub concurrency: Option<S<i64>>,
    pub circuit_breaker: Option<S<RawBreaker>>,
    pub response_schema: Option<S<String>>,
    // slack
    pub webhook_url: Option<S<String>>,
    pub token: Option<S<String>>,
    /// Slack app signing secret (`env:NAME`): verifies interactive callbacks (buttons).
    pub signing_secret: Option<S<String>>,
    /// Slack user id -> the token name (in `tokens:`) whose role and scopes the user has
    /// when deciding from Slack.
    pub users: Option<S<Entries<S<String>>>>,
    // smtp
    pub host: Option<S<String>>,
    pub port: Option<S<i64>>,
    pub tls: Option<S<String>>,
    pub username: Option<S<String>>,
    pub password: Option<S<String>>,
    pub from: Option<S<String>>,
    /// Recipient domains an `smtp` connector may mail (a domain also admits its
    /// subdomains); none means any.
    pub allowed_domains: Option<S<Vec<S<String>>>>,
    // sql
    pub url: Option<S<String>>,
}

/// `circuit_breaker:` of an HTTP connector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failures: Option<S<i64>>,
    pub cool_down: Option<S<Scalar>>,
}

/// `auth:` of an HTTP connector; exactly one key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub bearer: Option<S<String>>,
    pub basic: Option<S<RawBasicAuth>>,
    pub header: Option<S<RawHeaderAuth>>,
    pub oauth2: Option<S<RawOAuth2>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    pub token_url: Option<S<String>>,
    pub client_id: Option<S<String>>,
    pub client_secret: Option<S<String>>,
    pub scope: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    pub username: Option<S<String>>,
    pub password: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderAuth {
    pub name: Option<S<String>>,
    pub value: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub name: Option<S<String>>,
    pub role: Option<S<String>>,
    pub secret: Option<S<String>>,
    pub charters: Option<Vec<S<String>>>,
}

// ---------------------------------------------------------------------------------------
// charters/<name>.yaml

/// `measure:` — group name to a list of measurement names.
pub type MeasureGroups = Entries<Option<S<Vec<S<String>>>>>;

/// One charter file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCharter {
    pub name: Option<S<String>>,
    pub description: Option<S<String>>,
    pub owner: Option<S<String>>,
    pub maintainer: Option<S<String>>,
    pub system_of_record: Option<S<String>>,
    pub mode: Option<S<String>>,
    pub uses: Option<S<Vec<S<String>>>>,
    pub concurrency: Option<S<i64>>,
    pub trigger: Option<S<RawTrigger>>,
    pub decide: Option<S<RawDecide>>,
    pub routes: Option<S<Vec<S<RawRoute>>>>,
    pub actions: Option<S<Entries<S<RawAction>>>>,
    pub escalation: Option<S<RawEscalation>>,
    pub measure: Option<S<MeasureGroups>>,
    pub alerts: Option<S<Vec<S<RawAlert>>>>,
    /// Records fetched from connectors before deciding, by name.
    pub context: Option<S<Entries<S<RawContextFetch>>>>,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub preset: Option<S<String>>,
    pub secret: Option<S<String>>,
    pub secrets: Option<S<Vec<S<String>>>>,
    pub tolerance: Option<S<Scalar>>,
    // Generic HMAC only.
    pub header: Option<S<String>>,
    pub algorithm: Option<S<String>>,
    pub encoding: Option<S<String>>,
    pub prefix: Option<S<String>>,
    pub timestamp_header: Option<S<String>>,
    pub signed: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecide {
    pub labels: Option<S<Vec<S<String>>>>,
    pub stages: Option<S<Vec<S<RawStage>>>>,
    pub otherwise: Option<S<String>>,
    pub extract: Option<S<Entries<S<RawField>>>>,
}

/// One stage: exactly one of the keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub rules: Option<S<Vec<S<RawRule>>>>,
    pub embedded: Option<S<RawEmbedded>>,
    pub llm: Option<S<RawLlm>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub when: Option<S<Scalar>>,
    pub label: Option<S<String>>,
    pub fields: Option<Entries<S<Scalar>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmbedded {
    pub examples: Option<S<String>>,
    pub accept_above: Option<S<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlm {
    pub provider: Option<S<String>>,
    pub prompt: Option<S<String>>,
    pub accept_above: Option<S<f64>>,
    pub fallback: Option<S<Vec<S<String>>>>,
    pub rate_limit: Option<S<i64>>,
    pub budget: Option<S<RawBudget>>,
    pub redact: Option<S<Vec<S<String>>>>,
    pub cache_ttl: Option<S<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub tokens_per_day: Option<S<i64>>,
    pub cost_per_day: Option<S<f64>>,
    pub on_exhausted: Option<S<String>>,
    pub max_wait: Option<S<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub pattern: Option<S<String>>,
    #[serde(rename = "enum")]
    pub enumeration: Option<S<Vec<S<Scalar>>>>,
    pub required: Option<S<bool>>,
    /// Extractor: a regular expression whose first capture group (or whole match) fills
    /// the field.
    pub regex: Option<S<String>>,
    /// Where `regex` looks: a dotted path such as `payload.ticket.body` (default: the
    /// event's decision text).
    #[serde(rename = "in")]
    pub input: Option<S<String>>,
    /// Extractor: a template over the event (`{{ payload.customer.id }}`); empty = not found.
    pub template: Option<S<String>>,
}

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

/// An action: `request` (HTTP) or `log`, plus its gate and retry policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    pub connector: Option<S<String>>,
    pub request: Option<S<RawRequest>>,
    pub log: Option<S<String>>,
    pub message: Option<S<RawMessage>>,
    pub email: Option<S<RawEmail>>,
    pub sql: Option<S<RawSql>>,
    /// `auto`, or `{ reviewers, expires, on_expiry }`.
    pub approval: Option<S<WordOr<RawApproval>>>,
    pub retry: Option<S<RawRetry>>,
    pub measure: Option<S<String>>,
    /// A model-written text passed to the action's templates as `draft`.
    pub draft: Option<S<RawDraft>>,
    /// `true`: an MCP tool call of this action runs without any route's `when:` holding.
    pub mcp_skip_when: Option<S<bool>>,
}

/// `draft:` on an action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDraft {
    /// Prompt template file, relative to the project.
    pub prompt: Option<S<String>>,
    /// Provider name from charter.yaml (default `default`).
    pub provider: Option<S<String>>,
    /// Providers tried in order when `provider` fails.
    pub fallback: Option<S<Vec<S<String>>>>,
    /// Payload keys (or dotted paths) redacted before the prompt leaves.
    pub redact: Option<S<Vec<S<String>>>>,
    /// A `retrieve` context whose passages the draft must cite.
    pub cite: Option<S<String>>,
    /// With `cite`: every sentence must carry a citation.
    pub cite_every_sentence: Option<S<bool>>,
}

/// One entry of a charter's `context:`: a record fetched before deciding.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContextFetch {
    /// An `http` connector in `uses`.
    pub connector: Option<S<String>>,
    /// Path (template) under the connector's base URL, fetched with GET.
    pub get: Option<S<String>>,
    /// Request timeout (default 5s).
    pub timeout: Option<S<Scalar>>,
    /// `continue` (decide without it) or `retry` (retry the run later).
    pub on_error: Option<S<String>>,
    /// With `on_error: retry`, the wait before the event is tried again (default 30s).
    pub retry_after: Option<S<Scalar>>,
    /// Passages retrieved from knowledge sources instead of a fetched record.
    pub retrieve: Option<S<RawRetrieve>>,
}

/// `retrieve:` in a context entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetrieve {
    pub query: Option<S<String>>,
    pub sources: Option<S<Vec<S<String>>>>,
    pub top_k: Option<S<i64>>,
    pub min_score: Option<S<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    pub method: Option<S<String>>,
    pub path: Option<S<String>>,
    pub url: Option<S<String>>,
    pub headers: Option<Entries<S<Scalar>>>,
    pub json: Option<S<serde_json::Value>>,
    pub timeout: Option<S<Scalar>>,
}

/// `message:` (Slack).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessage {
    pub channel: Option<S<String>>,
    pub text: Option<S<String>>,
}

/// `email:` (SMTP).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    /// One template, or a list of templates each rendering to one address.
    pub to: Option<S<OneOrList>>,
    pub subject: Option<S<String>>,
    pub body: Option<S<String>>,
}

/// `sql:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSql {
    pub statement: Option<S<String>>,
    pub params: Option<S<Vec<Option<S<Scalar>>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApproval {
    pub reviewers: Option<S<Vec<S<String>>>>,
    pub expires: Option<S<Scalar>>,
    pub on_expiry: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<S<i64>>,
    pub backoff: Option<S<Scalar>>,
    pub max_backoff: Option<S<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalation {
    pub to: Option<S<String>>,
    /// Where new approvals and escalations are announced: `connector[:where]`, or a list.
    pub notify: Option<S<OneOrList>>,
}

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

// ---------------------------------------------------------------------------------------
// Known keys, checked before deserializing

/// The keys a mapping accepts, mirroring the structs above (a test keeps the two in step).
///
/// serde stops at the first unknown key, which would hide every other problem of the file.
/// [`strip_unknown_keys`] therefore walks the YAML against these shapes first, reports every
/// unknown key and blanks it out, so that the structs above see only keys they know.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Not checked here: scalars, free-form values (`json:`), mappings of header names.
    Any,
    /// A struct: its keys, each with the shape of its value. Only applies to mappings; a
    /// word in its place (`approval: auto`) is left to the deserializer.
    Keys(&'static [(&'static str, Shape)]),
    /// A mapping of names chosen by the author (connectors, actions) to values of one shape.
    Names(&'static Shape),
    /// A list of values of one shape.
    List(&'static Shape),
}

const A: Shape = Shape::Any;

/// `charter.yaml` ([`RawProject`]).
pub const PROJECT_SHAPE: Shape = Shape::Keys(&[
    ("server", SERVER_SHAPE),
    ("store", A),
    ("worker", WORKER_SHAPE),
    ("connectors", Shape::Names(&CONNECTOR_SHAPE)),
    ("tokens", Shape::List(&TOKEN_SHAPE)),
    ("providers", Shape::Names(&PROVIDER_SHAPE)),
    ("knowledge", Shape::Names(&KNOWLEDGE_SHAPE)),
]);

const KNOWLEDGE_SHAPE: Shape = Shape::Keys(&[
    ("owner", A),
    ("folder", A),
    ("url", A),
    ("connector", A),
    ("preset", A),
    ("list", KNOWLEDGE_LIST_SHAPE),
    ("refresh", A),
    ("max_age", A),
    ("chunk_words", A),
    ("on_gap", A),
]);

const KNOWLEDGE_LIST_SHAPE: Shape = Shape::Keys(&[
    ("path", A),
    ("items", A),
    ("next", A),
    ("id", A),
    ("title", A),
    ("body", A),
    ("url", A),
    ("updated_at", A),
    ("format", A),
    ("max_pages", A),
]);

const PROVIDER_SHAPE: Shape = Shape::Keys(&[
    ("type", A),
    ("base_url", A),
    ("api_key", A),
    ("model", A),
    ("mode", A),
    ("timeout", A),
    ("max_retries", A),
    ("max_tokens", A),
    ("price", PRICE_SHAPE),
    ("allow_private", A),
    ("api_version", A),
    ("circuit_breaker", BREAKER_SHAPE),
]);

const PRICE_SHAPE: Shape = Shape::Keys(&[("input_per_mtok", A), ("output_per_mtok", A)]);

const SERVER_SHAPE: Shape = Shape::Keys(&[
    ("listen", A),
    ("body_limit", A),
    ("public_url", A),
    ("timezone", A),
    ("allowed_hosts", A),
    ("trusted_proxies", A),
    ("insecure_open_admin", A),
    ("header_timeout", A),
    ("body_timeout", A),
    ("max_connections", A),
    ("webhook_rate", A),
    ("webhook_client_rate", A),
    ("rejected_keep", A),
    ("backlog", BACKLOG_SHAPE),
]);

const BACKLOG_SHAPE: Shape =
    Shape::Keys(&[("max_events", A), ("max_per_charter", A), ("max_age", A)]);

const WORKER_SHAPE: Shape = Shape::Keys(&[
    ("lease", A),
    ("poll_interval", A),
    ("concurrency", A),
    ("shutdown_grace", A),
    ("alert_interval", A),
    ("retention", A),
]);

const CONNECTOR_SHAPE: Shape = Shape::Keys(&[
    ("type", A),
    ("base_url", A),
    ("headers", A),
    ("auth", AUTH_SHAPE),
    ("timeout", A),
    ("allow_private", A),
    ("preset", A),
    ("rate_limit", A),
    ("concurrency", A),
    ("circuit_breaker", BREAKER_SHAPE),
    ("response_schema", A),
    ("webhook_url", A),
    ("token", A),
    ("signing_secret", A),
    ("users", A),
    ("host", A),
    ("port", A),
    ("tls", A),
    ("username", A),
    ("password", A),
    ("from", A),
    ("allowed_domains", A),
    ("url", A),
]);

const BREAKER_SHAPE: Shape = Shape::Keys(&[("failures", A), ("cool_down", A)]);

const AUTH_SHAPE: Shape = Shape::Keys(&[
    ("bearer", A),
    ("basic", BASIC_AUTH_SHAPE),
    ("header", HEADER_AUTH_SHAPE),
    ("oauth2", OAUTH2_SHAPE),
]);

const OAUTH2_SHAPE: Shape = Shape::Keys(&[
    ("token_url", A),
    ("client_id", A),
    ("client_secret", A),
    ("scope", A),
]);

const BASIC_AUTH_SHAPE: Shape = Shape::Keys(&[("username", A), ("password", A)]);

const HEADER_AUTH_SHAPE: Shape = Shape::Keys(&[("name", A), ("value", A)]);

const TOKEN_SHAPE: Shape = Shape::Keys(&[("name", A), ("role", A), ("secret", A), ("charters", A)]);

/// A charter file ([`RawCharter`]).
pub const CHARTER_SHAPE: Shape = Shape::Keys(&[
    ("name", A),
    ("description", A),
    ("owner", A),
    ("maintainer", A),
    ("system_of_record", A),
    ("mode", A),
    ("uses", A),
    ("concurrency", A),
    ("trigger", TRIGGER_SHAPE),
    ("decide", DECIDE_SHAPE),
    ("routes", Shape::List(&ROUTE_SHAPE)),
    ("actions", Shape::Names(&ACTION_SHAPE)),
    ("escalation", ESCALATION_SHAPE),
    ("measure", A),
    ("alerts", Shape::List(&ALERT_SHAPE)),
    ("context", Shape::Names(&CONTEXT_SHAPE)),
]);

const CONTEXT_SHAPE: Shape = Shape::Keys(&[
    ("connector", A),
    ("get", A),
    ("timeout", A),
    ("on_error", A),
    ("retry_after", A),
    ("retrieve", RETRIEVE_SHAPE),
]);

const RETRIEVE_SHAPE: Shape =
    Shape::Keys(&[("query", A), ("sources", A), ("top_k", A), ("min_score", A)]);

const DRAFT_SHAPE: Shape = Shape::Keys(&[
    ("prompt", A),
    ("provider", A),
    ("fallback", A),
    ("redact", A),
    ("cite", A),
    ("cite_every_sentence", A),
]);

const ALERT_SHAPE: Shape = Shape::Keys(&[
    ("error_rate", ALERT_SPEC_SHAPE),
    ("stuck", ALERT_SPEC_SHAPE),
    ("budget_exhausted", ALERT_SPEC_SHAPE),
    ("dead_letters", ALERT_SPEC_SHAPE),
]);

const ALERT_SPEC_SHAPE: Shape = Shape::Keys(&[
    ("above", A),
    ("window", A),
    ("older_than", A),
    ("when", A),
    ("min_runs", A),
    ("notify", A),
]);

const TRIGGER_SHAPE: Shape = Shape::Keys(&[
    ("webhook", WEBHOOK_SHAPE),
    ("nats", NATS_SHAPE),
    ("poll", POLL_SHAPE),
    ("schedule", SCHEDULE_SHAPE),
    ("dedupe", DEDUPE_SHAPE),
    ("input_schema", A),
    ("text", A),
    ("events", A),
]);

const NATS_SHAPE: Shape = Shape::Keys(&[
    ("url", A),
    ("stream", A),
    ("subject", A),
    ("durable", A),
    ("create_stream", A),
]);

const POLL_SHAPE: Shape = Shape::Keys(&[
    ("connector", A),
    ("path", A),
    ("every", A),
    ("items", A),
    ("key", A),
    ("cursor", POLL_CURSOR_SHAPE),
]);

const POLL_CURSOR_SHAPE: Shape = Shape::Keys(&[("next", A), ("max", A), ("start", A)]);

const SCHEDULE_SHAPE: Shape = Shape::Keys(&[("cron", A), ("timezone", A)]);

const DEDUPE_SHAPE: Shape = Shape::Keys(&[("header", A)]);

const WEBHOOK_SHAPE: Shape = Shape::Keys(&[("path", A), ("verify", VERIFY_SHAPE)]);

const VERIFY_SHAPE: Shape = Shape::Keys(&[
    ("preset", A),
    ("secret", A),
    ("secrets", A),
    ("tolerance", A),
    ("header", A),
    ("algorithm", A),
    ("encoding", A),
    ("prefix", A),
    ("timestamp_header", A),
    ("signed", A),
]);

const DECIDE_SHAPE: Shape = Shape::Keys(&[
    ("labels", A),
    ("stages", Shape::List(&STAGE_SHAPE)),
    ("otherwise", A),
    ("extract", Shape::Names(&FIELD_SHAPE)),
]);

const STAGE_SHAPE: Shape = Shape::Keys(&[
    ("rules", Shape::List(&RULE_SHAPE)),
    ("embedded", EMBEDDED_SHAPE),
    ("llm", LLM_SHAPE),
]);

const RULE_SHAPE: Shape = Shape::Keys(&[("when", A), ("label", A), ("fields", A)]);

const EMBEDDED_SHAPE: Shape = Shape::Keys(&[("examples", A), ("accept_above", A)]);

const LLM_SHAPE: Shape = Shape::Keys(&[
    ("provider", A),
    ("prompt", A),
    ("accept_above", A),
    ("fallback", A),
    ("rate_limit", A),
    ("budget", BUDGET_SHAPE),
    ("redact", A),
    ("cache_ttl", A),
]);

const BUDGET_SHAPE: Shape = Shape::Keys(&[
    ("tokens_per_day", A),
    ("cost_per_day", A),
    ("on_exhausted", A),
    ("max_wait", A),
]);

const FIELD_SHAPE: Shape = Shape::Keys(&[
    ("type", A),
    ("pattern", A),
    ("enum", A),
    ("required", A),
    ("regex", A),
    ("in", A),
    ("template", A),
]);

const ROUTE_SHAPE: Shape = Shape::Keys(&[
    ("name", A),
    ("when", A),
    ("do", A),
    ("mode", A),
    ("sample", A),
    (
        "promote_when",
        Shape::Keys(&[("agreement", A), ("reviewed", A), ("auto", A)]),
    ),
    (
        "demote_when",
        Shape::Keys(&[("corrections", A), ("reviewed", A)]),
    ),
]);

const ACTION_SHAPE: Shape = Shape::Keys(&[
    ("connector", A),
    ("request", REQUEST_SHAPE),
    ("log", A),
    ("message", MESSAGE_SHAPE),
    ("email", EMAIL_SHAPE),
    ("sql", SQL_SHAPE),
    ("approval", APPROVAL_SHAPE),
    ("retry", RETRY_SHAPE),
    ("measure", A),
    ("draft", DRAFT_SHAPE),
    ("mcp_skip_when", A),
]);

const REQUEST_SHAPE: Shape = Shape::Keys(&[
    ("method", A),
    ("path", A),
    ("url", A),
    ("headers", A),
    ("json", A),
    ("timeout", A),
]);

const MESSAGE_SHAPE: Shape = Shape::Keys(&[("channel", A), ("text", A)]);

const EMAIL_SHAPE: Shape = Shape::Keys(&[("to", A), ("subject", A), ("body", A)]);

const SQL_SHAPE: Shape = Shape::Keys(&[("statement", A), ("params", A)]);

const APPROVAL_SHAPE: Shape = Shape::Keys(&[("reviewers", A), ("expires", A), ("on_expiry", A)]);

const RETRY_SHAPE: Shape = Shape::Keys(&[("attempts", A), ("backoff", A), ("max_backoff", A)]);

const ESCALATION_SHAPE: Shape = Shape::Keys(&[("to", A), ("notify", A)]);

/// One line about each key of `charter.yaml`, by its path in [`PROJECT_SHAPE`] (`a.b` a key
/// inside a mapping, `a.*.b` inside each named entry, `a[].b` inside each list item). The
/// reference (`docs/src/reference.md`) and the JSON Schemas are generated from the shapes and
/// these lines ([`super::schema`]); a test checks that every key has a line and every line a key.
pub const PROJECT_KEY_DOCS: &[(&str, &str)] = &[
    (
        "server",
        "The HTTP server: address, limits, exposure settings.",
    ),
    (
        "server.listen",
        "Address to listen on (default 127.0.0.1:8080; --listen / CHARTER_LISTEN win).",
    ),
    (
        "server.body_limit",
        "Largest webhook or API body (default 1MiB); larger ones get 413.",
    ),
    (
        "server.public_url",
        "The server's public base URL: links in notifications, HubSpot's signed URL, allowed Host and Origin.",
    ),
    (
        "server.timezone",
        "The web UI's clock: an IANA name (Europe/Paris) or a fixed offset (+05:30); default UTC.",
    ),
    (
        "server.allowed_hosts",
        "Host names answered besides loopback names and IP addresses (`*.example.com`, `*`).",
    ),
    (
        "server.trusted_proxies",
        "Addresses or CIDR ranges whose X-Forwarded-For names the client for the limiters.",
    ),
    (
        "server.insecure_open_admin",
        "true: serve the admin API and UI without tokens on a non-loopback address (logged as a warning).",
    ),
    (
        "server.header_timeout",
        "Deadline for a request head, also the idle keep-alive timeout (default 10s).",
    ),
    (
        "server.body_timeout",
        "Deadline for a whole request body (default 30s; 408 after it).",
    ),
    (
        "server.max_connections",
        "Connections served at once (default 4096); more wait in the listen backlog.",
    ),
    (
        "server.webhook_rate",
        "Webhook rate limit per path, all senders (`500/s`; default unlimited).",
    ),
    (
        "server.webhook_client_rate",
        "Webhook rate limit per path and client address (`50/s`; default unlimited).",
    ),
    (
        "server.rejected_keep",
        "Rejected payloads kept per charter (default 10000).",
    ),
    (
        "server.backlog",
        "Bounds on unprocessed events; beyond one, webhooks get 503 with Retry-After and poll sources pause.",
    ),
    (
        "server.backlog.max_events",
        "Events waiting for a worker, all charters together (default 1000000; 0 = unbounded).",
    ),
    (
        "server.backlog.max_per_charter",
        "Events waiting for a worker in one charter (default: max_events).",
    ),
    (
        "server.backlog.max_age",
        "Age of a charter's oldest waiting event beyond which it refuses more (`1h`; default off).",
    ),
    (
        "store",
        "The store: a SQLite file relative to the project (default charter.db) or a postgres:// URL.",
    ),
    ("worker", "The worker's settings; every one optional."),
    (
        "worker.lease",
        "How long a claim holds, renewed while the run is in flight (default 30s).",
    ),
    (
        "worker.poll_interval",
        "How often an idle worker looks for work (default 500ms; also woken on ingest).",
    ),
    (
        "worker.concurrency",
        "Runs at once on this node, across charters (default: unset, chosen by the worker from what its runs wait on, 4 to 1024).",
    ),
    (
        "worker.shutdown_grace",
        "How long SIGTERM lets in-flight runs finish (default 10s).",
    ),
    (
        "worker.alert_interval",
        "How often the charters' alerts are evaluated (default 15s).",
    ),
    (
        "worker.retention",
        "Purge finished work older than this, hourly (at least 1h; default off).",
    ),
    (
        "connectors",
        "Named, credentialed ways to reach a system; a charter may use those in its `uses`.",
    ),
    (
        "connectors.*.type",
        "The connector kind: http, slack, smtp or sql.",
    ),
    (
        "connectors.*.base_url",
        "http: the base URL that action paths are appended to.",
    ),
    (
        "connectors.*.headers",
        "http: headers sent with every request (a mapping of names to values).",
    ),
    (
        "connectors.*.auth",
        "http: one of bearer, basic, header, oauth2.",
    ),
    (
        "connectors.*.auth.bearer",
        "A bearer token (a secret reference: env:NAME or file:PATH).",
    ),
    ("connectors.*.auth.basic", "HTTP Basic authentication."),
    ("connectors.*.auth.basic.username", "The user name."),
    (
        "connectors.*.auth.basic.password",
        "The password (a secret reference).",
    ),
    (
        "connectors.*.auth.header",
        "An API key sent in a header of its own.",
    ),
    (
        "connectors.*.auth.header.name",
        "The header's name (X-Api-Key).",
    ),
    (
        "connectors.*.auth.header.value",
        "The header's value (a secret reference).",
    ),
    (
        "connectors.*.auth.oauth2",
        "OAuth2 client credentials; the token is cached and fetched again on 401.",
    ),
    ("connectors.*.auth.oauth2.token_url", "The token endpoint."),
    ("connectors.*.auth.oauth2.client_id", "The client id."),
    (
        "connectors.*.auth.oauth2.client_secret",
        "The client secret (a secret reference).",
    ),
    ("connectors.*.auth.oauth2.scope", "The scope asked for."),
    (
        "connectors.*.timeout",
        "http: per-request timeout (default 10s).",
    ),
    (
        "connectors.*.allow_private",
        "true: allow loopback, private, link-local and metadata addresses (refused otherwise).",
    ),
    (
        "connectors.*.preset",
        "http: zendesk, hubspot, jira or rest_crm (headers, limits, breaker, auth check).",
    ),
    (
        "connectors.*.rate_limit",
        "Requests per node (`10/s`, `600/m`, `3600/h`).",
    ),
    ("connectors.*.concurrency", "Requests in flight per node."),
    (
        "connectors.*.circuit_breaker",
        "Stop calling after consecutive failed attempts.",
    ),
    (
        "connectors.*.circuit_breaker.failures",
        "Consecutive failed attempts that open the circuit.",
    ),
    (
        "connectors.*.circuit_breaker.cool_down",
        "How long the circuit stays open before one probe.",
    ),
    (
        "connectors.*.response_schema",
        "http: a JSON Schema file; a 2xx answer that does not match fails the attempt.",
    ),
    (
        "connectors.*.webhook_url",
        "slack: an incoming webhook URL (a secret reference).",
    ),
    (
        "connectors.*.token",
        "slack: a bot token for chat.postMessage (a secret reference).",
    ),
    (
        "connectors.*.signing_secret",
        "slack: the app's signing secret, verifies button presses.",
    ),
    (
        "connectors.*.users",
        "slack: Slack user id -> the token name they decide as (a reviewer name in open mode).",
    ),
    ("connectors.*.host", "smtp: the relay's host."),
    (
        "connectors.*.port",
        "smtp: the relay's port (default by tls: 587, 465 or 25).",
    ),
    (
        "connectors.*.tls",
        "smtp: starttls, tls or none (local relays only).",
    ),
    ("connectors.*.username", "smtp: the user name."),
    (
        "connectors.*.password",
        "smtp: the password (a secret reference).",
    ),
    (
        "connectors.*.from",
        "smtp: the sender (`Charter <charter@acme.example>`).",
    ),
    (
        "connectors.*.allowed_domains",
        "smtp: recipients must be in one of these domains or a subdomain (notifications too).",
    ),
    (
        "connectors.*.url",
        "sql: sqlite:PATH or postgres://… (or env:NAME when it holds a password).",
    ),
    (
        "tokens",
        "API tokens (admin API, UI, MCP); with none the API and UI are open, loopback only.",
    ),
    (
        "tokens[].name",
        "The token's name: the actor in the audit log and what `approval.reviewers` and Slack `users` name.",
    ),
    ("tokens[].role", "viewer, reviewer, admin or agent."),
    ("tokens[].secret", "The token itself (a secret reference)."),
    (
        "tokens[].charters",
        "The charters this token sees (default all).",
    ),
    (
        "providers",
        "Named LLM providers that `llm` stages and drafts use.",
    ),
    (
        "knowledge",
        "Approved knowledge sources by name, indexed in the store for `retrieve` context steps.",
    ),
    (
        "knowledge.*.owner",
        "Who answers for the source's content; gaps and stale documents are reported to them.",
    ),
    (
        "knowledge.*.folder",
        "A folder of the project holding Markdown, HTML or text files (read again at each refresh).",
    ),
    (
        "knowledge.*.url",
        "folder: the public URL of a document, `{path}` standing for its path without extension.",
    ),
    (
        "knowledge.*.connector",
        "An http connector the documents are read through (with `preset` or `list`).",
    ),
    (
        "knowledge.*.preset",
        "A known articles API: zendesk_help_center (/api/v2/help_center/articles.json).",
    ),
    (
        "knowledge.*.list",
        "A paginated JSON list of documents: where the items, their fields and the next page are.",
    ),
    (
        "knowledge.*.list.path",
        "The first page's path under the connector.",
    ),
    (
        "knowledge.*.list.items",
        "JSON pointer to the array of documents in a page (such as /articles).",
    ),
    (
        "knowledge.*.list.next",
        "JSON pointer to the next page's URL or path (null or missing ends the list).",
    ),
    ("knowledge.*.list.id", "JSON pointer to a document's id."),
    (
        "knowledge.*.list.title",
        "JSON pointer to a document's title.",
    ),
    (
        "knowledge.*.list.body",
        "JSON pointer to a document's text.",
    ),
    (
        "knowledge.*.list.url",
        "JSON pointer to a document's public URL.",
    ),
    (
        "knowledge.*.list.updated_at",
        "JSON pointer to a document's last change (RFC 3339 or Unix seconds).",
    ),
    (
        "knowledge.*.list.format",
        "markdown, html or text (default html).",
    ),
    (
        "knowledge.*.list.max_pages",
        "Most pages read in one refresh (default 100).",
    ),
    (
        "knowledge.*.refresh",
        "How often the source is read again (default: only at start and on demand).",
    ),
    (
        "knowledge.*.max_age",
        "A best passage from a document last updated longer ago than this is a stale-knowledge gap.",
    ),
    (
        "knowledge.*.chunk_words",
        "Most words in one passage (default 120).",
    ),
    (
        "knowledge.*.on_gap",
        "connector:/path of an http connector that receives each knowledge gap as JSON (POST).",
    ),
    (
        "providers.*.type",
        "openai (any OpenAI-compatible server) or anthropic.",
    ),
    ("providers.*.base_url", "The API's base URL."),
    ("providers.*.api_key", "The API key (a secret reference)."),
    ("providers.*.model", "The model name."),
    (
        "providers.*.mode",
        "openai: json_schema, json_object (llama-cpp-python) or ollama.",
    ),
    ("providers.*.timeout", "Per-request timeout."),
    ("providers.*.max_retries", "Retries of a failed request."),
    ("providers.*.max_tokens", "Largest answer asked for."),
    (
        "providers.*.price",
        "Prices for the cost figures and budgets.",
    ),
    (
        "providers.*.price.input_per_mtok",
        "Price per million prompt tokens.",
    ),
    (
        "providers.*.price.output_per_mtok",
        "Price per million completion tokens.",
    ),
    (
        "providers.*.allow_private",
        "true: allow a loopback or private address (a local model server).",
    ),
    (
        "providers.*.circuit_breaker",
        "Stop calling a failing provider for a while (its fallback is asked at once): `{ failures, cool_down }`.",
    ),
    (
        "providers.*.circuit_breaker.failures",
        "Consecutive failures (unreachable, timeout, 5xx, unreadable) that open the breaker (default 5).",
    ),
    (
        "providers.*.circuit_breaker.cool_down",
        "How long an open breaker refuses before one probe is let through (default 30s).",
    ),
    (
        "providers.*.api_version",
        "Azure OpenAI: sent as ?api-version=, the key as an api-key header.",
    ),
];

/// One line about each key of a charter file, by its path in [`CHARTER_SHAPE`] (notation as
/// in [`PROJECT_KEY_DOCS`]).
pub const CHARTER_KEY_DOCS: &[(&str, &str)] = &[
    (
        "name",
        "The charter's name, unique in the project (required).",
    ),
    ("description", "What the charter does."),
    ("owner", "Who is accountable for it (required)."),
    ("maintainer", "Who maintains it (required)."),
    (
        "system_of_record",
        "The system whose data it acts on (required).",
    ),
    (
        "mode",
        "shadow records what would run; live executes (an operator's promote overrides it).",
    ),
    ("uses", "The only connectors this charter may touch."),
    (
        "concurrency",
        "Runs of this charter processing at once, on all nodes together (default 4).",
    ),
    (
        "trigger",
        "Where events come from: webhook, nats, poll or schedule.",
    ),
    (
        "trigger.webhook",
        "Events are POSTed to a path of the server.",
    ),
    ("trigger.webhook.path", "The path (/hooks/...)."),
    (
        "trigger.webhook.verify",
        "The signature check: a mapping, or `none` written out.",
    ),
    (
        "trigger.webhook.verify.preset",
        "standard-webhooks, stripe, github, slack, shopify, zendesk, hubspot-v3 or hmac.",
    ),
    (
        "trigger.webhook.verify.secret",
        "The signing secret (a secret reference).",
    ),
    (
        "trigger.webhook.verify.secrets",
        "Several secrets, for rotation.",
    ),
    (
        "trigger.webhook.verify.tolerance",
        "Timestamped schemes: the clock window (default 5m).",
    ),
    (
        "trigger.webhook.verify.header",
        "hmac: the signature header.",
    ),
    (
        "trigger.webhook.verify.algorithm",
        "hmac: sha1, sha256 or sha512.",
    ),
    ("trigger.webhook.verify.encoding", "hmac: hex or base64."),
    (
        "trigger.webhook.verify.prefix",
        "hmac: text before the signature (sha256=).",
    ),
    (
        "trigger.webhook.verify.timestamp_header",
        "hmac: the header carrying the timestamp.",
    ),
    (
        "trigger.webhook.verify.signed",
        "hmac: what is signed (`{timestamp}.{body}`).",
    ),
    (
        "trigger.nats",
        "Events are read from a NATS JetStream stream.",
    ),
    ("trigger.nats.url", "The server(s), comma-separated."),
    ("trigger.nats.stream", "The stream."),
    ("trigger.nats.subject", "The subject filter (orders.>)."),
    (
        "trigger.nats.durable",
        "The durable consumer (default `charter-<charter name>`).",
    ),
    (
        "trigger.nats.create_stream",
        "true: create the stream (file storage) when it is missing.",
    ),
    (
        "trigger.poll",
        "Events are read by polling an HTTP API through a connector.",
    ),
    ("trigger.poll.connector", "An http connector in `uses`."),
    (
        "trigger.poll.path",
        "The path under the connector's base URL; a template that sees `cursor`.",
    ),
    ("trigger.poll.every", "How often (default 60s)."),
    (
        "trigger.poll.items",
        "JSON pointer to the array of items (/ for the whole answer).",
    ),
    (
        "trigger.poll.key",
        "Each item's dedupe key: a template over `item` or a JSON pointer.",
    ),
    ("trigger.poll.cursor", "Where the next poll starts."),
    (
        "trigger.poll.cursor.next",
        "JSON pointer to a value in the response (page token, since).",
    ),
    (
        "trigger.poll.cursor.max",
        "JSON pointer to an item field whose largest value is kept.",
    ),
    ("trigger.poll.cursor.start", "The cursor's first value."),
    ("trigger.schedule", "Events fire on a cron schedule."),
    (
        "trigger.schedule.cron",
        "5 fields (minute hour day-of-month month day-of-week), 6 with seconds, or @daily and friends.",
    ),
    (
        "trigger.schedule.timezone",
        "The zone the fields are read in: IANA name or +HH:MM (default UTC).",
    ),
    (
        "trigger.dedupe",
        "The dedupe key: a template, or `{ header: NAME }` to take a request header's value.",
    ),
    (
        "trigger.dedupe.header",
        "The request header whose value is the dedupe key.",
    ),
    (
        "trigger.input_schema",
        "A JSON Schema file (the contract); violations are answered 422 and kept as rejected.",
    ),
    (
        "trigger.text",
        "A template giving the event's text: what the classifier, extractors and LLM read.",
    ),
    (
        "trigger.events",
        "Only these event types (names or prefixes ending in *); others are answered 200, not stored.",
    ),
    (
        "decide",
        "How a decision is reached: labels, stages, what happens otherwise, fields.",
    ),
    ("decide.labels", "The labels a decision may have."),
    (
        "decide.stages",
        "Stages consulted in order until one decides.",
    ),
    (
        "decide.stages[].rules",
        "CEL rules; the first that matches decides.",
    ),
    (
        "decide.stages[].rules[].when",
        "A CEL expression over payload, event, headers, context.",
    ),
    ("decide.stages[].rules[].label", "The label it decides."),
    (
        "decide.stages[].rules[].fields",
        "Field values it sets (templates).",
    ),
    (
        "decide.stages[].embedded",
        "The embedded classifier, trained on an examples file.",
    ),
    (
        "decide.stages[].embedded.examples",
        "A CSV file `text,label`.",
    ),
    (
        "decide.stages[].embedded.accept_above",
        "The confidence it must reach to decide.",
    ),
    (
        "decide.stages[].llm",
        "An LLM through a provider of charter.yaml.",
    ),
    ("decide.stages[].llm.provider", "The provider's name."),
    ("decide.stages[].llm.prompt", "The prompt file."),
    (
        "decide.stages[].llm.accept_above",
        "The confidence it must reach to decide.",
    ),
    (
        "decide.stages[].llm.fallback",
        "Providers tried when this one fails.",
    ),
    (
        "decide.stages[].llm.cache_ttl",
        "How long answers are cached in the store, keyed on the exact request sent (default 7d; 0 turns the cache off).",
    ),
    (
        "decide.stages[].llm.rate_limit",
        "Calls per minute, for the whole cluster.",
    ),
    (
        "decide.stages[].llm.budget",
        "A daily spend limit, for the whole cluster.",
    ),
    (
        "decide.stages[].llm.budget.tokens_per_day",
        "Tokens per UTC day.",
    ),
    (
        "decide.stages[].llm.budget.cost_per_day",
        "Cost per UTC day (from the provider's price).",
    ),
    (
        "decide.stages[].llm.budget.on_exhausted",
        "escalate or wait.",
    ),
    (
        "decide.stages[].llm.budget.max_wait",
        "With wait: how long at most.",
    ),
    (
        "decide.stages[].llm.redact",
        "Kinds of personal data masked before sending (email).",
    ),
    (
        "decide.otherwise",
        "When no stage decides: escalate (a human decides) or a default label.",
    ),
    ("decide.extract", "Fields the decision carries, by name."),
    (
        "decide.extract.*.type",
        "string, number, integer or boolean.",
    ),
    (
        "decide.extract.*.pattern",
        "A regular expression the value must match.",
    ),
    ("decide.extract.*.enum", "The values allowed."),
    (
        "decide.extract.*.required",
        "true: a missing or invalid value escalates the event.",
    ),
    (
        "decide.extract.*.regex",
        "Extractor: the first capture group over the text (or `in`).",
    ),
    (
        "decide.extract.*.in",
        "What `regex` reads instead of the text (payload.ticket.body).",
    ),
    (
        "decide.extract.*.template",
        "Extractor: a template's value.",
    ),
    (
        "routes",
        "Which actions run: the first route whose `when` matches.",
    ),
    (
        "routes[].when",
        "A CEL expression over payload, event, decision, headers, context.",
    ),
    ("routes[].do", "The actions to run, in order."),
    (
        "routes[].name",
        "The route's name, under which its mode and reviews are kept (default route-<n>).",
    ),
    (
        "routes[].mode",
        "shadow, approve (every action waits for a reviewer) or live; default the charter's.",
    ),
    (
        "routes[].sample",
        "Share of the route's runs queued for a reviewer (10% or 0.1; default 0).",
    ),
    (
        "routes[].promote_when",
        "When the route has earned promotion: the owner is told, the UI suggests it.",
    ),
    (
        "routes[].promote_when.agreement",
        "Agreement needed among reviewed samples (0.95 or 95%).",
    ),
    (
        "routes[].promote_when.reviewed",
        "Reviewed samples needed at least; also when agreement is first shown.",
    ),
    (
        "routes[].promote_when.auto",
        "true: promote without a human once met (default false: only suggest).",
    ),
    (
        "routes[].demote_when",
        "When a live route goes back to approve: its reviewed correction rate.",
    ),
    (
        "routes[].demote_when.corrections",
        "Correction rate above which the live route is demoted (10% or 0.1).",
    ),
    (
        "routes[].demote_when.reviewed",
        "Reviewed samples since it went live needed before demoting (default 20).",
    ),
    (
        "actions",
        "The allowlist of what this charter may do, by name.",
    ),
    (
        "actions.*.connector",
        "The connector it goes through (one in `uses`).",
    ),
    ("actions.*.request", "http: the request."),
    ("actions.*.request.method", "The method."),
    (
        "actions.*.request.path",
        "A path under the connector's base URL (a template).",
    ),
    ("actions.*.request.url", "A whole URL instead of a path."),
    ("actions.*.request.headers", "Headers (templates)."),
    (
        "actions.*.request.json",
        "The JSON body; string values are templates.",
    ),
    ("actions.*.request.timeout", "This request's timeout."),
    (
        "actions.*.log",
        "A log line (a template); no connector, no external effect.",
    ),
    ("actions.*.message", "slack: a message."),
    (
        "actions.*.message.channel",
        "The channel (required with a bot token).",
    ),
    ("actions.*.message.text", "The text (a template)."),
    ("actions.*.email", "smtp: an email."),
    ("actions.*.email.to", "Recipients (a template)."),
    ("actions.*.email.subject", "The subject (a template)."),
    ("actions.*.email.body", "The body (a template)."),
    ("actions.*.sql", "sql: a statement."),
    (
        "actions.*.sql.statement",
        "The statement exactly as written ($1, $2 placeholders; no templates).",
    ),
    (
        "actions.*.sql.params",
        "The values bound to $1, $2, … (templates; ~ binds NULL).",
    ),
    (
        "actions.*.mcp_skip_when",
        "MCP calls run this action even where no route's `when:` holds (default false).",
    ),
    (
        "actions.*.approval",
        "`auto`, or `{ reviewers, expires, on_expiry }` to wait for a human; every action without a draft must state it.",
    ),
    (
        "actions.*.approval.reviewers",
        "Token names that may approve (required, not empty); admin tokens may always approve.",
    ),
    (
        "actions.*.approval.expires",
        "How long the approval waits (default 24h).",
    ),
    (
        "actions.*.approval.on_expiry",
        "What happens then: escalate (default) or reject.",
    ),
    (
        "actions.*.retry",
        "Retries on network errors, 408, 429, 5xx.",
    ),
    ("actions.*.retry.attempts", "Attempts in all."),
    (
        "actions.*.retry.backoff",
        "The first wait (exponential, full jitter).",
    ),
    ("actions.*.retry.max_backoff", "The longest wait."),
    (
        "actions.*.measure",
        "A measurement recorded when the action succeeds.",
    ),
    (
        "actions.*.draft",
        "An LLM-written text the templates see as `draft`; reviewed by default.",
    ),
    ("actions.*.draft.prompt", "The prompt file."),
    ("actions.*.draft.provider", "The provider."),
    ("actions.*.draft.fallback", "Providers tried when it fails."),
    (
        "actions.*.draft.redact",
        "Kinds of personal data masked before sending.",
    ),
    (
        "actions.*.draft.cite",
        "A retrieve context whose passages the draft must cite as [1], [2]; a draft citing nothing or a passage not retrieved is refused.",
    ),
    (
        "actions.*.draft.cite_every_sentence",
        "With cite: refuse a draft with a sentence that cites nothing.",
    ),
    ("escalation", "Where escalations and approvals go."),
    (
        "escalation.to",
        "Who gets escalated work: a reviewer group or address, shown with each escalation.",
    ),
    (
        "escalation.notify",
        "Where new approvals and escalations are announced (slack:#channel, connector:/path, mail connector:recipients).",
    ),
    (
        "measure",
        "The charter's own measurements (`success: [names]`).",
    ),
    (
        "alerts",
        "Conditions that notify someone, one kind per item.",
    ),
    (
        "alerts[].error_rate",
        "Failed share of finished runs above a threshold.",
    ),
    ("alerts[].stuck", "Events waiting longer than older_than."),
    ("alerts[].budget_exhausted", "An LLM budget ran out."),
    ("alerts[].dead_letters", "Actions dead-lettered."),
    (
        "alerts[].*.above",
        "The threshold: 5% / 0.05 (error_rate) or a count (dead_letters).",
    ),
    ("alerts[].*.window", "The time window looked at."),
    ("alerts[].*.older_than", "stuck: the age."),
    ("alerts[].*.when", "stuck: a CEL filter over the payload."),
    (
        "alerts[].*.min_runs",
        "error_rate: runs needed before it can hold (default 1).",
    ),
    ("alerts[].*.notify", "connector or connector:/path."),
    (
        "context",
        "Records fetched before deciding, by name (`context.<name>`).",
    ),
    ("context.*.connector", "An http connector in `uses`."),
    ("context.*.get", "The path to GET (a template)."),
    ("context.*.timeout", "The fetch's timeout."),
    ("context.*.on_error", "continue (null) or retry."),
    (
        "context.*.retry_after",
        "With retry: when to run the event again.",
    ),
    (
        "context.*.retrieve",
        "Passages from knowledge sources instead of a fetched record (`context.<name>.passages`).",
    ),
    (
        "context.*.retrieve.query",
        "The question searched for (a template over payload, event, headers).",
    ),
    ("context.*.retrieve.sources", "Knowledge source names."),
    (
        "context.*.retrieve.top_k",
        "Most passages kept (default 4).",
    ),
    (
        "context.*.retrieve.min_score",
        "Share of the question's terms a passage must contain, 0 to 1 (default 0.3); none above it is a gap.",
    ),
];

/// An unknown key, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A YAML text with its unknown keys blanked out, and those keys.
#[derive(Debug)]
pub struct Stripped<'a> {
    /// The text to deserialize: every unknown key and its value replaced by spaces (line
    /// breaks kept, so every other value keeps its line and column). A block mapping left
    /// with no keys becomes `{}`, so it is still a mapping.
    pub text: std::borrow::Cow<'a, str>,
    pub unknown: Vec<UnknownKey>,
}

/// Reports every key of `text` that `shape` does not know and blanks it out with its value.
///
/// Text that is not valid YAML is returned unchanged, with no findings: the deserializer
/// then reports the syntax error. Merge keys (`<<`) are left to the deserializer.
pub fn strip_unknown_keys<'a>(text: &'a str, shape: &Shape) -> Stripped<'a> {
    let mut walk = Walk {
        text,
        unknown: Vec::new(),
        cuts: Vec::new(),
        braces: Vec::new(),
    };
    if let Some(root) = yaml_tree(text) {
        walk.node(&root, shape);
    }
    let Walk {
        unknown,
        cuts,
        braces,
        ..
    } = walk;
    Stripped {
        text: if cuts.is_empty() {
            std::borrow::Cow::Borrowed(text)
        } else {
            std::borrow::Cow::Owned(blank(text, &cuts, &braces))
        },
        unknown,
    }
}

/// A YAML node with its place.
#[derive(Debug)]
struct Node {
    kind: NodeKind,
    at: Place,
}

/// Where a node is: its byte range and the 1-based line and column of its start.
#[derive(Debug, Clone, Copy)]
struct Place {
    start: usize,
    end: usize,
    line: usize,
    column: usize,
}

#[derive(Debug)]
enum NodeKind {
    Scalar(String),
    Alias,
    Seq(Vec<Node>),
    Map {
        flow: bool,
        entries: Vec<(Node, Node)>,
    },
}

/// A collection whose end has not been seen yet.
enum Open {
    Seq(Vec<Node>),
    Map {
        flow: bool,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// The first document of `text` as a tree, or `None` when it does not parse. Nesting is
/// bounded by the parser's limits.
fn yaml_tree(text: &str) -> Option<Node> {
    use serde_saphyr::granit_parser::{Event, Parser, StructureStyle};

    let mut stack: Vec<(Open, Place)> = Vec::new();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.ok()?;
        let range = span.byte_range()?;
        let at = Place {
            start: range.start,
            end: range.end,
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        let done = match event {
            Event::Scalar(value, ..) => Node {
                kind: NodeKind::Scalar(value.into_owned()),
                at,
            },
            Event::Alias(_) => Node {
                kind: NodeKind::Alias,
                at,
            },
            Event::SequenceStart(..) => {
                stack.push((Open::Seq(Vec::new()), at));
                continue;
            }
            Event::MappingStart(style, ..) => {
                let open = Open::Map {
                    flow: style == StructureStyle::Flow,
                    entries: Vec::new(),
                    key: None,
                };
                stack.push((open, at));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (open, start) = stack.pop()?;
                let kind = match open {
                    Open::Seq(items) => NodeKind::Seq(items),
                    Open::Map { flow, entries, .. } => NodeKind::Map { flow, entries },
                };
                Node {
                    kind,
                    at: Place {
                        end: range.end.max(start.start),
                        ..start
                    },
                }
            }
            _ => continue,
        };
        match stack.last_mut() {
            None => return Some(done),
            Some((Open::Seq(items), _)) => items.push(done),
            Some((Open::Map { entries, key, .. }, _)) => match key.take() {
                None => *key = Some(done),
                Some(k) => entries.push((k, done)),
            },
        }
    }
    None
}

struct Walk<'t> {
    text: &'t str,
    unknown: Vec<UnknownKey>,
    /// Byte ranges to blank out.
    cuts: Vec<std::ops::Range<usize>>,
    /// Byte offsets where `{}` replaces the blanks (block mappings left empty).
    braces: Vec<usize>,
}

impl Walk<'_> {
    fn node(&mut self, node: &Node, shape: &Shape) {
        match (shape, &node.kind) {
            (Shape::Keys(fields), NodeKind::Map { flow, entries }) => {
                let mut first_cut = None;
                let mut removed = 0;
                for (key, value) in entries {
                    let NodeKind::Scalar(name) = &key.kind else {
                        continue;
                    };
                    if name == "<<" {
                        continue;
                    }
                    match fields.iter().find(|(field, _)| field == name) {
                        Some((_, inner)) => self.node(value, inner),
                        None => {
                            self.unknown.push(UnknownKey {
                                line: key.at.line,
                                column: key.at.column,
                                message: unknown_field(name, fields),
                            });
                            let cut = self.entry_range(&key.at, &value.at, *flow);
                            first_cut.get_or_insert(cut.start);
                            self.cuts.push(cut);
                            removed += 1;
                        }
                    }
                }
                // A block mapping left without keys would read as null: keep it a mapping.
                if let Some(at) = first_cut
                    && !flow
                    && removed == entries.len()
                {
                    self.braces.push(at);
                }
            }
            (Shape::Names(inner), NodeKind::Map { entries, .. }) => {
                for (_, value) in entries {
                    self.node(value, inner);
                }
            }
            (Shape::List(inner), NodeKind::Seq(items)) => {
                for item in items {
                    self.node(item, inner);
                }
            }
            _ => {}
        }
    }

    /// The bytes of one `key: value` entry: from the key to the end of the value, the colon
    /// included, and in a flow mapping one separating comma.
    fn entry_range(&self, key: &Place, value: &Place, flow: bool) -> std::ops::Range<usize> {
        let bytes = self.text.as_bytes();
        let mut start = key.start;
        let mut end = key.end.max(value.end);
        // The colon (an empty value ends before it).
        let mut i = key.end;
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        if bytes.get(i) == Some(&b':') {
            end = end.max(i + 1);
        }
        if flow {
            let mut after = end;
            while after < bytes.len() && bytes[after].is_ascii_whitespace() {
                after += 1;
            }
            if bytes.get(after) == Some(&b',') {
                end = after + 1;
            } else {
                let mut before = start;
                while before > 0 && bytes[before - 1].is_ascii_whitespace() {
                    before -= 1;
                }
                if before > 0 && bytes[before - 1] == b',' {
                    start = before - 1;
                }
            }
        }
        start..end.min(bytes.len())
    }
}

/// The message for an unknown key, worded like serde's.
fn unknown_field(name: &str, fields: &[(&str, Shape)]) -> String {
    let names: Vec<String> = fields.iter().map(|(f, _)| format!("`{f}`")).collect();
    match names.as_slice() {
        [] => format!("unknown field `{name}`, there are no fields"),
        [one] => format!("unknown field `{name}`, expected {one}"),
        [a, b] => format!("unknown field `{name}`, expected {a} or {b}"),
        _ => format!(
            "unknown field `{name}`, expected one of {}",
            names.join(", ")
        ),
    }
}

/// `text` with the `cuts` replaced by spaces (line breaks kept) and `{}` written at each of
/// `braces`. Each character becomes one character, so columns (counted in characters) hold.
fn blank(text: &str, cuts: &[std::ops::Range<usize>], braces: &[usize]) -> String {
    let mut cuts = cuts.to_vec();
    cuts.sort_by_key(|r| r.start);
    let mut cuts = cuts.into_iter().peekable();
    let mut current: Option<std::ops::Range<usize>> = None;
    let mut close_brace = false;
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        while current.as_ref().is_none_or(|r| r.end <= i) {
            match cuts.next_if(|r| r.start <= i) {
                Some(r) => current = Some(r),
                None => break,
            }
        }
        let in_cut = current.as_ref().is_some_and(|r| r.contains(&i));
        if !in_cut || c == '\n' || c == '\r' {
            out.push(c);
        } else if braces.contains(&i) {
            out.push('{');
            close_brace = true;
        } else if close_brace {
            out.push('}');
            close_brace = false;
        } else {
            out.push(' ');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field names serde's derive gives a struct (renames applied).
    fn serde_fields<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
        struct Fields(Vec<&'static str>);

        impl<'de> de::Deserializer<'de> for &mut Fields {
            type Error = de::value::Error;

            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("only structs"))
            }

            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _name: &'static str,
                fields: &'static [&'static str],
                _visitor: V,
            ) -> Result<V::Value, Self::Error> {
                self.0 = fields.to_vec();
                Err(de::Error::custom("fields recorded"))
            }

            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
                enum identifier ignored_any
            }
        }

        let mut fields = Fields(Vec::new());
        let _ = T::deserialize(&mut fields);
        fields.0
    }

    fn shape_keys(shape: &Shape) -> Vec<&'static str> {
        match shape {
            Shape::Keys(fields) => fields.iter().map(|(name, _)| *name).collect(),
            other => panic!("not a struct shape: {other:?}"),
        }
    }

    /// The value shape of `key` in a struct shape.
    fn field(shape: &Shape, key: &str) -> Shape {
        match shape {
            Shape::Keys(fields) => fields
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, s)| *s)
                .unwrap_or_else(|| panic!("no key {key}")),
            other => panic!("not a struct shape: {other:?}"),
        }
    }

    fn inner(shape: Shape) -> Shape {
        match shape {
            Shape::Names(s) | Shape::List(s) => *s,
            other => panic!("not a collection shape: {other:?}"),
        }
    }

    #[test]
    fn shapes_list_exactly_the_struct_fields() {
        let p = PROJECT_SHAPE;
        let c = CHARTER_SHAPE;
        let connector = inner(field(&p, "connectors"));
        let auth = field(&connector, "auth");
        let trigger = field(&c, "trigger");
        let webhook = field(&trigger, "webhook");
        let decide = field(&c, "decide");
        let stage = inner(field(&decide, "stages"));
        let action = inner(field(&c, "actions"));
        let pairs: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
            ("project", shape_keys(&p), serde_fields::<RawProject>()),
            (
                "server",
                shape_keys(&field(&p, "server")),
                serde_fields::<RawServer>(),
            ),
            (
                "worker",
                shape_keys(&field(&p, "worker")),
                serde_fields::<RawWorker>(),
            ),
            (
                "connector",
                shape_keys(&connector),
                serde_fields::<RawConnector>(),
            ),
            ("auth", shape_keys(&auth), serde_fields::<RawAuth>()),
            (
                "oauth2",
                shape_keys(&field(&auth, "oauth2")),
                serde_fields::<RawOAuth2>(),
            ),
            (
                "circuit_breaker",
                shape_keys(&field(&connector, "circuit_breaker")),
                serde_fields::<RawBreaker>(),
            ),
            (
                "basic",
                shape_keys(&field(&auth, "basic")),
                serde_fields::<RawBasicAuth>(),
            ),
            (
                "header auth",
                shape_keys(&field(&auth, "header")),
                serde_fields::<RawHeaderAuth>(),
            ),
            (
                "token",
                shape_keys(&inner(field(&p, "tokens"))),
                serde_fields::<RawToken>(),
            ),
            (
                "provider",
                shape_keys(&inner(field(&p, "providers"))),
                serde_fields::<RawProvider>(),
            ),
            (
                "price",
                shape_keys(&field(&inner(field(&p, "providers")), "price")),
                serde_fields::<RawPrice>(),
            ),
            (
                "knowledge",
                shape_keys(&inner(field(&p, "knowledge"))),
                serde_fields::<RawKnowledge>(),
            ),
            (
                "knowledge list",
                shape_keys(&field(&inner(field(&p, "knowledge")), "list")),
                serde_fields::<RawKnowledgeList>(),
            ),
            (
                "budget",
                shape_keys(&field(&field(&stage, "llm"), "budget")),
                serde_fields::<RawBudget>(),
            ),
            ("charter", shape_keys(&c), serde_fields::<RawCharter>()),
            (
                "trigger",
                shape_keys(&trigger),
                serde_fields::<RawTrigger>(),
            ),
            (
                "dedupe",
                shape_keys(&field(&trigger, "dedupe")),
                serde_fields::<RawDedupe>(),
            ),
            (
                "webhook",
                shape_keys(&webhook),
                serde_fields::<RawWebhook>(),
            ),
            (
                "nats",
                shape_keys(&field(&trigger, "nats")),
                serde_fields::<RawNats>(),
            ),
            (
                "poll",
                shape_keys(&field(&trigger, "poll")),
                serde_fields::<RawPoll>(),
            ),
            (
                "poll cursor",
                shape_keys(&field(&field(&trigger, "poll"), "cursor")),
                serde_fields::<RawPollCursor>(),
            ),
            (
                "schedule",
                shape_keys(&field(&trigger, "schedule")),
                serde_fields::<RawSchedule>(),
            ),
            (
                "verify",
                shape_keys(&field(&webhook, "verify")),
                serde_fields::<RawVerify>(),
            ),
            ("decide", shape_keys(&decide), serde_fields::<RawDecide>()),
            ("stage", shape_keys(&stage), serde_fields::<RawStage>()),
            (
                "rule",
                shape_keys(&inner(field(&stage, "rules"))),
                serde_fields::<RawRule>(),
            ),
            (
                "embedded",
                shape_keys(&field(&stage, "embedded")),
                serde_fields::<RawEmbedded>(),
            ),
            (
                "llm",
                shape_keys(&field(&stage, "llm")),
                serde_fields::<RawLlm>(),
            ),
            (
                "field",
                shape_keys(&inner(field(&decide, "extract"))),
                serde_fields::<RawField>(),
            ),
            (
                "route",
                shape_keys(&inner(field(&c, "routes"))),
                serde_fields::<RawRoute>(),
            ),
            (
                "promote_when",
                shape_keys(&field(&inner(field(&c, "routes")), "promote_when")),
                serde_fields::<RawPromoteWhen>(),
            ),
            (
                "demote_when",
                shape_keys(&field(&inner(field(&c, "routes")), "demote_when")),
                serde_fields::<RawDemoteWhen>(),
            ),
            ("action", shape_keys(&action), serde_fields::<RawAction>()),
            (
                "draft",
                shape_keys(&field(&action, "draft")),
                serde_fields::<RawDraft>(),
            ),
            (
                "context",
                shape_keys(&inner(field(&c, "context"))),
                serde_fields::<RawContextFetch>(),
            ),
            (
                "retrieve",
                shape_keys(&field(&inner(field(&c, "context")), "retrieve")),
                serde_fields::<RawRetrieve>(),
            ),
            (
                "message",
                shape_keys(&field(&action, "message")),
                serde_fields::<RawMessage>(),
            ),
            (
                "email",
                shape_keys(&field(&action, "email")),
                serde_fields::<RawEmail>(),
            ),
            (
                "sql",
                shape_keys(&field(&action, "sql")),
                serde_fields::<RawSql>(),
            ),
            (
                "request",
                shape_keys(&field(&action, "request")),
                serde_fields::<RawRequest>(),
            ),
            (
                "approval",
                shape_keys(&field(&action, "approval")),
                serde_fields::<RawApproval>(),
            ),
            (
                "retry",
                shape_keys(&field(&action, "retry")),
                serde_fields::<RawRetry>(),
            ),
            (
                "escalation",
                shape_keys(&field(&c, "escalation")),
                serde_fields::<RawEscalation>(),
            ),
        ];
        for (what, shape, serde) in pairs {
            assert!(!serde.is_empty(), "{what}: serde fields not recorded");
            assert_eq!(shape, serde, "{what}");
        }
    }

    const SMALL: Shape = Shape::Keys(&[
        ("a", Shape::Any),
        ("m", Shape::Keys(&[("x", Shape::Any), ("y", Shape::Any)])),
        (
            "l",
            Shape::List(&Shape::Keys(&[("x", Shape::Any), ("y", Shape::Any)])),
        ),
        (
            "n",
            Shape::Names(&Shape::Keys(&[("x", Shape::Any), ("y", Shape::Any)])),
        ),
    ]);

    /// Strips `text`, checks that lines are kept and that the result is YAML, and returns
    /// the stripped text and the findings as `line:column: message`.
    fn strip(text: &str) -> (String, Vec<String>) {
        let s = strip_unknown_keys(text, &SMALL);
        let lines = |t: &str| t.lines().map(|l| l.chars().count()).collect::<Vec<_>>();
        assert_eq!(lines(&s.text), lines(text), "{:?}", s.text);
        assert!(
            yaml_tree(&s.text).is_some() || text.is_empty(),
            "not YAML: {:?}",
            s.text
        );
        let found = s
            .unknown
            .iter()
            .map(|k| format!("{}:{}: {}", k.line, k.column, k.message))
            .collect();
        (s.text.into_owned(), found)
    }

    #[test]
    fn known_keys_leave_the_text_untouched() {
        let text =
            "a: 1\nm: { x: 1, y: [1, 2] }\nl:\n  - x: 1\n  - { y: 2 }\nn:\n  any: { x: 1 }\n";
        let s = strip_unknown_keys(text, &SMALL);
        assert!(s.unknown.is_empty());
        assert!(matches!(s.text, std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn every_unknown_key_is_reported_and_blanked() {
        let text = "a: 1\nbogus: 2\nm:\n  x: 1\n  z: { deep: [1, 2] }\n  y: 2\nl:\n  - x: 1\n    w: 3\nn:\n  free-name:\n    x: 1\n    v:\nlast: [1,\n  2]\n";
        let (out, found) = strip(text);
        assert_eq!(
            found,
            [
                "2:1: unknown field `bogus`, expected one of `a`, `m`, `l`, `n`",
                "5:3: unknown field `z`, expected `x` or `y`",
                "9:5: unknown field `w`, expected `x` or `y`",
                "13:5: unknown field `v`, expected `x` or `y`",
                "14:1: unknown field `last`, expected one of `a`, `m`, `l`, `n`",
            ]
        );
        assert_eq!(
            out,
            "a: 1\n        \nm:\n  x: 1\n                     \n  y: 2\nl:\n  - x: 1\n        \nn:\n  free-name:\n    x: 1\n      \n         \n    \n"
        );
    }

    #[test]
    fn flow_mappings_lose_one_comma_per_key() {
        let (out, found) = strip("m: { z: 1, x: 1, w: 2, y: 2, v: 3 }\n");
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(out, "m: {       x: 1,       y: 2       }\n");
        let (out, found) = strip("m: {z: 1}\nl: [{ w: [1, 2], v: {} }]\n");
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(out, "m: {    }\nl: [{                  }]\n");
    }

    #[test]
    fn a_block_mapping_left_empty_stays_a_mapping() {
        let (out, found) = strip("m:\n  z: 1\n  w:\n    - 1\nl:\n  - v: 1\n");
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(out, "m:\n  {}  \n    \n       \nl:\n  - {}  \n");
        let (out, _) = strip("bogus: 1\n");
        assert_eq!(out, "{}      \n");
    }

    #[test]
    fn columns_count_characters() {
        let (out, found) = strip("zé: ü\nm: { x: 1, «y»: 2 }\n");
        assert_eq!(
            found,
            [
                "1:1: unknown field `zé`, expected one of `a`, `m`, `l`, `n`",
                "2:12: unknown field `«y»`, expected `x` or `y`",
            ]
        );
        assert_eq!(out, "     \nm: { x: 1         }\n");
    }

    #[test]
    fn quoted_keys_and_crlf_line_ends() {
        let (out, found) = strip("a: 1\r\n\"bogus\": 2\r\nm: { 'z' : 1, x: 1 }\r\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(out, "a: 1\r\n          \r\nm: {          x: 1 }\r\n");
    }

    #[test]
    fn invalid_yaml_and_other_shapes_are_left_to_the_deserializer() {
        let s = strip_unknown_keys("a: [1\nbogus: 2\n", &SMALL);
        assert!(s.unknown.is_empty());
        assert_eq!(s.text, "a: [1\nbogus: 2\n");
        // A word where a mapping is expected, a mapping where a list is: not this pass's
        // business. Merge keys are the deserializer's too.
        let (out, found) = strip("m: word\nl: { x: 1 }\nn: [1]\n<<: { a: 1 }\n");
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(out, "m: word\nl: { x: 1 }\nn: [1]\n<<: { a: 1 }\n");
        let (out, found) = strip("");
        assert!(found.is_empty());
        assert_eq!(out, "");
    }
}
