//! `charter demo`: write the example project into a folder, start a local stand-in for
//! the helpdesk, serve the project on localhost, feed it the sample events (signed as each
//! charter's preset expects), and print what happened. No keys and no network beyond
//! 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use charter_server::{Role, Runtime, ServeOptions};
use charter_store::sqlite::SqliteStore;
use charter_testkit::sink::Sink;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::serve::{LogArgs, init_logging, parse_listen, shutdown_signal};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Folder for the demo project (default: a new folder under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Address to serve on.
    #[arg(long, env = "CHARTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Exit once the sample events are processed instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub log: LogArgs,
}

pub async fn demo(args: DemoArgs) -> ExitCode {
    init_logging(&LogArgs {
        log_level: if args.log.log_level == "info" {
            "warn".into()
        } else {
            args.log.log_level.clone()
        },
        log_format: args.log.log_format.clone(),
    });
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: DemoArgs) -> Result<(), String> {
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("charter-demo-{}", uuid::Uuid::now_v7().simple()))
    });
    let shutdown = CancellationToken::new();
    let sink = Sink::default();
    let sink_addr = sink
        .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await
        .map_err(|e| format!("cannot start the demo helpdesk: {e}"))?;
    let sink_url = format!("http://{sink_addr}");
    write_project(&dir, &sink_url)?;
    eprintln!("demo project written to {}", dir.display());
    eprintln!("stand-in helpdesk listening on {sink_url}");

    let runtime = Arc::new(Runtime::load(&dir).map_err(|e| e.to_string())?);
    let store = SqliteStore::open(&runtime.store_path()).map_err(|e| e.to_string())?;
    let listen = parse_listen(&args.listen)?;
    let running = charter_server::start(
        runtime.clone(),
        store.clone(),
        ServeOptions {
            listen,
            role: Role::All,
            worker_id: Some("demo".into()),
        },
        shutdown.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let base = format!("http://{}", running.addr);
    eprintln!("charter serving on {base}; web UI: {base}/");

    let sent = send_samples(&runtime, &dir, &base).await?;
    let client = reqwest::Client::new();
    let events = wait_for_runs(&client, &base).await?;
    print_events(&client, &base, &events).await?;
    eprintln!(
        "{} sample event(s) sent; the stand-in helpdesk applied {} action(s)",
        sent.len(),
        sink.applied_keys()
    );
    print_waiting(&client, &base).await?;
    if args.once {
        eprintln!(
            "--once: stopping; `charter serve {}` serves the same project again",
            dir.display()
        );
    } else {
        eprintln!(
            "open the web UI at {base}/ and try: charter events list --server {base}\n\
             (without `charter` on PATH: cargo run --release -- events list --server {base}; Ctrl-C to stop)"
        );
        shutdown_signal().await;
    }
    shutdown.cancel();
    let _ = running.done.await;
    store.close().await;
    Ok(())
}

/// Write the example project (its helpdesk connector pointing at `sink_url`) into `dir`.
fn write_project(dir: &Path, sink_url: &str) -> Result<(), String> {
    for (rel, contents) in charter_core::scaffold::demo_project(sink_url) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Feed every sample (`samples/<charter>/*.json`) to its charter's webhook, signed as the
/// charter's preset expects; the ids of the events accepted.
async fn send_samples(runtime: &Runtime, dir: &Path, base: &str) -> Result<Vec<String>, String> {
    let mut sent = Vec::new();
    for (name, cr) in &runtime.charters {
        let Some(webhook) = &cr.charter.trigger.webhook else {
            continue;
        };
        let sample_dir = dir.join("samples").join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&sample_dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            let body = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            let secret = cr.webhook_secrets.first().map(String::as_str);
            let delivery = format!("demo-{}", uuid::Uuid::now_v7().simple());
            let (status, v) = crate::client::post_signed(base, webhook, secret, &body, &delivery)
                .await
                .map_err(|_| "could not post a sample event".to_string())?;
            let file = f
                .file_name()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            eprintln!("sent {name}/{file}: {status}");
            if let Some(id) = v["id"].as_str() {
                sent.push(id.to_string());
            }
        }
    }
    Ok(sent)
}

