//! `type: smtp` connectors: host, port, TLS mode, credentials, sender and allowed domains.

use std::time::Duration;

use crate::config::components::project::ProjectChecker;
use crate::config::diag::Check;
use crate::config::raw::{Location, RawConnector, S};
use crate::config::{ConnectorKind, SecretRef};

/// `type: smtp`.
#[derive(Debug, Clone, PartialEq)]
pub struct SmtpConnector {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    /// Sender, `Name <addr>` or `addr`.
    pub from: String,
    pub timeout: Duration,
    /// The relay may be a loopback or private address; otherwise the outbound guard
    /// refuses such addresses.
    pub allow_private: bool,
    /// `allowed_domains:` (lower-case): when not empty, every recipient's domain must be one
    /// of these or a subdomain of one; other recipients fail the action before anything is
    /// sent.
    pub allowed_domains: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Implicit TLS (port 465 by default).
    Tls,
    /// STARTTLS required (port 587 by default).
    StartTls,
    /// Plain (port 25 by default): local relays only.
    None,
}

impl ProjectChecker<'_> {
    pub(crate) fn smtp(
        &mut self,
        name: &S<String>,
        at: Location,
        raw: &RawConnector,
        timeout: Duration,
        allow_private: bool,
    ) -> Option<ConnectorKind> {
        let host = self.required_text(&raw.host, at, "host", "the SMTP server's host name");
        let tls = match &raw.tls {
            Some(t) => self.one_of(
                t,
                "tls",
                &[
                    ("starttls", SmtpTls::StartTls),
                    ("tls", SmtpTls::Tls),
                    ("none", SmtpTls::None),
                ],
            ),
            None => {
                self.err(
                    at,
                    format!(
                        "smtp connector `{}` has no `tls`; expected `starttls` (port 587), `tls` (port 465) or `none` (a local relay only)",
                        name.value
                    ),
                );
                None
            }
        };
        let port = match &raw.port {
            Some(p) => match u16::try_from(p.value) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    self.err(
                        p.referenced,
                        format!("`port` is {}; expected a port from 1 to 65535", p.value),
                    );
                    None
                }
            },
            None => tls.map(|t| match t {
                SmtpTls::Tls => 465,
                SmtpTls::StartTls => 587,
                SmtpTls::None => 25,
            }),
        };
        let username = raw.username.as_ref().map(|u| u.value.trim().to_string());
        let password = match &raw.password {
            Some(p) => self.secret(p, "password").map(Some),
            None => Some(None),
        };
        if username.is_some() != raw.password.is_some() {
            self.err(
                at,
                "`username` and `password` go together; give both or neither",
            );
            return None;
        }
        let from = self.smtp_from(raw, at);
        let mut allowed_domains = Vec::new();
        let mut domains_ok = true;
        for d in raw.allowed_domains.iter().flat_map(|l| l.value.iter()) {
            let domain = d.value.trim().trim_start_matches('.').to_ascii_lowercase();
            if domain.is_empty() || domain.contains(['@', ' ', ',', '/']) {
                self.err(
                    d.referenced,
                    format!(
                        "`allowed_domains` has `{}`; expected a domain such as `acme.example`",
                        d.value
                    ),
                );
                domains_ok = false;
            } else {
                allowed_domains.push(domain);
            }
        }
        if let Some(h) = &raw.host
            && !allow_private
            && let Some(why) = crate::net::private_host(&h.value)
        {
            self.err(
                h.referenced,
                format!(
                    "`host` is `{}`, {why}: the outbound guard refuses it, so this connector could never send; set `allow_private: true` on connector `{}` if the relay is meant to be local",
                    h.value.trim(),
                    name.value
                ),
            );
            domains_ok = false;
        }
        if !domains_ok {
            return None;
        }
        Some(ConnectorKind::Smtp(SmtpConnector {
            host: host?,
            port: port?,
            tls: tls?,
            username,
            password: password?,
            from: from?,
            timeout,
            allow_private,
            allowed_domains,
        }))
    }

    /// `from:`: the sender address.
    fn smtp_from(&mut self, raw: &RawConnector, at: Location) -> Option<String> {
        match &raw.from {
            Some(f) if f.value.contains('@') => Some(f.value.trim().to_string()),
            Some(f) => {
                self.err(
                    f.referenced,
                    format!(
                        "`from` is `{}`; expected a sender address such as `Charter <charter@acme.example>`",
                        f.value
                    ),
                );
                None
            }
            None => {
                self.err(
                    at,
                    "missing `from`: expected a sender address such as `Charter <charter@acme.example>`",
                );
                None
            }
        }
    }
}
