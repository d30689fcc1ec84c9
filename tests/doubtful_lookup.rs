//! Doubtful creates are looked up together: after a kill that left many Malomo creates
//! in flight, the rerun walks Malomo's list (which has no search) once for all of them,
//! not once each, and still creates nobody twice.

#[path = "common/five.rs"]
mod five;

use std::collections::BTreeSet;
use std::time::Duration;

use custsync::sandbox::faults::Fault;
use five::Five;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rerun_after_a_kill_walks_malomo_once_for_every_doubtful_create() {
    let f = Five::start().await;
    // People only in Nuvemshop: every one of them is a create for Malomo.
    let everyone: BTreeSet<String> = (0..40)
        .map(|i| {
            let email = format!("n{i}@example.com");
            f.seed_in(0, &email, i);
            email
        })
        .collect();
    // Malomo answers creates slowly: when the first batch of outcomes (the other
    // providers') is about to be committed, most of its claimed chunk is not sent yet.
    let malomo = &f.sb.malomo.server.faults;
    malomo.always(Fault::Delay(Duration::from_millis(300)).on("POST", "/customers"));
    // The only test of this binary: the failpoint's variable reaches the child alone.
    f.kill_at_failpoint("before-outcome-commit", "killed.log")
        .await;

    malomo.clear();
    f.sb.clear_logs();
    let rerun = f.once().await;
    assert_eq!(rerun.code, 0, "{}", rerun.why());
    f.assert_everyone_everywhere_once(&everyone);
    // Every Malomo create the killed run claimed is doubtful now (up to a chunk of
    // 32). Its listing is one walk of at most 2 pages (50 a page, an empty page ends
    // it); one more walk finds them all. One walk each would be dozens.
    let walks: Vec<String> =
        f.sb.malomo
            .log()
            .all()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path == "/customers")
            .map(|r| format!("{} {:?}", r.path, r.query))
            .collect();
    assert!(
        walks.len() <= 4,
        "{} list requests to Malomo: {walks:#?}",
        walks.len()
    );
    // It was looked up: some of Malomo's creates were still doubtful in the rerun.
    let creates = f.sb.malomo.log().writes().len();
    assert!(creates >= 2, "{creates} creates: nothing was doubtful");
}
