//! The JSON Schemas in `docs/schema/` and the key reference `docs/src/reference.md` are what
//! the generator produces (so they cannot drift from the validator's tables), and the
//! scaffolds, the demo, the test projects and every YAML example of the book satisfy them.

use std::path::{Path, PathBuf};

use charter_core::config::raw::{CHARTER_SHAPE, PROJECT_SHAPE, Shape};
use charter_core::config::schema::{
    CHARTER_SCHEMA_PATH, PROJECT_SCHEMA_PATH, REFERENCE_PATH, charter_schema, project_schema,
    reference_markdown, to_text,
};
use charter_core::scaffold::{demo_project, init_project};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn committed(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn committed_schemas_and_reference_equal_the_generated_ones() {
    for (rel, generated) in [
        (PROJECT_SCHEMA_PATH, to_text(&project_schema())),
        (CHARTER_SCHEMA_PATH, to_text(&charter_schema())),
        (REFERENCE_PATH, reference_markdown()),
    ] {
        assert!(
            committed(rel) == generated,
            "{rel} differs from what the generator produces: run `cargo run -p charter -- schema` \
             at the repository's root and commit the result"
        );
    }
}

/// Parses YAML into JSON the way an editor's language server sees it.
fn yaml(text: &str, what: &str) -> Value {
    serde_saphyr::from_str::<Value>(text).unwrap_or_else(|e| panic!("{what}: not YAML: {e}"))
}

/// Every violation of `schema` by the YAML `text`, as `pointer: message`.
fn violations(schema: &Value, text: &str, what: &str) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).expect("the generated schema compiles");
    let instance = yaml(text, what);
    validator
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn assert_valid(schema: &Value, text: &str, what: &str) {
    let found = violations(schema, text, what);
    assert!(found.is_empty(), "{what} breaks its schema: {found:#?}");
}

/// Checks a project's files: charter.yaml against the project schema, charters/*.yaml
/// against the charter schema. Returns how many files were checked.
fn check_project(files: &[(&str, String)], what: &str) -> usize {
    let (project, charter) = (project_schema(), charter_schema());
    let mut checked = 0;
    for (path, text) in files {
        if *path == "charter.yaml" {
            assert_valid(&project, text, &format!("{what}: {path}"));
            checked += 1;
        } else if path.starts_with("charters/") && path.ends_with(".yaml") {
            assert_valid(&charter, text, &format!("{what}: {path}"));
            checked += 1;
        }
    }
    checked
}

#[test]
fn the_init_scaffold_and_the_demo_satisfy_the_schemas() {
    assert_eq!(check_project(&init_project(), "init"), 2);
    let demo = demo_project("http://127.0.0.1:9911");
    assert!(
        check_project(&demo, "demo") >= 3,
        "the demo has charter.yaml and charters"
    );
}

#[test]
fn the_test_projects_satisfy_the_schemas() {
    assert_valid(&project_schema(), crate::PROJECT, "tests' PROJECT");
    assert_valid(&charter_schema(), crate::TRIAGE, "tests' TRIAGE");
    assert_valid(&charter_schema(), crate::HOOKS, "tests' HOOKS");
}

#[test]
fn an_unknown_key_or_a_misplaced_one_breaks_the_schema() {
    let bad = crate::TRIAGE.replace("uses: [helpdesk, crm]", "usess: [helpdesk, crm]");
    assert_ne!(bad, crate::TRIAGE);
    let found = violations(&charter_schema(), &bad, "typo");
    assert!(found.iter().any(|v| v.contains("usess")), "{found:?}");

    let nested = "actions:\n  a:\n    approval: { reviewer: [leads] }\n    log: hi\n";
    let found = violations(&charter_schema(), nested, "nested typo");
    assert!(
        found.iter().any(|v| v.starts_with("/actions/a/approval")),
        "{found:?}"
    );
    // A word where a mapping may stand is left to `charter check`, as the shapes do.
    assert_valid(
        &charter_schema(),
        "actions:\n  a: { log: hi, approval: auto }\n",
        "word",
    );
    // A project key in a charter file is unknown there.
    let found = violations(&charter_schema(), "server: { listen: 1 }\n", "misplaced");
    assert!(!found.is_empty());
}

