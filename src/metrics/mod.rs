//! The daemon's Prometheus metrics: one registry, the names, HELP texts and labels of
//! every family, and what feeds each one. It counts no request itself: the shared
//! HTTP client's `Traffic` does, and is read at each scrape; record counts come from
//! each cycle's `Report`, added once per cycle. It serves nothing (the daemon does).
//!
//! Every sample carries `tenant`, and every per-provider one `provider` (DESIGN 13).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

mod traffic;
use traffic::TrafficCollector;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::providers::http::Traffic;
use crate::sync::report::Report;

/// The `Content-Type` of the Prometheus text format (0.0.4), served by default.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// The `Content-Type` of OpenMetrics text, served to a scraper that asks for it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    tenant: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    tenant: String,
    provider: String,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    tenant: String,
    change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CycleLabels {
    tenant: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboxLabels {
    tenant: String,
    provider: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// How a cycle of one tenant ended, as the `outcome` label of `custsync_cycles_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Converged,
    NotConverged,
    /// The cycle stopped on a store error.
    Failed,
    /// Another process held the tenant's lease: nothing was done.
    LeaseHeld,
}

impl Outcome {
    pub fn metric_label(self) -> &'static str {
        match self {
            Outcome::Converged => "converged",
            Outcome::NotConverged => "not_converged",
            Outcome::Failed => "failed",
            Outcome::LeaseHeld => "lease_held",
        }
    }
}

/// A tenant and its outbox rows `(provider, state, count)` as read at a scrape
/// (`None`: they could not be read).
pub type TenantDepth<'a> = (&'a str, Option<&'a [(String, String, i64)]>);

/// The states of an outbox row (`migrations/`): each has a gauge, zero when empty.
const OUTBOX_STATES: [&str; 4] = ["pending", "in_flight", "failed", "parked"];

const RECORD_OPS: [&str; 6] = [
    "fetched", "created", "updated", "deleted", "failed", "skipped",
];

/// What the scrape format is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4: what `promtool check metrics` reads.
    Text,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header asks for it, else the Prometheus text.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

type DurationFamily = Family<TenantLabels, Histogram, fn() -> Histogram>;

