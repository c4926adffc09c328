//! Settings: `config/default.toml`, then an optional `--config FILE`, then environment variables
//! `BEIAN__SECTION__KEY` (lists comma-separated). Secrets are wrapped so they never print.
//!
//! Owns: reading and checking configuration. Must not open connections or touch the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::calendar::DeadlinePolicy;
use crate::provinces::{Province, Provinces, ProvincesError};

/// A secret string: `Debug` and `Display` print `***`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub bureau: BureauSettings,
    pub batch: BatchSettings,
    pub attachments: AttachmentSettings,
    pub schedule: ScheduleSettings,
    pub sandbox: SandboxSettings,
    #[serde(default)]
    pub calendar: CalendarSettings,
    #[serde(default)]
    pub preflight: PreflightSettings,
    /// `config/provinces.toml` (not a section of this file; loaded beside it).
    #[serde(skip)]
    pub provinces: Provinces,
}

/// The official calendar and the deadline policy (`calendar.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CalendarSettings {
    /// One `YYYY.toml` per year of State Council notices.
    pub dir: PathBuf,
    pub deadline_policy: DeadlinePolicy,
    /// A queued filing whose deadline is this close (and not yet submitted) is at risk.
    pub at_risk_minutes: i64,
    /// The calendar must cover this many days ahead, or an alarm is raised.
    pub coverage_days: u32,
}

impl Default for CalendarSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("config/holidays"),
            deadline_policy: DeadlinePolicy::BusinessTime,
            at_risk_minutes: 240,
            coverage_days: 30,
        }
    }
}

/// National preflight settings (`preflight/`); provincial rules live in provinces.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PreflightSettings {
    /// Top-level domains the MIIT approved (without the dot; Unicode or punycode).
    pub allowed_suffixes: Vec<String>,
}

