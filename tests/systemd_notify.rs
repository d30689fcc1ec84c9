//! The daemon under systemd's `Type=notify`: a socket stands in for the service manager
//! (`NOTIFY_SOCKET`, `WATCHDOG_USEC`), and the real binary must say READY=1 once it
//! listens, ping the watchdog, and say STOPPING=1 on SIGTERM before exiting 0.

#![cfg(unix)]

mod common;

use std::time::Duration;

use tokio::net::UnixDatagram;

use common::World;

/// Reads datagrams until one holds `line`, keeping everything read on the way in `seen`.
async fn read_until(sock: &UnixDatagram, line: &str, seen: &mut Vec<String>) {
    let mut buf = [0u8; 4096];
    loop {
        // A generous bound for a loaded machine: the test waits for messages, not a clock.
        let n = tokio::time::timeout(Duration::from_secs(60), sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {line} from the daemon; got {seen:?}"))
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let found = text.lines().any(|l| l == line);
        seen.push(text);
        if found {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_tells_systemd_ready_watchdog_and_stopping() {
    let mut world = World::new().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // The first cycle runs at start; the next one is far away.
    world.extra_toml =
        format!("schedule = \"0 0 0 1 1 * 2099\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n");
    let config = world.write_config();
    let socket_path = world.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_custsync"))
        .arg("--config")
        .arg(&config)
        .env_remove("CUSTSYNC_CONFIG")
        .env_remove("WATCHDOG_PID")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let mut seen = Vec::new();
    read_until(&sock, "READY=1", &mut seen).await;
    assert_eq!(seen.len(), 1, "READY=1 comes first: {seen:?}");
    // Ready means the health server answers.
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    read_until(&sock, "WATCHDOG=1", &mut seen).await;

    let pid = child.id().unwrap() as i32;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    read_until(&sock, "STOPPING=1", &mut seen).await;
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(0), "{seen:?}");
}
