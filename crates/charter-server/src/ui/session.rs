//! UI sessions, CSRF tokens and the login rate limit.
//!
//! Sessions are kept in the store ([`charter_store::SessionStore`]): every `charter serve`
//! node sharing the store knows a session opened on any of them (a balancer needs no sticky
//! sessions), and a restart logs nobody out. The store keeps only the SHA-256 of the
//! cookie's id ([`id_hash`]). A session is created by logging in with an API token and
//! carries that token's name, role and charter scopes; it ends after [`SESSION_TTL`] or on
//! logout. Each session has its own CSRF token, embedded in every form and checked on every
//! POST. The login rate limit ([`LoginLimiter`]) counts failures per node.

use std::net::IpAddr;
use std::time::Duration;

use charter_core::config::Role;
use charter_core::model::UnixMillis;
use charter_store::UiSession;
use sha2::{Digest, Sha256};

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
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// The token's name (`local` when the UI is open).
    pub name: String,
    pub role: Role,
    /// Charters visible to this session; empty = all.
    pub charters: Vec<String>,
    /// Compared with the `csrf` field of every POST.
    pub csrf: String,
    /// Index in the loaded tokens of the token this session acts as, found when the
    /// session is looked up (`None` in the open UI, and in a session just opened or read).
    pub token: Option<usize>,
}

impl Session {
    /// Whether this session may see `charter`'s objects.
    pub fn sees(&self, charter: &str) -> bool {
        crate::auth::sees(&self.charters, charter)
    }

    /// Whether this session's role includes `need` (the rule of [`crate::auth::allows`]).
    pub fn may(&self, need: Role) -> bool {
        crate::auth::allows(self.role, need)
    }

    /// The role as a word.
    pub fn role_name(&self) -> &'static str {
        self.role.as_str()
    }

    /// A new session with a fresh CSRF token, and the row to store for it under the cookie
    /// id `id`, opened at `now` with the token whose secret is `secret` (empty for the open
    /// UI); the row carries the [`grant`] fingerprint.
    pub fn open(
        id: &str,
        name: String,
        role: Role,
        charters: Vec<String>,
        secret: &str,
        now: UnixMillis,
    ) -> (Session, UiSession) {
        let grant = grant(id, &name, role, &charters, secret);
        let session = Session {
            name,
            role,
            charters,
            csrf: random_token(),
            token: None,
        };
        let ttl = i64::try_from(SESSION_TTL.as_millis()).unwrap_or(i64::MAX);
        let row = UiSession {
            id_hash: id_hash(id),
            name: session.name.clone(),
            role: role.as_str().to_string(),
            charters: session.charters.clone(),
            csrf: session.csrf.clone(),
            grant,
            created_at: now,
            expires_at: now.saturating_add(ttl),
        };
        (session, row)
    }

    /// The session a stored row describes. `None` for a role that may not use the UI (an
    /// agent's) or that this build does not know: such a row opens nothing.
    pub fn from_stored(row: UiSession) -> Option<Session> {
        let role = match row.role.as_str() {
            "viewer" => Role::Viewer,
            "reviewer" => Role::Reviewer,
            "admin" => Role::Admin,
            _ => return None,
        };
        Some(Session {
            name: row.name,
            role,
            charters: row.charters,
            csrf: row.csrf,
            token: None,
        })
    }
}

/// The caller a session acts as in [`crate::ops`]: the token's name, role and scopes it was
/// opened with (a session counts only while a configured token still gives the same
/// fingerprint, see [`grant`]), or the open UI's `local` admin.
impl From<&Session> for crate::auth::Caller {
    fn from(s: &Session) -> Self {
        crate::auth::Caller {
            name: s.name.clone(),
            role: s.role,
            charters: s.charters.clone(),
            reviewer_as: None,
        }
    }
}

