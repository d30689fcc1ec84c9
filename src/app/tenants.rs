//! Which tenants a command acts on (DESIGN 13): every tenant of `[tenants] dir`, or
//! those named by `--tenant`; without `[tenants]`, the one tenant `default`, the
//! top-level config as it is.

use std::sync::Arc;

use crate::config::{Config, ConfigError, TenantSet};

use super::AppError;

/// One tenant as a command sees it.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub name: String,
    /// What the store calls it: `None` for the single merchant of a config without
    /// `[tenants]` (the configured SQLite file itself).
    pub store_key: Option<String>,
    /// Its effective config, or why its file is unusable.
    pub config: Result<Arc<Config>, ConfigError>,
    /// Its file's text as read (`None` without `[tenants]`), to see it changed.
    pub text: Option<String>,
}

impl Chosen {
    pub fn key(&self) -> Option<&str> {
        self.store_key.as_deref()
    }
}

/// The tenants read now, and whether `[tenants]` is configured.
pub fn chosen(config: &Config, names: &[String]) -> Result<(bool, Vec<Chosen>), AppError> {
    let set: TenantSet = config.tenant_set()?;
    let picked = set.select(names)?;
    let out = picked
        .into_iter()
        .map(|e| Chosen {
            name: e.name.clone(),
            store_key: set.configured.then(|| e.name.clone()),
            config: e.config.clone(),
            text: e.text.clone(),
        })
        .collect();
    Ok((set.configured, out))
}

/// The one tenant that `command` (`forget`, `audit`, `activity`) acts on: with more
/// than one tenant, exactly one `--tenant` must say which.
pub fn one(config: &Config, names: &[String], command: &str) -> Result<Chosen, AppError> {
    let (_, mut all) = chosen(config, names)?;
    match all.len() {
        1 => {
            let c = all.remove(0);
            if let Err(e) = &c.config {
                return Err(e.clone().into());
            }
            Ok(c)
        }
        0 => Err(ConfigError::new("tenants.dir", "no tenant is configured").into()),
        _ => Err(ConfigError::new(
            "--tenant",
            format!("with more than one tenant, {command} needs one --tenant NAME"),
        )
        .into()),
    }
}

/// `--allow-deletes` names a provider of at least one of the tenants acted on.
pub fn check_allow_deletes(tenants: &[Chosen], names: &[String]) -> Result<(), ConfigError> {
    for n in names {
        let known = tenants
            .iter()
            .filter_map(|t| t.config.as_ref().ok())
            .any(|c| c.provider(n).is_some());
        if !known {
            return Err(ConfigError::new(
                "--allow-deletes",
                format!("no provider named {n:?} in the config"),
            ));
        }
    }
    Ok(())
}
