//! Where polled and scheduled event sources left off: [`SourceStateStore`].

use std::future::Future;

use charter_core::model::UnixMillis;

use crate::Result;

/// Where event sources beyond webhooks left off: a polled API's cursor, a schedule's last
/// fire time. Keyed by charter and source name (`poll`, `schedule`).
pub trait SourceStateStore: Send + Sync + 'static {
    /// A held "only this node runs this source now" lease (see
    /// [`SourceStateStore::try_lock_source`]).
    type SourceLock: Send + 'static;

    /// Try to become the node that runs `source` of `charter` now. SQLite (one node)
    /// always succeeds; PostgreSQL takes a cluster-wide job lock, held until the value is
    /// dropped.
    fn try_lock_source(
        &self,
        charter: &str,
        source: &str,
    ) -> impl Future<Output = Result<Option<Self::SourceLock>>> + Send;

    /// The stored cursor, or `None` when the source never stored one.
    fn get_cursor(
        &self,
        charter: &str,
        source: &str,
    ) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Store the cursor (replacing any). Durable when it returns.
    fn put_cursor(
        &self,
        charter: &str,
        source: &str,
        cursor: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<()>> + Send;
}
