//! Sendwithus customer ⇄ Sendwithus's projection: the email (which is also the remote
//! id), first and last name (`data.first_name`, `data.last_name`), the locale
//! (`"not set"` means none), and every other `data` key as an attribute.
//!
//! Clearing: an upsert merges `data` key by key (the document: "will perform an
//! update if a customer already exists"), so a key left out keeps its old value. A
//! cleared name or attribute is therefore sent as `""`, which a merge stores as an
//! empty value whatever it does with `null` (it might keep the old value), and which
//! this projection reads back as absent. A cleared locale is sent as `""` too; the
//! sandbox stores it as `"not set"`.

use serde_json::{Map, Value};

use super::wire::{Customer, CustomerInput};
use crate::model::{Field, FieldSet, Projection, RemoteId};
use crate::providers::RemoteRecord;

pub const FIELDS: FieldSet = FieldSet {
    fields: &[
        Field::Email,
        Field::FirstName,
        Field::LastName,
        Field::Locale,
    ],
    attributes: true,
    defaults: &[],
    max_chars: &[],
};

/// The `data` keys that are names, not attributes.
const NAMES: [(Field, &str); 2] = [
    (Field::FirstName, "first_name"),
    (Field::LastName, "last_name"),
];

/// A `data` value as text; `null` is no value. Numbers and booleans keep their JSON
/// spelling, nested values their JSON text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

pub fn to_record(c: Customer) -> RemoteRecord {
    let mut p = Projection::new().with(Field::Email, Some(c.email.clone()));
    let locale = c
        .locale
        .filter(|l| !l.trim().eq_ignore_ascii_case("not set"));
    p.set(Field::Locale, locale);
    for (key, value) in &c.data {
        let field = NAMES
            .iter()
            .find(|(_, name)| name == key)
            .map(|(f, _)| f.clone())
            .unwrap_or_else(|| Field::Attr(key.clone()));
        p.set(field, text(value));
    }
    RemoteRecord {
        id: RemoteId(c.email),
        projection: p,
        updated_at: None,
        absent: Vec::new(),
        listed_key: None,
    }
}

