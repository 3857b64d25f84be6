//! Validated configuration of approved knowledge: the sources of `knowledge:` in
//! charter.yaml and the `retrieve` context steps of charters.

use std::time::Duration;

use crate::knowledge::DocFormat;
use crate::template::Template;

/// One knowledge source (`knowledge: { <name>: ... }`).
#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeSource {
    pub name: String,
    /// Who answers for the content (gaps and stale documents are reported to them).
    pub owner: String,
    pub kind: KnowledgeKind,
    /// Read again this often (`None`: at start and on demand only).
    pub refresh: Option<Duration>,
    /// A best passage older than this (by its document's `updated_at`) is a stale gap.
    pub max_age: Option<Duration>,
    /// Most words in one passage.
    pub chunk_words: usize,
    /// Where gaps are sent (an `http` connector and an optional path), as JSON.
    pub on_gap: Option<GapTarget>,
}

/// Where a source's documents come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KnowledgeKind {
    /// A folder of the project (relative path, `/` separators), read recursively.
    Folder {
        path: String,
        /// Public URL of a document: `{path}` is replaced by its path in the folder,
        /// without extension.
        url: Option<String>,
    },
    /// A paginated JSON list read through an `http` connector.
    Http {
        connector: String,
        list: KnowledgeList,
    },
}

/// How to read a paginated list of documents. Fields are JSON pointers into one item.
#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeList {
    /// Path of the first page under the connector's base URL.
    pub path: String,
    /// Pointer to the array of items in a page (`/articles`; `""` for a page that is an array).
    pub items: String,
    /// Pointer to the next page (an absolute URL under the connector or a path), if paginated.
    pub next: Option<String>,
    pub id: String,
    pub title: String,
    pub body: String,
    pub url: Option<String>,
    pub updated_at: Option<String>,
    pub format: DocFormat,
    /// Most pages read in one refresh.
    pub max_pages: usize,
}

/// `on_gap: connector[:/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapTarget {
    pub connector: String,
    pub path: Option<String>,
}

/// A known articles API, as a list description.
pub struct KnowledgePreset {
    pub name: &'static str,
    pub system: &'static str,
    pub list: fn() -> KnowledgeList,
}

/// The knowledge presets.
pub const KNOWLEDGE_PRESETS: &[KnowledgePreset] = &[KnowledgePreset {
    name: "zendesk_help_center",
    system: "Zendesk Help Center articles API (`/api/v2/help_center/articles.json`, `next_page`)",
    list: zendesk_help_center,
}];

fn zendesk_help_center() -> KnowledgeList {
    KnowledgeList {
        path: "/api/v2/help_center/articles.json?per_page=30".into(),
        items: "/articles".into(),
        next: Some("/next_page".into()),
        id: "/id".into(),
        title: "/title".into(),
        body: "/body".into(),
        url: Some("/html_url".into()),
        updated_at: Some("/updated_at".into()),
        format: DocFormat::Html,
        max_pages: 100,
    }
}

/// A `retrieve` context step: passages searched in knowledge sources before deciding,
/// exposed as `context.<name>` (`{query, passages: [{n, title, section, url, text, score,
/// ...}]}`) and recorded with the run.
#[derive(Debug, Clone)]
pub struct RetrieveStep {
    pub name: String,
    /// The question, rendered over the event.
    pub query: Template,
    pub sources: Vec<String>,
    pub top_k: usize,
    /// Least [`crate::knowledge::coverage`] a passage needs (0 to 1).
    pub min_score: f64,
}

/// `draft.cite`: the draft must cite the passages of a `retrieve` context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CitePolicy {
    /// The `retrieve` context's name.
    pub context: String,
    /// Every sentence must carry a citation.
    pub every_sentence: bool,
}
