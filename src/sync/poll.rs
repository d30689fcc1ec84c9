//! Poll: read one provider's customer list page by page, storing the pages as it
//! goes (a few together, in one transaction), so that no provider is ever held in
//! memory whole.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use super::progress::{Event, Progress};
use super::report::ReportError;
use crate::model::Email;
use crate::providers::{
    id_hash, record_email, Capabilities, Known, ListRequest, ListStyle, Listed, Provider,
    StoredKeys,
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
    /// What the listing returned: a link a complete listing did not show present
    /// vanished. Kept in memory, not written on every link row.
    pub seen: Seen,
}

/// What a listing saw of the provider's records: one bit for each link it knew by key
/// when it began ([`Listed::Unchanged`], by the link's place in its [`StoredKeys`]),
/// and the [`id_hash`]es of the records it saw otherwise (decoded, skipped, erased). A
/// no-op listing of a million links holds 256 KiB of bits (two a link) beside the
/// keys, where two sets of hashes took 38 MiB.
///
/// The keys hold no id: which known link a record seen otherwise is, is told by the
/// key the store held for its link when the listing began. A record the listing
/// stored reports it from the page that stored it ([`Seen::stored_key`]), before its
/// key changes (the listing changes a link's key only for a record it saw otherwise;
/// another process that changes one meanwhile is caught before any deletion, see
/// [`Seen::shown_unchanged_since_changed`]); a record skipped is looked up at the end, and
/// a link a page deleted is reported with its key ([`Seen::aside`]).
#[derive(Debug, Default)]
pub struct Seen {
    known: Arc<Known>,
    /// Bit `place`: the link at that place was listed unchanged.
    unchanged: Vec<u64>,
    /// Bit `place`: the record of the link at that place was stored by the listing
    /// (decoded: seen otherwise, present).
    stored: Vec<u64>,
    /// Links known by key whose record the listing may have seen otherwise without
    /// storing it (skipped) or whose link a page deleted: (id hash, place).
    aside: Vec<(u64, u32)>,
    /// The ids listed otherwise, by hash.
    other: foldhash::HashSet<u64>,
    /// Of `other`, those listed only as absent (a record without any email:
    /// Partial.ly's erasure): seen, not present.
    absent: foldhash::HashSet<u64>,
    every_keyed: bool,
}

impl Seen {
    fn new(known: Arc<Known>) -> Self {
        let words = known.links().len().div_ceil(64);
        Seen {
            unchanged: vec![0; words],
            stored: vec![0; words],
            known,
            ..Seen::default()
        }
    }

    fn links(&self) -> &StoredKeys {
        self.known.links()
    }

    /// A record listed unchanged, by its link's place: whether it is new to this
    /// listing. `None` for a place the listing does not know. One stored earlier in
    /// the listing, on a page not stored yet, counts as new here (what a page moves on
    /// by, at most once for each record); [`Seen::count`] counts it once.
    fn unchanged(&mut self, place: u32) -> Option<bool> {
        if place as usize >= self.links().len() {
            return None;
        }
        let before = is_marked(&self.unchanged, place);
        mark(&mut self.unchanged, place);
        Some(!before && !is_marked(&self.stored, place))
    }

    /// A record listed otherwise, by the hash of its id, present or not: whether it is
    /// new to this listing. One listed unchanged before and changed now counts as new
    /// here (what a page moves on by); [`Seen::count`] counts it once.
    fn other(&mut self, id: u64, present: bool) -> bool {
        let new = self.other.insert(id);
        if present {
            self.absent.remove(&id);
        } else if new {
            self.absent.insert(id);
        }
        new
    }

    /// The key a record the listing stored had in the store as its page began.
    fn stored_key(&mut self, key: i64) {
        if let Some(place) = self.known.links().find(key) {
            mark(&mut self.stored, place);
        }
    }

    /// The key of a link whose record may have been seen otherwise than stored, with
    /// the hash of its id.
    fn aside(&mut self, id: u64, key: i64) {
        if let Some(place) = self.links().find(key) {
            self.aside.push((id, place));
        }
    }

