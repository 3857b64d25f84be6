//! Text normalisation and hashed n-gram features.
//!
//! A text is lower-cased and split into tokens of letters and digits; apostrophes inside a
//! word are dropped (`hasn't` → `hasnt`) and every other character separates tokens. Digits
//! may be folded to `0` so that amounts and dates share features. From the tokens we emit
//! hashed word unigrams and bigrams and hashed character n-grams taken inside each token
//! padded with a boundary marker on both sides (` card ` gives ` c`, `ca`, …, `d `).
//!
//! The top bit of every feature hash says which group it belongs to (words or characters),
//! so the two groups can be weighted and normalised separately.

/// Bit set on character n-gram hashes; clear on word n-gram hashes.
pub(crate) const CHAR_GROUP: u64 = 1 << 63;

/// How text is turned into features. Stored in the model so prediction matches training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureConfig {
    /// Longest word n-gram (1 = unigrams only, 2 = unigrams and bigrams).
    pub word_ngrams: u8,
    /// Shortest character n-gram (0 disables character n-grams).
    pub char_min: u8,
    /// Longest character n-gram.
    pub char_max: u8,
    /// Fold every digit to `0`.
    pub fold_digits: bool,
    /// Also pair words up to this many positions apart (0 or 1: adjacent bigrams only).
    pub skip_window: u8,
    /// Add bigrams with sentence start/end markers.
    pub edge_bigrams: bool,
    /// Take character n-grams across word boundaries too (over the whole normalised text),
    /// instead of inside each word only.
    pub char_cross: bool,
    /// Weight of the (L2-normalised) word feature group.
    pub word_weight: f32,
    /// Weight of the (L2-normalised) character feature group.
    pub char_weight: f32,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            word_ngrams: 2,
            char_min: 2,
            char_max: 5,
            fold_digits: true,
            char_cross: false,
            skip_window: 0,
            edge_bigrams: true,
            word_weight: 1.0,
            char_weight: 1.0,
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, starting from `state`.
#[inline]
pub(crate) fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// A strong 64-bit finaliser (the one from SplitMix64) so that similar strings spread out.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of a byte string under a one-byte tag, finalised.
#[inline]
pub(crate) fn hash_tagged(tag: u8, bytes: &[u8]) -> u64 {
    mix64(fnv1a(fnv1a(FNV_OFFSET, &[tag]), bytes))
}

const TAG_WORD: u8 = b'w';
const TAG_CHAR: u8 = b'c';

/// Reusable buffers for featurising one text.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Normalised text: tokens separated by single spaces, with a space at both ends.
    norm: String,
    /// Byte ranges of the tokens in `norm`.
    spans: Vec<(usize, usize)>,
    /// Byte offsets of character starts inside the current padded token.
    offsets: Vec<usize>,
    /// Raw feature hashes of the text (with repeats), sorted after `featurize`.
    pub(crate) hashes: Vec<u64>,
}

impl Scratch {
    fn normalise(&mut self, text: &str, cfg: &FeatureConfig) {
        self.norm.clear();
        self.spans.clear();
        self.norm.push(' ');
        let mut start: Option<usize> = None;
        for ch in text.chars() {
            if ch == '\'' || ch == '\u{2019}' {
                // Apostrophes join the parts of a word.
                continue;
            }
            if ch.is_alphanumeric() {
                if start.is_none() {
                    start = Some(self.norm.len());
                }
                if cfg.fold_digits && ch.is_ascii_digit() {
                    self.norm.push('0');
                } else if ch.is_ascii() {
                    self.norm.push(ch.to_ascii_lowercase());
                } else {
                    self.norm.extend(ch.to_lowercase());
                }
            } else if let Some(s) = start.take() {
                self.spans.push((s, self.norm.len()));
                self.norm.push(' ');
            }
        }
        if let Some(s) = start.take() {
            self.spans.push((s, self.norm.len()));
            self.norm.push(' ');
        }
    }

