//! Paged listings for the API and the web UI alike: a page of a store listing with the
//! listing's true total and the cursor of the next page.
//!
//! A cursor is opaque to clients: the key of the last row of the page it follows (an event's
//! or rejected payload's id; an approval's or escalation's `created_at` and id, a run's
//! `started_at` and id; an audit entry's sequence number), which the store pages from by keyset ([`charter_store::page`]). A page is read
//! one row longer than asked, so a `next` cursor is given only when a next page has rows.
//! Totals are counted with the same filter, the caller's scope of charters included, so a
//! scoped token's total counts what it can page through.

use charter_core::model::{EventRecord, RejectedPayload, RunRecord, UnixMillis};
use charter_store::{
    ApprovalFilter, ApprovalRecord, AuditEntry, AuditFilter, EscalationFilter, EscalationRecord,
    EventFilter, RejectedFilter, RunFilter, Sort, Store, StoreError,
};
use uuid::Uuid;

use crate::error::ApiError;

/// One page of a listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many rows the whole listing has (every page).
    pub total: u64,
    /// The cursor of the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Largest page a caller may ask for.
pub const MAX_PAGE: usize = 10_000;

/// A listing's `limit`: 100 when absent, at most [`MAX_PAGE`], at least 1.
pub fn page_size(limit: Option<usize>) -> usize {
    limit.unwrap_or(100).clamp(1, MAX_PAGE)
}

/// The `sort` query parameter: `newest` or `oldest` (absent: the listing's natural order).
pub fn parse_sort(sort: Option<&str>) -> Result<Option<Sort>, ApiError> {
    match sort {
        None | Some("") => Ok(None),
        Some(s) => Sort::parse(s).map(Some).ok_or_else(|| {
            ApiError::BadRequest(format!("unknown sort `{s}`: expected newest or oldest"))
        }),
    }
}

fn bad_cursor() -> ApiError {
    ApiError::BadRequest(
        "invalid cursor: pass the next_cursor of the previous page unchanged".into(),
    )
}

/// An event listing's cursor (the last event's id).
pub fn event_cursor(c: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    c.filter(|c| !c.is_empty())
        .map(|c| Uuid::parse_str(c).map_err(|_| bad_cursor()))
        .transpose()
}

/// An approval, escalation or run listing's cursor: `<created_at>_<id>` (for a run, its
/// `started_at`).
pub fn created_cursor(c: Option<&str>) -> Result<Option<(UnixMillis, Uuid)>, ApiError> {
    let Some(c) = c.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let (at, id) = c.split_once('_').ok_or_else(bad_cursor)?;
    let at = at.parse::<UnixMillis>().map_err(|_| bad_cursor())?;
    let id = Uuid::parse_str(id).map_err(|_| bad_cursor())?;
    Ok(Some((at, id)))
}

/// An audit listing's cursor (the last entry's sequence number).
pub fn seq_cursor(c: Option<&str>) -> Result<Option<i64>, ApiError> {
    c.filter(|c| !c.is_empty())
        .map(|c| c.parse::<i64>().map_err(|_| bad_cursor()))
        .transpose()
}

fn created_key(at: UnixMillis, id: Uuid) -> String {
    format!("{at}_{id}")
}

/// Cut the one row read beyond the page off and make the next cursor from the page's last.
fn finish<T>(mut items: Vec<T>, size: usize, total: u64, key: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > size;
    items.truncate(size);
    let next = if more { items.last().map(key) } else { None };
    Page { items, total, next }
}

/// A page of events: `filter.limit` is the page size, `filter.after` the cursor.
pub async fn events<S: Store>(
    store: &S,
    mut filter: EventFilter,
) -> Result<Page<EventRecord>, StoreError> {
    let size = filter.limit.max(1);
    filter.limit = size + 1;
    let (items, total) = tokio::try_join!(
        store.list_events(filter.clone()),
        store.count_events(filter)
    )?;
    Ok(finish(items, size, total, |e| e.event.id.to_string()))
}

/// A page of approvals (see [`events`]).
pub async fn approvals<S: Store>(
    store: &S,
    mut filter: ApprovalFilter,
) -> Result<Page<ApprovalRecord>, StoreError> {
    let size = filter.limit.max(1);
    filter.limit = size + 1;
    let (items, total) = tokio::try_join!(
        store.list_approvals(filter.clone()),
        store.count_approvals(filter)
    )?;
    Ok(finish(items, size, total, |a| {
        created_key(a.created_at, a.id)
    }))
}

/// A page of escalations (see [`events`]).
pub async fn escalations<S: Store>(
    store: &S,
    mut filter: EscalationFilter,
) -> Result<Page<EscalationRecord>, StoreError> {
    let size = filter.limit.max(1);
    filter.limit = size + 1;
    let (items, total) = tokio::try_join!(
        store.list_escalations(filter.clone()),
        store.count_escalations(filter)
    )?;
    Ok(finish(items, size, total, |e| {
        created_key(e.created_at, e.id)
    }))
}

