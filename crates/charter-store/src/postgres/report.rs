//! Measurements, reports, backlog, readiness and alert incidents on PostgreSQL (same
//! behaviour as SQLite).

use std::collections::BTreeMap;

use charter_core::model::UnixMillis;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::rows::{db, get};
use super::{JobLock, PgStore, SCHEMA_VERSION, limit_of};
use crate::report::{
    AlertStore, CharterBacklog, CharterReport, Incident, IncidentState, MeasureTotal, NewIncident,
    NewMeasurement, Readiness, ReportQuery, ReportStore, assemble, v7_floor,
};
use crate::{Result, StoreError};

/// Insert one measurement through a client or an open transaction.
pub(super) async fn insert_measurement<C: deadpool_postgres::GenericClient>(
    c: &C,
    m: &NewMeasurement,
) -> Result<()> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO measurements (charter, name, run_id, event_id, value, at, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(db("preparing a measurement"))?;
    c.execute(
        &stmt,
        &[
            &m.charter,
            &m.name,
            &m.run_id,
            &m.event_id,
            &m.value,
            &m.at,
            &m.detail,
        ],
    )
    .await
    .map_err(db("recording a measurement"))?;
    Ok(())
}

/// Most samples read per series for one report.
const MAX_SAMPLES: i64 = 200_000;

/// A report's samples: arrival times, (end, outcome) of finished runs, (done at, cycle time).
type Samples = (
    Vec<UnixMillis>,
    Vec<(UnixMillis, String)>,
    Vec<(UnixMillis, i64)>,
);

/// The job lock name of alert evaluation.
const ALERT_JOB: &str = "charter-alerts";

const INCIDENT_COLS: &str = "id, charter, alert, state, opened_at, resolved_at, value, detail, \
     notified_open_at, notified_resolved_at";

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn incident(r: &Row) -> Result<Incident> {
    let state: String = get(r, 3)?;
    Ok(Incident {
        id: get(r, 0)?,
        charter: get(r, 1)?,
        alert: get(r, 2)?,
        state: IncidentState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown incident state {state:?}")))?,
        opened_at: get(r, 4)?,
        resolved_at: get(r, 5)?,
        value: get(r, 6)?,
        detail: get(r, 7)?,
        notified_open_at: get(r, 8)?,
        notified_resolved_at: get(r, 9)?,
    })
}

