//! Flash messages: the page after a form shows one of a fixed set of messages, named by a
//! code in `?msg=` (with an optional count, `?msg=requeued-3`). Free text in the URL is
//! never shown, so a link cannot plant words in the page.

/// Every message a page may show, by code. `{n}` is replaced by the count.
const MESSAGES: &[(&str, &str)] = &[
    ("approved", "Approved; the action runs now."),
    (
        "approved_edited",
        "Approved with your edit; the action runs now.",
    ),
    ("rejected", "Rejected; the action will not run."),
    ("decided", "Decided; the run continues with your decision."),
    (
        "retried",
        "Retry queued; the dead letter closes when the event succeeds.",
    ),
    ("dismissed", "Dismissed; the event stays failed."),
    (
        "bulk_approved",
        "{n} approval(s) approved; their actions run now.",
    ),
    ("replayed", "Replay queued."),
    (
        "still_invalid",
        "The payload still breaks the contract; its violations are listed below.",
    ),
    (
        "stored",
        "The rejected payload passed the contract and was stored as this event.",
    ),
    ("paused", "Paused: events are kept and wait."),
    ("resumed", "Resumed."),
    ("requeued_failed", "{n} failed event(s) queued again."),
    (
        "requeued_range",
        "{n} event(s) received in the range queued again.",
    ),
    (
        "promoted",
        "Promoted to live: new runs execute their actions.",
    ),
    (
        "demoted",
        "Back in shadow mode: new runs only record what they would do.",
    ),
    ("review_agreed", "Review recorded: agreed."),
    ("review_corrected", "Review recorded: corrected."),
    ("route_shadow", "The route now runs in shadow mode."),
    (
        "route_approve",
        "The route now runs in approve mode: every action waits for a reviewer.",
    ),
    ("route_live", "The route now runs in live mode."),
    (
        "rerouted",
        "Rerouted to the manual queue: it waits in the inbox for a human decision.",
    ),
];

/// The message for a `?msg=` value, or `None` for anything not in the set.
pub fn message(value: &str) -> Option<String> {
    let (code, n) = match value.rsplit_once('-') {
        Some((code, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (code, n.parse::<u64>().ok())
        }
        _ => (value, None),
    };
    let (_, text) = MESSAGES.iter().find(|(c, _)| *c == code)?;
    match (text.contains("{n}"), n) {
        (true, Some(n)) => Some(text.replace("{n}", &n.to_string())),
        (false, None) => Some((*text).to_string()),
        _ => None,
    }
}

/// `path` with the message `code` (and count) for the next page.
pub fn with_code(path: &str, code: &str, n: Option<usize>) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    match n {
        Some(n) => format!("{path}{sep}msg={code}-{n}"),
        None => format!("{path}{sep}msg={code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_codes_show() {
        assert_eq!(
            message("approved").as_deref(),
            Some("Approved; the action runs now.")
        );
        assert_eq!(
            message("requeued_failed-3").as_deref(),
            Some("3 failed event(s) queued again.")
        );
        assert_eq!(message("Your account is locked, call 555"), None);
        assert_eq!(message("<script>"), None);
        assert_eq!(message("requeued_failed"), None, "a count is needed");
        assert_eq!(message("approved-3"), None, "no count is taken");
        assert_eq!(
            with_code("/inbox?tab=dead", "retried", None),
            "/inbox?tab=dead&msg=retried"
        );
        assert_eq!(
            with_code("/charters/a", "requeued_failed", Some(2)),
            "/charters/a?msg=requeued_failed-2"
        );
    }
}
