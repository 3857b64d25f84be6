//! Conformance checks of [`crate::RolloutStore`], run by the conformance tests
//! against every backend.

use std::collections::BTreeMap;

use charter_core::model::UnixMillis;
use charter_core::rollout::Rewrite;
use serde_json::json;
use uuid::Uuid;

use super::CheckResult;
use crate::Store;
use crate::rollout::{DraftRewrite, NewSample, RouteModeChange, SampleFilter, SampleReview};

fn ctx<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn charter() -> String {
    let tag = Uuid::now_v7().simple().to_string();
    format!("conf-rollout-{}", &tag[tag.len() - 12..])
}

fn sample(c: &str, route: &str, mode: &str, at: UnixMillis) -> NewSample {
    NewSample {
        id: Uuid::now_v7(),
        run_id: Uuid::now_v7(),
        event_id: Uuid::now_v7(),
        charter: c.to_string(),
        route: route.to_string(),
        mode: mode.to_string(),
        label: Some("billing".into()),
        actions: json!([{"action": "tag", "status": "would_run", "params": {"log": "x\u{0}y"}}]),
        created_at: at,
    }
}

fn review(right: bool, action_right: bool, at: UnixMillis) -> SampleReview {
    SampleReview {
        by: "rita".into(),
        at,
        decision_right: right,
        right_label: (!right).then(|| "refund".to_string()),
        actions: BTreeMap::from([("tag".to_string(), action_right)]),
        note: None,
    }
}

/// Route modes: set, replace, list, clear; the promotion suggestion is recorded once per
/// mode change.
async fn check_route_modes<S: Store>(store: &S) -> CheckResult {
    let c = charter();
    ensure!(
        ctx(store.route_states(Some(&c)).await, "route_states")?.is_empty(),
        "a new charter has route states"
    );
    let set = |mode: &str, at| RouteModeChange {
        charter: c.clone(),
        route: "billing".into(),
        mode: mode.into(),
        base: "shadow".into(),
        by: "ada".into(),
        at,
        reason: Some("reviewed".into()),
    };
    ctx(
        store.set_route_mode(set("approve", 10)).await,
        "set_route_mode",
    )?;
    ensure!(
        ctx(
            store.mark_suggested(&c, "billing", 11).await,
            "mark_suggested"
        )?,
        "the first suggestion was not recorded"
    );
    ensure!(
        !ctx(
            store.mark_suggested(&c, "billing", 12).await,
            "mark_suggested"
        )?,
        "a second suggestion was recorded as new"
    );
    let states = ctx(store.route_states(Some(&c)).await, "route_states")?;
    ensure!(
        states.len() == 1,
        "expected one route state, got {states:?}"
    );
    let s = &states[0];
    ensure!(
        s.override_pair() == Some(("approve", "shadow"))
            && s.by.as_deref() == Some("ada")
            && s.at == Some(10)
            && s.suggested_at == Some(11),
        "route state read back as {s:?}"
    );
    ctx(
        store.set_route_mode(set("live", 20)).await,
        "set_route_mode (replace)",
    )?;
    let s = ctx(store.route_states(Some(&c)).await, "route_states")?;
    ensure!(
        s[0].override_pair() == Some(("live", "shadow")) && s[0].suggested_at.is_none(),
        "a mode change kept the old mode or suggestion: {s:?}"
    );
    ensure!(
        ctx(
            store.mark_suggested(&c, "billing", 21).await,
            "mark_suggested"
        )?,
        "a suggestion after a mode change was not recorded"
    );
    // A suggestion for a route without any override creates its row.
    ensure!(
        ctx(
            store.mark_suggested(&c, "refunds", 22).await,
            "mark_suggested"
        )?,
        "a suggestion for a new route was not recorded"
    );
    let all = ctx(store.route_states(None).await, "route_states(all)")?;
    ensure!(
        all.iter().filter(|s| s.charter == c).count() == 2,
        "route_states(None) lists {all:?}"
    );
    ensure!(
        ctx(
            store.clear_route_mode(&c, "billing", 30).await,
            "clear_route_mode"
        )?,
        "clear_route_mode found no override"
    );
    ensure!(
        !ctx(
            store.clear_route_mode(&c, "billing", 31).await,
            "clear_route_mode"
        )?,
        "clear_route_mode cleared twice"
    );
    let s = ctx(store.route_states(Some(&c)).await, "route_states")?;
    ensure!(
        s.iter().all(|s| s.override_pair().is_none()),
        "an override survived clear_route_mode: {s:?}"
    );
    Ok(())
}

