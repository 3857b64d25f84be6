//! Rollout per route on SQLite: route modes, review samples and draft rewrites.

use charter_core::model::UnixMillis;
use charter_core::rollout::Rewrite;
use rusqlite::types::Value;
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::rows::{db, get_col, parse_json, parse_uuid, to_json};
use super::{SqliteStore, collect, limit_of};
use crate::Result;
use crate::rollout::{
    DraftRewrite, NewSample, ReviewStats, RewriteStats, RolloutStore, RouteModeChange, RouteState,
    SampleFilter, SampleRecord, SampleReview,
};

const STATE_COLS: &str = "charter, route, mode, mode_base, mode_by, mode_at, reason, suggested_at";

fn state_row(r: &rusqlite::Row<'_>) -> Result<RouteState> {
    Ok(RouteState {
        charter: get_col(r, 0)?,
        route: get_col(r, 1)?,
        mode: get_col(r, 2)?,
        base: get_col(r, 3)?,
        by: get_col(r, 4)?,
        at: get_col(r, 5)?,
        reason: get_col(r, 6)?,
        suggested_at: get_col(r, 7)?,
    })
}

const SAMPLE_COLS: &str = "id, run_id, event_id, charter, route, mode, label, actions, created_at, \
     reviewed_by, reviewed_at, decision_right, right_label, action_verdicts, note";

fn sample_row(r: &rusqlite::Row<'_>) -> Result<SampleRecord> {
    let id: String = get_col(r, 0)?;
    let run: String = get_col(r, 1)?;
    let event: String = get_col(r, 2)?;
    let actions: String = get_col(r, 7)?;
    let reviewed_by: Option<String> = get_col(r, 9)?;
    let reviewed_at: Option<i64> = get_col(r, 10)?;
    let review = match (reviewed_by, reviewed_at) {
        (Some(by), Some(at)) => {
            let right: Option<bool> = get_col(r, 11)?;
            let verdicts: Option<String> = get_col(r, 13)?;
            Some(SampleReview {
                by,
                at,
                decision_right: right.unwrap_or(false),
                right_label: get_col(r, 12)?,
                actions: match verdicts {
                    Some(v) => parse_json("action verdicts", &v)?,
                    None => Default::default(),
                },
                note: get_col(r, 14)?,
            })
        }
        _ => None,
    };
    Ok(SampleRecord {
        sample: NewSample {
            id: parse_uuid(&id)?,
            run_id: parse_uuid(&run)?,
            event_id: parse_uuid(&event)?,
            charter: get_col(r, 3)?,
            route: get_col(r, 4)?,
            mode: get_col(r, 5)?,
            label: get_col(r, 6)?,
            actions: parse_json("sample actions", &actions)?,
            created_at: get_col(r, 8)?,
        },
        review,
    })
}

const REWRITE_COLS: &str = "approval_id, run_id, event_id, charter, route, action, draft, approved, \
     chars, draft_chars, words, draft_words, edited_by, at";

fn count(r: &rusqlite::Row<'_>, i: usize) -> Result<u64> {
    let v: i64 = get_col(r, i)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

fn rewrite_row(r: &rusqlite::Row<'_>) -> Result<DraftRewrite> {
    let a: String = get_col(r, 0)?;
    let run: String = get_col(r, 1)?;
    let ev: String = get_col(r, 2)?;
    Ok(DraftRewrite {
        approval_id: parse_uuid(&a)?,
        run_id: parse_uuid(&run)?,
        event_id: parse_uuid(&ev)?,
        charter: get_col(r, 3)?,
        route: get_col(r, 4)?,
        action: get_col(r, 5)?,
        draft: get_col(r, 6)?,
        approved: get_col(r, 7)?,
        distance: Rewrite {
            chars: count(r, 8)?,
            draft_chars: count(r, 9)?,
            words: count(r, 10)?,
            draft_words: count(r, 11)?,
        },
        edited_by: get_col(r, 12)?,
        at: get_col(r, 13)?,
    })
}

fn read_states(conn: &Connection, charter: Option<&str>) -> Result<Vec<RouteState>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {STATE_COLS} FROM route_state WHERE (?1 IS NULL OR charter = ?1)
             ORDER BY charter, route"
        ))
        .map_err(db("preparing route states"))?;
    let rows = stmt
        .query(params![charter])
        .map_err(db("reading route states"))?;
    collect(rows, state_row)
}

