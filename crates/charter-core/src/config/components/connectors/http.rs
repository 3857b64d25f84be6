//! `type: http` connectors: base URL, headers, limits, breaker, response contract, `auth:`,
//! and the presets' load rules ([`HTTP_PRESETS`]) that `check` and `serve` both apply.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::components::project::ProjectChecker;
use crate::config::diag::Check;
use crate::config::raw::{Location, RawConnector, S};
use crate::config::values::parse_rate;
use crate::config::{CircuitBreakerPolicy, ConnectorKind, InputSchema, SecretRef};

/// `auth:` of an HTTP connector; exactly one key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub bearer: Option<S<String>>,
    pub basic: Option<S<RawBasicAuth>>,
    pub header: Option<S<RawHeaderAuth>>,
    pub oauth2: Option<S<RawOAuth2>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    pub token_url: Option<S<String>>,
    pub client_id: Option<S<String>>,
    pub client_secret: Option<S<String>>,
    pub scope: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    pub username: Option<S<String>>,
    pub password: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderAuth {
    pub name: Option<S<String>>,
    pub value: Option<S<String>>,
}

/// Which `auth:` shape an HTTP connector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Bearer,
    Basic,
    Header,
    OAuth2,
}

impl AuthKind {
    /// The key under `auth:` that selects this kind.
    pub fn word(self) -> &'static str {
        match self {
            AuthKind::Bearer => "bearer",
            AuthKind::Basic => "basic",
            AuthKind::Header => "header",
            AuthKind::OAuth2 => "oauth2",
        }
    }
}

impl HttpAuth {
    /// The shape of this auth.
    pub fn kind(&self) -> AuthKind {
        match self {
            HttpAuth::Bearer(_) => AuthKind::Bearer,
            HttpAuth::Basic { .. } => AuthKind::Basic,
            HttpAuth::Header { .. } => AuthKind::Header,
            HttpAuth::OAuth2 { .. } => AuthKind::OAuth2,
        }
    }
}

/// What `charter check` knows of an HTTP connector preset (`preset:`): the rules that decide
/// whether a connector loads. The defaults a preset fills in at run time (headers, limits)
/// live in `charter_connect::presets`; keeping the rules here means `check` and `serve`
/// cannot disagree on what loads.
#[derive(Debug, Clone, Copy)]
pub struct HttpPresetRule {
    pub name: &'static str,
    /// The base URL it defaults to (`None`: the account's own URL, which `base_url` must give).
    pub default_base_url: Option<&'static str>,
    /// The `auth:` shapes the system accepts.
    pub auth: &'static [AuthKind],
}

/// Every HTTP connector preset.
pub const HTTP_PRESETS: &[HttpPresetRule] = &[
    HttpPresetRule {
        name: "zendesk",
        default_base_url: None,
        auth: &[AuthKind::Basic, AuthKind::Bearer, AuthKind::OAuth2],
    },
    HttpPresetRule {
        name: "hubspot",
        default_base_url: Some("https://api.hubapi.com"),
        auth: &[AuthKind::Bearer, AuthKind::OAuth2],
    },
    HttpPresetRule {
        name: "jira",
        default_base_url: None,
        auth: &[AuthKind::Basic, AuthKind::Bearer, AuthKind::OAuth2],
    },
    HttpPresetRule {
        name: "rest_crm",
        default_base_url: None,
        auth: &[AuthKind::Bearer, AuthKind::Header, AuthKind::OAuth2],
    },
];

impl HttpPresetRule {
    /// The preset called `name` (surrounding spaces ignored).
    pub fn find(name: &str) -> Option<&'static HttpPresetRule> {
        HTTP_PRESETS.iter().find(|r| r.name == name.trim())
    }

    /// Why this preset refuses `given` auth (the message `charter check` reports), or `None`
    /// when it accepts it.
    pub fn refusal(&self, given: AuthKind) -> Option<String> {
        if self.auth.contains(&given) {
            return None;
        }
        let allowed = self
            .auth
            .iter()
            .map(|k| format!("`{}`", k.word()))
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "`preset: {}` does not accept `{}` auth; use one of {allowed}",
            self.name,
            given.word()
        ))
    }
}

impl HttpConnector {
    /// Why loading this connector must fail by the preset rules (an unknown preset, or an
    /// `auth:` shape its preset does not take), or `None`. These are the rules
    /// `charter_connect::presets::apply` enforces when `serve` loads the project;
    /// [`crate::config::load_project`] reports the same problems with their place, so a
    /// connector it returns always gets `None` here.
    pub fn preset_refusal(&self) -> Option<String> {
        let name = self.preset.as_deref()?;
        let Some(rule) = HttpPresetRule::find(name) else {
            return Some(format!("unknown preset `{name}`"));
        };
        rule.refusal(self.auth.as_ref()?.kind())
    }
}

