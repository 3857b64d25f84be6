//! Templates (MiniJinja syntax) for action parameters, dedupe keys, decision text and log
//! messages.
//!
//! Templates are compiled once when a charter is loaded and rendered many times. Rendering is
//! strict (a reference to a missing value is an error that names it), never HTML-escapes (the
//! output is JSON or plain text) and is bounded by a fuel budget so that no template can run
//! for long.

use std::fmt;
use std::sync::Arc;

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

/// Instructions a single render may execute before it is stopped.
const FUEL: u64 = 50_000;
/// Name under which a template is registered in its private environment.
const NAME: &str = "template";
/// Variable a whole-expression JSON string stores its value in.
const RESULT_VAR: &str = "charter_result__";

/// A compiled text template. Cheap to clone; safe to share between threads.
#[derive(Clone)]
pub struct Template {
    inner: Arc<Compiled>,
}

/// The source and an environment holding exactly that template, compiled.
struct Compiled {
    source: String,
    env: Environment<'static>,
    /// The top-level names the template refers to (sorted). Only these keys of a context
    /// are converted to template values at render: converting the whole context (payload,
    /// headers, event) was most of a render's cost.
    names: Vec<String>,
}

impl Compiled {
    fn new(source: String, env: Environment<'static>) -> Compiled {
        let mut names: Vec<String> = env
            .get_template(NAME)
            .map(|t| t.undeclared_variables(false).into_iter().collect())
            .unwrap_or_default();
        names.sort_unstable();
        Compiled { source, env, names }
    }

    /// Render over the context's referenced keys; should the scan of names have missed one
    /// the context has (the render then fails on an undefined value), render again over the
    /// whole context rather than report as undefined a value that is there.
    fn render_with<T>(
        &self,
        ctx: &serde_json::Value,
        render: impl Fn(minijinja::Value) -> Result<T, minijinja::Error>,
    ) -> Result<T, minijinja::Error> {
        let serde_json::Value::Object(map) = ctx else {
            return render(minijinja::Value::from(Serde(ctx)));
        };
        let mut included = 0;
        let referenced = minijinja::Value::from_pairs(self.names.iter().filter_map(|name| {
            let value = map.get(name)?;
            included += 1;
            Some((name.as_str(), minijinja::Value::from(Serde(value))))
        }));
        match render(referenced) {
            Err(e) if e.kind() == minijinja::ErrorKind::UndefinedError && included < map.len() => {
                render(minijinja::Value::from(Serde(ctx)))
            }
            other => other,
        }
    }
}

/// Why a template could not be compiled or rendered. Every message names the template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template is not valid syntax.
    #[error("invalid template `{template}`: {message}")]
    Syntax { template: String, message: String },
    /// Rendering failed: an undefined value, a bad filter call, fuel exhausted.
    #[error("template `{template}` failed: {message}")]
    Render { template: String, message: String },
    /// A whole-expression value could not be turned into JSON.
    #[error("template `{template}` produced a value that is not JSON: {message}")]
    NotJson { template: String, message: String },
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    env.set_debug(true);
    env
}

/// Describes a MiniJinja error in one line, quoting the failing part of `source` when known.
fn describe(err: &minijinja::Error, source: &str) -> String {
    let detail = err.detail().unwrap_or_default();
    let mut msg = match err.kind() {
        // The detail already reads "`payload.x` is undefined".
        minijinja::ErrorKind::UndefinedError if !detail.is_empty() => detail.to_string(),
        kind if detail.is_empty() => kind.to_string(),
        kind => format!("{kind}: {detail}"),
    };
    let failing = err
        .range()
        .and_then(|r| source.get(r))
        .map(str::trim)
        .filter(|s| !s.is_empty() && !s.starts_with('.') && !detail.contains(&format!("`{s}`")));
    if let Some(part) = failing {
        let word = if err.kind() == minijinja::ErrorKind::SyntaxError {
            "near"
        } else {
            "in"
        };
        msg.push_str(&format!(" {word} `{part}`"));
    }
    if source.contains('\n')
        && let Some(line) = err.line()
    {
        msg.push_str(&format!(" (line {line})"));
    }
    msg
}

