//! The commands about one person: `forget` (erasure everywhere) and `activity` (their
//! events across providers).

use std::process::ExitCode;

use anyhow::Context;

use super::{connect_all, open_store, AppError};
use crate::config::{Config, ConfigError};
use crate::model::{Email, ProviderName, RemoteId};
use crate::store::Store;

/// `forget EMAIL`: deletes every record of the person in every provider that can
/// delete (found by link and by email), then purges the person locally. Exit 1 when a
/// delete failed; a provider that cannot delete is named, with what is left to do.
pub async fn forget(config: &Config, text: &str) -> Result<ExitCode, AppError> {
    let (email, store, links) = person(config, text).await?;
    let providers = connect_all(config)?;
    let mut failed = false;
    for c in &providers {
        let p = &c.provider;
        let caps = p.capabilities();
        let mut ids: Vec<RemoteId> = links
            .iter()
            .filter(|(n, _)| n == p.name())
            .map(|(_, id)| id.clone())
            .collect();
        if caps.lookup {
            match p.lookup(&email).await {
                Ok(found) => ids.extend(found.into_iter().map(|r| r.id)),
                Err(e) => {
                    failed = true;
                    println!("{} ({}): lookup FAILED: {e}", p.name(), p.kind());
                    continue;
                }
            }
        }
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            println!("{} ({}): not found", p.name(), p.kind());
        } else if !caps.delete {
            println!(
                "{} ({}): holds {} record(s) but its API cannot delete: erase them by hand ({})",
                p.name(),
                p.kind(),
                ids.len(),
                ids.iter()
                    .map(|i| i.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        } else {
            for id in ids {
                match p.delete(&id).await {
                    Ok(()) => println!("{} ({}): deleted {}", p.name(), p.kind(), id),
                    Err(e) => {
                        failed = true;
                        println!("{} ({}): delete of {} FAILED: {e}", p.name(), p.kind(), id);
                    }
                }
            }
        }
    }
    let run = store.begin_run("forget").await.context("store")?;
    store.forget(run, &email).await.context("store")?;
    let status = if failed { "failed" } else { "converged" };
    store
        .finish_run(run, status, &serde_json::json!({"forget": true}))
        .await
        .context("store")?;
    store.close().await;
    println!("custsync: the person is purged locally; only a hash of the email is kept");
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `activity EMAIL`: the person's timeline as the store holds it (DESIGN 14), every
/// source, newest first: a table, or JSON lines with `--json`. `--refresh` reads the
/// person's streams first, with reads only (no lease needed: it writes nothing to any
/// provider and only the activity tables locally); exit 1 when a read failed.
pub async fn activity(
    config: &Config,
    text: &str,
    json: bool,
    refresh: bool,
) -> Result<ExitCode, AppError> {
    use crate::sync::{activity, DEFAULT_TENANT};
    let email =
        Email::parse(text).map_err(|e| ConfigError::new("EMAIL", format!("{e}: {text:?}")))?;
    let store = open_store(&config.store.path).await?;
    let Some((customer, _)) = store.person(&email).await.context("store")? else {
        store.close().await;
        eprintln!("custsync: no customer with this email is known");
        return Ok(ExitCode::SUCCESS);
    };
    let mut failed = false;
    if refresh {
        let providers = connect_all(config)?;
        let stop = tokio_util::sync::CancellationToken::new();
        let read = activity::poll(&store, DEFAULT_TENANT, &providers, 1, Some(customer), &stop)
            .await
            .context("store")?;
        if let Some(e) = &read.last_error {
            failed = true;
            eprintln!("custsync: {e}");
        }
    }
    let events = store
        .timeline(DEFAULT_TENANT, customer)
        .await
        .context("store")?;
    store.close().await;
    if json {
        for e in &events {
            let occurred_at = e.when();
            println!(
                "{}",
                serde_json::json!({"provider": e.provider, "id": e.id, "type": e.kind,
                    "occurred_at": occurred_at, "label": e.label, "raw": e.raw})
            );
        }
    } else {
        print!("{}", timeline_table(&events));
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The timeline as a table a person reads.
fn timeline_table(events: &[crate::store::activity::TimelineEvent]) -> String {
    if events.is_empty() {
        return "no activity stored for this person (try --refresh)\n".to_string();
    }
    let mut out = format!(
        "{:<20}  {:<12}  {:<24}  {}\n",
        "when", "provider", "type", "label"
    );
    for e in events {
        let when = e
            .occurred_at
            .as_deref()
            .and_then(crate::store::parse_time)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<20}  {:<12}  {:<24}  {}\n",
            when, e.provider, e.kind, e.label
        ));
    }
    out
}

/// The person named on the command line (exit 2 when `text` is no email), the open
/// store, and the records custsync has linked to them.
async fn person(
    config: &Config,
    text: &str,
) -> Result<(Email, Store, Vec<(ProviderName, RemoteId)>), AppError> {
    let email =
        Email::parse(text).map_err(|e| ConfigError::new("EMAIL", format!("{e}: {text:?}")))?;
    let store = open_store(&config.store.path).await?;
    let links = store
        .person(&email)
        .await
        .context("store")?
        .map(|(_, l)| l)
        .unwrap_or_default();
    Ok((email, store, links))
}
