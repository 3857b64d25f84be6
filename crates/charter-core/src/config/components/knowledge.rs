//! Approved knowledge, raw, typed and checked: `knowledge:` sources in charter.yaml,
//! `retrieve:` context steps and `draft.cite` in charters.
//!
//! ```yaml
//! # charter.yaml
//! knowledge:
//!   handbook: { owner: docs@acme.example, folder: knowledge/handbook, refresh: 10m, max_age: 180d }
//!   helpcenter: { owner: support-ops@acme.example, connector: zendesk, preset: zendesk_help_center }
//! # charters/answer.yaml
//! context:
//!   kb: { retrieve: { query: "{{ payload.question }}", sources: [handbook], top_k: 4, min_score: 0.3 } }
//! actions:
//!   reply: { draft: { prompt: prompts/answer.md, cite: kb, cite_every_sentence: true }, ... }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use crate::config::components::charter::CharterChecker;
use crate::config::components::names::Scope;
use crate::config::components::project::ProjectChecker;
use crate::config::diag::{Check, list, valid_name};
use crate::config::raw::{Entries, RawContextFetch, RawDraft, S, Scalar};
use crate::knowledge::DocFormat;
use crate::template::Template;

/// A knowledge source (`knowledge:` in charter.yaml): a folder in the project, or a list
/// read through an `http` connector (a `preset` or a `list:` description).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKnowledge {
    pub owner: Option<S<String>>,
    pub folder: Option<S<String>>,
    pub url: Option<S<String>>,
    pub connector: Option<S<String>>,
    pub preset: Option<S<String>>,
    pub list: Option<S<RawKnowledgeList>>,
    pub refresh: Option<S<Scalar>>,
    pub max_age: Option<S<Scalar>>,
    pub chunk_words: Option<S<i64>>,
    pub on_gap: Option<S<String>>,
}

/// `list:` of a knowledge source: a paginated JSON list of documents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKnowledgeList {
    pub path: Option<S<String>>,
    pub items: Option<S<String>>,
    pub next: Option<S<String>>,
    pub id: Option<S<String>>,
    pub title: Option<S<String>>,
    pub body: Option<S<String>>,
    pub url: Option<S<String>>,
    pub updated_at: Option<S<String>>,
    pub format: Option<S<String>>,
    pub max_pages: Option<S<i64>>,
}

/// `retrieve:` in a context entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetrieve {
    pub query: Option<S<String>>,
    pub sources: Option<S<Vec<S<String>>>>,
    pub top_k: Option<S<i64>>,
    pub min_score: Option<S<f64>>,
}

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

/// Default words per passage.
const DEFAULT_CHUNK_WORDS: usize = 120;

/// Default passages kept by a `retrieve` step.
const DEFAULT_TOP_K: usize = 4;

/// Default least coverage of a passage.
const DEFAULT_MIN_SCORE: f64 = 0.3;

/// Default most pages of a list read in one refresh.
const DEFAULT_MAX_PAGES: usize = 100;

