//! Activity and groups (DESIGN 14), through the real binary against the emulators:
//! Malomo events and Sendwithus logs stored as one timeline, read incrementally and
//! within the budget, `[[groups]]` memberships kept in step with no call when nothing
//! changed, and `forget` erasing the person's activity.

#[path = "common/five.rs"]
mod five;

use std::collections::BTreeSet;

use custsync::sandbox::all::Sandboxes;
use custsync::sandbox::sendwithus::Sendwithus as Swu;
use custsync::sandbox::{ecwid, malomo, nuvemshop, partially, sendwithus, LoggedRequest};
use five::{Backend, Five};
use serde_json::{json, Value};

/// The five emulators, Malomo paging its events two at a time (and, with
/// `link_header`, sending a `Link` rel="next" too).
async fn world(b: Backend, link_header: bool) -> Five {
    let sb = Sandboxes {
        nuvemshop: nuvemshop::Nuvemshop::start(nuvemshop::Options::default())
            .await
            .unwrap(),
        ecwid: ecwid::Ecwid::start(ecwid::Options::default())
            .await
            .unwrap(),
        malomo: malomo::Malomo::start(malomo::Options {
            page_size: 2,
            link_header,
            ..malomo::Options::default()
        })
        .await
        .unwrap(),
        partially: partially::Partially::start(partially::Options::default())
            .await
            .unwrap(),
        sendwithus: sendwithus::Sendwithus::start(sendwithus::Options::default())
            .await
            .unwrap(),
    };
    let mut f = Five::with(sb).on(b).await;
    f.sync = "\n[activity]\nenabled = true\n".into();
    f
}

fn event(n: usize) -> Value {
    malomo::Malomo::document_event(
        &format!("ev-{n}"),
        &format!("Order #{n} fulfilled"),
        1_548_855_000 + n as i64 * 60,
    )
}

/// Requests for customers' Malomo events, as `query` (None for the first page).
fn event_reads(f: &Five) -> Vec<LoggedRequest> {
    f.sb.malomo
        .log()
        .all()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/events"))
        .collect()
}

fn log_reads(f: &Five) -> usize {
    f.sb.sendwithus
        .log()
        .all()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/logs"))
        .count()
}

fn group_calls(f: &Five) -> Vec<String> {
    f.sb.sendwithus
        .log()
        .all()
        .iter()
        .filter(|r| r.path.contains("/groups/"))
        .map(|r| {
            let path = percent_encoding::percent_decode_str(&r.path).decode_utf8_lossy();
            format!("{} {path}", r.method)
        })
        .collect()
}

/// `custsync activity EMAIL --json`, parsed.
async fn timeline(f: &Five, email: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["activity", email, "--json"];
    args.extend_from_slice(extra);
    let run = f.run(&args).await;
    assert_eq!(run.code, 0, "{}", run.why());
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn ids(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["id"].as_str().unwrap_or("?").to_string())
        .collect()
}

