//! CLI commands that talk to a running server's admin API or webhooks.

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::ServerArgs;

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

pub async fn events_list(
    server: &ServerArgs,
    charter: Option<String>,
    status: Option<String>,
    limit: usize,
    json: bool,
) -> ExitCode {
    let mut q = vec![format!("limit={limit}")];
    if let Some(c) = charter {
        q.push(format!("charter={c}"));
    }
    if let Some(s) = status {
        q.push(format!("status={s}"));
    }
    let path = format!("/api/v1/events?{}", q.join("&"));
    let v = match call(server, reqwest::Method::GET, &path, None).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        print_json(&v["events"]);
        return ExitCode::SUCCESS;
    }
    let events = v["events"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<36}  {:<20}  {:<10}  {:<20}  SOURCE",
        "ID", "CHARTER", "STATUS", "RECEIVED"
    );
    for e in &events {
        println!(
            "{:<36}  {:<20}  {:<10}  {:<20}  {}",
            e["id"].as_str().unwrap_or(""),
            e["charter"].as_str().unwrap_or(""),
            e["status"].as_str().unwrap_or(""),
            ms_to_rfc3339(e["received_at"].as_i64().unwrap_or(0)),
            e["source"].as_str().unwrap_or(""),
        );
    }
    eprintln!("{} event(s)", events.len());
    ExitCode::SUCCESS
}

/// `charter rejected list`: payloads kept because they broke their contract.
pub async fn rejected_list(
    server: &ServerArgs,
    charter: Option<String>,
    limit: usize,
    json: bool,
) -> ExitCode {
    let path = format!(
        "/api/v1/rejected{}",
        query(&[("limit", Some(limit.to_string())), ("charter", charter)])
    );
    let v = match call(server, reqwest::Method::GET, &path, None).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        print_json(&v["rejected"]);
        return ExitCode::SUCCESS;
    }
    let items = v["rejected"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<36}  {:<20}  {:<20}  VIOLATIONS",
        "ID", "CHARTER", "RECEIVED"
    );
    for r in &items {
        let reasons: Vec<&str> = r["reasons"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "{:<36}  {:<20}  {:<20}  {}",
            r["id"].as_str().unwrap_or(""),
            r["charter"].as_str().unwrap_or(""),
            ms_to_rfc3339(r["received_at"].as_i64().unwrap_or(0)),
            reasons.join("; "),
        );
    }
    eprintln!(
        "{} of {} rejected payload(s)",
        items.len(),
        v["total"].as_u64().unwrap_or(items.len() as u64)
    );
    ExitCode::SUCCESS
}

