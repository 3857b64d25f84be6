//! The embedded classifier: a pure-Rust linear text classifier trained from a charter's
//! labelled examples.
//!
//! Features are hashed word unigrams and bigrams plus character 2–5-grams inside word
//! boundaries (see [`FeatureConfig`]), weighted by sublinear TF × IDF and L2-normalised per
//! group. The model is a multinomial logistic regression fitted by SGD with an L2 penalty.
//! Its probabilities are calibrated by temperature scaling: a second model is trained on
//! part of the examples, the temperature that best explains the held-out rest is found, and
//! applied to the model trained on all of them. A confidence of 0.9 therefore means "right
//! about 9 times in 10", and a stage's `accept_above` threshold is meaningful.
//!
//! ```
//! use charter_decide::{EmbeddedModel, Example, TrainOptions};
//! let mut examples = Vec::new();
//! for i in 0..20 {
//!     examples.push(Example::new(format!("my card {i} was charged twice"), "billing"));
//!     examples.push(Example::new(format!("the app crashes on screen {i}"), "bug"));
//! }
//! let model = EmbeddedModel::train(&examples, &TrainOptions::default()).unwrap();
//! assert_eq!(model.predict("I was charged twice").label, "billing");
//! ```

mod eval;
mod features;
mod format;
mod train;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;
use thiserror::Error;

use crate::examples::Example;
pub use eval::{Confusion, EvalReport, LabelReport, ThresholdRow, evaluate, evaluate_predictions};
pub use features::FeatureConfig;
use features::{CHAR_GROUP, Scratch, runs, weight_and_normalise};
pub use format::ModelError;
use train::{Linear, Rng, SgdParams};

/// Options for [`EmbeddedModel::train`]. The defaults were tuned on Banking77.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Seed for shuffling and the calibration split. Same seed and examples → same model,
    /// byte for byte.
    pub seed: u64,
    /// Passes over the examples.
    pub epochs: u32,
    /// Initial SGD learning rate (decays linearly to zero).
    pub learning_rate: f32,
    /// L2 penalty per example.
    pub l2: f32,
    /// Keep only features seen in at least this many examples.
    pub min_df: u32,
    /// Fraction of the examples held out to fit the calibration temperature (0 disables
    /// calibration; the temperature is then 1).
    pub calibration_holdout: f32,
    /// Feature extraction settings.
    pub features: FeatureConfig,
    /// Which learner to use.
    pub learner: Learner,
    /// SVM cost parameter (higher = less regularisation).
    pub svm_c: f32,
    /// Maximum passes of the SVM solver (it stops earlier once converged).
    pub svm_epochs: u32,
}

/// The linear learner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learner {
    /// Multinomial logistic regression by SGD.
    Softmax,
    /// One-vs-rest squared-hinge SVMs by dual coordinate descent.
    Svm,
    /// Both, combined in logit space (each scaled by its own calibration temperature).
    Ensemble,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            seed: 42,
            epochs: 12,
            learning_rate: 0.5,
            l2: 1e-5,
            min_df: 1,
            calibration_holdout: 0.15,
            features: FeatureConfig::default(),
            learner: Learner::Ensemble,
            svm_c: 2.0,
            svm_epochs: 5,
        }
    }
}

/// Why a model could not be trained.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrainError {
    /// No examples were given.
    #[error("no training examples")]
    NoExamples,
    /// All examples have the same label; there is nothing to decide.
    #[error("need examples of at least two labels, found only {0:?}")]
    SingleLabel(String),
    /// Too many distinct labels for the model format.
    #[error("too many labels ({0}); at most 65535 are supported")]
    TooManyLabels(usize),
}

/// The classifier's answer for one text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The most probable label.
    pub label: String,
    /// Its calibrated probability, in `[0, 1]`.
    pub confidence: f64,
    /// The three most probable labels with their probabilities, best first.
    pub top: Vec<(String, f64)>,
}

/// A hasher for keys that are already well-mixed 64-bit hashes.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Per-thread buffers reused by [`EmbeddedModel::predict`].
#[derive(Default)]
struct PredictScratch {
    text: Scratch,
    feats: Vec<(u32, f32)>,
    tfs: Vec<u32>,
    is_char: Vec<bool>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<PredictScratch> =
        std::cell::RefCell::new(PredictScratch::default());
}

type FeatureIndex = HashMap<u64, u32, BuildHasherDefault<IdHasher>>;

/// A trained embedded classifier.
pub struct EmbeddedModel {
    labels: Vec<String>,
    digest: String,
    config: FeatureConfig,
    temperature: f32,
    /// Sorted feature hashes; position = feature index.
    hashes: Vec<u64>,
    idf: Vec<f32>,
    linear: Linear,
    index: FeatureIndex,
}

/// Everything the model computes about one text (see [`EmbeddedModel::analyse`]).
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Calibrated probabilities per label.
    pub probabilities: Vec<f32>,
    /// Raw combined logits per label, before the calibration temperature.
    pub logits: Vec<f32>,
    /// Number of the text's n-grams the model knows.
    pub known_features: usize,
    /// Number of the text's n-grams (with repeats removed).
    pub features: usize,
}

