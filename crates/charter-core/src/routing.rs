//! The evaluation context shared by routes, rules and templates, and first-match routing.

use serde_json::{Map, Value, json};

use crate::config::Charter;
use crate::expr::{Budget, ExprError};
use crate::model::{Decision, NewEvent};

/// The values rules, routes and templates see:
/// `payload`, `event` (`id`, `charter`, `source`, `type`, `received_at`, `headers`),
/// `decision` (`label`, `confidence`, `fields`, `stage`, `reason`, or null before deciding)
/// and `context` (records fetched before deciding; empty for now).
pub fn eval_context(event: &NewEvent, decision: Option<&Decision>) -> Value {
    // Built field by field: `json!` would serialize the payload and headers to copy them,
    // which costs several times a clone.
    let headers: Map<String, Value> = event
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut ev = Map::with_capacity(6);
    ev.insert("id".into(), Value::String(event.id.to_string()));
    ev.insert("charter".into(), Value::String(event.charter.clone()));
    ev.insert("source".into(), Value::String(event.source.clone()));
    ev.insert(
        "type".into(),
        event.event_type.clone().map_or(Value::Null, Value::String),
    );
    ev.insert("received_at".into(), Value::from(event.received_at));
    ev.insert("headers".into(), Value::Object(headers.clone()));
    let mut ctx = Map::with_capacity(5);
    ctx.insert("payload".into(), event.payload.clone());
    ctx.insert("event".into(), Value::Object(ev));
    ctx.insert("headers".into(), Value::Object(headers));
    ctx.insert("decision".into(), decision_value(decision));
    ctx.insert("context".into(), Value::Object(Map::new()));
    Value::Object(ctx)
}

/// The `decision` entry of an evaluation context (null before deciding).
pub fn decision_value(decision: Option<&Decision>) -> Value {
    match decision {
        Some(d) => json!({
            "label": d.label,
            "confidence": d.confidence,
            "fields": d.fields,
            "stage": d.stage,
            "reason": d.reason,
        }),
        None => Value::Null,
    }
}

/// Index of the first route whose `when` holds, or `None` when no route matches; each
/// expression is evaluated within the default [`Budget`].
pub fn first_matching_route(charter: &Charter, ctx: &Value) -> Result<Option<usize>, ExprError> {
    first_matching_route_within(charter, ctx, &Budget::default())
}

/// [`first_matching_route`] with each expression evaluated within `budget`.
pub fn first_matching_route_within(
    charter: &Charter,
    ctx: &Value,
    budget: &Budget,
) -> Result<Option<usize>, ExprError> {
    for (i, route) in charter.routes.iter().enumerate() {
        if route.when.eval_bool_within(ctx, budget)? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::DecisionStage;

    /// The context built field by field is the documented shape, value for value.
    #[test]
    fn the_context_has_the_documented_shape() {
        let event = NewEvent {
            id: uuid::Uuid::now_v7(),
            charter: "support".into(),
            source: "webhook:/hooks/support".into(),
            event_type: None,
            dedupe_key: Some("k1".into()),
            received_at: 1_700_000_000_000,
            headers: BTreeMap::from([("webhook-id".to_string(), "k1".to_string())]),
            payload: json!({"ticket": {"id": 7, "tags": ["a"]}}),
        };
        let decision = Decision {
            label: Some("billing".into()),
            confidence: 0.9,
            fields: BTreeMap::from([("order".to_string(), json!("A-1"))]),
            stage: DecisionStage::Rule,
            reason: "rule 1".into(),
            stages: Vec::new(),
            escalation: None,
        };
        let expected = |decision: Value| {
            json!({
                "payload": {"ticket": {"id": 7, "tags": ["a"]}},
                "event": {
                    "id": event.id.to_string(),
                    "charter": "support",
                    "source": "webhook:/hooks/support",
                    "type": null,
                    "received_at": 1_700_000_000_000_i64,
                    "headers": {"webhook-id": "k1"},
                },
                "headers": {"webhook-id": "k1"},
                "decision": decision,
                "context": {},
            })
        };
        assert_eq!(eval_context(&event, None), expected(Value::Null));
        assert_eq!(
            eval_context(&event, Some(&decision)),
            expected(json!({
                "label": "billing",
                "confidence": 0.9,
                "fields": {"order": "A-1"},
                "stage": "rule",
                "reason": "rule 1",
            }))
        );
        let mut ctx = eval_context(&event, None);
        ctx["decision"] = decision_value(Some(&decision));
        assert_eq!(ctx, eval_context(&event, Some(&decision)));
    }
}
