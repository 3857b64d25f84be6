//! What the open-stream benchmark drives: `charter serve` started as a child process on a
//! throw-away project (default server settings; one charter: webhook -> keyword rule ->
//! HTTP action to the timing sink), or an outside server given by URL and process id
//! (Node-RED with `scripts/bench-open/node-red-flow.json`). Also the target's CPU time,
//! whole and per thread name, from `/proc/<pid>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::super::BenchError;
use super::super::machine::USER_HZ;

/// The open-stream charter's webhook path (the Node-RED flow listens on the same).
pub const OPEN_PATH: &str = "/hooks/open";

/// How the keyword rule is written (`--rule`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// `payload.ticket.subject.matches("(?i)refund")`.
    Matches,
    /// `payload.ticket.subject.contains("refund")`.
    Contains,
}

impl Rule {
    fn expression(self) -> &'static str {
        match self {
            Rule::Matches => r#"payload.ticket.subject.matches("(?i)refund")"#,
            Rule::Contains => r#"payload.ticket.subject.contains("refund")"#,
        }
    }
}

/// Write the open-stream project into `dir`: default worker settings, the sink at `sink_url`.
pub fn write_open_project(dir: &Path, sink_url: &str, rule: Rule) -> std::io::Result<()> {
    let charter_yaml = format!(
        "store: charter.db\nconnectors:\n  sink:\n    type: http\n    base_url: {sink_url}\n    timeout: 5s\n    allow_private: true\n"
    );
    let when = rule.expression();
    let charter = format!(
        r#"name: open
description: Open-stream benchmark - webhook, keyword rule, one HTTP action.
owner: bench@example.test
maintainer: bench@example.test
system_of_record: sink
mode: live
uses: [sink]
trigger:
  webhook: {{ path: {OPEN_PATH}, verify: none }}
  dedupe: "{{{{ payload.ticket.id }}}}"
decide:
  labels: [billing, other]
  stages:
    - rules:
        - {{ when: '{when}', label: billing }}
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
    measure: ticket_routed
escalation: {{ to: ops }}
measure:
  success: [ticket_routed]
"#
    );
    std::fs::create_dir_all(dir.join("charters"))?;
    std::fs::write(dir.join("charter.yaml"), charter_yaml)?;
    std::fs::write(dir.join("charters/open.yaml"), charter)?;
    Ok(())
}

/// The server under load.
pub struct Target {
    /// `charter` or the name given with `--compare-name`.
    pub name: String,
    /// Where the webhooks go.
    pub url: String,
    /// Its process, for CPU time.
    pub pid: u32,
    child: Option<tokio::process::Child>,
    dir: Option<PathBuf>,
}

impl Target {
    /// An outside server (not started or stopped here).
    pub fn external(name: &str, url: &str, pid: u32) -> Target {
        Target {
            name: name.to_string(),
            url: url.to_string(),
            pid,
            child: None,
            dir: None,
        }
    }

    /// Start `charter serve` (this binary) on a fresh project whose action calls
    /// `sink_url`, and wait until it is ready.
    pub async fn charter(
        client: &reqwest::Client,
        sink_url: &str,
        rule: Rule,
    ) -> Result<Target, BenchError> {
        let dir = std::env::temp_dir().join(format!(
            "charter-bench-open-{}",
            uuid::Uuid::now_v7().simple()
        ));
        write_open_project(&dir, sink_url, rule)?;
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.join("serve.log"))?;
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg(&dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or(0);
        let mut target = Target {
            name: "charter".into(),
            url: format!("http://127.0.0.1:{port}{OPEN_PATH}"),
            pid,
            child: Some(child),
            dir: Some(dir),
        };
        let ready = format!("http://127.0.0.1:{port}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(&ready).send().await
                && r.status().is_success()
            {
                return Ok(target);
            }
            let exited = match target.child.as_mut() {
                Some(c) => c.try_wait().ok().flatten().is_some(),
                None => false,
            };
            if exited || Instant::now() > deadline {
                let log = target
                    .dir
                    .as_ref()
                    .and_then(|d| std::fs::read_to_string(d.join("serve.log")).ok())
                    .unwrap_or_default();
                target.stop().await;
                return Err(BenchError::Other(format!(
                    "`charter serve` did not become ready: {}",
                    log.trim()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop the child (if this started one) and remove its project.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A process's CPU time in clock ticks: the whole process (threads that ended included),
/// and per thread name over the threads alive at the reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcCpu {
    pub total: u64,
    pub threads: BTreeMap<String, u64>,
}

impl ProcCpu {
    /// Read `/proc/<pid>/stat` and `/proc/<pid>/task/*/stat`.
    pub fn read(pid: u32) -> Option<ProcCpu> {
        let own = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, total) = stat_ticks(&own)?;
        let mut threads = BTreeMap::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                if let Some((name, ticks)) = std::fs::read_to_string(task.path().join("stat"))
                    .ok()
                    .and_then(|s| stat_ticks(&s))
                {
                    *threads.entry(name).or_default() += ticks;
                }
            }
        }
        Some(ProcCpu { total, threads })
    }

    /// CPU milliseconds since `earlier`: the whole, and per thread name (a thread name
    /// whose threads all ended in between is left out; what they used is in the whole).
    pub fn ms_since(&self, earlier: &ProcCpu) -> (f64, BTreeMap<String, f64>) {
        let ms = |ticks: u64| ticks as f64 * 1000.0 / USER_HZ;
        let per = self
            .threads
            .iter()
            .map(|(name, t)| {
                let before = earlier.threads.get(name).copied().unwrap_or(0);
                (name.clone(), ms(t.saturating_sub(before)))
            })
            .collect();
        (ms(self.total.saturating_sub(earlier.total)), per)
    }
}

/// The command name and user + system ticks out of a `/proc/.../stat` line.
pub fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}
