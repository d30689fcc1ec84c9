//! The store: SQLite (the embedded default) or PostgreSQL, one engine over both.
//!
//! Owns: every SQL statement custsync runs, and the only knowledge of which database
//! it talks to. Links and customers are in `links.rs`, the outbox in `outbox.rs`, the
//! audit trail in `audit.rs`, leases in `lease.rs`. A `Store` is one tenant's data:
//! on SQLite its own file (the configured one for the single merchant, a sibling
//! `NAME` file per tenant), on PostgreSQL its own schema, beside the `custsync` schema
//! holding every tenant's lease. Statements are written once, with `$N` parameters
//! both databases read; the few that differ are picked by [`Backend`]. No
//! transaction is ever held across a network call.

pub mod activity;
pub mod audit;
pub mod erasure;
mod ingest;
pub mod lease;
pub mod links;
pub mod outbox;
mod rows;

pub use ingest::{Ingested, Rekeys};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

use crate::config::StorePath;
use crate::model::ProviderName;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database holds unreadable JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A run's id (`runs.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId(pub i64);

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Pages are stored one at a time (PostgreSQL runs the rest of a tenant's work
    /// on several connections): two providers' pages never both create one new person.
    ingest: Arc<tokio::sync::Mutex<()>>,
    /// Removes a dry run's copy when the last clone goes.
    _copy: Option<Arc<Copy>>,
}

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static PG_TENANT_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static PG_CLUSTER_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres-cluster");

/// The PostgreSQL schema of the leases, which every tenant's connections also see.
pub const CLUSTER_SCHEMA: &str = "custsync";

pub fn now_text() -> String {
    time_text(Utc::now())
}

pub fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// A tenant's PostgreSQL schema: `t_` and the name with `_` written `__` and `-`
/// written `_h` (so two names never share a schema), hashed where that is longer
/// than PostgreSQL's 63-byte identifiers.
pub fn tenant_schema(tenant: &str) -> String {
    let mut s = String::from("t_");
    for c in tenant.chars() {
        match c {
            '_' => s.push_str("__"),
            '-' => s.push_str("_h"),
            c if c.is_ascii_alphanumeric() => s.push(c.to_ascii_lowercase()),
            c => s.push_str(&format!("_x{:x}", c as u32)),
        }
    }
    if s.len() > 63 {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(tenant.as_bytes());
        let hex = hex::encode(&digest[..8]);
        s.truncate(40);
        s.push_str("_z");
        s.push_str(&hex);
    }
    s
}

/// The SQLite file of a tenant: the configured file itself for the single merchant
/// (`None`), `custsync.NAME.db` beside `custsync.db` for a named tenant.
pub fn tenant_file(base: &Path, tenant: Option<&str>) -> PathBuf {
    let Some(name) = tenant else {
        return base.to_path_buf();
    };
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "custsync".into());
    let file = match base.extension() {
        Some(ext) => format!("{stem}.{name}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{name}"),
    };
    base.with_file_name(file)
}

fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

impl Store {
    /// Opens (creating if missing, with mode 0600) and migrates a tenant's store;
    /// `tenant` is `None` for the single merchant of a config without `[tenants]`.
    pub async fn open(path: &StorePath, tenant: Option<&str>) -> Result<Store> {
        match path {
            StorePath::Memory => Store::open_sqlite(None, true).await,
            StorePath::File(p) => Store::open_sqlite(Some(&tenant_file(p, tenant)), true).await,
            StorePath::Postgres(url) => {
                Store::open_postgres(url.expose(), tenant.unwrap_or(DEFAULT_TENANT)).await
            }
        }
    }

    /// Opens a store that already exists, for the commands that only read (`status`,
    /// `audit`, `activity`): `Ok(None)` where there is none yet, and nothing is made.
    /// Migrations still missing are applied, under the same lock as `open`.
    pub async fn open_existing(path: &StorePath, tenant: Option<&str>) -> Result<Option<Store>> {
        match path {
            StorePath::Memory => Store::open(path, tenant).await.map(Some),
            StorePath::File(p) => {
                let p = tenant_file(p, tenant);
                match std::fs::metadata(&p) {
                    Ok(_) => Store::open_sqlite(Some(&p), false).await.map(Some),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(StoreError::Io {
                        path: p.display().to_string(),
                        source,
                    }),
                }
            }
            StorePath::Postgres(url) => {
                let tenant = tenant.unwrap_or(DEFAULT_TENANT);
                if !postgres_schema_exists(url.expose(), tenant).await? {
                    return Ok(None);
                }
                Store::open_postgres(url.expose(), tenant).await.map(Some)
            }
        }
    }

