//! Safe by default when reachable: the open mode only on loopback, the `Host` check
//! (rebinding), cross-site writes refused, security headers, connection limits (slow or
//! silent clients, too many connections, oversized heads), client addresses behind trusted
//! proxies, webhook rate limits and the cap on kept rejected payloads. Each test starts its
//! own server in-process on 127.0.0.1:0 with a real SQLite store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_server::{Role, Runtime, ServeOptions};
use charter_store::EventStore;
use charter_store::sqlite::SqliteStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::charter_yaml;

struct Node {
    dir: PathBuf,
    addr: std::net::SocketAddr,
    base: String,
    shutdown: CancellationToken,
    store: SqliteStore,
    http: reqwest::Client,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn project(server_yaml: &str, tokens: bool) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("charter-sec-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(dir.join("charters")).unwrap();
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    let mut yaml = format!(
        "server:\n{server_yaml}worker:\n  lease: 2s\n  poll_interval: 50ms\nconnectors:\n  helpdesk:\n    type: http\n    base_url: http://127.0.0.1:9\n    timeout: 2s\n    allow_private: true\n"
    );
    if tokens {
        std::fs::write(dir.join("secrets/admin"), "secret-admin").unwrap();
        yaml.push_str("tokens:\n  - { name: admin, role: admin, secret: file:secrets/admin }\n");
    }
    std::fs::write(dir.join("charter.yaml"), yaml).unwrap();
    std::fs::write(
        dir.join("charters/tickets.yaml"),
        charter_yaml("tickets", "shadow", "auto", "other"),
    )
    .unwrap();
    dir
}

async fn try_start(
    server_yaml: &str,
    tokens: bool,
    listen: std::net::SocketAddr,
) -> Result<Node, charter_server::ServeError> {
    let dir = project(server_yaml, tokens);
    charter_connect::install_crypto_provider();
    let runtime = Arc::new(Runtime::load(&dir).unwrap_or_else(|e| panic!("{e}")));
    let store = SqliteStore::open(&runtime.store_path()).unwrap();
    let shutdown = CancellationToken::new();
    let running = charter_server::start(
        runtime,
        store.clone(),
        ServeOptions {
            listen,
            role: Role::All,
            worker_id: Some("sec-w1".into()),
        },
        shutdown.clone(),
    )
    .await?;
    Ok(Node {
        dir,
        addr: running.addr,
        base: format!("http://{}", running.addr),
        shutdown,
        store,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    })
}

async fn start(server_yaml: &str, tokens: bool) -> Node {
    try_start(server_yaml, tokens, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
}

/// Sends `request` on a raw connection and reads until the server closes it or `limit`
/// passes; returns what was read and how long the connection stayed open.
async fn raw(addr: std::net::SocketAddr, request: &[u8], limit: Duration) -> (String, Duration) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t0 = Instant::now();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).into_owned(), t0.elapsed())
}

#[tokio::test]
async fn the_open_mode_is_refused_beyond_loopback_unless_named() {
    let err = try_start("  body_limit: 1MiB\n", false, ([0, 0, 0, 0], 0).into())
        .await
        .err()
        .expect("an open admin API on 0.0.0.0 must not start");
    let msg = err.to_string();
    assert!(
        msg.contains("without API tokens") && msg.contains("insecure_open_admin"),
        "{msg}"
    );
    // With tokens it starts; with the loud opt-out too.
    drop(
        try_start("  body_limit: 1MiB\n", true, ([0, 0, 0, 0], 0).into())
            .await
            .unwrap(),
    );
    drop(
        try_start(
            "  insecure_open_admin: true\n",
            false,
            ([0, 0, 0, 0], 0).into(),
        )
        .await
        .unwrap(),
    );
}

