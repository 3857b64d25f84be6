//! Operator controls beyond pausing: [`OperatorStore`].

use std::future::Future;

use charter_core::model::UnixMillis;
use uuid::Uuid;

use crate::{ModeOverride, Result};

/// Operator controls beyond pausing: a charter's mode override, and taking one event out of
/// automatic processing (the manual queue).
pub trait OperatorStore: Send + Sync + 'static {
    /// Store (or replace) a charter's mode override (durable on return).
    fn set_mode(&self, mode: ModeOverride) -> impl Future<Output = Result<()>> + Send;

    /// Remove a charter's mode override; returns whether there was one.
    fn clear_mode(
        &self,
        charter: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<bool>> + Send;

    fn mode_override(
        &self,
        charter: &str,
    ) -> impl Future<Output = Result<Option<ModeOverride>>> + Send;

    /// Every stored mode override, by charter name.
    fn mode_overrides(&self) -> impl Future<Output = Result<Vec<ModeOverride>>> + Send;

    /// Take an event out of automatic processing: set it to `waiting` (which no claim picks
    /// up) unless it is in processing. Returns false for an unknown event or one in
    /// processing. A later requeue (replay, or a human's decision) puts it back.
    fn hold_event(&self, id: Uuid, now: UnixMillis) -> impl Future<Output = Result<bool>> + Send;
}
