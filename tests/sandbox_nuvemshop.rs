//! The Nuvemshop emulator driven through the real connector (and, for what the
//! connector never sends, a raw HTTP client): paging, incremental listing, create,
//! update, lookup by email, auth, the header rules and the rate limit.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use custsync::config::Config;
use custsync::model::{Email, Field, Projection, RemoteId};
use custsync::providers::{connect, ListRequest, Listed, Provider, RemoteRecord};
use custsync::sandbox::nuvemshop::{seed, Nuvemshop, Options};
use serde_json::{json, Value};

const UA: &str = "custsync-tests (tests@example.com)";

async fn emulator(opts: Options) -> Nuvemshop {
    Nuvemshop::start(opts).await.expect("emulator starts")
}

fn connector_at(base_url: &str, key: &str, page_size: u32) -> Arc<dyn Provider> {
    let toml = format!(
        r#"
        [providers.store]
        kind = "nuvemshop"
        base_url = "{base_url}"
        api_key = "{key}"
        page_size = {page_size}
        rate_limit = {{ per_second = 1000.0, burst = 1000 }}
        max_retries = 1
        "#
    );
    let cfg = Config::from_toml(&toml).expect("config");
    connect(&cfg.providers[0]).expect("connector")
}

fn connector(emu: &Nuvemshop, page_size: u32) -> Arc<dyn Provider> {
    connector_at(&emu.base_url(), &emu.api_key(), page_size)
}

async fn list_all(p: &dyn Provider, since: Option<DateTime<Utc>>) -> Vec<RemoteRecord> {
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..100 {
        let page = p
            .list(&ListRequest {
                token: token.take(),
                since,
                known: None,
            })
            .await
            .expect("page");
        for item in page.items {
            match item {
                Listed::Record(r) => out.push(r),
                skipped => panic!("unexpected {skipped:?}"),
            }
        }
        match page.next {
            Some(next) => token = Some(next),
            None => return out,
        }
    }
    panic!("the listing never ended");
}

fn ids(records: &[RemoteRecord]) -> Vec<String> {
    records.iter().map(|r| r.id.0.clone()).collect()
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// A raw request with the emulator's key and a User-Agent.
fn raw(emu: &Nuvemshop, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    http()
        .request(method, format!("{}{path}", emu.base_url()))
        .header("Authentication", format!("bearer {}", emu.api_key()))
        .header("User-Agent", UA)
}

#[tokio::test]
async fn full_listing_returns_every_record_once_across_pages() {
    let emu = emulator(Options::default()).await;
    let mut seeded: Vec<u64> = emu.seed_document_examples();
    for i in 0..5 {
        seeded.push(emu.insert(seed(&format!("Person {i}"), &format!("p{i}@example.com"))));
    }
    let p = connector(&emu, 2);
    p.check().await.expect("check");
    emu.log().clear();

    let records = list_all(p.as_ref(), None).await;

    let want: Vec<String> = seeded.iter().map(u64::to_string).collect();
    let mut got = ids(&records);
    got.sort_by_key(|id| id.parse::<u64>().unwrap_or(0));
    assert_eq!(got, want, "every record exactly once");
    assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), 7);
    let gets = emu.log().all();
    assert_eq!(
        gets.len(),
        4,
        "ceil(7 / 2) pages and nothing more: {gets:?}"
    );
    for (n, r) in gets.iter().enumerate() {
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.status),
            ("GET", "/customers", 200)
        );
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(r.query.as_deref().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let param = |k: &str| {
            query
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(param("per_page"), Some("2"), "{query:?}");
        assert_eq!(
            param("page"),
            Some((n + 1).to_string().as_str()),
            "{query:?}"
        );
        let key = format!("bearer {}", emu.api_key());
        assert_eq!(r.header("authentication"), Some(key.as_str()));
        assert!(r
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("custsync/")));
    }
    let john = records.iter().find(|r| r.id.0 == "101").expect("101");
    assert_eq!(john.projection.get(&Field::FullName), Some("John Doe"));
    assert_eq!(
        john.projection.get(&Field::Line1),
        Some("Evergreen Terrace 742")
    );
    assert_eq!(
        john.updated_at.map(|t| t.to_rfc3339()).as_deref(),
        Some("2013-03-11T12:14:11+00:00")
    );
}

