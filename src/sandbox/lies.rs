//! Answers a real server could send that are wrong in ways HTTP does not see: a page
//! that says there are 300 records and shows none, a record whose id is an object, a
//! redirect to another origin, a body of 40 MB. The fault layer (`faults.rs`) decides
//! which request gets one; this module shapes it.
//!
//! Owns: the `Answer` that replaces an emulator's (a status, headers, a body that may
//! be streamed) and the `Bend` that distorts it (the handler asked with other query
//! parameters, values of its JSON body replaced). Does not own which request is hit.

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;
use url::form_urlencoded;

/// The body of an injected `Answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Empty,
    /// A JSON document (`Content-Type: application/json` unless the headers say otherwise).
    Json(Value),
    /// `head`, then `len` bytes of `fill`, then `tail`, streamed in chunks so that the
    /// emulator never holds it whole: a 40 MB first name costs it 64 KiB.
    Padded {
        head: String,
        fill: u8,
        len: usize,
        tail: String,
    },
}

impl Payload {
    /// A JSON document with one string value of `len` bytes of `fill` where `marker`
    /// (a string value in `doc`) stands. `None` when `doc` lacks the marker.
    pub fn json_padded(doc: &Value, marker: &str, fill: u8, len: usize) -> Option<Payload> {
        let text = doc.to_string();
        let quoted = Value::String(marker.to_string()).to_string();
        let at = text.find(&quoted)?;
        Some(Payload::Padded {
            head: format!("{}\"", &text[..at]),
            fill,
            len,
            tail: format!("\"{}", &text[at + quoted.len()..]),
        })
    }

    fn len(&self) -> Option<usize> {
        match self {
            Payload::Empty => Some(0),
            Payload::Json(_) => None,
            Payload::Padded {
                head, len, tail, ..
            } => Some(head.len() + len + tail.len()),
        }
    }

    fn into_body(self) -> Body {
        match self {
            Payload::Empty => Body::empty(),
            Payload::Json(v) => Body::from(v.to_string()),
            Payload::Padded {
                head,
                fill,
                len,
                tail,
            } => {
                const CHUNK: usize = 64 * 1024;
                let chunk = Bytes::from(vec![fill; CHUNK.min(len)]);
                let full = len / CHUNK;
                let rest = len - full * CHUNK;
                let middle = std::iter::repeat_n(chunk.clone(), full)
                    .chain((rest > 0).then(|| chunk.slice(..rest)));
                let parts = std::iter::once(Bytes::from(head))
                    .chain(middle)
                    .chain(std::iter::once(Bytes::from(tail)))
                    .map(Ok::<Bytes, std::io::Error>);
                Body::from_stream(futures::stream::iter(parts))
            }
        }
    }
}

/// An answer given instead of the emulator's: its handler does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Payload,
}

impl Answer {
    pub fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Payload::Json(body),
        }
    }

    /// A redirect (302, 307, ...) to `location`, with an empty body.
    pub fn redirect(status: u16, location: &str) -> Answer {
        Answer {
            status,
            headers: vec![("location".into(), location.into())],
            body: Payload::Empty,
        }
    }

    pub(super) fn into_response(self) -> Response {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = resp.headers_mut();
        if !matches!(self.body, Payload::Empty) {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        if let Some(len) = self.body.len() {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes());
            let value = HeaderValue::from_str(value);
            if let (Ok(name), Ok(value)) = (name, value) {
                headers.insert(name, value);
            }
        }
        *resp.body_mut() = self.body.into_body();
        resp
    }
}

/// The handler's own answer, distorted: the handler is asked with `query` parameters
/// replaced (a server that ignores `offset` answers as if asked `offset=0`), and the
/// values at the JSON pointers of `set` are replaced in its body (`/customers` → `[]`;
/// a pointer to a missing key of an object adds it; `""` replaces the whole body).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bend {
    pub query: Vec<(String, String)>,
    pub set: Vec<(String, Value)>,
}

impl Bend {
    /// Replaces the value at `pointer` in the answer.
    pub fn set(mut self, pointer: &str, value: Value) -> Bend {
        self.set.push((pointer.to_string(), value));
        self
    }

    /// Asks the handler with this query parameter replaced (or added).
    pub fn ask(mut self, key: &str, value: &str) -> Bend {
        self.query.push((key.to_string(), value.to_string()));
        self
    }

    /// The request as the handler is to see it.
    pub(super) fn request(&self, mut req: Request) -> Request {
        if self.query.is_empty() {
            return req;
        }
        let mut pairs: Vec<(String, String)> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .filter(|(k, _)| !self.query.iter().any(|(q, _)| q == k))
                .collect();
        pairs.extend(self.query.iter().cloned());
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        let path_and_query = format!("{}?{query}", req.uri().path());
        if let Ok(uri) = path_and_query.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
        req
    }

    /// The handler's answer with the values of `set` in place. A body that is not JSON
    /// is left as it is.
    pub(super) async fn answer(&self, resp: Response) -> Response {
        if self.set.is_empty() {
            return resp;
        }
        let (mut parts, body) = resp.into_parts();
        let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
        let Ok(mut doc) = serde_json::from_slice::<Value>(&bytes) else {
            return Response::from_parts(parts, Body::from(bytes));
        };
        for (pointer, value) in &self.set {
            put(&mut doc, pointer, value.clone());
        }
        let text = doc.to_string();
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
        Response::from_parts(parts, Body::from(text))
    }
}

/// Sets the value at a JSON pointer, adding the last key to an object that lacks it.
fn put(doc: &mut Value, pointer: &str, value: Value) {
    if let Some(slot) = doc.pointer_mut(pointer) {
        *slot = value;
        return;
    }
    let Some((parent, key)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = key.replace("~1", "/").replace("~0", "~");
    if let Some(Value::Object(map)) = doc.pointer_mut(parent) {
        map.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_padded_payload_streams_exactly_what_it_promises() {
        let doc = json!({"customers": [{"id": "1", "first_name": "@"}]});
        let p = Payload::json_padded(&doc, "@", b'A', 200_000).unwrap();
        let promised = p.len().unwrap();
        let bytes = to_bytes(p.into_body(), usize::MAX).await.unwrap();
        assert_eq!(bytes.len(), promised);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let name = v["customers"][0]["first_name"].as_str().unwrap();
        assert_eq!(name.len(), 200_000);
        assert!(name.bytes().all(|b| b == b'A'));
        assert!(Payload::json_padded(&doc, "#", b'A', 1).is_none());
    }

    #[tokio::test]
    async fn a_bend_replaces_values_and_query_parameters() {
        let bend = Bend::default()
            .set("/data/items", json!([]))
            .set("/data/added", json!(1))
            .ask("offset", "0");
        let req = Request::builder()
            .uri("/c?offset=250&limit=50")
            .body(Body::empty())
            .unwrap();
        let req = bend.request(req);
        assert_eq!(req.uri().query(), Some("limit=50&offset=0"));
        let resp = Response::new(Body::from(
            json!({"data": {"items": [1, 2], "total": 3}}).to_string(),
        ));
        let resp = bend.answer(resp).await;
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v, json!({"data": {"items": [], "total": 3, "added": 1}}));
    }
}
