//! Test helpers: a sandbox bureau on a random port, a fresh database (a SQLite file, or a new
//! PostgreSQL database when `BEIAN_TEST_POSTGRES` is set), the real gateway. Every test that
//! touches a database gets it from [`fresh_database_url`], so the whole suite runs on both.
#![allow(dead_code)]

pub mod procs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beian_gateway::bureau::sandbox::SandboxHandle;
use beian_gateway::calendar::Calendar;
use beian_gateway::commands;
use beian_gateway::config::Settings;
use beian_gateway::pipeline::{CycleReport, Gateway};
use beian_gateway::store::{Outcome, Store};

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub settings: Arc<Settings>,
    pub store: Store,
    pub gateway: Arc<Gateway>,
    pub sandbox: SandboxHandle,
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Settings for a test: fast sandbox delays, tiny retry intervals, no rate limits (the limiter
/// has its own tests, and the several-instances test runs with limits on).
pub fn test_settings(db: &std::path::Path) -> Settings {
    let mut s = Settings::load(None).expect("default settings load");
    s.database.url = format!("sqlite:{}", db.display());
    // A dead instance's bureaus pass to another within 3 s (tests that restart the gateway).
    s.database.lease_secs = 3;
    s.sandbox.decision_delay_ms = 150;
    s.sandbox.sms_confirm_delay_ms = 250;
    s.sandbox.sms_time_factor = 2.0 / 86_400.0; // the 24 h SMS window lasts 2 s
    s.bureau.retry_initial_ms = 20;
    s.bureau.retry_max_interval_secs = 1;
    s.bureau.retry_max_elapsed_secs = 5;
    s.bureau.request_timeout_secs = 5;
    s.bureau.rate_limits = false;
    s.attachments.dir = fixtures().join("attachments");
    s
}

/// A fresh database for one test: a SQLite file in `dir`, or — when `BEIAN_TEST_POSTGRES` names
/// a server (e.g. `postgres://postgres@127.0.0.1:5432/test`) — a new PostgreSQL database on it.
pub async fn fresh_database_url(dir: &std::path::Path) -> String {
    match std::env::var("BEIAN_TEST_POSTGRES") {
        Ok(admin_url) if !admin_url.is_empty() => {
            use sqlx::Executor;
            sqlx::any::install_default_drivers();
            // tests/run sets a prefix per run and drops that run's databases afterwards.
            let prefix =
                std::env::var("BEIAN_TEST_DB_PREFIX").unwrap_or_else(|_| "beian_test".into());
            let name = format!("{prefix}_{}_{}", std::process::id(), uuid_like());
            let admin = sqlx::AnyPool::connect(&admin_url)
                .await
                .expect("PostgreSQL answers");
            admin
                .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await
                .expect("create test database");
            admin.close().await;
            let base = admin_url
                .rsplit_once('/')
                .map(|(b, _)| b)
                .unwrap_or(&admin_url);
            format!("{base}/{name}")
        }
        _ => format!("sqlite:{}", dir.join("gateway.db").display()),
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{nanos}_{}", N.fetch_add(1, Ordering::Relaxed))
}

pub async fn start(mutate: impl FnOnce(&mut Settings)) -> TestEnv {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(&dir.path().join("gateway.db"));
    settings.database.url = fresh_database_url(dir.path()).await;
    mutate(&mut settings);
    let sandbox = commands::start_sandbox_for(&mut settings)
        .await
        .expect("sandbox starts");
    let store = Store::open(&settings.database.url, 4)
        .await
        .expect("store opens");
    let settings = Arc::new(settings);
    let gateway = Arc::new(Gateway::new(
        store.clone(),
        settings.clone(),
        Calendar::weekdays_only(),
    ));
    TestEnv {
        dir,
        settings,
        store,
        gateway,
        sandbox,
    }
}

impl TestEnv {
    pub async fn import_fixtures(&self) {
        let (new, _, failed) = commands::import(&self.store, &[fixtures().join("filings")])
            .await
            .expect("import runs");
        assert_eq!(failed, 0, "every fixture imports");
        assert!(new > 0);
    }

    /// Runs cycles until every filing is settled or the time is up.
    pub async fn settle(&self, limit: Duration) -> CycleReport {
        let started = Instant::now();
        let mut total = CycleReport::default();
        loop {
            total.merge(self.gateway.cycle().await);
            let outcomes = self.outcomes().await;
            let settled = outcomes.values().all(|o| {
                matches!(
                    o.state.as_str(),
                    "approved" | "rejected" | "expired" | "needs_correction"
                ) && !(o.state == "approved"
                    && o.subject_record_number.is_none()
                    && needs_numbers(&o.id))
            });
            if settled || started.elapsed() > limit {
                return total;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn outcomes(&self) -> BTreeMap<String, Outcome> {
        self.store
            .export(None, None)
            .await
            .expect("export")
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect()
    }
}

/// Filings whose approval is followed by a BASJ with numbers (not cancellations).
fn needs_numbers(id: &str) -> bool {
    !id.starts_with("F-CAN")
}
