//! The paged listings and their counts on PostgreSQL (see [`crate::page`]): one `WHERE` per
//! listing, shared by the page query and the count so a total always counts what the pages
//! show.

use uuid::Uuid;

use super::approvals::{APPROVAL_COLS, approval_record};
use super::escalations::{ESCALATION_COLS, escalation_record};
use super::rows::{self, EVENT_COLS, REJECTED_COLS, db, get};
use super::{Conditions, PgStore, param_refs};
use crate::page::{Sort, uuid_prefix_range};
use crate::{
    ApprovalFilter, ApprovalRecord, AuditEntry, AuditFilter, EscalationFilter, EscalationRecord,
    EventFilter, RejectedFilter, Result, RunFilter,
};
use charter_core::model::RunRecord;
use charter_core::model::{EventRecord, RejectedPayload};

fn event_conditions(f: &EventFilter) -> Conditions {
    let mut c = Conditions::default();
    c.when("charter =", f.charter.clone());
    c.when("status =", f.status.map(|s| s.as_str()));
    c.when("received_at >=", f.since);
    c.when("received_at <", f.until);
    c.any_of("charter", &f.charters);
    if let Some(prefix) = &f.id_prefix {
        match uuid_prefix_range(prefix) {
            // PostgreSQL compares UUIDs bytewise: the prefix's range is a primary-key range.
            Some((lo, hi)) => {
                let lo = c.param(lo);
                let hi = c.param(hi);
                c.clause(format!("id BETWEEN {lo} AND {hi}"));
            }
            None => c.always("FALSE"),
        }
    }
    c.when("dedupe_key =", f.dedupe_key.clone());
    c
}

/// A `(created_at, id)` keyset bound for approvals and escalations.
fn after_created(c: &mut Conditions, after: Option<(i64, Uuid)>, sort: Sort) {
    if let Some((at, id)) = after {
        let (_, cmp) = sort.sql();
        let at = c.param(at);
        let id = c.param(id);
        c.clause(format!("(created_at, id) {cmp} ({at}, {id})"));
    }
}

fn approval_conditions(f: &ApprovalFilter) -> Conditions {
    let mut c = Conditions::default();
    c.when("charter =", f.charter.clone());
    c.when("status =", f.status.map(|s| s.as_str().to_string()));
    c.when("event_id =", f.event_id);
    c.when("action =", f.action.clone());
    c.when("created_at >=", f.since);
    c.when("created_at <", f.until);
    c.any_of("charter", &f.charters);
    c
}

fn escalation_conditions(f: &EscalationFilter) -> Conditions {
    let mut c = Conditions::default();
    c.when("charter =", f.charter.clone());
    c.when("status =", f.status.map(|s| s.as_str().to_string()));
    c.when("reason =", f.reason.clone());
    c.when("reason <>", f.not_reason.clone());
    c.when("event_id =", f.event_id);
    c.when("created_at >=", f.since);
    c.when("created_at <", f.until);
    c.any_of("charter", &f.charters);
    c
}

fn audit_conditions(f: &AuditFilter) -> Conditions {
    let mut c = Conditions::default();
    c.when("charter =", f.charter.clone());
    c.when("actor =", f.actor.clone());
    c.when("action =", f.action.clone());
    c.any_of("action", &f.actions);
    c.any_of("charter", &f.charters);
    c.when("at >=", f.since);
    c.when("at <", f.until);
    c
}

fn run_conditions(f: &RunFilter) -> Conditions {
    let mut c = Conditions::default();
    c.when("charter =", f.charter.clone());
    c.when("outcome =", f.outcome.map(|o| o.as_str()));
    if f.running {
        c.always("outcome IS NULL");
    }
    c.when("started_at >=", f.since);
    c.when("started_at <", f.until);
    c.any_of("charter", &f.charters);
    c
}

fn rejected_conditions(f: &RejectedFilter) -> Conditions {
    let mut c = Conditions::default();
    c.when("charter =", f.charter.clone());
    c.when("received_at >=", f.since);
    c.when("received_at <", f.until);
    c.any_of("charter", &f.charters);
    c
}

impl PgStore {
    pub(super) async fn page_runs(&self, f: RunFilter) -> Result<Vec<RunRecord>> {
        let sort = f.sort.unwrap_or(Sort::NewestFirst);
        let (dir, cmp) = sort.sql();
        let mut c = run_conditions(&f);
        if let Some((at, id)) = f.after {
            let at = c.param(at);
            let id = c.param(id);
            c.clause(format!("(started_at, id) {cmp} ({at}, {id})"));
        }
        let (where_sql, params, limit) = c.with_limit(f.limit);
        let tail = format!("{where_sql} ORDER BY started_at {dir}, id {dir} LIMIT {limit}");
        self.load_runs(tail, params).await
    }

    pub(super) async fn count_runs_matching(&self, f: RunFilter) -> Result<u64> {
        self.count_where("runs", run_conditions(&f)).await
    }

