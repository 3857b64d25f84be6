//! The harness the API and UI tests share: the server in-process on 127.0.0.1:0 with a real
//! SQLite store, the worker running, tokens with roles and scopes, and a [`Sink`] as the
//! `helpdesk` connector that records every request the charters' actions make.

use std::path::PathBuf;
use std::time::Duration;

use charter_store::sqlite::SqliteStore;
use charter_store::{ApprovalFilter, ApprovalStatus, EventStore};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::project::{temp_dir, write};
use crate::server::boot;
use crate::sink::Sink;

/// A running server with its project folder (removed on drop), its store and the sink.
pub struct Harness {
    pub dir: PathBuf,
    pub base: String,
    pub sink: Sink,
    pub shutdown: CancellationToken,
    pub store: SqliteStore,
    pub http: reqwest::Client,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A response reduced to what the tests look at.
pub struct Resp {
    pub status: u16,
    pub location: String,
    pub cookies: Vec<String>,
    pub body: String,
}

impl Resp {
    /// The body as JSON; panics (showing the body) when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Read a response into a [`Resp`].
pub async fn resp(r: reqwest::Response) -> Resp {
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let cookies = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    Resp {
        status: r.status().as_u16(),
        location,
        cookies,
        body: r.text().await.unwrap(),
    }
}

impl Harness {
    /// Start a server with these charters and tokens (`(name, role, charters)`, secret
    /// `secret-<name>`).
    pub async fn start(charters: &[(&str, String)], tokens: &[(&str, &str, &[&str])]) -> Harness {
        Harness::start_with_files(charters, tokens, &[]).await
    }

    /// [`Harness::start`] with more project files (`(path, contents)`), such as schemas.
    pub async fn start_with_files(
        charters: &[(&str, String)],
        tokens: &[(&str, &str, &[&str])],
        files: &[(&str, &str)],
    ) -> Harness {
        Harness::start_with_connectors(charters, tokens, files, "").await
    }

    /// [`Harness::start_with_files`] with more connectors: `connectors` is YAML placed under
    /// `connectors:` after `helpdesk` (indented by two spaces).
    pub async fn start_with_connectors(
        charters: &[(&str, String)],
        tokens: &[(&str, &str, &[&str])],
        files: &[(&str, &str)],
        connectors: &str,
    ) -> Harness {
        let dir = temp_dir("it");
        let shutdown = CancellationToken::new();
        let sink = Sink::default();
        let sink_addr = sink
            .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
            .await
            .unwrap();
        let mut yaml = format!(
            "worker:\n  lease: 2s\n  poll_interval: 50ms\nconnectors:\n  helpdesk:\n    type: http\n    base_url: http://{sink_addr}\n    timeout: 2s\n    allow_private: true\n"
        );
        yaml.push_str(connectors);
        if !tokens.is_empty() {
            yaml.push_str("tokens:\n");
        }
        for (name, role, scope) in tokens {
            write(&dir, &format!("secrets/{name}"), &format!("secret-{name}"));
            yaml.push_str(&format!(
                "  - {{ name: {name}, role: {role}, secret: file:secrets/{name}, charters: [{}] }}\n",
                scope.join(", ")
            ));
        }
        write(&dir, "charter.yaml", &yaml);
        for (path, text) in files {
            write(&dir, path, text);
        }
        for (name, text) in charters {
            write(&dir, &format!("charters/{name}.yaml"), text);
        }
        let server = boot(&dir, "it-w1", shutdown.clone()).await;
        Harness {
            dir,
            base: server.base,
            sink,
            shutdown,
            store: server.store,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Send an event to a charter's webhook; returns its id.
    pub async fn send(&self, charter: &str, id: i64, subject: &str) -> String {
        let r = self
            .http
            .post(format!("{}/hooks/{charter}", self.base))
            .json(&json!({"ticket": {"id": id, "subject": subject}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// The stored status of event `id`.
    pub async fn status(&self, id: &str) -> String {
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        let e = self.store.get_event(uuid).await.unwrap().unwrap();
        e.status.as_str().to_string()
    }

    /// Wait (up to 30 s) until event `id` has status `want`; panics otherwise.
    pub async fn wait_status(&self, id: &str, want: &str) {
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        // 30 s: on a loaded 2-core machine the whole suite runs beside this test.
        let mut last = None;
        for _ in 0..1200 {
            if let Some(e) = self.store.get_event(uuid).await.unwrap() {
                if e.status.as_str() == want {
                    return;
                }
                last = Some(e.status);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("event {id} never became {want} (last status {last:?})");
    }

    /// The approvals waiting for a reviewer (at most 100).
    pub async fn pending_approvals(&self) -> Vec<charter_store::ApprovalRecord> {
        charter_store::ApprovalStore::list_approvals(
            &self.store,
            ApprovalFilter {
                status: Some(ApprovalStatus::Pending),
                limit: 100,
                ..ApprovalFilter::default()
            },
        )
        .await
        .unwrap()
    }

    /// Requests the downstream server received for a ticket's PUT.
    pub fn puts(&self, ticket: i64) -> usize {
        self.sink
            .received()
            .iter()
            .filter(|r| r.method == "PUT" && r.path == format!("/api/tickets/{ticket}"))
            .count()
    }

    /// An API call with the token of `who` (`None`: no token).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        who: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(name) = who {
            req = req.bearer_auth(format!("secret-{name}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        resp(req.send().await.unwrap()).await
    }

    /// `GET` as `who` (see [`Harness::api`]).
    pub async fn get(&self, path: &str, who: Option<&str>) -> Resp {
        self.api(reqwest::Method::GET, path, who, None).await
    }

    /// `POST` as `who`, with an optional JSON body (see [`Harness::api`]).
    pub async fn post(&self, path: &str, who: Option<&str>, body: Option<Value>) -> Resp {
        self.api(reqwest::Method::POST, path, who, body).await
    }
}
