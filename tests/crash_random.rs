//! Crash safety under a seeded random adversary: the real binary runs against the five
//! emulators while they fail a share of their requests at random (errors, slow and cut
//! answers, writes whose answers are lost) and, now and then, one listing page lies
//! (an empty page while the listing says there is more, a 404 after a `rel="next"`).
//! Each run is killed with SIGKILL after a random number of writes. Then the faults go
//! and custsync runs to convergence: every customer exactly once in every provider, no
//! delete request ever (no one was deleted anywhere), and one more run writes nothing.
//!
//! The seed is fixed and printed with every failure; `CRASH_SEED=N` replays another,
//! and `CRASH_LIES=0` leaves the lying pages out (kills and transport faults only).
//! Kill points are events (a count of writes in the request logs), never time.

#[path = "common/five.rs"]
mod five;

use std::time::Duration;

use custsync::sandbox::faults::{Fault, Faults, Rule};
use custsync::sandbox::lies::{Answer, Bend};
use five::Five;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::process::Child;

const SEED: u64 = 0x5afe_c0de;
const PEOPLE: usize = 120;
const ROUNDS: usize = 16;
/// Records per page where the API takes a size: 120 people are three pages.
const PAGE: usize = 50;

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED)
}

/// What fails at random everywhere: server errors, a 429, answers slower than the
/// timeout, cut and truncated answers, and writes made whose answers are lost.
fn transport_faults() -> Vec<Rule> {
    let slow = Duration::from_secs(2);
    vec![
        Fault::Status(503).into(),
        Fault::TooManyRequests { retry_after: None }.into(),
        Fault::CutMidBody.into(),
        Fault::TruncatedJson.into(),
        Fault::Delay(slow).into(),
        Fault::Status(502).after().on("POST", "/"),
        Fault::Delay(slow).after().on("POST", "/"),
        Fault::Status(503).after().on("PUT", "/"),
    ]
}

/// One lying page of a listing for `which` provider (0 Nuvemshop, 1 Ecwid, 2
/// Partial.ly): the last of the three pages of 120 people, which the second says is
/// there. It hides 20 people, 17%: under the guard's 20%, so only the listing's own
/// proof stops their deletion. It waits in the schedule until that page is asked.
fn lie(which: usize) -> Rule {
    match which {
        0 => Fault::Answer(Answer::json(
            404,
            json!({"code": 404, "message": "Not Found", "description": "Last page is 2"}),
        ))
        .on("GET", "/customers")
        .with_query("page", "3")
        .without_query("q"),
        1 => Fault::Bend(
            Bend::default()
                .set("/data/attributes/items", json!([]))
                .set("/data/attributes/count", json!(0)),
        )
        .on("GET", "/api/json/v1/ecwid/customers")
        .with_query("offset", &(2 * PAGE).to_string())
        .without_query("email"),
        _ => Fault::set("/customers", json!([]))
            .on("GET", "/customer")
            .with_query("page", "3")
            .without_query("q"),
    }
}

async fn kill(child: &mut Child) {
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.expect("reaped");
    assert_eq!(status.code(), None, "killed by a signal, not exited");
}

/// Lets a spawned run go until `writes` more writes reached the emulators, then kills
/// it; a run that ends first is left to end. Answers whether it was killed.
async fn kill_after_writes(w: &Five, child: &mut Child, writes: usize, seed: u64) -> bool {
    let before = w.writes();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if w.writes() >= before + writes {
            kill(child).await;
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "seed {seed}: a run neither ended nor wrote {writes} times in 30 s"
        );
        // An event wait: the emulators and the child run on other threads.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_under_random_faults_never_delete_or_duplicate() {
    let seed = seed();
    eprintln!("crash_random seed {seed} (replay with CRASH_SEED={seed})");
    let lies = std::env::var("CRASH_LIES").map_or(true, |v| v != "0");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = Five::start().await;
    w.sync = "full_listing_hours = 0\n".into();
    w.provider_keys = "rate_limit = { per_second = 400.0, burst = 10 }\nmax_retries = 2\n\
                       timeout_secs = 0.5\nconnect_timeout_secs = 1\n"
        .into();
    let paged = format!("{}page_size = {PAGE}\n", w.provider_keys);
    for label in ["store", "storefront", "plans"] {
        w.keys_for.insert(label, paged.clone());
    }
    let everyone = w.seed_spread(0, PEOPLE);
    let listed: [&Faults; 3] = [
        &w.sb.nuvemshop.server.faults,
        &w.sb.ecwid.server.faults,
        &w.sb.partially.server.faults,
    ];

    let mut killed = 0;
    for round in 0..ROUNDS {
        for (_, f) in w.faults() {
            f.random(rng.random(), 0.06, transport_faults());
        }
        // Every other round or so, one listing lies on its second page.
        if rng.random_bool(0.6) && lies {
            let which = rng.random_range(0..listed.len());
            listed[which].push(lie(which));
        }
        let writes = rng.random_range(1..=150);
        let mut child = w.spawn_once();
        if kill_after_writes(&w, &mut child, writes, seed).await {
            killed += 1;
        }
        let d = w.deletes();
        assert!(
            d.is_empty(),
            "seed {seed}, round {round}: {} delete request(s), first {:?}",
            d.len(),
            d.first()
        );
        let dup = w.duplicates();
        assert!(
            dup.is_empty(),
            "seed {seed}, round {round}: duplicates {dup:?}"
        );
    }

    // The adversary leaves: runs converge.
    for (_, f) in w.faults() {
        f.clear();
    }
    let mut runs = 0;
    loop {
        let run = tokio::time::timeout(Duration::from_secs(60), w.once())
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: failsafe, a run did not end"));
        runs += 1;
        if run.code == 0 {
            break;
        }
        assert!(
            runs < 4,
            "seed {seed}: not converged after {runs} clean runs: {}",
            run.why()
        );
    }
    let d = w.deletes();
    assert!(
        d.is_empty(),
        "seed {seed}: {} delete request(s), first {:?}",
        d.len(),
        d.first()
    );
    let problems = std::panic::catch_unwind(|| w.assert_everyone_everywhere_once(&everyone));
    if let Err(e) = problems {
        let text = e
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "?".into());
        panic!("seed {seed}: {text}");
    }

    // Nothing left to do: zero writes.
    w.sb.clear_logs();
    let run = w.once().await;
    assert_eq!(run.code, 0, "seed {seed}: {}", run.why());
    assert_eq!(
        w.writes(),
        0,
        "seed {seed}: a converged world needs no write: {:?}",
        w.write_lines()
    );
    eprintln!("seed {seed}: {killed} of {ROUNDS} runs killed, converged after {runs} clean run(s)");
}
