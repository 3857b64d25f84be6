//! Routing and rule expressions, written in CEL (Common Expression Language).
//!
//! An [`Expr`] is compiled once when a charter is loaded and evaluated many times against
//! the JSON context built by [`crate::routing::eval_context`] (`payload`, `event`,
//! `decision`, `headers`, `context`). Expressions must evaluate to a boolean.
//!
//! Compiling also prepares what evaluations would otherwise redo: `matches()` patterns
//! written as literals are compiled with the expression (`cel`'s own `matches` compiled its
//! pattern at every call), and counting calls are woven into every loop so that an
//! evaluation stops at its [`Budget`].

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cel::common::ast::{CallExpr, Expr as Node, IdedExpr, LiteralValue, operators};
use cel::common::types::{self, CelBool, CelString};
use cel::common::value::CowVal;
use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, Value};

/// A compiled CEL expression. Cheap to clone; safe to share between threads.
#[derive(Clone)]
pub struct Expr {
    inner: Arc<Inner>,
}

struct Inner {
    source: String,
    /// The parsed expression, with the budget's counting calls woven in (see [`instrument`]).
    program: IdedExpr,
    /// The names the expression refers to (context keys, and comprehension variables, which
    /// never match one). Only these are converted to CEL values at evaluation: converting
    /// the whole context (the payload, headers, ...) was most of an evaluation's cost.
    variables: Vec<String>,
    /// The `matches()` patterns written as string literals, compiled when the expression is.
    literals: Option<Arc<Literals>>,
    /// Whether an evaluation can cost more than linear time in its input: the expression
    /// holds a loop (`exists`, `all`, `map`, ...) or a `matches()` with a pattern that is not
    /// a literal (compiled from the input).
    costly: bool,
}

/// Compiled literal patterns of one expression: (pattern, regex), a handful at most.
type Literals = Vec<(String, regex::Regex)>;

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
    /// The evaluation was stopped because it did more work than its [`Budget`] allows.
    #[error("expression `{expr}` exceeded its evaluation budget of {limit}; {hint}")]
    Budget {
        expr: String,
        limit: String,
        hint: &'static str,
    },
}

/// How much work one evaluation may do before it is stopped with [`ExprError::Budget`].
///
/// The work is counted in steps: one per iteration of a loop macro (`exists`, `all`,
/// `exists_one`, `map`, `filter`, nested loops included) and one per list element an `in`
/// looks through. An expression without loops does work linear in its input (bounded by the
/// body limit), so only loops over the payload can make it large: two 8,000-item lists in
/// an `exists` over an `exists` take 64 million steps.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Steps one evaluation may take.
    pub steps: u64,
    /// A wall-clock limit, checked at every step, for the work a step itself can do
    /// (comparing long strings or lists). The caller provides the clock, as this crate
    /// reads none; without one only steps are counted.
    pub deadline: Option<Deadline>,
}

/// A wall-clock limit for one evaluation (see [`Budget::deadline`]).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// The time the evaluation may take, from its start.
    pub limit: Duration,
    /// The clock (`Instant::now` in the server).
    pub now: fn() -> Instant,
}

/// Steps an evaluation may take by default: about 0.7 s of a core for the costliest steps
/// (an `exists` over an `exists`: 24.5 s for 36 million in the issue that asked for the
/// budget), and hundreds of times what a route over a payload of a few hundred items needs.
pub const DEFAULT_STEPS: u64 = 1_000_000;

impl Default for Budget {
    fn default() -> Self {
        Budget {
            steps: DEFAULT_STEPS,
            deadline: None,
        }
    }
}

/// The name of the call woven into every loop step: it counts the step. It cannot be
/// written in CEL (no identifier starts with `@`), so no expression calls it by itself.
const STEP: &str = "@charter_step";
/// The name of the call woven around the list of an `in`: it counts the list's elements.
const SCAN: &str = "@charter_scan";

/// The CEL environment, built once and shared by every evaluation: the standard library
/// (built without its own `matches`, which compiled its pattern at every call), this
/// module's `matches`, and the budget's counting calls.
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        let declared = [
            env.add_overload(
                "matches",
                "charter_matches",
                vec![types::STRING_TYPE, types::STRING_TYPE],
                matches,
            ),
            env.add_member_overload(
                "matches",
                "charter_matches_member",
                types::STRING_TYPE,
                vec![types::STRING_TYPE],
                matches,
            ),
            env.add_overload(STEP, "charter_step", vec![types::DYN_TYPE], count_step),
            env.add_overload(SCAN, "charter_scan", vec![types::DYN_TYPE], count_scan),
        ];
        for d in declared {
            // The names are this module's own; a clash is a programming error caught by
            // every test that evaluates an expression.
            if let Err(e) = d {
                panic!("declaring a CEL function failed: {e}");
            }
        }
        Arc::new(env)
    })
}

