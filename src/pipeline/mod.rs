//! The pipeline: reviewed filings → queued (deadline) → claimed into an upload file →
//! sent → results downloaded, applied and acknowledged. Each step is callable alone (from
//! `once`, the daemon's schedules and tests) and returns what it did.
//!
//! Owns: what the bureau's answers mean for filings. Must not hold a database transaction
//! across a network call: a claim is one short transaction (the file is stored before a byte
//! is sent), the send has none, and its outcome is recorded in another.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};
use tracing::{debug, info, warn};

use crate::attachments::PreparedCache;
use crate::bureau::client::{BureauAccount, BureauClient, ClientConfig, ClientError};
use crate::bureau::limiter::Limiter;
use crate::calendar::Calendar;
use crate::codes::CodeTables;
use crate::config::Settings;
use crate::datafile::Finding;
use crate::datafile::upload::BuildOptions;
use crate::domain::Filing;
use crate::package::AesKey;
use crate::preflight;
use crate::store::{BureauLease, Reason, Store, StoreError};

mod build;
mod poll;
mod submit;

pub use build::BuiltBatch;

/// The pipeline's stages, timed where the work happens (for `bench` and tuning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Preflight and queueing (`intake`).
    Preflight,
    /// Building a batch: documents → ids → XML → GBK → zip.
    Build,
    /// The claim transaction that stores the file and its filings.
    Claim,
    /// Sending a stored file until it arrived (packing included).
    Upload,
    /// Downloading, applying and acknowledging result files.
    Poll,
    /// Inside build and upload: zip, then MD5, AES and base64 (bytes: the GBK data file).
    Package,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Preflight,
        Stage::Build,
        Stage::Claim,
        Stage::Upload,
        Stage::Poll,
        Stage::Package,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Preflight => "preflight",
            Stage::Build => "build",
            Stage::Claim => "claim",
            Stage::Upload => "upload",
            Stage::Poll => "poll+write-back",
            Stage::Package => "packaging",
        }
    }
}

/// Busy time, items and bytes per stage, summed over bureaus (stages of different bureaus run
/// at once, so busy time can exceed wall time). Relaxed atomics: a few per file or batch.
#[derive(Debug, Default)]
pub struct StageClock {
    nanos: [AtomicU64; 6],
    items: [AtomicU64; 6],
    bytes: [AtomicU64; 6],
    calls: [AtomicU64; 6],
}

/// A reading of one stage's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageReading {
    pub busy: Duration,
    pub items: u64,
    pub bytes: u64,
    /// Batches, files or calls timed.
    pub calls: u64,
}

impl StageClock {
    pub fn add(&self, stage: Stage, busy: Duration, items: u64, bytes: u64) {
        let i = stage as usize;
        self.nanos[i].fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
        self.items[i].fetch_add(items, Ordering::Relaxed);
        self.bytes[i].fetch_add(bytes, Ordering::Relaxed);
        self.calls[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self, stage: Stage) -> StageReading {
        let i = stage as usize;
        StageReading {
            busy: Duration::from_nanos(self.nanos[i].load(Ordering::Relaxed)),
            items: self.items[i].load(Ordering::Relaxed),
            bytes: self.bytes[i].load(Ordering::Relaxed),
            calls: self.calls[i].load(Ordering::Relaxed),
        }
    }
}

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
    /// A report of a step that could not start.
    pub fn failed(e: impl std::fmt::Display) -> Self {
        Self {
            errors: vec![e.to_string()],
            ..Self::default()
        }
    }

    /// Merges the per-bureau results of one stage; a bureau's failure is counted, logged (no
    /// PII: the province and the error) and kept in the report without stopping the others.
    fn per_bureau(
        stage: &'static str,
        provinces: &[String],
        results: Vec<Result<CycleReport, PipelineError>>,
    ) -> Self {
        let mut report = Self::default();
        for (province, r) in provinces.iter().zip(results) {
            match r {
                Ok(r) => report.merge(r),
                Err(e) => {
                    crate::telemetry::count_error(province, stage);
                    tracing::warn!(province = %province, error = %e, stage, "bureau step failed");
                    report.errors.push(format!("{province}: {e}"));
                }
            }
        }
        report
    }

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
    /// Each bureau's rate and concurrency limiter, shared with its client; as long-lived.
    limiters: Mutex<HashMap<String, Arc<Limiter>>>,
    /// One sender per bureau at a time within this process (across processes: the lease).
    bureau_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// This process's name in leases: unique per start, so a restarted process is a new owner.
    instance: String,
    /// Set on shutdown: the submit loop stops claiming and sending between files.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Busy time per stage since start.
    clock: StageClock,
    /// Attachments re-encoded by the preflight, taken by the claim (each photo once).
    pub(crate) prepared: Arc<PreparedCache>,
    /// Each bureau's parsed code tables, with the version of its stored JCDM they came from.
    codes: Mutex<HashMap<String, CodeTablesVersion>>,
    /// Batches being built (leased filings, XML, zip) at once, across bureaus: bounds memory
    /// with 31 bureaus and a large backlog; more would only queue for the database.
    pub(crate) build_slots: tokio::sync::Semaphore,
}

