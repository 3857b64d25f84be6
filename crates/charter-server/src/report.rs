//! Per-charter measurements: the `GET /api/v1/charters/{name}/report` endpoint, a plain-text
//! rendering (used by `charter report`), and small server-rendered SVG charts (volume,
//! outcome mix, cycle time) for the web UI.
//!
//! The charts are self-contained `<svg>` strings with no script and no external resources;
//! every text in them is XML-escaped.

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

// ---------------------------------------------------------------------------------------
// SVG charts

/// Escape text for XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Colours of the series, in order (colour-blind friendly).
pub const PALETTE: &[&str] = &[
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#f0e442", "#000000",
];

/// The colour of series `k` named `name`: an outcome or status keeps its meaning whatever
/// the series' order (failed red, completed green, waiting amber, ...); other series take
/// the palette in order.
pub fn series_colour(name: &str, k: usize) -> &'static str {
    match name {
        "completed" | "done" | "succeeded" => "#1a7f37",
        "failed" | "dead_lettered" | "interrupted" => "#c62828",
        "escalated" | "waiting" | "awaiting_approval" => "#b26a00",
        "rejected" => "#6a3d9a",
        "skipped" | "shadow" => "#6b7785",
        _ => PALETTE[k % PALETTE.len()],
    }
}

/// One named series of a chart: one value per bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

const PAD_LEFT: f64 = 44.0;
const PAD_BOTTOM: f64 = 22.0;
const PAD_TOP: f64 = 22.0;
const LEGEND_H: f64 = 16.0;

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A stacked bar chart: one bar per label (bucket), one stacked segment per series. An
/// empty or all-zero chart still renders its axes. `width`/`height` are in pixels.
pub fn svg_bar_chart(
    title: &str,
    labels: &[String],
    series: &[Series],
    width: u32,
    height: u32,
) -> String {
    let (w, h) = (f64::from(width.max(120)), f64::from(height.max(80)));
    let n = labels
        .len()
        .max(series.iter().map(|s| s.values.len()).max().unwrap_or(0))
        .max(1);
    let totals: Vec<f64> = (0..n)
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0.0).max(0.0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max } else { 1.0 };
    let legend = if series.len() > 1 { LEGEND_H } else { 0.0 };
    let plot_h = h - PAD_TOP - PAD_BOTTOM - legend;
    let plot_w = w - PAD_LEFT - 6.0;
    let slot = plot_w / n as f64;
    let bar = (slot * 0.75).max(1.0);
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>",
        t = xml_escape(title)
    );
    let _ = write!(
        o,
        "<text x=\"{PAD_LEFT}\" y=\"14\" font-size=\"12\" font-family=\"sans-serif\">{}</text>",
        xml_escape(title)
    );
    let base = PAD_TOP + plot_h;
    let _ = write!(
        o,
        "<line x1=\"{PAD_LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#888\"/>",
        w - 6.0
    );
    let _ = write!(
        o,
        "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\" font-family=\"sans-serif\">{}</text>",
        PAD_LEFT - 4.0,
        PAD_TOP + 8.0,
        fmt_num(max)
    );
    let _ = write!(
        o,
        "<text x=\"{}\" y=\"{base}\" font-size=\"10\" text-anchor=\"end\" font-family=\"sans-serif\">0</text>",
        PAD_LEFT - 4.0
    );
    for i in 0..n {
        let x = PAD_LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = base;
        for (k, s) in series.iter().enumerate() {
            let v = s.values.get(i).copied().unwrap_or(0.0).max(0.0);
            if v <= 0.0 {
                continue;
            }
            let bh = v / top * plot_h;
            y -= bh;
            let label = labels.get(i).map(String::as_str).unwrap_or("");
            let _ = write!(
                o,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{}: {} {}</title></rect>",
                series_colour(&s.name, k),
                xml_escape(label),
                xml_escape(&s.name),
                fmt_num(v)
            );
        }
    }
    // First and last bucket labels under the axis.
    if let (Some(first), Some(last)) = (labels.first(), labels.last()) {
        let _ = write!(
            o,
            "<text x=\"{PAD_LEFT}\" y=\"{}\" font-size=\"10\" font-family=\"sans-serif\">{}</text>",
            base + 14.0,
            xml_escape(first)
        );
        if labels.len() > 1 {
            let _ = write!(
                o,
                "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\" font-family=\"sans-serif\">{}</text>",
                w - 6.0,
                base + 14.0,
                xml_escape(last)
            );
        }
    }
    if series.len() > 1 {
        let mut x = PAD_LEFT;
        let y = h - 4.0;
        for (k, s) in series.iter().enumerate() {
            let _ = write!(
                o,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"9\" height=\"9\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{y:.1}\" font-size=\"10\" font-family=\"sans-serif\">{}</text>",
                y - 9.0,
                series_colour(&s.name, k),
                x + 12.0,
                xml_escape(&s.name)
            );
            x += 12.0 + 6.5 * s.name.chars().count() as f64 + 10.0;
        }
    }
    o.push_str("</svg>");
    o
}