#[tokio::test]
async fn incremental_listing_returns_records_updated_at_or_after_since() {
    let emu = emulator(Options::default()).await;
    let dated = |name: &str, updated: &str| {
        let mut c = seed(name, &format!("{}@example.com", name.to_lowercase()));
        c["updated_at"] = json!(updated);
        c
    };
    emu.insert(dated("Old", "2020-01-02T06:59:59-03:00"));
    let edge = emu.insert(dated("Edge", "2020-01-02T10:00:00+0000"));
    let newer = emu.insert(dated("Newer", "2020-01-03T10:00:00-03:00"));
    emu.insert(dated("Ancient", "2013-01-03T09:11:51-03:00"));
    let newest = emu.insert(dated("Newest", "2024-05-01T00:00:00Z"));
    let p = connector(&emu, 2);

    let since: DateTime<Utc> = "2020-01-02T10:00:00Z".parse().unwrap();
    let records = list_all(p.as_ref(), Some(since)).await;

    let want: Vec<String> = [edge, newer, newest].iter().map(u64::to_string).collect();
    assert_eq!(ids(&records), want, "inclusive, by id");
    let first = &emu.log().all()[0];
    assert!(
        first
            .query
            .as_deref()
            .unwrap_or("")
            .contains("updated_at_min="),
        "{first:?}"
    );
}

#[tokio::test]
async fn create_answers_201_and_stores_the_record() {
    let emu = emulator(Options::default()).await;
    let p = connector(&emu, 30);
    let wanted = Projection::new()
        .with(Field::Email, Some("ana.souza@example.com"))
        .with(Field::FullName, Some("Ana Souza"))
        .with(Field::Phone, Some("11 3749-8000"))
        .with(Field::Line1, Some("Rua Augusta 1500"))
        .with(Field::City, Some("São Paulo"))
        .with(Field::Attr("vip".into()), Some("yes"));

    let created = p.create(&wanted).await.expect("create");

    let writes = emu.log().writes();
    assert_eq!(writes.len(), 1);
    assert_eq!((writes[0].method.as_str(), writes[0].status), ("POST", 201));
    assert_eq!(writes[0].header("content-type"), Some("application/json"));
    let id: u64 = created.id.0.parse().expect("numeric id");
    let stored = emu.customer(id).expect("stored");
    assert_eq!(stored["name"], "Ana Souza");
    assert_eq!(stored["email"], "ana.souza@example.com");
    assert_eq!(stored["billing_address"], "Rua Augusta");
    assert_eq!(stored["billing_number"], "1500");
    assert_eq!(stored["extra"], json!({"vip": "yes"}));
    assert_eq!(stored["total_spent"], "0.00");
    assert!(stored["created_at"].as_str().unwrap().ends_with("-03:00"));
    assert_eq!(
        created.projection, wanted,
        "the answer reads back as written"
    );
}

#[tokio::test]
async fn update_changes_only_the_given_fields() {
    let emu = emulator(Options::default()).await;
    emu.seed_document_examples();
    let before = emu.customer(101).unwrap();
    let p = connector(&emu, 30);
    let desired = Projection::new()
        .with(Field::Email, Some("someone.else@example.com"))
        .with(Field::FullName, Some("John Doe"))
        .with(Field::Phone, Some("911"));

    let answer = p
        .update(&RemoteId("101".into()), &desired, &[Field::Phone])
        .await
        .expect("update");

    let put = &emu.log().writes()[0];
    assert_eq!(
        (put.method.as_str(), put.path.as_str(), put.status),
        ("PUT", "/customers/101", 200)
    );
    let sent: Value = serde_json::from_str(put.body.as_deref().unwrap()).unwrap();
    assert_eq!(sent, json!({"phone": "911"}));
    let after = emu.customer(101).unwrap();
    assert_eq!(after["phone"], "911");
    assert_ne!(
        after["updated_at"], before["updated_at"],
        "updated_at bumped"
    );
    for (key, value) in before.as_object().unwrap() {
        if key != "phone" && key != "updated_at" {
            assert_eq!(&after[key], value, "{key} untouched");
        }
    }
    assert_eq!(
        answer.projection.get(&Field::Email),
        Some("john.doe@example.com")
    );
    let missing = p
        .update(&RemoteId("999".into()), &desired, &[Field::Phone])
        .await;
    assert_eq!(missing.unwrap_err().status(), Some(404));
}

