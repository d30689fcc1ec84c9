//! All five providers at once, reconciled by the real binary over HTTP.

#[path = "common/five.rs"]
mod five;

use custsync::sandbox::{ecwid, malomo, nuvemshop, partially};
use five::Five;
use serde_json::json;

const NAMES: [&str; 5] = ["store", "storefront", "shipping", "plans", "email"];

fn assert_everywhere(f: &Five, email: &str) {
    for (name, held) in NAMES.iter().zip(f.emails()) {
        assert_eq!(
            held.iter().filter(|e| *e == email).count(),
            1,
            "{email} once in {name}: {held:?}"
        );
    }
}

five::both! {
    async fn a_person_created_in_any_listable_provider_appears_everywhere(b: Backend) {
        let f = Five::start_on(b).await;
        f.sb.nuvemshop
            .insert(nuvemshop::seed("Nora Store", "nora@example.com"));
        f.sb.ecwid.insert(ecwid::Customer::new(
            "eddie@example.com",
            Some("Eddie"),
            Some("Front"),
        ));
        f.sb.malomo.insert(malomo::Customer::new(
            "mo@example.com",
            Some("Mo"),
            Some("Ship"),
            Some("555-0101"),
        ));
        f.sb.partially.insert(partially::Customer::new(
            "pat@example.com",
            Some("Pat"),
            Some("Plan"),
        ));
        let run = f.once().await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        for email in [
            "nora@example.com",
            "eddie@example.com",
            "mo@example.com",
            "pat@example.com",
        ] {
            assert_everywhere(&f, email);
        }
        // Sendwithus keeps names in data.
        let mo = f.sb.sendwithus.by_email("mo@example.com").unwrap();
        assert_eq!(mo.data["first_name"], json!("Mo"));
        assert_eq!(mo.data["last_name"], json!("Ship"));
        assert_eq!(run.count("email", "created"), 4);

        f.sb.clear_logs();
        let again = f.once().await;
        assert_eq!(again.code, 0, "{}", again.stderr);
        assert_eq!(
            f.sb.writes(),
            0,
            "a second run writes nothing: {:#?}",
            f.write_lines()
        );
    }
}

five::both! {
    /// What custsync keeps of a write to Ecwid (whose answers carry no record) is what
    /// Ecwid's listing then shows, its default for `acceptMarketing` and its spelling of
    /// a field the write left alone included: the next run finds nothing changed, so it
    /// merges and plans nobody, not just writes nothing.
    async fn a_record_custsync_updated_in_ecwid_lists_as_it_was_kept(b: Backend) {
        let f = Five::start_on(b).await;
        // Ecwid spells the email its own way: the update leaves it so.
        let mut eddie = ecwid::Customer::new("Eddie@Example.com", Some("Eddie"), Some("Front"));
        eddie.accept_marketing = Some(false);
        f.sb.ecwid.insert(eddie);
        f.sb.malomo.insert(malomo::Customer::new(
            "eddie@example.com",
            Some("Eddie"),
            Some("Front"),
            Some("555-0101"),
        ));
        let run = f.once().await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let held = &f.sb.ecwid.by_email("eddie@example.com")[0];
        assert_eq!(held.billing_person["phone"], json!("555-0101"));
        assert_eq!(held.email, "Eddie@Example.com");
        assert_eq!(held.accept_marketing, Some(false));

        f.sb.clear_logs();
        let again = f.once().await;
        assert_eq!(again.code, 0, "{}", again.stderr);
        assert_eq!(f.sb.writes(), 0, "{:#?}", f.write_lines());
        let planned = &again.report.as_ref().unwrap()["planned_customers"];
        assert_eq!(planned, &json!(0), "{}", again.why());
    }
}

