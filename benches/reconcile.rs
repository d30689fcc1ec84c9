//! The performance scenarios of DESIGN section 11, run by `cargo bench --bench reconcile`
//! (add `-- --quick` for 5,000 customers; `BENCH_CUSTOMERS=N` for any size).
//!
//! Starts the five sandbox emulators in this process, seeds them, and runs the real
//! `custsync` binary (release build) as a child with `--once`, measuring the child's
//! CPU seconds and peak RSS (`wait4`), the wall time, and the requests each emulator
//! received. Prints the machine, then one table row per scenario:
//!   1. first reconciliation of N customers spread over the four listable providers
//!   2. second reconciliation, nothing changed outside: must make zero writes
//!      (2b: the same again, the steady state of a daemon, where the records the
//!      first run created are listed as the same text as before)
//!   3. 1% of the customers edited in one provider each
//!   4. the first reconciliation again at N/10, for peak RSS against size
//!   5. rate limits on (50/s per provider, enforced by Nuvemshop): wall time vs floor
//!
//! Not a test: `cargo test` does not build it, and run without `--bench` (as
//! `cargo test --benches` would) it only says how to run it.
//!
//! Scenarios 1-3 run again with the store on PostgreSQL (a database on a throwaway
//! cluster, `tests/common/pg.rs`) when `initdb` and `postgres` are on PATH
//! (`BENCH_NO_PG=1` skips them); the rows then also give the server's own CPU seconds
//! (the postmaster and its children, from `/proc`, before and after the run).
//!
//! `BENCH_BASELINE=PATH` runs every single-tenant SQLite scenario with that build too,
//! in the same run, each on its own freshly seeded emulators (the seeding is
//! deterministic), and adds a table of CPU now vs baseline.
//!
//! Also: `BENCH_CUSTSYNC=PATH` measures another build of custsync (before/after);
//! `BENCH_WRAP="perf record -g -o /tmp/p{run}.data"` runs each custsync under a
//! profiler ({run} counts the runs; the measurements then include the profiler).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use custsync::sandbox::all::Sandboxes;
use custsync::sandbox::{ecwid, malomo, nuvemshop, partially, RequestLog};

#[path = "common/measure.rs"]
mod measure;
#[path = "../tests/common/pg.rs"]
mod pg;

const FIRST: [&str; 16] = [
    "Ann", "Bob", "Carla", "Dmitri", "Eva", "Farid", "Grace", "Hugo", "Ines", "Jun", "Kofi",
    "Lena", "Mateo", "Nora", "Omar", "Priya",
];
const LAST: [&str; 16] = [
    "Lee", "Stone", "Souza", "Ivanov", "Novak", "Haddad", "Hopper", "Martin", "Costa", "Tanaka",
    "Mensah", "Berg", "Rossi", "Walsh", "Khan", "Patel",
];
const UNLIMITED: f64 = 1_000_000.0;
const LIMITED: f64 = 50.0;
const LIMITED_BURST: u32 = 10;

