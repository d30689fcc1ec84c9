//! Customer records as the API sends them: every documented field, addresses with
//! ids and a default, the create and update rules (per-field 422s), and the two
//! customers of the document's example.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::listing::{field_list, select};
use super::{error, invalid, lock, not_found, now_text, Inner, Refusal, Shared};
use crate::sandbox::valid_email;

/// Text keys a create or an update may set; anything else in a body is ignored.
const TEXT_FIELDS: [&str; 14] = [
    "name",
    "email",
    "phone",
    "identification",
    "note",
    "billing_address",
    "billing_number",
    "billing_floor",
    "billing_locality",
    "billing_zipcode",
    "billing_city",
    "billing_province",
    "billing_country",
    "billing_phone",
];

const ADDRESS_FIELDS: [&str; 9] = [
    "address", "city", "country", "floor", "locality", "number", "phone", "province", "zipcode",
];

impl Inner {
    pub(super) fn insert(&mut self, record: Value) -> u64 {
        let given = match record {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let id = given
            .get("id")
            .and_then(Value::as_u64)
            .unwrap_or(self.next_id);
        self.next_id = self.next_id.max(id.saturating_add(1));
        let now = now_text();
        let mut c = blank(id, &now);
        let has_default = given.contains_key("default_address");
        c.extend(given.into_iter().filter(|(k, _)| k != "id"));
        let addresses = c.get("addresses").cloned().unwrap_or(json!([]));
        self.set_addresses(&mut c, addresses, &now, !has_default);
        self.customers_mut().insert(id, Value::Object(c));
        id
    }

    /// Numbers new addresses, fills their fields and (when `pick`) sets
    /// `default_address`: the one marked `default`, else the first.
    fn set_addresses(&mut self, c: &mut Map<String, Value>, list: Value, now: &str, pick: bool) {
        let mut list: Vec<Value> = match list {
            Value::Array(items) => items.into_iter().filter(Value::is_object).collect(),
            _ => Vec::new(),
        };
        let chosen = list
            .iter()
            .position(|a| a.get("default") == Some(&json!(true)))
            .unwrap_or(0);
        for (i, a) in list.iter_mut().enumerate() {
            if let Some(m) = a.as_object_mut() {
                for key in ADDRESS_FIELDS {
                    m.entry(key).or_insert(Value::Null);
                }
            }
            match a.get("id").and_then(Value::as_u64) {
                Some(id) => self.next_address_id = self.next_address_id.max(id.saturating_add(1)),
                None => {
                    a["id"] = json!(self.next_address_id);
                    self.next_address_id = self.next_address_id.saturating_add(1);
                }
            }
            for key in ["created_at", "updated_at"] {
                if a.get(key).is_none_or(Value::is_null) {
                    a[key] = json!(now);
                }
            }
            a["default"] = json!(i == chosen);
        }
        if pick {
            let default = list.get(chosen).cloned().unwrap_or(Value::Null);
            c.insert("default_address".into(), default);
        }
        c.insert("addresses".into(), Value::Array(list));
    }
}

/// A customer with every documented field empty (`extra: {}`, nothing spent).
fn blank(id: u64, now: &str) -> Map<String, Value> {
    let mut c = Map::new();
    for key in TEXT_FIELDS {
        c.insert(key.into(), Value::Null);
    }
    let rest = json!({
        "id": id, "extra": {}, "total_spent": "0.00", "total_spent_currency": "USD",
        "last_order_id": null, "active": false, "created_at": now, "updated_at": now,
        "default_address": null, "addresses": []
    });
    if let Value::Object(rest) = rest {
        c.extend(rest);
    }
    c
}

pub(super) async fn retrieve(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let fields = q.get("fields").map(|f| field_list(f));
    let inner = lock(&shared.0);
    match id
        .parse::<u64>()
        .ok()
        .and_then(|id| inner.customers.get(&id))
    {
        Some(c) => Json(select(c, &fields)).into_response(),
        None => not_found().into_response(),
    }
}

/// The JSON object of a write's body, or 400.
fn body_object(body: &Bytes) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "The body must be a JSON object",
        )),
        Err(_) => Err(error(StatusCode::BAD_REQUEST, "The body is not valid JSON")),
    }
}

/// The keys a create or update sets, validated; `send_email_invite`, `password`,
/// read-only and unknown keys are dropped. `null` clears a field.
fn writable(body: Map<String, Value>, create: bool) -> Result<Map<String, Value>, Refusal> {
    let mut errors = Map::new();
    let mut out = Map::new();
    for (key, value) in body {
        let ok = match (key.as_str(), &value) {
            (k, Value::String(_) | Value::Null) if TEXT_FIELDS.contains(&k) => true,
            ("extra", Value::Object(_)) | ("addresses", Value::Array(_)) => true,
            ("extra" | "addresses", Value::Null) => true,
            (k, _) if TEXT_FIELDS.contains(&k) || k == "extra" || k == "addresses" => false,
            _ => continue,
        };
        if ok {
            out.insert(key, value);
        } else {
            errors.insert(key, json!(["is invalid"]));
        }
    }
    let name = out.get("name").map(|v| v.as_str().unwrap_or("").trim());
    if name == Some("") || (create && name.is_none() && !errors.contains_key("name")) {
        errors.insert("name".into(), json!(["can't be blank"]));
    }
    if out
        .get("email")
        .and_then(Value::as_str)
        .is_some_and(|e| !valid_email(e))
    {
        errors.insert("email".into(), json!(["is invalid"]));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(invalid(errors))
    }
}

