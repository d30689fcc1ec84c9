//! The commands behind the command line: reconcile (once, dry run, daemon), check,
//! status, audit, forget, activity (in `inspect.rs` and `person.rs`). Each returns the process exit status: 0 done, 1 not converged or a
//! provider unreachable, 2 bad usage or bad configuration.

mod inspect;
mod person;
mod sandbox;
pub mod tenants;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, LogFormat, PlanFormat};
use crate::config::{Config, ConfigError, StorePath};
use crate::model::ProviderName;
use crate::providers;
use crate::store::lease::{HeldBy, Holder, Lease};
use crate::store::{Store, StoreError, DEFAULT_TENANT};
use crate::sync::report::Report;
use crate::sync::{Connected, Engine, RunFailed, RunOptions};

/// How a command ended badly: a configuration or usage problem (exit 2, one line
/// naming the key), or anything else (exit 1, one line).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}", one_line(.0))]
    Other(#[from] anyhow::Error),
}

/// An error and its causes as one line, each said once. The store's and the
/// providers' messages already hold their source's text (`database {path}: {source}`),
/// so a cause whose text is already on the line is not repeated.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

pub fn main(cli: Cli) -> ExitCode {
    // The demo shows its own progress; its log keeps to errors unless RUST_LOG says more.
    // A `--once` on a terminal draws bars and a summary: its log keeps to warnings,
    // so that no line says again what a bar shows.
    let level = if matches!(cli.command, Some(Command::Demo { .. })) {
        "error"
    } else if live_progress(&cli) {
        "warn"
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
    // The command runs as a task on the runtime's workers, beside the HTTP connections
    // it drives, not on this thread: a request's answer then wakes it on a busy
    // worker's own queue instead of waking this thread through the kernel.
    let outcome = match runtime.block_on(runtime.spawn(dispatch(cli))) {
        Ok(outcome) => outcome,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => Err(AppError::Other(anyhow::anyhow!(
                "the command was cancelled: {e}"
            ))),
        },
    };
    match outcome {
        Ok(code) => code,
        Err(AppError::Config(e)) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(e @ AppError::Other(_)) => {
            eprintln!("custsync: {e}");
            ExitCode::from(1)
        }
    }
}

/// Writes `text` to stdout; a reader that went away (`| head`) is no error.
fn print_all(text: &[u8]) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("custsync: cannot write to stdout: {e}");
            ExitCode::from(1)
        }
        _ => ExitCode::SUCCESS,
    }
}

/// True when a reconciliation draws live progress: `--once` or `--dry-run`, with text
/// logs, on a terminal.
fn live_progress(cli: &Cli) -> bool {
    cli.command.is_none()
        && (cli.once || cli.dry_run)
        && cli.log_format == LogFormat::Text
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// Logs on stderr: readable text on a terminal, or one JSON object a line with
/// `--log-format json`, as log shippers read it: top-level `timestamp` (RFC 3339,
/// UTC), `level`, `target`, `message` and the event's own fields.
fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::sync::progress::LogWriter);
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
        Some(Command::Sandbox { dir, customers }) => return sandbox::run(dir, *customers).await,
        // What describes the command line needs no configuration either.
        Some(Command::Completions { shell }) => {
            let mut text = Vec::new();
            Cli::completions(*shell, &mut text);
            return Ok(print_all(&text));
        }
        Some(Command::Man) => {
            let mut text = Vec::new();
            Cli::man(&mut text).context("the manual page")?;
            return Ok(print_all(&text));
        }
        _ => load_config(cli.config.as_deref())?,
    };
    crate::store::set_synchronous_full(config.store.synchronous_full);
    match &cli.command {
        Some(Command::Check { offline }) => inspect::check(&config, *offline).await,
        Some(Command::Status { json }) => inspect::status(&config, &cli.tenants, *json).await,
        Some(Command::Forget {
            email,
            dry_run,
            yes,
        }) => {
            let opts = person::ForgetOptions {
                dry_run: *dry_run,
                yes: *yes,
            };
            let t = tenants::one(&config, &cli.tenants, "forget")?;
            let c = t.config.clone()?;
            person::forget(&c, t.key(), &t.name, email, opts).await
        }
        Some(Command::Activity {
            email,
            json,
            refresh,
        }) => {
            let t = tenants::one(&config, &cli.tenants, "activity")?;
            let c = t.config.clone()?;
            person::activity(&c, t.key(), &t.name, email, *json, *refresh).await
        }
        Some(Command::Demo { customers }) => crate::demo::run(*customers).await,
        Some(Command::Completions { .. } | Command::Man | Command::Sandbox { .. }) => {
            Ok(ExitCode::SUCCESS)
        }
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
            let t = tenants::one(&config, &cli.tenants, "audit")?;
            let c = t.config.clone()?;
            inspect::audit(&c, t.key(), &filter).await
        }
        None => {
            if cli.once || cli.dry_run {
                reconcile_once(Arc::new(config), &cli).await
            } else {
                crate::daemon::run(Arc::new(config), &cli).await
            }
        }
    }
}

