//! The one HTTP client every connector uses: base URL, authentication, timeouts, the
//! provider's rate limiter, retries and the provider's own pacing headers.
//!
//! Owns: everything that is the same for all providers on the wire. Does not own what a
//! status means for one provider (a Nuvemshop 404 past the last page, an Ecwid 409):
//! non-retryable answers come back to the connector as they are.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;

use super::pacing::{Admit, Pacer, Ticket};
use super::ProviderError;
use crate::config::{ProviderConfig, RateLimit};
use crate::model::ProviderName;

/// The longest custsync waits on a provider's say-so (Retry-After, a rate-limit reset)
/// before it gives the request up for this cycle.
const MAX_PROVIDER_WAIT: Duration = Duration::from_secs(120);

/// The largest answer custsync reads (DESIGN 4c): a longer body fails the request.
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// Same-origin redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// A wait read from a header is at most this long (a day): larger or unreadable
/// numbers ("1e300", "inf") must neither panic nor overflow an `Instant`.
const LONGEST_WAIT: Duration = Duration::from_secs(86_400);

/// Says whether a write may leave now: the holder of a tenant's lease (DESIGN 4c),
/// asked after the rate limiter let the request go and before it is sent, so that a
/// process that lost its lease while a write waited sends nothing more.
pub trait WriteGate: Send + Sync {
    fn may_write(&self) -> futures::future::BoxFuture<'_, bool>;

    /// Asked once more, without waiting, when the connection's task takes a write's
    /// body to put it on the socket: false when the permission `may_write` gave may
    /// have run out since (this process was paused in between). Defaults to true.
    fn still_may_write(&self) -> bool {
        true
    }
}

/// A write's body that asks its gate once more when hyper first polls it, on the
/// connection's own task, right before the request's bytes are written: a process
/// stopped after `may_write` said yes and resumed after its lease ran out sends an
/// incomplete request (its head at most), which no server acts on.
struct GatedBody {
    data: Option<bytes::Bytes>,
    gate: Arc<dyn WriteGate>,
}

#[derive(Debug)]
struct LeaseRanOut;

impl std::fmt::Display for LeaseRanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the lease ran out before the request was written")
    }
}

impl std::error::Error for LeaseRanOut {}

/// True when `e` is a request its [`GatedBody`] cut off: the error hyper made of it
/// carries [`LeaseRanOut`] among its sources.
fn cut_off_by_lease(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<LeaseRanOut>() {
            return true;
        }
        source = s.source();
    }
    false
}

