//! Approved knowledge, the pure parts: reading a document (Markdown, HTML, plain text) into
//! sections under their headings, cutting sections into passages, turning a question into
//! search terms, checking a draft's citations against the passages it was given, and the
//! retrieval measures `charter eval` reports (recall@k, MRR).
//!
//! Nothing here reads files or the network: the server reads folders and help-center APIs
//! and hands the text in; the store indexes the passages.

use std::collections::BTreeSet;

/// How a document's text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocFormat {
    Markdown,
    Html,
    Text,
}

impl DocFormat {
    /// The format of a file by its extension (`.md`, `.markdown`, `.html`, `.htm`, `.txt`);
    /// `None` for any other file, which a knowledge folder skips.
    pub fn of_path(path: &str) -> Option<DocFormat> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "md" | "markdown" => Some(DocFormat::Markdown),
            "html" | "htm" => Some(DocFormat::Html),
            "txt" | "text" => Some(DocFormat::Text),
            _ => None,
        }
    }

    /// `markdown`, `html` or `text` (as written in `list.format`).
    pub fn parse(word: &str) -> Option<DocFormat> {
        match word {
            "markdown" | "md" => Some(DocFormat::Markdown),
            "html" => Some(DocFormat::Html),
            "text" | "plain" => Some(DocFormat::Text),
            _ => None,
        }
    }
}

/// A part of a document under one heading. `heading` is the path of headings above it,
/// joined by ` > ` (`Refunds > Card payments`); empty before the first heading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub heading: String,
    pub text: String,
}

/// A document read into its title and sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDoc {
    /// The first top-level heading (Markdown `#`, HTML `<title>` or `<h1>`), if any.
    pub title: Option<String>,
    pub sections: Vec<Section>,
}

/// Read a document's text into sections.
pub fn parse_document(format: DocFormat, text: &str) -> ParsedDoc {
    match format {
        DocFormat::Markdown => parse_markdown(text),
        DocFormat::Html => parse_html(text),
        DocFormat::Text => ParsedDoc {
            title: None,
            sections: vec![Section {
                heading: String::new(),
                text: text.trim().to_string(),
            }],
        },
    }
}

/// Keeps the stack of headings while a document is read.
struct Outline {
    stack: Vec<(usize, String)>,
    title: Option<String>,
    sections: Vec<Section>,
    body: String,
}

impl Outline {
    fn new() -> Outline {
        Outline {
            stack: Vec::new(),
            title: None,
            sections: Vec::new(),
            body: String::new(),
        }
    }

    fn heading_path(&self) -> String {
        self.stack
            .iter()
            .map(|(_, h)| h.as_str())
            .collect::<Vec<_>>()
            .join(" > ")
    }

    fn close_section(&mut self) {
        let text = self.body.trim().to_string();
        if !text.is_empty() {
            let heading = self.heading_path();
            self.sections.push(Section { heading, text });
        }
        self.body.clear();
    }

    fn heading(&mut self, level: usize, text: String) {
        self.close_section();
        if text.is_empty() {
            return;
        }
        if level == 1 && self.title.is_none() {
            self.title = Some(text.clone());
        }
        while self.stack.last().is_some_and(|(l, _)| *l >= level) {
            self.stack.pop();
        }
        self.stack.push((level, text));
    }

    fn line(&mut self, line: &str) {
        self.body.push_str(line);
        self.body.push('\n');
    }

    fn finish(mut self) -> ParsedDoc {
        self.close_section();
        ParsedDoc {
            title: self.title,
            sections: self.sections,
        }
    }
}

fn parse_markdown(text: &str) -> ParsedDoc {
    let mut out = Outline::new();
    let mut fence: Option<&str> = None;
    let mut lines = text.lines().peekable();
    // YAML front matter (`---` ... `---`) is not part of the text; its `title:` is the title.
    if lines.peek().is_some_and(|l| l.trim() == "---") {
        lines.next();
        for l in lines.by_ref() {
            if l.trim() == "---" {
                break;
            }
            if let Some(t) = l.strip_prefix("title:") {
                let t = t.trim().trim_matches(['"', '\'']).trim();
                if !t.is_empty() {
                    out.title = Some(t.to_string());
                }
            }
        }
    }
    for line in lines {
        let trimmed = line.trim_start();
        if let Some(f) = fence {
            if trimmed.starts_with(f) {
                fence = None;
            }
            out.line(line);
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
            out.line(line);
            continue;
        }
        let hashes = trimmed.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&hashes)
            && trimmed[hashes..].starts_with(' ')
            && line.len() - trimmed.len() < 4
        {
            let h = trimmed[hashes..].trim().trim_end_matches('#').trim();
            out.heading(hashes, strip_markdown_inline(h));
            continue;
        }
        out.line(&strip_markdown_inline(line));
    }
    out.finish()
}

