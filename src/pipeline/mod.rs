//! The pipeline: reviewed filings → queued (deadline) → claimed into an upload file →
//! sent → results downloaded, applied and acknowledged. Each step is callable alone (from
//! `once`, the daemon's schedules and tests) and returns what it did.
//!
//! Owns: what the bureau's answers mean for filings. Must not hold a database transaction
//! across a network call: a claim is one short transaction (the file is stored before a byte
//! is sent), the send has none, and its outcome is recorded in another.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::bureau::client::{BureauAccount, BureauClient, ClientConfig, ClientError};
use crate::calendar::Calendar;
use crate::codes::CodeTables;
use crate::config::Settings;
use crate::package::AesKey;
use crate::store::{Store, StoreError};

mod build;
mod poll;
mod submit;

pub use build::BuiltBatch;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("bureau {province}: {message}")]
    Bureau { province: String, message: String },
    #[error("configuration: {0}")]
    Config(String),
}

/// What one cycle did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleReport {
    pub queued: usize,
    pub needs_correction: usize,
    pub files_sent: usize,
    pub filings_sent: usize,
    pub downloads_applied: usize,
    pub errors: Vec<String>,
}

impl CycleReport {
    pub fn merge(&mut self, other: CycleReport) {
        self.queued += other.queued;
        self.needs_correction += other.needs_correction;
        self.files_sent += other.files_sent;
        self.filings_sent += other.filings_sent;
        self.downloads_applied += other.downloads_applied;
        self.errors.extend(other.errors);
    }
}