/// A page of the audit log (see [`events`]).
pub async fn audit<S: Store>(
    store: &S,
    mut filter: AuditFilter,
) -> Result<Page<AuditEntry>, StoreError> {
    let size = filter.limit.max(1);
    filter.limit = size + 1;
    let (items, total) =
        tokio::try_join!(store.list_audit(filter.clone()), store.count_audit(filter))?;
    Ok(finish(items, size, total, |e| e.seq.to_string()))
}

/// `outcome=` of a runs listing as the store's filter: (outcome, running); `running` means
/// not finished yet.
pub fn parse_outcome(
    outcome: Option<&str>,
) -> Result<(Option<charter_core::model::RunOutcome>, bool), ApiError> {
    match outcome {
        None => Ok((None, false)),
        Some("running") => Ok((None, true)),
        Some(s) => serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map(|o| (Some(o), false))
            .map_err(|_| {
                ApiError::BadRequest(format!(
                    "unknown outcome `{s}`: expected completed, no_route, shadow, failed, \
                     escalated, awaiting_approval, rejected, interrupted or running"
                ))
            }),
    }
}

/// A page of runs (see [`events`]).
pub async fn runs<S: Store>(
    store: &S,
    mut filter: RunFilter,
) -> Result<Page<RunRecord>, StoreError> {
    let size = filter.limit.max(1);
    filter.limit = size + 1;
    let (items, total) =
        tokio::try_join!(store.list_runs(filter.clone()), store.count_runs(filter))?;
    Ok(finish(items, size, total, |r| {
        created_key(r.started_at, r.id)
    }))
}

/// A page of rejected payloads (see [`events`]).
pub async fn rejected<S: Store>(
    store: &S,
    mut filter: RejectedFilter,
) -> Result<Page<RejectedPayload>, StoreError> {
    let size = filter.limit.max(1);
    filter.limit = size + 1;
    let (items, total) = tokio::try_join!(
        store.page_rejected(filter.clone()),
        store.count_rejected(filter)
    )?;
    Ok(finish(items, size, total, |r| r.id.to_string()))
}

/// The cursor of the page before the one that starts with the rejected payload `first`
/// (read in the other order from it): `Some(None)` when that page is the first one,
/// `None` when there is no page before.
pub async fn rejected_previous<S: Store>(
    store: &S,
    mut filter: RejectedFilter,
    first: Uuid,
) -> Result<Option<Option<String>>, StoreError> {
    let size = filter.limit.max(1);
    filter.sort = Some(match filter.sort.unwrap_or(Sort::NewestFirst) {
        Sort::NewestFirst => Sort::OldestFirst,
        Sort::OldestFirst => Sort::NewestFirst,
    });
    filter.after = Some(first);
    filter.limit = size + 1;
    let before = store.page_rejected(filter).await?;
    Ok(match before.len() {
        0 => None,
        n if n <= size => Some(None),
        // The row just before the previous page is its cursor.
        _ => Some(before.get(size).map(|r| r.id.to_string())),
    })
}

/// Search events by what an operator pastes: an exact dedupe key first (any charter), else
/// an id or its prefix (hexadecimal digits, hyphens allowed). Both lookups are indexed.
pub async fn search_events<S: Store>(
    store: &S,
    scope: &[String],
    text: &str,
    limit: usize,
) -> Result<Vec<EventRecord>, StoreError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let by_key = store
        .list_events(EventFilter {
            dedupe_key: Some(text.to_string()),
            charters: scope.to_vec(),
            limit,
            ..EventFilter::default()
        })
        .await?;
    if !by_key.is_empty() || charter_store::uuid_prefix_range(text).is_none() {
        return Ok(by_key);
    }
    store
        .list_events(EventFilter {
            id_prefix: Some(text.to_string()),
            charters: scope.to_vec(),
            limit,
            ..EventFilter::default()
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(event_cursor(Some(&id.to_string())).unwrap(), Some(id));
        assert_eq!(event_cursor(None).unwrap(), None);
        assert!(event_cursor(Some("nope")).is_err());
        let key = created_key(1_700, id);
        assert_eq!(created_cursor(Some(&key)).unwrap(), Some((1_700, id)));
        assert!(created_cursor(Some("1700")).is_err());
        assert!(created_cursor(Some("x_y")).is_err());
        assert_eq!(seq_cursor(Some("42")).unwrap(), Some(42));
        assert!(seq_cursor(Some("4.2")).is_err());
    }

    #[test]
    fn finish_gives_a_cursor_only_when_more_rows_exist() {
        let p = finish(vec![1, 2, 3], 2, 3, |n| n.to_string());
        assert_eq!(p.items, vec![1, 2]);
        assert_eq!(p.next.as_deref(), Some("2"));
        let p = finish(vec![1, 2], 2, 2, |n| n.to_string());
        assert_eq!(p.next, None);
    }
}
