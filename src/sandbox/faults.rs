//! Fault injection for every emulator: error statuses, 429s with and without
//! `Retry-After`, slow answers, connections cut mid-body, truncated JSON, extra
//! headers, and the hostile answers of `lies.rs` (any status, headers and body instead
//! of the emulator's, or its own answer bent), from a deterministic schedule, standing
//! rules or a seeded probability; and an optional enforced rate limit (a token bucket
//! over real time, 429 with `Retry-After` past it). A rule can require query
//! parameters, so that one page of a listing lies and the others do not.
//!
//! Owns: choosing a fault for a request and shaping the answer. Does not own what an
//! emulator stores or answers otherwise: a fault either replaces the emulator's answer
//! before its handler runs (its state is untouched) or after (its state changed, the
//! answer is lost or damaged). `Server::start` installs the layer inside the request
//! log, so the log shows each status as sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::time::Instant;

use super::lies::{Answer, Bend};
use super::{json_response, lock};

/// The `Retry-After` of an injected 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    Seconds(u64),
    HttpDate(SystemTime),
}

impl RetryAfter {
    fn header_value(&self) -> String {
        match self {
            RetryAfter::Seconds(s) => s.to_string(),
            RetryAfter::HttpDate(t) => httpdate::fmt_http_date(*t),
        }
    }
}

/// What goes wrong with one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// This status with a JSON body `{code, message, status}`.
    Status(u16),
    /// 429, with or without `Retry-After`.
    TooManyRequests { retry_after: Option<RetryAfter> },
    /// The answer comes this much later (past a client's timeout, usually).
    Delay(Duration),
    /// The handler's status, headers and the first half of its body, with a
    /// `Content-Length` of the whole, then the connection drops. An answer without
    /// a body (204) becomes a 200 promising one byte.
    CutMidBody,
    /// A complete 200 with a JSON content type and the first half of the handler's body.
    TruncatedJson,
    /// The handler's answer with these headers added (e.g. `x-rate-limit-remaining: 0`).
    Headers(Vec<(String, String)>),
    /// This status, these headers and this body instead of the handler's answer (the
    /// handler does not run): a redirect elsewhere, an empty page, 40 MB.
    Answer(Answer),
    /// The handler's answer, asked with other query parameters and with values of its
    /// JSON body replaced: a page whose `items` are `[]` while its `total` says 300.
    Bend(Bend),
}

impl Fault {
    /// A 429 asking the client to come back in `secs` seconds.
    pub fn retry_after_secs(secs: u64) -> Fault {
        Fault::TooManyRequests {
            retry_after: Some(RetryAfter::Seconds(secs)),
        }
    }

    /// Applied after the handler ran: the emulator's state changed, the answer is lost.
    pub fn after(self) -> Rule {
        Rule::from(self).after()
    }

    /// Applied only to requests with this method and a path starting with `path_prefix`.
    pub fn on(self, method: &str, path_prefix: &str) -> Rule {
        Rule::from(self).on(method, path_prefix)
    }

    /// Applied only to requests whose query has `key=value`.
    pub fn with_query(self, key: &str, value: &str) -> Rule {
        Rule::from(self).with_query(key, value)
    }

    /// Applied only to requests whose query lacks `key` (a listing, not a lookup).
    pub fn without_query(self, key: &str) -> Rule {
        Rule::from(self).without_query(key)
    }

    /// A redirect to `location` (302, 307, ...) instead of the handler's answer.
    pub fn redirect(status: u16, location: &str) -> Fault {
        Fault::Answer(Answer::redirect(status, location))
    }

    /// The handler's answer with the value at a JSON pointer replaced.
    pub fn set(pointer: &str, value: serde_json::Value) -> Fault {
        Fault::Bend(Bend::default().set(pointer, value))
    }

    /// Faults that damage the handler's own answer, so it always runs first.
    fn needs_answer(&self) -> bool {
        matches!(
            self,
            Fault::CutMidBody | Fault::TruncatedJson | Fault::Headers(_) | Fault::Bend(_)
        )
    }
}

