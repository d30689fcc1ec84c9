//! `custsync sandbox`: the emulators stay up with a ready configuration, and every
//! command of the README works against it with no account.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn custsync(config: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_custsync"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CUSTSYNC_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run custsync");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_command_works_against_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let mut sandbox = Command::new(env!("CARGO_BIN_EXE_custsync"))
        .args(["sandbox", "--customers", "40", "--dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the sandbox");
    // Its own words say when it is ready, and with which configuration.
    let mut lines = BufReader::new(sandbox.stdout.take().unwrap()).lines();
    let mut config = None;
    let mut person = None;
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(path) = line.strip_prefix("configuration: ") {
                config = Some(path.trim().to_string());
            }
            if line.contains(" activity ") {
                person = line.split_whitespace().nth(4).map(str::to_string);
            }
            if line.starts_with("ready") {
                return;
            }
        }
        panic!("the sandbox ended before it was ready");
    });
    ready.await.expect("the sandbox says it is ready");
    let config = config.expect("the configuration's path");
    let person = person.expect("a person to look at");

    for args in [
        &["check"][..],
        &["--once"],
        &["status"],
        &["status", "--json"],
        &["audit", "--limit", "5"],
        &["activity", &person],
        &["forget", &person, "--dry-run"],
    ] {
        let (code, stdout, stderr) = custsync(&config, args).await;
        assert_eq!(code, 0, "{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        // A reconciliation keeps stdout for what was asked (a plan, a report path).
        if args[0] != "--once" {
            assert!(!stdout.trim().is_empty(), "{args:?} printed nothing");
        }
    }
    // The erasure was only shown: the person is still there.
    let (_, timeline, _) = custsync(&config, &["activity", &person, "--json"]).await;
    assert!(timeline.lines().count() > 0, "{timeline}");

    let pid = sandbox.id().unwrap() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = sandbox.wait().await.unwrap();
    assert_eq!(status.code(), Some(0));
}
