//! A small downstream HTTP server that stands in for a helpdesk or CRM in the demo, the
//! benchmarks and the tests. It behaves like a careful real API: it honours
//! `Idempotency-Key` (a repeated key gets the first answer back and is not applied again),
//! and it can be told to fail in scripted ways (500s, 429 with Retry-After, slowness).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

/// One scripted answer: the sink answers with these, in order, before behaving normally.
#[derive(Debug, Clone)]
pub enum Scripted {
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    TooMany {
        retry_after_secs: u64,
    },
    /// Sleep this long, then answer normally.
    Delay(Duration),
}

/// A request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub authorization: Option<String>,
    pub body: String,
    /// The status the sink answered.
    pub status: u16,
    /// True when this request applied an effect for the first time.
    pub applied: bool,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Scripted>,
    received: Vec<Received>,
    /// Idempotency keys applied, with the count of times each was presented.
    applied: HashMap<String, u32>,
    fail_always: Option<u16>,
}

/// Handle to a running sink.
#[derive(Clone, Default)]
pub struct Sink {
    inner: Arc<Mutex<Inner>>,
}

impl Sink {
    /// Queue scripted answers.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        if let Ok(mut i) = self.inner.lock() {
            i.script.extend(answers);
        }
    }

    /// Answer every request with this status from now on (`None` to stop).
    pub fn fail_always(&self, status: Option<u16>) {
        if let Ok(mut i) = self.inner.lock() {
            i.fail_always = status;
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner
            .lock()
            .map(|i| i.received.clone())
            .unwrap_or_default()
    }

    /// Number of distinct idempotency keys applied.
    pub fn applied_keys(&self) -> usize {
        self.inner.lock().map(|i| i.applied.len()).unwrap_or(0)
    }

    /// Keys applied more than once (must stay empty: that would be a doubled effect).
    pub fn doubled_keys(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|i| {
                i.received
                    .iter()
                    .filter(|r| r.applied)
                    .filter_map(|r| r.idempotency_key.clone())
                    .fold(HashMap::<String, u32>::new(), |mut m, k| {
                        *m.entry(k).or_default() += 1;
                        m
                    })
                    .into_iter()
                    .filter(|(_, n)| *n > 1)
                    .map(|(k, _)| k)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Start serving on `addr` (use port 0 for any) until `shutdown` is cancelled.
    pub async fn start(
        &self,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let app = Router::new().fallback(handle).with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
        Ok(local)
    }
}

async fn handle(
    State(sink): State<Sink>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let next = sink.inner.lock().ok().and_then(|mut i| {
        if let Some(s) = i.fail_always {
            return Some(Scripted::Status(s));
        }
        i.script.pop_front()
    });
    let mut record = Received {
        method: method.to_string(),
        path: uri.path().to_string(),
        idempotency_key: key.clone(),
        authorization: auth,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: 200,
        applied: false,
    };
    let early: Option<Response> = match next {
        Some(Scripted::Status(s)) => {
            record.status = s;
            Some(
                (
                    StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    "scripted failure",
                )
                    .into_response(),
            )
        }
        Some(Scripted::TooMany { retry_after_secs }) => {
            record.status = 429;
            Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", retry_after_secs.to_string())],
                    "slow down",
                )
                    .into_response(),
            )
        }
        Some(Scripted::Delay(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        None => None,
    };
    if let Some(resp) = early {
        if let Ok(mut i) = sink.inner.lock() {
            i.received.push(record);
        }
        return resp;
    }
    let mut replayed = false;
    if let Ok(mut i) = sink.inner.lock() {
        if let Some(k) = &key {
            let n = i.applied.entry(k.clone()).or_insert(0);
            *n += 1;
            replayed = *n > 1;
        }
        record.applied = !replayed;
        i.received.push(record);
    }
    let status = if replayed { "replayed" } else { "applied" };
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        format!("{{\"status\":\"{status}\"}}"),
    )
        .into_response()
}