#[tokio::test]
async fn a_cross_site_write_and_a_rebinding_host_are_refused_in_the_open_mode() {
    let n = start("  body_limit: 1MiB\n", false).await;
    let mode_url = format!("{}/api/v1/charters/tickets/mode", n.base);
    let mode = |n: &Node| {
        let r = n.http.get(format!("{}/api/v1/charters", n.base)).send();
        async move { r.await.unwrap().text().await.unwrap() }
    };
    let before = mode(&n).await;
    assert!(before.contains("shadow"), "{before}");

    // The attack the review found: a page on another site posts text/plain.
    let r = n
        .http
        .post(&mode_url)
        .header("origin", "http://evil.example")
        .header("content-type", "text/plain")
        .body(r#"{"mode":"live"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().await.unwrap().contains("cross-site"));
    // A fetch from another site that hides its Origin still says Sec-Fetch-Site.
    let r = n
        .http
        .post(&mode_url)
        .header("sec-fetch-site", "cross-site")
        .json(&serde_json::json!({"mode": "live"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // A non-JSON body is not an API write.
    let r = n
        .http
        .post(&mode_url)
        .header("content-type", "text/plain")
        .body(r#"{"mode":"live"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    assert!(
        mode(&n).await.contains("shadow"),
        "nothing changed the mode"
    );

    // DNS rebinding: the attacker's name resolving to 127.0.0.1.
    let r = n
        .http
        .get(format!("{}/api/v1/charters", n.base))
        .header("host", "rebind.evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("allowed_hosts"));
    let r = n
        .http
        .get(format!("{}/inbox", n.base))
        .header("host", format!("rebind.evil.example:{}", n.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "the UI too");
    let r = n
        .http
        .get(format!("{}/api/v1/charters", n.base))
        .header("host", format!("localhost:{}", n.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "loopback names are served");

    // A same-origin write (the UI's own forms, the CLI) still works.
    let r = n
        .http
        .post(&mode_url)
        .header("origin", n.base.clone())
        .header("sec-fetch-site", "same-origin")
        .json(&serde_json::json!({"mode": "live"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    assert!(mode(&n).await.contains("live"));

    // Webhooks are called by other servers: no Host or Origin rule applies to them.
    let r = n
        .http
        .post(format!("{}/hooks/tickets", n.base))
        .header("host", "hooks.provider.example")
        .header("origin", "https://provider.example")
        .json(&serde_json::json!({"ticket": {"id": 1, "subject": "refund"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

#[tokio::test]
async fn allowed_hosts_apply_with_tokens_and_answers_carry_security_headers() {
    let n = start("  allowed_hosts: [charter.example.com]\n", true).await;
    let get = |host: &str| {
        n.http
            .get(format!("{}/api/v1/charters", n.base))
            .header("host", host)
            .header("authorization", "bearer secret-admin")
            .send()
    };
    let ok = get("charter.example.com").await.unwrap();
    // A lowercase scheme is the same scheme (RFC 9110 11.1).
    assert_eq!(ok.status().as_u16(), 200);
    let h = ok.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(
        get("other.example.com").await.unwrap().status().as_u16(),
        400
    );

    let login = n
        .http
        .get(format!("{}/login", n.base))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    let csp = login.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("style-src 'sha256-"),
        "{csp}"
    );
    let html = login.text().await.unwrap();
    assert!(
        !html.contains("style=\""),
        "inline style attributes break the policy"
    );
}

#[tokio::test]
async fn slow_and_silent_clients_are_closed_within_the_limits() {
    let n = start("  header_timeout: 1s\n  body_timeout: 1s\n", false).await;
    let limit = Duration::from_secs(5);
    // Silent: connect and send nothing.
    let (_, open) = raw(n.addr, b"", limit).await;
    assert!(
        open < Duration::from_millis(2500),
        "a silent connection stayed {open:?}"
    );
    // Half a request line.
    let (_, open) = raw(n.addr, b"GET /heal", limit).await;
    assert!(
        open < Duration::from_millis(2500),
        "half a request line stayed {open:?}"
    );
    // Headers one byte at a time.
    let mut s = TcpStream::connect(n.addr).await.unwrap();
    let t0 = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed = false;
    for b in head {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        if t0.elapsed() > limit {
            break;
        }
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    assert!(
        closed || t0.elapsed() < Duration::from_millis(4000),
        "byte-by-byte headers kept the connection {:?}",
        t0.elapsed()
    );
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "a slow head was served"
    );
    // A body shorter than its Content-Length: 408, then closed.
    let (out, open) = raw(
        n.addr,
        b"POST /hooks/tickets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ticket\":",
        limit,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(
        open < Duration::from_millis(2500),
        "a short body stayed {open:?}"
    );
    // A body that trickles in.
    let mut s = TcpStream::connect(n.addr).await.unwrap();
    s.write_all(b"POST /api/v1/replay HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    for _ in 0..10 {
        if s.write_all(b" ").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 408") || out.starts_with("HTTP/1.1 400"),
        "a trickling body was answered {out}"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(4500),
        "{:?}",
        t0.elapsed()
    );
    // The server still answers.
    assert_eq!(
        n.http
            .get(format!("{}/healthz", n.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn connections_beyond_the_maximum_wait_and_an_oversized_head_gets_431() {
    let n = start("  max_connections: 2\n  header_timeout: 30s\n", false).await;
    let a = TcpStream::connect(n.addr).await.unwrap();
    let b = TcpStream::connect(n.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let url = format!("{}/healthz", n.base);
    assert!(
        client.get(&url).send().await.is_err(),
        "a third connection was served while two were open"
    );
    drop(a);
    drop(b);
    let mut served = false;
    for _ in 0..20 {
        if client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "no connection was served after the others closed");

    // A 1 MB header: the client reads a 431, not a reset.
    let mut req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 1 << 20));
    req.extend(b"\r\n\r\n");
    let mut s = TcpStream::connect(n.addr).await.unwrap();
    // Sent as a client on a real network would: in pieces, still sending when the server
    // has answered.
    for chunk in req.chunks(32 << 10) {
        if s.write_all(chunk).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 431"),
        "{}",
        &out[..out.len().min(200)]
    );
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    // Behind a trusted proxy (here 127.0.0.1), one client's bad tokens lock out that client
    // only.
    let n = start("  trusted_proxies: [127.0.0.1]\n", true).await;
    let call = |xff: &'static str, token: &'static str| {
        n.http
            .get(format!("{}/api/v1/charters", n.base))
            .header("x-forwarded-for", xff)
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    for _ in 0..20 {
        assert_eq!(
            call("203.0.113.5", "wrong")
                .await
                .unwrap()
                .status()
                .as_u16(),
            401
        );
    }
    assert_eq!(
        call("203.0.113.5", "wrong")
            .await
            .unwrap()
            .status()
            .as_u16(),
        429
    );
    assert_eq!(
        call("203.0.113.6", "secret-admin")
            .await
            .unwrap()
            .status()
            .as_u16(),
        200,
        "another client behind the same proxy is not locked out"
    );

    // The audit log records the forwarded client.
    let r = n
        .http
        .post(format!("{}/api/v1/charters/tickets/pause", n.base))
        .header("x-forwarded-for", "203.0.113.6")
        .header("authorization", "Bearer secret-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let audit: serde_json::Value = n
        .http
        .get(format!("{}/api/v1/audit?action=charter.pause", n.base))
        .header("x-forwarded-for", "203.0.113.6")
        .header("authorization", "Bearer secret-admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        audit["audit"][0]["detail"]["client"], "203.0.113.6",
        "{audit}"
    );

    // Without trusted proxies the header is the client's word and counts for nothing.
    let n = start("  body_limit: 1MiB\n", true).await;
    for i in 0..20 {
        let r = n
            .http
            .get(format!("{}/api/v1/charters", n.base))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .header("authorization", "Bearer wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let r = n
        .http
        .get(format!("{}/api/v1/charters", n.base))
        .header("x-forwarded-for", "198.51.100.200")
        .header("authorization", "Bearer secret-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        429,
        "a forged header escaped the limit"
    );
}

#[tokio::test]
async fn webhook_rates_and_the_rejected_cap_hold() {
    let n = start(
        "  webhook_client_rate: 5/s\n  trusted_proxies: [127.0.0.1]\n  rejected_keep: 3\n",
        false,
    )
    .await;
    let send = |xff: &'static str, body: String| {
        n.http
            .post(format!("{}/hooks/tickets", n.base))
            .header("x-forwarded-for", xff)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let mut limited = 0;
    let mut accepted = 0;
    for i in 0..12 {
        let r = send(
            "203.0.113.5",
            format!("{{\"ticket\":{{\"id\":{i},\"subject\":\"x\"}}}}"),
        )
        .await
        .unwrap();
        match r.status().as_u16() {
            202 => accepted += 1,
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                limited += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(
        accepted >= 5 && limited >= 5,
        "accepted {accepted}, limited {limited}"
    );
    let other = send(
        "203.0.113.9",
        r#"{"ticket":{"id":100,"subject":"x"}}"#.into(),
    )
    .await
    .unwrap();
    assert_eq!(
        other.status().as_u16(),
        202,
        "another client has its own rate"
    );

    // Malformed bodies past the cap are answered the same but not kept.
    for i in 0..5 {
        let r = send(
            if i % 2 == 0 {
                "198.51.100.1"
            } else {
                "198.51.100.2"
            },
            "{not json".into(),
        )
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let kept = n
        .store
        .list_rejected(Some("tickets".into()), 100)
        .await
        .unwrap();
    assert_eq!(kept.len(), 3, "kept {kept:?}");
    let metrics = n
        .http
        .get(format!("{}/metrics", n.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("charter_rejected_dropped_total{charter=\"tickets\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("charter_webhooks_limited_total{charter=\"tickets\",limit=\"client\"}")
    );
}
