//! One page of a listing into the store: each record linked (by its remote id, else by
//! email) and its listed state kept as `observed` for the merge.
//!
//! Owns the page's round trips to SQLite, which are most of a listing's cost. What the
//! page's records need to know (their links, the customers with their emails, who was
//! forgotten) is read in a few queries up front and kept true as the page is stored,
//! so each record costs at most the statements that change something.

use std::collections::{HashMap, HashSet};

use sqlx::{AnyConnection, Row};

use super::links::{email_hash, json, projection, Duplicate, Observed};
use super::{now_text, parse_time, time_text, Result, RunId, Store};
use crate::model::{Projection, ProviderName, RemoteId};

impl Store {
    /// Stores one page of a listing in one transaction, records in page order.
    /// Returns the records not linked as duplicates.
    pub async fn ingest_page(
        &self,
        provider: &ProviderName,
        run: RunId,
        observed: &[Observed],
    ) -> Result<Vec<Duplicate>> {
        let _one_at_a_time = self.ingest.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut page = PageState::load(&mut tx, provider, observed).await?;
        let mut seen = Unchanged::new(provider);
        let mut duplicates = Vec::new();
        for o in observed {
            let id = &o.record.id.0;
            match page.known.get(id) {
                Some(k) => {
                    // A field the answer did not carry keeps the value the snapshot has.
                    let listed = o.record.completed(k.snapshot.as_ref());
                    if k.tombstoned || k.snapshot.as_ref() == Some(listed.as_ref()) {
                        seen.push(id);
                    } else {
                        seen.flush(&mut tx).await?;
                        observe(&mut tx, provider, run, o, &listed).await?;
                    }
                }
                None => {
                    seen.flush(&mut tx).await?;
                    if let Some(d) = link_new(&mut tx, provider, run, o, &mut page).await? {
                        duplicates.push(d);
                    }
                }
            }
        }
        seen.flush(&mut tx).await?;
        tx.commit().await?;
        Ok(duplicates)
    }
}

/// What a known link's record needs: nothing to merge when it equals the snapshot, or
/// when its customer is tombstoned.
struct Known {
    snapshot: Option<Projection>,
    tombstoned: bool,
}

/// What the page's records need to know, as the store holds it while the page is
/// stored. Storing changes it in three ways only, each mirrored here: a customer is
/// created, a link is created, a link is deleted (a duplicate replaced). Nothing else
/// that is kept here changes during a page.
struct PageState {
    /// The provider's links with the page's remote ids.
    known: HashMap<String, Known>,
    /// Customers with the page's emails: `(id, tombstoned)`. Read only when a record of
    /// the page is not linked yet.
    customers: HashMap<String, (i64, bool)>,
    /// Hashes of the page's emails that `forget` erased.
    forgotten: HashSet<String>,
}

impl PageState {
    async fn load(
        conn: &mut AnyConnection,
        provider: &ProviderName,
        observed: &[Observed],
    ) -> Result<PageState> {
        let ids: Vec<&str> = observed.iter().map(|o| o.record.id.0.as_str()).collect();
        let rows = sqlx::query(&format!(
            "SELECT l.remote_id, l.snapshot, c.tombstoned_at FROM links l JOIN customers c ON c.id = l.customer_id
             WHERE l.provider = $1 AND l.remote_id IN {}",
            super::texts(super::backend_of(conn), 2)
        ))
        .bind(&provider.0)
        .bind(json(&ids))
        .fetch_all(&mut *conn)
        .await?;
        let mut known = HashMap::with_capacity(rows.len());
        for r in rows {
            let k = Known {
                snapshot: projection(r.get(1))?,
                tombstoned: r.get::<Option<String>, _>(2).is_some(),
            };
            known.insert(r.get(0), k);
        }
        let mut page = PageState {
            known,
            customers: HashMap::new(),
            forgotten: HashSet::new(),
        };
        // Every email of the page, so that a record unlinked while the page is stored
        // (a duplicate replaced) still finds its customer here.
        if observed
            .iter()
            .any(|o| !page.known.contains_key(&o.record.id.0))
        {
            page.load_people(conn, observed).await?;
        }
        Ok(page)
    }

