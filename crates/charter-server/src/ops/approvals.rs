//! Approvals: showing one, and granting or refusing it (with a reviewer's edit of the
//! parameters). The one place an approval is decided, whoever asks: the admin API, the web
//! UI, Slack's buttons.

use charter_core::config::Role;
use charter_core::idempotency::idempotency_key;
use charter_store::{ApprovalRecord, ApprovalStatus, NotificationRecord, Store, Verdict};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{OpError, audit, parse_id, requeue_soon, require};
use crate::auth::Caller;
use crate::{AppState, now_millis};

/// One approval with the delivery state of each notification that announced it.
#[derive(Debug, Serialize)]
pub struct ApprovalView {
    pub approval: ApprovalRecord,
    pub notifications: Vec<NotificationRecord>,
}

/// A decided approval, as the decision left it.
#[derive(Debug, Serialize)]
pub struct Decided {
    pub approval: ApprovalRecord,
}

/// The approval `id` with its notifications (where it was announced, and how each
/// delivery went), so an operator can tell a reviewer who was never told from one who was.
pub async fn show<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<ApprovalView, OpError> {
    let approval = visible(state, caller, id).await?;
    let notifications = state
        .store
        .list_notifications(Some(approval.id), 100)
        .await?;
    Ok(ApprovalView {
        approval,
        notifications,
    })
}

/// The approval `id` if the caller sees its charter.
pub async fn visible<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<ApprovalRecord, OpError> {
    let a = state
        .store
        .get_approval(parse_id(id)?)
        .await?
        .ok_or(OpError::NotFound)?;
    if !caller.sees(&a.charter) {
        return Err(OpError::NotFound);
    }
    Ok(a)
}

/// May this caller decide this approval? Admins always; others only when the approval names
/// no reviewers or names them.
pub fn may_decide(caller: &Caller, a: &ApprovalRecord) -> bool {
    caller.role == Role::Admin
        || a.reviewers.is_empty()
        || a.reviewers.iter().any(|r| r == &caller.name)
        || a.reviewers
            .iter()
            .any(|r| Some(r) == caller.reviewer_as.as_ref())
}

/// The approval `id`, if `caller` is a reviewer who sees it and may decide it.
async fn decidable<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<ApprovalRecord, OpError> {
    require(caller, Role::Reviewer)?;
    let a = visible(state, caller, id).await?;
    if !may_decide(caller, &a) {
        return Err(OpError::Forbidden);
    }
    Ok(a)
}

/// Could `caller` decide approval `id` now? The checks a decision makes before it writes
/// (role, scope, reviewers, still pending and not expired), for a client that must ask the
/// reviewer something first (Slack's reason dialog). The decision checks again.
pub async fn check_decidable<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<ApprovalRecord, OpError> {
    let a = decidable(state, caller, id).await?;
    match closed(&a, now_millis()) {
        Some(why) => Err(why),
        None => Ok(a),
    }
}

const EXPIRED: &str = "the approval has expired and can no longer be decided";

/// Why approval `a` can no longer be decided at `now`, if it cannot.
fn closed(a: &ApprovalRecord, now: i64) -> Option<OpError> {
    if a.status != ApprovalStatus::Pending {
        Some(OpError::Conflict(format!(
            "the approval is already {}",
            a.status.as_str()
        )))
    } else if a.expires_at.is_some_and(|at| at <= now) {
        Some(OpError::Conflict(EXPIRED.into()))
    } else {
        None
    }
}

/// Why a decision of a visible approval changed nothing: it was decided meanwhile, or its
/// deadline passed.
async fn not_decided<S: Store>(state: &AppState<S>, id: Uuid) -> OpError {
    match state.store.get_approval(id).await {
        Ok(Some(a)) => closed(&a, now_millis()).unwrap_or(OpError::Conflict(EXPIRED.into())),
        Ok(None) => OpError::NotFound,
        Err(e) => e.into(),
    }
}

