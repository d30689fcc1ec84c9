//! Sendwithus's customer answers exactly as the API sends them:
//! `{"success": true, "status": "OK", "customer": {...}}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::providers::wire::null_as_empty;

/// The wrapper of every answer; `customer` is absent in a delete's answer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Envelope {
    #[serde(default)]
    pub success: bool,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<Customer>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Customer {
    #[serde(default)]
    pub object: Option<String>,
    pub email: String,
    /// Free key/value data; `first_name` and `last_name` are the names.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub data: Map<String, Value>,
    /// Epoch seconds.
    #[serde(default)]
    pub created: Option<i64>,
    /// `"not set"` means none.
    #[serde(default)]
    pub locale: Option<String>,
    /// Group memberships (kept, not mapped yet).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub groups: Vec<String>,
}

/// The body of `POST /customers` (an upsert keyed by `email`). `data` is merged into
/// what Sendwithus holds, key by key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerInput {
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// The answer of `GET /customers/{email}/logs` (read-only activity; not used yet).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Logs {
    #[serde(default)]
    pub success: bool,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub logs: Vec<Log>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Log {
    pub object: Option<String>,
    pub id: String,
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default)]
    pub recipient_name: Option<String>,
    #[serde(default)]
    pub recipient_address: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub email_id: Option<String>,
    #[serde(default)]
    pub email_name: Option<String>,
    #[serde(default)]
    pub email_version: Option<String>,
}
