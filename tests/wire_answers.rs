//! The connectors against answers the emulators do not give on their own: a scripted
//! server answers each request as the test says, and records what it was sent. Proves
//! what a connector makes of a 404 on a first or a linked page, a stated total, a page
//! other than the one asked, a `Link` to another origin, explicit nulls, values over
//! 64 KiB and a page of 100,000 records; and what it sends (paths, create bodies).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use custsync::config::Config;
use custsync::model::{Field, Projection, RemoteId};
use custsync::providers::{connect, ListRequest, Listed, Page, Provider};

/// One answer: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);
type Script = dyn Fn(&Method, &str) -> Answer + Send + Sync;

/// A request as the server received it: method, path and query, body.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    body: String,
}

struct Scripted {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    /// Serves `script` on 127.0.0.1, port 0. The script gets the method and the path
    /// with its query (`/customers?page=2`), and `{base}` in a header or body is the
    /// server's own URL.
    async fn start(script: impl Fn(&Method, &str) -> Answer + Send + Sync + 'static) -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let (log, base) = (seen.clone(), url.clone());
        let app = Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
            let (script, log, base) = (script.clone(), log.clone(), base.clone());
            async move {
                let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                log.lock().unwrap().push(Seen {
                    method: method.to_string(),
                    uri: path.to_string(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let (status, headers, body) = script(&method, path);
                answer(status, headers, body.replace("{base}", &base), &base)
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Scripted { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(status: u16, headers: Vec<(&'static str, String)>, body: String, base: &str) -> Response {
    let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    for (k, v) in headers {
        resp.headers_mut()
            .insert(k, v.replace("{base}", base).parse().unwrap());
    }
    resp
}

fn ok(body: impl Into<String>) -> Answer {
    (200, vec![], body.into())
}

fn connector(kind: &str, base_url: &str, extra: &str) -> Arc<dyn Provider> {
    let toml = format!(
        "[providers.p]\nkind = \"{kind}\"\nbase_url = \"{base_url}\"\napi_key = \"k\"\nmax_retries = 0\nrate_limit = {{ per_second = 1000.0, burst = 1000 }}\n{extra}"
    );
    let cfg = Config::from_toml(&toml).expect("test config");
    connect(&cfg.providers[0]).expect("connector")
}

async fn page(p: &dyn Provider, token: Option<&str>) -> Page {
    let req = ListRequest {
        token: token.map(str::to_string),
        since: None,
        known: None,
    };
    p.list(&req).await.expect("a page")
}

fn nuvem_customer(id: u64, email: &str) -> String {
    format!(
        r#"{{"id": {id}, "name": "N {id}", "email": "{email}", "extra": {{}}, "addresses": []}}"#
    )
}

#[tokio::test]
async fn nuvemshop_a_404_on_the_first_page_or_in_check_is_a_wrong_store() {
    let s =
        Scripted::start(|_, _| (404, vec![], r#"{"code":404,"message":"Not Found"}"#.into())).await;
    let p = connector("nuvemshop", &s.url, "");
    let err = p.list(&ListRequest::default()).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(p.check().await.unwrap_err().status(), Some(404));
}

#[tokio::test]
async fn nuvemshop_a_404_after_a_next_link_proves_the_listing_incomplete() {
    let s = Scripted::start(|_, path| {
        if path.contains("page=1") {
            let link = r#"<{base}/customers?page=2&per_page=200>; rel="next""#.to_string();
            let body = format!("[{}]", nuvem_customer(1, "a@x.co"));
            (
                200,
                vec![("link", link), ("x-total-count", "2".into())],
                body,
            )
        } else {
            (404, vec![], r#"{"code":404}"#.into())
        }
    })
    .await;
    let p = connector("nuvemshop", &s.url, "");
    let first = page(p.as_ref(), None).await;
    assert_eq!(first.total, Some(2));
    assert_eq!(first.items.len(), 1);
    let next = first.next.expect("a next page");
    let second = page(p.as_ref(), Some(&next)).await;
    assert!(second.items.is_empty() && second.next.is_none());
    assert!(second.incomplete.is_some(), "{second:?}");
}

#[tokio::test]
async fn nuvemshop_a_404_after_a_full_page_without_link_ends_the_listing() {
    let s = Scripted::start(|_, path| {
        if path.contains("?page=1&") {
            ok(format!("[{}]", nuvem_customer(1, "a@x.co")))
        } else {
            (404, vec![], r#"{"code":404}"#.into())
        }
    })
    .await;
    let p = connector("nuvemshop", &s.url, "page_size = 1");
    let first = page(p.as_ref(), None).await;
    assert_eq!(first.total, None, "no X-Total-Count, no total");
    let second = page(p.as_ref(), first.next.as_deref()).await;
    assert_eq!(second, Page::default());
}

#[tokio::test]
async fn malomo_a_link_to_another_origin_falls_back_to_the_last_id() {
    let s = Scripted::start(|_, path| {
        if path == "/customers" {
            let link = r#"<https://elsewhere.example/customers?next=zzz>; rel="next""#.to_string();
            let body = r#"[{"id": "a0a877c6-4164-4e8a-8179-48f8d4752b4e", "email": "j@r.co"}]"#;
            (200, vec![("link", link)], body.into())
        } else {
            ok("[]")
        }
    })
    .await;
    let p = connector("malomo", &s.url, "");
    let first = page(p.as_ref(), None).await;
    assert_eq!(
        first.next.as_deref(),
        Some("/customers?next=a0a877c6-4164-4e8a-8179-48f8d4752b4e")
    );
    let end = page(p.as_ref(), first.next.as_deref()).await;
    assert!(end.items.is_empty() && end.next.is_none());
    assert!(s.seen().iter().all(|r| !r.uri.contains("zzz")));
}

#[tokio::test]
async fn malomo_create_omits_absent_fields_and_paths_keep_unreserved_characters() {
    let s = Scripted::start(|method, _| {
        let body = r#"{"id": "a0a877c6-4164-4e8a-8179-48f8d4752b4e", "email": "j@r.co", "last_name": "Rose"}"#;
        match *method {
            Method::DELETE => (204, vec![], String::new()),
            _ => ok(body),
        }
    })
    .await;
    let p = connector("malomo", &s.url, "");
    let record = Projection::new()
        .with(Field::Email, Some("j@r.co"))
        .with(Field::LastName, Some("Rose"));
    let created = p.create(&record).await.unwrap();
    p.update(&created.id, &record, &[Field::LastName])
        .await
        .unwrap();
    let seen = s.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[1].method.as_str()),
        ("POST", "PUT")
    );
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"email": "j@r.co", "last_name": "Rose"})
    );
    assert_eq!(
        seen[1].uri,
        "/customers/a0a877c6-4164-4e8a-8179-48f8d4752b4e"
    );
}

#[tokio::test]
async fn sendwithus_paths_still_encode_plus_and_at() {
    let s = Scripted::start(|_, _| (404, vec![], r#"{"success": false}"#.into())).await;
    let p = connector("sendwithus", &s.url, "");
    p.delete(&RemoteId("ann.lee+shop_1~x@example.com".into()))
        .await
        .unwrap();
    assert_eq!(
        s.seen()[0].uri,
        "/customers/ann.lee%2Bshop_1~x%40example.com"
    );
}

fn partially_page(answered: u64) -> String {
    format!(
        r#"{{"total_pages": 3, "total_entries": 25, "page_size": 10, "page_number": {answered},
            "customers": [{{"id": "c{answered}", "email": "c{answered}@x.co"}}]}}"#
    )
}

#[tokio::test]
async fn partially_a_page_other_than_the_one_asked_is_incomplete_and_the_total_is_read() {
    // Whatever page is asked, the server answers page 1.
    let s = Scripted::start(|_, _| ok(partially_page(1))).await;
    let p = connector("partially", &s.url, "");
    let first = page(p.as_ref(), None).await;
    assert_eq!((first.total, first.incomplete.as_deref()), (Some(25), None));
    let second = page(p.as_ref(), Some("2")).await;
    assert!(second.incomplete.is_some(), "{second:?}");
}

#[tokio::test]
async fn ecwid_the_total_is_read() {
    let s = Scripted::start(|_, _| {
        ok(r#"{"data": {"id": "r", "type": "ecwid", "attributes": {"total": 7, "count": 1, "offset": 0, "limit": 100,
            "items": [{"id": 1, "email": "a@x.co", "shippingAddresses": null}]}}}"#)
    })
    .await;
    let p = connector("ecwid", &s.url, "");
    let first = page(p.as_ref(), None).await;
    assert_eq!(first.total, Some(7));
    assert!(matches!(first.items[0], Listed::Record(_)));
}

#[tokio::test]
async fn a_record_with_a_value_over_64_kib_is_skipped_for_its_data() {
    let big = "é".repeat(32 * 1024 + 1); // 64 KiB and 2 bytes of UTF-8
    let body = format!(
        r#"[{}, {{"id": 2, "email": "b@x.co", "note": "{big}"}}, {{"id": 3, "email": "c@x.co", "extra": {{"k": "{big}"}}}}]"#,
        nuvem_customer(1, "a@x.co")
    );
    let s = Scripted::start(move |_, _| ok(body.clone())).await;
    let p = connector("nuvemshop", &s.url, "");
    let items = page(p.as_ref(), None).await.items;
    assert!(matches!(&items[0], Listed::Record(r) if r.id.0 == "1"));
    for (at, id) in [(1, "2"), (2, "3")] {
        match &items[at] {
            Listed::Skipped {
                remote_id,
                unreadable,
                reason,
                ..
            } => {
                assert_eq!(remote_id.as_ref().map(|r| r.0.as_str()), Some(id));
                assert!(!unreadable, "skipped for its data, not unreadable");
                assert!(reason.contains("64 KiB"), "{reason}");
            }
            other => panic!("record {id} not skipped: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_page_of_100000_records_decodes() {
    const N: u64 = 100_000;
    let mut body = String::with_capacity(N as usize * 120);
    body.push('[');
    for i in 0..N {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"id": {i}, "name": "Person {i}", "email": "p{i}@example.com", "phone": null, "extra": {{"n": "{i}"}}, "addresses": []}}"#
        ));
    }
    body.push(']');
    let body = Arc::new(body);
    let s = Scripted::start(move |_, _| ok(body.as_str())).await;
    let p = connector("nuvemshop", &s.url, "");
    let items = page(p.as_ref(), None).await.items;
    assert_eq!(items.len(), N as usize);
    for at in [0, 4_242, 99_999] {
        let Listed::Record(r) = &items[at] else {
            panic!("{:?}", items[at])
        };
        assert_eq!(r.id.0, at.to_string());
        let email = format!("p{at}@example.com");
        assert_eq!(r.projection.get(&Field::Email), Some(email.as_str()));
        assert_eq!(
            r.projection.get(&Field::Attr("n".into())),
            Some(at.to_string().as_str())
        );
    }
}