fn top_keys(shape: &Shape) -> Vec<&'static str> {
    match shape {
        Shape::Keys(fields) => fields.iter().map(|(name, _)| *name).collect(),
        _ => Vec::new(),
    }
}

/// The ```yaml blocks of a Markdown text, each split at lines `# charter.yaml` and
/// `# charters/...` (one block may show both files), with the line each starts at.
fn yaml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```yaml" => current = Some((n + 2, String::new())),
            None => {}
            Some(_) if line.trim_start() == "```" => {
                if let Some(block) = current.take() {
                    blocks.push(block);
                }
            }
            Some((start, body)) => {
                let t = line.trim_start();
                if (t.starts_with("# charter.yaml") || t.starts_with("# charters/"))
                    && !body.trim().is_empty()
                {
                    blocks.push((*start, std::mem::take(body)));
                    *start = n + 1;
                }
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    blocks
}

#[test]
fn every_yaml_example_of_the_book_satisfies_its_schema() {
    let (project, charter) = (project_schema(), charter_schema());
    let (project_keys, charter_keys) = (top_keys(&PROJECT_SHAPE), top_keys(&CHARTER_SHAPE));
    let src = repo_root().join("docs/src");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).expect("a readable page");
        for (line, block) in yaml_blocks(&text) {
            let what = format!("{}:{line}", page.display());
            let Value::Object(map) = yaml(&block, &what) else {
                continue;
            };
            let is_project = map.keys().all(|k| project_keys.contains(&k.as_str()));
            let is_charter = map.keys().all(|k| charter_keys.contains(&k.as_str()));
            assert!(
                is_project || is_charter,
                "{what}: top-level keys {:?} are neither charter.yaml's nor a charter's",
                map.keys().collect::<Vec<_>>()
            );
            let schema = if is_project { &project } else { &charter };
            assert_valid(schema, &block, &what);
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} YAML examples found in docs/src"
    );
}

/// The Markdown links of a page that point at a local file: (target path, anchor).
fn local_links(text: &str) -> Vec<(String, Option<String>)> {
    let mut links = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            rest = &rest[end..];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f.to_string(), Some(a.to_string())),
                None => (target.to_string(), None),
            };
            links.push((file, anchor));
        }
    }
    links
}

/// The anchors mdBook gives a page's headings: lower case, spaces as `-`, other
/// punctuation dropped.
fn heading_anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut anchors = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim().to_lowercase();
        let slug: String = title
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        anchors.push(slug);
    }
    anchors
}

/// What `mdbook build` would refuse or break on, checked without mdBook (CI does not
/// install it): every SUMMARY.md entry exists, every page is in SUMMARY.md, and every local
/// link (pages, images, anchors) resolves.
#[test]
fn the_book_summary_names_every_page_and_every_link_resolves() {
    let src = repo_root().join("docs/src");
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).expect("docs/src/SUMMARY.md");
    let listed: Vec<String> = local_links(&summary).into_iter().map(|(f, _)| f).collect();
    assert!(listed.len() >= 12, "{listed:?}");
    for page in &listed {
        assert!(
            src.join(page).is_file(),
            "SUMMARY.md names {page}, which does not exist"
        );
    }
    let mut pages: Vec<String> = std::fs::read_dir(&src)
        .expect("docs/src")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".md") && n != "SUMMARY.md")
        .collect();
    pages.sort();
    for page in &pages {
        assert!(listed.contains(page), "{page} is not in SUMMARY.md");
        let text = std::fs::read_to_string(src.join(page)).expect("a readable page");
        for (file, anchor) in local_links(&text) {
            let target = if file.is_empty() {
                page.clone()
            } else {
                file.clone()
            };
            let path = src.join(&target);
            assert!(
                path.is_file(),
                "{page} links to {target}, which does not exist"
            );
            if let Some(anchor) = anchor {
                let linked = std::fs::read_to_string(&path).expect("a readable page");
                assert!(
                    heading_anchors(&linked).contains(&anchor),
                    "{page} links to {target}#{anchor}, a heading that does not exist"
                );
            }
        }
    }
}
