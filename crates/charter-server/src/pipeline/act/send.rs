//! Executing a gated action by kind: a `log` line, an HTTP request, or a message, email or
//! SQL statement through its connector. Every kind but `log` writes its intent durably
//! first, in the same store command that checks the idempotency key against the keys that
//! already succeeded; then the attempts run ([`super::attempts`]).

use charter_connect::{AttemptOutcome, Connection, HttpExecutor};
use charter_core::config::{Action, ActionKind, HttpAction};
use charter_core::model::{ActionRecord, ActionStatus};
use charter_store::{RunWrite, Store};
use serde_json::Value;

use super::ActStep;
use super::attempts::{Channel, with_retries};
use super::render::recipients_text;
use crate::pipeline::run::{RunCtx, RunError};
use crate::pipeline::writes::Intent;

/// Execute `action` with its gated `params` under idempotency key `key`.
pub(super) async fn execute<S: Store>(
    run: &mut RunCtx<'_, S>,
    action: &Action,
    mut record: ActionRecord,
    params: &Value,
    key: &str,
) -> Result<ActStep, RunError> {
    match &action.kind {
        ActionKind::Log { .. } => log(run, action, record, params, key).await,
        ActionKind::Message(_) | ActionKind::Email(_) | ActionKind::Sql(_) => {
            if run.begin_intent(intent(run, action, params, key)).await? == Intent::AlreadyDone {
                run.already_done(&mut record, params);
                return Ok(ActStep::Continue);
            }
            through_connector(run, action, record, params, key).await
        }
        ActionKind::Http(h) => http(run, action, h, record, params, key).await,
    }
}

/// The action's intent (`RunWrite::BeginAction`).
fn intent<S>(run: &RunCtx<'_, S>, action: &Action, params: &Value, key: &str) -> RunWrite {
    RunWrite::BeginAction {
        run_id: run.run_id,
        action: action.name.clone(),
        idempotency_key: key.to_string(),
        params: params.clone(),
    }
}

/// A `log` action: one INFO line. It has no durable intent to fold the key check into, so
/// the key is checked on its own.
async fn log<S: Store>(
    run: &mut RunCtx<'_, S>,
    action: &Action,
    mut record: ActionRecord,
    params: &Value,
    key: &str,
) -> Result<ActStep, RunError> {
    if run.state.store.action_succeeded(key).await? {
        run.already_done(&mut record, params);
        return Ok(ActStep::Continue);
    }
    let (name, charter) = (&action.name, run.charter.clone());
    tracing::info!(event = %run.event.id, charter = %charter.name, action = %name, params = %params, "log action");
    record.status = ActionStatus::Succeeded;
    run.record_action_now(&record, params);
    run.state
        .metrics
        .action_attempt(&charter.name, name, "log", "succeeded", None);
    run.record_measure(action);
    Ok(ActStep::Continue)
}

/// An HTTP request: prepared from the rendered parameters (through its connector's base
/// URL, auth and limits), with the run's trace context, then attempted.
async fn http<S: Store>(
    run: &mut RunCtx<'_, S>,
    action: &Action,
    h: &HttpAction,
    mut record: ActionRecord,
    params: &Value,
    key: &str,
) -> Result<ActStep, RunError> {
    let state = run.state;
    let connector = match &h.connector {
        Some(c) => match state.runtime.connectors.get(c) {
            Some(rc) => Some(rc),
            None => {
                record.status = ActionStatus::Invalid;
                run.record_action_now(&record, params);
                return Ok(ActStep::Failed(format!(
                    "connector `{c}` is not configured"
                )));
            }
        },
        None => None,
    };
    let headers = request_headers(params, run.run_id);
    let body = match &params["json"] {
        Value::Null => None,
        v => Some(v.clone()),
    };
    let target = params["target"].as_str().unwrap_or_default();
    let req =
        match HttpExecutor::prepare(connector, &h.method, target, &headers, body, h.timeout, key) {
            Ok(r) => r,
            Err(e) => {
                record.status = ActionStatus::Invalid;
                run.record_action_now(&record, params);
                return Ok(ActStep::Failed(format!("action `{}`: {e}", action.name)));
            }
        };
    if run.begin_intent(intent(run, action, params, key)).await? == Intent::AlreadyDone {
        run.already_done(&mut record, params);
        return Ok(ActStep::Continue);
    }
    let executor = run.executor;
    // Through the connector's OAuth2 token, limits, breaker and contract.
    let conn = h
        .connector
        .as_deref()
        .and_then(|c| state.runtime.connections.get(c))
        .and_then(|c| c.http());
    let channel = Channel {
        connector: h.connector.as_deref().unwrap_or("-"),
        status_names_failure: true,
    };
    with_retries(run, action, channel, record, || async {
        Ok(match conn {
            Some(conn) => conn.attempt(executor, &req).await,
            None => executor.attempt(&req).await,
        })
    })
    .await
}

/// The request's headers from the rendered parameters, plus the run's W3C trace context
/// for the downstream system (not part of the idempotency key) unless the action sets one.
fn request_headers(params: &Value, run_id: uuid::Uuid) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = params["headers"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
    {
        headers.push(("traceparent".into(), crate::metrics::traceparent(run_id)));
    }
    headers
}

/// A `message`, `email` or `sql` action through its connector.
async fn through_connector<S: Store>(
    run: &mut RunCtx<'_, S>,
    action: &Action,
    mut record: ActionRecord,
    params: &Value,
    key: &str,
) -> Result<ActStep, RunError> {
    let connector = action.kind.connector().unwrap_or_default();
    let Some(conn) = run.state.runtime.connections.get(connector) else {
        record.status = ActionStatus::Invalid;
        run.state.store.finish_action(run.run_id, &record).await?;
        return Ok(ActStep::Failed(format!(
            "connector `{connector}` is not configured"
        )));
    };
    let executor = run.executor;
    let channel = Channel {
        connector,
        status_names_failure: false,
    };
    with_retries(run, action, channel, record, || {
        connector_attempt(conn, executor, params, key)
    })
    .await
}

/// One attempt of a `message` (Slack), `email` (SMTP) or `sql` action.
async fn connector_attempt(
    conn: &Connection,
    executor: &HttpExecutor,
    params: &Value,
    key: &str,
) -> Result<AttemptOutcome, String> {
    let text = |k: &str| params[k].as_str().unwrap_or_default().to_string();
    Ok(match conn {
        Connection::Slack(slack) => {
            let req = slack
                .prepare(params["channel"].as_str(), &text("text"), key)
                .map_err(|e| e.to_string())?;
            slack.attempt(executor, &req).await
        }
        Connection::Smtp(smtp) => {
            let email = charter_connect::email::Email {
                to: recipients_text(&params["to"]),
                subject: text("subject"),
                body: text("body"),
            };
            smtp.attempt(&email, key).await
        }
        Connection::Sql(sql) => {
            let values: Vec<Option<String>> = params["params"]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            sql.attempt(&text("statement"), &values, key).await
        }
        Connection::Http(_) => return Err("an HTTP connector takes `request` actions".into()),
    })
}
