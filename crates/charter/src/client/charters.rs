//! Operator commands on a charter or a route: promote, mode, reroute, pause and resume.

use super::*;

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