impl http_body::Body for GatedBody {
    type Data = bytes::Bytes;
    type Error = LeaseRanOut;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, LeaseRanOut>>> {
        let Some(data) = self.data.take() else {
            return std::task::Poll::Ready(None);
        };
        std::task::Poll::Ready(Some(match self.gate.still_may_write() {
            true => Ok(http_body::Frame::data(data)),
            false => Err(LeaseRanOut),
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

tokio::task_local! {
    /// The gate of the writes made inside `gated`.
    static GATE: std::sync::Arc<dyn WriteGate>;
}

/// Runs `f` with every write request it makes (any method but GET) checked by `gate`.
pub async fn gated<F: std::future::Future>(gate: std::sync::Arc<dyn WriteGate>, f: F) -> F::Output {
    GATE.scope(gate, f).await
}

/// How a provider wants its key.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer KEY`
    Bearer(SecretString),
    /// A custom header carrying a prefix and the key, e.g. Nuvemshop's
    /// `Authentication: bearer KEY`.
    Header {
        name: &'static str,
        prefix: &'static str,
        key: SecretString,
    },
    /// HTTP Basic with the key as user and an empty password.
    BasicUser(SecretString),
}

/// Counters of one provider's traffic, read by the report and `/metrics`.
#[derive(Debug, Default)]
pub struct Traffic {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
    pub writes: AtomicU64,
}

impl Traffic {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A request relative to the provider's base URL.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// Path after `base_url`, already percent-encoded where needed, starting with `/`.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// The JSON body, serialized once: every attempt sends these bytes.
    pub body: Option<bytes::Bytes>,
    /// Safe to send twice. A request that is not (a create) is retried only when it
    /// cannot have reached the provider: the connection never opened, or a 429.
    pub idempotent: bool,
}

impl Request {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        let idempotent = method != Method::POST;
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            idempotent,
        }
    }
    /// Marks a POST that is safe to repeat (an upsert, Ecwid's update and delete).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }
    pub fn query(mut self, key: &str, value: impl ToString) -> Self {
        self.query.push((key.to_string(), value.to_string()));
        self
    }
    /// The JSON body, serialized once, straight from the connector's wire struct.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, body: &T) -> Self {
        // The wire structs always serialize (their map keys are strings).
        self.body = serde_json::to_vec(body).ok().map(bytes::Bytes::from);
        self
    }
}

/// An answer that was not retried away: 2xx, 3xx or a 4xx other than 408/429.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The shared client of one provider.
pub struct HttpClient {
    provider: ProviderName,
    kind: crate::config::Kind,
    client: reqwest::Client,
    base: String,
    /// `base`, parsed once.
    base_url: Url,
    auth: Auth,
    limiter: DefaultDirectRateLimiter,
    /// Requests wait for the limiter one at a time, in the order they came: waiting
    /// together, every one of them woke at each free slot, and all but one slept again.
    turn: tokio::sync::Mutex<()>,
    max_retries: usize,
    /// When the provider's own word (a 429's wait, its budget headers) lets the next
    /// request go.
    pacer: Pacer,
    pub traffic: Arc<Traffic>,
}

impl HttpClient {
    pub fn new(cfg: &ProviderConfig) -> Result<Self, ProviderError> {
        let auth = match cfg.kind {
            crate::config::Kind::Nuvemshop => Auth::Header {
                name: "Authentication",
                prefix: "bearer ",
                key: cfg.api_key.clone(),
            },
            crate::config::Kind::Sendwithus => Auth::BasicUser(cfg.api_key.clone()),
            _ => Auth::Bearer(cfg.api_key.clone()),
        };
        let mut headers = HeaderMap::new();
        if cfg.kind == crate::config::Kind::Malomo {
            headers.insert(
                ACCEPT,
                HeaderValue::from_static("application/vnd.malomo+json; version=2"),
            );
        } else {
            headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(same_origin_redirects())
            .user_agent(cfg.user_agent.clone())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .build()
            .map_err(|e| ProviderError::Transport {
                provider: cfg.name.clone(),
                message: e.to_string(),
                maybe_sent: false,
            })?;
        Ok(Self {
            provider: cfg.name.clone(),
            kind: cfg.kind,
            client,
            base: cfg.base_url.as_str().trim_end_matches('/').to_string(),
            base_url: cfg.base_url.clone(),
            auth,
            limiter: limiter(cfg.rate_limit),
            turn: tokio::sync::Mutex::new(()),
            max_retries: cfg.max_retries,
            pacer: Pacer::default(),
            traffic: Arc::new(Traffic::default()),
        })
    }

    pub fn provider(&self) -> &ProviderName {
        &self.provider
    }

    pub fn kind(&self) -> crate::config::Kind {
        self.kind
    }

    /// The absolute URL of a path, for connectors that must compare `Link` headers.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The URL of a request's path: the parsed base URL with the path (and query)
    /// set, so that no request parses the scheme and host again. A path that does not
    /// come out as the base URL followed by it (it cannot, for a path starting with
    /// `/`) falls back to a whole parse.
    fn request_url(&self, path: &str) -> Url {
        let (path_part, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let mut url = self.base_url.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base_path}{path_part}"));
        url.set_query(query);
        let whole = self.url(path);
        if url.as_str() == whole {
            return url;
        }
        Url::parse(&whole).unwrap_or(url)
    }

    /// Resolves a `Link` target (absolute or relative) to a path after the base URL.
    pub fn relative(&self, link: &str) -> Option<String> {
        let base = Url::parse(&format!("{}/", self.base)).ok()?;
        let full = base.join(link).ok()?;
        let full = full.as_str();
        let rest = full.strip_prefix(&self.base)?;
        Some(rest.to_string())
    }

    /// Sends a request under the rate limit, retrying connection errors, timeouts,
    /// 408, 429 and 5xx with exponential backoff and full jitter; a `Retry-After` or
    /// rate-limit reset from the provider wins over the computed delay.
    pub async fn send(&self, req: Request) -> Result<Response, ProviderError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(30))
            .with_max_times(self.max_retries);
        let provider = &self.provider;
        let traffic = &self.traffic;
        (|| self.attempt(&req))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &ProviderError| e.retryable() && (req.idempotent || !e.maybe_applied()))
            .adjust(|e, delay| {
                let delay = delay?;
                match e.retry_after() {
                    Some(wait) if wait > MAX_PROVIDER_WAIT => None,
                    Some(wait) => Some(wait),
                    None => Some(full_jitter(delay)),
                }
            })
            .notify(|e, delay| {
                traffic.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(provider = %provider, error = %e, delay_ms = delay.as_millis() as u64, "retrying");
            })
            .await
    }

    /// `send`, then decode a 2xx JSON body or turn anything else into an error.
    pub async fn send_json<T: DeserializeOwned>(&self, req: Request) -> Result<T, ProviderError> {
        let resp = self.send(req).await?;
        self.expect_success(&resp)?;
        self.decode(&resp.body)
    }

    /// Sends a create or an update whose answer is the record, in the shape the
    /// provider's listing shows it, keyed as a listing keys it
    /// ([`super::wire::decode_answer`]).
    pub async fn send_answer<T: DeserializeOwned>(
        &self,
        req: Request,
        to_record: impl FnOnce(T) -> super::RemoteRecord,
        keys: &super::Known,
    ) -> Result<super::RemoteRecord, ProviderError> {
        let resp = self.send(req).await?;
        self.expect_success(&resp)?;
        super::wire::decode_answer(&self.provider, &resp.body, to_record, keys)
    }

    pub fn decode<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, ProviderError> {
        serde_json::from_slice(body).map_err(|e| ProviderError::decode(&self.provider, e))
    }

    /// An error for any non-2xx answer, with the provider's own message.
    pub fn expect_success(&self, resp: &Response) -> Result<(), ProviderError> {
        if resp.status.is_success() {
            Ok(())
        } else {
            Err(self.status_error(resp.status, &resp.headers, &resp.body))
        }
    }

    pub fn status_error(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> ProviderError {
        ProviderError::Status {
            provider: self.provider.clone(),
            status: status.as_u16(),
            message: provider_message(status, body),
            // Nuvemshop sends `x-rate-limit-reset` on every answer: it says when to
            // come back only on a 429. `Retry-After` counts on any status (a 503's).
            retry_after: if status == StatusCode::TOO_MANY_REQUESTS {
                provider_wait(headers)
            } else {
                retry_after(headers)
            },
        }
    }

    async fn attempt(&self, req: &Request) -> Result<Response, ProviderError> {
        let ticket = self.admission().await?;
        let lost_lease = || ProviderError::Refused {
            provider: self.provider.clone(),
            message: "not sent: this process no longer holds the lease".into(),
        };
        let gate = match req.method {
            Method::GET => None,
            _ => GATE.try_with(Arc::clone).ok(),
        };
        if let Some(gate) = &gate {
            if !gate.may_write().await {
                return Err(lost_lease());
            }
        }
        self.traffic.requests.fetch_add(1, Ordering::Relaxed);
        if req.method != Method::GET {
            self.traffic.writes.fetch_add(1, Ordering::Relaxed);
        }
        let mut builder = self
            .client
            .request(req.method.clone(), self.request_url(&req.path));
        if !req.query.is_empty() {
            builder = builder.query(&req.query);
        }
        builder = match &self.auth {
            Auth::Bearer(key) => builder.header(
                AUTHORIZATION,
                secret_header(&format!("Bearer {}", key.expose_secret())),
            ),
            Auth::Header { name, prefix, key } => builder.header(
                *name,
                secret_header(&format!("{prefix}{}", key.expose_secret())),
            ),
            Auth::BasicUser(key) => builder.basic_auth(key.expose_secret(), Some("")),
        };
        if let Some(body) = &req.body {
            builder = builder.header(CONTENT_TYPE, "application/json");
            builder = match &gate {
                Some(gate) => builder.body(reqwest::Body::wrap(GatedBody {
                    data: Some(body.clone()),
                    gate: Arc::clone(gate),
                })),
                None => builder.body(body.clone()),
            };
        }
        let transport = |e: reqwest::Error| {
            if cut_off_by_lease(&e) {
                return ProviderError::Refused {
                    provider: self.provider.clone(),
                    message: "not sent: this process was paused and its lease may have run out"
                        .into(),
                };
            }
            if e.is_redirect() {
                return ProviderError::Refused {
                    provider: self.provider.clone(),
                    message: describe(&e.without_url()),
                };
            }
            ProviderError::Transport {
                provider: self.provider.clone(),
                maybe_sent: !e.is_connect(),
                message: describe(&e.without_url()),
            }
        };
        let resp = builder.send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        ticket.observe(status, &headers, Instant::now());
        let body = self.read_body(resp).await.map_err(|e| match e {
            BodyError::Transport(e) => transport(e),
            BodyError::TooLarge => ProviderError::Refused {
                provider: self.provider.clone(),
                message: format!("answer larger than {} MiB refused", MAX_BODY >> 20),
            },
        })?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.traffic.throttled.fetch_add(1, Ordering::Relaxed);
        }
        if status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error()
        {
            return Err(self.status_error(status, &headers, &body));
        }
        // A body cut short or garbled in transit: worth another try when safe.
        if status.is_success() && !body.is_empty() && is_json(&headers) {
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                return Err(ProviderError::decode(
                    &self.provider,
                    format!("invalid JSON: {e}"),
                ));
            }
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Reads an answer's body, at most `MAX_BODY` bytes of it: a longer one (by its
    /// `Content-Length` or as it streams) is dropped unread past the limit.
    async fn read_body(&self, mut resp: reqwest::Response) -> Result<bytes::Bytes, BodyError> {
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(BodyError::TooLarge);
        }
        let mut body =
            bytes::BytesMut::with_capacity(resp.content_length().map_or(8 * 1024, |n| n as usize));
        while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(BodyError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// Waits until the limiter lets a request go, on the runtime's own timer:
    /// governor's `until_ready` waits on a timer thread of its own, and every wait
    /// then cost two more thread wake-ups (the timer thread, then a runtime worker),
    /// which under a rate limit, where nearly every request waits, were a good part of
    /// the process's CPU.
    async fn limiter_ready(&self) {
        let _turn = self.turn.lock().await;
        while let Err(later) = self.limiter.check() {
            tokio::time::sleep(later.wait_time_from(self.limiter.clock().now())).await;
        }
    }

    /// Waits until the limiter and then the provider's own word let a request go.
    /// After waiting on the provider, the limiter is asked again, so that requests
    /// held back together (by a 429's pause) leave spaced, not all at once. A pause
    /// longer than `MAX_PROVIDER_WAIT` is not waited out: the request fails at once
    /// as throttled, without being sent, so each later request of the cycle gives up
    /// quickly too instead of stalling for two minutes and drawing another 429.
    async fn admission(&self) -> Result<Ticket<'_>, ProviderError> {
        loop {
            self.limiter_ready().await;
            match self.pacer.admit(Instant::now(), MAX_PROVIDER_WAIT) {
                Admit::Go(ticket) => return Ok(ticket),
                Admit::Wait(until) => tokio::time::sleep_until(until).await,
                Admit::TooLong(wait) => {
                    return Err(ProviderError::Status {
                        provider: self.provider.clone(),
                        status: StatusCode::TOO_MANY_REQUESTS.as_u16(),
                        message: format!(
                            "not sent: the provider asked to wait {}s more",
                            wait.as_secs()
                        ),
                        retry_after: Some(wait),
                    })
                }
            }
        }
    }
}