impl Default for PreflightSettings {
    fn default() -> Self {
        Self {
            allowed_suffixes: ["com", "cn", "net", "org"]
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: String,
    #[serde(default = "default_connections")]
    pub max_connections: u32,
    /// How long a bureau's sender lease, a filing's claim and an unconfirmed file's lease last
    /// without renewal; a dead instance's bureaus are taken over within this time.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
}

fn default_connections() -> u32 {
    4
}

fn default_lease_secs() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
pub struct BureauSettings {
    pub url: String,
    pub isp_id: i64,
    pub user: String,
    #[serde(default)]
    pub password: Secret,
    #[serde(default)]
    pub aes_key: Secret,
    #[serde(default)]
    pub aes_iv: Secret,
    #[serde(default = "yes")]
    pub encrypt: bool,
    pub soap_namespace: String,
    #[serde(default)]
    pub extensions: Vec<String>,
    #[serde(default)]
    pub allow_default_codes: bool,
    pub request_timeout_secs: u64,
    pub max_answer_bytes: usize,
    pub retry_initial_ms: u64,
    pub retry_max_interval_secs: u64,
    pub retry_max_elapsed_secs: u64,
    pub max_downloads_per_poll: usize,
    #[serde(default)]
    pub provinces: BTreeMap<String, ProvinceOverride>,
}

fn yes() -> bool {
    true
}

/// Per-province overrides of the bureau account and endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProvinceOverride {
    pub url: Option<String>,
    pub isp_id: Option<i64>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub aes_key: Option<Secret>,
    pub aes_iv: Option<Secret>,
    pub extensions: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BatchSettings {
    pub max_records: usize,
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AttachmentSettings {
    pub dir: PathBuf,
    pub min_width: u32,
    pub min_height: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ScheduleSettings {
    pub submit: String,
    pub poll: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SandboxSettings {
    pub listen: String,
    pub seed: Option<PathBuf>,
    pub decision_delay_ms: u64,
    pub sms_confirm_delay_ms: u64,
    pub sms_time_factor: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key {key}: {message}")]
    Invalid { key: String, message: String },
    #[error("configuration: {0}")]
    Provinces(#[from] ProvincesError),
}

/// The resolved account and endpoint of one provincial bureau.
#[derive(Debug, Clone)]
pub struct BureauEndpoint {
    pub province: String,
    pub base_url: String,
    pub isp_id: i64,
    pub user: String,
    pub password: Secret,
    pub aes_key: Secret,
    pub aes_iv: Secret,
    pub encrypt: bool,
    pub extensions: Vec<String>,
}

impl BureauEndpoint {
    pub fn has_extension(&self, name: &str) -> bool {
        self.extensions.iter().any(|e| e == name)
    }
}

impl Settings {
    /// Loads `config/default.toml` (relative to the working directory, else the one compiled
    /// in), then `extra`, then the environment.
    pub fn load(extra: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        let on_disk = Path::new("config/default.toml");
        builder = if on_disk.exists() {
            builder.add_source(config::File::from(on_disk))
        } else {
            builder.add_source(config::File::from_str(
                include_str!("../config/default.toml"),
                config::FileFormat::Toml,
            ))
        };
        if let Some(path) = extra {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("BEIAN")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("bureau.extensions")
                .with_list_parse_key("preflight.allowed_suffixes")
                .try_parsing(true),
        );
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.provinces = Provinces::load_default()?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_owned(),
            message,
        };
        if !(1..=1000).contains(&self.batch.max_records) {
            return Err(invalid(
                "batch.max_records",
                "must be between 1 and 1000 (bureau-protocol.md section 3)".into(),
            ));
        }
        if self.batch.max_bytes == 0 || self.batch.max_bytes > 50 * 1024 * 1024 {
            return Err(invalid(
                "batch.max_bytes",
                "must be between 1 and 52428800 (50 MB)".into(),
            ));
        }
        for ext in &self.bureau.extensions {
            if ext != "app" && ext != "sms" {
                return Err(invalid(
                    "bureau.extensions",
                    format!("unknown extension {ext:?} (known: app, sms)"),
                ));
            }
        }
        if self.bureau.isp_id < 1 {
            return Err(invalid("bureau.isp_id", "must be a positive number".into()));
        }
        Ok(())
    }

    /// The bureau of a province, with overrides applied and `{province}` substituted.
    pub fn endpoint(&self, province: &str) -> BureauEndpoint {
        let b = &self.bureau;
        let o = b.provinces.get(province).cloned().unwrap_or_default();
        let from_table = self
            .province(province)
            .map(|p| p.base_url.clone())
            .filter(|u| !u.is_empty());
        let url = o.url.or(from_table).unwrap_or_else(|| b.url.clone());
        BureauEndpoint {
            province: province.to_owned(),
            base_url: url
                .replace("{province}", province)
                .trim_end_matches('/')
                .to_owned(),
            isp_id: o.isp_id.unwrap_or(b.isp_id),
            user: o.user.unwrap_or_else(|| b.user.clone()),
            password: o.password.unwrap_or_else(|| b.password.clone()),
            aes_key: o.aes_key.unwrap_or_else(|| b.aes_key.clone()),
            aes_iv: o.aes_iv.unwrap_or_else(|| b.aes_iv.clone()),
            encrypt: b.encrypt,
            extensions: o.extensions.unwrap_or_else(|| b.extensions.clone()),
        }
    }

    /// The provincial bureau's entry in provinces.toml.
    pub fn province(&self, code: &str) -> Option<&Province> {
        self.provinces.get(code)
    }

    /// Records per upload file for a bureau: its provinces.toml `batch`, capped by
    /// `batch.max_records`.
    pub fn batch_size(&self, province: &str) -> usize {
        self.province(province)
            .map_or(self.batch.max_records, |p| p.batch)
            .min(self.batch.max_records)
    }

    /// Requests per minute a bureau allows (provinces.toml; 60 for an unknown code).
    pub fn requests_per_minute(&self, province: &str) -> u32 {
        self.province(province)
            .map_or(60, |p| p.requests_per_minute)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.bureau.request_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
    }

    #[test]
    fn defaults_load_and_endpoints_resolve() {
        let s = Settings::load(None).unwrap();
        let e = s.endpoint("440000");
        assert_eq!(e.base_url, "http://127.0.0.1:8990/440000");
        assert_eq!(e.isp_id, s.bureau.isp_id);
    }
}
