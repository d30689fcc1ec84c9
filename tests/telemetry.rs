//! What an operator's tools read: `/metrics` of the real daemon parsed as Prometheus
//! text (by `prometheus-parse`, by a strict reading of the format, and by `promtool`
//! when it is installed), and the JSON log lines a log shipper reads.

#[path = "common/five.rs"]
mod five;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use custsync::sandbox::malomo;
use five::Five;
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStderr;

/// A log line as a shipper needs it: one JSON object with top-level `timestamp`
/// (RFC 3339), `level`, `target` and `message`, its fields beside them.
fn log_line(line: &str) -> serde_json::Map<String, serde_json::Value> {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"))
        .clone();
    let text = |key: &str| {
        obj.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("no top-level {key}: {line}"))
    };
    chrono::DateTime::parse_from_rfc3339(text("timestamp"))
        .unwrap_or_else(|e| panic!("timestamp not RFC 3339 ({e}): {line}"));
    assert!(
        ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&text("level")),
        "{line}"
    );
    assert!(!text("target").is_empty(), "{line}");
    text("message");
    assert!(!obj.contains_key("fields"), "fields not flattened: {line}");
    obj
}

/// Reads log lines until one whose message is `message`; every line read is checked.
async fn until_logged(
    lines: &mut Lines<BufReader<ChildStderr>>,
    seen: &mut Vec<String>,
    message: &str,
) -> serde_json::Map<String, serde_json::Value> {
    while let Some(line) = lines.next_line().await.unwrap() {
        seen.push(line.clone());
        let obj = log_line(&line);
        if obj.get("message").and_then(|m| m.as_str()) == Some(message) {
            return obj;
        }
    }
    panic!(
        "the daemon ended before logging {message:?}:\n{}",
        seen.join("\n")
    );
}

