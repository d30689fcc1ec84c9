//! Push: send one provider's pending operations, a few at a time under its rate
//! limit, and record each outcome durably as soon as the provider answered.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{Duration as ChronoDuration, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::progress::{Event, Progress};
use super::report::ReportError;
use crate::model::{CustomerId, Email, Field};
use crate::providers::{Provider, ProviderError, RemoteRecord};
use crate::store::lease::Lease;
use crate::store::outbox::{OutboxOp, Outcome};
use crate::store::{RunId, Store, StoreError};

#[derive(Debug, Default)]
pub struct PushOutcome {
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub failed: u64,
    /// Writes whose answer held data custsync did not send (kept for the merge).
    pub adopted: u64,
    pub errors: Vec<ReportError>,
}

enum Done {
    Created {
        adopted: bool,
    },
    Updated {
        adopted: bool,
    },
    Deleted,
    Failed(ReportError),
    /// Not sent: the lease was lost after the claim. The row stays in flight, for the
    /// new holder to treat as doubtful.
    NotSent,
}

/// What one provider's push may do.
pub struct Scope<'a> {
    pub run: RunId,
    /// Every claim of work is fenced by this lease: once it is lost, nothing more leaves.
    pub lease: &'a Lease,
    /// The provider's listing did not prove itself complete: only updates go (DESIGN 4c).
    pub updates_only: bool,
    /// Customers nothing is pushed for this run (a record took another one's email):
    /// their operations stay in the outbox as they are.
    pub frozen: &'a HashSet<CustomerId>,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// Pushes every pending operation of `provider`, `concurrency` requests at a time, with
