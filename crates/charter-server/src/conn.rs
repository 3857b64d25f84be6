//! The server's accept loop: HTTP/1.1 connections served by hyper with the limits that
//! `axum::serve` does not set — a deadline for each request head (which also closes an idle
//! keep-alive connection), a deadline for each request body, a cap on connections served at
//! once — and a lingering close, so a client still sending when its answer is final (a 413,
//! a 431) reads that answer instead of a connection reset.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// The connection limits (from `server:` in charter.yaml).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Longest wait for a request's head, from the connection's start or the previous
    /// answer: a slow or silent client, and an idle keep-alive connection, is closed then.
    pub header_timeout: Duration,
    /// Longest time to read one request's body.
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
}

impl ConnLimits {
    pub fn from_settings(net: &charter_core::config::NetSettings) -> ConnLimits {
        ConnLimits {
            header_timeout: net.header_timeout,
            body_timeout: net.body_timeout,
            max_connections: net.max_connections,
        }
    }
}

/// How long a closing connection keeps reading (and dropping) what its client still sends.
const LINGER: Duration = Duration::from_secs(1);
/// How much a lingering close reads at most.
const LINGER_BYTES: usize = 4 << 20;
/// The largest request head read (hyper's buffer; beyond it the answer is 431).
const MAX_HEAD: usize = 64 << 10;

/// Serves `app` on `listener` until `shutdown`, then lets open connections finish their
/// current request (keep-alive is turned off) and returns when all have closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Every connection task holds a receiver; the loop waits for all to be dropped.
    let (close_tx, close_rx) = watch::channel(());
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::error!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let app = app.clone();
        let token = shutdown.clone();
        let close_rx = close_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, app, limits, token).await;
            drop(permit);
            drop(close_rx);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
}

type ServiceFuture = Pin<
    Box<dyn Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send>,
>;

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnLimits,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request =
            request.map(|body| Body::new(DeadlineBody::new(body, limits.body_timeout)));
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        Box::pin(async move { app.call(request).await }) as ServiceFuture
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD);
    let mut conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut shutting_down = false;
    let result = loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
            _ = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    if let Err(e) = &result {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
    let io = conn.into_parts().io.into_inner();
    linger(io).await;
}

/// Closes the sending side, then reads and drops what the client still sends (for up to
/// [`LINGER`] or [`LINGER_BYTES`]), so that the kernel does not answer its unread bytes with
/// a reset that would destroy the final answer before the client reads it.
async fn linger(mut io: TcpStream) {
    if io.shutdown().await.is_err() {
        return;
    }
    let mut buf = [0u8; 8192];
    let mut read = 0usize;
    let _ = tokio::time::timeout(LINGER, async {
        while read < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// Errors of one accepted connection (the peer reset it before we saw it), as opposed to
/// errors of the listener itself.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | BrokenPipe | Interrupted
    )
}

/// Why a request body was not read: its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A request body with a deadline for the whole of it: a body that trickles in, or stops
/// short of its `Content-Length`, ends in [`BodyTimeout`]. The timer is set only if the body
/// is not already there when first read (most webhook bodies arrive with their head).
struct DeadlineBody {
    inner: Incoming,
    limit: Duration,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            limit,
            deadline: Instant::now() + limit,
            sleep: None,
        }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => Poll::Ready(r.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `err` (from reading a body) is, somewhere in its chain, a [`BodyTimeout`].
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cur) = e {
        if cur.is::<BodyTimeout>() {
            return true;
        }
        e = cur.source();
    }
    false
}
