//! Out-of-scope detection on Banking77 with held-out intents: for each seed a quarter of
//! the 77 intents (19) is held out as unknown; the model is trained on the training texts
//! of the other 58 and evaluated on the whole test set, where the held-out intents' texts
//! are out of scope. Run with `cargo bench -p charter-decide --bench oos`.
//!
//! The held-out intents of seed `s` are the 19 whose SHA-256 of `"{s}:{intent}"` (hex)
//! sorts first; `scripts/oos_baseline.py` uses the same rule.

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use charter_decide::{EmbeddedModel, Example, ExampleFormat, TrainOptions, parse_examples};
use sha2::{Digest, Sha256};

fn load(name: &str) -> Vec<Example> {
    let path = format!("{}/tests/data/banking77/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse_examples(&text, ExampleFormat::Csv).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The held-out intents of `seed`.
fn held_out(intents: &[String], seed: u64) -> Vec<String> {
    let mut keyed: Vec<(String, String)> = intents
        .iter()
        .map(|i| {
            let h = Sha256::digest(format!("{seed}:{i}").as_bytes());
            (hex::encode(h), i.clone())
        })
        .collect();
    keyed.sort();
    keyed
        .into_iter()
        .take(intents.len() / 4)
        .map(|(_, i)| i)
        .collect()
}

/// One scored case: (score, in scope, predicted its own intent).
type Scored = (f64, bool, bool);

fn auroc(cases: &[Scored]) -> f64 {
    // Probability that an in-scope case scores above an out-of-scope one.
    let mut v: Vec<&Scored> = cases.iter().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut n_in) = (0f64, 0f64);
    for (r, c) in v.iter().enumerate() {
        if c.1 {
            rank_sum += r as f64 + 1.0;
            n_in += 1.0;
        }
    }
    let n_out = v.len() as f64 - n_in;
    (rank_sum - n_in * (n_in + 1.0) / 2.0) / (n_in * n_out)
}

/// Best in-scope kept-and-correct with out-of-scope recall >= `min_recall`, and the
/// threshold it needs.
fn best_at_recall(cases: &[Scored], min_recall: f64) -> (f64, f64) {
    let mut v: Vec<&Scored> = cases.iter().collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let n_in = cases.iter().filter(|c| c.1).count() as f64;
    let n_out = cases.len() as f64 - n_in;
    let (mut kept_oos, mut kc) = (0f64, 0f64);
    let mut best = (0.0, f64::INFINITY);
    for (i, c) in v.iter().enumerate() {
        if c.1 {
            if c.2 {
                kc += 1.0;
            }
        } else {
            kept_oos += 1.0;
        }
        let next_differs = v.get(i + 1).is_none_or(|n| n.0 < c.0);
        if next_differs && 1.0 - kept_oos / n_out >= min_recall && kc / n_in > best.0 {
            best = (kc / n_in, c.0);
        }
    }
    best
}

/// Expected calibration error (15 bins) of (confidence, correct) pairs.
fn ece(pairs: &[(f64, bool)]) -> f64 {
    let mut bins = [(0usize, 0f64, 0usize); 15];
    for &(c, ok) in pairs {
        let b = ((c * 15.0) as usize).min(14);
        bins[b].0 += 1;
        bins[b].1 += c;
        bins[b].2 += usize::from(ok);
    }
    let n = pairs.len() as f64;
    bins.iter()
        .filter(|b| b.0 > 0)
        .map(|&(k, sum, right)| (sum / k as f64 - right as f64 / k as f64).abs() * k as f64 / n)
        .sum()
}

const THRESHOLDS: [f64; 11] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95];

