//! Project and charter configuration.
//!
//! Two layers: [`raw`] mirrors the YAML exactly (`deny_unknown_fields`, spans kept for
//! messages) and [`validate`] turns raw values into the typed, checked values below. Loading
//! is pure: the caller reads the project folder into a [`ProjectSource`] (every text file by
//! relative path) and [`load_project`] parses and validates it, returning every problem at
//! once as [`Diagnostics`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::expr::Expr;
use crate::template::{JsonTemplate, Template};

mod decision;
mod knowledge;
pub mod raw;
pub mod schema;
pub mod validate;

pub use decision::{CompiledRegex, ContextFetch, ContextOnError, DraftSpec, Extractor};
pub use knowledge::{
    CitePolicy, GapTarget, KNOWLEDGE_PRESETS, KnowledgeKind, KnowledgeList, KnowledgePreset,
    KnowledgeSource, RetrieveStep,
};

pub use validate::{DRAFT_APPROVAL_EXPIRES, Diagnostic, Diagnostics, load_project};

/// The text files of a project folder, keyed by path relative to the project root with `/`
/// separators (`charter.yaml`, `charters/triage.yaml`, `schemas/ticket.json`).
#[derive(Debug, Clone, Default)]
pub struct ProjectSource {
    pub files: BTreeMap<String, String>,
}

/// A validated project: server settings, connectors, tokens and charters.
#[derive(Debug, Clone)]
pub struct Project {
    pub settings: Settings,
    pub connectors: BTreeMap<String, Connector>,
    pub tokens: Vec<TokenDef>,
    /// Model providers by name (`providers:` in charter.yaml).
    pub providers: BTreeMap<String, ProviderDef>,
    /// Charters by name.
    pub charters: BTreeMap<String, Arc<Charter>>,
    /// Approved knowledge sources by name (`knowledge:`).
    pub knowledge: BTreeMap<String, KnowledgeSource>,
}

/// A model provider an `llm` stage (or a draft) can call.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderDef {
    pub name: String,
    pub kind: ProviderType,
    /// API root: `https://api.openai.com/v1` (default for `openai`),
    /// `https://api.anthropic.com/v1` (default for `anthropic`), a local server's `/v1`, or
    /// Ollama's root in `ollama` mode.
    pub base_url: String,
    /// Optional for local servers.
    pub api_key: Option<SecretRef>,
    pub model: String,
    pub mode: StructuredMode,
    /// Per-attempt timeout (default 30 s).
    pub timeout: Duration,
    /// Retries on 429, 5xx, timeouts and connection errors (default 3).
    pub max_retries: u32,
    /// Output tokens asked for per request (default 1024).
    pub max_tokens: u32,
    pub price: Option<TokenPrice>,
    /// The endpoint may be a loopback or private address (a model on this machine or the
    /// local network); otherwise the outbound guard refuses such addresses.
    pub allow_private: bool,
    /// Azure OpenAI's `api-version` (such as `2024-10-21`): sent as that query parameter,
    /// with the key in an `api-key` header instead of `Authorization: Bearer`.
    pub api_version: Option<String>,
    /// After `failures` consecutive failed requests (unreachable, timed out, HTTP 5xx) the
    /// provider is not asked for `cool_down` (the next provider of a stage's `fallback` is
    /// asked at once); then one probe request decides. Default 5 failures, 30 s.
    pub circuit_breaker: CircuitBreakerPolicy,
}

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderType {
    /// OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp, LM Studio, Ollama).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

/// How an OpenAI-compatible server is asked for structured output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StructuredMode {
    /// `response_format: {type: json_schema, ...}` (OpenAI, vLLM): the default.
    JsonSchema,
    /// `response_format: {type: json_object, schema}` (llama-cpp-python).
    JsonObject,
    /// Ollama's native `/api/chat` with `format: <schema>`.
    Ollama,
}

