//! `custsync status` after failing runs, and deletes across the five providers: a
//! person removed from one listable provider is deleted in every other that can
//! delete, never in Nuvemshop (which cannot, and that is no failure), and is not
//! imported again from it; a Partial.ly `gdpr_remove` refused for an open payment
//! plan fails its run with Partial.ly's message, is parked (shown by `status`, not
//! retried) and later runs exit 0 (DESIGN 4b).

#[path = "common/five.rs"]
mod five;

use std::collections::BTreeSet;

use custsync::sandbox::faults::Fault;
use five::Five;

fn keys() -> String {
    "timeout_secs = 2\nmax_retries = 0\nrate_limit = { per_second = 1000.0, burst = 100 }\n".into()
}

/// The status table's row of one provider, split on whitespace:
/// `[name, kind, result, pending, in_flight, failed, parked, held, cursor]`.
fn row<'a>(status: &'a str, provider: &str) -> Vec<&'a str> {
    status
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&provider) && cols.len() >= 9)
        .unwrap_or_else(|| panic!("no row for {provider} in:\n{status}"))
}

async fn status(w: &Five) -> String {
    let run = w.run(&["status"]).await;
    assert_eq!(run.code, 0, "status: {}", run.stderr);
    run.stdout
}

five::both! {
    async fn status_shows_each_providers_cursor_result_outbox_and_last_errors(b: Backend) {
        let mut w = Five::start_on(b).await;
        w.provider_keys = keys();
        let everyone = w.seed_spread(0, 8);
        // Ecwid cannot be listed; Malomo refuses every create (a 4xx: not retried).
        w.sb.ecwid
            .server
            .faults
            .random(1, 1.0, [Fault::Status(503).on("GET", "/")]);
        w.sb.malomo
            .server
            .faults
            .random(2, 1.0, [Fault::Status(400).on("POST", "/customers")]);

        let run = w.once().await;
        assert_eq!(run.code, 1, "{}", run.why());
        let malomo_creates = run.count("shipping", "failed");
        assert!(malomo_creates >= 4, "{}", run.why());

        let out = status(&w).await;
        assert!(out.contains("last run: #1 failed (once)"), "{out}");
        let store = row(&out, "store");
        assert_eq!(
            &store[1..7],
            ["nuvemshop", "ok", "0", "0", "0", "0"],
            "{out}"
        );
        assert!(
            store[8].starts_with("20"),
            "Nuvemshop's cursor is a time: {out}"
        );
        let shipping = row(&out, "shipping");
        assert_eq!(shipping[2], "failing", "{out}");
        assert_eq!(
            shipping[5],
            malomo_creates.to_string(),
            "failed creates: {out}"
        );
        assert_eq!(shipping[8], "-", "Malomo has no cursor: {out}");
        assert_eq!(row(&out, "storefront")[2], "failing", "{out}");
        assert_eq!(row(&out, "email")[2], "ok", "{out}");
        let errors = out.split("last errors:").nth(1).unwrap_or("");
        assert!(
            errors.contains("shipping create")
                && errors.contains("[failed]")
                && errors.contains("HTTP 400: injected fault: Bad Request"),
            "{out}"
        );
        assert!(
            errors.contains("storefront listing:") && errors.contains("HTTP 503"),
            "the listing failure is shown too: {out}"
        );

        // The provider heals: the next run converges and status says so.
        for (_, f) in w.faults() {
            f.clear();
        }
        let run = w.once().await;
        assert_eq!(run.code, 0, "{}", run.why());
        w.assert_everyone_everywhere_once(&everyone);
        let out = status(&w).await;
        assert!(out.contains("last run: #2 converged (once)"), "{out}");
        assert!(!out.contains("last errors:"), "{out}");
        for name in five::labels() {
            let r = row(&out, name);
            assert_eq!(&r[2..7], ["ok", "0", "0", "0", "0"], "{name}: {out}");
        }
    }
}

