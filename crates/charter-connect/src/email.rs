//! Email over SMTP (lettre): implicit TLS, STARTTLS, or plain for a local relay.
//!
//! Each message's `Message-ID` is `<idempotency-key@sender-domain>`, so a retry after an
//! uncertain failure carries the same id and receiving systems can recognise the repeat.

use std::time::{Duration, Instant};

use lettre::message::{Mailbox, Mailboxes, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::connector::Secret;
use crate::guarded::failure;
use crate::http::AttemptOutcome;

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// TLS from the first byte (usually port 465).
    Tls,
    /// Plain connection upgraded with STARTTLS, which is required (usually port 587).
    StartTls,
    /// No TLS: only for a relay on the same machine or network.
    None,
}

/// An SMTP connector with its password resolved.
#[derive(Debug, Clone)]
pub struct SmtpConnector {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Sender address, `Name <addr@example.com>` or `addr@example.com`.
    pub from: String,
    pub timeout: Duration,
    /// The relay may be a loopback or private address; otherwise every address the host
    /// resolves to is checked and such ones are refused.
    pub allow_private: bool,
    /// Lower-case domains recipients must be in (a domain admits its subdomains); empty
    /// means any.
    pub allowed_domains: Vec<String>,
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// Recipients, comma-separated (each checked by the worker when it came from a
    /// template: see [`one_recipient`]).
    pub to: String,
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// A message that cannot be built: a permanent failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("invalid sender address {0:?}")]
    From(String),
    #[error("invalid recipient list {0:?}")]
    To(String),
    #[error("no recipient")]
    NoRecipient,
    /// A templated recipient rendered to several addresses (or none).
    #[error(
        "recipient {rendered:?} is {count} addresses; a templated recipient must be exactly one address (declare several recipients as a list under `to:`)"
    )]
    NotOneRecipient { rendered: String, count: usize },
    /// A recipient outside the connector's `allowed_domains`.
    #[error("recipient {address} is not in the connector's allowed_domains ({allowed})")]
    DomainNotAllowed { address: String, allowed: String },
    #[error("cannot build the message: {0}")]
    Build(String),
    #[error("SMTP connector `{connector}`: {message}")]
    Transport { connector: String, message: String },
}

/// Checks that `rendered` (a templated recipient, after rendering) is exactly one address,
/// `addr@example.com` or `Name <addr@example.com>`: a payload value such as
/// `a@example.test, attacker@evil.example` cannot add a recipient.
pub fn one_recipient(rendered: &str) -> Result<(), EmailError> {
    let list: Mailboxes = rendered
        .parse()
        .map_err(|_| EmailError::To(rendered.to_string()))?;
    match list.iter().count() {
        1 => Ok(()),
        count => Err(EmailError::NotOneRecipient {
            rendered: rendered.to_string(),
            count,
        }),
    }
}

impl SmtpConnector {
    /// The recipients of `to` (comma-separated), each in `allowed_domains` when that is set.
    pub fn recipients(&self, to: &str) -> Result<Mailboxes, EmailError> {
        let list: Mailboxes = to.parse().map_err(|_| EmailError::To(to.to_string()))?;
        if list.iter().next().is_none() {
            return Err(EmailError::NoRecipient);
        }
        if !self.allowed_domains.is_empty() {
            for m in list.iter() {
                let domain = m.email.domain().to_ascii_lowercase();
                let allowed = self.allowed_domains.iter().any(|d| {
                    domain == *d
                        || domain
                            .strip_suffix(d.as_str())
                            .is_some_and(|head| head.ends_with('.'))
                });
                if !allowed {
                    return Err(EmailError::DomainNotAllowed {
                        address: m.email.to_string(),
                        allowed: self.allowed_domains.join(", "),
                    });
                }
            }
        }
        Ok(list)
    }

    /// The message as it will be sent, with `Message-ID: <idempotency_key@domain>`.
    pub fn build(&self, email: &Email, idempotency_key: &str) -> Result<Message, EmailError> {
        let from: Mailbox = self
            .from
            .parse()
            .map_err(|_| EmailError::From(self.from.clone()))?;
        let to = self.recipients(&email.to)?;
        let domain = from.email.domain().to_string();
        let mut builder = Message::builder()
            .from(from)
            .subject(email.subject.replace(['\r', '\n'], " "))
            .message_id(Some(format!("<{idempotency_key}@{domain}>")))
            .header(ContentType::TEXT_PLAIN);
        for m in to {
            builder = builder.to(m);
        }
        builder
            .body(email.body.clone())
            .map_err(|e| EmailError::Build(e.to_string()))
    }

    /// The address to connect to: the host itself with `allow_private`, otherwise the first
    /// of its addresses the outbound guard accepts (so a second lookup cannot change it).
    async fn server(&self) -> Result<String, (String, bool)> {
        if self.allow_private {
            return Ok(self.host.clone());
        }
        let addrs: Vec<std::net::SocketAddr> =
            match tokio::net::lookup_host((self.host.as_str(), self.port)).await {
                Ok(a) => a.collect(),
                Err(e) => return Err((format!("cannot resolve {}: {e}", self.host), true)),
            };
        match crate::ssrf::filter_addrs(&self.host, addrs) {
            Ok(ok) => Ok(ok[0].ip().to_string()),
            Err(r) => Err((
                format!(
                    "SMTP connector `{}`: refused by the outbound guard: {} is {}; set `allow_private: true` on the connector to allow it",
                    self.name, r.host, r.reason
                ),
                false,
            )),
        }
    }

