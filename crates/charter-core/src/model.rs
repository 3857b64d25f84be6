//! Runtime domain model: events, runs, decisions, action attempts.
//!
//! These are the values the store persists and the engine passes around. They carry no
//! behaviour that needs I/O. Times are Unix milliseconds (UTC) so that every backend stores
//! them the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Milliseconds since the Unix epoch, UTC.
pub type UnixMillis = i64;

/// An event as received, ready to be stored. The id is a UUIDv7 so ids sort by arrival.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewEvent {
    pub id: Uuid,
    /// Name of the charter whose trigger received it.
    pub charter: String,
    /// Where it came from: `webhook:/hooks/path`, `cli`, `replay`, ...
    pub source: String,
    /// Optional event type (for example GitHub's `X-GitHub-Event`).
    pub event_type: Option<String>,
    /// Key that identifies a delivery; a second event with the same charter and key is a duplicate.
    pub dedupe_key: Option<String>,
    pub received_at: UnixMillis,
    /// Selected request headers (lower-case names). Never contains signature or auth headers.
    pub headers: BTreeMap<String, String>,
    pub payload: serde_json::Value,
}

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Stored, waiting for a worker (or for its charter to be resumed).
    Pending,
    /// Claimed by a worker under a lease.
    Processing,
    /// Processed to the end (including "no route matched" and shadow runs).
    Done,
    /// Processing ended in an error or a dead-lettered action; replayable.
    Failed,
    /// Waiting for a human: an escalation or an approval.
    Waiting,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::Processing => "processing",
            EventStatus::Done => "done",
            EventStatus::Failed => "failed",
            EventStatus::Waiting => "waiting",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => EventStatus::Pending,
            "processing" => EventStatus::Processing,
            "done" => EventStatus::Done,
            "failed" => EventStatus::Failed,
            "waiting" => EventStatus::Waiting,
            _ => return None,
        })
    }
}

/// A stored event with its current status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventRecord {
    #[serde(flatten)]
    pub event: NewEvent,
    pub status: EventStatus,
    /// Number of runs started for this event (replays and lease recoveries included).
    pub attempts: u32,
    pub updated_at: UnixMillis,
}

/// A payload that failed its charter's input contract. Kept so it can be replayed once the
/// contract is fixed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RejectedPayload {
    pub id: Uuid,
    pub charter: String,
    pub source: String,
    pub received_at: UnixMillis,
    pub headers: BTreeMap<String, String>,
    /// The body as received (UTF-8 lossily decoded if it was not valid UTF-8).
    pub body: String,
    /// One entry per violation: `"/ticket/id: \"x\" is not of type \"integer\""`.
    pub reasons: Vec<String>,
}

/// Which stage produced a decision.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DecisionStage {
    Rule,
    Embedded,
    Llm,
    /// A human decided (an escalation resolved by a reviewer).
    Human,
    /// The charter's `otherwise: <label>` default.
    Default,
    /// No stage decided: the event was escalated and no human has acted yet (the label is
    /// null and the confidence 0 means "nothing decided", not a score).
    None,
}

/// The answer one stage gave while deciding (kept for every stage consulted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageAnswer {
    pub stage: DecisionStage,
    pub label: Option<String>,
    pub confidence: Option<f64>,
    /// Whether this stage's answer was accepted.
    pub accepted: bool,
    pub note: String,
    /// What the stage's model calls used (LLM stages only; absent for the others and for
    /// records written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<StageUsage>,
}

/// What one LLM stage used, summed over its provider requests (repair and fallbacks
/// included).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StageUsage {
    /// Provider requests that got an answer (a cache hit is not one).
    pub calls: u32,
    /// HTTP attempts made, failed ones and retries included.
    pub attempts: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Some of the token counts are estimates (about 4 characters a token) because the
    /// server reported no `usage`.
    #[serde(default)]
    pub tokens_estimated: bool,
    /// In the providers' price unit; 0 without a configured price.
    pub cost: f64,
    /// Wall time of every request, failed attempts, retries and backoff included.
    pub latency_ms: u64,
    /// Personal data replaced in the prompt's free text before it was sent, by kind
    /// (`email`, `phone`, `card`, `iban`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub redacted: BTreeMap<String, u32>,
    /// `hit` when the answer came from the response cache, `miss` when it was asked for,
    /// absent when the cache was not consulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
}

