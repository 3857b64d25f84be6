//! The MCP endpoint (`POST /mcp`): charters' actions offered to AI agents as tools, through
//! the same gates as everything else.
//!
//! The Model Context Protocol's Streamable HTTP transport, answering each JSON-RPC request
//! with one JSON response (no server-sent stream; `GET` answers 405). Methods: `initialize`,
//! `ping`, `tools/list`, `tools/call`; notifications are accepted with 202.
//!
//! Each action of each charter the token may see is one tool, named `<charter>__<action>`;
//! its input schema is the charter's input contract (the arguments are the event payload).
//! A call is stored as an event of the charter (`source: mcp:<token>`, `event_type:
//! mcp:<action>`), durably, before anything runs; the worker then runs that one action
//! without a decision or a route, and the action's own gates hold: the contract (a
//! violation is kept as a rejected payload, as on a webhook), its approval policy (the call
//! answers "awaiting approval" and a reviewer decides), shadow mode (nothing executes), the
//! idempotency key and the audit log. A charter's `dedupe:` template dedupes calls too (in
//! a key space of the action's own, so a webhook delivery never swallows a call). The call
//! waits a few seconds for the run and reports its outcome, or says it is still running.
//!
//! Tokens: `role: agent` tokens (and admins) may call tools; viewers and reviewers may list
//! them but not call them (a reviewer must not start what they then approve). Charter
//! scopes limit which tools a token sees. A request carrying an `Origin` header is refused
//! unless it is `server.public_url`'s origin (browsers must not reach it from other sites).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use charter_core::config::{Approval, Charter, Mode};
use charter_core::model::{EventStatus, NewEvent, RejectedPayload};
use charter_store::{IngestOutcome, Store};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::{Caller, authorize};
use crate::error::ApiError;
use crate::{AppState, now_millis};

/// Where the endpoint is served.
pub const MCP_PATH: &str = "/mcp";

/// Protocol revisions this server speaks; the newest is offered when a client asks for
/// another.
const PROTOCOL_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];

/// How long a tool call waits for its run before answering "still running".
const WAIT_FOR_RUN: Duration = Duration::from_secs(10);

const SOURCE_PREFIX: &str = "mcp:";
const TYPE_PREFIX: &str = "mcp:";

/// The action an event stored by a tool call asks for (`None` for every other event).
pub fn requested_action(event: &NewEvent) -> Option<&str> {
    if !event.source.starts_with(SOURCE_PREFIX) {
        return None;
    }
    event.event_type.as_deref()?.strip_prefix(TYPE_PREFIX)
}

/// A tool's name: `<charter>__<action>`.
pub fn tool_name(charter: &str, action: &str) -> String {
    format!("{charter}__{action}")
}

/// A JSON-RPC error: `(code, message)`.
type RpcError = (i64, String);

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
/// Server-defined: the token may not do this.
const FORBIDDEN: i64 = -32001;

fn rpc_error(status: StatusCode, id: Value, (code, message): RpcError) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET`/`DELETE /mcp`: no server-initiated stream and no sessions to end.
pub async fn not_offered() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST")],
        "this MCP endpoint answers POSTed JSON-RPC requests only",
    )
        .into_response()
}

/// `POST /mcp`: one JSON-RPC message.
pub async fn handle<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = state
            .runtime
            .project
            .settings
            .public_url
            .as_deref()
            .map(origin_of);
        if origin.to_str().ok().map(|o| o.trim_end_matches('/')) != allowed.as_deref() {
            return Err(ApiError::Forbidden);
        }
    }
    let caller = authorize(&state, &headers, charter_core::config::Role::Agent)?;
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Ok(rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                (PARSE_ERROR, format!("the body is not JSON: {e}")),
            ));
        }
    };
    if msg.is_array() {
        return Ok(rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            (INVALID_REQUEST, "JSON-RPC batches are not supported".into()),
        ));
    }
    let Some(method) = msg.get("method").and_then(Value::as_str) else {
        // A response to a request this server never sends, or not JSON-RPC at all.
        if msg.get("result").is_some() || msg.get("error").is_some() {
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        return Ok(rpc_error(
            StatusCode::BAD_REQUEST,
            msg.get("id").cloned().unwrap_or(Value::Null),
            (
                INVALID_REQUEST,
                "expected a JSON-RPC request with a `method`".into(),
            ),
        ));
    };
    let Some(id) = msg.get("id").cloned() else {
        // A notification (`notifications/initialized`, `notifications/cancelled`, ...).
        return Ok(StatusCode::ACCEPTED.into_response());
    };
    let params = msg.get("params").cloned().unwrap_or(json!({}));
    let result = match method {
        "initialize" => Ok(initialize(&params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": list_tools(&state, &caller) })),
        "tools/call" => call_tool(&state, &caller, &params).await,
        other => Err((METHOD_NOT_FOUND, format!("unknown method `{other}`"))),
    };
    Ok(match result {
        Ok(result) => {
            let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        Err(e) => rpc_error(StatusCode::OK, id, e),
    })
}

/// `scheme://host[:port]` of a URL (what browsers send as `Origin`).
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