/// What the evaluation running on this thread may still do, and what its functions see.
/// Set for the length of one [`Expr::eval_bool_within`], on the thread that evaluates.
struct Running {
    steps_left: Cell<u64>,
    /// When the evaluation must stop, and the clock to read.
    deadline: Cell<Option<(Instant, Clock)>>,
    exceeded: Cell<Option<Exceeded>>,
    literals: RefCell<Option<Arc<Literals>>>,
}

/// A clock handed in by the caller (this crate reads none by itself).
type Clock = fn() -> Instant;

#[derive(Debug, Clone, Copy)]
enum Exceeded {
    Steps,
    Time,
}

thread_local! {
    static RUNNING: Running = const {
        Running {
            steps_left: Cell::new(u64::MAX),
            deadline: Cell::new(None),
            exceeded: Cell::new(None),
            literals: RefCell::new(None),
        }
    };
    /// Regular expressions compiled on this thread by expressions (literal patterns when an
    /// expression is compiled, other patterns when one is evaluated and not yet cached).
    static REGEX_COMPILES: Cell<u64> = const { Cell::new(0) };
}

/// How many regular expressions `matches()` compiled on the calling thread so far: literal
/// patterns once when their expression is compiled, other patterns when first evaluated
/// (then cached). For tests that check a pattern is not compiled again per evaluation.
pub fn regex_compiles_on_this_thread() -> u64 {
    REGEX_COMPILES.with(Cell::get)
}

fn compile_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    REGEX_COMPILES.with(|c| c.set(c.get() + 1));
    regex::Regex::new(pattern)
}

/// Patterns computed at evaluation (from the payload, say), compiled once and kept while
/// they are among the last [`DYNAMIC_CAPACITY`] distinct ones.
struct DynamicCache {
    map: HashMap<String, regex::Regex>,
    order: VecDeque<String>,
}

/// Distinct computed patterns kept compiled.
const DYNAMIC_CAPACITY: usize = 256;
/// Computed patterns longer than this are compiled for each evaluation, never kept.
const DYNAMIC_MAX_LEN: usize = 4096;

fn dynamic_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    static CACHE: OnceLock<Mutex<DynamicCache>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        Mutex::new(DynamicCache {
            map: HashMap::new(),
            order: VecDeque::new(),
        })
    });
    if pattern.len() > DYNAMIC_MAX_LEN {
        return compile_regex(pattern);
    }
    // A poisoned lock only means another thread panicked while holding it: the map is
    // still a valid cache.
    if let Some(re) = cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .map
        .get(pattern)
    {
        return Ok(re.clone());
    }
    let re = compile_regex(pattern)?;
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if !c.map.contains_key(pattern) {
        if c.order.len() >= DYNAMIC_CAPACITY
            && let Some(oldest) = c.order.pop_front()
        {
            c.map.remove(&oldest);
        }
        c.order.push_back(pattern.to_string());
        c.map.insert(pattern.to_string(), re.clone());
    }
    Ok(re)
}

/// `matches(text, pattern)` and `text.matches(pattern)`: RE2 syntax (the `regex` crate),
/// true when the pattern matches anywhere in the text. A literal pattern was compiled with
/// the expression; another one comes from the bounded cache of computed patterns.
fn matches<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let text = args.first().and_then(|a| a.downcast_ref::<CelString>());
    let pattern = args.get(1).and_then(|a| a.downcast_ref::<CelString>());
    let (Some(text), Some(pattern)) = (text, pattern) else {
        return Err(ExecutionError::function_error(
            "matches",
            "expects a string and a pattern",
        ));
    };
    let (text, pattern) = (text.inner(), pattern.inner());
    let literal = RUNNING.with(|r| {
        r.literals.borrow().as_ref().and_then(|lits| {
            lits.iter()
                .find(|(p, _)| p == pattern)
                .map(|(_, re)| re.is_match(text))
        })
    });
    let found = match literal {
        Some(found) => found,
        None => dynamic_regex(pattern)
            .map_err(|err| {
                ExecutionError::function_error(
                    "matches",
                    format!("'{pattern}' not a valid regex:\n{err}"),
                )
            })?
            .is_match(text),
    };
    Ok(CowVal::owned(CelBool::from(found)))
}

