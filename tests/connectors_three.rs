//! The Partial.ly, Ecwid and Sendwithus connectors against their sandbox emulators,
//! over real HTTP: listing, create, update, delete, lookup, and the errors each
//! provider is known for.

use std::collections::BTreeSet;
use std::sync::Arc;

use custsync::config::Config;
use custsync::model::{Email, Field, Projection, RemoteId};
use custsync::providers::{connect, ListRequest, ListStyle, Listed, Provider, ProviderError};
use custsync::sandbox::{ecwid, partially, sendwithus};

/// A connector configured the way a user would, against `base_url`.
fn provider(name: &str, kind: &str, base_url: &str, key: &str, extra: &str) -> Arc<dyn Provider> {
    let toml = format!(
        r#"
        [providers.{name}]
        kind = "{kind}"
        base_url = "{base_url}"
        api_key = "{key}"
        rate_limit = {{ per_second = 1000.0, burst = 1000 }}
        {extra}
        "#
    );
    let cfg = Config::from_toml(&toml).expect("test config");
    connect(&cfg.providers[0]).expect("connector")
}

/// Every page of a listing, and how many pages it took.
async fn list_all(p: &dyn Provider) -> (Vec<Listed>, usize) {
    let mut req = ListRequest::default();
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let page = p.list(&req).await.expect("page");
        pages += 1;
        items.extend(page.items);
        match page.next {
            Some(next) => req.token = Some(next),
            None => return (items, pages),
        }
        assert!(pages < 100, "listing does not end");
    }
}

