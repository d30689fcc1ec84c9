//! Exclusivity end to end (DESIGN 4c): however many processes run on one store, one
//! reconciliation of the tenant runs at a time. Two `--once` on a fresh database, a
//! daemon with a `--once` beside it, and a process paused past its lease: nobody is
//! deleted, nobody is duplicated, and the loser of the lease sends nothing.
//!
//! The waits are on events (what the emulators logged, a process's exit), never on
//! the passing of time.

#[path = "common/five.rs"]
mod five;

use std::time::Duration;

use custsync::sandbox::faults::Fault;
use five::Five;
use tokio::process::Child;

/// Requests a paused process can have on the wire: `push_concurrency = 2` for each of
/// the four providers it writes to.
const IN_FLIGHT: usize = 2 * 4;

/// Write requests any emulator received whose `User-Agent` is `agent`.
fn writes_by(five: &Five, agent: &str) -> usize {
    five.logs()
        .iter()
        .map(|(_, log)| {
            log.writes()
                .iter()
                .filter(|r| r.header("user-agent") == Some(agent))
                .count()
        })
        .sum()
}

fn requests_by(five: &Five, agent: &str) -> usize {
    five.logs()
        .iter()
        .map(|(_, log)| {
            log.all()
                .iter()
                .filter(|r| r.header("user-agent") == Some(agent))
                .count()
        })
        .sum()
}

/// Provider keys naming the process by its User-Agent.
fn keys(agent: &str, per_second: f64) -> String {
    format!("rate_limit = {{ per_second = {per_second}, burst = 10 }}\nuser_agent = \"{agent}\"\n")
}

/// Waits until `ready` holds, while `child` runs.
async fn until(what: &str, child: &mut Child, ready: impl Fn() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("custsync ended ({status}) before {what}");
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{what} never happened"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn converged_and_quiet(five: &Five, everyone: &std::collections::BTreeSet<String>) {
    let run = five.once().await;
    assert_eq!(run.code, 0, "{}", run.why());
    five.assert_everyone_everywhere_once(everyone);
    five.sb.clear_logs();
    let again = five.once().await;
    assert_eq!(again.code, 0, "{}", again.why());
    assert_eq!(five.writes(), 0, "a run after convergence writes nothing");
}

five::both! {
    async fn two_once_on_a_fresh_database_share_nothing_and_break_nothing(b: Backend) {
        let mut five = Five::start_on(b).await;
        five.provider_keys = keys("custsync-test", 200.0);
        let everyone = five.seed_spread(0, 240);
        let mut a = five.spawn_logged(&["--once"], "a.log");
        let mut b = five.spawn_logged(&["--once"], "b.log");
        let (sa, sb) = (a.wait().await.unwrap(), b.wait().await.unwrap());
        let (la, lb) = (five.log_text("a.log"), five.log_text("b.log"));
        for (status, log) in [(sa, &la), (sb, &lb)] {
            assert!(
                status.success() || log.contains("lease held by"),
                "exit {status}: only a run that found the lease held may fail\n{log}"
            );
            assert!(!log.contains("migration"), "the migrations raced:\n{log}");
        }
        assert!(five.deletes().is_empty(), "{:?}", five.deletes());
        assert!(five.duplicates().is_empty(), "{:?}", five.duplicates());
        converged_and_quiet(&five, &everyone).await;
        assert!(five.deletes().is_empty(), "{:?}", five.deletes());
    }
}

