//! `GET /knowledge`: the approved knowledge sources (documents, stale ones by owner) and
//! the gaps (questions they did not answer well) of the charters the session sees; and the
//! cited passages shown beside a draft awaiting approval (on the approval's card).

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Html;
use charter_store::{EXTRA_DRAFT, GapFilter, Store};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::knowledge::summary::{StaleDoc, summarize};
use crate::ui::html::{badge, esc, page, time};
use crate::ui::{UiError, UiState};

/// Most gaps the page lists.
const GAP_LIMIT: usize = 200;

/// A link to a passage's document when it has a URL (http or https only), else its title.
fn doc_link(title: &str, url: Option<&str>) -> String {
    match url.filter(|u| u.starts_with("https://") || u.starts_with("http://")) {
        Some(u) => format!(
            "<a href=\"{}\" rel=\"noopener noreferrer\" target=\"_blank\">{}</a>",
            esc(u),
            esc(title)
        ),
        None => esc(title),
    }
}

/// The passages a run's drafts cite, numbered as in the draft, with their documents
/// (empty when the run's drafts cite nothing).
pub async fn cited_block<S: Store>(ui: &UiState<S>, run_id: Uuid) -> Result<String, UiError> {
    let extras = ui.app.store.run_extras(run_id).await?;
    let mut out = String::new();
    for x in extras.iter().filter(|x| x.kind == EXTRA_DRAFT) {
        let c = &x.body["citations"];
        let Some(sources) = c["sources"].as_array().filter(|s| !s.is_empty()) else {
            continue;
        };
        let _ = write!(
            out,
            "<div class=\"cited\" data-cited-for=\"{}\"><h3>Cited passages <span class=\"meta\">· draft of {} cites {} of {} retrieved</span></h3><ol class=\"citations\">",
            esc(&x.name),
            esc(&x.name),
            sources.len(),
            c["retrieved"].as_u64().unwrap_or(0)
        );
        for p in sources {
            let section = p["section"].as_str().unwrap_or("");
            let _ = write!(
                out,
                "<li value=\"{}\" data-n=\"{}\"><strong>[{}]</strong> {}{}<blockquote>{}</blockquote></li>",
                p["n"].as_u64().unwrap_or(0),
                p["n"].as_u64().unwrap_or(0),
                p["n"].as_u64().unwrap_or(0),
                doc_link(p["title"].as_str().unwrap_or(""), p["url"].as_str()),
                if section.is_empty() {
                    String::new()
                } else {
                    format!(" <span class=\"meta\">› {}</span>", esc(section))
                },
                esc(p["text"].as_str().unwrap_or(""))
            );
        }
        out.push_str("</ol>");
        if let Some(first) = c["repaired_after"].as_str() {
            let _ = write!(
                out,
                "<p class=\"meta\">The first draft was refused ({}) and written again.</p>",
                esc(first)
            );
        }
        out.push_str("</div>");
    }
    Ok(out)
}

/// The sources table; the stale documents found are added to `stale`.
fn sources_table<S: Store>(
    ui: &UiState<S>,
    docs: &[charter_store::KnowledgeDoc],
    now: i64,
    stale: &mut Vec<StaleDoc>,
) -> String {
    let mut body = String::new();
    let known = &ui.app.runtime.project.knowledge;
    if known.is_empty() {
        body.push_str("<p class=\"meta\">No knowledge source is declared in charter.yaml (<code>knowledge:</code>).</p>");
    } else {
        body.push_str("<h2>Sources</h2><table><thead><tr><th>Source</th><th>Owner</th><th>Documents</th><th>Stale</th><th>Last indexed</th></tr></thead><tbody>");
        for (name, src) in known {
            let mine: Vec<_> = docs.iter().filter(|d| &d.source == name).collect();
            let limit = src
                .max_age
                .map(|m| i64::try_from(m.as_millis()).unwrap_or(i64::MAX));
            let old: Vec<_> = mine
                .iter()
                .filter(|d| limit.is_some_and(|l| now - d.updated_at > l))
                .collect();
            for d in &old {
                stale.push(StaleDoc {
                    source: d.source.clone(),
                    doc_key: d.doc_key.clone(),
                    title: d.title.clone(),
                    url: d.url.clone(),
                    owner: d.owner.clone(),
                    updated_at: d.updated_at,
                });
            }
            let last = mine.iter().map(|d| d.indexed_at).max();
            let _ = write!(
                body,
                "<tr data-source=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                esc(name),
                esc(&src.owner),
                mine.len(),
                old.len(),
                last.map(|t| time(ui.zone(), t))
                    .unwrap_or_else(|| "never".into())
            );
        }
        body.push_str("</tbody></table>");
    }
    body
}

