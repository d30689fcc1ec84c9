//! The store's triggers and its statements of many rows, on SQLite and on
//! PostgreSQL alike. The triggers: which writes mark a
//! customer for the group sync (`groups_dirty`) and a stream for activity
//! (`activity_marks`), one statement at a time and many rows to a statement, as the
//! engine writes them. The two backends' triggers are written apart (row triggers on
//! SQLite, statement triggers with transition tables on PostgreSQL): this holds them
//! to one behaviour.

#[path = "common/pg.rs"]
mod pg;

use custsync::config::{PgUrl, StorePath};
use custsync::model::ProviderName;
use custsync::store::Store;

/// A store on a fresh database of the test cluster.
async fn on_postgres() -> Store {
    pg::require();
    let url = PgUrl::parse(&pg::database().await).unwrap();
    Store::open(&StorePath::Postgres(url), None).await.unwrap()
}

/// A store in memory.
async fn on_sqlite() -> Store {
    Store::open(&StorePath::Memory, None).await.unwrap()
}

/// The tests `name::sqlite` and `name::postgres`, each running `story` on a fresh
/// store of that backend.
macro_rules! on_both {
    ($name:ident, $story:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$story(&super::on_sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$story(&super::on_postgres().await).await;
            }
        }
    };
}

/// Customers 1 to `n`, `p1@example.com` and on, in one statement on either backend.
async fn people(s: &Store, n: u32) {
    exec(
        s,
        &format!(
            "INSERT INTO customers (id, email, fields, updated_at, created_at)
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
             SELECT i, 'p' || i || '@example.com', '{{}}', 'x', 'x' FROM n"
        ),
    )
    .await;
}

async fn exec(s: &Store, sql: &str) {
    sqlx::query(sql)
        .execute(s.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The customers marked for the group sync, then cleared.
async fn dirty(s: &Store) -> Vec<i64> {
    let ids = sqlx::query_scalar("SELECT customer_id FROM groups_dirty ORDER BY customer_id")
        .fetch_all(s.pool())
        .await
        .unwrap();
    exec(s, "DELETE FROM groups_dirty").await;
    ids
}

/// The streams with a mark: (provider, customer).
async fn marks(s: &Store) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT provider, customer_id FROM activity_marks ORDER BY provider, customer_id",
    )
    .fetch_all(s.pool())
    .await
    .unwrap()
}

