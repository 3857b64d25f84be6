//! Measurements, reports, backlog, readiness and alert incidents on SQLite.

use std::collections::BTreeMap;

use charter_core::model::UnixMillis;
use rusqlite::types::Value;
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::rows::{self, db, parse_uuid, to_json};
use super::{SCHEMA_VERSION, SqliteStore, collect, limit_of};
use crate::report::{
    AlertStore, CharterBacklog, CharterReport, Incident, IncidentState, MeasureTotal, NewIncident,
    NewMeasurement, Readiness, ReportQuery, ReportStore, assemble, v7_floor,
};
use crate::{Result, StoreError};

/// Most samples read per series for one report (a report over more events is computed
/// over the most recent ones of each series).
const MAX_SAMPLES: i64 = 200_000;

/// A report's samples: arrival times, (end, outcome) of finished runs, (done at, cycle time).
type Samples = (
    Vec<UnixMillis>,
    Vec<(UnixMillis, String)>,
    Vec<(UnixMillis, i64)>,
);

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Insert one measurement (`detail` already serialised) in the open write transaction.
pub(super) fn insert_measurement(
    conn: &Connection,
    m: &NewMeasurement,
    detail: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO measurements (charter, name, run_id, event_id, value, at, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            m.charter,
            m.name,
            m.run_id.map(|u| u.to_string()),
            m.event_id.map(|u| u.to_string()),
            m.value,
            m.at,
            detail
        ])
    })
    .map_err(db("recording a measurement"))?;
    Ok(())
}

/// Run a query whose rows are `(key TEXT, n INTEGER)` into a map.
fn counts_by(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<BTreeMap<String, u64>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db("preparing a count"))?;
    let rows = stmt.query(args).map_err(db("counting"))?;
    let pairs = collect(rows, |r| {
        let k: Option<String> = rows::get_col(r, 0)?;
        let n: i64 = rows::get_col(r, 1)?;
        Ok((k.unwrap_or_default(), count(n)))
    })?;
    Ok(pairs.into_iter().collect())
}

fn single_count(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_row(args, |r| r.get(0)))
        .map_err(db("counting"))?;
    Ok(count(n))
}

fn build_report(conn: &Connection, q: &ReportQuery) -> Result<CharterReport> {
    let mut report = CharterReport {
        charter: q.charter.clone(),
        since: q.since,
        until: q.until,
        ..Default::default()
    };
    let (received, finished, cycles) = report_samples(conn, q)?;
    assemble(q, &mut report, &received, &finished, &cycles);
    count_rejected_and_approvals(conn, q, &mut report)?;
    count_escalations_and_dead_letters(conn, q, &mut report)?;
    report.replays = count_replays(conn, q)?;
    report.measurements = measurement_totals(conn, q)?;
    Ok(report)
}

/// A report's samples in `[since, until)`, newest first (at most [`MAX_SAMPLES`] each):
/// events' arrival times, finished runs' (end, outcome), and (done at, cycle time) of the
/// events finished in the window.
fn report_samples(conn: &Connection, q: &ReportQuery) -> Result<Samples> {
    let (c, since, until) = (q.charter.as_str(), q.since, q.until);
    let received: Vec<UnixMillis> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT received_at FROM events
                 WHERE charter = ?1 AND received_at >= ?2 AND received_at < ?3
                 ORDER BY received_at DESC LIMIT ?4",
            )
            .map_err(db("preparing report events"))?;
        let rows = stmt
            .query(params![c, since, until, MAX_SAMPLES])
            .map_err(db("report events"))?;
        collect(rows, |r| rows::get_col(r, 0))?
    };
    let finished: Vec<(UnixMillis, String)> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT finished_at, outcome FROM runs
                 WHERE charter = ?1 AND finished_at >= ?2 AND finished_at < ?3
                   AND outcome IS NOT NULL
                 ORDER BY finished_at DESC LIMIT ?4",
            )
            .map_err(db("preparing report runs"))?;
        let rows = stmt
            .query(params![c, since, until, MAX_SAMPLES])
            .map_err(db("report runs"))?;
        collect(rows, |r| Ok((rows::get_col(r, 0)?, rows::get_col(r, 1)?)))?
    };
    let cycles: Vec<(UnixMillis, i64)> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT max(r.finished_at) AS done_at, e.received_at FROM events e
                 JOIN runs r ON r.event_id = e.id
                 WHERE e.charter = ?1 AND e.status = 'done' AND e.received_at < ?3
                   AND r.finished_at IS NOT NULL
                 GROUP BY e.id, e.received_at
                 HAVING max(r.finished_at) >= ?2 AND max(r.finished_at) < ?3
                 ORDER BY done_at DESC LIMIT ?4",
            )
            .map_err(db("preparing report cycle times"))?;
        let rows = stmt
            .query(params![c, since, until, MAX_SAMPLES])
            .map_err(db("report cycle times"))?;
        collect(rows, |r| {
            let done: i64 = rows::get_col(r, 0)?;
            let received: i64 = rows::get_col(r, 1)?;
            Ok((done, (done - received).max(0)))
        })?
    };
    Ok((received, finished, cycles))
}

