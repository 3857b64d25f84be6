//! Loading a project: each file is stripped of unknown keys (all reported), deserialized
//! into its raw struct and checked, and every problem of every file is returned at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::config::components::charter::{ActionUse, CharterChecker};
use crate::config::components::project::{ProjectChecker, ProjectParts};
use crate::config::diag::Check;
use crate::config::diag::{list, push};
use crate::config::raw::{Location, RawCharter, RawProject, S};
use crate::config::shape::{CHARTER_SHAPE, PROJECT_SHAPE, Shape};
use crate::config::unknown_keys::strip_unknown_keys;
use crate::config::{Charter, Diagnostic, Diagnostics, NatsTrigger, Project, ProjectSource, Role};

/// The project settings file, relative to the project root.
pub const PROJECT_FILE: &str = "charter.yaml";

/// The folder holding one charter per file.
pub const CHARTERS_DIR: &str = "charters/";

/// Parses and validates a whole project: `charter.yaml` and every `charters/*.yaml` (or
/// `.yml`). Pure: it reads only `src`. Returns every problem found, across all files.
pub fn load_project(src: &ProjectSource) -> Result<Project, Diagnostics> {
    let mut diags = Vec::new();
    let project = project_file(src, &mut diags);
    let files = check_charters(src, project.as_ref(), &mut diags);
    if let Some(p) = &project {
        // Token scopes name charters (all of them are known only if every charter file parsed).
        if files.all_parsed {
            token_scopes(p, &files.names, &mut diags);
        }
        agent_calls(p, &files.decision_uses, &mut diags);
    }
    match project {
        Some(p) if diags.is_empty() => Ok(Project {
            settings: p.settings,
            connectors: p.connectors,
            tokens: p.tokens,
            providers: p.providers,
            charters: files.charters,
            knowledge: p.knowledge,
        }),
        _ => {
            diags.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            Err(Diagnostics(diags))
        }
    }
}

/// `charter.yaml`, checked; `None` when it is missing or does not deserialize.
fn project_file(src: &ProjectSource, diags: &mut Vec<Diagnostic>) -> Option<ProjectParts> {
    match src.files.get(PROJECT_FILE) {
        Some(text) => parse_yaml::<RawProject>(PROJECT_FILE, text, &PROJECT_SHAPE, diags)
            .map(|raw| ProjectChecker::new(diags, src).check(raw)),
        None => {
            diags.push(Diagnostic {
                file: PROJECT_FILE.to_string(),
                line: 1,
                column: 1,
                message: "the project has no charter.yaml; every project needs one at its root \
                          (it may be empty, or hold `connectors:`, `server:`, `worker:`, `tokens:`)"
                    .to_string(),
            });
            None
        }
    }
}

/// What the charter files yield, and what the checks across files need from them.
struct CharterFiles<'s> {
    charters: BTreeMap<String, Arc<Charter>>,
    /// Charter name -> the file that defines it first.
    names: BTreeMap<String, (String, Location)>,
    /// Webhook path -> the file that uses it first.
    paths: BTreeMap<String, (String, Location)>,
    /// (url, stream, durable) -> the file whose charter consumes through that consumer.
    consumers: BTreeMap<(String, String, String), String>,
    /// Charter -> (file, action templates using `decision`), for [`agent_calls`].
    decision_uses: BTreeMap<String, (&'s str, Vec<ActionUse>)>,
    all_parsed: bool,
}

