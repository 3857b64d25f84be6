//! Filling and checking a decision's declared fields (`decide.extract`).
//!
//! A field with an extractor (`regex:` over the decision text or a value of the event, or a
//! `template:` over the event) is filled by it; when the extractor finds nothing, the value
//! the deciding stage gave (an LLM's structured output, a rule's `fields`) is kept. Every
//! value is then converted to the declared type and checked against `pattern` and `enum`;
//! a value that fails is dropped with a note. A `required` field left without a valid value
//! means the decision cannot be acted on: the caller escalates with [`FieldsOutcome::missing`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

use crate::config::{Extractor, FieldSpec, FieldType};

/// What [`complete_fields`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldsOutcome {
    /// One line per field whose value was extracted, converted or dropped.
    pub notes: Vec<String>,
    /// Required fields with no valid value, each with the reason (`order_id: no match for ...`).
    pub missing: Vec<String>,
}

/// The value at a dotted path of the evaluation context.
fn lookup<'v>(ctx: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut cur = ctx;
    for p in path {
        cur = match cur {
            Value::Object(m) => m.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Runs one extractor. `Ok(None)`: nothing found; `Err`: it could not run.
fn run_extractor(ex: &Extractor, text: &str, ctx: &Value) -> Result<Option<String>, String> {
    match ex {
        Extractor::Regex { regex, input } => {
            let owned;
            let haystack = match input {
                None => text,
                Some(path) => match lookup(ctx, path) {
                    None | Some(Value::Null) => return Ok(None),
                    Some(Value::String(s)) => s.as_str(),
                    Some(other) => {
                        owned = other.to_string();
                        owned.as_str()
                    }
                },
            };
            Ok(regex.first_capture(haystack).map(str::to_string))
        }
        Extractor::Template(t) => {
            let s = t.render(ctx).map_err(|e| e.to_string())?;
            let s = s.trim();
            Ok((!s.is_empty()).then(|| s.to_string()))
        }
    }
}

/// Converts `v` to the declared type (text from extractors and rule templates is parsed).
fn convert(v: Value, kind: FieldType) -> Result<Value, String> {
    match (kind, v) {
        (FieldType::String, Value::String(s)) => Ok(Value::String(s)),
        (FieldType::String, v @ (Value::Number(_) | Value::Bool(_))) => {
            Ok(Value::String(v.to_string()))
        }
        (FieldType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Value::Number(n)),
        (FieldType::Integer, Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(|i| json!(i))
            .map_err(|_| format!("{s:?} is not an integer")),
        (FieldType::Number, Value::Number(n)) => Ok(Value::Number(n)),
        (FieldType::Number, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| json!(f))
            .ok_or_else(|| format!("{s:?} is not a number")),
        (FieldType::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
        (FieldType::Boolean, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("{s:?} is not a boolean")),
        },
        (k, v) => Err(format!("{v} is not of type {k:?}").to_lowercase()),
    }
}

/// Field patterns kept compiled (a charter declares a handful; the bound only matters when
/// reloads keep changing them).
const PATTERN_CAPACITY: usize = 256;

/// The compiled check of a field's `pattern`: built the first time the pattern is used and
/// kept, not compiled again for every value checked.
fn pattern_validator(p: &str) -> Result<Arc<jsonschema::Validator>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    // A poisoned lock only means another thread panicked while holding it: the map is
    // still a valid cache.
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(p) {
        return Ok(Arc::clone(v));
    }
    let schema = json!({"type": "string", "pattern": p});
    let validator = Arc::new(
        jsonschema::validator_for(&schema)
            .map_err(|e| format!("pattern `{p}` cannot be compiled: {e}"))?,
    );
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= PATTERN_CAPACITY {
        map.clear();
    }
    map.insert(p.to_string(), Arc::clone(&validator));
    Ok(validator)
}

/// Checks `pattern` and `enum` (the same regex dialect as the LLM answer's schema).
fn check(v: &Value, spec: &FieldSpec) -> Result<(), String> {
    if let (Some(p), Value::String(s)) = (&spec.pattern, v) {
        let validator = pattern_validator(p)?;
        if !validator.is_valid(v) {
            return Err(format!("{s:?} does not match pattern `{p}`"));
        }
    }
    if !spec.enumeration.is_empty() {
        let as_text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if !spec.enumeration.contains(&as_text) {
            return Err(format!("{v} is not one of {}", spec.enumeration.join(", ")));
        }
    }
    Ok(())
}

/// Fills `fields` from the extractors of `spec`, converts and checks every declared value
/// (dropping those that fail), and lists required fields left without a valid value. `text` is the event's decision text; `ctx` the evaluation context.
pub fn complete_fields(
    spec: &BTreeMap<String, FieldSpec>,
    fields: &mut BTreeMap<String, Value>,
    text: &str,
    ctx: &Value,
) -> FieldsOutcome {
    let mut out = FieldsOutcome::default();
    for (name, f) in spec {
        let mut why_missing = "no stage gave a value".to_string();
        if let Some(ex) = &f.extractor {
            match run_extractor(ex, text, ctx) {
                Ok(Some(v)) => {
                    out.notes.push(format!("field `{name}` extracted: {v:?}"));
                    fields.insert(name.clone(), Value::String(v));
                }
                Ok(None) => {
                    why_missing = match ex {
                        Extractor::Regex { regex, input } => format!(
                            "regex `{}` found no match in {}",
                            regex.source(),
                            input
                                .as_ref()
                                .map_or("the event text".to_string(), |p| format!(
                                    "`{}`",
                                    p.join(".")
                                ))
                        ),
                        Extractor::Template(t) => {
                            format!("template `{}` rendered empty", t.source())
                        }
                    };
                }
                Err(e) => {
                    out.notes
                        .push(format!("field `{name}`: extractor failed: {e}"));
                    why_missing = format!("its extractor failed: {e}");
                }
            }
        }
        match fields.remove(name) {
            None | Some(Value::Null) => {}
            Some(v) => match convert(v, f.kind).and_then(|v| check(&v, f).map(|()| v)) {
                Ok(v) => {
                    fields.insert(name.clone(), v);
                    continue;
                }
                Err(e) => {
                    out.notes.push(format!("field `{name}` dropped: {e}"));
                    why_missing = format!("its value was rejected: {e}");
                }
            },
        }
        if f.required {
            out.missing.push(format!("`{name}` ({why_missing})"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CompiledRegex;
    use crate::template::Template;

    fn spec(kind: FieldType, required: bool, extractor: Option<Extractor>) -> FieldSpec {
        FieldSpec {
            kind,
            pattern: None,
            enumeration: vec![],
            required,
            extractor,
        }
    }

    fn regex(r: &str, input: Option<&str>) -> Option<Extractor> {
        Some(Extractor::Regex {
            regex: CompiledRegex::new(r).expect("test regex"),
            input: input.map(|i| i.split('.').map(str::to_string).collect()),
        })
    }

    #[test]
    fn regex_and_template_fill_and_convert() {
        let mut s = BTreeMap::new();
        s.insert(
            "order".to_string(),
            FieldSpec {
                pattern: Some("^ORD-[0-9]+$".into()),
                ..spec(FieldType::String, true, regex(r"order (ORD-\d+)", None))
            },
        );
        s.insert(
            "qty".to_string(),
            spec(
                FieldType::Integer,
                false,
                regex(r"(\d+) items", Some("payload.note")),
            ),
        );
        s.insert(
            "customer".to_string(),
            spec(
                FieldType::String,
                true,
                Some(Extractor::Template(
                    Template::parse("{{ payload.customer.id }}").expect("template"),
                )),
            ),
        );
        let ctx = json!({"payload": {"note": "send 3 items", "customer": {"id": "C-9"}}});
        let mut fields = BTreeMap::new();
        let o = complete_fields(&s, &mut fields, "about order ORD-42, please", &ctx);
        assert!(o.missing.is_empty(), "{o:?}");
        assert_eq!(fields["order"], "ORD-42");
        assert_eq!(fields["qty"], 3);
        assert_eq!(fields["customer"], "C-9");
    }

    #[test]
    fn missing_required_and_invalid_values_are_reported() {
        let mut s = BTreeMap::new();
        s.insert(
            "order".to_string(),
            spec(FieldType::String, true, regex(r"(ORD-\d+)", None)),
        );
        s.insert(
            "urgency".to_string(),
            FieldSpec {
                enumeration: vec!["low".into(), "high".into()],
                ..spec(FieldType::String, true, None)
            },
        );
        s.insert("note".to_string(), spec(FieldType::String, false, None));
        let mut fields = BTreeMap::new();
        fields.insert("urgency".to_string(), json!("extreme"));
        let o = complete_fields(&s, &mut fields, "no order here", &json!({}));
        assert_eq!(o.missing.len(), 2, "{o:?}");
        assert!(o.missing[0].contains("`order`") && o.missing[0].contains("found no match"));
        assert!(o.missing[1].contains("`urgency`") && o.missing[1].contains("not one of"));
        assert!(
            fields.is_empty(),
            "the invalid value is dropped: {fields:?}"
        );
    }

    #[test]
    fn a_stage_value_is_kept_when_the_extractor_finds_nothing() {
        let mut s = BTreeMap::new();
        s.insert(
            "order".to_string(),
            spec(FieldType::String, true, regex(r"(ORD-\d+)", None)),
        );
        let mut fields = BTreeMap::new();
        fields.insert("order".to_string(), json!("ORD-7"));
        let o = complete_fields(&s, &mut fields, "nothing", &json!({}));
        assert!(o.missing.is_empty());
        assert_eq!(fields["order"], "ORD-7");
    }

    /// A field's pattern is compiled once and reused for every value it checks.
    #[test]
    fn a_field_pattern_is_compiled_once() {
        let p = "^ORD-[0-9]+ 1b9e$";
        let first = pattern_validator(p).expect("pattern");
        let again = pattern_validator(p).expect("pattern");
        assert!(Arc::ptr_eq(&first, &again));
        assert!(first.is_valid(&json!("ORD-12 1b9e")));
        assert!(!again.is_valid(&json!("ORD-x 1b9e")));
        assert!(pattern_validator("(").is_err());
    }
}
