//! `charter train` and `charter eval`: the embedded classifier from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use charter_decide::{EvalReport, ExampleFormat, parse_examples};
use charter_server::models;
use serde_json::{Value, json};

fn load(
    dir: &Path,
) -> Result<
    (
        charter_core::config::ProjectSource,
        charter_core::config::Project,
    ),
    String,
> {
    let source = charter_server::project::read_source(dir).map_err(|e| e.to_string())?;
    let project = charter_core::config::load_project(&source).map_err(|e| e.to_string())?;
    Ok((source, project))
}

/// `charter train <charter>`: train the charter's embedded model from its examples.
pub fn train(dir: &Path, charter: &str, seed: Option<u64>) -> ExitCode {
    let run = || -> Result<(), String> {
        let (source, project) = load(dir)?;
        let c = project
            .charters
            .get(charter)
            .ok_or_else(|| format!("no charter named `{charter}`"))?;
        let stage = models::embedded_stage(c).ok_or_else(|| {
            format!("charter `{charter}` has no embedded stage in `decide.stages`")
        })?;
        eprintln!("training `{charter}` from {} ...", stage.examples);
        let seed = seed.unwrap_or_else(|| charter_decide::TrainOptions::default().seed);
        let t = models::train(dir, &source, c, stage, seed).map_err(|e| e.to_string())?;
        println!(
            "{}",
            json!({
                "charter": charter,
                "examples": t.examples,
                "labels": t.model.labels().len(),
                "features": t.model.feature_count(),
                "seconds": t.took.as_secs_f64(),
                "model": t.path.display().to_string(),
                "examples_digest": t.model.examples_digest(),
            })
        );
        eprintln!(
            "trained on {} examples, {} labels in {:.2} s -> {}",
            t.examples,
            t.model.labels().len(),
            t.took.as_secs_f64(),
            t.path.display()
        );
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Options of `charter eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// The charter whose decision stages are evaluated.
    pub charter: String,
    /// Labelled cases (CSV `text,label` or JSONL); for `--stage retrieval`, JSONL
    /// `{"question": ..., "document": <the answering document's key>}`. Not used by
    /// `--stage drafts`.
    #[arg(long)]
    pub cases: Option<PathBuf>,
    /// Project folder.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// What to evaluate: `embedded` (the embedded classifier), `llm` (the charter's first
    /// llm stage through its configured providers) or `cascade` (every stage in order, as
    /// the worker decides, fields included).
    /// `retrieval` (the charter's first `retrieve` step: recall@k and MRR of the answering
    /// documents) and `drafts` (cited drafts in the store: share cited, with invalid
    /// citations, refused) evaluate approved knowledge.
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "llm", "cascade", "retrieval", "drafts"])]
    pub stage: String,
    /// retrieval: the k of recall@k.
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// retrieval: search this existing SQLite store instead of indexing the sources into a
    /// fresh one; drafts: the store to read (default the project's).
    #[arg(long)]
    pub store: Option<String>,
    /// retrieval: index the sources into this PostgreSQL database (a postgres:// URL)
    /// and search there, instead of a fresh SQLite store.
    #[arg(long, conflicts_with = "store")]
    pub postgres: Option<String>,
    /// retrieval: write the indexed passages here as JSONL (for a baseline ranker).
    #[arg(long)]
    pub export_passages: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// A previous `--json` report of the same stage on the same cases (checked by the
    /// cases' digest; a baseline from other cases is refused): exit 1 when accuracy or
    /// out-of-scope recall dropped, or the abstention rate rose, by more than --tolerance.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Allowed change against --baseline (absolute, e.g. 0.01 = one point).
    #[arg(long, default_value_t = 0.01)]
    pub tolerance: f64,
    /// Suggest the highest `accept_above` that still decides at least this share of the
    /// cases (0 to 1; `embedded` and `llm` stages).
    #[arg(long, conflicts_with_all = ["target_escalation", "target_oos_recall"])]
    pub target_coverage: Option<f64>,
    /// Suggest the lowest `accept_above` that escalates at least this share of the cases.
    #[arg(long, conflicts_with = "target_oos_recall")]
    pub target_escalation: Option<f64>,
    /// Suggest the lowest `accept_above` that escalates at least this share of the
    /// out-of-scope cases (cases labelled with a label the stage cannot give).
    #[arg(long)]
    pub target_oos_recall: Option<f64>,
}

