//! SQL targets: PostgreSQL and SQLite, parametrised statements only.
//!
//! The statement text comes from the charter as written; rendered values are only ever
//! bound as parameters (`$1`, `$2`, ... in both databases), never spliced into SQL.
//!
//! **Exactly once per idempotency key.** Each attempt runs in one transaction that first
//! inserts the action's idempotency key into the ledger table
//! [`LEDGER_TABLE`] (created on first use). If the key is already there, the statement
//! ran before — its transaction committed — and the attempt succeeds without running it
//! again; otherwise the statement runs and both commit together. A retry after a lost
//! answer, a crash or a replay therefore cannot insert a second row.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_postgres::types::{ToSql, Type};

use crate::connector::Secret;
use crate::guarded::failure;
use crate::http::AttemptOutcome;

/// The ledger of applied idempotency keys, in the target database.
pub const LEDGER_TABLE: &str = "charter_applied_actions";

/// Where statements run.
#[derive(Debug, Clone)]
pub enum SqlTarget {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (may hold a password, hence secret). Plain TCP or a
    /// Unix socket; TLS is not supported yet.
    Postgres(Secret),
}

/// A SQL connector. Keeps one PostgreSQL connection and reconnects after it breaks.
#[derive(Debug)]
pub struct SqlConnector {
    pub name: String,
    pub target: SqlTarget,
    pub timeout: Duration,
    /// The PostgreSQL server may be a loopback or private address or a Unix socket;
    /// otherwise every address its host resolves to is checked and such ones are refused.
    pub allow_private: bool,
    pg: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

/// The outcome of one statement.
enum Applied {
    Rows(u64),
    AlreadyApplied,
}

/// A failure: its message and whether another attempt may succeed.
struct SqlFailure {
    message: String,
    retryable: bool,
}

impl SqlConnector {
    pub fn new(
        name: impl Into<String>,
        target: SqlTarget,
        timeout: Duration,
        allow_private: bool,
    ) -> Self {
        SqlConnector {
            name: name.into(),
            target,
            timeout,
            allow_private,
            pg: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection settings of `url`, with each host pinned to an address the outbound
    /// guard accepts (unless `allow_private`): the connection goes to the checked address,
    /// so a second lookup cannot change it.
    async fn pg_config(&self, url: &Secret) -> Result<tokio_postgres::Config, SqlFailure> {
        let mut config: tokio_postgres::Config =
            url.expose()
                .parse()
                .map_err(|e: tokio_postgres::Error| SqlFailure {
                    message: format!("invalid PostgreSQL URL: {}", pg_message(&e)),
                    retryable: false,
                })?;
        if self.allow_private {
            return Ok(config);
        }
        let refused = |what: String| SqlFailure {
            message: format!(
                "refused by the outbound guard: {what}; set `allow_private: true` on the connector to allow it"
            ),
            retryable: false,
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let mut pinned = Vec::new();
        for host in config.get_hosts() {
            match host {
                tokio_postgres::config::Host::Tcp(name) => {
                    let addrs: Vec<std::net::SocketAddr> =
                        tokio::net::lookup_host((name.as_str(), port))
                            .await
                            .map_err(|e| SqlFailure {
                                message: format!("cannot resolve {name}: {e}"),
                                retryable: true,
                            })?
                            .collect();
                    let ok = crate::ssrf::filter_addrs(name, addrs)
                        .map_err(|r| refused(format!("{} is {}", r.host, r.reason)))?;
                    pinned.push(ok[0].ip());
                }
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => {
                    return Err(refused(format!(
                        "{} is a local Unix socket",
                        path.display()
                    )));
                }
            }
        }
        for ip in pinned {
            config.hostaddr(ip);
        }
        Ok(config)
    }

    /// Run `statement` with `params` bound to `$1..$n`, at most once per `idempotency_key`.
    /// A value of `None` binds SQL NULL.
    pub async fn attempt(
        &self,
        statement: &str,
        params: &[Option<String>],
        idempotency_key: &str,
    ) -> AttemptOutcome {
        let started = Instant::now();
        if idempotency_key.is_empty() {
            return failure("empty idempotency key".into(), false, None, started);
        }
        let run = async {
            match &self.target {
                SqlTarget::Sqlite(path) => {
                    let path = path.clone();
                    let statement = statement.to_string();
                    let params = params.to_vec();
                    let key = idempotency_key.to_string();
                    tokio::task::spawn_blocking(move || {
                        sqlite_apply(&path, &statement, &params, &key)
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Err(SqlFailure {
                            message: format!("the SQLite task failed: {e}"),
                            retryable: true,
                        })
                    })
                }
                SqlTarget::Postgres(url) => {
                    self.pg_apply(url, statement, params, idempotency_key).await
                }
            }
        };
        let result = match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(SqlFailure {
                message: format!("timed out after {} ms", self.timeout.as_millis()),
                retryable: true,
            }),
        };
        match result {
            Ok(applied) => {
                let note = match applied {
                    Applied::Rows(n) => format!("{n} row(s) affected"),
                    Applied::AlreadyApplied => {
                        "already applied under this idempotency key; not run again".to_string()
                    }
                };
                AttemptOutcome {
                    status: None,
                    ok: true,
                    retryable: false,
                    retry_after: None,
                    error: None,
                    body_excerpt: Some(note),
                    body: Vec::new(),
                    body_truncated: false,
                    duration: started.elapsed(),
                }
            }
            Err(f) => failure(
                format!("SQL connector `{}`: {}", self.name, f.message),
                f.retryable,
                None,
                started,
            ),
        }
    }

    async fn pg_apply(
        &self,
        url: &Secret,
        statement: &str,
        params: &[Option<String>],
        key: &str,
    ) -> Result<Applied, SqlFailure> {
        let mut guard = self.pg.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let config = self.pg_config(url).await?;
            let (client, connection) =
                config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| SqlFailure {
                        message: format!("cannot connect to PostgreSQL: {}", pg_message(&e)),
                        retryable: true,
                    })?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %pg_message(&e), "SQL connector connection closed");
                }
            });
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (\
                     idempotency_key TEXT PRIMARY KEY, \
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                ))
                .await
                .map_err(pg_failure)?;
            *guard = Some(client);
        }
        let Some(client) = guard.as_mut() else {
            return Err(SqlFailure {
                message: "no PostgreSQL connection".into(),
                retryable: true,
            });
        };
        let result = pg_transaction(client, statement, params, key).await;
        if result.as_ref().is_err_and(|f| f.retryable) && client.is_closed() {
            *guard = None;
        }
        result
    }
}

