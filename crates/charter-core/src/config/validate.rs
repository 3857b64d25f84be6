//! Turns the raw YAML of a project into validated values, collecting every problem.
//!
//! Each file is deserialized on its own, after every unknown key in it has been reported and
//! removed (so unknown keys never hide the file's other problems; a file that still does not
//! deserialize yields one more diagnostic and the others are still checked), then a semantic
//! pass checks required fields, references between names, expressions, templates, durations
//! and files, keeping the line and column of every value it complains about.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::raw::{
    CHARTER_SHAPE, Entries, Location, MeasureGroups, OneOrList, PROJECT_SHAPE, RawAction,
    RawApproval, RawAuth, RawBudget, RawCharter, RawConnector, RawDecide, RawEmail, RawField,
    RawMessage, RawNats, RawProject, RawProvider, RawRequest, RawRetry, RawRoute, RawRule,
    RawServer, RawSql, RawStage, RawToken, RawTrigger, RawVerify, RawWebhook, S, Scalar, Shape,
    WordOr, strip_unknown_keys,
};
use super::{
    Action, ActionKind, Approval, AuthKind, Charter, CircuitBreakerPolicy, Connector,
    ConnectorKind, Decide, Dedupe, EmailAction, EmbeddedStage, Escalation, EventTypes, FieldSpec,
    FieldType, HTTP_PRESETS, HttpAction, HttpAuth, HttpConnector, HttpPresetRule, InputSchema,
    IpRange, KnowledgeSource, LlmBudget, LlmStage, Measure, MessageAction, Mode, NatsTrigger,
    NetSettings, OnExhausted, OnExpiry, Otherwise, Project, ProjectSource, ProviderDef,
    ProviderType, Recipients, RetryPolicy, Role, Route, Rule, SecretRef, Settings, SlackAuth,
    SlackConnector, SmtpConnector, SmtpTls, SqlAction, SqlConnector, SqlDatabase, Stage,
    StructuredMode, TextOrSecret, TokenDef, TokenPrice, Trigger, Webhook, WorkerSettings,
};
use crate::expr::Expr;
use names::Scope;

mod alerts;
mod backlog;
mod decision;
mod knowledge;
mod names;
mod notify;
mod rollout;
mod sources;
use crate::template::{JsonTemplate, Template};
use crate::verify::{self, GenericHmac, HmacAlgorithm, SignatureEncoding, VerifySpec};

/// An action template using `decision`: (action, place, key).
type ActionUse = (String, Location, String);

/// The project settings file, relative to the project root.
pub const PROJECT_FILE: &str = "charter.yaml";
/// The folder holding one charter per file.
pub const CHARTERS_DIR: &str = "charters/";

/// One problem, at a place in a file. Lines and columns are 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in a project, ordered by file and position; displayed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// How long the default approval of a drafting action (one with `draft:` and no
/// `approval:`) waits for a reviewer before it escalates.
pub const DRAFT_APPROVAL_EXPIRES: Duration = Duration::from_secs(24 * 3600);

/// Parses and validates a whole project: `charter.yaml` and every `charters/*.yaml` (or
/// `.yml`). Pure: it reads only `src`. Returns every problem found, across all files.
pub fn load_project(src: &ProjectSource) -> Result<Project, Diagnostics> {
    let mut diags = Vec::new();

    let project = match src.files.get(PROJECT_FILE) {
        Some(text) => parse_yaml::<RawProject>(PROJECT_FILE, text, &PROJECT_SHAPE, &mut diags)
            .map(|raw| ProjectChecker::new(&mut diags, src).check(raw)),
        None => {
            diags.push(Diagnostic {
                file: PROJECT_FILE.to_string(),
                line: 1,
                column: 1,
                message: "the project has no charter.yaml; every project needs one at its root \
                          (it may be empty, or hold `connectors:`, `server:`, `worker:`, `tokens:`)"
                    .to_string(),
            });
            None
        }
    };
    // Connector names are only known when charter.yaml parsed; otherwise skip those checks.
    let connectors = project.as_ref().map(|p| &p.declared_connectors);
    let connector_types = project.as_ref().map(|p| &p.connector_types);
    let slack_bots = project.as_ref().map(|p| &p.slack_bots);
    let providers = project.as_ref().map(|p| &p.declared_providers);
    let knowledge = project.as_ref().map(|p| &p.declared_knowledge);
    let public_url = project.as_ref().map(|p| p.settings.public_url.as_deref());
    let mut all_charters_parsed = true;

    let mut charters: BTreeMap<String, Arc<Charter>> = BTreeMap::new();
    let mut seen_names: BTreeMap<String, (String, Location)> = BTreeMap::new();
    let mut seen_paths: BTreeMap<String, (String, Location)> = BTreeMap::new();
    // (url, stream, durable) -> the file whose charter consumes through that consumer.
    let mut seen_consumers: BTreeMap<(String, String, String), String> = BTreeMap::new();
    // Charter -> (file, action templates using `decision`), for the MCP check below.
    let mut action_decision_uses: BTreeMap<String, (&str, Vec<ActionUse>)> = BTreeMap::new();
    for (file, text) in charter_files(src) {
        let Some(raw) = parse_yaml::<S<RawCharter>>(file, text, &CHARTER_SHAPE, &mut diags) else {
            all_charters_parsed = false;
            continue;
        };
        let mut checker = CharterChecker {
            file,
            src,
            connectors,
            connector_types,
            slack_bots,
            providers,
            knowledge,
            public_url,
            diags: &mut diags,
            decision_uses: Vec::new(),
            action_decision_uses: Vec::new(),
            context_names: None,
            retrieve_names: BTreeSet::new(),
        };
        let name = raw.value.name.clone();
        let path = raw
            .value
            .trigger
            .as_ref()
            .and_then(|t| t.value.webhook.as_ref())
            .and_then(|w| w.value.path.clone());
        if let Some(name) = &name {
            if let Some((other, _)) = seen_names.get(&name.value) {
                checker.err(
                    name.referenced,
                    format!(
                        "charter name `{}` is already used by {other}; charter names must be unique",
                        name.value
                    ),
                );
            } else {
                seen_names.insert(name.value.clone(), (file.to_string(), name.referenced));
            }
        }
        if let Some(path) = &path {
            if let Some((other, _)) = seen_paths.get(&path.value) {
                checker.err(
                    path.referenced,
                    format!(
                        "webhook path `{}` is already used by {other}; each charter needs its own path",
                        path.value
                    ),
                );
            } else {
                seen_paths.insert(path.value.clone(), (file.to_string(), path.referenced));
            }
        }
        let nats_at = raw
            .value
            .trigger
            .as_ref()
            .and_then(|t| t.value.nats.as_ref())
            .map(|n| n.referenced);
        let checked = checker.check(raw, text);
        let decision_uses = std::mem::take(&mut checker.action_decision_uses);
        if let Some(charter) = checked {
            if !decision_uses.is_empty() {
                action_decision_uses.insert(charter.name.clone(), (file, decision_uses));
            }
            if let (Some(n), Some(at)) = (&charter.trigger.nats, nats_at) {
                let key = (n.url.clone(), n.stream.clone(), n.durable.clone());
                if let Some(other) = seen_consumers.get(&key) {
                    checker.err(
                        at,
                        format!(
                            "durable consumer `{}` on stream `{}` is already used by {other}; each charter needs its own `durable`",
                            n.durable, n.stream
                        ),
                    );
                } else {
                    seen_consumers.insert(key, file.to_string());
                }
            }
            charters
                .entry(charter.name.clone())
                .or_insert_with(|| Arc::new(charter));
        }
    }

    // Token scopes name charters (all of them are known only if every charter file parsed).
    if let Some(p) = &project
        && all_charters_parsed
    {
        for (name, at) in &p.token_scopes {
            if !seen_names.contains_key(name) {
                push(
                    &mut diags,
                    PROJECT_FILE,
                    *at,
                    format!(
                        "token scope names charter `{name}`, which is not defined; expected one of {}",
                        list(seen_names.keys())
                    ),
                );
            }
        }
    }

    // An agent token calls a charter's actions as MCP tools, without a decision: an action
    // template that needs `decision` would fail every such call.
    if let Some(p) = &project {
        for (charter, (file, uses)) in &action_decision_uses {
            let Some(agent) = p.tokens.iter().find(|t| {
                t.role == Role::Agent && (t.charters.is_empty() || t.charters.contains(charter))
            }) else {
                continue;
            };
            for (action, at, key) in uses {
                push(
                    &mut diags,
                    file,
                    *at,
                    format!(
                        "action `{action}`: `{key}` uses `decision`, but agent token `{}` may call this action as an MCP tool, which runs without a decision; use only `payload`, `event`, `headers` and `context` in it, or scope the token to other charters",
                        agent.name
                    ),
                );
            }
        }
    }

    match project {
        Some(p) if diags.is_empty() => Ok(Project {
            settings: p.settings,
            connectors: p.connectors,
            tokens: p.tokens,
            providers: p.providers,
            charters,
            knowledge: p.knowledge,
        }),
        _ => {
            diags.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            Err(Diagnostics(diags))
        }
    }
}

/// The charter files of a project, in path order.
fn charter_files(src: &ProjectSource) -> impl Iterator<Item = (&str, &str)> {
    src.files.iter().filter_map(|(path, text)| {
        let rest = path.strip_prefix(CHARTERS_DIR)?;
        let is_yaml = rest.ends_with(".yaml") || rest.ends_with(".yml");
        (is_yaml && !rest.contains('/')).then_some((path.as_str(), text.as_str()))
    })
}

/// Deserializes one YAML file. Every key `shape` does not know is reported and removed
/// first (serde would stop at the first one and hide the file's other problems); whatever
/// still fails to deserialize (a syntax error, a list where a word belongs) becomes one more
/// diagnostic and the file yields no value.
fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
    shape: &Shape,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let stripped = strip_unknown_keys(text, shape);
    for key in stripped.unknown {
        diags.push(Diagnostic {
            file: file.to_string(),
            line: key.line.max(1),
            column: key.column.max(1),
            message: key.message,
        });
    }
    match serde_saphyr::from_str::<T>(&stripped.text) {
        Ok(v) => Some(v),
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line() as usize, l.column() as usize))
                .unwrap_or((1, 1));
            diags.push(Diagnostic {
                file: file.to_string(),
                line: line.max(1),
                column: column.max(1),
                message: if matches!(e.without_snippet(), serde_saphyr::Error::ExternalMessage { .. }) {
                    format!(
                        "YAML syntax error: {}; check the indentation and that every bracket and quote is closed",
                        yaml_message(&e.without_snippet().to_string())
                    )
                } else {
                    yaml_message(&e.without_snippet().to_string())
                },
            });
            None
        }
    }
}

/// Rewrites serde-saphyr's messages for people: no trailing position (the diagnostic has
/// one), names in backticks, plain words for the parser's terms.
fn yaml_message(raw: &str) -> String {
    let mut msg = match raw.rfind(" at line ") {
        Some(i) if raw[i..].contains(", column ") => raw[..i].to_string(),
        _ => raw.to_string(),
    };
    if let Some(i) = msg.find("expected one of ") {
        let (head, names) = msg.split_at(i + "expected one of ".len());
        let names = names
            .split(", ")
            .map(|n| format!("`{}`", n.trim_matches('`')))
            .collect::<Vec<_>>()
            .join(", ");
        msg = format!("{head}{names}");
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest);
        return format!("`{key}` is given twice; each key may appear once in a mapping");
    }
    let plain = [
        (
            "expected string scalar",
            "expected a single text value here",
        ),
        (
            "expected mapping start",
            "expected a mapping (`key: value` lines) here",
        ),
        (
            "expected sequence start",
            "expected a list (`[a, b]` or `- item` lines) here",
        ),
    ];
    for (from, to) in plain {
        if msg == from {
            return to.to_string();
        }
    }
    msg
}

fn push(diags: &mut Vec<Diagnostic>, file: &str, at: Location, message: String) {
    diags.push(Diagnostic {
        file: file.to_string(),
        line: (at.line() as usize).max(1),
        column: (at.column() as usize).max(1),
        message,
    });
}

/// `a`, `b`, `c` for messages; `(none)` when empty.
fn list<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let v: Vec<String> = names.into_iter().map(|n| format!("`{n}`")).collect();
    if v.is_empty() {
        "(none)".to_string()
    } else {
        v.join(", ")
    }
}

/// The start of a file, for problems with no better place.
fn file_start() -> Location {
    Location::UNKNOWN
}

/// Names of charters, connectors and actions: `[a-z0-9_-]+`.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

// ---------------------------------------------------------------------------------------
// Values shared by both files

/// Parses `500ms`, `30s`, `5m`, `4h`, `1d`, or several in a row (`1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = "expected a duration such as `500ms`, `30s`, `5m`, `4h` or `1d`";
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration; {expected}"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` has no unit; {expected}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("`{s}` is not a duration; {expected}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}` is too large; {expected}"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = rest.split_at(unit_len);
        let millis_per: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{s}` has a number without a unit; {expected}")),
            other => {
                return Err(format!(
                    "unknown duration unit `{other}` in `{s}`; {expected}"
                ));
            }
        };
        let millis = number
            .checked_mul(millis_per)
            .ok_or_else(|| format!("`{s}` is too large; {expected}"))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| format!("`{s}` is too large; {expected}"))?;
        rest = tail.trim_start();
    }
    Ok(total)
}

