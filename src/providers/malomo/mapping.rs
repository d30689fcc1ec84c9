//! Malomo customer ⇄ Malomo's projection: email, first and last name, phone.

use super::wire::{Customer, CustomerInput};
use crate::model::{Field, FieldSet, Projection, RemoteId};
use crate::providers::{dates::parse_date, RemoteRecord};

pub const FIELDS: FieldSet = FieldSet {
    fields: &[
        Field::Email,
        Field::FirstName,
        Field::LastName,
        Field::Phone,
    ],
    attributes: false,
    defaults: &[],
    max_chars: &[],
};

pub fn to_record(c: Customer) -> RemoteRecord {
    let projection = Projection::new()
        .with(Field::Email, c.email)
        .with(Field::FirstName, c.first_name)
        .with(Field::LastName, c.last_name)
        .with(Field::Phone, c.phone_number);
    RemoteRecord {
        id: RemoteId(c.id),
        projection,
        updated_at: c.updated_at.as_deref().and_then(parse_date),
        absent: Vec::new(),
        listed_key: None,
    }
}

/// The body for the `fields` of `p`. A create (`create`) sends the fields that have a
/// value and leaves the others out; an update sends a field being cleared as an empty
/// string, since an absent key would leave it as it was.
pub fn to_input(p: &Projection, fields: &[Field], create: bool) -> CustomerInput {
    let value = |f: &Field| match p.get(f) {
        Some(v) if fields.contains(f) => Some(v.to_string()),
        None if fields.contains(f) && !create => Some(String::new()),
        _ => None,
    };
    CustomerInput {
        email: value(&Field::Email),
        first_name: value(&Field::FirstName),
        last_name: value(&Field::LastName),
        phone_number: value(&Field::Phone),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document's create/retrieve/update example.
    const CUSTOMER: &str = r#"{
      "created_at": "2019-01-30T13:30:00Z",
      "email": "johnny@rosevideo.com",
      "first_name": "Johnny",
      "id": "a0a877c6-4164-4e8a-8179-48f8d4752b4e",
      "last_name": "Rose",
      "phone_number": "555-555-5555",
      "updated_at": "2019-01-30T13:30:00Z"
    }"#;

    /// The document's list example, with the missing comma after `id` restored.
    const LIST: &str = r#"[
      {
        "created_at": "2019-01-30T13:30:00Z",
        "email": "johnny@rosevideo.com",
        "first_name": "Johnny",
        "id": "a0a877c6-4164-4e8a-8179-48f8d4752b4e",
        "last_name": "Rose",
        "phone_number": "555-555-5555",
        "updated_at": "2019-01-30T13:30:00Z"
      }
    ]"#;

    #[test]
    fn reads_the_documented_customer() {
        let c: Customer = serde_json::from_str(CUSTOMER).unwrap();
        let r = to_record(c);
        assert_eq!(r.id.0, "a0a877c6-4164-4e8a-8179-48f8d4752b4e");
        assert_eq!(
            r.projection.get(&Field::Email),
            Some("johnny@rosevideo.com")
        );
        assert_eq!(r.projection.get(&Field::FirstName), Some("Johnny"));
        assert_eq!(r.projection.get(&Field::LastName), Some("Rose"));
        assert_eq!(r.projection.get(&Field::Phone), Some("555-555-5555"));
        assert_eq!(
            r.updated_at.unwrap().to_rfc3339(),
            "2019-01-30T13:30:00+00:00"
        );
    }

    #[test]
    fn reads_the_documented_list() {
        let list: Vec<Customer> = serde_json::from_str(LIST).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].email.as_deref(), Some("johnny@rosevideo.com"));
    }

    #[test]
    fn writes_only_what_changed() {
        let p = Projection::new()
            .with(Field::Email, Some("a@b.co"))
            .with(Field::LastName, Some("Rose"));
        let body =
            serde_json::to_value(to_input(&p, &[Field::LastName, Field::Phone], false)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"last_name": "Rose", "phone_number": ""})
        );
    }

    #[test]
    fn a_create_leaves_out_what_it_has_no_value_for() {
        let p = Projection::new()
            .with(Field::Email, Some("a@b.co"))
            .with(Field::LastName, Some("Rose"));
        let body = serde_json::to_value(to_input(&p, FIELDS.fields, true)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"email": "a@b.co", "last_name": "Rose"})
        );
    }

    #[test]
    fn a_listing_with_nulls_reads_as_empty() {
        let page =
            crate::providers::wire::decode_array(&crate::model::ProviderName("m".into()), b"null")
                .unwrap();
        assert!(page.is_empty());
        let nulls = LIST
            .replace("\"Johnny\"", "null")
            .replace("\"555-555-5555\"", "null");
        let items = crate::providers::wire::decode_array(
            &crate::model::ProviderName("m".into()),
            nulls.as_bytes(),
        )
        .unwrap();
        let listed = crate::providers::wire::decode_items(&items, "id", "email", to_record, None);
        let crate::providers::Listed::Record(r) = &listed[0] else {
            panic!("{listed:?}")
        };
        assert_eq!(r.projection.get(&Field::FirstName), None);
        assert_eq!(r.projection.get(&Field::Phone), None);
    }
    #[test]
    fn a_record_listed_as_a_known_text_is_not_decoded_and_any_other_text_is() {
        use crate::providers::{Known, Listed};
        let name = crate::model::ProviderName("m".into());
        let items = crate::providers::wire::decode_array(&name, LIST.as_bytes()).unwrap();
        let fresh = Known::new(&name, &FIELDS, Default::default());
        let first =
            crate::providers::wire::decode_items(&items, "id", "email", to_record, Some(&fresh));
        let Listed::Record(r) = &first[0] else {
            panic!("{first:?}")
        };
        let key = r.listed_key.expect("a listed record has a key");
        assert_eq!(key, fresh.key(items[0].get()));

        // Known by that key: counted as present by its link's place, nothing decoded.
        let known = Known::new(&name, &FIELDS, [key].into_iter().collect());
        let again =
            crate::providers::wire::decode_items(&items, "id", "email", to_record, Some(&known));
        assert_eq!(again[0], Listed::Unchanged(0));
        assert_eq!(known.links().key_at(0), Some(key));

        // One byte more (a space) is another text, decoded again; another provider,
        // or a record of another one, never shares the key.
        let spaced = LIST.replacen("\"id\"", " \"id\"", 1);
        let items2 = crate::providers::wire::decode_array(&name, spaced.as_bytes()).unwrap();
        let changed =
            crate::providers::wire::decode_items(&items2, "id", "email", to_record, Some(&known));
        assert!(matches!(&changed[0], Listed::Record(c) if c.listed_key != Some(key)));
        let other = Known::new(
            &crate::model::ProviderName("n".into()),
            &FIELDS,
            Default::default(),
        );
        assert_ne!(other.key(items[0].get()), key);
        // Without `known` (a lookup), no key at all.
        let plain = crate::providers::wire::decode_items(&items, "id", "email", to_record, None);
        assert!(matches!(&plain[0], Listed::Record(c) if c.listed_key.is_none()));
    }
}

