//! Ecwid emulator: `Authorization: Bearer KEY`; under `/api/json/v1/ecwid`: `GET
//! customers` (`offset`, `limit` at most 100, else 400; an exact `email` filter, which
//! the connector's lookup uses), `GET customer/{id}`, `POST add_customer` (the new id
//! as a string), `POST update_customer/{id}`, `POST delete_customer/{id}`. Every answer
//! sits in `{"data": {"id", "type": "ecwid", "attributes"}}`; errors are
//! `{errorMessage, errorCode}` with 400, 401, 404 or 409 (a create with an email that
//! exists, an update to another customer's email). Dates look like
//! `2021-11-03 19:53:12 +0000`. An update merges `billingPerson` key by key (`null`
//! removes a key) and keeps the top-level `name` equal to the billing name.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::table::{Record, Table};
use super::{json_response, lock, valid_email, RequestLog, Server};

/// The path before every endpoint.
pub const API: &str = "/api/json/v1/ecwid";

/// A stored customer, serialized exactly as the API sends it in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub email: String,
    pub registered: String,
    pub updated: String,
    pub total_order_count: u64,
    pub customer_group_id: u64,
    pub customer_group_name: String,
    pub billing_person: Map<String, Value>,
    pub shipping_addresses: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_marketing: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

impl Customer {
    /// A customer as a seed: id 0 (the emulator numbers it), dates of now.
    pub fn new(email: &str, first: Option<&str>, last: Option<&str>) -> Self {
        let mut person = Map::new();
        if let Some(f) = first {
            person.insert("firstName".into(), json!(f));
        }
        if let Some(l) = last {
            person.insert("lastName".into(), json!(l));
        }
        let mut c = Customer {
            id: 0,
            name: None,
            email: email.to_string(),
            registered: now(),
            updated: now(),
            total_order_count: 0,
            customer_group_id: 0,
            customer_group_name: "General".into(),
            billing_person: person,
            shipping_addresses: Vec::new(),
            accept_marketing: None,
            lang: None,
        };
        c.sync_name();
        c
    }

    fn person_text(&self, key: &str) -> Option<&str> {
        self.billing_person
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    }

    /// Keeps `name` and `billingPerson.name` in step with the first and last name.
    fn sync_name(&mut self) {
        let joined =
            crate::model::join_name(self.person_text("firstName"), self.person_text("lastName"));
        let name = self.person_text("name").map(str::to_string).or(joined);
        match &name {
            Some(n) => {
                self.billing_person.insert("name".into(), json!(n));
            }
            None => {
                self.billing_person.remove("name");
            }
        }
        self.name = name;
    }
}

impl Record for Customer {
    type Id = u64;
    fn id(&self) -> u64 {
        self.id
    }
    fn email_key(&self) -> Option<String> {
        Some(email_key(&self.email))
    }
}

/// How Ecwid compares emails: trimmed and lower-cased.
fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

#[derive(Debug, Clone)]
pub struct Options {
    pub api_key: String,
    /// `limit` when the request gives none.
    pub page_size: usize,
    /// Emails that the plain listing does not show yet (Ecwid's search index lags
    /// behind its writes); a search by `email` still finds them.
    pub unlisted: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            api_key: "ecwid-sandbox-key".into(),
            page_size: 100,
            unlisted: Vec::new(),
        }
    }
}

/// The largest `limit` Ecwid takes.
pub const MAX_LIMIT: usize = 100;

struct Inner {
    opts: Options,
    customers: Table<Customer>,
    next_id: u64,
}

impl Inner {
    /// Stores a customer, numbering it when its id is 0 or taken.
    fn store(&mut self, mut c: Customer) -> u64 {
        if c.id == 0 || self.customers.position(&c.id).is_some() {
            c.id = self.next_id;
        }
        self.next_id = self.next_id.max(c.id + 1);
        let id = c.id;
        self.customers.push(c);
        id
    }

    fn holder_of(&self, email: &str) -> Option<u64> {
        let at = *self.customers.with_email(&email_key(email)).first()?;
        Some(self.customers.rows()[at].id)
    }
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Inner>>);

/// A running Ecwid emulator.
pub struct Ecwid {
    pub server: Server,
    shared: Shared,
}

impl Ecwid {
    pub async fn start(opts: Options) -> std::io::Result<Ecwid> {
        let shared = Shared(Arc::new(Mutex::new(Inner {
            opts,
            customers: Table::default(),
            next_id: 172_900_000,
        })));
        let router = Router::new()
            .route(&format!("{API}/customers"), get(list))
            .route(&format!("{API}/customer/{{id}}"), get(retrieve))
            .route(&format!("{API}/add_customer"), post(create))
            .route(&format!("{API}/update_customer/{{id}}"), post(update))
            .route(&format!("{API}/delete_customer/{{id}}"), post(remove))
            .with_state(shared.clone());
        let server = Server::start(router, "").await?;
        Ok(Ecwid { server, shared })
    }

    /// The `base_url` to configure (the host: the paths carry `/api/json/v1/ecwid`).
    pub fn base_url(&self) -> String {
        self.server.url()
    }