/// Counts `n` steps of the running evaluation; an error once its budget is spent (and for
/// every later step, so that an error absorbed by `||` or `&&` still stops the loops).
fn charge(n: u64) -> Result<(), ExecutionError> {
    RUNNING.with(|r| {
        if r.exceeded.get().is_none() {
            let left = r.steps_left.get();
            if left < n {
                r.exceeded.set(Some(Exceeded::Steps));
            } else {
                r.steps_left.set(left - n);
                if let Some((at, now)) = r.deadline.get()
                    && now() >= at
                {
                    r.exceeded.set(Some(Exceeded::Time));
                }
            }
        }
        match r.exceeded.get() {
            None => Ok(()),
            Some(_) => Err(ExecutionError::function_error(
                "budget",
                "the evaluation budget is spent",
            )),
        }
    })
}

/// One loop step: counts it and passes its value through unchanged.
fn count_step<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    charge(1)?;
    if args.is_empty() {
        return Err(ExecutionError::invalid_argument_count(1, 0));
    }
    Ok(args.swap_remove(0))
}

/// The list an `in` looks through: counts its elements and passes it through unchanged.
fn count_scan<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    if args.is_empty() {
        return Err(ExecutionError::invalid_argument_count(1, 0));
    }
    let list = args.swap_remove(0);
    if types::LIST_TYPE.is_assignable(list.as_ref())
        && let Some(size) = list.as_sizer()
    {
        charge(u64::try_from(*size.size().inner()).unwrap_or(0))?;
    }
    Ok(list)
}

/// Sets up the thread's [`Running`] for one evaluation and clears it when dropped.
struct RunningGuard;

impl RunningGuard {
    fn start(budget: &Budget, literals: Option<&Arc<Literals>>) -> RunningGuard {
        RUNNING.with(|r| {
            r.steps_left.set(budget.steps);
            r.deadline
                .set(budget.deadline.map(|d| ((d.now)() + d.limit, d.now)));
            r.exceeded.set(None);
            *r.literals.borrow_mut() = literals.cloned();
        });
        RunningGuard
    }

    fn exceeded(&self) -> Option<Exceeded> {
        RUNNING.with(|r| r.exceeded.get())
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        RUNNING.with(|r| {
            r.steps_left.set(u64::MAX);
            r.deadline.set(None);
            r.exceeded.set(None);
            *r.literals.borrow_mut() = None;
        });
    }
}

/// What [`instrument`] found and changed in a parsed expression.
#[derive(Default)]
struct Scan {
    /// The greatest node id, so that woven-in nodes get ids of their own.
    next_id: u64,
    loops: usize,
    literal_patterns: Vec<String>,
    dynamic_patterns: bool,
}

fn max_id(e: &IdedExpr) -> u64 {
    let mut max = e.id;
    visit(e, &mut |n| max = max.max(n.id));
    max
}

/// Calls `f` on every node under `e` (not `e` itself).
fn visit(e: &IdedExpr, f: &mut impl FnMut(&IdedExpr)) {
    let mut each = |c: &IdedExpr| {
        f(c);
        visit(c, f);
    };
    match &e.expr {
        Node::Call(call) => {
            if let Some(t) = &call.target {
                each(t);
            }
            call.args.iter().for_each(&mut each);
        }
        Node::Comprehension(c) => {
            for part in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                each(part);
            }
        }
        Node::List(l) => l.elements.iter().for_each(&mut each),
        Node::Map(m) => {
            for entry in &m.entries {
                if let cel::common::ast::EntryExpr::MapEntry(me) = &entry.expr {
                    each(&me.key);
                    each(&me.value);
                }
            }
        }
        Node::Select(s) => each(&s.operand),
        Node::Struct(s) => {
            for entry in &s.entries {
                match &entry.expr {
                    cel::common::ast::EntryExpr::StructField(sf) => each(&sf.value),
                    cel::common::ast::EntryExpr::MapEntry(me) => {
                        each(&me.key);
                        each(&me.value);
                    }
                }
            }
        }
        Node::Ident(_) | Node::Literal(_) | Node::Unspecified => {}
    }
}

