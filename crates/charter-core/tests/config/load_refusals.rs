//! Every refusal `serve` makes when it loads a project, where the refusal depends only on
//! the project's files, is also a diagnostic of `load_project` (the validation `charter
//! check` runs), at the file, line and column where the problem is written.
//!
//! The refusals at load, read from `charter-server/src/project.rs` (`Runtime::prepare`) and
//! `charter-connect` (`Connection::from_config`, `presets::apply`, `ResponseContract::new`):
//! - a connector's `preset:` is unknown, or its `auth:` shape is one the preset does not take
//!   (the rule is [`HttpPresetRule`] in core; [`HttpConnector::preset_refusal`] states it);
//! - a connector's `response_schema` file is not a JSON Schema;
//! - a charter's `trigger.input_schema` file is not a JSON Schema.
//!
//! The other refusals depend on the machine, not the files, and `charter check` reports them
//! outside core: unset `env:` / unreadable `file:` secrets, and the embedded classifier's
//! examples file.

use charter_core::config::{
    AuthKind, ConnectorKind, Diagnostic, HTTP_PRESETS, HttpAuth, HttpConnector, HttpPresetRule,
    Project, ProjectSource, SecretRef, load_project,
};

use super::{TRIAGE, with_triage};

fn project(charter_yaml: &str, extra: &[(&str, &str)]) -> ProjectSource {
    let mut files: Vec<(&str, &str)> = vec![("charter.yaml", charter_yaml)];
    files.extend_from_slice(extra);
    super::source(&files)
}

/// The 1-based line and column where `needle` starts in `text`.
fn place(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).expect("needle is in the text");
    let line = text[..at].matches('\n').count() + 1;
    let column = text[..at].rfind('\n').map_or(at, |nl| at - nl - 1) + 1;
    (line, column)
}

/// Every HTTP connector of a loaded project.
fn http_connectors(p: &Project) -> Vec<(&str, &HttpConnector)> {
    p.connectors
        .iter()
        .filter_map(|(name, c)| match &c.kind {
            ConnectorKind::Http(h) => Some((name.as_str(), h)),
            _ => None,
        })
        .collect()
}

/// A project `load_project` accepts holds no connector that loading would refuse.
fn assert_loads(src: &ProjectSource, what: &str) {
    let p = load_project(src).unwrap_or_else(|d| panic!("{what}: refused by check: {d}"));
    for (name, h) in http_connectors(&p) {
        assert_eq!(
            h.preset_refusal(),
            None,
            "{what}: check passed connector `{name}`, load refuses it"
        );
    }
}

/// `load_project` refuses `src` with exactly `expected` among its diagnostics.
fn assert_refused_at(src: &ProjectSource, expected: &Diagnostic, what: &str) {
    let diags = match load_project(src) {
        Ok(_) => panic!("{what}: check passed what load refuses"),
        Err(d) => d,
    };
    assert!(
        diags.0.contains(expected),
        "{what}: expected {expected}, got:\n{diags}"
    );
}

const SHAPES: [(AuthKind, &str); 4] = [
    (AuthKind::Bearer, "{ bearer: env:P }"),
    (
        AuthKind::Basic,
        "{ basic: { username: u, password: env:P } }",
    ),
    (
        AuthKind::Header,
        "{ header: { name: X-Key, value: env:P } }",
    ),
    (
        AuthKind::OAuth2,
        "{ oauth2: { token_url: https://auth.example.com/t, client_id: c, client_secret: env:P } }",
    ),
];

/// Each preset with each `auth:` shape: check refuses exactly the pairs the preset rule
/// refuses, at the `auth:` value, with the rule's message; what it passes loads.
#[test]
fn every_preset_and_auth_shape_is_refused_by_check_where_load_refuses_it() {
    for rule in HTTP_PRESETS {
        for (kind, auth) in SHAPES {
            let text = format!(
                "connectors:\n  c:\n    type: http\n    preset: {}\n    base_url: https://acme.example.com\n    auth: {auth}\n",
                rule.name
            );
            let src = project(&text, &[]);
            let what = format!("{} + {}", rule.name, kind.word());
            match rule.refusal(kind) {
                None => assert_loads(&src, &what),
                Some(message) => {
                    let (line, column) = place(&text, auth);
                    let expected = Diagnostic {
                        file: "charter.yaml".into(),
                        line,
                        column,
                        message,
                    };
                    assert_refused_at(&src, &expected, &what);
                }
            }
        }
    }
}

