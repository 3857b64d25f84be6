//! The notification outbox: one row per new approval or escalation and notification
//! target, delivered by the server's notifier with retries (issue 4, notifications).
//!
//! Rows are written right after the approval or escalation they announce (idempotently: a
//! re-run that finds the item again enqueues nothing new), so a delivery that fails, or a
//! server that stops, leaves the row to be retried. A claim leases a row by pushing its
//! next attempt into the future, so two nodes never deliver the same row at once.

use std::future::Future;

use charter_core::model::UnixMillis;
use uuid::Uuid;

use crate::Result;

/// What a notification announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    Approval,
    Escalation,
    /// A route met its `promote_when` (suggested, or promoted with `auto: true`); the item is
    /// the review sample that tipped it.
    Promotion,
    /// A live route was demoted to `approve`; the item is the review sample that tipped it.
    Demotion,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Approval => "approval",
            NotificationKind::Escalation => "escalation",
            NotificationKind::Promotion => "promotion",
            NotificationKind::Demotion => "demotion",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approval" => Some(NotificationKind::Approval),
            "escalation" => Some(NotificationKind::Escalation),
            "promotion" => Some(NotificationKind::Promotion),
            "demotion" => Some(NotificationKind::Demotion),
            _ => None,
        }
    }
}

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationState {
    /// Not delivered yet (possibly being delivered right now, or waiting for a retry).
    Pending,
    Sent,
    /// Given up after the last attempt.
    Failed,
}

impl NotificationState {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationState::Pending => "pending",
            NotificationState::Sent => "sent",
            NotificationState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(NotificationState::Pending),
            "sent" => Some(NotificationState::Sent),
            "failed" => Some(NotificationState::Failed),
            _ => None,
        }
    }
}

/// A notification to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub id: Uuid,
    pub kind: NotificationKind,
    /// The approval's or escalation's id.
    pub item_id: Uuid,
    pub charter: String,
    /// The target as written in the charter (`connector` or `connector:where`).
    pub target: String,
    pub created_at: UnixMillis,
}

/// A queued notification.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NotificationRecord {
    pub id: Uuid,
    pub kind: NotificationKind,
    pub item_id: Uuid,
    pub charter: String,
    pub target: String,
    pub state: NotificationState,
    /// Delivery attempts started (claims).
    pub attempts: u32,
    /// When the row may be claimed next (a claim pushes it to the lease's end).
    pub next_attempt_at: UnixMillis,
    pub created_at: UnixMillis,
    pub sent_at: Option<UnixMillis>,
    /// Why the last attempt failed (never holds a secret).
    pub last_error: Option<String>,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Sent,
    /// Try again at `at`.
    Retry {
        at: UnixMillis,
        error: String,
    },
    /// Give up.
    Failed {
        error: String,
    },
}

/// The notification outbox.
pub trait NotificationStore: Send + Sync + 'static {
    /// Queue notifications. At most one row ever exists per `(item_id, target)`: queuing one
    /// again (a re-run finding the same approval) is a no-op. Returns how many were new.
    /// Durable on return; new rows are due at once.
    fn enqueue_notifications(
        &self,
        items: Vec<NewNotification>,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// Claim up to `limit` pending notifications due at `now`, oldest first: each claimed
    /// row's attempt count is incremented and its next attempt moved to `lease_until`, so
    /// no other claim returns it before then (on any node).
    fn claim_notifications(
        &self,
        now: UnixMillis,
        lease_until: UnixMillis,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<NotificationRecord>>> + Send;

    /// Record how a claimed notification's delivery ended. Only pending rows change.
    fn finish_notification(
        &self,
        id: Uuid,
        delivery: Delivery,
        now: UnixMillis,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Notifications of one item (or of all items when `None`), oldest first.
    fn list_notifications(
        &self,
        item_id: Option<Uuid>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<NotificationRecord>>> + Send;
}
