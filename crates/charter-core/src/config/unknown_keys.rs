//! Finding unknown keys before deserializing: serde stops at the first one, which would
//! hide every other problem of the file, so the YAML is walked against its [`Shape`] first.

use crate::config::shape::Shape;

/// An unknown key, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A YAML text with its unknown keys blanked out, and those keys.
#[derive(Debug)]
pub struct Stripped<'a> {
    /// The text to deserialize: every unknown key and its value replaced by spaces (line
    /// breaks kept, so every other value keeps its line and column). A block mapping left
    /// with no keys becomes `{}`, so it is still a mapping.
    pub text: std::borrow::Cow<'a, str>,
    pub unknown: Vec<UnknownKey>,
}

/// Reports every key of `text` that `shape` does not know and blanks it out with its value.
///
/// Text that is not valid YAML is returned unchanged, with no findings: the deserializer
/// then reports the syntax error. Merge keys (`<<`) are left to the deserializer.
pub fn strip_unknown_keys<'a>(text: &'a str, shape: &Shape) -> Stripped<'a> {
    let mut walk = Walk {
        text,
        unknown: Vec::new(),
        cuts: Vec::new(),
        braces: Vec::new(),
    };
    if let Some(root) = yaml_tree(text) {
        walk.node(&root, shape);
    }
    let Walk {
        unknown,
        cuts,
        braces,
        ..
    } = walk;
    Stripped {
        text: if cuts.is_empty() {
            std::borrow::Cow::Borrowed(text)
        } else {
            std::borrow::Cow::Owned(blank(text, &cuts, &braces))
        },
        unknown,
    }
}

/// A YAML node with its place.
#[derive(Debug)]
struct Node {
    kind: NodeKind,
    at: Place,
}

/// Where a node is: its byte range and the 1-based line and column of its start.
#[derive(Debug, Clone, Copy)]
struct Place {
    start: usize,
    end: usize,
    line: usize,
    column: usize,
}

#[derive(Debug)]
enum NodeKind {
    Scalar(String),
    Alias,
    Seq(Vec<Node>),
    Map {
        flow: bool,
        entries: Vec<(Node, Node)>,
    },
}

/// A collection whose end has not been seen yet.
enum Open {
    Seq(Vec<Node>),
    Map {
        flow: bool,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// The first document of `text` as a tree, or `None` when it does not parse. Nesting is
/// bounded by the parser's limits.
fn yaml_tree(text: &str) -> Option<Node> {
    use serde_saphyr::granit_parser::{Event, Parser, StructureStyle};

    let mut stack: Vec<(Open, Place)> = Vec::new();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.ok()?;
        let range = span.byte_range()?;
        let at = Place {
            start: range.start,
            end: range.end,
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        let done = match event {
            Event::Scalar(value, ..) => Node {
                kind: NodeKind::Scalar(value.into_owned()),
                at,
            },
            Event::Alias(_) => Node {
                kind: NodeKind::Alias,
                at,
            },
            Event::SequenceStart(..) => {
                stack.push((Open::Seq(Vec::new()), at));
                continue;
            }
            Event::MappingStart(style, ..) => {
                let open = Open::Map {
                    flow: style == StructureStyle::Flow,
                    entries: Vec::new(),
                    key: None,
                };
                stack.push((open, at));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (open, start) = stack.pop()?;
                let kind = match open {
                    Open::Seq(items) => NodeKind::Seq(items),
                    Open::Map { flow, entries, .. } => NodeKind::Map { flow, entries },
                };
                Node {
                    kind,
                    at: Place {
                        end: range.end.max(start.start),
                        ..start
                    },
                }
            }
            _ => continue,
        };
        match stack.last_mut() {
            None => return Some(done),
            Some((Open::Seq(items), _)) => items.push(done),
            Some((Open::Map { entries, key, .. }, _)) => match key.take() {
                None => *key = Some(done),
                Some(k) => entries.push((k, done)),
            },
        }
    }
    None
}

struct Walk<'t> {
    text: &'t str,
    unknown: Vec<UnknownKey>,
    /// Byte ranges to blank out.
    cuts: Vec<std::ops::Range<usize>>,
    /// Byte offsets where `{}` replaces the blanks (block mappings left empty).
    braces: Vec<usize>,
}

impl Walk<'_> {
    fn node(&mut self, node: &Node, shape: &Shape) {
        match (shape, &node.kind) {
            (Shape::Keys(fields), NodeKind::Map { flow, entries }) => {
                let mut first_cut = None;
                let mut removed = 0;
                for (key, value) in entries {
                    let NodeKind::Scalar(name) = &key.kind else {
                        continue;
                    };
                    if name == "<<" {
                        continue;
                    }
                    match fields.iter().find(|(field, _)| field == name) {
                        Some((_, inner)) => self.node(value, inner),
                        None => {
                            self.unknown.push(UnknownKey {
                                line: key.at.line,
                                column: key.at.column,
                                message: unknown_field(name, fields),
                            });
                            let cut = self.entry_range(&key.at, &value.at, *flow);
                            first_cut.get_or_insert(cut.start);
                            self.cuts.push(cut);
                            removed += 1;
                        }
                    }
                }
                // A block mapping left without keys would read as null: keep it a mapping.
                if let Some(at) = first_cut
                    && !flow
                    && removed == entries.len()
                {
                    self.braces.push(at);
                }
            }
            (Shape::Names(inner), NodeKind::Map { entries, .. }) => {
                for (_, value) in entries {
                    self.node(value, inner);
                }
            }
            (Shape::List(inner), NodeKind::Seq(items)) => {
                for item in items {
                    self.node(item, inner);
                }
            }
            _ => {}
        }
    }

