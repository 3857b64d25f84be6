//! Escalations announced in Slack and resolved from there.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_is_announced_and_resolved_from_slack() {
    let h = Harness::start().await;
    let event = h.send(8, "where is my parcel").await;
    h.wait_event(&event, "waiting").await;
    let posts = h
        .fake
        .wait_for("/api/chat.postMessage", |g| !g.is_empty())
        .await;
    let msg = &posts[0].body;
    assert!(
        msg["text"]
            .as_str()
            .unwrap()
            .starts_with("Escalated to a human"),
        "{msg}"
    );
    let link = format!("{PUBLIC_URL}/inbox?tab=decisions&item=");
    assert!(msg.to_string().contains(&link), "{msg}");
    let escalations = h.api("/api/v1/escalations?charter=refunds").await;
    let esc_id = escalations["escalations"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let actions = actions_block(msg);
    let menu = button(&actions, "charter_decide");
    let options: Vec<&str> = menu["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        options,
        [
            format!("escalation:{esc_id}:billing"),
            format!("escalation:{esc_id}:other")
        ]
    );
    let hooks = h.fake.wait_for("/hook/notify", |g| !g.is_empty()).await;
    assert_eq!(hooks[0].body["kind"], "escalation");
    let landed = hooks[0].body["link"].as_str().unwrap();
    assert_eq!(
        landed,
        format!("{link}{esc_id}"),
        "the link opens the escalation"
    );
    // The escalation's API answer shows where it was announced and that both went out
    // (the store marks a delivery sent just after the receiver answered: wait for it).
    let path = format!("/api/v1/escalations/{esc_id}");
    let mut shown = h.api(&path).await;
    for _ in 0..100 {
        let states: Vec<&str> = shown["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["state"].as_str().unwrap())
            .collect();
        if states.len() == 2 && states.iter().all(|s| *s == "sent") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        shown = h.api(&path).await;
    }
    crate::openapi::check(
        &crate::openapi::document(),
        "get",
        "/api/v1/escalations/{id}",
        200,
        &shown.to_string(),
    );
    assert_eq!(shown["escalation"]["id"], esc_id.as_str());
    let mut targets: Vec<(&str, &str)> = shown["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["target"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [("hooks:/hook/notify", "sent"), ("slack:#approvals", "sent")],
        "{shown}"
    );
    // The inbox's escalation card shows both deliveries, each sent on the first attempt.
    let inbox = Ui::login(&h, "lead").await.get("/inbox").await;
    assert_eq!(inbox.status, 200, "{}", inbox.body);
    let card = card_of(&inbox.body, &format!("data-escalation=\"{esc_id}\""));
    for (target, _) in &targets {
        let shown = format!(
            "<span data-target=\"{target}\"><code>{target}</code> <span class=\"badge ok\">sent</span> 1 attempt, sent "
        );
        assert!(card.contains(&shown), "{shown} not in {card}");
    }

    // The lead picks `other`: the run goes on with that human decision (`note`).
    let choice = json!({
        "action_id": "charter_decide",
        "type": "static_select",
        "selected_option": {"value": format!("escalation:{esc_id}:other")},
    });
    let (s, _) = h.press("U0LEAD", choice.clone(), "wrong-secret").await;
    assert_eq!(s, 401);
    let open = h.api("/api/v1/escalations?charter=refunds").await;
    assert_eq!(
        open["escalations"].as_array().unwrap().len(),
        1,
        "still open"
    );
    let (s, v) = h.press("U0LEAD", choice, SIGNING_SECRET).await;
    assert_eq!(s, 200);
    assert!(
        v["text"].as_str().unwrap().contains("Decided `other`"),
        "{v}"
    );
    let done = h.wait_event(&event, "done").await;
    let run = done["runs"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(run["decision"]["label"], "other", "{run}");
    let all = h
        .api("/api/v1/escalations?charter=refunds&status=all")
        .await;
    assert_eq!(all["escalations"][0]["resolved_by"], "slack:U0LEAD");
    assert_eq!(h.puts(8), 0, "the refund action was not taken");
}
