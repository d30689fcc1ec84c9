//! The five-provider test world for the rate-limit, fault and crash stories: the five
//! emulators (`Sandboxes`), a config written for them with per-provider keys, a
//! temporary database, the real binary run or spawned against them, and the check
//! that every customer is in every provider exactly once.
//!
//! Every story runs on both stores: write it as `async fn name(b: Backend)` inside
//! `five::both! { ... }`, start its world with `Five::start_on(b)` (or
//! `Five::with(sb).on(b)`), and it becomes the two tests `name::sqlite` and
//! `name::postgres`. PostgreSQL comes from [`pg`] (a throwaway cluster per test
//! process, one database per test), which this module includes itself: a test file
//! that includes `five` reaches it as `five::pg` and must not include `pg.rs` again
//! (that would start a second cluster).

#![allow(dead_code)]

/// The throwaway PostgreSQL cluster (see `pg.rs`).
#[path = "pg.rs"]
pub mod pg;

/// Turns each story `async fn name(b: Backend) { ... }` into a module `name` with two
/// tests, `name::sqlite` and `name::postgres`, each on a two-worker multi-thread
/// runtime. Outer attributes (doc comments, `#[ignore]`) go to both tests.
/// `#[postgres_ignore = "why"]` first marks only the PostgreSQL variant ignored (for a
/// known product bug on PostgreSQL; the reason should start with `postgres:`).
/// The story sees the test file's items through `use super::*`.
#[allow(unused_macros)]
macro_rules! both {
    () => {};
    (
        #[postgres_ignore = $why:literal]
        $(#[$attr:meta])*
        async fn $name:ident($b:ident : Backend) $body:block
        $($rest:tt)*
    ) => {
        $crate::five::both!(@one [$(#[$attr])*] [#[ignore = $why]] $name $b $body);
        $crate::five::both!($($rest)*);
    };
    (
        $(#[$attr:meta])*
        async fn $name:ident($b:ident : Backend) $body:block
        $($rest:tt)*
    ) => {
        $crate::five::both!(@one [$(#[$attr])*] [] $name $b $body);
        $crate::five::both!($($rest)*);
    };
    (@one [$(#[$attr:meta])*] [$(#[$pg:meta])*] $name:ident $b:ident $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::five::Backend;

            async fn story($b: Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attr])*
            async fn sqlite() {
                story(Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attr])*
            $(#[$pg])*
            async fn postgres() {
                story(Backend::Postgres).await
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use custsync::sandbox::all::{Sandboxes, NAMES};
use custsync::sandbox::faults::Faults;
use custsync::sandbox::{ecwid, malomo, nuvemshop, partially, RequestLog};

/// The store a story runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The SQLite file `Five::db_path()`.
    Sqlite,
    /// A fresh database of its own on this process's throwaway cluster (`pg`): the
    /// single-merchant tenant in schema `t_default`, the leases in `custsync`.
    Postgres,
}

impl Backend {
    /// `Some(url)` of a fresh PostgreSQL database, `None` for SQLite (the file of the
    /// world's directory). Panics naming the missing program without PostgreSQL.
    pub async fn store_url(self) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => {
                pg::require();
                Some(pg::database().await)
            }
        }
    }
}

/// Every row of every table of the store at `url` as text, to prove that personal
/// data is gone: for `sqlite://` the bytes of the database file (lossily), for
/// `postgres://` each row of each table of every schema (`row::text`), one a line,
/// under a `-- schema.table` heading.
pub async fn store_text(url: &str) -> String {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        return String::from_utf8_lossy(&bytes).into_owned();
    }
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables \
         WHERE table_type = 'BASE TABLE' \
         AND table_schema NOT IN ('pg_catalog', 'information_schema') \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut conn)
    .await
    .expect("listing the tables");
    assert!(
        tables.iter().any(|(s, _)| s == "t_default"),
        "no tenant schema t_default in {tables:?}"
    );
    let mut text = String::new();
    for (schema, table) in tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT t::text FROM \"{schema}\".\"{table}\" t"))
                .fetch_all(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("reading {schema}.{table}: {e}"));
        text.push_str(&format!("-- {schema}.{table}\n"));
        for row in rows {
            text.push_str(&row);
            text.push('\n');
        }
    }
    let _ = conn.close().await;
    text
}

pub struct Five {
    pub sb: Sandboxes,
    pub dir: tempfile::TempDir,
    /// Keys added to every `[providers.*]` table (timeouts, retries, rate limit).
    pub provider_keys: String,
    /// Keys for one provider's table instead of `provider_keys`, by label (`store`,
    /// `shipping`, ...).
    pub keys_for: BTreeMap<&'static str, String>,
    /// The body of `[sync]`.
    pub sync: String,
    /// `RUST_LOG` of the runs.
    pub rust_log: String,
    /// `[store] url`; `None`: the SQLite file `db_path()`.
    pub store_url: Option<String>,
}

/// One run of the binary.
pub struct Run {
    pub code: i32,
    pub stderr: String,
    pub stdout: String,
    pub report: Option<serde_json::Value>,
    pub took: Duration,
}

impl Run {
    pub fn total(&self, key: &str) -> u64 {
        let Some(r) = &self.report else { return 0 };
        r["providers"]
            .as_object()
            .map(|m| m.values().filter_map(|p| p[key].as_u64()).sum())
            .unwrap_or(0)
    }

    pub fn count(&self, provider: &str, key: &str) -> u64 {
        self.report
            .as_ref()
            .and_then(|r| r["providers"][provider][key].as_u64())
            .unwrap_or_else(|| panic!("no providers.{provider}.{key} in {:?}", self.report))
    }

    pub fn errors(&self) -> Vec<String> {
        self.report
            .as_ref()
            .and_then(|r| r["errors"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    /// Context for a failed assertion: the report and the end of the logs.
    pub fn why(&self) -> String {
        let tail: Vec<&str> = self.stderr.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "exit {}\nreport: {}\nstderr (end):\n{}",
            self.code,
            self.report
                .as_ref()
                .map(|r| serde_json::to_string_pretty(r).unwrap_or_default())
                .unwrap_or_default(),
            tail.join("\n")
        )
    }
}

/// The binary with `--config CONFIG` and `args`, `RUST_LOG` set, killed when dropped.
pub fn custsync(
    config: &std::path::Path,
    args: &[&str],
    rust_log: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_custsync"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CUSTSYNC_CONFIG")
        .env("RUST_LOG", rust_log)
        .kill_on_drop(true);
    cmd
}

/// Starts `cmd` with its stderr in the file `log` (its stdout dropped), left running.
pub fn spawn_to_log(
    mut cmd: tokio::process::Command,
    log: &std::path::Path,
) -> tokio::process::Child {
    let file = std::fs::File::create(log).expect("log file");
    cmd.stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("spawn custsync")
}

impl Five {
    pub async fn start() -> Five {
        Five::with(Sandboxes::start().await.expect("start the emulators"))
    }

    pub fn with(sb: Sandboxes) -> Five {
        Five {
            sb,
            dir: tempfile::tempdir().expect("tempdir"),
            provider_keys: "rate_limit = { per_second = 1000.0, burst = 100 }\n".into(),
            keys_for: BTreeMap::new(),
            sync: String::new(),
            rust_log: "custsync=debug,warn".into(),
            store_url: None,
        }
    }

    /// `Five::start()` on the store `b`.
    pub async fn start_on(b: Backend) -> Five {
        Five::start().await.on(b).await
    }

    /// This world with its store on `b` (a fresh PostgreSQL database for `Postgres`).
    pub async fn on(mut self, b: Backend) -> Five {
        self.store_url = b.store_url().await;
        self
    }

    /// Starts the five with this Nuvemshop (e.g. its leaky bucket on).
    pub async fn with_nuvemshop(opts: nuvemshop::Options) -> Five {
        let opts = custsync::sandbox::all::Options {
            nuvemshop: opts,
            ..Default::default()
        };
        Five::with(
            Sandboxes::start_with(opts)
                .await
                .expect("start the emulators"),
        )
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("custsync.db")
    }

    /// The `[store] url` of the config: `store_url`, or the SQLite file `db_path()`.
    pub fn url(&self) -> String {
        self.store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.db_path().display()))
    }

    /// [`store_text`] of this world's store.
    pub async fn store_text(&self) -> String {
        store_text(&self.url()).await
    }

    pub fn config_text(&self) -> String {
        let url = self.url();
        let mut text = format!("[store]\nurl = \"{url}\"\n\n[sync]\n{}\n", self.sync);
        for (name, kind, url, key) in self.sb.endpoints() {
            text.push_str(&format!(
                "\n[providers.{name}]\nkind = \"{kind}\"\nbase_url = \"{url}\"\napi_key = \"{key}\"\n{}",
                self.keys_for
                    .get(name)
                    .map(String::as_str)
                    .unwrap_or(&self.provider_keys),
            ));
        }
        text
    }

    pub fn write_config(&self) -> PathBuf {
        let path = self.dir.path().join("custsync.toml");
        std::fs::write(&path, self.config_text()).expect("write config");
        path
    }

    fn report_path(&self) -> PathBuf {
        self.dir.path().join("report.json")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        custsync(&self.write_config(), args, &self.rust_log)
    }

    /// Runs the binary to its end with `args` (a report is asked for with `--once`).
    pub async fn run(&self, args: &[&str]) -> Run {
        let report = self.report_path();
        let _ = std::fs::remove_file(&report);
        let mut cmd = self.command(args);
        if args.contains(&"--once") {
            cmd.arg("--report").arg(&report);
        }
        let started = Instant::now();
        let out = cmd.output().await.expect("run custsync");
        let took = started.elapsed();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            report: std::fs::read_to_string(&report)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok()),
            took,
        }
    }

    pub async fn once(&self) -> Run {
        self.run(&["--once"]).await
    }

    /// Starts `custsync --once` and leaves it running (to be killed).
    pub fn spawn_once(&self) -> tokio::process::Child {
        self.spawn_logged(&["--once"], "killed.log")
    }

    /// Starts the binary with `args`, its stderr in the file `log` of the test's
    /// directory (read with `log_text`), and leaves it running.
    pub fn spawn_logged(&self, args: &[&str], log: &str) -> tokio::process::Child {
        spawn_to_log(self.command(args), &self.dir.path().join(log))
    }

    /// Runs `--once` with the failpoint `name` armed (`CUSTSYNC_FAILPOINT`), waits until
    /// the process says it reached it, and kills it there (SIGKILL). The variable
    /// reaches the child alone only when no other test of the binary spawns meanwhile:
    /// use it in a test binary of one test.
    pub async fn kill_at_failpoint(&self, name: &str, log: &str) {
        std::env::set_var("CUSTSYNC_FAILPOINT", name);
        let mut child = self.spawn_logged(&["--once"], log);
        std::env::remove_var("CUSTSYNC_FAILPOINT");
        let reached = format!("failpoint {name} reached");
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while !self.log_text(log).contains(&reached) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("custsync ended ({status}) first:\n{}", self.log_text(log));
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "the failpoint {name} was never reached"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        child.kill().await.unwrap();
        let _ = child.wait().await;
    }

    pub fn log_text(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default()
    }

    pub fn faults(&self) -> [(&'static str, &Faults); 5] {
        [
            ("store", &self.sb.nuvemshop.server.faults),
            ("storefront", &self.sb.ecwid.server.faults),
            ("shipping", &self.sb.malomo.server.faults),
            ("plans", &self.sb.partially.server.faults),
            ("email", &self.sb.sendwithus.server.faults),
        ]
    }

    pub fn logs(&self) -> [(&'static str, &RequestLog); 5] {
        self.sb.logs()
    }

    pub fn writes(&self) -> usize {
        self.sb.writes()
    }

    /// Emails each provider holds, normalized, with how many records have each.
    pub fn holdings(&self) -> BTreeMap<&'static str, BTreeMap<String, usize>> {
        let count = |emails: Vec<String>| {
            let mut m = BTreeMap::new();
            for e in emails {
                *m.entry(e.trim().to_lowercase()).or_insert(0) += 1;
            }
            m
        };
        let sb = &self.sb;
        BTreeMap::from([
            (
                "store",
                count(
                    sb.nuvemshop
                        .customers()
                        .iter()
                        .filter_map(|c| c["email"].as_str().map(str::to_string))
                        .collect(),
                ),
            ),
            (
                "storefront",
                count(sb.ecwid.customers().into_iter().map(|c| c.email).collect()),
            ),
            (
                "shipping",
                count(
                    sb.malomo
                        .customers()
                        .into_iter()
                        .filter_map(|c| c.email)
                        .collect(),
                ),
            ),
            (
                "plans",
                count(
                    sb.partially
                        .customers()
                        .into_iter()
                        .filter_map(|c| c.email)
                        .collect(),
                ),
            ),
            (
                "email",
                count(
                    sb.sendwithus
                        .customers()
                        .into_iter()
                        .map(|c| c.email)
                        .collect(),
                ),
            ),
        ])
    }

    /// Every email each provider holds (once per record, sorted), in the order store,
    /// storefront, shipping, plans, email.
    pub fn emails(&self) -> [Vec<String>; 5] {
        let held = self.holdings();
        NAMES.map(|(label, _)| {
            held[label]
                .iter()
                .flat_map(|(e, n)| std::iter::repeat_n(e.clone(), *n))
                .collect()
        })
    }

    /// Every write request the emulators received, as `provider METHOD path body`.
    pub fn write_lines(&self) -> Vec<String> {
        self.logs()
            .iter()
            .flat_map(|(name, log)| {
                log.writes()
                    .into_iter()
                    .map(move |r| format!("{name} {} {} {:?}", r.method, r.path, r.body))
            })
            .collect()
    }

    /// Every delete request any provider received, as `provider METHOD path`.
    pub fn deletes(&self) -> Vec<String> {
        self.logs()
            .iter()
            .flat_map(|(name, log)| {
                log.writes()
                    .into_iter()
                    .filter(|r| {
                        r.method == "DELETE"
                            || r.path.contains("/delete_customer/")
                            || r.path.starts_with("/customer/gdpr_remove/")
                    })
                    .map(move |r| format!("{name} {} {}", r.method, r.path))
            })
            .collect()
    }

    /// `provider: email` for every email a provider holds more than once.
    pub fn duplicates(&self) -> Vec<String> {
        self.holdings()
            .into_iter()
            .flat_map(|(p, held)| {
                held.into_iter()
                    .filter(|(_, n)| *n > 1)
                    .map(move |(e, n)| format!("{p}: {e} {n} times"))
            })
            .collect()
    }

    /// Panics unless every provider holds exactly `everyone`, each once.
    pub fn assert_everyone_everywhere_once(&self, everyone: &BTreeSet<String>) {
        let mut problems = Vec::new();
        for (provider, held) in self.holdings() {
            for (email, n) in &held {
                if *n > 1 {
                    problems.push(format!("{provider}: {email} {n} times"));
                }
                if !everyone.contains(email) {
                    problems.push(format!("{provider}: {email} is nobody's"));
                }
            }
            for email in everyone {
                if !held.contains_key(email) {
                    problems.push(format!("{provider}: {email} missing"));
                }
            }
        }
        assert!(
            problems.is_empty(),
            "{} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }

    /// Seeds `n` people `p{offset+i}@example.com` spread over the four listable
    /// providers (person i in provider i % 4); every fifth is also in the next
    /// provider with a phone or name the first lacks, so that updates are planned
    /// too. Returns their emails.
    pub fn seed_spread(&self, offset: usize, n: usize) -> BTreeSet<String> {
        let mut everyone = BTreeSet::new();
        for i in offset..offset + n {
            let email = format!("p{i}@example.com");
            self.seed_in(i % 4, &email, i);
            if i % 5 == 0 {
                self.seed_in((i + 1) % 4, &email, i);
            }
            everyone.insert(email);
        }
        everyone
    }

    /// Seeds one person in one listable provider: 0 Nuvemshop, 1 Ecwid, 2 Malomo,
    /// 3 Partial.ly.
    pub fn seed_in(&self, which: usize, email: &str, i: usize) {
        let first = format!("First{i}");
        let last = format!("Last{i}");
        let sb = &self.sb;
        match which {
            0 => {
                sb.nuvemshop
                    .insert(nuvemshop::seed(&format!("{first} {last}"), email));
            }
            1 => {
                sb.ecwid
                    .insert(ecwid::Customer::new(email, Some(&first), Some(&last)));
            }
            2 => {
                let phone = format!("555-{:04}", i % 10_000);
                sb.malomo.insert(malomo::Customer::new(
                    email,
                    Some(&first),
                    Some(&last),
                    Some(&phone),
                ));
            }
            _ => {
                sb.partially
                    .insert(partially::Customer::new(email, Some(&first), Some(&last)));
            }
        }
    }

    /// Malomo-only people `m{i}@example.com`: work for the four other providers.
    pub fn seed_malomo(&self, n: usize) -> BTreeSet<String> {
        (0..n)
            .map(|i| {
                let email = format!("m{i}@example.com");
                self.sb.malomo.insert(malomo::Customer::new(
                    &email,
                    Some("Mal"),
                    Some(&format!("Omo{i}")),
                    None,
                ));
                email
            })
            .collect()
    }

    /// Requests and 429s each emulator logged.
    pub fn traffic(&self) -> Vec<(&'static str, usize, usize)> {
        self.logs()
            .iter()
            .map(|(name, log)| (*name, log.len(), log.with_status(429)))
            .collect()
    }
}

/// The provider labels, in the sandbox config's order.
pub fn labels() -> Vec<&'static str> {
    NAMES.iter().map(|(n, _)| *n).collect()
}
