//! `connectors:` of `charter.yaml`: the fields every connector type shares, the dispatch on
//! `type:`, and one module per type.

pub(crate) mod http;
pub(crate) mod slack;
pub(crate) mod smtp;
pub(crate) mod sql;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use crate::config::components::project::ProjectChecker;
use crate::config::diag::{Check, valid_name};
use crate::config::raw::{Entries, Location, RawAuth, S, Scalar};
use crate::config::{HttpConnector, SlackConnector, SmtpConnector, SqlConnector};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnector {
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub base_url: Option<S<String>>,
    pub headers: Option<Entries<S<Scalar>>>,
    pub auth: Option<S<RawAuth>>,
    pub timeout: Option<S<Scalar>>,
    pub allow_private: Option<S<bool>>,
    // http extras
    pub preset: Option<S<String>>,
    /// `10/s`, `600/m` or a number per second.
    pub rate_limit: Option<S<Scalar>>,
    pub concurrency: Option<S<i64>>,
    pub circuit_breaker: Option<S<RawBreaker>>,
    pub response_schema: Option<S<String>>,
    // slack
    pub webhook_url: Option<S<String>>,
    pub token: Option<S<String>>,
    /// Slack app signing secret (`env:NAME`): verifies interactive callbacks (buttons).
    pub signing_secret: Option<S<String>>,
    /// Slack user id -> the token name (in `tokens:`) whose role and scopes the user has
    /// when deciding from Slack.
    pub users: Option<S<Entries<S<String>>>>,
    // smtp
    pub host: Option<S<String>>,
    pub port: Option<S<i64>>,
    pub tls: Option<S<String>>,
    pub username: Option<S<String>>,
    pub password: Option<S<String>>,
    pub from: Option<S<String>>,
    /// Recipient domains an `smtp` connector may mail (a domain also admits its
    /// subdomains); none means any.
    pub allowed_domains: Option<S<Vec<S<String>>>>,
    // sql
    pub url: Option<S<String>>,
}

/// `circuit_breaker:` of an HTTP connector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failures: Option<S<i64>>,
    pub cool_down: Option<S<Scalar>>,
}

/// A named, credentialed way to reach one system.
#[derive(Debug, Clone, PartialEq)]
pub struct Connector {
    pub name: String,
    pub kind: ConnectorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConnectorKind {
    Http(HttpConnector),
    /// Slack: an incoming webhook or a bot token (`chat.postMessage`).
    Slack(SlackConnector),
    /// Email over SMTP.
    Smtp(SmtpConnector),
    /// A PostgreSQL or SQLite database receiving parametrised statements.
    Sql(SqlConnector),
}

impl ConnectorKind {
    /// The `type:` word of this kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            ConnectorKind::Http(_) => "http",
            ConnectorKind::Slack(_) => "slack",
            ConnectorKind::Smtp(_) => "smtp",
            ConnectorKind::Sql(_) => "sql",
        }
    }
}

/// Consecutive failures that open a connector's circuit, and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerPolicy {
    pub failures: u32,
    pub cool_down: Duration,
}

/// The connectors of charter.yaml, and what charters need to know about the ones that did
/// not validate.
#[derive(Default)]
pub(crate) struct ConnectorTable {
    pub(crate) connectors: BTreeMap<String, Connector>,
    /// Every connector name written, valid or not.
    pub(crate) declared: BTreeSet<String>,
    /// The `type:` written for each connector (valid or not).
    pub(crate) types: BTreeMap<String, String>,
    /// Slack connectors that post with a bot `token:`.
    pub(crate) slack_bots: BTreeSet<String>,
}

