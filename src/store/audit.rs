//! The audit trail: every merge decision and every write custsync made, as rows that
//! `custsync audit` prints as JSON lines.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, Row, Transaction};

use super::rows::Rows;
use super::{now_text, Result, RunId, Store};
use crate::model::{CustomerId, ProviderName};

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub action: &'static str,
    pub customer: Option<CustomerId>,
    pub provider: Option<ProviderName>,
    /// The detail as JSON text, serialized once when the entry is made.
    pub detail: String,
}

/// The statement that stores one entry; [`AuditEntry::bind`] gives its parameters.
pub(super) const INSERT: &str =
    "INSERT INTO audit (run_id, at, customer_id, provider, action, detail) VALUES ($1, $2, $3, $4, $5, $6)";

impl AuditEntry {
    pub fn new(
        action: &'static str,
        customer: Option<CustomerId>,
        provider: Option<&ProviderName>,
        detail: impl serde::Serialize,
    ) -> Self {
        Self {
            action,
            customer,
            provider: provider.cloned(),
            detail: super::links::json(&detail),
        }
    }

    pub async fn insert(&self, tx: &mut Transaction<'_, Any>, run: RunId) -> Result<()> {
        self.bind(sqlx::query(INSERT), run)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Stores `entries` in their order with one statement.
    pub async fn insert_all(
        entries: &[&AuditEntry],
        tx: &mut Transaction<'_, Any>,
        run: RunId,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // Detail travels as text, so it is stored exactly as `insert` stores it.
        let now = now_text();
        let mut rows = Rows::with_capacity(4, entries.len());
        for e in entries {
            rows.push([
                e.customer.map(|c| c.0).into(),
                e.provider.as_ref().map(|p| p.0.as_str()).into(),
                e.action.into(),
                e.detail.as_str().into(),
            ]);
        }
        rows.execute(
            tx,
            &[run.0.into(), now.as_str().into()],
            "INSERT INTO audit (run_id, at, customer_id, provider, action, detail)
             SELECT $1, $2, column1, column2, column3, column4 FROM {rows} WHERE true",
            "INSERT INTO audit (run_id, at, customer_id, provider, action, detail)
             SELECT $1, $2, (e.value->>0)::BIGINT, e.value->>1, e.value->>2, e.value->>3
             FROM jsonb_array_elements($3::jsonb) WITH ORDINALITY AS e(value, key) ORDER BY e.key",
        )
        .await?;
        Ok(())
    }

    /// Binds the six parameters of [`INSERT`] to `q`, which may hold statements before it
    /// (one round trip to SQLite instead of several).
    pub(super) fn bind<'q>(
        &self,
        q: Query<'q, Any, AnyArguments<'q>>,
        run: RunId,
    ) -> Query<'q, Any, AnyArguments<'q>> {
        q.bind(run.0)
            .bind(now_text())
            .bind(self.customer.map(|c| c.0))
            .bind(self.provider.as_ref().map(|p| p.0.clone()))
            .bind(self.action)
            .bind(self.detail.clone())
    }
}

/// Every action the store writes into the audit trail (`AuditEntry::new`'s first
/// argument), in the order a record meets them; `audit --action` takes only these.
pub const ACTIONS: &[&str] = &[
    "merge.initial",
    "merge",
    "conflict",
    "link",
    "create",
    "update",
    "vanished",
    "tombstone",
    "delete",
    "forget",
];

/// Filters of `custsync audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub provider: Option<String>,
    pub action: Option<String>,
    pub email: Option<String>,
    pub run: Option<i64>,
    pub limit: Option<i64>,
}

impl Store {
    /// Audit rows as JSON objects, oldest first.
    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<serde_json::Value>> {
        let rows = sqlx::query(
            "SELECT a.id, a.run_id, a.at, a.customer_id, c.email, a.provider, a.action, a.detail
             FROM audit a LEFT JOIN customers c ON c.id = a.customer_id
             WHERE ($1 IS NULL OR a.provider = $1) AND ($2 IS NULL OR a.action = $2)
               AND ($3 IS NULL OR c.email = $3) AND ($4 IS NULL OR a.run_id = $4)
             ORDER BY a.id LIMIT $5",
        )
        .bind(&f.provider)
        .bind(&f.action)
        .bind(f.email.as_ref().map(|e| e.trim().to_lowercase()))
        .bind(f.run)
        .bind(f.limit.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let detail: String = r.get(7);
                serde_json::json!({
                    "id": r.get::<i64, _>(0),
                    "run": r.get::<Option<i64>, _>(1),
                    "at": r.get::<String, _>(2),
                    "customer_id": r.get::<Option<i64>, _>(3),
                    "email": r.get::<Option<String>, _>(4),
                    "provider": r.get::<Option<String>, _>(5),
                    "action": r.get::<String, _>(6),
                    "detail": serde_json::from_str::<serde_json::Value>(&detail).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect())
    }
}
