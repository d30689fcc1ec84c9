//! Poll: read one provider's customer list page by page, storing each page before
//! asking for the next, so that no provider is ever held in memory whole.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use super::progress::{Event, Progress};
use super::report::ReportError;
use crate::model::Email;
use crate::providers::{
    id_hash, record_email, Capabilities, Known, ListRequest, ListStyle, Listed, Provider,
};
use crate::store::links::Observed;
use crate::store::{parse_time, time_text, Rekeys, RunId, Store, StoreError};

/// How far back an incremental listing reaches before its cursor, for clock skew and
/// records written while the last listing ran.
pub const OVERLAP_MINUTES: i64 = 5;

/// What one provider's listing gave.
#[derive(Debug, Default)]
pub struct PollOutcome {
    pub fetched: u64,
    pub skipped: Vec<ReportError>,
    /// Every record was seen: absent links are deletions.
    pub complete: bool,
    /// A request of the listing failed: the provider is not written to this run.
    pub error: Option<String>,
    /// The listing ended but did not prove itself complete (DESIGN 4c): it infers no
    /// deletion and no create or delete is sent to the provider this run.
    pub incomplete: Option<String>,
    /// Valid emails of records this listing showed but skipped (a value too long, a
    /// record not read whole): the provider holds that person, so nobody is created
    /// there under that email this run.
    pub skipped_emails: HashSet<Email>,
    /// Hashes of the remote ids a complete listing returned: a link whose id is not
    /// here vanished. Kept in memory, not written on every link row.
    pub seen: Seen,
}

/// The remote ids a listing returned, as 8-byte hashes (in a set hashed by foldhash,
/// with a seed of its own: its keys are hashes already).
#[derive(Debug, Default)]
pub struct Seen(foldhash::HashSet<u64>, bool);

impl Seen {
    /// True when the listing returned every link it knew by key when it began: then
    /// only a link without a listed key can have vanished.
    pub fn every_keyed(&self) -> bool {
        self.1
    }

    /// Adds the id of this [`id_hash`]; false when it was there already.
    pub fn insert(&mut self, id_hash: u64) -> bool {
        self.0.insert(id_hash)
    }

    /// True when the listing returned `id` (or, once in 2^64, another id with its
    /// hash: then a deletion is missed, never invented).
    pub fn contains(&self, id: &str) -> bool {
        self.0.contains(&id_hash(id))
    }
}

/// What a listing has shown so far, to tell a complete listing from one that fell
/// short or never ends (DESIGN 4c "Listings that prove themselves").
#[derive(Default)]
struct Proof {
    /// The remote ids seen in this listing.
    seen: Seen,
    /// The whole listing's size, as the provider last stated it.
    stated_total: Option<u64>,
    /// The first reason the listing is not complete.
    incomplete: Option<String>,
}

impl Proof {
    fn fail(&mut self, reason: impl Into<String>) {
        self.incomplete.get_or_insert_with(|| reason.into());
    }

    /// Counts a page's ids; false when the page held records and every one of them
    /// was seen before in this listing (a cursor or offset that goes round).
    fn page(&mut self, ids: impl Iterator<Item = u64>) -> bool {
        let (mut count, mut fresh) = (0, 0);
        for id in ids {
            count += 1;
            fresh += usize::from(self.seen.insert(id));
        }
        count == 0 || fresh > 0
    }

    /// The reason a listing that ended here is incomplete, if it is.
    fn verdict(&mut self, full: bool) -> Option<String> {
        if let (true, Some(total)) = (full, self.stated_total) {
            let seen = self.seen.0.len() as u64;
            if seen < total {
                self.fail(format!(
                    "the listing ended after {seen} of the {total} records it says it holds"
                ));
            }
        }
        self.incomplete.clone()
    }
}

