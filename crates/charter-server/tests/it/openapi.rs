//! The OpenAPI document served at `/api/v1/openapi.json` is honest: it documents exactly the
//! routes the router registers (method and path), every path parameter is declared, and
//! every documented GET (and the operator POSTs) answered by a real server matches its
//! documented status and JSON schema.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use crate::support;

use std::collections::BTreeSet;
use std::path::Path;

use charter_server::api::routes;
use charter_store::sqlite::SqliteStore;
use charter_store::{ApprovalStore, QueueStore, Requeue, RunStore, RunWrite};
use serde_json::{Value, json};
use support::{Harness, charter_yaml};

pub(crate) fn document() -> Value {
    serde_json::from_str(charter_server::openapi::DOCUMENT).expect("the document is JSON")
}

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// (METHOD, path) of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(*m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let p = entry.expect("dir entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_document_lists_exactly_the_registered_routes() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let registered: BTreeSet<(String, String)> = routes::<SqliteStore>()
        .iter()
        .map(|r| (r.method.as_str().to_string(), r.path.to_string()))
        .collect();
    let documented = documented(&doc);
    let missing: Vec<_> = registered.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&registered).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "routes not documented: {missing:?}; documented but not routed: {stale:?}"
    );
    assert!(registered.len() >= 20, "{registered:?}");

    // Every `{param}` of a path is declared as a path parameter, and each operation
    // documents a 200 with a JSON schema.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let names: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for m in METHODS {
            let Some(op) = item.get(*m) else { continue };
            for n in &names {
                let declared = op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["name"] == *n && p["in"] == "path" && p["required"] == true)
                });
                assert!(declared, "{m} {path}: path parameter `{n}` not declared");
            }
            assert!(
                op["responses"]["200"]["content"]["application/json"]["schema"].is_object(),
                "{m} {path}: no 200 JSON schema"
            );
        }
    }

    // Every /api/v1 route is registered through the table: no source file other than
    // api.rs names an /api/v1 path in a `.route(` call.
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    for f in files {
        if f.ends_with("api.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        assert!(
            !compact.contains(".route(\"/api/v1"),
            "{} registers an /api/v1 route outside api::routes (add it to the table and to openapi.json)",
            f.display()
        );
    }
}

/// A validator for the schema at `schema`, with the document's component schemas
/// reachable (as `$defs`).
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let rewrite = |v: &Value| -> Value {
        let text = serde_json::to_string(v)
            .unwrap()
            .replace("#/components/schemas/", "#/$defs/");
        serde_json::from_str(&text).unwrap()
    };
    let wrapped = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": rewrite(&doc["components"]["schemas"]),
        "allOf": [rewrite(schema)],
    });
    jsonschema::validator_for(&wrapped).unwrap_or_else(|e| panic!("bad schema: {e}"))
}