impl ProjectChecker<'_> {
    /// `knowledge:`; sources with a problem are reported and left out.
    pub(crate) fn knowledge_sources(
        &mut self,
        raw: Option<S<Entries<S<RawKnowledge>>>>,
        connector_types: &BTreeMap<String, String>,
    ) -> BTreeMap<String, KnowledgeSource> {
        let mut out = BTreeMap::new();
        let Some(raw) = raw else {
            return out;
        };
        for (name, entry) in raw.value.0 {
            if !valid_name(&name.value) {
                self.err(
                    name.referenced,
                    format!(
                        "knowledge source name `{}` is not allowed; expected lower-case letters, digits, `-` and `_`",
                        name.value
                    ),
                );
                continue;
            }
            if let Some(s) = self.knowledge_source(&name.value, entry, connector_types) {
                out.insert(name.value.clone(), s);
            }
        }
        out
    }

    fn knowledge_source(
        &mut self,
        name: &str,
        raw: S<RawKnowledge>,
        connector_types: &BTreeMap<String, String>,
    ) -> Option<KnowledgeSource> {
        let at = raw.referenced;
        let k = raw.value;
        let owner = self.required_text(
            &k.owner,
            at,
            "owner",
            "who answers for this source's content, such as `docs-team@acme.example`",
        );
        let kind = match (&k.folder, &k.connector) {
            (Some(f), None) => {
                for (key, v) in [("preset", k.preset.is_some()), ("list", k.list.is_some())] {
                    if v {
                        self.err(
                            at,
                            format!("knowledge `{name}`: `{key}` applies to a `connector` source, not to a `folder`"),
                        );
                    }
                }
                self.folder_source(name, f, &k.url)
            }
            (None, Some(c)) => self.http_source(name, c, &k, connector_types),
            (Some(_), Some(c)) => {
                self.err(
                    c.referenced,
                    format!("knowledge `{name}` has both `folder` and `connector`; a source reads one of them"),
                );
                None
            }
            (None, None) => {
                self.err(
                    at,
                    format!("knowledge `{name}` has neither `folder` (Markdown/HTML/text files in the project, such as `folder: knowledge/handbook`) nor `connector` (with `preset: zendesk_help_center` or a `list:`)"),
                );
                None
            }
        };
        // Outer `None`: an error (reported); inner `None`: not set.
        let refresh = match &k.refresh {
            None => Some(None),
            Some(r) => self.duration(r, "refresh").map(Some),
        };
        if let (Some(Some(d)), Some(r)) = (refresh, &k.refresh)
            && d.as_secs() < 10
        {
            self.err(
                r.referenced,
                "`refresh` is shorter than 10s; a source is read whole at each refresh, give at least 10s (10m is common)",
            );
        }
        let max_age = match &k.max_age {
            None => Some(None),
            Some(r) => self.duration(r, "max_age").map(Some),
        };
        let chunk_words = match &k.chunk_words {
            Some(n) => match self.positive(n, "chunk_words") {
                Some(w) if w < 20 => {
                    self.err(
                        n.referenced,
                        format!("`chunk_words` is {w}; a passage needs at least 20 words to be worth citing"),
                    );
                    None
                }
                other => other,
            },
            None => Some(DEFAULT_CHUNK_WORDS),
        };
        let on_gap = match &k.on_gap {
            None => Some(None),
            Some(t) => self.gap_target(name, t, connector_types).map(Some),
        };
        Some(KnowledgeSource {
            name: name.to_string(),
            owner: owner?,
            kind: kind?,
            refresh: refresh?,
            max_age: max_age?,
            chunk_words: chunk_words?,
            on_gap: on_gap?,
        })
    }

    fn folder_source(
        &mut self,
        name: &str,
        f: &S<String>,
        url: &Option<S<String>>,
    ) -> Option<KnowledgeKind> {
        let path = f.value.trim().trim_end_matches('/').to_string();
        if path.is_empty()
            || path.starts_with('/')
            || path.split('/').any(|seg| seg == ".." || seg.is_empty())
        {
            self.err(
                f.referenced,
                format!("knowledge `{name}`: `folder` is `{}`; expected a folder inside the project, such as `knowledge/handbook`", f.value),
            );
            return None;
        }
        let url = match url {
            Some(u) => Some(self.absolute_url(u, "url")?),
            None => None,
        };
        Some(KnowledgeKind::Folder { path, url })
    }

    fn http_source(
        &mut self,
        name: &str,
        c: &S<String>,
        k: &RawKnowledge,
        connector_types: &BTreeMap<String, String>,
    ) -> Option<KnowledgeKind> {
        let connector = c.value.trim().to_string();
        let mut ok = match connector_types.get(&connector) {
            None => {
                self.err(
                    c.referenced,
                    format!(
                        "knowledge `{name}` reads through connector `{connector}`, which is not declared; expected one of {}",
                        list(connector_types.keys())
                    ),
                );
                false
            }
            Some(t) if t != "http" => {
                self.err(
                    c.referenced,
                    format!("connector `{connector}` is a `{t}` connector; knowledge `{name}` needs an `http` connector"),
                );
                false
            }
            Some(_) => true,
        };
        if let Some(u) = &k.url {
            self.err(
                u.referenced,
                format!("knowledge `{name}`: `url` applies to a `folder` source; a connector source takes each document's URL from `list.url`"),
            );
            ok = false;
        }
        let list = match (&k.preset, &k.list) {
            (Some(p), None) => match KNOWLEDGE_PRESETS.iter().find(|x| x.name == p.value.trim()) {
                Some(preset) => Some((preset.list)()),
                None => {
                    let names: Vec<String> = KNOWLEDGE_PRESETS
                        .iter()
                        .map(|x| format!("`{}`", x.name))
                        .collect();
                    self.err(
                        p.referenced,
                        format!("knowledge `{name}`: unknown `preset` `{}`; expected one of {}, or a `list:`", p.value, names.join(", ")),
                    );
                    None
                }
            },
            (None, Some(l)) => self.knowledge_list(name, l),
            (Some(p), Some(_)) => {
                self.err(
                    p.referenced,
                    format!("knowledge `{name}` has both `preset` and `list`; give one"),
                );
                None
            }
            (None, None) => {
                self.err(
                    c.referenced,
                    format!("knowledge `{name}` reads through a connector but says neither `preset` (such as `zendesk_help_center`) nor `list` (where the documents are)"),
                );
                None
            }
        };
        let list = list?;
        ok.then_some(KnowledgeKind::Http { connector, list })
    }

    fn knowledge_list(&mut self, name: &str, raw: &S<RawKnowledgeList>) -> Option<KnowledgeList> {
        let at = raw.referenced;
        let l = &raw.value;
        let path = match &l.path {
            Some(p) if p.value.trim().starts_with('/') => Some(p.value.trim().to_string()),
            Some(p) => {
                self.err(
                    p.referenced,
                    format!("knowledge `{name}`: `list.path` must be a path under the connector's base URL, starting with `/`"),
                );
                None
            }
            None => {
                self.err(
                    at,
                    format!("knowledge `{name}`: `list` has no `path`; expected the first page's path, such as `path: /api/pages`"),
                );
                None
            }
        };
        let mut pointer = |v: &Option<S<String>>,
                           key: &str,
                           required: bool|
         -> Option<Option<String>> {
            match v {
                Some(p) if p.value.is_empty() || p.value.starts_with('/') => {
                    Some(Some(p.value.clone()))
                }
                Some(p) => {
                    self.err(
                        p.referenced,
                        format!("knowledge `{name}`: `list.{key}` is `{}`; expected a JSON pointer such as `/{}`", p.value, p.value),
                    );
                    None
                }
                None if required => {
                    self.err(
                        at,
                        format!("knowledge `{name}`: `list` has no `{key}`; expected a JSON pointer into each document, such as `{key}: /{key}`"),
                    );
                    None
                }
                None => Some(None),
            }
        };
        let items = pointer(&l.items, "items", false);
        let next = pointer(&l.next, "next", false);
        let id = pointer(&l.id, "id", true);
        let title = pointer(&l.title, "title", true);
        let body = pointer(&l.body, "body", true);
        let url = pointer(&l.url, "url", false);
        let updated_at = pointer(&l.updated_at, "updated_at", false);
        let format = match &l.format {
            None => Some(DocFormat::Html),
            Some(f) => match DocFormat::parse(f.value.trim()) {
                Some(x) => Some(x),
                None => {
                    self.err(
                        f.referenced,
                        format!(
                            "`format` is `{}`; expected one of `markdown`, `html`, `text`",
                            f.value
                        ),
                    );
                    None
                }
            },
        };
        let max_pages = match &l.max_pages {
            Some(n) => self.positive(n, "max_pages"),
            None => Some(DEFAULT_MAX_PAGES),
        };
        Some(KnowledgeList {
            path: path?,
            items: items?.unwrap_or_default(),
            next: next?,
            id: id??,
            title: title??,
            body: body??,
            url: url?,
            updated_at: updated_at?,
            format: format?,
            max_pages: max_pages?,
        })
    }

    fn gap_target(
        &mut self,
        name: &str,
        t: &S<String>,
        connector_types: &BTreeMap<String, String>,
    ) -> Option<GapTarget> {
        let text = t.value.trim();
        let (connector, path) = match text.split_once(':') {
            Some((c, p)) => (
                c.trim(),
                Some(p.trim().to_string()).filter(|p| !p.is_empty()),
            ),
            None => (text, None),
        };
        match connector_types.get(connector).map(String::as_str) {
            Some("http") => {}
            Some(other) => {
                self.err(
                    t.referenced,
                    format!("knowledge `{name}`: `on_gap` names connector `{connector}`, a `{other}` connector; gaps are posted as JSON to an `http` connector, such as `on_gap: tasks:/tasks`"),
                );
                return None;
            }
            None => {
                self.err(
                    t.referenced,
                    format!(
                        "knowledge `{name}`: `on_gap` names connector `{connector}`, which is not declared; expected `<http connector>[:/path]` with one of {}",
                        list(connector_types.keys())
                    ),
                );
                return None;
            }
        }
        if let Some(p) = &path
            && !p.starts_with('/')
        {
            self.err(
                t.referenced,
                format!("knowledge `{name}`: the path of `on_gap` must start with `/`, such as `on_gap: {connector}:/tasks`"),
            );
            return None;
        }
        Some(GapTarget {
            connector: connector.to_string(),
            path,
        })
    }
}

