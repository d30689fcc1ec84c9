//! The long-running worker: reconciles on the cron schedule of `[sync].schedule`,
//! serves `/healthz`, `/readyz` and `/metrics`, and stops cleanly on SIGTERM or SIGINT.
//!
//! Shutdown is one `CancellationToken`: a signal cancels it, the cycle in progress
//! stops taking new work, lets the requests in flight finish and record their result,
//! and the process exits 0.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::app::{connect_all, open_store, AppError};
use crate::cli::Cli;
use crate::config::Config;
use crate::metrics::{Format, Metrics, Outcome};
use crate::store::Store;
use crate::sync::report::{ProviderReport, Report};
use crate::sync::{Engine, RunOptions};

mod notify;

/// Cancels `stop` on SIGTERM or SIGINT.
pub async fn cancel_on_signal(stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        if let (Ok(mut term), Ok(mut int)) = (term, int) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("signal received: finishing the work in flight");
            stop.cancel();
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_ok() {
        stop.cancel();
    }
}

/// What the health endpoints report.
#[derive(Default)]
pub struct Health {
    last: Option<Report>,
    store_ok: bool,
}

/// What the endpoints read: health, the store, the metrics and the tenant they count.
struct Served {
    health: Mutex<Health>,
    store: Store,
    metrics: Metrics,
    tenant: String,
}

type Shared = Arc<Served>;

pub async fn run(config: Arc<Config>, cli: &Cli) -> Result<ExitCode, AppError> {
    let providers = connect_all(&config)?;
    let store = open_store(&config.store.path, None).await?;
    let engine = Engine::new(config.clone(), store.clone(), providers);
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));

    let metrics = Metrics::new();
    for c in &engine.providers {
        metrics.watch(&engine.tenant, &c.provider.name().0, c.provider.traffic());
    }
    let shared: Shared = Arc::new(Served {
        health: Mutex::new(Health {
            store_ok: true,
            ..Health::default()
        }),
        store: store.clone(),
        metrics,
        tenant: engine.tenant.clone(),
    });
    // A port that is taken or not ours is the configuration's to fix: exit 2.
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| {
            crate::config::ConfigError::new(
                "server.listen",
                format!("cannot listen on {}: {e}", config.server.listen),
            )
        })?;
    // The bound address, not the configured one: port 0 picks a free port.
    let bound = listener
        .local_addr()
        .context("the address of the health and metrics server")?;
    tracing::info!(listen = %bound, "health and metrics server up");
    notify::ready();
    let watchdog = notify::spawn_watchdog();
    tokio::spawn(notify::stopping_when(stop.clone()));
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(shared.clone());
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { server_stop.cancelled().await })
            .await;
    });

    let mut allow_deletes = cli.allow_deletes.iter().cloned().collect();
    loop {
        let opts = RunOptions {
            dry_run: false,
            allow_deletes: std::mem::take(&mut allow_deletes),
            mode: "daemon",
            progress: None,
        };
        match engine.reconcile(&opts, &stop).await {
            Ok(Err(held)) => {
                // Another process reconciles this tenant now: try again next tick.
                tracing::warn!(tenant = %engine.tenant, holder = %held.worker, "lease held elsewhere: skipping this tick");
                shared
                    .metrics
                    .count_cycle(&engine.tenant, Outcome::LeaseHeld);
            }
            Ok(Ok(report)) => {
                log_cycle(&engine.tenant, &report);
                shared.metrics.observe_cycle(&engine.tenant, &report);
                let mut h = lock(&shared.health);
                h.store_ok = true;
                h.last = Some(report);
            }
            Err(e) => {
                tracing::error!(tenant = %engine.tenant, error = %e, "cycle failed");
                shared.metrics.count_cycle(&engine.tenant, Outcome::Failed);
                lock(&shared.health).store_ok = false;
            }
        }
        let Some(next) = config.sync.schedule.upcoming(Utc).next() else {
            break;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tracing::info!(next = %next.to_rfc3339(), "sleeping until the next cycle");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => break,
        }
        if stop.is_cancelled() {
            break;
        }
    }
    stop.cancel();
    let _ = server.await;
    store.close().await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn lock(m: &Mutex<Health>) -> std::sync::MutexGuard<'_, Health> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The one line a cycle leaves at info: its outcome and its counts, summed over the
/// providers (per provider they are in `/metrics` and the stored run).
fn log_cycle(tenant: &str, r: &Report) {
    let sum = |count: fn(&ProviderReport) -> u64| r.providers.values().map(count).sum::<u64>();
    tracing::info!(
        tenant,
        run = r.run_id,
        converged = r.converged,
        fetched = sum(|p| p.fetched),
        created = sum(|p| p.created),
        updated = sum(|p| p.updated),
        deleted = sum(|p| p.deleted),
        failed = sum(|p| p.failed),
        skipped = sum(|p| p.skipped),
        requests = sum(|p| p.requests),
        retries = sum(|p| p.retries),
        throttled = sum(|p| p.throttled),
        held_deletes = r.held_deletes,
        conflicts = r.conflicts,
        errors = r.errors.len(),
        duration_secs = r.duration_secs,
        "cycle finished"
    );
}

/// Ready while the store is open and the last cycle did not fail outright.
async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    let store_ok = sqlx::query("SELECT 1")
        .execute(shared.store.pool())
        .await
        .is_ok();
    let h = lock(&shared.health);
    let last_ok = h
        .last
        .as_ref()
        .is_none_or(|r| r.providers.values().all(|p| p.listing_error.is_none()));
    if store_ok && h.store_ok && last_ok {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The registry's exposition, with the outbox depth read from the store now:
/// Prometheus text, or OpenMetrics to a scraper whose `Accept` asks for it.
async fn scrape(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    let format = Format::from_accept(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    let depth = match shared.store.outbox_depth().await {
        Ok(rows) => Some(rows),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the outbox depth");
            None
        }
    };
    match shared
        .metrics
        .encode(format, &shared.tenant, depth.as_deref())
    {
        Ok(text) => ([(CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
