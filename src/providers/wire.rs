//! Wire helpers shared by the connectors: `Link` headers, record-by-record decoding
//! of a listing page (without a JSON tree of the page), explicit `null` read as empty,
//! path encoding.
//!
//! Owns the rules every listing shares: one bad record is skipped and reported, never
//! fatal to its page, and a record with a value over [`MAX_VALUE_BYTES`] is skipped
//! so that such a value is never written anywhere (DESIGN 4c Requests).

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{Known, Listed, ProviderError, RemoteRecord};
use crate::model::{ProviderName, RemoteId};

/// The largest field value custsync syncs, in bytes of UTF-8 (64 KiB).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

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

/// Decodes an answer that borrows from its body (a page of [`RawValue`] items).
pub fn decode_borrowed<'a, T: Deserialize<'a>>(
    provider: &ProviderName,
    body: &'a [u8],
) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| ProviderError::decode(provider, e))
}

/// Decodes a page that is a bare JSON array (Nuvemshop, Malomo); `null` is no records.
pub fn decode_array<'a>(
    provider: &ProviderName,
    body: &'a [u8],
) -> Result<Vec<&'a RawValue>, ProviderError> {
    let items: Option<Vec<&'a RawValue>> = decode_borrowed(provider, body)?;
    Ok(items.unwrap_or_default())
}

/// For `#[serde(deserialize_with)]`: an explicit `null` where the document shows a
/// list or a map decodes as empty (with `#[serde(default)]`, so does an absent key).
pub fn null_as_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// For `#[serde(default, deserialize_with)]`: a key that is present (with a value or
/// `null`) is `Some`, so that an absent key stays `None`: unknown, not empty.
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Decodes a page's items one by one straight into the connector's wire struct: one
/// unreadable record is skipped (its id and email read for the report), and a record
/// holding a value over [`MAX_VALUE_BYTES`] is skipped for its data. With `known` (a
/// listing the engine stores), each record gets the key of its text, and one whose
/// key is known is not decoded at all: [`Listed::Unchanged`].
pub fn decode_items<'a, T: Deserialize<'a>>(
    items: &[&'a RawValue],
    id_key: &str,
    email_key: &str,
    to_record: impl Fn(T) -> RemoteRecord,
    known: Option<&Known>,
) -> Vec<Listed> {
    items
        .iter()
        .map(|item| {
            let key = known.map(|k| (k, k.key(item.get())));
            if let Some(at) = key.and_then(|(k, key)| k.links().find(key)) {
                return Listed::Unchanged(at);
            }
            decode_item(item, id_key, email_key, &to_record, key.map(|(_, key)| key))
        })
        .collect()
}

/// Decodes a write's answer that is the record itself, in the shape a listing shows
/// it (Malomo and Partial.ly answer a create or an update with the customer), with
/// the same decoder as a listing and the key of its text. When the next listing sends
/// that same text, the record is known as written and is not decoded again (see
/// [`Known`]). Text too long to hold only syncable values gets no key, so that a
/// listing would judge it.
///
/// Not for a provider listed incrementally (Nuvemshop): a record listed unchanged is
/// not decoded, so its `updated_at` cannot move the listing's cursor, and the cursor
/// would stay behind every record custsync wrote, listed again at every cycle.
pub fn decode_answer<T: serde::de::DeserializeOwned>(
    provider: &ProviderName,
    body: &[u8],
    to_record: impl FnOnce(T) -> RemoteRecord,
    keys: &Known,
) -> Result<RemoteRecord, ProviderError> {
    let raw: &RawValue = decode_borrowed(provider, body)?;
    let text = raw.get();
    let mut record =
        to_record(serde_json::from_str(text).map_err(|e| ProviderError::decode(provider, e))?);
    record.listed_key = (text.len() <= MAX_VALUE_BYTES).then(|| keys.key(text));
    Ok(record)
}

/// One record decoded (the full path of [`decode_items`]), with the key of its text.
fn decode_item<'a, T: Deserialize<'a>>(
    item: &'a RawValue,
    id_key: &str,
    email_key: &str,
    to_record: &impl Fn(T) -> RemoteRecord,
    key: Option<i64>,
) -> Listed {
    match serde_json::from_str::<T>(item.get()) {
        Ok(c) => {
            let mut record = to_record(c);
            record.listed_key = key;
            oversized(record, item)
        }
        Err(e) => {
            let (id, email) = id_and_email(item, id_key, email_key);
            Listed::Skipped {
                remote_id: id.map(RemoteId),
                email,
                reason: format!("unreadable record: {e}"),
                unreadable: true,
            }
        }
    }
}

/// The record, or its skip when one of its values is over the limit: a mapped value
/// (an `extra` object becomes text) or any string the provider sent.
fn oversized(record: RemoteRecord, raw: &RawValue) -> Listed {
    let mapped = record
        .projection
        .iter()
        .find(|(_, v)| v.len() > MAX_VALUE_BYTES)
        .map(|(f, _)| f.to_string());
    // A value cannot be longer than the record's text that holds it.
    let sent = (mapped.is_none() && raw.get().len() > MAX_VALUE_BYTES)
        .then(|| longest_string(raw.get()))
        .flatten();
    let Some(key) = mapped.or(sent) else {
        return Listed::Record(record);
    };
    Listed::Skipped {
        email: record
            .projection
            .get(&crate::model::Field::Email)
            .map(str::to_string),
        remote_id: Some(record.id),
        reason: format!("a value over 64 KiB ({key}): not synced"),
        unreadable: false,
    }
}

/// The id and the email of a record read from its text without its wire struct (an
/// unreadable record, or one not decoded), where they can be read.
pub fn id_and_email(
    item: &RawValue,
    id_key: &str,
    email_key: &str,
) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(item.get()) else {
        return (None, None);
    };
    let id = value.get(id_key).and_then(|v| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let email = value
        .get(email_key)
        .and_then(|v| v.as_str())
        .map(str::to_string);
    (id, email)
}

/// The key of the first string value over the limit in a JSON text, walked without
/// building a tree; `None` when there is none.
fn longest_string(json: &str) -> Option<String> {
    let mut de = serde_json::Deserializer::from_str(json);
    LongValue { key: "record" }
        .deserialize(&mut de)
        .ok()
        .flatten()
}

/// A visitor that answers the key holding a string over [`MAX_VALUE_BYTES`].
struct LongValue<'k> {
    key: &'k str,
}

