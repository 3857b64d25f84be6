//! Charter's core: the domain model, charter parsing and validation, routing expressions,
//! templates and webhook signature verification.
//!
//! Nothing in this crate performs I/O: no files, no network, no clock reads except where a
//! caller passes the time in. The server, store and CLI crates do the I/O around it.

pub mod calendar;
pub mod config;
pub mod cron;
pub mod expr;
pub mod extract;
pub mod idempotency;
pub mod knowledge;
pub mod model;
pub mod net;
pub mod rollout;
pub mod routing;
pub mod scaffold;
pub mod template;
pub mod verify;

#[cfg(test)]
mod proptests;
