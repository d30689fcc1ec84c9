//! Typed configuration: one TOML file plus `CUSTSYNC__` environment overrides,
//! deserialized with unknown keys rejected and validated once at load.
//!
//! Owns: the file format, defaults and every check on it. After `Config::load` the
//! program never checks configuration again, except the tenant files (DESIGN 13),
//! read and checked again by [`Config::tenant_set`] (module `tenants`). Every failure
//! is a [`ConfigError`] naming the key, which the binary prints as one line and exits 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;

use indexmap::IndexMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::model::ProviderName;

mod tenants;
pub use tenants::{valid_tenant_name, TenantEntry, TenantSet, TenantsConfig, DEFAULT_TENANT};

/// A configuration problem: the key it is about and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        let message: String = message.into();
        // One line, always: parsers like to spread their messages over several.
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        Self {
            key: key.into(),
            message,
        }
    }
}

/// The five kinds of provider custsync speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Sendwithus,
    Partially,
    Malomo,
    Nuvemshop,
    Ecwid,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sendwithus => "sendwithus",
            Kind::Partially => "partially",
            Kind::Malomo => "malomo",
            Kind::Nuvemshop => "nuvemshop",
            Kind::Ecwid => "ecwid",
        }
    }

    /// The rate limit used when the config gives none (DESIGN 4b).
    pub fn default_rate_limit(self) -> RateLimit {
        match self {
            Kind::Nuvemshop => RateLimit {
                per_second: 2.0,
                burst: 40,
            },
            Kind::Ecwid => RateLimit {
                per_second: 10.0,
                burst: 10,
            },
            _ => RateLimit {
                per_second: 5.0,
                burst: 10,
            },
        }
    }

    /// The largest page the API takes, where it takes one.
    pub fn max_page_size(self) -> Option<u32> {
        match self {
            Kind::Nuvemshop => Some(200),
            Kind::Ecwid => Some(100),
            Kind::Partially => Some(100),
            Kind::Malomo | Kind::Sendwithus => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: a width or alignment asked for is kept.
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictPolicy {
    /// The later remote `updated_at` wins; ties go to `[sync].priority`.
    Latest,
    /// The first provider in `[sync].priority` wins.
    Priority,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    providers: IndexMap<String, RawProvider>,
    #[serde(default)]
    activity: RawActivity,
    #[serde(default)]
    groups: Vec<RawGroup>,
    tenants: Option<tenants::RawTenants>,
}

/// `[activity]` (DESIGN 14).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActivity {
    enabled: Option<bool>,
    customers_per_cycle: Option<usize>,
}

/// One `[[groups]]` table (DESIGN 14).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    provider: Option<String>,
    group_id: Option<String>,
    when: Option<IndexMap<String, serde_json::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    lease_secs: Option<f64>,
    worker_id: Option<String>,
    max_concurrent_tenants: Option<usize>,
    tenant_slice_secs: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
    synchronous: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    schedule: Option<String>,
    propagate_deletes: Option<bool>,
    max_delete_fraction: Option<f64>,
    conflict_policy: Option<String>,
    priority: Option<Vec<String>>,
    push_concurrency: Option<usize>,
    full_listing_hours: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    kind: Option<String>,
    base_url: Option<String>,
    api_key: Option<SecretString>,
    api_key_file: Option<PathBuf>,
    rate_limit: Option<RateLimit>,
    page_size: Option<u32>,
    enabled: Option<bool>,
    timeout_secs: Option<f64>,
    connect_timeout_secs: Option<f64>,
    max_retries: Option<usize>,
    user_agent: Option<String>,
}

/// Where the database lives: a SQLite file, SQLite in memory, or PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorePath {
    File(PathBuf),
    Memory,
    Postgres(PgUrl),
}

/// A `postgres://` or `postgresql://` URL, which may carry a password: `Debug` and
/// `Display` print it as `***` (in the user info and in a `password=` query
/// parameter); [`PgUrl::expose`] gives the URL to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(Url);

impl PgUrl {
    /// Parses a `postgres://` or `postgresql://` URL with a host (in the authority or
    /// as a `host=` parameter). The error never holds the password.
    pub fn parse(text: &str) -> Result<PgUrl, String> {
        let shown = redact_url_text(text);
        let url = Url::parse(text.trim()).map_err(|e| format!("not a URL ({e}): {shown:?}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!("not a postgres:// URL: {shown:?}"));
        }
        let has_host = url.host_str().is_some_and(|h| !h.is_empty())
            || url.query_pairs().any(|(k, v)| k == "host" && !v.is_empty());
        if !has_host {
            return Err(format!("has no host: {shown:?}"));
        }
        Ok(PgUrl(url))
    }

    /// The full URL, password included: for connecting, never for printing.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut url = self.0.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        if url
            .query_pairs()
            .any(|(k, _)| k.eq_ignore_ascii_case("password"))
        {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password") {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.redacted())
    }
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PgUrl").field(&self.redacted()).finish()
    }
}

