//! The `Provider` trait every connector implements, what a provider can do
//! (`Capabilities`), the records it hands to the engine and the errors it raises.
//!
//! Owns: the boundary between the engine and the wire. Each connector is one folder
//! (`wire.rs` serde structs as the API sends them, `mapping.rs` wire ⇄ projection,
//! `mod.rs` the trait impl) on top of the shared client in `http.rs`.

pub mod dates;
pub mod ecwid;
pub mod http;
pub mod malomo;
pub mod nuvemshop;
pub mod pacing;
pub mod partially;
pub mod sendwithus;
pub mod wire;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{Kind, ProviderConfig};
use crate::model::{Email, Field, FieldSet, Projection, ProviderName, RemoteId};

/// How a provider's customer list is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStyle {
    /// Numbered pages (Nuvemshop, Partial.ly).
    Pages,
    /// An opaque cursor handed back by the previous page (Malomo).
    Cursor,
    /// offset/limit (Ecwid).
    Offset,
    /// Cannot be listed: a write target only (Sendwithus).
    None,
}

/// What a provider can do; the engine plans only what is possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub list: ListStyle,
    /// The listing can be restricted to records updated since a time (`ListRequest::since`).
    pub incremental: bool,
    pub create: bool,
    pub update: bool,
    pub delete: bool,
    /// Records can be found by email (used before a repeated create).
    pub lookup: bool,
    /// The records carry a trustworthy `updated_at`.
    pub updated_at: bool,
}

/// One record as a provider holds it, already in the provider's projection.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteRecord {
    pub id: RemoteId,
    pub projection: Projection,
    pub updated_at: Option<DateTime<Utc>>,
    /// Fields whose keys the answer did not carry (Partial.ly's `language`): unknown,
    /// not empty. They never look like an edit nor empty a value: the store keeps the
    /// value it knew for them (the snapshot, or what was written).
    pub absent: Vec<Field>,
    /// The key of the text a listing sent for this record ([`Known::key`]), or of a
    /// write's answer that is the record as a listing shows it (see
    /// [`wire::decode_answer`]); `None` for a lookup, or an answer of another shape.
    pub listed_key: Option<i64>,
}

impl RemoteRecord {
    /// The projection with the absent fields taken from `known` (the link's snapshot,
    /// or what a write sent); borrowed when every field was carried.
    pub fn completed(&self, known: Option<&Projection>) -> Cow<'_, Projection> {
        if self.absent.is_empty() {
            return Cow::Borrowed(&self.projection);
        }
        let mut p = self.projection.clone();
        for field in &self.absent {
            p.set(field.clone(), known.and_then(|k| k.get(field)));
        }
        Cow::Owned(p)
    }
}

/// One element of a listing: a usable record, or one that cannot be synced.
#[derive(Debug, Clone, PartialEq)]
pub enum Listed {
    Record(RemoteRecord),
    /// A record listed exactly as it was when the store last took in a listing of it
    /// (its text has a key in [`Known`]): nothing about it can have changed, so it is
    /// neither decoded nor stored again; it only counts as present, by its link's
    /// place in [`StoredKeys`].
    Unchanged(u32),
    /// A record custsync cannot use (no or invalid email, unreadable JSON). It is
    /// reported and, when its id is known, still counts as present in the listing.
    Skipped {
        remote_id: Option<RemoteId>,
        email: Option<String>,
        reason: String,
        /// The record itself could not be read (no usable id, not the documented
        /// shape), as opposed to one skipped for its data (an invalid email): it makes
        /// its listing incomplete, since it might be any linked customer.
        unreadable: bool,
    },
}

impl Listed {
    /// The record's id, where it could be read.
    pub fn remote_id(&self) -> Option<&RemoteId> {
        match self {
            Listed::Record(r) => Some(&r.id),
            Listed::Unchanged(_) => None,
            Listed::Skipped { remote_id, .. } => remote_id.as_ref(),
        }
    }
}

/// A remote id as 8 bytes, for the sets a listing keeps of what it saw (in memory
/// only, never stored: the hash is this build's).
pub fn id_hash(id: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// One event of a person's stream in a provider, with the provider's id for it (the
/// key that keeps it once in the store).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub at: Option<DateTime<Utc>>,
    /// The provider's own type or status (`ShopifyOrderFulfilled`, `opened`).
    pub kind: String,
    /// A line for a person (`Order #1000 fulfilled`, `opened: Order Confirmation`).
    pub label: String,
    /// The event as the provider sent it.
    pub raw: serde_json::Value,
}

