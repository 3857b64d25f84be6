//! `charter knowledge ...` (refresh a source, list gaps, search, through the admin API) and
//! `charter eval <charter> --stage retrieval|drafts`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use charter_core::knowledge::recall_and_mrr;
use charter_server::AppState;
use charter_store::sqlite::SqliteStore;
use charter_store::{
    DecisionStore, EXTRA_DRAFT, GapFilter, GapReason, KnowledgeStore, RunFilter, RunStore, Store,
};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::ServerArgs;
use crate::decide_cmd::EvalArgs;

#[derive(Subcommand)]
pub enum KnowledgeCommand {
    /// Read a knowledge source again now and re-index what changed.
    Refresh {
        source: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The knowledge sources and their index (documents, stale documents).
    Sources {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Knowledge gaps: questions the approved knowledge did not answer well, newest first.
    Gaps {
        #[arg(long)]
        charter: Option<String>,
        /// nothing_found, stale or draft_refused.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// What a retrieve step would find for a question.
    Search {
        question: String,
        /// Comma-separated source names (default all).
        #[arg(long)]
        sources: Option<String>,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

async fn call(server: &ServerArgs, method: reqwest::Method, path: &str) -> Result<Value, ExitCode> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot create an HTTP client: {e}");
            ExitCode::from(1)
        })?;
    let url = format!("{}{path}", server.base_url());
    let mut req = client.request(method, &url);
    if let Some(t) = &server.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| {
        eprintln!("error: cannot reach {url}: {e}");
        ExitCode::from(3)
    })?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        eprintln!(
            "error: {status}: {}",
            v["error"].as_str().unwrap_or("request failed")
        );
        return Err(ExitCode::from(1));
    }
    Ok(v)
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Run a `charter knowledge` subcommand.
pub async fn run(cmd: KnowledgeCommand) -> ExitCode {
    match cmd {
        KnowledgeCommand::Refresh { source, server } => refresh(&server, &source).await,
        KnowledgeCommand::Sources { server } => sources(&server).await,
        KnowledgeCommand::Gaps {
            charter,
            reason,
            limit,
            json,
            server,
        } => gaps(&server, charter, reason, limit, json).await,
        KnowledgeCommand::Search {
            question,
            sources,
            top_k,
            json,
            server,
        } => search(&server, &question, sources, top_k, json).await,
    }
}

async fn refresh(server: &ServerArgs, source: &str) -> ExitCode {
    let path = format!("/api/v1/knowledge/sources/{}/refresh", encode(source));
    match call(server, reqwest::Method::POST, &path).await {
        Ok(v) => {
            println!(
                "{}: {} documents ({} re-indexed, {} unchanged, {} removed), {} passages",
                source, v["documents"], v["indexed"], v["unchanged"], v["removed"], v["passages"]
            );
            ExitCode::SUCCESS
        }
        Err(c) => c,
    }
}

async fn sources(server: &ServerArgs) -> ExitCode {
    match call(server, reqwest::Method::GET, "/api/v1/knowledge/sources").await {
        Ok(v) => {
            println!(
                "{:<20}  {:>9}  {:>5}  OWNER",
                "SOURCE", "DOCUMENTS", "STALE"
            );
            for s in v["sources"].as_array().into_iter().flatten() {
                println!(
                    "{:<20}  {:>9}  {:>5}  {}",
                    s["name"].as_str().unwrap_or("?"),
                    s["documents"],
                    s["stale"].as_array().map_or(0, Vec::len),
                    s["owner"].as_str().unwrap_or("")
                );
            }
            ExitCode::SUCCESS
        }
        Err(c) => c,
    }
}

async fn gaps(
    server: &ServerArgs,
    charter: Option<String>,
    reason: Option<String>,
    limit: usize,
    json: bool,
) -> ExitCode {
    let mut q = vec![format!("limit={limit}")];
    if let Some(c) = charter {
        q.push(format!("charter={}", encode(&c)));
    }
    if let Some(r) = reason {
        q.push(format!("reason={}", encode(&r)));
    }
    let path = format!("/api/v1/knowledge/gaps?{}", q.join("&"));
    match call(server, reqwest::Method::GET, &path).await {
        Ok(v) if json => {
            println!("{}", pretty(&v["gaps"]));
            ExitCode::SUCCESS
        }
        Ok(v) => {
            let gaps = v["gaps"].as_array().cloned().unwrap_or_default();
            println!(
                "{:<20}  {:<14}  {:<16}  QUESTION",
                "AT", "REASON", "CHARTER"
            );
            for g in &gaps {
                let at = charter_core::calendar::rfc3339_of_unix(
                    g["created_at"].as_i64().unwrap_or(0).div_euclid(1000),
                );
                let q: String = g["question"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(80)
                    .collect();
                println!(
                    "{at:<20}  {:<14}  {:<16}  {q}",
                    g["reason"].as_str().unwrap_or(""),
                    g["charter"].as_str().unwrap_or("")
                );
            }
            eprintln!("{} gap(s)", gaps.len());
            ExitCode::SUCCESS
        }
        Err(c) => c,
    }
}

async fn search(
    server: &ServerArgs,
    question: &str,
    sources: Option<String>,
    top_k: usize,
    json: bool,
) -> ExitCode {
    let mut path = format!(
        "/api/v1/knowledge/search?q={}&top_k={top_k}",
        encode(question)
    );
    if let Some(s) = sources {
        path.push_str(&format!("&sources={}", encode(&s)));
    }
    match call(server, reqwest::Method::GET, &path).await {
        Ok(v) if json => {
            println!("{}", pretty(&v));
            ExitCode::SUCCESS
        }
        Ok(v) => {
            for p in v["passages"].as_array().into_iter().flatten() {
                println!(
                    "[{}] {:.2}  {} > {}  ({})",
                    p["n"],
                    p["score"].as_f64().unwrap_or(0.0),
                    p["title"].as_str().unwrap_or(""),
                    p["section"].as_str().unwrap_or(""),
                    p["url"].as_str().or(p["doc_key"].as_str()).unwrap_or("")
                );
                let t: String = p["text"].as_str().unwrap_or("").chars().take(200).collect();
                println!("    {t}");
            }
            ExitCode::SUCCESS
        }
        Err(c) => c,
    }
}

/// One evaluation question: the document that answers it (its key in its source).
#[derive(Debug, serde::Deserialize)]
struct Case {
    question: String,
    document: String,
}

fn read_cases(path: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let c: Case = serde_json::from_str(line).map_err(|e| {
            format!(
                "{}:{}: expected {{\"question\": ..., \"document\": ...}}: {e}",
                path.display(),
                i + 1
            )
        })?;
        out.push(c);
    }
    if out.is_empty() {
        return Err(format!("{}: no cases", path.display()));
    }
    Ok(out)
}

/// Percentile of sorted microsecond latencies.
fn pct(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `charter eval <charter> --stage retrieval`: index the charter's first `retrieve` step's
/// sources into a fresh SQLite store (or use `--store`), ask every question, and report
/// recall@k and MRR at document level, with the index build time and query latencies.
pub async fn eval_retrieval(args: &EvalArgs) -> ExitCode {
    let runtime = match charter_server::Runtime::load(&args.dir) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(cr) = runtime.charters.get(&args.charter) else {
        eprintln!(
            "error: no charter `{}` in {}",
            args.charter,
            args.dir.display()
        );
        return ExitCode::from(2);
    };
    let Some(step) = cr.charter.retrieve.first().cloned() else {
        eprintln!(
            "error: charter `{}` has no `retrieve` context step to evaluate",
            args.charter
        );
        return ExitCode::from(2);
    };
    let Some(cases_file) = &args.cases else {
        eprintln!(
            "error: --cases is required: a JSONL file of {{\"question\": ..., \"document\": ...}}"
        );
        return ExitCode::from(2);
    };
    let cases = match read_cases(cases_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(url) = &args.postgres {
        let store = match charter_store::postgres::PgStore::connect(url, 4).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: --postgres: {e}");
                return ExitCode::from(1);
            }
        };
        let code = eval_with(args, &runtime, store.clone(), &step, &cases, true).await;
        store.close().await;
        return code;
    }
    let tmp = std::env::temp_dir().join(format!("charter-eval-{}", uuid::Uuid::now_v7()));
    let store_path: PathBuf = match &args.store {
        Some(p) => PathBuf::from(p),
        None => tmp.join("index.db"),
    };
    if args.store.is_none()
        && let Err(e) = std::fs::create_dir_all(&tmp)
    {
        eprintln!("error: {}: {e}", tmp.display());
        return ExitCode::from(1);
    }
    let store = match SqliteStore::open(&store_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: {e}", store_path.display());
            return ExitCode::from(1);
        }
    };
    let fresh = args.store.is_none();
    let code = eval_with(args, &runtime, store.clone(), &step, &cases, fresh).await;
    store.close().await;
    if args.store.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    code
}

