//! Rollout per route on PostgreSQL: route modes, review samples and draft rewrites (same
//! behaviour as SQLite).

use charter_core::model::UnixMillis;
use charter_core::rollout::Rewrite;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::PgStore;
use super::rows::{db, get};
use crate::rollout::{
    DraftRewrite, NewSample, ReviewCounts, ReviewStats, RewriteStats, RewriteTotals, RolloutStore,
    RouteModeChange, RouteState, SampleFilter, SampleRecord, SampleReview,
};
use crate::{Result, StoreError};

const STATE_COLS: &str = "charter, route, mode, mode_base, mode_by, mode_at, reason, suggested_at";

fn state_row(r: &Row) -> Result<RouteState> {
    Ok(RouteState {
        charter: get(r, 0)?,
        route: get(r, 1)?,
        mode: get(r, 2)?,
        base: get(r, 3)?,
        by: get(r, 4)?,
        at: get(r, 5)?,
        reason: get(r, 6)?,
        suggested_at: get(r, 7)?,
    })
}

const SAMPLE_COLS: &str = "id, run_id, event_id, charter, route, mode, label, actions, created_at, \
     reviewed_by, reviewed_at, decision_right, right_label, action_verdicts, note";

fn json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("bad {what} JSON: {e}")))
}

fn to_text<T: serde::Serialize>(what: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Database(format!("serialising {what}: {e}")))
}

fn sample_row(r: &Row) -> Result<SampleRecord> {
    let actions: String = get(r, 7)?;
    let reviewed_by: Option<String> = get(r, 9)?;
    let reviewed_at: Option<i64> = get(r, 10)?;
    let review = match (reviewed_by, reviewed_at) {
        (Some(by), Some(at)) => {
            let right: Option<bool> = get(r, 11)?;
            let verdicts: Option<String> = get(r, 13)?;
            Some(SampleReview {
                by,
                at,
                decision_right: right.unwrap_or(false),
                right_label: get(r, 12)?,
                actions: match verdicts {
                    Some(v) => json("action verdicts", &v)?,
                    None => Default::default(),
                },
                note: get(r, 14)?,
            })
        }
        _ => None,
    };
    Ok(SampleRecord {
        sample: NewSample {
            id: get(r, 0)?,
            run_id: get(r, 1)?,
            event_id: get(r, 2)?,
            charter: get(r, 3)?,
            route: get(r, 4)?,
            mode: get(r, 5)?,
            label: get(r, 6)?,
            actions: json("sample actions", &actions)?,
            created_at: get(r, 8)?,
        },
        review,
    })
}

const REWRITE_COLS: &str = "approval_id, run_id, event_id, charter, route, action, draft, approved, \
     chars, draft_chars, words, draft_words, edited_by, at";

fn count(r: &Row, i: usize) -> Result<u64> {
    let v: Option<i64> = get(r, i)?;
    Ok(u64::try_from(v.unwrap_or(0)).unwrap_or(0))
}

