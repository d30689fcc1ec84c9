//! Every bad configuration exits 2 with one line on stderr naming the key, and
//! nothing else: no panic, no stack trace, no log line, no database file.

use std::process::Command;

const GOOD: &str = r#"
[store]
url = "sqlite://DB"

[sync]
schedule = "0 */5 * * * *"

[providers.ship]
kind = "malomo"
base_url = "https://api.gomalomo.com"
api_key = "secret-malomo-key"

[providers.store]
kind = "nuvemshop"
base_url = "https://api.tiendanube.com/v1/123456"
api_key = "secret-nuvem-key"
"#;

struct Outcome {
    code: Option<i32>,
    stderr: String,
    stdout: String,
    db_created: bool,
}

fn run_with(config: &str, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let path = dir.path().join("custsync.toml");
    std::fs::write(&path, config.replace("DB", &db.display().to_string())).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_custsync"));
    cmd.arg("--config")
        .arg(&path)
        .args(args)
        .env_remove("CUSTSYNC_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Outcome {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        db_created: db.exists(),
    }
}

fn assert_config_error(config: &str, key: &str) {
    assert_config_error_with(config, key, &["--once"], &[]);
}

fn assert_config_error_with(config: &str, key: &str, args: &[&str], env: &[(&str, &str)]) {
    let o = run_with(config, args, env);
    assert_eq!(o.code, Some(2), "exit code for {key}; stderr: {}", o.stderr);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one line on stderr for {key}, got: {:?}",
        o.stderr
    );
    assert!(
        lines[0].contains(key),
        "stderr should name {key}: {}",
        lines[0]
    );
    assert!(!o.stderr.contains("panicked") && !o.stderr.contains("backtrace"));
    assert!(
        !o.stderr.contains("secret-"),
        "no key in errors: {}",
        o.stderr
    );
    assert!(o.stdout.is_empty(), "nothing on stdout: {}", o.stdout);
    assert!(!o.db_created, "a bad config must not create the database");
}

#[test]
fn garbage_toml() {
    assert_config_error("this is [not = toml", "custsync.toml");
}

#[test]
fn unknown_key() {
    assert_config_error(
        &GOOD.replace("[sync]", "[sync]\nshedule = \"x\""),
        "sync.shedule",
    );
    assert_config_error(
        &GOOD.replace(
            "api_key = \"secret-malomo-key\"",
            "api_key = \"secret-malomo-key\"\napi-key = 1",
        ),
        "providers.ship.api-key",
    );
    assert_config_error(&format!("{GOOD}\n[extra]\nx = 1\n"), "extra");
}

#[test]
fn unknown_kind() {
    assert_config_error(
        &GOOD.replace("kind = \"malomo\"", "kind = \"shopify\""),
        "providers.ship.kind",
    );
}

#[test]
fn bad_cron() {
    assert_config_error(
        &GOOD.replace("0 */5 * * * *", "every five minutes"),
        "sync.schedule",
    );
}

#[test]
fn missing_keys() {
    assert_config_error(
        &GOOD.replace("api_key = \"secret-malomo-key\"", ""),
        "providers.ship.api_key",
    );
    assert_config_error(
        &GOOD.replace("base_url = \"https://api.gomalomo.com\"", ""),
        "providers.ship.base_url",
    );
    assert_config_error(
        &GOOD.replace("kind = \"malomo\"", ""),
        "providers.ship.kind",
    );
    assert_config_error("[sync]\nschedule = \"0 */5 * * * *\"\n", "providers");
}

#[test]
fn remote_base_url_must_be_https() {
    assert_config_error(
        &GOOD.replace("https://api.gomalomo.com", "http://api.gomalomo.com"),
        "providers.ship.base_url",
    );
}

#[test]
fn unreadable_key_file() {
    let config = GOOD.replace(
        "api_key = \"secret-malomo-key\"",
        "api_key_file = \"/nonexistent/custsync/key\"",
    );
    assert_config_error(&config, "providers.ship.api_key_file");
}

#[test]
fn bad_values() {
    assert_config_error(
        &GOOD.replace("[sync]", "[sync]\nmax_delete_fraction = 2"),
        "sync.max_delete_fraction",
    );
    assert_config_error(
        &GOOD.replace("[sync]", "[sync]\nconflict_policy = \"newest\""),
        "sync.conflict_policy",
    );
    assert_config_error(
        &GOOD.replace("[sync]", "[sync]\npriority = [\"nope\"]"),
        "sync.priority",
    );
    // PostgreSQL is a store now (DESIGN 13); another scheme, or a URL with no host, is not.
    assert_config_error(
        &GOOD.replace("url = \"sqlite://DB\"", "url = \"mysql://x\""),
        "store.url",
    );
    assert_config_error(
        &GOOD.replace("url = \"sqlite://DB\"", "url = \"postgres://u:pw@/db\""),
        "store.url",
    );
}

