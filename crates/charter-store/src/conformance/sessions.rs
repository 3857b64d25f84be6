//! Checks of [`crate::SessionStore`].

use uuid::Uuid;

use super::{CheckResult, Ctx, now};
use crate::Store;

/// A UI session reads back exactly while live, is gone once expired or deleted, and
/// creating one deletes the sessions expired by then.
pub async fn check_ui_sessions<S: Store>(store: &S) -> CheckResult {
    let now = now();
    let tag = Uuid::now_v7().simple().to_string();
    let live = crate::UiSession {
        id_hash: format!("live-{tag}"),
        name: "ann".into(),
        role: "reviewer".into(),
        charters: vec!["a".into(), "b — ü".into()],
        csrf: format!("csrf-{tag}"),
        grant: format!("grant-{tag}"),
        created_at: now,
        expires_at: now + 60_000,
    };
    let stale = crate::UiSession {
        id_hash: format!("stale-{tag}"),
        charters: vec![],
        created_at: now - 120_000,
        expires_at: now - 60_000,
        ..live.clone()
    };
    store
        .create_session(stale.clone())
        .await
        .ctx("create_session (already expired)")?;
    let got = store
        .session(&stale.id_hash, now - 90_000)
        .await
        .ctx("session (stale, before its expiry)")?;
    ensure!(
        got.as_ref() == Some(&stale),
        "a session before its expiry read back as {got:?}"
    );
    ensure!(
        store
            .session(&stale.id_hash, now)
            .await
            .ctx("session (stale)")?
            .is_none(),
        "an expired session was still returned"
    );
    store
        .create_session(live.clone())
        .await
        .ctx("create_session")?;
    let got = store
        .session(&live.id_hash, now)
        .await
        .ctx("session (live)")?;
    ensure!(
        got.as_ref() == Some(&live),
        "a live session read back as {got:?}, expected {live:?}"
    );
    ensure!(
        store
            .session(&stale.id_hash, now - 90_000)
            .await
            .ctx("session (stale, after a create)")?
            .is_none(),
        "creating a session did not delete one expired by then"
    );
    ensure!(
        store
            .session(&format!("other-{tag}"), now)
            .await
            .ctx("session (unknown)")?
            .is_none(),
        "an unknown id hash found a session"
    );
    ensure!(
        store
            .delete_session(&live.id_hash)
            .await
            .ctx("delete_session")?,
        "deleting a live session said there was none"
    );
    ensure!(
        !store
            .delete_session(&live.id_hash)
            .await
            .ctx("delete_session (again)")?,
        "deleting a session twice said it was there the second time"
    );
    ensure!(
        store
            .session(&live.id_hash, now)
            .await
            .ctx("session (deleted)")?
            .is_none(),
        "a deleted session was still returned"
    );
    Ok(())
}
