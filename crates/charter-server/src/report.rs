//! Per-charter measurements: the `GET /api/v1/charters/{name}/report` endpoint and a
//! plain-text rendering (used by `charter report`). The web UI's SVG charts of a report are
//! in [`crate::ui::charts`].

use std::fmt::Write as _;
use std::time::Duration;

use charter_store::{CharterReport, ReportQuery, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{AppState, now_millis};

/// Default report window.
pub const DEFAULT_SINCE: &str = "7d";
/// Default number of chart buckets.
pub const DEFAULT_BUCKETS: u32 = 14;

/// Query of the report endpoint: `since` is a duration back from now (`7d`, `24h`, `15m`).
#[derive(Debug, Default, Deserialize)]
pub struct ReportParams {
    pub since: Option<String>,
    pub buckets: Option<u32>,
}

/// The report of `charter` over the last `since`, as the API returns it: `report` (the
/// store's numbers), `rates`, the charter's declared measurement names (with zero for the
/// ones not recorded) and its open alert incidents.
pub async fn build<S: Store>(
    state: &AppState<S>,
    charter: &str,
    since: Duration,
    buckets: u32,
) -> Result<Value, ApiError> {
    let cr = state
        .runtime
        .charters
        .get(charter)
        .ok_or(ApiError::NotFound)?;
    let now = now_millis();
    let since_ms = now.saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
    let report = state
        .store
        .report(ReportQuery {
            charter: charter.to_string(),
            since: since_ms,
            until: now + 1,
            buckets: buckets.clamp(1, 200),
        })
        .await?;
    let declared: serde_json::Map<String, Value> = cr
        .charter
        .measure
        .names()
        .map(|n| {
            let count = report.measurements.get(n).map_or(0, |m| m.count);
            (n.to_string(), json!(count))
        })
        .collect();
    let alerts = state
        .store
        .open_incidents(Some(charter.to_string()))
        .await?;
    let rollout = crate::rollout::report_json(state, &cr.charter, since_ms).await?;
    Ok(json!({
        "charter": charter,
        "window": humantime(since),
        "rollout": rollout,
        "report": report,
        "rates": report.rates(),
        "measures": declared,
        "alerts_open": alerts,
    }))
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86_400 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s >= 3_600 && s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        s if s >= 60 && s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn rate(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{:.1}%", x * 100.0))
}

fn ms(v: i64) -> String {
    if v >= 60_000 {
        format!("{:.1} min", v as f64 / 60_000.0)
    } else if v >= 1_000 {
        format!("{:.2} s", v as f64 / 1_000.0)
    } else {
        format!("{v} ms")
    }
}

/// The report as aligned plain text (what `charter report` prints).
pub fn render_text(report: &CharterReport, window: &str, declared: &[String]) -> String {
    let mut o = String::new();
    let r = report;
    let rates = r.rates();
    let _ = writeln!(o, "charter {}  (last {window})", r.charter);
    let _ = writeln!(o);
    let _ = writeln!(o, "volume");
    let _ = writeln!(o, "  events received        {}", r.events_received);
    let _ = writeln!(o, "  rejected by contract   {}", r.rejected_payloads);
    let _ = writeln!(o, "  runs finished          {}", r.runs());
    for (k, v) in &r.outcomes {
        let _ = writeln!(o, "    {k:<20} {v}");
    }
    let _ = writeln!(o, "  replays                {}", r.replays);
    let _ = writeln!(o);
    let _ = writeln!(o, "cycle time (received -> done)");
    if r.cycle.count == 0 {
        let _ = writeln!(o, "  no finished events");
    } else {
        let c = &r.cycle;
        let _ = writeln!(
            o,
            "  n {}  p50 {}  p90 {}  p99 {}  max {}",
            c.count,
            ms(c.p50_ms),
            ms(c.p90_ms),
            ms(c.p99_ms),
            ms(c.max_ms)
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "rates");
    let a = &r.approvals;
    let _ = writeln!(
        o,
        "  approval rate          {}  ({} approved of {} decided, {} requested)",
        rate(rates.approval_rate),
        a.approved,
        a.approved + a.rejected + a.expired,
        a.requested
    );
    let _ = writeln!(
        o,
        "  rejection rate         {}  ({} rejected, {} expired)",
        rate(rates.rejection_rate),
        a.rejected,
        a.expired
    );
    let _ = writeln!(
        o,
        "  escalation rate        {}  ({} escalations)",
        rate(rates.escalation_rate),
        r.escalations.opened()
    );
    let _ = writeln!(
        o,
        "  human correction rate  {}  ({} decided by a human, {} edited approvals)",
        rate(rates.correction_rate),
        r.escalations.resolved,
        a.edited
    );
    let _ = writeln!(
        o,
        "  error rate             {}  ({} failed runs)",
        rate(rates.error_rate),
        r.outcome("failed")
    );
    let _ = writeln!(
        o,
        "  dead-letter rate       {}  ({} dead-lettered actions)",
        rate(rates.dead_letter_rate),
        r.dead_letters
    );
    if !r.escalations.by_reason.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "escalations by reason");
        for (k, v) in &r.escalations.by_reason {
            let _ = writeln!(o, "  {k:<22} {v}");
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "measurements");
    let mut names: Vec<&str> = declared.iter().map(String::as_str).collect();
    for k in r.measurements.keys() {
        if !names.contains(&k.as_str()) {
            names.push(k);
        }
    }
    if names.is_empty() {
        let _ = writeln!(o, "  none recorded");
    }
    for n in names {
        let count = r.measurements.get(n).map_or(0, |m| m.count);
        let _ = writeln!(o, "  {n:<22} {count}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use charter_store::report::ReportBucket;

    fn sample() -> CharterReport {
        let mut r = CharterReport {
            charter: "triage".into(),
            events_received: 5,
            ..Default::default()
        };
        r.outcomes.insert("completed".into(), 3);
        r.outcomes.insert("failed".into(), 1);
        for (i, (recv, done, failed)) in [(2u64, 2u64, 0u64), (3, 1, 1)].iter().enumerate() {
            let mut b = ReportBucket {
                start: 86_400_000 * (i as i64 + 1),
                received: *recv,
                p50_cycle_ms: 1500,
                finished: *done,
                ..Default::default()
            };
            b.outcomes.insert("completed".into(), *done);
            if *failed > 0 {
                b.outcomes.insert("failed".into(), *failed);
            }
            r.buckets.push(b);
        }
        r
    }

    #[test]
    fn text_report_lists_rates_and_declared_measures() {
        let mut r = sample();
        r.approvals.approved = 3;
        r.approvals.rejected = 1;
        let t = render_text(&r, "7d", &["ticket_routed".into()]);
        assert!(t.contains("charter triage  (last 7d)"), "{t}");
        assert!(t.contains("runs finished          4"), "{t}");
        assert!(t.contains("approval rate          75.0%"), "{t}");
        assert!(t.contains("error rate             25.0%"), "{t}");
        assert!(t.contains("ticket_routed          0"), "{t}");
        assert!(t.contains("no finished events"), "{t}");
    }
}
