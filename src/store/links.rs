//! Customers and their links to provider records: what a listing stores page by page,
//! what the merge reads in batches and writes back with its plan.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{Any, Row, Transaction};

use super::rows::Rows;
use super::{audit::AuditEntry, now_text, parse_time, Backend, Result, RunId, Store};
use crate::model::{CustomerId, Email, Projection, ProviderName, RemoteId};
use crate::providers::RemoteRecord;

/// A listed record with a valid email, ready to be stored.
#[derive(Debug, Clone)]
pub struct Observed {
    pub record: RemoteRecord,
    pub email: Email,
    /// The remote `updated_at`, or when custsync first saw this version.
    pub time: DateTime<Utc>,
}

/// A linked record listed with a new email that another customer has (DESIGN 4c
/// Identity): it is not merged, and nothing is pushed for either customer, until the
/// records differ again.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailClaim {
    /// The record's own customer.
    pub customer: CustomerId,
    /// The customer whose email the record now has.
    pub owner: CustomerId,
    pub provider: ProviderName,
    pub remote_id: RemoteId,
    /// The email as the record was listed with it.
    pub email: String,
}

/// A record not linked because another record of the same provider has its email.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    pub remote_id: RemoteId,
    pub email: Email,
}

#[derive(Debug, Clone)]
pub struct CustomerRow {
    pub id: CustomerId,
    pub email: Option<String>,
    pub fields: Projection,
    /// When a change was last applied; `None` for a customer not merged yet.
    pub updated_at: Option<DateTime<Utc>>,
    pub tombstoned: bool,
    /// Providers holding a parked operation for this customer (not retried by itself).
    pub parked: HashSet<ProviderName>,
    /// Providers whose last create for this customer may have reached them.
    pub maybe_created: HashSet<ProviderName>,
    /// The customer has operations waiting in the outbox.
    pub has_open_ops: bool,
}

#[derive(Debug, Clone)]
pub struct LinkRow {
    pub provider: ProviderName,
    pub remote_id: RemoteId,
    pub snapshot: Option<Projection>,
    pub observed: Option<Projection>,
    pub observed_at: Option<DateTime<Utc>>,
    pub gone: bool,
}

/// An operation planned for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOp {
    pub provider: ProviderName,
    pub op: &'static str,
    pub remote_id: Option<RemoteId>,
    pub payload: Projection,
    pub changed: Vec<crate::model::Field>,
}

/// What the merge decided for one customer.
#[derive(Debug, Clone, Default)]
pub struct CustomerUpdate {
    pub id: Option<CustomerId>,
    /// The new canonical record, when it changed.
    pub fields: Option<Projection>,
    /// The customer's email as it was loaded: a new record with that same email is
    /// written together with the batch's others (no other customer can hold it).
    pub stored_email: Option<String>,
    /// The customer's observed records were merged: each becomes its link's snapshot.
    pub merged: bool,
    /// The plan for this customer; replaces any open operation it had.
    pub ops: Vec<NewOp>,
    pub audit: Vec<AuditEntry>,
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub(super) fn projection(text: Option<String>) -> Result<Option<Projection>> {
    Ok(match text {
        Some(t) => Some(serde_json::from_str(&t)?),
        None => None,
    })
}

/// The columns of a customer the merge reads, in [`CustomerTuple`]'s order.
const CUSTOMER_COLUMNS: &str = "id, email, fields, updated_at, tombstoned_at";
/// `id, email, fields, updated_at, tombstoned_at` of a customer.
type CustomerTuple = (i64, Option<String>, String, String, Option<String>);

/// How many links [`Store::listed_keys`] reads at a time.
pub(super) const KEYS_SLICE: i64 = 10_000;

/// The links [`Store::listed_keys`] reads, each from the index `links_keys`.
const KEYED: &str = "FROM links WHERE provider = $1 AND listed_key IS NOT NULL AND gone = 0";

/// How many live links [`Store::vanished_links`] reads at a time.
pub(super) const LIVE_SLICE: i64 = 20_000;

impl Store {
    /// Links of `provider` whose record a complete listing could have returned (live,
    /// merged, of a customer not tombstoned) and that `listed` says it did not return
    /// (given each link's remote id and the key of the text it was last listed as):
    /// they vanished. With `unkeyed_only`, only those without a listed key (see
    /// [`crate::providers::Known`]), each from its own partial index.
    ///
    /// Read in slices of [`LIVE_SLICE`] links in the order of the customer's id, one row
    /// back for each, keeping only the vanished: no statement reads every link of the
    /// provider (at a million links one did for seconds, holding SQLite's only
    /// connection from the lease's renewal), and no list of every link is ever held.
    pub async fn vanished_links(
        &self,
        provider: &ProviderName,
        unkeyed_only: bool,
        listed: impl Fn(&str, Option<i64>) -> bool,
    ) -> Result<Vec<(CustomerId, RemoteId)>> {
        let sql = self.vanished_sql(unkeyed_only);
        let mut vanished = Vec::new();
        let mut after = 0i64;
        loop {
            let rows: Vec<(i64, String, Option<i64>)> = super::decode_rows(
                sqlx::query_scalar(&sql)
                    .bind(&provider.0)
                    .bind(after)
                    .bind(LIVE_SLICE)
                    .fetch_one(&self.pool)
                    .await?,
            )?;
            // The greatest id read (an aggregate need not keep the subquery's order).
            let last = rows.iter().map(|(customer, ..)| *customer).max();
            let full = rows.len() as i64 == LIVE_SLICE;
            vanished.extend(
                rows.into_iter()
                    .filter(|(_, remote_id, key)| !listed(remote_id, *key))
                    .map(|(customer, remote_id, _)| (CustomerId(customer), RemoteId(remote_id))),
            );
            match last {
                Some(last) if full => after = last,
                _ => return Ok(vanished),
            }
        }
    }

