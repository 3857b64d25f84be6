//! Tests of the open-stream benchmark: the generator keeps its schedule against a slow
//! target (by counts), and a step's figures and verdict from known sends and arrivals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use tokio_util::sync::CancellationToken;

use super::generator::{Plan, Sent, send_open};
use super::target::{ProcCpu, stat_ticks};
use super::{measure, open_body};

/// Requests inside the slow handler now, the most at once, and the total.
#[derive(Default)]
struct Slow {
    now: AtomicU64,
    max: AtomicU64,
    total: AtomicU64,
}

async fn slow_handler(State(s): State<Arc<Slow>>) -> &'static str {
    let n = s.now.fetch_add(1, Ordering::SeqCst) + 1;
    s.max.fetch_max(n, Ordering::SeqCst);
    s.total.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.now.fetch_sub(1, Ordering::SeqCst);
    "ok"
}

/// Against a target that answers each request after 300 ms, a closed loop of a few
/// connections would send a handful; the open stream sends every slot of its schedule,
/// so the target holds many requests at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_stream_sends_every_slot_whatever_the_answers() {
    charter_connect::install_crypto_provider();
    let slow = Arc::new(Slow::default());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let app = Router::new()
        .route("/hooks/open", post(slow_handler))
        .with_state(slow.clone());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let plan = Plan {
        rate: 200.0,
        duration: Duration::from_millis(500),
        first_id: 1,
    };
    let epoch = Instant::now();
    let sent = send_open(
        &client,
        &format!("http://{addr}/hooks/open"),
        plan,
        epoch,
        open_body,
        10_000,
    )
    .await;
    shutdown.cancel();
    assert_eq!(plan.count(), 100);
    assert_eq!(sent.planned, 100);
    assert_eq!((sent.started, sent.skipped), (100, 0));
    assert_eq!(sent.acked, 100, "{:?}", sent.errors);
    assert_eq!(slow.total.load(Ordering::SeqCst), 100);
    assert_eq!(sent.acked_due_ns.iter().flatten().count(), 100);
    assert_eq!(sent.ack_us.len(), 100);
    // 300 ms per answer with a slot every 5 ms: at least 60 slots come before the first
    // answer, so at least 60 requests are out at once (a late generator sends in bursts,
    // which only raises it).
    assert!(sent.max_in_flight >= 60, "{}", sent.max_in_flight);
    assert!(slow.max.load(Ordering::SeqCst) >= 60);
}

/// Past the cap on requests in flight, slots are skipped and counted, not sent late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_past_the_in_flight_cap_are_skipped_and_counted() {
    charter_connect::install_crypto_provider();
    let slow = Arc::new(Slow::default());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hooks/open", post(slow_handler))
        .with_state(slow.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let plan = Plan {
        rate: 200.0,
        duration: Duration::from_millis(200),
        first_id: 1,
    };
    let sent = send_open(
        &client,
        &format!("http://{addr}/hooks/open"),
        plan,
        Instant::now(),
        open_body,
        5,
    )
    .await;
    // 40 slots within 200 ms, no answer before 300 ms: 5 sent, 35 skipped.
    assert_eq!(sent.planned, 40);
    assert_eq!(sent.started, 5);
    assert_eq!(sent.skipped, 35);
    assert_eq!(sent.acked, 5);
    assert_eq!(slow.total.load(Ordering::SeqCst), 5);
}

const MS: u64 = 1_000_000;

fn sent_with(due_ms: &[Option<u64>]) -> Sent {
    Sent {
        planned: due_ms.len() as u64,
        started: due_ms.len() as u64,
        acked: due_ms.iter().flatten().count() as u64,
        acked_due_ns: due_ms.iter().map(|d| d.map(|d| d * MS)).collect(),
        ack_us: vec![1_000; due_ms.iter().flatten().count()],
        ..Sent::default()
    }
}

#[test]
fn a_step_counts_cycles_backlog_and_doubles_from_arrivals() {
    let plan = Plan {
        rate: 10.0,
        duration: Duration::from_secs(1),
        first_id: 100,
    };
    // Ten slots 100 ms apart from t = 0.
    let due: Vec<Option<u64>> = (0..10).map(|i| Some(i * 100)).collect();
    let sent = sent_with(&due);
    // Each arrives 20 ms after its slot; id 105 twice; an unknown id is ignored.
    let mut arrivals: Vec<(u64, u64)> = (0..10).map(|i| (100 + i, (i * 100 + 20) * MS)).collect();
    arrivals.push((105, 900 * MS));
    arrivals.push((7, 10 * MS));
    let step = measure(&plan, &sent, &arrivals, 0, 1_000 * MS);
    assert_eq!((step.applied, step.unfinished, step.doubled), (10, 0, 1));
    assert_eq!(step.cycle_p50_ms, Some(20.0));
    assert_eq!(step.cycle_p99_ms, Some(20.0));
    // Halfway (500 ms), the job due at 500 ms is still on its way (it arrives at 520 ms).
    assert_eq!((step.backlog_mid, step.backlog_end), (1, 0));
    assert!(step.sustained, "{}", step.verdict);
    assert!((step.applied_in_window_per_sec - 10.0).abs() < 1e-9);
}