async fn events_are_read_once_and_no_page_twice(b: Backend, link_header: bool) {
    let f = world(b, link_header).await;
    let ada = f.sb.malomo.insert(malomo::Customer::new(
        "ada@example.com",
        Some("Ada"),
        None,
        None,
    ));
    for n in 1..=5 {
        f.sb.malomo.add_event(&ada, event(n));
    }
    let first = f.once().await;
    assert_eq!(first.code, 0, "{}", first.why());
    let report = first.report.as_ref().unwrap();
    assert_eq!(
        report["activity"]["events_fetched"],
        json!(5),
        "{}",
        first.why()
    );
    // Three pages of events, then the empty page that ends them.
    let reads = event_reads(&f);
    assert_eq!(reads.len(), 4, "{reads:#?}");
    let seen_pages: BTreeSet<Option<String>> =
        reads.iter().take(3).map(|r| r.query.clone()).collect();

    let lines = timeline(&f, "ada@example.com", &[]).await;
    assert_eq!(
        ids(&lines),
        ["ev-5", "ev-4", "ev-3", "ev-2", "ev-1"],
        "newest first"
    );
    assert_eq!(lines[0]["provider"], json!("shipping"));
    assert_eq!(lines[0]["type"], json!("ShopifyOrderFulfilled"));
    assert_eq!(lines[0]["label"], json!("Order #5 fulfilled"));
    assert_eq!(lines[0]["occurred_at"], json!("2019-01-30T13:35:00Z"));

    // New events and a Sendwithus log; the next cycles read only what is new.
    f.sb.malomo.add_event(&ada, event(6));
    f.sb.malomo.add_event(&ada, event(7));
    f.sb.sendwithus.add_log(
        "ada@example.com",
        Swu::document_log("log_1", 1_548_855_000 + 30, "opened", "Order Confirmation"),
    );
    f.sb.clear_logs();
    for cycle in 0..3 {
        let run = f.once().await;
        assert_eq!(run.code, 0, "{}", run.why());
        let reads = event_reads(&f);
        for r in &reads {
            assert!(
                !seen_pages.contains(&r.query),
                "cycle {cycle} read a page already read: {r:?}"
            );
        }
        let pages_with_events = if cycle == 0 { 1 } else { 0 };
        assert_eq!(
            reads.len(),
            pages_with_events + 1,
            "cycle {cycle}: {reads:#?}"
        );
        assert_eq!(log_reads(&f), 1, "logs once per customer per cycle");
        assert_eq!(f.sb.writes(), 0, "{:#?}", f.write_lines());
        f.sb.clear_logs();
    }
    let lines = timeline(&f, "ada@example.com", &[]).await;
    assert_eq!(
        ids(&lines),
        ["ev-7", "ev-6", "ev-5", "ev-4", "ev-3", "ev-2", "ev-1", "log_1"],
        "each event once, every source, newest first"
    );
    let log = lines.last().unwrap();
    assert_eq!(log["provider"], json!("email"));
    assert_eq!(log["type"], json!("opened"));
    assert_eq!(log["label"], json!("opened: Order Confirmation"));

    // The table on a terminal shows the same timeline.
    let table = f.run(&["activity", "ada@example.com"]).await;
    assert_eq!(table.code, 0, "{}", table.why());
    assert!(
        table.stdout.contains("Order #7 fulfilled"),
        "{}",
        table.stdout
    );
    assert_eq!(table.stdout.lines().count(), 9, "{}", table.stdout);

    // `status` says how far behind polling is: every customer with a stream was read.
    let status = f.run(&["status", "--json"]).await;
    assert_eq!(status.code, 0, "{}", status.why());
    let doc: Value = serde_json::from_str(&status.stdout).expect("status --json");
    let lag = &doc["tenants"]["default"]["activity"];
    assert!(lag["customers"].as_u64().unwrap_or(0) > 0, "{doc:#}");
    assert_eq!(lag["never_refreshed"], json!(0), "{doc:#}");
}

five::both! {
    async fn events_appear_once_each_and_no_page_is_read_twice(b: Backend) {
        events_are_read_once_and_no_page_twice(b, false).await;
    }
}

five::both! {
    async fn events_paged_by_link_header_are_read_once_too(b: Backend) {
        events_are_read_once_and_no_page_twice(b, true).await;
    }
}

