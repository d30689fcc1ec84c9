//! Group commit (the outcomes of a push are recorded a batch at a time): a process
//! killed while a batch of outcomes waits to be committed, after its requests went
//! through, leaves those operations in flight; the rerun looks each one up before
//! sending it again and creates nobody twice.

#[path = "common/five.rs"]
mod five;

use std::time::Duration;

use five::Five;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_before_a_batch_of_outcomes_is_committed_duplicates_nothing() {
    let f = Five::start().await;
    let everyone = f.seed_malomo(40);
    // The only test of this binary: the variable reaches the child alone.
    std::env::set_var("CUSTSYNC_FAILPOINT", "before-outcome-commit");
    let mut child = f.spawn_logged(&["--once"], "killed.log");
    std::env::remove_var("CUSTSYNC_FAILPOINT");
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f
        .log_text("killed.log")
        .contains("failpoint before-outcome-commit reached")
    {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "custsync ended ({status}) first:\n{}",
                f.log_text("killed.log")
            );
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "the failpoint was never reached"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent = f.writes();
    assert!(sent > 0, "requests went through before the commit");
    child.kill().await.unwrap();
    let _ = child.wait().await;

    let rerun = f.once().await;
    assert_eq!(rerun.code, 0, "{}", rerun.why());
    f.assert_everyone_everywhere_once(&everyone);
    f.sb.clear_logs();
    let again = f.once().await;
    assert_eq!(again.code, 0, "{}", again.why());
    assert_eq!(f.writes(), 0, "{:#?}", f.write_lines());
}