/// Drops emphasis marks and keeps link texts (`[text](url)` → `text`).
fn strip_markdown_inline(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '*' | '_' | '`' => {}
            ']' if line[i + 1..].starts_with('(') => {
                // Skip the `(url)` part.
                let rest = &line[i + 1..];
                match rest.find(')') {
                    Some(end) => {
                        let stop = i + 1 + end;
                        while chars.peek().is_some_and(|(j, _)| *j <= stop) {
                            chars.next();
                        }
                    }
                    None => out.push(c),
                }
            }
            '[' => {}
            _ => out.push(c),
        }
    }
    out
}

fn parse_html(text: &str) -> ParsedDoc {
    let mut out = Outline::new();
    let mut html_title: Option<String> = None;
    let mut rest = text;
    // Text being collected for a heading (level, text) or for `<title>`.
    let mut in_heading: Option<(usize, String)> = None;
    let mut in_title: Option<String> = None;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            push_html_text(rest, &mut in_heading, &mut in_title, &mut out);
            break;
        };
        push_html_text(&rest[..lt], &mut in_heading, &mut in_title, &mut out);
        rest = &rest[lt..];
        if rest.starts_with("<!--") {
            rest = rest.find("-->").map_or("", |e| &rest[e + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            break;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        match name.as_str() {
            "script" | "style" if !closing => {
                let end = format!("</{name}");
                let lower = rest.to_ascii_lowercase();
                rest = lower.find(&end).map_or("", |e| {
                    let after = &rest[e..];
                    after.find('>').map_or("", |g| &after[g + 1..])
                });
            }
            "title" => {
                if closing {
                    if let Some(t) = in_title.take() {
                        let t = collapse(&t);
                        if !t.is_empty() {
                            html_title = Some(t);
                        }
                    }
                } else {
                    in_title = Some(String::new());
                }
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                let level = usize::from(name.as_bytes()[1] - b'0');
                if closing {
                    if let Some((l, t)) = in_heading.take() {
                        out.heading(l, collapse(&t));
                    }
                } else {
                    in_heading = Some((level, String::new()));
                }
            }
            "p" | "div" | "br" | "li" | "tr" | "section" | "article" | "ul" | "ol" | "table"
            | "blockquote" | "pre" => out.body.push('\n'),
            _ => {}
        }
    }
    if let Some((l, t)) = in_heading.take() {
        out.heading(l, collapse(&t));
    }
    let mut doc = out.finish();
    if html_title.is_some() {
        doc.title = html_title;
    }
    doc
}

fn push_html_text(
    raw: &str,
    heading: &mut Option<(usize, String)>,
    title: &mut Option<String>,
    out: &mut Outline,
) {
    let text = decode_entities(raw);
    if let Some(t) = title {
        t.push_str(&text);
    } else if let Some((_, h)) = heading {
        h.push_str(&text);
    } else {
        out.body.push_str(&text);
    }
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    s.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A passage ready to index: its place in the document, the heading path above it, its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassageText {
    pub ordinal: u32,
    pub heading: String,
    pub text: String,
}

/// Cut sections into passages of about `max_words` words: paragraphs are kept whole while
/// they fit, a longer paragraph is cut at sentence ends (or, for a sentence longer than the
/// limit, at `max_words`). Every passage keeps the heading path of its section.
pub fn chunk(sections: &[Section], max_words: usize) -> Vec<PassageText> {
    let max_words = max_words.max(20);
    let mut out = Vec::new();
    for s in sections {
        let mut current: Vec<&str> = Vec::new();
        let emit = |words: &mut Vec<&str>, out: &mut Vec<PassageText>| {
            if !words.is_empty() {
                out.push(PassageText {
                    ordinal: u32::try_from(out.len()).unwrap_or(u32::MAX),
                    heading: s.heading.clone(),
                    text: words.join(" "),
                });
                words.clear();
            }
        };
        for para in s.text.split("\n\n") {
            let words: Vec<&str> = para.split_whitespace().collect();
            if words.is_empty() {
                continue;
            }
            if current.len() + words.len() <= max_words {
                current.extend(words);
                continue;
            }
            emit(&mut current, &mut out);
            if words.len() <= max_words {
                current.extend(words);
                continue;
            }
            // A long paragraph: sentence by sentence.
            for sentence in split_sentences(para) {
                let sw: Vec<&str> = sentence.split_whitespace().collect();
                if current.len() + sw.len() > max_words {
                    emit(&mut current, &mut out);
                }
                for piece in sw.chunks(max_words) {
                    if current.len() + piece.len() > max_words {
                        emit(&mut current, &mut out);
                    }
                    current.extend_from_slice(piece);
                }
            }
        }
        emit(&mut current, &mut out);
    }
    out
}

/// Words too common to say anything about a question (English).
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "but", "by", "can", "could", "do", "does", "did", "for", "from", "get", "got", "had",
    "has", "have", "he", "her", "hi", "hello", "how", "i", "if", "in", "into", "is", "it", "its",
    "me", "my", "no", "not", "of", "on", "or", "our", "please", "she", "should", "so", "that",
    "the", "their", "them", "then", "there", "these", "they", "this", "to", "us", "was", "we",
    "were", "what", "when", "where", "which", "who", "why", "will", "with", "would", "you", "your",
    "thanks", "thank",
];

/// Most search terms taken from one question.
pub const MAX_QUERY_TERMS: usize = 32;

/// The search terms of a question: lower-cased words of letters and digits, without common
/// English words, each once, in order, at most [`MAX_QUERY_TERMS`]. Only these reach the
/// store's full-text query, so no query syntax from the text is ever interpreted.
pub fn query_terms(text: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for w in text.split(|c: char| !c.is_alphanumeric()) {
        if w.is_empty() {
            continue;
        }
        let w = w.to_lowercase();
        if w.chars().count() < 2 || STOPWORDS.contains(&w.as_str()) {
            continue;
        }
        if seen.insert(w.clone()) {
            out.push(w);
            if out.len() == MAX_QUERY_TERMS {
                break;
            }
        }
    }
    out
}

/// The share (0 to 1) of the question's terms found in a passage: a term counts when a word
/// of the passage equals it or when one begins with the other and they share at least four
/// letters (`refund` / `refunds`, `ship` / `shipping`). Both stores rank with their own
/// full-text ranking; this score is computed the same way for both, so one `min_score`
/// means the same on SQLite and PostgreSQL.
pub fn coverage(terms: &[String], heading: &str, text: &str) -> f64 {
    if terms.is_empty() {
        return 0.0;
    }
    let words: BTreeSet<String> = heading
        .split(|c: char| !c.is_alphanumeric())
        .chain(text.split(|c: char| !c.is_alphanumeric()))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let found = terms
        .iter()
        .filter(|t| {
            words.contains(*t)
                || words.iter().any(|w| {
                    let (short, long) = if w.len() <= t.len() {
                        (w.as_str(), t.as_str())
                    } else {
                        (t.as_str(), w.as_str())
                    };
                    short.len() >= 4 && long.starts_with(short)
                })
        })
        .count();
    found as f64 / terms.len() as f64
}

/// Split a text into sentences at `.`, `!`, `?` followed by white space (or a line end).
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        let end_mark = matches!(c, '.' | '!' | '?') || c == '\n';
        if !end_mark {
            continue;
        }
        let next = bytes.get(i + 1).copied();
        // A citation right after the full stop (`... [2]`) belongs to the sentence.
        if c != '\n' && next.is_some_and(|b| !b.is_ascii_whitespace()) {
            continue;
        }
        let piece = text[start..=i].trim();
        if !piece.is_empty() {
            out.push(piece);
        }
        start = i + 1;
    }
    let tail = text[start..].trim();
    if !tail.is_empty() {
        out.push(tail);
    }
    // `Answer. [1]`: a citation standing alone belongs to the sentence before it.
    let mut merged: Vec<&str> = Vec::new();
    for s in out {
        if is_only_citations(s)
            && let Some(prev) = merged.last_mut()
        {
            let from = prev.as_ptr() as usize - text.as_ptr() as usize;
            let to = s.as_ptr() as usize - text.as_ptr() as usize + s.len();
            *prev = &text[from..to];
            continue;
        }
        merged.push(s);
    }
    merged
}