/// The upsert of `p` under `email`. A create (`create`) sends every name and attribute
/// that has a value; an update sends the `fields` that changed, a cleared one as `""`.
pub fn to_input(email: &str, p: &Projection, fields: &[Field], create: bool) -> CustomerInput {
    let mut data = Map::new();
    for (field, key) in &NAMES {
        match p.get(field) {
            Some(v) if create || fields.contains(field) => {
                data.insert(key.to_string(), Value::String(v.to_string()));
            }
            None if !create && fields.contains(field) => {
                data.insert(key.to_string(), Value::String(String::new()));
            }
            _ => {}
        }
    }
    if create {
        for (k, v) in p.attributes() {
            data.insert(k.to_string(), Value::String(v.to_string()));
        }
    } else {
        for field in fields {
            if let Field::Attr(k) = field {
                let v = p.get(field).unwrap_or_default();
                data.insert(k.clone(), Value::String(v.to_string()));
            }
        }
    }
    let locale = match p.get(&Field::Locale) {
        Some(l) if create || fields.contains(&Field::Locale) => Some(l.to_string()),
        None if !create && fields.contains(&Field::Locale) => Some(String::new()),
        _ => None,
    };
    CustomerInput {
        email: email.to_string(),
        data: (!data.is_empty()).then_some(data),
        locale,
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::{Envelope, Logs};
    use super::*;
    use serde_json::json;

    /// `GET /customers/matt@sendwithus.com` from the document (its answer shows
    /// `customer@example.com`; it is read as it is).
    const GET: &str = r#"{
        "success": true,
        "status": "OK",
        "customer": {
            "object": "customer",
            "email": "customer@example.com",
            "data": {
                "first_name": "Matt",
                "city": "San Francisco"
            },
            "created": 5858858124,
            "locale": "not set",
            "groups": [
                "grp_1234",
                "grp_5678"
            ]
        }
    }"#;

    /// The document's sample `POST /customers` request.
    const UPSERT_REQUEST: &str = r#"{
        "email": "matt@sendwithus.com",
        "data": {
            "first_name": "Matt",
            "city": "San Francisco"
        },
        "locale": "de-DE"
    }"#;

    /// The document's sample `POST /customers` answer.
    const UPSERT_ANSWER: &str = r#"{
        "success": true,
        "status": "OK",
        "customer": {
            "object": "customer",
            "email": "customer@example.com",
            "data": {
                "first_name": "Matt",
                "city": "San Francisco"
            },
            "created": 5858858124,
            "locale": "en-US",
            "groups": [
                "grp_1234",
                "grp_5678"
            ]
        }
    }"#;

    /// `DELETE /customers/(:email)`'s answer; also the answer of adding a customer to a
    /// group and of removing one from it.
    const OK: &str = r#"{
        "success": true,
        "status": "OK"
    }"#;

    /// `GET /customers/matt@sendwithus.com/logs` from the document.
    const LOGS: &str = r#"{
        "success": true,
        "status": "OK",
        "logs": [{
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
        }]
    }"#;

    fn customer(json: &str) -> Customer {
        let env: Envelope = serde_json::from_str(json).unwrap();
        assert!(env.success);
        assert_eq!(env.status.as_deref(), Some("OK"));
        env.customer.unwrap()
    }

    #[test]
    fn reads_the_documented_customer() {
        let c = customer(GET);
        assert_eq!(c.groups, vec!["grp_1234", "grp_5678"]);
        assert_eq!(
            crate::providers::dates::from_epoch(c.created.unwrap())
                .unwrap()
                .timestamp(),
            5858858124
        );
        let r = to_record(c);
        assert_eq!(r.id.0, "customer@example.com");
        let p = &r.projection;
        assert_eq!(p.get(&Field::Email), Some("customer@example.com"));
        assert_eq!(p.get(&Field::FirstName), Some("Matt"));
        assert_eq!(p.get(&Field::LastName), None);
        assert_eq!(p.get(&Field::Locale), None, "\"not set\" is no locale");
        assert_eq!(p.get(&Field::Attr("city".into())), Some("San Francisco"));
        assert_eq!(p.attributes().count(), 1);
    }

    #[test]
    fn reads_the_documented_upsert() {
        let req: CustomerInput = serde_json::from_str(UPSERT_REQUEST).unwrap();
        assert_eq!(req.email, "matt@sendwithus.com");
        assert_eq!(req.locale.as_deref(), Some("de-DE"));
        let r = to_record(customer(UPSERT_ANSWER));
        assert_eq!(r.projection.get(&Field::Locale), Some("en-US"));
        assert_eq!(r.projection.get(&Field::FirstName), Some("Matt"));
    }

    #[test]
    fn writes_the_documented_upsert() {
        let p = Projection::new()
            .with(Field::Email, Some("matt@sendwithus.com"))
            .with(Field::FirstName, Some("Matt"))
            .with(Field::Attr("city".into()), Some("San Francisco"))
            .with(Field::Locale, Some("de-DE"));
        let body = serde_json::to_value(to_input("matt@sendwithus.com", &p, &[], true)).unwrap();
        let doc: Value = serde_json::from_str(UPSERT_REQUEST).unwrap();
        assert_eq!(body, doc);
    }

    #[test]
    fn reads_the_documented_ok_and_logs() {
        let env: Envelope = serde_json::from_str(OK).unwrap();
        assert!(env.success && env.customer.is_none());
        let logs: Logs = serde_json::from_str(LOGS).unwrap();
        assert_eq!(logs.logs.len(), 1);
        assert_eq!(logs.logs[0].id, "log_asdf1234qwerty");
        assert_eq!(
            logs.logs[0].recipient_address.as_deref(),
            Some("matt@sendwithus.com")
        );
        assert_eq!(logs.logs[0].created, Some(1234567890));
    }

    #[test]
    fn nulls_where_the_document_shows_a_map_or_a_list_read_as_empty() {
        let nulls = GET
            .replace(
                r#"{
                "first_name": "Matt",
                "city": "San Francisco"
            }"#,
                "null",
            )
            .replace(
                r#"[
                "grp_1234",
                "grp_5678"
            ]"#,
                "null",
            );
        assert!(nulls.contains(r#""data": null"#) && nulls.contains(r#""groups": null"#));
        let c = customer(&nulls);
        assert!(c.data.is_empty() && c.groups.is_empty());
        assert_eq!(to_record(c).projection.get(&Field::FirstName), None);
        let logs: Logs = serde_json::from_str(r#"{"success": true, "logs": null}"#).unwrap();
        assert!(logs.logs.is_empty());
    }

    #[test]
    fn update_clears_with_empty_strings() {
        let p = Projection::new()
            .with(Field::Email, Some("a@b.co"))
            .with(Field::LastName, Some("Lee"));
        let changed = [
            Field::FirstName,
            Field::LastName,
            Field::Attr("city".into()),
            Field::Locale,
        ];
        let body = serde_json::to_value(to_input("a@b.co", &p, &changed, false)).unwrap();
        assert_eq!(
            body,
            json!({
                "email": "a@b.co",
                "data": {"first_name": "", "last_name": "Lee", "city": ""},
                "locale": ""
            })
        );
        let c: Customer = serde_json::from_value(json!({
            "email": "a@b.co", "data": {"first_name": "", "city": "", "n": 3, "x": null}
        }))
        .unwrap();
        let r = to_record(c);
        assert_eq!(r.projection.get(&Field::FirstName), None);
        assert_eq!(r.projection.get(&Field::Attr("city".into())), None);
        assert_eq!(r.projection.get(&Field::Attr("n".into())), Some("3"));
        assert_eq!(r.projection.get(&Field::Attr("x".into())), None);
    }
}

/// An email log as `GET /customers/{email}/logs` sends it: its `id`, `created` (epoch
/// seconds), and a label of its `status` and `email_name` (DESIGN 14). `None`
/// without a string id.
pub fn to_event(l: Value) -> Option<crate::providers::Event> {
    let text = |k: &str| l.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let id = text("id").filter(|i| !i.trim().is_empty())?;
    let status = text("status").filter(|s| !s.is_empty());
    let name = text("email_name").filter(|s| !s.is_empty());
    let label = match (&status, &name) {
        (Some(s), Some(n)) => format!("{s}: {n}"),
        (Some(x), None) | (None, Some(x)) => x.clone(),
        (None, None) => String::new(),
    };
    Some(crate::providers::Event {
        id,
        at: l
            .get("created")
            .and_then(|v| v.as_i64())
            .and_then(crate::providers::dates::from_epoch),
        kind: status.unwrap_or_else(|| "email".into()),
        label,
        raw: l,
    })
}

#[cfg(test)]
mod log_tests {
    use super::*;

    /// The document's log.
    #[test]
    fn the_documents_log() {
        let l = serde_json::json!({
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
        });
        let e = to_event(l).unwrap();
        assert_eq!(e.id, "log_asdf1234qwerty");
        assert_eq!(e.kind, "opened");
        assert_eq!(e.label, "opened: Order Confirmation");
        assert_eq!(e.at.unwrap().timestamp(), 1234567890);
    }
}
