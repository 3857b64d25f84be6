//! CLI commands that talk to a running server's admin API or webhooks: one submodule per
//! concern; this module holds the HTTP call, the output helpers and time arguments they share.

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::ServerArgs;

mod charters;
mod corrections;
mod events;
mod reviews;
mod send;

pub use charters::*;
pub use corrections::*;
pub use events::*;
pub use reviews::*;
pub use send::*;

/// Exit code when the server cannot be reached.
const UNREACHABLE: u8 = 3;

fn http() -> Result<reqwest::Client, ExitCode> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot create an HTTP client: {e}");
            ExitCode::from(1)
        })
}

pub(crate) async fn call(
    server: &ServerArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, ExitCode> {
    let client = http()?;
    let url = format!("{}{}", server.base_url(), path);
    let mut req = client.request(method, &url);
    if let Some(t) = &server.token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| {
        eprintln!("error: cannot reach {url}: {e}");
        ExitCode::from(UNREACHABLE)
    })?;
    let status = resp.status();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("request failed");
        eprintln!("error: {status}: {msg}");
        // A contract refusal says what is wrong, one JSON pointer per violation.
        for v in value["violations"].as_array().into_iter().flatten() {
            eprintln!("  {}", v.as_str().unwrap_or_default());
        }
        return Err(ExitCode::from(1));
    }
    Ok(value)
}

fn print_json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(_) => println!("{v}"),
    }
}

fn ms_to_rfc3339(ms: i64) -> String {
    charter_core::calendar::rfc3339_of_unix(ms.div_euclid(1000))
}

/// A `--since`/`--until` argument read with [`parse_time`]; a bad one is reported as a
/// usage error (exit code 2).
fn time_arg(name: &str, value: &Option<String>, now: i64) -> Result<Option<i64>, ExitCode> {
    match value {
        None => Ok(None),
        Some(text) => parse_time(text, now).map(Some).map_err(|e| {
            eprintln!("error: --{name}: {e}");
            ExitCode::from(2)
        }),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A point in time for `--since`/`--until`: Unix milliseconds, an RFC 3339 UTC time
/// (`2026-01-02T15:04:05Z`, optional fraction), a date (`2026-01-02`, midnight UTC), or a
/// duration before `now` (`90s`, `15m`, `24h`, `7d`).
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(d) = charter_core::config::validate::parse_duration(t) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return Ok(now.saturating_sub(ms));
    }
    let bad = || {
        format!(
            "`{t}` is not a time: use Unix milliseconds, 2026-01-02T15:04:05Z, 2026-01-02 or a duration ago like 24h"
        )
    };
    let (date, clock) = match t.split_once(['T', 't', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (t, None),
    };
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let mut parts = date.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let (y, m, d) = (num(y)?, num(m)?, num(d)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut ms = charter_core::calendar::days_from_civil(y, m, d) * 86_400_000;
    if let Some(c) = clock {
        let c = c
            .strip_suffix(['Z', 'z'])
            .or_else(|| c.strip_suffix("+00:00"))
            .ok_or_else(|| format!("`{t}`: give the time in UTC (ending in Z)"))?;
        let (hms, frac) = c.split_once('.').unwrap_or((c, ""));
        let mut f = hms.splitn(3, ':');
        let (Some(h), Some(mi), Some(s)) = (f.next(), f.next(), f.next()) else {
            return Err(bad());
        };
        let (h, mi, s) = (num(h)?, num(mi)?, num(s)?);
        if h > 23 || mi > 59 || s > 60 {
            return Err(bad());
        }
        let frac_ms = if frac.is_empty() {
            0
        } else {
            let digits: String = frac.chars().chain("000".chars()).take(3).collect();
            num(&digits)?
        };
        ms += ((h * 60 + mi) * 60 + s) * 1000 + frac_ms;
    }
    Ok(ms)
}

/// `key=value` pairs of a query string (values are percent-encoded).
pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Percent-encode a query value (everything but unreserved characters).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::{parse_time, query};

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            query(&[("charter", Some("a b&c".into())), ("status", None)]),
            "?charter=a%20b%26c"
        );
        assert_eq!(query(&[("x", None)]), "");
    }

    #[test]
    fn times_parse_in_every_documented_form() {
        assert_eq!(parse_time("1700000000000", 0), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-02", 0), Ok(86_400_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z", 0), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20.250Z", 0),
            Ok(1_700_000_000_250)
        );
        assert_eq!(parse_time("2h", 10_000_000), Ok(10_000_000 - 7_200_000));
        assert!(parse_time("2023-11-14T22:13:20+02:00", 0).is_err());
        assert!(parse_time("yesterday", 0).is_err());
        assert!(parse_time("2023-13-01", 0).is_err());
    }
}
