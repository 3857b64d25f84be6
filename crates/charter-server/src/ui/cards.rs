//! The cards of the items waiting for a human, shown in the inbox's detail pane and on an
//! event's timeline: an approval's card (parameters, evidence, cited passages, and Approve,
//! Reject and edit-then-approve for those who may decide it) and an escalation's card
//! (evidence and the decision form with typed field inputs, or a dead letter's Retry and
//! Dismiss). Also what the decision form's fields mean when posted ([`typed_fields`]).

use std::fmt::Write;

use charter_core::config::{FieldType, Role};
use charter_store::{ApprovalRecord, ApprovalStatus, EscalationRecord, EscalationStatus, Store};
use serde_json::{Value, json};
use uuid::Uuid;

use super::html::{badge, csrf_field, esc, json_block, time};
use super::pages::{decision_line, event_link};
use super::session::Session;
use super::{UiError, UiState};
use crate::dead_letters::DEAD_LETTER;

/// The model's best guess in an escalation's evidence: the stage answer with a label and
/// the highest confidence.
pub fn model_guess(detail: &Value) -> Option<(String, f64)> {
    detail["stages"]
        .as_array()?
        .iter()
        .filter_map(|st| {
            let label = st["label"].as_str()?;
            Some((label.to_string(), st["confidence"].as_f64().unwrap_or(0.0)))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Every label a stage gave, with its confidence (the highest per label), best first.
fn label_confidences(detail: &Value) -> Vec<(String, f64)> {
    let mut best: Vec<(String, f64)> = Vec::new();
    for st in detail["stages"].as_array().into_iter().flatten() {
        let Some(label) = st["label"].as_str() else {
            continue;
        };
        let conf = st["confidence"].as_f64().unwrap_or(0.0);
        match best.iter_mut().find(|(l, _)| l == label) {
            Some(entry) => entry.1 = entry.1.max(conf),
            None => best.push((label.to_string(), conf)),
        }
    }
    best.sort_by(|a, b| b.1.total_cmp(&a.1));
    best
}

/// Where an approval's or escalation's notifications went, one entry per target: state,
/// attempts, and the send time or the last error. Empty when nothing was queued.
async fn notifications_line<S: Store>(ui: &UiState<S>, item: Uuid) -> Result<String, UiError> {
    let list = ui.app.store.list_notifications(Some(item), 100).await?;
    if list.is_empty() {
        return Ok(String::new());
    }
    let mut out = String::from("<div class=\"meta notifications\">notified: ");
    for (i, n) in list.iter().enumerate() {
        if i > 0 {
            out.push_str(" · ");
        }
        let _ = write!(
            out,
            "<span data-target=\"{0}\"><code>{0}</code> {1} {2} attempt{3}",
            esc(&n.target),
            badge(n.state.as_str()),
            n.attempts,
            if n.attempts == 1 { "" } else { "s" }
        );
        match (n.sent_at, &n.last_error) {
            (Some(at), _) => {
                let _ = write!(out, ", sent {}", time(ui.zone(), at));
            }
            (None, Some(e)) => {
                let _ = write!(out, ", last error: {}", esc(e));
            }
            (None, None) => {}
        }
        out.push_str("</span>");
    }
    out.push_str("</div>");
    Ok(out)
}

/// May this session decide this approval (the API's rule: admins always, reviewers when
/// the approval names no reviewers or names them)?
pub fn may_decide(s: &Session, a: &ApprovalRecord) -> bool {
    s.may(Role::Admin)
        || (s.may(Role::Reviewer)
            && (a.reviewers.is_empty() || a.reviewers.iter().any(|r| r == &s.name)))
}

/// An approval's full card: parameters, evidence, and the forms the session may use.
pub async fn approval_card<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    a: &ApprovalRecord,
    back: &str,
) -> Result<String, UiError> {
    let store = &ui.app.store;
    let event = store.get_event(a.event_id).await?;
    let runs = store.runs_for_event(a.event_id).await?;
    let run = runs.iter().find(|r| r.id == a.run_id).or(runs.last());
    let mut out = String::new();
    let _ = write!(
        out,
        "<div class=\"card approval\" data-approval=\"{}\" data-event=\"{}\"><h2>{} <span class=\"meta\">· {}</span> {}</h2>",
        a.id,
        a.event_id,
        esc(&a.action),
        esc(&a.charter),
        badge(a.status.as_str())
    );
    let _ = write!(
        out,
        "<div class=\"meta\">requested {} · {} · reviewers: {} · event {}</div>",
        time(ui.zone(), a.created_at),
        a.expires_at
            .map(|t| format!("expires {}", time(ui.zone(), t)))
            .unwrap_or_else(|| "no deadline".into()),
        if a.reviewers.is_empty() {
            "any reviewer".to_string()
        } else {
            esc(&a.reviewers.join(", "))
        },
        event_link(a.event_id)
    );
    out.push_str(&notifications_line(ui, a.id).await?);
    if a.status == ApprovalStatus::Pending && may_decide(s, a) {
        out.push_str(&approval_forms(s, a, back, None));
    } else if a.status == ApprovalStatus::Pending {
        out.push_str(
            "<p class=\"meta\">You are not among this approval's reviewers, so you cannot decide it.</p>",
        );
    }
    out.push_str("<div class=\"grid\"><div><h3>Parameters it will run with</h3>");
    out.push_str(&json_block(&a.params));
    let _ = write!(
        out,
        "<div class=\"meta\">bound to <code>{}</code></div></div><div><h3>Evidence</h3>",
        esc(&a.params_hash[..a.params_hash.len().min(16)])
    );
    if let Some(r) = run {
        let _ = write!(out, "<div>Decision: {}</div>", decision_line(r));
    }
    if let Some(e) = &event {
        out.push_str(&json_block(&e.event.payload));
    }
    out.push_str("</div></div>");
    // The knowledge passages a drafted action cites, beside the draft (empty otherwise).
    out.push_str(&super::pages::knowledge::cited_block(ui, a.run_id).await?);
    out.push_str("</div>");
    Ok(out)
}

/// Approve, reject, and edit-then-approve. `edited` is the user's text to keep after a
/// failed edit (shown with its difference from the proposal).
pub fn approval_forms(s: &Session, a: &ApprovalRecord, back: &str, edited: Option<&str>) -> String {
    let base = format!("/approvals/{}", a.id);
    let pretty = serde_json::to_string_pretty(&a.params).unwrap_or_default();
    let text = edited.unwrap_or(&pretty);
    let open = if edited.is_some() { " open" } else { "" };
    // After a failed edit the server shows the diff; while typing, the page script keeps
    // the same diff current in the placeholder (the proposal travels in `data-proposal`).
    let diff = edited
        .map(|e| diff_lines(&pretty, e))
        .unwrap_or_else(|| "<div class=\"diff\" data-live-diff hidden></div>".to_string());
    format!(
        "<div class=\"actions\">\
         <form method=\"post\" action=\"{base}/approve\" class=\"inline\" data-key=\"a\">{csrf}<input type=\"hidden\" name=\"back\" value=\"{back}\"><button type=\"submit\" class=\"primary\">Approve</button></form>\
         <form method=\"post\" action=\"{base}/reject\" class=\"inline\" data-key=\"r\">{csrf}<input type=\"hidden\" name=\"back\" value=\"{back}\"><label>Reason <input type=\"text\" name=\"reason\" required></label> <button type=\"submit\" class=\"danger\">Reject</button></form>\
         </div>\
         <details{open} data-key=\"e\"><summary>Edit the parameters, then approve</summary>\
         <form method=\"post\" action=\"{base}/approve\">{csrf}<input type=\"hidden\" name=\"back\" value=\"{back}\">\
         <p class=\"meta\">Only the request body (<code>json</code>) or a log message (<code>log</code>) may change; the approval is then bound to the edited parameters.</p>\
         <label class=\"wide\">Parameters (JSON)<textarea name=\"params\" rows=\"10\" data-proposal=\"{proposal}\">{}</textarea></label>{diff}<button type=\"submit\" class=\"primary\">Approve with these parameters</button></form></details>",
        esc(text),
        csrf = csrf_field(&s.csrf),
        back = esc(back),
        proposal = esc(&pretty),
    )
}

/// A line diff of `proposal` and `edited`: lines removed and added, as a small table.
pub fn diff_lines(proposal: &str, edited: &str) -> String {
    let old: Vec<&str> = proposal.lines().collect();
    let new: Vec<&str> = edited.lines().collect();
    let mut out = String::from("<div class=\"diff\"><h3>Your edit against the proposal</h3><pre>");
    let mut changed = false;
    for l in &old {
        if !new.contains(l) {
            changed = true;
            let _ = writeln!(out, "<del>- {}</del>", esc(l));
        }
    }
    for l in &new {
        if !old.contains(l) {
            changed = true;
            let _ = writeln!(out, "<ins>+ {}</ins>", esc(l));
        }
    }
    if !changed {
        out.push_str("no change");
    }
    out.push_str("</pre></div>");
    out
}

/// An escalation's full card: evidence and, for those allowed, the decision form (a
/// label preselected to the model's guess, typed inputs for the declared fields), or for
/// a dead letter Retry and Dismiss.
pub async fn escalation_card<S: Store>(
    ui: &UiState<S>,
    s: &Session,
    e: &EscalationRecord,
    back: &str,
) -> Result<String, UiError> {
    let mut out = String::new();
    let _ = write!(
        out,
        "<div class=\"card escalation\" data-escalation=\"{}\" data-event=\"{}\"><h2>{} <span class=\"meta\">· {}</span> {}</h2>",
        e.id,
        e.event_id,
        esc(&e.reason.replace('_', " ")),
        esc(&e.charter),
        badge(e.status.as_str())
    );
    let _ = write!(
        out,
        "<div class=\"meta\">opened {} · for {} · event {}</div>{}",
        time(ui.zone(), e.created_at),
        esc(e.target.as_deref().unwrap_or("any reviewer")),
        event_link(e.event_id),
        notifications_line(ui, e.id).await?,
    );
    let open = e.status == EscalationStatus::Open;
    if open && s.may(Role::Reviewer) {
        if e.reason == DEAD_LETTER {
            out.push_str(&dead_letter_forms(s, e, back));
        } else {
            out.push_str(&decide_form(ui, s, e, back));
        }
    } else if open {
        out.push_str("<p class=\"meta\">Viewers cannot decide escalations.</p>");
    }
    let _ = write!(out, "<h3>Evidence</h3>{}</div>", json_block(&e.detail));
    Ok(out)
}

/// A dead letter's Retry and Dismiss.
fn dead_letter_forms(s: &Session, e: &EscalationRecord, back: &str) -> String {
    format!(
        "<p class=\"meta\">An action failed after all its retries. Retry the event once the cause is fixed (the dead letter closes when it succeeds; actions that already succeeded are not sent again), or dismiss it with a reason (the event stays failed). No label is asked: this is not a decision to correct.</p>\
         <div class=\"actions\">\
         <form method=\"post\" action=\"/escalations/{id}/retry\" class=\"inline\" data-key=\"a\">{csrf}<input type=\"hidden\" name=\"back\" value=\"{back}\"><button type=\"submit\" class=\"primary\">Retry</button></form>\
         <form method=\"post\" action=\"/escalations/{id}/dismiss\" class=\"inline\" data-key=\"r\">{csrf}<input type=\"hidden\" name=\"back\" value=\"{back}\"><label>Reason <input type=\"text\" name=\"reason\" required></label> <button type=\"submit\" class=\"danger\">Dismiss</button></form>\
         </div>",
        id = e.id,
        csrf = csrf_field(&s.csrf),
        back = esc(back),
    )
}

/// The decision form: the label (the model's preselected) and the declared fields, typed.
fn decide_form<S: Store>(ui: &UiState<S>, s: &Session, e: &EscalationRecord, back: &str) -> String {
    let Some(d) = ui
        .app
        .runtime
        .charters
        .get(&e.charter)
        .and_then(|c| c.charter.decide.clone())
    else {
        return "<p class=\"meta\">This charter has no decision stage, so there is no label to pick; replay the event once the cause is fixed.</p>".into();
    };
    let confidences = label_confidences(&e.detail);
    let guess = confidences.first().map(|(l, _)| l.clone());
    let mut options = String::new();
    for l in &d.labels {
        let sel = if guess.as_deref() == Some(l.as_str()) {
            " selected"
        } else {
            ""
        };
        let conf = confidences
            .iter()
            .find(|(c, _)| c == l)
            .map(|(_, c)| format!(" ({:.0}%)", c * 100.0))
            .unwrap_or_default();
        let _ = write!(
            options,
            "<option value=\"{0}\"{sel}>{0}{conf}</option>",
            esc(l)
        );
    }
    let mut fields = String::new();
    for (name, spec) in &d.extract {
        let id = format!("f-{}-{}", e.id, name);
        let label = format!(
            "<label for=\"{}\">{}{}</label>",
            esc(&id),
            esc(name),
            if spec.required { " (required)" } else { "" }
        );
        let input = if !spec.enumeration.is_empty() {
            let mut sel = format!(
                "<select id=\"{0}\" name=\"field.{1}\"><option value=\"\">—</option>",
                esc(&id),
                esc(name)
            );
            for v in &spec.enumeration {
                let _ = write!(sel, "<option>{}</option>", esc(v));
            }
            sel + "</select>"
        } else {
            match spec.kind {
                FieldType::Boolean => format!(
                    "<select id=\"{0}\" name=\"field.{1}\"><option value=\"\">—</option><option>true</option><option>false</option></select>",
                    esc(&id),
                    esc(name)
                ),
                FieldType::Number => format!(
                    "<input id=\"{0}\" name=\"field.{1}\" type=\"number\" step=\"any\">",
                    esc(&id),
                    esc(name)
                ),
                FieldType::Integer => format!(
                    "<input id=\"{0}\" name=\"field.{1}\" type=\"number\" step=\"1\">",
                    esc(&id),
                    esc(name)
                ),
                FieldType::String => format!(
                    "<input id=\"{0}\" name=\"field.{1}\" type=\"text\">",
                    esc(&id),
                    esc(name)
                ),
            }
        };
        let _ = write!(fields, "<div class=\"field\">{label}{input}</div>");
    }
    format!(
        "<form method=\"post\" action=\"/escalations/{}/decide\" data-key=\"d\">{}<input type=\"hidden\" name=\"back\" value=\"{}\">\
         <div class=\"actions\"><label>Label <select name=\"label\">{options}</select></label></div>{}{fields}\
         <div class=\"actions\"><button type=\"submit\" class=\"primary\">Decide</button></div></form>",
        e.id,
        csrf_field(&s.csrf),
        esc(back),
        if guess.is_some() {
            "<p class=\"meta\">The model's label is preselected; the percentages are its confidences.</p>"
        } else {
            ""
        },
    )
}

/// The typed field inputs of a decide form (`field.<name>`) as a JSON object: empty inputs
/// are left out; numbers, integers and booleans are converted, with an error naming the field.
pub fn typed_fields<S: Store>(
    ui: &UiState<S>,
    charter: &str,
    form: &std::collections::HashMap<String, String>,
) -> Result<serde_json::Map<String, Value>, UiError> {
    let specs = ui
        .app
        .runtime
        .charters
        .get(charter)
        .and_then(|c| c.charter.decide.as_ref())
        .map(|d| d.extract.clone())
        .unwrap_or_default();
    let mut out = serde_json::Map::new();
    for (key, raw) in form {
        let Some(name) = key.strip_prefix("field.") else {
            continue;
        };
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let kind = specs.get(name).map(|s| s.kind).unwrap_or(FieldType::String);
        let bad =
            |what: &str| UiError::BadRequest(format!("field `{name}`: `{raw}` is not {what}"));
        let v = match kind {
            FieldType::String => Value::String(raw.to_string()),
            FieldType::Integer => json!(raw.parse::<i64>().map_err(|_| bad("an integer"))?),
            FieldType::Number => {
                let n = raw.parse::<f64>().map_err(|_| bad("a number"))?;
                serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .ok_or_else(|| bad("a finite number"))?
            }
            FieldType::Boolean => match raw {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(bad("true or false")),
            },
        };
        out.insert(name.to_string(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_models_guess_is_its_most_confident_label() {
        let d = json!({"stages": [
            {"stage": "embedded", "label": "billing", "confidence": 0.41},
            {"stage": "llm", "label": "refund", "confidence": 0.62},
            {"stage": "rules", "label": null}
        ]});
        assert_eq!(model_guess(&d), Some(("refund".into(), 0.62)));
        let all = label_confidences(&d);
        assert_eq!(all[0].0, "refund");
        assert_eq!(all[1].0, "billing");
        assert_eq!(model_guess(&json!({})), None);
    }

    #[test]
    fn the_diff_shows_removed_and_added_lines() {
        let d = diff_lines("{\n  \"a\": 1\n}", "{\n  \"a\": 2\n}");
        assert!(d.contains("<del>-   &quot;a&quot;: 1</del>"), "{d}");
        assert!(d.contains("<ins>+   &quot;a&quot;: 2</ins>"), "{d}");
        assert!(diff_lines("x", "x").contains("no change"));
    }
}
