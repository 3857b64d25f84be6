//! Operator controls moved: the mode to [`crate::mode`] and [`crate::ops::charters`],
//! rerouting to [`crate::ops::events`], the timeline to [`crate::timeline`]. The old paths stay valid for the worker and the UI's pages.

// re-export for the merge
pub use crate::mode::{effective_mode, mode_of};
// re-export for the merge
pub use crate::timeline::{ContextView, DraftView, TimelineRun, timeline_data};
