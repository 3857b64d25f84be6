//! Triggers: NATS subscriptions (defaults, problems, durable consumers), webhook verify
//! presets (Shopify, Zendesk, HubSpot) and event types.

use super::*;

/// A charter.yaml with one connector and no token scopes.
const NATS_PROJECT: &str =
    "connectors:\n  crm: { type: http, base_url: https://crm.example.com }\n";

/// A minimal charter consuming a NATS subject; `nats` is the body of `trigger.nats`.
fn nats_charter(name: &str, nats: &str) -> String {
    format!(
        r#"name: {name}
description: Orders from NATS.
owner: a@b.example
maintainer: c@d.example
system_of_record: crm
mode: shadow
uses: [crm]
trigger:
  nats:
{nats}
  dedupe: "{{{{ payload.order_id }}}}"
routes:
  - when: "true"
    do: [note]
actions:
  note:
    log: "order {{{{ payload.order_id }}}}"
    approval: auto
escalation: {{ to: ops }}
measure:
  done: [noted]
"#
    )
}

#[test]
fn nats_trigger_parses_with_a_default_durable() {
    let full = nats_charter(
        "orders",
        "    url: nats://127.0.0.1:4222\n    stream: ORDERS\n    subject: orders.>\n    durable: charter-orders-v2\n    create_stream: true",
    );
    let short = nats_charter(
        "refunds",
        "    { url: nats://127.0.0.1:4222, stream: REFUNDS, subject: refunds.*.created }",
    );
    let src = source(&[
        ("charter.yaml", NATS_PROJECT),
        ("charters/orders.yaml", &full),
        ("charters/refunds.yaml", &short),
    ]);
    let project = load_project(&src).unwrap_or_else(|d| panic!("{d}"));
    let orders = project.charters["orders"].trigger.nats.clone().unwrap();
    assert_eq!(orders.url, "nats://127.0.0.1:4222");
    assert_eq!(orders.stream, "ORDERS");
    assert_eq!(orders.subject, "orders.>");
    assert_eq!(orders.durable, "charter-orders-v2");
    assert!(orders.create_stream);
    assert!(project.charters["orders"].trigger.webhook.is_none());
    let refunds = project.charters["refunds"].trigger.nats.clone().unwrap();
    assert_eq!(refunds.durable, "charter-refunds");
    assert_eq!(refunds.subject, "refunds.*.created");
    assert!(!refunds.create_stream);
}

#[test]
fn nats_trigger_problems_are_each_reported_with_their_place() {
    let bad = nats_charter(
        "orders",
        "    url: http://127.0.0.1:4222\n    stream: OR DERS\n    subject: orders.>.x\n    durable: charter.orders\n    bogus: 1",
    );
    let src = source(&[
        ("charter.yaml", NATS_PROJECT),
        ("charters/orders.yaml", &bad),
    ]);
    let out = diagnostics(&src);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[0].starts_with(
            "charters/orders.yaml:10:10: NATS url `http://127.0.0.1:4222` is not valid"
        ),
        "{out}"
    );
    assert!(
        lines[1].starts_with("charters/orders.yaml:11:13: NATS stream name `OR DERS` is not valid"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("charters/orders.yaml:12:14: NATS subject `orders.>.x` is not valid"),
        "{out}"
    );
    assert!(
        lines[3].starts_with(
            "charters/orders.yaml:13:14: NATS durable name `charter.orders` is not valid"
        ),
        "{out}"
    );
    assert!(
        lines[4].starts_with("charters/orders.yaml:14:5: unknown field `bogus`"),
        "{out}"
    );

    let missing = nats_charter("orders", "    { durable: \"\" }");
    let src = source(&[
        ("charter.yaml", NATS_PROJECT),
        ("charters/orders.yaml", &missing),
    ]);
    let out = diagnostics(&src);
    for key in [
        "missing `url`",
        "missing `stream`",
        "missing `subject`",
        "`durable` is empty",
    ] {
        assert!(out.contains(key), "no `{key}` in:\n{out}");
    }
    assert_eq!(out.lines().count(), 4, "{out}");
}

