//! An action's parameters rendered from the run's context (never containing secrets), and
//! the checks they must pass against their connector before the action is gated.

use charter_core::config::{Action, ActionKind, Recipients};
use charter_store::Store;
use serde_json::{Value, json};

use crate::AppState;

/// Render an action's parameters (never containing secrets).
pub(super) fn render_params(action: &Action, ctx: &Value) -> Result<Value, String> {
    match &action.kind {
        ActionKind::Log { message } => Ok(json!({
            "log": message.render(ctx).map_err(|e| e.to_string())?,
        })),
        ActionKind::Http(h) => {
            let target = h.target.render(ctx).map_err(|e| format!("target: {e}"))?;
            let mut headers = serde_json::Map::new();
            for (k, t) in &h.headers {
                headers.insert(
                    k.clone(),
                    Value::String(t.render(ctx).map_err(|e| format!("header {k}: {e}"))?),
                );
            }
            let body = match &h.json {
                Some(j) => j.render(ctx).map_err(|e| format!("json: {e}"))?,
                None => Value::Null,
            };
            Ok(json!({
                "connector": h.connector,
                "method": h.method,
                "target": target,
                "headers": headers,
                "json": body,
            }))
        }
        ActionKind::Message(m) => Ok(json!({
            "connector": m.connector,
            "channel": match &m.channel {
                Some(c) => Value::String(c.render(ctx).map_err(|e| format!("channel: {e}"))?),
                None => Value::Null,
            },
            "text": m.text.render(ctx).map_err(|e| format!("text: {e}"))?,
        })),
        ActionKind::Email(e) => Ok(json!({
            "connector": e.connector,
            "to": render_recipients(&e.to, ctx)?,
            "subject": e.subject.render(ctx).map_err(|err| format!("subject: {err}"))?,
            "body": e.body.render(ctx).map_err(|err| format!("body: {err}"))?,
        })),
        ActionKind::Sql(q) => {
            let mut values = Vec::with_capacity(q.params.len());
            for (i, p) in q.params.iter().enumerate() {
                values.push(match p {
                    Some(t) => {
                        Value::String(t.render(ctx).map_err(|e| format!("params[{i}]: {e}"))?)
                    }
                    None => Value::Null,
                });
            }
            Ok(json!({
                "connector": q.connector,
                "statement": q.statement,
                "params": values,
            }))
        }
    }
}

/// An email's `to:`, rendered: a string for `to: "..."` (as before lists existed, so the
/// idempotency keys of existing charters do not change), a list for `to: [...]`. A
/// templated recipient must render to exactly one address, so a payload value such as
/// `a@example.test, attacker@evil.example` fails the action instead of adding a recipient.
fn render_recipients(to: &Recipients, ctx: &Value) -> Result<Value, String> {
    let one = |t: &charter_core::template::Template, key: &str| -> Result<String, String> {
        let rendered = t.render(ctx).map_err(|e| format!("{key}: {e}"))?;
        if !t.is_literal() {
            charter_connect::email::one_recipient(rendered.trim())
                .map_err(|e| format!("{key}: {e}"))?;
        }
        Ok(rendered)
    };
    Ok(match to {
        Recipients::One(t) => Value::String(one(t, "to")?),
        Recipients::List(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, t)| one(t, &format!("to[{i}]")).map(Value::String))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// The recipients of rendered email parameters, comma-separated (`to` is a string or a
/// list of single addresses).
pub(super) fn recipients_text(to: &Value) -> String {
    match to {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.as_str().unwrap_or_default().to_string(),
    }
}

/// Checks of rendered parameters against their connector that must hold before an action
/// is gated, recorded as would-run or sent: an HTTP target stays under the connector's base
/// URL without dot segments; an email's recipients are in the connector's
/// `allowed_domains`. `Err` is the reason the action fails (nothing is sent).
pub(super) fn preflight<S: Store>(
    state: &AppState<S>,
    action: &Action,
    params: &Value,
) -> Result<(), String> {
    match &action.kind {
        ActionKind::Http(h) => {
            let connector = match &h.connector {
                Some(c) => match state.runtime.connectors.get(c) {
                    Some(rc) => Some(rc),
                    // Reported where the request is prepared.
                    None => return Ok(()),
                },
                None => None,
            };
            let target = params["target"].as_str().unwrap_or_default();
            charter_connect::target_url(connector, target)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        ActionKind::Email(e) => match state.runtime.connections.get(&e.connector).map(|c| &**c) {
            Some(charter_connect::Connection::Smtp(smtp)) => smtp
                .recipients(&recipients_text(&params["to"]))
                .map(|_| ())
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}
