//! Routing and rule expressions, written in CEL (Common Expression Language).
//!
//! An [`Expr`] is compiled once when a charter is loaded and evaluated many times against
//! the JSON context built by [`crate::routing::eval_context`] (`payload`, `event`,
//! `decision`, `headers`, `context`). Expressions must evaluate to a boolean.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use cel::objects::{Key, Map};
use cel::{Context, Env, Program, Value};

/// A compiled CEL expression. Cheap to clone; safe to share between threads.
#[derive(Clone)]
pub struct Expr {
    inner: Arc<Inner>,
}

struct Inner {
    source: String,
    program: Program,
    /// The names the expression refers to (context keys, and comprehension variables, which
    /// never match one). Only these are converted to CEL values at evaluation: converting
    /// the whole context (the payload, headers, ...) was most of an evaluation's cost.
    variables: Vec<String>,
}

/// Why an expression could not be compiled or evaluated. Every message names the expression.
#[derive(Debug, thiserror::Error)]
pub enum ExprError {
    /// The expression is not valid CEL.
    #[error("invalid expression `{expr}`: {message}")]
    Syntax { expr: String, message: String },
    /// Evaluation failed: a missing field, a type mismatch, a bad function call.
    #[error("expression `{expr}` failed: {message}")]
    Eval { expr: String, message: String },
    /// The expression evaluated to something other than `true` or `false`.
    #[error("expression `{expr}` must evaluate to true or false, but it gave {found}")]
    NotBool { expr: String, found: String },
}

/// The standard CEL environment, built once and shared by every evaluation.
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib()))
}

impl Expr {
    /// Compiles `source`. Syntax errors carry the column and the parser's message.
    pub fn parse(source: &str) -> Result<Expr, ExprError> {
        if source.trim().is_empty() {
            return Err(ExprError::Syntax {
                expr: source.to_string(),
                message: "the expression is empty; write a condition such as \
                          `decision.label == \"billing\"` or `true`"
                    .to_string(),
            });
        }
        let program = env().compile(source).map_err(|errs| ExprError::Syntax {
            expr: source.to_string(),
            message: errs
                .errors
                .iter()
                .map(|e| {
                    let msg = tidy_parse_message(&e.msg);
                    if source.contains('\n') {
                        format!("line {} column {}: {msg}", e.pos.0, e.pos.1)
                    } else {
                        format!("column {}: {msg}", e.pos.1)
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
        })?;
        let mut variables: Vec<String> = program
            .references()
            .variables()
            .into_iter()
            .map(str::to_string)
            .collect();
        variables.sort_unstable();
        Ok(Expr {
            inner: Arc::new(Inner {
                source: source.to_string(),
                program,
                variables,
            }),
        })
    }

    /// The expression as written in the charter.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Evaluates the expression over a JSON context object; each top-level key becomes a
    /// variable. The result must be a boolean. A missing field is an error, not `false`:
    /// guard optional fields with `has(payload.x)`.
    pub fn eval_bool(&self, ctx: &serde_json::Value) -> Result<bool, ExprError> {
        let referenced = |name: &str| {
            self.inner
                .variables
                .binary_search_by(|v| v.as_str().cmp(name))
                .is_ok()
        };
        let mut result = self.execute(ctx, referenced);
        // Should the reference scan ever miss a name the context has, evaluate again with
        // the whole context rather than report a name as unknown that is not.
        if let Err(cel::ExecutionError::UndeclaredReference(name)) = &result
            && ctx.get(name.as_str()).is_some()
        {
            result = self.execute(ctx, |_| true);
        }
        match result {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(ExprError::NotBool {
                expr: self.inner.source.clone(),
                found: describe(&other),
            }),
            Err(e) => Err(ExprError::Eval {
                expr: self.inner.source.clone(),
                message: match e {
                    cel::ExecutionError::NoSuchKey(key) => format!(
                        "no such field `{key}` (test optional fields with `has(...)` first)"
                    ),
                    cel::ExecutionError::UndeclaredReference(name) => format!(
                        "unknown name `{name}` (available: payload, event, decision, headers, context)"
                    ),
                    other => other.to_string(),
                },
            }),
        }
    }
}

impl Expr {
    /// Run the program with the context's top-level keys that `include` accepts as variables.
    fn execute(
        &self,
        ctx: &serde_json::Value,
        include: impl Fn(&str) -> bool,
    ) -> Result<Value, cel::ExecutionError> {
        let mut context = Context::with_env(Arc::clone(env()));
        if let serde_json::Value::Object(vars) = ctx {
            for (name, value) in vars {
                if include(name) {
                    context.add_variable_from_value(name.as_str(), json_to_cel(value));
                }
            }
        }
        self.inner.program.execute(&context)
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.inner.source).finish()
    }
}

/// Converts JSON to a CEL value. Integers become `int` when they fit (so `x == 3` holds for a
/// JSON `3`), larger ones `uint`, everything else `double`.
fn json_to_cel(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(json_to_cel).collect()))
        }
        serde_json::Value::Object(fields) => {
            let map: HashMap<Key, Value> = fields
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), json_to_cel(v)))
                .collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}

/// Shortens the CEL parser's messages: drops the long token list after `expecting`.
fn tidy_parse_message(msg: &str) -> String {
    let msg = msg.strip_prefix("Syntax error: ").unwrap_or(msg);
    let msg = match msg.find(" expecting {") {
        Some(i) => &msg[..i],
        None => msg,
    };
    msg.replace("mismatched input '<EOF>'", "unexpected end of expression")
}

