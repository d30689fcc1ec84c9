//! The registry's arithmetic and formats, without a daemon.

use super::*;
use crate::sync::report::ProviderReport;
use std::sync::atomic::Ordering;

fn sample<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
}

#[test]
fn counters_add_up_across_cycles_and_traffic_is_read_live() {
    let m = Metrics::new();
    let traffic = Arc::new(Traffic::default());
    m.watch("default", "store", traffic.clone());
    traffic.requests.fetch_add(3, Ordering::Relaxed);
    let mut report = Report {
        converged: true,
        duration_secs: 0.5,
        ..Report::default()
    };
    report.providers.insert(
        "store".into(),
        ProviderReport {
            created: 2,
            ..ProviderReport::default()
        },
    );
    m.observe_cycle("default", &report);
    m.observe_cycle("default", &report);
    let rows = [("store".to_string(), "pending".to_string(), 4)];
    let text = m.encode(Format::Text, "default", Some(&rows)).unwrap();
    let at = |p| sample(&text, p);
    assert_eq!(
        at("custsync_http_requests_total{tenant=\"default\",provider=\"store\"}"),
        Some("3"),
        "{text}"
    );
    assert_eq!(
        at("custsync_records_total{tenant=\"default\",provider=\"store\",op=\"created\"}"),
        Some("4"),
        "{text}"
    );
    assert_eq!(
        at("custsync_cycles_total{tenant=\"default\",outcome=\"converged\"}"),
        Some("2")
    );
    assert_eq!(
        at("custsync_outbox_depth{tenant=\"default\",provider=\"store\",state=\"pending\"}"),
        Some("4")
    );
    assert_eq!(
        at("custsync_cycle_duration_seconds_count{tenant=\"default\"}"),
        Some("2")
    );
    // A state emptied since the last scrape reads 0; an unreadable store keeps it.
    let pending = "custsync_outbox_depth{tenant=\"default\",provider=\"store\",state=\"pending\"}";
    let text = m.encode(Format::Text, "default", None).unwrap();
    assert_eq!(sample(&text, pending), Some("4"), "{text}");
    let text = m.encode(Format::Text, "default", Some(&[])).unwrap();
    assert_eq!(sample(&text, pending), Some("0"), "{text}");
}

#[test]
fn openmetrics_is_served_to_who_asks_for_it() {
    let m = Metrics::new();
    assert_eq!(
        Format::from_accept(Some(
            "application/openmetrics-text;version=1.0.0,text/plain"
        )),
        Format::OpenMetrics
    );
    assert_eq!(Format::from_accept(None), Format::Text);
    let text = m.encode(Format::OpenMetrics, "default", None).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
}