/// The daemon's one registry and handles on its families.
pub struct Metrics {
    registry: Registry,
    traffic: Arc<TrafficCollector>,
    records: Family<RecordLabels, Counter>,
    cycles: Family<CycleLabels, Counter>,
    conflicts: Family<TenantLabels, Counter>,
    cycle_duration: DurationFamily,
    last_success: Family<TenantLabels, Gauge<f64, AtomicU64>>,
    held_deletes: Family<TenantLabels, Gauge>,
    outbox: Family<OutboxLabels, Gauge>,
    events: Family<TenantLabels, Counter>,
    group_changes: Family<GroupLabels, Counter>,
    /// One scrape at a time: the outbox gauges are refilled at each.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "custsync_build_info",
            "The running custsync's version, as a label; the value is always 1",
            build,
        );
        let traffic = Arc::new(TrafficCollector::default());
        registry.register_collector(Box::new(traffic.clone()));
        let records = Family::default();
        registry.register(
            "custsync_records",
            "Customer records per provider and operation: fetched (listed), created, updated, deleted, failed (a write that did not succeed), skipped (unreadable in a listing)",
            records.clone(),
        );
        let cycles = Family::default();
        registry.register(
            "custsync_cycles",
            "Reconciliation cycles by outcome: converged, not_converged, failed (stopped on a store error), lease_held (another process held the tenant)",
            cycles.clone(),
        );
        let conflicts = Family::default();
        registry.register(
            "custsync_conflicts",
            "Field conflicts resolved by provider priority",
            conflicts.clone(),
        );
        let cycle_duration: DurationFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.25, 2.0, 18)));
        registry.register(
            "custsync_cycle_duration_seconds",
            "Wall time of a reconciliation cycle",
            cycle_duration.clone(),
        );
        let last_success = Family::default();
        registry.register(
            "custsync_last_success_timestamp_seconds",
            "Unix time at which the last converged cycle ended",
            last_success.clone(),
        );
        let held_deletes = Family::default();
        registry.register(
            "custsync_held_deletes",
            "Deletions held by the guard in the last cycle (waiting for --allow-deletes)",
            held_deletes.clone(),
        );
        let outbox = Family::default();
        registry.register(
            "custsync_outbox_depth",
            "Operations in the outbox by provider and state, read at the scrape",
            outbox.clone(),
        );
        let events = Family::default();
        registry.register(
            "custsync_activity_events",
            "Activity events read from the providers' streams (Malomo events, Sendwithus logs)",
            events.clone(),
        );
        let group_changes = Family::default();
        registry.register(
            "custsync_group_changes",
            "Sendwithus group memberships custsync changed, by change: added or removed",
            group_changes.clone(),
        );
        Self {
            events,
            group_changes,
            registry,
            traffic,
            records,
            cycles,
            conflicts,
            cycle_duration,
            last_success,
            held_deletes,
            outbox,
            scrape: Mutex::new(()),
        }
    }

    /// Exposes a provider's request counters under `tenant`, and its record counters
    /// at zero, so that every series exists before the first cycle ends.
    /// Stops counting the traffic of a tenant that is gone (its file removed).
    pub fn unwatch_tenant(&self, tenant: &str) {
        self.traffic
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(l, _)| l.tenant != tenant);
    }

    pub fn watch(&self, tenant: &str, provider: &str, traffic: Arc<Traffic>) {
        for op in RECORD_OPS {
            self.records
                .get_or_create(&RecordLabels {
                    tenant: tenant.to_string(),
                    provider: provider.to_string(),
                    op,
                })
                .inc_by(0);
        }
        let mut sources = self
            .traffic
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // A tenant's providers connected again (its file changed): the new counters.
        sources.retain(|(l, _)| !(l.tenant == tenant && l.provider == provider));
        sources.push((
            ProviderLabels {
                tenant: tenant.to_string(),
                provider: provider.to_string(),
            },
            traffic,
        ));
    }

    /// Adds one finished cycle of `tenant`: its record counts, outcome and duration.
    pub fn observe_cycle(&self, tenant: &str, report: &Report) {
        for (provider, p) in &report.providers {
            let counts = [
                p.fetched, p.created, p.updated, p.deleted, p.failed, p.skipped,
            ];
            for (op, n) in RECORD_OPS.into_iter().zip(counts) {
                self.records
                    .get_or_create(&RecordLabels {
                        tenant: tenant.to_string(),
                        provider: provider.clone(),
                        op,
                    })
                    .inc_by(n);
            }
        }
        let t = TenantLabels {
            tenant: tenant.to_string(),
        };
        self.conflicts.get_or_create(&t).inc_by(report.conflicts);
        self.events
            .get_or_create(&t)
            .inc_by(report.activity.events_fetched);
        for (change, n) in [
            ("added", report.groups.added),
            ("removed", report.groups.removed),
        ] {
            self.group_changes
                .get_or_create(&GroupLabels {
                    tenant: tenant.to_string(),
                    change,
                })
                .inc_by(n);
        }
        self.held_deletes
            .get_or_create(&t)
            .set(i64::try_from(report.held_deletes).unwrap_or(i64::MAX));
        self.cycle_duration
            .get_or_create(&t)
            .observe(report.duration_secs);
        let outcome = if report.converged {
            let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
            self.last_success.get_or_create(&t).set(now);
            Outcome::Converged
        } else {
            Outcome::NotConverged
        };
        self.count_cycle(tenant, outcome);
    }

    /// Counts a cycle of `tenant` by how it ended.
    pub fn count_cycle(&self, tenant: &str, outcome: Outcome) {
        self.cycles
            .get_or_create(&CycleLabels {
                tenant: tenant.to_string(),
                outcome: outcome.metric_label(),
            })
            .inc();
    }

    /// The exposition, with the outbox gauges of `tenant` set from `depth` (rows of
    /// provider, state, count) when the store could be read (else left as they were).
    pub fn encode(
        &self,
        format: Format,
        tenant: &str,
        depth: Option<&[(String, String, i64)]>,
    ) -> Result<String, std::fmt::Error> {
        self.encode_tenants(format, &[(tenant, depth)])
    }

    /// The exposition with the outbox depth of each tenant as read now (`None`: it
    /// could not be read, its gauges are left out).
    pub fn encode_tenants(
        &self,
        format: Format,
        depths: &[TenantDepth<'_>],
    ) -> Result<String, std::fmt::Error> {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        // Gauges of tenants gone go with a full read; an unreadable store keeps its own.
        if depths.iter().all(|(_, d)| d.is_some()) {
            self.outbox.clear();
        }
        for (tenant, depth) in depths {
            let Some(depth) = depth else { continue };
            let watched = self
                .traffic
                .sources
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for (labels, _) in watched.iter().filter(|(l, _)| l.tenant == *tenant) {
                for state in OUTBOX_STATES {
                    self.outbox
                        .get_or_create(&OutboxLabels {
                            tenant: tenant.to_string(),
                            provider: labels.provider.clone(),
                            state: state.to_string(),
                        })
                        .set(0);
                }
            }
            drop(watched);
            for (provider, state, n) in depth.iter() {
                self.outbox
                    .get_or_create(&OutboxLabels {
                        tenant: tenant.to_string(),
                        provider: provider.clone(),
                        state: state.clone(),
                    })
                    .set(*n);
            }
        }
        let mut out = String::new();
        match format {
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)?
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
