//! The knowledge index and its gaps: documents of the project's knowledge sources, cut
//! into passages and indexed for full-text search (SQLite FTS5, PostgreSQL `tsvector` with
//! a GIN index), and the knowledge gaps runs record when an answer is missing or stale.

use std::future::Future;

use charter_core::model::UnixMillis;
use uuid::Uuid;

use crate::Result;

/// One document of a knowledge source as indexed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnowledgeDoc {
    pub source: String,
    /// The document's key within its source: its path in a folder, its id in an API.
    pub doc_key: String,
    pub title: String,
    pub url: Option<String>,
    /// The source's owner when the document was indexed.
    pub owner: String,
    /// When the document itself last changed (file time, `updated_at` of the article).
    pub updated_at: UnixMillis,
    /// A hash of what was indexed (title, URL, passages): the same hash is not re-indexed.
    pub content_hash: String,
    /// When it was (re-)indexed.
    pub indexed_at: UnixMillis,
}

/// A passage to index: its place in the document, the heading path above it, its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPassage {
    pub ordinal: u32,
    pub heading: String,
    pub text: String,
}

/// What [`KnowledgeStore::put_document`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The stored document had the same content hash; its passages were left alone (its
    /// `updated_at`, owner and `indexed_at` are brought up to date).
    Unchanged,
    /// The document's old passages were replaced by these.
    Indexed { passages: usize },
}

/// A passage found by [`KnowledgeStore::search_passages`], with its document.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PassageHit {
    pub source: String,
    pub doc_key: String,
    pub title: String,
    pub url: Option<String>,
    pub owner: String,
    pub updated_at: UnixMillis,
    pub ordinal: u32,
    pub heading: String,
    pub text: String,
    /// The backend's own full-text rank, higher is better (SQLite: −bm25; PostgreSQL:
    /// `ts_rank_cd`). Comparable only within one search.
    pub rank: f64,
}

/// Why a run recorded a knowledge gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// No passage reached the retrieve step's `min_score`.
    NothingFound,
    /// The best passage's document is older than its source's `max_age`.
    Stale,
    /// The draft citing the passages was refused (after its repair).
    DraftRefused,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::NothingFound => "nothing_found",
            GapReason::Stale => "stale",
            GapReason::DraftRefused => "draft_refused",
        }
    }

    pub fn parse(s: &str) -> Option<GapReason> {
        Some(match s {
            "nothing_found" => GapReason::NothingFound,
            "stale" => GapReason::Stale,
            "draft_refused" => GapReason::DraftRefused,
            _ => return None,
        })
    }
}

/// A question the approved knowledge could not answer well.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnowledgeGap {
    pub id: Uuid,
    pub charter: String,
    pub event_id: Uuid,
    pub run_id: Uuid,
    /// The `retrieve` context step.
    pub context: String,
    /// The query as rendered.
    pub question: String,
    pub reason: GapReason,
    /// What was wrong, in words.
    pub why: String,
    /// The knowledge sources searched.
    pub sources: Vec<String>,
    /// What was found: `[{source, doc_key, title, section, url, score, updated_at}]`.
    pub found: serde_json::Value,
    pub created_at: UnixMillis,
}

/// Filters for listing gaps (newest first).
#[derive(Debug, Clone, Default)]
pub struct GapFilter {
    pub charter: Option<String>,
    pub reason: Option<GapReason>,
    /// Only gaps recorded at or after this instant.
    pub since: Option<UnixMillis>,
    /// At most this many (default 100 when 0).
    pub limit: usize,
}

/// The knowledge index and the gaps, shared by every node of a store.
pub trait KnowledgeStore: Send + Sync + 'static {
    /// Index one document: unless the stored copy has the same `content_hash`, its old
    /// passages are deleted and these inserted, in one transaction (a search sees the old
    /// passages or the new ones, never both or neither).
    fn put_document(
        &self,
        doc: KnowledgeDoc,
        passages: Vec<NewPassage>,
    ) -> impl Future<Output = Result<PutOutcome>> + Send;

    /// Delete the documents of `source` (and their passages) whose keys are not in `keep`;
    /// returns how many were deleted. A refresh calls it with every key it read.
    fn prune_documents(
        &self,
        source: &str,
        keep: Vec<String>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// The best passages of `sources` for `terms` (any term may match), best first, at most
    /// `limit`. `terms` are plain words (see `charter_core::knowledge::query_terms`); no
    /// query syntax is read from them.
    fn search_passages(
        &self,
        sources: Vec<String>,
        terms: Vec<String>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<PassageHit>>> + Send;

    /// The passages of one document, in order.
    fn document_passages(
        &self,
        source: String,
        doc_key: String,
    ) -> impl Future<Output = Result<Vec<NewPassage>>> + Send;

    /// The indexed documents, of one source or all, by source and key.
    fn list_documents(
        &self,
        source: Option<String>,
    ) -> impl Future<Output = Result<Vec<KnowledgeDoc>>> + Send;

    /// Store a gap (durable on return).
    fn record_gap(&self, gap: KnowledgeGap) -> impl Future<Output = Result<()>> + Send;

    /// Gaps, newest first.
    fn list_gaps(
        &self,
        filter: GapFilter,
    ) -> impl Future<Output = Result<Vec<KnowledgeGap>>> + Send;
}
