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
