//! The behaviour every store backend must show (built with the `conformance` feature, for
//! tests only).
//!
//! Each `check_*` function exercises one part of the [`Store`] contract against a live store
//! and returns `Err` with a description of the first broken expectation. The checks use
//! charter names unique to the call, so they can share one store (even one that already
//! holds data) and run in any order. One file per concern, as in the backends.
//!
//! A backend's test binary implements [`Backend`] (how to open a fresh store for one check)
//! and calls [`conformance_tests!`](crate::conformance_tests) in a module named after the
//! backend: that makes one test per check, so a failure names the check and the backend
//! (`sqlite::check_approvals`).
//!
//! The checks need a multi-threaded Tokio runtime (they spawn concurrent tasks).

/// Fail the check with a formatted message unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

mod approvals;
mod audit;
mod decision;
mod escalations;
mod events;
mod interrupted;
mod knowledge;
mod lists;
mod notifications;
mod operator;
mod queue;
mod report;
mod retention;
mod rollout;
mod runs;
mod sessions;
mod sources;

use std::collections::BTreeMap;
use std::future::Future;

use charter_core::model::{NewEvent, UnixMillis};
use uuid::Uuid;

use crate::{IngestOutcome, NewApproval, ReportQuery, Store};

pub use approvals::{check_approval_expiry, check_approvals, check_concurrent_approval};
pub use audit::check_audit_log;
pub use decision::check_decision_store;
pub use escalations::check_escalations;
pub use events::{
    check_concurrent_dedupe, check_dedupe, check_ingest_get, check_ingest_json, check_list_events,
    check_nul_characters, check_rejected, check_rejected_cap,
};
pub use interrupted::check_interrupted_runs;
pub use knowledge::check_knowledge;
pub use lists::{
    check_close_escalation, check_paged_events, check_paged_queues, check_paged_rejected,
    check_paged_runs,
};
pub use notifications::check_notifications;
pub use operator::check_operator;
pub use queue::{
    check_claim_context, check_claim_limit, check_lease_expiry, check_pause, check_pending_counts,
    check_release_leases, check_requeue,
};
pub use report::{check_incidents, check_reports};
pub use retention::check_retention;
pub use rollout::check_rollout;
pub use runs::{check_list_runs, check_record_run, check_run_lifecycle};
pub use sessions::check_ui_sessions;
pub use sources::check_source_state;

/// A backend under test: how to get a fresh store for one check, and how to clean up after
/// it. Implemented by each backend's test binary for [`conformance_tests!`](crate::conformance_tests).
pub trait Backend: Sized {
    /// The store the checks run against.
    type Store: Store;

