//! Partial.ly emulator: `Authorization: Bearer KEY`, `GET /customer` in 1-based pages
//! (`page`, `per_page`, `q`: an exact email search when it contains `@`, else a partial
//! match on the names), `GET`/`PUT /customer/{id}`, `POST /customer` (201 by default,
//! 200 on request) with the server's defaults (`language` "en", `timezone`
//! "America/New_York", `shipto_country` "US"), and `PUT /customer/gdpr_remove/{id}`:
//! refused (422 `{message}`) while the customer has an open payment plan, anonymizing
//! (every personal field `null`, the id kept) when it has payment history, deleting
//! otherwise. Errors are `{message, errors}`; dates have no zone (UTC). Like every
//! answer in the document, a customer is sent without its `language`, which a create
//! or an update may still set.
//!
//! Where the document is silent the emulator assumes: a second customer with an email
//! that another has is refused (422, `email has already been taken`); `null` and `""`
//! both clear a field (as Phoenix/Ecto casts them); `per_page` above the maximum is cut
//! down to it. The login endpoints serve a customer portal and are not emulated.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::table::{Record, Table};
use super::{json_response, lock, valid_email, RequestLog, Server};

/// A stored customer, serialized exactly as the API sends it. The two flags are the
/// emulator's stand-in for payment plans and are never sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    /// Kept and settable, but never sent: no answer in the document carries it.
    #[serde(skip_serializing, default)]
    pub language: Option<String>,
    pub timezone: Option<String>,
    pub shipto_name: Option<String>,
    pub shipto_address: Option<String>,
    pub shipto_address2: Option<String>,
    pub shipto_city: Option<String>,
    pub shipto_state: Option<String>,
    pub shipto_postal_code: Option<String>,
    pub shipto_country: Option<String>,
    pub inserted_at: String,
    /// An open payment plan: `gdpr_remove` is refused.
    #[serde(skip)]
    pub open_plan: bool,
    /// Payment (plan) history: `gdpr_remove` anonymizes instead of deleting.
    #[serde(skip)]
    pub payment_history: bool,
}

impl Customer {
    /// A customer as a seed: a fresh UUID, the server's defaults, inserted now.
    pub fn new(email: &str, first: Option<&str>, last: Option<&str>) -> Self {
        Customer {
            id: uuid::Uuid::new_v4().to_string(),
            email: Some(email.to_string()),
            first_name: first.map(str::to_string),
            last_name: last.map(str::to_string),
            phone: None,
            language: Some("en".into()),
            timezone: Some("America/New_York".into()),
            shipto_name: None,
            shipto_address: None,
            shipto_address2: None,
            shipto_city: None,
            shipto_state: None,
            shipto_postal_code: None,
            shipto_country: Some("US".into()),
            inserted_at: now(),
            open_plan: false,
            payment_history: false,
        }
    }

    /// The text fields a create or an update may set, by their wire names.
    fn field_mut(&mut self, key: &str) -> Option<&mut Option<String>> {
        Some(match key {
            "email" => &mut self.email,
            "first_name" => &mut self.first_name,
            "last_name" => &mut self.last_name,
            "phone" => &mut self.phone,
            "language" => &mut self.language,
            "timezone" => &mut self.timezone,
            "shipto_name" => &mut self.shipto_name,
            "shipto_address" => &mut self.shipto_address,
            "shipto_address2" => &mut self.shipto_address2,
            "shipto_city" => &mut self.shipto_city,
            "shipto_state" => &mut self.shipto_state,
            "shipto_postal_code" => &mut self.shipto_postal_code,
            "shipto_country" => &mut self.shipto_country,
            _ => return None,
        })
    }

    /// What `gdpr_remove` leaves of a customer with payment history.
    fn anonymize(&mut self) {
        for key in [
            "email",
            "first_name",
            "last_name",
            "phone",
            "shipto_name",
            "shipto_address",
            "shipto_address2",
            "shipto_city",
            "shipto_state",
            "shipto_postal_code",
        ] {
            if let Some(f) = self.field_mut(key) {
                *f = None;
            }
        }
    }
}

impl Record for Customer {
    type Id = String;
    fn id(&self) -> String {
        self.id.clone()
    }
    /// As `same_email` compares: trimmed and lower-cased.
    fn email_key(&self) -> Option<String> {
        self.email.as_deref().map(|e| e.trim().to_lowercase())
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub api_key: String,
    /// `per_page` when the request gives none (the document's example: 10).
    pub page_size: usize,
    /// The largest `per_page` honoured; more is cut down to it.
    pub max_page_size: usize,
    /// The status of a successful create: 201 by default, 200 also happens.
    pub create_status: StatusCode,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            api_key: "partially-sandbox-key".into(),
            page_size: 10,
            max_page_size: 100,
            create_status: StatusCode::CREATED,
        }
    }
}

