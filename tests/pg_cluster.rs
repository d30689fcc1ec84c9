//! The throwaway PostgreSQL cluster harness (`tests/common/pg.rs`) does what the
//! other tests will rely on: one cluster, a distinct database per test, parallel
//! creation, never root, and no directories left behind by dead test processes.

#[path = "common/pg.rs"]
mod pg;

use std::os::unix::fs::MetadataExt;

use sqlx::{Connection, PgConnection};

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

#[tokio::test]
async fn two_databases_are_distinct() {
    pg::require();
    let (a, b) = (pg::database().await, pg::database().await);
    assert_ne!(a, b);

    let mut ca = connect(&a).await;
    sqlx::query("CREATE TABLE customers (id BIGINT PRIMARY KEY, email TEXT NOT NULL)")
        .execute(&mut ca)
        .await
        .unwrap();
    sqlx::query("INSERT INTO customers VALUES (1, 'a@example.com')")
        .execute(&mut ca)
        .await
        .unwrap();

    let mut cb = connect(&b).await;
    let present: bool = sqlx::query_scalar("SELECT to_regclass('public.customers') IS NOT NULL")
        .fetch_one(&mut cb)
        .await
        .unwrap();
    assert!(!present, "the table made in {a} is visible in {b}");
    let present: bool = sqlx::query_scalar("SELECT to_regclass('public.customers') IS NOT NULL")
        .fetch_one(&mut ca)
        .await
        .unwrap();
    assert!(present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_databases_at_once() {
    pg::require();
    let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(pg::database())).collect();
    let mut urls = Vec::new();
    for t in tasks {
        urls.push(t.await.expect("a database() task panicked"));
    }
    let distinct: std::collections::BTreeSet<_> = urls.iter().collect();
    assert_eq!(distinct.len(), 8, "{urls:?}");
    for url in &urls {
        let mut c = connect(url).await;
        let name: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert!(url.ends_with(&format!("/{name}")), "{url} is {name}");
    }
}

#[test]
fn works_from_sync_code() {
    pg::require();
    let c = pg::cluster();
    let url = pg::database_blocking();
    assert!(url.starts_with(&format!("postgres://custsync@127.0.0.1:{}/t_", c.port())));
    assert_eq!(pg::url_for("postgres"), c.url("postgres"));
}

#[tokio::test]
async fn server_never_runs_as_root() {
    pg::require();
    let url = pg::database().await;
    let mut c = connect(&url).await;
    let data_dir: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let cluster = pg::cluster();
    assert_eq!(
        std::path::Path::new(&data_dir),
        cluster.dir().join("data"),
        "the server is not ours"
    );

    let dir_uid = std::fs::metadata(&data_dir).unwrap().uid();
    let status = std::fs::read_to_string(format!("/proc/{}/status", cluster.pid())).unwrap();
    let process_uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("a Uid: line");
    assert_eq!(process_uid, dir_uid, "the postmaster does not own its data");

    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if me == 0 {
        assert_ne!(dir_uid, 0, "the data directory belongs to root");
        assert_ne!(process_uid, 0, "the postmaster runs as root");
    } else {
        assert_eq!(
            process_uid, me,
            "not root: the server runs as the test's own user"
        );
    }
}

#[test]
fn stale_directories_are_removed() {
    pg::require();
    let live = pg::cluster();
    let tmp = std::env::temp_dir();

    // A pid that was alive a moment ago and is not now.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();

    let stale = tmp.join(format!(
        "{}stale-test-{}",
        pg::DIR_PREFIX,
        std::process::id()
    ));
    std::fs::create_dir_all(stale.join("data")).unwrap();
    std::fs::write(stale.join("owner.pid"), format!("{dead}\n")).unwrap();
    std::fs::write(stale.join("data/PG_VERSION"), "15\n").unwrap();

    // Owned by a live process (this one): kept.
    let kept = tmp.join(format!(
        "{}kept-test-{}",
        pg::DIR_PREFIX,
        std::process::id()
    ));
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("owner.pid"), format!("{}\n", std::process::id())).unwrap();

    let removed = pg::remove_stale(&tmp);
    assert!(!stale.exists(), "the stale directory is still there");
    // Another test process may have swept it first; if we did, we say so.
    assert!(removed.iter().all(|p| p != &kept && p != live.dir()));
    assert!(kept.exists(), "a live process's directory was removed");
    assert!(
        live.dir().join("data").exists(),
        "the running cluster was removed"
    );
    std::fs::remove_dir_all(&kept).unwrap();

    // The cluster still answers.
    let url = pg::database_blocking();
    assert!(url.contains(&format!(":{}/", live.port())));
}

#[test]
fn reports_start_time() {
    pg::require();
    let c = pg::cluster();
    eprintln!(
        "cluster at {} on port {} (pid {}) started in {:?}",
        c.dir().display(),
        c.port(),
        c.pid(),
        c.started_in()
    );
    assert!(pg::available());
}
