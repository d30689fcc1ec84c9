//! The commands behind the command line: reconcile (once, dry run, daemon), check,
//! status, audit. Each returns the process exit status: 0 done, 1 not converged or a
//! provider unreachable, 2 bad usage or bad configuration.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, LogFormat};
use crate::config::{Config, ConfigError, StorePath};
use crate::providers;
use crate::store::audit::AuditFilter;
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

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn dispatch(cli: Cli) -> Result<ExitCode, AppError> {
    let config = match &cli.command {
        // The demo needs no configuration: it makes its own.
        Some(Command::Demo { customers }) => return crate::demo::run(*customers).await,
        _ => load_config(cli.config.as_deref())?,
    };
    match &cli.command {
        Some(Command::Check { offline }) => check(&config, *offline).await,
        Some(Command::Status) => status(&config).await,
        Some(Command::Forget { email }) => forget(&config, email).await,
        Some(Command::Activity { email }) => activity(&config, email).await,
        Some(Command::Demo { customers }) => crate::demo::run(*customers).await,
        Some(Command::Audit {
            provider,
            action,
            email,
            run,
            limit,
        }) => {
            let filter = AuditFilter {
                provider: provider.clone(),
                action: action.clone(),
                email: email.clone(),
                run: *run,
                limit: *limit,
            };
            audit(&config, &filter).await
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
    let report = engine
        .run_once(&opts, &stop)
        .await
        .context("reconciliation")?;
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

/// `check`: the config is valid (always), and each enabled provider answers one cheap
/// authenticated request (unless offline).
async fn check(config: &Config, offline: bool) -> Result<ExitCode, AppError> {
    if offline {
        println!("config ok: {} provider(s)", config.providers.len());
        return Ok(ExitCode::SUCCESS);
    }
    let providers = connect_all(config)?;
    let results = futures::future::join_all(
        providers
            .iter()
            .map(|c| async move { (c.provider.clone(), c.provider.check().await) }),
    )
    .await;
    let mut ok = true;
    for (p, result) in results {
        match result {
            Ok(()) => println!("{} ({}): ok", p.name(), p.kind()),
            Err(e) => {
                ok = false;
                println!("{} ({}): FAILED: {e}", p.name(), p.kind());
            }
        }
    }
    for p in config.providers.iter().filter(|p| !p.enabled) {
        println!("{} ({}): disabled", p.name, p.kind);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `status`: per provider, its cursor, the last run and its result, the outbox depth
/// by state and the last errors.
async fn status(config: &Config) -> Result<ExitCode, AppError> {
    if let StorePath::File(p) = &config.store.path {
        if !p.exists() {
            println!(
                "no database yet at {} (no reconciliation has run)",
                p.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    let store = open_store(&config.store.path).await?;
    let cursors = store.cursors().await.context("cursors")?;
    let depth = store.outbox_depth().await.context("outbox")?;
    let runs = store.last_runs(1).await.context("runs")?;
    let failed = store.failed_ops(10).await.context("outbox")?;
    let last = runs.first();
    match last {
        Some(r) => println!(
            "last run: #{} {} ({}), started {}, finished {}",
            r.id,
            r.status,
            r.mode,
            r.started_at,
            r.finished_at.as_deref().unwrap_or("-")
        ),
        None => println!("last run: none"),
    }
    println!();
    println!(
        "{:<14} {:<10} {:<8} {:>8} {:>8} {:>8} {:>8}  cursor",
        "provider", "kind", "result", "pending", "inflight", "failed", "parked"
    );
    for p in &config.providers {
        let count = |state: &str| {
            depth
                .iter()
                .find(|(n, s, _)| n == &p.name.0 && s == state)
                .map_or(0, |(_, _, c)| *c)
        };
        let result = last
            .and_then(|r| r.report.as_ref())
            .and_then(|rep| rep.get("providers")?.get(&p.name.0).cloned())
            .map(|pr| {
                if pr.get("listing_error").is_some_and(|e| !e.is_null())
                    || pr.get("failed").and_then(|f| f.as_u64()).unwrap_or(0) > 0
                {
                    "failing"
                } else {
                    "ok"
                }
            })
            .unwrap_or(if p.enabled { "-" } else { "disabled" });
        let cursor = cursors
            .iter()
            .find(|(n, _, _)| n == &p.name.0)
            .map(|(_, v, _)| v.as_str())
            .unwrap_or("-");
        println!(
            "{:<14} {:<10} {:<8} {:>8} {:>8} {:>8} {:>8}  {}",
            p.name.0,
            p.kind,
            result,
            count("pending"),
            count("in_flight"),
            count("failed"),
            count("parked"),
            cursor
        );
    }
    let listing_errors: Vec<(String, String)> = last
        .and_then(|r| r.report.as_ref())
        .and_then(|rep| rep.get("providers")?.as_object().cloned())
        .map(|providers| {
            providers
                .into_iter()
                .filter_map(|(name, p)| Some((name, p.get("listing_error")?.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    if !failed.is_empty() || !listing_errors.is_empty() {
        println!();
        println!("last errors:");
        for (name, error) in &listing_errors {
            println!("  {name} listing: {error}");
        }
        for f in failed {
            println!(
                "  {} {} {} [{}] attempts={} next={}: {}",
                f.provider,
                f.op,
                f.email.as_deref().unwrap_or("?"),
                f.state,
                f.attempts,
                f.next_attempt_at.as_deref().unwrap_or("-"),
                f.last_error.as_deref().unwrap_or("")
            );
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `forget EMAIL`: deletes every record of the person in every provider that can
/// delete (found by link and by email), then purges the person locally. Exit 1 when a
/// delete failed; a provider that cannot delete is named, with what is left to do.
async fn forget(config: &Config, text: &str) -> Result<ExitCode, AppError> {
    let email = crate::model::Email::parse(text)
        .map_err(|e| ConfigError::new("EMAIL", format!("{e}: {text:?}")))?;
    let store = open_store(&config.store.path).await?;
    let providers = connect_all(config)?;
    let links = store
        .person(&email)
        .await
        .context("store")?
        .map(|(_, l)| l)
        .unwrap_or_default();
    let mut failed = false;
    for c in &providers {
        let p = &c.provider;
        let caps = p.capabilities();
        let mut ids: Vec<crate::model::RemoteId> = links
            .iter()
            .filter(|(n, _)| n == p.name())
            .map(|(_, id)| id.clone())
            .collect();
        if caps.lookup {
            match p.lookup(&email).await {
                Ok(found) => ids.extend(found.into_iter().map(|r| r.id)),
                Err(e) => {
                    failed = true;
                    println!("{} ({}): lookup FAILED: {e}", p.name(), p.kind());
                    continue;
                }
            }
        }
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            println!("{} ({}): not found", p.name(), p.kind());
        } else if !caps.delete {
            println!(
                "{} ({}): holds {} record(s) but its API cannot delete: erase them by hand ({})",
                p.name(),
                p.kind(),
                ids.len(),
                ids.iter()
                    .map(|i| i.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        } else {
            for id in ids {
                match p.delete(&id).await {
                    Ok(()) => println!("{} ({}): deleted {}", p.name(), p.kind(), id),
                    Err(e) => {
                        failed = true;
                        println!("{} ({}): delete of {} FAILED: {e}", p.name(), p.kind(), id);
                    }
                }
            }
        }
    }
    let run = store.begin_run("forget").await.context("store")?;
    store.forget(run, &email).await.context("store")?;
    let status = if failed { "failed" } else { "converged" };
    store
        .finish_run(run, status, &serde_json::json!({"forget": true}))
        .await
        .context("store")?;
    store.close().await;
    println!("custsync: the person is purged locally; only a hash of the email is kept");
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `activity EMAIL`: the person's events in every provider that keeps a stream, read
/// live through the records custsync linked. Exit 1 when a provider failed.
async fn activity(config: &Config, text: &str) -> Result<ExitCode, AppError> {
    let email = crate::model::Email::parse(text)
        .map_err(|e| ConfigError::new("EMAIL", format!("{e}: {text:?}")))?;
    let store = open_store(&config.store.path).await?;
    let links = store
        .person(&email)
        .await
        .context("store")?
        .map(|(_, l)| l)
        .unwrap_or_default();
    store.close().await;
    let mut events = Vec::new();
    let mut failed = false;
    for c in connect_all(config)? {
        let Some((_, id)) = links.iter().find(|(n, _)| n == c.provider.name()) else {
            continue;
        };
        match c.provider.activity(id).await {
            Ok(found) => events.extend(found.into_iter().map(|a| (c.provider.name().0.clone(), a))),
            Err(providers::ProviderError::Unsupported { .. }) => {}
            Err(e) => {
                failed = true;
                eprintln!("custsync: {e}");
            }
        }
    }
    events.sort_by_key(|(_, a)| a.at);
    for (provider, a) in events {
        let at = a.at.map(|t| t.to_rfc3339());
        println!(
            "{}",
            serde_json::json!({"at": at, "provider": provider, "type": a.kind, "label": a.label, "event": a.raw})
        );
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn audit(config: &Config, filter: &AuditFilter) -> Result<ExitCode, AppError> {
    let store = open_store(&config.store.path).await?;
    for line in store.audit(filter).await.context("audit")? {
        println!("{line}");
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
