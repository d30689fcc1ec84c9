//! Many merchants in one config (DESIGN 13), on SQLite and on PostgreSQL: `--once`
//! over every tenant with the tenants report, a bad tenant file that stops no other,
//! `--tenant`, `status`, and the commands that need one tenant.

#[path = "common/five.rs"]
mod five;
#[path = "common/fleet.rs"]
mod fleet;

use five::pg;
use fleet::Fleet;

async fn fleet(postgres: bool, names: &[&str]) -> Fleet {
    let url = if postgres {
        pg::require();
        Some(pg::database().await)
    } else {
        None
    };
    Fleet::new(url, names).await
}

async fn once_over_every_tenant(postgres: bool) {
    let mut f = fleet(postgres, &["shop-a", "shop_b"]).await;
    let everyone = f.seed(12);
    // A file with another stem and a file with a bad key: reported, the rest runs.
    std::fs::write(f.tenant_path("Bad"), "[providers.x]\nkind = \"ecwid\"\n").unwrap();
    f.add("shop-c").await;
    std::fs::write(f.tenant_path("shop-c"), "[nonsense]\nkey = 1\n").unwrap();
    let (out, report) = f.once(&[]).await;
    assert_eq!(out.code, 1, "bad tenants make the exit 1: {}", out.stderr);
    assert_eq!(report["converged"], false, "{report:#}");
    for good in ["shop-a", "shop_b"] {
        assert_eq!(
            report["tenants"][good]["converged"], true,
            "{good}: {report:#}"
        );
    }
    for bad in ["Bad", "shop-c"] {
        let error = report["tenants"][bad]["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{bad} reported: {report:#}");
        assert!(
            out.stderr.contains(bad),
            "{bad} named on stderr: {}",
            out.stderr
        );
    }
    std::fs::remove_file(f.tenant_path("Bad")).unwrap();
    std::fs::remove_file(f.tenant_path("shop-c")).unwrap();
    f.tenants.remove("shop-c");
    f.assert_converged(&everyone);

    f.clear_logs();
    let (again, report) = f.once(&[]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(report["converged"], true);
    assert_eq!(f.writes(), 0, "a second run writes nothing");

    // Only the named tenant runs.
    let id = f.tenants["shop-a"].seed_spread(100, 1);
    let (one, report) = f.once(&["--tenant", "shop-a"]).await;
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert!(report["tenants"]["shop_b"].is_null(), "{report:#}");
    let mut a = everyone["shop-a"].clone();
    a.extend(id);
    f.tenants["shop-a"].assert_everyone_everywhere_once(&a);

    let unknown = f.run(&["--once", "--tenant", "nobody"]).await;
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("--tenant"), "{}", unknown.stderr);

    // status lists every tenant with its lease and outbox depth.
    let status = f.run(&["status", "--json"]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    for name in ["shop-a", "shop_b"] {
        let t = &doc["tenants"][name];
        assert!(t["holder"].is_null(), "{doc:#}");
        assert_eq!(t["outbox_depth"], 0, "{doc:#}");
        assert_eq!(t["last_run"]["status"], "converged", "{doc:#}");
    }

    // forget and audit need one --tenant among several.
    let forget = f.run(&["forget", "p1@example.com", "--yes"]).await;
    assert_eq!(forget.code, 2, "{}", forget.stderr);
    assert!(forget.stderr.contains("--tenant"), "{}", forget.stderr);
    let audit = f
        .run(&["audit", "--tenant", "shop_b", "--limit", "3"])
        .await;
    assert_eq!(audit.code, 0, "{}", audit.stderr);
    assert_eq!(audit.stdout.lines().count(), 3, "{}", audit.stdout);
    let forget = f
        .run(&["forget", "p1@example.com", "--yes", "--tenant", "shop_b"])
        .await;
    assert_eq!(forget.code, 0, "{}\n{}", forget.stdout, forget.stderr);
    let [_, rest @ ..] = f.tenants["shop_b"].emails();
    for held in rest {
        assert!(!held.contains(&"p1@example.com".to_string()), "{held:?}");
    }
    let [_, rest @ ..] = f.tenants["shop-a"].emails();
    for held in rest {
        assert!(
            held.contains(&"p1@example.com".to_string()),
            "the other tenant keeps its own p1: {held:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_over_every_tenant_on_sqlite() {
    once_over_every_tenant(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_over_every_tenant_on_postgres() {
    once_over_every_tenant(true).await;
}
