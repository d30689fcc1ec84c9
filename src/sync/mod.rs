//! The engine: one reconciliation is poll → merge → plan → push.
//!
//! Owns the order of the phases and what crosses them; the decisions themselves are
//! the pure functions in `merge.rs` and `plan.rs`, the I/O is in `poll.rs`, `push.rs`
//! and the store. The plan is written to the outbox in the same transaction as the
//! canonical change it comes from, and a snapshot moves only when a provider confirmed
//! a write, so a kill at any instant loses nothing: the next run plans the same again.

pub mod activity;
mod batches;
pub mod groups;
pub mod merge;
pub mod plan;
pub mod poll;
pub mod progress;
pub mod push;
pub mod report;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::{CustomerId, Email, Field, Projection, ProviderName};
use crate::providers::http::{gated, Traffic, WriteGate};
use crate::providers::{Capabilities, Provider};
use crate::store::audit::AuditEntry;
use crate::store::lease::{HeldBy, Holder, Lease};
use crate::store::links::{CustomerRow, CustomerUpdate, LinkRow, NewOp};
use crate::store::{RunId, Store, StoreError};
use merge::{merge, Side};
use plan::{plan, LinkState, Op, Target};
use report::{FieldChange, PlannedOp, Report};

pub use crate::config::DEFAULT_TENANT;

/// A run stopped by a store error, with the report of what it had done until then
/// (the error is the last of its `errors`).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RunFailed {
    pub error: StoreError,
    pub report: Box<Report>,
}

impl RunFailed {
    fn new(error: StoreError, report: Report) -> Self {
        Self {
            error,
            report: Box::new(report),
        }
    }
}

/// How many customers are merged and planned per transaction.
const BATCH: i64 = 500;

/// What to do in one reconciliation.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Plan only: nothing is pushed (the caller runs this on a copy of the store).
    pub dry_run: bool,
    /// Providers whose held deletes are released for this run.
    pub allow_deletes: HashSet<String>,
    /// `runs.mode`: once, daemon or dry-run.
    pub mode: &'static str,
    /// Where progress events go (a terminal), if anywhere.
    pub progress: Option<progress::Progress>,
    /// A daemon's cycle yields after this long (`[cluster] tenant_slice_secs`): it
    /// stops taking new work, and the next cycle resumes the outbox first.
    pub slice: Option<std::time::Duration>,
}

/// One configured, enabled provider with what the engine needs of it.
pub struct Connected {
    pub provider: Arc<dyn Provider>,
    pub rank: usize,
}

pub struct Engine {
    pub config: Arc<Config>,
    pub store: Store,
    pub providers: Vec<Connected>,
    /// The tenant this engine reconciles (`default` for a single-merchant config).
    pub tenant: String,
}

/// What a plan depends on besides the stored data: the version, the providers and the
/// rules, hashed. A change of any of them plans every customer again.
fn plan_basis(config: &Config) -> String {
    use sha2::{Digest, Sha256};
    let providers: Vec<String> = config
        .providers
        .iter()
        .map(|p| format!("{}:{:?}:{}:{}", p.name, p.kind, p.enabled, p.base_url))
        .collect();
    let text = format!(
        "{}|{providers:?}|{:?}|{:?}|{}",
        env!("CARGO_PKG_VERSION"),
        config.sync.priority,
        config.sync.conflict_policy,
        config.sync.propagate_deletes,
    );
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..12])
}

/// Per-run facts the merge/plan pass needs about every provider.
struct PassContext<'a> {
    /// Plan every customer; otherwise only those that changed or have open work.
    full: bool,
    /// Customers whose record vanished this run.
    touched: HashSet<CustomerId>,
    run: RunId,
    caps: HashMap<&'a ProviderName, Capabilities>,
    /// Providers whose listing failed: nothing is pushed to them this run.
    blocked: HashSet<ProviderName>,
    /// Providers whose listing did not prove itself complete: they may hold what they
    /// did not show, so no create or delete is sent to them this run (DESIGN 4c).
    incomplete: HashSet<ProviderName>,
    /// Per provider, emails of records its listing skipped but showed: no create there.
    skipped_emails: HashMap<ProviderName, HashSet<Email>>,
    /// Customers whose deletion the guard holds: nothing is pushed for them.
    held: HashSet<CustomerId>,
    /// Customers with a record listed under another customer's email, and those
    /// others (4c Identity): neither is merged nor pushed this run.
    frozen: HashSet<CustomerId>,
}

