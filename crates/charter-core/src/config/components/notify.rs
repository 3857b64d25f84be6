//! `escalation: { notify: ... }` of a charter: where new approvals and escalations are
//! announced, and the Slack connector settings for deciding them from Slack.
//!
//! ```yaml
//! escalation:
//!   to: support-leads
//!   notify: [slack:#support-approvals, ops-hook:/charter, mail:leads@acme.example]
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::config::SecretRef;
use crate::config::components::charter::{CharterChecker, Known};
use crate::config::components::project::ProjectChecker;
use crate::config::diag::Check;
use crate::config::raw::{Entries, Location, OneOrList, RawConnector, S};

/// One destination of approval and escalation notifications: `connector` or
/// `connector:where`, the connector being in the charter's `uses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    /// The target as written (`slack:#approvals`); it names the target in the outbox.
    pub spec: String,
    pub connector: String,
    pub channel: NotifyChannel,
}

/// How a notification reaches its target, by connector type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyChannel {
    /// An `http` connector: a JSON `POST` (with a human-readable `text`, the item and a UI
    /// link) to `path` under its base URL.
    Http { path: Option<String> },
    /// A `slack` connector: a Block Kit message with Approve/Reject buttons, to `channel`
    /// (required with a bot token; an incoming webhook has its own channel).
    Slack { channel: Option<String> },
    /// An `smtp` connector: a plain-text email to these recipients (comma-separated).
    Email { to: String },
}

