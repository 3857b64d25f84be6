//! Slack's interactive callback (`POST /slack/interactive`): a button press of a
//! notification ([`crate::notify`]) decides the item as the web UI would.
//!
//! The request is verified with a Slack connector's `signing_secret` (v0 HMAC-SHA256 over
//! `v0:{timestamp}:{body}`, 5-minute window, constant-time compare; 401 and nothing done
//! otherwise). The Slack user must be listed in that connector's `users:`, which maps them
//! to a token: they decide with its role, charter scopes and reviewer name, through the same
//! operations ([`ops::approvals::approve`], [`ops::approvals::reject`],
//! [`ops::escalations::decide`]) the API and UI use, and the audit log records
//! `slack:<user id>`. Anyone else gets an ephemeral refusal and nothing changes. Reject
//! opens a dialog asking for the reason (`views.open`); its `view_submission` rejects with
//! that reason and replaces the message through the press's `response_url`. Answers go out
//! through the server's one HTTP client ([`AppState::executor`]).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use charter_connect::{Connection, HttpExecutor};
use charter_core::config::{ConnectorKind, Role};
use charter_core::verify::{self, VerifySpec};
use charter_store::Store;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Caller;
use crate::notify::slack_escape;
use crate::ops::{self, OpError};
use crate::{AppState, Runtime, now_millis};

/// Where Slack sends button presses (the Slack app's Interactivity "Request URL").
pub const SLACK_INTERACTIVE_PATH: &str = "/slack/interactive";

/// The Slack connector whose signing secret signed this request, if any.
fn verified_connector<'a>(
    runtime: &'a Runtime,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<&'a str> {
    let headers: verify::Headers = headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().to_ascii_lowercase(),
                v.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    let spec = VerifySpec::Slack {
        tolerance: verify::DEFAULT_TOLERANCE,
    };
    let now = now_millis() / 1000;
    let mut found = None;
    // Every secret is tried (no early exit), each compare constant-time.
    for (name, secret) in &runtime.slack_signing_secrets {
        if verify::verify(&spec, std::slice::from_ref(secret), &headers, body, now).is_ok()
            && found.is_none()
        {
            found = Some(name.as_str());
        }
    }
    found
}

/// The reviewer a Slack user acts as, through the connector's `users:` mapping.
fn slack_caller(runtime: &Runtime, connector: &str, user: &str) -> Option<Caller> {
    let ConnectorKind::Slack(s) = &runtime.project.connectors.get(connector)?.kind else {
        return None;
    };
    let name = s.users.get(user)?;
    let actor = format!("slack:{user}");
    if runtime.tokens.is_empty() {
        // Open mode: listed users act like the open UI.
        return Some(Caller {
            name: actor,
            role: Role::Admin,
            charters: vec![],
            reviewer_as: Some(name.clone()),
        });
    }
    let (def, _) = runtime.tokens.iter().find(|(d, _)| &d.name == name)?;
    Some(Caller {
        name: actor,
        role: def.role,
        charters: def.charters.clone(),
        reviewer_as: Some(def.name.clone()),
    })
}

/// What a button press asks for.
#[derive(Debug, PartialEq)]
enum Ask {
    Approve(String),
    Reject(String),
    Decide {
        escalation: String,
        label: String,
    },
    /// The "Open in Charter" link button, or an action this server does not know.
    Nothing,
}

fn ask_of(action: &Value) -> Ask {
    let id = action["action_id"].as_str().unwrap_or_default();
    let value = action["value"]
        .as_str()
        .or(action["selected_option"]["value"].as_str())
        .unwrap_or_default();
    match (id, value.split_once(':')) {
        ("charter_approve", Some(("approval", item))) => Ask::Approve(item.to_string()),
        ("charter_reject", Some(("approval", item))) => Ask::Reject(item.to_string()),
        ("charter_decide", Some(("escalation", rest))) => match rest.split_once(':') {
            Some((item, label)) => Ask::Decide {
                escalation: item.to_string(),
                label: label.to_string(),
            },
            None => Ask::Nothing,
        },
        _ => Ask::Nothing,
    }
}

fn refusal(e: &OpError) -> String {
    match e {
        OpError::Forbidden => {
            "You may not decide this item (your role or the approval's reviewers do not allow it)."
                .into()
        }
        OpError::NotFound => "This item does not exist or is not visible to you.".into(),
        OpError::Conflict(m) | OpError::Invalid(m) => m.clone(),
        _ => "Charter could not record the decision (internal error); try the web UI.".into(),
    }
}