impl Template {
    /// Compiles `source`; syntax errors name the template and say what is wrong.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut env = environment();
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| TemplateError::Syntax {
                template: source.to_string(),
                message: describe(&e, source),
            })?;
        Ok(Template {
            inner: Arc::new(Compiled::new(source.to_string(), env)),
        })
    }

    /// The template as written in the charter.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Renders the template over a JSON context (usually [`crate::routing::eval_context`]).
    pub fn render(&self, ctx: &serde_json::Value) -> Result<String, TemplateError> {
        let tmpl = self.compiled()?;
        self.inner
            .render_with(ctx, |c| tmpl.render(c))
            .map_err(|e| self.render_error(&e))
    }

    fn compiled(&self) -> Result<minijinja::Template<'_, '_>, TemplateError> {
        self.inner
            .env
            .get_template(NAME)
            .map_err(|e| self.render_error(&e))
    }

    fn render_error(&self, err: &minijinja::Error) -> TemplateError {
        TemplateError::Render {
            template: self.inner.source.clone(),
            message: describe(err, &self.inner.source),
        }
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.inner.source).finish()
    }
}

/// An expression string `{{ expr }}` kept as a value, compiled as `{% set r = (expr) %}`.
#[derive(Clone)]
struct ValueExpr {
    /// The string as written (`{{ payload.id }}`).
    source: String,
    /// The expression inside the braces (`payload.id`).
    expr: String,
    compiled: Arc<Compiled>,
}

impl ValueExpr {
    /// Returns `Some` when `s` is exactly one `{{ ... }}` with nothing else around it.
    fn parse(s: &str) -> Option<Result<ValueExpr, TemplateError>> {
        let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
        // `{{ a }} and {{ b }}` is text, not one expression.
        if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
            return None;
        }
        let expr = inner
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        if expr.is_empty() {
            return None;
        }
        let mut env = environment();
        let program = format!("{{% set {RESULT_VAR} = ({expr}) %}}");
        Some(match env.add_template_owned(NAME, program.clone()) {
            Ok(()) => Ok(ValueExpr {
                source: s.to_string(),
                expr: expr.to_string(),
                compiled: Arc::new(Compiled::new(program, env)),
            }),
            Err(e) => Err(TemplateError::Syntax {
                template: s.to_string(),
                message: describe(&e, &program),
            }),
        })
    }

    fn eval(&self, ctx: &serde_json::Value) -> Result<serde_json::Value, TemplateError> {
        let render_err = |e: minijinja::Error| TemplateError::Render {
            template: self.source.clone(),
            message: describe(&e, &self.compiled.source),
        };
        let tmpl = self.compiled.env.get_template(NAME).map_err(render_err)?;
        let captured = self
            .compiled
            .render_with(ctx, |c| tmpl.render_captured(c))
            .map_err(render_err)?;
        let value = captured
            .state()
            .lookup(RESULT_VAR)
            .unwrap_or(minijinja::Value::UNDEFINED);
        // Assigning an undefined value is not an error in MiniJinja; using it as a value is.
        if value.is_undefined() {
            return Err(TemplateError::Render {
                template: self.source.clone(),
                message: format!("`{}` is undefined", self.expr),
            });
        }
        serde_json::to_value(&value).map_err(|e| TemplateError::NotJson {
            template: self.source.clone(),
            message: e.to_string(),
        })
    }
}

