//! The knowledge index on SQLite: FTS5 over the passages (external content, kept in step by
//! triggers), ranked by bm25 with the heading weighted twice the text.

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::rows::{db, parse_json, parse_uuid, to_json};
use crate::knowledge::{
    GapFilter, GapReason, KnowledgeDoc, KnowledgeGap, KnowledgeStore, NewPassage, PassageHit,
    PutOutcome,
};
use crate::{Result, StoreError};

/// The FTS5 query of plain terms: each quoted (terms are letters and digits only, so a
/// quote cannot appear in one), any may match.
fn fts_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

fn delete_passages(conn: &Connection, source: &str, key: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM knowledge_passages WHERE source = ?1 AND doc_key = ?2")
        .and_then(|mut st| st.execute(params![source, key]))
        .map_err(db("deleting a document's passages"))?;
    Ok(())
}

fn doc_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KnowledgeDoc> {
    Ok(KnowledgeDoc {
        source: r.get(0)?,
        doc_key: r.get(1)?,
        title: r.get(2)?,
        url: r.get(3)?,
        owner: r.get(4)?,
        updated_at: r.get(5)?,
        content_hash: r.get(6)?,
        indexed_at: r.get(7)?,
    })
}

impl KnowledgeStore for SqliteStore {
    async fn put_document(
        &self,
        doc: KnowledgeDoc,
        passages: Vec<NewPassage>,
    ) -> Result<PutOutcome> {
        self.write(move |conn| {
            let stored: Option<String> = conn
                .prepare_cached(
                    "SELECT content_hash FROM knowledge_documents WHERE source = ?1 AND doc_key = ?2",
                )
                .and_then(|mut st| {
                    st.query_row(params![doc.source, doc.doc_key], |r| r.get(0))
                        .optional()
                })
                .map_err(db("reading a knowledge document"))?;
            if stored.as_deref() == Some(doc.content_hash.as_str()) {
                conn.prepare_cached(
                    "UPDATE knowledge_documents SET owner = ?3, updated_at = ?4, indexed_at = ?5
                     WHERE source = ?1 AND doc_key = ?2",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        doc.source,
                        doc.doc_key,
                        doc.owner,
                        doc.updated_at,
                        doc.indexed_at
                    ])
                })
                .map_err(db("touching a knowledge document"))?;
                return Ok(PutOutcome::Unchanged);
            }
            delete_passages(conn, &doc.source, &doc.doc_key)?;
            conn.prepare_cached(
                "INSERT INTO knowledge_documents (source, doc_key, title, url, owner, updated_at,
                     content_hash, indexed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (source, doc_key) DO UPDATE SET title = excluded.title,
                     url = excluded.url, owner = excluded.owner, updated_at = excluded.updated_at,
                     content_hash = excluded.content_hash, indexed_at = excluded.indexed_at",
            )
            .and_then(|mut st| {
                st.execute(params![
                    doc.source,
                    doc.doc_key,
                    doc.title,
                    doc.url,
                    doc.owner,
                    doc.updated_at,
                    doc.content_hash,
                    doc.indexed_at
                ])
            })
            .map_err(db("storing a knowledge document"))?;
            let mut st = conn
                .prepare_cached(
                    "INSERT INTO knowledge_passages (source, doc_key, ordinal, heading, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db("preparing the passage insert"))?;
            for p in &passages {
                st.execute(params![doc.source, doc.doc_key, p.ordinal, p.heading, p.text])
                    .map_err(db("storing a passage"))?;
            }
            Ok(PutOutcome::Indexed {
                passages: passages.len(),
            })
        })
        .await
    }

    async fn prune_documents(&self, source: &str, keep: Vec<String>) -> Result<u64> {
        let source = source.to_string();
        let keep = to_json("kept document keys", &keep)?;
        self.write(move |conn| {
            let gone: Vec<String> = conn
                .prepare_cached(
                    "SELECT doc_key FROM knowledge_documents WHERE source = ?1
                       AND doc_key NOT IN (SELECT value FROM json_each(?2))",
                )
                .and_then(|mut st| {
                    st.query_map(params![source, keep], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()
                })
                .map_err(db("listing documents to prune"))?;
            for key in &gone {
                delete_passages(conn, &source, key)?;
                conn.prepare_cached(
                    "DELETE FROM knowledge_documents WHERE source = ?1 AND doc_key = ?2",
                )
                .and_then(|mut st| st.execute(params![source, key]))
                .map_err(db("deleting a knowledge document"))?;
            }
            Ok(gone.len() as u64)
        })
        .await
    }

    async fn search_passages(
        &self,
        sources: Vec<String>,
        terms: Vec<String>,
        limit: usize,
    ) -> Result<Vec<PassageHit>> {
        if terms.is_empty() || sources.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let query = fts_query(&terms);
        let sources = to_json("sources", &sources)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT p.source, p.doc_key, d.title, d.url, d.owner, d.updated_at, p.ordinal,
                            p.heading, p.body, -bm25(knowledge_fts, 2.0, 1.0) AS fts_rank
                     FROM knowledge_fts
                     JOIN knowledge_passages p ON p.id = knowledge_fts.rowid
                     JOIN knowledge_documents d ON d.source = p.source AND d.doc_key = p.doc_key
                     WHERE knowledge_fts MATCH ?1
                       AND p.source IN (SELECT value FROM json_each(?2))
                     ORDER BY fts_rank DESC, p.source, p.doc_key, p.ordinal
                     LIMIT ?3",
                )
                .map_err(db("preparing a passage search"))?;
            let rows = st
                .query_map(params![query, sources, limit], |r| {
                    Ok(PassageHit {
                        source: r.get(0)?,
                        doc_key: r.get(1)?,
                        title: r.get(2)?,
                        url: r.get(3)?,
                        owner: r.get(4)?,
                        updated_at: r.get(5)?,
                        ordinal: r.get(6)?,
                        heading: r.get(7)?,
                        text: r.get(8)?,
                        rank: r.get(9)?,
                    })
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db("searching passages"))?;
            Ok(rows)
        })
        .await
    }

    async fn document_passages(&self, source: String, doc_key: String) -> Result<Vec<NewPassage>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT ordinal, heading, body FROM knowledge_passages
                 WHERE source = ?1 AND doc_key = ?2 ORDER BY ordinal",
            )
            .and_then(|mut st| {
                st.query_map(params![source, doc_key], |r| {
                    Ok(NewPassage {
                        ordinal: r.get(0)?,
                        heading: r.get(1)?,
                        text: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db("reading a document's passages"))
        })
        .await
    }

    async fn list_documents(&self, source: Option<String>) -> Result<Vec<KnowledgeDoc>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT source, doc_key, title, url, owner, updated_at, content_hash, indexed_at
                 FROM knowledge_documents WHERE ?1 IS NULL OR source = ?1
                 ORDER BY source, doc_key",
            )
            .and_then(|mut st| {
                st.query_map(params![source], doc_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db("listing knowledge documents"))
        })
        .await
    }

    async fn record_gap(&self, g: KnowledgeGap) -> Result<()> {
        let sources = to_json("gap sources", &g.sources)?;
        let found = to_json("gap found", &g.found)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO knowledge_gaps (id, charter, event_id, run_id, context, question,
                     reason, why, sources, found, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    g.id.to_string(),
                    g.charter,
                    g.event_id.to_string(),
                    g.run_id.to_string(),
                    g.context,
                    g.question,
                    g.reason.as_str(),
                    g.why,
                    sources,
                    found,
                    g.created_at
                ])
            })
            .map_err(db("storing a knowledge gap"))?;
            Ok(())
        })
        .await
    }

    async fn list_gaps(&self, f: GapFilter) -> Result<Vec<KnowledgeGap>> {
        let limit = if f.limit == 0 { 100 } else { f.limit };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let reason = f.reason.map(GapReason::as_str);
        self.read(move |conn| {
            type Row = (
                String,
                String,
                String,
                String,
                String,
                String,
                String,
                String,
                String,
                String,
                i64,
            );
            let rows: Vec<Row> = conn
                .prepare_cached(
                    "SELECT id, charter, event_id, run_id, context, question, reason, why, sources,
                            found, created_at
                     FROM knowledge_gaps
                     WHERE (?1 IS NULL OR charter = ?1) AND (?2 IS NULL OR reason = ?2)
                       AND (?3 IS NULL OR created_at >= ?3)
                     ORDER BY created_at DESC, id DESC LIMIT ?4",
                )
                .and_then(|mut st| {
                    st.query_map(params![f.charter, reason, f.since, limit], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                            r.get(8)?,
                            r.get(9)?,
                            r.get(10)?,
                        ))
                    })?
                    .collect()
                })
                .map_err(db("listing knowledge gaps"))?;
            rows.into_iter()
                .map(|r| {
                    Ok(KnowledgeGap {
                        id: parse_uuid(&r.0)?,
                        charter: r.1,
                        event_id: parse_uuid(&r.2)?,
                        run_id: parse_uuid(&r.3)?,
                        context: r.4,
                        question: r.5,
                        reason: GapReason::parse(&r.6)
                            .ok_or_else(|| StoreError::Corrupt(format!("gap reason {:?}", r.6)))?,
                        why: r.7,
                        sources: parse_json("gap sources", &r.8)?,
                        found: parse_json("gap found", &r.9)?,
                        created_at: r.10,
                    })
                })
                .collect()
        })
        .await
    }
}
