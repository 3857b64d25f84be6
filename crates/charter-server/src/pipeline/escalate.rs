//! Handing an event to a human: opening (or finding) its escalation, and reading a human's
//! decision on one back as the run's decision.

use charter_core::model::{Decision, DecisionStage, EscalationReason, StageAnswer};
use charter_store::{EscalationRecord, NewEscalation, Store};
use serde_json::Value;
use uuid::Uuid;

use super::run::{RunCtx, RunError};
use crate::now_millis;

/// The decision a human gave when resolving an escalation of the event.
pub(super) fn human_decision(e: &EscalationRecord) -> Decision {
    let (label, fields) = match &e.resolution {
        Some(h) => (Some(h.label.clone()), h.fields.clone()),
        None => (None, Default::default()),
    };
    let who = e.resolved_by.as_deref().unwrap_or("a reviewer");
    let note = format!("decided by {who} (escalation {})", e.id);
    Decision {
        label: label.clone(),
        confidence: 1.0,
        fields,
        stage: DecisionStage::Human,
        reason: note.clone(),
        stages: vec![StageAnswer {
            stage: DecisionStage::Human,
            label,
            confidence: Some(1.0),
            accepted: true,
            note,
            usage: None,
        }],
        escalation: None,
    }
}

/// The escalation reason code for a decision the cascade could not make: the one the
/// decision code set ([`Decision::escalation`]); `low_confidence` for a decision recorded
/// without one.
pub(super) fn escalation_reason(d: &Decision) -> &'static str {
    d.escalation
        .unwrap_or(EscalationReason::LowConfidence)
        .as_str()
}

impl<S: Store> RunCtx<'_, S> {
    /// Hand the event to a human: open an escalation (or find the event's open one).
    pub(super) async fn escalate(
        &self,
        reason: &str,
        detail: Value,
    ) -> Result<EscalationRecord, RunError> {
        let charter = &self.charter;
        let rec = self
            .state
            .store
            .create_escalation(NewEscalation {
                id: Uuid::now_v7(),
                run_id: Some(self.run_id),
                event_id: self.event.id,
                charter: charter.name.clone(),
                reason: reason.to_string(),
                detail,
                target: Some(charter.escalation.to.clone()),
                created_at: now_millis(),
            })
            .await?;
        self.state.metrics.escalation(&charter.name, reason);
        tracing::info!(event = %self.event.id, charter = %charter.name, escalation = %rec.id, reason, "escalated to a human");
        if rec.status == charter_store::EscalationStatus::Open {
            // Idempotent: a re-run finding the open escalation queues nothing new.
            crate::outbox::escalation_created(self.state, charter, &rec).await;
        }
        Ok(rec)
    }
}
