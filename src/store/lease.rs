//! Leases: one reconciliation of a tenant at a time, whatever the number of processes
//! on the store (DESIGN 4c "Exclusivity", 13).
//!
//! Owns: taking, renewing, fencing and giving back the lease of a tenant. A lease row
//! carries a fencing token that grows by one at every take; every claim of outbox work
//! names the token it holds (`Fence`), in the same statement, so a process that lost
//! its lease (paused, partitioned, expired) can claim nothing more. A lease whose
//! holder is seen to be gone (its process no longer runs on this host) is free at
//! once; one whose holder is alive but silent for `lease_secs` has expired.
//!
//! The statements are plain compare-and-swap updates that SQLite and PostgreSQL both
//! run: no transaction is held while deciding.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use chrono::Utc;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::{parse_time, time_text, Result, Store};

/// Who holds (or asks for) a lease: the worker's name and, to tell a dead holder from
/// a silent one, its host, process id and process start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub worker: String,
    pub host: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (Linux), so that a reused
    /// process id is not taken for the holder.
    pub started: Option<i64>,
}

impl Holder {
    /// This process, named `worker_id` or else `HOST:PID`.
    pub fn this_process(worker_id: Option<&str>) -> Holder {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let pid = std::process::id();
        Holder {
            worker: worker_id
                .map(str::to_string)
                .unwrap_or_else(|| format!("{host}:{pid}")),
            host,
            pid,
            started: process_start(pid),
        }
    }

    /// True when this holder's process is known to be gone: it ran on this host and
    /// no process with its id and start time runs any more.
    fn is_gone(&self) -> bool {
        let here = gethostname::gethostname().to_string_lossy().into_owned();
        if self.host != here {
            return false;
        }
        match (process_start(self.pid), self.started) {
            (None, _) => cfg!(target_os = "linux"),
            (Some(now), Some(then)) => now != then,
            (Some(_), None) => false,
        }
    }
}

/// The start time of a running (not zombie) process, from `/proc/PID/stat`.
fn process_start(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields follow the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3); the start time is field 22.
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// A lease found held by another holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBy {
    pub worker: String,
    pub expires_at: String,
}

impl std::fmt::Display for HeldBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lease held by {}", self.worker)
    }
}

impl std::error::Error for HeldBy {}

/// A tenant's lease as read for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub worker: String,
    pub expires_at: String,
    pub released: bool,
    /// Its holder's process is seen to be gone (it ran on this host): free at once.
    pub holder_gone: bool,
}

impl LeaseState {
    /// Someone holds it now: not given back, its holder not gone, not expired.
    pub fn is_held(&self) -> bool {
        !self.released
            && !self.holder_gone
            && parse_time(&self.expires_at).is_some_and(|t| t > Utc::now())
    }
}

/// What a claim of outbox work must show: the tenant and the token of its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub tenant: String,
    pub token: i64,
}

/// The SQL condition that a fence still holds: tenant at `$3`, token at `$4`, now at `$1`.
pub const FENCE_HOLDS: &str = "EXISTS (SELECT 1 FROM leases WHERE tenant = $3 AND token = $4 AND released = 0 AND expires_at > $1)";

/// A lease held by this process. It is renewed in the background until `release`;
/// `lost` is cancelled when a renewal finds it taken over or expired.
pub struct Lease {
    state: Arc<Held>,
    renewer: tokio::task::JoinHandle<()>,
}

/// What the holder and its renewer share.
struct Held {
    store: Store,
    fence: Fence,
    ttl: Duration,
    lost: CancellationToken,
    /// Until when the last renewal (or the take) makes the lease surely ours, by this
    /// process's monotonic clock, which runs on while the process is paused.
    valid_until: Mutex<Instant>,
}

/// One lease row, as read.
struct LeaseRow {
    holder: Holder,
    token: i64,
    expires_at: String,
    released: bool,
}