/// Evaluate over `store`, indexing the sources into it first when `index` is set.
async fn eval_with<S: Store>(
    args: &EvalArgs,
    runtime: &Arc<charter_server::Runtime>,
    store: S,
    step: &charter_core::config::RetrieveStep,
    cases: &[Case],
    index: bool,
) -> ExitCode {
    let executor = match charter_connect::HttpExecutor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let state = AppState::new(runtime.clone(), store.clone(), Arc::new(executor.clone()));
    let (documents, passages, build_ms) = if index {
        match build_index(runtime, &state, &executor, &step.sources).await {
            Ok(x) => x,
            Err(code) => return code,
        }
    } else {
        (0, 0, 0)
    };
    if let Some(out) = &args.export_passages
        && let Err(e) = export_passages(&store, &step.sources, out).await
    {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let k = args.k;
    let mut ranks = Vec::with_capacity(cases.len());
    let mut answered = 0usize;
    let mut latencies = Vec::with_capacity(cases.len());
    for c in cases {
        let started = Instant::now();
        let found = charter_server::knowledge::retrieve::search(
            &store,
            &step.sources,
            &c.question,
            50,
            0.0,
        )
        .await;
        latencies.push(started.elapsed().as_micros());
        let found = match found {
            Ok(f) => f.0,
            Err(e) => {
                eprintln!("error: search failed: {e}");
                return ExitCode::from(1);
            }
        };
        if found.iter().any(|(_, s)| *s >= step.min_score) {
            answered += 1;
        }
        let mut docs: Vec<&str> = Vec::new();
        for (h, _) in &found {
            if !docs.contains(&h.doc_key.as_str()) {
                docs.push(&h.doc_key);
            }
        }
        ranks.push(docs.iter().position(|d| *d == c.document).map(|i| i + 1));
    }
    latencies.sort_unstable();
    let (recall, mrr) = recall_and_mrr(&ranks, k);
    let (recall1, _) = recall_and_mrr(&ranks, 1);
    let report = json!({
        "charter": args.charter,
        "stage": "retrieval",
        "context": step.name,
        "sources": step.sources,
        "cases": cases.len(),
        "k": k,
        "recall_at_k": recall,
        "recall_at_1": recall1,
        "mrr": mrr,
        "answered_share": answered as f64 / cases.len() as f64,
        "min_score": step.min_score,
        "documents": documents,
        "passages": passages,
        "index_build_ms": build_ms,
        "query_p50_us": pct(&latencies, 0.5),
        "query_p99_us": pct(&latencies, 0.99),
        "ranks": ranks,
    });
    if args.json {
        println!("{}", pretty(&report));
    } else {
        println!(
            "retrieval of `{}` ({}) over {} cases",
            step.name,
            step.sources.join(", "),
            cases.len()
        );
        println!("  recall@{k:<3}            {:.3}", recall);
        println!("  recall@1              {:.3}", recall1);
        println!("  MRR                   {:.3}", mrr);
        println!(
            "  answered (min_score {}) {:.3}",
            step.min_score,
            answered as f64 / cases.len() as f64
        );
        if index {
            println!("  index: {documents} documents, {passages} passages in {build_ms} ms");
        }
        println!(
            "  query latency: p50 {} us, p99 {} us",
            pct(&latencies, 0.5),
            pct(&latencies, 0.99)
        );
    }
    ExitCode::SUCCESS
}

/// Index `sources` into the evaluation store: (documents, passages, milliseconds).
async fn build_index<S: Store>(
    runtime: &Arc<charter_server::Runtime>,
    state: &AppState<S>,
    executor: &charter_connect::HttpExecutor,
    sources: &[String],
) -> Result<(usize, usize, u128), ExitCode> {
    let (mut documents, mut passages) = (0, 0);
    let started = Instant::now();
    for name in sources {
        let Some(source) = runtime.project.knowledge.get(name) else {
            continue;
        };
        match charter_server::knowledge::refresh_source(state, executor, source).await {
            Ok(r) => {
                passages += r.passages;
                documents += r.documents;
            }
            Err(e) => {
                eprintln!("error: knowledge source `{name}`: {e}");
                return Err(ExitCode::from(1));
            }
        }
    }
    Ok((documents, passages, started.elapsed().as_millis()))
}

/// Write every indexed passage of `sources` as JSONL `{doc_key, heading, text}` (for a
/// baseline ranker to rank the same passages).
async fn export_passages<S: Store>(
    store: &S,
    sources: &[String],
    out: &Path,
) -> Result<(), String> {
    let mut lines = String::new();
    for s in sources {
        let docs = store
            .list_documents(Some(s.clone()))
            .await
            .map_err(|e| e.to_string())?;
        for d in docs {
            for p in store
                .document_passages(s.clone(), d.doc_key.clone())
                .await
                .map_err(|e| e.to_string())?
            {
                lines.push_str(
                    &json!({"source": s, "doc_key": d.doc_key, "heading": p.heading, "text": p.text})
                        .to_string(),
                );
                lines.push('\n');
            }
        }
    }
    std::fs::write(out, lines).map_err(|e| format!("{}: {e}", out.display()))
}

/// `charter eval <charter> --stage drafts`: over the charter's runs in the store, the share
/// of cited drafts accepted at once, with invalid citations (refused at first, repaired or
/// refused again) and refused.
pub async fn eval_drafts(args: &EvalArgs) -> ExitCode {
    let project = match charter_server::project::load(&args.dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let path = match &args.store {
        Some(s) => PathBuf::from(s),
        None => args.dir.join(&project.settings.store),
    };
    let store = match SqliteStore::open(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    let runs = match store
        .list_runs(RunFilter {
            charter: Some(args.charter.clone()),
            limit: 10_000,
            ..RunFilter::default()
        })
        .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let (mut cited, mut repaired) = (0usize, 0usize);
    for r in &runs {
        let Ok(extras) = store.run_extras(r.id).await else {
            continue;
        };
        for x in extras.iter().filter(|x| x.kind == EXTRA_DRAFT) {
            let c = &x.body["citations"];
            if c.is_null() || x.body.get("reused_from_run").is_some() {
                continue;
            }
            cited += 1;
            if !c["repaired_after"].is_null() {
                repaired += 1;
            }
        }
    }
    let refused = store
        .list_gaps(GapFilter {
            charter: Some(args.charter.clone()),
            reason: Some(GapReason::DraftRefused),
            since: None,
            limit: 100_000,
        })
        .await
        .map(|g| g.len())
        .unwrap_or(0);
    store.close().await;
    let total = cited + refused;
    let share = |n: usize| {
        if total == 0 {
            0.0
        } else {
            n as f64 / total as f64
        }
    };
    let report = json!({
        "charter": args.charter,
        "stage": "drafts",
        "drafts": total,
        "cited_share": share(cited - repaired),
        "invalid_citation_share": share(repaired + refused),
        "repaired_share": share(repaired),
        "refused_share": share(refused),
    });
    if args.json {
        println!("{}", pretty(&report));
    } else {
        println!("cited drafts of `{}`: {total}", args.charter);
        println!("  cited correctly at once   {:.3}", share(cited - repaired));
        println!(
            "  invalid citations         {:.3}",
            share(repaired + refused)
        );
        println!("    repaired                {:.3}", share(repaired));
        println!("    refused (escalated)     {:.3}", share(refused));
    }
    ExitCode::SUCCESS
}
