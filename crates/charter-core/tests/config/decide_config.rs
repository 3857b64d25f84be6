//! Extractors, drafts, context fetches and the names expressions and templates use.

use super::*;

#[test]
fn extractors_drafts_and_context_parse_and_report_file_lines() {
    let triage = TRIAGE
        .replace(
            "order_id: { type: string, pattern: \"ORD-[0-9]+\", required: false }",
            "order_id: { type: string, pattern: \"ORD-[0-9]+\", required: true, regex: 'order (ORD-[0-9]+)', in: payload.ticket.body }\n    customer: { template: \"{{ payload.customer.id }}\" }",
        )
        .replace(
            "  note:\n    log:",
            "  note:\n    draft: { prompt: prompts/reply.md }\n    log:",
        )
        .replace(
            "escalation:",
            "context:\n  customer: { connector: crm, get: \"/customers/{{ payload.customer.id }}\", timeout: 2s, on_error: retry }\nescalation:",
        );
    let mut src = with_triage(&triage);
    src.files
        .insert("prompts/reply.md".into(), "Reply to: {{ text }}".into());
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    let c = &p.charters["support-triage"];
    let extract = &c.decide.as_ref().unwrap().extract;
    match &extract["order_id"].extractor {
        Some(charter_core::config::Extractor::Regex { regex, input }) => {
            assert_eq!(regex.first_capture("re order ORD-12 now"), Some("ORD-12"));
            assert_eq!(
                input.as_deref(),
                Some(&["payload".to_string(), "ticket".into(), "body".into()][..])
            );
        }
        other => panic!("expected a regex extractor, got {other:?}"),
    }
    assert!(matches!(
        extract["customer"].extractor,
        Some(charter_core::config::Extractor::Template(_))
    ));
    let draft = c.actions["note"].draft.as_ref().expect("draft");
    assert_eq!(
        (draft.prompt.as_str(), draft.provider.as_str()),
        ("prompts/reply.md", "default")
    );
    assert_eq!(c.context.len(), 1);
    assert_eq!(c.context[0].name, "customer");
    assert_eq!(c.context[0].timeout, Duration::from_secs(2));
    assert_eq!(
        c.context[0].on_error,
        charter_core::config::ContextOnError::Retry
    );

    // Every problem at once, each at its line.
    let bad = triage
        .replace("regex: 'order (ORD-[0-9]+)'", "regex: 'order (ORD-[0-9+'")
        .replace(
            "draft: { prompt: prompts/reply.md }",
            "draft: { prompt: prompts/reply.md, provider: nope }",
        )
        .replace("connector: crm, get:", "connector: helpdesk2, get:")
        .replace("on_error: retry", "on_error: ignore");
    let mut src = with_triage(&bad);
    src.files
        .insert("prompts/reply.md".into(), "Reply to: {{ text }}".into());
    let out = diagnostics(&src);
    let line_of = |needle: &str| {
        bad.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{needle} not in the charter"))
    };
    assert!(
        out.contains(&format!("charters/triage.yaml:{}:", line_of("ORD-[0-9+")))
            && out.contains("`regex` `order (ORD-[0-9+` is not a valid regular expression"),
        "{out}"
    );
    assert!(out.contains("provider `nope` is not declared"), "{out}");
    assert!(
        out.contains(&format!("charters/triage.yaml:{}:", line_of("helpdesk2")))
            && out.contains("context `customer` uses connector `helpdesk2`"),
        "{out}"
    );
    assert!(out.contains("`on_error` is `ignore`"), "{out}");
}

#[test]
fn a_drafting_action_is_reviewed_unless_it_says_otherwise() {
    let triage = TRIAGE.replace(
        "    log: \"routed {{ event.id }} as {{ decision.label }}\"\n    approval: auto\n",
        "    draft: { prompt: prompts/reply.md }\n    log: \"routed {{ event.id }} as {{ decision.label }}\"\n",
    );
    assert_ne!(triage, TRIAGE, "the note action lost its approval");
    let mut src = with_triage(&triage);
    src.files
        .insert("prompts/reply.md".into(), "Reply to: {{ text }}".into());
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        p.charters["support-triage"].actions["note"].approval,
        charter_core::config::Approval::Required {
            reviewers: vec![],
            expires: charter_core::config::DRAFT_APPROVAL_EXPIRES,
            on_expiry: charter_core::config::OnExpiry::Escalate,
        }
    );
    // `approval: auto` still sends drafts unreviewed.
    let auto = triage.replace(
        "    draft: { prompt: prompts/reply.md }\n",
        "    draft: { prompt: prompts/reply.md }\n    approval: auto\n",
    );
    let mut src = with_triage(&auto);
    src.files
        .insert("prompts/reply.md".into(), "Reply to: {{ text }}".into());
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        p.charters["support-triage"].actions["note"].approval,
        charter_core::config::Approval::Auto
    );
}

/// `check` finds the names a template or an expression uses that its place cannot see
/// (they would fail every event at run time), at the value's file:line:column.
#[test]
fn unknown_names_in_expressions_and_templates_are_found_where_they_are_written() {
    let bad = TRIAGE
        .replace(
            "  - when: decision.label == \"billing\"",
            "  - when: decison.label == \"billing\" && payload.tags.exists(t, t == \"vip\")",
        )
        .replace(
            "log: \"routed {{ event.id }} as {{ decision.label }}\"",
            "log: \"routed {{ event.idd }} as {{ decision.confidance }} for {{ paylod.x }}\"",
        )
        .replace(
            "json: { ticket: { group_id: 42, id: \"{{ payload.ticket.id }}\" } }",
            "json: { ticket: { group_id: 42, id: \"{{ payload.ticket.id }}\", by: \"{{ desicion.label }}\" } }",
        )
        .replace(
            "  dedupe: \"{{ payload.ticket.id }}:{{ payload.ticket.updated_at }}\"",
            "  dedupe: \"{{ payload.ticket.id }}:{{ decision.label }}\"",
        );
    let err = load_project(&with_triage(&bad)).unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    let expect = [
        "charters/triage.yaml:13:11: `dedupe`: `decision.label` is not known here: `dedupe` is computed when the event arrives, before the decision (`decision` is null)",
        "charters/triage.yaml:29:11: `when`: unknown name `decison` (did you mean `decision`?); expected one of `payload`, `event`, `decision`, `headers`, `context`",
        "charters/triage.yaml:40:13: `json`: unknown name `desicion` (did you mean `decision`?)",
        "charters/triage.yaml:46:10: `log`: `decision` has no field `confidance` (did you mean `decision.confidence`?)",
        "charters/triage.yaml:46:10: `log`: `event` has no field `idd` (did you mean `event.id`?)",
        "charters/triage.yaml:46:10: `log`: unknown name `paylod` (did you mean `payload`?)",
    ];
    for e in expect {
        assert!(
            lines.iter().any(|l| l.starts_with(e)),
            "missing {e:?} in:\n{err}"
        );
    }
    assert_eq!(lines.len(), expect.len(), "{err}");
    // The macro's own variable `t` is not an unknown name; `draft` is known to actions only.
    assert!(!err.contains("`t`"), "{err}");
    let draft_in_route = TRIAGE.replace(
        "  - when: \"true\"\n    do: [note]",
        "  - when: draft == \"x\"\n    do: [note]",
    );
    let err = load_project(&with_triage(&draft_in_route))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown name `draft`"), "{err}");
    load_project(&with_triage(TRIAGE)).unwrap_or_else(|d| panic!("{d}"));
}
