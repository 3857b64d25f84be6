//! A circuit breaker per connector: after `failures` consecutive failed attempts the
//! connector is left alone for `cool_down`; then one probe is let through, and its result
//! closes the circuit again or re-opens it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the circuit (at least 1).
    pub failures: u32,
    /// How long the circuit stays open before a probe is allowed.
    pub cool_down: Duration,
}

/// The refusal returned while the circuit is open; its message goes into the run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "circuit breaker open for connector `{connector}` after {failures} consecutive failures; not calling it for another {}s",
    retry_in.as_secs().max(1)
)]
pub struct CircuitOpen {
    pub connector: String,
    pub failures: u32,
    /// Until the next probe is allowed.
    pub retry_in: Duration,
}

#[derive(Debug)]
enum State {
    Closed {
        consecutive: u32,
    },
    Open {
        until: Instant,
        failures: u32,
    },
    /// Cool-down over; one probe is in flight.
    HalfOpen {
        failures: u32,
    },
}

/// Tracks consecutive failures of one connector.
#[derive(Debug)]
pub struct CircuitBreaker {
    connector: String,
    policy: BreakerPolicy,
    state: Mutex<State>,
}

impl CircuitBreaker {
    pub fn new(connector: impl Into<String>, policy: BreakerPolicy) -> Self {
        CircuitBreaker {
            connector: connector.into(),
            policy: BreakerPolicy {
                failures: policy.failures.max(1),
                cool_down: policy.cool_down,
            },
            state: Mutex::new(State::Closed { consecutive: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// May an attempt go out now? While open (or while the probe is out) this refuses.
    pub fn admit(&self) -> Result<(), CircuitOpen> {
        let mut s = self.lock();
        let now = Instant::now();
        match *s {
            State::Closed { .. } => Ok(()),
            State::Open { until, failures } if now >= until => {
                *s = State::HalfOpen { failures };
                Ok(())
            }
            State::Open { until, failures } => Err(CircuitOpen {
                connector: self.connector.clone(),
                failures,
                retry_in: until.saturating_duration_since(now),
            }),
            State::HalfOpen { failures } => Err(CircuitOpen {
                connector: self.connector.clone(),
                failures,
                retry_in: self.policy.cool_down.min(Duration::from_secs(1)),
            }),
        }
    }

    /// Record the result of an admitted attempt. `failed` means the system itself failed
    /// (timeout, connection error, 5xx), not that it refused a bad request.
    pub fn record(&self, failed: bool) {
        let mut s = self.lock();
        let now = Instant::now();
        *s = match (&*s, failed) {
            (_, false) => State::Closed { consecutive: 0 },
            (State::Closed { consecutive }, true) => {
                let n = consecutive.saturating_add(1);
                if n >= self.policy.failures {
                    tracing::warn!(connector = %self.connector, failures = n, cool_down = ?self.policy.cool_down, "circuit breaker opened");
                    State::Open {
                        until: now + self.policy.cool_down,
                        failures: n,
                    }
                } else {
                    State::Closed { consecutive: n }
                }
            }
            (State::HalfOpen { failures } | State::Open { failures, .. }, true) => {
                tracing::warn!(connector = %self.connector, "circuit breaker probe failed; open again");
                State::Open {
                    until: now + self.policy.cool_down,
                    failures: failures.saturating_add(1),
                }
            }
        };
    }

    /// Whether the circuit is currently open (refusing).
    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cool: u64) -> CircuitBreaker {
        CircuitBreaker::new(
            "crm",
            BreakerPolicy {
                failures: 3,
                cool_down: Duration::from_millis(cool),
            },
        )
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(10_000);
        b.record(true);
        b.record(true);
        b.record(false); // a success resets the count
        b.record(true);
        b.record(true);
        assert!(b.admit().is_ok());
        b.record(true);
        let open = b.admit().unwrap_err();
        assert_eq!(open.failures, 3);
        assert!(open.retry_in > Duration::from_secs(9));
        let msg = open.to_string();
        assert!(
            msg.contains("circuit breaker open for connector `crm`"),
            "{msg}"
        );
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let b = breaker(20);
        for _ in 0..3 {
            b.record(true);
        }
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.admit().is_ok(), "probe after the cool-down");
        assert!(b.admit().is_err(), "only one probe at a time");
        b.record(true);
        assert!(b.admit().is_err(), "failed probe re-opens");
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.admit().is_ok());
        b.record(false);
        assert!(!b.is_open());
        assert!(b.admit().is_ok());
    }
}
