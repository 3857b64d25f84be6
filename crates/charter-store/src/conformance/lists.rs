//! Conformance checks of the paged listings ([`crate::page`]): keyset pages in both orders
//! cover a listing exactly once, totals count what the pages show, and search by id prefix
//! and dedupe key finds what is stored. Run by the conformance tests against every
//! backend.

use std::collections::BTreeMap;
use std::future::Future;

use uuid::Uuid;

use super::CheckResult;
use crate::page::Sort;
use crate::{
    ApprovalFilter, ApprovalStatus, AuditFilter, EscalationFilter, EscalationStatus, EventFilter,
    IngestOutcome, NewApproval, NewAuditEntry, NewEscalation, RejectedFilter, RunFilter, Store,
};
use charter_core::model::{NewEvent, RejectedPayload, RunOutcome, RunRecord, UnixMillis};

fn ctx<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn tag() -> String {
    let t = Uuid::now_v7().simple().to_string();
    t[t.len() - 12..].to_string()
}

fn event(charter: &str, dedupe: Option<String>, at: UnixMillis) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        charter: charter.to_string(),
        source: "webhook:/hooks/lists".to_string(),
        event_type: None,
        dedupe_key: dedupe,
        received_at: at,
        headers: BTreeMap::new(),
        payload: serde_json::json!({"n": 1}),
    }
}

/// Read every page of a listing, `size` at a time, following `next` (the key of a row that
/// the next page starts after). Fails when a page repeats a row or there are too many pages.
async fn all_pages<T, K, F, Fut>(
    size: usize,
    key: impl Fn(&T) -> K,
    id: impl Fn(&T) -> Uuid,
    page: F,
) -> Result<Vec<Uuid>, String>
where
    F: Fn(Option<K>, usize) -> Fut,
    Fut: Future<Output = Result<Vec<T>, String>>,
{
    let mut out: Vec<Uuid> = Vec::new();
    let mut after = None;
    for _ in 0..100 {
        let rows = page(after.take(), size).await?;
        ensure!(rows.len() <= size, "a page of {size} held {}", rows.len());
        for r in &rows {
            let i = id(r);
            ensure!(!out.contains(&i), "row {i} came on two pages");
            out.push(i);
        }
        match rows.last() {
            Some(last) if rows.len() == size => after = Some(key(last)),
            _ => return Ok(out),
        }
    }
    Err("more than 100 pages".into())
}

/// Events: pages newest first and oldest first, the total, search by id prefix and by
/// dedupe key (across charters), and a caller's scope of charters.
pub async fn check_paged_events<S: Store>(store: &S) -> CheckResult {
    let t = tag();
    let c = format!("conf-pages-{t}");
    let other = format!("conf-pages-other-{t}");
    let at = 1_700_000_000_000;
    let mut ids = Vec::new();
    for i in 0..7 {
        let dedupe = (i == 3).then(|| format!("find-me-{t}"));
        match ctx(store.ingest(event(&c, dedupe, at + i)).await, "ingest")? {
            IngestOutcome::Stored(id) => ids.push(id),
            d => return Err(format!("fresh event stored as {d:?}")),
        }
    }
    ctx(
        store
            .ingest(event(&other, Some(format!("other-{t}")), at))
            .await,
        "ingest",
    )?;
    let of_c = |sort, after, limit| EventFilter {
        charter: Some(c.clone()),
        sort,
        after,
        limit,
        ..EventFilter::default()
    };
    let newest: Vec<Uuid> = ids.iter().rev().copied().collect();
    for (sort, want) in [
        (None, newest.clone()),
        (Some(Sort::OldestFirst), ids.clone()),
    ] {
        let got =
            all_pages(
                3,
                |e: &charter_core::model::EventRecord| e.event.id,
                |e| e.event.id,
                |after, limit| async move {
                    ctx(store.list_events(of_c(sort, after, limit)).await, "list")
                },
            )
            .await?;
        ensure!(
            got == want,
            "pages of 3 ({sort:?}) gave {got:?}, want {want:?}"
        );
    }
    let total = ctx(
        store.count_events(of_c(None, Some(ids[0]), 2)).await,
        "count",
    )?;
    ensure!(
        total == 7,
        "count is {total} for 7 events (after and limit must not apply)"
    );

    events_found_by_id(store, &ids).await?;
    // Dedupe key, whatever the charter.
    let by_key = ctx(
        store
            .list_events(EventFilter {
                dedupe_key: Some(format!("find-me-{t}")),
                ..EventFilter::default()
            })
            .await,
        "search by dedupe key",
    )?;
    ensure!(
        by_key.iter().map(|e| e.event.id).collect::<Vec<_>>() == vec![ids[3]],
        "search by dedupe key found {by_key:?}"
    );

    // A scope of charters: the other charter's event is counted only when in scope.
    let scoped = |charters: Vec<String>| EventFilter {
        charters,
        since: Some(at),
        until: Some(at + 7),
        ..EventFilter::default()
    };
    let n_c = ctx(store.count_events(scoped(vec![c.clone()])).await, "count")?;
    let n_both = ctx(
        store
            .count_events(scoped(vec![c.clone(), other.clone()]))
            .await,
        "count",
    )?;
    ensure!(
        n_c == 7 && n_both == 8,
        "scoped counts {n_c} and {n_both}, want 7 and 8"
    );
    Ok(())
}

