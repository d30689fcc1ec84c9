//! The shared HTTP client under injected faults, through the real Malomo connector
//! against the Malomo emulator: what is retried, how long it waits, what fails at
//! once, and that a create whose answer was lost is never sent twice.
//!
//! Most tests run on paused time (`start_paused`): timeouts, backoff and the
//! provider's waits pass instantly, and elapsed times are exact.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use custsync::config::Config;
use custsync::model::{Field, Projection};
use custsync::providers::{connect, ListRequest, Listed, Page, Provider, ProviderError};
use custsync::sandbox::faults::{Fault, RetryAfter};
use custsync::sandbox::malomo::{Customer, Malomo, Options};
use custsync::sandbox::CLIENT_CLOSED;
use tokio::time::Instant;

/// One-second timeouts, `retries` retries and a limiter that never waits.
fn fast(retries: usize) -> String {
    format!(
        "timeout_secs = 1\nconnect_timeout_secs = 1\nmax_retries = {retries}\n\
         rate_limit = {{ per_second = 100000.0, burst = 1000 }}\n"
    )
}

struct World {
    malomo: Malomo,
    provider: Arc<dyn Provider>,
}

impl World {
    /// A Malomo emulator holding `customers` customers and a connector configured
    /// with `settings` (provider keys).
    async fn start(customers: usize, page_size: usize, settings: &str) -> World {
        let malomo = Malomo::start(Options {
            page_size,
            ..Options::default()
        })
        .await
        .expect("start the emulator");
        for i in 0..customers {
            let email = format!("c{i}@example.com");
            malomo.insert(Customer::new(&email, Some("Ana"), None, None));
        }
        let toml = format!(
            "[providers.malomo]\nkind = \"malomo\"\nbase_url = \"{}\"\napi_key = \"{}\"\n{settings}",
            malomo.base_url(),
            malomo.api_key()
        );
        let cfg = Config::from_toml(&toml).expect("config");
        let provider = connect(&cfg.providers[0]).expect("connector");
        World { malomo, provider }
    }

    async fn fast() -> World {
        World::start(3, 50, &fast(3)).await
    }

    fn faults(&self) -> &custsync::sandbox::faults::Faults {
        &self.malomo.server.faults
    }

    async fn list(&self) -> Result<Page, ProviderError> {
        self.provider.list(&ListRequest::default()).await
    }

    fn statuses(&self) -> Vec<u16> {
        self.malomo.log().all().iter().map(|r| r.status).collect()
    }

