//! Webhook ingest: signature presets, contracts and the rejected list, body limits,
//! deduplication of concurrent and redelivered copies, event types.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_preset_accepts_signed_and_rejects_forged_stale_and_missing() {
    let h = Harness::start(&[]).await;
    for charter in ["std", "stripe", "github", "slack", "generic"] {
        let (status, v) = h
            .send_signed(charter, &ticket(1, "hello"), &format!("d-{charter}"))
            .await;
        assert_eq!(
            status, 202,
            "{charter}: signed delivery must be accepted: {v}"
        );
        assert!(v["id"].as_str().is_some());

        let (spec, path) = h.spec(charter);
        let raw = serde_json::to_vec(&ticket(2, "forged")).unwrap();
        // Wrong secret.
        let forged = verify::sign(&spec, "not-the-secret", &raw, now_secs(), "x1").unwrap();
        assert_eq!(
            h.post(&path, raw.clone(), forged).await.0,
            401,
            "{charter}: forged"
        );
        // Missing signature.
        assert_eq!(
            h.post(&path, raw.clone(), vec![]).await.0,
            401,
            "{charter}: missing"
        );
        // Tampered body with a valid signature of another body.
        let good = verify::sign(&spec, SECRET, &raw, now_secs(), "x2").unwrap();
        let tampered = serde_json::to_vec(&ticket(3, "tampered")).unwrap();
        assert_eq!(
            h.post(&path, tampered, good).await.0,
            401,
            "{charter}: tampered"
        );
        // Stale timestamp (GitHub signs no timestamp, so it has none to be stale).
        if charter != "github" {
            let stale = verify::sign(&spec, SECRET, &raw, now_secs() - 3600, "x3").unwrap();
            assert_eq!(
                h.post(&path, raw.clone(), stale).await.0,
                401,
                "{charter}: stale"
            );
        }
        // Nothing but the one good delivery was stored.
        assert_eq!(
            h.events(charter).await.len(),
            1,
            "{charter}: only the signed event is stored"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_violations_are_answered_422_and_kept_as_rejected() {
    let h = Harness::start(&[]).await;
    let bad = json!({"ticket": {"id": "not-a-number"}});
    let (status, v) = h.send_signed("github", &bad, "c1").await;
    assert_eq!(status, 422, "{v}");
    let violations: Vec<String> = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    assert!(
        violations.iter().any(|m| m.starts_with("/ticket/id")),
        "{violations:?}"
    );
    assert!(
        violations.iter().any(|m| m.contains("subject")),
        "{violations:?}"
    );
    assert!(h.events("github").await.is_empty());
    let rejected = h.get("/api/v1/rejected?charter=github").await;
    let items = rejected["rejected"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], v["rejected_id"]);
    assert!(items[0]["body"].as_str().unwrap().contains("not-a-number"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413() {
    let h = Harness::start(&[]).await;
    let big = json!({"ticket": {"id": 1, "subject": "x".repeat(2 * 1024 * 1024)}});
    let (status, _) = h.send_signed("github", &big, "big").await;
    assert_eq!(status, 413);
    assert!(h.events("github").await.is_empty());
    h.stop().await;
}

/// The oversized body is not read to its end, so the 413 closes the connection; the same
/// client's next request goes out on a new one and is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_closes_its_connection_and_the_next_request_is_answered() {
    let h = Harness::start(&[]).await;
    let (spec, path) = h.spec("github");
    let raw = serde_json::to_vec(&json!({"pad": "x".repeat(2 * 1024 * 1024)})).unwrap();
    let mut req = h
        .client
        .post(format!("{}{}", h.base, path))
        .header("content-type", "application/json")
        .body(raw.clone());
    for (k, v) in verify::sign(&spec, SECRET, &raw, now_secs(), "too-big").unwrap() {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(
        resp.headers()
            .get("connection")
            .and_then(|v| v.to_str().ok()),
        Some("close")
    );
    for _ in 0..20 {
        let status = h
            .client
            .get(format!("{}/healthz", h.base))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_copies_give_one_event_and_one_action() {
    let h = Arc::new(Harness::start(&[]).await);
    let body = ticket(77, "refund please");
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let h = h.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            h.send_signed("std", &body, "same-delivery").await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut accepted = 0;
    for t in tasks {
        let (status, v) = t.await.unwrap();
        assert!(status == 202 || status == 200, "status {status}");
        if status == 202 {
            accepted += 1;
        }
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(accepted, 1, "exactly one delivery is stored");
    assert_eq!(ids.len(), 1, "every copy answers with the original id");
    let id = ids.into_iter().next().unwrap();
    let detail = h.wait_final(&id).await;
    assert_eq!(detail["event"]["status"], "done");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let puts: Vec<_> = h
        .sink
        .received()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 1, "one action reached the downstream");
    assert_eq!(h.events("std").await.len(), 1);
    let h = Arc::try_unwrap(h).ok().unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_by_template_and_metrics_count_it() {
    let text = charter_yaml(
        "templ",
        "live",
        "none",
        "/hooks/templ",
        "dedupe: \"{{ payload.ticket.id }}\"",
    );
    let h = Harness::start(&[("charters/templ.yaml", &text)]).await;
    let body = serde_json::to_vec(&ticket(11, "hi")).unwrap();
    let (a, va) = h.post("/hooks/templ", body.clone(), vec![]).await;
    let (b, vb) = h.post("/hooks/templ", body, vec![]).await;
    assert_eq!((a, b), (202, 200));
    assert_eq!(va["id"], vb["id"]);
    assert_eq!(vb["status"], "duplicate");
    let metrics = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("charter_events_received_total{charter=\"templ\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("charter_events_duplicate_total{charter=\"templ\"} 1"),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_payload_is_replayed_after_the_contract_is_fixed() {
    let h = Harness::start(&[]).await;
    // `subject` missing: the contract rejects it and keeps it.
    let (status, v) = h
        .send_signed("github", &json!({"ticket": {"id": 41}}), "rj")
        .await;
    assert_eq!(status, 422);
    let rejected_id = v["rejected_id"].as_str().unwrap().to_string();
    // Replaying under the same contract still fails, and keeps the payload.
    let (s, body) = h
        .api_post(&format!("/api/v1/rejected/{rejected_id}/replay"), json!({}))
        .await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(
        h.get("/api/v1/rejected?charter=github").await["rejected"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Fix the contract (subject no longer required) and restart on the same folder and store.
    let (dir, sink) = h.stop_keep().await;
    write(
        &dir,
        "schemas/ticket.json",
        r#"{"type":"object","required":["ticket"],"properties":{"ticket":{"type":"object","required":["id"],"properties":{"id":{"type":"integer"}}}}}"#,
    );
    let h = Harness::boot(dir, sink, CancellationToken::new()).await;
    let (s, body) = h
        .api_post(&format!("/api/v1/rejected/{rejected_id}/replay"), json!({}))
        .await;
    assert_eq!(s, 202, "{body}");
    let detail = h.wait_final(body["id"].as_str().unwrap()).await;
    assert_eq!(detail["event"]["status"], "done");
    assert_eq!(
        detail["event"]["source"],
        format!("replay:rejected:{rejected_id}")
    );
    assert!(
        h.get("/api/v1/rejected?charter=github").await["rejected"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    h.stop().await;
}

/// `trigger.events` takes only the listed event types: a GitHub delivery of another type and
/// GitHub's `ping` are answered 200 and stored nowhere, counted by reason.
#[tokio::test]
async fn a_trigger_takes_only_its_event_types_and_answers_ping() {
    let h = Harness::start(&[(
        "charters/gh.yaml",
        &charter_yaml(
            "gh",
            "live",
            "{ preset: github, secret: file:secrets/hook }",
            "/hooks/gh",
            "events: [issues, \"pull_request*\"]",
        ),
    )])
    .await;
    let (spec, path) = h.spec("gh");
    let send = |event: &'static str, delivery: &'static str, id: i64| {
        let raw = serde_json::to_vec(&ticket(id, "refund")).unwrap();
        let mut headers = verify::sign(&spec, SECRET, &raw, now_secs(), delivery).unwrap();
        headers.push(("x-github-event".into(), event.into()));
        h.post(&path, raw, headers)
    };
    let (status, v) = send("issues", "d1", 1).await;
    assert_eq!(status, 202, "{v}");
    let (status, v) = send("pull_request_review", "d2", 2).await;
    assert_eq!(status, 202, "{v}");
    let (status, v) = send("push", "d3", 3).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ignored"], true);
    assert_eq!(v["event_type"], "push");
    let (status, v) = send("ping", "d4", 4).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ping"], true);
    let stored: Vec<String> = h
        .events("gh")
        .await
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        stored.contains(&"issues".to_string())
            && stored.contains(&"pull_request_review".to_string())
    );
    let metrics = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("charter_events_ignored_total{charter=\"gh\",reason=\"event_type\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("charter_events_ignored_total{charter=\"gh\",reason=\"ping\"} 1"));
    h.stop().await;
}

/// Stripe and the Slack Events API send no delivery-id header but repeat the delivery's id
/// in the body (`id`, `event_id`): without a `dedupe:` in the charter, a signed redelivery
/// with the same body id is answered as a duplicate of the first, and another id is new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripe_or_slack_redelivery_is_a_duplicate_without_dedupe() {
    let h = Harness::start(&[]).await;
    for (charter, field, id, other) in [
        (
            "stripe",
            "id",
            "evt_1QxY2bLkdIwHu7ix",
            "evt_1QxY2bLkdIwHu7iy",
        ),
        ("slack", "event_id", "Ev08MFMKH6J9", "Ev08MFMKH6JA"),
    ] {
        let mut body = ticket(11, "refund please");
        body[field] = json!(id);
        let (status, first) = h.send_signed(charter, &body, "d1").await;
        assert_eq!(status, 202, "{charter}: {first}");
        // The provider retries the same delivery, signed again (a later timestamp).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, again) = h.send_signed(charter, &body, "d2").await;
        assert_eq!(status, 200, "{charter}: the redelivery: {again}");
        assert_eq!(again["status"], "duplicate", "{charter}: {again}");
        assert_eq!(again["id"], first["id"], "{charter}: {again}");
        let mut next = body.clone();
        next[field] = json!(other);
        let (status, new) = h.send_signed(charter, &next, "d3").await;
        assert_eq!(status, 202, "{charter}: another delivery id: {new}");
        assert_ne!(new["id"], first["id"]);
        let stored = h.events(charter).await;
        assert_eq!(stored.len(), 2, "{charter}: {stored:?}");
        let ev = h
            .get(&format!("/api/v1/events/{}", first["id"].as_str().unwrap()))
            .await;
        assert_eq!(ev["event"]["dedupe_key"], id, "{charter}: {ev}");
    }
    h.stop().await;
}
