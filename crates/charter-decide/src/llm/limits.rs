//! Per-charter rate limit and daily budget, kept in memory.
//!
//! The counters live in the process, so with several nodes each node enforces the limits on
//! its own (a store-backed counter can come later). The rate limit counts provider requests
//! (a repair request counts; HTTP retries of one request do not) in fixed windows of
//! [`Limits::rate_window`] (one minute as configured). The budget counts tokens and cost per
//! UTC day; the call that crosses the line completes, the next one finds the budget
//! exhausted. When a limit is reached, [`OnExhausted`] says what happens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

#[derive(Debug)]
struct Counters {
    window_start: Instant,
    requests: u32,
    day: u64,
    tokens: u64,
    cost: f64,
}

/// Why a request may not go now.
enum Verdict {
    Go,
    Wait(Duration),
    Exhausted(String),
}

/// Counters for every charter on this node.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    charters: Mutex<HashMap<String, Counters>>,
}

fn utc_day() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0)
}

fn until_next_day() -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Duration::from_secs(86_400 - now % 86_400)
}

impl Limiter {
    /// Takes one request slot for `charter`, waiting if the limits say so. `Err` carries the
    /// escalation reason.
    pub(crate) async fn admit(&self, charter: &str, limits: &Limits) -> Result<(), String> {
        let deadline = Instant::now() + limits.max_wait;
        loop {
            let verdict = self.check(charter, limits);
            match verdict {
                Verdict::Go => return Ok(()),
                Verdict::Exhausted(reason) => return Err(reason),
                Verdict::Wait(d) => {
                    let now = Instant::now();
                    if limits.on_exhausted == OnExhausted::Escalate {
                        return Err(self.reason(charter, limits));
                    }
                    if now + d > deadline {
                        return Err(format!(
                            "{} (the next window opens in {}s, over the {}s wait limit)",
                            self.reason(charter, limits),
                            d.as_secs_f64().ceil(),
                            limits.max_wait.as_secs()
                        ));
                    }
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    fn reason(&self, charter: &str, limits: &Limits) -> String {
        let Ok(map) = self.charters.lock() else {
            return "limit reached".into();
        };
        let Some(c) = map.get(charter) else {
            return "limit reached".into();
        };
        if let Some(t) = limits.tokens_per_day
            && c.tokens >= t
        {
            return format!("budget exhausted: {} of {t} tokens used today", c.tokens);
        }
        if let Some(m) = limits.cost_per_day
            && c.cost >= m
        {
            return format!("budget exhausted: cost {:.6} of {m} used today", c.cost);
        }
        format!(
            "rate limit reached: {} requests per {}s",
            limits.requests_per_window.unwrap_or(0),
            limits.rate_window.as_secs_f64()
        )
    }

    fn check(&self, charter: &str, limits: &Limits) -> Verdict {
        let Ok(mut map) = self.charters.lock() else {
            return Verdict::Exhausted("limit counters are unavailable".into());
        };
        let now = Instant::now();
        let day = utc_day();
        let c = map.entry(charter.to_string()).or_insert(Counters {
            window_start: now,
            requests: 0,
            day,
            tokens: 0,
            cost: 0.0,
        });
        if c.day != day {
            c.day = day;
            c.tokens = 0;
            c.cost = 0.0;
        }
        if now.duration_since(c.window_start) >= limits.rate_window {
            c.window_start = now;
            c.requests = 0;
        }
        let over_budget = limits.tokens_per_day.is_some_and(|t| c.tokens >= t)
            || limits.cost_per_day.is_some_and(|m| c.cost >= m);
        if over_budget {
            return Verdict::Wait(until_next_day());
        }
        if let Some(r) = limits.requests_per_window
            && c.requests >= r
        {
            return Verdict::Wait(
                limits
                    .rate_window
                    .saturating_sub(now.duration_since(c.window_start)),
            );
        }
        c.requests += 1;
        Verdict::Go
    }

    /// Adds what one call used to the day's budget.
    pub(crate) fn record(&self, charter: &str, tokens: u64, cost: f64) {
        if let Ok(mut map) = self.charters.lock()
            && let Some(c) = map.get_mut(charter)
        {
            c.tokens = c.tokens.saturating_add(tokens);
            c.cost += cost;
        }
    }
}
