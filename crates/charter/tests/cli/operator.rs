//! The CLI as a client of a running server: send, runs, the operator commands, and finding
//! the server of a project (a second serve on one SQLite store is refused).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_runs_from_the_command_line_with_a_shopify_signed_delivery() {
    charter_connect::install_crypto_provider();
    let dir = temp_dir("runs-cli");
    let shutdown = CancellationToken::new();
    let sink = Sink::default();
    let sink_addr = sink
        .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await
        .unwrap();
    write(&dir, "secrets/shop", "shpss_cli_test_secret");
    write(
        &dir,
        "charter.yaml",
        &format!(
            "worker: {{ lease: 2s, poll_interval: 50ms }}\nconnectors:\n  store:\n    type: http\n    base_url: http://{sink_addr}\n    allow_private: true\n    timeout: 2s\n"
        ),
    );
    write(
        &dir,
        "charters/orders.yaml",
        r#"
name: orders
description: tag new Shopify orders
owner: ops@example.test
maintainer: eng@example.test
system_of_record: store
mode: live
uses: [store]
trigger:
  webhook: { path: /hooks/shopify/orders, verify: { preset: shopify, secret: file:secrets/shop } }
  input_schema: schemas/order.json
routes:
  - when: "true"
    do: [tag]
actions:
  tag:
    connector: store
    request: { method: PUT, path: "/orders/{{ payload.id }}", json: { tags: "charter" } }
    approval: auto
escalation: { to: ops }
measure: { success: [tagged] }
"#,
    );
    write(&dir, "order.json", r#"{"id": 820982911946154508}"#);
    write(&dir, "draft-order.json", r#"{"id": "draft-17"}"#);
    let integer_ids =
        r#"{"type":"object","required":["id"],"properties":{"id":{"type":"integer"}}}"#;
    write(&dir, "schemas/order.json", integer_ids);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Server::start(&dir, port);
    wait_healthy(&reqwest::Client::new(), &base).await;
    let d = dir.to_str().unwrap();
    let order = dir.join("order.json");
    let order = order.to_str().unwrap();

    // `send` signs the way the preset expects (X-Shopify-Hmac-Sha256) and the server accepts.
    let (code, out, err) = charter(&[
        "send",
        "orders",
        order,
        "--dir",
        d,
        "--server",
        &base,
        "--delivery-id",
        "wh-1",
    ]);
    assert_eq!(code, 0, "send: {out} {err}");
    let ack: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ack["status"], "accepted", "{out}");
    let event_id = ack["id"].as_str().unwrap().to_string();
    // The same Shopify webhook id again is a duplicate of that event.
    let (code, out, _) = charter(&[
        "send",
        "orders",
        order,
        "--dir",
        d,
        "--server",
        &base,
        "--delivery-id",
        "wh-1",
    ]);
    assert_eq!(code, 0);
    let dup: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (dup["status"].as_str(), dup["id"].as_str()),
        (Some("duplicate"), Some(event_id.as_str()))
    );

    // `runs --json` lists the run once it completed, with its event and action.
    let deadline = Instant::now() + Duration::from_secs(30);
    let runs = loop {
        let (code, out, err) = charter(&[
            "runs",
            "--charter",
            "orders",
            "--outcome",
            "completed",
            "--json",
            "--server",
            &base,
        ]);
        assert_eq!(code, 0, "runs: {err}");
        let runs: Value = serde_json::from_str(&out).unwrap();
        if runs.as_array().is_some_and(|r| !r.is_empty()) {
            break runs;
        }
        assert!(Instant::now() < deadline, "no completed run listed: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["event_id"], event_id.as_str());
    assert_eq!(runs[0]["charter"], "orders");
    assert_eq!(runs[0]["actions"][0]["action"], "tag");
    assert_eq!(runs[0]["actions"][0]["status"], "succeeded");
    let received = sink.received();
    assert_eq!(received.len(), 1, "one request downstream: {received:?}");
    assert_eq!(received[0].path, "/orders/820982911946154508");

    // The table names the run, its event, its outcome and its action; stderr the count.
    let (code, out, err) = charter(&["runs", "--since", "1h", "--server", &base]);
    assert_eq!(code, 0, "{err}");
    let run_id = runs[0]["id"].as_str().unwrap();
    let row = out
        .lines()
        .find(|l| l.starts_with(run_id))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains(&event_id) && row.contains("completed") && row.contains("tag:succeeded"),
        "{row}"
    );
    assert!(err.contains("1 run(s)"), "{err}");
    // Nothing is listed before the run started, nor for another outcome.
    let (_, out, _) = charter(&["runs", "--until", "1970-01-02", "--json", "--server", &base]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));
    let (_, out, _) = charter(&["runs", "--outcome", "failed", "--json", "--server", &base]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));

    // Bad input: a clear message and exit 1 (server refusal) or 2 (usage); 3 unreachable.
    let (code, _, err) = charter(&["runs", "--outcome", "sideways", "--server", &base]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown outcome `sideways`"), "{err}");
    let (code, _, err) = charter(&["runs", "--since", "last tuesday", "--server", &base]);
    assert_eq!(code, 2);
    assert!(err.contains("--since"), "{err}");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = charter(&["runs", "--server", &closed]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach"), "{err}");

    // A payload that breaks the contract is kept as rejected, with the JSON pointer of what
    // is wrong, and is listed by `rejected list`.
    let draft = dir.join("draft-order.json");
    let draft = draft.to_str().unwrap();
    let (code, out, err) = charter(&[
        "send",
        "orders",
        draft,
        "--dir",
        d,
        "--server",
        &base,
        "--delivery-id",
        "wh-2",
    ]);
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.contains("422"), "{err}");
    let (code, out, err) = charter(&["rejected", "list", "--json", "--server", &base]);
    assert_eq!(code, 0, "{err}");
    let rejected: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rejected.as_array().unwrap().len(), 1, "{rejected}");
    let rejected_id = rejected[0]["id"].as_str().unwrap().to_string();
    assert!(
        rejected[0]["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("/id: "),
        "{rejected}"
    );
    let (code, out, _) = charter(&["rejected", "list", "--charter", "orders", "--server", &base]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&rejected_id) && l.contains("/id: ")),
        "{out}"
    );
    // Replayed against the same contract: refused, with the violation on stderr.
    let (code, _, err) = charter(&["rejected", "replay", &rejected_id, "--server", &base]);
    assert_eq!(code, 1);
    assert!(err.contains("422") && err.contains("  /id: "), "{err}");

    // The contract is fixed (draft ids are strings) and the server restarted: the replay is
    // stored as an event, processed, and the rejected copy is gone.
    write(
        &dir,
        "schemas/order.json",
        r#"{"type":"object","required":["id"],"properties":{"id":{"type":["integer","string"]}}}"#,
    );
    server.kill9();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Server::start(&dir, port);
    wait_healthy(&reqwest::Client::new(), &base).await;
    let (code, out, err) = charter(&["rejected", "replay", &rejected_id, "--server", &base]);
    assert_eq!(code, 0, "{err}");
    let ack: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ack["status"], "accepted", "{out}");
    let (_, out, _) = charter(&["rejected", "list", "--json", "--server", &base]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = charter(&[
            "runs",
            "--outcome",
            "completed",
            "--json",
            "--server",
            &base,
        ]);
        let runs: Value = serde_json::from_str(&out).unwrap();
        if runs.as_array().is_some_and(|r| r.len() == 2) {
            assert_eq!(runs[0]["event_id"], ack["id"], "{runs}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replayed event did not complete: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sink.received().iter().any(|r| r.path == "/orders/draft-17"),
        "{:?}",
        sink.received()
    );

    // `replay --force`: the first order's PUT goes out again, from a copy of its event.
    let (code, out, err) = charter(&["replay", &event_id, "--force", "--server", &base]);
    assert_eq!(code, 0, "{err}");
    let copy = out.trim().to_string();
    assert!(copy.len() == 36 && copy != event_id, "{out}");
    assert!(err.contains("its actions will execute again"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while requests_to(&sink, "/orders/820982911946154508") < 2 {
        assert!(Instant::now() < deadline, "the forced replay sent nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _, err) = charter(&["replay", "--force", "--server", &base]);
    assert_eq!(code, 2, "--force needs an event id: {err}");

    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A charter for the operator-command test: `refund` tickets PUT to the sink under
/// `approval`, anything else goes to `otherwise` (a label, or `escalate`).
/// How many requests the stand-in received at `path`.
fn requests_to(sink: &Sink, path: &str) -> usize {
    sink.received().iter().filter(|r| r.path == path).count()
}

fn operator_charter(name: &str, mode: &str, approval: &str, otherwise: &str) -> String {
    format!(
        r#"
name: {name}
description: operator commands
owner: ops@example.test
maintainer: eng@example.test
system_of_record: desk
mode: {mode}
uses: [desk]
trigger:
  webhook: {{ path: /hooks/{name}, verify: none }}
  dedupe: "{{{{ payload.ticket.id }}}}"
  text: "{{{{ payload.ticket.subject }}}}"
decide:
  labels: [billing, other]
  stages:
    - rules:
        - {{ when: 'payload.ticket.subject.contains("refund")', label: billing }}
  otherwise: {otherwise}
routes:
  - when: decision.label == "billing"
    do: [assign]
actions:
  assign:
    connector: desk
    request: {{ method: PUT, path: "/tickets/{{{{ payload.ticket.id }}}}", json: {{ group: billing }} }}
    approval: {approval}
escalation: {{ to: leads }}
measure: {{ success: [assigned] }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_from_the_command_line() {
    charter_connect::install_crypto_provider();
    let dir = temp_dir("operator-cli");
    let shutdown = CancellationToken::new();
    let sink = Sink::default();
    let sink_addr = sink
        .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await
        .unwrap();
    for who in ["root", "lead", "view"] {
        write(&dir, &format!("secrets/{who}"), &format!("token-{who}"));
    }
    write(
        &dir,
        "charter.yaml",
        &format!(
            "worker: {{ lease: 2s, poll_interval: 50ms }}\nconnectors:\n  desk:\n    type: http\n    base_url: http://{sink_addr}\n    allow_private: true\n    timeout: 2s\ntokens:\n  - {{ name: root, role: admin, secret: file:secrets/root }}\n  - {{ name: lead, role: reviewer, secret: file:secrets/lead }}\n  - {{ name: view, role: viewer, secret: file:secrets/view }}\n"
        ),
    );
    write(
        &dir,
        "charters/gated.yaml",
        &operator_charter(
            "gated",
            "live",
            "{ reviewers: [lead], expires: 1h }",
            "escalate",
        ),
    );
    write(
        &dir,
        "charters/trial.yaml",
        &operator_charter("trial", "shadow", "auto", "other"),
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Server::start(&dir, port);
    let http = reqwest::Client::new();
    wait_healthy(&http, &base).await;
    let send = |charter: &'static str, id: i64, subject: &'static str| {
        let http = http.clone();
        let url = format!("{base}/hooks/{charter}");
        async move {
            let r = http
                .post(url)
                .json(&json!({"ticket": {"id": id, "subject": subject}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    // `charter <args> --server base --token token-<who>`.
    let as_who = |who: &str, args: &[&str]| {
        let token = format!("token-{who}");
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", base.as_str(), "--token", token.as_str()]);
        charter(&all)
    };
    let json_of = |out: &str| -> Value {
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    };
    let wait_status = |id: String, want: &'static str| {
        let base = base.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (_, out, _) = charter(&[
                    "events",
                    "list",
                    "--json",
                    "--limit",
                    "100",
                    "--server",
                    &base,
                    "--token",
                    "token-root",
                ]);
                let events: Value = serde_json::from_str(&out).unwrap();
                let status = events
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["id"] == id.as_str())
                    .map(|e| e["status"].as_str().unwrap().to_string());
                if status.as_deref() == Some(want) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{id} never became {want} ({status:?})"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // Approvals: listed, refused to a viewer, approved by the reviewer; the PUT goes out.
    let first = send("gated", 1, "refund please").await;
    wait_status(first.clone(), "waiting").await;
    let (code, out, err) = as_who("view", &["approvals", "--json"]);
    assert_eq!(code, 0, "{err}");
    let approvals = json_of(&out);
    assert_eq!(approvals.as_array().unwrap().len(), 1, "{approvals}");
    let approval = approvals[0]["id"].as_str().unwrap().to_string();
    let (code, _, err) = as_who("view", &["approve", &approval]);
    assert_eq!(code, 1, "a viewer may not approve");
    assert!(err.contains("403"), "{err}");
    let (code, _, err) = as_who("lead", &["approve", &approval]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("approved {approval}")), "{err}");
    wait_status(first.clone(), "done").await;
    assert_eq!(requests_to(&sink, "/tickets/1"), 1);
    // A rejection with its reason: the action never runs.
    let second = send("gated", 2, "refund again").await;
    wait_status(second.clone(), "waiting").await;
    let (_, out, _) = as_who("lead", &["approvals", "--json"]);
    let approval = json_of(&out)[0]["id"].as_str().unwrap().to_string();
    let (code, _, err) = as_who(
        "lead",
        &["reject", &approval, "--reason", "duplicate refund"],
    );
    assert_eq!(code, 0, "{err}");
    wait_status(second.clone(), "done").await;
    assert_eq!(requests_to(&sink, "/tickets/2"), 0);

    // Escalations: decided with a label, the run continues with it.
    let third = send("gated", 3, "hello").await;
    wait_status(third.clone(), "waiting").await;
    let (code, out, err) = as_who("lead", &["escalations", "--json"]);
    assert_eq!(code, 0, "{err}");
    let escalations = json_of(&out);
    assert_eq!(escalations.as_array().unwrap().len(), 1, "{escalations}");
    let escalation = escalations[0]["id"].as_str().unwrap().to_string();
    let (code, _, err) = as_who("lead", &["decide", &escalation, "--label", "other"]);
    assert_eq!(code, 0, "{err}");
    wait_status(third.clone(), "done").await;
    // The correction becomes a training example, once.
    let examples = dir.join("data/examples.csv");
    write(
        &dir,
        "data/examples.csv",
        "text,label\nrefund please,billing\n",
    );
    let file = examples.to_str().unwrap();
    let (code, _, err) = as_who(
        "view",
        &["export-corrections", "gated", "--merge-into", file],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("added 1 of 1 correction(s)"), "{err}");
    let (code, _, err) = as_who(
        "view",
        &["export-corrections", "gated", "--merge-into", file],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("added 0 of 1 correction(s)"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&examples).unwrap(),
        "text,label\nrefund please,billing\nhello,other\n"
    );

    // Routes: listed with their modes; a route's mode set from the CLI (admin only).
    let (code, out, err) = as_who("view", &["routes", "gated", "--json"]);
    assert_eq!(code, 0, "{err}");
    let routes = json_of(&out);
    assert_eq!(routes["routes"][0]["name"], "route-1", "{routes}");
    assert_eq!(routes["routes"][0]["mode"], "live", "{routes}");
    let (code, _, err) = as_who("lead", &["route-mode", "gated", "route-1", "shadow"]);
    assert_eq!(code, 1, "a reviewer may not change a route's mode");
    assert!(err.contains("403"), "{err}");
    let (code, out, err) = as_who(
        "root",
        &[
            "route-mode",
            "gated",
            "route-1",
            "shadow",
            "--reason",
            "watch it",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "shadow");
    let (code, out, err) = as_who("view", &["routes", "gated"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("route-1") && l.contains("shadow") && l.contains("set by root")),
        "{out}"
    );
    assert!(
        out.contains("not enough reviewed: 0 of the 30 needed"),
        "{out}"
    );
    let (code, _, err) = as_who("root", &["route-mode", "gated", "route-1", "file"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = as_who("view", &["export-rewrites", "gated"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "", "no approved draft yet");
    assert!(err.contains("0 rewrite(s)"), "{err}");

    // Pause keeps accepting and storing; resume processes.
    let (code, _, err) = as_who("root", &["pause", "gated"]);
    assert_eq!(code, 0, "{err}");
    let fourth = send("gated", 4, "hello again").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_status(fourth.clone(), "pending").await;
    let (code, _, err) = as_who("root", &["resume", "gated"]);
    assert_eq!(code, 0, "{err}");
    wait_status(fourth.clone(), "waiting").await;

    // Promote a shadow charter: the next refund executes; `mode ... shadow` goes back.
    let shadowed = send("trial", 5, "refund").await;
    wait_status(shadowed, "done").await;
    assert_eq!(requests_to(&sink, "/tickets/5"), 0);
    let (code, _, err) = as_who("lead", &["promote", "trial"]);
    assert_eq!(code, 1, "a reviewer may not promote: {err}");
    let (code, _, err) = as_who("root", &["promote", "trial"]);
    assert_eq!(code, 0, "{err}");
    let live = send("trial", 6, "refund").await;
    wait_status(live, "done").await;
    assert_eq!(requests_to(&sink, "/tickets/6"), 1);
    let (code, _, err) = as_who("root", &["mode", "trial", "shadow"]);
    assert_eq!(code, 0, "{err}");
    let again = send("trial", 7, "refund").await;
    wait_status(again, "done").await;
    assert_eq!(requests_to(&sink, "/tickets/7"), 0);

    // The record: the timeline, the audit log and the report say what happened.
    let (code, out, err) = as_who("view", &["events", "show", &first]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("assign") && out.contains("billing"), "{out}");
    let (code, out, err) = as_who("root", &["audit", "--json"]);
    assert_eq!(code, 0, "{err}");
    let actions: Vec<String> = json_of(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "approval.approve",
        "approval.reject",
        "escalation.resolve",
        "charter.pause",
        "charter.resume",
        "charter.mode",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} not in {actions:?}"
        );
    }
    let (code, out, err) = as_who("view", &["report", "gated", "--json"]);
    assert_eq!(code, 0, "{err}");
    let report = json_of(&out);
    assert!(report.is_object(), "{report}");
    let text = report.to_string();
    assert!(
        text.contains("approval") && text.contains("escalation"),
        "{text}"
    );

    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A second `serve` on a SQLite store that one already serves is refused with the reason;
/// once the first is gone (even by SIGKILL, leaving its lock file), a new one starts. The
/// CLI finds the server from the project's `server.listen` (`--project`, `send --dir`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_one_sqlite_store_is_refused_and_the_cli_finds_the_server() {
    charter_connect::install_crypto_provider();
    let dir = temp_dir("lock");
    let proj = dir.join("proj");
    assert!(
        Command::new(bin())
            .arg("init")
            .arg(&proj)
            .output()
            .unwrap()
            .status
            .success()
    );
    let port = free_port();
    let yaml = std::fs::read_to_string(proj.join("charter.yaml")).unwrap();
    write(
        &proj,
        "charter.yaml",
        &yaml.replace(
            "listen: 127.0.0.1:8080",
            &format!("listen: 127.0.0.1:{port}"),
        ),
    );
    // The `note` action's template needs a field the sample lacks: the run fails, and the
    // server log says so in one WARN line.
    let charter = std::fs::read_to_string(proj.join("charters/support-triage.yaml")).unwrap();
    write(
        &proj,
        "charters/support-triage.yaml",
        &charter.replace(
            "log: \"ticket {{ payload.ticket.id }} classified as {{ decision.label }}\"",
            "log: \"ticket {{ payload.ticket.no_such_field }}\"",
        ),
    );
    let serve = |port: u16| {
        Command::new(bin())
            .arg("serve")
            .arg(&proj)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("SUPPORT_WEBHOOK_SECRET", "lock-test-secret")
            .env("CHARTER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let client = reqwest::Client::new();
    let mut first = Server { child: serve(port) };
    wait_healthy(&client, &format!("http://127.0.0.1:{port}")).await;

    let second = serve(free_port()).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is already served by another `charter serve`")
            && stderr.contains("charter.db.lock"),
        "{stderr}"
    );

    // No --server: the project's server.listen says where it is.
    let out = Command::new(bin())
        .args(["send", "support-triage"])
        .arg(proj.join("samples/ticket.json"))
        .arg("--dir")
        .arg(&proj)
        .env("SUPPORT_WEBHOOK_SECRET", "lock-test-secret")
        .env_remove("CHARTER_SERVER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin())
        .args(["events", "list", "--json", "--project"])
        .arg(&proj)
        .env_remove("CHARTER_SERVER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let event_id = listed[0]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new(bin())
            .args(["events", "list", "--json", "--project"])
            .arg(&proj)
            .output()
            .unwrap();
        let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if listed[0]["status"] == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "the run never failed: {listed}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A crash leaves the lock file behind; it does not block the next server.
    first.kill9();
    let mut log = String::new();
    std::io::Read::read_to_string(first.child.stderr.as_mut().unwrap(), &mut log).unwrap();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("run did not complete"))
        .collect();
    assert_eq!(warns.len(), 1, "one WARN line per failed run: {log}");
    assert!(
        warns[0].contains(&event_id) && warns[0].contains("no_such_field"),
        "the line names the event and the reason: {}",
        warns[0]
    );
    assert!(proj.join("charter.db.lock").exists());
    let port2 = free_port();
    let _third = Server {
        child: serve(port2),
    };
    wait_healthy(&client, &format!("http://127.0.0.1:{port2}")).await;
    let _ = std::fs::remove_dir_all(&dir);
}
