//! Issue 8, "never delete or duplicate a customer by mistake", told as stories against
//! the five emulators and the real binary: one person in two spellings of one email,
//! a record that takes another customer's email, a key a provider never sends, a value
//! a provider's field cannot hold, and a value too large to sync.

#[path = "common/five.rs"]
mod five;

use custsync::model::Email;
use custsync::sandbox::{ecwid, malomo, nuvemshop, partially};
use five::{labels, Five};
use serde_json::json;

/// The emails every provider holds, as custsync compares them, in label order.
fn identities(f: &Five) -> Vec<(&'static str, Vec<String>)> {
    let sb = &f.sb;
    let held: [Vec<String>; 5] = [
        sb.nuvemshop
            .customers()
            .iter()
            .filter_map(|c| c["email"].as_str().map(str::to_string))
            .collect(),
        sb.ecwid.customers().into_iter().map(|c| c.email).collect(),
        sb.malomo
            .customers()
            .into_iter()
            .filter_map(|c| c.email)
            .collect(),
        sb.partially
            .customers()
            .into_iter()
            .filter_map(|c| c.email)
            .collect(),
        sb.sendwithus
            .customers()
            .into_iter()
            .map(|c| c.email)
            .collect(),
    ];
    labels()
        .into_iter()
        .zip(held)
        .map(|(label, emails)| {
            let mut ids: Vec<String> = emails
                .iter()
                .map(|e| Email::parse(e).map(|e| e.to_string()).unwrap_or(e.clone()))
                .collect();
            ids.sort();
            (label, ids)
        })
        .collect()
}

