//! Partial.ly's customer and customer page exactly as the API sends them.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::providers::wire::{null_as_empty, present};

/// A customer. `timezone` and `shipto_name` are read but never written by custsync, so
/// whatever the server or the merchant set there stays. A mapped field is `None` when
/// its key is absent from the answer (`language` is absent from every documented
/// answer): unknown, not empty; `Some(None)` is an explicit `null`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Customer {
    pub id: String,
    /// `null` once `gdpr_remove` has anonymized the customer.
    #[serde(default)]
    pub email: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub first_name: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_name: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub phone: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub language: Option<Option<String>>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub shipto_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub shipto_address: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub shipto_address2: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub shipto_city: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub shipto_state: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub shipto_postal_code: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub shipto_country: Option<Option<String>>,
    /// No zone on the wire: UTC.
    #[serde(default)]
    pub inserted_at: Option<String>,
}

/// One page of `GET /customer`. Customers stay raw JSON text, borrowed from the
/// answer, so that one unreadable record is skipped instead of failing the page and
/// the page is never held as a tree; `customers: null` is no customers.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomerPage<'a> {
    pub total_pages: u64,
    #[serde(default)]
    pub total_entries: Option<u64>,
    #[serde(default)]
    pub page_size: u64,
    pub page_number: u64,
    #[serde(borrow, default, deserialize_with = "null_as_empty")]
    pub customers: Vec<&'a RawValue>,
}

/// The body of a create or an update: only the keys being written. The outer `Option`
/// says whether the key is sent, the inner one is the value (`null` clears a field).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CustomerInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipto_address: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipto_address2: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipto_city: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipto_state: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipto_postal_code: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipto_country: Option<Option<String>>,
}

/// An answer that is only a message: `gdpr_remove`'s success, and its refusal (4xx).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Message {
    pub message: String,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub errors: Vec<serde_json::Value>,
}