/// no pause between chunks. Operations are claimed (marked in flight) a chunk at a time,
/// in one statement that also checks the lease, before any of the chunk's requests
/// leave; the next chunk is claimed when a request slot frees and nothing claimed is
/// left (a chunk is 8 times `concurrency`, 8 to 64). Each outcome goes to `writer`, the
/// run's one writer. Stops taking new operations once `stop` is cancelled, the writer
/// failed or the lease is lost; those in flight finish and are recorded, and those
/// claimed but not sent are given back.
pub async fn push(
    store: &Store,
    provider: Arc<dyn Provider>,
    scope: Scope<'_>,
    writer: Writer<'_>,
    stop: &CancellationToken,
    progress: Option<&Progress>,
) -> Result<PushOutcome, StoreError> {
    let mut out = PushOutcome::default();
    let total = match progress {
        Some(_) => store.pending_count(provider.name()).await?,
        None => 0,
    };
    let mut done = 0;
    let concurrency = scope.concurrency.max(1);
    let (provider, scope) = (provider.as_ref(), &scope);
    let found = &look_up_doubtful(store, provider, scope).await?;
    let mut source = Source {
        store,
        provider,
        scope,
        after: 0,
        listed: std::collections::VecDeque::new(),
        claimed: std::collections::VecDeque::new(),
        chunk: (concurrency * 8).clamp(8, 64),
        exhausted: false,
    };
    let send = |op: OutboxOp| {
        let outcomes = &writer.outcomes;
        async move {
            if !scope.lease.ensure().await {
                return Done::NotSent;
            }
            let (done, outcome) = push_one(provider, scope, op, found).await;
            if let Some(o) = outcome {
                // The writer is gone only after a store error, said by the run.
                let _ = outcomes.send(o).await;
            }
            done
        }
    };
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut error = None;
    loop {
        while in_flight.len() < concurrency
            && !stop.is_cancelled()
            && !writer.failed.is_cancelled()
            && error.is_none()
        {
            match source.next().await {
                Ok(Some(op)) => in_flight.push(send(op)),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let Some(result) = in_flight.next().await else {
            break;
        };
        tally(&mut out, &mut done, result);
        if let Some(p) = progress {
            if done % 32 == 0 || in_flight.is_empty() {
                p(&Event::Pushed {
                    provider: provider.name().0.clone(),
                    done,
                    total: total.max(done),
                });
            }
        }
    }
    // Claimed but never sent (told to stop): pending again, not doubtful.
    let unsent: Vec<i64> = source.claimed.iter().map(|op| op.id).collect();
    if !unsent.is_empty() && !scope.lease.lost().is_cancelled() {
        let released = store.release_ops(&unsent, scope.lease.fence()).await;
        // After a store error that error is the one said; the rows stay in flight.
        if error.is_none() {
            released?;
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    tracing::info!(provider = %provider.name(), created = out.created, updated = out.updated,
        deleted = out.deleted, failed = out.failed, "pushed");
    Ok(out)
}

/// Records already found for emails of doubtful creates, by email.
type Found = std::collections::HashMap<Email, Vec<RemoteRecord>>;

/// Doubtful creates (an earlier attempt may have reached the provider: a crash, a
/// timeout) are looked up together before any of them is sent: one walk of Malomo's
/// list for all of them, not one each. One alone is looked up when its turn comes, as
/// is each of them when this lookup fails.
async fn look_up_doubtful(
    store: &Store,
    p: &dyn Provider,
    scope: &Scope<'_>,
) -> Result<Found, StoreError> {
    if scope.updates_only || !p.capabilities().lookup {
        return Ok(Found::new());
    }
    let mut emails: Vec<Email> = store
        .doubtful_creates(p.name())
        .await?
        .into_iter()
        .filter(|(customer, _)| !scope.frozen.contains(customer))
        .filter_map(|(_, payload)| payload.email())
        .collect();
    emails.sort();
    emails.dedup();
    if emails.len() < 2 {
        return Ok(Found::new());
    }
    match p.lookup_all(&emails).await {
        Ok(found) => Ok(found),
        Err(e) => {
            tracing::warn!(provider = %p.name(), error = %e, doubtful = emails.len(),
                "looking doubtful creates up together failed: each is looked up alone");
            Ok(Found::new())
        }
    }
}

/// Where a push's outcomes go: the run's one writer, and the token it cancels when it
/// fails (the push then stops taking work).
pub struct Writer<'a> {
    pub outcomes: tokio::sync::mpsc::Sender<Outcome>,
    pub failed: &'a CancellationToken,
}

/// A provider's pending operations, read a page at a time and claimed a chunk at a
/// time, handed out one by one.
struct Source<'a> {
    store: &'a Store,
    provider: &'a dyn Provider,
    scope: &'a Scope<'a>,
    /// The last id read.
    after: i64,
    /// Read, not claimed yet.
    listed: std::collections::VecDeque<OutboxOp>,
    /// Claimed (in flight in the store), not sent yet.
    claimed: std::collections::VecDeque<OutboxOp>,
    chunk: usize,
    /// Nothing more to hand out: every page read, or the lease lost.
    exhausted: bool,
}

impl Source<'_> {
    async fn next(&mut self) -> Result<Option<OutboxOp>, StoreError> {
        while self.claimed.is_empty() && !self.exhausted {
            while self.listed.is_empty() && !self.exhausted {
                let ops = self
                    .store
                    .pending_ops(
                        self.provider.name(),
                        self.after,
                        256,
                        self.scope.updates_only,
                    )
                    .await?;
                match ops.last() {
                    Some(last) => self.after = last.id,
                    None => self.exhausted = true,
                }
                self.listed.extend(
                    ops.into_iter()
                        .filter(|op| !self.scope.frozen.contains(&op.customer)),
                );
            }
            let n = self.chunk.min(self.listed.len());
            let chunk: Vec<OutboxOp> = self.listed.drain(..n).collect();
            if chunk.is_empty() {
                break;
            }
            match claim(self.store, self.scope.lease, chunk).await? {
                Some(claimed) => self.claimed.extend(claimed),
                None => {
                    tracing::warn!(provider = %self.provider.name(), "lease lost: no further write is sent");
                    self.exhausted = true;
                }
            }
        }
        Ok(self.claimed.pop_front())
    }
}

/// Claims a chunk under the lease; `None` when the lease is lost. A claim refused only
/// because the lease ran out by the clock (this process was paused, say) is tried
/// once more after renewing it, which succeeds when nobody took it over meanwhile.
async fn claim(
    store: &Store,
    lease: &Lease,
    chunk: Vec<OutboxOp>,
) -> Result<Option<Vec<OutboxOp>>, StoreError> {
    let ids: Vec<i64> = chunk.iter().map(|op| op.id).collect();
    let mut claimed = store.claim_ops(&ids, lease.fence()).await?;
    if claimed.is_empty() {
        if lease.lost().is_cancelled() || !lease.renew().await {
            return Ok(None);
        }
        claimed = store.claim_ops(&ids, lease.fence()).await?;
        if claimed.is_empty() {
            return Ok(None);
        }
    }
    Ok(Some(
        chunk
            .into_iter()
            .filter(|op| claimed.contains(&op.id))
            .collect(),
    ))
}

/// The run's writer of outcomes, every provider's: takes every outcome that has come
/// in, waiting a little for a batch to fill (`sync::batches`), records them in one
/// transaction, and again, until every push is over. A store error stops it (and the
/// pushes, through `failed`); the operations not recorded stay in flight, doubtful
/// for the next run.
pub async fn record_outcomes(
    store: &Store,
    run: crate::store::RunId,
    mut batches: super::batches::Batches<Outcome>,
    failed: &CancellationToken,
) -> Result<(), StoreError> {
    // What waits for its batch is still in flight in the store, so a kill meanwhile
    // leaves it doubtful, looked up next run, never lost.
    let mut batch = Vec::new();
    while batches.next(&mut batch).await {
        crate::failpoint::reached("before-outcome-commit");
        if let Err(e) = store.record_outcomes(run, &batch).await {
            failed.cancel();
            return Err(e);
        }
    }
    Ok(())
}

fn tally(out: &mut PushOutcome, done: &mut u64, r: Done) {
    *done += u64::from(!matches!(r, Done::NotSent));
    match r {
        Done::Created { adopted } => {
            out.created += 1;
            out.adopted += u64::from(adopted);
        }
        Done::Updated { adopted } => {
            out.updated += 1;
            out.adopted += u64::from(adopted);
        }
        Done::Deleted => out.deleted += 1,
        Done::Failed(e) => {
            out.failed += 1;
            out.errors.push(e);
        }
        Done::NotSent => {}
    }
}

/// Sends one operation; answers what it did and the outcome to record.
async fn push_one(
    p: &dyn Provider,
    scope: &Scope<'_>,
    op: OutboxOp,
    found: &Found,
) -> (Done, Option<Outcome>) {
    // A create whose request may have reached the provider stays doubtful even when
    // what came after it (the lookup) failed for another reason.
    let mut doubtful = false;
    let result = match op.op.as_str() {
        "create" => create(p, &op, &mut doubtful, found)
            .await
            .map(|(record, action)| (Some(record), action)),
        "update" => match &op.remote_id {
            Some(id) => p
                .update(id, &op.payload, &op.changed)
                .await
                .map(|r| (Some(r), "update")),
            None => Err(ProviderError::unsupported(
                p.name(),
                "update without a remote id",
            )),
        },
        "delete" => match &op.remote_id {
            Some(id) => p.delete(id).await.map(|_| (None, "delete")),
            None => Err(ProviderError::unsupported(
                p.name(),
                "delete without a remote id",
            )),
        },
        other => Err(ProviderError::unsupported(
            p.name(),
            format!("unknown operation {other}"),
        )),
    };
    match result {
        Ok((Some(mut record), action)) => {
            // A field the answer did not carry holds what was written (4b: the
            // snapshot is what was written where the answer does not say).
            if let std::borrow::Cow::Owned(p) = record.completed(Some(&op.payload)) {
                record.projection = p;
                record.absent.clear();
            }
            // Fields the answer holds that the write did not send (and that are not
            // the provider's own defaults) were there before: they are the record's
            // data, to merge like an edit, not to erase on the next plan.
            let extras: Vec<Field> = record
                .projection
                .iter()
                .filter(|(f, v)| op.payload.get(f).is_none() && !p.fields().is_default(f, Some(v)))
                .map(|(f, _)| f.clone())
                .collect();
            let adopted = !extras.is_empty();
            // The key of the answer's text stands for the snapshot when a listing of
            // that text would find the snapshot: the text decoded, with what it did not
            // carry taken from the snapshot (which has it from the payload), and no
            // field the write did not send; and an email the listing takes in.
            if adopted || crate::providers::record_email(&record.projection).is_err() {
                record.listed_key = None;
            }
            let done = if op.op == "create" {
                Done::Created { adopted }
            } else {
                Done::Updated { adopted }
            };
            let outcome = Outcome::Written {
                op,
                record,
                action,
                extras,
            };
            (done, Some(outcome))
        }
        Ok((None, _)) => (Done::Deleted, Some(Outcome::Deleted { op })),
        // The record vanished between listing and update: it was deleted there.
        Err(e) if op.op == "update" && e.status() == Some(404) => {
            (Done::Deleted, Some(Outcome::Deleted { op }))
        }
        // The lease went while the write waited: it was not sent, and this process
        // records nothing more (the row stays in flight, doubtful for the new holder).
        Err(_) if scope.lease.lost().is_cancelled() => (Done::NotSent, None),
        Err(e) => {
            // A refused delete (Partial.ly keeps customers with an open plan) waits for
            // a person; other failures are tried again next cycle.
            let parked = op.op == "delete"
                && !e.retryable()
                && e.status().is_some_and(|s| (400..500).contains(&s));
            let backoff =
                ChronoDuration::seconds(30i64.saturating_mul(1 << op.attempts.clamp(0, 10)));
            tracing::warn!(provider = %p.name(), op = %op.op, error = %e, parked, "push failed");
            let done = Done::Failed(ReportError {
                provider: p.name().0.clone(),
                email: op.email.clone(),
                remote_id: op.remote_id.as_ref().map(|r| r.0.clone()),
                error: e.to_string(),
            });
            let outcome = Outcome::Failed {
                error: e.to_string(),
                maybe_applied: doubtful || e.maybe_applied(),
                parked,
                next_attempt: (!parked).then(|| Utc::now() + backoff),
                op,
            };
            (done, Some(outcome))
        }
    }
}

/// Creates a record, never twice: when an earlier attempt may have reached the
/// provider, or this one failed in a way that may have, the email is looked up first
/// and an existing record is linked (and brought up to date) instead.
/// `doubtful` is set once a create of this operation may have reached the provider.
async fn create(
    p: &dyn Provider,
    op: &OutboxOp,
    doubtful: &mut bool,
    found: &Found,
) -> Result<(RemoteRecord, &'static str), ProviderError> {
    let email = op.payload.email();
    let can_lookup = p.capabilities().lookup && email.is_some();
    *doubtful = op.maybe_applied;
    if op.maybe_applied && can_lookup {
        // Looked up with the push's other doubtful creates, else now.
        let existing = match email.as_ref().and_then(|e| found.get(e)) {
            Some(records) => records.iter().max_by_key(|r| r.updated_at).cloned(),
            None => find(p, email.as_ref()).await?,
        };
        if let Some(existing) = existing {
            return bring_up_to_date(p, op, existing).await.map(|r| (r, "link"));
        }
    }
    match p.create(&op.payload).await {
        // A connector may answer a create with a record that was already there (Ecwid's
        // 409): it is brought up to date like any record found by email.
        Ok(r) => bring_up_to_date(p, op, r).await.map(|r| (r, "create")),
        Err(e) if e.maybe_applied() && can_lookup => {
            *doubtful = true;
            match find(p, email.as_ref()).await? {
                Some(found) => bring_up_to_date(p, op, found).await.map(|r| (r, "link")),
                None => p.create(&op.payload).await.map(|r| (r, "create")),
            }
        }
        Err(e) => {
            *doubtful |= e.maybe_applied();
            Err(e)
        }
    }
}

async fn find(
    p: &dyn Provider,
    email: Option<&Email>,
) -> Result<Option<RemoteRecord>, ProviderError> {
    let Some(email) = email else { return Ok(None) };
    // The most recently updated record, as with duplicates found by a listing.
    Ok(p.lookup(email)
        .await?
        .into_iter()
        .max_by_key(|r| r.updated_at))
}

async fn bring_up_to_date(
    p: &dyn Provider,
    op: &OutboxOp,
    found: RemoteRecord,
) -> Result<RemoteRecord, ProviderError> {
    // Only what the record lacks or holds differently: data it has that custsync did
    // not send is the record's own, merged afterwards (see `extras`), never erased.
    let changed: Vec<Field> = p
        .fields()
        .stale(&op.payload, &found.projection)
        .into_iter()
        .filter(|f| op.payload.get(f).is_some())
        .collect();
    if changed.is_empty() || !p.capabilities().update {
        return Ok(found);
    }
    p.update(&found.id, &op.payload, &changed).await
}