/// Parses a size: a number of bytes, or a number with `B`, `KB`, `KiB`, `MB`, `MiB`, `GB`,
/// `GiB`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let expected = "expected a number of bytes or a size such as `512KiB`, `1MiB` or `10MB`";
    let s = text.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("`{s}` is not a size; {expected}"));
    }
    let number: u64 = s[..digits]
        .parse()
        .map_err(|_| format!("`{s}` is too large; {expected}"))?;
    let factor: u64 = match s[digits..].trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` in `{s}`; {expected}")),
    };
    number
        .checked_mul(factor)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("`{s}` is too large; {expected}"))
}

/// Parses `env:NAME` or `file:PATH`.
pub fn parse_secret(text: &str) -> Result<SecretRef, String> {
    const EXPECTED: &str = "secrets must be given by reference: env:NAME or file:PATH";
    if let Some(name) = text.strip_prefix("env:") {
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("`env:` needs a variable name; {EXPECTED}"));
        }
        return Ok(SecretRef::Env(name.to_string()));
    }
    if let Some(path) = text.strip_prefix("file:") {
        let path = path.trim();
        if path.is_empty() {
            return Err(format!("`file:` needs a path; {EXPECTED}"));
        }
        return Ok(SecretRef::File(path.to_string()));
    }
    Err(EXPECTED.to_string())
}

/// A rate: `10/s`, `600/m`, `3600/h`, or a plain number of requests per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    const EXPECTED: &str = "expected requests per time unit such as `10/s`, `600/m` or `3600/h`";
    let t = text.trim();
    let (n, per) = match t.split_once('/') {
        Some((n, unit)) => {
            let per = match unit.trim() {
                "s" | "sec" | "second" => 1.0,
                "m" | "min" | "minute" => 60.0,
                "h" | "hour" => 3600.0,
                _ => return Err(format!("`{t}`: unknown unit; {EXPECTED}")),
            };
            (n.trim(), per)
        }
        None => (t, 1.0),
    };
    match n.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v / per),
        _ => Err(format!("`{t}`: {EXPECTED}")),
    }
}

/// Shared checks, writing into one file's diagnostics.
trait Check {
    fn file(&self) -> &str;
    fn diags(&mut self) -> &mut Vec<Diagnostic>;

    fn err(&mut self, at: Location, message: impl Into<String>) {
        let file = self.file().to_string();
        push(self.diags(), &file, at, message.into());
    }

    fn duration(&mut self, v: &S<Scalar>, key: &str) -> Option<Duration> {
        match parse_duration(&v.value.0) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(v.referenced, format!("`{key}`: {e}"));
                None
            }
        }
    }

    /// An optional duration with a default.
    fn duration_or(&mut self, v: &Option<S<Scalar>>, key: &str, default: Duration) -> Duration {
        v.as_ref()
            .map(|v| self.duration(v, key).unwrap_or(default))
            .unwrap_or(default)
    }

    fn secret(&mut self, v: &S<String>, key: &str) -> Option<SecretRef> {
        match parse_secret(&v.value) {
            Ok(s) => Some(s),
            Err(e) => {
                self.err(v.referenced, format!("`{key}`: {e}"));
                None
            }
        }
    }

    /// A required, non-empty text value.
    fn required_text(
        &mut self,
        v: &Option<S<String>>,
        parent: Location,
        key: &str,
        what: &str,
    ) -> Option<String> {
        match v {
            Some(s) if !s.value.trim().is_empty() => Some(s.value.trim().to_string()),
            Some(s) => {
                self.err(s.referenced, format!("`{key}` is empty; expected {what}"));
                None
            }
            None => {
                self.err(parent, format!("missing `{key}`: expected {what}"));
                None
            }
        }
    }

    fn template(&mut self, v: &S<String>, key: &str) -> Option<Template> {
        match Template::parse(&v.value) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(v.referenced, format!("`{key}`: {e}"));
                None
            }
        }
    }

    /// A template that builds a URL: its inserted values are percent-encoded
    /// ([`Template::parse_url`]).
    fn url_template(&mut self, v: &S<String>, key: &str) -> Option<Template> {
        match Template::parse_url(&v.value) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(v.referenced, format!("`{key}`: {e}"));
                None
            }
        }
    }

    fn positive(&mut self, v: &S<i64>, key: &str) -> Option<usize> {
        match usize::try_from(v.value) {
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

    /// `http://` or `https://` followed by a host.
    fn absolute_url(&mut self, v: &S<String>, key: &str) -> Option<String> {
        let s = v.value.trim();
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"));
        match rest {
            Some(r) if !r.is_empty() && !r.starts_with('/') => Some(s.to_string()),
            _ => {
                self.err(
                    v.referenced,
                    format!(
                        "`{key}` is `{s}`; expected an absolute http:// or https:// URL such as `https://api.example.com`"
                    ),
                );
                None
            }
        }
    }

    /// A `base_url` whose host is a literal loopback/private address (or `localhost`)
    /// without `allow_private`: the outbound guard refuses every request to it, so the
    /// connector could never work. Reported at the `base_url`.
    fn reachable_base_url(&mut self, u: &S<String>, connector: &str, allow_private: bool) -> bool {
        if allow_private {
            return true;
        }
        let Some(why) = crate::net::url_host(&u.value).and_then(crate::net::private_host) else {
            return true;
        };
        self.err(
            u.referenced,
            format!(
                "`base_url` is `{}`, whose host is {why}: the outbound guard refuses it, so connector `{connector}` could never be reached; set `allow_private: true` on the connector if it is meant to reach a local service",
                u.value.trim()
            ),
        );
        false
    }

    /// A value from a fixed set of words.
    fn one_of<T: Copy>(&mut self, v: &S<String>, key: &str, options: &[(&str, T)]) -> Option<T> {
        if let Some((_, t)) = options.iter().find(|(w, _)| *w == v.value.trim()) {
            return Some(*t);
        }
        let allowed: Vec<String> = options.iter().map(|(w, _)| format!("`{w}`")).collect();
        self.err(
            v.referenced,
            format!(
                "`{key}` is `{}`; expected one of {}",
                v.value,
                allowed.join(", ")
            ),
        );
        None
    }
}

// ---------------------------------------------------------------------------------------
// charter.yaml

/// What `charter.yaml` yields (plus token scopes, checked once charters are known).
struct ProjectParts {
    settings: Settings,
    connectors: BTreeMap<String, Connector>,
    tokens: Vec<TokenDef>,
    token_scopes: Vec<(String, Location)>,
    /// Every connector name written, valid or not (so charters are not blamed for a broken
    /// connector definition).
    declared_connectors: BTreeSet<String>,
    /// The `type:` written for each connector (valid or not).
    connector_types: BTreeMap<String, String>,
    /// Slack connectors that post with a bot `token:` (chat.postMessage needs a channel).
    slack_bots: BTreeSet<String>,
    providers: BTreeMap<String, ProviderDef>,
    /// Every provider name written, valid or not.
    declared_providers: BTreeSet<String>,
    knowledge: BTreeMap<String, KnowledgeSource>,
    /// Every knowledge source name written, valid or not.
    declared_knowledge: BTreeSet<String>,
}

struct ProjectChecker<'a> {
    diags: &'a mut Vec<Diagnostic>,
    src: &'a ProjectSource,
    /// Token names written in `tokens:` (`None` when there are none), for Slack `users:`.
    token_names: Option<BTreeSet<String>>,
}

impl Check for ProjectChecker<'_> {
    fn file(&self) -> &str {
        PROJECT_FILE
    }
    fn diags(&mut self) -> &mut Vec<Diagnostic> {
        self.diags
    }
}