impl Engine {
    pub fn new(config: Arc<Config>, store: Store, providers: Vec<Connected>) -> Self {
        Self {
            config,
            store,
            providers,
            tenant: DEFAULT_TENANT.to_string(),
        }
    }

    /// The same engine for the tenant `name`.
    pub fn for_tenant(mut self, name: &str) -> Self {
        self.tenant = name.to_string();
        self
    }

    /// One full reconciliation of every enabled provider under the tenant's lease
    /// (DESIGN 4c): `Ok(Err(held))`, having sent nothing, when another process holds
    /// it. A dry run works on a copy of the store and takes no lease. Losing the lease
    /// part way stops the run's writes at once: every claim of outbox work is fenced.
    pub async fn reconcile(
        &self,
        opts: &RunOptions,
        stop: &CancellationToken,
    ) -> Result<Result<Report, HeldBy>, RunFailed> {
        if opts.dry_run {
            return self.run_once(opts, stop, None, None).await.map(Ok);
        }
        let holder = Holder::this_process(self.config.cluster.worker_id.as_deref());
        let lease = match self
            .store
            .acquire_lease(&self.tenant, &holder, self.config.cluster.lease)
            .await
        {
            Ok(Ok(lease)) => lease,
            Ok(Err(held)) => return Ok(Err(held)),
            Err(error) => return Err(RunFailed::new(error, Report::default())),
        };
        self.reconcile_leased(lease, opts, stop).await.map(Ok)
    }