/// `--config`, else `$CUSTSYNC_CONFIG`, else `config/custsync.toml` (which may be
/// absent when the environment carries the whole configuration). A file that is not
/// there is said against what named it: the flag, the variable, or the default path
/// with the two ways to name another.
pub fn load_config(flag: Option<&Path>) -> Result<Config, ConfigError> {
    let (path, required, named_by) = match (flag, std::env::var_os("CUSTSYNC_CONFIG")) {
        (Some(p), _) => (p.to_path_buf(), true, Some("--config")),
        (None, Some(env)) => (PathBuf::from(env), true, Some("CUSTSYNC_CONFIG")),
        (None, None) => {
            let env_has_providers = std::env::vars_os()
                .any(|(k, _)| k.to_string_lossy().starts_with("CUSTSYNC__PROVIDERS__"));
            (
                PathBuf::from(crate::config::DEFAULT_PATH),
                !env_has_providers,
                None,
            )
        }
    };
    if required && !path.exists() {
        return Err(match named_by {
            Some(key) => ConfigError::new(key, format!("file not found: {}", path.display())),
            None => ConfigError::new(
                crate::config::DEFAULT_PATH,
                "not found (give --config PATH or set CUSTSYNC_CONFIG)",
            ),
        });
    }
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

/// The one line a command prints when another process holds the tenant's lease.
fn say_held(tenant: &str, held: &HeldBy) {
    eprintln!(
        "custsync: tenant {tenant}: {held} (until {}): another reconciliation is running; nothing was sent",
        held.expires_at
    );
}

/// Takes the tenant's lease for a command that writes outside a reconciliation
/// (`forget`); `Err(1)`, with the line said, when another process holds it.
pub async fn take_lease(
    config: &Config,
    store: &Store,
    tenant: &str,
) -> Result<Result<Lease, ExitCode>, AppError> {
    let holder = Holder::this_process(config.cluster.worker_id.as_deref());
    match store
        .acquire_lease(tenant, &holder, config.cluster.lease)
        .await
        .context("store")?
    {
        Ok(lease) => Ok(Ok(lease)),
        Err(held) => {
            say_held(tenant, &held);
            Ok(Err(ExitCode::from(1)))
        }
    }
}

/// One reconciliation (`--once`, `--dry-run`) of every tenant acted on: exit 0 when
/// each converged, 1 not.
async fn reconcile_once(config: Arc<Config>, cli: &Cli) -> Result<ExitCode, AppError> {
    let (configured, chosen) = tenants::chosen(&config, &cli.tenants)?;
    tenants::check_allow_deletes(&chosen, &cli.allow_deletes)?;
    let stop = CancellationToken::new();
    let signals = tokio::spawn(crate::daemon::cancel_on_signal(stop.clone()));
    if !configured {
        let outcome = once_tenant(config.clone(), None, DEFAULT_TENANT, cli, &stop, true).await;
        signals.abort();
        let outcome = match outcome? {
            Ok(outcome) => outcome,
            Err(held) => {
                say_held(DEFAULT_TENANT, &held);
                return Ok(ExitCode::from(1));
            }
        };
        let plan = cli.dry_run.then_some(cli.plan_format);
        return finish_once(outcome, cli.report.as_deref(), plan);
    }
    // Several tenants: up to `max_concurrent_tenants` at once, each under its lease.
    use futures::StreamExt;
    let at_once = config.cluster.max_concurrent_tenants.max(1);
    let results: Vec<(String, TenantResult)> = futures::stream::iter(chosen)
        .map(|t| {
            let stop = stop.clone();
            async move {
                let result = match &t.config {
                    Err(e) => TenantResult::Error(e.to_string()),
                    Ok(c) => {
                        match once_tenant(c.clone(), t.key(), &t.name, cli, &stop, false).await {
                            Err(e) => TenantResult::Error(e.to_string()),
                            Ok(Err(held)) => {
                                say_held(&t.name, &held);
                                TenantResult::Error(format!("lease held by {}", held.worker))
                            }
                            Ok(Ok(Ok(report))) => TenantResult::Done(Box::new(report)),
                            Ok(Ok(Err(RunFailed { error, report }))) => {
                                TenantResult::Failed(error.to_string(), report)
                            }
                        }
                    }
                };
                (t.name, result)
            }
        })
        .buffered(at_once)
        .collect()
        .await;
    signals.abort();
    finish_tenants(results, cli)
}

/// What `--once` did for one tenant of several.
enum TenantResult {
    Done(Box<Report>),
    /// The run stopped on a store error; the report of what it had done.
    Failed(String, Box<Report>),
    /// Nothing ran: its file, its store, its providers, or its lease held elsewhere.
    Error(String),
}

/// `--once` of one tenant: its store (a copy for a dry run), its providers, its lease.
async fn once_tenant(
    config: Arc<Config>,
    key: Option<&str>,
    name: &str,
    cli: &Cli,
    stop: &CancellationToken,
    bars: bool,
) -> Result<Result<Result<Report, RunFailed>, HeldBy>, AppError> {
    let providers = connect_all(&config)?;
    let store = if cli.dry_run {
        dry_run_store(&config.store.path, key).await?
    } else {
        open_store(&config.store.path, key).await?
    };
    let engine = Engine::new(config.clone(), store.clone(), providers).for_tenant(name);
    let opts = RunOptions {
        dry_run: cli.dry_run,
        allow_deletes: cli.allow_deletes.iter().cloned().collect::<HashSet<_>>(),
        mode: if cli.dry_run { "dry-run" } else { "once" },
        progress: (bars && live_progress(cli)).then(crate::sync::progress::bars),
        slice: None,
    };
    let outcome = match engine.reconcile(&opts, stop).await {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(held)) => {
            store.close().await;
            return Ok(Err(held));
        }
        Err(failed) => Err(failed),
    };
    store.close().await;
    if opts.progress.is_some() {
        crate::sync::progress::finish_bars();
        if let Ok(report) = &outcome {
            eprint!("{}", report.summary());
        }
    }
    Ok(Ok(outcome))
}

