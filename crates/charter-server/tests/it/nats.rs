//! The NATS JetStream source against the local nats-server at 127.0.0.1:4222 (`.ci/run`
//! starts it when it is installed and not running). Each test uses its own stream, subject
//! and durable consumer. When NATS is not reachable the tests skip with one line, or fail
//! under `CI=true` (`tests/tools.rs`).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use charter_core::model::EventStatus;
use charter_server::{Role, Runtime, ServeOptions};
use charter_store::sqlite::SqliteStore;
use charter_store::{EventFilter, EventStore};
use tokio_util::sync::CancellationToken;

const NATS: &str = "127.0.0.1:4222";

/// Whether to run: NATS reachable, or the test skips with one line (`crate::tools`: never
/// under CI=true).
fn nats_or_skip() -> bool {
    crate::tools::available(crate::tools::Tool::Nats, || {
        crate::tools::tcp_listening(NATS)
    })
}

/// Unique names for one test: stream, subject prefix, durable.
struct Names {
    stream: String,
    prefix: String,
    durable: String,
}

fn names() -> Names {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    Names {
        stream: format!("CHARTER_IT_{}", tag.to_uppercase()),
        prefix: format!("charter-it.{tag}"),
        durable: format!("charter-it-{tag}"),
    }
}

fn write(dir: &Path, rel: &str, contents: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, contents).unwrap();
}

/// A project with one charter, `orders`, consuming `<prefix>.>` from the stream.
fn project(n: &Names) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("charter-nats-{}", uuid::Uuid::now_v7().simple()));
    write(
        &dir,
        "charter.yaml",
        "worker: { poll_interval: 50ms, lease: 5s, shutdown_grace: 2s }\n\
         connectors:\n  erp: { type: http, base_url: http://127.0.0.1:9, allow_private: true }\n",
    );
    write(
        &dir,
        "schemas/order.json",
        r#"{"type":"object","required":["order_id"],"properties":{"order_id":{"type":"string"}}}"#,
    );
    write(
        &dir,
        "charters/orders.yaml",
        &format!(
            r#"name: orders
description: Orders published on NATS.
owner: ops@example.test
maintainer: integrations@example.test
system_of_record: erp
mode: live
uses: [erp]
trigger:
  nats:
    url: nats://{NATS}
    stream: {stream}
    subject: "{prefix}.>"
    durable: {durable}
    create_stream: true
  input_schema: schemas/order.json
routes:
  - when: "true"
    do: [note]
actions:
  note: {{ log: "order {{{{ payload.order_id }}}}", approval: auto }}
escalation: {{ to: ops }}
measure:
  done: [noted]
"#,
            stream = n.stream,
            prefix = n.prefix,
            durable = n.durable,
        ),
    );
    dir
}

/// A server started in-process over the project's SQLite file.
struct Node {
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
    store: SqliteStore,
}

