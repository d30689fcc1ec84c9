//! Rate limits end to end: the real binary against the five emulators, each enforcing
//! a limit, on a reconciliation that needs hundreds of writes. custsync must keep
//! inside every limit (no 429, or almost none) and still finish close to the floor.
//!
//! The floor: each provider has its own limiter, shared by its reads and writes, and
//! the providers are served at once, so no run can be faster than
//! `max over providers of (requests - burst) / per_second`: `burst` requests may go at
//! once, every later one waits for its share of the rate. `requests` counts every
//! request the emulator received (listing pages, lookups, writes). The wall time is
//! the whole process, from spawn to exit (start, poll, merge, push, report).

#[path = "common/five.rs"]
mod five;

use std::time::Duration;

/// The tests here measure wall time against a floor: run side by side on two cores,
/// each would also measure the others. One at a time.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Writes back what the build left in the page cache before the clock starts: right
/// after a build, gigabytes waiting for the disk can hold SQLite's `fsync` for a second
/// or more, which would be measured as custsync's.
fn settle_disk() {
    // SAFETY: sync(2) takes no argument and cannot fail.
    unsafe { libc::sync() };
}

use custsync::sandbox::nuvemshop;
use five::Five;

/// The floor of a run: `(requests - burst) / per_second` of the busiest provider.
fn floor(traffic: &[(&str, usize, usize)], per_second: f64, burst: usize) -> Duration {
    let busiest = traffic.iter().map(|(_, n, _)| *n).max().unwrap_or(0);
    Duration::from_secs_f64(busiest.saturating_sub(burst) as f64 / per_second)
}

/// All five emulators enforce 25 requests a second with a burst of 5 (a token bucket,
/// 429 with `Retry-After` past it), and the config says the same. 240 people only in
/// Malomo make 960 creates in the four others: a floor near 9.4 s, against which the
/// fixed costs of a run (start, listing, merge: a few tenths of a second) stay small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_limit_draws_no_429_and_keeps_to_the_floor() {
    let _alone = ALONE.lock().await;
    settle_disk();
    const PER_SECOND: f64 = 25.0;
    const BURST: u32 = 5;
    let mut w = Five::start().await;
    for (_, f) in w.faults() {
        f.rate_limit(PER_SECOND, BURST);
    }
    w.provider_keys = format!("rate_limit = {{ per_second = {PER_SECOND:.1}, burst = {BURST} }}\n");
    let everyone = w.seed_malomo(240);

    let run = w.once().await;
    assert_eq!(run.code, 0, "{}", run.why());
    w.assert_everyone_everywhere_once(&everyone);
    assert_eq!(run.total("created"), 4 * 240, "{}", run.why());
    assert!(w.writes() >= 4 * 240);

    let traffic = w.traffic();
    let requests: usize = traffic.iter().map(|(_, n, _)| n).sum();
    let refused: usize = traffic.iter().map(|(_, _, r)| r).sum();
    let throttled: u64 = w.faults().iter().map(|(_, f)| f.throttled()).sum();
    assert_eq!(
        refused as u64, throttled,
        "every refusal is logged as a 429"
    );
    assert!(
        refused * 50 <= requests,
        "{refused} of {requests} requests refused (more than 2%): {traffic:?}"
    );
    let floor = floor(&traffic, PER_SECOND, BURST as usize);
    assert!(
        run.took <= floor.mul_f64(1.10),
        "took {:?}, floor {floor:?} (+10% = {:?}): {traffic:?}",
        run.took,
        floor.mul_f64(1.10)
    );
    // The limit was real: nothing finished faster than it allows.
    assert!(
        run.took >= floor.mul_f64(0.95),
        "took {:?}, floor {floor:?}",
        run.took
    );
    eprintln!(
        "took {:?} for a floor of {floor:?}; {refused} of {requests} refused",
        run.took
    );
}

/// Nuvemshop's own leaky bucket (10 requests, draining 25 a second) with a config that
/// allows far more (100 a second, burst 40): only the `x-rate-limit-*` headers on
/// every answer can keep custsync inside the bucket, and they must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nuvemshop_budget_headers_keep_custsync_inside_its_bucket() {
    let _alone = ALONE.lock().await;
    settle_disk();
    const SIZE: u32 = 10;
    const DRAIN: f64 = 25.0;
    let mut w = Five::with_nuvemshop(nuvemshop::Options {
        rate_limit: Some((SIZE, DRAIN)),
        ..Default::default()
    })
    .await;
    w.keys_for.insert(
        "store",
        "rate_limit = { per_second = 100.0, burst = 40 }\n".into(),
    );
    let everyone = w.seed_malomo(200);

    let run = w.once().await;
    assert_eq!(run.code, 0, "{}", run.why());
    w.assert_everyone_everywhere_once(&everyone);
    assert_eq!(run.count("store", "created"), 200);

    let log = w.sb.nuvemshop.log();
    assert_eq!(
        log.with_status(429),
        0,
        "{} of {} requests refused",
        log.with_status(429),
        log.len()
    );
    assert_eq!(run.count("store", "throttled"), 0);
    // The bucket's floor: `SIZE` at once, then one per drain period.
    let floor = Duration::from_secs_f64(log.len().saturating_sub(SIZE as usize) as f64 / DRAIN);
    assert!(
        run.took <= floor.mul_f64(1.10),
        "took {:?}, floor {floor:?} for {} requests",
        run.took,
        log.len()
    );
    eprintln!("took {:?} for a floor of {floor:?}", run.took);
}

/// Requests held back together by a 429's `Retry-After` leave spaced by the limiter
/// when the pause ends, not all at once into a provider that allows a burst of 3.
/// Real time: the limiter keeps its own clock (about 1.3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_by_a_429_leave_spaced_by_the_limiter() {
    let _alone = ALONE.lock().await;
    settle_disk();
    use custsync::config::Config;
    use custsync::providers::{connect, ListRequest};
    use custsync::sandbox::faults::Fault;
    use custsync::sandbox::malomo::{Customer, Malomo, Options};

    let malomo = Malomo::start(Options::default()).await.expect("malomo");
    malomo.insert(Customer::new("a@example.com", None, None, None));
    malomo.server.faults.rate_limit(20.0, 3);
    malomo.server.faults.push(Fault::retry_after_secs(1));
    let toml = format!(
        "[providers.m]\nkind = \"malomo\"\nbase_url = \"{}\"\napi_key = \"{}\"\n\
         max_retries = 3\nrate_limit = {{ per_second = 20.0, burst = 3 }}\n",
        malomo.base_url(),
        malomo.api_key()
    );
    let cfg = Config::from_toml(&toml).expect("config");
    let provider = connect(&cfg.providers[0]).expect("connector");
    let first = ListRequest::default();
    let lists = (0..8).map(|_| provider.list(&first));
    for listed in futures::future::join_all(lists).await {
        listed.expect("listed");
    }
    let log = malomo.log();
    assert_eq!(log.len(), 9, "8 listings and one retry");
    assert_eq!(
        log.with_status(429),
        1,
        "only the injected 429: {:?}",
        log.all().iter().map(|r| r.status).collect::<Vec<_>>()
    );
}
