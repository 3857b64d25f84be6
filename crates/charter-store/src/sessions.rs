//! Web UI sessions: [`UiSession`] and [`SessionStore`].

use std::future::Future;

use charter_core::model::UnixMillis;

use crate::Result;

/// A web UI session as stored. The cookie's id itself is never stored: only its SHA-256
/// (`id_hash`, hex), so the table alone does not let anyone take a session over.
#[derive(Debug, Clone, PartialEq)]
pub struct UiSession {
    /// SHA-256 of the session id, lower-case hex.
    pub id_hash: String,
    /// The API token's name the session was opened with (`local` when the UI is open).
    pub name: String,
    /// The token's role, as its word (`viewer`, `reviewer`, `admin`).
    pub role: String,
    /// Charters the session may see; empty = all.
    pub charters: Vec<String>,
    /// The session's CSRF token, compared with every form's.
    pub csrf: String,
    /// A fingerprint of the grant the session was opened under (the server's: a hash over
    /// the session's id and the token's name, role, scopes and secret), so that a session
    /// ends when its token is removed, rotated or changed.
    pub grant: String,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// Web UI sessions, kept in the store so that every node sharing it knows a session opened
/// on any of them, and a restart does not log anyone out.
pub trait SessionStore: Send + Sync + 'static {
    /// Store a new session (durable on return); sessions expired at `session.created_at`
    /// are deleted in the same write.
    fn create_session(&self, session: UiSession) -> impl Future<Output = Result<()>> + Send;

    /// The session with this id hash if it is still live at `now`.
    fn session(
        &self,
        id_hash: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<UiSession>>> + Send;

    /// End a session; returns whether there was one.
    fn delete_session(&self, id_hash: &str) -> impl Future<Output = Result<bool>> + Send;
}
