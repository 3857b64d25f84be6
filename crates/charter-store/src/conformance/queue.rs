//! Checks of [`crate::QueueStore`]: claims under the charter limit, pause, leases, requeues,
//! what a claim reads for its run, pending counts.

use std::collections::BTreeMap;
use std::time::Duration;

use charter_core::model::EventStatus;
use uuid::Uuid;

use super::{CheckResult, Ctx, charter, event, now, stored};
use crate::{HumanDecision, ModeOverride, NewEscalation, Requeue, Store};

/// Claims take the oldest events first, count attempts, and never exceed the charter limit
/// across workers.
pub async fn check_claim_limit<S: Store>(store: &S) -> CheckResult {
    let c = charter("claim");
    let t = now();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(stored(store, event(&c, None, t)).await?);
    }
    let lease = Duration::from_secs(60);

    let got = store.claim(&c, "w1", 10, 2, lease, t).await.ctx("claim")?;
    let got_ids: Vec<Uuid> = got.iter().map(|c| c.event.id).collect();
    ensure!(
        got_ids == ids[..2],
        "first claim took {got_ids:?}, want the two oldest {:?}",
        &ids[..2]
    );
    for claimed in &got {
        ensure!(
            claimed.attempt == 1,
            "first claim has attempt {}",
            claimed.attempt
        );
        ensure!(
            claimed.lease_until == t + 60_000,
            "lease_until {} want {}",
            claimed.lease_until,
            t + 60_000
        );
        ensure!(
            claimed.event.charter == c,
            "claimed another charter's event"
        );
    }
    let rec = store
        .get_event(ids[0])
        .await
        .ctx("get_event")?
        .ok_or("claimed event vanished")?;
    ensure!(
        rec.status == EventStatus::Processing && rec.attempts == 1,
        "claimed event is {:?} with {} attempts",
        rec.status,
        rec.attempts
    );

    // The limit is per charter, whoever asks.
    for worker in ["w1", "w2"] {
        let more = store
            .claim(&c, worker, 10, 2, lease, t + 1)
            .await
            .ctx("claim")?;
        ensure!(
            more.is_empty(),
            "{worker} claimed {} events beyond the charter limit",
            more.len()
        );
    }
    // A higher limit leaves room for exactly the difference; `max` caps it too.
    let more = store
        .claim(&c, "w2", 1, 4, lease, t + 2)
        .await
        .ctx("claim")?;
    ensure!(
        more.len() == 1 && more[0].event.id == ids[2],
        "claim with max 1 took {:?}",
        more.iter().map(|c| c.event.id).collect::<Vec<_>>()
    );

    // Releasing one frees one slot under limit 3.
    ensure!(
        store
            .release(ids[0], "w1", EventStatus::Done, t + 3)
            .await
            .ctx("release")?,
        "release by the owner returned false"
    );
    let more = store
        .claim(&c, "w2", 10, 3, lease, t + 4)
        .await
        .ctx("claim")?;
    ensure!(
        more.len() == 1 && more[0].event.id == ids[3],
        "after release, claim took {:?}",
        more.iter().map(|c| c.event.id).collect::<Vec<_>>()
    );
    // Another charter's queue is untouched by all this.
    let other = charter("claim-other");
    let ev = stored(store, event(&other, None, t)).await?;
    let o = store
        .claim(&other, "w3", 10, 1, lease, t + 5)
        .await
        .ctx("claim")?;
    ensure!(
        o.len() == 1 && o[0].event.id == ev,
        "the other charter's claim took {} events",
        o.len()
    );
    Ok(())
}

