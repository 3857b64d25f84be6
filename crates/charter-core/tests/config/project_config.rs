//! The scaffolds, an empty charter.yaml's defaults, and charter.yaml settings beyond
//! connectors: LLM providers (options, Azure, breakers, cache lifetimes), the UI time zone,
//! retention, agent tokens and backlog bounds.

use super::*;

#[test]
fn providers_and_llm_stage_options() {
    let project = format!(
        "{PROJECT}  claude:\n    type: anthropic\n    api_key: env:ANTHROPIC_API_KEY\n    model: claude-haiku\n    timeout: 20s\n    max_retries: 1\n    allow_private: true\n    price: {{ input_per_mtok: 0.8, output_per_mtok: 4 }}\n"
    );
    let triage = TRIAGE.replace(
        "- llm: { provider: default, prompt: prompts/triage.md, accept_above: 0.7 }",
        "- llm: { provider: default, prompt: prompts/triage.md, accept_above: 0.7, fallback: [claude], rate_limit: 60, budget: { tokens_per_day: 200000, on_exhausted: wait, max_wait: 5s }, redact: [email] }",
    );
    let mut src = with_triage(&triage);
    src.files.insert("charter.yaml".into(), project.clone());
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    let d = &p.providers["default"];
    assert_eq!(d.kind, charter_core::config::ProviderType::OpenAi);
    assert_eq!(d.mode, charter_core::config::StructuredMode::JsonObject);
    assert_eq!(d.base_url, "http://127.0.0.1:8081/v1");
    assert_eq!((d.max_retries, d.max_tokens), (3, 1024));
    assert!(!d.allow_private, "the outbound guard applies by default");
    assert_eq!(d.api_version, None);
    let c = &p.providers["claude"];
    assert!(c.allow_private);
    assert_eq!(c.base_url, "https://api.anthropic.com/v1");
    assert_eq!(c.api_key, Some(SecretRef::Env("ANTHROPIC_API_KEY".into())));
    assert_eq!(c.timeout, Duration::from_secs(20));
    assert_eq!(c.price.unwrap().output_per_mtok, 4.0);
    let decide = p.charters["support-triage"].decide.clone().unwrap();
    let Stage::Llm(l) = &decide.stages[2] else {
        panic!("llm third")
    };
    assert_eq!(l.fallback, vec!["claude"]);
    assert_eq!(l.rate_limit, Some(60));
    assert_eq!(l.budget.tokens_per_day, Some(200_000));
    assert_eq!(
        l.budget.on_exhausted,
        charter_core::config::OnExhausted::Wait
    );
    assert_eq!(l.budget.max_wait, Duration::from_secs(5));
    assert_eq!(l.redact, vec!["email"]);
    assert_eq!(
        l.template.render(&json!({"text": "hello"})).unwrap(),
        "Classify: hello"
    );

    // Every problem at once: an undeclared fallback, a bad mode, a bad behaviour, a broken
    // prompt template.
    let bad_triage = triage
        .replace("fallback: [claude]", "fallback: [claude, nope]")
        .replace("on_exhausted: wait", "on_exhausted: panic");
    let mut src = with_triage(&bad_triage);
    src.files.insert(
        "charter.yaml".into(),
        project.replace("mode: json_object", "mode: grammar"),
    );
    src.files
        .insert("prompts/triage.md".into(), "Classify: {{ text ".into());
    let out = diagnostics(&src);
    assert!(out.contains("provider `nope` is not declared"), "{out}");
    assert!(out.contains("`mode` is `grammar`"), "{out}");
    assert!(out.contains("`on_exhausted` is `panic`"), "{out}");
    assert!(out.contains("prompt file `prompts/triage.md`"), "{out}");
}

#[test]
fn the_ui_time_zone_is_read_and_an_unknown_one_is_named_with_its_line() {
    let project = load_project(&with_triage(TRIAGE)).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(project.settings.timezone.name(), "UTC", "the default");

    let mut src = with_triage(TRIAGE);
    let zoned = PROJECT.replace(
        "  public_url: https://charter.acme.example\n",
        "  public_url: https://charter.acme.example\n  timezone: europe/paris\n",
    );
    src.files.insert("charter.yaml".into(), zoned.clone());
    let project = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        project.settings.timezone.name(),
        "Europe/Paris",
        "read case-insensitively, kept in its canonical case"
    );

    src.files.insert(
        "charter.yaml".into(),
        zoned.replace("europe/paris", "Mars/Olympus"),
    );
    let d = diagnostics(&src);
    assert!(
        d.contains("charter.yaml:5") && d.contains("unknown time zone `Mars/Olympus`"),
        "{d}"
    );
}