/// `POST /slack/interactive`: a verified button press decides the item as the UI would.
pub async fn slack_interactive<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(connector) = verified_connector(&state.runtime, &headers, &body) else {
        tracing::warn!("Slack interactive callback refused: signature missing, stale or wrong");
        return (StatusCode::UNAUTHORIZED, "invalid Slack signature").into_response();
    };
    let payload = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "payload")
        .and_then(|(_, v)| serde_json::from_str::<Value>(&v).ok());
    let Some(payload) = payload else {
        return (
            StatusCode::BAD_REQUEST,
            "expected a form field `payload` holding JSON",
        )
            .into_response();
    };
    match payload["type"].as_str() {
        Some("block_actions") => {}
        Some("view_submission") => return reject_submission(&state, connector, &payload).await,
        _ => return StatusCode::OK.into_response(),
    }
    let user = payload["user"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let user_name = payload["user"]["username"]
        .as_str()
        .or(payload["user"]["name"].as_str())
        .unwrap_or(&user)
        .to_string();
    let response_url = payload["response_url"].as_str().map(str::to_string);
    let ask = payload["actions"]
        .as_array()
        .and_then(|a| a.first())
        .map(ask_of)
        .unwrap_or(Ask::Nothing);
    if ask == Ask::Nothing {
        return StatusCode::OK.into_response();
    }
    let Some(caller) = slack_caller(&state.runtime, connector, &user) else {
        tracing::warn!(connector, slack_user = %user, "Slack user not mapped in `users:`; decision refused");
        let text = format!(
            "You are not allowed to decide from Slack: your Slack user `{user}` is not listed under `users:` of connector `{connector}` in charter.yaml."
        );
        return answer(&state, connector, response_url, false, text).await;
    };
    let result = match &ask {
        Ask::Approve(id) => ops::approvals::approve(&state, &caller, id, Ok(None))
            .await
            .map(|_| format!("Approved by <@{user}>. The action runs now.")),
        Ask::Reject(id) => {
            let trigger = payload["trigger_id"].as_str();
            match reject_dialog(&state, connector, &caller, id, trigger, &response_url).await {
                Ok(()) => return StatusCode::OK.into_response(),
                Err(Some(text)) => {
                    return answer(&state, connector, response_url, false, text).await;
                }
                // A connector without a bot token cannot open a dialog: the press rejects
                // with a reason naming the reviewer, as the button said.
                Err(None) => {
                    let reason = format!("rejected in Slack by {user_name}");
                    ops::approvals::reject(&state, &caller, id, Ok(reason))
                        .await
                        .map(|_| format!("Rejected by <@{user}>."))
                }
            }
        }
        Ask::Decide { escalation, label } => {
            let decision = ops::escalations::Decision {
                label: label.clone(),
                fields: Default::default(),
            };
            ops::escalations::decide(&state, &caller, escalation, Ok(decision))
                .await
                .map(|_| {
                    format!(
                        "Decided `{}` by <@{user}>; the run continues.",
                        slack_escape(label)
                    )
                })
        }
        Ask::Nothing => return StatusCode::OK.into_response(),
    };
    match result {
        Ok(text) => {
            tracing::info!(connector, slack_user = %user, ?ask, "decided from Slack");
            answer(&state, connector, response_url, true, text).await
        }
        Err(e) => {
            tracing::info!(connector, slack_user = %user, ?ask, error = %e, "Slack decision refused");
            answer(&state, connector, response_url, false, refusal(&e)).await
        }
    }
}

/// The `callback_id` of the dialog asking for a rejection's reason.
const REJECT_DIALOG: &str = "charter_reject";

/// Ask the reviewer who pressed Reject for the reason, in a Slack modal (`views.open`). The
/// decision is checked first, so nobody is asked for a reason in vain; the modal carries the
/// approval and the message's `response_url` in its `private_metadata`.
///
/// `Err(Some(text))`: tell the reviewer `text`, nothing changes. `Err(None)`: the connector
/// posts through an incoming webhook and cannot open dialogs.
async fn reject_dialog<S: Store>(
    state: &AppState<S>,
    connector: &str,
    caller: &Caller,
    id: &str,
    trigger_id: Option<&str>,
    response_url: &Option<String>,
) -> Result<(), Option<String>> {
    if let Err(e) = ops::approvals::check_decidable(state, caller, id).await {
        return Err(Some(refusal(&e)));
    }
    let slack = match state.runtime.connections.get(connector).map(|c| c.as_ref()) {
        Some(Connection::Slack(s)) => s,
        _ => return Err(None),
    };
    if !matches!(slack.auth, charter_connect::slack::SlackAuth::Bot { .. }) {
        return Err(None);
    }
    let unavailable = |why: &str| {
        Some(format!(
            "Charter could not ask for a reason ({why}); reject in the web UI instead."
        ))
    };
    let Some(trigger_id) = trigger_id else {
        return Err(unavailable("Slack sent no trigger_id"));
    };
    let metadata = json!({ "approval": id, "response_url": response_url }).to_string();
    let view = json!({
        "trigger_id": trigger_id,
        "view": {
            "type": "modal",
            "callback_id": REJECT_DIALOG,
            "private_metadata": metadata,
            "title": {"type": "plain_text", "text": "Reject"},
            "submit": {"type": "plain_text", "text": "Reject"},
            "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [{
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Why is it rejected?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "reason",
                    "multiline": true,
                    "max_length": 2000
                }
            }]
        }
    });
    let key = format!("slack-view-{}", Uuid::now_v7());
    let req = match slack.prepare_api("views.open", view, &key) {
        Ok(req) => req,
        Err(e) => return Err(unavailable(&e.to_string())),
    };
    let out = slack.attempt(&state.executor, &req).await;
    if out.ok {
        Ok(())
    } else {
        let why = out.error.unwrap_or_else(|| "views.open failed".into());
        tracing::warn!(connector, error = %why, "opening Slack's reject dialog failed");
        Err(unavailable(&why))
    }
}

