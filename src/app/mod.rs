//! The commands behind the command line: reconcile (once, dry run, daemon), check,
//! status, audit, forget, activity (in `inspect.rs` and `person.rs`). Each returns the process exit status: 0 done, 1 not converged or a
//! provider unreachable, 2 bad usage or bad configuration.

mod inspect;
mod person;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, LogFormat};
use crate::config::{Config, ConfigError, StorePath};
use crate::providers;
use crate::store::Store;
use crate::sync::{Connected, Engine, RunOptions};

/// How a command ended badly.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

pub fn main(cli: Cli) -> ExitCode {
    // The demo shows its own progress; its log keeps to errors unless RUST_LOG says more.
    let level = if matches!(cli.command, Some(Command::Demo { .. })) {
        "error"
    } else {
        "info"
    };
    init_logging(cli.log_format, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("custsync: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(AppError::Config(e)) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(AppError::Other(e)) => {
            eprintln!("custsync: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs on stderr: readable text on a terminal, or one JSON object a line with
/// `--log-format json`, as log shippers read it: top-level `timestamp` (RFC 3339,
/// UTC), `level`, `target`, `message` and the event's own fields.
fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_target(true)
            .with_timer(tracing_subscriber::fmt::time::ChronoUtc::rfc_3339())
            .with_ansi(false)
            .try_init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

async fn dispatch(cli: Cli) -> Result<ExitCode, AppError> {
    let config = match &cli.command {
        // The demo needs no configuration: it makes its own.
        Some(Command::Demo { customers }) => return crate::demo::run(*customers).await,
        _ => load_config(cli.config.as_deref())?,
    };
    match &cli.command {
        Some(Command::Check { offline }) => inspect::check(&config, *offline).await,
        Some(Command::Status) => inspect::status(&config).await,
        Some(Command::Forget { email }) => person::forget(&config, email).await,
        Some(Command::Activity { email }) => person::activity(&config, email).await,
        Some(Command::Demo { customers }) => crate::demo::run(*customers).await,
        Some(Command::Audit {
            provider,
            action,
            email,
            run,
            limit,
        }) => {
            let filter = crate::store::audit::AuditFilter {
                provider: provider.clone(),
                action: action.clone(),
                email: email.clone(),
                run: *run,
                limit: *limit,
            };
            inspect::audit(&config, &filter).await
        }
        None => {
            config.check_provider_names(&cli.allow_deletes)?;
            if cli.once || cli.dry_run {
                reconcile_once(Arc::new(config), &cli).await
            } else {
                crate::daemon::run(Arc::new(config), &cli).await
            }
        }
    }
}

/// `--config`, else `$CUSTSYNC_CONFIG`, else `config/custsync.toml` (which may be
/// absent when the environment carries the whole configuration).
pub fn load_config(flag: Option<&Path>) -> Result<Config, ConfigError> {
    let (path, required) = match (flag, std::env::var_os("CUSTSYNC_CONFIG")) {
        (Some(p), _) => (p.to_path_buf(), true),
        (None, Some(env)) => (PathBuf::from(env), true),
        (None, None) => {
            let env_has_providers = std::env::vars_os()
                .any(|(k, _)| k.to_string_lossy().starts_with("CUSTSYNC__PROVIDERS__"));
            (
                PathBuf::from(crate::config::DEFAULT_PATH),
                !env_has_providers,
            )
        }
    };
    Config::load(&path, required)
}

/// Connectors for every enabled provider, ranked by `[sync].priority`.
pub fn connect_all(config: &Config) -> Result<Vec<Connected>, AppError> {
    let mut out = Vec::new();
    for p in config.providers.iter().filter(|p| p.enabled) {
        let provider = providers::connect(p)
            .map_err(|e| ConfigError::new(format!("providers.{}.kind", p.name), e.to_string()))?;
        let rank = config
            .sync
            .priority
            .iter()
            .position(|n| n == &p.name)
            .unwrap_or(usize::MAX);
        out.push(Connected { provider, rank });
    }
    Ok(out)
}

/// One reconciliation (`--once`, `--dry-run`): exit 0 converged, 1 not.
async fn reconcile_once(config: Arc<Config>, cli: &Cli) -> Result<ExitCode, AppError> {
    let providers = connect_all(&config)?;
    let _dry_dir;
    let store = if cli.dry_run {
        let (dir, store) = dry_run_store(&config.store.path).await?;
        _dry_dir = dir;
        store
    } else {
        open_store(&config.store.path).await?
    };
    let engine = Engine::new(config.clone(), store.clone(), providers);
    let opts = RunOptions {
        dry_run: cli.dry_run,
        allow_deletes: cli.allow_deletes.iter().cloned().collect::<HashSet<_>>(),
        mode: if cli.dry_run { "dry-run" } else { "once" },
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr())
            .then(crate::sync::progress::lines),
    };
    let stop = CancellationToken::new();
    let signals = tokio::spawn(crate::daemon::cancel_on_signal(stop.clone()));
    let report = match engine
        .reconcile(&opts, &stop)
        .await
        .context("reconciliation")?
    {
        Ok(report) => report,
        Err(held) => {
            signals.abort();
            store.close().await;
            eprintln!(
                "custsync: tenant {}: {} (until {}): another reconciliation is running; nothing was sent",
                engine.tenant, held, held.expires_at
            );
            return Ok(ExitCode::from(1));
        }
    };
    signals.abort();
    store.close().await;
    if let Some(path) = &cli.report {
        let text = serde_json::to_string_pretty(&report).context("report")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    if cli.dry_run {
        print!("{}", report.plan_text());
    }
    tracing::info!(
        run = report.run_id,
        converged = report.converged,
        conflicts = report.conflicts,
        held_deletes = report.held_deletes,
        errors = report.errors.len(),
        "reconciliation finished"
    );
    Ok(if report.converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn open_store(path: &StorePath) -> Result<Store, AppError> {
    Store::open(path)
        .await
        .map_err(|e| AppError::Other(anyhow::Error::new(e)))
}

/// A dry run plans on a throwaway copy of the database, so the real one records
/// nothing; with no database yet, on a new empty one.
async fn dry_run_store(path: &StorePath) -> Result<(tempfile::TempDir, Store), AppError> {
    let dir = tempfile::tempdir().context("temporary directory for the dry run")?;
    let copy = dir.path().join("dry-run.db");
    if let StorePath::File(real) = path {
        if real.exists() {
            let store = open_store(path).await?;
            store
                .copy_to(&copy)
                .await
                .context("copying the database for the dry run")?;
            store.close().await;
        }
    }
    let store = open_store(&StorePath::File(copy)).await?;
    Ok((dir, store))
}