impl CharterChecker<'_> {
    /// A `context:` entry with `retrieve:`.
    pub(crate) fn retrieve_step(
        &mut self,
        name: &S<String>,
        raw: S<RawContextFetch>,
    ) -> Option<RetrieveStep> {
        let n = name.value.trim().to_string();
        let f = raw.value;
        let valid = !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !n.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            self.err(
                name.referenced,
                format!("context name `{n}` must be an identifier (letters, digits, `_`), such as `kb`, so that templates can read `context.{n}`"),
            );
        }
        for (key, set) in [
            ("connector", f.connector.is_some()),
            ("get", f.get.is_some()),
            ("on_error", f.on_error.is_some()),
            ("retry_after", f.retry_after.is_some()),
            ("timeout", f.timeout.is_some()),
        ] {
            if set {
                self.err(
                    raw.referenced,
                    format!("context `{n}`: `{key}` belongs to a fetched record; a `retrieve` step takes only `retrieve:`"),
                );
            }
        }
        let r = f.retrieve?;
        let at = r.referenced;
        let r = r.value;
        let query = match &r.query {
            Some(q) => self.scoped_template(q, "query", Scope::ContextFetch),
            None => {
                self.err(
                    at,
                    format!("context `{n}`: `retrieve` has no `query`; expected the question to search for, such as `query: \"{{{{ payload.subject }}}} {{{{ payload.body }}}}\"`"),
                );
                None
            }
        };
        let mut sources = Vec::new();
        let mut ok = true;
        match &r.sources {
            None => {
                self.err(
                    at,
                    format!("context `{n}`: `retrieve` has no `sources`; expected knowledge source names from charter.yaml, such as `sources: [handbook]`"),
                );
                ok = false;
            }
            Some(list_) if list_.value.is_empty() => {
                self.err(
                    list_.referenced,
                    format!(
                        "context `{n}`: `sources` is empty; name at least one knowledge source"
                    ),
                );
                ok = false;
            }
            Some(list_) => {
                for s in &list_.value {
                    let name = s.value.trim();
                    if let Some(known) = self.knowledge
                        && !known.contains(name)
                    {
                        let expected = if known.is_empty() {
                            "no knowledge source is declared; add one under `knowledge:` in charter.yaml".to_string()
                        } else {
                            format!("expected one of {}", list(known.iter()))
                        };
                        self.err(
                            s.referenced,
                            format!("context `{n}`: knowledge source `{name}` is not declared; {expected}"),
                        );
                        ok = false;
                    }
                    sources.push(name.to_string());
                }
            }
        }
        let top_k = match &r.top_k {
            Some(k) => match self.positive(k, "top_k") {
                Some(v) if v > 50 => {
                    self.err(
                        k.referenced,
                        format!("`top_k` is {v}; at most 50 passages can be retrieved"),
                    );
                    None
                }
                other => other,
            },
            None => Some(DEFAULT_TOP_K),
        };
        let min_score = match &r.min_score {
            Some(m) if (0.0..=1.0).contains(&m.value) => Some(m.value),
            Some(m) => {
                self.err(
                    m.referenced,
                    format!("`min_score` is {}; expected a share of the question's terms between 0 and 1, such as 0.3", m.value),
                );
                None
            }
            None => Some(DEFAULT_MIN_SCORE),
        };
        if !valid || !ok {
            return None;
        }
        Some(RetrieveStep {
            name: n,
            query: query?,
            sources,
            top_k: top_k?,
            min_score: min_score?,
        })
    }

    /// `draft.cite` (and `cite_every_sentence`): `Some(None)` when absent, `None` on error.
    pub(crate) fn cite_policy(&mut self, d: &RawDraft) -> Option<Option<CitePolicy>> {
        let every = d.cite_every_sentence.as_ref();
        let Some(c) = &d.cite else {
            if let Some(e) = every {
                self.err(
                    e.referenced,
                    "`cite_every_sentence` needs `cite`: the name of the `retrieve` context whose passages the draft cites",
                );
                return None;
            }
            return Some(None);
        };
        let name = c.value.trim();
        if !self.retrieve_names.contains(name) {
            let expected = if self.retrieve_names.is_empty() {
                "this charter has no `retrieve` context; add one under `context:`, such as `kb: { retrieve: { query: ..., sources: [...] } }`".to_string()
            } else {
                format!("expected one of {}", list_set(&self.retrieve_names))
            };
            self.err(
                c.referenced,
                format!("`cite` names `{name}`, which is not a `retrieve` context of this charter; {expected}"),
            );
            return None;
        }
        Some(Some(CitePolicy {
            context: name.to_string(),
            every_sentence: every.is_some_and(|e| e.value),
        }))
    }
}

fn list_set(names: &BTreeSet<String>) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
