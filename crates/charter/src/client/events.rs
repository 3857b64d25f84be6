//! Events, runs and rejected deliveries: listings, one event's detail and timeline, replay
//! and rerun.

use super::*;

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