impl ProjectChecker<'_> {
    /// `connectors:` of charter.yaml.
    pub(crate) fn connectors(
        &mut self,
        raw: Option<S<Entries<S<RawConnector>>>>,
    ) -> ConnectorTable {
        let mut table = ConnectorTable::default();
        if let Some(raw_connectors) = raw {
            for (name, raw) in raw_connectors.value.0 {
                table.declared.insert(name.value.clone());
                if let Some(t) = &raw.value.kind {
                    table
                        .types
                        .insert(name.value.clone(), t.value.trim().to_string());
                    if t.value.trim() == "slack" && raw.value.token.is_some() {
                        table.slack_bots.insert(name.value.clone());
                    }
                }
                if !valid_name(&name.value) {
                    self.err(
                        name.referenced,
                        format!(
                            "connector name `{}` is not allowed; expected lower-case letters, digits, `-` and `_`",
                            name.value
                        ),
                    );
                }
                if let Some(c) = self.connector(&name, raw) {
                    table.connectors.insert(name.value.clone(), c);
                }
            }
        }
        table
    }

    pub(crate) fn connector(
        &mut self,
        name: &S<String>,
        raw: S<RawConnector>,
    ) -> Option<Connector> {
        let at = raw.referenced;
        let raw: RawConnector = raw.value;
        let kind = self.required_text(
            &raw.kind,
            at,
            "type",
            "the connector type: `http`, `slack`, `smtp` or `sql`",
        )?;
        const TYPES: [&str; 4] = ["http", "slack", "smtp", "sql"];
        if !TYPES.contains(&kind.as_str()) {
            let k = raw.kind.as_ref().map(|k| k.referenced).unwrap_or(at);
            self.err(
                k,
                format!(
                    "connector type `{kind}` is not supported; expected one of `http`, `slack`, `smtp`, `sql`"
                ),
            );
            return None;
        }
        let foreign = self.foreign_keys(&raw, at, &kind);
        let timeout = self.duration_or(&raw.timeout, "timeout", Duration::from_secs(10));
        let allow_private = raw.allow_private.as_ref().map(|b| b.value).unwrap_or(false);
        let kind = match kind.as_str() {
            "slack" => self.slack(name, at, &raw, timeout, allow_private),
            "smtp" => self.smtp(name, at, &raw, timeout, allow_private),
            "sql" => self.sql(name, at, &raw, timeout, allow_private),
            _ => self.http(name, raw, timeout, allow_private),
        };
        if foreign {
            return None;
        }
        Some(Connector {
            name: name.value.clone(),
            kind: kind?,
        })
    }

    /// Reports every key that belongs to another connector type than `kind` (where it is
    /// written); true when there was one.
    fn foreign_keys(&mut self, raw: &RawConnector, at: Location, kind: &str) -> bool {
        let loc = |v: Option<Location>| v.unwrap_or(at);
        let keys: [(&str, Option<Location>, &[&str]); 23] = [
            (
                "base_url",
                raw.base_url.as_ref().map(|v| v.referenced),
                &["http", "slack"],
            ),
            ("headers", raw.headers.as_ref().map(|_| at), &["http"]),
            ("auth", raw.auth.as_ref().map(|v| v.referenced), &["http"]),
            (
                "allow_private",
                raw.allow_private.as_ref().map(|v| v.referenced),
                &["http", "slack", "smtp", "sql"],
            ),
            (
                "preset",
                raw.preset.as_ref().map(|v| v.referenced),
                &["http"],
            ),
            (
                "rate_limit",
                raw.rate_limit.as_ref().map(|v| v.referenced),
                &["http"],
            ),
            (
                "concurrency",
                raw.concurrency.as_ref().map(|v| v.referenced),
                &["http"],
            ),
            (
                "circuit_breaker",
                raw.circuit_breaker.as_ref().map(|v| v.referenced),
                &["http"],
            ),
            (
                "response_schema",
                raw.response_schema.as_ref().map(|v| v.referenced),
                &["http"],
            ),
            (
                "webhook_url",
                raw.webhook_url.as_ref().map(|v| v.referenced),
                &["slack"],
            ),
            (
                "token",
                raw.token.as_ref().map(|v| v.referenced),
                &["slack"],
            ),
            (
                "signing_secret",
                raw.signing_secret.as_ref().map(|v| v.referenced),
                &["slack"],
            ),
            (
                "users",
                raw.users.as_ref().map(|v| v.referenced),
                &["slack"],
            ),
            ("host", raw.host.as_ref().map(|v| v.referenced), &["smtp"]),
            ("port", raw.port.as_ref().map(|v| v.referenced), &["smtp"]),
            ("tls", raw.tls.as_ref().map(|v| v.referenced), &["smtp"]),
            (
                "username",
                raw.username.as_ref().map(|v| v.referenced),
                &["smtp"],
            ),
            (
                "password",
                raw.password.as_ref().map(|v| v.referenced),
                &["smtp"],
            ),
            ("from", raw.from.as_ref().map(|v| v.referenced), &["smtp"]),
            (
                "allowed_domains",
                raw.allowed_domains.as_ref().map(|v| v.referenced),
                &["smtp"],
            ),
            ("url", raw.url.as_ref().map(|v| v.referenced), &["sql"]),
            (
                "timeout",
                raw.timeout.as_ref().map(|v| v.referenced),
                &["http", "slack", "smtp", "sql"],
            ),
            ("type", None, &[]),
        ];
        let mut foreign = false;
        for (key, place, types) in keys {
            if let Some(place) = place
                && !types.contains(&kind)
            {
                self.err(
                    loc(Some(place)),
                    format!(
                        "`{key}` is not a setting of a `{kind}` connector (it belongs to {})",
                        types
                            .iter()
                            .map(|t| format!("`{t}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                foreign = true;
            }
        }
        foreign
    }
}
