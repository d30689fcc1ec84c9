//! `custsync sandbox`: the demo's five emulators, seeded the same way, left running
//! with a ready configuration, so that every command of the README can be tried with
//! no account. Stops on Ctrl-C (or SIGTERM).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::AppError;
use crate::sandbox::all::Sandboxes;

/// Starts and seeds the emulators, writes `DIR/custsync.toml` (its database beside it),
/// prints how to use it, and serves until told to stop.
pub async fn run(dir: &Path, customers: usize) -> Result<ExitCode, AppError> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("the directory {}", dir.display()))?;
    let sandboxes = Sandboxes::start()
        .await
        .context("starting the sandbox emulators")?;
    sandboxes.seed_document_examples();
    let people = crate::demo::seed_generated(&sandboxes, customers, 7);
    let person = crate::demo::seed_events(&sandboxes);
    let db = dir.join("custsync.db");
    let config = dir.join("custsync.toml");
    let toml = format!(
        "# Written by `custsync sandbox`: five emulators on 127.0.0.1, valid while it runs.\n{}\n[server]\nlisten = \"127.0.0.1:0\"\n{}",
        sandboxes.config_toml(&format!("sqlite://{}", db.display()), 500.0, 50),
        crate::demo::ACTIVITY
    );
    std::fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;

    println!("custsync sandbox: five emulated providers on 127.0.0.1, no account needed");
    for (name, kind, url, _) in sandboxes.endpoints() {
        println!("  {name:<12} {kind:<11} {url}");
    }
    println!("seeded: the documents' example customers + {people} generated people");
    let c = format!("--config {}", config.display());
    println!(
        "\nconfiguration: {}\ntry, in another terminal:",
        config.display()
    );
    for (cmd, what) in [
        (format!("custsync {c} check"), "reach every provider"),
        (
            format!("custsync {c} --once --dry-run"),
            "what a reconciliation would do",
        ),
        (format!("custsync {c} --once"), "reconcile once"),
        (
            format!("custsync {c} status"),
            "leases, cursors, outbox, held deletes",
        ),
        (
            format!("custsync {c} audit --limit 10"),
            "what custsync did, as JSON lines",
        ),
        (
            format!("custsync {c} activity {person}"),
            "one person's timeline",
        ),
        (
            format!("custsync {c} forget {person} --dry-run"),
            "what an erasure would delete",
        ),
        (format!("custsync {c}"), "the daemon, on the schedule"),
    ] {
        println!("  {cmd:<w$}  # {what}", w = c.len() + 40);
    }
    println!("\nready; Ctrl-C stops the sandbox");
    let stop = CancellationToken::new();
    crate::daemon::cancel_on_signal(stop.clone()).await;
    println!("custsync sandbox: stopped");
    Ok(ExitCode::SUCCESS)
}
