//! Activity polling (DESIGN 14): reads the event streams of linked customers (Malomo
//! events, Sendwithus email logs) into the store, a few customers per cycle, least
//! recently read first, so that the store holds one timeline per person.
//!
//! Incremental: each stream's cursor is stored with the page it came from, in one
//! transaction (many reads' pages to a transaction, from one writer), so a page that
//! held events is never read again; Sendwithus logs have
//! no pages and are read once per customer per read. Every request goes through the
//! provider's connector, so it shares its rate limit and retries; all are reads.
//! Owns when and how much is read; the SQL is `store::activity`.

use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use tokio::sync::mpsc::Sender;

use super::batches::Batches;
use super::Connected;
use crate::model::{CustomerId, ProviderName};
use crate::store::activity::{ActivityLag, ReadOutcome, Stream, StreamRead};
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
        // Every provider with events is a source while activity is on, a blocked one
        // too (its streams stay marked for when it is back).
        let kept = match self.config.activity.enabled {
            true => sources(&self.providers),
            false => Vec::new(),
        };
        self.store
            .activity_sources_kept(&self.tenant, &kept)
            .await?;
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
    // Every read goes to one writer, which stores them a batch per transaction (a
    // commit per read was most of a cycle's cost). A store error stops the reads.
    let (reads_done, incoming) = super::batches::channel();
    let halt = stop.child_token();
    let reading = read_all(providers, due, &halt, reads_done);
    let (read, stored) = tokio::join!(reading, store_reads(store, tenant, incoming, &halt));
    report.add(read);
    report.events_stored = stored?;
    let behind = store.activity_behind(tenant, &names).await?;
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

/// Reads the streams of `due`, `CONCURRENCY` customers at a time, each made only
/// when one before it is over: a read holds its requests' state, and made all at
/// once, the reads of a budget of 100,000 customers raised the run's peak memory
/// from 161 to 226 MB. None starts once `stop` is cancelled.
async fn read_all(
    providers: &[Connected],
    due: Vec<(CustomerId, Vec<Stream>)>,
    stop: &CancellationToken,
    out: Sender<StreamRead>,
) -> ActivityReport {
    let mut report = ActivityReport::default();
    let mut due = due.into_iter();
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        while running.len() < CONCURRENCY && !stop.is_cancelled() {
            let Some((customer, streams)) = due.next() else {
                break;
            };
            running.push(refresh(providers, customer, streams, stop, &out));
        }
        match running.next().await {
            Some(read) => report.add(read),
            None => return report,
        }
    }
}

/// The run's one writer of reads: stores each batch in one transaction until every
/// read is over; answers how many events were new. A store error stops the reads
/// (through `halt`); a read not stored is made again at the customer's next turn.
async fn store_reads(
    store: &Store,
    tenant: &str,
    mut batches: Batches<StreamRead>,
    halt: &CancellationToken,
) -> Result<u64, StoreError> {
    let mut batch = Vec::new();
    let mut new = 0;
    while batches.next(&mut batch).await {
        match store.store_reads(tenant, &batch).await {
            Ok(n) => new += n,
            Err(e) => {
                halt.cancel();
                return Err(e);
            }
        }
    }
    Ok(new)
}

/// Reads every stream of one customer.
async fn refresh(
    providers: &[Connected],
    customer: CustomerId,
    streams: Vec<Stream>,
    stop: &CancellationToken,
    out: &Sender<StreamRead>,
) -> ActivityReport {
    let mut report = ActivityReport {
        customers: 1,
        ..ActivityReport::default()
    };
    for s in streams {
        let Some(c) = providers.iter().find(|c| c.provider.name() == &s.provider) else {
            continue;
        };
        read_stream(c, customer, s, stop, out, &mut report).await;
    }
    report
}

/// Reads one stream from its cursor until it has nothing more, handing each page to
/// the writer with the cursor after it (it stores the two in one transaction). A
/// stored cursor the provider no longer takes (400, 404) is dropped once and the
/// stream read from its start (the events are kept once).
async fn read_stream(
    c: &Connected,
    customer: CustomerId,
    s: Stream,
    stop: &CancellationToken,
    out: &Sender<StreamRead>,
    report: &mut ActivityReport,
) {
    let p = &c.provider;
    let mut cursor = s.cursor;
    let mut restarted = false;
    for _ in 0..MAX_PAGES {
        if stop.is_cancelled() {
            return;
        }
        report.requests += 1;
        match p.events(&s.remote_id, cursor.as_deref()).await {
            Ok(page) => {
                report.events_fetched += page.events.len() as u64;
                let outcome = ReadOutcome::Page {
                    events: page.events,
                    cursor: page.next.clone().or_else(|| cursor.clone()),
                };
                // The writer is gone only after a store error, which the poll says.
                if out
                    .send(stream_read(&s.provider, customer, outcome))
                    .await
                    .is_err()
                {
                    return;
                }
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => return,
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
                let _ = out
                    .send(stream_read(&s.provider, customer, ReadOutcome::Failed))
                    .await;
                return;
            }
        }
    }
}

fn stream_read(provider: &ProviderName, customer: CustomerId, outcome: ReadOutcome) -> StreamRead {
    StreamRead {
        provider: provider.clone(),
        customer,
        outcome,
    }
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
