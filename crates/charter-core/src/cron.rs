//! Cron expressions for schedule triggers, evaluated in UTC or in a time zone ([`Zone`]).
//!
//! Five fields (`minute hour day-of-month month day-of-week`), or six with a leading
//! `second` field. Each field is `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or
//! `a/n`, or a comma-separated list of those. Months and weekdays may be named (`jan`,
//! `mon`); weekday 0 and 7 are both Sunday. `@yearly`, `@monthly`, `@weekly`, `@daily`
//! and `@hourly` are shorthands. As in classic cron, when both day-of-month and
//! day-of-week are restricted (neither starts with `*`) a day matches if either does.
//!
//! Times are Unix seconds; no clock is read here.
//!
//! **Time zones.** A [`Zone`] (an IANA name such as `Europe/Paris`, from the time zone
//! database bundled into the binary, or a fixed offset such as `+02:00`) makes the fields
//! wall-clock times there: [`Cron::next_after_in`] and [`Cron::latest_at_or_before_in`].
//! Around daylight-saving changes every wall-clock fire time fires once: a time the clocks
//! skip (02:30 when they jump from 02:00 to 03:00) fires at the moment of the jump, and a
//! time that happens twice (02:30 when they go back from 03:00 to 02:00) fires the first
//! time only.

use std::fmt;

/// Days searched for the next (or previous) fire time before giving up: 28 years, one
/// full cycle of weekdays over leap years, so every satisfiable expression is found.
const SEARCH_DAYS: i64 = 28 * 366;
const DAY: i64 = 86_400;

/// Why a cron expression was refused. Messages name the field and the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "cron expression `{0}` has {1} fields; expected 5 (`minute hour day-of-month month day-of-week`) or 6 (with a leading `second`)"
    )]
    FieldCount(String, usize),
    #[error("unknown cron shorthand `{0}`; expected @yearly, @monthly, @weekly, @daily or @hourly")]
    Shorthand(String),
    #[error("cron {field} `{part}` is not valid: {reason}")]
    Field {
        field: &'static str,
        part: String,
        reason: String,
    },
    #[error("cron expression `{0}` never fires (no date matches it)")]
    Never(String),
}

