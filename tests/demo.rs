//! `custsync demo` needs no account and no config: it prints its summary and exits 0.

#[test]
fn the_demo_runs_with_no_config_and_ends_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_custsync"))
        .args(["demo", "--customers", "60"])
        .current_dir(dir.path())
        .env_remove("CUSTSYNC_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for name in ["store", "storefront", "shipping", "plans", "email"] {
        assert!(stdout.contains(name), "{name} in the summary:\n{stdout}");
    }
    assert!(
        stdout.contains("fetched") && stdout.contains("created"),
        "{stdout}"
    );
    assert!(stdout.contains("example merges"), "{stdout}");
    // One person's timeline, every source, newest first.
    let timeline = stdout
        .split("activity of johnny@rosevideo.com")
        .nth(1)
        .unwrap_or_else(|| panic!("a timeline:\n{stdout}"));
    let delivered = timeline.find("Order #1000 delivered").expect(&stdout);
    let fulfilled = timeline.find("Order #1000 fulfilled").expect(&stdout);
    let opened = timeline.find("opened: Order Confirmation").expect(&stdout);
    assert!(delivered < fulfilled && opened < fulfilled, "{timeline}");
    assert!(
        stdout.contains("second reconciliation with no outside change: 0 write request(s)"),
        "{stdout}"
    );
    // Progress went to stderr, and nothing was left in the working directory.
    assert!(stderr.contains("listed"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