    /// Waits (on events, not time) until the emulator has logged `n` requests: one
    /// whose client timed out is logged when the server sees the connection close,
    /// which can come after the client has already returned.
    async fn logged(&self, n: usize) {
        for _ in 0..10_000 {
            if self.malomo.log().len() >= n {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    fn posts(&self) -> usize {
        self.malomo.log().count("POST", "/customers")
    }
}

fn customer(email: &str) -> Projection {
    Projection::new()
        .with(Field::Email, Some(email))
        .with(Field::FirstName, Some("Nova"))
}

#[tokio::test(start_paused = true)]
async fn a_503_twice_then_success_lists() {
    let w = World::fast().await;
    w.faults().push_n(2, Fault::Status(503));
    let page = w.list().await.expect("listed after two 503s");
    assert_eq!(page.items.len(), 3);
    assert_eq!(w.statuses(), vec![503, 503, 200]);
    assert_eq!(w.faults().injected(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_server_error_is_retried() {
    let w = World::fast().await;
    for status in [500, 502, 503] {
        w.faults().push(Fault::Status(status));
    }
    w.list().await.expect("listed after 500, 502, 503");
    assert_eq!(w.statuses(), vec![500, 502, 503, 200]);
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_for_its_retry_after_seconds() {
    let w = World::fast().await;
    w.faults().push(Fault::retry_after_secs(1));
    let start = Instant::now();
    w.list().await.expect("listed after a 429");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_millis(1100),
        "{waited:?}"
    );
    assert_eq!(w.statuses(), vec![429, 200]);
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_for_its_retry_after_date() {
    let w = World::fast().await;
    // The date has whole seconds: the wait is between one and two seconds.
    let when = SystemTime::now() + Duration::from_secs(2);
    w.faults().push(Fault::TooManyRequests {
        retry_after: Some(RetryAfter::HttpDate(when)),
    });
    let start = Instant::now();
    w.list().await.expect("listed after a 429");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited <= Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(w.statuses(), vec![429, 200]);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_backs_off_with_jitter() {
    let w = World::fast().await;
    w.faults()
        .push(Fault::TooManyRequests { retry_after: None });
    let start = Instant::now();
    w.list().await.expect("listed after a 429");
    // The first backoff is full jitter over 250 ms.
    assert!(start.elapsed() <= Duration::from_millis(250));
    assert_eq!(w.statuses(), vec![429, 200]);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_longest_wait_fails_at_once_and_holds_later_requests() {
    let w = World::fast().await;
    w.faults().push(Fault::retry_after_secs(3600));
    let start = Instant::now();
    let err = w
        .list()
        .await
        .expect_err("a one-hour wait is not waited out");
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    // The next request is not sent while the provider's hour runs.
    let err = w.list().await.expect_err("still throttled");
    assert_eq!(err.status(), Some(429));
    assert!(err.retry_after() > Some(Duration::from_secs(3500)));
    assert!(!err.maybe_applied());
    assert_eq!(w.statuses(), vec![429]);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn client_errors_fail_at_once_with_the_providers_message() {
    let w = World::fast().await;
    for status in [400, 404, 422] {
        w.malomo.log().clear();
        w.faults().push(Fault::Status(status));
        let err = w.list().await.expect_err("a client error is final");
        assert_eq!(err.status(), Some(status));
        assert!(!err.retryable());
        let text = err.to_string();
        assert!(text.starts_with("malomo: "), "{text}");
        assert!(text.contains("injected fault"), "{text}");
        assert_eq!(w.statuses(), vec![status], "{status} was not retried");
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_create_carries_the_emulators_own_message() {
    let w = World::fast().await;
    let err = w
        .provider
        .create(&customer("not-an-email"))
        .await
        .expect_err("an invalid email is refused");
    assert_eq!(err.status(), Some(422));
    assert_eq!(err.to_string(), "malomo: HTTP 422: email is invalid");
    assert_eq!(w.posts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_answer_times_out_and_is_retried() {
    let w = World::fast().await;
    w.faults().push(Fault::Delay(Duration::from_secs(10)));
    let start = Instant::now();
    w.list().await.expect("listed after a timeout");
    let took = start.elapsed();
    // One timeout (1 s), a jittered backoff (at most 250 ms), then the answer.
    assert!(
        took >= Duration::from_secs(1) && took <= Duration::from_millis(1250),
        "{took:?}"
    );
    let mut statuses = w.statuses();
    statuses.sort();
    assert_eq!(statuses, vec![200, CLIENT_CLOSED]);
}

#[tokio::test(start_paused = true)]
async fn a_fault_on_every_attempt_gives_up_after_max_retries() {
    let w = World::fast().await;
    w.faults().random(1, 1.0, [Fault::Status(503)]);
    let err = w.list().await.expect_err("503 forever");
    assert_eq!(err.status(), Some(503));
    assert!(err.to_string().starts_with("malomo: HTTP 503"), "{err}");
    assert_eq!(w.statuses(), vec![503; 4], "max_retries + 1 attempts");

    w.faults().clear();
    w.faults().push_n(10, Fault::Delay(Duration::from_secs(30)));
    let start = Instant::now();
    let err = w.list().await.expect_err("slow forever");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(w.faults().pending(), 6, "4 attempts, then no more");
    w.logged(8).await;
    assert_eq!(w.malomo.log().with_status(CLIENT_CLOSED), 4);
    assert!(start.elapsed() < Duration::from_secs(10), "bounded");
}

#[tokio::test(start_paused = true)]
async fn a_body_cut_mid_way_is_retried() {
    let w = World::fast().await;
    w.faults().push(Fault::CutMidBody);
    let page = w.list().await.expect("listed after a cut");
    assert_eq!(page.items.len(), 3);
    assert_eq!(w.statuses(), vec![200, 200]);
    assert_eq!(w.faults().injected(), 1);
}

#[tokio::test(start_paused = true)]
async fn truncated_json_is_retried() {
    let w = World::fast().await;
    w.faults().push(Fault::TruncatedJson);
    let page = w.list().await.expect("listed after truncated JSON");
    assert_eq!(page.items.len(), 3);
    assert_eq!(w.statuses(), vec![200, 200]);
    assert_eq!(w.faults().injected(), 1);
}

#[tokio::test(start_paused = true)]
async fn each_damaged_answer_reaches_the_client_as_that_damage() {
    let w = World::start(3, 50, &fast(0)).await;
    w.faults().push(Fault::CutMidBody);
    let err = w.list().await.expect_err("no retries");
    let text = err.to_string();
    assert!(
        text.contains("connection cut while reading the answer"),
        "{text}"
    );
    assert!(err.retryable() && err.maybe_applied());

    w.faults().push(Fault::TruncatedJson);
    let err = w.list().await.expect_err("no retries");
    assert!(matches!(err, ProviderError::Decode { .. }), "{err}");
    assert!(err.retryable() && err.maybe_applied());

    w.faults().push(Fault::Delay(Duration::from_secs(2)));
    let err = w.list().await.expect_err("no retries");
    assert!(err.to_string().contains("timed out"), "{err}");

    // Shorter than the timeout: only slow.
    w.faults().push(Fault::Delay(Duration::from_millis(500)));
    let start = Instant::now();
    w.list().await.expect("slow but in time");
    assert_eq!(start.elapsed(), Duration::from_millis(500));
}

/// Every way the answer to a create can be lost after the emulator stored it.
fn lost_answers() -> Vec<custsync::sandbox::faults::Rule> {
    vec![
        Fault::CutMidBody.on("POST", "/customers"),
        Fault::TruncatedJson.on("POST", "/customers"),
        Fault::Status(500).after(),
        Fault::Status(503).after(),
        Fault::Delay(Duration::from_secs(10)).after(),
    ]
}

#[tokio::test(start_paused = true)]
async fn a_create_whose_answer_was_lost_is_not_sent_again() {
    for rule in lost_answers() {
        let w = World::fast().await;
        w.faults().push(rule.clone());
        let err = w
            .provider
            .create(&customer("nova@example.com"))
            .await
            .expect_err("the answer was lost");
        assert!(err.maybe_applied(), "{rule:?}: {err}");
        w.logged(1).await;
        assert_eq!(w.posts(), 1, "{rule:?}: sent once");
        assert_eq!(
            w.malomo.by_email("nova@example.com").len(),
            1,
            "{rule:?}: stored once"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_create_refused_by_a_5xx_is_not_sent_again_either() {
    // The client cannot tell a 5xx before the store from one after it.
    let w = World::fast().await;
    w.faults().push(Fault::Status(503));
    let err = w
        .provider
        .create(&customer("nova@example.com"))
        .await
        .expect_err("503");
    assert!(err.maybe_applied());
    assert_eq!(w.posts(), 1);
    assert!(w.malomo.by_email("nova@example.com").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_throttled_create_is_retried_and_stored_once() {
    let w = World::fast().await;
    w.faults()
        .push(Fault::TooManyRequests { retry_after: None }.on("POST", "/customers"));
    w.faults()
        .push(Fault::retry_after_secs(1).on("POST", "/customers"));
    let created = w
        .provider
        .create(&customer("nova@example.com"))
        .await
        .expect("created after two 429s");
    assert_eq!(w.posts(), 3);
    assert_eq!(w.statuses(), vec![429, 429, 200]);
    let stored = w.malomo.by_email("nova@example.com");
    assert_eq!(stored.len(), 1);
    assert_eq!(created.id.0, stored[0].id);
}

/// Real time: the limiter keeps its own clock, and its wait is what is measured.
#[tokio::test]
async fn the_limiter_spaces_requests() {
    let w = World::start(
        1,
        50,
        "max_retries = 0\nrate_limit = { per_second = 20.0, burst = 1 }",
    )
    .await;
    let start = std::time::Instant::now();
    for _ in 0..11 {
        w.list().await.expect("listed");
    }
    let took = start.elapsed();
    // One at once, then ten 50 ms apart.
    assert!(took >= Duration::from_millis(480), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(w.malomo.log().len(), 11);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_delays_the_next_request_by_its_reset() {
    let w = World::fast().await;
    w.faults().push(Fault::Headers(vec![
        ("x-rate-limit-remaining".into(), "0".into()),
        ("x-rate-limit-reset".into(), "300".into()),
    ]));
    w.list().await.expect("first listing");
    let start = Instant::now();
    w.list().await.expect("second listing");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(350),
        "{waited:?}"
    );
    // A budget left means no wait.
    w.faults().push(Fault::Headers(vec![
        ("x-rate-limit-remaining".into(), "5".into()),
        ("x-rate-limit-reset".into(), "300".into()),
    ]));
    w.list().await.expect("third listing");
    let start = Instant::now();
    w.list().await.expect("fourth listing");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(w.statuses(), vec![200; 4]);
}

#[tokio::test(start_paused = true)]
async fn seeded_random_faults_still_read_every_customer() {
    let w = World::start(120, 10, &fast(8)).await;
    w.faults().random(
        42,
        0.3,
        [
            Fault::Status(500),
            Fault::Status(502),
            Fault::Status(503),
            Fault::TooManyRequests { retry_after: None },
            Fault::retry_after_secs(1),
            Fault::Delay(Duration::from_secs(5)),
            Fault::CutMidBody,
            Fault::TruncatedJson,
        ],
    );
    let mut ids = std::collections::BTreeSet::new();
    let mut req = ListRequest::default();
    loop {
        let page = w.provider.list(&req).await.expect("a page, after retries");
        for item in page.items {
            if let Listed::Record(r) = item {
                ids.insert(r.id.0);
            }
        }
        match page.next {
            Some(next) => req.token = Some(next),
            None => break,
        }
    }
    assert_eq!(ids.len(), 120);
    assert!(w.faults().injected() >= 3, "{}", w.faults().injected());
}

#[tokio::test(start_paused = true)]
async fn a_delete_whose_answer_was_cut_is_retried_and_gone_counts_as_done() {
    let w = World::fast().await;
    let id = w.malomo.customers()[0].id.clone();
    w.faults().push(Fault::CutMidBody);
    w.provider
        .delete(&custsync::model::RemoteId(id))
        .await
        .expect("deleted: the retry finds it gone");
    assert_eq!(w.malomo.customers().len(), 2);
    // The 204 was cut (sent as a 200 promising a body), the retry found nothing.
    assert_eq!(w.statuses(), vec![200, 404]);
}
