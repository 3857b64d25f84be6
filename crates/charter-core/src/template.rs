//! Templates (MiniJinja syntax) for action parameters, dedupe keys, decision text and log
//! messages.
//!
//! Templates are compiled once when a charter is loaded and rendered many times. Rendering is
//! strict (a reference to a missing value is an error that names it), never HTML-escapes (the
//! output is JSON or plain text) and is bounded by a fuel budget so that no template can run
//! for long.
//!
//! Templates that build a URL (an HTTP action's `path` or `url`, a context fetch's `get`) are
//! compiled with [`Template::parse_url`]: every value a `{{ ... }}` inserts is
//! percent-encoded as in RFC 6570's simple expansion (everything but the unreserved
//! characters `A-Z a-z 0-9 - . _ ~`), so a value can neither add a path segment (`/` becomes
//! `%2F`) nor start a query or fragment. Two filters opt out, visibly in the charter:
//! `safe_path` (a value meant to hold several path segments, such as GitHub's
//! `owner/repo`: each segment is encoded, `/` kept, `.` and `..` segments refused) and
//! `safe` (the value is inserted as written, for a value that is already encoded). The
//! `urlencode` filter encodes like the default, in any template (a mapping becomes
//! `k=v&k2=v2`).

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
    env.add_filter("urlencode", urlencode_filter);
    env.add_filter("safe_path", safe_path_filter);
    env
}

/// [`environment`] whose `{{ ... }}` output is percent-encoded unless marked safe (by the
/// `safe`, `safe_path` or `urlencode` filter).
fn url_environment() -> Environment<'static> {
    let mut env = environment();
    env.set_formatter(|out, state, value| {
        if value.is_safe() || value.is_undefined() {
            return minijinja::escape_formatter(out, state, value);
        }
        let text = match value.as_str() {
            Some(s) => encode_component(s),
            None => encode_component(&value.to_string()),
        };
        out.write_str(&text).map_err(|_| {
            minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "cannot write output")
        })
    });
    env
}

/// Whether `b` is an RFC 3986 unreserved character (never percent-encoded).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes every byte of `s`'s UTF-8 form except the unreserved characters
/// (RFC 6570 simple expansion): the result is safe as one path segment or one query value.
pub fn encode_component(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// `urlencode`: a string (or number, boolean) encoded with [`encode_component`]; a mapping
/// as `key=value` pairs joined by `&`, both sides encoded. The result is marked safe, so a
/// URL template does not encode it twice.
fn urlencode_filter(value: minijinja::Value) -> Result<minijinja::Value, minijinja::Error> {
    let text = if value.kind() == minijinja::value::ValueKind::Map {
        let mut pairs = Vec::new();
        for key in value.try_iter()? {
            let item = value.get_item(&key)?;
            let k = key.as_str().map_or_else(|| key.to_string(), str::to_string);
            let v = item
                .as_str()
                .map_or_else(|| item.to_string(), str::to_string);
            pairs.push(format!("{}={}", encode_component(&k), encode_component(&v)));
        }
        pairs.join("&")
    } else if let Some(s) = value.as_str() {
        encode_component(s)
    } else {
        encode_component(&value.to_string())
    };
    Ok(minijinja::Value::from_safe_string(text))
}

/// `safe_path`: a value meant to hold several path segments (`owner/repo`). Each segment is
/// encoded with [`encode_component`] and `/` is kept; an empty, `.` or `..` segment is an
/// error (it would change which resource is addressed). The result is marked safe.
fn safe_path_filter(value: String) -> Result<minijinja::Value, minijinja::Error> {
    let mut segments = Vec::new();
    for segment in value.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!(
                    "safe_path: `{value}` has an empty, `.` or `..` segment; expected segments separated by single `/`"
                ),
            ));
        }
        segments.push(encode_component(segment));
    }
    Ok(minijinja::Value::from_safe_string(segments.join("/")))
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
        Template::parse_in(source, environment())
    }

    /// Compiles a template that builds a URL (a path, a query, a whole URL): every value a
    /// `{{ ... }}` inserts is percent-encoded (RFC 6570 simple expansion) unless a filter
    /// marks it safe (`safe_path`, `safe`, `urlencode`); see the module documentation.
    pub fn parse_url(source: &str) -> Result<Template, TemplateError> {
        Template::parse_in(source, url_environment())
    }

    /// Whether the template is plain text: no `{{`, `{%` or `{#`, so it renders to itself
    /// whatever the context.
    pub fn is_literal(&self) -> bool {
        let s = &self.inner.source;
        !(s.contains("{{") || s.contains("{%") || s.contains("{#"))
    }

    fn parse_in(source: &str, mut env: Environment<'static>) -> Result<Template, TemplateError> {
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
    fn url_templates_encode_every_inserted_value() {
        let ctx = json!({"payload": {
            "id": "../../admin?x=1#", "n": 42, "plain": "A-1_b.c~d", "space": "a b+c",
            "repo": "acme/widgets", "enc": "a%2Fb", "q": {"k": "v w", "x": "1&2"},
            "dots": "..", "utf": "é"
        }});
        let t = |s: &str| Template::parse_url(s).unwrap().render(&ctx).unwrap();
        // The traversal of issue #23 stays inside one segment.
        assert_eq!(
            t("/things/{{ payload.id }}"),
            "/things/..%2F..%2Fadmin%3Fx%3D1%23"
        );
        // An ordinary value renders as before.
        assert_eq!(t("/tickets/{{ payload.n }}.json"), "/tickets/42.json");
        assert_eq!(t("/t/{{ payload.plain }}"), "/t/A-1_b.c~d");
        assert_eq!(t("/s?q={{ payload.space }}"), "/s?q=a%20b%2Bc");
        assert_eq!(t("/s/{{ payload.utf }}"), "/s/%C3%A9");
        // Literal text is the author's and is kept.
        assert_eq!(t("/a/b?x=1&y={{ payload.n }}#frag"), "/a/b?x=1&y=42#frag");
        // Opt-outs: several segments, a value already encoded, a whole query.
        assert_eq!(
            t("/repos/{{ payload.repo | safe_path }}/issues"),
            "/repos/acme/widgets/issues"
        );
        assert_eq!(t("/x/{{ payload.enc | safe }}"), "/x/a%2Fb");
        assert_eq!(t("/x?{{ payload.q | urlencode }}"), "/x?k=v%20w&x=1%262");
        // `urlencode` is not encoded twice.
        assert_eq!(t("/x/{{ payload.space | urlencode }}"), "/x/a%20b%2Bc");
        // A bare `..` value is unreserved text: the request builder refuses the segment.
        assert_eq!(t("/x/{{ payload.dots }}"), "/x/..");
        let err = Template::parse_url("/x/{{ payload.id | safe_path }}")
            .unwrap()
            .render(&ctx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("safe_path"), "{err}");
        // Other templates are not encoded, but have the filter.
        let plain = Template::parse("{{ payload.id }} {{ payload.space | urlencode }}").unwrap();
        assert_eq!(plain.render(&ctx).unwrap(), "../../admin?x=1# a%20b%2Bc");
        assert!(Template::parse("/a/b").unwrap().is_literal());
        assert!(!Template::parse("/a/{{ b }}").unwrap().is_literal());
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
