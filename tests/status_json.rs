//! `custsync status [--json]` and `audit` as an operator meets them (DESIGN 2, 13):
//! held deletes are named with the flag that releases them, the lease holder is shown
//! while a `--once` runs, unknown audit filters are bad usage, and the read-only
//! commands never make a database.
//!
//! The waits are on events (what an emulator handled), never on the passing of time.

#[path = "common/five.rs"]
mod five;

use std::time::Duration;

use custsync::sandbox::faults::Fault;
use five::Five;
use serde_json::Value;

fn keys() -> String {
    "timeout_secs = 2\nmax_retries = 0\nrate_limit = { per_second = 1000.0, burst = 100 }\n".into()
}

/// `status --json`'s tenant `default`.
async fn status_json(w: &Five) -> Value {
    let run = w.run(&["status", "--json"]).await;
    assert_eq!(run.code, 0, "status --json: {}", run.stderr);
    let doc: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("one JSON document: {e}\n{}", run.stdout));
    assert_eq!(
        doc["tenants"].as_object().map(|t| t.len()),
        Some(1),
        "{doc:#}"
    );
    doc["tenants"]["default"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_held_deletes_and_the_flag_that_releases_them() {
    let mut w = Five::start().await;
    w.provider_keys = keys();
    let everyone = w.seed_malomo(10);
    let run = w.once().await;
    assert_eq!(run.code, 0, "{}", run.why());
    w.assert_everyone_everywhere_once(&everyone);

    // Half of Malomo vanishes: above max_delete_fraction (0.2), the guard holds them.
    for i in 0..5 {
        let id = w.sb.malomo.by_email(&format!("m{i}@example.com"))[0]
            .id
            .clone();
        w.sb.malomo.remove(&id);
    }
    let run = w.once().await;
    assert_eq!(run.code, 1, "held deletes fail the run: {}", run.why());
    assert_eq!(run.report.as_ref().unwrap()["held_deletes"], 5);

    let t = status_json(&w).await;
    assert_eq!(t["holder"], Value::Null, "no run goes on: {t:#}");
    assert_eq!(t["lease"]["released"], true, "{t:#}");
    assert_eq!(t["last_run"]["status"], "failed", "{t:#}");
    assert_eq!(t["held_deletes"], 5, "{t:#}");
    let shipping = &t["providers"]["shipping"];
    assert_eq!(shipping["kind"], "malomo", "{t:#}");
    assert_eq!(shipping["held_deletes"], 5, "{t:#}");
    assert_eq!(shipping["release"], "--allow-deletes shipping", "{t:#}");
    assert_eq!(shipping["result"], "held", "not ok: {t:#}");
    for state in ["pending", "in_flight", "failed", "parked"] {
        assert_eq!(shipping["outbox"][state], 0, "{state}: {t:#}");
    }
    for name in ["store", "storefront", "plans", "email"] {
        let p = &t["providers"][name];
        assert_eq!(p["held_deletes"], 0, "{name}: {t:#}");
        assert_eq!(p["release"], Value::Null, "{name}: {t:#}");
        assert_eq!(p["failures"], serde_json::json!([]), "{name}: {t:#}");
    }

    // The table says it too, aligned, and what to run.
    let text = w.run(&["status"]).await;
    assert_eq!(text.code, 0, "{}", text.stderr);
    let row: Vec<&str> = text
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.first() == Some(&"shipping"))
        .unwrap_or_else(|| panic!("{}", text.stdout));
    assert_eq!(
        &row[1..8],
        ["malomo", "held", "0", "0", "0", "0", "5"],
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("shipping: 5 delete(s) held by the guard; to release them: custsync --once --allow-deletes shipping"),
        "{}",
        text.stdout
    );
    // Aligned: every row's cursor starts under the header's.
    let lines: Vec<&str> = text.stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with("provider"))
        .unwrap_or_else(|| panic!("{}", text.stdout));
    let column = lines[header].find("cursor").expect("a cursor column");
    for l in &lines[header + 2..header + 7] {
        let last = l.trim_end().rsplit(' ').next().unwrap_or_default();
        assert_eq!(l.rfind(last), Some(column), "{l:?} in\n{}", text.stdout);
    }

    // The flag releases them: the run converges and status holds nothing any more.
    let run = w.run(&["--once", "--allow-deletes", "shipping"]).await;
    assert_eq!(run.code, 0, "{}", run.why());
    let t = status_json(&w).await;
    assert_eq!(t["held_deletes"], 0, "{t:#}");
    assert_eq!(t["providers"]["shipping"]["held_deletes"], 0, "{t:#}");
    assert_eq!(t["providers"]["shipping"]["release"], Value::Null, "{t:#}");
    assert_eq!(t["providers"]["shipping"]["result"], "ok", "{t:#}");
    assert_eq!(t["last_run"]["status"], "converged", "{t:#}");

    // The audit trail: unknown filters are bad usage, known ones answer.
    for (args, flag) in [
        (["audit", "--provider", "nope"], "--provider"),
        (["audit", "--action", "bogus"], "--action"),
    ] {
        let run = w.run(&args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", run.stderr);
        assert!(
            lines[0].contains(flag) && lines[0].contains(args[2]),
            "{}",
            lines[0]
        );
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    let all = w.run(&["audit"]).await;
    assert_eq!(all.code, 0, "{}", all.stderr);
    let mut seen = std::collections::BTreeSet::new();
    for line in all.stdout.lines() {
        let entry: Value = serde_json::from_str(line).expect("a JSON line");
        seen.insert(entry["action"].as_str().unwrap_or_default().to_string());
    }
    for action in &seen {
        assert!(
            custsync::store::audit::ACTIONS.contains(&action.as_str()),
            "the store wrote {action}, which audit --action refuses"
        );
    }
    assert!(
        seen.contains("tombstone") && seen.contains("delete"),
        "{seen:?}"
    );
    let deletes = w
        .run(&["audit", "--provider", "plans", "--action", "delete"])
        .await;
    assert_eq!(deletes.code, 0, "{}", deletes.stderr);
    assert_eq!(deletes.stdout.lines().count(), 5, "{}", deletes.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_who_holds_the_lease_while_a_once_runs() {
    let mut w = Five::start().await;
    w.provider_keys = keys();
    w.sync = "[cluster]\nworker_id = \"w-once\"\n".into();
    w.seed_malomo(3);
    // The run stays busy: one create's answer is held back.
    let faults = &w.sb.nuvemshop.server.faults;
    faults.push(
        Fault::Delay(Duration::from_secs(120))
            .after()
            .on("POST", "/customers"),
    );
    let mut once = w.spawn_logged(&["--once"], "once.log");
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    while faults.handled() < 1 {
        if let Ok(Some(status)) = once.try_wait() {
            panic!("--once ended ({status}): {}", w.log_text("once.log"));
        }
        assert!(tokio::time::Instant::now() < give_up, "no create was held");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let t = status_json(&w).await;
    assert_eq!(t["holder"], "w-once", "{t:#}");
    assert!(t["lease_expires_at"].is_string(), "{t:#}");
    assert_eq!(t["last_run"]["status"], "running", "{t:#}");
    let text = w.run(&["status"]).await;
    assert!(
        text.stdout
            .contains("tenant default: lease held by w-once until "),
        "{}",
        text.stdout
    );

    // Killed, its process is gone: the lease is free at once, and status says so.
    once.start_kill().unwrap();
    once.wait().await.unwrap();
    let t = status_json(&w).await;
    assert_eq!(t["holder"], Value::Null, "{t:#}");
    assert_eq!(t["lease"]["holder_gone"], true, "{t:#}");
    assert_eq!(t["lease_expires_at"], Value::Null, "{t:#}");

    let run = w.once().await;
    assert_eq!(run.code, 0, "{}", run.why());
    let t = status_json(&w).await;
    assert_eq!(t["holder"], Value::Null, "{t:#}");
    assert_eq!(t["lease"]["released"], true, "{t:#}");
    assert_eq!(t["lease"]["worker"], "w-once", "{t:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_on_a_missing_database_say_so_and_make_none() {
    let w = Five::start().await;
    let db = w.db_path();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["audit"],
        &["activity", "ann@example.com"],
    ] {
        let run = w.run(args).await;
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert_eq!(
            run.stderr.trim_end(),
            format!(
                "custsync: no database at {} yet: run custsync --once first",
                db.display()
            ),
            "{args:?}"
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
        assert!(!db.exists(), "{args:?} made the database");
        let names: Vec<_> = std::fs::read_dir(w.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("custsync.db"))
            .collect();
        assert!(names.is_empty(), "{args:?} made {names:?}");
    }
    // A bad filter is bad usage before anything is opened.
    let run = w.run(&["audit", "--action", "bogus"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(!db.exists());
}