    /// A transport to `server` (an address or the host), with TLS checking the host's name.
    fn transport(&self, server: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, EmailError> {
        crate::install_crypto_provider();
        let err = |e: lettre::transport::smtp::Error| EmailError::Transport {
            connector: self.name.clone(),
            message: e.to_string(),
        };
        let tls = || TlsParameters::new(self.host.clone()).map_err(err);
        let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server);
        let builder = match self.security {
            SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls()?)),
            SmtpSecurity::StartTls => builder.tls(Tls::Required(tls()?)),
            SmtpSecurity::None => builder,
        };
        let mut builder = builder.port(self.port).timeout(Some(self.timeout));
        if let (Some(user), Some(pass)) = (&self.username, &self.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), pass.expose().to_string()));
        }
        Ok(builder.build())
    }

    /// Send once. SMTP 5xx answers and unbuildable messages are permanent; 4xx answers,
    /// timeouts and connection trouble are retryable. Errors never contain the password.
    pub async fn attempt(&self, email: &Email, idempotency_key: &str) -> AttemptOutcome {
        let started = Instant::now();
        let message = match self.build(email, idempotency_key) {
            Ok(m) => m,
            Err(e) => return failure(e.to_string(), false, None, started),
        };
        let server = match self.server().await {
            Ok(s) => s,
            Err((message, retryable)) => return failure(message, retryable, None, started),
        };
        let transport = match self.transport(&server) {
            Ok(t) => t,
            Err(e) => return failure(e.to_string(), false, None, started),
        };
        match transport.send(message).await {
            Ok(response) => {
                let code = response.code();
                let text = response.message().collect::<Vec<_>>().join(" ");
                AttemptOutcome {
                    status: Some(smtp_code(&code.to_string())),
                    ok: true,
                    retryable: false,
                    retry_after: None,
                    error: None,
                    body_excerpt: (!text.is_empty()).then(|| text.chars().take(200).collect()),
                    body: Vec::new(),
                    body_truncated: false,
                    duration: started.elapsed(),
                }
            }
            Err(e) => {
                let retryable = !e.is_permanent();
                let status = e.status().map(|c| smtp_code(&c.to_string()));
                let mut out = failure(format!("SMTP: {}", describe(&e)), retryable, None, started);
                out.status = status;
                out
            }
        }
    }
}

fn smtp_code(s: &str) -> u16 {
    s.parse().unwrap_or(0)
}

/// The error without anything the server could echo back from the credentials.
fn describe(e: &lettre::transport::smtp::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let text = e.to_string();
    let mut cut = text.len().min(300);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp() -> SmtpConnector {
        SmtpConnector {
            name: "mail".into(),
            host: "127.0.0.1".into(),
            port: 25,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: "Charter <charter@acme.example>".into(),
            timeout: Duration::from_secs(5),
            allow_private: true,
            allowed_domains: Vec::new(),
        }
    }

    #[test]
    fn message_id_comes_from_the_key_and_headers_cannot_be_injected() {
        let email = Email {
            to: "a@x.example, B <b@y.example>".into(),
            subject: "Hi\r\nBcc: evil@z.example".into(),
            body: "Body".into(),
        };
        let m = smtp().build(&email, "abc123").unwrap();
        let text = String::from_utf8(m.formatted()).unwrap();
        assert!(text.contains("Message-ID: <abc123@acme.example>"), "{text}");
        assert!(text.contains("a@x.example"), "{text}");
        assert!(text.contains("<b@y.example>"), "{text}");
        assert!(!text.contains("\r\nBcc:"), "{text}");
    }

    #[test]
    fn a_templated_recipient_is_one_address_and_domains_are_checked() {
        assert!(one_recipient("a@example.test").is_ok());
        assert!(one_recipient("Ann <a@example.test>").is_ok());
        let err = one_recipient("a@example.test, attacker@evil.example").unwrap_err();
        assert!(
            matches!(err, EmailError::NotOneRecipient { count: 2, .. }),
            "{err}"
        );
        assert!(one_recipient("").is_err());
        let mut c = smtp();
        c.allowed_domains = vec!["example.test".into()];
        assert!(c.recipients("a@example.test, b@eu.example.test").is_ok());
        let err = c.recipients("a@example.test, x@evil.example").unwrap_err();
        assert!(
            err.to_string()
                .contains("x@evil.example is not in the connector's allowed_domains"),
            "{err}"
        );
        // A look-alike suffix is not a subdomain.
        assert!(c.recipients("x@badexample.test").is_err());
        let e = Email {
            to: "x@evil.example".into(),
            subject: "s".into(),
            body: "b".into(),
        };
        assert!(matches!(
            c.build(&e, "k"),
            Err(EmailError::DomainNotAllowed { .. })
        ));
    }

    #[test]
    fn bad_addresses_are_refused() {
        let mut e = Email {
            to: "not an address".into(),
            subject: "s".into(),
            body: "b".into(),
        };
        assert!(matches!(smtp().build(&e, "k"), Err(EmailError::To(_))));
        e.to = "ok@x.example".into();
        let mut c = smtp();
        c.from = "nope".into();
        assert!(matches!(c.build(&e, "k"), Err(EmailError::From(_))));
    }
}
