//! Rollout per route in the running server: three routes in three modes process a mixed
//! batch as declared; a route's mode set through the API; sampled runs reviewed, which moves
//! the route's agreement; the promotion suggestion at the `promote_when` threshold (with the
//! owner's notice); the automatic demotion of a live route on corrections; and the rewrite
//! measurement of an edited draft. Real SQLite, the sink as the downstream helpdesk (and as
//! the notification webhook), the local OpenAI-compatible model server for drafts.

use std::time::Duration;

use charter_store::rollout::SampleFilter;
use charter_store::{AuditFilter, AuditStore, RolloutStore, RunStore};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::Harness;

/// Three routes: `billing` live (sampled, demoted above 30% corrections over 3 reviews),
/// `refunds` in approve, `rest` in the charter's shadow (sampled, promotion at 75% over 4).
pub(crate) fn trio() -> String {
    r#"
name: trio
description: three routes in three modes
owner: ops-lead@example.test
maintainer: integrations@example.test
system_of_record: helpdesk
mode: shadow
uses: [helpdesk]
trigger:
  webhook: { path: /hooks/trio, verify: none }
  dedupe: "{{ payload.ticket.id }}"
  text: "{{ payload.ticket.subject }}"
decide:
  labels: [billing, refund, other]
  stages:
    - rules:
        - { when: 'payload.ticket.subject.contains("invoice")', label: billing }
        - { when: 'payload.ticket.subject.contains("refund")', label: refund }
  otherwise: other
routes:
  - name: billing
    when: decision.label == "billing"
    do: [tag_billing]
    mode: live
    sample: 100%
    demote_when: { corrections: 30%, reviewed: 3 }
  - name: refunds
    when: decision.label == "refund"
    do: [tag_refund]
    mode: approve
  - name: rest
    when: "true"
    do: [tag_other]
    sample: 1.0
    promote_when: { agreement: 0.75, reviewed: 4 }
actions:
  tag_billing:
    connector: helpdesk
    request: { method: PUT, path: "/api/tickets/{{ payload.ticket.id }}", json: { group: billing } }
    approval: auto
  tag_refund:
    connector: helpdesk
    request: { method: PUT, path: "/api/tickets/{{ payload.ticket.id }}", json: { group: refunds } }
    approval: auto
  tag_other:
    connector: helpdesk
    request: { method: PUT, path: "/api/tickets/{{ payload.ticket.id }}", json: { group: other } }
    approval: auto
escalation: { to: support-leads, notify: ["helpdesk:/notify"] }
measure:
  success: [routed]
"#
    .to_string()
}

async fn start() -> Harness {
    Harness::start(
        &[("trio", trio())],
        &[
            ("root", "admin", &[]),
            ("rita", "reviewer", &[]),
            ("view", "viewer", &[]),
        ],
    )
    .await
}