async fn pg_transaction(
    client: &mut tokio_postgres::Client,
    statement: &str,
    params: &[Option<String>],
    key: &str,
) -> Result<Applied, SqlFailure> {
    let tx = client.transaction().await.map_err(pg_failure)?;
    let fresh = tx
        .execute(
            &format!(
                "INSERT INTO {LEDGER_TABLE} (idempotency_key) VALUES ($1) ON CONFLICT DO NOTHING"
            ),
            &[&key],
        )
        .await
        .map_err(pg_failure)?;
    if fresh == 0 {
        tx.commit().await.map_err(pg_failure)?;
        return Ok(Applied::AlreadyApplied);
    }
    let prepared = tx.prepare(statement).await.map_err(pg_failure)?;
    let types = prepared.params();
    if types.len() != params.len() {
        return Err(SqlFailure {
            message: format!(
                "the statement has {} parameter(s) but {} value(s) are given",
                types.len(),
                params.len()
            ),
            retryable: false,
        });
    }
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::with_capacity(params.len());
    for (i, (ty, v)) in types.iter().zip(params).enumerate() {
        values.push(pg_value(i + 1, ty, v.as_deref())?);
    }
    let refs: Vec<&(dyn ToSql + Sync)> = values
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = tx.execute(&prepared, &refs).await.map_err(pg_failure)?;
    tx.commit().await.map_err(pg_failure)?;
    Ok(Applied::Rows(rows))
}

