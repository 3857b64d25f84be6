//! The outside tools some tests need (PostgreSQL, NATS, Chromium, Python's aiosmtpd) and
//! what a test does when one is missing. Each crate's test binary includes this file by path
//! (`#[path = ".../tests/tools.rs"] mod tools;`), so the policy is written once:
//!
//! - the tool is there: the test runs;
//! - `CI=true`: a missing tool, or a `CHARTER_SKIP_*` variable, fails the test (CI never skips;
//!   `.ci/run` installs or starts every tool);
//! - otherwise, `CHARTER_SKIP_<TOOL>=1` skips without looking for the tool, and a missing tool
//!   skips too; either way the test writes one line naming the tool and the variable.
//!
//! The line goes straight to the process's stderr (not through `eprintln!`, which the test
//! harness captures and shows only for failing tests), so `cargo test` shows every skip.

#![allow(dead_code)] // each test binary uses the tools it needs

use std::io::Write;

/// A tool that some tests need and a fresh machine may lack.
#[derive(Clone, Copy, Debug)]
pub enum Tool {
    /// PostgreSQL at 127.0.0.1:5432 (or `CHARTER_TEST_PG`).
    Postgres,
    /// nats-server with JetStream at 127.0.0.1:4222.
    Nats,
    /// Node, Debian's Chromium and playwright-core (the web UI's browser test).
    Browser,
    /// Python 3 with the `aiosmtpd` module (a real SMTP server for the e-mail tests).
    Smtp,
}

impl Tool {
    /// The tool's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Postgres => "PostgreSQL",
            Tool::Nats => "NATS (nats-server -js)",
            Tool::Browser => "a headless browser (node, chromium, playwright-core)",
            Tool::Smtp => "Python's aiosmtpd",
        }
    }

    /// The variable that skips the tests needing this tool.
    pub fn skip_var(self) -> &'static str {
        match self {
            Tool::Postgres => "CHARTER_SKIP_PG",
            Tool::Nats => "CHARTER_SKIP_NATS",
            Tool::Browser => "CHARTER_SKIP_BROWSER",
            Tool::Smtp => "CHARTER_SKIP_SMTP",
        }
    }

    /// How to get the tool (what `.ci/run` does).
    pub fn hint(self) -> &'static str {
        match self {
            Tool::Postgres => "apt-get install postgresql, then pg_ctlcluster <version> main start",
            Tool::Nats => "apt-get install nats-server, then start it with -js on 127.0.0.1:4222",
            Tool::Browser => {
                "apt-get install chromium nodejs npm, then npm ci in crates/charter-server/tests/ui"
            }
            Tool::Smtp => "python3 -m pip install --user aiosmtpd",
        }
    }
}

/// Whether this run is CI's (`CI=true`, as `.ci/run` runs under CI).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The running test's name (the test harness names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("a test")
        .to_string()
}

/// One line on the process's stderr, past the test harness's capture.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Whether to run a test that needs `tool`: `probe` looks for the tool (`Err` says why it is
/// not usable). Returns `false` after writing the skip line; panics under `CI=true` instead
/// of skipping.
pub fn available(tool: Tool, probe: impl FnOnce() -> Result<(), String>) -> bool {
    let test = test_name();
    let var = tool.skip_var();
    let skip_asked = std::env::var(var).is_ok_and(|v| v == "1");
    if skip_asked {
        if in_ci() {
            panic!(
                "{test}: {var}=1 is set, but CI=true never skips: {}",
                tool.hint()
            );
        }
        say(&format!(
            "SKIPPED {test}: needs {} and {var}=1 is set",
            tool.name()
        ));
        return false;
    }
    match probe() {
        Ok(()) => true,
        Err(why) if in_ci() => panic!(
            "{test} needs {} ({why}); CI=true never skips. Get it with: {}",
            tool.name(),
            tool.hint()
        ),
        Err(why) => {
            say(&format!(
                "SKIPPED {test}: needs {} ({why}); get it with `{}`, or set {var}=1 to skip without looking",
                tool.name(),
                tool.hint()
            ));
            false
        }
    }
}

/// Probe: something accepts TCP connections at `addr` (within two seconds).
pub fn tcp_listening(addr: &str) -> Result<(), String> {
    let parsed: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    std::net::TcpStream::connect_timeout(&parsed, std::time::Duration::from_secs(2))
        .map(|_| ())
        .map_err(|e| format!("nothing listens at {addr}: {e}"))
}

/// Probe: `python3` runs and imports `aiosmtpd`.
pub fn python_aiosmtpd() -> Result<(), String> {
    match std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(_) => Err("python3 cannot import aiosmtpd".to_string()),
        Err(e) => Err(format!("cannot run python3: {e}")),
    }
}

/// The host and port of a `postgres://` URL (default port 5432), for a TCP probe.
pub fn pg_addr(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let host_port = host_port.rsplit('@').next().unwrap_or(host_port);
    let host_port = host_port.replace("localhost", "127.0.0.1");
    if host_port.contains(':') {
        host_port
    } else {
        format!("{host_port}:5432")
    }
}
