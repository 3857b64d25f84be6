//! Webhook ingest: verify -> parse -> contract -> dedupe -> store (durable) -> 202.
//!
//! The request body is held as raw bytes until the signature is checked; only then is it
//! parsed. A 202 is sent only after the store reports the event committed and fsynced.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use charter_core::config::Dedupe;
use charter_core::model::{NewEvent, RejectedPayload};
use charter_core::verify;
use charter_store::{IngestOutcome, Store};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::now_millis;

/// Headers kept with an event (lower-case). Signatures, cookies and credentials never are.
const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "x-github-event",
    "x-github-delivery",
    "x-shopify-topic",
    "x-shopify-shop-domain",
    "x-zendesk-account-id",
    "x-zendesk-webhook-id",
    "x-request-id",
    "x-slack-request-timestamp",
    "traceparent",
];

/// A delivery as received: nothing about it is trusted yet.
pub struct Unverified {
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
}

/// A delivery whose signature was checked, and whose body parsed; not yet checked against
/// the contract.
pub struct Verified {
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
    pub payload: Value,
}

/// Lower-case map of the headers `wanted` names (values that are not UTF-8 are skipped).
/// `HeaderName`s are lower-case already.
pub fn header_map(headers: &HeaderMap, wanted: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        if wanted(name.as_str())
            && let Ok(v) = value.to_str()
        {
            out.insert(name.as_str().to_string(), v.to_string());
        }
    }
    out
}

impl Unverified {
    /// Check the signature; on success parse the body (JSON or form-encoded).
    pub fn verify(
        self,
        spec: &verify::VerifySpec,
        secrets: &[String],
        now_unix: i64,
    ) -> Result<Result<Verified, (Unverified, String)>, verify::VerifyError> {
        verify::verify(spec, secrets, &self.headers, &self.body, now_unix)?;
        match parse_body(&self.headers, &self.body) {
            Ok(payload) => Ok(Ok(Verified {
                headers: self.headers,
                body: self.body,
                payload,
            })),
            Err(reason) => Ok(Err((self, reason))),
        }
    }
}

/// Parse a body as JSON, or as `application/x-www-form-urlencoded` into an object of strings
/// (a form field named `payload` holding JSON, as Slack sends, is decoded).
pub fn parse_body(headers: &BTreeMap<String, String>, body: &[u8]) -> Result<Value, String> {
    if is_form(headers) {
        let mut map = serde_json::Map::new();
        for (k, v) in form_pairs(body) {
            let value = if k == "payload" {
                serde_json::from_str(&v).unwrap_or(Value::String(v))
            } else {
                Value::String(v)
            };
            map.insert(k, value);
        }
        return Ok(Value::Object(map));
    }
    let ctype = headers
        .get("content-type")
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    if !ctype.is_empty() && !ctype.contains("json") {
        return Err(format!(
            "unsupported content type `{ctype}`: send application/json or application/x-www-form-urlencoded"
        ));
    }
    serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))
}

