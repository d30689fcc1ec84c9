//! The request counters of the shared HTTP clients as Prometheus counters, read at
//! each scrape; it counts nothing itself.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

use super::ProviderLabels;
use crate::providers::http::Traffic;

/// One of a `Traffic`'s counters.
type TrafficCounter = fn(&Traffic) -> &AtomicU64;

/// The request counters of every watched provider, read from its `Traffic` at each
/// scrape: they are counted in one place, the shared HTTP client.
#[derive(Debug, Default)]
pub(super) struct TrafficCollector {
    pub(super) sources: Mutex<Vec<(ProviderLabels, Arc<Traffic>)>>,
}

impl Collector for TrafficCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let families: [(&str, &str, TrafficCounter); 3] = [
            (
                "custsync_http_requests",
                "HTTP requests sent to a provider, retries included.",
                |t| &t.requests,
            ),
            (
                "custsync_http_retries",
                "HTTP requests sent again after a failure (connection, timeout, 408, 429, 5xx).",
                |t| &t.retries,
            ),
            (
                "custsync_http_throttled",
                "429 Too Many Requests answers received from a provider.",
                |t| &t.throttled,
            ),
        ];
        for (name, help, counter) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, traffic) in sources.iter() {
                let value = ConstCounter::new(Traffic::get(counter(traffic)));
                value.encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}