#[test]
fn two_charters_cannot_share_a_durable_consumer() {
    let nats =
        "    { url: nats://127.0.0.1:4222, stream: ORDERS, subject: orders.>, durable: shared }";
    let a = nats_charter("orders-a", nats);
    let b = nats_charter("orders-b", nats);
    let src = source(&[
        ("charter.yaml", NATS_PROJECT),
        ("charters/a.yaml", &a),
        ("charters/b.yaml", &b),
    ]);
    let out = diagnostics(&src);
    assert_eq!(
        out,
        "charters/b.yaml:10:5: durable consumer `shared` on stream `ORDERS` is already used by charters/a.yaml; each charter needs its own `durable`"
    );
}

#[test]
fn shopify_zendesk_and_hubspot_presets() {
    let stripe = "verify: { preset: stripe, secrets: [env:A, env:B], tolerance: 2m }";
    let load = |verify: &str, project: &str| {
        let mut src = with_triage(&TRIAGE.replace(stripe, verify));
        src.files.insert("charter.yaml".into(), project.to_string());
        load_project(&src)
    };
    let verify_of = |verify: &str| {
        let p = load(verify, PROJECT).unwrap_or_else(|d| panic!("{verify}: {d}"));
        p.charters["support-triage"]
            .trigger
            .webhook
            .as_ref()
            .unwrap()
            .verify
            .clone()
    };
    assert_eq!(
        verify_of("verify: { preset: shopify, secret: env:SHOPIFY }"),
        VerifySpec::Shopify
    );
    assert_eq!(
        verify_of("verify: { preset: zendesk, secret: env:ZD, tolerance: 2m }"),
        VerifySpec::Zendesk {
            tolerance: Duration::from_secs(120)
        }
    );
    // HubSpot signs the URL it calls: the public URL followed by the webhook path.
    assert_eq!(
        verify_of("verify: { preset: hubspot-v3, secret: env:HUBSPOT }"),
        VerifySpec::HubspotV3 {
            tolerance: verify::DEFAULT_TOLERANCE,
            url: "https://charter.acme.example/hooks/helpdesk/tickets".into(),
        }
    );
    let no_public_url = PROJECT.replace("  public_url: https://charter.acme.example\n", "");
    let err = load(
        "verify: { preset: hubspot-v3, secret: env:HUBSPOT }",
        &no_public_url,
    )
    .unwrap_err()
    .to_string();
    let line = err
        .lines()
        .find(|l| l.contains("`preset: hubspot-v3` signs the full URL"));
    assert!(
        line.is_some_and(
            |l| l.starts_with("charters/triage.yaml:") && l.contains("`server.public_url`")
        ),
        "{err}"
    );
    let err = load(
        "verify: { preset: shopify, secret: env:S, tolerance: 5m }",
        PROJECT,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`tolerance` does not apply to `preset: shopify`: Shopify signs no timestamp"),
        "{err}"
    );
    let err = load("verify: { preset: hubspot, secret: env:S }", PROJECT)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown verify preset `hubspot`; expected one of")
            && err.contains("`hubspot-v3`"),
        "{err}"
    );
}

#[test]
fn trigger_events_are_checked_where_they_are_written() {
    let text_line = "  text: \"{{ payload.ticket.subject }}\"\n";
    assert!(TRIAGE.contains(text_line));
    let ok = TRIAGE.replace(
        text_line,
        &format!("{text_line}  events: [issues, \"invoice.*\"]\n"),
    );
    let project = load_project(&with_triage(&ok)).unwrap_or_else(|d| panic!("{d}"));
    let triage = &project.charters["support-triage"];
    let types = triage.trigger.events.clone().expect("events");
    assert!(types.takes(Some("issues")) && types.takes(Some("invoice.paid")));
    assert!(!types.takes(Some("push")) && !types.takes(None));
    let bad = TRIAGE.replace(text_line, &format!("{text_line}  events: [\"in*voice\"]\n"));
    let out = diagnostics(&with_triage(&bad));
    assert!(
        out.contains("charters/triage.yaml:") && out.contains("`in*voice` is not an event type"),
        "{out}"
    );
}
