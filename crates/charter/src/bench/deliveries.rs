//! Signed deliveries for the benchmark charter, pre-signed into pools or signed on the fly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use charter_core::verify::{self, VerifySpec};
use reqwest::header::{HeaderName, HeaderValue};

use super::machine::now_unix;
use super::{BODIES, BenchError};

/// A signed delivery, compact: the signature header values concatenated in one buffer.
#[derive(Clone)]
pub(super) struct Delivery {
    pub(super) values: Bytes,
    /// End offset of each header value in `values` (names are in the [`Signer`]).
    pub(super) ends: [u16; 4],
    pub(super) body: Bytes,
}

/// Signs deliveries for the benchmark charter (Standard Webhooks, unique `webhook-id`s).
pub(super) struct Signer {
    pub(super) spec: VerifySpec,
    pub(super) secret: String,
    pub(super) bodies: Vec<Bytes>,
    pub(super) names: Vec<HeaderName>,
    pub(super) next: AtomicU64,
    pub(super) run: String,
}

impl Signer {
    pub(super) fn new(secret: &str) -> Result<Signer, BenchError> {
        let spec = VerifySpec::StandardWebhooks {
            tolerance: Duration::from_secs(300),
        };
        let bodies: Vec<Bytes> = (0..BODIES).map(sample_body).collect();
        let probe = verify::sign(&spec, secret, &bodies[0], 0, "probe")?;
        let names = probe
            .iter()
            .map(|(k, _)| HeaderName::from_bytes(k.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BenchError::Other(format!("signature header name: {e}")))?;
        if names.len() > 4 {
            return Err(BenchError::Other("too many signature headers".into()));
        }
        Ok(Signer {
            spec,
            secret: secret.to_string(),
            bodies,
            names,
            next: AtomicU64::new(0),
            run: uuid::Uuid::now_v7().simple().to_string(),
        })
    }

    pub(super) fn sign(&self, now_unix: i64) -> Result<Delivery, BenchError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let body = self.bodies[(n % BODIES as u64) as usize].clone();
        let id = format!("msg_{}_{n}", self.run);
        let headers = verify::sign(&self.spec, &self.secret, &body, now_unix, &id)?;
        let mut values = Vec::with_capacity(128);
        let mut ends = [0u16; 4];
        for (i, (name, value)) in headers.iter().enumerate() {
            if self.names.get(i).map(HeaderName::as_str) != Some(name.as_str()) {
                return Err(BenchError::Other(format!("unexpected header {name}")));
            }
            values.extend_from_slice(value.as_bytes());
            ends[i] = u16::try_from(values.len())
                .map_err(|_| BenchError::Other("signature headers too long".into()))?;
        }
        Ok(Delivery {
            values: Bytes::from(values),
            ends,
            body,
        })
    }

    /// Pre-sign `n` deliveries.
    pub(super) fn pool(&self, n: usize) -> Vec<Delivery> {
        let now = now_unix();
        let started = Instant::now();
        let pool: Vec<Delivery> = (0..n).filter_map(|_| self.sign(now).ok()).collect();
        eprintln!(
            "  pre-signed {} deliveries in {:.2}s",
            pool.len(),
            started.elapsed().as_secs_f64()
        );
        pool
    }

    /// The signature headers of `d` as (name, value) pairs.
    pub(super) fn headers<'a>(
        &'a self,
        d: &'a Delivery,
    ) -> impl Iterator<Item = (HeaderName, Option<HeaderValue>)> + 'a {
        let mut start = 0usize;
        self.names.iter().enumerate().map(move |(i, name)| {
            let end = usize::from(d.ends[i]);
            let value = HeaderValue::from_maybe_shared(d.values.slice(start..end)).ok();
            start = end;
            (name.clone(), value)
        })
    }
}

/// A realistic helpdesk-like payload; half of them mention a refund.
pub(super) fn sample_body(i: usize) -> Bytes {
    let subject = if i.is_multiple_of(2) {
        format!("Refund request for order ORD-{}", 10_000 + i)
    } else {
        format!("Cannot log in since the update (case {i})")
    };
    let v = serde_json::json!({
        "type": "ticket.updated",
        "ticket": {
            "id": 100_000 + i,
            "subject": subject.to_lowercase(),
            "description": "Hello, I was charged twice this month and would like the extra payment returned. Thanks.",
            "priority": "normal",
        },
        "customer": { "name": "Ada Example", "plan": "team" },
    });
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}
