//! The charter format, one module per component: each holds the component's raw YAML
//! struct(s) (`Raw*`, `deny_unknown_fields`, re-exported from [`super::raw`]), its typed value
//! (re-exported from [`crate::config`]) and the checks that turn the first into the second.
//! `charter.yaml` is checked by [`project::ProjectChecker`], each charter file by
//! [`charter::CharterChecker`]; the other modules add methods to those two.

pub(crate) mod actions;
pub(crate) mod alerts;
pub(crate) mod backlog;
pub(crate) mod charter;
pub(crate) mod connectors;
pub(crate) mod decide;
pub(crate) mod decision;
pub(crate) mod knowledge;
pub(crate) mod names;
pub(crate) mod notify;
pub(crate) mod project;
pub(crate) mod providers;
pub(crate) mod rollout;
pub(crate) mod routes;
pub(crate) mod server;
pub(crate) mod sources;
pub(crate) mod tokens;
pub(crate) mod triggers;
pub(crate) mod webhook_verify;
