//! Many tenants (DESIGN 13): one config with `[tenants] dir`, a tenant file per
//! tenant, each tenant with its own five emulators (a `Five` each, for seeding and
//! for the checks), the real binary run or spawned as workers against them, on
//! SQLite or on PostgreSQL. Needs `mod five;` beside it in the test crate.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::five::Five;

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub tenants: BTreeMap<String, Five>,
    /// `[store] url`.
    pub store_url: String,
    /// More top-level TOML (`[cluster]`, `[server]`); `[sync]` is `sync`.
    pub extra: String,
    /// The body of the top-level `[sync]`.
    pub sync: String,
}

/// One run of the binary.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Fleet {
    /// A fleet of `names`, on `store_url` (`None`: a SQLite file in the directory).
    pub async fn new(store_url: Option<String>, names: &[&str]) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tenants")).unwrap();
        let store_url = store_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("custsync.db").display()));
        let mut fleet = Fleet {
            dir,
            tenants: BTreeMap::new(),
            store_url,
            extra: String::new(),
            sync: String::new(),
        };
        for n in names {
            fleet.add(n).await;
        }
        fleet
    }

    /// A new tenant with its own emulators, its file written.
    pub async fn add(&mut self, name: &str) {
        let five = Five::start().await;
        self.tenants.insert(name.to_string(), five);
        self.write_tenant(name);
    }

    pub fn tenant_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("tenants").join(format!("{name}.toml"))
    }

    /// The tenant's file: its five providers, fast rate limits.
    pub fn write_tenant(&self, name: &str) {
        let five = &self.tenants[name];
        let mut text = String::new();
        for (provider, kind, url, key) in five.sb.endpoints() {
            text.push_str(&format!(
                "[providers.{provider}]\nkind = \"{kind}\"\nbase_url = \"{url}\"\napi_key = \"{key}\"\n{}\n",
                five.provider_keys
            ));
        }
        // Written aside (not as a .toml) and renamed, as an operator's tool would.
        let tmp = self.tenant_path(name).with_extension("part");
        std::fs::write(&tmp, text).expect("tenant file");
        std::fs::rename(&tmp, self.tenant_path(name)).expect("tenant file");
    }

    pub fn config_path(&self) -> PathBuf {
        let path = self.dir.path().join("custsync.toml");
        let text = format!(
            "[store]\nurl = \"{}\"\n\n[tenants]\ndir = \"{}\"\n\n[sync]\n{}\n{}\n",
            self.store_url,
            self.dir.path().join("tenants").display(),
            self.sync,
            self.extra
        );
        // Written aside and renamed: a worker starting meanwhile reads a whole file.
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).expect("config");
        std::fs::rename(&tmp, &path).expect("config");
        path
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        crate::five::custsync(&self.config_path(), args, "custsync=info,warn")
    }

    pub async fn run(&self, args: &[&str]) -> Out {
        let out = self.command(args).output().await.expect("run custsync");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `--once --report`, answering the run and the report.
    pub async fn once(&self, more: &[&str]) -> (Out, serde_json::Value) {
        let report = self.dir.path().join("report.json");
        let _ = std::fs::remove_file(&report);
        let report_arg = report.display().to_string();
        let mut args = vec!["--once", "--report", report_arg.as_str()];
        args.extend_from_slice(more);
        let out = self.run(&args).await;
        let doc = std::fs::read_to_string(&report)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        (out, doc)
    }

    /// A worker (the daemon) named `worker`, its stderr in the file `WORKER.log`.
    pub fn spawn(&self, worker: &str) -> tokio::process::Child {
        let mut cmd = self.command(&[]);
        cmd.env("CUSTSYNC__CLUSTER__WORKER_ID", worker);
        let log = self.dir.path().join(format!("{worker}.log"));
        crate::five::spawn_to_log(cmd, &log)
    }

    pub fn log_text(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default()
    }

    /// Seeds `n` people in every tenant (spread over its providers); per tenant the
    /// emails it must end with.
    pub fn seed(&self, n: usize) -> BTreeMap<String, BTreeSet<String>> {
        self.tenants
            .iter()
            .map(|(name, five)| (name.clone(), five.seed_spread(0, n)))
            .collect()
    }

    /// Write requests the emulators of every tenant received.
    pub fn writes(&self) -> usize {
        self.tenants.values().map(|f| f.sb.writes()).sum()
    }

    pub fn clear_logs(&self) {
        for f in self.tenants.values() {
            f.sb.clear_logs();
        }
    }

    /// True when every tenant holds its people once in each provider.
    pub fn converged(&self, everyone: &BTreeMap<String, BTreeSet<String>>) -> bool {
        self.tenants.iter().all(|(name, five)| {
            five.holdings()
                .values()
                .all(|held| held.len() == everyone[name].len() && held.values().all(|n| *n == 1))
        })
    }

    pub fn assert_converged(&self, everyone: &BTreeMap<String, BTreeSet<String>>) {
        for (name, five) in &self.tenants {
            eprintln!("checking tenant {name}");
            five.assert_everyone_everywhere_once(&everyone[name]);
        }
    }
}
