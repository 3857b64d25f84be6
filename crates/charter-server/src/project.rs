//! Reading a project folder and preparing what the server needs at run time: the
//! validated project, resolved secrets, compiled input contracts and the webhook routing
//! table. This is the I/O shell around `charter_core::config::load_project`, which is pure.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use charter_connect::ResolvedHttpConnector;
use charter_core::config::{
    Charter, Diagnostic, Diagnostics, Project, ProjectSource, SecretRef, TokenDef,
};

/// Extensions of files read into a [`ProjectSource`]; other files (databases, models) are skipped.
const TEXT_EXTENSIONS: &[&str] = &[
    "yaml", "yml", "json", "md", "txt", "csv", "jsonl", "j2", "tmpl",
];
/// Files larger than this are not read into the source (they are not charter material).
const MAX_SOURCE_FILE: u64 = 32 * 1024 * 1024;

/// Why a project could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("{0}")]
    Secret(String),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error("charter `{charter}`: input schema {file} is not a valid JSON Schema: {message}")]
    Schema {
        charter: String,
        file: String,
        message: String,
    },
}

/// Read every text file of the project folder (relative paths with `/`).
pub fn read_source(root: &Path) -> Result<ProjectSource, ProjectError> {
    let mut src = ProjectSource::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| ProjectError::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| ProjectError::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || name == "target" || name == "node_modules" {
                continue;
            }
            // A file that disappears between the listing and this look (the SQLite store's
            // `-wal` and `-shm` files come and go beside the charters) is not part of it.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(ProjectError::Io {
                        path: path.display().to_string(),
                        source: e,
                    });
                }
            };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !TEXT_EXTENSIONS.contains(&ext) || meta.len() > MAX_SOURCE_FILE {
                continue;
            }
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                // Gone since the listing; a dangling symlink is still there, and an error.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && std::fs::symlink_metadata(&path)
                            .is_err_and(|m| m.kind() == std::io::ErrorKind::NotFound) =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(ProjectError::Io {
                        path: path.display().to_string(),
                        source: e,
                    });
                }
            };
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect::<Vec<_>>()
                .join("/");
            src.files.insert(rel, text);
        }
    }
    Ok(src)
}

/// Read and validate a project folder.
pub fn load(root: &Path) -> Result<Project, ProjectError> {
    let src = read_source(root)?;
    charter_core::config::load_project(&src).map_err(ProjectError::Invalid)
}

/// Resolve a secret reference. Values never appear in errors.
pub fn resolve_secret(root: &Path, secret: &SecretRef) -> Result<String, ProjectError> {
    match secret {
        SecretRef::Env(name) => std::env::var(name).map_err(|_| {
            ProjectError::Secret(format!(
                "secret env:{name} is not set (export {name} before starting charter)"
            ))
        }),
        SecretRef::File(p) => {
            let path = if Path::new(p).is_absolute() {
                PathBuf::from(p)
            } else {
                root.join(p)
            };
            std::fs::read_to_string(&path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| ProjectError::Secret(format!("secret file:{p} cannot be read: {e}")))
        }
    }
}

/// How much a finding of [`check_outside`] weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `serve` would refuse to start, or the first event would fail.
    Error,
    /// `serve` would refuse to start here and now (an unset `env:` secret), but the machine
    /// that serves may have it: an error only with `charter check --strict`.
    Warning,
}

/// A problem `charter check` finds beyond the pure validation of the project: in the
/// examples files the embedded classifier trains on, and in this process's environment.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    pub diagnostic: Diagnostic,
}

/// What `serve` would find wrong with a valid project that validation (pure, text only)
/// cannot know: every embedded stage's examples parse and use only declared labels, and
/// every `env:NAME` secret written in charter.yaml or a charter file is set.
pub fn check_outside(source: &ProjectSource, project: &Project) -> Vec<Finding> {
    let mut out = Vec::new();
    for charter in project.charters.values() {
        if let Some(stage) = crate::models::embedded_stage(charter) {
            out.extend(check_examples(source, charter, &stage.examples));
        }
    }
    for (file, text) in &source.files {
        let is_config = file == "charter.yaml"
            || (file.starts_with("charters/")
                && (file.ends_with(".yaml") || file.ends_with(".yml")));
        if !is_config {
            continue;
        }
        for (line, column, name) in env_references(text) {
            if std::env::var_os(&name).is_none() {
                out.push(Finding {
                    severity: Severity::Warning,
                    diagnostic: Diagnostic {
                        file: file.clone(),
                        line,
                        column,
                        message: format!(
                            "secret env:{name} is not set here; `serve` refuses to start without it (export {name}=...)"
                        ),
                    },
                });
            }
        }
    }
    out
}