async fn the_triggers_mark(s: &Store) {
    exec(
        s,
        "INSERT INTO customers (id, email, fields, updated_at, created_at) VALUES
        (1, 'a@example.com', '{}', 'x', 'x'), (2, 'b@example.com', '{}', 'x', 'x'),
        (3, 'c@example.com', '{}', 'x', 'x'), (4, 'd@example.com', '{}', 'x', 'x')",
    )
    .await;
    // No group pass recorded, no source of activity: nothing is marked.
    exec(
        s,
        "INSERT INTO links (provider, remote_id, customer_id) VALUES ('store', 's-1', 1)",
    )
    .await;
    exec(s, "UPDATE customers SET fields = '{\"a\":1}' WHERE id = 1").await;
    assert!(dirty(s).await.is_empty());
    assert!(marks(s).await.is_empty());

    exec(s, "INSERT INTO groups_passes (tenant, provider, rules, full_at) VALUES ('default', 'email', '[]', 'x')").await;
    exec(
        s,
        "INSERT INTO activity_sources (tenant, provider) VALUES ('default', 'ship')",
    )
    .await;
    // Links made, two in one statement: their customers, and a stream of the source.
    exec(s, "INSERT INTO links (provider, remote_id, customer_id) VALUES ('ship', 'sh-2', 2), ('email', 'e-3', 3)").await;
    assert_eq!(dirty(s).await, [2, 3]);
    assert_eq!(marks(s).await, [("ship".to_string(), 2)]);
    // What a plan does not read marks nothing; what it reads does.
    exec(
        s,
        "UPDATE links SET observed = '{}', observed_at = 'x' WHERE provider = 'ship'",
    )
    .await;
    exec(s, "UPDATE customers SET updated_at = 'y'").await;
    assert!(dirty(s).await.is_empty());
    exec(s, "UPDATE links SET snapshot = observed, observed = NULL").await;
    assert_eq!(dirty(s).await, [2]);
    exec(s, "UPDATE links SET gone = 1 WHERE remote_id = 'e-3'").await;
    exec(
        s,
        "UPDATE customers SET fields = '{\"b\":1}' WHERE id IN (1, 4)",
    )
    .await;
    assert_eq!(dirty(s).await, [1, 3, 4]);
    exec(s, "UPDATE customers SET tombstoned_at = 'x' WHERE id = 2").await;
    assert_eq!(dirty(s).await, [2]);
    // A link moved: both customers, and the stream of its new customer.
    exec(
        s,
        "UPDATE links SET customer_id = 4 WHERE remote_id = 'sh-2'",
    )
    .await;
    assert_eq!(dirty(s).await, [2, 4]);
    assert_eq!(marks(s).await, [("ship".into(), 2), ("ship".into(), 4)]);
    // An upsert that inserts marks as an insert, one that updates as an update.
    exec(s, "INSERT INTO links (provider, remote_id, customer_id, snapshot) VALUES ('ship', 'sh-1', 1, '{}'), ('ship', 'sh-2', 4, '{}')
        ON CONFLICT (provider, remote_id) DO UPDATE SET gone = 0").await;
    assert_eq!(dirty(s).await, [1]);
    assert_eq!(
        marks(s).await,
        [("ship".into(), 1), ("ship".into(), 2), ("ship".into(), 4)]
    );
    exec(s, "UPDATE links SET gone = 1 WHERE remote_id = 'sh-2'").await;
    assert_eq!(dirty(s).await, [4]);
    // A link deleted.
    exec(s, "DELETE FROM links WHERE remote_id IN ('s-1', 'e-3')").await;
    assert_eq!(dirty(s).await, [1, 3]);
    // No longer a source: nothing more is marked for activity.
    exec(s, "DELETE FROM activity_sources").await;
    exec(
        s,
        "INSERT INTO links (provider, remote_id, customer_id) VALUES ('ship', 'sh-3', 3)",
    )
    .await;
    assert_eq!(dirty(s).await, [3]);
    assert_eq!(marks(s).await.len(), 3);
}

on_both!(the_triggers_mark_what_changed, the_triggers_mark);

/// A provider made a source of activity has every stream marked at its first poll,
/// once each, beside the marks another source's first poll made a moment before and
/// a mark kept from when it was a source before.
async fn every_stream_is_marked_once(s: &Store) {
    people(s, 3000).await;
    exec(
        s,
        "INSERT INTO links (provider, remote_id, customer_id, snapshot)
         SELECT p, p || '-' || id, id, '{}' FROM customers, (SELECT 'ship' AS p UNION ALL SELECT 'email') AS v",
    )
    .await;
    exec(s, "INSERT INTO activity_marks (tenant, provider, customer_id, refreshed_at) VALUES ('default', 'email', 7, 'read before')").await;
    let sources = [ProviderName("ship".into()), ProviderName("email".into())];
    let due = s.activity_due("default", &sources, 10, None).await.unwrap();
    assert_eq!(due.len(), 10);
    let marks = marks(s).await;
    assert_eq!(marks.len(), 6000);
    let mut once = marks.clone();
    once.dedup();
    assert_eq!(once, marks, "a stream marked twice");
    let kept: String = sqlx::query_scalar(
        "SELECT refreshed_at FROM activity_marks WHERE provider = 'email' AND customer_id = 7",
    )
    .fetch_one(s.pool())
    .await
    .unwrap();
    assert_eq!(
        kept, "read before",
        "a mark already there is kept as it was"
    );
}

#[tokio::test]
async fn every_stream_is_marked_once_on_sqlite() {
    every_stream_is_marked_once(&on_sqlite().await).await;
}

/// On PostgreSQL, also the plan of that marking: the marks already made (another
/// provider's, with no statistics of them yet) are not searched for each link. An
/// anti-join over them (`NOT EXISTS`) was planned as a nested loop over all of them for
/// every link: 2.2 s at 10,000 people, growing with the square.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_is_marked_once_on_postgres() {
    let s = on_postgres().await;
    every_stream_is_marked_once(&s).await;
    exec(&s, "DELETE FROM activity_marks WHERE provider = 'ship'").await;
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN {}",
        custsync::store::activity::MARK_EVERY_STREAM
    ))
    .bind("default")
    .bind("ship")
    .fetch_all(s.pool())
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(!plan.contains("Anti Join"), "{plan}");
    assert!(plan.contains("Conflict Resolution: NOTHING"), "{plan}");
}