#[test]
fn a_step_with_a_growing_queue_is_not_sustained() {
    let plan = Plan {
        rate: 100.0,
        duration: Duration::from_secs(1),
        first_id: 1,
    };
    // 100 slots 10 ms apart; the k-th arrives after 10 + 5k ms: the queue grows.
    let due: Vec<Option<u64>> = (0..100).map(|i| Some(i * 10)).collect();
    let sent = sent_with(&due);
    let arrivals: Vec<(u64, u64)> = (0..100)
        .filter(|i| *i < 90)
        .map(|i| (1 + i, (i * 10 + 10 + 5 * i) * MS))
        .collect();
    let step = measure(&plan, &sent, &arrivals, 0, 1_000 * MS);
    assert_eq!((step.applied, step.unfinished), (90, 10));
    // Ten never arrived: p99 is unbounded.
    assert_eq!(step.cycle_p99_ms, None);
    assert_eq!(step.cycle_p50_ms, Some(10.0 + 5.0 * 49.0));
    assert!(step.backlog_end > step.backlog_mid, "{step:?}");
    assert!(!step.sustained);
    assert!(
        step.verdict.contains("never reached the sink"),
        "{}",
        step.verdict
    );
    assert!(step.verdict.contains("backlog"), "{}", step.verdict);
}

#[test]
fn a_step_with_errors_or_late_sends_is_not_sustained() {
    let plan = Plan {
        rate: 10.0,
        duration: Duration::from_secs(1),
        first_id: 1,
    };
    let mut sent = sent_with(&[Some(0), None]);
    sent.errors = BTreeMap::from([("500".to_string(), 1)]);
    let step = measure(&plan, &sent, &[(1, 5 * MS)], 0, 1_000 * MS);
    assert!(!step.sustained);
    assert!(step.verdict.contains("1 errors"), "{}", step.verdict);
    let mut sent = sent_with(&[Some(0), Some(100)]);
    sent.late = 1;
    let step = measure(&plan, &sent, &[(1, 5 * MS), (2, 105 * MS)], 0, 1_000 * MS);
    assert!(step.verdict.contains("late"), "{}", step.verdict);
}

#[test]
fn thread_cpu_is_read_from_proc_stat_lines() {
    let line = "4242 (tokio-runtime-w) S 1 4242 4242 0 -1 4194560 900 0 0 0 350 150 0 0 20 0 9";
    assert_eq!(stat_ticks(line), Some(("tokio-runtime-w".to_string(), 500)));
    let odd = "7 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 11 12 0 0";
    assert_eq!(stat_ticks(odd), Some(("a (b) c".to_string(), 23)));
    assert_eq!(stat_ticks("garbage"), None);
    let before = ProcCpu {
        total: 100,
        threads: BTreeMap::from([("w".to_string(), 60), ("gone".to_string(), 5)]),
    };
    let after = ProcCpu {
        total: 150,
        threads: BTreeMap::from([("w".to_string(), 90), ("new".to_string(), 4)]),
    };
    let (total, per) = after.ms_since(&before);
    assert!((total - 500.0).abs() < 1e-9);
    assert!((per["w"] - 300.0).abs() < 1e-9);
    assert!((per["new"] - 40.0).abs() < 1e-9);
    assert!(!per.contains_key("gone"));
    // This process can be read.
    if cfg!(target_os = "linux") {
        let me = ProcCpu::read(std::process::id()).unwrap();
        assert!(!me.threads.is_empty());
    }
}

#[test]
fn bodies_carry_their_id_and_half_the_keyword() {
    let a: serde_json::Value = serde_json::from_slice(&open_body(10)).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&open_body(11)).unwrap();
    assert_eq!(a["ticket"]["id"], 10);
    assert!(a["ticket"]["subject"].as_str().unwrap().contains("refund"));
    assert!(!b["ticket"]["subject"].as_str().unwrap().contains("refund"));
}