    /// Compute the feature hashes of `text` into `self.hashes`, sorted (repeats kept, so
    /// runs give term frequencies).
    pub(crate) fn featurize(&mut self, text: &str, cfg: &FeatureConfig) {
        self.normalise(text, cfg);
        self.hashes.clear();
        let norm = self.norm.as_bytes();

        // Word n-grams.
        let mut prev: Option<u64> = None;
        for &(s, e) in &self.spans {
            let h = hash_tagged(TAG_WORD, &norm[s..e]);
            if cfg.word_ngrams >= 1 {
                self.hashes.push(h & !CHAR_GROUP);
            }
            if cfg.word_ngrams >= 2
                && let Some(p) = prev
            {
                let b = mix64(p.rotate_left(17) ^ h.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                self.hashes.push(b & !CHAR_GROUP);
            }
            prev = Some(h);
        }
        if cfg.word_ngrams >= 2 && cfg.edge_bigrams && !self.spans.is_empty() {
            let first = self.spans[0];
            let last = self.spans[self.spans.len() - 1];
            let hf = hash_tagged(b'B', &norm[first.0..first.1]);
            let hl = hash_tagged(b'E', &norm[last.0..last.1]);
            self.hashes.push(hf & !CHAR_GROUP);
            self.hashes.push(hl & !CHAR_GROUP);
        }
        let sw = usize::from(cfg.skip_window);
        if sw >= 2 {
            for i in 0..self.spans.len() {
                for d in 2..=sw {
                    if let Some(&(s2, e2)) = self.spans.get(i + d) {
                        let (s1, e1) = self.spans[i];
                        let a = hash_tagged(b'k', &norm[s1..e1]);
                        let b = hash_tagged(b'k' + d as u8, &norm[s2..e2]);
                        self.hashes.push(mix64(a.rotate_left(23) ^ b) & !CHAR_GROUP);
                    }
                }
            }
        }

        // Character n-grams within padded tokens.
        if cfg.char_min > 0 && cfg.char_max >= cfg.char_min {
            let (lo, hi) = (usize::from(cfg.char_min), usize::from(cfg.char_max));
            let whole = [(1, self.norm.len().saturating_sub(1))];
            let spans: &[(usize, usize)] = if cfg.char_cross && !self.spans.is_empty() {
                &whole
            } else {
                &self.spans
            };
            for &(s, e) in spans {
                // The padded token is norm[s-1..e+1]; both neighbours are spaces.
                let (ps, pe) = (s - 1, e + 1);
                let padded = &self.norm[ps..pe];
                self.offsets.clear();
                self.offsets.extend(padded.char_indices().map(|(i, _)| i));
                let n_chars = self.offsets.len();
                self.offsets.push(padded.len());
                let bytes = padded.as_bytes();
                for n in lo..=hi.min(n_chars) {
                    for i in 0..=(n_chars - n) {
                        let gram = &bytes[self.offsets[i]..self.offsets[i + n]];
                        self.hashes.push(hash_tagged(TAG_CHAR, gram) | CHAR_GROUP);
                    }
                }
            }
        }
        self.hashes.sort_unstable();
    }
}

/// Iterate over `(hash, term frequency)` pairs of sorted hashes.
pub(crate) fn runs(sorted: &[u64]) -> impl Iterator<Item = (u64, u32)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let h = *sorted.get(i)?;
        let mut j = i + 1;
        while j < sorted.len() && sorted[j] == h {
            j += 1;
        }
        let tf = u32::try_from(j - i).unwrap_or(u32::MAX);
        i = j;
        Some((h, tf))
    })
}

/// Sublinear TF × IDF, each group L2-normalised and weighted, in place.
///
/// `feats` holds `(feature index, idf)` on entry with `tfs` the term frequencies, and holds
/// `(feature index, value)` on return. `is_char` says which group an entry belongs to.
pub(crate) fn weight_and_normalise(
    feats: &mut [(u32, f32)],
    tfs: &[u32],
    is_char: &[bool],
    cfg: &FeatureConfig,
) {
    let (mut ssw, mut ssc) = (0f32, 0f32);
    for ((f, &tf), &c) in feats.iter_mut().zip(tfs).zip(is_char) {
        #[allow(clippy::cast_precision_loss)]
        let v = (1.0 + (tf as f32).ln()) * f.1;
        f.1 = v;
        if c {
            ssc += v * v;
        } else {
            ssw += v * v;
        }
    }
    let sw = if ssw > 0.0 {
        cfg.word_weight / ssw.sqrt()
    } else {
        0.0
    };
    let sc = if ssc > 0.0 {
        cfg.char_weight / ssc.sqrt()
    } else {
        0.0
    };
    for (f, &c) in feats.iter_mut().zip(is_char) {
        f.1 *= if c { sc } else { sw };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_emits_ngrams() {
        let mut s = Scratch::default();
        let cfg = FeatureConfig {
            char_min: 3,
            char_max: 3,
            ..FeatureConfig::default()
        };
        s.featurize("Hasn't  ARRIVED, 12!", &cfg);
        assert_eq!(s.norm, " hasnt arrived 00 ");
        assert_eq!(s.spans.len(), 3);
        let words = s.hashes.iter().filter(|h| *h & CHAR_GROUP == 0).count();
        // 3 unigrams + 2 bigrams + 2 edge bigrams.
        assert_eq!(words, 7);
        // " hasnt " has 7 chars → 5 trigrams; " arrived " 9 → 7; " 00 " 4 → 2.
        let chars = s.hashes.len() - words;
        assert_eq!(chars, 14);
    }

    #[test]
    fn runs_counts_repeats() {
        let v = [1u64, 1, 2, 5, 5, 5];
        let r: Vec<_> = runs(&v).collect();
        assert_eq!(r, vec![(1, 2), (2, 1), (5, 3)]);
    }
}
