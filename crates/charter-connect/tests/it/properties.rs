//! Property tests (bounded case counts): a request rendered from a URL template, whatever
//! the payload value, never leaves its connector's base path; with the default encoding it
//! stays in its own segment, and a value marked `safe` is refused rather than let out.

use std::time::Duration;

use charter_connect::{ConnectError, ResolvedHttpConnector, target_url};
use charter_core::template::Template;
use proptest::prelude::*;
use proptest::test_runner::Config;

fn connector() -> ResolvedHttpConnector {
    ResolvedHttpConnector {
        name: "crm".into(),
        base_url: "https://api.example.com/v2/".into(),
        headers: vec![],
        auth: None,
        timeout: Duration::from_secs(5),
        allow_private: false,
    }
}

fn config() -> Config {
    Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Values built from the characters traversals are made of, plus anything at all.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "[./\\\\%2eEfF?#@:a]{0,12}",
        prop::collection::vec(
            prop::sample::select(vec![
                "..", ".", "/", "%2e", "%2E", "%2f", "\\", "?", "#", "a", "%25", "//"
            ]),
            0..8
        )
        .prop_map(|parts| parts.concat()),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn an_encoded_value_stays_in_its_segment_or_is_refused(value in hostile()) {
        let t = Template::parse_url("/things/{{ payload.v }}/notes?x={{ payload.v }}").unwrap();
        let target = t.render(&serde_json::json!({"payload": {"v": value.clone()}})).unwrap();
        match target_url(Some(&connector()), &target) {
            Ok(url) => {
                prop_assert_eq!(url.host_str(), Some("api.example.com"));
                let path = url.path();
                let inner = path
                    .strip_prefix("/v2/things/")
                    .and_then(|p| p.strip_suffix("/notes"));
                prop_assert!(inner.is_some_and(|s| !s.contains('/')), "{}", url);
                prop_assert!(url.fragment().is_none(), "{}", url);
                // The query holds the one parameter the template wrote.
                prop_assert_eq!(url.query_pairs().count(), 1, "{}", url);
            }
            Err(e) => {
                // Only dot segments (as written or once decoded) are refused.
                let refused = matches!(e, ConnectError::DotSegment { .. });
                prop_assert!(refused, "{:?}", e);
                let decoded = value.replace("%2e", ".").replace("%2E", ".");
                prop_assert!(decoded.contains('.'), "{} refused: {:?}", value, e);
            }
        }
    }

    #[test]
    fn a_safe_value_never_leaves_the_base_path(value in hostile()) {
        let t = Template::parse_url("/things/{{ payload.v | safe }}").unwrap();
        let target = t.render(&serde_json::json!({"payload": {"v": value}})).unwrap();
        if let Ok(url) = target_url(Some(&connector()), &target) {
            prop_assert_eq!(url.host_str(), Some("api.example.com"));
            prop_assert_eq!(url.port_or_known_default(), Some(443));
            prop_assert!(url.path().starts_with("/v2/"), "{}", url);
        }
    }
}