/// Best effort on text that may not even parse: what follows `user:` up to the last
/// `@` after `://`, and any `password=` value, become `***`.
fn redact_url_text(text: &str) -> String {
    let mut out = text.to_string();
    if let Some(i) = out.find("://") {
        let start = i + 3;
        if let Some(at) = out[start..].rfind('@') {
            let userinfo = &out[start..start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(start + colon + 1..start + at, "***");
            }
        }
    }
    let lower = out.to_ascii_lowercase();
    if let Some(i) = lower.find("password=") {
        let from = i + "password=".len();
        let to = out[from..].find('&').map_or(out.len(), |j| from + j);
        out.replace_range(from..to, "***");
    }
    out
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: StorePath,
    /// SQLite: `synchronous = "full"` makes every commit survive a power loss, not
    /// only a killed process (`"normal"`, the default); PostgreSQL's own settings
    /// decide there.
    pub synchronous_full: bool,
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub schedule: cron::Schedule,
    pub propagate_deletes: bool,
    pub max_delete_fraction: f64,
    pub conflict_policy: ConflictPolicy,
    /// Provider names, highest priority first; every configured provider appears once.
    pub priority: Vec<ProviderName>,
    /// Requests in flight at once per provider while pushing.
    pub push_concurrency: usize,
    /// How often a provider listed incrementally (Nuvemshop) is read whole, which is
    /// how deletions made there are seen.
    pub full_listing_every: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
}

/// How processes on one store share the work (DESIGN 4c, 13).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// A lease not renewed for this long can be taken over.
    pub lease: Duration,
    /// This process's name in the leases it holds; `None`: hostname and pid.
    pub worker_id: Option<String>,
    /// Tenants one worker reconciles at once.
    pub max_concurrent_tenants: usize,
    /// A daemon's cycle of one tenant yields its slot after this long, its remaining
    /// writes left in the outbox for the next cycle, which resumes them first.
    pub tenant_slice: Duration,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: ProviderName,
    pub kind: Kind,
    pub base_url: Url,
    pub api_key: SecretString,
    pub rate_limit: RateLimit,
    pub page_size: Option<u32>,
    pub enabled: bool,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_retries: usize,
    pub user_agent: String,
}

/// Activity polling (`[activity]`, DESIGN 14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityConfig {
    /// The worker polls Malomo events and Sendwithus logs.
    pub enabled: bool,
    /// Customers whose activity is refreshed per cycle, least recently refreshed first.
    pub customers_per_cycle: usize,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            customers_per_cycle: 200,
        }
    }
}

/// A Sendwithus group custsync owns (`[[groups]]`, DESIGN 14): every customer for whom
/// all of `when` holds is a member, every other customer custsync knows is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRule {
    /// A configured sendwithus provider.
    pub provider: ProviderName,
    pub group_id: String,
    /// Canonical field = value, compared after the field's normalization.
    pub when: Vec<(crate::model::Field, String)>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreConfig,
    pub sync: SyncConfig,
    pub server: ServerConfig,
    pub cluster: ClusterConfig,
    pub providers: Vec<ProviderConfig>,
    pub activity: ActivityConfig,
    pub groups: Vec<GroupRule>,
    /// `[tenants]`, where given: then `providers` and `groups` are empty here and each
    /// tenant's effective config comes from [`Config::tenant_set`].
    pub tenants: Option<TenantsConfig>,
    /// The top-level `[sync]` and `[[groups]]` as written, which each tenant's
    /// effective config is validated from again.
    base: Arc<BaseRaw>,
}

/// What a tenant's effective config is built from, besides the validated sections.
#[derive(Debug, Default)]
struct BaseRaw {
    sync: RawSync,
    groups: Vec<RawGroup>,
}

pub const DEFAULT_PATH: &str = "config/custsync.toml";
pub const DEFAULT_SCHEDULE: &str = "0 */5 * * * *";
pub const DEFAULT_USER_AGENT: &str = concat!(
    "custsync/",
    env!("CARGO_PKG_VERSION"),
    " (https://github.com/custsync/custsync)"
);

