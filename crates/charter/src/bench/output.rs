//! The human-readable table.

use std::fmt::Write as _;

use super::backlog::BacklogResult;
use super::open::render_open;
use super::report::{E2eResult, LoadResult, Report};

pub(super) fn summary_line(r: &LoadResult) -> String {
    let offered = r
        .offered_per_sec
        .map(|o| format!(" (offered {o:.0}/s)"))
        .unwrap_or_default();
    format!(
        "{}{offered}: {:.0} acks/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {} errors, peak RSS {:.0} MB",
        r.target,
        r.acks_per_sec,
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.latency.p999_ms,
        r.errors,
        r.peak_rss_mb
    )
}

/// One concurrency's ratio line: the median, its verdict at the target's load (on the
/// unrounded median) or why there is none, every pair, and the CPU comparison.
pub(super) fn ratio_line(
    target_senders: usize,
    c: usize,
    ratio: f64,
    pairs: Option<&[f64]>,
    cpu: Option<f64>,
) -> String {
    let each = pairs
        .filter(|v| v.len() > 1)
        .map(|v| {
            let list: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
            format!(
                "; median of {} adjacent pairs: {}",
                v.len(),
                list.join(", ")
            )
        })
        .unwrap_or_default();
    let cpu = cpu
        .map(|x| format!("; by CPU per ack, no-op / ingest: {x:.2}"))
        .unwrap_or_default();
    let target = if c == target_senders {
        let verdict = if ratio >= 0.5 { "met" } else { "not met" };
        format!("target >= 0.5 at {target_senders} senders: {verdict}")
    } else {
        format!(
            "for information: the target is set at {target_senders} senders; with fewer, each waiting for its group commit, the writer's commit chain rather than the HTTP path bounds ingest"
        )
    };
    format!("ingest / no-op at {c} connections: {ratio:.3} ({target}){each}{cpu}")
}

/// The human-readable report.
pub fn render_table(r: &Report) -> String {
    let m = &r.machine;
    let mut out = String::new();
    let _ = writeln!(out, "charter bench ({} build)", m.profile);
    let _ = writeln!(out, "  command: {}", m.command);
    let _ = writeln!(
        out,
        "  date: {}  cores: {}  commit: {}  load avg (1 min) at start/end: {}/{}",
        m.date,
        m.cores,
        m.git_commit.as_deref().unwrap_or("unknown"),
        fmt_opt(m.load_average_at_start),
        fmt_opt(m.load_average_at_end),
    );
    if let Some(open) = &r.open {
        let _ = writeln!(out);
        out.push_str(&render_open(open));
        return out;
    }
    let _ = writeln!(
        out,
        "  the load generator runs in the same process, on the same cores; SQLite fsync: {}; batches gathered while the CPUs are saturated: {}",
        r.fsync,
        if r.gather { "yes" } else { "no (--no-gather)" }
    );
    if !r.ingest.is_empty() || !r.noop.is_empty() {
        write_pairs(&mut out, r);
    }
    if let Some(p) = &r.ingest_paced {
        write_paced(&mut out, p);
    }
    for b in &r.pg_backlog {
        write_backlog(&mut out, b);
    }
    for e in r.e2e.iter().chain(&r.e2e_postgres) {
        write_e2e(&mut out, e);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "memory: idle RSS {} MB, peak RSS under load {} MB (server and load generator together)",
        fmt_opt(r.memory.idle_rss_mb),
        fmt_opt(r.memory.peak_rss_mb)
    );
    out
}

