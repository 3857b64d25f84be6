//! Conformance check of [`crate::KnowledgeStore`], run by the conformance tests
//! against every backend: indexing, re-indexing (old passages gone), unchanged documents,
//! ranking, stemming, source filters, pruning and gaps.

use uuid::Uuid;

use super::CheckResult;
use crate::knowledge::{GapFilter, GapReason, KnowledgeDoc, KnowledgeGap, NewPassage, PutOutcome};
use crate::{KnowledgeStore, Store};

fn ctx<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn doc(source: &str, key: &str, hash: &str, updated_at: i64) -> KnowledgeDoc {
    KnowledgeDoc {
        source: source.to_string(),
        doc_key: key.to_string(),
        title: format!("Title of {key}"),
        url: Some(format!("https://help.example/{key}")),
        owner: "docs@acme.example".into(),
        updated_at,
        content_hash: hash.to_string(),
        indexed_at: 1_700_000_000_000,
    }
}

fn passages(items: &[(&str, &str)]) -> Vec<NewPassage> {
    items
        .iter()
        .enumerate()
        .map(|(i, (h, t))| NewPassage {
            ordinal: i as u32,
            heading: h.to_string(),
            text: t.to_string(),
        })
        .collect()
}

fn terms(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

async fn keys<S: KnowledgeStore>(
    store: &S,
    sources: &[&str],
    words: &[&str],
) -> Result<Vec<(String, u32)>, String> {
    let hits = ctx(
        store
            .search_passages(
                sources.iter().map(|s| s.to_string()).collect(),
                terms(words),
                10,
            )
            .await,
        "search",
    )?;
    Ok(hits.into_iter().map(|h| (h.doc_key, h.ordinal)).collect())
}

/// Index, rank, re-index, prune and record gaps.
pub async fn check_knowledge<S: Store>(store: &S) -> CheckResult {
    let tag = Uuid::now_v7().simple().to_string();
    let src = format!("conf-kb-{}", &tag[tag.len() - 12..]);
    let other = format!("{src}-other");
    let src = src.as_str();
    let refunds = index_documents(store, src, &other).await?;
    search_ranks(store, src, &other).await?;
    reindex(store, src, refunds).await?;
    // Pruning removes documents no longer in the source, and their passages.
    let pruned = ctx(
        store
            .prune_documents(src, vec!["refunds.md".to_string()])
            .await,
        "prune",
    )?;
    ensure!(pruned == 1, "one document pruned, got {pruned}");
    ensure!(
        keys(store, &[src], &["parcel"]).await?.is_empty(),
        "a pruned document's passages are gone"
    );
    ensure!(
        keys(store, &[&other], &["refund"]).await?.len() == 1,
        "pruning one source leaves another alone"
    );

    check_gaps(store, &tag, src).await
}

/// Index two documents of `src` and one of `other`; returns the refund passages.
async fn index_documents<S: Store>(
    store: &S,
    src: &str,
    other: &str,
) -> Result<Vec<NewPassage>, String> {
    let refunds = passages(&[
        (
            "Refunds",
            "A refund for a card payment reaches the card within five working days.",
        ),
        (
            "Refunds > Vouchers",
            "Gift vouchers are never refunded; they stay valid for two years.",
        ),
    ]);
    let put = ctx(
        store
            .put_document(doc(src, "refunds.md", "h1", 1_000), refunds.clone())
            .await,
        "put refunds",
    )?;
    ensure!(
        put == PutOutcome::Indexed { passages: 2 },
        "first put indexes 2 passages, got {put:?}"
    );
    ctx(
        store
            .put_document(
                doc(src, "shipping.md", "h2", 2_000),
                passages(&[(
                    "Shipping",
                    "Orders ship within two days; a refund of shipping costs is possible for late parcels. Delivery takes three to five days in Europe and the parcel is tracked.",
                )]),
            )
            .await,
        "put shipping",
    )?;
    ctx(
        store
            .put_document(
                doc(other, "refunds.md", "h3", 3_000),
                passages(&[("Refunds", "Another source's refund card text.")]),
            )
            .await,
        "put other source",
    )?;

    Ok(refunds)
}

/// Ranking, stemming, the sources filter and what a hit carries.
async fn search_ranks<S: Store>(store: &S, src: &str, other: &str) -> CheckResult {
    // Ranking: the passage about card refunds first; stemming: `refunds` finds `refund`.
    let got = keys(store, &[src], &["refunds", "card"]).await?;
    ensure!(
        got.first() == Some(&("refunds.md".to_string(), 0)),
        "the card refund passage ranks first for `refunds card`, got {got:?}"
    );
    ensure!(
        got.iter().any(|k| k.0 == "shipping.md"),
        "the shipping passage mentioning a refund is found too, got {got:?}"
    );
    // Sources filter: the other source's passage is not returned unless asked for.
    let hits = ctx(
        store
            .search_passages(vec![src.to_string()], terms(&["refund"]), 10)
            .await,
        "search one source",
    )?;
    ensure!(
        hits.iter().all(|h| h.source == src),
        "a search of one source returns only its passages: {hits:?}"
    );
    let first = &hits[0];
    ensure!(
        first.title == "Title of refunds.md"
            && first.url.as_deref() == Some("https://help.example/refunds.md")
            && first.owner == "docs@acme.example"
            && first.updated_at == 1_000
            && first.rank > 0.0,
        "a hit carries its document's title, URL, owner, updated_at and a positive rank: {first:?}"
    );
    let both = keys(store, &[src, other], &["refund"]).await?;
    ensure!(both.len() == 4, "two sources: 4 passages, got {both:?}");
    ensure!(
        keys(store, &[src], &["zeppelin"]).await?.is_empty(),
        "an unknown word finds nothing"
    );
    ensure!(
        keys(store, &[src], &[]).await?.is_empty(),
        "no terms find nothing"
    );

    Ok(())
}

/// The same content hash re-indexes nothing; a changed one replaces the passages.
async fn reindex<S: Store>(store: &S, src: &str, refunds: Vec<NewPassage>) -> CheckResult {
    // The same content hash: nothing re-indexed.
    let again = ctx(
        store
            .put_document(doc(src, "refunds.md", "h1", 1_500), refunds)
            .await,
        "put unchanged",
    )?;
    ensure!(
        again == PutOutcome::Unchanged,
        "same hash: Unchanged, got {again:?}"
    );
    ensure!(
        keys(store, &[src], &["voucher"]).await?.len() == 1,
        "an unchanged document keeps its passages"
    );

    // Re-index after a change: the old passages are gone, the new ones found.
    ctx(
        store
            .put_document(
                doc(src, "refunds.md", "h1b", 4_000),
                passages(&[(
                    "Exchanges",
                    "We exchange unworn items within thirty days of delivery.",
                )]),
            )
            .await,
        "re-index",
    )?;
    let old = keys(store, &[src], &["voucher"]).await?;
    ensure!(
        old.is_empty(),
        "old passages are gone after re-indexing: {old:?}"
    );
    let new = keys(store, &[src], &["exchange"]).await?;
    ensure!(
        new == vec![("refunds.md".to_string(), 0)],
        "the new passage is found: {new:?}"
    );
    let ps = ctx(
        store
            .document_passages(src.to_string(), "refunds.md".to_string())
            .await,
        "document passages",
    )?;
    ensure!(
        ps.len() == 1 && ps[0].heading == "Exchanges" && ps[0].ordinal == 0,
        "a re-indexed document has only its new passages: {ps:?}"
    );
    let docs = ctx(
        store.list_documents(Some(src.to_string())).await,
        "list docs",
    )?;
    ensure!(
        docs.len() == 2 && docs[0].doc_key == "refunds.md" && docs[0].updated_at == 4_000,
        "two documents, the re-indexed one with its new updated_at: {docs:?}"
    );

    Ok(())
}

/// Gaps: newest first, filtered by charter, reason and time.
async fn check_gaps<S: Store>(store: &S, tag: &str, src: &str) -> CheckResult {
    let charter = format!("conf-gap-{}", &tag[tag.len() - 12..]);
    for (i, reason) in [
        GapReason::NothingFound,
        GapReason::Stale,
        GapReason::DraftRefused,
    ]
    .into_iter()
    .enumerate()
    {
        ctx(
            store
                .record_gap(KnowledgeGap {
                    id: Uuid::now_v7(),
                    charter: charter.clone(),
                    event_id: Uuid::now_v7(),
                    run_id: Uuid::now_v7(),
                    context: "kb".into(),
                    question: format!("question {i} ✓"),
                    reason,
                    why: "why".into(),
                    sources: vec![src.to_string()],
                    found: serde_json::json!([{ "doc_key": "refunds.md", "score": 0.5 }]),
                    created_at: 1_700_000_000_000 + i as i64,
                })
                .await,
            "record gap",
        )?;
    }
    let gaps = ctx(
        store
            .list_gaps(GapFilter {
                charter: Some(charter.clone()),
                ..GapFilter::default()
            })
            .await,
        "list gaps",
    )?;
    ensure!(gaps.len() == 3, "three gaps, got {}", gaps.len());
    ensure!(
        gaps[0].question == "question 2 ✓" && gaps[0].reason == GapReason::DraftRefused,
        "newest first: {:?}",
        gaps[0]
    );
    ensure!(
        gaps[2].sources == vec![src.to_string()] && gaps[2].found[0]["doc_key"] == "refunds.md",
        "sources and found read back: {:?}",
        gaps[2]
    );
    let stale = ctx(
        store
            .list_gaps(GapFilter {
                charter: Some(charter.clone()),
                reason: Some(GapReason::Stale),
                since: Some(1_700_000_000_001),
                limit: 10,
            })
            .await,
        "list stale gaps",
    )?;
    ensure!(
        stale.len() == 1 && stale[0].question == "question 1 ✓",
        "filter by reason and time: {stale:?}"
    );
    Ok(())
}
