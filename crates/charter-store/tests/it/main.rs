//! Integration tests of `charter-store`, in one test binary (one link instead of one per file).
//! Run one area with `cargo test -p charter-store --test it <module>::`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod conformance;
mod postgres;
mod store;
#[path = "../../../../tests/tools.rs"]
mod tools;