impl<'a> ProjectChecker<'a> {
    /// `server:`'s exposure settings: allowed hosts, trusted proxies, connection limits,
    /// webhook rates and the rejected-payload cap.
    fn net(&mut self, server: &RawServer) -> NetSettings {
        let d = NetSettings::default();
        let mut net = NetSettings {
            header_timeout: self.duration_or(
                &server.header_timeout,
                "header_timeout",
                d.header_timeout,
            ),
            body_timeout: self.duration_or(&server.body_timeout, "body_timeout", d.body_timeout),
            ..d
        };
        for (key, value) in [
            ("header_timeout", &server.header_timeout),
            ("body_timeout", &server.body_timeout),
        ] {
            if let Some(v) = value
                && parse_duration(&v.value.0).is_ok_and(|d| d.is_zero())
            {
                self.err(
                    v.referenced,
                    format!("`{key}` is 0; expected a duration such as `10s`"),
                );
            }
        }
        for h in server.allowed_hosts.iter().flat_map(|l| l.value.iter()) {
            let host = h.value.trim().to_ascii_lowercase();
            let bare = host.strip_prefix("*.").unwrap_or(&host);
            if host != "*"
                && (bare.is_empty()
                    || bare.contains(['/', ':', '*', ' '])
                    || !bare
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
            {
                self.err(
                    h.referenced,
                    format!(
                        "`allowed_hosts`: `{}` is not a host name; expected a name such as `charter.example.com`, `*.example.com` or `*` (no scheme, port or path)",
                        h.value
                    ),
                );
            } else {
                net.allowed_hosts.push(host);
            }
        }
        for p in server.trusted_proxies.iter().flat_map(|l| l.value.iter()) {
            match IpRange::parse(&p.value) {
                Ok(r) => net.trusted_proxies.push(r),
                Err(e) => self.err(p.referenced, format!("`trusted_proxies`: {e}")),
            }
        }
        if let Some(b) = &server.insecure_open_admin {
            net.insecure_open_admin = b.value;
        }
        if let Some(m) = &server.max_connections {
            net.max_connections = self
                .positive(m, "max_connections")
                .unwrap_or(d.max_connections);
        }
        if let Some(k) = &server.rejected_keep {
            if k.value < 0 {
                self.err(
                    k.referenced,
                    "`rejected_keep` is negative; expected 0 (keep none) or more",
                );
            } else {
                net.rejected_keep = k.value as u64;
            }
        }
        if let Some(b) = &server.backlog {
            net.backlog = self.backlog(&b.value);
        }
        for (key, value, slot) in [
            ("webhook_rate", &server.webhook_rate, &mut net.webhook_rate),
            (
                "webhook_client_rate",
                &server.webhook_client_rate,
                &mut net.webhook_client_rate,
            ),
        ] {
            if let Some(v) = value {
                match parse_rate(&v.value.0) {
                    Ok(r) => *slot = Some(r),
                    Err(e) => self.err(v.referenced, format!("`{key}`: {e}")),
                }
            }
        }
        net
    }

    fn new(diags: &'a mut Vec<Diagnostic>, src: &'a ProjectSource) -> Self {
        ProjectChecker {
            diags,
            src,
            token_names: None,
        }
    }

    fn check(mut self, raw: RawProject) -> ProjectParts {
        let defaults = WorkerSettings::default();
        let mut settings = Settings {
            listen: None,
            store: "charter.db".to_string(),
            body_limit: 1 << 20,
            public_url: None,
            timezone: crate::cron::Zone::utc(),
            worker: defaults.clone(),
            net: NetSettings::default(),
        };
        if let Some(server) = &raw.server {
            let server = &server.value;
            settings.listen = server.listen.as_ref().map(|l| l.value.0.clone());
            if let Some(limit) = &server.body_limit {
                match parse_size(&limit.value.0) {
                    Ok(0) => self.err(
                        limit.referenced,
                        "`body_limit` is 0; expected a size of at least 1 byte",
                    ),
                    Ok(n) => settings.body_limit = n,
                    Err(e) => self.err(limit.referenced, format!("`body_limit`: {e}")),
                }
            }
            if let Some(url) = &server.public_url {
                settings.public_url = self.absolute_url(url, "public_url");
            }
            if let Some(zone) = &server.timezone {
                match crate::cron::Zone::parse(&zone.value) {
                    Ok(z) => settings.timezone = z,
                    Err(e) => self.err(zone.referenced, format!("`timezone`: {e}")),
                }
            }
            settings.net = self.net(server);
        }
        if let Some(store) = &raw.store
            && let Some(s) = self.required_text(
                &Some(store.clone()),
                store.referenced,
                "store",
                "a SQLite file path",
            )
        {
            settings.store = s;
        }
        if let Some(worker) = &raw.worker {
            let w = &worker.value;
            settings.worker.lease = self.duration_or(&w.lease, "lease", defaults.lease);
            settings.worker.poll_interval =
                self.duration_or(&w.poll_interval, "poll_interval", defaults.poll_interval);
            settings.worker.shutdown_grace =
                self.duration_or(&w.shutdown_grace, "shutdown_grace", defaults.shutdown_grace);
            settings.worker.alert_interval =
                self.duration_or(&w.alert_interval, "alert_interval", defaults.alert_interval);
            if let Some(c) = &w.concurrency {
                settings.worker.concurrency = self.positive(c, "concurrency").unwrap_or(1);
            }
            if let Some(r) = &w.retention
                && let Some(d) = self.duration(r, "retention")
            {
                if d < Duration::from_secs(3600) {
                    self.err(
                        r.referenced,
                        "`retention` is shorter than 1h: finished work would be purged minutes after it ended; give at least 1h (90d is common)",
                    );
                } else {
                    settings.worker.retention = Some(d);
                }
            }
        }

        let mut connectors = BTreeMap::new();
        let mut declared_connectors = BTreeSet::new();
        let mut connector_types = BTreeMap::new();
        let mut slack_bots = BTreeSet::new();
        self.token_names = raw
            .tokens
            .as_ref()
            .map(|t| {
                t.value
                    .iter()
                    .filter_map(|t| t.value.name.as_ref().map(|n| n.value.trim().to_string()))
                    .collect::<BTreeSet<_>>()
            })
            .filter(|names| !names.is_empty());
        if let Some(raw_connectors) = raw.connectors {
            for (name, raw) in raw_connectors.value.0 {
                declared_connectors.insert(name.value.clone());
                if let Some(t) = &raw.value.kind {
                    connector_types.insert(name.value.clone(), t.value.trim().to_string());
                    if t.value.trim() == "slack" && raw.value.token.is_some() {
                        slack_bots.insert(name.value.clone());
                    }
                }
                if !valid_name(&name.value) {
                    self.err(
                        name.referenced,
                        format!(
                            "connector name `{}` is not allowed; expected lower-case letters, digits, `-` and `_`",
                            name.value
                        ),
                    );
                }
                if let Some(c) = self.connector(&name, raw) {
                    connectors.insert(name.value.clone(), c);
                }
            }
        }

        let mut tokens = Vec::new();
        let mut token_scopes = Vec::new();
        if let Some(raw_tokens) = raw.tokens {
            for raw in raw_tokens.value {
                for scope in raw.value.charters.iter().flatten() {
                    token_scopes.push((scope.value.clone(), scope.referenced));
                }
                if let Some(t) = self.token(raw) {
                    tokens.push(t);
                }
            }
        }

        let mut providers = BTreeMap::new();
        let mut declared_providers = BTreeSet::new();
        if let Some(raw_providers) = raw.providers {
            for (name, raw) in raw_providers.value.0 {
                declared_providers.insert(name.value.clone());
                if !valid_name(&name.value) {
                    self.err(
                        name.referenced,
                        format!(
                            "provider name `{}` is not allowed; expected lower-case letters, digits, `-` and `_`",
                            name.value
                        ),
                    );
                }
                if let Some(p) = self.provider(&name, raw) {
                    providers.insert(name.value.clone(), p);
                }
            }
        }

        let declared_knowledge = raw
            .knowledge
            .as_ref()
            .map(|k| k.value.0.iter().map(|(n, _)| n.value.clone()).collect())
            .unwrap_or_default();
        let knowledge = self.knowledge_sources(raw.knowledge, &connector_types);

        ProjectParts {
            settings,
            connectors,
            tokens,
            token_scopes,
            declared_connectors,
            connector_types,
            slack_bots,
            providers,
            declared_providers,
            knowledge,
            declared_knowledge,
        }
    }

    fn provider(&mut self, name: &S<String>, raw: S<RawProvider>) -> Option<ProviderDef> {
        let at = raw.referenced;
        let p: RawProvider = raw.value;
        let kind = match &p.kind {
            Some(k) => self.one_of(
                k,
                "type",
                &[
                    ("openai", ProviderType::OpenAi),
                    ("anthropic", ProviderType::Anthropic),
                ],
            ),
            None => {
                self.err(
                    at,
                    "missing `type`: expected `openai` (any OpenAI-compatible server) or `anthropic`",
                );
                None
            }
        };
        let base_url = match (&p.base_url, kind) {
            (Some(u), _) => self.absolute_url(u, "base_url"),
            (None, Some(ProviderType::Anthropic)) => Some("https://api.anthropic.com/v1".into()),
            (None, _) => Some("https://api.openai.com/v1".into()),
        };
        let api_key = match &p.api_key {
            Some(k) => self.secret(k, "api_key").map(Some),
            None => Some(None),
        };
        let model = self.required_text(
            &p.model,
            at,
            "model",
            &format!(
                "the model provider `{}` serves, such as `gpt-4o-mini`",
                name.value
            ),
        );
        let mode = match &p.mode {
            Some(m) => self.one_of(
                m,
                "mode",
                &[
                    ("json_schema", StructuredMode::JsonSchema),
                    ("json_object", StructuredMode::JsonObject),
                    ("ollama", StructuredMode::Ollama),
                ],
            ),
            None => Some(StructuredMode::JsonSchema),
        };
        let api_version = match (&p.api_version, kind) {
            (None, _) => Some(None),
            (Some(v), Some(ProviderType::Anthropic)) => {
                self.err(
                    v.referenced,
                    "`api_version` is Azure OpenAI's; it does not apply to an `anthropic` provider",
                );
                None
            }
            (Some(v), _) => {
                let text = v.value.trim();
                if !text.is_empty()
                    && text
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    Some(Some(text.to_string()))
                } else {
                    self.err(
                        v.referenced,
                        format!(
                            "`api_version` is `{}`; expected an Azure OpenAI API version such as `2024-10-21`",
                            v.value
                        ),
                    );
                    None
                }
            }
        };
        let timeout = self.duration_or(&p.timeout, "timeout", Duration::from_secs(30));
        let max_retries = match &p.max_retries {
            Some(r) => match u32::try_from(r.value) {
                Ok(n) if n <= 10 => Some(n),
                _ => {
                    self.err(
                        r.referenced,
                        format!(
                            "`max_retries` is {}; expected a whole number from 0 to 10",
                            r.value
                        ),
                    );
                    None
                }
            },
            None => Some(3),
        };
        let max_tokens = match &p.max_tokens {
            Some(t) => self
                .positive(t, "max_tokens")
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            None => Some(1024),
        };
        let price = match &p.price {
            None => Some(None),
            Some(pr) => {
                let mut one = |v: &Option<S<f64>>, key: &str| match v {
                    Some(x) if x.value >= 0.0 && x.value.is_finite() => Some(x.value),
                    Some(x) => {
                        self.err(
                            x.referenced,
                            format!("`{key}` is {}; expected a price of 0 or more", x.value),
                        );
                        None
                    }
                    None => {
                        self.err(
                            pr.referenced,
                            format!("missing `{key}`: expected the price per million tokens"),
                        );
                        None
                    }
                };
                let input = one(&pr.value.input_per_mtok, "input_per_mtok");
                let output = one(&pr.value.output_per_mtok, "output_per_mtok");
                Some(Some(TokenPrice {
                    input_per_mtok: input?,
                    output_per_mtok: output?,
                }))
            }
        };
        let failures = match p
            .circuit_breaker
            .as_ref()
            .and_then(|b| b.value.failures.as_ref())
        {
            None => Some(5),
            Some(f) => self
                .positive(f, "failures")
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        };
        let cool_down = match &p.circuit_breaker {
            Some(b) => self.duration_or(&b.value.cool_down, "cool_down", Duration::from_secs(30)),
            None => Duration::from_secs(30),
        };
        Some(ProviderDef {
            name: name.value.clone(),
            kind: kind?,
            base_url: base_url?,
            api_key: api_key?,
            model: model?,
            mode: mode?,
            timeout,
            max_retries: max_retries?,
            max_tokens: max_tokens?,
            price: price?,
            allow_private: p.allow_private.as_ref().is_some_and(|b| b.value),
            api_version: api_version?,
            circuit_breaker: CircuitBreakerPolicy {
                failures: failures?,
                cool_down,
            },
        })
    }

