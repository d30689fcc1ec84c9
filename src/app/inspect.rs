//! The commands that look without changing anything: `check`, `status`, `audit`.
//! They never make a database: where there is none yet they say so and exit 1.

mod status;

use std::process::ExitCode;

use anyhow::Context;

pub use status::status;

use super::{connect_all, provider_reason, unusable_store, AppError};
use crate::config::{Config, ConfigError, StorePath};
use crate::store::audit::{AuditFilter, ACTIONS};
use crate::store::Store;

/// `check`: the config is valid (always), and each enabled provider answers one cheap
/// authenticated request (unless offline).
pub async fn check(config: &Config, offline: bool) -> Result<ExitCode, AppError> {
    if offline {
        let set = config.tenant_set()?;
        if !set.configured {
            println!("config ok: {} provider(s)", config.providers.len());
            return Ok(ExitCode::SUCCESS);
        }
        // Every tenant file is checked: the good ones listed, each bad one a line.
        let mut bad = 0;
        for t in &set.tenants {
            match &t.config {
                Ok(c) => println!("tenant {}: ok: {} provider(s)", t.name, c.providers.len()),
                Err(e) => {
                    bad += 1;
                    eprintln!("tenant {}: {e}", t.name);
                }
            }
        }
        if bad > 0 {
            return Ok(ExitCode::from(2));
        }
        println!("config ok: {} tenant(s)", set.tenants.len());
        return Ok(ExitCode::SUCCESS);
    }
    let (configured, chosen) = super::tenants::chosen(config, &[])?;
    if configured {
        // Each tenant's providers, under the tenant's name; a bad file is a failure.
        let mut ok = true;
        for t in &chosen {
            match &t.config {
                Err(e) => {
                    ok = false;
                    println!("tenant {}: FAILED: {e}", t.name);
                }
                Ok(c) => {
                    println!("tenant {}:", t.name);
                    ok &= check_providers(c).await? == ExitCode::SUCCESS;
                }
            }
        }
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    check_providers(config).await
}

/// One cheap authenticated request to each enabled provider of `config`.
async fn check_providers(config: &Config) -> Result<ExitCode, AppError> {
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

/// `audit`: the trail as JSON lines. A `--provider` that the config does not name or
/// an `--action` the store never writes is bad usage (exit 2), not an empty answer.
pub async fn audit(
    config: &Config,
    key: Option<&str>,
    filter: &AuditFilter,
) -> Result<ExitCode, AppError> {
    if let Some(name) = &filter.provider {
        if config.provider(name).is_none() {
            let known: Vec<&str> = config.providers.iter().map(|p| p.name.0.as_str()).collect();
            return Err(ConfigError::new(
                "--provider",
                format!(
                    "no provider named {name:?} in the config (known: {})",
                    known.join(", ")
                ),
            )
            .into());
        }
    }
    if let Some(action) = &filter.action {
        if !ACTIONS.contains(&action.as_str()) {
            return Err(ConfigError::new(
                "--action",
                format!("unknown action {action:?} (one of: {})", ACTIONS.join(", ")),
            )
            .into());
        }
    }
    let store = open_existing_store(&config.store.path, key).await?;
    for line in store.audit(filter).await.context("audit")? {
        println!("{line}");
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Opens the configured database for a command that only reads; where there is none
/// yet, one line (exit 1) and no file made.
pub(super) async fn open_existing_store(
    path: &StorePath,
    key: Option<&str>,
) -> Result<Store, AppError> {
    match Store::open_existing(path, key).await {
        Ok(Some(store)) => Ok(store),
        Ok(None) => {
            let at = match path {
                StorePath::File(p) => p.display().to_string(),
                StorePath::Memory => ":memory:".into(),
                StorePath::Postgres(url) => url.to_string(),
            };
            Err(anyhow::anyhow!("no database at {at} yet: run custsync --once first").into())
        }
        Err(e) => Err(match unusable_store(&e) {
            Some(why) => ConfigError::new("store.url", why).into(),
            None => AppError::Other(anyhow::Error::new(e)),
        }),
    }
}