/// Every gap, newest first.
fn gaps_table<S: Store>(ui: &UiState<S>, gaps: &[charter_store::KnowledgeGap]) -> String {
    let mut body = String::new();
    if gaps.is_empty() {
        body.push_str("<p class=\"meta\">No knowledge gap recorded.</p>");
    } else {
        let _ = write!(
            body,
            "<table class=\"gaps\"><thead><tr><th>At ({})</th><th>Charter</th><th>Why</th><th>Question</th><th>Found</th><th>Event</th></tr></thead><tbody>",
            esc(ui.zone().name())
        );
        for g in gaps {
            let found: Vec<String> = g
                .found
                .as_array()
                .into_iter()
                .flatten()
                .map(|p: &Value| {
                    format!(
                        "[{}] {}",
                        p["n"].as_u64().unwrap_or(0),
                        doc_link(p["title"].as_str().unwrap_or(""), p["url"].as_str())
                    )
                })
                .collect();
            let _ = write!(
                body,
                "<tr data-gap=\"{}\"><td>{}</td><td>{}</td><td>{} <div class=\"meta\">{}</div></td><td>{}</td><td>{}</td><td><a href=\"/events/{}\">event</a></td></tr>",
                g.id,
                time(ui.zone(), g.created_at),
                esc(&g.charter),
                badge(g.reason.as_str()),
                esc(&g.why),
                esc(&g.question),
                if found.is_empty() {
                    "nothing".to_string()
                } else {
                    found.join("<br>")
                },
                g.event_id
            );
        }
        body.push_str("</tbody></table>");
    }
    body
}

#[derive(Debug, Default, Deserialize)]
pub struct GapsQuery {
    pub charter: Option<String>,
    pub msg: Option<String>,
}

/// `/knowledge`: every source with its index and stale documents, then the gaps of the
/// charters the session sees.
pub async fn page_handler<S: Store>(
    State(ui): State<UiState<S>>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<GapsQuery>,
) -> Result<Html<String>, UiError> {
    let s = ui.require(&headers, &uri).await?;
    let store = &ui.app.store;
    let charter = q.charter.filter(|c| !c.trim().is_empty());
    let docs = store.list_documents(None).await?;
    let now = crate::now_millis();
    let mut stale = Vec::new();
    let mut body = String::from(
        "<h1>Knowledge</h1><p class=\"meta\">The approved knowledge sources that retrieve steps search, the documents older than their source's <code>max_age</code>, and the questions they did not answer well.</p>",
    );
    body.push_str(&sources_table(&ui, &docs, now, &mut stale));
    let gaps = if charter.as_deref().is_none_or(|c| s.sees(c)) {
        store
            .list_gaps(GapFilter {
                charter: charter.clone(),
                limit: GAP_LIMIT,
                ..GapFilter::default()
            })
            .await?
    } else {
        Vec::new()
    };
    let gaps: Vec<_> = gaps.into_iter().filter(|g| s.sees(&g.charter)).collect();
    let sum = summarize(&gaps, &stale);
    if !sum.stale_by_owner.is_empty() {
        body.push_str("<h2>Stale documents by owner</h2>");
        for (owner, list) in &sum.stale_by_owner {
            let _ = write!(
                body,
                "<h3>{} <span class=\"meta\">· {}</span></h3><ul>",
                esc(owner),
                list.len()
            );
            for d in list {
                let _ = write!(
                    body,
                    "<li>{} <span class=\"meta\">· {} · updated {}</span></li>",
                    doc_link(&d.title, d.url.as_deref()),
                    esc(&d.source),
                    time(ui.zone(), d.updated_at)
                );
            }
            body.push_str("</ul>");
        }
    }
    let _ = write!(
        body,
        "<h2>Gaps <span class=\"meta\">· {}</span></h2>",
        sum.gaps
    );
    if !sum.top_questions.is_empty() {
        body.push_str("<h3>Top unanswered questions</h3><ol>");
        for (question, n) in &sum.top_questions {
            let _ = write!(
                body,
                "<li>{} <span class=\"meta\">× {n}</span></li>",
                esc(question)
            );
        }
        body.push_str("</ol>");
    }
    body.push_str(&gaps_table(&ui, &gaps));
    Ok(Html(page(
        "Knowledge",
        Some(&ui.viewer(&s)),
        q.msg.as_deref(),
        &body,
    )))
}
