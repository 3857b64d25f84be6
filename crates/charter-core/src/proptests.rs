//! Property tests (proptest, bounded case counts so they run in about a second): signature
//! verification accepts what was signed and refuses any change to the body, a signature
//! or a signed header; URL templates keep every inserted value inside its segment.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::template::Template;
use crate::verify::{self, GenericHmac, HmacAlgorithm, SignatureEncoding, VerifySpec};

/// Cases per property: enough to find the rare byte, few enough for CI.
const CASES: u32 = 256;

fn config() -> Config {
    Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    }
}

const NOW: i64 = 1_750_000_000;
const WINDOW: Duration = Duration::from_secs(300);

/// Every scheme the verifier knows, with a timestamp window where it has one.
fn specs() -> Vec<VerifySpec> {
    let generic = |encoding, algorithm, timestamp: bool, prefix: Option<&str>| {
        VerifySpec::Hmac(GenericHmac {
            header: "X-Sig".into(),
            algorithm,
            encoding,
            prefix: prefix.map(str::to_string),
            timestamp_header: timestamp.then(|| "X-Ts".to_string()),
            signed: if timestamp {
                "{timestamp}.{body}".into()
            } else {
                "{body}".into()
            },
            tolerance: WINDOW,
        })
    };
    vec![
        VerifySpec::StandardWebhooks { tolerance: WINDOW },
        VerifySpec::Stripe { tolerance: WINDOW },
        VerifySpec::Github,
        VerifySpec::Slack { tolerance: WINDOW },
        VerifySpec::Shopify,
        VerifySpec::Zendesk { tolerance: WINDOW },
        VerifySpec::HubspotV3 {
            tolerance: WINDOW,
            url: "https://charter.example/hooks/hs".into(),
        },
        generic(
            SignatureEncoding::Hex,
            HmacAlgorithm::Sha256,
            true,
            Some("sha256="),
        ),
        generic(
            SignatureEncoding::Base64,
            HmacAlgorithm::Sha512,
            false,
            None,
        ),
        generic(SignatureEncoding::Hex, HmacAlgorithm::Sha1, false, None),
    ]
}

fn headers_of(pairs: &[(String, String)]) -> verify::Headers {
    pairs.iter().cloned().collect()
}

