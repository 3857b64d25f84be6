//! Facts about the machine and this process: cores, load, memory, CPU time, date, commit.

use super::report::Machine;

pub(super) fn machine_info() -> Machine {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average_at_start: load_average(),
        load_average_at_end: None,
        date: civil_date(now_unix()),
        git_commit: git_commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        profile,
    }
}

pub(super) fn now_unix() -> i64 {
    charter_server::now_millis() / 1000
}

pub(super) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(super) fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// `YYYY-MM-DD` (UTC) of a Unix time in seconds.
pub fn civil_date(unix_secs: i64) -> String {
    charter_core::calendar::date_of_unix(unix_secs)
}

/// A `kB` field of /proc/self/status, in MB.
pub(super) fn proc_status_mb(field: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    status_field_kb(&text, field).map(|kb| kb as f64 / 1024.0)
}

/// Parse `Field:   1234 kB` out of /proc/<pid>/status text.
pub fn status_field_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); ignored where unsupported.
pub(super) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The kernel's CPU-time unit in /proc (`USER_HZ`), 100 on every Linux architecture.
pub(super) const USER_HZ: f64 = 100.0;

/// CPU time read from /proc: this process's (user + system) and the machine's (idle, total).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuSample {
    pub(super) process_ticks: u64,
    pub(super) machine_idle_ticks: u64,
    pub(super) machine_total_ticks: u64,
}

impl CpuSample {
    pub(super) fn now() -> Option<CpuSample> {
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        let machine = std::fs::read_to_string("/proc/stat").ok()?;
        CpuSample::parse(&own, &machine)
    }

    /// From the text of `/proc/self/stat` and `/proc/stat`.
    pub fn parse(own_stat: &str, machine_stat: &str) -> Option<CpuSample> {
        // Fields after the command name (which may hold spaces and parentheses): state is
        // the first, utime the 12th and stime the 13th.
        let after = own_stat.get(own_stat.rfind(')')? + 1..)?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        // `cpu  user nice system idle iowait irq softirq steal ...`
        let line = machine_stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
        Some(CpuSample {
            process_ticks: utime + stime,
            machine_idle_ticks: idle,
            machine_total_ticks: ticks.iter().sum(),
        })
    }

    /// This process's CPU microseconds since `earlier`, per ack.
    pub fn process_us_since(&self, earlier: &CpuSample, acks: u64) -> Option<f64> {
        let ticks = self.process_ticks.checked_sub(earlier.process_ticks)?;
        (acks > 0).then(|| ticks as f64 / USER_HZ * 1e6 / acks as f64)
    }

    /// The machine's idle share since `earlier`, %.
    pub fn idle_pct_since(&self, earlier: &CpuSample) -> Option<f64> {
        let idle = self
            .machine_idle_ticks
            .checked_sub(earlier.machine_idle_ticks)?;
        let total = self
            .machine_total_ticks
            .checked_sub(earlier.machine_total_ticks)?;
        (total > 0).then(|| 100.0 * idle as f64 / total as f64)
    }
}