/// Which target `--target-*` asked for.
#[derive(Clone, Copy)]
enum Target {
    Coverage(f64),
    Escalation(f64),
    OosRecall(f64),
}

/// The `accept_above` meeting `target` over `(confidence, in scope, right)` cases, or None
/// when no threshold does. Candidate thresholds are the cases' confidences (and 0).
fn pick_threshold(cases: &[(f64, bool, bool)], target: Target) -> Option<f64> {
    let mut cands: Vec<f64> = cases.iter().map(|c| c.0).collect();
    cands.push(0.0);
    cands.sort_by(f64::total_cmp);
    cands.dedup();
    let n = cases.len();
    let n_oos = cases.iter().filter(|c| !c.1).count();
    let kept = |t: f64| cases.iter().filter(|c| c.0 >= t).count();
    match target {
        // Highest threshold keeping at least the share.
        Target::Coverage(c) => cands
            .iter()
            .rev()
            .copied()
            .find(|&t| ratio(kept(t), n) >= c),
        // Lowest threshold escalating at least the share.
        Target::Escalation(e) => cands.iter().copied().find(|&t| ratio(n - kept(t), n) >= e),
        Target::OosRecall(r) => {
            if n_oos == 0 {
                return None;
            }
            cands.iter().copied().find(|&t| {
                let oos_kept = cases.iter().filter(|c| !c.1 && c.0 >= t).count();
                ratio(n_oos - oos_kept, n_oos) >= r
            })
        }
    }
}