impl Config {
    /// Loads the file at `path` (it must exist when `required`), applies `CUSTSYNC__`
    /// environment overrides and validates everything.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        if required && !path.exists() {
            return Err(ConfigError::new(
                "--config",
                format!("file not found: {}", path.display()),
            ));
        }
        let env = config::Environment::with_prefix("CUSTSYNC")
            .prefix_separator("__")
            .separator("__");
        let built = config::Config::builder()
            .add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(required),
            )
            .add_source(env)
            .build()
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        Self::from_source(built, path.parent())
    }

    /// Parses configuration from TOML text (no environment): tests and the demo.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::new("toml", e.to_string()))?;
        Self::from_source(built, None)
    }

    fn from_source(built: config::Config, base: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: RawConfig = deserialize(built)?;
        raw.validate(base)
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name.0 == name)
    }

    /// Checks that every `--allow-deletes NAME` names a configured provider.
    pub fn check_provider_names<'a>(
        &self,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), ConfigError> {
        for n in names {
            if self.provider(n).is_none() {
                return Err(ConfigError::new(
                    "--allow-deletes",
                    format!("no provider named {n:?} in the config"),
                ));
            }
        }
        Ok(())
    }
}

/// Deserializes a built source, an error naming the key it is about.
fn deserialize<T: serde::de::DeserializeOwned>(built: config::Config) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(built).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let key = match unknown_field(&inner) {
            Some(field) if path == "." || path.is_empty() => field,
            _ => path,
        };
        ConfigError::new(key, strip_config_origin(&inner))
    })
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next().map(str::to_string)
}

fn strip_config_origin(message: &str) -> String {
    // The config crate appends " for key `x` in y": the key is already named.
    message
        .split(" for key `")
        .next()
        .unwrap_or(message)
        .to_string()
}

/// `[sync]` checked on its own: everything but `priority`, which needs the providers.
struct SyncScalars {
    schedule: cron::Schedule,
    propagate_deletes: bool,
    max_delete_fraction: f64,
    conflict_policy: ConflictPolicy,
    push_concurrency: usize,
    full_listing_every: Duration,
}

impl RawSync {
    fn validate_scalars(&self) -> Result<SyncScalars, ConfigError> {
        let schedule_text = self
            .schedule
            .clone()
            .unwrap_or_else(|| DEFAULT_SCHEDULE.to_string());
        let schedule = cron::Schedule::from_str(&schedule_text).map_err(|e| {
            ConfigError::new(
                "sync.schedule",
                format!("not a cron expression with a seconds field ({e}): {schedule_text:?}"),
            )
        })?;
        let max_delete_fraction = self.max_delete_fraction.unwrap_or(0.2);
        if !(0.0..=1.0).contains(&max_delete_fraction) {
            return Err(ConfigError::new(
                "sync.max_delete_fraction",
                "must be between 0 and 1",
            ));
        }
        let conflict_policy = match self.conflict_policy.as_deref() {
            None | Some("latest") => ConflictPolicy::Latest,
            Some("priority") => ConflictPolicy::Priority,
            Some(other) => {
                return Err(ConfigError::new(
                    "sync.conflict_policy",
                    format!("unknown policy {other:?} (latest | priority)"),
                ))
            }
        };
        let push_concurrency = self.push_concurrency.unwrap_or(4);
        let full_hours = self.full_listing_hours.unwrap_or(24.0);
        let full_listing_every =
            Duration::try_from_secs_f64(full_hours * 3600.0).map_err(|_| {
                ConfigError::new(
                    "sync.full_listing_hours",
                    "must be a number of hours, 0 or more",
                )
            })?;
        if push_concurrency == 0 {
            return Err(ConfigError::new(
                "sync.push_concurrency",
                "must be at least 1",
            ));
        }
        Ok(SyncScalars {
            schedule,
            propagate_deletes: self.propagate_deletes.unwrap_or(true),
            max_delete_fraction,
            conflict_policy,
            push_concurrency,
            full_listing_every,
        })
    }

    /// A tenant's `[sync]` over the top-level one, key by key.
    fn overlay(&self, over: RawSync) -> RawSync {
        RawSync {
            schedule: over.schedule.or_else(|| self.schedule.clone()),
            propagate_deletes: over.propagate_deletes.or(self.propagate_deletes),
            max_delete_fraction: over.max_delete_fraction.or(self.max_delete_fraction),
            conflict_policy: over
                .conflict_policy
                .or_else(|| self.conflict_policy.clone()),
            priority: over.priority.or_else(|| self.priority.clone()),
            push_concurrency: over.push_concurrency.or(self.push_concurrency),
            full_listing_hours: over.full_listing_hours.or(self.full_listing_hours),
        }
    }
}

/// How `[sync].priority` names are checked against the providers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PriorityCheck {
    /// Every name must be a provider (the providers are those of this file).
    Strict,
    /// Names that are not providers here are dropped: the top-level priority with
    /// `[tenants]`, seen from a tenant that lacks some of the providers it names.
    DropUnknown,
}

