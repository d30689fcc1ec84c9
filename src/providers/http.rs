//! The one HTTP client every connector uses: base URL, authentication, timeouts, the
//! provider's rate limiter, retries and the provider's own pacing headers.
//!
//! Owns: everything that is the same for all providers on the wire. Does not own what a
//! status means for one provider (a Nuvemshop 404 past the last page, an Ecwid 409):
//! non-retryable answers come back to the connector as they are.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;

use super::ProviderError;
use crate::config::{ProviderConfig, RateLimit};
use crate::model::ProviderName;

/// The longest custsync waits on a provider's say-so (Retry-After, a rate-limit reset)
/// before it gives the request up for this cycle.
const MAX_PROVIDER_WAIT: Duration = Duration::from_secs(120);

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
    pub body: Option<serde_json::Value>,
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
    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
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
    client: reqwest::Client,
    base: String,
    auth: Auth,
    limiter: DefaultDirectRateLimiter,
    max_retries: usize,
    /// Requests wait until this instant: set from the provider's own budget headers.
    paused_until: Mutex<Option<Instant>>,
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
            client,
            base: cfg.base_url.as_str().trim_end_matches('/').to_string(),
            auth,
            limiter: limiter(cfg.rate_limit),
            max_retries: cfg.max_retries,
            paused_until: Mutex::new(None),
            traffic: Arc::new(Traffic::default()),
        })
    }

    pub fn provider(&self) -> &ProviderName {
        &self.provider
    }

    /// The absolute URL of a path, for connectors that must compare `Link` headers.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
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
            retry_after: provider_wait(headers),
        }
    }

    async fn attempt(&self, req: &Request) -> Result<Response, ProviderError> {
        self.wait_for_budget().await;
        self.limiter.until_ready().await;
        self.traffic.requests.fetch_add(1, Ordering::Relaxed);
        if req.method != Method::GET {
            self.traffic.writes.fetch_add(1, Ordering::Relaxed);
        }
        let mut builder = self.client.request(req.method.clone(), self.url(&req.path));
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
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let transport = |e: reqwest::Error| ProviderError::Transport {
            provider: self.provider.clone(),
            maybe_sent: !e.is_connect(),
            message: describe(&e.without_url()),
        };
        let resp = builder.send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport)?;
        self.note_budget(status, &headers);
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

    /// Slows down before the provider refuses: when its budget headers say the bucket
    /// is (nearly) empty, or a 429 says when to come back, later requests wait.
    fn note_budget(&self, status: StatusCode, headers: &HeaderMap) {
        let remaining = header_num(headers, "x-rate-limit-remaining");
        let wait = if status == StatusCode::TOO_MANY_REQUESTS {
            provider_wait(headers)
        } else if remaining.is_some_and(|r| r < 1.0) {
            header_num(headers, "x-rate-limit-reset")
                .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
        } else {
            None
        };
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            let until = Instant::now() + wait.min(MAX_PROVIDER_WAIT);
            let mut paused = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
            if paused.map_or(true, |p| p < until) {
                *paused = Some(until);
            }
        }
    }

    async fn wait_for_budget(&self) {
        let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }
}

fn limiter(rate: RateLimit) -> DefaultDirectRateLimiter {
    let period = Duration::from_secs_f64(1.0 / rate.per_second);
    let burst = NonZeroU32::new(rate.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    RateLimiter::direct(quota)
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
    if let Some(value) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if let Ok(secs) = value.parse::<f64>() {
            return Some(Duration::from_secs_f64(secs.max(0.0)));
        }
        if let Ok(when) = httpdate::parse_http_date(value) {
            return Some(
                when.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default(),
            );
        }
    }
    header_num(headers, "x-rate-limit-reset")
        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
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
    fn jitter_stays_below_delay() {
        for _ in 0..100 {
            assert!(full_jitter(Duration::from_millis(10)) <= Duration::from_millis(10));
        }
    }
}