/// A printable ASCII character (or space) that differs from `c` in more than case.
fn other_char(c: char, pick: u8) -> char {
    let alphabet: Vec<char> = (0x20u8..0x7f).map(char::from).collect();
    let start = usize::from(pick) % alphabet.len();
    alphabet
        .iter()
        .cycle()
        .skip(start)
        .take(alphabet.len())
        .copied()
        .find(|x| !x.eq_ignore_ascii_case(&c))
        .unwrap_or('!')
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn what_was_signed_is_accepted(
        spec in prop::sample::select(specs()),
        secret in "[!-~]{1,40}",
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let signed = verify::sign(&spec, &secret, &body, NOW, "msg_1").unwrap();
        let headers = headers_of(&signed);
        prop_assert_eq!(verify::verify(&spec, std::slice::from_ref(&secret), &headers, &body, NOW), Ok(()));
        // Within the window on either side, and with the secret among others (rotation).
        let others = vec!["old-secret".to_string(), secret];
        prop_assert_eq!(verify::verify(&spec, &others, &headers, &body, NOW + 299), Ok(()));
    }

    #[test]
    fn any_changed_body_byte_is_refused(
        spec in prop::sample::select(specs()),
        secret in "[!-~]{1,40}",
        body in prop::collection::vec(any::<u8>(), 1..512),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let headers = headers_of(&verify::sign(&spec, &secret, &body, NOW, "msg_1").unwrap());
        let mut tampered = body.clone();
        tampered[at.index(body.len())] ^= flip;
        prop_assert!(verify::verify(&spec, &[secret], &headers, &tampered, NOW).is_err());
    }

    #[test]
    fn any_changed_character_of_a_signed_header_is_refused(
        spec in prop::sample::select(specs()),
        secret in "[!-~]{1,40}",
        body in prop::collection::vec(any::<u8>(), 0..256),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        pick in any::<u8>(),
    ) {
        let signed = verify::sign(&spec, &secret, &body, NOW, "msg_1").unwrap();
        // The headers the scheme reads: signatures, timestamps, signed delivery ids.
        let read: Vec<&(String, String)> =
            signed.iter().filter(|(k, _)| verify::reads_header(&spec, k)).collect();
        prop_assert!(!read.is_empty());
        let (name, value) = read[which.index(read.len())];
        let chars: Vec<char> = value.chars().collect();
        let i = at.index(chars.len());
        let mut changed = chars.clone();
        changed[i] = other_char(chars[i], pick);
        let mut headers = headers_of(&signed);
        headers.insert(name.clone(), changed.into_iter().collect());
        let out = verify::verify(&spec, &[secret], &headers, &body, NOW);
        prop_assert!(out.is_err(), "{} = {:?} accepted", name, headers[name]);
    }

    #[test]
    fn a_signature_made_with_another_secret_is_refused(
        spec in prop::sample::select(specs()),
        secret in "[a-z]{8,20}",
        other in "[A-Z]{8,20}",
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let forged = headers_of(&verify::sign(&spec, &other, &body, NOW, "msg_1").unwrap());
        prop_assert_eq!(
            verify::verify(&spec, &[secret], &forged, &body, NOW),
            Err(verify::VerifyError::BadSignature)
        );
    }

    #[test]
    fn a_timestamp_outside_the_window_is_refused(
        spec in prop::sample::select(specs()),
        secret in "[!-~]{1,40}",
        body in prop::collection::vec(any::<u8>(), 0..128),
        skew in 301i64..100_000,
        later in any::<bool>(),
    ) {
        // Schemes without a signed timestamp (GitHub, Shopify, untimed HMAC) accept replays.
        let timed = !matches!(spec, VerifySpec::Github | VerifySpec::Shopify)
            && !matches!(&spec, VerifySpec::Hmac(g) if g.timestamp_header.is_none());
        let headers = headers_of(&verify::sign(&spec, &secret, &body, NOW, "msg_1").unwrap());
        let now = if later { NOW + skew } else { NOW - skew };
        let out = verify::verify(&spec, &[secret], &headers, &body, now);
        if timed {
            let stale = matches!(out, Err(verify::VerifyError::StaleTimestamp { .. }));
            prop_assert!(stale, "{:?}", out);
        } else {
            prop_assert_eq!(out, Ok(()));
        }
    }

    #[test]
    fn url_templates_keep_each_value_in_its_segment(value in any::<String>()) {
        let ctx = serde_json::json!({"payload": {"v": value.clone()}});
        let t = Template::parse_url("/things/{{ payload.v }}?q={{ payload.v }}").unwrap();
        let rendered = t.render(&ctx).unwrap();
        let (path, query) = rendered.split_once('?').unwrap();
        let segment = path.strip_prefix("/things/").unwrap();
        let q = query.strip_prefix("q=").unwrap();
        prop_assert_eq!(segment, q);
        // Only unreserved characters and `%XX` escapes: no `/`, `?`, `#`, `\`, `%` of its own.
        let bytes = segment.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                prop_assert!(i + 2 < bytes.len() + 1 && bytes[i + 1].is_ascii_hexdigit()
                    && bytes[i + 2].is_ascii_hexdigit(), "{}", segment);
                i += 3;
            } else {
                prop_assert!(bytes[i].is_ascii_alphanumeric() || b"-._~".contains(&bytes[i]),
                    "{}", segment);
                i += 1;
            }
        }
        // Decoding gives the value back: nothing lost, nothing added.
        prop_assert_eq!(decode(segment), value.as_bytes());
        // A value of only dots stays itself (`.`/`..` are unreserved); the request builder
        // refuses such segments.
        if value == "." || value == ".." {
            prop_assert_eq!(segment, value.as_str());
        }
    }

    #[test]
    fn safe_path_values_never_hold_a_dot_segment_or_leave_the_path(
        parts in prop::collection::vec("[a-z./%?#]{0,6}", 1..5),
    ) {
        let value = parts.join("/");
        let ctx = serde_json::json!({"payload": {"v": value.clone()}});
        let t = Template::parse_url("/repos/{{ payload.v | safe_path }}/x").unwrap();
        match t.render(&ctx) {
            Ok(rendered) => {
                let inner = rendered.strip_prefix("/repos/").unwrap().strip_suffix("/x").unwrap();
                for segment in inner.split('/') {
                    prop_assert!(segment != "." && segment != ".." && !segment.is_empty(),
                        "{}", rendered);
                    prop_assert!(!segment.contains(['?', '#']), "{}", rendered);
                }
            }
            Err(e) => {
                let bad = value.split('/').any(|s| s.is_empty() || s == "." || s == "..");
                prop_assert!(bad, "{} refused: {}", value, e);
            }
        }
    }
}

fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
            out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}