fn validate_priority(
    raw: Option<Vec<String>>,
    providers: &[ProviderConfig],
    check: PriorityCheck,
) -> Result<Vec<ProviderName>, ConfigError> {
    let names: Vec<ProviderName> = providers.iter().map(|p| p.name.clone()).collect();
    let mut priority = Vec::new();
    for n in raw.unwrap_or_default() {
        let name = ProviderName(n.clone());
        if !names.contains(&name) {
            if check == PriorityCheck::DropUnknown {
                continue;
            }
            return Err(ConfigError::new(
                "sync.priority",
                format!("no provider named {n:?}"),
            ));
        }
        if !priority.contains(&name) {
            priority.push(name);
        }
    }
    for n in names {
        if !priority.contains(&n) {
            priority.push(n);
        }
    }
    Ok(priority)
}

/// The `[providers.*]` tables of one file, checked in order; `key_dir` is where a
/// relative `api_key_file` is read from (`None`: the working directory).
fn validate_providers(
    raw: IndexMap<String, RawProvider>,
    key_dir: Option<&Path>,
) -> Result<Vec<ProviderConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new(
            "providers",
            "at least one [providers.NAME] table is required",
        ));
    }
    raw.into_iter()
        .map(|(name, p)| p.validate(&name, key_dir))
        .collect()
}

impl RawConfig {
    /// `base` is the directory of the config file (`None`: the working directory),
    /// against which a relative `tenants.dir` is resolved.
    fn validate(self, base: Option<&Path>) -> Result<Config, ConfigError> {
        let store = StoreConfig {
            path: parse_store_url(self.store.url.as_deref().unwrap_or("sqlite://custsync.db"))?,
            synchronous_full: match self.store.synchronous.as_deref() {
                None | Some("normal") => false,
                Some("full") => true,
                Some(other) => {
                    return Err(ConfigError::new(
                        "store.synchronous",
                        format!("expected \"normal\" or \"full\", got {other:?}"),
                    ))
                }
            },
        };
        let scalars = self.sync.validate_scalars()?;

        let listen_text = self
            .server
            .listen
            .unwrap_or_else(|| "127.0.0.1:9464".to_string());
        let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!("not an address:port: {listen_text:?}"),
            )
        })?;

        let cluster = self.cluster.validate()?;

        let tenants = match self.tenants {
            None => None,
            Some(t) => Some(t.validate(base)?),
        };
        let (providers, priority) = if tenants.is_some() {
            if let Some(name) = self.providers.keys().next() {
                return Err(ConfigError::new(
                    "tenants.dir",
                    format!(
                        "[tenants] and top-level [providers.*] ([providers.{name}]) cannot be used together: \
                         with [tenants], every provider lives in a tenant file \
                         (check the file and CUSTSYNC__PROVIDERS__ variables)"
                    ),
                ));
            }
            // The rules are checked now, their providers in each tenant.
            validate_groups(indexed(self.groups.clone()), None)?;
            let priority = self
                .sync
                .priority
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(ProviderName)
                .collect();
            (Vec::new(), priority)
        } else {
            let providers = validate_providers(self.providers, None)?;
            let priority = validate_priority(
                self.sync.priority.clone(),
                &providers,
                PriorityCheck::Strict,
            )?;
            (providers, priority)
        };

        let activity = self.activity.validate()?;
        let groups = if tenants.is_some() {
            Vec::new()
        } else {
            validate_groups(indexed(self.groups.clone()), Some(&providers))?
        };

        Ok(Config {
            activity,
            groups,
            store,
            sync: scalars.with_priority(priority),
            server: ServerConfig { listen },
            cluster,
            providers,
            tenants,
            base: Arc::new(BaseRaw {
                sync: self.sync,
                groups: self.groups,
            }),
        })
    }
}

impl SyncScalars {
    fn with_priority(self, priority: Vec<ProviderName>) -> SyncConfig {
        SyncConfig {
            schedule: self.schedule,
            propagate_deletes: self.propagate_deletes,
            max_delete_fraction: self.max_delete_fraction,
            conflict_policy: self.conflict_policy,
            priority,
            push_concurrency: self.push_concurrency,
            full_listing_every: self.full_listing_every,
        }
    }
}

/// `[[groups]]` with their place in the top-level file, which their keys name.
fn indexed(groups: Vec<RawGroup>) -> Vec<(usize, RawGroup)> {
    groups.into_iter().enumerate().collect()
}

impl RawActivity {
    fn validate(self) -> Result<ActivityConfig, ConfigError> {
        let customers_per_cycle = self.customers_per_cycle.unwrap_or(200);
        if customers_per_cycle == 0 {
            return Err(ConfigError::new(
                "activity.customers_per_cycle",
                "must be at least 1",
            ));
        }
        Ok(ActivityConfig {
            enabled: self.enabled.unwrap_or(false),
            customers_per_cycle,
        })
    }
}

