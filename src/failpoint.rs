//! Points where a test can stop the process at a chosen instant, to kill it there:
//! `CUSTSYNC_FAILPOINT=NAME` makes the process log `failpoint NAME reached` and wait
//! forever the first time it reaches `NAME`. Unset (always, outside the tests), a
//! point costs one load of a cached flag.

use std::sync::OnceLock;

/// The failpoint named by `CUSTSYNC_FAILPOINT`, read once.
fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            std::env::var("CUSTSYNC_FAILPOINT")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .as_deref()
}

/// Stops this thread for good when `name` is the armed failpoint.
pub fn reached(name: &str) {
    if armed() == Some(name) {
        tracing::warn!("failpoint {name} reached");
        eprintln!("failpoint {name} reached");
        loop {
            std::thread::park();
        }
    }
}
