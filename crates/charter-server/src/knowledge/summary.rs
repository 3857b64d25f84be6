//! The knowledge part of a report: how many gaps, the questions asked most often without a
//! good answer, and the stale documents by owner (shared by `charter report` and the UI).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use charter_store::{GapReason, KnowledgeGap};

/// A document older than its source's `max_age`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StaleDoc {
    pub source: String,
    pub doc_key: String,
    pub title: String,
    pub url: Option<String>,
    pub owner: String,
    pub updated_at: i64,
}

/// The summary.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct KnowledgeSummary {
    pub gaps: usize,
    /// Gaps by reason (`nothing_found`, `stale`, `draft_refused`).
    pub by_reason: BTreeMap<String, usize>,
    /// The most frequent questions (case and spacing folded), with how often.
    pub top_questions: Vec<(String, usize)>,
    /// Stale documents grouped by owner.
    pub stale_by_owner: BTreeMap<String, Vec<StaleDoc>>,
}

/// Most questions listed.
pub const TOP_QUESTIONS: usize = 10;

/// Summarise gaps and stale documents.
pub fn summarize(gaps: &[KnowledgeGap], stale: &[StaleDoc]) -> KnowledgeSummary {
    let mut by_reason = BTreeMap::new();
    let mut questions: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for g in gaps {
        *by_reason.entry(g.reason.as_str().to_string()).or_insert(0) += 1;
        if g.reason == GapReason::Stale {
            continue;
        }
        let key = g
            .question
            .to_lowercase()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let e = questions.entry(key).or_insert((g.question.clone(), 0));
        e.1 += 1;
    }
    let mut top: Vec<(String, usize)> = questions.into_values().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP_QUESTIONS);
    let mut stale_by_owner: BTreeMap<String, Vec<StaleDoc>> = BTreeMap::new();
    for d in stale {
        stale_by_owner
            .entry(d.owner.clone())
            .or_default()
            .push(d.clone());
    }
    KnowledgeSummary {
        gaps: gaps.len(),
        by_reason,
        top_questions: top,
        stale_by_owner,
    }
}

/// The summary as the text `charter report` prints.
pub fn render_text(s: &KnowledgeSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "knowledge");
    let reasons: Vec<String> = s
        .by_reason
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "  gaps                  {}{}",
        s.gaps,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        }
    );
    if !s.top_questions.is_empty() {
        let _ = writeln!(out, "  top unanswered questions");
        for (q, n) in &s.top_questions {
            let q: String = q.chars().take(90).collect();
            let _ = writeln!(out, "    {n:>4}  {q}");
        }
    }
    if !s.stale_by_owner.is_empty() {
        let _ = writeln!(out, "  stale documents by owner");
        for (owner, docs) in &s.stale_by_owner {
            let _ = writeln!(out, "    {owner} ({})", docs.len());
            for d in docs {
                let day = charter_core::calendar::rfc3339_of_unix(d.updated_at.div_euclid(1000));
                let _ = writeln!(
                    out,
                    "      {} [{}] updated {}",
                    d.title,
                    d.source,
                    day.get(..10).unwrap_or(&day)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn gap(q: &str, reason: GapReason) -> KnowledgeGap {
        KnowledgeGap {
            id: Uuid::now_v7(),
            charter: "c".into(),
            event_id: Uuid::now_v7(),
            run_id: Uuid::now_v7(),
            context: "kb".into(),
            question: q.into(),
            reason,
            why: String::new(),
            sources: vec![],
            found: serde_json::json!([]),
            created_at: 0,
        }
    }

    #[test]
    fn counts_questions_and_groups_stale_documents() {
        let gaps = vec![
            gap("Can I pay in bitcoin?", GapReason::NothingFound),
            gap("can I pay  in Bitcoin?", GapReason::DraftRefused),
            gap("Where is my parcel?", GapReason::NothingFound),
            gap("Old policy", GapReason::Stale),
        ];
        let stale = vec![StaleDoc {
            source: "kb".into(),
            doc_key: "a.md".into(),
            title: "Returns".into(),
            url: None,
            owner: "docs@x".into(),
            updated_at: 0,
        }];
        let s = summarize(&gaps, &stale);
        assert_eq!(s.gaps, 4);
        assert_eq!(s.by_reason["nothing_found"], 2);
        assert_eq!(s.top_questions[0], ("Can I pay in bitcoin?".to_string(), 2));
        assert_eq!(
            s.top_questions.len(),
            2,
            "stale gaps are not unanswered questions"
        );
        assert_eq!(s.stale_by_owner["docs@x"].len(), 1);
        let text = render_text(&s);
        assert!(text.contains("gaps                  4"), "{text}");
        assert!(text.contains("docs@x (1)"), "{text}");
    }
}
