//! Keyset paging for the store's listings.
//!
//! Every listing has a natural order (events and the audit log newest first, approvals and
//! escalations oldest first, as a queue is worked) and can be read in the other order with
//! [`Sort`]. A page starts strictly after a key of the previous page's last row (its
//! `after`), so paging costs one index seek whatever the depth, and rows written between two
//! pages neither repeat nor shift the next page. Totals come from the `count_*` methods, with
//! the same filter (the key and the limit aside).

use uuid::Uuid;

/// The order of a listing. `None` in a filter means the listing's natural order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    NewestFirst,
    OldestFirst,
}

impl Sort {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "newest" | "newest_first" | "desc" => Some(Sort::NewestFirst),
            "oldest" | "oldest_first" | "asc" => Some(Sort::OldestFirst),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sort::NewestFirst => "newest",
            Sort::OldestFirst => "oldest",
        }
    }

    /// `DESC` or `ASC`, and the comparison a key after the cursor satisfies.
    pub(crate) fn sql(self) -> (&'static str, &'static str) {
        match self {
            Sort::NewestFirst => ("DESC", "<"),
            Sort::OldestFirst => ("ASC", ">"),
        }
    }
}

/// The range of UUIDs whose hexadecimal form (hyphens ignored) starts with `prefix`:
/// `(lowest, highest)`, both inclusive. `None` when the prefix is empty, longer than 32
/// digits or holds anything but hexadecimal digits and hyphens. Used for the indexed search
/// by id prefix: a range scan on the primary key, never a `LIKE` over every row.
pub fn uuid_prefix_range(prefix: &str) -> Option<(Uuid, Uuid)> {
    let digits: String = prefix
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if digits.is_empty() || digits.len() > 32 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let pad = 32 - digits.len();
    let low = format!("{digits}{}", "0".repeat(pad));
    let high = format!("{digits}{}", "f".repeat(pad));
    let low = u128::from_str_radix(&low, 16).ok()?;
    let high = u128::from_str_radix(&high, 16).ok()?;
    Some((Uuid::from_u128(low), Uuid::from_u128(high)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_bounds_every_id_with_the_prefix() {
        let id = Uuid::parse_str("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").unwrap();
        for n in [1, 4, 8, 9, 13, 36] {
            let prefix = &id.hyphenated().to_string()[..n];
            let (lo, hi) = uuid_prefix_range(prefix).unwrap();
            assert!(lo <= id && id <= hi, "{prefix}: {lo} .. {hi}");
        }
        let (lo, hi) = uuid_prefix_range("0190A1").unwrap();
        assert_eq!(lo.to_string(), "0190a100-0000-0000-0000-000000000000");
        assert_eq!(hi.to_string(), "0190a1ff-ffff-ffff-ffff-ffffffffffff");
        let other = Uuid::parse_str("0190a200-0000-7000-8000-000000000000").unwrap();
        assert!(other > hi);
    }

    #[test]
    fn prefix_range_refuses_what_is_not_hex() {
        assert_eq!(uuid_prefix_range(""), None);
        assert_eq!(uuid_prefix_range("-"), None);
        assert_eq!(uuid_prefix_range("xyz"), None);
        assert_eq!(uuid_prefix_range("01%"), None);
        assert_eq!(uuid_prefix_range(&"a".repeat(33)), None);
    }
}