/// Search by id prefix: the whole id, and a prefix (others may share it, all must); a
/// prefix that is not hexadecimal matches nothing.
async fn events_found_by_id<S: Store>(store: &S, ids: &[Uuid]) -> CheckResult {
    let whole = ids[5].hyphenated().to_string().to_uppercase();
    let found = ctx(
        store
            .list_events(EventFilter {
                id_prefix: Some(whole),
                ..EventFilter::default()
            })
            .await,
        "search by id",
    )?;
    ensure!(
        found.iter().map(|e| e.event.id).collect::<Vec<_>>() == vec![ids[5]],
        "search by the whole id found {found:?}"
    );
    let prefix: String = ids[5].simple().to_string()[..9].to_string();
    let found = ctx(
        store
            .list_events(EventFilter {
                id_prefix: Some(prefix.clone()),
                limit: 10_000,
                ..EventFilter::default()
            })
            .await,
        "search by prefix",
    )?;
    ensure!(
        found.iter().any(|e| e.event.id == ids[5])
            && found
                .iter()
                .all(|e| e.event.id.simple().to_string().starts_with(&prefix)),
        "search by prefix {prefix} found {} events, not all with the prefix or without {}",
        found.len(),
        ids[5]
    );
    let bad = EventFilter {
        id_prefix: Some("nothex%".into()),
        ..EventFilter::default()
    };
    ensure!(
        ctx(store.count_events(bad).await, "count bad prefix")? == 0,
        "a prefix that is not hexadecimal matched"
    );

    Ok(())
}

/// Approvals, escalations and the audit log: pages by `(created_at, id)` (rows created in
/// the same millisecond are neither skipped nor repeated), both orders, totals and filters.
pub async fn check_paged_queues<S: Store>(store: &S) -> CheckResult {
    let t = tag();
    let c = format!("conf-queues-{t}");
    let at = 1_700_000_000_000;
    let (approvals, escalations) = approvals_and_escalations(store, &c, at).await?;
    paged_approvals(store, &c, approvals).await?;
    paged_escalations(store, &c, escalations).await?;
    paged_audit(store, &c, &t, at).await
}

