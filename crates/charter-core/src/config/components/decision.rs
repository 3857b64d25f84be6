//! The decision layer's helpers, raw, typed and checked: `decide.extract` fields and their
//! extractors (`regex` / `template`), `draft:` on actions and the charter's `context:` fetches.
//!
//! ```yaml
//! decide:
//!   extract:
//!     order_id: { type: string, pattern: "^ORD-[0-9]+$", required: true, regex: '(ORD-[0-9]+)' }
//!     customer: { template: "{{ payload.customer.id }}" }
//! context:
//!   customer: { connector: crm, get: "/customers/{{ payload.customer_id }}", timeout: 5s, on_error: continue }
//! actions:
//!   reply:
//!     draft: { prompt: prompts/reply.md, provider: default }
//! ```

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::config::RetrieveStep;
use crate::config::components::charter::{CharterChecker, Known};
use crate::config::components::names::Scope;
use crate::config::diag::{Check, list};
use crate::config::raw::{Entries, Location, RawRetrieve, S, Scalar};
use crate::template::Template;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub pattern: Option<S<String>>,
    #[serde(rename = "enum")]
    pub enumeration: Option<S<Vec<S<Scalar>>>>,
    pub required: Option<S<bool>>,
    /// Extractor: a regular expression whose first capture group (or whole match) fills
    /// the field.
    pub regex: Option<S<String>>,
    /// Where `regex` looks: a dotted path such as `payload.ticket.body` (default: the
    /// event's decision text).
    #[serde(rename = "in")]
    pub input: Option<S<String>>,
    /// Extractor: a template over the event (`{{ payload.customer.id }}`); empty = not found.
    pub template: Option<S<String>>,
}

/// `draft:` on an action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDraft {
    /// Prompt template file, relative to the project.
    pub prompt: Option<S<String>>,
    /// Provider name from charter.yaml (default `default`).
    pub provider: Option<S<String>>,
    /// Providers tried in order when `provider` fails.
    pub fallback: Option<S<Vec<S<String>>>>,
    /// Payload keys (or dotted paths) redacted before the prompt leaves.
    pub redact: Option<S<Vec<S<String>>>>,
    /// A `retrieve` context whose passages the draft must cite.
    pub cite: Option<S<String>>,
    /// With `cite`: every sentence must carry a citation.
    pub cite_every_sentence: Option<S<bool>>,
}

/// One entry of a charter's `context:`: a record fetched before deciding.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContextFetch {
    /// An `http` connector in `uses`.
    pub connector: Option<S<String>>,
    /// Path (template) under the connector's base URL, fetched with GET.
    pub get: Option<S<String>>,
    /// Request timeout (default 5s).
    pub timeout: Option<S<Scalar>>,
    /// `continue` (decide without it) or `retry` (retry the run later).
    pub on_error: Option<S<String>>,
    /// With `on_error: retry`, the wait before the event is tried again (default 30s).
    pub retry_after: Option<S<Scalar>>,
    /// Passages retrieved from knowledge sources instead of a fetched record.
    pub retrieve: Option<S<RawRetrieve>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    pub kind: FieldType,
    pub pattern: Option<String>,
    pub enumeration: Vec<String>,
    pub required: bool,
    /// `regex:` / `template:`: filled deterministically when declared (its value wins over
    /// a stage's when it finds one).
    pub extractor: Option<Extractor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Number,
    Integer,
    Boolean,
}

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
    pub cite: Option<crate::config::CitePolicy>,
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

/// Default timeout of a context fetch.
const DEFAULT_CONTEXT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default wait before a run whose context fetch failed (`on_error: retry`) is tried again.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

