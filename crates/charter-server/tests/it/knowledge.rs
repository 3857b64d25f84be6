//! Approved knowledge in the running server: a knowledge folder indexed at start and on
//! demand (old passages gone), a `retrieve` step whose passages reach the draft's prompt and
//! the run's record, cited drafts awaiting review with their passages in the inbox, a
//! made-up citation repaired or refused (escalated, gap recorded, `on_gap` posted to a local
//! task tracker), nothing-found and stale gaps, and the Zendesk Help Center preset read
//! page by page from a local server. Everything on 127.0.0.1 with a real SQLite file; the
//! model is the local OpenAI-compatible stand-in.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use charter_server::{Role, Runtime, ServeOptions};
use charter_store::sqlite::SqliteStore;
use charter_store::{
    ApprovalFilter, ApprovalStore, DecisionStore, EXTRA_CONTEXT, EXTRA_DRAFT, EscalationFilter,
    EscalationStore, EventStore, GapFilter, GapReason, KnowledgeStore, RunStore,
};
use charter_testkit::sink::Sink;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn write(dir: &Path, rel: &str, contents: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, contents).unwrap();
}

/// Requests the model got, and the drafts it answers with (in order; then the default).
#[derive(Clone, Default)]
struct Model {
    seen: Arc<Mutex<Vec<Value>>>,
    answers: Arc<Mutex<VecDeque<String>>>,
}

const DEFAULT_ANSWER: &str = "A refund to a card arrives within five working days [1].";

async fn serve(app: axum::Router, shutdown: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

async fn model_server(model: Model, shutdown: CancellationToken) -> String {
    use axum::extract::State;
    async fn chat(
        State(m): State<Model>,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::Json<Value> {
        m.seen.lock().unwrap().push(body.clone());
        let content = m
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| DEFAULT_ANSWER.to_string());
        axum::Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 80, "completion_tokens": 20, "total_tokens": 100},
        }))
    }
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(model);
    serve(app, shutdown).await + "/v1"
}

const REFUNDS: &str = "---\ntitle: Refunds\n---\n# Refunds\n\nA refund to a card payment arrives within five working days after we receive the parcel.\n\n## Vouchers\n\nGift vouchers cannot be refunded; they stay valid for two years.\n";
const SHIPPING: &str = "# Shipping\n\nParcels leave our warehouse within two days. Delivery in Europe takes three to five days and every parcel is tracked.\n";

const PROMPT: &str = "Answer the customer using only these passages. Cite the passage after each sentence as [n].\n{% for p in context.kb.passages %}[{{ p.n }}] {{ p.title }} > {{ p.section }}: {{ p.text }}\n{% endfor %}\nQuestion: {{ text }}";

