//! The decision layer in the running server: drafts passed to actions and stored with the
//! run, field extractors and the escalation of a missing required field, context fetched
//! from a connector before deciding (continue and retry on failure), and the store-backed
//! LLM cache. Everything runs on 127.0.0.1: the server in-process with a real SQLite file,
//! the sink (the downstream helpdesk), a small CRM and an OpenAI-compatible model server.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use charter_server::Runtime;
use charter_store::sqlite::SqliteStore;
use charter_store::{
    DecisionStore, EXTRA_CONTEXT, EXTRA_DRAFT, EscalationStore, EventStore, RunStore,
};
use charter_testkit::project::{temp_dir, write};
use charter_testkit::server::{boot, serve};
use charter_testkit::sink::Sink;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod context;
mod drafts;
mod llm;

pub(crate) const DRAFT_TEXT: &str = "Dear customer, your refund for ORD-77 is on its way.";

type Seen = Arc<Mutex<Vec<Value>>>;

/// An OpenAI-compatible chat-completions server: a request with a `response_format` (a
/// classification) gets a valid answer, any other (a draft) gets [`DRAFT_TEXT`]. Every
/// request body is recorded.
async fn model_server(shutdown: CancellationToken) -> (String, Seen) {
    use axum::extract::State;
    async fn chat(
        State(seen): State<Seen>,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::Json<Value> {
        seen.lock().unwrap().push(body.clone());
        let content = if let Some(rf) = body.get("response_format") {
            // Every declared field is answered `null` (not found).
            let fields: serde_json::Map<String, Value> = rf["json_schema"]["schema"]["properties"]
                ["fields"]["properties"]
                .as_object()
                .map(|m| m.keys().map(|k| (k.clone(), Value::Null)).collect())
                .unwrap_or_default();
            json!({"label": "billing", "confidence": 0.95, "fields": fields, "reason": "refund"})
                .to_string()
        } else {
            DRAFT_TEXT.to_string()
        };
        axum::Json(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62},
        }))
    }
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(seen.clone());
    (serve(app, shutdown).await + "/v1", seen)
}

/// A CRM: `GET /customers/7` answers a record (Bearer `crm-token` required); while `down`
/// is set every request answers 503. Counts requests.
#[derive(Clone, Default)]
struct Crm {
    down: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

async fn crm_server(crm: Crm, shutdown: CancellationToken) -> String {
    use axum::extract::{Path as P, State};
    use axum::response::IntoResponse;
    async fn customer(
        State(crm): State<Crm>,
        headers: axum::http::HeaderMap,
        P(id): P<String>,
    ) -> axum::response::Response {
        crm.hits.fetch_add(1, Ordering::SeqCst);
        if crm.down.load(Ordering::SeqCst) {
            return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response();
        }
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer crm-token") {
            return (axum::http::StatusCode::UNAUTHORIZED, "no").into_response();
        }
        axum::Json(json!({"id": id, "name": "Ann Example", "tier": "gold"})).into_response()
    }
    let app = axum::Router::new()
        .route("/customers/{id}", axum::routing::get(customer))
        .with_state(crm);
    serve(app, shutdown).await
}

pub(crate) struct Harness {
    dir: PathBuf,
    base: String,
    sink: Sink,
    store: SqliteStore,
    shutdown: CancellationToken,
    crm: Crm,
    seen: Seen,
    http: reqwest::Client,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A charter on webhook `/hooks/<name>` (no verification) whose `decide`, `routes`,
/// `actions` and extra top-level sections are given.
pub(crate) fn charter(name: &str, decide: &str, routes_actions: &str, extra: &str) -> String {
    format!(
        r#"name: {name}
description: decision layer test {name}
owner: ops@example.test
maintainer: integrations@example.test
system_of_record: helpdesk
mode: live
uses: [helpdesk, crm]
trigger:
  webhook: {{ path: /hooks/{name}, verify: none }}
  text: "{{{{ payload.subject }}}}"
{decide}
{routes_actions}
{extra}
escalation: {{ to: support-leads }}
measure:
  success: [done]
"#
    )
}

impl Harness {
    pub(crate) async fn start(charters: &[(&str, String)], files: &[(&str, &str)]) -> Harness {
        Harness::start_with(charters, files, "", "").await
    }