impl CharterChecker<'_> {
    /// The extractor of a declared field: `Some(None)` when it has none, `None` on an error
    /// (reported).
    pub(crate) fn extractor(&mut self, f: &RawField, at: Location) -> Option<Option<Extractor>> {
        match (&f.regex, &f.template) {
            (Some(_), Some(t)) => {
                self.err(
                    t.referenced,
                    "a field takes one extractor: `regex` or `template`, not both",
                );
                None
            }
            (Some(r), None) => {
                let regex = match CompiledRegex::new(&r.value) {
                    Ok(re) => Some(re),
                    Err(e) => {
                        let first = e.lines().last().unwrap_or("").trim().to_string();
                        self.err(
                            r.referenced,
                            format!(
                                "`regex` `{}` is not a valid regular expression ({first}); expected one such as `order (ORD-[0-9]+)`, whose first group is the value",
                                r.value
                            ),
                        );
                        None
                    }
                };
                let input = match &f.input {
                    None => Some(None),
                    Some(i) => {
                        let path: Vec<String> =
                            i.value.trim().split('.').map(str::to_string).collect();
                        let roots = ["payload", "event", "headers", "context"];
                        if path.iter().any(|p| p.trim().is_empty())
                            || !roots.contains(&path[0].as_str())
                        {
                            self.err(
                                i.referenced,
                                format!(
                                    "`in` `{}` is not a path into the event; expected a dotted path starting with one of {}, such as `payload.ticket.body`",
                                    i.value,
                                    roots.join(", ")
                                ),
                            );
                            None
                        } else {
                            // `in: context.<name>...` reads a record `context:` must declare.
                            let used = [super::names::UsedName {
                                root: path[0].clone(),
                                field: path.get(1).cloned(),
                            }];
                            self.check_names(
                                i.referenced,
                                "in",
                                &i.value,
                                &used,
                                Scope::BeforeDecision,
                            )
                            .then_some(Some(path))
                        }
                    }
                };
                Some(Some(Extractor::Regex {
                    regex: regex?,
                    input: input?,
                }))
            }
            (None, Some(t)) => {
                if let Some(i) = &f.input {
                    self.err(
                        i.referenced,
                        "`in` only applies to a `regex` extractor; a `template` reads the event itself",
                    );
                    return None;
                }
                self.scoped_template(t, "template", Scope::BeforeDecision)
                    .map(|t| Some(Extractor::Template(t)))
            }
            (None, None) => {
                if let Some(i) = &f.input {
                    self.err(
                        i.referenced,
                        "`in` without `regex`; add `regex: '<expression with a (group)>'` or remove `in`",
                    );
                    return None;
                }
                let _ = at;
                Some(None)
            }
        }
    }

    /// `draft:` of action `action`: `Some(None)` when there is none, `None` on an error.
    pub(crate) fn draft(
        &mut self,
        action: &str,
        raw: &Option<S<RawDraft>>,
    ) -> Option<Option<DraftSpec>> {
        let Some(raw) = raw else {
            return Some(None);
        };
        let at = raw.referenced;
        let d = &raw.value;
        let prompt = self.project_file(
            &d.prompt,
            at,
            "prompt",
            "a prompt template file such as `prompts/reply.md`",
        );
        let template = prompt.as_ref().and_then(|path| {
            let text = self.src.files.get(path).cloned().unwrap_or_default();
            let at = d.prompt.as_ref().map(|p| p.referenced).unwrap_or(at);
            match Template::parse(&text) {
                Ok(t) => {
                    self.check_prompt_names(at, path, &text, Scope::DraftPrompt);
                    Some(t)
                }
                Err(e) => {
                    self.err(
                        at,
                        format!("action `{action}`: draft prompt file `{path}`: {e}"),
                    );
                    None
                }
            }
        });
        let provider = match &d.provider {
            Some(p) => {
                let name = p.value.trim().to_string();
                self.provider_ref(&name, p.referenced).then_some(name)
            }
            None => {
                // The default provider must exist too.
                self.provider_ref("default", at)
                    .then(|| "default".to_string())
            }
        };
        let mut fallback = Vec::new();
        let mut ok = true;
        for f in d.fallback.iter().flat_map(|f| f.value.iter()) {
            if self.provider_ref(f.value.trim(), f.referenced) {
                fallback.push(f.value.trim().to_string());
            } else {
                ok = false;
            }
        }
        let redact = d
            .redact
            .iter()
            .flat_map(|r| r.value.iter())
            .map(|r| r.value.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        Some(Some(DraftSpec {
            prompt: prompt?,
            template: template?,
            provider: provider?,
            fallback: ok.then_some(fallback)?,
            redact,
            cite: self.cite_policy(d)?,
        }))
    }

    /// The charter's `context:`: records fetched through connectors and passages retrieved
    /// from knowledge sources; `None` when any entry is invalid (each problem reported).
    pub(crate) fn context(
        &mut self,
        raw: Option<S<Entries<S<RawContextFetch>>>>,
        known: &Known,
    ) -> Option<(Vec<ContextFetch>, Vec<RetrieveStep>)> {
        let Some(raw) = raw else {
            return Some((Vec::new(), Vec::new()));
        };
        let mut out = Vec::new();
        let mut retrieve = Vec::new();
        let mut ok = true;
        for (name, entry) in raw.value.0 {
            if entry.value.retrieve.is_some() {
                match self.retrieve_step(&name, entry) {
                    Some(r) => retrieve.push(r),
                    None => ok = false,
                }
                continue;
            }
            match self.context_fetch(&name, entry, known) {
                Some(f) => out.push(f),
                None => ok = false,
            }
        }
        ok.then_some((out, retrieve))
    }

    pub(crate) fn context_fetch(
        &mut self,
        name: &S<String>,
        raw: S<RawContextFetch>,
        known: &Known,
    ) -> Option<ContextFetch> {
        let n = name.value.trim();
        let at = raw.referenced;
        let f = raw.value;
        let valid_name = !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !n.starts_with(|c: char| c.is_ascii_digit());
        let reserved = [
            "payload", "event", "headers", "decision", "context", "text", "labels", "fields",
        ];
        if valid_name && reserved.contains(&n) {
            self.err(
                name.referenced,
                format!("context name `{n}` is reserved (it is already a variable of prompts and templates); choose another, such as `{n}_record`"),
            );
            return None;
        }
        if !valid_name {
            self.err(
                name.referenced,
                format!("context name `{n}` must be an identifier (letters, digits, `_`), such as `customer`, so that templates can read `context.{n}`"),
            );
        }
        let connector = match &f.connector {
            None => {
                self.err(
                    at,
                    format!("context `{n}` has no `connector`; expected an `http` connector from `uses`, such as `connector: crm`"),
                );
                None
            }
            Some(c) if !known.uses.contains(&c.value) => {
                self.err(
                    c.referenced,
                    format!(
                        "context `{n}` uses connector `{}`, which is not in this charter's `uses` list; expected one of {}",
                        c.value,
                        list(&known.uses)
                    ),
                );
                None
            }
            Some(c) => match self.connector_types.and_then(|m| m.get(&c.value)) {
                Some(t) if t != "http" => {
                    self.err(
                        c.referenced,
                        format!(
                            "connector `{}` is a `{t}` connector; context `{n}` needs an `http` connector",
                            c.value
                        ),
                    );
                    None
                }
                _ => Some(c.value.clone()),
            },
        };
        let path = match &f.get {
            None => {
                self.err(
                    at,
                    format!("context `{n}` has no `get`; expected the path to fetch, such as `get: \"/customers/{{{{ payload.customer_id }}}}\"`"),
                );
                None
            }
            Some(g) if !g.value.trim_start().starts_with('/') => {
                self.err(
                    g.referenced,
                    format!("context `{n}`: `get` must be a path under the connector's base URL, starting with `/`"),
                );
                None
            }
            Some(g) => self.scoped_url_template(g, "get", Scope::ContextFetch),
        };
        let timeout = match &f.timeout {
            Some(t) => self.duration(t, "timeout"),
            None => Some(DEFAULT_CONTEXT_TIMEOUT),
        };
        let on_error = match &f.on_error {
            Some(o) => self.one_of(
                o,
                "on_error",
                &[
                    ("continue", ContextOnError::Continue),
                    ("retry", ContextOnError::Retry),
                ],
            ),
            None => Some(ContextOnError::Continue),
        };
        let retry_after = match &f.retry_after {
            Some(t) => self.duration(t, "retry_after"),
            None => Some(DEFAULT_RETRY_AFTER),
        };
        if !valid_name {
            return None;
        }
        Some(ContextFetch {
            name: n.to_string(),
            connector: connector?,
            path: path?,
            timeout: timeout?,
            on_error: on_error?,
            retry_after: retry_after?,
        })
    }
}

