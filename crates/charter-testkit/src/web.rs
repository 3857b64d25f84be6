//! A browser stand-in for the web UI: one cookie, no redirect following, forms with their
//! CSRF token.

use crate::harness::{Harness, Resp, resp};

/// `application/x-www-form-urlencoded` body of these fields.
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of cookie `name` among `Set-Cookie` headers.
pub fn cookie_value(cookies: &[String], name: &str) -> Option<String> {
    cookies.iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// The CSRF token embedded in a page's forms.
pub fn csrf_in(body: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = body.find(marker).expect("a form with a CSRF field") + marker.len();
    body[start..start + 64].to_string()
}

/// A running server the UI stand-in can talk to (this module's harness, or another test
/// file's).
pub trait Site {
    fn base(&self) -> &str;
    fn http(&self) -> &reqwest::Client;
}

impl Site for Harness {
    fn base(&self) -> &str {
        &self.base
    }
    fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// A browser stand-in for the web UI: one cookie, no redirect following.
pub struct Ui<'a, H: Site = Harness> {
    pub h: &'a H,
    pub cookie: String,
}

impl<'a, H: Site> Ui<'a, H> {
    /// No session yet.
    pub fn anonymous(h: &'a H) -> Ui<'a, H> {
        Ui {
            h,
            cookie: String::new(),
        }
    }

    /// `GET` with this session's cookie.
    pub async fn get(&self, path: &str) -> Resp {
        resp(
            self.h
                .http()
                .get(format!("{}{path}", self.h.base()))
                .header("cookie", &self.cookie)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Submit a form with this session's cookie.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        resp(
            self.h
                .http()
                .post(format!("{}{path}", self.h.base()))
                .header("cookie", &self.cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_encode(fields))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Log in with `secret` through the login form; the response and the session.
    pub async fn try_login(h: &'a H, secret: &str) -> (Resp, Ui<'a, H>) {
        let page = Ui::anonymous(h).get("/login").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let login_cookie = cookie_value(&page.cookies, "charter_login").unwrap();
        let ui = Ui {
            h,
            cookie: format!("charter_login={login_cookie}"),
        };
        let csrf = csrf_in(&page.body);
        let r = ui
            .post(
                "/login",
                &[("csrf", &csrf), ("token", secret), ("next", "/inbox")],
            )
            .await;
        let cookie = cookie_value(&r.cookies, "charter_session")
            .map(|s| format!("charter_session={s}"))
            .unwrap_or_default();
        (r, Ui { h, cookie })
    }

    /// Log in as token `name` (secret `secret-<name>`); panics unless it succeeds.
    pub async fn login(h: &'a H, name: &str) -> Ui<'a, H> {
        let (r, ui) = Ui::try_login(h, &format!("secret-{name}")).await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.location, "/inbox");
        ui
    }

    /// The same session (its cookie) sent to another node.
    pub fn on<'b, G: Site>(&self, other: &'b G) -> Ui<'b, G> {
        Ui {
            h: other,
            cookie: self.cookie.clone(),
        }
    }

    /// This session's CSRF token (from the inbox's logout form).
    pub async fn csrf(&self) -> String {
        let p = self.get("/inbox").await;
        assert_eq!(p.status, 200, "{}", p.body);
        csrf_in(&p.body)
    }
}