    /// One reconciliation under `lease`, already taken (a worker's claim); the lease is
    /// given back at the end.
    pub async fn reconcile_leased(
        &self,
        lease: Lease,
        opts: &RunOptions,
        stop: &CancellationToken,
    ) -> Result<Report, RunFailed> {
        // The run stops taking work when the process is told to stop or the lease is lost.
        let run_stop = stop.child_token();
        let watch = {
            let (lost, run_stop) = (lease.lost().clone(), run_stop.clone());
            tokio::spawn(async move {
                lost.cancelled().await;
                run_stop.cancel();
            })
        };
        let slice = opts.slice.map(|d| {
            let (ended, run_stop) = (CancellationToken::new(), run_stop.clone());
            let timer = {
                let ended = ended.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    ended.cancel();
                    run_stop.cancel();
                })
            };
            (ended, timer)
        });
        let lease = Arc::new(lease);
        let gate: Arc<dyn WriteGate> = lease.clone();
        let sliced = slice.as_ref().map(|(ended, _)| ended.clone());
        let result = gated(gate, self.run_once(opts, &run_stop, Some(&lease), sliced)).await;
        if let Some((_, timer)) = slice {
            timer.abort();
        }
        watch.abort();
        lease.release().await;
        result
    }

    /// One full reconciliation; writes are claimed under `lease` (none without one).
    /// A run that a store error stops is marked failed (one attempt: the store may be
    /// what failed) and comes back with the report of what it had done.
    async fn run_once(
        &self,
        opts: &RunOptions,
        stop: &CancellationToken,
        lease: Option<&Lease>,
        sliced: Option<CancellationToken>,
    ) -> Result<Report, RunFailed> {
        let mut report = Report {
            dry_run: opts.dry_run,
            ..Report::default()
        };
        let run = match self.begin(opts).await {
            Ok(run) => run,
            Err(error) => return Err(RunFailed::new(error, report)),
        };
        report.run_id = run.0;
        match self
            .phases(run, opts, stop, lease, sliced.as_ref(), &mut report)
            .await
        {
            Ok(()) => Ok(report),
            Err(error) => {
                report.converged = false;
                report.error("custsync", None, None, format!("run stopped: {error}"));
                let json = serde_json::to_string(&report).unwrap_or_else(|_| "null".into());
                if let Err(e) = self.store.finish_run(run, "failed", &json).await {
                    tracing::warn!(run = run.0, error = %e, "could not mark the run failed");
                }
                Err(RunFailed::new(error, report))
            }
        }
    }

    async fn begin(&self, opts: &RunOptions) -> Result<RunId, StoreError> {
        self.store.close_interrupted_runs().await?;
        self.store.recover_in_flight().await?;
        self.store.begin_run(opts.mode).await
    }

    /// The phases of one run, filling `report`; the run's row is finished here when
    /// all went well.
    async fn phases(
        &self,
        run: RunId,
        opts: &RunOptions,
        stop: &CancellationToken,
        lease: Option<&Lease>,
        sliced: Option<&CancellationToken>,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut cpu = report::process_cpu_secs();
        let mut lap = || {
            let now = report::process_cpu_secs();
            let spent = now - cpu;
            cpu = now;
            spent
        };
        let before: Vec<(u64, u64, u64)> = self
            .providers
            .iter()
            .map(|c| traffic_counts(&c.provider.traffic()))
            .collect();
        for c in &self.providers {
            report.provider(&c.provider.name().0);
        }

        // A run after a converged one with the same providers and rules plans only
        // the customers that changed, have open operations or lost a record.
        report.plan_basis = plan_basis(&self.config);
        let last = self.store.last_reported_run().await?;
        let full = match &last {
            Some(last) => {
                let r = last.report.clone().unwrap_or_default();
                !(matches!(last.mode.as_str(), "once" | "daemon")
                    && last.status == "converged"
                    && r["plan_basis"].as_str() == Some(report.plan_basis.as_str()))
            }
            None => true,
        };
        // A cycle that yielded its slot left writes in the outbox: this one sends them
        // first, before listing anything again.
        let resume = !opts.dry_run
            && last
                .as_ref()
                .is_some_and(|l| matches!(l.status.as_str(), "yielded" | "resumed"))
            && self.store.open_op_count().await? > 0;
        // 1. Poll every provider at once, each page stored as it arrives.
        let full_every = chrono::Duration::from_std(self.config.sync.full_listing_every)
            .unwrap_or(chrono::Duration::MAX);
        let polls = if resume {
            tracing::info!(tenant = %self.tenant, "resuming the writes a yielded cycle left");
            Vec::new()
        } else {
            futures::future::join_all(self.providers.iter().map(|c| {
                poll::poll(
                    &self.store,
                    c.provider.as_ref(),
                    run,
                    full_every,
                    opts.progress.as_ref(),
                )
            }))
            .await
        };
        let mut ctx = PassContext {
            full,
            touched: HashSet::new(),
            run,
            caps: self
                .providers
                .iter()
                .map(|c| (c.provider.name(), c.provider.capabilities()))
                .collect(),
            blocked: HashSet::new(),
            incomplete: HashSet::new(),
            skipped_emails: HashMap::new(),
            held: HashSet::new(),
            frozen: HashSet::new(),
        };
        let mut complete = Vec::new();
        for (c, outcome) in self.providers.iter().zip(polls) {
            let outcome = outcome?;
            let name = c.provider.name();
            let r = report.provider(&name.0);
            r.fetched = outcome.fetched;
            r.skipped = outcome.skipped.len() as u64;
            report.errors.extend(outcome.skipped);
            if !outcome.skipped_emails.is_empty() {
                ctx.skipped_emails
                    .insert(name.clone(), outcome.skipped_emails);
            }
            if let Some(e) = outcome.error {
                report.provider(&name.0).listing_error = Some(e.clone());
                report.error(&name.0, None, None, format!("listing failed: {e}"));
                ctx.blocked.insert(name.clone());
            } else if let Some(why) = outcome.incomplete {
                let e = format!("listing incomplete: {why}; no deletion is inferred and no create or delete is sent to {name} this run");
                report.provider(&name.0).listing_error = Some(e.clone());
                report.error(&name.0, None, None, e);
                ctx.incomplete.insert(name.clone());
            } else if outcome.complete {
                complete.push((name.clone(), outcome.seen));
            }
        }

        // 2. Deletions seen by complete listings, under the guard.
        for (name, seen) in &complete {
            self.deletions(name, seen, opts, &mut ctx, report).await?;
        }
        // What the listings saw (their keys: 7 bytes a link) is not needed past here.
        drop(complete);

        // A record that took another customer's email is not merged: both wait.
        self.freeze_claims(&mut ctx, report).await?;
        report.cpu_secs.list = lap();

        // 3. Merge and plan every customer, batch by batch; 4. push, every provider at
        // once, or print the plan. A write whose answer showed data custsync did not
        // have (an upsert into an existing record) is merged and pushed in a second
        // pass, so that one run ends in step.
        if !resume {
            self.merge_and_plan_all(&ctx, false, report).await?;
            // Many rows came in or were planned: the database's statistics are stale.
            let fetched: u64 = report.providers.values().map(|p| p.fetched).sum();
            if ctx.full && fetched >= 1000 {
                self.store.refresh_statistics().await?;
            }
        }
        report.cpu_secs.merge = lap();
        if let Some(progress) = &opts.progress {
            progress(&progress::Event::Planned {
                ops: self.store.open_op_count().await?,
            });
        }
        if opts.dry_run {
            self.fill_plan(report).await?;
        } else if let Some(lease) = lease {
            if self.push_all(&ctx, lease, stop, opts, report).await? > 0 && !stop.is_cancelled() {
                self.merge_and_plan_all(&ctx, true, report).await?;
                self.push_all(&ctx, lease, stop, opts, report).await?;
            }
            report.cpu_secs.push = lap();
            // 5. Groups, then activity: after the profile sync, so they never delay it;
            // inside the run, so that group writes pass the lease gate.
            if !resume {
                self.activity_and_groups(&ctx, stop, report).await?;
            }
            report.cpu_secs.activity = lap();
            if lease.lost().is_cancelled() {
                report.error(
                    "custsync",
                    None,
                    None,
                    format!(
                        "lease of tenant {} lost (another process took it over, or it expired before it could be renewed): stopped writing",
                        self.tenant
                    ),
                );
            }
        }

        for (c, (req0, retry0, thr0)) in self.providers.iter().zip(before) {
            let (req, retry, thr) = traffic_counts(&c.provider.traffic());
            let r = report.provider(&c.provider.name().0);
            r.requests = req - req0;
            r.retries = retry - retry0;
            r.throttled = thr - thr0;
        }
        let failed: u64 = report.providers.values().map(|p| p.failed).sum();
        let listed = ctx.blocked.is_empty() && ctx.incomplete.is_empty();
        report.converged = if opts.dry_run {
            listed
        } else {
            failed == 0
                && listed
                && report.held_deletes == 0
                && lease.is_some_and(|l| !l.lost().is_cancelled())
                && !stop.is_cancelled()
        };
        report.yielded = sliced.is_some_and(|s| s.is_cancelled());
        // A resumed cycle listed nothing: the next one lists and plans everyone.
        report.converged &= !resume && !report.yielded;
        report.duration_secs = started.elapsed().as_secs_f64();
        // A resumed cycle is "resumed" whether or not it used its whole slice: what it
        // left in the outbox is resumed again.
        let status = if report.converged {
            "converged"
        } else if resume {
            "resumed"
        } else if report.yielded {
            "yielded"
        } else {
            "failed"
        };
        self.store
            .finish_run(
                run,
                status,
                // As text straight away: a dry run's plan can be many thousands of
                // operations, and a JSON tree of them took six times the text's size.
                &serde_json::to_string(&*report).unwrap_or_else(|_| "null".into()),
            )
            .await?;
        Ok(())
    }

    /// Merges and plans customers in batches; with `only_dirty`, only those with a
    /// record observed since the last merge.
    async fn merge_and_plan_all(
        &self,
        ctx: &PassContext<'_>,
        only_dirty: bool,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        let mut after = 0;
        let touched: Vec<i64> = ctx.touched.iter().map(|c| c.0).collect();
        let changed_only = !ctx.full || only_dirty;
        loop {
            let batch = if changed_only {
                self.store
                    .load_changed_batch(after, BATCH, &touched)
                    .await?
            } else {
                self.store.load_batch(after, BATCH).await?
            };
            let Some(last) = batch.last() else { break };
            after = last.0.id.0;
            if !only_dirty {
                report.planned_customers += batch.len() as u64;
            }
            let mut updates = Vec::new();
            for (row, links) in &batch {
                if only_dirty && links.iter().all(|l| l.observed.is_none()) {
                    continue;
                }
                if let Some(u) = self.merge_and_plan(row, links, ctx, report) {
                    updates.push(u);
                }
            }
            for (id, why) in self.store.save_batch(ctx.run, &updates).await? {
                report.error("custsync", None, None, format!("customer {}: {why}", id.0));
            }
        }
        Ok(())
    }

    /// Pushes every provider's pending operations at once; returns how many writes
    /// showed data to merge (see `push::Done`).
    async fn push_all(
        &self,
        ctx: &PassContext<'_>,
        lease: &Lease,
        stop: &CancellationToken,
        opts: &RunOptions,
        report: &mut Report,
    ) -> Result<u64, StoreError> {
        let targets: Vec<&Connected> = self
            .providers
            .iter()
            .filter(|c| !ctx.blocked.contains(c.provider.name()))
            .collect();
        // One writer records every provider's outcomes, a batch per transaction.
        let (outcomes, incoming) = batches::channel();
        let writer_failed = CancellationToken::new();
        let pushes = futures::future::join_all(targets.iter().map(|c| {
            push::push(
                &self.store,
                c.provider.clone(),
                push::Scope {
                    run: ctx.run,
                    lease,
                    frozen: &ctx.frozen,
                    updates_only: ctx.incomplete.contains(c.provider.name()),
                    concurrency: self.config.sync.push_concurrency,
                },
                push::Writer {
                    outcomes: outcomes.clone(),
                    failed: &writer_failed,
                },
                stop,
                opts.progress.as_ref(),
            )
        }));
        // The writer ends when the last push's sender is dropped.
        drop(outcomes);
        let (pushes, written) = tokio::join!(
            pushes,
            push::record_outcomes(&self.store, ctx.run, incoming, &writer_failed)
        );
        written?;
        let mut adopted = 0;
        // A store error stops the run, after the counts of the pushes that ended well.
        let mut failure = None;
        for (c, outcome) in targets.iter().zip(pushes) {
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(e) => {
                    failure.get_or_insert(e);
                    continue;
                }
            };
            let r = report.provider(&c.provider.name().0);
            r.created += outcome.created;
            r.updated += outcome.updated;
            r.deleted += outcome.deleted;
            r.failed += outcome.failed;
            adopted += outcome.adopted;
            report.errors.extend(outcome.errors);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(adopted),
        }
    }

    /// Records listed with a new email that another customer has (4c Identity): each
    /// is skipped and reported, and nothing is merged or pushed for either customer
    /// this run; the records stay observed, so the next run looks at them again.
    async fn freeze_claims(
        &self,
        ctx: &mut PassContext<'_>,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        for claim in self.store.email_claims().await? {
            tracing::warn!(provider = %claim.provider, remote_id = %claim.remote_id,
                "a record took another customer's email: skipped");
            report.provider(&claim.provider.0).skipped += 1;
            report.error(
                &claim.provider.0,
                Some(claim.email),
                Some(claim.remote_id.0),
                "email belongs to another customer",
            );
            ctx.frozen.extend([claim.customer, claim.owner]);
        }
        Ok(())
    }

    async fn deletions(
        &self,
        name: &ProviderName,
        seen: &poll::Seen,
        opts: &RunOptions,
        ctx: &mut PassContext<'_>,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        // After a listing that returned every link it knew by key, only the links it
        // did not know by key can be missing from it: a steady run reads those few.
        let vanished = self
            .store
            .vanished_links(name, seen.every_keyed(), |remote_id, key| {
                seen.shows(remote_id, key)
            })
            .await?;
        // A link is told by the key it has now: had another process changed the key of
        // a link listed unchanged meanwhile, that link would look vanished. Then no
        // deletion is inferred from this listing; the next one tells.
        if !vanished.is_empty() {
            // The keys the links have now, a slice at a time: no list of them is held.
            let mut still = seen.no_places();
            self.store
                .each_listed_key(name, |key| seen.mark_still(&mut still, key))
                .await?;
            let changed = seen.shown_unchanged_since_changed(&still);
            if changed > 0 {
                tracing::warn!(provider = %name, vanished = vanished.len(), changed,
                    "links listed unchanged changed while the listing ran: no deletion inferred this run");
                report.error(
                    &name.0,
                    None,
                    None,
                    format!(
                        "{changed} link(s) the listing showed unchanged were changed by another process while it ran: no deletion is inferred from it this run ({} link(s) looked vanished)",
                        vanished.len()
                    ),
                );
                return Ok(());
            }
        }
        ctx.touched.extend(vanished.iter().map(|(c, _)| *c));
        if vanished.is_empty() {
            return Ok(());
        }
        if !self.config.sync.propagate_deletes {
            return self
                .store
                .record_deletions(ctx.run, name, &vanished, false)
                .await;
        }
        let linked = self.store.linked_count(name).await?.max(1) as f64;
        let share = vanished.len() as f64 / linked;
        if share > self.config.sync.max_delete_fraction && !opts.allow_deletes.contains(&name.0) {
            tracing::warn!(provider = %name, vanished = vanished.len(), share, "deletes held by the guard");
            report.held_deletes += vanished.len() as u64;
            report.provider(&name.0).held_deletes += vanished.len() as u64;
            report.error(
                &name.0,
                None,
                None,
                format!(
                    "{} of {} linked records vanished ({:.0}% > max_delete_fraction {:.0}%): deletes held; run with --allow-deletes {} to release them",
                    vanished.len(),
                    linked as u64,
                    share * 100.0,
                    self.config.sync.max_delete_fraction * 100.0,
                    name.0
                ),
            );
            ctx.held.extend(vanished.iter().map(|(c, _)| *c));
            return Ok(());
        }
        self.store
            .record_deletions(ctx.run, name, &vanished, true)
            .await
    }

    /// Merges what the providers showed of one customer and plans its pushes.
    fn merge_and_plan(
        &self,
        row: &CustomerRow,
        links: &[LinkRow],
        ctx: &PassContext<'_>,
        report: &mut Report,
    ) -> Option<CustomerUpdate> {
        if ctx.frozen.contains(&row.id) {
            return None;
        }
        let mut update = CustomerUpdate {
            id: Some(row.id),
            ..CustomerUpdate::default()
        };
        // The stored record until the merge changes it: borrowed, not copied.
        let mut canonical = std::borrow::Cow::Borrowed(&row.fields);
        // A provider's own defaults (Partial.ly's language "en") are not data: they are
        // left out on both sides of the merge, so they neither fill nor change anything.
        type Observed<'l> = (
            usize,
            Option<std::borrow::Cow<'l, Projection>>,
            std::borrow::Cow<'l, Projection>,
            chrono::DateTime<Utc>,
        );
        let observed: Vec<Observed<'_>> = links
            .iter()
            .filter(|l| !l.gone)
            .filter_map(|l| {
                let current = l.observed.as_ref()?;
                let c = self
                    .providers
                    .iter()
                    .find(|c| c.provider.name() == &l.provider)?;
                let fields = c.provider.fields();
                let base = l.snapshot.as_ref().map(|b| fields.without_defaults(b));
                Some((
                    c.rank,
                    base,
                    fields.without_defaults(current),
                    l.observed_at.unwrap_or_else(Utc::now),
                ))
            })
            .collect();
        let sides: Vec<Side<'_>> = observed
            .iter()
            .map(|(rank, base, current, time)| Side {
                rank: *rank,
                base: base.as_deref(),
                current,
                time: *time,
            })
            .collect();
        if !sides.is_empty() && !row.tombstoned {
            let merged = merge(
                &canonical,
                row.updated_at,
                &sides,
                self.config.sync.conflict_policy,
            );
            let mut next = merged.canonical;
            // The email is kept in the form last received (4b: NFC or NFD, a Unicode
            // or punycode domain, its case), and never becomes invalid or empty.
            if next.email().is_none() {
                let email = row.email.as_deref().and_then(|e| Email::parse(e).ok());
                next.set(Field::Email, email.map(|e| e.as_str().to_string()));
            }
            if next != *canonical || row.updated_at.is_none() {
                let action = if row.updated_at.is_none() {
                    "merge.initial"
                } else {
                    "merge"
                };
                // Serialized straight to text, keys in the order a JSON object of
                // them has always been stored (sorted), with no JSON tree built.
                #[derive(serde::Serialize)]
                struct ChangeDetail<'c> {
                    edit: bool,
                    field: String,
                    from: &'c Option<String>,
                    provider: String,
                    to: &'c Option<String>,
                }
                #[derive(serde::Serialize)]
                struct Changes<'c> {
                    changes: Vec<ChangeDetail<'c>>,
                }
                let changes = Changes {
                    changes: merged
                        .changes
                        .iter()
                        .map(|c| ChangeDetail {
                            edit: c.edit,
                            field: c.field.to_string(),
                            from: &c.from,
                            provider: self.name_of(c.rank),
                            to: &c.to,
                        })
                        .collect(),
                };
                update
                    .audit
                    .push(AuditEntry::new(action, Some(row.id), None, changes));
                update.fields = Some(next.clone());
                update.stored_email = row.email.clone();
            }
            for c in &merged.conflicts {
                report.conflicts += 1;
                let losers: Vec<_> = c
                    .losers
                    .iter()
                    .map(|(r, v)| json!({"provider": self.name_of(*r), "value": v}))
                    .collect();
                let detail = json!({"field": c.field.to_string(), "winner": self.name_of(c.winner_rank), "value": c.value,
                    "losers": losers, "policy": format!("{:?}", self.config.sync.conflict_policy).to_lowercase()});
                update
                    .audit
                    .push(AuditEntry::new("conflict", Some(row.id), None, detail));
            }
            canonical = std::borrow::Cow::Owned(next);
        }
        update.merged = links.iter().any(|l| l.observed.is_some());

        if canonical.is_empty() || ctx.held.contains(&row.id) {
            return (update.merged || update.fields.is_some()).then_some(update);
        }
        let targets: Vec<Target<'_>> = self
            .providers
            .iter()
            .map(|c| {
                let name = c.provider.name();
                let link = links
                    .iter()
                    .find(|l| &l.provider == name)
                    .map(|l| LinkState {
                        remote_id: &l.remote_id,
                        snapshot: l.observed.as_ref().or(l.snapshot.as_ref()),
                        gone: l.gone,
                    });
                Target {
                    provider: name,
                    caps: ctx.caps[name],
                    fields: c.provider.fields(),
                    link,
                    writable: !ctx.blocked.contains(name) && !row.parked.contains(name),
                    creates_and_deletes: !ctx.incomplete.contains(name)
                        && !skipped_there(ctx, name, row.email.as_deref()),
                }
            })
            .collect();
        for (provider, op) in plan(&canonical, row.tombstoned, &targets) {
            update.ops.push(new_op(provider, op));
        }
        let nothing =
            update.ops.is_empty() && !update.merged && update.fields.is_none() && !row.has_open_ops;
        (!nothing).then_some(update)
    }

    async fn fill_plan(&self, report: &mut Report) -> Result<(), StoreError> {
        self.store
            .open_ops(|op, before| {
                let r = report.provider(&op.provider.0);
                match op.op.as_str() {
                    "create" => r.created += 1,
                    "update" => r.updated += 1,
                    "delete" => r.deleted += 1,
                    _ => {}
                }
                report.plan.push(PlannedOp {
                    provider: op.provider.0,
                    op: op.op,
                    email: op.email,
                    remote_id: op.remote_id.map(|r| r.0),
                    fields: op.changed.iter().map(|f| f.to_string()).collect(),
                    changes: op
                        .changed
                        .iter()
                        .map(|f| FieldChange {
                            field: f.to_string(),
                            from: before.as_ref().and_then(|b| b.get(f)).map(str::to_string),
                            to: op.payload.get(f).map(str::to_string),
                        })
                        .collect(),
                });
            })
            .await?;
        Ok(())
    }

    fn name_of(&self, rank: usize) -> String {
        self.config
            .sync
            .priority
            .get(rank)
            .map(|n| n.0.clone())
            .unwrap_or_default()
    }
}

