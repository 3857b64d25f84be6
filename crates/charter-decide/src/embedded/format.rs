//! The model file format (little-endian throughout):
//!
//! ```text
//! magic            8 bytes  "CHRTREMB"
//! version          u32      1
//! feature config   u8 word_ngrams, u8 char_min, u8 char_max, u8 flags (1 = fold digits, 2 = char n-grams across words,
//!                  4 = edge bigrams), u8 skip_window,
//!                  f32 word_weight, f32 char_weight
//! temperature      f32
//! labels           u32 count, then per label: u32 byte length + UTF-8
//! examples digest  u32 byte length + UTF-8
//! features         u32 count F
//! hashes           F × u64 (strictly increasing)
//! idf              F × f32
//! bias             C × f32 (C = label count)
//! weights          F × C × f32, feature-major
//! checksum         u64 over every preceding byte
//! ```

use thiserror::Error;

use super::EmbeddedModel;
use super::features::{FeatureConfig, fnv1a, mix64};
use super::train::Linear;

const MAGIC: &[u8; 8] = b"CHRTREMB";
/// The current format version.
pub const FORMAT_VERSION: u32 = 1;

/// Why bytes could not be loaded as a model.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    /// The bytes do not start with the model magic: not a Charter embedded model.
    #[error("not a Charter embedded model (bad magic bytes)")]
    BadMagic,
    /// The file was written by an incompatible version.
    #[error(
        "unsupported model format version {found} (this build reads version {expected}); retrain with `charter train`"
    )]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// The bytes end before the model does.
    #[error("model file is truncated (needed {needed} more bytes while reading {what})")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// The checksum does not match: the file was altered or damaged.
    #[error("model file is corrupt (checksum mismatch)")]
    ChecksumMismatch,
    /// The content is structurally invalid.
    #[error("model file is invalid: {0}")]
    Invalid(String),
}

fn checksum(bytes: &[u8]) -> u64 {
    mix64(fnv1a(0x6a09_e667_f3bc_c908, bytes))
}