impl<'de> DeserializeSeed<'de> for LongValue<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LongValue<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok((v.len() > MAX_VALUE_BYTES).then(|| self.key.to_string()))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(hit) = seq.next_element_seed(LongValue { key: self.key })? {
            found = found.or(hit);
        }
        Ok(found)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let hit = map.next_value_seed(LongValue { key: &key })?;
            found = found.or(hit);
        }
        Ok(found)
    }
}

/// Percent-encodes a path segment or a query value: everything but RFC 3986's
/// unreserved characters (`A-Z a-z 0-9 - . _ ~`), so `@` and `+` are encoded (the
/// Sendwithus email path contract).
pub fn urlencode(s: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
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

    #[test]
    fn paths_encode_only_what_rfc_3986_requires() {
        assert_eq!(
            urlencode("a0a877c6-4164-4e8a_8179.48f8~d4752b4e"),
            "a0a877c6-4164-4e8a_8179.48f8~d4752b4e"
        );
        assert_eq!(
            urlencode("matt+1@sendwithus.com"),
            "matt%2B1%40sendwithus.com"
        );
        assert_eq!(urlencode("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(urlencode("josé"), "jos%C3%A9");
    }

    #[test]
    fn the_longest_string_is_found_anywhere_in_a_record() {
        let big = "x".repeat(MAX_VALUE_BYTES + 1);
        let json = format!(r#"{{"id": 1, "extra": {{"a": [1, null, {{"note": "{big}"}}]}}}}"#);
        assert_eq!(longest_string(&json).as_deref(), Some("note"));
        let fits = "x".repeat(MAX_VALUE_BYTES);
        assert_eq!(longest_string(&format!(r#"{{"a": "{fits}"}}"#)), None);
    }
}
