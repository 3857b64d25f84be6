//! Scalar values shared by both files and by other crates: durations, sizes, secret
//! references, request rates and fractions.

use std::time::Duration;

use crate::config::SecretRef;

/// Parses `500ms`, `30s`, `5m`, `4h`, `1d`, or several in a row (`1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = "expected a duration such as `500ms`, `30s`, `5m`, `4h` or `1d`";
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration; {expected}"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` has no unit; {expected}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("`{s}` is not a duration; {expected}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}` is too large; {expected}"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = rest.split_at(unit_len);
        let millis_per: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{s}` has a number without a unit; {expected}")),
            other => {
                return Err(format!(
                    "unknown duration unit `{other}` in `{s}`; {expected}"
                ));
            }
        };
        let millis = number
            .checked_mul(millis_per)
            .ok_or_else(|| format!("`{s}` is too large; {expected}"))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| format!("`{s}` is too large; {expected}"))?;
        rest = tail.trim_start();
    }
    Ok(total)
}

/// Parses a size: a number of bytes, or a number with `B`, `KB`, `KiB`, `MB`, `MiB`, `GB`,
/// `GiB`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let expected = "expected a number of bytes or a size such as `512KiB`, `1MiB` or `10MB`";
    let s = text.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("`{s}` is not a size; {expected}"));
    }
    let number: u64 = s[..digits]
        .parse()
        .map_err(|_| format!("`{s}` is too large; {expected}"))?;
    let factor: u64 = match s[digits..].trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` in `{s}`; {expected}")),
    };
    number
        .checked_mul(factor)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("`{s}` is too large; {expected}"))
}

/// Parses `env:NAME` or `file:PATH`.
pub fn parse_secret(text: &str) -> Result<SecretRef, String> {
    const EXPECTED: &str = "secrets must be given by reference: env:NAME or file:PATH";
    if let Some(name) = text.strip_prefix("env:") {
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("`env:` needs a variable name; {EXPECTED}"));
        }
        return Ok(SecretRef::Env(name.to_string()));
    }
    if let Some(path) = text.strip_prefix("file:") {
        let path = path.trim();
        if path.is_empty() {
            return Err(format!("`file:` needs a path; {EXPECTED}"));
        }
        return Ok(SecretRef::File(path.to_string()));
    }
    Err(EXPECTED.to_string())
}

/// A rate: `10/s`, `600/m`, `3600/h`, or a plain number of requests per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    const EXPECTED: &str = "expected requests per time unit such as `10/s`, `600/m` or `3600/h`";
    let t = text.trim();
    let (n, per) = match t.split_once('/') {
        Some((n, unit)) => {
            let per = match unit.trim() {
                "s" | "sec" | "second" => 1.0,
                "m" | "min" | "minute" => 60.0,
                "h" | "hour" => 3600.0,
                _ => return Err(format!("`{t}`: unknown unit; {EXPECTED}")),
            };
            (n.trim(), per)
        }
        None => (t, 1.0),
    };
    match n.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v / per),
        _ => Err(format!("`{t}`: {EXPECTED}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(4 * 3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("30").unwrap_err().contains("has no unit"));
        assert!(parse_duration("5 weeks").is_err());
        assert!(
            parse_duration("3y")
                .unwrap_err()
                .contains("unknown duration unit `y`")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(
            parse_size("1TB")
                .unwrap_err()
                .contains("unknown size unit `TB`")
        );
        assert!(parse_size("big").is_err());
    }

    #[test]
    fn secrets() {
        assert_eq!(
            parse_secret("env:TOKEN"),
            Ok(SecretRef::Env("TOKEN".into()))
        );
        assert_eq!(
            parse_secret("file:secrets/k"),
            Ok(SecretRef::File("secrets/k".into()))
        );
        assert_eq!(
            parse_secret("hunter2").unwrap_err(),
            "secrets must be given by reference: env:NAME or file:PATH"
        );
        assert!(parse_secret("env:").is_err());
    }
}