/// `GET base+path` as JSON.
async fn get_json(client: &reqwest::Client, base: &str, path: &str) -> Result<Value, String> {
    client
        .get(format!("{base}{path}"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json::<Value>()
        .await
        .map_err(|e| e.to_string())
}

/// Wait (at most 30 s) until no event is pending or processing; the events then.
async fn wait_for_runs(client: &reqwest::Client, base: &str) -> Result<Vec<Value>, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = get_json(client, base, "/api/v1/events?limit=1000").await?;
        let events = v["events"].as_array().cloned().unwrap_or_default();
        let busy = events
            .iter()
            .any(|e| matches!(e["status"].as_str(), Some("pending" | "processing")));
        if !busy || tokio::time::Instant::now() > deadline {
            return Ok(events);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One line per event, oldest first: its charter, status, and its last run's outcome, label
/// and actions.
async fn print_events(
    client: &reqwest::Client,
    base: &str,
    events: &[Value],
) -> Result<(), String> {
    println!(
        "{:<36}  {:<16}  {:<8}  OUTCOME",
        "EVENT", "CHARTER", "STATUS"
    );
    for e in events.iter().rev() {
        let id = e["id"].as_str().unwrap_or("");
        let detail = get_json(client, base, &format!("/api/v1/events/{id}")).await?;
        let last = detail["runs"]
            .as_array()
            .and_then(|r| r.last())
            .cloned()
            .unwrap_or(Value::Null);
        let label = last["decision"]["label"].as_str().unwrap_or("-");
        let actions: Vec<String> = last["actions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                format!(
                    "{}={}",
                    a["action"].as_str().unwrap_or(""),
                    a["status"].as_str().unwrap_or("")
                )
            })
            .collect();
        println!(
            "{id:<36}  {:<16}  {:<8}  {} label={label} {}",
            e["charter"].as_str().unwrap_or(""),
            e["status"].as_str().unwrap_or(""),
            last["outcome"].as_str().unwrap_or("-"),
            actions.join(" ")
        );
    }
    Ok(())
}

/// Prints what waits for a human: each open approval (an action whose policy asks for a
/// reviewer) and each open escalation (an event the rules could not decide), with where to
/// decide them in the web UI and from the command line.
async fn print_waiting(client: &reqwest::Client, base: &str) -> Result<(), String> {
    let approvals = get_json(client, base, "/api/v1/approvals").await?;
    let escalations = get_json(client, base, "/api/v1/escalations").await?;
    let approvals = approvals["approvals"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let escalations = escalations["escalations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if approvals.is_empty() && escalations.is_empty() {
        return Ok(());
    }
    println!();
    println!("WAITING FOR A HUMAN (decide in the web UI inbox: {base}/inbox)");
    for a in &approvals {
        println!(
            "approval    {}  {:<16}  action {} for event {} (reviewers: {})",
            a["id"].as_str().unwrap_or(""),
            a["charter"].as_str().unwrap_or(""),
            a["action"].as_str().unwrap_or(""),
            a["event_id"].as_str().unwrap_or(""),
            a["reviewers"]
                .as_array()
                .map(|r| r
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
        );
    }
    for e in &escalations {
        println!(
            "escalation  {}  {:<16}  {} for event {} (to {})",
            e["id"].as_str().unwrap_or(""),
            e["charter"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or(""),
            e["event_id"].as_str().unwrap_or(""),
            e["target"].as_str().unwrap_or("-"),
        );
    }
    eprintln!(
        "or from the command line: charter approve <id> --server {base} | \
         charter decide <id> --label billing --server {base}"
    );
    Ok(())
}