/// A fault and which requests it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub fault: Fault,
    /// Run the handler first (state changes), then apply the fault. Always true in
    /// effect for the faults that damage the handler's answer.
    pub after: bool,
    /// Only this method (any case); `None` matches every method.
    pub method: Option<String>,
    /// Only paths (after the emulator's prefix) starting with this.
    pub path_prefix: Option<String>,
    /// Only requests whose query has each `(key, Some(value))` and lacks each
    /// `(key, None)`.
    pub query: Vec<(String, Option<String>)>,
}

impl From<Fault> for Rule {
    fn from(fault: Fault) -> Rule {
        Rule {
            fault,
            after: false,
            method: None,
            path_prefix: None,
            query: Vec::new(),
        }
    }
}

impl Rule {
    pub fn after(mut self) -> Rule {
        self.after = true;
        self
    }

    pub fn on(mut self, method: &str, path_prefix: &str) -> Rule {
        self.method = Some(method.to_string());
        self.path_prefix = Some(path_prefix.to_string());
        self
    }

    pub fn with_query(mut self, key: &str, value: &str) -> Rule {
        self.query.push((key.to_string(), Some(value.to_string())));
        self
    }

    pub fn without_query(mut self, key: &str) -> Rule {
        self.query.push((key.to_string(), None));
        self
    }

    fn matches(&self, method: &str, path: &str, query: Option<&str>) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
            && self.query_matches(query)
    }

    fn query_matches(&self, query: Option<&str>) -> bool {
        if self.query.is_empty() {
            return true;
        }
        let given: Vec<(String, String)> =
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        self.query.iter().all(|(key, want)| match want {
            Some(v) => given.iter().any(|(k, g)| k == key && g == v),
            None => !given.iter().any(|(k, _)| k == key),
        })
    }

    fn handler_first(&self) -> bool {
        self.after || self.fault.needs_answer()
    }
}

/// Seeded probability mode: each request not served by the schedule gets a fault
/// with `probability`, chosen uniformly among the rules that match it.
struct Random {
    rng: StdRng,
    probability: f64,
    rules: Vec<Rule>,
}

#[derive(Default)]
struct Plan {
    schedule: VecDeque<Rule>,
    /// Rules that apply to every matching request the schedule leaves alone.
    standing: Vec<Rule>,
    random: Option<Random>,
    injected: u64,
    /// Requests whose handler ran before their fault was applied.
    handled: u64,
    limit: Option<TokenBucket>,
    throttled: u64,
}

/// An enforced rate limit: `burst` tokens, refilled at `per_second`; a request takes
/// one token or is refused.
#[derive(Debug, Clone)]
struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(per_second: f64, burst: u32, now: Instant) -> Self {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            f64::MIN_POSITIVE
        };
        let burst = f64::from(burst.max(1));
        Self {
            per_second,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now;
        if self.tokens + 1e-9 >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.per_second;
        Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
    }
}

/// The faults of one emulator. Cheap to clone; every clone steers the same server.
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<Plan>>);

impl Faults {
    /// Applies `rule` to the next matching request, after the rules pushed before it.
    pub fn push(&self, rule: impl Into<Rule>) {
        lock(&self.0).schedule.push_back(rule.into());
    }

    /// Applies `rule` to the next `n` matching requests.
    pub fn push_n(&self, n: usize, rule: impl Into<Rule>) {
        let rule = rule.into();
        let mut plan = lock(&self.0);
        plan.schedule.extend(std::iter::repeat_n(rule, n));
    }

    /// From now on, every matching request that the schedule leaves alone gets `rule`
    /// (the first standing rule that matches wins), until `clear`: a listing that lies
    /// on every run, a create that is always redirected.
    pub fn always(&self, rule: impl Into<Rule>) {
        lock(&self.0).standing.push(rule.into());
    }

    /// From now on, a request the schedule leaves alone gets one of `rules` with
    /// `probability` (0 to 1), drawn from an RNG seeded with `seed`: the same seed
    /// and the same requests give the same faults.
    pub fn random<R: Into<Rule>>(
        &self,
        seed: u64,
        probability: f64,
        rules: impl IntoIterator<Item = R>,
    ) {
        let probability = if probability.is_finite() {
            probability.clamp(0.0, 1.0)
        } else {
            0.0
        };
        lock(&self.0).random = Some(Random {
            rng: StdRng::seed_from_u64(seed),
            probability,
            rules: rules.into_iter().map(Into::into).collect(),
        });
    }

