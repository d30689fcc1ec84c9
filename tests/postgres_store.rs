//! The store on PostgreSQL: the binary against a throwaway cluster, the same stories
//! as on SQLite.

#[path = "common/five.rs"]
mod five;

use custsync::sandbox::{malomo, nuvemshop, partially};
use five::{pg, Five};

async fn on_postgres() -> Five {
    pg::require();
    let mut f = Five::start().await;
    f.store_url = Some(pg::database().await);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_converges_and_a_second_writes_nothing() {
    let f = on_postgres().await;
    f.sb.nuvemshop
        .insert(nuvemshop::seed("Nora Store", "nora@example.com"));
    f.sb.malomo.insert(malomo::Customer::new(
        "mo@example.com",
        Some("Mo"),
        Some("Ship"),
        Some("555-0101"),
    ));
    let pat = f.sb.partially.insert(partially::Customer::new(
        "pat@example.com",
        Some("Pat"),
        Some("Plan"),
    ));
    let run = f.once().await;
    assert_eq!(run.code, 0, "{}", run.why());
    for email in ["nora@example.com", "mo@example.com", "pat@example.com"] {
        for (name, held) in five::labels().iter().zip(f.emails()) {
            assert_eq!(
                held.iter().filter(|e| *e == email).count(),
                1,
                "{email} in {name}"
            );
        }
    }
    f.sb.clear_logs();
    let again = f.once().await;
    assert_eq!(again.code, 0, "{}", again.why());
    assert_eq!(f.sb.writes(), 0, "{:#?}", f.write_lines());

    // An edit travels, and a dry run plans it without recording anything.
    f.sb.partially
        .edit(&pat, |c| c.last_name = Some("Planner".into()));
    let dry = f.run(&["--dry-run"]).await;
    assert_eq!(dry.code, 0, "{}", dry.why());
    assert_eq!(f.sb.writes(), 0, "a dry run writes nothing");
    let edit = f.once().await;
    assert_eq!(edit.code, 0, "{}", edit.why());
    assert_eq!(
        f.sb.malomo.by_email("pat@example.com")[0]
            .last_name
            .as_deref(),
        Some("Planner")
    );

    let status = f.run(&["status", "--json"]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(doc["tenants"]["default"].is_object(), "{doc}");

    let audit = f.run(&["audit", "--limit", "5"]).await;
    assert_eq!(audit.code, 0, "{}", audit.stderr);

    let forget = f.run(&["forget", "nora@example.com", "--yes"]).await;
    assert_eq!(forget.code, 0, "{}", forget.why());
    let [store, rest @ ..] = f.emails();
    assert!(
        store.contains(&"nora@example.com".to_string()),
        "Nuvemshop cannot delete"
    );
    for held in rest {
        assert!(!held.iter().any(|e| e == "nora@example.com"), "{held:?}");
    }
    f.sb.clear_logs();
    let after = f.once().await;
    assert_eq!(after.code, 0, "{}", after.why());
    assert_eq!(
        f.sb.writes(),
        0,
        "the forgotten person stays out: {:#?}",
        f.write_lines()
    );
    // No row of the tenant's schema holds the address or the name any more.
    let url = f.store_url.clone().unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    for table in ["customers", "links", "outbox", "audit", "runs", "activity"] {
        let sql = format!(
            "SELECT COUNT(*) FROM t_default.{table} t WHERE t::text LIKE '%nora@example.com%' OR t::text LIKE '%Nora%'"
        );
        let n: i64 = sqlx::query_scalar(&sql).fetch_one(&mut conn).await.unwrap();
        assert_eq!(n, 0, "personal data left in {table}");
    }
}