/// Seven events, each with a run, a pending approval and an open escalation, created in
/// pairs sharing a millisecond. Returns the approval and escalation ids, oldest first.
async fn approvals_and_escalations<S: Store>(
    store: &S,
    c: &str,
    at: UnixMillis,
) -> Result<(Vec<Uuid>, Vec<Uuid>), String> {
    let mut approvals = Vec::new();
    let mut escalations = Vec::new();
    for i in 0..7 {
        let ev = match ctx(store.ingest(event(c, None, at)).await, "ingest")? {
            IngestOutcome::Stored(id) => id,
            d => return Err(format!("fresh event stored as {d:?}")),
        };
        let run = Uuid::now_v7();
        ctx(
            store.start_run(run, ev, c, "v1", "live", at).await,
            "start_run",
        )?;
        // Three pairs share a millisecond: the id breaks the tie.
        let created = at + i / 2;
        let a = ctx(
            store
                .create_approval(NewApproval {
                    id: Uuid::now_v7(),
                    run_id: run,
                    event_id: ev,
                    charter: c.to_string(),
                    action: if i == 6 { "refund" } else { "reply" }.to_string(),
                    params: serde_json::json!({"i": i}),
                    params_hash: format!("h{i}"),
                    reviewers: vec![],
                    created_at: created,
                    expires_at: None,
                    on_expiry: None,
                })
                .await,
            "create_approval",
        )?;
        approvals.push(a.id);
        let e = ctx(
            store
                .create_escalation(NewEscalation {
                    id: Uuid::now_v7(),
                    run_id: Some(run),
                    event_id: ev,
                    charter: c.to_string(),
                    reason: if i % 3 == 0 {
                        "dead_letter"
                    } else {
                        "low_confidence"
                    }
                    .into(),
                    detail: serde_json::Value::Null,
                    target: None,
                    created_at: created,
                })
                .await,
            "create_escalation",
        )?;
        escalations.push(e.id);
    }
    Ok((approvals, escalations))
}

fn newest(v: &[Uuid]) -> Vec<Uuid> {
    v.iter().rev().copied().collect()
}

/// Approvals page in both orders; totals count by filter.
async fn paged_approvals<S: Store>(store: &S, c: &str, approvals: Vec<Uuid>) -> CheckResult {
    let af = |sort, after, limit| ApprovalFilter {
        charter: Some(c.to_string()),
        status: Some(ApprovalStatus::Pending),
        sort,
        after,
        limit,
        ..ApprovalFilter::default()
    };
    for (sort, want) in [
        (None, approvals.clone()),
        (Some(Sort::NewestFirst), newest(&approvals)),
    ] {
        let got = all_pages(
            2,
            |a: &crate::ApprovalRecord| (a.created_at, a.id),
            |a| a.id,
            |after, limit| async move {
                ctx(store.list_approvals(af(sort, after, limit)).await, "list")
            },
        )
        .await?;
        ensure!(
            got == want,
            "approval pages ({sort:?}) gave {got:?}, want {want:?}"
        );
    }
    let n = ctx(store.count_approvals(af(None, None, 1)).await, "count")?;
    ensure!(n == 7, "approval count {n}, want 7");
    let refunds = ctx(
        store
            .count_approvals(ApprovalFilter {
                action: Some("refund".into()),
                ..af(None, None, 0)
            })
            .await,
        "count",
    )?;
    ensure!(
        refunds == 1,
        "approvals of action refund: {refunds}, want 1"
    );

    Ok(())
}

/// Escalations page in both orders; totals count by reason.
async fn paged_escalations<S: Store>(store: &S, c: &str, escalations: Vec<Uuid>) -> CheckResult {
    let ef = |sort, after, limit| EscalationFilter {
        charter: Some(c.to_string()),
        status: Some(EscalationStatus::Open),
        sort,
        after,
        limit,
        ..EscalationFilter::default()
    };
    for (sort, want) in [
        (None, escalations.clone()),
        (Some(Sort::NewestFirst), newest(&escalations)),
    ] {
        let got = all_pages(
            3,
            |e: &crate::EscalationRecord| (e.created_at, e.id),
            |e| e.id,
            |after, limit| async move {
                ctx(store.list_escalations(ef(sort, after, limit)).await, "list")
            },
        )
        .await?;
        ensure!(
            got == want,
            "escalation pages ({sort:?}) gave {got:?}, want {want:?}"
        );
    }
    let dead = ctx(
        store
            .count_escalations(EscalationFilter {
                reason: Some("dead_letter".into()),
                ..ef(None, None, 0)
            })
            .await,
        "count",
    )?;
    let rest = ctx(
        store
            .count_escalations(EscalationFilter {
                not_reason: Some("dead_letter".into()),
                ..ef(None, None, 0)
            })
            .await,
        "count",
    )?;
    ensure!(
        dead == 3 && rest == 4,
        "dead letters {dead}, others {rest}; want 3 and 4"
    );

    Ok(())
}

