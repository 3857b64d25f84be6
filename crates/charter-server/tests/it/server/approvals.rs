//! Approvals (concurrent, edited, rejected, expired), resolved escalations, and the roles and
//! scopes that guard them.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_waits_then_concurrent_approvals_execute_once() {
    let gated = gated_charter(
        "gated",
        "/hooks/gated",
        "{ reviewers: [lead], expires: 1h, on_expiry: reject }",
    );
    let h = Harness::start(&[("charters/gated.yaml", &gated)]).await;
    let id = h.send_plain("/hooks/gated", &ticket(31, "refund")).await;
    let d = h
        .wait_event(&id, None, |d| d["event"]["status"] == "waiting")
        .await;
    assert_eq!(last_run(&d)["outcome"], "awaiting_approval");
    assert!(
        ticket_puts(&h.sink, 31).is_empty(),
        "nothing sent before approval"
    );

    let pending = h.pending_approvals("gated", None).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let a = &pending[0];
    assert_eq!(a["event_id"], id.as_str());
    assert_eq!(a["action"], "assign_billing");
    assert_eq!(a["status"], "pending");
    assert_eq!(a["reviewers"], json!(["lead"]));
    assert_eq!(a["params"]["json"]["ticket"]["group"], "billing");
    assert_eq!(a["params_hash"].as_str().unwrap().len(), 64);
    let approval_id = a["id"].as_str().unwrap().to_string();

    // Eight reviewers press "approve" at the same moment.
    let approve_url = format!("/api/v1/approvals/{approval_id}/approve");
    let mut calls = Vec::new();
    for _ in 0..8 {
        calls.push(h.call("POST", &approve_url, None, None));
    }
    let results = futures_join_all(calls).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let conflict = results.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!((ok, conflict), (1, 7), "{results:?}");

    let d = h
        .wait_event(&id, None, |d| {
            d["event"]["status"] == "done" && runs_len(d) >= 2
        })
        .await;
    let run = last_run(&d);
    assert_eq!(run["outcome"], "completed");
    assert_eq!(run["actions"][0]["action"], "assign_billing");
    assert_eq!(run["actions"][0]["status"], "succeeded");
    assert_eq!(run["actions"][0]["idempotency_key"], a["params_hash"]);
    // Give any stray second run a chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let puts = ticket_puts(&h.sink, 31);
    assert_eq!(puts.len(), 1, "executed exactly once: {puts:?}");
    assert_eq!(
        puts[0].idempotency_key.as_deref(),
        a["params_hash"].as_str()
    );
    assert!(h.pending_approvals("gated", None).await.is_empty());

    // A replay does not execute it again.
    let (s, _) = h
        .call("POST", &format!("/api/v1/events/{id}/replay"), None, None)
        .await;
    assert_eq!(s, 200);
    let d = h
        .wait_event(&id, None, |d| {
            d["event"]["status"] == "done" && runs_len(d) >= 3
        })
        .await;
    assert_eq!(last_run(&d)["actions"][0]["status"], "already_done");
    assert_eq!(ticket_puts(&h.sink, 31).len(), 1);

    let (_, audit) = h
        .call("GET", "/api/v1/audit?charter=gated", None, None)
        .await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"approval.approve"), "{actions:?}");
    assert!(actions.contains(&"approval.request"), "{actions:?}");
    assert!(actions.contains(&"event.replay"), "{actions:?}");
    let approve = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "approval.approve")
        .unwrap();
    assert_eq!(approve["actor"], "local");
    assert_eq!(approve["target"], approval_id.as_str());
    h.stop().await;
}

