//! The paged listings and their counts on SQLite (see [`crate::page`]): one `WHERE` per
//! listing, shared by the page query and the count so a total always counts what the pages
//! show.

use rusqlite::types::Value;

use super::approvals::{APPROVAL_COLS, query_approvals};
use super::escalations::{ESCALATION_COLS, query_escalations};
use super::rows::{self, EVENT_COLS, REJECTED_COLS, db};
use super::runs::load_runs;
use super::{Conditions, SqliteStore, collect};
use crate::page::{Sort, uuid_prefix_range};
use crate::{
    ApprovalFilter, ApprovalRecord, AuditEntry, AuditFilter, EscalationFilter, EscalationRecord,
    EventFilter, RejectedFilter, Result, RunFilter,
};
use charter_core::model::RunRecord;
use charter_core::model::{EventRecord, RejectedPayload};

fn text(v: impl ToString) -> Value {
    Value::Text(v.to_string())
}

fn event_conditions(f: &EventFilter) -> Conditions {
    let mut c = Conditions::default();
    c.when("charter = ?", f.charter.clone());
    c.when("status = ?", f.status.map(|s| s.as_str().to_string()));
    c.when("received_at >= ?", f.since);
    c.when("received_at < ?", f.until);
    c.any_of("charter", &f.charters);
    if let Some(prefix) = &f.id_prefix {
        match uuid_prefix_range(prefix) {
            // Ids are stored as lower-case hyphenated text, whose order is the UUIDs' order.
            Some((lo, hi)) => c.raw("id BETWEEN ? AND ?".into(), vec![text(lo), text(hi)]),
            None => c.always("0"),
        }
    }
    c.when("dedupe_key = ?", f.dedupe_key.clone());
    c
}

/// A `(created_at, id)` keyset bound for approvals and escalations.
fn after_created(c: &mut Conditions, after: Option<(i64, uuid::Uuid)>, sort: Sort) {
    if let Some((at, id)) = after {
        let (_, cmp) = sort.sql();
        c.raw(
            format!("(created_at, id) {cmp} (?, ?)"),
            vec![Value::Integer(at), text(id)],
        );
    }
}

fn approval_conditions(f: &ApprovalFilter) -> Conditions {
    let mut c = Conditions::default();
    c.when("charter = ?", f.charter.clone());
    c.when("status = ?", f.status.map(|s| s.as_str().to_string()));
    c.when("event_id = ?", f.event_id.map(|e| e.to_string()));
    c.when("action = ?", f.action.clone());
    c.when("created_at >= ?", f.since);
    c.when("created_at < ?", f.until);
    c.any_of("charter", &f.charters);
    c
}

fn escalation_conditions(f: &EscalationFilter) -> Conditions {
    let mut c = Conditions::default();
    c.when("charter = ?", f.charter.clone());
    c.when("status = ?", f.status.map(|s| s.as_str().to_string()));
    c.when("reason = ?", f.reason.clone());
    c.when("reason <> ?", f.not_reason.clone());
    c.when("event_id = ?", f.event_id.map(|e| e.to_string()));
    c.when("created_at >= ?", f.since);
    c.when("created_at < ?", f.until);
    c.any_of("charter", &f.charters);
    c
}

fn audit_conditions(f: &AuditFilter) -> Conditions {
    let mut c = Conditions::default();
    c.when("charter = ?", f.charter.clone());
    c.when("actor = ?", f.actor.clone());
    c.when("action = ?", f.action.clone());
    c.any_of("action", &f.actions);
    c.any_of("charter", &f.charters);
    c.when("at >= ?", f.since);
    c.when("at < ?", f.until);
    c
}

fn run_conditions(f: &RunFilter) -> Conditions {
    let mut c = Conditions::default();
    c.when("charter = ?", f.charter.clone());
    c.when("outcome = ?", f.outcome.map(|o| o.as_str().to_string()));
    if f.running {
        c.always("outcome IS NULL");
    }
    c.when("started_at >= ?", f.since);
    c.when("started_at < ?", f.until);
    c.any_of("charter", &f.charters);
    c
}