/// A paused charter keeps storing but claims nothing until resumed.
pub async fn check_pause<S: Store>(store: &S) -> CheckResult {
    let c = charter("pause");
    let t = now();
    ensure!(
        !store.is_paused(&c).await.ctx("is_paused")?,
        "an unknown charter reports paused"
    );
    store.set_paused(&c, true, t).await.ctx("set_paused")?;
    ensure!(
        store.is_paused(&c).await.ctx("is_paused")?,
        "pause did not stick"
    );
    ensure!(
        store.paused().await.ctx("paused")?.contains(&c),
        "paused() misses the paused charter"
    );
    let id = stored(store, event(&c, None, t)).await?;
    let got = store
        .claim(&c, "w", 10, 10, Duration::from_secs(30), t)
        .await
        .ctx("claim")?;
    ensure!(
        got.is_empty(),
        "claimed {} events of a paused charter",
        got.len()
    );

    store.set_paused(&c, false, t + 1).await.ctx("set_paused")?;
    ensure!(
        !store.is_paused(&c).await.ctx("is_paused")?,
        "resume did not stick"
    );
    ensure!(
        !store.paused().await.ctx("paused")?.contains(&c),
        "paused() still lists the resumed charter"
    );
    let got = store
        .claim(&c, "w", 10, 10, Duration::from_secs(30), t + 2)
        .await
        .ctx("claim")?;
    ensure!(
        got.len() == 1 && got[0].event.id == id,
        "after resume claimed {} events",
        got.len()
    );
    Ok(())
}

/// An expired lease is reclaimed by another worker with the attempt count incremented; the
/// old owner can then neither renew nor release.
pub async fn check_lease_expiry<S: Store>(store: &S) -> CheckResult {
    let c = charter("lease");
    let t = now();
    let id = stored(store, event(&c, None, t)).await?;
    let lease = Duration::from_secs(10);

    let first = store.claim(&c, "w1", 1, 1, lease, t).await.ctx("claim")?;
    ensure!(first.len() == 1, "w1 claimed {} events", first.len());
    let early = store
        .claim(&c, "w2", 1, 5, lease, t + 5_000)
        .await
        .ctx("claim")?;
    ensure!(early.is_empty(), "w2 took an event under a live lease");

    // The owner may renew while it holds the lease.
    ensure!(
        store.renew(id, "w1", t + 15_000).await.ctx("renew")?,
        "owner's renew returned false"
    );
    ensure!(
        !store.renew(id, "w2", t + 99_000).await.ctx("renew")?,
        "a non-owner renewed the lease"
    );
    let still = store
        .claim(&c, "w2", 1, 5, lease, t + 12_000)
        .await
        .ctx("claim")?;
    ensure!(still.is_empty(), "w2 took an event whose lease was renewed");

    // After expiry, w2 takes it over: attempt 2.
    let second = store
        .claim(&c, "w2", 1, 1, lease, t + 15_000)
        .await
        .ctx("claim")?;
    ensure!(
        second.len() == 1 && second[0].event.id == id,
        "expired lease not reclaimed ({} claimed)",
        second.len()
    );
    ensure!(
        second[0].attempt == 2,
        "reclaimed event has attempt {}, want 2",
        second[0].attempt
    );
    ensure!(
        second[0].lease_until == t + 25_000,
        "reclaimed lease_until {}",
        second[0].lease_until
    );
    ensure!(
        !store.renew(id, "w1", t + 30_000).await.ctx("renew")?,
        "the old owner renewed a lost lease"
    );
    ensure!(
        !store
            .release(id, "w1", EventStatus::Done, t + 16_000)
            .await
            .ctx("release")?,
        "the old owner released a lost lease"
    );
    ensure!(
        store.renew(id, "w2", t + 30_000).await.ctx("renew")?,
        "the new owner could not renew"
    );
    ensure!(
        store
            .release(id, "w2", EventStatus::Done, t + 17_000)
            .await
            .ctx("release")?,
        "the new owner could not release"
    );
    ensure!(
        !store
            .release(id, "w2", EventStatus::Failed, t + 18_000)
            .await
            .ctx("release")?,
        "released an event that is no longer processing"
    );
    let rec = store
        .get_event(id)
        .await
        .ctx("get_event")?
        .ok_or("event vanished")?;
    ensure!(
        rec.status == EventStatus::Done && rec.attempts == 2 && rec.updated_at == t + 17_000,
        "final record is {:?}, {} attempts, updated_at {}",
        rec.status,
        rec.attempts,
        rec.updated_at
    );
    // A released (done) event is not claimable again.
    let none = store
        .claim(&c, "w3", 1, 5, lease, t + 60_000)
        .await
        .ctx("claim")?;
    ensure!(none.is_empty(), "a done event was claimed again");
    Ok(())
}

