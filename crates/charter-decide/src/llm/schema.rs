//! The answer schema built from a charter, and the validation of every answer.
//!
//! The schema is what structured-output modes send to the provider, and the same schema
//! (up to how nullable fields are written, below) validates what comes back, so a server
//! that ignores the schema (or a mode that only asks for "some JSON") still cannot smuggle
//! in a label or a field the charter does not declare.
//!
//! Shape: `{label: enum(labels), confidence: number 0..1, fields: {declared fields},
//! reason: string}`, every key required and no others allowed. Optional declared fields are
//! nullable (OpenAI's strict mode requires every property to be listed as required); a
//! `null` means "not found" and is dropped from the parsed answer.
//!
//! A nullable field is `anyOf: [<the field's schema>, {type: null}]`, not `type: [T, "null"]`
//! beside its `enum` or `pattern`: llama.cpp's schema-to-grammar converter (used by
//! llama-cpp-python's `json_object` mode, llama.cpp's server and Ollama) turns a list of
//! types into a plain union and drops the `enum` and `pattern` next to it, so the
//! constrained output could break them (SmolLM2-135M wrote `"urgency": "low,"` for an enum
//! `low|high`, twice, and escalated). Every branch of the `anyOf` keeps its constraints.
//! Answers are validated against the equivalent `type: [T, "null"]` form, whose errors
//! (`"low," is not one of "low", "high" or null`) make a clearer repair request.

use std::collections::BTreeMap;

use charter_core::config::{FieldSpec, FieldType};
use serde_json::{Map, Value, json};

/// Validation errors quoted in a repair request or an escalation reason.
const MAX_ERRORS: usize = 5;

/// The answer schema for `labels` and the declared `fields`, as sent to providers.
pub fn response_schema(labels: &[String], fields: &BTreeMap<String, FieldSpec>) -> Value {
    build_schema(labels, fields, Nullable::AnyOf)
}

/// How a nullable field is written: both forms accept the same values.
#[derive(Clone, Copy, PartialEq)]
enum Nullable {
    /// `anyOf: [<schema>, {type: null}]`: kept whole by grammar converters (sent).
    AnyOf,
    /// `type: [T, "null"]` (and `null` in the `enum`): clearer validation errors.
    TypeList,
}

fn build_schema(
    labels: &[String],
    fields: &BTreeMap<String, FieldSpec>,
    nullable: Nullable,
) -> Value {
    let mut props = Map::new();
    for (name, spec) in fields {
        props.insert(name.clone(), field_schema(spec, nullable));
    }
    let names: Vec<&String> = fields.keys().collect();
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["label", "confidence", "fields", "reason"],
        "properties": {
            "label": {"type": "string", "enum": labels},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "fields": {
                "type": "object",
                "additionalProperties": false,
                "required": names,
                "properties": props,
            },
            "reason": {"type": "string"},
        },
    })
}

fn field_schema(spec: &FieldSpec, nullable: Nullable) -> Value {
    let ty = match spec.kind {
        FieldType::String => "string",
        FieldType::Number => "number",
        FieldType::Integer => "integer",
        FieldType::Boolean => "boolean",
    };
    let type_list = !spec.required && nullable == Nullable::TypeList;
    let mut s = Map::new();
    s.insert(
        "type".into(),
        if type_list {
            json!([ty, "null"])
        } else {
            json!(ty)
        },
    );
    if let Some(p) = &spec.pattern {
        s.insert("pattern".into(), json!(p));
    }
    if !spec.enumeration.is_empty() {
        let mut values: Vec<Value> = spec.enumeration.iter().map(|v| json!(v)).collect();
        if type_list {
            values.push(Value::Null);
        }
        s.insert("enum".into(), Value::Array(values));
    }
    if spec.required || type_list {
        Value::Object(s)
    } else {
        json!({"anyOf": [Value::Object(s), {"type": "null"}]})
    }
}

/// An answer that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedAnswer {
    /// One of the charter's labels.
    pub label: String,
    /// In `0..=1`.
    pub confidence: f64,
    /// Declared fields the model filled (nulls dropped).
    pub fields: BTreeMap<String, Value>,
    pub reason: String,
}

/// Compiled answer schema plus the label list.
#[derive(Debug)]
pub struct AnswerValidator {
    /// Sent to providers ([`response_schema`]).
    schema: Value,
    /// Compiled from the equivalent `type: [T, "null"]` form.
    validator: jsonschema::Validator,
    labels: Vec<String>,
}

/// What identifies the validator [`AnswerValidator::new`] builds for `labels` and `fields`:
/// the text of the schema it compiles (the labels, in order, are its enum).
pub fn validator_key(labels: &[String], fields: &BTreeMap<String, FieldSpec>) -> String {
    build_schema(labels, fields, Nullable::TypeList).to_string()
}