/// The end of `--once` over tenants: the report `{"tenants": {NAME: report or
/// {"error": ...}}, "converged": bool}`, the plans of a dry run, and exit 0 only when
/// every tenant converged.
fn finish_tenants(results: Vec<(String, TenantResult)>, cli: &Cli) -> Result<ExitCode, AppError> {
    let mut doc = serde_json::Map::new();
    let mut converged = true;
    for (name, result) in &results {
        let value = match result {
            TenantResult::Done(report) => {
                converged &= report.converged;
                serde_json::to_value(report).context("report")?
            }
            TenantResult::Failed(error, report) => {
                converged = false;
                eprintln!("custsync: tenant {name}: reconciliation: {error}");
                let mut v = serde_json::to_value(report).context("report")?;
                v["error"] = serde_json::Value::String(error.clone());
                v
            }
            TenantResult::Error(error) => {
                converged = false;
                if !error.starts_with("lease held by") {
                    eprintln!("custsync: tenant {name}: {error}");
                }
                serde_json::json!({ "error": error })
            }
        };
        doc.insert(name.clone(), value);
    }
    let doc = serde_json::json!({ "tenants": doc, "converged": converged });
    if let Some(path) = cli.report.as_deref() {
        write_report(path, &doc)?;
    }
    if cli.dry_run {
        match cli.plan_format {
            PlanFormat::Text => {
                for (name, result) in &results {
                    if let TenantResult::Done(report) = result {
                        print!("tenant {name}:\n{}", report.plan_text());
                    }
                }
            }
            PlanFormat::Json => {
                let plans: serde_json::Map<String, serde_json::Value> = results
                    .iter()
                    .filter_map(|(name, r)| match r {
                        TenantResult::Done(report) => {
                            Some((name.clone(), serde_json::json!({"plan": report.plan})))
                        }
                        _ => None,
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"tenants": plans}))
                        .context("the plan")?
                );
            }
        }
    }
    tracing::info!(
        tenants = results.len(),
        converged,
        "reconciliation finished"
    );
    Ok(if converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The end of `--once` and `--dry-run`: the report is written (also, as far as it
/// got, after a store error stopped the run), the plan printed; exit 0 converged, 1
/// not, or the store's error.
fn finish_once(
    outcome: Result<Report, RunFailed>,
    report_path: Option<&Path>,
    plan: Option<PlanFormat>,
) -> Result<ExitCode, AppError> {
    let (report, failure) = match outcome {
        Ok(report) => (report, None),
        Err(RunFailed { error, report }) => (*report, Some(error)),
    };
    let written = report_path.map(|path| write_report(path, &report));
    if let Some(error) = failure {
        if let Some(Err(e)) = written {
            tracing::error!(error = %one_line(&e), "the report was not written");
        }
        return Err(anyhow::Error::new(error).context("reconciliation").into());
    }
    written.transpose()?;
    match plan {
        Some(PlanFormat::Text) => print!("{}", report.plan_text()),
        Some(PlanFormat::Json) => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"plan": report.plan}))
                .context("the plan")?
        ),
        None => {}
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

