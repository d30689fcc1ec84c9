//! Identical workers on one PostgreSQL share the tenants through their leases
//! (DESIGN 13, 4c): a killed worker's tenants are taken over, a paused one writes
//! nothing once it lost them, and tenant files come and go while they run.

#[path = "common/five.rs"]
mod five;
#[path = "common/fleet.rs"]
mod fleet;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use five::pg;
use fleet::Fleet;
use sqlx::Connection;
use tokio::process::Child;

/// A fleet on a fresh PostgreSQL database: ticks every 2 s, leases of 3 s, two
/// tenants at once per worker, providers at `per_second` writes.
async fn fleet(names: &[String], per_second: f64) -> Fleet {
    pg::require();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut f = Fleet::new(Some(pg::database().await), &[]).await;
    f.sync = "schedule = \"*/2 * * * * *\"\n".into();
    f.extra = "[cluster]\nlease_secs = 3\nmax_concurrent_tenants = 2\n\n[server]\nlisten = \"127.0.0.1:0\"\n".into();
    for n in refs {
        f.add(n).await;
        let five = f.tenants.get_mut(n).unwrap();
        five.provider_keys = format!(
            "rate_limit = {{ per_second = {per_second:.1}, burst = 2 }}\nmax_retries = 2\n"
        );
        f.write_tenant(n);
    }
    f
}