/// The examples file of an embedded stage: readable, parsed, labels declared.
fn check_examples(source: &ProjectSource, charter: &Charter, file: &str) -> Vec<Finding> {
    let error = |line: usize, message: String| Finding {
        severity: Severity::Error,
        diagnostic: Diagnostic {
            file: file.to_string(),
            line,
            column: 1,
            message: format!("examples of charter `{}`: {message}", charter.name),
        },
    };
    let Some(text) = source.files.get(file) else {
        return vec![error(
            1,
            "the file cannot be read (missing, or not text)".into(),
        )];
    };
    let Some(format) = charter_decide::ExampleFormat::from_path(file) else {
        return vec![error(
            1,
            "unknown format: use .csv (text,label) or .jsonl".into(),
        )];
    };
    let examples = match charter_decide::parse_examples(text, format) {
        Ok(e) => e,
        Err(e) => {
            // The parser's messages start with `line N: `.
            let msg = e.to_string();
            let (line, rest) = msg
                .strip_prefix("line ")
                .and_then(|r| r.split_once(": "))
                .and_then(|(n, rest)| Some((n.parse().ok()?, rest.to_string())))
                .unwrap_or((1, msg.clone()));
            let hint = if format == charter_decide::ExampleFormat::Csv
                && text
                    .lines()
                    .next()
                    .is_some_and(|h| h.contains(';') || h.contains('\t'))
            {
                " (the delimiter must be a comma: `text,label`)"
            } else {
                ""
            };
            return vec![error(line, format!("{rest}{hint}"))];
        }
    };
    let Some(decide) = &charter.decide else {
        return Vec::new();
    };
    let mut reported = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for ex in &examples {
        if decide.labels.contains(&ex.label) || !reported.insert(ex.label.clone()) {
            continue;
        }
        let line = text
            .lines()
            .position(|l| {
                l.trim_end().ends_with(ex.label.as_str()) && l.contains(ex.label.as_str())
            })
            .map_or(1, |i| i + 1);
        out.push(error(
            line,
            format!(
                "label `{}` is not declared in `decide.labels` ({})",
                ex.label,
                decide.labels.join(", ")
            ),
        ));
    }
    out
}

/// Every `env:NAME` written in a YAML text, with its line and column (1-based); comments
/// are skipped.
fn env_references(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = match line.find(" #") {
            Some(at) => &line[..at],
            None if line.trim_start().starts_with('#') => "",
            None => line,
        };
        let mut from = 0;
        while let Some(pos) = code[from..].find("env:") {
            let start = from + pos;
            from = start + 4;
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = code[from..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((i + 1, start + 1, name));
            }
        }
    }
    out
}

/// A charter prepared for serving.
pub struct CharterRuntime {
    pub charter: Arc<Charter>,
    /// Compiled input contract.
    pub contract: Option<Arc<jsonschema::Validator>>,
    /// Webhook secrets, resolved (several during rotation).
    pub webhook_secrets: Vec<String>,
    /// The embedded classifier, when the charter has an embedded stage.
    pub model: Option<Arc<charter_decide::EmbeddedModel>>,
}

/// Everything the server and worker need, prepared once at start-up.
pub struct Runtime {
    pub root: PathBuf,
    pub project: Project,
    pub charters: BTreeMap<String, CharterRuntime>,
    /// Webhook path -> charter name.
    pub hooks: HashMap<String, String>,
    pub connectors: BTreeMap<String, ResolvedHttpConnector>,
    /// Every connector ready to act through (HTTP with its OAuth2 client, limits, breaker
    /// and response contract; Slack; SMTP; SQL), by name.
    pub connections: BTreeMap<String, Arc<charter_connect::Connection>>,
    /// API tokens with their secrets resolved.
    pub tokens: Vec<(TokenDef, String)>,
    /// Slack connectors' signing secrets (`signing_secret:`), resolved, by connector name:
    /// they verify Slack's interactive callbacks (`crate::notify`).
    pub slack_signing_secrets: BTreeMap<String, String>,
}

