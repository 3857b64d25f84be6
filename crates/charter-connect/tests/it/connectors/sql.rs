//! SQL targets: SQLite and the local PostgreSQL, one statement per idempotency key.

use super::*;

// ---------------------------------------------------------------------------------------
// SQL

#[tokio::test]
async fn sqlite_statement_runs_once_per_key_with_bound_parameters() {
    let dir = temp_dir("sqlite");
    let db = dir.join("target.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE tickets (id INTEGER, label TEXT, note TEXT)")
            .unwrap();
    }
    let sql = SqlConnector::new(
        "warehouse",
        SqlTarget::Sqlite(db.clone()),
        Duration::from_secs(5),
        false,
    );
    let stmt = "INSERT INTO tickets (label, id, note) VALUES ($2, $1, $3)";
    let hostile = "x'); DROP TABLE tickets; --";
    let params = vec![
        Some("42".to_string()),
        Some("billing".to_string()),
        Some(hostile.to_string()),
    ];
    let out = sql.attempt(stmt, &params, "key-1").await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.body_excerpt.as_deref(), Some("1 row(s) affected"));
    // A retry under the same key does not insert again.
    let again = sql.attempt(stmt, &params, "key-1").await;
    assert!(again.ok);
    assert!(again.body_excerpt.unwrap().contains("already applied"));
    let other = sql
        .attempt(stmt, &[Some("43".into()), None, None], "key-2")
        .await;
    assert!(other.ok);

    let c = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(i64, Option<String>, Option<String>)> = c
        .prepare("SELECT id, label, note FROM tickets ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        vec![
            (42, Some("billing".into()), Some(hostile.into())),
            (43, None, None)
        ]
    );

    // A broken statement is permanent; a wrong parameter count is said plainly.
    let bad = sql
        .attempt("INSERT INTO nope VALUES ($1)", &[Some("1".into())], "key-3")
        .await;
    assert!(!bad.ok && !bad.retryable);
    assert!(bad.error.unwrap().contains("no such table"));
    let count = sql.attempt(stmt, &[Some("1".into())], "key-4").await;
    assert!(
        count
            .error
            .unwrap()
            .contains("3 parameter(s) but 1 value(s)")
    );
    // The failed attempts left no ledger entry: fixing the statement lets the key run.
    let fixed = sql.attempt(stmt, &params, "key-4").await;
    assert!(fixed.ok && fixed.body_excerpt.unwrap().contains("1 row"));
    let _ = std::fs::remove_dir_all(dir);
}

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[tokio::test]
async fn postgres_statement_runs_once_per_key_with_typed_parameters() {
    if !crate::tools::available(crate::tools::Tool::Postgres, || {
        crate::tools::tcp_listening("127.0.0.1:5432")
    }) {
        return;
    }
    let (client, conn) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("the local PostgreSQL at {PG_URL} is not reachable: {e}"));
    tokio::spawn(conn);
    let table = format!("charter_connect_test_{}", uuid_like());
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, label TEXT, score DOUBLE PRECISION, vip BOOLEAN, extra JSONB)"
        ))
        .await
        .unwrap();
    let sql = SqlConnector::new(
        "warehouse",
        SqlTarget::Postgres(Secret::new(PG_URL)),
        Duration::from_secs(10),
        // The test server listens on 127.0.0.1.
        true,
    );
    let stmt =
        format!("INSERT INTO {table} (id, label, score, vip, extra) VALUES ($1, $2, $3, $4, $5)");
    let key = format!("pg-key-{}", uuid_like());
    let params: Vec<Option<String>> = vec![
        Some("7".into()),
        Some("it's billing'); DROP TABLE x; --".into()),
        Some("0.93".into()),
        Some("true".into()),
        Some(r#"{"plan": "enterprise"}"#.into()),
    ];
    let out = sql.attempt(&stmt, &params, &key).await;
    assert!(out.ok, "{out:?}");
    let again = sql.attempt(&stmt, &params, &key).await;
    assert!(again.ok, "{again:?}");
    assert!(again.body_excerpt.unwrap().contains("already applied"));

    let rows = client
        .query(
            &format!("SELECT id, label, score, vip, extra FROM {table}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.get::<_, i32>(0), 7);
    assert_eq!(r.get::<_, String>(1), "it's billing'); DROP TABLE x; --");
    assert!((r.get::<_, f64>(2) - 0.93).abs() < 1e-9);
    assert!(r.get::<_, bool>(3));
    assert_eq!(
        r.get::<_, serde_json::Value>(4),
        json!({"plan": "enterprise"})
    );

    // A value that does not fit the column type is a permanent, located failure.
    let bad = sql
        .attempt(
            &stmt,
            &[Some("seven".into()), None, None, None, None],
            &format!("{key}-b"),
        )
        .await;
    assert!(!bad.ok && !bad.retryable);
    assert!(bad.error.unwrap().contains("parameter $1"), "bad param");
    // A unique violation is permanent too.
    let dup = sql.attempt(&stmt, &params, &format!("{key}-c")).await;
    assert!(!dup.ok && !dup.retryable, "{dup:?}");
    // Without allow_private the outbound guard refuses the loopback server before any
    // statement runs, permanently.
    let guarded = SqlConnector::new(
        "warehouse",
        SqlTarget::Postgres(Secret::new(PG_URL)),
        Duration::from_secs(10),
        false,
    );
    let out = guarded.attempt(&stmt, &params, &format!("{key}-d")).await;
    assert!(!out.ok && !out.retryable, "{out:?}");
    let error = out.error.unwrap_or_default();
    assert!(
        error.contains("refused by the outbound guard") && error.contains("127.0.0.1 is"),
        "{error}"
    );
    let rows = client
        .query(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap();
    assert_eq!(
        rows[0].get::<_, i64>(0),
        1,
        "the refused attempt inserted nothing"
    );
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}