async fn boot(dir: &Path) -> Node {
    charter_connect::install_crypto_provider();
    let runtime = Arc::new(Runtime::load(dir).unwrap_or_else(|e| panic!("{e}")));
    let store = SqliteStore::open(&runtime.store_path()).unwrap();
    let shutdown = CancellationToken::new();
    let running = charter_server::start(
        runtime,
        store.clone(),
        ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            role: Role::All,
            worker_id: Some("nats-it".into()),
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    Node {
        shutdown,
        done: running.done,
        store,
    }
}

impl Node {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.done)
            .await
            .expect("the server did not stop within 20 s")
            .unwrap();
    }

    async fn events(&self) -> Vec<charter_core::model::EventRecord> {
        self.store
            .list_events(EventFilter {
                charter: Some("orders".into()),
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    async fn rejected(&self) -> usize {
        self.store
            .list_rejected(Some("orders".into()), 10_000)
            .await
            .unwrap()
            .len()
    }

    /// Wait until `n` events are stored.
    async fn wait_events(&self, n: usize) {
        for _ in 0..400 {
            if self.events().await.len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "expected {n} events within 20 s, have {}",
            self.events().await.len()
        );
    }
}

async fn jetstream_context() -> (async_nats::Client, jetstream::Context) {
    let client = async_nats::connect(NATS).await.unwrap();
    let js = jetstream::new(client.clone());
    (client, js)
}

/// Publish a JSON (or any) body, with a message id when given; returns the stream sequence
/// and whether the server took it for a duplicate.
async fn publish(
    js: &jetstream::Context,
    subject: String,
    id: Option<&str>,
    body: &str,
) -> (u64, bool) {
    let mut msg = jetstream::message::PublishMessage::build().payload(body.to_string().into());
    if let Some(id) = id {
        msg = msg.message_id(id);
    }
    let ack: PublishAckFuture = js.send_publish(subject, msg).await.unwrap();
    let ack = ack.await.unwrap();
    (ack.sequence, ack.duplicate)
}

/// Wait until the durable consumer has nothing pending and nothing awaiting an ack: every
/// message delivered so far was acknowledged.
async fn wait_consumer_drained(js: &jetstream::Context, n: &Names) {
    let stream = js.get_stream(&n.stream).await.unwrap();
    for _ in 0..400 {
        let mut consumer: jetstream::consumer::PullConsumer =
            stream.get_consumer(&n.durable).await.unwrap();
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the consumer still has pending or unacknowledged messages after 20 s");
}

#[tokio::test]
async fn nats_messages_are_stored_once_across_a_restart() {
    if !nats_or_skip() {
        return;
    }
    let n = names();
    let (_client, js) = jetstream_context().await;
    // The stream exists already (create_stream then only looks it up). Its duplicate window
    // is short so that re-published message ids reach the consumer: Charter's own dedupe,
    // not the server's, must drop them.
    js.create_stream(stream::Config {
        name: n.stream.clone(),
        subjects: vec![format!("{}.>", n.prefix)],
        storage: stream::StorageType::Memory,
        duplicate_window: Duration::from_millis(100),
        max_age: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .unwrap();
    let subject = |s: &str| format!("{}.{s}", n.prefix);

    for i in 0..20 {
        let (_, dup) = publish(
            &js,
            subject("created"),
            Some(&format!("order-{i}")),
            &format!(r#"{{"order_id":"ORD-{i}"}}"#),
        )
        .await;
        assert!(!dup);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..5 {
        let (_, dup) = publish(
            &js,
            subject("created"),
            Some(&format!("order-{i}")),
            &format!(r#"{{"order_id":"ORD-{i}"}}"#),
        )
        .await;
        assert!(
            !dup,
            "the server dropped a repeat; the test needs it delivered"
        );
    }
    publish(&js, subject("created"), Some("bad-json"), "not json {").await;
    publish(
        &js,
        subject("created"),
        Some("bad-contract"),
        r#"{"order_id":5}"#,
    )
    .await;

    let dir = project(&n);
    let node = boot(&dir).await;
    node.wait_events(20).await;
    wait_consumer_drained(&js, &n).await;
    let events = node.events().await;
    assert_eq!(events.len(), 20, "five repeats must not be stored again");
    let keys: BTreeSet<String> = events
        .iter()
        .map(|e| e.event.dedupe_key.clone().unwrap())
        .collect();
    let expected: BTreeSet<String> = (0..20).map(|i| format!("order-{i}")).collect();
    assert_eq!(keys, expected);
    let first = &events[0].event;
    assert_eq!(first.source, format!("nats:{}", subject("created")));
    assert_eq!(first.headers["nats-subject"], subject("created"));
    assert!(first.headers.contains_key("nats-msg-id"));
    assert!(first.headers.contains_key("nats-stream-sequence"));
    assert_eq!(
        node.rejected().await,
        2,
        "invalid JSON and contract violation are kept"
    );
    // Stored events are processed: the worker was woken.
    for _ in 0..400 {
        if node
            .events()
            .await
            .iter()
            .all(|e| e.status == EventStatus::Done)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        node.events()
            .await
            .iter()
            .all(|e| e.status == EventStatus::Done)
    );
    node.stop().await;

    // While the server is down: ten new orders, a repeat of an old one, one without an id.
    for i in 20..30 {
        publish(
            &js,
            subject("created"),
            Some(&format!("order-{i}")),
            &format!(r#"{{"order_id":"ORD-{i}"}}"#),
        )
        .await;
    }
    let (_, dup) = publish(
        &js,
        subject("created"),
        Some("order-5"),
        r#"{"order_id":"ORD-5"}"#,
    )
    .await;
    assert!(!dup);
    let (seq, _) = publish(&js, subject("updated"), None, r#"{"order_id":"ORD-x"}"#).await;

    let node = boot(&dir).await;
    node.wait_events(31).await;
    wait_consumer_drained(&js, &n).await;
    let events = node.events().await;
    assert_eq!(events.len(), 31, "old messages must not be consumed again");
    let keys: BTreeSet<String> = events
        .iter()
        .map(|e| e.event.dedupe_key.clone().unwrap())
        .collect();
    let mut expected: BTreeSet<String> = (0..30).map(|i| format!("order-{i}")).collect();
    expected.insert(format!("{}:{seq}", n.stream));
    assert_eq!(
        keys, expected,
        "no message id: the stream sequence is the key"
    );
    assert_eq!(
        node.rejected().await,
        2,
        "rejected messages were acknowledged"
    );
    node.stop().await;

    js.delete_stream(&n.stream).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_stream_is_created_when_asked() {
    if !nats_or_skip() {
        return;
    }
    let n = names();
    let (_client, js) = jetstream_context().await;
    let dir = project(&n);
    let node = boot(&dir).await;
    let mut created = None;
    for _ in 0..400 {
        if let Ok(s) = js.get_stream(&n.stream).await {
            created = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut created = created.expect("the server did not create the stream within 20 s");
    let info = created.info().await.unwrap();
    assert_eq!(info.config.subjects, vec![format!("{}.>", n.prefix)]);
    assert_eq!(info.config.storage, stream::StorageType::File);

    let (seq, _) = publish(
        &js,
        format!("{}.created", n.prefix),
        None,
        r#"{"order_id":"ORD-1"}"#,
    )
    .await;
    node.wait_events(1).await;
    let events = node.events().await;
    assert_eq!(
        events[0].event.dedupe_key.as_deref(),
        Some(format!("{}:{seq}", n.stream).as_str())
    );
    assert_eq!(events[0].event.payload["order_id"], "ORD-1");
    node.stop().await;

    js.delete_stream(&n.stream).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