/// A restarted worker releases the leases of its previous incarnation at once, live or not:
/// one owner's, or every one; finished events stay as they are.
pub async fn check_release_leases<S: Store>(store: &S) -> CheckResult {
    let c = charter("relleases");
    let t = now();
    let lease = Duration::from_secs(60);
    let done = stored(store, event(&c, None, t)).await?;
    let got = store
        .claim(&c, "node-a", 1, 10, lease, t)
        .await
        .ctx("claim")?;
    ensure!(got.len() == 1 && got[0].event.id == done, "claimed {got:?}");
    store
        .release(done, "node-a", EventStatus::Done, t + 1)
        .await
        .ctx("release")?;
    let a1 = stored(store, event(&c, None, t + 2)).await?;
    let a2 = stored(store, event(&c, None, t + 3)).await?;
    let b = stored(store, event(&c, None, t + 4)).await?;
    let got = store
        .claim(&c, "node-a", 2, 10, lease, t + 5)
        .await
        .ctx("claim")?;
    ensure!(got.len() == 2, "node-a claimed {} events", got.len());
    let got = store
        .claim(&c, "node-b", 5, 10, lease, t + 5)
        .await
        .ctx("claim")?;
    ensure!(
        got.len() == 1 && got[0].event.id == b,
        "node-b claimed {got:?}"
    );

    // node-a restarts: its leases (still live for a minute) are released, node-b's are not.
    let released = store
        .release_leases(Some("node-a"), t + 6)
        .await
        .ctx("release_leases(node-a)")?;
    ensure!(
        released == vec![a1, a2],
        "release_leases(node-a) returned {released:?}, want [{a1}, {a2}]"
    );
    for id in [a1, a2] {
        let rec = store
            .get_event(id)
            .await
            .ctx("get_event")?
            .ok_or("event vanished")?;
        ensure!(
            rec.status == EventStatus::Pending && rec.attempts == 1 && rec.updated_at == t + 6,
            "a released event is {:?} with {} attempts, updated_at {}",
            rec.status,
            rec.attempts,
            rec.updated_at
        );
        ensure!(
            !store.renew(id, "node-a", t + 99_000).await.ctx("renew")?,
            "the old incarnation renewed a released lease"
        );
    }
    let rec = store
        .get_event(b)
        .await
        .ctx("get_event")?
        .ok_or("event vanished")?;
    ensure!(
        rec.status == EventStatus::Processing,
        "node-b's event is {:?} after node-a's leases were released",
        rec.status
    );
    // Well inside the old leases, the released events are claimable again (attempt 2);
    // node-b's live lease still counts against the limit of 3.
    let again = store
        .claim(&c, "node-a", 5, 3, lease, t + 7)
        .await
        .ctx("claim")?;
    let ids: Vec<Uuid> = again.iter().map(|x| x.event.id).collect();
    ensure!(
        ids == vec![a1, a2] && again.iter().all(|x| x.attempt == 2),
        "claim after the release took {again:?}"
    );

    // A store served by one process releases every lease found at start-up.
    let released = store
        .release_leases(None, t + 8)
        .await
        .ctx("release_leases(all)")?;
    for id in [a1, a2, b] {
        ensure!(
            released.contains(&id),
            "release_leases(None) left {id} leased: {released:?}"
        );
    }
    ensure!(
        !released.contains(&done),
        "release_leases(None) touched a done event"
    );
    let rec = store
        .get_event(done)
        .await
        .ctx("get_event")?
        .ok_or("event vanished")?;
    ensure!(
        rec.status == EventStatus::Done,
        "the done event is {:?}",
        rec.status
    );
    let none = store
        .release_leases(Some("node-a"), t + 9)
        .await
        .ctx("release_leases")?;
    ensure!(none.is_empty(), "a second release found {none:?}");
    Ok(())
}

