//! The LLM response cache, the LLM spend and run extras on SQLite.

use charter_core::model::UnixMillis;
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::SqliteStore;
use super::rows::{db, parse_json, parse_uuid, to_json};
use crate::Result;
use crate::decision::{DecisionStore, LlmSpend, RunExtra};

fn extra(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, String, String, i64)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_extra(t: (String, String, String, String, String, i64)) -> Result<RunExtra> {
    Ok(RunExtra {
        run_id: parse_uuid(&t.0)?,
        event_id: parse_uuid(&t.1)?,
        kind: t.2,
        name: t.3,
        body: parse_json("run extra", &t.4)?,
        at: t.5,
    })
}

const EXTRA_COLS: &str = "run_id, event_id, kind, name, body, at";

/// Admit a request into the charter's rate window (`?2` now, `?3` window length, `?4` the
/// window's maximum): a new or ended window restarts at now with one request; an open one
/// counts it if there is room. A row comes back only when the request is admitted.
const TAKE_SLOT: &str = "INSERT INTO llm_rate (charter, window_start, taken) VALUES (?1, ?2, 1)
     ON CONFLICT (charter) DO UPDATE SET
         taken = CASE WHEN excluded.window_start >= window_start + ?3 THEN 1 ELSE taken + 1 END,
         window_start = CASE WHEN excluded.window_start >= window_start + ?3
                             THEN excluded.window_start ELSE window_start END
     WHERE excluded.window_start >= window_start + ?3 OR taken < ?4
     RETURNING taken";

/// Token counts are stored as SQLite integers (i64); a count past that saturates.
fn spend_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LlmSpend> {
    let tokens: i64 = r.get(0)?;
    Ok(LlmSpend {
        tokens: u64::try_from(tokens).unwrap_or(0),
        cost: r.get(1)?,
    })
}

