//! Rollout arithmetic, pure: a route's effective mode, which runs are sampled for review,
//! agreement with a Wilson score interval, and how much a reviewer rewrote a draft (edit
//! distance at character and word level).

use serde_json::Value;

use crate::config::{Mode, Route};

/// The mode a route runs in.
///
/// `declared` is what the files say for the route (its `mode:`, else the charter file's
/// `mode:`); an operator's stored override `(mode, base)` applies while the files still
/// declare `base`. Otherwise the route's own `mode:` applies, else the charter's effective
/// mode (`charter_mode`, which already includes a charter-wide override).
pub fn route_mode(
    route: &Route,
    charter_file_mode: Mode,
    charter_mode: Mode,
    stored: Option<(&str, &str)>,
) -> Mode {
    let declared = declared_mode(route, charter_file_mode);
    if let Some((mode, base)) = stored
        && base == declared.as_str()
        && let Some(m) = Mode::parse(mode)
    {
        return m;
    }
    route.rollout.mode.unwrap_or(charter_mode)
}

/// What the files declare for a route: its own `mode:`, else the charter's.
pub fn declared_mode(route: &Route, charter_file_mode: Mode) -> Mode {
    route.rollout.mode.unwrap_or(charter_file_mode)
}

/// Whether the run of event `id` is sampled at `rate` (0 to 1). Deterministic: the same
/// event is sampled (or not) on every run, so a replay does not queue it a second time by
/// chance; the low 64 bits of a UUIDv7 are random.
pub fn sampled(id: u128, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    let low = id as u64;
    (low as f64) < rate * (u64::MAX as f64)
}

/// Agreement of reviewers with a route's runs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Agreement {
    pub reviewed: u64,
    /// Reviews that found the decision and every action right.
    pub agreed: u64,
    /// Reviews that gave another label (corrections).
    pub corrected: u64,
    /// `agreed / reviewed`; `None` when nothing was reviewed.
    pub rate: Option<f64>,
    /// 95% Wilson score interval of the rate.
    pub low: Option<f64>,
    pub high: Option<f64>,
    /// At least the route's minimum of reviewed samples: the rate may be relied on.
    pub enough: bool,
    pub min_reviewed: u64,
}

impl Agreement {
    pub fn new(reviewed: u64, agreed: u64, corrected: u64, min_reviewed: u64) -> Agreement {
        let (low, high) = match wilson(agreed, reviewed) {
            Some((l, h)) => (Some(l), Some(h)),
            None => (None, None),
        };
        Agreement {
            reviewed,
            agreed,
            corrected,
            rate: (reviewed > 0).then(|| agreed as f64 / reviewed as f64),
            low,
            high,
            enough: reviewed >= min_reviewed.max(1),
            min_reviewed,
        }
    }

    /// Share of reviews that were corrections; `None` when nothing was reviewed.
    pub fn correction_rate(&self) -> Option<f64> {
        (self.reviewed > 0).then(|| self.corrected as f64 / self.reviewed as f64)
    }

    /// One line for people: the rate with its interval, or how many more reviews it needs.
    pub fn describe(&self) -> String {
        match (self.rate, self.low, self.high) {
            (Some(r), Some(l), Some(h)) if self.enough => format!(
                "agreement {:.1}% (95% interval {:.1}%–{:.1}%) over {} reviewed",
                100.0 * r,
                100.0 * l,
                100.0 * h,
                self.reviewed
            ),
            _ => format!(
                "not enough reviewed: {} of the {} needed",
                self.reviewed, self.min_reviewed
            ),
        }
    }
}

/// 95% Wilson score interval of `successes` out of `n`; `None` when `n` is 0.
pub fn wilson(successes: u64, n: u64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let z = 1.959_963_984_540_054_f64;
    let n = n as f64;
    let p = successes.min(n as u64) as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = p + z2 / (2.0 * n);
    let margin = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some((
        ((centre - margin) / denom).clamp(0.0, 1.0),
        ((centre + margin) / denom).clamp(0.0, 1.0),
    ))
}

/// Levenshtein distance between two sequences (insertions, deletions, substitutions).
pub fn edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    if a.is_empty() {
        return b.len();
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(x != y);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// How much of a draft a reviewer rewrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Rewrite {
    /// Character edits between the draft and the approved text.
    pub chars: u64,
    /// Characters in the draft.
    pub draft_chars: u64,
    /// Word edits (words split at whitespace).
    pub words: u64,
    pub draft_words: u64,
}

impl Rewrite {
    /// Measure the rewrite of `draft` into `approved`.
    pub fn measure(draft: &str, approved: &str) -> Rewrite {
        let a: Vec<char> = draft.chars().collect();
        let b: Vec<char> = approved.chars().collect();
        let wa: Vec<&str> = draft.split_whitespace().collect();
        let wb: Vec<&str> = approved.split_whitespace().collect();
        Rewrite {
            chars: edit_distance(&a, &b) as u64,
            draft_chars: a.len() as u64,
            words: edit_distance(&wa, &wb) as u64,
            draft_words: wa.len() as u64,
        }
    }

    /// Character edits per draft character (0 = approved as written; may exceed 1).
    pub fn char_ratio(&self) -> f64 {
        ratio(self.chars, self.draft_chars)
    }

    pub fn word_ratio(&self) -> f64 {
        ratio(self.words, self.draft_words)
    }
}

fn ratio(edits: u64, len: u64) -> f64 {
    match (edits, len) {
        (0, _) => 0.0,
        (e, 0) => e as f64,
        (e, l) => e as f64 / l as f64,
    }
}