impl Store {
    /// Takes the lease of `tenant` for `holder` when it is free, expired, or its holder
    /// is gone; otherwise says who holds it.
    pub async fn acquire_lease(
        &self,
        tenant: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<std::result::Result<Lease, HeldBy>> {
        // Two rounds: a race lost to another taker is read again once.
        for _ in 0..2 {
            let asked = Instant::now();
            let now = Utc::now();
            let expires = time_text(now + chrono::Duration::from_std(ttl).unwrap_or_default());
            match self.lease_row(tenant).await? {
                None => {
                    let inserted = sqlx::query(
                        "INSERT INTO leases (tenant, worker, host, pid, started, token, acquired_at, renewed_at, expires_at, released)
                         VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8, 0) ON CONFLICT (tenant) DO NOTHING",
                    )
                    .bind(tenant)
                    .bind(&holder.worker)
                    .bind(&holder.host)
                    .bind(i64::from(holder.pid))
                    .bind(holder.started)
                    .bind(time_text(now))
                    .bind(time_text(now))
                    .bind(&expires)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                    if inserted == 1 {
                        return Ok(Ok(self.held(tenant, 1, ttl, asked)));
                    }
                }
                Some(row) => {
                    let expired = parse_time(&row.expires_at).is_none_or(|t| t <= now);
                    let ours = row.holder == *holder;
                    if !(row.released || expired || ours || row.holder.is_gone()) {
                        return Ok(Err(HeldBy {
                            worker: row.holder.worker,
                            expires_at: row.expires_at,
                        }));
                    }
                    let taken = sqlx::query(
                        "UPDATE leases SET worker = $1, host = $2, pid = $3, started = $4, token = token + 1,
                         acquired_at = $5, renewed_at = $6, expires_at = $7, released = 0
                         WHERE tenant = $8 AND token = $9",
                    )
                    .bind(&holder.worker)
                    .bind(&holder.host)
                    .bind(i64::from(holder.pid))
                    .bind(holder.started)
                    .bind(time_text(now))
                    .bind(time_text(now))
                    .bind(&expires)
                    .bind(tenant)
                    .bind(row.token)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                    if taken == 1 {
                        if !row.released && !ours {
                            tracing::info!(tenant, from = %row.holder.worker, "lease taken over");
                        }
                        return Ok(Ok(self.held(tenant, row.token + 1, ttl, asked)));
                    }
                }
            }
        }
        let row = self.lease_row(tenant).await?;
        Ok(Err(HeldBy {
            worker: row
                .as_ref()
                .map(|r| r.holder.worker.clone())
                .unwrap_or_default(),
            expires_at: row.map(|r| r.expires_at).unwrap_or_default(),
        }))
    }

