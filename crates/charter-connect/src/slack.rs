//! Slack messages: through an incoming-webhook URL, or `chat.postMessage` with a bot token.
//!
//! Both go through [`HttpExecutor`] (SSRF guard, timeouts, capped bodies). Slack's Web API
//! answers `200 {"ok": false, "error": "..."}` for most failures, so the body is checked:
//! `ratelimited` and server-side errors are retryable, everything else is permanent.

use std::time::Duration;

use crate::connector::{ResolvedAuth, ResolvedHttpConnector, Secret};
use crate::http::{AttemptOutcome, ConnectError, HttpExecutor, HttpRequest};

/// Slack's Web API root.
pub const SLACK_API: &str = "https://slack.com/api";

/// How messages reach Slack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackAuth {
    /// An incoming-webhook URL (a secret: anyone holding it can post). The channel is fixed
    /// by the webhook.
    Webhook(Secret),
    /// A bot token (`xoxb-...`) for `chat.postMessage` under `base_url`.
    Bot { token: Secret, base_url: String },
}

/// A Slack connector with its secret resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackConnector {
    pub name: String,
    pub auth: SlackAuth,
    pub timeout: Duration,
    /// Allow loopback/private destinations (local test endpoints only).
    pub allow_private: bool,
}

impl SlackConnector {
    /// The request posting `text` (to `channel`, required with a bot token).
    pub fn prepare(
        &self,
        channel: Option<&str>,
        text: &str,
        idempotency_key: &str,
    ) -> Result<HttpRequest, ConnectError> {
        self.prepare_blocks(channel, text, None, idempotency_key)
    }

    /// The request posting a Block Kit message: `blocks` (an array), with `text` as the
    /// notification fallback (to `channel`, required with a bot token).
    pub fn prepare_blocks(
        &self,
        channel: Option<&str>,
        text: &str,
        blocks: Option<&serde_json::Value>,
        idempotency_key: &str,
    ) -> Result<HttpRequest, ConnectError> {
        let channel = channel.map(str::trim).filter(|c| !c.is_empty());
        let mut req = match &self.auth {
            SlackAuth::Webhook(url) => {
                let mut body = serde_json::json!({ "text": text });
                if let Some(b) = blocks {
                    body["blocks"] = b.clone();
                }
                if let Some(c) = channel {
                    // Legacy webhooks honour it; app webhooks ignore it.
                    body["channel"] = c.into();
                }
                let mut r = HttpExecutor::prepare(
                    None,
                    "POST",
                    url.expose(),
                    &[],
                    Some(body),
                    Some(self.timeout),
                    idempotency_key,
                )?;
                // The whole URL is the secret; the request is recorded without it.
                r.allow_private = self.allow_private;
                r
            }
            SlackAuth::Bot { .. } => {
                let Some(channel) = channel else {
                    return Err(ConnectError::InvalidUrl(
                        "chat.postMessage needs a channel".into(),
                    ));
                };
                let mut body = serde_json::json!({ "channel": channel, "text": text });
                if let Some(b) = blocks {
                    body["blocks"] = b.clone();
                }
                self.prepare_api("chat.postMessage", body, idempotency_key)?
            }
        };
        req.allow_private = self.allow_private;
        Ok(req)
    }

    /// A Web API call (`method` such as `views.open`) with a JSON body, under the bot
    /// token. An incoming webhook can only post messages, so other calls need a bot token.
    pub fn prepare_api(
        &self,
        method: &str,
        body: serde_json::Value,
        idempotency_key: &str,
    ) -> Result<HttpRequest, ConnectError> {
        let SlackAuth::Bot { token, base_url } = &self.auth else {
            return Err(ConnectError::InvalidUrl(format!(
                "Slack's {method} needs a bot token (connector `{}` posts through an incoming webhook)",
                self.name
            )));
        };
        let c = ResolvedHttpConnector {
            name: self.name.clone(),
            base_url: base_url.clone(),
            headers: vec![],
            auth: Some(ResolvedAuth::Bearer(token.clone())),
            timeout: self.timeout,
            allow_private: self.allow_private,
        };
        let mut req = HttpExecutor::prepare(
            Some(&c),
            "POST",
            &format!("/{method}"),
            &[(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            Some(body),
            Some(self.timeout),
            idempotency_key,
        )?;
        req.allow_private = self.allow_private;
        Ok(req)
    }

    /// Send once and classify, including Slack's `{"ok": false}` answers.
    pub async fn attempt(&self, executor: &HttpExecutor, req: &HttpRequest) -> AttemptOutcome {
        let mut out = executor.attempt(req).await;
        if !out.ok {
            return out;
        }
        match &self.auth {
            SlackAuth::Webhook(_) => {}
            SlackAuth::Bot { .. } => {
                let v: Option<serde_json::Value> = serde_json::from_slice(&out.body).ok();
                let ok = v
                    .as_ref()
                    .and_then(|v| v.get("ok"))
                    .and_then(|o| o.as_bool());
                if ok != Some(true) {
                    let error = v
                        .as_ref()
                        .and_then(|v| v.get("error"))
                        .and_then(|e| e.as_str())
                        .filter(|e| e.len() < 80)
                        .unwrap_or("an answer without ok: true")
                        .to_string();
                    out.ok = false;
                    out.retryable = matches!(
                        error.as_str(),
                        "ratelimited"
                            | "internal_error"
                            | "fatal_error"
                            | "service_unavailable"
                            | "request_timeout"
                    );
                    out.error = Some(format!("Slack refused the message: {error}"));
                }
            }
        }
        out
    }
}