/// How many batches are built at once across bureaus (see `Gateway::build_slots`).
const BUILD_SLOTS: usize = 4;

/// (version of the stored JCDM, digest of its documents, the parsed tables).
type CodeTablesVersion = ((i64, Option<i64>), [u8; 16], Arc<CodeTables>);

/// The right to talk to one bureau: this process's per-bureau mutex plus the bureau's lease in
/// the database, renewed in the background while held. Dropping it stops the renewal; the lease
/// stays with this instance until it runs out, so the next cycle takes it back without a
/// takeover.
pub(crate) struct BureauGuard {
    _local: OwnedMutexGuard<()>,
    pub(crate) lease: BureauLease,
    lost: Arc<AtomicBool>,
    /// Milliseconds after `started` of the last successful renewal.
    renewed_ms: Arc<AtomicU64>,
    started: Instant,
    lease_ms: u64,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl BureauGuard {
    /// Fails once the lease may have passed to another instance: taken over (the token moved),
    /// or not renewed for two thirds of its period (the database is unreachable) — stop before
    /// another instance can start, never after.
    pub(crate) fn check(&self) -> Result<(), PipelineError> {
        let since = (self.started.elapsed().as_millis() as u64)
            .saturating_sub(self.renewed_ms.load(Ordering::Relaxed));
        if self.lost.load(Ordering::Relaxed) || since > self.lease_ms * 2 / 3 {
            return Err(StoreError::LeaseLost {
                province: self.lease.province.clone(),
                owner: self.lease.owner.clone(),
            }
            .into());
        }
        Ok(())
    }
}

impl Drop for BureauGuard {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl Gateway {
    pub fn new(store: Store, settings: Arc<Settings>, calendar: Calendar) -> Self {
        Self {
            store,
            settings,
            calendar,
            clients: Mutex::new(HashMap::new()),
            limiters: Mutex::new(HashMap::new()),
            bureau_locks: Mutex::new(HashMap::new()),
            instance: new_instance_id(),
            stopping: tokio::sync::watch::Sender::new(false),
            clock: StageClock::default(),
            prepared: Arc::new(PreparedCache::default()),
            codes: Mutex::new(HashMap::new()),
            build_slots: tokio::sync::Semaphore::new(BUILD_SLOTS),
        }
    }

    /// The configured provinces' codes.
    fn known_provinces(&self) -> Vec<String> {
        self.settings
            .provinces
            .iter()
            .map(|p| p.code.clone())
            .collect()
    }

    /// Busy time per stage since this gateway started.
    pub fn clock(&self) -> &StageClock {
        &self.clock
    }

    /// This process's name in leases and events.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Gives up this instance's bureau leases at once (on a graceful stop), so other
    /// instances take its bureaus over without waiting a lease period.
    pub async fn release_leases(&self) -> Result<(), PipelineError> {
        self.store.release_bureau_leases_of(&self.instance).await?;
        Ok(())
    }

    pub(crate) fn lease_ms(&self) -> i64 {
        (self.settings.database.lease_secs.max(1) * 1000) as i64
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
        let limiter = self.limiter(province).await;
        let client =
            Arc::new(BureauClient::new(account, self.client_config())?.with_limiter(limiter));
        clients.insert(province.to_owned(), client.clone());
        Ok(client)
    }

    /// The limiter of a province's bureau (created on first use, from `Settings::limits`).
    pub(crate) async fn limiter(&self, province: &str) -> Arc<Limiter> {
        self.limiters
            .lock()
            .await
            .entry(province.to_owned())
            .or_insert_with(|| {
                Arc::new(match self.settings.limits(province) {
                    Some(limits) => Limiter::new(province, limits),
                    None => Limiter::unlimited(province),
                })
            })
            .clone()
    }

