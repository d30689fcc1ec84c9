//! Ecwid's answers exactly as the API sends them: every answer sits in
//! `{"data": {"id", "type", "attributes": {...}}}`, and ids are numbers in some places
//! and strings in others (kept as strings here).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::providers::wire::{null_as_empty, present};

/// `{"data": {...}}` around every answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope<T> {
    pub data: Data<T>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Data<T> {
    /// A request id in list/update/delete answers, the customer's id in a single GET
    /// (a number) and in a create answer (a string).
    #[serde(default, deserialize_with = "id_text")]
    pub id: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub attributes: T,
}

/// `GET /customers`: one page of the search. Items stay raw JSON text, borrowed from
/// the answer, so that one unreadable customer is skipped instead of failing the page
/// and the page is never held as a tree; `items: null` is no items.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomerList<'a> {
    pub total: u64,
    pub count: u64,
    pub offset: u64,
    pub limit: u64,
    #[serde(borrow, default, deserialize_with = "null_as_empty")]
    pub items: Vec<&'a RawValue>,
}

/// One element of `items`: a customer with its id, which a listed record must have.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ListItem {
    #[serde(deserialize_with = "required_id")]
    pub id: String,
    #[serde(flatten)]
    pub customer: Customer,
}

/// A customer. In a list it carries its `id`; the single GET puts the id in `data.id`
/// and leaves it out of the attributes.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    #[serde(default, deserialize_with = "id_text")]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub registered: Option<String>,
    #[serde(default)]
    pub updated: Option<String>,
    #[serde(default)]
    pub total_order_count: Option<u64>,
    #[serde(default)]
    pub customer_group_id: Option<u64>,
    #[serde(default)]
    pub customer_group_name: Option<String>,
    #[serde(default)]
    pub billing_person: Option<BillingPerson>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub shipping_addresses: Vec<Value>,
    /// `None` when the key is absent (the document's lists never carry `lang`, and
    /// not always `acceptMarketing`): unknown, not empty.
    #[serde(default, deserialize_with = "present")]
    pub accept_marketing: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    pub lang: Option<Option<String>>,
}

/// The billing person: custsync reads names and phone; the address keys are kept so
/// that an update can send them back unchanged.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingPerson {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    /// `None` when the key is absent (as in every documented list item).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub phone: Option<Option<String>>,
    /// Everything else (`street`, `city`, `countryCode`, ...), untouched.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `add_customer` answers `attributes: {}`; the id is in `data.id`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Empty {}

/// `update_customer`'s attributes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateCount {
    pub update_count: u64,
}

/// `delete_customer`'s attributes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteCount {
    pub delete_count: u64,
}

/// The body of `add_customer` and `update_customer`: flat, Ecwid's own names, only the
/// keys being written.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_person: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_marketing: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

/// An id that may come as a number or a string, as text.
fn id_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

fn required_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    id_text(d)?.ok_or_else(|| serde::de::Error::custom("id must be a number or a string"))
}
