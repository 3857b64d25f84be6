//! Outbound safety: refuse connections to addresses inside the operator's network.
//!
//! Every outbound request of a connector without `allow_private: true` goes through
//! [`GuardedResolver`]: the host is resolved, every address is checked, and the client
//! connects only to addresses that passed (the resolver hands reqwest the checked list, so
//! there is no second lookup to race). URLs whose host is an IP literal never reach a
//! resolver, so [`check_url`] checks those before any connection is attempted. The URL
//! parser normalises the odd spellings (`0x7f000001`, `2130706433`, `127.1`) to dotted
//! IPv4 first, so they are caught as what they are.

use std::net::{IpAddr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is refused, for messages (the classification lives in
/// [`charter_core::net`], which `charter check` shares).
pub use charter_core::net::blocked_reason;

/// Refusal of an outbound destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused by the outbound guard: {host} is {reason}; set `allow_private: true` on the connector to allow it"
)]
pub struct Refused {
    pub host: String,
    pub reason: &'static str,
}

/// Check a URL whose host is an IP literal (names are checked by [`GuardedResolver`]).
pub fn check_url(url: &Url) -> Result<(), Refused> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    match blocked_reason(ip) {
        Some(reason) => Err(Refused {
            host: ip.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Keep only the addresses that pass; refuse when none does.
pub fn filter_addrs(host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
    let mut first_reason = None;
    let ok: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match blocked_reason(a.ip()) {
            Some(r) => {
                first_reason.get_or_insert(r);
                false
            }
            None => true,
        })
        .collect();
    if ok.is_empty() {
        return Err(Refused {
            host: host.to_string(),
            reason: first_reason.unwrap_or("not resolvable to any address"),
        });
    }
    Ok(ok)
}

/// A DNS resolver that returns only checked addresses.
#[derive(Debug, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok = filter_addrs(&host, addrs)?;
            let it: Addrs = Box::new(ok.into_iter());
            Ok(it)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(s: &str) -> bool {
        blocked_reason(s.parse().unwrap()).is_some()
    }

    #[test]
    fn private_and_special_ranges_are_blocked() {
        for s in [
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
        ] {
            assert!(blocked(s), "{s} must be blocked");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for s in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "172.32.0.1",
        ] {
            assert!(!blocked(s), "{s} must pass");
        }
    }

    #[test]
    fn odd_ip_spellings_are_normalised_and_blocked() {
        for u in [
            "http://0x7f000001/",
            "http://2130706433/",
            "http://127.1/",
            "http://017700000001/",
            "http://[::1]:8080/",
            "http://[::ffff:169.254.169.254]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
        ] {
            let url = Url::parse(u).unwrap();
            assert!(check_url(&url).is_err(), "{u} must be refused");
        }
        assert!(check_url(&Url::parse("http://example.com/").unwrap()).is_ok());
        assert!(check_url(&Url::parse("http://8.8.8.8/").unwrap()).is_ok());
    }

    #[test]
    fn filter_keeps_public_and_refuses_all_private() {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "93.184.216.34:80".parse().unwrap();
        assert_eq!(filter_addrs("x", vec![a, b]).unwrap(), vec![b]);
        let err = filter_addrs("localhost", vec![a]).unwrap_err();
        assert_eq!(err.host, "localhost");
        assert!(err.to_string().contains("allow_private"));
    }
}
