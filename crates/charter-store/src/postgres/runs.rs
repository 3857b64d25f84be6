//! Runs on PostgreSQL: the [`crate::RunStore`] methods and the reads of runs with their
//! actions.

use charter_core::model::{
    ActionRecord, ActionStatus, AttemptRecord, Decision, RunOutcome, RunRecord, UnixMillis,
};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::Json;
use uuid::Uuid;

use std::collections::BTreeMap;

use super::rows;
use super::rows::{db, get, parse_enum};
use super::run_writes::{
    pg_action_succeeded, pg_begin_action, pg_finish_action, pg_finish_run, pg_record_attempt,
    pg_record_decision, pg_start_run,
};
use super::{Conditions, Param, PgStore, now_millis, param_refs, run_writes};
use crate::{InDoubtAction, InDoubtFilter};
use crate::{Result, RunFilter, RunStore, RunWrite, RunWritten, StoreError};

impl RunStore for PgStore {
    async fn start_run(
        &self,
        run_id: Uuid,
        event_id: Uuid,
        charter: &str,
        charter_version: &str,
        mode: &str,
        now: UnixMillis,
    ) -> Result<()> {
        let client = self.client().await?;
        pg_start_run(
            &client,
            run_id,
            event_id,
            charter,
            charter_version,
            mode,
            now,
        )
        .await
    }

    async fn record_decision(&self, run_id: Uuid, decision: &Decision) -> Result<()> {
        let client = self.client().await?;
        pg_record_decision(&client, run_id, decision).await
    }

    async fn begin_action(
        &self,
        run_id: Uuid,
        action: &str,
        idempotency_key: &str,
        params: &serde_json::Value,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("beginning begin_action"))?;
        pg_begin_action(&tx, run_id, action, idempotency_key, params).await?;
        tx.commit().await.map_err(db("committing begin_action"))?;
        Ok(())
    }

    async fn record_attempt(
        &self,
        run_id: Uuid,
        action: &str,
        attempt: &AttemptRecord,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("beginning record_attempt"))?;
        pg_record_attempt(&tx, run_id, action, attempt).await?;
        tx.commit().await.map_err(db("committing an attempt"))?;
        Ok(())
    }

    async fn finish_action(&self, run_id: Uuid, record: &ActionRecord) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("beginning finish_action"))?;
        pg_finish_action(&tx, run_id, record, now_millis()).await?;
        tx.commit().await.map_err(db("committing finish_action"))?;
        Ok(())
    }

    async fn record_run(&self, writes: Vec<RunWrite>) -> Result<RunWritten> {
        run_writes::record_run(self, writes).await
    }

    async fn action_succeeded(&self, idempotency_key: &str) -> Result<bool> {
        let client = self.client().await?;
        pg_action_succeeded(&client, idempotency_key).await
    }

    async fn finish_run(
        &self,
        run_id: Uuid,
        route: Option<usize>,
        outcome: RunOutcome,
        error: Option<&str>,
        now: UnixMillis,
    ) -> Result<()> {
        let client = self.client().await?;
        pg_finish_run(&client, run_id, route, outcome, error, now).await
    }

    /// Runs oldest first. An action begun and still in flight is left out; one cut off by a
    /// crash is reported as in doubt once its event was claimed again.
    async fn runs_for_event(&self, event_id: Uuid) -> Result<Vec<RunRecord>> {
        self.load_runs(
            "WHERE event_id = $1 ORDER BY started_at, seq".to_string(),
            vec![Box::new(event_id)],
        )
        .await
    }

    async fn list_in_doubt(&self, filter: InDoubtFilter) -> Result<Vec<InDoubtAction>> {
        let mut c = Conditions::default();
        c.always("a.status = 'in_doubt'");
        c.when("r.charter =", filter.charter);
        if filter.unsettled {
            c.always(
                "NOT EXISTS (SELECT 1 FROM succeeded_keys k
                             WHERE k.idempotency_key = a.idempotency_key)",
            );
        }
        let (where_sql, params, limit) = c.with_limit(filter.limit);
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT a.run_id, r.event_id, r.charter, a.action, a.idempotency_key,
                         a.params, r.started_at, r.finished_at,
                         (SELECT count(*) FROM action_attempts t WHERE t.action_id = a.id),
                         EXISTS (SELECT 1 FROM succeeded_keys k
                                 WHERE k.idempotency_key = a.idempotency_key)
                     FROM action_records a JOIN runs r ON r.id = a.run_id
                     {where_sql} ORDER BY a.id DESC LIMIT {limit}"
                ),
                &param_refs(&params),
            )
            .await
            .map_err(db("listing in-doubt actions"))?;
        rows.iter()
            .map(|r| {
                let attempts: i64 = get(r, 8)?;
                Ok(InDoubtAction {
                    run_id: get(r, 0)?,
                    event_id: get(r, 1)?,
                    charter: get(r, 2)?,
                    action: get(r, 3)?,
                    idempotency_key: get(r, 4)?,
                    params: get(r, 5)?,
                    started_at: get(r, 6)?,
                    interrupted_at: get(r, 7)?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    settled: get(r, 9)?,
                })
            })
            .collect()
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>> {
        self.page_runs(filter).await
    }

    async fn count_runs(&self, filter: RunFilter) -> Result<u64> {
        self.count_runs_matching(filter).await
    }
}

