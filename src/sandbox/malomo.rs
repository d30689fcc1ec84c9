//! Malomo emulator: `Authorization: Bearer KEY` and the v2 `Accept` header, a cursor
//! listing in a stable order (`next=<id of the last customer>`, optionally a `Link`
//! header too), create (200), retrieve, update, delete (204), and errors shaped
//! `{code, message, request_id, status}`. Each customer's events are served by
//! `GET /customers/{id}/events`, paged with the same cursors.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::table::{Record, Table};
use super::{json_response, lock, valid_email, RequestLog, Server};

pub const ACCEPT: &str = "application/vnd.malomo+json; version=2";

/// A stored customer, serialized exactly as the API sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone_number: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Customer {
    /// A customer as a seed: a fresh UUID and timestamps of now.
    pub fn new(email: &str, first: Option<&str>, last: Option<&str>, phone: Option<&str>) -> Self {
        let now = now();
        Customer {
            id: uuid::Uuid::new_v4().to_string(),
            email: Some(email.to_string()),
            first_name: first.map(str::to_string),
            last_name: last.map(str::to_string),
            phone_number: phone.map(str::to_string),
            created_at: now.clone(),
            updated_at: now,
        }
    }
}

impl Record for Customer {
    type Id = String;
    fn id(&self) -> String {
        self.id.clone()
    }
    fn email_key(&self) -> Option<String> {
        self.email.as_deref().map(email_key)
    }
}

fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

#[derive(Debug, Clone)]
pub struct Options {
    pub api_key: String,
    pub page_size: usize,
    /// Also send `Link: <..?next=ID>; rel="next"` (the connector must follow either way).
    pub link_header: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            api_key: "malomo-sandbox-key".into(),
            page_size: 50,
            link_header: false,
        }
    }
}

struct Inner {
    opts: Options,
    customers: Table<Customer>,
    /// Each customer's events, oldest first, by customer id.
    events: std::collections::HashMap<String, Vec<Value>>,
    base_url: String,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Inner>>);

/// A running Malomo emulator.
pub struct Malomo {
    pub server: Server,
    shared: Shared,
}

impl Malomo {
    pub async fn start(opts: Options) -> std::io::Result<Malomo> {
        let shared = Shared(Arc::new(Mutex::new(Inner {
            opts,
            customers: Table::default(),
            events: Default::default(),
            base_url: String::new(),
        })));
        let router = Router::new()
            .route("/customers", get(list).post(create))
            .route("/customers/{id}", get(retrieve).put(update).delete(remove))
            .route("/customers/{id}/events", get(events))
            .with_state(shared.clone());
        let server = Server::start(router, "").await?;
        lock(&shared.0).base_url = server.url();
        Ok(Malomo { server, shared })
    }

    /// The `base_url` to configure.
    pub fn base_url(&self) -> String {
        self.server.url()
    }

    pub fn api_key(&self) -> String {
        lock(&self.shared.0).opts.api_key.clone()
    }

    pub fn log(&self) -> &RequestLog {
        &self.server.log
    }

    pub fn insert(&self, c: Customer) -> String {
        let id = c.id.clone();
        lock(&self.shared.0).customers.push(c);
        id
    }

