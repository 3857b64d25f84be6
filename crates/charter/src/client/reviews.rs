//! Human review: approvals (approve with parameters, reject), escalations (decide with
//! fields), actions in doubt, and the audit log.

use super::*;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