pub async fn eval(args: EvalArgs) -> ExitCode {
    match args.stage.as_str() {
        "retrieval" => return crate::knowledge_cmd::eval_retrieval(&args).await,
        "drafts" => return crate::knowledge_cmd::eval_drafts(&args).await,
        _ => {}
    }
    match run_eval(&args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// What one stage said about one case.
struct Outcome {
    label: String,
    confidence: f64,
    /// The stage (or cascade) decided; otherwise it abstained or escalated.
    kept: bool,
    /// The answer of every stage consulted: (stage name, label, accepted).
    stages: Vec<(&'static str, Option<String>, bool)>,
}

/// Figures of one stage over the cases that reached it.
#[derive(Default, Clone)]
struct StageFigures {
    consulted: usize,
    decided: usize,
    correct: usize,
}

fn stage_key(s: charter_core::model::DecisionStage) -> &'static str {
    use charter_core::model::DecisionStage as D;
    match s {
        D::Rule => "rule",
        D::Embedded => "embedded",
        D::Llm => "llm",
        D::Human => "human",
        D::Default => "default",
        D::None => "none",
    }
}

/// The `q`-quantile (0..=1) of sorted values (nearest rank), 0 when empty.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn read_cases(path: &Path) -> Result<Vec<charter_decide::Example>, String> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let format = ExampleFormat::from_path(&shown)
        .ok_or_else(|| format!("{shown}: unknown format: use .csv (text,label) or .jsonl"))?;
    parse_examples(&text, format).map_err(|e| format!("{shown}: {e}"))
}

/// The evaluation context of a case: the text is the payload's `text`.
fn case_context(charter: &str, text: &str) -> Value {
    json!({
        "payload": {"text": text},
        "event": {"id": "eval", "charter": charter, "source": "eval", "type": null,
                  "received_at": 0, "headers": {}},
        "headers": {},
        "decision": null,
        "context": {},
    })
}

/// What running a stage over the cases gave: one outcome and one latency per case.
struct Ran {
    outcomes: Vec<Outcome>,
    /// Time per decision, in microseconds, measured around each decision only (loading or
    /// training the model and reading the cases are not included).
    latencies: Vec<f64>,
    usage: charter_decide::llm::Usage,
    /// The labels the stage can give.
    known: Vec<String>,
    accept_above: Option<f64>,
    setup_seconds: f64,
}

async fn run_eval(args: &EvalArgs) -> Result<ExitCode, String> {
    let (source, project) = load(&args.dir)?;
    let c = project
        .charters
        .get(&args.charter)
        .ok_or_else(|| format!("no charter named `{}`", args.charter))?
        .clone();
    let cases_file = args
        .cases
        .as_ref()
        .ok_or_else(|| "--cases is required for this stage".to_string())?;
    let cases = read_cases(cases_file)?;
    let started = Instant::now();
    let ran = match args.stage.as_str() {
        "embedded" => run_embedded(args, &source, &c, &cases, started)?,
        stage_name => run_configured(args, stage_name, &c, &cases, started).await?,
    };
    let (report, out) = eval_summary(args, &cases, &ran)?;
    if args.json {
        println!("{out}");
    } else {
        print_report(&report, &out);
    }
    if let Some(b) = &args.baseline {
        let shown = b.display();
        let base: Value = serde_json::from_str(
            &std::fs::read_to_string(b).map_err(|e| format!("cannot read {shown}: {e}"))?,
        )
        .map_err(|e| format!("{shown}: not a JSON report: {e}"))?;
        return Ok(check_baseline(
            &base,
            &out,
            &shown.to_string(),
            args.tolerance,
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// The embedded stage over the cases (the model loaded, or trained when missing).
fn run_embedded(
    args: &EvalArgs,
    source: &charter_core::config::ProjectSource,
    c: &charter_core::config::Charter,
    cases: &[charter_decide::Example],
    started: Instant,
) -> Result<Ran, String> {
    let progress = crate::progress::Progress::new(cases.len());
    let stage = models::embedded_stage(c)
        .ok_or_else(|| format!("charter `{}` has no embedded stage", args.charter))?;
    let model = models::load_or_train(&args.dir, source, c, stage).map_err(|e| e.to_string())?;
    eprintln!(
        "evaluating {} case(s) with the embedded stage ...",
        cases.len()
    );
    let setup_seconds = started.elapsed().as_secs_f64();
    let mut outcomes = Vec::with_capacity(cases.len());
    let mut latencies: Vec<f64> = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        let t0 = Instant::now();
        let p = model.predict(&case.text);
        latencies.push(t0.elapsed().as_secs_f64() * 1e6);
        let kept = p.confidence >= stage.accept_above;
        outcomes.push(Outcome {
            kept,
            stages: vec![("embedded", Some(p.label.clone()), kept)],
            label: p.label,
            confidence: p.confidence,
        });
        progress.tick(i + 1);
    }
    Ok(Ran {
        outcomes,
        latencies,
        usage: charter_decide::llm::Usage::default(),
        known: model.labels().to_vec(),
        accept_above: Some(stage.accept_above),
        setup_seconds,
    })
}

/// The charter's first llm stage (`stage_name` "llm") or its whole cascade over the cases,
/// through the configured providers.
async fn run_configured(
    args: &EvalArgs,
    stage_name: &str,
    c: &charter_core::config::Charter,
    cases: &[charter_decide::Example],
    started: Instant,
) -> Result<Ran, String> {
    let progress = crate::progress::Progress::new(cases.len());
    let decide = c
        .decide
        .clone()
        .ok_or_else(|| format!("charter `{}` has no `decide` section", args.charter))?;
    let runtime =
        std::sync::Arc::new(charter_server::Runtime::load(&args.dir).map_err(|e| e.to_string())?);
    let llm = charter_server::llm::llm_engine(&runtime, charter_server::llm::memory_backing);
    let model = runtime
        .charters
        .get(&args.charter)
        .and_then(|cr| cr.model.clone());
    let llm_stage = decide.stages.iter().find_map(|s| match s {
        charter_core::config::Stage::Llm(l) => Some(l.clone()),
        _ => None,
    });
    if stage_name == "llm" && llm_stage.is_none() {
        return Err(format!("charter `{}` has no llm stage", args.charter));
    }
    eprintln!(
        "evaluating {} case(s) with the {stage_name} stage (configured providers) ...",
        cases.len()
    );
    let setup_seconds = started.elapsed().as_secs_f64();
    let mut usage = charter_decide::llm::Usage::default();
    let mut outcomes = Vec::with_capacity(cases.len());
    let mut latencies: Vec<f64> = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        let ctx = case_context(&args.charter, &case.text);
        let t0 = Instant::now();
        let o = match (stage_name, &llm_stage) {
            ("llm", Some(stage)) => {
                let (result, _) = charter_server::pipeline::decide::ask_llm_stage(
                    &llm,
                    &args.charter,
                    &decide,
                    stage,
                    &ctx,
                    &case.text,
                )
                .await;
                llm_outcome(result, stage.accept_above, &mut usage, i + 1, &progress)
            }
            _ => {
                let (d, u) = charter_server::pipeline::decide::run_cascade(
                    &llm,
                    &args.charter,
                    &decide,
                    &ctx,
                    &case.text,
                    model.as_deref(),
                )
                .await;
                add(&mut usage, &u);
                cascade_outcome(d)
            }
        };
        latencies.push(t0.elapsed().as_secs_f64() * 1e6);
        outcomes.push(o);
        progress.tick(i + 1);
    }
    Ok(Ran {
        outcomes,
        latencies,
        usage,
        known: decide.labels.clone(),
        accept_above: llm_stage
            .filter(|_| stage_name == "llm")
            .map(|s| s.accept_above),
        setup_seconds,
    })
}

/// The outcome of one llm-stage answer (or failure, reported on stderr as case `case_no`).
fn llm_outcome(
    result: Result<charter_decide::llm::LlmAnswer, charter_decide::llm::LlmFailure>,
    accept_above: f64,
    usage: &mut charter_decide::llm::Usage,
    case_no: usize,
    progress: &crate::progress::Progress,
) -> Outcome {
    match result {
        Ok(a) => {
            add(usage, &a.usage);
            let kept = a.confidence >= accept_above;
            Outcome {
                kept,
                stages: vec![("llm", Some(a.label.clone()), kept)],
                label: a.label,
                confidence: a.confidence,
            }
        }
        Err(f) => {
            add(usage, &f.usage);
            if progress.shown() {
                eprintln!();
            }
            eprintln!("case {case_no}: no answer: {}", f.reason);
            Outcome {
                label: "(no answer)".into(),
                confidence: 0.0,
                kept: false,
                stages: vec![("llm", None, false)],
            }
        }
    }
}

/// The outcome of one cascade decision, with every stage's answer.
fn cascade_outcome(d: charter_core::model::Decision) -> Outcome {
    use charter_core::model::DecisionStage as D;
    let decided = matches!(d.stage, D::Rule | D::Embedded | D::Llm);
    let mut stages: Vec<(&'static str, Option<String>, bool)> = d
        .stages
        .iter()
        .map(|a| (stage_key(a.stage), a.label.clone(), a.accepted))
        .collect();
    if matches!(d.stage, D::Default | D::None) {
        // The cascade's own outcome when no stage was sure.
        stages.push((stage_key(d.stage), d.label.clone(), true));
    }
    Outcome {
        kept: decided && d.label.is_some(),
        label: d.label.unwrap_or_else(|| "(escalated)".into()),
        confidence: d.confidence,
        stages,
    }
}

/// Per stage, in the order first consulted: how many cases reached it, how many it
/// decided, how many of those rightly, how many it passed on.
fn per_stage(cases: &[charter_decide::Example], outcomes: &[Outcome]) -> Vec<Value> {
    let mut order: Vec<&'static str> = Vec::new();
    let mut figures: std::collections::HashMap<&'static str, StageFigures> = Default::default();
    for (c, o) in cases.iter().zip(outcomes) {
        // A stage may leave several answers for one case (a rule that could not be
        // evaluated, then "no rule matched"): count it once, as deciding if any was accepted.
        let mut seen: Vec<&'static str> = Vec::new();
        for (name, _, _) in &o.stages {
            if seen.contains(name) {
                continue;
            }
            seen.push(name);
            if !order.contains(name) {
                order.push(name);
            }
            let accepted = o
                .stages
                .iter()
                .find(|(n, _, a)| n == name && *a)
                .map(|(_, l, _)| l.as_deref());
            let f = figures.entry(name).or_default();
            f.consulted += 1;
            if let Some(label) = accepted {
                f.decided += 1;
                if label == Some(c.label.as_str()) {
                    f.correct += 1;
                }
            }
        }
    }
    order
        .iter()
        .map(|name| {
            let f = figures.get(name).cloned().unwrap_or_default();
            json!({
                "stage": name,
                "consulted": f.consulted,
                "decided": f.decided,
                "correct": f.correct,
                "accuracy": if f.decided == 0 { Value::Null } else { json!(ratio(f.correct, f.decided)) },
                "abstained": f.consulted - f.decided,
            })
        })
        .collect()
}

/// `a / b`, 0 when `b` is 0.
fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The `suggested` threshold for the `--target-*` asked for (null when none was), over
/// `(confidence, in scope, right)` cases; a share outside 0..=1, or a target on the whole
/// cascade, is an error.
fn suggestion(args: &EvalArgs, scored: &[(f64, bool, bool)]) -> Result<Value, String> {
    let n = scored.len();
    let n_in = scored.iter().filter(|c| c.1).count();
    let n_oos = n - n_in;
    let target = match (
        args.target_coverage,
        args.target_escalation,
        args.target_oos_recall,
    ) {
        (Some(c), _, _) => Some(("coverage", Target::Coverage(c), c)),
        (_, Some(e), _) => Some(("escalation", Target::Escalation(e), e)),
        (_, _, Some(r)) => Some(("oos_recall", Target::OosRecall(r), r)),
        _ => None,
    };
    Ok(match target {
        None => Value::Null,
        Some((_, _, v)) if !(0.0..=1.0).contains(&v) => {
            return Err(format!("the --target-* share is {v}; expected 0 to 1"));
        }
        Some(_) if args.stage == "cascade" => {
            return Err(
                "--target-* picks one stage's accept_above: use --stage embedded or --stage llm"
                    .into(),
            );
        }
        Some((name, t, v)) => match pick_threshold(scored, t) {
            None => json!({"target": name, "value": v, "accept_above": null}),
            Some(th) => {
                let kept: Vec<&(f64, bool, bool)> = scored.iter().filter(|c| c.0 >= th).collect();
                let kept_in = kept.iter().filter(|c| c.1).count();
                let kept_right = kept.iter().filter(|c| c.2).count();
                let kept_oos = kept.len() - kept_in;
                json!({
                    "target": name,
                    "value": v,
                    "accept_above": th,
                    "coverage": ratio(kept.len(), n),
                    "escalation_rate": 1.0 - ratio(kept.len(), n),
                    "accuracy_on_kept": ratio(kept_right, kept.len()),
                    "in_scope_kept_correct": if n_in == 0 { Value::Null } else { json!(ratio(kept_right, n_in)) },
                    "out_of_scope_recall": if n_oos == 0 { Value::Null } else { json!(1.0 - ratio(kept_oos, n_oos)) },
                })
            }
        },
    })
}

/// The evaluation report of a run: the metrics of the predictions, what was kept, per
/// stage, in and out of scope, the suggested threshold, usage and latency.
fn eval_summary(
    args: &EvalArgs,
    cases: &[charter_decide::Example],
    ran: &Ran,
) -> Result<(EvalReport, Value), String> {
    let (outcomes, known, usage) = (&ran.outcomes, &ran.known, &ran.usage);
    let predictions: Vec<(String, f64)> = outcomes
        .iter()
        .map(|o| (o.label.clone(), o.confidence))
        .collect();
    let report = charter_decide::evaluate_predictions(known, cases, &predictions);
    let n_kept = outcomes.iter().filter(|o| o.kept).count();
    let right_kept = cases
        .iter()
        .zip(outcomes)
        .filter(|(c, o)| o.kept && o.label == c.label)
        .count();
    let n = cases.len();
    let per_stage = per_stage(cases, outcomes);
    // Out of scope: cases whose label is not one the stage can give. Recall = share of
    // them not decided (escalated or abstained).
    let in_scope: Vec<bool> = cases.iter().map(|c| known.contains(&c.label)).collect();
    let n_in = in_scope.iter().filter(|b| **b).count();
    let n_oos = n - n_in;
    let in_kept_correct = cases
        .iter()
        .zip(outcomes)
        .zip(&in_scope)
        .filter(|((c, o), ins)| **ins && o.kept && o.label == c.label)
        .count();
    let in_kept = outcomes
        .iter()
        .zip(&in_scope)
        .filter(|(o, ins)| **ins && o.kept)
        .count();
    let oos_escalated = outcomes
        .iter()
        .zip(&in_scope)
        .filter(|(o, ins)| !**ins && !o.kept)
        .count();
    let scored: Vec<(f64, bool, bool)> = cases
        .iter()
        .zip(outcomes)
        .zip(&in_scope)
        .map(|((c, o), ins)| (o.confidence, *ins, *ins && o.label == c.label))
        .collect();
    let suggestion = suggestion(args, &scored)?;
    let mut sorted = ran.latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let mean_latency = if sorted.is_empty() {
        0.0
    } else {
        sorted.iter().sum::<f64>() / sorted.len() as f64
    };
    let out = json!({
        "charter": args.charter,
        "stage": args.stage,
        "cases": report.cases,
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "expected_calibration_error": report.expected_calibration_error,
        "accept_above": ran.accept_above,
        "abstention_rate": if n == 0 { 0.0 } else { 1.0 - ratio(n_kept, n) },
        "accuracy_on_kept": ratio(right_kept, n_kept),
        "report": report,
        "llm_calls": usage.calls,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "tokens": usage.tokens(),
        "cost": usage.cost,
        "llm_latency_ms": usage.latency_ms,
        "cases_digest": charter_decide::examples_digest(cases),
        "suggested": suggestion,
        "per_stage": per_stage,
        "in_scope_cases": n_in,
        "out_of_scope_cases": n_oos,
        "in_scope_kept_correct": if n_in == 0 { Value::Null } else { json!(ratio(in_kept_correct, n_in)) },
        "in_scope_coverage": if n_in == 0 { Value::Null } else { json!(ratio(in_kept, n_in)) },
        "out_of_scope_recall": if n_oos == 0 { Value::Null } else { json!(ratio(oos_escalated, n_oos)) },
        "setup_seconds": ran.setup_seconds,
        "mean_latency_us": mean_latency,
        "p50_latency_us": quantile(&sorted, 0.5),
        "p99_latency_us": quantile(&sorted, 0.99),
    });
    Ok((report, out))
}

/// Compare a report with a baseline report: refuse a baseline from other cases or another
/// stage, then gate accuracy, abstention rate and out-of-scope recall.
fn check_baseline(base: &Value, out: &Value, shown: &str, tolerance: f64) -> ExitCode {
    let digest = out["cases_digest"].as_str().unwrap_or_default();
    match base["cases_digest"].as_str() {
        Some(d) if d == digest => {}
        Some(d) => {
            eprintln!(
                "error: {shown}: the baseline was measured on other cases (cases_digest {d}, these cases {digest}); record a new baseline on these cases"
            );
            return ExitCode::from(1);
        }
        None => {
            eprintln!(
                "error: {shown}: the baseline has no `cases_digest`, so it cannot be shown to come from these cases; record a new baseline with `charter eval --json`"
            );
            return ExitCode::from(1);
        }
    }
    if base["stage"] != out["stage"] {
        eprintln!(
            "error: {shown}: the baseline evaluated stage {}, this run {}",
            base["stage"], out["stage"]
        );
        return ExitCode::from(1);
    }
    let mut failed = false;
    // (field, higher is better)
    for (field, higher_better) in [
        ("accuracy", true),
        ("abstention_rate", false),
        ("out_of_scope_recall", true),
    ] {
        let (Some(now), Some(then)) = (out[field].as_f64(), base[field].as_f64()) else {
            continue;
        };
        let worse = if higher_better {
            now + tolerance < then
        } else {
            now > then + tolerance
        };
        if worse {
            eprintln!(
                "regression: {field} {now:.4} vs the baseline {then:.4}: worse by more than {tolerance}"
            );
            failed = true;
        } else {
            eprintln!("{field} {now:.4} vs baseline {then:.4}: within tolerance");
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn add(total: &mut charter_decide::llm::Usage, u: &charter_decide::llm::Usage) {
    total.calls += u.calls;
    total.prompt_tokens += u.prompt_tokens;
    total.completion_tokens += u.completion_tokens;
    total.cost += u.cost;
    total.latency_ms += u.latency_ms;
}

fn print_report(r: &EvalReport, out: &Value) {
    println!("cases        {}", r.cases);
    println!("accuracy     {:.4}", r.accuracy);
    println!("macro-F1     {:.4}", r.macro_f1);
    println!("ECE          {:.4}", r.expected_calibration_error);
    println!(
        "abstention   {:.3} (accept_above {}); accuracy on kept cases {:.4}",
        out["abstention_rate"].as_f64().unwrap_or(0.0),
        out["accept_above"],
        out["accuracy_on_kept"].as_f64().unwrap_or(0.0)
    );
    if let Some(r) = out["out_of_scope_recall"].as_f64() {
        println!(
            "out of scope {} case(s), recall {:.4}; in scope kept-and-correct {:.4}, coverage {:.4}",
            out["out_of_scope_cases"],
            r,
            out["in_scope_kept_correct"].as_f64().unwrap_or(0.0),
            out["in_scope_coverage"].as_f64().unwrap_or(0.0),
        );
    }
    if let Some(stages) = out["per_stage"].as_array() {
        println!("stage        consulted  decided  correct  accuracy  abstained");
        for st in stages {
            println!(
                "{:<12} {:>9}  {:>7}  {:>7}  {:>8}  {:>9}",
                st["stage"].as_str().unwrap_or("?"),
                st["consulted"],
                st["decided"],
                st["correct"],
                st["accuracy"]
                    .as_f64()
                    .map_or_else(|| "-".to_string(), |a| format!("{a:.4}")),
                st["abstained"],
            );
        }
    }
    if out["suggested"].is_object() {
        let sg = &out["suggested"];
        match sg["accept_above"].as_f64() {
            Some(t) => println!(
                "suggested    accept_above {t:.4} for {} {}: coverage {:.4}, accuracy on kept {:.4}, in scope kept-and-correct {}, out-of-scope recall {}",
                sg["target"].as_str().unwrap_or("?"),
                sg["value"],
                sg["coverage"].as_f64().unwrap_or(0.0),
                sg["accuracy_on_kept"].as_f64().unwrap_or(0.0),
                sg["in_scope_kept_correct"],
                sg["out_of_scope_recall"],
            ),
            None => println!(
                "suggested    no accept_above reaches {} {} on these cases",
                sg["target"].as_str().unwrap_or("?"),
                sg["value"]
            ),
        }
    }
    println!(
        "setup        {:.3} s loading or training (not in the latency)",
        out["setup_seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "latency      {:.1} us mean, {:.1} us p50, {:.1} us p99 per decision; llm calls {}, tokens {} ({} prompt + {} completion), cost {:.6}, {} ms in model calls",
        out["mean_latency_us"].as_f64().unwrap_or(0.0),
        out["p50_latency_us"].as_f64().unwrap_or(0.0),
        out["p99_latency_us"].as_f64().unwrap_or(0.0),
        out["llm_calls"],
        out["tokens"],
        out["prompt_tokens"],
        out["completion_tokens"],
        out["cost"].as_f64().unwrap_or(0.0),
        out["llm_latency_ms"],
    );
    println!();
    println!("threshold  kept    accuracy-on-kept");
    for t in &r.thresholds {
        println!("{:>9.2}  {:>5.3}   {:.4}", t.threshold, t.kept, t.accuracy);
    }
    println!();
    println!("most confused (expected -> predicted: count)");
    for c in r.confusions.iter().take(10) {
        println!("  {} -> {}: {}", c.expected, c.predicted, c.count);
    }
    println!();
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>7}",
        "label", "precision", "recall", "f1", "support"
    );
    for l in &r.per_label {
        println!(
            "{:<40} {:>9.3} {:>9.3} {:>9.3} {:>7}",
            l.label, l.precision, l.recall, l.f1, l.support
        );
    }
}