    async fn load_people(&mut self, conn: &mut AnyConnection, observed: &[Observed]) -> Result<()> {
        let emails: Vec<&str> = observed.iter().map(|o| o.email.as_str()).collect();
        let rows = sqlx::query(&format!(
            "SELECT email, id, tombstoned_at FROM customers WHERE email IN {}",
            super::texts(super::backend_of(conn), 1)
        ))
        .bind(json(&emails))
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            let tombstoned = r.get::<Option<String>, _>(2).is_some();
            self.customers.insert(r.get(0), (r.get(1), tombstoned));
        }
        let hashes: Vec<String> = observed.iter().map(|o| email_hash(&o.email)).collect();
        let rows = sqlx::query(&format!(
            "SELECT email_hash FROM customers WHERE email IS NULL AND email_hash IN {}",
            super::texts(super::backend_of(conn), 1)
        ))
        .bind(json(&hashes))
        .fetch_all(&mut *conn)
        .await?;
        self.forgotten = rows.into_iter().map(|r| r.get(0)).collect();
        Ok(())
    }

    fn linked(&mut self, remote_id: &str) {
        let link = Known {
            snapshot: None,
            tombstoned: false,
        };
        self.known.insert(remote_id.to_string(), link);
    }
}

/// Known links seen unchanged: an observed state left on one (a change that went
/// back) is cleared, in one statement. Flushed before any other statement of the
/// page, so the page's order of effects is kept.
struct Unchanged<'a> {
    provider: &'a ProviderName,
    ids: Vec<&'a str>,
}

impl<'a> Unchanged<'a> {
    fn new(provider: &'a ProviderName) -> Self {
        Self {
            provider,
            ids: Vec::new(),
        }
    }

    fn push(&mut self, id: &'a str) {
        self.ids.push(id);
    }

    async fn flush(&mut self, conn: &mut AnyConnection) -> Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        // Only a row with an observed state left (a change that went back) is written:
        // a record seen unchanged costs no write (what the listing saw is in memory).
        sqlx::query(&format!(
            "UPDATE links SET observed = NULL WHERE provider = $1 AND observed IS NOT NULL AND remote_id IN {}",
            super::texts(super::backend_of(conn), 2)
        ))
        .bind(&self.provider.0)
        .bind(json(&self.ids))
        .execute(&mut *conn)
        .await?;
        self.ids.clear();
        Ok(())
    }
}