    /// Claims up to `max` of `tenants` due for a cycle, for `holder`, in one statement:
    /// those whose lease is free and that no worker started since `since` (the tick),
    /// and those whose lease expired (a holder that died mid-cycle), least recently
    /// started first. On PostgreSQL the candidates are locked with `FOR UPDATE SKIP
    /// LOCKED`, so workers claiming at the same instant split the tenants between them
    /// instead of queueing on the same rows. A holder on this host seen to be gone
    /// frees its leases first. Answers the tenants claimed, each with its new token.
    pub async fn claim_due(
        &self,
        tenants: &[&str],
        holder: &Holder,
        ttl: Duration,
        since: chrono::DateTime<Utc>,
        max: usize,
    ) -> Result<Vec<(String, i64)>> {
        if tenants.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        let names = super::links::json(&tenants);
        // Every tenant has a row to lock: a new one is free (released, token 0).
        sqlx::query(self.sql(
            "INSERT INTO leases (tenant, worker, host, pid, token, acquired_at, renewed_at, expires_at, released)
             SELECT value, '', '', 0, 0, '', '', '', 1 FROM json_each($1) WHERE true
             ON CONFLICT (tenant) DO NOTHING",
            "INSERT INTO leases (tenant, worker, host, pid, token, acquired_at, renewed_at, expires_at, released)
             SELECT t, '', '', 0, 0, '', '', '', 1 FROM json_array_elements_text($1::json) AS n(t)
             ON CONFLICT (tenant) DO NOTHING",
        ))
        .bind(&names)
        .execute(&self.pool)
        .await?;
        self.free_gone_holders(&names).await?;
        let now = Utc::now();
        let expires = time_text(now + chrono::Duration::from_std(ttl).unwrap_or_default());
        let sql = format!(
            "UPDATE leases SET worker = $1, host = $2, pid = $3, started = $4, token = token + 1,
                    acquired_at = $5, renewed_at = $5, expires_at = $6, released = 0, last_started = $5
             WHERE tenant IN (
                 SELECT tenant FROM leases
                 WHERE tenant {}
                   AND ((released = 1 AND (last_started IS NULL OR last_started < $8))
                        OR (released = 0 AND expires_at <= $5))
                 ORDER BY last_started IS NOT NULL, last_started, tenant
                 LIMIT $9 {})
             RETURNING tenant, token",
            self.in_texts(7),
            self.sql("", "FOR UPDATE SKIP LOCKED")
        );
        let rows = sqlx::query(&sql)
            .bind(&holder.worker)
            .bind(&holder.host)
            .bind(i64::from(holder.pid))
            .bind(holder.started)
            .bind(time_text(now))
            .bind(&expires)
            .bind(&names)
            .bind(time_text(since))
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Frees the unexpired leases of `names` (a JSON list) held by a process of this
    /// host that is gone, each by compare-and-swap on its token.
    async fn free_gone_holders(&self, names: &str) -> Result<()> {
        let here = gethostname::gethostname().to_string_lossy().into_owned();
        let rows = sqlx::query(&format!(
            "SELECT tenant, worker, host, pid, started, token FROM leases
             WHERE released = 0 AND host = $1 AND tenant {}",
            self.in_texts(2)
        ))
        .bind(&here)
        .bind(names)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let holder = holder_at(&r, 1);
            if holder.is_gone() {
                let tenant: String = r.get(0);
                tracing::info!(tenant, from = %holder.worker, "lease of a gone process freed");
                sqlx::query(
                    "UPDATE leases SET expires_at = $1 WHERE tenant = $2 AND token = $3 AND released = 0",
                )
                .bind(time_text(Utc::now()))
                .bind(&tenant)
                .bind(r.get::<i64, _>(5))
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// The lease of `tenant` that [`Store::claim_due`] took with `token`, renewed from
    /// now in this (the tenant's) store; `asked` is when the claim was sent.
    pub fn adopt_lease(&self, tenant: &str, token: i64, ttl: Duration, asked: Instant) -> Lease {
        self.held(tenant, token, ttl, asked)
    }

    async fn lease_row(&self, tenant: &str) -> Result<Option<LeaseRow>> {
        let row = sqlx::query(
            "SELECT worker, host, pid, started, token, expires_at, released FROM leases WHERE tenant = $1",
        )
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| LeaseRow {
            holder: holder_at(&r, 0),
            token: r.get(4),
            expires_at: r.get(5),
            released: r.get::<i64, _>(6) != 0,
        }))
    }

    /// The lease of `tenant` as `status` shows it; `None` when it was never taken.
    pub async fn lease_state(&self, tenant: &str) -> Result<Option<LeaseState>> {
        // Token 0: the row a claim made before anyone held it.
        let row = self.lease_row(tenant).await?.filter(|r| r.token > 0);
        Ok(row.map(|r| LeaseState {
            holder_gone: !r.released && r.holder.is_gone(),
            worker: r.holder.worker,
            expires_at: r.expires_at,
            released: r.released,
        }))
    }

    /// Every lease: (tenant, worker, expires_at, released), for `status`.
    pub async fn leases(&self) -> Result<Vec<(String, String, String, bool)>> {
        let rows =
            sqlx::query("SELECT tenant, worker, expires_at, released FROM leases ORDER BY tenant")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get::<i64, _>(3) != 0))
            .collect())
    }

    /// Extends a lease by `ttl` if `fence` still holds it; false when it was lost.
    pub async fn renew_lease(&self, fence: &Fence, ttl: Duration) -> Result<bool> {
        let now = Utc::now();
        let expires = time_text(now + chrono::Duration::from_std(ttl).unwrap_or_default());
        let n = sqlx::query(
            "UPDATE leases SET renewed_at = $1, expires_at = $2 WHERE tenant = $3 AND token = $4 AND released = 0",
        )
        .bind(time_text(now))
        .bind(expires)
        .bind(&fence.tenant)
        .bind(fence.token)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The lease just taken; `asked` is when the take was sent.
    fn held(&self, tenant: &str, token: i64, ttl: Duration, asked: Instant) -> Lease {
        let fence = Fence {
            tenant: tenant.to_string(),
            token,
        };
        let state = Arc::new(Held {
            store: self.clone(),
            fence,
            ttl,
            lost: CancellationToken::new(),
            valid_until: Mutex::new(asked + ttl),
        });
        let renewer = tokio::spawn(renew_until_lost(state.clone()));
        Lease { state, renewer }
    }
}

