//! A charter's mode (shadow or live): the file's `mode:` and the operator's stored
//! override, combined (pure functions, plus the one store read of [`effective_mode`]).
//!
//! The `mode:` in a charter file is the default. An admin may override it; the override is
//! stored together with the mode the file declared at that moment, and applies only while
//! the file still declares that mode (see [`charter_store::effective_mode`]): an edit of
//! the file is the newer decision and wins.

use charter_core::config::{Charter, Mode};
use charter_store::{ModeOverride, Store, StoreError};
use serde::Serialize;

/// `shadow` or `live` as a [`Mode`].
pub fn parse_mode(s: &str) -> Option<Mode> {
    match s {
        "shadow" => Some(Mode::Shadow),
        "live" => Some(Mode::Live),
        _ => None,
    }
}

/// The mode `charter` runs in now: the stored operator override when it still applies,
/// else the file's `mode:`.
pub async fn effective_mode<S: Store>(store: &S, charter: &Charter) -> Result<Mode, StoreError> {
    let stored = store.mode_override(&charter.name).await?;
    Ok(mode_of(charter, stored.as_ref()))
}

/// The mode `charter` runs in given its stored override (`None`: there is none).
pub fn mode_of(charter: &Charter, stored: Option<&ModeOverride>) -> Mode {
    let file = charter.mode.as_str();
    parse_mode(charter_store::effective_mode(file, stored)).unwrap_or(charter.mode)
}

/// A charter's mode as the API shows it: the effective mode, the file's, and the override
/// (present only while it applies).
#[derive(Debug, Clone, Serialize)]
pub struct ModeView {
    pub charter: String,
    pub file_mode: String,
    pub mode: String,
    #[serde(rename = "override")]
    pub applied: Option<ModeOverride>,
}

impl ModeView {
    /// The view of `charter` given its stored override.
    pub fn of(charter: &Charter, stored: Option<&ModeOverride>) -> ModeView {
        let file = charter.mode.as_str();
        ModeView {
            charter: charter.name.clone(),
            file_mode: file.to_string(),
            mode: charter_store::effective_mode(file, stored).to_string(),
            applied: stored.filter(|o| o.base == file).cloned(),
        }
    }
}