fn rejected_conditions(f: &RejectedFilter) -> Conditions {
    let mut c = Conditions::default();
    c.when("charter = ?", f.charter.clone());
    c.when("received_at >= ?", f.since);
    c.when("received_at < ?", f.until);
    c.any_of("charter", &f.charters);
    c
}

fn count(conn: &rusqlite::Connection, table: &str, c: Conditions) -> Result<u64> {
    let (where_sql, args) = c.without_limit();
    let n: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM {table} {where_sql}"))
        .and_then(|mut s| s.query_row(rusqlite::params_from_iter(args), |r| r.get(0)))
        .map_err(db("counting a listing"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

impl SqliteStore {
    pub(super) async fn page_events(&self, f: EventFilter) -> Result<Vec<EventRecord>> {
        self.read(move |conn| {
            let sort = f.sort.unwrap_or(Sort::NewestFirst);
            let (dir, cmp) = sort.sql();
            let mut c = event_conditions(&f);
            if let Some(after) = f.after {
                c.raw(format!("id {cmp} ?"), vec![text(after)]);
            }
            let (where_sql, args) = c.with_limit(f.limit);
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLS} FROM events {where_sql} ORDER BY id {dir} LIMIT ?"
                ))
                .map_err(db("preparing list_events"))?;
            let rows = stmt
                .query(rusqlite::params_from_iter(args))
                .map_err(db("listing events"))?;
            collect(rows, rows::event_record)
        })
        .await
    }

    pub(super) async fn count_events_matching(&self, f: EventFilter) -> Result<u64> {
        self.read(move |conn| count(conn, "events", event_conditions(&f)))
            .await
    }

    pub(super) async fn page_approvals(&self, f: ApprovalFilter) -> Result<Vec<ApprovalRecord>> {
        self.read(move |conn| {
            let sort = f.sort.unwrap_or(Sort::OldestFirst);
            let (dir, _) = sort.sql();
            let mut c = approval_conditions(&f);
            after_created(&mut c, f.after, sort);
            let (where_sql, args) = c.with_limit(f.limit);
            query_approvals(
                conn,
                &format!(
                    "SELECT {APPROVAL_COLS} FROM approvals {where_sql}
                     ORDER BY created_at {dir}, id {dir} LIMIT ?"
                ),
                args,
            )
        })
        .await
    }

    pub(super) async fn count_approvals_matching(&self, f: ApprovalFilter) -> Result<u64> {
        self.read(move |conn| count(conn, "approvals", approval_conditions(&f)))
            .await
    }

    pub(super) async fn page_escalations(
        &self,
        f: EscalationFilter,
    ) -> Result<Vec<EscalationRecord>> {
        self.read(move |conn| {
            let sort = f.sort.unwrap_or(Sort::OldestFirst);
            let (dir, _) = sort.sql();
            let mut c = escalation_conditions(&f);
            after_created(&mut c, f.after, sort);
            let (where_sql, args) = c.with_limit(f.limit);
            query_escalations(
                conn,
                &format!(
                    "SELECT {ESCALATION_COLS} FROM escalations {where_sql}
                     ORDER BY created_at {dir}, id {dir} LIMIT ?"
                ),
                args,
            )
        })
        .await
    }

    pub(super) async fn count_escalations_matching(&self, f: EscalationFilter) -> Result<u64> {
        self.read(move |conn| count(conn, "escalations", escalation_conditions(&f)))
            .await
    }

    pub(super) async fn page_audit(&self, f: AuditFilter) -> Result<Vec<AuditEntry>> {
        self.read(move |conn| {
            let sort = f.sort.unwrap_or(Sort::NewestFirst);
            let (dir, cmp) = sort.sql();
            let mut c = audit_conditions(&f);
            if let Some(after) = f.after {
                c.raw(format!("seq {cmp} ?"), vec![Value::Integer(after)]);
            }
            let (where_sql, args) = c.with_limit(f.limit);
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT seq, at, actor, action, charter, target, detail FROM audit_log
                     {where_sql} ORDER BY seq {dir} LIMIT ?"
                ))
                .map_err(db("preparing list_audit"))?;
            let rows = stmt
                .query(rusqlite::params_from_iter(args))
                .map_err(db("listing the audit log"))?;
            collect(rows, |r| {
                let detail: Option<String> = rows::get_col(r, 6)?;
                Ok(AuditEntry {
                    seq: rows::get_col(r, 0)?,
                    at: rows::get_col(r, 1)?,
                    actor: rows::get_col(r, 2)?,
                    action: rows::get_col(r, 3)?,
                    charter: rows::get_col(r, 4)?,
                    target: rows::get_col(r, 5)?,
                    detail: detail
                        .map(|d| rows::parse_json("audit detail", &d))
                        .transpose()?
                        .unwrap_or(serde_json::Value::Null),
                })
            })
        })
        .await
    }

    pub(super) async fn count_audit_matching(&self, f: AuditFilter) -> Result<u64> {
        self.read(move |conn| count(conn, "audit_log", audit_conditions(&f)))
            .await
    }
}

