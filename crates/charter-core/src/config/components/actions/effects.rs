//! What an action does: an HTTP `request`, a chat `message`, an `email` or a `sql` statement.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::components::charter::{CharterChecker, Known};
use crate::config::components::names::Scope;
use crate::config::diag::{Check, list};
use crate::config::raw::{Entries, Location, OneOrList, S, Scalar};
use crate::template::{JsonTemplate, Template};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    pub method: Option<S<String>>,
    pub path: Option<S<String>>,
    pub url: Option<S<String>>,
    pub headers: Option<Entries<S<Scalar>>>,
    pub json: Option<S<serde_json::Value>>,
    pub timeout: Option<S<Scalar>>,
}

/// `message:` (Slack).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessage {
    pub channel: Option<S<String>>,
    pub text: Option<S<String>>,
}

/// `email:` (SMTP).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    /// One template, or a list of templates each rendering to one address.
    pub to: Option<S<OneOrList>>,
    pub subject: Option<S<String>>,
    pub body: Option<S<String>>,
}

/// `sql:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSql {
    pub statement: Option<S<String>>,
    pub params: Option<S<Vec<Option<S<Scalar>>>>>,
}

#[derive(Debug, Clone)]
pub struct MessageAction {
    /// A `type: slack` connector.
    pub connector: String,
    /// Required with a bot token; a webhook posts to its own channel.
    pub channel: Option<Template>,
    pub text: Template,
}

#[derive(Debug, Clone)]
pub struct EmailAction {
    /// A `type: smtp` connector.
    pub connector: String,
    /// `to:` as written.
    pub to: Recipients,
    pub subject: Template,
    pub body: Template,
}

/// An email action's `to:`.
#[derive(Debug, Clone)]
pub enum Recipients {
    /// `to: "..."`. Plain text (no template) may list several comma-separated addresses; a
    /// template must render to exactly one address, so a payload cannot add recipients.
    One(Template),
    /// `to: [...]`: each entry renders to exactly one address.
    List(Vec<Template>),
}

#[derive(Debug, Clone)]
pub struct SqlAction {
    /// A `type: sql` connector.
    pub connector: String,
    /// The statement exactly as written; values go only through `params` (`$1`, `$2`, ...).
    pub statement: String,
    /// One template per placeholder, rendered to text (`null` when the template is `~`).
    pub params: Vec<Option<Template>>,
}

#[derive(Debug, Clone)]
pub struct HttpAction {
    /// The connector (must be in `uses`); `None` means `url` is absolute.
    pub connector: Option<String>,
    pub method: String,
    /// Path appended to the connector's base URL, or a full URL without a connector.
    pub target: Template,
    pub headers: BTreeMap<String, Template>,
    pub json: Option<JsonTemplate>,
    /// Per-attempt timeout; `None` uses the connector's.
    pub timeout: Option<Duration>,
}