/// The fingerprint of what the session with cookie id `id` is opened with: a token's name,
/// role, charter scopes and secret (the open UI's sessions: `local`, admin, no scopes, no
/// secret). A stored session counts only while a configured token still gives the same
/// fingerprint, so removing, rotating or re-scoping a token in `charter.yaml` ends its
/// sessions. The session's id is hashed in too: the store holds only the id's own hash, so
/// a copy of the table gives no way to test guesses of a token's secret.
pub fn grant(id: &str, name: &str, role: Role, charters: &[String], secret: &str) -> String {
    let mut h = Sha256::new();
    let parts = [
        b"charter-ui-grant-v1".as_slice(),
        id.as_bytes(),
        name.as_bytes(),
        role.as_str().as_bytes(),
    ]
    .into_iter()
    .chain(charters.iter().map(|c| c.as_bytes()))
    .chain([secret.as_bytes()]);
    for part in parts {
        // Each part length-prefixed: no two different grants hash the same bytes.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// What the store keeps instead of a session's id: its SHA-256, lower-case hex.
pub fn id_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// 256 random bits from the thread's CSPRNG, hex-encoded.
pub fn random_token() -> String {
    let mut buf = [0u8; 32];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

pub use crate::auth::constant_time_eq;

/// Failed logins per client address, on this node.
pub struct LoginLimiter {
    failures: FailureLimiter,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter {
            failures: FailureLimiter::new(LOGIN_FAILURES_ALLOWED, LOGIN_WINDOW),
        }
    }
}

impl LoginLimiter {
    /// Whether `ip` has used up its failed logins in the current window.
    pub fn blocked(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.failures.blocked(ip).is_some())
    }

    /// Count a failed login from `ip`.
    pub fn failed(&self, ip: Option<IpAddr>) {
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

/// The cookie's name as sent: with the `__Host-` prefix over https, so a browser accepts it
/// only from this host, over https, for every path (no sibling domain can set or shadow it).
pub fn cookie_name(name: &str, https: bool) -> String {
    if https {
        format!("__Host-{name}")
    } else {
        name.to_string()
    }
}

/// The cookie `name` of a request that came over https or not (see [`cookie_name`]).
pub fn cookie_for(headers: &axum::http::HeaderMap, name: &str, https: bool) -> Option<String> {
    cookie(headers, &cookie_name(name, https))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/ (`Secure` and the `__Host-`
/// prefix when `https`).
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, https: bool) -> String {
    let name = cookie_name(name, https);
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
    fn a_stored_session_reads_back_and_keeps_only_the_id_hash() {
        let (s, row) = Session::open(
            "the-id",
            "ann".into(),
            Role::Reviewer,
            vec!["a".into()],
            "g",
            1_000,
        );
        assert_eq!(row.id_hash, id_hash("the-id"));
        assert_eq!(row.id_hash.len(), 64);
        assert_ne!(row.id_hash, "the-id");
        assert_eq!(row.expires_at - row.created_at, 12 * 3600 * 1000);
        assert_eq!(row.role, "reviewer");
        assert_eq!(s.csrf.len(), 64);
        let back = Session::from_stored(row.clone()).unwrap();
        assert_eq!(back, s);
        assert!(back.sees("a") && !back.sees("b"));
        let agent = UiSession {
            role: "agent".into(),
            ..row.clone()
        };
        assert!(Session::from_stored(agent).is_none());
        let unknown = UiSession {
            role: "root".into(),
            ..row
        };
        assert!(Session::from_stored(unknown).is_none());
    }

    #[test]
    fn a_grant_changes_with_every_part_of_the_token() {
        let scopes = vec!["a".to_string()];
        let base = grant("id", "ann", Role::Reviewer, &scopes, "s3cret");
        assert_eq!(base, grant("id", "ann", Role::Reviewer, &scopes, "s3cret"));
        assert_eq!(base.len(), 64);
        assert!(!base.contains("s3cret"));
        for other in [
            grant("id", "bob", Role::Reviewer, &scopes, "s3cret"),
            grant("id", "ann", Role::Admin, &scopes, "s3cret"),
            grant("id", "ann", Role::Reviewer, &[], "s3cret"),
            grant("id", "ann", Role::Reviewer, &["ab".to_string()], "s3cret"),
            grant("id", "ann", Role::Reviewer, &scopes, "rotated"),
            // The parts are length-prefixed: moving bytes between them changes the hash.
            grant("id", "ann", Role::Reviewer, &["as3".to_string()], "cret"),
            // Another session of the same token.
            grant("id2", "ann", Role::Reviewer, &scopes, "s3cret"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn five_failures_block_that_address_only() {
        let s = LoginLimiter::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..LOGIN_FAILURES_ALLOWED {
            assert!(!s.blocked(Some(ip)));
            s.failed(Some(ip));
        }
        assert!(s.blocked(Some(ip)));
        assert!(!s.blocked(Some(other)));
    }

    #[test]
    fn cookies_are_parsed_and_flagged() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "a=1; charter_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "zz"), None);
        let secure = set_cookie(SESSION_COOKIE, "v", None, true);
        assert!(secure.starts_with("__Host-charter_session=v;"), "{secure}");
        assert!(
            secure.contains("; Secure") && secure.contains("Path=/"),
            "{secure}"
        );
        let c = set_cookie(SESSION_COOKIE, "v", None, false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/"));
        assert!(!c.contains("Secure"));
        assert!(set_cookie("x", "v", None, true).ends_with("; Secure"));
    }
}
