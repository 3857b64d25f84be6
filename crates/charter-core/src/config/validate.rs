//! The validation entry points under their historical path: [`load_project`] and the value
//! parsers other crates use. The checks themselves live with each component
//! (`config/components/`), the shared helpers in `config/diag.rs` and `config/values.rs`.

pub use super::components::actions::DRAFT_APPROVAL_EXPIRES;
pub use super::diag::{Diagnostic, Diagnostics};
pub use super::load::{CHARTERS_DIR, PROJECT_FILE, load_project};
pub use super::values::{parse_duration, parse_rate, parse_secret, parse_size};
