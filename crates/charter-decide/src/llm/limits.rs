//! Per-charter rate limit and daily budget.
//!
//! The rate limit counts provider requests (a repair request counts; HTTP retries of one
//! request do not) in windows of [`Limits::rate_window`] (one minute as configured), each
//! starting at its first request. The budget counts tokens and cost per charter and UTC day.
//! Both are kept in a [`UsageLedger`]: the server's is the store, so every node and every
//! restart sees the same counts; [`MemoryLedger`] keeps them in the process.
//!
//! # How the budget holds
//!
//! Before a request, the engine *reserves* what it may cost: the prompt's estimated tokens
//! (its characters / 4) plus the provider's `max_tokens`, priced at the provider's price.
//! The reservation is one atomic add to the day's total; the request goes only if the total
//! *before* it was under the budget, otherwise the reservation is given back and the
//! request is refused. After the request the reservation is *settled*: replaced by what the
//! server reported, or by an estimate (characters / 4 of what was sent and of what came
//! back) when it reported no `usage`; a failed request gives its reservation back. So
//! concurrent requests, on one node or many, see each other's reservations, and the day's
//! spend can pass the budget by at most the reservation of the one request admitted last
//! (its prompt and at most `max_tokens` of answer), plus however many more prompt tokens the
//! servers report than were estimated for requests in flight. A refused request reserves
//! nothing it keeps.
//!
//! When a limit is reached, [`OnExhausted`] says what happens: `escalate` at once, or `wait`
//! — the engine does not sleep: it fails with [`super::LlmFailure::retry_after`] set (when
//! the next window opens within [`Limits::max_wait`]) and the caller reschedules the work
//! (the server's worker puts the event back, not to be claimed before then, and frees its
//! slot).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use charter_core::model::EscalationReason;

use super::cache::CacheFuture;

/// What to do when the rate limit or the budget is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnExhausted {
    /// Have the work retried when the next window opens, if that is within
    /// [`Limits::max_wait`]; escalate if it is not.
    Wait,
    /// Escalate at once with the reason.
    #[default]
    Escalate,
}

/// A charter's limits on its LLM use.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Requests per [`Limits::rate_window`].
    pub requests_per_window: Option<u32>,
    /// One minute when configured as `rate_limit` (requests per minute).
    pub rate_window: Duration,
    pub tokens_per_day: Option<u64>,
    /// In the providers' price unit.
    pub cost_per_day: Option<f64>,
    pub on_exhausted: OnExhausted,
    /// Longest wait in [`OnExhausted::Wait`]: a window that opens later escalates.
    pub max_wait: Duration,
}

impl Default for Limits {
    /// No limits; one-minute window; escalate; wait at most 60 s.
    fn default() -> Self {
        Limits {
            requests_per_window: None,
            rate_window: Duration::from_secs(60),
            tokens_per_day: None,
            cost_per_day: None,
            on_exhausted: OnExhausted::Escalate,
            max_wait: Duration::from_secs(60),
        }
    }
}

/// Tokens and cost spent (by one charter, on one UTC day).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    pub tokens: u64,
    /// In the providers' price unit.
    pub cost: f64,
}

/// A change to a day's spend: a reservation (positive), a settlement (either sign) or a
/// reservation given back (negative).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpendDelta {
    pub tokens: i64,
    pub cost: f64,
}

impl SpendDelta {
    /// `to - from`.
    pub fn between(from: Spend, to: Spend) -> SpendDelta {
        let t = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        SpendDelta {
            tokens: t(to.tokens).saturating_sub(t(from.tokens)),
            cost: to.cost - from.cost,
        }
    }

    fn is_zero(&self) -> bool {
        self.tokens == 0 && self.cost == 0.0
    }
}

/// Where each charter's LLM usage is counted: the spend per UTC day (for `budget:`) and the
/// current rate-limit window (for `rate_limit:`). Errors are messages: the engine escalates
/// a decision whose limits cannot be checked (it fails closed), and logs a spend that cannot
/// be recorded.
pub trait UsageLedger: Send + Sync {
    /// Take one request slot of `charter` at `now` (Unix ms): its window (`window_ms` long)
    /// starts at its first request and admits `max` requests. `None`: admitted; `Some(t)`:
    /// refused until `t` (Unix ms). Concurrent takes must never admit more than `max`.
    fn take_slot<'a>(
        &'a self,
        charter: &'a str,
        now: i64,
        window_ms: i64,
        max: u32,
    ) -> CacheFuture<'a, Result<Option<i64>, String>>;
    /// What `charter` spent on `day` (UTC days since 1970-01-01); zero when nothing.
    fn spent<'a>(&'a self, charter: &'a str, day: i64) -> CacheFuture<'a, Result<Spend, String>>;
    /// Add `delta` to `charter`'s total for `day` (neither part goes below zero) and return
    /// the new total. Atomic: concurrent adds all count and each sees a total that includes
    /// its own delta.
    fn add<'a>(
        &'a self,
        charter: &'a str,
        day: i64,
        delta: SpendDelta,
    ) -> CacheFuture<'a, Result<Spend, String>>;
}