/// Price per million tokens, for cost metering and cost budgets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenPrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// Server settings from `charter.yaml` (`server:`, `store:`, `worker:`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Address to listen on; `None` means the default `127.0.0.1:8080` (CLI/env override it).
    pub listen: Option<String>,
    /// Store location: a SQLite file path relative to the project (default `charter.db`).
    pub store: String,
    /// Largest accepted webhook body in bytes (default 1 MiB).
    pub body_limit: usize,
    /// Base URL of the UI used in links (notifications); optional.
    pub public_url: Option<String>,
    /// The time zone the web UI shows times in and reads typed times in (`server.timezone`,
    /// an IANA name or a fixed offset; default UTC). The API always speaks Unix
    /// milliseconds.
    pub timezone: crate::cron::Zone,
    pub worker: WorkerSettings,
    /// Who may reach the server and how much of it one connection may hold.
    pub net: NetSettings,
}

/// The server's exposure: which `Host` names it answers, which peers may speak for a
/// client, connection limits and webhook rate limits (`server:` in charter.yaml).
#[derive(Debug, Clone, PartialEq)]
pub struct NetSettings {
    /// `Host` values accepted besides loopback names (`localhost`, `*.localhost`), IP
    /// literals and `public_url`'s host (`server.allowed_hosts`). An entry `*.example.com`
    /// accepts every subdomain; `*` alone accepts any host. The check guards against DNS
    /// rebinding; it applies to the UI, the admin API and MCP whenever no tokens are
    /// configured, and always when this list is not empty.
    pub allowed_hosts: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed (`server.trusted_proxies`: addresses or
    /// CIDR ranges). The client address (for limiters, the audit log and logs) is the
    /// right-most forwarded address that is not itself a trusted proxy.
    pub trusted_proxies: Vec<IpRange>,
    /// Serve the admin API and UI without tokens on a non-loopback address
    /// (`server.insecure_open_admin`; default false: the server refuses to start).
    pub insecure_open_admin: bool,
    /// Longest wait for a request's head, once the connection is open or the previous
    /// answer was sent (`server.header_timeout`, default 10 s). It is also the idle
    /// keep-alive timeout: a connection that sends no new request within it is closed.
    pub header_timeout: Duration,
    /// Longest time to read a whole request body (`server.body_timeout`, default 30 s):
    /// a body that trickles in or stops short of its `Content-Length` is answered 408.
    pub body_timeout: Duration,
    /// Connections served at once (`server.max_connections`, default 4096); more wait
    /// in the listen backlog.
    pub max_connections: usize,
    /// Webhook requests per second accepted on one path, all senders together
    /// (`server.webhook_rate`, e.g. `500/s`; default unlimited). Beyond it: 429 with
    /// `Retry-After`, nothing stored.
    pub webhook_rate: Option<f64>,
    /// Webhook requests per second accepted from one client address on one path
    /// (`server.webhook_client_rate`; default unlimited).
    pub webhook_client_rate: Option<f64>,
    /// Rejected payloads kept per charter (`server.rejected_keep`, default 10,000); past
    /// it, a rejected body is answered as before but not kept, and counted in
    /// `charter_rejected_dropped_total`.
    pub rejected_keep: u64,
    /// Bounds on unprocessed work (`server.backlog`).
    pub backlog: BacklogSettings,
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

impl Default for NetSettings {
    fn default() -> Self {
        NetSettings {
            allowed_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            insecure_open_admin: false,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            webhook_rate: None,
            webhook_client_rate: None,
            rejected_keep: 10_000,
            backlog: BacklogSettings::default(),
        }
    }
}

/// An address range written as an address or `address/prefix` (CIDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl IpRange {
    /// Parses `10.0.0.1`, `10.0.0.0/8`, `::1` or `fd00::/8`.
    pub fn parse(text: &str) -> Result<IpRange, String> {
        let t = text.trim();
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: std::net::IpAddr = addr.trim().parse().map_err(|_| {
            format!("`{t}` is not an IP address or range; expected e.g. `10.0.0.5` or `10.0.0.0/8`")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{t}`: the prefix length must be 0 to {max}")),
            },
        };
        Ok(IpRange { addr, prefix })
    }

    /// Whether `ip` is inside the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// Worker tuning.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSettings {
    /// How long a claim is held before another worker may take the event over.
    pub lease: Duration,
    /// How often an idle worker looks for work (it is also woken on ingest).
    pub poll_interval: Duration,
    /// Events processed at once across all charters on this node; `0` (the default, the
    /// key unset): chosen by the worker from what its runs wait on.
    pub concurrency: usize,
    /// How long shutdown waits for in-flight work before giving up on it (the lease then
    /// expires and another run picks it up).
    pub shutdown_grace: Duration,
    /// How often the charters' `alerts:` are evaluated (default 15 s).
    pub alert_interval: Duration,
    /// Finished work received longer ago than this is purged (hourly, by every worker
    /// node; see the store's retention). `None` (the default): kept forever.
    pub retention: Option<Duration>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            concurrency: 0,
            shutdown_grace: Duration::from_secs(10),
            alert_interval: Duration::from_secs(15),
            retention: None,
        }
    }
}

/// A reference to a secret; the value is resolved at start-up by the I/O layer and never
/// stored in configuration values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `env:NAME`
    Env(String),
    /// `file:PATH` (relative to the project root unless absolute)
    File(String),
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{p}"),
        }
    }
}

/// An admin API token (used by the admin API; issue 4).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenDef {
    pub name: String,
    pub role: Role,
    pub secret: SecretRef,
    /// Charters this token may see; empty means all.
    pub charters: Vec<String>,
}

/// What a token may do. Ordered: each role may do what the roles before it may, except
/// `Agent`, which only reaches the MCP endpoint (see [`Role::calls_tools`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// An AI agent: lists and calls the MCP tools of its charters; nothing in the admin API
    /// or the web UI.
    Agent,
    Viewer,
    Reviewer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Viewer => "viewer",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }

    /// Whether the role may call MCP tools (run charters' actions): agents and admins. A
    /// viewer may not act, and a reviewer must not be able to start what they then approve.
    pub fn calls_tools(self) -> bool {
        matches!(self, Role::Agent | Role::Admin)
    }
}

/// A named, credentialed way to reach one system.
#[derive(Debug, Clone, PartialEq)]
pub struct Connector {
    pub name: String,
    pub kind: ConnectorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConnectorKind {
    Http(HttpConnector),
    /// Slack: an incoming webhook or a bot token (`chat.postMessage`).
    Slack(SlackConnector),
    /// Email over SMTP.
    Smtp(SmtpConnector),
    /// A PostgreSQL or SQLite database receiving parametrised statements.
    Sql(SqlConnector),
}

impl ConnectorKind {
    /// The `type:` word of this kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            ConnectorKind::Http(_) => "http",
            ConnectorKind::Slack(_) => "slack",
            ConnectorKind::Smtp(_) => "smtp",
            ConnectorKind::Sql(_) => "sql",
        }
    }
}

/// Which `auth:` shape an HTTP connector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Bearer,
    Basic,
    Header,
    OAuth2,
}

impl AuthKind {
    /// The key under `auth:` that selects this kind.
    pub fn word(self) -> &'static str {
        match self {
            AuthKind::Bearer => "bearer",
            AuthKind::Basic => "basic",
            AuthKind::Header => "header",
            AuthKind::OAuth2 => "oauth2",
        }
    }
}

impl HttpAuth {
    /// The shape of this auth.
    pub fn kind(&self) -> AuthKind {
        match self {
            HttpAuth::Bearer(_) => AuthKind::Bearer,
            HttpAuth::Basic { .. } => AuthKind::Basic,
            HttpAuth::Header { .. } => AuthKind::Header,
            HttpAuth::OAuth2 { .. } => AuthKind::OAuth2,
        }
    }
}

/// What `charter check` knows of an HTTP connector preset (`preset:`): the rules that decide
/// whether a connector loads. The defaults a preset fills in at run time (headers, limits)
/// live in `charter_connect::presets`; keeping the rules here means `check` and `serve`
/// cannot disagree on what loads.
#[derive(Debug, Clone, Copy)]
pub struct HttpPresetRule {
    pub name: &'static str,
    /// The base URL it defaults to (`None`: the account's own URL, which `base_url` must give).
    pub default_base_url: Option<&'static str>,
    /// The `auth:` shapes the system accepts.
    pub auth: &'static [AuthKind],
}

/// Every HTTP connector preset.
pub const HTTP_PRESETS: &[HttpPresetRule] = &[
    HttpPresetRule {
        name: "zendesk",
        default_base_url: None,
        auth: &[AuthKind::Basic, AuthKind::Bearer, AuthKind::OAuth2],
    },
    HttpPresetRule {
        name: "hubspot",
        default_base_url: Some("https://api.hubapi.com"),
        auth: &[AuthKind::Bearer, AuthKind::OAuth2],
    },
    HttpPresetRule {
        name: "jira",
        default_base_url: None,
        auth: &[AuthKind::Basic, AuthKind::Bearer, AuthKind::OAuth2],
    },
    HttpPresetRule {
        name: "rest_crm",
        default_base_url: None,
        auth: &[AuthKind::Bearer, AuthKind::Header, AuthKind::OAuth2],
    },
];

/// Consecutive failures that open a connector's circuit, and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerPolicy {
    pub failures: u32,
    pub cool_down: Duration,
}

/// `type: slack`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackConnector {
    pub auth: SlackAuth,
    pub timeout: Duration,
    /// Allow loopback/private addresses (local test endpoints).
    pub allow_private: bool,
    /// The Slack app's signing secret (`signing_secret:`), which verifies interactive
    /// callbacks (the Approve/Reject buttons of notifications). Without it, button presses
    /// are refused.
    pub signing_secret: Option<SecretRef>,
    /// Slack user id (`U024BE7LH`) -> the name of a token in `tokens:`. A listed user decides
    /// from Slack with that token's role and charter scopes, as that reviewer; the audit log
    /// records `slack:<user id>`. Users not listed cannot decide from Slack. With no tokens
    /// in charter.yaml (open mode) the names are reviewer names and every listed user is an
    /// admin, as in the open UI.
    pub users: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SlackAuth {
    /// `webhook_url: env:NAME` — the incoming-webhook URL is itself the secret.
    Webhook(SecretRef),
    /// `token: env:NAME` for `chat.postMessage` under `base_url` (default Slack's API).
    Bot { token: SecretRef, base_url: String },
}

/// `type: smtp`.
#[derive(Debug, Clone, PartialEq)]
pub struct SmtpConnector {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    /// Sender, `Name <addr>` or `addr`.
    pub from: String,
    pub timeout: Duration,
    /// The relay may be a loopback or private address; otherwise the outbound guard
    /// refuses such addresses.
    pub allow_private: bool,
    /// `allowed_domains:` (lower-case): when not empty, every recipient's domain must be one
    /// of these or a subdomain of one; other recipients fail the action before anything is
    /// sent.
    pub allowed_domains: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Implicit TLS (port 465 by default).
    Tls,
    /// STARTTLS required (port 587 by default).
    StartTls,
    /// Plain (port 25 by default): local relays only.
    None,
}

/// `type: sql`.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlConnector {
    pub database: SqlDatabase,
    /// Per-attempt timeout (default 10 s).
    pub timeout: Duration,
    /// A PostgreSQL server may be a loopback or private address (or a Unix socket);
    /// otherwise the outbound guard refuses such addresses. SQLite files are local anyway.
    pub allow_private: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SqlDatabase {
    /// `url: sqlite:path` (relative to the project unless absolute).
    Sqlite(String),
    /// `url: postgres://...` written out, or `url: env:NAME` / `file:PATH` holding one.
    Postgres(TextOrSecret),
}

/// A value written in the file or referenced as a secret.
#[derive(Debug, Clone, PartialEq)]
pub enum TextOrSecret {
    Text(String),
    Secret(SecretRef),
}

/// An HTTP API reached at `base_url`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConnector {
    pub base_url: String,
    /// Headers added to every request (plain values, not secrets).
    pub headers: BTreeMap<String, String>,
    pub auth: Option<HttpAuth>,
    /// Per-attempt timeout (default 10 s).
    pub timeout: Duration,
    /// Allow loopback/private addresses (needed for local systems and tests).
    pub allow_private: bool,
    /// The preset this connector was built from (one of [`HTTP_PRESETS`]).
    pub preset: Option<String>,
    /// Requests per second sent through this connector (per node).
    pub rate_limit: Option<f64>,
    /// Requests in flight at once through this connector (per node).
    pub concurrency: Option<usize>,
    pub circuit_breaker: Option<CircuitBreakerPolicy>,
    /// What a 2xx answer must look like; a mismatch fails the attempt.
    pub response_schema: Option<InputSchema>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HttpAuth {
    Bearer(SecretRef),
    Basic {
        username: String,
        password: SecretRef,
    },
    /// An API key sent in a named header.
    Header {
        name: String,
        value: SecretRef,
    },
    /// OAuth2 client credentials; the token is fetched, cached and refreshed.
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: SecretRef,
        scope: Option<String>,
    },
}

/// `shadow` records what would have run; `approve` (a route's mode only) makes every action
/// wait for a reviewer; `live` executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shadow,
    Approve,
    Live,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Shadow => "shadow",
            Mode::Approve => "approve",
            Mode::Live => "live",
        }
    }