    /// [`Harness::start`] with more `worker:` settings and more `providers:` (YAML lines,
    /// indented by two spaces).
    async fn start_with(
        charters: &[(&str, String)],
        files: &[(&str, &str)],
        worker: &str,
        providers: &str,
    ) -> Harness {
        let dir = temp_dir("decision");
        let shutdown = CancellationToken::new();
        let sink = Sink::default();
        let sink_addr = sink
            .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
            .await
            .unwrap();
        let crm = Crm::default();
        let crm_url = crm_server(crm.clone(), shutdown.clone()).await;
        let (llm_url, seen) = model_server(shutdown.clone()).await;
        write(&dir, "secrets/crm", "crm-token");
        write(
            &dir,
            "charter.yaml",
            &format!(
                r#"worker:
  lease: 2s
  poll_interval: 50ms
{worker}
connectors:
  helpdesk: {{ type: http, base_url: "http://{sink_addr}", timeout: 2s, allow_private: true }}
  crm: {{ type: http, base_url: "{crm_url}", auth: {{ bearer: file:secrets/crm }}, timeout: 2s, allow_private: true }}
providers:
  local: {{ type: openai, base_url: "{llm_url}", model: tiny-test, timeout: 5s, max_retries: 0, allow_private: true, price: {{ input_per_mtok: 1, output_per_mtok: 2 }} }}
{providers}
"#
            ),
        );
        for (name, text) in charters {
            write(&dir, &format!("charters/{name}.yaml"), text);
        }
        for (rel, text) in files {
            write(&dir, rel, text);
        }
        let server = boot(&dir, "decision-w1", shutdown.clone()).await;
        Harness {
            dir,
            base: server.base,
            sink,
            store: server.store,
            shutdown,
            crm,
            seen,
            http: reqwest::Client::new(),
        }
    }

    /// `GET` an admin API path (the harness configures no tokens) as JSON.
    pub(crate) async fn api_get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// `GET` a path as text.
    pub(crate) async fn text_get(&self, path: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    }

    /// `POST` JSON to an admin API path, answered as JSON.
    pub(crate) async fn api_post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    pub(crate) async fn send(&self, charter: &str, payload: Value) -> Uuid {
        let r = self
            .http
            .post(format!("{}/hooks/{charter}", self.base))
            .json(&payload)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.unwrap();
        Uuid::parse_str(v["id"].as_str().unwrap()).unwrap()
    }

    /// Waits until the event has a finished run and the wanted status.
    pub(crate) async fn wait(&self, id: Uuid, status: &str) -> charter_core::model::RunRecord {
        for _ in 0..300 {
            let e = self.store.get_event(id).await.unwrap().unwrap();
            let runs = self.store.runs_for_event(id).await.unwrap();
            if e.status.as_str() == status
                && let Some(r) = runs.last()
                && r.finished_at.is_some()
            {
                return r.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let e = self.store.get_event(id).await.unwrap().unwrap();
        let runs = self.store.runs_for_event(id).await.unwrap();
        panic!("event {id} never reached {status}: {e:?}\n{runs:#?}");
    }
}

/// `value` matches the OpenAPI document's component schema `name`.
fn assert_documented(name: &str, value: &Value) {
    let doc: Value = serde_json::from_str(charter_server::openapi::DOCUMENT).unwrap();
    let text = serde_json::to_string(&doc["components"]["schemas"])
        .unwrap()
        .replace("#/components/schemas/", "#/$defs/");
    let defs: Value = serde_json::from_str(&text).unwrap();
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": defs,
        "$ref": format!("#/$defs/{name}"),
    });
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v.iter_errors(value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{value}");
}

/// A page of the UI, read through a local session (the harness has no tokens: the UI is open).
async fn ui_page(h: &Harness, path: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http.get(format!("{}/login", h.base)).send().await.unwrap();
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("charter_session="))
        .expect("a session cookie");
    let r = http
        .get(format!("{}{path}", h.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    r.text().await.unwrap()
}