fn is_only_citations(s: &str) -> bool {
    let cites = citations(s);
    if cites.is_empty() {
        return false;
    }
    let rest: String = s
        .split(['[', ']'])
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, p)| p)
        .collect();
    rest.chars()
        .all(|c| c.is_whitespace() || c.is_ascii_punctuation())
}

/// The passage numbers a text cites: `[1]`, `[2, 3]`, `[2][3]`, in order of first use.
pub fn citations(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else {
            break;
        };
        let inside = &rest[..close];
        let nums: Option<Vec<usize>> = inside
            .split(',')
            .map(|p| p.trim().parse::<usize>().ok())
            .collect();
        if let Some(nums) = nums {
            for n in nums {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        rest = &rest[close + 1..];
    }
    out
}

/// Why a draft's citations are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CitationError {
    #[error("the draft cites no passage; it must cite the passages it uses as [1], [2], ...")]
    NothingCited,
    #[error(
        "the draft cites [{cited}], but only {retrieved} passage(s) were retrieved ([1] to [{retrieved}])"
    )]
    NotRetrieved { cited: usize, retrieved: usize },
    #[error("the draft cites passages, but no passage was retrieved")]
    NoneRetrieved,
    #[error("a sentence of the draft cites nothing: \"{0}\"")]
    UncitedSentence(String),
}

