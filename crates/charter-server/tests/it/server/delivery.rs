//! Actions reaching the sink: retries with one idempotency key, `Retry-After`, dead letters
//! and replay, shadow mode, pause and resume, unmatched routes.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_then_200_is_retried_with_the_same_idempotency_key() {
    let h = Harness::start(&[]).await;
    h.sink
        .script([Scripted::Status(500), Scripted::Status(503)]);
    let (status, v) = h.send_signed("github", &ticket(5, "refund"), "r1").await;
    assert_eq!(status, 202);
    let detail = h.wait_final(v["id"].as_str().unwrap()).await;
    assert_eq!(detail["event"]["status"], "done", "{detail}");
    let puts: Vec<_> = h
        .sink
        .received()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 3);
    let key = puts[0].idempotency_key.clone().unwrap();
    assert!(
        puts.iter()
            .all(|p| p.idempotency_key.as_deref() == Some(key.as_str()))
    );
    assert_eq!(puts.iter().filter(|p| p.applied).count(), 1);
    assert_eq!(
        puts[2].authorization.as_deref(),
        Some("Bearer sink-token-abc")
    );
    let action = &detail["runs"][0]["actions"][0];
    assert_eq!(action["action"], "assign_billing");
    assert_eq!(action["status"], "succeeded");
    assert_eq!(action["idempotency_key"].as_str(), Some(key.as_str()));
    let statuses: Vec<_> = action["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64())
        .collect();
    assert_eq!(statuses, vec![Some(500), Some(503), Some(200)]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let h = Harness::start(&[]).await;
    h.sink.script([Scripted::TooMany {
        retry_after_secs: 1,
    }]);
    let (_, v) = h.send_signed("github", &ticket(6, "refund"), "ra").await;
    let detail = h.wait_final(v["id"].as_str().unwrap()).await;
    let attempts = detail["runs"][0]["actions"][0]["attempts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["status"], 429);
    let gap =
        attempts[1]["started_at"].as_i64().unwrap() - attempts[0]["started_at"].as_i64().unwrap();
    assert!(
        gap >= 1000,
        "the retry waited {gap} ms, less than Retry-After: 1"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_then_replay_does_not_repeat_succeeded_actions() {
    let h = Harness::start(&[]).await;
    h.sink.fail_always(Some(500));
    let (_, v) = h.send_signed("github", &ticket(8, "refund"), "dl").await;
    let id = v["id"].as_str().unwrap().to_string();
    let detail = h.wait_final(&id).await;
    assert_eq!(detail["event"]["status"], "failed");
    assert_eq!(detail["runs"][0]["actions"][0]["status"], "dead_lettered");
    assert_eq!(
        detail["runs"][0]["actions"][0]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(detail["runs"][0]["outcome"], "failed");

    h.sink.fail_always(None);
    let (s, r) = h
        .api_post("/api/v1/replay", json!({"charter": "github"}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(r["requeued"].as_array().unwrap().len(), 1);
    // Wait for the second run to finish.
    let mut detail = Value::Null;
    for _ in 0..200 {
        detail = h.get(&format!("/api/v1/events/{id}")).await;
        if detail["event"]["status"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(detail["event"]["status"], "done");
    assert_eq!(detail["runs"].as_array().unwrap().len(), 2);
    assert_eq!(detail["runs"][1]["actions"][0]["status"], "succeeded");

    // A replay of a done event runs again but repeats no succeeded action.
    let before = h.sink.received().len();
    let (s, _) = h
        .api_post(&format!("/api/v1/events/{id}/replay"), json!({}))
        .await;
    assert_eq!(s, 200);
    let mut runs = 0;
    for _ in 0..200 {
        detail = h.get(&format!("/api/v1/events/{id}")).await;
        runs = detail["runs"].as_array().unwrap().len();
        if runs == 3 && detail["event"]["status"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(runs, 3);
    assert_eq!(detail["runs"][2]["actions"][0]["status"], "already_done");
    assert_eq!(h.sink.received().len(), before, "nothing was sent again");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_sends_nothing_and_records_what_would_run() {
    let shadow = charter_yaml(
        "shadowed",
        "shadow",
        "{ preset: github, secret: file:secrets/hook }",
        "/hooks/shadow",
        "",
    );
    let h = Harness::start(&[("charters/shadowed.yaml", &shadow)]).await;
    let (_, v) = h.send_signed("shadowed", &ticket(9, "refund"), "s1").await;
    let detail = h.wait_final(v["id"].as_str().unwrap()).await;
    assert_eq!(detail["event"]["status"], "done");
    let run = &detail["runs"][0];
    assert_eq!(run["outcome"], "shadow");
    assert_eq!(run["actions"][0]["status"], "would_run");
    assert_eq!(run["actions"][0]["params"]["target"], "/api/tickets/9");
    assert_eq!(run["actions"][1]["status"], "would_run");
    assert!(
        h.sink.received().is_empty(),
        "shadow mode must not call the downstream"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_charter_stores_and_processes_in_order_after_resume() {
    // One at a time, so arrival order is observable at the downstream.
    let serial = charter_yaml(
        "serial",
        "live",
        "{ preset: github, secret: file:secrets/hook }",
        "/hooks/serial",
        "",
    )
    .replace("concurrency: 4", "concurrency: 1");
    let h = Harness::start(&[("charters/serial.yaml", &serial)]).await;
    let (s, _) = h.api_post("/api/v1/charters/serial/pause", json!({})).await;
    assert_eq!(s, 200);
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, v) = h
            .send_signed("serial", &ticket(100 + i, "refund"), &format!("p{i}"))
            .await;
        assert_eq!(status, 202);
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = h.events("serial").await;
    assert_eq!(events.len(), 5);
    assert!(
        events.iter().all(|e| e["status"] == "pending"),
        "nothing is processed while paused"
    );
    assert!(h.sink.received().is_empty());
    let (s, _) = h
        .api_post("/api/v1/charters/serial/resume", json!({}))
        .await;
    assert_eq!(s, 200);
    for id in &ids {
        assert_eq!(h.wait_final(id).await["event"]["status"], "done");
    }
    let paths: Vec<String> = h
        .sink
        .received()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.path)
        .collect();
    assert_eq!(paths.len(), 5);
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "events were processed in arrival order");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_is_recorded() {
    let text = charter_yaml(
        "picky",
        "live",
        "{ preset: github, secret: file:secrets/hook }",
        "/hooks/picky",
        "",
    )
    .replace("  - when: \"true\"\n    do: [note]\n", "");
    let h = Harness::start(&[("charters/picky.yaml", &text)]).await;
    let (_, v) = h
        .send_signed("picky", &ticket(10, "just saying hi"), "n1")
        .await;
    let detail = h.wait_final(v["id"].as_str().unwrap()).await;
    assert_eq!(detail["event"]["status"], "done");
    assert_eq!(detail["runs"][0]["outcome"], "no_route");
    assert!(detail["runs"][0]["actions"].as_array().unwrap().is_empty());
    assert_eq!(detail["runs"][0]["decision"]["label"], "other");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_actions_open_an_escalation() {
    let h = Harness::start(&[]).await;
    h.sink.fail_always(Some(500));
    let (_, v) = h
        .send_signed("github", &ticket(37, "refund"), "dl-esc")
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let d = h.wait_final(&id).await;
    assert_eq!(d["event"]["status"], "failed");
    let (_, v) = h
        .call("GET", "/api/v1/escalations?charter=github", None, None)
        .await;
    let e = &v["escalations"][0];
    assert_eq!(e["reason"], "dead_letter", "{v}");
    assert_eq!(e["event_id"], id.as_str());
    assert_eq!(e["detail"]["action"], "assign_billing");
    assert_eq!(e["detail"]["attempts"].as_array().unwrap().len(), 4);
    assert_eq!(e["detail"]["payload"], ticket(37, "refund"));
    h.stop().await;
}

/// Open dead letters of `charter` (the API's default listing is the open ones).
async fn open_escalations(h: &Harness, charter: &str) -> Value {
    h.get(&format!("/api/v1/escalations?charter={charter}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_closes_when_its_event_later_succeeds_and_is_never_a_correction() {
    let h = Harness::start(&[]).await;
    h.sink.fail_always(Some(500));
    let (_, v) = h
        .send_signed("github", &ticket(41, "refund"), "dl-retry")
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(h.wait_final(&id).await["event"]["status"], "failed");
    let open = open_escalations(&h, "github").await;
    assert_eq!(open["total"], 1, "{open}");
    let esc = open["escalations"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(open["escalations"][0]["reason"], "dead_letter");

    // A dead letter is not labelled.
    let (s, body) = h
        .api_post(
            &format!("/api/v1/escalations/{esc}/decide"),
            json!({"label": "billing"}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("dead letter"),
        "{body}"
    );

    // Retry while the target still fails: the escalation stays open.
    let (s, body) = h
        .api_post(&format!("/api/v1/escalations/{esc}/retry"), json!({}))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["requeued"][0], id.as_str());
    let mut detail = Value::Null;
    for _ in 0..400 {
        detail = h.get(&format!("/api/v1/events/{id}")).await;
        if detail["runs"].as_array().map_or(0, Vec::len) == 2
            && detail["event"]["status"] == "failed"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(detail["event"]["status"], "failed", "{detail}");
    assert_eq!(open_escalations(&h, "github").await["total"], 1);

    // The target recovers; the operator replays the event: it succeeds and the dead letter
    // closes by itself, without a decision.
    h.sink.fail_always(None);
    let (s, _) = h
        .api_post(&format!("/api/v1/events/{id}/replay"), json!({}))
        .await;
    assert_eq!(s, 200);
    let mut closed = Value::Null;
    for _ in 0..400 {
        closed = h.get(&format!("/api/v1/escalations/{esc}")).await;
        if closed["escalation"]["status"] == "resolved" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(closed["escalation"]["status"], "resolved", "{closed}");
    assert_eq!(closed["escalation"]["resolved_by"], "system");
    assert_eq!(closed["escalation"]["resolution"], Value::Null);
    assert_eq!(
        h.get(&format!("/api/v1/events/{id}")).await["event"]["status"],
        "done"
    );
    assert_eq!(open_escalations(&h, "github").await["total"], 0);
    let corrections = h.get("/api/v1/corrections?charter=github").await;
    assert_eq!(corrections["corrections"], json!([]), "{corrections}");
    let audit = h.get("/api/v1/audit?action=escalation.close").await;
    assert_eq!(audit["total"], 1, "{audit}");
    assert_eq!(audit["audit"][0]["target"], esc.as_str());
    let retries = h.get("/api/v1/audit?action=escalation.retry").await;
    assert_eq!(retries["total"], 1, "{retries}");

    // Dismiss: another dead letter, closed with a reason; the event stays failed.
    h.sink.fail_always(Some(500));
    let (_, v) = h
        .send_signed("github", &ticket(42, "refund"), "dl-dismiss")
        .await;
    let id2 = v["id"].as_str().unwrap().to_string();
    assert_eq!(h.wait_final(&id2).await["event"]["status"], "failed");
    let open = open_escalations(&h, "github").await;
    let esc2 = open["escalations"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = h
        .api_post(
            &format!("/api/v1/escalations/{esc2}/dismiss"),
            json!({"reason": "  "}),
        )
        .await;
    assert_eq!(s, 400, "a dismissal needs a reason");
    let (s, body) = h
        .api_post(
            &format!("/api/v1/escalations/{esc2}/dismiss"),
            json!({"reason": "customer refunded by hand"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["escalation"]["status"], "resolved");
    assert_eq!(body["escalation"]["resolution"], Value::Null);
    let (s, _) = h
        .api_post(
            &format!("/api/v1/escalations/{esc2}/dismiss"),
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!(s, 409);
    assert_eq!(
        h.get(&format!("/api/v1/events/{id2}")).await["event"]["status"],
        "failed"
    );
    let dismissed = h.get("/api/v1/audit?action=escalation.dismiss").await;
    assert_eq!(
        dismissed["audit"][0]["detail"]["comment"],
        "customer refunded by hand"
    );
    let corrections = h.get("/api/v1/corrections?charter=github").await;
    assert_eq!(corrections["corrections"], json!([]), "{corrections}");
    h.stop().await;
}
