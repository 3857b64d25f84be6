//! Address classification shared by the outbound guard (`charter-connect::ssrf`) and
//! validation: which IP addresses lie inside an operator's network, and whether a URL's or
//! a relay's host is such an address written literally. Pure functions, no lookups.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused, for messages.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return blocked_v4(v4).map(|_| "an IPv4-mapped or -embedded private address");
            }
            blocked_v6(v6)
        }
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address (including cloud metadata at 169.254.169.254)")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("an unspecified address")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("a carrier-grade NAT address")
    } else if ip.is_broadcast() || ip.is_multicast() || o[0] >= 240 {
        Some("a broadcast, multicast or reserved address")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("an IETF protocol assignment address")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("a benchmarking address")
    } else {
        None
    }
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("a unique-local address")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("a link-local address")
    } else if (s[0] & 0xffc0) == 0xfec0 {
        Some("a site-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(tail());
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(tail());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Why `host` (as written in a URL or a connector's `host:`) can never pass the outbound
/// guard: a literal loopback, private or otherwise reserved address (IPv4 in any spelling
/// the URL standard accepts, such as `127.1` or `0x7f000001`; IPv6 in brackets or bare), or
/// `localhost` (and names under it). `None` for any other name, which only a lookup can
/// judge.
pub fn private_host(host: &str) -> Option<&'static str> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return Some("a loopback name");
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(&host);
    if let Ok(v6) = bare.parse::<Ipv6Addr>() {
        return blocked_reason(IpAddr::V6(v6));
    }
    parse_ipv4(&host).and_then(|v4| blocked_reason(IpAddr::V4(v4)))
}

/// The host of an absolute `http://` or `https://` URL, as written (userinfo and port
/// removed; an IPv6 literal keeps its brackets).
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .trim()
        .strip_prefix("http://")
        .or_else(|| url.trim().strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#', '\\']).next()?;
    let host_port = authority.rsplit('@').next()?;
    if host_port.starts_with('[') {
        return host_port.find(']').map(|end| &host_port[..=end]);
    }
    host_port.split(':').next()
}

/// An IPv4 address as the URL standard parses a host: one to four parts separated by dots,
/// each decimal, octal (leading `0`) or hexadecimal (`0x`), the last filling the remaining
/// bytes. `None` when `host` is not such a number.
fn parse_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut numbers = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) = if let Some(h) = part.strip_prefix("0x") {
            (h, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (*part, 10)
        };
        if part.is_empty() {
            return None;
        }
        let n = if digits.is_empty() {
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        numbers.push(n);
    }
    let (last, head) = numbers.split_last()?;
    if head.iter().any(|n| *n > 255) || *last >= 1u64 << (8 * (5 - numbers.len())) {
        return None;
    }
    let mut value: u64 = *last;
    for (i, n) in head.iter().enumerate() {
        value += n << (8 * (3 - i));
    }
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_private_hosts_are_recognised() {
        for host in [
            "127.0.0.1",
            "127.1",
            "0x7f000001",
            "2130706433",
            "10.0.0.5",
            "192.168.1.1",
            "169.254.169.254",
            "[::1]",
            "::1",
            "[::ffff:127.0.0.1]",
            "localhost",
            "api.localhost",
            "0.0.0.0",
        ] {
            assert!(private_host(host).is_some(), "{host}");
        }
        for host in [
            "93.184.216.34",
            "api.example.com",
            "[2001:db8::1]",
            "1.2.3",
            "x.10",
        ] {
            assert_eq!(private_host(host), None, "{host}");
        }
    }

    #[test]
    fn the_host_of_a_url_is_found() {
        assert_eq!(url_host("http://127.0.0.1:8080/api"), Some("127.0.0.1"));
        assert_eq!(url_host("https://user:pw@[::1]:443/x"), Some("[::1]"));
        assert_eq!(url_host("https://api.example.com"), Some("api.example.com"));
        assert_eq!(url_host("ftp://x"), None);
    }
}
