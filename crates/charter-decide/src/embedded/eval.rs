//! Evaluation of a model on labelled cases: accuracy, macro F1, per-label precision and
//! recall, the most frequent confusions, calibration error and an accuracy-vs-abstention
//! table.

use serde::Serialize;

use super::EmbeddedModel;
use crate::examples::Example;

/// Confidence thresholds reported in [`EvalReport::thresholds`].
pub const THRESHOLDS: [f64; 7] = [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95];

/// Number of equal-width confidence bins used for the expected calibration error.
const ECE_BINS: usize = 15;

/// Precision, recall and F1 of one label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelReport {
    /// The label.
    pub label: String,
    /// Of the cases predicted as this label, the share that had it.
    pub precision: f64,
    /// Of the cases that had this label, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Number of cases with this label.
    pub support: usize,
}

/// One frequent mistake: cases labelled `expected` predicted as `predicted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// The true label.
    pub expected: String,
    /// What the model said.
    pub predicted: String,
    /// How often.
    pub count: usize,
}

/// Outcome of accepting only predictions with confidence at or above a threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdRow {
    /// The confidence threshold.
    pub threshold: f64,
    /// Share of cases whose confidence reaches the threshold (the rest would abstain).
    pub kept: f64,
    /// Accuracy on the kept cases (1.0 when none are kept).
    pub accuracy: f64,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Number of cases evaluated.
    pub cases: usize,
    /// Share of cases predicted correctly (no abstention).
    pub accuracy: f64,
    /// Unweighted mean F1 over the labels present in the cases or the predictions.
    pub macro_f1: f64,
    /// Expected calibration error over 15 equal-width confidence bins: the mean gap between
    /// confidence and accuracy, weighted by how many cases fall into each bin.
    pub expected_calibration_error: f64,
    /// Mean confidence of the top label.
    pub mean_confidence: f64,
    /// Cases whose label the model does not know (always counted as wrong).
    pub unknown_labels: usize,
    /// Per-label precision, recall and F1, sorted by label.
    pub per_label: Vec<LabelReport>,
    /// The ten most frequent confusions, most frequent first.
    pub confusions: Vec<Confusion>,
    /// Accuracy vs. abstention for each of [`THRESHOLDS`].
    pub thresholds: Vec<ThresholdRow>,
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let r = num as f64 / den as f64;
        r
    }
}

/// Run `model` over `cases` and measure how well it does.
pub fn evaluate(model: &EmbeddedModel, cases: &[Example]) -> EvalReport {
    let predictions: Vec<(String, f64)> = cases
        .iter()
        .map(|c| {
            let p = model.predict(&c.text);
            (p.label, p.confidence)
        })
        .collect();
    evaluate_predictions(model.labels(), cases, &predictions)
}

/// Measure predictions made by any stage: `predictions[i]` is the label and confidence
/// given for `cases[i]` (a stage that gave no answer can pass a placeholder label such as
/// `(escalated)` with confidence 0; it counts as wrong). `known` are the labels the stage
/// can give; case labels outside it are counted in [`EvalReport::unknown_labels`].
pub fn evaluate_predictions(
    known: &[String],
    cases: &[Example],
    predictions: &[(String, f64)],
) -> EvalReport {
    let (names, unknown_labels) = label_universe(known, cases, predictions);
    let confusion = Confusion::matrix(&names, cases, predictions);
    let outcomes: Vec<(f64, bool)> = cases
        .iter()
        .zip(predictions)
        .map(|(c, (label, confidence))| (*confidence, c.label == *label))
        .collect();
    let n = cases.len();
    let k = names.len();
    let correct: usize = (0..k).map(|i| confusion[i * k + i]).sum();
    let (per_label, macro_f1) = per_label(&names, &confusion);
    #[allow(clippy::cast_precision_loss)]
    let mean_confidence = if n == 0 {
        0.0
    } else {
        outcomes.iter().map(|o| o.0).sum::<f64>() / n as f64
    };
    EvalReport {
        cases: n,
        accuracy: ratio(correct, n),
        macro_f1,
        expected_calibration_error: calibration_error(&outcomes),
        mean_confidence,
        unknown_labels,
        per_label,
        confusions: Confusion::most_frequent(&names, &confusion),
        thresholds: threshold_rows(&outcomes),
    }
}

