//! Approved knowledge: reading the project's knowledge sources (a folder of the project, or
//! a paginated list through an `http` connector, such as the Zendesk Help Center articles
//! API), cutting documents into passages and indexing them in the store, on a schedule and
//! on demand; retrieval for `retrieve` context steps ([`retrieve`]); knowledge gaps
//! ([`gaps`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use charter_connect::HttpExecutor;
use charter_core::config::{KnowledgeKind, KnowledgeList, KnowledgeSource};
use charter_core::knowledge::{DocFormat, chunk, parse_document};
use charter_store::{KnowledgeDoc, KnowledgeStore, NewPassage, PutOutcome, Store};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::{AppState, now_millis};

pub mod api;
pub mod cite;
pub mod gaps;
pub mod retrieve;
pub mod summary;

/// Largest document file read from a knowledge folder.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Most files read from one knowledge folder.
const MAX_FILES: usize = 20_000;

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("knowledge source `{0}` is not declared in charter.yaml")]
    UnknownSource(String),
    #[error("folder `{path}` could not be read: {reason}")]
    Folder { path: String, reason: String },
    #[error("connector `{0}` is not an HTTP connector")]
    Connector(String),
    #[error("page {page} of `{path}`: {reason}")]
    Page {
        page: usize,
        path: String,
        reason: String,
    },
    #[error("storing the index failed: {0}")]
    Store(#[from] charter_store::StoreError),
}

/// A document as read from its source, before chunking.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDoc {
    pub key: String,
    pub title: String,
    pub url: Option<String>,
    pub updated_at: i64,
    pub format: DocFormat,
    pub text: String,
}

/// What one refresh of a source did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RefreshReport {
    pub source: String,
    pub documents: usize,
    pub indexed: usize,
    pub unchanged: usize,
    pub passages: usize,
    pub removed: u64,
}

/// Read every document of `source`, index the changed ones and drop the ones gone.
pub async fn refresh_source<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    source: &KnowledgeSource,
) -> Result<RefreshReport, KnowledgeError> {
    let docs = match &source.kind {
        KnowledgeKind::Folder { path, url } => {
            let root = state.runtime.root.join(path);
            let (path, url) = (path.clone(), url.clone());
            tokio::task::spawn_blocking(move || read_folder(&root, &path, url.as_deref()))
                .await
                .map_err(|e| KnowledgeError::Folder {
                    path: String::new(),
                    reason: e.to_string(),
                })??
        }
        KnowledgeKind::Http { connector, list } => {
            read_list(state, executor, connector, list).await?
        }
    };
    index_documents(&state.store, source, docs, now_millis()).await
}

/// Chunk and index `docs` as the whole content of `source` (documents not among them are
/// removed from the index).
pub async fn index_documents<S: KnowledgeStore>(
    store: &S,
    source: &KnowledgeSource,
    docs: Vec<SourceDoc>,
    now: i64,
) -> Result<RefreshReport, KnowledgeError> {
    let mut report = RefreshReport {
        source: source.name.clone(),
        ..RefreshReport::default()
    };
    let mut keys = Vec::with_capacity(docs.len());
    for d in docs {
        let parsed = parse_document(d.format, &d.text);
        let passages: Vec<NewPassage> = chunk(&parsed.sections, source.chunk_words)
            .into_iter()
            .map(|p| NewPassage {
                ordinal: p.ordinal,
                heading: p.heading,
                text: p.text,
            })
            .collect();
        let title = if d.title.trim().is_empty() {
            parsed.title.unwrap_or_else(|| d.key.clone())
        } else {
            d.title.clone()
        };
        let mut h = Sha256::new();
        h.update(title.as_bytes());
        h.update([0]);
        h.update(d.url.as_deref().unwrap_or_default().as_bytes());
        for p in &passages {
            h.update([0]);
            h.update(p.heading.as_bytes());
            h.update([1]);
            h.update(p.text.as_bytes());
        }
        let doc = KnowledgeDoc {
            source: source.name.clone(),
            doc_key: d.key.clone(),
            title,
            url: d.url,
            owner: source.owner.clone(),
            updated_at: d.updated_at,
            content_hash: hex::encode(h.finalize()),
            indexed_at: now,
        };
        keys.push(d.key);
        report.documents += 1;
        report.passages += passages.len();
        match store.put_document(doc, passages).await? {
            PutOutcome::Unchanged => report.unchanged += 1,
            PutOutcome::Indexed { .. } => report.indexed += 1,
        }
    }
    report.removed = store.prune_documents(&source.name, keys).await?;
    Ok(report)
}