/// Check a draft written from `retrieved` numbered passages (`[1]` to `[retrieved]`): it
/// must cite at least one, every citation must be a retrieved passage, and with
/// `every_sentence` each sentence must carry a citation. Returns the cited numbers.
pub fn check_citations(
    draft: &str,
    retrieved: usize,
    every_sentence: bool,
) -> Result<Vec<usize>, CitationError> {
    let cited = citations(draft);
    if cited.is_empty() {
        return Err(CitationError::NothingCited);
    }
    if retrieved == 0 {
        return Err(CitationError::NoneRetrieved);
    }
    if let Some(&bad) = cited.iter().find(|&&n| n == 0 || n > retrieved) {
        return Err(CitationError::NotRetrieved {
            cited: bad,
            retrieved,
        });
    }
    if every_sentence {
        for s in split_sentences(draft) {
            // A greeting or sign-off line without a full stop is not a claim.
            let claim = s.split_whitespace().count() >= 4;
            if claim && citations(s).is_empty() {
                let shown: String = s.chars().take(120).collect();
                return Err(CitationError::UncitedSentence(shown));
            }
        }
    }
    Ok(cited)
}

/// Recall@k and the mean reciprocal rank of a set of questions: `ranks[i]` is the 1-based
/// rank of question i's answering document in what was retrieved, `None` when it was not
/// retrieved at all. Recall@k counts ranks ≤ k; MRR averages 1/rank (0 when missing).
pub fn recall_and_mrr(ranks: &[Option<usize>], k: usize) -> (f64, f64) {
    if ranks.is_empty() {
        return (0.0, 0.0);
    }
    let n = ranks.len() as f64;
    let hits = ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64;
    let rr: f64 = ranks
        .iter()
        .map(|r| r.map_or(0.0, |r| 1.0 / r as f64))
        .sum();
    (hits / n, rr / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_keeps_heading_paths_and_skips_fenced_hashes() {
        let doc = parse_document(
            DocFormat::Markdown,
            "---\ntitle: Refund policy\n---\nIntro line.\n\n# Refunds\nCards take **5 days**.\n\n## Card payments\nSee [the portal](https://x/y) now.\n```\n# not a heading\n```\n# Shipping\nFree over 50.\n",
        );
        assert_eq!(doc.title.as_deref(), Some("Refund policy"));
        let heads: Vec<&str> = doc.sections.iter().map(|s| s.heading.as_str()).collect();
        assert_eq!(
            heads,
            ["", "Refunds", "Refunds > Card payments", "Shipping"]
        );
        assert!(doc.sections[1].text.contains("Cards take 5 days."));
        assert!(doc.sections[2].text.contains("See the portal now."));
        assert!(doc.sections[2].text.contains("# not a heading"));
    }

    #[test]
    fn html_reads_title_headings_and_drops_scripts() {
        let doc = parse_document(
            DocFormat::Html,
            "<html><head><title>Help &amp; FAQ</title><script>var x='<h1>no</h1>';</script></head><body><h1>Returns</h1><p>Send it back within 30 days.</p><h2>Damaged items</h2><p>We pay the postage.</p></body></html>",
        );
        assert_eq!(doc.title.as_deref(), Some("Help & FAQ"));
        assert_eq!(doc.sections.len(), 2);
        assert_eq!(doc.sections[0].heading, "Returns");
        assert_eq!(doc.sections[1].heading, "Returns > Damaged items");
        assert!(doc.sections[1].text.contains("We pay the postage."));
        assert!(!doc.sections.iter().any(|s| s.text.contains("var x")));
    }

    #[test]
    fn chunking_respects_the_word_limit_and_keeps_headings() {
        let long: String = (0..100)
            .map(|i| format!("Sentence number {i} is here."))
            .collect::<Vec<_>>()
            .join(" ");
        let sections = vec![
            Section {
                heading: "A".into(),
                text: "short one\n\nshort two".into(),
            },
            Section {
                heading: "B".into(),
                text: long,
            },
        ];
        let p = chunk(&sections, 50);
        assert_eq!(p[0].text, "short one short two");
        assert_eq!(p[0].heading, "A");
        assert!(p.len() > 5);
        assert!(p[1..].iter().all(|x| x.heading == "B"));
        assert!(p.iter().all(|x| x.text.split_whitespace().count() <= 50));
        let ordinals: Vec<u32> = p.iter().map(|x| x.ordinal).collect();
        assert_eq!(ordinals, (0..p.len() as u32).collect::<Vec<_>>());
    }

    #[test]
    fn query_terms_drop_stopwords_and_syntax() {
        assert_eq!(
            query_terms("How do I get a REFUND for \"order\" 42? OR NEAR(x) refund"),
            ["refund", "order", "42", "near"]
        );
    }

    #[test]
    fn coverage_matches_word_forms() {
        let t = query_terms("refunds shipping");
        assert_eq!(coverage(&t, "Refund", "We ship worldwide."), 1.0);
        assert_eq!(coverage(&t, "", "Nothing here."), 0.0);
        assert_eq!(coverage(&t, "", "refunds only"), 0.5);
    }

    #[test]
    fn citations_are_checked() {
        assert_eq!(citations("a [1] b [2, 3] c [x] [1]"), [1, 2, 3]);
        assert_eq!(
            check_citations("Refunds take 5 days [1].", 2, true),
            Ok(vec![1])
        );
        assert_eq!(
            check_citations("Refunds take 5 days.", 2, false),
            Err(CitationError::NothingCited)
        );
        assert_eq!(
            check_citations("Refunds take 5 days [3].", 2, false),
            Err(CitationError::NotRetrieved {
                cited: 3,
                retrieved: 2
            })
        );
        let uncited = "Refunds take 5 days [1]. Shipping is free on every order.";
        assert!(check_citations(uncited, 2, false).is_ok());
        assert!(matches!(
            check_citations(uncited, 2, true),
            Err(CitationError::UncitedSentence(s)) if s.starts_with("Shipping")
        ));
        // A citation after the full stop belongs to its sentence; short lines are not claims.
        assert!(
            check_citations("Hi Ana,\nRefunds take five days. [1]\nBest, Sam", 1, true).is_ok()
        );
    }

    #[test]
    fn recall_and_mrr_are_computed() {
        let (r, m) = recall_and_mrr(&[Some(1), Some(2), None, Some(6)], 5);
        assert!((r - 0.5).abs() < 1e-9);
        assert!((m - (1.0 + 0.5 + 0.0 + 1.0 / 6.0) / 4.0).abs() < 1e-9);
    }
}
