//! The LLM response cache, the LLM spend and run extras on PostgreSQL (same behaviour as
//! SQLite; the cache and the spend are shared by every node of the cluster).

use charter_core::model::UnixMillis;
use uuid::Uuid;

use super::PgStore;
use super::rows::{db, get};
use crate::Result;
use crate::decision::{DecisionStore, LlmSpend, RunExtra};

const EXTRA_COLS: &str = "run_id, event_id, kind, name, body, at";

fn to_extra(r: &tokio_postgres::Row) -> Result<RunExtra> {
    Ok(RunExtra {
        run_id: get(r, 0)?,
        event_id: get(r, 1)?,
        kind: get(r, 2)?,
        name: get(r, 3)?,
        body: get(r, 4)?,
        at: get(r, 5)?,
    })
}

fn to_spend(r: &tokio_postgres::Row) -> Result<LlmSpend> {
    let tokens: i64 = get(r, 0)?;
    Ok(LlmSpend {
        tokens: u64::try_from(tokens).unwrap_or(0),
        cost: get(r, 1)?,
    })
}

impl DecisionStore for PgStore {
    async fn llm_spent(&self, charter: &str, day: i64) -> Result<LlmSpend> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT tokens, cost FROM llm_spend WHERE charter = $1 AND day = $2",
                &[&charter, &day],
            )
            .await
            .map_err(db("reading the LLM spend"))?;
        row.map(|r| to_spend(&r))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    async fn add_llm_spend(&self, charter: &str, day: i64, spend: LlmSpend) -> Result<LlmSpend> {
        let client = self.client().await?;
        let tokens = i64::try_from(spend.tokens).unwrap_or(i64::MAX);
        let row = client
            .query_one(
                "INSERT INTO llm_spend (charter, day, tokens, cost) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (charter, day) DO UPDATE SET
                     tokens = llm_spend.tokens + EXCLUDED.tokens,
                     cost = llm_spend.cost + EXCLUDED.cost
                 RETURNING tokens, cost",
                &[&charter, &day, &tokens, &spend.cost],
            )
            .await
            .map_err(db("adding to the LLM spend"))?;
        to_spend(&row)
    }
    async fn adjust_llm_spend(
        &self,
        charter: &str,
        day: i64,
        tokens: i64,
        cost: f64,
    ) -> Result<LlmSpend> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO llm_spend (charter, day, tokens, cost)
                     VALUES ($1, $2, GREATEST(0, $3::BIGINT), GREATEST(0, $4::DOUBLE PRECISION))
                 ON CONFLICT (charter, day) DO UPDATE SET
                     tokens = GREATEST(0, llm_spend.tokens + $3::BIGINT),
                     cost = GREATEST(0, llm_spend.cost + $4::DOUBLE PRECISION)
                 RETURNING tokens, cost",
                &[&charter, &day, &tokens, &cost],
            )
            .await
            .map_err(db("adjusting the LLM spend"))?;
        to_spend(&row)
    }
    async fn cache_get(&self, key: &str, now: UnixMillis) -> Result<Option<String>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT value FROM llm_cache WHERE key = $1 AND expires_at > $2",
                &[&key, &now],
            )
            .await
            .map_err(db("reading the LLM cache"))?;
        row.map(|r| get(&r, 0)).transpose()
    }

    async fn cache_put(
        &self,
        key: &str,
        value: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM llm_cache WHERE expires_at <= $1", &[&now])
            .await
            .map_err(db("sweeping the LLM cache"))?;
        client
            .execute(
                "INSERT INTO llm_cache (key, value, created_at, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,
                     created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at",
                &[&key, &value, &now, &expires_at],
            )
            .await
            .map_err(db("writing the LLM cache"))?;
        Ok(())
    }

    async fn take_llm_slot(
        &self,
        charter: &str,
        now: UnixMillis,
        window_ms: i64,
        max: u32,
    ) -> Result<Option<UnixMillis>> {
        let client = self.client().await?;
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        let stmt = client
            .prepare_cached(
                "INSERT INTO llm_rate (charter, window_start, taken) VALUES ($1, $2, 1)
                 ON CONFLICT (charter) DO UPDATE SET
                     taken = CASE WHEN EXCLUDED.window_start >= llm_rate.window_start + $3
                                  THEN 1 ELSE llm_rate.taken + 1 END,
                     window_start = CASE WHEN EXCLUDED.window_start >= llm_rate.window_start + $3
                                         THEN EXCLUDED.window_start ELSE llm_rate.window_start END
                 WHERE EXCLUDED.window_start >= llm_rate.window_start + $3 OR llm_rate.taken < $4
                 RETURNING taken",
            )
            .await
            .map_err(db("preparing an LLM rate slot"))?;
        let admitted = client
            .query_opt(&stmt, &[&charter, &now, &window_ms, &max])
            .await
            .map_err(db("taking an LLM rate slot"))?;
        if admitted.is_some() {
            return Ok(None);
        }
        let row = client
            .query_one(
                "SELECT window_start FROM llm_rate WHERE charter = $1",
                &[&charter],
            )
            .await
            .map_err(db("reading an LLM rate window"))?;
        let start: i64 = get(&row, 0)?;
        Ok(Some(start.saturating_add(window_ms)))
    }

    async fn record_run_extra(&self, e: &RunExtra) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO run_extras (run_id, event_id, kind, name, body, at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (run_id, kind, name) DO UPDATE SET body = EXCLUDED.body,
                     at = EXCLUDED.at",
            )
            .await
            .map_err(db("preparing a run extra"))?;
        client
            .execute(
                &stmt,
                &[&e.run_id, &e.event_id, &e.kind, &e.name, &e.body, &e.at],
            )
            .await
            .map_err(db("recording a run extra"))?;
        Ok(())
    }

    async fn run_extras(&self, run_id: Uuid) -> Result<Vec<RunExtra>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {EXTRA_COLS} FROM run_extras WHERE run_id = $1 ORDER BY at, kind, name"
                ),
                &[&run_id],
            )
            .await
            .map_err(db("listing run extras"))?;
        rows.iter().map(to_extra).collect()
    }

    async fn latest_run_extra(
        &self,
        event_id: Uuid,
        kind: &str,
        name: &str,
    ) -> Result<Option<RunExtra>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {EXTRA_COLS} FROM run_extras WHERE event_id = $1 AND kind = $2
                     AND name = $3 ORDER BY at DESC, run_id DESC LIMIT 1"
                ),
                &[&event_id, &kind, &name],
            )
            .await
            .map_err(db("reading a run extra"))?;
        row.as_ref().map(to_extra).transpose()
    }
}