/// Requeue one event (not while processing) or all failed events, per charter or overall.
pub async fn check_requeue<S: Store>(store: &S) -> CheckResult {
    let c = charter("requeue");
    let other = charter("requeue-other");
    let t = now();
    let lease = Duration::from_secs(60);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(stored(store, event(&c, None, t)).await?);
    }
    let other_id = stored(store, event(&other, None, t)).await?;
    let claimed = store.claim(&c, "w", 4, 10, lease, t).await.ctx("claim")?;
    ensure!(claimed.len() == 4, "claimed {} of 4", claimed.len());
    let oc = store
        .claim(&other, "w", 1, 10, lease, t)
        .await
        .ctx("claim")?;
    ensure!(oc.len() == 1, "claimed {} of the other charter", oc.len());
    // ids[0], ids[1] failed; ids[2] done; ids[3] still processing; other failed.
    for (id, status) in [
        (ids[0], EventStatus::Failed),
        (ids[1], EventStatus::Failed),
        (ids[2], EventStatus::Done),
        (other_id, EventStatus::Failed),
    ] {
        ensure!(
            store.release(id, "w", status, t + 1).await.ctx("release")?,
            "release of {id} failed"
        );
    }

    let none = store
        .requeue(Requeue::Event(ids[3]), t + 2)
        .await
        .ctx("requeue")?;
    ensure!(none.is_empty(), "requeued an event in processing: {none:?}");
    let done = store
        .requeue(Requeue::Event(ids[2]), t + 2)
        .await
        .ctx("requeue")?;
    ensure!(
        done == vec![ids[2]],
        "requeue of a done event returned {done:?}"
    );
    let missing = store
        .requeue(Requeue::Event(Uuid::now_v7()), t + 2)
        .await
        .ctx("requeue")?;
    ensure!(
        missing.is_empty(),
        "requeue of an unknown id returned {missing:?}"
    );

    let failed = store
        .requeue(
            Requeue::AllFailed {
                charter: Some(c.clone()),
            },
            t + 3,
        )
        .await
        .ctx("requeue")?;
    let mut want = vec![ids[0], ids[1]];
    want.sort();
    ensure!(
        failed == want,
        "requeue of the charter's failed returned {failed:?}"
    );
    for id in [ids[0], ids[1], ids[2]] {
        let rec = store
            .get_event(id)
            .await
            .ctx("get_event")?
            .ok_or("event vanished")?;
        ensure!(
            rec.status == EventStatus::Pending,
            "requeued event is {:?}",
            rec.status
        );
    }
    let rec = store
        .get_event(other_id)
        .await
        .ctx("get_event")?
        .ok_or("event vanished")?;
    ensure!(
        rec.status == EventStatus::Failed,
        "another charter's failed event was requeued"
    );

    let all = store
        .requeue(Requeue::AllFailed { charter: None }, t + 4)
        .await
        .ctx("requeue")?;
    ensure!(
        all.contains(&other_id) && !all.contains(&ids[3]),
        "requeue of all failed returned {all:?}"
    );

    // Requeued events are claimable again, oldest first, with another attempt.
    let again = store
        .claim(&c, "w2", 10, 10, lease, t + 5)
        .await
        .ctx("claim")?;
    let again_ids: Vec<Uuid> = again.iter().map(|c| c.event.id).collect();
    ensure!(
        again_ids == ids[..3],
        "after requeue claimed {again_ids:?}, want {:?}",
        &ids[..3]
    );
    ensure!(
        again.iter().all(|c| c.attempt == 2),
        "requeued events claimed with attempts {:?}",
        again.iter().map(|c| c.attempt).collect::<Vec<_>>()
    );
    Ok(())
}

