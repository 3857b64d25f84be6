//! The timing sink of the open-stream benchmark: the action's target, on 127.0.0.1, that
//! records when each ticket's update arrived (`PUT /api/tickets/{id}`, any method), so a
//! job's cycle is the sink's arrival time minus the webhook's slot in the schedule. It
//! answers at once with a small JSON; it does not dedupe (a repeated id is counted).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::any;
use tokio_util::sync::CancellationToken;

/// Arrivals at the sink, as (ticket id, ns after the epoch).
#[derive(Clone)]
pub struct TimingSink {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: Instant,
    arrivals: Mutex<Vec<(u64, u64)>>,
    count: AtomicU64,
}

impl TimingSink {
    /// A sink whose times are measured from `epoch`.
    pub fn new(epoch: Instant) -> TimingSink {
        TimingSink {
            inner: Arc::new(Inner {
                epoch,
                arrivals: Mutex::new(Vec::new()),
                count: AtomicU64::new(0),
            }),
        }
    }

    /// Serve on `addr` until `shutdown`; returns the bound address.
    pub async fn start(
        &self,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = Router::new()
            .route("/api/tickets/{id}", any(arrive))
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
        Ok(bound)
    }

    /// Requests received so far.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    /// Take the arrivals recorded so far (the sink starts over).
    pub fn take(&self) -> Vec<(u64, u64)> {
        match self.inner.arrivals.lock() {
            Ok(mut a) => std::mem::take(&mut *a),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    fn record(&self, id: u64) {
        let ns = u64::try_from(self.inner.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        match self.inner.arrivals.lock() {
            Ok(mut a) => a.push((id, ns)),
            Err(poisoned) => poisoned.into_inner().push((id, ns)),
        }
        self.inner.count.fetch_add(1, Ordering::Relaxed);
    }
}

async fn arrive(
    State(sink): State<TimingSink>,
    Path(id): Path<u64>,
) -> (StatusCode, [(&'static str, &'static str); 1], &'static str) {
    sink.record(id);
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        "{\"ok\":true}",
    )
}