/// Every charter file, checked against what `charter.yaml` declares (connector, provider
/// and knowledge names are only known when it parsed; otherwise those checks are skipped).
fn check_charters<'s>(
    src: &'s ProjectSource,
    project: Option<&ProjectParts>,
    diags: &mut Vec<Diagnostic>,
) -> CharterFiles<'s> {
    let mut files = CharterFiles {
        charters: BTreeMap::new(),
        names: BTreeMap::new(),
        paths: BTreeMap::new(),
        consumers: BTreeMap::new(),
        decision_uses: BTreeMap::new(),
        all_parsed: true,
    };
    for (file, text) in charter_files(src) {
        let Some(raw) = parse_yaml::<S<RawCharter>>(file, text, &CHARTER_SHAPE, diags) else {
            files.all_parsed = false;
            continue;
        };
        let mut checker = CharterChecker {
            file,
            src,
            connectors: project.map(|p| &p.declared_connectors),
            connector_types: project.map(|p| &p.connector_types),
            slack_bots: project.map(|p| &p.slack_bots),
            providers: project.map(|p| &p.declared_providers),
            knowledge: project.map(|p| &p.declared_knowledge),
            public_url: project.map(|p| p.settings.public_url.as_deref()),
            diags,
            decision_uses: Vec::new(),
            action_decision_uses: Vec::new(),
            context_names: None,
            retrieve_names: BTreeSet::new(),
        };
        files.claim_name_and_path(&mut checker, &raw.value);
        let nats_at = raw
            .value
            .trigger
            .as_ref()
            .and_then(|t| t.value.nats.as_ref())
            .map(|n| n.referenced);
        let checked = checker.check(raw, text);
        let decision_uses = std::mem::take(&mut checker.action_decision_uses);
        if let Some(charter) = checked {
            if !decision_uses.is_empty() {
                files
                    .decision_uses
                    .insert(charter.name.clone(), (file, decision_uses));
            }
            if let (Some(n), Some(at)) = (&charter.trigger.nats, nats_at) {
                files.claim_consumer(&mut checker, n, at);
            }
            files
                .charters
                .entry(charter.name.clone())
                .or_insert_with(|| Arc::new(charter));
        }
    }
    files
}

impl CharterFiles<'_> {
    /// A charter's name and webhook path are each used by one charter only.
    fn claim_name_and_path(&mut self, checker: &mut CharterChecker<'_>, raw: &RawCharter) {
        let file = checker.file;
        if let Some(name) = &raw.name {
            if let Some((other, _)) = self.names.get(&name.value) {
                checker.err(
                    name.referenced,
                    format!(
                        "charter name `{}` is already used by {other}; charter names must be unique",
                        name.value
                    ),
                );
            } else {
                self.names
                    .insert(name.value.clone(), (file.to_string(), name.referenced));
            }
        }
        let path = raw
            .trigger
            .as_ref()
            .and_then(|t| t.value.webhook.as_ref())
            .and_then(|w| w.value.path.as_ref());
        if let Some(path) = path {
            if let Some((other, _)) = self.paths.get(&path.value) {
                checker.err(
                    path.referenced,
                    format!(
                        "webhook path `{}` is already used by {other}; each charter needs its own path",
                        path.value
                    ),
                );
            } else {
                self.paths
                    .insert(path.value.clone(), (file.to_string(), path.referenced));
            }
        }
    }

    /// A NATS durable consumer (url, stream, durable) is used by one charter only.
    fn claim_consumer(&mut self, checker: &mut CharterChecker<'_>, n: &NatsTrigger, at: Location) {
        let key = (n.url.clone(), n.stream.clone(), n.durable.clone());
        if let Some(other) = self.consumers.get(&key) {
            checker.err(
                at,
                format!(
                    "durable consumer `{}` on stream `{}` is already used by {other}; each charter needs its own `durable`",
                    n.durable, n.stream
                ),
            );
        } else {
            self.consumers.insert(key, checker.file.to_string());
        }
    }
}

/// Every charter a token's scope names exists.
fn token_scopes(
    p: &ProjectParts,
    names: &BTreeMap<String, (String, Location)>,
    diags: &mut Vec<Diagnostic>,
) {
    for (name, at) in &p.token_scopes {
        if !names.contains_key(name) {
            push(
                diags,
                PROJECT_FILE,
                *at,
                format!(
                    "token scope names charter `{name}`, which is not defined; expected one of {}",
                    list(names.keys())
                ),
            );
        }
    }
}

