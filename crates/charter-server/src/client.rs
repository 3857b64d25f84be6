//! The client address of the request being served: set by the router's guard
//! ([`crate::guard`]), read by the audit log, the limiters and the logs. Plain data, below
//! every other module.

use std::net::IpAddr;

/// The client's address as the server sees it: the TCP peer, or, when the peer is one of
/// `server.trusted_proxies`, the address it forwarded (`X-Forwarded-For`). Set on every
/// request by [`crate::guard::admin_guard`] (and by the webhook routes for their rate limit); the login
/// and token limiters, the audit log and logs read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

tokio::task_local! {
    /// The client address of the admin request being served (set by [`crate::guard::admin_guard`] for
    /// the request's handler): [`crate::record::audit`] records it with each entry.
    pub static CLIENT: IpAddr;
}

/// The client address of the admin request this task serves, if any.
pub fn current_client() -> Option<IpAddr> {
    CLIENT.try_with(|c| *c).ok()
}