impl DecisionStore for SqliteStore {
    async fn llm_spent(&self, charter: &str, day: i64) -> Result<LlmSpend> {
        let charter = charter.to_string();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT tokens, cost FROM llm_spend WHERE charter = ?1 AND day = ?2",
            )
            .and_then(|mut s| s.query_row(params![charter, day], spend_row).optional())
            .map(Option::unwrap_or_default)
            .map_err(db("reading the LLM spend"))
        })
        .await
    }

    async fn add_llm_spend(&self, charter: &str, day: i64, spend: LlmSpend) -> Result<LlmSpend> {
        let charter = charter.to_string();
        let tokens = i64::try_from(spend.tokens).unwrap_or(i64::MAX);
        // One statement (the upsert reads its own result): no savepoint needed.
        self.writer()?
            .submit_atomic(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO llm_spend (charter, day, tokens, cost) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (charter, day) DO UPDATE SET
                         tokens = tokens + excluded.tokens, cost = cost + excluded.cost
                     RETURNING tokens, cost",
                )
                .and_then(|mut s| s.query_row(params![charter, day, tokens, spend.cost], spend_row))
                .map_err(db("adding to the LLM spend"))
            })
            .await
    }
    async fn adjust_llm_spend(
        &self,
        charter: &str,
        day: i64,
        tokens: i64,
        cost: f64,
    ) -> Result<LlmSpend> {
        let charter = charter.to_string();
        self.writer()?
            .submit_atomic(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO llm_spend (charter, day, tokens, cost)
                         VALUES (?1, ?2, max(0, ?3), max(0.0, ?4))
                     ON CONFLICT (charter, day) DO UPDATE SET
                         tokens = max(0, tokens + ?3),
                         cost = max(0.0, cost + ?4)
                     RETURNING tokens, cost",
                )
                .and_then(|mut s| s.query_row(params![charter, day, tokens, cost], spend_row))
                .map_err(db("adjusting the LLM spend"))
            })
            .await
    }
    async fn cache_get(&self, key: &str, now: UnixMillis) -> Result<Option<String>> {
        let key = key.to_string();
        self.read(move |conn| {
            conn.prepare_cached("SELECT value FROM llm_cache WHERE key = ?1 AND expires_at > ?2")
                .and_then(|mut s| s.query_row(params![key, now], |r| r.get(0)).optional())
                .map_err(db("reading the LLM cache"))
        })
        .await
    }

    async fn cache_put(
        &self,
        key: &str,
        value: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM llm_cache WHERE expires_at <= ?1")
                .and_then(|mut s| s.execute(params![now]))
                .map_err(db("sweeping the LLM cache"))?;
            conn.prepare_cached(
                "INSERT INTO llm_cache (key, value, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                     created_at = excluded.created_at, expires_at = excluded.expires_at",
            )
            .and_then(|mut s| s.execute(params![key, value, now, expires_at]))
            .map_err(db("writing the LLM cache"))?;
            Ok(())
        })
        .await
    }

    async fn take_llm_slot(
        &self,
        charter: &str,
        now: UnixMillis,
        window_ms: i64,
        max: u32,
    ) -> Result<Option<UnixMillis>> {
        let charter = charter.to_string();
        // One write (the upsert); the read after it runs only when the upsert changed
        // nothing: no savepoint needed.
        self.writer()?
            .submit_atomic(move |conn| {
                let admitted = conn
                    .prepare_cached(TAKE_SLOT)
                    .and_then(|mut s| {
                        s.query_row(params![charter, now, window_ms, max], |_| Ok(()))
                            .optional()
                    })
                    .map_err(db("taking an LLM rate slot"))?;
                if admitted.is_some() {
                    return Ok(None);
                }
                let start: i64 = conn
                    .prepare_cached("SELECT window_start FROM llm_rate WHERE charter = ?1")
                    .and_then(|mut s| s.query_row(params![charter], |r| r.get(0)))
                    .map_err(db("reading an LLM rate window"))?;
                Ok(Some(start.saturating_add(window_ms)))
            })
            .await
    }

    async fn record_run_extra(&self, e: &RunExtra) -> Result<()> {
        let body = to_json("run extra", &e.body)?;
        let (run, event, kind, name, at) = (
            e.run_id.to_string(),
            e.event_id.to_string(),
            e.kind.clone(),
            e.name.clone(),
            e.at,
        );
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO run_extras (run_id, event_id, kind, name, body, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (run_id, kind, name) DO UPDATE SET body = excluded.body,
                     at = excluded.at",
            )
            .and_then(|mut s| s.execute(params![run, event, kind, name, body, at]))
            .map_err(db("recording a run extra"))?;
            Ok(())
        })
        .await
    }

    async fn run_extras(&self, run_id: Uuid) -> Result<Vec<RunExtra>> {
        let run = run_id.to_string();
        let rows = self
            .read(move |conn| {
                let mut s = conn
                    .prepare_cached(&format!(
                        "SELECT {EXTRA_COLS} FROM run_extras WHERE run_id = ?1 ORDER BY at, kind, name"
                    ))
                    .map_err(db("listing run extras"))?;
                let rows = s
                    .query_map(params![run], extra)
                    .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(db("listing run extras"))?;
                Ok(rows)
            })
            .await?;
        rows.into_iter().map(to_extra).collect()
    }

    async fn latest_run_extra(
        &self,
        event_id: Uuid,
        kind: &str,
        name: &str,
    ) -> Result<Option<RunExtra>> {
        let (event, kind, name) = (event_id.to_string(), kind.to_string(), name.to_string());
        let row = self
            .read(move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {EXTRA_COLS} FROM run_extras WHERE event_id = ?1 AND kind = ?2
                     AND name = ?3 ORDER BY at DESC, run_id DESC LIMIT 1"
                ))
                .and_then(|mut s| s.query_row(params![event, kind, name], extra).optional())
                .map_err(db("reading a run extra"))
            })
            .await?;
        row.map(to_extra).transpose()
    }
}