    /// The bytes of one `key: value` entry: from the key to the end of the value, the colon
    /// included, and in a flow mapping one separating comma.
    fn entry_range(&self, key: &Place, value: &Place, flow: bool) -> std::ops::Range<usize> {
        let bytes = self.text.as_bytes();
        let mut start = key.start;
        let mut end = key.end.max(value.end);
        // The colon (an empty value ends before it).
        let mut i = key.end;
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        if bytes.get(i) == Some(&b':') {
            end = end.max(i + 1);
        }
        if flow {
            let mut after = end;
            while after < bytes.len() && bytes[after].is_ascii_whitespace() {
                after += 1;
            }
            if bytes.get(after) == Some(&b',') {
                end = after + 1;
            } else {
                let mut before = start;
                while before > 0 && bytes[before - 1].is_ascii_whitespace() {
                    before -= 1;
                }
                if before > 0 && bytes[before - 1] == b',' {
                    start = before - 1;
                }
            }
        }
        start..end.min(bytes.len())
    }
}

/// The message for an unknown key, worded like serde's.
fn unknown_field(name: &str, fields: &[(&str, Shape)]) -> String {
    let names: Vec<String> = fields.iter().map(|(f, _)| format!("`{f}`")).collect();
    match names.as_slice() {
        [] => format!("unknown field `{name}`, there are no fields"),
        [one] => format!("unknown field `{name}`, expected {one}"),
        [a, b] => format!("unknown field `{name}`, expected {a} or {b}"),
        _ => format!(
            "unknown field `{name}`, expected one of {}",
            names.join(", ")
        ),
    }
}