/// The audit log: newest first by sequence, filters by actions, charters and time.
async fn paged_audit<S: Store>(store: &S, c: &str, t: &str, at: UnixMillis) -> CheckResult {
    let mut seqs = Vec::new();
    for i in 0..5 {
        let seq = ctx(
            store
                .append_audit(NewAuditEntry {
                    at: at + i,
                    actor: format!("actor-{t}"),
                    action: if i % 2 == 0 {
                        "charter.pause"
                    } else {
                        "event.replay"
                    }
                    .into(),
                    charter: Some(c.to_string()),
                    target: None,
                    detail: serde_json::Value::Null,
                })
                .await,
            "append_audit",
        )?;
        seqs.push(seq);
    }
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = ctx(
            store
                .list_audit(AuditFilter {
                    actor: Some(format!("actor-{t}")),
                    after,
                    limit: 2,
                    ..AuditFilter::default()
                })
                .await,
            "list_audit",
        )?;
        pages.extend(page.iter().map(|e| e.seq));
        match page.last() {
            Some(last) if page.len() == 2 => after = Some(last.seq),
            _ => break,
        }
    }
    let want: Vec<i64> = seqs.iter().rev().copied().collect();
    ensure!(pages == want, "audit pages gave {pages:?}, want {want:?}");
    let pauses = ctx(
        store
            .count_audit(AuditFilter {
                charters: vec![c.to_string()],
                actions: vec!["charter.pause".into()],
                since: Some(at + 1),
                ..AuditFilter::default()
            })
            .await,
        "count_audit",
    )?;
    ensure!(
        pauses == 2,
        "pauses since the second entry: {pauses}, want 2"
    );
    Ok(())
}

/// Closing an escalation without a decision: only an open one of the given reason closes,
/// once; it reads back resolved with no resolution, and is no decision for later runs.
pub async fn check_close_escalation<S: Store>(store: &S) -> CheckResult {
    let c = format!("conf-close-{}", tag());
    let at = 1_700_000_000_000;
    let mut opened = Vec::new();
    for reason in ["dead_letter", "low_confidence"] {
        let ev = match ctx(store.ingest(event(&c, None, at)).await, "ingest")? {
            IngestOutcome::Stored(id) => id,
            d => return Err(format!("fresh event stored as {d:?}")),
        };
        let e = ctx(
            store
                .create_escalation(NewEscalation {
                    id: Uuid::now_v7(),
                    run_id: None,
                    event_id: ev,
                    charter: c.clone(),
                    reason: reason.into(),
                    detail: serde_json::Value::Null,
                    target: None,
                    created_at: at,
                })
                .await,
            "create_escalation",
        )?;
        opened.push(e);
    }
    let (dead, unsure) = (&opened[0], &opened[1]);
    let wrong = ctx(
        store
            .close_event_escalation(dead.event_id, "low_confidence", "system", at + 1)
            .await,
        "close",
    )?;
    ensure!(
        wrong.is_none(),
        "closed an escalation of another reason: {wrong:?}"
    );
    let closed = ctx(
        store
            .close_event_escalation(dead.event_id, "dead_letter", "system", at + 2)
            .await,
        "close",
    )?
    .ok_or("the open dead letter was not closed")?;
    ensure!(
        closed.status == EscalationStatus::Resolved
            && closed.resolution.is_none()
            && closed.resolved_by.as_deref() == Some("system")
            && closed.resolved_at == Some(at + 2),
        "closed escalation reads {closed:?}"
    );
    let again = ctx(
        store
            .close_event_escalation(dead.event_id, "dead_letter", "system", at + 3)
            .await,
        "close again",
    )?;
    ensure!(again.is_none(), "closed twice: {again:?}");
    let decision = ctx(store.latest_resolution(dead.event_id).await, "latest")?;
    ensure!(
        decision.is_none(),
        "a closed escalation became a decision: {decision:?}"
    );
    let by_id = ctx(
        store.close_escalation(unsure.id, "lead", at + 4).await,
        "close",
    )?;
    ensure!(
        by_id.is_some_and(|e| e.resolution.is_none() && e.resolved_by.as_deref() == Some("lead")),
        "close by id did not close the open escalation"
    );
    let none = ctx(
        store.close_escalation(unsure.id, "lead", at + 5).await,
        "close",
    )?;
    ensure!(none.is_none(), "closed twice by id: {none:?}");
    Ok(())
}