impl std::fmt::Debug for EmbeddedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedModel")
            .field("labels", &self.labels.len())
            .field("features", &self.hashes.len())
            .field("temperature", &self.temperature)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl EmbeddedModel {
    /// Train a model on `examples`.
    ///
    /// Uses two threads (the calibration model and the final model are fitted at the same
    /// time); the result does not depend on thread timing.
    pub fn train(examples: &[Example], opts: &TrainOptions) -> Result<EmbeddedModel, TrainError> {
        if examples.is_empty() {
            return Err(TrainError::NoExamples);
        }
        let mut labels: Vec<String> = examples.iter().map(|e| e.label.clone()).collect();
        labels.sort();
        labels.dedup();
        if labels.len() < 2 {
            return Err(TrainError::SingleLabel(labels.swap_remove(0)));
        }
        if labels.len() > usize::from(u16::MAX) {
            return Err(TrainError::TooManyLabels(labels.len()));
        }
        let y: Vec<u32> = examples
            .iter()
            .map(|e| {
                labels
                    .binary_search(&e.label)
                    .map_or(0, |i| u32::try_from(i).unwrap_or(0))
            })
            .collect();
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        let cfg = opts.features;
        let docs = train::featurize_all(&texts, &cfg);
        let vocab = train::build_vocab(&docs, opts.min_df.max(1));
        let rows = train::vectorize_all(&docs, &vocab, &cfg);
        drop(docs);
        let n_features = vocab.hashes.len();
        let classes = labels.len();
        let params = SgdParams {
            epochs: opts.epochs.max(1),
            learning_rate: opts.learning_rate,
            l2: opts.l2,
            seed: opts.seed,
        };

        // Calibration split: a seeded shuffle, the last `holdout` share held out.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        Rng::new(opts.seed ^ 0xca1b).shuffle(&mut order);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let n_hold = ((rows.len() as f32) * opts.calibration_holdout.clamp(0.0, 0.5)) as usize;
        let (fit_part, held_part) = order.split_at(rows.len() - n_hold);
        let all: Vec<usize> = (0..rows.len()).collect();

        let fit_softmax =
            |subset: &[usize]| train::fit_softmax(&rows, &y, subset, n_features, classes, &params);
        let fit_svm = |subset: &[usize]| {
            train::fit_svm_ovr(
                &rows,
                &y,
                subset,
                n_features,
                classes,
                opts.svm_c,
                opts.svm_epochs.max(1),
                opts.seed,
            )
        };
        let fit = |subset: &[usize]| -> Vec<Linear> {
            match opts.learner {
                Learner::Softmax => vec![fit_softmax(subset)],
                Learner::Svm => vec![fit_svm(subset)],
                Learner::Ensemble => vec![fit_softmax(subset), fit_svm(subset)],
            }
        };
        let (heads, (head_scales, temperature)) = std::thread::scope(|s| {
            let calib = s.spawn(|| {
                let heads = fit(fit_part);
                calibrate(&heads, &rows, &y, held_part, classes)
            });
            let heads = fit(&all);
            // A panic in the calibration thread can only come from a bug; fall back to
            // uncalibrated scales rather than propagating it.
            let n = heads.len();
            (heads, calib.join().unwrap_or_else(|_| (vec![1.0; n], 1.0)))
        });
        let mut linear = Linear {
            classes,
            weights: vec![0f32; n_features * classes],
            bias: vec![0f32; classes],
        };
        for (head, scale) in heads.iter().zip(&head_scales) {
            for (w, hw) in linear.weights.iter_mut().zip(&head.weights) {
                *w += scale * hw;
            }
            for (b, hb) in linear.bias.iter_mut().zip(&head.bias) {
                *b += scale * hb;
            }
        }

        Ok(EmbeddedModel::assemble(
            labels,
            examples_digest(examples),
            cfg,
            temperature,
            vocab.hashes,
            vocab.idf,
            linear,
        ))
    }

    fn assemble(
        labels: Vec<String>,
        digest: String,
        config: FeatureConfig,
        temperature: f32,
        hashes: Vec<u64>,
        idf: Vec<f32>,
        linear: Linear,
    ) -> EmbeddedModel {
        let mut index = FeatureIndex::with_capacity_and_hasher(hashes.len(), Default::default());
        for (i, &h) in hashes.iter().enumerate() {
            index.insert(h, u32::try_from(i).unwrap_or(u32::MAX));
        }
        EmbeddedModel {
            labels,
            digest,
            config,
            temperature,
            hashes,
            idf,
            linear,
            index,
        }
    }

    /// Classify one text. Cheap: a few small allocations and one pass over the weights of
    /// the text's features.
    pub fn predict(&self, text: &str) -> Prediction {
        let probs = self.probabilities(text);
        let mut order: Vec<usize> = (0..probs.len()).collect();
        let k = 3.min(order.len());
        // Partial selection of the top k is enough; ties break towards the lower index.
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let top: Vec<(String, f64)> = order[..k]
            .iter()
            .map(|&i| (self.labels[i].clone(), f64::from(probs[i])))
            .collect();
        let (label, confidence) = top.first().cloned().unwrap_or_else(|| (String::new(), 0.0));
        Prediction {
            label,
            confidence,
            top,
        }
    }

    /// Calibrated probabilities of every label (in the order of [`labels`](Self::labels)).
    pub fn probabilities(&self, text: &str) -> Vec<f32> {
        self.analyse(text).probabilities
    }

    /// Probabilities and raw logits of one text (used to measure out-of-scope scores).
    pub fn analyse(&self, text: &str) -> Analysis {
        let c = self.labels.len();
        let mut z = vec![0f32; c];
        let mut known = 0;
        let mut total = 0;
        SCRATCH.with(|cell| {
            // Reuse this thread's buffers; a re-entrant call (impossible today) would
            // simply get fresh ones.
            let mut fresh = PredictScratch::default();
            let mut guard = cell.try_borrow_mut();
            let b: &mut PredictScratch = match guard.as_deref_mut() {
                Ok(b) => b,
                Err(_) => &mut fresh,
            };
            b.text.featurize(text, &self.config);
            b.feats.clear();
            b.tfs.clear();
            b.is_char.clear();
            for (h, tf) in runs(&b.text.hashes) {
                total += 1;
                if let Some(&i) = self.index.get(&h) {
                    b.feats.push((i, self.idf[i as usize]));
                    b.tfs.push(tf);
                    b.is_char.push(h & CHAR_GROUP != 0);
                }
            }
            known = b.feats.len();
            weight_and_normalise(&mut b.feats, &b.tfs, &b.is_char, &self.config);
            self.linear.logits_pairs(&b.feats, &mut z);
        });
        let logits = z.clone();
        let inv_t = 1.0 / self.temperature;
        for v in z.iter_mut() {
            *v *= inv_t;
        }
        train::softmax(&mut z);
        Analysis {
            probabilities: z,
            logits,
            known_features: known,
            features: total,
        }
    }

    /// The labels the model can output, sorted.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Hex digest of the examples the model was trained on (see [`examples_digest`]).
    pub fn examples_digest(&self) -> &str {
        &self.digest
    }

    /// The calibration temperature the logits are divided by.
    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    /// Number of features (hashed n-grams) the model has weights for.
    pub fn feature_count(&self) -> usize {
        self.hashes.len()
    }
}