    /// Bit `place`: the record of the link at that place was seen otherwise, present
    /// (or, with `absent_too`, in any way).
    fn otherwise(&self, absent_too: bool) -> Vec<u64> {
        let mut words = self.stored.clone();
        for &(id, place) in &self.aside {
            if self.other.contains(&id) && (absent_too || !self.absent.contains(&id)) {
                mark(&mut words, place);
            }
        }
        words
    }

    /// How many distinct records the listing showed: one listed both unchanged and
    /// otherwise counts once.
    fn count(&self) -> u64 {
        let unchanged = ones(self.unchanged.iter().copied());
        let both = match self.other.is_empty() {
            true => 0,
            false => ones(
                self.unchanged
                    .iter()
                    .zip(self.otherwise(true))
                    .map(|(u, o)| u & o),
            ),
        };
        unchanged + self.other.len() as u64 - both
    }

    fn present_otherwise(&self, id: u64) -> bool {
        self.other.contains(&id) && !self.absent.contains(&id)
    }

    /// At the end of a complete listing: whether it showed every link it knew by key
    /// when it began, present.
    fn settle(&mut self) {
        let n = self.links().len();
        self.every_keyed = self
            .unchanged
            .iter()
            .zip(self.otherwise(false))
            .enumerate()
            .all(|(at, (u, o))| {
                // The last word's bits past the last place are never set.
                let places = (n - at * 64).min(64);
                let all = if places == 64 {
                    u64::MAX
                } else {
                    (1 << places) - 1
                };
                u | o == all
            });
    }

    /// No place marked: what [`Seen::mark_still`] marks.
    pub fn no_places(&self) -> Vec<u64> {
        vec![0; self.unchanged.len()]
    }

    /// Marks in `still` the place of `key`, a key some live link has now.
    pub fn mark_still(&self, still: &mut [u64], key: i64) {
        if let Some(place) = self.links().find(key) {
            mark(still, place);
        }
    }

    /// How many links the listing showed only unchanged (not otherwise too) no longer
    /// have the key they were shown by, given the places of the keys live links have
    /// now (`still`, marked by [`Seen::mark_still`]). The listing itself changed none
    /// of those links' keys; another process may have (a worker that lost its lease,
    /// recording what it had sent): then a link whose key changed cannot be told from
    /// one that vanished (see [`Seen::shows`]).
    pub fn shown_unchanged_since_changed(&self, still: &[u64]) -> u64 {
        ones(
            self.unchanged
                .iter()
                .zip(self.otherwise(true))
                .zip(still)
                .map(|((u, o), s)| u & !o & !s),
        )
    }

    /// True when the listing returned every link it knew by key when it began: then
    /// only a link without a listed key can have vanished.
    pub fn every_keyed(&self) -> bool {
        self.every_keyed
    }

    /// True when the listing showed the link with `remote_id`, last listed as the text
    /// whose key is `key`, present (or, once in 2^64, another link with its key or its
    /// id's hash: then a deletion is missed, never invented).
    ///
    /// A link's key is the one it had when the listing began unless the listing stored
    /// its record (seen otherwise, by its id) or another process changed it meanwhile:
    /// before it takes a link this says was not shown for vanished, the engine checks
    /// that every key shown only unchanged is still on a link
    /// ([`Seen::shown_unchanged_since_changed`]).
    pub fn shows(&self, remote_id: &str, key: Option<i64>) -> bool {
        let unchanged = key
            .and_then(|k| self.links().find(k))
            .is_some_and(|place| is_marked(&self.unchanged, place));
        unchanged || self.present_otherwise(id_hash(remote_id))
    }
}

/// The word of [`Seen`]'s bits that holds `place`, and its bit there.
fn bit_of(place: u32) -> (usize, u64) {
    (place as usize / 64, 1 << (place % 64))
}

