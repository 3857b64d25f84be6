//! The evaluation context shared by routes, rules and templates, and first-match routing.

use serde_json::{Value, json};

use crate::config::Charter;
use crate::expr::ExprError;
use crate::model::{Decision, NewEvent};

/// The values rules, routes and templates see:
/// `payload`, `event` (`id`, `charter`, `source`, `type`, `received_at`, `headers`),
/// `decision` (`label`, `confidence`, `fields`, `stage`, `reason`, or null before deciding)
/// and `context` (records fetched before deciding; empty for now).
pub fn eval_context(event: &NewEvent, decision: Option<&Decision>) -> Value {
    let decision = match decision {
        Some(d) => json!({
            "label": d.label,
            "confidence": d.confidence,
            "fields": d.fields,
            "stage": d.stage,
            "reason": d.reason,
        }),
        None => Value::Null,
    };
    json!({
        "payload": event.payload,
        "event": {
            "id": event.id.to_string(),
            "charter": event.charter,
            "source": event.source,
            "type": event.event_type,
            "received_at": event.received_at,
            "headers": event.headers,
        },
        "headers": event.headers,
        "decision": decision,
        "context": {},
    })
}

/// Index of the first route whose `when` holds, or `None` when no route matches.
pub fn first_matching_route(charter: &Charter, ctx: &Value) -> Result<Option<usize>, ExprError> {
    for (i, route) in charter.routes.iter().enumerate() {
        if route.when.eval_bool(ctx)? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}
