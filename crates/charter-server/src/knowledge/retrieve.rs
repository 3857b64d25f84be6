//! `retrieve` context steps: the question rendered over the event, searched in the index,
//! each hit scored by the share of the question's terms it contains, the best `top_k`
//! above `min_score` numbered `[1]`, `[2]`, ... as `context.<name>.passages`; recorded with
//! the run, and a knowledge gap when nothing qualifies or the best passage is stale.
//! Also the citation check of drafts written from those passages.

use charter_connect::HttpExecutor;
use charter_core::config::{Charter, CitePolicy, RetrieveStep};
use charter_core::knowledge::{CitationError, check_citations, coverage, query_terms};
use charter_core::model::NewEvent;
use charter_store::{EXTRA_CONTEXT, GapReason, PassageHit, RunExtra, Store, StoreError};
use serde_json::{Value, json};
use uuid::Uuid;

use super::gaps::{self, GapInput};
use crate::{AppState, now_millis};

/// Candidates asked of the store per passage kept: the store ranks by its own full-text
/// rank, and a candidate may then fall below `min_score`.
const CANDIDATES_PER_PASSAGE: usize = 4;

/// One passage as the prompt, the templates and reviewers see it.
fn passage_value(n: usize, h: &PassageHit, score: f64) -> Value {
    json!({
        "n": n,
        "source": h.source,
        "doc_key": h.doc_key,
        "title": h.title,
        "section": h.heading,
        "url": h.url,
        "text": h.text,
        "score": (score * 1000.0).round() / 1000.0,
        "updated_at": h.updated_at,
        "owner": h.owner,
    })
}

/// The passages of a question, best first: at most `top_k` with a score of at least
/// `min_score`, plus the best score seen (for the gap's reason).
pub async fn search<S: Store>(
    store: &S,
    sources: &[String],
    question: &str,
    top_k: usize,
    min_score: f64,
) -> Result<(Vec<(PassageHit, f64)>, f64), StoreError> {
    let terms = query_terms(question);
    let hits = store
        .search_passages(
            sources.to_vec(),
            terms.clone(),
            top_k.saturating_mul(CANDIDATES_PER_PASSAGE).max(20),
        )
        .await?;
    let mut best = 0.0f64;
    let mut kept = Vec::new();
    for h in hits {
        let score = coverage(&terms, &h.heading, &h.text);
        best = best.max(score);
        if score >= min_score && kept.len() < top_k {
            kept.push((h, score));
        }
    }
    Ok((kept, best))
}

/// Run one `retrieve` step for this run: its `context.<name>` value. A gap is recorded (and
/// sent to the sources' `on_gap`) when nothing qualifies or the best passage is stale.
pub async fn retrieve_step<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    charter: &Charter,
    event: &NewEvent,
    run_id: Uuid,
    step: &RetrieveStep,
    ctx: &Value,
) -> Result<Value, StoreError> {
    let question = match step.query.render(ctx) {
        Ok(q) => q.trim().to_string(),
        Err(e) => {
            tracing::warn!(charter = %charter.name, context = %step.name, error = %e, "retrieve query could not be rendered");
            String::new()
        }
    };
    let (kept, best) = search(
        &state.store,
        &step.sources,
        &question,
        step.top_k,
        step.min_score,
    )
    .await?;
    let passages: Vec<Value> = kept
        .iter()
        .enumerate()
        .map(|(i, (h, s))| passage_value(i + 1, h, *s))
        .collect();
    let now = now_millis();
    let gap = detect_gap(state, step, &kept, best, now);
    state.metrics.knowledge_retrieval(
        &charter.name,
        if kept.is_empty() {
            "nothing_found"
        } else {
            "found"
        },
    );
    let value = json!({
        "query": question,
        "passages": passages,
        "gap": gap.as_ref().map(|(r, _, _)| r.as_str()),
    });
    state
        .store
        .record_run_extra(&RunExtra {
            run_id,
            event_id: event.id,
            kind: EXTRA_CONTEXT.into(),
            name: step.name.clone(),
            body: json!({
                "ok": true,
                "retrieve": true,
                "query": question,
                "sources": step.sources,
                "top_k": step.top_k,
                "min_score": step.min_score,
                "best_score": best,
                "value": value,
            }),
            at: now,
        })
        .await?;
    if let Some((reason, why, notify)) = gap {
        gaps::record(
            state,
            executor,
            GapInput {
                charter: &charter.name,
                event_id: event.id,
                run_id,
                context: &step.name,
                question: &question,
                reason,
                why,
                sources: &step.sources,
                notify: &notify,
                found: found_summary(&passages),
            },
        )
        .await?;
    }
    Ok(value)
}

