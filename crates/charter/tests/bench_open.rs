//! `charter bench open` end to end through the binary: it starts `charter serve` as a
//! child process, sends an open stream on schedule, and every acknowledged job's action
//! reaches its sink once. Counts only: on a loaded machine (or a debug build) a step may
//! well not be sustained, which is not what this test is about.

use std::process::{Command, Stdio};

use serde_json::Value;

#[test]
fn bench_open_drives_a_child_server_and_counts_every_job_at_the_sink() {
    let dir = std::env::temp_dir().join(format!("charter-bench-open-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("open.json");
    let status = Command::new(env!("CARGO_BIN_EXE_charter"))
        .args([
            "bench",
            "open",
            "--rates",
            "50",
            "--duration",
            "2s",
            "--json",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    // The exit status does not depend on whether the step was sustained.
    assert!(status.success());
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let open = &report["open"];
    assert_eq!(open["rule"], "matches");
    let ladders = open["ladders"].as_array().unwrap();
    assert_eq!(ladders.len(), 1, "one round, no compared server");
    assert_eq!(ladders[0]["target"], "charter");
    let step = &ladders[0]["steps"][0];
    // 50/s for 2 s: 100 slots, each sent once, acknowledged, and applied at the sink once.
    assert_eq!(step["planned"], 100);
    assert_eq!(step["skipped"], 0);
    assert_eq!(step["acked"], 100, "{step}");
    assert_eq!(step["errors"], 0, "{step}");
    assert_eq!(step["applied"], 100, "{step}");
    assert_eq!(step["unfinished"], 0);
    assert_eq!(step["doubled"], 0);
    // The child's CPU was read, split by thread name.
    assert!(step["cpu_ms_per_job"].as_f64().unwrap() > 0.0, "{step}");
    assert!(
        !step["cpu_ms_per_job_by_thread"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    // The ingest and e2e sections are absent from an open-only report.
    assert!(report["ingest"].as_array().unwrap().is_empty());
    assert!(report["e2e"].is_null());
}
