//! Unit tests of `charter bench`: parsers, percentiles, CPU samples, and short real runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_core::verify;
use tokio_util::sync::CancellationToken;

use super::deliveries::{Delivery, Signer};
use super::e2e::{histogram_mean, runs_finished};
use super::entry::{http_client, median, run};
use super::load::{PoolEnd, connection, latency, percentile};
use super::machine::{CpuSample, civil_date, now_unix, proc_status_mb, status_field_kb};
use super::output::{ratio_line, render_table};
use super::servers::start_noop;
use super::{BenchArgs, Fsync, HOOK_PATH, RATIO_TARGET_SENDERS, SECRET, Which, parse_concurrency};
use crate::test_tools as tools;

#[test]
fn percentiles_use_nearest_rank() {
    let v: Vec<u32> = (1..=1000).collect();
    assert_eq!(percentile(&v, 0.5), Some(500));
    assert_eq!(percentile(&v, 0.99), Some(990));
    assert_eq!(percentile(&v, 0.999), Some(999));
    assert_eq!(percentile(&v, 1.0), Some(1000));
    assert_eq!(percentile(&v, 0.0), Some(1));
    assert_eq!(percentile::<u32>(&[], 0.5), None);
    let l = latency(&[1000, 2000, 3000, 4000]);
    assert_eq!(l.p50_ms, 2.0);
    assert_eq!(l.max_ms, 4.0);
}

#[test]
fn civil_dates() {
    assert_eq!(civil_date(0), "1970-01-01");
    assert_eq!(civil_date(951_782_400), "2000-02-29");
    assert_eq!(civil_date(1_795_392_000), "2026-11-23");
    assert_eq!(civil_date(1_795_391_999), "2026-11-22");
    assert_eq!(civil_date(-86_400), "1969-12-31");
}

#[test]
fn proc_status_fields() {
    let text = "Name:\tcharter\nVmHWM:\t  123456 kB\nVmRSS:\t   65432 kB\n";
    assert_eq!(status_field_kb(text, "VmRSS"), Some(65_432));
    assert_eq!(status_field_kb(text, "VmHWM"), Some(123_456));
    assert_eq!(status_field_kb(text, "VmSwap"), None);
    // A field is matched by its whole name, not by prefix.
    assert_eq!(status_field_kb("VmRSSX:\t1 kB\n", "VmRSS"), None);
    // On Linux, this process has a resident set.
    if cfg!(target_os = "linux") {
        assert!(proc_status_mb("VmRSS").is_some_and(|mb| mb > 0.0));
    }
}

#[test]
fn runs_finished_sums_outcomes_of_one_charter() {
    let text = concat!(
        "# TYPE charter_runs_total counter\n",
        "charter_runs_total{charter=\"bench\",outcome=\"done\"} 41\n",
        "charter_runs_total{charter=\"bench\",outcome=\"failed\"} 1\n",
        "charter_runs_total{charter=\"benchmark\",outcome=\"done\"} 7\n",
        "charter_events_received_total{charter=\"bench\"} 99\n",
    );
    assert_eq!(runs_finished(text, "bench"), 42);
    assert_eq!(runs_finished(text, "other"), 0);
}

#[test]
fn histogram_mean_divides_sum_by_count() {
    let text = concat!(
        "charter_ack_latency_seconds_bucket{le=\"+Inf\"} 4\n",
        "charter_ack_latency_seconds_sum 0.02\n",
        "charter_ack_latency_seconds_count 4\n",
    );
    let mean = histogram_mean(text, "charter_ack_latency_seconds").unwrap();
    assert!((mean - 0.005).abs() < 1e-12);
    assert_eq!(
        histogram_mean("x_sum 0\nx_count 0\n", "x"),
        None,
        "no observations, no mean"
    );
    assert_eq!(histogram_mean(text, "charter_cycle_time_seconds"), None);
}

#[test]
fn concurrency_values_are_bounded() {
    assert_eq!(parse_concurrency("32"), Ok(32));
    assert!(parse_concurrency("0").is_err());
    assert!(parse_concurrency("x").is_err());
    assert!(parse_concurrency("100000").is_err());
}

