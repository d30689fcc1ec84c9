//! Many tenants (DESIGN 13), run by `cargo bench --bench tenants` (add `-- --quick`
//! for 100 tenants).
//!
//! `BENCH_TENANTS` tenants (default 1000; a comma-separated list measures each size,
//! e.g. `100,200`, to see whether the cost is linear) of `BENCH_TENANT_CUSTOMERS`
//! customers each (default 1000). All tenants share one set of the five emulators
//! (so the sockets stay few), seeded once: one tenant's first reconciliation
//! converges them (`--once --tenant t0000`), after which every other tenant's first
//! run only links what it finds (it should make no writes: the table says how many
//! it made). Then, for each store (SQLite, a file per tenant; PostgreSQL, a schema
//! per tenant on a throwaway cluster):
//!   A. first pass: `custsync --once` over every tenant of a `[tenants] dir`
//!      (`max_concurrent_tenants` at once, 8 by default)
//!   B. second pass: `--once` again, the no-op cycle of every tenant: must make zero
//!      writes. Its CPU per tenant gives how many tenants one 2-core worker keeps on
//!      a five-minute schedule at half a core: 150 CPU-seconds / CPU per tenant cycle.
//! custsync's CPU is the child's user + system time (`wait4`); on PostgreSQL the
//! server's own CPU (postmaster and children, from `/proc`) is reported beside it.
//!
//! Then the failover time (`BENCH_FAILOVER_TENANTS`, default 20 tenants, on
//! PostgreSQL): two daemons, `[sync] schedule = "*/2 * * * * *"`, `lease_secs = 5`;
//! one is sent SIGKILL while it holds leases, and for each tenant it held the time is
//! measured from the kill until the tenant's next cycle started on the other worker
//! (`custsync.leases`: `worker` changed, `last_started` after the kill). Twice: with
//! the killed worker on this host (its peers see its pid is gone and free its leases
//! at once), and with it in a UTS namespace of another hostname (`unshare --uts`, as
//! root), where the peers must wait for the lease to expire.
//! `BENCH_SKIP=sqlite,postgres,failover` skips parts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Row as _;

use custsync::sandbox::all::Sandboxes;
use custsync::sandbox::{ecwid, malomo, nuvemshop, partially};

#[path = "common/measure.rs"]
mod measure;
#[path = "../tests/common/pg.rs"]
mod pg;

