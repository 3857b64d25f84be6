//! Bounded expressions: a payload that makes a route's CEL expression too costly fails its
//! own event with the budget's reason, while the node keeps answering.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use charter_core::model::RunOutcome;
use charter_core::verify::{self, VerifySpec};
use charter_store::{EventStore, RunStore};
use serde_json::{Value, json};

use crate::support::Harness;

const SECRET: &str = "expr-secret-0123456789abcdef";
/// Costly events sent together: more than the runtime's two worker threads.
const EVENTS: usize = 3;
const ROUTE: &str = "payload.a.exists(x, payload.b.exists(y, x == y))";

fn charter() -> String {
    format!(
        r#"
name: lists
description: A route that loops over two lists of the payload.
owner: ops@example.test
maintainer: integrations@example.test
system_of_record: helpdesk
mode: live
uses: [helpdesk]
concurrency: 8
trigger:
  webhook:
    path: /hooks/lists
    verify: {{ preset: standard-webhooks, secret: file:secrets/hook }}
routes:
  - when: '{ROUTE}'
    do: [note]
  - when: "true"
    do: [note]
actions:
  note:
    log: "lists"
    approval: auto
escalation: {{ to: ops }}
measure:
  success: [noted]
"#
    )
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `GET /healthz` over a plain blocking connection; the answer's text (or the I/O error).
fn healthz(addr: &str) -> String {
    let attempt = || -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    };
    attempt().unwrap_or_else(|e| format!("error: {e}"))
}

/// POST a Standard Webhooks-signed delivery; returns the event id.
async fn send_signed(h: &Harness, body: &Value, delivery: &str) -> String {
    let spec = VerifySpec::StandardWebhooks {
        tolerance: verify::DEFAULT_TOLERANCE,
    };
    let raw = serde_json::to_vec(body).unwrap();
    let headers = verify::sign(&spec, SECRET, &raw, now_secs(), delivery).unwrap();
    let mut req = h
        .http
        .post(format!("{}/hooks/lists", h.base))
        .header("content-type", "application/json")
        .body(raw);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Three events, each with two disjoint 8,000-item lists (64 million pairs for the route's
/// `exists` over `exists`), sent together: every one fails with the budget's reason, and
/// `/healthz` answers within 100 ms all the while they are processed.
///
/// The server runs on a runtime of two worker threads that this test's own thread does not
/// drive while it probes (a thread blocked on the runtime also runs its tasks, which would
/// answer `/healthz` whatever the workers do), as many events as the workers could each
/// evaluate at once and more.
#[test]
fn a_too_costly_payload_fails_its_event_while_the_node_answers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let h = rt.block_on(Harness::start_with_files(
        &[("lists", charter())],
        &[],
        &[("secrets/hook", SECRET)],
    ));
    // Probe /healthz from a thread of its own from before the events are sent until every
    // one is finished; each probe is kept with its wall-clock interval.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = h.base.trim_start_matches("http://").to_string();
    let prober = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut probes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let from = now_millis();
                let started = Instant::now();
                let answer = healthz(&addr);
                probes.push((from, now_millis(), started.elapsed(), answer));
                std::thread::sleep(Duration::from_millis(10));
            }
            probes
        })
    };
    let body = json!({
        "a": (0..8000).collect::<Vec<i64>>(),
        "b": (8000..16000).collect::<Vec<i64>>(),
    });
    let ids: Vec<String> = rt.block_on(async {
        let mut ids = Vec::new();
        for i in 0..EVENTS {
            ids.push(send_signed(&h, &body, &format!("msg_lists_{i}")).await);
        }
        ids
    });
    let uuids: Vec<uuid::Uuid> = ids
        .iter()
        .map(|i| uuid::Uuid::parse_str(i).unwrap())
        .collect();

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let open = rt.block_on(async {
            let mut open = false;
            for u in &uuids {
                let status = h.store.get_event(*u).await.unwrap().unwrap().status;
                open |= matches!(status.as_str(), "processing" | "pending");
            }
            open
        });
        if !open {
            break;
        }
        assert!(Instant::now() < deadline, "the events were never finished");
    }
    stop.store(true, Ordering::Relaxed);
    let probes = prober.join().unwrap();

    rt.block_on(async {
        // The evaluations' intervals, from the runs.
        let mut busy = Vec::new();
        for u in &uuids {
            for run in h.store.runs_for_event(*u).await.unwrap() {
                busy.push((run.started_at, run.finished_at.unwrap()));
            }
        }
        let during: Vec<_> = probes
            .iter()
            .filter(|(from, to, _, _)| busy.iter().any(|(s, f)| from < f && to > s))
            .collect();
        assert!(
            during.len() >= 3,
            "too few probes overlapped the runs to show anything: {probes:?} {busy:?}"
        );
        // Every probe is answered, and the node stays responsive: the median probe during
        // the evaluations is fast, and none waits seconds. (A node blocked by the
        // evaluations would hold most probes for a large part of a run. The bound is on the
        // median, not every probe, so that a scheduling hiccup of a loaded CI machine does
        // not fail the test: this is a behaviour check, not a benchmark.)
        for (_, _, took, answer) in &during {
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(
                *took < Duration::from_secs(2),
                "/healthz took {took:?} while the events were processed ({} probes)",
                during.len()
            );
        }
        let mut took: Vec<Duration> = during.iter().map(|(_, _, t, _)| *t).collect();
        took.sort();
        let median = took[took.len() / 2];
        assert!(
            median < Duration::from_millis(100),
            "the median /healthz took {median:?} while the events were processed ({} probes)",
            took.len()
        );

        for (id, u) in ids.iter().zip(&uuids) {
            h.wait_status(id, "failed").await;
            let runs = h.store.runs_for_event(*u).await.unwrap();
            let run = runs.last().unwrap();
            assert_eq!(run.outcome, Some(RunOutcome::Failed));
            let error = run.error.clone().unwrap_or_default();
            assert!(
                error.starts_with(&format!(
                    "route evaluation failed: expression `{ROUTE}` exceeded its evaluation budget of "
                )),
                "{error}"
            );
            assert_eq!(run.route, None);
        }

        // A payload of the same shape and a size the budget allows is routed as usual.
        let small = json!({ "a": [1, 2, 3], "b": [3, 4] });
        let id = send_signed(&h, &small, "msg_lists_small").await;
        h.wait_status(&id, "done").await;
        let runs = h
            .store
            .runs_for_event(uuid::Uuid::parse_str(&id).unwrap())
            .await
            .unwrap();
        assert_eq!(runs.last().unwrap().route, Some(0));
    });
    drop(h);
}
