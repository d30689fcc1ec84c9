//! Group commit (the outcomes of a push are recorded a batch at a time): a process
//! killed while a batch of outcomes waits to be committed, after its requests went
//! through, leaves those operations in flight; the rerun looks each one up before
//! sending it again and creates nobody twice.

#[path = "common/five.rs"]
mod five;

use five::Five;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_before_a_batch_of_outcomes_is_committed_duplicates_nothing() {
    let f = Five::start().await;
    let everyone = f.seed_malomo(40);
    // The only test of this binary: the failpoint's variable reaches the child alone.
    f.kill_at_failpoint("before-outcome-commit", "killed.log")
        .await;
    assert!(f.writes() > 0, "requests went through before the commit");

    let rerun = f.once().await;
    assert_eq!(rerun.code, 0, "{}", rerun.why());
    f.assert_everyone_everywhere_once(&everyone);
    f.sb.clear_logs();
    let again = f.once().await;
    assert_eq!(again.code, 0, "{}", again.why());
    assert_eq!(f.writes(), 0, "{:#?}", f.write_lines());
}