impl CharterChecker<'_> {
    /// Check `notify:`; `None` when a target is invalid (each problem is reported).
    pub(crate) fn notify_targets(
        &mut self,
        raw: Option<S<OneOrList>>,
        known: &Known,
    ) -> Option<Vec<NotifyTarget>> {
        let Some(raw) = raw else {
            return Some(Vec::new());
        };
        let entries: Vec<(String, Location)> = match raw.value {
            OneOrList::One(t) => vec![(t, raw.referenced)],
            OneOrList::List(l) => l.into_iter().map(|t| (t.value, t.referenced)).collect(),
        };
        let mut out = Vec::new();
        let mut ok = true;
        let mut seen = BTreeSet::new();
        for (text, at) in entries {
            match self.notify_target(text.trim(), at, known) {
                Some(t) => {
                    if !seen.insert(t.spec.clone()) {
                        self.err(at, format!("`notify`: `{}` is listed twice", t.spec));
                        ok = false;
                    }
                    out.push(t);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn notify_target(&mut self, text: &str, at: Location, known: &Known) -> Option<NotifyTarget> {
        let expected = "such as `notify: slack:#approvals`, `notify: ops-hook:/charter` or \
             `notify: mail:leads@acme.example`";
        let (connector, place) = match text.split_once(':') {
            Some((c, p)) => (c.trim(), Some(p.trim()).filter(|p| !p.is_empty())),
            None => (text, None),
        };
        if connector.is_empty() {
            self.err(
                at,
                format!("`notify`: expected a connector name before `:`, {expected}"),
            );
            return None;
        }
        if !known.uses.contains(connector) {
            let list = known
                .uses
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ");
            self.err(
                at,
                format!(
                    "`notify`: connector `{connector}` is not in this charter's `uses` list; expected one of {list}"
                ),
            );
            return None;
        }
        let channel = self.notify_channel(connector, place, at, &ESCALATION_WORDING)?;
        Some(NotifyTarget {
            spec: match place {
                Some(p) => format!("{connector}:{p}"),
                None => connector.to_string(),
            },
            connector: connector.to_string(),
            channel,
        })
    }
}

/// How a `notify:` entry's problems are worded where it is used.
pub(crate) struct NotifyWording {
    /// The example channel after `connector:` for a Slack bot.
    pub slack_channel: &'static str,
    /// What an email entry is called (`target`, `alert`).
    pub email: &'static str,
    /// The example recipients after `connector:`.
    pub recipients: &'static str,
    /// What follows "connector `x` is of type `sql`".
    pub unusable: &'static str,
}

const ESCALATION_WORDING: NotifyWording = NotifyWording {
    slack_channel: "#approvals",
    email: "target",
    recipients: "leads@acme.example",
    unusable: "; notifications go through an `http`, `slack` or `smtp` connector",
};

impl CharterChecker<'_> {
    /// How `connector:place` delivers, by the connector's type: an `http` path, a Slack
    /// channel (required with a bot token) or email recipients. `None` when it cannot (the
    /// problem reported at `at`), or when charter.yaml did not parse or the connector has no
    /// valid type (reported there).
    pub(crate) fn notify_channel(
        &mut self,
        connector: &str,
        place: Option<&str>,
        at: Location,
        wording: &NotifyWording,
    ) -> Option<NotifyChannel> {
        let kind = self.connector_types?.get(connector)?.clone();
        match kind.as_str() {
            "http" => {
                if let Some(p) = place
                    && !p.starts_with('/')
                {
                    self.err(
                        at,
                        format!("`notify`: `{p}` is not a path; expected `{connector}:/path` under the connector's base URL"),
                    );
                    return None;
                }
                Some(NotifyChannel::Http {
                    path: place.map(str::to_string),
                })
            }
            "slack" => {
                // A bot token posts through chat.postMessage, which needs the channel; an
                // incoming webhook's channel is fixed by the webhook.
                if place.is_none() && self.slack_bots.is_some_and(|b| b.contains(connector)) {
                    self.err(
                        at,
                        format!(
                            "`notify`: connector `{connector}` posts with a bot token, which needs a channel, such as `{connector}:{}`",
                            wording.slack_channel
                        ),
                    );
                    return None;
                }
                Some(NotifyChannel::Slack {
                    channel: place.map(str::to_string),
                })
            }
            "smtp" => match place {
                Some(to) if to.contains('@') => Some(NotifyChannel::Email { to: to.to_string() }),
                _ => {
                    self.err(
                        at,
                        format!(
                            "`notify`: an email {} needs its recipients, such as `{connector}:{}`",
                            wording.email, wording.recipients
                        ),
                    );
                    None
                }
            },
            // Not a connector type at all: reported in charter.yaml.
            other if other != "sql" => None,
            other => {
                self.err(
                    at,
                    format!(
                        "`notify`: connector `{connector}` is of type `{other}`{}",
                        wording.unusable
                    ),
                );
                None
            }
        }
    }
}

impl ProjectChecker<'_> {
    /// `signing_secret:` and `users:` of a Slack connector. `tokens` are the token names of
    /// charter.yaml (`None` when there are none: open mode, any reviewer name goes).
    pub(crate) fn slack_interactive(
        &mut self,
        raw: &RawConnector,
        tokens: Option<&BTreeSet<String>>,
    ) -> Option<(Option<SecretRef>, BTreeMap<String, String>)> {
        let secret = match &raw.signing_secret {
            Some(s) => Some(self.secret(s, "signing_secret")?),
            None => None,
        };
        let mut users = BTreeMap::new();
        let mut ok = true;
        if let Some(list) = &raw.users {
            if secret.is_none() {
                self.err(
                    list.referenced,
                    "`users` needs `signing_secret: env:SLACK_SIGNING_SECRET` to verify Slack's button callbacks",
                );
                ok = false;
            }
            let Entries(entries) = &list.value;
            for (id, name) in entries {
                let valid_id = id.value.len() >= 2
                    && id.value.starts_with(['U', 'W'])
                    && id
                        .value
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
                if !valid_id {
                    self.err(
                        id.referenced,
                        format!("`users`: `{}` is not a Slack user id; expected an id such as `U024BE7LH` (profile → Copy member ID)", id.value),
                    );
                    ok = false;
                    continue;
                }
                let n = name.value.trim();
                if let Some(known) = tokens
                    && !known.contains(n)
                {
                    let list = known
                        .iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.err(
                        name.referenced,
                        format!("`users`: `{n}` is not the name of a token in `tokens:`; expected one of {list}"),
                    );
                    ok = false;
                    continue;
                }
                if n.is_empty() {
                    self.err(
                        name.referenced,
                        "`users`: expected the reviewer name this Slack user decides as",
                    );
                    ok = false;
                    continue;
                }
                users.insert(id.value.clone(), n.to_string());
            }
        }
        ok.then_some((secret, users))
    }
}
