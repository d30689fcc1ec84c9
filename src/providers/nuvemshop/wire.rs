//! Nuvemshop's customer exactly as the API sends it (fields custsync reads; the rest,
//! such as `total_spent` or `addresses`, is left alone).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Customer {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// `None` when the key is absent (the document's create answer has none): unknown,
    /// not empty.
    #[serde(
        default,
        deserialize_with = "crate::providers::wire::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub phone: Option<Option<String>>,
    #[serde(default)]
    pub identification: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub billing_address: Option<String>,
    #[serde(default)]
    pub billing_number: Option<String>,
    #[serde(default)]
    pub billing_floor: Option<String>,
    #[serde(default)]
    pub billing_locality: Option<String>,
    #[serde(default)]
    pub billing_zipcode: Option<String>,
    #[serde(default)]
    pub billing_city: Option<String>,
    #[serde(default)]
    pub billing_province: Option<String>,
    #[serde(default)]
    pub billing_country: Option<String>,
    #[serde(default)]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}