/// Runs: pages by `(started_at, id)` (runs started in the same millisecond are neither
/// skipped nor repeated), both orders, totals with the filters and a caller's scope.
pub async fn check_paged_runs<S: Store>(store: &S) -> CheckResult {
    let t = tag();
    let c = format!("conf-runs-{t}");
    let other = format!("conf-runs-other-{t}");
    let at = 1_700_000_000_000;
    let start = |charter: String, started: UnixMillis| async move {
        let ev = match ctx(store.ingest(event(&charter, None, at)).await, "ingest")? {
            IngestOutcome::Stored(id) => id,
            d => return Err(format!("fresh event stored as {d:?}")),
        };
        let run = Uuid::now_v7();
        ctx(
            store
                .start_run(run, ev, &charter, "v1", "live", started)
                .await,
            "start_run",
        )?;
        Ok(run)
    };
    let mut runs = Vec::new();
    for i in 0..7 {
        // Three pairs share a millisecond: the id breaks the tie.
        runs.push(start(c.clone(), at + i / 2).await?);
    }
    start(other.clone(), at).await?;
    for run in &runs[..3] {
        ctx(
            store
                .finish_run(*run, Some(0), RunOutcome::Completed, None, at + 10)
                .await,
            "finish_run",
        )?;
    }
    let of_c = |sort, after, limit| RunFilter {
        charter: Some(c.clone()),
        sort,
        after,
        limit,
        ..RunFilter::default()
    };
    let newest: Vec<Uuid> = runs.iter().rev().copied().collect();
    for (sort, want) in [
        (None, newest.clone()),
        (Some(Sort::OldestFirst), runs.clone()),
    ] {
        for size in [2, 3] {
            let got = all_pages(
                size,
                |r: &RunRecord| (r.started_at, r.id),
                |r| r.id,
                |after, limit| async move {
                    ctx(store.list_runs(of_c(sort, after, limit)).await, "list_runs")
                },
            )
            .await?;
            ensure!(
                got == want,
                "run pages of {size} ({sort:?}) gave {got:?}, want {want:?}"
            );
        }
    }
    let total = ctx(
        store
            .count_runs(of_c(None, Some((at + 3, runs[6])), 1))
            .await,
        "count_runs",
    )?;
    ensure!(
        total == 7,
        "count_runs is {total} for 7 runs (after and limit must not apply)"
    );
    let done = ctx(
        store
            .count_runs(RunFilter {
                outcome: Some(RunOutcome::Completed),
                ..of_c(None, None, 0)
            })
            .await,
        "count_runs",
    )?;
    let running = ctx(
        store
            .count_runs(RunFilter {
                running: true,
                ..of_c(None, None, 0)
            })
            .await,
        "count_runs",
    )?;
    ensure!(
        done == 3 && running == 4,
        "completed {done} and running {running}, want 3 and 4"
    );
    scoped_runs(store, &c, &other, at).await
}

