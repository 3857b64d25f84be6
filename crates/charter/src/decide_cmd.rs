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
    /// Which stage to evaluate: embedded (llm and cascade come with the LLM providers).
    #[arg(long, default_value = "embedded")]
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

pub fn eval(args: EvalArgs) -> ExitCode {
    match run_eval(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_eval(args: &EvalArgs) -> Result<ExitCode, String> {
    if args.stage != "embedded" {
        return Err(format!(
            "--stage {} is not available yet: only the embedded stage can be evaluated in this build",
            args.stage
        ));
    }
    let (source, project) = load(&args.dir)?;
    let c = project
        .charters
        .get(&args.charter)
        .ok_or_else(|| format!("no charter named `{}`", args.charter))?;
    let stage = models::embedded_stage(c)
        .ok_or_else(|| format!("charter `{}` has no embedded stage", args.charter))?;
    let model = models::load_or_train(&args.dir, &source, c, stage).map_err(|e| e.to_string())?;
    let path = args.cases.display().to_string();
    let text =
        std::fs::read_to_string(&args.cases).map_err(|e| format!("cannot read {path}: {e}"))?;
    let format = ExampleFormat::from_path(&path)
        .ok_or_else(|| format!("{path}: unknown format: use .csv (text,label) or .jsonl"))?;
    let cases = parse_examples(&text, format).map_err(|e| format!("{path}: {e}"))?;
    eprintln!(
        "evaluating {} case(s) with the embedded stage ...",
        cases.len()
    );
    let started = Instant::now();
    let report = charter_decide::evaluate(&model, &cases);
    let took = started.elapsed();
    let kept = cases
        .iter()
        .filter(|case| model.predict(&case.text).confidence >= stage.accept_above)
        .count();
    let abstention = if cases.is_empty() {
        0.0
    } else {
        1.0 - kept as f64 / cases.len() as f64
    };
    let out = json!({
        "charter": args.charter,
        "stage": "embedded",
        "cases": report.cases,
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "expected_calibration_error": report.expected_calibration_error,
        "accept_above": stage.accept_above,
        "abstention_rate": abstention,
        "report": report,
        "llm_calls": 0,
        "tokens": 0,
        "cost": 0.0,
        "mean_latency_us": if cases.is_empty() { 0.0 } else { took.as_secs_f64() * 1e6 / cases.len() as f64 },
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

fn print_report(r: &EvalReport, out: &Value) {
    println!("cases        {}", r.cases);
    println!("accuracy     {:.4}", r.accuracy);
    println!("macro-F1     {:.4}", r.macro_f1);
    println!("ECE          {:.4}", r.expected_calibration_error);
    println!(
        "abstention   {:.3} at accept_above {}",
        out["abstention_rate"].as_f64().unwrap_or(0.0),
        out["accept_above"]
    );
    println!(
        "latency      {:.1} us mean per case; llm calls 0, tokens 0, cost 0",
        out["mean_latency_us"].as_f64().unwrap_or(0.0)
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
