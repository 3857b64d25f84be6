//! Unit tests of the metrics registry and its text format.

use super::*;

#[test]
fn names_are_unique_and_prometheus_shaped() {
    let mut seen = std::collections::BTreeSet::new();
    for m in Metric::ALL {
        let n = m.name();
        assert!(seen.insert(n), "{n} twice");
        assert!(n.starts_with("charter_"), "{n}");
        assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
        match m.kind() {
            Kind::Counter => assert!(n.ends_with("_total"), "{n}"),
            Kind::Histogram => assert!(n.ends_with("_seconds"), "{n}"),
            Kind::Gauge => assert!(!n.ends_with("_total"), "{n}"),
        }
    }
}

/// Increments find their own label set among several of the same metric (and one that is
/// a prefix of another, or differs only in a value, is a different series).
#[test]
fn each_label_set_of_a_metric_counts_alone() {
    let m = Metrics::default();
    m.run_finished("a", "completed", None);
    m.run_finished("a", "failed", None);
    m.run_finished("a", "completed", None);
    m.run_finished("b", "completed", None);
    m.received("a");
    m.received("a");
    let runs =
        |c: &str, o: &str| m.counter(Metric::RunsFinished, &[("charter", c), ("outcome", o)]);
    assert_eq!(runs("a", "completed"), 2.0);
    assert_eq!(runs("a", "failed"), 1.0);
    assert_eq!(runs("b", "completed"), 1.0);
    assert_eq!(runs("b", "failed"), 0.0);
    assert_eq!(m.counter(Metric::EventsReceived, &[("charter", "a")]), 2.0);
    assert_eq!(m.counter(Metric::RunsFinished, &[("charter", "a")]), 0.0);
    let text = m.render();
    assert!(
        text.contains("charter_runs_total{charter=\"a\",outcome=\"completed\"} 2"),
        "{text}"
    );
}

#[test]
fn histograms_are_cumulative_and_counters_sum() {
    let m = Metrics::default();
    m.action_attempt("c", "a", "crm", "succeeded", Some(Duration::from_millis(3)));
    m.action_attempt(
        "c",
        "a",
        "crm",
        "succeeded",
        Some(Duration::from_millis(200)),
    );
    m.action_attempt("c", "a", "crm", "failed", None);
    let text = m.render();
    assert!(text.contains(
        "charter_action_attempts_total{charter=\"c\",action=\"a\",connector=\"crm\",result=\"succeeded\"} 2"
    ), "{text}");
    assert!(
        text.contains("charter_action_latency_seconds_bucket{connector=\"crm\",le=\"0.005\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("charter_action_latency_seconds_bucket{connector=\"crm\",le=\"0.25\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("charter_action_latency_seconds_count{connector=\"crm\"} 2"),
        "{text}"
    );
    assert_eq!(
        m.counter(
            Metric::ActionAttempts,
            &[
                ("charter", "c"),
                ("action", "a"),
                ("connector", "crm"),
                ("result", "failed")
            ]
        ),
        1.0
    );
    assert!(
        text.contains("charter_ack_latency_seconds_count 0"),
        "{text}"
    );
}

#[test]
fn gauges_come_from_the_backlog() {
    let m = Metrics::default();
    let b = CharterBacklog {
        charter: "t\"x".into(),
        queued: 3,
        oldest_queued_at: Some(1_000),
        approvals_pending: 1,
        oldest_approval_at: Some(4_000),
        ..Default::default()
    };
    let text = m.render_with(&[b], &[], 11_000);
    assert!(
        text.contains("charter_queue_depth{charter=\"t\\\"x\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("charter_queue_oldest_age_seconds{charter=\"t\\\"x\"} 10"),
        "{text}"
    );
    assert!(
        text.contains("charter_approvals_oldest_age_seconds{charter=\"t\\\"x\"} 7"),
        "{text}"
    );
    assert!(text.contains("# TYPE charter_queue_depth gauge"), "{text}");
}

#[test]
fn traceparent_is_w3c_shaped() {
    let run = uuid::Uuid::now_v7();
    let t = traceparent(run);
    let parts: Vec<&str> = t.split('-').collect();
    assert_eq!(parts.len(), 4, "{t}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], run.simple().to_string());
    assert_eq!(parts[2].len(), 16);
    assert_ne!(parts[2], "0000000000000000");
    assert_eq!(parts[3], "01");
    assert_ne!(traceparent(run), t, "each call gets its own span id");
}

#[tokio::test]
async fn scope_makes_the_registry_current() {
    assert!(current().is_none());
    let m = Arc::new(Metrics::default());
    scope(m.clone(), async {
        if let Some(c) = current() {
            c.escalation("c", "budget");
        }
    })
    .await;
    assert_eq!(
        m.counter(
            Metric::Escalations,
            &[("charter", "c"), ("reason", "budget")]
        ),
        1.0
    );
}
