//! Checks of the decision layer's helpers: field extractors (`regex` / `template` on a
//! `decide.extract` field), `draft:` on actions and the charter's `context:` fetches.
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

use std::time::Duration;

use super::super::raw::{Entries, Location, RawContextFetch, RawDraft, RawField, S};
use super::names::Scope;
use super::{CharterChecker, Check, Known, list};
use crate::config::{
    CompiledRegex, ContextFetch, ContextOnError, DraftSpec, Extractor, RetrieveStep,
};
use crate::template::Template;

/// Default timeout of a context fetch.
const DEFAULT_CONTEXT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default wait before a run whose context fetch failed (`on_error: retry`) is tried again.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

impl CharterChecker<'_> {
    /// The extractor of a declared field: `Some(None)` when it has none, `None` on an error
    /// (reported).
    pub(super) fn extractor(&mut self, f: &RawField, at: Location) -> Option<Option<Extractor>> {
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
    pub(super) fn draft(
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
    pub(super) fn context(
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

    pub(super) fn context_fetch(
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
