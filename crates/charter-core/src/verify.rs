//! Webhook signature verification (and signing, for `charter send` and tests).
//!
//! Pure functions over the raw body, the request headers and a caller-supplied clock.
//! Comparisons are constant-time; several secrets may be accepted at once for rotation.

use std::collections::BTreeMap;
use std::time::Duration;

/// How a charter's webhook deliveries are verified.
#[derive(Debug, Clone, PartialEq)]
pub enum VerifySpec {
    /// No verification (explicitly chosen with `verify: none`).
    None,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<b64>`;
    /// HMAC-SHA256 over `{id}.{timestamp}.{body}`; secrets may carry the `whsec_` prefix
    /// (base64 after it).
    StandardWebhooks { tolerance: Duration },
    /// Stripe: `Stripe-Signature: t=<ts>,v1=<hex>[,v1=...]`; HMAC-SHA256 over `{t}.{body}`.
    Stripe { tolerance: Duration },
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`; HMAC-SHA256 over the body.
    Github,
    /// Slack: `X-Slack-Signature: v0=<hex>`, `X-Slack-Request-Timestamp`; HMAC-SHA256 over
    /// `v0:{ts}:{body}`.
    Slack { tolerance: Duration },
    /// Shopify: `X-Shopify-Hmac-Sha256: <base64>`; HMAC-SHA256 over the body. Shopify signs
    /// no timestamp; `X-Shopify-Webhook-Id` identifies the delivery.
    Shopify,
    /// Zendesk: `X-Zendesk-Webhook-Signature: <base64>` and
    /// `X-Zendesk-Webhook-Signature-Timestamp` (RFC 3339, such as `2021-07-25T10:00:00Z`);
    /// HMAC-SHA256 over `{timestamp}{body}`. `X-Zendesk-Webhook-Invocation-Id` identifies the
    /// delivery.
    Zendesk { tolerance: Duration },
    /// HubSpot signature v3: `X-HubSpot-Signature-v3: <base64>` and
    /// `X-HubSpot-Request-Timestamp` (Unix milliseconds); HMAC-SHA256 over
    /// `{method}{uri}{body}{timestamp}`, where the URI is the full URL HubSpot called. HubSpot
    /// sends webhooks as `POST`; `url` is that URL without its query string (the project's
    /// `server.public_url` followed by the webhook path), and a query string the request
    /// carried is read from the [`QUERY`] pseudo-header.
    HubspotV3 { tolerance: Duration, url: String },
    /// Any other HMAC scheme.
    Hmac(GenericHmac),
}

/// Pseudo-header carrying the request's query string (without `?`) for schemes that sign the
/// URL ([`VerifySpec::HubspotV3`]). The leading `:` cannot start a real HTTP header name, so
/// it never collides with one the sender sent.
pub const QUERY: &str = ":query";

/// A generic HMAC scheme: which header, which hash, which encoding, what is signed.
#[derive(Debug, Clone, PartialEq)]
pub struct GenericHmac {
    /// Header carrying the signature (lower-case).
    pub header: String,
    pub algorithm: HmacAlgorithm,
    pub encoding: SignatureEncoding,
    /// Prefix before the signature in the header, e.g. `sha256=`.
    pub prefix: Option<String>,
    /// Header carrying a Unix timestamp (seconds), if the scheme signs one.
    pub timestamp_header: Option<String>,
    /// What is signed: a pattern with `{body}` and optionally `{timestamp}`
    /// (default `{body}`).
    pub signed: String,
    pub tolerance: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

/// Default tolerance for timestamped schemes (5 minutes).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Headers as received, names lower-cased.
pub type Headers = BTreeMap<String, String>;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};

/// Why a delivery was not accepted (or a signature could not be produced).
///
/// Messages name headers and describe the problem; they never contain secrets or
/// signature values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A header the scheme requires is absent.
    #[error("missing header {0}")]
    MissingHeader(String),
    /// A header is present but cannot be parsed.
    #[error("malformed {0}")]
    Malformed(String),
    /// The signed timestamp is outside the tolerance window (in the past or the future).
    #[error("timestamp {timestamp} is outside the {tolerance_secs} s window around now ({now})")]
    StaleTimestamp {
        timestamp: i64,
        now: i64,
        tolerance_secs: u64,
    },
    /// No configured secret produced a matching signature.
    #[error("signature does not match")]
    BadSignature,
    /// The scheme needs a secret and none is configured.
    #[error("no secret configured")]
    NoSecret,
    /// A configured secret cannot be used (e.g. empty, or `whsec_` followed by invalid
    /// base64). The text says what is wrong, never the secret itself.
    #[error("invalid secret: {0}")]
    InvalidSecret(String),
}