/// One node of a [`JsonTemplate`].
#[derive(Clone)]
enum Node {
    /// Numbers, booleans, null: copied as they are.
    Literal(serde_json::Value),
    /// A string that is exactly one `{{ expr }}`: renders to the expression's JSON value.
    Value(ValueExpr),
    /// Any other string: renders to a string.
    Text(Template),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// A JSON value whose strings are templates (action bodies). Rendering walks the tree.
///
/// A string that is exactly one expression (`"{{ payload.ticket.id }}"`, whitespace allowed)
/// renders to that expression's JSON value, so numbers, booleans, lists and objects keep their
/// type; every other string renders to a string. Object keys are used as written.
#[derive(Clone)]
pub struct JsonTemplate {
    source: serde_json::Value,
    root: Node,
}

impl JsonTemplate {
    /// Compiles every string in `value`, reporting the first one that does not compile.
    pub fn parse(value: serde_json::Value) -> Result<JsonTemplate, TemplateError> {
        let root = compile_node(&value)?;
        Ok(JsonTemplate {
            source: value,
            root,
        })
    }

    /// Renders the tree over a JSON context.
    pub fn render(&self, ctx: &serde_json::Value) -> Result<serde_json::Value, TemplateError> {
        render_node(&self.root, ctx)
    }

    /// The value as written in the charter.
    pub fn source(&self) -> &serde_json::Value {
        &self.source
    }
}

impl fmt::Debug for JsonTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonTemplate").field(&self.source).finish()
    }
}

fn compile_node(value: &serde_json::Value) -> Result<Node, TemplateError> {
    Ok(match value {
        serde_json::Value::String(s) => match ValueExpr::parse(s) {
            Some(expr) => Node::Value(expr?),
            None => Node::Text(Template::parse(s)?),
        },
        serde_json::Value::Array(items) => {
            Node::Array(items.iter().map(compile_node).collect::<Result<_, _>>()?)
        }
        serde_json::Value::Object(fields) => Node::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), compile_node(v)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => Node::Literal(other.clone()),
    })
}

