//! Integration tests of `charter-server`, in one test binary (one link instead of one per
//! file): each module starts the server in-process on 127.0.0.1:0 against real parts — a
//! SQLite file, the local PostgreSQL and NATS servers, local HTTP and SMTP servers standing
//! in for downstream systems, headless Chromium for the UI.
//!
//! Run one area with `cargo test -p charter-server --test it <module>::`, e.g. `ui::`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod admin;
mod backlog;
mod decision;
mod evidence;
mod expressions;
mod fairness;
mod inbox;
mod knowledge;
mod mcp;
mod modules;
mod nats;
mod notify;
mod openapi;
mod outbound;
mod paging;
mod properties;
mod rollout;
mod security;
mod server;
mod sources;
mod support;
#[path = "../../../../tests/tools.rs"]
mod tools;
mod ui;