const SW_ID: &str = "webhook-id";
const SW_TIMESTAMP: &str = "webhook-timestamp";
const SW_SIGNATURE: &str = "webhook-signature";
const STRIPE_SIGNATURE: &str = "stripe-signature";
const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
const GITHUB_LEGACY_SIGNATURE: &str = "x-hub-signature";
const GITHUB_DELIVERY: &str = "x-github-delivery";
const SLACK_SIGNATURE: &str = "x-slack-signature";
const SLACK_TIMESTAMP: &str = "x-slack-request-timestamp";
const WHSEC_PREFIX: &str = "whsec_";
const SHOPIFY_SIGNATURE: &str = "x-shopify-hmac-sha256";
const SHOPIFY_DELIVERY: &str = "x-shopify-webhook-id";
const ZENDESK_SIGNATURE: &str = "x-zendesk-webhook-signature";
const ZENDESK_TIMESTAMP: &str = "x-zendesk-webhook-signature-timestamp";
const ZENDESK_DELIVERY: &str = "x-zendesk-webhook-invocation-id";
const HUBSPOT_SIGNATURE: &str = "x-hubspot-signature-v3";
const HUBSPOT_TIMESTAMP: &str = "x-hubspot-request-timestamp";

/// Check a delivery.
///
/// `secrets`: raw secret strings as configured (several = rotation; any one matching is
/// enough). `now_unix`: current time in seconds (the caller passes the clock).
/// `VerifySpec::None` accepts everything.
///
/// Order of checks: secrets configured, required headers present and well-formed,
/// timestamp within the window, then the signature (constant-time, every secret and every
/// candidate signature is tried, no early exit on content).
pub fn verify(
    spec: &VerifySpec,
    secrets: &[String],
    headers: &Headers,
    body: &[u8],
    now_unix: i64,
) -> Result<(), VerifyError> {
    if matches!(spec, VerifySpec::None) {
        return Ok(());
    }
    if secrets.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let check = build_check(spec, headers, body, now_unix)?;
    let mut matched = false;
    let mut key_error = None;
    for secret in secrets {
        match derive_key(spec, secret) {
            Ok(key) => {
                for candidate in &check.candidates {
                    // `|` (not `||`): evaluate every candidate regardless of earlier results.
                    matched |= mac_verify(check.algorithm, &key, &check.message, candidate)?;
                }
            }
            Err(e) => key_error = Some(e),
        }
    }
    if matched {
        Ok(())
    } else if let Some(e) = key_error {
        // A broken secret is a configuration problem; surface it rather than a plain mismatch.
        Err(e)
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// Produce the headers a sender must add (lower-case names) — used by `charter send`, the
/// demo and tests. `delivery_id` is sent where the scheme has a delivery id header
/// (Standard Webhooks `webhook-id`, GitHub `x-github-delivery`).
pub fn sign(
    spec: &VerifySpec,
    secret: &str,
    body: &[u8],
    now_unix: i64,
    delivery_id: &str,
) -> Result<Vec<(String, String)>, VerifyError> {
    let ts = now_unix.to_string();
    let h = |name: &str, value: String| (name.to_string(), value);
    let out = match spec {
        VerifySpec::None => Vec::new(),
        VerifySpec::StandardWebhooks { .. } => {
            let key = derive_key(spec, secret)?;
            let mac = mac_compute(
                HmacAlgorithm::Sha256,
                &key,
                &[delivery_id.as_bytes(), b".", ts.as_bytes(), b".", body],
            )?;
            vec![
                h(SW_ID, delivery_id.to_string()),
                h(SW_TIMESTAMP, ts),
                h(SW_SIGNATURE, format!("v1,{}", BASE64.encode(mac))),
            ]
        }
        VerifySpec::Stripe { .. } => {
            let key = derive_key(spec, secret)?;
            let mac = mac_compute(HmacAlgorithm::Sha256, &key, &[ts.as_bytes(), b".", body])?;
            vec![h(
                STRIPE_SIGNATURE,
                format!("t={ts},v1={}", hex::encode(mac)),
            )]
        }
        VerifySpec::Github => {
            let key = derive_key(spec, secret)?;
            let mac = mac_compute(HmacAlgorithm::Sha256, &key, &[body])?;
            vec![
                h(GITHUB_SIGNATURE, format!("sha256={}", hex::encode(mac))),
                h(GITHUB_DELIVERY, delivery_id.to_string()),
            ]
        }
        VerifySpec::Slack { .. } => {
            let key = derive_key(spec, secret)?;
            let mac = mac_compute(
                HmacAlgorithm::Sha256,
                &key,
                &[b"v0:", ts.as_bytes(), b":", body],
            )?;
            vec![
                h(SLACK_TIMESTAMP, ts),
                h(SLACK_SIGNATURE, format!("v0={}", hex::encode(mac))),
            ]
        }
        VerifySpec::Shopify => {
            let key = derive_key(spec, secret)?;
            let mac = mac_compute(HmacAlgorithm::Sha256, &key, &[body])?;
            vec![
                h(SHOPIFY_SIGNATURE, BASE64.encode(mac)),
                h(SHOPIFY_DELIVERY, delivery_id.to_string()),
            ]
        }
        VerifySpec::Zendesk { .. } => {
            let key = derive_key(spec, secret)?;
            let stamp = crate::calendar::rfc3339_of_unix(now_unix);
            let mac = mac_compute(HmacAlgorithm::Sha256, &key, &[stamp.as_bytes(), body])?;
            vec![
                h(ZENDESK_SIGNATURE, BASE64.encode(mac)),
                h(ZENDESK_TIMESTAMP, stamp),
                h(ZENDESK_DELIVERY, delivery_id.to_string()),
            ]
        }
        VerifySpec::HubspotV3 { url, .. } => {
            let key = derive_key(spec, secret)?;
            let millis = now_unix.saturating_mul(1000).to_string();
            let uri = hubspot_uri(url, None);
            let mac = mac_compute(
                HmacAlgorithm::Sha256,
                &key,
                &[b"POST", uri.as_bytes(), body, millis.as_bytes()],
            )?;
            vec![
                h(HUBSPOT_SIGNATURE, BASE64.encode(mac)),
                h(HUBSPOT_TIMESTAMP, millis),
            ]
        }
        VerifySpec::Hmac(g) => {
            let key = derive_key(spec, secret)?;
            let timestamp = g.timestamp_header.as_ref().map(|_| ts.as_str());
            let message = generic_message(g, timestamp, body)?;
            let mac = mac_compute(g.algorithm, &key, &[&message])?;
            let encoded = match g.encoding {
                SignatureEncoding::Hex => hex::encode(mac),
                SignatureEncoding::Base64 => BASE64.encode(mac),
            };
            let prefix = g.prefix.as_deref().unwrap_or("");
            let mut out = vec![h(
                &g.header.to_ascii_lowercase(),
                format!("{prefix}{encoded}"),
            )];
            if let Some(th) = &g.timestamp_header {
                out.push(h(&th.to_ascii_lowercase(), ts));
            }
            out
        }
    };
    Ok(out)
}

/// The header that identifies a delivery for dedupe, if the scheme has one
/// (Standard Webhooks: `webhook-id`, GitHub: `x-github-delivery`, Shopify:
/// `x-shopify-webhook-id`, Zendesk: `x-zendesk-webhook-invocation-id`; others `None`).
pub fn delivery_id_header(spec: &VerifySpec) -> Option<&'static str> {
    match spec {
        VerifySpec::StandardWebhooks { .. } => Some(SW_ID),
        VerifySpec::Github => Some(GITHUB_DELIVERY),
        VerifySpec::Shopify => Some(SHOPIFY_DELIVERY),
        VerifySpec::Zendesk { .. } => Some(ZENDESK_DELIVERY),
        VerifySpec::None
        | VerifySpec::Stripe { .. }
        | VerifySpec::Slack { .. }
        | VerifySpec::HubspotV3 { .. } => None,
        VerifySpec::Hmac(_) => None,
    }
}

/// Where the provider puts a delivery's id in the JSON body, as a JSON pointer, for a
/// scheme whose provider sends no delivery-id header but repeats the id on every retry of a
/// delivery: Stripe's event `id` (`evt_…`), the Slack Events API's `event_id`. Used for
/// dedupe when a charter has no `dedupe:`. `None` for the others.
pub fn delivery_id_pointer(spec: &VerifySpec) -> Option<&'static str> {
    match spec {
        VerifySpec::Stripe { .. } => Some("/id"),
        VerifySpec::Slack { .. } => Some("/event_id"),
        VerifySpec::None
        | VerifySpec::StandardWebhooks { .. }
        | VerifySpec::Github
        | VerifySpec::Shopify
        | VerifySpec::Zendesk { .. }
        | VerifySpec::HubspotV3 { .. }
        | VerifySpec::Hmac(_) => None,
    }
}