/// Fewer held-out rows than this and no temperature is fitted.
const MIN_CALIBRATION_ROWS: usize = 50;

/// Fit temperatures on the held-out rows: one per head (its scale is `1 / t`), then one for
/// the sum of the scaled heads. With fewer than [`MIN_CALIBRATION_ROWS`] held-out rows the heads are
/// simply averaged.
fn calibrate(
    heads: &[Linear],
    rows: &train::Rows,
    y: &[u32],
    held: &[usize],
    classes: usize,
) -> (Vec<f32>, f32) {
    if held.len() < MIN_CALIBRATION_ROWS {
        // Too few held-out rows to fit a temperature: average the heads' raw logits. Both
        // learners are under-confident when trained on little data, so the model errs
        // towards abstaining.
        #[allow(clippy::cast_precision_loss)]
        let n = heads.len() as f32;
        return (vec![1.0; heads.len()], n);
    }
    let held_y: Vec<u32> = held.iter().map(|&r| y[r]).collect();
    let mut combined = vec![0f32; held.len() * classes];
    let mut logits = vec![0f32; held.len() * classes];
    let mut scales = Vec::with_capacity(heads.len());
    for head in heads {
        for (&r, out) in held.iter().zip(logits.chunks_exact_mut(classes)) {
            let (idx, val) = rows.row(r);
            head.logits(idx, val, out);
        }
        let scale = if heads.len() == 1 {
            1.0
        } else {
            1.0 / train::fit_temperature(&logits, &held_y, classes)
        };
        for (c, l) in combined.iter_mut().zip(&logits) {
            *c += scale * l;
        }
        scales.push(scale);
    }
    (scales, train::fit_temperature(&combined, &held_y, classes))
}

/// A stable 128-bit digest (32 hex characters) of a list of examples, order-sensitive.
/// Used to tell whether a stored model was trained on the current examples.
pub fn examples_digest(examples: &[Example]) -> String {
    let mut a = 0xcbf2_9ce4_8422_2325u64;
    let mut b = 0x8422_2325_cbf2_9ce4u64;
    let mut feed = |bytes: &[u8]| {
        a = features::fnv1a(a, bytes);
        b = features::fnv1a(b ^ 0x9e37_79b9_7f4a_7c15, bytes).rotate_left(29);
    };
    feed(&(examples.len() as u64).to_le_bytes());
    for e in examples {
        feed(&(e.text.len() as u64).to_le_bytes());
        feed(e.text.as_bytes());
        feed(&(e.label.len() as u64).to_le_bytes());
        feed(e.label.as_bytes());
    }
    format!("{:016x}{:016x}", features::mix64(a), features::mix64(b))
}