    pub fn api_key(&self) -> String {
        lock(&self.shared.0).opts.api_key.clone()
    }

    pub fn log(&self) -> &RequestLog {
        &self.server.log
    }

    /// Stores a customer; an id of 0 (or one already used) gets the next free id.
    /// Sets the emails the plain listing does not show (see `Options::unlisted`).
    pub fn set_unlisted(&self, emails: Vec<String>) {
        lock(&self.shared.0).opts.unlisted = emails;
    }

    pub fn insert(&self, c: Customer) -> u64 {
        lock(&self.shared.0).store(c)
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

    /// Edits a customer as a merchant would (bumps `updated`).
    pub fn edit(&self, id: u64, f: impl FnOnce(&mut Customer)) {
        let mut inner = lock(&self.shared.0);
        if let Some(at) = inner.customers.position(&id) {
            inner.customers.modify(at, |c| {
                f(c);
                c.updated = now();
            });
        }
    }

    pub fn remove(&self, id: u64) {
        lock(&self.shared.0).customers.remove_where(|c| c.id == id);
    }

    /// The four customers of the document's listing (the single-customer example is
    /// the second of them), with their ids and dates.
    pub fn seed_document_examples(&self) {
        let demo = "[DEMO] Actualización para desbloquear";
        let at = |c: Customer, id: u64, registered: &str, updated: &str, orders: u64| Customer {
            id,
            registered: registered.into(),
            updated: updated.into(),
            total_order_count: orders,
            ..c
        };
        let mut first = Customer::new("customer@example.com", Some("[DEMO]"), Some("desbloquear"));
        first.billing_person.insert("name".into(), json!(demo));
        first.accept_marketing = Some(true);
        first.sync_name();
        let mut second = Customer::new("jkurtsme@gmail.com", Some("[DEMO]"), Some("desbloquear"));
        for key in ["name", "street", "city"] {
            second.billing_person.insert(key.into(), json!(demo));
        }
        second.accept_marketing = Some(true);
        second.sync_name();
        let mut third = Customer::new("example@example.com", Some("Eugene"), Some("K"));
        third.accept_marketing = Some(false);
        let mut fourth = Customer::new("jesusguevaram85@gmail.com", None, None);
        fourth
            .billing_person
            .insert("countryCode".into(), json!("MX"));
        fourth
            .billing_person
            .insert("countryName".into(), json!("Mexico"));
        let d = |s: &str| format!("2021-11-{s} +0000");
        for c in [
            at(first, 172867214, &d("03 19:53:12"), &d("03 19:53:12"), 2),
            at(second, 172890169, &d("04 05:28:26"), &d("05 23:00:01"), 0),
            at(third, 172781539, &d("03 22:22:45"), &d("03 22:22:45"), 1),
            at(fourth, 172889711, &d("04 05:28:20"), &d("04 05:28:20"), 0),
        ] {
            self.insert(c);
        }
    }
}

/// Ecwid's date format.
fn now() -> String {
    Utc::now().format("%Y-%m-%d %H:%M:%S +0000").to_string()
}

/// `{"data": {"id", "type": "ecwid", "attributes"}}`; `id` a fresh request id unless given.
fn envelope(id: Option<Value>, attributes: Value) -> Response {
    let id = id.unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string()));
    Json(json!({"data": {"id": id, "type": "ecwid", "attributes": attributes}})).into_response()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"errorMessage": message, "errorCode": code}))
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
        "Customer not found",
    )
}

/// The 401 answer to a request without the right `Authorization: Bearer KEY`.
fn refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let key = lock(&shared.0).opts.api_key.clone();
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    (auth != Some(&format!("Bearer {key}"))).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Invalid access token",
        )
    })
}

#[derive(Deserialize)]
struct ListQuery {
    offset: Option<String>,
    limit: Option<String>,
    email: Option<String>,
}

/// A number parameter, `default` when absent; `Err` names a bad one.
fn number(text: Option<&str>, default: usize, name: &str) -> Result<usize, String> {
    match text {
        None => Ok(default),
        Some(t) => t
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("{name} must be a non-negative number")),
    }
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
        number(q.offset.as_deref(), 0, "offset"),
        number(
            q.limit.as_deref(),
            inner.opts.page_size.min(MAX_LIMIT),
            "limit",
        ),
    );
    let (offset, limit) = match numbers {
        (Ok(o), Ok(l)) => (o, l),
        (Err(m), _) | (_, Err(m)) => return bad_request(&m),
    };
    if !(1..=MAX_LIMIT).contains(&limit) {
        return bad_request(&format!("limit must be between 1 and {MAX_LIMIT}"));
    }
    let rows = inner.customers.rows();
    let (total, items): (usize, Vec<&Customer>) = match q.email.as_deref() {
        Some(e) => {
            let hits = inner.customers.with_email(&email_key(e));
            let items = hits.iter().skip(offset).take(limit).map(|at| &rows[*at]);
            (hits.len(), items.collect())
        }
        // Emails the search index has not caught up with are left out of the plain listing.
        None if !inner.opts.unlisted.is_empty() => {
            let hidden = |c: &Customer| {
                inner
                    .opts
                    .unlisted
                    .iter()
                    .any(|u| email_key(u) == email_key(&c.email))
            };
            let shown: Vec<&Customer> = rows.iter().filter(|c| !hidden(c)).collect();
            (
                shown.len(),
                shown.into_iter().skip(offset).take(limit).collect(),
            )
        }
        None => (rows.len(), rows.iter().skip(offset).take(limit).collect()),
    };
    envelope(
        None,
        json!({
            "total": total,
            "count": items.len(),
            "offset": offset,
            "limit": limit,
            "items": items,
        }),
    )
}

