//! Training: vocabulary, TF-IDF vectors and a multinomial logistic regression fitted by
//! stochastic gradient descent, plus temperature scaling for calibration.

use super::features::{CHAR_GROUP, FeatureConfig, Scratch, runs, weight_and_normalise};

/// A small, seedable PRNG (SplitMix64). Deterministic across platforms.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        super::features::mix64(self.0)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        // Multiply-shift; the bias is negligible for our sizes.
        let n = n as u64;
        usize::try_from(((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64).unwrap_or(0)
    }

    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Sparse rows in compressed form.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub(crate) starts: Vec<usize>,
    pub(crate) idx: Vec<u32>,
    pub(crate) val: Vec<f32>,
}

impl Rows {
    pub(crate) fn len(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    pub(crate) fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.starts[i], self.starts[i + 1]);
        (&self.idx[s..e], &self.val[s..e])
    }
}

/// The vocabulary (sorted feature hashes kept) and their IDF weights.
pub(crate) struct Vocab {
    pub(crate) hashes: Vec<u64>,
    pub(crate) idf: Vec<f32>,
}

/// Featurise every text; returns per-text sorted hash lists.
pub(crate) fn featurize_all(texts: &[&str], cfg: &FeatureConfig) -> Vec<Vec<u64>> {
    let mut scratch = Scratch::default();
    texts
        .iter()
        .map(|t| {
            scratch.featurize(t, cfg);
            scratch.hashes.clone()
        })
        .collect()
}

/// Build the vocabulary from document frequencies, keeping features seen in at least
/// `min_df` documents, with smoothed IDF `ln((1 + n) / (1 + df)) + 1`.
pub(crate) fn build_vocab(docs: &[Vec<u64>], min_df: u32) -> Vocab {
    let mut all: Vec<u64> = Vec::new();
    for d in docs {
        all.extend(runs(d).map(|(h, _)| h));
    }
    all.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let n = docs.len() as f32;
    let mut hashes = Vec::new();
    let mut idf = Vec::new();
    for (h, df) in runs(&all) {
        if df >= min_df {
            hashes.push(h);
            #[allow(clippy::cast_precision_loss)]
            idf.push(((1.0 + n) / (1.0 + df as f32)).ln() + 1.0);
        }
    }
    Vocab { hashes, idf }
}

/// Turn sorted hash lists into weighted, normalised sparse rows over `vocab`.
pub(crate) fn vectorize_all(docs: &[Vec<u64>], vocab: &Vocab, cfg: &FeatureConfig) -> Rows {
    let mut rows = Rows {
        starts: vec![0],
        ..Rows::default()
    };
    let mut feats: Vec<(u32, f32)> = Vec::new();
    let mut tfs = Vec::new();
    let mut is_char = Vec::new();
    for d in docs {
        feats.clear();
        tfs.clear();
        is_char.clear();
        for (h, tf) in runs(d) {
            if let Ok(i) = vocab.hashes.binary_search(&h) {
                feats.push((u32::try_from(i).unwrap_or(u32::MAX), vocab.idf[i]));
                tfs.push(tf);
                is_char.push(h & CHAR_GROUP != 0);
            }
        }
        weight_and_normalise(&mut feats, &tfs, &is_char, cfg);
        for &(i, v) in &feats {
            rows.idx.push(i);
            rows.val.push(v);
        }
        rows.starts.push(rows.idx.len());
    }
    rows
}

/// Hyper-parameters of the SGD fit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SgdParams {
    pub(crate) epochs: u32,
    pub(crate) learning_rate: f32,
    pub(crate) l2: f32,
    pub(crate) seed: u64,
}

/// A fitted linear softmax model: `weights[f * classes + c]`, `bias[c]`.
pub(crate) struct Linear {
    pub(crate) classes: usize,
    pub(crate) weights: Vec<f32>,
    pub(crate) bias: Vec<f32>,
}

impl Linear {
    /// Logits of `(feature index, value)` pairs into `out` (length `classes`).
    pub(crate) fn logits_pairs(&self, feats: &[(u32, f32)], out: &mut [f32]) {
        out.copy_from_slice(&self.bias);
        let c = self.classes;
        for &(i, v) in feats {
            let i = i as usize;
            let w = &self.weights[i * c..(i + 1) * c];
            for (o, &wv) in out.iter_mut().zip(w) {
                *o += v * wv;
            }
        }
    }

    /// Logits of one sparse row into `out` (length `classes`).
    pub(crate) fn logits(&self, idx: &[u32], val: &[f32], out: &mut [f32]) {
        out.copy_from_slice(&self.bias);
        let c = self.classes;
        for (&i, &v) in idx.iter().zip(val) {
            let i = i as usize;
            let w = &self.weights[i * c..(i + 1) * c];
            for (o, &wv) in out.iter_mut().zip(w) {
                *o += v * wv;
            }
        }
    }
}

/// In-place softmax.
pub(crate) fn softmax(z: &mut [f32]) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 {
        for v in z.iter_mut() {
            *v /= sum;
        }
    }
}

