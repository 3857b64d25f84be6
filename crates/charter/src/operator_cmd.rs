//! The operator subcommands of a running server, flattened into `charter`'s top level
//! (their names and help text are those of the top-level commands): charter state and routes
//! ([`OperateCommand`]), and human review ([`ReviewCommand`]); each dispatches to the client.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::{ServerArgs, client, rollout_cmd};

/// Commands on a charter's state and routes.
#[derive(Subcommand)]
pub enum OperateCommand {
    /// Promote a charter from shadow to live: new runs execute their actions.
    Promote {
        charter: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Set a charter's mode: shadow, live, or file (drop the override; the charter file's
    /// `mode:` applies).
    Mode {
        charter: String,
        #[arg(value_parser = ["shadow", "live", "file"])]
        mode: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List a charter's routes: each one's mode, sampling, reviews waiting, agreement and
    /// whether it meets its promotion criteria.
    Routes {
        charter: String,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Set one route's mode: shadow, approve (every action waits for a reviewer), live, or
    /// file (drop the override; the files' mode applies). Audited as `route.mode`.
    RouteMode {
        charter: String,
        route: String,
        #[arg(value_parser = ["shadow", "approve", "live", "file"])]
        mode: String,
        /// Why (kept in the route's history).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Write the drafts reviewers approved, with what they approved and the edit distance,
    /// as JSON Lines (for prompt work).
    ExportRewrites {
        charter: String,
        /// Output file (stdout when omitted).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only the drafts the reviewer changed.
        #[arg(long)]
        edited: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Take an event out of automatic processing and hand it to a human (the manual queue).
    Reroute {
        /// Event id.
        id: String,
        /// A note for the human who picks it up.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Pause a charter: events keep arriving and are stored, nothing is processed.
    Pause {
        charter: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Resume a paused charter; stored events are processed in order.
    Resume {
        charter: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Commands of human review: approvals, escalations, actions in doubt, audit, corrections.
#[derive(Subcommand)]
pub enum ReviewCommand {
    /// List approvals waiting for a reviewer (oldest first).
    Approvals {
        #[arg(long)]
        charter: Option<String>,
        /// pending (default), approved, rejected, expired or all.
        #[arg(long)]
        status: Option<String>,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Approve a pending action; with --params, approve your edit of its parameters instead.
    Approve {
        /// Approval id.
        id: String,
        /// JSON file with the edited parameters (only the request body may differ).
        #[arg(long)]
        params: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Reject a pending action, with a reason; the run ends without executing it.
    Reject {
        /// Approval id.
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List work escalated to humans (oldest first).
    /// Actions left in doubt by runs cut off by a crash: their intent was recorded but their
    /// outcome never was, so the request may have reached the target (with the listed
    /// idempotency key). `SETTLED` says whether the key succeeded since.
    InDoubt {
        #[arg(long)]
        charter: Option<String>,
        /// Only those whose key has not succeeded since.
        #[arg(long)]
        unsettled: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    Escalations {
        #[arg(long)]
        charter: Option<String>,
        /// open (default), resolved or all.
        #[arg(long)]
        status: Option<String>,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Decide an escalation: the run continues with this label and these fields.
    Decide {
        /// Escalation id.
        id: String,
        #[arg(long)]
        label: String,
        /// An extracted field, key=value (repeatable; JSON values allowed).
        #[arg(long = "field")]
        fields: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show the audit log (who did what and when), newest first.
    Audit {
        #[arg(long)]
        charter: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        /// For example approval.approve, charter.pause.
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Write a charter's human-decided cases as labelled examples (CSV text,label).
    ExportCorrections {
        charter: String,
        /// Output file (stdout when omitted).
        #[arg(long, conflicts_with = "merge_into")]
        out: Option<PathBuf>,
        /// Append the corrections not already there to this examples file (CSV
        /// `text,label`, such as the charter's `embedded.examples`), so the next `charter
        /// train` (or `serve`, which retrains when the examples change) learns from them.
        #[arg(long)]
        merge_into: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub async fn operate(command: OperateCommand) -> ExitCode {
    match command {
        OperateCommand::Promote { charter, server } => client::promote(&server, &charter).await,
        OperateCommand::Mode {
            charter,
            mode,
            server,
        } => client::set_mode(&server, &charter, &mode).await,
        OperateCommand::Routes {
            charter,
            json,
            server,
        } => rollout_cmd::routes(&server, &charter, json).await,
        OperateCommand::RouteMode {
            charter,
            route,
            mode,
            reason,
            server,
        } => rollout_cmd::route_mode(&server, &charter, &route, &mode, reason).await,
        OperateCommand::ExportRewrites {
            charter,
            out,
            edited,
            server,
        } => rollout_cmd::export_rewrites(&server, &charter, edited, out.as_deref()).await,
        OperateCommand::Reroute { id, note, server } => client::reroute(&server, &id, note).await,
        OperateCommand::Pause { charter, server } => {
            client::set_paused(&server, &charter, true).await
        }
        OperateCommand::Resume { charter, server } => {
            client::set_paused(&server, &charter, false).await
        }
    }
}

pub async fn review(command: ReviewCommand) -> ExitCode {
    match command {
        ReviewCommand::Approvals {
            charter,
            status,
            json,
            server,
        } => client::approvals(&server, charter, status, json).await,
        ReviewCommand::Approve { id, params, server } => {
            client::approve(&server, &id, params.as_deref()).await
        }
        ReviewCommand::Reject { id, reason, server } => client::reject(&server, &id, &reason).await,
        ReviewCommand::Escalations {
            charter,
            status,
            json,
            server,
        } => client::escalations(&server, charter, status, json).await,
        ReviewCommand::InDoubt {
            charter,
            unsettled,
            limit,
            json,
            server,
        } => client::in_doubt(&server, charter, unsettled, limit, json).await,
        ReviewCommand::Decide {
            id,
            label,
            fields,
            server,
        } => client::decide(&server, &id, &label, &fields).await,
        ReviewCommand::Audit {
            charter,
            actor,
            action,
            limit,
            json,
            server,
        } => client::audit(&server, charter, actor, action, limit, json).await,
        ReviewCommand::ExportCorrections {
            charter,
            out,
            merge_into,
            server,
        } => match merge_into {
            Some(file) => client::merge_corrections(&server, &charter, &file).await,
            None => client::export_corrections(&server, &charter, out.as_deref()).await,
        },
    }
}
