//! Connectors with their secrets resolved.

use std::fmt;
use std::time::Duration;

use charter_core::config::{HttpAuth, HttpConnector, SecretRef};

/// A secret value (token, password, API key). `Debug` and `Display` print `[redacted]`;
/// use [`Secret::expose`] at the one place the value is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How requests through a connector authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic base64(<username>:<password>)`.
    Basic { username: String, password: Secret },
    /// An API key in a named header.
    Header { name: String, value: Secret },
}

/// An HTTP connector with its secrets resolved (see [`ResolvedHttpConnector::resolve`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedHttpConnector {
    pub name: String,
    /// Base URL; action paths are appended to it.
    pub base_url: String,
    /// Headers added to every request (plain values, not secrets).
    pub headers: Vec<(String, String)>,
    pub auth: Option<ResolvedAuth>,
    /// Per-attempt timeout used when the action does not set one.
    pub timeout: Duration,
    /// Whether this connector may reach loopback, private, link-local and metadata
    /// addresses. When `false` (the default) every resolved address of every request is
    /// checked by the SSRF guard ([`crate::ssrf`]) and such destinations are refused.
    pub allow_private: bool,
}

impl ResolvedHttpConnector {
    /// Build from the configured connector, resolving each secret reference with
    /// `resolve` (e.g. reading `env:NAME` or `file:PATH`).
    pub fn resolve<E>(
        name: &str,
        config: &HttpConnector,
        mut resolve: impl FnMut(&SecretRef) -> Result<String, E>,
    ) -> Result<Self, E> {
        let auth = match &config.auth {
            None => None,
            Some(HttpAuth::Bearer(r)) => Some(ResolvedAuth::Bearer(Secret(resolve(r)?))),
            Some(HttpAuth::Basic { username, password }) => Some(ResolvedAuth::Basic {
                username: username.clone(),
                password: Secret(resolve(password)?),
            }),
            Some(HttpAuth::Header { name, value }) => Some(ResolvedAuth::Header {
                name: name.clone(),
                value: Secret(resolve(value)?),
            }),
            // The token is fetched at request time by `oauth::OAuth2Client`.
            Some(HttpAuth::OAuth2 { .. }) => None,
        };
        Ok(ResolvedHttpConnector {
            name: name.to_string(),
            base_url: config.base_url.clone(),
            headers: config
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            auth,
            timeout: config.timeout,
            allow_private: config.allow_private,
        })
    }
}