/// The gateway: the store, the settings and one client per bureau.
pub struct Gateway {
    pub(crate) store: Store,
    pub(crate) settings: Arc<Settings>,
    pub(crate) calendar: Calendar,
    clients: Mutex<HashMap<String, Arc<BureauClient>>>,
    /// One sender per bureau at a time within this process.
    bureau_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Set on shutdown: the submit loop stops claiming and sending between files.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Gateway {
    pub fn new(store: Store, settings: Arc<Settings>, calendar: Calendar) -> Self {
        Self {
            store,
            settings,
            calendar,
            clients: Mutex::new(HashMap::new()),
            bureau_locks: Mutex::new(HashMap::new()),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Shutdown: no new claims and no new sends from now on; uploads in flight finish.
    pub fn stop_claiming(&self) {
        self.stopping.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let b = &self.settings.bureau;
        ClientConfig {
            request_timeout: std::time::Duration::from_secs(b.request_timeout_secs),
            max_answer_bytes: b.max_answer_bytes,
            retry_initial: std::time::Duration::from_millis(b.retry_initial_ms),
            retry_max_interval: std::time::Duration::from_secs(b.retry_max_interval_secs),
            retry_max_elapsed: std::time::Duration::from_secs(b.retry_max_elapsed_secs),
        }
    }

    /// The client of a province's bureau (created on first use).
    pub(crate) async fn client(&self, province: &str) -> Result<Arc<BureauClient>, PipelineError> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(province) {
            return Ok(c.clone());
        }
        let e = self.settings.endpoint(province);
        let aes = if e.encrypt {
            Some(
                AesKey::new(e.aes_key.expose().as_bytes(), e.aes_iv.expose().as_bytes()).map_err(
                    |err| {
                        PipelineError::Config(format!(
                            "bureau {province}: bureau.aes_key/aes_iv: {err}"
                        ))
                    },
                )?,
            )
        } else {
            None
        };
        let account = BureauAccount {
            province: province.to_owned(),
            base_url: e.base_url.clone(),
            isp_id: e.isp_id,
            user_name: e.user.clone(),
            password: crate::bureau::client::Secret::new(e.password.expose()),
            aes,
            soap_namespace: self.settings.bureau.soap_namespace.clone(),
        };
        let client = Arc::new(BureauClient::new(account, self.client_config())?);
        clients.insert(province.to_owned(), client.clone());
        Ok(client)
    }

    pub(crate) async fn bureau_lock(&self, province: &str) -> Arc<Mutex<()>> {
        self.bureau_locks
            .lock()
            .await
            .entry(province.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone()
    }

    /// The code tables to build a bureau's files with: the bundled default, replaced table by
    /// table by every JCDM the bureau sent.
    pub(crate) async fn code_tables(&self, province: &str) -> Result<CodeTables, PipelineError> {
        let mut tables = CodeTables::bundled().map_err(|e| PipelineError::Config(e.to_string()))?;
        for doc in self.store.code_tables(province).await? {
            match CodeTables::parse_jcdm(&doc) {
                Ok(t) => tables.merge(t),
                Err(e) => {
                    return Err(PipelineError::Bureau {
                        province: province.to_owned(),
                        message: format!("stored JCDM is unreadable: {e}"),
                    });
                }
            }
        }
        Ok(tables)
    }

    /// Intake: reviewed filings get their deadline and are queued.
    pub async fn intake(&self) -> Result<CycleReport, PipelineError> {
        let mut report = CycleReport::default();
        loop {
            let batch = self.store.reviewed(1000).await?;
            if batch.is_empty() {
                break;
            }
            let mut items = Vec::with_capacity(batch.len());
            for (id, reviewed_at, _doc) in &batch {
                let reviewed = chrono::DateTime::parse_from_rfc3339(reviewed_at).map_err(|e| {
                    PipelineError::Config(format!(
                        "filing {id}: stored reviewedAt {reviewed_at:?}: {e}"
                    ))
                })?;
                items.push((id.clone(), self.calendar.deadline(reviewed)));
            }
            self.store.queue(&items).await?;
            report.queued += items.len();
            if batch.len() < 1000 {
                break;
            }
        }
        Ok(report)
    }

    /// One full cycle: intake, submit to every bureau with work, poll every bureau.
    #[tracing::instrument(name = "cycle", skip(self))]
    pub async fn cycle(&self) -> CycleReport {
        let mut report = match self.intake().await {
            Ok(r) => r,
            Err(e) => CycleReport {
                errors: vec![e.to_string()],
                ..CycleReport::default()
            },
        };
        report.merge(self.submit_all().await);
        report.merge(self.poll_all().await);
        report
    }

    /// Submits queued filings to every bureau that has some; bureaus proceed in parallel.
    #[tracing::instrument(name = "submit_all", skip(self))]
    pub async fn submit_all(&self) -> CycleReport {
        let provinces = match self.store.active_provinces().await {
            Ok(p) => p,
            Err(e) => {
                return CycleReport {
                    errors: vec![e.to_string()],
                    ..CycleReport::default()
                };
            }
        };
        let results =
            futures_util::future::join_all(provinces.iter().map(|p| self.submit_province(p))).await;
        let mut report = CycleReport::default();
        for (province, r) in provinces.iter().zip(results) {
            match r {
                Ok(r) => report.merge(r),
                Err(e) => {
                    crate::telemetry::count_error(province, "submit");
                    tracing::warn!(province = %province, error = %e, "submit failed");
                    report.errors.push(format!("{province}: {e}"));
                }
            }
        }
        report
    }

    /// Downloads and applies results from every bureau that may have some.
    #[tracing::instrument(name = "poll_all", skip(self))]
    pub async fn poll_all(&self) -> CycleReport {
        let provinces = match self.store.active_provinces().await {
            Ok(p) => p,
            Err(e) => {
                return CycleReport {
                    errors: vec![e.to_string()],
                    ..CycleReport::default()
                };
            }
        };
        let results =
            futures_util::future::join_all(provinces.iter().map(|p| self.poll_province(p))).await;
        let mut report = CycleReport::default();
        for (province, r) in provinces.iter().zip(results) {
            match r {
                Ok(r) => report.merge(r),
                Err(e) => {
                    crate::telemetry::count_error(province, "poll");
                    tracing::warn!(province = %province, error = %e, "poll failed");
                    report.errors.push(format!("{province}: {e}"));
                }
            }
        }
        report
    }
}