/// Check a response against the operation's documented responses.
pub(crate) fn check(doc: &Value, method: &str, path: &str, status: u16, body: &str) {
    let op = &doc["paths"][path][method];
    let documented = &op["responses"][status.to_string()];
    assert!(
        documented.is_object(),
        "{method} {path} answered {status}, which is not documented: {body}"
    );
    let schema = &documented["content"]["application/json"]["schema"];
    let value: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
    let v = validator(doc, schema);
    let errors: Vec<String> = v
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} ({status}) does not match its schema:\n{}\nbody: {body}",
        errors.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_get_answers_as_documented() {
    let h = Harness::start(
        &[
            (
                "gated",
                charter_yaml(
                    "gated",
                    "live",
                    "{ reviewers: [root], expires: 1h }",
                    "other",
                ),
            ),
            (
                "unsure",
                charter_yaml("unsure", "shadow", "auto", "escalate"),
            ),
        ],
        &[("root", "admin", &[]), ("view", "viewer", &["gated"])],
    )
    .await;
    let served = h.get("/api/v1/openapi.json", None).await;
    assert_eq!(served.status, 200, "the document needs no token");
    assert_eq!(served.json(), document(), "the served document is the file");
    let doc = document();

    // A run of `unsure` queued for review (the charters here sample nothing themselves).
    let sample = uuid::Uuid::now_v7();
    charter_store::RolloutStore::add_sample(
        &h.store,
        charter_store::rollout::NewSample {
            id: sample,
            run_id: uuid::Uuid::now_v7(),
            event_id: uuid::Uuid::now_v7(),
            charter: "unsure".into(),
            route: "route-2".into(),
            mode: "shadow".into(),
            label: Some("other".into()),
            actions: json!(["note"]),
            created_at: 1,
        },
    )
    .await
    .unwrap();

    // Data for every kind of object: an event waiting for an approval, an escalated one,
    // a decided escalation (a correction) and audit entries.
    let gated = h.send("gated", 1, "refund please").await;
    h.wait_status(&gated, "waiting").await;
    let escalated = h.send("unsure", 2, "hello").await;
    h.wait_status(&escalated, "waiting").await;
    let decided = h.send("unsure", 3, "hello again").await;
    h.wait_status(&decided, "waiting").await;
    let approval = h
        .store
        .list_approvals(charter_store::ApprovalFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0);
    let escs = h
        .get("/api/v1/escalations?charter=unsure", Some("root"))
        .await
        .json();
    let last = escs["escalations"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = h
        .post(
            &format!("/api/v1/escalations/{last}/decide"),
            Some("root"),
            Some(json!({"label": "other"})),
        )
        .await;
    check(
        &doc,
        "post",
        "/api/v1/escalations/{id}/decide",
        r.status,
        &r.body,
    );
    assert_eq!(r.status, 200);
    h.wait_status(&decided, "done").await;

    // An interrupted run with an action in doubt: a run of the escalated (waiting) event
    // that recorded an intent and never finished, as a killed process leaves it; requeued,
    // the event's next claim closes that run as interrupted.
    let event_uuid = uuid::Uuid::parse_str(&escalated).unwrap();
    let cut_off = uuid::Uuid::now_v7();
    h.store
        .record_run(vec![
            RunWrite::Start {
                run_id: cut_off,
                event_id: event_uuid,
                charter: "unsure".to_string(),
                charter_version: "v-crashed".to_string(),
                mode: "live".to_string(),
                now: charter_server::now_millis(),
            },
            RunWrite::BeginAction {
                run_id: cut_off,
                action: "note".to_string(),
                idempotency_key: format!("{escalated}-note"),
                params: json!({"body": "crashed"}),
            },
        ])
        .await
        .unwrap();
    h.store
        .requeue(Requeue::Event(event_uuid), charter_server::now_millis())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = h.get("/api/v1/in-doubt?charter=unsure", Some("root")).await;
        check(&doc, "get", "/api/v1/in-doubt", r.status, &r.body);
        let items = r.json()["in_doubt"].as_array().unwrap().clone();
        if let Some(item) = items.first() {
            assert_eq!(items.len(), 1, "{items:?}");
            assert_eq!(item["run_id"], cut_off.to_string().as_str());
            assert_eq!(item["event_id"], escalated.as_str());
            assert_eq!(item["action"], "note");
            assert_eq!(
                item["idempotency_key"],
                format!("{escalated}-note").as_str()
            );
            assert_eq!(item["settled"], false);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the requeued event's claim did not close the cut-off run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    h.wait_status(&escalated, "waiting").await;
    let r = h
        .get("/api/v1/in-doubt?unsettled=true&limit=5", Some("root"))
        .await;
    check(&doc, "get", "/api/v1/in-doubt", r.status, &r.body);
    assert_eq!(r.json()["in_doubt"].as_array().unwrap().len(), 1);
    // A token scoped to `gated` sees none of `unsure`'s.
    let r = h.get("/api/v1/in-doubt", Some("view")).await;
    assert_eq!(r.json()["in_doubt"], json!([]), "{}", r.body);
    let r = h.get("/api/v1/in-doubt?charter=unsure", Some("view")).await;
    assert_eq!(r.json()["in_doubt"], json!([]), "{}", r.body);
    let r = h
        .get(&format!("/api/v1/events/{escalated}"), Some("root"))
        .await;
    check(&doc, "get", "/api/v1/events/{id}", r.status, &r.body);
    let shown = r.json();
    let run = shown["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == cut_off.to_string().as_str())
        .unwrap_or_else(|| panic!("the cut-off run is not shown: {shown}"))
        .clone();
    assert_eq!(run["outcome"], "interrupted", "{run}");
    assert_eq!(run["actions"][0]["status"], "in_doubt", "{run}");
    let r = h
        .get("/api/v1/runs?outcome=interrupted", Some("root"))
        .await;
    check(&doc, "get", "/api/v1/runs", r.status, &r.body);
    assert_eq!(r.json()["runs"].as_array().unwrap().len(), 1, "{}", r.body);
    let metrics = h
        .http
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("charter_in_doubt_actions_total{action=\"note\",charter=\"unsure\"} 1")
            || metrics
                .contains("charter_in_doubt_actions_total{charter=\"unsure\",action=\"note\"} 1"),
        "{metrics}"
    );

    let mut gets = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if item.get("get").is_none() {
            continue;
        }
        gets += 1;
        let id = if path.starts_with("/api/v1/approvals/") {
            approval.id.to_string()
        } else if path == "/api/v1/samples/{id}" {
            sample.to_string()
        } else if path == "/api/v1/escalations/{id}" {
            last.clone()
        } else {
            escalated.clone()
        };
        let url = path
            .replace("{id}", &id)
            .replace("{name}", "unsure")
            .replace("/api/v1/corrections", "/api/v1/corrections?charter=unsure")
            .replace(
                "/api/v1/knowledge/search",
                "/api/v1/knowledge/search?q=refund",
            );
        let r = h.get(&url, Some("root")).await;
        assert_eq!(r.status, 200, "GET {url}: {}", r.body);
        check(&doc, "get", path, r.status, &r.body);
        // Filters documented as query parameters are accepted.
        if path == "/api/v1/events" {
            let r = h
                .get("/api/v1/events?charter=unsure&status=waiting&since=0&until=99999999999999&limit=5", Some("root"))
                .await;
            check(&doc, "get", path, r.status, &r.body);
            assert_eq!(r.json()["events"].as_array().unwrap().len(), 1);
            let r = h.get("/api/v1/events?status=bogus", Some("root")).await;
            assert_eq!(r.status, 400);
            check(&doc, "get", path, r.status, &r.body);
        }
        if path == "/api/v1/runs" {
            // The escalated and the decided events each ended a run as escalated, and the
            // escalated one again after its cut-off run was closed; the decision's run
            // completed; the gated event's run waits for its approval.
            let r = h
                .get("/api/v1/runs?charter=unsure&outcome=escalated&since=0&until=99999999999999&limit=5", Some("root"))
                .await;
            check(&doc, "get", path, r.status, &r.body);
            let runs = r.json()["runs"].as_array().unwrap().clone();
            assert_eq!(runs.len(), 3, "{runs:?}");
            assert!(
                runs.iter()
                    .all(|r| r["outcome"] == "escalated" && r["charter"] == "unsure")
            );
            let r = h
                .get("/api/v1/runs?outcome=awaiting_approval", Some("root"))
                .await;
            let runs = r.json()["runs"].as_array().unwrap().clone();
            assert_eq!(runs.len(), 1, "{runs:?}");
            assert_eq!(runs[0]["event_id"], gated.as_str());
            // A token scoped to `gated` sees only that charter's runs.
            let r = h.get("/api/v1/runs", Some("view")).await;
            check(&doc, "get", path, r.status, &r.body);
            let seen = r.json()["runs"].as_array().unwrap().clone();
            assert!(
                !seen.is_empty() && seen.iter().all(|r| r["charter"] == "gated"),
                "{seen:?}"
            );
            let r = h.get("/api/v1/runs?charter=unsure", Some("view")).await;
            assert_eq!(r.json()["runs"], json!([]));
            let r = h.get("/api/v1/runs?outcome=bogus", Some("root")).await;
            assert_eq!(r.status, 400);
            check(&doc, "get", path, r.status, &r.body);
        }
        if path == "/api/v1/openapi.json" {
            continue;
        }
        let r = h.get(&url, None).await;
        assert_eq!(r.status, 401, "GET {url} without a token");
        check(&doc, "get", path, r.status, &r.body);
        if path.contains("{id}") || path.contains("{name}") {
            // Out of the viewer's scope (gated only): 404, as documented.
            let r = h.get(&url, Some("view")).await;
            if path.starts_with("/api/v1/approvals/") {
                assert_eq!(r.status, 200, "GET {url} in scope");
            } else {
                assert_eq!(r.status, 404, "GET {url} out of scope");
            }
            check(&doc, "get", path, r.status, &r.body);
        }
    }
    assert!(gets >= 12, "only {gets} GET paths documented");

    // The operator POSTs answer as documented too.
    let r = h
        .post("/api/v1/charters/unsure/promote", Some("root"), None)
        .await;
    check(
        &doc,
        "post",
        "/api/v1/charters/{name}/promote",
        r.status,
        &r.body,
    );
    assert_eq!(r.status, 200);
    let r = h
        .post("/api/v1/charters/unsure/promote", Some("root"), None)
        .await;
    assert_eq!(r.status, 409);
    check(
        &doc,
        "post",
        "/api/v1/charters/{name}/promote",
        r.status,
        &r.body,
    );
    let r = h
        .post(
            "/api/v1/charters/unsure/mode",
            Some("root"),
            Some(json!({"mode": "file"})),
        )
        .await;
    check(
        &doc,
        "post",
        "/api/v1/charters/{name}/mode",
        r.status,
        &r.body,
    );
    let r = h
        .post(
            "/api/v1/charters/unsure/mode",
            Some("view"),
            Some(json!({"mode": "live"})),
        )
        .await;
    assert_eq!(r.status, 403);
    check(
        &doc,
        "post",
        "/api/v1/charters/{name}/mode",
        r.status,
        &r.body,
    );
    let r = h
        .post(
            &format!("/api/v1/events/{decided}/reroute"),
            Some("root"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    check(
        &doc,
        "post",
        "/api/v1/events/{id}/reroute",
        r.status,
        &r.body,
    );
    let r = h
        .post(
            &format!("/api/v1/events/{gated}/replay"),
            Some("root"),
            None,
        )
        .await;
    check(
        &doc,
        "post",
        "/api/v1/events/{id}/replay",
        r.status,
        &r.body,
    );
    let r = h
        .post("/api/v1/replay", Some("root"), Some(json!({"since": 0})))
        .await;
    check(&doc, "post", "/api/v1/replay", r.status, &r.body);
    let r = h
        .post("/api/v1/charters/unsure/pause", Some("root"), None)
        .await;
    check(
        &doc,
        "post",
        "/api/v1/charters/{name}/pause",
        r.status,
        &r.body,
    );
    let r = h
        .post("/api/v1/charters/unsure/resume", Some("root"), None)
        .await;
    check(
        &doc,
        "post",
        "/api/v1/charters/{name}/resume",
        r.status,
        &r.body,
    );
    let r = h
        .post(
            &format!("/api/v1/approvals/{}/reject", approval.id),
            Some("root"),
            Some(json!({"reason": "not this one"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    check(
        &doc,
        "post",
        "/api/v1/approvals/{id}/reject",
        r.status,
        &r.body,
    );
    let r = h
        .post(
            &format!("/api/v1/approvals/{}/approve", approval.id),
            Some("root"),
            None,
        )
        .await;
    assert_eq!(r.status, 409, "already decided");
    check(
        &doc,
        "post",
        "/api/v1/approvals/{id}/approve",
        r.status,
        &r.body,
    );
}

#[test]
fn the_schema_check_rejects_a_wrong_shape() {
    let doc = document();
    let schema = &doc["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    let v = validator(&doc, schema);
    assert!(v.is_valid(&json!({"events": [], "total": 0, "next_cursor": null})));
    assert!(!v.is_valid(&json!({"events": []})), "the total is required");
    assert!(
        !v.is_valid(&json!({"events": [{"id": 1}]})),
        "a broken event"
    );
    assert!(!v.is_valid(&json!({"items": []})), "a missing key");
    let charter = &doc["paths"]["/api/v1/charters/{name}/mode"]["post"]["responses"]["200"]["content"]
        ["application/json"]["schema"];
    let v = validator(&doc, charter);
    let ok = json!({"charter": "a", "mode": "live", "file_mode": "shadow", "override": null});
    assert!(v.is_valid(&ok));
    let mut bad = ok.clone();
    bad["mode"] = json!("turbo");
    assert!(!v.is_valid(&bad), "an undocumented mode");
}