    /// SQLite: WAL, one connection in this process (SQLite has one writer; nothing
    /// can cut it, so it is not pinged before each use), migrations under `DB.lock`.
    async fn open_sqlite(file: Option<&Path>, create: bool) -> Result<Store> {
        install_drivers();
        let (url, describe, _lock) = match file {
            None => ("sqlite::memory:".to_string(), ":memory:".to_string(), None),
            Some(p) => {
                if create {
                    create_private(p)?;
                }
                let lock = migration_lock(p).await?;
                let abs = std::path::absolute(p).map_err(|source| StoreError::Io {
                    path: p.display().to_string(),
                    source,
                })?;
                let encoded =
                    percent_encoding::utf8_percent_encode(&abs.to_string_lossy(), PATH_ESCAPES)
                        .to_string();
                // `rw`: a file gone between the look and the open is an error, not new.
                (
                    format!("sqlite://{encoded}?mode=rw"),
                    p.display().to_string(),
                    Some(lock),
                )
            }
        };
        let opts: AnyConnectOptions = url.parse().map_err(|source| StoreError::Open {
            path: describe.clone(),
            source,
        })?;
        let open = |source| StoreError::Open {
            path: describe.clone(),
            source,
        };
        // A file that is no database fails here at once, where the pool would retry.
        if file.is_some() {
            use sqlx::{ConnectOptions, Connection};
            let mut probe = opts.connect().await.map_err(open)?;
            probe.execute(sqlite_settings()).await.map_err(open)?;
            probe.close().await.map_err(open)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_connect(|conn, _| {
                Box::pin(async move { conn.execute(sqlite_settings()).await.map(|_| ()) })
            })
            .connect_with(opts)
            .await
            .map_err(open)?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Store::ready(pool, Backend::Sqlite, None).await
    }

    /// PostgreSQL: the tenant's schema (made, with the leases' schema, under an
    /// advisory lock, so workers starting together do not race), then a pool whose
    /// connections see that schema first and the leases' schema after.
    async fn open_postgres(url: &str, tenant: &str) -> Result<Store> {
        install_drivers();
        let schema = tenant_schema(tenant);
        ensure_postgres_schemas(url, &schema).await?;
        let opts = postgres_options(url, &[&schema, CLUSTER_SCHEMA])?;
        // A few connections per tenant: the providers' pushes and reads overlap (each
        // round trip to the server waits), while pages are stored one at a time.
        // Not pinged before each use (sqlx's default would double the round trips): a
        // cut connection fails the statement, which the run reports.
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .test_before_acquire(false)
            .idle_timeout(Some(Duration::from_secs(60)))
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: redact(url),
                source,
            })?;
        PG_TENANT_MIGRATIONS.run(&pool).await?;
        Store::ready(pool, Backend::Postgres, None).await
    }

    /// Brings stored emails to one form for every lookup (emails stored before NFC
    /// and ASCII domains): a data migration, run under the migrations' lock.
    async fn ready(pool: AnyPool, backend: Backend, copy: Option<Arc<Copy>>) -> Result<Store> {
        let store = Store {
            pool,
            backend,
            ingest: Arc::default(),
            _copy: copy,
        };
        let left = store.renormalize_emails().await?;
        if !left.is_empty() {
            tracing::warn!(
                customers = left.len(),
                "emails held in two forms by two customers were left as they are"
            );
        }
        Ok(store)
    }

    /// PostgreSQL: the store of every tenant's lease (the `custsync` schema), where a
    /// worker claims its due tenants in one statement. SQLite has none: each tenant's
    /// lease is in that tenant's file.
    pub async fn leases_of(path: &StorePath) -> Result<Option<Store>> {
        match path {
            StorePath::Postgres(url) => Ok(Some(Store {
                pool: cluster_pool(url.expose()).await?,
                backend: Backend::Postgres,
                ingest: Arc::default(),
                _copy: None,
            })),
            _ => Ok(None),
        }
    }

    /// PostgreSQL: refreshes the planner's statistics of the tables a run reads most,
    /// after a run changed many rows (a first sync would otherwise be planned as if
    /// the tables were empty, nested loops over thousands of rows). SQLite: nothing.
    pub async fn refresh_statistics(&self) -> Result<()> {
        self.analyze("customers, links, outbox, activity_marks")
            .await
    }

    /// PostgreSQL: refreshes the planner's statistics of `tables` (a list of their
    /// names). SQLite: nothing.
    pub(crate) async fn analyze(&self, tables: &str) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query(&format!("ANALYZE {tables}"))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Membership in the set of the strings in the JSON list bound at `$n`.
    pub(crate) fn in_texts(&self, n: u8) -> String {
        in_texts(self.backend, n)
    }

    /// Membership in the set of the integers in the JSON list bound at `$n`.
    pub(crate) fn in_ints(&self, n: u8) -> String {
        in_ints(self.backend, n)
    }

    /// The select list that aggregates a query's rows into one JSON text.
    pub(crate) fn json_rows(&self, columns: &str) -> String {
        json_rows(self.backend, columns)
    }

    /// The statement for this store's database, where the two differ.
    pub(crate) fn sql(&self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self.backend {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A copy of a tenant's store for a dry run to work on, gone when closed: on
    /// SQLite a copy of the file in a temporary directory (an empty store where there
    /// is none yet), on PostgreSQL a temporary schema filled from the tenant's.
    pub async fn dry_copy(path: &StorePath, tenant: Option<&str>) -> Result<Store> {
        match path {
            StorePath::Memory => Store::open(path, tenant).await,
            StorePath::File(_) => {
                let dir = tempfile::tempdir().map_err(|source| StoreError::Io {
                    path: "temporary directory for the dry run".into(),
                    source,
                })?;
                let copy = dir.path().join("dry-run.db");
                if let Some(real) = Store::open_existing(path, tenant).await? {
                    sqlx::query("VACUUM INTO $1")
                        .bind(copy.to_string_lossy().into_owned())
                        .execute(&real.pool)
                        .await?;
                    real.close().await;
                }
                let mut store = Store::open_sqlite(Some(&copy), true).await?;
                store._copy = Some(Arc::new(Copy::Dir(dir)));
                Ok(store)
            }
            StorePath::Postgres(url) => {
                let tenant = tenant.unwrap_or(DEFAULT_TENANT);
                let url = url.expose();
                let source = tenant_schema(tenant);
                let copy = format!(
                    "dry_{}_{}_{:08x}",
                    Utc::now().timestamp(),
                    std::process::id(),
                    rand::random::<u32>()
                );
                ensure_postgres_schemas(url, &copy).await?;
                let opts = postgres_options(url, &[&copy, CLUSTER_SCHEMA])?;
                let pool = AnyPoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts)
                    .await
                    .map_err(|source| StoreError::Open {
                        path: redact(url),
                        source,
                    })?;
                PG_TENANT_MIGRATIONS.run(&pool).await?;
                if postgres_schema_exists(url, tenant).await? {
                    let mut tx = pool.begin().await?;
                    for table in TABLES {
                        let copied =
                            format!("INSERT INTO {copy}.{table} SELECT * FROM {source}.{table}");
                        sqlx::query(&copied).execute(&mut *tx).await?;
                    }
                    for table in ["customers", "outbox", "runs", "audit", "activity"] {
                        let restart = format!(
                            "SELECT setval(pg_get_serial_sequence('{copy}.{table}', 'id'),
                                           COALESCE((SELECT MAX(id) FROM {copy}.{table}), 0) + 1, false)"
                        );
                        sqlx::query(&restart).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                }
                let copy = Arc::new(Copy::Schema(copy));
                Store::ready(pool, Backend::Postgres, Some(copy)).await
            }
        }
    }

    pub async fn close(&self) {
        if let Some(Copy::Schema(schema)) = self._copy.as_deref() {
            let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            if let Err(e) = sqlx::query(&drop).execute(&self.pool).await {
                tracing::warn!(schema, error = %e, "the dry run's copy was not dropped");
            }
        }
        self.pool.close().await;
    }

    pub async fn begin_run(&self, mode: &str) -> Result<RunId> {
        let id = sqlx::query(
            "INSERT INTO runs (started_at, mode, status) VALUES ($1, $2, 'running') RETURNING id",
        )
        .bind(now_text())
        .bind(mode)
        .fetch_one(&self.pool)
        .await?
        .get(0);
        Ok(RunId(id))
    }

    pub async fn finish_run(&self, run: RunId, status: &str, report: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET finished_at = $1, status = $2, report = $3 WHERE id = $4")
            .bind(now_text())
            .bind(status)
            .bind(report)
            .bind(run.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Runs that never finished (the process was killed) are marked as interrupted.
    pub async fn close_interrupted_runs(&self) -> Result<u64> {
        let n = sqlx::query(
            "UPDATE runs SET status = 'interrupted', finished_at = $1 WHERE status = 'running'",
        )
        .bind(now_text())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// The last finished run: (id, started_at, finished_at, mode, status, report).
    pub async fn last_runs(&self, limit: i64) -> Result<Vec<RunRow>> {
        let rows = sqlx::query("SELECT id, started_at, finished_at, mode, status, report FROM runs ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| run_row(&r)).collect())
    }

    /// The newest run that stored a report (a run still going, or killed, has none).
    pub async fn last_reported_run(&self) -> Result<Option<RunRow>> {
        let row = sqlx::query(
            "SELECT id, started_at, finished_at, mode, status, report FROM runs
             WHERE report IS NOT NULL ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| run_row(&r)))
    }

    pub async fn cursor(&self, provider: &ProviderName) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM cursors WHERE provider = $1")
            .bind(&provider.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn set_cursor(&self, provider: &ProviderName, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO cursors (provider, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT(provider) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(&provider.0)
        .bind(value)
        .bind(now_text())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn cursors(&self) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query("SELECT provider, value, updated_at FROM cursors ORDER BY provider")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}

#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub mode: String,
    pub status: String,
    pub report: Option<serde_json::Value>,
}

/// A `runs` row read as `id, started_at, finished_at, mode, status, report`.
fn run_row(r: &sqlx::any::AnyRow) -> RunRow {
    RunRow {
        id: r.get(0),
        started_at: r.get(1),
        finished_at: r.get(2),
        mode: r.get(3),
        status: r.get(4),
        report: r
            .get::<Option<String>, _>(5)
            .and_then(|s| serde_json::from_str(&s).ok()),
    }
}

/// Membership in the set of the strings in the JSON list bound at `$n`.
///
/// Written after the column: `col IN (…)` on SQLite, `col = ANY(ARRAY(…))` on
/// PostgreSQL, whose planner turns an `IN (SELECT …)` of a JSON list into a hash join
/// over a scan of the whole table (it guesses 100 rows and, early in a first sync,
/// a tiny table), where `= ANY` of an array is an index scan.
pub(crate) fn in_texts(backend: Backend, n: u8) -> String {
    match backend {
        Backend::Sqlite => format!("IN (SELECT value FROM json_each(${n}))"),
        Backend::Postgres => format!("= ANY(ARRAY(SELECT json_array_elements_text(${n}::json)))"),
    }
}

/// Membership in the set of the integers in the JSON list bound at `$n`.
///
/// Written after the column, as [`in_texts`].
pub(crate) fn in_ints(backend: Backend, n: u8) -> String {
    match backend {
        Backend::Sqlite => format!("IN (SELECT value FROM json_each(${n}))"),
        Backend::Postgres => {
            format!("= ANY(ARRAY(SELECT json_array_elements_text(${n}::json)::BIGINT))")
        }
    }
}

/// The select list that aggregates a query's rows into one JSON array text of arrays
/// (`[]` when there are none), each row's `columns` in order.
pub(crate) fn json_rows(backend: Backend, columns: &str) -> String {
    match backend {
        Backend::Sqlite => format!("json_group_array(json_array({columns}))"),
        Backend::Postgres => {
            format!("COALESCE(json_agg(json_build_array({columns})), '[]'::json)::text")
        }
    }
}

/// The rows of a query whose one column is [`json_rows`], decoded: one row crossed
/// from the database instead of one per row, and no row is converted column by column.
pub(crate) fn decode_rows<T: serde::de::DeserializeOwned>(text: Option<String>) -> Result<Vec<T>> {
    Ok(match text {
        Some(t) => serde_json::from_str(&t)?,
        None => Vec::new(),
    })
}

/// Which database a connection talks to.
pub(crate) fn backend_of(conn: &sqlx::AnyConnection) -> Backend {
    if conn.backend_name() == "PostgreSQL" {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// Every SQLite connection's settings: WAL (a reader never waits for the writer),
/// NORMAL sync (a commit survives a killed process; the README says what survives a
/// power loss), foreign keys, and a long wait for another process's write.
/// The page cache may grow to 32 MiB (SQLite's default is 2 MiB, which a store of
/// 10,000 customers outgrows: every statement then reads pages back from the OS).
/// Statement journals stay in memory (`temp_store`): each multi-row statement inside a
/// transaction otherwise writes the pages it changes to a temporary file first (a
/// first run's system time about a quarter lower). The WAL is checkpointed every
/// 10,000 pages (40 MiB) instead of 1,000: a page changed often is copied back to
/// the database once per checkpoint, and each checkpoint ends in two fsyncs.
/// `$sync` is NORMAL, or FULL: every commit on disk before it returns, so that it also
/// survives a power loss (`[store] synchronous = "full"`).
macro_rules! sqlite_settings {
    ($sync:literal) => {
        concat!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = ",
            $sync,
            "; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 30000; PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 10000;"
        )
    };
}

static SYNCHRONOUS_FULL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the SQLite stores this process opens from now on commit with FULL sync
/// (`[store] synchronous = "full"`, set once from the config at start).
pub fn set_synchronous_full(full: bool) {
    SYNCHRONOUS_FULL.store(full, std::sync::atomic::Ordering::Relaxed);
}

/// The settings of every SQLite connection this process opens: `synchronous` is a
/// setting of the connection, so each one, the pool's as the probe's, gets them all.
fn sqlite_settings() -> &'static str {
    if SYNCHRONOUS_FULL.load(std::sync::atomic::Ordering::Relaxed) {
        sqlite_settings!("FULL")
    } else {
        sqlite_settings!("NORMAL")
    }
}

pub use crate::config::DEFAULT_TENANT;

/// Every table of a tenant's store, parents before children (`activity_sources`
/// after the links and marks: copied before, its trigger would mark the links copied).
const TABLES: [&str; 10] = [
    "customers",
    "links",
    "cursors",
    "outbox",
    "runs",
    "audit",
    "activity",
    "activity_marks",
    "group_members",
    "activity_sources",
];

/// What a path needs escaped to sit in a `sqlite://` URL.
const PATH_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'?')
    .add(b'#')
    .add(b'%');

/// A dry run's copy, removed with the store.
enum Copy {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    /// A temporary PostgreSQL schema, dropped through the copy's own pool.
    Schema(String),
}

/// `postgres://user:***@host/db`: a URL fit for an error message.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "postgres://(unreadable URL)".into(),
    }
}

/// How long the server keeps a transaction whose client went silent inside it. No
/// transaction of custsync waits on anything but the database, so only a paused or
/// stuck process is idle in one: the server then rolls it back, and its row locks do
/// not stop the worker that took its leases over.
const IDLE_IN_TRANSACTION_MS: u32 = 10_000;

/// Connection options whose sessions see `schemas`, in that order.
fn postgres_options(url: &str, schemas: &[&str]) -> Result<AnyConnectOptions> {
    let bad = |e: url::ParseError| StoreError::Open {
        path: redact(url),
        source: sqlx::Error::Configuration(e.into()),
    };
    let mut u = url::Url::parse(url).map_err(bad)?;
    u.query_pairs_mut().append_pair(
        "options",
        &format!(
            "-c search_path={} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
            schemas.join(",")
        ),
    );
    u.as_str().parse().map_err(|source| StoreError::Open {
        path: redact(url),
        source,
    })
}

/// The pool on the leases' schema of each PostgreSQL store this process uses.
fn cluster_pools() -> &'static std::sync::Mutex<std::collections::HashMap<String, AnyPool>> {
    static POOLS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, AnyPool>>,
    > = std::sync::OnceLock::new();
    POOLS.get_or_init(Default::default)
}

/// The leases' schema of the PostgreSQL store at `url`, made and migrated on first use.
pub(crate) async fn cluster_pool(url: &str) -> Result<AnyPool> {
    install_drivers();
    if let Some(pool) = cluster_pools().lock().expect("pools").get(url) {
        return Ok(pool.clone());
    }
    let open = |source| StoreError::Open {
        path: redact(url),
        source,
    };
    let pool = AnyPoolOptions::new()
        .max_connections(4)
        .min_connections(0)
        .idle_timeout(Some(Duration::from_secs(60)))
        .connect_lazy_with(postgres_options(url, &[CLUSTER_SCHEMA])?);
    let mut conn = pool.acquire().await.map_err(open)?;
    create_schema(&mut conn, CLUSTER_SCHEMA).await?;
    drop(conn);
    PG_CLUSTER_MIGRATIONS.run(&pool).await?;
    cluster_pools()
        .lock()
        .expect("pools")
        .insert(url.to_string(), pool.clone());
    Ok(pool)
}

/// Makes the leases' schema and `schema` where missing.
async fn ensure_postgres_schemas(url: &str, schema: &str) -> Result<()> {
    let mut conn = cluster_pool(url).await?.acquire().await?;
    create_schema(&mut conn, schema).await
}

/// Makes `schema` where missing, under an advisory lock: workers starting together
/// make their schemas one at a time (two `CREATE SCHEMA IF NOT EXISTS` at once can
/// still collide in PostgreSQL's catalog).
async fn create_schema(conn: &mut sqlx::AnyConnection, schema: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_lock(7311455401)")
        .execute(&mut *conn)
        .await?;
    let made = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut *conn)
        .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(7311455401)")
        .execute(&mut *conn)
        .await;
    made?;
    Ok(())
}