/// The reason dialog was submitted: reject as the UI would, with that reason. The answer is
/// empty (Slack closes the modal) or names the problem next to the reason field; the
/// original message is replaced through its `response_url`.
async fn reject_submission<S: Store>(
    state: &AppState<S>,
    connector: &str,
    payload: &Value,
) -> Response {
    let view = &payload["view"];
    if view["callback_id"].as_str() != Some(REJECT_DIALOG) {
        return StatusCode::OK.into_response();
    }
    let in_dialog = |text: String| {
        (
            StatusCode::OK,
            Json(json!({ "response_action": "errors", "errors": { "reason": text } })),
        )
            .into_response()
    };
    let user = payload["user"]["id"].as_str().unwrap_or_default();
    let metadata: Value = view["private_metadata"]
        .as_str()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or(Value::Null);
    let Some(id) = metadata["approval"].as_str() else {
        return in_dialog("This dialog does not name an approval; reject in the web UI.".into());
    };
    let response_url = metadata["response_url"].as_str().map(str::to_string);
    let reason = view["state"]["values"]["reason"]["reason"]["value"]
        .as_str()
        .unwrap_or_default()
        .trim();
    if reason.is_empty() {
        return in_dialog("A rejection needs a reason.".into());
    }
    let Some(caller) = slack_caller(&state.runtime, connector, user) else {
        tracing::warn!(connector, slack_user = %user, "Slack user not mapped in `users:`; rejection refused");
        return in_dialog(format!(
            "Your Slack user `{user}` is not listed under `users:` of connector `{connector}`."
        ));
    };
    match ops::approvals::reject(state, &caller, id, Ok(reason.to_string())).await {
        Ok(_) => {
            tracing::info!(connector, slack_user = %user, approval = id, "rejected from Slack");
            let text = format!("Rejected by <@{user}>: {}", slack_escape(reason));
            let update = json!({ "replace_original": true, "text": text });
            post_response(state, connector, response_url, &update).await;
            StatusCode::OK.into_response()
        }
        Err(e) => {
            tracing::info!(connector, slack_user = %user, approval = id, error = %e, "Slack rejection refused");
            in_dialog(refusal(&e))
        }
    }
}

/// Tell the Slack user how it went: a decision replaces the message (its buttons go), a
/// refusal is ephemeral (only they see it). Sent through `response_url`, and also as the
/// answer body.
async fn answer<S: Store>(
    state: &AppState<S>,
    connector: &str,
    response_url: Option<String>,
    decided: bool,
    text: String,
) -> Response {
    let body = if decided {
        json!({ "replace_original": true, "text": text })
    } else {
        json!({ "response_type": "ephemeral", "replace_original": false, "text": text })
    };
    post_response(state, connector, response_url, &body).await;
    (StatusCode::OK, Json(body)).into_response()
}

/// Post `body` to a message's `response_url` (if Slack gave one); failures are logged.
async fn post_response<S: Store>(
    state: &AppState<S>,
    connector: &str,
    response_url: Option<String>,
    body: &Value,
) {
    if let Some(url) = response_url {
        let executor = &state.executor;
        let allow_private = match state
            .runtime
            .project
            .connectors
            .get(connector)
            .map(|c| &c.kind)
        {
            Some(ConnectorKind::Slack(s)) => s.allow_private,
            _ => false,
        };
        let key = format!("slack-response-{}", Uuid::now_v7());
        match HttpExecutor::prepare(
            None,
            "POST",
            &url,
            &[],
            Some(body.clone()),
            Some(Duration::from_secs(2)),
            &key,
        ) {
            Ok(mut req) => {
                req.allow_private = allow_private;
                let out = executor.attempt(&req).await;
                if !out.ok {
                    tracing::warn!(connector, status = ?out.status, error = ?out.error, "answering Slack through response_url failed");
                }
            }
            Err(e) => tracing::warn!(connector, error = %e, "Slack's response_url is not usable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn button_values_name_the_item() {
        let a = json!({"action_id": "charter_approve", "value": "approval:0190"});
        assert_eq!(ask_of(&a), Ask::Approve("0190".into()));
        let r = json!({"action_id": "charter_reject", "value": "approval:0190"});
        assert_eq!(ask_of(&r), Ask::Reject("0190".into()));
        let d = json!({"action_id": "charter_decide", "selected_option": {"value": "escalation:0191:billing"}});
        assert_eq!(
            ask_of(&d),
            Ask::Decide {
                escalation: "0191".into(),
                label: "billing".into()
            }
        );
        let open = json!({"action_id": "charter_open", "url": "https://x"});
        assert_eq!(ask_of(&open), Ask::Nothing);
        let forged = json!({"action_id": "charter_approve", "value": "escalation:0191:x"});
        assert_eq!(ask_of(&forged), Ask::Nothing);
    }
}
