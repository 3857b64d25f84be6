//! `server:` and `worker:` of `charter.yaml`: listen address, public URL, exposure limits
//! ([`NetSettings`]) and the worker's pacing ([`WorkerSettings`]).

use std::time::Duration;

use serde::Deserialize;

use crate::config::BacklogSettings;
use crate::config::components::project::ProjectChecker;
use crate::config::diag::Check;
use crate::config::raw::{RawBacklog, RawProject, S, Scalar};
use crate::config::values::{parse_duration, parse_rate, parse_size};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<S<Scalar>>,
    pub body_limit: Option<S<Scalar>>,
    pub public_url: Option<S<String>>,
    pub timezone: Option<S<String>>,
    pub allowed_hosts: Option<S<Vec<S<String>>>>,
    pub trusted_proxies: Option<S<Vec<S<String>>>>,
    pub insecure_open_admin: Option<S<bool>>,
    pub header_timeout: Option<S<Scalar>>,
    pub body_timeout: Option<S<Scalar>>,
    pub max_connections: Option<S<i64>>,
    pub webhook_rate: Option<S<Scalar>>,
    pub webhook_client_rate: Option<S<Scalar>>,
    pub rejected_keep: Option<S<i64>>,
    pub backlog: Option<S<RawBacklog>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    pub lease: Option<S<Scalar>>,
    pub poll_interval: Option<S<Scalar>>,
    pub concurrency: Option<S<i64>>,
    pub shutdown_grace: Option<S<Scalar>>,
    pub alert_interval: Option<S<Scalar>>,
    pub retention: Option<S<Scalar>>,
}

/// Server settings from `charter.yaml` (`server:`, `store:`, `worker:`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Address to listen on; `None` means the default `127.0.0.1:8080` (CLI/env override it).
    pub listen: Option<String>,
    /// Store location: a SQLite file path relative to the project (default `charter.db`).
    pub store: String,
    /// Largest accepted webhook body in bytes (default 1 MiB).
    pub body_limit: usize,
    /// Base URL of the UI used in links (notifications); optional.
    pub public_url: Option<String>,
    /// The time zone the web UI shows times in and reads typed times in (`server.timezone`,
    /// an IANA name or a fixed offset; default UTC). The API always speaks Unix
    /// milliseconds.
    pub timezone: crate::cron::Zone,
    pub worker: WorkerSettings,
    /// Who may reach the server and how much of it one connection may hold.
    pub net: NetSettings,
}

