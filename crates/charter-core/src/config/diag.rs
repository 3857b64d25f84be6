//! Diagnostics (a problem at a file, line and column) and the [`Check`] helpers every
//! component's checks use to parse a value and report what is wrong with it.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use crate::config::SecretRef;
use crate::config::raw::{Location, S, Scalar};
use crate::config::values::{parse_duration, parse_secret};
use crate::template::Template;

/// One problem, at a place in a file. Lines and columns are 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in a project, ordered by file and position; displayed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

pub(crate) fn push(diags: &mut Vec<Diagnostic>, file: &str, at: Location, message: String) {
    diags.push(Diagnostic {
        file: file.to_string(),
        line: (at.line() as usize).max(1),
        column: (at.column() as usize).max(1),
        message,
    });
}

/// `a`, `b`, `c` for messages; `(none)` when empty.
pub(crate) fn list<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let v: Vec<String> = names.into_iter().map(|n| format!("`{n}`")).collect();
    if v.is_empty() {
        "(none)".to_string()
    } else {
        v.join(", ")
    }
}

/// The start of a file, for problems with no better place.
pub(crate) fn file_start() -> Location {
    Location::UNKNOWN
}

/// Names of charters, connectors and actions: `[a-z0-9_-]+`.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Shared checks, writing into one file's diagnostics.
pub(crate) trait Check {
    fn file(&self) -> &str;
    fn diags(&mut self) -> &mut Vec<Diagnostic>;

    fn err(&mut self, at: Location, message: impl Into<String>) {
        let file = self.file().to_string();
        push(self.diags(), &file, at, message.into());
    }

    fn duration(&mut self, v: &S<Scalar>, key: &str) -> Option<Duration> {
        match parse_duration(&v.value.0) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(v.referenced, format!("`{key}`: {e}"));
                None
            }
        }
    }

    /// An optional duration with a default.
    fn duration_or(&mut self, v: &Option<S<Scalar>>, key: &str, default: Duration) -> Duration {
        v.as_ref()
            .map(|v| self.duration(v, key).unwrap_or(default))
            .unwrap_or(default)
    }

    fn secret(&mut self, v: &S<String>, key: &str) -> Option<SecretRef> {
        match parse_secret(&v.value) {
            Ok(s) => Some(s),
            Err(e) => {
                self.err(v.referenced, format!("`{key}`: {e}"));
                None
            }
        }
    }

    /// A required, non-empty text value.
    fn required_text(
        &mut self,
        v: &Option<S<String>>,
        parent: Location,
        key: &str,
        what: &str,
    ) -> Option<String> {
        match v {
            Some(s) if !s.value.trim().is_empty() => Some(s.value.trim().to_string()),
            Some(s) => {
                self.err(s.referenced, format!("`{key}` is empty; expected {what}"));
                None
            }
            None => {
                self.err(parent, format!("missing `{key}`: expected {what}"));
                None
            }
        }
    }

    fn template(&mut self, v: &S<String>, key: &str) -> Option<Template> {
        match Template::parse(&v.value) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(v.referenced, format!("`{key}`: {e}"));
                None
            }
        }
    }

    /// A template that builds a URL: its inserted values are percent-encoded
    /// ([`Template::parse_url`]).
    fn url_template(&mut self, v: &S<String>, key: &str) -> Option<Template> {
        match Template::parse_url(&v.value) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(v.referenced, format!("`{key}`: {e}"));
                None
            }
        }
    }

    fn positive(&mut self, v: &S<i64>, key: &str) -> Option<usize> {
        match usize::try_from(v.value) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                self.err(
                    v.referenced,
                    format!(
                        "`{key}` is {}; expected a whole number of at least 1",
                        v.value
                    ),
                );
                None
            }
        }
    }

    /// `http://` or `https://` followed by a host.
    fn absolute_url(&mut self, v: &S<String>, key: &str) -> Option<String> {
        let s = v.value.trim();
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"));
        match rest {
            Some(r) if !r.is_empty() && !r.starts_with('/') => Some(s.to_string()),
            _ => {
                self.err(
                    v.referenced,
                    format!(
                        "`{key}` is `{s}`; expected an absolute http:// or https:// URL such as `https://api.example.com`"
                    ),
                );
                None
            }
        }
    }

    /// A `base_url` whose host is a literal loopback/private address (or `localhost`)
    /// without `allow_private`: the outbound guard refuses every request to it, so the
    /// connector could never work. Reported at the `base_url`.
    fn reachable_base_url(&mut self, u: &S<String>, connector: &str, allow_private: bool) -> bool {
        if allow_private {
            return true;
        }
        let Some(why) = crate::net::url_host(&u.value).and_then(crate::net::private_host) else {
            return true;
        };
        self.err(
            u.referenced,
            format!(
                "`base_url` is `{}`, whose host is {why}: the outbound guard refuses it, so connector `{connector}` could never be reached; set `allow_private: true` on the connector if it is meant to reach a local service",
                u.value.trim()
            ),
        );
        false
    }

    /// A value from a fixed set of words.
    fn one_of<T: Copy>(&mut self, v: &S<String>, key: &str, options: &[(&str, T)]) -> Option<T> {
        if let Some((_, t)) = options.iter().find(|(w, _)| *w == v.value.trim()) {
            return Some(*t);
        }
        let allowed: Vec<String> = options.iter().map(|(w, _)| format!("`{w}`")).collect();
        self.err(
            v.referenced,
            format!(
                "`{key}` is `{}`; expected one of {}",
                v.value,
                allowed.join(", ")
            ),
        );
        None
    }
}

pub(crate) fn strip_position(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

pub(crate) fn list_set(names: &BTreeSet<String>) -> String {
    list(names.iter())
}
