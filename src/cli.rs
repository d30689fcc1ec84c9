//! The command line (DESIGN section 2, a contract): flags of the reconciliation and
//! the subcommands.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "custsync",
    version,
    about = "Keeps one customer list true across Nuvemshop, Ecwid, Malomo, Partial.ly and Sendwithus"
)]
pub struct Cli {
    /// Configuration file [default: $CUSTSYNC_CONFIG, then config/custsync.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Run one reconciliation of every enabled provider, then exit (0 converged, 1 not).
    #[arg(long)]
    pub once: bool,

    /// Compute and print the plan; push nothing and record nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Release the deletes the guard holds for provider NAME, for this run (repeatable).
    #[arg(long = "allow-deletes", value_name = "NAME")]
    pub allow_deletes: Vec<String>,

    /// Write a JSON report of the reconciliation to PATH.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and reach every provider with one cheap authenticated request.
    Check {
        /// Validate the config only; no network.
        #[arg(long)]
        offline: bool,
    },
    /// Per provider: cursor, last run and result, outbox depth, last errors.
    Status,
    /// The audit trail of merges and writes, as JSON lines.
    Audit {
        /// Only this provider.
        #[arg(long)]
        provider: Option<String>,
        /// Only this action (merge, conflict, create, update, delete, link, tombstone...).
        #[arg(long)]
        action: Option<String>,
        /// Only this person.
        #[arg(long)]
        email: Option<String>,
        /// Only this run.
        #[arg(long)]
        run: Option<i64>,
        /// At most N lines.
        #[arg(long)]
        limit: Option<i64>,
    },
    /// Erase one person everywhere: delete them in every provider that can delete, purge
    /// their data locally, keep only a hash of the email so they are not imported again.
    Forget {
        /// The person's email.
        email: String,
    },
    /// One person's activity across providers (Malomo events, Sendwithus email logs),
    /// as the store holds it: one timeline, newest first.
    Activity {
        /// The person's email.
        email: String,
        /// One JSON object a line (provider, id, type, occurred_at, label) instead of a table.
        #[arg(long)]
        json: bool,
        /// Read the person's streams from the providers first (reads only).
        #[arg(long)]
        refresh: bool,
    },
    /// Start the five sandbox emulators, seed them and run one reconciliation (no account
    /// and no config needed).
    Demo {
        /// Generated people on top of the documents' example customers.
        #[arg(long, default_value_t = 300)]
        customers: usize,
    },
}