five::both! {
    async fn an_edit_in_partially_reaches_every_other_provider(b: Backend) {
        let f = Five::start_on(b).await;
        let id = f.sb.partially.insert(partially::Customer::new(
            "pat@example.com",
            Some("Pat"),
            Some("Plan"),
        ));
        assert_eq!(f.once().await.code, 0);
        f.sb.partially.edit(&id, |c| {
            c.last_name = Some("Planner".into());
            c.phone = Some("+1 212 555 1212".into());
        });
        let run = f.once().await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(
            f.sb.nuvemshop.by_email("pat@example.com")[0]["name"],
            json!("Pat Planner")
        );
        assert_eq!(
            f.sb.nuvemshop.by_email("pat@example.com")[0]["phone"],
            json!("+1 212 555 1212")
        );
        assert_eq!(
            f.sb.ecwid.by_email("pat@example.com")[0].billing_person["lastName"],
            json!("Planner")
        );
        let m = &f.sb.malomo.by_email("pat@example.com")[0];
        assert_eq!(m.last_name.as_deref(), Some("Planner"));
        assert_eq!(m.phone_number.as_deref(), Some("+1 212 555 1212"));
        assert_eq!(
            f.sb.sendwithus.by_email("pat@example.com").unwrap().data["last_name"],
            json!("Planner")
        );

        f.sb.clear_logs();
        assert_eq!(f.once().await.code, 0);
        assert_eq!(f.sb.writes(), 0, "{:#?}", f.write_lines());
    }
}

five::both! {
    async fn the_documents_examples_settle_with_zero_writes_on_the_second_run(b: Backend) {
        let f = Five::start_on(b).await;
        f.sb.seed_document_examples();
        let run = f.once().await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        // Sendwithus already knew customer@example.com (from Ecwid's document) with a city:
        // the upsert keeps it, and custsync takes it in rather than erasing it.
        let swu = f.sb.sendwithus.by_email("customer@example.com").unwrap();
        assert_eq!(swu.data["city"], json!("San Francisco"), "{:?}", swu.data);
        let store = &f.sb.nuvemshop.by_email("customer@example.com")[0];
        assert_eq!(store["extra"]["city"], json!("San Francisco"), "{store}");
        f.sb.clear_logs();
        let again = f.once().await;
        assert_eq!(again.code, 0, "{}", again.stderr);
        assert_eq!(f.sb.writes(), 0, "{:#?}", f.write_lines());
    }
}