/// Run the futures concurrently and collect their outputs in order.
async fn futures_join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_then_approve_executes_the_edit_under_a_new_key() {
    let gated = gated_charter(
        "gated",
        "/hooks/gated",
        "{ reviewers: [lead], expires: 1h, on_expiry: reject }",
    );
    let h = Harness::start(&[("charters/gated.yaml", &gated)]).await;
    let id = h.send_plain("/hooks/gated", &ticket(32, "refund")).await;
    h.wait_event(&id, None, |d| d["event"]["status"] == "waiting")
        .await;
    let a = h.pending_approvals("gated", None).await.remove(0);
    let approval_id = a["id"].as_str().unwrap();
    let url = format!("/api/v1/approvals/{approval_id}/approve");

    // Only the body may be edited: a changed target is refused and decides nothing.
    let mut bad = a["params"].clone();
    bad["target"] = json!("/api/tickets/999");
    let (s, v) = h
        .call("POST", &url, None, Some(json!({"params": bad})))
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(h.pending_approvals("gated", None).await.len(), 1);

    let mut edited = a["params"].clone();
    edited["json"]["ticket"]["group"] = json!("billing-tier2");
    let (s, v) = h
        .call("POST", &url, None, Some(json!({"params": edited})))
        .await;
    assert_eq!(s, 200, "{v}");
    let rec = &v["approval"];
    assert_eq!(rec["status"], "approved");
    assert_eq!(rec["edited_params"], edited);
    assert_eq!(rec["params"], a["params"], "the original is kept");
    let new_key = rec["edited_hash"].as_str().unwrap().to_string();
    assert_eq!(new_key.len(), 64);
    assert_ne!(new_key, a["params_hash"].as_str().unwrap(), "a new hash");

    let d = h
        .wait_event(&id, None, |d| {
            d["event"]["status"] == "done" && runs_len(d) >= 2
        })
        .await;
    let act = &last_run(&d)["actions"][0];
    assert_eq!(act["status"], "succeeded");
    assert_eq!(act["idempotency_key"], new_key.as_str());
    assert_eq!(act["params"], edited);
    let puts = ticket_puts(&h.sink, 32);
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(puts[0].idempotency_key.as_deref(), Some(new_key.as_str()));
    let body: Value = serde_json::from_str(&puts[0].body).unwrap();
    assert_eq!(
        body["ticket"]["group"], "billing-tier2",
        "the edit was sent"
    );

    // The correction is on the record.
    let (_, audit) = h
        .call("GET", "/api/v1/audit?action=approval.edit", None, None)
        .await;
    let entries = audit["audit"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["detail"]["edited_hash"], new_key.as_str());
    assert_eq!(entries[0]["detail"]["params_hash"], a["params_hash"]);
    assert_eq!(entries[0]["detail"]["edited_params"], edited);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_needs_a_reason_and_ends_the_run_without_executing() {
    let gated = gated_charter(
        "gated",
        "/hooks/gated",
        "{ reviewers: [lead], expires: 1h, on_expiry: reject }",
    );
    let h = Harness::start(&[("charters/gated.yaml", &gated)]).await;
    let id = h.send_plain("/hooks/gated", &ticket(33, "refund")).await;
    h.wait_event(&id, None, |d| d["event"]["status"] == "waiting")
        .await;
    let a = h.pending_approvals("gated", None).await.remove(0);
    let approval_id = a["id"].as_str().unwrap();
    let url = format!("/api/v1/approvals/{approval_id}/reject");
    let (s, _) = h
        .call("POST", &url, None, Some(json!({"reason": "  "})))
        .await;
    assert_eq!(s, 400, "an empty reason is refused");
    let (s, _) = h.call("POST", &url, None, None).await;
    assert_eq!(s, 400, "a missing reason is refused");
    let (s, v) = h
        .call("POST", &url, None, Some(json!({"reason": "wrong team"})))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["approval"]["status"], "rejected");
    assert_eq!(v["approval"]["comment"], "wrong team");

    let d = h
        .wait_event(&id, None, |d| {
            d["event"]["status"] == "done" && runs_len(d) >= 2
        })
        .await;
    let run = last_run(&d);
    assert_eq!(run["outcome"], "rejected");
    assert_eq!(run["actions"][0]["status"], "rejected");
    assert!(
        run["error"].as_str().unwrap().contains("wrong team"),
        "{run}"
    );
    assert!(
        ticket_puts(&h.sink, 33).is_empty(),
        "a rejected action never runs"
    );

    // Once rejected it cannot be approved.
    let (s, _) = h
        .call(
            "POST",
            &format!("/api/v1/approvals/{approval_id}/approve"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 409);
    let (_, audit) = h
        .call("GET", "/api/v1/audit?action=approval.reject", None, None)
        .await;
    assert_eq!(audit["audit"][0]["detail"]["reason"], "wrong team");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_approvals_cannot_be_approved_and_apply_on_expiry() {
    let rejecting = gated_charter(
        "expiring",
        "/hooks/expiring",
        "{ reviewers: [lead], expires: 1s, on_expiry: reject }",
    );
    let escalating = gated_charter(
        "expesc",
        "/hooks/expesc",
        "{ reviewers: [lead], expires: 1s, on_expiry: escalate }",
    );
    let h = Harness::start(&[
        ("charters/expiring.yaml", &rejecting),
        ("charters/expesc.yaml", &escalating),
    ])
    .await;
    let id = h.send_plain("/hooks/expiring", &ticket(34, "refund")).await;
    let id2 = h.send_plain("/hooks/expesc", &ticket(35, "refund")).await;
    h.wait_event(&id, None, |d| d["event"]["status"] == "waiting")
        .await;
    let a = h.pending_approvals("expiring", None).await.remove(0);
    let approval_id = a["id"].as_str().unwrap();

    // on_expiry: reject — after the deadline the run ends rejected and nothing runs.
    let d = h
        .wait_event(&id, None, |d| {
            d["event"]["status"] == "done" && runs_len(d) >= 2
        })
        .await;
    assert_eq!(last_run(&d)["outcome"], "rejected");
    assert_eq!(last_run(&d)["actions"][0]["status"], "rejected");
    let (s, v) = h
        .call(
            "POST",
            &format!("/api/v1/approvals/{approval_id}/approve"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 409, "an expired approval cannot be approved: {v}");
    let (_, v) = h
        .call(
            "GET",
            "/api/v1/approvals?charter=expiring&status=expired",
            None,
            None,
        )
        .await;
    assert_eq!(v["approvals"][0]["id"], approval_id);
    assert_eq!(v["approvals"][0]["decided_by"], "system");
    assert!(ticket_puts(&h.sink, 34).is_empty());

    // on_expiry: escalate — an escalation with the approval as evidence.
    let d = h
        .wait_event(&id2, None, |d| {
            d["event"]["status"] == "waiting" && last_run(d)["outcome"] == "escalated"
        })
        .await;
    assert!(runs_len(&d) >= 2);
    let (_, v) = h
        .call("GET", "/api/v1/escalations?charter=expesc", None, None)
        .await;
    let esc = &v["escalations"][0];
    assert_eq!(esc["reason"], "approval_expired", "{v}");
    assert_eq!(esc["event_id"], id2.as_str());
    assert_eq!(esc["target"], "support-leads");
    assert_eq!(esc["detail"]["approval"]["action"], "assign_billing");
    assert!(ticket_puts(&h.sink, 35).is_empty());

    let (_, audit) = h
        .call("GET", "/api/v1/audit?action=approval.expire", None, None)
        .await;
    assert_eq!(audit["audit"].as_array().unwrap().len(), 2, "{audit}");
    assert!(
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "system")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_escalation_continues_the_run_with_the_human_decision() {
    let esc = escalating_charter("unsure", "/hooks/unsure");
    let h = Harness::start(&[("charters/unsure.yaml", &esc)]).await;
    let id = h
        .send_plain("/hooks/unsure", &ticket(36, "something odd"))
        .await;
    let d = h
        .wait_event(&id, None, |d| d["event"]["status"] == "waiting")
        .await;
    assert_eq!(last_run(&d)["outcome"], "escalated");

    let (s, v) = h
        .call("GET", "/api/v1/escalations?charter=unsure", None, None)
        .await;
    assert_eq!(s, 200);
    let list = v["escalations"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    let e = &list[0];
    assert_eq!(e["reason"], "low_confidence");
    assert_eq!(e["status"], "open");
    assert_eq!(e["detail"]["payload"], ticket(36, "something odd"));
    assert_eq!(
        e["detail"]["stages"][0]["stage"], "rule",
        "each stage's answer"
    );
    let esc_id = e["id"].as_str().unwrap();
    let url = format!("/api/v1/escalations/{esc_id}/decide");

    let (s, _) = h
        .call("POST", &url, None, Some(json!({"label": "nonsense"})))
        .await;
    assert_eq!(s, 400, "labels outside the charter are refused");
    let (s, v) = h
        .call("POST", &url, None, Some(json!({"label": "billing"})))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["escalation"]["status"], "resolved");
    let (s, _) = h
        .call("POST", &url, None, Some(json!({"label": "other"})))
        .await;
    assert_eq!(s, 409, "resolved only once");

    let d = h
        .wait_event(&id, None, |d| {
            d["event"]["status"] == "done" && runs_len(d) >= 2
        })
        .await;
    let run = last_run(&d);
    assert_eq!(run["decision"]["stage"], "human");
    assert_eq!(run["decision"]["label"], "billing");
    assert_eq!(run["outcome"], "completed");
    assert_eq!(run["actions"][0]["action"], "assign_billing");
    assert_eq!(ticket_puts(&h.sink, 36).len(), 1, "the billing route ran");

    // The human decision is a labelled example for the next training.
    let (s, v) = h
        .call("GET", "/api/v1/corrections?charter=unsure", None, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["corrections"],
        json!([{
            "event_id": id,
            "escalation_id": esc_id,
            "text": "something odd",
            "label": "billing",
            "fields": {},
            "decided_by": "local",
            "decided_at": v["corrections"][0]["decided_at"],
        }])
    );
    let (s, _) = h
        .call("GET", "/api/v1/corrections?charter=nope", None, None)
        .await;
    assert_eq!(s, 404);
    let (_, audit) = h
        .call("GET", "/api/v1/audit?action=escalation.resolve", None, None)
        .await;
    assert_eq!(audit["audit"][0]["detail"]["label"], "billing");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_scopes_guard_approvals_escalations_and_audit() {
    let gated = gated_charter(
        "gated",
        "/hooks/gated",
        "{ reviewers: [lead], expires: 1h, on_expiry: reject }",
    );
    let esc = escalating_charter("unsure", "/hooks/unsure");
    let h = Harness::start_with_tokens(
        &[
            ("charters/gated.yaml", &gated),
            ("charters/unsure.yaml", &esc),
        ],
        &[
            ("admin", "admin", &[]),
            ("lead", "reviewer", &["gated", "unsure"]),
            ("rev", "reviewer", &["gated", "unsure"]),
            ("viewer", "viewer", &[]),
            ("outsider", "reviewer", &["std"]),
        ],
    )
    .await;
    let id = h.send_plain("/hooks/gated", &ticket(38, "refund")).await;
    let eid = h.send_plain("/hooks/unsure", &ticket(39, "hm")).await;
    h.wait_event(&id, Some("viewer"), |d| d["event"]["status"] == "waiting")
        .await;
    h.wait_event(&eid, Some("viewer"), |d| d["event"]["status"] == "waiting")
        .await;

    // Listing: no token or a wrong one is 401; a viewer may read; an outsider sees nothing.
    assert_eq!(h.call("GET", "/api/v1/approvals", None, None).await.0, 401);
    let (s, _) = h
        .call("GET", "/api/v1/approvals", Some("nobody"), None)
        .await;
    assert_eq!(s, 401);
    assert_eq!(h.pending_approvals("gated", Some("viewer")).await.len(), 1);
    assert!(
        h.pending_approvals("gated", Some("outsider"))
            .await
            .is_empty()
    );
    let (_, v) = h
        .call("GET", "/api/v1/approvals", Some("outsider"), None)
        .await;
    assert_eq!(v["approvals"], json!([]));
    assert_eq!(h.call("GET", "/api/v1/audit", None, None).await.0, 401);
    assert_eq!(
        h.call("GET", "/api/v1/escalations", None, None).await.0,
        401
    );

    let a = h.pending_approvals("gated", Some("admin")).await.remove(0);
    let approve = format!("/api/v1/approvals/{}/approve", a["id"].as_str().unwrap());
    let reject = format!("/api/v1/approvals/{}/reject", a["id"].as_str().unwrap());
    let why = Some(json!({"reason": "no"}));
    assert_eq!(h.call("POST", &approve, None, None).await.0, 401);
    assert_eq!(h.call("POST", &approve, Some("viewer"), None).await.0, 403);
    assert_eq!(
        h.call("POST", &reject, Some("viewer"), why.clone()).await.0,
        403
    );
    assert_eq!(
        h.call("POST", &approve, Some("outsider"), None).await.0,
        404,
        "another charter's approval does not exist for a scoped token"
    );
    assert_eq!(
        h.call("POST", &approve, Some("rev"), None).await.0,
        403,
        "a reviewer not named by the action"
    );
    assert_eq!(h.call("POST", &reject, Some("rev"), why).await.0, 403);
    let (s, _) = h
        .call(
            "POST",
            "/api/v1/approvals/not-a-uuid/approve",
            Some("lead"),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let missing = format!("/api/v1/approvals/{}/approve", uuid::Uuid::now_v7());
    assert_eq!(h.call("POST", &missing, Some("lead"), None).await.0, 404);
    let (s, v) = h.call("POST", &approve, Some("lead"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["approval"]["decided_by"], "lead");
    h.wait_event(&id, Some("admin"), |d| d["event"]["status"] == "done")
        .await;
    assert_eq!(ticket_puts(&h.sink, 38).len(), 1);

    // Escalations: viewers cannot decide; outsiders get 404; a scoped reviewer can.
    let (_, v) = h
        .call("GET", "/api/v1/escalations", Some("viewer"), None)
        .await;
    let e = v["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == eid.as_str())
        .unwrap()
        .clone();
    let decide = format!("/api/v1/escalations/{}/decide", e["id"].as_str().unwrap());
    let label = Some(json!({"label": "other"}));
    assert_eq!(h.call("POST", &decide, None, label.clone()).await.0, 401);
    assert_eq!(
        h.call("POST", &decide, Some("viewer"), label.clone())
            .await
            .0,
        403
    );
    assert_eq!(
        h.call("POST", &decide, Some("outsider"), label.clone())
            .await
            .0,
        404
    );
    let (_, v) = h
        .call("GET", "/api/v1/escalations", Some("outsider"), None)
        .await;
    assert_eq!(v["escalations"], json!([]));
    assert_eq!(h.call("POST", &decide, Some("rev"), label).await.0, 200);

    // Pause/resume are admin-only and audited with the token's name.
    assert_eq!(
        h.call("POST", "/api/v1/charters/gated/pause", Some("lead"), None)
            .await
            .0,
        403
    );
    assert_eq!(
        h.call("POST", "/api/v1/charters/gated/pause", Some("admin"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        h.call("POST", "/api/v1/charters/gated/resume", Some("admin"), None)
            .await
            .0,
        200
    );
    let (s, v) = h.call("GET", "/api/v1/audit", Some("viewer"), None).await;
    assert_eq!(s, 200);
    let entries = v["audit"].as_array().unwrap();
    let who = |action: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| e["actor"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(who("approval.approve"), vec!["lead"]);
    assert_eq!(who("escalation.resolve"), vec!["rev"]);
    assert_eq!(who("charter.pause"), vec!["admin"]);
    assert_eq!(who("charter.resume"), vec!["admin"]);
    // Newest first.
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    // A scoped token sees only its charters' entries.
    let (_, v) = h.call("GET", "/api/v1/audit", Some("outsider"), None).await;
    assert_eq!(v["audit"], json!([]));
    h.stop().await;
}