/// A claim carries what a run needs before deciding: the charter's stored mode override and
/// each event's latest human resolution (none for an event nobody resolved).
pub async fn check_claim_context<S: Store>(store: &S) -> CheckResult {
    let c = charter("claimctx");
    let t = now();
    let resolved = stored(store, event(&c, None, t)).await?;
    let plain = stored(store, event(&c, None, t + 1)).await?;
    let lease = Duration::from_secs(60);
    let before = store.claim(&c, "w1", 10, 10, lease, t).await.ctx("claim")?;
    ensure!(
        before.len() == 2
            && before
                .iter()
                .all(|c| c.mode_override.is_none() && c.resolution.is_none()),
        "claimed without an override or resolution: {before:?}"
    );
    for (id, status) in [
        (resolved, EventStatus::Waiting),
        (plain, EventStatus::Failed),
    ] {
        store
            .release(id, "w1", status, t + 2)
            .await
            .ctx("release")?;
    }
    let esc = store
        .create_escalation(NewEscalation {
            id: Uuid::now_v7(),
            run_id: None,
            event_id: resolved,
            charter: c.clone(),
            reason: "low_confidence".into(),
            detail: serde_json::json!({}),
            target: None,
            created_at: t + 3,
        })
        .await
        .ctx("create_escalation")?;
    let decision = HumanDecision {
        label: "billing".into(),
        fields: BTreeMap::new(),
    };
    let r = store
        .resolve_escalation(esc.id, &decision, "lead", t + 4)
        .await
        .ctx("resolve")?
        .ok_or("resolving did not win")?;
    let mode = ModeOverride {
        charter: c.clone(),
        mode: "live".into(),
        base: "shadow".into(),
        by: "ops".into(),
        at: t + 5,
    };
    store.set_mode(mode.clone()).await.ctx("set_mode")?;
    let ids = store
        .requeue(Requeue::Event(resolved), t + 6)
        .await
        .ctx("requeue")?;
    ensure!(ids == vec![resolved], "requeued {ids:?}");
    let ids = store
        .requeue(Requeue::Event(plain), t + 6)
        .await
        .ctx("requeue")?;
    ensure!(ids == vec![plain], "requeued {ids:?}");
    let mut after = store
        .claim(&c, "w1", 10, 10, lease, t + 7)
        .await
        .ctx("claim again")?;
    after.sort_by_key(|c| c.event.id);
    ensure!(after.len() == 2, "claimed {} events", after.len());
    ensure!(
        after
            .iter()
            .all(|c| c.mode_override.as_ref() == Some(&mode)),
        "the override is not carried: {after:?}"
    );
    ensure!(
        after[0].event.id == resolved && after[0].resolution.as_ref() == Some(&r),
        "the resolved event's claim: {:?}",
        after[0]
    );
    ensure!(
        after[1].event.id == plain && after[1].resolution.is_none(),
        "the other event's claim: {:?}",
        after[1]
    );
    Ok(())
}

/// Pending counts include pending events and expired leases, per charter.
pub async fn check_pending_counts<S: Store>(store: &S) -> CheckResult {
    let c = charter("counts");
    let t = now();
    for _ in 0..3 {
        stored(store, event(&c, None, t)).await?;
    }
    let count = |counts: Vec<(String, u64)>| {
        counts
            .into_iter()
            .find(|(name, _)| *name == c)
            .map(|(_, n)| n)
            .unwrap_or(0)
    };
    let n = count(store.pending_counts().await.ctx("pending_counts")?);
    ensure!(n == 3, "pending count {n}, want 3");
    // One claimed under a long lease is not pending; one under an already-expired lease is.
    store
        .claim(&c, "w", 1, 10, Duration::from_secs(3600), t)
        .await
        .ctx("claim")?;
    store
        .claim(&c, "w", 1, 10, Duration::from_millis(1), t - 60_000)
        .await
        .ctx("claim")?;
    let n = count(store.pending_counts().await.ctx("pending_counts")?);
    ensure!(n == 2, "pending count after claims {n}, want 2");
    Ok(())
}
