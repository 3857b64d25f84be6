//! The names templates and expressions refer to, checked against what their place sees.
//!
//! A route's `when` sees `payload`, `event`, `decision`, `headers` and `context`
//! ([`crate::routing::eval_context`]); an action's templates see the same plus `draft`;
//! templates and rules evaluated before the decision (`trigger.text`, a rule's `when` and
//! `fields`, an extractor's `template`) see `decision` as null. The `dedupe` template (at
//! ingest), a context fetch's `get` and an alert's `when` see the event only: `decision` is
//! null and `context` empty there. A poll's `path` sees `cursor` and `cursor_raw`, its `key`
//! `item` (also as `payload`) and `cursor`. A misspelt root (`paylod`), a field of
//! `decision` or `event` that never exists (`decision.confidance`) or a `context.<name>`
//! the charter's `context:` does not declare fails every event at run time, so `check`
//! reports it. Fields of `payload` and `headers` depend on the data and are not checked.

use std::collections::BTreeSet;

use crate::config::components::charter::CharterChecker;
use crate::config::diag::Check;
use crate::config::raw::{Location, S};

/// Where a template or expression is evaluated, which decides the names it sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `dedupe`, computed when the event arrives: no decision, no context yet.
    Ingest,
    /// A context fetch's `get`: before the decision, before any record is fetched (fetches
    /// do not see each other).
    ContextFetch,
    /// An alert's `when` (`stuck`), over a stored event: no decision, no context.
    Alert,
    /// Before the decision, after `context:` is fetched: `trigger.text`, rules' `when` and
    /// `fields`, an extractor's `template`.
    BeforeDecision,
    /// A route's `when`.
    Route,
    /// An action's templates (`draft` too).
    Action,
    /// A poll's `path`: `cursor` (percent-encoded) and `cursor_raw`.
    PollPath,
    /// A poll's `key`: each `item` (also as `payload`) and `cursor`.
    PollKey,
    /// An `llm` stage's prompt file: before the decision.
    ClassifyPrompt,
    /// An action's `draft` prompt file: after the decision.
    DraftPrompt,
}

/// What a prompt's `context` holds besides the fetched records: the whole evaluation
/// context (`charter_decide::llm::prompt::render`).
const PROMPT_CONTEXT_KEYS: &[&str] = &["payload", "event", "headers", "decision", "context"];

/// Fields of `decision` ([`crate::routing::decision_value`]).
const DECISION_FIELDS: &[&str] = &["label", "confidence", "fields", "stage", "reason"];

/// Fields of `event` ([`crate::routing::eval_context`]).
const EVENT_FIELDS: &[&str] = &["id", "charter", "source", "type", "received_at", "headers"];

impl Scope {
    fn roots(self) -> &'static [&'static str] {
        match self {
            Scope::Ingest
            | Scope::ContextFetch
            | Scope::Alert
            | Scope::BeforeDecision
            | Scope::Route => &["payload", "event", "decision", "headers", "context"],
            Scope::Action => &[
                "payload", "event", "decision", "headers", "context", "draft",
            ],
            Scope::PollPath => &["cursor", "cursor_raw"],
            Scope::PollKey => &["item", "payload", "cursor"],
            Scope::ClassifyPrompt | Scope::DraftPrompt => &[
                "text", "labels", "fields", "payload", "event", "decision", "context",
            ],
        }
    }

    /// Why `decision` is null here, if it is.
    fn no_decision(self) -> Option<&'static str> {
        match self {
            Scope::Ingest => {
                Some("`dedupe` is computed when the event arrives, before the decision")
            }
            Scope::ContextFetch => Some("a context `get` is rendered before the decision"),
            Scope::Alert => Some("an alert's `when` sees the stored event, without its decision"),
            Scope::BeforeDecision => Some("this is evaluated before the decision"),
            Scope::ClassifyPrompt => {
                Some("an `llm` stage's prompt is rendered to make the decision")
            }
            _ => None,
        }
    }

    /// Why `context` is empty here, if it is.
    fn no_context(self) -> Option<&'static str> {
        match self {
            Scope::Ingest => {
                Some("`dedupe` is computed when the event arrives, before `context:` is fetched")
            }
            Scope::ContextFetch => Some(
                "a context `get` is rendered before any record is fetched (fetches do not see each other)",
            ),
            Scope::Alert => Some("an alert's `when` sees the stored event, without its context"),
            _ => None,
        }
    }
}

