//! Scheduled retention: with `worker.retention` set, every worker node purges finished work
//! older than that once an hour (the store's purge is safe to run on several nodes at once:
//! each round takes its own events). What a purge removes and keeps is the store's
//! `RetentionStore` contract; each purge that removed something is on the audit log.

use std::time::Duration;

use charter_store::{NewAuditEntry, Purged, RetentionStore, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::{AppState, now_millis};

/// Events removed per round (one transaction each, so other writes go on between rounds).
pub const ROUND: usize = 500;

/// How often a worker node purges.
pub const EVERY: Duration = Duration::from_secs(3600);

/// Purge everything finished and received before `cutoff` (of `charter`, or of all), round
/// after round until a round finds nothing.
pub async fn purge_before<S: RetentionStore>(
    store: &S,
    cutoff: i64,
    charter: Option<&str>,
) -> Result<Purged, StoreError> {
    let mut total = Purged::default();
    loop {
        let round = store.purge(cutoff, charter, ROUND).await?;
        if round.is_empty() {
            return Ok(total);
        }
        total.add(round);
    }
}

/// One scheduled purge: work received more than `keep` ago, audited as `store.purge` by
/// `system` when anything went.
pub async fn purge_once<S: Store>(
    state: &AppState<S>,
    keep: Duration,
) -> Result<Purged, StoreError> {
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_millis().saturating_sub(keep_ms);
    let purged = purge_before(&state.store, cutoff, None).await?;
    if !purged.is_empty() {
        tracing::info!(
            events = purged.events,
            runs = purged.runs,
            rejected = purged.rejected,
            cutoff,
            "retention purge"
        );
        state
            .store
            .append_audit(NewAuditEntry {
                at: now_millis(),
                actor: "system".into(),
                action: "store.purge".into(),
                charter: None,
                target: None,
                detail: serde_json::json!({
                    "received_before": cutoff,
                    "events": purged.events,
                    "runs": purged.runs,
                    "rejected": purged.rejected,
                }),
            })
            .await?;
    }
    Ok(purged)
}

/// Purge every `every` (the first time one `every` after start) until shutdown. A failed
/// purge is logged and tried again at the next tick.
pub async fn run<S: Store>(
    state: AppState<S>,
    keep: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    crate::every(every, &shutdown, || async {
        if let Err(e) = purge_once(&state, keep).await {
            tracing::warn!(error = %e, "retention purge failed; will retry");
        }
    })
    .await;
}
