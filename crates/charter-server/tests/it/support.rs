//! The shared API/UI harness, the web UI stand-in and the shared fixtures live in
//! `charter-testkit`; this module keeps the `support::` paths the test modules use.

#![allow(unused_imports)] // each module takes what it needs

pub use charter_testkit::fixtures::charter_yaml;
pub use charter_testkit::{Harness, Resp, Site, Ui, cookie_value, csrf_in, form_encode, resp};
