//! The web UI, in-process on 127.0.0.1:0 with a real SQLite store and a local sink: login,
//! sessions, CSRF, the login rate limit, role and scope rules, the pages, and (in real
//! headless Chromium, driven by `tests/ui/approve.mjs`) approving an action from the inbox.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::{Path, PathBuf};
use std::time::Duration;

use charter_store::{CharterStateStore, EventStore, SessionStore};
use serde_json::{Value, json};

use crate::support::{Harness, Ui, charter_yaml, cookie_value, csrf_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sessions_csrf_roles_and_scopes() {
    let h = Harness::start(
        &[
            (
                "gated",
                charter_yaml(
                    "gated",
                    "live",
                    "{ reviewers: [lead], expires: 1h }",
                    "other",
                ),
            ),
            (
                "other",
                charter_yaml(
                    "other",
                    "live",
                    "{ reviewers: [lead], expires: 1h }",
                    "other",
                ),
            ),
        ],
        &[
            ("admin", "admin", &[]),
            ("lead", "reviewer", &["gated"]),
            ("viewer", "viewer", &[]),
        ],
    )
    .await;
    let id = h.send("gated", 1, "refund please").await;
    let other = h.send("other", 2, "refund please").await;
    h.wait_status(&id, "waiting").await;
    h.wait_status(&other, "waiting").await;
    let approvals = h.pending_approvals().await;
    let gated = approvals.iter().find(|a| a.charter == "gated").unwrap();
    let other_approval = approvals.iter().find(|a| a.charter == "other").unwrap();

    // Without a session every page sends you to the login page, and back afterwards.
    let anon = Ui::anonymous(&h);
    let r = anon.get("/inbox?charter=gated").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location, "/login?next=%2Finbox%3Fcharter%3Dgated");
    assert_eq!(anon.get("/").await.location, "/login");
    // A POST without a session (and so without a valid CSRF token) is refused.
    let r = anon
        .post(
            &format!("/approvals/{}/approve", gated.id),
            &[("csrf", "x")],
        )
        .await;
    assert_eq!(r.status, 403);

    // The login form itself is CSRF-protected.
    let page = anon.get("/login").await;
    let login_cookie = cookie_value(&page.cookies, "charter_login").unwrap();
    assert!(page.cookies[0].contains("HttpOnly") && page.cookies[0].contains("SameSite=Strict"));
    let forged = Ui {
        h: &h,
        cookie: format!("charter_login={login_cookie}"),
    }
    .post("/login", &[("csrf", "forged"), ("token", "secret-admin")])
    .await;
    assert_eq!(forged.status, 403);
    assert!(cookie_value(&forged.cookies, "charter_session").is_none());

    // A good login: a 256-bit session id in an HttpOnly, SameSite=Strict cookie.
    let (r, viewer) = Ui::try_login(&h, "secret-viewer").await;
    assert_eq!(r.status, 303);
    let set = r
        .cookies
        .iter()
        .find(|c| c.starts_with("charter_session="))
        .unwrap();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Path=/"), "{set}");
    assert!(!set.contains("Secure"), "plain http here: {set}");
    assert_eq!(
        cookie_value(&r.cookies, "charter_session").unwrap().len(),
        64
    );

    // A viewer sees the inbox with the evidence, but gets no buttons and cannot decide.
    let inbox = viewer.get("/inbox").await;
    assert_eq!(inbox.status, 200);
    assert!(inbox.body.contains(&gated.id.to_string()), "{}", inbox.body);
    assert!(
        inbox.body.contains("refund please"),
        "the payload is the evidence"
    );
    assert!(!inbox.body.contains("Open access"), "tokens are defined");
    assert!(!inbox.body.contains(">Approve</button>"));
    let csrf = viewer.csrf().await;
    let r = viewer
        .post(
            &format!("/approvals/{}/approve", gated.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 403, "a viewer cannot decide");

    // A reviewer scoped to `gated`: CSRF is checked, other charters do not exist, pausing
    // and replaying are admin work.
    let lead = Ui::login(&h, "lead").await;
    let csrf = lead.csrf().await;
    let approve = format!("/approvals/{}/approve", gated.id);
    assert_eq!(lead.post(&approve, &[]).await.status, 403, "no CSRF token");
    assert_eq!(
        lead.post(&approve, &[("csrf", &"0".repeat(64))])
            .await
            .status,
        403,
        "wrong CSRF token"
    );
    assert_eq!(
        lead.post(&approve, &[("csrf", &viewer.csrf().await)])
            .await
            .status,
        403,
        "another session's CSRF token"
    );
    let inbox = lead.get("/inbox").await;
    assert!(!inbox.body.contains(&other_approval.id.to_string()));
    assert_eq!(lead.get(&format!("/events/{other}")).await.status, 404);
    assert_eq!(lead.get("/charters/other").await.status, 404);
    let r = lead
        .post(
            &format!("/approvals/{}/approve", other_approval.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 404, "another charter's approval does not exist");
    for op in ["pause", "resume", "replay", "promote"] {
        let r = lead
            .post(&format!("/charters/gated/{op}"), &[("csrf", &csrf)])
            .await;
        assert_eq!(r.status, 403, "a reviewer cannot {op}");
    }
    let r = lead
        .post(&format!("/events/{id}/replay"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 403, "a reviewer cannot replay");
    assert!(!h.store.is_paused("gated").await.unwrap());

    // Rejecting needs a reason (the API's rule, shown as a page).
    let reject = format!("/approvals/{}/reject", gated.id);
    let r = lead
        .post(&reject, &[("csrf", &csrf), ("reason", "  ")])
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("reason"), "{}", r.body);

    // The reviewer approves: redirect back with a message, the sink gets one request.
    let r = lead
        .post(
            &approve,
            &[("csrf", &csrf), ("back", "/inbox?charter=gated")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location, "/inbox?charter=gated&msg=approved");
    h.wait_status(&id, "done").await;
    assert_eq!(h.puts(1), 1);
    let r = lead.post(&approve, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 409, "already decided");
    assert!(r.body.contains("already approved"), "{}", r.body);
    assert_eq!(h.puts(1), 1);

    // The timeline shows the decision, the action with its attempt and the audit entry.
    let t = lead.get(&format!("/events/{id}")).await;
    assert_eq!(t.status, 200);
    for want in [
        "Event received",
        "Run 1 started",
        "Run 2 finished",
        "Approval requested for assign_billing",
        "Approval approved",
        "Audit: approval.approve",
        "Action assign_billing",
        "succeeded",
        "<td>200</td>",
        "confidence 1.00",
    ] {
        assert!(
            t.body.contains(want),
            "timeline lacks {want:?}:\n{}",
            t.body
        );
    }
    let audit = charter_store::AuditStore::list_audit(
        &h.store,
        charter_store::AuditFilter {
            action: Some("approval.approve".into()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        audit[0].actor, "lead",
        "the session's token name is the actor"
    );

    // An admin pauses and resumes; the store and the audit log follow.
    let admin = Ui::login(&h, "admin").await;
    let csrf = admin.csrf().await;
    let r = admin
        .post("/charters/other/pause", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(h.store.is_paused("other").await.unwrap());
    let page = admin.get("/charters").await;
    assert!(page.body.contains("ops@example.test"), "owner shown");
    assert!(page.body.contains(">Resume</button>"));
    let r = admin
        .post("/charters/other/resume", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    assert!(!h.store.is_paused("other").await.unwrap());

    // Logging out ends the session on the server, not just in the browser.
    let r = admin.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert!(r.cookies.iter().any(|c| c.contains("Max-Age=0")));
    assert_eq!(admin.get("/inbox").await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_payloads_are_listed_and_replayed_from_the_ui() {
    const SCHEMA: &str = r#"{"type":"object","required":["ticket"],"properties":{"ticket":{"type":"object","required":["id"],"properties":{"id":{"type":"integer"}}}}}"#;
    let alpha = charter_yaml("alpha", "shadow", "auto", "other").replace(
        "  dedupe: ",
        "  input_schema: schemas/ticket.json\n  dedupe: ",
    );
    let h = Harness::start_with_files(
        &[
            ("alpha", alpha),
            ("beta", charter_yaml("beta", "shadow", "auto", "other")),
        ],
        &[
            ("root", "admin", &[]),
            ("view", "viewer", &["alpha"]),
            ("bview", "viewer", &["beta"]),
        ],
        &[("schemas/ticket.json", SCHEMA)],
    )
    .await;
    // A delivery that breaks the contract is answered 422 and kept.
    let r = h
        .http
        .post(format!("{}/hooks/alpha", h.base))
        .json(&json!({"ticket": {"id": "x-1", "subject": "refund"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let bad = h.store.list_rejected(None, 10).await.unwrap()[0].id;
    // One rejected under an older contract, which the current one accepts.
    let older = uuid::Uuid::now_v7();
    h.store
        .reject(charter_core::model::RejectedPayload {
            id: older,
            charter: "alpha".into(),
            source: "webhook:/hooks/alpha".into(),
            received_at: 1_700_000_000_000,
            headers: [("content-type".to_string(), "application/json".to_string())].into(),
            body: r#"{"ticket":{"id":41,"subject":"refund"}}"#.into(),
            reasons: vec!["/ticket: an older rule".into()],
        })
        .await
        .unwrap();

    // A viewer of alpha sees both, with their violations, and no replay button.
    let view = Ui::login(&h, "view").await;
    let page = view.get("/rejected").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&bad.to_string()) && page.body.contains(&older.to_string()));
    assert!(page.body.contains("<code>/ticket/id: "), "{}", page.body);
    assert!(page.body.contains("x-1"), "the body as received is shown");
    assert!(
        !page.body.contains("/replay\""),
        "a viewer gets no replay button"
    );
    assert_eq!(
        view.post(
            &format!("/rejected/{older}/replay"),
            &[("csrf", &view.csrf().await)]
        )
        .await
        .status,
        403
    );
    // Another charter's viewer sees none of them.
    let bview = Ui::login(&h, "bview").await;
    let page = bview.get("/rejected").await;
    assert!(page.body.contains("Nothing was rejected."), "{}", page.body);
    assert!(
        bview
            .get("/rejected?charter=alpha")
            .await
            .body
            .contains("Nothing was rejected.")
    );

    // The admin replays: the one still breaking the contract stays, with the reason shown.
    let root = Ui::login(&h, "root").await;
    let csrf = root.csrf().await;
    assert_eq!(
        root.post(&format!("/rejected/{older}/replay"), &[])
            .await
            .status,
        403,
        "no CSRF token"
    );
    let r = root
        .post(&format!("/rejected/{bad}/replay"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location, "/rejected?msg=still_invalid");
    let page = root.get(&r.location).await;
    assert!(
        page.body.contains("still breaks the contract") && page.body.contains("<code>/ticket/id: "),
        "{}",
        page.body
    );
    // The one the contract now accepts becomes an event, and leaves the list.
    let r = root
        .post(&format!("/rejected/{older}/replay"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    assert!(r.location.starts_with("/events/"), "{}", r.location);
    let event_id: uuid::Uuid = r.location["/events/".len()..]
        .split('?')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let event = h.store.get_event(event_id).await.unwrap().unwrap();
    assert_eq!(event.event.payload["ticket"]["id"], 41);
    assert_eq!(event.event.source, format!("replay:rejected:{older}"));
    let timeline = root.get(&r.location).await;
    assert!(
        timeline.body.contains("passed the contract"),
        "{}",
        timeline.body
    );
    let left: Vec<_> = h
        .store
        .list_rejected(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![bad]);
}

/// A second node serving the first one's project and store file (an API-only
/// `charter serve` beside it, as behind a balancer), on its own port.
struct Node {
    base: String,
    http: reqwest::Client,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        // Stops the node's server when a test ends early (a failed assertion) too.
        self.shutdown.cancel();
    }
}

impl crate::support::Site for Node {
    fn base(&self) -> &str {
        &self.base
    }
    fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

impl Node {
    async fn start(h: &Harness) -> Node {
        let runtime = std::sync::Arc::new(charter_server::Runtime::load(&h.dir).unwrap());
        let store = charter_store::sqlite::SqliteStore::open(&runtime.store_path()).unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let running = charter_server::start(
            runtime,
            store,
            charter_server::ServeOptions {
                listen: ([127, 0, 0, 1], 0).into(),
                role: charter_server::Role::Api,
                worker_id: None,
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        Node {
            base: format!("http://{}", running.addr),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            shutdown,
        }
    }
}

/// Sessions are in the store: one opened on a node is known to another node of the same
/// store and to a node started afterwards (a restart), a logout on any node ends it on all,
/// a token rotated in `charter.yaml` ends its sessions, and the store keeps only the hash of
/// the cookie's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_known_to_every_node_and_outlives_a_restart() {
    let h = Harness::start(
        &[("gated", charter_yaml("gated", "live", "auto", "other"))],
        &[("admin", "admin", &[]), ("viewer", "viewer", &[])],
    )
    .await;
    let b = Node::start(&h).await;
    let on_a = Ui::login(&h, "admin").await;
    let on_b = on_a.on(&b);
    let page = on_b.get("/inbox").await;
    assert_eq!(
        page.status, 200,
        "the other node knows the session: {}",
        page.body
    );
    // The same CSRF token on both nodes.
    assert_eq!(on_b.csrf().await, on_a.csrf().await);

    // The id itself is not in the store; its SHA-256 is.
    let id = cookie_value(std::slice::from_ref(&on_a.cookie), "charter_session").unwrap();
    let now = charter_server::now_millis();
    assert!(h.store.session(&id, now).await.unwrap().is_none());
    let stored = h
        .store
        .session(&charter_server::ui::session::id_hash(&id), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.name, "admin");
    assert_eq!(stored.role, "admin");

    // A node started after the login (as after a restart) knows it too.
    b.shutdown.cancel();
    let c = Node::start(&h).await;
    let on_c = on_a.on(&c);
    assert_eq!(on_c.get("/inbox").await.status, 200);

    // A viewer's session on node C stays a viewer's on node A.
    let viewer_c = Ui::login(&c, "viewer").await;
    let viewer_a = viewer_c.on(&h);
    let inbox = viewer_a.get("/inbox").await;
    assert_eq!(inbox.status, 200);
    assert!(inbox.body.contains("viewer"), "{}", inbox.body);

    // Rotating the viewer's token ends its sessions on a node that loads the new secret;
    // the admin's session, whose token did not change, holds there.
    std::fs::write(h.dir.join("secrets/viewer"), "rotated-viewer").unwrap();
    let d = Node::start(&h).await;
    let rotated = viewer_c.on(&d);
    let r = rotated.get("/inbox").await;
    assert_eq!(
        r.status, 303,
        "a rotated token's session has ended: {}",
        r.body
    );
    assert!(r.location.starts_with("/login"), "{}", r.location);
    let admin_d = on_a.on(&d);
    assert_eq!(admin_d.get("/inbox").await.status, 200);
    d.shutdown.cancel();

    // Logging out on node C ends the session on node A.
    let csrf = on_c.csrf().await;
    let r = on_c.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location, "/login");
    let r = on_a.get("/inbox").await;
    assert_eq!(r.status, 303, "logged out everywhere");
    assert!(r.location.starts_with("/login"), "{}", r.location);
    assert!(
        h.store
            .session(&charter_server::ui::session::id_hash(&id), now)
            .await
            .unwrap()
            .is_none()
    );
    c.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_per_address() {
    let h = Harness::start(
        &[("gated", charter_yaml("gated", "live", "auto", "other"))],
        &[("admin", "admin", &[])],
    )
    .await;
    for i in 0..5 {
        let (r, _) = Ui::try_login(&h, "wrong").await;
        assert_eq!(r.status, 401, "attempt {i}");
        assert!(r.body.contains("not valid"));
    }
    let (r, ui) = Ui::try_login(&h, "secret-admin").await;
    assert_eq!(
        r.status, 429,
        "even the right token waits after five failures"
    );
    assert!(ui.cookie.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_ui_edits_decides_searches_and_shows_the_shadow_record() {
    let h = Harness::start(
        &[
            (
                "gated",
                charter_yaml(
                    "gated",
                    "live",
                    "{ reviewers: [lead], expires: 1h }",
                    "other",
                ),
            ),
            ("unsure", charter_yaml("unsure", "live", "auto", "escalate")),
            ("quiet", charter_yaml("quiet", "shadow", "auto", "other")),
        ],
        &[],
    )
    .await;
    let gid = h.send("gated", 7, "refund").await;
    let uid = h.send("unsure", 8, "what is this").await;
    let s1 = h.send("quiet", 9, "refund me").await;
    let s2 = h.send("quiet", 10, "hello").await;
    h.wait_status(&gid, "waiting").await;
    h.wait_status(&uid, "waiting").await;
    h.wait_status(&s1, "done").await;
    h.wait_status(&s2, "done").await;

    // No tokens: visiting the login page starts a local session; every page says it is open.
    let r = Ui::anonymous(&h).get("/login").await;
    assert_eq!(r.status, 303);
    let ui = Ui {
        h: &h,
        cookie: format!(
            "charter_session={}",
            cookie_value(&r.cookies, "charter_session").unwrap()
        ),
    };
    let inbox = ui.get("/inbox").await;
    assert!(inbox.body.contains("Open access"), "{}", inbox.body);
    // The approval's tab opens first (it has work); the escalation is under Decisions.
    assert!(inbox.body.contains("data-approval="), "{}", inbox.body);
    let decisions = ui.get("/inbox?tab=decisions").await;
    assert!(
        decisions.body.contains("low confidence"),
        "the escalation is listed"
    );
    let csrf = csrf_in(&inbox.body);

    // Forms still need the CSRF token when open.
    let approval = h.pending_approvals().await.remove(0);
    let approve = format!("/approvals/{}/approve", approval.id);
    assert_eq!(ui.post(&approve, &[("csrf", "nope")]).await.status, 403);

    // Edit-and-approve: invalid JSON is explained; an edit outside the body is refused;
    // a body edit is executed.
    let r = ui
        .post(&approve, &[("csrf", &csrf), ("params", "{not json")])
        .await;
    // Explained, with the user's text kept for another try.
    assert_eq!(r.status, 422);
    assert!(r.body.contains("not valid JSON"), "{}", r.body);
    assert!(r.body.contains(">{not json</textarea>"), "{}", r.body);
    let mut edited = approval.params.clone();
    edited["method"] = json!("DELETE");
    let r = ui
        .post(
            &approve,
            &[("csrf", &csrf), ("params", &edited.to_string())],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("DELETE"), "the edit is kept: {}", r.body);
    let mut edited = approval.params.clone();
    edited["json"]["ticket"]["group"] = json!("refunds");
    let r = ui
        .post(
            &approve,
            &[("csrf", &csrf), ("params", &edited.to_string())],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        r.location.ends_with("msg=approved_edited"),
        "{}",
        r.location
    );
    h.wait_status(&gid, "done").await;
    let put = h
        .sink
        .received()
        .into_iter()
        .find(|r| r.path == "/api/tickets/7")
        .unwrap();
    assert!(put.body.contains("refunds"), "{}", put.body);

    // Decide the escalation with a label from the select.
    let esc = ui.get("/inbox?charter=unsure").await;
    let marker = "action=\"/escalations/";
    let start = esc.body.find(marker).unwrap() + marker.len();
    let esc_id = &esc.body[start..start + 36];
    let r = ui
        .post(
            &format!("/escalations/{esc_id}/decide"),
            &[("csrf", &csrf), ("label", "nonsense"), ("fields", "{}")],
        )
        .await;
    assert_eq!(r.status, 400, "labels outside the charter are refused");
    let r = ui
        .post(
            &format!("/escalations/{esc_id}/decide"),
            &[("csrf", &csrf), ("label", "billing"), ("fields", "")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    // billing -> assign_billing (auto) -> sink. (It was `waiting` before the decision, so
    // waiting for `waiting` raced with a worker that finished first.)
    h.wait_status(&uid, "done").await;
    for _ in 0..200 {
        if h.puts(8) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(h.puts(8), 1, "the human label routed the event");

    // Events: filter by charter and status, search by dedupe key and by id.
    let p = ui.get("/events?charter=quiet&status=done").await;
    assert!(p.body.contains(&s1) && p.body.contains(&s2), "{}", p.body);
    assert!(!p.body.contains(&gid));
    let p = ui.get("/events?q=10").await;
    assert!(p.body.contains(&s2) && !p.body.contains(&s1), "{}", p.body);
    let p = ui.get(&format!("/events?q={gid}")).await;
    assert!(p.body.contains(&gid) && !p.body.contains(&s2));
    assert_eq!(ui.get("/events?status=bogus").await.status, 400);
    assert_eq!(ui.get("/events/not-a-uuid").await.status, 404);

    // The shadow page: what it would have done, and the agreement, defined on the page.
    let p = ui.get("/charters/quiet").await;
    assert_eq!(p.status, 200);
    // Measurements with server-rendered SVG charts of volume, outcome mix and cycle time.
    assert!(p.body.contains("Measurements, last 7 days"), "{}", p.body);
    for chart in ["Events received", "Outcome mix"] {
        assert!(
            p.body.contains(&format!("aria-label=\"{chart}\"")),
            "{chart}: {}",
            p.body
        );
    }
    assert!(p.body.matches("<svg").count() >= 3);
    let received: usize = p
        .body
        .lines()
        .find_map(|l| l.trim().strip_prefix("events received"))
        .and_then(|n| n.trim().parse().ok())
        .expect("the figures list the events received");
    assert!(received >= 2, "s1 and s2 were received: {received}");
    assert!(p.body.contains("Shadow record"));
    assert!(p.body.contains("would_run"), "{}", p.body);
    // No human reviewed either run: no agreement figure is claimed.
    assert!(p.body.contains("Agreement: not reviewed"), "{}", p.body);
    assert!(!p.body.contains("Agreement 100.0%"), "{}", p.body);
    assert!(p.body.contains("2 shadow runs decided, none reviewed"));
    // (With some reviewed but fewer than the minimum, the rollout's agreement line says
    // "not enough reviewed": tests/it/rollout.rs.)
    assert!(
        p.body
            .contains("the shadow runs a human reviewed that were <em>not</em> corrected")
    );
    assert!(
        p.body.contains("href=\"/rollout/quiet\""),
        "links the rollout page"
    );
    assert!(
        p.body.contains("action=\"/charters/quiet/promote\""),
        "the shadow charter offers promotion"
    );
    let r = ui
        .post(
            "/charters/quiet/promote",
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let p = ui.get("/charters/quiet").await;
    assert!(p.body.contains("action=\"/charters/quiet/demote\""));
    let r = ui.post("/charters/quiet/demote", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303, "{}", r.body);

    // Untrusted text is escaped everywhere it is shown.
    let xid = h.send("quiet", 11, "<script>alert(1)</script>").await;
    h.wait_status(&xid, "done").await;
    let t = ui.get(&format!("/events/{xid}")).await;
    assert!(!t.body.contains("<script>alert"), "{}", t.body);
    assert!(t.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

/// Node and Debian's Chromium, or `None` when one is missing and the test may skip
/// (`crate::tools`: never under CI=true).
pub(crate) fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = PathBuf::from(
        std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    let ui_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut missing = Vec::new();
    if !node_ok {
        missing.push("node (apt-get install nodejs npm)".to_string());
    }
    if !chromium.exists() {
        missing.push(format!("{} (apt-get install chromium)", chromium.display()));
    }
    if !ui_dir.join("node_modules/playwright-core").exists() {
        missing.push(format!("playwright-core (npm ci in {})", ui_dir.display()));
    }
    let probe = || {
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {}", missing.join(", ")))
        }
    };
    crate::tools::available(crate::tools::Tool::Browser, probe).then_some((ui_dir, chromium))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_logs_in_approves_and_sees_the_timeline() {
    let Some((ui_dir, chromium)) = browser_tools() else {
        return;
    };
    let h = Harness::start(
        &[(
            "support-triage",
            charter_yaml(
                "support-triage",
                "live",
                "{ reviewers: [lead], expires: 4h }",
                "other",
            ),
        )],
        &[("lead", "reviewer", &[])],
    )
    .await;
    let id = h
        .send("support-triage", 4242, "Please refund my last invoice")
        .await;
    h.wait_status(&id, "waiting").await;
    assert_eq!(h.puts(4242), 0, "nothing is sent before approval");

    // Screenshots go to docs/ when asked (to refresh the committed ones), else a temp dir.
    let outdir = if std::env::var("CHARTER_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/images")
    } else {
        h.dir.join("screenshots")
    };
    let out = tokio::process::Command::new("node")
        .arg(ui_dir.join("approve.mjs"))
        .arg(&h.base)
        .arg("secret-lead")
        .arg(&outdir)
        .env("CHROMIUM_PATH", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("the browser script finished within 2 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser script failed:\n{stderr}\n{stdout}"
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["event"], id.as_str());

    // The downstream server received the approved action exactly once.
    assert_eq!(h.puts(4242), 1);
    let put = h
        .sink
        .received()
        .into_iter()
        .find(|r| r.path == "/api/tickets/4242")
        .unwrap();
    assert_eq!(put.status, 200);
    assert!(put.idempotency_key.is_some());
    // And the timeline the browser saw shows it.
    let timeline = report["timeline"].as_str().unwrap();
    assert!(timeline.contains("Action assign_billing"), "{timeline}");
    assert!(timeline.contains("Approval approved"), "{timeline}");
    assert!(timeline.contains("by lead"), "{timeline}");
    assert_eq!(
        report["charts"], 3,
        "the charter page rendered its three charts"
    );
    for shot in ["inbox.png", "timeline.png", "charter.png"] {
        let bytes = std::fs::read(outdir.join(shot)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{shot} is a PNG");
        assert!(bytes.len() > 10_000, "{shot} has content");
    }
}

/// In real headless Chromium (`tests/ui/rollout.mjs`): review a sampled shadow run from the
/// review queue, see the route's agreement and promotion suggestion, and promote the route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_reviews_a_shadow_sample_and_promotes_the_route() {
    let Some((ui_dir, chromium)) = browser_tools() else {
        return;
    };
    let trio = crate::rollout::trio().replace(
        "promote_when: { agreement: 0.75, reviewed: 4 }",
        "promote_when: { agreement: 0.9, reviewed: 1 }",
    );
    let h = Harness::start(&[("trio", trio)], &[("root", "admin", &[])]).await;
    for i in 1..=2 {
        let id = h.send("trio", i, &format!("hello {i}")).await;
        h.wait_status(&id, "done").await;
    }
    assert_eq!(h.puts(1) + h.puts(2), 0, "shadow: nothing sent");
    let outdir = if std::env::var("CHARTER_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/images")
    } else {
        h.dir.join("screenshots")
    };
    let out = tokio::process::Command::new("node")
        .arg(ui_dir.join("rollout.mjs"))
        .arg(&h.base)
        .arg("secret-root")
        .arg(&outdir)
        .env("CHROMIUM_PATH", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("the browser script finished within 2 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser script failed:\n{stderr}\n{stdout}"
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    // The review the browser submitted is stored, and the route is live.
    let sample = uuid::Uuid::parse_str(report["sample"].as_str().unwrap()).unwrap();
    let stored = charter_store::RolloutStore::sample(&h.store, sample)
        .await
        .unwrap()
        .unwrap();
    let review = stored.review.unwrap();
    assert!(review.decision_right && review.actions["tag_other"]);
    assert_eq!(review.by, "root");
    let r = h.get("/api/v1/charters/trio/routes", Some("root")).await;
    let rest = r.json()["routes"][2].clone();
    assert_eq!(rest["name"], "rest");
    assert_eq!(rest["mode"], "live", "{rest}");
    assert_eq!(rest["override"]["by"], "root");
    let id = h.send("trio", 3, "hello 3").await;
    h.wait_status(&id, "done").await;
    assert_eq!(h.puts(3), 1, "the promoted route executes");
    for shot in ["review.png", "rollout.png"] {
        let bytes = std::fs::read(outdir.join(shot)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{shot} is a PNG");
    }
}