/// Check a reviewer's edit: same shape, and only the request body (`json`) or a log
/// message (`log`) changed. The connector, method, target and headers come from the
/// charter and are not the reviewer's to change.
pub fn check_edit(original: &Value, edited: &Value) -> Result<(), OpError> {
    let (Some(o), Some(e)) = (original.as_object(), edited.as_object()) else {
        return Err(OpError::Invalid(
            "edited params must be a JSON object like the original".into(),
        ));
    };
    let mut keys: Vec<&String> = o.keys().chain(e.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        if k == "json" || k == "log" {
            if o.contains_key(k) != e.contains_key(k) {
                return Err(OpError::Invalid(format!(
                    "edited params must keep `{k}` present or absent as rendered"
                )));
            }
            continue;
        }
        if o.get(k) != e.get(k) {
            return Err(OpError::Invalid(format!(
                "`{k}` cannot be edited; only `json` (the request body) or `log` may change"
            )));
        }
    }
    if let Some(v) = e.get("log")
        && !v.is_string()
    {
        return Err(OpError::Invalid("`log` must be a string".into()));
    }
    Ok(())
}

/// Approve `id` as `caller`, with the reviewer's edit of the parameters if any. `edit` is
/// the caller's input as read: an unreadable input is reported only once the approval is
/// known to be the caller's to decide (what the API has always answered first).
pub async fn approve<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
    edit: Result<Option<Value>, OpError>,
) -> Result<Decided, OpError> {
    let a = decidable(state, caller, id).await?;
    let edited = match edit? {
        Some(p) if p != a.params => {
            check_edit(&a.params, &p)?;
            let hash = idempotency_key(a.event_id, &a.action, &p);
            Some((p, hash))
        }
        _ => None,
    };
    let verdict = Verdict::Approve {
        edited: edited.clone(),
    };
    let decided = state
        .store
        .decide_approval(a.id, verdict, &caller.name, now_millis())
        .await?;
    let Some(decided) = decided else {
        return Err(not_decided(state, a.id).await);
    };
    audit_approval(state, caller, &a, &decided, edited.as_ref()).await?;
    crate::rollout::approved(state, &decided, &caller.name).await;
    requeue_soon(state, a.event_id);
    tracing::info!(caller = %caller.name, approval = %a.id, edited = edited.is_some(), "approved");
    Ok(Decided { approval: decided })
}

/// The audit entries of a granted approval: `approval.edit` when the reviewer changed the
/// parameters, then `approval.approve`.
async fn audit_approval<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    a: &ApprovalRecord,
    decided: &ApprovalRecord,
    edited: Option<&(Value, String)>,
) -> Result<(), OpError> {
    if let Some((p, hash)) = edited {
        audit(
            state,
            &caller.name,
            "approval.edit",
            Some(&a.charter),
            Some(a.id.to_string()),
            json!({
                "event": a.event_id,
                "action": a.action,
                "params": a.params,
                "params_hash": a.params_hash,
                "edited_params": p,
                "edited_hash": hash,
            }),
        )
        .await?;
    }
    audit(
        state,
        &caller.name,
        "approval.approve",
        Some(&a.charter),
        Some(a.id.to_string()),
        json!({
            "event": a.event_id,
            "action": a.action,
            "params_hash": decided.edited_hash.as_deref().unwrap_or(&a.params_hash),
            "edited": edited.is_some(),
        }),
    )
    .await
}

/// Reject `id` as `caller` with a reason (see [`approve`] for `reason` read as input).
pub async fn reject<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
    reason: Result<String, OpError>,
) -> Result<Decided, OpError> {
    let a = decidable(state, caller, id).await?;
    let reason = reason?.trim().to_string();
    if reason.is_empty() {
        return Err(OpError::Invalid("a rejection needs a reason".into()));
    }
    let verdict = Verdict::Reject {
        reason: reason.clone(),
    };
    let decided = state
        .store
        .decide_approval(a.id, verdict, &caller.name, now_millis())
        .await?;
    let Some(decided) = decided else {
        return Err(not_decided(state, a.id).await);
    };
    audit(
        state,
        &caller.name,
        "approval.reject",
        Some(&a.charter),
        Some(a.id.to_string()),
        json!({"event": a.event_id, "action": a.action, "reason": reason}),
    )
    .await?;
    requeue_soon(state, a.event_id);
    tracing::info!(caller = %caller.name, approval = %a.id, "rejected");
    Ok(Decided { approval: decided })
}
