//! UI sessions, CSRF tokens and the login rate limit.
//!
//! Sessions live in this process's memory only: they do not survive a restart, and with
//! several `charter serve` nodes behind a balancer each node has its own (use sticky
//! sessions, or log in again). A session is created by logging in with an API token and
//! carries that token's name, role and charter scopes; it ends after [`SESSION_TTL`] or on
//! logout. Each session has its own CSRF token, embedded in every form and checked on every
//! POST.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use charter_core::config::Role;

use crate::limits::FailureLimiter;
use rand::RngCore;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "charter_session";
/// Name of the cookie that carries the login form's CSRF token (before a session exists).
pub const LOGIN_COOKIE: &str = "charter_login";
/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed logins allowed per client address within [`LOGIN_WINDOW`].
pub const LOGIN_FAILURES_ALLOWED: usize = 5;
/// The window of the login rate limit.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token's name (`local` when the UI is open).
    pub name: String,
    pub role: Role,
    /// Charters visible to this session; empty = all.
    pub charters: Vec<String>,
    /// Compared with the `csrf` field of every POST.
    pub csrf: String,
    pub expires: Instant,
}

impl Session {
    /// Whether this session may see `charter`'s objects.
    pub fn sees(&self, charter: &str) -> bool {
        self.charters.is_empty() || self.charters.iter().any(|c| c == charter)
    }

    /// The role as a word.
    pub fn role_name(&self) -> &'static str {
        self.role.as_str()
    }
}

/// 256 random bits from the thread's CSPRNG, hex-encoded.
pub fn random_token() -> String {
    let mut buf = [0u8; 32];
    rand::rng().fill_bytes(&mut buf);
    let mut out = String::with_capacity(64);
    for b in buf {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Compare two secrets without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The in-memory session map and login limiter of one server.
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    failures: FailureLimiter,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            map: Mutex::default(),
            failures: FailureLimiter::new(LOGIN_FAILURES_ALLOWED, LOGIN_WINDOW),
        }
    }
}

impl Sessions {
    /// Start a session; returns its id (the cookie value).
    pub fn create(&self, name: String, role: Role, charters: Vec<String>) -> String {
        let id = random_token();
        let now = Instant::now();
        let session = Session {
            name,
            role,
            charters,
            csrf: random_token(),
            expires: now + SESSION_TTL,
        };
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, s| s.expires > now);
            map.insert(id.clone(), session);
        }
        id
    }

    /// The live session with this id, if any.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.map.lock().ok()?;
        match map.get(id) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// End a session.
    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(id);
        }
    }

    /// Whether `ip` has used up its failed logins in the current window.
    pub fn login_blocked(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.failures.blocked(ip).is_some())
    }

    /// Count a failed login from `ip`.
    pub fn login_failed(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.failures.failed(ip);
        }
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/ (`Secure` when `https`).
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, https: bool) -> String {
    let mut c = format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if https {
        c.push_str("; Secure");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_hex_and_differ() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn sessions_are_found_until_removed() {
        let s = Sessions::default();
        let id = s.create("ann".into(), Role::Reviewer, vec!["a".into()]);
        let got = s.get(&id).unwrap();
        assert_eq!(got.name, "ann");
        assert!(got.sees("a") && !got.sees("b"));
        assert!(s.get("nope").is_none());
        s.remove(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn five_failures_block_that_address_only() {
        let s = Sessions::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..LOGIN_FAILURES_ALLOWED {
            assert!(!s.login_blocked(Some(ip)));
            s.login_failed(Some(ip));
        }
        assert!(s.login_blocked(Some(ip)));
        assert!(!s.login_blocked(Some(other)));
    }

    #[test]
    fn cookies_are_parsed_and_flagged() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "a=1; charter_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "zz"), None);
        let c = set_cookie(SESSION_COOKIE, "v", None, false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/"));
        assert!(!c.contains("Secure"));
        assert!(set_cookie("x", "v", None, true).ends_with("; Secure"));
    }
}