/// Applies validated keys to a record: `extra: null` is `{}`, `addresses` replaces the list.
fn apply(inner: &mut Inner, c: &mut Map<String, Value>, set: Map<String, Value>, now: &str) {
    for (key, value) in set {
        match key.as_str() {
            "addresses" => inner.set_addresses(c, value, now, true),
            "extra" if value.is_null() => {
                c.insert(key, json!({}));
            }
            _ => {
                c.insert(key, value);
            }
        }
    }
    c.insert("updated_at".into(), json!(now));
}

pub(super) async fn create(State(shared): State<Shared>, body: Bytes) -> Response {
    let set = match body_object(&body).and_then(|b| writable(b, true)) {
        Ok(set) => set,
        Err(r) => return r.into_response(),
    };
    let mut inner = lock(&shared.0);
    let now = now_text();
    let id = inner.next_id;
    inner.next_id = id.saturating_add(1);
    let mut c = blank(id, &now);
    apply(&mut inner, &mut c, set, &now);
    let c = Value::Object(c);
    inner.customers_mut().insert(id, c.clone());
    (StatusCode::CREATED, Json(c)).into_response()
}

pub(super) async fn update(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let mut inner = lock(&shared.0);
    let Some(id) = id
        .parse::<u64>()
        .ok()
        .filter(|id| inner.customers.contains_key(id))
    else {
        return not_found().into_response();
    };
    let set = match body_object(&body).and_then(|b| writable(b, false)) {
        Ok(set) => set,
        Err(r) => return r.into_response(),
    };
    let mut c = match inner.customers_mut().remove(&id) {
        Some(Value::Object(m)) => m,
        _ => blank(id, &now_text()),
    };
    apply(&mut inner, &mut c, set, &now_text());
    let c = Value::Object(c);
    inner.customers_mut().insert(id, c.clone());
    Json(c).into_response()
}

// ---- The document's examples ----

/// The two customers of the document's `GET /customers` answer.
pub(super) fn document_examples() -> Vec<Value> {
    let springfield = json!({
        "address": "Evergreen Terrace", "city": "Springfield", "country": "US",
        "created_at": "2013-01-03T09:11:51-03:00", "default": true, "floor": null, "id": 1234,
        "locality": null, "number": "742", "phone": "555-123-0413", "province": "Oregon",
        "updated_at": "2013-03-10T11:13:01-03:00", "zipcode": "97475"
    });
    let sao_paulo = json!({
        "address": "Praça Roberto Gomes Pedrosa", "city": "São Paulo", "country": "BR",
        "created_at": "2013-04-07T09:11:51-03:00", "default": true, "floor": null, "id": 1234,
        "locality": "Morumbi", "number": "1", "phone": "11 3749-8000", "province": "São Paulo",
        "updated_at": "2013-04-08T11:13:01-03:00", "zipcode": "05653-070"
    });
    let billing = json!({
        "billing_address": "Evergreen Terrace", "billing_city": "Springfield",
        "billing_country": "US", "billing_floor": null, "billing_locality": null,
        "billing_number": "742", "billing_phone": "555-123-0413", "billing_province": "Oregon",
        "billing_zipcode": "97475", "extra": {"number_of_children": "2", "gender": "male"},
        "note": null, "total_spent_currency": "USD"
    });
    let mut john = json!({
        "created_at": "2013-01-03T09:11:51-03:00", "email": "john.doe@example.com", "id": 101,
        "identification": "28776255670", "last_order_id": 9001, "name": "John Doe",
        "phone": null, "total_spent": "89.00", "updated_at": "2013-03-11T09:14:11-03:00",
        "default_address": springfield.clone(), "addresses": [springfield]
    });
    let mut ze = json!({
        "created_at": "2013-04-07T09:11:51-03:00", "email": "john.doe@example.com", "id": 112,
        "identification": "28776255671", "last_order_id": null, "name": "Zé Ninguém",
        "phone": "392502584", "total_spent": "0.00", "updated_at": "2013-04-08T11:11:51-03:00",
        "default_address": sao_paulo.clone(), "addresses": [sao_paulo]
    });
    for c in [&mut john, &mut ze] {
        if let (Value::Object(c), Value::Object(b)) = (c, &billing) {
            c.extend(b.clone());
        }
    }
    vec![john, ze]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_examples_share_an_email() {
        let seeds = document_examples();
        assert_eq!(seeds.len(), 2);
        assert_eq!(seeds[0]["email"], seeds[1]["email"]);
        assert_eq!(seeds[1]["default_address"]["city"], "São Paulo");
        assert_eq!(seeds[0]["billing_number"], "742");
    }
}