const UNLIMITED: f64 = 1_000_000.0;
/// Half a core for five minutes, in CPU seconds.
const BUDGET: f64 = 150.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") && std::env::var_os("BENCH_RUN").is_none() {
        println!("tenants benchmark: run it with `cargo bench --bench tenants [-- --quick]`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let code = match runtime {
        Ok(rt) => rt.block_on(bench(&args)),
        Err(e) => {
            eprintln!("BENCHMARK FAILED: starting the runtime: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|v| v.trim().replace('_', "").parse::<usize>().ok())
        .collect()
}

async fn bench(args: &[String]) -> i32 {
    let quick = args.iter().any(|a| a == "--quick") || std::env::var_os("BENCH_QUICK").is_some();
    let sizes = env_list("BENCH_TENANTS", if quick { "100" } else { "1000" });
    let customers = env_list("BENCH_TENANT_CUSTOMERS", "1000")
        .first()
        .copied()
        .unwrap_or(1000);
    let failover_tenants = env_list("BENCH_FAILOVER_TENANTS", "20")
        .first()
        .copied()
        .unwrap_or(20);
    let skip = std::env::var("BENCH_SKIP").unwrap_or_default();
    let postgres = pg::available();
    measure::print_machine("emulators, PostgreSQL and custsync");
    println!("custsync: {}", measure::custsync_binary().display());
    println!(
        "tenants: {sizes:?} of {customers} customers each, one shared set of five emulators; \
         max_concurrent_tenants 8 (the default), push_concurrency 4\n"
    );

    let world = match World::start(customers).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("BENCHMARK FAILED: {e}");
            return 1;
        }
    };
    let mut rows = Vec::new();
    let mut failed = None;
    let mut stores = Vec::new();
    if !skip.contains("sqlite") {
        stores.push(false);
    }
    if !skip.contains("postgres") && postgres {
        stores.push(true);
    }
    'sizes: for &t in &sizes {
        for &on_pg in &stores {
            match world.passes(t, on_pg, &mut rows).await {
                Ok(()) => {}
                Err(e) => {
                    failed = Some(e);
                    break 'sizes;
                }
            }
        }
    }
    print_tenant_table(&rows);

    let mut failovers = Vec::new();
    if failed.is_none() && postgres && !skip.contains("failover") {
        for other_host in [false, true] {
            if other_host && !can_unshare() {
                println!("\n(failover from another host skipped: `unshare --uts` needs root)");
                continue;
            }
            match world.failover(failover_tenants, other_host).await {
                Ok(f) => failovers.push(f),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        print_failover_table(&failovers);
    }
    if let Some(e) = failed {
        eprintln!("\nBENCHMARK FAILED: {e}");
        return 1;
    }
    0
}

// ---- The tables ----

struct PassRow {
    store: &'static str,
    tenants: usize,
    customers: usize,
    pass: &'static str,
    wall: f64,
    cpu: f64,
    server_cpu: Option<f64>,
    gets: usize,
    writes: usize,
    converged: usize,
    note: String,
}

fn print_tenant_table(rows: &[PassRow]) {
    println!("\n| store | tenants | customers each | pass | wall s | custsync CPU s | CPU ms per tenant | PostgreSQL server CPU s | server CPU ms per tenant | GET requests | writes | tenants converged | note |");
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let per_t = r.cpu * 1e3 / r.tenants.max(1) as f64;
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.store,
            r.tenants,
            r.customers,
            r.pass,
            r.wall,
            r.cpu,
            per_t,
            r.server_cpu.map_or("-".into(), |c| format!("{c:.1}")),
            r.server_cpu.map_or("-".into(), |c| format!(
                "{:.0}",
                c * 1e3 / r.tenants.max(1) as f64
            )),
            r.gets,
            r.writes,
            r.converged,
            r.note
        );
    }
    println!("\nsizing from the no-op pass: tenants one 2-core worker keeps on a five-minute schedule at half a core = {BUDGET:.0} CPU-s / CPU s per tenant cycle\n");
    println!("| store | tenants measured | custsync CPU s per tenant cycle | tenants per worker (custsync CPU) | with the PostgreSQL server's CPU counted too |");
    println!("|---|---:|---:|---:|---:|");
    for r in rows.iter().filter(|r| r.pass.starts_with("B")) {
        let per = r.cpu / r.tenants.max(1) as f64;
        let with_server = r.server_cpu.map_or("-".into(), |s| {
            format!("{:.0}", BUDGET / ((r.cpu + s) / r.tenants.max(1) as f64))
        });
        println!(
            "| {} | {} | {:.3} | {:.0} | {} |",
            r.store,
            r.tenants,
            per,
            BUDGET / per,
            with_server
        );
    }
}

struct Failover {
    other_host: bool,
    tenants: usize,
    held: usize,
    /// Seconds from the kill to each held tenant's next cycle on the other worker.
    times: Vec<f64>,
    missing: usize,
}

fn print_failover_table(rows: &[Failover]) {
    println!("\nfailover: two daemons on PostgreSQL, schedule every 2 s, lease_secs 5; one SIGKILLed while it holds leases\n");
    println!("| killed worker | tenants | leases it held at the kill | min s | median s | max s | not taken over within 60 s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for f in rows {
        let mut t = f.times.clone();
        t.sort_by(f64::total_cmp);
        let q = |x: Option<&f64>| x.map_or("-".into(), |v| format!("{v:.2}"));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            if f.other_host {
                "on another host (UTS namespace): lease must expire"
            } else {
                "on the same host: seen gone"
            },
            f.tenants,
            f.held,
            q(t.first()),
            q(t.get(t.len() / 2)),
            q(t.last()),
            f.missing
        );
    }
}

// ---- The world: five emulators shared by every tenant ----

struct World {
    sandboxes: Sandboxes,
    dir: tempfile::TempDir,
    customers: usize,
    /// Whether a tenant's first run has converged the emulators.
    converged: std::sync::atomic::AtomicBool,
}