fn records(items: &[Listed]) -> Vec<&custsync::providers::RemoteRecord> {
    items
        .iter()
        .map(|i| match i {
            Listed::Record(r) => r,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn emails(items: &[Listed]) -> BTreeSet<String> {
    records(items)
        .iter()
        .filter_map(|r| r.projection.get(&Field::Email).map(str::to_string))
        .collect()
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

fn status_of(e: &ProviderError) -> u16 {
    e.status()
        .unwrap_or_else(|| panic!("not a status error: {e}"))
}

// ---------------------------------------------------------------- Partial.ly

async fn partially_with(opts: partially::Options) -> (partially::Partially, Arc<dyn Provider>) {
    let em = partially::Partially::start(opts).await.unwrap();
    let p = provider(
        "plans",
        "partially",
        &em.base_url(),
        &em.api_key(),
        "page_size = 5",
    );
    (em, p)
}

#[tokio::test]
async fn partially_lists_every_page() {
    let (em, p) = partially_with(partially::Options::default()).await;
    for i in 0..23 {
        em.insert(partially::Customer::new(
            &format!("c{i}@shop.co"),
            Some("C"),
            None,
        ));
    }
    let erased = em.insert(partially::Customer {
        email: None,
        payment_history: true,
        ..partially::Customer::new("gone@shop.co", None, None)
    });
    let (items, pages) = list_all(p.as_ref()).await;
    assert_eq!(items.len(), 24);
    assert_eq!(pages, 5);
    assert_eq!(emails(&items).len(), 23);
    // An erased (anonymized) record is still listed, with its id and no email.
    let anon = records(&items)
        .into_iter()
        .find(|r| r.id.0 == erased)
        .expect("anonymized record listed");
    assert_eq!(anon.projection.get(&Field::Email), None);
    let queries: Vec<String> = em.log().all().into_iter().filter_map(|r| r.query).collect();
    assert_eq!(queries[0], "page=1&per_page=5");
    assert_eq!(queries[4], "page=5&per_page=5");
    assert_eq!(
        em.log().all()[0]
            .header("authorization")
            .map(|a| a.starts_with("Bearer ")),
        Some(true)
    );
    assert_eq!(p.capabilities().list, ListStyle::Pages);
    assert!(!p.capabilities().updated_at);
}

#[tokio::test]
async fn partially_lists_the_document_customers() {
    let (em, p) = partially_with(partially::Options::default()).await;
    em.seed_document_examples();
    let (items, _) = list_all(p.as_ref()).await;
    let want: BTreeSet<String> = [
        "sample.customer@gmail.com",
        "jappleseed@yahoo.com",
        "testing@aol.com",
        "aaa@y.co",
    ]
    .map(String::from)
    .into();
    assert_eq!(emails(&items), want);
    let sample = records(&items)
        .into_iter()
        .find(|r| r.id.0 == "6d30d3c8-d024-45cc-9c3f-356fc8aee23d")
        .unwrap();
    assert_eq!(sample.projection.get(&Field::Region), Some("FL"));
}

#[tokio::test]
async fn partially_create_update_lookup_delete() {
    let (em, p) = partially_with(partially::Options::default()).await;
    let want = Projection::new()
        .with(Field::Email, Some("new.person@shop.co"))
        .with(Field::FirstName, Some("Ana"))
        .with(Field::LastName, Some("Silva"))
        .with(Field::Phone, Some("+5511999990000"))
        .with(Field::Line1, Some("Rua A 1"))
        .with(Field::City, Some("São Paulo"))
        .with(Field::Country, Some("BR"));
    let created = p.create(&want).await.unwrap();
    // The snapshot is the answer, which (like the document's) does not carry the
    // language: it is unknown, not empty. The server keeps its default.
    assert_eq!(created.projection.get(&Field::Language), None);
    assert!(created.absent.contains(&Field::Language));
    assert_eq!(created.projection.get(&Field::Country), Some("BR"));
    let body = em.log().writes()[0].body.clone().unwrap();
    for unmapped in ["timezone", "shipto_name", "language"] {
        assert!(!body.contains(unmapped), "{unmapped} sent: {body}");
    }
    let stored = &em.by_email("new.person@shop.co")[0];
    assert_eq!(stored.id, created.id.0);
    assert_eq!(stored.timezone.as_deref(), Some("America/New_York"));
    assert_eq!(stored.language.as_deref(), Some("en"));

    let edited = want
        .clone()
        .with(Field::Phone, Some("+5511888880000"))
        .with(Field::Line1, None::<String>);
    let updated = p
        .update(&created.id, &edited, &[Field::Phone, Field::Line1])
        .await
        .unwrap();
    assert_eq!(
        updated.projection.get(&Field::Phone),
        Some("+5511888880000")
    );
    assert_eq!(updated.projection.get(&Field::Line1), None);
    let stored = &em.by_email("new.person@shop.co")[0];
    assert_eq!(stored.shipto_address, None);
    assert_eq!(stored.first_name.as_deref(), Some("Ana"));

    let found = p.lookup(&email("new.person@shop.co")).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, created.id);
    assert!(p.lookup(&email("nobody@shop.co")).await.unwrap().is_empty());
    assert!(em.log().all().iter().any(|r| r
        .query
        .as_deref()
        .is_some_and(|q| q.contains("q=new.person%40shop.co"))));

    // No payment history: gdpr_remove deletes; a second delete finds it gone (404).
    p.delete(&created.id).await.unwrap();
    assert!(em.by_email("new.person@shop.co").is_empty());
    p.delete(&created.id).await.unwrap();
}

#[tokio::test]
async fn partially_gdpr_remove_anonymizes_a_customer_with_history() {
    let (em, p) = partially_with(partially::Options::default()).await;
    let id = em.insert(partially::Customer {
        payment_history: true,
        ..partially::Customer::new("paid@shop.co", Some("Pat"), Some("Paid"))
    });
    p.delete(&RemoteId(id.clone())).await.unwrap();
    let left = em.customers();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].id.as_str(), left[0].email.as_deref()),
        (id.as_str(), None)
    );
    assert_eq!(left[0].first_name, None);
    let (items, _) = list_all(p.as_ref()).await;
    let r = &records(&items)[0];
    assert_eq!(r.id.0, id);
    assert_eq!(r.projection.email(), None);
}

#[tokio::test]
async fn partially_create_accepts_200_too() {
    let opts = partially::Options {
        create_status: axum::http::StatusCode::OK,
        ..Default::default()
    };
    let (em, p) = partially_with(opts).await;
    let r = p
        .create(&Projection::new().with(Field::Email, Some("two@shop.co")))
        .await
        .unwrap();
    assert_eq!(em.log().writes()[0].status, 200);
    assert_eq!(em.by_email("two@shop.co")[0].id, r.id.0);
}

#[tokio::test]
async fn partially_refused_gdpr_remove_carries_the_message() {
    let (em, p) = partially_with(partially::Options::default()).await;
    let id = em.insert(partially::Customer {
        open_plan: true,
        ..partially::Customer::new("owing@shop.co", None, None)
    });
    let err = p.delete(&RemoteId(id.clone())).await.unwrap_err();
    assert_eq!(status_of(&err), 422);
    assert!(!err.retryable());
    let text = err.to_string();
    assert!(text.starts_with("plans: "), "{text}");
    assert!(
        text.contains("Customers with open payment plans cannot be deleted"),
        "{text}"
    );
    // Refused once, not retried, and the customer is untouched.
    assert_eq!(em.log().count("PUT", "/customer/gdpr_remove/"), 1);
    assert_eq!(em.by_email("owing@shop.co").len(), 1);
}

