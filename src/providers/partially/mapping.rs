//! Partial.ly customer ⇄ Partial.ly's projection: email, names, phone, the language
//! (a lossy view of the locale) and the ship-to address.
//!
//! `timezone` and `shipto_name` are not mapped and never sent, so the server's defaults
//! and the merchant's values stay. A create sends only the fields that have a value, so
//! the server fills its defaults (`language` "en", `shipto_country` "US"); the snapshot
//! is taken from the answer, so those defaults never look like edits.

use super::wire::{Customer, CustomerInput};
use crate::model::{Field, FieldSet, Projection, RemoteId};
use crate::providers::RemoteRecord;

pub const FIELDS: FieldSet = FieldSet {
    fields: &[
        Field::Email,
        Field::FirstName,
        Field::LastName,
        Field::Phone,
        Field::Language,
        Field::Line1,
        Field::Line2,
        Field::City,
        Field::Region,
        Field::PostalCode,
        Field::Country,
    ],
    attributes: false,
    defaults: &[(Field::Language, "en"), (Field::Country, "US")],
    // "2 letter state/province/region code", "2 letter country code".
    max_chars: &[(Field::Region, 2), (Field::Country, 2)],
};

/// A customer as a record. An anonymized customer (`email: null` after `gdpr_remove`)
/// is still a record, with its id and no email: the engine counts it as deleted.
/// Partial.ly has no `updated_at` (`inserted_at` is the creation time), so none is given.
pub fn to_record(c: Customer) -> RemoteRecord {
    let mut projection = Projection::new().with(Field::Email, c.email);
    let mut absent = Vec::new();
    for (field, value) in [
        (Field::FirstName, c.first_name),
        (Field::LastName, c.last_name),
        (Field::Phone, c.phone),
        (Field::Language, c.language),
        (Field::Line1, c.shipto_address),
        (Field::Line2, c.shipto_address2),
        (Field::City, c.shipto_city),
        (Field::Region, c.shipto_state),
        (Field::PostalCode, c.shipto_postal_code),
        (Field::Country, c.shipto_country),
    ] {
        match value {
            Some(v) => projection.set(field, v),
            None => absent.push(field),
        }
    }
    RemoteRecord {
        id: RemoteId(c.id),
        projection,
        updated_at: None,
        absent,
        listed_key: None,
    }
}