/// Each `[[groups]]` names a configured sendwithus provider, a group id (once per
/// provider) and at least one canonical field with a value.
///
/// `n` is each rule's place in the file; `providers` `None` checks the rules but not
/// the providers they name (the top level with `[tenants]`).
fn validate_groups(
    raw: Vec<(usize, RawGroup)>,
    providers: Option<&[ProviderConfig]>,
) -> Result<Vec<GroupRule>, ConfigError> {
    use crate::model::Field;
    let mut out: Vec<GroupRule> = Vec::new();
    for (n, g) in raw {
        let key = |k: &str| format!("groups[{n}].{k}");
        let name = g.provider.ok_or_else(|| {
            ConfigError::new(key("provider"), "missing (a sendwithus provider NAME)")
        })?;
        match providers.map(|ps| ps.iter().find(|p| p.name.0 == name)) {
            None => {}
            Some(None) => {
                return Err(ConfigError::new(
                    key("provider"),
                    format!("no provider named {name:?} in the config"),
                ))
            }
            Some(Some(p)) if p.kind != Kind::Sendwithus => {
                return Err(ConfigError::new(
                    key("provider"),
                    format!(
                        "{name:?} is a {} provider; groups live in a sendwithus provider",
                        p.kind
                    ),
                ))
            }
            Some(Some(_)) => {}
        }
        let group_id = g
            .group_id
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ConfigError::new(key("group_id"), "missing or empty"))?;
        if out
            .iter()
            .any(|r| r.provider.0 == name && r.group_id == group_id)
        {
            return Err(ConfigError::new(
                key("group_id"),
                format!("group {group_id:?} of {name:?} is already mapped by another [[groups]]"),
            ));
        }
        let mut when = Vec::new();
        let mut flat: Vec<(String, serde_json::Value)> = Vec::new();
        for (k, v) in g.when.unwrap_or_default() {
            match v {
                // `attributes.tier = "gold"` in TOML is a table under `attributes`.
                serde_json::Value::Object(map) if k == "attributes" => {
                    flat.extend(map.into_iter().map(|(a, v)| (format!("attributes.{a}"), v)))
                }
                v => flat.push((k, v)),
            }
        }
        for (k, v) in flat {
            let field: Field = k
                .parse()
                .ok()
                .filter(Field::is_canonical)
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("groups[{n}].when.{k}"),
                        "not a canonical field (e.g. accepts_marketing, locale, address.country, attributes.KEY)",
                    )
                })?;
            let value = match v {
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Number(x) => x.to_string(),
                serde_json::Value::String(s) => s,
                _ => {
                    return Err(ConfigError::new(
                        format!("groups[{n}].when.{k}"),
                        "must be a string, a number or a boolean",
                    ))
                }
            };
            when.push((field, value));
        }
        if when.is_empty() {
            return Err(ConfigError::new(
                key("when"),
                "missing: name at least one canonical field = value",
            ));
        }
        out.push(GroupRule {
            provider: ProviderName(name),
            group_id,
            when,
        });
    }
    Ok(out)
}

impl RawCluster {
    fn validate(self) -> Result<ClusterConfig, ConfigError> {
        let secs = self.lease_secs.unwrap_or(30.0);
        let lease = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(86_400))
            .ok_or_else(|| {
                ConfigError::new("cluster.lease_secs", "must be between 1 and 86400 seconds")
            })?;
        if let Some(id) = &self.worker_id {
            if id.trim().is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
                return Err(ConfigError::new(
                    "cluster.worker_id",
                    "must be a non-empty name of at most 200 printable characters",
                ));
            }
        }
        let max_concurrent_tenants = self.max_concurrent_tenants.unwrap_or(8);
        if max_concurrent_tenants == 0 {
            return Err(ConfigError::new(
                "cluster.max_concurrent_tenants",
                "must be at least 1",
            ));
        }
        let slice = self.tenant_slice_secs.unwrap_or(900.0);
        let tenant_slice = Duration::try_from_secs_f64(slice)
            .ok()
            .filter(|d| *d >= Duration::from_secs(1))
            .ok_or_else(|| {
                ConfigError::new("cluster.tenant_slice_secs", "must be at least 1 second")
            })?;
        Ok(ClusterConfig {
            lease,
            worker_id: self.worker_id,
            max_concurrent_tenants,
            tenant_slice,
        })
    }
}