/// A ledger in the process: per node, and forgotten on restart.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    days: Mutex<HashMap<String, (i64, Spend)>>,
    /// Per charter: the window's start (Unix ms) and the requests it admitted.
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl UsageLedger for MemoryLedger {
    fn take_slot<'a>(
        &'a self,
        charter: &'a str,
        now: i64,
        window_ms: i64,
        max: u32,
    ) -> CacheFuture<'a, Result<Option<i64>, String>> {
        let taken = match self.windows.lock() {
            Ok(mut map) => {
                let (start, requests) = map.entry(charter.to_string()).or_insert((now, 0));
                if now >= start.saturating_add(window_ms) {
                    *start = now;
                    *requests = 0;
                }
                if *requests < max {
                    *requests += 1;
                    Ok(None)
                } else {
                    Ok(Some(start.saturating_add(window_ms)))
                }
            }
            Err(_) => Err("the rate counters are unavailable".to_string()),
        };
        Box::pin(async move { taken })
    }

    fn spent<'a>(&'a self, charter: &'a str, day: i64) -> CacheFuture<'a, Result<Spend, String>> {
        let spent = match self.days.lock() {
            Ok(map) => Ok(map
                .get(charter)
                .filter(|(d, _)| *d == day)
                .map(|(_, s)| *s)
                .unwrap_or_default()),
            Err(_) => Err("the spend counters are unavailable".to_string()),
        };
        Box::pin(async move { spent })
    }

    fn add<'a>(
        &'a self,
        charter: &'a str,
        day: i64,
        delta: SpendDelta,
    ) -> CacheFuture<'a, Result<Spend, String>> {
        let added = match self.days.lock() {
            Ok(mut map) => {
                let entry = map
                    .entry(charter.to_string())
                    .or_insert((day, Spend::default()));
                // Only the latest day is kept: an older day's total is no longer read.
                if entry.0 < day {
                    *entry = (day, Spend::default());
                }
                if entry.0 == day {
                    entry.1 = apply(entry.1, delta);
                    Ok(entry.1)
                } else {
                    Ok(apply(Spend::default(), delta))
                }
            }
            Err(_) => Err("the spend counters are unavailable".to_string()),
        };
        Box::pin(async move { added })
    }
}

/// `spend + delta`, neither part below zero.
pub fn apply(spend: Spend, delta: SpendDelta) -> Spend {
    let tokens = i64::try_from(spend.tokens)
        .unwrap_or(i64::MAX)
        .saturating_add(delta.tokens)
        .max(0);
    Spend {
        tokens: u64::try_from(tokens).unwrap_or(0),
        cost: (spend.cost + delta.cost).max(0.0),
    }
}

/// Now, in Unix milliseconds (the limits' counts are shared across nodes, so wall-clock
/// time).
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

const DAY_MS: i64 = 86_400_000;

/// Today, in UTC days since 1970-01-01.
pub fn utc_day() -> i64 {
    unix_ms().div_euclid(DAY_MS)
}

fn until_next_day() -> Duration {
    let left = DAY_MS - unix_ms().rem_euclid(DAY_MS);
    Duration::from_millis(u64::try_from(left).unwrap_or(0))
}

/// Why the budget stops a request, if it does.
fn over_budget(limits: &Limits, spent: Spend) -> Option<String> {
    if let Some(t) = limits.tokens_per_day
        && spent.tokens >= t
    {
        return Some(format!(
            "budget exhausted: {} of {t} tokens used today",
            spent.tokens
        ));
    }
    if let Some(m) = limits.cost_per_day
        && spent.cost >= m
    {
        return Some(format!(
            "budget exhausted: cost {:.6} of {m} used today",
            spent.cost
        ));
    }
    None
}

/// Why a request was not made: the escalation reason, the message, and when to try again
/// (`on_exhausted: wait` with the next window within `max_wait`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    pub kind: EscalationReason,
    pub reason: String,
    pub retry_after: Option<Duration>,
}

/// A reservation held in the ledger for a request in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hold {
    day: i64,
    reserved: Spend,
}