    /// Events a customer has, oldest first.
    pub fn events(&self, customer_id: &str) -> Vec<Value> {
        lock(&self.shared.0)
            .events
            .get(customer_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The document's event for a customer, with its own `id` and time (epoch seconds).
    pub fn document_event(id: &str, label: &str, timestamp: i64) -> Value {
        let at = chrono::DateTime::from_timestamp(timestamp, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        json!({
            "created_at": at,
            "id": id,
            "label": label,
            "link_back_url": "https://goodest-boi.myshopify.com/admin/orders/5555555555555",
            "properties": {"shopify_order": {"id": "5555555555555"}},
            "timestamp": timestamp,
            "type": "ShopifyOrderFulfilled",
            "updated_at": at,
        })
    }

    /// Adds an event (the document's shape: id, label, type, timestamp, ...) to a customer.
    pub fn add_event(&self, customer_id: &str, event: Value) {
        lock(&self.shared.0)
            .events
            .entry(customer_id.to_string())
            .or_default()
            .push(event);
    }

    pub fn customers(&self) -> Vec<Customer> {
        lock(&self.shared.0).customers.rows().to_vec()
    }

    pub fn by_email(&self, email: &str) -> Vec<Customer> {
        let inner = lock(&self.shared.0);
        let rows = inner.customers.rows();
        inner
            .customers
            .with_email(&email_key(email))
            .iter()
            .map(|at| rows[*at].clone())
            .collect()
    }

    /// Edits a customer as a user of Malomo would (bumps `updated_at`).
    pub fn edit(&self, id: &str, f: impl FnOnce(&mut Customer)) {
        let mut inner = lock(&self.shared.0);
        if let Some(at) = inner.customers.position(id) {
            inner.customers.modify(at, |c| {
                f(c);
                c.updated_at = now();
            });
        }
    }

    pub fn remove(&self, id: &str) {
        lock(&self.shared.0).customers.remove_where(|c| c.id == id);
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        json!({"code": status.as_u16(), "message": message, "request_id": uuid::Uuid::new_v4().to_string(), "status": status.canonical_reason()}),
    )
}

// A refusal is a whole answer; its size does not matter on this test-only path.
#[allow(clippy::result_large_err)]
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let key = lock(&shared.0).opts.api_key.clone();
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {key}")) {
        return Err(error(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.replace(' ', "") != ACCEPT.replace(' ', "") {
        return Err(error(
            StatusCode::NOT_ACCEPTABLE,
            "Accept must be application/vnd.malomo+json; version=2",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct ListQuery {
    next: Option<String>,
    prev: Option<String>,
}

async fn list(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return r;
    }
    let inner = lock(&shared.0);
    let size = inner.opts.page_size.max(1);
    let start = match (&q.next, &q.prev) {
        (Some(cursor), _) => match inner.customers.position(cursor.as_str()) {
            Some(i) => i + 1,
            None => return error(StatusCode::BAD_REQUEST, "invalid cursor"),
        },
        (None, Some(cursor)) => match inner.customers.position(cursor.as_str()) {
            Some(i) => i.saturating_sub(size),
            None => return error(StatusCode::BAD_REQUEST, "invalid cursor"),
        },
        (None, None) => 0,
    };
    let rows = inner.customers.rows();
    let page = &rows[start.min(rows.len())..start.saturating_add(size).min(rows.len())];
    let mut resp = Json(page).into_response();
    let more = start + page.len() < rows.len();
    if inner.opts.link_header && more {
        if let Some(last) = page.last() {
            let link = format!(
                "<{}/customers?next={}>; rel=\"next\"",
                inner.base_url, last.id
            );
            if let Ok(v) = HeaderValue::from_str(&link) {
                resp.headers_mut().insert("link", v);
            }
        }
    }
    resp
}

#[derive(Deserialize)]
struct Input {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone_number: Option<String>,
}

fn blank_to_none(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

async fn create(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Result<Json<Input>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return r;
    }
    let Ok(Json(input)) = body else {
        return error(StatusCode::BAD_REQUEST, "invalid JSON body");
    };
    let Some(email) = input.email.filter(|e| valid_email(e)) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "email is invalid");
    };
    let mut c = Customer::new(&email, None, None, None);
    c.first_name = blank_to_none(input.first_name);
    c.last_name = blank_to_none(input.last_name);
    c.phone_number = blank_to_none(input.phone_number);
    lock(&shared.0).customers.push(c.clone());
    Json(c).into_response()
}

async fn retrieve(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return r;
    }
    match lock(&shared.0).customers.get(id.as_str()) {
        Some(c) => Json(c).into_response(),
        None => error(StatusCode::NOT_FOUND, "Customer not found"),
    }
}

async fn update(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<Input>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return r;
    }
    let Ok(Json(input)) = body else {
        return error(StatusCode::BAD_REQUEST, "invalid JSON body");
    };
    if let Some(e) = &input.email {
        if !valid_email(e) {
            return error(StatusCode::UNPROCESSABLE_ENTITY, "email is invalid");
        }
    }
    let mut inner = lock(&shared.0);
    let Some(at) = inner.customers.position(id.as_str()) else {
        return error(StatusCode::NOT_FOUND, "Customer not found");
    };
    let c = inner.customers.modify(at, |c| {
        if let Some(e) = input.email {
            c.email = Some(e);
        }
        if input.first_name.is_some() {
            c.first_name = blank_to_none(input.first_name);
        }
        if input.last_name.is_some() {
            c.last_name = blank_to_none(input.last_name);
        }
        if input.phone_number.is_some() {
            c.phone_number = blank_to_none(input.phone_number);
        }
        c.updated_at = now();
        c.clone()
    });
    Json(c).into_response()
}

async fn remove(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return r;
    }
    if lock(&shared.0).customers.remove_where(|c| c.id == id) == 0 {
        return error(StatusCode::NOT_FOUND, "Customer not found");
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn events(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return r;
    }
    let inner = lock(&shared.0);
    if inner.customers.position(id.as_str()).is_none() {
        return error(StatusCode::NOT_FOUND, "Customer not found");
    }
    let all = inner.events.get(&id).cloned().unwrap_or_default();
    let size = inner.opts.page_size.max(1);
    let at = |cursor: &str| {
        all.iter()
            .position(|e| e.get("id").and_then(|v| v.as_str()) == Some(cursor))
    };
    // The same cursors as the customer list: next=<id of the last event seen> reads
    // the events after it, prev=<id> the page before it.
    let start = match (&q.next, &q.prev) {
        (Some(cursor), _) => match at(cursor) {
            Some(i) => i + 1,
            None => return error(StatusCode::BAD_REQUEST, "invalid cursor"),
        },
        (None, Some(cursor)) => match at(cursor) {
            Some(i) => i.saturating_sub(size),
            None => return error(StatusCode::BAD_REQUEST, "invalid cursor"),
        },
        (None, None) => 0,
    };
    let page: Vec<Value> = all.iter().skip(start).take(size).cloned().collect();
    let more = start + page.len() < all.len();
    let last = page
        .last()
        .and_then(|e| e.get("id"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let mut resp = Json(Value::Array(page)).into_response();
    if let (true, true, Some(last)) = (inner.opts.link_header, more, last) {
        let link = format!(
            "<{}/customers/{id}/events?next={last}>; rel=\"next\"",
            inner.base_url
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert("link", v);
        }
    }
    resp
}