/// Wraps `e` in a call of `function` (a counting identity).
fn wrap(e: &mut IdedExpr, function: &str, scan: &mut Scan) {
    scan.next_id += 1;
    let inner = std::mem::take(e);
    *e = IdedExpr {
        id: scan.next_id,
        expr: Node::Call(CallExpr {
            func_name: function.to_string(),
            target: None,
            args: vec![inner],
        }),
    };
}

/// Weaves the budget's counting calls into a parsed expression and collects its `matches()`
/// patterns. Every loop counts one step per iteration: the count goes around the loop's
/// condition, or, for `map` / `filter` / `exists_one` (whose condition is the literal
/// `true`, which the interpreter relies on to build their lists in place), around the
/// value each iteration computes, keeping the shapes the interpreter recognises. The list
/// of every `in` is counted by its size. Values pass through unchanged, so results and
/// errors are those of the expression as written.
fn instrument(e: &mut IdedExpr, scan: &mut Scan) {
    match &mut e.expr {
        Node::Call(call) => {
            if let Some(t) = call.target.as_deref_mut() {
                instrument(t, scan);
            }
            for a in &mut call.args {
                instrument(a, scan);
            }
            if call.func_name == "matches" {
                let pattern = match (call.target.is_some(), call.args.as_slice()) {
                    (true, [p]) | (false, [_, p]) => Some(p),
                    _ => None,
                };
                match pattern.map(|p| &p.expr) {
                    Some(Node::Literal(LiteralValue::String(s))) => {
                        scan.literal_patterns.push(s.inner().to_string());
                    }
                    _ => scan.dynamic_patterns = true,
                }
            }
            if call.func_name == operators::IN
                && let Some(list) = call.args.get_mut(1)
            {
                wrap(list, SCAN, scan);
            }
        }
        Node::Comprehension(c) => {
            scan.loops += 1;
            for part in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                instrument(part, scan);
            }
            let accu = c.accu_var.clone();
            let is_accu = |e: &IdedExpr| matches!(&e.expr, Node::Ident(n) if *n == accu);
            let cond_is_literal = matches!(c.loop_cond.expr, Node::Literal(_));
            let step_value: Option<&mut IdedExpr> = match &mut c.loop_step.expr {
                _ if !cond_is_literal => None,
                // `g ? @result + [x] : @result` (filter, map with a filter, exists_one)
                Node::Call(call)
                    if call.func_name == operators::CONDITIONAL
                        && call.args.len() == 3
                        && is_accu(&call.args[2]) =>
                {
                    call.args.first_mut()
                }
                // `@result + [x]` (map)
                Node::Call(call)
                    if call.func_name == operators::ADD
                        && call.args.len() == 2
                        && is_accu(&call.args[0]) =>
                {
                    match &mut call.args[1].expr {
                        Node::List(l) if l.optional_indices.is_empty() => l.elements.first_mut(),
                        _ => None,
                    }
                }
                _ => None,
            };
            match step_value {
                Some(v) => wrap(v, STEP, scan),
                None => wrap(&mut c.loop_cond, STEP, scan),
            }
        }
        Node::List(l) => l.elements.iter_mut().for_each(|x| instrument(x, scan)),
        Node::Map(m) => {
            for entry in &mut m.entries {
                if let cel::common::ast::EntryExpr::MapEntry(me) = &mut entry.expr {
                    instrument(&mut me.key, scan);
                    instrument(&mut me.value, scan);
                }
            }
        }
        Node::Select(s) => instrument(&mut s.operand, scan),
        Node::Struct(s) => {
            for entry in &mut s.entries {
                match &mut entry.expr {
                    cel::common::ast::EntryExpr::StructField(sf) => instrument(&mut sf.value, scan),
                    cel::common::ast::EntryExpr::MapEntry(me) => {
                        instrument(&mut me.key, scan);
                        instrument(&mut me.value, scan);
                    }
                }
            }
        }
        Node::Ident(_) | Node::Literal(_) | Node::Unspecified => {}
    }
}

