//! A route's rollout keys: name, own mode, sampling, promotion and demotion criteria; what a
//! valid charter yields, the `file:line:column` diagnostics of broken ones, and which mode a
//! route runs in (an operator's override applies only while the files still say what they
//! said when it was set).

use charter_core::config::{DemoteWhen, Mode, ProjectSource, PromoteWhen, load_project};
use charter_core::rollout::route_mode;

const PROJECT: &str =
    "connectors:\n  helpdesk: { type: http, base_url: https://helpdesk.acme.example }\n";

const CHARTER: &str = r#"name: trio
description: Three routes.
owner: a@acme.example
maintainer: b@acme.example
system_of_record: helpdesk
mode: shadow
uses: [helpdesk]
trigger:
  webhook: { path: /hooks/trio, verify: none }
decide:
  labels: [billing, refund, other]
  stages:
    - rules:
        - { when: 'payload.s == "b"', label: billing }
  otherwise: other
routes:
  - name: billing
    when: decision.label == "billing"
    do: [tag]
    mode: live
    sample: 5%
    demote_when: { corrections: 10% }
  - when: decision.label == "refund"
    do: [tag]
    mode: approve
  - name: rest
    when: "true"
    do: [tag]
    sample: 0.25
    promote_when: { agreement: 95%, reviewed: 200 }
actions:
  tag:
    log: "x"
    approval: auto
escalation: { to: ops }
measure:
  done: [tagged]
"#;

fn source(charter: &str) -> ProjectSource {
    ProjectSource {
        files: [
            ("charter.yaml".to_string(), PROJECT.to_string()),
            ("charters/trio.yaml".to_string(), charter.to_string()),
        ]
        .into_iter()
        .collect(),
    }
}

fn problems(charter: &str) -> String {
    match load_project(&source(charter)) {
        Ok(_) => panic!("expected the charter to fail validation"),
        Err(d) => d.to_string(),
    }
}

#[test]
fn route_rollout_keys_parse() {
    let p = load_project(&source(CHARTER)).unwrap_or_else(|d| panic!("{d}"));
    let c = &p.charters["trio"];
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["billing", "route-2", "rest"],
        "unnamed routes by position"
    );
    let billing = &c.routes[0].rollout;
    assert_eq!(billing.mode, Some(Mode::Live));
    assert!((billing.sample - 0.05).abs() < 1e-12);
    assert_eq!(
        billing.demote_when,
        Some(DemoteWhen {
            corrections: 0.1,
            reviewed: 20
        }),
        "demote_when.reviewed defaults to 20"
    );
    assert_eq!(billing.min_reviewed, 30, "the default minimum");
    assert_eq!(c.routes[1].rollout.mode, Some(Mode::Approve));
    assert_eq!(
        c.routes[1].rollout.sample, 0.0,
        "sampling is off by default"
    );
    let rest = &c.routes[2].rollout;
    assert_eq!(rest.mode, None);
    assert_eq!(
        rest.promote_when,
        Some(PromoteWhen {
            agreement: 0.95,
            reviewed: 200,
            auto: false
        }),
        "never automatic unless written"
    );
    assert_eq!(rest.min_reviewed, 200);
}

#[test]
fn bad_rollout_keys_are_reported_where_written() {
    let broken = CHARTER
        .replace("    mode: live\n", "    mode: sometimes\n")
        .replace("sample: 5%", "sample: 150%")
        .replace(
            "{ agreement: 95%, reviewed: 200 }",
            "{ agreement: 0.9, reviewed: 0, when: now }",
        )
        .replace("{ corrections: 10% }", "{ reviewed: 5 }");
    let p = problems(&broken);
    for want in [
        "charters/trio.yaml:20:11: `mode` is `sometimes`; expected one of `shadow`, `approve`, `live`",
        "charters/trio.yaml:21:13: `sample`: `150%` is outside 0%..100%",
        "missing `demote_when.corrections`",
        "`promote_when.reviewed` is 0; expected a whole number of at least 1",
        "unknown field `when`, expected one of `agreement`, `reviewed`, `auto`",
    ] {
        assert!(p.contains(want), "{want:?} not in:\n{p}");
    }
    let dup = CHARTER.replace("  - name: rest\n", "  - name: billing\n");
    let p = problems(&dup);
    assert!(p.contains("route name `billing` is used twice"), "{p}");
    let bad = CHARTER.replace("  - name: rest\n", "  - name: Rest Of It\n");
    let p = problems(&bad);
    assert!(p.contains("route name `Rest Of It` is not allowed"), "{p}");
}

#[test]
fn an_override_applies_while_the_files_still_say_what_they_said() {
    let p = load_project(&source(CHARTER)).unwrap_or_else(|d| panic!("{d}"));
    let c = &p.charters["trio"];
    let (billing, refund, rest) = (&c.routes[0], &c.routes[1], &c.routes[2]);
    // No override: the route's own mode, else the charter's effective mode.
    assert_eq!(
        route_mode(billing, Mode::Shadow, Mode::Shadow, None),
        Mode::Live
    );
    assert_eq!(
        route_mode(refund, Mode::Shadow, Mode::Shadow, None),
        Mode::Approve
    );
    assert_eq!(
        route_mode(rest, Mode::Shadow, Mode::Shadow, None),
        Mode::Shadow
    );
    assert_eq!(
        route_mode(rest, Mode::Shadow, Mode::Live, None),
        Mode::Live,
        "a route without mode: follows a charter-wide promotion"
    );
    // An operator set `rest` live over the charter's shadow: applies.
    assert_eq!(
        route_mode(rest, Mode::Shadow, Mode::Shadow, Some(("live", "shadow"))),
        Mode::Live
    );
    // The charter file now says live: the file is the newer decision.
    assert_eq!(
        route_mode(rest, Mode::Live, Mode::Live, Some(("shadow", "shadow"))),
        Mode::Live
    );
    // `billing` was demoted to approve over its `mode: live`: applies until the file changes.
    assert_eq!(
        route_mode(
            billing,
            Mode::Shadow,
            Mode::Shadow,
            Some(("approve", "live"))
        ),
        Mode::Approve
    );
    let edited = CHARTER.replace("    mode: live\n", "    mode: shadow\n");
    let p = load_project(&source(&edited)).unwrap_or_else(|d| panic!("{d}"));
    let billing = &p.charters["trio"].routes[0];
    assert_eq!(
        route_mode(
            billing,
            Mode::Shadow,
            Mode::Shadow,
            Some(("approve", "live"))
        ),
        Mode::Shadow,
        "the route's mode: was edited since: it wins"
    );
}