/// One field's name and allowed range.
#[derive(Clone, Copy)]
struct Spec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: Spec = Spec {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Spec = Spec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Spec = Spec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Spec = Spec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Spec = Spec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Spec = Spec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// A parsed cron expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    source: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Bits 1..=31.
    dom: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, Sunday = 0.
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.source)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Cron {
    /// Parse an expression; refuses one that can never fire (such as `0 0 30 2 *`).
    pub fn parse(source: &str) -> Result<Cron, CronError> {
        let trimmed = source.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            s if s.starts_with('@') => return Err(CronError::Shorthand(trimmed.to_string())),
            _ => trimmed.to_string(),
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => return Err(CronError::FieldCount(trimmed.to_string(), n)),
        };
        let mut dow = field(rest[4], DOW)?;
        // 7 is Sunday too.
        if dow & (1 << 7) != 0 {
            dow = (dow & !(1 << 7)) | 1;
        }
        let cron = Cron {
            source: trimmed.to_string(),
            seconds: field(sec, SECOND)?,
            minutes: field(rest[0], MINUTE)?,
            hours: field(rest[1], HOUR)?,
            dom: field(rest[2], DOM)?,
            months: field(rest[3], MONTH)?,
            dow,
            dom_star: rest[2].starts_with('*'),
            dow_star: rest[4].starts_with('*'),
        };
        if cron.next_after(0).is_none() {
            return Err(CronError::Never(trimmed.to_string()));
        }
        Ok(cron)
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn day_matches(&self, days: i64) -> bool {
        let (_, month, day) = crate::calendar::civil_from_days(days);
        if self.months & (1 << month) == 0 {
            return false;
        }
        let weekday = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday.
        let dom = self.dom & (1 << day) != 0;
        let dow = self.dow & (1 << weekday) != 0;
        match (self.dom_star, self.dow_star) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first second of a day, at or after `from` (seconds into the day), that matches.
    fn first_time(&self, from: i64) -> Option<i64> {
        (0..24)
            .filter(|h| self.hours & (1 << h) != 0)
            .flat_map(|h| {
                (0..60)
                    .filter(|m| self.minutes & (1 << m) != 0)
                    .flat_map(move |m| {
                        (0..60)
                            .filter(|s| self.seconds & (1 << s) != 0)
                            .map(move |s| h * 3600 + m * 60 + s)
                    })
            })
            .find(|t| *t >= from)
    }

    /// The last second of a day, at or before `to` (seconds into the day), that matches.
    fn last_time(&self, to: i64) -> Option<i64> {
        (0..24)
            .rev()
            .filter(|h| self.hours & (1 << h) != 0)
            .flat_map(|h| {
                (0..60)
                    .rev()
                    .filter(|m| self.minutes & (1 << m) != 0)
                    .flat_map(move |m| {
                        (0..60)
                            .rev()
                            .filter(|s| self.seconds & (1 << s) != 0)
                            .map(move |s| h * 3600 + m * 60 + s)
                    })
            })
            .find(|t| *t <= to)
    }

    /// The first fire time strictly after `t` (Unix seconds).
    pub fn next_after(&self, t: i64) -> Option<i64> {
        let start = t.checked_add(1)?;
        let first_day = start.div_euclid(DAY);
        for d in 0..SEARCH_DAYS {
            let day = first_day + d;
            if !self.day_matches(day) {
                continue;
            }
            let from = if d == 0 { start.rem_euclid(DAY) } else { 0 };
            if let Some(tod) = self.first_time(from) {
                return Some(day * DAY + tod);
            }
        }
        None
    }

    /// The last fire time at or before `t` (Unix seconds).
    pub fn latest_at_or_before(&self, t: i64) -> Option<i64> {
        let last_day = t.div_euclid(DAY);
        for d in 0..SEARCH_DAYS {
            let day = last_day - d;
            if !self.day_matches(day) {
                continue;
            }
            let to = if d == 0 { t.rem_euclid(DAY) } else { DAY - 1 };
            if let Some(tod) = self.last_time(to) {
                return Some(day * DAY + tod);
            }
        }
        None
    }
}

/// Most candidates looked at around one daylight-saving change before giving up (a cron
/// that fires every second looks at 3,600 in a repeated hour).
const ZONE_STEPS: usize = 200_000;
/// How far back a daylight-saving change is looked for (every change is shorter).
const CHANGE_WINDOW: i64 = 2 * DAY;

/// Why a `timezone` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown time zone `{0}`: expected an IANA name such as `Europe/Paris` or `America/New_York`, `UTC`, or a fixed offset such as `+02:00`"
)]
pub struct ZoneError(pub String);

