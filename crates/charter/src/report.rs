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
    if args.json {
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
    ExitCode::SUCCESS
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
