//! Checks of [`crate::OperatorStore`]: mode overrides and the manual queue.

use std::time::Duration;

use charter_core::model::{EventStatus, UnixMillis};
use uuid::Uuid;

use super::{CheckResult, Ctx, charter, event, now, stored};
use crate::{Requeue, Store};

/// Mode overrides (set, replace, list, clear; independent of pause), holding an event for a
/// human (not while processing; a held event is not claimed until requeued), and requeueing
/// the events received in a time range.
pub async fn check_operator<S: Store>(store: &S) -> CheckResult {
    let c = charter("operator");
    let t = now();
    mode_overrides(store, &c, t).await?;
    holding(store, &c, t).await?;
    requeue_by_time_range(store, t).await
}

/// Mode overrides: set, replace, list, clear; independent of pause.
async fn mode_overrides<S: Store>(store: &S, c: &str, t: UnixMillis) -> CheckResult {
    ensure!(
        store.mode_override(c).await.ctx("mode_override")?.is_none(),
        "an unknown charter has a mode override"
    );
    ensure!(
        !store.clear_mode(c, t).await.ctx("clear_mode")?,
        "clearing a mode that was never set reported a change"
    );
    store.set_paused(c, true, t).await.ctx("set_paused")?;
    let live = crate::ModeOverride {
        charter: c.to_string(),
        mode: "live".into(),
        base: "shadow".into(),
        by: "ops-admin".into(),
        at: t,
    };
    store.set_mode(live.clone()).await.ctx("set_mode")?;
    let got = store.mode_override(c).await.ctx("mode_override")?;
    ensure!(got.as_ref() == Some(&live), "mode read back as {got:?}");
    ensure!(
        store.is_paused(c).await.ctx("is_paused")?,
        "setting the mode resumed a paused charter"
    );
    store.set_paused(c, false, t + 1).await.ctx("set_paused")?;
    let got = store.mode_override(c).await.ctx("mode_override")?;
    ensure!(
        got.as_ref() == Some(&live),
        "resume changed the mode: {got:?}"
    );
    let shadow = crate::ModeOverride {
        mode: "shadow".into(),
        base: "live".into(),
        at: t + 2,
        ..live.clone()
    };
    store
        .set_mode(shadow.clone())
        .await
        .ctx("set_mode (replace)")?;
    let all = store.mode_overrides().await.ctx("mode_overrides")?;
    let mine: Vec<_> = all.iter().filter(|m| m.charter == c).collect();
    ensure!(
        mine == vec![&shadow],
        "mode_overrides lists {mine:?} for the charter"
    );
    ensure!(
        store.clear_mode(c, t + 3).await.ctx("clear_mode")?,
        "clearing a set mode reported no change"
    );
    ensure!(
        store.mode_override(c).await.ctx("mode_override")?.is_none(),
        "the mode override survived clear_mode"
    );
    ensure!(
        !store
            .mode_overrides()
            .await
            .ctx("mode_overrides")?
            .iter()
            .any(|m| m.charter == c),
        "mode_overrides still lists a cleared charter"
    );

    Ok(())
}

/// Holding: a pending event goes to waiting and is not claimed; one in processing is left
/// alone; a requeue brings a held event back.
async fn holding<S: Store>(store: &S, c: &str, t: UnixMillis) -> CheckResult {
    let held = stored(store, event(c, None, t)).await?;
    let busy = stored(store, event(c, None, t)).await?;
    let lease = Duration::from_secs(60);
    ensure!(
        store.hold_event(held, t + 4).await.ctx("hold_event")?,
        "holding a pending event reported no change"
    );
    let claimed = store
        .claim(c, "w", 10, 10, lease, t + 5)
        .await
        .ctx("claim")?;
    ensure!(
        claimed.len() == 1 && claimed[0].event.id == busy,
        "claimed {:?}, expected only the event not held",
        claimed.iter().map(|c| c.event.id).collect::<Vec<_>>()
    );
    ensure!(
        !store.hold_event(busy, t + 6).await.ctx("hold_event")?,
        "an event in processing was held"
    );
    ensure!(
        !store
            .hold_event(Uuid::now_v7(), t + 6)
            .await
            .ctx("hold_event")?,
        "holding an unknown event reported a change"
    );
    let rec = store
        .get_event(held)
        .await
        .ctx("get_event")?
        .ok_or("held event vanished")?;
    ensure!(
        rec.status == EventStatus::Waiting,
        "a held event is {:?}",
        rec.status
    );
    let back = store
        .requeue(Requeue::Event(held), t + 7)
        .await
        .ctx("requeue")?;
    ensure!(
        back == vec![held],
        "requeue of a held event returned {back:?}"
    );

    Ok(())
}

/// A time range: received in [since, until), any status but processing, this charter.
async fn requeue_by_time_range<S: Store>(store: &S, t: UnixMillis) -> CheckResult {
    let lease = Duration::from_secs(60);
    let r = charter("operator-range");
    let other = charter("operator-range-other");
    let base = t - 100_000;
    let before = stored(store, event(&r, None, base)).await?;
    let first = stored(store, event(&r, None, base + 10)).await?;
    let second = stored(store, event(&r, None, base + 20)).await?;
    let at_end = stored(store, event(&r, None, base + 30)).await?;
    let elsewhere = stored(store, event(&other, None, base + 10)).await?;
    let got = store.claim(&r, "w", 10, 10, lease, t).await.ctx("claim")?;
    ensure!(got.len() == 4, "claimed {} of 4", got.len());
    ensure!(
        store
            .release(first, "w", EventStatus::Done, t)
            .await
            .ctx("release")?,
        "release failed"
    );
    // `second` stays in processing.
    let ids = store
        .requeue(
            Requeue::Received {
                charter: Some(r.clone()),
                since: Some(base + 5),
                until: Some(base + 30),
            },
            t + 8,
        )
        .await
        .ctx("requeue range")?;
    ensure!(
        ids == vec![first],
        "range requeue returned {ids:?}, expected only {first} (not {before}, the one in processing {second}, the one at `until` {at_end}, or another charter's {elsewhere})"
    );
    let open = store
        .requeue(
            Requeue::Received {
                charter: Some(other.clone()),
                since: None,
                until: None,
            },
            t + 9,
        )
        .await
        .ctx("requeue open range")?;
    ensure!(
        open == vec![elsewhere],
        "an open range of the other charter returned {open:?}"
    );
    Ok(())
}