/// Fit a multinomial logistic regression with L2 penalty by SGD on the rows in `subset`.
///
/// Uses the scaled-weights trick (true weights = `scale * v`) so the L2 shrink costs O(1)
/// per step, and a learning rate decaying linearly to zero over the run.
pub(crate) fn fit_softmax(
    rows: &Rows,
    labels: &[u32],
    subset: &[usize],
    n_features: usize,
    classes: usize,
    p: &SgdParams,
) -> Linear {
    let mut v = vec![0f32; n_features * classes];
    let mut bias = vec![0f32; classes];
    let mut scale = 1f32;
    let mut order: Vec<usize> = subset.to_vec();
    let mut rng = Rng::new(p.seed);
    let total = (p.epochs as usize * order.len()).max(1);
    let mut step = 0usize;
    let mut z = vec![0f32; classes];
    for _ in 0..p.epochs {
        rng.shuffle(&mut order);
        for &r in &order {
            #[allow(clippy::cast_precision_loss)]
            let lr = p.learning_rate * (1.0 - step as f32 / total as f32).max(1e-4);
            step += 1;
            let (idx, val) = rows.row(r);
            // Forward.
            z.fill(0.0);
            for (&i, &x) in idx.iter().zip(val) {
                let i = i as usize;
                let w = &v[i * classes..(i + 1) * classes];
                for (o, &wv) in z.iter_mut().zip(w) {
                    *o += x * wv;
                }
            }
            for (o, &b) in z.iter_mut().zip(&bias) {
                *o = *o * scale + b;
            }
            softmax(&mut z);
            z[labels[r] as usize] -= 1.0;
            // Backward: gradient is (p - y) x.
            for (b, &g) in bias.iter_mut().zip(z.iter()) {
                *b -= lr * g;
            }
            scale *= 1.0 - lr * p.l2;
            let step_scale = lr / scale;
            for (&i, &x) in idx.iter().zip(val) {
                let i = i as usize;
                let w = &mut v[i * classes..(i + 1) * classes];
                let a = step_scale * x;
                for (wv, &g) in w.iter_mut().zip(z.iter()) {
                    *wv -= a * g;
                }
            }
            if scale < 1e-6 {
                for wv in v.iter_mut() {
                    *wv *= scale;
                }
                scale = 1.0;
            }
        }
    }
    for wv in v.iter_mut() {
        *wv *= scale;
    }
    Linear {
        classes,
        weights: v,
        bias,
    }
}

/// Find the temperature `t` minimising the mean negative log-likelihood of
/// `softmax(logits / t)` (golden-section search on `ln t` in `[ln 0.05, ln 20]`).
pub(crate) fn fit_temperature(logits: &[f32], labels: &[u32], classes: usize) -> f32 {
    if labels.is_empty() {
        return 1.0;
    }
    let nll = |t: f64| -> f64 {
        let mut total = 0f64;
        for (row, &y) in logits.chunks_exact(classes).zip(labels) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f64;
            for &v in row {
                sum += (f64::from(v - max) / t).exp();
            }
            total += sum.ln() - f64::from(row[y as usize] - max) / t;
        }
        total
    };
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (nll(c.exp()), nll(d.exp()));
    for _ in 0..60 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = nll(c.exp());
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = nll(d.exp());
        }
    }
    #[allow(clippy::cast_possible_truncation)]
    let t = ((a + b) / 2.0).exp() as f32;
    t
}

/// Fit one-vs-rest L2-regularised squared-hinge linear SVMs by dual coordinate descent
/// (one class at a time), returning their decision values as a [`Linear`] model. The bias
/// is learned as the weight of a constant feature of value 1.
pub(crate) fn fit_svm_ovr(
    rows: &Rows,
    labels: &[u32],
    subset: &[usize],
    n_features: usize,
    classes: usize,
    c: f32,
    epochs: u32,
    seed: u64,
) -> Linear {
    let mut weights = vec![0f32; n_features * classes];
    let mut bias = vec![0f32; classes];
    let diag = 0.5 / c;
    let qii: Vec<f32> = subset
        .iter()
        .map(|&r| rows.row(r).1.iter().map(|v| v * v).sum::<f32>() + 1.0 + diag)
        .collect();
    let mut w = vec![0f32; n_features];
    let mut alpha = vec![0f32; subset.len()];
    let mut order: Vec<usize> = (0..subset.len()).collect();
    for class in 0..classes {
        w.fill(0.0);
        alpha.fill(0.0);
        let mut b = 0f32;
        let mut rng = Rng::new(seed ^ (class as u64).wrapping_mul(0x9e37_79b9));
        for _ in 0..epochs {
            rng.shuffle(&mut order);
            let (mut pg_max, mut pg_min) = (f32::NEG_INFINITY, f32::INFINITY);
            for &k in &order {
                let r = subset[k];
                let y = if labels[r] as usize == class {
                    1f32
                } else {
                    -1f32
                };
                let (idx, val) = rows.row(r);
                let mut dot = b;
                for (&i, &x) in idx.iter().zip(val) {
                    dot += w[i as usize] * x;
                }
                let g = y * dot - 1.0 + diag * alpha[k];
                let pg = if alpha[k] == 0.0 { g.min(0.0) } else { g };
                pg_max = pg_max.max(pg);
                pg_min = pg_min.min(pg);
                if pg != 0.0 {
                    let old = alpha[k];
                    let new = (old - g / qii[k]).max(0.0);
                    alpha[k] = new;
                    let d = (new - old) * y;
                    if d != 0.0 {
                        for (&i, &x) in idx.iter().zip(val) {
                            w[i as usize] += d * x;
                        }
                        b += d;
                    }
                }
            }
            if pg_max - pg_min < 0.05 {
                break;
            }
        }
        for (f, &wv) in w.iter().enumerate() {
            weights[f * classes + class] = wv;
        }
        bias[class] = b;
    }
    Linear {
        classes,
        weights,
        bias,
    }
}
