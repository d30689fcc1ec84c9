//! Malomo and Nuvemshop reconciled end to end by the real binary over HTTP against the
//! sandbox emulators: seed, run once, assert on the providers' state and request logs.

mod common;

use common::{norm, World};
use custsync::sandbox::malomo::Customer;
use custsync::sandbox::nuvemshop::seed;
use serde_json::json;

/// Ann is in both (other letter case and spaces in Nuvemshop), Bob only in Malomo,
/// Carla only in Nuvemshop.
async fn seeded() -> World {
    let w = World::new().await;
    w.malomo.insert(Customer::new(
        "ann@example.com",
        Some("Ann"),
        Some("Lee"),
        Some("555-0100"),
    ));
    w.malomo.insert(Customer::new(
        "bob@example.com",
        Some("Bob"),
        Some("Stone"),
        None,
    ));
    w.nuvem.insert(seed("Ann Lee", "  ANN@Example.com "));
    w.nuvem
        .insert(seed("Carla Mendes Souza", "carla@example.com.br"));
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_puts_every_person_everywhere_once() {
    let w = seeded().await;
    let run = w.once().await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);

    let everyone = vec!["ann@example.com", "bob@example.com", "carla@example.com.br"];
    assert_eq!(w.malomo_emails(), everyone);
    assert_eq!(w.nuvem_emails(), everyone);

    // Names carried over both ways, the lossy single name split on its first space.
    let carla = &w.malomo.by_email("carla@example.com.br")[0];
    assert_eq!(carla.first_name.as_deref(), Some("Carla"));
    assert_eq!(carla.last_name.as_deref(), Some("Mendes Souza"));
    let bob = &w.nuvem.by_email("bob@example.com")[0];
    assert_eq!(bob["name"], json!("Bob Stone"));
    // Ann's phone from Malomo reached Nuvemshop.
    let ann = &w.nuvem.by_email("ann@example.com")[0];
    assert_eq!(ann["phone"], json!("555-0100"));

    // The report counts what happened.
    assert_eq!(run.count("malomo", "fetched"), 2);
    assert_eq!(run.count("store", "fetched"), 2);
    assert_eq!(run.count("malomo", "created"), 1);
    assert_eq!(run.count("store", "created"), 1);
    assert_eq!(run.count("store", "updated"), 1);
    assert_eq!(
        run.count("malomo", "failed") + run.count("store", "failed"),
        0
    );
    let report = run.report.as_ref().unwrap();
    assert_eq!(report["held_deletes"], json!(0));
    assert_eq!(report["conflicts"], json!(0));
    // Creates carried the required headers.
    let post = w
        .nuvem
        .log()
        .writes()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert!(post
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("custsync/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_with_no_outside_change_writes_nothing() {
    let w = seeded().await;
    assert_eq!(w.once().await.code, 0);
    w.clear_logs();
    let run = w.once().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        w.writes(),
        0,
        "malomo: {:?}\nnuvemshop: {:?}",
        w.malomo.log().writes(),
        w.nuvem.log().writes()
    );
    // The second Nuvemshop listing is incremental.
    let lists = w.nuvem.log().all();
    assert!(
        lists
            .iter()
            .any(|r| r.query.as_deref().unwrap_or("").contains("updated_at_min=")),
        "{lists:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_to_different_fields_in_different_providers_both_survive() {
    let w = seeded().await;
    assert_eq!(w.once().await.code, 0);
    let ann_m = w.malomo.by_email("ann@example.com")[0].id.clone();
    let ann_n = w.nuvem.by_email("ann@example.com")[0]["id"]
        .as_u64()
        .unwrap();
    w.malomo
        .edit(&ann_m, |c| c.last_name = Some("Lee-Park".into()));
    w.nuvem
        .edit(ann_n, |c| c["phone"] = json!("+55 11 99999-0000"));

    let run = w.once().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let m = &w.malomo.by_email("ann@example.com")[0];
    assert_eq!(m.last_name.as_deref(), Some("Lee-Park"));
    assert_eq!(m.phone_number.as_deref(), Some("+55 11 99999-0000"));
    let n = w.nuvem.customer(ann_n).unwrap();
    assert_eq!(n["name"], json!("Ann Lee-Park"));
    assert_eq!(n["phone"], json!("+55 11 99999-0000"));
    assert_eq!(run.report.as_ref().unwrap()["conflicts"], json!(0));

    // And it settles.
    w.clear_logs();
    assert_eq!(w.once().await.code, 0);
    assert_eq!(w.writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_field_edited_twice_goes_to_the_latest_edit() {
    let w = seeded().await;
    assert_eq!(w.once().await.code, 0);
    let ann_m = w.malomo.by_email("ann@example.com")[0].id.clone();
    let ann_n = w.nuvem.by_email("ann@example.com")[0]["id"]
        .as_u64()
        .unwrap();
    w.nuvem.edit(ann_n, |c| c["phone"] = json!("111"));
    // Malomo's edit is later (its updated_at is bumped after Nuvemshop's).
    w.malomo.edit(&ann_m, |c| {
        c.phone_number = Some("222".into());
    });
    let run = w.once().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.report.as_ref().unwrap()["conflicts"], json!(1));
    assert_eq!(
        w.malomo.by_email("ann@example.com")[0]
            .phone_number
            .as_deref(),
        Some("222")
    );
    assert_eq!(w.nuvem.customer(ann_n).unwrap()["phone"], json!("222"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_writes_nothing_and_prints_the_plan() {
    let w = seeded().await;
    let dry = w.run(&["--once", "--dry-run"]).await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!(w.writes(), 0);
    assert!(
        dry.stdout.contains("create") && dry.stdout.contains("bob@example.com"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("carla@example.com.br"),
        "{}",
        dry.stdout
    );
    let report = dry.report.as_ref().unwrap();
    assert_eq!(report["dry_run"], json!(true));
    assert_eq!(dry.count("malomo", "created"), 1);
    assert_eq!(dry.count("store", "created"), 1);
    assert!(!w.db_path().exists() || std::fs::metadata(w.db_path()).unwrap().len() == 0);

    // A second dry run plans the same (nothing was recorded), then a real run does it.
    let again = w.run(&["--dry-run"]).await;
    assert_eq!(again.stdout, dry.stdout);
    let real = w.once().await;
    assert_eq!(real.code, 0, "{}", real.stderr);
    assert_eq!(w.malomo_emails().len(), 3);
    assert_eq!(w.nuvem_emails().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_skipped_and_reported_and_the_run_goes_on() {
    let w = seeded().await;
    w.malomo.insert(Customer {
        email: None,
        ..Customer::new("x@y.co", Some("No"), Some("Email"), None)
    });
    w.malomo
        .insert(Customer::new("not-an-email", Some("Bad"), None, None));
    w.nuvem.insert(seed("Spaced Out", "spaced out@example.com"));
    let run = w.once().await;
    assert_eq!(
        run.code, 0,
        "skipped records do not fail the run: {}",
        run.stderr
    );
    assert_eq!(run.count("malomo", "skipped"), 2);
    assert_eq!(run.count("store", "skipped"), 1);
    let errors = run.report.as_ref().unwrap()["errors"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors
        .iter()
        .any(|e| e["email"] == json!("not-an-email") && e["provider"] == json!("malomo")));
    assert!(errors
        .iter()
        .all(|e| e["error"].as_str().is_some_and(|m| !m.is_empty())));
    // The good records still went everywhere; the bad ones went nowhere.
    assert_eq!(
        w.nuvem_emails(),
        vec![
            "ann@example.com",
            "bob@example.com",
            "carla@example.com.br",
            "spaced out@example.com"
        ]
    );
    assert_eq!(w.malomo.customers().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nuvemshop_records_with_one_email_link_the_latest_and_report_the_other() {
    let w = World::new().await;
    let ids = w.nuvem.seed_document_examples();
    assert_eq!(ids.len(), 2);
    let run = w.once().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.count("store", "skipped"), 1);
    let m = w.malomo.by_email("john.doe@example.com");
    assert_eq!(m.len(), 1, "one person, one Malomo record");
    // 112 (updated 2013-04-08) is more recent than 101 (2013-03-11): its name wins.
    assert_eq!(m[0].first_name.as_deref(), Some("Zé"));
    assert_eq!(m[0].last_name.as_deref(), Some("Ninguém"));
    let errors = &run.report.as_ref().unwrap()["errors"];
    assert_eq!(errors[0]["remote_id"], json!("101"), "{errors}");
    // Neither Nuvemshop record was merged into the other.
    assert_eq!(w.nuvem.customer(101).unwrap()["name"], json!("John Doe"));
    assert_eq!(
        norm(w.nuvem.customer(112).unwrap()["email"].as_str().unwrap()),
        "john.doe@example.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_in_nuvemshop_is_seen_by_its_periodic_full_listing() {
    let mut w = seeded().await;
    assert_eq!(w.once().await.code, 0);
    let carla = w.nuvem.by_email("carla@example.com.br")[0]["id"]
        .as_u64()
        .unwrap();
    w.nuvem.remove(carla);

    // Incremental listings cannot see it: nothing is deleted.
    let run = w.once().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(w.malomo.by_email("carla@example.com.br").len(), 1);

    // When the full listing is due, the deletion reaches Malomo.
    w.extra_toml = "full_listing_hours = 0".into();
    let run = w.once().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.count("malomo", "deleted"), 1);
    assert!(w.malomo.by_email("carla@example.com.br").is_empty());
    assert_eq!(
        w.malomo_emails(),
        vec!["ann@example.com", "bob@example.com"]
    );
    // And Carla is not recreated in Nuvemshop.
    assert_eq!(w.nuvem_emails(), vec!["ann@example.com", "bob@example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delete_guard_holds_mass_deletes_until_allowed() {
    use custsync::sandbox::malomo::{self, Malomo};
    let mut w = World::new().await;
    let other = Malomo::start(malomo::Options::default()).await.unwrap();
    w.add_provider(format!(
        "[providers.ship2]\nkind = \"malomo\"\nbase_url = \"{}\"\napi_key = \"{}\"\nrate_limit = {{ per_second = 1000.0, burst = 100 }}\n",
        other.base_url(),
        other.api_key()
    ));
    let ids: Vec<String> = ["a@example.com", "b@example.com", "c@example.com"]
        .iter()
        .map(|e| w.malomo.insert(Customer::new(e, Some("X"), None, None)))
        .collect();
    assert_eq!(w.once().await.code, 0);
    assert_eq!(other.customers().len(), 3);

    // Two of three vanish from Malomo: 67% is above max_delete_fraction (0.5).
    w.malomo.remove(&ids[0]);
    w.malomo.remove(&ids[1]);
    for _ in 0..2 {
        let run = w.once().await;
        assert_eq!(run.code, 1, "held deletes fail the run: {}", run.stderr);
        assert_eq!(run.report.as_ref().unwrap()["held_deletes"], json!(2));
        assert_eq!(other.customers().len(), 3, "nothing deleted while held");
        assert_eq!(
            w.malomo.customers().len(),
            1,
            "and nothing recreated where they vanished"
        );
    }
    let run = w.run(&["--once", "--allow-deletes", "malomo"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.count("ship2", "deleted"), 2);
    assert_eq!(other.customers().len(), 1);
    // Released once: the next run is in step.
    w.clear_logs();
    other.log().clear();
    assert_eq!(w.once().await.code, 0);
    assert_eq!(w.writes() + other.log().writes().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_plan_shows_each_fields_old_and_new_value_in_text_and_json() {
    let w = seeded().await;
    assert_eq!(w.once().await.code, 0);
    let ann_m = w.malomo.by_email("ann@example.com")[0].id.clone();
    w.malomo
        .edit(&ann_m, |c| c.last_name = Some("Lee-Park".into()));
    w.clear_logs();

    let text = w.run(&["--dry-run"]).await;
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout.contains("\"Ann Lee\" -> \"Ann Lee-Park\""),
        "{}",
        text.stdout
    );
    let json = w.run(&["--dry-run", "--plan-format", "json"]).await;
    assert_eq!(json.code, 0, "{}", json.stderr);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("one JSON document");
    let ops = doc["plan"].as_array().expect("a plan");
    let update = ops
        .iter()
        .find(|op| op["provider"] == "store" && op["op"] == "update")
        .unwrap_or_else(|| panic!("an update of the store: {doc:#}"));
    let change = &update["changes"][0];
    assert_eq!(change["from"], json!("Ann Lee"), "{doc:#}");
    assert_eq!(change["to"], json!("Ann Lee-Park"), "{doc:#}");
    assert_eq!(w.writes(), 0, "a dry run writes nothing");
}

/// A record custsync created in Malomo is known by the text of the create's answer,
/// which is what Malomo's listing sends for it: the next listing takes nothing in for
/// it. Edited there afterwards, its text is another, and the edit is taken in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_custsync_wrote_is_known_by_its_answer_until_it_is_edited() {
    use custsync::config::StorePath;
    use custsync::model::ProviderName;
    use custsync::store::Store;

    let w = seeded().await;
    assert_eq!(w.once().await.code, 0);
    let malomo = ProviderName("malomo".into());
    let keyed = |n: usize| {
        let path = StorePath::File(w.db_path());
        let malomo = malomo.clone();
        async move {
            let store = Store::open(&path, None).await.unwrap();
            let keys = store.listed_keys(&malomo).await.unwrap();
            store.close().await;
            assert_eq!(keys.len(), n, "{keys:?}");
        }
    };
    // Ann and Bob as listed, Carla as her create was answered.
    keyed(3).await;

    w.clear_logs();
    assert_eq!(w.once().await.code, 0);
    assert_eq!(w.writes(), 0);
    keyed(3).await;

    let carla = w.malomo.by_email("carla@example.com.br")[0].id.clone();
    w.malomo
        .edit(&carla, |c| c.phone_number = Some("555-0199".into()));
    let run = w.once().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let n = &w.nuvem.by_email("carla@example.com.br")[0];
    assert_eq!(n["phone"], json!("555-0199"));
}

/// A record custsync created in Nuvemshop (whose answers are not keyed) and deleted
/// there before any listing keyed it: the listing returns every record it knew by key,
/// so only the links without a key are read for what vanished, and that one is among
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_deleted_before_any_listing_keyed_it_is_seen_as_deleted() {
    let mut w = seeded().await;
    w.extra_toml = "full_listing_hours = 0".into();
    assert_eq!(w.once().await.code, 0);
    let bob = w.nuvem.by_email("bob@example.com")[0]["id"]
        .as_u64()
        .unwrap();
    w.nuvem.remove(bob);

    let run = w.once().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.count("malomo", "deleted"), 1);
    assert!(w.malomo.by_email("bob@example.com").is_empty());
    assert_eq!(
        w.nuvem_emails(),
        vec!["ann@example.com", "carla@example.com.br"]
    );
}

/// Partial.ly lists an erased customer (`gdpr_remove` of one with payment history) with
/// its id and no email: a deletion, though the listing returned that id, which then
/// reaches Malomo. Ann erased there is deleted from Malomo; the others stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_erased_in_partially_is_deleted_where_it_can_be() {
    use custsync::sandbox::partially::{self, Partially};

    let mut w = seeded().await;
    let plans = Partially::start(partially::Options::default())
        .await
        .expect("start partially");
    w.add_provider(format!(
        "[providers.plans]\nkind = \"partially\"\nbase_url = \"{}\"\napi_key = \"{}\"\nrate_limit = {{ per_second = 1000.0, burst = 100 }}\n",
        plans.base_url(),
        plans.api_key()
    ));
    plans.insert(partially::Customer::new(
        "dana@example.com",
        Some("Dana"),
        None,
    ));
    assert_eq!(w.once().await.code, 0);
    assert_eq!(plans.customers().len(), 4);
    assert_eq!(w.malomo.by_email("ann@example.com").len(), 1);

    let ann = plans.by_email("ann@example.com")[0].id.clone();
    plans.edit(&ann, |c| {
        c.email = None;
        c.first_name = None;
        c.last_name = None;
    });
    let run = w.once().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.count("malomo", "deleted"), 1);
    assert!(w.malomo.by_email("ann@example.com").is_empty());
    assert_eq!(
        w.malomo_emails(),
        vec![
            "bob@example.com",
            "carla@example.com.br",
            "dana@example.com"
        ]
    );
}
