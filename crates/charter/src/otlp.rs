//! Optional export of spans to an OpenTelemetry collector over OTLP/HTTP with JSON encoding
//! (`POST {endpoint}/v1/traces`, `Content-Type: application/json`).
//!
//! Enabled by `--otlp-endpoint` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable. A
//! [`tracing_subscriber::Layer`] turns every closed span into an OTLP span: the run span's
//! `trace_id` field (the run id, the same trace id the worker sends downstream in
//! `traceparent`) becomes the trace id of the run and of every span under it; other root
//! spans get a random trace id. Warnings and errors logged inside a span become span events,
//! and an error marks the span's status as an error.
//!
//! Spans travel through a bounded queue to one exporter task that posts a batch every second
//! (or every [`MAX_BATCH`] spans). When the queue is full, spans are dropped and counted, never
//! blocking the engine; a failed post is logged and its batch dropped. The task stops on the
//! shutdown token after one last flush.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Most spans held between the engine and the exporter.
const QUEUE: usize = 8_192;
/// Most spans in one request.
pub const MAX_BATCH: usize = 512;
/// How often a partial batch is sent.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Timeout of one export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Span event (log line) limit per span, so a chatty span cannot grow without bound.
const MAX_EVENTS_PER_SPAN: usize = 32;
/// Targets whose spans are never exported: the exporter's own HTTP client would otherwise
/// feed itself at debug levels.
const IGNORED_TARGETS: &[&str] = &["hyper", "reqwest", "h2", "rustls", "tower", "want"];

/// A finished span, ready for the wire.
#[derive(Debug, Clone)]
pub struct FinishedSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub start_unix_nano: u128,
    pub end_unix_nano: u128,
    pub attributes: Vec<(String, AttrValue)>,
    pub events: Vec<SpanEvent>,
    pub error: bool,
}

/// An attribute value in OTLP's `AnyValue` terms.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
}

/// A log line inside a span.
#[derive(Debug, Clone)]
pub struct SpanEvent {
    pub name: String,
    pub time_unix_nano: u128,
    pub attributes: Vec<(String, AttrValue)>,
}

/// What the layer keeps in each live span's extensions.
struct SpanData {
    span_id: u64,
    /// The trace id a `trace_id` field set (hex, 32 digits), if any.
    explicit_trace: Option<String>,
    /// A random trace id, used when neither this span nor an ancestor sets one.
    fallback_trace: u128,
    start: u128,
    attributes: Vec<(String, AttrValue)>,
    events: Vec<SpanEvent>,
    error: bool,
}

/// The layer: build it with [`pipeline`].
pub struct OtlpLayer {
    tx: mpsc::Sender<FinishedSpan>,
    dropped: Arc<AtomicU64>,
}

/// The exporter task's half.
pub struct Exporter {
    rx: mpsc::Receiver<FinishedSpan>,
    url: String,
    service: String,
    client: reqwest::Client,
    dropped: Arc<AtomicU64>,
}

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP endpoint `{0}` is not an http:// or https:// URL")]
    BadEndpoint(String),
    #[error("cannot build the OTLP HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The layer and its exporter for `endpoint` (a collector base URL such as
/// `http://127.0.0.1:4318`; `/v1/traces` is appended unless the URL already ends with it).
pub fn pipeline(endpoint: &str, service: &str) -> Result<(OtlpLayer, Exporter), OtlpError> {
    let endpoint = endpoint.trim();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(OtlpError::BadEndpoint(endpoint.to_string()));
    }
    let url = if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
        endpoint.trim_end_matches('/').to_string()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    };
    charter_connect::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    Ok((
        OtlpLayer {
            tx,
            dropped: dropped.clone(),
        },
        Exporter {
            rx,
            url,
            service: service.to_string(),
            client,
            dropped,
        },
    ))
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A random id that is not all zeros (OTLP treats zero ids as invalid).
fn nonzero_id<T: PartialEq + Default>(draw: impl Fn() -> T) -> T {
    loop {
        let v = draw();
        if v != T::default() {
            return v;
        }
    }
}

