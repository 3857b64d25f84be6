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

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use charter_core::config::{Approval, Charter, Mode};
use charter_store::Store;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Caller, authorize};
use crate::error::ApiError;
use crate::ops::tools::{Called, tool_name};
use crate::ops::{self, OpError};

/// Where the endpoint is served.
pub const MCP_PATH: &str = "/mcp";

/// Protocol revisions this server speaks; the newest is offered when a client asks for
/// another.
const PROTOCOL_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];

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

/// `tools/call`: the tool's action through [`ops::tools::call`], then its run (waited for
/// a few seconds) as the result.
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
    let Some((cr, action)) = ops::tools::find_tool(state, caller, name) else {
        return Err((INVALID_PARAMS, format!("unknown tool `{name}`")));
    };
    let charter = &cr.charter;
    let called = ops::tools::call(state, caller, (cr, &action), name, args)
        .await
        .map_err(|e| rpc_of(caller, e))?;
    let (event_id, duplicate) = match called {
        Called::Rejected { id, violations } => {
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
        Called::Stored {
            event_id,
            duplicate,
        } => (event_id, duplicate),
    };
    let report = ops::tools::wait_for_run(state, event_id)
        .await
        .map_err(|e| rpc_of(caller, e))?;
    let mut structured =
        serde_json::to_value(&report).map_err(|e| (INTERNAL_ERROR, e.to_string()))?;
    let outcome = structured["outcome"].as_str().map(str::to_string);
    let failed = matches!(
        outcome.as_deref(),
        Some("failed") | Some("rejected") | Some("no_route")
    );
    let mut text = match &outcome {
        Some(outcome) => format!(
            "Action `{action}` of charter `{}`: {outcome}.",
            charter.name
        ),
        None => format!(
            "Action `{action}` of charter `{}` was accepted (event {event_id}) and is still running.",
            charter.name
        ),
    };
    if let Some(e) = report.run.as_ref().and_then(|r| r.error.as_deref()) {
        text.push(' ');
        text.push_str(e);
    }
    if duplicate {
        text.push_str(" (The same call was made before: this is its event.)");
    }
    structured["duplicate"] = json!(duplicate);
    Ok(tool_result(text, structured, failed))
}

/// A failed operation as a JSON-RPC error.
fn rpc_of(caller: &Caller, e: OpError) -> RpcError {
    match e {
        OpError::Forbidden => (
            FORBIDDEN,
            format!(
                "a {} token may list tools but not call them; calls need an agent (or admin) token",
                caller.role.as_str()
            ),
        ),
        OpError::Invalid(m) => (INVALID_PARAMS, m),
        OpError::Internal(m) => (INTERNAL_ERROR, m),
        other => (INTERNAL_ERROR, other.to_string()),
    }
}

fn tool_result(text: String, structured: Value, is_error: bool) -> Value {
    json!({
        "content": [{"type": "text", "text": text}],
        "structuredContent": structured,
        "isError": is_error,
    })
}
