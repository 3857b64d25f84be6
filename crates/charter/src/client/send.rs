//! Sending a payload to a charter's webhook, signed as its verification preset expects.

use super::*;

/// Sign and post a payload to a charter's webhook.
pub async fn send(
    dir: &Path,
    charter: &str,
    file: &Path,
    delivery_id: Option<String>,
    server: &ServerArgs,
) -> ExitCode {
    let project = match charter_server::project::load(dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let Some(c) = project.charters.get(charter) else {
        eprintln!(
            "error: no charter named `{charter}` in {} (have: {})",
            dir.display(),
            project
                .charters
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(1);
    };
    let Some(webhook) = &c.trigger.webhook else {
        eprintln!("error: charter `{charter}` has no webhook trigger");
        return ExitCode::from(1);
    };
    let body = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let secret = match webhook.secrets.first() {
        None => None,
        Some(s) => match charter_server::project::resolve_secret(dir, s) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let delivery = delivery_id.unwrap_or_else(|| format!("msg_{}", uuid::Uuid::now_v7().simple()));
    match post_signed(
        server.base_url(),
        webhook,
        secret.as_deref(),
        &body,
        &delivery,
    )
    .await
    {
        Ok((status, v)) => {
            print_json(&v);
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                eprintln!("error: the server answered {status}");
                ExitCode::from(1)
            }
        }
        Err(code) => code,
    }
}

/// Sign `body` for `webhook` and post it. Shared with the demo.
pub async fn post_signed(
    base: &str,
    webhook: &charter_core::config::Webhook,
    secret: Option<&str>,
    body: &[u8],
    delivery_id: &str,
) -> Result<(reqwest::StatusCode, Value), ExitCode> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let headers = match secret {
        Some(s) => match charter_core::verify::sign(&webhook.verify, s, body, now, delivery_id) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: cannot sign: {e}");
                return Err(ExitCode::from(1));
            }
        },
        None => vec![],
    };
    let client = http()?;
    let url = format!("{}{}", base.trim_end_matches('/'), webhook.path);
    let mut req = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| {
        eprintln!("error: cannot reach {url}: {e}");
        ExitCode::from(UNREACHABLE)
    })?;
    let status = resp.status();
    let v = resp.json().await.unwrap_or(Value::Null);
    Ok((status, v))
}