impl AnswerValidator {
    /// Compiles the schema for `labels` and `fields`. Fails only if a declared pattern is not
    /// a valid regular expression (configuration validation already rejects those).
    pub fn new(
        labels: &[String],
        fields: &BTreeMap<String, FieldSpec>,
    ) -> Result<AnswerValidator, String> {
        let schema = response_schema(labels, fields);
        let validator =
            jsonschema::validator_for(&build_schema(labels, fields, Nullable::TypeList))
                .map_err(|e| e.to_string())?;
        Ok(AnswerValidator {
            schema,
            validator,
            labels: labels.to_vec(),
        })
    }

    /// The schema sent to the provider.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Parses and validates one answer. The error lists what is wrong, in a form fit to show
    /// the model in a repair request.
    pub fn parse(&self, text: &str) -> Result<ParsedAnswer, String> {
        let value = extract_json(text)?;
        let errors: Vec<String> = self
            .validator
            .iter_errors(&value)
            .take(MAX_ERRORS)
            .map(|e| {
                let ptr = e.instance_path().to_string();
                let ptr = if ptr.is_empty() { "/".to_string() } else { ptr };
                format!("{ptr}: {e}")
            })
            .collect();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        // The schema guarantees these shapes; the checks below are belt and braces.
        let label = value["label"].as_str().unwrap_or_default().to_string();
        if !self.labels.contains(&label) {
            return Err(format!("/label: {label:?} is not one of the labels"));
        }
        let confidence = value["confidence"]
            .as_f64()
            .filter(|c| (0.0..=1.0).contains(c))
            .ok_or("/confidence: expected a number between 0 and 1")?;
        let fields = value["fields"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ParsedAnswer {
            label,
            confidence,
            fields,
            reason: value["reason"].as_str().unwrap_or_default().to_string(),
        })
    }
}

/// The JSON object in a model's answer: the whole text, the inside of a Markdown code fence,
/// or the span from the first `{` to the last `}`. The error names the cause and where it
/// is (line and column in the answer, and the text there), so both the operator and the
/// repair request learn what to fix.
fn extract_json(text: &str) -> Result<Value, String> {
    let t = text.trim();
    let whole = serde_json::from_str::<Value>(t);
    if let Ok(v @ Value::Object(_)) = whole {
        return Ok(v);
    }
    let unfenced = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|s| s.strip_suffix("```"))
        .map(str::trim);
    if let Some(inner) = unfenced
        && let Ok(v @ Value::Object(_)) = serde_json::from_str(inner)
    {
        return Ok(v);
    }
    let span = t.find('{').zip(t.rfind('}')).filter(|(s, e)| s < e);
    let Some((start, end)) = span else {
        return Err(match whole {
            Ok(v) => format!(
                "the answer is not a JSON object: it is a JSON {}",
                json_type(&v)
            ),
            Err(_) => format!(
                "the answer is not a JSON object: it holds no `{{ ... }}` (it starts with {:?})",
                t.chars().take(60).collect::<String>()
            ),
        });
    };
    let inner = &t[start..=end];
    match serde_json::from_str::<Value>(inner) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(v) => Err(format!(
            "the answer is not a JSON object: it is a JSON {}",
            json_type(&v)
        )),
        Err(e) => {
            // serde_json counts lines and columns from 1 within the span; the span starts at
            // `start` of the trimmed answer.
            let prefix = &t[..start];
            let line = e.line() + prefix.matches('\n').count();
            let column = if e.line() == 1 {
                prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + e.column()
            } else {
                e.column()
            };
            // A raw line break is reported after it (column 0 of the next line): point at
            // the end of the line it breaks instead.
            let (line, column) = if column == 0 && line > 1 {
                let prev = t.split('\n').nth(line - 2).map_or(0, |l| l.chars().count());
                (line - 1, prev + 1)
            } else {
                (line, column)
            };
            Err(format!(
                "the answer is not a JSON object: {} at line {line} column {column} (near {:?})",
                json_cause(&e),
                near(t, line, column)
            ))
        }
    }
}

