//! An HTTP connector with everything that wraps one attempt: circuit breaker, concurrency
//! cap, rate limit, OAuth2 token, and the response contract.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::breaker::CircuitBreaker;
use crate::connector::{ResolvedHttpConnector, Secret};
use crate::http::{AttemptOutcome, HttpExecutor, HttpRequest};
use crate::limit::{ConcurrencyLimit, RateLimiter};
use crate::oauth::OAuth2Client;

/// A response contract: the JSON schema a successful answer must satisfy.
#[derive(Debug, Clone)]
pub struct ResponseContract {
    /// The schema file, for messages.
    pub file: String,
    pub validator: Arc<jsonschema::Validator>,
}

impl ResponseContract {
    /// Compile `schema` (read from `file`).
    pub fn new(file: impl Into<String>, schema: &serde_json::Value) -> Result<Self, String> {
        let validator = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
        Ok(ResponseContract {
            file: file.into(),
            validator: Arc::new(validator),
        })
    }

    /// `None` when `body` satisfies the contract, else a message naming the first
    /// violations (at most three).
    pub fn check(&self, body: &[u8], truncated: bool) -> Option<String> {
        if truncated {
            return Some(format!(
                "response does not match the contract {}: the body was too large to check",
                self.file
            ));
        }
        let value: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => {
                return Some(format!(
                    "response does not match the contract {}: the body is not JSON",
                    self.file
                ));
            }
        };
        let problems: Vec<String> = self
            .validator
            .iter_errors(&value)
            .take(3)
            .map(|e| {
                let ptr = e.instance_path().to_string();
                let ptr = if ptr.is_empty() { "/".to_string() } else { ptr };
                let mut msg = format!("{ptr}: {e}");
                if msg.len() > 200 {
                    let mut cut = 200;
                    while !msg.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    msg.truncate(cut);
                    msg.push('…');
                }
                msg
            })
            .collect();
        (!problems.is_empty()).then(|| {
            format!(
                "response does not match the contract {}: {}",
                self.file,
                problems.join("; ")
            )
        })
    }
}

/// An HTTP connector ready to send through: the resolved connector plus its optional
/// OAuth2 client, rate limit, concurrency cap, circuit breaker and response contract.
#[derive(Debug)]
pub struct HttpConnection {
    pub connector: ResolvedHttpConnector,
    pub oauth: Option<OAuth2Client>,
    pub rate_limit: Option<RateLimiter>,
    pub concurrency: Option<ConcurrencyLimit>,
    pub breaker: Option<CircuitBreaker>,
    pub contract: Option<ResponseContract>,
}

impl HttpConnection {
    /// A connection with no extras.
    pub fn plain(connector: ResolvedHttpConnector) -> Self {
        HttpConnection {
            connector,
            oauth: None,
            rate_limit: None,
            concurrency: None,
            breaker: None,
            contract: None,
        }
    }

    /// A JSON `POST` to `path` under the connector's base URL (notifications and alerts),
    /// ready for [`HttpConnection::attempt`].
    pub fn prepare_post(
        &self,
        path: Option<&str>,
        json: serde_json::Value,
        idempotency_key: &str,
    ) -> Result<HttpRequest, crate::ConnectError> {
        HttpExecutor::prepare(
            Some(&self.connector),
            "POST",
            path.unwrap_or(""),
            &[],
            Some(json),
            None,
            idempotency_key,
        )
    }

    /// One attempt of `req` (prepared with this connection's `connector`), in order:
    /// the circuit breaker may refuse at once (a retryable failure whose `retry_after` is
    /// the rest of the cool-down); then wait for a concurrency slot and a rate-limit token;
    /// add the OAuth2 bearer token (on a 401 the token is refreshed and the request sent
    /// once more); send; check a 2xx answer against the response contract (a mismatch is
    /// a permanent failure); tell the breaker whether the system failed.
    pub async fn attempt(&self, executor: &HttpExecutor, req: &HttpRequest) -> AttemptOutcome {
        self.attempt_keeping(executor, req, crate::BODY_KEEP_BYTES)
            .await
    }

    /// [`HttpConnection::attempt`], keeping up to `keep` bytes of the response body (see
    /// [`HttpExecutor::attempt_keeping`]).
    pub async fn attempt_keeping(
        &self,
        executor: &HttpExecutor,
        req: &HttpRequest,
        keep: usize,
    ) -> AttemptOutcome {
        let started = Instant::now();
        if let Some(b) = &self.breaker
            && let Err(open) = b.admit()
        {
            return failure(open.to_string(), true, Some(open.retry_in), started);
        }
        let _slot = match &self.concurrency {
            Some(c) => c.acquire().await,
            None => None,
        };
        if let Some(l) = &self.rate_limit {
            l.acquire().await;
        }
        let mut out = match &self.oauth {
            None => executor.attempt_keeping(req, keep).await,
            Some(oauth) => {
                let mut out = None;
                for round in 0..2 {
                    let token = match oauth.token().await {
                        Ok(t) => t,
                        Err(e) => {
                            let retryable = e.retryable();
                            out = Some(failure(e.to_string(), retryable, None, started));
                            break;
                        }
                    };
                    let o = executor
                        .attempt_keeping(&with_bearer(req, &token), keep)
                        .await;
                    if o.status == Some(401) && round == 0 {
                        oauth.invalidate(&token).await;
                        tracing::debug!(connector = %self.connector.name, "401 with a cached OAuth2 token; fetching a new one");
                        continue;
                    }
                    out = Some(o);
                    break;
                }
                out.unwrap_or_else(|| failure("no OAuth2 attempt made".into(), true, None, started))
            }
        };
        if out.ok
            && let Some(contract) = &self.contract
            && let Some(problem) = contract.check(&out.body, out.body_truncated)
        {
            out.ok = false;
            out.retryable = false;
            out.error = Some(problem);
        }
        if let Some(b) = &self.breaker {
            let system_failed = !out.ok && out.retryable && out.status != Some(429);
            b.record(system_failed);
        }
        out.duration = started.elapsed();
        out
    }
}

/// `req` with `Authorization: Bearer <token>` (replacing any), marked sensitive.
fn with_bearer(req: &HttpRequest, token: &Secret) -> HttpRequest {
    let mut r = req.clone();
    r.headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
    r.headers
        .push(("Authorization".into(), format!("Bearer {}", token.expose())));
    if !r.is_sensitive("authorization") {
        r.sensitive_headers.push("Authorization".into());
    }
    r
}

/// A failed attempt that never reached (or never finished at) the system.
pub(crate) fn failure(
    error: String,
    retryable: bool,
    retry_after: Option<Duration>,
    started: Instant,
) -> AttemptOutcome {
    AttemptOutcome {
        status: None,
        ok: false,
        retryable,
        retry_after,
        error: Some(error),
        body_excerpt: None,
        body: Vec::new(),
        body_truncated: false,
        duration: started.elapsed(),
    }
}