    /// Open a store for the check named `check`, or `None` when this backend's tests skip
    /// (its server is absent and skipping is allowed).
    fn open(check: &'static str) -> impl Future<Output = Option<Self>>;

    /// The store to check.
    fn store(&self) -> &Self::Store;

    /// Close the store and release what [`Backend::open`] made (runs after the check,
    /// whether it passed or not).
    fn finish(self) -> impl Future<Output = ()>;
}

/// Run one check against a fresh store of backend `B`; panics with the check's failure.
/// Used by the tests [`conformance_tests!`](crate::conformance_tests) makes.
pub async fn run_check<B, F>(name: &'static str, check: F)
where
    B: Backend,
    F: AsyncFnOnce(&B::Store) -> CheckResult,
{
    let Some(backend) = B::open(name).await else {
        return;
    };
    let result = check(backend.store()).await;
    backend.finish().await;
    if let Err(failure) = result {
        panic!("{name}: {failure}");
    }
}

/// One `#[tokio::test]` per conformance check against backend `$backend` (a type
/// implementing [`conformance::Backend`](crate::conformance::Backend)), each named after its
/// check. Call it inside a module named after the backend:
///
/// ```ignore
/// mod sqlite {
///     charter_store::conformance_tests!(super::SqliteBackend);
/// }
/// ```
///
/// The calling crate needs `tokio` (with the `macros` and `rt-multi-thread` features).
#[macro_export]
macro_rules! conformance_tests {
    (@each $backend:ty; $($check:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                $crate::conformance::run_check::<$backend, _>(
                    stringify!($check),
                    async |store| $crate::conformance::$check(store).await,
                )
                .await;
            }
        )+
    };
    ($backend:ty) => {
        $crate::conformance_tests!(@each $backend;
            check_ingest_get,
            check_dedupe,
            check_ingest_json,
            check_concurrent_dedupe,
            check_rejected,
            check_rejected_cap,
            check_claim_limit,
            check_pause,
            check_lease_expiry,
            check_release_leases,
            check_interrupted_runs,
            check_requeue,
            check_run_lifecycle,
            check_record_run,
            check_claim_context,
            check_list_events,
            check_list_runs,
            check_paged_events,
            check_paged_queues,
            check_paged_runs,
            check_paged_rejected,
            check_close_escalation,
            check_pending_counts,
            check_approvals,
            check_concurrent_approval,
            check_approval_expiry,
            check_escalations,
            check_audit_log,
            check_reports,
            check_incidents,
            check_notifications,
            check_rollout,
            check_operator,
            check_source_state,
            check_decision_store,
            check_retention,
            check_nul_characters,
            check_ui_sessions,
            check_knowledge,
        );
    };
}

/// Outcome of one check: `Err` describes what the backend got wrong.
pub type CheckResult = Result<(), String>;

/// Turn a store error into a check failure that says which call failed.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// A charter name no other check (or earlier run against the same database) uses.
fn charter(name: &str) -> String {
    // The tail of a UUIDv7 is random; the head is the clock.
    let tag = Uuid::now_v7().simple().to_string();
    format!("conf-{name}-{}", &tag[tag.len() - 12..])
}

fn now() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An event for `charter` with a fresh UUIDv7 (ids made later sort later).
fn event(charter: &str, dedupe: Option<&str>, received_at: UnixMillis) -> NewEvent {
    let mut headers = BTreeMap::new();
    headers.insert("content-type".to_string(), "application/json".to_string());
    headers.insert("x-request-id".to_string(), Uuid::now_v7().to_string());
    NewEvent {
        id: Uuid::now_v7(),
        charter: charter.to_string(),
        source: "webhook:/hooks/conformance".to_string(),
        event_type: Some("ticket.updated".to_string()),
        dedupe_key: dedupe.map(str::to_string),
        received_at,
        headers,
        payload: serde_json::json!({
            "ticket": { "id": 42, "subject": "Refund — ünïcode ✓", "tags": ["a", "b"] },
            "n": 1.5,
            "nil": null
        }),
    }
}

async fn stored<S: Store>(store: &S, ev: NewEvent) -> Result<Uuid, String> {
    match store.ingest(ev).await.ctx("ingest")? {
        IngestOutcome::Stored(id) => Ok(id),
        other => Err(format!("ingest of a fresh event returned {other:?}")),
    }
}

/// An event with a started run, for the approval and escalation checks.
async fn event_with_run<S: Store>(store: &S, c: &str) -> Result<(Uuid, Uuid), String> {
    let id = stored(store, event(c, None, now())).await?;
    let run = Uuid::now_v7();
    store
        .start_run(run, id, c, "v1", "live", now())
        .await
        .ctx("start_run")?;
    Ok((id, run))
}

fn new_approval(
    c: &str,
    event_id: Uuid,
    run_id: Uuid,
    hash: &str,
    expires_at: Option<UnixMillis>,
) -> NewApproval {
    NewApproval {
        id: Uuid::now_v7(),
        run_id,
        event_id,
        charter: c.to_string(),
        action: "reply".to_string(),
        params: serde_json::json!({"json": {"body": "hello ✓"}, "target": "/t/1"}),
        params_hash: hash.to_string(),
        reviewers: vec!["lead".to_string(), "ops".to_string()],
        created_at: now(),
        expires_at,
        on_expiry: Some("reject".to_string()),
    }
}

/// How many `name` measurements `charter`'s report counts in `[since, until)`.
async fn measured<S: Store>(
    store: &S,
    charter: &str,
    name: &str,
    since: UnixMillis,
    until: UnixMillis,
) -> Result<u64, String> {
    let report = store
        .report(ReportQuery {
            charter: charter.to_string(),
            since,
            until,
            buckets: 1,
        })
        .await
        .ctx("report")?;
    Ok(report.measurements.get(name).map_or(0, |m| m.count))
}