/// The labels to report on: `known` plus any other label in the cases and predictions, in
/// that order; and how many cases carry a label outside `known`.
fn label_universe(
    known: &[String],
    cases: &[Example],
    predictions: &[(String, f64)],
) -> (Vec<String>, usize) {
    let mut names: Vec<String> = known.to_vec();
    let mut unknown_labels = 0;
    for c in cases {
        if !known.contains(&c.label) {
            unknown_labels += 1;
            if !names.contains(&c.label) {
                names.push(c.label.clone());
            }
        }
    }
    for (p, _) in predictions {
        if !names.contains(p) {
            names.push(p.clone());
        }
    }
    (names, unknown_labels)
}

impl Confusion {
    /// The confusion matrix over `names` (row: expected, column: predicted), row-major.
    fn matrix(names: &[String], cases: &[Example], predictions: &[(String, f64)]) -> Vec<usize> {
        let id = |l: &str| names.iter().position(|n| n == l).unwrap_or(0);
        let k = names.len();
        let mut confusion = vec![0usize; k * k];
        for (c, (label, _)) in cases.iter().zip(predictions) {
            confusion[id(&c.label) * k + id(label)] += 1;
        }
        confusion
    }

    /// The ten most frequent confusions of `matrix`, most frequent first.
    fn most_frequent(names: &[String], matrix: &[usize]) -> Vec<Confusion> {
        let k = names.len();
        let mut confusions: Vec<Confusion> = Vec::new();
        for t in 0..k {
            for q in 0..k {
                let count = matrix[t * k + q];
                if t != q && count > 0 {
                    confusions.push(Confusion {
                        expected: names[t].clone(),
                        predicted: names[q].clone(),
                        count,
                    });
                }
            }
        }
        confusions.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.expected.cmp(&b.expected))
                .then_with(|| a.predicted.cmp(&b.predicted))
        });
        confusions.truncate(10);
        confusions
    }
}

/// Precision, recall and F1 per label (sorted by label), and the macro F1 over the labels
/// present in the cases or the predictions.
fn per_label(names: &[String], confusion: &[usize]) -> (Vec<LabelReport>, f64) {
    let k = names.len();
    let mut per_label = Vec::new();
    let mut f1_sum = 0.0;
    let mut f1_count = 0usize;
    for (i, name) in names.iter().enumerate() {
        let tp = confusion[i * k + i];
        let support: usize = (0..k).map(|j| confusion[i * k + j]).sum();
        let predicted: usize = (0..k).map(|j| confusion[j * k + i]).sum();
        let precision = ratio(tp, predicted);
        let recall = ratio(tp, support);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        if support > 0 || predicted > 0 {
            f1_sum += f1;
            f1_count += 1;
        }
        per_label.push(LabelReport {
            label: name.clone(),
            precision,
            recall,
            f1,
            support,
        });
    }
    per_label.sort_by(|a, b| a.label.cmp(&b.label));
    let macro_f1 = if f1_count == 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let m = f1_sum / f1_count as f64;
        m
    };
    (per_label, macro_f1)
}

/// Accuracy vs. abstention at each of [`THRESHOLDS`], over `(confidence, right)` outcomes.
fn threshold_rows(outcomes: &[(f64, bool)]) -> Vec<ThresholdRow> {
    let n = outcomes.len();
    THRESHOLDS
        .iter()
        .map(|&threshold| {
            let kept: Vec<&(f64, bool)> = outcomes.iter().filter(|o| o.0 >= threshold).collect();
            let right = kept.iter().filter(|o| o.1).count();
            ThresholdRow {
                threshold,
                kept: ratio(kept.len(), n),
                accuracy: if kept.is_empty() {
                    1.0
                } else {
                    ratio(right, kept.len())
                },
            }
        })
        .collect()
}

/// Expected calibration error over [`ECE_BINS`] equal-width confidence bins.
fn calibration_error(outcomes: &[(f64, bool)]) -> f64 {
    let n = outcomes.len();
    let mut bins = [(0usize, 0f64, 0usize); ECE_BINS];
    for &(conf, ok) in outcomes {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let b = ((conf * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        bins[b].0 += 1;
        bins[b].1 += conf;
        bins[b].2 += usize::from(ok);
    }
    bins.iter()
        .filter(|b| b.0 > 0)
        .map(|&(count, conf_sum, right)| {
            #[allow(clippy::cast_precision_loss)]
            let mean_conf = conf_sum / count as f64;
            (mean_conf - ratio(right, count)).abs() * ratio(count, n)
        })
        .sum()
}
