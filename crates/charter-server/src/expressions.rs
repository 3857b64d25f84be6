//! Evaluating a charter's CEL expressions (rules and routes) in the server: within a budget
//! and, when an expression's cost can grow faster than its input, off the async runtime's
//! worker threads, so that one costly payload fails its own event and the node keeps
//! answering (`/healthz`, ingest, the API) meanwhile.
//!
//! An expression without loops or computed `matches()` patterns does work linear in its
//! input, which the body limit bounds: it runs in place (moving it would cost more than it
//! does). One with loops runs on the blocking pool ([`tokio::task::spawn_blocking`], with its
//! own copy of the context), at most one fewer than the machine's cores of them at once (a
//! core stays with the runtime). The run's task is not held meanwhile, so it keeps renewing
//! its lease. The budget ([`budget`]) stops an evaluation after
//! [`charter_core::expr::DEFAULT_STEPS`] steps or [`TIME_LIMIT`], whichever comes first.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use charter_core::config::Charter;
use charter_core::expr::{Budget, DEFAULT_STEPS, Deadline, Expr, ExprError};
use serde_json::Value;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;

/// The longest one evaluation may take, whatever its step count: the backstop for steps
/// that are themselves costly (comparing long strings or lists). It is wall-clock time, so
/// it is set well above what the step budget takes on an idle machine (about 0.7 s for the
/// costliest steps), leaving room for a busy one: steps are the limit an event normally
/// meets, and the same on every machine.
pub const TIME_LIMIT: Duration = Duration::from_secs(5);

/// The budget of one evaluation in the server: [`DEFAULT_STEPS`] steps, [`TIME_LIMIT`].
pub fn budget() -> Budget {
    Budget {
        steps: DEFAULT_STEPS,
        deadline: Some(Deadline {
            limit: TIME_LIMIT,
            now: Instant::now,
        }),
    }
}

/// Evaluates `expr` over `ctx` within [`budget`], off the runtime's worker threads when it
/// is costly ([`Expr::is_costly`]).
pub async fn eval_bool(expr: &Expr, ctx: &Value) -> Result<bool, ExprError> {
    if !(expr.is_costly() && multi_thread()) {
        return expr.eval_bool_within(ctx, &budget());
    }
    let (expr, ctx) = (expr.clone(), ctx.clone());
    off_runtime(move || expr.eval_bool_within(&ctx, &budget())).await
}

/// The first route of `charter` whose `when` holds over `ctx`, each evaluated within
/// [`budget`]; all of them off the runtime's worker threads when one is costly.
pub async fn first_matching_route(
    charter: &Arc<Charter>,
    ctx: &Value,
) -> Result<Option<usize>, ExprError> {
    let costly = charter.routes.iter().any(|r| r.when.is_costly());
    if !(costly && multi_thread()) {
        return charter_core::routing::first_matching_route_within(charter, ctx, &budget());
    }
    let (charter, ctx) = (Arc::clone(charter), ctx.clone());
    off_runtime(move || {
        charter_core::routing::first_matching_route_within(&charter, &ctx, &budget())
    })
    .await
}

/// Whether the current runtime has worker threads to keep free (a current-thread runtime, as
/// in some tests and one-shot commands, has none: there everything runs in place).
fn multi_thread() -> bool {
    Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

/// Runs `f` on the blocking pool once one of the [`slots`] is free. The wait for a slot is
/// asynchronous, and the slot is held by the evaluation itself, so a run abandoned meanwhile
/// (its lease lost) cannot let more evaluations run at once than there are slots.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ExprError> + Send + 'static,
) -> Result<T, ExprError> {
    // The semaphore is never closed, so acquiring fails never; should it, evaluate anyway.
    let slot = slots().acquire().await.ok();
    match tokio::task::spawn_blocking(move || {
        let _slot = slot;
        f()
    })
    .await
    {
        Ok(answer) => answer,
        // A panic in the evaluation is the caller's panic, as it would be in place.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels a blocking task; the run ends with it.
        Err(_) => Err(ExprError::Eval {
            expr: String::new(),
            message: "the evaluation was cancelled: the server is shutting down".into(),
        }),
    }
}

/// Costly evaluations running at once: one fewer than the machine's cores (at least one),
/// so that however many costly events arrive together, a core is left to the runtime's
/// threads (requests, ingest, the worker's I/O).
fn slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Semaphore::new(cores.saturating_sub(1).max(1))
    })
}