/// The ingest and no-op runs: one table row each, the store's figures, the pools, errors,
/// and the ratio lines.
fn write_pairs(out: &mut String, r: &Report) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<8} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>11} {:>7}",
        "target",
        "conns",
        "acks/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        "peak MB",
        "cpu us/ack",
        "idle %"
    );
    for l in r.ingest.iter().chain(&r.noop) {
        let _ = writeln!(
            out,
            "{:<8} {:>5} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>9.0} {:>11} {:>7}",
            l.target,
            l.concurrency,
            l.acks_per_sec,
            l.latency.p50_ms,
            l.latency.p99_ms,
            l.latency.p999_ms,
            l.latency.max_ms,
            l.errors,
            l.peak_rss_mb,
            fmt_opt(l.cpu_us_per_ack),
            fmt_opt(l.machine_idle_pct)
        );
    }
    for l in &r.ingest {
        if let Some(st) = &l.store {
            let _ = writeln!(
                out,
                "  ingest at {}: {} commits ({} fsyncs, {} of them gathered) for {} writes, {:.1} writes per commit; writer busy {:.0}% of the run (COMMIT {:.0}%); server-side store wait {} ms mean",
                l.concurrency,
                st.batches,
                st.syncs,
                st.gathered,
                st.commands,
                st.mean_batch,
                st.writer_busy_pct,
                st.commit_pct,
                fmt_opt(st.mean_store_wait_ms),
            );
        }
    }
    for l in r.ingest.iter().chain(&r.noop) {
        let _ = writeln!(
            out,
            "  {} at {}: {} deliveries pre-signed (~{:.0} MB; {} more signed during the run, {} sent again from the pool); RSS before load {:.0} MB",
            l.target,
            l.concurrency,
            l.presigned,
            l.pool_mb,
            l.signed_during_run,
            l.replayed_from_pool,
            l.rss_before_mb
        );
    }
    for l in r.ingest.iter().chain(&r.noop).filter(|l| l.errors > 0) {
        let _ = writeln!(
            out,
            "  {} at {}: errors {:?}",
            l.target, l.concurrency, l.error_kinds
        );
    }
    for (c, ratio) in &r.ingest_over_noop {
        let line = ratio_line(
            r.ratio_target_senders,
            *c,
            *ratio,
            r.ingest_over_noop_rounds.get(c).map(Vec::as_slice),
            r.noop_over_ingest_cpu.get(c).copied(),
        );
        let _ = writeln!(out, "{line}");
    }
}

/// The paced ingest run's line.
fn write_paced(out: &mut String, p: &LoadResult) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "ingest paced at {:.0} requests/s offered, {} connections: {:.0} acks/s, p50 {:.2} ms, p99 {:.2} ms (target: p99 <= 25 ms at half of 20,000/s), p99.9 {:.2} ms, {} errors",
        p.offered_per_sec.unwrap_or(0.0),
        p.concurrency,
        p.acks_per_sec,
        p.latency.p50_ms,
        p.latency.p99_ms,
        p.latency.p999_ms,
        p.errors
    );
}

/// One PostgreSQL backlog measurement's line.
fn write_backlog(out: &mut String, b: &BacklogResult) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "postgres, 1 node, {} events queued: {:.0} events/s processed (median of {:?}, {} per window); per event: {:.0} WAL bytes, {:.2} commits, {:.2} rows inserted, {:.2} rows updated, {:.0} us CPU of the database's sessions ({:.0} us of all PostgreSQL processes)",
        b.backlog,
        b.events_per_sec,
        b.rounds_events_per_sec
            .iter()
            .map(|v| v.round())
            .collect::<Vec<_>>(),
        b.window,
        b.db.wal_bytes,
        b.db.commits,
        b.db.rows_inserted,
        b.db.rows_updated,
        b.db.backend_cpu_us,
        b.db.cpu_us
    );
}

/// One end-to-end run's lines.
fn write_e2e(out: &mut String, e: &E2eResult) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "e2e on {} with {} node(s), {} runs in flight each ({} connections{}, {:.0}s of sending): {} acked at {:.0}/s; {} done, {} failed, {} unfinished{}",
        e.store,
        e.nodes,
        e.workers,
        e.send.concurrency,
        e.send
            .offered_per_sec
            .map(|o| format!(" paced at {o:.0} events/s offered"))
            .unwrap_or_default(),
        e.send.seconds,
        e.send.acks,
        e.send.acks_per_sec,
        e.done,
        e.failed,
        e.unfinished,
        if e.drained { "" } else { " (drain timed out)" }
    );
    let _ = writeln!(
        out,
        "  {:.0} events/s completed over {:.1}s (first send to last done); cycle time p50 {:.0} ms, p99 {:.0} ms",
        e.events_per_sec, e.seconds, e.cycle_p50_ms, e.cycle_p99_ms
    );
    let _ = writeln!(
        out,
        "  sink applied {} distinct keys, {} applied twice; {} decided by the embedded classifier; peak RSS {:.0} MB",
        e.sink_applied, e.sink_doubled, e.decided_embedded, e.peak_rss_mb
    );
}

pub(super) fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}"))
}
