//! Charter's decision layer.
//!
//! * [`examples`]: labelled examples (CSV / JSONL) that train and evaluate classifiers.
//! * [`embedded`]: the embedded classifier — a pure-Rust, calibrated linear text model
//!   trained in seconds from a charter's examples (see [`EmbeddedModel`]).
//! * [`llm`]: LLM providers (OpenAI-compatible, Ollama, Anthropic) and the LLM stage: schema
//!   built from the charter, validation with one repair, retries, fallbacks, cache, limits.

pub mod embedded;
pub mod examples;
pub mod llm;

pub use embedded::{
    Analysis, Confusion, EmbeddedModel, EvalReport, FeatureConfig, LabelReport, Learner,
    ModelError, Prediction, ThresholdRow, TrainError, TrainOptions, evaluate, evaluate_predictions,
    examples_digest,
};
pub use examples::{Example, ExampleFormat, ExamplesError, parse_examples};
