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
#[derive(Debug, Clone)]
pub struct TenantSet {
    /// `[tenants]` is configured; `false`: the one tenant is `default`, the top-level
    /// config as it is.
    pub configured: bool,
    /// Sorted by name (byte order).
    pub tenants: Vec<TenantEntry>,
}

/// One tenant: its name and its effective config, or what is wrong with its file.
#[derive(Debug, Clone)]
pub struct TenantEntry {
    /// The file stem (for a bad stem too, so that it can be reported), or `default`.
    pub name: String,
    /// The tenant file; `None` for `default` without `[tenants]`.
    pub file: Option<PathBuf>,
    /// The effective config; an error names the file and the key
    /// (`tenants/shop-a.toml: providers.store.base_url`).
    pub config: Result<Arc<Config>, ConfigError>,
    /// The file's text as read for `config` (`None`: no file, or not read), so that
    /// a worker sees a changed file without reading it again.
    pub text: Option<String>,
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
                    text: None,
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
            let (config, text) = if valid_tenant_name(&name) {
                match std::fs::read_to_string(&path) {
                    Ok(text) => (self.load_tenant(&path, &text).map(Arc::new), Some(text)),
                    Err(e) => (
                        Err(ConfigError::new(
                            path.display().to_string(),
                            format!("cannot read: {e}"),
                        )),
                        None,
                    ),
                }
            } else {
                let bad = ConfigError::new(
                    path.display().to_string(),
                    format!(
                        "{name:?} is not a tenant name ([a-z0-9][a-z0-9_-]{{0,62}}, the file stem)"
                    ),
                );
                (Err(bad), None)
            };
            out.push(TenantEntry {
                name,
                file: Some(path),
                config,
                text,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(TenantSet {
            configured: true,
            tenants: out,
        })
    }

    /// One tenant's effective config from the `text` of its file at `path`; every
    /// error names the file before the key.
    fn load_tenant(&self, path: &Path, text: &str) -> Result<Config, ConfigError> {
        let in_file =
            |e: ConfigError| ConfigError::new(format!("{}: {}", path.display(), e.key), e.message);
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorePath;
    use crate::model::ProviderName;

    const TOP: &str = r#"
        [store]
        url = "sqlite:///var/lib/custsync/c.db"
        [sync]
        max_delete_fraction = 0.3
        push_concurrency = 3
        [server]
        listen = "127.0.0.1:9999"
        [cluster]
        max_concurrent_tenants = 2
        [activity]
        enabled = true
    "#;

    const SHOP: &str = r#"
        [providers.store]
        kind = "nuvemshop"
        base_url = "http://127.0.0.1:8080/v1/1"
        api_key = "k2"
        [providers.ship]
        kind = "malomo"
        base_url = "https://api.gomalomo.com"
        api_key = "k1"
    "#;

    struct Setup {
        _root: tempfile::TempDir,
        root: PathBuf,
        tenants: PathBuf,
    }

    /// A config file `custsync.toml` with `[tenants] dir = "tenants"` (relative) under
    /// a new directory, and the tenant files given.
    fn setup(top: &str, files: &[(&str, &str)]) -> Setup {
        let root_dir = tempfile::tempdir().unwrap();
        let root = root_dir.path().to_path_buf();
        let tenants = root.join("tenants");
        std::fs::create_dir(&tenants).unwrap();
        for (name, text) in files {
            std::fs::write(tenants.join(name), text).unwrap();
        }
        std::fs::write(
            root.join("custsync.toml"),
            format!("{top}\n[tenants]\ndir = \"tenants\"\n"),
        )
        .unwrap();
        Setup {
            _root: root_dir,
            root,
            tenants,
        }
    }

    impl Setup {
        fn config(&self) -> Result<Config, ConfigError> {
            Config::load(&self.root.join("custsync.toml"), true)
        }
        fn set(&self) -> TenantSet {
            self.config().unwrap().tenant_set().unwrap()
        }
    }

    fn names(set: &TenantSet) -> Vec<&str> {
        set.tenants.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn names_follow_the_rule() {
        for ok in ["a", "0", "shop-a", "shop_a", "a-", "9z", &"a".repeat(63)] {
            assert!(valid_tenant_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "Shop",
            "shoP",
            "shop.a",
            "shop a",
            "é",
            &"a".repeat(64),
        ] {
            assert!(!valid_tenant_name(bad), "{bad}");
        }
    }

    #[test]
    fn without_tenants_the_top_level_is_default() {
        let c = Config::from_toml(&format!("{TOP}\n{SHOP}")).unwrap();
        assert!(c.tenants.is_none());
        let set = c.tenant_set().unwrap();
        assert!(!set.configured);
        assert_eq!(names(&set), [DEFAULT_TENANT]);
        let only = set.tenants[0].config.as_ref().unwrap();
        assert_eq!(only.providers.len(), 2);
        assert_eq!(set.select(&[]).unwrap().len(), 1);
        assert_eq!(set.select(&["default".into()]).unwrap().len(), 1);
        assert_eq!(set.select(&["x".into()]).unwrap_err().key, "--tenant");
        // And no providers at all is still an error there.
        assert_eq!(Config::from_toml(TOP).unwrap_err().key, "providers");
    }

    #[test]
    fn each_file_is_a_tenant_with_the_top_level_around_it() {
        let s = setup(
            TOP,
            &[
                ("shop-b.toml", SHOP),
                (
                    "shop-a.toml",
                    &format!("[sync]\nmax_delete_fraction = 0.9\n{SHOP}"),
                ),
                ("README.md", "not a tenant"),
                ("shop-c.toml.bak", "not a tenant"),
            ],
        );
        std::fs::create_dir(s.tenants.join("dir.toml")).unwrap();
        let top = s.config().unwrap();
        assert!(top.providers.is_empty(), "providers live in the tenants");
        assert_eq!(top.tenants.as_ref().unwrap().dir, s.root.join("tenants"));
        let set = top.tenant_set().unwrap();
        assert!(set.configured);
        assert_eq!(names(&set), ["shop-a", "shop-b"]);
        let a = set.get("shop-a").unwrap();
        assert_eq!(
            a.file.as_deref(),
            Some(s.tenants.join("shop-a.toml").as_path())
        );
        let a = a.config.as_ref().unwrap();
        let b = set.get("shop-b").unwrap().config.as_ref().unwrap();
        // The tenant's [sync] key over the top level's; the others inherited.
        assert_eq!(a.sync.max_delete_fraction, 0.9);
        assert_eq!(b.sync.max_delete_fraction, 0.3);
        assert_eq!(a.sync.push_concurrency, 3);
        for c in [a, b] {
            assert_eq!(c.providers.len(), 2);
            assert_eq!(
                c.store.path,
                StorePath::File("/var/lib/custsync/c.db".into())
            );
            assert_eq!(c.server.listen.port(), 9999);
            assert_eq!(c.cluster.max_concurrent_tenants, 2);
            assert!(c.activity.enabled);
            assert!(c.tenants.is_none());
            assert_eq!(
                c.sync.priority,
                [ProviderName("store".into()), ProviderName("ship".into())]
            );
        }
    }

    #[test]
    fn a_bad_tenant_hides_no_other() {
        let s = setup(
            TOP,
            &[
                ("good.toml", SHOP),
                (
                    "bad-url.toml",
                    &SHOP.replace("https://api.gomalomo.com", "http://api.gomalomo.com"),
                ),
                ("Upper.toml", SHOP),
                ("-dash.toml", SHOP),
                (
                    "other-table.toml",
                    &format!("{SHOP}\n[store]\nurl = \"sqlite::memory:\"\n"),
                ),
                ("other-key.toml", &format!("name = \"x\"\n{SHOP}")),
                (
                    "bad-sync.toml",
                    &format!("[sync]\nschedule = \"never\"\n{SHOP}"),
                ),
                ("sync-key.toml", &format!("[sync]\nfoo = 1\n{SHOP}")),
                ("empty.toml", ""),
                ("garbage.toml", "this = = not toml ["),
            ],
        );
        let set = s.set();
        let good = set.get("good").unwrap();
        assert!(good.config.is_ok());
        let key = |name: &str| {
            let e = set.get(name).unwrap().config.as_ref().unwrap_err();
            assert!(!e.to_string().contains('\n'), "{e}");
            e.key.clone()
        };
        let file = |name: &str| s.tenants.join(format!("{name}.toml")).display().to_string();
        assert_eq!(
            key("bad-url"),
            format!("{}: providers.ship.base_url", file("bad-url"))
        );
        assert_eq!(
            key("other-table"),
            format!("{}: store", file("other-table"))
        );
        assert_eq!(key("other-key"), format!("{}: name", file("other-key")));
        assert_eq!(
            key("bad-sync"),
            format!("{}: sync.schedule", file("bad-sync"))
        );
        assert_eq!(key("sync-key"), format!("{}: sync.foo", file("sync-key")));
        assert_eq!(key("empty"), format!("{}: providers", file("empty")));
        assert_eq!(key("garbage"), file("garbage"));
        assert_eq!(key("Upper"), file("Upper"));
        assert_eq!(key("-dash"), file("-dash"));
        let failed: Vec<&str> = set.failed().map(|(n, _)| n).collect();
        assert_eq!(failed.len(), set.tenants.len() - 1);
        assert!(!failed.contains(&"good"));
        // Sorted by name, the bad ones included.
        let mut sorted = names(&set);
        sorted.sort();
        assert_eq!(names(&set), sorted);
    }

    #[test]
    fn files_come_and_go_between_reads() {
        let s = setup(TOP, &[("a.toml", SHOP)]);
        let top = s.config().unwrap();
        assert_eq!(names(&top.tenant_set().unwrap()), ["a"]);
        std::fs::write(s.tenants.join("b.toml"), SHOP).unwrap();
        assert_eq!(names(&top.tenant_set().unwrap()), ["a", "b"]);
        std::fs::remove_file(s.tenants.join("a.toml")).unwrap();
        assert_eq!(names(&top.tenant_set().unwrap()), ["b"]);
        std::fs::remove_file(s.tenants.join("b.toml")).unwrap();
        assert!(top.tenant_set().unwrap().tenants.is_empty());
        std::fs::remove_dir(&s.tenants).unwrap();
        assert_eq!(top.tenant_set().unwrap_err().key, "tenants.dir");
    }

    #[test]
    fn select_by_name() {
        let s = setup(TOP, &[("a.toml", SHOP), ("b.toml", SHOP), ("c.toml", SHOP)]);
        let set = s.set();
        let picked: Vec<&str> = set
            .select(&["c".into(), "a".into(), "c".into()])
            .unwrap()
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(picked, ["a", "c"]);
        assert_eq!(set.select(&[]).unwrap().len(), 3);
        let e = set.select(&["a".into(), "zz".into()]).unwrap_err();
        assert_eq!(e.key, "--tenant");
        assert!(
            e.message.contains("\"zz\"") && e.message.contains("a, b, c"),
            "{e}"
        );
    }

    #[test]
    fn tenants_and_top_level_providers_do_not_mix() {
        let s = setup(&format!("{TOP}\n{SHOP}"), &[]);
        assert_eq!(s.config().unwrap_err().key, "tenants.dir");
        assert_eq!(
            Config::from_toml("[tenants]\n").unwrap_err().key,
            "tenants.dir"
        );
        assert_eq!(
            Config::from_toml("[tenants]\ndir = \"x\"\nfoo = 1\n")
                .unwrap_err()
                .key,
            "tenants.foo"
        );
        // Given as text, a relative dir is the working directory's.
        let c = Config::from_toml("[tenants]\ndir = \"x\"\n").unwrap();
        assert_eq!(c.tenants.unwrap().dir, PathBuf::from("x"));
    }

    #[test]
    fn key_files_are_the_tenant_files_neighbours() {
        let keyed = SHOP.replace("api_key = \"k1\"", "api_key_file = \"keys/ship\"");
        let s = setup(TOP, &[("a.toml", &keyed)]);
        std::fs::create_dir(s.tenants.join("keys")).unwrap();
        std::fs::write(s.tenants.join("keys/ship"), "secret-k\n").unwrap();
        let set = s.set();
        let c = set.get("a").unwrap().config.as_ref().unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(
            c.provider("ship").unwrap().api_key.expose_secret(),
            "secret-k"
        );
        assert!(!format!("{set:?}").contains("secret-k"));
        std::fs::remove_file(s.tenants.join("keys/ship")).unwrap();
        let set = s.set();
        let e = set.get("a").unwrap().config.as_ref().unwrap_err();
        assert!(
            e.key.ends_with("a.toml: providers.ship.api_key_file"),
            "{e}"
        );
    }

    #[test]
    fn groups_and_priority_follow_the_tenants_providers() {
        let top = TOP.replace(
            "[sync]\n",
            "[sync]\npriority = [\"email\", \"ship\"]\n",
        ) + "\n[[groups]]\nprovider = \"email\"\ngroup_id = \"g1\"\nwhen = { accepts_marketing = true }\n";
        let swu = "[providers.email]\nkind = \"sendwithus\"\nbase_url = \"http://127.0.0.1:1\"\napi_key = \"k\"\n";
        let not_swu = "[providers.email]\nkind = \"ecwid\"\nbase_url = \"http://127.0.0.1:1\"\napi_key = \"k\"\n";
        let s = setup(
            &top,
            &[
                ("with.toml", &format!("{SHOP}\n{swu}")),
                ("without.toml", SHOP),
                ("wrong-kind.toml", &format!("{SHOP}\n{not_swu}")),
                (
                    "own-priority.toml",
                    &format!("[sync]\npriority = [\"email\"]\n{SHOP}"),
                ),
            ],
        );
        let top_config = s.config().unwrap();
        assert!(top_config.groups.is_empty());
        let set = top_config.tenant_set().unwrap();
        let with = set.get("with").unwrap().config.as_ref().unwrap();
        assert_eq!(with.groups.len(), 1);
        assert_eq!(with.groups[0].group_id, "g1");
        assert_eq!(
            with.sync.priority,
            ["email", "ship", "store"].map(|n| ProviderName(n.into()))
        );
        let without = set.get("without").unwrap().config.as_ref().unwrap();
        assert!(without.groups.is_empty(), "the rule is skipped");
        assert_eq!(
            without.sync.priority,
            ["ship", "store"].map(|n| ProviderName(n.into()))
        );
        let e = set.get("wrong-kind").unwrap().config.as_ref().unwrap_err();
        assert!(
            e.key.ends_with("wrong-kind.toml: groups[0].provider"),
            "{e}"
        );
        let e = set
            .get("own-priority")
            .unwrap()
            .config
            .as_ref()
            .unwrap_err();
        assert!(e.key.ends_with("own-priority.toml: sync.priority"), "{e}");
        // A malformed rule is the top level's error at once.
        let s = setup(&format!("{TOP}\n[[groups]]\nprovider = \"email\"\n"), &[]);
        assert_eq!(s.config().unwrap_err().key, "groups[0].group_id");
    }
}
