//! Progress of a reconciliation, for a person watching: what each provider has listed
//! and pushed so far. The engine emits events; a renderer decides how to show them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// One step of a reconciliation.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A page of `provider` was stored; `fetched` records so far.
    Listed { provider: String, fetched: u64 },
    /// The listing of `provider` is over.
    ListingDone {
        provider: String,
        fetched: u64,
        ok: bool,
    },
    /// Merge and plan are done: `ops` operations wait in the outbox.
    Planned { ops: u64 },
    /// `done` of `total` operations of `provider` were sent (successfully or not).
    Pushed {
        provider: String,
        done: u64,
        total: u64,
    },
}

/// Receives progress events; cheap to clone.
pub type Progress = Arc<dyn Fn(&Event) + Send + Sync>;

/// Lines on stderr a person can follow: one when a listing ends, and each quarter of
/// a provider's pushes.
pub fn lines() -> Progress {
    let marks: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    Arc::new(move |e: &Event| {
        let line = match e {
            Event::Listed { .. } => None,
            Event::ListingDone {
                provider,
                fetched,
                ok: true,
            } => Some(format!("  {provider:<12} listed {fetched} record(s)")),
            Event::ListingDone {
                provider,
                fetched,
                ok: false,
            } => Some(format!(
                "  {provider:<12} listing FAILED after {fetched} record(s)"
            )),
            Event::Planned { ops } => Some(format!("  plan: {ops} operation(s) to push")),
            Event::Pushed {
                provider,
                done,
                total,
            } => {
                let quarter = if *total == 0 { 4 } else { done * 4 / total };
                let mut marks = marks.lock().unwrap_or_else(|p| p.into_inner());
                let last = marks.entry(provider.clone()).or_insert(0);
                (quarter > *last || done == total).then(|| {
                    *last = quarter;
                    format!("  {provider:<12} pushed {done}/{total}")
                })
            }
        };
        if let Some(line) = line {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
        }
    })
}
