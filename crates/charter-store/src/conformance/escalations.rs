//! Checks of [`crate::EscalationStore`].

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{CheckResult, Ctx, charter, event_with_run, now};
use crate::{EscalationFilter, EscalationStatus, HumanDecision, NewEscalation, Store};

/// Escalations: one open per event, resolved once with the human decision, which is then
/// the event's latest resolution.
pub async fn check_escalations<S: Store>(store: &S) -> CheckResult {
    let c = charter("escalations");
    let (ev, run) = event_with_run(store, &c).await?;
    let detail = serde_json::json!({"payload": {"a": 1}, "stages": [{"stage": "embedded"}]});
    let new = NewEscalation {
        id: Uuid::now_v7(),
        run_id: Some(run),
        event_id: ev,
        charter: c.clone(),
        reason: "low_confidence".into(),
        detail: detail.clone(),
        target: Some("support-leads".into()),
        created_at: now(),
    };
    ensure!(
        store.latest_resolution(ev).await.ctx("latest")?.is_none(),
        "a resolution before any escalation"
    );
    let e = store.create_escalation(new.clone()).await.ctx("create")?;
    ensure!(
        e.id == new.id && e.status == EscalationStatus::Open,
        "created {e:?}"
    );
    ensure!(
        e.detail == detail && e.reason == "low_confidence",
        "evidence changed: {e:?}"
    );
    let dup = store
        .create_escalation(NewEscalation {
            id: Uuid::now_v7(),
            ..new.clone()
        })
        .await
        .ctx("create again")?;
    ensure!(dup.id == new.id, "a second open escalation for one event");
    let open = store
        .list_escalations(EscalationFilter {
            charter: Some(c.clone()),
            status: Some(EscalationStatus::Open),
            limit: 0,
            ..EscalationFilter::default()
        })
        .await
        .ctx("list")?;
    ensure!(
        open.len() == 1 && open[0].id == new.id,
        "open list: {open:?}"
    );
    let mut fields = BTreeMap::new();
    fields.insert("order_id".to_string(), serde_json::json!("ORD-7"));
    let decision = HumanDecision {
        label: "billing".into(),
        fields,
    };
    let r = store
        .resolve_escalation(new.id, &decision, "lead", now())
        .await
        .ctx("resolve")?
        .ok_or("resolving an open escalation did not win")?;
    ensure!(
        r.status == EscalationStatus::Resolved,
        "resolved is {:?}",
        r.status
    );
    ensure!(
        r.resolution.as_ref() == Some(&decision),
        "decision lost: {r:?}"
    );
    ensure!(r.resolved_by.as_deref() == Some("lead"), "resolved_by lost");
    ensure!(
        store
            .resolve_escalation(new.id, &decision, "other", now())
            .await
            .ctx("resolve again")?
            .is_none(),
        "an escalation was resolved twice"
    );
    let latest = store.latest_resolution(ev).await.ctx("latest")?;
    ensure!(latest.as_ref() == Some(&r), "latest resolution: {latest:?}");
    // Resolved, the event may be escalated again (a later run fails again).
    let next = store
        .create_escalation(NewEscalation {
            id: Uuid::now_v7(),
            reason: "dead_letter".into(),
            ..new.clone()
        })
        .await
        .ctx("create after resolve")?;
    ensure!(
        next.id != new.id && next.status == EscalationStatus::Open,
        "{next:?}"
    );
    let got = store.get_escalation(new.id).await.ctx("get")?;
    ensure!(got.as_ref() == Some(&r), "get: {got:?}");
    Ok(())
}
