//! Ecwid customer ⇄ Ecwid's projection: email, first and last name (from
//! `billingPerson`, else split from `name`), phone (`billingPerson.phone`), accepts
//! marketing (`"true"`/`"false"`) and locale (`lang`).
//!
//! Ecwid's create and update answers do not carry the record, so the snapshot of a
//! write is what was written ([`written`]).

use serde_json::{json, Map, Value};

use super::wire::{BillingPerson, Customer, CustomerInput, ListItem};
use crate::model::{join_name, split_name, Field, FieldSet, Projection, RemoteId};
use crate::providers::{dates::parse_date, RemoteRecord};

pub const FIELDS: FieldSet = FieldSet {
    fields: &[
        Field::Email,
        Field::FirstName,
        Field::LastName,
        Field::Phone,
        Field::AcceptsMarketing,
        Field::Locale,
    ],
    attributes: false,
    defaults: &[(Field::AcceptsMarketing, "false")],
    max_chars: &[],
};

/// The fields that live in `billingPerson`.
const PERSON: [Field; 3] = [Field::FirstName, Field::LastName, Field::Phone];

pub fn listed(item: ListItem) -> RemoteRecord {
    to_record(item.id, item.customer)
}

/// A customer as a record; `id` comes from the list item or from `data.id`.
pub fn to_record(id: String, c: Customer) -> RemoteRecord {
    let person = c.billing_person.unwrap_or_default();
    let named = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    let (first, last) = if named(&person.first_name) || named(&person.last_name) {
        (person.first_name, person.last_name)
    } else {
        let full = person.name.or(c.name).unwrap_or_default();
        split_name(&full)
    };
    let mut projection = Projection::new()
        .with(Field::Email, c.email)
        .with(Field::FirstName, first)
        .with(Field::LastName, last);
    let mut absent = Vec::new();
    let marketing = c.accept_marketing.map(|m| m.map(|b| b.to_string()));
    for (field, value) in [
        (Field::Phone, person.phone),
        (Field::AcceptsMarketing, marketing),
        (Field::Locale, c.lang),
    ] {
        match value {
            Some(v) => projection.set(field, v),
            None => absent.push(field),
        }
    }
    RemoteRecord {
        id: RemoteId(id),
        projection,
        updated_at: c.updated.as_deref().and_then(parse_date),
        absent,
        listed_key: None,
    }
}

/// `"true"` (any case) is true; anything else, absence included, is false.
fn marketing(p: &Projection) -> bool {
    p.get(&Field::AcceptsMarketing)
        .is_some_and(|v| Field::AcceptsMarketing.normalize(v) == "true")
}

/// The body writing `fields` of `p`; a create (`create`) writes every field that has a
/// value. When a name or the phone is written, the whole name set goes together
/// (`firstName`, `lastName`, `name` joined from them, `phone`) on top of `current`,
/// the billing person Ecwid holds now, so that its address keys are sent back as
/// they were. A cleared text is sent as `""`; a cleared `acceptMarketing` as `false`.
pub fn to_input(
    p: &Projection,
    fields: &[Field],
    create: bool,
    current: Option<&BillingPerson>,
) -> CustomerInput {
    let wants = |f: &Field| {
        if create {
            p.get(f).is_some()
        } else {
            fields.contains(f)
        }
    };
    let text = |f: &Field| p.get(f).unwrap_or_default().to_string();
    let billing_person = PERSON.iter().any(wants).then(|| {
        let mut person: Map<String, Value> = current.map(|c| c.other.clone()).unwrap_or_default();
        let first = p.get(&Field::FirstName);
        let last = p.get(&Field::LastName);
        let name = join_name(first, last);
        for (key, value) in [
            ("firstName", first),
            ("lastName", last),
            ("name", name.as_deref()),
            ("phone", p.get(&Field::Phone)),
        ] {
            // A create leaves out what it has no value for; an update clears it.
            if !create || value.is_some() {
                person.insert(key.into(), json!(value.unwrap_or_default()));
            }
        }
        person
    });
    CustomerInput {
        email: p
            .get(&Field::Email)
            .filter(|_| wants(&Field::Email))
            .map(str::to_string),
        billing_person,
        accept_marketing: wants(&Field::AcceptsMarketing).then(|| marketing(p)),
        lang: wants(&Field::Locale).then(|| text(&Field::Locale)),
    }
}

