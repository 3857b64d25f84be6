//! `tokens:` of `charter.yaml`: API tokens, their [`Role`] and the charters they see.

use serde::Deserialize;

use crate::config::SecretRef;
use crate::config::components::project::ProjectChecker;
use crate::config::diag::Check;
use crate::config::raw::{Location, S};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub name: Option<S<String>>,
    pub role: Option<S<String>>,
    pub secret: Option<S<String>>,
    pub charters: Option<Vec<S<String>>>,
}

/// An admin API token (used by the admin API; issue 4).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenDef {
    pub name: String,
    pub role: Role,
    pub secret: SecretRef,
    /// Charters this token may see; empty means all.
    pub charters: Vec<String>,
}

/// What a token may do. Ordered: each role may do what the roles before it may, except
/// `Agent`, which only reaches the MCP endpoint (see [`Role::calls_tools`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// An AI agent: lists and calls the MCP tools of its charters; nothing in the admin API
    /// or the web UI.
    Agent,
    Viewer,
    Reviewer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Viewer => "viewer",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }

    /// Whether the role may call MCP tools (run charters' actions): agents and admins. A
    /// viewer may not act, and a reviewer must not be able to start what they then approve.
    pub fn calls_tools(self) -> bool {
        matches!(self, Role::Agent | Role::Admin)
    }
}

impl ProjectChecker<'_> {
    /// `tokens:` of charter.yaml, and the charter names each token's scope lists (checked
    /// once the charters are known).
    pub(crate) fn tokens(
        &mut self,
        raw: Option<S<Vec<S<RawToken>>>>,
    ) -> (Vec<TokenDef>, Vec<(String, Location)>) {
        let mut tokens = Vec::new();
        let mut token_scopes = Vec::new();
        if let Some(raw_tokens) = raw {
            for raw in raw_tokens.value {
                for scope in raw.value.charters.iter().flatten() {
                    token_scopes.push((scope.value.clone(), scope.referenced));
                }
                if let Some(t) = self.token(raw) {
                    tokens.push(t);
                }
            }
        }
        (tokens, token_scopes)
    }

    pub(crate) fn token(&mut self, raw: S<RawToken>) -> Option<TokenDef> {
        let at = raw.referenced;
        let t = raw.value;
        let name = self.required_text(&t.name, at, "name", "a token name");
        let role = match &t.role {
            Some(r) => self.one_of(
                r,
                "role",
                &[
                    ("agent", Role::Agent),
                    ("viewer", Role::Viewer),
                    ("reviewer", Role::Reviewer),
                    ("admin", Role::Admin),
                ],
            ),
            None => {
                self.err(
                    at,
                    "missing `role`: expected one of `agent`, `viewer`, `reviewer`, `admin`",
                );
                None
            }
        };
        let secret = match &t.secret {
            Some(s) => self.secret(s, "secret"),
            None => {
                self.err(at, "missing `secret`: expected env:NAME or file:PATH");
                None
            }
        };
        Some(TokenDef {
            name: name?,
            role: role?,
            secret: secret?,
            charters: t
                .charters
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.value)
                .collect(),
        })
    }
}
