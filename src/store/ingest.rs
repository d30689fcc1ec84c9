//! One page of a listing into the store: each record linked (by its remote id, else by
//! email) and its listed state kept as `observed` for the merge.
//!
//! A page costs a fixed number of statements whatever its size: what its records need
//! to know (their links, the customers with their emails and those customers' links,
//! who was forgotten) is read in two queries, the page is applied record by record in
//! memory, in page order, and what changed is written with one set-based statement per
//! kind of change (customers created, links deleted, links created or observed,
//! observed states cleared).

use std::collections::{HashMap, HashSet};

use sqlx::{AnyConnection, Row};

use super::links::{email_hash, json, Duplicate, Observed};
use super::rows::Rows;
use super::{now_text, parse_time, time_text, Backend, Result, RunId, Store};
use crate::model::{Projection, ProviderName, RemoteId};

/// Links of one listing seen unchanged as another text than the one their key stands
/// for (a record custsync wrote, listed for the first time): the new key is written
/// later, many pages together, not in each page's transaction.
///
/// Written with its page, a key rewrote its link row (snapshot and observed state
/// included) on a page of SQLite's own for nearly every record, and each page's commit
/// wrote those pages to the WAL again: a third of the first listing after a first run.
/// Written together, a table page holding many of them is written once.
///
/// A key held here is dropped as soon as a later page of the listing touches its link
/// (reads it to apply a record, deletes it, observes it), so the key written is always
/// the last text that link was seen as with nothing else changed since. A key never
/// written costs only a decoding at the next listing.
#[derive(Debug, Default)]
pub struct Rekeys {
    /// Remote id → (customer id, key).
    by_remote: HashMap<String, (i64, i64)>,
}

impl Rekeys {
    /// How many keys are held: [`Store::write_rekeys`] once there are this many.
    pub const FLUSH_AT: usize = 8192;

    pub fn len(&self) -> usize {
        self.by_remote.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_remote.is_empty()
    }
}

/// What storing a page of a listing tells the listing, beside what it stored.
#[derive(Debug, Default)]
pub struct Ingested {
    /// The records not linked, as duplicates.
    pub duplicates: Vec<Duplicate>,
    /// The listed keys the page's records' links had when the page began (a link
    /// without one, or a record not linked yet, gives none): which of the links the
    /// listing knew by key those records are, where their keys are about to change.
    pub keys: Vec<i64>,
    /// Links of other records the page deleted (a duplicate replaced), with the listed
    /// key each had: (remote id, key).
    pub dropped: Vec<(String, i64)>,
}

impl Store {
    /// Stores one page alone ([`Store::ingest_listing_page`] with its keys written at
    /// once): the tests' way to store a page; a listing holds its keys across pages.
    #[cfg(test)]
    pub async fn ingest_page(
        &self,
        provider: &ProviderName,
        run: RunId,
        observed: &[Observed],
    ) -> Result<Vec<Duplicate>> {
        let mut rekeys = Rekeys::default();
        let ingested = self
            .ingest_listing_page(provider, run, observed, &mut rekeys)
            .await?;
        self.write_rekeys(provider, &mut rekeys).await?;
        Ok(ingested.duplicates)
    }