/// Convert a rendered value to the parameter's type. Unsupported types say how to cast.
fn pg_value(
    n: usize,
    ty: &Type,
    v: Option<&str>,
) -> Result<Box<dyn ToSql + Sync + Send>, SqlFailure> {
    let bad = |what: &str| SqlFailure {
        message: format!("parameter ${n} ({ty}): {what}"),
        retryable: false,
    };
    let text_like = [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::UNKNOWN,
    ];
    if text_like.contains(ty) {
        return Ok(Box::new(v.map(str::to_string)));
    }
    // Non-text types: an empty value is NULL.
    let v = v.map(str::trim).filter(|s| !s.is_empty());
    let Some(s) = v else {
        return Ok(match *ty {
            Type::BOOL => Box::new(None::<bool>),
            Type::INT2 => Box::new(None::<i16>),
            Type::INT4 => Box::new(None::<i32>),
            Type::INT8 => Box::new(None::<i64>),
            Type::FLOAT4 => Box::new(None::<f32>),
            Type::FLOAT8 => Box::new(None::<f64>),
            Type::JSON | Type::JSONB => Box::new(None::<serde_json::Value>),
            _ => return Err(bad(UNSUPPORTED)),
        });
    };
    Ok(match *ty {
        Type::BOOL => Box::new(match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" => true,
            "false" | "f" | "0" | "no" => false,
            _ => return Err(bad("expected true or false")),
        }),
        Type::INT2 => Box::new(s.parse::<i16>().map_err(|_| bad("expected an integer"))?),
        Type::INT4 => Box::new(s.parse::<i32>().map_err(|_| bad("expected an integer"))?),
        Type::INT8 => Box::new(s.parse::<i64>().map_err(|_| bad("expected an integer"))?),
        Type::FLOAT4 => Box::new(s.parse::<f32>().map_err(|_| bad("expected a number"))?),
        Type::FLOAT8 => Box::new(s.parse::<f64>().map_err(|_| bad("expected a number"))?),
        Type::JSON | Type::JSONB => Box::new(
            serde_json::from_str::<serde_json::Value>(s)
                .unwrap_or_else(|_| serde_json::Value::String(s.to_string())),
        ),
        _ => return Err(bad(UNSUPPORTED)),
    })
}

const UNSUPPORTED: &str = "values of this type are not converted; cast a text parameter in the statement, e.g. `($1::text)::timestamptz`";

fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Connection trouble, serialization failures, deadlocks and resource exhaustion are
/// retryable; everything else (syntax, constraints, types) is permanent.
fn pg_failure(e: tokio_postgres::Error) -> SqlFailure {
    let retryable = match e.as_db_error() {
        Some(db) => {
            let class = &db.code().code()[..2];
            matches!(class, "08" | "40" | "53" | "57")
        }
        None => true,
    };
    SqlFailure {
        message: pg_message(&e),
        retryable,
    }
}

fn sqlite_apply(
    path: &std::path::Path,
    statement: &str,
    params: &[Option<String>],
    key: &str,
) -> Result<Applied, SqlFailure> {
    let mut conn = rusqlite::Connection::open(path).map_err(|e| SqlFailure {
        message: format!("cannot open the SQLite database: {e}"),
        retryable: true,
    })?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sqlite_failure)?;
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (\
         idempotency_key TEXT PRIMARY KEY, \
         applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
    ))
    .map_err(sqlite_failure)?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sqlite_failure)?;
    let fresh = tx
        .execute(
            &format!(
                "INSERT INTO {LEDGER_TABLE} (idempotency_key) VALUES (?1) ON CONFLICT DO NOTHING"
            ),
            [key],
        )
        .map_err(sqlite_failure)?;
    if fresh == 0 {
        tx.commit().map_err(sqlite_failure)?;
        return Ok(Applied::AlreadyApplied);
    }
    let rows = {
        let mut stmt = tx.prepare(statement).map_err(sqlite_failure)?;
        let expected = stmt.parameter_count();
        if expected != params.len() {
            return Err(SqlFailure {
                message: format!(
                    "the statement has {expected} parameter(s) but {} value(s) are given",
                    params.len()
                ),
                retryable: false,
            });
        }
        for (i, v) in params.iter().enumerate() {
            // `$N` binds the N-th value wherever it appears; `?N` and `?` bind by position.
            let idx = stmt
                .parameter_index(&format!("${}", i + 1))
                .map_err(sqlite_failure)?
                .unwrap_or(i + 1);
            stmt.raw_bind_parameter(idx, v.as_deref())
                .map_err(sqlite_failure)?;
        }
        stmt.raw_execute().map_err(sqlite_failure)?
    };
    tx.commit().map_err(sqlite_failure)?;
    Ok(Applied::Rows(rows as u64))
}

fn sqlite_failure(e: rusqlite::Error) -> SqlFailure {
    let retryable = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    SqlFailure {
        message: e.to_string(),
        retryable,
    }
}
