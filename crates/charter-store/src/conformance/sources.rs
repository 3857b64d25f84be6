//! Checks of [`crate::SourceStateStore`].

use std::time::Duration;

use super::{CheckResult, Ctx, charter, now};
use crate::Store;

/// Source cursors: absent until stored, replaced by each put, kept per (charter, source),
/// and a source lock can be taken (and taken again once released).
pub async fn check_source_state<S: Store>(store: &S) -> CheckResult {
    let c = charter("sources");
    let other = charter("sources-other");
    let got = store
        .get_cursor(&c, "poll")
        .await
        .ctx("get_cursor (none)")?;
    ensure!(
        got.is_none(),
        "a cursor never stored reads as {got:?}, expected none"
    );
    store
        .put_cursor(&c, "poll", "2026-01-01T00:00:00Z", now())
        .await
        .ctx("put_cursor (first)")?;
    store
        .put_cursor(&c, "schedule", "1767225600000", now())
        .await
        .ctx("put_cursor (schedule)")?;
    store
        .put_cursor(&other, "poll", "other", now())
        .await
        .ctx("put_cursor (other charter)")?;
    store
        .put_cursor(&c, "poll", "page-2 ünïcode", now())
        .await
        .ctx("put_cursor (replace)")?;
    let got = store.get_cursor(&c, "poll").await.ctx("get_cursor")?;
    ensure!(
        got.as_deref() == Some("page-2 ünïcode"),
        "after replacing, the cursor reads {got:?}, expected the last one stored"
    );
    let got = store
        .get_cursor(&c, "schedule")
        .await
        .ctx("get_cursor (schedule)")?;
    ensure!(
        got.as_deref() == Some("1767225600000"),
        "the schedule cursor reads {got:?}; sources of one charter must be kept apart"
    );
    let got = store
        .get_cursor(&other, "poll")
        .await
        .ctx("get_cursor (other)")?;
    ensure!(
        got.as_deref() == Some("other"),
        "another charter's cursor reads {got:?}; charters must be kept apart"
    );

    let lock = store
        .try_lock_source(&c, "poll")
        .await
        .ctx("try_lock_source")?;
    ensure!(lock.is_some(), "the first lock of a source was refused");
    let second = store
        .try_lock_source(&c, "schedule")
        .await
        .ctx("try_lock_source (another source)")?;
    ensure!(
        second.is_some(),
        "a lock on another source was refused while the first is held"
    );
    drop(lock);
    drop(second);
    // A dropped lock is released by the server (PostgreSQL: the session closes); allow it
    // a moment.
    let mut again = None;
    for _ in 0..50 {
        again = store
            .try_lock_source(&c, "poll")
            .await
            .ctx("try_lock_source (again)")?;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(
        again.is_some(),
        "a released source lock could not be taken again"
    );
    Ok(())
}
