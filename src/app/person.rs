//! The commands about one person: `forget` (erasure everywhere) and `activity` (their
//! events across providers).

use std::process::ExitCode;

use anyhow::Context;

use super::{connect_all, open_store, AppError};
use crate::config::{Config, ConfigError};
use crate::model::{Email, ProviderName, RemoteId};
use crate::providers;
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

/// `activity EMAIL`: the person's events in every provider that keeps a stream, read
/// live through the records custsync linked. Exit 1 when a provider failed.
pub async fn activity(config: &Config, text: &str) -> Result<ExitCode, AppError> {
    let (_, store, links) = person(config, text).await?;
    store.close().await;
    let mut events = Vec::new();
    let mut failed = false;
    for c in connect_all(config)? {
        let Some((_, id)) = links.iter().find(|(n, _)| n == c.provider.name()) else {
            continue;
        };
        match c.provider.activity(id).await {
            Ok(found) => events.extend(found.into_iter().map(|a| (c.provider.name().0.clone(), a))),
            Err(providers::ProviderError::Unsupported { .. }) => {}
            Err(e) => {
                failed = true;
                eprintln!("custsync: {e}");
            }
        }
    }
    events.sort_by_key(|(_, a)| a.at);
    for (provider, a) in events {
        let at = a.at.map(|t| t.to_rfc3339());
        println!(
            "{}",
            serde_json::json!({"at": at, "provider": provider, "type": a.kind, "label": a.label, "event": a.raw})
        );
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
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
