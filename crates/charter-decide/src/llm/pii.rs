//! Personal data found in free text and replaced before anything is sent to a model:
//! e-mail addresses, phone numbers, payment card numbers and IBANs. Redaction by key
//! (`redact:`) removes whole values; this removes what sits inside text.
//!
//! The patterns are heuristics, chosen to miss little and to leave order numbers, dates and
//! amounts alone:
//!
//! | kind | found | replaced by |
//! |---|---|---|
//! | `email` | `local@domain.tld` | `[email]` |
//! | `card` | 13 to 19 digits, optionally grouped by spaces or dashes, passing the Luhn check | `[card]` |
//! | `iban` | two letters, two check digits, 11 to 30 letters or digits (spaces allowed), passing the ISO 7064 mod-97 check | `[iban]` |
//! | `phone` | 8 to 15 digits written as a phone number: starting with `+`, `00`, `(` or a trunk `0`, or as `555-123-4567`; not glued to a word (`ORD-0123 4567` stays) | `[phone]` |

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

static EMAIL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}").ok()
});
static IBAN: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b").ok());
static CARD: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\b[0-9](?:[ \-]?[0-9]){12,18}\b").ok());
static PHONE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?:\+|\b00|\(|\b0)[0-9 ().\-]{6,}[0-9]|\b[0-9]{3}[\-. ][0-9]{3}[\-. ][0-9]{4}\b")
        .ok()
});

/// What was redacted, by kind (`email`, `phone`, `card`, `iban`).
pub type Found = BTreeMap<&'static str, u32>;

/// `text` with personal data replaced, counting each replacement in `found`.
pub fn redact_text(text: &str, found: &mut Found) -> String {
    let mut out = text.to_string();
    out = replace(&out, &IBAN, "iban", found, |m| {
        let compact: String = m.chars().filter(|c| !c.is_whitespace()).collect();
        (15..=34).contains(&compact.len()) && iban_valid(&compact)
    });
    out = replace(&out, &CARD, "card", found, |m| {
        let digits: Vec<u32> = m.chars().filter_map(|c| c.to_digit(10)).collect();
        (13..=19).contains(&digits.len()) && luhn_valid(&digits)
    });
    out = replace(&out, &EMAIL, "email", found, |_| true);
    let mut phones = 0;
    let replaced = match PHONE.as_ref() {
        Some(re) => {
            let mut s = String::with_capacity(out.len());
            let mut last = 0;
            for m in re.find_iter(&out) {
                let digits = m.as_str().chars().filter(char::is_ascii_digit).count();
                let glued = out[..m.start()]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_');
                if !(8..=15).contains(&digits) || glued {
                    continue;
                }
                s.push_str(&out[last..m.start()]);
                s.push_str("[phone]");
                last = m.end();
                phones += 1;
            }
            s.push_str(&out[last..]);
            s
        }
        None => out,
    };
    if phones > 0 {
        *found.entry("phone").or_default() += phones;
    }
    replaced
}

fn replace(
    text: &str,
    re: &LazyLock<Option<Regex>>,
    kind: &'static str,
    found: &mut Found,
    keep: impl Fn(&str) -> bool,
) -> String {
    let Some(re) = re.as_ref() else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut n = 0;
    for m in re.find_iter(text) {
        if !keep(m.as_str()) {
            continue;
        }
        out.push_str(&text[last..m.start()]);
        out.push('[');
        out.push_str(kind);
        out.push(']');
        last = m.end();
        n += 1;
    }
    out.push_str(&text[last..]);
    if n > 0 {
        *found.entry(kind).or_default() += n;
    }
    out
}

/// The Luhn check of a card number's digits.
pub fn luhn_valid(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// The ISO 13616 check of an IBAN without spaces: the first four characters moved to the
/// end, letters as 10..35, the number mod 97 is 1.
pub fn iban_valid(iban: &str) -> bool {
    if iban.len() < 5 || !iban.is_ascii() {
        return false;
    }
    let (head, tail) = iban.split_at(4);
    let mut rem: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_found_and_counted() {
        let mut f = Found::new();
        let t = redact_text(
            "Mail ann.lee+x@example.co.uk or call +49 30 1234 5678, (555) 123-4567 or 555-123-4567. \
             Card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00.",
            &mut f,
        );
        assert!(!t.contains("ann.lee"), "{t}");
        assert!(!t.contains("4111"), "{t}");
        assert!(!t.contains("3704"), "{t}");
        assert!(!t.contains("1234 5678"), "{t}");
        assert!(!t.contains("123-4567"), "{t}");
        assert_eq!(f.get("email"), Some(&1));
        assert_eq!(f.get("card"), Some(&1));
        assert_eq!(f.get("iban"), Some(&1));
        assert_eq!(f.get("phone"), Some(&3), "{t}");
    }

    #[test]
    fn order_numbers_dates_amounts_and_invalid_numbers_stay() {
        let mut f = Found::new();
        let text = "ORD-12345678 on 2026-12-07 10:30, total 1234567.89 EUR, \
                    card 4111 1111 1111 1112 (fails Luhn), IBAN GB82 WEST 1234 5698 7654 33 (bad check)";
        let t = redact_text(text, &mut f);
        assert_eq!(t, text);
        assert!(f.is_empty(), "{f:?}");
    }
}
