//! Wire helpers shared by the connectors: `Link` headers, record-by-record decoding
//! of a listing, path encoding.

use super::{Listed, RemoteRecord};
use crate::model::RemoteId;

/// Finds the `rel="next"` target in a `Link` header.
pub fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| {
            target
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// Decodes a JSON array element by element: one bad record is skipped, not fatal.
pub fn decode_items<T: serde::de::DeserializeOwned>(
    items: Vec<serde_json::Value>,
    id_key: &str,
    email_key: &str,
    to_record: impl Fn(T) -> RemoteRecord,
) -> Vec<Listed> {
    items
        .into_iter()
        .map(|item| {
            let id = item.get(id_key).and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            let email = item
                .get(email_key)
                .and_then(|v| v.as_str())
                .map(str::to_string);
            match serde_json::from_value::<T>(item) {
                Ok(c) => Listed::Record(to_record(c)),
                Err(e) => Listed::Skipped {
                    remote_id: id.map(RemoteId),
                    email,
                    reason: format!("unreadable record: {e}"),
                    unreadable: true,
                },
            }
        })
        .collect()
}

pub fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn to_json<T: serde::Serialize>(body: &T) -> serde_json::Value {
    serde_json::to_value(body).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_next_in_link_headers() {
        assert_eq!(
            link_next(
                r#"<https://x/customers?next=abc>; rel="next", <https://x/customers?prev=a>; rel="prev""#
            ),
            Some("https://x/customers?next=abc".into())
        );
        assert_eq!(
            link_next(r#"<https://x/customers?prev=a>; rel="prev""#),
            None
        );
    }
}
