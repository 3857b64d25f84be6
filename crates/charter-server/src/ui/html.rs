//! HTML building blocks: escaping, the page frame, times and small widgets.
//!
//! Every piece of data that reaches a page goes through [`esc`] (or [`json_block`], which
//! escapes too); markup is only ever written by this module's callers as literals.

use std::fmt::Write;

use charter_core::cron::Zone;

/// Escape text for HTML element content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Percent-encode a query-string value.
pub fn url_enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A JSON value, pretty-printed and escaped, in a `<pre>`.
pub fn json_block(v: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    // Focusable: a scrolling region must be reachable by keyboard.
    format!("<pre class=\"json\" tabindex=\"0\">{}</pre>", esc(&text))
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` on `zone`'s wall clock (`server.timezone`;
/// the pages name the zone).
pub fn time(zone: &Zone, ms: i64) -> String {
    let secs = zone.wall_millis(ms).div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = charter_core::calendar::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A status word as a coloured badge.
pub fn badge(word: &str) -> String {
    let class = match word {
        "done" | "completed" | "succeeded" | "approved" | "resolved" | "live" | "already_done"
        | "sent" => "ok",
        "failed" | "dead_lettered" | "rejected" | "invalid" | "expired" | "interrupted"
        | "in_doubt" => "bad",
        "waiting" | "pending" | "awaiting_approval" | "escalated" | "open" | "processing"
        | "paused" => "warn",
        _ => "muted",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(word))
}

/// A hidden CSRF field for a form.
pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    )
}

/// A one-button POST form.
pub fn button_form(action: &str, csrf: &str, label: &str, class: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\">{}<button type=\"submit\" class=\"{class}\">{}</button></form>",
        esc(action),
        csrf_field(csrf),
        esc(label)
    )
}

/// Who is looking at a page, for the header.
pub struct Viewer<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub csrf: &'a str,
    /// The UI is open (no tokens configured).
    pub open: bool,
}

/// The UI's one stylesheet, inlined in every page; the content security policy allows it
/// by its hash (`guard::content_security_policy`), so it must stay the only style.
pub(crate) const STYLE: &str = r#"
:root{color-scheme:light dark;--fg:#1d2329;--muted:#5b6670;--line:#d9dee3;--bg:#f6f7f9;--card:#fff;--head:#eef1f4;--accent:#1f5fbf;--sel:#e5efff;--ok-bg:#dcf2e3;--ok:#17602f;--bad-bg:#fbe0e0;--bad:#8a1c1c;--warn-bg:#fff0cc;--warn:#6b4700;--focus:#1f5fbf}
@media (prefers-color-scheme:dark){:root{--fg:#e3e7eb;--muted:#a3afbb;--line:#3a444e;--bg:#12171c;--card:#1b2229;--head:#232c35;--accent:#8ab4ff;--sel:#203450;--ok-bg:#173d25;--ok:#9be3b0;--bad-bg:#4a1d1d;--bad:#ffb4b4;--warn-bg:#46360f;--warn:#ffd98a;--focus:#8ab4ff}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
.skip{position:absolute;left:-9999px;top:0;background:var(--card);color:var(--accent);padding:6px 10px;z-index:10}
.skip:focus{left:8px;top:8px}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
header{display:flex;flex-wrap:wrap;align-items:center;gap:8px 18px;padding:10px 20px;background:#17202a;color:#fff}
header a{color:#dfe6ee;text-decoration:none;font-weight:500}
header a:hover{color:#fff}
header .brand{font-weight:700;letter-spacing:.02em;margin-right:10px}
header .who{margin-left:auto;color:#c3ccd5;font-size:13px}
header form button{background:none;border:1px solid #7b8a99;color:#dfe6ee;padding:2px 8px;border-radius:4px;cursor:pointer}
.count:not(:empty){display:inline-block;min-width:1.4em;padding:0 5px;border-radius:9px;background:#c62828;color:#fff;font-size:12px;text-align:center}
main{padding:18px 20px;max-width:1400px}
h1{font-size:20px;margin:4px 0 14px}
h2{font-size:16px;margin:22px 0 8px}
h3{font-size:14px;margin:10px 0 6px}
a{color:var(--accent)}
code{word-break:break-all}
table{border-collapse:collapse;width:100%;background:var(--card);border:1px solid var(--line)}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}
th{background:var(--head);font-weight:600;font-size:13px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:12px 14px;margin:0 0 12px}
.card h2{margin-top:4px}
.meta{color:var(--muted);font-size:13px}
.grid{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:12px}
pre.json{background:var(--head);border:1px solid var(--line);padding:8px;border-radius:4px;overflow:auto;max-height:260px;margin:4px 0;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;font-weight:600;background:var(--head);color:var(--fg)}
.badge.ok{background:var(--ok-bg);color:var(--ok)}.badge.bad{background:var(--bad-bg);color:var(--bad)}.badge.warn{background:var(--warn-bg);color:var(--warn)}
.banner{background:var(--warn-bg);color:var(--warn);border:1px solid #f0d48a;padding:8px 12px;border-radius:4px;margin-bottom:14px}
.flash{background:var(--sel);border:1px solid #b4d3f5;padding:8px 12px;border-radius:4px;margin-bottom:14px}
.error{background:var(--bad-bg);color:var(--bad);border:1px solid #f1b2b2;padding:8px 12px;border-radius:4px;margin-bottom:14px}
form.inline{display:inline}
button{font:inherit;padding:4px 12px;border-radius:4px;border:1px solid #7b8794;background:var(--card);color:var(--fg);cursor:pointer}
button.primary{background:#1a7f37;border-color:#1a7f37;color:#fff}
button.danger{background:var(--card);border-color:#c62828;color:var(--bad)}
input[type=text],input[type=password],input[type=number],input[type=datetime-local],select,textarea{font:inherit;padding:4px 6px;border:1px solid #7b8794;border-radius:4px;background:var(--card);color:var(--fg);max-width:100%}
textarea{width:100%;font-family:ui-monospace,Menlo,monospace;font-size:12px}
label{display:inline-flex;gap:6px;align-items:center;flex-wrap:wrap}
label.wide{display:block}
.field{margin:6px 0}.field label{margin-right:8px}
.actions{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin-top:8px}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg{background:#fff;border:1px solid var(--line);max-width:100%;height:auto}
details summary{cursor:pointer;color:var(--accent)}
.timeline{list-style:none;margin:0;padding:0;border-left:3px solid var(--line)}
.timeline li{margin:0 0 10px 0;padding:6px 12px;position:relative;background:var(--card);border:1px solid var(--line);border-radius:6px;margin-left:14px}
.timeline li::before{content:"";position:absolute;left:-22px;top:12px;width:11px;height:11px;border-radius:50%;background:var(--accent)}
.timeline .kind{font-weight:600}
.filters{display:flex;gap:8px;align-items:center;margin-bottom:12px;flex-wrap:wrap}
.narrow{max-width:420px}
.wide{width:100%}
.tabs{display:flex;flex-wrap:wrap;gap:4px;border-bottom:1px solid var(--line);margin-bottom:10px}
.tabs a{padding:6px 12px;text-decoration:none;border:1px solid transparent;border-bottom:none;border-radius:6px 6px 0 0}
.tabs a[aria-current=page]{background:var(--card);border-color:var(--line);font-weight:600}
.split{display:grid;grid-template-columns:minmax(0,5fr) minmax(0,6fr);gap:14px;align-items:start}
.list table.rows td,.list table.rows th{padding:5px 8px}
tr.selected td{background:var(--sel)}
tr.selected td:first-child{box-shadow:inset 3px 0 0 var(--accent)}
.detail{position:sticky;top:8px}
.diff pre{background:var(--head);border:1px solid var(--line);padding:6px;white-space:pre-wrap}
.diff del{color:var(--bad);text-decoration:none}.diff ins{color:var(--ok);text-decoration:none}
.tabs .count{background:var(--head);color:var(--fg)}
kbd{border:1px solid var(--line);border-bottom-width:2px;border-radius:3px;padding:0 4px;font-size:12px}
.pager a{margin:0 4px}
@media (max-width:700px){main{padding:12px 10px}header{padding:8px 10px;gap:6px 12px}header .who{margin-left:0}.grid,.split{grid-template-columns:minmax(0,1fr)}.detail{position:static}th,td{padding:4px 5px}.keys{display:none}}
"#;

/// The page frame: header with navigation, optional banners, the body.
pub fn page(title: &str, viewer: Option<&Viewer<'_>>, flash: Option<&str>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 4096);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{} · Charter</title><style>{STYLE}</style>{}</head><body><a class=\"skip\" href=\"#main\">Skip to content</a><header><span class=\"brand\">Charter</span>",
        esc(title),
        if viewer.is_some() {
            "<script src=\"/assets/inbox.js\" defer></script>"
        } else {
            ""
        }
    );
    if let Some(v) = viewer {
        out.push_str("<nav aria-label=\"Main\"><a href=\"/inbox\">Inbox <span class=\"count\" data-nav-count></span></a> <a href=\"/events\">Events</a> <a href=\"/runs\">Runs</a> <a href=\"/charters\">Charters</a> <a href=\"/rejected\">Rejected</a> <a href=\"/knowledge\">Knowledge</a> <a href=\"/audit\">Audit</a></nav>");
        let _ = write!(
            out,
            "<span class=\"who\">{} ({})</span>{}",
            esc(v.name),
            esc(v.role),
            button_form("/logout", v.csrf, "Log out", "")
        );
    }
    out.push_str("</header><main id=\"main\" tabindex=\"-1\">");
    if viewer.is_some_and(|v| v.open) {
        out.push_str("<div class=\"banner\"><strong>Open access.</strong> charter.yaml defines no tokens, so anyone who can reach this server may use the UI and the API as an admin. Define <code>tokens:</code> before exposing it beyond this machine.</div>");
    }
    if let Some(text) = flash.and_then(super::flash::message) {
        let _ = write!(
            out,
            "<div class=\"flash\" role=\"status\">{}</div>",
            esc(&text)
        );
    }
    out.push_str(body);
    out.push_str("</main></body></html>");
    out
}

/// A list page's URL: `path` with the non-empty `params` and the `cursor` (when given).
pub fn page_url(path: &str, params: &[(&str, Option<&str>)], cursor: Option<&str>) -> String {
    let mut url = format!("{path}?");
    for (k, v) in params.iter().chain([("cursor", cursor)].iter()) {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            let _ = write!(url, "{k}={}&", url_enc(v));
        }
    }
    url.trim_end_matches(['&', '?']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let block = json_block(&serde_json::json!({"s": "</pre><script>"}));
        assert!(!block.contains("<script>"), "{block}");
    }

    #[test]
    fn formats_times_on_the_configured_clock() {
        let utc = Zone::utc();
        assert_eq!(time(&utc, 0), "1970-01-01 00:00:00");
        assert_eq!(time(&utc, 1_709_210_096_000), "2024-02-29 12:34:56");
        assert_eq!(time(&utc, 951_782_400_000), "2000-02-29 00:00:00");
        // Paris: +01:00 in winter, +02:00 in summer; the day rolls over with the offset.
        let paris = Zone::parse("Europe/Paris").unwrap();
        assert_eq!(time(&paris, 1_709_210_096_000), "2024-02-29 13:34:56");
        // 2026-07-01T22:30:00Z is already July 2nd in Paris.
        assert_eq!(time(&paris, 1_782_945_000_000), "2026-07-02 00:30:00");
        let fixed = Zone::parse("-05:30").unwrap();
        assert_eq!(time(&fixed, 0), "1969-12-31 18:30:00");
    }

    #[test]
    fn url_encoding_keeps_unreserved_only() {
        assert_eq!(url_enc("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
