//! `charter routes`, `charter route-mode` and `charter export-rewrites`: a charter's rollout
//! per route through the admin API (see the server's `rollout` module).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::ServerArgs;
use crate::client::{call, query};

/// `charter routes CHARTER`: every route's mode, sampling, agreement and promotion state.
pub async fn routes(server: &ServerArgs, charter: &str, json: bool) -> ExitCode {
    let v = match call(
        server,
        reqwest::Method::GET,
        &format!("/api/v1/charters/{}/routes", crate::client::encode(charter)),
        None,
    )
    .await
    {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    print!("{}", routes_text(&v));
    ExitCode::SUCCESS
}

/// The routes listing as text (one line per route).
pub fn routes_text(v: &Value) -> String {
    let mut o = String::new();
    for r in v["routes"].as_array().into_iter().flatten() {
        let over = if r["override"].is_null() {
            String::new()
        } else {
            format!(
                " (set by {}; the files say {})",
                r["override"]["by"].as_str().unwrap_or("?"),
                r["declared_mode"].as_str().unwrap_or("?")
            )
        };
        o.push_str(&format!(
            "{:<20} {:<8}{over}  sample {:.1}%  {} waiting  {}{}\n",
            r["name"].as_str().unwrap_or("?"),
            r["mode"].as_str().unwrap_or("?"),
            100.0 * r["sample"].as_f64().unwrap_or(0.0),
            r["pending_reviews"].as_u64().unwrap_or(0),
            r["agreement_text"].as_str().unwrap_or(""),
            if r["suggest_promotion"].as_bool() == Some(true) {
                "  -> meets promote_when: `charter route-mode CHARTER ROUTE live` to promote"
            } else {
                ""
            }
        ));
    }
    o
}

/// `charter route-mode CHARTER ROUTE MODE`: set a route's mode (`file` drops the override).
pub async fn route_mode(
    server: &ServerArgs,
    charter: &str,
    route: &str,
    mode: &str,
    reason: Option<String>,
) -> ExitCode {
    let path = format!(
        "/api/v1/charters/{}/routes/{}/mode",
        crate::client::encode(charter),
        crate::client::encode(route)
    );
    match call(
        server,
        reqwest::Method::POST,
        &path,
        Some(serde_json::json!({ "mode": mode, "reason": reason })),
    )
    .await
    {
        Ok(v) => {
            let now = v["route"]["mode"].as_str().unwrap_or("?");
            eprintln!("{charter}/{route}: {now}");
            println!("{now}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The pairs as JSON Lines: one `{charter, route, action, draft, approved, chars, ...}` each.
pub fn rewrites_jsonl(rewrites: &[Value]) -> String {
    let mut out = String::new();
    for r in rewrites {
        out.push_str(&r.to_string());
        out.push('\n');
    }
    out
}

/// `charter export-rewrites CHARTER [--out FILE]`: the drafts reviewers approved and what
/// they approved, as JSON Lines, for prompt work.
pub async fn export_rewrites(
    server: &ServerArgs,
    charter: &str,
    edited_only: bool,
    out: Option<&Path>,
) -> ExitCode {
    let path = format!(
        "/api/v1/rewrites{}",
        query(&[
            ("charter", Some(charter.to_string())),
            ("limit", Some("10000".into())),
        ])
    );
    let v = match call(server, reqwest::Method::GET, &path, None).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let pairs: Vec<Value> = v["rewrites"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| !edited_only || r["chars"].as_u64().unwrap_or(0) > 0)
        .cloned()
        .collect();
    let text = rewrites_jsonl(&pairs);
    match out {
        Some(file) => {
            if let Err(e) = std::fs::write(file, &text) {
                eprintln!("error: cannot write {}: {e}", file.display());
                return ExitCode::from(1);
            }
            eprintln!("wrote {} rewrite(s) to {}", pairs.len(), file.display());
        }
        None => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            eprintln!("{} rewrite(s)", pairs.len());
        }
    }
    ExitCode::SUCCESS
}