    pub(crate) async fn bureau_lock(&self, province: &str) -> Arc<Mutex<()>> {
        self.bureau_locks
            .lock()
            .await
            .entry(province.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone()
    }

    /// Takes the right to talk to a bureau: this process's mutex, then the bureau's lease.
    /// `None` while another instance holds the lease (it is that instance's bureau for now).
    /// A lease newly taken (not renewed) holds the bureau's limiter off for one interval: the
    /// previous holder may have sent just before it let go.
    pub(crate) async fn hold_bureau(
        &self,
        province: &str,
    ) -> Result<Option<BureauGuard>, PipelineError> {
        let local = self.bureau_lock(province).await.lock_owned().await;
        let lease_ms = self.lease_ms();
        let Some(lease) = self
            .store
            .acquire_bureau_lease(province, &self.instance, lease_ms)
            .await?
        else {
            debug!(province, "another instance sends to this bureau for now");
            return Ok(None);
        };
        if lease.taken {
            self.limiter(province).await.hold_off();
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewed_ms = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let heartbeat = {
            let store = self.store.clone();
            let lease = lease.clone();
            let lost = lost.clone();
            let renewed_ms = renewed_ms.clone();
            tokio::spawn(async move {
                let every = Duration::from_millis((lease_ms / 3).max(100) as u64);
                loop {
                    tokio::time::sleep(every).await;
                    let asked = Instant::now();
                    match store.renew_bureau_lease(&lease, lease_ms).await {
                        Ok(true) => {
                            let at = asked.duration_since(started).as_millis() as u64;
                            renewed_ms.store(at, Ordering::Relaxed);
                        }
                        Ok(false) => {
                            warn!(province = %lease.province, "bureau lease taken over by another instance; stopping");
                            lost.store(true, Ordering::Relaxed);
                            return;
                        }
                        Err(e) => {
                            warn!(province = %lease.province, error = %e, "cannot renew the bureau lease");
                        }
                    }
                }
            })
        };
        if lease.token > 1 {
            info!(province, token = lease.token, "holding the bureau's lease");
        }
        Ok(Some(BureauGuard {
            _local: local,
            lease,
            lost,
            renewed_ms,
            started,
            lease_ms: lease_ms as u64,
            heartbeat,
        }))
    }

    /// The code tables to build a bureau's files with: the bundled default, replaced table by
    /// table by every JCDM the bureau sent.
    ///
    /// Parsed once per bureau and kept while the bureau's stored JCDM documents stay the same
    /// (a cheap count per call), instead of parsing about 500 KB of XML for every batch.
    pub(crate) async fn code_tables(
        &self,
        province: &str,
    ) -> Result<Arc<CodeTables>, PipelineError> {
        let version = self.store.code_tables_version(province).await?;
        if let Some((v, _, t)) = self.codes.lock().await.get(province)
            && *v == version
        {
            return Ok(t.clone());
        }
        // Bureaus that sent the same documents share one parsed copy (a copy is megabytes).
        let docs = self.store.code_tables(province).await?;
        let key: [u8; 16] = {
            use md5::Digest;
            let mut h = md5::Md5::new();
            for d in &docs {
                h.update((d.len() as u64).to_le_bytes());
                h.update(d.as_bytes());
            }
            h.finalize().into()
        };
        let shared = self
            .codes
            .lock()
            .await
            .values()
            .find(|(_, k, _)| *k == key)
            .map(|(_, _, t)| t.clone());
        let tables = match shared {
            Some(t) => t,
            None => Arc::new(Self::parse_code_tables(province, &docs)?),
        };
        self.codes
            .lock()
            .await
            .insert(province.to_owned(), (version, key, tables.clone()));
        Ok(tables)
    }

    fn parse_code_tables(province: &str, docs: &[String]) -> Result<CodeTables, PipelineError> {
        let mut tables = CodeTables::bundled().map_err(|e| PipelineError::Config(e.to_string()))?;
        for doc in docs {
            match CodeTables::parse_jcdm(doc) {
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

    /// Intake: every reviewed filing runs the preflight against its bureau's code tables and
    /// rules; one with findings goes to `needs_correction` with all of them (never sent), the
    /// others are queued with their deadline on the official calendar.
    pub async fn intake(&self) -> Result<CycleReport, PipelineError> {
        let started = Instant::now();
        let report = self.intake_inner().await?;
        self.clock.add(
            Stage::Preflight,
            started.elapsed(),
            (report.queued + report.needs_correction) as u64,
            0,
        );
        Ok(report)
    }

    async fn intake_inner(&self) -> Result<CycleReport, PipelineError> {
        let mut report = CycleReport::default();
        let mut tables: HashMap<String, Arc<CodeTables>> = HashMap::new();
        loop {
            let batch = self.store.reviewed(1000).await?;
            if batch.is_empty() {
                break;
            }
            let mut parsed = Vec::with_capacity(batch.len());
            for (id, reviewed_at, doc) in &batch {
                let reviewed = chrono::DateTime::parse_from_rfc3339(reviewed_at).map_err(|e| {
                    PipelineError::Config(format!(
                        "filing {id}: stored reviewedAt {reviewed_at:?}: {e}"
                    ))
                })?;
                let filing: Filing = serde_json::from_str(doc).map_err(|e| {
                    PipelineError::Config(format!("filing {id}: stored document: {e}"))
                })?;
                if !tables.contains_key(&filing.province) {
                    let t = self.code_tables(&filing.province).await?;
                    tables.insert(filing.province.clone(), t);
                }
                parsed.push((id.clone(), reviewed, filing));
            }
            let checked = self.preflight_parallel(parsed, &tables).await?;
            let mut items = Vec::with_capacity(checked.len());
            for (id, reviewed, findings) in checked {
                if findings.is_empty() {
                    items.push((id, self.calendar.deadline(reviewed)));
                } else {
                    // Codes and fields only: messages may quote the customer's values.
                    tracing::info!(
                        filing = %id,
                        findings = findings.len(),
                        codes = ?findings.iter().map(|f| f.code.as_str()).collect::<Vec<_>>(),
                        "preflight: needs correction"
                    );
                    let reasons: Vec<Reason> = findings
                        .into_iter()
                        .map(|x| Reason {
                            source: "preflight".into(),
                            code: serde_json::json!(x.code),
                            field: Some(x.field),
                            message: x.message,
                        })
                        .collect();
                    self.store.needs_correction(&id, &reasons).await?;
                    report.needs_correction += 1;
                }
            }
            self.store.queue(&items).await?;
            report.queued += items.len();
            if batch.len() < 1000 {
                break;
            }
        }
        Ok(report)
    }

    /// The preflight of a batch, on every core: the filings are split into one share per
    /// core, each checked on a blocking thread (re-encoding a first filing's photos is about a
    /// CPU-second; on the runtime's threads it would stall every bureau's I/O). The order of
    /// the batch is kept.
    async fn preflight_parallel(
        &self,
        filings: Vec<(String, chrono::DateTime<chrono::FixedOffset>, Filing)>,
        tables: &HashMap<String, Arc<CodeTables>>,
    ) -> Result<Vec<(String, chrono::DateTime<chrono::FixedOffset>, Vec<Finding>)>, PipelineError>
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let share = filings.len().div_ceil(cores).max(1);
        let mut shares = Vec::new();
        let mut rest = filings.into_iter();
        loop {
            let chunk: Vec<_> = rest.by_ref().take(share).collect();
            if chunk.is_empty() {
                break;
            }
            let settings = self.settings.clone();
            let prepared = self.prepared.clone();
            let tables = tables.clone();
            shares.push(tokio::task::spawn_blocking(move || {
                chunk
                    .into_iter()
                    .map(|(id, reviewed, filing)| {
                        let codes = tables.get(&filing.province).ok_or_else(|| {
                            PipelineError::Config(format!(
                                "filing {id}: no code tables loaded for province {}",
                                filing.province
                            ))
                        })?;
                        let findings = preflight_with(&settings, &prepared, &filing, codes);
                        Ok((id, reviewed, findings))
                    })
                    .collect::<Result<Vec<_>, PipelineError>>()
            }));
        }
        let mut out = Vec::new();
        for share in shares {
            out.extend(
                share.await.map_err(|e| {
                    PipelineError::Config(format!("a preflight thread failed: {e}"))
                })??,
            );
        }
        Ok(out)
    }

    /// The preflight of one filing with its bureau's code tables and provincial rules.
    pub fn preflight(&self, filing: &Filing, codes: &CodeTables) -> Vec<Finding> {
        preflight_with(&self.settings, &self.prepared, filing, codes)
    }

    /// One full cycle: intake, submit to every bureau with work, poll every bureau.
    #[tracing::instrument(name = "cycle", skip(self))]
    pub async fn cycle(self: &Arc<Self>) -> CycleReport {
        let mut report = match self.intake().await {
            Ok(r) => r,
            Err(e) => CycleReport::failed(e),
        };
        report.merge(self.submit_all().await);
        report.merge(self.poll_all().await);
        report
    }

    /// Submits queued filings to every bureau that has some; bureaus proceed in parallel.
    #[tracing::instrument(name = "submit_all", skip(self))]
    pub async fn submit_all(self: &Arc<Self>) -> CycleReport {
        let provinces = match self.store.active_provinces(&self.known_provinces()).await {
            Ok(p) => p,
            Err(e) => return CycleReport::failed(e),
        };
        // A bureau with business hours (provinces.toml) is only sent to within them.
        let local = crate::store::now().time();
        let provinces: Vec<String> = provinces
            .into_iter()
            .filter(|p| {
                self.settings
                    .province(p)
                    .is_none_or(|b| b.accepts_at(local))
            })
            .collect();
        let results = self
            .per_bureau_tasks(
                &provinces,
                |gw, p| async move { gw.submit_province(&p).await },
            )
            .await;
        CycleReport::per_bureau("submit", &provinces, results)
    }

    /// Downloads and applies results from every bureau that may have some.
    #[tracing::instrument(name = "poll_all", skip(self))]
    pub async fn poll_all(self: &Arc<Self>) -> CycleReport {
        let provinces = match self.store.active_provinces(&self.known_provinces()).await {
            Ok(p) => p,
            Err(e) => return CycleReport::failed(e),
        };
        let results = self
            .per_bureau_tasks(
                &provinces,
                |gw, p| async move { gw.poll_province(&p).await },
            )
            .await;
        CycleReport::per_bureau("poll", &provinces, results)
    }

    /// Runs one step for every bureau, each bureau in its own task so that the bureaus share
    /// the runtime's threads (in one task they would take turns on one thread, and a bureau
    /// holding the database's write turn would wait behind another's XML build). Results come
    /// back in the order of `provinces`; a task that panicked is that bureau's error. Dropping
    /// the future aborts the tasks, as dropping the steps themselves would.
    async fn per_bureau_tasks<F, Fut>(
        self: &Arc<Self>,
        provinces: &[String],
        step: F,
    ) -> Vec<Result<CycleReport, PipelineError>>
    where
        F: Fn(Arc<Self>, String) -> Fut,
        Fut: std::future::Future<Output = Result<CycleReport, PipelineError>> + Send + 'static,
    {
        use tracing::Instrument;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, p) in provinces.iter().enumerate() {
            let fut = step(self.clone(), p.clone()).in_current_span();
            tasks.spawn(async move { (i, fut.await) });
        }
        let mut results: Vec<Option<Result<CycleReport, PipelineError>>> =
            provinces.iter().map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, r)) = joined
                && let Some(slot) = results.get_mut(i)
            {
                *slot = Some(r);
            }
        }
        results
            .into_iter()
            .zip(provinces)
            .map(|(r, p)| {
                r.unwrap_or_else(|| {
                    Err(PipelineError::Bureau {
                        province: p.clone(),
                        message: "the bureau's task panicked".into(),
                    })
                })
            })
            .collect()
    }
}

/// The preflight of one filing with its bureau's code tables and provincial rules; re-encoded
/// attachments are kept in `prepared` for the claim.
fn preflight_with(
    s: &Settings,
    prepared: &PreparedCache,
    filing: &Filing,
    codes: &CodeTables,
) -> Vec<Finding> {
    let endpoint = s.endpoint(&filing.province);
    let ctx = preflight::Context {
        review_date: None,
        codes,
        province: s.province(&filing.province),
        allowed_suffixes: &s.preflight.allowed_suffixes,
        attachments_dir: &s.attachments.dir,
        min_width: s.attachments.min_width,
        min_height: s.attachments.min_height,
        prepared: Some(prepared),
        build: BuildOptions {
            isp_id: endpoint.isp_id,
            app_extension: endpoint.has_extension("app"),
        },
    };
    preflight::check(filing, &ctx)
}

/// A name for this process in leases: host, process id and start time, unique per start.
fn new_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{host}-{}-{:x}", std::process::id(), nanos % (1 << 40))
}
