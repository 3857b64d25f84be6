//! The MCP endpoint: charters' actions as tools for agents, through the same gates (scoped
//! agent tokens, the input contract, approvals, shadow mode, dedupe and the audit log),
//! spoken to over real HTTP as an MCP client would.

use crate::support;

use charter_store::{AuditFilter, AuditStore, EventStore};
use serde_json::{Value, json};
use support::{Harness, Resp, charter_yaml, resp};

const SCHEMA: &str = r#"{"type":"object","required":["ticket"],"properties":{"ticket":{"type":"object","required":["id","subject"],"properties":{"id":{"type":"integer"},"subject":{"type":"string"}}}}}"#;

/// `charter_yaml` whose two actions an agent may call whatever the routes' conditions say
/// (`mcp_skip_when: true`): these tests are about the gates after that check
/// (`outbound::mcp_calls_honour_route_conditions` covers the check).
fn callable(yaml: String) -> String {
    yaml.replace("\n  note:\n", "\n    mcp_skip_when: true\n  note:\n")
        .replace("\nescalation:", "\n    mcp_skip_when: true\nescalation:")
}

/// A charter the agent may call: a tool call runs without a decision, so its actions'
/// templates must not need one (`check` refuses that).
fn tool_charter(name: &str, mode: &str, approval: &str) -> String {
    callable(
        charter_yaml(name, mode, approval, "other")
            .replace("is {{ decision.label }}\"", "was handled\""),
    )
}

async fn start() -> Harness {
    let with_contract = tool_charter("auto", "live", "auto").replace(
        "  dedupe: ",
        "  input_schema: schemas/ticket.json\n  dedupe: ",
    );
    Harness::start_with_files(
        &[
            ("auto", with_contract),
            (
                "gated",
                tool_charter("gated", "live", "{ reviewers: [rev], expires: 1h }"),
            ),
            ("quiet", tool_charter("quiet", "shadow", "auto")),
            (
                "other",
                callable(charter_yaml("other", "live", "auto", "other")),
            ),
        ],
        &[
            ("bot", "agent", &["auto", "gated", "quiet"]),
            ("rev", "reviewer", &[]),
            ("view", "viewer", &[]),
            ("root", "admin", &[]),
        ],
        &[("schemas/ticket.json", SCHEMA)],
    )
    .await
}

/// POST one JSON-RPC message to /mcp as `who`.
async fn rpc(h: &Harness, who: Option<&str>, msg: Value) -> Resp {
    h.post("/mcp", who, Some(msg)).await
}

/// A `tools/call` as the agent; the JSON-RPC result.
async fn call(h: &Harness, tool: &str, arguments: Value) -> Value {
    let r = rpc(
        h,
        Some("bot"),
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
               "params": {"name": tool, "arguments": arguments}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["id"], 7);
    assert!(v["error"].is_null(), "{v}");
    v["result"].clone()
}

