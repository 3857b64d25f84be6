//! Evaluating a charter's CEL expressions (rules and routes) in the server: within a budget
//! and, when an expression's cost can grow faster than its input, away from the async
//! runtime's worker threads, so that one costly payload fails its own event and the node
//! keeps answering (`/healthz`, ingest, the API) meanwhile.
//!
//! An expression without loops or computed `matches()` patterns does work linear in its
//! input, which the body limit bounds: it runs in place (moving it would cost more than it
//! does). One with loops runs under [`tokio::task::block_in_place`], which hands this
//! thread's other tasks to another worker thread for the length of the evaluation, and at
//! most one fewer than the machine's cores of them run at once (a core stays with the
//! runtime); the budget ([`budget`]) stops it after [`charter_core::expr::DEFAULT_STEPS`]
//! steps or [`TIME_LIMIT`], whichever comes first.

use std::sync::OnceLock;
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
    off_runtime(expr.is_costly(), || expr.eval_bool_within(ctx, &budget())).await
}

/// The first route of `charter` whose `when` holds over `ctx`, each evaluated within
/// [`budget`]; all of them off the runtime's worker threads when one is costly.
pub async fn first_matching_route(
    charter: &Charter,
    ctx: &Value,
) -> Result<Option<usize>, ExprError> {
    let costly = charter.routes.iter().any(|r| r.when.is_costly());
    off_runtime(costly, || {
        charter_core::routing::first_matching_route_within(charter, ctx, &budget())
    })
    .await
}

/// Runs `f` in place, or, when `costly` and the runtime has worker threads to hand this
/// one's tasks to (a current-thread runtime, as in some tests and one-shot commands, has
/// none: there it runs in place), under `block_in_place` once one of the [`slots`] is free.
/// The wait for a slot is asynchronous: the run's other work (renewing its lease) goes on.
async fn off_runtime<R>(costly: bool, f: impl FnOnce() -> R) -> R {
    let multi_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if !(costly && multi_thread) {
        return f();
    }
    // The semaphore is never closed, so acquiring fails never; should it, evaluate anyway.
    let _slot = slots().acquire().await.ok();
    tokio::task::block_in_place(f)
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