/// Waits, polling, until `ready` holds; panics after `secs` or if a worker ended.
async fn until(what: &str, secs: u64, workers: &mut [&mut Child], ready: impl Fn() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !ready() {
        for w in workers.iter_mut() {
            if let Ok(Some(status)) = w.try_wait() {
                panic!("a worker ended ({status}) before {what}");
            }
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{what} never happened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The tenants whose lease `worker` holds now.
async fn held_by(url: &str, worker: &str) -> Vec<String> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT tenant FROM custsync.leases WHERE worker = $1 AND released = 0")
        .bind(worker)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default()
}

fn sigkill(child: &Child) {
    let pid = child.id().expect("running") as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn signal(child: &Child, sig: i32) {
    let pid = child.id().expect("running") as i32;
    unsafe { libc::kill(pid, sig) };
}

async fn stop(mut child: Child) {
    signal(&child, libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("a worker stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// After the workers: a `--once` of every tenant converges and writes nothing.
async fn quiet(f: &Fleet) {
    f.clear_logs();
    let (out, report) = f.once(&[]).await;
    assert_eq!(out.code, 0, "{}\n{report:#}", out.stderr);
    assert_eq!(f.writes(), 0, "nothing left to write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_twelve_tenants_and_take_over_a_killed_one() {
    let names: Vec<String> = (0..12).map(|i| format!("shop-{i:02}")).collect();
    let f = fleet(&names, 20.0).await;
    let everyone: BTreeMap<String, BTreeSet<String>> = f.seed(16);
    let mut w1 = f.spawn("w1");
    let mut w2 = f.spawn("w2");
    let mut w3 = f.spawn("w3");
    // w1 holds tenants and has written for them: kill it mid-push.
    let url = f.store_url.clone();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    let held = loop {
        let held = held_by(&url, "w1").await;
        if !held.is_empty() && held.iter().any(|t| f.tenants[t].sb.writes() > 0) {
            break held;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "w1 never held a tenant mid-push\n{}",
            f.log_text("w1.log")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    sigkill(&w1);
    let _ = w1.wait().await;
    let killed = tokio::time::Instant::now();
    until(
        "every tenant converged",
        120,
        &mut [&mut w2, &mut w3],
        || f.converged(&everyone),
    )
    .await;
    let took = killed.elapsed();
    eprintln!("w1 held {held:?} when killed; everything converged {took:?} later");
    f.assert_converged(&everyone);
    // Both survivors worked: the tenants were spread, not queued on one.
    for log in ["w2.log", "w3.log"] {
        assert!(
            f.log_text(log).contains("cycle finished"),
            "{log}:\n{}",
            f.log_text(log)
        );
    }
    stop(w2).await;
    stop(w3).await;
    quiet(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_writes_nothing_for_the_tenants_it_lost() {
    let names: Vec<String> = vec!["solo".into()];
    let f = fleet(&names, 10.0).await;
    let everyone = f.seed(24);
    let url = f.store_url.clone();
    let mut w1 = f.spawn("w1");
    until("w1 writes for solo", 60, &mut [&mut w1], || f.writes() > 2).await;
    assert_eq!(held_by(&url, "w1").await, ["solo"]);
    signal(&w1, libc::SIGSTOP);
    let mut w2 = f.spawn("w2");
    // w2 takes the expired lease over and finishes the tenant.
    until("every customer everywhere", 120, &mut [&mut w2], || {
        f.converged(&everyone)
    })
    .await;
    // w1 wakes with work it had claimed: it must send none of it.
    f.clear_logs();
    signal(&w1, libc::SIGCONT);
    let w1_log = || f.log_text("w1.log");
    until("w1 notices it lost the lease", 30, &mut [&mut w2], || {
        let log = w1_log();
        log.contains("lease lost")
            || log.contains("lease expired")
            || log.contains("cycle finished")
    })
    .await;
    f.assert_converged(&everyone);
    stop(w1).await;
    stop(w2).await;
    quiet(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_added_while_running_is_reconciled_and_a_bad_one_stops_no_other() {
    let names: Vec<String> = vec!["first".into()];
    let mut f = fleet(&names, 500.0).await;
    let mut everyone = f.seed(5);
    let mut w1 = f.spawn("w1");
    until("first converged", 60, &mut [&mut w1], || {
        f.converged(&everyone)
    })
    .await;
    f.add("second").await;
    everyone.insert("second".into(), f.tenants["second"].seed_spread(0, 5));
    std::fs::write(f.tenant_path("broken"), "[providers.x]\nkind = \"nope\"\n").unwrap();
    until("the new tenant converged", 60, &mut [&mut w1], || {
        f.converged(&everyone)
    })
    .await;
    until("the bad tenant reported", 30, &mut [&mut w1], || {
        let log = f.log_text("w1.log");
        log.contains("broken") && log.contains("not usable")
    })
    .await;
    // The first tenant still runs: a new person there arrives everywhere.
    let more = f.tenants["first"].seed_spread(50, 2);
    everyone.get_mut("first").unwrap().extend(more);
    until("first carries on", 60, &mut [&mut w1], || {
        f.converged(&everyone)
    })
    .await;
    f.assert_converged(&everyone);
    // /metrics carries every tenant's samples, each labelled with its tenant.
    let log = f.log_text("w1.log");
    let listen = log
        .lines()
        .find(|l| l.contains("health and metrics server up"))
        .and_then(|l| l.split("listen=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .expect("the bound address is logged")
        .to_string();
    let text = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for tenant in ["first", "second"] {
        let label = format!("custsync_cycles_total{{tenant=\"{tenant}\",outcome=\"converged\"}}");
        assert!(text.contains(&label), "{label} in:\n{text}");
        let depth = format!(
            "custsync_outbox_depth{{tenant=\"{tenant}\",provider=\"store\",state=\"pending\"}}"
        );
        assert!(text.contains(&depth), "{depth} in:\n{text}");
    }
    std::fs::remove_file(f.tenant_path("broken")).unwrap();
    stop(w1).await;
    quiet(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_first_sync_yields_its_slot_and_resumes_from_the_outbox() {
    let names: Vec<String> = vec!["big".into(), "small".into()];
    let mut f = fleet(&names, 25.0).await;
    // One slot: the small tenant gets its turn only if the big one yields.
    f.extra = "[cluster]\nlease_secs = 3\nmax_concurrent_tenants = 1\ntenant_slice_secs = 1\n\n[server]\nlisten = \"127.0.0.1:0\"\n".into();
    let mut everyone = BTreeMap::new();
    everyone.insert("big".to_string(), f.tenants["big"].seed_malomo(60));
    everyone.insert("small".to_string(), f.tenants["small"].seed_spread(0, 2));
    let mut w1 = f.spawn("w1");
    let small_done = || {
        let one: BTreeMap<String, BTreeSet<String>> =
            [("small".to_string(), everyone["small"].clone())].into();
        f.tenants["small"]
            .holdings()
            .values()
            .all(|held| held.len() == one["small"].len())
    };
    until("the small tenant converged", 60, &mut [&mut w1], small_done).await;
    assert!(
        !f.converged(&everyone),
        "the small tenant ran while the big one still had writes to send"
    );
    until("every tenant converged", 120, &mut [&mut w1], || {
        f.converged(&everyone)
    })
    .await;
    f.assert_converged(&everyone);
    let mut conn = sqlx::PgConnection::connect(&f.store_url).await.unwrap();
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM t_big.runs ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(statuses.iter().any(|s| s == "yielded"), "{statuses:?}");
    assert!(statuses.iter().any(|s| s == "resumed"), "{statuses:?}");
    stop(w1).await;
    quiet(&f).await;
}