/// What Ecwid holds after a create or update with `p` succeeded (`p` is the whole
/// desired projection, whichever of its fields were sent): `p` itself, with
/// `acceptMarketing` as a boolean. Sent or not, that is what `p` implies: sent, it is
/// `p`'s; not sent, the plan found Ecwid's equal to `p`'s or, where `p` has none,
/// Ecwid's own default (`false`), which its listing then shows.
pub fn written(p: &Projection) -> Projection {
    let mut out: Projection = p
        .iter()
        .filter(|(f, _)| FIELDS.carries(f))
        .map(|(f, v)| (f.clone(), v.to_string()))
        .collect();
    out.set(Field::AcceptsMarketing, Some(marketing(p).to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::super::wire::{CustomerList, DeleteCount, Empty, Envelope, UpdateCount};
    use super::*;

    /// `GET /api/json/v1/ecwid/customers` from the document.
    const LIST: &str = r#"{
      "data": {
        "id": "6bb19930-6728-4901-bfbc-53456e85d0d0",
        "type": "ecwid",
        "attributes": {
          "total": 4,
          "count": 4,
          "offset": 0,
          "limit": 100,
          "items": [
            {
              "id": 172867214,
              "name": "[DEMO] Actualizaci\u00f3n para desbloquear",
              "email": "customer@example.com",
              "registered": "2021-11-03 19:53:12 +0000",
              "updated": "2021-11-03 19:53:12 +0000",
              "totalOrderCount": 2,
              "customerGroupId": 0,
              "customerGroupName": "General",
              "billingPerson": {
                "name": "[DEMO] Actualizaci\u00f3n para desbloquear",
                "firstName": "[DEMO]",
                "lastName": "desbloquear"
              },
              "shippingAddresses": [],
              "acceptMarketing": true
            },
            {
              "id": 172890169,
              "name": "[DEMO] Actualizaci\u00f3n para desbloquear",
              "email": "jkurtsme@gmail.com",
              "registered": "2021-11-04 05:28:26 +0000",
              "updated": "2021-11-05 23:00:01 +0000",
              "totalOrderCount": 0,
              "customerGroupId": 0,
              "customerGroupName": "General",
              "billingPerson": {
                "name": "[DEMO] Actualizaci\u00f3n para desbloquear",
                "firstName": "[DEMO]",
                "lastName": "desbloquear",
                "street": "[DEMO] Actualizaci\u00f3n para desbloquear",
                "city": "[DEMO] Actualizaci\u00f3n para desbloquear"
              },
              "shippingAddresses": [],
              "acceptMarketing": true
            },
            {
              "id": 172781539,
              "name": "Eugene K",
              "email": "example@example.com",
              "registered": "2021-11-03 22:22:45 +0000",
              "updated": "2021-11-03 22:22:45 +0000",
              "totalOrderCount": 1,
              "customerGroupId": 0,
              "customerGroupName": "General",
              "billingPerson": {
                "name": "Eugene K",
                "firstName": "Eugene",
                "lastName": "K"
              },
              "shippingAddresses": [],
              "acceptMarketing": false
            },
            {
              "id": 172889711,
              "email": "jesusguevaram85@gmail.com",
              "registered": "2021-11-04 05:28:20 +0000",
              "updated": "2021-11-04 05:28:20 +0000",
              "totalOrderCount": 0,
              "customerGroupId": 0,
              "customerGroupName": "General",
              "billingPerson": {
                "countryCode": "MX",
                "countryName": "Mexico"
              },
              "shippingAddresses": []
            }
          ]
        }
      }
    }"#;

    /// `GET /api/json/v1/ecwid/customer/{id}` from the document: the id is `data.id`.
    const ONE: &str = r#"{
      "data": {
        "id": 172890169,
        "type": "ecwid",
        "attributes": {
          "email": "jkurtsme@gmail.com",
          "registered": "2021-11-04 05:28:26 +0000",
          "updated": "2021-11-05 23:00:01 +0000",
          "billingPerson": {
            "name": "[DEMO] Actualización para desbloquear",
            "firstName": "[DEMO]",
            "lastName": "desbloquear",
            "street": "[DEMO] Actualización para desbloquear",
            "city": "[DEMO] Actualización para desbloquear"
          },
          "shippingAddresses": [],
          "customerGroupId": 0,
          "customerGroupName": "General",
          "acceptMarketing": true
        }
      }
    }"#;

    /// `add_customer`'s answer: the new id as a string.
    const CREATED: &str = r#"{
      "data": {
        "id": "15319442",
        "type": "ecwid",
        "attributes": {}
      }
    }"#;

    /// `update_customer`'s answer. The document's sample has a trailing comma after
    /// `"updateCount": 1`, which is not JSON; this is the corrected form.
    const UPDATED: &str = r#"{
      "data": {
        "id": "6bb19930-6728-4901-bfbc-53456e85d0d0",
        "type": "ecwid",
        "attributes": {
          "updateCount": 1
        }
      }
    }"#;

    /// `delete_customer`'s answer, trailing comma after `"deleteCount": 1` removed.
    const DELETED: &str = r#"{
      "data": {
        "id": "6bb19930-6728-4901-bfbc-53456e85d0d0",
        "type": "ecwid",
        "attributes": {
          "deleteCount": 1
        }
      }
    }"#;

    fn list_records() -> Vec<RemoteRecord> {
        let env: Envelope<CustomerList> = serde_json::from_str(LIST).unwrap();
        let a = env.data.attributes;
        assert_eq!((a.total, a.count, a.offset, a.limit), (4, 4, 0, 100));
        assert_eq!(env.data.kind.as_deref(), Some("ecwid"));
        a.items
            .into_iter()
            .map(|v| listed(serde_json::from_str(v.get()).unwrap()))
            .collect()
    }

    #[test]
    fn nulls_where_the_document_shows_a_list_read_as_empty() {
        let nulls = LIST.replace(r#""shippingAddresses": []"#, r#""shippingAddresses": null"#);
        assert!(nulls.contains(r#""shippingAddresses": null"#));
        let env: Envelope<CustomerList> = serde_json::from_str(&nulls).unwrap();
        let items = crate::providers::wire::decode_items(
            &env.data.attributes.items,
            "id",
            "email",
            listed,
            None,
        );
        assert_eq!(items.len(), 4);
        assert!(items
            .iter()
            .all(|i| matches!(i, crate::providers::Listed::Record(_))));
        let start = LIST.find(r#""items": ["#).unwrap();
        let end = LIST.rfind(']').unwrap();
        let no_items = format!("{}\"items\": null{}", &LIST[..start], &LIST[end + 1..]);
        let env: Envelope<CustomerList> = serde_json::from_str(&no_items).unwrap();
        assert!(env.data.attributes.items.is_empty());
    }

    #[test]
    fn reads_the_documented_list() {
        let r = list_records();
        assert_eq!(r.len(), 4);
        // No item carries a phone or a language, the last no acceptMarketing: unknown.
        assert_eq!(r[0].absent, vec![Field::Phone, Field::Locale]);
        assert_eq!(
            r[3].absent,
            vec![Field::Phone, Field::AcceptsMarketing, Field::Locale]
        );
        assert_eq!(r[0].id.0, "172867214");
        let p = &r[0].projection;
        assert_eq!(p.get(&Field::Email), Some("customer@example.com"));
        assert_eq!(p.get(&Field::FirstName), Some("[DEMO]"));
        assert_eq!(p.get(&Field::LastName), Some("desbloquear"));
        assert_eq!(p.get(&Field::AcceptsMarketing), Some("true"));
        assert_eq!(
            r[0].updated_at.unwrap().to_rfc3339(),
            "2021-11-03T19:53:12+00:00"
        );
        assert_eq!(r[2].projection.get(&Field::FirstName), Some("Eugene"));
        assert_eq!(r[2].projection.get(&Field::AcceptsMarketing), Some("false"));
        // No name anywhere and no acceptMarketing key: both absent.
        let last = &r[3].projection;
        assert_eq!(last.get(&Field::Email), Some("jesusguevaram85@gmail.com"));
        assert_eq!(last.get(&Field::FirstName), None);
        assert_eq!(last.get(&Field::AcceptsMarketing), None);
    }

    #[test]
    fn reads_the_documented_single_customer() {
        let env: Envelope<Customer> = serde_json::from_str(ONE).unwrap();
        let id = env.data.id.clone().unwrap();
        assert_eq!(id, "172890169");
        let person = env.data.attributes.billing_person.clone().unwrap();
        assert_eq!(
            person.other.get("city").and_then(Value::as_str),
            Some("[DEMO] Actualización para desbloquear")
        );
        let r = to_record(id, env.data.attributes);
        assert_eq!(r.projection.get(&Field::Email), Some("jkurtsme@gmail.com"));
        assert_eq!(r.projection.get(&Field::LastName), Some("desbloquear"));
        assert_eq!(
            r.updated_at.unwrap().to_rfc3339(),
            "2021-11-05T23:00:01+00:00"
        );
    }

    #[test]
    fn reads_the_documented_write_answers() {
        let c: Envelope<Empty> = serde_json::from_str(CREATED).unwrap();
        assert_eq!(c.data.id.as_deref(), Some("15319442"));
        let u: Envelope<UpdateCount> = serde_json::from_str(UPDATED).unwrap();
        assert_eq!(u.data.attributes.update_count, 1);
        let d: Envelope<DeleteCount> = serde_json::from_str(DELETED).unwrap();
        assert_eq!(d.data.attributes.delete_count, 1);
    }

    #[test]
    fn names_fall_back_to_the_full_name() {
        let c: Customer = serde_json::from_value(json!({
            "email": "a@b.co", "name": "Mary Ann Smith", "lang": "pt-BR"
        }))
        .unwrap();
        let r = to_record("7".into(), c);
        assert_eq!(r.projection.get(&Field::FirstName), Some("Mary"));
        assert_eq!(r.projection.get(&Field::LastName), Some("Ann Smith"));
        assert_eq!(r.projection.get(&Field::Locale), Some("pt-BR"));
        let c: Customer = serde_json::from_value(json!({
            "billingPerson": {"name": "Zé Ninguém"}, "name": "ignored"
        }))
        .unwrap();
        let r = to_record("8".into(), c);
        assert_eq!(r.projection.get(&Field::FirstName), Some("Zé"));
    }

    #[test]
    fn create_body_is_flat_with_ecwid_names() {
        let p = Projection::new()
            .with(Field::Email, Some("ann@x.co"))
            .with(Field::FirstName, Some("Ann"))
            .with(Field::LastName, Some("Lee"))
            .with(Field::AcceptsMarketing, Some("True"))
            .with(Field::Locale, Some("en"));
        let body = serde_json::to_value(to_input(&p, &[], true, None)).unwrap();
        assert_eq!(
            body,
            json!({
                "email": "ann@x.co",
                "billingPerson": {"firstName": "Ann", "lastName": "Lee", "name": "Ann Lee"},
                "acceptMarketing": true,
                "lang": "en"
            })
        );
        assert_eq!(written(&p).get(&Field::AcceptsMarketing), Some("true"));
        let phone_only = Projection::new()
            .with(Field::Email, Some("b@x.co"))
            .with(Field::Phone, Some("555"));
        let body = serde_json::to_value(to_input(&phone_only, &[], true, None)).unwrap();
        assert_eq!(
            body,
            json!({"email": "b@x.co", "billingPerson": {"phone": "555"}})
        );
    }

    #[test]
    fn update_keeps_the_address_and_clears_with_empty_values() {
        let current: BillingPerson =
            serde_json::from_value(json!({"firstName": "Ann", "city": "Lima", "phone": "1"}))
                .unwrap();
        let p = Projection::new()
            .with(Field::Email, Some("ann@x.co"))
            .with(Field::FirstName, Some("Anne"));
        let changed = [Field::FirstName, Field::Phone, Field::AcceptsMarketing];
        let body = serde_json::to_value(to_input(&p, &changed, false, Some(&current))).unwrap();
        assert_eq!(
            body,
            json!({
                "billingPerson": {
                    "firstName": "Anne", "lastName": "", "name": "Anne", "phone": "", "city": "Lima"
                },
                "acceptMarketing": false
            })
        );
        let snap = written(&p);
        assert_eq!(snap.get(&Field::AcceptsMarketing), Some("false"));
        assert_eq!(snap.get(&Field::FirstName), Some("Anne"));
    }
}