fn rewrite_row(r: &Row) -> Result<DraftRewrite> {
    Ok(DraftRewrite {
        approval_id: get(r, 0)?,
        run_id: get(r, 1)?,
        event_id: get(r, 2)?,
        charter: get(r, 3)?,
        route: get(r, 4)?,
        action: get(r, 5)?,
        draft: get(r, 6)?,
        approved: get(r, 7)?,
        distance: Rewrite {
            chars: count(r, 8)?,
            draft_chars: count(r, 9)?,
            words: count(r, 10)?,
            draft_words: count(r, 11)?,
        },
        edited_by: get(r, 12)?,
        at: get(r, 13)?,
    })
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn limit_of(limit: usize) -> i64 {
    let limit = if limit == 0 { 100 } else { limit };
    i64::try_from(limit).unwrap_or(i64::MAX)
}

async fn sample_by_id<C: GenericClient>(c: &C, id: Uuid) -> Result<Option<SampleRecord>> {
    let row = c
        .query_opt(
            &format!("SELECT {SAMPLE_COLS} FROM review_samples WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(db("reading a sample"))?;
    row.as_ref().map(sample_row).transpose()
}

impl RolloutStore for PgStore {
    async fn set_route_mode(&self, c: RouteModeChange) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO route_state (charter, route, mode, mode_base, mode_by, mode_at, reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (charter, route) DO UPDATE SET mode = EXCLUDED.mode,
                     mode_base = EXCLUDED.mode_base, mode_by = EXCLUDED.mode_by,
                     mode_at = EXCLUDED.mode_at, reason = EXCLUDED.reason, suggested_at = NULL",
                &[&c.charter, &c.route, &c.mode, &c.base, &c.by, &c.at, &c.reason],
            )
            .await
            .map_err(db("setting a route's mode"))?;
        Ok(())
    }

    async fn clear_route_mode(&self, charter: &str, route: &str, now: UnixMillis) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE route_state SET mode = NULL, mode_base = NULL, mode_by = NULL,
                     mode_at = $3, reason = NULL, suggested_at = NULL
                 WHERE charter = $1 AND route = $2 AND mode IS NOT NULL",
                &[&charter, &route, &now],
            )
            .await
            .map_err(db("clearing a route's mode"))?;
        Ok(n == 1)
    }

    async fn route_states(&self, charter: Option<&str>) -> Result<Vec<RouteState>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {STATE_COLS} FROM route_state
                     WHERE ($1::TEXT IS NULL OR charter = $1) ORDER BY charter, route"
                ),
                &[&charter],
            )
            .await
            .map_err(db("reading route states"))?;
        rows.iter().map(state_row).collect()
    }

    async fn mark_suggested(&self, charter: &str, route: &str, at: UnixMillis) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO route_state (charter, route, suggested_at) VALUES ($1, $2, $3)
                 ON CONFLICT (charter, route) DO UPDATE SET suggested_at = EXCLUDED.suggested_at
                 WHERE route_state.suggested_at IS NULL",
                &[&charter, &route, &at],
            )
            .await
            .map_err(db("recording a promotion suggestion"))?;
        Ok(n == 1)
    }

    async fn add_sample(&self, s: NewSample) -> Result<bool> {
        let actions = to_text("sample actions", &s.actions)?;
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO review_samples (id, run_id, event_id, charter, route, mode, label,
                     actions, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (run_id) DO NOTHING",
                &[
                    &s.id,
                    &s.run_id,
                    &s.event_id,
                    &s.charter,
                    &s.route,
                    &s.mode,
                    &s.label,
                    &actions,
                    &s.created_at,
                ],
            )
            .await
            .map_err(db("queueing a review sample"))?;
        Ok(n == 1)
    }

    async fn sample(&self, id: Uuid) -> Result<Option<SampleRecord>> {
        let client = self.client().await?;
        sample_by_id(&client, id).await
    }

    async fn samples(&self, f: SampleFilter) -> Result<Vec<SampleRecord>> {
        let order = if f.reviewed == Some(false) {
            "created_at ASC, id ASC"
        } else {
            "created_at DESC, id DESC"
        };
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {SAMPLE_COLS} FROM review_samples
                     WHERE ($1::TEXT IS NULL OR charter = $1) AND ($2::TEXT IS NULL OR route = $2)
                       AND ($3::BOOLEAN IS NULL OR (reviewed_at IS NOT NULL) = $3)
                     ORDER BY {order} LIMIT $4"
                ),
                &[&f.charter, &f.route, &f.reviewed, &limit_of(f.limit)],
            )
            .await
            .map_err(db("reading samples"))?;
        rows.iter().map(sample_row).collect()
    }

    async fn review_sample(&self, id: Uuid, r: SampleReview) -> Result<Option<SampleRecord>> {
        let verdicts = to_text("action verdicts", &r.actions)?;
        let agreed = r.agreed();
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE review_samples SET reviewed_by = $2, reviewed_at = $3,
                     decision_right = $4, right_label = $5, action_verdicts = $6,
                     agreed = $7, note = $8
                 WHERE id = $1 AND reviewed_at IS NULL",
                &[
                    &id,
                    &r.by,
                    &r.at,
                    &r.decision_right,
                    &r.right_label,
                    &verdicts,
                    &agreed,
                    &r.note,
                ],
            )
            .await
            .map_err(db("recording a sample review"))?;
        if n == 0 {
            return Ok(None);
        }
        sample_by_id(&client, id).await
    }

    async fn review_stats(&self, charter: &str, since: UnixMillis) -> Result<ReviewStats> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT route, mode,
                    COUNT(*) FILTER (WHERE reviewed_at >= $2),
                    COUNT(*) FILTER (WHERE reviewed_at >= $2 AND agreed),
                    COUNT(*) FILTER (WHERE reviewed_at >= $2 AND NOT decision_right
                                       AND right_label IS NOT NULL),
                    COUNT(*) FILTER (WHERE reviewed_at IS NULL)
                 FROM review_samples WHERE charter = $1 GROUP BY route, mode",
                &[&charter, &since],
            )
            .await
            .map_err(db("counting reviews"))?;
        let mut out = ReviewStats::new();
        for r in &rows {
            out.insert(
                (get(r, 0)?, get(r, 1)?),
                ReviewCounts {
                    reviewed: count(r, 2)?,
                    agreed: count(r, 3)?,
                    corrected: count(r, 4)?,
                    pending: count(r, 5)?,
                },
            );
        }
        Ok(out)
    }

    async fn add_rewrite(&self, w: DraftRewrite) -> Result<bool> {
        let d = w.distance;
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO draft_rewrites (approval_id, run_id, event_id, charter, route,
                     action, draft, approved, chars, draft_chars, words, draft_words,
                     edited_by, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (approval_id) DO NOTHING",
                &[
                    &w.approval_id,
                    &w.run_id,
                    &w.event_id,
                    &w.charter,
                    &w.route,
                    &w.action,
                    &w.draft,
                    &w.approved,
                    &i64_of(d.chars),
                    &i64_of(d.draft_chars),
                    &i64_of(d.words),
                    &i64_of(d.draft_words),
                    &w.edited_by,
                    &w.at,
                ],
            )
            .await
            .map_err(db("recording a draft rewrite"))?;
        Ok(n == 1)
    }

    async fn rewrites(
        &self,
        charter: Option<&str>,
        since: UnixMillis,
        limit: usize,
    ) -> Result<Vec<DraftRewrite>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {REWRITE_COLS} FROM draft_rewrites
                     WHERE ($1::TEXT IS NULL OR charter = $1) AND at >= $2
                     ORDER BY at ASC, approval_id ASC LIMIT $3"
                ),
                &[&charter, &since, &limit_of(limit)],
            )
            .await
            .map_err(db("reading rewrites"))?;
        rows.iter().map(rewrite_row).collect()
    }

    async fn rewrite_stats(
        &self,
        charter: Option<&str>,
        since: UnixMillis,
    ) -> Result<RewriteStats> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT charter, COALESCE(route, '-'), action, COUNT(*),
                    COUNT(*) FILTER (WHERE chars > 0),
                    SUM(chars)::BIGINT, SUM(draft_chars)::BIGINT, SUM(words)::BIGINT,
                    SUM(draft_words)::BIGINT
                 FROM draft_rewrites WHERE ($1::TEXT IS NULL OR charter = $1) AND at >= $2
                 GROUP BY charter, COALESCE(route, '-'), action",
                &[&charter, &since],
            )
            .await
            .map_err(db("summing rewrites"))?;
        let mut out = RewriteStats::new();
        for r in &rows {
            out.insert(
                (get(r, 0)?, get(r, 1)?, get(r, 2)?),
                RewriteTotals {
                    drafts: count(r, 3)?,
                    edited: count(r, 4)?,
                    distance: Rewrite {
                        chars: count(r, 5)?,
                        draft_chars: count(r, 6)?,
                        words: count(r, 7)?,
                        draft_words: count(r, 8)?,
                    },
                },
            );
        }
        Ok(out)
    }
}
