//! A throwaway PostgreSQL 15 cluster for the integration tests.
//!
//! One cluster per test process, started lazily by [`cluster`] the first time a test
//! asks for it: `initdb` into a fresh `custsync-pg-*` directory under the system temp
//! directory, then `postgres` as a child process on a free 127.0.0.1 port, trust auth,
//! superuser `custsync`, durability switched off. Each test then takes its own
//! database with [`database`] (async) or [`database_blocking`] (sync), so tests in one
//! binary can run in parallel without seeing each other's tables.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, `initdb` and
//! `postgres` run as `nobody` (uid/gid 65534 when the name does not resolve) and the
//! directory is handed to that user first.
//!
//! Nothing outlives the test process:
//! - an `atexit` handler sends SIGQUIT (immediate shutdown) to the postmaster, reaps
//!   it and removes the directory;
//! - the postmaster has `PR_SET_PDEATHSIG = SIGQUIT`, so it also goes when the test
//!   process is killed outright. The death signal is tied to the *thread* that forked
//!   the child, so every child is spawned by one dedicated thread that never ends;
//! - at start, directories left by dead test processes (their `owner.pid` names a pid
//!   no longer alive) are removed ([`remove_stale`]).
//!
//! Include it with `#[path = "common/pg.rs"] mod pg;`.

#![allow(dead_code)]

use std::ffi::CString;
use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::Connection;

/// Prefix of the cluster directories under [`std::env::temp_dir`].
pub const DIR_PREFIX: &str = "custsync-pg-";
/// The superuser `initdb` creates; every URL connects as it (trust auth, no password).
pub const USER: &str = "custsync";
/// How long [`cluster`] waits for the server to answer a query before giving up.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// Attempts at a free port when another process takes ours between pick and bind.
const PORT_ATTEMPTS: usize = 5;

/// The running cluster of this test process.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    pid: u32,
    started_in: Duration,
}

impl Cluster {
    /// The cluster directory (`data/` inside, the Unix socket and `postgres.log` beside it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How long `initdb` plus server start plus the first answered query took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// `postgres://custsync@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The server log so far (for panic messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether the PostgreSQL programs the harness needs (`initdb`, `postgres`) are on PATH.
pub fn available() -> bool {
    missing_program().is_none()
}

/// Panics with a message naming the missing program unless [`available`].
pub fn require() {
    if let Some(p) = missing_program() {
        panic!("`{p}` is not on PATH: these tests need PostgreSQL 15 (initdb, postgres) installed");
    }
}

fn missing_program() -> Option<&'static str> {
    ["initdb", "postgres"]
        .into_iter()
        .find(|p| which(p).is_none())
}

fn which(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The cluster of this test process, started on first use (blocking, about a second
/// or two). Safe to call from sync code and from inside a tokio runtime: the readiness
/// query runs on a thread of its own. Panics, with `initdb`'s stderr or the server log,
/// when the cluster cannot be started.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(start)
}

/// `cluster().url(db)`.
pub fn url_for(db: &str) -> String {
    cluster().url(db)
}

/// A fresh, empty database on the shared cluster (`t_<pid>_<n>`); returns its URL.
/// Async; starts the cluster first if needed (off the async worker, via
/// `spawn_blocking`), so it needs a tokio runtime, which `#[tokio::test]` provides.
pub async fn database() -> String {
    let c = tokio::task::spawn_blocking(cluster)
        .await
        .expect("starting the PostgreSQL cluster panicked");
    let name = next_db_name();
    let mut conn = sqlx::PgConnection::connect(&c.url("postgres"))
        .await
        .unwrap_or_else(|e| panic!("connecting to the test cluster: {e}\n{}", c.log()));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let _ = conn.close().await;
    c.url(&name)
}

/// [`database`] for sync code: runs it on a thread with its own runtime, so it works
/// both outside and inside a tokio runtime (it blocks the calling thread).
pub fn database_blocking() -> String {
    on_own_runtime(database())
}

fn next_db_name() -> String {
    format!(
        "t_{}_{}",
        std::process::id(),
        DB_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a future to completion on a new current-thread runtime in a new thread.
fn on_own_runtime<F>(f: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(f)
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

// ---- spawning: one thread that never ends, so PDEATHSIG means "the process died" ----

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("pg-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static, so this is not reached; if it ever
                // is, stay alive anyway: this thread's death would signal the children.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning the pg-spawner thread");
        Mutex::new(tx)
    })
}

/// Spawns `cmd` from the spawner thread with `PR_SET_PDEATHSIG = SIGQUIT`.
fn spawn(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    // std runs these closures after the uid/gid change, which would otherwise clear
    // the death signal.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl: then no signal would ever come.
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, tx))
        .map_err(|_| io::Error::other("pg-spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("pg-spawner thread is gone"))?
}

// ---- the user the server runs as ----

/// `Some((uid, gid))` of `nobody` when running as root, `None` otherwise.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new("nobody").unwrap();
    // SAFETY: getpwnam returns null or a pointer to a static entry, read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        Some((65534, 65534))
    } else {
        // SAFETY: non-null, from getpwnam above.
        unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
    }
}

fn chown(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} to {uid}:{gid}: {e}", path.display()));
}

