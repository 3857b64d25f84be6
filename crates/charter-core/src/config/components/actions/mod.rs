//! `actions:` of a charter: the action table, each action's kind, approval, retry and
//! escalation (the kinds' own fields are in [`effects`]).

pub(crate) mod effects;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::components::charter::{CharterChecker, Known};
use crate::config::components::names::Scope;
use crate::config::diag::{Check, list, list_set, valid_name};
use crate::config::raw::{
    Entries, Location, OneOrList, RawDraft, RawEmail, RawMessage, RawRequest, RawSql, S, Scalar,
    WordOr,
};
use crate::config::{DraftSpec, EmailAction, HttpAction, MessageAction, NotifyTarget, SqlAction};
use crate::template::Template;

/// An action: `request` (HTTP) or `log`, plus its gate and retry policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    pub connector: Option<S<String>>,
    pub request: Option<S<RawRequest>>,
    pub log: Option<S<String>>,
    pub message: Option<S<RawMessage>>,
    pub email: Option<S<RawEmail>>,
    pub sql: Option<S<RawSql>>,
    /// `auto`, or `{ reviewers, expires, on_expiry }`.
    pub approval: Option<S<WordOr<RawApproval>>>,
    pub retry: Option<S<RawRetry>>,
    pub measure: Option<S<String>>,
    /// A model-written text passed to the action's templates as `draft`.
    pub draft: Option<S<RawDraft>>,
    /// `true`: an MCP tool call of this action runs without any route's `when:` holding.
    pub mcp_skip_when: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApproval {
    pub reviewers: Option<S<Vec<S<String>>>>,
    pub expires: Option<S<Scalar>>,
    pub on_expiry: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<S<i64>>,
    pub backoff: Option<S<Scalar>>,
    pub max_backoff: Option<S<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalation {
    pub to: Option<S<String>>,
    /// Where new approvals and escalations are announced: `connector[:where]`, or a list.
    pub notify: Option<S<OneOrList>>,
}

#[derive(Debug, Clone)]
pub struct Action {
    pub name: String,
    pub kind: ActionKind,
    pub approval: Approval,
    pub retry: RetryPolicy,
    /// Measurement event recorded when the action succeeds (one of `measure`'s names).
    pub measure: Option<String>,
    /// `draft:`: a model-written text passed to the action's templates as `draft`.
    pub draft: Option<DraftSpec>,
    /// `mcp_skip_when: true`: an MCP tool call of this action runs even when no route that
    /// lists it has a `when:` holding over the call (by default a call runs only when one
    /// does, evaluated with `decision` null).
    pub mcp_skip_when: bool,
}

#[derive(Debug, Clone)]
pub enum ActionKind {
    Http(HttpAction),
    /// Only records its rendered message.
    Log {
        message: Template,
    },
    /// A Slack message (`message: { channel, text }`).
    Message(MessageAction),
    /// An email (`email: { to, subject, body }`).
    Email(EmailAction),
    /// A parametrised SQL statement (`sql: { statement, params }`).
    Sql(SqlAction),
}

impl ActionKind {
    /// The connector this action goes through, if any.
    pub fn connector(&self) -> Option<&str> {
        match self {
            ActionKind::Http(h) => h.connector.as_deref(),
            ActionKind::Log { .. } => None,
            ActionKind::Message(m) => Some(&m.connector),
            ActionKind::Email(e) => Some(&e.connector),
            ActionKind::Sql(q) => Some(&q.connector),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Approval {
    Auto,
    Required {
        reviewers: Vec<String>,
        expires: Duration,
        on_expiry: OnExpiry,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExpiry {
    Escalate,
    Reject,
}

/// Retries with exponential backoff and full jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first (default 5).
    pub max_attempts: u32,
    /// Backoff before the second attempt (default 500 ms), doubled each time.
    pub initial_backoff: Duration,
    /// Upper bound on one wait, Retry-After included (default 60 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// Who gets escalated work (a reviewer group or address).
    pub to: String,
    /// Where each new approval and escalation of this charter is announced (`notify:`, one
    /// target or a list); empty when none.
    pub notify: Vec<NotifyTarget>,
}

/// How long the default approval of a drafting action (one with `draft:` and no
/// `approval:`) waits for a reviewer before it escalates.
pub const DRAFT_APPROVAL_EXPIRES: Duration = Duration::from_secs(24 * 3600);

impl CharterChecker<'_> {
    /// `escalation:`: who takes over when the charter cannot decide, and whom to notify.
    pub(crate) fn escalation(
        &mut self,
        raw: Option<S<RawEscalation>>,
        top: Location,
        known: &Known,
    ) -> Option<Escalation> {
        match raw {
            Some(e) => {
                let at = e.referenced;
                let to = self.required_text(
                    &e.value.to,
                    at,
                    "to",
                    "who receives escalated work, such as `support-leads`",
                );
                let notify = self.notify_targets(e.value.notify, known);
                to.zip(notify).map(|(to, notify)| Escalation { to, notify })
            }
            None => {
                self.err(
                    top,
                    "missing `escalation`: expected who takes over when the charter cannot decide, \
                     such as `escalation: { to: support-leads }`",
                );
                None
            }
        }
    }

    pub(crate) fn actions(
        &mut self,
        raw: S<Entries<S<RawAction>>>,
        known: &Known,
    ) -> Option<BTreeMap<String, Action>> {
        if raw.value.0.is_empty() {
            self.err(
                raw.referenced,
                "`actions` is empty; expected at least one action",
            );
            return None;
        }
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (name, action) in raw.value.0 {
            if !valid_name(&name.value) {
                self.err(
                    name.referenced,
                    format!("action name `{}` is not allowed; expected lower-case letters, digits, `-` and `_`", name.value),
                );
                ok = false;
                continue;
            }
            let before = self.decision_uses.len();
            let checked = self.action(&name, action, known);
            let uses: Vec<_> = self.decision_uses.drain(before..).collect();
            for (at, key) in uses {
                self.action_decision_uses
                    .push((name.value.clone(), at, key));
            }
            match checked {
                Some(a) => {
                    out.insert(name.value, a);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(crate) fn action(
        &mut self,
        name: &S<String>,
        raw: S<RawAction>,
        known: &Known,
    ) -> Option<Action> {
        let a: RawAction = raw.value;
        let n = &name.value;
        let kind = self.action_kind(name, &a, known);
        let approval = match a.approval {
            Some(ap) => self.approval(ap),
            // Drafted text is reviewed by default: any reviewer who sees the charter, within
            // a day, else it escalates. `approval: auto` sends drafts unreviewed.
            None if a.draft.is_some() => Some(Approval::Required {
                reviewers: Vec::new(),
                expires: DRAFT_APPROVAL_EXPIRES,
                on_expiry: OnExpiry::Escalate,
            }),
            None => {
                self.err(
                    name.referenced,
                    format!(
                        "action `{n}` has no `approval`; every action must say how it is approved: \
                         `approval: auto` or `approval: {{ reviewers: [team], expires: 4h, on_expiry: escalate }}`"
                    ),
                );
                None
            }
        };
        let retry = match &a.retry {
            Some(r) => self.retry(r),
            None => Some(RetryPolicy::default()),
        };
        let measure = match &a.measure {
            Some(m) if known.measures.contains(&m.value) => Some(Some(m.value.clone())),
            Some(m) => {
                self.err(
                    m.referenced,
                    format!(
                        "action `{n}` records measurement `{}`, which is not declared under `measure`; expected one of {}",
                        m.value,
                        list_set(&known.measures)
                    ),
                );
                None
            }
            None => Some(None),
        };
        let draft = self.draft(n, &a.draft);
        Some(Action {
            name: n.clone(),
            kind: kind?,
            approval: approval?,
            retry: retry?,
            measure: measure?,
            draft: draft?,
            mcp_skip_when: a.mcp_skip_when.as_ref().is_some_and(|b| b.value),
        })
    }

    /// What the action does: exactly one of `request`, `log`, `message`, `email`, `sql`.
    fn action_kind(
        &mut self,
        name: &S<String>,
        a: &RawAction,
        known: &Known,
    ) -> Option<ActionKind> {
        let n = &name.value;
        let bodies: Vec<(&str, Location)> = [
            ("request", a.request.as_ref().map(|v| v.referenced)),
            ("log", a.log.as_ref().map(|v| v.referenced)),
            ("message", a.message.as_ref().map(|v| v.referenced)),
            ("email", a.email.as_ref().map(|v| v.referenced)),
            ("sql", a.sql.as_ref().map(|v| v.referenced)),
        ]
        .into_iter()
        .filter_map(|(k, at)| at.map(|at| (k, at)))
        .collect();
        match bodies.as_slice() {
            [] => {
                self.err(
                    name.referenced,
                    format!("action `{n}` does nothing; expected one of `request: {{ method, path, ... }}` (with a `connector`), `message: {{ channel, text }}`, `email: {{ to, subject, body }}`, `sql: {{ statement, params }}` or `log: \"message\"`"),
                );
                None
            }
            [(first, _), (second, at), ..] => {
                self.err(
                    *at,
                    format!(
                        "action `{n}` has both `{first}` and `{second}`; expected exactly one of them"
                    ),
                );
                None
            }
            [(body, _)] => match *body {
                "log" => {
                    if let Some(c) = &a.connector {
                        self.err(
                            c.referenced,
                            format!(
                                "action `{n}` is a `log` action and takes no `connector`; remove it"
                            ),
                        );
                        None
                    } else {
                        a.log
                            .as_ref()
                            .and_then(|l| self.scoped_template(l, "log", Scope::Action))
                            .map(|message| ActionKind::Log { message })
                    }
                }
                "message" => a
                    .message
                    .as_ref()
                    .and_then(|m| self.message(n, &a.connector, m, known))
                    .map(ActionKind::Message),
                "email" => a
                    .email
                    .as_ref()
                    .and_then(|m| self.email(n, &a.connector, m, known))
                    .map(ActionKind::Email),
                "sql" => a
                    .sql
                    .as_ref()
                    .and_then(|m| self.sql(n, &a.connector, m, known))
                    .map(ActionKind::Sql),
                _ => {
                    let wrong_type = a.connector.as_ref().and_then(|c| {
                        let t = self.connector_types.and_then(|m| m.get(&c.value))?;
                        (t != "http").then(|| (c.value.clone(), t.clone(), c.referenced))
                    });
                    if let Some((c, t, at)) = wrong_type {
                        self.err(
                            at,
                            format!("connector `{c}` is a `{t}` connector; a `request` action needs an `http` connector"),
                        );
                        None
                    } else {
                        a.request
                            .as_ref()
                            .and_then(|req| self.request(n, &a.connector, req, known))
                            .map(ActionKind::Http)
                    }
                }
            },
        }
    }

    /// The connector of a `message`/`email`/`sql` action: present, in `uses`, of type `want`.
    pub(crate) fn typed_connector(
        &mut self,
        action: &str,
        connector: &Option<S<String>>,
        at: Location,
        body: &str,
        want: &str,
        known: &Known,
    ) -> Option<String> {
        let Some(c) = connector else {
            self.err(
                at,
                format!("action `{action}` has `{body}` but no `connector`; add `connector: <a {want} connector>`"),
            );
            return None;
        };
        if !known.uses.contains(&c.value) {
            self.err(
                c.referenced,
                format!(
                    "action `{action}` uses connector `{}`, which is not in this charter's `uses` list; expected one of {}",
                    c.value,
                    list(&known.uses)
                ),
            );
            return None;
        }
        if let Some(t) = self.connector_types.and_then(|m| m.get(&c.value))
            && t != want
        {
            self.err(
                c.referenced,
                format!(
                    "connector `{}` is a `{t}` connector; a `{body}` action needs a `{want}` connector",
                    c.value
                ),
            );
            return None;
        }
        Some(c.value.clone())
    }

    pub(crate) fn approval(&mut self, raw: S<WordOr<RawApproval>>) -> Option<Approval> {
        let at = raw.referenced;
        match raw.value {
            WordOr::Word(w) if w.trim() == "auto" => Some(Approval::Auto),
            WordOr::Word(w) => {
                self.err(
                    at,
                    format!(
                        "`approval: {w}` is not understood; expected `auto` or `{{ reviewers: [team], expires: 4h, on_expiry: escalate }}`"
                    ),
                );
                None
            }
            WordOr::Map(m) => {
                let reviewers = match &m.reviewers {
                    Some(r) if !r.value.is_empty() => {
                        Some(r.value.iter().map(|v| v.value.clone()).collect::<Vec<_>>())
                    }
                    Some(r) => {
                        self.err(r.referenced, "`reviewers` is empty; expected who may approve, such as `[support-leads]`");
                        None
                    }
                    None => {
                        self.err(at, "missing `reviewers`: expected who may approve, such as `reviewers: [support-leads]`");
                        None
                    }
                };
                let expires = match &m.expires {
                    Some(e) => self.duration(e, "expires"),
                    None => Some(Duration::from_secs(24 * 3600)),
                };
                let on_expiry = match &m.on_expiry {
                    Some(o) => self.one_of(
                        o,
                        "on_expiry",
                        &[
                            ("escalate", OnExpiry::Escalate),
                            ("reject", OnExpiry::Reject),
                        ],
                    ),
                    None => Some(OnExpiry::Escalate),
                };
                Some(Approval::Required {
                    reviewers: reviewers?,
                    expires: expires?,
                    on_expiry: on_expiry?,
                })
            }
        }
    }

    pub(crate) fn retry(&mut self, raw: &S<RawRetry>) -> Option<RetryPolicy> {
        let d = RetryPolicy::default();
        let r = &raw.value;
        let attempts = match &r.attempts {
            Some(a) => self
                .positive(a, "attempts")
                .and_then(|n| u32::try_from(n).ok()),
            None => Some(d.max_attempts),
        };
        let initial = match &r.backoff {
            Some(b) => self.duration(b, "backoff"),
            None => Some(d.initial_backoff),
        };
        let max = match &r.max_backoff {
            Some(b) => self.duration(b, "max_backoff"),
            None => Some(d.max_backoff),
        };
        if let (Some(i), Some(m)) = (initial, max)
            && i > m
        {
            let at = r
                .max_backoff
                .as_ref()
                .map(|b| b.referenced)
                .unwrap_or(raw.referenced);
            self.err(
                at,
                "`max_backoff` is shorter than `backoff`; expected max_backoff >= backoff",
            );
            return None;
        }
        Some(RetryPolicy {
            max_attempts: attempts?,
            initial_backoff: initial?,
            max_backoff: max?,
        })
    }
}