/// Why a decision was handed to a human, as the decision code knows it (never guessed from
/// message text). The code is the escalation's `reason` and the label of
/// `charter_escalations_total`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EscalationReason {
    /// No stage reached its threshold and `otherwise: escalate` applies.
    LowConfidence,
    /// The model's answer failed validation, also after one repair request.
    InvalidOutput,
    /// A required field was left without a valid value.
    MissingField,
    /// The charter's daily LLM budget (tokens or cost) is spent.
    Budget,
    /// The charter's `rate_limit` is reached (or the provider answered 429 on every attempt).
    RateLimited,
    /// The provider could not be reached (connection refused, reset, DNS).
    ProviderUnavailable,
    /// Every attempt timed out.
    Timeout,
    /// The outbound guard refused the provider's address (nothing was sent).
    RefusedAddress,
    /// The provider answered with an HTTP error (other than 429) or an unreadable body.
    ProviderError,
    /// The stage could not be prepared: no usable provider, a prompt that does not render,
    /// limits that cannot be read.
    Configuration,
}

impl EscalationReason {
    /// The code as stored and exported.
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationReason::LowConfidence => "low_confidence",
            EscalationReason::InvalidOutput => "invalid_output",
            EscalationReason::MissingField => "missing_field",
            EscalationReason::Budget => "budget",
            EscalationReason::RateLimited => "rate_limited",
            EscalationReason::ProviderUnavailable => "provider_unavailable",
            EscalationReason::Timeout => "timeout",
            EscalationReason::RefusedAddress => "refused_address",
            EscalationReason::ProviderError => "provider_error",
            EscalationReason::Configuration => "configuration",
        }
    }
}

/// What the decision layer concluded about an event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    pub label: Option<String>,
    pub confidence: f64,
    pub fields: BTreeMap<String, serde_json::Value>,
    pub stage: DecisionStage,
    pub reason: String,
    pub stages: Vec<StageAnswer>,
    /// Set when the decision is an escalation (`label` is `None`): why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationReason>,
}

/// How one run ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Every routed action succeeded (or was already done).
    Completed,
    /// No route matched; recorded, nothing executed.
    NoRoute,
    /// Shadow mode: decided and rendered, nothing executed.
    Shadow,
    /// An action was dead-lettered or the run hit an error.
    Failed,
    /// Handed to a human.
    Escalated,
    /// Stopped at an action that waits for a reviewer's approval.
    AwaitingApproval,
    /// An action's approval was rejected (or expired with `on_expiry: reject`); the run
    /// ended there.
    Rejected,
    /// Cut off before it finished (the process running it was killed or crashed, or lost
    /// its lease): closed when its event was claimed again. Actions it had begun but not
    /// finished are [`ActionStatus::InDoubt`].
    Interrupted,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Completed => "completed",
            RunOutcome::NoRoute => "no_route",
            RunOutcome::Shadow => "shadow",
            RunOutcome::Failed => "failed",
            RunOutcome::Escalated => "escalated",
            RunOutcome::AwaitingApproval => "awaiting_approval",
            RunOutcome::Rejected => "rejected",
            RunOutcome::Interrupted => "interrupted",
        }
    }
}

/// What happened to one action within a run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    Succeeded,
    /// An earlier run already succeeded with the same idempotency key; not executed again.
    AlreadyDone,
    /// Shadow mode: recorded with its rendered parameters, not executed.
    WouldRun,
    /// All attempts failed; the action is dead-lettered.
    DeadLettered,
    /// Parameters could not be rendered (template error); not executed.
    Invalid,
    /// Its approval was rejected or expired; not executed.
    Rejected,
    /// Its intent was recorded but its run was cut off before the outcome was: the request
    /// may or may not have reached the target (with this idempotency key). A later run of
    /// the event sends it again with the same key.
    InDoubt,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::AlreadyDone => "already_done",
            ActionStatus::WouldRun => "would_run",
            ActionStatus::DeadLettered => "dead_lettered",
            ActionStatus::Invalid => "invalid",
            ActionStatus::Rejected => "rejected",
            ActionStatus::InDoubt => "in_doubt",
        }
    }
}

/// One try at executing an action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub started_at: UnixMillis,
    pub duration_ms: u64,
    /// HTTP status when a response came back.
    pub status: Option<u16>,
    /// Short description of the failure (never contains secrets).
    pub error: Option<String>,
    /// Whether this attempt counted as success.
    pub ok: bool,
}

/// An action as executed (or not) by a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionRecord {
    pub action: String,
    pub idempotency_key: String,
    /// Rendered parameters (secrets are never part of them).
    pub params: serde_json::Value,
    pub status: ActionStatus,
    pub attempts: Vec<AttemptRecord>,
}

/// One processing of an event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub id: Uuid,
    pub event_id: Uuid,
    pub charter: String,
    /// Hash of the charter definition the run used.
    pub charter_version: String,
    pub mode: String,
    pub started_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    pub outcome: Option<RunOutcome>,
    pub decision: Option<Decision>,
    /// Index of the route that matched, if any.
    pub route: Option<usize>,
    pub actions: Vec<ActionRecord>,
    pub error: Option<String>,
}
