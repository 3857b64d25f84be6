//! The mode a charter runs in (pure): the file's `mode:`, unless an operator's stored
//! promotion or demotion still applies (it was set over the mode the file still says).

use charter_core::config::{Charter, Mode};
use charter_store::ModeOverride;

/// A stored mode name as a [`Mode`].
pub fn parse_mode(s: &str) -> Option<Mode> {
    match s {
        "shadow" => Some(Mode::Shadow),
        "live" => Some(Mode::Live),
        _ => None,
    }
}

/// The mode `charter` runs in given its stored override (`None`: there is none).
pub fn mode_of(charter: &Charter, stored: Option<&ModeOverride>) -> Mode {
    let file = charter.mode.as_str();
    parse_mode(charter_store::effective_mode(file, stored)).unwrap_or(charter.mode)
}
