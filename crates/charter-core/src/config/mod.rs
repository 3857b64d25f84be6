//! Project and charter configuration.
//!
//! Two layers: [`raw`] mirrors the YAML exactly (`deny_unknown_fields`, spans kept for
//! messages) and [`validate`] turns raw values into the typed, checked values below. Loading
//! is pure: the caller reads the project folder into a [`ProjectSource`] (every text file by
//! relative path) and [`load_project`] parses and validates it, returning every problem at
//! once as [`Diagnostics`].

use std::collections::BTreeMap;
use std::sync::Arc;

mod components;
mod diag;
mod key_docs;
mod load;
pub mod raw;
pub mod schema;
mod shape;
mod unknown_keys;
pub mod validate;
mod values;

pub use components::actions::DRAFT_APPROVAL_EXPIRES;
pub use components::actions::effects::{
    EmailAction, HttpAction, MessageAction, Recipients, SqlAction,
};
pub use components::actions::{Action, ActionKind, Approval, Escalation, OnExpiry, RetryPolicy};
pub use components::alerts::{AlertCondition, AlertRule, AlertTarget};
pub use components::backlog::BacklogSettings;
pub use components::charter::Measure;
pub use components::connectors::http::{
    AuthKind, HTTP_PRESETS, HttpAuth, HttpConnector, HttpPresetRule,
};
pub use components::connectors::slack::{SlackAuth, SlackConnector};
pub use components::connectors::smtp::{SmtpConnector, SmtpTls};
pub use components::connectors::sql::{SqlConnector, SqlDatabase, TextOrSecret};
pub use components::connectors::{CircuitBreakerPolicy, Connector, ConnectorKind};
pub use components::decide::{
    Decide, EmbeddedStage, LlmBudget, LlmStage, OnExhausted, Otherwise, Rule, Stage,
};
pub use components::decision::{
    CompiledRegex, ContextFetch, ContextOnError, DraftSpec, Extractor, FieldSpec, FieldType,
};
pub use components::knowledge::{
    CitePolicy, GapTarget, KNOWLEDGE_PRESETS, KnowledgeKind, KnowledgeList, KnowledgePreset,
    KnowledgeSource, RetrieveStep,
};
pub use components::notify::{NotifyChannel, NotifyTarget};
pub use components::providers::{ProviderDef, ProviderType, StructuredMode, TokenPrice};
pub use components::rollout::{DEFAULT_MIN_REVIEWED, DemoteWhen, PromoteWhen, RouteRollout};
pub use components::routes::Route;
pub use components::server::{IpRange, NetSettings, Settings, WorkerSettings};
pub use components::sources::{PollCursor, PollKey, PollTrigger, ScheduleTrigger};
pub use components::tokens::{Role, TokenDef};
pub use components::triggers::{Dedupe, EventTypes, InputSchema, NatsTrigger, Trigger, Webhook};
pub use diag::{Diagnostic, Diagnostics};
pub use load::load_project;

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