/// The delivery id at `pointer` in `payload` (a string, or a number as its digits).
pub fn delivery_id_in_body(payload: &serde_json::Value, pointer: &str) -> Option<String> {
    match payload.pointer(pointer)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether deliveries under `spec` identify themselves (a delivery-id header or a body id,
/// see [`delivery_id_header`] and [`delivery_id_pointer`]), so that a redelivery is
/// recognised without a `dedupe:` in the charter.
pub fn identifies_deliveries(spec: &VerifySpec) -> bool {
    delivery_id_header(spec).is_some() || delivery_id_pointer(spec).is_some()
}

/// Whether checking a delivery against `spec` reads the header `name` (lower-case). The
/// webhook path copies only the headers something reads out of the request.
pub fn reads_header(spec: &VerifySpec, name: &str) -> bool {
    let names: &[&str] = match spec {
        VerifySpec::None => &[],
        VerifySpec::StandardWebhooks { .. } => &[SW_ID, SW_TIMESTAMP, SW_SIGNATURE],
        VerifySpec::Stripe { .. } => &[STRIPE_SIGNATURE],
        VerifySpec::Github => &[GITHUB_SIGNATURE],
        VerifySpec::Slack { .. } => &[SLACK_SIGNATURE, SLACK_TIMESTAMP],
        VerifySpec::Shopify => &[SHOPIFY_SIGNATURE],
        VerifySpec::Zendesk { .. } => &[ZENDESK_SIGNATURE, ZENDESK_TIMESTAMP],
        VerifySpec::HubspotV3 { .. } => &[HUBSPOT_SIGNATURE, HUBSPOT_TIMESTAMP, QUERY],
        VerifySpec::Hmac(g) => {
            return g.header.eq_ignore_ascii_case(name)
                || g.timestamp_header
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case(name));
        }
    };
    names.contains(&name)
}

/// Header names (lower-case) that carry signatures and must never be stored with an event.
pub fn signature_headers(spec: &VerifySpec) -> Vec<String> {
    let names: &[&str] = match spec {
        VerifySpec::None => &[],
        VerifySpec::StandardWebhooks { .. } => &[SW_SIGNATURE],
        VerifySpec::Stripe { .. } => &[STRIPE_SIGNATURE],
        VerifySpec::Github => &[GITHUB_SIGNATURE, GITHUB_LEGACY_SIGNATURE],
        VerifySpec::Slack { .. } => &[SLACK_SIGNATURE],
        VerifySpec::Shopify => &[SHOPIFY_SIGNATURE],
        VerifySpec::Zendesk { .. } => &[ZENDESK_SIGNATURE],
        VerifySpec::HubspotV3 { .. } => &[HUBSPOT_SIGNATURE],
        VerifySpec::Hmac(g) => return vec![g.header.to_ascii_lowercase()],
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// Check that `secret` is usable with `spec` (non-empty; for Standard Webhooks a `whsec_`
/// prefix must be followed by valid base64). Meant for configuration checks.
pub fn check_secret(spec: &VerifySpec, secret: &str) -> Result<(), VerifyError> {
    if matches!(spec, VerifySpec::None) {
        return Ok(());
    }
    derive_key(spec, secret).map(|_| ())
}

/// What to check for one delivery: the signed bytes and the decoded candidate signatures.
struct Check {
    algorithm: HmacAlgorithm,
    message: Vec<u8>,
    candidates: Vec<Vec<u8>>,
}

fn build_check(
    spec: &VerifySpec,
    headers: &Headers,
    body: &[u8],
    now: i64,
) -> Result<Check, VerifyError> {
    let sha256 = HmacAlgorithm::Sha256;
    match spec {
        // Handled by the caller; nothing is signed.
        VerifySpec::None => Ok(Check {
            algorithm: sha256,
            message: Vec::new(),
            candidates: Vec::new(),
        }),
        VerifySpec::StandardWebhooks { tolerance } => {
            standard_webhooks(headers, body, now, *tolerance)
        }
        VerifySpec::Stripe { tolerance } => stripe(headers, body, now, *tolerance),
        VerifySpec::Github => {
            let raw = header(headers, GITHUB_SIGNATURE)?;
            let hexsig = strip_prefix_ci(raw.trim(), "sha256=")
                .ok_or_else(|| malformed(GITHUB_SIGNATURE, "expected sha256=<hex>"))?;
            let sig = decode_hex(GITHUB_SIGNATURE, hexsig)?;
            Ok(Check {
                algorithm: sha256,
                message: body.to_vec(),
                candidates: vec![sig],
            })
        }
        VerifySpec::Slack { tolerance } => {
            let ts_raw = header(headers, SLACK_TIMESTAMP)?;
            let raw = header(headers, SLACK_SIGNATURE)?;
            let ts = parse_timestamp(SLACK_TIMESTAMP, ts_raw)?;
            let hexsig = strip_prefix_ci(raw.trim(), "v0=")
                .ok_or_else(|| malformed(SLACK_SIGNATURE, "expected v0=<hex>"))?;
            let sig = decode_hex(SLACK_SIGNATURE, hexsig)?;
            check_window(ts, now, *tolerance)?;
            Ok(Check {
                algorithm: sha256,
                message: concat(&[b"v0:", ts_raw.trim().as_bytes(), b":", body]),
                candidates: vec![sig],
            })
        }
        VerifySpec::Shopify => {
            let sig = decode_base64(SHOPIFY_SIGNATURE, header(headers, SHOPIFY_SIGNATURE)?)?;
            Ok(Check {
                algorithm: sha256,
                message: body.to_vec(),
                candidates: vec![sig],
            })
        }
        VerifySpec::Zendesk { tolerance } => {
            let sig = decode_base64(ZENDESK_SIGNATURE, header(headers, ZENDESK_SIGNATURE)?)?;
            let stamp = header(headers, ZENDESK_TIMESTAMP)?.trim();
            let ts = parse_rfc3339(stamp)
                .ok_or_else(|| malformed(ZENDESK_TIMESTAMP, "expected an RFC 3339 time"))?;
            check_window(ts, now, *tolerance)?;
            Ok(Check {
                algorithm: sha256,
                message: concat(&[stamp.as_bytes(), body]),
                candidates: vec![sig],
            })
        }
        VerifySpec::HubspotV3 { tolerance, url } => {
            let sig = decode_base64(HUBSPOT_SIGNATURE, header(headers, HUBSPOT_SIGNATURE)?)?;
            let millis_raw = header(headers, HUBSPOT_TIMESTAMP)?.trim();
            let millis = parse_timestamp(HUBSPOT_TIMESTAMP, millis_raw)?;
            check_window(millis.div_euclid(1000), now, *tolerance)?;
            let uri = hubspot_uri(url, headers.get(QUERY).map(String::as_str));
            Ok(Check {
                algorithm: sha256,
                message: concat(&[b"POST", uri.as_bytes(), body, millis_raw.as_bytes()]),
                candidates: vec![sig],
            })
        }
        VerifySpec::Hmac(g) => generic(g, headers, body, now),
    }
}

/// Standard Webhooks: `webhook-id`, `webhook-timestamp` and space-separated `v1,<base64>`
/// signatures over `id.timestamp.body`.
fn standard_webhooks(
    headers: &Headers,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<Check, VerifyError> {
    let sha256 = HmacAlgorithm::Sha256;
    let id = header(headers, SW_ID)?;
    let ts_raw = header(headers, SW_TIMESTAMP)?;
    let sig = header(headers, SW_SIGNATURE)?;
    let ts = parse_timestamp(SW_TIMESTAMP, ts_raw)?;
    check_window(ts, now, tolerance)?;
    // Space-separated `v1,<base64>` entries; other versions (e.g. `v1a`) are ignored.
    let candidates: Vec<Vec<u8>> = sig
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| BASE64.decode(b64).ok())
        .collect();
    if candidates.is_empty() {
        return Err(malformed(SW_SIGNATURE, "no v1 signature"));
    }
    Ok(Check {
        algorithm: sha256,
        message: concat(&[id.as_bytes(), b".", ts_raw.as_bytes(), b".", body]),
        candidates,
    })
}

/// Stripe: `Stripe-Signature: t=<ts>,v1=<hex>,...` over `ts.body`.
fn stripe(
    headers: &Headers,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<Check, VerifyError> {
    let sha256 = HmacAlgorithm::Sha256;
    let raw = header(headers, STRIPE_SIGNATURE)?;
    let mut ts_raw = None;
    let mut candidates = Vec::new();
    for item in raw.split(',') {
        let Some((k, v)) = item.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" => ts_raw = Some(v),
            "v1" => {
                if let Ok(bytes) = hex::decode(v) {
                    candidates.push(bytes);
                }
            }
            _ => {}
        }
    }
    let ts_raw = ts_raw.ok_or_else(|| malformed(STRIPE_SIGNATURE, "no t= timestamp"))?;
    let ts = parse_timestamp(STRIPE_SIGNATURE, ts_raw)?;
    if candidates.is_empty() {
        return Err(malformed(STRIPE_SIGNATURE, "no v1 signature"));
    }
    check_window(ts, now, tolerance)?;
    Ok(Check {
        algorithm: sha256,
        message: concat(&[ts_raw.as_bytes(), b".", body]),
        candidates,
    })
}

/// A generic HMAC scheme as configured (`verify: { hmac: ... }`).
fn generic(
    g: &GenericHmac,
    headers: &Headers,
    body: &[u8],
    now: i64,
) -> Result<Check, VerifyError> {
    let name = g.header.to_ascii_lowercase();
    let raw = header(headers, &name)?.trim();
    let encoded = match g.prefix.as_deref() {
        Some(p) if !p.is_empty() => strip_prefix_ci(raw, p)
            .ok_or_else(|| malformed(&name, "expected the configured prefix"))?,
        _ => raw,
    };
    let sig = match g.encoding {
        SignatureEncoding::Hex => decode_hex(&name, encoded)?,
        SignatureEncoding::Base64 => BASE64
            .decode(encoded)
            .map_err(|_| malformed(&name, "invalid base64"))?,
    };
    let timestamp = match &g.timestamp_header {
        Some(th) => {
            let th = th.to_ascii_lowercase();
            let ts_raw = header(headers, &th)?.trim();
            let ts = parse_timestamp(&th, ts_raw)?;
            check_window(ts, now, g.tolerance)?;
            Some(ts_raw)
        }
        None => None,
    };
    Ok(Check {
        algorithm: g.algorithm,
        message: generic_message(g, timestamp, body)?,
        candidates: vec![sig],
    })
}

/// The bytes a generic scheme signs: `g.signed` with `{timestamp}` and `{body}` substituted
/// in one pass (so a body containing `{timestamp}` is not substituted again).
fn generic_message(
    g: &GenericHmac,
    timestamp: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, VerifyError> {
    let pattern = if g.signed.is_empty() {
        "{body}"
    } else {
        g.signed.as_str()
    };
    let mut out = Vec::with_capacity(pattern.len() + body.len());
    let mut rest = pattern;
    while let Some(pos) = rest.find('{') {
        out.extend_from_slice(&rest.as_bytes()[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("{body}") {
            out.extend_from_slice(body);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{timestamp}") {
            let ts = timestamp.ok_or_else(|| {
                VerifyError::Malformed(
                    "signed pattern uses {timestamp} but no timestamp header is configured"
                        .to_string(),
                )
            })?;
            out.extend_from_slice(ts.as_bytes());
            rest = after;
        } else {
            out.push(b'{');
            rest = &tail[1..];
        }
    }
    out.extend_from_slice(rest.as_bytes());
    Ok(out)
}

/// The HMAC key for a secret. Standard Webhooks secrets may carry `whsec_` + base64; every
/// other secret is used as its raw bytes.
fn derive_key(spec: &VerifySpec, secret: &str) -> Result<Vec<u8>, VerifyError> {
    if secret.is_empty() {
        return Err(VerifyError::InvalidSecret("empty secret".to_string()));
    }
    if let VerifySpec::StandardWebhooks { .. } = spec
        && let Some(b64) = secret.strip_prefix(WHSEC_PREFIX)
    {
        let key = BASE64.decode(b64).map_err(|_| {
            VerifyError::InvalidSecret("whsec_ secret is not valid base64".to_string())
        })?;
        if key.is_empty() {
            return Err(VerifyError::InvalidSecret(
                "empty whsec_ secret".to_string(),
            ));
        }
        return Ok(key);
    }
    Ok(secret.as_bytes().to_vec())
}

fn mac_compute(
    algorithm: HmacAlgorithm,
    key: &[u8],
    parts: &[&[u8]],
) -> Result<Vec<u8>, VerifyError> {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, VerifyError> {
        let mut mac = <M as KeyInit>::new_from_slice(key)
            .map_err(|_| VerifyError::InvalidSecret("unusable key length".to_string()))?;
        for p in parts {
            mac.update(p);
        }
        Ok(mac.finalize().into_bytes().to_vec())
    }
    match algorithm {
        HmacAlgorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        HmacAlgorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        HmacAlgorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
    }
}

/// Constant-time check of `tag` against the MAC of `message` (`Mac::verify_slice`).
fn mac_verify(
    algorithm: HmacAlgorithm,
    key: &[u8],
    message: &[u8],
    tag: &[u8],
) -> Result<bool, VerifyError> {
    fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8], tag: &[u8]) -> Result<bool, VerifyError> {
        let mut mac = <M as KeyInit>::new_from_slice(key)
            .map_err(|_| VerifyError::InvalidSecret("unusable key length".to_string()))?;
        mac.update(message);
        Ok(mac.verify_slice(tag).is_ok())
    }
    match algorithm {
        HmacAlgorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, message, tag),
        HmacAlgorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, message, tag),
        HmacAlgorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, message, tag),
    }
}

fn header<'a>(headers: &'a Headers, name: &str) -> Result<&'a str, VerifyError> {
    headers
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| VerifyError::MissingHeader(name.to_string()))
}

