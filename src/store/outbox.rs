//! The outbox: every planned write, durable from the moment it is planned until the
//! provider confirmed it. States: pending → in_flight → (row deleted when done) or
//! failed (tried again next cycle) or parked (refused for good, shown by `status`).

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::audit::AuditEntry;
use super::lease::{Fence, FENCE_HOLDS};
use super::rows::Rows;
use super::{now_text, time_text, Result, RunId, Store};
use crate::model::{CustomerId, Field, Projection, ProviderName, RemoteId};
use crate::providers::RemoteRecord;

/// What became of one operation sent, to be recorded with its batch.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A create or update went through; `extras` are fields the answer holds that the
    /// write did not send.
    Written {
        op: OutboxOp,
        record: RemoteRecord,
        action: &'static str,
        extras: Vec<Field>,
    },
    /// A delete went through (or the record was already gone).
    Deleted { op: OutboxOp },
    /// It failed: `parked` ones wait for a person; others are tried next cycle.
    Failed {
        op: OutboxOp,
        error: String,
        maybe_applied: bool,
        parked: bool,
        next_attempt: Option<DateTime<Utc>>,
    },
}

impl Outcome {
    pub fn op(&self) -> &OutboxOp {
        match self {
            Outcome::Written { op, .. } | Outcome::Deleted { op } | Outcome::Failed { op, .. } => {
                op
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxOp {
    pub id: i64,
    pub provider: ProviderName,
    pub customer: CustomerId,
    pub email: Option<String>,
    pub op: String,
    pub remote_id: Option<RemoteId>,
    pub payload: Projection,
    pub changed: Vec<Field>,
    pub attempts: i64,
    /// An earlier attempt of this create may have reached the provider.
    pub maybe_applied: bool,
}

/// A failed or parked operation, for `status` and the report.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedOp {
    pub provider: String,
    pub email: Option<String>,
    pub op: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
}

/// A provider's pending creates that may have reached it, read from their partial
/// index (`outbox_doubtful`).
pub(super) const DOUBTFUL_CREATES: &str = "SELECT customer_id, payload FROM outbox
 WHERE provider = $1 AND op = 'create' AND maybe_applied = 1 AND state = 'pending'";
const OP_COLUMNS: &str = "o.id, o.provider, o.customer_id, c.email, o.op, o.remote_id, o.payload, o.changed, o.attempts, o.maybe_applied";

/// [`OP_COLUMNS`] as the subquery in `pending_ops` names them.
const OP_TUPLE: &str =
    "id, provider, customer_id, email, op, remote_id, payload, changed, attempts, maybe_applied";
type OpTuple = (
    i64,
    String,
    i64,
    Option<String>,
    String,
    Option<String>,
    String,
    String,
    i64,
    i64,
);

fn op_from_tuple(t: OpTuple) -> Result<OutboxOp> {
    let (id, provider, customer, email, op, remote_id, payload, changed, attempts, maybe) = t;
    Ok(OutboxOp {
        id,
        provider: ProviderName(provider),
        customer: CustomerId(customer),
        email,
        op,
        remote_id: remote_id.map(RemoteId),
        payload: serde_json::from_str(&payload)?,
        changed: serde_json::from_str(&changed)?,
        attempts,
        maybe_applied: maybe != 0,
    })
}

fn op_from_row(r: &sqlx::any::AnyRow) -> Result<OutboxOp> {
    Ok(OutboxOp {
        id: r.get(0),
        provider: ProviderName(r.get(1)),
        customer: CustomerId(r.get(2)),
        email: r.get(3),
        op: r.get(4),
        remote_id: r.get::<Option<String>, _>(5).map(RemoteId),
        payload: serde_json::from_str(&r.get::<String, _>(6))?,
        changed: serde_json::from_str(&r.get::<String, _>(7))?,
        attempts: r.get(8),
        maybe_applied: r.get::<i64, _>(9) != 0,
    })
}

/// A written record's link: `remote_id, customer_id, snapshot, observed, observed_at,
/// listed_key`.
type WrittenLink<'a> = (&'a str, i64, String, Option<String>, String, Option<i64>);

impl Store {
    /// After a crash: operations that were in flight may or may not have reached their
    /// provider. They become failed; a create among them is marked doubtful, so it is
    /// looked up by email before it is sent again.
    pub async fn recover_in_flight(&self) -> Result<u64> {
        let n = sqlx::query(
            "UPDATE outbox SET state = 'failed', maybe_applied = CASE WHEN op = 'create' THEN 1 ELSE maybe_applied END,
             last_error = COALESCE(last_error, 'interrupted while in flight'), updated_at = $1
             WHERE state = 'in_flight'",
        )
        .bind(now_text())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// Pending operations of a provider with id above `after`, oldest first; with
    /// `updates_only`, its updates alone.
    pub async fn pending_ops(
        &self,
        provider: &ProviderName,
        after: i64,
        limit: i64,
        updates_only: bool,
    ) -> Result<Vec<OutboxOp>> {
        let only = if updates_only {
            "AND o.op = 'update'"
        } else {
            ""
        };
        // One JSON text for the page: one row across from the database.
        let rows: Vec<OpTuple> = super::decode_rows(
            sqlx::query_scalar(&format!(
                "SELECT {} FROM (SELECT {OP_COLUMNS} FROM outbox o JOIN customers c ON c.id = o.customer_id
                 WHERE o.provider = $1 AND o.state = 'pending' AND o.id > $2 {only} ORDER BY o.id LIMIT $3) AS o",
                self.json_rows(OP_TUPLE)
            ))
            .bind(&provider.0)
            .bind(after)
            .bind(limit)
            .fetch_one(&self.pool)
            .await?,
        )?;
        let mut ops = rows
            .into_iter()
            .map(op_from_tuple)
            .collect::<Result<Vec<_>>>()?;
        // An aggregate's order is not promised.
        ops.sort_unstable_by_key(|op| op.id);
        Ok(ops)
    }

    /// Every open (pending or failed) operation, with what the provider holds now
    /// (the record as last listed, else the snapshot), handed to `each` in turn: what
    /// a dry run prints. Read as a stream, so that a plan of many thousands of
    /// operations is never held as rows and as operations at once.
    pub async fn open_ops(&self, mut each: impl FnMut(OutboxOp, Option<Projection>)) -> Result<()> {
        use futures::TryStreamExt;
        let sql = format!(
            "SELECT {OP_COLUMNS}, COALESCE(l.observed, l.snapshot) FROM outbox o
             JOIN customers c ON c.id = o.customer_id
             LEFT JOIN links l ON l.provider = o.provider AND l.customer_id = o.customer_id
             WHERE o.state IN ('pending', 'failed') ORDER BY o.provider, o.id"
        );
        let mut rows = sqlx::query(&sql).fetch(&self.pool);
        while let Some(r) = rows.try_next().await? {
            let before = r
                .get::<Option<String>, _>(10)
                .map(|t| serde_json::from_str(&t))
                .transpose()?;
            each(op_from_row(&r)?, before);
        }
        Ok(())
    }

    pub async fn pending_count(&self, provider: &ProviderName) -> Result<u64> {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) FROM outbox WHERE provider = $1 AND state = 'pending'")
                .bind(&provider.0)
                .fetch_one(&self.pool)
                .await?
                .get(0);
        Ok(n as u64)
    }

    /// Operations waiting to be pushed (pending), all providers.
    pub async fn open_op_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(n as u64)
    }