    /// The mode a word names (`shadow`, `approve`, `live`).
    pub fn parse(word: &str) -> Option<Mode> {
        match word {
            "shadow" => Some(Mode::Shadow),
            "approve" => Some(Mode::Approve),
            "live" => Some(Mode::Live),
            _ => None,
        }
    }
}

/// One workflow and its operating boundary.
#[derive(Debug, Clone)]
pub struct Charter {
    pub name: String,
    pub description: String,
    pub owner: String,
    pub maintainer: String,
    /// The connector that owns the record (must be in `uses`).
    pub system_of_record: String,
    pub mode: Mode,
    /// Connectors this charter may touch.
    pub uses: Vec<String>,
    /// Events of this charter processed at once, across all nodes (default 4).
    pub concurrency: usize,
    pub trigger: Trigger,
    pub decide: Option<Decide>,
    /// First match wins.
    pub routes: Vec<Route>,
    /// The allowlist: only these can run.
    pub actions: BTreeMap<String, Action>,
    pub escalation: Escalation,
    pub measure: Measure,
    /// Alerts evaluated by the server (`alerts:`); empty when none are declared.
    pub alerts: Vec<AlertRule>,
    /// Records fetched from connectors before deciding (`context:`), exposed as
    /// `context.<name>`; empty when none are declared.
    pub context: Vec<ContextFetch>,
    /// Passages retrieved from knowledge sources before deciding (`context:` entries with
    /// `retrieve:`), exposed as `context.<name>` like fetched records.
    pub retrieve: Vec<RetrieveStep>,
    /// Relative path of the file the charter came from.
    pub file: String,
    /// Stable hash of the charter file's text; recorded on every run.
    pub version: String,
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

/// How a delivery is recognised as a repeat.
#[derive(Debug, Clone)]
pub enum Dedupe {
    /// A provider header such as `webhook-id` or `X-GitHub-Delivery` (lower-cased).
    Header(String),
    /// A template over `payload`, `headers` and `event`.
    Template(Template),
}

#[derive(Debug, Clone)]
pub struct Decide {
    pub labels: Vec<String>,
    pub stages: Vec<Stage>,
    pub otherwise: Otherwise,
    pub extract: BTreeMap<String, FieldSpec>,
}

#[derive(Debug, Clone)]
pub enum Stage {
    /// Deterministic rules: the first whose `when` holds decides with confidence 1.
    Rules(Vec<Rule>),
    /// The embedded classifier.
    Embedded(EmbeddedStage),
    /// An LLM provider.
    Llm(LlmStage),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub when: Expr,
    pub label: String,
    pub fields: BTreeMap<String, Template>,
}

#[derive(Debug, Clone)]
pub struct EmbeddedStage {
    /// Labelled examples file (CSV `text,label` or JSONL), relative to the project.
    pub examples: String,
    pub accept_above: f64,
}

#[derive(Debug, Clone)]
pub struct LlmStage {
    pub provider: String,
    /// Path of the prompt file, relative to the project.
    pub prompt: String,
    /// The prompt file, compiled.
    pub template: Template,
    pub accept_above: f64,
    /// Providers tried in order when `provider` fails.
    pub fallback: Vec<String>,
    /// Requests per minute for this charter (per node).
    pub rate_limit: Option<u32>,
    pub budget: LlmBudget,
    /// Payload keys (or dotted paths) replaced by `[redacted]` before anything is sent.
    pub redact: Vec<String>,
    /// How long a validated answer is served from the response cache for a byte-identical
    /// request (`cache_ttl:`, default 7 days); zero (`cache_ttl: 0`) turns the cache off.
    pub cache_ttl: Duration,
}

/// A charter's daily LLM budget and what happens when it (or the rate limit) runs out. The
/// day is the UTC day; the server counts the spend in its store, so the budget holds for
/// every node and across restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmBudget {
    /// Prompt plus completion tokens per UTC day.
    pub tokens_per_day: Option<u64>,
    /// In the providers' price unit.
    pub cost_per_day: Option<f64>,
    pub on_exhausted: OnExhausted,
    /// Longest wait for the next window with `on_exhausted: wait` (default 60 s).
    pub max_wait: Duration,
}