/// The server's exposure: which `Host` names it answers, which peers may speak for a
/// client, connection limits and webhook rate limits (`server:` in charter.yaml).
#[derive(Debug, Clone, PartialEq)]
pub struct NetSettings {
    /// `Host` values accepted besides loopback names (`localhost`, `*.localhost`), IP
    /// literals and `public_url`'s host (`server.allowed_hosts`). An entry `*.example.com`
    /// accepts every subdomain; `*` alone accepts any host. The check guards against DNS
    /// rebinding; it applies to the UI, the admin API and MCP whenever no tokens are
    /// configured, and always when this list is not empty.
    pub allowed_hosts: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed (`server.trusted_proxies`: addresses or
    /// CIDR ranges). The client address (for limiters, the audit log and logs) is the
    /// right-most forwarded address that is not itself a trusted proxy.
    pub trusted_proxies: Vec<IpRange>,
    /// Serve the admin API and UI without tokens on a non-loopback address
    /// (`server.insecure_open_admin`; default false: the server refuses to start).
    pub insecure_open_admin: bool,
    /// Longest wait for a request's head, once the connection is open or the previous
    /// answer was sent (`server.header_timeout`, default 10 s). It is also the idle
    /// keep-alive timeout: a connection that sends no new request within it is closed.
    pub header_timeout: Duration,
    /// Longest time to read a whole request body (`server.body_timeout`, default 30 s):
    /// a body that trickles in or stops short of its `Content-Length` is answered 408.
    pub body_timeout: Duration,
    /// Connections served at once (`server.max_connections`, default 4096); more wait
    /// in the listen backlog.
    pub max_connections: usize,
    /// Webhook requests per second accepted on one path, all senders together
    /// (`server.webhook_rate`, e.g. `500/s`; default unlimited). Beyond it: 429 with
    /// `Retry-After`, nothing stored.
    pub webhook_rate: Option<f64>,
    /// Webhook requests per second accepted from one client address on one path
    /// (`server.webhook_client_rate`; default unlimited).
    pub webhook_client_rate: Option<f64>,
    /// Rejected payloads kept per charter (`server.rejected_keep`, default 10,000); past
    /// it, a rejected body is answered as before but not kept, and counted in
    /// `charter_rejected_dropped_total`.
    pub rejected_keep: u64,
    /// Bounds on unprocessed work (`server.backlog`).
    pub backlog: BacklogSettings,
}

impl Default for NetSettings {
    fn default() -> Self {
        NetSettings {
            allowed_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            insecure_open_admin: false,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            webhook_rate: None,
            webhook_client_rate: None,
            rejected_keep: 10_000,
            backlog: BacklogSettings::default(),
        }
    }
}

/// An address range written as an address or `address/prefix` (CIDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl IpRange {
    /// Parses `10.0.0.1`, `10.0.0.0/8`, `::1` or `fd00::/8`.
    pub fn parse(text: &str) -> Result<IpRange, String> {
        let t = text.trim();
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: std::net::IpAddr = addr.trim().parse().map_err(|_| {
            format!("`{t}` is not an IP address or range; expected e.g. `10.0.0.5` or `10.0.0.0/8`")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{t}`: the prefix length must be 0 to {max}")),
            },
        };
        Ok(IpRange { addr, prefix })
    }

    /// Whether `ip` is inside the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// Worker tuning.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSettings {
    /// How long a claim is held before another worker may take the event over.
    pub lease: Duration,
    /// How often an idle worker looks for work (it is also woken on ingest).
    pub poll_interval: Duration,
    /// Events processed at once across all charters on this node; `0` (the default, the
    /// key unset): chosen by the worker from what its runs wait on.
    pub concurrency: usize,
    /// How long shutdown waits for in-flight work before giving up on it (the lease then
    /// expires and another run picks it up).
    pub shutdown_grace: Duration,
    /// How often the charters' `alerts:` are evaluated (default 15 s).
    pub alert_interval: Duration,
    /// Finished work received longer ago than this is purged (hourly, by every worker
    /// node; see the store's retention). `None` (the default): kept forever.
    pub retention: Option<Duration>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            concurrency: 0,
            shutdown_grace: Duration::from_secs(10),
            alert_interval: Duration::from_secs(15),
            retention: None,
        }
    }
}

impl ProjectChecker<'_> {
    /// `server:`, `store:` and `worker:` of charter.yaml.
    pub(crate) fn settings(&mut self, raw: &RawProject) -> Settings {
        let defaults = WorkerSettings::default();
        let mut settings = Settings {
            listen: None,
            store: "charter.db".to_string(),
            body_limit: 1 << 20,
            public_url: None,
            timezone: crate::cron::Zone::utc(),
            worker: defaults.clone(),
            net: NetSettings::default(),
        };
        if let Some(server) = &raw.server {
            let server = &server.value;
            settings.listen = server.listen.as_ref().map(|l| l.value.0.clone());
            if let Some(limit) = &server.body_limit {
                match parse_size(&limit.value.0) {
                    Ok(0) => self.err(
                        limit.referenced,
                        "`body_limit` is 0; expected a size of at least 1 byte",
                    ),
                    Ok(n) => settings.body_limit = n,
                    Err(e) => self.err(limit.referenced, format!("`body_limit`: {e}")),
                }
            }
            if let Some(url) = &server.public_url {
                settings.public_url = self.absolute_url(url, "public_url");
            }
            if let Some(zone) = &server.timezone {
                match crate::cron::Zone::parse(&zone.value) {
                    Ok(z) => settings.timezone = z,
                    Err(e) => self.err(zone.referenced, format!("`timezone`: {e}")),
                }
            }
            settings.net = self.net(server);
        }
        if let Some(store) = &raw.store
            && let Some(s) = self.required_text(
                &Some(store.clone()),
                store.referenced,
                "store",
                "a SQLite file path",
            )
        {
            settings.store = s;
        }
        if let Some(worker) = &raw.worker {
            settings.worker = self.worker(&worker.value);
        }
        settings
    }

    /// `worker:`: lease, pacing, concurrency and retention.
    fn worker(&mut self, w: &RawWorker) -> WorkerSettings {
        let defaults = WorkerSettings::default();
        let mut worker = defaults.clone();
        worker.lease = self.duration_or(&w.lease, "lease", defaults.lease);
        worker.poll_interval =
            self.duration_or(&w.poll_interval, "poll_interval", defaults.poll_interval);
        worker.shutdown_grace =
            self.duration_or(&w.shutdown_grace, "shutdown_grace", defaults.shutdown_grace);
        worker.alert_interval =
            self.duration_or(&w.alert_interval, "alert_interval", defaults.alert_interval);
        if let Some(c) = &w.concurrency {
            worker.concurrency = self.positive(c, "concurrency").unwrap_or(1);
        }
        if let Some(r) = &w.retention
            && let Some(d) = self.duration(r, "retention")
        {
            if d < Duration::from_secs(3600) {
                self.err(
                    r.referenced,
                    "`retention` is shorter than 1h: finished work would be purged minutes after it ended; give at least 1h (90d is common)",
                );
            } else {
                worker.retention = Some(d);
            }
        }
        worker
    }

    /// `server:`'s exposure settings: allowed hosts, trusted proxies, connection limits,
    /// webhook rates and the rejected-payload cap.
    pub(crate) fn net(&mut self, server: &RawServer) -> NetSettings {
        let d = NetSettings::default();
        let mut net = NetSettings {
            header_timeout: self.duration_or(
                &server.header_timeout,
                "header_timeout",
                d.header_timeout,
            ),
            body_timeout: self.duration_or(&server.body_timeout, "body_timeout", d.body_timeout),
            ..d
        };
        for (key, value) in [
            ("header_timeout", &server.header_timeout),
            ("body_timeout", &server.body_timeout),
        ] {
            if let Some(v) = value
                && parse_duration(&v.value.0).is_ok_and(|d| d.is_zero())
            {
                self.err(
                    v.referenced,
                    format!("`{key}` is 0; expected a duration such as `10s`"),
                );
            }
        }
        for h in server.allowed_hosts.iter().flat_map(|l| l.value.iter()) {
            let host = h.value.trim().to_ascii_lowercase();
            let bare = host.strip_prefix("*.").unwrap_or(&host);
            if host != "*"
                && (bare.is_empty()
                    || bare.contains(['/', ':', '*', ' '])
                    || !bare
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
            {
                self.err(
                    h.referenced,
                    format!(
                        "`allowed_hosts`: `{}` is not a host name; expected a name such as `charter.example.com`, `*.example.com` or `*` (no scheme, port or path)",
                        h.value
                    ),
                );
            } else {
                net.allowed_hosts.push(host);
            }
        }
        for p in server.trusted_proxies.iter().flat_map(|l| l.value.iter()) {
            match IpRange::parse(&p.value) {
                Ok(r) => net.trusted_proxies.push(r),
                Err(e) => self.err(p.referenced, format!("`trusted_proxies`: {e}")),
            }
        }
        if let Some(b) = &server.insecure_open_admin {
            net.insecure_open_admin = b.value;
        }
        if let Some(m) = &server.max_connections {
            net.max_connections = self
                .positive(m, "max_connections")
                .unwrap_or(d.max_connections);
        }
        if let Some(k) = &server.rejected_keep {
            if k.value < 0 {
                self.err(
                    k.referenced,
                    "`rejected_keep` is negative; expected 0 (keep none) or more",
                );
            } else {
                net.rejected_keep = k.value as u64;
            }
        }
        if let Some(b) = &server.backlog {
            net.backlog = self.backlog(&b.value);
        }
        for (key, value, slot) in [
            ("webhook_rate", &server.webhook_rate, &mut net.webhook_rate),
            (
                "webhook_client_rate",
                &server.webhook_client_rate,
                &mut net.webhook_client_rate,
            ),
        ] {
            if let Some(v) = value {
                match parse_rate(&v.value.0) {
                    Ok(r) => *slot = Some(r),
                    Err(e) => self.err(v.referenced, format!("`{key}`: {e}")),
                }
            }
        }
        net
    }
}
