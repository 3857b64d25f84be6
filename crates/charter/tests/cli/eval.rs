//! `charter eval`: the LLM stage and the cascade against a local model, and retrieval.

use super::*;

/// An OpenAI-compatible model on 127.0.0.1 for `charter eval`: `refund` -> billing (0.9),
/// `crash` -> bug (0.8), anything else -> other (0.4). 100 prompt + 20 completion tokens.
async fn eval_model(shutdown: CancellationToken) -> String {
    async fn chat(axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
        let prompt = body["messages"][1]["content"].as_str().unwrap_or_default();
        let (label, confidence) = if prompt.contains("refund") {
            ("billing", 0.9)
        } else if prompt.contains("crash") {
            ("bug", 0.8)
        } else {
            ("other", 0.4)
        };
        let content =
            json!({"label": label, "confidence": confidence, "fields": {}, "reason": "test"});
        axum::Json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content.to_string()}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20},
        }))
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .unwrap();
    });
    format!("http://{addr}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_runs_the_llm_stage_and_the_cascade_against_a_local_model() {
    let shutdown = CancellationToken::new();
    let url = eval_model(shutdown.clone()).await;
    let dir = temp_dir("eval-llm");
    write(
        &dir,
        "charter.yaml",
        &format!(
            "connectors:\n  helpdesk: {{ type: http, base_url: https://helpdesk.example.com }}\nproviders:\n  default: {{ type: openai, base_url: \"{url}\", model: tiny, max_retries: 0, allow_private: true, price: {{ input_per_mtok: 1, output_per_mtok: 2 }} }}\n"
        ),
    );
    write(&dir, "prompts/triage.md", "Classify: {{ text }}");
    write(
        &dir,
        "charters/triage.yaml",
        r#"name: triage
description: eval test
owner: a@example.test
maintainer: b@example.test
system_of_record: helpdesk
mode: shadow
uses: [helpdesk]
trigger:
  webhook: { path: /hooks/triage, verify: none }
decide:
  labels: [billing, bug, other]
  stages:
    - rules:
        - { when: 'payload.text.contains("hello")', label: other }
    - llm: { prompt: prompts/triage.md, accept_above: 0.5 }
  otherwise: escalate
routes:
  - when: "true"
    do: [note]
actions:
  note: { log: "{{ decision.label }}", approval: auto }
escalation: { to: leads }
measure:
  done: [noted]
"#,
    );
    write(
        &dir,
        "cases.csv",
        "text,label\nrefund please,billing\napp crash on start,bug\nhello there,other\nrefund the crash,bug\n",
    );
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || Command::new(bin()).args(args).output().unwrap())
    };
    let common = |stage: &str| {
        vec![
            "eval".to_string(),
            "triage".into(),
            "--cases".into(),
            dir.join("cases.csv").display().to_string(),
            "--dir".into(),
            dir.display().to_string(),
            "--stage".into(),
            stage.into(),
            "--json".into(),
        ]
    };
    let out = run(common("llm")).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["stage"], "llm");
    assert_eq!(r["cases"], 4);
    // refund->billing, crash->bug, hello->other (0.4, below 0.5), "refund the crash"->billing (wrong).
    assert_eq!(r["accuracy"], 0.75);
    assert_eq!(r["abstention_rate"], 0.25);
    assert!(
        (r["accuracy_on_kept"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
        "{r}"
    );
    assert_eq!(r["llm_calls"], 4);
    assert_eq!(r["tokens"], 480);
    assert!(
        (r["cost"].as_f64().unwrap() - (400.0 + 160.0) / 1e6).abs() < 1e-12,
        "{r}"
    );
    let confused = &r["report"]["confusions"][0];
    assert_eq!(
        (
            confused["expected"].as_str(),
            confused["predicted"].as_str()
        ),
        (Some("bug"), Some("billing"))
    );
    let bug = r["report"]["per_label"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == "bug")
        .unwrap();
    assert_eq!(bug["recall"], 0.5);

    // Out-of-scope cases (a label the stage cannot give) and a suggested threshold.
    write(
        &dir,
        "oos.csv",
        "text,label\nrefund please,billing\napp crash on start,bug\nwin a prize,spam\nrefund the crash,bug\n",
    );
    let with_cases = |extra: &[&str]| {
        let mut a = common("llm");
        a[3] = dir.join("oos.csv").display().to_string();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let out = run(with_cases(&["--target-oos-recall", "1"]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            r["in_scope_cases"].as_u64(),
            r["out_of_scope_cases"].as_u64()
        ),
        (Some(3), Some(1))
    );
    // At accept_above 0.5 the spam case (0.4) escalates; 2 of 3 in scope are kept and right.
    assert_eq!(r["out_of_scope_recall"], 1.0);
    assert!((r["in_scope_kept_correct"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    // The lowest threshold escalating every out-of-scope case is 0.8 (0.4 is kept at 0.4).
    assert_eq!(r["suggested"]["accept_above"], 0.8, "{r}");
    assert_eq!(r["suggested"]["coverage"], 0.75);
    assert_eq!(r["suggested"]["out_of_scope_recall"], 1.0);
    let out = run(with_cases(&["--target-coverage", "0.5"]))
        .await
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["suggested"]["accept_above"], 0.9, "{r}");
    assert_eq!(r["suggested"]["coverage"], 0.5);
    let out = run(with_cases(&["--target-escalation", "0.3"]))
        .await
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["suggested"]["accept_above"], 0.9, "{r}");
    assert_eq!(r["suggested"]["escalation_rate"], 0.5);

    // The cascade: the rule takes "hello", the model the rest (3 calls).
    let out = run(common("cascade")).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["stage"], "cascade");
    assert_eq!(r["accuracy"], 0.75);
    assert_eq!(r["abstention_rate"], 0.0);
    assert_eq!(r["llm_calls"], 3);
    assert_eq!(r["tokens"], 360);
    // Per-stage figures: the rules saw all 4 and decided 1 (rightly); the llm saw the other
    // 3, decided all, 2 rightly.
    let stages = r["per_stage"].as_array().unwrap();
    assert_eq!(stages.len(), 2, "{r}");
    assert_eq!(stages[0]["stage"], "rule");
    assert_eq!(
        (
            &stages[0]["consulted"],
            &stages[0]["decided"],
            &stages[0]["correct"],
            &stages[0]["abstained"]
        ),
        (&json!(4), &json!(1), &json!(1), &json!(3))
    );
    assert_eq!(stages[0]["accuracy"], 1.0);
    assert_eq!(stages[1]["stage"], "llm");
    assert_eq!(
        (
            &stages[1]["consulted"],
            &stages[1]["decided"],
            &stages[1]["correct"],
            &stages[1]["abstained"]
        ),
        (&json!(3), &json!(3), &json!(2), &json!(0))
    );
    // Latency is per decision, with the setup apart.
    assert!(r["p99_latency_us"].as_f64().unwrap() >= r["p50_latency_us"].as_f64().unwrap());
    assert!(r["setup_seconds"].as_f64().is_some(), "{r}");
    let cascade_report = r;

    // A baseline from other cases is refused, even with a lower accuracy.
    write(
        &dir,
        "other.csv",
        "text,label\nrefund please,billing\napp crash on start,bug\n",
    );
    let mut args = common("cascade");
    args[3] = dir.join("other.csv").display().to_string();
    let out = run(args).await.unwrap();
    assert!(out.status.success());
    let mut other: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(other["cases_digest"], cascade_report["cases_digest"]);
    other["accuracy"] = json!(0.0);
    write(&dir, "other-base.json", &other.to_string());
    let mut args = common("cascade");
    args.extend([
        "--baseline".to_string(),
        dir.join("other-base.json").display().to_string(),
    ]);
    let out = run(args).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("measured on other cases"), "{err}");
    // So is one without a digest.
    write(&dir, "base.json", "{\"accuracy\": 0.1}");
    let mut args = common("cascade");
    args.extend([
        "--baseline".to_string(),
        dir.join("base.json").display().to_string(),
    ]);
    let out = run(args).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no `cases_digest`"));

    // The same cases pass against themselves ...
    write(&dir, "same.json", &cascade_report.to_string());
    let mut args = common("cascade");
    args.extend([
        "--baseline".to_string(),
        dir.join("same.json").display().to_string(),
    ]);
    let out = run(args).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and fail on a better accuracy or a lower abstention rate.
    let mut better = cascade_report.clone();
    better["accuracy"] = json!(0.9);
    better["abstention_rate"] = json!(-0.5);
    write(&dir, "better.json", &better.to_string());
    let mut args = common("cascade");
    args.extend([
        "--baseline".to_string(),
        dir.join("better.json").display().to_string(),
    ]);
    let out = run(args).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("regression: accuracy 0.7500"), "{err}");
    assert!(err.contains("regression: abstention_rate 0.0000"), "{err}");
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `charter eval --stage retrieval` over the knowledge example: the documents answering the
/// example's questions are found (recall@5 and MRR from the real index), and the exported
/// passages are the indexed ones.
#[test]
fn eval_retrieval_reports_recall_and_mrr_for_the_knowledge_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/knowledge");
    let out_dir = temp_dir("eval-retrieval");
    let passages = out_dir.join("passages.jsonl");
    let out = Command::new(bin())
        .args(["eval", "answers", "--stage", "retrieval", "--json", "--dir"])
        .arg(&root)
        .arg("--cases")
        .arg(root.join("cases/questions.jsonl"))
        .arg("--export-passages")
        .arg(&passages)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cases"], 12);
    assert_eq!(v["documents"], 5);
    assert!(v["recall_at_k"].as_f64().unwrap() >= 0.9, "{v}");
    assert!(v["mrr"].as_f64().unwrap() >= 0.8, "{v}");
    let ranks = v["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 12);
    let exported = std::fs::read_to_string(&passages).unwrap();
    assert_eq!(
        exported.lines().count() as u64,
        v["passages"].as_u64().unwrap()
    );
    assert!(exported.contains("\"doc_key\":\"returns.md\""));
    // A charter without a retrieve step is refused with a clear message.
    let out = Command::new(bin())
        .args(["eval", "nope", "--stage", "retrieval", "--dir"])
        .arg(&root)
        .arg("--cases")
        .arg(root.join("cases/questions.jsonl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no charter `nope`"));
    let _ = std::fs::remove_dir_all(&out_dir);
}