/// The documents of a knowledge folder (recursively; Markdown, HTML and text files), keyed
/// by their path inside the folder; the file's modification time is `updated_at`.
pub fn read_folder(
    root: &Path,
    shown: &str,
    url: Option<&str>,
) -> Result<Vec<SourceDoc>, KnowledgeError> {
    let err = |reason: String| KnowledgeError::Folder {
        path: shown.to_string(),
        reason,
    };
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| err(e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| err(e.to_string()))?;
            let kind = entry.file_type().map_err(|e| err(e.to_string()))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
                if files.len() > MAX_FILES {
                    return Err(err(format!("more than {MAX_FILES} files")));
                }
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(root)
            .map_err(|e| err(e.to_string()))?
            .to_string_lossy()
            .replace('\\', "/");
        let Some(format) = DocFormat::of_path(&rel) else {
            continue;
        };
        let meta = std::fs::metadata(&path).map_err(|e| err(format!("{rel}: {e}")))?;
        if meta.len() > MAX_FILE_BYTES {
            tracing::warn!(folder = shown, file = %rel, bytes = meta.len(), "knowledge file too large; skipped");
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| err(format!("{rel}: {e}")))?;
        let updated_at = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let stem = rel.rsplit_once('.').map_or(rel.as_str(), |(s, _)| s);
        out.push(SourceDoc {
            url: url.map(|u| u.replace("{path}", stem)),
            key: rel.clone(),
            title: String::new(),
            updated_at,
            format,
            text,
        });
    }
    Ok(out)
}

/// Read a paginated list through an `http` connector.
async fn read_list<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    connector: &str,
    list: &KnowledgeList,
) -> Result<Vec<SourceDoc>, KnowledgeError> {
    let conn = state
        .runtime
        .connections
        .get(connector)
        .and_then(|c| c.http())
        .ok_or_else(|| KnowledgeError::Connector(connector.to_string()))?;
    let mut out = Vec::new();
    let mut path = list.path.clone();
    for page in 1..=list.max_pages {
        let page_err = |reason: String| KnowledgeError::Page {
            page,
            path: path.clone(),
            reason,
        };
        let key = format!("knowledge:{connector}:{page}");
        let req = HttpExecutor::prepare(
            Some(&conn.connector),
            "GET",
            &path,
            &[("Accept".to_string(), "application/json".to_string())],
            None,
            Some(Duration::from_secs(30)),
            &key,
        )
        .map_err(|e| page_err(e.to_string()))?;
        let got = conn
            .attempt_keeping(executor, &req, charter_connect::BODY_READ_LIMIT)
            .await;
        if !got.ok {
            let why = got
                .error
                .unwrap_or_else(|| format!("answered {}", got.status.unwrap_or(0)));
            return Err(page_err(why));
        }
        if got.body_truncated {
            return Err(page_err(format!(
                "the page is larger than {} bytes; ask for fewer items per page",
                charter_connect::BODY_READ_LIMIT
            )));
        }
        let body: Value = serde_json::from_slice(&got.body)
            .map_err(|e| page_err(format!("the answer is not JSON: {e}")))?;
        out.extend(list_items(list, &body).map_err(page_err)?);
        let next = list
            .next
            .as_deref()
            .and_then(|p| body.pointer(p))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        match next {
            None => return Ok(out),
            Some(n) => path = next_path(&conn.connector.base_url, n).map_err(page_err)?,
        }
    }
    tracing::warn!(
        connector,
        pages = list.max_pages,
        "knowledge list has more pages than max_pages; the rest is not read"
    );
    Ok(out)
}

/// The documents of one page.
pub fn list_items(list: &KnowledgeList, page: &Value) -> Result<Vec<SourceDoc>, String> {
    let items = page
        .pointer(&list.items)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no array at `{}`", list.items))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let text_at = |p: &str| -> Option<String> {
            match item.pointer(p)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let key =
            text_at(&list.id).ok_or_else(|| format!("item {i} has no id at `{}`", list.id))?;
        let body = text_at(&list.body).unwrap_or_default();
        let updated_at = list
            .updated_at
            .as_deref()
            .and_then(|p| item.pointer(p))
            .and_then(time_of)
            .unwrap_or(0);
        out.push(SourceDoc {
            title: text_at(&list.title).unwrap_or_default(),
            url: list.url.as_deref().and_then(text_at),
            key,
            updated_at,
            format: list.format,
            text: body,
        });
    }
    Ok(out)
}