/// The time zone a schedule's fields are read in.
#[derive(Clone)]
pub struct Zone {
    name: String,
    tz: jiff::tz::TimeZone,
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({:?})", self.name)
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Default for Zone {
    fn default() -> Zone {
        Zone::utc()
    }
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            tz: jiff::tz::TimeZone::UTC,
        }
    }

    /// An IANA name (`Europe/Paris`, case-insensitive), `UTC`, or a fixed offset `+HH:MM` /
    /// `-HH:MM`.
    pub fn parse(text: &str) -> Result<Zone, ZoneError> {
        let t = text.trim();
        let bad = || ZoneError(t.to_string());
        if let Some(rest) = t.strip_prefix(['+', '-']) {
            let (h, m) = rest.split_once(':').ok_or_else(bad)?;
            let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
            if !digits(h) || !digits(m) {
                return Err(bad());
            }
            let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 18 || m > 59 {
                return Err(bad());
            }
            let sign = if t.starts_with('-') { -1 } else { 1 };
            let offset =
                jiff::tz::Offset::from_seconds(sign * (h * 3600 + m * 60)).map_err(|_| bad())?;
            return Ok(Zone {
                name: t.to_string(),
                tz: jiff::tz::TimeZone::fixed(offset),
            });
        }
        if t.eq_ignore_ascii_case("utc") {
            return Ok(Zone::utc());
        }
        let tz = jiff::tz::TimeZone::get(t).map_err(|_| bad())?;
        let name = tz.iana_name().unwrap_or(t).to_string();
        Ok(Zone { name, tz })
    }

    /// The zone as written (an IANA name in its canonical case).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `t` (Unix seconds) as the zone's wall clock shows it, with its offset:
    /// `2026-03-29T09:00:00+02:00`.
    pub fn format_local(&self, t: i64) -> String {
        let off = self.offset_at(t).unwrap_or(0);
        let clock = format_utc(t + off);
        let sign = if off < 0 { '-' } else { '+' };
        let a = off.abs();
        format!(
            "{}{sign}{:02}:{:02}",
            clock.trim_end_matches('Z'),
            a / 3600,
            a / 60 % 60
        )
    }

    /// Unix milliseconds `ms` as this zone's wall clock reads them, counted like Unix
    /// milliseconds from 1970-01-01T00:00 on that clock (format it as if it were UTC).
    pub fn wall_millis(&self, ms: i64) -> i64 {
        ms + 1000 * self.offset_at(ms.div_euclid(1000)).unwrap_or(0)
    }

    /// The instant (Unix milliseconds) at which this zone's wall clock shows `wall`
    /// (milliseconds from 1970-01-01T00:00 on that clock): a time shown twice is its first
    /// moment, a time the clocks skip is the moment they jump. `None` out of range.
    pub fn instant_millis(&self, wall: i64) -> Option<i64> {
        let at = self.instant(wall.div_euclid(1000))?;
        at.checked_mul(1000)?.checked_add(wall.rem_euclid(1000))
    }

    /// Seconds east of UTC in force at `t` (Unix seconds).
    fn offset_at(&self, t: i64) -> Option<i64> {
        let ts = jiff::Timestamp::from_second(t).ok()?;
        Some(i64::from(self.tz.to_offset(ts).seconds()))
    }

    /// The wall-clock time at `t`, as seconds since 1970-01-01T00:00 on that clock.
    fn local(&self, t: i64) -> Option<i64> {
        Some(t + self.offset_at(t)?)
    }

    /// The moment the wall clock shows `local`: a time shown twice is its first moment, and
    /// a time the clocks skip is the moment they jump. Never decreases as `local` grows.
    fn instant(&self, local: i64) -> Option<i64> {
        let utc = jiff::Timestamp::from_second(local).ok()?;
        let dt = jiff::tz::Offset::UTC.to_datetime(utc);
        match self.tz.to_ambiguous_timestamp(dt).offset() {
            jiff::tz::AmbiguousOffset::Unambiguous { offset } => {
                Some(local - i64::from(offset.seconds()))
            }
            jiff::tz::AmbiguousOffset::Fold { before, .. } => {
                Some(local - i64::from(before.seconds()))
            }
            jiff::tz::AmbiguousOffset::Gap { before, after } => {
                // The jump lies in (local - after, local - before]: find it.
                let after_off = i64::from(after.seconds());
                let (mut lo, mut hi) = (local - after_off, local - i64::from(before.seconds()));
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if self.offset_at(mid)? == after_off {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                Some(hi)
            }
        }
    }
}

impl Cron {
    /// The first fire time strictly after `t` (Unix seconds), the fields read as wall-clock
    /// times in `zone` (see the module documentation for daylight-saving changes).
    pub fn next_after_in(&self, zone: &Zone, t: i64) -> Option<i64> {
        let now = zone.offset_at(t)?;
        // Just after the clocks jumped forward, a skipped time may still be ahead of `t`
        // (it fires at the jump): start that much earlier on the wall clock.
        let jumped = (now - zone.offset_at(t.checked_sub(CHANGE_WINDOW)?)?).max(0);
        let mut cursor = zone.local(t)? - jumped;
        for _ in 0..ZONE_STEPS {
            let local = self.next_after(cursor)?;
            let at = zone.instant(local)?;
            if at > t {
                return Some(at);
            }
            cursor = local;
        }
        None
    }

    /// The last fire time at or before `t` (Unix seconds) in `zone`.
    pub fn latest_at_or_before_in(&self, zone: &Zone, t: i64) -> Option<i64> {
        let now = zone.offset_at(t)?;
        // Just after the clocks went back, later wall-clock times may already have fired
        // (the first time round): start that much later on the wall clock.
        let went_back = (zone.offset_at(t.checked_sub(CHANGE_WINDOW)?)? - now).max(0);
        let mut cursor = zone.local(t)? + went_back;
        for _ in 0..ZONE_STEPS {
            let local = self.latest_at_or_before(cursor)?;
            let at = zone.instant(local)?;
            if at <= t {
                return Some(at);
            }
            cursor = local - 1;
        }
        None
    }
}

