//! Nuvemshop (Tiendanube) emulator under `/v1/STORE_ID`: `Authentication: bearer KEY`,
//! a required `User-Agent`, JSON-only writes, the document's list filters over numbered
//! pages (`X-Total-Count`, a `Link` header, 404 past the last page, `200 []` when nothing
//! matches), create (201) and partial update with per-field 422s, no delete, and an
//! optional leaky-bucket rate limit with `x-rate-limit-*` headers.
//!
//! Owns: the emulated store's state and wire behaviour. Records are kept as the JSON
//! objects the API sends, with every documented field.

mod bucket;
mod listing;
mod records;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{FixedOffset, Utc};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::{lock, RequestLog, Server};
use bucket::Bucket;
use listing::list;
use records::{create, document_examples, retrieve, update};

pub const DEFAULT_STORE_ID: u64 = 123456;
pub const DEFAULT_PER_PAGE: usize = 30;
pub const MAX_PER_PAGE: usize = 200;

#[derive(Clone)]
pub struct Options {
    pub api_key: String,
    pub store_id: u64,
    /// `(bucket_size, drain_per_sec)`, e.g. Tiendanube's `(40, 2.0)`; off when `None`.
    pub rate_limit: Option<(u32, f64)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            api_key: "nuvemshop-sandbox-key".into(),
            store_id: DEFAULT_STORE_ID,
            rate_limit: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("api_key", &"<redacted>")
            .field("store_id", &self.store_id)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

/// A seed with `name` and `email`; `insert` fills every other documented field.
pub fn seed(name: &str, email: &str) -> Value {
    json!({"name": name, "email": email})
}

struct Inner {
    opts: Options,
    /// Read freely; changed only through `customers_mut`, which drops the listing cache.
    customers: BTreeMap<u64, Value>,
    /// The ids the last listing's filters matched, for its next pages.
    listing: Option<listing::Matched>,
    next_id: u64,
    next_address_id: u64,
    base_url: String,
    bucket: Option<Bucket>,
    /// A lying listing: every page answers the first page's records, with a `Link` to
    /// the page after the one asked, for ever.
    page_ignored: bool,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Inner>>);

/// A running Nuvemshop emulator.
pub struct Nuvemshop {
    pub server: Server,
    shared: Shared,
}

impl Nuvemshop {
    pub async fn start(opts: Options) -> std::io::Result<Nuvemshop> {
        let prefix = format!("/v1/{}", opts.store_id);
        let bucket = opts
            .rate_limit
            .map(|(size, drain)| Bucket::new(size, drain, Instant::now()));
        let shared = Shared(Arc::new(Mutex::new(Inner {
            opts,
            customers: BTreeMap::new(),
            listing: None,
            next_id: 1,
            next_address_id: 1,
            base_url: String::new(),
            bucket,
            page_ignored: false,
        })));
        let api = Router::new()
            .route("/customers", get(list).post(create))
            .route("/customers/{id}", get(retrieve).put(update))
            .layer(middleware::from_fn_with_state(shared.clone(), guard))
            .with_state(shared.clone());
        let server = Server::start(Router::new().nest(&prefix, api), &prefix).await?;
        lock(&shared.0).base_url = format!("{}{prefix}", server.url());
        Ok(Nuvemshop { server, shared })
    }

    /// The `base_url` to configure: `http://127.0.0.1:PORT/v1/STORE_ID`.
    pub fn base_url(&self) -> String {
        lock(&self.shared.0).base_url.clone()
    }

    pub fn api_key(&self) -> String {
        lock(&self.shared.0).opts.api_key.clone()
    }

    pub fn log(&self) -> &RequestLog {
        &self.server.log
    }

    /// Stores a customer as given (dates such as `+0000` kept as they are), filling the
    /// documented fields it lacks; a missing `id` gets the next free one.
    pub fn insert(&self, record: Value) -> u64 {
        lock(&self.shared.0).insert(record)
    }

    /// Every customer, by id ascending.
    pub fn customers(&self) -> Vec<Value> {
        lock(&self.shared.0).customers.values().cloned().collect()
    }

    pub fn customer(&self, id: u64) -> Option<Value> {
        lock(&self.shared.0).customers.get(&id).cloned()
    }