/// The rule as load applies it to a connector built without check: the preset's refusal
/// for an auth shape it does not take, an unknown preset, and nothing otherwise.
#[test]
fn the_preset_rule_refuses_a_connector_built_without_check() {
    let text =
        "connectors:\n  hub:\n    type: http\n    preset: hubspot\n    auth: { bearer: env:P }\n";
    let p = load_project(&project(text, &[])).expect("a hubspot connector with a bearer token");
    let (_, h) = http_connectors(&p)[0];
    assert_eq!(h.preset_refusal(), None);
    let mut basic = h.clone();
    basic.auth = Some(HttpAuth::Basic {
        username: "u".into(),
        password: SecretRef::Env("P".into()),
    });
    let hubspot = HttpPresetRule::find("hubspot").expect("the hubspot preset");
    assert_eq!(
        basic.preset_refusal().as_deref(),
        Some("`preset: hubspot` does not accept `basic` auth; use one of `bearer`, `oauth2`")
    );
    assert_eq!(basic.preset_refusal(), hubspot.refusal(AuthKind::Basic));
    let mut unknown = h.clone();
    unknown.preset = Some("salesforce".into());
    assert_eq!(
        unknown.preset_refusal().as_deref(),
        Some("unknown preset `salesforce`")
    );
    let mut plain = basic;
    plain.preset = None;
    assert_eq!(plain.preset_refusal(), None, "no preset, no preset rule");
}

/// An unknown preset is refused where it is named.
#[test]
fn an_unknown_preset_is_refused_where_it_is_written() {
    let text = "connectors:\n  crm:\n    type: http\n    preset: salesforce\n    base_url: https://crm.example.com\n";
    let (line, column) = place(text, "salesforce");
    let expected = Diagnostic {
        file: "charter.yaml".into(),
        line,
        column,
        message: format!(
            "`preset` is `salesforce`; expected one of {}",
            HTTP_PRESETS
                .iter()
                .map(|r| format!("`{}`", r.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    assert_refused_at(&project(text, &[]), &expected, "unknown preset");
}

/// A response contract that does not compile is refused where its file is named (load
/// compiles it with the same JSON Schema library).
#[test]
fn a_response_schema_that_is_not_a_schema_is_refused_where_it_is_named() {
    let text = "connectors:\n  crm:\n    type: http\n    base_url: https://crm.example.com\n    response_schema: schemas/answer.json\n";
    let (line, column) = place(text, "schemas/answer.json");
    let src = project(text, &[("schemas/answer.json", r#"{"type": 12}"#)]);
    let diags = load_project(&src).expect_err("an invalid response contract");
    let found = diags.0.iter().find(|d| {
        d.file == "charter.yaml"
            && (d.line, d.column) == (line, column)
            && d.message.starts_with(
                "`response_schema` file `schemas/answer.json` is not a valid JSON schema: ",
            )
    });
    assert!(found.is_some(), "{diags}");
    let fine = project(text, &[("schemas/answer.json", r#"{"type": "object"}"#)]);
    assert_loads(&fine, "a valid response contract");
}

/// An input contract that does not compile is refused where its file is named.
#[test]
fn an_input_schema_that_is_not_a_schema_is_refused_where_it_is_named() {
    let mut src = with_triage(TRIAGE);
    src.files
        .insert("schemas/ticket.json".into(), r#"{"type": 12}"#.into());
    let (line, column) = place(TRIAGE, "schemas/ticket.json");
    let diags = load_project(&src).expect_err("an invalid input contract");
    let found = diags.0.iter().find(|d| {
        d.file == "charters/triage.yaml"
            && (d.line, d.column) == (line, column)
            && d.message
                .starts_with("`schemas/ticket.json` is not a valid JSON Schema")
    });
    assert!(found.is_some(), "{diags}");
}