/// Parse one field into a bit set.
fn field(text: &str, spec: Spec) -> Result<u64, CronError> {
    let bad = |part: &str, reason: String| CronError::Field {
        field: spec.name,
        part: part.to_string(),
        reason,
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        if part.is_empty() {
            return Err(bad(text, "an empty list item".into()));
        }
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 =
                    s.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        bad(part, format!("step `{s}` must be a positive number"))
                    })?;
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, spec, part)?, value(b, spec, part)?)
        } else {
            let v = value(range, spec, part)?;
            // `a/n` runs from a to the end of the range.
            (v, if step.is_some() { spec.max } else { v })
        };
        if lo > hi {
            return Err(bad(
                part,
                format!("the range runs backwards ({lo} is after {hi})"),
            ));
        }
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn value(text: &str, spec: Spec, part: &str) -> Result<u32, CronError> {
    let lower = text.to_ascii_lowercase();
    let named = spec
        .names
        .iter()
        .position(|n| *n == lower)
        .map(|i| i as u32 + if spec.min == 1 { 1 } else { 0 });
    let v = match named.or_else(|| text.parse().ok()) {
        Some(v) => v,
        None => {
            let names = if spec.names.is_empty() {
                String::new()
            } else {
                format!(" or a name ({})", spec.names.join(", "))
            };
            return Err(CronError::Field {
                field: spec.name,
                part: part.to_string(),
                reason: format!(
                    "`{text}` is not a number{names}; expected {}-{}",
                    spec.min, spec.max
                ),
            });
        }
    };
    if v < spec.min || v > spec.max {
        return Err(CronError::Field {
            field: spec.name,
            part: part.to_string(),
            reason: format!("{v} is out of range {}-{}", spec.min, spec.max),
        });
    }
    Ok(v)
}