struct Inner {
    opts: Options,
    customers: Table<Customer>,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Inner>>);

/// A running Partial.ly emulator.
pub struct Partially {
    pub server: Server,
    shared: Shared,
}

impl Partially {
    pub async fn start(opts: Options) -> std::io::Result<Partially> {
        let shared = Shared(Arc::new(Mutex::new(Inner {
            opts,
            customers: Table::default(),
        })));
        let router = Router::new()
            .route("/customer", get(list).post(create))
            .route("/customer/{id}", get(retrieve).put(update))
            .route("/customer/gdpr_remove/{id}", put(gdpr_remove))
            .with_state(shared.clone());
        let server = Server::start(router, "").await?;
        Ok(Partially { server, shared })
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

    pub fn customers(&self) -> Vec<Customer> {
        lock(&self.shared.0).customers.rows().to_vec()
    }

    pub fn by_email(&self, email: &str) -> Vec<Customer> {
        let inner = lock(&self.shared.0);
        let rows = inner.customers.rows();
        inner
            .customers
            .with_email(&email.trim().to_lowercase())
            .iter()
            .map(|at| rows[*at].clone())
            .collect()
    }

    /// Edits a customer as a user of Partial.ly would (there is no `updated_at`).
    pub fn edit(&self, id: &str, f: impl FnOnce(&mut Customer)) {
        let mut inner = lock(&self.shared.0);
        if let Some(at) = inner.customers.position(id) {
            inner.customers.modify(at, f);
        }
    }

    pub fn remove(&self, id: &str) {
        lock(&self.shared.0).customers.remove_where(|c| c.id == id);
    }

    /// The customers of the document's examples: the two of the listing, the one
    /// created (as the update example left it) and the one of the login examples.
    pub fn seed_document_examples(&self) {
        let doc = |id: &str, email: &str, first: &str, last: &str, at: &str| Customer {
            id: id.into(),
            inserted_at: at.into(),
            shipto_country: None,
            ..Customer::new(email, Some(first), Some(last))
        };
        let sample = Customer {
            phone: Some("81325551212".into()),
            shipto_name: Some("Sample Customer".into()),
            shipto_address: Some("123 N. Tampa St.".into()),
            shipto_city: Some("Tampa".into()),
            shipto_state: Some("FL".into()),
            shipto_postal_code: Some("33601".into()),
            shipto_country: Some("US".into()),
            ..doc(
                "6d30d3c8-d024-45cc-9c3f-356fc8aee23d",
                "sample.customer@gmail.com",
                "Sample",
                "Customer",
                "2015-09-11T05:54:27.000000",
            )
        };
        let appleseed = Customer {
            phone: Some("5042265544".into()),
            ..doc(
                "9a426155-a927-4984-8738-0bd1ffc15248",
                "jappleseed@yahoo.com",
                "John",
                "Appleseed",
                "2015-09-23T15:03:20.000000",
            )
        };
        let doe = Customer {
            phone: Some("+12125551212".into()),
            shipto_country: Some("US".into()),
            ..doc(
                "53479e98-27a9-49e2-856c-bf47d0796ffc",
                "testing@aol.com",
                "John",
                "Doe",
                "2018-11-27T20:10:19.437168",
            )
        };
        let person = Customer {
            shipto_country: Some("US".into()),
            ..doc(
                "e3cbf1dc-0c11-483f-b604-d44fd93aac90",
                "aaa@y.co",
                "Testing",
                "Person",
                "2018-11-28T16:57:42.923471",
            )
        };
        for c in [sample, appleseed, doe, person] {
            self.insert(c);
        }
    }
}

/// Partial.ly's date format: microseconds, no zone.
fn now() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn same_email(stored: Option<&str>, lowered: &str) -> bool {
    stored.is_some_and(|e| e.trim().to_lowercase() == lowered)
}

/// The customers `q` matches (all without it): how many, and those of one page. An
/// email search reads the email index; a name search reads every customer.
fn page_of<'a>(
    inner: &'a Inner,
    q: Option<&str>,
    page: usize,
    size: usize,
) -> (usize, Vec<&'a Customer>) {
    let rows = inner.customers.rows();
    let start = (page - 1).saturating_mul(size);
    match q {
        None => (rows.len(), rows.iter().skip(start).take(size).collect()),
        Some(q) if q.contains('@') => {
            let hits = inner.customers.with_email(&q.trim().to_lowercase());
            let page = hits.iter().skip(start).take(size).map(|at| &rows[*at]);
            (hits.len(), page.collect())
        }
        Some(q) => {
            let hits: Vec<&Customer> = rows.iter().filter(|c| matches(c, q)).collect();
            let total = hits.len();
            (total, hits.into_iter().skip(start).take(size).collect())
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "message": message }))
}

fn invalid(errors: &[String]) -> Response {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": "Validation failed", "errors": errors}),
    )
}