/// The report's rejected payloads and approval counts.
fn count_rejected_and_approvals(
    conn: &Connection,
    q: &ReportQuery,
    report: &mut CharterReport,
) -> Result<()> {
    let (c, since, until) = (q.charter.as_str(), q.since, q.until);
    report.rejected_payloads = single_count(
        conn,
        "SELECT count(*) FROM rejected WHERE charter = ?1 AND received_at >= ?2 AND received_at < ?3",
        &[&c, &since, &until],
    )?;
    report.approvals.requested = single_count(
        conn,
        "SELECT count(*) FROM approvals WHERE charter = ?1 AND created_at >= ?2 AND created_at < ?3",
        &[&c, &since, &until],
    )?;
    let decided = counts_by(
        conn,
        "SELECT status, count(*) FROM approvals
         WHERE charter = ?1 AND decided_at >= ?2 AND decided_at < ?3 GROUP BY status",
        &[&c, &since, &until],
    )?;
    report.approvals.approved = decided.get("approved").copied().unwrap_or(0);
    report.approvals.rejected = decided.get("rejected").copied().unwrap_or(0);
    report.approvals.expired = decided.get("expired").copied().unwrap_or(0);
    report.approvals.edited = single_count(
        conn,
        "SELECT count(*) FROM approvals WHERE charter = ?1 AND decided_at >= ?2
           AND decided_at < ?3 AND status = 'approved' AND edited_hash IS NOT NULL",
        &[&c, &since, &until],
    )?;
    Ok(())
}

/// The report's escalations (by reason, resolved) and dead-lettered actions.
fn count_escalations_and_dead_letters(
    conn: &Connection,
    q: &ReportQuery,
    report: &mut CharterReport,
) -> Result<()> {
    let (c, since, until) = (q.charter.as_str(), q.since, q.until);
    report.escalations.by_reason = escalation_reasons(conn, c, since, until)?;
    report.escalations.resolved = single_count(
        conn,
        "SELECT count(*) FROM escalations WHERE charter = ?1 AND resolved_at >= ?2
           AND resolved_at < ?3 AND resolution IS NOT NULL",
        &[&c, &since, &until],
    )?;
    report.dead_letters = single_count(
        conn,
        "SELECT count(*) FROM action_records a JOIN runs r ON r.id = a.run_id
         WHERE r.charter = ?1 AND r.started_at >= ?2 AND r.started_at < ?3
           AND a.status = 'dead_lettered'",
        &[&c, &since, &until],
    )?;
    Ok(())
}

/// Events replayed in the window: requeued by an operator, or replayed from a rejected
/// payload.
fn count_replays(conn: &Connection, q: &ReportQuery) -> Result<u64> {
    let (c, since, until) = (q.charter.as_str(), q.since, q.until);
    let requeued = single_count(
        conn,
        "SELECT count(*) FROM audit_log a, json_each(a.detail, '$.requeued') j
         JOIN events e ON e.id = j.value
         WHERE a.action IN ('event.replay', 'events.replay_failed')
           AND a.at >= ?2 AND a.at < ?3 AND json_valid(a.detail)
           AND json_type(a.detail, '$.requeued') = 'array' AND e.charter = ?1",
        &[&c, &since, &until],
    )?;
    let from_rejected = single_count(
        conn,
        "SELECT count(*) FROM events WHERE charter = ?1 AND source LIKE 'replay:%'
           AND id >= ?2 AND id < ?3",
        &[
            &c,
            &v7_floor(since).to_string(),
            &v7_floor(until).to_string(),
        ],
    )?;
    Ok(requeued + from_rejected)
}

/// Count and sum of each measurement recorded in the window.
fn measurement_totals(
    conn: &Connection,
    q: &ReportQuery,
) -> Result<BTreeMap<String, MeasureTotal>> {
    let (c, since, until) = (q.charter.as_str(), q.since, q.until);
    let mut stmt = conn
        .prepare_cached(
            "SELECT name, count(*), total(value) FROM measurements
             WHERE charter = ?1 AND at >= ?2 AND at < ?3 GROUP BY name",
        )
        .map_err(db("preparing report measurements"))?;
    let rows = stmt
        .query(params![c, since, until])
        .map_err(db("report measurements"))?;
    let m = collect(rows, |r| {
        let n: i64 = rows::get_col(r, 1)?;
        Ok((
            rows::get_col::<String>(r, 0)?,
            MeasureTotal {
                count: count(n),
                sum: rows::get_col(r, 2)?,
            },
        ))
    })?;
    Ok(m.into_iter().collect())
}

