//! The knowledge index on PostgreSQL: a stored English `tsvector` per passage (heading
//! weighted A, text B) under a GIN index, ranked by `ts_rank_cd`.

use tokio_postgres::types::Json;

use super::PgStore;
use super::rows::{db, get};
use crate::knowledge::{
    GapFilter, GapReason, KnowledgeDoc, KnowledgeGap, KnowledgeStore, NewPassage, PassageHit,
    PutOutcome,
};
use crate::{Result, StoreError};

/// The terms as one `tsquery` where any term may match: `plainto_tsquery` stems the words
/// and drops English stop words (and reads no operators), then its `&`s become `|`.
const ANY_TERM: &str = "replace(plainto_tsquery('english', $1)::text, '&', '|')::tsquery";

fn doc_of(r: &tokio_postgres::Row) -> Result<KnowledgeDoc> {
    Ok(KnowledgeDoc {
        source: get(r, 0)?,
        doc_key: get(r, 1)?,
        title: get(r, 2)?,
        url: get(r, 3)?,
        owner: get(r, 4)?,
        updated_at: get(r, 5)?,
        content_hash: get(r, 6)?,
        indexed_at: get(r, 7)?,
    })
}

impl KnowledgeStore for PgStore {
    async fn put_document(
        &self,
        doc: KnowledgeDoc,
        passages: Vec<NewPassage>,
    ) -> Result<PutOutcome> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("starting a document write"))?;
        // The row lock keeps two nodes indexing the same document from interleaving.
        let stored = tx
            .query_opt(
                "SELECT content_hash FROM knowledge_documents
                 WHERE source = $1 AND doc_key = $2 FOR UPDATE",
                &[&doc.source, &doc.doc_key],
            )
            .await
            .map_err(db("reading a knowledge document"))?;
        let stored: Option<String> = stored.map(|r| get(&r, 0)).transpose()?;
        if stored.as_deref() == Some(doc.content_hash.as_str()) {
            tx.execute(
                "UPDATE knowledge_documents SET owner = $3, updated_at = $4, indexed_at = $5
                 WHERE source = $1 AND doc_key = $2",
                &[
                    &doc.source,
                    &doc.doc_key,
                    &doc.owner,
                    &doc.updated_at,
                    &doc.indexed_at,
                ],
            )
            .await
            .map_err(db("touching a knowledge document"))?;
            tx.commit().await.map_err(db("committing a document"))?;
            return Ok(PutOutcome::Unchanged);
        }
        tx.execute(
            "DELETE FROM knowledge_passages WHERE source = $1 AND doc_key = $2",
            &[&doc.source, &doc.doc_key],
        )
        .await
        .map_err(db("deleting a document's passages"))?;
        tx.execute(
            "INSERT INTO knowledge_documents (source, doc_key, title, url, owner, updated_at,
                 content_hash, indexed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (source, doc_key) DO UPDATE SET title = excluded.title,
                 url = excluded.url, owner = excluded.owner, updated_at = excluded.updated_at,
                 content_hash = excluded.content_hash, indexed_at = excluded.indexed_at",
            &[
                &doc.source,
                &doc.doc_key,
                &doc.title,
                &doc.url,
                &doc.owner,
                &doc.updated_at,
                &doc.content_hash,
                &doc.indexed_at,
            ],
        )
        .await
        .map_err(db("storing a knowledge document"))?;
        // One statement for all passages: arrays unnested in step.
        let ordinals: Vec<i32> = passages
            .iter()
            .map(|p| i32::try_from(p.ordinal).unwrap_or(i32::MAX))
            .collect();
        let headings: Vec<&str> = passages.iter().map(|p| p.heading.as_str()).collect();
        let bodies: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
        tx.execute(
            "INSERT INTO knowledge_passages (source, doc_key, ordinal, heading, body)
             SELECT $1, $2, o, h, b FROM unnest($3::int[], $4::text[], $5::text[]) AS t(o, h, b)",
            &[&doc.source, &doc.doc_key, &ordinals, &headings, &bodies],
        )
        .await
        .map_err(db("storing passages"))?;
        tx.commit().await.map_err(db("committing a document"))?;
        Ok(PutOutcome::Indexed {
            passages: passages.len(),
        })
    }

    async fn prune_documents(&self, source: &str, keep: Vec<String>) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("starting a prune"))?;
        tx.execute(
            "DELETE FROM knowledge_passages WHERE source = $1 AND NOT (doc_key = ANY($2))",
            &[&source, &keep],
        )
        .await
        .map_err(db("deleting pruned passages"))?;
        let n = tx
            .execute(
                "DELETE FROM knowledge_documents WHERE source = $1 AND NOT (doc_key = ANY($2))",
                &[&source, &keep],
            )
            .await
            .map_err(db("deleting pruned documents"))?;
        tx.commit().await.map_err(db("committing a prune"))?;
        Ok(n)
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
        let text = terms.join(" ");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let sql = format!(
            "SELECT p.source, p.doc_key, d.title, d.url, d.owner, d.updated_at, p.ordinal,
                    p.heading, p.body, ts_rank_cd(p.tsv, query.q)::float8 AS r
             FROM (SELECT {ANY_TERM} AS q) AS query,
                  knowledge_passages p
             JOIN knowledge_documents d ON d.source = p.source AND d.doc_key = p.doc_key
             WHERE p.tsv @@ query.q AND p.source = ANY($2)
             ORDER BY r DESC, p.source, p.doc_key, p.ordinal
             LIMIT $3"
        );
        let rows = client
            .query(&sql, &[&text, &sources, &limit])
            .await
            .map_err(db("searching passages"))?;
        rows.iter()
            .map(|r| {
                let ordinal: i32 = get(r, 6)?;
                Ok(PassageHit {
                    source: get(r, 0)?,
                    doc_key: get(r, 1)?,
                    title: get(r, 2)?,
                    url: get(r, 3)?,
                    owner: get(r, 4)?,
                    updated_at: get(r, 5)?,
                    ordinal: u32::try_from(ordinal)
                        .map_err(|_| StoreError::Corrupt(format!("passage ordinal {ordinal}")))?,
                    heading: get(r, 7)?,
                    text: get(r, 8)?,
                    rank: get(r, 9)?,
                })
            })
            .collect()
    }

    async fn document_passages(&self, source: String, doc_key: String) -> Result<Vec<NewPassage>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT ordinal, heading, body FROM knowledge_passages
                 WHERE source = $1 AND doc_key = $2 ORDER BY ordinal",
                &[&source, &doc_key],
            )
            .await
            .map_err(db("reading a document's passages"))?;
        rows.iter()
            .map(|r| {
                let ordinal: i32 = get(r, 0)?;
                Ok(NewPassage {
                    ordinal: u32::try_from(ordinal)
                        .map_err(|_| StoreError::Corrupt(format!("passage ordinal {ordinal}")))?,
                    heading: get(r, 1)?,
                    text: get(r, 2)?,
                })
            })
            .collect()
    }

    async fn list_documents(&self, source: Option<String>) -> Result<Vec<KnowledgeDoc>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT source, doc_key, title, url, owner, updated_at, content_hash, indexed_at
                 FROM knowledge_documents WHERE $1::text IS NULL OR source = $1
                 ORDER BY source, doc_key",
                &[&source],
            )
            .await
            .map_err(db("listing knowledge documents"))?;
        rows.iter().map(doc_of).collect()
    }

    async fn record_gap(&self, g: KnowledgeGap) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO knowledge_gaps (id, charter, event_id, run_id, context, question,
                     reason, why, sources, found, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &g.id,
                    &g.charter,
                    &g.event_id,
                    &g.run_id,
                    &g.context,
                    &g.question,
                    &g.reason.as_str(),
                    &g.why,
                    &Json(&g.sources),
                    &Json(&g.found),
                    &g.created_at,
                ],
            )
            .await
            .map_err(db("storing a knowledge gap"))?;
        Ok(())
    }

    async fn list_gaps(&self, f: GapFilter) -> Result<Vec<KnowledgeGap>> {
        let limit = if f.limit == 0 { 100 } else { f.limit };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let reason = f.reason.map(GapReason::as_str);
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, charter, event_id, run_id, context, question, reason, why, sources,
                        found, created_at
                 FROM knowledge_gaps
                 WHERE ($1::text IS NULL OR charter = $1) AND ($2::text IS NULL OR reason = $2)
                   AND ($3::bigint IS NULL OR created_at >= $3)
                 ORDER BY created_at DESC, id DESC LIMIT $4",
                &[&f.charter, &reason, &f.since, &limit],
            )
            .await
            .map_err(db("listing knowledge gaps"))?;
        rows.iter()
            .map(|r| {
                let reason: String = get(r, 6)?;
                let Json(sources): Json<Vec<String>> = get(r, 8)?;
                let Json(found): Json<serde_json::Value> = get(r, 9)?;
                Ok(KnowledgeGap {
                    id: get(r, 0)?,
                    charter: get(r, 1)?,
                    event_id: get(r, 2)?,
                    run_id: get(r, 3)?,
                    context: get(r, 4)?,
                    question: get(r, 5)?,
                    reason: GapReason::parse(&reason)
                        .ok_or_else(|| StoreError::Corrupt(format!("gap reason {reason:?}")))?,
                    why: get(r, 7)?,
                    sources,
                    found,
                    created_at: get(r, 10)?,
                })
            })
            .collect()
    }
}
