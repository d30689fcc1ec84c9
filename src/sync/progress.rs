//! Progress of a reconciliation, for a person watching: what each provider has listed
//! and pushed so far. The engine emits events; a renderer decides how to show them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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

/// The bars on the terminal while a `--once` runs, if any: log lines are written
/// above them (see `LogWriter`), never through them.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// The bars drawn, by provider, so that the end of the run can leave them as they are.
static ROWS: Mutex<Vec<ProgressBar>> = Mutex::new(Vec::new());

/// Live bars on stderr, one per provider: its listing (records so far), then its
/// push (operations done of those planned). Draws nothing off a terminal.
pub fn bars() -> Progress {
    let multi = BARS
        .get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        .clone();
    let rows: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    // Per provider: (operations of the passes before this one, the last `done` seen).
    // A run pushes twice when answers brought data to merge; the bar counts both.
    let passes: Mutex<HashMap<String, (u64, u64, u64)>> = Mutex::new(HashMap::new());
    let listing =
        ProgressStyle::with_template("  {prefix:<12} {spinner} listing: {pos} record(s) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let pushing =
        ProgressStyle::with_template("  {prefix:<12} [{bar:30}] {pos}/{len} pushed {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    Arc::new(move |e: &Event| {
        let mut rows = rows.lock().unwrap_or_else(|p| p.into_inner());
        let mut row = |provider: &str| {
            rows.entry(provider.to_string())
                .or_insert_with(|| {
                    let bar = multi.add(ProgressBar::no_length().with_style(listing.clone()));
                    bar.set_prefix(provider.to_string());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    ROWS.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(bar.clone());
                    bar
                })
                .clone()
        };
        match e {
            Event::Listed { provider, fetched } => row(provider).set_position(*fetched),
            Event::ListingDone {
                provider,
                fetched,
                ok,
            } => {
                let bar = row(provider);
                bar.set_position(*fetched);
                bar.disable_steady_tick();
                bar.set_message(if *ok { "done" } else { "INCOMPLETE" });
                bar.tick();
            }
            Event::Planned { ops } => {
                let _ = multi.println(format!("  plan: {ops} operation(s) to push"));
            }
            Event::Pushed {
                provider,
                done,
                total,
            } => {
                let bar = row(provider);
                if bar.length().is_none() {
                    bar.set_style(pushing.clone());
                    bar.set_message("");
                }
                let mut passes = passes.lock().unwrap_or_else(|p| p.into_inner());
                let (base, last_done, last_total) =
                    passes.entry(provider.clone()).or_insert((0, 0, 0));
                if *done < *last_done {
                    *base += *last_total;
                }
                (*last_done, *last_total) = (*done, *total);
                bar.set_length(*base + *total);
                bar.set_position(*base + *done);
            }
        }
    })
}

/// Leaves the bars as they ended (no more ticking), so that the summary printed next
/// follows them.
pub fn finish_bars() {
    for bar in ROWS.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        bar.disable_steady_tick();
        bar.abandon();
    }
}

/// Where log lines go: stderr, above the bars while they are drawn.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match BARS.get() {
            Some(multi) => multi.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}
