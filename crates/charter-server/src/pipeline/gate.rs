//! The approval gate of an action whose policy requires approval. The approval is bound to
//! the idempotency key of the rendered parameters: a re-run finds the same approval;
//! different parameters need a new one.

use std::time::Duration;

use charter_core::config::OnExpiry;
use charter_core::model::{ActionRecord, ActionStatus};
use charter_store::{ApprovalRecord, ApprovalStatus, NewApproval, NewAuditEntry, Store};
use serde_json::{Value, json};
use uuid::Uuid;

use super::act::ActStep;
use super::run::{RunCtx, RunError};
use crate::now_millis;

/// What the approval gate allows.
pub(super) enum Gate {
    /// Execute with these parameters under this idempotency key.
    Proceed {
        params: Value,
        key: String,
    },
    Stop(ActStep),
}

/// An action's approval policy: who reviews, how long the request stays open, and what an
/// expiry does.
pub(super) struct Policy<'a> {
    pub reviewers: &'a [String],
    pub expires: Duration,
    pub on_expiry: OnExpiry,
}

impl<S: Store> RunCtx<'_, S> {
    /// Gate action `name` with `params` (idempotency key `key`) under `policy`.
    pub(super) async fn approval_gate(
        &self,
        name: &str,
        params: &Value,
        key: &str,
        policy: &Policy<'_>,
    ) -> Result<Gate, RunError> {
        let approval = self.approval_for(name, params, key, policy).await?;
        let id = approval.id;
        match approval.status {
            ApprovalStatus::Pending => Ok(Gate::Stop(ActStep::AwaitingApproval(format!(
                "action `{name}` awaits approval {id}"
            )))),
            ApprovalStatus::Approved => Ok(Gate::Proceed {
                params: approval.effective_params().clone(),
                key: approval
                    .edited_hash
                    .clone()
                    .unwrap_or_else(|| key.to_string()),
            }),
            ApprovalStatus::Rejected => {
                let by = approval.decided_by.as_deref().unwrap_or("a reviewer");
                let reason = approval.comment.as_deref().unwrap_or("no reason given");
                let why = format!("action `{name}`: approval {id} rejected by {by}: {reason}");
                self.rejected(name, params, key, why).await
            }
            ApprovalStatus::Expired => self.expired(name, params, key, policy, &approval).await,
        }
    }

    /// The action's approval for `key`: the existing one, else a new request (audited).
    /// A pending one is (re)queued for notification, and expired now if past its deadline.
    async fn approval_for(
        &self,
        name: &str,
        params: &Value,
        key: &str,
        policy: &Policy<'_>,
    ) -> Result<ApprovalRecord, RunError> {
        let store = &self.state.store;
        let now = now_millis();
        let mut approval = match store.find_approval(self.event.id, name, key).await? {
            Some(a) => a,
            None => {
                self.request_approval(name, params, key, policy, now)
                    .await?
            }
        };
        if approval.status == ApprovalStatus::Pending {
            // Idempotent: also heals a crash between creating the approval and queuing.
            crate::outbox::approval_created(self.state, &self.charter, &approval).await;
        }
        if approval.status == ApprovalStatus::Pending
            && approval.expires_at.is_some_and(|t| t <= now)
        {
            // Past its deadline but not yet swept by the expiry task: expire it now.
            store.expire_approvals(now).await?;
            if let Some(a) = store.get_approval(approval.id).await? {
                approval = a;
            }
        }
        Ok(approval)
    }

    /// Create the approval request and audit it.
    async fn request_approval(
        &self,
        name: &str,
        params: &Value,
        key: &str,
        policy: &Policy<'_>,
        now: i64,
    ) -> Result<ApprovalRecord, RunError> {
        let store = &self.state.store;
        let charter = &self.charter;
        let a = store
            .create_approval(NewApproval {
                id: Uuid::now_v7(),
                run_id: self.run_id,
                event_id: self.event.id,
                charter: charter.name.clone(),
                action: name.to_string(),
                params: params.clone(),
                params_hash: key.to_string(),
                reviewers: policy.reviewers.to_vec(),
                created_at: now,
                expires_at: Some(now.saturating_add(policy.expires.as_millis() as i64)),
                on_expiry: Some(on_expiry_str(policy.on_expiry).to_string()),
            })
            .await?;
        store
            .append_audit(NewAuditEntry {
                at: now,
                actor: "system".into(),
                action: "approval.request".into(),
                charter: Some(charter.name.clone()),
                target: Some(a.id.to_string()),
                detail: json!({"event": self.event.id, "action": name, "params_hash": key}),
            })
            .await?;
        Ok(a)
    }

    /// An expired approval: rejected under `on_expiry: reject` or once a human decided the
    /// event after the expiry; otherwise escalated to a human.
    async fn expired(
        &self,
        name: &str,
        params: &Value,
        key: &str,
        policy: &Policy<'_>,
        approval: &ApprovalRecord,
    ) -> Result<Gate, RunError> {
        let id = approval.id;
        if policy.on_expiry == OnExpiry::Reject {
            let why = format!("action `{name}`: approval {id} expired; on_expiry: reject");
            return self.rejected(name, params, key, why).await;
        }
        // Escalated: once a human has decided the event after the expiry, the expired
        // approval still cannot run; the run ends there.
        let expired_at = approval.decided_at.unwrap_or(approval.created_at);
        if let Some(h) = self.state.store.latest_resolution(self.event.id).await?
            && h.resolved_at.is_some_and(|t| t >= expired_at)
        {
            let why = format!(
                "action `{name}`: approval {id} expired; the escalation was decided by a human"
            );
            return self.rejected(name, params, key, why).await;
        }
        let detail = json!({
            "approval": approval_evidence(approval),
            "payload": self.event.payload,
        });
        let e = self.escalate("approval_expired", detail).await?;
        Ok(Gate::Stop(ActStep::Escalated(format!(
            "action `{name}`: approval {id} expired; escalated ({})",
            e.id
        ))))
    }

    /// Record the action as rejected (nothing is sent) and stop the route.
    async fn rejected(
        &self,
        name: &str,
        params: &Value,
        key: &str,
        why: String,
    ) -> Result<Gate, RunError> {
        let store = &self.state.store;
        let rec = ActionRecord {
            action: name.to_string(),
            idempotency_key: key.to_string(),
            params: params.clone(),
            status: ActionStatus::Rejected,
            attempts: vec![],
        };
        store.begin_action(self.run_id, name, key, params).await?;
        store.finish_action(self.run_id, &rec).await?;
        Ok(Gate::Stop(ActStep::Rejected(why)))
    }
}

fn on_expiry_str(o: OnExpiry) -> &'static str {
    match o {
        OnExpiry::Escalate => "escalate",
        OnExpiry::Reject => "reject",
    }
}

fn approval_evidence(a: &ApprovalRecord) -> Value {
    json!({
        "id": a.id,
        "action": a.action,
        "params": a.params,
        "params_hash": a.params_hash,
        "reviewers": a.reviewers,
        "expires_at": a.expires_at,
    })
}