/// An HTTP API reached at `base_url`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConnector {
    pub base_url: String,
    /// Headers added to every request (plain values, not secrets).
    pub headers: BTreeMap<String, String>,
    pub auth: Option<HttpAuth>,
    /// Per-attempt timeout (default 10 s).
    pub timeout: Duration,
    /// Allow loopback/private addresses (needed for local systems and tests).
    pub allow_private: bool,
    /// The preset this connector was built from (one of [`HTTP_PRESETS`]).
    pub preset: Option<String>,
    /// Requests per second sent through this connector (per node).
    pub rate_limit: Option<f64>,
    /// Requests in flight at once through this connector (per node).
    pub concurrency: Option<usize>,
    pub circuit_breaker: Option<CircuitBreakerPolicy>,
    /// What a 2xx answer must look like; a mismatch fails the attempt.
    pub response_schema: Option<InputSchema>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HttpAuth {
    Bearer(SecretRef),
    Basic {
        username: String,
        password: SecretRef,
    },
    /// An API key sent in a named header.
    Header {
        name: String,
        value: SecretRef,
    },
    /// OAuth2 client credentials; the token is fetched, cached and refreshed.
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: SecretRef,
        scope: Option<String>,
    },
}

impl ProjectChecker<'_> {
    pub(crate) fn http(
        &mut self,
        name: &S<String>,
        raw: RawConnector,
        timeout: Duration,
        allow_private: bool,
    ) -> Option<ConnectorKind> {
        let preset = self.http_preset(&raw);
        let base_url = self.http_base_url(name, &raw, preset, allow_private);
        let headers = raw
            .headers
            .unwrap_or_default()
            .0
            .into_iter()
            .map(|(k, v)| (k.value, v.value.0))
            .collect();
        let auth = match raw.auth {
            Some(a) => {
                let at = a.referenced;
                let auth = self.auth(a);
                if let (Some(Some(given)), Some(Some(rule))) = (&auth, preset) {
                    self.preset_accepts(at, &rule, given.kind());
                }
                auth
            }
            None => Some(None),
        };
        let rate_limit = match &raw.rate_limit {
            None => Some(None),
            Some(r) => match parse_rate(&r.value.0) {
                Ok(per_second) => Some(Some(per_second)),
                Err(e) => {
                    self.err(r.referenced, format!("`rate_limit`: {e}"));
                    None
                }
            },
        };
        let concurrency = match &raw.concurrency {
            None => Some(None),
            Some(c) => self.positive(c, "concurrency").map(Some),
        };
        let circuit_breaker = match &raw.circuit_breaker {
            None => Some(None),
            Some(b) => {
                let failures = match &b.value.failures {
                    None => Some(5),
                    Some(f) => self
                        .positive(f, "failures")
                        .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
                };
                let cool_down =
                    self.duration_or(&b.value.cool_down, "cool_down", Duration::from_secs(30));
                failures.map(|failures| {
                    Some(CircuitBreakerPolicy {
                        failures,
                        cool_down,
                    })
                })
            }
        };
        let response_schema = match &raw.response_schema {
            None => Some(None),
            Some(path) => self.response_schema(path).map(Some),
        };
        Some(ConnectorKind::Http(HttpConnector {
            base_url: base_url?,
            headers,
            auth: auth?,
            timeout,
            allow_private,
            preset: preset?.map(|r| r.name.to_string()),
            rate_limit: rate_limit?,
            concurrency: concurrency?,
            circuit_breaker: circuit_breaker?,
            response_schema: response_schema?,
        }))
    }

    /// `preset:`, one of [`HTTP_PRESETS`].
    fn http_preset(&mut self, raw: &RawConnector) -> Option<Option<HttpPresetRule>> {
        match &raw.preset {
            None => Some(None),
            Some(p) => match HttpPresetRule::find(&p.value) {
                Some(found) => Some(Some(*found)),
                None => {
                    self.err(
                        p.referenced,
                        format!(
                            "`preset` is `{}`; expected one of {}",
                            p.value,
                            HTTP_PRESETS
                                .iter()
                                .map(|r| format!("`{}`", r.name))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    None
                }
            },
        }
    }

    /// `base_url:`, or the preset's default; absolute and reachable.
    fn http_base_url(
        &mut self,
        name: &S<String>,
        raw: &RawConnector,
        preset: Option<Option<HttpPresetRule>>,
        allow_private: bool,
    ) -> Option<String> {
        match (&raw.base_url, preset.flatten()) {
            (Some(u), _) => self
                .absolute_url(u, "base_url")
                .filter(|_| self.reachable_base_url(u, &name.value, allow_private)),
            (
                None,
                Some(HttpPresetRule {
                    default_base_url: Some(default),
                    ..
                }),
            ) => Some((*default).to_string()),
            (None, Some(HttpPresetRule { name: p, .. })) => {
                self.err(
                    name.referenced,
                    format!(
                        "connector `{}` (preset `{p}`) has no `base_url`; expected your account's URL, such as `https://acme.{}`",
                        name.value,
                        if p.eq_ignore_ascii_case("jira") { "atlassian.net" } else if p.eq_ignore_ascii_case("zendesk") { "zendesk.com" } else { "example.com" }
                    ),
                );
                None
            }
            (None, None) => {
                if preset.is_some() {
                    self.err(
                        name.referenced,
                        format!(
                            "connector `{}` has no `base_url`; expected the API's root URL such as `https://api.example.com`",
                            name.value
                        ),
                    );
                }
                None
            }
        }
    }

    pub(crate) fn response_schema(&mut self, path: &S<String>) -> Option<InputSchema> {
        let file = path.value.trim().trim_start_matches("./").to_string();
        let Some(text) = self.src.files.get(&file) else {
            self.err(
                path.referenced,
                format!("`response_schema` file `{file}` does not exist in the project; expected a JSON schema file such as `schemas/crm-answer.json`"),
            );
            return None;
        };
        let schema: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.err(
                    path.referenced,
                    format!("`response_schema` file `{file}` is not valid JSON: {e}"),
                );
                return None;
            }
        };
        if let Err(e) = jsonschema::validator_for(&schema) {
            self.err(
                path.referenced,
                format!("`response_schema` file `{file}` is not a valid JSON schema: {e}"),
            );
            return None;
        }
        Some(InputSchema { file, schema })
    }

    /// `Some(None)`: no auth; `None`: invalid.
    /// Refuses an `auth:` shape the preset's system does not take (the same rule
    /// `charter_connect::presets::apply` enforces at load, so `check` fails first).
    pub(crate) fn preset_accepts(&mut self, at: Location, rule: &HttpPresetRule, given: AuthKind) {
        if let Some(message) = rule.refusal(given) {
            self.err(at, message);
        }
    }

    pub(crate) fn auth(&mut self, raw: S<RawAuth>) -> Option<Option<HttpAuth>> {
        let at = raw.referenced;
        let a = raw.value;
        let given = [
            a.bearer.is_some(),
            a.basic.is_some(),
            a.header.is_some(),
            a.oauth2.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            self.err(
                at,
                "`auth` needs exactly one of `bearer: env:NAME`, `basic: { username, password }`, \
                 `header: { name, value }` or `oauth2: { token_url, client_id, client_secret }`",
            );
            return None;
        }
        if let Some(o) = &a.oauth2 {
            let token_url = match &o.value.token_url {
                Some(u) => self.absolute_url(u, "token_url"),
                None => {
                    self.err(
                        o.referenced,
                        "missing `token_url`: expected the OAuth2 token endpoint, such as `https://auth.example.com/oauth/token`",
                    );
                    None
                }
            };
            let client_id = self.required_text(
                &o.value.client_id,
                o.referenced,
                "client_id",
                "the OAuth2 client id",
            );
            let client_secret = match &o.value.client_secret {
                Some(p) => self.secret(p, "client_secret"),
                None => {
                    self.err(
                        o.referenced,
                        "missing `client_secret`: expected env:NAME or file:PATH",
                    );
                    None
                }
            };
            return Some(Some(HttpAuth::OAuth2 {
                token_url: token_url?,
                client_id: client_id?,
                client_secret: client_secret?,
                scope: o.value.scope.as_ref().map(|s| s.value.trim().to_string()),
            }));
        }
        if let Some(b) = &a.bearer {
            return Some(Some(HttpAuth::Bearer(self.secret(b, "bearer")?)));
        }
        if let Some(basic) = &a.basic {
            let username = self.required_text(
                &basic.value.username,
                basic.referenced,
                "username",
                "a user name",
            );
            let password = match &basic.value.password {
                Some(p) => self.secret(p, "password"),
                None => {
                    self.err(
                        basic.referenced,
                        "missing `password`: expected env:NAME or file:PATH",
                    );
                    None
                }
            };
            return Some(Some(HttpAuth::Basic {
                username: username?,
                password: password?,
            }));
        }
        if let Some(h) = &a.header {
            let name = self.required_text(
                &h.value.name,
                h.referenced,
                "name",
                "a header name such as `X-Api-Key`",
            );
            let value = match &h.value.value {
                Some(v) => self.secret(v, "value"),
                None => {
                    self.err(
                        h.referenced,
                        "missing `value`: expected env:NAME or file:PATH",
                    );
                    None
                }
            };
            return Some(Some(HttpAuth::Header {
                name: name?,
                value: value?,
            }));
        }
        None
    }
}