/// `text` with the `cuts` replaced by spaces (line breaks kept) and `{}` written at each of
/// `braces`. Each character becomes one character, so columns (counted in characters) hold.
fn blank(text: &str, cuts: &[std::ops::Range<usize>], braces: &[usize]) -> String {
    let mut cuts = cuts.to_vec();
    cuts.sort_by_key(|r| r.start);
    let mut cuts = cuts.into_iter().peekable();
    let mut current: Option<std::ops::Range<usize>> = None;
    let mut close_brace = false;
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        while current.as_ref().is_none_or(|r| r.end <= i) {
            match cuts.next_if(|r| r.start <= i) {
                Some(r) => current = Some(r),
                None => break,
            }
        }
        let in_cut = current.as_ref().is_some_and(|r| r.contains(&i));
        if !in_cut || c == '\n' || c == '\r' {
            out.push(c);
        } else if braces.contains(&i) {
            out.push('{');
            close_brace = true;
        } else if close_brace {
            out.push('}');
            close_brace = false;
        } else {
            out.push(' ');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Shape = Shape::Keys(&[
        ("a", Shape::Any),
        ("m", Shape::Keys(&[("x", Shape::Any), ("y", Shape::Any)])),
        (
            "l",
            Shape::List(&Shape::Keys(&[("x", Shape::Any), ("y", Shape::Any)])),
        ),
        (
            "n",
            Shape::Names(&Shape::Keys(&[("x", Shape::Any), ("y", Shape::Any)])),
        ),
    ]);

    /// Strips `text`, checks that lines are kept and that the result is YAML, and returns
    /// the stripped text and the findings as `line:column: message`.
    fn strip(text: &str) -> (String, Vec<String>) {
        let s = strip_unknown_keys(text, &SMALL);
        let lines = |t: &str| t.lines().map(|l| l.chars().count()).collect::<Vec<_>>();
        assert_eq!(lines(&s.text), lines(text), "{:?}", s.text);
        assert!(
            yaml_tree(&s.text).is_some() || text.is_empty(),
            "not YAML: {:?}",
            s.text
        );
        let found = s
            .unknown
            .iter()
            .map(|k| format!("{}:{}: {}", k.line, k.column, k.message))
            .collect();
        (s.text.into_owned(), found)
    }

    #[test]
    fn known_keys_leave_the_text_untouched() {
        let text =
            "a: 1\nm: { x: 1, y: [1, 2] }\nl:\n  - x: 1\n  - { y: 2 }\nn:\n  any: { x: 1 }\n";
        let s = strip_unknown_keys(text, &SMALL);
        assert!(s.unknown.is_empty());
        assert!(matches!(s.text, std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn every_unknown_key_is_reported_and_blanked() {
        let text = "a: 1\nbogus: 2\nm:\n  x: 1\n  z: { deep: [1, 2] }\n  y: 2\nl:\n  - x: 1\n    w: 3\nn:\n  free-name:\n    x: 1\n    v:\nlast: [1,\n  2]\n";
        let (out, found) = strip(text);
        assert_eq!(
            found,
            [
                "2:1: unknown field `bogus`, expected one of `a`, `m`, `l`, `n`",
                "5:3: unknown field `z`, expected `x` or `y`",
                "9:5: unknown field `w`, expected `x` or `y`",
                "13:5: unknown field `v`, expected `x` or `y`",
                "14:1: unknown field `last`, expected one of `a`, `m`, `l`, `n`",
            ]
        );
        assert_eq!(
            out,
            "a: 1\n        \nm:\n  x: 1\n                     \n  y: 2\nl:\n  - x: 1\n        \nn:\n  free-name:\n    x: 1\n      \n         \n    \n"
        );
    }

    #[test]
    fn flow_mappings_lose_one_comma_per_key() {
        let (out, found) = strip("m: { z: 1, x: 1, w: 2, y: 2, v: 3 }\n");
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(out, "m: {       x: 1,       y: 2       }\n");
        let (out, found) = strip("m: {z: 1}\nl: [{ w: [1, 2], v: {} }]\n");
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(out, "m: {    }\nl: [{                  }]\n");
    }

    #[test]
    fn a_block_mapping_left_empty_stays_a_mapping() {
        let (out, found) = strip("m:\n  z: 1\n  w:\n    - 1\nl:\n  - v: 1\n");
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(out, "m:\n  {}  \n    \n       \nl:\n  - {}  \n");
        let (out, _) = strip("bogus: 1\n");
        assert_eq!(out, "{}      \n");
    }

    #[test]
    fn columns_count_characters() {
        let (out, found) = strip("zé: ü\nm: { x: 1, «y»: 2 }\n");
        assert_eq!(
            found,
            [
                "1:1: unknown field `zé`, expected one of `a`, `m`, `l`, `n`",
                "2:12: unknown field `«y»`, expected `x` or `y`",
            ]
        );
        assert_eq!(out, "     \nm: { x: 1         }\n");
    }

    #[test]
    fn quoted_keys_and_crlf_line_ends() {
        let (out, found) = strip("a: 1\r\n\"bogus\": 2\r\nm: { 'z' : 1, x: 1 }\r\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(out, "a: 1\r\n          \r\nm: {          x: 1 }\r\n");
    }

    #[test]
    fn invalid_yaml_and_other_shapes_are_left_to_the_deserializer() {
        let s = strip_unknown_keys("a: [1\nbogus: 2\n", &SMALL);
        assert!(s.unknown.is_empty());
        assert_eq!(s.text, "a: [1\nbogus: 2\n");
        // A word where a mapping is expected, a mapping where a list is: not this pass's
        // business. Merge keys are the deserializer's too.
        let (out, found) = strip("m: word\nl: { x: 1 }\nn: [1]\n<<: { a: 1 }\n");
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(out, "m: word\nl: { x: 1 }\nn: [1]\n<<: { a: 1 }\n");
        let (out, found) = strip("");
        assert!(found.is_empty());
        assert_eq!(out, "");
    }
}
