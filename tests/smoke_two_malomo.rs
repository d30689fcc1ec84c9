mod common;

use custsync::sandbox::malomo::{self, Customer, Malomo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_malomo_accounts_converge() {
    let mut w = common::World::new().await;
    let other = Malomo::start(malomo::Options {
        page_size: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    w.add_provider(format!(
        "[providers.ship2]\nkind = \"malomo\"\nbase_url = \"{}\"\napi_key = \"{}\"\n",
        other.base_url(),
        other.api_key()
    ));
    w.malomo.insert(Customer::new(
        "ann@example.com",
        Some("Ann"),
        Some("Lee"),
        None,
    ));
    other.insert(Customer::new(
        "bob@example.com",
        Some("Bob"),
        None,
        Some("555"),
    ));
    other.insert(Customer::new(" ANN@Example.com", None, None, Some("777")));
    let run = w.once().await;
    eprintln!("{}", run.stderr);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(w.malomo.customers().len(), 2);
    assert_eq!(other.customers().len(), 2);
    assert_eq!(
        w.malomo.log().writes().len() + other.log().writes().len(),
        3
    );
    w.malomo.log().clear();
    other.log().clear();
    let again = w.once().await;
    assert_eq!(again.code, 0);
    assert_eq!(
        w.malomo.log().writes().len() + other.log().writes().len(),
        0
    );
}