five::both! {
    async fn deletes_spread_except_to_nuvemshop_and_a_refused_gdpr_remove_is_parked(b: Backend) {
        let mut w = Five::start_on(b).await;
        w.provider_keys = keys();
        w.sync = "max_delete_fraction = 1.0\n".into();
        let mut everyone: BTreeSet<String> = w.seed_malomo(4);
        let run = w.once().await;
        assert_eq!(run.code, 0, "{}", run.why());
        w.assert_everyone_everywhere_once(&everyone);
        let ann = "m0@example.com";
        let bob = "m1@example.com";

        // Ann is removed from Ecwid: deleted in Malomo, Partial.ly and Sendwithus, kept in
        // Nuvemshop (it cannot delete), and the run converges.
        let ecwid_ann = w.sb.ecwid.by_email(ann)[0].id;
        w.sb.ecwid.remove(ecwid_ann);
        let run = w.once().await;
        assert_eq!(run.code, 0, "{}", run.why());
        assert_eq!(run.count("shipping", "deleted"), 1);
        assert_eq!(run.count("plans", "deleted"), 1);
        assert_eq!(run.count("email", "deleted"), 1);
        assert_eq!(run.count("store", "deleted"), 0);
        assert_eq!(run.count("store", "failed"), 0);
        let held = w.holdings();
        for provider in ["storefront", "shipping", "plans", "email"] {
            assert!(
                !held[provider].contains_key(ann),
                "{provider} still has Ann"
            );
        }
        assert_eq!(held["store"][ann], 1, "Nuvemshop keeps Ann");

        // Bob has an open payment plan in Partial.ly and is removed from Malomo.
        let plan = w.sb.partially.by_email(bob)[0].id.clone();
        w.sb.partially.edit(&plan, |c| c.open_plan = true);
        let malomo_bob = w.sb.malomo.by_email(bob)[0].id.clone();
        w.sb.malomo.remove(&malomo_bob);
        let run = w.once().await;
        assert_eq!(
            run.code,
            1,
            "a refused gdpr_remove fails the run: {}",
            run.why()
        );
        assert_eq!(run.count("plans", "failed"), 1);
        let message = "Customers with open payment plans cannot be deleted";
        assert!(
            run.errors()
                .iter()
                .any(|e| e.contains(message) && e.contains(bob) && e.contains("plans")),
            "{}",
            run.why()
        );
        assert_eq!(run.count("storefront", "deleted"), 1);
        assert_eq!(run.count("email", "deleted"), 1);
        assert_eq!(w.sb.partially.by_email(bob).len(), 1, "the plan keeps Bob");

        let out = status(&w).await;
        let plans = row(&out, "plans");
        assert_eq!(plans[2], "failing", "{out}");
        assert_eq!(
            (plans[5], plans[6]),
            ("0", "1"),
            "one parked, none failed: {out}"
        );
        let errors = out.split("last errors:").nth(1).unwrap_or("");
        assert!(
            errors.contains("plans delete")
                && errors.contains(bob)
                && errors.contains("[parked]")
                && errors.contains(message),
            "{out}"
        );

        // Later runs do not retry it and do not fail on it; nobody deleted comes back,
        // not even when the store owner edits Ann's record that Nuvemshop still has.
        let store_ann = w.sb.nuvemshop.by_email(ann)[0]["id"].as_u64().expect("id");
        w.sb.nuvemshop
            .edit(store_ann, |c| c["name"] = serde_json::json!("Ann Edited"));
        let removals = |w: &Five| w.sb.partially.log().count("PUT", "/customer/gdpr_remove");
        let tried = removals(&w);
        w.sb.clear_logs();
        let run = w.once().await;
        assert_eq!(run.code, 0, "{}", run.why());
        assert_eq!(w.writes(), 0, "nothing to write: {}", run.why());
        assert_eq!(
            removals(&w),
            0,
            "the parked delete is not retried ({tried} before)"
        );
        let out = status(&w).await;
        assert_eq!(
            row(&out, "plans")[6],
            "1",
            "still parked, still shown: {out}"
        );

        everyone.remove(ann);
        everyone.remove(bob);
        let held = w.holdings();
        for provider in ["storefront", "shipping", "email"] {
            for gone in [ann, bob] {
                assert!(
                    !held[provider].contains_key(gone),
                    "{provider}: {gone} is back"
                );
            }
            let rest: BTreeSet<String> = held[provider].keys().cloned().collect();
            assert_eq!(rest, everyone, "{provider}");
        }
        assert_eq!(held["store"][ann], 1);
        assert_eq!(held["store"][bob], 1);
    }
}

five::both! {
    async fn a_failing_operation_keeps_counting_its_attempts_across_runs(b: Backend) {
        let mut w = Five::start_on(b).await;
        w.provider_keys = keys();
        w.seed_malomo(1);
        // Nuvemshop refuses every create, run after run.
        w.sb.nuvemshop
            .server
            .faults
            .random(3, 1.0, [Fault::Status(422).on("POST", "/customers")]);
        for attempt in 1..=3 {
            let run = w.once().await;
            assert_eq!(run.code, 1, "{}", run.why());
            let out = status(&w).await;
            assert_eq!(row(&out, "store")[5], "1", "{out}");
            assert!(
                out.contains(&format!("attempts={attempt}")),
                "run {attempt}: {out}"
            );
        }
    }
}
