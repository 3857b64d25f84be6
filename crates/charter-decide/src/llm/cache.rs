//! Exact-match response cache.
//!
//! The key is a SHA-256 over the provider name, the model and the full request body exactly
//! as it is sent (system message, prompt after redaction, schema, parameters), so only a
//! byte-identical request hits: a prompt that includes per-delivery values (ids,
//! timestamps) never repeats. Each entry lives for the stage's `cache_ttl` (0: the cache is
//! neither read nor written). Only answers
//! that passed validation are stored. [`MemoryCache`] lives in the process (per node); the
//! server uses a store-backed cache shared by all nodes (`charter-server`'s `StoreCache`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// What a cache operation returns: a boxed future, so that the trait stays object-safe.
pub type CacheFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where validated answers are kept for identical requests. A cache that fails answers
/// "not found" (and logs): the cache can slow a decision down, never break it.
pub trait ResponseCache: Send + Sync {
    /// The answer text stored under `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<String>>;
    /// Stores `value` under `key` for `ttl`.
    fn put<'a>(&'a self, key: &'a str, value: String, ttl: Duration) -> CacheFuture<'a, ()>;
}

/// The cache key of a request: hex SHA-256 of provider, model and body.
pub fn cache_key(provider: &str, model: &str, body: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    for part in [provider, model] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(body.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// An in-memory cache holding at most `capacity` entries; the oldest entry is evicted first.
#[derive(Debug)]
pub struct MemoryCache {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Value and expiry.
    map: HashMap<String, (String, Instant)>,
    order: VecDeque<String>,
}

impl MemoryCache {
    pub fn new(capacity: usize) -> MemoryCache {
        MemoryCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Entries::default()),
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|e| e.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryCache {
    /// 10,000 entries.
    fn default() -> Self {
        MemoryCache::new(10_000)
    }
}

impl ResponseCache for MemoryCache {
    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<String>> {
        let v = self.get_now(key);
        Box::pin(async move { v })
    }

    fn put<'a>(&'a self, key: &'a str, value: String, ttl: Duration) -> CacheFuture<'a, ()> {
        self.put_for(key, value, ttl);
        Box::pin(async {})
    }
}

impl MemoryCache {
    /// The entry under `key`, if any and not expired.
    pub fn get_now(&self, key: &str) -> Option<String> {
        let e = self.inner.lock().ok()?;
        e.map
            .get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(v, _)| v.clone())
    }

    /// Stores `value` under `key` for a week.
    pub fn put_now(&self, key: &str, value: String) {
        self.put_for(key, value, Duration::from_secs(7 * 24 * 3600));
    }

    /// Stores `value` under `key` for `ttl`, evicting the oldest entries beyond the
    /// capacity.
    pub fn put_for(&self, key: &str, value: String, ttl: Duration) {
        let Ok(mut e) = self.inner.lock() else { return };
        let until = Instant::now() + ttl;
        if e.map.insert(key.to_string(), (value, until)).is_none() {
            e.order.push_back(key.to_string());
        }
        while e.map.len() > self.capacity {
            match e.order.pop_front() {
                Some(old) => {
                    e.map.remove(&old);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_and_keys_differ_by_every_part() {
        let c = MemoryCache::new(2);
        c.put_now("a", "1".into());
        c.put_now("b", "2".into());
        c.put_now("c", "3".into());
        assert_eq!(c.get_now("a"), None);
        assert_eq!(c.get_now("c").as_deref(), Some("3"));
        assert_eq!(c.len(), 2);
        let body = serde_json::json!({"x": 1});
        let k = cache_key("p", "m", &body);
        assert_eq!(k, cache_key("p", "m", &body));
        assert_ne!(k, cache_key("q", "m", &body));
        assert_ne!(k, cache_key("p", "n", &body));
        assert_ne!(k, cache_key("p", "m", &serde_json::json!({"x": 2})));
    }
}
