//! The long-running worker: reconciles on the cron schedule of `[sync].schedule`,
//! serves `/healthz`, `/readyz` and `/metrics`, and stops cleanly on SIGTERM or SIGINT.
//!
//! Shutdown is one `CancellationToken`: a signal cancels it, the cycle in progress
//! stops taking new work, lets the requests in flight finish and record their result,
//! and the process exits 0.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::app::{connect_all, open_store, AppError};
use crate::cli::Cli;
use crate::config::Config;
use crate::store::Store;
use crate::sync::report::Report;
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
    cycles: u64,
    failed_cycles: u64,
    store_ok: bool,
}

type Shared = Arc<(Mutex<Health>, Store)>;

pub async fn run(config: Arc<Config>, cli: &Cli) -> Result<ExitCode, AppError> {
    let providers = connect_all(&config)?;
    let store = open_store(&config.store.path).await?;
    let engine = Engine::new(config.clone(), store.clone(), providers);
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));

    let shared: Shared = Arc::new((
        Mutex::new(Health {
            store_ok: true,
            ..Health::default()
        }),
        store.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} ([server].listen)",
                config.server.listen
            )
        })?;
    tracing::info!(listen = %config.server.listen, "health and metrics server up");
    notify::ready();
    let watchdog = notify::spawn_watchdog();
    tokio::spawn(notify::stopping_when(stop.clone()));
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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
            }
            Ok(Ok(report)) => {
                tracing::info!(
                    run = report.run_id,
                    converged = report.converged,
                    "cycle finished"
                );
                let mut h = lock(&shared.0);
                h.cycles += 1;
                h.failed_cycles += u64::from(!report.converged);
                h.store_ok = true;
                h.last = Some(report);
            }
            Err(e) => {
                tracing::error!(error = %e, "cycle failed");
                let mut h = lock(&shared.0);
                h.cycles += 1;
                h.failed_cycles += 1;
                h.store_ok = false;
            }
        }
        let Some(next) = config.sync.schedule.upcoming(Utc).next() else {
            break;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tracing::info!(next = %next, "sleeping until the next cycle");
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

/// Ready while the store is open and the last cycle did not fail outright.
async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    let store_ok = sqlx::query("SELECT 1")
        .execute(shared.1.pool())
        .await
        .is_ok();
    let h = lock(&shared.0);
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

/// Prometheus text exposition of the last cycle and the outbox.
async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    let depth = shared.1.outbox_depth().await.unwrap_or_default();
    let h = lock(&shared.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# TYPE custsync_cycles_total counter\ncustsync_cycles_total {}",
        h.cycles
    );
    let _ = writeln!(
        out,
        "# TYPE custsync_failed_cycles_total counter\ncustsync_failed_cycles_total {}",
        h.failed_cycles
    );
    if let Some(r) = &h.last {
        let _ = writeln!(
            out,
            "# TYPE custsync_cycle_duration_seconds gauge\ncustsync_cycle_duration_seconds {}",
            r.duration_secs
        );
        let _ = writeln!(
            out,
            "# TYPE custsync_last_cycle_converged gauge\ncustsync_last_cycle_converged {}",
            u8::from(r.converged)
        );
        let _ = writeln!(out, "# TYPE custsync_last_cycle_records gauge");
        for (name, p) in &r.providers {
            for (op, n) in [
                ("fetched", p.fetched),
                ("created", p.created),
                ("updated", p.updated),
                ("deleted", p.deleted),
                ("failed", p.failed),
                ("skipped", p.skipped),
            ] {
                let _ = writeln!(
                    out,
                    "custsync_last_cycle_records{{provider=\"{name}\",op=\"{op}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# TYPE custsync_last_cycle_requests gauge");
        for (name, p) in &r.providers {
            let _ = writeln!(
                out,
                "custsync_last_cycle_requests{{provider=\"{name}\"}} {}",
                p.requests
            );
            let _ = writeln!(
                out,
                "custsync_last_cycle_retries{{provider=\"{name}\"}} {}",
                p.retries
            );
            let _ = writeln!(
                out,
                "custsync_last_cycle_throttled{{provider=\"{name}\"}} {}",
                p.throttled
            );
        }
    }
    let _ = writeln!(out, "# TYPE custsync_outbox_depth gauge");
    for (provider, state, n) in depth {
        let _ = writeln!(
            out,
            "custsync_outbox_depth{{provider=\"{provider}\",state=\"{state}\"}} {n}"
        );
    }
    ([("content-type", "text/plain; version=0.0.4")], out)
}