    /// From now on, enforces a rate limit like a provider's: `burst` requests at once,
    /// refilled at `per_second`. A request over it gets a 429 with `Retry-After` (whole
    /// seconds, at least one) before any fault or handler sees it.
    pub fn rate_limit(&self, per_second: f64, burst: u32) {
        lock(&self.0).limit = Some(TokenBucket::new(per_second, burst, Instant::now()));
    }

    /// Lifts the enforced rate limit.
    pub fn no_rate_limit(&self) {
        lock(&self.0).limit = None;
    }

    /// How many requests the enforced rate limit refused so far.
    pub fn throttled(&self) -> u64 {
        lock(&self.0).throttled
    }

    /// Removes the schedule, the standing rules and the random mode; the count of
    /// injected faults stays, and so does the rate limit.
    pub fn clear(&self) {
        let mut plan = lock(&self.0);
        plan.schedule.clear();
        plan.standing.clear();
        plan.random = None;
    }

    /// How many faults have been applied so far.
    pub fn injected(&self) -> u64 {
        lock(&self.0).injected
    }

    /// How many requests with a fault applied after the handler have been through the
    /// handler: their change is made, their answer is still to be damaged (or held,
    /// for a `Delay`). Tests wait on it to act while such an answer is pending.
    pub fn handled(&self) -> u64 {
        lock(&self.0).handled
    }

    /// Scheduled faults not applied yet.
    pub fn pending(&self) -> usize {
        lock(&self.0).schedule.len()
    }

    /// A refusal when the request is over the enforced rate limit.
    fn over_limit(&self) -> Option<Fault> {
        let mut plan = lock(&self.0);
        let wait = plan.limit.as_mut()?.take(Instant::now()).err()?;
        plan.throttled += 1;
        let secs = wait.as_secs_f64().ceil().clamp(1.0, 86_400.0) as u64;
        Some(Fault::retry_after_secs(secs))
    }

    /// The fault for a request, if any: the first matching scheduled rule, else the
    /// first matching standing rule, else a draw.
    fn next(&self, method: &str, path: &str, query: Option<&str>) -> Option<Rule> {
        let mut plan = lock(&self.0);
        let matching = |r: &Rule| r.matches(method, path, query);
        let scheduled = plan.schedule.iter().position(matching);
        let standing = plan.standing.iter().find(|r| matching(r)).cloned();
        let rule = match (scheduled, standing) {
            (Some(i), _) => plan.schedule.remove(i),
            (None, Some(rule)) => Some(rule),
            (None, None) => plan
                .random
                .as_mut()
                .and_then(|r| r.draw(method, path, query)),
        };
        if rule.is_some() {
            plan.injected += 1;
        }
        rule
    }
}

impl Random {
    fn draw(&mut self, method: &str, path: &str, query: Option<&str>) -> Option<Rule> {
        // Always draw first, so matching does not shift the sequence of later draws.
        if !self.rng.random_bool(self.probability) {
            return None;
        }
        let candidates: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.matches(method, path, query))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let pick = self.rng.random_range(0..candidates.len());
        Some(candidates[pick].clone())
    }
}

/// The middleware `Server::start` installs: applies the fault chosen for a request.
pub(super) async fn inject(
    State((faults, prefix)): State<(Faults, Arc<str>)>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(refused) = faults.over_limit() {
        let mut resp = refusal(&refused);
        let body =
            json!({"code": 429, "message": "rate limit exceeded", "status": "Too Many Requests"});
        *resp.body_mut() = Body::from(body.to_string());
        resp.headers_mut().remove(header::CONTENT_LENGTH);
        return resp;
    }
    let path = req.uri().path();
    let path = path.strip_prefix(&*prefix).unwrap_or(path);
    let Some(rule) = faults.next(req.method().as_str(), path, req.uri().query()) else {
        return next.run(req).await;
    };
    tracing::debug!(fault = ?rule.fault, after = rule.handler_first(), "injecting fault");
    if rule.handler_first() {
        let req = match &rule.fault {
            Fault::Bend(bend) => bend.request(req),
            _ => req,
        };
        let resp = next.run(req).await;
        lock(&faults.0).handled += 1;
        damage(rule.fault, resp).await
    } else {
        match rule.fault {
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                next.run(req).await
            }
            Fault::Answer(answer) => answer.into_response(),
            other => refusal(&other),
        }
    }
}

