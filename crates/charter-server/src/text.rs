//! Pure helpers of a run, with no store and no I/O: the text the decision stages read, the
//! context templates see before deciding, and the action an MCP tool call asks for. Other
//! modules (the API, rollout rewrites) import them from here without depending on the
//! worker.

use charter_core::config::Charter;
use charter_core::model::NewEvent;
use charter_core::routing::eval_context;
use serde_json::Value;

/// The prefix of an event's `source` when an MCP tool call stored it.
pub const MCP_SOURCE_PREFIX: &str = "mcp:";
/// The prefix of an event's `event_type` when an MCP tool call stored it (the action follows).
pub const MCP_TYPE_PREFIX: &str = "mcp:";

/// The text the decision stages read: the trigger's `text` template, or the payload as JSON.
pub fn decision_text(charter: &Charter, event: &NewEvent, ctx: &Value) -> String {
    match &charter.trigger.text {
        Some(t) => t.render(ctx).unwrap_or_else(|e| {
            tracing::warn!(charter = %charter.name, error = %e, "trigger text could not be rendered; using the payload");
            event.payload.to_string()
        }),
        None => event.payload.to_string(),
    }
}

/// What templates and expressions of a run see before deciding: the event, no decision
/// yet, and the records fetched by `context:` (as `context`).
pub fn run_context(event: &NewEvent, fetched: Option<&Value>) -> Value {
    let mut ctx = eval_context(event, None);
    if let Some(c) = fetched {
        ctx["context"] = c.clone();
    }
    ctx
}

/// The action an event stored by an MCP tool call asks for (`None` for every other event).
pub fn requested_action(event: &NewEvent) -> Option<&str> {
    if !event.source.starts_with(MCP_SOURCE_PREFIX) {
        return None;
    }
    event.event_type.as_deref()?.strip_prefix(MCP_TYPE_PREFIX)
}
