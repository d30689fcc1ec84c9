//! `custsync status [--json]`: per tenant its lease and last run, per provider its
//! cursor, last result, outbox depth by state, the deletes the guard holds and the
//! flag that releases them, its listing error and its last failed or parked
//! operations (DESIGN 2 and 13).
//!
//! Owns: reading that picture from the store and the last run's stored report, and
//! saying it as a table or as one JSON document. It writes nothing.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use comfy_table::{presets, CellAlignment, LineStyle, Table};
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;

use super::open_existing_store;
use crate::app::AppError;
use crate::config::{Config, ProviderConfig};
use crate::store::lease::LeaseState;
use crate::store::outbox::FailedOp;
use crate::store::{RunRow, Store};

/// The outbox states, in the order an operation goes through them.
const STATES: [&str; 4] = ["pending", "in_flight", "failed", "parked"];

/// Failed or parked operations shown per provider.
const FAILURES_SHOWN: i64 = 10;

#[derive(Debug, Serialize)]
struct StatusDoc {
    tenants: IndexMap<String, TenantStatus>,
}

#[derive(Debug, Serialize)]
struct TenantStatus {
    /// The worker holding the lease now, or null.
    holder: Option<String>,
    lease_expires_at: Option<String>,
    lease: Option<LeaseView>,
    /// The newest run, whatever its state (a run going on has no report yet).
    last_run: Option<RunView>,
    /// The run whose report the providers' results come from.
    results_from_run: Option<i64>,
    held_deletes: u64,
    providers: IndexMap<String, ProviderStatus>,
    /// How far behind activity polling is, when `[activity]` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    activity: Option<crate::store::activity::ActivityLag>,
    /// Operations waiting in the outbox (pending, in flight, failed), all providers.
    outbox_depth: i64,
    /// Why nothing more is known: the tenant's file is unusable, or it never ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl TenantStatus {
    fn unusable(error: String) -> Self {
        TenantStatus {
            holder: None,
            lease_expires_at: None,
            lease: None,
            last_run: None,
            results_from_run: None,
            held_deletes: 0,
            providers: IndexMap::new(),
            activity: None,
            outbox_depth: 0,
            error: Some(error),
        }
    }
}

#[derive(Debug, Serialize)]
struct LeaseView {
    worker: String,
    expires_at: String,
    released: bool,
    holder_gone: bool,
}

#[derive(Debug, Serialize)]
struct RunView {
    id: i64,
    mode: String,
    status: String,
    started_at: String,
    finished_at: Option<String>,
}

#[derive(Debug, Serialize)]
struct ProviderStatus {
    kind: &'static str,
    enabled: bool,
    /// `ok`, `failing` (listing or writes failed), `held` (deletes held), `disabled`,
    /// or `-` (no run has reported on it).
    result: &'static str,
    cursor: Option<String>,
    cursor_updated_at: Option<String>,
    outbox: BTreeMap<&'static str, i64>,
    held_deletes: u64,
    /// The flag that releases the held deletes, for one run.
    release: Option<String>,
    listing_error: Option<String>,
    /// The provider's counts in the last report (fetched, created, ...).
    last_run: Option<Value>,
    failures: Vec<Failure>,
}

#[derive(Debug, Serialize)]
struct Failure {
    op: String,
    email: Option<String>,
    state: String,
    attempts: i64,
    next_attempt_at: Option<String>,
    error: Option<String>,
}