five::both! {
    async fn a_budget_bounds_the_reads_of_a_cycle_least_recently_read_first(b: Backend) {
        let mut f = world(b, false).await;
        f.sync = "\n[activity]\nenabled = true\ncustomers_per_cycle = 3\n".into();
        let seeded = f.seed_malomo(7);
        let mut read: Vec<BTreeSet<String>> = Vec::new();
        for _ in 0..3 {
            f.sb.clear_logs();
            let run = f.once().await;
            assert_eq!(run.code, 0, "{}", run.why());
            let reads = event_reads(&f);
            assert!(reads.len() <= 3, "{reads:#?}");
            assert!(log_reads(&f) <= 3);
            let activity = &run.report.as_ref().unwrap()["activity"];
            assert_eq!(activity["customers"], json!(3));
            // How far behind: 7 customers, 3 more read each cycle.
            let never = 7u64.saturating_sub(3 * (read.len() as u64 + 1));
            assert_eq!(activity["never_read"], json!(never), "{activity}");
            read.push(reads.into_iter().map(|r| r.path).collect());
        }
        assert_eq!(read[0].len(), 3);
        assert!(read[0].is_disjoint(&read[1]), "{read:?}");
        // After two cycles one customer was never read: the third cycle reads it first.
        let all: BTreeSet<String> = read[0].union(&read[1]).cloned().collect();
        assert_eq!(all.len(), 6);
        assert_eq!(read[2].difference(&all).count(), 1, "{read:?}");
        assert_eq!(seeded.len(), 7);
    }
}

five::both! {
    async fn marketing_consent_moves_a_customer_in_and_out_of_the_mapped_group(b: Backend) {
        let mut f = world(b, false).await;
        f.sync = "\n[[groups]]\nprovider = \"email\"\ngroup_id = \"grp_marketing\"\nwhen = { accepts_marketing = true }\n".into();
        let mut quiet = ecwid::Customer::new("quiet@example.com", Some("Quinn"), None);
        quiet.accept_marketing = Some(false);
        let quiet = f.sb.ecwid.insert(quiet);
        let mut keen = ecwid::Customer::new("keen@example.com", Some("Kim"), None);
        keen.accept_marketing = Some(true);
        f.sb.ecwid.insert(keen);

        let first = f.once().await;
        assert_eq!(first.code, 0, "{}", first.why());
        assert_eq!(
            f.sb.sendwithus.groups("keen@example.com"),
            ["grp_marketing"]
        );
        assert!(f.sb.sendwithus.groups("quiet@example.com").is_empty());
        assert_eq!(first.report.as_ref().unwrap()["groups"]["added"], json!(1));
        // A group custsync does not own is never touched.
        f.sb.sendwithus
            .edit("quiet@example.com", |c| c.groups.push("grp_other".into()));

        f.sb.clear_logs();
        let calm = f.once().await;
        assert_eq!(calm.code, 0, "{}", calm.why());
        assert!(group_calls(&f).is_empty(), "{:#?}", group_calls(&f));
        assert_eq!(f.sb.writes(), 0, "{:#?}", f.write_lines());

        f.sb.ecwid.edit(quiet, |c| c.accept_marketing = Some(true));
        f.sb.clear_logs();
        let joined = f.once().await;
        assert_eq!(joined.code, 0, "{}", joined.why());
        assert_eq!(
            group_calls(&f),
            ["POST /customers/quiet@example.com/groups/grp_marketing"]
        );
        assert_eq!(
            f.sb.sendwithus.groups("quiet@example.com"),
            ["grp_other", "grp_marketing"]
        );

        f.sb.clear_logs();
        assert_eq!(f.once().await.code, 0);
        assert!(group_calls(&f).is_empty(), "{:#?}", group_calls(&f));

        f.sb.ecwid.edit(quiet, |c| c.accept_marketing = Some(false));
        f.sb.clear_logs();
        let left = f.once().await;
        assert_eq!(left.code, 0, "{}", left.why());
        assert_eq!(
            group_calls(&f),
            ["DELETE /customers/quiet@example.com/groups/grp_marketing"]
        );
        assert_eq!(left.report.as_ref().unwrap()["groups"]["removed"], json!(1));
        assert_eq!(f.sb.sendwithus.groups("quiet@example.com"), ["grp_other"]);
        assert_eq!(
            f.sb.sendwithus.groups("keen@example.com"),
            ["grp_marketing"]
        );

        f.sb.clear_logs();
        assert_eq!(f.once().await.code, 0);
        assert!(group_calls(&f).is_empty(), "{:#?}", group_calls(&f));
    }
}

