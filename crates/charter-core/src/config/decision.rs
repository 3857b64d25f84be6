//! Validated configuration of the decision layer's helpers: field extractors
//! (`decide.extract.<field>.regex` / `template`), drafts on actions (`draft:`) and context
//! assembly (`context:`).

use std::fmt;
use std::time::Duration;

use crate::template::Template;

/// A regular expression compiled at check time (Rust `regex` syntax).
#[derive(Clone)]
pub struct CompiledRegex(regex::Regex);

impl CompiledRegex {
    /// Compiles `source`; the error is the regex crate's message.
    pub fn new(source: &str) -> Result<CompiledRegex, String> {
        regex::RegexBuilder::new(source)
            .size_limit(1 << 20)
            .build()
            .map(CompiledRegex)
            .map_err(|e| e.to_string())
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        self.0.as_str()
    }

    /// The first capture group of the first match (the whole match when the expression has
    /// no group); `None` when nothing matches or the group did not take part.
    pub fn first_capture<'t>(&self, text: &'t str) -> Option<&'t str> {
        let caps = self.0.captures(text)?;
        if self.0.captures_len() > 1 {
            caps.get(1).map(|m| m.as_str())
        } else {
            caps.get(0).map(|m| m.as_str())
        }
    }
}

impl fmt::Debug for CompiledRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CompiledRegex({:?})", self.0.as_str())
    }
}

impl PartialEq for CompiledRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source() == other.source()
    }
}

/// A deterministic way to fill a declared field, tried before the stages' own value.
#[derive(Debug, Clone)]
pub enum Extractor {
    /// `regex: '...'` (and optionally `in: payload.path`): the first capture group of the
    /// first match over the event's decision text, or over the value at `in`.
    Regex {
        regex: CompiledRegex,
        /// Dotted path into the evaluation context (`payload.ticket.body`); `None` means
        /// the event's decision text.
        input: Option<Vec<String>>,
    },
    /// `template: '{{ payload.customer.id }}'`: rendered over the evaluation context; an
    /// empty result means "not found".
    Template(Template),
}

impl PartialEq for Extractor {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Extractor::Regex { regex, input },
                Extractor::Regex {
                    regex: r2,
                    input: i2,
                },
            ) => regex == r2 && input == i2,
            (Extractor::Template(a), Extractor::Template(b)) => a.source() == b.source(),
            _ => false,
        }
    }
}

/// `draft:` on an action: a text written by a model before the action's parameters are
/// rendered, available to its templates as `draft`.
#[derive(Debug, Clone)]
pub struct DraftSpec {
    /// Path of the prompt file, relative to the project.
    pub prompt: String,
    /// The prompt file, compiled.
    pub template: Template,
    /// The provider asked first (default `default`).
    pub provider: String,
    /// Providers tried in order when `provider` fails.
    pub fallback: Vec<String>,
    /// Payload keys (or dotted paths) replaced by `[redacted]` before anything is sent.
    pub redact: Vec<String>,
    /// The draft must cite the passages of this `retrieve` context (`draft.cite`).
    pub cite: Option<super::CitePolicy>,
}

/// What a failed context fetch does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextOnError {
    /// Decide without it: `context.<name>` is `null` and the failure is recorded.
    Continue,
    /// Put the event back: the run ends failed and is retried after `retry_after`.
    Retry,
}

/// One record fetched before deciding (`context: { <name>: { connector, get, ... } }`).
#[derive(Debug, Clone)]
pub struct ContextFetch {
    /// Exposed as `context.<name>` to rules, prompts, routes and templates.
    pub name: String,
    /// An `http` connector in `uses` (its auth, SSRF guard and limits apply).
    pub connector: String,
    /// Path under the connector's base URL, rendered over the event.
    pub path: Template,
    /// Timeout of the request (default 5 s).
    pub timeout: Duration,
    pub on_error: ContextOnError,
    /// With `on_error: retry`, how long before the event is tried again (default 30 s).
    pub retry_after: Duration,
}
