//! NATS JetStream as an event source (`trigger: { nats: ... }`).
//!
//! One task per charter with a `nats` trigger reads its stream through a durable pull
//! consumer with explicit acknowledgement. Each message goes through the same steps as a
//! webhook delivery after its signature check: parse -> contract -> dedupe -> store. A
//! message is acknowledged only after the store reported the event durable (or recognised
//! it as a duplicate, or kept it as rejected); when the store fails it is negatively
//! acknowledged with a delay, so JetStream delivers it again. Together with the durable
//! consumer (its position survives restarts) and the dedupe key, a restart neither loses nor
//! doubles events: a message stored but not yet acknowledged is delivered again and found to
//! be a duplicate.
//!
//! The dedupe key is the charter's own `dedupe` when it sets one, otherwise the
//! `Nats-Msg-Id` header when the publisher set it, otherwise `<stream>:<stream sequence>`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use charter_core::config::{Dedupe, NatsTrigger};
use charter_core::model::{NewEvent, RejectedPayload};
use charter_store::{IngestOutcome, Store, StoreError};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::project::CharterRuntime;
use crate::{AppState, Runtime, ingest, now_millis};

/// Messages handled together (stored concurrently, so group commit can batch them).
const BATCH: usize = 64;
/// How long JetStream waits for an acknowledgement before delivering a message again.
/// Storing a batch takes milliseconds; the wait mostly matters for messages the server
/// handed to a pull request of a node that has just stopped, which come back after it.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// Delay before a message whose event could not be stored is delivered again.
const NAK_DELAY: Duration = Duration::from_secs(1);
/// First wait before reconnecting after an error; doubled up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Headers kept with an event from NATS (lower-case), besides the charter's dedupe header.
const KEPT_HEADERS: &[&str] = &["content-type", "nats-msg-id", "traceparent"];
/// Header added to every event from NATS: the subject the message was published on.
pub const SUBJECT_HEADER: &str = "nats-subject";
/// Header added to every event from NATS: the message's sequence number in its stream.
pub const SEQUENCE_HEADER: &str = "nats-stream-sequence";

/// Why a consumer session ended (it is started again after a backoff).
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("stream `{stream}`: {message}")]
    Stream { stream: String, message: String },
    #[error("consumer `{durable}`: {message}")]
    Consumer { durable: String, message: String },
    #[error("receiving messages: {0}")]
    Messages(String),
}

/// What became of one message; every outcome but a store failure is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Stored as a new event with this id.
    Stored(Uuid),
    /// The charter already had an event with the same dedupe key.
    Duplicate(Uuid),
    /// Kept as a rejected payload (not JSON, contract violated, dedupe key not computable).
    Rejected(Uuid),
}

/// Whether any charter of the runtime consumes a NATS subject.
pub fn has_sources(runtime: &Runtime) -> bool {
    runtime
        .charters
        .values()
        .any(|c| c.charter.trigger.nats.is_some())
}

/// Consume every charter's NATS trigger until `shutdown` is cancelled. Each charter's
/// consumer reconnects on its own, with exponential backoff, after any error.
pub async fn run<S: Store>(state: AppState<S>, shutdown: CancellationToken) {
    let mut tasks = tokio::task::JoinSet::new();
    for (name, cr) in &state.runtime.charters {
        if let Some(trigger) = &cr.charter.trigger.nats {
            tasks.spawn(consume(
                state.clone(),
                name.clone(),
                trigger.clone(),
                shutdown.clone(),
            ));
        }
    }
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res {
            tracing::error!(error = %e, "a NATS consumer task panicked");
        }
    }
    // Stay up until shutdown even if there was nothing to consume, so the supervisor does
    // not take this for a failure.
    shutdown.cancelled().await;
}

/// Run one charter's consumer: sessions separated by backoff, until shutdown.
async fn consume<S: Store>(
    state: AppState<S>,
    charter: String,
    trigger: NatsTrigger,
    shutdown: CancellationToken,
) {
    let mut backoff = INITIAL_BACKOFF;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        match session(&state, &charter, &trigger, &shutdown, &mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(
                    charter = %charter,
                    stream = %trigger.stream,
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    "NATS source interrupted; reconnecting"
                );
            }
        }
        let wait = jitter(backoff);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Between half and all of `d`, so that many consumers do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Connect, set up the stream and consumer, and handle messages until shutdown (`Ok`) or
