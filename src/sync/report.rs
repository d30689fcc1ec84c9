//! The report of one reconciliation: counts per provider, held deletes, conflicts and
//! the records that could not be synced. Written as JSON by `--report`, printed by the
//! demo, stored with the run.

use indexmap::IndexMap;
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ProviderReport {
    pub fetched: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub failed: u64,
    pub skipped: u64,
    /// HTTP requests sent, retries among them, and 429 answers received.
    pub requests: u64,
    pub retries: u64,
    pub throttled: u64,
    /// Deletions seen in this provider's listing that the guard holds.
    pub held_deletes: u64,
    /// The listing of this provider failed this run: nothing was pushed to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listing_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportError {
    pub provider: String,
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    pub error: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    pub run_id: i64,
    pub dry_run: bool,
    pub converged: bool,
    pub providers: IndexMap<String, ProviderReport>,
    pub held_deletes: u64,
    pub conflicts: u64,
    pub errors: Vec<ReportError>,
    /// Activity polling of this run (DESIGN 14).
    pub activity: super::activity::ActivityReport,
    /// Group memberships changed by this run (DESIGN 14).
    pub groups: super::groups::GroupReport,
    /// What a dry run would do (empty after a real run: it was done).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlannedOp>,
    pub duration_secs: f64,
    /// What the plan depends on besides the data (the providers and the rules), as a
    /// hash: a run after a converged one on the same basis plans only the customers
    /// that changed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plan_basis: String,
    /// Customers merged and planned this run (all of them, or only those that changed).
    pub planned_customers: u64,
    /// The cycle used up its slice (`[cluster] tenant_slice_secs`) and gave its slot
    /// up; its remaining writes wait in the outbox for the next cycle.
    pub yielded: bool,
    /// The process's CPU seconds in each phase of the run (with several tenants at
    /// once in one process, theirs too).
    pub cpu_secs: PhaseCpu,
}

/// CPU seconds (user and system) of the process, by phase.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PhaseCpu {
    /// Listing every provider and storing the pages, deletions inferred.
    pub list: f64,
    /// Merging and planning.
    pub merge: f64,
    /// Pushing, with the second pass of merge and push that adopted data needs.
    pub push: f64,
    /// Activity and groups.
    pub activity: f64,
}

/// The process's CPU seconds so far, user and system.
pub fn process_cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlannedOp {
    pub provider: String,
    pub op: String,
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    pub fields: Vec<String>,
    /// Each written field's value in the provider now and the value to be written
    /// (`null`: none).
    pub changes: Vec<FieldChange>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldChange {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl Report {
    pub fn provider(&mut self, name: &str) -> &mut ProviderReport {
        self.providers.entry(name.to_string()).or_default()
    }

    pub fn error(
        &mut self,
        provider: &str,
        email: Option<String>,
        remote_id: Option<String>,
        error: impl Into<String>,
    ) {
        self.errors.push(ReportError {
            provider: provider.to_string(),
            email,
            remote_id,
            error: error.into(),
        });
    }

    /// A readable table: one line per provider.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<14} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}\n",
            "provider", "fetched", "created", "updated", "deleted", "failed", "skipped"
        );
        for (name, p) in &self.providers {
            out.push_str(&format!(
                "{:<14} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}\n",
                name, p.fetched, p.created, p.updated, p.deleted, p.failed, p.skipped
            ));
        }
        out.push_str(&format!(
            "held deletes: {}   conflicts: {}\n",
            self.held_deletes, self.conflicts
        ));
        out
    }

    /// What a person at a terminal reads at the end of a run: the table, the verdict,
    /// and the errors (the first few).
    pub fn summary(&self) -> String {
        const SHOWN: usize = 10;
        let mut out = String::from("\n");
        out.push_str(&self.table());
        let verdict = match (self.dry_run, self.converged) {
            (true, _) => "dry run: nothing was written",
            (false, true) => "converged: every provider is in step",
            (false, false) => "NOT converged: see the errors below and `custsync status`",
        };
        out.push_str(&format!("{verdict} ({:.1} s)\n", self.duration_secs));
        for e in self.errors.iter().take(SHOWN) {
            let who = e.email.as_deref().or(e.remote_id.as_deref()).unwrap_or("");
            out.push_str(&format!("  {:<12} {who} {}\n", e.provider, e.error));
        }
        if self.errors.len() > SHOWN {
            out.push_str(&format!(
                "  ... and {} more (the report lists them all: --report PATH)\n",
                self.errors.len() - SHOWN
            ));
        }
        out
    }

    /// The dry-run plan as lines a person reads.
    pub fn plan_text(&self) -> String {
        if self.plan.is_empty() {
            return "nothing to do: every provider is in step\n".to_string();
        }
        let mut out = String::new();
        for op in &self.plan {
            let who = op.email.as_deref().unwrap_or("?");
            let target = op
                .remote_id
                .as_deref()
                .map(|r| format!(" #{r}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "{:<7} {:<14} {}{}\n",
                op.op, op.provider, who, target
            ));
            for c in &op.changes {
                let show = |v: &Option<String>| match v {
                    Some(v) => format!("{:?}", shorten(v)),
                    None => "(none)".to_string(),
                };
                let line = if op.op == "create" {
                    format!("    {}: {}\n", c.field, show(&c.to))
                } else {
                    format!("    {}: {} -> {}\n", c.field, show(&c.from), show(&c.to))
                };
                out.push_str(&line);
            }
        }
        out.push_str(&format!(
            "{} operation(s) planned; nothing was written (dry run)\n",
            self.plan.len()
        ));
        out
    }
}

/// A value cut to a screen's width for the plan.
fn shorten(v: &str) -> String {
    const MOST: usize = 60;
    if v.chars().count() <= MOST {
        v.to_string()
    } else {
        let cut: String = v.chars().take(MOST).collect();
        format!("{cut}...")
    }
}