#[test]
fn retention_is_optional_and_at_least_an_hour() {
    let project = load_project(&with_triage(TRIAGE)).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        project.settings.worker.retention, None,
        "kept forever by default"
    );

    let mut src = with_triage(TRIAGE);
    let with = |r: &str| {
        PROJECT.replace(
            "  concurrency: 8\n",
            &format!("  concurrency: 8\n  retention: {r}\n"),
        )
    };
    src.files.insert("charter.yaml".into(), with("90d"));
    let project = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        project.settings.worker.retention,
        Some(Duration::from_secs(90 * 86_400))
    );
    src.files.insert("charter.yaml".into(), with("10m"));
    let d = diagnostics(&src);
    assert!(
        d.contains("charter.yaml:9") && d.contains("`retention` is shorter than 1h"),
        "{d}"
    );
}

#[test]
fn agent_tokens_are_a_role_of_their_own() {
    // An agent calls the charter's actions as MCP tools, without a decision: an action
    // template that needs `decision` is refused (issue 23, item 8).
    let mut src = with_triage(TRIAGE);
    src.files.insert(
        "charter.yaml".into(),
        PROJECT.replace(
            "  - { name: viewer, role: viewer, secret: file:secrets/viewer }\n",
            "  - { name: viewer, role: viewer, secret: file:secrets/viewer }\n  - { name: triage-bot, role: agent, secret: env:BOT, charters: [support-triage] }\n",
        ),
    );
    let err = load_project(&src).unwrap_err().to_string();
    assert!(
        err.starts_with("charters/triage.yaml:")
            && err.contains("action `note`: `log` uses `decision`, but agent token `triage-bot` may call this action as an MCP tool"),
        "{err}"
    );
    src.files.insert(
        "charters/triage.yaml".into(),
        TRIAGE.replace(
            "log: \"routed {{ event.id }} as {{ decision.label }}\"",
            "log: \"routed {{ event.id }}\"",
        ),
    );
    let project = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    let bot = project
        .tokens
        .iter()
        .find(|t| t.name == "triage-bot")
        .unwrap();
    assert_eq!(bot.role, Role::Agent);
    assert_eq!(bot.charters, vec!["support-triage"]);
    // Below every other role (it reaches no admin endpoint), yet it may call tools.
    assert!(Role::Agent < Role::Viewer);
    assert!(Role::Agent.calls_tools() && Role::Admin.calls_tools());
    assert!(!Role::Viewer.calls_tools() && !Role::Reviewer.calls_tools());
}

#[test]
fn an_azure_provider_takes_an_api_version() {
    let azure = "  azure:\n    type: openai\n    base_url: https://acme.openai.azure.com/openai/deployments/gpt-4o\n    api_key: env:AZURE_OPENAI_KEY\n    api_version: 2024-10-21\n    model: gpt-4o\n";
    let mut src = with_triage(TRIAGE);
    src.files
        .insert("charter.yaml".into(), format!("{PROJECT}{azure}"));
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        p.providers["azure"].api_version.as_deref(),
        Some("2024-10-21")
    );
    let mut src = with_triage(TRIAGE);
    src.files.insert(
        "charter.yaml".into(),
        format!("{PROJECT}{}", azure.replace("2024-10-21", "2024 10&x=1")),
    );
    let err = load_project(&src).unwrap_err().to_string();
    assert!(
        err.lines().any(|l| l.starts_with("charter.yaml:")
            && l.contains("`api_version` is `2024 10&x=1`; expected an Azure OpenAI API version")),
        "{err}"
    );
}

#[test]
fn a_provider_takes_a_circuit_breaker() {
    let local = "  local:\n    type: openai\n    base_url: http://127.0.0.1:8089/v1\n    model: m\n    allow_private: true\n";
    let mut src = with_triage(TRIAGE);
    src.files
        .insert("charter.yaml".into(), format!("{PROJECT}{local}"));
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    let b = p.providers["local"].circuit_breaker;
    assert_eq!((b.failures, b.cool_down), (5, Duration::from_secs(30)));
    let mut src = with_triage(TRIAGE);
    src.files.insert(
        "charter.yaml".into(),
        format!("{PROJECT}{local}    circuit_breaker: {{ failures: 2, cool_down: 10s }}\n"),
    );
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    let b = p.providers["local"].circuit_breaker;
    assert_eq!((b.failures, b.cool_down), (2, Duration::from_secs(10)));
    let mut src = with_triage(TRIAGE);
    src.files.insert(
        "charter.yaml".into(),
        format!("{PROJECT}{local}    circuit_breaker: {{ failures: 0 }}\n"),
    );
    let err = load_project(&src).unwrap_err().to_string();
    assert!(
        err.lines()
            .any(|l| l.starts_with("charter.yaml:") && l.contains("failures")),
        "{err}"
    );
}