fn ticket(id: Value, subject: &str) -> Value {
    json!({"ticket": {"id": id, "subject": subject}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_call_charters_actions_through_the_same_gates() {
    let h = start().await;

    // The handshake.
    let r = rpc(
        &h,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    )
    .await;
    assert_eq!(r.status, 401, "a token is required");
    let r = rpc(
        &h,
        Some("bot"),
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test-agent", "version": "1"}}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let init = r.json();
    assert_eq!(init["jsonrpc"], "2.0");
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["result"]["serverInfo"]["name"], "charter");
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    let r = rpc(
        &h,
        Some("bot"),
        json!({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {"protocolVersion": "1999-01-01"}}),
    )
    .await;
    assert_eq!(r.json()["result"]["protocolVersion"], "2025-06-18");
    let r = rpc(
        &h,
        Some("bot"),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (202, ""));

    // The agent's scope: three charters, two actions each; the contract is the input schema.
    let r = rpc(
        &h,
        Some("bot"),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
    )
    .await;
    let tools = r.json()["result"]["tools"].as_array().unwrap().clone();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "auto__assign_billing",
            "auto__note",
            "gated__assign_billing",
            "gated__note",
            "quiet__assign_billing",
            "quiet__note"
        ]
    );
    let tool = |name: &str| tools.iter().find(|t| t["name"] == name).unwrap().clone();
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    assert_eq!(tool("auto__assign_billing")["inputSchema"], schema);
    assert_eq!(
        tool("gated__note")["inputSchema"],
        json!({"type": "object"})
    );
    assert!(
        tool("gated__assign_billing")["description"]
            .as_str()
            .unwrap()
            .contains("waits for the approval of one of: rev"),
        "{}",
        tool("gated__assign_billing")
    );
    assert!(
        tool("quiet__assign_billing")["description"]
            .as_str()
            .unwrap()
            .contains("shadow mode"),
    );

    // A call runs the action: stored as an event first, the action's PUT goes downstream.
    let res = call(&h, "auto__assign_billing", ticket(json!(7), "hello")).await;
    assert_eq!(res["isError"], false, "{res}");
    let out = &res["structuredContent"];
    assert_eq!(out["outcome"], "completed", "{res}");
    assert_eq!(out["status"], "done");
    assert_eq!(out["duplicate"], false);
    assert_eq!(out["actions"][0]["action"], "assign_billing");
    assert_eq!(out["actions"][0]["status"], "succeeded");
    assert!(
        res["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Action `assign_billing` of charter `auto`: completed."),
        "{res}"
    );
    assert_eq!(h.puts(7), 1);
    let event_id = out["event_id"].as_str().unwrap().to_string();
    let event = h
        .store
        .get_event(event_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.event.source, "mcp:bot");
    assert_eq!(event.event.payload, ticket(json!(7), "hello"));

    // The same call again (an agent retrying) is the same event: nothing runs twice.
    let again = call(&h, "auto__assign_billing", ticket(json!(7), "hello")).await;
    assert_eq!(again["structuredContent"]["duplicate"], true, "{again}");
    assert_eq!(again["structuredContent"]["event_id"], event_id.as_str());
    assert_eq!(h.puts(7), 1);
    // A webhook delivery about the same ticket is not swallowed by the call's dedupe key.
    let hooked = h.send("auto", 7, "refund please").await;
    h.wait_status(&hooked, "done").await;
    assert_eq!(h.puts(7), 2);

    // Arguments that break the contract: refused with the JSON pointer, kept as rejected.
    let res = call(&h, "auto__assign_billing", ticket(json!("seven"), "hello")).await;
    assert_eq!(res["isError"], true, "{res}");
    let violation = res["structuredContent"]["violations"][0].as_str().unwrap();
    assert!(violation.starts_with("/ticket/id: "), "{violation}");
    let kept = h
        .store
        .list_rejected(Some("auto".into()), 10)
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].source, "mcp:bot");

    // An action that needs a reviewer waits; the reviewer's approval lets it run.
    let res = call(&h, "gated__assign_billing", ticket(json!(8), "hello")).await;
    assert_eq!(res["isError"], false, "{res}");
    assert_eq!(
        res["structuredContent"]["outcome"], "awaiting_approval",
        "{res}"
    );
    assert_eq!(res["structuredContent"]["status"], "waiting");
    assert_eq!(h.puts(8), 0);
    let pending = h.pending_approvals().await;
    assert_eq!(pending.len(), 1);
    let gated_event = res["structuredContent"]["event_id"].as_str().unwrap();
    assert_eq!(pending[0].event_id.to_string(), gated_event);
    let r = h
        .post(
            &format!("/api/v1/approvals/{}/approve", pending[0].id),
            Some("rev"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.wait_status(gated_event, "done").await;
    assert_eq!(h.puts(8), 1);

    // Shadow mode: recorded, nothing executed.
    let res = call(&h, "quiet__assign_billing", ticket(json!(9), "hello")).await;
    assert_eq!(res["structuredContent"]["outcome"], "shadow", "{res}");
    assert_eq!(h.puts(9), 0);

    // Outside the agent's scope the tool does not exist.
    let r = rpc(
        &h,
        Some("bot"),
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
               "params": {"name": "other__assign_billing", "arguments": ticket(json!(10), "x")}}),
    )
    .await;
    let v = r.json();
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert_eq!(
        v["error"]["message"],
        "unknown tool `other__assign_billing`"
    );
    assert_eq!(h.puts(10), 0);

    // A viewer sees every tool but may not call one; a reviewer neither.
    let r = rpc(
        &h,
        Some("view"),
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}),
    )
    .await;
    assert_eq!(r.json()["result"]["tools"].as_array().unwrap().len(), 8);
    for who in ["view", "rev"] {
        let r = rpc(
            &h,
            Some(who),
            json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                   "params": {"name": "other__assign_billing", "arguments": ticket(json!(11), "x")}}),
        )
        .await;
        let v = r.json();
        assert_eq!(v["error"]["code"], -32001, "{who}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("may list tools but not call them"),
            "{v}"
        );
    }
    assert_eq!(h.puts(11), 0);

    // An agent token reaches nothing else: not the admin API, not the web UI.
    assert_eq!(h.get("/api/v1/events", Some("bot")).await.status, 403);
    let (page, _) = support::Ui::try_login(&h, "secret-bot").await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("belongs to an agent"), "{}", page.body);

    // Every call is on the audit log under the agent's name.
    let calls = h
        .store
        .list_audit(AuditFilter {
            actor: Some("bot".into()),
            action: Some("mcp.call".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(calls.len(), 5, "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_refuses_what_it_does_not_speak() {
    let h = start().await;
    let r = rpc(
        &h,
        Some("bot"),
        json!({"jsonrpc": "2.0", "id": "a", "method": "resources/list"}),
    )
    .await;
    let v = r.json();
    assert_eq!((r.status, v["id"].clone()), (200, json!("a")));
    assert_eq!(v["error"]["code"], -32601);
    assert_eq!(v["error"]["message"], "unknown method `resources/list`");

    let post = |body: &'static str, origin: Option<&'static str>| {
        let mut req = h
            .http
            .post(format!("{}/mcp", h.base))
            .bearer_auth("secret-bot")
            .header("content-type", "application/json")
            .body(body);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        async move { resp(req.send().await.unwrap()).await }
    };
    let r = post("{not json", None).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32700);
    let r = post(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, None).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32600);
    let r = post(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, None).await;
    assert_eq!(r.json()["result"], json!({}));
    // A browser page of another site (DNS rebinding) is refused.
    let r = post(
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = post(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"auto__note","arguments":[1]}}"#,
        None,
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32602);

    // No server-initiated stream is offered.
    let r = h.get("/mcp", Some("bot")).await;
    assert_eq!(r.status, 405);
}
