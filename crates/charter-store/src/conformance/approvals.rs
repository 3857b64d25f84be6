//! Checks of [`crate::ApprovalStore`].

use uuid::Uuid;

use super::{CheckResult, Ctx, charter, event_with_run, new_approval, now};
use crate::{ApprovalFilter, ApprovalStatus, NewApproval, Store, Verdict};

/// Approvals: created once per (event, action, hash), read back exactly, listed oldest
/// first by charter and status; approve with an edit and reject with a reason stick, and a
/// decided approval cannot be decided again.
pub async fn check_approvals<S: Store>(store: &S) -> CheckResult {
    let c = charter("approvals");
    let (ev, run) = event_with_run(store, &c).await?;
    let (first, other) = create_and_find(store, &c, ev, run).await?;
    approve_with_an_edit(store, &first).await?;
    reject_and_read_back(store, &c, other).await
}

/// Creating is idempotent per (event, action, hash); an approval is found by its hash and
/// listed pending, oldest first. Returns the first approval asked for and another one.
async fn create_and_find<S: Store>(
    store: &S,
    c: &str,
    ev: Uuid,
    run: Uuid,
) -> Result<(NewApproval, Uuid), String> {
    let first = new_approval(c, ev, run, "h1", Some(now() + 60_000));
    let a = store.create_approval(first.clone()).await.ctx("create")?;
    ensure!(a.id == first.id, "create returned another id: {a:?}");
    ensure!(
        a.status == ApprovalStatus::Pending,
        "new approval is {:?}",
        a.status
    );
    ensure!(a.params == first.params, "params changed: {:?}", a.params);
    ensure!(
        a.reviewers == first.reviewers,
        "reviewers changed: {:?}",
        a.reviewers
    );
    ensure!(a.expires_at == first.expires_at, "deadline changed");
    ensure!(
        a.on_expiry.as_deref() == Some("reject"),
        "on_expiry changed"
    );
    // The same key again (a re-run) gives back the stored approval, not a second one.
    let again = store
        .create_approval(new_approval(c, ev, run, "h1", None))
        .await
        .ctx("create again")?;
    ensure!(
        again.id == first.id,
        "a second approval was created for the same key"
    );
    let other = store
        .create_approval(new_approval(c, ev, run, "h2", None))
        .await
        .ctx("create other")?;
    ensure!(
        other.id != first.id,
        "another hash must be another approval"
    );
    let found = store.find_approval(ev, "reply", "h2").await.ctx("find")?;
    ensure!(
        found.as_ref().map(|f| f.id) == Some(other.id),
        "find: {found:?}"
    );
    ensure!(
        store
            .find_approval(ev, "reply", "nope")
            .await
            .ctx("find")?
            .is_none(),
        "found an approval for an unknown hash"
    );
    let pending = store
        .list_approvals(ApprovalFilter {
            charter: Some(c.to_string()),
            status: Some(ApprovalStatus::Pending),
            ..Default::default()
        })
        .await
        .ctx("list")?;
    let ids: Vec<Uuid> = pending.iter().map(|p| p.id).collect();
    ensure!(
        ids == vec![first.id, other.id],
        "pending list (oldest first): {ids:?}"
    );
    Ok((first, other.id))
}

/// An approval with an edit keeps the original parameters beside the edit; a decided
/// approval is not decided again.
async fn approve_with_an_edit<S: Store>(store: &S, first: &NewApproval) -> CheckResult {
    let edited = serde_json::json!({"json": {"body": "edited"}, "target": "/t/1"});
    let won = store
        .decide_approval(
            first.id,
            Verdict::Approve {
                edited: Some((edited.clone(), "h1-edited".into())),
            },
            "lead",
            now(),
        )
        .await
        .ctx("approve")?;
    let won = won.ok_or("approving a pending approval did not win")?;
    ensure!(
        won.status == ApprovalStatus::Approved,
        "approved is {:?}",
        won.status
    );
    ensure!(
        won.decided_by.as_deref() == Some("lead"),
        "decided_by {:?}",
        won.decided_by
    );
    ensure!(
        won.edited_params.as_ref() == Some(&edited),
        "edit lost: {won:?}"
    );
    ensure!(
        won.edited_hash.as_deref() == Some("h1-edited"),
        "edit hash lost"
    );
    ensure!(
        won.effective_params() == &edited,
        "effective params are not the edit"
    );
    ensure!(
        won.params == first.params,
        "the original params must be kept"
    );
    let second = store
        .decide_approval(
            first.id,
            Verdict::Reject {
                reason: "late".into(),
            },
            "ops",
            now(),
        )
        .await
        .ctx("decide again")?;
    ensure!(second.is_none(), "a decided approval was decided again");
    Ok(())
}

