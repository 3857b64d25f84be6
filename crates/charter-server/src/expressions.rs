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

use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use charter_core::config::Charter;
use charter_core::expr::{Budget, DEFAULT_STEPS, Deadline, Expr, ExprError};
use serde_json::Value;
use tokio::runtime::{Handle, RuntimeFlavor};

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
pub fn eval_bool(expr: &Expr, ctx: &Value) -> Result<bool, ExprError> {
    off_runtime(expr.is_costly(), || expr.eval_bool_within(ctx, &budget()))
}

/// The first route of `charter` whose `when` holds over `ctx`, each evaluated within
/// [`budget`]; all of them off the runtime's worker threads when one is costly.
pub fn first_matching_route(charter: &Charter, ctx: &Value) -> Result<Option<usize>, ExprError> {
    let costly = charter.routes.iter().any(|r| r.when.is_costly());
    off_runtime(costly, || {
        charter_core::routing::first_matching_route_within(charter, ctx, &budget())
    })
}

/// Runs `f` in place, or under `block_in_place` when `costly` and the runtime has worker
/// threads to hand this one's tasks to (a current-thread runtime, as in some tests and
/// one-shot commands, has none: there it runs in place).
fn off_runtime<R>(costly: bool, f: impl FnOnce() -> R) -> R {
    let multi_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if costly && multi_thread {
        tokio::task::block_in_place(|| {
            let _slot = Slots::global().take();
            f()
        })
    } else {
        f()
    }
}

/// Costly evaluations running at once: one fewer than the machine's cores (at least one),
/// so that however many costly events arrive together, a core is left to the runtime's
/// threads (requests, ingest, the worker's I/O). A run waiting for a slot waits on its own
/// thread, already off the runtime.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A taken slot, given back when dropped.
struct Slot(&'static Slots);

impl Slots {
    fn global() -> &'static Slots {
        static SLOTS: OnceLock<Slots> = OnceLock::new();
        SLOTS.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, usize::from);
            Slots {
                free: Mutex::new(cores.saturating_sub(1).max(1)),
                freed: Condvar::new(),
            }
        })
    }

    fn take(&'static self) -> Slot {
        // A poisoned lock only means an evaluation panicked while counting: the count is
        // still right (the slot's drop gives it back).
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}
