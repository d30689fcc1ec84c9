//! Sendwithus emulator: HTTP Basic with the key as user and an empty password, or an
//! `X-SWU-API-KEY: KEY` header; `POST /customers` upserts by email (`data` merged key
//! by key: a key sent replaces the stored one, `""` and `null` included, a key left out
//! stays); `GET` and `DELETE /customers/{email}` (404 for an unknown email), the email
//! percent-decoded from the path; `GET /customers/{email}/logs`; `POST` and `DELETE
//! /customers/{email}/groups/{group_id}`. Answers sit in `{success, status,
//! customer}`; `created` is epoch seconds; a customer without locale has `"not set"`.
//! There is no listing, as in the real API.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::table::{Record, Table};
use super::{json_response, lock, valid_email, RequestLog, Server};

/// What Sendwithus shows for a customer without a locale.
pub const NO_LOCALE: &str = "not set";

/// A stored customer, serialized exactly as the API sends it. Its email logs are kept
/// beside it and served by `/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub object: String,
    pub email: String,
    pub data: Map<String, Value>,
    pub created: i64,
    pub locale: String,
    pub groups: Vec<String>,
    #[serde(skip)]
    pub logs: Vec<Value>,
}

impl Customer {
    /// A customer as a seed: created now, no locale, no groups.
    pub fn new(email: &str, first: Option<&str>, last: Option<&str>) -> Self {
        let mut data = Map::new();
        if let Some(f) = first {
            data.insert("first_name".into(), json!(f));
        }
        if let Some(l) = last {
            data.insert("last_name".into(), json!(l));
        }
        Customer {
            object: "customer".into(),
            email: email.to_string(),
            data,
            created: chrono::Utc::now().timestamp(),
            locale: NO_LOCALE.into(),
            groups: Vec::new(),
            logs: Vec::new(),
        }
    }
}

/// The email is the key, compared as `same` does.
impl Record for Customer {
    type Id = String;
    fn id(&self) -> String {
        key(&self.email)
    }
    fn email_key(&self) -> Option<String> {
        Some(key(&self.email))
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub api_key: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            api_key: "sendwithus-sandbox-key".into(),
        }
    }
}

struct Inner {
    opts: Options,
    customers: Table<Customer>,
}

impl Inner {
    fn find(&self, email: &str) -> Option<&Customer> {
        self.customers.get(&key(email))
    }
}

fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// An email as `same` compares it: two emails are the same when their keys are.
fn key(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Inner>>);

/// A running Sendwithus emulator.
pub struct Sendwithus {
    pub server: Server,
    shared: Shared,
}

impl Sendwithus {
    pub async fn start(opts: Options) -> std::io::Result<Sendwithus> {
        let shared = Shared(Arc::new(Mutex::new(Inner {
            opts,
            customers: Table::default(),
        })));
        let router = Router::new()
            .route("/customers", post(upsert))
            .route("/customers/{email}", get(retrieve).delete(remove))
            .route("/customers/{email}/logs", get(logs))
            .route(
                "/customers/{email}/groups/{group}",
                post(join_group).delete(leave_group),
            )
            .with_state(shared.clone());
        let server = Server::start(router, "").await?;
        Ok(Sendwithus { server, shared })
    }

    /// The `base_url` to configure (the paths start at `/customers`, after `/api/v1`).
    pub fn base_url(&self) -> String {
        self.server.url()
    }

    pub fn api_key(&self) -> String {
        lock(&self.shared.0).opts.api_key.clone()
    }

    pub fn log(&self) -> &RequestLog {
        &self.server.log
    }

    /// Stores a customer, replacing one with the same email. Answers the email (the id).
    pub fn insert(&self, c: Customer) -> String {
        let email = c.email.clone();
        let mut inner = lock(&self.shared.0);
        inner.customers.remove_where(|o| same(&o.email, &email));
        inner.customers.push(c);
        email
    }

    pub fn customers(&self) -> Vec<Customer> {
        lock(&self.shared.0).customers.rows().to_vec()
    }

    /// The customer with this email: the email is the key, so there is one at most.
    pub fn by_email(&self, email: &str) -> Option<Customer> {
        lock(&self.shared.0).find(email).cloned()
    }

    pub fn edit(&self, email: &str, f: impl FnOnce(&mut Customer)) {
        let mut inner = lock(&self.shared.0);
        if let Some(at) = inner.customers.position(&key(email)) {
            inner.customers.modify(at, f);
        }
    }

    /// Adds an email log (the document's shape) to a customer, served by `/logs`.
    pub fn add_log(&self, email: &str, log: Value) {
        self.edit(email, |c| c.logs.push(log));
    }

    /// The groups a customer is in (empty for an unknown email).
    pub fn groups(&self, email: &str) -> Vec<String> {
        self.by_email(email).map(|c| c.groups).unwrap_or_default()
    }

    /// An email log as the document shows it, with its own id, time and status.
    pub fn document_log(id: &str, created: i64, status: &str, email_name: &str) -> Value {
        json!({
            "object": "log",
            "id": id,
            "created": created,
            "recipient_name": "Matt",
            "recipient_address": "matt@sendwithus.com",
            "status": status,
            "message": format!("SendGrid: Message has been {status}"),
            "email_id": "tem_as8dfjha8dap",
            "email_name": email_name,
            "email_version": "Version A"
        })
    }

