//! `[store] synchronous = "full"` reaches the connection that writes: SQLite's
//! `synchronous` is a setting of each connection, not of the file, so it must be set
//! on the pool's connection, not only on the one that probes the file first. A test
//! binary of its own: the setting is for the whole process.

use custsync::config::StorePath;
use custsync::store::Store;
use sqlx::Row;

async fn synchronous_of(store: &Store) -> i64 {
    sqlx::query("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_writing_connection_syncs_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let path = StorePath::File(dir.path().join("custsync.db"));
    let normal = Store::open(&path, None).await.unwrap();
    assert_eq!(synchronous_of(&normal).await, 1, "NORMAL by default");
    normal.close().await;

    custsync::store::set_synchronous_full(true);
    let full = Store::open(&path, None).await.unwrap();
    assert_eq!(synchronous_of(&full).await, 2, "FULL when configured");
    full.close().await;
}
