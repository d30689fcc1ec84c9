//! Faults end to end: the real binary against the five emulators, every one of them
//! failing a share of its requests at random (seeded): 500/502/503, 429 with and
//! without `Retry-After`, answers slower than the timeout, connections cut mid-body,
//! truncated JSON, and faults applied after the handler ran (the write happened, its
//! answer is lost) on POSTs. Runs repeat until one exits 0; then every customer must
//! be in every provider exactly once, and a run without faults must write nothing.

#[path = "common/five.rs"]
mod five;

use std::collections::BTreeSet;
use std::time::Duration;

use custsync::sandbox::faults::{Fault, RetryAfter, Rule};
use custsync::sandbox::CLIENT_CLOSED;
use five::{Backend, Five, Run};

/// Short timeouts so slow answers cost little; a limiter that never waits.
fn keys(max_retries: usize) -> String {
    format!(
        "timeout_secs = 0.4\nconnect_timeout_secs = 1\nmax_retries = {max_retries}\n\
         rate_limit = {{ per_second = 1000.0, burst = 100 }}\n"
    )
}

/// Every kind of fault, drawn uniformly. A slow answer is 2 s, past the 0.4 s timeout.
fn rules() -> Vec<Rule> {
    let slow = Duration::from_secs(2);
    vec![
        Fault::Status(500).into(),
        Fault::Status(502).into(),
        Fault::Status(503).into(),
        Fault::TooManyRequests { retry_after: None }.into(),
        Fault::TooManyRequests {
            retry_after: Some(RetryAfter::Seconds(1)),
        }
        .into(),
        Fault::Delay(slow).into(),
        Fault::CutMidBody.into(),
        Fault::TruncatedJson.into(),
        // The write happened; its answer is lost, late or an error.
        Fault::Status(503).after().on("POST", "/"),
        Fault::Delay(slow).after().on("POST", "/"),
        Fault::CutMidBody.on("POST", "/"),
        Fault::Status(502).after(),
    ]
}

/// A run that must end by itself, without a panic, and whose exit status agrees
/// with its report.
async fn bounded_run(w: &Five) -> Run {
    let run = tokio::time::timeout(Duration::from_secs(60), w.once())
        .await
        .expect("a run under faults must end (no unbounded retry loop)");
    assert!(!run.stderr.contains("panicked"), "{}", run.why());
    let report = run
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("{}", run.why()));
    let converged = report["converged"].as_bool() == Some(true);
    let failed = run.total("failed");
    let listing_failed = report["providers"]
        .as_object()
        .is_some_and(|m| m.values().any(|p| !p["listing_error"].is_null()));
    assert_eq!(converged, failed == 0 && !listing_failed, "{}", run.why());
    assert_eq!(run.code, if converged { 0 } else { 1 }, "{}", run.why());
    run
}

async fn converges_under_faults(b: Backend, seed: u64, people: usize, probability: f64) {
    let mut w = Five::start_on(b).await;
    let everyone: BTreeSet<String> = w.seed_spread(0, people);
    for (i, (_, f)) in w.faults().iter().enumerate() {
        f.random(seed * 10 + i as u64, probability, rules());
    }

    // Without retries, something fails: exit 1.
    w.provider_keys = keys(0);
    let first = bounded_run(&w).await;
    assert_eq!(first.code, 1, "{}", first.why());

    // With a few retries, runs converge, each making progress.
    w.provider_keys = keys(3);
    let mut runs = 1;
    loop {
        let run = bounded_run(&w).await;
        runs += 1;
        if run.code == 0 {
            break;
        }
        assert!(runs < 10, "not converged after {runs} runs: {}", run.why());
    }
    let injected: u64 = w.faults().iter().map(|(_, f)| f.injected()).sum();
    assert!(injected > 20, "only {injected} faults injected");
    // Converged under faults: everyone is everywhere, once.
    w.assert_everyone_everywhere_once(&everyone);
    // The faults reached the client as what they are: refusals, server errors, and
    // answers it stopped waiting for (logged as "client closed").
    let statuses: Vec<u16> = w
        .logs()
        .iter()
        .flat_map(|(_, l)| l.all().into_iter().map(|r| r.status))
        .collect();
    for status in [429, CLIENT_CLOSED] {
        assert!(statuses.contains(&status), "no {status} among {statuses:?}");
    }
    assert!(
        statuses.iter().any(|s| (500..600).contains(s)),
        "no 5xx among {statuses:?}"
    );

    // Faults off: nothing left to do.
    for (_, f) in w.faults() {
        f.clear();
    }
    w.sb.clear_logs();
    let last = bounded_run(&w).await;
    assert_eq!(last.code, 0, "{}", last.why());
    assert_eq!(w.writes(), 0, "a converged world needs no write");
    w.assert_everyone_everywhere_once(&everyone);
    eprintln!("seed {seed}: converged after {runs} runs, {injected} faults injected");
}

five::both! {
    async fn every_customer_ends_everywhere_once_under_faults_seed_1(b: Backend) {
        converges_under_faults(b, 1, 60, 0.15).await;
    }
}

five::both! {
    async fn every_customer_ends_everywhere_once_under_faults_seed_2(b: Backend) {
        converges_under_faults(b, 2, 40, 0.2).await;
    }
}

five::both! {
    #[ignore]
    async fn stress_many_seeds(b: Backend) {
        for seed in 3..23 {
            converges_under_faults(b, seed, 60, 0.25).await;
        }
    }
}

five::both! {
    /// A listing stores its pages together, several in one transaction: when a later
    /// page fails, every page read before it is still stored and merged (those held
    /// but not stored yet are stored before the listing ends), so its people reach
    /// the other providers, and nobody past the failed page does.
    async fn a_listing_that_fails_keeps_every_page_read_before(b: Backend) {
        let mut w = Five::start_on(b).await;
        // 25 pages of 100; the 16th fails for good, after 1,000 held records were
        // stored together and 500 more are held.
        let people: Vec<String> = (0..2500).map(|i| format!("e{i:04}@example.com")).collect();
        for (i, email) in people.iter().enumerate() {
            w.seed_in(1, email, i);
        }
        let ecwid = w.faults()[1].1;
        ecwid.always(Fault::Status(500).with_query("offset", "1500"));
        w.provider_keys = keys(0);
        let run = bounded_run(&w).await;
        assert_eq!(run.code, 1, "{}", run.why());
        let report = run.report.as_ref().unwrap();
        assert!(
            !report["providers"]["storefront"]["listing_error"].is_null(),
            "{}",
            run.why()
        );
        let shipping = &w.emails()[2];
        assert_eq!(shipping.len(), 1500, "{}", run.why());
        let read: BTreeSet<&String> = people[..1500].iter().collect();
        assert!(shipping.iter().all(|e| read.contains(e)), "{}", run.why());
    }
}