#[test]
fn env_overrides_are_checked_too() {
    assert_config_error_with(
        GOOD,
        "sync.schedule",
        &["--once"],
        &[("CUSTSYNC__SYNC__SCHEDULE", "nope")],
    );
    assert_config_error_with(
        GOOD,
        "providers.ship.base_url",
        &["--once"],
        &[("CUSTSYNC__PROVIDERS__SHIP__BASE_URL", "http://example.com")],
    );
}

#[test]
fn allow_deletes_names_a_provider() {
    assert_config_error_with(
        GOOD,
        "--allow-deletes",
        &["--once", "--allow-deletes", "nope"],
        &[],
    );
}

/// Runs the binary in an empty directory with no `CUSTSYNC*` variable but `env`.
fn run_bare(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_custsync"));
    cmd.args(args).current_dir(dir.path());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CUSTSYNC") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let made = std::fs::read_dir(dir.path()).unwrap().next().is_some();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        made,
    )
}

/// Arguments, environment, and the line said.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

/// A missing config file is said against what named it: the flag, the variable, or
/// (neither given) the default path with the two ways to name another.
#[test]
fn missing_config_file() {
    let cases: [Case; 3] = [
        (
            &["--config", "/nonexistent/custsync.toml", "--once"],
            &[],
            "config error: --config: file not found: /nonexistent/custsync.toml",
        ),
        (
            &["status"],
            &[("CUSTSYNC_CONFIG", "/nonexistent/env.toml")],
            "config error: CUSTSYNC_CONFIG: file not found: /nonexistent/env.toml",
        ),
        (
            &["status"],
            &[],
            "config error: config/custsync.toml: not found (give --config PATH or set CUSTSYNC_CONFIG)",
        ),
    ];
    for (args, env, said) in cases {
        let (code, stderr, made) = run_bare(args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim_end(), said, "{args:?} {env:?}");
        assert!(!made, "{args:?} {env:?}: a file was made");
    }
    // The flag wins over the variable, and is the one named.
    let (code, stderr, _) = run_bare(
        &["--config", "/nonexistent/flag.toml", "status"],
        &[("CUSTSYNC_CONFIG", "/nonexistent/env.toml")],
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--config: file not found: /nonexistent/flag.toml"),
        "{stderr}"
    );
}

#[test]
fn bad_usage_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_custsync"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_offline_accepts_a_good_config() {
    let o = run_with(GOOD, &["check", "--offline"], &[]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("config ok"), "{}", o.stdout);
}

#[test]
fn env_overrides_apply() {
    // A bad key in the file is replaced by a good one from the environment.
    let bad = GOOD.replace("0 */5 * * * *", "nope");
    let o = run_with(
        &bad,
        &["check", "--offline"],
        &[("CUSTSYNC__SYNC__SCHEDULE", "0 0 * * * *")],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}

#[test]
fn a_listen_port_already_taken_exits_2_naming_server_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = format!("{GOOD}\n[server]\nlisten = \"{addr}\"\n");
    // The daemon: no --once.
    let o = run_with(&config, &[], &[]);
    assert_eq!(o.code, Some(2), "stderr: {}", o.stderr);
    let last = o.stderr.lines().last().unwrap_or_default();
    assert!(last.contains("server.listen"), "{}", o.stderr);
}

#[test]
fn check_offline_names_each_bad_tenant_and_lists_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("tenants");
    std::fs::create_dir(&tenants).unwrap();
    let providers = &GOOD[GOOD.find("[providers.ship]").unwrap()..];
    std::fs::write(tenants.join("good.toml"), providers).unwrap();
    std::fs::write(
        tenants.join("bad-url.toml"),
        providers.replace("https://api.gomalomo.com", "http://api.gomalomo.com"),
    )
    .unwrap();
    std::fs::write(tenants.join("Bad_Name.toml"), providers).unwrap();
    std::fs::write(tenants.join("notes.txt"), "ignored").unwrap();
    let top = &GOOD[..GOOD.find("[providers.ship]").unwrap()];
    let config = format!("{top}\n[tenants]\ndir = \"{}\"\n", tenants.display());
    let o = run_with(&config, &["check", "--offline"], &[]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", o.stderr);
    assert!(
        lines.iter().any(|l| l.starts_with("tenant bad-url:")
            && l.contains("bad-url.toml: providers.ship.base_url")),
        "{}",
        o.stderr
    );
    assert!(
        lines.iter().any(|l| l.starts_with("tenant Bad_Name:")),
        "{}",
        o.stderr
    );
    assert!(o.stdout.contains("tenant good: ok"), "{}", o.stdout);
    assert!(!o.db_created);

    std::fs::remove_file(tenants.join("bad-url.toml")).unwrap();
    std::fs::remove_file(tenants.join("Bad_Name.toml")).unwrap();
    let o = run_with(&config, &["check", "--offline"], &[]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("tenant good: ok"), "{}", o.stdout);

    // Both [tenants] and top-level providers: exit 2 naming tenants.dir.
    let o = run_with(
        &format!("{GOOD}\n[tenants]\ndir = \"x\"\n"),
        &["check", "--offline"],
        &[],
    );
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("tenants.dir"), "{}", o.stderr);
}
