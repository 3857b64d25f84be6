//! Per-charter operator state: pause ([`CharterStateStore`]) and the mode override
//! ([`ModeOverride`], [`effective_mode`]).

use std::future::Future;

use charter_core::model::UnixMillis;

use crate::Result;

/// Per-charter operator state: paused or not.
pub trait CharterStateStore: Send + Sync + 'static {
    fn set_paused(
        &self,
        charter: &str,
        paused: bool,
        now: UnixMillis,
    ) -> impl Future<Output = Result<()>> + Send;

    fn is_paused(&self, charter: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Names of paused charters.
    fn paused(&self) -> impl Future<Output = Result<Vec<String>>> + Send;
}

/// An operator's mode for one charter, set by promoting it to live or demoting it to
/// shadow. It applies only while the charter file still declares `base`: once someone edits
/// `mode:` in the file, the file is the newer decision and wins (see [`effective_mode`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModeOverride {
    pub charter: String,
    /// The mode the operator set: `shadow` or `live`.
    pub mode: String,
    /// The mode the charter file declared when the override was set.
    pub base: String,
    /// Who set it (token name).
    pub by: String,
    pub at: UnixMillis,
}

/// The mode a charter runs in: the operator's override when there is one and the file
/// still declares the mode it was set over, otherwise the file's mode.
pub fn effective_mode<'a>(file_mode: &'a str, stored: Option<&'a ModeOverride>) -> &'a str {
    match stored {
        Some(o) if o.base == file_mode => &o.mode,
        _ => file_mode,
    }
}