/// Admits one request of `charter`: reserves `reserve` against the budget (when the charter
/// has one) and takes a rate-limit slot (when it has a rate limit). `Ok` carries the
/// reservation to [`settle`] after the request.
pub(crate) async fn admit(
    ledger: &dyn UsageLedger,
    charter: &str,
    limits: &Limits,
    reserve: Spend,
) -> Result<Option<Hold>, Refusal> {
    let budgeted = limits.tokens_per_day.is_some() || limits.cost_per_day.is_some();
    let mut hold = None;
    if budgeted {
        let day = utc_day();
        let total = ledger
            .add(charter, day, SpendDelta::between(Spend::default(), reserve))
            .await
            .map_err(|e| Refusal {
                kind: EscalationReason::Configuration,
                reason: format!("the LLM budget could not be read: {e}"),
                retry_after: None,
            })?;
        let before = apply(total, SpendDelta::between(reserve, Spend::default()));
        let held = Hold {
            day,
            reserved: reserve,
        };
        if let Some(reason) = over_budget(limits, before) {
            give_back(ledger, charter, held).await;
            return Err(exhausted(
                limits,
                EscalationReason::Budget,
                reason,
                until_next_day(),
            ));
        }
        hold = Some(held);
    }
    let slot = take_rate_slot(ledger, charter, limits).await;
    let refusal = match slot {
        Ok(None) => return Ok(hold),
        Ok(Some(wait)) => exhausted(
            limits,
            EscalationReason::RateLimited,
            rate_reason(limits),
            wait,
        ),
        Err(reason) => Refusal {
            kind: EscalationReason::Configuration,
            reason,
            retry_after: None,
        },
    };
    if let Some(h) = hold {
        give_back(ledger, charter, h).await;
    }
    Err(refusal)
}

/// What a limit reached means under `on_exhausted`.
fn exhausted(limits: &Limits, kind: EscalationReason, reason: String, wait: Duration) -> Refusal {
    match limits.on_exhausted {
        OnExhausted::Escalate => Refusal {
            kind,
            reason,
            retry_after: None,
        },
        OnExhausted::Wait if wait <= limits.max_wait => Refusal {
            kind,
            reason: format!(
                "{reason}; retried when the next window opens in {:.1}s",
                wait.as_secs_f64()
            ),
            retry_after: Some(wait),
        },
        OnExhausted::Wait => Refusal {
            kind,
            reason: format!(
                "{reason} (the next window opens in {}s, over the {}s wait limit)",
                wait.as_secs_f64().ceil(),
                limits.max_wait.as_secs()
            ),
            retry_after: None,
        },
    }
}

/// Replaces a reservation by what the request used (`None`: a request without a budget,
/// whose spend is only added). A failure is logged: the request was made.
pub(crate) async fn settle(
    ledger: &dyn UsageLedger,
    charter: &str,
    hold: Option<Hold>,
    used: Spend,
) {
    let (day, delta) = match hold {
        Some(h) => (h.day, SpendDelta::between(h.reserved, used)),
        None => (utc_day(), SpendDelta::between(Spend::default(), used)),
    };
    if delta.is_zero() {
        return;
    }
    if let Err(e) = ledger.add(charter, day, delta).await {
        tracing::warn!(charter, error = %e, tokens = used.tokens, "an LLM call's spend could not be recorded");
    }
}

async fn give_back(ledger: &dyn UsageLedger, charter: &str, hold: Hold) {
    let delta = SpendDelta::between(hold.reserved, Spend::default());
    if delta.is_zero() {
        return;
    }
    if let Err(e) = ledger.add(charter, hold.day, delta).await {
        tracing::warn!(charter, error = %e, "an LLM budget reservation could not be given back");
    }
}

fn rate_reason(limits: &Limits) -> String {
    format!(
        "rate limit reached: {} requests per {}s",
        limits.requests_per_window.unwrap_or(0),
        limits.rate_window.as_secs_f64()
    )
}

/// Take a slot in the current rate window: `None` when taken (or there is no rate limit),
/// otherwise how long until the next window.
async fn take_rate_slot(
    ledger: &dyn UsageLedger,
    charter: &str,
    limits: &Limits,
) -> Result<Option<Duration>, String> {
    let Some(max) = limits.requests_per_window else {
        return Ok(None);
    };
    let window = i64::try_from(limits.rate_window.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let now = unix_ms();
    let refused = ledger
        .take_slot(charter, now, window, max)
        .await
        .map_err(|e| format!("the LLM rate limit could not be checked: {e}"))?;
    Ok(refused.map(|until| {
        Duration::from_millis(u64::try_from(until.saturating_sub(now)).unwrap_or(0).max(1))
    }))
}
