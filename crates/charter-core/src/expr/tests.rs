//! Tests of routing expressions: compilation, evaluation, budgets and regex handling.

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

/// A literal `matches()` pattern is compiled once, with the expression, however often it
/// is evaluated; results are those of an unanchored RE2-style search.
#[test]
fn a_literal_pattern_is_compiled_once() {
    let before = regex_compiles_on_this_thread();
    let e = Expr::parse(
        r#"payload.ticket.subject.matches("(?i)REFUND|return") && matches(event.type, "^ticket\\.")
           && !event.type.matches("(?i)REFUND|return|x^")"#,
    )
    .unwrap();
    assert_eq!(regex_compiles_on_this_thread() - before, 3);
    for _ in 0..1000 {
        assert!(e.eval_bool(&ctx()).unwrap());
    }
    assert_eq!(regex_compiles_on_this_thread() - before, 3);
    assert!(!eval(r#"payload.ticket.subject.matches("^refund")"#).unwrap());
    assert!(eval(r#"payload.ticket.subject.matches("refund")"#).unwrap());
}

/// A pattern computed at evaluation is compiled on first use and then found in the cache;
/// an invalid one fails the evaluation with a message naming the expression.
#[test]
fn a_computed_pattern_is_cached_and_an_invalid_one_named() {
    let e = Expr::parse(r#"payload.ticket.subject.matches(headers["x-pat"])"#).unwrap();
    assert!(e.is_costly());
    let mut c = ctx();
    // A pattern no other test uses: the cache is shared by every thread.
    c["headers"]["x-pat"] = json!("my (order|refund) [a-z]+ 7f3c0e");
    let before = regex_compiles_on_this_thread();
    for _ in 0..100 {
        assert!(!e.eval_bool(&c).unwrap());
    }
    assert_eq!(regex_compiles_on_this_thread() - before, 1);
    c["headers"]["x-pat"] = json!("(refund");
    let err = e.eval_bool(&c).unwrap_err().to_string();
    assert!(
        err.starts_with(r#"expression `payload.ticket.subject.matches(headers["x-pat"])` failed"#),
        "{err}"
    );
    assert!(err.contains("'(refund' not a valid regex"), "{err}");
}

#[test]
fn an_invalid_literal_pattern_is_refused_at_compile_time() {
    let err = Expr::parse(r#"payload.x.matches("(unclosed")"#).unwrap_err();
    assert!(matches!(err, ExprError::Syntax { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("\"(unclosed\" is not a valid regular expression"),
        "{err}"
    );
}

fn lists(n: i64) -> serde_json::Value {
    json!({"payload": {"a": (0..n).collect::<Vec<_>>(), "b": (n..2 * n).collect::<Vec<_>>()}})
}

fn budget(steps: u64) -> Budget {
    Budget {
        steps,
        deadline: None,
    }
}

/// Nested loops over the payload stop at the budget, with a reason naming the
/// expression and the budget, even when `||` would absorb the error.
#[test]
fn nested_loops_stop_at_the_step_budget() {
    let c = lists(300);
    for src in [
        "payload.a.exists(x, payload.b.exists(y, x == y))",
        "payload.a.exists(x, payload.b.exists(y, x == y)) || true",
        "payload.a.all(x, payload.b.all(y, x != y))",
        "size(payload.a.map(x, payload.b.filter(y, y == x))) == 0",
        "payload.a.exists_one(x, payload.b.exists_one(y, y == x))",
    ] {
        let e = Expr::parse(src).unwrap();
        assert!(e.is_costly());
        let err = e.eval_bool_within(&c, &budget(50_000)).unwrap_err();
        assert!(matches!(err, ExprError::Budget { .. }), "{src}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "expression `{src}` exceeded its evaluation budget of 50000 steps"
            )),
            "{msg}"
        );
        // 300 x 300 = 90,000 steps fit the default budget; the values are unchanged.
        assert!(e.eval_bool(&c).is_ok(), "{src}");
    }
    assert!(
        !Expr::parse("payload.a.exists(x, payload.b.exists(y, x == y))")
            .unwrap()
            .eval_bool(&c)
            .unwrap()
    );
    assert!(
        Expr::parse("payload.a.all(x, payload.b.all(y, x != y))")
            .unwrap()
            .eval_bool(&c)
            .unwrap()
    );
}

/// Every loop iteration counts one step, and every list element an `in` searches.
#[test]
fn steps_count_iterations_and_elements_searched() {
    let c = lists(100);
    let single = Expr::parse("payload.a.exists(x, x == 99)").unwrap();
    assert!(single.eval_bool_within(&c, &budget(100)).unwrap());
    assert!(single.eval_bool_within(&c, &budget(99)).is_err());
    let filter = Expr::parse("size(payload.a.filter(x, x % 2 == 0)) == 50").unwrap();
    assert!(filter.eval_bool_within(&c, &budget(100)).unwrap());
    assert!(filter.eval_bool_within(&c, &budget(99)).is_err());
    let map = Expr::parse("payload.a.map(x, x * 2)[99] == 198").unwrap();
    assert!(map.eval_bool_within(&c, &budget(100)).unwrap());
    assert!(map.eval_bool_within(&c, &budget(99)).is_err());
    // 100 iterations, each searching the 100 elements of `b`.
    let scan = Expr::parse("payload.a.exists(x, x in payload.b)").unwrap();
    assert!(!scan.eval_bool_within(&c, &budget(100 * 101)).unwrap());
    assert!(scan.eval_bool_within(&c, &budget(100 * 101 - 1)).is_err());
    // Without loops nothing is counted, and membership in a map is not a search.
    let plain = Expr::parse(r#"99 in payload.a && "a" in payload"#).unwrap();
    assert!(!plain.is_costly());
    assert!(plain.eval_bool_within(&c, &budget(0)).is_err());
    assert!(
        Expr::parse(r#""a" in payload && payload.a[0] == 0"#)
            .unwrap()
            .eval_bool_within(&c, &budget(0))
            .unwrap()
    );
}

/// The caller's clock bounds the time an evaluation takes.
#[test]
fn a_deadline_stops_the_evaluation() {
    let e = Expr::parse("payload.a.exists(x, x < 0)").unwrap();
    let b = Budget {
        steps: u64::MAX,
        deadline: Some(Deadline {
            limit: Duration::ZERO,
            now: Instant::now,
        }),
    };
    let err = e.eval_bool_within(&lists(10), &b).unwrap_err().to_string();
    assert!(
        err.contains("exceeded its evaluation budget of 0 ms"),
        "{err}"
    );
    let b = Budget {
        steps: u64::MAX,
        deadline: Some(Deadline {
            limit: Duration::from_secs(3600),
            now: Instant::now,
        }),
    };
    assert!(!e.eval_bool_within(&lists(10), &b).unwrap());
}

/// The counting calls change no result: an error in one iteration of `exists` is still
/// absorbed by a later `true`, and still reported when nothing absorbs it.
#[test]
fn loop_errors_keep_their_semantics() {
    let c = json!({"payload": {"n": [0, 1, 2]}});
    let e = Expr::parse("payload.n.exists(x, 2 / x == 2)").unwrap();
    assert!(e.eval_bool(&c).unwrap());
    let e = Expr::parse("payload.n.exists(x, 2 / x == 5)").unwrap();
    assert!(matches!(e.eval_bool(&c), Err(ExprError::Eval { .. })));
    let e = Expr::parse("payload.n.all(x, 2 / x == 5)").unwrap();
    assert!(!e.eval_bool(&c).unwrap());
    let e = Expr::parse("payload.n.map(k, {'v': k}.v).exists_one(x, x == 1)").unwrap();
    assert!(e.eval_bool(&c).unwrap());
}

#[test]
fn source_and_debug() {
    let e = Expr::parse("true").unwrap();
    assert_eq!(e.source(), "true");
    assert_eq!(format!("{e:?}"), r#"Expr("true")"#);
    assert!(e.clone().eval_bool(&json!({})).unwrap());
}
