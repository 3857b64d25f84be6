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
/// count every 401 answered.
pub async fn guard_tokens(
    State(limiter): State<Arc<FailureLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
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
        && let Some(ip) = ip
    {
        limiter.failed(ip);
    }
    response
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
}