/// The texts of an action's parameters that carry `draft`, before and after the reviewer's
/// edit: every string of `original` containing the draft, paired with the string at the same
/// JSON pointer of `approved` (empty when the edit removed it). When no string contains the
/// draft, the strings the edit changed. Ordered by pointer.
pub fn draft_texts(
    original: &Value,
    approved: &Value,
    draft: &str,
) -> Vec<(String, String, String)> {
    let mut leaves = Vec::new();
    string_leaves(original, String::new(), &mut leaves);
    let after = |p: &str| {
        approved
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let draft = draft.trim();
    let carrying: Vec<(String, String, String)> = leaves
        .iter()
        .filter(|(_, s)| !draft.is_empty() && s.contains(draft))
        .map(|(p, s)| (p.clone(), s.clone(), after(p)))
        .collect();
    if !carrying.is_empty() {
        return carrying;
    }
    leaves
        .into_iter()
        .map(|(p, s)| {
            let a = after(&p);
            (p, s, a)
        })
        .filter(|(_, s, a)| s != a)
        .collect()
}

fn string_leaves(v: &Value, at: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((at, s.clone())),
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                string_leaves(x, format!("{at}/{i}"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                let key = k.replace('~', "~0").replace('/', "~1");
                string_leaves(x, format!("{at}/{key}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        let d = |a: &str, b: &str| {
            let a: Vec<char> = a.chars().collect();
            let b: Vec<char> = b.chars().collect();
            edit_distance(&a, &b)
        };
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("abc", ""), 3);
        assert_eq!(d("same", "same"), 0);
        assert_eq!(d("flaw", "lawn"), 2);
        // Characters, not bytes.
        assert_eq!(d("café", "cafe"), 1);
    }

    #[test]
    fn rewrite_ratios_for_known_edits() {
        let r = Rewrite::measure("Thanks for your patience.", "Thanks for your patience.");
        assert_eq!((r.chars, r.words), (0, 0));
        assert_eq!(r.char_ratio(), 0.0);

        // One word replaced: "your" -> "the" is 4 character edits (3 substitutions, 1
        // deletion) and one word edit out of four.
        let r = Rewrite::measure("Thanks for your patience.", "Thanks for the patience.");
        assert_eq!(r.chars, 4);
        assert_eq!(r.draft_chars, 25);
        assert_eq!(r.words, 1);
        assert_eq!(r.draft_words, 4);
        assert!((r.word_ratio() - 0.25).abs() < 1e-12);
        assert!((r.char_ratio() - 0.16).abs() < 1e-12);

        // A sentence appended: two more words.
        let r = Rewrite::measure("We refunded you.", "We refunded you. Sorry!");
        assert_eq!(r.words, 1);
        assert_eq!(r.chars, 7);

        // Everything rewritten.
        let r = Rewrite::measure("abc", "xyz");
        assert_eq!(r.chars, 3);
        assert_eq!(r.char_ratio(), 1.0);
    }

    #[test]
    fn wilson_interval_matches_known_values() {
        assert_eq!(wilson(0, 0), None);
        // 95 of 100: the textbook interval is about 0.888 to 0.978.
        let (l, h) = wilson(95, 100).unwrap();
        assert!((l - 0.8883).abs() < 5e-4, "{l}");
        assert!((h - 0.9785).abs() < 5e-4, "{h}");
        // All agreed over few reviews: the interval is wide, not a point at 100%.
        let (l, h) = wilson(3, 3).unwrap();
        assert!(l < 0.5 && h == 1.0, "{l} {h}");
    }

    #[test]
    fn agreement_is_not_shown_until_enough_were_reviewed() {
        let a = Agreement::new(0, 0, 0, 30);
        assert_eq!(a.rate, None);
        assert!(!a.enough);
        assert_eq!(a.describe(), "not enough reviewed: 0 of the 30 needed");
        let a = Agreement::new(40, 38, 2, 30);
        assert!(a.enough);
        assert_eq!(a.rate, Some(0.95));
        assert!(a.describe().starts_with("agreement 95.0% (95% interval "));
        assert_eq!(a.correction_rate(), Some(0.05));
    }

    #[test]
    fn sampling_is_deterministic_and_near_the_rate() {
        assert!(!sampled(12345, 0.0));
        assert!(sampled(12345, 1.0));
        let n = 20_000u128;
        let hits = (0..n)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835))
            .filter(|id| sampled(*id, 0.1))
            .count();
        assert!((1_700..2_300).contains(&hits), "{hits}");
        assert_eq!(sampled(777, 0.5), sampled(777, 0.5));
    }

    #[test]
    fn draft_texts_pair_the_strings_carrying_the_draft() {
        let draft = "Hello, we are on it.";
        let original = json!({"target": "/t/1", "json": {"comment": {"body": "Hello, we are on it.\n-- Support"}, "public": true}});
        let approved = json!({"target": "/t/1", "json": {"comment": {"body": "Hello, we fixed it.\n-- Support"}, "public": true}});
        let pairs = draft_texts(&original, &approved, draft);
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].0, "/json/comment/body");
        assert_eq!(pairs[0].2, "Hello, we fixed it.\n-- Support");
        // No string carries the draft: the changed strings.
        let pairs = draft_texts(&original, &approved, "something else");
        assert_eq!(pairs.len(), 1);
        // Unchanged and not carrying it: nothing.
        assert!(draft_texts(&original, &original, "other").is_empty());
    }
}
