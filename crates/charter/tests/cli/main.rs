#![allow(clippy::unwrap_used)]
//! End-to-end tests of the `charter` binary, in one test binary with a module per area:
//! commands on a project folder (`project`), the crash tests (`crash`: a child `charter serve`
//! killed with SIGKILL under load, then restarted), what leaves the process (`telemetry`),
//! `charter eval` (`eval`), and the CLI as a client of a running server (`operator`).
//! Run one area with `cargo test -p charter --test cli <module>::`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use charter_testkit::project::{free_port, now_ms, temp_dir, write};
use charter_testkit::server::wait_healthy;
use charter_testkit::sink::{Scripted, Sink};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[path = "../../../../tests/tools.rs"]
mod tools;

mod crash;
mod eval;
mod operator;
mod project;
mod telemetry;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_charter")
}

struct Server {
    child: Child,
}

impl Server {
    fn start(dir: &Path, port: u16) -> Server {
        let child = Command::new(bin())
            .arg("serve")
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("CHARTER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Server { child }
    }

    fn kill9(&mut self) {
        // SIGKILL: no chance to drain or flush.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Run the `charter` binary with `args`; (exit code, stdout, stderr).
fn charter(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
