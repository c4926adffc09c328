//! Settings: `config/default.toml`, then an optional `--config FILE`, then environment variables
//! `BEIAN__SECTION__KEY` (lists comma-separated). Secrets are wrapped so they never print.
//!
//! Secrets (the bureau password, AES key and IV, the database password) may also come from
//! files: `bureau.password_file`, `bureau.aes_key_file`, `bureau.aes_iv_file`,
//! `database.password_file` (e.g. `BEIAN__BUREAU__PASSWORD_FILE=%d/bureau-password` with
//! systemd credentials). A file wins over an inline value; one trailing newline is dropped.
//!
//! Owns: reading and checking configuration. Must not open connections or touch the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use crate::bureau::limiter::Limits;
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

/// Secrets serialize redacted: `config check` prints the effective configuration with them.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "(empty)" } else { "***" })
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub bureau: BureauSettings,
    pub batch: BatchSettings,
    pub attachments: AttachmentSettings,
    pub schedule: ScheduleSettings,
    pub sandbox: SandboxSettings,
    #[serde(default)]
    pub daemon: DaemonSettings,
    #[serde(default)]
    pub status: StatusSettings,
    #[serde(default)]
    pub calendar: CalendarSettings,
    #[serde(default)]
    pub preflight: PreflightSettings,
    /// `config/provinces.toml` (not a section of this file; loaded beside it).
    #[serde(skip)]
    pub provinces: Provinces,
}

/// The official calendar and the deadline policy (`calendar.rs`).
#[derive(Debug, Clone, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DatabaseSettings {
    #[serde(serialize_with = "redacted_url")]
    pub url: String,
    #[serde(default = "default_connections")]
    pub max_connections: u32,
    /// How long a bureau's sender lease, a filing's claim and an unconfirmed file's lease last
    /// without renewal; a dead instance's bureaus are taken over within this time.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// Put into a `postgres://` URL that has no password of its own.
    #[serde(default)]
    pub password: Secret,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

fn redacted_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// A database URL without its password, for messages and `config check`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn default_connections() -> u32 {
    4
}

fn default_lease_secs() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub aes_key_file: Option<PathBuf>,
    #[serde(default)]
    pub aes_iv_file: Option<PathBuf>,
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
    /// Each bureau's `requests_per_minute` and `concurrency` (provinces.toml) are enforced on
    /// every request; false turns the limits off (benchmarks, fast test suites).
    #[serde(default = "yes")]
    pub rate_limits: bool,
    #[serde(default)]
    pub provinces: BTreeMap<String, ProvinceOverride>,
}

fn yes() -> bool {
    true
}

/// Per-province overrides of the bureau account and endpoint, and of its provinces.toml limits.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ProvinceOverride {
    pub url: Option<String>,
    pub isp_id: Option<i64>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub aes_key: Option<Secret>,
    pub aes_iv: Option<Secret>,
    pub extensions: Option<Vec<String>>,
    pub requests_per_minute: Option<u32>,
    pub concurrency: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BatchSettings {
    pub max_records: usize,
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AttachmentSettings {
    pub dir: PathBuf,
    pub min_width: u32,
    pub min_height: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ScheduleSettings {
    /// Intake, preflight and submit.
    pub submit: String,
    pub poll: String,
    /// Stale claims: stored files never sent, files whose arrival is unconfirmed.
    #[serde(default = "default_reconcile")]
    pub reconcile: String,
    /// The daily deadline report (due today, at risk, overdue, per province).
    #[serde(default = "default_deadline_report")]
    pub deadline_report: String,
    #[serde(default = "default_calendar_check")]
    pub calendar_check: String,
}

fn default_reconcile() -> String {
    "0 */5 * * * *".into()
}
fn default_deadline_report() -> String {
    "0 0 9 * * *".into()
}
fn default_calendar_check() -> String {
    "0 30 8 * * *".into()
}

/// The daemon (`run`) and the one-shot (`once`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct DaemonSettings {
    /// After SIGTERM/SIGINT: how long uploads in flight may take before the process exits.
    pub shutdown_grace_secs: u64,
    /// Prometheus `/metrics` and `/healthz`; empty turns the listener off.
    pub admin_listen: String,
    /// How often the live loop pings the watchdog, updates STATUS and the gauges.
    pub tick_secs: u64,
    /// A stored file never sent for this long counts as a stale claim (released by reconcile).
    pub stale_claim_secs: u64,
    /// `once` beside another worker: how long to wait for the work lock before giving up.
    pub lock_wait_secs: u64,
    /// The work lock's lease; holders renew it, a crashed holder's lock lapses after it.
    pub lock_ttl_secs: u64,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            shutdown_grace_secs: 30,
            admin_listen: "127.0.0.1:9464".into(),
            tick_secs: 5,
            stale_claim_secs: 600,
            lock_wait_secs: 10,
            lock_ttl_secs: 60,
        }
    }
}