five::both! {
    async fn a_once_beside_a_busy_daemon_sends_nothing_and_says_who_holds_the_lease(b: Backend) {
        let mut five = Five::start_on(b).await;
        five.provider_keys = keys("custsync-daemon", 200.0);
        five.sync = "schedule = \"0 0 0 1 1 * 2099\"\n[server]\nlisten = \"127.0.0.1:0\"\n".into();
        let everyone = five.seed_spread(0, 120);
        // The daemon's cycle stays busy: one create's answer is held back.
        let faults = &five.sb.malomo.server.faults;
        faults.push(
            Fault::Delay(Duration::from_secs(120))
                .after()
                .on("POST", "/customers"),
        );
        let mut daemon = five.spawn_logged(&[], "daemon.log");
        until("the daemon's held create", &mut daemon, || {
            faults.handled() >= 1
        })
        .await;

        five.provider_keys = keys("custsync-second", 200.0);
        let second = five.run(&["--once"]).await;
        assert_eq!(second.code, 1, "{}", second.why());
        let line: Vec<&str> = second
            .stderr
            .lines()
            .filter(|l| l.contains("lease held by"))
            .collect();
        assert_eq!(
            line.len(),
            1,
            "one line names the holder:\n{}",
            second.stderr
        );
        assert!(
            line[0].contains(&format!(":{}", daemon.id().unwrap())),
            "{}",
            line[0]
        );
        assert_eq!(
            requests_by(&five, "custsync-second"),
            0,
            "the second process sent nothing"
        );

        daemon.start_kill().unwrap();
        daemon.wait().await.unwrap();
        five.sb.clear_logs();
        // Right after a kill the lease is free: its holder is gone.
        converged_and_quiet(&five, &everyone).await;
        assert!(five.deletes().is_empty(), "{:?}", five.deletes());
    }
}

five::both! {
    async fn a_process_paused_past_its_lease_writes_nothing_once_resumed(b: Backend) {
        let mut five = Five::start_on(b).await;
        five.sync = "push_concurrency = 2\n[cluster]\nlease_secs = 1\n".into();
        five.provider_keys = keys("custsync-paused", 1000.0);
        let everyone = five.seed_malomo(150);
        // The first process is paused while each of its request slots waits on an answer
        // (the emulators hold the first two creates' answers a moment), so that it holds
        // no SQLite write lock when it stops: a process paused inside a transaction
        // would block the store for everyone, which is SQLite's nature, not the lease's.
        let targets: Vec<_> = five
            .faults()
            .into_iter()
            .filter(|(name, _)| *name != "shipping")
            .map(|(_, f)| f.clone())
            .collect();
        for f in &targets {
            f.push_n(
                IN_FLIGHT / targets.len(),
                Fault::Delay(Duration::from_secs(3)).after().on("POST", "/"),
            );
        }
        let mut paused = five.spawn_logged(&["--once"], "paused.log");
        until("every request slot waiting", &mut paused, || {
            targets
                .iter()
                .all(|f| f.handled() as usize >= IN_FLIGHT / targets.len())
        })
        .await;
        let pid = paused.id().unwrap() as i32;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let before = writes_by(&five, "custsync-paused");

        // Another process takes the lease over once it expired, and finishes the work.
        five.provider_keys = keys("custsync-takeover", 1000.0);
        let mut tries = 0;
        let taken = loop {
            tries += 1;
            let run = five.run(&["--once"]).await;
            if !run.stderr.contains("lease held by") {
                break run;
            }
            assert!(tries < 500, "the lease was never taken over");
        };
        assert_eq!(taken.code, 0, "{}", taken.why());

        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        let status = tokio::time::timeout(Duration::from_secs(60), paused.wait())
            .await
            .expect("the resumed process ends")
            .unwrap();
        // A write already on the wire when the signal landed (its bytes partly sent) is
        // finished by the kernel after the resume: at most one per request slot, two per
        // target provider here. Anything past that was sent after the lease was lost (the
        // work left was hundreds of writes).
        let after = writes_by(&five, "custsync-paused");
        assert!(
            after <= before + IN_FLIGHT,
            "the resumed process sent {} writes after losing its lease\n{}",
            after - before,
            five.log_text("paused.log")
        );
        assert!(
            five.log_text("paused.log").contains("lease lost"),
            "{}",
            five.log_text("paused.log")
        );
        assert_eq!(status.code(), Some(1), "{}", five.log_text("paused.log"));
        assert!(five.duplicates().is_empty(), "{:?}", five.duplicates());
        assert!(five.deletes().is_empty(), "{:?}", five.deletes());
        five.provider_keys = keys("custsync-check", 1000.0);
        converged_and_quiet(&five, &everyone).await;
    }
}
