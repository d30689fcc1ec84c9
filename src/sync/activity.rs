//! Activity polling (DESIGN 14): reads the event streams of linked customers (Malomo
//! events, Sendwithus email logs) into the store, a few customers per cycle, least
//! recently read first, so that the store holds one timeline per person.
//!
//! Incremental: each stream's cursor is stored with the page it came from, in one
//! transaction, so a page that held events is never read again; Sendwithus logs have
//! no pages and are read once per customer per read. Every request goes through the
//! provider's connector, so it shares its rate limit and retries; all are reads.
//! Owns when and how much is read; the SQL is `store::activity`.

use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Connected;
use crate::model::{CustomerId, ProviderName};
use crate::store::activity::{ActivityLag, Stream};
use crate::store::{Store, StoreError};

/// Customers read at once (each stream of a customer is read in turn).
const CONCURRENCY: usize = 4;

/// Pages of one stream read in one go at most: a stream that keeps handing out new
/// pages is read on at the customer's next turn.
const MAX_PAGES: u32 = 100;

/// What activity polling did this run (`activity` in the report).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ActivityReport {
    /// Customers whose streams were read.
    pub customers: u64,
    /// Events received.
    pub events_fetched: u64,
    /// Events new to the store among them.
    pub events_stored: u64,
    /// Requests made (pages and log reads).
    pub requests: u64,
    /// Reads that failed (tried again at the customer's next turn).
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// After this run: customers with a stream never read, and the oldest read
    /// (how far behind polling is, as `lag` tells it).
    pub never_read: u64,
    pub oldest_read: Option<String>,
}

impl ActivityReport {
    fn add(&mut self, o: ActivityReport) {
        self.customers += o.customers;
        self.events_fetched += o.events_fetched;
        self.events_stored += o.events_stored;
        self.requests += o.requests;
        self.failed += o.failed;
        if o.last_error.is_some() {
            self.last_error = o.last_error;
        }
    }
}

impl super::Engine {
    /// Keeps `[[groups]]` in step, then reads activity when `[activity]` is enabled;
    /// neither starts once the run is told to stop (a signal, a lost lease).
    pub(super) async fn activity_and_groups(
        &self,
        ctx: &super::PassContext<'_>,
        stop: &CancellationToken,
        report: &mut super::report::Report,
    ) -> Result<(), StoreError> {
        let open: Vec<Connected> = self
            .providers
            .iter()
            .filter(|c| !ctx.blocked.contains(c.provider.name()))
            .map(|c| Connected {
                provider: c.provider.clone(),
                rank: c.rank,
            })
            .collect();
        if self.config.groups.is_empty() {
            // No pass will clear what changed: nothing is kept for one.
            self.store.group_rules_kept(&self.tenant, &[]).await?;
        } else if !stop.is_cancelled() {
            report.groups = super::groups::sync(
                &self.store,
                &self.tenant,
                &self.config.groups,
                &open,
                self.config.sync.push_concurrency,
                self.config.sync.full_listing_every,
                stop,
            )
            .await?;
            for (provider, record, error) in std::mem::take(&mut report.groups.errors) {
                report.error(&provider, Some(record.0), None, format!("group: {error}"));
            }
        }
        if self.config.activity.enabled && !stop.is_cancelled() {
            report.activity = poll(
                &self.store,
                &self.tenant,
                &open,
                self.config.activity.customers_per_cycle,
                None,
                stop,
            )
            .await?;
        }
        Ok(())
    }
}

/// The connected providers that keep event streams.
fn sources(providers: &[Connected]) -> Vec<ProviderName> {
    providers
        .iter()
        .filter(|c| c.provider.has_events())
        .map(|c| c.provider.name().clone())
        .collect()
}