/// Why this retrieval is a knowledge gap, if it is: (reason, why, sources to tell).
fn detect_gap<S: Store>(
    state: &AppState<S>,
    step: &RetrieveStep,
    kept: &[(PassageHit, f64)],
    best: f64,
    now: i64,
) -> Option<(GapReason, String, Vec<String>)> {
    if kept.is_empty() {
        let why = if best > 0.0 {
            format!(
                "no passage of {} reached min_score {} (best {:.2})",
                step.sources.join(", "),
                step.min_score,
                best
            )
        } else {
            format!(
                "nothing in {} matched the question",
                step.sources.join(", ")
            )
        };
        Some((GapReason::NothingFound, why, step.sources.clone()))
    } else {
        let (top, _) = &kept[0];
        let max_age = state
            .runtime
            .project
            .knowledge
            .get(&top.source)
            .and_then(|s| s.max_age);
        match max_age {
            Some(max)
                if now - top.updated_at > i64::try_from(max.as_millis()).unwrap_or(i64::MAX) =>
            {
                let days = (now - top.updated_at) / 86_400_000;
                Some((
                    GapReason::Stale,
                    format!(
                        "the best passage, from \"{}\" ({}), was last updated {days} days ago, longer than the source's max_age of {} days",
                        top.title,
                        top.source,
                        max.as_secs() / 86_400
                    ),
                    vec![top.source.clone()],
                ))
            }
            _ => None,
        }
    }
}

/// What a gap keeps of the passages: where they came from, not their text.
pub fn found_summary(passages: &[Value]) -> Value {
    Value::Array(
        passages
            .iter()
            .map(|p| {
                json!({
                    "n": p["n"], "source": p["source"], "doc_key": p["doc_key"],
                    "title": p["title"], "section": p["section"], "url": p["url"],
                    "score": p["score"], "updated_at": p["updated_at"],
                })
            })
            .collect(),
    )
}

/// Run every `retrieve` step of the charter into `values` (`context.<name>`).
pub async fn retrieve_all<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    charter: &Charter,
    event: &NewEvent,
    run_id: Uuid,
    ctx: &Value,
    values: &mut serde_json::Map<String, Value>,
) -> Result<(), StoreError> {
    for step in &charter.retrieve {
        let v = retrieve_step(state, executor, charter, event, run_id, step, ctx).await?;
        values.insert(step.name.clone(), v);
    }
    Ok(())
}

/// The passages of `policy.context` in a run's evaluation context.
pub fn retrieved_passages<'a>(ctx: &'a Value, policy: &CitePolicy) -> &'a [Value] {
    ctx["context"][&policy.context]["passages"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

/// Check a draft against the passages it was written from: the cited numbers, or why it
/// is refused.
pub fn check_draft(
    ctx: &Value,
    policy: &CitePolicy,
    draft: &str,
) -> Result<Vec<usize>, CitationError> {
    let n = retrieved_passages(ctx, policy).len();
    check_citations(draft, n, policy.every_sentence)
}

/// The cited passages of a draft, as `[{n, title, section, url, source, doc_key}]`.
pub fn cited_sources(ctx: &Value, policy: &CitePolicy, cited: &[usize]) -> Value {
    let passages = retrieved_passages(ctx, policy);
    Value::Array(
        cited
            .iter()
            .filter_map(|n| passages.get(n.checked_sub(1)?))
            .map(|p| {
                json!({
                    "n": p["n"], "title": p["title"], "section": p["section"], "url": p["url"],
                    "source": p["source"], "doc_key": p["doc_key"], "text": p["text"],
                })
            })
            .collect(),
    )
}

/// The note sent with the one repair request of a refused draft.
pub fn repair_note(err: &CitationError, retrieved: usize) -> String {
    format!(
        "Your previous answer was refused: {err}. Write the answer again using only the numbered passages [1] to [{retrieved}] above, and put the number of the passage that supports each sentence in square brackets after it, such as [1]."
    )
}
