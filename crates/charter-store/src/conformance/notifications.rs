//! Conformance check of [`crate::NotificationStore`], run by
//! the conformance tests against every backend.

use uuid::Uuid;

use super::CheckResult;
use crate::notifications::{Delivery, NewNotification, NotificationKind, NotificationState};
use crate::{NotificationRecord, Store};

fn ctx<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn ours(v: Vec<NotificationRecord>, charter: &str) -> Vec<NotificationRecord> {
    v.into_iter().filter(|n| n.charter == charter).collect()
}

/// The outbox: one row per (item, target) however often it is queued; a claim leases rows
/// so a second claim does not return them; sent, retried and failed deliveries are kept.
pub async fn check_notifications<S: Store>(store: &S) -> CheckResult {
    let tag = Uuid::now_v7().simple().to_string();
    let charter = format!("conf-notify-{}", &tag[tag.len() - 12..]);
    let base = 1_700_000_000_000 + i64::from(rand_u16(&tag)) * 1000;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    enqueue_once_per_target(store, &charter, base, a, b).await?;
    let claimed = claim_leases(store, &charter, base).await?;
    let rows = finish_deliveries(store, base, a, b, &claimed).await?;
    retry_comes_back(store, &charter, base, &rows).await?;
    finished_rows_stay(store, &charter, base, &rows).await
}

/// Queueing the same (item, target) again adds nothing; new rows are pending, due at
/// creation.
async fn enqueue_once_per_target<S: Store>(
    store: &S,
    charter: &str,
    base: i64,
    a: Uuid,
    b: Uuid,
) -> CheckResult {
    let new = |item: Uuid, kind, target: &str, at: i64| NewNotification {
        id: Uuid::now_v7(),
        kind,
        item_id: item,
        charter: charter.to_string(),
        target: target.to_string(),
        created_at: at,
    };
    let added = ctx(
        store
            .enqueue_notifications(vec![
                new(a, NotificationKind::Approval, "hooks:/in", base),
                new(a, NotificationKind::Approval, "slack:#ops", base),
            ])
            .await,
        "enqueue",
    )?;
    ensure!(added == 2, "two new notifications, got {added}");
    let added = ctx(
        store
            .enqueue_notifications(vec![
                new(a, NotificationKind::Approval, "slack:#ops", base + 5),
                new(b, NotificationKind::Escalation, "slack:#ops", base + 1),
            ])
            .await,
        "enqueue again",
    )?;
    ensure!(added == 1, "only the escalation's row is new, got {added}");
    let of_a = ctx(store.list_notifications(Some(a), 10).await, "list a")?;
    ensure!(of_a.len() == 2, "item a has two rows: {of_a:?}");
    ensure!(
        of_a.iter().all(|n| n.state == NotificationState::Pending
            && n.attempts == 0
            && n.kind == NotificationKind::Approval
            && n.next_attempt_at == base
            && n.sent_at.is_none()),
        "new rows are pending, due at creation: {of_a:?}"
    );

    Ok(())
}

/// Rows are due from creation; a claim leases them so a second claim does not return them.
async fn claim_leases<S: Store>(
    store: &S,
    charter: &str,
    base: i64,
) -> Result<Vec<NotificationRecord>, String> {
    // Not due before creation.
    let early = ours(
        ctx(
            store.claim_notifications(base - 1, base + 100, 1000).await,
            "claim early",
        )?,
        charter,
    );
    ensure!(
        early.is_empty(),
        "nothing is due before it was queued: {early:?}"
    );
    let claimed = ours(
        ctx(
            store.claim_notifications(base + 1, base + 100, 1000).await,
            "claim",
        )?,
        charter,
    );
    ensure!(claimed.len() == 3, "three rows due: {claimed:?}");
    ensure!(
        claimed
            .iter()
            .all(|n| n.attempts == 1 && n.next_attempt_at == base + 100),
        "claimed rows are leased: {claimed:?}"
    );
    let again = ours(
        ctx(
            store.claim_notifications(base + 50, base + 150, 1000).await,
            "claim again",
        )?,
        charter,
    );
    ensure!(
        again.is_empty(),
        "leased rows are not claimed twice: {again:?}"
    );

    Ok(claimed)
}

/// The claimed rows of [`check_notifications`], by what happens to them.
struct Rows {
    hook: Uuid,
    slack: Uuid,
    escalation: Uuid,
}