/// `status`, the deadline report and the deadline gauges.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct StatusSettings {
    /// A filing not yet submitted whose deadline is within this many hours is at risk.
    pub at_risk_hours: i64,
    /// The calendar must cover at least this many days ahead, else an alarm.
    pub calendar_min_days: i64,
}

impl Default for StatusSettings {
    fn default() -> Self {
        Self {
            at_risk_hours: 4,
            calendar_min_days: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SandboxSettings {
    pub listen: String,
    pub seed: Option<PathBuf>,
    pub decision_delay_ms: u64,
    pub sms_confirm_delay_ms: u64,
    pub sms_time_factor: f64,
    /// Every answer takes at least this long (0: at once).
    #[serde(default)]
    pub answer_delay_ms: u64,
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
        settings.read_secret_files()?;
        settings.check()?;
        Ok(settings)
    }

    /// Replaces secrets with the contents of their `*_file` paths.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        let b = &mut self.bureau;
        for (key, file, secret) in [
            ("bureau.password_file", &b.password_file, &mut b.password),
            ("bureau.aes_key_file", &b.aes_key_file, &mut b.aes_key),
            ("bureau.aes_iv_file", &b.aes_iv_file, &mut b.aes_iv),
            (
                "database.password_file",
                &self.database.password_file,
                &mut self.database.password,
            ),
        ] {
            if let Some(path) = file {
                *secret = Secret::new(read_secret(key, path)?);
            }
        }
        if !self.database.password.is_empty() {
            self.database.url = with_password(&self.database.url, self.database.password.expose());
        }
        Ok(())
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
        for (code, o) in &self.bureau.provinces {
            for (name, value) in [
                ("requests_per_minute", o.requests_per_minute),
                ("concurrency", o.concurrency),
            ] {
                if value == Some(0) {
                    return Err(invalid(
                        &format!("bureau.provinces.{code}.{name}"),
                        "must be at least 1".into(),
                    ));
                }
            }
        }
        if self.bureau.isp_id < 1 {
            return Err(invalid("bureau.isp_id", "must be a positive number".into()));
        }
        for (key, value) in [
            ("bureau.aes_key", &self.bureau.aes_key),
            ("bureau.aes_iv", &self.bureau.aes_iv),
        ] {
            if !value.is_empty() && value.expose().len() != 16 {
                return Err(invalid(key, "must be 16 characters (AES-128)".into()));
            }
        }
        if !self.database.url.starts_with("sqlite:")
            && !self.database.url.starts_with("postgres://")
            && !self.database.url.starts_with("postgresql://")
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite: or postgres://".into(),
            ));
        }
        if !self.daemon.admin_listen.is_empty()
            && self
                .daemon
                .admin_listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(invalid(
                "daemon.admin_listen",
                format!(
                    "{:?} is not an address:port (e.g. 127.0.0.1:9464)",
                    self.daemon.admin_listen
                ),
            ));
        }
        if self.daemon.tick_secs == 0 || self.daemon.lock_ttl_secs <= self.daemon.tick_secs {
            return Err(invalid(
                "daemon.lock_ttl_secs",
                "must be longer than daemon.tick_secs (at least 1)".into(),
            ));
        }
        for (key, expr) in self.schedule.entries() {
            check_cron(key, expr)?;
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

    /// Requests per minute a bureau allows: `[bureau.provinces.CODE]`, else provinces.toml, else
    /// 60 (an unknown code).
    pub fn requests_per_minute(&self, province: &str) -> u32 {
        self.bureau
            .provinces
            .get(province)
            .and_then(|o| o.requests_per_minute)
            .or_else(|| self.province(province).map(|p| p.requests_per_minute))
            .unwrap_or(60)
    }

    /// Requests a bureau allows in flight at once: `[bureau.provinces.CODE]`, else
    /// provinces.toml, else 1.
    pub fn concurrency(&self, province: &str) -> u32 {
        self.bureau
            .provinces
            .get(province)
            .and_then(|o| o.concurrency)
            .or_else(|| self.province(province).map(|p| p.concurrency))
            .unwrap_or(1)
    }

    /// The limits every request to a bureau waits for; `None` with `bureau.rate_limits = false`.
    pub fn limits(&self, province: &str) -> Option<Limits> {
        self.bureau.rate_limits.then(|| Limits {
            requests_per_minute: self.requests_per_minute(province),
            concurrency: self.concurrency(province),
        })
    }

    /// The configured effective settings as pretty JSON, secrets redacted.
    pub fn redacted_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.bureau.request_timeout_secs)
    }
}