/// A 32-hex-digit trace id (what `Uuid::simple()` prints), lower-cased; anything else is
/// ignored.
fn as_trace_id(s: &str) -> Option<String> {
    let s = s.trim();
    (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0'))
        .then(|| s.to_ascii_lowercase())
}

/// Collects a span's or event's fields.
#[derive(Default)]
struct Fields {
    attrs: Vec<(String, AttrValue)>,
    trace_id: Option<String>,
    message: Option<String>,
}

impl Fields {
    fn push(&mut self, field: &Field, v: AttrValue) {
        let name = field.name();
        if name == "trace_id" {
            if let AttrValue::Str(s) = &v {
                self.trace_id = as_trace_id(s);
            }
            return;
        }
        if name == "message" {
            if let AttrValue::Str(s) = v {
                self.message = Some(s);
            }
            return;
        }
        self.attrs.push((name.to_string(), v));
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, AttrValue::Str(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, AttrValue::Str(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, AttrValue::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.push(field, AttrValue::Int(v)),
            Err(_) => self.push(field, AttrValue::Str(value.to_string())),
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, AttrValue::Double(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, AttrValue::Bool(value));
    }
}

/// Whether spans of `target` stay out of the export (no allocation: it runs on every span).
fn ignored(target: &str) -> bool {
    IGNORED_TARGETS.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

fn upsert(attrs: &mut Vec<(String, AttrValue)>, new: Vec<(String, AttrValue)>) {
    for (k, v) in new {
        match attrs.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => attrs.push((k, v)),
        }
    }
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if ignored(span.metadata().target()) {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(SpanData {
            span_id: nonzero_id(rand::random::<u64>),
            explicit_trace: fields.trace_id,
            fallback_trace: nonzero_id(rand::random::<u128>),
            start: now_nanos(),
            attributes: fields.attrs,
            events: Vec::new(),
            error: false,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        values.record(&mut fields);
        let mut ext = span.extensions_mut();
        if let Some(data) = ext.get_mut::<SpanData>() {
            if fields.trace_id.is_some() {
                data.explicit_trace = fields.trace_id;
            }
            upsert(&mut data.attributes, fields.attrs);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > tracing::Level::WARN {
            return;
        }
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut ext = span.extensions_mut();
        if let Some(data) = ext.get_mut::<SpanData>() {
            if level == tracing::Level::ERROR {
                data.error = true;
            }
            if data.events.len() < MAX_EVENTS_PER_SPAN {
                let mut attributes = fields.attrs;
                attributes.push(("level".into(), AttrValue::Str(level.to_string())));
                data.events.push(SpanEvent {
                    name: fields.message.unwrap_or_else(|| level.to_string()),
                    time_unix_nano: now_nanos(),
                    attributes,
                });
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(data) = span.extensions_mut().remove::<SpanData>() else {
            return;
        };
        // The nearest explicit trace id on the way to the root wins; else the root's own.
        let mut trace = data.explicit_trace.clone();
        let mut root_fallback = data.fallback_trace;
        let mut parent_span_id = None;
        for ancestor in span.scope().skip(1) {
            let ext = ancestor.extensions();
            let Some(a) = ext.get::<SpanData>() else {
                continue;
            };
            parent_span_id.get_or_insert(a.span_id);
            if trace.is_none() {
                trace.clone_from(&a.explicit_trace);
            }
            root_fallback = a.fallback_trace;
        }
        let finished = FinishedSpan {
            trace_id: trace.unwrap_or_else(|| format!("{root_fallback:032x}")),
            span_id: format!("{:016x}", data.span_id),
            parent_span_id: parent_span_id.map(|p| format!("{p:016x}")),
            name: span.name().to_string(),
            start_unix_nano: data.start,
            end_unix_nano: now_nanos(),
            attributes: data.attributes,
            events: data.events,
            error: data.error,
        };
        if self.tx.try_send(finished).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn any_value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => json!({ "stringValue": s }),
        // OTLP/JSON carries 64-bit integers as decimal strings.
        AttrValue::Int(i) => json!({ "intValue": i.to_string() }),
        AttrValue::Double(d) => json!({ "doubleValue": d }),
        AttrValue::Bool(b) => json!({ "boolValue": b }),
    }
}

fn attributes(attrs: &[(String, AttrValue)]) -> Value {
    Value::Array(
        attrs
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": any_value(v) }))
            .collect(),
    )
}

/// The OTLP/JSON `ExportTraceServiceRequest` for a batch of spans.
pub fn export_request(service: &str, spans: &[FinishedSpan]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": s.trace_id,
                "spanId": s.span_id,
                "name": s.name,
                // SPAN_KIND_INTERNAL
                "kind": 1,
                "startTimeUnixNano": s.start_unix_nano.to_string(),
                "endTimeUnixNano": s.end_unix_nano.to_string(),
                "attributes": attributes(&s.attributes),
                "events": s.events.iter().map(|e| json!({
                    "timeUnixNano": e.time_unix_nano.to_string(),
                    "name": e.name,
                    "attributes": attributes(&e.attributes),
                })).collect::<Vec<_>>(),
                // STATUS_CODE_ERROR = 2, STATUS_CODE_UNSET = 0
                "status": { "code": if s.error { 2 } else { 0 } },
            });
            if let (Some(parent), Some(obj)) = (&s.parent_span_id, span.as_object_mut()) {
                obj.insert("parentSpanId".into(), Value::String(parent.clone()));
            }
            span
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                { "key": "service.name", "value": { "stringValue": service } },
                { "key": "service.version", "value": { "stringValue": env!("CARGO_PKG_VERSION") } },
            ]},
            "scopeSpans": [{
                "scope": { "name": "charter", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    })
}

impl Exporter {
    /// Post batches until `shutdown`, then flush what is queued and stop.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch: Vec<FinishedSpan> = Vec::with_capacity(MAX_BATCH);
        let mut reported_drops = 0;
        loop {
            let deadline = tokio::time::sleep(FLUSH_EVERY);
            tokio::pin!(deadline);
            let stop = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break true,
                    _ = &mut deadline => break false,
                    span = self.rx.recv() => match span {
                        Some(s) => {
                            batch.push(s);
                            if batch.len() >= MAX_BATCH {
                                break false;
                            }
                        }
                        None => break true,
                    },
                }
            };
            if stop {
                while let Ok(s) = self.rx.try_recv() {
                    batch.push(s);
                }
            }
            for chunk in batch.chunks(MAX_BATCH) {
                self.post(chunk).await;
            }
            batch.clear();
            let dropped = self.dropped.load(Ordering::Relaxed);
            if dropped > reported_drops {
                tracing::warn!(
                    dropped = dropped - reported_drops,
                    "OTLP export queue was full; spans dropped"
                );
                reported_drops = dropped;
            }
            if stop {
                return;
            }
        }
    }

    async fn post(&self, spans: &[FinishedSpan]) {
        if spans.is_empty() {
            return;
        }
        let body = export_request(&self.service, spans);
        match self.client.post(&self.url).json(&body).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(
                status = r.status().as_u16(),
                spans = spans.len(),
                "OTLP collector refused a batch of spans; dropped"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                spans = spans.len(),
                "cannot reach the OTLP collector; batch of spans dropped"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn endpoint_must_be_http_and_gets_the_traces_path() {
        assert!(matches!(
            pipeline("127.0.0.1:4318", "charter"),
            Err(OtlpError::BadEndpoint(_))
        ));
        let (_, e) = pipeline("http://127.0.0.1:4318/", "charter").unwrap();
        assert_eq!(e.url, "http://127.0.0.1:4318/v1/traces");
        let (_, e) = pipeline("http://c:4318/v1/traces", "charter").unwrap();
        assert_eq!(e.url, "http://c:4318/v1/traces");
    }

    #[test]
    fn client_library_spans_are_ignored_by_target_prefix() {
        assert!(ignored("hyper"));
        assert!(ignored("hyper::client::conn"));
        assert!(!ignored("hyperion"));
        assert!(!ignored("charter_server::worker"));
    }

    #[test]
    fn trace_ids_are_32_hex_digits_not_all_zero() {
        assert_eq!(
            as_trace_id("0192ABCDEF0123456789abcdef012345").as_deref(),
            Some("0192abcdef0123456789abcdef012345")
        );
        assert_eq!(as_trace_id("00000000000000000000000000000000"), None);
        assert_eq!(as_trace_id("xyz"), None);
    }

    #[test]
    fn children_inherit_the_run_trace_id_and_errors_mark_the_span() {
        let (layer, mut exporter) = pipeline("http://127.0.0.1:9/", "test").unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let run = tracing::info_span!("run", event = "e1", trace_id = tracing::field::Empty);
            let _g = run.enter();
            run.record("trace_id", "0192abcdef0123456789abcdef012345");
            {
                let action = tracing::info_span!("action", action = "reply", attempt = 2u64);
                let _a = action.enter();
                tracing::error!(status = 500u64, "downstream failed");
            }
            tracing::info_span!("sibling").in_scope(|| {});
        });
        let mut spans = Vec::new();
        while let Ok(s) = exporter.rx.try_recv() {
            spans.push(s);
        }
        assert_eq!(spans.len(), 3, "{spans:?}");
        let run = spans.iter().find(|s| s.name == "run").unwrap();
        let action = spans.iter().find(|s| s.name == "action").unwrap();
        assert_eq!(run.trace_id, "0192abcdef0123456789abcdef012345");
        assert_eq!(action.trace_id, run.trace_id);
        assert_eq!(action.parent_span_id.as_deref(), Some(run.span_id.as_str()));
        assert!(run.parent_span_id.is_none());
        assert!(action.error && !run.error);
        assert_eq!(action.events.len(), 1);
        assert_eq!(action.events[0].name, "downstream failed");
        assert!(
            action
                .attributes
                .contains(&("attempt".into(), AttrValue::Int(2)))
        );
        assert!(
            run.attributes
                .contains(&("event".into(), AttrValue::Str("e1".into())))
        );
        assert!(action.end_unix_nano >= action.start_unix_nano);
        let body = export_request("test", &spans);
        let wire_spans = &body["resourceSpans"][0]["scopeSpans"][0]["spans"];
        assert_eq!(wire_spans.as_array().map(Vec::len), Some(3));
        let wire_action = wire_spans
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "action")
            .unwrap();
        assert_eq!(wire_action["status"]["code"], 2);
        assert_eq!(wire_action["parentSpanId"], json!(run.span_id));
        assert_eq!(
            body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "test"
        );
    }
}
