//! The conformance suite (`charter_store::conformance`) against every backend: one test per
//! check per backend, named `conformance::<backend>::<check>`, each on a fresh store.
//!
//! Backends: `sqlite` (default options), `sqlite_pipelined` (fsync pipelined with the next
//! batch), `postgres` (a database of its own per check; skips without a server unless
//! `CI=true`, see `postgres.rs`).

use std::collections::BTreeSet;
use std::path::Path;

use charter_store::conformance::Backend;
use charter_store::postgres::{PgStore, SCHEMA_VERSION};
use charter_store::sqlite::{Durability, SqliteOptions, SqliteStore};

use crate::postgres::{TestDb, test_db};
use crate::store::TempDir;

/// The SQLite store with default options, in a directory of its own.
pub struct Sqlite {
    store: SqliteStore,
    _dir: TempDir,
}

/// The SQLite store with pipelined fsync, in a directory of its own.
pub struct SqlitePipelined(Sqlite);

fn open_sqlite(options: SqliteOptions) -> Sqlite {
    let dir = TempDir::new();
    let store = SqliteStore::open_with(&dir.db(), options).expect("open store");
    Sqlite { store, _dir: dir }
}

impl Backend for Sqlite {
    type Store = SqliteStore;

    async fn open(_check: &'static str) -> Option<Self> {
        Some(open_sqlite(SqliteOptions::default()))
    }

    fn store(&self) -> &SqliteStore {
        &self.store
    }

    async fn finish(self) {
        self.store.close().await;
    }
}

impl Backend for SqlitePipelined {
    type Store = SqliteStore;

    async fn open(_check: &'static str) -> Option<Self> {
        Some(SqlitePipelined(open_sqlite(SqliteOptions {
            durability: Durability::Pipelined,
            ..SqliteOptions::default()
        })))
    }

    fn store(&self) -> &SqliteStore {
        &self.0.store
    }

    async fn finish(self) {
        self.0.finish().await;
    }
}

/// The PostgreSQL store on a database of its own (dropped after the check).
pub struct Postgres {
    store: PgStore,
    _db: TestDb,
}

impl Backend for Postgres {
    type Store = PgStore;

    async fn open(check: &'static str) -> Option<Self> {
        let db = test_db(check).await?;
        let store = PgStore::connect(&db.url, 8).await.expect("connect");
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        store.ready().await.expect("ready");
        Some(Postgres { store, _db: db })
    }

    fn store(&self) -> &PgStore {
        &self.store
    }

    async fn finish(self) {
        self.store.close().await;
    }
}

/// Every public `check_*` of the suite is in `conformance_tests!`'s list: a check missing
/// there would never run.
#[test]
fn every_check_is_in_the_test_list() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/conformance");
    let mut defined = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("pub async fn check_") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                defined.insert(format!("check_{name}"));
            }
        }
    }
    let module = std::fs::read_to_string(dir.join("mod.rs")).unwrap();
    let start = module
        .find("$crate::conformance_tests!(@each $backend;")
        .expect("the macro's list");
    let list = &module[start..];
    let list = &list[list.find(';').unwrap() + 1..list.find(");").unwrap()];
    let listed: BTreeSet<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    assert!(defined.len() > 30, "found only {defined:?}");
    assert_eq!(
        defined, listed,
        "checks defined vs. listed in conformance_tests!"
    );
}

mod sqlite {
    charter_store::conformance_tests!(super::Sqlite);
}

mod sqlite_pipelined {
    charter_store::conformance_tests!(super::SqlitePipelined);
}

mod postgres {
    charter_store::conformance_tests!(super::Postgres);
}
