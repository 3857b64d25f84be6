//! Per-connector pacing: a requests-per-second limit (token bucket) and a cap on requests
//! in flight.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A token bucket: `per_second` tokens are added each second, up to a burst of
/// `max(1, per_second)`. [`RateLimiter::acquire`] waits for a token.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// A limiter allowing `per_second` requests per second on average (must be positive;
    /// anything else is treated as 1 request per hour so a bad value never means "unlimited").
    pub fn new(per_second: f64) -> Self {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            1.0 / 3600.0
        };
        let burst = per_second.max(1.0);
        RateLimiter {
            per_second,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
            }),
        }
    }

    /// The configured rate.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Take a token now if one is available; otherwise say how long until one is.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let mut b = match self.state.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.refilled = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
    }

    /// Wait until a request may be sent.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire() {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
            }
        }
    }
}

/// At most `n` requests of one connector in flight on this node.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConcurrencyLimit {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        ConcurrencyLimit {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The configured maximum.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Wait for a slot; it is given back when the permit is dropped. `None` only if the
    /// semaphore was closed, which this type never does.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().acquire_owned().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_paces() {
        let l = RateLimiter::new(5.0);
        for _ in 0..5 {
            assert!(l.try_acquire().is_ok());
        }
        let wait = l.try_acquire().unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        assert!(wait > Duration::from_millis(100), "{wait:?}");
    }

    #[test]
    fn nonsense_rates_are_not_unlimited() {
        let l = RateLimiter::new(0.0);
        assert!(l.try_acquire().is_ok());
        assert!(l.try_acquire().unwrap_err() > Duration::from_secs(60));
    }

    #[tokio::test]
    async fn acquire_paces_requests() {
        let l = RateLimiter::new(20.0);
        let t = Instant::now();
        for _ in 0..30 {
            l.acquire().await;
        }
        // 20 from the burst, 10 more at 20/s: about half a second.
        assert!(
            t.elapsed() >= Duration::from_millis(450),
            "{:?}",
            t.elapsed()
        );
    }
}
