//! `type: slack` connectors: an incoming webhook URL or a bot token.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::components::project::ProjectChecker;
use crate::config::diag::Check;
use crate::config::raw::{Location, RawConnector, S};
use crate::config::{ConnectorKind, SecretRef};

/// `type: slack`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackConnector {
    pub auth: SlackAuth,
    pub timeout: Duration,
    /// Allow loopback/private addresses (local test endpoints).
    pub allow_private: bool,
    /// The Slack app's signing secret (`signing_secret:`), which verifies interactive
    /// callbacks (the Approve/Reject buttons of notifications). Without it, button presses
    /// are refused.
    pub signing_secret: Option<SecretRef>,
    /// Slack user id (`U024BE7LH`) -> the name of a token in `tokens:`. A listed user decides
    /// from Slack with that token's role and charter scopes, as that reviewer; the audit log
    /// records `slack:<user id>`. Users not listed cannot decide from Slack. With no tokens
    /// in charter.yaml (open mode) the names are reviewer names and every listed user is an
    /// admin, as in the open UI.
    pub users: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SlackAuth {
    /// `webhook_url: env:NAME` — the incoming-webhook URL is itself the secret.
    Webhook(SecretRef),
    /// `token: env:NAME` for `chat.postMessage` under `base_url` (default Slack's API).
    Bot { token: SecretRef, base_url: String },
}

impl ProjectChecker<'_> {
    pub(crate) fn slack(
        &mut self,
        name: &S<String>,
        at: Location,
        raw: &RawConnector,
        timeout: Duration,
        allow_private: bool,
    ) -> Option<ConnectorKind> {
        let auth = match (&raw.webhook_url, &raw.token) {
            (Some(w), None) => {
                if let Some(b) = &raw.base_url {
                    self.err(
                        b.referenced,
                        "`base_url` goes with `token` (chat.postMessage); a webhook URL is complete",
                    );
                    return None;
                }
                SlackAuth::Webhook(self.secret(w, "webhook_url")?)
            }
            (None, Some(t)) => {
                let token = self.secret(t, "token");
                let base_url = match &raw.base_url {
                    Some(u) => self
                        .absolute_url(u, "base_url")
                        .filter(|_| self.reachable_base_url(u, &name.value, allow_private)),
                    None => Some("https://slack.com/api".to_string()),
                };
                SlackAuth::Bot {
                    token: token?,
                    base_url: base_url?,
                }
            }
            (Some(w), Some(_)) => {
                self.err(
                    w.referenced,
                    "give either `webhook_url` (an incoming webhook) or `token` (a bot token for chat.postMessage), not both",
                );
                return None;
            }
            (None, None) => {
                self.err(
                    at,
                    format!(
                        "slack connector `{}` needs `webhook_url: env:SLACK_WEBHOOK` or `token: env:SLACK_BOT_TOKEN`",
                        name.value
                    ),
                );
                return None;
            }
        };
        let tokens = self.token_names.clone();
        let (signing_secret, users) = self.slack_interactive(raw, tokens.as_ref())?;
        Some(ConnectorKind::Slack(SlackConnector {
            auth,
            timeout,
            allow_private,
            signing_secret,
            users,
        }))
    }
}