/// The route `name` as `GET /api/v1/charters/trio/routes` shows it.
async fn route(h: &Harness, name: &str) -> Value {
    let r = h.get("/api/v1/charters/trio/routes", Some("view")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no route {name}: {}", r.body))
}

/// The pending samples of a route, oldest first.
async fn queue(h: &Harness, route: &str) -> Vec<Value> {
    let r = h
        .get(
            &format!("/api/v1/samples?charter=trio&route={route}&status=pending"),
            Some("rita"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["samples"].as_array().unwrap().clone()
}

async fn review(h: &Harness, sample: &Value, body: Value) -> Value {
    let id = sample["id"].as_str().unwrap();
    let r = h
        .post(
            &format!("/api/v1/samples/{id}/review"),
            Some("rita"),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Notices the sink received on the notification webhook.
fn notices(h: &Harness) -> Vec<String> {
    h.sink
        .received()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/notify")
        .map(|r| r.body)
        .collect()
}

async fn wait_notice(h: &Harness, needle: &str) -> String {
    for _ in 0..400 {
        if let Some(n) = notices(h).into_iter().find(|b| b.contains(needle)) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no notice containing {needle:?}; got {:?}", notices(h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_routes_in_three_modes_process_a_mixed_batch_as_declared() {
    let h = start().await;
    // A mixed batch: two invoices (live), a refund (approve), two others (shadow).
    let invoice = h.send("trio", 1, "invoice 12 is wrong").await;
    let refund = h.send("trio", 2, "refund please").await;
    let other = h.send("trio", 3, "hello").await;
    let invoice2 = h.send("trio", 4, "second invoice").await;
    let other2 = h.send("trio", 5, "thanks").await;
    h.wait_status(&invoice, "done").await;
    h.wait_status(&invoice2, "done").await;
    h.wait_status(&other, "done").await;
    h.wait_status(&other2, "done").await;
    h.wait_status(&refund, "waiting").await;

    // live: executed; shadow: recorded as would-run, nothing sent; approve: waits.
    assert_eq!((h.puts(1), h.puts(4)), (1, 1), "the live route executes");
    assert_eq!(
        (h.puts(3), h.puts(5)),
        (0, 0),
        "the shadow route sends nothing"
    );
    assert_eq!(h.puts(2), 0, "the approve route waits for a reviewer");
    let runs = h
        .store
        .runs_for_event(Uuid::parse_str(&other).unwrap())
        .await
        .unwrap();
    let last = runs.last().unwrap();
    assert_eq!(last.outcome.map(|o| o.as_str()), Some("shadow"), "{last:?}");
    assert_eq!(last.actions[0].status.as_str(), "would_run");
    // The approve route's action asks any reviewer (its own policy is `auto`).
    let pending = h.pending_approvals().await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].action, "tag_refund");
    assert!(pending[0].reviewers.is_empty());
    let r = h
        .post(
            &format!("/api/v1/approvals/{}/approve", pending[0].id),
            Some("rita"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.wait_status(&refund, "done").await;
    assert_eq!(h.puts(2), 1, "approved, the refund route's action runs");

    // The routes listing says the same, with samples queued for the sampled routes only.
    let rest = route(&h, "rest").await;
    assert_eq!(rest["mode"], "shadow");
    assert_eq!(rest["declared_mode"], "shadow");
    assert!(rest["override"].is_null());
    assert_eq!(route(&h, "billing").await["mode"], "live");
    assert_eq!(route(&h, "refunds").await["mode"], "approve");
    assert_eq!(queue(&h, "rest").await.len(), 2);
    assert_eq!(queue(&h, "billing").await.len(), 2);
    assert_eq!(
        queue(&h, "refunds").await.len(),
        0,
        "refunds samples nothing"
    );

    // Promote `rest` to live through the API: audited, and the next run executes.
    let r = h
        .post(
            "/api/v1/charters/trio/routes/rest/mode",
            Some("rita"),
            Some(json!({"mode": "live"})),
        )
        .await;
    assert_eq!(r.status, 403, "a reviewer cannot change a route's mode");
    let r = h
        .post(
            "/api/v1/charters/trio/routes/rest/mode",
            Some("root"),
            Some(json!({"mode": "live", "reason": "reviewed enough"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["route"]["mode"], "live");
    assert_eq!(r.json()["route"]["override"]["by"], "root");
    let r = h
        .post(
            "/api/v1/charters/trio/routes/rest/mode",
            Some("root"),
            Some(json!({"mode": "sideways"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("sideways"), "{}", r.body);
    let r = h
        .post(
            "/api/v1/charters/trio/routes/nowhere/mode",
            Some("root"),
            Some(json!({"mode": "live"})),
        )
        .await;
    assert_eq!(r.status, 404);
    let other3 = h.send("trio", 6, "hello again").await;
    h.wait_status(&other3, "done").await;
    assert_eq!(h.puts(6), 1, "the promoted route executes");
    // The other routes kept their modes.
    let invoice3 = h.send("trio", 7, "invoice again").await;
    h.wait_status(&invoice3, "done").await;
    assert_eq!(h.puts(7), 1);
    let audit = h
        .store
        .list_audit(AuditFilter {
            charter: Some("trio".into()),
            actor: None,
            action: Some("route.mode".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].actor, "root");
    assert_eq!(audit[0].detail["from"], "shadow");
    assert_eq!(audit[0].detail["to"], "live");
    assert_eq!(audit[0].detail["reason"], "reviewed enough");

    // `file` drops the override: the files' mode applies again.
    let r = h
        .post(
            "/api/v1/charters/trio/routes/rest/mode",
            Some("root"),
            Some(json!({"mode": "file"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["route"]["mode"], "shadow");
    let other4 = h.send("trio", 8, "hello once more").await;
    h.wait_status(&other4, "done").await;
    assert_eq!(h.puts(8), 0, "back in shadow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_move_agreement_and_the_promotion_is_suggested_at_the_threshold() {
    let h = start().await;
    for i in 1..=5 {
        let id = h.send("trio", i, &format!("hello {i}")).await;
        h.wait_status(&id, "done").await;
    }
    let samples = queue(&h, "rest").await;
    assert_eq!(samples.len(), 5, "every shadow run of `rest` is sampled");
    assert_eq!(samples[0]["mode"], "shadow");
    assert_eq!(samples[0]["label"], "other");
    assert_eq!(samples[0]["actions"], json!(["tag_other"]));

    // Nothing reviewed: no rate, "not enough reviewed" (never 100% over nothing).
    let r = route(&h, "rest").await;
    assert_eq!(r["agreement"]["reviewed"], 0);
    assert!(r["agreement"]["rate"].is_null());
    assert_eq!(r["agreement"]["enough"], false);
    assert_eq!(
        r["agreement_text"],
        "not enough reviewed: 0 of the 4 needed"
    );
    assert_eq!(r["pending_reviews"], 5);
    assert_eq!(r["suggest_promotion"], false);

    // A bad review is refused with the place named.
    let id = samples[0]["id"].as_str().unwrap();
    let url = format!("/api/v1/samples/{id}/review");
    let r = h
        .post(&url, Some("rita"), Some(json!({"decision_right": true})))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("/actions/tag_other"), "{}", r.body);
    let r = h
        .post(
            &url,
            Some("rita"),
            Some(json!({"decision_right": false, "right_label": "nonsense", "actions": {"tag_other": false}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("/right_label"), "{}", r.body);
    let r = h
        .post(
            &url,
            Some("view"),
            Some(json!({"decision_right": true, "actions": {"tag_other": true}})),
        )
        .await;
    assert_eq!(r.status, 403, "a viewer cannot review");

    // The first review: wrong, the right label is billing (a correction).
    let done = review(
        &h,
        &samples[0],
        json!({"decision_right": false, "right_label": "billing", "actions": {"tag_other": false}, "note": "an invoice question"}),
    )
    .await;
    assert_eq!(done["sample"]["review"]["right_label"], "billing");
    let r = h
        .post(
            &url,
            Some("rita"),
            Some(json!({"decision_right": true, "actions": {"tag_other": true}})),
        )
        .await;
    assert_eq!(r.status, 409, "reviewed once only");
    let r = route(&h, "rest").await;
    assert_eq!(r["agreement"]["reviewed"], 1);
    assert_eq!(r["agreement"]["agreed"], 0);
    assert_eq!(r["agreement"]["corrected"], 1);
    assert_eq!(r["agreement"]["rate"], 0.0);
    assert_eq!(r["pending_reviews"], 4);

    // The correction is exported with the other corrections (the examples' CSV).
    let c = h
        .get("/api/v1/corrections?charter=trio", Some("view"))
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    let all = c.json()["corrections"].as_array().unwrap().clone();
    let found: Vec<&Value> = all
        .iter()
        .filter(|x| x["sample_id"] == samples[0]["id"])
        .collect();
    assert_eq!(found.len(), 1, "{}", c.body);
    assert_eq!(found[0]["label"], "billing");
    assert_eq!(found[0]["text"], "hello 1");

    // Two right reviews: 2 of 3 agreed, still under the minimum of 4.
    for s in &samples[1..3] {
        review(
            &h,
            s,
            json!({"decision_right": true, "actions": {"tag_other": true}}),
        )
        .await;
    }
    let r = route(&h, "rest").await;
    assert_eq!(r["agreement"]["reviewed"], 3);
    assert_eq!(r["agreement"]["agreed"], 2);
    assert_eq!(r["agreement"]["enough"], false);
    assert_eq!(r["suggest_promotion"], false);
    assert!(
        notices(&h).iter().all(|n| !n.contains("promotion")),
        "no notice before the threshold: {:?}",
        notices(&h)
    );

    // The fourth: 3 of 4 = 75%, the threshold: the promotion is suggested, not made.
    review(
        &h,
        &samples[3],
        json!({"decision_right": true, "actions": {"tag_other": true}}),
    )
    .await;
    let r = route(&h, "rest").await;
    assert_eq!(r["agreement"]["reviewed"], 4);
    assert_eq!(r["agreement"]["rate"], 0.75);
    assert_eq!(r["agreement"]["enough"], true);
    let (low, high) = (
        r["agreement"]["low"].as_f64().unwrap(),
        r["agreement"]["high"].as_f64().unwrap(),
    );
    assert!(low < 0.75 && high > 0.75 && low > 0.2, "{low} {high}");
    assert_eq!(r["suggest_promotion"], true);
    assert_eq!(r["mode"], "shadow", "never promoted without `auto: true`");
    let n = wait_notice(&h, "has earned promotion").await;
    assert!(
        n.contains("rest") && n.contains("ops-lead@example.test"),
        "{n}"
    );
    // The suggestion is made once: the fifth review does not notify again.
    review(
        &h,
        &samples[4],
        json!({"decision_right": true, "actions": {"tag_other": true}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let promotions = notices(&h)
        .iter()
        .filter(|n| n.contains("has earned promotion"))
        .count();
    assert_eq!(promotions, 1, "{:?}", notices(&h));
    let states = h.store.route_states(Some("trio")).await.unwrap();
    assert!(
        states
            .iter()
            .any(|s| s.route == "rest" && s.suggested_at.is_some()),
        "{states:?}"
    );
    // Nothing left to review.
    let left = h
        .store
        .samples(SampleFilter {
            charter: Some("trio".into()),
            route: Some("rest".into()),
            reviewed: Some(false),
            limit: 10,
        })
        .await
        .unwrap();
    assert!(left.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_route_is_demoted_to_approve_when_reviewers_correct_it() {
    let h = start().await;
    for i in 1..=3 {
        let id = h.send("trio", i, &format!("invoice {i}")).await;
        h.wait_status(&id, "done").await;
        assert_eq!(h.puts(i), 1);
    }
    let samples = queue(&h, "billing").await;
    assert_eq!(samples.len(), 3);
    assert!(samples.iter().all(|s| s["mode"] == "live"));
    review(
        &h,
        &samples[0],
        json!({"decision_right": true, "actions": {"tag_billing": true}}),
    )
    .await;
    review(
        &h,
        &samples[1],
        json!({"decision_right": true, "actions": {"tag_billing": false}}),
    )
    .await;
    // 1 of 2 wrong, but fewer than 3 reviewed: still live.
    assert_eq!(route(&h, "billing").await["mode"], "live");
    review(
        &h,
        &samples[2],
        json!({"decision_right": false, "right_label": "refund", "actions": {"tag_billing": false}}),
    )
    .await;
    // 2 of 3 wrong (67% > 30%): demoted to approve, by the charter, with the reason.
    let r = route(&h, "billing").await;
    assert_eq!(r["mode"], "approve", "{r}");
    assert_eq!(r["override"]["by"], "charter");
    assert!(
        r["override"]["reason"]
            .as_str()
            .unwrap()
            .contains("2 of 3 reviewed samples marked wrong"),
        "{r}"
    );
    let audit = h
        .store
        .list_audit(AuditFilter {
            charter: Some("trio".into()),
            actor: Some("charter".into()),
            action: Some("route.mode".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].detail["to"], "approve");
    let n = wait_notice(&h, "demoted to approve").await;
    assert!(n.contains("billing"), "{n}");
    // The next invoice waits for a reviewer instead of running.
    let id = h.send("trio", 9, "invoice 9").await;
    h.wait_status(&id, "waiting").await;
    assert_eq!(h.puts(9), 0);
    let pending = h.pending_approvals().await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].action, "tag_billing");
    // The metrics count the reviews and the automatic change.
    let m = h.get("/metrics", Some("root")).await;
    assert!(
        m.body.contains(
            "charter_route_mode_changes_total{charter=\"trio\",route=\"billing\",to=\"approve\",by=\"automatic\"} 1"
        ),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("charter_sample_reviews_total{charter=\"trio\",route=\"billing\",verdict=\"corrected\"} 2"),
        "{}",
        m.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_drafts_are_measured_per_route() {
    let c = crate::decision::charter(
        "drafts",
        "decide:\n  labels: [billing, other]\n  stages:\n    - rules:\n        - { when: 'payload.subject.contains(\"refund\")', label: billing }\n  otherwise: other",
        r#"routes:
  - name: refunds
    when: decision.label == "billing"
    do: [reply]
actions:
  reply:
    connector: helpdesk
    draft: { prompt: prompts/reply.md, provider: local }
    request:
      method: POST
      path: "/api/tickets/{{ payload.id }}/comments"
      json: { body: "{{ draft }}", public: true }"#,
        "",
    );
    let h = crate::decision::Harness::start(
        &[("drafts", c)],
        &[("prompts/reply.md", "Reply to: {{ text }}")],
    )
    .await;
    let draft = crate::decision::DRAFT_TEXT;
    // Two drafts wait for a reviewer (drafts are reviewed by default).
    let a = h
        .send("drafts", json!({"id": 1, "subject": "refund one"}))
        .await;
    let b = h
        .send("drafts", json!({"id": 2, "subject": "refund two"}))
        .await;
    h.wait(a, "waiting").await;
    h.wait(b, "waiting").await;
    let list = h.api_get("/api/v1/approvals?status=pending").await;
    let approvals = list["approvals"].as_array().unwrap().clone();
    assert_eq!(approvals.len(), 2, "{list}");
    // The first is approved with one word changed ("its" -> "the"), the second as written.
    let first = approvals
        .iter()
        .find(|x| x["event_id"] == a.to_string().as_str())
        .unwrap();
    let second = approvals
        .iter()
        .find(|x| x["event_id"] == b.to_string().as_str())
        .unwrap();
    let mut edited = first["params"].clone();
    let approved_text = draft.replace("its way", "the way");
    edited["json"]["body"] = json!(approved_text);
    let r = h
        .api_post(
            &format!(
                "/api/v1/approvals/{}/approve",
                first["id"].as_str().unwrap()
            ),
            json!({"params": edited}),
        )
        .await;
    assert_eq!(r["approval"]["status"], "approved", "{r}");
    let r = h
        .api_post(
            &format!(
                "/api/v1/approvals/{}/approve",
                second["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(r["approval"]["status"], "approved", "{r}");
    h.wait(a, "done").await;
    h.wait(b, "done").await;

    let v = h.api_get("/api/v1/rewrites?charter=drafts").await;
    let totals = v["totals"].as_array().unwrap();
    assert_eq!(totals.len(), 1, "{v}");
    let t = &totals[0];
    assert_eq!(t["route"], "refunds");
    assert_eq!(t["action"], "reply");
    assert_eq!(t["drafts"], 2);
    assert_eq!(t["edited"], 1);
    // "its" -> "the" is 3 character edits and 1 word edit; the draft is 52 characters and
    // 10 words, twice.
    assert_eq!(draft.chars().count(), 52);
    assert_eq!(t["chars_changed"], 3);
    assert_eq!(t["draft_chars"], 104);
    assert_eq!(t["words_changed"], 1);
    assert_eq!(t["draft_words"], 20);
    assert!((t["char_ratio"].as_f64().unwrap() - 3.0 / 104.0).abs() < 1e-12);
    assert!((t["word_ratio"].as_f64().unwrap() - 0.05).abs() < 1e-12);
    // The pairs: the draft and what the reviewer approved.
    let pairs = v["rewrites"].as_array().unwrap();
    let p = pairs
        .iter()
        .find(|p| p["event_id"] == a.to_string().as_str())
        .unwrap();
    assert_eq!(p["draft"], draft);
    assert_eq!(p["approved"], approved_text.as_str());
    assert_eq!(
        (p["chars"].as_u64(), p["words"].as_u64()),
        (Some(3), Some(1))
    );

    // The report carries the totals; /metrics the counters.
    let rep = h.api_get("/api/v1/charters/drafts/report").await;
    assert_eq!(rep["rollout"]["rewrite_total"]["edited"], 1, "{rep}");
    assert_eq!(rep["rollout"]["rewrite_total"]["chars_changed"], 3);
    let text = charter_server::rollout::render_text(&rep["rollout"]);
    assert!(
        text.contains("2 approved, 1 edited; 2.9% of characters, 5.0% of words rewritten"),
        "{text}"
    );
    let m = h.text_get("/metrics").await;
    for line in [
        "charter_draft_rewrites_total{charter=\"drafts\",route=\"refunds\",action=\"reply\"} 2",
        "charter_draft_edits_total{charter=\"drafts\",route=\"refunds\",action=\"reply\",unit=\"char\"} 3",
        "charter_draft_length_total{charter=\"drafts\",route=\"refunds\",action=\"reply\",unit=\"word\"} 20",
    ] {
        assert!(m.contains(line), "{line} missing from\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_true_promotes_once_the_criteria_are_met() {
    let trio = trio().replace(
        "promote_when: { agreement: 0.75, reviewed: 4 }",
        "promote_when: { agreement: 0.75, reviewed: 2, auto: true }",
    );
    let h = Harness::start(
        &[("trio", trio)],
        &[("rita", "reviewer", &[]), ("view", "viewer", &[])],
    )
    .await;
    for i in 1..=2 {
        let id = h.send("trio", i, &format!("hello {i}")).await;
        h.wait_status(&id, "done").await;
    }
    let samples = queue(&h, "rest").await;
    review(
        &h,
        &samples[0],
        json!({"decision_right": true, "actions": {"tag_other": true}}),
    )
    .await;
    assert_eq!(
        route(&h, "rest").await["mode"],
        "shadow",
        "one review is not enough"
    );
    review(
        &h,
        &samples[1],
        json!({"decision_right": true, "actions": {"tag_other": true}}),
    )
    .await;
    let r = route(&h, "rest").await;
    assert_eq!(r["mode"], "live", "{r}");
    assert_eq!(r["override"]["by"], "charter");
    assert!(
        r["override"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("promote_when met")
    );
    // Agreement starts over in the new mode.
    assert_eq!(r["agreement"]["reviewed"], 0, "{r}");
    assert_eq!(r["all_time"]["reviewed"], 2, "{r}");
    wait_notice(&h, "was promoted to live").await;
    let id = h.send("trio", 3, "hello 3").await;
    h.wait_status(&id, "done").await;
    assert_eq!(h.puts(3), 1, "promoted: the route executes");
}