/// A name a template or expression uses: its root and, when it selects one, the field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct UsedName {
    pub root: String,
    pub field: Option<String>,
}

/// The names a template refers to (`payload.ticket.id` gives root `payload`, field
/// `ticket`); loop variables and `set` names are the template's own and not listed.
pub(crate) fn template_names(source: &str) -> Vec<UsedName> {
    let mut env = minijinja::Environment::new();
    if env.add_template("t", source).is_err() {
        return Vec::new();
    }
    let Ok(t) = env.get_template("t") else {
        return Vec::new();
    };
    let mut names: Vec<UsedName> = t
        .undeclared_variables(true)
        .into_iter()
        .map(|path| {
            let mut parts = path.splitn(3, '.');
            UsedName {
                root: parts.next().unwrap_or_default().to_string(),
                field: parts.next().map(str::to_string),
            }
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The names a CEL expression refers to: the roots from the parser's references, less the
/// variables its macros bind (`exists(t, ...)`), each with the field selected directly on
/// it (`decision.label`).
pub(crate) fn expr_names(source: &str) -> Vec<UsedName> {
    let Ok(ast) = cel::parser::Parser::new().parse(source) else {
        return Vec::new();
    };
    let mut bound = Vec::new();
    let mut selected = Vec::new();
    walk(&ast, &mut bound, &mut selected);
    let roots = ast.references();
    let mut names: Vec<UsedName> = roots
        .variables()
        .into_iter()
        .filter(|r| !bound.iter().any(|b| b == r))
        .map(|r| UsedName {
            root: r.to_string(),
            field: None,
        })
        .collect();
    names.extend(
        selected
            .into_iter()
            .filter(|(root, _)| !bound.iter().any(|b| b == root))
            .map(|(root, field)| UsedName {
                root,
                field: Some(field),
            }),
    );
    names.sort();
    names.dedup();
    names
}

/// Collects the variables macros bind and every `root.field` selection on an identifier.
fn walk(e: &cel::IdedExpr, bound: &mut Vec<String>, selected: &mut Vec<(String, String)>) {
    use cel::common::ast::{EntryExpr, Expr};
    match &e.expr {
        Expr::Select(s) => {
            if let Expr::Ident(root) = &s.operand.expr {
                selected.push((root.clone(), s.field.clone()));
            }
            walk(&s.operand, bound, selected);
        }
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                walk(t, bound, selected);
            }
            for a in &c.args {
                walk(a, bound, selected);
            }
        }
        Expr::Comprehension(c) => {
            bound.push(c.iter_var.clone());
            if let Some(v) = &c.iter_var2 {
                bound.push(v.clone());
            }
            bound.push(c.accu_var.clone());
            for part in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                walk(part, bound, selected);
            }
        }
        Expr::List(l) => {
            for x in &l.elements {
                walk(x, bound, selected);
            }
        }
        Expr::Map(m) => {
            for entry in &m.entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => walk(&f.value, bound, selected),
                    EntryExpr::MapEntry(me) => {
                        walk(&me.key, bound, selected);
                        walk(&me.value, bound, selected);
                    }
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                if let EntryExpr::StructField(f) = &entry.expr {
                    walk(&f.value, bound, selected);
                }
            }
        }
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
    }
}

