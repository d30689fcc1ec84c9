//! The commands that look without changing anything: `check`, `status`, `audit`.

use std::process::ExitCode;

use anyhow::Context;

use super::{connect_all, open_store, provider_reason, AppError};
use crate::config::{Config, StorePath};
use crate::store::audit::AuditFilter;

/// `check`: the config is valid (always), and each enabled provider answers one cheap
/// authenticated request (unless offline).
pub async fn check(config: &Config, offline: bool) -> Result<ExitCode, AppError> {
    if offline {
        println!("config ok: {} provider(s)", config.providers.len());
        return Ok(ExitCode::SUCCESS);
    }
    let providers = connect_all(config)?;
    let results = futures::future::join_all(
        providers
            .iter()
            .map(|c| async move { (c.provider.clone(), c.provider.check().await) }),
    )
    .await;
    let mut ok = true;
    for (p, result) in results {
        match result {
            Ok(()) => println!("{} ({}): ok", p.name(), p.kind()),
            Err(e) => {
                ok = false;
                println!(
                    "{} ({}): FAILED: {}",
                    p.name(),
                    p.kind(),
                    provider_reason(p.name(), &e)
                );
            }
        }
    }
    for p in config.providers.iter().filter(|p| !p.enabled) {
        println!("{} ({}): disabled", p.name, p.kind);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `status`: per provider, its cursor, the last run and its result, the outbox depth
/// by state and the last errors.
pub async fn status(config: &Config) -> Result<ExitCode, AppError> {
    if let StorePath::File(p) = &config.store.path {
        if !p.exists() {
            println!(
                "no database yet at {} (no reconciliation has run)",
                p.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    let store = open_store(&config.store.path).await?;
    let cursors = store.cursors().await.context("cursors")?;
    let depth = store.outbox_depth().await.context("outbox")?;
    let runs = store.last_runs(1).await.context("runs")?;
    let failed = store.failed_ops(10).await.context("outbox")?;
    let last = runs.first();
    match last {
        Some(r) => println!(
            "last run: #{} {} ({}), started {}, finished {}",
            r.id,
            r.status,
            r.mode,
            r.started_at,
            r.finished_at.as_deref().unwrap_or("-")
        ),
        None => println!("last run: none"),
    }
    println!();
    println!(
        "{:<14} {:<10} {:<8} {:>8} {:>8} {:>8} {:>8}  cursor",
        "provider", "kind", "result", "pending", "inflight", "failed", "parked"
    );
    for p in &config.providers {
        let count = |state: &str| {
            depth
                .iter()
                .find(|(n, s, _)| n == &p.name.0 && s == state)
                .map_or(0, |(_, _, c)| *c)
        };
        let result = last
            .and_then(|r| r.report.as_ref())
            .and_then(|rep| rep.get("providers")?.get(&p.name.0).cloned())
            .map(|pr| {
                if pr.get("listing_error").is_some_and(|e| !e.is_null())
                    || pr.get("failed").and_then(|f| f.as_u64()).unwrap_or(0) > 0
                {
                    "failing"
                } else {
                    "ok"
                }
            })
            .unwrap_or(if p.enabled { "-" } else { "disabled" });
        let cursor = cursors
            .iter()
            .find(|(n, _, _)| n == &p.name.0)
            .map(|(_, v, _)| v.as_str())
            .unwrap_or("-");
        println!(
            "{:<14} {:<10} {:<8} {:>8} {:>8} {:>8} {:>8}  {}",
            p.name.0,
            p.kind,
            result,
            count("pending"),
            count("in_flight"),
            count("failed"),
            count("parked"),
            cursor
        );
    }
    let listing_errors: Vec<(String, String)> = last
        .and_then(|r| r.report.as_ref())
        .and_then(|rep| rep.get("providers")?.as_object().cloned())
        .map(|providers| {
            providers
                .into_iter()
                .filter_map(|(name, p)| Some((name, p.get("listing_error")?.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    if !failed.is_empty() || !listing_errors.is_empty() {
        println!();
        println!("last errors:");
        for (name, error) in &listing_errors {
            println!("  {name} listing: {error}");
        }
        for f in failed {
            println!(
                "  {} {} {} [{}] attempts={} next={}: {}",
                f.provider,
                f.op,
                f.email.as_deref().unwrap_or("?"),
                f.state,
                f.attempts,
                f.next_attempt_at.as_deref().unwrap_or("-"),
                f.last_error.as_deref().unwrap_or("")
            );
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(config: &Config, filter: &AuditFilter) -> Result<ExitCode, AppError> {
    let store = open_store(&config.store.path).await?;
    for line in store.audit(filter).await.context("audit")? {
        println!("{line}");
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