fn escalation_reasons(
    conn: &Connection,
    c: &str,
    since: UnixMillis,
    until: UnixMillis,
) -> Result<BTreeMap<String, u64>> {
    counts_by(
        conn,
        "SELECT reason, count(*) FROM escalations
         WHERE charter = ?1 AND created_at >= ?2 AND created_at < ?3 GROUP BY reason",
        &[&c, &since, &until],
    )
}

/// `(charter, count, oldest)` rows into the backlog map, with a setter per kind.
fn fold_backlog(
    conn: &Connection,
    sql: &str,
    now: UnixMillis,
    map: &mut BTreeMap<String, CharterBacklog>,
    set: fn(&mut CharterBacklog, u64, Option<UnixMillis>),
) -> Result<()> {
    let mut stmt = conn.prepare_cached(sql).map_err(db("preparing backlog"))?;
    let rows = if sql.contains("?1") {
        stmt.query([now])
    } else {
        stmt.query([])
    }
    .map_err(db("backlog"))?;
    let list = collect(rows, |r| {
        let n: i64 = rows::get_col(r, 1)?;
        Ok((
            rows::get_col::<String>(r, 0)?,
            count(n),
            rows::get_col::<Option<i64>>(r, 2)?,
        ))
    })?;
    for (charter, n, oldest) in list {
        let entry = map
            .entry(charter.clone())
            .or_insert_with(|| CharterBacklog {
                charter,
                ..Default::default()
            });
        set(entry, n, oldest);
    }
    Ok(())
}

const INCIDENT_COLS: &str = "id, charter, alert, state, opened_at, resolved_at, value, detail, \
     notified_open_at, notified_resolved_at";

fn incident(r: &rusqlite::Row<'_>) -> Result<Incident> {
    let state: String = rows::get_col(r, 3)?;
    let detail: String = rows::get_col(r, 7)?;
    Ok(Incident {
        id: parse_uuid(&rows::get_col::<String>(r, 0)?)?,
        charter: rows::get_col(r, 1)?,
        alert: rows::get_col(r, 2)?,
        state: IncidentState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown incident state {state:?}")))?,
        opened_at: rows::get_col(r, 4)?,
        resolved_at: rows::get_col(r, 5)?,
        value: rows::get_col(r, 6)?,
        detail: rows::parse_json("incident detail", &detail)?,
        notified_open_at: rows::get_col(r, 8)?,
        notified_resolved_at: rows::get_col(r, 9)?,
    })
}

fn query_incidents(conn: &Connection, sql: &str, args: Vec<Value>) -> Result<Vec<Incident>> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(db("preparing an incident query"))?;
    let rows = stmt
        .query(rusqlite::params_from_iter(args))
        .map_err(db("querying incidents"))?;
    collect(rows, incident)
}

impl ReportStore for SqliteStore {
    async fn record_measurement(&self, m: NewMeasurement) -> Result<()> {
        let detail = to_json("measurement detail", &m.detail)?;
        self.write(move |conn| insert_measurement(conn, &m, &detail))
            .await
    }

    async fn report(&self, query: ReportQuery) -> Result<CharterReport> {
        self.read(move |conn| build_report(conn, &query)).await
    }