fn read_samples(conn: &Connection, sql: &str, args: Vec<Value>) -> Result<Vec<SampleRecord>> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(db("preparing a sample query"))?;
    let rows = stmt
        .query(rusqlite::params_from_iter(args))
        .map_err(db("reading samples"))?;
    collect(rows, sample_row)
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl RolloutStore for SqliteStore {
    async fn set_route_mode(&self, c: RouteModeChange) -> Result<()> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO route_state (charter, route, mode, mode_base, mode_by, mode_at, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (charter, route) DO UPDATE SET mode = excluded.mode,
                     mode_base = excluded.mode_base, mode_by = excluded.mode_by,
                     mode_at = excluded.mode_at, reason = excluded.reason, suggested_at = NULL",
            )
            .and_then(|mut s| {
                s.execute(params![c.charter, c.route, c.mode, c.base, c.by, c.at, c.reason])
            })
            .map_err(db("setting a route's mode"))?;
            Ok(())
        })
        .await
    }

    async fn clear_route_mode(&self, charter: &str, route: &str, now: UnixMillis) -> Result<bool> {
        let (charter, route) = (charter.to_string(), route.to_string());
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE route_state SET mode = NULL, mode_base = NULL, mode_by = NULL,
                         mode_at = ?3, reason = NULL, suggested_at = NULL
                     WHERE charter = ?1 AND route = ?2 AND mode IS NOT NULL",
                )
                .and_then(|mut s| s.execute(params![charter, route, now]))
                .map_err(db("clearing a route's mode"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn route_states(&self, charter: Option<&str>) -> Result<Vec<RouteState>> {
        let charter = charter.map(str::to_string);
        self.read(move |conn| read_states(conn, charter.as_deref()))
            .await
    }

    async fn mark_suggested(&self, charter: &str, route: &str, at: UnixMillis) -> Result<bool> {
        let (charter, route) = (charter.to_string(), route.to_string());
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO route_state (charter, route, suggested_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (charter, route) DO UPDATE SET suggested_at = excluded.suggested_at
                     WHERE route_state.suggested_at IS NULL",
                )
                .and_then(|mut s| s.execute(params![charter, route, at]))
                .map_err(db("recording a promotion suggestion"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn add_sample(&self, s: NewSample) -> Result<bool> {
        let actions = to_json("sample actions", &s.actions)?;
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO review_samples (id, run_id, event_id, charter, route, mode, label,
                         actions, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (run_id) DO NOTHING",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        s.id.to_string(),
                        s.run_id.to_string(),
                        s.event_id.to_string(),
                        s.charter,
                        s.route,
                        s.mode,
                        s.label,
                        actions,
                        s.created_at
                    ])
                })
                .map_err(db("queueing a review sample"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn sample(&self, id: Uuid) -> Result<Option<SampleRecord>> {
        self.read(move |conn| {
            let sql = format!("SELECT {SAMPLE_COLS} FROM review_samples WHERE id = ?1");
            Ok(read_samples(conn, &sql, vec![Value::Text(id.to_string())])?
                .into_iter()
                .next())
        })
        .await
    }

    async fn samples(&self, f: SampleFilter) -> Result<Vec<SampleRecord>> {
        self.read(move |conn| {
            let order = if f.reviewed == Some(false) {
                "created_at ASC, id ASC"
            } else {
                "created_at DESC, id DESC"
            };
            let reviewed = f.reviewed.map(i64::from);
            let sql = format!(
                "SELECT {SAMPLE_COLS} FROM review_samples
                 WHERE (?1 IS NULL OR charter = ?1) AND (?2 IS NULL OR route = ?2)
                   AND (?3 IS NULL OR (reviewed_at IS NOT NULL) = ?3)
                 ORDER BY {order} LIMIT ?4"
            );
            let opt = |v: Option<String>| v.map_or(Value::Null, Value::Text);
            let args = vec![
                opt(f.charter),
                opt(f.route),
                reviewed.map_or(Value::Null, Value::Integer),
                Value::Integer(limit_of(f.limit)),
            ];
            read_samples(conn, &sql, args)
        })
        .await
    }

    async fn review_sample(&self, id: Uuid, r: SampleReview) -> Result<Option<SampleRecord>> {
        let verdicts = to_json("action verdicts", &r.actions)?;
        self.write(move |conn| {
            let agreed = r.agreed();
            let n = conn
                .prepare_cached(
                    "UPDATE review_samples SET reviewed_by = ?2, reviewed_at = ?3,
                         decision_right = ?4, right_label = ?5, action_verdicts = ?6,
                         agreed = ?7, note = ?8
                     WHERE id = ?1 AND reviewed_at IS NULL",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        id.to_string(),
                        r.by,
                        r.at,
                        r.decision_right,
                        r.right_label,
                        verdicts,
                        agreed,
                        r.note
                    ])
                })
                .map_err(db("recording a sample review"))?;
            if n == 0 {
                return Ok(None);
            }
            let sql = format!("SELECT {SAMPLE_COLS} FROM review_samples WHERE id = ?1");
            Ok(read_samples(conn, &sql, vec![Value::Text(id.to_string())])?
                .into_iter()
                .next())
        })
        .await
    }

    async fn review_stats(&self, charter: &str, since: UnixMillis) -> Result<ReviewStats> {
        let charter = charter.to_string();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT route, mode,
                        SUM(CASE WHEN reviewed_at >= ?2 THEN 1 ELSE 0 END),
                        SUM(CASE WHEN reviewed_at >= ?2 AND agreed = 1 THEN 1 ELSE 0 END),
                        SUM(CASE WHEN reviewed_at >= ?2 AND decision_right = 0
                                  AND right_label IS NOT NULL THEN 1 ELSE 0 END),
                        SUM(CASE WHEN reviewed_at IS NULL THEN 1 ELSE 0 END)
                     FROM review_samples WHERE charter = ?1 GROUP BY route, mode",
                )
                .map_err(db("preparing review counts"))?;
            let rows = stmt
                .query(params![charter, since])
                .map_err(db("counting reviews"))?;
            let list = collect(rows, |r| {
                Ok((
                    (get_col::<String>(r, 0)?, get_col::<String>(r, 1)?),
                    crate::rollout::ReviewCounts {
                        reviewed: count(r, 2)?,
                        agreed: count(r, 3)?,
                        corrected: count(r, 4)?,
                        pending: count(r, 5)?,
                    },
                ))
            })?;
            Ok(list.into_iter().collect())
        })
        .await
    }

    async fn add_rewrite(&self, w: DraftRewrite) -> Result<bool> {
        self.write(move |conn| {
            let d = w.distance;
            let n = conn
                .prepare_cached(
                    "INSERT INTO draft_rewrites (approval_id, run_id, event_id, charter, route,
                         action, draft, approved, chars, draft_chars, words, draft_words,
                         edited_by, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                     ON CONFLICT (approval_id) DO NOTHING",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        w.approval_id.to_string(),
                        w.run_id.to_string(),
                        w.event_id.to_string(),
                        w.charter,
                        w.route,
                        w.action,
                        w.draft,
                        w.approved,
                        i64_of(d.chars),
                        i64_of(d.draft_chars),
                        i64_of(d.words),
                        i64_of(d.draft_words),
                        w.edited_by,
                        w.at
                    ])
                })
                .map_err(db("recording a draft rewrite"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn rewrites(
        &self,
        charter: Option<&str>,
        since: UnixMillis,
        limit: usize,
    ) -> Result<Vec<DraftRewrite>> {
        let charter = charter.map(str::to_string);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {REWRITE_COLS} FROM draft_rewrites
                     WHERE (?1 IS NULL OR charter = ?1) AND at >= ?2
                     ORDER BY at ASC, approval_id ASC LIMIT ?3"
                ))
                .map_err(db("preparing rewrites"))?;
            let rows = stmt
                .query(params![charter, since, limit_of(limit)])
                .map_err(db("reading rewrites"))?;
            collect(rows, rewrite_row)
        })
        .await
    }

    async fn rewrite_stats(
        &self,
        charter: Option<&str>,
        since: UnixMillis,
    ) -> Result<RewriteStats> {
        let charter = charter.map(str::to_string);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT charter, COALESCE(route, '-'), action, COUNT(*),
                        SUM(CASE WHEN chars > 0 THEN 1 ELSE 0 END),
                        SUM(chars), SUM(draft_chars), SUM(words), SUM(draft_words)
                     FROM draft_rewrites WHERE (?1 IS NULL OR charter = ?1) AND at >= ?2
                     GROUP BY charter, COALESCE(route, '-'), action",
                )
                .map_err(db("preparing rewrite totals"))?;
            let rows = stmt
                .query(params![charter, since])
                .map_err(db("summing rewrites"))?;
            let list = collect(rows, |r| {
                Ok((
                    (
                        get_col::<String>(r, 0)?,
                        get_col::<String>(r, 1)?,
                        get_col::<String>(r, 2)?,
                    ),
                    crate::rollout::RewriteTotals {
                        drafts: count(r, 3)?,
                        edited: count(r, 4)?,
                        distance: Rewrite {
                            chars: count(r, 5)?,
                            draft_chars: count(r, 6)?,
                            words: count(r, 7)?,
                            draft_words: count(r, 8)?,
                        },
                    },
                ))
            })?;
            Ok(list.into_iter().collect())
        })
        .await
    }
}