impl RawProvider {
    /// `key_dir`: where a relative `api_key_file` is read from (`None`: the working
    /// directory, as at the top level).
    fn validate(self, name: &str, key_dir: Option<&Path>) -> Result<ProviderConfig, ConfigError> {
        let key = |k: &str| format!("providers.{name}.{k}");
        const KINDS: &str = "sendwithus | partially | malomo | nuvemshop | ecwid";
        let kind = match self.kind.as_deref().map(str::trim) {
            None => return Err(ConfigError::new(key("kind"), format!("missing ({KINDS})"))),
            Some("sendwithus") => Kind::Sendwithus,
            Some("partially") => Kind::Partially,
            Some("malomo") => Kind::Malomo,
            Some("nuvemshop") => Kind::Nuvemshop,
            Some("ecwid") => Kind::Ecwid,
            Some(other) => {
                return Err(ConfigError::new(
                    key("kind"),
                    format!("unknown kind {other:?} ({KINDS})"),
                ))
            }
        };
        let base_text = self
            .base_url
            .ok_or_else(|| ConfigError::new(key("base_url"), "missing"))?;
        let base_url =
            parse_base_url(&base_text).map_err(|m| ConfigError::new(key("base_url"), m))?;
        let api_key = match (self.api_key, self.api_key_file) {
            (Some(k), _) if !k.expose_secret().trim().is_empty() => {
                SecretString::from(k.expose_secret().trim().to_string())
            }
            (Some(_), None) => return Err(ConfigError::new(key("api_key"), "is empty")),
            (_, Some(path)) => {
                let path = match key_dir {
                    Some(dir) if path.is_relative() => dir.join(path),
                    _ => path,
                };
                read_key_file(&path).map_err(|m| ConfigError::new(key("api_key_file"), m))?
            }
            (None, None) => {
                return Err(ConfigError::new(
                    key("api_key"),
                    "missing (set api_key or api_key_file)",
                ))
            }
        };
        let rate_limit = self.rate_limit.unwrap_or_else(|| kind.default_rate_limit());
        if !(rate_limit.per_second.is_finite() && rate_limit.per_second > 0.0) {
            return Err(ConfigError::new(
                key("rate_limit.per_second"),
                "must be a number above 0",
            ));
        }
        if rate_limit.burst == 0 {
            return Err(ConfigError::new(
                key("rate_limit.burst"),
                "must be at least 1",
            ));
        }
        if let Some(size) = self.page_size {
            if size == 0 {
                return Err(ConfigError::new(key("page_size"), "must be at least 1"));
            }
            if let Some(max) = kind.max_page_size() {
                if size > max {
                    return Err(ConfigError::new(
                        key("page_size"),
                        format!("{kind} takes at most {max}"),
                    ));
                }
            }
        }
        let secs = |v: Option<f64>, default: f64, k: &str| -> Result<Duration, ConfigError> {
            let v = v.unwrap_or(default);
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::new(
                    key(k),
                    "must be a number of seconds above 0",
                ));
            }
            Ok(Duration::from_secs_f64(v))
        };
        Ok(ProviderConfig {
            name: ProviderName(name.to_string()),
            kind,
            base_url,
            api_key,
            rate_limit,
            page_size: self.page_size.or(kind.max_page_size()),
            enabled: self.enabled.unwrap_or(true),
            timeout: secs(self.timeout_secs, 30.0, "timeout_secs")?,
            connect_timeout: secs(self.connect_timeout_secs, 10.0, "connect_timeout_secs")?,
            max_retries: self.max_retries.unwrap_or(5),
            user_agent: self
                .user_agent
                .unwrap_or_else(|| DEFAULT_USER_AGENT.to_string()),
        })
    }
}

fn read_key_file(path: &Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(SecretString::from(key.to_string()))
}

/// `base_url` must be https unless its host is loopback (127.0.0.0/8, ::1, localhost).
pub fn parse_base_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("not a URL ({e}): {text:?}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(format!("has no host: {text:?}")),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(format!(
            "must be https unless the host is loopback: {text:?}"
        )),
        other => Err(format!("unsupported scheme {other:?}: {text:?}")),
    }
}