    async fn run_outcomes(
        &self,
        charter: &str,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<BTreeMap<String, u64>> {
        let c = charter.to_string();
        self.read(move |conn| {
            counts_by(
                conn,
                "SELECT outcome, count(*) FROM runs WHERE charter = ?1 AND finished_at >= ?2
                   AND finished_at < ?3 AND outcome IS NOT NULL GROUP BY outcome",
                &[&c, &since, &until],
            )
        })
        .await
    }

    async fn escalation_reasons(
        &self,
        charter: &str,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<BTreeMap<String, u64>> {
        let c = charter.to_string();
        self.read(move |conn| escalation_reasons(conn, &c, since, until))
            .await
    }

    async fn backlog(&self, now: UnixMillis) -> Result<Vec<CharterBacklog>> {
        self.read(move |conn| {
            let mut map = BTreeMap::new();
            fold_backlog(
                conn,
                "SELECT charter, count(*), min(received_at) FROM events
                 WHERE status = 'pending'
                    OR (status = 'processing' AND (lease_until IS NULL OR lease_until <= ?1))
                 GROUP BY charter",
                now,
                &mut map,
                |b, n, t| {
                    b.queued = n;
                    b.oldest_queued_at = t;
                },
            )?;
            fold_backlog(
                conn,
                "SELECT charter, count(*), min(created_at) FROM approvals
                 WHERE status = 'pending' GROUP BY charter",
                now,
                &mut map,
                |b, n, t| {
                    b.approvals_pending = n;
                    b.oldest_approval_at = t;
                },
            )?;
            fold_backlog(
                conn,
                "SELECT charter, count(*), min(created_at) FROM escalations
                 WHERE status = 'open' GROUP BY charter",
                now,
                &mut map,
                |b, n, t| {
                    b.escalations_open = n;
                    b.oldest_escalation_at = t;
                },
            )?;
            Ok(map.into_values().collect())
        })
        .await
    }

    async fn readiness(&self) -> Result<Readiness> {
        self.ready().await?;
        Ok(Readiness {
            schema_version: self.schema_version().await?,
            expected_version: SCHEMA_VERSION,
        })
    }
}

impl AlertStore for SqliteStore {
    /// One SQLite file has one server: it always leads.
    type Lead = ();

    async fn try_lead(&self) -> Result<Option<()>> {
        Ok(Some(()))
    }

    async fn open_incident(&self, i: NewIncident) -> Result<(Incident, bool)> {
        let detail = to_json("incident detail", &i.detail)?;
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO alert_incidents (id, charter, alert, state, opened_at, value, detail)
                     VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        i.id.to_string(),
                        i.charter,
                        i.alert,
                        i.opened_at,
                        i.value,
                        detail
                    ])
                })
                .map_err(db("opening an incident"))?;
            let open = query_incidents(
                conn,
                &format!(
                    "SELECT {INCIDENT_COLS} FROM alert_incidents
                     WHERE charter = ?1 AND alert = ?2 AND state = 'open'"
                ),
                vec![Value::Text(i.charter.clone()), Value::Text(i.alert.clone())],
            )?
            .pop()
            .ok_or_else(|| StoreError::Database("the incident just opened is missing".into()))?;
            Ok((open, inserted == 1))
        })
        .await
    }

    async fn resolve_incident(&self, id: Uuid, now: UnixMillis) -> Result<Option<Incident>> {
        self.write(move |conn| {
            Ok(query_incidents(
                conn,
                &format!(
                    "UPDATE alert_incidents SET state = 'resolved', resolved_at = ?2
                     WHERE id = ?1 AND state = 'open' RETURNING {INCIDENT_COLS}"
                ),
                vec![Value::Text(id.to_string()), Value::Integer(now)],
            )?
            .pop())
        })
        .await
    }

    async fn mark_notified(&self, id: Uuid, state: IncidentState, now: UnixMillis) -> Result<bool> {
        let sql = match state {
            IncidentState::Open => {
                "UPDATE alert_incidents SET notified_open_at = ?2
                 WHERE id = ?1 AND notified_open_at IS NULL"
            }
            IncidentState::Resolved => {
                "UPDATE alert_incidents SET notified_resolved_at = ?2
                 WHERE id = ?1 AND state = 'resolved' AND notified_resolved_at IS NULL"
            }
        };
        self.write(move |conn| {
            let n = conn
                .prepare_cached(sql)
                .and_then(|mut s| s.execute(params![id.to_string(), now]))
                .map_err(db("marking an incident notified"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn open_incidents(&self, charter: Option<String>) -> Result<Vec<Incident>> {
        self.read(move |conn| {
            query_incidents(
                conn,
                &format!(
                    "SELECT {INCIDENT_COLS} FROM alert_incidents
                     WHERE state = 'open' AND (?1 IS NULL OR charter = ?1)
                     ORDER BY opened_at, id"
                ),
                vec![charter.map_or(Value::Null, Value::Text)],
            )
        })
        .await
    }

    async fn unnotified_incidents(&self) -> Result<Vec<Incident>> {
        self.read(move |conn| {
            query_incidents(
                conn,
                &format!(
                    "SELECT {INCIDENT_COLS} FROM alert_incidents
                     WHERE (state = 'open' AND notified_open_at IS NULL)
                        OR (state = 'resolved' AND notified_open_at IS NOT NULL
                            AND notified_resolved_at IS NULL)
                     ORDER BY opened_at, id"
                ),
                vec![],
            )
        })
        .await
    }

    async fn list_incidents(&self, charter: Option<String>, limit: usize) -> Result<Vec<Incident>> {
        self.read(move |conn| {
            query_incidents(
                conn,
                &format!(
                    "SELECT {INCIDENT_COLS} FROM alert_incidents
                     WHERE (?1 IS NULL OR charter = ?1)
                     ORDER BY opened_at DESC, id DESC LIMIT ?2"
                ),
                vec![
                    charter.map_or(Value::Null, Value::Text),
                    Value::Integer(limit_of(limit)),
                ],
            )
        })
        .await
    }
}
