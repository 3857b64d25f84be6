//! `trigger.webhook.verify:`: the signature scheme a webhook is checked with (a provider
//! preset or a generic HMAC), compiled into a [`crate::verify::VerifySpec`].

use std::time::Duration;

use serde::Deserialize;

use crate::config::SecretRef;
use crate::config::components::charter::CharterChecker;
use crate::config::diag::Check;
use crate::config::raw::{Location, S, Scalar, WordOr};
use crate::verify::{GenericHmac, HmacAlgorithm, SignatureEncoding, VerifySpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub preset: Option<S<String>>,
    pub secret: Option<S<String>>,
    pub secrets: Option<S<Vec<S<String>>>>,
    pub tolerance: Option<S<Scalar>>,
    // Generic HMAC only.
    pub header: Option<S<String>>,
    pub algorithm: Option<S<String>>,
    pub encoding: Option<S<String>>,
    pub prefix: Option<S<String>>,
    pub timestamp_header: Option<S<String>>,
    pub signed: Option<S<String>>,
}

impl CharterChecker<'_> {
    /// `path` is the webhook's path (when valid): HubSpot signs the full URL.
    pub(crate) fn verify(
        &mut self,
        raw: S<WordOr<RawVerify>>,
        path: Option<&str>,
    ) -> Option<(VerifySpec, Vec<SecretRef>)> {
        let at = raw.referenced;
        const PRESETS: &str = "`standard-webhooks`, `stripe`, `github`, `slack`, `shopify`, `zendesk`, \
                               `hubspot-v3`, `hmac`, `none`";
        let v = match raw.value {
            WordOr::Word(w) if w == "none" => return Some((VerifySpec::None, Vec::new())),
            WordOr::Word(w) => {
                self.err(
                    at,
                    format!(
                        "`verify: {w}` is not understood; expected `verify: none` or a mapping with a `preset` \
                         (one of {PRESETS}) and a `secret`"
                    ),
                );
                return None;
            }
            WordOr::Map(v) => v,
        };
        let Some(preset) = &v.preset else {
            self.err(at, format!("missing `preset`: expected one of {PRESETS}"));
            return None;
        };
        let preset_name = preset.value.trim().to_string();
        if ![
            "standard-webhooks",
            "stripe",
            "github",
            "slack",
            "shopify",
            "zendesk",
            "hubspot-v3",
            "hmac",
            "none",
        ]
        .contains(&preset_name.as_str())
        {
            self.err(
                preset.referenced,
                format!("unknown verify preset `{preset_name}`; expected one of {PRESETS}"),
            );
            return None;
        }
        let mut ok = true;
        // Fields of the generic scheme are only meaningful with `preset: hmac`.
        if preset_name != "hmac" {
            for (key, field) in [
                ("header", &v.header),
                ("algorithm", &v.algorithm),
                ("encoding", &v.encoding),
                ("prefix", &v.prefix),
                ("timestamp_header", &v.timestamp_header),
                ("signed", &v.signed),
            ] {
                if let Some(f) = field {
                    self.err(
                        f.referenced,
                        format!("`{key}` only applies to `preset: hmac`; the `{preset_name}` preset fixes it"),
                    );
                    ok = false;
                }
            }
        }
        if preset_name == "none" {
            if let Some(s) = v
                .secret
                .as_ref()
                .map(|s| s.referenced)
                .or(v.secrets.as_ref().map(|s| s.referenced))
            {
                self.err(s, "`preset: none` takes no secret; remove it, or choose a preset that checks signatures");
                return None;
            }
            return ok.then_some((VerifySpec::None, Vec::new()));
        }
        let secrets = self.verify_secrets(&v, at, &preset_name);
        let tolerance = self.verify_tolerance(&v, &preset_name);
        let spec = match preset_name.as_str() {
            "standard-webhooks" => {
                tolerance.map(|tolerance| VerifySpec::StandardWebhooks { tolerance })
            }
            "stripe" => tolerance.map(|tolerance| VerifySpec::Stripe { tolerance }),
            "slack" => tolerance.map(|tolerance| VerifySpec::Slack { tolerance }),
            "github" => tolerance.map(|_| VerifySpec::Github),
            "shopify" => tolerance.map(|_| VerifySpec::Shopify),
            "zendesk" => tolerance.map(|tolerance| VerifySpec::Zendesk { tolerance }),
            "hubspot-v3" => self.hubspot_url(preset.referenced, path).and_then(|url| {
                tolerance.map(|tolerance| VerifySpec::HubspotV3 { tolerance, url })
            }),
            _ => self.generic_hmac(&v, at, tolerance),
        };
        if !ok {
            return None;
        }
        Some((spec?, secrets?))
    }

    /// `secret:` or `secrets:` (a list, during rotation), not both.
    fn verify_secrets(
        &mut self,
        v: &RawVerify,
        at: Location,
        preset_name: &str,
    ) -> Option<Vec<SecretRef>> {
        match (&v.secret, &v.secrets) {
            (Some(s), None) => self.secret(s, "secret").map(|s| vec![s]),
            (None, Some(list)) if !list.value.is_empty() => {
                let parsed: Vec<Option<SecretRef>> = list
                    .value
                    .iter()
                    .map(|s| self.secret(s, "secrets"))
                    .collect();
                parsed.into_iter().collect()
            }
            (Some(s), Some(_)) => {
                self.err(
                    s.referenced,
                    "give either `secret` or `secrets` (a list, for rotation), not both",
                );
                None
            }
            (None, _) => {
                self.err(
                    at,
                    format!(
                        "missing `secret`: the `{preset_name}` preset needs `secret: env:NAME` (or `secrets: [env:A, env:B]` during rotation)"
                    ),
                );
                None
            }
        }
    }

    /// `tolerance:`, for the presets whose signature carries a timestamp.
    fn verify_tolerance(&mut self, v: &RawVerify, preset_name: &str) -> Option<Duration> {
        match &v.tolerance {
            Some(t) if preset_name == "github" || preset_name == "shopify" => {
                let who = if preset_name == "github" {
                    "GitHub"
                } else {
                    "Shopify"
                };
                self.err(
                    t.referenced,
                    format!(
                        "`tolerance` does not apply to `preset: {preset_name}`: {who} signs no timestamp; remove it"
                    ),
                );
                None
            }
            Some(t) => self.duration(t, "tolerance"),
            None => Some(crate::verify::DEFAULT_TOLERANCE),
        }
    }

    /// The URL HubSpot calls: `server.public_url` (without a trailing `/`) and the webhook
    /// path. `None` (with an error at `at`) when charter.yaml sets no public URL; also `None`,
    /// silently, when charter.yaml or the path is broken (reported where they are).
    pub(crate) fn hubspot_url(&mut self, at: Location, path: Option<&str>) -> Option<String> {
        match self.public_url? {
            Some(base) => path.map(|p| format!("{}{p}", base.trim_end_matches('/'))),
            None => {
                self.err(
                    at,
                    "`preset: hubspot-v3` signs the full URL HubSpot calls, so charter.yaml must \
                     set `server.public_url` (such as `https://charter.acme.example`); the \
                     webhook's URL is then that URL followed by its `path`",
                );
                None
            }
        }
    }

    pub(crate) fn generic_hmac(
        &mut self,
        v: &RawVerify,
        at: Location,
        tolerance: Option<Duration>,
    ) -> Option<VerifySpec> {
        let header = self
            .required_text(
                &v.header,
                at,
                "header",
                "the header carrying the signature, such as `X-Signature`",
            )
            .map(|h| h.to_ascii_lowercase());
        let algorithm = match &v.algorithm {
            Some(a) => self.one_of(
                a,
                "algorithm",
                &[
                    ("sha1", HmacAlgorithm::Sha1),
                    ("sha256", HmacAlgorithm::Sha256),
                    ("sha512", HmacAlgorithm::Sha512),
                ],
            ),
            None => Some(HmacAlgorithm::Sha256),
        };
        let encoding = match &v.encoding {
            Some(e) => self.one_of(
                e,
                "encoding",
                &[
                    ("hex", SignatureEncoding::Hex),
                    ("base64", SignatureEncoding::Base64),
                ],
            ),
            None => Some(SignatureEncoding::Hex),
        };
        let timestamp_header = v
            .timestamp_header
            .as_ref()
            .map(|h| h.value.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty());
        let signed = match &v.signed {
            Some(s) if !s.value.contains("{body}") => {
                self.err(
                    s.referenced,
                    format!("`signed` is `{}`; expected a pattern containing `{{body}}`, such as `{{timestamp}}.{{body}}`", s.value),
                );
                None
            }
            Some(s) if s.value.contains("{timestamp}") && timestamp_header.is_none() => {
                self.err(
                    s.referenced,
                    "`signed` uses `{timestamp}` but no `timestamp_header` says where it comes from; add `timestamp_header: X-Timestamp`",
                );
                None
            }
            Some(s) => Some(s.value.clone()),
            None => Some("{body}".to_string()),
        };
        Some(VerifySpec::Hmac(GenericHmac {
            header: header?,
            algorithm: algorithm?,
            encoding: encoding?,
            prefix: v
                .prefix
                .as_ref()
                .map(|p| p.value.clone())
                .filter(|p| !p.is_empty()),
            timestamp_header,
            signed: signed?,
            tolerance: tolerance?,
        }))
    }
}