/// Applies a fault to the answer the handler gave.
async fn damage(fault: Fault, resp: Response) -> Response {
    match fault {
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            resp
        }
        Fault::CutMidBody => cut(resp).await,
        Fault::TruncatedJson => truncate(resp).await,
        Fault::Headers(headers) => with_headers(resp, &headers),
        Fault::Bend(bend) => bend.answer(resp).await,
        Fault::Answer(answer) => answer.into_response(),
        refused @ (Fault::Status(_) | Fault::TooManyRequests { .. }) => refusal(&refused),
    }
}

/// The answer of a `Status` or `TooManyRequests` fault (anything else: a 500).
fn refusal(fault: &Fault) -> Response {
    let (code, retry_after) = match fault {
        Fault::Status(code) => (*code, None),
        Fault::TooManyRequests { retry_after } => (429, *retry_after),
        _ => (500, None),
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut resp = json_response(
        status,
        json!({"code": status.as_u16(), "message": format!("injected fault: {reason}"), "status": reason}),
    );
    if let Some(after) = retry_after {
        if let Ok(v) = HeaderValue::from_str(&after.header_value()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

/// Sends the status, the headers with the full `Content-Length` and half the body,
/// then fails the body stream, which makes the server drop the connection.
async fn cut(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let first = bytes.slice(..bytes.len() / 2);
    let promised = bytes.len().max(1);
    let sent = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(first) });
    let broken = futures::stream::once(async {
        // Let the server flush the first half before the connection goes.
        tokio::task::yield_now().await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected fault: connection cut mid-body",
        ))
    });
    // A 204 or 304 cannot carry a body, so there would be nothing to cut.
    if matches!(parts.status.as_u16(), 100..=199 | 204 | 304) {
        parts.status = StatusCode::OK;
    }
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(promised));
    Response::from_parts(parts, Body::from_stream(sent.chain(broken)))
}

/// A complete 200 answer whose JSON body stops halfway.
async fn truncate(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let mut half = bytes.slice(..bytes.len() / 2);
    // Half of a short body can still be valid JSON ("12" of "1234"): make sure it is not.
    if half.is_empty() || serde_json::from_slice::<serde::de::IgnoredAny>(&half).is_ok() {
        half = Bytes::from_static(b"{\"");
    }
    parts.status = StatusCode::OK;
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(half.len()));
    Response::from_parts(parts, Body::from(half))
}

