//! Idempotency keys: the event id followed by `hash(event id, action name, rendered
//! parameters)`.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The key sent as `Idempotency-Key` and used to recognise an action that already
/// succeeded. `params` is hashed in its canonical serde_json form (object keys sorted), so
/// the same rendered parameters always give the same key.
///
/// The key is 64 hex digits: the event's id (32, a UUIDv7, so time-ordered) then the first
/// 128 bits of the SHA-256 (32). The time-ordered prefix keeps the store's indexes on the
/// key append-mostly: with a bare hash every new key lands on a random index page, and at a
/// few thousand actions a second that random page traffic was the largest part of what the
/// SQLite writer wrote per commit (BENCHMARKS.md, 2026-11-28 third pass).
pub fn idempotency_key(event_id: Uuid, action: &str, params: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(event_id.as_bytes());
    h.update([0u8]);
    h.update(action.as_bytes());
    h.update([0u8]);
    // serde_json's Map is a BTreeMap (no preserve_order feature), so this is canonical.
    h.update(params.to_string().as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(64);
    out.push_str(event_id.simple().encode_lower(&mut Uuid::encode_buffer()));
    for b in digest.iter().take(16) {
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable_and_sensitive_to_each_part() {
        let id = Uuid::from_u128(42);
        let p = serde_json::json!({"b": 1, "a": [1, 2]});
        let k1 = idempotency_key(id, "assign", &p);
        let k2 = idempotency_key(id, "assign", &serde_json::json!({"a": [1, 2], "b": 1}));
        assert_eq!(k1, k2);
        assert_eq!(k1.len(), 64);
        assert!(k1.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(k1.starts_with(&id.simple().to_string()));
        assert_ne!(k1, idempotency_key(Uuid::from_u128(43), "assign", &p));
        assert_ne!(k1, idempotency_key(id, "assign2", &p));
        assert_ne!(
            k1,
            idempotency_key(id, "assign", &serde_json::json!({"b": 2, "a": [1, 2]}))
        );
    }

    #[test]
    fn keys_sort_by_event_id() {
        let p = serde_json::json!({"x": 1});
        let earlier = idempotency_key(Uuid::from_u128(0x0100 << 64), "zzz", &p);
        let later = idempotency_key(Uuid::from_u128(0x0101 << 64), "aaa", &p);
        assert!(earlier < later, "{earlier} should sort before {later}");
    }
}