/// A customer event as the events list sends it: `id`, `type`, `label`, and its time
/// (`created_at`, else the epoch `timestamp`). `None` without a string id.
pub fn to_event(e: serde_json::Value) -> Option<crate::providers::Event> {
    use crate::providers::dates::{from_epoch, parse_date};
    let text = |k: &str| e.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let id = text("id").filter(|i| !i.trim().is_empty())?;
    let at = text("created_at")
        .as_deref()
        .and_then(parse_date)
        .or_else(|| {
            e.get("timestamp")
                .and_then(|v| v.as_i64())
                .and_then(from_epoch)
        });
    Some(crate::providers::Event {
        id,
        at,
        kind: text("type").unwrap_or_else(|| "event".into()),
        label: text("label").unwrap_or_default(),
        raw: e,
    })
}

#[cfg(test)]
mod event_tests {
    use super::*;

    /// The document's event (its missing comma put back).
    #[test]
    fn the_documents_event() {
        let e = serde_json::json!({
            "created_at": "2019-01-30T13:30:00Z",
            "id": "1a3c1090-efd1-11eb-9a03-0242ac130003",
            "label": "Order #1000 fulfilled",
            "link_back_url": "https://goodest-boi.myshopify.com/admin/orders/5555555555555",
            "properties": {"shopify_order": {"id": "5555555555555"}},
            "timestamp": 1548855000,
            "type": "ShopifyOrderFulfilled",
            "updated_at": "2019-01-30T13:30:00Z"
        });
        let ev = to_event(e).unwrap();
        assert_eq!(ev.id, "1a3c1090-efd1-11eb-9a03-0242ac130003");
        assert_eq!(ev.kind, "ShopifyOrderFulfilled");
        assert_eq!(ev.label, "Order #1000 fulfilled");
        assert_eq!(ev.at.unwrap().timestamp(), 1548855000);
        assert!(to_event(serde_json::json!({"type": "x"})).is_none());
    }
}