impl Expr {
    /// Compiles `source`. Syntax errors carry the column and the parser's message; a
    /// `matches()` pattern written as a literal is compiled here, once, and an invalid one
    /// is a syntax error.
    pub fn parse(source: &str) -> Result<Expr, ExprError> {
        if source.trim().is_empty() {
            return Err(ExprError::Syntax {
                expr: source.to_string(),
                message: "the expression is empty; write a condition such as \
                          `decision.label == \"billing\"` or `true`"
                    .to_string(),
            });
        }
        let mut program = env()
            .parser()
            .parse(source)
            .map_err(|errs| ExprError::Syntax {
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
        variables.dedup();
        let mut scan = Scan {
            next_id: max_id(&program),
            ..Scan::default()
        };
        instrument(&mut program, &mut scan);
        let mut literals: Literals = Vec::new();
        for p in scan.literal_patterns {
            if literals.iter().any(|(q, _)| *q == p) {
                continue;
            }
            let re = compile_regex(&p).map_err(|err| ExprError::Syntax {
                expr: source.to_string(),
                message: format!(
                    "the `matches` pattern {p:?} is not a valid regular expression: {err}"
                ),
            })?;
            literals.push((p, re));
        }
        Ok(Expr {
            inner: Arc::new(Inner {
                source: source.to_string(),
                program,
                variables,
                literals: (!literals.is_empty()).then(|| Arc::new(literals)),
                costly: scan.loops > 0 || scan.dynamic_patterns,
            }),
        })
    }

    /// The expression as written in the charter.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Whether an evaluation can take more than time linear in its input: the expression
    /// loops (`exists`, `all`, `map`, ...) or compiles a pattern computed from the input.
    /// Such expressions are evaluated away from the server's request threads.
    pub fn is_costly(&self) -> bool {
        self.inner.costly
    }

    /// Evaluates the expression over a JSON context object within the default [`Budget`];
    /// see [`Expr::eval_bool_within`].
    pub fn eval_bool(&self, ctx: &serde_json::Value) -> Result<bool, ExprError> {
        self.eval_bool_within(ctx, &Budget::default())
    }

    /// Evaluates the expression over a JSON context object; each top-level key becomes a
    /// variable. The result must be a boolean. A missing field is an error, not `false`:
    /// guard optional fields with `has(payload.x)`. An evaluation that takes more than
    /// `budget` is stopped with [`ExprError::Budget`].
    pub fn eval_bool_within(
        &self,
        ctx: &serde_json::Value,
        budget: &Budget,
    ) -> Result<bool, ExprError> {
        let referenced = |name: &str| {
            self.inner
                .variables
                .binary_search_by(|v| v.as_str().cmp(name))
                .is_ok()
        };
        let guard = RunningGuard::start(budget, self.inner.literals.as_ref());
        let mut result = self.execute(ctx, referenced);
        // Should the reference scan ever miss a name the context has, evaluate again with
        // the whole context rather than report a name as unknown that is not.
        if let Err(ExecutionError::UndeclaredReference(name)) = &result
            && ctx.get(name.as_str()).is_some()
            && guard.exceeded().is_none()
        {
            result = self.execute(ctx, |_| true);
        }
        // An exceeded budget wins over any result: `||` may have absorbed the error.
        if let Some(exceeded) = guard.exceeded() {
            let (limit, hint) = match exceeded {
                Exceeded::Steps => (
                    format!(
                        "{} steps (loop iterations and list elements searched by `in`)",
                        budget.steps
                    ),
                    "the input is too large for this expression: loop over fewer items, or avoid nesting loops over the payload",
                ),
                Exceeded::Time => (
                    format!("{} ms", budget.deadline.map_or(0, |d| d.limit.as_millis())),
                    "the input is too large for this expression: loop over fewer items, or avoid nesting loops over the payload",
                ),
            };
            return Err(ExprError::Budget {
                expr: self.inner.source.clone(),
                limit,
                hint,
            });
        }
        drop(guard);
        match result {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(ExprError::NotBool {
                expr: self.inner.source.clone(),
                found: describe(&other),
            }),
            Err(e) => Err(ExprError::Eval {
                expr: self.inner.source.clone(),
                message: match e {
                    ExecutionError::NoSuchKey(key) => format!(
                        "no such field `{key}` (test optional fields with `has(...)` first)"
                    ),
                    ExecutionError::UndeclaredReference(name) => format!(
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
    ) -> Result<Value, ExecutionError> {
        let mut context = Context::with_env(Arc::clone(env()));
        if let serde_json::Value::Object(vars) = ctx {
            for (name, value) in vars {
                if include(name) {
                    context.add_variable_from_value(name.as_str(), json_to_cel(value));
                }
            }
        }
        Value::resolve(&self.inner.program, &context)
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
mod tests;
