//! Temporary shim: the downstream HTTP sink moved to `charter-testkit` (`charter_testkit::sink`).
//! `charter bench` still imports it from here; the file is compiled from the testkit's source
//! (one copy of the code), and this module goes away once bench imports the testkit.

#[path = "../../charter-testkit/src/sink.rs"]
mod moved;

pub use moved::*;
