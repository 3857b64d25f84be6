//! The Slack connector against a Slack-shaped local endpoint (webhook and bot token).

use super::*;

// ---------------------------------------------------------------------------------------
// Slack

#[derive(Clone, Default)]
struct SlackSeen {
    messages: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

async fn start_slack() -> (String, SlackSeen) {
    let seen = SlackSeen::default();
    let app = Router::new()
        .route(
            "/services/T1/B2/xyz",
            post(
                |State(s): State<SlackSeen>, body: axum::Json<serde_json::Value>| async move {
                    s.messages.lock().unwrap().push(("webhook".into(), body.0));
                    "ok"
                },
            ),
        )
        .route(
            "/api/chat.postMessage",
            post(
                |State(s): State<SlackSeen>,
                 headers: HeaderMap,
                 body: axum::Json<serde_json::Value>| async move {
                    let auth = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if auth != "Bearer xoxb-SENSITIVE" {
                        return axum::Json(json!({"ok": false, "error": "invalid_auth"}));
                    }
                    if body.0["channel"] != "#ops" {
                        return axum::Json(json!({"ok": false, "error": "channel_not_found"}));
                    }
                    s.messages.lock().unwrap().push(("bot".into(), body.0));
                    axum::Json(json!({"ok": true, "ts": "1.2"}))
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn slack_webhook_and_bot_token_post_messages() {
    let (base, seen) = start_slack().await;
    let exec = HttpExecutor::new().unwrap();
    let hook = SlackConnector {
        name: "slack".into(),
        auth: SlackAuth::Webhook(Secret::new(format!("{base}/services/T1/B2/xyz"))),
        timeout: Duration::from_secs(5),
        allow_private: true,
    };
    let req = hook.prepare(None, "Cancellation risk: Acme", "k1").unwrap();
    let out = hook.attempt(&exec, &req).await;
    assert!(out.ok, "{out:?}");

    let bot = SlackConnector {
        name: "slack".into(),
        auth: SlackAuth::Bot {
            token: Secret::new("xoxb-SENSITIVE"),
            base_url: format!("{base}/api"),
        },
        timeout: Duration::from_secs(5),
        allow_private: true,
    };
    let req = bot.prepare(Some("#ops"), "hello ops", "k2").unwrap();
    assert!(!format!("{req:?}").contains("SENSITIVE"));
    assert!(bot.attempt(&exec, &req).await.ok);

    // Slack answers 200 {"ok": false}: a failure with Slack's reason, not retried.
    let req = bot.prepare(Some("#nowhere"), "lost", "k3").unwrap();
    let out = bot.attempt(&exec, &req).await;
    assert!(!out.ok);
    assert!(!out.retryable);
    assert_eq!(
        out.error.as_deref(),
        Some("Slack refused the message: channel_not_found")
    );
    assert!(bot.prepare(None, "no channel", "k4").is_err());

    let msgs = seen.messages.lock().unwrap().clone();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].0, "webhook");
    assert_eq!(msgs[0].1["text"], "Cancellation risk: Acme");
    assert_eq!(msgs[1].1, json!({"channel": "#ops", "text": "hello ops"}));
}

#[tokio::test]
async fn slack_webhook_on_a_private_address_needs_allow_private() {
    let (base, seen) = start_slack().await;
    let exec = HttpExecutor::new().unwrap();
    let hook = SlackConnector {
        name: "slack".into(),
        auth: SlackAuth::Webhook(Secret::new(format!("{base}/services/T1/B2/xyz"))),
        timeout: Duration::from_secs(5),
        allow_private: false,
    };
    let req = hook.prepare(None, "x", "k").unwrap();
    let out = hook.attempt(&exec, &req).await;
    assert!(!out.ok && !out.retryable);
    assert!(seen.messages.lock().unwrap().is_empty());
}