/// One read of a person's event stream (DESIGN 14).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Events without a usable id: they cannot be kept once, so they are not kept.
    pub unreadable: usize,
    /// The cursor of the next page. `None`: the stream has nothing more now (an empty
    /// page, or a stream without pages); the next read starts where this one did.
    pub next: Option<String>,
}

/// Where a listing is: the first page has `token: None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListRequest {
    pub token: Option<String>,
    /// Only records updated at or after this time (providers with `incremental`).
    pub since: Option<DateTime<Utc>>,
    /// A listing the engine stores: each record's text gets a key, and one whose key
    /// is known comes back as [`Listed::Unchanged`]. `None` for a lookup.
    pub known: Option<Arc<Known>>,
}

/// The records a provider's listing stored, by the key of the text each was listed
/// as. A key is 8 bytes of SHA-256 over a seed (this build and the provider) and the
/// record's JSON text as sent: the same text under the same mapping always decodes to
/// the same record, so a record listed again byte for byte needs no decoding, no
/// comparison and no write. The store forgets a key whenever anything else changes
/// the link (a write, a deletion), so an equal key always means "as stored".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Known {
    seed: [u8; 32],
    links: StoredKeys,
}

impl Known {
    /// The keys of the provider `name` with `fields` (which seed them, with this
    /// build's version), and the links known by key so far.
    pub fn new(name: &ProviderName, fields: &FieldSet, links: StoredKeys) -> Self {
        use sha2::{Digest, Sha256};
        let mut seed = Sha256::new();
        seed.update(env!("CARGO_PKG_VERSION").as_bytes());
        seed.update([0]);
        seed.update(name.0.as_bytes());
        seed.update([0]);
        for field in fields.fields {
            seed.update(field.to_string().as_bytes());
            seed.update([0]);
        }
        Known {
            seed: seed.finalize().into(),
            links,
        }
    }

    /// The keys of the provider `name` with `fields`, with no link known: what a
    /// connector keys its write answers with ([`wire::decode_answer`]).
    pub fn seed(name: &ProviderName, fields: &FieldSet) -> Self {
        Self::new(name, fields, StoredKeys::default())
    }

    /// The key of one record's listed text.
    pub fn key(&self, text: &str) -> i64 {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(self.seed)
            .chain_update(text.as_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_le_bytes(first)
    }

    /// The links known by key.
    pub fn links(&self) -> &StoredKeys {
        &self.links
    }
}

/// The links a listing knows by key: their keys in order and split into runs by their
/// top bits, with where each run begins; within a run, only the bits below those are
/// kept, packed one after the other (47 bits a key at a million links). About 7 bytes
/// a link and a lookup of one or two cache lines, where a hash map of key and id took
/// 34 at a million links (its table doubles once it is 7/8 full), and a listing of four
/// providers held four of them at once. Exact: a key is found only where it was stored.
///
/// A link is named by its place here ([`Listed::Unchanged`]), so that what a listing
/// saw of them is one bit each; its id is not kept: what the listing saw of a link by
/// its id (decoded, skipped) is told by the key the store held for it (see
/// `sync::poll::Seen`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredKeys {
    /// The low `width` bits of each key, in order, packed: key `i` at bit `width * i`.
    packed: Vec<u64>,
    len: usize,
    /// `starts[b]`: the place of the first key of run `b` or a later one; one more at
    /// the end. Empty when no key is stored.
    starts: Vec<u32>,
    /// The bits of a key below its run's: the `64 - width` top bits of the key's
    /// [`ordered`] form name its run.
    width: u32,
    /// The last key pushed, while the keys are being pushed.
    last: Option<i64>,
}

/// A key as unsigned, in the order of the key as signed (the order SQL sorts it in).
fn ordered(key: i64) -> u64 {
    (key as u64) ^ (1 << 63)
}

impl StoredKeys {
    /// At most this many links are known (the places are `u32`): past it, a record
    /// is decoded and compared as if its key were not known, which is slower, never
    /// wrong.
    const MAX: usize = u32::MAX as usize;