/// The 401 answer to a request without the right `Authorization: Bearer KEY`.
fn refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let key = lock(&shared.0).opts.api_key.clone();
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    (auth != Some(&format!("Bearer {key}")))
        .then(|| error(StatusCode::UNAUTHORIZED, "Invalid API key"))
}

#[derive(Deserialize)]
struct ListQuery {
    page: Option<String>,
    per_page: Option<String>,
    q: Option<String>,
}

/// A positive number parameter, `default` when absent; `Err` names a bad one.
fn number(text: Option<&str>, default: usize, name: &str) -> Result<usize, String> {
    match text {
        None => Ok(default),
        Some(t) => match t.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("invalid {name}")),
        },
    }
}

fn matches(c: &Customer, q: &str) -> bool {
    let q = q.trim().to_lowercase();
    if q.contains('@') {
        return same_email(c.email.as_deref(), &q);
    }
    let first = c.first_name.as_deref().unwrap_or_default();
    let last = c.last_name.as_deref().unwrap_or_default();
    let full = format!("{first} {last}").to_lowercase();
    full.contains(&q)
}

async fn list(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
        return r;
    }
    let inner = lock(&shared.0);
    let numbers = (
        number(q.page.as_deref(), 1, "page"),
        number(q.per_page.as_deref(), inner.opts.page_size, "per_page"),
    );
    let (page, size) = match numbers {
        (Ok(page), Ok(size)) => (page, size.min(inner.opts.max_page_size.max(1))),
        (Err(m), _) | (_, Err(m)) => return error(StatusCode::BAD_REQUEST, &m),
    };
    let (total, customers) = page_of(&inner, q.q.as_deref(), page, size);
    // Like Scrivener (Phoenix): an empty result still has one page.
    let total_pages = total.div_ceil(size).max(1);
    Json(json!({
        "total_pages": total_pages,
        "total_entries": total,
        "page_size": size,
        "page_number": page,
        "customers": customers,
    }))
    .into_response()
}

/// Applies the keys of a create or update body; `null` and `""` clear a field.
fn apply(c: &mut Customer, body: &Map<String, Value>) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for (key, value) in body {
        let Some(field) = c.field_mut(key) else {
            continue;
        };
        match value {
            Value::Null => *field = None,
            Value::String(s) if s.trim().is_empty() => *field = None,
            Value::String(s) => *field = Some(s.clone()),
            _ => errors.push(format!("{key} must be a string")),
        }
    }
    match c.email.as_deref() {
        None => errors.push("email can't be blank".into()),
        Some(e) if !valid_email(e) => errors.push("email is invalid".into()),
        _ => {}
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn taken(inner: &Inner, c: &Customer) -> bool {
    let email = c.email.as_deref().unwrap_or_default().trim().to_lowercase();
    let rows = inner.customers.rows();
    inner
        .customers
        .with_email(&email)
        .iter()
        .any(|at| rows[*at].id != c.id)
}

type Body = Result<Json<Map<String, Value>>, axum::extract::rejection::JsonRejection>;

async fn create(State(shared): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
        return r;
    }
    let Ok(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "invalid JSON body");
    };
    let mut c = Customer::new("", None, None);
    c.email = None;
    if let Err(errors) = apply(&mut c, &body) {
        return invalid(&errors);
    }
    let mut inner = lock(&shared.0);
    if taken(&inner, &c) {
        return invalid(&["email has already been taken".into()]);
    }
    inner.customers.push(c.clone());
    (inner.opts.create_status, Json(c)).into_response()
}

async fn retrieve(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
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
    body: Body,
) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
        return r;
    }
    let Ok(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "invalid JSON body");
    };
    let mut inner = lock(&shared.0);
    let Some(i) = inner.customers.position(id.as_str()) else {
        return error(StatusCode::NOT_FOUND, "Customer not found");
    };
    let mut c = inner.customers.rows()[i].clone();
    if let Err(errors) = apply(&mut c, &body) {
        return invalid(&errors);
    }
    if taken(&inner, &c) {
        return invalid(&["email has already been taken".into()]);
    }
    inner.customers.modify(i, |slot| *slot = c.clone());
    Json(c).into_response()
}

async fn gdpr_remove(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
        return r;
    }
    let mut inner = lock(&shared.0);
    let Some(i) = inner.customers.position(id.as_str()) else {
        return error(StatusCode::NOT_FOUND, "Customer not found");
    };
    let c = &inner.customers.rows()[i];
    if c.open_plan {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Customers with open payment plans cannot be deleted",
        );
    }
    if c.payment_history {
        inner.customers.modify(i, Customer::anonymize);
        return Json(json!({"message": "Customer information anonymized"})).into_response();
    }
    inner.customers.remove_at(i);
    Json(json!({"message": "Customer account deleted"})).into_response()
}