/// An agent token calls a charter's actions as MCP tools, without a decision: an action
/// template that needs `decision` would fail every such call.
fn agent_calls(
    p: &ProjectParts,
    decision_uses: &BTreeMap<String, (&str, Vec<ActionUse>)>,
    diags: &mut Vec<Diagnostic>,
) {
    for (charter, (file, uses)) in decision_uses {
        let Some(agent) = p.tokens.iter().find(|t| {
            t.role == Role::Agent && (t.charters.is_empty() || t.charters.contains(charter))
        }) else {
            continue;
        };
        for (action, at, key) in uses {
            push(
                diags,
                file,
                *at,
                format!(
                    "action `{action}`: `{key}` uses `decision`, but agent token `{}` may call this action as an MCP tool, which runs without a decision; use only `payload`, `event`, `headers` and `context` in it, or scope the token to other charters",
                    agent.name
                ),
            );
        }
    }
}

/// The charter files of a project, in path order.
pub(crate) fn charter_files(src: &ProjectSource) -> impl Iterator<Item = (&str, &str)> {
    src.files.iter().filter_map(|(path, text)| {
        let rest = path.strip_prefix(CHARTERS_DIR)?;
        let is_yaml = rest.ends_with(".yaml") || rest.ends_with(".yml");
        (is_yaml && !rest.contains('/')).then_some((path.as_str(), text.as_str()))
    })
}

/// Deserializes one YAML file. Every key `shape` does not know is reported and removed
/// first (serde would stop at the first one and hide the file's other problems); whatever
/// still fails to deserialize (a syntax error, a list where a word belongs) becomes one more
/// diagnostic and the file yields no value.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
    shape: &Shape,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let stripped = strip_unknown_keys(text, shape);
    for key in stripped.unknown {
        diags.push(Diagnostic {
            file: file.to_string(),
            line: key.line.max(1),
            column: key.column.max(1),
            message: key.message,
        });
    }
    match serde_saphyr::from_str::<T>(&stripped.text) {
        Ok(v) => Some(v),
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line() as usize, l.column() as usize))
                .unwrap_or((1, 1));
            diags.push(Diagnostic {
                file: file.to_string(),
                line: line.max(1),
                column: column.max(1),
                message: if matches!(e.without_snippet(), serde_saphyr::Error::ExternalMessage { .. }) {
                    format!(
                        "YAML syntax error: {}; check the indentation and that every bracket and quote is closed",
                        yaml_message(&e.without_snippet().to_string())
                    )
                } else {
                    yaml_message(&e.without_snippet().to_string())
                },
            });
            None
        }
    }
}

/// Rewrites serde-saphyr's messages for people: no trailing position (the diagnostic has
/// one), names in backticks, plain words for the parser's terms.
pub(crate) fn yaml_message(raw: &str) -> String {
    let mut msg = match raw.rfind(" at line ") {
        Some(i) if raw[i..].contains(", column ") => raw[..i].to_string(),
        _ => raw.to_string(),
    };
    if let Some(i) = msg.find("expected one of ") {
        let (head, names) = msg.split_at(i + "expected one of ".len());
        let names = names
            .split(", ")
            .map(|n| format!("`{}`", n.trim_matches('`')))
            .collect::<Vec<_>>()
            .join(", ");
        msg = format!("{head}{names}");
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest);
        return format!("`{key}` is given twice; each key may appear once in a mapping");
    }
    let plain = [
        (
            "expected string scalar",
            "expected a single text value here",
        ),
        (
            "expected mapping start",
            "expected a mapping (`key: value` lines) here",
        ),
        (
            "expected sequence start",
            "expected a list (`[a, b]` or `- item` lines) here",
        ),
    ];
    for (from, to) in plain {
        if msg == from {
            return to.to_string();
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_messages_are_rewritten() {
        assert_eq!(
            yaml_message(
                "unknown field `bogus`, expected one of connector, approval at line 5, column 5"
            ),
            "unknown field `bogus`, expected one of `connector`, `approval`"
        );
        assert_eq!(
            yaml_message(
                "duplicate mapping key: name, set DuplicateKeyPolicy in Options if acceptable at line 2, column 1"
            ),
            "`name` is given twice; each key may appear once in a mapping"
        );
    }
}