async fn postgres_schema_exists(url: &str, tenant: &str) -> Result<bool> {
    let pool = cluster_pool(url).await?;
    let found = sqlx::query("SELECT 1 FROM pg_namespace WHERE nspname = $1")
        .bind(tenant_schema(tenant))
        .fetch_optional(&pool)
        .await?;
    Ok(found.is_some())
}

/// Two processes starting at once on a new database would both apply the migrations
/// (sqlx does not lock SQLite): an exclusive lock on `DB.lock` beside the database
/// lets one migrate at a time, held until the returned file is dropped. Not on the
/// database file itself: closing any descriptor of it would drop SQLite's own (POSIX)
/// locks.
async fn migration_lock(db: &Path) -> Result<std::fs::File> {
    let mut lock_path = db.to_path_buf().into_os_string();
    lock_path.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let io = |source| StoreError::Io {
        path: lock_path.display().to_string(),
        source,
    };
    let file = create_private(&lock_path)?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)
}

/// Creates the database file readable by its owner only, before SQLite opens it.
fn create_private(path: &Path) -> Result<std::fs::File> {
    let io = |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(io)
}

/// Runs a statement of a test's own on the store.
#[cfg(test)]
pub(crate) async fn exec(s: &Store, sql: &str) {
    sqlx::query(sql)
        .execute(s.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Asserts that SQLite runs `sql` (with `params` parameters, all bound to 0) reading
/// `index` and sorting nothing: no scan of every row, no sort of them.
#[cfg(test)]
pub(crate) async fn reads_in_order(s: &Store, sql: &str, params: usize, index: &str) {
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut query = sqlx::query(&explain);
    for _ in 0..params {
        query = query.bind(0i64);
    }
    let plan: Vec<String> = query
        .fetch_all(s.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| sqlx::Row::get::<String, _>(r, 3))
        .collect();
    assert!(
        plan.iter().any(|step| step.contains(index)),
        "{index} not used: {plan:?}"
    );
    assert!(
        !plan.iter().any(|step| step.contains("TEMP B-TREE")),
        "sorted: {plan:?}"
    );
}