/// True when `provider`'s listing showed a record with this email that it skipped.
fn skipped_there(ctx: &PassContext<'_>, provider: &ProviderName, email: Option<&str>) -> bool {
    let Some(emails) = ctx.skipped_emails.get(provider) else {
        return false;
    };
    email
        .and_then(|e| Email::parse(e).ok())
        .is_some_and(|e| emails.contains(&e))
}

fn new_op(provider: &ProviderName, op: Op) -> NewOp {
    let name = op.name();
    match op {
        Op::Create { payload } => {
            let changed = payload.iter().map(|(f, _)| f.clone()).collect();
            NewOp {
                provider: provider.clone(),
                op: name,
                remote_id: None,
                payload,
                changed,
            }
        }
        Op::Update {
            remote_id,
            payload,
            changed,
        } => NewOp {
            provider: provider.clone(),
            op: name,
            remote_id: Some(remote_id),
            payload,
            changed,
        },
        Op::Delete { remote_id } => NewOp {
            provider: provider.clone(),
            op: name,
            remote_id: Some(remote_id),
            payload: Projection::new(),
            changed: Vec::new(),
        },
    }
}

fn traffic_counts(t: &Traffic) -> (u64, u64, u64) {
    (
        t.requests.load(Ordering::Relaxed),
        t.retries.load(Ordering::Relaxed),
        t.throttled.load(Ordering::Relaxed),
    )
}