impl CharterChecker<'_> {
    pub(crate) fn field(&mut self, raw: S<RawField>) -> Option<FieldSpec> {
        let at = raw.referenced;
        let f: RawField = raw.value;
        let extractor = self.extractor(&f, at);
        let kind = match &f.kind {
            Some(k) => self.one_of(
                k,
                "type",
                &[
                    ("string", FieldType::String),
                    ("number", FieldType::Number),
                    ("integer", FieldType::Integer),
                    ("boolean", FieldType::Boolean),
                ],
            ),
            None => Some(FieldType::String),
        };
        let pattern = match &f.pattern {
            Some(p) => {
                // The pattern is checked with the same regex dialect that validates values.
                let probe = serde_json::json!({ "type": "string", "pattern": p.value });
                if jsonschema::validator_for(&probe).is_err() {
                    self.err(p.referenced, format!("`pattern` `{}` is not a valid regular expression; expected one such as `ORD-[0-9]+`", p.value));
                    None
                } else if kind.is_some_and(|k| k != FieldType::String) {
                    self.err(p.referenced, "`pattern` only applies to `type: string`");
                    None
                } else {
                    Some(Some(p.value.clone()))
                }
            }
            None => Some(None),
        };
        let enumeration = match &f.enumeration {
            Some(e) if e.value.is_empty() => {
                self.err(
                    e.referenced,
                    "`enum` is empty; expected the allowed values, such as `[low, medium, high]`",
                );
                None
            }
            Some(e) => Some(e.value.iter().map(|v| v.value.0.clone()).collect()),
            None => Some(Vec::new()),
        };
        Some(FieldSpec {
            kind: kind?,
            pattern: pattern?,
            enumeration: enumeration?,
            required: f.required.map(|r| r.value).unwrap_or(false),
            extractor: extractor?,
        })
    }
}