/// The hook row is sent, the Slack row retried later, the escalation's row failed.
async fn finish_deliveries<S: Store>(
    store: &S,
    base: i64,
    a: Uuid,
    b: Uuid,
    claimed: &[NotificationRecord],
) -> Result<Rows, String> {
    let escalation = claimed
        .iter()
        .find(|n| n.item_id == b)
        .ok_or("the escalation's row was claimed")?;
    ensure!(
        escalation.kind == NotificationKind::Escalation,
        "kind kept: {escalation:?}"
    );
    let hook = claimed
        .iter()
        .find(|n| n.item_id == a && n.target == "hooks:/in")
        .ok_or("the hook row was claimed")?;
    let slack = claimed
        .iter()
        .find(|n| n.item_id == a && n.target == "slack:#ops")
        .ok_or("the slack row was claimed")?;
    ctx(
        store
            .finish_notification(hook.id, Delivery::Sent, base + 10)
            .await,
        "sent",
    )?;
    ctx(
        store
            .finish_notification(
                slack.id,
                Delivery::Retry {
                    at: base + 1000,
                    error: "HTTP 503".into(),
                },
                base + 10,
            )
            .await,
        "retry",
    )?;
    ctx(
        store
            .finish_notification(
                escalation.id,
                Delivery::Failed {
                    error: "connector refused".into(),
                },
                base + 10,
            )
            .await,
        "failed",
    )?;
    Ok(Rows {
        hook: hook.id,
        slack: slack.id,
        escalation: escalation.id,
    })
}

/// A retried row waits for its time, then comes back with a second attempt and its error.
async fn retry_comes_back<S: Store>(
    store: &S,
    charter: &str,
    base: i64,
    rows: &Rows,
) -> CheckResult {
    let before_retry = ours(
        ctx(
            store
                .claim_notifications(base + 999, base + 2000, 1000)
                .await,
            "claim before retry",
        )?,
        charter,
    );
    ensure!(before_retry.is_empty(), "the retry waits: {before_retry:?}");
    let retried = ours(
        ctx(
            store
                .claim_notifications(base + 1000, base + 2000, 1000)
                .await,
            "claim retry",
        )?,
        charter,
    );
    ensure!(
        retried.len() == 1 && retried[0].id == rows.slack && retried[0].attempts == 2,
        "the retried row comes back with a second attempt: {retried:?}"
    );
    ensure!(
        retried[0].last_error.as_deref() == Some("HTTP 503"),
        "the last error is kept: {retried:?}"
    );
    ctx(
        store
            .finish_notification(rows.slack, Delivery::Sent, base + 1001)
            .await,
        "sent 2",
    )?;
    Ok(())
}

/// A finished row does not change any more, keeps its state, and is never claimed again.
async fn finished_rows_stay<S: Store>(
    store: &S,
    charter: &str,
    base: i64,
    rows: &Rows,
) -> CheckResult {
    // A finished row does not change any more.
    ctx(
        store
            .finish_notification(
                rows.hook,
                Delivery::Failed {
                    error: "late".into(),
                },
                base + 1002,
            )
            .await,
        "finish a sent row",
    )?;
    let all = ours(
        ctx(store.list_notifications(None, 100_000).await, "list all")?,
        charter,
    );
    ensure!(all.len() == 3, "three rows in all: {all:?}");
    let state = |id: Uuid| all.iter().find(|n| n.id == id).cloned();
    let h = state(rows.hook).ok_or("hook row listed")?;
    ensure!(
        h.state == NotificationState::Sent
            && h.sent_at == Some(base + 10)
            && h.last_error.is_none(),
        "the hook row stays sent: {h:?}"
    );
    let s = state(rows.slack).ok_or("slack row listed")?;
    ensure!(
        s.state == NotificationState::Sent
            && s.sent_at == Some(base + 1001)
            && s.last_error.is_none(),
        "the slack row was sent on retry: {s:?}"
    );
    let e = state(rows.escalation).ok_or("escalation row listed")?;
    ensure!(
        e.state == NotificationState::Failed
            && e.last_error.as_deref() == Some("connector refused"),
        "the escalation row failed with its reason: {e:?}"
    );
    let later = ours(
        ctx(
            store
                .claim_notifications(base + 100_000, base + 200_000, 1000)
                .await,
            "claim later",
        )?,
        charter,
    );
    ensure!(
        later.is_empty(),
        "finished rows are never claimed: {later:?}"
    );
    Ok(())
}

/// A small number from the random tail of a UUIDv7, so repeated runs against one database
/// use different times.
fn rand_u16(tag: &str) -> u16 {
    u16::from_str_radix(&tag[tag.len() - 4..], 16).unwrap_or(0)
}
