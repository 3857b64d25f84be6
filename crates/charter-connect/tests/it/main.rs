//! Integration tests of `charter-connect`, in one test binary (one link instead of one per file).
//! Run one area with `cargo test -p charter-connect --test it <module>::`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod connectors;
mod http;
mod properties;
#[path = "../../../../tests/tools.rs"]
mod tools;