five::both! {
    async fn a_member_set_outside_custsync_is_removed_when_the_rule_does_not_hold(b: Backend) {
        let mut f = world(b, false).await;
        f.sync = "\n[[groups]]\nprovider = \"email\"\ngroup_id = \"grp_vip\"\nwhen = { attributes.tier = \"gold\" }\n".into();
        f.sb.malomo.insert(malomo::Customer::new(
            "sam@example.com",
            Some("Sam"),
            None,
            None,
        ));
        // Sendwithus already has Sam, in the owned group and another.
        let mut sam = sendwithus::Customer::new("sam@example.com", Some("Sam"), None);
        sam.groups = vec!["grp_vip".into(), "grp_news".into()];
        f.sb.sendwithus.insert(sam);
        let run = f.once().await;
        assert_eq!(run.code, 0, "{}", run.why());
        assert_eq!(f.sb.sendwithus.groups("sam@example.com"), ["grp_news"]);
        assert_eq!(
            group_calls(&f),
            ["DELETE /customers/sam@example.com/groups/grp_vip"]
        );
    }
}

five::both! {
    async fn forget_removes_the_persons_activity(b: Backend) {
        let f = world(b, false).await;
        let gina = f.sb.malomo.insert(malomo::Customer::new(
            "gina@example.com",
            Some("Gina"),
            None,
            None,
        ));
        f.sb.malomo.add_event(
            &gina,
            malomo::Malomo::document_event("ev-gina", "Parcel for Gina delivered", 1_548_855_000),
        );
        assert_eq!(f.once().await.code, 0);
        assert_eq!(timeline(&f, "gina@example.com", &[]).await.len(), 1);
        let forget = f.run(&["forget", "gina@example.com"]).await;
        assert_eq!(forget.code, 0, "{}", forget.why());
        assert!(timeline(&f, "gina@example.com", &[]).await.is_empty());
        // SQLite: the file's bytes; PostgreSQL: every row of every table as text.
        let text = f.store_text().await;
        assert!(
            !text.contains("Parcel for Gina") && !text.contains("ev-gina"),
            "activity left in the database"
        );
    }
}

five::both! {
    async fn refresh_reads_one_person_and_writes_nothing_anywhere(b: Backend) {
        let mut f = world(b, false).await;
        f.sync = String::new(); // activity polling off: only --refresh reads
        let id = f.sb.malomo.insert(malomo::Customer::new(
            "rae@example.com",
            Some("Rae"),
            None,
            None,
        ));
        f.sb.malomo
            .insert(malomo::Customer::new("other@example.com", None, None, None));
        assert_eq!(f.once().await.code, 0);
        assert!(event_reads(&f).is_empty(), "polling is off by default");
        f.sb.malomo.add_event(&id, event(1));
        f.sb.clear_logs();
        assert!(timeline(&f, "rae@example.com", &[]).await.is_empty());
        let lines = timeline(&f, "rae@example.com", &["--refresh"]).await;
        assert_eq!(ids(&lines), ["ev-1"]);
        assert_eq!(f.sb.writes(), 0, "{:#?}", f.write_lines());
        assert_eq!(event_reads(&f).len(), 2, "{:#?}", event_reads(&f));
        assert_eq!(log_reads(&f), 1);
    }
}

five::both! {
    async fn a_group_in_a_provider_that_is_not_sendwithus_is_a_config_error(b: Backend) {
        let mut f = world(b, false).await;
        f.sync = "\n[[groups]]\nprovider = \"shipping\"\ngroup_id = \"g\"\nwhen = { accepts_marketing = true }\n".into();
        let run = f.run(&["check", "--offline"]).await;
        assert_eq!(run.code, 2, "{}", run.why());
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains("groups[0].provider"), "{}", run.stderr);
    }
}