/// Bucket labels of a report: `MM-DD` for day-sized buckets or larger, `HH:MM` (UTC)
/// otherwise.
pub fn bucket_labels(report: &CharterReport) -> Vec<String> {
    let width = report
        .buckets
        .get(1)
        .zip(report.buckets.first())
        .map_or(86_400_000, |(b, a)| b.start - a.start);
    report
        .buckets
        .iter()
        .map(|b| {
            let secs = b.start.div_euclid(1000);
            let span = width.saturating_mul(report.buckets.len() as i64);
            if width >= 86_400_000 {
                let (_, m, d) = charter_core::calendar::civil_from_days(secs.div_euclid(86_400));
                format!("{m:02}-{d:02}")
            } else if span > 86_400_000 {
                // Buckets under a day over a window of several days: date and hour.
                let (_, m, d) = charter_core::calendar::civil_from_days(secs.div_euclid(86_400));
                format!("{m:02}-{d:02} {:02}h", secs.rem_euclid(86_400) / 3600)
            } else {
                let rem = secs.rem_euclid(86_400);
                format!("{:02}:{:02}", rem / 3600, (rem % 3600) / 60)
            }
        })
        .collect()
}

/// Events received per bucket.
pub fn volume_chart(report: &CharterReport, width: u32, height: u32) -> String {
    let series = [Series {
        name: "events".into(),
        values: report.buckets.iter().map(|b| b.received as f64).collect(),
    }];
    svg_bar_chart(
        "Events received",
        &bucket_labels(report),
        &series,
        width,
        height,
    )
}

/// Runs finished per bucket, stacked by outcome.
pub fn outcome_chart(report: &CharterReport, width: u32, height: u32) -> String {
    let series: Vec<Series> = report
        .outcomes
        .keys()
        .map(|k| Series {
            name: k.clone(),
            values: report
                .buckets
                .iter()
                .map(|b| b.outcomes.get(k).copied().unwrap_or(0) as f64)
                .collect(),
        })
        .collect();
    svg_bar_chart(
        "Outcome mix",
        &bucket_labels(report),
        &series,
        width,
        height,
    )
}

/// Median cycle time (seconds) per bucket.
pub fn cycle_chart(report: &CharterReport, width: u32, height: u32) -> String {
    let series = [Series {
        name: "p50 cycle time (s)".into(),
        values: report
            .buckets
            .iter()
            .map(|b| b.p50_cycle_ms as f64 / 1000.0)
            .collect(),
    }];
    svg_bar_chart(
        "Median cycle time (s)",
        &bucket_labels(report),
        &series,
        width,
        height,
    )
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
    fn bar_chart_draws_one_rect_per_nonzero_segment_and_escapes() {
        let svg = svg_bar_chart(
            "a <b> & \"c\"",
            &["x".into(), "y".into()],
            &[
                Series {
                    name: "s1".into(),
                    values: vec![1.0, 0.0],
                },
                Series {
                    name: "s<2>".into(),
                    values: vec![2.0, 4.0],
                },
            ],
            300,
            120,
        );
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        assert_eq!(series_colour("failed", 0), "#c62828");
        assert_eq!(series_colour("completed", 1), "#1a7f37");
        assert_eq!(series_colour("other", 1), PALETTE[1]);
        assert!(svg.contains("a &lt;b&gt; &amp; &quot;c&quot;"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("s&lt;2&gt;"));
        // 3 bar segments + 2 legend swatches.
        assert_eq!(svg.matches("<rect").count(), 5, "{svg}");
        // The tallest stack (0 + 4 against 1 + 2) sets the scale label.
        assert!(svg.contains(">4</text>"), "{svg}");
        let empty = svg_bar_chart("none", &[], &[], 200, 100);
        assert!(empty.contains("<line") && !empty.contains("<rect"));
    }

    #[test]
    fn report_charts_follow_the_buckets() {
        let r = sample();
        assert_eq!(bucket_labels(&r), vec!["01-02", "01-03"]);
        // Half-day buckets over several days carry the date and the hour.
        let mut half_days = sample();
        for (i, b) in half_days.buckets.iter_mut().enumerate() {
            b.start = 86_400_000 + i as i64 * 43_200_000;
        }
        half_days.buckets.push(half_days.buckets[1].clone());
        half_days.buckets[2].start = 86_400_000 + 2 * 43_200_000;
        assert_eq!(
            bucket_labels(&half_days),
            vec!["01-02 00h", "01-02 12h", "01-03 00h"]
        );
        // Buckets within one day keep the time only.
        let mut hours = sample();
        for (i, b) in hours.buckets.iter_mut().enumerate() {
            b.start = 86_400_000 + i as i64 * 3_600_000;
        }
        assert_eq!(bucket_labels(&hours), vec!["00:00", "01:00"]);
        let v = volume_chart(&r, 300, 120);
        assert_eq!(v.matches("<rect").count(), 2);
        assert!(v.contains("01-02: events 2"), "{v}");
        let o = outcome_chart(&r, 300, 120);
        // completed in both buckets, failed in the second, plus 2 legend swatches.
        assert_eq!(o.matches("<rect").count(), 5, "{o}");
        assert!(cycle_chart(&r, 300, 120).contains("1.5</title>"));
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