impl World {
    async fn start(customers: usize) -> Result<World, String> {
        let io = |e: std::io::Error| format!("starting the emulators: {e}");
        let sandboxes =
            Sandboxes::start_with(measure::emulator_options(nuvemshop::Options::default()))
                .await
                .map_err(io)?;
        // Person i in provider i % 4, and every third also in the next one.
        for i in 0..customers {
            let email = format!("person{i}@example.com");
            let (first, last) = ("Ann", format!("Lee{}", i % 97));
            for p in [i % 4, (i + 1) % 4]
                .into_iter()
                .take(1 + usize::from(i % 3 == 0))
            {
                match p {
                    0 => {
                        let seed = nuvemshop::seed(&format!("{first} {last}"), &email);
                        sandboxes.nuvemshop.insert(seed);
                    }
                    1 => {
                        sandboxes.ecwid.insert(ecwid::Customer::new(
                            &email,
                            Some(first),
                            Some(&last),
                        ));
                    }
                    2 => {
                        sandboxes.malomo.insert(malomo::Customer::new(
                            &email,
                            Some(first),
                            Some(&last),
                            None,
                        ));
                    }
                    _ => {
                        sandboxes.partially.insert(partially::Customer::new(
                            &email,
                            Some(first),
                            Some(&last),
                        ));
                    }
                }
            }
        }
        Ok(World {
            sandboxes,
            dir: tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?,
            customers,
            converged: false.into(),
        })
    }

    fn name(i: usize) -> String {
        format!("t{i:04}")
    }

    /// A fresh directory with `tenants` tenant files and the main config; answers
    /// the config's path.
    fn fleet(
        &self,
        label: &str,
        tenants: usize,
        store_url: &str,
        extra: &str,
    ) -> Result<PathBuf, String> {
        let io = |e: std::io::Error| format!("writing the tenants of {label}: {e}");
        let root = self.dir.path().join(label);
        let dir = root.join("tenants");
        std::fs::create_dir_all(&dir).map_err(io)?;
        let providers = self.sandboxes.providers_toml(UNLIMITED, 1000);
        for i in 0..tenants {
            std::fs::write(dir.join(format!("{}.toml", Self::name(i))), &providers).map_err(io)?;
        }
        let config = root.join("custsync.toml");
        let text = format!(
            "[store]\nurl = \"{store_url}\"\n\n[tenants]\ndir = \"{}\"\n\n{extra}",
            dir.display()
        );
        std::fs::write(&config, text).map_err(io)?;
        Ok(config)
    }