#[tokio::test]
async fn lookup_finds_every_record_with_the_email_and_only_those() {
    let emu = emulator(Options::default()).await;
    emu.seed_document_examples();
    // Matches `q` as a substring, sorts between the duplicates, is not the same email.
    let mut decoy = seed("Decoy", "xjohn.doe@example.com");
    decoy["id"] = json!(105);
    emu.insert(decoy);
    emu.insert(seed("Other", "other@example.com"));
    let p = connector(&emu, 2);

    let email = Email::parse("John.Doe@example.com").unwrap();
    let found = p.lookup(&email).await.expect("lookup");

    assert_eq!(ids(&found), vec!["101", "112"]);
    let none = p.lookup(&Email::parse("nobody@example.com").unwrap()).await;
    assert!(none.expect("lookup").is_empty());
    assert!(emu
        .log()
        .all()
        .iter()
        .all(|r| r.query.as_deref().unwrap_or("").contains("q=")));
}

#[tokio::test]
async fn a_wrong_key_is_an_error_naming_the_provider_with_http_401() {
    let emu = emulator(Options::default()).await;
    emu.seed_document_examples();
    let p = connector_at(&emu.base_url(), "not-the-key-123", 30);

    let err = p.list(&ListRequest::default()).await.unwrap_err();

    assert_eq!(err.status(), Some(401));
    let text = err.to_string();
    assert!(text.starts_with("store: HTTP 401"), "{text}");
    assert!(!text.contains("not-the-key-123") && !text.contains(&emu.api_key()));
    assert_eq!(emu.log().with_status(401), 1, "not retried");
}

#[tokio::test]
async fn the_listing_goes_on_when_the_link_names_another_host() {
    let emu = emulator(Options::default()).await;
    for i in 0..5 {
        emu.insert(seed(&format!("P {i}"), &format!("p{i}@example.com")));
    }
    // The emulator's links say 127.0.0.1; the configured base says localhost.
    let base = emu.base_url().replace("127.0.0.1", "localhost");
    let p = connector_at(&base, &emu.api_key(), 2);

    let records = list_all(p.as_ref(), None).await;

    assert_eq!(ids(&records), vec!["1", "2", "3", "4", "5"]);
}

#[tokio::test]
async fn pages_filters_and_headers_follow_the_document() {
    let emu = emulator(Options::default()).await;
    emu.seed_document_examples();
    emu.insert(seed("Maria Silva", "maria@example.com"));
    let get = |q: &str| raw(&emu, reqwest::Method::GET, &format!("/customers{q}")).send();

    let r = get("?per_page=2").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-total-count"], "3");
    let link = r.headers()["link"].to_str().unwrap().to_string();
    let next = format!(
        "<{}/customers?per_page=2&page=2>; rel=\"next\"",
        emu.base_url()
    );
    assert!(link.contains(&next), "{link}");
    let r = get("?per_page=2&page=2").await.unwrap();
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 1);
    let r = get("?per_page=2&page=3").await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["description"], "Last page is 2");

    let r = get("?q=nobody").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "[]");
    let found: Vec<Value> = get("?q=NINGU&fields=id,name")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found, vec![json!({"id": 112, "name": "Zé Ninguém"})]);
    let by_id: Vec<Value> = get("?q=28776255670").await.unwrap().json().await.unwrap();
    assert_eq!(by_id.len(), 1);
    let after: Vec<Value> = get("?since_id=105&fields=id")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after, vec![json!({"id": 112}), json!({"id": 113})]);
    let created =
        "?created_at_min=2013-01-03T12:11:51Z&created_at_max=2013-04-07T09:11:51-03:00&fields=id";
    let between: Vec<Value> = get(created).await.unwrap().json().await.unwrap();
    assert_eq!(between, vec![json!({"id": 101}), json!({"id": 112})]);

    let one: Value = get("/101?fields=email")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one, json!({"email": "john.doe@example.com"}));
    assert_eq!(get("/7").await.unwrap().status(), 404);
}