/// `charter rejected replay <id>`: store the payload as an event if it passes the contract
/// now; prints the acknowledgement (`{"id", "status"}`).
pub async fn rejected_replay(server: &ServerArgs, id: &str) -> ExitCode {
    let path = format!("/api/v1/rejected/{id}/replay");
    match call(server, reqwest::Method::POST, &path, None).await {
        Ok(v) => {
            print_json(&v);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// What `charter runs` lists.
pub struct RunsFilter {
    pub charter: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: usize,
}

/// `charter runs`: runs across events, newest first (a table, or `--json`).
pub async fn runs_list(server: &ServerArgs, f: RunsFilter, json: bool) -> ExitCode {
    let now = now_ms();
    let (since, until) = match (
        time_arg("since", &f.since, now),
        time_arg("until", &f.until, now),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let path = format!(
        "/api/v1/runs{}",
        query(&[
            ("limit", Some(f.limit.to_string())),
            ("since", since.map(|ms| ms.to_string())),
            ("until", until.map(|ms| ms.to_string())),
            ("charter", f.charter),
            ("outcome", f.outcome),
        ])
    );
    let v = match call(server, reqwest::Method::GET, &path, None).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        print_json(&v["runs"]);
        return ExitCode::SUCCESS;
    }
    let runs = v["runs"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<36}  {:<36}  {:<20}  {:<17}  {:<20}  {:<14}  ACTIONS",
        "RUN", "EVENT", "CHARTER", "OUTCOME", "STARTED", "LABEL"
    );
    for r in &runs {
        let actions: Vec<String> = r["actions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|a| {
                        format!(
                            "{}:{}",
                            a["action"].as_str().unwrap_or("?"),
                            a["status"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:<36}  {:<36}  {:<20}  {:<17}  {:<20}  {:<14}  {}",
            r["id"].as_str().unwrap_or(""),
            r["event_id"].as_str().unwrap_or(""),
            r["charter"].as_str().unwrap_or(""),
            r["outcome"].as_str().unwrap_or("running"),
            ms_to_rfc3339(r["started_at"].as_i64().unwrap_or(0)),
            r["decision"]["label"].as_str().unwrap_or("-"),
            if actions.is_empty() {
                "-".to_string()
            } else {
                actions.join(" ")
            },
        );
    }
    eprintln!(
        "{} of {} run(s)",
        runs.len(),
        v["total"].as_u64().unwrap_or(runs.len() as u64)
    );
    ExitCode::SUCCESS
}

/// `charter events show`: the event's timeline (runs with decision, route, context fetches,
/// drafts, actions and attempts) as text, or with `--json` the timeline document.
pub async fn events_show(server: &ServerArgs, id: &str, json: bool) -> ExitCode {
    let v = match call(
        server,
        reqwest::Method::GET,
        &format!("/api/v1/events/{id}/timeline"),
        None,
    )
    .await
    {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        print_json(&v);
        return ExitCode::SUCCESS;
    }
    let e = &v["event"];
    println!("event     {}", e["id"].as_str().unwrap_or(""));
    println!("charter   {}", e["charter"].as_str().unwrap_or(""));
    println!("status    {}", e["status"].as_str().unwrap_or(""));
    println!("source    {}", e["source"].as_str().unwrap_or(""));
    println!(
        "received  {}",
        ms_to_rfc3339(e["received_at"].as_i64().unwrap_or(0))
    );
    if let Some(k) = e["dedupe_key"].as_str() {
        println!("dedupe    {k}");
    }
    println!("payload   {}", e["payload"]);
    for run in v["runs"].as_array().cloned().unwrap_or_default() {
        println!();
        println!(
            "run {}  mode={}  outcome={}  started={}",
            run["id"].as_str().unwrap_or(""),
            run["mode"].as_str().unwrap_or(""),
            run["outcome"].as_str().unwrap_or("running"),
            ms_to_rfc3339(run["started_at"].as_i64().unwrap_or(0)),
        );
        let d = &run["decision"];
        if !d.is_null() {
            println!(
                "  decision  label={} confidence={} stage={}  ({})",
                d["label"].as_str().unwrap_or("-"),
                d["confidence"],
                d["stage"].as_str().unwrap_or(""),
                d["reason"].as_str().unwrap_or("")
            );
        }
        for c in run["context"].as_array().cloned().unwrap_or_default() {
            println!(
                "  context   {}  {}  status={}  {}ms  {}",
                c["name"].as_str().unwrap_or(""),
                if c["ok"].as_bool() == Some(true) {
                    "ok"
                } else {
                    "failed"
                },
                c["status"],
                c["duration_ms"],
                c["error"].as_str().unwrap_or("")
            );
        }
        match run["route"].as_u64() {
            Some(r) => println!("  route     #{}", r + 1),
            None => println!("  route     none"),
        }
        for d in run["drafts"].as_array().cloned().unwrap_or_default() {
            let u = &d["usage"];
            println!(
                "  draft     {}  provider={} model={} tokens={}+{}{}",
                d["action"].as_str().unwrap_or(""),
                d["provider"].as_str().unwrap_or("-"),
                d["model"].as_str().unwrap_or("-"),
                u["prompt_tokens"],
                u["completion_tokens"],
                d["reused_from_run"]
                    .as_str()
                    .map(|r| format!("  (reused from run {r})"))
                    .unwrap_or_default()
            );
            for line in d["text"].as_str().unwrap_or("").lines() {
                println!("    | {line}");
            }
        }
        for a in run["actions"].as_array().cloned().unwrap_or_default() {
            let key = a["idempotency_key"].as_str().unwrap_or("");
            let in_doubt = a["status"].as_str() == Some("in_doubt");
            println!(
                "  action    {}  {}  key={}",
                a["action"].as_str().unwrap_or(""),
                a["status"].as_str().unwrap_or(""),
                // The whole key: its first part is the event's id (the same for every
                // action of the event); an operator checks a request downstream by all of it.
                key
            );
            if in_doubt {
                println!(
                    "    in doubt: the intent was recorded, the outcome never was; the request may have reached the target with this key"
                );
            }
            for at in a["attempts"].as_array().cloned().unwrap_or_default() {
                println!(
                    "    attempt {}  status={}  {}ms  {}",
                    at["attempt"],
                    at["status"],
                    at["duration_ms"],
                    at["error"].as_str().unwrap_or("")
                );
            }
        }
        if let Some(err) = run["error"].as_str() {
            println!("  note      {err}");
        }
    }
    ExitCode::SUCCESS
}

/// What `charter replay` should put back in the queue.
pub struct ReplayWhat {
    pub id: Option<String>,
    pub failed: bool,
    pub since: Option<String>,
    pub until: Option<String>,
    pub charter: Option<String>,
}

pub async fn replay(server: &ServerArgs, what: ReplayWhat) -> ExitCode {
    let now = now_ms();
    let (since, until) = match (
        time_arg("since", &what.since, now),
        time_arg("until", &what.until, now),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let ranged = since.is_some() || until.is_some();
    let result = match (what.id, what.failed || ranged) {
        (Some(id), false) => {
            call(
                server,
                reqwest::Method::POST,
                &format!("/api/v1/events/{id}/replay"),
                None,
            )
            .await
        }
        (None, true) => {
            call(
                server,
                reqwest::Method::POST,
                "/api/v1/replay",
                Some(serde_json::json!({
                    "charter": what.charter,
                    "since": since,
                    "until": until,
                })),
            )
            .await
        }
        _ => {
            eprintln!("error: give an event id, --failed, or a time range (--since/--until)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(v) => {
            let ids = v["requeued"].as_array().cloned().unwrap_or_default();
            for id in &ids {
                println!("{}", id.as_str().unwrap_or(""));
            }
            eprintln!("{} event(s) queued for another run", ids.len());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `charter replay <id> --force`: run a copy of the event, so its actions execute again.
pub async fn rerun(server: &ServerArgs, id: &str) -> ExitCode {
    let path = format!("/api/v1/events/{id}/rerun");
    match call(server, reqwest::Method::POST, &path, None).await {
        Ok(v) => {
            println!("{}", v["event_id"].as_str().unwrap_or(""));
            eprintln!("a copy of {id} was stored as a new event; its actions will execute again");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
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

pub async fn promote(server: &ServerArgs, charter: &str) -> ExitCode {
    match call(
        server,
        reqwest::Method::POST,
        &format!("/api/v1/charters/{charter}/promote"),
        None,
    )
    .await
    {
        Ok(_) => {
            eprintln!("{charter}: live (new runs execute their actions)");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

pub async fn set_mode(server: &ServerArgs, charter: &str, mode: &str) -> ExitCode {
    match call(
        server,
        reqwest::Method::POST,
        &format!("/api/v1/charters/{charter}/mode"),
        Some(serde_json::json!({ "mode": mode })),
    )
    .await
    {
        Ok(v) => {
            let now = v["mode"].as_str().unwrap_or("?");
            let file = v["file_mode"].as_str().unwrap_or("?");
            if v["override"].is_null() {
                eprintln!("{charter}: {now} (the charter file's mode)");
            } else {
                eprintln!("{charter}: {now} (stored override; the charter file says {file})");
            }
            println!("{now}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

pub async fn reroute(server: &ServerArgs, id: &str, note: Option<String>) -> ExitCode {
    match call(
        server,
        reqwest::Method::POST,
        &format!("/api/v1/events/{id}/reroute"),
        Some(serde_json::json!({ "note": note })),
    )
    .await
    {
        Ok(v) => {
            let esc = v["escalation"]["id"].as_str().unwrap_or("");
            println!("{esc}");
            if v["already_open"].as_bool() == Some(true) {
                eprintln!("{id}: held for a human; it already had an open escalation ({esc})");
            } else {
                eprintln!("{id}: rerouted to the manual queue (escalation {esc})");
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

pub async fn events_timeline(server: &ServerArgs, id: &str) -> ExitCode {
    match call(
        server,
        reqwest::Method::GET,
        &format!("/api/v1/events/{id}/timeline"),
        None,
    )
    .await
    {
        Ok(v) => {
            print_json(&v);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

pub async fn set_paused(server: &ServerArgs, charter: &str, paused: bool) -> ExitCode {
    let verb = if paused { "pause" } else { "resume" };
    match call(
        server,
        reqwest::Method::POST,
        &format!("/api/v1/charters/{charter}/{verb}"),
        None,
    )
    .await
    {
        Ok(_) => {
            eprintln!(
                "{charter}: {}",
                if paused {
                    "paused (events are still accepted and stored)"
                } else {
                    "resumed"
                }
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Sign and post a payload to a charter's webhook.
pub async fn send(
    dir: &Path,
    charter: &str,
    file: &Path,
    delivery_id: Option<String>,
    server: &ServerArgs,
) -> ExitCode {
    let project = match charter_server::project::load(dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let Some(c) = project.charters.get(charter) else {
        eprintln!(
            "error: no charter named `{charter}` in {} (have: {})",
            dir.display(),
            project
                .charters
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(1);
    };
    let Some(webhook) = &c.trigger.webhook else {
        eprintln!("error: charter `{charter}` has no webhook trigger");
        return ExitCode::from(1);
    };
    let body = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let secret = match webhook.secrets.first() {
        None => None,
        Some(s) => match charter_server::project::resolve_secret(dir, s) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let delivery = delivery_id.unwrap_or_else(|| format!("msg_{}", uuid::Uuid::now_v7().simple()));
    match post_signed(
        server.base_url(),
        webhook,
        secret.as_deref(),
        &body,
        &delivery,
    )
    .await
    {
        Ok((status, v)) => {
            print_json(&v);
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                eprintln!("error: the server answered {status}");
                ExitCode::from(1)
            }
        }
        Err(code) => code,
    }
}

/// Sign `body` for `webhook` and post it. Shared with the demo.
pub async fn post_signed(
    base: &str,
    webhook: &charter_core::config::Webhook,
    secret: Option<&str>,
    body: &[u8],
    delivery_id: &str,
) -> Result<(reqwest::StatusCode, Value), ExitCode> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let headers = match secret {
        Some(s) => match charter_core::verify::sign(&webhook.verify, s, body, now, delivery_id) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: cannot sign: {e}");
                return Err(ExitCode::from(1));
            }
        },
        None => vec![],
    };
    let client = http()?;
    let url = format!("{}{}", base.trim_end_matches('/'), webhook.path);
    let mut req = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| {
        eprintln!("error: cannot reach {url}: {e}");
        ExitCode::from(UNREACHABLE)
    })?;
    let status = resp.status();
    let v = resp.json().await.unwrap_or(Value::Null);
    Ok((status, v))
}

// ---------------------------------------------------------------------------------------
// Approvals, escalations, audit log, corrections
// ---------------------------------------------------------------------------------------

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

/// `charter approvals`: pending (or `--status`) approvals, oldest first.
pub async fn approvals(
    server: &ServerArgs,
    charter: Option<String>,
    status: Option<String>,
    json: bool,
) -> ExitCode {
    let path = format!(
        "/api/v1/approvals{}",
        query(&[("charter", charter), ("status", status)])
    );
    let v = match call(server, reqwest::Method::GET, &path, None).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        print_json(&v["approvals"]);
        return ExitCode::SUCCESS;
    }
    let items = v["approvals"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<36}  {:<20}  {:<20}  {:<9}  {:<20}  EVENT",
        "ID", "CHARTER", "ACTION", "STATUS", "EXPIRES"
    );
    for a in &items {
        println!(
            "{:<36}  {:<20}  {:<20}  {:<9}  {:<20}  {}",
            text(&a["id"]),
            text(&a["charter"]),
            text(&a["action"]),
            text(&a["status"]),
            a["expires_at"]
                .as_i64()
                .map(ms_to_rfc3339)
                .unwrap_or_else(|| "-".into()),
            text(&a["event_id"]),
        );
    }
    eprintln!("{} approval(s)", items.len());
    ExitCode::SUCCESS
}

/// `charter approve ID [--params FILE]`: approve, optionally with edited parameters.
pub async fn approve(server: &ServerArgs, id: &str, params: Option<&Path>) -> ExitCode {
    let body = match params {
        None => None,
        Some(file) => {
            let raw = match std::fs::read(file) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", file.display());
                    return ExitCode::from(1);
                }
            };
            match serde_json::from_slice::<Value>(&raw) {
                Ok(p) => Some(serde_json::json!({ "params": p })),
                Err(e) => {
                    eprintln!("error: {} is not valid JSON: {e}", file.display());
                    return ExitCode::from(1);
                }
            }
        }
    };
    let path = format!("/api/v1/approvals/{}/approve", encode(id));
    match call(server, reqwest::Method::POST, &path, body).await {
        Ok(v) => {
            let a = &v["approval"];
            if a["edited_hash"].is_string() {
                eprintln!(
                    "approved {id} with edited parameters (new key {})",
                    text(&a["edited_hash"])
                );
            } else {
                eprintln!("approved {id}");
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `charter reject ID --reason TEXT`.
pub async fn reject(server: &ServerArgs, id: &str, reason: &str) -> ExitCode {
    let path = format!("/api/v1/approvals/{}/reject", encode(id));
    let body = serde_json::json!({ "reason": reason });
    match call(server, reqwest::Method::POST, &path, Some(body)).await {
        Ok(_) => {
            eprintln!("rejected {id}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `charter escalations`: open (or `--status`) escalations, oldest first.
/// `charter in-doubt`: actions left in doubt by interrupted runs (intent recorded, outcome
/// unknown), newest first.
pub async fn in_doubt(
    server: &ServerArgs,
    charter: Option<String>,
    unsettled: bool,
    limit: usize,
    json: bool,
) -> ExitCode {
    let path = format!(
        "/api/v1/in-doubt{}",
        query(&[
            ("charter", charter),
            ("unsettled", unsettled.then(|| "true".to_string())),
            ("limit", Some(limit.to_string())),
        ])
    );
    let v = match call(server, reqwest::Method::GET, &path, None).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        print_json(&v["in_doubt"]);
        return ExitCode::SUCCESS;
    }
    let items = v["in_doubt"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<36}  {:<20}  {:<16}  {:<20}  {:<8}  {:<64}  RUN",
        "EVENT", "CHARTER", "ACTION", "INTERRUPTED", "SETTLED", "IDEMPOTENCY KEY"
    );
    for a in &items {
        println!(
            "{:<36}  {:<20}  {:<16}  {:<20}  {:<8}  {:<64}  {}",
            text(&a["event_id"]),
            text(&a["charter"]),
            text(&a["action"]),
            a["interrupted_at"]
                .as_i64()
                .map(ms_to_rfc3339)
                .unwrap_or_default(),
            if a["settled"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            text(&a["idempotency_key"]),
            text(&a["run_id"]),
        );
    }
    eprintln!("{} in-doubt action(s)", items.len());
    ExitCode::SUCCESS
}

pub async fn escalations(
    server: &ServerArgs,
    charter: Option<String>,
    status: Option<String>,
    json: bool,
) -> ExitCode {
    let path = format!(
        "/api/v1/escalations{}",
        query(&[("charter", charter), ("status", status)])
    );
    let v = match call(server, reqwest::Method::GET, &path, None).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        print_json(&v["escalations"]);
        return ExitCode::SUCCESS;
    }
    let items = v["escalations"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<36}  {:<20}  {:<16}  {:<8}  {:<20}  EVENT",
        "ID", "CHARTER", "REASON", "STATUS", "CREATED"
    );
    for e in &items {
        println!(
            "{:<36}  {:<20}  {:<16}  {:<8}  {:<20}  {}",
            text(&e["id"]),
            text(&e["charter"]),
            text(&e["reason"]),
            text(&e["status"]),
            ms_to_rfc3339(e["created_at"].as_i64().unwrap_or(0)),
            text(&e["event_id"]),
        );
    }
    eprintln!("{} escalation(s)", items.len());
    ExitCode::SUCCESS
}

/// Parse `--field k=v` arguments; a value that is valid JSON (number, boolean, quoted
/// string, ...) is taken as JSON, anything else as a plain string.
pub fn parse_fields(fields: &[String]) -> Result<serde_json::Map<String, Value>, String> {
    let mut out = serde_json::Map::new();
    for f in fields {
        let Some((k, v)) = f.split_once('=') else {
            return Err(format!("--field `{f}` is not key=value"));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("--field `{f}` has an empty key"));
        }
        let value = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.into()));
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

/// `charter decide ESC_ID --label L [--field k=v]...`: resolve an escalation.
pub async fn decide(server: &ServerArgs, id: &str, label: &str, fields: &[String]) -> ExitCode {
    let fields = match parse_fields(fields) {
        Ok(f) => f,
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::from(2);
        }
    };
    let path = format!("/api/v1/escalations/{}/decide", encode(id));
    let body = serde_json::json!({ "label": label, "fields": fields });
    match call(server, reqwest::Method::POST, &path, Some(body)).await {
        Ok(_) => {
            eprintln!("escalation {id} decided as `{label}`; the run continues");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `charter audit`: the audit log, newest first.
pub async fn audit(
    server: &ServerArgs,
    charter: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    limit: usize,
    json: bool,
) -> ExitCode {
    let path = format!(
        "/api/v1/audit{}",
        query(&[
            ("charter", charter),
            ("actor", actor),
            ("action", action),
            ("limit", Some(limit.to_string())),
        ])
    );
    let v = match call(server, reqwest::Method::GET, &path, None).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        print_json(&v["audit"]);
        return ExitCode::SUCCESS;
    }
    let items = v["audit"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<20}  {:<16}  {:<20}  {:<20}  TARGET",
        "AT", "ACTOR", "ACTION", "CHARTER"
    );
    for e in &items {
        println!(
            "{:<20}  {:<16}  {:<20}  {:<20}  {}",
            ms_to_rfc3339(e["at"].as_i64().unwrap_or(0)),
            text(&e["actor"]),
            text(&e["action"]),
            e["charter"].as_str().unwrap_or("-"),
            e["target"].as_str().unwrap_or("-"),
        );
    }
    eprintln!(
        "{} entr{}",
        items.len(),
        if items.len() == 1 { "y" } else { "ies" }
    );
    ExitCode::SUCCESS
}

/// One CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The corrections as CSV `text,label` (header first).
pub fn corrections_csv(corrections: &[Value]) -> String {
    let mut out = String::from("text,label\n");
    for c in corrections {
        out.push_str(&csv_field(text(&c["text"])));
        out.push(',');
        out.push_str(&csv_field(text(&c["label"])));
        out.push('\n');
    }
    out
}

/// A charter's corrections (human-decided escalations) from the server.
async fn corrections(server: &ServerArgs, charter: &str) -> Result<Vec<Value>, ExitCode> {
    let path = format!(
        "/api/v1/corrections{}",
        query(&[("charter", Some(charter.to_string()))])
    );
    let v = call(server, reqwest::Method::GET, &path, None).await?;
    Ok(v["corrections"].as_array().cloned().unwrap_or_default())
}

/// The rows of `corrections` that `existing` (an examples CSV) does not hold yet, with the
/// same text and label: what `--merge-into` appends.
pub fn new_examples(existing: &str, corrections: &[Value]) -> Result<Vec<Value>, String> {
    let known: std::collections::HashSet<(String, String)> = if existing.trim().is_empty() {
        Default::default()
    } else {
        charter_decide::parse_examples(existing, charter_decide::ExampleFormat::Csv)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|e| (e.text, e.label))
            .collect()
    };
    let mut seen = known;
    Ok(corrections
        .iter()
        .filter(|c| {
            seen.insert((
                text(&c["text"]).to_string(),
                text(&c["label"]).trim().to_string(),
            ))
        })
        .cloned()
        .collect())
}

/// `charter export-corrections CHARTER --merge-into FILE`: append the human-decided cases
/// the examples file does not hold yet (created with its header when missing).
pub async fn merge_corrections(server: &ServerArgs, charter: &str, file: &Path) -> ExitCode {
    let items = match corrections(server, charter).await {
        Ok(items) => items,
        Err(code) => return code,
    };
    let existing = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let fresh = match new_examples(&existing, &items) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let mut text = existing.clone();
    if text.trim().is_empty() {
        text = corrections_csv(&fresh);
    } else {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        // Without the header line.
        let rows = corrections_csv(&fresh);
        text.push_str(rows.split_once('\n').map_or("", |(_, rest)| rest));
    }
    if let Err(e) = std::fs::write(file, text) {
        eprintln!("error: cannot write {}: {e}", file.display());
        return ExitCode::from(1);
    }
    eprintln!(
        "added {} of {} correction(s) to {}",
        fresh.len(),
        items.len(),
        file.display()
    );
    ExitCode::SUCCESS
}

/// `charter export-corrections CHARTER [--out FILE]`: human-decided cases as labelled
/// examples (CSV `text,label`) for the next `charter train`.
pub async fn export_corrections(
    server: &ServerArgs,
    charter: &str,
    out: Option<&Path>,
) -> ExitCode {
    let items = match corrections(server, charter).await {
        Ok(items) => items,
        Err(code) => return code,
    };
    let csv = corrections_csv(&items);
    match out {
        Some(file) => {
            if let Err(e) = std::fs::write(file, csv) {
                eprintln!("error: cannot write {}: {e}", file.display());
                return ExitCode::from(1);
            }
            eprintln!("wrote {} correction(s) to {}", items.len(), file.display());
        }
        None => {
            print!("{csv}");
            eprintln!("{} correction(s)", items.len());
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_corrections_the_examples_lack_are_merged() {
        let existing = "text,label\nrefund please,billing\n\"a, b\",other\n";
        let corrections = vec![
            serde_json::json!({"text": "refund please", "label": "billing"}),
            serde_json::json!({"text": "refund please", "label": "other"}),
            serde_json::json!({"text": "a, b", "label": "other"}),
            serde_json::json!({"text": "new case", "label": "bug"}),
            serde_json::json!({"text": "new case", "label": "bug"}),
        ];
        let fresh = new_examples(existing, &corrections).unwrap();
        assert_eq!(
            fresh,
            vec![
                serde_json::json!({"text": "refund please", "label": "other"}),
                serde_json::json!({"text": "new case", "label": "bug"}),
            ]
        );
        assert_eq!(
            new_examples("", &corrections).unwrap().len(),
            4,
            "repeats within one export are merged once"
        );
        assert!(new_examples("text,label\n,billing\n", &corrections).is_err());
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let rows = vec![
            serde_json::json!({"text": "plain text", "label": "billing"}),
            serde_json::json!({"text": "a, \"quoted\"\nline", "label": "bug"}),
        ];
        assert_eq!(
            corrections_csv(&rows),
            "text,label\nplain text,billing\n\"a, \"\"quoted\"\"\nline\",bug\n"
        );
    }

    #[test]
    fn fields_take_json_values_or_strings() {
        let f = parse_fields(&[
            "order_id=ORD-7".into(),
            "count=3".into(),
            "urgent=true".into(),
            "note=a=b".into(),
        ])
        .unwrap();
        assert_eq!(f["order_id"], "ORD-7");
        assert_eq!(f["count"], 3);
        assert_eq!(f["urgent"], true);
        assert_eq!(f["note"], "a=b");
        assert!(parse_fields(&["novalue".into()]).is_err());
        assert!(parse_fields(&["=x".into()]).is_err());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            query(&[("charter", Some("a b&c".into())), ("status", None)]),
            "?charter=a%20b%26c"
        );
        assert_eq!(query(&[("x", None)]), "");
    }
}

#[cfg(test)]
mod time_tests {
    use super::parse_time;

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
