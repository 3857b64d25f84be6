//! Who may reach the admin surfaces (the API, MCP, the UI, health and metrics): the `Host`
//! check against DNS rebinding, the refusal of cross-site state-changing requests, the JSON
//! content type of API writes, security headers on every answer, and the client's address
//! behind trusted proxies.
//!
//! Webhook routes and Slack's interactive callback are outside this layer: they are called
//! by other servers and authenticated by their signatures.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use charter_core::config::IpRange;
use sha2::{Digest, Sha256};

use crate::Runtime;
use crate::client::{CLIENT, ClientAddr};

/// The exposure rules of one running server, built from `charter.yaml` at start-up.
pub struct Exposure {
    /// Whether `Host` is checked: with no tokens (the open mode) or with `allowed_hosts`.
    check_host: bool,
    /// Accepted host names besides loopback names and IP literals (lower case; `*.x`
    /// entries match subdomains of `x`; `*` matches any).
    allowed: Vec<String>,
    /// `server.public_url`'s origin (`scheme://host[:port]`, lower case), if set.
    public_origin: Option<String>,
    trusted: Vec<IpRange>,
    csp: HeaderValue,
}

impl Exposure {
    /// The rules for this project: see [`charter_core::config::NetSettings`].
    pub fn new(runtime: &Runtime) -> Exposure {
        let settings = &runtime.project.settings;
        let mut allowed = settings.net.allowed_hosts.clone();
        let public_origin = settings
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| {
                if let Some(h) = u.host_str() {
                    allowed.push(h.to_ascii_lowercase());
                }
                u.origin().ascii_serialization().to_ascii_lowercase()
            });
        Exposure {
            check_host: runtime.tokens.is_empty() || !settings.net.allowed_hosts.is_empty(),
            allowed,
            public_origin,
            trusted: settings.net.trusted_proxies.clone(),
            csp: content_security_policy(),
        }
    }

    /// Whether a request naming `host` (the `Host` header without its port) is answered.
    pub fn host_allowed(&self, host: &str) -> bool {
        if !self.check_host {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        // An address literal cannot be a rebinding: that needs a name the attacker owns.
        if host.parse::<IpAddr>().is_ok()
            || host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|h| h.parse::<IpAddr>().is_ok())
        {
            return true;
        }
        if host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        self.allowed.iter().any(|a| {
            a == "*"
                || *a == host
                || a.strip_prefix('*').is_some_and(|suffix| {
                    suffix.starts_with('.') && host.ends_with(suffix) && host.len() > suffix.len()
                })
        })
    }

    /// The client's address: `peer`, or the right-most `X-Forwarded-For` address that is not
    /// a trusted proxy when `peer` is one.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut found = peer;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(text) = value.to_str() else {
                return found;
            };
            for part in text.rsplit(',') {
                let Some(ip) = parse_forwarded_ip(part) else {
                    // An unreadable entry: trust nothing to the left of it.
                    return found;
                };
                found = ip;
                if !self.is_trusted(ip) {
                    return ip;
                }
            }
        }
        found
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|r| r.contains(ip))
    }

    /// Why a state-changing request looks cross-site, if it does: a browser names the
    /// page's origin (`Origin`) and how it relates to the target (`Sec-Fetch-Site`);
    /// clients that send neither (the CLI, curl, agents) are not browsers.
    fn cross_site(&self, headers: &HeaderMap) -> Option<&'static str> {
        if let Some(site) = headers.get("sec-fetch-site") {
            let site = site.as_bytes();
            if !site.eq_ignore_ascii_case(b"same-origin") && !site.eq_ignore_ascii_case(b"none") {
                return Some("the request came from another site (Sec-Fetch-Site)");
            }
        }
        let origin = headers.get(header::ORIGIN)?;
        let Ok(origin) = origin.to_str() else {
            return Some("the request's Origin is not readable");
        };
        let origin = origin.trim().to_ascii_lowercase();
        if self.public_origin.as_deref() == Some(origin.as_str()) {
            return None;
        }
        let Some((scheme, authority)) = origin.split_once("://") else {
            return Some("the request came from an opaque origin (Origin: null)");
        };
        let default_port = match scheme {
            "https" => 443,
            "http" => 80,
            _ => return Some("the request's Origin is not a web page's"),
        };
        let Some((o_host, o_port)) = split_authority(authority, default_port) else {
            return Some("the request's Origin is not readable");
        };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        let Some((h_host, h_port)) = host
            .as_deref()
            .and_then(|h| split_authority(h, default_port))
        else {
            return Some("the request has an Origin but no readable Host");
        };
        if o_host == h_host && o_port == h_port {
            None
        } else {
            Some("the request came from another origin (Origin differs from Host)")
        }
    }
}

/// `host[:port]` (or `[v6][:port]`) split into the host and the port, `default` when absent.
fn split_authority(authority: &str, default: u16) -> Option<(&str, u16)> {
    let authority = authority.trim_end_matches('/');
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, port.parse().ok()?)),
        None => Some((authority, default)),
    }
}

/// The host name of a `Host` header value, without its port.
pub fn host_name(value: &str) -> Option<&str> {
    split_authority(value.trim(), 0).map(|(h, _)| h)
}