/// A caller's scope of charters counts and lists only their runs.
async fn scoped_runs<S: Store>(store: &S, c: &str, other: &str, at: UnixMillis) -> CheckResult {
    let scoped = |charters: Vec<String>| RunFilter {
        charters,
        since: Some(at),
        until: Some(at + 4),
        ..RunFilter::default()
    };
    let n_c = ctx(store.count_runs(scoped(vec![c.to_string()])).await, "count")?;
    let n_both = ctx(
        store
            .count_runs(scoped(vec![c.to_string(), other.to_string()]))
            .await,
        "count",
    )?;
    let listed = ctx(
        store
            .list_runs(RunFilter {
                limit: 100,
                ..scoped(vec![other.to_string()])
            })
            .await,
        "list_runs",
    )?;
    ensure!(
        n_c == 7 && n_both == 8 && listed.len() == 1 && listed[0].charter == other,
        "scoped counts {n_c} and {n_both} (want 7 and 8), scoped listing {listed:?}"
    );
    Ok(())
}

/// Rejected payloads: pages by id in both orders, totals with the time range and a caller's
/// scope.
pub async fn check_paged_rejected<S: Store>(store: &S) -> CheckResult {
    let t = tag();
    let c = format!("conf-rejected-{t}");
    let other = format!("conf-rejected-other-{t}");
    let at = 1_700_000_000_000;
    let rejected = |charter: &str, received: UnixMillis| RejectedPayload {
        id: Uuid::now_v7(),
        charter: charter.to_string(),
        source: "webhook:/hooks/lists".to_string(),
        received_at: received,
        headers: BTreeMap::new(),
        body: "{\"n\": \"x\"}".to_string(),
        reasons: vec!["/n: \"x\" is not of type \"integer\"".to_string()],
    };
    let mut ids = Vec::new();
    for i in 0..7 {
        let r = rejected(&c, at + i);
        ids.push(r.id);
        ctx(store.reject(r).await, "reject")?;
    }
    ctx(store.reject(rejected(&other, at)).await, "reject")?;
    let of_c = |sort, after, limit| RejectedFilter {
        charter: Some(c.clone()),
        sort,
        after,
        limit,
        ..RejectedFilter::default()
    };
    let newest: Vec<Uuid> = ids.iter().rev().copied().collect();
    for (sort, want) in [
        (None, newest.clone()),
        (Some(Sort::OldestFirst), ids.clone()),
    ] {
        let got = all_pages(
            3,
            |r: &RejectedPayload| r.id,
            |r| r.id,
            |after, limit| async move {
                ctx(
                    store.page_rejected(of_c(sort, after, limit)).await,
                    "page_rejected",
                )
            },
        )
        .await?;
        ensure!(
            got == want,
            "rejected pages of 3 ({sort:?}) gave {got:?}, want {want:?}"
        );
    }
    let total = ctx(
        store.count_rejected(of_c(None, Some(ids[6]), 1)).await,
        "count_rejected",
    )?;
    ensure!(
        total == 7,
        "count_rejected is {total} for 7 payloads (after and limit must not apply)"
    );
    let ranged = ctx(
        store
            .count_rejected(RejectedFilter {
                since: Some(at + 2),
                until: Some(at + 5),
                ..of_c(None, None, 0)
            })
            .await,
        "count_rejected",
    )?;
    ensure!(ranged == 3, "received in [at+2, at+5): {ranged}, want 3");
    let scoped = |charters: Vec<String>| RejectedFilter {
        charters,
        since: Some(at),
        until: Some(at + 7),
        ..RejectedFilter::default()
    };
    let n_c = ctx(store.count_rejected(scoped(vec![c.clone()])).await, "count")?;
    let n_both = ctx(
        store
            .count_rejected(scoped(vec![c.clone(), other.clone()]))
            .await,
        "count",
    )?;
    let first = ctx(
        store.list_rejected(Some(c.clone()), 2).await,
        "list_rejected",
    )?;
    ensure!(
        n_c == 7 && n_both == 8 && first.iter().map(|r| r.id).collect::<Vec<_>>() == newest[..2],
        "scoped counts {n_c} and {n_both} (want 7 and 8); list_rejected gave {first:?}"
    );
    Ok(())
}