/// A batch of group memberships is saved in one statement, over what was saved
/// before; one learned twice in a batch keeps the last (PostgreSQL refuses an upsert
/// that meets the same row twice in one statement).
async fn memberships_are_saved_together_the_last_of_each_kept(s: &Store) {
    use custsync::model::{CustomerId, RemoteId};
    use custsync::store::activity::Membership;
    exec(
        s,
        "INSERT INTO customers (id, email, fields, updated_at, created_at) VALUES
        (1, 'a@example.com', '{}', 'x', 'x'), (2, 'b@example.com', '{}', 'x', 'x'),
        (4, 'd@example.com', '{}', 'x', 'x')",
    )
    .await;
    let m = |c: i64, g: &str, member: bool| Membership {
        customer: CustomerId(c),
        group_id: g.into(),
        remote_id: RemoteId(format!("email-{c}")),
        member,
    };
    let email = ProviderName("email".into());
    s.save_memberships("default", &email, &[m(1, "vip", true), m(2, "vip", false)])
        .await
        .unwrap();
    s.save_memberships(
        "default",
        &email,
        &[
            m(1, "vip", true),
            m(2, "news", true),
            m(1, "vip", false),
            m(4, "vip", true),
        ],
    )
    .await
    .unwrap();
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT customer_id, group_id, member FROM group_members ORDER BY customer_id, group_id",
    )
    .fetch_all(s.pool())
    .await
    .unwrap();
    let want: Vec<(i64, String, i64)> = vec![
        (1, "vip".into(), 0),
        (2, "news".into(), 1),
        (2, "vip".into(), 0),
        (4, "vip".into(), 1),
    ];
    assert_eq!(rows, want);
}

on_both!(
    memberships_are_saved_together,
    memberships_are_saved_together_the_last_of_each_kept
);