    /// One slice of [`Store::vanished_links`]: `$1` the provider, `$2` the greatest
    /// customer id read so far, `$3` the slice's size.
    pub(super) fn vanished_sql(&self, unkeyed_only: bool) -> String {
        let unkeyed = if unkeyed_only {
            "AND l.listed_key IS NULL"
        } else {
            ""
        };
        format!(
            "SELECT {} FROM (SELECT l.customer_id, l.remote_id, l.listed_key FROM links l
               JOIN customers c ON c.id = l.customer_id
               WHERE l.provider = $1 AND l.gone = 0 AND l.snapshot IS NOT NULL {unkeyed}
                 AND l.customer_id > $2 AND c.tombstoned_at IS NULL
               ORDER BY l.customer_id LIMIT $3) AS l",
            self.json_rows("l.customer_id, l.remote_id, l.listed_key")
        )
    }

    /// The keys of the text the live links of `provider` were last listed as (see
    /// [`crate::providers::Known`]). Read in the keys' order from their own index, in
    /// slices of [`KEYS_SLICE`] (one row back for each), and packed as they come: no
    /// text of every link, nor every key as read, is ever held.
    pub async fn listed_keys(
        &self,
        provider: &ProviderName,
    ) -> Result<crate::providers::StoredKeys> {
        let expected: i64 = sqlx::query_scalar(&format!("SELECT count(*) {KEYED}"))
            .bind(&provider.0)
            .fetch_one(&self.pool)
            .await?;
        let mut stored = crate::providers::StoredKeys::with_capacity(expected.max(0) as usize);
        self.each_listed_key(provider, |key| stored.push(key))
            .await?;
        Ok(stored.finish())
    }

    /// Calls `f` with the listed key of every live link of `provider`, in the keys'
    /// order (as signed), one slice of [`KEYS_SLICE`] read at a time.
    pub async fn each_listed_key(
        &self,
        provider: &ProviderName,
        mut f: impl FnMut(i64),
    ) -> Result<()> {
        let (first, next) = (self.listed_keys_sql(false), self.listed_keys_sql(true));
        let mut after = None;
        loop {
            let query = sqlx::query_scalar(if after.is_some() { &next } else { &first })
                .bind(&provider.0)
                .bind(KEYS_SLICE);
            let text: Option<String> = match after {
                Some(after) => query.bind(after),
                None => query,
            }
            .fetch_one(&self.pool)
            .await?;
            let mut keys: Vec<i64> = serde_json::from_str(text.as_deref().unwrap_or("[]"))?;
            // An aggregate need not keep the subquery's order.
            keys.sort_unstable();
            keys.iter().copied().for_each(&mut f);
            match keys.last() {
                Some(&last) if keys.len() as i64 == KEYS_SLICE => after = Some(last),
                _ => return Ok(()),
            }
        }
    }