    /// Ready for about `expected` keys, pushed in order with [`StoredKeys::push`] and
    /// ended by [`StoredKeys::finish`]. More or fewer keys than expected cost only
    /// speed: the runs are sized by `expected`.
    pub fn with_capacity(expected: usize) -> Self {
        // About four keys a run: 2^(log2 n - 2) runs, at least 2, at most 2^24.
        let bits = expected.max(1).ilog2().saturating_sub(2).clamp(1, 24);
        let width = 64 - bits;
        StoredKeys {
            packed: Vec::with_capacity((width as usize * expected.min(Self::MAX)).div_ceil(64)),
            len: 0,
            starts: Vec::with_capacity((1 << bits) + 1),
            width,
            last: None,
        }
    }

    /// Adds `key`, which must come after every key pushed so far (as signed): a key
    /// pushed again is kept once, and one out of order is left out (its record is then
    /// decoded as if its key were not known: slower, never wrong).
    pub fn push(&mut self, key: i64) {
        if self.last.is_some_and(|last| key <= last) || self.len >= Self::MAX {
            return;
        }
        self.last = Some(key);
        let run = (ordered(key) >> self.width) as usize;
        while self.starts.len() <= run {
            self.starts.push(self.len as u32);
        }
        let low = ordered(key) & low_bits(self.width);
        let bit = self.width as usize * self.len;
        let (word, off) = (bit / 64, bit % 64);
        if off == 0 {
            self.packed.push(low);
        } else {
            self.packed[word] |= low << off;
            if off + self.width as usize > 64 {
                self.packed.push(low >> (64 - off));
            }
        }
        self.len += 1;
    }

    /// Ends the pushing.
    pub fn finish(mut self) -> Self {
        if self.len == 0 {
            return StoredKeys::default();
        }
        let runs = 1usize << (64 - self.width);
        while self.starts.len() <= runs {
            self.starts.push(self.len as u32);
        }
        self.packed.shrink_to_fit();
        self.last = None;
        self
    }

    /// From keys in any order; a key given twice is kept once.
    pub fn from_keys(mut keys: Vec<i64>) -> Self {
        keys.sort_unstable();
        let mut stored = Self::with_capacity(keys.len());
        for key in keys {
            stored.push(key);
        }
        stored.finish()
    }

    /// How many links are known.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The low bits of the key at `place`.
    fn low_at(&self, place: usize) -> u64 {
        let width = self.width as usize;
        let bit = width * place;
        let (word, off) = (bit / 64, bit % 64);
        let mut low = self.packed[word] >> off;
        if off + width > 64 {
            low |= self.packed[word + 1] << (64 - off);
        }
        low & low_bits(self.width)
    }

    /// The place of the link stored with `key`, if any.
    pub fn find(&self, key: i64) -> Option<u32> {
        let run = (ordered(key) >> self.width) as usize;
        let (from, to) = (*self.starts.get(run)?, *self.starts.get(run + 1)?);
        let low = ordered(key) & low_bits(self.width);
        (from..to).find(|&place| self.low_at(place as usize) == low)
    }

    /// The key of the link at `place` (what the tests of the packing read back).
    #[cfg(test)]
    pub fn key_at(&self, place: u32) -> Option<i64> {
        if place as usize >= self.len {
            return None;
        }
        // The run is the last whose start is at or before the place.
        let run = self.starts.partition_point(|&s| s <= place) - 1;
        let ordered = ((run as u64) << self.width) | self.low_at(place as usize);
        Some((ordered ^ (1 << 63)) as i64)
    }
}

/// A mask of the low `n` bits (`n` below 64).
fn low_bits(n: u32) -> u64 {
    (1u64 << n) - 1
}

impl FromIterator<i64> for StoredKeys {
    fn from_iter<I: IntoIterator<Item = i64>>(keys: I) -> Self {
        Self::from_keys(keys.into_iter().collect())
    }
}

/// One page of a listing, with what it says of the listing as a whole, so that the
/// engine can tell a complete listing from one that fell short (DESIGN 4c).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub items: Vec<Listed>,
    /// The token of the next page; `None` ends the listing.
    pub next: Option<String>,
    /// How many records the provider says the whole listing holds, where it says so
    /// (Ecwid `total`, Partial.ly `total_entries`, Nuvemshop `X-Total-Count`). A
    /// listing that ends having seen fewer distinct records is incomplete.
    pub total: Option<u64>,
    /// Why this answer proves the listing incomplete (a page other than the one
    /// asked, a 404 after a `rel="next"`): the engine ends the listing there, as
    /// incomplete, after storing the page's items.
    pub incomplete: Option<String>,
}

