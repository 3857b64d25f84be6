//! Labelled examples: the training and evaluation data of the embedded classifier.
//!
//! Two formats are accepted:
//!
//! * **CSV** with a header row. The text column is named `text`; the label column is named
//!   `label` or `category` (case-insensitive). Other columns are ignored. Quoting follows
//!   RFC 4180: a field may be wrapped in double quotes, a quote inside it is written twice,
//!   and a quoted field may contain commas and line breaks. Lines may end in `\n` or `\r\n`.
//! * **JSONL**: one JSON object per line with string members `text` and `label` (or
//!   `category`). Blank lines are skipped.
//!
//! Errors carry the 1-based line number where the offending record starts.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One labelled example: a text and the label a human gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The text to classify.
    pub text: String,
    /// The label it should get.
    pub label: String,
}

impl Example {
    /// Convenience constructor.
    pub fn new(text: impl Into<String>, label: impl Into<String>) -> Self {
        Example {
            text: text.into(),
            label: label.into(),
        }
    }
}

/// The file format of a set of examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExampleFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl ExampleFormat {
    /// Guess the format from a file name's extension (`.csv`, `.jsonl`, `.ndjson`),
    /// case-insensitively. Returns `None` for anything else.
    pub fn from_path(path: &str) -> Option<ExampleFormat> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(ExampleFormat::Csv),
            "jsonl" | "ndjson" => Some(ExampleFormat::Jsonl),
            _ => None,
        }
    }
}

/// Why a set of examples could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExamplesError {
    /// The CSV input has no header row.
    #[error("line 1: missing CSV header (expected columns `text` and `label` or `category`)")]
    MissingHeader,
    /// The CSV header lacks a required column.
    #[error("line 1: CSV header has no `{column}` column (found: {found})")]
    MissingColumn {
        /// The column that is missing (`text`, or `label`/`category`).
        column: &'static str,
        /// The header's columns, comma-separated.
        found: String,
    },
    /// A quoted CSV field is never closed.
    #[error("line {line}: quoted field is not closed before the end of the input")]
    UnterminatedQuote {
        /// Line where the record with the open quote starts.
        line: usize,
    },
    /// Characters follow a closing quote without a comma or line break.
    #[error("line {line}: unexpected character {found:?} after a closing quote")]
    TextAfterQuote {
        /// Line of the offending character.
        line: usize,
        /// The character found.
        found: char,
    },
    /// A CSV record has fewer fields than the header requires.
    #[error("line {line}: record has {found} field(s), the header has {expected}")]
    FieldCount {
        /// Line where the record starts.
        line: usize,
        /// Number of fields in the header.
        expected: usize,
        /// Number of fields in this record.
        found: usize,
    },
    /// A JSONL line is not valid JSON or not an object.
    #[error("line {line}: invalid JSON: {message}")]
    Json {
        /// The line.
        line: usize,
        /// What the JSON parser reported.
        message: String,
    },
    /// A required member is missing or not a string.
    #[error("line {line}: `{field}` is missing or not a string")]
    MissingField {
        /// The line.
        line: usize,
        /// `text` or `label`.
        field: &'static str,
    },
    /// The text or the label is empty (after trimming white space).
    #[error("line {line}: `{field}` is empty")]
    EmptyField {
        /// The line.
        line: usize,
        /// `text` or `label`.
        field: &'static str,
    },
}

/// Parse labelled examples in the given format. See the module documentation.
///
/// Labels are trimmed of surrounding white space; texts are kept as written. Empty texts or
/// labels are errors, so a mislabelled export fails loudly instead of training on blanks.
pub fn parse_examples(
    contents: &str,
    format: ExampleFormat,
) -> Result<Vec<Example>, ExamplesError> {
    let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
    match format {
        ExampleFormat::Csv => parse_csv(contents),
        ExampleFormat::Jsonl => parse_jsonl(contents),
    }
}

/// One CSV record: its fields and the line it starts on.
struct Record {
    line: usize,
    fields: Vec<String>,
}

