//! `/api/v1/knowledge/...`: the sources and their index, a refresh on demand, the gaps and
//! a search (what a `retrieve` step would find).

use axum::Json;
use axum::extract::{Path, Query, State};
use charter_core::config::KnowledgeKind;
use charter_store::{GapFilter, GapReason, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::record::audit;
use crate::{AppState, now_millis};

/// The sources with what the index holds of each: documents, and those older than the
/// source's `max_age` (stale), by owner.
pub async fn list_sources<S: Store>(
    State(state): State<AppState<S>>,
    _caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let docs = state.store.list_documents(None).await?;
    let now = now_millis();
    let mut out = Vec::new();
    for (name, s) in &state.runtime.project.knowledge {
        let mine: Vec<_> = docs.iter().filter(|d| &d.source == name).collect();
        let stale: Vec<Value> = match s.max_age {
            Some(max) => {
                let limit = i64::try_from(max.as_millis()).unwrap_or(i64::MAX);
                mine.iter()
                    .filter(|d| now - d.updated_at > limit)
                    .map(|d| json!({"source": d.source, "doc_key": d.doc_key, "title": d.title, "url": d.url, "owner": d.owner, "updated_at": d.updated_at}))
                    .collect()
            }
            None => Vec::new(),
        };
        let kind = match &s.kind {
            KnowledgeKind::Folder { path, .. } => json!({"folder": path}),
            KnowledgeKind::Http { connector, list } => {
                json!({"connector": connector, "path": list.path})
            }
        };
        out.push(json!({
            "name": name,
            "owner": s.owner,
            "kind": kind,
            "refresh_seconds": s.refresh.map(|d| d.as_secs()),
            "max_age_seconds": s.max_age.map(|d| d.as_secs()),
            "documents": mine.len(),
            "last_indexed_at": mine.iter().map(|d| d.indexed_at).max(),
            "stale": stale,
        }));
    }
    Ok(Json(json!({ "sources": out })))
}

/// Read a source again now and re-index what changed (admin; audited).
pub async fn refresh<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(source) = state.runtime.project.knowledge.get(&name).cloned() else {
        return Err(ApiError::NotFound);
    };
    let report = super::refresh_source(&state, &state.executor, &source).await;
    state.metrics.knowledge_refresh(&name, report.is_ok());
    let report = match report {
        Ok(r) => r,
        Err(super::KnowledgeError::Store(e)) => return Err(e.into()),
        // Reading the source failed: the reason names the folder or page, not internals.
        Err(e) => {
            return Err(ApiError::Conflict(format!(
                "the source could not be read: {e}"
            )));
        }
    };
    audit(
        &state,
        &caller.name,
        "knowledge.refresh",
        None,
        Some(name),
        json!({"documents": report.documents, "indexed": report.indexed, "removed": report.removed}),
    )
    .await?;
    Ok(Json(json!(report)))
}

#[derive(Debug, Deserialize)]
pub struct GapsQuery {
    pub charter: Option<String>,
    pub reason: Option<String>,
    pub since: Option<i64>,
    pub limit: Option<usize>,
}

/// Recorded knowledge gaps, newest first (only the charters the caller sees).
pub async fn list_gaps<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Query(q): Query<GapsQuery>,
) -> Result<Json<Value>, ApiError> {
    let reason = match q.reason.as_deref() {
        None => None,
        Some(r) => Some(GapReason::parse(r).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "reason `{r}` is not one of nothing_found, stale, draft_refused"
            ))
        })?),
    };
    let gaps = state
        .store
        .list_gaps(GapFilter {
            charter: q.charter,
            reason,
            since: q.since,
            limit: q.limit.unwrap_or(100).min(10_000),
        })
        .await?;
    let gaps: Vec<_> = gaps
        .into_iter()
        .filter(|g| caller.sees(&g.charter))
        .collect();
    Ok(Json(json!({ "gaps": gaps })))
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    pub q: String,
    /// Comma-separated source names (default: every source).
    pub sources: Option<String>,
    pub top_k: Option<usize>,
    pub min_score: Option<f64>,
}

/// What a `retrieve` step would find for a question.
pub async fn search<S: Store>(
    State(state): State<AppState<S>>,
    _caller: Caller,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    let known = &state.runtime.project.knowledge;
    let sources: Vec<String> = match &q.sources {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => known.keys().cloned().collect(),
    };
    if let Some(bad) = sources.iter().find(|s| !known.contains_key(*s)) {
        return Err(ApiError::BadRequest(format!(
            "knowledge source `{bad}` is not declared"
        )));
    }
    let top_k = q.top_k.unwrap_or(5).clamp(1, 50);
    let min_score = q.min_score.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&min_score) {
        return Err(ApiError::BadRequest(
            "min_score must be between 0 and 1".into(),
        ));
    }
    let (kept, best) =
        super::retrieve::search(&state.store, &sources, &q.q, top_k, min_score).await?;
    let passages: Vec<Value> = kept
        .iter()
        .enumerate()
        .map(|(i, (h, s))| {
            json!({
                "n": i + 1, "source": h.source, "doc_key": h.doc_key, "title": h.title,
                "section": h.heading, "url": h.url, "text": h.text, "score": s,
                "rank": h.rank, "updated_at": h.updated_at, "owner": h.owner,
            })
        })
        .collect();
    Ok(Json(
        json!({ "query": q.q, "best_score": best, "passages": passages }),
    ))
}
