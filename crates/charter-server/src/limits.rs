//! Failed-authentication limits per client address.
//!
//! A client that presents too many bad credentials within a window is refused for the rest
//! of it: the web UI's login form (5 failures a minute) and bearer tokens on the admin API
//! and the MCP endpoint (20 failures a minute; [`guard_tokens`]). Counting is in this
//! process's memory, per node. Webhook paths are not limited this way: a sender's failed
//! signature is answered 401 and stored nowhere, and blocking a provider's address would
//! also block its correctly signed deliveries to other charters.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Failed bearer-token presentations allowed per client address within [`TOKEN_WINDOW`].
pub const TOKEN_FAILURES_ALLOWED: usize = 20;
/// The window of the bearer-token limit.
pub const TOKEN_WINDOW: Duration = Duration::from_secs(60);

/// Failures per client address in a sliding window.
pub struct FailureLimiter {
    allowed: usize,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl FailureLimiter {
    pub fn new(allowed: usize, window: Duration) -> Self {
        FailureLimiter {
            allowed,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// When `ip` has used up its failures in the window: how long until the oldest one
    /// leaves it. `None` while it may still try.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let Ok(mut f) = self.failures.lock() else {
            // A poisoned lock: refuse rather than stop counting.
            return Some(self.window);
        };
        let q = f.get_mut(&ip)?;
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        (q.len() >= self.allowed).then(|| {
            q.front()
                .map(|t| self.window.saturating_sub(now.duration_since(*t)))
                .unwrap_or(self.window)
        })
    }

    /// Count a failure from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        if let Ok(mut f) = self.failures.lock() {
            f.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
            f.entry(ip).or_default().push_back(now);
        }
    }
}

/// Middleware for the token-authenticated routes: refuse (429, `Retry-After`) a client
/// address that presented [`TOKEN_FAILURES_ALLOWED`] bad tokens within [`TOKEN_WINDOW`];
/// count every 401 answered to a request that presented a credential (an `Authorization`
/// header). A request with none is not a guess: counting it would let a dashboard or a
/// monitoring probe that lost its token lock the address out for the operators behind it.
pub async fn guard_tokens(
    State(limiter): State<Arc<FailureLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let ip = client_ip(&request);
    let presented = request.headers().contains_key(header::AUTHORIZATION);
    if let Some(ip) = ip
        && let Some(wait) = limiter.blocked(ip)
    {
        tracing::warn!(%ip, "request refused: too many failed token presentations");
        let secs = wait.as_secs().max(1);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::RETRY_AFTER, secs.to_string()),
                (header::CONTENT_TYPE, "application/json".to_string()),
            ],
            serde_json::json!({
                "error": format!("too many failed authentications from this address; retry in {secs} s")
            })
            .to_string(),
        )
            .into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED
        && presented
        && let Some(ip) = ip
    {
        limiter.failed(ip);
    }
    response
}

/// The client's address: [`crate::client::ClientAddr`] (forwarded by a trusted proxy), else
/// the TCP peer.
pub fn client_ip(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<crate::client::ClientAddr>()
        .map(|c| c.0)
        .or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
        })
}

/// Token buckets per key: `rate` requests a second, bursts up to one second's worth (at
/// least one). Used for the webhook limits (`server.webhook_rate` per path,
/// `server.webhook_client_rate` per path and client address), in this process's memory.
pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

/// Keys kept before idle (full) buckets are dropped.
const MAX_BUCKETS: usize = 10_000;

impl<K: std::hash::Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(rate: f64) -> Self {
        RateLimiter {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: rate.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request for `key`; when none is left, how long until one is.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Err(Duration::from_secs(1));
        };
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(key.clone()).or_insert((self.burst, now));
        let available =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if available >= 1.0 {
            *tokens = available - 1.0;
            Ok(())
        } else {
            *tokens = available;
            Err(Duration::from_secs_f64((1.0 - available) / self.rate))
        }
    }
}

/// The webhook rate limits of a server: per path, and per path and client address.
#[derive(Default)]
pub struct WebhookLimits {
    pub path: Option<RateLimiter<Arc<str>>>,
    pub client: Option<RateLimiter<(Arc<str>, IpAddr)>>,
}

impl WebhookLimits {
    pub fn new(net: &charter_core::config::NetSettings) -> WebhookLimits {
        WebhookLimits {
            path: net.webhook_rate.map(RateLimiter::new),
            client: net.webhook_client_rate.map(RateLimiter::new),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.path.is_none() && self.client.is_none()
    }

    /// Whether a request to `charter`'s path from `client` may go on; otherwise which
    /// limit refused it and the wait.
    pub fn check(
        &self,
        charter: &Arc<str>,
        client: Option<IpAddr>,
    ) -> Result<(), (&'static str, Duration)> {
        if let (Some(l), Some(ip)) = (&self.client, client) {
            l.take(&(charter.clone(), ip)).map_err(|w| ("client", w))?;
        }
        if let Some(l) = &self.path {
            l.take(charter).map_err(|w| ("path", w))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_of_failures_blocks_until_the_oldest_leaves_it() {
        let l = FailureLimiter::new(3, Duration::from_millis(300));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..2 {
            l.failed(a);
        }
        assert_eq!(l.blocked(a), None);
        l.failed(a);
        let wait = l.blocked(a).unwrap();
        assert!(wait <= Duration::from_millis(300) && wait > Duration::from_millis(200));
        assert_eq!(l.blocked(b), None, "another address is not affected");
        std::thread::sleep(Duration::from_millis(320));
        assert_eq!(l.blocked(a), None, "the window passed");
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let l = RateLimiter::new(5.0);
        let k = 1u8;
        for i in 0..5 {
            assert!(l.take(&k).is_ok(), "request {i} of the burst");
        }
        let wait = l.take(&k).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        assert!(l.take(&2u8).is_ok(), "another key has its own bucket");
        std::thread::sleep(Duration::from_millis(250));
        assert!(l.take(&k).is_ok(), "a token came back");
        assert!(l.take(&k).is_err(), "only one");
    }
}