fn main() {
    if std::env::var_os(LAUNCHER).is_some() {
        launcher::serve();
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") && std::env::var_os("BENCH_RUN").is_none() {
        println!("reconcile benchmark: run it with `cargo bench --bench reconcile [-- --quick]`");
        return;
    }
    // Started while this process is small: see `launcher`.
    let launcher = match launcher::Launcher::start() {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("BENCHMARK FAILED: starting the launcher: {e}");
            std::process::exit(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => rt.block_on(bench(&args, launcher)),
        Err(e) => {
            eprintln!("BENCHMARK FAILED: starting the runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn bench(args: &[String], launcher: Arc<launcher::Launcher>) {
    let quick = args.iter().any(|a| a == "--quick") || std::env::var_os("BENCH_QUICK").is_some();
    let n = std::env::var("BENCH_CUSTOMERS")
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse::<usize>().ok())
        .unwrap_or(if quick { 5_000 } else { 100_000 });
    measure::print_machine("emulators and custsync");
    let mut builds = vec![Build {
        name: "now",
        path: measure::custsync_binary(),
    }];
    if let Some(path) = std::env::var_os("BENCH_BASELINE") {
        builds.push(Build {
            name: "baseline",
            path: PathBuf::from(path),
        });
    }
    for b in &builds {
        println!("custsync ({}): {}", b.name, b.path.display());
    }
    let postgres = std::env::var_os("BENCH_NO_PG").is_none() && pg::available();
    if !postgres {
        println!("PostgreSQL: skipped (BENCH_NO_PG, or initdb/postgres not on PATH)");
    }
    println!("customers: {n} (push_concurrency 4, the default)\n");
    let mut rows = Vec::new();
    let mut outcome = Ok(());
    for b in &builds {
        outcome = scenarios(n, &launcher, b, Store::Sqlite, &mut rows).await;
        if outcome.is_err() {
            break;
        }
    }
    if outcome.is_ok() && postgres {
        outcome = scenarios(n, &launcher, &builds[0], Store::Postgres, &mut rows).await;
    }
    print_table(&rows);
    if let Err(e) = outcome {
        eprintln!("\nBENCHMARK FAILED: {e}");
        std::process::exit(1);
    }
}

/// A build of custsync measured: "now" (this one, or `BENCH_CUSTSYNC`) or "baseline".
struct Build {
    name: &'static str,
    path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Store {
    Sqlite,
    Postgres,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Sqlite => "SQLite",
            Store::Postgres => "PostgreSQL",
        }
    }
}

/// Scenarios 1-5 for one build on SQLite; 1-3 on PostgreSQL.
async fn scenarios(
    n: usize,
    launcher: &Arc<launcher::Launcher>,
    build: &Build,
    store: Store,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let at = rows.len();
    let mut world = World::start(Limits::Off, launcher, build, store).await?;
    world.seed(n);
    let seeded = format!(
        "{} records seeded, each person in 1-3 providers",
        world.records()
    );
    let first = world
        .once("1. first reconciliation", n, Some(seeded))
        .await?;
    rows.push(first);
    let note = "must be 0 writes".to_string();
    let second = world.once("2. no outside change", n, Some(note)).await?;
    let zero = second.writes == 0;
    rows.push(second);
    if !zero {
        return Err("the second reconciliation made write requests (expected zero)".into());
    }
    // The steady state of a daemon: the run after a no-op one. Scenario 2 is the
    // first listing of the records the first run created; from then on a record
    // listed as the same text as before costs no decoding and no write.
    let note = "must be 0 writes; the steady state".to_string();
    let steady = world
        .once("2b. no outside change, again", n, Some(note))
        .await?;
    if steady.writes != 0 {
        return Err("the third reconciliation made write requests (expected zero)".into());
    }
    rows.push(steady);
    let changed = world.edit_one_percent();
    let note = format!(
        "{changed} last names edited, one provider each; expected writes {changed} x 4 other providers = {}",
        changed * 4
    );
    rows.push(world.once("3. 1% changed", n, Some(note)).await?);
    drop(world);
    if store == Store::Postgres {
        return Ok(());
    }

    let small = (n / 10).max(1);
    let mut world = World::start(Limits::Off, launcher, build, store).await?;
    world.seed(small);
    let rss_n = rows[at].rss_mib;
    let mut row = world.once("4. first, N/10", small, None).await?;
    row.note = format!(
        "peak RSS {:.0} MiB at {small} customers vs {rss_n:.0} MiB at {n}",
        row.rss_mib
    );
    rows.push(row);
    drop(world);

    rows.push(rate_limited(launcher, build).await?);
    Ok(())
}

/// Scenario 5: 150 people, each in one listable provider, so each provider gets
/// 112-150 creates at 50 requests a second.
async fn rate_limited(launcher: &Arc<launcher::Launcher>, build: &Build) -> Result<Row, String> {
    let people = 150;
    let mut world = World::start(Limits::On, launcher, build, Store::Sqlite).await?;
    world.seed_single_home(people);
    let mut row = world.once("5. rate limited 50/s", people, None).await?;
    let per_provider = &row.per_provider;
    let (name, most) = per_provider
        .iter()
        .map(|t| (t.name, t.writes))
        .max_by_key(|(_, w)| *w)
        .unwrap_or(("-", 0));
    let floor = most as f64 / LIMITED;
    let requests = per_provider
        .iter()
        .map(|t| t.gets + t.writes)
        .max()
        .unwrap_or(0);
    row.note = format!(
        "floor {floor:.1} s = {most} writes / {LIMITED:.0} per s ({name}, the busiest); \
         wall/floor {:.2} (a burst of {LIMITED_BURST} goes at once: its {requests} requests need >= {:.1} s)",
        row.wall / floor.max(f64::MIN_POSITIVE),
        requests.saturating_sub(LIMITED_BURST as usize) as f64 / LIMITED,
    );
    Ok(row)
}

// ---- The table ----

#[derive(Debug, Clone, Default)]
struct Traffic {
    name: &'static str,
    gets: usize,
    writes: usize,
    too_many: usize,
}

#[derive(Debug, Clone, Default)]
struct Row {
    scenario: String,
    store: &'static str,
    build: &'static str,
    customers: usize,
    /// Records custsync listed (the report's `fetched`, summed over the providers).
    listed: u64,
    /// CPU seconds of the PostgreSQL server (postmaster and children) over the run.
    server_cpu: Option<f64>,
    wall: f64,
    cpu: f64,
    rss_mib: f64,
    gets: usize,
    writes: usize,
    too_many: usize,
    note: String,
    per_provider: Vec<Traffic>,
    /// The report's CPU seconds by phase (list, merge, push, activity); builds older
    /// than the report's `cpu_secs` have none.
    phases: Option<[f64; 4]>,
    /// Customers merged and planned (the report's `planned_customers`).
    planned: u64,
}

/// CPU microseconds per unit, or "-" where there are none.
fn per(cpu: f64, units: u64) -> String {
    if units == 0 {
        "-".into()
    } else {
        format!("{:.0}", cpu * 1e6 / units as f64)
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "| scenario | store | build | customers | wall s | custsync CPU s | CPU µs/write | CPU µs/listed record | CPU µs/customer | peak RSS MiB | GET requests | writes | 429s | PostgreSQL server CPU s | note |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.2} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.store,
            r.build,
            r.customers,
            r.wall,
            r.cpu,
            per(r.cpu, r.writes as u64),
            per(r.cpu, r.listed),
            per(r.cpu, r.customers as u64),
            r.rss_mib,
            r.gets,
            r.writes,
            r.too_many,
            r.server_cpu.map_or("-".into(), |c| format!("{c:.2}")),
            r.note
        );
    }
    if rows.iter().any(|r| r.phases.is_some()) {
        println!("\nby phase (the report's `cpu_secs`: the process's CPU in each phase; other = start, migrations, exit):\n");
        println!("| scenario | store | build | list CPU s | µs/listed record | merge CPU s | customers planned | µs/planned customer | push CPU s | µs/write | other CPU s |");
        println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in rows {
            let Some([list, merge, push, activity]) = r.phases else {
                continue;
            };
            println!(
                "| {} | {} | {} | {:.2} | {} | {:.2} | {} | {} | {:.2} | {} | {:.2} |",
                r.scenario,
                r.store,
                r.build,
                list,
                per(list, r.listed),
                merge,
                r.planned,
                per(merge, r.planned),
                push,
                per(push, r.writes as u64),
                r.cpu - list - merge - push - activity,
            );
        }
    }
    let find = |scenario: &str, store: &str, build: &str| {
        rows.iter()
            .find(|r| r.scenario == scenario && r.store == store && r.build == build)
    };
    let sqlite_now: Vec<&Row> = rows
        .iter()
        .filter(|r| r.store == "SQLite" && r.build == "now")
        .collect();
    if rows.iter().any(|r| r.build == "baseline") {
        println!("\nnow vs baseline (SQLite, custsync CPU seconds; ratio = now / baseline):\n");
        println!("| scenario | CPU s now | CPU s baseline | now / baseline | µs/write now | µs/write baseline | µs/listed now | µs/listed baseline | µs/customer now | µs/customer baseline |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in &sqlite_now {
            let Some(b) = find(&r.scenario, "SQLite", "baseline") else {
                continue;
            };
            println!(
                "| {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
                r.scenario,
                r.cpu,
                b.cpu,
                ratio(r.cpu, b.cpu),
                per(r.cpu, r.writes as u64),
                per(b.cpu, b.writes as u64),
                per(r.cpu, r.listed),
                per(b.cpu, b.listed),
                per(r.cpu, r.customers as u64),
                per(b.cpu, b.customers as u64),
            );
        }
    }
    if rows.iter().any(|r| r.store == "PostgreSQL") {
        println!("\nPostgreSQL vs SQLite (build now; goal: custsync CPU on PostgreSQL within 1.5x of SQLite):\n");
        println!("| scenario | custsync CPU s SQLite | custsync CPU s PostgreSQL | PostgreSQL / SQLite | within 1.5x | PostgreSQL server CPU s | custsync + server / SQLite |");
        println!("|---|---:|---:|---:|---|---:|---:|");
        for r in &sqlite_now {
            let Some(p) = find(&r.scenario, "PostgreSQL", "now") else {
                continue;
            };
            let server = p.server_cpu.unwrap_or(0.0);
            println!(
                "| {} | {:.2} | {:.2} | {} | {} | {:.2} | {} |",
                r.scenario,
                r.cpu,
                p.cpu,
                ratio(p.cpu, r.cpu),
                if p.cpu <= 1.5 * r.cpu { "yes" } else { "NO" },
                server,
                ratio(p.cpu + server, r.cpu),
            );
        }
    }
    println!("\nrequests per provider (GET / writes):\n");
    let names: Vec<&str> = rows
        .first()
        .map(|r| r.per_provider.iter().map(|t| t.name).collect())
        .unwrap_or_default();
    println!("| scenario | store | build | {} |", names.join(" | "));
    println!("|---|---|---|{}", "---:|".repeat(names.len()));
    for r in rows {
        let cells: Vec<String> = r
            .per_provider
            .iter()
            .map(|t| format!("{} / {}", t.gets, t.writes))
            .collect();
        println!(
            "| {} | {} | {} | {} |",
            r.scenario,
            r.store,
            r.build,
            cells.join(" | ")
        );
    }
}

// ---- The world: five emulators, a database, the people seeded ----

#[derive(Debug, Clone, Copy, PartialEq)]
enum Limits {
    Off,
    On,
}

/// Where one person was seeded.
#[derive(Debug, Clone)]
enum Home {
    Store(u64),
    Storefront(u64),
    Shipping(String),
    Plans(String),
}

struct World {
    sandboxes: Sandboxes,
    dir: tempfile::TempDir,
    limits: Limits,
    homes: Vec<Vec<Home>>,
    rng: StdRng,
    launcher: Arc<launcher::Launcher>,
    binary: PathBuf,
    build: &'static str,
    store: Store,
    /// `[store] url`: a SQLite file in `dir`, or a fresh database on the cluster.
    store_url: String,
}

impl World {
    async fn start(
        limits: Limits,
        launcher: &Arc<launcher::Launcher>,
        build: &Build,
        store: Store,
    ) -> Result<World, String> {
        let io = |e: std::io::Error| format!("starting the emulators: {e}");
        let nuvem = nuvemshop::Options {
            rate_limit: (limits == Limits::On).then_some((LIMITED_BURST, LIMITED)),
            ..Default::default()
        };
        let sandboxes = Sandboxes::start_with(measure::emulator_options(nuvem))
            .await
            .map_err(io)?;
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let store_url = match store {
            Store::Sqlite => format!("sqlite://{}", dir.path().join("custsync.db").display()),
            Store::Postgres => pg::database().await,
        };
        Ok(World {
            sandboxes,
            dir,
            limits,
            homes: Vec::new(),
            rng: StdRng::seed_from_u64(20_261_123),
            launcher: launcher.clone(),
            binary: build.path.clone(),
            build: build.name,
            store,
            store_url,
        })
    }

    fn records(&self) -> usize {
        self.homes.iter().map(Vec::len).sum()
    }

    /// `n` people, each in one to three of the four listable providers; a record after
    /// a person's first has its email in other letter case (a third of them) or with
    /// spaces around it (a tenth). Half have a phone.
    fn seed(&mut self, n: usize) {
        for i in 0..n {
            let k = self.rng.random_range(1..=3usize);
            let mut which = [0usize, 1, 2, 3];
            for j in 0..k {
                let pick = self.rng.random_range(j..4);
                which.swap(j, pick);
            }
            let person = Person::new(i, self.rng.random_bool(0.5));
            let mut homes = Vec::with_capacity(k);
            for (nth, &p) in which[..k].iter().enumerate() {
                let email = if nth == 0 {
                    person.email.clone()
                } else {
                    self.variant(&person.email, p != 3)
                };
                homes.push(self.insert(p, &person, &email));
            }
            self.homes.push(homes);
        }
    }

    /// `n` people, each in exactly one listable provider, in turn.
    fn seed_single_home(&mut self, n: usize) {
        for i in 0..n {
            let person = Person::new(i, i % 2 == 0);
            let home = self.insert(i % 4, &person, &person.email);
            self.homes.push(vec![home]);
        }
    }

    /// Another spelling of `email`: capitals, or (where `spaces`) spaces around it.
    /// Partial.ly gets no spaces: it validates the stored email on every update, so
    /// a record it holds can never have them.
    fn variant(&mut self, email: &str, spaces: bool) -> String {
        let roll: f64 = self.rng.random();
        if roll < 0.33 {
            let mut chars: Vec<char> = email.chars().collect();
            if let Some(c) = chars.first_mut() {
                *c = c.to_ascii_uppercase();
            }
            chars
                .into_iter()
                .collect::<String>()
                .replace("@example", "@Example")
        } else if roll < 0.43 && spaces {
            format!("  {email} ")
        } else {
            email.to_string()
        }
    }

    fn insert(&self, provider: usize, p: &Person, email: &str) -> Home {
        let sb = &self.sandboxes;
        match provider {
            0 => {
                let mut seed = nuvemshop::seed(&format!("{} {}", p.first, p.last), email);
                seed["phone"] = p.phone.clone().map_or(Value::Null, Value::String);
                Home::Store(sb.nuvemshop.insert(seed))
            }
            1 => {
                let mut c = ecwid::Customer::new(email, Some(p.first), Some(p.last));
                if let Some(phone) = &p.phone {
                    c.billing_person.insert("phone".into(), json!(phone));
                }
                Home::Storefront(sb.ecwid.insert(c))
            }
            2 => {
                let c =
                    malomo::Customer::new(email, Some(p.first), Some(p.last), p.phone.as_deref());
                Home::Shipping(sb.malomo.insert(c))
            }
            _ => {
                let mut c = partially::Customer::new(email, Some(p.first), Some(p.last));
                c.phone = p.phone.clone();
                Home::Plans(sb.partially.insert(c))
            }
        }
    }

    /// Edits the last name of 1% of the people in one provider each (where they were
    /// seeded, as a user of that provider would). Answers how many.
    fn edit_one_percent(&mut self) -> usize {
        let count = (self.homes.len() / 100).max(1);
        let step = self.homes.len() / count;
        let sb = &self.sandboxes;
        for i in (0..count).map(|k| k * step) {
            let last = format!("{}-Edited", LAST[i % LAST.len()]);
            let full = format!("{} {last}", FIRST[i % FIRST.len()]);
            match &self.homes[i][0] {
                Home::Store(id) => sb.nuvemshop.edit(*id, |c| c["name"] = json!(full)),
                Home::Storefront(id) => sb.ecwid.edit(*id, |c| {
                    c.billing_person.insert("lastName".into(), json!(last));
                    c.billing_person.insert("name".into(), json!(full));
                    c.name = Some(full.clone());
                }),
                Home::Shipping(id) => sb.malomo.edit(id, |c| c.last_name = Some(last)),
                Home::Plans(id) => sb.partially.edit(id, |c| c.last_name = Some(last)),
            }
        }
        count
    }

    fn config(&self) -> Result<PathBuf, String> {
        let (per_second, burst) = match self.limits {
            Limits::Off => (UNLIMITED, 1000),
            Limits::On => (LIMITED, LIMITED_BURST),
        };
        let text = self
            .sandboxes
            .config_toml(&self.store_url, per_second, burst);
        let path = self.dir.path().join("custsync.toml");
        std::fs::write(&path, text).map_err(|e| format!("writing the config: {e}"))?;
        Ok(path)
    }

    /// One `custsync --once`, measured; the emulators' logs are read and cleared.
    async fn once(
        &self,
        scenario: &str,
        customers: usize,
        note: Option<String>,
    ) -> Result<Row, String> {
        self.sandboxes.clear_logs();
        let config = self.config()?;
        let report = self.dir.path().join("report.json");
        let log = self.dir.path().join("custsync.log");
        let _ = std::fs::remove_file(&report);
        eprintln!(
            "running {scenario} ({customers} customers, {}, {})...",
            self.store.name(),
            self.build
        );
        let (c, r, l, b) = (
            config.clone(),
            report.clone(),
            log.clone(),
            self.binary.clone(),
        );
        let launcher = self.launcher.clone();
        let server_before =
            (self.store == Store::Postgres).then(|| measure::server_cpu(pg::cluster().pid()));
        let usage = tokio::task::spawn_blocking(move || launcher.run(&b, &c, &r, &l))
            .await
            .map_err(|e| format!("{scenario}: {e}"))?
            .map_err(|e| format!("{scenario}: running custsync: {e}"))?;
        let server = match server_before {
            Some(before) => {
                // The backends of custsync's connections end just after it does.
                tokio::time::sleep(Duration::from_millis(300)).await;
                Some(measure::server_cpu(pg::cluster().pid()) - before)
            }
            None => None,
        };
        let per_provider: Vec<Traffic> = self
            .sandboxes
            .logs()
            .into_iter()
            .map(|(name, log)| traffic(name, log))
            .collect();
        let mut row = Row {
            scenario: scenario.to_string(),
            store: self.store.name(),
            build: self.build,
            customers,
            listed: 0,
            server_cpu: server,
            wall: usage.wall.as_secs_f64(),
            cpu: usage.cpu,
            rss_mib: usage.rss_kib as f64 / 1024.0,
            gets: per_provider.iter().map(|t| t.gets).sum(),
            writes: per_provider.iter().map(|t| t.writes).sum(),
            too_many: per_provider.iter().map(|t| t.too_many).sum(),
            note: note.unwrap_or_default(),
            per_provider,
            phases: None,
            planned: 0,
        };
        check_outcome(&mut row, usage.code, &report, &log)?;
        eprintln!(
            "  {:.1} s wall, {:.1} s CPU, {:.0} MiB, {} GETs, {} writes",
            row.wall, row.cpu, row.rss_mib, row.gets, row.writes
        );
        Ok(row)
    }
}

/// A run that did not converge is a failed benchmark: its log's tail says why.
fn check_outcome(row: &mut Row, code: i32, report: &Path, log: &Path) -> Result<(), String> {
    let report: Option<Value> = std::fs::read_to_string(report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let throttled: u64 = report
        .as_ref()
        .and_then(|r| r["providers"].as_object())
        .map(|ps| ps.values().filter_map(|p| p["throttled"].as_u64()).sum())
        .unwrap_or(0);
    row.listed = report
        .as_ref()
        .and_then(|r| r["providers"].as_object())
        .map(|ps| ps.values().filter_map(|p| p["fetched"].as_u64()).sum())
        .unwrap_or(0);
    row.planned = report
        .as_ref()
        .and_then(|r| r["planned_customers"].as_u64())
        .unwrap_or(0);
    row.phases = report.as_ref().and_then(|r| {
        let c = &r["cpu_secs"];
        Some(["list", "merge", "push", "activity"].map(|k| c[k].as_f64().unwrap_or(0.0)))
            .filter(|_| c.is_object())
    });
    if throttled as usize != row.too_many {
        row.note
            .push_str(&format!(" (custsync counted {throttled} 429s)"));
    }
    if code == 0 {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    let errors = report
        .as_ref()
        .map(|r| r["errors"].clone())
        .unwrap_or_default();
    Err(format!(
        "{}: custsync exited {code}; errors: {errors}\nlog tail:\n{}",
        row.scenario,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

fn traffic(name: &'static str, log: &RequestLog) -> Traffic {
    let all = log.all();
    Traffic {
        name,
        gets: all.iter().filter(|r| r.method == "GET").count(),
        writes: all.iter().filter(|r| r.is_write()).count(),
        too_many: all.iter().filter(|r| r.status == 429).count(),
    }
}

struct Person {
    email: String,
    first: &'static str,
    last: &'static str,
    phone: Option<String>,
}

impl Person {
    fn new(i: usize, phone: bool) -> Person {
        let first = FIRST[i % FIRST.len()];
        let last = LAST[i % LAST.len()];
        Person {
            email: format!(
                "{}.{}{i}@example.com",
                first.to_lowercase(),
                last.to_lowercase()
            ),
            first,
            last,
            phone: phone.then(|| format!("+1 555 {:03} {:04}", i / 10_000 % 1000, i % 10_000)),
        }
    }
}

// ---- The child: run, wait, measure ----

/// Set in the environment of the launcher process.
const LAUNCHER: &str = "CUSTSYNC_BENCH_LAUNCHER";

/// custsync is started by a small helper process, not by this one. A child's peak RSS
/// as `wait4` reports it (`ru_maxrss`) is at least the RSS of the process it was
/// spawned from at the time of its `exec` (Linux records the old address space's peak
/// there), and this process holds the emulators' data: hundreds of MiB at 100,000
/// customers. The launcher, this same binary started before any of that, stays at a
/// few MiB, so what it reports is custsync's own peak.
mod launcher {
    use std::io::{BufRead, BufReader, Write};
    use std::path::Path;
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::{Usage, LAUNCHER};

    pub struct Launcher {
        io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
        _child: Child,
        runs: AtomicUsize,
    }

    impl Launcher {
        pub fn start() -> std::io::Result<Launcher> {
            let mut child = Command::new(std::env::current_exe()?)
                .env(LAUNCHER, "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(std::io::Error::other("launcher without pipes"));
            };
            Ok(Launcher {
                io: Mutex::new((stdin, BufReader::new(stdout))),
                _child: child,
                runs: AtomicUsize::new(0),
            })
        }

        /// Runs `custsync --once` through the launcher and waits for its usage.
        /// `BENCH_WRAP` runs it under a profiler, e.g. "perf record -o /tmp/p{run}.data"
        /// ({run} counts the runs from 1; the measurements then include the profiler).
        pub fn run(
            &self,
            binary: &Path,
            config: &Path,
            report: &Path,
            log: &Path,
        ) -> std::io::Result<Usage> {
            let run = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
            let wrap = std::env::var("BENCH_WRAP")
                .unwrap_or_default()
                .replace("{run}", &run.to_string());
            let line = [binary, config, report, log]
                .map(|p| p.display().to_string())
                .join("\t");
            let mut io = self.io.lock().unwrap_or_else(|p| p.into_inner());
            writeln!(io.0, "{line}\t{wrap}")?;
            io.0.flush()?;
            let mut answer = String::new();
            io.1.read_line(&mut answer)?;
            let n: Vec<f64> = answer
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            match n[..] {
                [code, wall, cpu, rss] => Ok(Usage {
                    code: code as i32,
                    wall: Duration::from_secs_f64(wall),
                    cpu,
                    rss_kib: rss as i64,
                }),
                _ => Err(std::io::Error::other(format!("launcher said {answer:?}"))),
            }
        }
    }

    /// The launcher's loop: one line `BINARY\tCONFIG\tREPORT\tLOG\tWRAP` in, one line
    /// `CODE WALL_S CPU_S RSS_KIB` out, until its input closes.
    pub fn serve() {
        let stdin = std::io::stdin();
        let mut out = std::io::stdout();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { return };
            let parts: Vec<&str> = line.split('\t').collect();
            let answer = match parts[..] {
                [binary, config, report, log, wrap] => {
                    match run_child(
                        binary.as_ref(),
                        config.as_ref(),
                        report.as_ref(),
                        log.as_ref(),
                        wrap,
                    ) {
                        Ok(u) => format!(
                            "{} {} {} {}",
                            u.code,
                            u.wall.as_secs_f64(),
                            u.cpu,
                            u.rss_kib
                        ),
                        Err(e) => format!("error {e}"),
                    }
                }
                _ => "error bad request".to_string(),
            };
            if writeln!(out, "{answer}").and_then(|_| out.flush()).is_err() {
                return;
            }
        }
    }

    /// Runs `custsync --once` and reaps it with `wait4`, which hands back its usage.
    fn run_child(
        binary: &Path,
        config: &Path,
        report: &Path,
        log: &Path,
        wrap: &str,
    ) -> std::io::Result<Usage> {
        let log_file = std::fs::File::create(log)?;
        let started = Instant::now();
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let child = cmd
            .arg("--once")
            .arg("--config")
            .arg(config)
            .arg("--report")
            .arg(report)
            .env_remove("CUSTSYNC_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        let (code, usage) = super::measure::wait_child(child.id() as libc::pid_t)?;
        Ok(Usage {
            code,
            wall: started.elapsed(),
            cpu: super::measure::cpu_secs(&usage),
            rss_kib: usage.ru_maxrss,
        })
    }
}

struct Usage {
    code: i32,
    wall: Duration,
    /// User plus system CPU seconds of the child.
    cpu: f64,
    /// Peak resident set size of the child, KiB.
    rss_kib: i64,
}