#[tokio::test]
async fn partially_wrong_key_is_a_401_naming_the_provider() {
    let em = partially::Partially::start(partially::Options::default())
        .await
        .unwrap();
    let p = provider("plans", "partially", &em.base_url(), "wrong-key", "");
    let err = p.check().await.unwrap_err();
    assert_eq!(status_of(&err), 401);
    let text = err.to_string();
    assert!(text.contains("plans") && text.contains("401"), "{text}");
    assert!(!text.contains("wrong-key"));
    assert_eq!(em.log().len(), 1, "a 401 is not retried");
}

// ---------------------------------------------------------------- Ecwid

async fn ecwid_with(page_size: u32) -> (ecwid::Ecwid, Arc<dyn Provider>) {
    let em = ecwid::Ecwid::start(ecwid::Options::default())
        .await
        .unwrap();
    let extra = format!("page_size = {page_size}");
    let p = provider("shop2", "ecwid", &em.base_url(), &em.api_key(), &extra);
    (em, p)
}

#[tokio::test]
async fn ecwid_lists_every_page() {
    let (em, p) = ecwid_with(3).await;
    em.seed_document_examples();
    for i in 0..7 {
        em.insert(ecwid::Customer::new(
            &format!("e{i}@shop.co"),
            Some("E"),
            Some("Cwid"),
        ));
    }
    let (items, pages) = list_all(p.as_ref()).await;
    assert_eq!(items.len(), 11);
    assert_eq!(pages, 4);
    assert_eq!(emails(&items).len(), 11);
    let all = records(&items);
    let eugene = all.iter().find(|r| r.id.0 == "172781539").unwrap();
    assert_eq!(eugene.projection.get(&Field::FirstName), Some("Eugene"));
    assert_eq!(
        eugene.projection.get(&Field::AcceptsMarketing),
        Some("false")
    );
    assert!(all.iter().all(|r| r.id.0.parse::<u64>().is_ok()));
    assert!(all.iter().all(|r| r.updated_at.is_some()));
    let queries: Vec<String> = em.log().all().into_iter().filter_map(|r| r.query).collect();
    assert_eq!(
        queries,
        [
            "offset=0&limit=3",
            "offset=3&limit=3",
            "offset=6&limit=3",
            "offset=9&limit=3"
        ]
    );
}

#[tokio::test]
async fn ecwid_create_update_lookup_delete() {
    let (em, p) = ecwid_with(100).await;
    let want = Projection::new()
        .with(Field::Email, Some("ann@shop.co"))
        .with(Field::FirstName, Some("Ann"))
        .with(Field::LastName, Some("Lee"))
        .with(Field::Phone, Some("555-0101"))
        .with(Field::Locale, Some("en"));
    let created = p.create(&want).await.unwrap();
    assert!(created.id.0.parse::<u64>().is_ok(), "{}", created.id);
    // What was written, and Ecwid's own default for what was not.
    let kept = want.clone().with(Field::AcceptsMarketing, Some("false"));
    assert_eq!(created.projection, kept, "snapshot = what was written");
    let body: serde_json::Value =
        serde_json::from_str(&em.log().writes()[0].body.clone().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "email": "ann@shop.co",
            "billingPerson": {"firstName": "Ann", "lastName": "Lee", "name": "Ann Lee", "phone": "555-0101"},
            "lang": "en"
        })
    );
    let id: u64 = created.id.0.parse().unwrap();
    em.edit(id, |c| {
        c.billing_person
            .insert("city".into(), serde_json::json!("Lima"));
    });

    let edited = want
        .clone()
        .with(Field::FirstName, Some("Anne"))
        .with(Field::AcceptsMarketing, Some("true"));
    let changed = [Field::FirstName, Field::AcceptsMarketing];
    let updated = p.update(&created.id, &edited, &changed).await.unwrap();
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.projection, edited);
    let stored = &em.by_email("ann@shop.co")[0];
    assert_eq!(stored.billing_person["firstName"], "Anne");
    assert_eq!(stored.billing_person["city"], "Lima", "address kept");
    assert_eq!(stored.name.as_deref(), Some("Anne Lee"));
    assert_eq!(stored.accept_marketing, Some(true));
    let update = em.log().writes()[1].clone();
    assert_eq!(
        update.path,
        format!("/api/json/v1/ecwid/update_customer/{id}")
    );
    // The connector sends the address back itself (a server replacing the whole
    // billing person must not lose it): it read the customer first.
    let sent: serde_json::Value = serde_json::from_str(&update.body.unwrap()).unwrap();
    assert_eq!(sent["billingPerson"]["city"], "Lima");
    assert_eq!(sent["acceptMarketing"], true);
    assert_eq!(em.log().count("GET", "/api/json/v1/ecwid/customer/"), 1);

    let found = p.lookup(&email("ann@shop.co")).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, created.id);
    assert_eq!(found[0].projection.get(&Field::FirstName), Some("Anne"));
    assert!(p.lookup(&email("nobody@shop.co")).await.unwrap().is_empty());

    p.delete(&created.id).await.unwrap();
    assert!(em.customers().is_empty());
    p.delete(&created.id).await.unwrap();
    assert_eq!(em.log().with_status(404), 1);
}