fn command(program: &str, dir: &Path, owner: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .env_remove("PGDATA")
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGUSER")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

// ---- starting ----

fn start() -> Cluster {
    require();
    let began = Instant::now();
    let tmp = std::env::temp_dir();
    remove_stale(&tmp);

    let dir = tempfile::Builder::new()
        .prefix(DIR_PREFIX)
        .tempdir_in(&tmp)
        .expect("creating the cluster directory")
        .keep();
    write_owner_pid(&dir);
    let owner = run_as();
    let data = dir.join("data");
    if let Some(o) = owner {
        chown(&dir, o);
    }

    // initdb
    let mut initdb = command("initdb", &dir, owner);
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            USER,
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = spawn(initdb)
        .and_then(|c| c.wait_with_output())
        .unwrap_or_else(|e| panic!("running initdb: {e}"));
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        panic!(
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // postgres, on a free port; another port if someone else took it meanwhile
    let log_path = dir.join("postgres.log");
    for attempt in 1..=PORT_ATTEMPTS {
        let port = free_port();
        let log = std::fs::File::create(&log_path).expect("creating postgres.log");
        let mut pg = command("postgres", &dir, owner);
        pg.arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=300"])
            .args(["-c", "shared_buffers=32MB"])
            .stdout(log.try_clone().expect("dup postgres.log"))
            .stderr(log);
        let mut child = spawn(pg).unwrap_or_else(|e| panic!("starting postgres: {e}"));
        let pid = child.id();
        // Known to atexit before waiting, so a panic below still stops the server.
        *shutdown_target().lock().unwrap_or_else(|e| e.into_inner()) = Some((pid, dir.clone()));
        register_atexit();

        match wait_ready(&mut child, port) {
            Ok(()) => {
                return Cluster {
                    dir,
                    port,
                    pid,
                    started_in: began.elapsed(),
                }
            }
            Err(exited) => {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                let port_taken = text.contains("could not bind") || text.contains("already in use");
                if exited && port_taken && attempt < PORT_ATTEMPTS {
                    continue;
                }
                panic!(
                    "PostgreSQL did not come up on port {port} ({}):\n{text}",
                    if exited { "it exited" } else { "timed out" }
                );
            }
        }
    }
    unreachable!()
}

fn write_owner_pid(dir: &Path) {
    let tmp = dir.join("owner.pid.tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id())).expect("writing owner.pid");
    std::fs::rename(&tmp, dir.join("owner.pid")).expect("writing owner.pid");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// Waits for the server to answer `SELECT 1` on TCP. `Err(true)` when the postmaster
/// exited, `Err(false)` when it did not answer within [`READY_WITHIN`].
fn wait_ready(child: &mut Child, port: u16) -> Result<(), bool> {
    let deadline = Instant::now() + READY_WITHIN;
    let url = format!("postgres://{USER}@127.0.0.1:{port}/postgres");
    let exited = |child: &mut Child| matches!(child.try_wait(), Ok(Some(_)));
    // The TCP connect first: cheap, and no sqlx runtime needed until something listens.
    loop {
        if exited(child) {
            return Err(true);
        }
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let answered = on_own_runtime(async move {
        while Instant::now() < deadline {
            if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                if let Ok(1) = sqlx::query_scalar::<_, i32>("SELECT 1")
                    .fetch_one(&mut c)
                    .await
                {
                    let _ = c.close().await;
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    });
    if answered {
        Ok(())
    } else {
        Err(exited(child))
    }
}

// ---- cleanup ----

fn shutdown_target() -> &'static Mutex<Option<(u32, PathBuf)>> {
    static TARGET: OnceLock<Mutex<Option<(u32, PathBuf)>>> = OnceLock::new();
    TARGET.get_or_init(|| Mutex::new(None))
}

fn register_atexit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(at_exit);
        }
    });
}

extern "C" fn at_exit() {
    let Some((pid, dir)) = shutdown_target().lock().ok().and_then(|mut t| t.take()) else {
        return;
    };
    let pid = pid as libc::pid_t;
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGQUIT);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let mut status = 0;
            let r = libc::waitpid(pid, &mut status, libc::WNOHANG);
            if r == pid || r == -1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn alive(pid: libc::pid_t) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks existence. EPERM means it exists (another user's).
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn read_pid(path: &Path) -> Option<libc::pid_t> {
    let mut s = String::new();
    std::fs::File::open(path)
        .ok()?
        .read_to_string(&mut s)
        .ok()?;
    s.lines().next()?.trim().parse().ok()
}

/// Removes the `custsync-pg-*` directories under `root` whose `owner.pid` names a
/// process no longer alive (a postmaster still running there is sent SIGQUIT first).
/// Directories without `owner.pid` are left alone: they may be another process's,
/// still being set up. Returns what it removed.
pub fn remove_stale(root: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return removed;
    };
    for e in entries.flatten() {
        let path = e.path();
        let is_ours = e.file_name().to_string_lossy().starts_with(DIR_PREFIX)
            && e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_ours {
            continue;
        }
        let Some(owner) = read_pid(&path.join("owner.pid")) else {
            continue;
        };
        if alive(owner) {
            continue;
        }
        if let Some(pm) = read_pid(&path.join("data/postmaster.pid")) {
            let cmdline = std::fs::read(format!("/proc/{pm}/cmdline")).unwrap_or_default();
            if alive(pm) && String::from_utf8_lossy(&cmdline).contains("postgres") {
                // SAFETY: plain kill on a pid that is a postgres process.
                unsafe {
                    libc::kill(pm, libc::SIGQUIT);
                }
            }
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}
