//! Checks of [`crate::DecisionStore`].

use charter_core::model::UnixMillis;
use uuid::Uuid;

use super::{CheckResult, Ctx, charter, event, now, stored};
use crate::Store;

/// The LLM response cache (expiry, replacement, keys kept apart), the LLM spend (per
/// charter and day, concurrent adds) and run extras (per run, latest per event,
/// replacement by run, kind and name).
pub async fn check_decision_store<S: Store>(store: &S) -> CheckResult {
    let t = now();
    llm_cache(store, t).await?;
    llm_spend(store).await?;
    llm_rate_windows(store, t).await?;
    run_extras(store, t).await
}

/// The LLM response cache: expiry, replacement, keys kept apart.
async fn llm_cache<S: Store>(store: &S, t: UnixMillis) -> CheckResult {
    let key = format!("conf-cache-{}", Uuid::now_v7().simple());
    let other = format!("{key}-other");
    ensure!(
        store.cache_get(&key, t).await.ctx("cache_get")?.is_none(),
        "an unknown key is found in the cache"
    );
    store
        .cache_put(&key, "{\"label\":\"bug\"}", t, t + 60_000)
        .await
        .ctx("cache_put")?;
    let got = store.cache_get(&key, t + 1).await.ctx("cache_get")?;
    ensure!(
        got.as_deref() == Some("{\"label\":\"bug\"}"),
        "the cached value reads {got:?}"
    );
    ensure!(
        store
            .cache_get(&other, t + 1)
            .await
            .ctx("cache_get")?
            .is_none(),
        "a different key reads another key's value"
    );
    ensure!(
        store
            .cache_get(&key, t + 60_000)
            .await
            .ctx("cache_get")?
            .is_none(),
        "an expired entry is still served"
    );
    store
        .cache_put(&key, "second", t + 1, t + 120_000)
        .await
        .ctx("cache_put (replace)")?;
    let got = store.cache_get(&key, t + 60_000).await.ctx("cache_get")?;
    ensure!(
        got.as_deref() == Some("second"),
        "a replaced entry reads {got:?}"
    );
    Ok(())
}

/// The LLM spend: per charter and day; adds accumulate, concurrent adds all count.
async fn llm_spend<S: Store>(store: &S) -> CheckResult {
    use crate::decision::LlmSpend;
    let spender = charter("spend");
    let day = 20_000;
    ensure!(
        store.llm_spent(&spender, day).await.ctx("llm_spent")? == LlmSpend::default(),
        "a charter that spent nothing reads non-zero"
    );
    let first = LlmSpend {
        tokens: 150,
        cost: 0.25,
    };
    let total = store
        .add_llm_spend(&spender, day, first)
        .await
        .ctx("add_llm_spend")?;
    ensure!(total == first, "the first add returns {total:?}");
    let total = store
        .add_llm_spend(
            &spender,
            day,
            LlmSpend {
                tokens: 50,
                cost: 0.5,
            },
        )
        .await
        .ctx("add_llm_spend")?;
    ensure!(
        total.tokens == 200 && (total.cost - 0.75).abs() < 1e-9,
        "two adds total {total:?}"
    );
    let seven = LlmSpend {
        tokens: 7,
        cost: 0.0,
    };
    let (a, b, c, d) = tokio::join!(
        store.add_llm_spend(&spender, day, seven),
        store.add_llm_spend(&spender, day, seven),
        store.add_llm_spend(&spender, day, seven),
        store.add_llm_spend(&spender, day, seven),
    );
    for r in [a, b, c, d] {
        r.ctx("concurrent add_llm_spend")?;
    }
    let read = store.llm_spent(&spender, day).await.ctx("llm_spent")?;
    ensure!(
        read.tokens == 228 && (read.cost - 0.75).abs() < 1e-9,
        "after 4 concurrent adds of 7 tokens the day reads {read:?} (want 228 tokens)"
    );
    // Signed adjustments (a budget reservation given back, a settlement below it): they
    // count, and neither part goes below zero.
    let total = store
        .adjust_llm_spend(&spender, day, -28, -0.25)
        .await
        .ctx("adjust_llm_spend")?;
    ensure!(
        total.tokens == 200 && (total.cost - 0.5).abs() < 1e-9,
        "228 tokens less 28 read {total:?}"
    );
    let total = store
        .adjust_llm_spend(&spender, day, -1_000, -5.0)
        .await
        .ctx("adjust_llm_spend")?;
    ensure!(
        total == LlmSpend::default(),
        "an adjustment below zero leaves {total:?}"
    );
    let total = store
        .adjust_llm_spend(&spender, day, 228, 0.75)
        .await
        .ctx("adjust_llm_spend")?;
    ensure!(
        total.tokens == 228 && (total.cost - 0.75).abs() < 1e-9,
        "adding back reads {total:?}"
    );
    let fresh = store
        .adjust_llm_spend(&charter("spend-new"), day, -5, -1.0)
        .await
        .ctx("adjust_llm_spend")?;
    ensure!(
        fresh == LlmSpend::default(),
        "a first negative adjustment reads {fresh:?}"
    );
    ensure!(
        store.llm_spent(&spender, day + 1).await.ctx("llm_spent")? == LlmSpend::default(),
        "the next day starts with another day's spend"
    );
    ensure!(
        store
            .llm_spent(&charter("spend-other"), day)
            .await
            .ctx("llm_spent")?
            == LlmSpend::default(),
        "another charter reads this charter's spend"
    );
    Ok(())
}