/// `2026-11-05T09:00:00Z` for Unix seconds.
pub fn format_utc(t: i64) -> String {
    let (y, mo, d) = crate::calendar::civil_from_days(t.div_euclid(DAY));
    let s = t.rem_euclid(DAY);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a UTC date and time.
    fn at(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> i64 {
        let days = crate::calendar::days_from_civil(y, mo, d);
        days * DAY + h * 3600 + mi * 60 + s
    }

    fn next(expr: &str, from: i64) -> String {
        let c = Cron::parse(expr).expect("parses");
        format_utc(c.next_after(from).expect("fires"))
    }

    #[test]
    fn formats_and_converts_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_utc(at(2024, 2, 29, 23, 59, 58)),
            "2024-02-29T23:59:58Z"
        );
        assert_eq!(format_utc(1_767_225_600), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn next_fire_times() {
        let t = at(2026, 11, 5, 8, 30, 0); // a Thursday
        assert_eq!(next("0 9 * * *", t), "2026-11-05T09:00:00Z");
        assert_eq!(
            next("0 9 * * *", at(2026, 11, 5, 9, 0, 0)),
            "2026-11-06T09:00:00Z"
        );
        assert_eq!(next("*/15 * * * *", t), "2026-11-05T08:45:00Z");
        assert_eq!(
            next("0 9 * * mon-fri", at(2026, 11, 6, 10, 0, 0)),
            "2026-11-09T09:00:00Z"
        );
        assert_eq!(next("0 0 29 feb *", t), "2028-02-29T00:00:00Z");
        assert_eq!(next("@monthly", t), "2026-12-01T00:00:00Z");
        assert_eq!(next("0 0 * * 7", t), "2026-11-08T00:00:00Z"); // Sunday
        assert_eq!(next("* * * * * *", t), "2026-11-05T08:30:01Z");
        assert_eq!(next("*/5 * * * * *", t + 3), "2026-11-05T08:30:05Z");
        assert_eq!(next("0 12 31 dec *", t), "2026-12-31T12:00:00Z");
        // Both day fields restricted: either matches (the 1st, or a Monday).
        assert_eq!(next("0 0 1 * mon", t), "2026-11-09T00:00:00Z");
    }

    #[test]
    fn latest_fire_time() {
        let c = Cron::parse("0 9 * * *").expect("parses");
        let t = at(2026, 11, 5, 8, 30, 0);
        assert_eq!(
            format_utc(c.latest_at_or_before(t).expect("fired")),
            "2026-11-04T09:00:00Z"
        );
        let nine = at(2026, 11, 5, 9, 0, 0);
        assert_eq!(c.latest_at_or_before(nine), Some(nine));
    }

    #[test]
    fn refuses_bad_expressions() {
        let err = |e: &str| Cron::parse(e).expect_err("refused").to_string();
        assert_eq!(
            err("0 9 * *"),
            "cron expression `0 9 * *` has 4 fields; expected 5 (`minute hour day-of-month month day-of-week`) or 6 (with a leading `second`)"
        );
        assert_eq!(
            err("61 * * * *"),
            "cron minute `61` is not valid: 61 is out of range 0-59"
        );
        assert_eq!(
            err("0 9 * * funday"),
            "cron day-of-week `funday` is not valid: `funday` is not a number or a name (sun, mon, tue, wed, thu, fri, sat); expected 0-7"
        );
        assert_eq!(
            err("*/0 * * * *"),
            "cron minute `*/0` is not valid: step `0` must be a positive number"
        );
        assert_eq!(
            err("0 17-9 * * *"),
            "cron hour `17-9` is not valid: the range runs backwards (17 is after 9)"
        );
        assert_eq!(
            err("0 0 30 2 *"),
            "cron expression `0 0 30 2 *` never fires (no date matches it)"
        );
        assert_eq!(
            err("@sometimes"),
            "unknown cron shorthand `@sometimes`; expected @yearly, @monthly, @weekly, @daily or @hourly"
        );
    }

    fn paris() -> Zone {
        Zone::parse("Europe/Paris").expect("a bundled zone")
    }

    fn next_in(expr: &str, zone: &Zone, from: i64) -> String {
        let c = Cron::parse(expr).expect("parses");
        format_utc(c.next_after_in(zone, from).expect("fires"))
    }

    fn latest_in(expr: &str, zone: &Zone, t: i64) -> String {
        let c = Cron::parse(expr).expect("parses");
        format_utc(c.latest_at_or_before_in(zone, t).expect("fired"))
    }

    #[test]
    fn zones_parse_by_name_and_offset() {
        assert_eq!(paris().name(), "Europe/Paris");
        assert_eq!(
            Zone::parse("europe/paris").expect("any case").name(),
            "Europe/Paris"
        );
        assert_eq!(Zone::parse("UTC").expect("utc"), Zone::utc());
        assert_eq!(Zone::parse("+05:30").expect("offset").name(), "+05:30");
        for bad in [
            "Mars/Olympus_Mons",
            "",
            "+5:30",
            "+19:00",
            "+05:60",
            "CEST+2",
        ] {
            let e = Zone::parse(bad).expect_err(bad).to_string();
            assert!(e.starts_with("unknown time zone"), "{bad}: {e}");
        }
    }

    #[test]
    fn fields_are_wall_clock_times_in_the_zone() {
        let z = paris();
        // 09:00 in Paris is 08:00Z in winter (CET) and 07:00Z in summer (CEST).
        let jan = at(2026, 1, 10, 12, 0, 0);
        assert_eq!(next_in("0 9 * * *", &z, jan), "2026-01-11T08:00:00Z");
        let jul = at(2026, 7, 10, 12, 0, 0);
        assert_eq!(next_in("0 9 * * *", &z, jul), "2026-07-11T07:00:00Z");
        assert_eq!(latest_in("0 9 * * *", &z, jul), "2026-07-10T07:00:00Z");
        // Across the spring change the daily time stays 09:00 local.
        let before = at(2026, 3, 28, 8, 0, 0);
        assert_eq!(next_in("0 9 * * *", &z, before), "2026-03-29T07:00:00Z");
        // A weekday is the weekday in the zone: 00:30 Monday in Paris is Sunday 23:30Z.
        assert_eq!(next_in("30 0 * * mon", &z, jan), "2026-01-11T23:30:00Z");
        // A fixed offset.
        let india = Zone::parse("+05:30").expect("offset");
        assert_eq!(next_in("0 9 * * *", &india, jan), "2026-01-11T03:30:00Z");
        assert_eq!(india.format_local(jan), "2026-01-10T17:30:00+05:30");
        assert_eq!(z.format_local(jul), "2026-07-10T14:00:00+02:00");
        assert_eq!(
            Zone::parse("-03:30").expect("offset").format_local(jan),
            "2026-01-10T08:30:00-03:30"
        );
        assert_eq!(latest_in("0 9 * * *", &india, jan), "2026-01-10T03:30:00Z");
    }

    #[test]
    fn a_skipped_time_fires_at_the_jump() {
        // 2026-03-29: Paris clocks jump from 02:00 CET to 03:00 CEST (01:00Z); 02:30 does
        // not exist that day and fires at the jump.
        let z = paris();
        let jump = at(2026, 3, 29, 1, 0, 0);
        assert_eq!(
            next_in("30 2 * * *", &z, at(2026, 3, 28, 1, 30, 0)),
            "2026-03-29T01:00:00Z"
        );
        assert_eq!(next_in("30 2 * * *", &z, jump), "2026-03-30T00:30:00Z");
        // A restart just after the jump (03:10 local) still finds it ahead or behind.
        assert_eq!(next_in("30 2 * * *", &z, jump - 1), "2026-03-29T01:00:00Z");
        assert_eq!(
            latest_in("30 2 * * *", &z, jump + 600),
            "2026-03-29T01:00:00Z"
        );
        assert_eq!(
            latest_in("30 2 * * *", &z, jump - 1),
            "2026-03-28T01:30:00Z"
        );
        // Hourly: 02:00 local is skipped and fires at the jump with 03:00, once: a 23-hour day.
        let fires = fire_times(
            "0 * * * *",
            &z,
            at(2026, 3, 28, 23, 0, 0),
            at(2026, 3, 29, 22, 0, 0),
        );
        assert_eq!(fires.len(), 23, "{fires:?}");
        assert!(fires.contains(&"2026-03-29T01:00:00Z".to_string()));
    }

    #[test]
    fn a_repeated_time_fires_the_first_time_only() {
        // 2026-10-25: Paris clocks go back from 03:00 CEST to 02:00 CET (01:00Z); 02:30
        // happens at 00:30Z and again at 01:30Z and fires at 00:30Z only.
        let z = paris();
        assert_eq!(
            next_in("30 2 * * *", &z, at(2026, 10, 24, 0, 30, 0)),
            "2026-10-25T00:30:00Z"
        );
        assert_eq!(
            next_in("30 2 * * *", &z, at(2026, 10, 25, 0, 30, 0)),
            "2026-10-26T01:30:00Z"
        );
        assert_eq!(
            latest_in("30 2 * * *", &z, at(2026, 10, 25, 1, 45, 0)),
            "2026-10-25T00:30:00Z"
        );
        // Hourly on the 25-hour day: one event per wall-clock hour, 24 in all.
        let fires = fire_times(
            "0 * * * *",
            &z,
            at(2026, 10, 24, 21, 59, 0),
            at(2026, 10, 25, 22, 59, 0),
        );
        assert_eq!(fires.len(), 24, "{fires:?}");
        assert!(fires.contains(&"2026-10-25T00:00:00Z".to_string()));
        assert!(
            !fires.contains(&"2026-10-25T01:00:00Z".to_string()),
            "02:00 fired twice"
        );
    }

    /// Every fire time in `(from, to]`, by [`Cron::next_after_in`].
    fn fire_times(expr: &str, zone: &Zone, from: i64, to: i64) -> Vec<String> {
        let c = Cron::parse(expr).expect("parses");
        let mut out = Vec::new();
        let mut t = from;
        while let Some(n) = c.next_after_in(zone, t).filter(|n| *n <= to) {
            out.push(format_utc(n));
            t = n;
        }
        out
    }

    #[test]
    fn next_and_latest_agree_around_both_changes() {
        // For every moment of the change days (every 7 minutes), `latest` is the last fire
        // time of the `next` chain at or before it, and `next` the first after it.
        let z = paris();
        for expr in ["*/20 * * * *", "30 2 * * *", "0 1-3 * * *", "15 */2 * * *"] {
            let c = Cron::parse(expr).expect("parses");
            for (from, to) in [
                (at(2026, 3, 27, 0, 0, 0), at(2026, 3, 31, 0, 0, 0)),
                (at(2026, 10, 23, 0, 0, 0), at(2026, 10, 27, 0, 0, 0)),
            ] {
                let mut fires = Vec::new();
                let mut t = from - 2 * DAY;
                while let Some(n) = c.next_after_in(&z, t).filter(|n| *n <= to + DAY) {
                    assert!(n > t);
                    fires.push(n);
                    t = n;
                }
                let mut t = from;
                while t < to {
                    let latest = fires.iter().rev().find(|f| **f <= t).copied();
                    let next = fires.iter().find(|f| **f > t).copied();
                    assert_eq!(
                        c.latest_at_or_before_in(&z, t),
                        latest,
                        "{expr} latest at {}",
                        format_utc(t)
                    );
                    assert_eq!(
                        c.next_after_in(&z, t),
                        next,
                        "{expr} next after {}",
                        format_utc(t)
                    );
                    t += 7 * 60;
                }
            }
        }
    }
}
