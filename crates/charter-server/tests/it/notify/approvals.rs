//! Approvals announced in Slack and decided there once: buttons, the rejection dialog.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_is_announced_and_decided_once_from_slack() {
    let h = Harness::start().await;
    // The webhook receiver fails the first delivery: it is retried; Slack is not held up.
    h.fake.hook_failures.lock().unwrap().push(503);
    let event = h.send(7, "refund please").await;
    h.wait_event(&event, "waiting").await;
    assert_eq!(h.puts(7), 0, "nothing runs before the approval");

    // Slack got a Block Kit message with the bot token, buttons and the UI link.
    let posts = h
        .fake
        .wait_for("/api/chat.postMessage", |g| !g.is_empty())
        .await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    let msg = &posts[0].body;
    assert_eq!(
        posts[0].authorization.as_deref(),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );
    assert_eq!(msg["channel"], "#approvals");
    let link = format!("{PUBLIC_URL}/inbox?tab=approvals&item=");
    assert!(msg["text"].as_str().unwrap().contains(&link), "{msg}");
    assert!(
        msg["text"]
            .as_str()
            .unwrap()
            .contains("Approval needed: refund (refunds)"),
        "{msg}"
    );
    let actions = actions_block(msg);
    let approve = button(&actions, "charter_approve").clone();
    let reject = button(&actions, "charter_reject").clone();
    let open = button(&actions, "charter_open")["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(open.starts_with(&link), "{open}");
    let link_to = open.clone();
    let pending = h.api("/api/v1/approvals?charter=refunds").await;
    let approval = pending["approvals"][0].clone();
    let approval_id = approval["id"].as_str().unwrap().to_string();
    assert_eq!(approve["value"], format!("approval:{approval_id}"));
    assert_eq!(reject["value"], format!("approval:{approval_id}"));
    let shown = msg.to_string();
    assert!(shown.contains("decision: billing"), "evidence: {msg}");
    assert!(shown.contains("Reviewers:* lead"), "{msg}");

    // The HTTP webhook: first answered 503, delivered on the retry, with the link.
    let hooks = h.fake.wait_for("/hook/notify", |g| g.len() >= 2).await;
    let body = &hooks[1].body;
    assert_eq!(body["kind"], "approval");
    assert_eq!(body["id"], approval_id.as_str());
    assert_eq!(
        body["link"],
        format!("{link}{approval_id}"),
        "the link opens the approval"
    );
    assert_eq!(body["charter"], "refunds");
    assert!(body["text"].as_str().unwrap().contains(&link));
    // The delivery record is written once the receiver has answered: wait for it.
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = h
            .store
            .list_notifications(Some(approval_id.parse().unwrap()), 10)
            .await
            .unwrap();
        if rows.iter().all(|r| r.state.as_str() == "sent") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let hook_row = rows
        .iter()
        .find(|r| r.target == "hooks:/hook/notify")
        .unwrap();
    assert_eq!(hook_row.attempts, 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.state.as_str() == "sent"), "{rows:?}");
    // The approval's API answer carries the same delivery record, as documented.
    let shown = h.api(&format!("/api/v1/approvals/{approval_id}")).await;
    crate::openapi::check(
        &crate::openapi::document(),
        "get",
        "/api/v1/approvals/{id}",
        200,
        &shown.to_string(),
    );
    let mut delivered: Vec<(String, String, u64)> = shown["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["target"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
                n["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    delivered.sort();
    let mut expected: Vec<(String, String, u64)> = rows
        .iter()
        .map(|r| (r.target.clone(), "sent".to_string(), u64::from(r.attempts)))
        .collect();
    expected.sort();
    assert_eq!(delivered, expected, "{shown}");
    assert!(
        delivered
            .iter()
            .any(|(t, _, a)| t == "hooks:/hook/notify" && *a == 2),
        "{shown}"
    );

    // The notification's link opens the inbox with the approval selected, decidable there,
    // and its card shows the same delivery record.
    let ui = Ui::login(&h, "lead").await;
    let inbox = ui.get(link_to.strip_prefix(PUBLIC_URL).unwrap()).await;
    assert!(
        inbox
            .body
            .contains(&format!("/approvals/{approval_id}/approve")),
        "{}",
        inbox.body
    );
    assert_eq!(inbox.status, 200, "{}", inbox.body);
    let card = card_of(&inbox.body, &format!("data-approval=\"{approval_id}\""));
    for (target, _, attempts) in &expected {
        let shown = format!(
            "<span data-target=\"{target}\"><code>{target}</code> <span class=\"badge ok\">sent</span> {attempts} attempt"
        );
        assert!(card.contains(&shown), "{shown} not in {card}");
    }
    // Times are shown on the clock `server.timezone` names (+05:30 here).
    let sent_at = hook_row.sent_at.unwrap();
    let shown = format!(", sent {}</span>", wall_clock(sent_at + 330 * 60_000));
    assert!(card.contains(&shown), "{shown} not in {card}");

    // A forged signature: 401, nothing changes.
    let (s, _) = h
        .press("U0LEAD", approve.clone(), "not-the-signing-secret")
        .await;
    assert_eq!(s, 401);
    // A stale signature (Slack's 5-minute window) is refused the same way.
    let stale = {
        let payload = "payload=%7B%7D";
        let spec = VerifySpec::Slack {
            tolerance: verify::DEFAULT_TOLERANCE,
        };
        let headers = verify::sign(
            &spec,
            SIGNING_SECRET,
            payload.as_bytes(),
            now_secs() - 600,
            "",
        )
        .unwrap();
        let mut req = h
            .client
            .post(format!("{}/slack/interactive", h.base))
            .body(payload);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send().await.unwrap().status().as_u16()
    };
    assert_eq!(stale, 401);
    // A Slack user not listed under `users:`, and one mapped to a viewer: refused,
    // ephemerally, and nothing changes.
    let (s, v) = h.press("U0STRANGER", approve.clone(), SIGNING_SECRET).await;
    assert_eq!(s, 200);
    assert_eq!(v["response_type"], "ephemeral", "{v}");
    assert!(v["text"].as_str().unwrap().contains("U0STRANGER"), "{v}");
    let (s, v) = h.press("U0VIEW", approve.clone(), SIGNING_SECRET).await;
    assert_eq!(s, 200);
    assert_eq!(v["response_type"], "ephemeral", "{v}");
    assert!(
        v["text"].as_str().unwrap().contains("may not decide"),
        "{v}"
    );
    let still = h.api(&format!("/api/v1/approvals/{approval_id}")).await;
    assert_eq!(still["approval"]["status"], "pending", "{still}");
    assert_eq!(h.puts(7), 0);
    let refusals = h.fake.wait_for("/response", |g| g.len() >= 2).await;
    assert!(
        refusals
            .iter()
            .all(|g| g.body["response_type"] == "ephemeral")
    );

    // The lead approves from Slack: decided as the UI would, the action runs once.
    let (s, v) = h.press("U0LEAD", approve.clone(), SIGNING_SECRET).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["replace_original"], true, "{v}");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("Approved by <@U0LEAD>"),
        "{v}"
    );
    h.wait_event(&event, "done").await;
    let decided = h.api(&format!("/api/v1/approvals/{approval_id}")).await;
    assert_eq!(decided["approval"]["status"], "approved");
    assert_eq!(decided["approval"]["decided_by"], "slack:U0LEAD");
    // Pressing again (or the Reject button) changes nothing: still one execution.
    let (_, v) = h.press("U0LEAD", approve, SIGNING_SECRET).await;
    assert!(
        v["text"].as_str().unwrap().contains("already approved"),
        "{v}"
    );
    let (_, v) = h.press("U0LEAD", reject, SIGNING_SECRET).await;
    assert!(
        v["text"].as_str().unwrap().contains("already approved"),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.puts(7), 1, "the approved action ran exactly once");
    let audit = h.api("/api/v1/audit?charter=refunds").await;
    let entry = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "approval.approve")
        .cloned()
        .unwrap_or_else(|| panic!("no approval.approve in {audit}"));
    assert_eq!(entry["actor"], "slack:U0LEAD");
    assert_eq!(entry["target"], approval_id.as_str());
    let approvals_by_slack = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "approval.approve" || e["action"] == "approval.reject")
        .count();
    assert_eq!(approvals_by_slack, 1, "{audit}");
    // The metric counts the deliveries.
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
        metrics.contains(r#"charter_notifications_total{charter="refunds",kind="approval",connector="hooks",result="retry"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_rejection_asks_for_the_reason_in_a_dialog() {
    let h = Harness::start().await;
    let event = h.send(8, "refund twice").await;
    h.wait_event(&event, "waiting").await;
    let posts = h
        .fake
        .wait_for("/api/chat.postMessage", |g| !g.is_empty())
        .await;
    let actions = actions_block(&posts[0].body);
    let reject = button(&actions, "charter_reject").clone();
    let approval_id = reject["value"]
        .as_str()
        .unwrap()
        .strip_prefix("approval:")
        .unwrap()
        .to_string();
    let path = format!("/api/v1/approvals/{approval_id}");

    // A viewer's press is refused at once, ephemerally: no dialog asks them for a reason.
    let (s, v) = h.press("U0VIEW", reject.clone(), SIGNING_SECRET).await;
    assert_eq!(s, 200);
    assert_eq!(v["response_type"], "ephemeral", "{v}");
    assert!(
        v["text"].as_str().unwrap().contains("may not decide"),
        "{v}"
    );
    assert!(h.fake.got("/api/views.open").is_empty());

    // Slack refuses to open the dialog (a stale trigger): the reviewer is told why, and
    // nothing is decided.
    let stale = json!({
        "type": "block_actions",
        "user": {"id": "U0LEAD", "username": "lead"},
        "trigger_id": "stale.trigger",
        "response_url": format!("{}/response", h.fake_url),
        "actions": [reject.clone()],
    });
    let (s, v) = h.interact(&stale, SIGNING_SECRET).await;
    assert_eq!(s, 200);
    assert_eq!(v["response_type"], "ephemeral", "{v}");
    let told = v["text"].as_str().unwrap();
    assert!(
        told.contains("invalid_trigger_id") && told.contains("web UI"),
        "{v}"
    );
    assert_eq!(h.api(&path).await["approval"]["status"], "pending");

    // The lead's press opens the dialog with the press's trigger_id; nothing is decided yet.
    let (s, v) = h.press("U0LEAD", reject.clone(), SIGNING_SECRET).await;
    assert_eq!((s, &v), (200, &Value::Null), "an empty answer: {v}");
    let opened = h.fake.got("/api/views.open");
    assert_eq!(opened.len(), 2, "the stale try and this one: {opened:?}");
    assert_eq!(
        opened[1].authorization.as_deref(),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );
    assert_eq!(opened[1].body["trigger_id"], TRIGGER_ID);
    let view = opened[1].body["view"].clone();
    assert_eq!(view["type"], "modal");
    assert_eq!(view["callback_id"], "charter_reject");
    assert_eq!(view["blocks"][0]["block_id"], "reason");
    assert_eq!(view["blocks"][0]["element"]["action_id"], "reason");
    assert_eq!(h.api(&path).await["approval"]["status"], "pending");

    // An empty reason, a forged signature and an unlisted Slack user change nothing; the
    // first and last are told next to the reason field.
    let (s, v) = h.submit("U0LEAD", &view, "   ", SIGNING_SECRET).await;
    assert_eq!(s, 200);
    assert_eq!(v["response_action"], "errors", "{v}");
    assert!(
        v["errors"]["reason"]
            .as_str()
            .unwrap()
            .contains("needs a reason"),
        "{v}"
    );
    let (s, _) = h
        .submit("U0LEAD", &view, "forged", "not-the-signing-secret")
        .await;
    assert_eq!(s, 401);
    let (s, v) = h
        .submit("U0STRANGER", &view, "not mine", SIGNING_SECRET)
        .await;
    assert_eq!(s, 200);
    assert!(
        v["errors"]["reason"]
            .as_str()
            .unwrap()
            .contains("U0STRANGER"),
        "{v}"
    );
    assert_eq!(h.api(&path).await["approval"]["status"], "pending");

    // The lead's reason: rejected as the UI would, with that reason, by the Slack user; the
    // message is replaced through its response_url, and the action never runs.
    let (s, v) = h
        .submit(
            "U0LEAD",
            &view,
            "  Already refunded on #4411 ",
            SIGNING_SECRET,
        )
        .await;
    assert_eq!((s, &v), (200, &Value::Null), "Slack closes the dialog: {v}");
    let decided = h.api(&path).await;
    assert_eq!(decided["approval"]["status"], "rejected", "{decided}");
    assert_eq!(decided["approval"]["comment"], "Already refunded on #4411");
    assert_eq!(decided["approval"]["decided_by"], "slack:U0LEAD");
    let replaced = h
        .fake
        .wait_for("/response", |g| {
            g.iter().any(|r| r.body["replace_original"] == true)
        })
        .await;
    let update = replaced
        .iter()
        .find(|r| r.body["replace_original"] == true)
        .unwrap();
    assert_eq!(
        update.body["text"],
        "Rejected by <@U0LEAD>: Already refunded on #4411"
    );
    h.wait_event(&event, "done").await;
    let audit = h.api("/api/v1/audit?charter=refunds").await;
    let entry = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "approval.reject")
        .cloned()
        .unwrap_or_else(|| panic!("no approval.reject in {audit}"));
    assert_eq!(entry["actor"], "slack:U0LEAD");
    assert_eq!(entry["detail"]["reason"], "Already refunded on #4411");

    // The dialog submitted again, or Reject pressed again: refused, still one decision.
    let (_, v) = h.submit("U0LEAD", &view, "again", SIGNING_SECRET).await;
    assert!(
        v["errors"]["reason"]
            .as_str()
            .unwrap()
            .contains("already rejected"),
        "{v}"
    );
    let (_, v) = h.press("U0LEAD", reject, SIGNING_SECRET).await;
    assert!(
        v["text"].as_str().unwrap().contains("already rejected"),
        "{v}"
    );
    assert_eq!(h.fake.got("/api/views.open").len(), 2);
    assert_eq!(h.puts(8), 0, "a rejected action never runs");
}
