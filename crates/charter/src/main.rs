//! The `charter` command line. Data goes to stdout, messages to stderr.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (invalid charters, an API
//! error, a failed operation); 2 usage errors (from clap); 3 the server could not be reached.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: allocation was a fifth of the ingest profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod client;
mod decide_cmd;
mod demo;
mod knowledge_cmd;
mod operator_cmd;
mod otlp;
mod progress;
mod report;
mod rollout_cmd;
mod serve;
/// The test policy for outside tools (PostgreSQL for the bench test), shared with the test binaries.
#[cfg(test)]
#[path = "../../../tests/tools.rs"]
mod test_tools;

/// `charter --version`: the package version, the git commit it was built from and the
/// build date (both "unknown" when the build had no git; see build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CHARTER_GIT_COMMIT"),
    ", built ",
    env!("CHARTER_BUILD_DATE"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "charter",
    version = VERSION,
    about = "Charter: AI inside your team's workflows, on the record.",
    long_about = "Receives events from your tools, stores each durably, decides and routes them under a charter, and writes results back. Data goes to stdout, messages to stderr."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the admin API is and how to authenticate.
#[derive(clap::Args, Clone)]
pub struct ServerArgs {
    /// Base URL of a running `charter serve` (default: the project's `server.listen`, else
    /// http://127.0.0.1:8080).
    #[arg(long, env = "CHARTER_SERVER")]
    pub server: Option<String>,
    /// Project folder whose `server.listen` says where the server is (default: the current
    /// folder, when it holds a charter.yaml).
    #[arg(long, env = "CHARTER_PROJECT")]
    pub project: Option<PathBuf>,
    /// API token (sent as a bearer token) when the server defines tokens.
    #[arg(long, env = "CHARTER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The base URL, found once.
    #[arg(skip)]
    resolved: std::sync::OnceLock<String>,
}

impl ServerArgs {
    /// The server's base URL: `--server` (or CHARTER_SERVER); else the project's
    /// `server.listen` (from `--project`, else the current folder when it holds a
    /// charter.yaml; an address listening on every interface is reached on loopback); else
    /// http://127.0.0.1:8080.
    pub fn base_url(&self) -> &str {
        self.resolved.get_or_init(|| {
            if let Some(s) = &self.server {
                return s.trim_end_matches('/').to_string();
            }
            let dir = self.project.clone().unwrap_or_else(|| PathBuf::from("."));
            let listen = dir
                .join("charter.yaml")
                .exists()
                .then(|| charter_server::project::load(&dir).ok())
                .flatten()
                .and_then(|p| p.settings.listen);
            match listen {
                Some(l) => format!("http://{}", client_address(&l)),
                None => "http://127.0.0.1:8080".to_string(),
            }
        })
    }
}

/// The address a client connects to for a listen address: 0.0.0.0 and [::] (every
/// interface) are reached on loopback.
fn client_address(listen: &str) -> String {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() && a.is_ipv4() => format!("127.0.0.1:{}", a.port()),
        Ok(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        _ => listen.to_string(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Validate a project folder and every charter in it; lists every problem as file:line:col.
    Check {
        /// Project folder (holding charter.yaml and charters/).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Treat warnings (an `env:` secret not set in this environment) as errors.
        #[arg(long)]
        strict: bool,
    },
    /// Print a shell completion script: `charter completions bash > /etc/bash_completion.d/charter`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the JSON Schemas of charter.yaml and charter files and the key reference
    /// (generated from the validator's own tables) into a docs folder, or print one schema.
    Schema {
        /// Print only this schema on stdout: `project` (charter.yaml) or `charter`.
        #[arg(value_parser = ["project", "charter"])]
        which: Option<String>,
        /// The docs folder to write into (schema/*.json and src/reference.md).
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
    },
    /// Create a new, working project folder.
    Init {
        /// Folder to create (must not already hold a charter.yaml).
        dir: PathBuf,
    },
    /// Run the server: webhooks, admin API and worker.
    Serve(serve::ServeArgs),
    /// Post a JSON file to a charter's webhook, signed the way the charter's preset expects.
    Send {
        /// The charter to send to.
        charter: String,
        /// JSON file with the payload.
        file: PathBuf,
        /// Project folder (to read the charter's path, preset and secret reference).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Delivery id (for presets that carry one); random when omitted.
        #[arg(long)]
        delivery_id: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List or show stored events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Payloads kept because they broke their charter's input contract: list them, or replay
    /// one once the contract (or the sender) is fixed.
    Rejected {
        #[command(subcommand)]
        command: RejectedCommand,
    },
    /// List runs across events, newest first: outcome, decision and actions of each.
    Runs {
        #[arg(long)]
        charter: Option<String>,
        /// completed, no_route, shadow, failed, escalated, awaiting_approval, rejected,
        /// interrupted, or running (not finished yet).
        #[arg(long)]
        outcome: Option<String>,
        /// Only runs started at or after this time: Unix milliseconds, an RFC 3339 UTC time,
        /// a date (2026-01-02) or a duration ago (24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Only runs started before this time (same forms).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run an event again, every failed event, or every event received in a time range
    /// (succeeded actions are not repeated, unless `--force`).
    Replay {
        /// Event id to replay.
        id: Option<String>,
        /// Replay every failed event (of --charter, or of all charters).
        #[arg(long, conflicts_with = "id")]
        failed: bool,
        /// Replay every event received at or after this time (any status but processing):
        /// Unix milliseconds, an RFC 3339 UTC time (2026-01-02T15:04:05Z), a date
        /// (2026-01-02) or a duration ago (24h, 7d).
        #[arg(long, conflicts_with_all = ["id", "failed"])]
        since: Option<String>,
        /// With --since (or alone): only events received before this time (same forms).
        #[arg(long, conflicts_with_all = ["id", "failed"])]
        until: Option<String>,
        /// Only this charter (with --failed, --since or --until).
        #[arg(long, conflicts_with = "id")]
        charter: Option<String>,
        /// With an event id: execute its actions again, even those that succeeded. A copy of
        /// the event is stored as a new event (new id, so new idempotency keys) and runs from
        /// the start; the original keeps its record.
        #[arg(long, requires = "id")]
        force: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    #[command(flatten)]
    Operate(operator_cmd::OperateCommand),
    /// Serve an example project on localhost and feed it sample events (no keys needed).
    Demo(demo::DemoArgs),
    /// A charter's measurements: volume, outcomes, cycle time, approval, escalation,
    /// correction and error rates, named outcomes.
    Report(report::ReportArgs),
    /// Apply the store's migrations (SQLite or PostgreSQL) and exit.
    Migrate {
        /// Project folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Store override (a SQLite path or a postgres:// URL).
        #[arg(long, env = "CHARTER_STORE")]
        store: Option<String>,
    },
    /// Write a consistent copy of the SQLite store to a new file, while the server runs
    /// (for PostgreSQL use pg_dump).
    Backup {
        /// The copy to write (must not exist).
        out: PathBuf,
        /// Project folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Store override (a SQLite path; a postgres:// URL is refused).
        #[arg(long, env = "CHARTER_STORE")]
        store: Option<String>,
    },
    /// Remove finished events received before a cut-off (with their runs, actions,
    /// approvals, escalations and notifications) and old rejected payloads; measurements,
    /// the audit log and work still waiting for a human stay. Run it from cron.
    Purge {
        /// The cut-off: Unix milliseconds, an RFC 3339 UTC time (2026-01-02T15:04:05Z), a
        /// date (2026-01-02) or a duration ago (90d).
        #[arg(long)]
        before: String,
        /// Only this charter.
        #[arg(long)]
        charter: Option<String>,
        /// Project folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Store override (a SQLite path or a postgres:// URL).
        #[arg(long, env = "CHARTER_STORE")]
        store: Option<String>,
    },
    /// Train a charter's embedded classifier from its labelled examples.
    Train {
        charter: String,
        /// Project folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Seed (same seed and examples give the same model, byte for byte).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Evaluate a charter's decision stage over labelled cases, or its retrieval and cited
    /// drafts (`--stage retrieval`, `--stage drafts`).
    Eval(decide_cmd::EvalArgs),
    /// Approved knowledge: refresh a source, list sources and gaps, search.
    #[command(subcommand)]
    Knowledge(knowledge_cmd::KnowledgeCommand),
    /// Measure durable ingest, a no-op HTTP baseline and the end-to-end pipeline on this machine.
    Bench(bench::BenchArgs),
    #[command(flatten)]
    Review(operator_cmd::ReviewCommand),
}

#[derive(Subcommand)]
enum RejectedCommand {
    /// List rejected payloads, newest first, with the contract violations of each.
    List {
        #[arg(long)]
        charter: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Check a rejected payload against the charter's current contract again and, when it
    /// passes, store it as an event (the rejected copy is then removed).
    Replay {
        /// Rejected payload id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// List events, newest first.
    List {
        #[arg(long)]
        charter: Option<String>,
        /// pending, processing, done, failed or waiting.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show one event with its runs (decision, context fetches, route, drafts, actions and
    /// attempts); `--json` prints its timeline document.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// An event's full timeline as JSON: runs, decision stages, route, drafts, context
    /// fetches, action attempts, approvals, escalations and audit entries.
    Timeline {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    charter_connect::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(cli))
}

/// A reader that stops reading (`charter runs | head`) closes our stdout: the next print
/// panics with "failed printing to stdout: Broken pipe". That is no failure of the command,
/// so the process ends at once, quietly, with status 0. Every other panic is reported as
/// before.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// `charter schema`: print one schema, or write both and the key reference under `docs`.
fn schema(which: Option<&str>, docs: &Path) -> ExitCode {
    use charter_core::config::schema;
    if let Some(which) = which {
        let value = if which == "charter" {
            schema::charter_schema()
        } else {
            schema::project_schema()
        };
        return match std::io::Write::write_all(
            &mut std::io::stdout(),
            schema::to_text(&value).as_bytes(),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write the schema: {e}");
                ExitCode::from(1)
            }
        };
    }
    let files = [
        (
            "schema/charter.yaml.schema.json",
            schema::to_text(&schema::project_schema()),
        ),
        (
            "schema/charter.schema.json",
            schema::to_text(&schema::charter_schema()),
        ),
        ("src/reference.md", schema::reference_markdown()),
    ];
    for (rel, text) in files {
        let path = docs.join(rel);
        if let Some(parent) = path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            eprintln!("error: cannot create {}: {e}", parent.display());
            return ExitCode::from(1);
        }
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { dir, json, strict } => check(&dir, json, strict),
        Command::Schema { which, docs } => schema(which.as_deref(), &docs),
        Command::Completions { shell } => completions(shell),
        Command::Init { dir } => init(&dir),
        Command::Serve(args) => serve::serve(args).await,
        Command::Send {
            charter,
            file,
            dir,
            delivery_id,
            mut server,
        } => {
            // The project the charter comes from also says where its server listens.
            if server.project.is_none() {
                server.project = Some(dir.clone());
            }
            client::send(&dir, &charter, &file, delivery_id, &server).await
        }
        Command::Events { command } => match command {
            EventsCommand::List {
                charter,
                status,
                limit,
                json,
                server,
            } => client::events_list(&server, charter, status, limit, json).await,
            EventsCommand::Show { id, json, server } => {
                client::events_show(&server, &id, json).await
            }
            EventsCommand::Timeline { id, server } => client::events_timeline(&server, &id).await,
        },
        Command::Rejected { command } => match command {
            RejectedCommand::List {
                charter,
                limit,
                json,
                server,
            } => client::rejected_list(&server, charter, limit, json).await,
            RejectedCommand::Replay { id, server } => client::rejected_replay(&server, &id).await,
        },
        Command::Runs {
            charter,
            outcome,
            since,
            until,
            limit,
            json,
            server,
        } => {
            let filter = client::RunsFilter {
                charter,
                outcome,
                since,
                until,
                limit,
            };
            client::runs_list(&server, filter, json).await
        }
        Command::Replay {
            id: Some(id),
            force: true,
            server,
            ..
        } => client::rerun(&server, &id).await,
        Command::Replay {
            id,
            failed,
            since,
            until,
            charter,
            server,
            ..
        } => {
            client::replay(
                &server,
                client::ReplayWhat {
                    id,
                    failed,
                    since,
                    until,
                    charter,
                },
            )
            .await
        }
        Command::Operate(command) => operator_cmd::operate(command).await,
        Command::Demo(args) => demo::demo(args).await,
        Command::Report(args) => report::report(args).await,
        Command::Migrate { dir, store } => serve::migrate(&dir, store).await,
        Command::Backup { out, dir, store } => serve::backup(&dir, store, &out).await,
        Command::Purge {
            before,
            charter,
            dir,
            store,
        } => serve::purge(&dir, store, &before, charter).await,
        Command::Train { charter, dir, seed } => decide_cmd::train(&dir, &charter, seed),
        Command::Eval(args) => decide_cmd::eval(args).await,
        Command::Knowledge(cmd) => knowledge_cmd::run(cmd).await,
        Command::Bench(args) => bench::bench(args).await,
        Command::Review(command) => operator_cmd::review(command).await,
    }
}

/// `charter completions <shell>`: the completion script on stdout.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "charter", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away: not a failure (see `quiet_on_closed_stdout`).
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the completion script: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(dir: &std::path::Path, json: bool, strict: bool) -> ExitCode {
    use charter_server::project::Severity;
    let loaded = charter_server::project::read_source(dir).and_then(|source| {
        charter_core::config::load_project(&source)
            .map(|project| (source, project))
            .map_err(charter_server::ProjectError::Invalid)
    });
    match loaded {
        Ok((source, project)) => {
            let mut findings = charter_server::project::check_outside(&source, &project);
            findings.extend(check_warnings(&source, &project));
            let failing =
                |f: &&charter_server::project::Finding| f.severity == Severity::Error || strict;
            let errors = findings.iter().filter(failing).count();
            let ok = errors == 0;
            if json {
                let names: Vec<&String> = project.charters.keys().collect();
                let items: Vec<_> = findings
                    .iter()
                    .map(|f| {
                        let d = &f.diagnostic;
                        let severity = if failing(&f) { "error" } else { "warning" };
                        serde_json::json!({"file": d.file, "line": d.line, "column": d.column, "message": d.message, "severity": severity})
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"ok": ok, "charters": names, "problems": items})
                );
            } else {
                for f in &findings {
                    let word = if failing(&f) { "error" } else { "warning" };
                    let d = &f.diagnostic;
                    println!("{}:{}:{}: {word}: {}", d.file, d.line, d.column, d.message);
                }
                if ok {
                    for (name, c) in &project.charters {
                        println!("{name}\t{}\t{}", c.mode.as_str(), c.file);
                    }
                }
            }
            if !ok {
                eprintln!("{errors} problem(s) found");
                return ExitCode::from(1);
            }
            let warnings = findings.len();
            let note = if warnings > 0 {
                format!(" ({warnings} warning(s); --strict makes them errors)")
            } else {
                String::new()
            };
            eprintln!(
                "ok: {} charter(s) valid in {}{note}",
                project.charters.len(),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(charter_server::ProjectError::Invalid(diags)) => {
            if json {
                let items: Vec<_> = diags
                    .0
                    .iter()
                    .map(|d| {
                        serde_json::json!({"file": d.file, "line": d.line, "column": d.column, "message": d.message, "severity": "error"})
                    })
                    .collect();
                println!("{}", serde_json::json!({"ok": false, "problems": items}));
            } else {
                for d in &diags.0 {
                    println!("{d}");
                }
            }
            eprintln!("{} problem(s) found", diags.0.len());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// What `charter check` warns about without failing: a webhook charter with no `dedupe:`
/// whose signature scheme gives no delivery id (header or body), so every redelivery of the
/// same delivery would be stored, and acted on, as a new event.
fn check_warnings(
    source: &charter_core::config::ProjectSource,
    project: &charter_core::config::Project,
) -> Vec<charter_server::project::Finding> {
    let mut out = Vec::new();
    for (name, c) in &project.charters {
        let Some(webhook) = &c.trigger.webhook else {
            continue;
        };
        if c.trigger.dedupe.is_some()
            || charter_core::verify::identifies_deliveries(&webhook.verify)
        {
            continue;
        }
        // The line of `trigger:` in the charter's file, as read for validation (1 when
        // it cannot be found).
        let line = source
            .files
            .get(&c.file)
            .and_then(|text| {
                text.lines()
                    .position(|l| l.trim_start().starts_with("trigger:"))
                    .map(|i| i + 1)
            })
            .unwrap_or(1);
        out.push(charter_server::project::Finding {
            severity: charter_server::project::Severity::Warning,
            diagnostic: charter_core::config::Diagnostic {
                file: c.file.clone(),
                line,
                column: 1,
                message: format!(
                    "charter `{name}` has no `dedupe:` and its webhook's signature scheme \
                     gives no delivery id, so a redelivered webhook is stored and processed again as \
                     a new event; add `dedupe:` (a header name or a template over the payload's own id)"
                ),
            },
        });
    }
    out
}

fn init(dir: &std::path::Path) -> ExitCode {
    if dir.join("charter.yaml").exists() {
        eprintln!(
            "error: {} already holds a charter.yaml; refusing to overwrite it",
            dir.display()
        );
        return ExitCode::from(1);
    }
    for (rel, contents) in charter_core::scaffold::init_project() {
        let path = dir.join(rel);
        if let Some(parent) = path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            eprintln!("error: cannot create {}: {e}", parent.display());
            return ExitCode::from(1);
        }
        if let Err(e) = std::fs::write(&path, contents) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
        eprintln!("created {}", path.display());
    }
    // The starter charter verifies its webhook with env:SUPPORT_WEBHOOK_SECRET; a fresh
    // random secret for it (Standard Webhooks takes any bytes as the key).
    let secret: String = {
        use rand::Rng as _;
        let mut rng = rand::rng();
        (0..32)
            .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
            .collect()
    };
    let d = dir.display();
    eprintln!(
        "next, in this shell (serve and send read the secret from the environment):\n\
         \n  export SUPPORT_WEBHOOK_SECRET={secret}\n  charter check {d}\n  charter serve {d} &\n  \
         charter send support-triage {d}/samples/ticket.json --dir {d}\n  charter events list --project {d}\n\
         \n(from a source checkout without `charter` on PATH: `cargo install --path crates/charter --locked`, \
         or use `cargo run --release --` in place of `charter`)"
    );
    ExitCode::SUCCESS
}