fn initialize(params: &Value) -> Value {
    let asked = params["protocolVersion"].as_str().unwrap_or_default();
    let version = if PROTOCOL_VERSIONS.contains(&asked) {
        asked
    } else {
        PROTOCOL_VERSIONS[0]
    };
    json!({
        "protocolVersion": version,
        "capabilities": { "tools": { "listChanged": false } },
        "serverInfo": { "name": "charter", "version": env!("CARGO_PKG_VERSION") },
        "instructions": "Each tool runs one action of a Charter charter. The arguments are the \
            event payload, checked against the charter's input contract. Actions that need a \
            reviewer's approval wait for it; charters in shadow mode execute nothing. A call \
            is answered with the run's outcome.",
    })
}

/// One tool per action of each charter the caller sees.
fn list_tools<S>(state: &AppState<S>, caller: &Caller) -> Vec<Value> {
    let mut tools = Vec::new();
    for cr in state.runtime.charters.values() {
        let c = &cr.charter;
        if !caller.sees(&c.name) {
            continue;
        }
        let schema = input_schema(c);
        for (name, action) in &c.actions {
            let approval = match &action.approval {
                Approval::Auto => "runs without approval".to_string(),
                Approval::Required { reviewers, .. } => {
                    format!("waits for the approval of one of: {}", reviewers.join(", "))
                }
            };
            let mode = match c.mode {
                Mode::Shadow => {
                    " The charter is in shadow mode: nothing is executed, what would run is recorded."
                }
                Mode::Approve => " The charter waits for a reviewer's approval of every action.",
                Mode::Live => "",
            };
            tools.push(json!({
                "name": tool_name(&c.name, name),
                "title": format!("{}: {name}", c.name),
                "description": format!(
                    "{} Action `{name}` of charter `{}` ({approval}).{mode}",
                    c.description.trim_end_matches('.').to_string() + ".",
                    c.name
                ),
                "inputSchema": schema,
                "annotations": {
                    "readOnlyHint": false,
                    "destructiveHint": true,
                    "idempotentHint": false,
                    "openWorldHint": true,
                },
            }));
        }
    }
    tools
}

/// The charter's input contract as a tool input schema (MCP wants an object schema).
fn input_schema(c: &Charter) -> Value {
    match c.trigger.input_schema.as_ref().map(|s| &s.schema) {
        Some(s) if s.get("type").and_then(Value::as_str) == Some("object") => s.clone(),
        Some(s) => json!({"type": "object", "allOf": [s]}),
        None => json!({"type": "object"}),
    }
}