#[tokio::test]
async fn ecwid_create_with_an_existing_email_links_it() {
    let (em, p) = ecwid_with(100).await;
    em.seed_document_examples();
    let existing = em.insert(ecwid::Customer::new(
        "dup@shop.co",
        Some("Old"),
        Some("Name"),
    ));
    let want = Projection::new()
        .with(Field::Email, Some("dup@shop.co"))
        .with(Field::FirstName, Some("New"));
    let r = p.create(&want).await.unwrap();
    assert_eq!(r.id.0, existing.to_string());
    assert_eq!(
        r.projection.get(&Field::FirstName),
        Some("Old"),
        "the record as Ecwid has it"
    );
    assert_eq!(em.by_email("dup@shop.co").len(), 1, "no second record");
    assert_eq!(em.log().with_status(409), 1);
}

#[tokio::test]
async fn ecwid_refuses_an_update_to_another_customers_email() {
    let (em, p) = ecwid_with(100).await;
    em.insert(ecwid::Customer::new("taken@shop.co", None, None));
    let id = em.insert(ecwid::Customer::new("mine@shop.co", None, None));
    let want = Projection::new().with(Field::Email, Some("taken@shop.co"));
    let err = p
        .update(&RemoteId(id.to_string()), &want, &[Field::Email])
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), 409);
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(em.by_email("mine@shop.co").len(), 1);
}

#[tokio::test]
async fn ecwid_limit_above_100_is_a_400() {
    let (em, _) = ecwid_with(100).await;
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/json/v1/ecwid/customers?limit=101",
            em.base_url()
        ))
        .bearer_auth(em.api_key())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["errorMessage"].as_str().is_some() && body["errorCode"].as_str().is_some());
}

#[tokio::test]
async fn ecwid_wrong_key_is_a_401_naming_the_provider() {
    let em = ecwid::Ecwid::start(ecwid::Options::default())
        .await
        .unwrap();
    let p = provider("shop2", "ecwid", &em.base_url(), "wrong-key", "");
    let err = p.list(&ListRequest::default()).await.unwrap_err();
    assert_eq!(status_of(&err), 401);
    let text = err.to_string();
    assert!(text.contains("shop2") && text.contains("401"), "{text}");
    assert!(!text.contains("wrong-key"));
}

// ---------------------------------------------------------------- Sendwithus

async fn sendwithus() -> (sendwithus::Sendwithus, Arc<dyn Provider>) {
    let em = sendwithus::Sendwithus::start(sendwithus::Options::default())
        .await
        .unwrap();
    let p = provider("mail", "sendwithus", &em.base_url(), &em.api_key(), "");
    (em, p)
}

#[tokio::test]
async fn sendwithus_is_a_target_only() {
    let (_em, p) = sendwithus().await;
    let caps = p.capabilities();
    assert_eq!(caps.list, ListStyle::None);
    assert!(caps.create && caps.update && caps.delete && caps.lookup);
    let err = p.list(&ListRequest::default()).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported { .. }), "{err}");
    p.check().await.unwrap();
}

