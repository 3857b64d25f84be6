//! How much reviewers rewrote drafts, the rollout API's route table, corrections from
//! reviews, and the rollout part of a charter's report.

use super::*;

// ---------------------------------------------------------------------------------------
// Rewrites
// ---------------------------------------------------------------------------------------

/// After an approval: when the action carried a draft, measure and keep how much the
/// reviewer rewrote it. Never fails the approval (errors are logged).
pub async fn approved<S: Store>(state: &AppState<S>, a: &ApprovalRecord, by: &str) {
    if let Err(e) = record_rewrite(state, a, by).await {
        tracing::error!(approval = %a.id, error = %e, "could not record the draft's rewrite");
    }
}

async fn record_rewrite<S: Store>(
    state: &AppState<S>,
    a: &ApprovalRecord,
    by: &str,
) -> Result<(), StoreError> {
    let Some(cr) = state.runtime.charters.get(&a.charter) else {
        return Ok(());
    };
    if cr
        .charter
        .actions
        .get(&a.action)
        .is_none_or(|x| x.draft.is_none())
    {
        return Ok(());
    }
    let extras = state.store.run_extras(a.run_id).await?;
    let draft = match extras
        .iter()
        .find(|x| x.kind == EXTRA_DRAFT && x.name == a.action)
    {
        Some(x) => x.body["text"].as_str().unwrap_or_default().to_string(),
        None => state
            .store
            .latest_run_extra(a.event_id, EXTRA_DRAFT, &a.action)
            .await?
            .and_then(|x| x.body["text"].as_str().map(str::to_string))
            .unwrap_or_default(),
    };
    let pairs = calc::draft_texts(&a.params, a.effective_params(), &draft);
    let (before, after) = if pairs.is_empty() {
        (draft.clone(), draft.clone())
    } else {
        let before: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
        let after: Vec<&str> = pairs.iter().map(|p| p.2.as_str()).collect();
        (before.join("\n"), after.join("\n"))
    };
    let route = state
        .store
        .runs_for_event(a.event_id)
        .await?
        .into_iter()
        .find(|r| r.id == a.run_id)
        .and_then(|r| r.route)
        .and_then(|i| cr.charter.routes.get(i))
        .map(|r| r.name.clone());
    // Quadratic in the texts' lengths: off the async workers for long drafts.
    let (before, after, distance) = tokio::task::spawn_blocking(move || {
        let d = Rewrite::measure(&before, &after);
        (before, after, d)
    })
    .await
    .map_err(|e| StoreError::Database(format!("measuring a rewrite: {e}")))?;
    let w = DraftRewrite {
        approval_id: a.id,
        run_id: a.run_id,
        event_id: a.event_id,
        charter: a.charter.clone(),
        route: route.clone(),
        action: a.action.clone(),
        draft: before,
        approved: after,
        distance,
        edited_by: by.to_string(),
        at: now_millis(),
    };
    if state.store.add_rewrite(w).await? {
        state.metrics.draft_rewrite(
            &a.charter,
            route.as_deref().unwrap_or("-"),
            &a.action,
            &distance,
        );
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct RewritesQuery {
    pub charter: Option<String>,
    /// Unix milliseconds; default 0 (everything kept).
    pub since: Option<UnixMillis>,
    /// Pairs returned (default 100, at most 10 000); totals cover every rewrite.
    pub limit: Option<usize>,
}

/// Totals as the API shows them: one row per (charter, route, action) with the ratios.
pub fn totals_json(stats: &charter_store::rollout::RewriteStats) -> Vec<Value> {
    stats
        .iter()
        .map(|((c, r, a), t)| {
            json!({
                "charter": c, "route": r, "action": a,
                "drafts": t.drafts, "edited": t.edited,
                "chars_changed": t.distance.chars, "draft_chars": t.distance.draft_chars,
                "words_changed": t.distance.words, "draft_words": t.distance.draft_words,
                "char_ratio": t.distance.char_ratio(),
                "word_ratio": t.distance.word_ratio(),
            })
        })
        .collect()
}

/// Label corrections from reviewed samples, as `GET /api/v1/corrections` lists them.
pub async fn sample_corrections<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    limit: usize,
) -> Result<Vec<Value>, StoreError> {
    let reviewed = state
        .store
        .samples(SampleFilter {
            charter: Some(charter.name.clone()),
            route: None,
            reviewed: Some(true),
            limit,
        })
        .await?;
    let mut out = Vec::new();
    for s in reviewed {
        let Some(r) = &s.review else { continue };
        let Some(label) = r.right_label.as_ref().filter(|_| !r.decision_right) else {
            continue;
        };
        let Some(ev) = state.store.get_event(s.sample.event_id).await? else {
            continue;
        };
        let ctx = charter_core::routing::eval_context(&ev.event, None);
        let text = crate::text::decision_text(charter, &ev.event, &ctx);
        out.push(json!({
            "event_id": s.sample.event_id,
            "escalation_id": null,
            "sample_id": s.sample.id,
            "text": text,
            "label": label,
            "fields": {},
            "decided_by": r.by,
            "decided_at": r.at,
        }));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

/// The rollout part of a charter's report: every route's mode and agreement, and the
/// rewrite totals of drafts approved since `since`.
pub async fn report_json<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    since: UnixMillis,
) -> Result<Value, ApiError> {
    let views = route_views(state, charter).await?;
    let routes: Vec<Value> = views
        .iter()
        .zip(&charter.routes)
        .map(|(v, r)| v.json(r))
        .collect();
    let stats = state
        .store
        .rewrite_stats(Some(&charter.name), since)
        .await?;
    let mut all = Rewrite::default();
    let (mut drafts, mut edited) = (0, 0);
    for t in stats.values() {
        drafts += t.drafts;
        edited += t.edited;
        all.chars += t.distance.chars;
        all.draft_chars += t.distance.draft_chars;
        all.words += t.distance.words;
        all.draft_words += t.distance.draft_words;
    }
    Ok(json!({
        "routes": routes,
        "rewrites": totals_json(&stats),
        "rewrite_total": {
            "drafts": drafts, "edited": edited,
            "chars_changed": all.chars, "draft_chars": all.draft_chars,
            "words_changed": all.words, "draft_words": all.draft_words,
            "char_ratio": all.char_ratio(), "word_ratio": all.word_ratio(),
        },
    }))
}

/// The rollout part of `charter report` as text (from [`report_json`]'s value).
pub fn render_text(v: &Value) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let Some(routes) = v["routes"].as_array() else {
        return o;
    };
    let _ = writeln!(o);
    let _ = writeln!(o, "routes");
    for r in routes {
        let _ = writeln!(
            o,
            "  {:<20} {:<8} sample {:>5.1}%  pending {:<4} {}{}",
            r["name"].as_str().unwrap_or("?"),
            r["mode"].as_str().unwrap_or("?"),
            100.0 * r["sample"].as_f64().unwrap_or(0.0),
            r["pending_reviews"].as_u64().unwrap_or(0),
            r["agreement_text"].as_str().unwrap_or(""),
            if r["suggest_promotion"].as_bool() == Some(true) {
                "  (meets promote_when: suggest promotion to live)"
            } else {
                ""
            }
        );
    }
    let t = &v["rewrite_total"];
    let _ = writeln!(o);
    let _ = writeln!(o, "draft rewrites");
    if t["drafts"].as_u64().unwrap_or(0) == 0 {
        let _ = writeln!(o, "  no approved drafts");
        return o;
    }
    let _ = writeln!(
        o,
        "  all                    {} approved, {} edited; {:.1}% of characters, {:.1}% of words rewritten",
        t["drafts"].as_u64().unwrap_or(0),
        t["edited"].as_u64().unwrap_or(0),
        100.0 * t["char_ratio"].as_f64().unwrap_or(0.0),
        100.0 * t["word_ratio"].as_f64().unwrap_or(0.0),
    );
    for r in v["rewrites"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "  {:<22} {} approved, {} edited; {:.1}% chars, {:.1}% words",
            format!(
                "{}/{}",
                r["route"].as_str().unwrap_or("-"),
                r["action"].as_str().unwrap_or("?")
            ),
            r["drafts"].as_u64().unwrap_or(0),
            r["edited"].as_u64().unwrap_or(0),
            100.0 * r["char_ratio"].as_f64().unwrap_or(0.0),
            100.0 * r["word_ratio"].as_f64().unwrap_or(0.0),
        );
    }
    o
}
