//! Field extractors, the escalation of a missing required field, and context fetched from a
//! connector before deciding (continue, and retry on failure).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extractors_fill_fields_and_a_missing_required_field_escalates() {
    let c = charter(
        "orders",
        r#"decide:
  labels: [billing, other]
  stages:
    - rules:
        - { when: 'payload.subject.contains("refund")', label: billing }
  otherwise: other
  extract:
    order_id: { type: string, pattern: "^ORD-[0-9]+$", required: true, regex: 'order (ORD-[0-9]+)' }
    amount: { type: number, regex: '([0-9]+[.][0-9]+) EUR', in: payload.body }
    customer: { template: "{{ payload.customer.id }}" }"#,
        r#"routes:
  - when: "true"
    do: [record]
actions:
  record:
    connector: helpdesk
    request:
      method: PUT
      path: "/api/orders/{{ decision.fields.order_id }}"
      json: { amount: "{{ decision.fields.amount }}", customer: "{{ decision.fields.customer }}" }
    approval: auto"#,
        "",
    );
    let h = Harness::start(&[("orders", c)], &[]).await;
    let ok = h
        .send(
            "orders",
            json!({"subject": "refund for order ORD-77", "body": "charged 12.50 EUR twice", "customer": {"id": "C-9"}}),
        )
        .await;
    let missing = h
        .send("orders", json!({"subject": "refund please, I lost the number", "body": "", "customer": {"id": "C-9"}}))
        .await;

    let run = h.wait(ok, "done").await;
    let d = run.decision.unwrap();
    assert_eq!(d.label.as_deref(), Some("billing"));
    assert_eq!(d.fields["order_id"], "ORD-77");
    assert_eq!(d.fields["amount"], 12.5);
    assert_eq!(d.fields["customer"], "C-9");
    let got = h.sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/api/orders/ORD-77");

    // No order id: the decision escalates with the reason, nothing is sent.
    let run = h.wait(missing, "waiting").await;
    let d = run.decision.unwrap();
    assert_eq!(d.label, None, "{d:?}");
    assert!(
        d.reason.contains("required field(s) missing: `order_id`")
            && d.reason
                .contains("regex `order (ORD-[0-9]+)` found no match")
            && d.reason.contains("the rule stage chose `billing`"),
        "{}",
        d.reason
    );
    let esc = h
        .http
        .get(format!("{}/api/v1/escalations?charter=orders", h.base))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let reasons: Vec<&str> = esc["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, vec!["missing_field"], "{esc}");
    assert_eq!(h.sink.received().len(), 1, "nothing more was sent");
}

fn context_charter(name: &str, on_error: &str) -> String {
    charter(
        name,
        r#"decide:
  labels: [vip, other]
  stages:
    - rules:
        - { when: 'context.customer != null && context.customer.tier == "gold"', label: vip }
  otherwise: other"#,
        r#"routes:
  - when: "true"
    do: [note]
actions:
  note:
    connector: helpdesk
    request:
      method: POST
      path: "/api/notes"
      json: { text: "{{ decision.label }} for {{ context.customer.name if context.customer else 'unknown' }}" }
    approval: auto"#,
        &format!(
            "context:\n  customer: {{ connector: crm, get: \"/customers/{{{{ payload.customer_id }}}}\", timeout: 1s, on_error: {on_error}, retry_after: 300ms }}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_is_fetched_once_and_seen_by_rules_and_templates() {
    let h = Harness::start(&[("ctx", context_charter("ctx", "continue"))], &[]).await;
    let id = h
        .send("ctx", json!({"subject": "hello", "customer_id": 7}))
        .await;
    let run = h.wait(id, "done").await;
    assert_eq!(run.decision.unwrap().label.as_deref(), Some("vip"));
    let got = h.sink.received();
    assert_eq!(got.len(), 1);
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["text"], "vip for Ann Example");
    assert_eq!(h.crm.hits.load(Ordering::SeqCst), 1, "fetched once per run");
    let extras = h.store.run_extras(run.id).await.unwrap();
    assert_eq!(extras.len(), 1);
    assert_eq!(extras[0].kind, EXTRA_CONTEXT);
    assert_eq!(extras[0].body["ok"], true);
    assert_eq!(extras[0].body["value"]["tier"], "gold");

    // CRM down with `on_error: continue`: decided without it, the failure recorded.
    h.crm.down.store(true, Ordering::SeqCst);
    let id = h
        .send("ctx", json!({"subject": "again", "customer_id": 7}))
        .await;
    let run = h.wait(id, "done").await;
    assert_eq!(run.decision.unwrap().label.as_deref(), Some("other"));
    let body: Value = serde_json::from_str(&h.sink.received()[1].body).unwrap();
    assert_eq!(body["text"], "other for unknown");
    let extras = h.store.run_extras(run.id).await.unwrap();
    assert_eq!(extras[0].body["ok"], false);
    assert_eq!(extras[0].body["status"], 503);

    // The timeline endpoint and page show the failed fetch, never the connector's secret.
    let raw = h
        .http
        .get(format!("{}/api/v1/events/{id}/timeline", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let t: Value = serde_json::from_str(&raw).unwrap();
    let fetches = t["runs"][0]["context"].as_array().unwrap();
    assert_eq!(fetches.len(), 1, "{t}");
    assert_eq!(fetches[0]["name"], "customer");
    assert_eq!(fetches[0]["connector"], "crm");
    assert_eq!(fetches[0]["ok"], false);
    assert_eq!(fetches[0]["status"], 503);
    assert!(fetches[0]["duration_ms"].is_u64(), "{t}");
    assert!(fetches[0]["error"].is_string(), "{t}");
    assert!(
        !raw.contains("crm-token"),
        "the connector's secret leaked: {raw}"
    );
    let page = ui_page(&h, &format!("/events/{id}")).await;
    assert!(page.contains("Context customer"), "{page}");
    assert!(page.contains("status 503"), "{page}");
    assert!(!page.contains("crm-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_context_fetch_with_retry_runs_again_later() {
    let h = Harness::start(&[("ctxr", context_charter("ctxr", "retry"))], &[]).await;
    h.crm.down.store(true, Ordering::SeqCst);
    let id = h
        .send("ctxr", json!({"subject": "hello", "customer_id": 7}))
        .await;
    // The first run fails on the context and the event is held for the retry.
    let mut first = None;
    for _ in 0..200 {
        let runs = h.store.runs_for_event(id).await.unwrap();
        if let Some(r) = runs.first()
            && r.finished_at.is_some()
        {
            first = Some(r.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = first.expect("a first run");
    assert_eq!(first.outcome, Some(charter_core::model::RunOutcome::Failed));
    let err = first.error.clone().unwrap();
    assert!(
        err.contains("context `customer` could not be fetched") && err.contains("on_error: retry"),
        "{err}"
    );
    assert!(
        first.decision.is_none(),
        "nothing was decided without the context"
    );
    assert!(h.sink.received().is_empty());
    // The CRM comes back; the held event is retried and completes.
    h.crm.down.store(false, Ordering::SeqCst);
    let run = h.wait(id, "done").await;
    assert_ne!(run.id, first.id);
    assert_eq!(run.decision.unwrap().label.as_deref(), Some("vip"));
    assert_eq!(h.sink.received().len(), 1);
    assert!(h.crm.hits.load(Ordering::SeqCst) >= 2);
}
