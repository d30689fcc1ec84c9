//! The command line and its errors (DESIGN 2 and 4c "Command line"): a flag of the
//! reconciliation given to a subcommand is a usage error that does nothing; `forget
//! --dry-run` looks and writes nothing; a database that cannot be used is said once,
//! on one line; a run that the store stops is marked failed and still reports.

#[path = "common/five.rs"]
mod five;

use std::path::{Path, PathBuf};

use custsync::sandbox::malomo;
use five::Five;

/// One run of the binary with exactly these arguments after `--config`.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn custsync(config: &Path, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_custsync"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CUSTSYNC_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run custsync");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Five emulators with two people, reconciled once: everyone is everywhere.
async fn two_people() -> Five {
    let f = Five::start().await;
    for (email, first) in [("gone@example.com", "Gina"), ("stay@example.com", "Stan")] {
        f.sb.malomo
            .insert(malomo::Customer::new(email, Some(first), None, None));
    }
    let run = f.once().await;
    assert_eq!(run.code, 0, "{}", run.why());
    f.sb.clear_logs();
    f
}

fn everyone_everywhere(f: &Five) {
    for held in f.emails() {
        assert_eq!(held, ["gone@example.com", "stay@example.com"], "{held:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciliation_flag_given_to_a_subcommand_is_refused_and_does_nothing() {
    let f = two_people().await;
    let config = f.write_config();
    let report = f.dir.path().join("r.json");
    let report_arg = report.to_str().unwrap();
    let gone = "gone@example.com";
    let refused: [&[&str]; 8] = [
        &["--dry-run", "forget", gone],
        &["--once", "forget", gone],
        &["--once", "--report", report_arg, "status"],
        &["--report", report_arg, "audit"],
        &["--allow-deletes", "shipping", "activity", gone],
        &["--once", "check"],
        &["--dry-run", "check", "--offline"],
        &["--once", "demo"],
    ];
    for args in refused {
        let out = custsync(&config, args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(args[0]),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert!(!report.exists(), "{args:?} wrote a report");
    }
    // Not one request reached a provider: nobody was erased, nothing was checked.
    for (name, log) in f.logs() {
        assert!(log.all().is_empty(), "{name}: {:?}", log.all());
    }
    everyone_everywhere(&f);
    // The person is still in the store (in the database file or its write-ahead log).
    let mut bytes = std::fs::read(f.db_path()).unwrap();
    let mut wal = f.db_path().into_os_string();
    wal.push("-wal");
    bytes.extend(std::fs::read(wal).unwrap_or_default());
    assert!(String::from_utf8_lossy(&bytes).contains("Gina"));
    // --config and --log-format stay global, before or after the subcommand.
    let out = custsync(&config, &["--log-format", "json", "status"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = custsync(&config, &["check", "--offline", "--log-format", "json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_dry_run_prints_the_plan_and_writes_nothing() {
    let f = two_people().await;
    let malomo_id =
        f.sb.malomo
            .customers()
            .into_iter()
            .find(|c| c.email.as_deref() == Some("gone@example.com"))
            .map(|c| c.id)
            .unwrap();
    let config = f.write_config();
    let local = || async {
        let audit = custsync(&config, &["audit"]).await.stdout;
        let status = custsync(&config, &["status"]).await.stdout;
        assert!(audit.contains("gone@example.com"), "{audit}");
        (audit, status)
    };
    let before = local().await;
    let run = f.run(&["forget", "gone@example.com", "--dry-run"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains(&format!("shipping (malomo): would delete {malomo_id}")),
        "{out}"
    );
    for provider in [
        "storefront (ecwid)",
        "plans (partially)",
        "email (sendwithus)",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(provider) && l.contains("would delete")),
            "{provider}: {out}"
        );
    }
    assert!(
        out.contains("store (nuvemshop): holds 1 record(s) but its API cannot delete"),
        "{out}"
    );
    assert!(out.contains("locally: would purge customer #"), "{out}");
    assert!(out.contains("nothing was erased (dry run)"), "{out}");
    // Lookups only: not one write in any emulator's request log.
    for (name, log) in f.logs() {
        assert!(log.writes().is_empty(), "{name}: {:?}", log.writes());
    }
    everyone_everywhere(&f);
    assert!(local().await == before, "the database is left as it was");
    // And the person is still there for the next run to keep in step.
    let again = f.once().await;
    assert_eq!(again.code, 0, "{}", again.why());
    assert_eq!(f.sb.writes(), 0, "{:#?}", f.write_lines());
}

/// A config like the harness's, with `[store].url` pointing at `db`.
fn config_with_store(f: &Five, db: &Path) -> PathBuf {
    let text = f.config_text().replace(
        &format!("sqlite://{}", f.db_path().display()),
        &format!("sqlite://{}", db.display()),
    );
    let path = f.dir.path().join("bad-store.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_used_is_one_line_naming_store_url() {
    let f = Five::start().await;
    let text_file = f.dir.path().join("notes.txt");
    std::fs::write(
        &text_file,
        "these are my notes, not a database\n".repeat(200),
    )
    .unwrap();
    for db in [text_file.clone(), text_file.join("sub").join("c.db")] {
        let config = config_with_store(&f, &db);
        // (Where no file exists yet, a dry run plans on an empty copy and `status` says
        // there is no database yet: both are tried only where the file exists.)
        let looks: &[&[&str]] = if db.exists() {
            &[&["--dry-run"], &["status"]]
        } else {
            &[]
        };
        for args in [
            &["--once"][..],
            &["audit"],
            &["forget", "x@example.com"],
            &["activity", "x@example.com"],
        ]
        .iter()
        .chain(looks)
        {
            let out = custsync(&config, args).await;
            let lines: Vec<&str> = out.stderr.lines().collect();
            assert_eq!(out.code, Some(2), "{db:?} {args:?}: {}", out.stderr);
            assert_eq!(lines.len(), 1, "{db:?} {args:?}: {}", out.stderr);
            assert!(
                lines[0].starts_with("config error: store.url: ")
                    && lines[0].contains(&db.display().to_string()),
                "{args:?}: {}",
                lines[0]
            );
            let words: Vec<&str> = lines[0].split(": ").collect();
            let mut unique = words.clone();
            unique.dedup();
            assert_eq!(words, unique, "said once: {}", lines[0]);
            assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        }
    }
    for (name, log) in f.logs() {
        assert!(log.writes().is_empty(), "{name}: {:?}", log.writes());
    }
    assert_eq!(
        std::fs::read_to_string(&text_file).unwrap().len(),
        "these are my notes, not a database\n".len() * 200,
        "the file is left alone"
    );
}

/// Runs the binary with every file it writes limited to `max_file_bytes`
/// (`RLIMIT_FSIZE`): past it a write fails, as on a full disk, and the database
/// cannot grow. SIGXFSZ is ignored so that the write fails instead of killing.
async fn custsync_with_file_limit(config: &Path, args: &[&str], max_file_bytes: u64) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_custsync"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CUSTSYNC_CONFIG")
        .env("RUST_LOG", "off");
    // SAFETY: between fork and exec only async-signal-safe calls (signal, setrlimit).
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: max_file_bytes as libc::rlim_t,
                rlim_max: max_file_bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().await.expect("run custsync");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A world reconciled once (the database checkpointed into its file), then 300 new
/// people in Malomo, and `--once` run with every file limited to the database's size
/// plus `budget` bytes: the database cannot grow past that, as on a full disk.
async fn run_out_of_room(budget: u64) -> (Five, Out, Option<serde_json::Value>, usize) {
    let f = Five::start().await;
    f.seed_spread(0, 4);
    let first = f.once().await;
    assert_eq!(first.code, 0, "{}", first.why());
    checkpoint(&f.db_path()).await;
    f.sb.clear_logs();
    f.seed_malomo(300);
    let size = std::fs::metadata(f.db_path()).unwrap().len();
    let config = f.write_config();
    let report = f.dir.path().join("full.json");
    let args = ["--once", "--report", report.to_str().unwrap()];
    let out = custsync_with_file_limit(&config, &args, size + budget).await;
    let report = std::fs::read_to_string(&report)
        .ok()
        .map(|t| serde_json::from_str(&t).expect("the report is JSON"));
    let writes = f.sb.writes();
    (f, out, report, writes)
}

/// The store's error, once: exit 1, one line on stderr, and the report so far with
/// the error as its last.
fn assert_store_failure(out: &Out, report: &Option<serde_json::Value>) {
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("custsync: reconciliation: database: "),
        "{}",
        lines[0]
    );
    let report = report.as_ref().expect("a report after the store failed");
    assert_eq!(report["converged"], false, "{report}");
    let last = report["errors"].as_array().and_then(|e| e.last()).cloned();
    let last = last.expect("errors");
    assert_eq!(last["provider"], "custsync", "{last}");
    let error = last["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("run stopped: database: ")
            && lines[0].ends_with(error.trim_start_matches("run stopped: database: ")),
        "{error} / {}",
        lines[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_the_store_stops_is_marked_failed_in_status() {
    // 128 KiB: room for the run to begin, not for 300 people to be stored.
    let (f, out, report, writes) = run_out_of_room(128 * 1024).await;
    let status = custsync(&f.write_config(), &["status"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(
        status.stdout.contains("last run: #2 failed (once)"),
        "{}",
        status.stdout
    );
    assert_eq!(writes, 0, "the store failed before any push");
    assert_store_failure(&out, &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_is_written_when_the_database_fills_up_mid_push() {
    // 2 MB: room for the listing and the plan, not for every push's outcome.
    let (_f, out, report, writes) = run_out_of_room(2_000_000).await;
    assert_store_failure(&out, &report);
    assert!(writes > 0 && writes < 4 * 300, "mid-push: {writes} writes");
    let report = report.unwrap();
    assert_eq!(report["providers"]["shipping"]["fetched"], 304, "{report}");
}

/// Moves everything in the write-ahead log into the database file, so that the file
/// holds the whole database and the log is empty.
async fn checkpoint(db: &Path) {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .connect()
        .await
        .expect("open the database");
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .expect("checkpoint");
    sqlx::Connection::close(conn).await.expect("close");
}

/// `forget` with its stdin on a terminal (a pseudo-terminal) where `answer` was typed.
async fn forget_on_a_terminal(config: &Path, email: &str, answer: &str) -> Out {
    use std::io::Write;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, slave) = {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes two new descriptors, owned from here on.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and nothing else owns them.
        unsafe {
            (
                std::fs::File::from_raw_fd(master),
                OwnedFd::from_raw_fd(slave),
            )
        }
    };
    master.write_all(answer.as_bytes()).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_custsync"))
        .arg("--config")
        .arg(config)
        .args(["forget", email])
        .env_remove("CUSTSYNC_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::from(slave))
        .output()
        .await
        .expect("run custsync");
    drop(master);
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_on_a_terminal_asks_first_and_erases_only_on_yes() {
    let f = two_people().await;
    let config = f.write_config();
    for no in ["n\n", "\n"] {
        let out = forget_on_a_terminal(&config, "gone@example.com", no).await;
        assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr
                .contains("Erase gone@example.com everywhere? [y/N]"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("nothing was erased"), "{}", out.stderr);
        assert!(
            out.stdout.contains("shipping (malomo): would delete"),
            "{}",
            out.stdout
        );
        for (name, log) in f.logs() {
            assert!(log.writes().is_empty(), "{name}: {:?}", log.writes());
        }
        everyone_everywhere(&f);
    }
    let out = forget_on_a_terminal(&config, "gone@example.com", "y\n").await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("shipping (malomo): deleted"),
        "{}",
        out.stdout
    );
    let [store, storefront, shipping, plans, email] = f.emails();
    assert_eq!(
        store,
        ["gone@example.com", "stay@example.com"],
        "Nuvemshop cannot delete"
    );
    for held in [storefront, shipping, plans, email] {
        assert_eq!(held, ["stay@example.com"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_names_the_provider_once_with_its_message() {
    let f = Five::start().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_custsync"))
        .arg("--config")
        .arg(f.write_config())
        .arg("check")
        .env_remove("CUSTSYNC_CONFIG")
        .env("CUSTSYNC__PROVIDERS__SHIPPING__API_KEY", "wrong")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("shipping")).unwrap();
    assert!(
        line.starts_with("shipping (malomo): FAILED: HTTP 401"),
        "{line}"
    );
    assert_eq!(line.matches("shipping").count(), 1, "{line}");
}