/// an error (`Err`, after the messages already received were handled and acknowledged).
async fn session<S: Store>(
    state: &AppState<S>,
    charter: &str,
    trigger: &NatsTrigger,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
) -> Result<(), NatsError> {
    let Some(cr) = state.runtime.charters.get(charter) else {
        return Ok(());
    };
    let servers: Vec<&str> = trigger.url.split(',').map(str::trim).collect();
    let client = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        c = async_nats::ConnectOptions::new()
            .name(format!("charter:{charter}"))
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(servers) => c,
    }
    .map_err(|e| NatsError::Connect {
        url: trigger.url.clone(),
        message: e.to_string(),
    })?;
    let js = jetstream::new(client.clone());
    let stream_err = |e: &dyn std::fmt::Display| NatsError::Stream {
        stream: trigger.stream.clone(),
        message: e.to_string(),
    };
    let stream = if trigger.create_stream {
        js.get_or_create_stream(stream::Config {
            name: trigger.stream.clone(),
            subjects: vec![trigger.subject.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| stream_err(&e))?
    } else {
        js.get_stream(&trigger.stream)
            .await
            .map_err(|e| stream_err(&e))?
    };
    let consumer_err = |e: &dyn std::fmt::Display| NatsError::Consumer {
        durable: trigger.durable.clone(),
        message: e.to_string(),
    };
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &trigger.durable,
            consumer::pull::Config {
                durable_name: Some(trigger.durable.clone()),
                filter_subject: trigger.subject.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| consumer_err(&e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| consumer_err(&e))?
        .ready_chunks(BATCH);
    *backoff = INITIAL_BACKOFF;
    tracing::info!(
        charter,
        stream = %trigger.stream,
        subject = %trigger.subject,
        durable = %trigger.durable,
        "consuming NATS JetStream"
    );

    let result = 'consume: loop {
        // Paused while the charter's backlog is full: the messages wait in the stream.
        while crate::backlog::refusal(state, &cr.charter.name).is_some() {
            tokio::select! {
                _ = shutdown.cancelled() => break 'consume Ok(()),
                _ = tokio::time::sleep(crate::backlog::RETRY_AFTER) => {}
            }
        }
        let chunk = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            chunk = messages.next() => chunk,
        };
        let Some(chunk) = chunk else {
            break Err(NatsError::Messages("the message stream ended".into()));
        };
        let mut batch = Vec::with_capacity(chunk.len());
        let mut failure = None;
        for item in chunk {
            match item {
                Ok(m) => batch.push(m),
                Err(e) => failure = Some(NatsError::Messages(e.to_string())),
            }
        }
        handle_batch(state, cr, trigger, &batch).await;
        // Acknowledgements are plain publishes: make sure they left before going on.
        if let Err(e) = client.flush().await {
            break Err(NatsError::Messages(format!(
                "flushing acknowledgements: {e}"
            )));
        }
        if let Some(e) = failure {
            break Err(e);
        }
    };
    // Best effort: end the pull subscription first, then send what is buffered and
    // disconnect, so the server stops handing messages to this node.
    drop(messages);
    let _ = client.drain().await;
    result
}

/// Store a batch concurrently, then acknowledge each message whose outcome is final and
/// negatively acknowledge (with a delay) those the store failed on.
async fn handle_batch<S: Store>(
    state: &AppState<S>,
    cr: &CharterRuntime,
    trigger: &NatsTrigger,
    batch: &[jetstream::Message],
) {
    // Ids are taken in delivery order so that events keep the stream's order.
    let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
    let outcomes = futures_util::future::join_all(
        batch
            .iter()
            .zip(&ids)
            .map(|(msg, id)| handle_message(state, cr, trigger, msg, *id)),
    )
    .await;
    let charter = &cr.charter.name;
    let mut stored = false;
    for (msg, outcome) in batch.iter().zip(outcomes) {
        let ack = match outcome {
            Ok(handled) => {
                stored |= matches!(handled, Handled::Stored(_));
                msg.ack().await
            }
            Err(e) => {
                tracing::warn!(charter = %charter, error = %e, "storing a NATS message failed; it will be delivered again");
                msg.ack_with(AckKind::Nak(Some(NAK_DELAY))).await
            }
        };
        if let Err(e) = ack {
            // Not fatal: an unacknowledged message is delivered again and deduplicated.
            tracing::warn!(charter = %charter, error = %e, "acknowledging a NATS message failed");
        }
    }
    if stored {
        state.wake.notify_one();
    }
}