#[tokio::test]
async fn the_emulator_refuses_what_the_api_refuses() {
    let emu = emulator(Options::default()).await;
    emu.seed_document_examples();
    let url = format!("{}/customers", emu.base_url());
    let key = format!("bearer {}", emu.api_key());

    let no_ua = http()
        .get(&url)
        .header("Authentication", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(no_ua.status(), 400);
    let no_auth = http()
        .get(&url)
        .header("User-Agent", UA)
        .send()
        .await
        .unwrap();
    assert_eq!(no_auth.status(), 401);
    assert_eq!(no_auth.json::<Value>().await.unwrap()["code"], 401);
    let bearer_in_authorization = http()
        .get(&url)
        .header("User-Agent", UA)
        .header("Authorization", format!("Bearer {}", emu.api_key()))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer_in_authorization.status(), 401);

    let body = r#"{"name":"A","email":"a@example.com"}"#;
    let no_type = raw(&emu, reqwest::Method::POST, "/customers")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status(), 415);
    let put = raw(&emu, reqwest::Method::PUT, "/customers/101")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 415);

    let big = raw(&emu, reqwest::Method::GET, "/customers?per_page=201")
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 422);
    let errors: Value = big.json().await.unwrap();
    assert!(
        errors["per_page"][0].as_str().unwrap().contains("200"),
        "{errors}"
    );

    let post = |body: Value| {
        raw(&emu, reqwest::Method::POST, "/customers")
            .json(&body)
            .send()
    };
    let r = post(json!({"email": "a@example.com"})).await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"name": ["can't be blank"]})
    );
    let r = post(json!({"name": "A", "email": "not an email"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"email": ["is invalid"]})
    );
    assert_eq!(emu.customers().len(), 2, "nothing stored by refused writes");

    let delete = raw(&emu, reqwest::Method::DELETE, "/customers/101")
        .send()
        .await
        .unwrap();
    assert!(matches!(delete.status().as_u16(), 404 | 405));
    assert!(emu.customer(101).is_some());
}

#[tokio::test]
async fn create_takes_the_documented_body_and_a_repeated_email() {
    let emu = emulator(Options::default()).await;
    emu.seed_document_examples();
    let body = json!({
        "name": "First Last", "email": "john.doe@example.com",
        "addresses": [{"address": "My Street", "city": "My City", "country": "BR",
            "locality": "Morumbi", "number": "123", "phone": "11 1234-5678",
            "province": "São Paulo", "zipcode": "05653-071"}],
        "send_email_invite": true, "password": "mysupersecretpassword"
    });

    let r = raw(&emu, reqwest::Method::POST, "/customers")
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 201);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["id"], 113);
    assert_eq!(c["default_address"]["address"], "My Street");
    assert_eq!(c["default_address"]["default"], true);
    assert_eq!(c["addresses"][0], c["default_address"]);
    assert!(c.get("password").is_none() && c.get("send_email_invite").is_none());
    for key in [
        "phone",
        "identification",
        "billing_city",
        "last_order_id",
        "active",
    ] {
        assert!(c.get(key).is_some(), "{key} present");
    }
    assert_eq!(emu.by_email("JOHN.DOE@example.com").len(), 3);
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_its_headers() {
    let emu = emulator(Options {
        rate_limit: Some((3, 0.01)),
        ..Options::default()
    })
    .await;
    let burst = (0..8).map(|_| raw(&emu, reqwest::Method::GET, "/customers").send());

    let answers = futures::future::join_all(burst).await;

    let mut ok = 0;
    for r in answers {
        let r = r.unwrap();
        let h = r.headers();
        assert_eq!(h["x-rate-limit-limit"], "3");
        let reset: u64 = h["x-rate-limit-reset"].to_str().unwrap().parse().unwrap();
        assert!(reset > 0);
        match r.status().as_u16() {
            200 => ok += 1,
            429 => assert_eq!(h["x-rate-limit-remaining"], "0"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 3, "the bucket holds three");
    assert_eq!(emu.log().with_status(429), 5);
}

#[tokio::test]
async fn dates_from_seeds_are_kept_and_filtered_in_any_offset() {
    let emu = emulator(Options::default()).await;
    let mut c = seed("Plus", "plus@example.com");
    c["updated_at"] = json!("2021-11-03T19:53:12+0000");
    let id = emu.insert(c);
    let q =
        "/customers?updated_at_min=2021-11-03T16:53:12-03:00&updated_at_max=2021-11-03T19:53:12Z";

    let found: Vec<Value> = raw(&emu, reqwest::Method::GET, q)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], id);
    assert_eq!(found[0]["updated_at"], "2021-11-03T19:53:12+0000");
}
