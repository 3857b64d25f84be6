//! Tests of webhook signature verification: every scheme signed and checked, replays,
//! tolerance windows, malformed headers and delivery ids.

use super::*;

const NOW: i64 = 1_700_000_000;

fn headers(pairs: &[(String, String)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

fn hdrs(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn secrets(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn generic(
    algorithm: HmacAlgorithm,
    encoding: SignatureEncoding,
    prefix: Option<&str>,
    timestamp_header: Option<&str>,
    signed: &str,
) -> VerifySpec {
    VerifySpec::Hmac(GenericHmac {
        header: "x-signature".to_string(),
        algorithm,
        encoding,
        prefix: prefix.map(str::to_string),
        timestamp_header: timestamp_header.map(str::to_string),
        signed: signed.to_string(),
        tolerance: DEFAULT_TOLERANCE,
    })
}

/// One spec of every kind that signs, with a secret it accepts.
fn all_presets() -> Vec<(VerifySpec, &'static str)> {
    vec![
        (
            VerifySpec::StandardWebhooks {
                tolerance: DEFAULT_TOLERANCE,
            },
            "whsec_dGVzdC1rZXktMDEyMzQ1Njc4OQ==",
        ),
        (
            VerifySpec::Stripe {
                tolerance: DEFAULT_TOLERANCE,
            },
            "whsec_stripe_test",
        ),
        (VerifySpec::Github, "gh-secret"),
        (VerifySpec::Shopify, "shpss_secret"),
        (
            VerifySpec::Zendesk {
                tolerance: DEFAULT_TOLERANCE,
            },
            "zendesk-signing-secret",
        ),
        (
            VerifySpec::HubspotV3 {
                tolerance: DEFAULT_TOLERANCE,
                url: "https://charter.acme.example/hooks/hubspot".to_string(),
            },
            "hubspot-client-secret",
        ),
        (
            VerifySpec::Slack {
                tolerance: DEFAULT_TOLERANCE,
            },
            "slack-secret",
        ),
        (
            generic(
                HmacAlgorithm::Sha256,
                SignatureEncoding::Hex,
                Some("sha256="),
                None,
                "",
            ),
            "generic-secret",
        ),
        (
            generic(
                HmacAlgorithm::Sha1,
                SignatureEncoding::Base64,
                None,
                Some("x-timestamp"),
                "{timestamp}:{body}",
            ),
            "generic-secret",
        ),
        (
            generic(
                HmacAlgorithm::Sha512,
                SignatureEncoding::Hex,
                None,
                None,
                "{body}",
            ),
            "generic-secret",
        ),
    ]
}

/// A header naming the delivery that the scheme does not sign (all but Standard
/// Webhooks' `webhook-id`).
fn unsigned_delivery_id(spec: &VerifySpec, name: &str) -> bool {
    Some(name) == delivery_id_header(spec) && name != SW_ID
}

fn is_timestamped(spec: &VerifySpec) -> bool {
    match spec {
        VerifySpec::StandardWebhooks { .. }
        | VerifySpec::Stripe { .. }
        | VerifySpec::Slack { .. }
        | VerifySpec::Zendesk { .. }
        | VerifySpec::HubspotV3 { .. } => true,
        VerifySpec::Hmac(g) => g.timestamp_header.is_some(),
        VerifySpec::None | VerifySpec::Github | VerifySpec::Shopify => false,
    }
}

#[test]
fn every_preset_round_trips() {
    let body = br#"{"hello":"world"}"#;
    for (spec, secret) in all_presets() {
        let signed = sign(&spec, secret, body, NOW, "msg_1").unwrap();
        assert!(!signed.is_empty(), "{spec:?} produced no headers");
        let h = headers(&signed);
        assert_eq!(
            verify(&spec, &secrets(&[secret]), &h, body, NOW),
            Ok(()),
            "{spec:?}"
        );
        // Signature headers named by signature_headers() are among those produced.
        for name in signature_headers(&spec) {
            if name != GITHUB_LEGACY_SIGNATURE {
                assert!(h.contains_key(&name), "{spec:?} lacks {name}");
            }
        }
    }
}

#[test]
fn every_preset_rejects_wrong_secret_and_tampered_body() {
    let body = br#"{"amount":100}"#;
    for (spec, secret) in all_presets() {
        let h = headers(&sign(&spec, secret, body, NOW, "msg_1").unwrap());
        assert_eq!(
            verify(&spec, &secrets(&["some-other-secret"]), &h, body, NOW),
            Err(VerifyError::BadSignature),
            "wrong secret accepted by {spec:?}"
        );
        assert_eq!(
            verify(&spec, &secrets(&[secret]), &h, br#"{"amount":900}"#, NOW),
            Err(VerifyError::BadSignature),
            "tampered body accepted by {spec:?}"
        );
    }
}

#[test]
fn verification_reads_each_header_signing_writes_and_no_other() {
    let body = b"payload";
    for (spec, secret) in all_presets() {
        let signed = sign(&spec, secret, body, NOW, "msg_1").unwrap();
        // Only the headers verification reads, as the webhook path copies them.
        let read: Vec<(String, String)> = signed
            .iter()
            .filter(|(name, _)| reads_header(&spec, name))
            .cloned()
            .collect();
        assert_eq!(
            verify(&spec, &secrets(&[secret]), &headers(&read), body, NOW),
            Ok(()),
            "{spec:?}"
        );
        for (name, _) in &signed {
            // The delivery id identifies a delivery for dedupe; it is not verified
            // (except by Standard Webhooks, which signs it).
            assert_eq!(
                reads_header(&spec, name),
                !unsigned_delivery_id(&spec, name),
                "{spec:?} {name}"
            );
        }
        assert!(!reads_header(&spec, "content-type"), "{spec:?}");
    }
    assert!(!reads_header(&VerifySpec::None, SW_ID));
}

#[test]
fn every_preset_reports_each_missing_header() {
    let body = b"payload";
    for (spec, secret) in all_presets() {
        let signed = sign(&spec, secret, body, NOW, "msg_1").unwrap();
        for (name, _) in &signed {
            if unsigned_delivery_id(&spec, name) {
                continue; // identifies the delivery, not needed to verify it
            }
            let mut h = headers(&signed);
            h.remove(name);
            assert_eq!(
                verify(&spec, &secrets(&[secret]), &h, body, NOW),
                Err(VerifyError::MissingHeader(name.clone())),
                "{spec:?} without {name}"
            );
        }
    }
}

#[test]
fn timestamped_presets_reject_stale_and_future_deliveries() {
    let body = b"payload";
    let tol = DEFAULT_TOLERANCE.as_secs() as i64;
    for (spec, secret) in all_presets().into_iter().filter(|(s, _)| is_timestamped(s)) {
        let s = secrets(&[secret]);
        let signed_at = NOW;
        let h = headers(&sign(&spec, secret, body, signed_at, "msg_1").unwrap());
        // At the edges of the window: accepted.
        assert_eq!(verify(&spec, &s, &h, body, NOW + tol), Ok(()), "{spec:?}");
        assert_eq!(verify(&spec, &s, &h, body, NOW - tol), Ok(()), "{spec:?}");
        // Received long after it was signed: stale.
        assert_eq!(
            verify(&spec, &s, &h, body, NOW + tol + 1),
            Err(VerifyError::StaleTimestamp {
                timestamp: NOW,
                now: NOW + tol + 1,
                tolerance_secs: tol as u64
            }),
            "{spec:?}"
        );
        // Signed in the future: also rejected.
        assert!(
            matches!(
                verify(&spec, &s, &h, body, NOW - tol - 1),
                Err(VerifyError::StaleTimestamp { .. })
            ),
            "{spec:?}"
        );
    }
}

#[test]
fn github_has_no_timestamp_window() {
    let h = headers(&sign(&VerifySpec::Github, "k", b"x", NOW, "d").unwrap());
    assert_eq!(
        verify(
            &VerifySpec::Github,
            &secrets(&["k"]),
            &h,
            b"x",
            NOW + 86_400 * 365
        ),
        Ok(())
    );
}

#[test]
fn rotation_accepts_any_configured_secret() {
    for (spec, secret) in all_presets() {
        let h = headers(&sign(&spec, secret, b"body", NOW, "msg_1").unwrap());
        let rotated = secrets(&["old-secret-no-longer-used", secret]);
        assert_eq!(
            verify(&spec, &rotated, &h, b"body", NOW),
            Ok(()),
            "{spec:?}"
        );
        let reversed = secrets(&[secret, "old-secret-no-longer-used"]);
        assert_eq!(
            verify(&spec, &reversed, &h, b"body", NOW),
            Ok(()),
            "{spec:?}"
        );
    }
}

#[test]
fn no_secret_is_an_error_and_none_accepts_everything() {
    let spec = VerifySpec::Github;
    assert_eq!(
        verify(&spec, &[], &Headers::new(), b"x", NOW),
        Err(VerifyError::NoSecret)
    );
    assert_eq!(
        verify(&VerifySpec::None, &[], &Headers::new(), b"x", NOW),
        Ok(())
    );
    assert!(
        sign(&VerifySpec::None, "k", b"x", NOW, "d")
            .unwrap()
            .is_empty()
    );
    assert!(signature_headers(&VerifySpec::None).is_empty());
}

// --- Known vectors, computed independently with Python's hmac module. ---

#[test]
fn standard_webhooks_known_vector() {
    // key = b"test-key-0123456789"; message = b'msg_2Kx.1700000000.{"type":"ping"}'
    let spec = VerifySpec::StandardWebhooks {
        tolerance: DEFAULT_TOLERANCE,
    };
    let body = br#"{"type":"ping"}"#;
    let h = hdrs(&[
        ("webhook-id", "msg_2Kx"),
        ("webhook-timestamp", "1700000000"),
        (
            "webhook-signature",
            "v1,AAAAbm90LXRoaXMtb25lAAAAAAAAAAAAAAAAAAAAAAA= v1,N3Fc3iu0NEKsl9AWavbFXO22VHE3OfyvEh3CUaCCs6M=",
        ),
    ]);
    let with_prefix = secrets(&["whsec_dGVzdC1rZXktMDEyMzQ1Njc4OQ=="]);
    assert_eq!(verify(&spec, &with_prefix, &h, body, NOW), Ok(()));
    // The same key given as raw bytes (no whsec_ prefix).
    let raw = secrets(&["test-key-0123456789"]);
    assert_eq!(verify(&spec, &raw, &h, body, NOW), Ok(()));
    // sign() reproduces the vector.
    let signed = sign(&spec, &with_prefix[0], body, NOW, "msg_2Kx").unwrap();
    assert!(signed.contains(&(
        "webhook-signature".to_string(),
        "v1,N3Fc3iu0NEKsl9AWavbFXO22VHE3OfyvEh3CUaCCs6M=".to_string()
    )));
}

#[test]
fn standard_webhooks_rejects_bad_whsec_secret_and_unversioned_signatures() {
    let spec = VerifySpec::StandardWebhooks {
        tolerance: DEFAULT_TOLERANCE,
    };
    let h = hdrs(&[
        ("webhook-id", "msg_2Kx"),
        ("webhook-timestamp", "1700000000"),
        (
            "webhook-signature",
            "v1,N3Fc3iu0NEKsl9AWavbFXO22VHE3OfyvEh3CUaCCs6M=",
        ),
    ]);
    assert!(matches!(
        verify(&spec, &secrets(&["whsec_!!!not base64"]), &h, b"{}", NOW),
        Err(VerifyError::InvalidSecret(_))
    ));
    assert!(check_secret(&spec, "whsec_!!!").is_err());
    assert!(check_secret(&spec, "whsec_dGVzdA==").is_ok());
    let mut h2 = h.clone();
    h2.insert("webhook-signature".into(), "v2,abc".into());
    assert!(matches!(
        verify(&spec, &secrets(&["whsec_dGVzdA=="]), &h2, b"{}", NOW),
        Err(VerifyError::Malformed(_))
    ));
    let mut h3 = h;
    h3.insert("webhook-timestamp".into(), "yesterday".into());
    assert!(matches!(
        verify(&spec, &secrets(&["whsec_dGVzdA=="]), &h3, b"{}", NOW),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn stripe_known_vector_with_several_v1_and_upper_case_hex() {
    let spec = VerifySpec::Stripe {
        tolerance: DEFAULT_TOLERANCE,
    };
    let body = br#"{"id":"evt_1"}"#;
    let good = "3826e3088bee80f3dc0258d293c6e80aaa38f598f828286de1d92ca0fd2d1e44";
    let header = format!("t=1700000000,v1={},v1={good},v0=deadbeef", "00".repeat(32));
    let h = hdrs(&[("stripe-signature", &header)]);
    let s = secrets(&["whsec_stripe_test"]);
    assert_eq!(verify(&spec, &s, &h, body, NOW), Ok(()));
    let upper = hdrs(&[(
        "stripe-signature",
        &format!("t=1700000000,v1={}", good.to_ascii_uppercase()),
    )]);
    assert_eq!(verify(&spec, &s, &upper, body, NOW), Ok(()));
    let no_t = hdrs(&[("stripe-signature", &format!("v1={good}"))]);
    assert!(matches!(
        verify(&spec, &s, &no_t, body, NOW),
        Err(VerifyError::Malformed(_))
    ));
    let no_v1 = hdrs(&[("stripe-signature", "t=1700000000,v0=abcd")]);
    assert!(matches!(
        verify(&spec, &s, &no_v1, body, NOW),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn github_known_vector_prefix_and_hex_case() {
    // The example from GitHub's webhook documentation.
    let spec = VerifySpec::Github;
    let s = secrets(&["It's a Secret to Everybody"]);
    let hex = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let ok = hdrs(&[("x-hub-signature-256", &format!("sha256={hex}"))]);
    assert_eq!(verify(&spec, &s, &ok, b"Hello, World!", NOW), Ok(()));
    let upper = hdrs(&[(
        "x-hub-signature-256",
        &format!("sha256={}", hex.to_ascii_uppercase()),
    )]);
    assert_eq!(verify(&spec, &s, &upper, b"Hello, World!", NOW), Ok(()));
    // Without the `sha256=` prefix the header is malformed.
    let bare = hdrs(&[("x-hub-signature-256", hex)]);
    assert!(matches!(
        verify(&spec, &s, &bare, b"Hello, World!", NOW),
        Err(VerifyError::Malformed(_))
    ));
    // Truncated signature: no match (never a prefix comparison).
    let short = hdrs(&[("x-hub-signature-256", &format!("sha256={}", &hex[..32]))]);
    assert_eq!(
        verify(&spec, &s, &short, b"Hello, World!", NOW),
        Err(VerifyError::BadSignature)
    );
    let not_hex = hdrs(&[("x-hub-signature-256", "sha256=zz")]);
    assert!(matches!(
        verify(&spec, &s, &not_hex, b"Hello, World!", NOW),
        Err(VerifyError::Malformed(_))
    ));
    assert_eq!(delivery_id_header(&spec), Some("x-github-delivery"));
    assert_eq!(
        signature_headers(&spec),
        vec![
            "x-hub-signature-256".to_string(),
            "x-hub-signature".to_string()
        ]
    );
}

#[test]
fn slack_known_vector() {
    let spec = VerifySpec::Slack {
        tolerance: DEFAULT_TOLERANCE,
    };
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J";
    let h = hdrs(&[
        ("x-slack-request-timestamp", "1531420618"),
        (
            "x-slack-signature",
            "v0=bca5eef5dd737ed259b428b18cd24f679baa18c3fc5f1cb2a6ac9f03e717969a",
        ),
    ]);
    let s = secrets(&["8f742231b10e8888abcd99yyyzzz85a5"]);
    assert_eq!(verify(&spec, &s, &h, body, 1_531_420_618 + 10), Ok(()));
    assert!(matches!(
        verify(&spec, &s, &h, body, NOW),
        Err(VerifyError::StaleTimestamp { .. })
    ));
}

#[test]
fn generic_known_vectors() {
    // HMAC-SHA1, base64, over "{timestamp}:{body}".
    let spec = generic(
        HmacAlgorithm::Sha1,
        SignatureEncoding::Base64,
        None,
        Some("x-timestamp"),
        "{timestamp}:{body}",
    );
    let h = hdrs(&[
        ("x-signature", "DtUQPcuefYAZOIjoatmDzaiZhzo="),
        ("x-timestamp", "1700000000"),
    ]);
    let s = secrets(&["generic-secret"]);
    assert_eq!(verify(&spec, &s, &h, b"hello", NOW), Ok(()));

    // HMAC-SHA512, hex (upper case accepted), with a prefix.
    let hex = "d0c1a76d1880047f2449108e53f40b7163120fe0b2ae7cdb9e6f144956b42aecb26f3708d5d5468717d529f3888cc07ec323e636c415b0e1ddcfe4fd65e71a47";
    let spec = generic(
        HmacAlgorithm::Sha512,
        SignatureEncoding::Hex,
        Some("sha512="),
        None,
        "{body}",
    );
    let h = hdrs(&[(
        "x-signature",
        &format!("sha512={}", hex.to_ascii_uppercase()),
    )]);
    assert_eq!(verify(&spec, &s, &h, b"hello", NOW), Ok(()));
    let missing_prefix = hdrs(&[("x-signature", hex)]);
    assert!(matches!(
        verify(&spec, &s, &missing_prefix, b"hello", NOW),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn generic_pattern_substitutes_once_and_keeps_other_braces() {
    let g = GenericHmac {
        header: "x-sig".into(),
        algorithm: HmacAlgorithm::Sha256,
        encoding: SignatureEncoding::Hex,
        prefix: None,
        timestamp_header: Some("x-ts".into()),
        signed: "v1:{timestamp}:{other}:{body}".into(),
        tolerance: DEFAULT_TOLERANCE,
    };
    let msg = generic_message(&g, Some("42"), b"a{timestamp}b").unwrap();
    assert_eq!(msg, b"v1:42:{other}:a{timestamp}b".to_vec());
    let no_ts = GenericHmac {
        timestamp_header: None,
        ..g
    };
    assert!(matches!(
        generic_message(&no_ts, None, b"x"),
        Err(VerifyError::Malformed(_))
    ));
}

// Expected signatures below were computed independently (Python's hmac and base64).

#[test]
fn shopify_known_vector_and_no_timestamp_window() {
    let body = br#"{"id":820982911946154508}"#;
    let h = hdrs(&[(
        "x-shopify-hmac-sha256",
        "jqbalbO3Z8mDmrF2/+wzM3KYvbgqzVBF969vgiIy80I=",
    )]);
    let s = secrets(&["shpss_secret"]);
    assert_eq!(verify(&VerifySpec::Shopify, &s, &h, body, NOW), Ok(()));
    assert_eq!(
        verify(&VerifySpec::Shopify, &s, &h, body, NOW + 86_400 * 365),
        Ok(())
    );
    let bad = hdrs(&[("x-shopify-hmac-sha256", "not base64!")]);
    assert_eq!(
        verify(&VerifySpec::Shopify, &s, &bad, body, NOW),
        Err(VerifyError::Malformed(
            "x-shopify-hmac-sha256: invalid base64".into()
        ))
    );
}

#[test]
fn zendesk_known_vector_signs_the_rfc3339_timestamp_then_the_body() {
    let spec = VerifySpec::Zendesk {
        tolerance: DEFAULT_TOLERANCE,
    };
    let body = br#"{"ticket":{"id":35436}}"#;
    let s = secrets(&["zendesk-signing-secret"]);
    let h = hdrs(&[
        (
            "x-zendesk-webhook-signature",
            "IUo6C8KEb5koU9O+ZEAvc0setURSRpYRWEX3B6YVb5I=",
        ),
        (
            "x-zendesk-webhook-signature-timestamp",
            "2023-11-14T22:13:20Z",
        ),
    ]);
    assert_eq!(verify(&spec, &s, &h, body, NOW), Ok(()));
    // What `sign` writes is the same time.
    let signed = sign(&spec, "zendesk-signing-secret", body, NOW, "inv").unwrap();
    assert!(signed.contains(&(
        "x-zendesk-webhook-signature-timestamp".to_string(),
        "2023-11-14T22:13:20Z".to_string()
    )));
    let mut unix = h.clone();
    unix.insert(
        "x-zendesk-webhook-signature-timestamp".into(),
        NOW.to_string(),
    );
    assert_eq!(
        verify(&spec, &s, &unix, body, NOW),
        Err(VerifyError::Malformed(
            "x-zendesk-webhook-signature-timestamp: expected an RFC 3339 time".into()
        ))
    );
}

#[test]
fn rfc3339_times_with_fractions_and_offsets() {
    assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(NOW));
    assert_eq!(parse_rfc3339("2023-11-14T22:13:20.250Z"), Some(NOW));
    assert_eq!(parse_rfc3339("2023-11-15T00:13:20+02:00"), Some(NOW));
    assert_eq!(parse_rfc3339("2023-11-14T17:13:20-05:00"), Some(NOW));
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    for bad in [
        "",
        "2023-11-14",
        "2023-11-14T22:13:20",
        "2023-13-14T22:13:20Z",
        "2023-11-14T24:13:20Z",
        "2023-11-14T22:13:20.Z",
        "2023-11-14T22:13:20+0200",
        "2023-1a-14T22:13:20Z",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
    assert_eq!(
        crate::calendar::rfc3339_of_unix(NOW),
        "2023-11-14T22:13:20Z"
    );
    assert_eq!(crate::calendar::rfc3339_of_unix(-1), "1969-12-31T23:59:59Z");
}

#[test]
fn hubspot_known_vector_signs_method_url_query_body_and_millis() {
    let spec = VerifySpec::HubspotV3 {
        tolerance: DEFAULT_TOLERANCE,
        url: "https://charter.acme.example/hooks/hubspot".to_string(),
    };
    let body = br#"[{"eventId":1}]"#;
    let s = secrets(&["hubspot-client-secret"]);
    // `%40` and `%2a` are decoded before signing; `%25` is not on HubSpot's list.
    let mut h = hdrs(&[
        (
            "x-hubspot-signature-v3",
            "5ItmNLfimMOrsk0k5SOhbxorX8a4CDYfDYbqVBg3avA=",
        ),
        ("x-hubspot-request-timestamp", "1700000000123"),
        (QUERY, "portal=62515&email=ops%40acme.example&x=%25%2a"),
    ]);
    assert_eq!(verify(&spec, &s, &h, body, NOW), Ok(()));
    // The query is part of what is signed.
    h.insert(
        QUERY.into(),
        "portal=62516&email=ops%40acme.example&x=%25%2a".into(),
    );
    assert_eq!(
        verify(&spec, &s, &h, body, NOW),
        Err(VerifyError::BadSignature)
    );
    // Milliseconds are compared to the window in seconds.
    let fresh = headers(&sign(&spec, "hubspot-client-secret", body, NOW, "-").unwrap());
    assert_eq!(
        fresh.get("x-hubspot-request-timestamp").map(String::as_str),
        Some("1700000000000")
    );
    assert_eq!(verify(&spec, &s, &fresh, body, NOW + 300), Ok(()));
    assert!(matches!(
        verify(&spec, &s, &fresh, body, NOW + 301),
        Err(VerifyError::StaleTimestamp { .. })
    ));
    assert_eq!(
        hubspot_uri(
            "https://h.example/p",
            Some("a=%3A%2F%3F%40%21%24%27%28%29%2A%2C%3B%20")
        ),
        "https://h.example/p?a=:/?@!$'()*,;%20"
    );
    assert_eq!(
        hubspot_uri("https://h.example/p", Some("")),
        "https://h.example/p"
    );
}

#[test]
fn delivery_id_headers() {
    let sw = VerifySpec::StandardWebhooks {
        tolerance: DEFAULT_TOLERANCE,
    };
    assert_eq!(delivery_id_header(&sw), Some("webhook-id"));
    let signed = sign(&sw, "k", b"x", NOW, "msg_77").unwrap();
    assert!(signed.contains(&("webhook-id".to_string(), "msg_77".to_string())));
    assert_eq!(
        delivery_id_header(&VerifySpec::Stripe {
            tolerance: DEFAULT_TOLERANCE
        }),
        None
    );
    assert_eq!(delivery_id_header(&VerifySpec::None), None);
    assert_eq!(
        delivery_id_header(&VerifySpec::Shopify),
        Some("x-shopify-webhook-id")
    );
    assert_eq!(
        delivery_id_header(&VerifySpec::Zendesk {
            tolerance: DEFAULT_TOLERANCE
        }),
        Some("x-zendesk-webhook-invocation-id")
    );
}

#[test]
fn error_messages_do_not_leak_secrets() {
    let spec = VerifySpec::StandardWebhooks {
        tolerance: DEFAULT_TOLERANCE,
    };
    let err = check_secret(&spec, "whsec_SUPER%SECRET").unwrap_err();
    assert!(!err.to_string().contains("SUPER"), "{err}");
    assert_eq!(
        check_secret(&VerifySpec::Github, ""),
        Err(VerifyError::InvalidSecret("empty secret".to_string()))
    );
}