#[test]
fn an_llm_stage_sets_its_cache_lifetime() {
    let stage = |ttl: &str| {
        let src = with_triage(&TRIAGE.replace(
            "accept_above: 0.7",
            &format!("accept_above: 0.7, cache_ttl: {ttl}"),
        ));
        load_project(&src)
    };
    assert!(TRIAGE.contains("accept_above: 0.7"), "the fixture changed");
    let get = |p: &charter_core::config::Project| {
        p.charters["support-triage"]
            .decide
            .as_ref()
            .unwrap()
            .stages
            .iter()
            .find_map(|s| match s {
                charter_core::config::Stage::Llm(l) => Some(l.cache_ttl),
                _ => None,
            })
            .unwrap()
    };
    let p = load_project(&with_triage(TRIAGE)).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(get(&p), Duration::from_secs(7 * 24 * 3600));
    let p = stage("0").unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(get(&p), Duration::ZERO);
    let p = stage("1h").unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(get(&p), Duration::from_secs(3600));
    let err = stage("soon").unwrap_err().to_string();
    assert!(err.contains("`cache_ttl`"), "{err}");
}

#[test]
fn backlog_bounds_default_parse_and_are_checked() {
    use charter_core::config::BacklogSettings;
    use std::time::Duration;
    let triage = TRIAGE.replace("uses: [helpdesk, crm]", "uses: [helpdesk]");
    let base = "connectors:\n  helpdesk: { type: http, base_url: http://helpdesk.example:9000 }\n\
                providers:\n  default: { type: openai, model: gpt-4o-mini }\n";
    let with = |server: &str| {
        let mut src = with_triage(&triage);
        src.files
            .insert("charter.yaml".into(), format!("{base}{server}"));
        src
    };
    // The default bounds the backlog (a disk cannot fill silently).
    let p = load_project(&with("")).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.settings.net.backlog, BacklogSettings::default());
    assert_eq!(p.settings.net.backlog.max_events, Some(1_000_000));
    // Set, and 0 for unbounded.
    let p = load_project(&with(
        "server:\n  backlog: { max_events: 0, max_per_charter: 5000, max_age: 2h }\n",
    ))
    .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        p.settings.net.backlog,
        BacklogSettings {
            max_events: None,
            max_per_charter: Some(5000),
            max_age: Some(Duration::from_secs(7200)),
        }
    );
    // Bad values name the key and the place.
    let d = diagnostics(&with(
        "server:\n  backlog: { max_events: -1, max_age: 0s }\n",
    ));
    assert!(
        d.contains("charter.yaml:") && d.contains("`backlog.max_events` is -1"),
        "{d}"
    );
    assert!(d.contains("`max_age` is 0"), "{d}");
    let d = diagnostics(&with("server:\n  backlog: { max_event: 5 }\n"));
    assert!(d.contains("max_event"), "{d}");
}

#[test]
fn defaults_apply_to_an_empty_charter_yaml() {
    let triage = TRIAGE.replace("uses: [helpdesk, crm]", "uses: [helpdesk]");
    let mut src = with_triage(&triage);
    src.files.insert(
        "charter.yaml".into(),
        "connectors:\n  helpdesk: { type: http, base_url: http://helpdesk.example:9000 }\n\
         providers:\n  default: { type: openai, model: gpt-4o-mini }\n"
            .into(),
    );
    let p = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.settings.store, "charter.db");
    assert_eq!(p.settings.body_limit, 1024 * 1024);
    assert_eq!(p.settings.listen, None);
    assert_eq!(p.settings.worker, WorkerSettings::default());
    assert!(p.tokens.is_empty());
}

