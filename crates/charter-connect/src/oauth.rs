//! OAuth2 client credentials (RFC 6749 §4.4): fetch an access token from the token
//! endpoint, cache it until shortly before it expires, and fetch a new one when it expires
//! or the API answers 401.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::redirect;
use serde::Deserialize;

use crate::connector::Secret;

/// A token is replaced this long before the expiry the server announced.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Lifetime assumed when the token response has no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no token could be had. Messages never contain the client secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("OAuth2 token endpoint: {0}")]
    Request(String),
    #[error("OAuth2 token endpoint answered HTTP {status}{detail}")]
    Status { status: u16, detail: String },
    #[error("OAuth2 token endpoint answered without a usable access_token")]
    BadResponse,
}

impl OAuthError {
    /// Network trouble and 5xx/429 from the token endpoint are worth another attempt;
    /// rejected credentials (4xx) are not.
    pub fn retryable(&self) -> bool {
        match self {
            OAuthError::Request(_) => true,
            OAuthError::Status { status, .. } => *status == 429 || *status >= 500,
            OAuthError::BadResponse => false,
        }
    }
}

/// Client-credentials settings with the secret resolved.
#[derive(Debug, Clone)]
pub struct OAuth2Settings {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: Option<String>,
    /// May the token endpoint be on a loopback/private address (the connector's setting).
    pub allow_private: bool,
}

#[derive(Debug)]
struct Cached {
    token: Secret,
    expires: Instant,
}

/// Fetches and caches one connector's access token. One fetch at a time: concurrent
/// callers wait for the fetch in flight instead of starting their own.
#[derive(Debug)]
pub struct OAuth2Client {
    settings: OAuth2Settings,
    client: reqwest::Client,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
}

impl OAuth2Client {
    pub fn new(settings: OAuth2Settings) -> Result<Self, OAuthError> {
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy()
            .timeout(TOKEN_TIMEOUT);
        if !settings.allow_private {
            builder = builder.dns_resolver(std::sync::Arc::new(crate::ssrf::GuardedResolver));
        }
        let client = builder
            .build()
            .map_err(|e| OAuthError::Request(format!("cannot build the client: {e}")))?;
        Ok(OAuth2Client {
            settings,
            client,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// A valid access token: the cached one, or a freshly fetched one.
    pub async fn token(&self) -> Result<Secret, OAuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && Instant::now() < c.expires
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        let keep = lifetime.saturating_sub(EXPIRY_MARGIN).max(lifetime / 2);
        *cache = Some(Cached {
            token: token.clone(),
            expires: Instant::now() + keep,
        });
        Ok(token)
    }

    /// Forget `token` (the API rejected it), so the next [`OAuth2Client::token`] fetches a
    /// new one. A token cached meanwhile by another caller is kept.
    pub async fn invalidate(&self, token: &Secret) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|c| &c.token == token) {
            *cache = None;
        }
    }

    async fn fetch(&self) -> Result<(Secret, Duration), OAuthError> {
        let s = &self.settings;
        let url = reqwest::Url::parse(&s.token_url)
            .map_err(|_| OAuthError::Request("invalid token_url".into()))?;
        if !s.allow_private
            && let Err(refused) = crate::ssrf::check_url(&url)
        {
            return Err(OAuthError::Request(refused.to_string()));
        }
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if let Some(scope) = &s.scope {
            form.push(("scope", scope.clone()));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        // RFC 6749 §2.3.1: client id and secret form-encoded, then HTTP Basic.
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(&s.client_id),
            form_encode(s.client_secret.expose())
        ));
        let mut auth =
            reqwest::header::HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| {
                OAuthError::Request("client credentials are not valid in a header".into())
            })?;
        auth.set_sensitive(true);
        let response = self
            .client
            .post(url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| OAuthError::Request(describe(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| OAuthError::Request(describe(&e)))?;
        if !status.is_success() {
            // RFC 6749 §5.2 error codes are safe to show; anything else is not echoed.
            let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .filter(|e| e.len() < 64 && e.bytes().all(|b| b.is_ascii_graphic()))
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            return Err(OAuthError::Status {
                status: status.as_u16(),
                detail,
            });
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|_| OAuthError::BadResponse)?;
        let token = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or(OAuthError::BadResponse)?;
        if parsed
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(OAuthError::BadResponse);
        }
        let lifetime = match parsed.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64().map(Duration::from_secs),
            Some(serde_json::Value::String(s)) => s.parse().ok().map(Duration::from_secs),
            _ => None,
        }
        .unwrap_or(DEFAULT_LIFETIME);
        Ok((Secret::new(token), lifetime))
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn describe(e: &reqwest::Error) -> String {
    let mut current: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = current {
        if let Some(refused) = err.downcast_ref::<crate::ssrf::Refused>() {
            return refused.to_string();
        }
        current = err.source();
    }
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(form_encode("read:tickets"), "read%3Atickets");
    }
}
