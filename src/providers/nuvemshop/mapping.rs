//! Nuvemshop customer ⇄ Nuvemshop's projection.
//!
//! Lossy on purpose, and compared in this projection so it never flips: one `name`
//! (`FullName`), and the street with its house number (`billing_address` +
//! `billing_number`) as one `address.line1`, split back on a trailing token that starts
//! with a digit. `extra` is the attributes map.

use serde_json::{json, Map, Value};

use super::wire::Customer;
use crate::model::{Field, FieldSet, Projection, RemoteId};
use crate::providers::{dates::parse_date, RemoteRecord};

pub const FIELDS: FieldSet = FieldSet {
    fields: &[
        Field::Email,
        Field::FullName,
        Field::Phone,
        Field::Note,
        Field::Line1,
        Field::Line2,
        Field::City,
        Field::Region,
        Field::PostalCode,
        Field::Country,
    ],
    attributes: true,
    defaults: &[],
    max_chars: &[],
};

pub fn to_record(c: Customer) -> RemoteRecord {
    let line1 = match (c.billing_address.as_deref(), c.billing_number.as_deref()) {
        (Some(street), Some(number)) if !number.trim().is_empty() => {
            Some(format!("{} {}", street.trim(), number.trim()))
        }
        (street, _) => street.map(str::to_string),
    };
    let mut p = Projection::new()
        .with(Field::Email, c.email)
        .with(Field::FullName, c.name)
        .with(Field::Phone, c.phone.clone().flatten())
        .with(Field::Note, c.note)
        .with(Field::Line1, line1)
        .with(Field::Line2, c.billing_floor)
        .with(Field::City, c.billing_city)
        .with(Field::Region, c.billing_province)
        .with(Field::PostalCode, c.billing_zipcode)
        .with(Field::Country, c.billing_country);
    for (k, v) in c.extra.unwrap_or_default() {
        let text = match v {
            Value::String(s) => s,
            Value::Null => continue,
            other => other.to_string(),
        };
        p.set(Field::Attr(k), Some(text));
    }
    RemoteRecord {
        id: RemoteId(c.id.to_string()),
        projection: p,
        updated_at: c.updated_at.as_deref().and_then(parse_date),
        absent: c
            .phone
            .is_none()
            .then_some(Field::Phone)
            .into_iter()
            .collect(),
        listed_key: None,
    }
}

/// Splits `Evergreen Terrace 742` into street and number; a line whose last word does
/// not start with a digit is all street. `join(split(x)) == x` for every line.
pub fn split_line1(line: &str) -> (String, Option<String>) {
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.rsplit_once(' ') {
        Some((street, number)) if number.starts_with(|c: char| c.is_ascii_digit()) => {
            (street.to_string(), Some(number.to_string()))
        }
        _ => (line, None),
    }
}