    pub fn remove(&self, email: &str) {
        lock(&self.shared.0)
            .customers
            .remove_where(|c| same(&c.email, email));
    }

    /// The customer of the document's GET example and the one of its upsert request,
    /// who also has the document's email log.
    pub fn seed_document_examples(&self) {
        let mut shown = Customer::new("customer@example.com", Some("Matt"), None);
        shown.data.insert("city".into(), json!("San Francisco"));
        shown.created = 5858858124;
        shown.groups = vec!["grp_1234".into(), "grp_5678".into()];
        let mut matt = Customer::new("matt@sendwithus.com", Some("Matt"), None);
        matt.data.insert("city".into(), json!("San Francisco"));
        matt.locale = "de-DE".into();
        matt.logs.push(json!({
            "object": "log",
            "id": "log_asdf1234qwerty",
            "created": 1234567890,
            "recipient_name": "Matt",
            "recipient_address": "matt@sendwithus.com",
            "status": "opened",
            "message": "SendGrid: Message has been opened",
            "email_id": "tem_as8dfjha8dap",
            "email_name": "Order Confirmation",
            "email_version": "Version A"
        }));
        self.insert(shown);
        self.insert(matt);
    }
}

fn ok(extra: Option<(&str, Value)>) -> Response {
    let mut body = json!({"success": true, "status": "OK"});
    if let (Some((key, value)), Some(map)) = (extra, body.as_object_mut()) {
        map.insert(key.to_string(), value);
    }
    Json(body).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        json!({"success": false, "status": "error", "message": message}),
    )
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Customer not found")
}

/// The 401 answer to a request with neither Basic `base64(KEY:)` nor
/// `X-SWU-API-KEY: KEY`.
fn refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let key = lock(&shared.0).opts.api_key.clone();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let basic = header("authorization")
        .and_then(|v| v.strip_prefix("Basic "))
        .is_some_and(|v| v.trim() == base64(format!("{key}:").as_bytes()));
    let by_header = header("x-swu-api-key") == Some(key.as_str());
    (!basic && !by_header).then(|| error(StatusCode::UNAUTHORIZED, "Invalid API key"))
}

/// Standard base64 with padding (the `Authorization: Basic` encoding).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

type Body = Result<Json<Map<String, Value>>, axum::extract::rejection::JsonRejection>;

async fn upsert(State(shared): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
        return r;
    }
    let Ok(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "invalid JSON body");
    };
    let Some(email) = body
        .get("email")
        .and_then(Value::as_str)
        .filter(|e| valid_email(e))
    else {
        return error(StatusCode::BAD_REQUEST, "email is missing or invalid");
    };
    let data = match body.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(d)) => d.clone(),
        Some(_) => return error(StatusCode::BAD_REQUEST, "data must be an object"),
    };
    let locale = match body.get("locale") {
        None => None,
        Some(Value::Null) => Some(NO_LOCALE.to_string()),
        Some(Value::String(l)) if l.trim().is_empty() => Some(NO_LOCALE.to_string()),
        Some(Value::String(l)) => Some(l.clone()),
        Some(_) => return error(StatusCode::BAD_REQUEST, "locale must be a string"),
    };
    let mut inner = lock(&shared.0);
    let at = match inner.customers.position(&key(email)) {
        Some(i) => i,
        None => inner.customers.push(Customer::new(email, None, None)),
    };
    let c = inner.customers.modify(at, |c| {
        // The merge: every key sent replaces the stored one; the others stay.
        c.data.extend(data);
        if let Some(l) = locale {
            c.locale = l;
        }
        json!(c)
    });
    ok(Some(("customer", c)))
}

async fn retrieve(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(email): Path<String>,
) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
        return r;
    }
    match lock(&shared.0).find(&email) {
        Some(c) => ok(Some(("customer", json!(c)))),
        None => not_found(),
    }
}

async fn remove(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(email): Path<String>,
) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
        return r;
    }
    if lock(&shared.0)
        .customers
        .remove_where(|c| same(&c.email, &email))
        == 0
    {
        return not_found();
    }
    ok(None)
}

async fn logs(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(email): Path<String>,
) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
        return r;
    }
    match lock(&shared.0).find(&email) {
        Some(c) => ok(Some(("logs", Value::Array(c.logs.clone())))),
        None => not_found(),
    }
}

async fn join_group(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((email, group)): Path<(String, String)>,
) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
        return r;
    }
    let mut inner = lock(&shared.0);
    let Some(at) = inner.customers.position(&key(&email)) else {
        return not_found();
    };
    inner.customers.modify(at, |c| {
        if !c.groups.contains(&group) {
            c.groups.push(group);
        }
    });
    ok(None)
}

async fn leave_group(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((email, group)): Path<(String, String)>,
) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
        return r;
    }
    let mut inner = lock(&shared.0);
    let Some(at) = inner.customers.position(&key(&email)) else {
        return not_found();
    };
    inner
        .customers
        .modify(at, |c| c.groups.retain(|g| g != &group));
    ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"key:"), "a2V5Og==");
    }
}
