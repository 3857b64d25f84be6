//! Test support shared by Charter's crates, so that each test file does not carry its own copy.
//!
//! - [`sink`]: the local HTTP server that stands in for a helpdesk or CRM (also the stand-in
//!   CRM of `charter demo`, which is why the `charter` binary depends on this crate).
//! - [`project`]: throw-away project folders, files in them, clocks and free ports.
//! - [`server`]: a Charter server started in-process on 127.0.0.1:0 from a project folder,
//!   and small axum servers for stand-ins.
//! - [`harness`]: the shared API/UI test harness (a project with the sink as its `helpdesk`,
//!   tokens with roles) and [`harness::Resp`], a response reduced to what tests look at.
//! - [`web`]: a browser stand-in for the web UI (one cookie, forms, CSRF).
//! - [`fixtures`]: charters the tests share.
//!
//! Everything here panics on failure, as a test does: the helpers exist to set tests up.

#![allow(clippy::unwrap_used)] // test support: a failed setup step is a failed test

pub mod fixtures;
pub mod harness;
pub mod project;
pub mod server;
pub mod sink;
pub mod web;

pub use harness::{Harness, Resp, resp};
pub use web::{Site, Ui, cookie_value, csrf_in, form_encode};