/// The merge's second pass reads, batch by batch in id order, exactly the customers
/// with a link observed, an operation in the outbox, or touched, however the three
/// interleave and however many links or operations each has.
async fn changed_batches_are_every_changed_customer_in_order(s: &Store) {
    people(s, 2000).await;
    // Observed: every customer divisible by 3, in two providers each; in the outbox:
    // by 5, three operations each; touched: 7 and 1999.
    exec(
        s,
        "INSERT INTO links (provider, remote_id, customer_id, observed)
         SELECT p, p || '-' || id, id, '{}' FROM customers, (SELECT 'ship' AS p UNION ALL SELECT 'email') AS v
         WHERE id % 3 = 0",
    )
    .await;
    exec(
        s,
        "INSERT INTO outbox (provider, customer_id, op, payload, changed, state, maybe_applied, attempts, run_id, created_at, updated_at)
         SELECT p, id, 'update', '{}', '[]', 'pending', 0, 0, 1, 'x', 'x'
         FROM customers, (SELECT 'ship' AS p UNION ALL SELECT 'email' UNION ALL SELECT 'store') AS v
         WHERE id % 5 = 0",
    )
    .await;
    let touched = [7, 1999];
    let mut got = Vec::new();
    let mut after = 0;
    loop {
        let batch = s.load_changed_batch(after, 100, &touched).await.unwrap();
        let Some((last, _)) = batch.last() else { break };
        after = last.id.0;
        got.extend(batch.iter().map(|(c, _)| c.id.0));
    }
    let want: Vec<i64> = (1..=2000)
        .filter(|i| i % 3 == 0 || i % 5 == 0 || touched.contains(i))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn changed_batches_on_sqlite() {
    let s = on_sqlite().await;
    changed_batches_are_every_changed_customer_in_order(&s).await;
}

/// On PostgreSQL, also the plan, with statistics taken while the outbox was full (a
/// first run's operations) and the outbox empty since: no operation is scanned again
/// for each customer (a `Materialize` of the outbox under a plain `SubPlan`, which
/// took more than nine minutes for one batch at 100,000 people).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_batches_on_postgres() {
    let s = on_postgres().await;
    changed_batches_are_every_changed_customer_in_order(&s).await;
    exec(
        &s,
        "INSERT INTO outbox (provider, customer_id, op, payload, changed, state, maybe_applied, attempts, run_id, created_at, updated_at)
         SELECT 'ship', c.id, 'create', '{}', '[]', 'pending', 0, 0, 1, 'x', 'x'
         FROM customers c, generate_series(1, 150)",
    )
    .await;
    exec(&s, "ANALYZE customers, links, outbox").await;
    exec(&s, "DELETE FROM outbox").await;
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {}", s.changed_batch_sql()))
        .bind(0i64)
        .bind(500i64)
        .bind("[]")
        .fetch_all(s.pool())
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(!plan.contains("Seq Scan on outbox"), "{plan}");
    assert!(!plan.contains("Materialize"), "{plan}");
}

/// What a listing reads of its keys: every live link's key, negative and positive, in
/// several slices (the keys arrive in their order as each database sorts them, signed,
/// and are packed as they come); the keys of some links by their ids.
async fn listed_keys_are_read_whole_and_by_id(s: &Store) {
    let n = 25_000;
    people(s, n).await;
    // Keys from -3n/2 to 3n/2, one link in 7 without one, one in 11 gone.
    exec(
        s,
        &format!(
            "INSERT INTO links (provider, remote_id, customer_id, snapshot, listed_key, gone)
             SELECT 'ship', 'r' || id, id, '{{}}',
                    CASE WHEN id % 7 = 0 THEN NULL ELSE (id - {half}) * 3 END,
                    CASE WHEN id % 11 = 0 THEN 1 ELSE 0 END
             FROM customers",
            half = n / 2
        ),
    )
    .await;
    let ship = ProviderName("ship".into());
    let keyed = |id: u32| !id.is_multiple_of(7) && !id.is_multiple_of(11);
    let key = |id: u32| (i64::from(id) - i64::from(n / 2)) * 3;
    let keys = s.listed_keys(&ship).await.unwrap();
    assert_eq!(keys.len(), (1..=n).filter(|&id| keyed(id)).count());
    for id in 1..=n {
        assert_eq!(keys.find(key(id)).is_some(), keyed(id), "r{id}");
        assert_eq!(keys.find(key(id) + 1), None);
    }
    let ids: Vec<String> = (1..=n).step_by(5).map(|id| format!("r{id}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut found = s.listed_keys_of(&ship, &ids).await.unwrap();
    found.sort_unstable();
    let mut want: Vec<(String, i64)> = (1..=n)
        .step_by(5)
        .filter(|&id| keyed(id))
        .map(|id| (format!("r{id}"), key(id)))
        .collect();
    want.sort_unstable();
    assert_eq!(found, want);
    // Every key again, one at a time, in the keys' order as signed.
    let mut each = Vec::new();
    s.each_listed_key(&ship, |key| each.push(key))
        .await
        .unwrap();
    let every: Vec<i64> = (1..=n).filter(|&id| keyed(id)).map(key).collect();
    assert_eq!(each, every);
}

on_both!(listed_keys, listed_keys_are_read_whole_and_by_id);