/// Samples: queued once per run, listed as a queue, reviewed once, counted per route and mode.
async fn check_samples<S: Store>(store: &S) -> CheckResult {
    let c = charter();
    let a = sample(&c, "billing", "shadow", 100);
    ensure!(
        ctx(store.add_sample(a.clone()).await, "add_sample")?,
        "add_sample refused a sample"
    );
    let mut again = a.clone();
    again.id = Uuid::now_v7();
    ensure!(
        !ctx(store.add_sample(again).await, "add_sample (same run)")?,
        "a second sample of the same run was queued"
    );
    let b = sample(&c, "billing", "shadow", 200);
    let d = sample(&c, "billing", "live", 300);
    let e = sample(&c, "refunds", "shadow", 400);
    for s in [&b, &d, &e] {
        ctx(store.add_sample(s.clone()).await, "add_sample")?;
    }
    let got = ctx(store.sample(a.id).await, "sample")?;
    ensure!(
        got.as_ref().map(|g| &g.sample) == Some(&a)
            && got.as_ref().is_some_and(|g| g.review.is_none()),
        "sample read back as {got:?}"
    );
    let queue = ctx(
        store
            .samples(SampleFilter {
                charter: Some(c.clone()),
                route: Some("billing".into()),
                reviewed: Some(false),
                limit: 0,
            })
            .await,
        "samples(queue)",
    )?;
    let ids: Vec<Uuid> = queue.iter().map(|s| s.sample.id).collect();
    ensure!(
        ids == vec![a.id, b.id, d.id],
        "the queue is {ids:?}, expected oldest first"
    );

    let r = review(true, true, 1_000);
    let done = ctx(store.review_sample(a.id, r.clone()).await, "review_sample")?;
    ensure!(
        done.as_ref().and_then(|d| d.review.as_ref()) == Some(&r),
        "the review read back as {done:?}"
    );
    ensure!(
        ctx(
            store.review_sample(a.id, review(false, false, 1_001)).await,
            "review_sample (again)"
        )?
        .is_none(),
        "a sample was reviewed twice"
    );
    ensure!(
        ctx(
            store.review_sample(Uuid::now_v7(), r.clone()).await,
            "review_sample (unknown)"
        )?
        .is_none(),
        "an unknown sample was reviewed"
    );
    ctx(
        store.review_sample(b.id, review(false, true, 2_000)).await,
        "review_sample",
    )?;
    ctx(
        store.review_sample(d.id, review(true, false, 3_000)).await,
        "review_sample",
    )?;

    review_counts(store, &c, (b.id, d.id)).await
}

