//! The throw-away benchmark project, the Charter server serving it, and the no-op baseline.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use charter_server::{Role, Runtime, ServeOptions};
use charter_store::sqlite::{Durability, Gather, SqliteOptions, SqliteStore};
use charter_testkit::sink::Sink;
use tokio_util::sync::CancellationToken;

use super::{BenchError, CHARTER, Fsync, HOOK_PATH, SECRET, StoreKnobs};

/// Write the benchmark project into `dir`; `sink_url` is the action's target.
pub fn write_project(dir: &Path, sink_url: &str, workers: usize) -> std::io::Result<()> {
    let files: [(&str, String); 5] = [
        ("secrets/hook", SECRET.to_string()),
        ("data/tickets.csv", bench_examples()),
        (
            "charter.yaml",
            format!(
                r#"store: charter.db
worker:
  lease: 30s
  poll_interval: 20ms
  concurrency: {workers}
  shutdown_grace: 5s
connectors:
  sink:
    type: http
    base_url: {sink_url}
    timeout: 5s
    allow_private: true
"#
            ),
        ),
        (
            "schemas/ticket.json",
            r#"{"type":"object","required":["ticket"],"properties":{"ticket":{"type":"object","required":["id","subject"],"properties":{"id":{"type":"integer"},"subject":{"type":"string"},"description":{"type":"string"}}}}}"#
                .to_string(),
        ),
        (
            "charters/bench.yaml",
            format!(
                r#"name: {CHARTER}
description: Benchmark charter - verify, contract, dedupe, rule + embedded classifier, one HTTP action.
owner: bench@example.test
maintainer: bench@example.test
system_of_record: sink
mode: live
uses: [sink]
concurrency: {workers}
trigger:
  webhook:
    path: {HOOK_PATH}
    verify: {{ preset: standard-webhooks, secret: file:secrets/hook }}
  dedupe: {{ header: webhook-id }}
  input_schema: schemas/ticket.json
  text: "{{{{ payload.ticket.subject }}}}"
decide:
  labels: [billing, other]
  stages:
    - rules:
        - {{ when: 'payload.ticket.subject.matches("(?i)^\\[(vip|urgent)\\]")', label: other }}
    - embedded: {{ examples: data/tickets.csv, accept_above: 0.6 }}
  otherwise: other
routes:
  - when: "true"
    do: [update_ticket]
actions:
  update_ticket:
    connector: sink
    request:
      method: PUT
      path: "/api/tickets/{{{{ payload.ticket.id }}}}"
      json: {{ ticket: {{ label: "{{{{ decision.label }}}}" }} }}
    approval: auto
    retry: {{ attempts: 3, backoff: 50ms, max_backoff: 1s }}
    measure: ticket_routed
escalation: {{ to: ops }}
measure:
  success: [ticket_routed]
"#
            ),
        ),
    ];
    for (rel, contents) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, contents)?;
    }
    Ok(())
}

/// The labelled examples the bench charter's embedded stage is trained on at start-up
/// (before any measured window): 384 generated ticket subjects, half `billing`, half `other`.
pub fn bench_examples() -> String {
    const BILLING: [&str; 8] = [
        "refund request for order ord-{n}",
        "i was charged twice for invoice {n}",
        "please refund my last payment ({n})",
        "wrong amount on my invoice {n}",
        "cancel my subscription and refund order ord-{n}",
        "double charge on my card, order {n}",
        "billing question about invoice {n}",
        "payment failed but money left my account ({n})",
    ];
    const OTHER: [&str; 8] = [
        "cannot log in since the update (case {n})",
        "password reset email never arrives ({n})",
        "the app crashes when i open settings (case {n})",
        "how do i export my data? ({n})",
        "feature request: dark mode ({n})",
        "page {n} loads very slowly",
        "two-factor code is rejected (case {n})",
        "error 500 when saving a draft ({n})",
    ];
    let mut out = String::from("text,label\n");
    for n in 0..24 {
        for (b, o) in BILLING.iter().zip(OTHER.iter()) {
            let id = (n * 7919 + 13) % 100_000;
            out.push_str(&format!(
                "\"{}\",billing\n",
                b.replace("{n}", &id.to_string())
            ));
            out.push_str(&format!(
                "\"{}\",other\n",
                o.replace("{n}", &id.to_string())
            ));
        }
    }
    out
}

/// A Charter server on a throw-away project, with a sink as the action target.
pub(super) struct BenchServer {
    pub(super) dir: PathBuf,
    pub(super) base: String,
    pub(super) store: SqliteStore,
    pub(super) sink: Sink,
    pub(super) shutdown: CancellationToken,
    pub(super) done: tokio::task::JoinHandle<()>,
}

impl BenchServer {
    pub(super) async fn start(
        role: Role,
        workers: usize,
        knobs: StoreKnobs,
    ) -> Result<BenchServer, BenchError> {
        let dir =
            std::env::temp_dir().join(format!("charter-bench-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)?;
        let shutdown = CancellationToken::new();
        let sink = Sink::default();
        let sink_addr = sink
            .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
            .await?;
        let started = Self::boot(
            &dir,
            &sink_addr.to_string(),
            role,
            workers,
            knobs,
            &shutdown,
        )
        .await;
        match started {
            Ok((base, store, done)) => Ok(BenchServer {
                dir,
                base,
                store,
                sink,
                shutdown,
                done,
            }),
            Err(e) => {
                shutdown.cancel();
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    pub(super) async fn boot(
        dir: &Path,
        sink_addr: &str,
        role: Role,
        workers: usize,
        knobs: StoreKnobs,
        shutdown: &CancellationToken,
    ) -> Result<(String, SqliteStore, tokio::task::JoinHandle<()>), BenchError> {
        write_project(dir, &format!("http://{sink_addr}"), workers)?;
        let runtime = Arc::new(Runtime::load(dir)?);
        let path = runtime.store_path();
        let store = tokio::task::spawn_blocking(move || {
            let durability = match knobs.fsync {
                Fsync::Full => Durability::Full,
                Fsync::Pipelined => Durability::Pipelined,
            };
            SqliteStore::open_with(
                &path,
                SqliteOptions {
                    durability,
                    gather: knobs.gather.then(Gather::default),
                    ..SqliteOptions::default()
                },
            )
        })
        .await
        .map_err(|e| BenchError::Other(format!("opening the store: {e}")))??;
        let running = charter_server::start(
            runtime,
            store.clone(),
            ServeOptions {
                listen: ([127, 0, 0, 1], 0).into(),
                role,
                worker_id: Some("bench".into()),
            },
            shutdown.clone(),
        )
        .await?;
        Ok((format!("http://{}", running.addr), store, running.done))
    }

    pub(super) async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.done).await;
        self.store.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start the no-op baseline: read the body, answer 202 with a small JSON.
pub(super) async fn start_noop(
    shutdown: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route(HOOK_PATH, post(noop_handler));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(addr)
}

pub(super) async fn noop_handler(
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        format!("{{\"status\":\"accepted\",\"bytes\":{}}}", body.len()),
    )
}
