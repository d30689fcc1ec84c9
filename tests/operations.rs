//! Operating custsync: `check` reaches every provider, secrets stay out of every
//! output, the daemon serves its endpoints and stops cleanly on SIGTERM.

#[path = "common/five.rs"]
mod five;

use custsync::sandbox::malomo;
use five::Five;

five::both! {
    async fn check_reaches_every_provider_with_one_line_each(b: Backend) {
        let f = Five::start_on(b).await;
        let run = f.run(&["check"]).await;
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 5, "{}", run.stdout);
        for name in ["store", "storefront", "shipping", "plans", "email"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(name) && l.ends_with(": ok")),
                "{name}: {}",
                run.stdout
            );
        }
        // Each provider got exactly one authenticated request, and no write.
        for (name, log) in f.sb.logs() {
            assert_eq!(log.len(), 1, "{name}: {:?}", log.all());
            // Sendwithus is checked with a lookup of an address nobody has: 404 proves the key.
            let ok = log.all()[0].status < 400 || (name == "email" && log.all()[0].status == 404);
            assert!(ok, "{name}: {:?}", log.all());
        }
        assert_eq!(f.sb.writes(), 0);
    }
}

five::both! {
    async fn check_names_the_provider_that_refuses_the_key(b: Backend) {
        let f = Five::start_on(b).await;
        // Malomo's key replaced in the environment.
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            f.sb.config_toml(
                &f.store_url
                    .clone()
                    .unwrap_or_else(|| format!("sqlite://{}/c.db", dir.path().display())),
                100.0,
                10,
            ),
        )
        .unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_custsync"))
            .args(["--config", config.to_str().unwrap(), "check"])
            .env("CUSTSYNC__PROVIDERS__SHIPPING__API_KEY", "wrong-key-123")
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let shipping = stdout.lines().find(|l| l.starts_with("shipping")).unwrap();
        assert!(
            shipping.contains("FAILED") && shipping.contains("401"),
            "{shipping}"
        );
        assert!(
            !stdout.contains("wrong-key-123"),
            "the key is never printed: {stdout}"
        );
        assert!(
            stdout.lines().filter(|l| l.ends_with(": ok")).count() == 4,
            "{stdout}"
        );
    }
}

five::both! {
    async fn api_keys_never_reach_logs_reports_or_the_database(b: Backend) {
        let f = Five::start_on(b).await;
        f.sb.seed_document_examples();
        // A failing provider too, so errors are logged and reported.
        f.sb.malomo
            .server
            .faults
            .push_n(50, custsync::sandbox::faults::Fault::Status(500));
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let config = dir.path().join("c.toml");
        let report = dir.path().join("r.json");
        // SQLite: the file's bytes; PostgreSQL: every row of every table as text.
        let url = f
            .store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", db.display()));
        std::fs::write(&config, f.sb.config_toml(&url, 1000.0, 100)).unwrap();
        let keys: Vec<String> =
            f.sb.endpoints()
                .into_iter()
                .map(|(_, _, _, key)| key)
                .collect();
        for format in ["text", "json"] {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_custsync"))
                .args([
                    "--config",
                    config.to_str().unwrap(),
                    "--once",
                    "--log-format",
                    format,
                    "--report",
                    report.to_str().unwrap(),
                ])
                .env("RUST_LOG", "trace")
                .env("CUSTSYNC__PROVIDERS__SHIPPING__MAX_RETRIES", "1")
                .output()
                .await
                .unwrap();
            let all = [
                out.stdout,
                out.stderr,
                std::fs::read(&report).unwrap(),
                five::store_text(&url).await.into_bytes(),
            ];
            for bytes in all {
                let text = String::from_utf8_lossy(&bytes);
                for key in &keys {
                    assert!(!text.contains(key.as_str()), "key {key} leaked ({format})");
                }
            }
        }
    }
}

five::both! {
    #[cfg(unix)]
    async fn the_daemon_serves_health_and_metrics_and_stops_on_sigterm(b: Backend) {
        let f = Five::start_on(b).await;
        f.sb.malomo.insert(malomo::Customer::new(
            "dee@example.com",
            Some("Dee"),
            Some("Mon"),
            None,
        ));
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = dir.path().join("c.toml");
        let text = f.sb.config_toml(&f.store_url.clone().unwrap_or_else(|| format!("sqlite://{}/c.db", dir.path().display())), 1000.0, 100).replacen(
            "[store]",
            &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[sync]\nschedule = \"0 0 0 1 1 * 2099\"\n[store]"),
            1,
        );
        std::fs::write(&config, text).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_custsync"))
            .args(["--config", config.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        // The first cycle runs at start: wait for it through /metrics (an event, not a clock).
        let metrics = loop {
            if let Ok(r) = client.get(format!("{base}/metrics")).send().await {
                let text = r.text().await.unwrap();
                if text.contains("custsync_cycle_duration_seconds_count{tenant=\"default\"} 1") {
                    break text;
                }
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the daemon exited early"
            );
            tokio::task::yield_now().await;
        };
        assert!(
            metrics.contains(
                "custsync_records_total{tenant=\"default\",provider=\"store\",op=\"created\"} 1"
            ),
            "{metrics}"
        );
        assert_eq!(
            client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(f.sb.nuvemshop.by_email("dee@example.com").len(), 1);

        let pid = child.id().unwrap() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(0));
    }
}

five::both! {
    async fn info_logs_name_no_email_and_no_phone(b: Backend) {
        let mut f = Five::start_on(b).await;
        // The default level, as an operator runs it.
        f.rust_log = "info".into();
        f.sb.seed_document_examples();
        f.sb.malomo.insert(malomo::Customer::new(
            "private.person@example.com",
            Some("Pri"),
            Some("Vate"),
            Some("+1 555 010 9999"),
        ));
        // Failures too, so the warnings are exercised.
        f.sb.ecwid
            .server
            .faults
            .push_n(3, custsync::sandbox::faults::Fault::Status(503));
        let run = f.once().await;
        assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("listed"),
            "info logs are on: {}",
            run.stderr
        );
        for secret in [
            "private.person@example.com",
            "johnny@rosevideo.com",
            "555 010 9999",
            "555-555-5555",
        ] {
            assert!(
                !run.stderr.contains(secret),
                "{secret} in the info log:\n{}",
                run.stderr
            );
        }
    }
}