    /// Stores one page of a listing in one transaction, records in page order.
    /// Returns the records not linked as duplicates, and the keys the links it changed
    /// had. The new keys of links seen unchanged are left in `rekeys`, for
    /// [`Store::write_rekeys`].
    pub async fn ingest_listing_page(
        &self,
        provider: &ProviderName,
        run: RunId,
        observed: &[Observed],
        rekeys: &mut Rekeys,
    ) -> Result<Ingested> {
        let _one_at_a_time = self.ingest.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut page = Page::load(&mut tx, provider, observed).await?;
        let mut out = Ingested {
            keys: observed
                .iter()
                .filter_map(|o| page.links.get(&o.record.id.0))
                .filter(|l| l.stored)
                .filter_map(|l| l.key)
                .collect(),
            ..Ingested::default()
        };
        for o in observed {
            if let Some(d) = page.apply(o)? {
                out.duplicates.push(d);
            }
        }
        out.dropped = std::mem::take(&mut page.dropped);
        // Every link the page read or changed is the page's now: a key held for it
        // from an earlier page no longer stands.
        for remote_id in page.links.keys().chain(&page.deleted) {
            rekeys.by_remote.remove(remote_id);
        }
        page.write(&mut tx, provider, run, rekeys).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Writes the keys held in `rekeys` (and forgets them), in one transaction: each
    /// link still linked to the same customer gets its key and loses an observed state
    /// left on it (a change that went back). Nothing is inserted.
    pub async fn write_rekeys(&self, provider: &ProviderName, rekeys: &mut Rekeys) -> Result<()> {
        if rekeys.is_empty() {
            return Ok(());
        }
        let mut held: Vec<(String, (i64, i64))> = rekeys.by_remote.drain().collect();
        // In the order of the index the statement finds them by.
        held.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let _one_at_a_time = self.ingest.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut rows = Rows::with_capacity(3, held.len());
        for (remote_id, (customer, key)) in &held {
            rows.push([remote_id.as_str().into(), (*customer).into(), (*key).into()]);
        }
        // An upsert finds each row by its key (an UPDATE … FROM a list scans every link
        // of the provider on SQLite); the EXISTS keeps it from inserting a link that
        // went in the meantime, or from moving one to another customer.
        rows.execute(
            &mut tx,
            &[provider.0.as_str().into()],
            "INSERT INTO links (provider, remote_id, customer_id, listed_key)
             SELECT $1, column1, column2, column3 FROM {rows}
             WHERE EXISTS (SELECT 1 FROM links k WHERE k.provider = $1 AND k.remote_id = column1 AND k.customer_id = column2)
             ON CONFLICT (provider, remote_id) DO UPDATE
             SET observed = NULL, listed_key = excluded.listed_key",
            "INSERT INTO links (provider, remote_id, customer_id, listed_key)
             SELECT $1, e->>0, (e->>1)::BIGINT, (e->>2)::BIGINT
             FROM jsonb_array_elements($2::jsonb) AS e
             WHERE EXISTS (SELECT 1 FROM links k WHERE k.provider = $1 AND k.remote_id = e->>0 AND k.customer_id = (e->>1)::BIGINT)
             ON CONFLICT (provider, remote_id) DO UPDATE
             SET observed = NULL, listed_key = EXCLUDED.listed_key",
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A customer of the page: stored, or created by an earlier record of the page (an
/// index into `Page::created`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Customer {
    Stored(i64),
    Created(usize),
}

/// One of the provider's links as the page left it so far.
struct Link {
    customer: Customer,
    /// The snapshot's JSON text (stored links only): what an unchanged record equals.
    snapshot: Option<String>,
    /// Its customer is tombstoned: nothing listed is merged into it.
    tombstoned: bool,
    observed_at: Option<String>,
    gone: bool,
    /// In the store when the page began (else created by the page).
    stored: bool,
    /// For a created link, what it is created with; for a stored one, a new observed
    /// state (`Some(None)`: cleared after being set by the page).
    observed: Option<Option<String>>,
    /// A stored link seen unchanged (and not observed by the page): an observed state
    /// left on it (a change that went back) is cleared.
    clear: bool,
    /// The key of the text its record was listed as, as stored.
    key: Option<i64>,
    /// The key of the text the page listed it as.
    listed_key: Option<i64>,
}

/// A stored link as read for the page.
struct StoredLink {
    snapshot: Option<String>,
    tombstoned: bool,
    observed_at: Option<String>,
    gone: i64,
    key: Option<i64>,
}

/// What the page's records need to know, kept true as the page is applied.
struct Page {
    /// The provider's links by remote id: those with the page's remote ids, and those
    /// of the customers with the page's emails.
    links: HashMap<String, Link>,
    /// The remote id of the provider's link of each of those customers.
    by_customer: HashMap<Customer, String>,
    /// Customers with the page's emails: the customer and whether it is tombstoned.
    /// Read only when a record of the page is not linked yet.
    customers: HashMap<String, (Customer, bool)>,
    /// Hashes of the page's emails that `forget` erased.
    forgotten: HashSet<String>,
    /// Emails of the customers the page creates, in order.
    created: Vec<String>,
    /// Stored links the page deleted (a duplicate replaced).
    deleted: Vec<String>,
    /// Of those, the ones with a listed key, with it.
    dropped: Vec<(String, i64)>,
}

impl Page {
    async fn load(
        conn: &mut AnyConnection,
        provider: &ProviderName,
        observed: &[Observed],
    ) -> Result<Page> {
        let backend = super::backend_of(conn);
        let ids: Vec<&str> = observed.iter().map(|o| o.record.id.0.as_str()).collect();
        // The rows come back as one JSON text: one row crosses from the database, not
        // one per record.
        /// `remote_id, customer_id, snapshot, tombstoned, observed_at, gone, listed_key`.
        type Known = (
            String,
            i64,
            Option<String>,
            i64,
            Option<String>,
            i64,
            Option<i64>,
        );
        let rows: Vec<Known> = super::decode_rows(
            sqlx::query_scalar(&format!(
                "SELECT {} FROM links l JOIN customers c ON c.id = l.customer_id
                 WHERE l.provider = $1 AND l.remote_id {}",
                super::json_rows(
                    backend,
                    "l.remote_id, l.customer_id, l.snapshot,
                     CASE WHEN c.tombstoned_at IS NULL THEN 0 ELSE 1 END, l.observed_at, l.gone,
                     l.listed_key"
                ),
                super::in_texts(backend, 2)
            ))
            .bind(&provider.0)
            .bind(json(&ids))
            .fetch_one(&mut *conn)
            .await?,
        )?;
        let mut page = Page {
            links: HashMap::with_capacity(rows.len()),
            by_customer: HashMap::with_capacity(rows.len()),
            customers: HashMap::new(),
            forgotten: HashSet::new(),
            created: Vec::new(),
            deleted: Vec::new(),
            dropped: Vec::new(),
        };
        for (remote_id, customer, snapshot, tombstoned, observed_at, gone, key) in rows {
            page.stored(
                remote_id,
                customer,
                StoredLink {
                    snapshot,
                    tombstoned: tombstoned != 0,
                    observed_at,
                    gone,
                    key,
                },
            );
        }
        // Every email of the page, so that a record unlinked while the page is applied
        // (a duplicate replaced) still finds its customer here.
        if observed
            .iter()
            .any(|o| !page.links.contains_key(&o.record.id.0))
        {
            page.load_people(conn, backend, provider, observed).await?;
        }
        Ok(page)
    }

    fn stored(&mut self, remote_id: String, customer: i64, s: StoredLink) {
        self.by_customer
            .insert(Customer::Stored(customer), remote_id.clone());
        self.links.insert(
            remote_id,
            Link {
                customer: Customer::Stored(customer),
                snapshot: s.snapshot,
                tombstoned: s.tombstoned,
                observed_at: s.observed_at,
                gone: s.gone != 0,
                stored: true,
                observed: None,
                clear: false,
                key: s.key,
                listed_key: None,
            },
        );
    }

    async fn load_people(
        &mut self,
        conn: &mut AnyConnection,
        backend: Backend,
        provider: &ProviderName,
        observed: &[Observed],
    ) -> Result<()> {
        let emails: Vec<&str> = observed.iter().map(|o| o.email.as_str()).collect();
        type Person = (
            String,
            i64,
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<Person> = super::decode_rows(sqlx::query_scalar(&format!(
                "SELECT {} FROM customers c LEFT JOIN links l ON l.customer_id = c.id AND l.provider = $1
                 WHERE c.email {}",
                super::json_rows(
                    backend,
                    "c.email, c.id, CASE WHEN c.tombstoned_at IS NULL THEN 0 ELSE 1 END,
                     l.remote_id, l.snapshot, l.observed_at, l.gone, l.listed_key"
                ),
                super::in_texts(backend, 2)
            ))
            .bind(&provider.0)
            .bind(json(&emails))
            .fetch_one(&mut *conn)
            .await?)?;
        for (email, id, tombstoned, remote_id, snapshot, observed_at, gone, key) in rows {
            let tombstoned = tombstoned != 0;
            self.customers
                .insert(email, (Customer::Stored(id), tombstoned));
            if let Some(remote_id) = remote_id {
                if !self.links.contains_key(&remote_id) {
                    self.stored(
                        remote_id,
                        id,
                        StoredLink {
                            snapshot,
                            tombstoned,
                            observed_at,
                            gone: gone.unwrap_or(0),
                            key,
                        },
                    );
                }
            }
        }
        // Only an email with no customer can be one `forget` erased.
        let hashes: Vec<String> = observed
            .iter()
            .filter(|o| !self.customers.contains_key(o.email.as_str()))
            .map(|o| email_hash(&o.email))
            .collect();
        if hashes.is_empty() {
            return Ok(());
        }
        let rows = sqlx::query(&format!(
            "SELECT email_hash FROM customers WHERE email IS NULL AND email_hash {}",
            super::in_texts(backend, 1)
        ))
        .bind(json(&hashes))
        .fetch_all(&mut *conn)
        .await?;
        self.forgotten = rows.into_iter().map(|r| r.get(0)).collect();
        Ok(())
    }

    /// Applies one record, as if it were stored alone after those before it.
    fn apply(&mut self, o: &Observed) -> Result<Option<Duplicate>> {
        let id = &o.record.id.0;
        let Some(link) = self.links.get_mut(id) else {
            return self.link_new(o);
        };
        link.listed_key = o.record.listed_key;
        // What the record lists, unless it equals the snapshot (or its customer is
        // tombstoned). A field the answer did not carry keeps the value the snapshot
        // has. Serialized once, and only a record with such a field parses the snapshot.
        let listed = match &link.snapshot {
            _ if link.tombstoned => None,
            None => Some(json(&o.record.projection)),
            Some(text) if o.record.absent.is_empty() => {
                let listed = json(&o.record.projection);
                (*text != listed).then_some(listed)
            }
            Some(text) => {
                let snapshot: Projection = serde_json::from_str(text)?;
                let completed = o.record.completed(Some(&snapshot));
                (*completed != snapshot).then(|| json(&completed))
            }
        };
        let Some(listed) = listed else {
            match &mut link.observed {
                Some(state) => *state = None,
                None => link.clear = true,
            }
            return Ok(None);
        };
        link.observed = Some(Some(listed));
        link.observed_at = Some(time_text(o.time));
        link.clear = false;
        Ok(None)
    }

    /// Links a record whose remote id is not linked yet to the customer with its email,
    /// created empty if there is none (not for a tombstoned or forgotten person). A
    /// second record of the same provider with the same email is a duplicate; the most
    /// recently updated one is linked while neither has been merged yet.
    fn link_new(&mut self, o: &Observed) -> Result<Option<Duplicate>> {
        let email = o.email.as_str();
        let customer = match self.customers.get(email) {
            Some((_, true)) => return Ok(None),
            Some((c, false)) => *c,
            None if !self.forgotten.is_empty()
                && self.forgotten.contains(&email_hash(&o.email)) =>
            {
                return Ok(None)
            }
            None => {
                let c = Customer::Created(self.created.len());
                self.created.push(email.to_string());
                self.customers.insert(email.to_string(), (c, false));
                c
            }
        };
        let mut replaced = None;
        if let Some(other_id) = self.by_customer.get(&customer).cloned() {
            let other = &self.links[&other_id];
            let merged = other.snapshot.is_some();
            let other_time = other.observed_at.as_deref().and_then(parse_time);
            let newer = other_time.is_none_or(|t| o.time > t);
            if !other.gone && (merged || !newer) {
                return Ok(Some(Duplicate {
                    remote_id: o.record.id.clone(),
                    email: o.email.clone(),
                }));
            }
            let gone = other.gone;
            if let Some(l) = self.links.remove(&other_id).filter(|l| l.stored) {
                if let Some(key) = l.key {
                    self.dropped.push((other_id.clone(), key));
                }
                self.deleted.push(other_id.clone());
            }
            replaced = (!gone).then_some(Duplicate {
                remote_id: RemoteId(other_id),
                email: o.email.clone(),
            });
        }
        self.by_customer.insert(customer, o.record.id.0.clone());
        self.links.insert(
            o.record.id.0.clone(),
            Link {
                customer,
                snapshot: None,
                tombstoned: false,
                observed_at: Some(time_text(o.time)),
                gone: false,
                stored: false,
                observed: Some(Some(json(&o.record.projection))),
                clear: false,
                key: None,
                listed_key: o.record.listed_key,
            },
        );
        Ok(replaced)
    }

    /// Writes what the page changed, one statement per kind of change.
    async fn write(
        self,
        conn: &mut AnyConnection,
        provider: &ProviderName,
        run: RunId,
        rekeys: &mut Rekeys,
    ) -> Result<()> {
        let backend = super::backend_of(conn);
        let mut ids = HashMap::with_capacity(self.created.len());
        if !self.created.is_empty() {
            let now = now_text();
            let rows = sqlx::query(match backend {
                Backend::Sqlite => "INSERT INTO customers (email, fields, updated_at, created_at)
                     SELECT value, '{}', $1, $1 FROM json_each($2) WHERE true RETURNING id, email",
                Backend::Postgres => "INSERT INTO customers (email, fields, updated_at, created_at)
                     SELECT e, '{}', $1, $1 FROM json_array_elements_text($2::json) AS e RETURNING id, email",
            })
            .bind(&now)
            .bind(json(&self.created))
            .fetch_all(&mut *conn)
            .await?;
            for r in rows {
                ids.insert(r.get::<String, _>(1), r.get::<i64, _>(0));
            }
        }
        let customer_id = |c: Customer| -> Result<i64> {
            Ok(match c {
                Customer::Stored(id) => id,
                Customer::Created(i) => {
                    *ids.get(&self.created[i]).ok_or(sqlx::Error::RowNotFound)?
                }
            })
        };
        if !self.deleted.is_empty() {
            sqlx::query(&format!(
                "DELETE FROM links WHERE provider = $1 AND remote_id {}",
                super::in_texts(backend, 2)
            ))
            .bind(&provider.0)
            .bind(json(&self.deleted))
            .execute(&mut *conn)
            .await?;
        }
        // Links created and links observed: one upsert, which finds each row by its
        // key (an UPDATE … FROM a JSON list scans every link of the provider on SQLite).
        let mut written = Vec::new();
        let mut cleared = Vec::new();
        for (remote_id, link) in &self.links {
            match &link.observed {
                Some(state) => written.push((
                    remote_id.as_str(),
                    customer_id(link.customer)?,
                    state.as_deref(),
                    link.observed_at.as_deref(),
                    link.listed_key,
                )),
                // Seen unchanged as the text it was stored with: nothing to write.
                None if link.listed_key.is_some() && link.listed_key == link.key => {}
                // Seen unchanged as another text: the new key is kept, and an observed
                // state left on it (a change that went back) is cleared.
                // Held, to be written with many others (see `Rekeys`).
                None if link.stored && link.clear => match (link.listed_key, link.customer) {
                    (Some(key), Customer::Stored(customer)) => {
                        rekeys.by_remote.insert(remote_id.clone(), (customer, key));
                    }
                    _ => cleared.push(remote_id.as_str()),
                },
                None => {}
            }
        }
        let mut rows = Rows::with_capacity(5, written.len());
        for (remote_id, customer, observed, observed_at, key) in &written {
            rows.push([
                (*remote_id).into(),
                (*customer).into(),
                (*observed).into(),
                (*observed_at).into(),
                (*key).into(),
            ]);
        }
        rows.execute(
            conn,
            &[provider.0.as_str().into(), run.0.into()],
            "INSERT INTO links (provider, remote_id, customer_id, observed, observed_at, seen_run, listed_key)
             SELECT $1, column1, column2, column3, column4, $2, column5 FROM {rows} WHERE true
             ON CONFLICT (provider, remote_id) DO UPDATE
             SET observed = excluded.observed, observed_at = excluded.observed_at, seen_run = excluded.seen_run,
                 listed_key = excluded.listed_key",
            "INSERT INTO links (provider, remote_id, customer_id, observed, observed_at, seen_run, listed_key)
             SELECT $1, e->>0, (e->>1)::BIGINT, e->>2, e->>3, $2, (e->>4)::BIGINT
             FROM jsonb_array_elements($3::jsonb) AS e
             ON CONFLICT (provider, remote_id) DO UPDATE
             SET observed = EXCLUDED.observed, observed_at = EXCLUDED.observed_at, seen_run = EXCLUDED.seen_run,
                 listed_key = EXCLUDED.listed_key",
        )
        .await?;
        if !cleared.is_empty() {
            // Only a row with an observed state left (a change that went back) is
            // written: a record seen unchanged costs no write.
            sqlx::query(&format!(
                "UPDATE links SET observed = NULL WHERE provider = $1 AND observed IS NOT NULL AND remote_id {}",
                super::in_texts(backend, 2)
            ))
            .bind(&provider.0)
            .bind(json(&cleared))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::config::StorePath;
    use crate::model::{CustomerId, Email, Field};
    use crate::providers::RemoteRecord;
    use crate::store::links::{projection, CustomerUpdate};

    fn rec(id: &str, email: &str, name: &str, secs: i64) -> Observed {
        let time = Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap();
        let projection = Projection::new()
            .with(Field::Email, Some(email))
            .with(Field::FirstName, Some(name));
        Observed {
            record: RemoteRecord {
                id: RemoteId(id.into()),
                projection,
                updated_at: Some(time),
                absent: Vec::new(),
                listed_key: None,
            },
            email: Email::parse(email).unwrap(),
            time,
        }
    }

    fn ids(d: &[Duplicate]) -> Vec<&str> {
        d.iter().map(|d| d.remote_id.0.as_str()).collect()
    }

    /// `(remote_id, customer_id, first name observed, seen_run)` of a provider's links.
    async fn links(s: &Store, provider: &str) -> Vec<(String, i64, Option<String>, i64)> {
        let rows = sqlx::query("SELECT remote_id, customer_id, observed, seen_run FROM links WHERE provider = $1 ORDER BY remote_id")
            .bind(provider)
            .fetch_all(s.pool())
            .await
            .unwrap();
        rows.into_iter()
            .map(|r| {
                let observed = projection(r.get(2)).unwrap();
                let name = observed.and_then(|p| p.get(&Field::FirstName).map(str::to_string));
                (r.get(0), r.get(1), name, r.get(3))
            })
            .collect()
    }

    /// Makes every observed record the snapshot, as a merge would.
    async fn merge_all(s: &Store, run: RunId) {
        let updates: Vec<CustomerUpdate> = s
            .load_batch(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|(row, links)| CustomerUpdate {
                id: Some(row.id),
                merged: links.iter().any(|l| l.observed.is_some()),
                ..CustomerUpdate::default()
            })
            .collect();
        s.save_batch(run, &updates).await.unwrap();
    }

    #[tokio::test]
    async fn records_of_one_page_see_the_links_made_before_them_in_it() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        let run = s.begin_run("once").await.unwrap();
        let p = ProviderName("p".into());
        let page = [
            rec("a1", "x@e.co", "Ann", 10),
            rec("a2", "X@E.co", "Anne", 20), // newer: replaces a1
            rec("b1", "y@e.co", "Bob", 5),
            rec("a1", "x@e.co", "Annie", 30), // a1 again, newer than a2: replaces it
            rec("a3", "x@e.co", "Ana", 15),   // older than a1: a duplicate
        ];
        let dups = s.ingest_page(&p, run, &page).await.unwrap();
        assert_eq!(ids(&dups), ["a1", "a2", "a3"]);
        assert_eq!(
            links(&s, "p").await,
            [
                ("a1".into(), 1, Some("Annie".into()), run.0),
                ("b1".into(), 2, Some("Bob".into()), run.0)
            ]
        );
        // One customer per email, the second provider's record joins it.
        let q = ProviderName("q".into());
        let dups = s
            .ingest_page(&q, run, &[rec("q1", "y@e.co", "B", 1)])
            .await
            .unwrap();
        assert!(dups.is_empty());
        assert_eq!(links(&s, "q").await[0].1, 2);
    }

    #[tokio::test]
    async fn a_page_tells_the_keys_its_records_links_had_and_those_of_links_it_deleted() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        let run = s.begin_run("once").await.unwrap();
        let p = ProviderName("p".into());
        let keyed = |mut o: Observed, key: i64| {
            o.record.listed_key = Some(key);
            o
        };
        let first = [
            keyed(rec("a1", "x@e.co", "Ann", 10), 7),
            keyed(rec("b1", "y@e.co", "Bob", 10), 8),
            rec("c1", "z@e.co", "Cy", 10),
        ];
        let ingested = s
            .ingest_listing_page(&p, run, &first, &mut Rekeys::default())
            .await
            .unwrap();
        assert!(ingested.keys.is_empty(), "no link had a key");
        // b1 changed, c1 (no key) again, and a2, newer, with a1's email: a1 is not
        // merged yet, so a2 replaces it.
        let page = [
            keyed(rec("b1", "y@e.co", "Bobby", 20), 9),
            keyed(rec("c1", "z@e.co", "Cy", 10), 11),
            keyed(rec("a2", "x@e.co", "Ann", 20), 12),
        ];
        let ingested = s
            .ingest_listing_page(&p, run, &page, &mut Rekeys::default())
            .await
            .unwrap();
        assert_eq!(ingested.keys, [8]);
        assert_eq!(ingested.dropped, [("a1".to_string(), 7)]);
        assert_eq!(ids(&ingested.duplicates), ["a1"]);
    }

    #[tokio::test]
    async fn a_known_record_unchanged_costs_no_write_and_a_changed_one_is_kept_for_the_merge() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        let p = ProviderName("p".into());
        let run = s.begin_run("once").await.unwrap();
        let first_run = run;
        let first = [rec("a1", "x@e.co", "Ann", 1), rec("b1", "y@e.co", "Bob", 1)];
        s.ingest_page(&p, run, &first).await.unwrap();
        merge_all(&s, run).await;

        let run = s.begin_run("once").await.unwrap();
        let page = [
            rec("a1", "x@e.co", "Ann", 1),
            rec("b1", "y@e.co", "Bobby", 2),
        ];
        let dups = s.ingest_page(&p, run, &page).await.unwrap();
        assert!(dups.is_empty());
        assert_eq!(
            links(&s, "p").await,
            [
                ("a1".into(), 1, None, first_run.0),
                ("b1".into(), 2, Some("Bobby".into()), run.0)
            ]
        );
    }

    #[tokio::test]
    async fn text_that_json_escapes_round_trips_exactly_and_is_seen_unchanged() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        let p = ProviderName("p".into());
        let run = s.begin_run("once").await.unwrap();
        let mut first = rec("a1", "x@e.co", "Ann", 1);
        let odd = "Zoë \"Q\" \\ back\u{1}slash 😀 \u{7f}";
        first.record.projection.set(Field::LastName, Some(odd));
        s.ingest_page(&p, run, &[first.clone()]).await.unwrap();
        merge_all(&s, run).await;
        let first_run = run;

        // The snapshot came back through the aggregated JSON read equal to the text
        // the record serializes to: listed again, it is unchanged and not written.
        let run = s.begin_run("once").await.unwrap();
        s.ingest_page(&p, run, &[first]).await.unwrap();
        assert_eq!(links(&s, "p").await, [("a1".into(), 1, None, first_run.0)]);
        let loaded = s.load_batch(0, 10).await.unwrap();
        let snapshot = loaded[0].1[0].snapshot.as_ref().unwrap();
        assert_eq!(snapshot.get(&Field::LastName), Some(odd));
    }

    #[tokio::test]
    async fn a_field_the_answer_did_not_carry_keeps_the_snapshots_value() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        let p = ProviderName("p".into());
        let run = s.begin_run("once").await.unwrap();
        let mut first = rec("a1", "x@e.co", "Ann", 1);
        first.record.projection.set(Field::Language, Some("de"));
        s.ingest_page(&p, run, &[first]).await.unwrap();
        merge_all(&s, run).await;
        let first_run = run;

        // Listed again without its language: unknown, so unchanged (and not written).
        let run = s.begin_run("once").await.unwrap();
        let mut again = rec("a1", "x@e.co", "Ann", 1);
        again.record.absent = vec![Field::Language];
        s.ingest_page(&p, run, &[again.clone()]).await.unwrap();
        assert_eq!(links(&s, "p").await, [("a1".into(), 1, None, first_run.0)]);

        // A real edit elsewhere keeps the language it did not carry.
        again.record.projection.set(Field::FirstName, Some("Anna"));
        s.ingest_page(&p, run, &[again]).await.unwrap();
        let observed: String = sqlx::query("SELECT observed FROM links")
            .fetch_one(s.pool())
            .await
            .unwrap()
            .get(0);
        let observed: Projection = serde_json::from_str(&observed).unwrap();
        assert_eq!(observed.get(&Field::Language), Some("de"));
        assert_eq!(observed.get(&Field::FirstName), Some("Anna"));
    }

    #[tokio::test]
    async fn the_key_of_the_listed_text_is_kept_and_forgotten_when_anything_else_changes_the_link()
    {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        let p = ProviderName("p".into());
        let run = s.begin_run("once").await.unwrap();
        let keyed = |mut o: Observed, key: i64| {
            o.record.listed_key = Some(key);
            o
        };
        s.ingest_page(&p, run, &[keyed(rec("a1", "x@e.co", "Ann", 1), 7)])
            .await
            .unwrap();
        merge_all(&s, run).await;
        let keys = s.listed_keys(&p).await.unwrap();
        assert_eq!(keys, [7].into_iter().collect());

        // The same record as another text (a field custsync does not sync changed):
        // unchanged, so nothing is observed, but the new key is kept.
        let run = s.begin_run("once").await.unwrap();
        s.ingest_page(&p, run, &[keyed(rec("a1", "x@e.co", "Ann", 1), 8)])
            .await
            .unwrap();
        assert_eq!(links(&s, "p").await[0].2, None);
        assert_eq!(s.listed_keys(&p).await.unwrap(), [8].into_iter().collect());

        // A changed record is observed, with its key.
        s.ingest_page(&p, run, &[keyed(rec("a1", "x@e.co", "Anna", 2), 9)])
            .await
            .unwrap();
        assert_eq!(links(&s, "p").await[0].2.as_deref(), Some("Anna"));
        assert_eq!(s.listed_keys(&p).await.unwrap(), [9].into_iter().collect());
        merge_all(&s, run).await;
        assert_eq!(
            s.listed_keys(&p).await.unwrap().len(),
            1,
            "a merge keeps it"
        );

        // A write custsync made there changes the snapshot: the key is forgotten, so
        // the next listing of the same text is compared with the new snapshot.
        let customer = crate::model::CustomerId(links(&s, "p").await[0].1);
        let written = rec("a1", "x@e.co", "Anne", 3).record;
        let op = crate::store::outbox::OutboxOp {
            id: 0,
            provider: p.clone(),
            customer,
            email: Some("x@e.co".into()),
            op: "update".into(),
            remote_id: Some(RemoteId("a1".into())),
            payload: written.projection.clone(),
            changed: vec![Field::FirstName],
            attempts: 0,
            maybe_applied: false,
        };
        let outcome = crate::store::outbox::Outcome::Written {
            op,
            record: written,
            action: "update",
            extras: Vec::new(),
        };
        s.record_outcomes(run, &[outcome]).await.unwrap();
        assert!(s.listed_keys(&p).await.unwrap().is_empty());
        s.ingest_page(&p, run, &[keyed(rec("a1", "x@e.co", "Anne", 3), 10)])
            .await
            .unwrap();
        assert_eq!(s.listed_keys(&p).await.unwrap().len(), 1);

        // Gone from the listing: the key is forgotten, so a record that comes back
        // as the same text is taken in again.
        s.record_deletions(run, &p, &[(customer, RemoteId("a1".into()))], false)
            .await
            .unwrap();
        assert!(s.listed_keys(&p).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_key_held_for_later_is_dropped_when_a_later_page_touches_its_link() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        let p = ProviderName("p".into());
        let run = s.begin_run("once").await.unwrap();
        let keyed = |mut o: Observed, key: i64| {
            o.record.listed_key = Some(key);
            o
        };
        s.ingest_page(&p, run, &[keyed(rec("a1", "x@e.co", "Ann", 1), 7)])
            .await
            .unwrap();
        merge_all(&s, run).await;

        // Seen unchanged as another text: the key is held, not written with the page.
        let mut rekeys = Rekeys::default();
        let page = [keyed(rec("a1", "x@e.co", "Ann", 1), 8)];
        s.ingest_listing_page(&p, run, &page, &mut rekeys)
            .await
            .unwrap();
        assert_eq!(rekeys.len(), 1);
        let stored = s.listed_keys(&p).await.unwrap();
        assert_eq!(stored, [7].into_iter().collect());

        // A later page of the same listing changes the record: the held key goes, and
        // writing what is held leaves the change and its key alone.
        let page = [keyed(rec("a1", "x@e.co", "Anna", 2), 9)];
        s.ingest_listing_page(&p, run, &page, &mut rekeys)
            .await
            .unwrap();
        assert!(rekeys.is_empty());
        s.write_rekeys(&p, &mut rekeys).await.unwrap();
        assert_eq!(links(&s, "p").await[0].2.as_deref(), Some("Anna"));
        let stored = s.listed_keys(&p).await.unwrap();
        assert_eq!(stored, [9].into_iter().collect());

        // Back to the snapshot's text: held, then written with the observed change
        // cleared (it went back).
        let page = [keyed(rec("a1", "x@e.co", "Ann", 1), 10)];
        s.ingest_listing_page(&p, run, &page, &mut rekeys)
            .await
            .unwrap();
        assert_eq!(links(&s, "p").await[0].2.as_deref(), Some("Anna"));
        s.write_rekeys(&p, &mut rekeys).await.unwrap();
        assert!(rekeys.is_empty());
        assert_eq!(links(&s, "p").await[0].2, None);
        let stored = s.listed_keys(&p).await.unwrap();
        assert_eq!(stored, [10].into_iter().collect());

        // A link that went before the held key is written is not brought back.
        let page = [keyed(rec("a1", "x@e.co", "Ann", 1), 11)];
        s.ingest_listing_page(&p, run, &page, &mut rekeys)
            .await
            .unwrap();
        sqlx::query("DELETE FROM links")
            .execute(s.pool())
            .await
            .unwrap();
        s.write_rekeys(&p, &mut rekeys).await.unwrap();
        assert!(links(&s, "p").await.is_empty());
    }

    /// Customers 1 to `n`.
    async fn customers(s: &Store, n: i64) {
        sqlx::query(
            "WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < $1)
             INSERT INTO customers (id, email, fields, updated_at, created_at)
             SELECT n, 'p' || n || '@e.co', '{}', 'now', 'now' FROM i",
        )
        .bind(n)
        .execute(s.pool())
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn every_key_is_read_whatever_the_number_of_slices() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        use super::super::links::KEYS_SLICE;
        let n = 2 * KEYS_SLICE + 7;
        customers(&s, n).await;
        sqlx::query(
            "INSERT INTO links (provider, remote_id, customer_id, snapshot, listed_key)
             SELECT 'p', 'r' || id, id, '{}', id * 3 FROM customers",
        )
        .execute(s.pool())
        .await
        .unwrap();
        // Each slice reads the keys' index in order: no sort, no look at a link row.
        for after in [false, true] {
            crate::store::reads_in_order(
                &s,
                &s.listed_keys_sql(after),
                3,
                "COVERING INDEX links_keys",
            )
            .await;
        }
        let keys = s.listed_keys(&ProviderName("p".into())).await.unwrap();
        assert_eq!(keys.len() as i64, n);
        for id in [1, KEYS_SLICE, KEYS_SLICE + 1, n] {
            assert!(keys.find(id * 3).is_some(), "{id}");
        }
        assert_eq!(keys.find(n * 3 + 1), None);
        // By remote id, whatever the number of slices; a link without a key has none.
        sqlx::query("UPDATE links SET listed_key = NULL WHERE customer_id = 5")
            .execute(s.pool())
            .await
            .unwrap();
        let wanted: Vec<String> = (1..=n).map(|id| format!("r{id}")).collect();
        let wanted: Vec<&str> = wanted.iter().map(String::as_str).chain(["r0"]).collect();
        let mut found = s
            .listed_keys_of(&ProviderName("p".into()), &wanted)
            .await
            .unwrap();
        found.sort_unstable_by_key(|(_, key)| *key);
        assert_eq!(found.len() as i64, n - 1);
        assert_eq!(found[0], ("r1".to_string(), 3));
        assert!(found
            .iter()
            .all(|(id, key)| *id == format!("r{}", key / 3) && *key != 15));
    }

    #[tokio::test]
    async fn the_vanished_are_found_among_every_slice_of_live_links() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        let n = 2 * super::super::links::LIVE_SLICE + 7;
        customers(&s, n).await;
        // Every link keyed but every tenth; 13 unmerged, 17 gone, 19 of a tombstoned
        // customer: none of those three can vanish.
        sqlx::query(
            "INSERT INTO links (provider, remote_id, customer_id, snapshot, listed_key, gone)
             SELECT 'p', 'r' || id, id, CASE WHEN id = 13 THEN NULL ELSE '{}' END,
                    CASE WHEN id % 10 = 0 THEN NULL ELSE id END, CASE WHEN id = 17 THEN 1 ELSE 0 END
             FROM customers",
        )
        .execute(s.pool())
        .await
        .unwrap();
        sqlx::query("UPDATE customers SET tombstoned_at = 'now' WHERE id = 19")
            .execute(s.pool())
            .await
            .unwrap();
        let p = ProviderName("p".into());
        // Listed: all but these, one in each slice and the last.
        let missing = [3, 13, 17, 19, 20, 20_005, 40_000, n];
        let listed = |id: &str, key: Option<i64>| {
            let id: i64 = id[1..].parse().unwrap();
            assert_eq!(key, (id % 10 != 0).then_some(id), "each link with its key");
            !missing.contains(&id)
        };
        let ids = |v: Vec<(CustomerId, RemoteId)>| {
            let mut ids: Vec<i64> = v.into_iter().map(|(c, _)| c.0).collect();
            ids.sort_unstable();
            ids
        };
        // Each slice reads its partial index in order: no sort, no scan of every link.
        for (unkeyed, index) in [(false, "links_live"), (true, "links_unkeyed")] {
            crate::store::reads_in_order(&s, &s.vanished_sql(unkeyed), 3, index).await;
        }
        let all = s.vanished_links(&p, false, listed).await.unwrap();
        assert_eq!(ids(all), [3, 20, 20_005, 40_000, n]);
        // Only those without a listed key.
        let unkeyed = s.vanished_links(&p, true, listed).await.unwrap();
        assert_eq!(ids(unkeyed), [20, 40_000]);
    }

    #[tokio::test]
    async fn tombstoned_and_forgotten_people_are_not_linked_again() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        let p = ProviderName("p".into());
        let run = s.begin_run("once").await.unwrap();
        s.ingest_page(&p, run, &[rec("a1", "x@e.co", "Ann", 1)])
            .await
            .unwrap();
        sqlx::query("UPDATE customers SET tombstoned_at = 'now'")
            .execute(s.pool())
            .await
            .unwrap();
        sqlx::query("INSERT INTO customers (email, fields, updated_at, created_at, email_hash) VALUES (NULL, '{}', 'now', 'now', $1)")
            .bind(email_hash(&Email::parse("f@e.co").unwrap()))
            .execute(s.pool())
            .await
            .unwrap();
        let q = ProviderName("q".into());
        let page = [rec("q1", "x@e.co", "Ann", 1), rec("q2", "f@e.co", "Fay", 1)];
        assert!(s.ingest_page(&q, run, &page).await.unwrap().is_empty());
        assert!(links(&s, "q").await.is_empty());
    }
}
