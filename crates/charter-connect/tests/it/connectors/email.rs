//! The SMTP connector against a real SMTP server (Python's aiosmtpd).

use super::*;

// ---------------------------------------------------------------------------------------
// SMTP against aiosmtpd

struct SmtpServer {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start aiosmtpd on a free port; every message is written to `<dir>/<n>.eml`. `None` when
/// aiosmtpd is missing and the test may skip (`crate::tools`: never under CI=true).
async fn start_smtp() -> Option<SmtpServer> {
    if !crate::tools::available(crate::tools::Tool::Smtp, crate::tools::python_aiosmtpd) {
        return None;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = temp_dir("smtp");
    let script = r#"
import sys, time, os
from aiosmtpd.controller import Controller
out = sys.argv[2]
class H:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        H.n += 1
        with open(os.path.join(out, "%d.eml" % H.n), "wb") as f:
            f.write(b"X-Rcpt: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(envelope.content)
        return "250 Message accepted"
c = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
while True:
    time.sleep(1)
"#;
    let child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3 with aiosmtpd (pip install aiosmtpd; .ci/run installs it)");
    let server = SmtpServer { child, port, dir };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("aiosmtpd did not start on port {port}; is the aiosmtpd Python module installed?");
}

#[tokio::test]
async fn email_reaches_a_real_smtp_server_with_a_message_id_from_the_key() {
    let Some(server) = start_smtp().await else {
        return;
    };
    let smtp = SmtpConnector {
        name: "mail".into(),
        host: "127.0.0.1".into(),
        port: server.port,
        security: SmtpSecurity::None,
        username: None,
        password: None,
        from: "Charter <charter@acme.example>".into(),
        timeout: Duration::from_secs(10),
        // The test relay listens on 127.0.0.1.
        allow_private: true,
        allowed_domains: Vec::new(),
    };
    let email = Email {
        to: "lead@acme.example, Ops <ops@acme.example>".into(),
        subject: "Cancellation risk: Acme Corp".into(),
        body: "Acme asked to cancel.\nPlease call them today.".into(),
    };
    let out = smtp.attempt(&email, "0123abcd").await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.status, Some(250));
    let text = std::fs::read_to_string(server.dir.join("1.eml")).unwrap();
    assert!(
        text.contains("X-Rcpt: lead@acme.example,ops@acme.example"),
        "{text}"
    );
    assert!(
        text.contains("Message-ID: <0123abcd@acme.example>"),
        "{text}"
    );
    assert!(
        text.contains("Subject: Cancellation risk: Acme Corp"),
        "{text}"
    );
    assert!(text.contains("Please call them today."), "{text}");

    // STARTTLS required but the server does not offer it: a clear, permanent failure.
    let mut tls = smtp.clone();
    tls.security = SmtpSecurity::StartTls;
    let out = tls.attempt(&email, "k2").await;
    assert!(!out.ok);
    assert!(!server.dir.join("2.eml").exists());

    // Nobody listening: retryable.
    let mut gone = smtp.clone();
    gone.port = 1;
    let out = gone.attempt(&email, "k3").await;
    assert!(!out.ok && out.retryable, "{out:?}");

    // Without allow_private the outbound guard refuses the loopback relay: nothing is sent
    // and trying again cannot help.
    for host in ["127.0.0.1", "localhost"] {
        let mut guarded = smtp.clone();
        guarded.allow_private = false;
        guarded.host = host.into();
        let out = guarded.attempt(&email, "k4").await;
        assert!(!out.ok && !out.retryable, "{out:?}");
        let error = out.error.unwrap_or_default();
        assert!(
            error.contains("refused by the outbound guard")
                && error.contains("`allow_private: true` on the connector"),
            "{error}"
        );
    }
    assert!(!server.dir.join("2.eml").exists() && !server.dir.join("3.eml").exists());

    // With `allowed_domains`, a recipient elsewhere fails the message before any
    // connection: nothing reaches the relay, and a retry cannot help.
    let mut fenced = smtp.clone();
    fenced.allowed_domains = vec!["acme.example".into()];
    let stray = Email {
        to: "lead@acme.example, attacker@evil.example".into(),
        ..email.clone()
    };
    let out = fenced.attempt(&stray, "k5").await;
    assert!(!out.ok && !out.retryable, "{out:?}");
    assert!(
        out.error
            .unwrap_or_default()
            .contains("attacker@evil.example is not in the connector's allowed_domains"),
    );
    assert!(!server.dir.join("2.eml").exists());
    // Inside the fence it is delivered.
    let out = fenced.attempt(&email, "k6").await;
    assert!(out.ok, "{out:?}");
    let text = std::fs::read_to_string(server.dir.join("2.eml")).unwrap();
    assert!(text.contains("Message-ID: <k6@acme.example>"), "{text}");
}