/// `status`: exit 0 with the picture of every tenant (or those `--tenant` names);
/// exit 1 with one line where a single merchant has no database yet. A tenant with no
/// store yet, or whose file is unusable, is listed with what is known.
pub async fn status(config: &Config, names: &[String], json: bool) -> Result<ExitCode, AppError> {
    let (configured, chosen) = crate::app::tenants::chosen(config, names)?;
    let mut tenants = IndexMap::new();
    for t in &chosen {
        let tenant_config = match &t.config {
            Ok(c) => c.clone(),
            Err(e) => {
                tenants.insert(t.name.clone(), TenantStatus::unusable(e.to_string()));
                continue;
            }
        };
        let store = if configured {
            match crate::store::Store::open_existing(&tenant_config.store.path, t.key()).await {
                Ok(Some(store)) => store,
                Ok(None) => {
                    tenants.insert(
                        t.name.clone(),
                        TenantStatus::unusable("never reconciled: no store yet".into()),
                    );
                    continue;
                }
                Err(e) => {
                    tenants.insert(t.name.clone(), TenantStatus::unusable(e.to_string()));
                    continue;
                }
            }
        } else {
            open_existing_store(&tenant_config.store.path, None).await?
        };
        let mut read = tenant_status(&store, &t.name, &tenant_config.providers).await;
        if let (Ok(tenant), true) = (&mut read, tenant_config.activity.enabled) {
            tenant.activity = Some(
                crate::sync::activity::lag(&store, &t.name, &tenant_config)
                    .await
                    .context("activity")?,
            );
        }
        store.close().await;
        tenants.insert(t.name.clone(), read?);
    }
    let doc = StatusDoc { tenants };
    if json {
        let text = serde_json::to_string_pretty(&doc).context("status")?;
        println!("{text}");
    } else {
        for (name, tenant) in &doc.tenants {
            print!("{}", text(name, tenant));
            if let Some(lag) = &tenant.activity {
                println!("{}", lag.line());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One tenant's picture. The store holds one tenant today: its cursors, outbox and
/// runs are the tenant's.
async fn tenant_status(
    store: &Store,
    tenant: &str,
    providers: &[ProviderConfig],
) -> anyhow::Result<TenantStatus> {
    let lease = store.lease_state(tenant).await.context("leases")?;
    let cursors = store.cursors().await.context("cursors")?;
    let depth = store.outbox_depth().await.context("outbox")?;
    let failures = store
        .last_failures(FAILURES_SHOWN)
        .await
        .context("outbox")?;
    let last = store.last_runs(1).await.context("runs")?.into_iter().next();
    let reported = store.last_reported_run().await.context("runs")?;
    let report = reported.as_ref().and_then(|r| r.report.as_ref());
    let held_by = |l: &LeaseState| l.is_held().then(|| l.worker.clone());
    let mut out = IndexMap::new();
    for p in providers {
        out.insert(
            p.name.0.clone(),
            provider_status(p, report, &cursors, &depth, &failures),
        );
    }
    Ok(TenantStatus {
        activity: None,
        holder: lease.as_ref().and_then(held_by),
        lease_expires_at: lease
            .as_ref()
            .filter(|l| l.is_held())
            .map(|l| l.expires_at.clone()),
        lease: lease.map(|l| LeaseView {
            worker: l.worker,
            expires_at: l.expires_at,
            released: l.released,
            holder_gone: l.holder_gone,
        }),
        last_run: last.map(run_view),
        results_from_run: reported.as_ref().map(|r| r.id),
        held_deletes: report.and_then(|r| r["held_deletes"].as_u64()).unwrap_or(0),
        providers: out,
        outbox_depth: depth
            .iter()
            .filter(|(_, state, _)| state != "parked")
            .map(|(_, _, n)| n)
            .sum(),
        error: None,
    })
}

fn run_view(r: RunRow) -> RunView {
    RunView {
        id: r.id,
        mode: r.mode,
        status: r.status,
        started_at: r.started_at,
        finished_at: r.finished_at,
    }
}

fn provider_status(
    p: &ProviderConfig,
    report: Option<&Value>,
    cursors: &[(String, String, String)],
    depth: &[(String, String, i64)],
    failures: &[FailedOp],
) -> ProviderStatus {
    let name = p.name.0.as_str();
    let outbox = STATES
        .iter()
        .map(|state| {
            let n = depth
                .iter()
                .find(|(n, s, _)| n == name && s == state)
                .map_or(0, |(_, _, c)| *c);
            (*state, n)
        })
        .collect();
    let counts = report.and_then(|r| r["providers"].get(name)).cloned();
    let listing_error = counts
        .as_ref()
        .and_then(|c| c["listing_error"].as_str())
        .map(str::to_string);
    let (held_deletes, flagged) = report.map_or((0, false), |r| held_deletes(r, name));
    let failed = counts
        .as_ref()
        .and_then(|c| c["failed"].as_u64())
        .unwrap_or(0);
    let result = match &counts {
        _ if !p.enabled => "disabled",
        None => "-",
        Some(_) if listing_error.is_some() || failed > 0 => "failing",
        Some(_) if held_deletes > 0 || flagged => "held",
        Some(_) => "ok",
    };
    let cursor = cursors.iter().find(|(n, _, _)| n == name);
    ProviderStatus {
        kind: p.kind.as_str(),
        enabled: p.enabled,
        result,
        cursor: cursor.map(|(_, v, _)| v.clone()),
        cursor_updated_at: cursor.map(|(_, _, at)| at.clone()),
        outbox,
        held_deletes,
        release: (held_deletes > 0 || flagged).then(|| format!("--allow-deletes {name}")),
        listing_error,
        last_run: counts,
        failures: failures
            .iter()
            .filter(|f| f.provider == name)
            .map(|f| Failure {
                op: f.op.clone(),
                email: f.email.clone(),
                state: f.state.clone(),
                attempts: f.attempts,
                next_attempt_at: f.next_attempt_at.clone(),
                error: f.last_error.clone(),
            })
            .collect(),
    }
}

/// The deletes the guard held for `name` in a stored report, and whether the report
/// asks for `--allow-deletes NAME` at all. A provider's own `held_deletes` count wins
/// where the report has one; otherwise the count that leads the guard's error ("155 of
/// 600 linked records vanished ...: run with --allow-deletes NAME ...").
fn held_deletes(report: &Value, name: &str) -> (u64, bool) {
    if let Some(n) = report["providers"][name]["held_deletes"].as_u64() {
        return (n, n > 0);
    }
    let mut held = 0;
    let mut flagged = false;
    for e in report["errors"].as_array().into_iter().flatten() {
        let Some(text) = e["error"].as_str() else {
            continue;
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let names_flag = words
            .windows(2)
            .any(|w| w[0] == "--allow-deletes" && w[1] == name);
        if e["provider"] != name || !names_flag {
            continue;
        }
        flagged = true;
        held += words
            .first()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (held, flagged)
}

/// The picture as a person reads it: the lease, the last run, one table row per
/// provider, then what holds deletes and the last errors.
fn text(name: &str, t: &TenantStatus) -> String {
    if let Some(error) = &t.error {
        return format!("tenant {name}: {error}\n");
    }
    let mut out = format!("tenant {name}: {}\n", lease_line(t));
    match &t.last_run {
        Some(r) => out.push_str(&format!(
            "last run: #{} {} ({}), started {}, finished {}\n",
            r.id,
            r.status,
            r.mode,
            r.started_at,
            r.finished_at.as_deref().unwrap_or("-")
        )),
        None => out.push_str("last run: none\n"),
    }
    if let Some(id) = t.results_from_run {
        if t.last_run.as_ref().map(|r| r.id) != Some(id) {
            out.push_str(&format!("results below: from run #{id}\n"));
        }
    }
    out.push('\n');
    out.push_str(&table(t).trim_fmt());
    out.push('\n');
    let held: Vec<_> = t
        .providers
        .iter()
        .filter_map(|(n, p)| Some((n, p.held_deletes, p.release.as_ref()?)))
        .collect();
    if !held.is_empty() {
        out.push_str("\nheld deletes:\n");
        for (n, count, flag) in held {
            out.push_str(&format!(
                "  {n}: {count} delete(s) held by the guard; to release them: custsync --once {flag}\n"
            ));
        }
    }
    let failing = t
        .providers
        .values()
        .any(|p| p.listing_error.is_some() || !p.failures.is_empty());
    if failing {
        out.push_str("\nlast errors:\n");
        for (n, p) in &t.providers {
            if let Some(e) = &p.listing_error {
                out.push_str(&format!("  {n} listing: {e}\n"));
            }
        }
        for (n, p) in &t.providers {
            for f in &p.failures {
                out.push_str(&format!(
                    "  {n} {} {} [{}] attempts={} next={}: {}\n",
                    f.op,
                    f.email.as_deref().unwrap_or("?"),
                    f.state,
                    f.attempts,
                    f.next_attempt_at.as_deref().unwrap_or("-"),
                    f.error.as_deref().unwrap_or("")
                ));
            }
        }
    }
    out
}

fn lease_line(t: &TenantStatus) -> String {
    match (&t.lease, &t.holder) {
        (None, _) => "lease never taken".into(),
        (Some(l), Some(w)) => format!("lease held by {w} until {}", l.expires_at),
        (Some(l), None) if l.released => format!("lease free (given back by {})", l.worker),
        (Some(l), None) if l.holder_gone => {
            format!("lease free ({}'s process is gone)", l.worker)
        }
        (Some(l), None) => format!(
            "lease free (held by {} until {}: expired)",
            l.worker, l.expires_at
        ),
    }
}

/// Columns: provider, kind, result, the outbox by state, held deletes, cursor.
fn table(t: &TenantStatus) -> Table {
    let mut table = Table::new();
    // No borders: a row is its words, which a script can split; a rule under the header.
    let style = presets::NOTHING.header_separator(LineStyle::none().fill('-').junction(' '));
    table.load_style(style).set_header([
        "provider",
        "kind",
        "result",
        "pending",
        "in_flight",
        "failed",
        "parked",
        "held",
        "cursor",
    ]);
    for (name, p) in &t.providers {
        let mut row = vec![name.clone(), p.kind.to_string(), p.result.to_string()];
        row.extend(STATES.iter().map(|s| p.outbox[s].to_string()));
        row.push(p.held_deletes.to_string());
        row.push(p.cursor.clone().unwrap_or_else(|| "-".into()));
        table.add_row(row);
    }
    for i in 3..8 {
        if let Some(c) = table.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_deletes_are_read_from_the_guards_error() {
        let report = serde_json::json!({
            "providers": {"store": {"fetched": 3}, "shipping": {"fetched": 1}},
            "held_deletes": 155,
            "errors": [
                {"provider": "store", "email": null, "error": "155 of 600 linked records vanished (26% > max_delete_fraction 20%): deletes held; run with --allow-deletes store to release them"},
                {"provider": "shipping", "email": "a@b.co", "error": "HTTP 400: --allow-deletes storefront"},
            ]
        });
        assert_eq!(held_deletes(&report, "store"), (155, true));
        assert_eq!(held_deletes(&report, "shipping"), (0, false));
        assert_eq!(held_deletes(&report, "storefront"), (0, false));
        let counted = serde_json::json!({"providers": {"store": {"held_deletes": 7}}});
        assert_eq!(held_deletes(&counted, "store"), (7, true));
    }
}
