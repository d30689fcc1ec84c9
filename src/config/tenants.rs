//! Tenants (DESIGN 13): `[tenants] dir`, one `NAME.toml` a tenant, each tenant's
//! effective [`Config`], read again whenever [`Config::tenant_set`] is called.
//!
//! A tenant file holds `[sync]` overrides and `[providers.*]` tables, nothing else.
//! Its effective config is the top-level one (store, server, cluster, activity,
//! `[[groups]]`, `[sync]`) with the tenant's `[sync]` keys over the top-level ones
//! and the tenant's own providers, checked by the same code as a single-tenant file:
//!
//! - `api_key_file` relative to the tenant file's directory;
//! - `CUSTSYNC__` environment overrides are not applied to tenant files (the
//!   environment is one for all tenants; a variable naming a provider would apply to
//!   the top level, where with `[tenants]` no provider may be);
//! - a top-level `[[groups]]` rule applies to a tenant only where the tenant has a
//!   provider of the name the rule gives (then it must be a sendwithus one); the
//!   other rules are skipped for that tenant;
//! - a top-level `[sync] priority` drops, per tenant, the names the tenant has no
//!   provider of; a tenant's own `[sync] priority` must name only its providers.
//!
//! One bad tenant file is reported against that tenant and hides no other.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::Deserialize;

use super::{
    deserialize, indexed, validate_groups, validate_priority, validate_providers, Config,
    ConfigError, PriorityCheck, RawProvider, RawSync,
};

/// The one tenant of a config without `[tenants]`.
pub const DEFAULT_TENANT: &str = "default";

/// `[tenants]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenants {
    dir: Option<PathBuf>,
}

/// `[tenants]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantsConfig {
    /// The directory of the tenant files; a relative `dir` is resolved against the
    /// directory of the config file (the working directory for a config given as text).
    pub dir: PathBuf,
}

impl RawTenants {
    pub(super) fn validate(self, base: Option<&Path>) -> Result<TenantsConfig, ConfigError> {
        let dir = self
            .dir
            .filter(|d| !d.as_os_str().is_empty())
            .ok_or_else(|| {
                ConfigError::new("tenants.dir", "missing: the directory of NAME.toml files")
            })?;
        let dir = match base {
            Some(b) if dir.is_relative() => b.join(dir),
            _ => dir,
        };
        Ok(TenantsConfig { dir })
    }
}

/// One tenant file as written: `[sync]` overrides and `[providers.*]`, nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    providers: IndexMap<String, RawProvider>,
}

/// Every tenant of a config, as read now.
#[derive(Debug)]
pub struct TenantSet {
    /// `[tenants]` is configured; `false`: the one tenant is `default`, the top-level
    /// config as it is.
    pub configured: bool,
    /// Sorted by name (byte order).
    pub tenants: Vec<TenantEntry>,
}

/// One tenant: its name and its effective config, or what is wrong with its file.
#[derive(Debug)]
pub struct TenantEntry {
    /// The file stem (for a bad stem too, so that it can be reported), or `default`.
    pub name: String,
    /// The tenant file; `None` for `default` without `[tenants]`.
    pub file: Option<PathBuf>,
    /// The effective config; an error names the file and the key
    /// (`tenants/shop-a.toml: providers.store.base_url`).
    pub config: Result<Arc<Config>, ConfigError>,
}

/// A tenant NAME: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn valid_tenant_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