enum BodyError {
    Transport(reqwest::Error),
    TooLarge,
}

/// Follows a redirect only to the same origin (scheme, host, port), and a few times at
/// most: a key or a customer's data never leaves for another origin (DESIGN 4c). The
/// policy runs before the next request is made, so nothing reaches the other origin.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if !same {
            attempt.error("redirect to another origin refused")
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// The limiter of a `rate_limit`. The period between two requests is kept between
/// a nanosecond (a very high rate must not fall back to something slow) and a day
/// (a tiny rate must not overflow a `Duration`). One request of a burst of two or
/// more is kept in reserve: requests reach the provider a little earlier or later
/// than they left, and that request of room lets the provider count them inside its
/// limit all the same, for the price of one period once.
fn limiter(rate: RateLimit) -> DefaultDirectRateLimiter {
    let rate = RateLimit {
        burst: rate.burst.saturating_sub(1).max(1),
        ..rate
    };
    let period = seconds(1.0 / rate.per_second).max(Duration::from_nanos(1));
    // governor multiplies the period by the burst in u64 nanoseconds.
    let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX).max(1);
    let most = u32::try_from(u64::MAX / 4 / period_ns).unwrap_or(u32::MAX);
    let burst = NonZeroU32::new(rate.burst.clamp(1, most.max(1))).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst);
    RateLimiter::direct(quota)
}