fn render_node(node: &Node, ctx: &serde_json::Value) -> Result<serde_json::Value, TemplateError> {
    Ok(match node {
        Node::Literal(v) => v.clone(),
        Node::Value(expr) => expr.eval(ctx)?,
        Node::Text(t) => serde_json::Value::String(t.render(ctx)?),
        Node::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|n| render_node(n, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Node::Object(fields) => serde_json::Value::Object(
            fields
                .iter()
                .map(|(k, n)| Ok((k.clone(), render_node(n, ctx)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> serde_json::Value {
        json!({
            "payload": { "ticket": { "id": 42, "subject": "Refund <please>", "tags": ["a", "b"],
                                     "urgent": true, "meta": { "k": "v" } } },
            "event": { "id": "e1" },
            "decision": { "label": "billing", "confidence": 0.9 }
        })
    }

    #[test]
    fn template_types_are_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Template>();
        assert_traits::<JsonTemplate>();
    }

    #[test]
    fn renders_text_without_escaping() {
        let t = Template::parse("#{{ payload.ticket.id }}: {{ payload.ticket.subject }}").unwrap();
        assert_eq!(t.render(&ctx()).unwrap(), "#42: Refund <please>");
        let t =
            Template::parse("{{ payload.ticket.tags | join(',') }}-{{ decision.label | upper }}")
                .unwrap();
        assert_eq!(t.render(&ctx()).unwrap(), "a,b-BILLING");
        let t =
            Template::parse("{% if decision.confidence > 0.5 %}sure{% else %}unsure{% endif %}")
                .unwrap();
        assert_eq!(t.render(&ctx()).unwrap(), "sure");
        assert_eq!(
            t.source(),
            "{% if decision.confidence > 0.5 %}sure{% else %}unsure{% endif %}"
        );
    }

    #[test]
    fn only_the_referenced_top_level_names_are_converted() {
        let t = Template::parse(
            "{% for tag in payload.tags %}{{ tag }}{% endfor %} {{ event.id }} {{ decision.label | upper }}",
        )
        .unwrap();
        // Loop variables and filters are not context names.
        assert_eq!(t.inner.names, ["decision", "event", "payload"]);
        let ctx = json!({
            "payload": {"tags": ["a", "b"]},
            "event": {"id": "e1"},
            "decision": {"label": "billing"},
            "headers": {"x": "unused"},
        });
        assert_eq!(t.render(&ctx).unwrap(), "ab e1 BILLING");
        // A loop variable named like a context key shadows it, as before.
        let t = Template::parse("{% for payload in items %}{{ payload }}{% endfor %}").unwrap();
        assert_eq!(t.inner.names, ["items"]);
        let ctx = json!({"items": [1, 2], "payload": "ignored"});
        assert_eq!(t.render(&ctx).unwrap(), "12");
        let j = JsonTemplate::parse(json!({"n": "{{ payload.tags | length }}"})).unwrap();
        let ctx = json!({"payload": {"tags": ["a", "b"]}, "event": {}});
        assert_eq!(j.render(&ctx).unwrap(), json!({"n": 2}));
    }

    #[test]
    fn undefined_values_are_errors_naming_them() {
        let t = Template::parse("id={{ payload.ticket.number }}").unwrap();
        let err = t.render(&ctx()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TemplateError::Render { .. }));
        assert!(msg.contains("payload.ticket.number"), "{msg}");
        assert!(msg.contains("undefined"), "{msg}");
        let t = Template::parse("{{ customer.name }}").unwrap();
        let msg = t.render(&ctx()).unwrap_err().to_string();
        assert!(msg.contains("customer"), "{msg}");
    }

    #[test]
    fn syntax_errors_name_the_template() {
        let err = Template::parse("hello {{ payload.id").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TemplateError::Syntax { .. }));
        assert!(
            msg.starts_with("invalid template `hello {{ payload.id`: syntax error"),
            "{msg}"
        );
        assert!(Template::parse("{% if x %}no end").is_err());
    }

    #[test]
    fn fuel_bounds_run_time() {
        let t = Template::parse(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap();
        let msg = t.render(&json!({})).unwrap_err().to_string();
        assert!(msg.contains("fuel"), "{msg}");
    }

    #[test]
    fn json_template_preserves_types() {
        let jt = JsonTemplate::parse(json!({
            "id": "{{ payload.ticket.id }}",
            "id_text": "#{{ payload.ticket.id }}",
            "urgent": "{{payload.ticket.urgent}}",
            "tags": "{{ payload.ticket.tags }}",
            "meta": "{{ payload.ticket.meta }}",
            "conf": "  {{ decision.confidence }}  ",
            "sum": "{{ payload.ticket.id + 1 }}",
            "two": "{{ event.id }}/{{ decision.label }}",
            "fixed": 7,
            "nested": [{ "label": "{{ decision.label }}", "none": null }]
        }))
        .unwrap();
        let out = jt.render(&ctx()).unwrap();
        assert_eq!(
            out,
            json!({
                "id": 42,
                "id_text": "#42",
                "urgent": true,
                "tags": ["a", "b"],
                "meta": { "k": "v" },
                "conf": 0.9,
                "sum": 43,
                "two": "e1/billing",
                "fixed": 7,
                "nested": [{ "label": "billing", "none": null }]
            })
        );
        assert_eq!(jt.source()["fixed"], json!(7));
    }

    #[test]
    fn json_template_errors() {
        let err = JsonTemplate::parse(json!({ "a": ["{{ payload. }}"] })).unwrap_err();
        assert!(err.to_string().contains("{{ payload. }}"), "{err}");
        let err = JsonTemplate::parse(json!({ "a": "x {% if %}" })).unwrap_err();
        assert!(matches!(err, TemplateError::Syntax { .. }));
        let jt = JsonTemplate::parse(json!({ "a": "{{ payload.missing }}" })).unwrap();
        let msg = jt.render(&ctx()).unwrap_err().to_string();
        assert!(
            msg.contains("template `{{ payload.missing }}` failed"),
            "{msg}"
        );
        assert!(msg.contains("payload.missing"), "{msg}");
    }
}
