//! `type: sql` connectors: a SQLite file or a PostgreSQL URL.

use std::time::Duration;

use crate::config::components::project::ProjectChecker;
use crate::config::diag::Check;
use crate::config::raw::{Location, RawConnector, S};
use crate::config::{ConnectorKind, SecretRef};

/// `type: sql`.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlConnector {
    pub database: SqlDatabase,
    /// Per-attempt timeout (default 10 s).
    pub timeout: Duration,
    /// A PostgreSQL server may be a loopback or private address (or a Unix socket);
    /// otherwise the outbound guard refuses such addresses. SQLite files are local anyway.
    pub allow_private: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SqlDatabase {
    /// `url: sqlite:path` (relative to the project unless absolute).
    Sqlite(String),
    /// `url: postgres://...` written out, or `url: env:NAME` / `file:PATH` holding one.
    Postgres(TextOrSecret),
}

/// A value written in the file or referenced as a secret.
#[derive(Debug, Clone, PartialEq)]
pub enum TextOrSecret {
    Text(String),
    Secret(SecretRef),
}

impl ProjectChecker<'_> {
    pub(crate) fn sql(
        &mut self,
        name: &S<String>,
        at: Location,
        raw: &RawConnector,
        timeout: Duration,
        allow_private: bool,
    ) -> Option<ConnectorKind> {
        let Some(url) = &raw.url else {
            self.err(
                at,
                format!(
                    "sql connector `{}` has no `url`; expected `sqlite:path/to.db`, `postgres://user@host/db` or `env:DATABASE_URL`",
                    name.value
                ),
            );
            return None;
        };
        let v = url.value.trim();
        let database = if let Some(path) = v.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            if path.is_empty() {
                self.err(url.referenced, "`url` is `sqlite:` without a file path");
                return None;
            }
            SqlDatabase::Sqlite(path.to_string())
        } else if v.starts_with("postgres://") || v.starts_with("postgresql://") {
            let rest = v.split_once("://").map(|(_, r)| r).unwrap_or_default();
            let userinfo = rest.split('/').next().unwrap_or_default();
            if userinfo
                .rsplit_once('@')
                .is_some_and(|(user, _)| user.contains(':'))
            {
                self.err(
                    url.referenced,
                    "`url` holds a password; secrets are only given by reference: put the URL in an environment variable and write `url: env:DATABASE_URL`",
                );
                return None;
            }
            SqlDatabase::Postgres(TextOrSecret::Text(v.to_string()))
        } else if v.starts_with("env:") || v.starts_with("file:") {
            SqlDatabase::Postgres(TextOrSecret::Secret(self.secret(url, "url")?))
        } else {
            self.err(
                url.referenced,
                format!(
                    "`url` is `{v}`; expected `sqlite:path/to.db`, `postgres://user@host/db`, or `env:NAME` holding a PostgreSQL URL"
                ),
            );
            return None;
        };
        Some(ConnectorKind::Sql(SqlConnector {
            database,
            timeout,
            allow_private,
        }))
    }
}