/// A number of seconds as a duration: negative or NaN is zero, anything above
/// `LONGEST_WAIT` (infinity included) is `LONGEST_WAIT`.
fn seconds(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs)
        .unwrap_or(LONGEST_WAIT)
        .min(LONGEST_WAIT)
}

fn secret_header(value: &str) -> HeaderValue {
    let mut v =
        HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    v.set_sensitive(true);
    v
}

/// A random delay between zero and `delay` ("full jitter").
fn full_jitter(delay: Duration) -> Duration {
    let nanos = delay.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(rand::random_range(0..=nanos))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
}

fn header_num(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// How long the provider asked us to wait: `Retry-After` (seconds or an HTTP date),
/// else `x-rate-limit-reset` (milliseconds, Tiendanube's convention).
pub fn provider_wait(headers: &HeaderMap) -> Option<Duration> {
    retry_after(headers)
        .or_else(|| header_num(headers, "x-rate-limit-reset").map(|ms| seconds(ms / 1000.0)))
}

/// `Retry-After` alone: seconds or an HTTP date (a date in the past is no wait).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Some(seconds(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    let wait = when
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    Some(wait.min(LONGEST_WAIT))
}

/// The provider's own words for an error, whatever its error shape: Malomo's and
/// Partial.ly's `message` (with `errors`), Ecwid's `errorMessage`, Nuvemshop's
/// per-field map. Falls back to the HTTP reason.
pub fn provider_message(status: StatusCode, body: &[u8]) -> String {
    let reason = status.canonical_reason().unwrap_or("error").to_string();
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        return if text.is_empty() || text.len() > 200 {
            reason
        } else {
            text.to_string()
        };
    };
    let text = |v: &serde_json::Value| -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    };
    let mut parts = Vec::new();
    for key in ["message", "errorMessage", "error", "description", "errors"] {
        if let Some(v) = json.get(key).and_then(text) {
            parts.push(v);
        }
    }
    if parts.is_empty() {
        if let Some(map) = json.as_object() {
            // Nuvemshop 422: {"email": ["has already been taken"]}
            for (field, v) in map.iter().filter(|(k, _)| *k != "code" && *k != "status") {
                parts.push(format!("{field} {}", text(v).unwrap_or_default()));
            }
        }
    }
    if parts.is_empty() {
        reason
    } else {
        let joined = parts.join(": ");
        joined.chars().take(500).collect()
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirect not followed"
    } else if e.is_body() || e.is_decode() {
        "connection cut while reading the answer"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_from_every_error_shape() {
        let s = StatusCode::UNPROCESSABLE_ENTITY;
        assert_eq!(
            provider_message(s, br#"{"message":"bad","errors":["email is taken"]}"#),
            "bad: [\"email is taken\"]"
        );
        assert_eq!(
            provider_message(s, br#"{"errorMessage":"Customer exists","errorCode":"X"}"#),
            "Customer exists"
        );
        assert_eq!(
            provider_message(s, br#"{"email":["has already been taken"]}"#),
            "email [\"has already been taken\"]"
        );
        assert_eq!(provider_message(s, b""), "Unprocessable Entity");
    }

    #[test]
    fn waits_from_headers() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(provider_wait(&h), Some(Duration::from_secs(3)));
        let mut h = HeaderMap::new();
        h.insert("x-rate-limit-reset", HeaderValue::from_static("1500"));
        assert_eq!(provider_wait(&h), Some(Duration::from_millis(1500)));
        let mut h = HeaderMap::new();
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let w = provider_wait(&h).unwrap();
        assert!(
            w > Duration::from_secs(27) && w <= Duration::from_secs(30),
            "{w:?}"
        );
    }

    #[test]
    fn absurd_waits_and_rates_do_not_panic() {
        for value in ["inf", "1e300", "-5", "NaN", "18446744073709551616"] {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            h.insert("x-rate-limit-reset", HeaderValue::from_str(value).unwrap());
            let w = provider_wait(&h).unwrap();
            assert!(w <= LONGEST_WAIT, "{value}: {w:?}");
        }
        for (per_second, burst) in [(1e-30, u32::MAX), (1e30, 1), (1e-3, 1_000_000)] {
            let l = limiter(RateLimit { per_second, burst });
            assert!(l.check().is_ok());
        }
    }

    #[test]
    fn a_very_high_rate_does_not_fall_back_to_a_slow_one() {
        // 1e12 per second rounds to a zero period, which once meant one a second.
        let l = limiter(RateLimit {
            per_second: 1e12,
            burst: 1,
        });
        let allowed = (0..100).filter(|_| l.check().is_ok()).count();
        assert!(allowed >= 10, "{allowed} of 100");
    }

    #[test]
    fn reset_counts_only_on_a_429() {
        let mut h = HeaderMap::new();
        h.insert("x-rate-limit-reset", HeaderValue::from_static("19000"));
        let c = HttpClient::new(
            &crate::config::Config::from_toml(
                "[providers.n]\nkind = \"nuvemshop\"\nbase_url = \"http://127.0.0.1:1\"\napi_key = \"k\"",
            )
            .unwrap()
            .providers[0],
        )
        .unwrap();
        let e = c.status_error(StatusCode::SERVICE_UNAVAILABLE, &h, b"");
        assert_eq!(e.retry_after(), None);
        let e = c.status_error(StatusCode::TOO_MANY_REQUESTS, &h, b"");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(19)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        let e = c.status_error(StatusCode::SERVICE_UNAVAILABLE, &h, b"");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn jitter_stays_below_delay() {
        for _ in 0..100 {
            assert!(full_jitter(Duration::from_millis(10)) <= Duration::from_millis(10));
        }
    }

    /// Says yes when asked before the send, and whatever `late` holds when asked
    /// again as the body goes to the socket.
    struct Gate {
        late: bool,
    }
    impl WriteGate for Gate {
        fn may_write(&self) -> futures::future::BoxFuture<'_, bool> {
            Box::pin(async { true })
        }
        fn still_may_write(&self) -> bool {
            self.late
        }
    }

    /// A create whose gate says yes, then no once the connection takes its body (the
    /// process paused past its lease in between), reaches the server incomplete: no
    /// customer is made, and the error says the request was not sent (still doubtful,
    /// like any refused write: its head may have left).
    #[tokio::test]
    async fn a_write_whose_lease_runs_out_before_its_bytes_leave_is_not_sent() {
        use crate::sandbox::sendwithus::{Options, Sendwithus};
        let swu = Sendwithus::start(Options::default()).await.unwrap();
        let config = crate::config::Config::from_toml(&format!(
            "[providers.email]\nkind = \"sendwithus\"\nbase_url = \"{}\"\napi_key = \"{}\"\nmax_retries = 2\n",
            swu.base_url(),
            swu.api_key()
        ))
        .unwrap();
        let client = HttpClient::new(config.provider("email").unwrap()).unwrap();
        let create = |email: &str| {
            let mut req = Request::new(Method::POST, "/customers");
            req.body = Some(format!(r#"{{"email":"{email}"}}"#).into());
            req
        };
        let late = gated(
            Arc::new(Gate { late: false }),
            client.send(create("a@example.com")),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&late, ProviderError::Refused { message, .. } if message.contains("lease")),
            "{late:?}"
        );
        assert!(swu.customers().is_empty(), "{:?}", swu.customers());
        // The same request with the lease still held is made.
        gated(
            Arc::new(Gate { late: true }),
            client.send(create("b@example.com")),
        )
        .await
        .unwrap();
        let made: Vec<String> = swu.customers().into_iter().map(|c| c.email).collect();
        assert_eq!(made, ["b@example.com"]);
        // A 307 to the same origin is not followed with the body handed over once: the
        // answer comes back as it is, and nothing more is made.
        swu.server.faults.always(
            crate::sandbox::faults::Fault::redirect(307, &format!("{}/customers", swu.base_url()))
                .on("POST", "/customers"),
        );
        let redirected = gated(
            Arc::new(Gate { late: true }),
            client.send(create("c@example.com")),
        )
        .await
        .unwrap();
        assert_eq!(redirected.status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(swu.customers().len(), 1);
    }
}