struct Harness {
    dir: PathBuf,
    base: String,
    store: SqliteStore,
    shutdown: CancellationToken,
    model: Model,
    /// The task tracker `on_gap` posts to.
    tasks: Sink,
    http: reqwest::Client,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A charter answering `payload.question` from source `handbook` with a cited draft that a
/// reviewer approves; `cite_extra` adds keys to `draft:`.
fn answer_charter(cite_extra: &str) -> String {
    format!(
        r#"name: answers
description: answers customer questions from the handbook
owner: support@example.test
maintainer: integrations@example.test
system_of_record: helpdesk
mode: live
uses: [helpdesk]
trigger:
  webhook: {{ path: /hooks/answers, verify: none }}
  text: "{{{{ payload.question }}}}"
context:
  kb:
    retrieve: {{ query: "{{{{ payload.question }}}}", sources: [handbook], top_k: 3, min_score: 0.5 }}
routes:
  - when: size(context.kb.passages) > 0
    do: [reply]
  - when: "true"
    do: [note]
actions:
  reply:
    connector: helpdesk
    draft: {{ prompt: prompts/answer.md, provider: local, cite: kb{cite_extra} }}
    request:
      method: POST
      path: "/tickets/{{{{ payload.id }}}}/reply"
      json: {{ body: "{{{{ draft }}}}" }}
    approval: {{ reviewers: [support], expires: 1h }}
    measure: answered
  note:
    log: "no approved answer for {{{{ payload.question }}}}"
    approval: auto
    measure: unanswered
escalation: {{ to: support-leads }}
measure:
  success: [answered]
  other: [unanswered]
"#
    )
}

impl Harness {
    async fn start(charter: &str, max_age: &str, answers: &[&str]) -> Harness {
        let dir =
            std::env::temp_dir().join(format!("charter-knowledge-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let shutdown = CancellationToken::new();
        let helpdesk = Sink::default();
        let helpdesk_addr = helpdesk
            .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
            .await
            .unwrap();
        let tasks = Sink::default();
        let tasks_addr = tasks
            .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
            .await
            .unwrap();
        let model = Model::default();
        model
            .answers
            .lock()
            .unwrap()
            .extend(answers.iter().map(|a| a.to_string()));
        let llm = model_server(model.clone(), shutdown.clone()).await;
        write(
            &dir,
            "charter.yaml",
            &format!(
                r#"worker: {{ lease: 2s, poll_interval: 50ms }}
connectors:
  helpdesk: {{ type: http, base_url: "http://{helpdesk_addr}", timeout: 2s, allow_private: true }}
  tasks: {{ type: http, base_url: "http://{tasks_addr}", timeout: 2s, allow_private: true }}
providers:
  local: {{ type: openai, base_url: "{llm}", model: tiny-test, timeout: 5s, max_retries: 0, allow_private: true }}
knowledge:
  handbook:
    owner: docs-team@example.test
    folder: knowledge/handbook
    url: "https://help.example.test/{{path}}"
    on_gap: tasks:/tasks
    {max_age}
"#
            ),
        );
        write(&dir, "charters/answers.yaml", charter);
        write(&dir, "prompts/answer.md", PROMPT);
        write(&dir, "knowledge/handbook/refunds.md", REFUNDS);
        write(&dir, "knowledge/handbook/shipping.md", SHIPPING);
        write(&dir, "knowledge/handbook/notes.bin", "not a document");
        charter_connect::install_crypto_provider();
        let runtime = Arc::new(Runtime::load(&dir).unwrap_or_else(|e| panic!("{e}")));
        let store = SqliteStore::open(&runtime.store_path()).unwrap();
        let running = charter_server::start(
            runtime,
            store.clone(),
            ServeOptions {
                listen: ([127, 0, 0, 1], 0).into(),
                role: Role::All,
                worker_id: Some("knowledge-w1".into()),
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let h = Harness {
            dir,
            base: format!("http://{}", running.addr),
            store,
            shutdown,
            model,
            tasks,
            http: reqwest::Client::new(),
        };
        // The refresh task indexes the folder at start.
        for _ in 0..200 {
            if h.store.list_documents(None).await.unwrap().len() == 2 {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the knowledge folder was not indexed at start");
    }

    async fn send(&self, payload: Value) -> Uuid {
        let r = self
            .http
            .post(format!("{}/hooks/answers", self.base))
            .json(&payload)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.unwrap();
        Uuid::parse_str(v["id"].as_str().unwrap()).unwrap()
    }

    async fn wait(&self, id: Uuid, status: &str) -> charter_core::model::RunRecord {
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

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.json().await.unwrap()
    }

    async fn ui_page(&self, path: &str) -> String {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let login = http
            .get(format!("{}/login", self.base))
            .send()
            .await
            .unwrap();
        let cookie = login
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .find(|c| c.starts_with("charter_session="))
            .expect("a session cookie");
        let r = http
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.text().await.unwrap()
    }

    async fn gap_posts(&self, n: usize) -> Vec<Value> {
        for _ in 0..100 {
            let got = self.tasks.received();
            if got.len() >= n {
                return got
                    .iter()
                    .map(|r| {
                        assert_eq!(r.path, "/tasks");
                        serde_json::from_str(&r.body).unwrap()
                    })
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} gap posts, got {:?}", self.tasks.received());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cited_draft_awaits_review_with_its_passages() {
    let h = Harness::start(&answer_charter(", cite_every_sentence: true"), "", &[]).await;
    let id = h
        .send(json!({"id": 41, "question": "How long does a refund to my card take?"}))
        .await;
    let run = h.wait(id, "waiting").await;

    // The retrieve step found the refund passage first and recorded it with the run.
    let extras = h.store.run_extras(run.id).await.unwrap();
    let kb = extras
        .iter()
        .find(|x| x.kind == EXTRA_CONTEXT && x.name == "kb")
        .expect("the retrieve step is recorded");
    let passages = kb.body["value"]["passages"].as_array().unwrap();
    assert_eq!(passages[0]["n"], 1);
    assert_eq!(passages[0]["doc_key"], "refunds.md");
    assert_eq!(passages[0]["title"], "Refunds");
    assert_eq!(passages[0]["section"], "Refunds");
    assert_eq!(passages[0]["url"], "https://help.example.test/refunds");
    assert!(
        passages.iter().all(|p| p["score"].as_f64().unwrap() >= 0.5),
        "{passages:?}"
    );
    assert!(kb.body["value"]["gap"].is_null());

    // The prompt carried the numbered passages.
    let seen = h.model.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one draft, accepted at once");
    let user = seen[0]["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.contains(
            "[1] Refunds > Refunds: A refund to a card payment arrives within five working days"
        ),
        "{user}"
    );

    // The draft is stored with its citations mapped to the document.
    let draft = extras.iter().find(|x| x.kind == EXTRA_DRAFT).unwrap();
    assert_eq!(draft.body["text"], DEFAULT_ANSWER);
    let c = &draft.body["citations"];
    assert_eq!(c["valid"], true);
    assert_eq!(c["cited"], json!([1]));
    assert_eq!(c["sources"][0]["url"], "https://help.example.test/refunds");
    assert!(c["repaired_after"].is_null());

    // It waits for a reviewer, who sees the cited passage beside it, with its link.
    let approvals = h
        .store
        .list_approvals(ApprovalFilter {
            event_id: Some(id),
            ..ApprovalFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].params["json"]["body"], DEFAULT_ANSWER);
    let inbox = h.ui_page("/inbox").await;
    assert!(inbox.contains("Cited passages"), "{inbox}");
    assert!(
        inbox.contains("href=\"https://help.example.test/refunds\""),
        "{inbox}"
    );
    assert!(inbox.contains("arrives within five working days after we receive the parcel"));

    // The API's sources and search.
    let sources = h.get("/api/v1/knowledge/sources").await;
    assert_eq!(sources["sources"][0]["documents"], 2, "{sources}");
    let found = h
        .get("/api/v1/knowledge/search?q=parcel%20delivery%20Europe&top_k=2")
        .await;
    assert_eq!(found["passages"][0]["doc_key"], "shipping.md", "{found}");
    assert!(
        h.store
            .list_gaps(GapFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_up_citation_is_refused_escalated_and_recorded_as_a_gap() {
    // Both the draft and its repair cite a passage that was never retrieved.
    let made_up = "Refunds take five days [7].";
    let h = Harness::start(&answer_charter(""), "", &[made_up, made_up]).await;
    let id = h
        .send(json!({"id": 42, "question": "How long does a refund to my card take?"}))
        .await;
    h.wait(id, "waiting").await;

    let seen = h.model.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "the draft and one repair request");
    let repair = seen[1]["messages"].as_array().unwrap();
    assert_eq!(
        repair[2]["content"], made_up,
        "the refused draft is sent back"
    );
    let note = repair[3]["content"].as_str().unwrap();
    assert!(
        note.contains("cites [7]") && note.contains("[1] to ["),
        "{note}"
    );

    // Escalated as an invalid model answer; nothing awaits approval, nothing was sent.
    let esc: Vec<_> = h
        .store
        .list_escalations(EscalationFilter {
            charter: Some("answers".into()),
            ..EscalationFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_id == id)
        .collect();
    assert_eq!(esc.len(), 1, "{esc:?}");
    assert_eq!(esc[0].reason, "invalid_output", "{esc:?}");
    let approvals = h
        .store
        .list_approvals(ApprovalFilter {
            event_id: Some(id),
            ..ApprovalFilter::default()
        })
        .await
        .unwrap();
    assert!(approvals.is_empty());

    // The gap is recorded and sent to the source's owner through the task tracker.
    let gaps = h.store.list_gaps(GapFilter::default()).await.unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].reason, GapReason::DraftRefused);
    assert_eq!(gaps[0].question, "How long does a refund to my card take?");
    assert_eq!(gaps[0].event_id, id);
    assert_eq!(gaps[0].found[0]["doc_key"], "refunds.md");
    let posts = h.gap_posts(1).await;
    assert_eq!(posts[0]["kind"], "knowledge_gap");
    assert_eq!(posts[0]["reason"], "draft_refused");
    assert_eq!(posts[0]["owner"], "docs-team@example.test");
    assert_eq!(posts[0]["source"], "handbook");
    assert_eq!(
        posts[0]["question"],
        "How long does a refund to my card take?"
    );
    let api = h.get("/api/v1/knowledge/gaps?reason=draft_refused").await;
    assert_eq!(api["gaps"][0]["id"], json!(gaps[0].id));
    let page = h.ui_page("/knowledge").await;
    assert!(
        page.contains("How long does a refund to my card take?"),
        "{page}"
    );
    assert!(page.contains("draft_refused"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_citing_nothing_is_repaired_once() {
    let h = Harness::start(
        &answer_charter(""),
        "",
        &["Refunds take five days.", DEFAULT_ANSWER],
    )
    .await;
    let id = h
        .send(json!({"id": 43, "question": "How long does a refund to my card take?"}))
        .await;
    let run = h.wait(id, "waiting").await;
    let extras = h.store.run_extras(run.id).await.unwrap();
    let draft = extras.iter().find(|x| x.kind == EXTRA_DRAFT).unwrap();
    assert_eq!(draft.body["text"], DEFAULT_ANSWER);
    let first = draft.body["citations"]["repaired_after"].as_str().unwrap();
    assert!(first.contains("cites no passage"), "{first}");
    assert!(
        h.store
            .list_gaps(GapFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_found_records_a_gap_and_fires_its_action() {
    let h = Harness::start(&answer_charter(""), "", &[]).await;
    let id = h
        .send(json!({"id": 44, "question": "Can I pay with bitcoin?"}))
        .await;
    let run = h.wait(id, "done").await;
    assert_eq!(run.actions[0].action, "note", "{run:?}");
    assert!(
        h.model.seen.lock().unwrap().is_empty(),
        "no draft without passages"
    );
    let gaps = h.store.list_gaps(GapFilter::default()).await.unwrap();
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].reason, GapReason::NothingFound);
    assert_eq!(gaps[0].sources, vec!["handbook".to_string()]);
    let posts = h.gap_posts(1).await;
    assert_eq!(posts[0]["reason"], "nothing_found");
    assert_eq!(posts[0]["question"], "Can I pay with bitcoin?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_best_passage_is_a_gap() {
    let h = Harness::start(&answer_charter(""), "max_age: 365d", &[]).await;
    // The refunds page was last changed two years ago; re-index it on demand.
    let file = std::fs::File::options()
        .write(true)
        .open(h.dir.join("knowledge/handbook/refunds.md"))
        .unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(730 * 86_400))
        .unwrap();
    drop(file);
    let r = h
        .http
        .post(format!(
            "{}/api/v1/knowledge/sources/handbook/refresh",
            h.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(
        report["unchanged"], 2,
        "same content: nothing re-indexed {report}"
    );
    let id = h
        .send(json!({"id": 45, "question": "How long does a refund to my card take?"}))
        .await;
    h.wait(id, "waiting").await;
    let gaps = h.store.list_gaps(GapFilter::default()).await.unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].reason, GapReason::Stale);
    assert!(gaps[0].why.contains("max_age"), "{}", gaps[0].why);
    let sources = h.get("/api/v1/knowledge/sources").await;
    assert_eq!(sources["sources"][0]["stale"][0]["doc_key"], "refunds.md");
    assert_eq!(
        sources["sources"][0]["stale"][0]["owner"],
        "docs-team@example.test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_on_demand_replaces_a_changed_document() {
    let h = Harness::start(&answer_charter(""), "", &[]).await;
    write(
        &h.dir,
        "knowledge/handbook/refunds.md",
        "# Returns\n\nUnworn items can be exchanged within thirty days.\n",
    );
    std::fs::remove_file(h.dir.join("knowledge/handbook/shipping.md")).unwrap();
    let r = h
        .http
        .post(format!(
            "{}/api/v1/knowledge/sources/handbook/refresh",
            h.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["indexed"], 1, "{report}");
    assert_eq!(report["removed"], 1, "{report}");
    let old = h.get("/api/v1/knowledge/search?q=refund%20card").await;
    assert_eq!(old["passages"], json!([]), "old passages are gone: {old}");
    let new = h.get("/api/v1/knowledge/search?q=exchange%20unworn").await;
    assert_eq!(new["passages"][0]["title"], "Returns", "{new}");
    let audit = h.get("/api/v1/audit?action=knowledge.refresh").await;
    assert_eq!(audit["audit"].as_array().unwrap().len(), 1, "{audit}");
    let missing = h
        .http
        .post(format!("{}/api/v1/knowledge/sources/nope/refresh", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}

/// A Help Center answering two pages of articles, the second through an absolute
/// `next_page` URL (as Zendesk does).
async fn help_center(shutdown: CancellationToken) -> String {
    use axum::extract::{Query, State};
    use std::collections::HashMap;
    async fn articles(
        State(base): State<Arc<Mutex<String>>>,
        Query(q): Query<HashMap<String, String>>,
    ) -> axum::Json<Value> {
        let base = base.lock().unwrap().clone();
        if q.get("page").map(String::as_str) == Some("2") {
            axum::Json(json!({"articles": [
                {"id": 202, "title": "Change your password", "body": "<h2>Steps</h2><p>Open settings and choose a new password.</p>",
                 "html_url": "https://acme.zendesk.test/hc/articles/202", "updated_at": "2025-06-01T10:00:00Z"}
            ], "next_page": null}))
        } else {
            axum::Json(json!({"articles": [
                {"id": 201, "title": "Two-factor sign-in", "body": "<p>Turn on <b>two-factor</b> sign-in under Security.</p>",
                 "html_url": "https://acme.zendesk.test/hc/articles/201", "updated_at": "2025-05-01T10:00:00Z"}
            ], "next_page": format!("{base}/api/v2/help_center/articles.json?page=2&per_page=30")}))
        }
    }
    let base = Arc::new(Mutex::new(String::new()));
    let app = axum::Router::new()
        .route(
            "/api/v2/help_center/articles.json",
            axum::routing::get(articles),
        )
        .with_state(base.clone());
    let url = serve(app, shutdown).await;
    *base.lock().unwrap() = url.clone();
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zendesk_help_center_preset_reads_every_page() {
    let shutdown = CancellationToken::new();
    let hc = help_center(shutdown.clone()).await;
    let dir = std::env::temp_dir().join(format!("charter-hc-{}", Uuid::now_v7().simple()));
    write(
        &dir,
        "charter.yaml",
        &format!(
            "connectors:\n  zendesk: {{ type: http, preset: zendesk, base_url: \"{hc}\", auth: {{ bearer: file:secrets/hc }}, allow_private: true }}\nknowledge:\n  helpcenter: {{ owner: support-ops@example.test, connector: zendesk, preset: zendesk_help_center }}\n"
        ),
    );
    write(&dir, "secrets/hc", "t0ken");
    charter_connect::install_crypto_provider();
    let runtime = Arc::new(Runtime::load(&dir).unwrap_or_else(|e| panic!("{e}")));
    let store = SqliteStore::open(&dir.join("charter.db")).unwrap();
    let state = charter_server::AppState::new(
        runtime.clone(),
        store.clone(),
        Arc::new(charter_connect::HttpExecutor::new().unwrap()),
    );
    let executor = charter_connect::HttpExecutor::new().unwrap();
    let source = runtime.project.knowledge.get("helpcenter").unwrap();
    let report = charter_server::knowledge::refresh_source(&state, &executor, source)
        .await
        .unwrap();
    assert_eq!(report.documents, 2, "{report:?}");
    let docs = store.list_documents(None).await.unwrap();
    assert_eq!(docs[0].doc_key, "201");
    assert_eq!(docs[0].title, "Two-factor sign-in");
    assert_eq!(
        docs[0].url.as_deref(),
        Some("https://acme.zendesk.test/hc/articles/201")
    );
    assert_eq!(docs[0].updated_at, 1_746_093_600_000);
    assert_eq!(docs[0].owner, "support-ops@example.test");
    let hits = store
        .search_passages(vec!["helpcenter".into()], vec!["password".into()], 5)
        .await
        .unwrap();
    assert_eq!(hits[0].doc_key, "202");
    assert_eq!(hits[0].heading, "Steps");
    store.close().await;
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The example project `examples/knowledge` as shipped, with its model, helpdesk and task
/// tracker pointed at local stand-ins: a cited answer waits for review, an unanswerable
/// question is handed to a person and becomes a gap for the help pages' owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_project_answers_with_cited_drafts() {
    let shutdown = CancellationToken::new();
    let helpdesk = Sink::default();
    let helpdesk_addr = helpdesk
        .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await
        .unwrap();
    let tasks = Sink::default();
    let tasks_addr = tasks
        .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await
        .unwrap();
    let model = Model::default();
    model.answers.lock().unwrap().push_back(
        "A refund reaches your original payment method within 5 working days after the item arrives at our warehouse [1]. Card refunds can take another 3 days to show on your statement [1].".into(),
    );
    let llm = model_server(model.clone(), shutdown.clone()).await;
    let dir = std::env::temp_dir().join(format!("charter-example-{}", Uuid::now_v7().simple()));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/knowledge");
    copy_dir(&example, &dir);
    let yaml = std::fs::read_to_string(dir.join("charter.yaml")).unwrap();
    for needle in [
        "http://127.0.0.1:8081/v1",
        "http://127.0.0.1:9090",
        "http://127.0.0.1:9091",
    ] {
        assert!(
            yaml.contains(needle),
            "the example's charter.yaml changed: {needle}"
        );
    }
    let yaml = yaml
        .replace("http://127.0.0.1:8081/v1", &llm)
        .replace("http://127.0.0.1:9090", &format!("http://{helpdesk_addr}"))
        .replace("http://127.0.0.1:9091", &format!("http://{tasks_addr}"));
    std::fs::write(dir.join("charter.yaml"), yaml).unwrap();
    charter_connect::install_crypto_provider();
    let runtime = Arc::new(Runtime::load(&dir).unwrap_or_else(|e| panic!("{e}")));
    let store = SqliteStore::open(&runtime.store_path()).unwrap();
    let running = charter_server::start(
        runtime,
        store.clone(),
        ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            role: Role::All,
            worker_id: Some("example-w1".into()),
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    for _ in 0..200 {
        if store.list_documents(None).await.unwrap().len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(store.list_documents(None).await.unwrap().len(), 5);
    let http = reqwest::Client::new();
    let base = format!("http://{}", running.addr);
    let send = |payload: Value| {
        let http = http.clone();
        let url = format!("{base}/hooks/answers");
        async move {
            let r = http.post(url).json(&payload).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 202);
            let v: Value = r.json().await.unwrap();
            Uuid::parse_str(v["id"].as_str().unwrap()).unwrap()
        }
    };
    let answered =
        send(json!({"id": 1, "question": "How long does a refund take after I return something?"}))
            .await;
    let unanswerable = send(json!({"id": 2, "question": "Do you sell electric scooters?"})).await;
    let mut waiting = Vec::new();
    for _ in 0..300 {
        waiting = store
            .list_approvals(ApprovalFilter {
                event_id: Some(answered),
                ..ApprovalFilter::default()
            })
            .await
            .unwrap();
        let done = store.get_event(unanswerable).await.unwrap().unwrap();
        if !waiting.is_empty() && done.status.as_str() == "done" && !tasks.received().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(waiting.len(), 1, "the cited answer waits for a reviewer");
    let body = waiting[0].params["json"]["body"].as_str().unwrap();
    assert!(body.contains("[1]"), "{body}");
    let runs = store.runs_for_event(answered).await.unwrap();
    let extras = store.run_extras(runs[0].id).await.unwrap();
    let draft = extras.iter().find(|x| x.kind == EXTRA_DRAFT).unwrap();
    assert_eq!(
        draft.body["citations"]["sources"][0]["doc_key"],
        "returns.md"
    );
    assert_eq!(
        draft.body["citations"]["sources"][0]["url"],
        "https://help.nordwind.example/returns"
    );
    assert!(
        helpdesk.received().is_empty(),
        "nothing is sent before review"
    );
    let gap: Value = serde_json::from_str(&tasks.received()[0].body).unwrap();
    assert_eq!(gap["question"], "Do you sell electric scooters?");
    assert_eq!(gap["owner"], "help-pages@nordwind.example");
    store.close().await;
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
