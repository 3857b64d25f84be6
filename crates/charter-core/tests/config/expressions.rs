//! Expressions of a loaded charter: `matches()` patterns written as literals are compiled
//! once when the charter loads, not per evaluation, and an invalid one fails the load.

use std::collections::BTreeMap;

use charter_core::config::{ProjectSource, load_project};
use charter_core::expr::regex_compiles_on_this_thread;
use charter_core::model::NewEvent;
use charter_core::routing::{eval_context, first_matching_route};
use serde_json::json;

const CHARTER: &str = r#"name: keywords
description: Keyword rules and routes.
owner: a@acme.example
maintainer: b@acme.example
system_of_record: helpdesk
mode: live
uses: [helpdesk]
trigger:
  webhook: { path: /hooks/keywords, verify: none }
decide:
  labels: [billing, other]
  stages:
    - rules:
        - { when: 'payload.subject.matches("(?i)\\b(refund|invoice|charged)\\b")', label: billing }
  otherwise: other
routes:
  - when: 'payload.subject.matches("(?i)urgent|asap") || matches(payload.subject, "^\\[vip\\]")'
    do: [note]
  - when: 'payload.subject.matches("(?i)\\b(refund|invoice|charged)\\b")'
    do: [note]
  - when: "true"
    do: [note]
actions:
  note:
    log: "{{ payload.subject }}"
    approval: auto
escalation: { to: ops }
measure:
  success: [noted]
"#;

fn source(charter: &str) -> ProjectSource {
    let mut files = BTreeMap::new();
    files.insert(
        "charter.yaml".to_string(),
        "connectors:\n  helpdesk: { type: http, base_url: http://127.0.0.1:9000, allow_private: true }\n".to_string(),
    );
    files.insert("charters/keywords.yaml".to_string(), charter.to_string());
    ProjectSource { files }
}

fn event(subject: &str) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        charter: "keywords".into(),
        source: "webhook:/hooks/keywords".into(),
        event_type: None,
        dedupe_key: None,
        received_at: 1_700_000_000_000,
        headers: BTreeMap::new(),
        payload: json!({ "subject": subject }),
    }
}

/// Four literal patterns (one written twice) compile four times at load, and 1,000 route
/// evaluations compile none.
#[test]
fn literal_patterns_compile_once_per_charter_load() {
    let before = regex_compiles_on_this_thread();
    let project = load_project(&source(CHARTER)).unwrap_or_else(|d| panic!("{d}"));
    let loaded = regex_compiles_on_this_thread() - before;
    // Each expression compiles its own literals: the rule and the second route share a
    // pattern but are two expressions.
    assert_eq!(loaded, 4, "compiles at load");
    let charter = &project.charters["keywords"];
    let cases = [
        ("URGENT: the printer", Some(0)),
        ("[vip] hello", Some(0)),
        ("I was charged twice", Some(1)),
        ("refunding is not a word here", Some(2)),
    ];
    for i in 0..1000 {
        let (subject, want) = cases[i % cases.len()];
        let ctx = eval_context(&event(subject), None);
        assert_eq!(
            first_matching_route(charter, &ctx).unwrap(),
            want,
            "{subject}"
        );
    }
    assert_eq!(
        regex_compiles_on_this_thread() - before,
        loaded,
        "no pattern is compiled again by an evaluation"
    );
}

#[test]
fn an_invalid_literal_pattern_fails_the_load_naming_the_place() {
    let broken = CHARTER.replace("(?i)urgent|asap", "(?i)urgent|(asap");
    let err = match load_project(&source(&broken)) {
        Ok(_) => panic!("expected the invalid pattern to fail the load"),
        Err(d) => d.to_string(),
    };
    assert!(err.contains("charters/keywords.yaml:"), "{err}");
    assert!(err.contains("is not a valid regular expression"), "{err}");
}