impl Config {
    /// Reads the tenants now (call it again to see files added or removed).
    ///
    /// Without `[tenants]`: one entry, `default`, this config as it is. With it: one
    /// entry per `*.toml` file in the directory (by exact, lower-case extension; other
    /// files, and directories, are ignored; symbolic links are followed). A file whose
    /// stem is not a tenant NAME, or that does not validate, is an entry with an error.
    /// A directory that cannot be read is an error naming `tenants.dir`.
    pub fn tenant_set(&self) -> Result<TenantSet, ConfigError> {
        let Some(tenants) = &self.tenants else {
            return Ok(TenantSet {
                configured: false,
                tenants: vec![TenantEntry {
                    name: DEFAULT_TENANT.to_string(),
                    file: None,
                    config: Ok(Arc::new(self.clone())),
                }],
            });
        };
        let dir = &tenants.dir;
        let unreadable = |e: std::io::Error| {
            ConfigError::new("tenants.dir", format!("cannot read {}: {e}", dir.display()))
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(unreadable)? {
            let path = entry.map_err(unreadable)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            // A dangling link is a tenant file that cannot be read, said below.
            if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let config = if valid_tenant_name(&name) {
                self.load_tenant(&path).map(Arc::new)
            } else {
                Err(ConfigError::new(
                    path.display().to_string(),
                    format!(
                        "{name:?} is not a tenant name ([a-z0-9][a-z0-9_-]{{0,62}}, the file stem)"
                    ),
                ))
            };
            out.push(TenantEntry {
                name,
                file: Some(path),
                config,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(TenantSet {
            configured: true,
            tenants: out,
        })
    }

    /// One tenant's effective config; every error names the file before the key.
    fn load_tenant(&self, path: &Path) -> Result<Config, ConfigError> {
        let in_file =
            |e: ConfigError| ConfigError::new(format!("{}: {}", path.display(), e.key), e.message);
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        let built = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        let raw: RawTenant = deserialize(built).map_err(in_file)?;
        let own_priority = raw.sync.priority.is_some();
        let sync = self.base.sync.overlay(raw.sync);
        let scalars = sync.validate_scalars().map_err(in_file)?;
        let providers = validate_providers(raw.providers, path.parent()).map_err(in_file)?;
        let check = if own_priority {
            PriorityCheck::Strict
        } else {
            PriorityCheck::DropUnknown
        };
        let priority =
            validate_priority(sync.priority.clone(), &providers, check).map_err(in_file)?;
        let rules = indexed(self.base.groups.clone())
            .into_iter()
            .filter(|(_, g)| {
                g.provider
                    .as_deref()
                    .is_some_and(|n| providers.iter().any(|p| p.name.0 == n))
            })
            .collect();
        let groups = validate_groups(rules, Some(&providers)).map_err(in_file)?;
        Ok(Config {
            store: self.store.clone(),
            sync: scalars.with_priority(priority),
            server: self.server.clone(),
            cluster: self.cluster.clone(),
            providers,
            activity: self.activity.clone(),
            groups,
            tenants: None,
            base: Arc::new(super::BaseRaw {
                sync,
                groups: self.base.groups.clone(),
            }),
        })
    }
}

impl TenantSet {
    /// The entries named, in the set's order, each once; no names: all of them. A name
    /// that is not a tenant is an error naming `--tenant`.
    pub fn select(&self, names: &[String]) -> Result<Vec<&TenantEntry>, ConfigError> {
        if names.is_empty() {
            return Ok(self.tenants.iter().collect());
        }
        if let Some(unknown) = names.iter().find(|n| self.get(n).is_none()) {
            let known: Vec<&str> = self.tenants.iter().map(|t| t.name.as_str()).collect();
            let known = if known.is_empty() {
                "there are none".to_string()
            } else {
                format!("known: {}", known.join(", "))
            };
            return Err(ConfigError::new(
                "--tenant",
                format!("no tenant named {unknown:?} ({known})"),
            ));
        }
        Ok(self
            .tenants
            .iter()
            .filter(|t| names.contains(&t.name))
            .collect())
    }

    /// The tenant of this name.
    pub fn get(&self, name: &str) -> Option<&TenantEntry> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// The tenants whose file is bad (their `config` is an error).
    pub fn failed(&self) -> impl Iterator<Item = (&str, &ConfigError)> {
        self.tenants
            .iter()
            .filter_map(|t| t.config.as_ref().err().map(|e| (t.name.as_str(), e)))
    }
}
