//! Notifications by e-mail, through a real SMTP server (Python's aiosmtpd).

use super::*;

/// aiosmtpd on a free port (as in charter-connect's connector tests); every message is
/// written to `<dir>/<n>.eml`.
pub(crate) struct SmtpServer {
    child: std::process::Child,
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `None` when aiosmtpd is missing and the test may skip (`crate::tools`: never under CI=true).
pub(crate) async fn start_smtp() -> Option<SmtpServer> {
    if !crate::tools::available(crate::tools::Tool::Smtp, crate::tools::python_aiosmtpd) {
        return None;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = std::env::temp_dir().join(format!(
        "charter-notify-smtp-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_is_announced_by_email() {
    let Some(smtp) = start_smtp().await else {
        return;
    };
    let h = Harness::start_with(Some(smtp.port)).await;
    let event = h.send(9, "refund twice").await;
    h.wait_event(&event, "waiting").await;
    let mut mail = String::new();
    for _ in 0..400 {
        if let Ok(m) = std::fs::read_to_string(smtp.dir.join("1.eml")) {
            mail = m;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(mail.starts_with("X-Rcpt: leads@example.test"), "{mail}");
    // The body is quoted-printable: join soft line breaks, decode `=3D`.
    let mail = mail
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(
        mail.contains("Subject: [Charter] Approval needed: refund (refunds)"),
        "{mail}"
    );
    let link = format!("{PUBLIC_URL}/inbox?tab=approvals");
    assert!(mail.contains(&link), "{mail}");
    assert!(mail.contains("Reviewers: lead"), "{mail}");
    // The other targets were told too, and nothing ran.
    h.fake
        .wait_for("/api/chat.postMessage", |g| !g.is_empty())
        .await;
    assert_eq!(h.puts(9), 0);
}
