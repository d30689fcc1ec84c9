//! The test world: sandbox emulators on 127.0.0.1 port 0, a config pointing at them,
//! a temporary database, and the real `custsync` binary run against them.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;

use custsync::sandbox::malomo::{self, Malomo};
use custsync::sandbox::nuvemshop::{self, Nuvemshop};

pub struct World {
    pub dir: tempfile::TempDir,
    pub malomo: Malomo,
    pub nuvem: Nuvemshop,
    pub extra_toml: String,
    providers: Vec<String>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub report: Option<serde_json::Value>,
}

impl World {
    pub async fn new() -> World {
        let malomo = Malomo::start(malomo::Options {
            page_size: 3,
            ..Default::default()
        })
        .await
        .expect("start malomo");
        let nuvem = Nuvemshop::start(nuvemshop::Options::default())
            .await
            .expect("start nuvemshop");
        let providers = vec![
            format!(
                "[providers.malomo]\nkind = \"malomo\"\nbase_url = \"{}\"\napi_key = \"{}\"\nrate_limit = {{ per_second = 1000.0, burst = 100 }}\n",
                malomo.base_url(),
                malomo.api_key()
            ),
            format!(
                "[providers.store]\nkind = \"nuvemshop\"\nbase_url = \"{}\"\napi_key = \"{}\"\npage_size = 2\nrate_limit = {{ per_second = 1000.0, burst = 100 }}\n",
                nuvem.base_url(),
                nuvem.api_key()
            ),
        ];
        World {
            dir: tempfile::tempdir().expect("tempdir"),
            malomo,
            nuvem,
            extra_toml: String::new(),
            providers,
        }
    }

    pub fn add_provider(&mut self, toml: String) {
        self.providers.push(toml);
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("custsync.toml")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("custsync.db")
    }

    pub fn write_config(&self) -> PathBuf {
        let text = format!(
            "[store]\nurl = \"sqlite://{}\"\n\n[sync]\nmax_delete_fraction = 0.5\n{}\n{}",
            self.db_path().display(),
            self.extra_toml,
            self.providers.join("\n")
        );
        let path = self.config_path();
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Runs the real binary with `args` after `--config PATH`, and a report.
    pub async fn run(&self, args: &[&str]) -> Run {
        let config = self.write_config();
        let report = self.dir.path().join("report.json");
        let _ = std::fs::remove_file(&report);
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_custsync"));
        cmd.arg("--config").arg(&config).args(args);
        if args.contains(&"--once") || args.contains(&"--dry-run") {
            cmd.arg("--report").arg(&report);
        }
        cmd.env_remove("CUSTSYNC_CONFIG")
            .env("RUST_LOG", "custsync=debug,info");
        let out: Output = cmd.output().await.expect("run custsync");
        let report = std::fs::read_to_string(&report)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            report,
        }
    }

    pub async fn once(&self) -> Run {
        self.run(&["--once"]).await
    }

    /// Write requests (POST, PUT, PATCH, DELETE) received by the emulators.
    pub fn writes(&self) -> usize {
        self.malomo.log().writes().len() + self.nuvem.log().writes().len()
    }

    pub fn clear_logs(&self) {
        self.malomo.log().clear();
        self.nuvem.log().clear();
    }

    /// Emails held by Malomo, normalized and sorted.
    pub fn malomo_emails(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .malomo
            .customers()
            .iter()
            .filter_map(|c| c.email.as_deref().map(norm))
            .collect();
        v.sort();
        v
    }

    /// Emails held by Nuvemshop, normalized and sorted.
    pub fn nuvem_emails(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .nuvem
            .customers()
            .iter()
            .filter_map(|c| c["email"].as_str().map(norm))
            .collect();
        v.sort();
        v
    }
}

pub fn norm(e: &str) -> String {
    e.trim().to_lowercase()
}

impl Run {
    pub fn count(&self, provider: &str, key: &str) -> u64 {
        self.report
            .as_ref()
            .and_then(|r| r["providers"][provider][key].as_u64())
            .unwrap_or_else(|| {
                panic!(
                    "report has no providers.{provider}.{key}: {:?}\nstderr:\n{}",
                    self.report, self.stderr
                )
            })
    }
}