five::both! {
    async fn an_ecwid_409_links_the_existing_record_instead_of_duplicating(b: Backend) {
        // Ecwid holds Ivy already, but its listing does not show her yet; Malomo has her.
        let sb = custsync::sandbox::all::Sandboxes::start_with(custsync::sandbox::all::Options {
            ecwid: ecwid::Options {
                unlisted: vec!["ivy@example.com".into()],
                ..ecwid::Options::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
        let f = Five::with(sb).on(b).await;
        let ivy =
            f.sb.ecwid
                .insert(ecwid::Customer::new("ivy@example.com", Some("Ivy"), None));
        f.sb.malomo.insert(malomo::Customer::new(
            "ivy@example.com",
            Some("Ivy"),
            Some("Green"),
            None,
        ));
        let run = f.once().await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let held = f.sb.ecwid.by_email("ivy@example.com");
        assert_eq!(held.len(), 1, "no second Ecwid record: {held:?}");
        assert_eq!(held[0].id, ivy);
        // The POST was refused with 409 and the existing record was brought up to date.
        assert_eq!(
            f.sb.ecwid.log().with_status(409),
            1,
            "{:#?}",
            f.sb.ecwid.log().all()
        );
        assert_eq!(held[0].billing_person["lastName"], json!("Green"));
        // The index catches up: the listing now shows her, linked, in step.
        f.sb.ecwid.set_unlisted(Vec::new());
        f.sb.clear_logs();
        assert_eq!(f.once().await.code, 0);
        assert_eq!(f.sb.writes(), 0, "{:#?}", f.write_lines());
    }
}

five::both! {
    async fn an_email_change_moves_the_person_everywhere_and_in_sendwithus(b: Backend) {
        let f = Five::start_on(b).await;
        let id = f.sb.malomo.insert(malomo::Customer::new(
            "old@example.com",
            Some("Olga"),
            Some("Moves"),
            None,
        ));
        assert_eq!(f.once().await.code, 0);
        f.sb.malomo
            .edit(&id, |c| c.email = Some("new@example.com".into()));
        let run = f.once().await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        for (name, held) in NAMES.iter().zip(f.emails()) {
            assert_eq!(held, vec!["new@example.com".to_string()], "{name}");
        }
        f.sb.clear_logs();
        assert_eq!(f.once().await.code, 0);
        assert_eq!(f.sb.writes(), 0, "{:#?}", f.write_lines());
    }
}

five::both! {
    async fn forget_erases_a_person_everywhere_and_keeps_them_out(b: Backend) {
        let f = Five::start_on(b).await;
        f.sb.malomo.insert(malomo::Customer::new(
            "gone@example.com",
            Some("Gina"),
            Some("Gone"),
            Some("555"),
        ));
        f.sb.malomo.insert(malomo::Customer::new(
            "stay@example.com",
            Some("Stan"),
            Some("Stay"),
            None,
        ));
        assert_eq!(f.once().await.code, 0);
        let run = f.run(&["forget", "GONE@example.com"]).await;
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        assert!(
            run.stdout
                .contains("store (nuvemshop): holds 1 record(s) but its API cannot delete"),
            "{}",
            run.stdout
        );
        let [store, storefront, shipping, plans, email] = f.emails();
        assert!(
            store.contains(&"gone@example.com".to_string()),
            "Nuvemshop cannot delete"
        );
        for held in [storefront, shipping, plans, email] {
            assert!(!held.contains(&"gone@example.com".to_string()), "{held:?}");
            assert!(held.contains(&"stay@example.com".to_string()), "{held:?}");
        }
        // The leftover Nuvemshop record is not imported again, and nothing is recreated.
        f.sb.clear_logs();
        let again = f.once().await;
        assert_eq!(again.code, 0, "{}", again.stderr);
        assert_eq!(f.sb.writes(), 0, "{:#?}", f.write_lines());
        // The database keeps no trace of the address or the name (SQLite: the file's
        // bytes; PostgreSQL: every row of every table as text).
        let text = f.store_text().await;
        assert!(
            !text.contains("gone@example.com") && !text.contains("Gina"),
            "personal data left in the database"
        );
        let audit = f.run(&["audit", "--action", "forget"]).await;
        assert_eq!(
            audit.stdout.lines().count(),
            1,
            "{}\n{}",
            audit.stdout,
            audit.stderr
        );
    }
}

five::both! {
    async fn forget_with_a_bad_email_is_a_usage_error(b: Backend) {
        let f = Five::start_on(b).await;
        let run = f.run(&["forget", "not an email"]).await;
        assert_eq!(run.code, 2);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
}

five::both! {
    async fn activity_gathers_malomo_events_and_sendwithus_logs_newest_first(b: Backend) {
        let f = Five::start_on(b).await;
        let id = f.sb.malomo.insert(malomo::Customer::new(
            "act@example.com",
            Some("Ada"),
            None,
            None,
        ));
        assert_eq!(f.once().await.code, 0);
        f.sb.malomo.add_event(
            &id,
            json!({"created_at": "2019-01-30T13:30:00Z", "id": "1a3c1090-efd1-11eb-9a03-0242ac130003", "label": "Order #1000 fulfilled",
                   "type": "ShopifyOrderFulfilled", "timestamp": 1548855000, "updated_at": "2019-01-30T13:30:00Z"}),
        );
        f.sb.sendwithus.edit("act@example.com", |c| {
            c.logs.push(json!({"object": "log", "id": "log_1", "created": 1234567890, "status": "opened", "email_name": "Order Confirmation"}))
        });
        // `activity` reads the store; `--refresh` reads the person's streams first.
        f.sb.clear_logs();
        let run = f
            .run(&["activity", "act@example.com", "--refresh", "--json"])
            .await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(f.sb.writes(), 0, "{:#?}", f.write_lines());
        let lines: Vec<serde_json::Value> = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{}", run.stdout);
        assert_eq!(lines[0]["provider"], json!("shipping"));
        assert_eq!(lines[0]["label"], json!("Order #1000 fulfilled"));
        assert_eq!(lines[1]["provider"], json!("email"));
        assert_eq!(lines[1]["type"], json!("opened"));
        assert_eq!(lines[1]["label"], json!("opened: Order Confirmation"));
    }
}