async fn retrieve(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
        return r;
    }
    let inner = lock(&shared.0);
    let Some(c) = find(&inner, &id) else {
        return not_found();
    };
    // The single customer has its id in `data.id`, not in the attributes.
    let mut attributes = serde_json::to_value(c).unwrap_or_default();
    if let Some(map) = attributes.as_object_mut() {
        map.remove("id");
    }
    envelope(Some(json!(c.id)), attributes)
}

fn find<'a>(inner: &'a Inner, id: &str) -> Option<&'a Customer> {
    let id: u64 = id.trim().parse().ok()?;
    inner.customers.get(&id)
}

/// Applies a flat body: `email`, `billingPerson` (merged key by key, `null` removes),
/// `acceptMarketing`, `lang`, `name`. Answers what is wrong with it.
fn apply(c: &mut Customer, body: &Map<String, Value>) -> Result<(), String> {
    if let Some(v) = body.get("email") {
        match v.as_str() {
            Some(e) if valid_email(e) => c.email = e.to_string(),
            _ => return Err("email is invalid".into()),
        }
    }
    match body.get("billingPerson") {
        None | Some(Value::Null) => {}
        Some(Value::Object(person)) => {
            for (k, v) in person {
                if v.is_null() {
                    c.billing_person.remove(k);
                } else {
                    c.billing_person.insert(k.clone(), v.clone());
                }
            }
            // A name given explicitly wins; otherwise it follows a new first or last.
            let renamed = person.contains_key("firstName") || person.contains_key("lastName");
            if renamed && !person.contains_key("name") {
                c.billing_person.remove("name");
            }
        }
        Some(_) => return Err("billingPerson must be an object".into()),
    }
    match body.get("acceptMarketing") {
        None => {}
        Some(Value::Bool(b)) => c.accept_marketing = Some(*b),
        Some(Value::Null) => c.accept_marketing = None,
        Some(_) => return Err("acceptMarketing must be a boolean".into()),
    }
    match body.get("lang") {
        None => {}
        Some(Value::String(s)) if s.trim().is_empty() => c.lang = None,
        Some(Value::String(s)) => c.lang = Some(s.clone()),
        Some(Value::Null) => c.lang = None,
        Some(_) => return Err("lang must be a string".into()),
    }
    if let Some(Value::String(n)) = body.get("name") {
        c.billing_person.insert("name".into(), json!(n));
    }
    c.sync_name();
    Ok(())
}

type Body = Result<Json<Map<String, Value>>, axum::extract::rejection::JsonRejection>;

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_PARAMS", message)
}

fn email_taken(email: &str) -> Response {
    error(
        StatusCode::CONFLICT,
        "CUSTOMER_ALREADY_EXISTS",
        &format!("Customer with email {email} already exists"),
    )
}

async fn create(State(shared): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
        return r;
    }
    let Ok(Json(body)) = body else {
        return bad_request("invalid JSON body");
    };
    if body.get("email").and_then(Value::as_str).is_none() {
        return bad_request("email is required");
    }
    let mut c = Customer::new("", None, None);
    if let Err(m) = apply(&mut c, &body) {
        return bad_request(&m);
    }
    let mut inner = lock(&shared.0);
    if inner.holder_of(&c.email).is_some() {
        return email_taken(&c.email);
    }
    let id = inner.store(c);
    envelope(Some(json!(id.to_string())), json!({}))
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
        return bad_request("invalid JSON body");
    };
    let mut inner = lock(&shared.0);
    let Some(mut c) = find(&inner, &id).cloned() else {
        return not_found();
    };
    if let Err(m) = apply(&mut c, &body) {
        return bad_request(&m);
    }
    if inner
        .holder_of(&c.email)
        .is_some_and(|holder| holder != c.id)
    {
        return email_taken(&c.email);
    }
    c.updated = now();
    if let Some(at) = inner.customers.position(&c.id) {
        inner.customers.modify(at, |slot| *slot = c);
    }
    envelope(None, json!({"updateCount": 1}))
}

async fn remove(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refusal(&shared, &headers) {
        return r;
    }
    let mut inner = lock(&shared.0);
    let Some(id) = find(&inner, &id).map(|c| c.id) else {
        return not_found();
    };
    inner.customers.remove_where(|c| c.id == id);
    envelope(None, json!({"deleteCount": 1}))
}
