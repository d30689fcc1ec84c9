//! Erasure (`custsync forget`): what the store knows of one person, and purging it so
//! that only a hash of the email remains, which keeps the person from being imported
//! again from a provider that still returns the record.

use sqlx::Row;

use super::audit::AuditEntry;
use super::links::email_hash;
use super::{now_text, Result, RunId, Store};
use crate::model::{CustomerId, Email, ProviderName, RemoteId};

impl Store {
    /// The customer with this email and its live links, if custsync knows the person.
    pub async fn person(
        &self,
        email: &Email,
    ) -> Result<Option<(CustomerId, Vec<(ProviderName, RemoteId)>)>> {
        let Some(row) = sqlx::query("SELECT id FROM customers WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let id: i64 = row.get(0);
        let links = sqlx::query(
            "SELECT provider, remote_id FROM links WHERE customer_id = $1 AND gone = 0",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (ProviderName(r.get(0)), RemoteId(r.get(1))))
        .collect();
        Ok(Some((CustomerId(id), links)))
    }

    /// How much `forget` would purge of this customer besides its record and links:
    /// (operations in the outbox, audit entries).
    pub async fn erasure_extent(&self, id: CustomerId) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE customer_id = $1),
                    (SELECT COUNT(*) FROM audit WHERE customer_id = $1)",
        )
        .bind(id.0)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.get(0), row.get(1)))
    }

    /// Purges the person's personal data: the canonical record, snapshots, pending
    /// operations and audit details. Keeps a tombstone holding only the email's hash.
    pub async fn forget(&self, run: RunId, email: &Email) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let now = now_text();
        let hash = email_hash(email);
        let id: Option<i64> = sqlx::query("SELECT id FROM customers WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0));
        let id = match id {
            Some(id) => id,
            None => sqlx::query("INSERT INTO customers (email, fields, updated_at, created_at) VALUES (NULL, '{}', $1, $2) RETURNING id")
                .bind(&now)
                .bind(&now)
                .fetch_one(&mut *tx)
                .await?
                .get(0),
        };
        sqlx::query("UPDATE customers SET email = NULL, email_hash = $1, fields = '{}', tombstoned_at = COALESCE(tombstoned_at, $2) WHERE id = $3")
            .bind(&hash)
            .bind(&now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Links go too (a Sendwithus remote id is the email): a record left in a provider
        // that cannot delete is recognized by the hash when it is listed again.
        sqlx::query("DELETE FROM links WHERE customer_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM outbox WHERE customer_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // The person's activity and what custsync knew of their groups (DESIGN 14).
        for table in ["activity", "activity_marks", "group_members"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE customer_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE audit SET detail = '{\"erased\":true}' WHERE customer_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE runs SET report = replace(report, $1, '[erased]')
             WHERE replace(report, $1, '[erased]') <> report",
        )
        .bind(email.as_str())
        .execute(&mut *tx)
        .await?;
        AuditEntry::new(
            "forget",
            Some(CustomerId(id)),
            None,
            serde_json::json!({"email_sha256": hash}),
        )
        .insert(&mut tx, run)
        .await?;
        tx.commit().await?;
        // Deleted rows linger in free pages and in the write-ahead log until rewritten.
        match self.backend {
            super::Backend::Sqlite => {
                sqlx::query("VACUUM").execute(&self.pool).await?;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&self.pool)
                    .await?;
            }
            super::Backend::Postgres => {
                // Rewrites the tables the person was in, so no dead row keeps them.
                sqlx::query(
                    "VACUUM FULL customers, links, outbox, audit, runs, activity, activity_marks, group_members",
                )
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }
}
