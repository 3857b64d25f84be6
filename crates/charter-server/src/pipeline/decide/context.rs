//! Records fetched before deciding (`context:` and `retrieve:`), once per run, each kept
//! with the run as a run extra.

use std::time::{Duration, Instant};

use charter_connect::HttpExecutor;
use charter_core::config::{Charter, ContextOnError};
use charter_core::model::NewEvent;
use charter_store::{EXTRA_CONTEXT, RunExtra, Store};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{AppState, now_millis};

/// What [`assemble_context`] fetched.
#[derive(Debug, Default)]
pub struct Assembled {
    /// `context.<name>` values (`null` for a failed fetch that continues).
    pub values: serde_json::Map<String, Value>,
    /// A fetch declared `on_error: retry` failed: the reason and when to try again.
    pub retry: Option<(String, Duration)>,
}

/// Largest context record kept (bytes of the response body).
const CONTEXT_MAX_BYTES: usize = 1024 * 1024;

/// Fetch the charter's `context:` records once for this run, through each connector (its
/// auth, SSRF guard, limits and breaker), each with its timeout. Every fetch is recorded
/// with the run; a failure either leaves `context.<name>` null (`on_error: continue`) or
/// asks for the run to be retried later (`on_error: retry`).
pub async fn assemble_context<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    charter: &Charter,
    event: &NewEvent,
    run_id: Uuid,
    ctx: &Value,
) -> Result<Assembled, charter_store::StoreError> {
    let mut out = Assembled::default();
    for f in &charter.context {
        let started = Instant::now();
        let fetched = fetch_one(state, executor, event, f, ctx).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let body = match &fetched {
            Ok((status, v)) => json!({
                "ok": true, "status": status, "value": v, "duration_ms": duration_ms,
                "connector": f.connector,
            }),
            Err((status, e)) => json!({
                "ok": false, "status": status, "error": e, "duration_ms": duration_ms,
                "connector": f.connector, "on_error": match f.on_error {
                    ContextOnError::Continue => "continue",
                    ContextOnError::Retry => "retry",
                },
            }),
        };
        state
            .store
            .record_run_extra(&RunExtra {
                run_id,
                event_id: event.id,
                kind: EXTRA_CONTEXT.into(),
                name: f.name.clone(),
                body,
                at: now_millis(),
            })
            .await?;
        match fetched {
            Ok((_, v)) => {
                out.values.insert(f.name.clone(), v);
            }
            Err((_, e)) => {
                tracing::warn!(charter = %charter.name, context = %f.name, error = %e, "context fetch failed");
                out.values.insert(f.name.clone(), Value::Null);
                if f.on_error == ContextOnError::Retry && out.retry.is_none() {
                    out.retry = Some((
                        format!(
                            "context `{}` could not be fetched: {e}; retrying in {:?} (on_error: retry)",
                            f.name, f.retry_after
                        ),
                        f.retry_after,
                    ));
                }
            }
        }
    }
    crate::knowledge::retrieve::retrieve_all(
        state,
        executor,
        charter,
        event,
        run_id,
        ctx,
        &mut out.values,
    )
    .await?;
    Ok(out)
}

/// One GET. `Err((status, reason))` on any failure.
async fn fetch_one<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    event: &NewEvent,
    f: &charter_core::config::ContextFetch,
    ctx: &Value,
) -> Result<(u16, Value), (Option<u16>, String)> {
    let conn = state
        .runtime
        .connections
        .get(&f.connector)
        .and_then(|c| c.http())
        .ok_or_else(|| {
            (
                None,
                format!("connector `{}` is not an HTTP connector", f.connector),
            )
        })?;
    let path = f
        .path
        .render(ctx)
        .map_err(|e| (None, format!("`get` could not be rendered: {e}")))?;
    let key = format!("context:{}:{}", event.id, f.name);
    let req = HttpExecutor::prepare(
        Some(&conn.connector),
        "GET",
        &path,
        &[("Accept".to_string(), "application/json".to_string())],
        None,
        Some(f.timeout),
        &key,
    )
    .map_err(|e| (None, e.to_string()))?;
    let got = conn
        .attempt_keeping(executor, &req, CONTEXT_MAX_BYTES)
        .await;
    if !got.ok {
        let why = got
            .error
            .unwrap_or_else(|| format!("answered {}", got.status.unwrap_or(0)));
        return Err((got.status, why));
    }
    if got.body_truncated {
        return Err((
            got.status,
            format!("the answer is larger than {CONTEXT_MAX_BYTES} bytes"),
        ));
    }
    let value = if got.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&got.body)
            .map_err(|e| (got.status, format!("the answer is not JSON: {e}")))?
    };
    Ok((got.status.unwrap_or(200), value))
}