/// Reads the streams of up to `budget` customers (or of `only`), least recently read
/// first. Stops taking customers and pages when `stop` is cancelled.
pub async fn poll(
    store: &Store,
    tenant: &str,
    providers: &[Connected],
    budget: usize,
    only: Option<CustomerId>,
    stop: &CancellationToken,
) -> Result<ActivityReport, StoreError> {
    let names = sources(providers);
    let mut report = ActivityReport::default();
    if names.is_empty() || budget == 0 {
        return Ok(report);
    }
    let due = store.activity_due(tenant, &names, budget, only).await?;
    // The reads are made first and then run (a stream mapped by a closure is a future
    // the compiler cannot prove `Send`); one not started before `stop` reads nothing.
    let reads: Vec<_> = due
        .into_iter()
        .map(|(customer, streams)| async move {
            if stop.is_cancelled() {
                return Ok(ActivityReport::default());
            }
            refresh(store, tenant, providers, customer, streams, stop).await
        })
        .collect();
    let outcomes: Vec<Result<ActivityReport, StoreError>> = futures::stream::iter(reads)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for o in outcomes {
        report.add(o?);
    }
    let behind = store.activity_lag(tenant, &names).await?;
    report.never_read = behind.never_refreshed;
    report.oldest_read = behind.oldest_refresh;
    tracing::info!(
        customers = report.customers,
        events = report.events_fetched,
        stored = report.events_stored,
        failed = report.failed,
        "activity read"
    );
    Ok(report)
}

/// Reads every stream of one customer.
async fn refresh(
    store: &Store,
    tenant: &str,
    providers: &[Connected],
    customer: CustomerId,
    streams: Vec<Stream>,
    stop: &CancellationToken,
) -> Result<ActivityReport, StoreError> {
    let mut report = ActivityReport {
        customers: 1,
        ..ActivityReport::default()
    };
    for s in streams {
        let Some(c) = providers.iter().find(|c| c.provider.name() == &s.provider) else {
            continue;
        };
        read_stream(store, tenant, c, customer, s, stop, &mut report).await?;
    }
    Ok(report)
}

/// Reads one stream from its cursor until it has nothing more, storing each page
/// with the cursor after it. A stored cursor the provider no longer takes (400, 404)
/// is dropped once and the stream read from its start (the events are kept once).
async fn read_stream(
    store: &Store,
    tenant: &str,
    c: &Connected,
    customer: CustomerId,
    s: Stream,
    stop: &CancellationToken,
    report: &mut ActivityReport,
) -> Result<(), StoreError> {
    let p = &c.provider;
    let mut cursor = s.cursor;
    let mut restarted = false;
    for _ in 0..MAX_PAGES {
        if stop.is_cancelled() {
            return Ok(());
        }
        report.requests += 1;
        match p.events(&s.remote_id, cursor.as_deref()).await {
            Ok(page) => {
                report.events_fetched += page.events.len() as u64;
                let at = page.next.as_deref().or(cursor.as_deref());
                report.events_stored += store
                    .store_events(tenant, &s.provider, customer, &page.events, at)
                    .await?;
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => return Ok(()),
                }
            }
            Err(e) if cursor.is_some() && !restarted && matches!(e.status(), Some(400 | 404)) => {
                restarted = true;
                cursor = None;
            }
            Err(e) => {
                tracing::warn!(provider = %s.provider, error = %e, "activity read failed");
                report.failed += 1;
                report.last_error = Some(e.to_string());
                return store.touch_stream(tenant, &s.provider, customer).await;
            }
        }
    }
    Ok(())
}

/// How far behind activity polling is (for `status`): customers with a stream, those
/// never read, and the oldest read.
/// Needs no connection: the streams are those of the enabled Malomo and Sendwithus
/// providers of `config`.
pub async fn lag(
    store: &Store,
    tenant: &str,
    config: &crate::config::Config,
) -> Result<ActivityLag, StoreError> {
    use crate::config::Kind;
    let names: Vec<ProviderName> = config
        .providers
        .iter()
        .filter(|p| p.enabled && matches!(p.kind, Kind::Malomo | Kind::Sendwithus))
        .map(|p| p.name.clone())
        .collect();
    store.activity_lag(tenant, &names).await
}

impl ActivityLag {
    /// One line for `status`.
    pub fn line(&self) -> String {
        format!(
            "activity: {} customer(s) with streams, {} never read, oldest read {}",
            self.customers,
            self.never_refreshed,
            self.oldest_refresh.as_deref().unwrap_or("-")
        )
    }
}