#[test]
fn scaffolds_load() {
    let init = init_project();
    let src = source(
        &init
            .iter()
            .map(|(p, t)| (*p, t.as_str()))
            .collect::<Vec<_>>(),
    );
    let p = load_project(&src).unwrap_or_else(|d| panic!("init project: {d}"));
    assert_eq!(
        p.charters.keys().collect::<Vec<_>>(),
        vec!["support-triage"]
    );
    let c = &p.charters["support-triage"];
    assert_eq!(c.mode, Mode::Shadow);
    assert!(matches!(
        c.trigger.webhook.as_ref().unwrap().verify,
        VerifySpec::StandardWebhooks { .. }
    ));
    assert!(init.iter().any(|(p, _)| *p == "samples/ticket.json"));
    // The sample event satisfies the schema and is routed to billing by the rules.
    let sample: serde_json::Value = serde_json::from_str(
        &init
            .iter()
            .find(|(p, _)| *p == "samples/ticket.json")
            .unwrap()
            .1,
    )
    .unwrap();
    let schema = &c.trigger.input_schema.as_ref().unwrap().schema;
    assert!(jsonschema::is_valid(schema, &sample));
    let Stage::Rules(rules) = &c.decide.as_ref().unwrap().stages[0] else {
        panic!()
    };
    assert!(
        rules[0]
            .when
            .eval_bool(&json!({ "payload": sample }))
            .unwrap()
    );

    let demo = demo_project("http://127.0.0.1:9911/");
    let src = source(
        &demo
            .iter()
            .map(|(p, t)| (*p, t.as_str()))
            .collect::<Vec<_>>(),
    );
    let p = load_project(&src).unwrap_or_else(|d| panic!("demo project: {d}"));
    assert_eq!(
        p.charters.keys().collect::<Vec<_>>(),
        vec!["github-issues", "support-triage"]
    );
    let ConnectorKind::Http(h) = &p.connectors["helpdesk"].kind else {
        panic!("expected an http connector")
    };
    assert_eq!(h.base_url, "http://127.0.0.1:9911/helpdesk");
    let gh = &p.charters["github-issues"];
    assert_eq!(gh.mode, Mode::Shadow);
    assert_eq!(
        gh.trigger.webhook.as_ref().unwrap().verify,
        VerifySpec::Github
    );
    assert_eq!(
        gh.trigger.webhook.as_ref().unwrap().secrets,
        vec![SecretRef::File("secrets/github-webhook".into())]
    );
    assert!(matches!(&gh.trigger.dedupe, Some(Dedupe::Header(n)) if n == "x-github-delivery"));
    // The repository's `owner/repo` goes in as two segments (`safe_path`), the rest encoded.
    let ActionKind::Http(label) = &gh.actions["add_label"].kind else {
        panic!("add_label is a request")
    };
    let issue: serde_json::Value = src
        .files
        .iter()
        .find(|(k, _)| k.starts_with("samples/github-issues/"))
        .map(|(_, v)| serde_json::from_str(v).unwrap())
        .unwrap();
    assert_eq!(
        label.target.render(&json!({ "payload": issue })).unwrap(),
        format!(
            "/repos/acme/widgets/issues/{}/labels",
            issue["issue"]["number"]
        )
    );
    assert_eq!(p.charters["support-triage"].mode, Mode::Live);
    // Every demo sample decides as its name says.
    for (file, label) in [
        ("samples/support-triage/ticket-billing.json", "billing"),
        ("samples/support-triage/ticket-bug.json", "bug"),
        ("samples/support-triage/ticket-other.json", "other"),
        ("samples/support-triage/ticket-refund.json", "billing"),
    ] {
        let payload: serde_json::Value = serde_json::from_str(&src.files[file]).unwrap();
        let Stage::Rules(rules) = &p.charters["support-triage"].decide.as_ref().unwrap().stages[0]
        else {
            panic!()
        };
        let ctx = json!({ "payload": payload });
        let first = rules
            .iter()
            .find(|r| r.when.eval_bool(&ctx).unwrap())
            .unwrap();
        assert_eq!(first.label, label, "{file}");
    }
    // The unclear ticket matches no rule, so `otherwise: escalate` hands it to a human; the
    // refund takes the route whose action waits for an approval.
    let support = &p.charters["support-triage"];
    let Stage::Rules(rules) = &support.decide.as_ref().unwrap().stages[0] else {
        panic!()
    };
    let unclear: serde_json::Value =
        serde_json::from_str(&src.files["samples/support-triage/ticket-unclear.json"]).unwrap();
    let ctx = json!({ "payload": unclear });
    assert!(rules.iter().all(|r| !r.when.eval_bool(&ctx).unwrap()));
    assert!(matches!(
        support.decide.as_ref().unwrap().otherwise,
        Otherwise::Escalate
    ));
    assert!(matches!(
        support.actions["issue_refund"].approval,
        Approval::Required { .. }
    ));
}