    /// Customers whose email is this one (trimmed, case-insensitive).
    pub fn by_email(&self, email: &str) -> Vec<Value> {
        let email = email.trim().to_lowercase();
        self.customers()
            .into_iter()
            .filter(|c| text(c, "email").map(|e| e.trim().to_lowercase()) == Some(email.clone()))
            .collect()
    }

    /// Edits a customer as the store owner would (bumps `updated_at`).
    pub fn edit(&self, id: u64, f: impl FnOnce(&mut Value)) {
        if let Some(c) = lock(&self.shared.0).customers_mut().get_mut(&id) {
            f(c);
            c["updated_at"] = json!(now_text());
        }
    }

    pub fn remove(&self, id: u64) {
        lock(&self.shared.0).customers_mut().remove(&id);
    }

    /// Makes the listing lie (or stop lying): it ignores `page`, answering the first
    /// page's records every time, and always links a next page (`page` + 1), as a server
    /// that lost its paging would. `X-Total-Count` stays true.
    pub fn set_page_ignored(&self, ignored: bool) {
        lock(&self.shared.0).page_ignored = ignored;
    }

    /// The two customers of the document's `GET /customers` example (ids 101 and 112,
    /// one email), exactly as shown there.
    pub fn seed_document_examples(&self) -> Vec<u64> {
        document_examples()
            .into_iter()
            .map(|c| self.insert(c))
            .collect()
    }
}

impl Inner {
    /// The customers, to change: what a listing matched is forgotten.
    fn customers_mut(&mut self) -> &mut BTreeMap<u64, Value> {
        self.listing = None;
        &mut self.customers
    }
}

fn text<'a>(c: &'a Value, key: &str) -> Option<&'a str> {
    c.get(key).and_then(Value::as_str)
}

/// Now, written as the API writes dates: `2013-01-03T09:11:51-03:00`.
fn now_text() -> String {
    let now = Utc::now();
    match FixedOffset::west_opt(3 * 3600) {
        Some(zone) => now
            .with_timezone(&zone)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        None => now.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
    }
}

/// An answer refusing a request (small, unlike a `Response`, to travel in a `Result`).
type Refusal = (StatusCode, Json<Value>);

/// Tiendanube's error shape: `{"code", "message", "description"}`.
fn error(status: StatusCode, description: &str) -> Refusal {
    let body = json!({"code": status.as_u16(), "message": status.canonical_reason(), "description": description});
    (status, Json(body))
}

/// A validation error: 422 with messages per field, e.g. `{"name": ["can't be blank"]}`.
fn invalid(errors: Map<String, Value>) -> Refusal {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(Value::Object(errors)),
    )
}

fn not_found() -> Refusal {
    error(
        StatusCode::NOT_FOUND,
        "Customer with such id does not exist",
    )
}

// ---- Admission: headers, auth, rate limit ----

/// Checks every request before its handler and stamps the rate-limit headers on
/// every answer when the limit is on.
async fn guard(State(shared): State<Shared>, req: Request, next: Next) -> Response {
    let mut resp = match admit(&shared, req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.into_response(),
    };
    let mut inner = lock(&shared.0);
    if let Some(bucket) = inner.bucket.as_mut() {
        bucket.leak(Instant::now());
        for (name, value) in bucket.headers() {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
    }
    resp
}

fn admit(shared: &Shared, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if value(header::USER_AGENT).is_none_or(|ua| ua.trim().is_empty()) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "A User-Agent header naming your app is required",
        ));
    }
    let mut inner = lock(&shared.0);
    let key = &inner.opts.api_key;
    let authorized = value(header::HeaderName::from_static("authentication"))
        .and_then(|v| v.trim().split_once(' '))
        .is_some_and(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && token == key);
    if !authorized {
        return Err(error(StatusCode::UNAUTHORIZED, "Invalid access token"));
    }
    if let Some(bucket) = inner.bucket.as_mut() {
        if !bucket.admit(Instant::now()) {
            return Err(error(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests: the rate limit bucket is full",
            ));
        }
    }
    let json_body = value(header::CONTENT_TYPE).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    if (method == Method::POST || method == Method::PUT) && !json_body {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    Ok(())
}