fn malformed(header: &str, what: &str) -> VerifyError {
    VerifyError::Malformed(format!("{header}: {what}"))
}

fn parse_timestamp(header: &str, raw: &str) -> Result<i64, VerifyError> {
    raw.trim()
        .parse::<i64>()
        .map_err(|_| malformed(header, "timestamp is not an integer"))
}

fn decode_base64(header: &str, raw: &str) -> Result<Vec<u8>, VerifyError> {
    BASE64
        .decode(raw.trim())
        .map_err(|_| malformed(header, "invalid base64"))
}

/// The URI HubSpot signs: the URL it called, with the query string it carried, and these
/// percent-encodings decoded (HubSpot's request-validation rules): `%3A` `:`, `%2F` `/`,
/// `%3F` `?`, `%40` `@`, `%21` `!`, `%24` `$`, `%27` `'`, `%28` `(`, `%29` `)`, `%2A` `*`,
/// `%2C` `,`, `%3B` `;` (either hex case).
fn hubspot_uri(url: &str, query: Option<&str>) -> String {
    let mut full = url.to_string();
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        full.push('?');
        full.push_str(q);
    }
    let bytes = full.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|c| b":/?@!$'()*,;".contains(c));
        match decoded {
            Some(c) => {
                out.push(c);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    // Only ASCII bytes were replaced by ASCII bytes, so the text stays valid UTF-8.
    String::from_utf8(out).unwrap_or(full)
}

/// Seconds since the epoch of an RFC 3339 time (`2021-07-25T10:00:00Z`, with optional
/// fractional seconds and a `Z` or `±HH:MM` offset); `None` if it is not one. Written out
/// rather than `jiff::Timestamp`'s parser, which also takes ISO 8601 forms such as `+0200`
/// that RFC 3339 (and Zendesk's header) do not.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = crate::calendar::days_from_civil(y, mo, d);
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

fn decode_hex(header: &str, raw: &str) -> Result<Vec<u8>, VerifyError> {
    hex::decode(raw.trim()).map_err(|_| malformed(header, "invalid hex"))
}

/// Reject timestamps more than `tolerance` away from `now`, in either direction.
fn check_window(ts: i64, now: i64, tolerance: Duration) -> Result<(), VerifyError> {
    let tolerance_secs = tolerance.as_secs();
    if ts.abs_diff(now) > tolerance_secs {
        return Err(VerifyError::StaleTimestamp {
            timestamp: ts,
            now,
            tolerance_secs,
        });
    }
    Ok(())
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[cfg(test)]
mod tests;