/// The body writing `fields` of `p`. A create (`create`) sends every field that has a
/// value and leaves the others out, so server defaults apply; an update sends exactly
/// `fields`, a cleared one as `null`. A value that does not fit its field (`Oregon` as
/// a 2-letter `shipto_state`) is left out of a create; the plan never asks an update
/// to write one.
pub fn to_input(p: &Projection, fields: &[Field], create: bool) -> CustomerInput {
    let value = |f: Field| -> Option<Option<String>> {
        // A value longer than the field takes is never sent (a 2-letter code).
        let v = p
            .get(&f)
            .filter(|v| FIELDS.fits(&f, Some(v)))
            .map(str::to_string);
        if create {
            v.map(Some)
        } else {
            fields.contains(&f).then_some(v)
        }
    };
    CustomerInput {
        email: value(Field::Email),
        first_name: value(Field::FirstName),
        last_name: value(Field::LastName),
        phone: value(Field::Phone),
        language: value(Field::Language),
        shipto_address: value(Field::Line1),
        shipto_address2: value(Field::Line2),
        shipto_city: value(Field::City),
        shipto_state: value(Field::Region),
        shipto_postal_code: value(Field::PostalCode),
        shipto_country: value(Field::Country),
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::{CustomerPage, Message};
    use super::*;
    use serde_json::json;

    /// `GET /customer` from the document.
    const LIST: &str = r#"{
        "total_pages": 1,
        "total_entries": 2,
        "page_size": 10,
        "page_number": 1,
        "customers": [
            {
                "timezone": "America/New_York",
                "shipto_state": "FL",
                "shipto_postal_code": "33601",
                "shipto_name": "Sample Customer",
                "shipto_country": "US",
                "shipto_city": "Tampa",
                "shipto_address2": null,
                "shipto_address": "123 N. Tampa St.",
                "phone": "81325551212",
                "last_name": "Customer",
                "inserted_at": "2015-09-11T05:54:27.000000",
                "id": "6d30d3c8-d024-45cc-9c3f-356fc8aee23d",
                "first_name": "Sample",
                "email": "sample.customer@gmail.com"
            },
            {
                "timezone": "America/New_York",
                "shipto_state": null,
                "shipto_postal_code": null,
                "shipto_name": null,
                "shipto_country": null,
                "shipto_city": null,
                "shipto_address2": null,
                "shipto_address": null,
                "phone": "5042265544",
                "last_name": "Appleseed",
                "inserted_at": "2015-09-23T15:03:20.000000",
                "id": "9a426155-a927-4984-8738-0bd1ffc15248",
                "first_name": "John",
                "email": "jappleseed@yahoo.com"
            }
        ]
    }"#;

    /// `GET /customer/9a426155-...` from the document.
    const ONE: &str = r#"{
        "timezone": "America/New_York",
        "shipto_state": null,
        "shipto_postal_code": null,
        "shipto_name": null,
        "shipto_country": null,
        "shipto_city": null,
        "shipto_address2": null,
        "shipto_address": null,
        "phone": "5042265544",
        "last_name": "Appleseed",
        "inserted_at": "2015-09-23T15:03:20.000000",
        "id": "9a426155-a927-4984-8738-0bd1ffc15248",
        "first_name": "John",
        "email": "jappleseed@yahoo.com"
    }"#;

    /// The document's `POST /customer` answer.
    const CREATED: &str = r#"{
        "timezone": "America/New_York",
        "shipto_state": null,
        "shipto_postal_code": null,
        "shipto_name": null,
        "shipto_country": "US",
        "shipto_city": null,
        "shipto_address2": null,
        "shipto_address": null,
        "phone": null,
        "last_name": "Doe",
        "inserted_at": "2018-11-27T20:10:19.437168",
        "id": "53479e98-27a9-49e2-856c-bf47d0796ffc",
        "first_name": "John",
        "email": "testing@aol.com"
    }"#;

    /// The document's `PUT /customer/53479e98-...` answer.
    const UPDATED: &str = r#"{
        "timezone": "America/New_York",
        "shipto_state": null,
        "shipto_postal_code": null,
        "shipto_name": null,
        "shipto_country": "US",
        "shipto_city": null,
        "shipto_address2": null,
        "shipto_address": null,
        "phone": "+12125551212",
        "last_name": "Doe",
        "inserted_at": "2018-11-27T20:10:19.437168",
        "id": "53479e98-27a9-49e2-856c-bf47d0796ffc",
        "first_name": "John",
        "email": "testing@aol.com"
    }"#;

    /// The answer of `login_password` and of `login_token` (the same JSON twice in the
    /// document). custsync never calls the login endpoints; the record shape is the same.
    const LOGGED_IN: &str = r#"{
        "timezone": "America/New_York",
        "shipto_state": null,
        "shipto_postal_code": null,
        "shipto_name": null,
        "shipto_country": "US",
        "shipto_city": null,
        "shipto_address2": null,
        "shipto_address": null,
        "phone": null,
        "last_name": "Person",
        "inserted_at": "2018-11-28T16:57:42.923471",
        "id": "e3cbf1dc-0c11-483f-b604-d44fd93aac90",
        "first_name": "Testing",
        "email": "aaa@y.co"
    }"#;

    /// `gdpr_remove`'s answer, and `login_email`'s.
    const REMOVED: &str = r#"{ "message": "Customer account deleted" }"#;
    const TOKEN_SENT: &str = r#"{ "message": "Token sent" }"#;

    fn record(json: &str) -> RemoteRecord {
        to_record(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn reads_the_documented_list() {
        let page: CustomerPage = serde_json::from_str(LIST).unwrap();
        assert_eq!((page.page_number, page.total_pages), (1, 1));
        assert_eq!((page.total_entries, page.page_size), (Some(2), 10));
        let records: Vec<RemoteRecord> = page
            .customers
            .into_iter()
            .map(|c| to_record(serde_json::from_str(c.get()).unwrap()))
            .collect();
        let p = &records[0].projection;
        assert_eq!(records[0].id.0, "6d30d3c8-d024-45cc-9c3f-356fc8aee23d");
        assert_eq!(p.get(&Field::Email), Some("sample.customer@gmail.com"));
        assert_eq!(p.get(&Field::FirstName), Some("Sample"));
        assert_eq!(p.get(&Field::LastName), Some("Customer"));
        assert_eq!(p.get(&Field::Phone), Some("81325551212"));
        assert_eq!(p.get(&Field::Line1), Some("123 N. Tampa St."));
        assert_eq!(p.get(&Field::Line2), None);
        assert_eq!(p.get(&Field::City), Some("Tampa"));
        assert_eq!(p.get(&Field::Region), Some("FL"));
        assert_eq!(p.get(&Field::PostalCode), Some("33601"));
        assert_eq!(p.get(&Field::Country), Some("US"));
        assert_eq!(p.get(&Field::FullName), None, "shipto_name is not mapped");
        assert_eq!(records[0].updated_at, None);
        assert_eq!(records[1].projection.get(&Field::Country), None);
        assert_eq!(
            records[1].projection.get(&Field::LastName),
            Some("Appleseed")
        );
    }

    #[test]
    fn null_customers_and_errors_read_as_empty() {
        let start = LIST.find(r#""customers": ["#).unwrap();
        let end = LIST.rfind(']').unwrap();
        let nulls = format!("{}\"customers\": null{}", &LIST[..start], &LIST[end + 1..]);
        let page: CustomerPage = serde_json::from_str(&nulls).unwrap();
        assert!(page.customers.is_empty());
        let m: Message = serde_json::from_str(r#"{"message": "x", "errors": null}"#).unwrap();
        assert!(m.errors.is_empty());
    }

    #[test]
    fn reads_the_documented_customer_create_and_update() {
        let one = record(ONE);
        assert_eq!(one.id.0, "9a426155-a927-4984-8738-0bd1ffc15248");
        assert_eq!(one.projection.get(&Field::Phone), Some("5042265544"));
        let created = record(CREATED);
        assert_eq!(
            created.projection.get(&Field::Email),
            Some("testing@aol.com")
        );
        assert_eq!(created.projection.get(&Field::Country), Some("US"));
        assert_eq!(created.projection.get(&Field::Phone), None);
        let updated = record(UPDATED);
        assert_eq!(updated.id, created.id);
        assert_eq!(
            updated.projection.diff(&created.projection),
            vec![Field::Phone]
        );
        assert_eq!(updated.projection.get(&Field::Phone), Some("+12125551212"));
        let c: Customer = serde_json::from_str(CREATED).unwrap();
        assert_eq!(
            crate::providers::dates::parse_date(c.inserted_at.as_deref().unwrap())
                .unwrap()
                .to_rfc3339(),
            "2018-11-27T20:10:19.437168+00:00"
        );
    }

    #[test]
    fn reads_the_documented_login_answers() {
        let r = record(LOGGED_IN);
        assert_eq!(r.projection.get(&Field::Email), Some("aaa@y.co"));
        assert_eq!(r.projection.get(&Field::FirstName), Some("Testing"));
        assert_eq!(r.projection.get(&Field::LastName), Some("Person"));
    }

    #[test]
    fn reads_the_documented_messages() {
        let m: Message = serde_json::from_str(REMOVED).unwrap();
        assert_eq!(m.message, "Customer account deleted");
        let m: Message = serde_json::from_str(TOKEN_SENT).unwrap();
        assert_eq!(m.message, "Token sent");
        assert!(m.errors.is_empty());
    }

    #[test]
    fn an_anonymized_customer_is_a_record_without_email() {
        let r = record(r#"{"id": "x1", "email": null, "first_name": null, "language": "en"}"#);
        assert_eq!(r.id.0, "x1");
        assert_eq!(r.projection.email(), None);
        assert_eq!(r.projection.get(&Field::Language), Some("en"));
    }

    #[test]
    fn a_key_absent_from_the_answer_is_unknown_not_empty() {
        let r = record(ONE);
        assert_eq!(
            r.absent,
            vec![Field::Language],
            "no answer carries language"
        );
        assert_eq!(r.projection.get(&Field::Language), None);
        let known = Projection::new().with(Field::Language, Some("de"));
        assert_eq!(r.completed(Some(&known)).get(&Field::Language), Some("de"));
        // An explicit null is a value: empty.
        let r = record(r#"{"id": "x", "email": "a@b.co", "language": null}"#);
        assert!(!r.absent.contains(&Field::Language));
        assert_eq!(r.completed(Some(&known)).get(&Field::Language), None);
    }

    #[test]
    fn a_region_or_country_longer_than_two_letters_is_never_written() {
        let p = Projection::new()
            .with(Field::Email, Some("a@b.co"))
            .with(Field::Region, Some("Oregon"))
            .with(Field::Country, Some("Brasil"))
            .with(Field::City, Some("Salem"));
        let body = serde_json::to_value(to_input(&p, FIELDS.fields, true)).unwrap();
        assert_eq!(body, json!({"email": "a@b.co", "shipto_city": "Salem"}));
        // The provider's own value stays: not stale, so no update every cycle.
        let held = record(
            r#"{"id": "x", "email": "a@b.co", "shipto_state": "FL", "shipto_city": "Salem"}"#,
        );
        let desired = crate::model::project(&p, &FIELDS);
        assert!(FIELDS.stale(&desired, &held.projection).is_empty());
        let fits = desired.clone().with(Field::Region, Some("OR"));
        assert_eq!(FIELDS.stale(&fits, &held.projection), vec![Field::Region]);
    }

    #[test]
    fn create_leaves_defaults_to_the_server() {
        let p = Projection::new()
            .with(Field::Email, Some("testing@aol.com"))
            .with(Field::FirstName, Some("John"))
            .with(Field::LastName, Some("Doe"));
        let body = serde_json::to_value(to_input(&p, FIELDS.fields, true)).unwrap();
        assert_eq!(
            body,
            json!({"email": "testing@aol.com", "first_name": "John", "last_name": "Doe"})
        );
    }

    #[test]
    fn update_sends_what_changed_and_clears_with_null() {
        let p = Projection::new()
            .with(Field::Email, Some("testing@aol.com"))
            .with(Field::Phone, Some("+12125551212"))
            .with(Field::Language, Some("pt"));
        let changed = [Field::Phone, Field::Line1, Field::Language];
        let body = serde_json::to_value(to_input(&p, &changed, false)).unwrap();
        assert_eq!(
            body,
            json!({"phone": "+12125551212", "shipto_address": null, "language": "pt"})
        );
    }
}