/// A rejection keeps its reason and reads back as decided; an unknown approval is not
/// decided; nothing is left pending.
async fn reject_and_read_back<S: Store>(store: &S, c: &str, other: Uuid) -> CheckResult {
    let rejected = store
        .decide_approval(
            other,
            Verdict::Reject {
                reason: "wrong customer".into(),
            },
            "ops",
            now(),
        )
        .await
        .ctx("reject")?
        .ok_or("rejecting a pending approval did not win")?;
    ensure!(
        rejected.status == ApprovalStatus::Rejected,
        "rejected is {:?}",
        rejected.status
    );
    ensure!(
        rejected.comment.as_deref() == Some("wrong customer"),
        "reason lost"
    );
    let got = store.get_approval(other).await.ctx("get")?;
    ensure!(
        got.as_ref() == Some(&rejected),
        "get differs from the decided record: {got:?}"
    );
    ensure!(
        store
            .decide_approval(
                Uuid::now_v7(),
                Verdict::Approve { edited: None },
                "x",
                now()
            )
            .await
            .ctx("decide unknown")?
            .is_none(),
        "deciding an unknown approval won"
    );
    let left = store
        .list_approvals(ApprovalFilter {
            charter: Some(c.to_string()),
            status: Some(ApprovalStatus::Pending),
            ..Default::default()
        })
        .await
        .ctx("list")?;
    ensure!(left.is_empty(), "decided approvals still listed as pending");
    Ok(())
}

/// Concurrent approvals of one item: exactly one call wins.
pub async fn check_concurrent_approval<S: Store>(store: &S) -> CheckResult {
    let c = charter("approve-race");
    let (ev, run) = event_with_run(store, &c).await?;
    let a = store
        .create_approval(new_approval(&c, ev, run, "race", None))
        .await
        .ctx("create")?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let s = store.clone();
        tasks.spawn(async move {
            let verdict = if i % 2 == 0 {
                Verdict::Approve { edited: None }
            } else {
                Verdict::Reject {
                    reason: format!("no {i}"),
                }
            };
            s.decide_approval(a.id, verdict, &format!("r{i}"), now())
                .await
        });
    }
    let mut wins = 0;
    while let Some(r) = tasks.join_next().await {
        if r.map_err(|e| e.to_string())?.ctx("decide")?.is_some() {
            wins += 1;
        }
    }
    ensure!(
        wins == 1,
        "{wins} concurrent decisions won, expected exactly 1"
    );
    Ok(())
}

/// An approval past its deadline cannot be approved; expiry marks it once.
pub async fn check_approval_expiry<S: Store>(store: &S) -> CheckResult {
    let c = charter("approve-expiry");
    let (ev, run) = event_with_run(store, &c).await?;
    let t = now();
    let due = store
        .create_approval(new_approval(&c, ev, run, "due", Some(t + 1_000)))
        .await
        .ctx("create")?;
    let later = store
        .create_approval(new_approval(&c, ev, run, "later", Some(t + 3_600_000)))
        .await
        .ctx("create")?;
    let late = store
        .decide_approval(due.id, Verdict::Approve { edited: None }, "lead", t + 1_000)
        .await
        .ctx("approve at the deadline")?;
    ensure!(late.is_none(), "an approval was approved at its deadline");
    let expired = store.expire_approvals(t + 2_000).await.ctx("expire")?;
    let mine: Vec<Uuid> = expired
        .iter()
        .filter(|a| a.charter == c)
        .map(|a| a.id)
        .collect();
    ensure!(
        mine == vec![due.id],
        "expired {mine:?}, expected only the due one"
    );
    ensure!(
        expired.iter().all(|a| a.status == ApprovalStatus::Expired),
        "expired records are not marked expired"
    );
    let again = store
        .expire_approvals(t + 2_000)
        .await
        .ctx("expire again")?;
    ensure!(
        !again.iter().any(|a| a.id == due.id),
        "an approval was expired twice"
    );
    let got = store.get_approval(due.id).await.ctx("get")?.ok_or("lost")?;
    ensure!(
        got.status == ApprovalStatus::Expired,
        "status after expiry {:?}",
        got.status
    );
    ensure!(
        store
            .decide_approval(due.id, Verdict::Approve { edited: None }, "lead", t)
            .await
            .ctx("approve expired")?
            .is_none(),
        "an expired approval was approved"
    );
    let still = store
        .get_approval(later.id)
        .await
        .ctx("get")?
        .ok_or("lost")?;
    ensure!(
        still.status == ApprovalStatus::Pending,
        "a future deadline expired"
    );
    Ok(())
}
