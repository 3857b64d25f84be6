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
    /// Labelled cases (CSV `text,label` or JSONL).
    #[arg(long)]
    pub cases: PathBuf,
    /// Project folder.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// What to evaluate: `embedded` (the embedded classifier), `llm` (the charter's first
    /// llm stage through its configured providers) or `cascade` (every stage in order, as
    /// the worker decides, fields included).
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "llm", "cascade"])]
    pub stage: String,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// A previous `--json` report: exit 1 when accuracy dropped by more than --tolerance.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Allowed accuracy drop against --baseline (absolute, e.g. 0.01 = one point).
    #[arg(long, default_value_t = 0.01)]
    pub tolerance: f64,
}

pub async fn eval(args: EvalArgs) -> ExitCode {
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

async fn run_eval(args: &EvalArgs) -> Result<ExitCode, String> {
    let (source, project) = load(&args.dir)?;
    let c = project
        .charters
        .get(&args.charter)
        .ok_or_else(|| format!("no charter named `{}`", args.charter))?
        .clone();
    let cases = read_cases(&args.cases)?;
    let progress = crate::progress::Progress::new(cases.len());
    let mut outcomes = Vec::with_capacity(cases.len());
    let mut usage = charter_decide::llm::Usage::default();
    let known: Vec<String>;
    let accept_above: Option<f64>;
    let started = Instant::now();
    match args.stage.as_str() {
        "embedded" => {
            let stage = models::embedded_stage(&c)
                .ok_or_else(|| format!("charter `{}` has no embedded stage", args.charter))?;
            let model =
                models::load_or_train(&args.dir, &source, &c, stage).map_err(|e| e.to_string())?;
            eprintln!(
                "evaluating {} case(s) with the embedded stage ...",
                cases.len()
            );
            for (i, case) in cases.iter().enumerate() {
                let p = model.predict(&case.text);
                outcomes.push(Outcome {
                    kept: p.confidence >= stage.accept_above,
                    label: p.label,
                    confidence: p.confidence,
                });
                progress.tick(i + 1);
            }
            known = model.labels().to_vec();
            accept_above = Some(stage.accept_above);
        }
        stage_name => {
            let decide = c
                .decide
                .clone()
                .ok_or_else(|| format!("charter `{}` has no `decide` section", args.charter))?;
            let runtime = std::sync::Arc::new(
                charter_server::Runtime::load(&args.dir).map_err(|e| e.to_string())?,
            );
            let llm = charter_server::decide::llm_engine(
                &runtime,
                charter_server::decide::memory_backing,
            );
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
            for (i, case) in cases.iter().enumerate() {
                let ctx = case_context(&args.charter, &case.text);
                let o = match (stage_name, &llm_stage) {
                    ("llm", Some(stage)) => {
                        let (result, _) = charter_server::decide::ask_llm_stage(
                            &llm,
                            &args.charter,
                            &decide,
                            stage,
                            &ctx,
                            &case.text,
                        )
                        .await;
                        match result {
                            Ok(a) => {
                                add(&mut usage, &a.usage);
                                Outcome {
                                    kept: a.confidence >= stage.accept_above,
                                    label: a.label,
                                    confidence: a.confidence,
                                }
                            }
                            Err(f) => {
                                add(&mut usage, &f.usage);
                                if progress.shown() {
                                    eprintln!();
                                }
                                eprintln!("case {}: no answer: {}", i + 1, f.reason);
                                Outcome {
                                    label: "(no answer)".into(),
                                    confidence: 0.0,
                                    kept: false,
                                }
                            }
                        }
                    }
                    _ => {
                        let (d, u) = charter_server::decide::run_cascade(
                            &llm,
                            &args.charter,
                            &decide,
                            &ctx,
                            &case.text,
                            model.as_deref(),
                        )
                        .await;
                        add(&mut usage, &u);
                        use charter_core::model::DecisionStage as D;
                        let decided = matches!(d.stage, D::Rule | D::Embedded | D::Llm);
                        Outcome {
                            kept: decided && d.label.is_some(),
                            label: d.label.unwrap_or_else(|| "(escalated)".into()),
                            confidence: d.confidence,
                        }
                    }
                };
                outcomes.push(o);
                progress.tick(i + 1);
            }
            known = decide.labels.clone();
            accept_above = llm_stage
                .filter(|_| stage_name == "llm")
                .map(|s| s.accept_above);
        }
    }
    let took = started.elapsed();
    let predictions: Vec<(String, f64)> = outcomes
        .iter()
        .map(|o| (o.label.clone(), o.confidence))
        .collect();
    let report = charter_decide::evaluate_predictions(&known, &cases, &predictions);
    let kept: Vec<bool> = outcomes.iter().map(|o| o.kept).collect();
    let n_kept = kept.iter().filter(|k| **k).count();
    let right_kept = cases
        .iter()
        .zip(&outcomes)
        .filter(|(c, o)| o.kept && o.label == c.label)
        .count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let n = cases.len();
    let out = json!({
        "charter": args.charter,
        "stage": args.stage,
        "cases": report.cases,
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "expected_calibration_error": report.expected_calibration_error,
        "accept_above": accept_above,
        "abstention_rate": if n == 0 { 0.0 } else { 1.0 - ratio(n_kept, n) },
        "accuracy_on_kept": ratio(right_kept, n_kept),
        "report": report,
        "llm_calls": usage.calls,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "tokens": usage.tokens(),
        "cost": usage.cost,
        "llm_latency_ms": usage.latency_ms,
        "mean_latency_us": if n == 0 { 0.0 } else { took.as_secs_f64() * 1e6 / n as f64 },
    });
    if args.json {
        println!("{out}");
    } else {
        print_report(&report, &out);
    }
    if let Some(b) = &args.baseline {
        let base: Value = serde_json::from_str(
            &std::fs::read_to_string(b).map_err(|e| format!("cannot read {}: {e}", b.display()))?,
        )
        .map_err(|e| format!("{}: not a JSON report: {e}", b.display()))?;
        let base_acc = base["accuracy"]
            .as_f64()
            .ok_or_else(|| format!("{}: no `accuracy` field", b.display()))?;
        if report.accuracy + args.tolerance < base_acc {
            eprintln!(
                "regression: accuracy {:.4} is below the baseline {:.4} by more than {}",
                report.accuracy, base_acc, args.tolerance
            );
            return Ok(ExitCode::from(1));
        }
        eprintln!(
            "accuracy {:.4} vs baseline {:.4}: within tolerance",
            report.accuracy, base_acc
        );
    }
    Ok(ExitCode::SUCCESS)
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
    println!(
        "latency      {:.1} us mean per case; llm calls {}, tokens {} ({} prompt + {} completion), cost {:.6}, {} ms in model calls",
        out["mean_latency_us"].as_f64().unwrap_or(0.0),
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