/// The JSON body writing `fields` of `p` (every field on a create). Fields being
/// cleared are sent as `null`; attributes are sent as the whole `extra` object.
pub fn to_body(p: &Projection, fields: &[Field], create: bool) -> Value {
    let mut body = Map::new();
    let wants = |f: &Field| create || fields.contains(f);
    let text = |f: &Field| p.get(f).map(|v| json!(v)).unwrap_or(Value::Null);
    for (field, key) in [
        (Field::Email, "email"),
        (Field::FullName, "name"),
        (Field::Phone, "phone"),
        (Field::Note, "note"),
        (Field::Line2, "billing_floor"),
        (Field::City, "billing_city"),
        (Field::Region, "billing_province"),
        (Field::PostalCode, "billing_zipcode"),
        (Field::Country, "billing_country"),
    ] {
        if wants(&field) && (!create || p.get(&field).is_some()) {
            body.insert(key.to_string(), text(&field));
        }
    }
    if wants(&Field::Line1) && (!create || p.get(&Field::Line1).is_some()) {
        let (street, number) = match p.get(&Field::Line1) {
            Some(line) => {
                let (s, n) = split_line1(line);
                (json!(s), n.map(|n| json!(n)).unwrap_or(Value::Null))
            }
            None => (Value::Null, Value::Null),
        };
        body.insert("billing_address".into(), street);
        body.insert("billing_number".into(), number);
    }
    let attrs_changed = create || fields.iter().any(|f| matches!(f, Field::Attr(_)));
    if attrs_changed {
        let extra: Map<String, Value> = p
            .attributes()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        if !extra.is_empty() || !create {
            body.insert("extra".into(), Value::Object(extra));
        }
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /customers/101` from the document.
    const CUSTOMER_101: &str = r#"{
      "created_at": "2013-01-03T09:11:51-03:00",
      "email": "john.doe@example.com",
      "id": 101,
      "identification": "28776255670",
      "last_order_id": 9001,
      "name": "John Doe",
      "note": null,
      "phone": null,
      "total_spent": "89.00",
      "total_spent_currency": "USD",
      "updated_at": "2013-03-11T09:14:11-03:00",
      "billing_address": "Evergreen Terrace",
      "billing_city": "Springfield",
      "billing_country": "US",
      "billing_floor": null,
      "billing_locality": null,
      "billing_number": "742",
      "billing_phone": "555-123-0413",
      "billing_province": "Oregon",
      "billing_zipcode": "97475",
      "extra": { "number_of_children": "2", "gender": "male" },
      "default_address": {
        "address": "Evergreen Terrace", "city": "Springfield", "country": "US",
        "created_at": "2013-01-03T09:11:51-03:00", "default": true, "floor": null, "id": 1234,
        "locality": null, "number": "742", "phone": "555-123-0413", "province": "Oregon",
        "updated_at": "2013-03-10T11:13:01-03:00", "zipcode": "97475"
      },
      "addresses": []
    }"#;

    /// The document's POST /customers 201 answer (it has no `phone` key at all).
    const CREATED: &str = r#"{
      "created_at": "2013-06-01T09:11:51-03:00",
      "email": "john.doe+modified@example.com",
      "id": 101,
      "identification": "28776255670",
      "last_order_id": 9001,
      "name": "John Doe",
      "note": null,
      "total_spent": "89.00",
      "total_spent_currency": "USD",
      "updated_at": "2013-06-01T09:11:51-03:00",
      "billing_address": null, "billing_city": null, "billing_country": null, "billing_floor": null,
      "billing_locality": null, "billing_number": null, "billing_phone": null, "billing_province": null,
      "billing_zipcode": null,
      "extra": { "number_of_children": "2", "gender": "male" }
    }"#;

    #[test]
    fn reads_the_documented_customer() {
        let r = to_record(serde_json::from_str(CUSTOMER_101).unwrap());
        assert_eq!(r.id.0, "101");
        let p = &r.projection;
        assert_eq!(p.get(&Field::FullName), Some("John Doe"));
        assert_eq!(p.get(&Field::Email), Some("john.doe@example.com"));
        assert_eq!(p.get(&Field::Phone), None);
        assert_eq!(p.get(&Field::Line1), Some("Evergreen Terrace 742"));
        assert_eq!(p.get(&Field::City), Some("Springfield"));
        assert_eq!(p.get(&Field::Region), Some("Oregon"));
        assert_eq!(p.get(&Field::PostalCode), Some("97475"));
        assert_eq!(p.get(&Field::Country), Some("US"));
        assert_eq!(p.get(&Field::Attr("gender".into())), Some("male"));
        assert_eq!(
            r.updated_at.unwrap().to_rfc3339(),
            "2013-03-11T12:14:11+00:00"
        );
    }

    #[test]
    fn reads_the_documented_create_answer() {
        let r = to_record(serde_json::from_str(CREATED).unwrap());
        assert_eq!(
            r.projection.get(&Field::Email),
            Some("john.doe+modified@example.com")
        );
        assert_eq!(r.projection.get(&Field::Line1), None);
        assert_eq!(r.absent, vec![Field::Phone], "the answer has no phone key");
        let listed = to_record(serde_json::from_str(CUSTOMER_101).unwrap());
        assert!(listed.absent.is_empty(), "phone: null is a value");
    }

    #[test]
    fn nulls_where_the_document_shows_a_map_or_a_list_read_as_empty() {
        let nulls = CUSTOMER_101
            .replace(r#"{ "number_of_children": "2", "gender": "male" }"#, "null")
            .replace(r#""addresses": []"#, r#""addresses": null"#);
        assert!(nulls.contains(r#""extra": null"#));
        let page = format!("[{nulls}]");
        let provider = crate::model::ProviderName("store".into());
        let items = crate::providers::wire::decode_array(&provider, page.as_bytes()).unwrap();
        let listed = crate::providers::wire::decode_items(&items, "id", "email", to_record, None);
        let crate::providers::Listed::Record(r) = &listed[0] else {
            panic!("{listed:?}")
        };
        assert_eq!(r.projection.attributes().count(), 0);
        assert_eq!(r.projection.get(&Field::FullName), Some("John Doe"));
        assert!(crate::providers::wire::decode_array(&provider, b"null")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn street_and_number_round_trip() {
        for line in [
            "Evergreen Terrace 742",
            "Main St",
            "123 Main St",
            "Praça Roberto Gomes Pedrosa 1",
            "Rua A 12B",
        ] {
            let (street, number) = split_line1(line);
            let c = Customer {
                id: 1,
                billing_address: Some(street),
                billing_number: number,
                ..serde_json::from_str(r#"{"id":1}"#).unwrap()
            };
            assert_eq!(to_record(c).projection.get(&Field::Line1), Some(line));
        }
    }

    #[test]
    fn create_body_has_a_name_and_no_nulls() {
        let p = Projection::new()
            .with(Field::Email, Some("a@b.co"))
            .with(Field::FullName, Some("a"));
        assert_eq!(
            to_body(&p, &[], true),
            json!({"email": "a@b.co", "name": "a"})
        );
        let update = to_body(&p, &[Field::Phone, Field::Attr("x".into())], false);
        assert_eq!(update, json!({"phone": null, "extra": {}}));
    }
}