/// Reviews are counted per route and mode (`since` leaves out earlier ones); reviewed
/// samples are listed newest first.
async fn review_counts<S: Store>(store: &S, c: &str, (b, d): (Uuid, Uuid)) -> CheckResult {
    let stats = ctx(store.review_stats(c, 0).await, "review_stats")?;
    let shadow = stats
        .get(&("billing".to_string(), "shadow".to_string()))
        .copied()
        .unwrap_or_default();
    ensure!(
        (
            shadow.reviewed,
            shadow.agreed,
            shadow.corrected,
            shadow.pending
        ) == (2, 1, 1, 0),
        "billing/shadow counts are {shadow:?}"
    );
    let live = stats
        .get(&("billing".to_string(), "live".to_string()))
        .copied()
        .unwrap_or_default();
    ensure!(
        (live.reviewed, live.agreed, live.corrected) == (1, 0, 0),
        "billing/live counts are {live:?}"
    );
    let refunds = stats
        .get(&("refunds".to_string(), "shadow".to_string()))
        .copied()
        .unwrap_or_default();
    ensure!(
        (refunds.reviewed, refunds.pending) == (0, 1),
        "refunds counts are {refunds:?}"
    );
    // `since` leaves out earlier reviews.
    let later = ctx(store.review_stats(c, 1_500).await, "review_stats(since)")?;
    let shadow = later
        .get(&("billing".to_string(), "shadow".to_string()))
        .copied()
        .unwrap_or_default();
    ensure!(
        (shadow.reviewed, shadow.agreed) == (1, 0),
        "billing/shadow since 1500 is {shadow:?}"
    );
    let reviewed = ctx(
        store
            .samples(SampleFilter {
                charter: Some(c.to_string()),
                route: None,
                reviewed: Some(true),
                limit: 2,
            })
            .await,
        "samples(reviewed)",
    )?;
    let ids: Vec<Uuid> = reviewed.iter().map(|s| s.sample.id).collect();
    ensure!(
        ids == vec![d, b],
        "reviewed samples are {ids:?}, expected newest first"
    );
    Ok(())
}

/// Draft rewrites: stored once per approval, listed and summed per route and action.
async fn check_rewrites<S: Store>(store: &S) -> CheckResult {
    let c = charter();
    let rw = |route: Option<&str>, draft: &str, approved: &str, at| DraftRewrite {
        approval_id: Uuid::now_v7(),
        run_id: Uuid::now_v7(),
        event_id: Uuid::now_v7(),
        charter: c.clone(),
        route: route.map(str::to_string),
        action: "reply".into(),
        draft: draft.into(),
        approved: approved.into(),
        distance: Rewrite::measure(draft, approved),
        edited_by: "rita".into(),
        at,
    };
    let one = rw(
        Some("billing"),
        "Thanks for your patience.",
        "Thanks for the patience.",
        10,
    );
    let two = rw(Some("billing"), "We refunded you.", "We refunded you.", 20);
    let three = rw(None, "abc", "xyz", 30);
    for w in [&one, &two, &three] {
        ensure!(
            ctx(store.add_rewrite(w.clone()).await, "add_rewrite")?,
            "add_rewrite refused"
        );
    }
    ensure!(
        !ctx(store.add_rewrite(one.clone()).await, "add_rewrite (again)")?,
        "a rewrite was stored twice for one approval"
    );
    let list = ctx(store.rewrites(Some(&c), 0, 0).await, "rewrites")?;
    ensure!(
        list == vec![one.clone(), two.clone(), three.clone()],
        "rewrites read back as {list:?}"
    );
    let since = ctx(
        store.rewrites(Some(&c), 15, 1).await,
        "rewrites(since, limit)",
    )?;
    ensure!(
        since == vec![two.clone()],
        "rewrites since 15, limit 1: {since:?}"
    );
    let stats = ctx(store.rewrite_stats(Some(&c), 0).await, "rewrite_stats")?;
    let billing = stats
        .get(&(c.clone(), "billing".to_string(), "reply".to_string()))
        .cloned()
        .unwrap_or_default();
    ensure!(
        billing.drafts == 2
            && billing.edited == 1
            && billing.distance.chars == 4
            && billing.distance.draft_chars == 25 + 16
            && billing.distance.words == 1
            && billing.distance.draft_words == 4 + 3,
        "billing totals are {billing:?}"
    );
    let none = stats
        .get(&(c.clone(), "-".to_string(), "reply".to_string()))
        .cloned()
        .unwrap_or_default();
    ensure!(
        none.drafts == 1 && none.distance.chars == 3,
        "route-less totals are {none:?}"
    );
    Ok(())
}

/// Run the rollout checks.
pub async fn check_rollout<S: Store>(store: &S) -> CheckResult {
    check_route_modes(store).await?;
    check_samples(store).await?;
    check_rewrites(store).await
}