    /// Marks these pending operations in flight, in one statement, if `fence` still
    /// holds its tenant's lease: the intents of a chunk are durable before any of its
    /// requests leave. Answers the ids claimed: none when the lease is lost.
    pub async fn claim_ops(&self, ids: &[i64], fence: &Fence) -> Result<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE outbox SET state = 'in_flight', attempts = attempts + 1, updated_at = $1
             WHERE id {} AND state = 'pending' AND {FENCE_HOLDS} RETURNING id",
            self.in_ints(2)
        );
        let now = now_text();
        let rows = sqlx::query(&sql)
            .bind(&now)
            .bind(super::links::json(&ids))
            .bind(&fence.tenant)
            .bind(fence.token)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Pending creates of a provider that an earlier attempt may have applied: the
    /// customer and the payload, to be looked up before any is sent.
    pub async fn doubtful_creates(
        &self,
        provider: &ProviderName,
    ) -> Result<Vec<(CustomerId, Projection)>> {
        let rows = sqlx::query(DOUBTFUL_CREATES)
            .bind(&provider.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    CustomerId(r.get(0)),
                    serde_json::from_str(&r.get::<String, _>(1))?,
                ))
            })
            .collect()
    }

    /// Gives back operations claimed but never sent (the push was told to stop before
    /// their turn): pending again, with the attempt not counted, while `fence` holds.
    pub async fn release_ops(&self, ids: &[i64], fence: &Fence) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE outbox SET state = 'pending', attempts = attempts - 1, updated_at = $1
             WHERE id {} AND state = 'in_flight' AND {FENCE_HOLDS}",
            self.in_ints(2)
        );
        sqlx::query(&sql)
            .bind(now_text())
            .bind(super::links::json(&ids))
            .bind(&fence.tenant)
            .bind(fence.token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the outcomes of a batch of operations (of any providers) in one
    /// transaction, with a few set-based statements per provider whatever the batch's
    /// size: a create or update that went through makes the link's snapshot the record
    /// as the provider answered it (fields the answer holds that the write did not
    /// send are left out of the snapshot and the record kept as observed, so the merge
    /// takes them in like an edit); a delete marks the link gone; a failure is kept for
    /// the next cycle. Until the batch commits its operations stay in flight: a crash
    /// before then leaves them doubtful, looked up before anything is sent again.
    pub async fn record_outcomes(&self, run: RunId, outcomes: &[Outcome]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now = now_text();
        // Per provider, in the order they came; a batch holds a few providers at most.
        let mut groups: Vec<(&ProviderName, Vec<&Outcome>)> = Vec::new();
        for o in outcomes {
            let provider = &o.op().provider;
            match groups.iter_mut().find(|(p, _)| *p == provider) {
                Some((_, group)) => group.push(o),
                None => groups.push((provider, vec![o])),
            }
        }
        let audit: Vec<AuditEntry> = outcomes.iter().filter_map(audit_entry).collect();
        // Written or deleted: done, whatever the provider.
        let done: Vec<i64> = outcomes
            .iter()
            .filter(|o| !matches!(o, Outcome::Failed { .. }))
            .map(|o| o.op().id)
            .collect();
        let mut tx = self.pool.begin().await?;
        for (provider, group) in &groups {
            self.record_provider(&mut tx, run, &provider.0, group, &now)
                .await?;
        }
        if !done.is_empty() {
            sqlx::query(&format!("DELETE FROM outbox WHERE id {}", self.in_ints(1)))
                .bind(super::links::json(&done))
                .execute(&mut *tx)
                .await?;
        }
        // Failures are kept for the next cycle, or parked.
        for o in outcomes {
            if let Outcome::Failed {
                op,
                error,
                maybe_applied,
                parked,
                next_attempt,
            } = o
            {
                sqlx::query(
                    "UPDATE outbox SET state = $1, last_error = $2,
                            maybe_applied = CASE WHEN maybe_applied > $3 THEN maybe_applied ELSE $3 END,
                            next_attempt_at = $4, updated_at = $5
                     WHERE id = $6",
                )
                .bind(if *parked { "parked" } else { "failed" })
                .bind(error)
                .bind(*maybe_applied as i64)
                .bind(next_attempt.map(time_text))
                .bind(&now)
                .bind(op.id)
                .execute(&mut *tx)
                .await?;
            }
        }
        let audit: Vec<&AuditEntry> = audit.iter().collect();
        AuditEntry::insert_all(&audit, &mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The links of one provider's outcomes, in `record_outcomes`'s transaction.
    async fn record_provider(
        &self,
        tx: &mut sqlx::AnyConnection,
        run: RunId,
        provider: &str,
        outcomes: &[&Outcome],
        now: &str,
    ) -> Result<()> {
        let mut links: Vec<WrittenLink> = Vec::new();
        let mut written_customers: Vec<i64> = Vec::new();
        let mut written_ids: Vec<&str> = Vec::new();
        let mut gone: Vec<&str> = Vec::new();
        // The last write of a remote id wins, as if they had been recorded in turn.
        let mut by_remote: std::collections::HashMap<&str, usize> = Default::default();
        for o in outcomes {
            match o {
                Outcome::Written {
                    op, record, extras, ..
                } => {
                    let mut snapshot = record.projection.clone();
                    for f in extras {
                        snapshot.set(f.clone(), None::<String>);
                    }
                    let observed = (!extras.is_empty())
                        .then(|| serde_json::to_string(&record.projection))
                        .transpose()?;
                    let row = (
                        record.id.0.as_str(),
                        op.customer.0,
                        serde_json::to_string(&snapshot)?,
                        observed,
                        record
                            .updated_at
                            .map(time_text)
                            .unwrap_or_else(|| now.to_string()),
                        // The answer's text as a listing would send it, kept by the push
                        // only when it stands for this snapshot (no extras).
                        record.listed_key,
                    );
                    match by_remote.get(record.id.0.as_str()) {
                        Some(&i) => links[i] = row,
                        None => {
                            by_remote.insert(&record.id.0, links.len());
                            links.push(row);
                        }
                    }
                    written_customers.push(op.customer.0);
                    written_ids.push(&record.id.0);
                }
                Outcome::Deleted { op } => {
                    // Without a remote id no link matches: nothing is marked.
                    if let Some(r) = &op.remote_id {
                        gone.push(&r.0);
                    }
                }
                Outcome::Failed { .. } => {}
            }
        }
        if !links.is_empty() {
            // A written record's link is kept and updated in place when it already is
            // the customer's link with that remote id (an update): only links that
            // conflict (the customer's link to another record, the record linked to
            // another customer) are deleted. Two statements, each on its own index (an
            // OR of the two sets would scan every link of the provider).
            let pairs: Vec<(i64, &str)> = links.iter().map(|l| (l.1, l.0)).collect();
            let pairs = super::links::json(&pairs);
            let kept = self.sql(
                "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each($3))",
                "(SELECT (e->>0)::BIGINT, e->>1 FROM jsonb_array_elements($3::jsonb) AS e)",
            );
            sqlx::query(&format!(
                "DELETE FROM links WHERE provider = $1 AND customer_id {}
                   AND (customer_id, remote_id) NOT IN {kept}",
                self.in_ints(2)
            ))
            .bind(provider)
            .bind(super::links::json(&written_customers))
            .bind(&pairs)
            .execute(&mut *tx)
            .await?;
            sqlx::query(&format!(
                "DELETE FROM links WHERE provider = $1 AND remote_id {}
                   AND (customer_id, remote_id) NOT IN {kept}",
                self.in_texts(2)
            ))
            .bind(provider)
            .bind(super::links::json(&written_ids))
            .bind(&pairs)
            .execute(&mut *tx)
            .await?;
            let mut rows = Rows::with_capacity(6, links.len());
            for (remote_id, customer, snapshot, observed, observed_at, key) in &links {
                rows.push([
                    (*remote_id).into(),
                    (*customer).into(),
                    snapshot.into(),
                    observed.as_deref().into(),
                    observed_at.into(),
                    (*key).into(),
                ]);
            }
            rows.execute(
                tx,
                &[provider.into(), run.0.into()],
                "INSERT INTO links (provider, remote_id, customer_id, snapshot, observed, observed_at, listed_key, seen_run)
                 SELECT $1, column1, column2, column3, column4, column5, column6, $2 FROM {rows} WHERE true
                 ON CONFLICT (provider, remote_id) DO UPDATE
                 SET snapshot = excluded.snapshot, observed = excluded.observed,
                     observed_at = excluded.observed_at, seen_run = excluded.seen_run, gone = 0,
                     listed_key = excluded.listed_key",
                "INSERT INTO links (provider, remote_id, customer_id, snapshot, observed, observed_at, listed_key, seen_run)
                 SELECT $1, e->>0, (e->>1)::BIGINT, e->>2, e->>3, e->>4, (e->>5)::BIGINT, $2
                 FROM jsonb_array_elements($3::jsonb) AS e
                 ON CONFLICT (provider, remote_id) DO UPDATE
                 SET snapshot = EXCLUDED.snapshot, observed = EXCLUDED.observed,
                     observed_at = EXCLUDED.observed_at, seen_run = EXCLUDED.seen_run, gone = 0,
                     listed_key = EXCLUDED.listed_key",
            )
            .await?;
        }
        if !gone.is_empty() {
            sqlx::query(&format!(
                "UPDATE links SET gone = 1, observed = NULL, listed_key = NULL WHERE provider = $1 AND remote_id {}",
                self.in_texts(2)
            ))
            .bind(provider)
            .bind(super::links::json(&gone))
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Outbox rows per provider and state.
    pub async fn outbox_depth(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT provider, state, COUNT(*) FROM outbox GROUP BY provider, state ORDER BY provider, state")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// The last `per_provider` failed and parked operations of each provider, most
    /// recent first.
    pub async fn last_failures(&self, per_provider: i64) -> Result<Vec<FailedOp>> {
        let rows = sqlx::query(
            "SELECT provider, email, op, state, attempts, last_error, next_attempt_at FROM (
                 SELECT o.provider, c.email, o.op, o.state, o.attempts, o.last_error, o.next_attempt_at,
                        ROW_NUMBER() OVER (PARTITION BY o.provider ORDER BY o.updated_at DESC, o.id DESC) AS n
                 FROM outbox o JOIN customers c ON c.id = o.customer_id
                 WHERE o.state IN ('failed', 'parked')) AS f
             WHERE n <= $1 ORDER BY provider, n",
        )
        .bind(per_provider)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| FailedOp {
                provider: r.get(0),
                email: r.get(1),
                op: r.get(2),
                state: r.get(3),
                attempts: r.get(4),
                last_error: r.get(5),
                next_attempt_at: r.get(6),
            })
            .collect())
    }
}

/// The audit row of an outcome that changed something at its provider.
fn audit_entry(o: &Outcome) -> Option<AuditEntry> {
    match o {
        Outcome::Written {
            op,
            record,
            action,
            extras,
        } => {
            let detail =
                serde_json::json!({"remote_id": record.id.0, "fields": op.changed, "kept": extras});
            Some(AuditEntry::new(
                action,
                Some(op.customer),
                Some(&op.provider),
                detail,
            ))
        }
        Outcome::Deleted { op } => {
            let detail =
                serde_json::json!({"remote_id": op.remote_id.as_ref().map(|r| r.0.clone())});
            Some(AuditEntry::new(
                "delete",
                Some(op.customer),
                Some(&op.provider),
                detail,
            ))
        }
        Outcome::Failed { .. } => None,
    }
}