fn parse_forwarded_ip(part: &str) -> Option<IpAddr> {
    let p = part.trim();
    if let Ok(ip) = p.parse::<IpAddr>() {
        return Some(ip);
    }
    // `1.2.3.4:5678` or `[::1]:5678`
    p.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// The content security policy of every answer: nothing but the UI's one stylesheet (by
/// its hash), scripts from this origin only (the UI's one static file, `/assets/inbox.js`;
/// no inline script), requests and forms to this origin, no framing.
fn content_security_policy() -> HeaderValue {
    let hash = base64::engine::general_purpose::STANDARD
        .encode(Sha256::digest(crate::ui::html::STYLE.as_bytes()));
    let policy = format!(
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'sha256-{hash}'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut r = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        })
        .unwrap_or(false)
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// The layer over every admin surface: records the [`ClientAddr`], refuses a `Host` that
/// is not allowed (400), a cross-site state-changing request (403) and an API write whose
/// body is not JSON (415), and adds the security headers to every answer.
pub async fn admin_guard(
    State(exposure): State<Arc<Exposure>>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| exposure.client_ip(c.0.ip(), request.headers()));
    if let Some(ip) = client {
        request.extensions_mut().insert(ClientAddr(ip));
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_name)
        .or_else(|| request.uri().host())
        .map(str::to_owned);
    if !host.as_deref().is_some_and(|h| exposure.host_allowed(h)) {
        tracing::warn!(
            host = host.as_deref().unwrap_or(""),
            "request refused: host not allowed"
        );
        return secure(
            refuse(
                StatusCode::BAD_REQUEST,
                "this server does not answer to that host name; add it to server.allowed_hosts",
            ),
            &exposure,
        );
    }
    let method = request.method();
    if method != Method::GET && method != Method::HEAD && method != Method::OPTIONS {
        if let Some(why) = exposure.cross_site(request.headers()) {
            tracing::warn!(reason = why, path = %request.uri().path(), "cross-site request refused");
            return secure(
                refuse(
                    StatusCode::FORBIDDEN,
                    &format!("cross-site request refused: {why}"),
                ),
                &exposure,
            );
        }
        let path = request.uri().path();
        if (path.starts_with("/api/") || path == crate::mcp::MCP_PATH)
            && has_body(request.headers())
            && !is_json(request.headers())
        {
            return secure(
                refuse(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "API writes take a JSON body: send Content-Type: application/json",
                ),
                &exposure,
            );
        }
    }
    let response = match client {
        // The handler's logs carry the client address, and so do its audit entries.
        Some(ip) => {
            let span = tracing::info_span!("request", client = %ip);
            CLIENT
                .scope(ip, tracing::Instrument::instrument(next.run(request), span))
                .await
        }
        None => next.run(request).await,
    };
    secure(response, &exposure)
}

/// Adds the security headers an answer does not already carry.
fn secure(mut response: Response, exposure: &Exposure) -> Response {
    let h = response.headers_mut();
    h.entry("x-content-type-options")
        .or_insert(HeaderValue::from_static("nosniff"));
    h.entry("x-frame-options")
        .or_insert(HeaderValue::from_static("DENY"));
    h.entry("referrer-policy")
        .or_insert(HeaderValue::from_static("same-origin"));
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(exposure.csp.clone());
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposure(allowed: &[&str], trusted: &[&str], check_host: bool) -> Exposure {
        Exposure {
            check_host,
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            public_origin: Some("https://charter.example.com".into()),
            trusted: trusted.iter().map(|t| IpRange::parse(t).unwrap()).collect(),
            csp: content_security_policy(),
        }
    }

    #[test]
    fn hosts_loopback_literals_and_the_list_pass_others_do_not() {
        let e = exposure(&["charter.example.com", "*.corp.example"], &[], true);
        for ok in [
            "localhost",
            "app.localhost",
            "127.0.0.1",
            "[::1]",
            "10.1.2.3",
            "charter.example.com",
            "CHARTER.example.com.",
            "a.corp.example",
        ] {
            assert!(e.host_allowed(ok), "{ok}");
        }
        for bad in [
            "rebind.evil.example",
            "corp.example",
            "example.com",
            "localhost.evil",
        ] {
            assert!(!e.host_allowed(bad), "{bad}");
        }
        assert!(exposure(&[], &[], false).host_allowed("anything.example"));
        assert!(exposure(&["*"], &[], true).host_allowed("anything.example"));
    }

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("example.com:8080"), Some("example.com"));
        assert_eq!(host_name("[::1]:8080"), Some("::1"));
        assert_eq!(host_name("example.com"), Some("example.com"));
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_peers() {
        let e = exposure(&[], &["10.0.0.0/8"], true);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7, 10.0.0.3".parse().unwrap(),
        );
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            e.client_ip(proxy, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            e.client_ip(stranger, &h),
            stranger,
            "an untrusted peer's header is ignored"
        );
        let mut junk = HeaderMap::new();
        junk.insert("x-forwarded-for", "not-an-ip".parse().unwrap());
        assert_eq!(e.client_ip(proxy, &junk), proxy);
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        let e = exposure(&[], &[], true);
        let mut same = HeaderMap::new();
        same.insert("host", "127.0.0.1:8080".parse().unwrap());
        same.insert("origin", "http://127.0.0.1:8080".parse().unwrap());
        same.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert_eq!(e.cross_site(&same), None);
        let mut evil = same.clone();
        evil.insert("origin", "http://evil.example".parse().unwrap());
        evil.remove("sec-fetch-site");
        assert!(e.cross_site(&evil).is_some());
        let mut fetch = same.clone();
        fetch.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(e.cross_site(&fetch).is_some());
        let mut null = same.clone();
        null.insert("origin", "null".parse().unwrap());
        assert!(e.cross_site(&null).is_some());
        let mut public = HeaderMap::new();
        public.insert("host", "internal:8080".parse().unwrap());
        public.insert("origin", "https://charter.example.com".parse().unwrap());
        assert_eq!(
            e.cross_site(&public),
            None,
            "the public URL's origin is ours"
        );
        let mut cli = HeaderMap::new();
        cli.insert("host", "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            e.cross_site(&cli),
            None,
            "no browser headers: not a browser"
        );
    }
}