impl CharterChecker<'_> {
    pub(crate) fn message(
        &mut self,
        action: &str,
        connector: &Option<S<String>>,
        raw: &S<RawMessage>,
        known: &Known,
    ) -> Option<MessageAction> {
        let connector =
            self.typed_connector(action, connector, raw.referenced, "message", "slack", known);
        let channel = match &raw.value.channel {
            Some(c) => self.scoped_template(c, "channel", Scope::Action).map(Some),
            None => match &connector {
                Some(c) if self.slack_bots.is_some_and(|b| b.contains(c)) => {
                    self.err(
                        raw.referenced,
                        format!("action `{action}`: connector `{c}` posts with a bot token, which needs a `channel`, such as `channel: \"#support\"`"),
                    );
                    None
                }
                _ => Some(None),
            },
        };
        let text = match &raw.value.text {
            Some(t) => self.scoped_template(t, "text", Scope::Action),
            None => {
                self.err(
                    raw.referenced,
                    "missing `text`: expected the message text (a template)",
                );
                None
            }
        };
        Some(MessageAction {
            connector: connector?,
            channel: channel?,
            text: text?,
        })
    }

    pub(crate) fn email(
        &mut self,
        action: &str,
        connector: &Option<S<String>>,
        raw: &S<RawEmail>,
        known: &Known,
    ) -> Option<EmailAction> {
        let at = raw.referenced;
        let connector = self.typed_connector(action, connector, at, "email", "smtp", known);
        let to = self.recipients(&raw.value.to, at);
        let mut part = |v: &Option<S<String>>, key: &str, what: &str| match v {
            Some(t) => self.scoped_template(t, key, Scope::Action),
            None => {
                self.err(at, format!("missing `{key}`: expected {what}"));
                None
            }
        };
        let subject = part(
            &raw.value.subject,
            "subject",
            "the subject line (a template)",
        );
        let body = part(&raw.value.body, "body", "the plain-text body (a template)");
        Some(EmailAction {
            connector: connector?,
            to: to?,
            subject: subject?,
            body: body?,
        })
    }

    /// An email action's `to:`: one template or a list of them.
    pub(crate) fn recipients(
        &mut self,
        to: &Option<S<OneOrList>>,
        at: Location,
    ) -> Option<Recipients> {
        match to {
            None => {
                self.err(
                    at,
                    "missing `to`: expected the recipient, such as `{{ payload.customer.email }}`, or a list of them",
                );
                None
            }
            Some(t) => match &t.value {
                OneOrList::One(one) => self
                    .scoped_template(
                        &S::new(one.clone(), t.referenced, t.defined),
                        "to",
                        Scope::Action,
                    )
                    .map(Recipients::One),
                OneOrList::List(items) if items.is_empty() => {
                    self.err(
                        t.referenced,
                        "`to` is an empty list; expected at least one recipient",
                    );
                    None
                }
                OneOrList::List(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        out.push(self.scoped_template(item, &format!("to[{i}]"), Scope::Action));
                    }
                    out.into_iter()
                        .collect::<Option<Vec<_>>>()
                        .map(Recipients::List)
                }
            },
        }
    }

    pub(crate) fn sql(
        &mut self,
        action: &str,
        connector: &Option<S<String>>,
        raw: &S<RawSql>,
        known: &Known,
    ) -> Option<SqlAction> {
        let at = raw.referenced;
        let connector = self.typed_connector(action, connector, at, "sql", "sql", known);
        let statement = match &raw.value.statement {
            Some(st) if st.value.contains("{{") || st.value.contains("{%") => {
                self.err(
                    st.referenced,
                    "`statement` contains a template; values never go into SQL text: write `$1`, `$2`, ... and list the values under `params`",
                );
                None
            }
            Some(st) if st.value.trim().is_empty() => {
                self.err(
                    st.referenced,
                    "`statement` is empty; expected one SQL statement",
                );
                None
            }
            Some(st) => Some(st.value.trim().to_string()),
            None => {
                self.err(
                    at,
                    "missing `statement`: expected one SQL statement with `$1`, `$2`, ... placeholders, such as `INSERT INTO tickets (id, label) VALUES ($1, $2)`",
                );
                None
            }
        };
        let mut params = Vec::new();
        let mut params_ok = true;
        for (i, p) in raw
            .value
            .params
            .iter()
            .flat_map(|p| p.value.iter())
            .enumerate()
        {
            match p {
                None => params.push(None),
                Some(v) => {
                    let t = S::new(v.value.0.clone(), v.referenced, v.defined);
                    match self.scoped_template(&t, &format!("params[{i}]"), Scope::Action) {
                        Some(t) => params.push(Some(t)),
                        None => params_ok = false,
                    }
                }
            }
        }
        if !params_ok {
            return None;
        }
        Some(SqlAction {
            connector: connector?,
            statement: statement?,
            params,
        })
    }

    pub(crate) fn request(
        &mut self,
        action: &str,
        connector: &Option<S<String>>,
        raw: &S<RawRequest>,
        known: &Known,
    ) -> Option<HttpAction> {
        let at = raw.referenced;
        let r = &raw.value;
        let connector_ok = match connector {
            Some(c) if !known.uses.contains(&c.value) => {
                self.err(
                    c.referenced,
                    format!(
                        "action `{action}` uses connector `{}`, which is not in this charter's `uses` list; expected one of {}",
                        c.value,
                        list(&known.uses)
                    ),
                );
                false
            }
            _ => true,
        };
        let method = match &r.method {
            Some(m) => {
                let upper = S::new(m.value.trim().to_ascii_uppercase(), m.referenced, m.defined);
                self.one_of(
                    &upper,
                    "method",
                    &[
                        ("GET", "GET"),
                        ("POST", "POST"),
                        ("PUT", "PUT"),
                        ("PATCH", "PATCH"),
                        ("DELETE", "DELETE"),
                    ],
                )
                .map(str::to_string)
            }
            None => {
                self.err(
                    at,
                    "missing `method`: expected one of `GET`, `POST`, `PUT`, `PATCH`, `DELETE`",
                );
                None
            }
        };
        let target = self.request_target(action, connector, r, at);
        let mut headers = BTreeMap::new();
        let mut headers_ok = true;
        for (name, value) in r.headers.clone().unwrap_or_default().0 {
            let v = S::new(value.value.0, value.referenced, value.defined);
            match self.scoped_template(&v, &format!("headers.{}", name.value), Scope::Action) {
                Some(t) => {
                    headers.insert(name.value, t);
                }
                None => headers_ok = false,
            }
        }
        let json = match &r.json {
            Some(j) => match JsonTemplate::parse(j.value.clone()) {
                Ok(t) => self
                    .check_json_names(j.referenced, "json", &j.value, Scope::Action)
                    .then_some(Some(t)),
                Err(e) => {
                    self.err(j.referenced, format!("`json`: {e}"));
                    None
                }
            },
            None => Some(None),
        };
        let timeout = match &r.timeout {
            Some(t) => self.duration(t, "timeout").map(Some),
            None => Some(None),
        };
        if !connector_ok || !headers_ok {
            return None;
        }
        Some(HttpAction {
            connector: connector.as_ref().map(|c| c.value.clone()),
            method: method?,
            target: target?,
            headers,
            json: json?,
            timeout: timeout?,
        })
    }

    /// Where the request goes: a `path` under the connector's base_url, or an absolute `url`
    /// without a connector.
    fn request_target(
        &mut self,
        action: &str,
        connector: &Option<S<String>>,
        r: &RawRequest,
        at: Location,
    ) -> Option<Template> {
        match (connector, &r.path, &r.url) {
            (Some(_), Some(p), None) => {
                if p.value.starts_with('/') || p.value.starts_with("{{") {
                    self.scoped_url_template(p, "path", Scope::Action)
                } else {
                    self.err(p.referenced, format!("`path` is `{}`; expected a path starting with `/`, appended to the connector's base_url", p.value));
                    None
                }
            }
            (Some(_), None, Some(u)) => {
                self.err(u.referenced, "`url` is for actions without a connector; with a `connector`, give a `path` relative to its base_url");
                None
            }
            (None, Some(p), None) => {
                self.err(p.referenced, format!("action `{action}` has a `path` but no `connector`; add `connector: <name>` or give an absolute `url`"));
                None
            }
            (None, None, Some(u)) => {
                if u.value.starts_with("http://")
                    || u.value.starts_with("https://")
                    || u.value.starts_with("{{")
                {
                    self.scoped_url_template(u, "url", Scope::Action)
                } else {
                    self.err(
                        u.referenced,
                        format!(
                            "`url` is `{}`; expected an absolute http:// or https:// URL",
                            u.value
                        ),
                    );
                    None
                }
            }
            (_, Some(p), Some(_)) => {
                self.err(
                    p.referenced,
                    "give either `path` (with a connector) or `url` (without one), not both",
                );
                None
            }
            (Some(_), None, None) => {
                self.err(at, "missing `path`: expected the path appended to the connector's base_url, such as `/api/v2/tickets/{{ payload.ticket.id }}`");
                None
            }
            (None, None, None) => {
                self.err(at, "missing `url`: expected an absolute URL, or a `connector` on the action plus a `path`");
                None
            }
        }
    }
}
