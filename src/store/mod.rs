//! The SQLite store: opening it (WAL, mode 0600, migrations), runs and cursors.
//!
//! Owns: every SQL statement custsync runs. Links and customers are in `links.rs`,
//! the outbox in `outbox.rs`, the audit trail in `audit.rs`. All access goes through
//! one connection, so SQLite's single writer is never contended; no transaction is
//! ever held across a network call.

pub mod activity;
pub mod audit;
pub mod erasure;
mod ingest;
pub mod lease;
pub mod links;
pub mod outbox;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

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

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

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

impl Store {
    /// Opens (creating if missing, with mode 0600) and migrates the database.
    pub async fn open(path: &StorePath) -> Result<Store> {
        match path {
            StorePath::Memory => {
                Store::connect(path, SqliteConnectOptions::from_str("sqlite::memory:")?).await
            }
            StorePath::File(p) => {
                create_private(p)?;
                let _lock = migration_lock(p).await?;
                Store::connect(path, SqliteConnectOptions::new().filename(p)).await
            }
            // Wired in the PostgreSQL store; until then, said as a database error.
            StorePath::Postgres(_) => Err(StoreError::Open {
                path: describe(path),
                source: sqlx::Error::Configuration(
                    "the PostgreSQL store is not available yet".into(),
                ),
            }),
        }
    }

    /// Opens a database that already exists, for the commands that only read
    /// (`status`, `audit`, `activity`): `Ok(None)` where there is none yet, and no file
    /// is made. Migrations still missing are applied, under the same lock as `open`.
    pub async fn open_existing(path: &StorePath) -> Result<Option<Store>> {
        let StorePath::File(p) = path else {
            return Store::open(path).await.map(Some);
        };
        match std::fs::metadata(p) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: p.display().to_string(),
                    source,
                })
            }
        }
        let _lock = migration_lock(p).await?;
        // Gone between the look and the open: SQLite says so, it makes nothing.
        let opts = SqliteConnectOptions::new()
            .filename(p)
            .create_if_missing(false);
        Store::connect(path, opts).await.map(Some)
    }

    /// Connects with custsync's settings, migrates, and brings stored emails to one
    /// form; the caller holds the migration lock where there is a file.
    async fn connect(path: &StorePath, opts: SqliteConnectOptions) -> Result<Store> {
        let opts = opts
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        // One connection, in this process: nothing can cut it, so it is not pinged
        // before each use (sqlx's default), which would double the round trips to
        // SQLite's thread.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: describe(path),
                source,
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let store = Store { pool };
        // Emails stored before NFC and ASCII domains: one form for every lookup. A
        // data migration, so under the same lock.
        let left = store.renormalize_emails().await?;
        if !left.is_empty() {
            tracing::warn!(
                customers = left.len(),
                "emails held in two forms by two customers were left as they are"
            );
        }
        Ok(store)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Copies the whole database into `target` (a dry run works on such a copy).
    pub async fn copy_to(&self, target: &Path) -> Result<()> {
        sqlx::query("VACUUM INTO ?")
            .bind(target.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn begin_run(&self, mode: &str) -> Result<RunId> {
        let id =
            sqlx::query("INSERT INTO runs (started_at, mode, status) VALUES (?, ?, 'running')")
                .bind(now_text())
                .bind(mode)
                .execute(&self.pool)
                .await?
                .last_insert_rowid();
        Ok(RunId(id))
    }

    pub async fn finish_run(
        &self,
        run: RunId,
        status: &str,
        report: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query("UPDATE runs SET finished_at = ?, status = ?, report = ? WHERE id = ?")
            .bind(now_text())
            .bind(status)
            .bind(report.to_string())
            .bind(run.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Runs that never finished (the process was killed) are marked as interrupted.
    pub async fn close_interrupted_runs(&self) -> Result<u64> {
        let n = sqlx::query(
            "UPDATE runs SET status = 'interrupted', finished_at = ? WHERE status = 'running'",
        )
        .bind(now_text())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// The last finished run: (id, started_at, finished_at, mode, status, report).
    pub async fn last_runs(&self, limit: i64) -> Result<Vec<RunRow>> {
        let rows = sqlx::query("SELECT id, started_at, finished_at, mode, status, report FROM runs ORDER BY id DESC LIMIT ?")
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
        let row = sqlx::query("SELECT value FROM cursors WHERE provider = ?")
            .bind(&provider.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn set_cursor(&self, provider: &ProviderName, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO cursors (provider, value, updated_at) VALUES (?, ?, ?)
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
fn run_row(r: &sqlx::sqlite::SqliteRow) -> RunRow {
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

fn describe(path: &StorePath) -> String {
    match path {
        StorePath::Memory => ":memory:".into(),
        StorePath::File(p) => p.display().to_string(),
        StorePath::Postgres(url) => url.to_string(),
    }
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