impl Runtime {
    /// Prepare a validated project: resolve every secret, compile every contract, load (or
    /// train) every embedded model.
    pub fn prepare(
        root: &Path,
        source: &ProjectSource,
        project: Project,
    ) -> Result<Runtime, ProjectError> {
        let mut connectors = BTreeMap::new();
        let mut connections = BTreeMap::new();
        for (name, c) in &project.connectors {
            let mut secret_error = None;
            let conn = charter_connect::Connection::from_config(name, &c.kind, root, |r| {
                resolve_secret(root, r).map_err(|e| {
                    let msg = e.to_string();
                    secret_error = Some(e);
                    msg
                })
            });
            let conn = match (conn, secret_error) {
                (Ok(conn), _) => conn,
                (Err(_), Some(e)) => return Err(e),
                (Err(msg), None) => return Err(ProjectError::Secret(msg)),
            };
            if let Some(h) = conn.http() {
                connectors.insert(name.clone(), h.connector.clone());
            }
            connections.insert(name.clone(), Arc::new(conn));
        }
        let mut charters = BTreeMap::new();
        let mut hooks = HashMap::new();
        for (name, charter) in &project.charters {
            let contract = match &charter.trigger.input_schema {
                None => None,
                Some(s) => Some(Arc::new(jsonschema::validator_for(&s.schema).map_err(
                    |e| ProjectError::Schema {
                        charter: name.clone(),
                        file: s.file.clone(),
                        message: e.to_string(),
                    },
                )?)),
            };
            let mut webhook_secrets = Vec::new();
            if let Some(w) = &charter.trigger.webhook {
                for s in &w.secrets {
                    webhook_secrets.push(resolve_secret(root, s)?);
                }
                hooks.insert(w.path.clone(), name.clone());
            }
            let model = match crate::models::embedded_stage(charter) {
                Some(stage) => Some(Arc::new(crate::models::load_or_train(
                    root, source, charter, stage,
                )?)),
                None => None,
            };
            charters.insert(
                name.clone(),
                CharterRuntime {
                    charter: charter.clone(),
                    contract,
                    webhook_secrets,
                    model,
                },
            );
        }
        let mut tokens = Vec::new();
        for t in &project.tokens {
            tokens.push((t.clone(), resolve_secret(root, &t.secret)?));
        }
        let mut slack_signing_secrets = BTreeMap::new();
        for (name, c) in &project.connectors {
            if let charter_core::config::ConnectorKind::Slack(s) = &c.kind
                && let Some(r) = &s.signing_secret
            {
                slack_signing_secrets.insert(name.clone(), resolve_secret(root, r)?);
            }
        }
        Ok(Runtime {
            tokens,
            slack_signing_secrets,
            root: root.to_path_buf(),
            project,
            charters,
            hooks,
            connectors,
            connections,
        })
    }

    /// Load, validate and prepare in one step.
    pub fn load(root: &Path) -> Result<Runtime, ProjectError> {
        let source = read_source(root)?;
        let project = charter_core::config::load_project(&source).map_err(ProjectError::Invalid)?;
        Runtime::prepare(root, &source, project)
    }

    /// The SQLite file the project's settings point at.
    pub fn store_path(&self) -> PathBuf {
        let p = Path::new(&self.project.settings.store);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files are read by extension; a dangling symlink to a charter is reported with its
    /// path (only a file that vanished since the listing is skipped).
    #[test]
    fn read_source_reads_text_files_and_reports_a_dangling_link() {
        let dir = std::env::temp_dir().join(format!("charter-src-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(dir.join("charters")).unwrap();
        std::fs::write(dir.join("charter.yaml"), "store: x.db\n").unwrap();
        std::fs::write(dir.join("x.db-wal"), [0u8, 1, 2]).unwrap();
        let src = read_source(&dir).unwrap();
        assert_eq!(
            src.files.keys().collect::<Vec<_>>(),
            vec!["charter.yaml"],
            "only text files are read"
        );
        std::os::unix::fs::symlink(dir.join("missing.yaml"), dir.join("charters/gone.yaml"))
            .unwrap();
        match read_source(&dir) {
            Err(ProjectError::Io { path, .. }) => assert!(path.ends_with("gone.yaml"), "{path}"),
            other => panic!("a dangling charter link must be an error, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