    pub(super) async fn page_rejected_matching(
        &self,
        f: RejectedFilter,
    ) -> Result<Vec<RejectedPayload>> {
        let sort = f.sort.unwrap_or(Sort::NewestFirst);
        let (dir, cmp) = sort.sql();
        let mut c = rejected_conditions(&f);
        if let Some(after) = f.after {
            let p = c.param(after);
            c.clause(format!("id {cmp} {p}"));
        }
        let (where_sql, params, limit) = c.with_limit(f.limit);
        let sql = format!(
            "SELECT {REJECTED_COLS} FROM rejected {where_sql} ORDER BY id {dir} LIMIT {limit}"
        );
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(db("preparing list_rejected"))?;
        let rows = client
            .query(&stmt, &param_refs(&params))
            .await
            .map_err(db("listing rejected payloads"))?;
        rows.iter().map(rows::rejected_payload).collect()
    }

    pub(super) async fn count_rejected_matching(&self, f: RejectedFilter) -> Result<u64> {
        self.count_where("rejected", rejected_conditions(&f)).await
    }

    async fn count_where(&self, table: &str, c: Conditions) -> Result<u64> {
        let (where_sql, params) = c.without_limit();
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!("SELECT COUNT(*) FROM {table} {where_sql}"),
                &param_refs(&params),
            )
            .await
            .map_err(db("counting a listing"))?;
        let n: i64 = get(&row, 0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(super) async fn page_events(&self, f: EventFilter) -> Result<Vec<EventRecord>> {
        let sort = f.sort.unwrap_or(Sort::NewestFirst);
        let (dir, cmp) = sort.sql();
        let mut c = event_conditions(&f);
        if let Some(after) = f.after {
            let p = c.param(after);
            c.clause(format!("id {cmp} {p}"));
        }
        let (where_sql, params, limit) = c.with_limit(f.limit);
        let sql =
            format!("SELECT {EVENT_COLS} FROM events {where_sql} ORDER BY id {dir} LIMIT {limit}");
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(db("preparing list_events"))?;
        let rows = client
            .query(&stmt, &param_refs(&params))
            .await
            .map_err(db("listing events"))?;
        rows.iter().map(rows::event_record).collect()
    }

    pub(super) async fn count_events_matching(&self, f: EventFilter) -> Result<u64> {
        self.count_where("events", event_conditions(&f)).await
    }

    pub(super) async fn page_approvals(&self, f: ApprovalFilter) -> Result<Vec<ApprovalRecord>> {
        let sort = f.sort.unwrap_or(Sort::OldestFirst);
        let (dir, _) = sort.sql();
        let mut c = approval_conditions(&f);
        after_created(&mut c, f.after, sort);
        let (where_sql, params, limit) = c.with_limit(f.limit);
        let sql = format!(
            "SELECT {APPROVAL_COLS} FROM approvals {where_sql}
             ORDER BY created_at {dir}, id {dir} LIMIT {limit}"
        );
        let client = self.client().await?;
        let rows = client
            .query(&sql, &param_refs(&params))
            .await
            .map_err(db("listing approvals"))?;
        rows.iter().map(approval_record).collect()
    }

    pub(super) async fn count_approvals_matching(&self, f: ApprovalFilter) -> Result<u64> {
        self.count_where("approvals", approval_conditions(&f)).await
    }

    pub(super) async fn page_escalations(
        &self,
        f: EscalationFilter,
    ) -> Result<Vec<EscalationRecord>> {
        let sort = f.sort.unwrap_or(Sort::OldestFirst);
        let (dir, _) = sort.sql();
        let mut c = escalation_conditions(&f);
        after_created(&mut c, f.after, sort);
        let (where_sql, params, limit) = c.with_limit(f.limit);
        let sql = format!(
            "SELECT {ESCALATION_COLS} FROM escalations {where_sql}
             ORDER BY created_at {dir}, id {dir} LIMIT {limit}"
        );
        let client = self.client().await?;
        let rows = client
            .query(&sql, &param_refs(&params))
            .await
            .map_err(db("listing escalations"))?;
        rows.iter().map(escalation_record).collect()
    }

    pub(super) async fn count_escalations_matching(&self, f: EscalationFilter) -> Result<u64> {
        self.count_where("escalations", escalation_conditions(&f))
            .await
    }

    pub(super) async fn page_audit(&self, f: AuditFilter) -> Result<Vec<AuditEntry>> {
        let sort = f.sort.unwrap_or(Sort::NewestFirst);
        let (dir, cmp) = sort.sql();
        let mut c = audit_conditions(&f);
        if let Some(after) = f.after {
            let p = c.param(after);
            c.clause(format!("seq {cmp} {p}"));
        }
        let (where_sql, params, limit) = c.with_limit(f.limit);
        let sql = format!(
            "SELECT seq, at, actor, action, charter, target, detail FROM audit_log
             {where_sql} ORDER BY seq {dir} LIMIT {limit}"
        );
        let client = self.client().await?;
        let rows = client
            .query(&sql, &param_refs(&params))
            .await
            .map_err(db("listing the audit log"))?;
        rows.iter()
            .map(|r| {
                let detail: Option<serde_json::Value> = get(r, 6)?;
                Ok(AuditEntry {
                    seq: get(r, 0)?,
                    at: get(r, 1)?,
                    actor: get(r, 2)?,
                    action: get(r, 3)?,
                    charter: get(r, 4)?,
                    target: get(r, 5)?,
                    detail: detail.unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }

    pub(super) async fn count_audit_matching(&self, f: AuditFilter) -> Result<u64> {
        self.count_where("audit_log", audit_conditions(&f)).await
    }
}