impl PgStore {
    async fn counts_by(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<BTreeMap<String, u64>> {
        let client = self.client().await?;
        let rows = client.query(sql, args).await.map_err(db("counting"))?;
        let mut out = BTreeMap::new();
        for r in &rows {
            let k: Option<String> = get(r, 0)?;
            let n: i64 = get(r, 1)?;
            out.insert(k.unwrap_or_default(), count(n));
        }
        Ok(out)
    }

    async fn single_count(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let client = self.client().await?;
        let row = client.query_one(sql, args).await.map_err(db("counting"))?;
        Ok(count(get(&row, 0)?))
    }

    async fn incidents(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<Incident>> {
        let client = self.client().await?;
        let rows = client
            .query(sql, args)
            .await
            .map_err(db("querying incidents"))?;
        rows.iter().map(incident).collect()
    }

    async fn escalations_by_reason(
        &self,
        c: &str,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<BTreeMap<String, u64>> {
        self.counts_by(
            "SELECT reason, count(*) FROM escalations
             WHERE charter = $1 AND created_at >= $2 AND created_at < $3 GROUP BY reason",
            &[&c, &since, &until],
        )
        .await
    }

    /// A report's samples in `[since, until)`, newest first (at most [`MAX_SAMPLES`] each):
    /// events' arrival times, finished runs' (end, outcome), and (done at, cycle time) of
    /// the events finished in the window.
    async fn report_samples(&self, q: &ReportQuery) -> Result<Samples> {
        let (c, since, until) = (q.charter.as_str(), q.since, q.until);
        let client = self.client().await?;
        let received: Vec<UnixMillis> = client
            .query(
                "SELECT received_at FROM events
                 WHERE charter = $1 AND received_at >= $2 AND received_at < $3
                 ORDER BY received_at DESC LIMIT $4",
                &[&c, &since, &until, &MAX_SAMPLES],
            )
            .await
            .map_err(db("report events"))?
            .iter()
            .map(|r| get(r, 0))
            .collect::<Result<_>>()?;
        let finished: Vec<(UnixMillis, String)> = client
            .query(
                "SELECT finished_at, outcome FROM runs
                 WHERE charter = $1 AND finished_at >= $2 AND finished_at < $3
                   AND outcome IS NOT NULL
                 ORDER BY finished_at DESC LIMIT $4",
                &[&c, &since, &until, &MAX_SAMPLES],
            )
            .await
            .map_err(db("report runs"))?
            .iter()
            .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
            .collect::<Result<_>>()?;
        let cycles: Vec<(UnixMillis, i64)> = client
            .query(
                "SELECT max(r.finished_at) AS done_at, e.received_at FROM events e
                 JOIN runs r ON r.event_id = e.id
                 WHERE e.charter = $1 AND e.status = 'done' AND e.received_at < $3
                   AND r.finished_at IS NOT NULL
                 GROUP BY e.id, e.received_at
                 HAVING max(r.finished_at) >= $2 AND max(r.finished_at) < $3
                 ORDER BY done_at DESC LIMIT $4",
                &[&c, &since, &until, &MAX_SAMPLES],
            )
            .await
            .map_err(db("report cycle times"))?
            .iter()
            .map(|r| {
                let done: i64 = get(r, 0)?;
                let received: i64 = get(r, 1)?;
                Ok((done, (done - received).max(0)))
            })
            .collect::<Result<_>>()?;
        Ok((received, finished, cycles))
    }

    /// The report's rejected payloads and approval counts.
    async fn count_rejected_and_approvals(
        &self,
        q: &ReportQuery,
        report: &mut CharterReport,
    ) -> Result<()> {
        let (c, since, until) = (q.charter.as_str(), q.since, q.until);
        let w: [&(dyn ToSql + Sync); 3] = [&c, &since, &until];
        report.rejected_payloads = self
            .single_count(
                "SELECT count(*) FROM rejected
                 WHERE charter = $1 AND received_at >= $2 AND received_at < $3",
                &w,
            )
            .await?;
        report.approvals.requested = self
            .single_count(
                "SELECT count(*) FROM approvals
                 WHERE charter = $1 AND created_at >= $2 AND created_at < $3",
                &w,
            )
            .await?;
        let decided = self
            .counts_by(
                "SELECT status, count(*) FROM approvals
                 WHERE charter = $1 AND decided_at >= $2 AND decided_at < $3 GROUP BY status",
                &w,
            )
            .await?;
        report.approvals.approved = decided.get("approved").copied().unwrap_or(0);
        report.approvals.rejected = decided.get("rejected").copied().unwrap_or(0);
        report.approvals.expired = decided.get("expired").copied().unwrap_or(0);
        report.approvals.edited = self
            .single_count(
                "SELECT count(*) FROM approvals WHERE charter = $1 AND decided_at >= $2
                   AND decided_at < $3 AND status = 'approved' AND edited_hash IS NOT NULL",
                &w,
            )
            .await?;
        Ok(())
    }

    /// The report's escalations (by reason, resolved) and dead-lettered actions.
    async fn count_escalations_and_dead_letters(
        &self,
        q: &ReportQuery,
        report: &mut CharterReport,
    ) -> Result<()> {
        let (c, since, until) = (q.charter.as_str(), q.since, q.until);
        let w: [&(dyn ToSql + Sync); 3] = [&c, &since, &until];
        report.escalations.by_reason = self.escalations_by_reason(c, since, until).await?;
        report.escalations.resolved = self
            .single_count(
                "SELECT count(*) FROM escalations WHERE charter = $1 AND resolved_at >= $2
                   AND resolved_at < $3 AND resolution IS NOT NULL",
                &w,
            )
            .await?;
        report.dead_letters = self
            .single_count(
                "SELECT count(*) FROM action_records a JOIN runs r ON r.id = a.run_id
                 WHERE r.charter = $1 AND r.started_at >= $2 AND r.started_at < $3
                   AND a.status = 'dead_lettered'",
                &w,
            )
            .await?;
        Ok(())
    }

    /// Events replayed in the window: requeued by an operator, or replayed from a rejected
    /// payload.
    async fn count_replays(&self, q: &ReportQuery) -> Result<u64> {
        let (c, since, until) = (q.charter.as_str(), q.since, q.until);
        let w: [&(dyn ToSql + Sync); 3] = [&c, &since, &until];
        let requeued = self
            .single_count(
                "SELECT count(*) FROM audit_log a
                 CROSS JOIN LATERAL jsonb_array_elements_text(
                     CASE WHEN jsonb_typeof(a.detail -> 'requeued') = 'array'
                          THEN a.detail -> 'requeued' ELSE '[]'::jsonb END) AS j(id)
                 JOIN events e ON e.id::text = j.id
                 WHERE a.action IN ('event.replay', 'events.replay_failed')
                   AND a.at >= $2 AND a.at < $3 AND e.charter = $1",
                &w,
            )
            .await?;
        let (lo, hi) = (v7_floor(since), v7_floor(until));
        let from_rejected = self
            .single_count(
                "SELECT count(*) FROM events WHERE charter = $1 AND source LIKE 'replay:%'
                   AND id >= $2 AND id < $3",
                &[&c, &lo, &hi],
            )
            .await?;
        Ok(requeued + from_rejected)
    }

    /// Count and sum of each measurement recorded in the window.
    async fn measurement_totals(&self, q: &ReportQuery) -> Result<BTreeMap<String, MeasureTotal>> {
        let (c, since, until) = (q.charter.as_str(), q.since, q.until);
        let w: [&(dyn ToSql + Sync); 3] = [&c, &since, &until];
        let mut totals = BTreeMap::new();
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, count(*), COALESCE(sum(value), 0) FROM measurements
                 WHERE charter = $1 AND at >= $2 AND at < $3 GROUP BY name",
                &w,
            )
            .await
            .map_err(db("report measurements"))?;
        for r in &rows {
            let n: i64 = get(r, 1)?;
            totals.insert(
                get(r, 0)?,
                MeasureTotal {
                    count: count(n),
                    sum: get(r, 2)?,
                },
            );
        }
        Ok(totals)
    }
}

impl ReportStore for PgStore {
    async fn record_measurement(&self, m: NewMeasurement) -> Result<()> {
        let client = self.client().await?;
        insert_measurement(&client, &m).await
    }

    async fn report(&self, q: ReportQuery) -> Result<CharterReport> {
        let mut report = CharterReport {
            charter: q.charter.clone(),
            since: q.since,
            until: q.until,
            ..Default::default()
        };
        let (received, finished, cycles) = self.report_samples(&q).await?;
        assemble(&q, &mut report, &received, &finished, &cycles);
        self.count_rejected_and_approvals(&q, &mut report).await?;
        self.count_escalations_and_dead_letters(&q, &mut report)
            .await?;
        report.replays = self.count_replays(&q).await?;
        report.measurements = self.measurement_totals(&q).await?;
        Ok(report)
    }

    async fn run_outcomes(
        &self,
        charter: &str,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<BTreeMap<String, u64>> {
        self.counts_by(
            "SELECT outcome, count(*) FROM runs WHERE charter = $1 AND finished_at >= $2
               AND finished_at < $3 AND outcome IS NOT NULL GROUP BY outcome",
            &[&charter, &since, &until],
        )
        .await
    }

    async fn escalation_reasons(
        &self,
        charter: &str,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<BTreeMap<String, u64>> {
        self.escalations_by_reason(charter, since, until).await
    }

    async fn backlog(&self, now: UnixMillis) -> Result<Vec<CharterBacklog>> {
        let client = self.client().await?;
        let mut map: BTreeMap<String, CharterBacklog> = BTreeMap::new();
        type Set = fn(&mut CharterBacklog, u64, Option<UnixMillis>);
        let parts: [(&str, bool, Set); 3] = [
            (
                // Counted over the claim's partial indexes (migration 0015), and the
                // oldest pending event read as the first by id (arrival order), so that
                // the cost stays low with a large backlog (the backlog bounds read this).
                "WITH q AS (
                     SELECT charter, count(*) AS n FROM events
                     WHERE status = 'pending' GROUP BY charter
                     UNION ALL
                     SELECT charter, count(*) FROM events
                     WHERE status = 'processing' AND (lease_until IS NULL OR lease_until <= $1)
                     GROUP BY charter
                 ),
                 c AS (SELECT charter, sum(n)::BIGINT AS n FROM q GROUP BY charter)
                 SELECT c.charter, c.n, least(
                     (SELECT e.received_at FROM events AS e
                      WHERE e.charter = c.charter AND e.status = 'pending'
                      ORDER BY e.id LIMIT 1),
                     (SELECT min(e.received_at) FROM events AS e
                      WHERE e.charter = c.charter AND e.status = 'processing'
                        AND (e.lease_until IS NULL OR e.lease_until <= $1)))
                 FROM c",
                true,
                |b, n, t| {
                    b.queued = n;
                    b.oldest_queued_at = t;
                },
            ),
            (
                "SELECT charter, count(*), min(created_at) FROM approvals
                 WHERE status = 'pending' GROUP BY charter",
                false,
                |b, n, t| {
                    b.approvals_pending = n;
                    b.oldest_approval_at = t;
                },
            ),
            (
                "SELECT charter, count(*), min(created_at) FROM escalations
                 WHERE status = 'open' GROUP BY charter",
                false,
                |b, n, t| {
                    b.escalations_open = n;
                    b.oldest_escalation_at = t;
                },
            ),
        ];
        for (sql, with_now, set) in parts {
            let rows = if with_now {
                client.query(sql, &[&now]).await
            } else {
                client.query(sql, &[]).await
            }
            .map_err(db("backlog"))?;
            for r in &rows {
                let charter: String = get(r, 0)?;
                let n: i64 = get(r, 1)?;
                let oldest: Option<i64> = get(r, 2)?;
                let entry = map
                    .entry(charter.clone())
                    .or_insert_with(|| CharterBacklog {
                        charter,
                        ..Default::default()
                    });
                set(entry, count(n), oldest);
            }
        }
        Ok(map.into_values().collect())
    }

    async fn readiness(&self) -> Result<Readiness> {
        self.ready().await?;
        Ok(Readiness {
            schema_version: self.schema_version().await?,
            expected_version: SCHEMA_VERSION,
        })
    }
}

impl AlertStore for PgStore {
    /// A cluster-wide job lock: one node evaluates alerts at a time.
    type Lead = JobLock;

    async fn try_lead(&self) -> Result<Option<JobLock>> {
        self.try_lock_job(ALERT_JOB).await
    }

    async fn open_incident(&self, i: NewIncident) -> Result<(Incident, bool)> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("beginning open_incident"))?;
        let inserted = tx
            .execute(
                "INSERT INTO alert_incidents (id, charter, alert, state, opened_at, value, detail)
                 VALUES ($1, $2, $3, 'open', $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &i.id,
                    &i.charter,
                    &i.alert,
                    &i.opened_at,
                    &i.value,
                    &i.detail,
                ],
            )
            .await
            .map_err(db("opening an incident"))?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT {INCIDENT_COLS} FROM alert_incidents
                     WHERE charter = $1 AND alert = $2 AND state = 'open'"
                ),
                &[&i.charter, &i.alert],
            )
            .await
            .map_err(db("reading the open incident"))?;
        tx.commit().await.map_err(db("committing open_incident"))?;
        let row =
            row.ok_or_else(|| StoreError::Database("the incident just opened is missing".into()))?;
        Ok((incident(&row)?, inserted == 1))
    }

    async fn resolve_incident(&self, id: Uuid, now: UnixMillis) -> Result<Option<Incident>> {
        Ok(self
            .incidents(
                &format!(
                    "UPDATE alert_incidents SET state = 'resolved', resolved_at = $2
                     WHERE id = $1 AND state = 'open' RETURNING {INCIDENT_COLS}"
                ),
                &[&id, &now],
            )
            .await?
            .pop())
    }

    async fn mark_notified(&self, id: Uuid, state: IncidentState, now: UnixMillis) -> Result<bool> {
        let sql = match state {
            IncidentState::Open => {
                "UPDATE alert_incidents SET notified_open_at = $2
                 WHERE id = $1 AND notified_open_at IS NULL"
            }
            IncidentState::Resolved => {
                "UPDATE alert_incidents SET notified_resolved_at = $2
                 WHERE id = $1 AND state = 'resolved' AND notified_resolved_at IS NULL"
            }
        };
        let client = self.client().await?;
        let n = client
            .execute(sql, &[&id, &now])
            .await
            .map_err(db("marking an incident notified"))?;
        Ok(n == 1)
    }

    async fn open_incidents(&self, charter: Option<String>) -> Result<Vec<Incident>> {
        self.incidents(
            &format!(
                "SELECT {INCIDENT_COLS} FROM alert_incidents
                 WHERE state = 'open' AND ($1::text IS NULL OR charter = $1)
                 ORDER BY opened_at, id"
            ),
            &[&charter],
        )
        .await
    }

    async fn unnotified_incidents(&self) -> Result<Vec<Incident>> {
        self.incidents(
            &format!(
                "SELECT {INCIDENT_COLS} FROM alert_incidents
                 WHERE (state = 'open' AND notified_open_at IS NULL)
                    OR (state = 'resolved' AND notified_open_at IS NOT NULL
                        AND notified_resolved_at IS NULL)
                 ORDER BY opened_at, id"
            ),
            &[],
        )
        .await
    }

    async fn list_incidents(&self, charter: Option<String>, limit: usize) -> Result<Vec<Incident>> {
        self.incidents(
            &format!(
                "SELECT {INCIDENT_COLS} FROM alert_incidents
                 WHERE ($1::text IS NULL OR charter = $1)
                 ORDER BY opened_at DESC, id DESC LIMIT $2"
            ),
            &[&charter, &limit_of(limit)],
        )
        .await
    }
}