/// Split CSV text into records (RFC 4180). Blank lines outside quotes are skipped.
fn csv_records(input: &str) -> Result<Vec<Record>, ExamplesError> {
    let mut records = Vec::new();
    let mut chars = input.chars().peekable();
    let mut line = 1usize;
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut record_line = 1usize;
    // Whether the current record has any content (so blank lines can be skipped).
    let mut started = false;

    while let Some(c) = chars.next() {
        match c {
            '"' if field.is_empty() => {
                // Quoted field.
                started = true;
                let quote_line = record_line;
                loop {
                    match chars.next() {
                        None => return Err(ExamplesError::UnterminatedQuote { line: quote_line }),
                        Some('"') => {
                            if chars.peek() == Some(&'"') {
                                chars.next();
                                field.push('"');
                            } else {
                                break;
                            }
                        }
                        Some(ch) => {
                            if ch == '\n' {
                                line += 1;
                            }
                            field.push(ch);
                        }
                    }
                }
                // After the closing quote: a delimiter, line end or end of input.
                match chars.peek() {
                    None | Some(',') | Some('\n') | Some('\r') => {}
                    Some(&other) => {
                        return Err(ExamplesError::TextAfterQuote { line, found: other });
                    }
                }
            }
            ',' => {
                started = true;
                fields.push(std::mem::take(&mut field));
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if started {
                    fields.push(std::mem::take(&mut field));
                    records.push(Record {
                        line: record_line,
                        fields: std::mem::take(&mut fields),
                    });
                }
                started = false;
                line += 1;
                record_line = line;
            }
            other => {
                started = true;
                field.push(other);
            }
        }
    }
    if started {
        fields.push(field);
        records.push(Record {
            line: record_line,
            fields,
        });
    }
    Ok(records)
}

fn parse_csv(input: &str) -> Result<Vec<Example>, ExamplesError> {
    let mut records = csv_records(input)?.into_iter();
    let header = records.next().ok_or(ExamplesError::MissingHeader)?;
    let names: Vec<String> = header
        .fields
        .iter()
        .map(|f| f.trim().to_ascii_lowercase())
        .collect();
    let found = names.join(",");
    let text_col =
        names
            .iter()
            .position(|n| n == "text")
            .ok_or_else(|| ExamplesError::MissingColumn {
                column: "text",
                found: found.clone(),
            })?;
    let label_col = names
        .iter()
        .position(|n| n == "label")
        .or_else(|| names.iter().position(|n| n == "category"))
        .ok_or(ExamplesError::MissingColumn {
            column: "label",
            found,
        })?;
    let needed = text_col.max(label_col) + 1;

    let mut out = Vec::new();
    for mut record in records {
        if record.fields.len() < needed {
            return Err(ExamplesError::FieldCount {
                line: record.line,
                expected: names.len(),
                found: record.fields.len(),
            });
        }
        let label = std::mem::take(&mut record.fields[label_col]);
        let text = std::mem::take(&mut record.fields[text_col]);
        out.push(checked(record.line, text, label)?);
    }
    Ok(out)
}

fn parse_jsonl(input: &str) -> Result<Vec<Example>, ExamplesError> {
    let mut out = Vec::new();
    for (i, raw) in input.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| ExamplesError::Json {
                line,
                message: e.to_string(),
            })?;
        let Some(obj) = value.as_object() else {
            return Err(ExamplesError::Json {
                line,
                message: "expected a JSON object".to_string(),
            });
        };
        let text = obj
            .get("text")
            .and_then(|v| v.as_str())
            .ok_or(ExamplesError::MissingField {
                line,
                field: "text",
            })?;
        let label = obj
            .get("label")
            .or_else(|| obj.get("category"))
            .and_then(|v| v.as_str())
            .ok_or(ExamplesError::MissingField {
                line,
                field: "label",
            })?;
        out.push(checked(line, text.to_string(), label.to_string())?);
    }
    Ok(out)
}

fn checked(line: usize, text: String, label: String) -> Result<Example, ExamplesError> {
    if text.trim().is_empty() {
        return Err(ExamplesError::EmptyField {
            line,
            field: "text",
        });
    }
    let label = label.trim();
    if label.is_empty() {
        return Err(ExamplesError::EmptyField {
            line,
            field: "label",
        });
    }
    Ok(Example {
        text,
        label: label.to_string(),
    })
}
