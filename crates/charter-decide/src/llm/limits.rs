//! Per-charter rate limit and daily budget.
//!
//! The rate limit counts provider requests (a repair request counts; HTTP retries of one
//! request do not) in windows of [`Limits::rate_window`] (one minute as configured), each
//! starting at its first request. The budget counts tokens and cost per charter and UTC day.
//! Both are kept in a [`UsageLedger`]: the server's is the store, so every node and every
//! restart sees the same counts; [`MemoryLedger`] keeps them in the process. The call that crosses the line completes (calls already admitted on other
//! nodes too); the next one finds the budget exhausted. When a limit is reached,
//! [`OnExhausted`] says what happens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::cache::CacheFuture;

/// What to do when the rate limit or the budget is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnExhausted {
    /// Wait for the next window, up to [`Limits::max_wait`]; escalate if that is not enough.
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
    /// Longest wait in [`OnExhausted::Wait`].
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
    /// Add one call's spend to `charter`'s total for `day`. Concurrent adds must all count.
    fn add<'a>(
        &'a self,
        charter: &'a str,
        day: i64,
        spend: Spend,
    ) -> CacheFuture<'a, Result<(), String>>;
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
        spend: Spend,
    ) -> CacheFuture<'a, Result<(), String>> {
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
                    entry.1.tokens = entry.1.tokens.saturating_add(spend.tokens);
                    entry.1.cost += spend.cost;
                }
                Ok(())
            }
            Err(_) => Err("the spend counters are unavailable".to_string()),
        };
        Box::pin(async move { added })
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

/// Takes one request slot for `charter` in `ledger`, waiting if the limits say so. `Err`
/// carries the escalation reason.
pub(crate) async fn admit(
    ledger: &dyn UsageLedger,
    charter: &str,
    limits: &Limits,
) -> Result<(), String> {
    let deadline = Instant::now() + limits.max_wait;
    let budgeted = limits.tokens_per_day.is_some() || limits.cost_per_day.is_some();
    loop {
        let spent_out = if budgeted {
            let spent = ledger
                .spent(charter, utc_day())
                .await
                .map_err(|e| format!("the LLM budget could not be read: {e}"))?;
            over_budget(limits, spent)
        } else {
            None
        };
        let (wait, reason) = match spent_out {
            Some(reason) => (until_next_day(), reason),
            None => match take_rate_slot(ledger, charter, limits).await? {
                None => return Ok(()),
                Some(wait) => (wait, rate_reason(limits)),
            },
        };
        if limits.on_exhausted == OnExhausted::Escalate {
            return Err(reason);
        }
        if Instant::now() + wait > deadline {
            return Err(format!(
                "{reason} (the next window opens in {}s, over the {}s wait limit)",
                wait.as_secs_f64().ceil(),
                limits.max_wait.as_secs()
            ));
        }
        tokio::time::sleep(wait).await;
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

/// Adds what one call used to the day's budget; a failure is logged (the call was made).
pub(crate) async fn record(ledger: &dyn UsageLedger, charter: &str, spend: Spend) {
    if spend.tokens == 0 && spend.cost == 0.0 {
        return;
    }
    if let Err(e) = ledger.add(charter, utc_day(), spend).await {
        tracing::warn!(charter, error = %e, tokens = spend.tokens, "an LLM call's spend could not be recorded");
    }
}