impl ScheduleSettings {
    /// (configuration key, cron expression) of every job.
    pub fn entries(&self) -> [(&'static str, &str); 5] {
        [
            ("schedule.submit", &self.submit),
            ("schedule.poll", &self.poll),
            ("schedule.reconcile", &self.reconcile),
            ("schedule.deadline_report", &self.deadline_report),
            ("schedule.calendar_check", &self.calendar_check),
        ]
    }
}

/// A 6-field cron expression (seconds first) the scheduler accepts.
pub fn check_cron(key: &str, expr: &str) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: key.to_owned(),
        message,
    };
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(invalid(format!(
            "invalid cron expression {expr:?}: {fields} fields, expected 6 (sec min hour day month weekday)"
        )));
    }
    tokio_cron_scheduler::Job::new_async_tz(expr, chrono_tz::Asia::Shanghai, |_, _| {
        Box::pin(async {})
    })
    .map(|_| ())
    .map_err(|e| invalid(format!("invalid cron expression {expr:?}: {e}")))
}

fn read_secret(key: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        key: key.to_owned(),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
}

/// `postgres://user@host/db` + password → `postgres://user:password@host/db` (percent-encoded);
/// a URL that has a password, or no user part, is left as it is.
fn with_password(url: &str, password: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let Some(at) = url[scheme_end..].find('@').map(|i| i + scheme_end) else {
        return url.to_owned();
    };
    let userinfo = &url[scheme_end..at];
    if userinfo.contains(':') {
        return url.to_owned();
    }
    let encoded: String = password
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{}{userinfo}:{encoded}{}", &url[..scheme_end], &url[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_read_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret:@/\n").unwrap();
        let mut s = Settings::load(None).unwrap();
        s.bureau.password_file = Some(file.clone());
        s.database.url = "postgres://gw@db.example:5432/beian".into();
        s.database.password_file = Some(file);
        s.read_secret_files().unwrap();
        assert_eq!(s.bureau.password.expose(), "s3cret:@/");
        assert_eq!(
            s.database.url,
            "postgres://gw:s3cret%3A%40%2F@db.example:5432/beian"
        );
        let printed = s.redacted_json();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("postgres://gw:***@db.example:5432/beian"));
    }

    #[test]
    fn cron_keys_are_checked_by_name() {
        assert!(check_cron("schedule.poll", "*/30 * * * * *").is_ok());
        let e = check_cron("schedule.poll", "*/5 * * * *")
            .unwrap_err()
            .to_string();
        assert!(e.contains("schedule.poll") && e.contains("6"), "{e}");
        let e = check_cron("schedule.submit", "61 * * * * *")
            .unwrap_err()
            .to_string();
        assert!(e.contains("schedule.submit"), "{e}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
    }

    #[test]
    fn limits_come_from_provinces_toml_unless_overridden_or_off() {
        let mut s = Settings::load(None).unwrap();
        assert!(s.bureau.rate_limits);
        let gd = Limits {
            requests_per_minute: 20,
            concurrency: 1,
        };
        assert_eq!(s.limits("440000"), Some(gd));
        assert_eq!(s.limits("310000").map(|l| l.requests_per_minute), Some(60));
        s.bureau.provinces.insert(
            "440000".into(),
            ProvinceOverride {
                requests_per_minute: Some(600),
                concurrency: Some(2),
                ..ProvinceOverride::default()
            },
        );
        let fast = Limits {
            requests_per_minute: 600,
            concurrency: 2,
        };
        assert_eq!(s.limits("440000"), Some(fast));
        s.bureau.provinces.insert(
            "110000".into(),
            ProvinceOverride {
                concurrency: Some(0),
                ..ProvinceOverride::default()
            },
        );
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("bureau.provinces.110000.concurrency"), "{e}");
        s.bureau.rate_limits = false;
        assert_eq!(s.limits("440000"), None);
    }

    #[test]
    fn defaults_load_and_endpoints_resolve() {
        let s = Settings::load(None).unwrap();
        let e = s.endpoint("440000");
        assert_eq!(e.base_url, "http://127.0.0.1:8990/440000");
        assert_eq!(e.isp_id, s.bureau.isp_id);
    }
}