/// The holder in a row's columns `worker, host, pid, started` from column `first` on.
fn holder_at(r: &sqlx::any::AnyRow, first: usize) -> Holder {
    Holder {
        worker: r.get(first),
        host: r.get(first + 1),
        pid: u32::try_from(r.get::<i64, _>(first + 2)).unwrap_or(0),
        started: r.get(first + 3),
    }
}

/// Renews the lease every third of its time to live; cancels `lost` when a renewal
/// finds the lease gone, or when renewals failed until it expired.
async fn renew_until_lost(lease: Arc<Held>) {
    let every = (lease.ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = lease.lost.cancelled() => return,
        }
        match lease.renew_now().await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(tenant = %lease.fence.tenant, "lease lost: another process took it over");
                lease.lost.cancel();
                return;
            }
            Err(e) if Instant::now() >= lease.valid_until() => {
                tracing::warn!(tenant = %lease.fence.tenant, error = %e, "lease expired: it could not be renewed");
                lease.lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(tenant = %lease.fence.tenant, error = %e, "lease renewal failed")
            }
        }
    }
}

impl Held {
    fn valid_until(&self) -> Instant {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One renewal in the store; on success the lease is ours for `ttl` from when it
    /// was asked.
    async fn renew_now(&self) -> Result<bool> {
        let asked = Instant::now();
        let renewed = self.store.renew_lease(&self.fence, self.ttl).await?;
        if renewed {
            *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = asked + self.ttl;
        }
        Ok(renewed)
    }
}

impl Lease {
    pub fn fence(&self) -> &Fence {
        &self.state.fence
    }

    /// Cancelled once the lease is known to be lost.
    pub fn lost(&self) -> &CancellationToken {
        &self.state.lost
    }

    /// Renews now (a claim found the lease expired by the clock): true when it still
    /// holds it.
    pub async fn renew(&self) -> bool {
        match self.state.renew_now().await {
            Ok(true) => true,
            _ => {
                self.state.lost.cancel();
                false
            }
        }
    }

    /// True when a write may leave now. Free while the last renewal is recent (the
    /// renewer keeps it so); past two thirds of the lease (this process was paused, or
    /// its store is slow) it asks the store first, so a process paused past its lease
    /// sends nothing once resumed, even for work it had claimed before.
    pub async fn ensure(&self) -> bool {
        if self.state.lost.is_cancelled() {
            return false;
        }
        if Instant::now() + self.state.ttl / 3 < self.state.valid_until() {
            return true;
        }
        self.renew().await
    }

    /// Gives the lease back, so that the next taker need not wait for it to expire.
    pub async fn release(&self) {
        self.renewer.abort();
        let fence = &self.state.fence;
        let _ = sqlx::query("UPDATE leases SET released = 1 WHERE tenant = $1 AND token = $2")
            .bind(&fence.tenant)
            .bind(fence.token)
            .execute(&self.state.store.pool)
            .await;
    }
}

impl crate::providers::http::WriteGate for Lease {
    fn may_write(&self) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(self.ensure())
    }

    /// Asked as the write's bytes go to the socket, `ensure` having said yes a moment
    /// before: still true unless this process was paused in between, for a sixth of
    /// the lease or more. Then the lease may be another's by now, and the write is
    /// dropped unsent (the store is not asked: this runs on the connection's task).
    fn still_may_write(&self) -> bool {
        !self.state.lost.is_cancelled()
            && Instant::now() + self.state.ttl / 6 < self.state.valid_until()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorePath;

    fn other(worker: &str) -> Holder {
        Holder {
            worker: worker.into(),
            host: "elsewhere".into(),
            pid: 1,
            started: Some(1),
        }
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_the_token_grows() {
        let store = Store::open(&StorePath::Memory, None).await.unwrap();
        let ttl = Duration::from_secs(30);
        let a = store
            .acquire_lease("default", &other("a"), ttl)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.fence().token, 1);
        let held = store
            .acquire_lease("default", &other("b"), ttl)
            .await
            .unwrap();
        assert_eq!(held.err().unwrap().worker, "a");
        a.release().await;
        let b = store
            .acquire_lease("default", &other("b"), ttl)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.fence().token, 2);
        // The old token no longer renews.
        let stale = Fence {
            tenant: "default".into(),
            token: 1,
        };
        assert!(!store.renew_lease(&stale, ttl).await.unwrap());
        assert!(store.renew_lease(b.fence(), ttl).await.unwrap());
    }