fn write_report(path: &Path, report: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report).context("report")?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("cannot write the report to {}", path.display()))
}

/// A provider's error on a line that already names the provider: its message, the
/// provider's name not said twice.
pub fn provider_reason(provider: &ProviderName, e: &providers::ProviderError) -> String {
    let text = e.to_string();
    match text.strip_prefix(&format!("{provider}: ")) {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

/// Opens the configured database. One that cannot be used where `[store].url` points
/// (a directory that cannot be made, a file that is no SQLite database, no permission)
/// is a configuration error naming `store.url`.
pub async fn open_store(path: &StorePath, tenant: Option<&str>) -> Result<Store, AppError> {
    Store::open(path, tenant)
        .await
        .map_err(|e| match unusable_store(&e) {
            Some(why) => ConfigError::new("store.url", why).into(),
            None => AppError::Other(anyhow::Error::new(e)),
        })
}

fn unusable_store(e: &StoreError) -> Option<String> {
    match e {
        StoreError::Io { path, source } => {
            Some(format!("cannot create the database file {path}: {source}"))
        }
        StoreError::Open {
            path,
            source: sqlx::Error::Database(db),
        } => {
            // PostgreSQL: a refused login or a database that does not exist.
            let code = db.code()?;
            if matches!(&*code, "28000" | "28P01" | "3D000") {
                return Some(format!("cannot use {path}: {}", db.message()));
            }
            // SQLITE_PERM, SQLITE_READONLY, SQLITE_CORRUPT, SQLITE_CANTOPEN, SQLITE_NOTADB
            // (primary codes: the low byte of SQLite's extended code). A busy or locked
            // database is not the configuration's fault.
            let code = code.parse::<i32>().ok()? & 0xff;
            matches!(code, 3 | 8 | 11 | 14 | 26)
                .then(|| format!("cannot use {path} as the database: {}", db.message()))
        }
        _ => None,
    }
}

/// A dry run plans on a throwaway copy of the tenant's store, so the real one
/// records nothing; with no store yet, on a new empty one. Closing it removes it.
async fn dry_run_store(path: &StorePath, tenant: Option<&str>) -> Result<Store, AppError> {
    Store::dry_copy(path, tenant)
        .await
        .map_err(|e| match unusable_store(&e) {
            Some(why) => ConfigError::new("store.url", why).into(),
            None => {
                AppError::Other(anyhow::Error::new(e).context("the dry run's copy of the store"))
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_full() -> StoreError {
        StoreError::Sql(sqlx::Error::Io(std::io::Error::from_raw_os_error(28)))
    }

    #[test]
    fn each_cause_is_said_once() {
        // StoreError's message holds sqlx's, which holds the OS error's.
        let e = anyhow::Error::new(disk_full()).context("reconciliation");
        assert_eq!(
            one_line(&e),
            "reconciliation: database: error communicating with database: No space left on device (os error 28)"
        );
        // Causes that do not repeat each other are all kept, on one line.
        let e = anyhow::anyhow!("first\nline").context("outer");
        assert_eq!(one_line(&e), "outer: first line");
    }

    #[test]
    fn a_run_stopped_by_the_store_still_writes_its_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let mut report = Report::default();
        report.provider("shipping").fetched = 3;
        report.error("custsync", None, None, "run stopped: database: full");
        let failed = RunFailed {
            error: disk_full(),
            report: Box::new(report),
        };
        let e = finish_once(Err(failed), Some(&path), None).unwrap_err();
        assert!(matches!(e, AppError::Other(_)), "exit 1: {e}");
        assert!(
            e.to_string().starts_with("reconciliation: database: "),
            "{e}"
        );
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["providers"]["shipping"]["fetched"], 3);
        assert_eq!(written["errors"][0]["error"], "run stopped: database: full");
        // Where the report cannot be written either, the store's error is the one said.
        let nowhere = dir.path().join("no-such-dir").join("report.json");
        let failed = RunFailed {
            error: disk_full(),
            report: Box::default(),
        };
        let e = finish_once(Err(failed), Some(&nowhere), None).unwrap_err();
        assert!(e.to_string().contains("No space left on device"), "{e}");
    }
}
