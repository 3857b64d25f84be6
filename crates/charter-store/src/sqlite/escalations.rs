//! Escalations on SQLite.

use charter_core::model::UnixMillis;
use rusqlite::types::Value;
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::rows::{self, db, parse_uuid, to_json};
use super::{SqliteStore, collect};
use crate::{
    EscalationFilter, EscalationRecord, EscalationStatus, EscalationStore, HumanDecision,
    NewEscalation, Result, StoreError,
};

/// Columns selected for an [`EscalationRecord`], in the order [`escalation_record`] reads.
pub(super) const ESCALATION_COLS: &str = "id, run_id, event_id, charter, reason, detail, target, status, \
     created_at, resolved_by, resolved_at, resolution";

fn escalation_record(r: &rusqlite::Row<'_>) -> Result<EscalationRecord> {
    let run_id: Option<String> = rows::get_col(r, 1)?;
    let detail: Option<String> = rows::get_col(r, 5)?;
    let status: String = rows::get_col(r, 7)?;
    let resolution: Option<String> = rows::get_col(r, 11)?;
    Ok(EscalationRecord {
        id: parse_uuid(&rows::get_col::<String>(r, 0)?)?,
        run_id: run_id.map(|s| parse_uuid(&s)).transpose()?,
        event_id: parse_uuid(&rows::get_col::<String>(r, 2)?)?,
        charter: rows::get_col(r, 3)?,
        reason: rows::get_col(r, 4)?,
        detail: detail
            .map(|d| rows::parse_json("escalation detail", &d))
            .transpose()?
            .unwrap_or(serde_json::Value::Null),
        target: rows::get_col(r, 6)?,
        status: EscalationStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown escalation status {status:?}")))?,
        created_at: rows::get_col(r, 8)?,
        resolved_by: rows::get_col(r, 9)?,
        resolved_at: rows::get_col(r, 10)?,
        resolution: resolution
            .map(|d| rows::parse_json::<HumanDecision>("escalation resolution", &d))
            .transpose()?,
    })
}

/// The latest human resolution of an event (by `resolved_at`, then id). Picked here rather
/// than with `ORDER BY … LIMIT 1`: a sorting statement is re-prepared on every reuse from the
/// statement cache, and this runs once per claimed event on the writer.
pub(super) fn sql_latest_resolution(
    conn: &Connection,
    event_id: Uuid,
) -> Result<Option<EscalationRecord>> {
    let all = query_escalations(
        conn,
        &format!(
            "SELECT {ESCALATION_COLS} FROM escalations
             WHERE event_id = ?1 AND status = 'resolved' AND resolution IS NOT NULL"
        ),
        vec![Value::Text(event_id.to_string())],
    )?;
    Ok(all
        .into_iter()
        .max_by(|a, b| (a.resolved_at, a.id).cmp(&(b.resolved_at, b.id))))
}

pub(super) fn query_escalations(
    conn: &Connection,
    sql: &str,
    args: Vec<Value>,
) -> Result<Vec<EscalationRecord>> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(db("preparing an escalation query"))?;
    let rows = stmt
        .query(rusqlite::params_from_iter(args))
        .map_err(db("querying escalations"))?;
    collect(rows, escalation_record)
}

impl EscalationStore for SqliteStore {
    async fn create_escalation(&self, e: NewEscalation) -> Result<EscalationRecord> {
        let detail = to_json("escalation detail", &e.detail)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO escalations (id, run_id, event_id, charter, reason, detail, target,
                     status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8)
                 ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    e.id.to_string(),
                    e.run_id.map(|r| r.to_string()),
                    e.event_id.to_string(),
                    e.charter,
                    e.reason,
                    detail,
                    e.target,
                    e.created_at,
                ])
            })
            .map_err(db("inserting an escalation"))?;
            query_escalations(
                conn,
                &format!(
                    "SELECT {ESCALATION_COLS} FROM escalations
                     WHERE event_id = ?1 AND status = 'open'"
                ),
                vec![Value::Text(e.event_id.to_string())],
            )?
            .pop()
            .ok_or_else(|| StoreError::Database("the escalation just stored is missing".into()))
        })
        .await
    }

    async fn get_escalation(&self, id: Uuid) -> Result<Option<EscalationRecord>> {
        self.read(move |conn| {
            Ok(query_escalations(
                conn,
                &format!("SELECT {ESCALATION_COLS} FROM escalations WHERE id = ?1"),
                vec![Value::Text(id.to_string())],
            )?
            .pop())
        })
        .await
    }

    async fn list_escalations(&self, filter: EscalationFilter) -> Result<Vec<EscalationRecord>> {
        self.page_escalations(filter).await
    }

    async fn count_escalations(&self, filter: EscalationFilter) -> Result<u64> {
        self.count_escalations_matching(filter).await
    }

    async fn resolve_escalation(
        &self,
        id: Uuid,
        decision: &HumanDecision,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<EscalationRecord>> {
        let resolution = to_json("escalation resolution", decision)?;
        let by = by.to_string();
        self.write(move |conn| {
            Ok(query_escalations(
                conn,
                &format!(
                    "UPDATE escalations SET status = 'resolved', resolved_by = ?2,
                         resolved_at = ?3, resolution = ?4
                     WHERE id = ?1 AND status = 'open'
                     RETURNING {ESCALATION_COLS}"
                ),
                vec![
                    Value::Text(id.to_string()),
                    Value::Text(by),
                    Value::Integer(now),
                    Value::Text(resolution),
                ],
            )?
            .pop())
        })
        .await
    }

    async fn close_escalation(
        &self,
        id: Uuid,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<EscalationRecord>> {
        self.close_where("id = ?1", Value::Text(id.to_string()), None, by, now)
            .await
    }

    async fn close_event_escalation(
        &self,
        event_id: Uuid,
        reason: &str,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<EscalationRecord>> {
        let reason = Some(reason.to_string());
        self.close_where(
            "event_id = ?1",
            Value::Text(event_id.to_string()),
            reason,
            by,
            now,
        )
        .await
    }

    async fn latest_resolution(&self, event_id: Uuid) -> Result<Option<EscalationRecord>> {
        self.read(move |conn| sql_latest_resolution(conn, event_id))
            .await
    }
}