    fn connector(&mut self, name: &S<String>, raw: S<RawConnector>) -> Option<Connector> {
        let at = raw.referenced;
        let raw: RawConnector = raw.value;
        let kind = self.required_text(
            &raw.kind,
            at,
            "type",
            "the connector type: `http`, `slack`, `smtp` or `sql`",
        )?;
        const TYPES: [&str; 4] = ["http", "slack", "smtp", "sql"];
        if !TYPES.contains(&kind.as_str()) {
            let k = raw.kind.as_ref().map(|k| k.referenced).unwrap_or(at);
            self.err(
                k,
                format!(
                    "connector type `{kind}` is not supported; expected one of `http`, `slack`, `smtp`, `sql`"
                ),
            );
            return None;
        }
        // Keys that belong to another connector type are mistakes, said where they are.
        let loc = |v: Option<Location>| v.unwrap_or(at);
        let keys: [(&str, Option<Location>, &[&str]); 23] = [
            (
                "base_url",
                raw.base_url.as_ref().map(|v| v.referenced),
                &["http", "slack"],
            ),
            ("headers", raw.headers.as_ref().map(|_| at), &["http"]),
            ("auth", raw.auth.as_ref().map(|v| v.referenced), &["http"]),
            (
                "allow_private",
                raw.allow_private.as_ref().map(|v| v.referenced),
                &["http", "slack", "smtp", "sql"],
            ),
            (
                "preset",
                raw.preset.as_ref().map(|v| v.referenced),
                &["http"],
            ),
            (
                "rate_limit",
                raw.rate_limit.as_ref().map(|v| v.referenced),
                &["http"],
            ),
            (
                "concurrency",
                raw.concurrency.as_ref().map(|v| v.referenced),
                &["http"],
            ),
            (
                "circuit_breaker",
                raw.circuit_breaker.as_ref().map(|v| v.referenced),
                &["http"],
            ),
            (
                "response_schema",
                raw.response_schema.as_ref().map(|v| v.referenced),
                &["http"],
            ),
            (
                "webhook_url",
                raw.webhook_url.as_ref().map(|v| v.referenced),
                &["slack"],
            ),
            (
                "token",
                raw.token.as_ref().map(|v| v.referenced),
                &["slack"],
            ),
            (
                "signing_secret",
                raw.signing_secret.as_ref().map(|v| v.referenced),
                &["slack"],
            ),
            (
                "users",
                raw.users.as_ref().map(|v| v.referenced),
                &["slack"],
            ),
            ("host", raw.host.as_ref().map(|v| v.referenced), &["smtp"]),
            ("port", raw.port.as_ref().map(|v| v.referenced), &["smtp"]),
            ("tls", raw.tls.as_ref().map(|v| v.referenced), &["smtp"]),
            (
                "username",
                raw.username.as_ref().map(|v| v.referenced),
                &["smtp"],
            ),
            (
                "password",
                raw.password.as_ref().map(|v| v.referenced),
                &["smtp"],
            ),
            ("from", raw.from.as_ref().map(|v| v.referenced), &["smtp"]),
            (
                "allowed_domains",
                raw.allowed_domains.as_ref().map(|v| v.referenced),
                &["smtp"],
            ),
            ("url", raw.url.as_ref().map(|v| v.referenced), &["sql"]),
            (
                "timeout",
                raw.timeout.as_ref().map(|v| v.referenced),
                &["http", "slack", "smtp", "sql"],
            ),
            ("type", None, &[]),
        ];
        let mut foreign = false;
        for (key, place, types) in keys {
            if let Some(place) = place
                && !types.contains(&kind.as_str())
            {
                self.err(
                    loc(Some(place)),
                    format!(
                        "`{key}` is not a setting of a `{kind}` connector (it belongs to {})",
                        types
                            .iter()
                            .map(|t| format!("`{t}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                foreign = true;
            }
        }
        let timeout = self.duration_or(&raw.timeout, "timeout", Duration::from_secs(10));
        let allow_private = raw.allow_private.as_ref().map(|b| b.value).unwrap_or(false);
        let kind = match kind.as_str() {
            "slack" => self.slack(name, at, &raw, timeout, allow_private),
            "smtp" => self.smtp(name, at, &raw, timeout, allow_private),
            "sql" => self.sql(name, at, &raw, timeout, allow_private),
            _ => self.http(name, raw, timeout, allow_private),
        };
        if foreign {
            return None;
        }
        Some(Connector {
            name: name.value.clone(),
            kind: kind?,
        })
    }

    fn http(
        &mut self,
        name: &S<String>,
        raw: RawConnector,
        timeout: Duration,
        allow_private: bool,
    ) -> Option<ConnectorKind> {
        let preset = match &raw.preset {
            None => Some(None),
            Some(p) => match HTTP_PRESETS.iter().find(|r| r.name == p.value.trim()) {
                Some(found) => Some(Some(*found)),
                None => {
                    self.err(
                        p.referenced,
                        format!(
                            "`preset` is `{}`; expected one of {}",
                            p.value,
                            HTTP_PRESETS
                                .iter()
                                .map(|r| format!("`{}`", r.name))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    None
                }
            },
        };
        let base_url = match (&raw.base_url, preset.flatten()) {
            (Some(u), _) => self
                .absolute_url(u, "base_url")
                .filter(|_| self.reachable_base_url(u, &name.value, allow_private)),
            (
                None,
                Some(HttpPresetRule {
                    default_base_url: Some(default),
                    ..
                }),
            ) => Some((*default).to_string()),
            (None, Some(HttpPresetRule { name: p, .. })) => {
                self.err(
                    name.referenced,
                    format!(
                        "connector `{}` (preset `{p}`) has no `base_url`; expected your account's URL, such as `https://acme.{}`",
                        name.value,
                        if p.eq_ignore_ascii_case("jira") { "atlassian.net" } else if p.eq_ignore_ascii_case("zendesk") { "zendesk.com" } else { "example.com" }
                    ),
                );
                None
            }
            (None, None) => {
                if preset.is_some() {
                    self.err(
                        name.referenced,
                        format!(
                            "connector `{}` has no `base_url`; expected the API's root URL such as `https://api.example.com`",
                            name.value
                        ),
                    );
                }
                None
            }
        };
        let headers = raw
            .headers
            .unwrap_or_default()
            .0
            .into_iter()
            .map(|(k, v)| (k.value, v.value.0))
            .collect();
        let auth = match raw.auth {
            Some(a) => {
                let at = a.referenced;
                let auth = self.auth(a);
                if let (Some(Some(given)), Some(Some(rule))) = (&auth, preset) {
                    self.preset_accepts(at, &rule, given.kind());
                }
                auth
            }
            None => Some(None),
        };
        let rate_limit = match &raw.rate_limit {
            None => Some(None),
            Some(r) => match parse_rate(&r.value.0) {
                Ok(per_second) => Some(Some(per_second)),
                Err(e) => {
                    self.err(r.referenced, format!("`rate_limit`: {e}"));
                    None
                }
            },
        };
        let concurrency = match &raw.concurrency {
            None => Some(None),
            Some(c) => self.positive(c, "concurrency").map(Some),
        };
        let circuit_breaker = match &raw.circuit_breaker {
            None => Some(None),
            Some(b) => {
                let failures = match &b.value.failures {
                    None => Some(5),
                    Some(f) => self
                        .positive(f, "failures")
                        .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
                };
                let cool_down =
                    self.duration_or(&b.value.cool_down, "cool_down", Duration::from_secs(30));
                failures.map(|failures| {
                    Some(CircuitBreakerPolicy {
                        failures,
                        cool_down,
                    })
                })
            }
        };
        let response_schema = match &raw.response_schema {
            None => Some(None),
            Some(path) => self.response_schema(path).map(Some),
        };
        Some(ConnectorKind::Http(HttpConnector {
            base_url: base_url?,
            headers,
            auth: auth?,
            timeout,
            allow_private,
            preset: preset?.map(|r| r.name.to_string()),
            rate_limit: rate_limit?,
            concurrency: concurrency?,
            circuit_breaker: circuit_breaker?,
            response_schema: response_schema?,
        }))
    }

    fn response_schema(&mut self, path: &S<String>) -> Option<InputSchema> {
        let file = path.value.trim().trim_start_matches("./").to_string();
        let Some(text) = self.src.files.get(&file) else {
            self.err(
                path.referenced,
                format!("`response_schema` file `{file}` does not exist in the project; expected a JSON schema file such as `schemas/crm-answer.json`"),
            );
            return None;
        };
        let schema: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.err(
                    path.referenced,
                    format!("`response_schema` file `{file}` is not valid JSON: {e}"),
                );
                return None;
            }
        };
        if let Err(e) = jsonschema::validator_for(&schema) {
            self.err(
                path.referenced,
                format!("`response_schema` file `{file}` is not a valid JSON schema: {e}"),
            );
            return None;
        }
        Some(InputSchema { file, schema })
    }

    fn slack(
        &mut self,
        name: &S<String>,
        at: Location,
        raw: &RawConnector,
        timeout: Duration,
        allow_private: bool,
    ) -> Option<ConnectorKind> {
        let auth = match (&raw.webhook_url, &raw.token) {
            (Some(w), None) => {
                if let Some(b) = &raw.base_url {
                    self.err(
                        b.referenced,
                        "`base_url` goes with `token` (chat.postMessage); a webhook URL is complete",
                    );
                    return None;
                }
                SlackAuth::Webhook(self.secret(w, "webhook_url")?)
            }
            (None, Some(t)) => {
                let token = self.secret(t, "token");
                let base_url = match &raw.base_url {
                    Some(u) => self
                        .absolute_url(u, "base_url")
                        .filter(|_| self.reachable_base_url(u, &name.value, allow_private)),
                    None => Some("https://slack.com/api".to_string()),
                };
                SlackAuth::Bot {
                    token: token?,
                    base_url: base_url?,
                }
            }
            (Some(w), Some(_)) => {
                self.err(
                    w.referenced,
                    "give either `webhook_url` (an incoming webhook) or `token` (a bot token for chat.postMessage), not both",
                );
                return None;
            }
            (None, None) => {
                self.err(
                    at,
                    format!(
                        "slack connector `{}` needs `webhook_url: env:SLACK_WEBHOOK` or `token: env:SLACK_BOT_TOKEN`",
                        name.value
                    ),
                );
                return None;
            }
        };
        let tokens = self.token_names.clone();
        let (signing_secret, users) = self.slack_interactive(raw, tokens.as_ref())?;
        Some(ConnectorKind::Slack(SlackConnector {
            auth,
            timeout,
            allow_private,
            signing_secret,
            users,
        }))
    }

    fn smtp(
        &mut self,
        name: &S<String>,
        at: Location,
        raw: &RawConnector,
        timeout: Duration,
        allow_private: bool,
    ) -> Option<ConnectorKind> {
        let host = self.required_text(&raw.host, at, "host", "the SMTP server's host name");
        let tls = match &raw.tls {
            Some(t) => self.one_of(
                t,
                "tls",
                &[
                    ("starttls", SmtpTls::StartTls),
                    ("tls", SmtpTls::Tls),
                    ("none", SmtpTls::None),
                ],
            ),
            None => {
                self.err(
                    at,
                    format!(
                        "smtp connector `{}` has no `tls`; expected `starttls` (port 587), `tls` (port 465) or `none` (a local relay only)",
                        name.value
                    ),
                );
                None
            }
        };
        let port = match &raw.port {
            Some(p) => match u16::try_from(p.value) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    self.err(
                        p.referenced,
                        format!("`port` is {}; expected a port from 1 to 65535", p.value),
                    );
                    None
                }
            },
            None => tls.map(|t| match t {
                SmtpTls::Tls => 465,
                SmtpTls::StartTls => 587,
                SmtpTls::None => 25,
            }),
        };
        let username = raw.username.as_ref().map(|u| u.value.trim().to_string());
        let password = match &raw.password {
            Some(p) => self.secret(p, "password").map(Some),
            None => Some(None),
        };
        if username.is_some() != raw.password.is_some() {
            self.err(
                at,
                "`username` and `password` go together; give both or neither",
            );
            return None;
        }
        let from = match &raw.from {
            Some(f) if f.value.contains('@') => Some(f.value.trim().to_string()),
            Some(f) => {
                self.err(
                    f.referenced,
                    format!(
                        "`from` is `{}`; expected a sender address such as `Charter <charter@acme.example>`",
                        f.value
                    ),
                );
                None
            }
            None => {
                self.err(
                    at,
                    "missing `from`: expected a sender address such as `Charter <charter@acme.example>`",
                );
                None
            }
        };
        let mut allowed_domains = Vec::new();
        let mut domains_ok = true;
        for d in raw.allowed_domains.iter().flat_map(|l| l.value.iter()) {
            let domain = d.value.trim().trim_start_matches('.').to_ascii_lowercase();
            if domain.is_empty() || domain.contains(['@', ' ', ',', '/']) {
                self.err(
                    d.referenced,
                    format!(
                        "`allowed_domains` has `{}`; expected a domain such as `acme.example`",
                        d.value
                    ),
                );
                domains_ok = false;
            } else {
                allowed_domains.push(domain);
            }
        }
        if let Some(h) = &raw.host
            && !allow_private
            && let Some(why) = crate::net::private_host(&h.value)
        {
            self.err(
                h.referenced,
                format!(
                    "`host` is `{}`, {why}: the outbound guard refuses it, so this connector could never send; set `allow_private: true` on connector `{}` if the relay is meant to be local",
                    h.value.trim(),
                    name.value
                ),
            );
            domains_ok = false;
        }
        if !domains_ok {
            return None;
        }
        Some(ConnectorKind::Smtp(SmtpConnector {
            host: host?,
            port: port?,
            tls: tls?,
            username,
            password: password?,
            from: from?,
            timeout,
            allow_private,
            allowed_domains,
        }))
    }

    fn sql(
        &mut self,
        name: &S<String>,
        at: Location,
        raw: &RawConnector,
        timeout: Duration,
        allow_private: bool,
    ) -> Option<ConnectorKind> {
        let Some(url) = &raw.url else {
            self.err(
                at,
                format!(
                    "sql connector `{}` has no `url`; expected `sqlite:path/to.db`, `postgres://user@host/db` or `env:DATABASE_URL`",
                    name.value
                ),
            );
            return None;
        };
        let v = url.value.trim();
        let database = if let Some(path) = v.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            if path.is_empty() {
                self.err(url.referenced, "`url` is `sqlite:` without a file path");
                return None;
            }
            SqlDatabase::Sqlite(path.to_string())
        } else if v.starts_with("postgres://") || v.starts_with("postgresql://") {
            let rest = v.split_once("://").map(|(_, r)| r).unwrap_or_default();
            let userinfo = rest.split('/').next().unwrap_or_default();
            if userinfo
                .rsplit_once('@')
                .is_some_and(|(user, _)| user.contains(':'))
            {
                self.err(
                    url.referenced,
                    "`url` holds a password; secrets are only given by reference: put the URL in an environment variable and write `url: env:DATABASE_URL`",
                );
                return None;
            }
            SqlDatabase::Postgres(TextOrSecret::Text(v.to_string()))
        } else if v.starts_with("env:") || v.starts_with("file:") {
            SqlDatabase::Postgres(TextOrSecret::Secret(self.secret(url, "url")?))
        } else {
            self.err(
                url.referenced,
                format!(
                    "`url` is `{v}`; expected `sqlite:path/to.db`, `postgres://user@host/db`, or `env:NAME` holding a PostgreSQL URL"
                ),
            );
            return None;
        };
        Some(ConnectorKind::Sql(SqlConnector {
            database,
            timeout,
            allow_private,
        }))
    }

    /// `Some(None)`: no auth; `None`: invalid.
    /// Refuses an `auth:` shape the preset's system does not take (the same rule
    /// `charter_connect::presets::apply` enforces at load, so `check` fails first).
    fn preset_accepts(&mut self, at: Location, rule: &HttpPresetRule, given: AuthKind) {
        if rule.auth.contains(&given) {
            return;
        }
        let allowed = rule
            .auth
            .iter()
            .map(|k| format!("`{}`", k.word()))
            .collect::<Vec<_>>()
            .join(", ");
        self.err(
            at,
            format!(
                "`preset: {}` does not accept `{}` auth; use one of {allowed}",
                rule.name,
                given.word()
            ),
        );
    }

    fn auth(&mut self, raw: S<RawAuth>) -> Option<Option<HttpAuth>> {
        let at = raw.referenced;
        let a = raw.value;
        let given = [
            a.bearer.is_some(),
            a.basic.is_some(),
            a.header.is_some(),
            a.oauth2.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            self.err(
                at,
                "`auth` needs exactly one of `bearer: env:NAME`, `basic: { username, password }`, \
                 `header: { name, value }` or `oauth2: { token_url, client_id, client_secret }`",
            );
            return None;
        }
        if let Some(o) = &a.oauth2 {
            let token_url = match &o.value.token_url {
                Some(u) => self.absolute_url(u, "token_url"),
                None => {
                    self.err(
                        o.referenced,
                        "missing `token_url`: expected the OAuth2 token endpoint, such as `https://auth.example.com/oauth/token`",
                    );
                    None
                }
            };
            let client_id = self.required_text(
                &o.value.client_id,
                o.referenced,
                "client_id",
                "the OAuth2 client id",
            );
            let client_secret = match &o.value.client_secret {
                Some(p) => self.secret(p, "client_secret"),
                None => {
                    self.err(
                        o.referenced,
                        "missing `client_secret`: expected env:NAME or file:PATH",
                    );
                    None
                }
            };
            return Some(Some(HttpAuth::OAuth2 {
                token_url: token_url?,
                client_id: client_id?,
                client_secret: client_secret?,
                scope: o.value.scope.as_ref().map(|s| s.value.trim().to_string()),
            }));
        }
        if let Some(b) = &a.bearer {
            return Some(Some(HttpAuth::Bearer(self.secret(b, "bearer")?)));
        }
        if let Some(basic) = &a.basic {
            let username = self.required_text(
                &basic.value.username,
                basic.referenced,
                "username",
                "a user name",
            );
            let password = match &basic.value.password {
                Some(p) => self.secret(p, "password"),
                None => {
                    self.err(
                        basic.referenced,
                        "missing `password`: expected env:NAME or file:PATH",
                    );
                    None
                }
            };
            return Some(Some(HttpAuth::Basic {
                username: username?,
                password: password?,
            }));
        }
        if let Some(h) = &a.header {
            let name = self.required_text(
                &h.value.name,
                h.referenced,
                "name",
                "a header name such as `X-Api-Key`",
            );
            let value = match &h.value.value {
                Some(v) => self.secret(v, "value"),
                None => {
                    self.err(
                        h.referenced,
                        "missing `value`: expected env:NAME or file:PATH",
                    );
                    None
                }
            };
            return Some(Some(HttpAuth::Header {
                name: name?,
                value: value?,
            }));
        }
        None
    }

    fn token(&mut self, raw: S<RawToken>) -> Option<TokenDef> {
        let at = raw.referenced;
        let t = raw.value;
        let name = self.required_text(&t.name, at, "name", "a token name");
        let role = match &t.role {
            Some(r) => self.one_of(
                r,
                "role",
                &[
                    ("agent", Role::Agent),
                    ("viewer", Role::Viewer),
                    ("reviewer", Role::Reviewer),
                    ("admin", Role::Admin),
                ],
            ),
            None => {
                self.err(
                    at,
                    "missing `role`: expected one of `agent`, `viewer`, `reviewer`, `admin`",
                );
                None
            }
        };
        let secret = match &t.secret {
            Some(s) => self.secret(s, "secret"),
            None => {
                self.err(at, "missing `secret`: expected env:NAME or file:PATH");
                None
            }
        };
        Some(TokenDef {
            name: name?,
            role: role?,
            secret: secret?,
            charters: t
                .charters
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.value)
                .collect(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// charters/*.yaml

struct CharterChecker<'a> {
    file: &'a str,
    src: &'a ProjectSource,
    /// `None` when charter.yaml did not parse: connector references are then not checked.
    connectors: Option<&'a BTreeSet<String>>,
    /// Connector name -> `type:` as written; `None` when charter.yaml did not parse.
    connector_types: Option<&'a BTreeMap<String, String>>,
    /// Slack connectors with a bot `token:`; `None` when charter.yaml did not parse.
    slack_bots: Option<&'a BTreeSet<String>>,
    /// `None` when charter.yaml did not parse: provider references are then not checked.
    providers: Option<&'a BTreeSet<String>>,
    /// Knowledge source names; `None` when charter.yaml did not parse.
    knowledge: Option<&'a BTreeSet<String>>,
    /// charter.yaml's `server.public_url`; the outer `None` when charter.yaml did not parse.
    public_url: Option<Option<&'a str>>,
    diags: &'a mut Vec<Diagnostic>,
    /// Templates of the action being checked that use `decision` (place, key).
    decision_uses: Vec<(Location, String)>,
    /// Every action template of the charter that uses `decision`: (action, place, key). An
    /// MCP tool call runs the action without a decision.
    action_decision_uses: Vec<(String, Location, String)>,
    /// The names the charter's `context:` declares (`None` without `context:`): the only
    /// fields of `context` its templates and expressions may read.
    context_names: Option<BTreeSet<String>>,
    /// The names of the charter's `retrieve` context steps (what `draft.cite` may name).
    retrieve_names: BTreeSet<String>,
}

impl Check for CharterChecker<'_> {
    fn file(&self) -> &str {
        self.file
    }
    fn diags(&mut self) -> &mut Vec<Diagnostic> {
        self.diags
    }
}

/// What the rest of a charter's checks need to know about it.
#[derive(Default)]
struct Known {
    uses: BTreeSet<String>,
    labels: Option<BTreeSet<String>>,
    actions: BTreeSet<String>,
    measures: BTreeSet<String>,
}

impl CharterChecker<'_> {
    fn check(&mut self, raw: S<RawCharter>, text: &str) -> Option<Charter> {
        let top = if raw.referenced.line() == 0 {
            file_start()
        } else {
            raw.referenced
        };
        let c = raw.value;

        let name = match &c.name {
            Some(n) if !valid_name(&n.value) => {
                self.err(
                    n.referenced,
                    format!(
                        "charter name `{}` is not allowed; expected lower-case letters, digits, `-` and `_` (for example `support-triage`)",
                        n.value
                    ),
                );
                None
            }
            other => self.required_text(
                other,
                top,
                "name",
                "the charter's name, such as `support-triage`",
            ),
        };
        let description = self.required_text(
            &c.description,
            top,
            "description",
            "one or two sentences saying what this charter does",
        );
        let owner = self.required_text(
            &c.owner,
            top,
            "owner",
            "the person or team accountable for this workflow, such as `ops-lead@acme.example`",
        );
        let maintainer = self.required_text(
            &c.maintainer,
            top,
            "maintainer",
            "who maintains this charter's configuration, such as `integrations@acme.example`",
        );
        let mode = match &c.mode {
            Some(m) => self.one_of(m, "mode", &[("shadow", Mode::Shadow), ("live", Mode::Live)]),
            None => {
                self.err(
                    top,
                    "missing `mode`: expected `shadow` (decide and record only) or `live` (execute actions)",
                );
                None
            }
        };
        let concurrency = match &c.concurrency {
            Some(n) => self.positive(n, "concurrency"),
            None => Some(4),
        };

        let mut known = Known::default();
        let uses = self.uses(&c.uses, top, &mut known);
        let system_of_record = self.system_of_record(&c.system_of_record, top, &known);

        // Names declared further down are needed by earlier sections.
        if let Some(m) = &c.measure {
            for (_, names) in &m.value.0 {
                for n in names.iter().flat_map(|n| n.value.iter()) {
                    known.measures.insert(n.value.clone());
                }
            }
        }
        if let Some(a) = &c.actions {
            known.actions = a.value.0.iter().map(|(k, _)| k.value.clone()).collect();
        }
        self.context_names = c.context.as_ref().map(|ctx| {
            ctx.value
                .0
                .iter()
                .map(|(k, _)| k.value.trim().to_string())
                .collect()
        });
        self.retrieve_names = c
            .context
            .as_ref()
            .map(|ctx| {
                ctx.value
                    .0
                    .iter()
                    .filter(|(_, v)| v.value.retrieve.is_some())
                    .map(|(k, _)| k.value.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(d) = &c.decide
            && let Some(labels) = &d.value.labels
        {
            known.labels = Some(labels.value.iter().map(|l| l.value.clone()).collect());
        }

        let trigger = match c.trigger {
            Some(t) => self.trigger(t, name.as_deref(), &known),
            None => {
                self.err(
                    top,
                    "missing `trigger`: expected where events come from, such as \
                     `trigger: { webhook: { path: /hooks/x, verify: ... } }`",
                );
                None
            }
        };
        let decide = match c.decide {
            Some(d) => self.decide(d, &known).map(Some),
            None => Some(None),
        };
        let routes = match c.routes {
            Some(r) => self.routes(r, &known),
            None => {
                self.err(
                    top,
                    "missing `routes`: expected at least one `- when: <condition>` with `do: [action, ...]`",
                );
                None
            }
        };
        let actions = match c.actions {
            Some(a) => self.actions(a, &known),
            None => {
                self.err(
                    top,
                    "missing `actions`: expected the allowlist of actions this charter may take",
                );
                None
            }
        };
        let escalation = match c.escalation {
            Some(e) => {
                let at = e.referenced;
                let to = self.required_text(
                    &e.value.to,
                    at,
                    "to",
                    "who receives escalated work, such as `support-leads`",
                );
                let notify = self.notify_targets(e.value.notify, &known);
                to.zip(notify).map(|(to, notify)| Escalation { to, notify })
            }
            None => {
                self.err(
                    top,
                    "missing `escalation`: expected who takes over when the charter cannot decide, \
                     such as `escalation: { to: support-leads }`",
                );
                None
            }
        };
        let measure = match c.measure {
            Some(m) => self.measure(m),
            None => {
                self.err(
                    top,
                    "missing `measure`: expected at least one named outcome, such as \
                     `measure: { success: [ticket_routed] }`",
                );
                None
            }
        };

        let alerts = self.alerts(c.alerts);
        let context = self.context(c.context, &known);
        let (context, retrieve) = match context {
            Some((c, r)) => (Some(c), Some(r)),
            None => (None, None),
        };

        let digest = Sha256::digest(text.as_bytes());
        let version: String = hex::encode(digest).chars().take(16).collect();
        Some(Charter {
            name: name?,
            description: description?,
            owner: owner?,
            maintainer: maintainer?,
            system_of_record: system_of_record?,
            mode: mode?,
            uses: uses?,
            concurrency: concurrency?,
            trigger: trigger?,
            decide: decide?,
            routes: routes?,
            actions: actions?,
            escalation: escalation?,
            measure: measure?,
            alerts: alerts?,
            context: context?,
            retrieve: retrieve?,
            file: self.file.to_string(),
            version,
        })
    }

    fn uses(
        &mut self,
        raw: &Option<S<Vec<S<String>>>>,
        top: Location,
        known: &mut Known,
    ) -> Option<Vec<String>> {
        let Some(uses) = raw else {
            self.err(
                top,
                "missing `uses`: expected the list of connectors this charter may touch, such as `uses: [helpdesk]`",
            );
            return None;
        };
        if uses.value.is_empty() {
            self.err(
                uses.referenced,
                "`uses` is empty; expected at least the connector named in `system_of_record`",
            );
            return None;
        }
        let mut ok = true;
        let mut out = Vec::new();
        for u in &uses.value {
            if let Some(connectors) = self.connectors
                && !connectors.contains(&u.value)
            {
                self.err(
                    u.referenced,
                    format!(
                        "connector `{}` is not defined in charter.yaml; expected one of {}",
                        u.value,
                        list(connectors.iter())
                    ),
                );
                ok = false;
            }
            known.uses.insert(u.value.clone());
            if !out.contains(&u.value) {
                out.push(u.value.clone());
            }
        }
        ok.then_some(out)
    }

    fn system_of_record(
        &mut self,
        raw: &Option<S<String>>,
        top: Location,
        known: &Known,
    ) -> Option<String> {
        let sor = self.required_text(
            raw,
            top,
            "system_of_record",
            "the connector that owns the record this charter works on",
        )?;
        if !known.uses.contains(&sor) {
            let at = raw.as_ref().map(|r| r.referenced).unwrap_or(top);
            self.err(
                at,
                format!(
                    "system_of_record `{sor}` is not in this charter's `uses` list; expected one of {}",
                    list(&known.uses)
                ),
            );
            return None;
        }
        Some(sor)
    }

    fn trigger(
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

    fn input_schema(&mut self, path: &S<String>) -> Option<InputSchema> {
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

    fn nats(&mut self, raw: S<RawNats>, charter: Option<&str>) -> Option<NatsTrigger> {
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
    fn nats_name(
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

    fn webhook(&mut self, raw: S<RawWebhook>) -> Option<Webhook> {
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

    /// `path` is the webhook's path (when valid): HubSpot signs the full URL.
    fn verify(
        &mut self,
        raw: S<WordOr<RawVerify>>,
        path: Option<&str>,
    ) -> Option<(VerifySpec, Vec<SecretRef>)> {
        let at = raw.referenced;
        const PRESETS: &str = "`standard-webhooks`, `stripe`, `github`, `slack`, `shopify`, `zendesk`, \
                               `hubspot-v3`, `hmac`, `none`";
        let v = match raw.value {
            WordOr::Word(w) if w == "none" => return Some((VerifySpec::None, Vec::new())),
            WordOr::Word(w) => {
                self.err(
                    at,
                    format!(
                        "`verify: {w}` is not understood; expected `verify: none` or a mapping with a `preset` \
                         (one of {PRESETS}) and a `secret`"
                    ),
                );
                return None;
            }
            WordOr::Map(v) => v,
        };
        let Some(preset) = &v.preset else {
            self.err(at, format!("missing `preset`: expected one of {PRESETS}"));
            return None;
        };
        let preset_name = preset.value.trim().to_string();
        if ![
            "standard-webhooks",
            "stripe",
            "github",
            "slack",
            "shopify",
            "zendesk",
            "hubspot-v3",
            "hmac",
            "none",
        ]
        .contains(&preset_name.as_str())
        {
            self.err(
                preset.referenced,
                format!("unknown verify preset `{preset_name}`; expected one of {PRESETS}"),
            );
            return None;
        }
        let mut ok = true;
        // Fields of the generic scheme are only meaningful with `preset: hmac`.
        if preset_name != "hmac" {
            for (key, field) in [
                ("header", &v.header),
                ("algorithm", &v.algorithm),
                ("encoding", &v.encoding),
                ("prefix", &v.prefix),
                ("timestamp_header", &v.timestamp_header),
                ("signed", &v.signed),
            ] {
                if let Some(f) = field {
                    self.err(
                        f.referenced,
                        format!("`{key}` only applies to `preset: hmac`; the `{preset_name}` preset fixes it"),
                    );
                    ok = false;
                }
            }
        }
        if preset_name == "none" {
            if let Some(s) = v
                .secret
                .as_ref()
                .map(|s| s.referenced)
                .or(v.secrets.as_ref().map(|s| s.referenced))
            {
                self.err(s, "`preset: none` takes no secret; remove it, or choose a preset that checks signatures");
                return None;
            }
            return ok.then_some((VerifySpec::None, Vec::new()));
        }
        let secrets = match (&v.secret, &v.secrets) {
            (Some(s), None) => self.secret(s, "secret").map(|s| vec![s]),
            (None, Some(list)) if !list.value.is_empty() => {
                let parsed: Vec<Option<SecretRef>> = list
                    .value
                    .iter()
                    .map(|s| self.secret(s, "secrets"))
                    .collect();
                parsed.into_iter().collect()
            }
            (Some(s), Some(_)) => {
                self.err(
                    s.referenced,
                    "give either `secret` or `secrets` (a list, for rotation), not both",
                );
                None
            }
            (None, _) => {
                self.err(
                    at,
                    format!(
                        "missing `secret`: the `{preset_name}` preset needs `secret: env:NAME` (or `secrets: [env:A, env:B]` during rotation)"
                    ),
                );
                None
            }
        };
        let tolerance = match &v.tolerance {
            Some(t) if preset_name == "github" || preset_name == "shopify" => {
                let who = if preset_name == "github" {
                    "GitHub"
                } else {
                    "Shopify"
                };
                self.err(
                    t.referenced,
                    format!(
                        "`tolerance` does not apply to `preset: {preset_name}`: {who} signs no timestamp; remove it"
                    ),
                );
                None
            }
            Some(t) => self.duration(t, "tolerance"),
            None => Some(verify::DEFAULT_TOLERANCE),
        };
        let spec = match preset_name.as_str() {
            "standard-webhooks" => {
                tolerance.map(|tolerance| VerifySpec::StandardWebhooks { tolerance })
            }
            "stripe" => tolerance.map(|tolerance| VerifySpec::Stripe { tolerance }),
            "slack" => tolerance.map(|tolerance| VerifySpec::Slack { tolerance }),
            "github" => tolerance.map(|_| VerifySpec::Github),
            "shopify" => tolerance.map(|_| VerifySpec::Shopify),
            "zendesk" => tolerance.map(|tolerance| VerifySpec::Zendesk { tolerance }),
            "hubspot-v3" => self.hubspot_url(preset.referenced, path).and_then(|url| {
                tolerance.map(|tolerance| VerifySpec::HubspotV3 { tolerance, url })
            }),
            _ => self.generic_hmac(&v, at, tolerance),
        };
        if !ok {
            return None;
        }
        Some((spec?, secrets?))
    }

    /// The URL HubSpot calls: `server.public_url` (without a trailing `/`) and the webhook
    /// path. `None` (with an error at `at`) when charter.yaml sets no public URL; also `None`,
    /// silently, when charter.yaml or the path is broken (reported where they are).
    fn hubspot_url(&mut self, at: Location, path: Option<&str>) -> Option<String> {
        match self.public_url? {
            Some(base) => path.map(|p| format!("{}{p}", base.trim_end_matches('/'))),
            None => {
                self.err(
                    at,
                    "`preset: hubspot-v3` signs the full URL HubSpot calls, so charter.yaml must \
                     set `server.public_url` (such as `https://charter.acme.example`); the \
                     webhook's URL is then that URL followed by its `path`",
                );
                None
            }
        }
    }

    fn generic_hmac(
        &mut self,
        v: &RawVerify,
        at: Location,
        tolerance: Option<Duration>,
    ) -> Option<VerifySpec> {
        let header = self
            .required_text(
                &v.header,
                at,
                "header",
                "the header carrying the signature, such as `X-Signature`",
            )
            .map(|h| h.to_ascii_lowercase());
        let algorithm = match &v.algorithm {
            Some(a) => self.one_of(
                a,
                "algorithm",
                &[
                    ("sha1", HmacAlgorithm::Sha1),
                    ("sha256", HmacAlgorithm::Sha256),
                    ("sha512", HmacAlgorithm::Sha512),
                ],
            ),
            None => Some(HmacAlgorithm::Sha256),
        };
        let encoding = match &v.encoding {
            Some(e) => self.one_of(
                e,
                "encoding",
                &[
                    ("hex", SignatureEncoding::Hex),
                    ("base64", SignatureEncoding::Base64),
                ],
            ),
            None => Some(SignatureEncoding::Hex),
        };
        let timestamp_header = v
            .timestamp_header
            .as_ref()
            .map(|h| h.value.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty());
        let signed = match &v.signed {
            Some(s) if !s.value.contains("{body}") => {
                self.err(
                    s.referenced,
                    format!("`signed` is `{}`; expected a pattern containing `{{body}}`, such as `{{timestamp}}.{{body}}`", s.value),
                );
                None
            }
            Some(s) if s.value.contains("{timestamp}") && timestamp_header.is_none() => {
                self.err(
                    s.referenced,
                    "`signed` uses `{timestamp}` but no `timestamp_header` says where it comes from; add `timestamp_header: X-Timestamp`",
                );
                None
            }
            Some(s) => Some(s.value.clone()),
            None => Some("{body}".to_string()),
        };
        Some(VerifySpec::Hmac(GenericHmac {
            header: header?,
            algorithm: algorithm?,
            encoding: encoding?,
            prefix: v
                .prefix
                .as_ref()
                .map(|p| p.value.clone())
                .filter(|p| !p.is_empty()),
            timestamp_header,
            signed: signed?,
            tolerance: tolerance?,
        }))
    }

    fn decide(&mut self, raw: S<RawDecide>, known: &Known) -> Option<Decide> {
        let at = raw.referenced;
        let d: RawDecide = raw.value;
        let labels = match &d.labels {
            Some(l) if !l.value.is_empty() => {
                let mut out: Vec<String> = Vec::new();
                let mut ok = true;
                for label in &l.value {
                    let v = label.value.trim();
                    if v.is_empty() || v == "escalate" {
                        self.err(
                            label.referenced,
                            format!("label `{v}` is not allowed; expected a non-empty name other than `escalate`"),
                        );
                        ok = false;
                    } else if out.iter().any(|o| o == v) {
                        self.err(
                            label.referenced,
                            format!("label `{v}` is listed twice; expected each label once"),
                        );
                        ok = false;
                    } else {
                        out.push(v.to_string());
                    }
                }
                ok.then_some(out)
            }
            Some(l) => {
                self.err(
                    l.referenced,
                    "`labels` is empty; expected the labels a decision may choose from",
                );
                None
            }
            None => {
                self.err(at, "missing `labels`: expected the labels a decision may choose from, such as `labels: [billing, bug, other]`");
                None
            }
        };
        let stages = match d.stages {
            Some(s) if !s.value.is_empty() => {
                let parsed: Vec<Option<Stage>> = s
                    .value
                    .into_iter()
                    .map(|st| self.stage(st, known))
                    .collect();
                parsed.into_iter().collect::<Option<Vec<_>>>()
            }
            Some(s) => {
                self.err(
                    s.referenced,
                    "`stages` is empty; expected at least one of `rules`, `embedded`, `llm`",
                );
                None
            }
            None => {
                self.err(at, "missing `stages`: expected a list of `rules`, `embedded` or `llm` stages, tried in order");
                None
            }
        };
        let otherwise = match &d.otherwise {
            None => Some(Otherwise::Escalate),
            Some(o) if o.value.trim() == "escalate" => Some(Otherwise::Escalate),
            Some(o) => self.label(o, known, "otherwise").map(Otherwise::Label),
        };
        let mut extract = BTreeMap::new();
        let mut extract_ok = true;
        if let Some(e) = d.extract {
            for (name, field) in e.value.0 {
                match self.field(field) {
                    Some(spec) => {
                        extract.insert(name.value, spec);
                    }
                    None => extract_ok = false,
                }
            }
        }
        Some(Decide {
            labels: labels?,
            stages: stages?,
            otherwise: otherwise?,
            extract: extract_ok.then_some(extract)?,
        })
    }

    /// A label that must be declared in `decide.labels`.
    fn label(&mut self, v: &S<String>, known: &Known, key: &str) -> Option<String> {
        let label = v.value.trim().to_string();
        match &known.labels {
            Some(labels) if labels.contains(&label) => Some(label),
            Some(labels) => {
                let extra = if key == "otherwise" {
                    " or `escalate`"
                } else {
                    ""
                };
                self.err(
                    v.referenced,
                    format!(
                        "{key} label `{label}` is not in `decide.labels`; expected one of {}{extra}",
                        list(labels)
                    ),
                );
                None
            }
            // Missing labels are reported once, on `decide`.
            None => None,
        }
    }

    fn stage(&mut self, raw: S<RawStage>, known: &Known) -> Option<Stage> {
        let at = raw.referenced;
        let s: RawStage = raw.value;
        let given = [s.rules.is_some(), s.embedded.is_some(), s.llm.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given != 1 {
            self.err(
                at,
                "each stage needs exactly one of `rules`, `embedded` or `llm`",
            );
            return None;
        }
        if let Some(rules) = s.rules {
            let parsed: Vec<Option<Rule>> = rules
                .value
                .into_iter()
                .map(|r| self.rule(r, known))
                .collect();
            return parsed
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(Stage::Rules);
        }
        if let Some(e) = s.embedded {
            let at = e.referenced;
            let examples = self.project_file(
                &e.value.examples,
                at,
                "examples",
                "a labelled examples file (CSV `text,label` or JSONL)",
            );
            let accept = self.threshold(&e.value.accept_above, at);
            return Some(Stage::Embedded(EmbeddedStage {
                examples: examples?,
                accept_above: accept?,
            }));
        }
        if let Some(l) = s.llm {
            let at = l.referenced;
            let provider = match &l.value.provider {
                Some(p) => {
                    self.required_text(&Some(p.clone()), at, "provider", "a model provider name")
                }
                None => Some("default".to_string()),
            };
            let prompt = self.project_file(
                &l.value.prompt,
                at,
                "prompt",
                "a prompt template file such as `prompts/triage.md`",
            );
            let template = prompt.as_ref().and_then(|path| {
                let text = self.src.files.get(path).cloned().unwrap_or_default();
                let at = l.value.prompt.as_ref().map(|p| p.referenced).unwrap_or(at);
                match Template::parse(&text) {
                    Ok(t) => {
                        self.check_prompt_names(at, path, &text, Scope::ClassifyPrompt);
                        Some(t)
                    }
                    Err(e) => {
                        self.err(at, format!("prompt file `{path}`: {e}"));
                        None
                    }
                }
            });
            let accept = self.threshold(&l.value.accept_above, at);
            if let Some(p) = &provider {
                let where_ = l
                    .value
                    .provider
                    .as_ref()
                    .map(|v| v.referenced)
                    .unwrap_or(at);
                self.provider_ref(p, where_);
            }
            let mut fallback = Vec::new();
            for f in l.value.fallback.iter().flat_map(|f| f.value.iter()) {
                if self.provider_ref(f.value.trim(), f.referenced) {
                    fallback.push(f.value.trim().to_string());
                }
            }
            let rate_limit = match &l.value.rate_limit {
                Some(r) => self
                    .positive(r, "rate_limit")
                    .map(|n| Some(u32::try_from(n).unwrap_or(u32::MAX))),
                None => Some(None),
            };
            let budget = match &l.value.budget {
                Some(b) => self.budget(b),
                None => Some(LlmBudget::default()),
            };
            let redact = l
                .value
                .redact
                .iter()
                .flat_map(|r| r.value.iter())
                .map(|r| r.value.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect();
            let cache_ttl = match &l.value.cache_ttl {
                Some(t) if t.value.0.trim() == "0" => Some(Duration::ZERO),
                Some(t) => self.duration(t, "cache_ttl"),
                None => Some(Duration::from_secs(7 * 24 * 3600)),
            };
            return Some(Stage::Llm(LlmStage {
                provider: provider?,
                prompt: prompt?,
                template: template?,
                accept_above: accept?,
                fallback,
                rate_limit: rate_limit?,
                budget: budget?,
                redact,
                cache_ttl: cache_ttl?,
            }));
        }
        None
    }

    /// Reports a provider name not declared in charter.yaml; `true` when it is known (or
    /// charter.yaml did not parse, so it cannot be checked).
    fn provider_ref(&mut self, name: &str, at: Location) -> bool {
        match self.providers {
            Some(known) if !known.contains(name) => {
                let expected = if known.is_empty() {
                    "no provider is declared; add one under `providers:` in charter.yaml"
                        .to_string()
                } else {
                    format!("expected one of {}", list(known.iter()))
                };
                self.err(
                    at,
                    format!("provider `{name}` is not declared in charter.yaml; {expected}"),
                );
                false
            }
            _ => true,
        }
    }

    fn budget(&mut self, raw: &S<RawBudget>) -> Option<LlmBudget> {
        let b = &raw.value;
        let tokens_per_day = match &b.tokens_per_day {
            Some(t) => self.positive(t, "tokens_per_day").map(|n| Some(n as u64)),
            None => Some(None),
        };
        let cost_per_day = match &b.cost_per_day {
            Some(c) if c.value > 0.0 && c.value.is_finite() => Some(Some(c.value)),
            Some(c) => {
                self.err(
                    c.referenced,
                    format!("`cost_per_day` is {}; expected an amount above 0", c.value),
                );
                None
            }
            None => Some(None),
        };
        let on_exhausted = match &b.on_exhausted {
            Some(o) => self.one_of(
                o,
                "on_exhausted",
                &[
                    ("wait", OnExhausted::Wait),
                    ("escalate", OnExhausted::Escalate),
                ],
            ),
            None => Some(OnExhausted::Escalate),
        };
        let max_wait = self.duration_or(&b.max_wait, "max_wait", Duration::from_secs(60));
        Some(LlmBudget {
            tokens_per_day: tokens_per_day?,
            cost_per_day: cost_per_day?,
            on_exhausted: on_exhausted?,
            max_wait,
        })
    }

    /// A required file path that must exist in the project.
    fn project_file(
        &mut self,
        v: &Option<S<String>>,
        at: Location,
        key: &str,
        what: &str,
    ) -> Option<String> {
        let path = self.required_text(v, at, key, what)?;
        let path = path.trim_start_matches("./").to_string();
        if !self.src.files.contains_key(&path) {
            let at = v.as_ref().map(|v| v.referenced).unwrap_or(at);
            self.err(
                at,
                format!("`{key}` file `{path}` does not exist in the project; expected {what}"),
            );
            return None;
        }
        Some(path)
    }

    fn threshold(&mut self, v: &Option<S<f64>>, at: Location) -> Option<f64> {
        match v {
            Some(t) if (0.0..=1.0).contains(&t.value) => Some(t.value),
            Some(t) => {
                self.err(
                    t.referenced,
                    format!(
                        "`accept_above` is {}; expected a confidence between 0 and 1, such as 0.85",
                        t.value
                    ),
                );
                None
            }
            None => {
                self.err(at, "missing `accept_above`: expected the confidence (0 to 1) above which this stage decides, such as 0.85");
                None
            }
        }
    }

    fn rule(&mut self, raw: S<RawRule>, known: &Known) -> Option<Rule> {
        let at = raw.referenced;
        let r: RawRule = raw.value;
        let when = self.expr(&r.when, at, "when", Scope::BeforeDecision);
        let label = match &r.label {
            Some(l) => self.label(l, known, "rule"),
            None => {
                self.err(
                    at,
                    "missing `label`: expected the label this rule decides, one of `decide.labels`",
                );
                None
            }
        };
        let mut fields = BTreeMap::new();
        let mut ok = true;
        for (name, value) in r.fields.unwrap_or_default().0 {
            let t = S::new(value.value.0, value.referenced, value.defined);
            match self.scoped_template(&t, &format!("fields.{}", name.value), Scope::BeforeDecision)
            {
                Some(t) => {
                    fields.insert(name.value, t);
                }
                None => ok = false,
            }
        }
        Some(Rule {
            when: when?,
            label: label?,
            fields: ok.then_some(fields)?,
        })
    }

    fn expr(
        &mut self,
        v: &Option<S<Scalar>>,
        at: Location,
        key: &str,
        scope: Scope,
    ) -> Option<Expr> {
        let Some(v) = v else {
            self.err(at, format!("missing `{key}`: expected a condition such as `decision.label == \"billing\"` (or `true`)"));
            return None;
        };
        match Expr::parse(&v.value.0) {
            Ok(e) => {
                let names = names::expr_names(&v.value.0);
                self.check_names(v.referenced, key, &v.value.0, &names, scope)
                    .then_some(e)
            }
            Err(e) => {
                self.err(v.referenced, format!("`{key}`: {e}"));
                None
            }
        }
    }

    fn field(&mut self, raw: S<RawField>) -> Option<FieldSpec> {
        let at = raw.referenced;
        let f: RawField = raw.value;
        let extractor = self.extractor(&f, at);
        let kind = match &f.kind {
            Some(k) => self.one_of(
                k,
                "type",
                &[
                    ("string", FieldType::String),
                    ("number", FieldType::Number),
                    ("integer", FieldType::Integer),
                    ("boolean", FieldType::Boolean),
                ],
            ),
            None => Some(FieldType::String),
        };
        let pattern = match &f.pattern {
            Some(p) => {
                // The pattern is checked with the same regex dialect that validates values.
                let probe = serde_json::json!({ "type": "string", "pattern": p.value });
                if jsonschema::validator_for(&probe).is_err() {
                    self.err(p.referenced, format!("`pattern` `{}` is not a valid regular expression; expected one such as `ORD-[0-9]+`", p.value));
                    None
                } else if kind.is_some_and(|k| k != FieldType::String) {
                    self.err(p.referenced, "`pattern` only applies to `type: string`");
                    None
                } else {
                    Some(Some(p.value.clone()))
                }
            }
            None => Some(None),
        };
        let enumeration = match &f.enumeration {
            Some(e) if e.value.is_empty() => {
                self.err(
                    e.referenced,
                    "`enum` is empty; expected the allowed values, such as `[low, medium, high]`",
                );
                None
            }
            Some(e) => Some(e.value.iter().map(|v| v.value.0.clone()).collect()),
            None => Some(Vec::new()),
        };
        Some(FieldSpec {
            kind: kind?,
            pattern: pattern?,
            enumeration: enumeration?,
            required: f.required.map(|r| r.value).unwrap_or(false),
            extractor: extractor?,
        })
    }

    fn routes(&mut self, raw: S<Vec<S<RawRoute>>>, known: &Known) -> Option<Vec<Route>> {
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

    fn route(&mut self, raw: S<RawRoute>, known: &Known, position: usize) -> Option<Route> {
        let at = raw.referenced;
        let r: RawRoute = raw.value;
        let name = self.route_name(r.name, position);
        let rollout = self.route_rollout(rollout::RawRollout {
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

    fn actions(
        &mut self,
        raw: S<Entries<S<RawAction>>>,
        known: &Known,
    ) -> Option<BTreeMap<String, Action>> {
        if raw.value.0.is_empty() {
            self.err(
                raw.referenced,
                "`actions` is empty; expected at least one action",
            );
            return None;
        }
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (name, action) in raw.value.0 {
            if !valid_name(&name.value) {
                self.err(
                    name.referenced,
                    format!("action name `{}` is not allowed; expected lower-case letters, digits, `-` and `_`", name.value),
                );
                ok = false;
                continue;
            }
            let before = self.decision_uses.len();
            let checked = self.action(&name, action, known);
            let uses: Vec<_> = self.decision_uses.drain(before..).collect();
            for (at, key) in uses {
                self.action_decision_uses
                    .push((name.value.clone(), at, key));
            }
            match checked {
                Some(a) => {
                    out.insert(name.value, a);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn action(&mut self, name: &S<String>, raw: S<RawAction>, known: &Known) -> Option<Action> {
        let a: RawAction = raw.value;
        let n = &name.value;
        let bodies: Vec<(&str, Location)> = [
            ("request", a.request.as_ref().map(|v| v.referenced)),
            ("log", a.log.as_ref().map(|v| v.referenced)),
            ("message", a.message.as_ref().map(|v| v.referenced)),
            ("email", a.email.as_ref().map(|v| v.referenced)),
            ("sql", a.sql.as_ref().map(|v| v.referenced)),
        ]
        .into_iter()
        .filter_map(|(k, at)| at.map(|at| (k, at)))
        .collect();
        let kind = match bodies.as_slice() {
            [] => {
                self.err(
                    name.referenced,
                    format!("action `{n}` does nothing; expected one of `request: {{ method, path, ... }}` (with a `connector`), `message: {{ channel, text }}`, `email: {{ to, subject, body }}`, `sql: {{ statement, params }}` or `log: \"message\"`"),
                );
                None
            }
            [(first, _), (second, at), ..] => {
                self.err(
                    *at,
                    format!(
                        "action `{n}` has both `{first}` and `{second}`; expected exactly one of them"
                    ),
                );
                None
            }
            [(body, _)] => match *body {
                "log" => {
                    if let Some(c) = &a.connector {
                        self.err(
                            c.referenced,
                            format!(
                                "action `{n}` is a `log` action and takes no `connector`; remove it"
                            ),
                        );
                        None
                    } else {
                        a.log
                            .as_ref()
                            .and_then(|l| self.scoped_template(l, "log", Scope::Action))
                            .map(|message| ActionKind::Log { message })
                    }
                }
                "message" => a
                    .message
                    .as_ref()
                    .and_then(|m| self.message(n, &a.connector, m, known))
                    .map(ActionKind::Message),
                "email" => a
                    .email
                    .as_ref()
                    .and_then(|m| self.email(n, &a.connector, m, known))
                    .map(ActionKind::Email),
                "sql" => a
                    .sql
                    .as_ref()
                    .and_then(|m| self.sql(n, &a.connector, m, known))
                    .map(ActionKind::Sql),
                _ => {
                    let wrong_type = a.connector.as_ref().and_then(|c| {
                        let t = self.connector_types.and_then(|m| m.get(&c.value))?;
                        (t != "http").then(|| (c.value.clone(), t.clone(), c.referenced))
                    });
                    if let Some((c, t, at)) = wrong_type {
                        self.err(
                            at,
                            format!("connector `{c}` is a `{t}` connector; a `request` action needs an `http` connector"),
                        );
                        None
                    } else {
                        a.request
                            .as_ref()
                            .and_then(|req| self.request(n, &a.connector, req, known))
                            .map(ActionKind::Http)
                    }
                }
            },
        };
        let approval = match a.approval {
            Some(ap) => self.approval(ap),
            // Drafted text is reviewed by default: any reviewer who sees the charter, within
            // a day, else it escalates. `approval: auto` sends drafts unreviewed.
            None if a.draft.is_some() => Some(Approval::Required {
                reviewers: Vec::new(),
                expires: DRAFT_APPROVAL_EXPIRES,
                on_expiry: OnExpiry::Escalate,
            }),
            None => {
                self.err(
                    name.referenced,
                    format!(
                        "action `{n}` has no `approval`; every action must say how it is approved: \
                         `approval: auto` or `approval: {{ reviewers: [team], expires: 4h, on_expiry: escalate }}`"
                    ),
                );
                None
            }
        };
        let retry = match &a.retry {
            Some(r) => self.retry(r),
            None => Some(RetryPolicy::default()),
        };
        let measure = match &a.measure {
            Some(m) if known.measures.contains(&m.value) => Some(Some(m.value.clone())),
            Some(m) => {
                self.err(
                    m.referenced,
                    format!(
                        "action `{n}` records measurement `{}`, which is not declared under `measure`; expected one of {}",
                        m.value,
                        list_set(&known.measures)
                    ),
                );
                None
            }
            None => Some(None),
        };
        let draft = self.draft(n, &a.draft);
        Some(Action {
            name: n.clone(),
            kind: kind?,
            approval: approval?,
            retry: retry?,
            measure: measure?,
            draft: draft?,
            mcp_skip_when: a.mcp_skip_when.as_ref().is_some_and(|b| b.value),
        })
    }

    /// The connector of a `message`/`email`/`sql` action: present, in `uses`, of type `want`.
    fn typed_connector(
        &mut self,
        action: &str,
        connector: &Option<S<String>>,
        at: Location,
        body: &str,
        want: &str,
        known: &Known,
    ) -> Option<String> {
        let Some(c) = connector else {
            self.err(
                at,
                format!("action `{action}` has `{body}` but no `connector`; add `connector: <a {want} connector>`"),
            );
            return None;
        };
        if !known.uses.contains(&c.value) {
            self.err(
                c.referenced,
                format!(
                    "action `{action}` uses connector `{}`, which is not in this charter's `uses` list; expected one of {}",
                    c.value,
                    list(&known.uses)
                ),
            );
            return None;
        }
        if let Some(t) = self.connector_types.and_then(|m| m.get(&c.value))
            && t != want
        {
            self.err(
                c.referenced,
                format!(
                    "connector `{}` is a `{t}` connector; a `{body}` action needs a `{want}` connector",
                    c.value
                ),
            );
            return None;
        }
        Some(c.value.clone())
    }

    fn message(
        &mut self,
        action: &str,
        connector: &Option<S<String>>,
        raw: &S<RawMessage>,
        known: &Known,
    ) -> Option<MessageAction> {
        let connector =
            self.typed_connector(action, connector, raw.referenced, "message", "slack", known);
        let channel = match &raw.value.channel {
            Some(c) => self.scoped_template(c, "channel", Scope::Action).map(Some),
            None => match &connector {
                Some(c) if self.slack_bots.is_some_and(|b| b.contains(c)) => {
                    self.err(
                        raw.referenced,
                        format!("action `{action}`: connector `{c}` posts with a bot token, which needs a `channel`, such as `channel: \"#support\"`"),
                    );
                    None
                }
                _ => Some(None),
            },
        };
        let text = match &raw.value.text {
            Some(t) => self.scoped_template(t, "text", Scope::Action),
            None => {
                self.err(
                    raw.referenced,
                    "missing `text`: expected the message text (a template)",
                );
                None
            }
        };
        Some(MessageAction {
            connector: connector?,
            channel: channel?,
            text: text?,
        })
    }

    fn email(
        &mut self,
        action: &str,
        connector: &Option<S<String>>,
        raw: &S<RawEmail>,
        known: &Known,
    ) -> Option<EmailAction> {
        let at = raw.referenced;
        let connector = self.typed_connector(action, connector, at, "email", "smtp", known);
        let to = self.recipients(&raw.value.to, at);
        let mut part = |v: &Option<S<String>>, key: &str, what: &str| match v {
            Some(t) => self.scoped_template(t, key, Scope::Action),
            None => {
                self.err(at, format!("missing `{key}`: expected {what}"));
                None
            }
        };
        let subject = part(
            &raw.value.subject,
            "subject",
            "the subject line (a template)",
        );
        let body = part(&raw.value.body, "body", "the plain-text body (a template)");
        Some(EmailAction {
            connector: connector?,
            to: to?,
            subject: subject?,
            body: body?,
        })
    }

    /// An email action's `to:`: one template or a list of them.
    fn recipients(&mut self, to: &Option<S<OneOrList>>, at: Location) -> Option<Recipients> {
        match to {
            None => {
                self.err(
                    at,
                    "missing `to`: expected the recipient, such as `{{ payload.customer.email }}`, or a list of them",
                );
                None
            }
            Some(t) => match &t.value {
                OneOrList::One(one) => self
                    .scoped_template(
                        &S::new(one.clone(), t.referenced, t.defined),
                        "to",
                        Scope::Action,
                    )
                    .map(Recipients::One),
                OneOrList::List(items) if items.is_empty() => {
                    self.err(
                        t.referenced,
                        "`to` is an empty list; expected at least one recipient",
                    );
                    None
                }
                OneOrList::List(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        out.push(self.scoped_template(item, &format!("to[{i}]"), Scope::Action));
                    }
                    out.into_iter()
                        .collect::<Option<Vec<_>>>()
                        .map(Recipients::List)
                }
            },
        }
    }

    fn sql(
        &mut self,
        action: &str,
        connector: &Option<S<String>>,
        raw: &S<RawSql>,
        known: &Known,
    ) -> Option<SqlAction> {
        let at = raw.referenced;
        let connector = self.typed_connector(action, connector, at, "sql", "sql", known);
        let statement = match &raw.value.statement {
            Some(st) if st.value.contains("{{") || st.value.contains("{%") => {
                self.err(
                    st.referenced,
                    "`statement` contains a template; values never go into SQL text: write `$1`, `$2`, ... and list the values under `params`",
                );
                None
            }
            Some(st) if st.value.trim().is_empty() => {
                self.err(
                    st.referenced,
                    "`statement` is empty; expected one SQL statement",
                );
                None
            }
            Some(st) => Some(st.value.trim().to_string()),
            None => {
                self.err(
                    at,
                    "missing `statement`: expected one SQL statement with `$1`, `$2`, ... placeholders, such as `INSERT INTO tickets (id, label) VALUES ($1, $2)`",
                );
                None
            }
        };
        let mut params = Vec::new();
        let mut params_ok = true;
        for (i, p) in raw
            .value
            .params
            .iter()
            .flat_map(|p| p.value.iter())
            .enumerate()
        {
            match p {
                None => params.push(None),
                Some(v) => {
                    let t = S::new(v.value.0.clone(), v.referenced, v.defined);
                    match self.scoped_template(&t, &format!("params[{i}]"), Scope::Action) {
                        Some(t) => params.push(Some(t)),
                        None => params_ok = false,
                    }
                }
            }
        }
        if !params_ok {
            return None;
        }
        Some(SqlAction {
            connector: connector?,
            statement: statement?,
            params,
        })
    }

    fn request(
        &mut self,
        action: &str,
        connector: &Option<S<String>>,
        raw: &S<RawRequest>,
        known: &Known,
    ) -> Option<HttpAction> {
        let at = raw.referenced;
        let r = &raw.value;
        let connector_ok = match connector {
            Some(c) if !known.uses.contains(&c.value) => {
                self.err(
                    c.referenced,
                    format!(
                        "action `{action}` uses connector `{}`, which is not in this charter's `uses` list; expected one of {}",
                        c.value,
                        list(&known.uses)
                    ),
                );
                false
            }
            _ => true,
        };
        let method = match &r.method {
            Some(m) => {
                let upper = S::new(m.value.trim().to_ascii_uppercase(), m.referenced, m.defined);
                self.one_of(
                    &upper,
                    "method",
                    &[
                        ("GET", "GET"),
                        ("POST", "POST"),
                        ("PUT", "PUT"),
                        ("PATCH", "PATCH"),
                        ("DELETE", "DELETE"),
                    ],
                )
                .map(str::to_string)
            }
            None => {
                self.err(
                    at,
                    "missing `method`: expected one of `GET`, `POST`, `PUT`, `PATCH`, `DELETE`",
                );
                None
            }
        };
        let target = match (connector, &r.path, &r.url) {
            (Some(_), Some(p), None) => {
                if p.value.starts_with('/') || p.value.starts_with("{{") {
                    self.scoped_url_template(p, "path", Scope::Action)
                } else {
                    self.err(p.referenced, format!("`path` is `{}`; expected a path starting with `/`, appended to the connector's base_url", p.value));
                    None
                }
            }
            (Some(_), None, Some(u)) => {
                self.err(u.referenced, "`url` is for actions without a connector; with a `connector`, give a `path` relative to its base_url");
                None
            }
            (None, Some(p), None) => {
                self.err(p.referenced, format!("action `{action}` has a `path` but no `connector`; add `connector: <name>` or give an absolute `url`"));
                None
            }
            (None, None, Some(u)) => {
                if u.value.starts_with("http://")
                    || u.value.starts_with("https://")
                    || u.value.starts_with("{{")
                {
                    self.scoped_url_template(u, "url", Scope::Action)
                } else {
                    self.err(
                        u.referenced,
                        format!(
                            "`url` is `{}`; expected an absolute http:// or https:// URL",
                            u.value
                        ),
                    );
                    None
                }
            }
            (_, Some(p), Some(_)) => {
                self.err(
                    p.referenced,
                    "give either `path` (with a connector) or `url` (without one), not both",
                );
                None
            }
            (Some(_), None, None) => {
                self.err(at, "missing `path`: expected the path appended to the connector's base_url, such as `/api/v2/tickets/{{ payload.ticket.id }}`");
                None
            }
            (None, None, None) => {
                self.err(at, "missing `url`: expected an absolute URL, or a `connector` on the action plus a `path`");
                None
            }
        };
        let mut headers = BTreeMap::new();
        let mut headers_ok = true;
        for (name, value) in r.headers.clone().unwrap_or_default().0 {
            let v = S::new(value.value.0, value.referenced, value.defined);
            match self.scoped_template(&v, &format!("headers.{}", name.value), Scope::Action) {
                Some(t) => {
                    headers.insert(name.value, t);
                }
                None => headers_ok = false,
            }
        }
        let json = match &r.json {
            Some(j) => match JsonTemplate::parse(j.value.clone()) {
                Ok(t) => self
                    .check_json_names(j.referenced, "json", &j.value, Scope::Action)
                    .then_some(Some(t)),
                Err(e) => {
                    self.err(j.referenced, format!("`json`: {e}"));
                    None
                }
            },
            None => Some(None),
        };
        let timeout = match &r.timeout {
            Some(t) => self.duration(t, "timeout").map(Some),
            None => Some(None),
        };
        if !connector_ok || !headers_ok {
            return None;
        }
        Some(HttpAction {
            connector: connector.as_ref().map(|c| c.value.clone()),
            method: method?,
            target: target?,
            headers,
            json: json?,
            timeout: timeout?,
        })
    }

    fn approval(&mut self, raw: S<WordOr<RawApproval>>) -> Option<Approval> {
        let at = raw.referenced;
        match raw.value {
            WordOr::Word(w) if w.trim() == "auto" => Some(Approval::Auto),
            WordOr::Word(w) => {
                self.err(
                    at,
                    format!(
                        "`approval: {w}` is not understood; expected `auto` or `{{ reviewers: [team], expires: 4h, on_expiry: escalate }}`"
                    ),
                );
                None
            }
            WordOr::Map(m) => {
                let reviewers = match &m.reviewers {
                    Some(r) if !r.value.is_empty() => {
                        Some(r.value.iter().map(|v| v.value.clone()).collect::<Vec<_>>())
                    }
                    Some(r) => {
                        self.err(r.referenced, "`reviewers` is empty; expected who may approve, such as `[support-leads]`");
                        None
                    }
                    None => {
                        self.err(at, "missing `reviewers`: expected who may approve, such as `reviewers: [support-leads]`");
                        None
                    }
                };
                let expires = match &m.expires {
                    Some(e) => self.duration(e, "expires"),
                    None => Some(Duration::from_secs(24 * 3600)),
                };
                let on_expiry = match &m.on_expiry {
                    Some(o) => self.one_of(
                        o,
                        "on_expiry",
                        &[
                            ("escalate", OnExpiry::Escalate),
                            ("reject", OnExpiry::Reject),
                        ],
                    ),
                    None => Some(OnExpiry::Escalate),
                };
                Some(Approval::Required {
                    reviewers: reviewers?,
                    expires: expires?,
                    on_expiry: on_expiry?,
                })
            }
        }
    }

    fn retry(&mut self, raw: &S<RawRetry>) -> Option<RetryPolicy> {
        let d = RetryPolicy::default();
        let r = &raw.value;
        let attempts = match &r.attempts {
            Some(a) => self
                .positive(a, "attempts")
                .and_then(|n| u32::try_from(n).ok()),
            None => Some(d.max_attempts),
        };
        let initial = match &r.backoff {
            Some(b) => self.duration(b, "backoff"),
            None => Some(d.initial_backoff),
        };
        let max = match &r.max_backoff {
            Some(b) => self.duration(b, "max_backoff"),
            None => Some(d.max_backoff),
        };
        if let (Some(i), Some(m)) = (initial, max)
            && i > m
        {
            let at = r
                .max_backoff
                .as_ref()
                .map(|b| b.referenced)
                .unwrap_or(raw.referenced);
            self.err(
                at,
                "`max_backoff` is shorter than `backoff`; expected max_backoff >= backoff",
            );
            return None;
        }
        Some(RetryPolicy {
            max_attempts: attempts?,
            initial_backoff: initial?,
            max_backoff: max?,
        })
    }

    fn measure(&mut self, raw: S<MeasureGroups>) -> Option<Measure> {
        let mut groups = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut ok = true;
        for (group, names) in raw.value.0 {
            let mut out = Vec::new();
            for n in names.map(|n| n.value).unwrap_or_default() {
                if n.value.trim().is_empty() {
                    self.err(
                        n.referenced,
                        "measurement name is empty; expected a name such as `ticket_routed`",
                    );
                    ok = false;
                } else if !seen.insert(n.value.clone()) {
                    self.err(
                        n.referenced,
                        format!(
                            "measurement `{}` is declared twice; expected each name once",
                            n.value
                        ),
                    );
                    ok = false;
                } else {
                    out.push(n.value);
                }
            }
            groups.insert(group.value, out);
        }
        if seen.is_empty() && ok {
            self.err(raw.referenced, "`measure` declares no names; expected at least one, such as `success: [ticket_routed]`");
            return None;
        }
        ok.then_some(Measure { groups })
    }
}

/// Drops a trailing ` at line N column M` (the diagnostic carries the position).
/// `nats://host[:port]`, possibly several comma-separated.
fn nats_url_ok(url: &str) -> bool {
    url.split(',').all(|u| {
        u.strip_prefix("nats://")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
    })
}

/// Dot-separated non-empty tokens; `*` only as a whole token, `>` only as the last one.
fn nats_subject_ok(subject: &str) -> bool {
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

fn strip_position(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

fn list_set(names: &BTreeSet<String>) -> String {
    list(names.iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(4 * 3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("30").unwrap_err().contains("has no unit"));
        assert!(parse_duration("5 weeks").is_err());
        assert!(
            parse_duration("3y")
                .unwrap_err()
                .contains("unknown duration unit `y`")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(
            parse_size("1TB")
                .unwrap_err()
                .contains("unknown size unit `TB`")
        );
        assert!(parse_size("big").is_err());
    }

    #[test]
    fn secrets() {
        assert_eq!(
            parse_secret("env:TOKEN"),
            Ok(SecretRef::Env("TOKEN".into()))
        );
        assert_eq!(
            parse_secret("file:secrets/k"),
            Ok(SecretRef::File("secrets/k".into()))
        );
        assert_eq!(
            parse_secret("hunter2").unwrap_err(),
            "secrets must be given by reference: env:NAME or file:PATH"
        );
        assert!(parse_secret("env:").is_err());
    }

    #[test]
    fn yaml_messages_are_rewritten() {
        assert_eq!(
            yaml_message(
                "unknown field `bogus`, expected one of connector, approval at line 5, column 5"
            ),
            "unknown field `bogus`, expected one of `connector`, `approval`"
        );
        assert_eq!(
            yaml_message(
                "duplicate mapping key: name, set DuplicateKeyPolicy in Options if acceptable at line 2, column 1"
            ),
            "`name` is given twice; each key may appear once in a mapping"
        );
    }
}
