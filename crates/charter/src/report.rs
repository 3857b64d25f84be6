//! `charter report <charter> [--since 7d] [--json]`: a charter's measurements from a running
//! server's admin API (`GET /api/v1/charters/{name}/report`).

use std::process::ExitCode;

use charter_store::CharterReport;
use serde_json::Value;

use crate::ServerArgs;

/// Exit code when the server cannot be reached.
const UNREACHABLE: u8 = 3;

/// Arguments of `charter report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// The charter to report on.
    pub charter: String,
    /// How far back from now (`7d`, `24h`, `15m`).
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// Slices of the window in the JSON `buckets` (for charts).
    #[arg(long, default_value_t = 14)]
    pub buckets: u32,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Percent-encode a path segment or query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Run `charter report`.
pub async fn report(args: ReportArgs) -> ExitCode {
    if let Err(e) = charter_core::config::validate::parse_duration(&args.since) {
        eprintln!("error: --since: {e}");
        return ExitCode::from(2);
    }
    let url = format!(
        "{}/api/v1/charters/{}/report?since={}&buckets={}",
        args.server.base_url(),
        encode(&args.charter),
        encode(&args.since),
        args.buckets
    );
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot create an HTTP client: {e}");
            return ExitCode::from(1);
        }
    };
    let mut req = client.get(&url);
    if let Some(t) = &args.server.token {
        req = req.bearer_auth(t);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot reach {url}: {e}");
            return ExitCode::from(UNREACHABLE);
        }
    };
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.as_u16() == 404 {
        eprintln!("error: no charter `{}` on this server", args.charter);
        return ExitCode::from(1);
    }
    if !status.is_success() {
        let msg = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("request failed");
        eprintln!("error: {status}: {msg}");
        return ExitCode::from(1);
    }
    let knowledge = knowledge_summary(&client, &args).await;
    if args.json {
        let mut body = body;
        if let Some(k) = &knowledge {
            body["knowledge"] = serde_json::to_value(k).unwrap_or(Value::Null);
        }
        match serde_json::to_string_pretty(&body) {
            Ok(s) => println!("{s}"),
            Err(_) => println!("{body}"),
        }
        return ExitCode::SUCCESS;
    }
    let report: CharterReport = match serde_json::from_value(body["report"].clone()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the server's report is not understood: {e}");
            return ExitCode::from(1);
        }
    };
    let declared: Vec<String> = body["measures"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let window = body["window"].as_str().unwrap_or(&args.since);
    print!(
        "{}",
        charter_server::report::render_text(&report, window, &declared)
    );
    print!("{}", charter_server::rollout::render_text(&body["rollout"]));
    if let Some(open) = body["alerts_open"].as_array().filter(|a| !a.is_empty()) {
        println!();
        println!("alerts firing");
        for a in open {
            println!(
                "  {:<22} {}",
                a["alert"].as_str().unwrap_or("?"),
                a["detail"]["summary"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(k) = &knowledge {
        println!();
        print!("{}", charter_server::knowledge::summary::render_text(k));
    }
    ExitCode::SUCCESS
}

/// The knowledge part: the charter's gaps in the window and the stale documents of every
/// source. `None` when the project has no knowledge sources (or the server predates them).
async fn knowledge_summary(
    client: &reqwest::Client,
    args: &ReportArgs,
) -> Option<charter_server::knowledge::summary::KnowledgeSummary> {
    use charter_server::knowledge::summary::{StaleDoc, summarize};
    let get = |path: String| {
        let mut req = client.get(format!("{}{path}", args.server.base_url()));
        if let Some(t) = &args.server.token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            resp.json::<Value>().await.ok()
        }
    };
    let sources = get("/api/v1/knowledge/sources".into()).await?;
    let sources = sources["sources"].as_array()?;
    if sources.is_empty() {
        return None;
    }
    let window = charter_core::config::validate::parse_duration(&args.since).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis();
    let since = i64::try_from(now.saturating_sub(window.as_millis())).ok()?;
    let gaps = get(format!(
        "/api/v1/knowledge/gaps?charter={}&since={since}&limit=10000",
        encode(&args.charter)
    ))
    .await?;
    let gaps: Vec<charter_store::KnowledgeGap> =
        serde_json::from_value(gaps["gaps"].clone()).ok()?;
    let stale: Vec<StaleDoc> = sources
        .iter()
        .flat_map(|s| s["stale"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| serde_json::from_value(d).ok())
        .collect();
    Some(summarize(&gaps, &stale))
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn encodes_path_and_query_values() {
        assert_eq!(encode("support-triage"), "support-triage");
        assert_eq!(encode("a b/c?"), "a%20b%2Fc%3F");
    }
}
