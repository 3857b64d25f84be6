//! The module graph of `charter-server`, read from its sources (like the route check in
//! `openapi.rs`): no module imports a handler module except the router, the operations
//! layer knows nothing of HTTP, and the top-level modules import each other without a
//! cycle.
//!
//! A module's references are every `crate::a::b` path in its code (comments left out), with
//! `use crate::{a, b::{c, d}}` groups expanded; a path names the longest module it starts
//! with (`crate::ops::events::Rerun` names `ops::events`), and paths that name an item of
//! the crate root (`crate::AppState`) are no edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that answer HTTP requests: the admin API, its listings and document, the web
/// UI, the MCP endpoint and Slack's callback.
const HANDLERS: &[&str] = &[
    "api",
    "list_api",
    "knowledge::api",
    "openapi",
    "ui",
    "mcp",
    "slack",
];

/// The router: the crate root builds it, `api` holds the route table it is built from, and
/// `guard` is its security layer (it knows the MCP path and the UI's stylesheet hash).
const ROUTER: &[&str] = &["", "api", "guard"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let p = entry.expect("dir entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `ops/events.rs` -> `ops::events`, `ui/mod.rs` -> `ui`, `lib.rs` -> `` (the root).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && !(parts.is_empty() && stem == "lib") {
        parts.push(stem.to_string());
    }
    parts.join("::")
}

/// The code of a file without its comments (line comments and doc comments; string
/// contents are kept, which is harmless for `crate::` paths).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expand the path that starts at `rest` (just after `crate::`) into full paths:
/// `a::b::C` -> [`a::b::C`], `{a, b::{c, d}}` -> [`a`, `b::c`, `b::d`].
fn expand(rest: &str) -> Vec<String> {
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 1;
        let mut end = group.len();
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = &group[..end];
        let mut items = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&inner[start..]);
        return items
            .into_iter()
            .map(str::trim)
            .filter(|i| !i.is_empty() && *i != "self")
            .flat_map(expand)
            .collect();
    }
    let head: String = rest.chars().take_while(|c| ident(*c)).collect();
    let after = &rest[head.len()..];
    match (head.strip_suffix("::"), after.starts_with('{')) {
        (Some(prefix), true) => expand(after)
            .into_iter()
            .map(|p| format!("{prefix}::{p}"))
            .collect(),
        _ => vec![head.trim_end_matches("::").to_string()],
    }
}

/// The longest known module `path` starts with (`None`: an item of the root).
fn module_named(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

fn within(module: &str, of: &str) -> bool {
    module == of || module.starts_with(&format!("{of}::"))
}

struct Graph {
    /// (from module, to module) for every reference, with the file it is in.
    edges: BTreeSet<(String, String)>,
    /// Module -> its code.
    code: BTreeMap<String, String>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let code: BTreeMap<String, String> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read source");
            (module_of(&src, f), self::code(&text))
        })
        .collect();
    let modules: BTreeSet<String> = code.keys().cloned().collect();
    let mut edges = BTreeSet::new();
    for (from, text) in &code {
        for (i, _) in text.match_indices("crate::") {
            let before = text[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `charter_server_crate::` or similar, not this crate
            }
            for path in expand(&text[i + "crate::".len()..]) {
                if let Some(to) = module_named(&path, &modules)
                    && to != *from
                {
                    edges.insert((from.clone(), to));
                }
            }
        }
    }
    Graph { edges, code }
}

#[test]
fn the_reader_finds_paths_in_groups() {
    assert_eq!(expand("ops::events::Rerun;"), vec!["ops::events::Rerun"]);
    assert_eq!(
        expand("{AppState, ops::{self, OpError}, auth::Caller};"),
        vec!["AppState", "ops::OpError", "auth::Caller"]
    );
    let modules: BTreeSet<String> = ["ops", "ops::events"].map(String::from).into();
    assert_eq!(
        module_named("ops::events::Rerun", &modules).as_deref(),
        Some("ops::events")
    );
    assert_eq!(module_named("AppState", &modules), None);
    assert_eq!(
        code("let a = 1; // crate::x\n/// crate::y"),
        "let a = 1; \n"
    );
}

#[test]
fn no_module_imports_a_handler_module_but_the_router() {
    let g = graph();
    let bad: Vec<String> = g
        .edges
        .iter()
        .filter(|(from, to)| {
            HANDLERS.iter().any(|h| within(to, h))
                && !HANDLERS.iter().any(|h| within(from, h) && within(to, h))
                && !ROUTER.contains(&from.as_str())
        })
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(
        bad.is_empty(),
        "modules importing a handler module (move what they use below the handlers):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_operations_layer_knows_nothing_of_http() {
    let g = graph();
    let http: Vec<&String> = g
        .code
        .iter()
        .filter(|(m, text)| within(m, "ops") && text.contains("axum"))
        .map(|(m, _)| m)
        .collect();
    assert!(http.is_empty(), "ops modules using axum: {http:?}");
    assert!(g.code.keys().filter(|m| within(m, "ops")).count() >= 5);
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let g = graph();
    let mut deps: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in &g.edges {
        let (a, b) = (top(from), top(to));
        if !a.is_empty() && !b.is_empty() && a != b {
            deps.entry(a).or_default().insert(b);
        }
    }
    // Every strongly connected component with more than one module is a cycle.
    let cycles = components(&deps);
    let report: Vec<String> = cycles
        .iter()
        .map(|c| {
            let edges: Vec<String> = g
                .edges
                .iter()
                .filter(|(f, t)| {
                    let (a, b) = (top(f), top(t));
                    a != b && c.contains(a) && c.contains(b)
                })
                .map(|(f, t)| format!("  {f} -> {t}"))
                .collect();
            format!("{c:?}:\n{}", edges.join("\n"))
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles among top-level modules:\n{}",
        report.join("\n")
    );
}

/// The strongly connected components of more than one node (Tarjan's algorithm).
fn components<'a>(deps: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<BTreeSet<&'a str>> {
    struct T<'a, 'd> {
        deps: &'d BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<BTreeSet<&'a str>>,
    }
    fn visit<'a>(t: &mut T<'a, '_>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        let next: Vec<&str> = t.deps.get(v).into_iter().flatten().copied().collect();
        for w in next {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.insert(w);
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        deps,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: Vec<&str> = deps.keys().copied().collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}