/// A failed request to a provider. The message is the provider's own where it sent one;
/// no variant ever carries a credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider}: HTTP {status}: {message}")]
    Status {
        provider: ProviderName,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{provider}: {message}")]
    Transport {
        provider: ProviderName,
        message: String,
        /// The request may have reached the provider (a timeout, a cut answer), as
        /// opposed to a connection that never opened.
        maybe_sent: bool,
    },
    #[error("{provider}: unexpected answer: {message}")]
    Decode {
        provider: ProviderName,
        message: String,
    },
    #[error("{provider}: {message}")]
    Unsupported {
        provider: ProviderName,
        message: String,
    },
    /// An answer custsync will not take (a redirect to another origin, a body over the
    /// size limit): not retried, and nothing was sent where it pointed.
    #[error("{provider}: {message}")]
    Refused {
        provider: ProviderName,
        message: String,
    },
}

impl ProviderError {
    /// Worth another attempt: connection errors, timeouts, 408, 429 and 5xx.
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::Status { status, .. } => matches!(status, 408 | 429) || *status >= 500,
            ProviderError::Transport { .. } => true,
            // A body cut short or garbled in transit reads as bad JSON: try again.
            ProviderError::Decode { .. } => true,
            ProviderError::Unsupported { .. } | ProviderError::Refused { .. } => false,
        }
    }

    /// The request may have taken effect although it failed: a write answered by a
    /// timeout, a cut connection, a 5xx or an unreadable body. A create that failed so
    /// is looked up before it is sent again.
    pub fn maybe_applied(&self) -> bool {
        match self {
            ProviderError::Status { status, .. } => *status >= 500 || *status == 408,
            ProviderError::Transport { maybe_sent, .. } => *maybe_sent,
            ProviderError::Decode { .. } => true,
            // A write answered by a refused redirect or an oversized body reached the
            // provider; whether it took effect is unknown.
            ProviderError::Refused { .. } => true,
            ProviderError::Unsupported { .. } => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn unsupported(provider: &ProviderName, message: impl Into<String>) -> Self {
        ProviderError::Unsupported {
            provider: provider.clone(),
            message: message.into(),
        }
    }

    pub fn decode(provider: &ProviderName, message: impl std::fmt::Display) -> Self {
        ProviderError::Decode {
            provider: provider.clone(),
            message: message.to_string(),
        }
    }
}

/// A provider's customer API. Optional operations default to `Unsupported`, so a
/// connector implements what its capabilities claim and nothing more.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The connector's client: it knows the provider's name, kind and traffic.
    fn http(&self) -> &http::HttpClient;

    fn name(&self) -> &ProviderName {
        self.http().provider()
    }

    fn kind(&self) -> Kind {
        self.http().kind()
    }

    /// The connector's request counters (requests, retries, 429s), for reports and metrics.
    fn traffic(&self) -> Arc<http::Traffic> {
        self.http().traffic.clone()
    }

    fn capabilities(&self) -> Capabilities;
    /// The fields this provider carries, in its projection.
    fn fields(&self) -> &FieldSet;

    /// One page of the customer list.
    async fn list(&self, req: &ListRequest) -> Result<Page, ProviderError> {
        let _ = req;
        Err(ProviderError::unsupported(self.name(), "cannot be listed"))
    }

    /// Creates a record; answers it as the provider stored it.
    async fn create(&self, record: &Projection) -> Result<RemoteRecord, ProviderError> {
        let _ = record;
        Err(ProviderError::unsupported(
            self.name(),
            "cannot create customers",
        ))
    }

    /// Updates `changed` fields of a record (`record` is the whole desired projection).
    async fn update(
        &self,
        id: &RemoteId,
        record: &Projection,
        changed: &[Field],
    ) -> Result<RemoteRecord, ProviderError> {
        let _ = (id, record, changed);
        Err(ProviderError::unsupported(
            self.name(),
            "cannot update customers",
        ))
    }

    async fn delete(&self, id: &RemoteId) -> Result<(), ProviderError> {
        let _ = id;
        Err(ProviderError::unsupported(
            self.name(),
            "cannot delete customers",
        ))
    }

    /// Records with this email (exact match after normalization).
    async fn lookup(&self, email: &Email) -> Result<Vec<RemoteRecord>, ProviderError> {
        let _ = email;
        Err(ProviderError::unsupported(
            self.name(),
            "cannot look customers up by email",
        ))
    }

    /// What `lookup` finds for each of these emails. A provider whose lookup walks its
    /// whole list (Malomo) walks it once for all of them.
    async fn lookup_all(
        &self,
        emails: &[Email],
    ) -> Result<std::collections::HashMap<Email, Vec<RemoteRecord>>, ProviderError> {
        let mut found = std::collections::HashMap::with_capacity(emails.len());
        for email in emails {
            found.insert(email.clone(), self.lookup(email).await?);
        }
        Ok(found)
    }

    /// The provider keeps a per-customer event stream that `events` reads.
    fn has_events(&self) -> bool {
        false
    }

    /// One read of a record's event stream, from `cursor` (a `next` of an earlier
    /// page; `None`: the start). A read-only request.
    async fn events(
        &self,
        id: &RemoteId,
        cursor: Option<&str>,
    ) -> Result<EventPage, ProviderError> {
        let _ = (id, cursor);
        Err(ProviderError::unsupported(
            self.name(),
            "has no activity stream",
        ))
    }

    /// The groups the record is in (`None`: no such record). A read.
    async fn groups_of(&self, id: &RemoteId) -> Result<Option<Vec<String>>, ProviderError> {
        let _ = id;
        Err(ProviderError::unsupported(self.name(), "has no groups"))
    }

    /// Adds the record to a group; adding a member again changes nothing.
    async fn add_to_group(&self, id: &RemoteId, group: &str) -> Result<(), ProviderError> {
        let _ = (id, group);
        Err(ProviderError::unsupported(self.name(), "has no groups"))
    }

    /// Removes the record from a group; removing a non-member changes nothing.
    async fn remove_from_group(&self, id: &RemoteId, group: &str) -> Result<(), ProviderError> {
        let _ = (id, group);
        Err(ProviderError::unsupported(self.name(), "has no groups"))
    }

    /// One cheap authenticated request, to prove the provider is reachable.
    async fn check(&self) -> Result<(), ProviderError>;
}

