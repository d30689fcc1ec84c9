//! What both benchmarks measure of a process: a child's exit code and resource use
//! (`wait4`), and the PostgreSQL server's CPU (`/proc`).

/// Waits for `pid`, a child that std's `Child` never waits for: its exit code (-1
/// when a signal ended it) and its resource use.
pub fn wait_child(pid: libc::pid_t) -> std::io::Result<(i32, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our child, not reaped elsewhere (std's Child is never waited).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((code, usage))
}

/// User plus system CPU seconds of a resource use.
pub fn cpu_secs(usage: &libc::rusage) -> f64 {
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds of the PostgreSQL server so far: the postmaster's own and its reaped
/// children's (utime, stime, cutime, cstime), plus those of its live children (the
/// backends and background processes), from `/proc/PID/stat`.
pub fn server_cpu(postmaster: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields = |pid: &str| -> Option<Vec<String>> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = text.rsplit_once(')')?;
        Some(rest.split_whitespace().map(str::to_string).collect())
    };
    // After ")": state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let ticks = |f: &[String], range: std::ops::Range<usize>| -> f64 {
        f.get(range)
            .map(|v| v.iter().filter_map(|x| x.parse::<f64>().ok()).sum())
            .unwrap_or(0.0)
    };
    let me = postmaster.to_string();
    let mut total = fields(&me).map_or(0.0, |f| ticks(&f, 11..15));
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some(f) = fields(&name) {
                if f.get(1) == Some(&me) {
                    total += ticks(&f, 11..13);
                }
            }
        }
    }
    total / hz
}

/// Prints the machine the numbers come from: CPUs, model, memory, and what shares it.
pub fn print_machine(shared_with: &str) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {cpus} CPUs (nproc), {model}, {:.1} GiB memory; {shared_with} share it",
        mem_kib / 1024.0 / 1024.0
    );
}

/// The binary measured: this build's, or `BENCH_CUSTSYNC` (to compare two builds).
pub fn custsync_binary() -> std::path::PathBuf {
    std::env::var_os("BENCH_CUSTSYNC")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_custsync")))
}

/// The emulators' options of both benchmarks: Malomo pages of 100 (its emulator's
/// default is 50), and `nuvemshop` as the scenario needs it.
pub fn emulator_options(
    nuvemshop: custsync::sandbox::nuvemshop::Options,
) -> custsync::sandbox::all::Options {
    custsync::sandbox::all::Options {
        nuvemshop,
        malomo: custsync::sandbox::malomo::Options {
            page_size: 100,
            ..Default::default()
        },
        ..Default::default()
    }
}
