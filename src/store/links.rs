//! Customers and their links to provider records: what a listing stores page by page,
//! what the merge reads in batches and writes back with its plan.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite, SqliteConnection, Transaction};

use super::{audit::AuditEntry, now_text, parse_time, time_text, Result, RunId, Store};
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
    /// Links whose observed record is now the snapshot.
    pub merged: Vec<(ProviderName, RemoteId)>,
    /// The plan for this customer; replaces any open operation it had.
    pub ops: Vec<NewOp>,
    pub audit: Vec<AuditEntry>,
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn projection(text: Option<String>) -> Result<Option<Projection>> {
    Ok(match text {
        Some(t) => Some(serde_json::from_str(&t)?),
        None => None,
    })
}

impl Store {
    /// Stores one page of a listing in one transaction: each record is linked (by its
    /// remote id, else by email), its listed state kept as `observed` for the merge.
    /// `present` are ids of records that were listed but skipped for their data: they
    /// still count as present. Returns the records not linked as duplicates.
    pub async fn ingest_page(
        &self,
        provider: &ProviderName,
        run: RunId,
        observed: &[Observed],
        present: &[RemoteId],
    ) -> Result<Vec<Duplicate>> {
        let mut tx = self.pool.begin().await?;
        let mut duplicates = Vec::new();
        for o in observed {
            if let Some(d) = ingest_one(&mut tx, provider, run, o).await? {
                duplicates.push(d);
            }
        }
        for id in present {
            sqlx::query("UPDATE links SET seen_run = ? WHERE provider = ? AND remote_id = ?")
                .bind(run.0)
                .bind(&provider.0)
                .bind(&id.0)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(duplicates)
    }

    /// Links of `provider` that a complete listing of `run` did not return.
    pub async fn vanished(
        &self,
        provider: &ProviderName,
        run: RunId,
    ) -> Result<Vec<(CustomerId, RemoteId)>> {
        let rows = sqlx::query(
            "SELECT l.customer_id, l.remote_id FROM links l JOIN customers c ON c.id = l.customer_id
             WHERE l.provider = ? AND l.gone = 0 AND l.snapshot IS NOT NULL
               AND (l.seen_run IS NULL OR l.seen_run < ?) AND c.tombstoned_at IS NULL",
        )
        .bind(&provider.0)
        .bind(run.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (CustomerId(r.get(0)), RemoteId(r.get(1))))
            .collect())
    }

