//! Human corrections as training examples: export as CSV, or merge the new ones into a
//! charter's examples file.

use super::*;

/// One CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The corrections as CSV `text,label` (header first).
pub fn corrections_csv(corrections: &[Value]) -> String {
    let mut out = String::from("text,label\n");
    for c in corrections {
        out.push_str(&csv_field(text(&c["text"])));
        out.push(',');
        out.push_str(&csv_field(text(&c["label"])));
        out.push('\n');
    }
    out
}

/// A charter's corrections (human-decided escalations) from the server.
async fn corrections(server: &ServerArgs, charter: &str) -> Result<Vec<Value>, ExitCode> {
    let path = format!(
        "/api/v1/corrections{}",
        query(&[("charter", Some(charter.to_string()))])
    );
    let v = call(server, reqwest::Method::GET, &path, None).await?;
    Ok(v["corrections"].as_array().cloned().unwrap_or_default())
}

/// The rows of `corrections` that `existing` (an examples CSV) does not hold yet, with the
/// same text and label: what `--merge-into` appends.
pub fn new_examples(existing: &str, corrections: &[Value]) -> Result<Vec<Value>, String> {
    let known: std::collections::HashSet<(String, String)> = if existing.trim().is_empty() {
        Default::default()
    } else {
        charter_decide::parse_examples(existing, charter_decide::ExampleFormat::Csv)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|e| (e.text, e.label))
            .collect()
    };
    let mut seen = known;
    Ok(corrections
        .iter()
        .filter(|c| {
            seen.insert((
                text(&c["text"]).to_string(),
                text(&c["label"]).trim().to_string(),
            ))
        })
        .cloned()
        .collect())
}

/// `charter export-corrections CHARTER --merge-into FILE`: append the human-decided cases
/// the examples file does not hold yet (created with its header when missing).
pub async fn merge_corrections(server: &ServerArgs, charter: &str, file: &Path) -> ExitCode {
    let items = match corrections(server, charter).await {
        Ok(items) => items,
        Err(code) => return code,
    };
    let existing = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let fresh = match new_examples(&existing, &items) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let mut text = existing.clone();
    if text.trim().is_empty() {
        text = corrections_csv(&fresh);
    } else {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        // Without the header line.
        let rows = corrections_csv(&fresh);
        text.push_str(rows.split_once('\n').map_or("", |(_, rest)| rest));
    }
    if let Err(e) = std::fs::write(file, text) {
        eprintln!("error: cannot write {}: {e}", file.display());
        return ExitCode::from(1);
    }
    eprintln!(
        "added {} of {} correction(s) to {}",
        fresh.len(),
        items.len(),
        file.display()
    );
    ExitCode::SUCCESS
}

/// `charter export-corrections CHARTER [--out FILE]`: human-decided cases as labelled
/// examples (CSV `text,label`) for the next `charter train`.
pub async fn export_corrections(
    server: &ServerArgs,
    charter: &str,
    out: Option<&Path>,
) -> ExitCode {
    let items = match corrections(server, charter).await {
        Ok(items) => items,
        Err(code) => return code,
    };
    let csv = corrections_csv(&items);
    match out {
        Some(file) => {
            if let Err(e) = std::fs::write(file, csv) {
                eprintln!("error: cannot write {}: {e}", file.display());
                return ExitCode::from(1);
            }
            eprintln!("wrote {} correction(s) to {}", items.len(), file.display());
        }
        None => {
            print!("{csv}");
            eprintln!("{} correction(s)", items.len());
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_corrections_the_examples_lack_are_merged() {
        let existing = "text,label\nrefund please,billing\n\"a, b\",other\n";
        let corrections = vec![
            serde_json::json!({"text": "refund please", "label": "billing"}),
            serde_json::json!({"text": "refund please", "label": "other"}),
            serde_json::json!({"text": "a, b", "label": "other"}),
            serde_json::json!({"text": "new case", "label": "bug"}),
            serde_json::json!({"text": "new case", "label": "bug"}),
        ];
        let fresh = new_examples(existing, &corrections).unwrap();
        assert_eq!(
            fresh,
            vec![
                serde_json::json!({"text": "refund please", "label": "other"}),
                serde_json::json!({"text": "new case", "label": "bug"}),
            ]
        );
        assert_eq!(
            new_examples("", &corrections).unwrap().len(),
            4,
            "repeats within one export are merged once"
        );
        assert!(new_examples("text,label\n,billing\n", &corrections).is_err());
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let rows = vec![
            serde_json::json!({"text": "plain text", "label": "billing"}),
            serde_json::json!({"text": "a, \"quoted\"\nline", "label": "bug"}),
        ];
        assert_eq!(
            corrections_csv(&rows),
            "text,label\nplain text,billing\n\"a, \"\"quoted\"\"\nline\",bug\n"
        );
    }
}