/// serde_json's message without its trailing position (given separately).
fn json_cause(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

/// Up to 20 characters either side of (1-based) `line`, `column` of `t`, on one line.
fn near(t: &str, line: usize, column: usize) -> String {
    let Some(l) = t.split('\n').nth(line.saturating_sub(1)) else {
        return String::new();
    };
    let chars: Vec<char> = l.chars().collect();
    let at = column.saturating_sub(1).min(chars.len());
    let from = at.saturating_sub(20);
    let to = (at + 20).min(chars.len());
    chars[from..to]
        .iter()
        .map(|c| if c.is_control() { ' ' } else { *c })
        .collect()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> BTreeMap<String, FieldSpec> {
        let mut f = BTreeMap::new();
        f.insert(
            "order_id".to_string(),
            FieldSpec {
                kind: FieldType::String,
                pattern: Some("^ORD-[0-9]+$".into()),
                enumeration: vec![],
                required: true,
                extractor: None,
            },
        );
        f.insert(
            "urgency".to_string(),
            FieldSpec {
                kind: FieldType::String,
                pattern: None,
                enumeration: vec!["low".into(), "high".into()],
                required: false,
                extractor: None,
            },
        );
        f
    }

    fn validator() -> AnswerValidator {
        AnswerValidator::new(&["billing".into(), "bug".into()], &fields()).unwrap()
    }

    #[test]
    fn valid_answer_parses_and_drops_nulls() {
        let a = validator()
            .parse(r#"{"label":"bug","confidence":0.8,"fields":{"order_id":"ORD-7","urgency":null},"reason":"crash"}"#)
            .unwrap();
        assert_eq!(a.label, "bug");
        assert_eq!(a.confidence, 0.8);
        assert_eq!(a.fields.len(), 1);
        assert_eq!(a.fields["order_id"], "ORD-7");
    }

    #[test]
    fn fenced_answer_is_accepted() {
        let a = validator()
            .parse("```json\n{\"label\":\"billing\",\"confidence\":1,\"fields\":{\"order_id\":\"ORD-1\",\"urgency\":\"low\"},\"reason\":\"\"}\n```")
            .unwrap();
        assert_eq!(a.fields["urgency"], "low");
    }

    #[test]
    fn nullable_fields_keep_their_enum_and_pattern_in_an_any_of() {
        let mut f = fields();
        f.get_mut("order_id").unwrap().required = false;
        let v = AnswerValidator::new(&["billing".into(), "bug".into()], &f).unwrap();
        let props = &v.schema()["properties"]["fields"]["properties"];
        assert_eq!(
            props["urgency"],
            json!({"anyOf": [{"type": "string", "enum": ["low", "high"]}, {"type": "null"}]})
        );
        assert_eq!(
            props["order_id"],
            json!({"anyOf": [{"type": "string", "pattern": "^ORD-[0-9]+$"}, {"type": "null"}]})
        );
        let answer = |order: &str, urgency: &str| {
            format!(
                r#"{{"label":"bug","confidence":0.5,"fields":{{"order_id":{order},"urgency":{urgency}}},"reason":""}}"#
            )
        };
        let a = v.parse(&answer("null", "null")).unwrap();
        assert!(a.fields.is_empty());
        let a = v.parse(&answer(r#""ORD-9""#, r#""high""#)).unwrap();
        assert_eq!(a.fields["urgency"], "high");
        // What SmolLM2-135M wrote when the enum sat beside `type: [string, null]`.
        let e = v.parse(&answer("null", r#""low,""#)).unwrap_err();
        assert!(
            e.contains(r#"/fields/urgency: "low," is not one of"#),
            "{e}"
        );
        let e = v.parse(&answer(r#""12""#, "null")).unwrap_err();
        assert!(e.contains("/fields/order_id"), "{e}");
    }

    #[test]
    fn every_kind_of_violation_is_reported() {
        let v = validator();
        let e = v
            .parse(r#"{"label":"refund_everything","confidence":0.9,"fields":{"order_id":"ORD-1","urgency":null},"reason":""}"#)
            .unwrap_err();
        assert!(e.contains("/label"), "{e}");
        let e = v
            .parse(r#"{"label":"bug","confidence":1.5,"fields":{"order_id":"ORD-1","urgency":null},"reason":""}"#)
            .unwrap_err();
        assert!(e.contains("/confidence"), "{e}");
        let e = v
            .parse(r#"{"label":"bug","confidence":0.5,"fields":{"order_id":"12","urgency":null},"reason":""}"#)
            .unwrap_err();
        assert!(e.contains("/fields/order_id"), "{e}");
        let e = v
            .parse(r#"{"label":"bug","confidence":0.5,"fields":{"urgency":"high"},"reason":""}"#)
            .unwrap_err();
        assert!(
            e.contains("order_id"),
            "a missing required field is an error: {e}"
        );
        let e = v
            .parse(r#"{"label":"bug","confidence":0.5,"fields":{"order_id":"ORD-1","urgency":null,"action":"delete"},"reason":""}"#)
            .unwrap_err();
        assert!(e.contains("action"), "undeclared fields are rejected: {e}");
        let e = v.parse("I think it is a bug").unwrap_err();
        assert!(e.contains("not a JSON object"), "{e}");
    }

    #[test]
    fn a_raw_newline_in_a_string_is_named_with_its_position() {
        let e = validator()
            .parse("{\"label\":\"bug\",\"confidence\":0.8,\"fields\":{},\"reason\":\"two\nlines\"}")
            .unwrap_err();
        assert!(e.contains("control character"), "{e}");
        assert!(e.contains("line 1 column"), "{e}");
        assert!(e.contains("reason"), "the text near the position: {e}");
        let e = validator().parse("\"just a string\"").unwrap_err();
        assert!(e.contains("it is a JSON string"), "{e}");
    }
}
