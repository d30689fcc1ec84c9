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

use std::collections::{BTreeMap, HashSet};

use crate::app::{connect_all, open_store, tenants, AppError};
use crate::cli::Cli;
use crate::config::Config;
use crate::metrics::{Format, Metrics, Outcome};
use crate::store::lease::{Holder, Lease};
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
    /// The last cycle of the single merchant (no `[tenants]`), for readiness.
    last: Option<Report>,
    store_ok: bool,
}

/// What the endpoints read: health, the tenants' stores (for the outbox depth), the
/// store to ping, and the metrics.
struct Served {
    health: Mutex<Health>,
    stores: Mutex<BTreeMap<String, Store>>,
    probe: Mutex<Option<Store>>,
    metrics: Metrics,
}

type Shared = Arc<Served>;

/// A tenant this worker knows: its engine (store, connectors with their rate
/// limiters) and the text of its file, to see it changed.
struct Known {
    engine: Arc<Engine>,
    file_text: Option<String>,
    /// `--allow-deletes` applies to the first cycle of each tenant.
    allow_deletes: HashSet<String>,
}

/// The worker's view of the tenants and how it claims them (DESIGN 13).
struct Worker {
    config: Arc<Config>,
    holder: Holder,
    /// PostgreSQL: where every tenant's lease is, claimed in one statement.
    leases: Option<Store>,
    known: BTreeMap<String, Known>,
    /// The last error said of each bad tenant file, not to repeat it every tick.
    said: BTreeMap<String, String>,
    shared: Shared,
    allow_deletes: Vec<String>,
}