async fn call_tool<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    params: &Value,
) -> Result<Value, RpcError> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err((INVALID_PARAMS, "`name` (the tool) is required".into()));
    };
    let args = params.get("arguments").cloned().unwrap_or(json!({}));
    if !args.is_object() {
        return Err((INVALID_PARAMS, "`arguments` must be an object".into()));
    }
    let found = state
        .runtime
        .charters
        .values()
        .filter(|cr| caller.sees(&cr.charter.name))
        .find_map(|cr| {
            cr.charter
                .actions
                .keys()
                .find(|a| tool_name(&cr.charter.name, a) == name)
                .map(|a| (cr, a.clone()))
        });
    let Some((cr, action)) = found else {
        return Err((INVALID_PARAMS, format!("unknown tool `{name}`")));
    };
    if !caller.role.calls_tools() {
        return Err((
            FORBIDDEN,
            format!(
                "a {} token may list tools but not call them; calls need an agent (or admin) token",
                caller.role.as_str()
            ),
        ));
    }
    let charter = &cr.charter;
    let internal = |e: String| (INTERNAL_ERROR, e);
    let received_at = now_millis();
    let source = format!("{SOURCE_PREFIX}{}", caller.name);

    // The input contract, as on a webhook: a violation is kept as rejected.
    if let Some(contract) = &cr.contract {
        let violations = crate::ingest::contract_violations(contract, &args);
        if !violations.is_empty() {
            let id = crate::ingest::keep_rejected(
                state,
                "contract",
                RejectedPayload {
                    id: Uuid::now_v7(),
                    charter: charter.name.clone(),
                    source,
                    received_at,
                    headers: BTreeMap::new(),
                    body: args.to_string(),
                    reasons: violations.clone(),
                },
            )
            .await
            .map_err(|e| internal(format!("keeping the rejected arguments: {e}")))?;
            crate::api::audit(
                state,
                &caller.name,
                "mcp.call",
                Some(&charter.name),
                Some(id.to_string()),
                json!({"tool": name, "action": action, "rejected": true}),
            )
            .await
            .map_err(|e| internal(format!("writing the audit entry: {e}")))?;
            let text = format!(
                "The arguments violate charter `{}`'s input contract (kept as rejected payload {id}):\n{}",
                charter.name,
                violations.join("\n")
            );
            return Ok(tool_result(
                text,
                json!({"rejected_id": id, "violations": violations}),
                true,
            ));
        }
    }

    let mut event = NewEvent {
        id: Uuid::now_v7(),
        charter: charter.name.clone(),
        source,
        event_type: Some(format!("{TYPE_PREFIX}{action}")),
        dedupe_key: None,
        received_at,
        headers: BTreeMap::new(),
        payload: args,
    };
    // The charter's dedupe template, in the action's own key space.
    event.dedupe_key = crate::ingest::dedupe_key(charter, &event, None)
        .map_err(|e| (INVALID_PARAMS, e.to_string()))?
        .map(|k| format!("{TYPE_PREFIX}{action}:{k}"));
    let (event_id, duplicate) = match crate::ingest::accept(state, event, None).await {
        Ok(IngestOutcome::Stored(id)) => (id, false),
        Ok(IngestOutcome::Duplicate(id)) => (id, true),
        Err(e) => return Err(internal(format!("storing the call: {e}"))),
    };
    crate::api::audit(
        state,
        &caller.name,
        "mcp.call",
        Some(&charter.name),
        Some(event_id.to_string()),
        json!({"tool": name, "action": action, "duplicate": duplicate}),
    )
    .await
    .map_err(|e| internal(format!("writing the audit entry: {e}")))?;
    tracing::info!(caller = %caller.name, charter = %charter.name, %action, event = %event_id, duplicate, "MCP tool call");

    let report = wait_for_run(state, event_id).await?;
    let failed = matches!(
        report["outcome"].as_str(),
        Some("failed") | Some("rejected") | Some("no_route")
    );
    let mut text = match report["outcome"].as_str() {
        Some(outcome) => format!(
            "Action `{action}` of charter `{}`: {outcome}.",
            charter.name
        ),
        None => format!(
            "Action `{action}` of charter `{}` was accepted (event {event_id}) and is still running.",
            charter.name
        ),
    };
    if let Some(e) = report["error"].as_str() {
        text.push(' ');
        text.push_str(e);
    }
    if duplicate {
        text.push_str(" (The same call was made before: this is its event.)");
    }
    let mut structured = report;
    structured["duplicate"] = json!(duplicate);
    Ok(tool_result(text, structured, failed))
}

fn tool_result(text: String, structured: Value, is_error: bool) -> Value {
    json!({
        "content": [{"type": "text", "text": text}],
        "structuredContent": structured,
        "isError": is_error,
    })
}

/// The event's latest run once the event is no longer queued or running (bounded by
/// [`WAIT_FOR_RUN`]): `{event_id, status, run_id, outcome, error, actions}`.
async fn wait_for_run<S: Store>(state: &AppState<S>, event_id: Uuid) -> Result<Value, RpcError> {
    let started = Instant::now();
    let read = |e: charter_store::StoreError| (INTERNAL_ERROR, format!("reading the run: {e}"));
    loop {
        let status = state
            .store
            .get_event(event_id)
            .await
            .map_err(read)?
            .map(|e| e.status);
        let settled = matches!(
            status,
            Some(EventStatus::Done | EventStatus::Failed | EventStatus::Waiting)
        );
        if settled || started.elapsed() >= WAIT_FOR_RUN {
            let runs = state.store.runs_for_event(event_id).await.map_err(read)?;
            let mut out = json!({
                "event_id": event_id,
                "status": status.map(EventStatus::as_str),
            });
            if settled && let Some(run) = runs.last() {
                out["run_id"] = json!(run.id);
                out["outcome"] = json!(run.outcome);
                out["error"] = json!(run.error);
                out["actions"] = json!(
                    run.actions
                        .iter()
                        .map(
                            |a| json!({"action": a.action, "status": a.status, "params": a.params})
                        )
                        .collect::<Vec<_>>()
                );
            }
            return Ok(out);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