fn with_headers(mut resp: Response, headers: &[(String, String)]) -> Response {
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes());
        let value = HeaderValue::from_str(value);
        if let (Ok(name), Ok(value)) = (name, value) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drawn(seed: u64) -> Vec<Option<Fault>> {
        let faults = Faults::default();
        faults.random(
            seed,
            0.5,
            [Fault::Status(503), Fault::CutMidBody, Fault::TruncatedJson],
        );
        (0..64)
            .map(|_| faults.next("GET", "/customers", None).map(|r| r.fault))
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let a = drawn(7);
        assert_eq!(a, drawn(7));
        assert_ne!(a, drawn(8));
        let hits = a.iter().filter(|f| f.is_some()).count();
        assert!((16..=48).contains(&hits), "{hits} of 64 at p=0.5");
    }

    #[test]
    fn schedule_applies_in_order_to_matching_requests_only() {
        let faults = Faults::default();
        faults.push(Fault::Status(503).on("post", "/customers"));
        faults.push_n(2, Fault::Status(502));
        assert_eq!(faults.pending(), 3);
        // A GET skips the POST-only rule and takes the next one.
        let r = faults.next("GET", "/customers", None).map(|r| r.fault);
        assert_eq!(r, Some(Fault::Status(502)));
        let r = faults.next("POST", "/customers/1", None).map(|r| r.fault);
        assert_eq!(r, Some(Fault::Status(503)));
        let r = faults.next("POST", "/customers", None).map(|r| r.fault);
        assert_eq!(r, Some(Fault::Status(502)));
        assert_eq!(faults.next("GET", "/customers", None), None);
        assert_eq!(faults.injected(), 3);
        assert_eq!(faults.pending(), 0);
    }

    #[test]
    fn probability_bounds() {
        let faults = Faults::default();
        faults.random(1, 1.0, [Fault::Status(500).on("GET", "/a")]);
        assert!(faults.next("GET", "/a/b", None).is_some());
        assert!(faults.next("GET", "/b", None).is_none());
        faults.random(1, f64::NAN, [Fault::Status(500)]);
        assert!(faults.next("GET", "/a", None).is_none());
        faults.random(1, 7.0, [Fault::Status(500)]);
        assert!(faults.next("GET", "/a", None).is_some());
        faults.clear();
        assert!(faults.next("GET", "/a", None).is_none());
    }

    #[test]
    fn query_conditions_and_standing_rules() {
        let faults = Faults::default();
        faults.always(Fault::Status(404).with_query("page", "6"));
        faults.always(Fault::Status(500).without_query("q"));
        faults.push(Fault::Status(503).with_query("page", "6"));
        let fault = |q| faults.next("GET", "/customer", q).map(|r| r.fault);
        // The schedule first, then the first standing rule that matches, every time.
        assert_eq!(fault(Some("per_page=50&page=6")), Some(Fault::Status(503)));
        assert_eq!(fault(Some("per_page=50&page=6")), Some(Fault::Status(404)));
        assert_eq!(fault(Some("page=6")), Some(Fault::Status(404)));
        assert_eq!(fault(Some("page=60")), Some(Fault::Status(500)));
        assert_eq!(fault(None), Some(Fault::Status(500)));
        assert_eq!(fault(Some("q=a%40b.c&page=1")), None);
        faults.clear();
        assert_eq!(fault(Some("page=6")), None);
    }

    #[test]
    fn damage_rules_always_run_the_handler() {
        assert!(Rule::from(Fault::CutMidBody).handler_first());
        assert!(!Rule::from(Fault::Status(503)).handler_first());
        assert!(Fault::Status(503).after().handler_first());
    }

    #[tokio::test]
    async fn truncated_json_is_never_valid() {
        for body in ["", "1234", "[]", r#"{"id":"a","email":"x@y.z"}"#] {
            let resp = Response::new(Body::from(body.to_string()));
            let resp = truncate(resp).await;
            assert_eq!(resp.status(), StatusCode::OK);
            let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            assert!(
                serde_json::from_slice::<serde_json::Value>(&bytes).is_err(),
                "{body:?} -> {bytes:?}"
            );
        }
    }

    #[test]
    fn the_token_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t0);
        assert!(b.take(t0).is_ok() && b.take(t0).is_ok() && b.take(t0).is_ok());
        let wait = b.take(t0).unwrap_err();
        assert!(wait > Duration::from_millis(99) && wait <= Duration::from_millis(100));
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(t0 + Duration::from_millis(150)).is_err());
        // Idle time refills up to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(later).is_ok()));
        assert!(b.take(later).is_err());
    }

    #[test]
    fn over_the_limit_is_a_429_with_whole_seconds_and_counted() {
        let faults = Faults::default();
        faults.rate_limit(1000.0, 2);
        faults.push(Fault::Status(503));
        assert!(faults.over_limit().is_none());
        assert!(faults.over_limit().is_none());
        assert_eq!(faults.over_limit(), Some(Fault::retry_after_secs(1)));
        assert_eq!(faults.throttled(), 1);
        // A refused request does not use up the schedule.
        assert_eq!(faults.pending(), 1);
        faults.no_rate_limit();
        assert!(faults.over_limit().is_none());
    }

    #[test]
    fn retry_after_headers() {
        assert_eq!(RetryAfter::Seconds(3).header_value(), "3");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784111777);
        assert_eq!(
            RetryAfter::HttpDate(t).header_value(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }
}