/// The closest of `options` to `word` when it is a likely misspelling (edit distance ≤ 2).
fn suggest<'a>(word: &str, options: &[&'a str]) -> Option<&'a str> {
    options
        .iter()
        .map(|o| (distance(word, o), *o))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, o)| o)
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn one_of(options: &[&str]) -> String {
    options
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What is wrong with one used name in `scope`, if anything. `context` holds the names the
/// charter's `context:` declares (`None` when it has none).
fn problem(name: &UsedName, scope: Scope, context: Option<&BTreeSet<String>>) -> Option<String> {
    let roots = scope.roots();
    if !roots.contains(&name.root.as_str()) {
        let hint = suggest(&name.root, roots)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Some(format!(
            "unknown name `{}`{hint}; expected one of {}",
            name.root,
            one_of(roots)
        ));
    }
    let field = name.field.as_deref()?;
    if matches!(scope, Scope::PollPath | Scope::PollKey) {
        return None;
    }
    if name.root == "context" {
        if matches!(scope, Scope::ClassifyPrompt | Scope::DraftPrompt)
            && PROMPT_CONTEXT_KEYS.contains(&field)
        {
            return None;
        }
        return context_problem(field, scope, context);
    }
    let fields = match name.root.as_str() {
        "decision" => DECISION_FIELDS,
        "event" => EVENT_FIELDS,
        _ => return None,
    };
    if name.root == "decision"
        && let Some(why) = scope.no_decision()
    {
        return Some(format!(
            "`decision.{field}` is not known here: {why} (`decision` is null)"
        ));
    }
    if fields.contains(&field) {
        return None;
    }
    let hint = suggest(field, fields)
        .map(|s| format!(" (did you mean `{}.{s}`?)", name.root))
        .unwrap_or_default();
    Some(format!(
        "`{}` has no field `{field}`{hint}; expected one of {}",
        name.root,
        one_of(fields)
    ))
}

/// What is wrong with `context.<field>` in `scope`, if anything.
fn context_problem(
    field: &str,
    scope: Scope,
    context: Option<&BTreeSet<String>>,
) -> Option<String> {
    if let Some(why) = scope.no_context() {
        return Some(format!(
            "`context.{field}` is not known here: {why} (`context` is empty)"
        ));
    }
    let Some(declared) = context.filter(|c| !c.is_empty()) else {
        return Some(format!(
            "`context.{field}` is not declared: this charter has no `context:`; declare the record to fetch, such as `context: {{ {field}: {{ connector: crm, get: \"/records/{{{{ payload.id }}}}\" }} }}`"
        ));
    };
    if declared.contains(field) {
        return None;
    }
    let options: Vec<&str> = declared.iter().map(String::as_str).collect();
    let hint = suggest(field, &options)
        .map(|s| format!(" (did you mean `context.{s}`?)"))
        .unwrap_or_default();
    Some(format!(
        "`context` has no field `{field}`{hint}; expected one of {} (the names under `context:`)",
        one_of(&options)
    ))
}

impl CharterChecker<'_> {
    /// Report every name of `names` that `scope` cannot see, at `at`; `key` and `source`
    /// say which value it is. An action's use of `decision` is remembered (MCP tool calls
    /// run without a decision). Returns whether every name is known.
    pub(crate) fn check_names(
        &mut self,
        at: Location,
        key: &str,
        source: &str,
        names: &[UsedName],
        scope: Scope,
    ) -> bool {
        // An unknown root is reported once, whatever fields of it are used.
        let context = self.context_names.as_ref();
        let mut messages: Vec<String> = names
            .iter()
            .filter_map(|n| problem(n, scope, context))
            .collect();
        messages.dedup();
        let ok = messages.is_empty();
        for message in messages {
            self.err(at, format!("`{key}`: {message} in `{}`", source.trim()));
        }
        if scope == Scope::Action && names.iter().any(|n| n.root == "decision") {
            self.decision_uses.push((at, key.to_string()));
        }
        ok
    }

    /// The name check of a prompt file `path` (its template `text`), reported at the
    /// charter's `prompt:` value `at`.
    pub(crate) fn check_prompt_names(
        &mut self,
        at: Location,
        path: &str,
        text: &str,
        scope: Scope,
    ) {
        let context = self.context_names.as_ref();
        let names = template_names(text);
        let mut messages: Vec<String> = names
            .iter()
            .filter_map(|n| problem(n, scope, context))
            .collect();
        messages.dedup();
        for message in messages {
            self.err(at, format!("prompt file `{path}`: {message}"));
        }
        // A draft written for an MCP tool call has no decision either.
        if scope == Scope::DraftPrompt && names.iter().any(|n| n.root == "decision") {
            self.decision_uses.push((at, "prompt".to_string()));
        }
    }

    /// [`CharterChecker::template`] plus the name check of `scope`.
    pub(crate) fn scoped_template(
        &mut self,
        v: &S<String>,
        key: &str,
        scope: Scope,
    ) -> Option<crate::template::Template> {
        let t = self.template(v, key)?;
        let names = template_names(&v.value);
        self.check_names(v.referenced, key, &v.value, &names, scope)
            .then_some(t)
    }

    /// [`Self::scoped_template`] for a template that builds a URL (its inserted values are
    /// percent-encoded).
    pub(crate) fn scoped_url_template(
        &mut self,
        v: &S<String>,
        key: &str,
        scope: Scope,
    ) -> Option<crate::template::Template> {
        let t = self.url_template(v, key)?;
        let names = template_names(&v.value);
        self.check_names(v.referenced, key, &v.value, &names, scope)
            .then_some(t)
    }

    /// The name check of `scope` over every template string in a JSON body.
    pub(crate) fn check_json_names(
        &mut self,
        at: Location,
        key: &str,
        value: &serde_json::Value,
        scope: Scope,
    ) -> bool {
        match value {
            serde_json::Value::String(s) if s.contains("{{") || s.contains("{%") => {
                let names = template_names(s);
                self.check_names(at, key, s, &names, scope)
            }
            // Every string is checked (no short cut), so every problem is reported.
            serde_json::Value::Array(items) => {
                let checked: Vec<bool> = items
                    .iter()
                    .map(|v| self.check_json_names(at, key, v, scope))
                    .collect();
                checked.into_iter().all(|ok| ok)
            }
            serde_json::Value::Object(map) => {
                let checked: Vec<bool> = map
                    .values()
                    .map(|v| self.check_json_names(at, key, v, scope))
                    .collect();
                checked.into_iter().all(|ok| ok)
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(root: &str, field: Option<&str>) -> UsedName {
        UsedName {
            root: root.into(),
            field: field.map(str::to_string),
        }
    }

    #[test]
    fn cel_names_skip_macro_variables_and_keep_selected_fields() {
        let names = expr_names(
            r#"payload.tags.exists(t, t == "vip") && decison.label == "x" && has(event.typ)"#,
        );
        assert_eq!(
            names,
            vec![
                n("decison", None),
                n("decison", Some("label")),
                n("event", None),
                n("event", Some("typ")),
                n("payload", None),
                n("payload", Some("tags")),
            ]
        );
    }

    #[test]
    fn template_names_skip_loop_variables() {
        let names = template_names(
            "{% for t in payload.tags %}{{ t }}{% endfor %}{{ decision.confidance }}",
        );
        assert_eq!(
            names,
            vec![
                n("decision", Some("confidance")),
                n("payload", Some("tags"))
            ]
        );
    }

    #[test]
    fn problems_name_the_likely_word() {
        let problem = |u: &UsedName, scope| problem(u, scope, None);
        let p = problem(&n("paylod", Some("x")), Scope::Action).unwrap();
        assert!(
            p.contains("unknown name `paylod` (did you mean `payload`?)"),
            "{p}"
        );
        let p = problem(&n("decision", Some("confidance")), Scope::Route).unwrap();
        assert!(p.contains("did you mean `decision.confidence`?"), "{p}");
        assert!(problem(&n("draft", None), Scope::Action).is_none());
        assert!(problem(&n("draft", None), Scope::Route).is_some());
        assert!(problem(&n("decision", Some("label")), Scope::BeforeDecision).is_some());
        assert!(problem(&n("payload", Some("anything")), Scope::BeforeDecision).is_none());
    }
}