    /// The two passes over `tenants` tenants on one store, as table rows.
    async fn passes(
        &self,
        tenants: usize,
        on_pg: bool,
        rows: &mut Vec<PassRow>,
    ) -> Result<(), String> {
        let store = if on_pg { "PostgreSQL" } else { "SQLite" };
        let label = format!("{}-{tenants}", store.to_lowercase());
        let url = if on_pg {
            pg::database().await
        } else {
            let root = self.dir.path().join(&label);
            std::fs::create_dir_all(&root).map_err(|e| format!("{label}: {e}"))?;
            format!("sqlite://{}", root.join("custsync.db").display())
        };
        let config = self.fleet(&label, tenants, &url, "")?;
        let root = config.parent().unwrap_or(Path::new(".")).to_path_buf();

        if !self
            .converged
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.sandboxes.clear_logs();
            eprintln!("converging the emulators: the first run of tenant t0000...");
            let run = run_once(&config, &root, &["--tenant", "t0000"], None).await?;
            let writes = self.sandboxes.writes();
            eprintln!(
                "  {:.1} s CPU, {writes} writes; the emulators now hold every person in every provider",
                run.cpu
            );
            if run.code != 0 {
                return Err(format!(
                    "the converging run exited {}:\n{}",
                    run.code, run.tail
                ));
            }
        }
        let pid = on_pg.then(|| pg::cluster().pid());
        for pass in ["A. first pass (links)", "B. second pass (no-op)"] {
            self.sandboxes.clear_logs();
            eprintln!("{store}, {tenants} tenants: {pass}...");
            let run = run_once(&config, &root, &[], pid).await?;
            let (gets, writes) = self
                .sandboxes
                .logs()
                .iter()
                .fold((0, 0), |(g, w), (_, log)| {
                    let all = log.all();
                    (
                        g + all.iter().filter(|r| r.method == "GET").count(),
                        w + all.iter().filter(|r| r.is_write()).count(),
                    )
                });
            let converged = run
                .report
                .get("tenants")
                .and_then(Value::as_object)
                .map_or(0, |ts| {
                    ts.values()
                        .filter(|t| t["converged"].as_bool() == Some(true))
                        .count()
                });
            eprintln!(
                "  {:.1} s wall, {:.1} s CPU{}, {gets} GETs, {writes} writes, {converged}/{tenants} converged",
                run.wall,
                run.cpu,
                run.server_cpu
                    .map_or(String::new(), |s| format!(" (+{s:.1} s server)"))
            );
            let mut note = String::new();
            if writes > 0 {
                note = write_breakdown(&self.sandboxes);
            }
            rows.push(PassRow {
                store,
                tenants,
                customers: self.customers,
                pass,
                wall: run.wall,
                cpu: run.cpu,
                server_cpu: run.server_cpu,
                gets,
                writes,
                converged,
                note,
            });
            if run.code != 0 {
                return Err(format!(
                    "{store}, {tenants} tenants, {pass}: custsync exited {}:\n{}",
                    run.code, run.tail
                ));
            }
            if pass.starts_with('B') && writes > 0 {
                return Err(format!(
                    "{store}, {tenants} tenants: the no-op pass made {writes} writes (expected zero)"
                ));
            }
        }
        Ok(())
    }

    /// Two daemons on one PostgreSQL database; one killed while it holds leases.
    async fn failover(&self, tenants: usize, other_host: bool) -> Result<Failover, String> {
        let label = format!("failover-{}", if other_host { "other" } else { "same" });
        let url = pg::database().await;
        let extra = "[sync]\nschedule = \"*/2 * * * * *\"\n\n[cluster]\nlease_secs = 5\n\n[server]\nlisten = \"127.0.0.1:0\"\n";
        let config = self.fleet(&label, tenants, &url, extra)?;
        let root = config.parent().unwrap_or(Path::new(".")).to_path_buf();
        if !self
            .converged
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            eprintln!("converging the emulators: the first run of tenant t0000...");
            let run = run_once(&config, &root, &["--tenant", "t0000"], None).await?;
            if run.code != 0 {
                return Err(format!(
                    "the converging run exited {}:\n{}",
                    run.code, run.tail
                ));
            }
        }
        // Every tenant linked first, so the daemons' cycles are no-op cycles.
        eprintln!("failover ({label}): linking {tenants} tenants...");
        let run = run_once(&config, &root, &[], None).await?;
        if run.code != 0 {
            return Err(format!(
                "{label}: the linking run exited {}:\n{}",
                run.code, run.tail
            ));
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .map_err(|e| format!("{label}: connecting: {e}"))?;

        let spawn = |worker: &str, unshare: bool| -> Result<std::process::Child, String> {
            let log = std::fs::File::create(root.join(format!("{worker}.log")))
                .map_err(|e| format!("{label}: log: {e}"))?;
            let mut cmd = if unshare {
                let mut c = Command::new("unshare");
                c.args([
                    "--uts",
                    "sh",
                    "-c",
                    "hostname custsync-bench-other-host && exec \"$0\" \"$@\"",
                ])
                .arg(measure::custsync_binary());
                c
            } else {
                Command::new(measure::custsync_binary())
            };
            cmd.arg("--config")
                .arg(&config)
                .env_remove("CUSTSYNC_CONFIG")
                .env("RUST_LOG", "custsync=info,warn")
                .env("CUSTSYNC__CLUSTER__WORKER_ID", worker)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("{label}: spawning {worker}: {e}"))
        };
        let mut victim = spawn("victim", other_host)?;
        let mut survivor = spawn("survivor", false)?;

        let outcome = async {
            // Wait for the victim to hold leases (at least 3, or the most seen in 30 s).
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut held: Vec<String> = Vec::new();
            loop {
                let now: Vec<String> = sqlx::query_scalar(
                    "SELECT tenant FROM custsync.leases WHERE worker = $1 AND released = 0",
                )
                .bind("victim")
                .fetch_all(&pool)
                .await
                .map_err(|e| format!("{label}: reading the leases: {e}"))?;
                if now.len() >= 3 || (Instant::now() > deadline && !now.is_empty()) {
                    held = now;
                    break;
                }
                if Instant::now() > deadline + Duration::from_secs(30) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if held.is_empty() {
                return Err(format!("{label}: the victim never held a lease"));
            }
            let killed_at = chrono::Utc::now();
            // SIGKILL, and reap it at once, as an init or kubelet would: a zombie's
            // pid still answers kill(pid, 0).
            let _ = victim.kill();
            let _ = victim.wait();
            eprintln!("  killed the victim holding {} leases", held.len());
            let mut times: BTreeMap<String, f64> = BTreeMap::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while times.len() < held.len() && Instant::now() < deadline {
                let rows = sqlx::query(
                    "SELECT tenant, worker, last_started FROM custsync.leases WHERE tenant = ANY($1)",
                )
                .bind(&held)
                .fetch_all(&pool)
                .await
                .map_err(|e| format!("{label}: reading the leases: {e}"))?;
                for r in rows {
                    let tenant: String = r.get(0);
                    let worker: String = r.get(1);
                    let started: Option<String> = r.get(2);
                    let started = started
                        .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
                        .map(|t| t.with_timezone(&chrono::Utc));
                    if let Some(s) = started {
                        if worker == "survivor" && s > killed_at && !times.contains_key(&tenant) {
                            times.insert(tenant, (s - killed_at).as_seconds_f64());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let held_set: BTreeSet<&String> = held.iter().collect();
            Ok(Failover {
                other_host,
                tenants,
                held: held.len(),
                missing: held_set.len() - times.len(),
                times: times.into_values().collect(),
            })
        }
        .await;
        let _ = victim.kill();
        let _ = victim.wait();
        let _ = survivor.kill();
        let _ = survivor.wait();
        pool.close().await;
        if let Ok(f) = &outcome {
            eprintln!(
                "  {} of {} taken over: {:?} s",
                f.times.len(),
                f.held,
                f.times
            );
        }
        outcome
    }
}

/// The writes per provider and method, for a pass that should have made none.
fn write_breakdown(sb: &Sandboxes) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (name, log) in sb.logs() {
        for r in log.all().iter().filter(|r| r.is_write()) {
            *counts.entry(format!("{name} {}", r.method)).or_default() += 1;
        }
    }
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!("writes: {}", parts.join(", "))
}

fn can_unshare() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() == 0 };
    root && Command::new("unshare")
        .args(["--uts", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

// ---- The child: run, wait, measure ----

struct Run {
    code: i32,
    wall: f64,
    cpu: f64,
    server_cpu: Option<f64>,
    report: Value,
    tail: String,
}

/// `custsync --once --config CONFIG --report ...` plus `more`, reaped with `wait4` for
/// its CPU; with `postmaster`, the server's CPU over the run too.
async fn run_once(
    config: &Path,
    root: &Path,
    more: &[&str],
    postmaster: Option<u32>,
) -> Result<Run, String> {
    let report = root.join("report.json");
    let log = root.join("custsync.log");
    let _ = std::fs::remove_file(&report);
    let (c, r, l) = (config.to_path_buf(), report.clone(), log.clone());
    let more: Vec<String> = more.iter().map(|s| s.to_string()).collect();
    let before = postmaster.map(measure::server_cpu);
    let (code, wall, cpu) = tokio::task::spawn_blocking(move || run_child(&c, &r, &l, &more))
        .await
        .map_err(|e| format!("running custsync: {e}"))?
        .map_err(|e| format!("running custsync: {e}"))?;
    let server = match (postmaster, before) {
        (Some(pid), Some(b)) => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Some(measure::server_cpu(pid) - b)
        }
        _ => None,
    };
    let report: Value = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(json!(null));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    Ok(Run {
        code,
        wall,
        cpu,
        server_cpu: server,
        report,
        tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

fn run_child(
    config: &Path,
    report: &Path,
    log: &Path,
    more: &[String],
) -> std::io::Result<(i32, f64, f64)> {
    let log_file = std::fs::File::create(log)?;
    let started = Instant::now();
    let child = Command::new(measure::custsync_binary())
        .arg("--once")
        .arg("--config")
        .arg(config)
        .arg("--report")
        .arg(report)
        .args(more)
        .env_remove("CUSTSYNC_CONFIG")
        .env("RUST_LOG", "custsync=info,warn")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()?;
    let (code, usage) = measure::wait_child(child.id() as libc::pid_t)?;
    Ok((
        code,
        started.elapsed().as_secs_f64(),
        measure::cpu_secs(&usage),
    ))
}