    /// One slice of [`Store::listed_keys`]: `$1` the provider, `$2` the slice's size,
    /// and with `after`, `$3` the greatest key read so far.
    pub(super) fn listed_keys_sql(&self, after: bool) -> String {
        let keys = match self.backend {
            Backend::Sqlite => "json_group_array(listed_key)",
            Backend::Postgres => "COALESCE(json_agg(listed_key), '[]'::json)::text",
        };
        let after = if after { "AND listed_key > $3" } else { "" };
        format!(
            "SELECT {keys} FROM (SELECT listed_key {KEYED} {after}
               ORDER BY listed_key LIMIT $2) AS l"
        )
    }

    /// The listed keys of the live links of `provider` with the remote ids `ids`, as
    /// (remote id, key): what a listing looks up for the records it skipped, to tell
    /// which of the links it knew by key they are.
    pub async fn listed_keys_of(
        &self,
        provider: &ProviderName,
        ids: &[&str],
    ) -> Result<Vec<(String, i64)>> {
        let sql = format!(
            "SELECT {} FROM links l
             WHERE l.provider = $1 AND l.listed_key IS NOT NULL AND l.gone = 0 AND l.remote_id {}",
            self.json_rows("l.remote_id, l.listed_key"),
            self.in_texts(2)
        );
        let mut found = Vec::new();
        for chunk in ids.chunks(KEYS_SLICE as usize) {
            found.extend(super::decode_rows::<(String, i64)>(
                sqlx::query_scalar(&sql)
                    .bind(&provider.0)
                    .bind(json(&chunk))
                    .fetch_one(&self.pool)
                    .await?,
            )?);
        }
        Ok(found)
    }

    /// Linked records observed with an email other than their snapshot's that belongs
    /// to another customer (not tombstoned, not forgotten). Emails compare as
    /// [`Email`] holds them, so a change of spelling (case, NFC, punycode) is none.
    pub async fn email_claims(&self) -> Result<Vec<EmailClaim>> {
        let rows = sqlx::query(self.sql(EMAIL_CLAIMS_SQLITE, EMAIL_CLAIMS_POSTGRES))
            .fetch_all(&self.pool)
            .await?;
        let mut moved = Vec::new();
        for r in rows {
            let listed: Option<String> = r.get(3);
            let before: Option<String> = r.get(4);
            let Some((raw, email)) = listed.and_then(|l| Some((l.clone(), Email::parse(&l).ok()?)))
            else {
                continue;
            };
            if before.and_then(|b| Email::parse(&b).ok()).as_ref() == Some(&email) {
                continue;
            }
            moved.push((
                CustomerId(r.get(0)),
                ProviderName(r.get(1)),
                RemoteId(r.get(2)),
                raw,
                email,
            ));
        }
        if moved.is_empty() {
            return Ok(Vec::new());
        }
        let emails: Vec<&str> = moved.iter().map(|m| m.4.as_str()).collect();
        let owners: HashMap<String, i64> = sqlx::query(&format!(
            "SELECT email, id FROM customers WHERE email {}",
            self.in_texts(1)
        ))
        .bind(json(&emails))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        Ok(moved
            .into_iter()
            .filter_map(|(customer, provider, remote_id, raw, email)| {
                let owner = CustomerId(*owners.get(email.as_str())?);
                (owner != customer).then_some(EmailClaim {
                    customer,
                    owner,
                    provider,
                    remote_id,
                    email: raw,
                })
            })
            .collect())
    }

    /// Puts customers' emails stored before they were compared in NFC with ASCII
    /// domains (trimmed and lower-cased only) in their present form, so that lookups,
    /// `forget` and the unique index see one form. Only emails with a non-ASCII
    /// character can differ; one whose present form another customer already holds is
    /// left as it is (and answered, to be reported).
    ///
    /// Once every email is in its present form the SQLite file says so
    /// (`PRAGMA user_version` = [`EMAILS_IN_PRESENT_FORM`]; custsync writes every email
    /// in that form), and later opens skip the scan of every customer (some 0.04 s
    /// of every run at 100,000 customers).
    pub async fn renormalize_emails(&self) -> Result<Vec<String>> {
        // PostgreSQL stores came after NFC: every email there is in its present form.
        if self.backend == super::Backend::Postgres {
            return Ok(Vec::new());
        }
        let form: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&self.pool)
            .await?;
        if form >= EMAILS_IN_PRESENT_FORM {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT id, email FROM customers WHERE email IS NOT NULL AND email GLOB '*[^ -~]*'",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut left = Vec::new();
        for r in rows {
            let (id, stored): (i64, String) = (r.get(0), r.get(1));
            let Ok(email) = Email::parse(&stored) else {
                continue;
            };
            if email.as_str() == stored {
                continue;
            }
            let moved = sqlx::query(
                "UPDATE customers SET email = $1 WHERE id = $2 AND NOT EXISTS (SELECT 1 FROM customers WHERE email = $3)",
            )
            .bind(email.as_str())
            .bind(id)
            .bind(email.as_str())
            .execute(&self.pool)
            .await?;
            if moved.rows_affected() == 0 {
                left.push(stored);
            }
        }
        // Emails left in two forms are looked at (and reported) again next time.
        if left.is_empty() {
            sqlx::query(&format!("PRAGMA user_version = {EMAILS_IN_PRESENT_FORM}"))
                .execute(&self.pool)
                .await?;
        }
        Ok(left)
    }

    /// How many live, merged links a provider has (the base of the delete guard).
    pub async fn linked_count(&self, provider: &ProviderName) -> Result<i64> {
        let n = sqlx::query(
            "SELECT COUNT(*) FROM links WHERE provider = $1 AND gone = 0 AND snapshot IS NOT NULL",
        )
        .bind(&provider.0)
        .fetch_one(&self.pool)
        .await?
        .get(0);
        Ok(n)
    }

    /// Records deletions seen in `provider`: the links are marked gone and, when
    /// `tombstone`, their customers are tombstoned (to be deleted everywhere).
    pub async fn record_deletions(
        &self,
        run: RunId,
        provider: &ProviderName,
        gone: &[(CustomerId, RemoteId)],
        tombstone: bool,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let now = now_text();
        for (customer, remote) in gone {
            sqlx::query(
                "UPDATE links SET gone = 1, observed = NULL, listed_key = NULL WHERE provider = $1 AND remote_id = $2",
            )
            .bind(&provider.0)
            .bind(&remote.0)
            .execute(&mut *tx)
            .await?;
            if tombstone {
                sqlx::query(
                    "UPDATE customers SET tombstoned_at = $1 WHERE id = $2 AND tombstoned_at IS NULL",
                )
                .bind(&now)
                .bind(customer.0)
                .execute(&mut *tx)
                .await?;
            }
            let action = if tombstone { "tombstone" } else { "vanished" };
            let entry = AuditEntry::new(
                action,
                Some(*customer),
                Some(provider),
                serde_json::json!({"remote_id": remote.0}),
            );
            entry.insert(&mut tx, run).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` customers with id above `after`, each with its links, parked
    /// operations and doubtful creates.
    pub async fn load_batch(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(CustomerRow, Vec<LinkRow>)>> {
        let sql = format!(
            "SELECT {} FROM (SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id > $1 ORDER BY id LIMIT $2) AS c",
            self.json_rows(CUSTOMER_COLUMNS)
        );
        let rows = super::decode_rows(
            sqlx::query_scalar(&sql)
                .bind(after)
                .bind(limit)
                .fetch_one(&self.pool)
                .await?,
        )?;
        self.with_links(rows).await
    }

    /// Like [`Store::load_batch`], only the customers with a link observed changed
    /// (or new), an operation in the outbox, or in `touched` (a record vanished).
    ///
    /// Of the observed links and of the outbox, each batch reads only the first
    /// `limit` customers after `after`, from their indexes: the first `limit` of the
    /// three sets together are among them. Asked for every customer in the outbox,
    /// PostgreSQL, whose statistics were taken while the outbox held a first run's
    /// 400,000 operations, scanned all of them again for each customer once it was
    /// empty: more than nine minutes for one batch at 100,000 people.
    pub async fn load_changed_batch(
        &self,
        after: i64,
        limit: i64,
        touched: &[i64],
    ) -> Result<Vec<(CustomerRow, Vec<LinkRow>)>> {
        let rows = super::decode_rows(
            sqlx::query_scalar(&self.changed_batch_sql())
                .bind(after)
                .bind(limit)
                .bind(json(&touched))
                .fetch_one(&self.pool)
                .await?,
        )?;
        self.with_links(rows).await
    }

    /// The statement of [`Store::load_changed_batch`]: `$1` after, `$2` limit, `$3`
    /// the touched ids. Public for the tests of its plan.
    #[doc(hidden)]
    pub fn changed_batch_sql(&self) -> String {
        format!(
            "SELECT {} FROM (SELECT {CUSTOMER_COLUMNS} FROM customers
             WHERE id > $1
               AND (id IN (SELECT customer_id FROM (SELECT DISTINCT customer_id FROM links
                             WHERE observed IS NOT NULL AND customer_id > $1
                             ORDER BY customer_id LIMIT $2) AS l)
                    OR id IN (SELECT customer_id FROM (SELECT DISTINCT customer_id FROM outbox
                                WHERE customer_id > $1 ORDER BY customer_id LIMIT $2) AS o)
                    OR id {})
             ORDER BY id LIMIT $2) AS c",
            self.json_rows(CUSTOMER_COLUMNS),
            self.in_ints(3)
        )
    }

    /// The customers of `rows`, each with its links, parked operations and doubtful
    /// creates.
    async fn with_links(
        &self,
        mut rows: Vec<CustomerTuple>,
    ) -> Result<Vec<(CustomerRow, Vec<LinkRow>)>> {
        let mut conn = self.pool.acquire().await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // An aggregate's order is not promised: the batch is in id order again.
        rows.sort_unstable_by_key(|r| r.0);
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let ids = json(&ids);
        let mut links: HashMap<i64, Vec<LinkRow>> = HashMap::new();
        type LinkTuple = (
            i64,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
        );
        let link_rows: Vec<LinkTuple> = super::decode_rows(
            sqlx::query_scalar(&format!(
                "SELECT {} FROM links WHERE customer_id {}",
                self.json_rows(
                    "customer_id, provider, remote_id, snapshot, observed, observed_at, gone"
                ),
                self.in_ints(1)
            ))
            .bind(&ids)
            .fetch_one(&mut *conn)
            .await?,
        )?;
        for (customer, provider, remote_id, snapshot, observed, observed_at, gone) in link_rows {
            links.entry(customer).or_default().push(LinkRow {
                provider: ProviderName(provider),
                remote_id: RemoteId(remote_id),
                snapshot: projection(snapshot)?,
                observed: projection(observed)?,
                observed_at: observed_at.as_deref().and_then(parse_time),
                gone: gone != 0,
            });
        }
        let mut parked: HashMap<i64, HashSet<ProviderName>> = HashMap::new();
        let mut maybe: HashMap<i64, HashSet<ProviderName>> = HashMap::new();
        let mut open: HashSet<i64> = HashSet::new();
        let op_rows = sqlx::query(
            &format!(
                "SELECT customer_id, provider, state, op, maybe_applied FROM outbox WHERE customer_id {}",
                self.in_ints(1)
            ),
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        for r in op_rows {
            let provider = ProviderName(r.get(1));
            let customer: i64 = r.get(0);
            if r.get::<String, _>(2) == "parked" {
                parked.entry(customer).or_default().insert(provider);
                continue;
            }
            open.insert(customer);
            if r.get::<String, _>(3) == "create" && r.get::<i64, _>(4) != 0 {
                maybe.entry(customer).or_default().insert(provider);
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for (id, email, fields, updated_at, tombstoned_at) in rows {
            let fields: Projection = serde_json::from_str(&fields)?;
            let updated_at = if fields.is_empty() {
                None
            } else {
                parse_time(&updated_at)
            };
            let row = CustomerRow {
                id: CustomerId(id),
                email,
                fields,
                updated_at,
                tombstoned: tombstoned_at.is_some(),
                parked: parked.remove(&id).unwrap_or_default(),
                maybe_created: maybe.remove(&id).unwrap_or_default(),
                has_open_ops: open.contains(&id),
            };
            out.push((row, links.remove(&id).unwrap_or_default()));
        }
        Ok(out)
    }

    /// Writes what the merge decided for a batch, with its plan, in one transaction.
    /// Returns customers whose new email another customer already has (left unchanged).
    ///
    /// Customers' records are written one by one, in order (a new email is checked
    /// against the ones written before it); links, outbox and audit are written for
    /// the whole batch at once: each customer's touch only its own rows, so the order
    /// between customers does not matter there, and rows are inserted in batch order.
    pub async fn save_batch(
        &self,
        run: RunId,
        updates: &[CustomerUpdate],
    ) -> Result<Vec<(CustomerId, String)>> {
        let updates: Vec<(CustomerId, &CustomerUpdate)> =
            updates.iter().filter_map(|u| Some((u.id?, u))).collect();
        let mut tx = self.pool.begin().await?;
        let mut refused = Vec::new();
        let now = now_text();
        // New records that keep their email: one statement for all. The others, whose
        // email changes, one by one, each checked against every other customer's.
        let mut texts = Vec::new();
        for (id, u) in &updates {
            let Some(fields) = &u.fields else { continue };
            let keeps_email = fields
                .email()
                .is_some_and(|e| Some(e.as_str()) == u.stored_email.as_deref());
            if keeps_email {
                texts.push((id.0, json(fields)));
            } else if !save_fields(&mut tx, *id, fields, &now).await? {
                refused.push((*id, "the new email belongs to another customer".to_string()));
            }
        }
        let mut same_email = Rows::with_capacity(2, texts.len());
        for (id, fields) in &texts {
            same_email.push([(*id).into(), fields.into()]);
        }
        // An upsert finds each row by its key (an UPDATE … FROM a list may scan the
        // table); only ids that exist are given, so nothing is inserted.
        same_email
            .execute(
                &mut tx,
                &[now.as_str().into()],
                "INSERT INTO customers (id, fields, updated_at, created_at)
                 SELECT column1, column2, $1, $1 FROM {rows} AS v
                 WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = v.column1)
                 ON CONFLICT (id) DO UPDATE SET fields = excluded.fields, updated_at = excluded.updated_at",
                "INSERT INTO customers (id, fields, updated_at, created_at)
                 SELECT (e->>0)::BIGINT, e->>1, $1, $1
                 FROM jsonb_array_elements($2::jsonb) AS e WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = (e->>0)::BIGINT)
                 ON CONFLICT (id) DO UPDATE SET fields = EXCLUDED.fields, updated_at = EXCLUDED.updated_at",
            )
            .await?;
        // Every observed record of a merged customer is what was merged: one statement
        // by customer (the partial index of observed links), not one per link.
        let merged: Vec<i64> = updates
            .iter()
            .filter(|(_, u)| u.merged)
            .map(|(id, _)| id.0)
            .collect();
        if !merged.is_empty() {
            sqlx::query(&format!(
                "UPDATE links SET snapshot = observed, observed = NULL
                 WHERE customer_id {} AND observed IS NOT NULL",
                super::in_ints(super::backend_of(&tx), 1)
            ))
            .bind(json(&merged))
            .execute(&mut *tx)
            .await?;
        }
        replace_ops(&mut tx, run, &updates, &now).await?;
        let audit: Vec<&AuditEntry> = updates.iter().flat_map(|(_, u)| &u.audit).collect();
        AuditEntry::insert_all(&audit, &mut tx, run).await?;
        tx.commit().await?;
        Ok(refused)
    }
}

/// Writes a customer's new canonical record. False when its new email belongs to
/// another customer: then the record is written with the email it had.
async fn save_fields(
    tx: &mut Transaction<'_, Any>,
    id: CustomerId,
    fields: &Projection,
    now: &str,
) -> Result<bool> {
    const UPDATE: &str =
        "UPDATE customers SET fields = $1, updated_at = $2, email = COALESCE($3, email) WHERE id = $4";
    let email = fields.email();
    if let Some(e) = &email {
        // The usual case in one statement: the email is nobody else's.
        let done = sqlx::query(&format!(
            "{UPDATE} AND NOT EXISTS (SELECT 1 FROM customers WHERE email = $3 AND id != $4)"
        ))
        .bind(json(fields))
        .bind(now)
        .bind(e.as_str())
        .bind(id.0)
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
    }
    let taken = match &email {
        Some(e) => sqlx::query("SELECT 1 FROM customers WHERE email = $1 AND id != $2")
            .bind(e.as_str())
            .bind(id.0)
            .fetch_optional(&mut **tx)
            .await?
            .is_some(),
        None => false,
    };
    let mut fields = fields.clone();
    if taken || email.is_none() {
        let current: Option<String> = sqlx::query("SELECT email FROM customers WHERE id = $1")
            .bind(id.0)
            .fetch_one(&mut **tx)
            .await?
            .get(0);
        fields.set(crate::model::Field::Email, current);
    }
    let email = fields.email().map(|e| e.as_str().to_string());
    sqlx::query(UPDATE)
        .bind(json(&fields))
        .bind(now)
        .bind(email)
        .bind(id.0)
        .execute(&mut **tx)
        .await?;
    Ok(!taken)
}

/// Replaces the batch's customers' open operations with their new plans. A create
/// that may have reached its provider keeps that mark, so it is looked up before it
/// is sent again.
async fn replace_ops(
    tx: &mut Transaction<'_, Any>,
    run: RunId,
    updates: &[(CustomerId, &CustomerUpdate)],
    now: &str,
) -> Result<()> {
    let ids: Vec<i64> = updates.iter().map(|(id, _)| id.0).collect();
    // What the superseded operations had been through: a new operation of the same
    // customer, provider and kind carries on its attempts, last error and doubt.
    let backend = super::backend_of(tx);
    let earlier: HashMap<OpKey, OpHistory> = sqlx::query(&format!(
        "SELECT customer_id, provider, op, attempts, maybe_applied, last_error FROM outbox
         WHERE customer_id {} AND state IN ('pending', 'failed', 'in_flight')",
        super::in_ints(backend, 1)
    ))
    .bind(json(&ids))
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|r| {
        (
            (r.get(0), r.get(1), r.get(2)),
            (r.get(3), r.get::<i64, _>(4) != 0, r.get(5)),
        )
    })
    .collect();
    sqlx::query(&format!(
        "DELETE FROM outbox WHERE customer_id {}
           AND state IN ('pending', 'failed', 'in_flight')",
        super::in_ints(backend, 1)
    ))
    .bind(json(&ids))
    .execute(&mut **tx)
    .await?;
    // Payload and changed travel as JSON text, so they are stored exactly as written.
    let ops: Vec<_> = updates
        .iter()
        .flat_map(|(id, u)| u.ops.iter().map(move |op| (id.0, op)))
        .map(|(id, op)| {
            let before = earlier.get(&(id, op.provider.0.clone(), op.op.to_string()));
            let attempts = before.map_or(0, |b| b.0);
            let maybe = op.op == "create" && before.is_some_and(|b| b.1);
            let last_error = before.and_then(|b| b.2.as_deref());
            (
                id,
                op,
                json(&op.payload),
                json(&op.changed),
                maybe as i64,
                attempts,
                last_error,
            )
        })
        .collect();
    let mut rows = Rows::with_capacity(9, ops.len());
    for (id, op, payload, changed, maybe, attempts, last_error) in &ops {
        rows.push([
            op.provider.0.as_str().into(),
            (*id).into(),
            op.op.into(),
            op.remote_id.as_ref().map(|r| r.0.as_str()).into(),
            payload.into(),
            changed.into(),
            (*maybe).into(),
            (*attempts).into(),
            (*last_error).into(),
        ]);
    }
    rows.execute(
        tx,
        &[run.0.into(), now.into()],
        "INSERT INTO outbox (provider, customer_id, op, remote_id, payload, changed, state, maybe_applied,
                             attempts, last_error, run_id, created_at, updated_at)
         SELECT column1, column2, column3, column4, column5, column6, 'pending', column7, column8, column9,
                $1, $2, $2
         FROM {rows} WHERE true",
        "INSERT INTO outbox (provider, customer_id, op, remote_id, payload, changed, state, maybe_applied,
                             attempts, last_error, run_id, created_at, updated_at)
         SELECT e.value->>0, (e.value->>1)::BIGINT, e.value->>2, e.value->>3, e.value->>4, e.value->>5,
                'pending', (e.value->>6)::BIGINT, (e.value->>7)::BIGINT, e.value->>8, $1, $2, $2
         FROM jsonb_array_elements($3::jsonb) WITH ORDINALITY AS e(value, key) ORDER BY e.key",
    )
    .await?;
    Ok(())
}

/// An outbox operation's customer, provider and kind.
type OpKey = (i64, String, String);
/// What an operation went through: attempts, whether it may have applied, last error.
type OpHistory = (i64, bool, Option<String>);

/// The links listed with another email than their snapshot's (`Store::email_claims`),
/// read from the partial index of links listed again (`links_reobserved`).
const EMAIL_CLAIMS_SQLITE: &str =
    "SELECT l.customer_id, l.provider, l.remote_id, json_extract(l.observed, '$.email'),
        json_extract(l.snapshot, '$.email')
 FROM links l JOIN customers c ON c.id = l.customer_id
 WHERE l.observed IS NOT NULL AND l.snapshot IS NOT NULL AND l.gone = 0
   AND c.tombstoned_at IS NULL
   AND json_extract(l.observed, '$.email') IS NOT json_extract(l.snapshot, '$.email')";
const EMAIL_CLAIMS_POSTGRES: &str =
    "SELECT l.customer_id, l.provider, l.remote_id, l.observed::json->>'email',
        l.snapshot::json->>'email'
 FROM links l JOIN customers c ON c.id = l.customer_id
 WHERE l.observed IS NOT NULL AND l.snapshot IS NOT NULL AND l.gone = 0
   AND c.tombstoned_at IS NULL
   AND (l.observed::json->>'email') IS DISTINCT FROM (l.snapshot::json->>'email')";

/// A SQLite store's `user_version` once every email in it is in the form
/// [`Email`] gives (NFC, ASCII domain).
pub const EMAILS_IN_PRESENT_FORM: i64 = 1;

pub fn email_hash(email: &Email) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(email.as_str().as_bytes());
    hex::encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorePath;
    use crate::model::Field;

    async fn customer(s: &Store, email: &str) -> CustomerId {
        let now = now_text();
        let id = sqlx::query(
            "INSERT INTO customers (email, fields, updated_at, created_at) VALUES ($1, '{}', $2, $3) RETURNING id",
        )
        .bind(email)
        .bind(&now)
        .bind(&now)
        .fetch_one(s.pool())
        .await
        .unwrap()
        .get(0);
        CustomerId(id)
    }

    fn create(provider: &str, email: &str) -> NewOp {
        NewOp {
            provider: ProviderName(provider.into()),
            op: "create",
            remote_id: None,
            payload: Projection::new().with(Field::Email, Some(email)),
            changed: vec![Field::Email],
        }
    }

    /// Statements a run makes over the whole store read an index of the rows they look
    /// for, in its order: no scan of every link or pending operation, no sort of them
    /// (at 1,000,000 people each such statement took over a second).
    #[tokio::test]
    async fn whole_store_statements_read_their_indexes_in_order() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        for (sql, index) in [
            (EMAIL_CLAIMS_SQLITE, "links_reobserved"),
            (crate::store::outbox::DOUBTFUL_CREATES, "outbox_doubtful"),
            (crate::store::activity::GROUP_BATCH, "links_live"),
            (
                crate::store::activity::GROUP_DIRTY_BATCH,
                "links_customer (provider=? AND customer_id=?)",
            ),
            (
                crate::store::activity::GROUP_MEMBERS,
                "group_members_customer",
            ),
        ] {
            crate::store::reads_in_order(&s, sql, 3, index).await;
        }
    }

    #[tokio::test]
    async fn a_replan_replaces_open_operations_and_keeps_a_doubtful_create_doubtful() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        let run = s.begin_run("once").await.unwrap();
        let (a, b) = (customer(&s, "a@e.co").await, customer(&s, "b@e.co").await);
        for (provider, customer, state, maybe) in [
            ("p", a, "failed", 1),
            ("q", a, "pending", 0),
            ("r", b, "parked", 1),
        ] {
            sqlx::query("INSERT INTO outbox (provider, customer_id, op, payload, changed, state, maybe_applied, created_at, updated_at) VALUES ($1, $2, 'create', '{}', '[]', $3, $4, 'x', 'x')")
                .bind(provider)
                .bind(customer.0)
                .bind(state)
                .bind(maybe)
                .execute(s.pool())
                .await
                .unwrap();
        }
        let updates = [
            CustomerUpdate {
                id: Some(a),
                ops: vec![create("p", "a@e.co"), create("r", "a@e.co")],
                audit: vec![AuditEntry::new(
                    "merge",
                    Some(a),
                    None,
                    serde_json::json!({"x": "é\u{1}"}),
                )],
                ..CustomerUpdate::default()
            },
            CustomerUpdate {
                id: Some(b),
                ops: vec![create("q", "b@e.co")],
                ..CustomerUpdate::default()
            },
        ];
        assert!(s.save_batch(run, &updates).await.unwrap().is_empty());
        let rows: Vec<(String, i64, String, i64, String)> = sqlx::query(
            "SELECT provider, customer_id, state, maybe_applied, payload FROM outbox ORDER BY id",
        )
        .fetch_all(s.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
        let payload = |e: &str| format!("{{\"email\":\"{e}\"}}");
        assert_eq!(
            rows,
            [
                ("r".into(), b.0, "parked".into(), 1, "{}".into()),
                ("p".into(), a.0, "pending".into(), 1, payload("a@e.co")),
                ("r".into(), a.0, "pending".into(), 0, payload("a@e.co")),
                ("q".into(), b.0, "pending".into(), 0, payload("b@e.co")),
            ]
        );
        let detail: String = sqlx::query("SELECT detail FROM audit")
            .fetch_one(s.pool())
            .await
            .unwrap()
            .get(0);
        assert_eq!(detail, serde_json::json!({"x": "é\u{1}"}).to_string());
    }

    #[tokio::test]
    async fn emails_stored_in_the_older_form_are_put_in_the_present_one() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        let old = customer(&s, "ann@ex\u{e4}mple.com").await;
        customer(&s, "jose\u{301}@x.co").await;
        customer(&s, "jos\u{e9}@x.co").await; // both forms held: left as it is
        customer(&s, "plain@x.co").await;
        // A store written by a build before the present form.
        sqlx::query("PRAGMA user_version = 0")
            .execute(s.pool())
            .await
            .unwrap();
        let left = s.renormalize_emails().await.unwrap();
        assert_eq!(left, ["jose\u{301}@x.co"]);
        let email: String = sqlx::query("SELECT email FROM customers WHERE id = $1")
            .bind(old.0)
            .fetch_one(s.pool())
            .await
            .unwrap()
            .get(0);
        assert_eq!(email, "ann@xn--exmple-cua.com");
        assert_eq!(s.renormalize_emails().await.unwrap().len(), 1, "idempotent");

        // Once nothing is left the store says so, and no open scans the emails again.
        sqlx::query("DELETE FROM customers WHERE email = $1")
            .bind("jos\u{e9}@x.co")
            .execute(s.pool())
            .await
            .unwrap();
        assert!(s.renormalize_emails().await.unwrap().is_empty());
        let form: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(form, EMAILS_IN_PRESENT_FORM);
        customer(&s, "zoe@ex\u{e4}mple.com").await;
        s.renormalize_emails().await.unwrap();
        let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE email = $1")
            .bind("zoe@ex\u{e4}mple.com")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(kept, 1, "not scanned again");
    }

    #[tokio::test]
    async fn a_record_listed_with_another_customers_email_is_a_claim() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        let (a, b) = (customer(&s, "a@e.co").await, customer(&s, "b@e.co").await);
        let email = |e: &str| json(&Projection::new().with(Field::Email, Some(e)));
        for (provider, listed) in [
            ("p", "B@E.co"), // Bob's email: a claim
            ("q", "A@e.co"), // the same email spelled otherwise: none
            ("r", "c@e.co"), // nobody's: an ordinary email change
            ("s", "a@e.co"), // unchanged
        ] {
            sqlx::query("INSERT INTO links (provider, remote_id, customer_id, snapshot, observed) VALUES ($1, $2, $3, $4, $5)")
                .bind(provider)
                .bind(format!("{provider}1"))
                .bind(a.0)
                .bind(email("a@e.co"))
                .bind(email(listed))
                .execute(s.pool())
                .await
                .unwrap();
        }
        let claims = s.email_claims().await.unwrap();
        assert_eq!(
            claims,
            [EmailClaim {
                customer: a,
                owner: b,
                provider: ProviderName("p".into()),
                remote_id: RemoteId("p1".into()),
                email: "B@E.co".into(),
            }]
        );
    }

    #[tokio::test]
    async fn a_new_email_another_customer_has_is_refused_and_the_rest_is_saved() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        let run = s.begin_run("once").await.unwrap();
        let (a, b) = (customer(&s, "a@e.co").await, customer(&s, "b@e.co").await);
        let fields = |email: &str, name: &str| {
            Projection::new()
                .with(Field::Email, Some(email))
                .with(Field::FirstName, Some(name))
        };
        let updates = [
            CustomerUpdate {
                id: Some(a),
                fields: Some(fields("b@e.co", "Ann")),
                ..CustomerUpdate::default()
            },
            CustomerUpdate {
                id: Some(b),
                fields: Some(fields("c@e.co", "Bob")),
                ..CustomerUpdate::default()
            },
        ];
        let refused = s.save_batch(run, &updates).await.unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, a);
        let rows: Vec<(String, String)> =
            sqlx::query("SELECT email, fields FROM customers ORDER BY id")
                .fetch_all(s.pool())
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
        assert_eq!(rows[0], ("a@e.co".into(), json(&fields("a@e.co", "Ann"))));
        assert_eq!(rows[1], ("c@e.co".into(), json(&fields("c@e.co", "Bob"))));
    }
}