/// Lists `provider` into the store. A failing page ends the listing as incomplete; the
/// pages stored before it stay stored. The cursor of an incremental listing moves only
/// once the whole listing is stored.
pub async fn poll(
    store: &Store,
    provider: &dyn Provider,
    run: RunId,
    full_every: ChronoDuration,
    progress: Option<&Progress>,
) -> Result<PollOutcome, StoreError> {
    let name = provider.name().clone();
    let caps: Capabilities = provider.capabilities();
    let mut out = PollOutcome::default();
    if caps.list == ListStyle::None {
        return Ok(out);
    }
    let cursor = if caps.incremental {
        store.cursor(&name).await?.as_deref().and_then(parse_time)
    } else {
        None
    };
    // An incremental listing cannot see deletions: now and then the whole list is read.
    let full_key = crate::model::ProviderName(format!("{}#full", name.0));
    let started = Utc::now();
    let last_full = store
        .cursor(&full_key)
        .await?
        .as_deref()
        .and_then(parse_time);
    let full_due = last_full.is_none_or(|t| started - t >= full_every);
    let since = cursor
        .filter(|_| !full_due)
        .map(|c| c - ChronoDuration::minutes(OVERLAP_MINUTES));
    // A listing mostly sends what it sent last time (an incremental one too, in its
    // overlap): those records are only counted (see `Known`).
    let keys = store.listed_keys(&name).await?;
    let mut req = ListRequest {
        token: None,
        since,
        known: Some(Arc::new(Known::new(&name, provider.fields(), keys))),
    };
    let mut high_water: Option<DateTime<Utc>> = cursor;
    let mut proof = Proof::default();
    // Held across pages, written when many are held and when the listing ends however
    // it ends (they stand whether it was complete or not).
    let mut rekeys = Rekeys::default();
    loop {
        let page = match provider.list(&req).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(provider = %name, error = %e, "listing failed");
                store.write_rekeys(&name, &mut rekeys).await?;
                if let Some(p) = progress {
                    p(&Event::ListingDone {
                        provider: name.0.clone(),
                        fetched: out.fetched,
                        ok: false,
                    });
                }
                out.error = Some(e.to_string());
                return Ok(out);
            }
        };
        let now = Utc::now();
        // Each record's id hashed once, for the proof and for what is still there.
        let ids: Vec<Option<u64>> = page.items.iter().map(Listed::id_hash).collect();
        let moved_on = proof.page(ids.iter().flatten().copied());
        if let Some(total) = page.total {
            proof.stated_total = Some(total);
        }
        let mut observed = Vec::with_capacity(page.items.len());
        for (item, id) in page.items.into_iter().zip(ids) {
            out.fetched += 1;
            // What counts as still there: every record stored or listed as before, and
            // those skipped for their data (not one without any email: that is
            // Partial.ly's erasure, a deletion).
            let present = match item {
                Listed::Unchanged(_) => true,
                Listed::Record(r) => match record_email(&r.projection) {
                    Ok(email) => {
                        if let Some(t) = r.updated_at {
                            high_water = Some(high_water.map_or(t, |h| h.max(t)));
                        }
                        let time = if caps.updated_at {
                            r.updated_at.unwrap_or(now)
                        } else {
                            now
                        };
                        observed.push(Observed {
                            record: r,
                            email,
                            time,
                        });
                        true
                    }
                    Err(reason) => {
                        // A record with an unusable email is still there: it is not a
                        // deletion. One with no email at all is (Partial.ly's erasure).
                        let raw = r
                            .projection
                            .get(&crate::model::Field::Email)
                            .map(str::to_string);
                        let present = raw.is_some();
                        out.skipped
                            .push(skip(&name.0, raw, Some(r.id.0.clone()), reason));
                        present
                    }
                },
                Listed::Skipped {
                    remote_id,
                    email,
                    reason,
                    unreadable,
                } => {
                    if unreadable {
                        proof.fail(format!("a record could not be read ({reason})"));
                    }
                    if let Some(e) = email.as_deref().and_then(|e| Email::parse(e).ok()) {
                        out.skipped_emails.insert(e);
                    }
                    out.skipped
                        .push(skip(&name.0, email, remote_id.map(|r| r.0), reason));
                    true
                }
            };
            if let (true, Some(id)) = (present, id) {
                out.seen.insert(id);
            }
        }
        // A page of records listed as before has nothing to store.
        let duplicates = match observed.is_empty() {
            true => Vec::new(),
            false => {
                let duplicates = store
                    .ingest_listing_page(&name, run, &observed, &mut rekeys)
                    .await?;
                if rekeys.len() >= Rekeys::FLUSH_AT {
                    store.write_rekeys(&name, &mut rekeys).await?;
                }
                duplicates
            }
        };
        for d in duplicates {
            let reason = "duplicate email: another record of this provider has it and is linked";
            out.skipped.push(skip(
                &name.0,
                Some(d.email.to_string()),
                Some(d.remote_id.0),
                reason.to_string(),
            ));
        }
        if let Some(p) = progress {
            p(&Event::Listed {
                provider: name.0.clone(),
                fetched: out.fetched,
            });
        }
        if let Some(reason) = page.incomplete {
            proof.fail(reason);
            break;
        }
        if !moved_on {
            proof.fail(
                "a page held only records already listed (a cursor or offset that never ends)",
            );
            break;
        }
        match page.next {
            // A provider that hands back the cursor it was given would be listed for
            // ever: the listing stops there, incomplete.
            Some(next) if req.token.as_ref() == Some(&next) => {
                proof.fail("the listing cursor did not advance");
                break;
            }
            Some(next) => req.token = Some(next),
            None => break,
        }
    }
    store.write_rekeys(&name, &mut rekeys).await?;
    out.incomplete = proof.verdict(since.is_none());
    if let Some(reason) = &out.incomplete {
        tracing::warn!(provider = %name, reason = %reason, fetched = out.fetched, "listing incomplete");
        if let Some(p) = progress {
            p(&Event::ListingDone {
                provider: name.0.clone(),
                fetched: out.fetched,
                ok: false,
            });
        }
        return Ok(out);
    }
    if let Some(p) = progress {
        p(&Event::ListingDone {
            provider: name.0.clone(),
            fetched: out.fetched,
            ok: true,
        });
    }
    out.complete = since.is_none();
    if let (true, Some(known)) = (out.complete, &req.known) {
        out.seen.1 = known.id_hashes().all(|id| out.seen.0.contains(&id));
    }
    if caps.incremental {
        if let Some(h) = high_water {
            store.set_cursor(&name, &time_text(h)).await?;
        }
        if out.complete {
            store.set_cursor(&full_key, &time_text(started)).await?;
        }
    }
    tracing::info!(provider = %name, fetched = out.fetched, skipped = out.skipped.len(), "listed");
    Ok(out)
}

fn skip(
    provider: &str,
    email: Option<String>,
    remote_id: Option<String>,
    reason: String,
) -> ReportError {
    ReportError {
        provider: provider.to_string(),
        email,
        remote_id,
        error: reason,
    }
}