#[test]
fn signed_deliveries_verify_and_are_unique() {
    let signer = Signer::new(SECRET).unwrap();
    let now = now_unix();
    let a = signer.sign(now).unwrap();
    let b = signer.sign(now).unwrap();
    let headers = |d: &Delivery| -> std::collections::BTreeMap<String, String> {
        signer
            .headers(d)
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.unwrap().to_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (ha, hb) = (headers(&a), headers(&b));
    assert_ne!(ha["webhook-id"], hb["webhook-id"]);
    verify::verify(&signer.spec, &[SECRET.to_string()], &ha, &a.body, now).unwrap();
    // A wrong secret is refused: the signature really covers the body.
    assert!(verify::verify(&signer.spec, &["other".to_string()], &ha, &a.body, now).is_err());
    let payload: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert!(payload["ticket"]["id"].is_i64());
}

fn tiny_args(which: Which) -> BenchArgs {
    BenchArgs {
        which,
        duration: Duration::from_millis(400),
        concurrency: vec![4],
        workers: 8,
        fsync: Fsync::Full,
        no_gather: false,
        drain_timeout: Duration::from_secs(30),
        rounds: 1,
        postgres: None,
        nodes: vec![1],
        pg_backlog: Vec::new(),
        pg_backlog_window: 2000,
        pg_backlog_rounds: 3,
        json: true,
        out: None,
        paced_rate: 0.0,
        e2e_rate: 0.0,
        rates: vec![100.0],
        rule: super::open::target::Rule::Matches,
        sink_port: 0,
        compare_url: None,
        compare_pid: None,
        compare_name: "node-red".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_ingest_run_sends_on_its_schedule() {
    charter_connect::install_crypto_provider();
    let args = BenchArgs {
        paced_rate: 200.0,
        ..tiny_args(Which::Ingest)
    };
    let report = run(&args).await.unwrap();
    let paced = report.ingest_paced.expect("the paced run");
    assert_eq!(paced.offered_per_sec, Some(200.0));
    assert_eq!(paced.concurrency, 4);
    assert_eq!(paced.errors, 0, "{:?}", paced.error_kinds);
    // The schedule bounds what is sent: 200/s over the 0.4 s window (plus one slot per
    // connection at its edge), where the unpaced run of the same load answers far more.
    assert!(paced.acks > 0);
    assert!(paced.acks <= 80 + 4, "{} acks", paced.acks);
    // The unpaced run of the same load is not bound by the schedule: it answers more
    // than the schedule's cap (not a multiple of the paced run: on a loaded machine the
    // unpaced window may be slow, and that is not what this test is about).
    assert!(
        report.ingest[0].acks > 80 + 4,
        "the unpaced run is not bound by it: {} acks",
        report.ingest[0].acks
    );
}

#[test]
fn cpu_samples_parse_proc_and_divide_per_ack() {
    // A command name with a space and a parenthesis, as /proc/<pid>/stat may show.
    let own = "4242 (charter (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 350 150 0 0 20 0 9";
    let machine = "cpu  1000 5 300 8000 100 0 50 20 0 0\ncpu0 500 2 150 4000 50 0 25 10 0 0\n";
    let a = CpuSample::parse(own, machine).unwrap();
    assert_eq!(a.process_ticks, 500);
    assert_eq!(a.machine_idle_ticks, 8100);
    assert_eq!(a.machine_total_ticks, 9475);
    let own2 = own.replace(" 350 150 ", " 550 250 ");
    let machine2 = "cpu  1150 5 350 8040 110 0 60 20 0 0\n";
    let b = CpuSample::parse(&own2, machine2).unwrap();
    // 300 ticks of 10 ms = 3 s of CPU over 1,000 acks: 3,000 us each.
    assert!((b.process_us_since(&a, 1_000).unwrap() - 3_000.0).abs() < 1e-9);
    assert_eq!(b.process_us_since(&a, 0), None);
    // 50 idle ticks (40 idle + 10 iowait) of 260.
    assert!((b.idle_pct_since(&a).unwrap() - 100.0 * 50.0 / 260.0).abs() < 1e-9);
    assert_eq!(
        a.process_us_since(&b, 1),
        None,
        "time does not run backwards"
    );
    assert_eq!(CpuSample::parse("garbage", machine), None);
    assert_eq!(CpuSample::parse(own, "intr 1 2 3"), None);
}

/// The ratio's verdict is given at the target's load only, on the unrounded median.
#[test]
fn the_ratio_verdict_is_given_at_256_connections_only() {
    let line = ratio_line(
        RATIO_TARGET_SENDERS,
        256,
        0.4996,
        Some(&[0.51, 0.4996, 0.47]),
        Some(0.53),
    );
    assert_eq!(
        line,
        "ingest / no-op at 256 connections: 0.500 (target >= 0.5 at 256 senders: not met); \
         median of 3 adjacent pairs: 0.51, 0.50, 0.47; by CPU per ack, no-op / ingest: 0.53"
    );
    let line = ratio_line(RATIO_TARGET_SENDERS, 256, 0.5, None, None);
    assert!(
        line.ends_with("0.500 (target >= 0.5 at 256 senders: met)"),
        "{line}"
    );
    // Above the target at another concurrency: no verdict, the reason instead.
    let line = ratio_line(RATIO_TARGET_SENDERS, 32, 0.9, Some(&[0.9]), None);
    assert!(
        line.starts_with("ingest / no-op at 32 connections: 0.900 (for information"),
        "{line}"
    );
    assert!(!line.contains("met"), "{line}");
}

#[test]
fn median_of_odd_and_even_counts() {
    assert_eq!(median(&[]), None);
    assert_eq!(median(&[0.4]), Some(0.4));
    assert_eq!(median(&[0.3, 0.5, 0.9]), Some(0.5));
    assert_eq!(median(&[0.2, 0.4, 0.6, 1.0]), Some(0.5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_noop_runs_count_acks_without_errors() {
    charter_connect::install_crypto_provider();
    let args = BenchArgs {
        rounds: 2,
        ..tiny_args(Which::Ingest)
    };
    let report = run(&args).await.unwrap();
    // Two rounds of one adjacent ingest/no-op pair each.
    assert_eq!(report.ingest.len(), 2);
    assert_eq!(report.noop.len(), 2);
    let pairs = &report.ingest_over_noop_rounds[&4];
    assert_eq!(pairs.len(), 2);
    for (k, ratio) in pairs.iter().enumerate() {
        let expected = report.ingest[k].acks_per_sec / report.noop[k].acks_per_sec;
        assert!(
            (ratio - expected).abs() < 1e-9,
            "pair {k}: {ratio} vs {expected}"
        );
    }
    assert!((report.ingest_over_noop[&4] - (pairs[0] + pairs[1]) / 2.0).abs() < 1e-9);
    for r in report.ingest.iter().chain(&report.noop) {
        assert!(r.acks > 0, "{} acked nothing", r.target);
        assert_eq!(r.errors, 0, "{}: {:?}", r.target, r.error_kinds);
        assert!(r.latency.p50_ms > 0.0 && r.latency.p50_ms <= r.latency.p99_ms);
    }
    assert!(report.ingest_over_noop.contains_key(&4));
    // CPU per ack is read for every run, and its pair ratio is the median of the pairs.
    let mut cpu_pairs = Vec::new();
    for (i, n) in report.ingest.iter().zip(&report.noop) {
        let (ci, cn) = (i.cpu_us_per_ack.unwrap(), n.cpu_us_per_ack.unwrap());
        assert!(ci >= 0.0 && cn >= 0.0);
        for idle in [i.machine_idle_pct.unwrap(), n.machine_idle_pct.unwrap()] {
            assert!((0.0..=100.0).contains(&idle), "idle {idle}%");
        }
        if ci > 0.0 {
            cpu_pairs.push(cn / ci);
        }
    }
    cpu_pairs.sort_by(f64::total_cmp);
    match median(&cpu_pairs) {
        Some(m) => assert!((report.noop_over_ingest_cpu[&4] - m).abs() < 1e-9),
        None => assert!(report.noop_over_ingest_cpu.is_empty()),
    }
    let st = report.ingest[0].store.as_ref().unwrap();
    // Every ack is one durable write, and group commit never makes more commits than writes.
    assert!(st.commands >= report.ingest[0].acks);
    assert!(st.batches >= 1 && st.batches <= st.commands);
    assert!(st.mean_store_wait_ms.is_some_and(|ms| ms > 0.0));
    // The writer's time is a share of the run's wall time (a batch straddling the
    // window's edges may add a little).
    assert!(
        st.writer_busy_pct > 0.0 && st.writer_busy_pct < 110.0,
        "{st:?}"
    );
    assert!(st.commit_pct > 0.0 && st.commit_pct < 110.0, "{st:?}");
    assert!(report.memory.idle_rss_mb.is_some_and(|m| m > 0.0));
    let table = render_table(&report);
    assert!(table.contains("ingest / no-op at 4 connections"));
    assert!(table.contains("writer busy"), "{table}");
    // 4 connections is not the target's load: the ratio is shown for information.
    assert!(
        table.contains("the target is set at 256 senders"),
        "{table}"
    );
    assert_eq!(report.ratio_target_senders, 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_pool_sends_its_deliveries_again_and_signs_none() {
    charter_connect::install_crypto_provider();
    let shutdown = CancellationToken::new();
    let addr = start_noop(shutdown.clone()).await.unwrap();
    let url: Arc<str> = Arc::from(format!("http://{addr}{HOOK_PATH}").as_str());
    let signer = Arc::new(Signer::new(SECRET).unwrap());
    let client = http_client(2).unwrap();
    let now = Instant::now();
    let end = now + Duration::from_millis(300);
    let replay = connection(
        client.clone(),
        url.clone(),
        signer.clone(),
        signer.pool(2),
        PoolEnd::Replay,
        now,
        end,
        None,
    )
    .await;
    assert!(replay.acks > 2, "only {} acks", replay.acks);
    assert_eq!(replay.signed_late, 0);
    // Every request past the two pooled deliveries was a replay.
    assert_eq!(replay.replayed, replay.acks + replay.acks_outside - 2);
    let sign = connection(
        client,
        url,
        signer.clone(),
        signer.pool(2),
        PoolEnd::Sign,
        Instant::now(),
        Instant::now() + Duration::from_millis(300),
        None,
    )
    .await;
    assert_eq!(sign.replayed, 0);
    assert_eq!(sign.signed_late, sign.acks + sign.acks_outside - 2);
    assert!(sign.errors.is_empty(), "{:?}", sign.errors);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_run_processes_every_acked_event_once() {
    charter_connect::install_crypto_provider();
    let report = run(&tiny_args(Which::E2e)).await.unwrap();
    let e = report.e2e.unwrap();
    assert!(e.send.acks > 0);
    assert!(e.drained, "queue did not drain");
    assert_eq!(e.done, e.send.acks + e.send.acks_outside_window);
    assert_eq!(e.failed + e.unfinished, 0);
    assert_eq!(e.sink_applied as u64, e.done);
    assert_eq!(e.sink_doubled, 0);
    // The bench charter decides with its embedded classifier (trained at start-up).
    assert_eq!(e.decided_embedded, e.done);
    assert!(e.events_per_sec > 0.0);
    assert!(e.cycle_p50_ms <= e.cycle_p99_ms);
}

/// At an offered rate the senders keep their schedule (no more than it allows), and
/// every acknowledged event is still processed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_e2e_run_offers_its_rate_and_processes_every_event_once() {
    charter_connect::install_crypto_provider();
    let args = BenchArgs {
        e2e_rate: 100.0,
        duration: Duration::from_secs(1),
        concurrency: vec![2, 4],
        ..tiny_args(Which::E2e)
    };
    let report = run(&args).await.unwrap();
    let e = report.e2e.unwrap();
    assert_eq!(e.send.offered_per_sec, Some(100.0));
    assert_eq!(
        e.send.concurrency, 4,
        "paced senders use the largest concurrency"
    );
    let sent = e.send.acks + e.send.acks_outside_window;
    // 100/s for 1 s: the schedule allows 100 sends (one more per connection at the edge).
    assert!((50..=104).contains(&sent), "sent {sent}");
    assert!(e.drained, "queue did not drain");
    assert_eq!(e.done, sent);
    assert_eq!(e.sink_applied as u64, e.done);
    assert_eq!(e.sink_doubled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_on_postgres_with_two_nodes_processes_every_acked_event_once() {
    let url = std::env::var("CHARTER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    if !tools::available(tools::Tool::Postgres, || {
        tools::tcp_listening(&tools::pg_addr(&url))
    }) {
        return;
    }
    charter_connect::install_crypto_provider();
    let mut args = tiny_args(Which::E2e);
    args.postgres = Some(url);
    args.nodes = vec![2];
    let report = run(&args).await.unwrap();
    assert_eq!(report.e2e_postgres.len(), 1);
    let e = &report.e2e_postgres[0];
    assert_eq!((e.store, e.nodes), ("postgres", 2));
    assert!(e.send.acks > 0);
    assert!(e.drained, "queue did not drain");
    assert_eq!(e.done, e.send.acks + e.send.acks_outside_window);
    assert_eq!(e.failed + e.unfinished, 0);
    assert_eq!(e.sink_applied as u64, e.done);
    assert_eq!(e.sink_doubled, 0);
    assert!(render_table(&report).contains("e2e on postgres with 2 node(s)"));
}