fn skips(run: &five::Run, reason: &str) -> Vec<serde_json::Value> {
    run.report.as_ref().expect("a report")["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["error"].as_str().is_some_and(|m| m.contains(reason)))
        .collect()
}

five::both! {
    async fn nfc_and_nfd_or_unicode_and_punycode_are_one_person_everywhere(b: Backend) {
        let f = Five::start_on(b).await;
        let sb = &f.sb;
        sb.nuvemshop
            .insert(nuvemshop::seed("José Silva", "jos\u{e9}@example.com"));
        sb.ecwid.insert(ecwid::Customer::new(
            "jose\u{301}@example.com",
            Some("José"),
            Some("Silva"),
        ));
        sb.malomo.insert(malomo::Customer::new(
            "ann@ex\u{e4}mple.com",
            Some("Ann"),
            Some("Lee"),
            None,
        ));
        sb.partially.insert(partially::Customer::new(
            "ann@xn--exmple-cua.com",
            Some("Ann"),
            Some("Lee"),
        ));
        let run = f.once().await;
        assert_eq!(run.code, 0, "{}", run.why());
        let jose = Email::parse("jos\u{e9}@example.com").unwrap().to_string();
        let ann = "ann@xn--exmple-cua.com".to_string();
        let mut both = vec![ann, jose];
        both.sort();
        for (label, ids) in identities(&f) {
            assert_eq!(ids, both, "{label} holds each person once");
        }
        assert_eq!(run.total("skipped"), 0, "{}", run.why());

        // Two spellings of one email are no edit: nothing to write.
        f.sb.clear_logs();
        let again = f.once().await;
        assert_eq!(again.code, 0, "{}", again.why());
        assert_eq!(f.writes(), 0, "{:#?}", f.write_lines());
    }
}

five::both! {
    async fn a_record_taking_another_customers_email_is_skipped_and_nobody_is_deleted(b: Backend) {
        let f = Five::start_on(b).await;
        let ann = f.sb.malomo.insert(malomo::Customer::new(
            "ann@example.com",
            Some("Ann"),
            Some("Lee"),
            None,
        ));
        f.sb.malomo.insert(malomo::Customer::new(
            "bob@example.com",
            Some("Bob"),
            Some("Ray"),
            None,
        ));
        let first = f.once().await;
        assert_eq!(first.code, 0, "{}", first.why());
        let everyone = vec!["ann@example.com".to_string(), "bob@example.com".to_string()];
        for (label, ids) in identities(&f) {
            assert_eq!(ids, everyone, "{label}");
        }

        // Ann's Malomo record now has Bob's email (and a new name).
        f.sb.malomo.edit(&ann, |c| {
            c.email = Some("BOB@example.com".into());
            c.first_name = Some("Annie".into());
        });
        f.sb.clear_logs();
        for _ in 0..2 {
            let run = f.once().await;
            assert_eq!(run.code, 0, "a skip is not a failure: {}", run.why());
            let skipped = skips(&run, "email belongs to another customer");
            assert_eq!(skipped.len(), 1, "{}", run.why());
            assert_eq!(skipped[0]["provider"], json!("shipping"));
            assert_eq!(skipped[0]["email"], json!("BOB@example.com"));
            assert_eq!(skipped[0]["remote_id"], json!(ann));
            assert_eq!(run.count("shipping", "skipped"), 1);
            assert_eq!(run.total("deleted"), 0);
            assert_eq!(f.writes(), 0, "nothing pushed: {:#?}", f.write_lines());
        }
        for (label, ids) in identities(&f) {
            let want = if label == "shipping" {
                vec!["bob@example.com".to_string(); 2]
            } else {
                everyone.clone()
            };
            assert_eq!(ids, want, "{label}: nobody deleted, nobody merged");
        }

        // Once the record differs again, it is Ann's change like any other.
        f.sb.malomo
            .edit(&ann, |c| c.email = Some("ann.lee@example.com".into()));
        let run = f.once().await;
        assert_eq!(run.code, 0, "{}", run.why());
        assert!(skips(&run, "another customer").is_empty(), "{}", run.why());
        let moved = vec![
            "ann.lee@example.com".to_string(),
            "bob@example.com".to_string(),
        ];
        for (label, ids) in identities(&f) {
            assert_eq!(ids, moved, "{label}");
        }
        let annie = f.sb.sendwithus.by_email("ann.lee@example.com").unwrap();
        assert_eq!(annie.data["first_name"], json!("Annie"));
    }
}

five::both! {
    async fn a_language_partially_never_sends_is_neither_rewritten_nor_erased(b: Backend) {
        let f = Five::start_on(b).await;
        let mut eddie = ecwid::Customer::new("eddie@example.com", Some("Eddie"), Some("Front"));
        eddie.lang = Some("de".into());
        f.sb.ecwid.insert(eddie);
        let run = f.once().await;
        assert_eq!(run.code, 0, "{}", run.why());
        let plans = &f.sb.partially.by_email("eddie@example.com")[0];
        assert_eq!(plans.language.as_deref(), Some("de"));
        for _ in 0..2 {
            f.sb.clear_logs();
            let again = f.once().await;
            assert_eq!(again.code, 0, "{}", again.why());
            assert_eq!(f.writes(), 0, "{:#?}", f.write_lines());
        }
        let front = &f.sb.ecwid.by_email("eddie@example.com")[0];
        assert_eq!(front.lang.as_deref(), Some("de"));
        let email = f.sb.sendwithus.by_email("eddie@example.com").unwrap();
        assert_eq!(email.locale, "de");
    }
}

five::both! {
    async fn a_region_longer_than_two_letters_is_never_sent_to_partially(b: Backend) {
        let f = Five::start_on(b).await;
        let mut nora = nuvemshop::seed("Nora Store", "nora@example.com");
        nora["billing_province"] = json!("Oregon");
        nora["billing_city"] = json!("Salem");
        nora["billing_country"] = json!("US");
        f.sb.nuvemshop.insert(nora);
        let run = f.once().await;
        assert_eq!(run.code, 0, "{}", run.why());
        let plans = &f.sb.partially.by_email("nora@example.com")[0];
        assert_eq!(plans.shipto_city.as_deref(), Some("Salem"));
        assert_eq!(plans.shipto_state, None);
        assert!(
            f.write_lines()
                .iter()
                .all(|w| !w.contains("Oregon") || !w.starts_with("plans")),
            "{:#?}",
            f.write_lines()
        );
        f.sb.clear_logs();
        let again = f.once().await;
        assert_eq!(again.code, 0, "{}", again.why());
        assert_eq!(f.writes(), 0, "{:#?}", f.write_lines());
    }
}

five::both! {
    async fn a_value_over_64_kib_skips_its_record_and_is_written_nowhere(b: Backend) {
        let f = Five::start_on(b).await;
        let mut big = nuvemshop::seed("Big Note", "big@example.com");
        big["note"] = json!("n".repeat(64 * 1024 + 1));
        f.sb.nuvemshop.insert(big);
        f.sb.nuvemshop
            .insert(nuvemshop::seed("Small Note", "small@example.com"));
        let run = f.once().await;
        assert_eq!(run.code, 0, "{}", run.why());
        assert_eq!(run.count("store", "skipped"), 1, "{}", run.why());
        let skipped = skips(&run, "64 KiB");
        assert_eq!(skipped.len(), 1, "{}", run.why());
        assert_eq!(skipped[0]["email"], json!("big@example.com"));
        for (label, ids) in identities(&f) {
            let mut want = vec!["small@example.com".to_string()];
            if label == "store" {
                want.insert(0, "big@example.com".into());
            }
            assert_eq!(ids, want, "{label}");
        }
        assert!(f.write_lines().iter().all(|w| !w.contains("nnnnnnnn")));
    }
}

five::both! {
    async fn a_person_whose_record_was_skipped_is_not_created_again_in_that_provider(b: Backend) {
        let f = Five::start_on(b).await;
        let mut big = nuvemshop::seed("Big Note", "big@example.com");
        big["note"] = json!("n".repeat(64 * 1024 + 1));
        f.sb.nuvemshop.insert(big);
        // The same person, readable, in another provider.
        f.seed_in(2, "big@example.com", 7);
        let run = f.once().await;
        assert_eq!(run.count("store", "skipped"), 1, "{}", run.why());
        let held = f.holdings();
        assert_eq!(
            held["store"].get("big@example.com"),
            Some(&1),
            "Nuvemshop holds the person already: no second record\n{:#?}",
            f.write_lines()
        );
        assert_eq!(held["storefront"].get("big@example.com"), Some(&1));
    }
}