/// LLM rate windows: a window starts at its first request and admits `max`; the next
/// request is refused until the window's end, after which a new window starts; charters
/// are apart; concurrent takes never admit more than `max`.
async fn llm_rate_windows<S: Store>(store: &S, t: UnixMillis) -> CheckResult {
    let rated = charter("rate");
    let take = |at: UnixMillis| store.take_llm_slot(&rated, at, 1_000, 2);
    ensure!(
        take(t).await.ctx("take_llm_slot")?.is_none(),
        "the first request is refused"
    );
    ensure!(
        take(t + 10).await.ctx("take_llm_slot")?.is_none(),
        "the second request of a window of 2 is refused"
    );
    let refused = take(t + 20).await.ctx("take_llm_slot")?;
    ensure!(
        refused == Some(t + 1_000),
        "a third request in the window answered {refused:?} (want refused until {})",
        t + 1_000
    );
    ensure!(
        take(t + 1_000).await.ctx("take_llm_slot")?.is_none(),
        "the next window does not admit"
    );
    ensure!(
        store
            .take_llm_slot(&charter("rate-other"), t + 20, 1_000, 2)
            .await
            .ctx("take_llm_slot")?
            .is_none(),
        "another charter shares the window"
    );
    let fresh = charter("rate-race");
    let (a, b, c3, d) = tokio::join!(
        store.take_llm_slot(&fresh, t, 60_000, 2),
        store.take_llm_slot(&fresh, t, 60_000, 2),
        store.take_llm_slot(&fresh, t, 60_000, 2),
        store.take_llm_slot(&fresh, t, 60_000, 2),
    );
    let admitted = [a, b, c3, d]
        .into_iter()
        .map(|r| r.ctx("concurrent take_llm_slot"))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(Option::is_none)
        .count();
    ensure!(
        admitted == 2,
        "{admitted} of 4 concurrent requests admitted by a window of 2"
    );
    Ok(())
}

/// Run extras: per run, latest per event, replacement by run, kind and name.
async fn run_extras<S: Store>(store: &S, t: UnixMillis) -> CheckResult {
    use crate::decision::{EXTRA_CONTEXT, EXTRA_DRAFT, RunExtra};
    let c = charter("extras");
    let event_id = stored(store, event(&c, None, t)).await?;
    let (run1, run2) = (Uuid::now_v7(), Uuid::now_v7());
    store
        .start_run(run1, event_id, &c, "v1", "live", t)
        .await
        .ctx("start_run")?;
    store
        .start_run(run2, event_id, &c, "v1", "live", t + 10)
        .await
        .ctx("start_run")?;
    let extra = |run_id, kind: &str, name: &str, body, at| RunExtra {
        run_id,
        event_id,
        kind: kind.to_string(),
        name: name.to_string(),
        body,
        at,
    };
    let ctx1 = extra(
        run1,
        EXTRA_CONTEXT,
        "customer",
        serde_json::json!({"ok": true, "value": {"tier": "gold", "ü": [1, 2.5, null]}}),
        t + 1,
    );
    let draft1 = extra(
        run1,
        EXTRA_DRAFT,
        "reply",
        serde_json::json!({"text": "first draft"}),
        t + 2,
    );
    store
        .record_run_extra(&ctx1)
        .await
        .ctx("record_run_extra")?;
    store
        .record_run_extra(&draft1)
        .await
        .ctx("record_run_extra")?;
    let draft2 = extra(
        run2,
        EXTRA_DRAFT,
        "reply",
        serde_json::json!({"text": "second draft"}),
        t + 11,
    );
    store
        .record_run_extra(&draft2)
        .await
        .ctx("record_run_extra")?;
    let got = store.run_extras(run1).await.ctx("run_extras")?;
    ensure!(
        got == vec![ctx1.clone(), draft1.clone()],
        "run 1's extras read {got:?}"
    );
    let latest = store
        .latest_run_extra(event_id, EXTRA_DRAFT, "reply")
        .await
        .ctx("latest_run_extra")?;
    ensure!(
        latest.as_ref() == Some(&draft2),
        "the latest draft reads {latest:?}"
    );
    ensure!(
        store
            .latest_run_extra(event_id, EXTRA_DRAFT, "other")
            .await
            .ctx("latest_run_extra")?
            .is_none(),
        "an extra of another name is returned"
    );
    let replaced = extra(
        run2,
        EXTRA_DRAFT,
        "reply",
        serde_json::json!({"text": "edited"}),
        t + 12,
    );
    store
        .record_run_extra(&replaced)
        .await
        .ctx("record_run_extra (replace)")?;
    let got = store.run_extras(run2).await.ctx("run_extras")?;
    ensure!(got == vec![replaced], "a replaced extra reads {got:?}");
    Ok(())
}
