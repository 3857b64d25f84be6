//! HTTP connector presets: thin layers of defaults over a plain `type: http` connector.
//!
//! A preset fills in what the charter author would otherwise look up — the default API
//! root, headers the API wants, a rate limit and concurrency under the vendor's published
//! limits, a circuit breaker — and checks that the configured auth is the kind the system
//! accepts. Anything written in the connector wins over the preset. The rules that decide
//! whether a connector loads (names, default base URLs, accepted auth shapes) are in
//! `charter_core::config::HTTP_PRESETS`, so `charter check` applies them too.

use std::time::Duration;

pub use charter_core::config::AuthKind;
use charter_core::config::{CircuitBreakerPolicy, HTTP_PRESETS, HttpConnector, HttpPresetRule};

/// One preset.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    /// What the preset is for, for docs and messages.
    pub system: &'static str,
    pub headers: &'static [(&'static str, &'static str)],
    /// Requests per second when the connector sets none.
    pub rate_limit: f64,
    /// Requests in flight when the connector sets none.
    pub concurrency: usize,
    pub breaker: CircuitBreakerPolicy,
    /// The charter.yaml snippet documented in docs/src/connectors.md.
    pub snippet: &'static str,
}

const BREAKER: CircuitBreakerPolicy = CircuitBreakerPolicy {
    failures: 5,
    cool_down: Duration::from_secs(30),
};

/// Every preset.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "zendesk",
        system: "Zendesk Support API (API token: basic auth as `you@company.com/token`)",
        headers: &[("Accept", "application/json")],
        // Zendesk Team plans allow 200 requests/minute.
        rate_limit: 3.0,
        concurrency: 4,
        breaker: BREAKER,
        snippet: "zendesk:\n  type: http\n  preset: zendesk\n  base_url: https://acme.zendesk.com\n  auth: { basic: { username: ops@acme.example/token, password: env:ZENDESK_API_TOKEN } }",
    },
    Preset {
        name: "hubspot",
        system: "HubSpot CRM API (private app access token)",
        headers: &[("Accept", "application/json")],
        // Private apps: 100 requests per 10 seconds.
        rate_limit: 9.0,
        concurrency: 4,
        breaker: BREAKER,
        snippet: "hubspot:\n  type: http\n  preset: hubspot\n  auth: { bearer: env:HUBSPOT_TOKEN }",
    },
    Preset {
        name: "jira",
        system: "Jira Cloud REST API (basic auth: account email and API token)",
        headers: &[
            ("Accept", "application/json"),
            // Jira rejects some writes without it (XSRF check).
            ("X-Atlassian-Token", "no-check"),
        ],
        rate_limit: 5.0,
        concurrency: 4,
        breaker: BREAKER,
        snippet: "jira:\n  type: http\n  preset: jira\n  base_url: https://acme.atlassian.net\n  auth: { basic: { username: ops@acme.example, password: env:JIRA_API_TOKEN } }",
    },
    Preset {
        name: "rest_crm",
        system: "a generic JSON REST CRM (bearer token, API-key header or OAuth2)",
        headers: &[("Accept", "application/json")],
        rate_limit: 10.0,
        concurrency: 8,
        breaker: BREAKER,
        snippet: "crm:\n  type: http\n  preset: rest_crm\n  base_url: https://crm.acme.example/api\n  auth: { header: { name: X-Api-Key, value: env:CRM_API_KEY } }",
    },
];

/// The preset called `name`.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Why a preset cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresetError {
    #[error("unknown preset `{0}`")]
    Unknown(String),
    #[error("preset `{preset}` ({system}) does not accept `{auth}` auth; use one of {allowed}")]
    Auth {
        preset: String,
        system: &'static str,
        auth: &'static str,
        allowed: String,
    },
}

impl Preset {
    /// The load rule `charter check` applies for this preset (accepted auth shapes,
    /// default base URL).
    pub fn rule(&self) -> Option<&'static HttpPresetRule> {
        HTTP_PRESETS.iter().find(|r| r.name == self.name)
    }
}

/// The connector with its preset's defaults filled in (a connector without a preset is
/// returned unchanged). Headers, rate limit, concurrency and breaker written in the
/// connector are kept.
pub fn apply(config: &HttpConnector) -> Result<HttpConnector, PresetError> {
    let Some(name) = &config.preset else {
        return Ok(config.clone());
    };
    let p = preset(name).ok_or_else(|| PresetError::Unknown(name.clone()))?;
    let rule = p.rule().ok_or_else(|| PresetError::Unknown(name.clone()))?;
    if let Some(auth) = &config.auth {
        let kind = auth.kind();
        if !rule.auth.contains(&kind) {
            return Err(PresetError::Auth {
                preset: p.name.to_string(),
                system: p.system,
                auth: kind.word(),
                allowed: rule
                    .auth
                    .iter()
                    .map(|k| format!("`{}`", k.word()))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let mut out = config.clone();
    for (k, v) in p.headers {
        if !out.headers.keys().any(|h| h.eq_ignore_ascii_case(k)) {
            out.headers.insert((*k).to_string(), (*v).to_string());
        }
    }
    out.rate_limit = out.rate_limit.or(Some(p.rate_limit));
    out.concurrency = out.concurrency.or(Some(p.concurrency));
    out.circuit_breaker = out.circuit_breaker.or(Some(p.breaker));
    Ok(out)
}
