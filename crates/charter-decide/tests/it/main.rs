//! Integration tests of `charter-decide`, in one test binary (one link instead of one per file).
//! Run one area with `cargo test -p charter-decide --test it <module>::`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod embedded;
mod llm;
