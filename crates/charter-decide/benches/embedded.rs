//! Embedded classifier benchmark on Banking77: training time and per-classification
//! latency on one thread. Run with `cargo bench -p charter-decide`.

use std::hint::black_box;
use std::time::Instant;

use charter_decide::{
    EmbeddedModel, Example, ExampleFormat, TrainOptions, evaluate, parse_examples,
};

fn load(name: &str) -> Vec<Example> {
    let path = format!("{}/tests/data/banking77/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse_examples(&text, ExampleFormat::Csv).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let train = load("train.csv");
    let test = load("test.csv");
    let opts = TrainOptions::default();

    let mut train_secs = Vec::new();
    let mut model = None;
    for _ in 0..3 {
        let start = Instant::now();
        let m = EmbeddedModel::train(&train, &opts).unwrap_or_else(|e| panic!("{e}"));
        train_secs.push(start.elapsed().as_secs_f64());
        model = Some(m);
    }
    let Some(model) = model else { return };
    train_secs.sort_by(f64::total_cmp);
    println!(
        "train: {} examples, {} labels, {} features; wall time min {:.2} s, median {:.2} s (3 runs)",
        train.len(),
        model.labels().len(),
        model.feature_count(),
        train_secs[0],
        train_secs[1]
    );
    let bytes = model.to_bytes();
    let start = Instant::now();
    let loaded = EmbeddedModel::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "model: {:.1} MB serialised, loaded in {:.1} ms",
        bytes.len() as f64 / 1e6,
        start.elapsed().as_secs_f64() * 1e3
    );

    let report = evaluate(&loaded, &test);
    println!(
        "test: accuracy {:.4}, macro F1 {:.4}, ECE {:.4}",
        report.accuracy, report.macro_f1, report.expected_calibration_error
    );
    for row in &report.thresholds {
        println!(
            "  accept >= {:.2}: keep {:.3}, accuracy {:.4}",
            row.threshold, row.kept, row.accuracy
        );
    }

    // Warm up, then time every test text individually, 5 rounds.
    for e in &test {
        black_box(loaded.predict(black_box(&e.text)));
    }
    let mut lat = Vec::with_capacity(test.len() * 5);
    for _ in 0..5 {
        for e in &test {
            let start = Instant::now();
            black_box(loaded.predict(black_box(&e.text)));
            lat.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    lat.sort_by(f64::total_cmp);
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    println!(
        "predict (one thread, {} calls): mean {:.1} us, p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        lat.len(),
        mean,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        lat[lat.len() - 1]
    );
}