impl Default for LlmBudget {
    fn default() -> Self {
        LlmBudget {
            tokens_per_day: None,
            cost_per_day: None,
            on_exhausted: OnExhausted::Escalate,
            max_wait: Duration::from_secs(60),
        }
    }
}

/// What an exhausted rate limit or budget does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExhausted {
    /// Wait (bounded by `max_wait`) for the next window, then escalate if still exhausted.
    Wait,
    /// Escalate at once with the reason.
    Escalate,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Otherwise {
    Escalate,
    Label(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    pub kind: FieldType,
    pub pattern: Option<String>,
    pub enumeration: Vec<String>,
    pub required: bool,
    /// `regex:` / `template:`: filled deterministically when declared (its value wins over
    /// a stage's when it finds one).
    pub extractor: Option<Extractor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Number,
    Integer,
    Boolean,
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

#[derive(Debug, Clone)]
pub struct Action {
    pub name: String,
    pub kind: ActionKind,
    pub approval: Approval,
    pub retry: RetryPolicy,
    /// Measurement event recorded when the action succeeds (one of `measure`'s names).
    pub measure: Option<String>,
    /// `draft:`: a model-written text passed to the action's templates as `draft`.
    pub draft: Option<DraftSpec>,
    /// `mcp_skip_when: true`: an MCP tool call of this action runs even when no route that
    /// lists it has a `when:` holding over the call (by default a call runs only when one
    /// does, evaluated with `decision` null).
    pub mcp_skip_when: bool,
}

#[derive(Debug, Clone)]
pub enum ActionKind {
    Http(HttpAction),
    /// Only records its rendered message.
    Log {
        message: Template,
    },
    /// A Slack message (`message: { channel, text }`).
    Message(MessageAction),
    /// An email (`email: { to, subject, body }`).
    Email(EmailAction),
    /// A parametrised SQL statement (`sql: { statement, params }`).
    Sql(SqlAction),
}

impl ActionKind {
    /// The connector this action goes through, if any.
    pub fn connector(&self) -> Option<&str> {
        match self {
            ActionKind::Http(h) => h.connector.as_deref(),
            ActionKind::Log { .. } => None,
            ActionKind::Message(m) => Some(&m.connector),
            ActionKind::Email(e) => Some(&e.connector),
            ActionKind::Sql(q) => Some(&q.connector),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MessageAction {
    /// A `type: slack` connector.
    pub connector: String,
    /// Required with a bot token; a webhook posts to its own channel.
    pub channel: Option<Template>,
    pub text: Template,
}

#[derive(Debug, Clone)]
pub struct EmailAction {
    /// A `type: smtp` connector.
    pub connector: String,
    /// `to:` as written.
    pub to: Recipients,
    pub subject: Template,
    pub body: Template,
}

/// An email action's `to:`.
#[derive(Debug, Clone)]
pub enum Recipients {
    /// `to: "..."`. Plain text (no template) may list several comma-separated addresses; a
    /// template must render to exactly one address, so a payload cannot add recipients.
    One(Template),
    /// `to: [...]`: each entry renders to exactly one address.
    List(Vec<Template>),
}

#[derive(Debug, Clone)]
pub struct SqlAction {
    /// A `type: sql` connector.
    pub connector: String,
    /// The statement exactly as written; values go only through `params` (`$1`, `$2`, ...).
    pub statement: String,
    /// One template per placeholder, rendered to text (`null` when the template is `~`).
    pub params: Vec<Option<Template>>,
}

#[derive(Debug, Clone)]
pub struct HttpAction {
    /// The connector (must be in `uses`); `None` means `url` is absolute.
    pub connector: Option<String>,
    pub method: String,
    /// Path appended to the connector's base URL, or a full URL without a connector.
    pub target: Template,
    pub headers: BTreeMap<String, Template>,
    pub json: Option<JsonTemplate>,
    /// Per-attempt timeout; `None` uses the connector's.
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Approval {
    Auto,
    Required {
        reviewers: Vec<String>,
        expires: Duration,
        on_expiry: OnExpiry,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExpiry {
    Escalate,
    Reject,
}

/// Retries with exponential backoff and full jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first (default 5).
    pub max_attempts: u32,
    /// Backoff before the second attempt (default 500 ms), doubled each time.
    pub initial_backoff: Duration,
    /// Upper bound on one wait, Retry-After included (default 60 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// Who gets escalated work (a reviewer group or address).
    pub to: String,
    /// Where each new approval and escalation of this charter is announced (`notify:`, one
    /// target or a list); empty when none.
    pub notify: Vec<NotifyTarget>,
}

/// One destination of approval and escalation notifications: `connector` or
/// `connector:where`, the connector being in the charter's `uses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    /// The target as written (`slack:#approvals`); it names the target in the outbox.
    pub spec: String,
    pub connector: String,
    pub channel: NotifyChannel,
}

/// How a notification reaches its target, by connector type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyChannel {
    /// An `http` connector: a JSON `POST` (with a human-readable `text`, the item and a UI
    /// link) to `path` under its base URL.
    Http { path: Option<String> },
    /// A `slack` connector: a Block Kit message with Approve/Reject buttons, to `channel`
    /// (required with a bot token; an incoming webhook has its own channel).
    Slack { channel: Option<String> },
    /// An `smtp` connector: a plain-text email to these recipients (comma-separated).
    Email { to: String },
}

/// Named outcome events, grouped (`success: [ticket_routed]`). At least one is required.
#[derive(Debug, Clone, PartialEq)]
pub struct Measure {
    pub groups: BTreeMap<String, Vec<String>>,
}

impl Measure {
    /// Every declared measurement name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.groups.values().flatten().map(String::as_str)
    }
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
