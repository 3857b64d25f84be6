//! Knowledge gaps: recorded in the store, counted, and posted as JSON to the `on_gap`
//! connector of each source concerned (such as a task tracker the source's owner reads).

use std::collections::BTreeSet;
use std::time::Duration;

use charter_connect::HttpExecutor;
use charter_store::{GapReason, KnowledgeGap, Store, StoreError};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{AppState, now_millis};

/// Attempts to post one gap to one target.
const SEND_ATTEMPTS: u32 = 3;

/// A gap as the run sees it.
pub struct GapInput<'a> {
    pub charter: &'a str,
    pub event_id: Uuid,
    pub run_id: Uuid,
    pub context: &'a str,
    pub question: &'a str,
    pub reason: GapReason,
    pub why: String,
    /// The sources searched.
    pub sources: &'a [String],
    /// The sources whose `on_gap` is told.
    pub notify: &'a [String],
    pub found: Value,
}

/// Record a gap, then post it to each concerned source's `on_gap` (a failed post is
/// logged; it does not fail the run, the gap stays in the store).
pub async fn record<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    g: GapInput<'_>,
) -> Result<KnowledgeGap, StoreError> {
    let gap = KnowledgeGap {
        id: Uuid::now_v7(),
        charter: g.charter.to_string(),
        event_id: g.event_id,
        run_id: g.run_id,
        context: g.context.to_string(),
        question: g.question.to_string(),
        reason: g.reason,
        why: g.why,
        sources: g.sources.to_vec(),
        found: g.found,
        created_at: now_millis(),
    };
    state.store.record_gap(gap.clone()).await?;
    state
        .metrics
        .knowledge_gap(&gap.charter, gap.reason.as_str());
    tracing::info!(charter = %gap.charter, reason = gap.reason.as_str(), question = %gap.question, "knowledge gap recorded");
    let mut told = BTreeSet::new();
    for name in g.notify {
        let Some(source) = state.runtime.project.knowledge.get(name) else {
            continue;
        };
        let Some(target) = &source.on_gap else {
            continue;
        };
        if !told.insert((target.connector.clone(), target.path.clone())) {
            continue;
        }
        if let Err(e) = post(state, executor, &gap, name, &source.owner, target).await {
            tracing::warn!(charter = %gap.charter, source = %name, connector = %target.connector, error = %e, "knowledge gap could not be sent");
        }
    }
    Ok(gap)
}

/// The JSON a gap is posted as.
pub fn message(gap: &KnowledgeGap, source: &str, owner: &str) -> Value {
    json!({
        "text": format!(
            "Knowledge gap in `{source}` ({}): \"{}\" ({}). Owner: {owner}.",
            gap.reason.as_str(), gap.question, gap.why
        ),
        "kind": "knowledge_gap",
        "id": gap.id,
        "source": source,
        "owner": owner,
        "charter": gap.charter,
        "event_id": gap.event_id,
        "run_id": gap.run_id,
        "question": gap.question,
        "reason": gap.reason.as_str(),
        "why": gap.why,
        "found": gap.found,
        "created_at": gap.created_at,
    })
}

async fn post<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    gap: &KnowledgeGap,
    source: &str,
    owner: &str,
    target: &charter_core::config::GapTarget,
) -> Result<(), String> {
    let conn = state
        .runtime
        .connections
        .get(&target.connector)
        .and_then(|c| c.http())
        .ok_or_else(|| format!("connector `{}` is not an HTTP connector", target.connector))?;
    let body = message(gap, source, owner);
    let key = format!("knowledge-gap:{}:{source}", gap.id);
    let req = conn
        .prepare_post(target.path.as_deref(), body, &key)
        .map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 1..=SEND_ATTEMPTS {
        let out = conn.attempt(executor, &req).await;
        if out.ok {
            return Ok(());
        }
        last = out
            .error
            .or(out.status.map(|s| format!("HTTP {s}")))
            .unwrap_or_else(|| "unknown error".into());
        if !out.retryable {
            break;
        }
        if attempt < SEND_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
    }
    Err(last)
}