/// Whether the body is form-encoded (`application/x-www-form-urlencoded`).
fn is_form(headers: &BTreeMap<String, String>) -> bool {
    headers.get("content-type").is_some_and(|c| {
        c.get(..33)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    })
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let k = percent_decode(it.next().unwrap_or_default());
            let v = percent_decode(it.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let byte = s[i];
        if byte == b'+' {
            out.push(b' ');
        } else if byte == b'%' && i + 2 < s.len() {
            let decoded = std::str::from_utf8(&s[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match decoded {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            }
        } else {
            out.push(byte);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Validate against the contract; each violation as `"<json pointer>: <message>"`.
///
/// A valid payload (nearly every one) is settled by `is_valid`, which tracks no error
/// locations; only an invalid one is walked again to collect its violations.
pub fn contract_violations(validator: &jsonschema::Validator, payload: &Value) -> Vec<String> {
    if validator.is_valid(payload) {
        return Vec::new();
    }
    validator
        .iter_errors(payload)
        .map(|e| {
            let ptr = e.instance_path().to_string();
            let ptr = if ptr.is_empty() { "/".to_string() } else { ptr };
            format!("{ptr}: {e}")
        })
        .collect()
}

/// Whether a header is kept with the event: the allowlist, plus `extra` (the dedupe header).
fn is_kept(name: &str, extra: Option<&str>) -> bool {
    KEPT_HEADERS.contains(&name) || Some(name) == extra
}

fn kept_headers(
    mut headers: BTreeMap<String, String>,
    extra: Option<&str>,
) -> BTreeMap<String, String> {
    headers.retain(|k, _| is_kept(k, extra));
    headers
}

/// Handle one delivery to `charter`'s webhook path: the charter's backlog bound, the
/// signature, the event-type filters, the contract, then the durable store.
pub async fn receive<S: Store>(
    state: &AppState<S>,
    charter_name: &str,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(cr) = state.runtime.charters.get(charter_name) else {
        return Err(ApiError::NotFound);
    };
    let charter = &cr.charter;
    let Some(webhook) = &charter.trigger.webhook else {
        return Err(ApiError::NotFound);
    };
    if let Some(r) = crate::backlog::refusal(state, charter_name) {
        tracing::debug!(charter = %charter_name, bound = r.bound, detail = %r.detail, "webhook refused: backlog full");
        state.metrics.webhook_limited(charter_name, "backlog");
        return Err(ApiError::BacklogFull {
            retry_after: crate::backlog::RETRY_AFTER.as_secs(),
        });
    }
    let delivery = Delivery {
        state,
        cr,
        webhook,
        received_at: now_millis(),
        source: format!("webhook:{}", webhook.path),
        dedupe_header: match &charter.trigger.dedupe {
            Some(Dedupe::Header(h)) => Some(h.as_str()),
            Some(Dedupe::Template(_)) => None,
            None => verify::delivery_id_header(&webhook.verify),
        },
    };
    let verified = match delivery.verify(&uri, &headers, body).await? {
        Ok(v) => v,
        Err(answered) => return Ok(answered),
    };
    let event_type = event_type_of(&verified);
    if let Some(answered) = delivery.filtered(&verified, event_type.as_deref()) {
        return Ok(answered);
    }
    let kept = kept_headers(verified.headers, delivery.dedupe_header);
    // A JSON body is stored as the text received (a form body as the object parsed from it).
    let is_json = !is_form(&kept);
    let kept = delivery
        .check_contract(&verified.payload, &verified.body, kept)
        .await?;
    let mut event = NewEvent {
        id: Uuid::now_v7(),
        charter: charter.name.clone(),
        source: delivery.source,
        event_type,
        dedupe_key: None,
        received_at: delivery.received_at,
        headers: kept,
        payload: verified.payload,
    };
    event.dedupe_key = webhook_dedupe_key(charter, &event, delivery.dedupe_header)?;
    let payload_json = is_json
        .then(|| String::from_utf8(Vec::from(verified.body)).ok())
        .flatten();
    store_event(state, event, payload_json).await
}

/// One webhook delivery being taken in, and what its phases share.
struct Delivery<'a, S> {
    state: &'a AppState<S>,
    cr: &'a crate::project::CharterRuntime,
    webhook: &'a charter_core::config::Webhook,
    received_at: i64,
    source: String,
    /// The header that carries the delivery's id (dedupe), if any.
    dedupe_header: Option<&'a str>,
}

impl<S: Store> Delivery<'_, S> {
    /// Check the signature and parse the body. `Ok(Err(response))`: a signed delivery that
    /// cannot be read, kept as rejected and answered 400.
    async fn verify(
        &self,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Result<Verified, Response>, ApiError> {
        let verify = &self.webhook.verify;
        // Only what something reads is copied out of the request: the body's content type,
        // the signature scheme's headers, the dedupe header and the headers kept with the
        // event.
        let wanted = |name: &str| {
            name == "content-type"
                || is_kept(name, self.dedupe_header)
                || verify::reads_header(verify, name)
        };
        let mut headers = header_map(headers, wanted);
        // A scheme that signs the URL reads the query string through a pseudo-header.
        if let Some(query) = uri.query()
            && verify::reads_header(verify, verify::QUERY)
        {
            headers.insert(verify::QUERY.to_string(), query.to_string());
        }
        let unverified = Unverified { headers, body };
        let charter = &self.cr.charter;
        match unverified.verify(verify, &self.cr.webhook_secrets, self.received_at / 1000) {
            Err(e) => {
                tracing::info!(charter = %charter.name, reason = %e, "webhook signature rejected");
                self.state.metrics.rejected("signature");
                Err(ApiError::Unauthorized)
            }
            Ok(Err((raw, reason))) => {
                // Signed but unreadable: kept as rejected so nothing is lost.
                let dedupe_header = verify::delivery_id_header(verify);
                let id = keep_rejected_capped(
                    self.state,
                    "malformed",
                    RejectedPayload {
                        id: Uuid::now_v7(),
                        charter: charter.name.clone(),
                        source: self.source.clone(),
                        received_at: self.received_at,
                        headers: kept_headers(raw.headers, dedupe_header),
                        body: String::from_utf8_lossy(&raw.body).into_owned(),
                        reasons: vec![reason.clone()],
                    },
                )
                .await?;
                Ok(Err((
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": reason, "rejected_id": id.map(|i| i.to_string())})),
                )
                    .into_response()))
            }
            Ok(Ok(v)) => Ok(Ok(v)),
        }
    }

    /// The answer to a delivery that is not stored: GitHub's `ping` (sent when a webhook is
    /// created), or an event type the trigger does not take.
    fn filtered(&self, verified: &Verified, event_type: Option<&str>) -> Option<Response> {
        let charter = &self.cr.charter;
        if event_type == Some("ping") && verified.headers.contains_key("x-github-event") {
            self.state.metrics.ignored(&charter.name, "ping");
            return Some((StatusCode::OK, Json(json!({"ok": true, "ping": true}))).into_response());
        }
        if let Some(types) = &charter.trigger.events
            && !types.takes(event_type)
        {
            self.state.metrics.ignored(&charter.name, "event_type");
            return Some(
                (
                    StatusCode::OK,
                    Json(json!({"ok": true, "ignored": true, "event_type": event_type})),
                )
                    .into_response(),
            );
        }
        None
    }

    /// Check the payload against the charter's contract; a violating one is kept as
    /// rejected and refused. Gives the kept headers back.
    async fn check_contract(
        &self,
        payload: &Value,
        body: &Bytes,
        kept: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let Some(contract) = &self.cr.contract else {
            return Ok(kept);
        };
        let violations = contract_violations(contract, payload);
        if violations.is_empty() {
            return Ok(kept);
        }
        let id = keep_rejected_capped(
            self.state,
            "contract",
            RejectedPayload {
                id: Uuid::now_v7(),
                charter: self.cr.charter.name.clone(),
                source: self.source.clone(),
                received_at: self.received_at,
                headers: kept,
                body: String::from_utf8_lossy(body).into_owned(),
                reasons: violations.clone(),
            },
        )
        .await?;
        Err(ApiError::Contract {
            event_id: id.map(|i| i.to_string()),
            violations,
        })
    }
}

/// The delivery's event type: GitHub's or Shopify's header, else the payload's `type`.
fn event_type_of(verified: &Verified) -> Option<String> {
    verified
        .headers
        .get("x-github-event")
        .or_else(|| verified.headers.get("x-shopify-topic"))
        .cloned()
        .or_else(|| {
            verified
                .payload
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
}

/// Keep a payload that could not become an event (durable on return), counted under
/// `reason` (`malformed`, `contract`); returns its id.
pub async fn keep_rejected<S: Store>(
    state: &AppState<S>,
    reason: &'static str,
    rejected: RejectedPayload,
) -> Result<Uuid, ApiError> {
    let id = rejected.id;
    state.store.reject(rejected).await?;
    state.metrics.rejected(reason);
    Ok(id)
}

/// [`keep_rejected`] under the charter's cap (`server.rejected_keep`): past it the payload
/// is not kept (`None`), counted in `charter_rejected_dropped_total` and logged.
pub async fn keep_rejected_capped<S: Store>(
    state: &AppState<S>,
    reason: &'static str,
    rejected: RejectedPayload,
) -> Result<Option<Uuid>, ApiError> {
    let id = rejected.id;
    let charter = rejected.charter.clone();
    let keep = state.runtime.project.settings.net.rejected_keep;
    state.metrics.rejected(reason);
    if state.store.reject_within(rejected, keep).await? {
        Ok(Some(id))
    } else {
        state.metrics.rejected_dropped(&charter);
        tracing::warn!(
            charter = %charter,
            keep,
            "rejected payload not kept: the charter already keeps server.rejected_keep of them"
        );
        Ok(None)
    }
}

/// Compute the dedupe key for an event.
pub fn dedupe_key(
    charter: &charter_core::config::Charter,
    event: &NewEvent,
    header: Option<&str>,
) -> Result<Option<String>, ApiError> {
    match &charter.trigger.dedupe {
        Some(Dedupe::Template(t)) => {
            let ctx = charter_core::routing::eval_context(event, None);
            let key = t
                .render(&ctx)
                .map_err(|e| ApiError::BadRequest(format!("cannot compute the dedupe key: {e}")))?;
            Ok(Some(key))
        }
        _ => Ok(header.and_then(|h| event.headers.get(h).cloned())),
    }
}

/// [`dedupe_key`] for a webhook delivery: without a `dedupe:` and without a delivery-id
/// header, the provider's delivery id in the body when its scheme has one (Stripe `id`,
/// Slack `event_id`; [`verify::delivery_id_pointer`]).
pub fn webhook_dedupe_key(
    charter: &charter_core::config::Charter,
    event: &NewEvent,
    header: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let key = dedupe_key(charter, event, header)?;
    if key.is_some() || charter.trigger.dedupe.is_some() {
        return Ok(key);
    }
    Ok(charter
        .trigger
        .webhook
        .as_ref()
        .and_then(|w| verify::delivery_id_pointer(&w.verify))
        .and_then(|p| verify::delivery_id_in_body(&event.payload, p)))
}

/// Store an event that passed its checks (durable on return), count it as received or
/// duplicate, and wake an idle worker for a new one.
///
/// `payload_json`: the payload's JSON text as received, kept by the store as it is.
pub async fn accept<S: Store>(
    state: &AppState<S>,
    event: NewEvent,
    payload_json: Option<String>,
) -> Result<IngestOutcome, charter_store::StoreError> {
    let charter = event.charter.clone();
    let outcome = match payload_json {
        Some(text) => state.store.ingest_json(event, text).await?,
        None => state.store.ingest(event).await?,
    };
    match outcome {
        IngestOutcome::Stored(_) => {
            state.metrics.received(&charter);
            state.metrics.backlog.stored(&charter);
            state.wake.notify_one();
        }
        IngestOutcome::Duplicate(_) => state.metrics.duplicate(&charter),
    }
    Ok(outcome)
}

/// Store a verified, contract-checked event and answer: 202 when new, 200 for a duplicate.
pub async fn store_event<S: Store>(
    state: &AppState<S>,
    event: NewEvent,
    payload_json: Option<String>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let outcome = accept(state, event, payload_json).await?;
    state.metrics.ack_latency(started.elapsed());
    Ok(match outcome {
        IngestOutcome::Stored(id) => ack(StatusCode::ACCEPTED, id, "accepted"),
        IngestOutcome::Duplicate(id) => ack(StatusCode::OK, id, "duplicate"),
    })
}

/// The acknowledgement body, `{"id":"<uuid>","status":"<status>"}`, written directly: it is
/// sent for every stored event, and neither part needs JSON escaping (a UUID, a fixed word).
fn ack(code: StatusCode, id: Uuid, status: &'static str) -> Response {
    let mut buf = Uuid::encode_buffer();
    let body = format!(
        r#"{{"id":"{}","status":"{status}"}}"#,
        id.hyphenated().encode_lower(&mut buf)
    );
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