/// A known record that changed: its `listed` state is kept for the merge.
async fn observe(
    conn: &mut AnyConnection,
    provider: &ProviderName,
    run: RunId,
    o: &Observed,
    listed: &Projection,
) -> Result<()> {
    sqlx::query("UPDATE links SET seen_run = $1, observed = $2, observed_at = $3 WHERE provider = $4 AND remote_id = $5")
        .bind(run.0)
        .bind(json(listed))
        .bind(time_text(o.time))
        .bind(&provider.0)
        .bind(&o.record.id.0)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

const INSERT_LINK: &str = "INSERT INTO links (provider, remote_id, customer_id, observed, observed_at, seen_run) VALUES ($1, $2, $3, $4, $5, $6)";

/// A new, empty customer and its first link, answering the customer's id.
/// SQLite runs the two statements as one query; PostgreSQL one statement with a CTE.
const INSERT_CUSTOMER_AND_LINK: [&str; 2] = [
    "INSERT INTO customers (email, fields, updated_at, created_at) VALUES ($1, '{}', $2, $3);
     INSERT INTO links (provider, remote_id, customer_id, observed, observed_at, seen_run)
     VALUES ($4, $5, last_insert_rowid(), $6, $7, $8) RETURNING customer_id",
    "WITH c AS (INSERT INTO customers (email, fields, updated_at, created_at) VALUES ($1, '{}', $2, $3) RETURNING id)
     INSERT INTO links (provider, remote_id, customer_id, observed, observed_at, seen_run)
     SELECT $4, $5, c.id, $6, $7, $8 FROM c RETURNING customer_id",
];

/// Links a record whose remote id is not linked yet to the customer with its email,
/// created empty if there is none (not for a tombstoned or forgotten person). A second
/// record of the same provider with the same email is a duplicate; the most recently
/// updated one is linked while neither has been merged yet.
async fn link_new(
    conn: &mut AnyConnection,
    provider: &ProviderName,
    run: RunId,
    o: &Observed,
    page: &mut PageState,
) -> Result<Option<Duplicate>> {
    let email = o.email.as_str();
    let customer_id = match page.customers.get(email) {
        Some((_, true)) => return Ok(None),
        Some((id, false)) => *id,
        None if page.forgotten.contains(&email_hash(&o.email)) => return Ok(None),
        None => {
            // A new customer has no links yet (links always point at a customer that
            // exists): customer and link are written at once.
            let now = now_text();
            let rows = sqlx::query(INSERT_CUSTOMER_AND_LINK[super::backend_of(conn) as usize])
                .bind(email)
                .bind(&now)
                .bind(&now)
                .bind(&provider.0)
                .bind(&o.record.id.0)
                .bind(json(&o.record.projection))
                .bind(time_text(o.time))
                .bind(run.0)
                .fetch_all(&mut *conn)
                .await?;
            let id: i64 = rows.first().ok_or(sqlx::Error::RowNotFound)?.get(0);
            page.customers.insert(email.to_string(), (id, false));
            page.linked(&o.record.id.0);
            return Ok(None);
        }
    };
    link_to_existing(conn, provider, run, o, customer_id, page).await
}

/// `link_new` for a person who has a customer already, maybe with a record of this
/// provider linked.
async fn link_to_existing(
    conn: &mut AnyConnection,
    provider: &ProviderName,
    run: RunId,
    o: &Observed,
    customer_id: i64,
    page: &mut PageState,
) -> Result<Option<Duplicate>> {
    let other = sqlx::query("SELECT remote_id, snapshot, observed_at, gone FROM links WHERE provider = $1 AND customer_id = $2")
        .bind(&provider.0)
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?;
    let mut replaced = None;
    if let Some(row) = other {
        let other_id = RemoteId(row.get(0));
        let merged = row.get::<Option<String>, _>(1).is_some();
        let other_time = row
            .get::<Option<String>, _>(2)
            .as_deref()
            .and_then(parse_time);
        let gone = row.get::<i64, _>(3) != 0;
        let newer = other_time.is_none_or(|t| o.time > t);
        if !gone && (merged || !newer) {
            return Ok(Some(Duplicate {
                remote_id: o.record.id.clone(),
                email: o.email.clone(),
            }));
        }
        sqlx::query("DELETE FROM links WHERE provider = $1 AND remote_id = $2")
            .bind(&provider.0)
            .bind(&other_id.0)
            .execute(&mut *conn)
            .await?;
        page.known.remove(&other_id.0);
        replaced = (!gone).then_some(Duplicate {
            remote_id: other_id,
            email: o.email.clone(),
        });
    }
    sqlx::query(INSERT_LINK)
        .bind(&provider.0)
        .bind(&o.record.id.0)
        .bind(customer_id)
        .bind(json(&o.record.projection))
        .bind(time_text(o.time))
        .bind(run.0)
        .execute(&mut *conn)
        .await?;
    page.linked(&o.record.id.0);
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::config::StorePath;
    use crate::model::{Email, Field};
    use crate::providers::RemoteRecord;
    use crate::store::links::CustomerUpdate;

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
                merged: links
                    .iter()
                    .filter(|l| l.observed.is_some())
                    .map(|l| (l.provider.clone(), l.remote_id.clone()))
                    .collect(),
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