fn put_u32(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

impl EmbeddedModel {
    /// Serialise the model (versioned binary format with magic and checksum).
    pub fn to_bytes(&self) -> Vec<u8> {
        let f = self.hashes.len();
        let c = self.labels.len();
        let mut out = Vec::with_capacity(64 + f * (12 + 4 * c));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let cfg = &self.config;
        out.extend_from_slice(&[
            cfg.word_ngrams,
            cfg.char_min,
            cfg.char_max,
            u8::from(cfg.fold_digits)
                | (u8::from(cfg.char_cross) << 1)
                | (u8::from(cfg.edge_bigrams) << 2),
            cfg.skip_window,
        ]);
        out.extend_from_slice(&cfg.word_weight.to_le_bytes());
        out.extend_from_slice(&cfg.char_weight.to_le_bytes());
        out.extend_from_slice(&self.temperature.to_le_bytes());
        put_u32(&mut out, c);
        for l in &self.labels {
            put_str(&mut out, l);
        }
        put_str(&mut out, &self.digest);
        put_u32(&mut out, f);
        for h in &self.hashes {
            out.extend_from_slice(&h.to_le_bytes());
        }
        for v in self
            .idf
            .iter()
            .chain(&self.linear.bias)
            .chain(&self.linear.weights)
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Load a model written by [`to_bytes`](Self::to_bytes). Rejects other files, other
    /// versions, truncated and altered files with a clear error.
    pub fn from_bytes(bytes: &[u8]) -> Result<EmbeddedModel, ModelError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(ModelError::BadMagic);
        }
        let mut r = Reader {
            bytes,
            pos: MAGIC.len(),
        };
        let version = r.u32("version")?;
        if version != FORMAT_VERSION {
            return Err(ModelError::UnsupportedVersion {
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        // Verify the checksum before trusting any length field.
        if bytes.len() < r.pos + 8 {
            return Err(ModelError::Truncated {
                what: "header",
                needed: r.pos + 8 - bytes.len(),
            });
        }
        let body_end = bytes.len() - 8;
        let mut stored = [0u8; 8];
        stored.copy_from_slice(&bytes[body_end..]);
        if checksum(&bytes[..body_end]) != u64::from_le_bytes(stored) {
            // Distinguish a cut-off file from a damaged one where we can: a truncated file
            // almost never ends in a valid checksum, so report what a parse finds first.
            let mut probe = Reader { bytes, pos: r.pos };
            match probe.body() {
                Err(e @ ModelError::Truncated { .. }) => return Err(e),
                Ok(_) if bytes.len() - probe.pos < 8 => {
                    return Err(ModelError::Truncated {
                        what: "checksum",
                        needed: 8 - (bytes.len() - probe.pos),
                    });
                }
                _ => {}
            }
            return Err(ModelError::ChecksumMismatch);
        }
        let mut body = Reader {
            bytes: &bytes[..body_end],
            pos: r.pos,
        };
        let parts = body.body()?;
        if body.pos != body_end {
            return Err(ModelError::Invalid(format!(
                "{} unexpected trailing bytes",
                body_end - body.pos
            )));
        }
        Ok(parts)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], ModelError> {
        let end = self.pos.saturating_add(n);
        if end > self.bytes.len() {
            return Err(ModelError::Truncated {
                what,
                needed: end.saturating_sub(self.bytes.len()),
            });
        }
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ModelError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32(&mut self, what: &'static str) -> Result<f32, ModelError> {
        let b = self.take(4, what)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &'static str) -> Result<String, ModelError> {
        let n = self.u32(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| ModelError::Invalid(format!("{what} is not valid UTF-8")))
    }

    fn f32s(&mut self, n: usize, what: &'static str) -> Result<Vec<f32>, ModelError> {
        let len = n
            .checked_mul(4)
            .ok_or_else(|| ModelError::Invalid(format!("{what} count overflows")))?;
        let b = self.take(len, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Everything after the version, up to (not including) the checksum.
    fn body(&mut self) -> Result<EmbeddedModel, ModelError> {
        let c = self.take(5, "feature config")?;
        let config = FeatureConfig {
            word_ngrams: c[0],
            char_min: c[1],
            char_max: c[2],
            fold_digits: c[3] & 1 != 0,
            char_cross: c[3] & 2 != 0,
            edge_bigrams: c[3] & 4 != 0,
            skip_window: c[4],
            word_weight: self.f32("feature config")?,
            char_weight: self.f32("feature config")?,
        };
        if config.word_ngrams > 2 || config.char_max > 16 {
            return Err(ModelError::Invalid("feature config out of range".into()));
        }
        let temperature = self.f32("temperature")?;
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(ModelError::Invalid(format!(
                "temperature {temperature} is not positive"
            )));
        }
        let n_labels = self.u32("label count")? as usize;
        if n_labels < 2 {
            return Err(ModelError::Invalid(format!("{n_labels} labels")));
        }
        let mut labels = Vec::with_capacity(n_labels.min(65_536));
        for _ in 0..n_labels {
            labels.push(self.string("label")?);
        }
        let digest = self.string("examples digest")?;
        let f = self.u32("feature count")? as usize;
        let hb = self.take(
            f.checked_mul(8)
                .ok_or_else(|| ModelError::Invalid("feature count overflows".into()))?,
            "feature hashes",
        )?;
        let hashes: Vec<u64> = hb
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        if hashes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ModelError::Invalid(
                "feature hashes are not strictly increasing".into(),
            ));
        }
        let idf = self.f32s(f, "idf")?;
        let bias = self.f32s(n_labels, "bias")?;
        let weights = self.f32s(
            f.checked_mul(n_labels)
                .ok_or_else(|| ModelError::Invalid("weight count overflows".into()))?,
            "weights",
        )?;
        let linear = Linear {
            classes: n_labels,
            weights,
            bias,
        };
        Ok(EmbeddedModel::assemble(
            labels,
            digest,
            config,
            temperature,
            hashes,
            idf,
            linear,
        ))
    }
}