impl PgStore {
    /// Runs selected by `tail` (a `WHERE … ORDER BY …` over `runs` with `params` for its
    /// placeholders), each with its decision and finished actions, read in one snapshot so
    /// runs, actions and attempts agree.
    pub(super) async fn load_runs(
        &self,
        tail: String,
        params: Vec<Param>,
    ) -> Result<Vec<RunRecord>> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db("beginning a runs query"))?;
        let runs_stmt = tx
            .prepare_cached(&format!(
                "SELECT id, charter, charter_version, mode, started_at, finished_at, outcome,
                     decision, route, error, event_id
                 FROM runs {tail}"
            ))
            .await
            .map_err(db("preparing a runs query"))?;
        let actions_stmt = tx
            .prepare_cached(
                "SELECT a.id, a.run_id, a.action, a.idempotency_key, a.params, a.status
                 FROM action_records a
                 WHERE a.run_id = ANY($1) AND a.status <> 'pending'
                 ORDER BY a.id",
            )
            .await
            .map_err(db("preparing actions"))?;
        let attempts_stmt = tx
            .prepare_cached(
                "SELECT t.action_id, t.attempt, t.started_at, t.duration_ms, t.http_status,
                     t.error, t.ok
                 FROM action_attempts t
                 JOIN action_records a ON a.id = t.action_id
                 WHERE a.run_id = ANY($1)
                 ORDER BY t.action_id, t.attempt",
            )
            .await
            .map_err(db("preparing attempts"))?;
        let run_rows = tx
            .query(&runs_stmt, &param_refs(&params))
            .await
            .map_err(db("loading runs"))?;
        let run_ids = run_rows
            .iter()
            .map(|r| get::<Uuid>(r, 0))
            .collect::<Result<Vec<Uuid>>>()?;
        let action_rows = tx
            .query(&actions_stmt, &[&run_ids])
            .await
            .map_err(db("loading actions"))?;
        let attempt_rows = tx
            .query(&attempts_stmt, &[&run_ids])
            .await
            .map_err(db("loading attempts"))?;
        tx.commit().await.map_err(db("ending a runs query"))?;

        let mut attempts: BTreeMap<i64, Vec<AttemptRecord>> = BTreeMap::new();
        for r in &attempt_rows {
            let action_id: i64 = get(r, 0)?;
            attempts
                .entry(action_id)
                .or_default()
                .push(rows::attempt_record(r)?);
        }
        let mut actions: BTreeMap<Uuid, Vec<ActionRecord>> = BTreeMap::new();
        for r in &action_rows {
            let id: i64 = get(r, 0)?;
            let run_id: Uuid = get(r, 1)?;
            let status: String = get(r, 5)?;
            actions.entry(run_id).or_default().push(ActionRecord {
                action: get(r, 2)?,
                idempotency_key: get(r, 3)?,
                params: get(r, 4)?,
                status: parse_enum::<ActionStatus>("action status", &status)?,
                attempts: attempts.remove(&id).unwrap_or_default(),
            });
        }
        run_rows
            .iter()
            .map(|r| {
                let id: Uuid = get(r, 0)?;
                let outcome: Option<String> = get(r, 6)?;
                let decision: Option<Json<Decision>> = get(r, 7)?;
                let route: Option<i64> = get(r, 8)?;
                Ok(RunRecord {
                    id,
                    event_id: get(r, 10)?,
                    charter: get(r, 1)?,
                    charter_version: get(r, 2)?,
                    mode: get(r, 3)?,
                    started_at: get(r, 4)?,
                    finished_at: get(r, 5)?,
                    outcome: outcome
                        .map(|o| parse_enum::<RunOutcome>("run outcome", &o))
                        .transpose()?,
                    decision: decision.map(|Json(d)| d),
                    route: route
                        .map(|r| {
                            usize::try_from(r).map_err(|_| {
                                StoreError::Corrupt(format!("route out of range: {r}"))
                            })
                        })
                        .transpose()?,
                    actions: actions.remove(&id).unwrap_or_default(),
                    error: get(r, 9)?,
                })
            })
            .collect()
    }
}