#[tokio::test]
async fn sendwithus_upsert_lookup_update_delete_with_a_plus_address() {
    let (em, p) = sendwithus().await;
    let want = Projection::new()
        .with(Field::Email, Some("ann+vip@shop.co"))
        .with(Field::FirstName, Some("Ann"))
        .with(Field::LastName, Some("Lee"))
        .with(Field::Locale, Some("pt-BR"))
        .with(Field::Attr("plan".into()), Some("gold"));
    let created = p.create(&want).await.unwrap();
    assert_eq!(created.id.0, "ann+vip@shop.co");
    assert_eq!(created.projection, want);
    let stored = em.by_email("ann+vip@shop.co").unwrap();
    assert_eq!(stored.data["first_name"], "Ann");
    assert_eq!(stored.data["plan"], "gold");
    assert_eq!(stored.locale, "pt-BR");

    let found = p.lookup(&email("ann+vip@shop.co")).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].projection, want);
    let get = em
        .log()
        .all()
        .into_iter()
        .find(|r| r.method == "GET")
        .unwrap();
    assert!(
        get.path.starts_with("/customers/ann%2Bvip%40shop"),
        "{}",
        get.path
    );
    assert!(!get.path.contains('+') && !get.path.contains('@'));

    // Someone else's data key stays: the upsert merges.
    em.edit("ann+vip@shop.co", |c| {
        c.data.insert("source".into(), serde_json::json!("web"));
    });
    let edited = want
        .clone()
        .with(Field::FirstName, Some("Anne"))
        .with(Field::Attr("plan".into()), None::<String>);
    let changed = [Field::FirstName, Field::Attr("plan".into())];
    let updated = p.update(&created.id, &edited, &changed).await.unwrap();
    assert_eq!(updated.projection.get(&Field::FirstName), Some("Anne"));
    assert_eq!(updated.projection.get(&Field::Attr("plan".into())), None);
    assert_eq!(
        updated.projection.get(&Field::Attr("source".into())),
        Some("web")
    );
    let body = em.log().writes()[1].body.clone().unwrap();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"email": "ann+vip@shop.co", "data": {"first_name": "Anne", "plan": ""}})
    );

    p.delete(&created.id).await.unwrap();
    assert!(em.by_email("ann+vip@shop.co").is_none());
    let delete = em
        .log()
        .all()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .unwrap();
    assert!(
        delete.path.contains("%2B") && delete.path.contains("%40"),
        "{}",
        delete.path
    );
    assert!(p
        .lookup(&email("ann+vip@shop.co"))
        .await
        .unwrap()
        .is_empty());
    p.delete(&created.id).await.unwrap();
    assert_eq!(em.log().with_status(404), 2);
}

#[tokio::test]
async fn sendwithus_email_change_moves_the_customer() {
    let (em, p) = sendwithus().await;
    let old = Projection::new()
        .with(Field::Email, Some("old@shop.co"))
        .with(Field::FirstName, Some("Ola"));
    let created = p.create(&old).await.unwrap();
    let new = old.clone().with(Field::Email, Some("new@shop.co"));
    let moved = p.update(&created.id, &new, &[Field::Email]).await.unwrap();
    assert_eq!(moved.id.0, "new@shop.co");
    assert_eq!(moved.projection.get(&Field::FirstName), Some("Ola"));
    assert!(em.by_email("old@shop.co").is_none());
    assert_eq!(
        em.by_email("new@shop.co").unwrap().data["first_name"],
        "Ola"
    );
}

#[tokio::test]
async fn sendwithus_serves_the_document_customers() {
    let (em, p) = sendwithus().await;
    em.seed_document_examples();
    let matt = p.lookup(&email("matt@sendwithus.com")).await.unwrap();
    assert_eq!(matt[0].projection.get(&Field::Locale), Some("de-DE"));
    assert_eq!(
        matt[0].projection.get(&Field::Attr("city".into())),
        Some("San Francisco")
    );
    let shown = p.lookup(&email("customer@example.com")).await.unwrap();
    assert_eq!(shown[0].projection.get(&Field::Locale), None, "\"not set\"");
    let logs: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/customers/matt%40sendwithus.com/logs",
            em.base_url()
        ))
        .basic_auth(em.api_key(), Some(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(logs["logs"][0]["id"], "log_asdf1234qwerty");
}

#[tokio::test]
async fn sendwithus_auth_basic_or_header_and_401_otherwise() {
    let (em, _) = sendwithus().await;
    em.seed_document_examples();
    let url = format!("{}/customers/matt%40sendwithus.com", em.base_url());
    let client = reqwest::Client::new();
    let by_header = client
        .get(&url)
        .header("X-SWU-API-KEY", em.api_key())
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status().as_u16(), 200);
    let with_password = client
        .get(&url)
        .basic_auth(em.api_key(), Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(with_password.status().as_u16(), 401);

    let p = provider("mail", "sendwithus", &em.base_url(), "wrong-key", "");
    let err = p.lookup(&email("matt@sendwithus.com")).await.unwrap_err();
    assert_eq!(status_of(&err), 401);
    let text = err.to_string();
    assert!(text.contains("mail") && text.contains("401"), "{text}");
    assert!(!text.contains("wrong-key"));
}