/// Sets the bit of `place` in `words`.
fn mark(words: &mut [u64], place: u32) {
    let (word, bit) = bit_of(place);
    words[word] |= bit;
}

/// Whether the bit of `place` is set in `words`.
fn is_marked(words: &[u64], place: u32) -> bool {
    let (word, bit) = bit_of(place);
    words[word] & bit != 0
}

/// How many bits the words have set.
fn ones(words: impl Iterator<Item = u64>) -> u64 {
    words.map(|w| u64::from(w.count_ones())).sum()
}

/// What a listing has shown so far, to tell a complete listing from one that fell
/// short or never ends (DESIGN 4c "Listings that prove themselves").
#[derive(Default)]
struct Proof {
    /// The whole listing's size, as the provider last stated it.
    stated_total: Option<u64>,
    /// The first reason the listing is not complete.
    incomplete: Option<String>,
}

impl Proof {
    fn fail(&mut self, reason: impl Into<String>) {
        self.incomplete.get_or_insert_with(|| reason.into());
    }

    /// The reason a listing that ended here, having shown `seen`, is incomplete, if
    /// it is.
    fn verdict(&mut self, full: bool, seen: &Seen) -> Option<String> {
        if let (true, Some(total)) = (full, self.stated_total) {
            let seen = seen.count();
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
    let known = Arc::new(Known::new(&name, provider.fields(), keys));
    out.seen = Seen::new(known.clone());
    let mut req = ListRequest {
        token: None,
        since,
        known: Some(known),
    };
    let mut high_water: Option<DateTime<Utc>> = cursor;
    let mut proof = Proof::default();
    // Held across pages, written when many are held and when the listing ends however
    // it ends (they stand whether it was complete or not).
    let mut rekeys = Rekeys::default();
    let mut held = Held::default();
    loop {
        let page = match provider.list(&req).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(provider = %name, error = %e, "listing failed");
                // What the listing read before stands: stored, with its keys.
                held.store(store, &name, run, &mut rekeys, &mut out).await?;
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
        if let Some(total) = page.total {
            proof.stated_total = Some(total);
        }
        // How many of the page's records have an id, and how many of those this
        // listing had not shown before: a page of none new goes round.
        let (mut with_id, mut new) = (0usize, 0usize);
        for item in page.items {
            out.fetched += 1;
            let id = item.remote_id().map(|id| id_hash(&id.0));
            // What counts as still there: every record stored or listed as before, and
            // those skipped for their data (not one without any email: that is
            // Partial.ly's erasure, a deletion).
            let present = match item {
                Listed::Unchanged(place) => {
                    with_id += 1;
                    match out.seen.unchanged(place) {
                        Some(fresh) => new += usize::from(fresh),
                        None => {
                            proof.fail("a record was listed as a link the listing does not know")
                        }
                    }
                    continue;
                }
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
                        // Held for storing (a record listed as before is not).
                        held.records.push(Observed {
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
            if let Some(id) = id {
                with_id += 1;
                new += usize::from(out.seen.other(id, present));
            }
        }
        let moved_on = with_id == 0 || new > 0;
        if held.records.len() >= Held::STORE_AT {
            held.store(store, &name, run, &mut rekeys, &mut out).await?;
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
    held.store(store, &name, run, &mut rekeys, &mut out).await?;
    store.write_rekeys(&name, &mut rekeys).await?;
    // Which of the links known by key the records skipped are: their keys have not
    // changed since the listing began (a record's key changes only when it is stored).
    if since.is_none() && !out.seen.links().is_empty() {
        let ids: Vec<&str> = out
            .skipped
            .iter()
            .filter_map(|e| e.remote_id.as_deref())
            .collect();
        if !ids.is_empty() {
            for (remote_id, key) in store.listed_keys_of(&name, &ids).await? {
                out.seen.aside(id_hash(&remote_id), key);
            }
        }
    }
    out.incomplete = proof.verdict(since.is_none(), &out.seen);
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
    if out.complete {
        out.seen.settle();
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

/// Records a listing read and has not stored yet. Pages are stored together, several
/// in one transaction, in the order they were listed: as one page of all their
/// records, which the store applies record by record (a page of Ecwid holds 100, and
/// each transaction's commit cost as much as storing the page). Whatever ends the
/// listing, what it holds is stored first; a kill loses only pages not stored yet,
/// which the next listing reads again (nothing moves the cursor before they are
/// stored).
#[derive(Default)]
struct Held {
    records: Vec<Observed>,
}

impl Held {
    /// Stored once this many records are held.
    const STORE_AT: usize = 1000;

    async fn store(
        &mut self,
        store: &Store,
        name: &crate::model::ProviderName,
        run: RunId,
        rekeys: &mut Rekeys,
        out: &mut PollOutcome,
    ) -> Result<(), StoreError> {
        if self.records.is_empty() {
            return Ok(());
        }
        let ingested = store
            .ingest_listing_page(name, run, &self.records, rekeys)
            .await?;
        self.records.clear();
        if rekeys.len() >= Rekeys::FLUSH_AT {
            store.write_rekeys(name, rekeys).await?;
        }
        for key in ingested.keys {
            out.seen.stored_key(key);
        }
        for (remote_id, key) in ingested.dropped {
            out.seen.aside(id_hash(&remote_id), key);
        }
        for d in ingested.duplicates {
            let reason = "duplicate email: another record of this provider has it and is linked";
            out.skipped.push(skip(
                &name.0,
                Some(d.email.to_string()),
                Some(d.remote_id.0),
                reason.to_string(),
            ));
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing that knew the links `a`, `b` and `c` by the keys 10, 20 and 30.
    fn seen_of_three() -> (Seen, [u32; 3]) {
        let links: StoredKeys = [10, 20, 30].into_iter().collect();
        let name = crate::model::ProviderName("p".into());
        let fields = crate::providers::malomo::mapping::FIELDS;
        let known = Arc::new(Known::new(&name, &fields, links));
        let place = |key| known.links().find(key).unwrap();
        let places = [place(10), place(20), place(30)];
        (Seen::new(known), places)
    }

    /// `id` stored by the listing, its link known by `key` when the listing began.
    fn stored(seen: &mut Seen, id: &str, key: i64) -> bool {
        let new = seen.other(id_hash(id), true);
        seen.stored_key(key);
        new
    }

    #[test]
    fn a_record_listed_unchanged_and_again_changed_counts_once() {
        let (mut seen, [a, b, _]) = seen_of_three();
        assert_eq!(seen.unchanged(a), Some(true));
        assert_eq!(seen.unchanged(a), Some(false), "the same text twice");
        assert!(
            stored(&mut seen, "a", 10),
            "changed since: a page moves on by it"
        );
        assert_eq!(seen.unchanged(b), Some(true));
        // Two records, not three: a listing that says it holds three fell short.
        assert_eq!(seen.count(), 2);
        let mut proof = Proof {
            stated_total: Some(3),
            incomplete: None,
        };
        assert!(proof.verdict(true, &seen).is_some());

        // Changed first, then listed as its old text: not new either.
        let (mut seen, [a, ..]) = seen_of_three();
        assert!(stored(&mut seen, "a", 10));
        assert_eq!(seen.unchanged(a), Some(false));
        assert_eq!(seen.count(), 1);
        assert_eq!(seen.unchanged(7), None, "no such place");

        // Changed on a page not stored yet, then listed as its old text: new to the
        // page, counted once all the same.
        let (mut seen, [a, ..]) = seen_of_three();
        assert!(seen.other(id_hash("a"), true));
        assert_eq!(seen.unchanged(a), Some(true));
        seen.stored_key(10);
        assert_eq!(seen.count(), 1);
    }

    #[test]
    fn a_record_skipped_or_a_link_deleted_counts_once_by_its_key() {
        // `a` listed unchanged, then with an email custsync cannot use (skipped, its
        // key looked up); `b` listed unchanged, then its link deleted by a page (a
        // duplicate replaced), then listed again under a new link.
        let (mut seen, [a, b, _]) = seen_of_three();
        seen.unchanged(a);
        seen.unchanged(b);
        seen.other(id_hash("a"), true);
        seen.aside(id_hash("a"), 10);
        seen.aside(id_hash("b"), 20);
        seen.other(id_hash("b"), true);
        assert_eq!(seen.count(), 2);
        // A key the listing did not know, and an id never seen, change nothing.
        seen.aside(id_hash("z"), 99);
        seen.aside(id_hash("c"), 30);
        assert_eq!(seen.count(), 2);
        seen.settle();
        assert!(!seen.every_keyed(), "c was not shown");
        // Shown without any email (an erasure): seen, not present.
        seen.other(id_hash("c"), false);
        assert_eq!(seen.count(), 3);
        seen.settle();
        assert!(!seen.every_keyed());
        assert!(!seen.shows("c", Some(30)));
    }

    #[test]
    fn every_keyed_only_when_each_known_link_was_shown_present() {
        let (mut seen, [a, b, c]) = seen_of_three();
        for place in [a, b, c] {
            seen.unchanged(place);
        }
        seen.other(id_hash("new"), true);
        seen.settle();
        assert!(seen.every_keyed());

        // One of them changed: shown present all the same.
        let (mut seen, [a, b, _]) = seen_of_three();
        seen.unchanged(a);
        seen.unchanged(b);
        stored(&mut seen, "c", 30);
        seen.settle();
        assert!(seen.every_keyed());

        // One erased (shown without any email), one missing.
        for erased in [true, false] {
            let (mut seen, [a, b, _]) = seen_of_three();
            seen.unchanged(a);
            seen.unchanged(b);
            if erased {
                seen.other(id_hash("c"), false);
                seen.aside(id_hash("c"), 30);
            }
            seen.settle();
            assert!(!seen.every_keyed(), "erased: {erased}");
            assert!(seen.shows("a", Some(10)) && seen.shows("b", Some(20)));
            assert!(!seen.shows("c", Some(30)));
        }

        // Past 64 links, each word of bits is checked to its last place.
        for n in [63, 64, 65, 130] {
            let links: StoredKeys = (0..n).collect();
            let name = crate::model::ProviderName("p".into());
            let fields = crate::providers::malomo::mapping::FIELDS;
            let mut seen = Seen::new(Arc::new(Known::new(&name, &fields, links)));
            for place in 0..n as u32 - 1 {
                seen.unchanged(place);
            }
            seen.settle();
            assert!(!seen.every_keyed(), "{n}: the last one missing");
            seen.unchanged(n as u32 - 1);
            seen.settle();
            assert!(seen.every_keyed(), "{n}: all of them");
        }
    }

    #[test]
    fn shown_present_is_what_was_shown_present_however_it_was_shown() {
        let (mut seen, [a, ..]) = seen_of_three();
        seen.unchanged(a);
        seen.other(id_hash("d"), true);
        seen.other(id_hash("e"), false);
        // Erased, then shown again with an email: present.
        seen.other(id_hash("f"), false);
        seen.other(id_hash("f"), true);
        // Shown with an email, then erased in the same listing: present (seen there).
        seen.other(id_hash("g"), true);
        seen.other(id_hash("g"), false);
        // The links as the deletions read them, with the key each has by then.
        for (id, key) in [("a", Some(10)), ("d", None), ("f", Some(77)), ("g", None)] {
            assert!(seen.shows(id, key), "{id}");
        }
        for (id, key) in [("b", Some(20)), ("c", Some(30)), ("e", None), ("h", None)] {
            assert!(!seen.shows(id, key), "{id}");
        }
        // `a` listed unchanged, then stored under a new key: shown by its id.
        stored(&mut seen, "a", 10);
        assert!(seen.shows("a", Some(11)));
        // A link whose key is `a`'s old one is `a`: nobody else's text has that key.
        assert_eq!(seen.count(), 5);
    }
}
