//! Embedded classifier models: where they live, when they are (re)trained, how they are
//! loaded. A charter's model is `models/<charter>.model` in the project folder. It records
//! the digest of the examples it was trained on; `serve` retrains (and rewrites the file)
//! when the examples changed or the file is missing, and refuses to start when the
//! examples are unusable.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use charter_core::config::{Charter, EmbeddedStage, ProjectSource, Stage};
use charter_decide::{EmbeddedModel, ExampleFormat, TrainOptions, parse_examples};

/// Why a model could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("charter `{charter}`: examples file {file}: {message}")]
    Examples {
        charter: String,
        file: String,
        message: String,
    },
    #[error("charter `{charter}`: cannot train the embedded model: {message}")]
    Train { charter: String, message: String },
    #[error("charter `{charter}`: cannot write {path}: {message}")]
    Write {
        charter: String,
        path: String,
        message: String,
    },
}

/// The embedded stage of a charter, if it has one.
pub fn embedded_stage(charter: &Charter) -> Option<&EmbeddedStage> {
    charter.decide.as_ref().and_then(|d| {
        d.stages.iter().find_map(|s| match s {
            Stage::Embedded(e) => Some(e),
            _ => None,
        })
    })
}

/// Path of a charter's model file.
pub fn model_path(root: &Path, charter: &str) -> PathBuf {
    root.join("models").join(format!("{charter}.model"))
}

/// What `train` did.
pub struct Trained {
    pub model: EmbeddedModel,
    pub examples: usize,
    pub took: Duration,
    pub path: PathBuf,
}

/// Train a charter's model from its examples and write it.
pub fn train(
    root: &Path,
    source: &ProjectSource,
    charter: &Charter,
    stage: &EmbeddedStage,
    seed: u64,
) -> Result<Trained, ModelError> {
    let examples = read_examples(source, charter, stage)?;
    let started = Instant::now();
    let opts = TrainOptions {
        seed,
        ..TrainOptions::default()
    };
    let model = EmbeddedModel::train(&examples, &opts).map_err(|e| ModelError::Train {
        charter: charter.name.clone(),
        message: e.to_string(),
    })?;
    let took = started.elapsed();
    let path = model_path(root, &charter.name);
    let write_err = |e: std::io::Error| ModelError::Write {
        charter: charter.name.clone(),
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    // Write then rename, so a crash never leaves a half-written model behind.
    let tmp = path.with_extension("model.tmp");
    std::fs::write(&tmp, model.to_bytes()).map_err(write_err)?;
    std::fs::rename(&tmp, &path).map_err(write_err)?;
    Ok(Trained {
        model,
        examples: examples.len(),
        took,
        path,
    })
}

fn read_examples(
    source: &ProjectSource,
    charter: &Charter,
    stage: &EmbeddedStage,
) -> Result<Vec<charter_decide::Example>, ModelError> {
    let err = |message: String| ModelError::Examples {
        charter: charter.name.clone(),
        file: stage.examples.clone(),
        message,
    };
    let text = source
        .files
        .get(&stage.examples)
        .ok_or_else(|| err("not found in the project".into()))?;
    let format = ExampleFormat::from_path(&stage.examples)
        .ok_or_else(|| err("unknown format: use .csv (text,label) or .jsonl".into()))?;
    let examples = parse_examples(text, format).map_err(|e| err(e.to_string()))?;
    if let Some(d) = &charter.decide {
        let unknown: Vec<&str> = examples
            .iter()
            .map(|e| e.label.as_str())
            .filter(|l| !d.labels.iter().any(|x| x == l))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !unknown.is_empty() {
            return Err(err(format!(
                "labels not declared in the charter's `decide.labels`: {}",
                unknown.join(", ")
            )));
        }
    }
    Ok(examples)
}

/// Load the charter's model, retraining when the file is missing, unreadable, or was
/// trained on other examples than the current ones.
pub fn load_or_train(
    root: &Path,
    source: &ProjectSource,
    charter: &Charter,
    stage: &EmbeddedStage,
) -> Result<EmbeddedModel, ModelError> {
    let examples = read_examples(source, charter, stage)?;
    let digest = charter_decide::examples_digest(&examples);
    let path = model_path(root, &charter.name);
    if let Ok(bytes) = std::fs::read(&path) {
        match EmbeddedModel::from_bytes(&bytes) {
            Ok(m) if m.examples_digest() == digest => return Ok(m),
            Ok(_) => {
                tracing::warn!(charter = %charter.name, "examples changed since the model was trained; retraining")
            }
            Err(e) => {
                tracing::warn!(charter = %charter.name, error = %e, "model file unreadable; retraining")
            }
        }
    } else {
        tracing::info!(charter = %charter.name, "no trained model yet; training");
    }
    let t = train(root, source, charter, stage, TrainOptions::default().seed)?;
    tracing::info!(charter = %charter.name, examples = t.examples, took = ?t.took, path = %t.path.display(), "embedded model trained");
    Ok(t.model)
}