/// `sqlite://custsync.db` and `sqlite://data/c.db` are relative to the working
/// directory, `sqlite:///var/lib/custsync/c.db` absolute, `sqlite::memory:` in memory;
/// `postgres://USER:PASSWORD@HOST/DB` (or `postgresql://`) is PostgreSQL. No error
/// shows a password.
pub fn parse_store_url(text: &str) -> Result<StorePath, ConfigError> {
    let bad = || {
        ConfigError::new(
            "store.url",
            format!(
                "expected sqlite://PATH or postgres://USER@HOST/DB, got {:?}",
                redact_url_text(text)
            ),
        )
    };
    if text == "sqlite::memory:" {
        return Ok(StorePath::Memory);
    }
    let lower = text.trim().to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return PgUrl::parse(text)
            .map(StorePath::Postgres)
            .map_err(|m| ConfigError::new("store.url", m));
    }
    let rest = text
        .strip_prefix("sqlite://")
        .or_else(|| text.strip_prefix("sqlite:"))
        .ok_or_else(bad)?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() {
        return Err(bad());
    }
    Ok(StorePath::File(PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [sync]
        schedule = "0 */5 * * * *"
        [providers.ship]
        kind = "malomo"
        base_url = "https://api.gomalomo.com"
        api_key = "k1"
        [providers.store]
        kind = "nuvemshop"
        base_url = "http://127.0.0.1:8080/v1/1"
        api_key = "k2"
    "#;

    fn err(text: &str) -> ConfigError {
        Config::from_toml(text).expect_err("should fail")
    }

    #[test]
    fn defaults_and_order() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.providers.len(), 2);
        assert_eq!(
            c.sync.priority,
            vec![ProviderName("ship".into()), ProviderName("store".into())]
        );
        assert_eq!(
            c.providers[1].rate_limit,
            RateLimit {
                per_second: 2.0,
                burst: 40
            }
        );
        assert_eq!(c.providers[1].page_size, Some(200));
        assert_eq!(c.store.path, StorePath::File("custsync.db".into()));
        assert_eq!(c.sync.conflict_policy, ConflictPolicy::Latest);
    }

    #[test]
    fn every_bad_key_is_named() {
        assert_eq!(err(&format!("{GOOD}\n[sync2]\nx=1")).key, "sync2");
        assert_eq!(
            err(&GOOD.replace("[sync]", "[sync]\nfoo = 1")).key,
            "sync.foo"
        );
        assert_eq!(
            err(&GOOD.replace("\"malomo\"", "\"shopify\"")).key,
            "providers.ship.kind"
        );
        assert_eq!(
            err(&GOOD.replace("0 */5 * * * *", "every day")).key,
            "sync.schedule"
        );
        assert_eq!(
            err(&GOOD.replace("api_key = \"k1\"", "")).key,
            "providers.ship.api_key"
        );
        assert_eq!(
            err(&GOOD.replace("https://api.gomalomo.com", "http://api.gomalomo.com")).key,
            "providers.ship.base_url"
        );
        assert_eq!(
            err(&GOOD.replace("[sync]", "[sync]\npriority = [\"nope\"]")).key,
            "sync.priority"
        );
        assert_eq!(
            err(&GOOD.replace("api_key = \"k2\"", "api_key = \"k2\"\npage_size = 500")).key,
            "providers.store.page_size"
        );
        assert_eq!(err("[sync]\n").key, "providers");
        let garbage = err("this is = = not toml [");
        assert!(!garbage.to_string().contains('\n'));
    }

    #[test]
    fn activity_and_groups() {
        let swu = "[providers.email]\nkind = \"sendwithus\"\nbase_url = \"http://127.0.0.1:1\"\napi_key = \"k\"\n";
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.activity, ActivityConfig::default());
        assert!(c.groups.is_empty());
        let text = format!(
            "{GOOD}\n{swu}\n[activity]\nenabled = true\ncustomers_per_cycle = 5\n\n[[groups]]\nprovider = \"email\"\ngroup_id = \"grp_m\"\nwhen = {{ accepts_marketing = true, attributes.tier = \"gold\" }}\n"
        );
        let c = Config::from_toml(&text).unwrap();
        assert!(c.activity.enabled);
        assert_eq!(c.activity.customers_per_cycle, 5);
        assert_eq!(c.groups.len(), 1);
        assert_eq!(
            c.groups[0].when,
            vec![
                (crate::model::Field::AcceptsMarketing, "true".to_string()),
                (crate::model::Field::Attr("tier".into()), "gold".to_string())
            ]
        );
        let bad = |g: &str| err(&format!("{GOOD}\n{swu}\n[[groups]]\n{g}\n")).key;
        assert_eq!(
            bad("provider = \"ship\"\ngroup_id = \"g\"\nwhen = { accepts_marketing = true }"),
            "groups[0].provider"
        );
        assert_eq!(
            bad("provider = \"nope\"\ngroup_id = \"g\"\nwhen = { accepts_marketing = true }"),
            "groups[0].provider"
        );
        assert_eq!(
            bad("provider = \"email\"\nwhen = { accepts_marketing = true }"),
            "groups[0].group_id"
        );
        assert_eq!(
            bad("provider = \"email\"\ngroup_id = \"g\""),
            "groups[0].when"
        );
        assert_eq!(
            bad("provider = \"email\"\ngroup_id = \"g\"\nwhen = { shoe_size = 3 }"),
            "groups[0].when.shoe_size"
        );
        assert_eq!(
            bad("provider = \"email\"\ngroup_id = \"g\"\nwhen = { accepts_marketing = true }\nextra = 1"),
            "groups[0].extra"
        );
        assert_eq!(
            err(&format!("{GOOD}\n[activity]\nenabled = true\nfoo = 1\n")).key,
            "activity.foo"
        );
    }

    #[test]
    fn loopback_may_be_http() {
        assert!(parse_base_url("http://localhost:1/x").is_ok());
        assert!(parse_base_url("http://[::1]:1/x").is_ok());
        assert!(parse_base_url("http://10.0.0.1/x").is_err());
        assert!(parse_base_url("ftp://127.0.0.1/x").is_err());
    }

    #[test]
    fn store_synchronous_is_normal_or_full() {
        assert!(!Config::from_toml(GOOD).unwrap().store.synchronous_full);
        let full = format!("[store]\nsynchronous = \"full\"\n{GOOD}");
        assert!(Config::from_toml(&full).unwrap().store.synchronous_full);
        let bad = err(&format!("[store]\nsynchronous = \"off\"\n{GOOD}"));
        assert_eq!(bad.key, "store.synchronous");
    }

    #[test]
    fn store_urls() {
        assert_eq!(
            parse_store_url("sqlite:///var/lib/c.db").unwrap(),
            StorePath::File("/var/lib/c.db".into())
        );
        assert_eq!(
            parse_store_url("sqlite://data/c.db").unwrap(),
            StorePath::File("data/c.db".into())
        );
        assert!(parse_store_url("mysql://x").is_err());
        assert_eq!(
            parse_store_url("sqlite::memory:").unwrap(),
            StorePath::Memory
        );
    }

    #[test]
    fn postgres_urls_never_show_the_password() {
        for text in [
            "postgres://custsync:s3cret@db.internal:5432/custsync",
            "postgresql://custsync:s3cret@db.internal/custsync?sslmode=require",
        ] {
            let StorePath::Postgres(url) = parse_store_url(text).unwrap() else {
                panic!("{text}: not postgres");
            };
            assert_eq!(url.expose(), text);
            for shown in [
                url.to_string(),
                format!("{url:?}"),
                format!("{:?}", StorePath::Postgres(url.clone())),
            ] {
                assert!(!shown.contains("s3cret"), "{shown}");
                assert!(shown.contains("custsync:***@db.internal"), "{shown}");
            }
        }
        let url = PgUrl::parse("postgres://u:p%40ss@h/db").unwrap();
        assert_eq!(url.to_string(), "postgres://u:***@h/db");
        assert_eq!(url.expose(), "postgres://u:p%40ss@h/db");
        // No password: nothing to hide; one in the query: hidden too.
        let url = PgUrl::parse("postgres://custsync@db.internal/custsync").unwrap();
        assert_eq!(url.to_string(), "postgres://custsync@db.internal/custsync");
        let url = PgUrl::parse("postgres://u@h/db?password=s3cret&sslmode=require").unwrap();
        assert!(!url.to_string().contains("s3cret"), "{url}");
        assert!(url.to_string().contains("password=***"), "{url}");
        assert!(url.expose().contains("s3cret"));
        // A socket directory as the host.
        assert!(PgUrl::parse("postgres:///db?host=/run/postgresql").is_ok());
        // Bad ones: named store.url, the password nowhere.
        for text in [
            "postgres://u:s3cret@/db",
            "postgres://u:s3cret@[bad/db",
            "postgresql://u:s3cret@h:notaport/db",
            "mysql://u:s3cret@h/db",
            "postgres://u:s3cret@",
        ] {
            let e = parse_store_url(text).expect_err(text);
            assert_eq!(e.key, "store.url", "{text}");
            assert!(!e.to_string().contains("s3cret"), "{text}: {e}");
        }
        let e = err(&format!(
            "[store]\nurl = \"postgres://u:s3cret@[x/db\"\n{GOOD}"
        ));
        assert_eq!(e.key, "store.url");
        assert!(!format!("{e} {e:?}").contains("s3cret"), "{e}");
        let c = Config::from_toml(&format!(
            "[store]\nurl = \"postgres://u:s3cret@h/db\"\n{GOOD}"
        ))
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(matches!(c.store.path, StorePath::Postgres(_)));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The shipped example is valid, once its key file exists.
    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../config/custsync.example.toml");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("malomo");
        std::fs::write(&key, "k\n").unwrap();
        let c = Config::from_toml(&text.replace("/run/secrets/malomo", &key.display().to_string()))
            .unwrap();
        assert_eq!(c.providers.len(), 2);
        assert_eq!(c.providers[0].user_agent, "custsync/0.1 (ops@example.com)");
    }
}