/// A short description of a non-boolean result for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Int(i) => format!("the number {i}"),
        Value::UInt(u) => format!("the number {u}"),
        Value::Float(f) => format!("the number {f}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::List(_) => "a list".to_string(),
        Value::Map(_) => "a map".to_string(),
        Value::Bytes(_) => "bytes".to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> serde_json::Value {
        json!({
            "payload": {
                "ticket": { "id": 42, "subject": "Please refund my order", "priority": 3,
                            "tags": ["vip", "eu"], "score": 0.75 },
                "customer": null
            },
            "event": { "id": "e1", "type": "ticket.created" },
            "decision": { "label": "billing", "confidence": 0.9 },
            "headers": { "x-team": "ops" },
            "context": {}
        })
    }

    fn eval(src: &str) -> Result<bool, ExprError> {
        Expr::parse(src)?.eval_bool(&ctx())
    }

    #[test]
    fn expr_is_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Expr>();
    }

    #[test]
    fn string_equality_and_logic() {
        assert!(eval(r#"decision.label == "billing""#).unwrap());
        assert!(!eval(r#"decision.label == "bug""#).unwrap());
        assert!(eval(r#"decision.label == "billing" && event.type == "ticket.created""#).unwrap());
        assert!(eval(r#"decision.label == "bug" || headers["x-team"] == "ops""#).unwrap());
        assert!(!eval(r#"decision.label == "bug" || false"#).unwrap());
    }

    #[test]
    fn membership_numbers_and_strings() {
        assert!(eval(r#"decision.label in ["billing", "bug"]"#).unwrap());
        assert!(eval(r#""vip" in payload.ticket.tags"#).unwrap());
        assert!(!eval(r#""us" in payload.ticket.tags"#).unwrap());
        assert!(eval("payload.ticket.priority == 3").unwrap());
        assert!(eval("payload.ticket.priority >= 2 && payload.ticket.id < 100").unwrap());
        assert!(eval("decision.confidence > 0.85").unwrap());
        assert!(eval("payload.ticket.score < 1.0").unwrap());
        assert!(eval(r#"payload.ticket.subject.contains("refund")"#).unwrap());
        assert!(!eval(r#"payload.ticket.subject.contains("invoice")"#).unwrap());
        assert!(eval("size(payload.ticket.tags) == 2").unwrap());
    }

    #[test]
    fn has_guards_missing_fields() {
        assert!(eval("has(payload.ticket)").unwrap());
        assert!(!eval("has(payload.order)").unwrap());
        assert!(!eval(r#"has(payload.order) && payload.order.id == "x""#).unwrap());
    }

    /// Only the names an expression uses are converted to CEL; comprehensions, macros and
    /// several variables still see everything they name, and an unknown name is still one.
    #[test]
    fn only_referenced_variables_are_bound_and_all_of_them_are() {
        let e = Expr::parse(
            r#"payload.ticket.tags.exists(t, t == "eu") && headers["x-team"] == "ops"
               && payload.ticket.tags.all(t, size(t) >= 2) && has(decision.label)"#,
        )
        .unwrap();
        assert_eq!(
            e.inner.variables.iter().filter(|v| *v == "payload").count(),
            1
        );
        assert!(
            !e.inner
                .variables
                .iter()
                .any(|v| v == "event" || v == "context")
        );
        assert!(e.eval_bool(&ctx()).unwrap());
        assert!(eval("true").unwrap());
        let err = eval("ticket.id == 42").unwrap_err();
        assert!(err.to_string().contains("unknown name `ticket`"), "{err}");
    }

    #[test]
    fn missing_field_is_an_error_naming_the_expression() {
        let err = eval(r#"payload.order.plan == "enterprise""#).unwrap_err();
        assert!(matches!(err, ExprError::Eval { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(r#"`payload.order.plan == "enterprise"`"#),
            "{msg}"
        );
        assert!(msg.contains("order"), "{msg}");
        // Member access on null is an error too, not a panic.
        let err = eval(r#"payload.customer.plan == "enterprise""#).unwrap_err();
        assert!(err.to_string().contains("payload.customer.plan"), "{err}");
    }

    #[test]
    fn non_bool_result_is_an_error() {
        let err = eval("payload.ticket.priority + 1").unwrap_err();
        assert!(matches!(err, ExprError::NotBool { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "expression `payload.ticket.priority + 1` must evaluate to true or false, but it gave the number 4"
        );
        let err = eval("payload.ticket.subject").unwrap_err();
        assert!(err.to_string().contains("the string"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_expression() {
        let err = Expr::parse("decision.label == ").unwrap_err();
        assert!(matches!(err, ExprError::Syntax { .. }));
        let msg = err.to_string();
        assert!(
            msg.starts_with("invalid expression `decision.label == `: column"),
            "{msg}"
        );
        assert!(Expr::parse("   ").is_err());
        assert!(Expr::parse("a ==== b").is_err());
    }

    #[test]
    fn source_and_debug() {
        let e = Expr::parse("true").unwrap();
        assert_eq!(e.source(), "true");
        assert_eq!(format!("{e:?}"), r#"Expr("true")"#);
        assert!(e.clone().eval_bool(&json!({})).unwrap());
    }
}