/// Turn one message into a stored event (or a kept rejection). `Err` only when the store
/// failed, in which case the message must not be acknowledged.
pub async fn handle_message<S: Store>(
    state: &AppState<S>,
    cr: &CharterRuntime,
    trigger: &NatsTrigger,
    msg: &jetstream::Message,
    id: Uuid,
) -> Result<Handled, StoreError> {
    let charter = &cr.charter;
    let received_at = now_millis();
    let source = format!("nats:{}", msg.subject);
    let sequence = match msg.info() {
        Ok(info) => Some(info.stream_sequence),
        Err(e) => {
            tracing::warn!(charter = %charter.name, error = %e, "a NATS message without JetStream metadata");
            None
        }
    };

    // Every header, lower-case; only some are kept with the event.
    let mut all = BTreeMap::new();
    if let Some(headers) = &msg.headers {
        for (name, values) in headers.iter() {
            if let Some(v) = values.last() {
                all.insert(
                    name.to_string().to_ascii_lowercase(),
                    v.as_str().to_string(),
                );
            }
        }
    }
    let dedupe_header = match &charter.trigger.dedupe {
        Some(Dedupe::Header(h)) => Some(h.as_str()),
        _ => None,
    };
    let mut kept: BTreeMap<String, String> = all
        .iter()
        .filter(|(k, _)| KEPT_HEADERS.contains(&k.as_str()) || Some(k.as_str()) == dedupe_header)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    kept.insert(SUBJECT_HEADER.into(), msg.subject.to_string());
    if let Some(seq) = sequence {
        kept.insert(SEQUENCE_HEADER.into(), seq.to_string());
    }

    let reject = |headers: BTreeMap<String, String>, reasons: Vec<String>| RejectedPayload {
        id,
        charter: charter.name.clone(),
        source: source.clone(),
        received_at,
        headers,
        body: String::from_utf8_lossy(&msg.payload).into_owned(),
        reasons,
    };

    let payload = match ingest::parse_body(&all, &msg.payload) {
        Ok(p) => p,
        Err(reason) => {
            state.store.reject(reject(kept, vec![reason])).await?;
            state.metrics.rejected("malformed");
            return Ok(Handled::Rejected(id));
        }
    };
    if let Some(contract) = &cr.contract {
        let violations = ingest::contract_violations(contract, &payload);
        if !violations.is_empty() {
            state.store.reject(reject(kept, violations)).await?;
            state.metrics.rejected("contract");
            return Ok(Handled::Rejected(id));
        }
    }

    let mut event = NewEvent {
        id,
        charter: charter.name.clone(),
        source: source.clone(),
        event_type: payload
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_string),
        dedupe_key: None,
        received_at,
        headers: kept,
        payload,
    };
    let own = match ingest::dedupe_key(charter, &event, dedupe_header) {
        Ok(k) => k,
        Err(e) => {
            let reasons = vec![e.to_string()];
            state.store.reject(reject(event.headers, reasons)).await?;
            state.metrics.rejected("malformed");
            return Ok(Handled::Rejected(id));
        }
    };
    event.dedupe_key = own
        .or_else(|| all.get("nats-msg-id").cloned())
        .or_else(|| sequence.map(|s| format!("{}:{s}", trigger.stream)));

    match state.store.ingest(event).await? {
        IngestOutcome::Stored(id) => {
            state.metrics.received(&charter.name);
            state.metrics.backlog.stored(&charter.name);
            Ok(Handled::Stored(id))
        }
        IngestOutcome::Duplicate(id) => {
            state.metrics.duplicate(&charter.name);
            Ok(Handled::Duplicate(id))
        }
    }
}
