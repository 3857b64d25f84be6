//! Checks of [`crate::AuditStore`].

use super::{CheckResult, Ctx, charter, now};
use crate::{AuditFilter, NewAuditEntry, Store};

/// The audit log: appended entries read back newest first, filtered by charter and actor.
pub async fn check_audit_log<S: Store>(store: &S) -> CheckResult {
    let c = charter("audit");
    let mut seqs = Vec::new();
    for (i, actor) in ["alice", "bob", "alice"].iter().enumerate() {
        let seq = store
            .append_audit(NewAuditEntry {
                at: now(),
                actor: actor.to_string(),
                action: format!("test.step{i}"),
                charter: Some(c.clone()),
                target: Some(format!("t{i}")),
                detail: serde_json::json!({"i": i}),
            })
            .await
            .ctx("append")?;
        seqs.push(seq);
    }
    ensure!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence not increasing: {seqs:?}"
    );
    let all = store
        .list_audit(AuditFilter {
            charter: Some(c.clone()),
            ..Default::default()
        })
        .await
        .ctx("list")?;
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    ensure!(
        actions == ["test.step2", "test.step1", "test.step0"],
        "newest first: {actions:?}"
    );
    ensure!(all[2].detail == serde_json::json!({"i": 0}), "detail lost");
    ensure!(all[2].target.as_deref() == Some("t0"), "target lost");
    let alice = store
        .list_audit(AuditFilter {
            charter: Some(c.clone()),
            actor: Some("alice".into()),
            ..Default::default()
        })
        .await
        .ctx("list by actor")?;
    ensure!(
        alice.len() == 2,
        "actor filter gave {} entries",
        alice.len()
    );
    let one = store
        .list_audit(AuditFilter {
            charter: Some(c.clone()),
            limit: 1,
            ..Default::default()
        })
        .await
        .ctx("list with limit")?;
    ensure!(one.len() == 1 && one[0].seq == seqs[2], "limit: {one:?}");
    Ok(())
}