fn main() {
    let seeds: Vec<u64> = std::env::var("OOS_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3, 4, 5]);
    let train = load("train.csv");
    let test = load("test.csv");
    let mut intents: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
    intents.sort();
    intents.dedup();
    // Candidate scores, all from one pass of the model: the calibrated maximum probability
    // (MSP), the largest raw logit and the energy (log-sum-exp of the raw logits).
    let scores: &[&str] = &["msp", "max_logit", "energy"];
    let mut table = vec![[0f64; 3]; THRESHOLDS.len()];
    let mut means = [0f64; 6];
    for &seed in &seeds {
        let unknown = held_out(&intents, seed);
        let tr: Vec<Example> = train
            .iter()
            .filter(|e| !unknown.contains(&e.label))
            .cloned()
            .collect();
        let t0 = std::time::Instant::now();
        let model =
            EmbeddedModel::train(&tr, &TrainOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let secs = t0.elapsed().as_secs_f64();
        let mut per: Vec<Vec<Scored>> = vec![Vec::new(); scores.len()];
        let mut lat = Vec::with_capacity(test.len());
        for e in &test {
            let t = std::time::Instant::now();
            let a = model.analyse(&e.text);
            lat.push(t.elapsed().as_secs_f64() * 1e6);
            let (best, &p) = a
                .probabilities
                .iter()
                .enumerate()
                .max_by(|x, y| x.1.total_cmp(y.1))
                .unwrap_or((0, &0.0));
            let in_scope = !unknown.contains(&e.label);
            let right = in_scope && model.labels()[best] == e.label;
            let max_logit = a.logits.iter().copied().fold(f32::MIN, f32::max);
            let energy = max_logit
                + a.logits
                    .iter()
                    .map(|l| (l - max_logit).exp())
                    .sum::<f32>()
                    .ln();
            for (k, v) in [p, max_logit, energy].iter().enumerate() {
                per[k].push((f64::from(*v), in_scope, right));
            }
        }
        lat.sort_by(f64::total_cmp);
        let msp = &per[0];
        let n_in = msp.iter().filter(|c| c.1).count() as f64;
        let n_out = msp.len() as f64 - n_in;
        for (row, &t) in table.iter_mut().zip(&THRESHOLDS) {
            let kc = msp.iter().filter(|c| c.0 >= t && c.2).count() as f64;
            let kept_in = msp.iter().filter(|c| c.0 >= t && c.1).count() as f64;
            let kept_out = msp.iter().filter(|c| c.0 >= t && !c.1).count() as f64;
            row[0] += kc / n_in / seeds.len() as f64;
            row[1] += kept_in / n_in / seeds.len() as f64;
            row[2] += (1.0 - kept_out / n_out) / seeds.len() as f64;
        }
        let in_pairs: Vec<(f64, bool)> = msp.iter().filter(|c| c.1).map(|c| (c.0, c.2)).collect();
        let all_pairs: Vec<(f64, bool)> = msp.iter().map(|c| (c.0, c.2)).collect();
        let oos: Vec<f64> = msp.iter().filter(|c| !c.1).map(|c| c.0).collect();
        let oos_mean = oos.iter().sum::<f64>() / oos.len() as f64;
        let oos_high = oos.iter().filter(|c| **c >= 0.7).count() as f64 / oos.len() as f64;
        let (kc, th) = best_at_recall(msp, 0.85);
        let vals = [
            auroc(msp),
            ece(&in_pairs),
            ece(&all_pairs),
            oos_mean,
            oos_high,
            kc,
        ];
        for (m, v) in means.iter_mut().zip(vals) {
            *m += v / seeds.len() as f64;
        }
        println!(
            "seed {seed}: trained on {} texts in {secs:.2} s wall; in-scope accuracy {:.4}; p99 {:.1} us per decision; ECE in-scope {:.4}, all {:.4}; OOS mean conf {oos_mean:.3}, OOS conf>=0.7 {oos_high:.3}",
            tr.len(),
            msp.iter().filter(|c| c.2).count() as f64 / n_in,
            lat[(lat.len() * 99 / 100).min(lat.len() - 1)],
            vals[1],
            vals[2],
        );
        for (k, name) in scores.iter().enumerate() {
            let (kc_k, th_k) = best_at_recall(&per[k], 0.85);
            println!(
                "  {name:<10} AUROC {:.4}  best kept-correct at OOS recall>=0.85: {kc_k:.4} (threshold {th_k:.4})",
                auroc(&per[k])
            );
        }
        let _ = (kc, th);
    }
    println!("mean over seeds {seeds:?} (score: msp, i.e. `accept_above`):");
    println!("threshold  in-scope kept-correct  coverage  OOS recall");
    for (row, t) in table.iter().zip(&THRESHOLDS) {
        println!("{t:9.2}  {:21.4}  {:8.4}  {:10.4}", row[0], row[1], row[2]);
    }
    println!(
        "mean AUROC {:.4}; ECE in-scope {:.4}, all {:.4}; OOS mean conf {:.3}, OOS conf>=0.7 {:.3}; best kept-correct at OOS recall>=0.85 {:.4}",
        means[0], means[1], means[2], means[3], means[4], means[5]
    );
}
