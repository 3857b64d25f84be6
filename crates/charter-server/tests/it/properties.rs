//! Property tests (bounded case counts) of webhook body parsing: any bytes under any
//! content type are answered without a panic, with a well-formed error or a JSON object;
//! JSON and form bodies round-trip.

use std::collections::BTreeMap;

use charter_server::ingest::parse_body;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

fn config() -> Config {
    Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    }
}

fn headers(content_type: Option<&str>) -> BTreeMap<String, String> {
    content_type
        .map(|c| [("content-type".to_string(), c.to_string())].into())
        .unwrap_or_default()
}

const TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/x-www-form-urlencoded"),
    Some("APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8"),
    Some("text/plain"),
    Some(""),
    Some("application/vnd.api+json"),
];

/// JSON values a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_body_is_parsed_or_refused_with_a_reason(
        content_type in prop::sample::select(TYPES),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            "[{}\\[\\]\":,0-9a-z%&=+ ]{0,64}".prop_map(String::into_bytes),
        ],
    ) {
        let form = content_type
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
        match parse_body(&headers(content_type), &body) {
            Ok(v) => {
                if form {
                    prop_assert!(v.is_object(), "{}", v);
                } else {
                    // Exactly what serde_json reads from the bytes.
                    let expected: Value = serde_json::from_slice(&body).unwrap();
                    prop_assert_eq!(v, expected);
                }
            }
            Err(reason) => {
                prop_assert!(!form, "a form body is never refused: {}", reason);
                prop_assert!(
                    reason.starts_with("body is not valid JSON: ")
                        || reason.starts_with("unsupported content type `"),
                    "{}", reason
                );
                prop_assert!(!reason.contains('\n'), "{}", reason);
            }
        }
    }

    #[test]
    fn json_bodies_round_trip(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        let parsed = parse_body(&headers(Some("application/json")), &body).unwrap();
        prop_assert_eq!(parsed, value);
    }

    #[test]
    fn form_bodies_round_trip(
        fields in prop::collection::btree_map("[^\u{0}]{1,12}", any::<String>(), 0..6),
    ) {
        // `payload` holds JSON when it parses as JSON (Slack's callbacks); not tested here.
        let fields: BTreeMap<String, String> =
            fields.into_iter().filter(|(k, _)| k != "payload").collect();
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let parsed = parse_body(
            &headers(Some("application/x-www-form-urlencoded")),
            body.as_bytes(),
        )
        .unwrap();
        let expected: serde_json::Map<String, Value> = fields
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        prop_assert_eq!(parsed, Value::Object(expected));
    }
}