/// Unix milliseconds of an RFC 3339 text or a number of Unix seconds.
fn time_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().map(|s| s.saturating_mul(1000)),
        Value::String(s) => s
            .parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_millisecond()),
        _ => None,
    }
}

/// The next page as a target for the connector: a path as is, an absolute URL only when it
/// lies under the connector's base URL (a list cannot lead the reader elsewhere).
pub fn next_path(base_url: &str, next: &str) -> Result<String, String> {
    if next.starts_with('/') && !next.starts_with("//") {
        return Ok(next.to_string());
    }
    let base = base_url.trim().trim_end_matches('/');
    match next.strip_prefix(base) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') => {
            Ok(if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            })
        }
        _ => Err(format!(
            "the next page `{next}` is not under the connector's base URL `{base}`"
        )),
    }
}

/// Refresh every source whose time has come, at start and then on each source's `refresh`
/// interval, until the token is cancelled. A failed refresh is logged and tried again at the
/// next interval (the index keeps what it had).
pub async fn run<S: Store>(
    state: AppState<S>,
    executor: Arc<HttpExecutor>,
    token: CancellationToken,
) {
    let sources: Vec<KnowledgeSource> = state.runtime.project.knowledge.values().cloned().collect();
    let mut due: Vec<tokio::time::Instant> = vec![tokio::time::Instant::now(); sources.len()];
    loop {
        let now = tokio::time::Instant::now();
        for (i, s) in sources.iter().enumerate() {
            if due[i] > now {
                continue;
            }
            refresh_logged(&state, &executor, s).await;
            due[i] = match s.refresh {
                Some(every) => tokio::time::Instant::now() + every,
                // Read once at start; later only on demand.
                None => tokio::time::Instant::now() + Duration::from_secs(86_400 * 365),
            };
        }
        let Some(next) = due.iter().min().copied() else {
            return token.cancelled().await;
        };
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

/// One refresh, logged and counted.
pub async fn refresh_logged<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    s: &KnowledgeSource,
) -> Option<RefreshReport> {
    match refresh_source(state, executor, s).await {
        Ok(r) => {
            state.metrics.knowledge_refresh(&s.name, true);
            tracing::info!(source = %s.name, documents = r.documents, indexed = r.indexed, unchanged = r.unchanged, removed = r.removed, passages = r.passages, "knowledge source refreshed");
            Some(r)
        }
        Err(e) => {
            state.metrics.knowledge_refresh(&s.name, false);
            tracing::warn!(source = %s.name, error = %e, "knowledge source could not be refreshed");
            None
        }
    }
}

/// Whether the project declares knowledge sources (the refresh task runs only then).
pub fn has_sources(runtime: &crate::Runtime) -> bool {
    !runtime.project.knowledge.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_pages_stay_under_the_base_url() {
        let base = "https://acme.zendesk.com/";
        assert_eq!(
            next_path(
                base,
                "https://acme.zendesk.com/api/v2/help_center/articles.json?page=2"
            ),
            Ok("/api/v2/help_center/articles.json?page=2".to_string())
        );
        assert_eq!(next_path(base, "/p?page=3"), Ok("/p?page=3".to_string()));
        assert!(next_path(base, "https://evil.example/api").is_err());
        assert!(next_path(base, "https://acme.zendesk.com.evil.example/x").is_err());
        assert!(next_path(base, "//evil.example/x").is_err());
    }

    #[test]
    fn list_items_read_ids_times_and_urls() {
        let list = (charter_core::config::KNOWLEDGE_PRESETS[0].list)();
        let page = serde_json::json!({"articles": [
            {"id": 7, "title": "Reset", "body": "<p>Click reset.</p>", "html_url": "https://h/7",
             "updated_at": "2024-01-02T03:04:05Z"},
            {"id": "8", "title": "B", "body": null}
        ], "next_page": null});
        let docs = list_items(&list, &page).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].key, "7");
        assert_eq!(docs[0].url.as_deref(), Some("https://h/7"));
        assert_eq!(docs[0].updated_at, 1_704_164_645_000);
        assert_eq!(docs[1].text, "");
        assert!(list_items(&list, &serde_json::json!({"x": 1})).is_err());
    }
}