    /// How many live, merged links a provider has (the base of the delete guard).
    pub async fn linked_count(&self, provider: &ProviderName) -> Result<i64> {
        let n = sqlx::query(
            "SELECT COUNT(*) FROM links WHERE provider = ? AND gone = 0 AND snapshot IS NOT NULL",
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
                "UPDATE links SET gone = 1, observed = NULL WHERE provider = ? AND remote_id = ?",
            )
            .bind(&provider.0)
            .bind(&remote.0)
            .execute(&mut *tx)
            .await?;
            if tombstone {
                sqlx::query(
                    "UPDATE customers SET tombstoned_at = ? WHERE id = ? AND tombstoned_at IS NULL",
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
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(
            "SELECT id, email, fields, updated_at, tombstoned_at FROM customers WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last().map(|r| r.get::<i64, _>(0)) else {
            return Ok(Vec::new());
        };
        let first: i64 = rows[0].get(0);
        let mut links: HashMap<i64, Vec<LinkRow>> = HashMap::new();
        let link_rows = sqlx::query(
            "SELECT customer_id, provider, remote_id, snapshot, observed, observed_at, gone
             FROM links WHERE customer_id BETWEEN ? AND ?",
        )
        .bind(first)
        .bind(last)
        .fetch_all(&mut *conn)
        .await?;
        for r in link_rows {
            links.entry(r.get(0)).or_default().push(LinkRow {
                provider: ProviderName(r.get(1)),
                remote_id: RemoteId(r.get(2)),
                snapshot: projection(r.get(3))?,
                observed: projection(r.get(4))?,
                observed_at: r
                    .get::<Option<String>, _>(5)
                    .as_deref()
                    .and_then(parse_time),
                gone: r.get::<i64, _>(6) != 0,
            });
        }
        let mut parked: HashMap<i64, HashSet<ProviderName>> = HashMap::new();
        let mut maybe: HashMap<i64, HashSet<ProviderName>> = HashMap::new();
        let mut open: HashSet<i64> = HashSet::new();
        let op_rows = sqlx::query(
            "SELECT customer_id, provider, state, op, maybe_applied FROM outbox WHERE customer_id BETWEEN ? AND ?",
        )
        .bind(first)
        .bind(last)
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
        for r in rows {
            let id: i64 = r.get(0);
            let fields: Projection = serde_json::from_str(&r.get::<String, _>(2))?;
            let updated_at = if fields.is_empty() {
                None
            } else {
                parse_time(&r.get::<String, _>(3))
            };
            let row = CustomerRow {
                id: CustomerId(id),
                email: r.get(1),
                fields,
                updated_at,
                tombstoned: r.get::<Option<String>, _>(4).is_some(),
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
    pub async fn save_batch(
        &self,
        run: RunId,
        updates: &[CustomerUpdate],
    ) -> Result<Vec<(CustomerId, String)>> {
        let mut tx = self.pool.begin().await?;
        let mut refused = Vec::new();
        let now = now_text();
        for u in updates {
            let Some(id) = u.id else { continue };
            if let Some(fields) = &u.fields {
                let email = fields.email();
                let taken = match &email {
                    Some(e) => sqlx::query("SELECT 1 FROM customers WHERE email = ? AND id != ?")
                        .bind(e.as_str())
                        .bind(id.0)
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some(),
                    None => false,
                };
                let mut fields = fields.clone();
                if taken || email.is_none() {
                    if taken {
                        refused.push((id, "the new email belongs to another customer".to_string()));
                    }
                    let current: Option<String> =
                        sqlx::query("SELECT email FROM customers WHERE id = ?")
                            .bind(id.0)
                            .fetch_one(&mut *tx)
                            .await?
                            .get(0);
                    fields.set(crate::model::Field::Email, current);
                }
                let email = fields.email().map(|e| e.as_str().to_string());
                sqlx::query("UPDATE customers SET fields = ?, updated_at = ?, email = COALESCE(?, email) WHERE id = ?")
                    .bind(json(&fields))
                    .bind(&now)
                    .bind(email)
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?;
            }
            for (provider, remote) in &u.merged {
                sqlx::query(
                    "UPDATE links SET snapshot = observed, observed = NULL
                     WHERE provider = ? AND remote_id = ? AND observed IS NOT NULL",
                )
                .bind(&provider.0)
                .bind(&remote.0)
                .execute(&mut *tx)
                .await?;
            }
            replace_ops(&mut tx, run, id, &u.ops, &now).await?;
            for entry in &u.audit {
                entry.insert(&mut tx, run).await?;
            }
        }
        tx.commit().await?;
        Ok(refused)
    }
}

/// Replaces a customer's open operations with its new plan. A create that may have
/// reached its provider keeps that mark, so it is looked up before it is sent again.
async fn replace_ops(
    tx: &mut Transaction<'_, Sqlite>,
    run: RunId,
    id: CustomerId,
    ops: &[NewOp],
    now: &str,
) -> Result<()> {
    // What the superseded operations had been through: a new operation of the same
    // provider and kind carries on its attempts, last error and doubt.
    let earlier: Vec<(String, String, i64, bool, Option<String>)> = sqlx::query(
        "SELECT provider, op, attempts, maybe_applied, last_error FROM outbox
         WHERE customer_id = ? AND state IN ('pending', 'failed', 'in_flight')",
    )
    .bind(id.0)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|r| {
        (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get::<i64, _>(3) != 0,
            r.get(4),
        )
    })
    .collect();
    sqlx::query(
        "DELETE FROM outbox WHERE customer_id = ? AND state IN ('pending', 'failed', 'in_flight')",
    )
    .bind(id.0)
    .execute(&mut **tx)
    .await?;
    for op in ops {
        let before = earlier
            .iter()
            .find(|(p, o, ..)| p == &op.provider.0 && o == op.op);
        let attempts = before.map_or(0, |b| b.2);
        let maybe = op.op == "create" && before.is_some_and(|b| b.3);
        let last_error = before.and_then(|b| b.4.clone());
        sqlx::query(
            "INSERT INTO outbox (provider, customer_id, op, remote_id, payload, changed, state, attempts, maybe_applied, last_error, run_id, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
        )
        .bind(&op.provider.0)
        .bind(id.0)
        .bind(op.op)
        .bind(op.remote_id.as_ref().map(|r| r.0.clone()))
        .bind(json(&op.payload))
        .bind(json(&op.changed))
        .bind(attempts)
        .bind(maybe as i64)
        .bind(last_error)
        .bind(run.0)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Links one listed record. Known remote id: its observed state is updated (nothing to
/// merge when it equals the snapshot). New remote id: linked to the customer with its
/// email, created empty if there is none. A second record of the same provider with
/// the same email is a duplicate; the most recently updated one is linked while neither
/// has been merged yet.
async fn ingest_one(
    conn: &mut SqliteConnection,
    provider: &ProviderName,
    run: RunId,
    o: &Observed,
) -> Result<Option<Duplicate>> {
    let existing = sqlx::query(
        "SELECT l.snapshot, c.tombstoned_at FROM links l JOIN customers c ON c.id = l.customer_id
         WHERE l.provider = ? AND l.remote_id = ?",
    )
    .bind(&provider.0)
    .bind(&o.record.id.0)
    .fetch_optional(&mut *conn)
    .await?;
    let observed_json = json(&o.record.projection);
    if let Some(row) = existing {
        let snapshot = projection(row.get(0))?;
        let tombstoned = row.get::<Option<String>, _>(1).is_some();
        let unchanged = snapshot.as_ref() == Some(&o.record.projection);
        let q = if unchanged || tombstoned {
            sqlx::query("UPDATE links SET seen_run = ?, observed = NULL WHERE provider = ? AND remote_id = ?").bind(run.0)
        } else {
            sqlx::query("UPDATE links SET seen_run = ?, observed = ?, observed_at = ? WHERE provider = ? AND remote_id = ?")
                .bind(run.0)
                .bind(observed_json)
                .bind(time_text(o.time))
        };
        q.bind(&provider.0)
            .bind(&o.record.id.0)
            .execute(&mut *conn)
            .await?;
        return Ok(None);
    }

    let email = o.email.as_str();
    let customer = sqlx::query("SELECT id, tombstoned_at FROM customers WHERE email = ?")
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?;
    let customer_id = match customer {
        Some(row) if row.get::<Option<String>, _>(1).is_some() => return Ok(None),
        Some(row) => row.get::<i64, _>(0),
        None => {
            if forgotten(conn, &o.email).await? {
                return Ok(None);
            }
            let now = now_text();
            sqlx::query("INSERT INTO customers (email, fields, updated_at, created_at) VALUES (?, '{}', ?, ?)")
                .bind(email)
                .bind(&now)
                .bind(&now)
                .execute(&mut *conn)
                .await?
                .last_insert_rowid()
        }
    };

    let other = sqlx::query("SELECT remote_id, snapshot, observed_at, gone FROM links WHERE provider = ? AND customer_id = ?")
        .bind(&provider.0)
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?;
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
        sqlx::query("DELETE FROM links WHERE provider = ? AND remote_id = ?")
            .bind(&provider.0)
            .bind(&other_id.0)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO links (provider, remote_id, customer_id, observed, observed_at, seen_run) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&provider.0)
        .bind(&o.record.id.0)
        .bind(customer_id)
        .bind(&observed_json)
        .bind(time_text(o.time))
        .bind(run.0)
        .execute(&mut *conn)
        .await?;
        return Ok((!gone).then_some(Duplicate {
            remote_id: other_id,
            email: o.email.clone(),
        }));
    }
    sqlx::query("INSERT INTO links (provider, remote_id, customer_id, observed, observed_at, seen_run) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(&provider.0)
        .bind(&o.record.id.0)
        .bind(customer_id)
        .bind(&observed_json)
        .bind(time_text(o.time))
        .bind(run.0)
        .execute(&mut *conn)
        .await?;
    Ok(None)
}

/// True when `forget` erased this person: only a hash of the email is kept.
async fn forgotten(conn: &mut SqliteConnection, email: &Email) -> Result<bool> {
    let hash = email_hash(email);
    Ok(
        sqlx::query("SELECT 1 FROM customers WHERE email_hash = ? AND email IS NULL")
            .bind(hash)
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
    )
}

pub fn email_hash(email: &Email) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(email.as_str().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