pub async fn run(config: Arc<Config>, cli: &Cli) -> Result<ExitCode, AppError> {
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    let shared: Shared = Arc::new(Served {
        health: Mutex::new(Health {
            store_ok: true,
            ..Health::default()
        }),
        stores: Mutex::new(BTreeMap::new()),
        probe: Mutex::new(None),
        metrics: Metrics::new(),
    });
    let leases = Store::leases_of(&config.store.path)
        .await
        .map_err(|e| AppError::Other(anyhow::Error::new(e).context("store")))?;
    let mut worker = Worker {
        holder: Holder::this_process(config.cluster.worker_id.as_deref()),
        leases: leases.clone(),
        known: BTreeMap::new(),
        said: BTreeMap::new(),
        shared: shared.clone(),
        allow_deletes: cli.allow_deletes.clone(),
        config: config.clone(),
    };
    // A config that cannot run at all is said before anything listens: exit 2.
    let (configured, chosen) = tenants::chosen(&config, &cli.tenants)?;
    tenants::check_allow_deletes(&chosen, &cli.allow_deletes)?;
    if !configured {
        if let Err(e) = &chosen[0].config {
            return Err(e.clone().into());
        }
        worker.refresh(&cli.tenants, true).await?;
    }
    *lock(&shared.probe) =
        leases.or_else(|| worker.known.values().next().map(|k| k.engine.store.clone()));

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

    loop {
        let tick = Utc::now();
        if let Err(e) = worker.refresh(&cli.tenants, false).await {
            tracing::error!(error = %e, "tenants: cannot read them this tick");
        }
        worker.cycle(tick, &stop).await;
        if stop.is_cancelled() {
            break;
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
    for known in worker.known.values() {
        known.engine.store.close().await;
    }
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

impl Worker {
    /// Reads the tenants again: a file added is a new tenant, a file removed stops
    /// that tenant (nothing is deleted in its providers), a file changed is connected
    /// again. A bad file is said once and never stops the others.
    async fn refresh(&mut self, names: &[String], first: bool) -> Result<(), AppError> {
        let (_, chosen) = match tenants::chosen(&self.config, names) {
            Ok(c) => c,
            // An unknown --tenant is a usage error at start; later the file may come back.
            Err(e) if first => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "tenants: the named tenants are not all there");
                return Ok(());
            }
        };
        let now: HashSet<&str> = chosen.iter().map(|c| c.name.as_str()).collect();
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|k| !now.contains(k.as_str()))
            .cloned()
            .collect();
        for name in gone {
            tracing::info!(tenant = %name, "tenant removed: no longer reconciled");
            if let Some(k) = self.known.remove(&name) {
                k.engine.store.close().await;
            }
            lock(&self.shared.stores).remove(&name);
            self.shared.metrics.unwatch_tenant(&name);
        }
        for t in chosen {
            let config = match &t.config {
                Ok(c) => c.clone(),
                Err(e) => {
                    let text = e.to_string();
                    if self.said.get(&t.name) != Some(&text) {
                        tracing::error!(tenant = %t.name, error = %text, "tenant not reconciled: its file is not usable");
                        self.shared.metrics.count_cycle(&t.name, Outcome::Failed);
                        self.said.insert(t.name.clone(), text);
                    }
                    if let Some(k) = self.known.remove(&t.name) {
                        k.engine.store.close().await;
                        lock(&self.shared.stores).remove(&t.name);
                    }
                    continue;
                }
            };
            self.said.remove(&t.name);
            let file_text = t.text.clone();
            if let Some(k) = self.known.get(&t.name) {
                if k.file_text == file_text {
                    continue;
                }
                tracing::info!(tenant = %t.name, "tenant file changed: connecting again");
            } else if t.store_key.is_some() {
                tracing::info!(tenant = %t.name, "tenant added");
            }
            let providers = match connect_all(&config) {
                Ok(p) => p,
                Err(e) if first && t.store_key.is_none() => return Err(e),
                Err(e) => {
                    tracing::error!(tenant = %t.name, error = %e, "tenant not reconciled");
                    continue;
                }
            };
            let store = match open_store(&config.store.path, t.key()).await {
                Ok(s) => s,
                Err(e) if first && t.store_key.is_none() => return Err(e),
                Err(e) => {
                    tracing::error!(tenant = %t.name, error = %e, "tenant not reconciled: its store cannot be opened");
                    continue;
                }
            };
            let engine = Engine::new(config, store.clone(), providers).for_tenant(&t.name);
            for c in &engine.providers {
                self.shared
                    .metrics
                    .watch(&t.name, &c.provider.name().0, c.provider.traffic());
            }
            lock(&self.shared.stores).insert(t.name.clone(), store);
            if let Some(old) = self.known.insert(
                t.name.clone(),
                Known {
                    engine: Arc::new(engine),
                    file_text,
                    allow_deletes: self.allow_deletes.iter().cloned().collect(),
                },
            ) {
                old.engine.store.close().await;
            }
        }
        Ok(())
    }

    /// One tick: claims due tenants while a slot is free, up to
    /// `max_concurrent_tenants` at once, and reconciles each under its lease; a slot
    /// that frees claims the next, so no worker idles while tenants wait.
    async fn cycle(&mut self, tick: chrono::DateTime<Utc>, stop: &CancellationToken) {
        let max = self.config.cluster.max_concurrent_tenants.max(1);
        // The cycles run as futures of this task; they wait on the network, not on a
        // core.
        type Cycle = std::pin::Pin<
            Box<
                dyn std::future::Future<Output = (String, Result<Report, crate::sync::RunFailed>)>
                    + Send,
            >,
        >;
        let mut running: futures::stream::FuturesUnordered<Cycle> =
            futures::stream::FuturesUnordered::new();
        let mut busy: HashSet<String> = HashSet::new();
        loop {
            if !stop.is_cancelled() && running.len() < max {
                for (name, lease) in self.claim(max - running.len(), tick, &busy).await {
                    let Some(known) = self.known.get_mut(&name) else {
                        lease.release().await;
                        continue;
                    };
                    let engine = known.engine.clone();
                    let opts = RunOptions {
                        dry_run: false,
                        allow_deletes: std::mem::take(&mut known.allow_deletes),
                        mode: "daemon",
                        progress: None,
                        slice: Some(self.config.cluster.tenant_slice),
                    };
                    let stop = stop.clone();
                    busy.insert(name.clone());
                    running.push(Box::pin(async move {
                        let result = engine.reconcile_leased(lease, &opts, &stop).await;
                        (name, result)
                    }));
                }
            }
            let Some((name, result)) = futures::StreamExt::next(&mut running).await else {
                break;
            };
            busy.remove(&name);
            self.finished(&name, result);
        }
    }

    /// Claims up to `free` due tenants not running here.
    async fn claim(
        &self,
        free: usize,
        tick: chrono::DateTime<Utc>,
        busy: &HashSet<String>,
    ) -> Vec<(String, Lease)> {
        let ttl = self.config.cluster.lease;
        let names: Vec<&str> = self
            .known
            .keys()
            .map(String::as_str)
            .filter(|n| !busy.contains(*n))
            .collect();
        let mut out = Vec::new();
        let asked = tokio::time::Instant::now();
        match &self.leases {
            Some(leases) => match leases
                .claim_due(&names, &self.holder, ttl, tick, free)
                .await
            {
                Ok(claimed) => {
                    for (name, token) in claimed {
                        if let Some(k) = self.known.get(&name) {
                            out.push((
                                name.clone(),
                                k.engine.store.adopt_lease(&name, token, ttl, asked),
                            ));
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "tenants: cannot claim leases");
                    lock(&self.shared.health).store_ok = false;
                }
            },
            None => {
                for name in names {
                    if out.len() >= free {
                        break;
                    }
                    let store = &self.known[name].engine.store;
                    match store.claim_due(&[name], &self.holder, ttl, tick, 1).await {
                        Ok(claimed) => {
                            for (name, token) in claimed {
                                out.push((
                                    name.clone(),
                                    store.adopt_lease(&name, token, ttl, asked),
                                ));
                            }
                        }
                        Err(e) => {
                            tracing::error!(tenant = %name, error = %e, "cannot claim the lease")
                        }
                    }
                }
            }
        }
        out
    }

    fn finished(&self, tenant: &str, result: Result<Report, crate::sync::RunFailed>) {
        match result {
            // Counted and judged first, said after: whoever reads "cycle finished" in
            // the log finds the cycle in /metrics and /readyz already.
            Ok(report) => {
                self.shared.metrics.observe_cycle(tenant, &report);
                let mut h = lock(&self.shared.health);
                h.store_ok = true;
                // Readiness follows the listings of a single merchant only.
                let report = if self.config.tenants.is_none() {
                    &*h.last.insert(report)
                } else {
                    &report
                };
                log_cycle(tenant, report);
            }
            Err(e) => {
                self.shared.metrics.count_cycle(tenant, Outcome::Failed);
                lock(&self.shared.health).store_ok = false;
                tracing::error!(tenant, error = %e, "cycle failed");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

/// Ready while the store answers and the last cycle did not fail outright.
async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    let probe = lock(&shared.probe).clone();
    let store_ok = match probe {
        Some(store) => sqlx::query("SELECT 1").execute(store.pool()).await.is_ok(),
        None => true,
    };
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
    let stores: Vec<(String, Store)> = lock(&shared.stores)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut depths = Vec::with_capacity(stores.len());
    for (tenant, store) in &stores {
        let depth = match store.outbox_depth().await {
            Ok(rows) => Some(rows),
            Err(e) => {
                tracing::warn!(tenant, error = %e, "metrics: cannot read the outbox depth");
                None
            }
        };
        depths.push((tenant.as_str(), depth));
    }
    let depths: Vec<crate::metrics::TenantDepth<'_>> =
        depths.iter().map(|(t, d)| (*t, d.as_deref())).collect();
    match shared.metrics.encode_tenants(format, &depths) {
        Ok(text) => ([(CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
