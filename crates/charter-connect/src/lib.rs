//! Charter's outbound connectors.
//!
//! The worker executes an action **one attempt at a time**: it renders the request, calls
//! [`HttpExecutor::prepare`] and [`HttpExecutor::attempt`], records the [`AttemptOutcome`]
//! durably, and — when the outcome is retryable and attempts remain — sleeps for
//! [`backoff`] before the next attempt. Nothing here sleeps, retries or stores.
//!
//! Secrets are resolved by the caller and carried in [`Secret`], whose `Debug` and
//! `Display` print `[redacted]`. Error strings produced here never contain header values.

pub mod breaker;
mod connector;
pub mod email;
mod guarded;
mod http;
pub mod limit;
pub mod oauth;
pub mod presets;
mod retry;
pub mod slack;
pub mod sql;
pub mod ssrf;

pub use connector::{ResolvedAuth, ResolvedHttpConnector, Secret};
pub use guarded::{HttpConnection, ResponseContract};
pub use http::{
    AttemptOutcome, BODY_EXCERPT_BYTES, BODY_KEEP_BYTES, BODY_READ_LIMIT, ConnectError,
    DEFAULT_TIMEOUT, HttpExecutor, HttpRequest, target_url,
};
pub use retry::{backoff, parse_http_date, parse_retry_after};

/// A configured connector, ready to act through. Built once at start-up (secrets resolved)
/// and shared by every run.
#[derive(Debug)]
// Built once per connector and shared behind an `Arc`; the size difference is irrelevant.
#[allow(clippy::large_enum_variant)]
pub enum Connection {
    Http(HttpConnection),
    Slack(slack::SlackConnector),
    Smtp(email::SmtpConnector),
    Sql(sql::SqlConnector),
}

/// Install rustls' `ring` crypto provider as the process default.
///
/// reqwest is built with `rustls-no-provider`, so a provider must be installed before the
/// first client is built; `main` calls this first thing, and [`HttpExecutor::new`] calls
/// it too. Calling it again (or after another provider was installed) is harmless.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is exactly what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Connection {
    /// Build a connection from its configuration: apply the HTTP preset, resolve every
    /// secret with `resolve` (`env:`/`file:`), compile the response contract, set up the
    /// OAuth2 client, rate limit, concurrency cap and circuit breaker. Relative SQLite
    /// paths are taken from `root`. Errors name the connector and never hold a secret.
    pub fn from_config(
        name: &str,
        kind: &charter_core::config::ConnectorKind,
        root: &std::path::Path,
        mut resolve: impl FnMut(&charter_core::config::SecretRef) -> Result<String, String>,
    ) -> Result<Connection, String> {
        use charter_core::config::{ConnectorKind, HttpAuth, SmtpTls, SqlDatabase, TextOrSecret};
        Ok(match kind {
            ConnectorKind::Http(raw) => {
                let h = presets::apply(raw).map_err(|e| format!("connector `{name}`: {e}"))?;
                let connector = ResolvedHttpConnector::resolve(name, &h, &mut resolve)?;
                let oauth = match &h.auth {
                    Some(HttpAuth::OAuth2 {
                        token_url,
                        client_id,
                        client_secret,
                        scope,
                    }) => Some(
                        oauth::OAuth2Client::new(oauth::OAuth2Settings {
                            token_url: token_url.clone(),
                            client_id: client_id.clone(),
                            client_secret: Secret::new(resolve(client_secret)?),
                            scope: scope.clone(),
                            allow_private: h.allow_private,
                        })
                        .map_err(|e| format!("connector `{name}`: {e}"))?,
                    ),
                    _ => None,
                };
                let contract = match &h.response_schema {
                    Some(s) => Some(
                        ResponseContract::new(&s.file, &s.schema)
                            .map_err(|e| format!("connector `{name}`: response_schema: {e}"))?,
                    ),
                    None => None,
                };
                Connection::Http(HttpConnection {
                    connector,
                    oauth,
                    rate_limit: h.rate_limit.map(limit::RateLimiter::new),
                    concurrency: h.concurrency.map(limit::ConcurrencyLimit::new),
                    breaker: h.circuit_breaker.map(|b| {
                        breaker::CircuitBreaker::new(
                            name,
                            breaker::BreakerPolicy {
                                failures: b.failures,
                                cool_down: b.cool_down,
                            },
                        )
                    }),
                    contract,
                })
            }
            ConnectorKind::Slack(s) => Connection::Slack(slack::SlackConnector {
                name: name.to_string(),
                auth: match &s.auth {
                    charter_core::config::SlackAuth::Webhook(r) => {
                        slack::SlackAuth::Webhook(Secret::new(resolve(r)?))
                    }
                    charter_core::config::SlackAuth::Bot { token, base_url } => {
                        slack::SlackAuth::Bot {
                            token: Secret::new(resolve(token)?),
                            base_url: base_url.clone(),
                        }
                    }
                },
                timeout: s.timeout,
                allow_private: s.allow_private,
            }),
            ConnectorKind::Smtp(s) => Connection::Smtp(email::SmtpConnector {
                name: name.to_string(),
                host: s.host.clone(),
                port: s.port,
                security: match s.tls {
                    SmtpTls::Tls => email::SmtpSecurity::Tls,
                    SmtpTls::StartTls => email::SmtpSecurity::StartTls,
                    SmtpTls::None => email::SmtpSecurity::None,
                },
                username: s.username.clone(),
                password: match &s.password {
                    Some(p) => Some(Secret::new(resolve(p)?)),
                    None => None,
                },
                from: s.from.clone(),
                timeout: s.timeout,
                allow_private: s.allow_private,
                allowed_domains: s.allowed_domains.clone(),
            }),
            ConnectorKind::Sql(s) => {
                let target = match &s.database {
                    SqlDatabase::Sqlite(p) => {
                        let p = std::path::Path::new(p);
                        sql::SqlTarget::Sqlite(if p.is_absolute() {
                            p.to_path_buf()
                        } else {
                            root.join(p)
                        })
                    }
                    SqlDatabase::Postgres(TextOrSecret::Text(u)) => {
                        sql::SqlTarget::Postgres(Secret::new(u.clone()))
                    }
                    SqlDatabase::Postgres(TextOrSecret::Secret(r)) => {
                        sql::SqlTarget::Postgres(Secret::new(resolve(r)?))
                    }
                };
                Connection::Sql(sql::SqlConnector::new(
                    name,
                    target,
                    s.timeout,
                    s.allow_private,
                ))
            }
        })
    }

    /// The plain HTTP connector, for `request` actions.
    pub fn http(&self) -> Option<&HttpConnection> {
        match self {
            Connection::Http(h) => Some(h),
            _ => None,
        }
    }
}