/// Reads the exposition line by line as the Prometheus text format (0.0.4) says:
/// each family has one HELP and one TYPE, its samples follow them without another
/// family's in between. Answers every family's type.
fn strict_families(text: &str) -> BTreeMap<String, String> {
    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    let mut closed = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut open = |name: &str, current: &mut Option<String>| {
        if current.as_deref() != Some(name) {
            if let Some(prev) = current.take() {
                closed.insert(prev);
            }
            assert!(!closed.contains(name), "{name} interleaved:\n{text}");
            *current = Some(name.to_string());
        }
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').expect("HELP has a text");
            assert!(!doc.trim().is_empty(), "empty HELP: {line}");
            open(name, &mut current);
            assert!(help.insert(name.to_string()), "HELP twice: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
            open(name, &mut current);
            assert!(
                ["counter", "gauge", "histogram", "summary"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice: {line}"
            );
        } else if line.starts_with('#') {
            panic!("a comment that is neither HELP nor TYPE: {line}");
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = if types.contains_key(name) {
                name.to_string()
            } else {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .filter_map(|s| name.strip_suffix(s))
                    .find(|base| types.get(*base).map(String::as_str) == Some("histogram"))
                    .unwrap_or_else(|| panic!("a sample with no TYPE before it: {line}"))
                    .to_string()
            };
            assert!(help.contains(&family), "a sample with no HELP: {line}");
            assert_eq!(
                current.as_deref(),
                Some(family.as_str()),
                "a sample outside its family: {line}"
            );
        }
    }
    types
}

/// `promtool check metrics` on the exposition, when promtool is installed (on the
/// `PATH`, or at `$PROMTOOL`); `false` when it is not there.
async fn promtool_accepts(text: &str) -> bool {
    let tool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let child = tokio::process::Command::new(&tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("{tool} not found: the exposition is checked by the Rust parsers only");
        return false;
    };
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

fn counter(scrape: &Scrape, metric: &str, provider: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && s.labels.get("provider") == Some(provider))
        .map(|s| match s.value {
            Value::Counter(v) => v,
            ref other => panic!("{metric} is not a counter: {other:?}"),
        })
        .sum()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_metrics_parse_as_prometheus_text_with_help_type_and_labels() {
    let mut f = Five::start().await;
    f.sb.malomo.insert(malomo::Customer::new(
        "dee@example.com",
        Some("Dee"),
        Some("Mon"),
        None,
    ));
    // One 429 from Nuvemshop, so the throttle and retry counters move too.
    f.sb.nuvemshop
        .server
        .faults
        .push(custsync::sandbox::faults::Fault::Status(429));
    // One cycle at start, the next one in 2099; any free port.
    f.sync = "schedule = \"0 0 0 1 1 * 2099\"\n[server]\nlisten = \"127.0.0.1:0\"\n".into();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_custsync"))
        .arg("--config")
        .arg(f.write_config())
        .args(["--log-format", "json"])
        .env_remove("CUSTSYNC_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let up = until_logged(&mut lines, &mut seen, "health and metrics server up").await;
    let listen = up["listen"].as_str().expect("the bound address is logged");
    assert!(!listen.ends_with(":0"), "{listen}");
    let cycle = until_logged(&mut lines, &mut seen, "cycle finished").await;
    assert_eq!(cycle["tenant"], "default", "{cycle:?}");
    assert!(cycle["created"].as_u64().unwrap() >= 1, "{cycle:?}");
    assert!(cycle["requests"].as_u64().unwrap() > 0, "{cycle:?}");

    let resp = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();

    // The format, read strictly: HELP and TYPE on every family, no interleaving.
    let types = strict_families(&text);
    for (name, kind) in &types {
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name}: {kind}"
        );
    }
    for family in [
        "custsync_build_info",
        "custsync_http_requests_total",
        "custsync_http_retries_total",
        "custsync_http_throttled_total",
        "custsync_records_total",
        "custsync_cycles_total",
        "custsync_cycle_duration_seconds",
        "custsync_last_success_timestamp_seconds",
        "custsync_held_deletes",
        "custsync_outbox_depth",
        "custsync_activity_events_total",
        "custsync_group_changes_total",
    ] {
        assert!(types.contains_key(family), "no {family}:\n{text}");
    }
    let promtool = promtool_accepts(&text).await;
    eprintln!("promtool used: {promtool}");

    // The same, through a Prometheus text parser.
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert!(!scrape.samples.is_empty());
    for s in &scrape.samples {
        let family = ["_sum", "_count"]
            .iter()
            .filter_map(|x| s.metric.strip_suffix(x))
            .find(|base| types.get(*base).map(String::as_str) == Some("histogram"))
            .unwrap_or(&s.metric);
        assert!(scrape.docs.contains_key(family), "no HELP for {}", s.metric);
        if family == s.metric {
            assert!(
                !matches!(s.value, Value::Untyped(_)),
                "no TYPE for {}",
                s.metric
            );
        }
        if s.metric != "custsync_build_info" {
            assert_eq!(s.labels.get("tenant"), Some("default"), "{s:?}");
        }
    }
    for provider in five::labels() {
        assert!(
            counter(&scrape, "custsync_http_requests_total", provider) > 0.0,
            "no request counted for {provider}:\n{text}"
        );
    }
    assert!(
        counter(&scrape, "custsync_http_throttled_total", "store") >= 1.0,
        "{text}"
    );
    assert!(
        counter(&scrape, "custsync_http_retries_total", "store") >= 1.0,
        "{text}"
    );
    let created: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "custsync_records_total" && s.labels.get("op") == Some("created"))
        .map(|s| match s.value {
            Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(created >= 1.0, "{text}");
    let version = scrape
        .samples
        .iter()
        .find(|s| s.metric == "custsync_build_info")
        .and_then(|s| s.labels.get("version"));
    assert_eq!(version, Some(env!("CARGO_PKG_VERSION")));

    // OpenMetrics to a scraper that asks for it.
    let om = reqwest::Client::new()
        .get(format!("http://{listen}/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(om.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(om.text().await.unwrap().ends_with("# EOF\n"));

    // SIGTERM: the daemon stops, every line it logged on the way is JSON too.
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    while let Some(line) = lines.next_line().await.unwrap() {
        log_line(&line);
        seen.push(line);
    }
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
    let cycles = seen
        .iter()
        .filter(|l| l.contains("\"message\":\"cycle finished\""))
        .count();
    assert_eq!(
        cycles,
        1,
        "one summary line per cycle:\n{}",
        seen.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_of_a_once_run_are_flat_with_rfc3339_timestamps() {
    let f = Five::start().await;
    f.sb.seed_document_examples();
    let run = f.run(&["--log-format", "json", "--once"]).await;
    assert_eq!(run.code, 0, "{}", run.why());
    let lines: Vec<_> = run.stderr.lines().map(log_line).collect();
    assert!(!lines.is_empty());
    // The event's own fields sit at the top, beside the message.
    let listed = lines
        .iter()
        .find(|l| l["message"] == "listed" && l.contains_key("provider"))
        .unwrap_or_else(|| panic!("no listed line with its provider:\n{}", run.stderr));
    assert!(listed["target"].as_str().unwrap().starts_with("custsync"));
}

/// The strict reading has teeth: the hand-written exposition this replaced (TYPE
/// without HELP, a gauge's samples under another family's TYPE) is refused.
#[test]
#[should_panic(expected = "no HELP")]
fn the_strict_reading_refuses_a_family_without_help() {
    strict_families("# TYPE custsync_cycles_total counter\ncustsync_cycles_total 1\n");
}

#[test]
#[should_panic(expected = "no TYPE")]
fn the_strict_reading_refuses_a_sample_without_its_own_type() {
    strict_families(
        "# HELP custsync_last_cycle_requests Requests.\n# TYPE custsync_last_cycle_requests gauge\ncustsync_last_cycle_requests{provider=\"a\"} 1\ncustsync_last_cycle_retries{provider=\"a\"} 0\n",
    );
}

#[test]
#[should_panic(expected = "interleaved")]
fn the_strict_reading_refuses_interleaved_families() {
    strict_families(
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# HELP b B.\n# TYPE b gauge\nb 1\n# HELP a_total A.\n",
    );
}