/// Builds the connector for one configured provider.
pub fn connect(cfg: &ProviderConfig) -> Result<Arc<dyn Provider>, ProviderError> {
    let http = http::HttpClient::new(cfg)?;
    Ok(match cfg.kind {
        Kind::Malomo => Arc::new(malomo::Malomo::new(http)),
        Kind::Nuvemshop => Arc::new(nuvemshop::Nuvemshop::new(
            http,
            cfg.page_size.unwrap_or(200),
        )),
        Kind::Partially => Arc::new(partially::Partially::new(
            http,
            cfg.page_size.unwrap_or(100),
        )),
        Kind::Ecwid => Arc::new(ecwid::Ecwid::new(http, cfg.page_size.unwrap_or(100))),
        Kind::Sendwithus => Arc::new(sendwithus::Sendwithus::new(http)),
    })
}

/// Parses a record's email for the engine, or says why it cannot be used.
pub fn record_email(p: &Projection) -> Result<Email, String> {
    match p.get(&Field::Email) {
        None => Err("no email".to_string()),
        Some(raw) => Email::parse(raw).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::StoredKeys;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_stored_key_is_found_at_its_own_place_and_no_other_key_is(
            given in proptest::collection::vec(any::<i64>(), 0..3000),
            others in proptest::collection::vec(any::<i64>(), 0..200),
        ) {
            let keys: StoredKeys = given.iter().copied().collect();
            let distinct: std::collections::HashSet<i64> = given.iter().copied().collect();
            prop_assert_eq!(keys.len(), distinct.len());
            let mut places = std::collections::HashSet::new();
            for &key in &distinct {
                let place = keys.find(key).expect("a stored key is found");
                prop_assert_eq!(keys.key_at(place), Some(key));
                prop_assert!(places.insert(place), "one place a key");
            }
            for key in others.into_iter().filter(|k| !distinct.contains(k)) {
                prop_assert_eq!(keys.find(key), None);
            }
        }
    }

    #[test]
    fn the_keys_at_either_end_of_the_range_are_found() {
        let edges = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
        for n in [1usize, 2, 7, 100_000] {
            let keys: StoredKeys = edges
                .iter()
                .copied()
                .chain((1..=n as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) as i64))
                .collect();
            for k in edges {
                let place = keys.find(k).expect("found");
                assert_eq!(keys.key_at(place), Some(k), "{k} among {n}");
            }
            assert_eq!(keys.find(12345), None);
        }
        assert_eq!(StoredKeys::default().find(0), None);
        assert_eq!(StoredKeys::from_keys(Vec::new()).find(i64::MAX), None);
    }
}