impl SqliteStore {
    pub(super) async fn page_runs(&self, f: RunFilter) -> Result<Vec<RunRecord>> {
        self.read(move |conn| {
            let sort = f.sort.unwrap_or(Sort::NewestFirst);
            let (dir, cmp) = sort.sql();
            let mut c = run_conditions(&f);
            if let Some((at, id)) = f.after {
                c.raw(
                    format!("(started_at, id) {cmp} (?, ?)"),
                    vec![Value::Integer(at), text(id)],
                );
            }
            let (where_sql, args) = c.with_limit(f.limit);
            load_runs(
                conn,
                &format!("{where_sql} ORDER BY started_at {dir}, id {dir} LIMIT ?"),
                args,
            )
        })
        .await
    }

    pub(super) async fn count_runs_matching(&self, f: RunFilter) -> Result<u64> {
        self.read(move |conn| count(conn, "runs", run_conditions(&f)))
            .await
    }

    pub(super) async fn page_rejected_matching(
        &self,
        f: RejectedFilter,
    ) -> Result<Vec<RejectedPayload>> {
        self.read(move |conn| {
            let sort = f.sort.unwrap_or(Sort::NewestFirst);
            let (dir, cmp) = sort.sql();
            let mut c = rejected_conditions(&f);
            if let Some(after) = f.after {
                c.raw(format!("id {cmp} ?"), vec![text(after)]);
            }
            let (where_sql, args) = c.with_limit(f.limit);
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {REJECTED_COLS} FROM rejected {where_sql} ORDER BY id {dir} LIMIT ?"
                ))
                .map_err(db("preparing list_rejected"))?;
            let rows = stmt
                .query(rusqlite::params_from_iter(args))
                .map_err(db("listing rejected payloads"))?;
            collect(rows, rows::rejected_payload)
        })
        .await
    }

    pub(super) async fn count_rejected_matching(&self, f: RejectedFilter) -> Result<u64> {
        self.read(move |conn| count(conn, "rejected", rejected_conditions(&f)))
            .await
    }
}

impl SqliteStore {
    /// Close the open escalation matching `key` (`id = ?1` or `event_id = ?1`), and `reason`
    /// when given, without a resolution.
    pub(super) async fn close_where(
        &self,
        key: &'static str,
        value: Value,
        reason: Option<String>,
        by: &str,
        now: i64,
    ) -> Result<Option<EscalationRecord>> {
        let by = by.to_string();
        self.write(move |conn| {
            Ok(query_escalations(
                conn,
                &format!(
                    "UPDATE escalations SET status = 'resolved', resolved_by = ?2,
                         resolved_at = ?3, resolution = NULL
                     WHERE {key} AND status = 'open' AND (?4 IS NULL OR reason = ?4)
                     RETURNING {ESCALATION_COLS}"
                ),
                vec![
                    value,
                    Value::Text(by),
                    Value::Integer(now),
                    reason.map_or(Value::Null, Value::Text),
                ],
            )?
            .pop())
        })
        .await
    }
}
