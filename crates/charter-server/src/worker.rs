//! The worker's former home, kept so that `crate::worker::…` paths stay valid while other
//! modules move to [`crate::pipeline`].

pub use crate::pipeline::run;
// re-export for the merge
pub(crate) use crate::pipeline::text::decision_text;