    #[tokio::test]
    async fn claimed_operations_not_sent_go_back_to_pending_uncounted_while_the_lease_holds() {
        use crate::model::{Field, Projection, ProviderName};
        use crate::store::links::{CustomerUpdate, NewOp};
        let store = Store::open(&StorePath::Memory, None).await.unwrap();
        let run = store.begin_run("once").await.unwrap();
        let id: i64 = sqlx::query("INSERT INTO customers (email, fields, updated_at, created_at) VALUES ('a@e.co', '{}', 'now', 'now') RETURNING id")
            .fetch_one(store.pool())
            .await
            .unwrap()
            .get(0);
        let op = NewOp {
            provider: ProviderName("p".into()),
            op: "create",
            remote_id: None,
            payload: Projection::new().with(Field::Email, Some("a@e.co")),
            changed: vec![Field::Email],
        };
        let update = CustomerUpdate {
            id: Some(crate::model::CustomerId(id)),
            ops: vec![op],
            ..CustomerUpdate::default()
        };
        store.save_batch(run, &[update]).await.unwrap();
        let state = || async {
            let r = sqlx::query("SELECT state, attempts FROM outbox")
                .fetch_one(store.pool())
                .await
                .unwrap();
            (r.get::<String, _>(0), r.get::<i64, _>(1))
        };
        let a = store
            .acquire_lease("default", &other("a"), Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        let ops = store
            .pending_ops(&ProviderName("p".into()), 0, 10, false)
            .await
            .unwrap();
        let ids: Vec<i64> = ops.iter().map(|o| o.id).collect();
        assert_eq!(store.claim_ops(&ids, a.fence()).await.unwrap(), ids);
        assert_eq!(state().await, ("in_flight".into(), 1));
        store.release_ops(&ids, a.fence()).await.unwrap();
        assert_eq!(state().await, ("pending".into(), 0));
        // Under a lost lease nothing is given back: the new holder's to judge.
        store.claim_ops(&ids, a.fence()).await.unwrap();
        let stale = a.fence().clone();
        a.release().await;
        store.release_ops(&ids, &stale).await.unwrap();
        assert_eq!(state().await, ("in_flight".into(), 1));
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over() {
        let store = Store::open(&StorePath::Memory, None).await.unwrap();
        let a = store
            .acquire_lease("default", &other("a"), Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        a.renewer.abort();
        // Its holder went silent long ago.
        sqlx::query("UPDATE leases SET expires_at = '2000-01-01T00:00:00.000000Z'")
            .execute(store.pool())
            .await
            .unwrap();
        let b = store
            .acquire_lease("default", &other("b"), Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.fence().token, 2);
        assert!(!store
            .renew_lease(a.fence(), Duration::from_secs(30))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_gone_holder_on_this_host_frees_the_lease_at_once() {
        let store = Store::open(&StorePath::Memory, None).await.unwrap();
        let mut dead = Holder::this_process(Some("dead"));
        dead.started = Some(-1); // not this process's start time: a reused pid
        let _a = store
            .acquire_lease("default", &dead, Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap();
        let me = Holder::this_process(None);
        let b = store
            .acquire_lease("default", &me, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(b.is_ok(), "a holder whose process is gone holds nothing");
    }

    #[tokio::test]
    async fn a_lease_taken_over_while_this_process_slept_lets_no_write_out() {
        let store = Store::open(&StorePath::Memory, None).await.unwrap();
        let ttl = Duration::from_secs(1);
        let a = store
            .acquire_lease("default", &other("a"), ttl)
            .await
            .unwrap()
            .unwrap();
        assert!(a.ensure().await, "a fresh lease lets writes out");
        // Another process took it over (its token is the next one).
        sqlx::query("UPDATE leases SET token = token + 1, worker = 'b'")
            .execute(store.pool())
            .await
            .unwrap();
        // This process was paused past its lease.
        *a.state.valid_until.lock().unwrap() = Instant::now();
        assert!(
            !a.ensure().await,
            "a lease lost while paused lets nothing out"
        );
        assert!(a.lost().is_cancelled());
    }

    #[test]
    fn this_process_is_alive() {
        let me = Holder::this_process(None);
        assert!(me.started.is_some());
        assert!(!me.is_gone());
    }
}
