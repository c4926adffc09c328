//! The daemon (`run`) and the one-shot (`once`): schedules, signals, systemd notifications,
//! the work lock and graceful shutdown.
//!
//! Shutdown is a value, as in mini-redis: the signal listener flips a [`Shutdown`] every task
//! holds. On the first SIGTERM/SIGINT the gateway stops claiming and sending (checked between
//! files), the scheduler starts nothing new, jobs in flight get `daemon.shutdown_grace_secs` to
//! finish; then files claimed but never sent are released and the process exits 0. A second
//! signal exits at once: every claim is reconciled on the next start (a stored file is sent
//! again with the same bytes and number, or released by the reconcile job).
//!
//! The watchdog is pinged from the live loop only after the database answered, so a daemon
//! whose store hangs is restarted by systemd rather than kept alive by a timer.
//!
//! Owns: process lifetime. Must not hold SQL (that is the store's) or decide what a bureau's
//! answer means (the pipeline's).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::Duration as ChronoDuration;
use sd_notify::NotifyState;
use tokio::sync::{Mutex, watch};
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{Instrument, error, info, info_span, warn};

use crate::calendar::Calendar;
use crate::config::Settings;
use crate::pipeline::{CycleReport, Gateway};
use crate::store::admin::DeadlineItem;
use crate::store::{self, Store, fmt_time, now};

/// Whether shutdown was asked for; cheap to clone, every task holds one (mini-redis style).
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until shutdown is asked for.
    pub async fn recv(&mut self) {
        // An error means the sender is gone: the process is ending anyway.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Starts listening for SIGTERM and SIGINT. The first flips the returned [`Shutdown`]; the
/// second exits the process at once.
pub fn listen_for_signals() -> anyhow::Result<Shutdown> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            seen += 1;
            if seen == 1 {
                info!(
                    signal = name,
                    "shutting down gracefully; a second signal exits at once"
                );
                tx.send_replace(true);
            } else {
                warn!(
                    signal = name,
                    "second signal: exiting at once (claims are reconciled on the next start)"
                );
                std::process::exit(1);
            }
        }
    });
    Ok(Shutdown(rx))
}

/// What `/healthz` reports: ready when the scheduler runs (the database is asked per request).
#[derive(Debug, Default)]
pub struct Health {
    scheduler_running: AtomicBool,
}

impl Health {
    pub fn scheduler_running(&self) -> bool {
        self.scheduler_running.load(Ordering::Relaxed)
    }
    fn set_scheduler_running(&self, running: bool) {
        self.scheduler_running.store(running, Ordering::Relaxed);
    }
}

/// systemd notifications; no-ops when not started by systemd (no NOTIFY_SOCKET).
fn notify(state: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(state)
    {
        warn!(error = %e, "sd_notify failed");
    }
}

// ---- the work lock ----

/// A lease in the database saying who works on it: `once` alone, or any number of `run`s.
/// Held for the life of the process and renewed by a background task; released on drop of
/// the process's work (explicitly, by [`WorkLock::release`]).
pub struct WorkLock {
    store: Store,
    holder: String,
    renewer: tokio::task::JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another beian-gateway is working on this database ({kind} {holder}, since {since}; its lease lapses within {lapse_secs} s if it died). Not starting: two workers must not overlap. Try again later, or stop the other one."
    )]
    Busy {
        kind: String,
        holder: String,
        since: String,
        lapse_secs: i64,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl WorkLock {
    /// Takes the lock for `kind` ("run" or "once"), waiting up to `daemon.lock_wait_secs`.
    pub async fn acquire(
        store: &Store,
        settings: &Settings,
        kind: &'static str,
    ) -> Result<Self, LockError> {
        let holder = format!(
            "{kind}:{}:{}:{:08x}",
            host_name(),
            std::process::id(),
            rand::random::<u32>()
        );
        let ttl_ms = settings.daemon.lock_ttl_secs as i64 * 1000;
        let deadline =
            std::time::Instant::now() + Duration::from_secs(settings.daemon.lock_wait_secs);
        let mut announced = false;
        loop {
            let blocker = store
                .acquire_work_lock(&holder, kind, now_ms(), ttl_ms)
                .await?;
            let Some(b) = blocker else { break };
            if std::time::Instant::now() >= deadline {
                return Err(LockError::Busy {
                    kind: b.kind,
                    holder: b.holder,
                    since: b.acquired_at,
                    lapse_secs: ((b.expires_ms - now_ms()) / 1000).max(0),
                });
            }
            if !announced {
                info!(other = %b.holder, "another worker holds the work lock; waiting briefly");
                announced = true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let renew_every = Duration::from_secs(settings.daemon.tick_secs.max(1));
        let renewer = {
            let store = store.clone();
            let holder = holder.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(renew_every).await;
                    match store.renew_work_lock(&holder, now_ms(), ttl_ms).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // Lapsed (this process stalled past its lease): take it again.
                            warn!("the work lock lapsed; taking it again");
                            if let Err(e) = store
                                .acquire_work_lock(&holder, kind, now_ms(), ttl_ms)
                                .await
                            {
                                warn!(error = %e, "renewing the work lock failed");
                            }
                        }
                        Err(e) => warn!(error = %e, "renewing the work lock failed"),
                    }
                }
            })
        };
        Ok(Self {
            store: store.clone(),
            holder,
            renewer,
        })
    }

    pub async fn release(self) {
        self.renewer.abort();
        if let Err(e) = self.store.release_work_lock(&self.holder).await {
            warn!(error = %e, "releasing the work lock failed; it lapses by itself");
        }
    }
}

// ---- reports used by the jobs, `once`, `status` and the live loop ----

/// Filings not yet submitted: overdue (deadline passed) and at risk (deadline within the margin).
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadlineRisk {
    pub overdue: Vec<DeadlineItem>,
    pub at_risk: Vec<DeadlineItem>,
}

pub async fn deadline_risk(store: &Store, settings: &Settings) -> store::Result<DeadlineRisk> {
    let now = now();
    let now_s = fmt_time(now);
    let margin = fmt_time(now + ChronoDuration::hours(settings.status.at_risk_hours));
    Ok(DeadlineRisk {
        overdue: store.not_submitted_due(None, &now_s).await?,
        at_risk: store.not_submitted_due(Some(&now_s), &margin).await?,
    })
}

/// The calendar in use: the official one from `calendar.dir` (holidays and make-up workdays),
/// or Monday–Friday with an error-level log when it cannot be read.
pub fn calendar(settings: &Settings) -> Calendar {
    crate::commands::load_calendar(settings)
}

/// How many days ahead from today the calendar is known to be right (the coverage metric and
/// alarm); the configured minimum is logged at error level when it is not met.
pub fn calendar_coverage_days(calendar: &Calendar, settings: &Settings) -> i64 {
    let today = store::now().date_naive();
    let horizon = settings
        .calendar
        .coverage_days
        .max(settings.status.calendar_min_days as u32);
    crate::commands::calendar_covered(calendar, settings, today);
    match calendar.first_uncovered(today, 400) {
        Some(day) => (day - today).num_days().max(0),
        None => 400.max(i64::from(horizon)),
    }
}

/// Updates the gauges and returns the systemd STATUS line.
async fn refresh(store: &Store, settings: &Settings) -> store::Result<String> {
    let counts = store.counts_by_state_province().await?;
    let provinces: std::collections::BTreeSet<&str> =
        counts.iter().map(|(_, p, _)| p.as_str()).collect();
    for p in &provinces {
        for s in store::state::ALL {
            let n = counts
                .iter()
                .find(|(st, pr, _)| st == s && pr == p)
                .map(|(_, _, n)| *n)
                .unwrap_or(0);
            crate::telemetry::set_filings(s, p, n);
        }
    }
    let risk = deadline_risk(store, settings).await?;
    for p in &provinces {
        crate::telemetry::set_deadline_risk(
            p,
            risk.at_risk.iter().filter(|i| i.province == *p).count(),
            risk.overdue.iter().filter(|i| i.province == *p).count(),
        );
    }
    let total = |state: &str| -> i64 {
        counts
            .iter()
            .filter(|(s, _, _)| s == state)
            .map(|(_, _, n)| n)
            .sum()
    };
    Ok(format!(
        "queued {}, submitting {}, submitted {}, awaiting_sms {}, held {}, needs_correction {}; at risk {}, overdue {}",
        total(store::state::REVIEWED) + total(store::state::QUEUED),
        total(store::state::SUBMITTING),
        total(store::state::SUBMITTED),
        total(store::state::AWAITING_SMS),
        total(store::state::HELD),
        total(store::state::NEEDS_CORRECTION),
        risk.at_risk.len(),
        risk.overdue.len()
    ))
}

/// The 09:00 report: per province, filings due today, at risk and overdue (not yet submitted).
pub async fn deadline_report(store: &Store, settings: &Settings) -> store::Result<()> {
    let now = now();
    let tomorrow = (now.date_naive() + ChronoDuration::days(1))
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(store::tz()).single())
        .unwrap_or(now + ChronoDuration::days(1));
    let due_today = store
        .not_submitted_due(Some(&fmt_time(now)), &fmt_time(tomorrow))
        .await?;
    let risk = deadline_risk(store, settings).await?;
    let mut provinces: std::collections::BTreeSet<&str> = Default::default();
    for i in due_today.iter().chain(&risk.at_risk).chain(&risk.overdue) {
        provinces.insert(&i.province);
    }
    let count = |list: &[DeadlineItem], p: &str| list.iter().filter(|i| i.province == p).count();
    for p in &provinces {
        let overdue = count(&risk.overdue, p);
        if overdue > 0 {
            warn!(province = %p, due_today = count(&due_today, p), at_risk = count(&risk.at_risk, p), overdue, "deadline report");
        } else {
            info!(province = %p, due_today = count(&due_today, p), at_risk = count(&risk.at_risk, p), overdue, "deadline report");
        }
    }
    info!(
        due_today = due_today.len(),
        at_risk = risk.at_risk.len(),
        overdue = risk.overdue.len(),
        "deadline report: all provinces"
    );
    Ok(())
}

/// Calendar coverage: an alarm (event and error log) when the calendar ends too soon.
pub async fn calendar_check(store: &Store, settings: &Settings) -> store::Result<()> {
    let days = calendar_coverage_days(&calendar(settings), settings);
    crate::telemetry::set_calendar_coverage(days);
    if days < settings.status.calendar_min_days {
        error!(
            days,
            min = settings.status.calendar_min_days,
            "the business-day calendar ends too soon"
        );
        store
            .alarm(
                None,
                None,
                "calendar_coverage",
                serde_json::json!({"days": days, "min": settings.status.calendar_min_days}),
            )
            .await?;
    } else {
        info!(days, "calendar covers the coming weeks");
    }
    Ok(())
}

/// Stale claims: stored files never sent for `daemon.stale_claim_secs` are released (their
/// filings are queued again); bureaus with files whose arrival is unconfirmed are driven
/// through the submit step, which asks the bureau (isp_querypreviousupload) and finishes them.
pub async fn reconcile(gateway: &Gateway, settings: &Settings) -> CycleReport {
    let mut report = CycleReport::default();
    let store = gateway.store();
    let before = fmt_time(now() - ChronoDuration::seconds(settings.daemon.stale_claim_secs as i64));
    let provinces = match store.provinces_with_stale_uploads(&before).await {
        Ok(p) => p,
        Err(e) => {
            report.errors.push(e.to_string());
            return report;
        }
    };
    for p in provinces {
        match store.release_unsent(&p, &before).await {
            Ok(released) if !released.is_empty() => {
                warn!(province = %p, filings = released.len(), "released a stale claim that was never sent")
            }
            Ok(_) => {}
            Err(e) => report.errors.push(format!("{p}: {e}")),
        }
        if gateway.is_stopping() {
            break;
        }
        match gateway.submit_province(&p).await {
            Ok(r) => report.merge(r),
            Err(e) => report.errors.push(format!("{p}: {e}")),
        }
    }
    report
}

/// After shutdown, with no job running: give back every file claimed but never sent.
async fn release_all_unsent(store: &Store) {
    let provinces = match store.provinces_with_stale_uploads("9999").await {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "listing unsent claims failed; the next start reconciles them");
            return;
        }
    };
    for p in provinces {
        match store.release_unsent(&p, "9999").await {
            Ok(released) if !released.is_empty() => {
                info!(province = %p, filings = released.len(), "released claimed but unsent filings")
            }
            Ok(_) => {}
            Err(e) => warn!(province = %p, error = %e, "releasing unsent claims failed"),
        }
    }
}

// ---- `run` ----

pub struct RunOptions {
    /// Exit once every filing waits for a person (tests, trials).
    pub exit_when_done: bool,
    /// Every job every second (the sandbox).
    pub fast: bool,
}

#[derive(Clone, Copy)]
enum JobKind {
    Submit,
    Poll,
    Reconcile,
    DeadlineReport,
    CalendarCheck,
}

impl JobKind {
    fn name(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Poll => "poll",
            Self::Reconcile => "reconcile",
            Self::DeadlineReport => "deadline_report",
            Self::CalendarCheck => "calendar_check",
        }
    }
}

async fn run_job(kind: JobKind, gw: &Arc<Gateway>, settings: &Settings) -> CycleReport {
    match kind {
        JobKind::Submit => {
            let mut r = match gw.intake().await {
                Ok(r) => r,
                Err(e) => CycleReport::failed(e),
            };
            r.merge(gw.submit_all().await);
            r
        }
        JobKind::Poll => gw.poll_all().await,
        JobKind::Reconcile => reconcile(gw, settings).await,
        JobKind::DeadlineReport => match deadline_report(gw.store(), settings).await {
            Ok(()) => CycleReport::default(),
            Err(e) => CycleReport::failed(e),
        },
        JobKind::CalendarCheck => match calendar_check(gw.store(), settings).await {
            Ok(()) => CycleReport::default(),
            Err(e) => CycleReport::failed(e),
        },
    }
}

/// The scheduler with every job; each job runs at most once at a time (a tick that finds the
/// previous run still going is skipped). Returns the per-job locks for shutdown to wait on.
async fn schedule(
    settings: &Arc<Settings>,
    gateway: &Arc<Gateway>,
    total: &Arc<Mutex<CycleReport>>,
    fast: bool,
) -> anyhow::Result<(JobScheduler, Vec<Arc<Mutex<()>>>)> {
    let s = &settings.schedule;
    let jobs = [
        ("schedule.submit", &s.submit, JobKind::Submit),
        ("schedule.poll", &s.poll, JobKind::Poll),
        ("schedule.reconcile", &s.reconcile, JobKind::Reconcile),
        (
            "schedule.deadline_report",
            &s.deadline_report,
            JobKind::DeadlineReport,
        ),
        (
            "schedule.calendar_check",
            &s.calendar_check,
            JobKind::CalendarCheck,
        ),
    ];
    let scheduler = JobScheduler::new().await?;
    let mut busy_locks = Vec::new();
    for (key, cron, kind) in jobs {
        crate::config::check_cron(key, cron)?;
        let cron = if fast && matches!(kind, JobKind::Submit | JobKind::Poll) {
            "*/1 * * * * *"
        } else {
            cron.as_str()
        };
        let busy = Arc::new(Mutex::new(()));
        busy_locks.push(busy.clone());
        let (gw, settings, total) = (gateway.clone(), settings.clone(), total.clone());
        let job = Job::new_async_tz(cron, chrono_tz::Asia::Shanghai, move |_, _| {
            let (gw, settings, total, busy) =
                (gw.clone(), settings.clone(), total.clone(), busy.clone());
            Box::pin(async move {
                let Ok(_running) = busy.try_lock() else {
                    crate::telemetry::count_job(kind.name(), "skipped_overlap");
                    return; // the previous run of this job is still going
                };
                if gw.is_stopping() {
                    return;
                }
                let report = run_job(kind, &gw, &settings)
                    .instrument(info_span!("job", job = kind.name()))
                    .await;
                crate::telemetry::count_job(
                    kind.name(),
                    if report.errors.is_empty() {
                        "ok"
                    } else {
                        "errors"
                    },
                );
                for e in &report.errors {
                    warn!(job = kind.name(), error = %e, "job error");
                }
                total.lock().await.merge(report);
            })
        })
        .with_context(|| format!("configuration key {key}: invalid cron expression {cron:?}"))?;
        scheduler.add(job).await?;
    }
    Ok((scheduler, busy_locks))
}

/// Whether every filing is in a state that waits for a person.
async fn all_settled(store: &Store) -> store::Result<bool> {
    let counts = store.counts().await?;
    Ok(counts.iter().all(|(state, n)| {
        *n == 0 || store::state::is_terminal(state) || state == store::state::HELD
    }))
}

/// `run`: the daemon until SIGTERM/SIGINT (or, with `exit_when_done`, until every filing waits
/// for a person). Returns what all jobs did.
pub async fn run(
    settings: Arc<Settings>,
    store: Store,
    opts: RunOptions,
) -> anyhow::Result<CycleReport> {
    let mut shutdown = listen_for_signals()?;
    let lock = WorkLock::acquire(&store, &settings, "run").await?;
    let gateway = Arc::new(Gateway::new(
        store.clone(),
        settings.clone(),
        calendar(&settings),
    ));
    let total = Arc::new(Mutex::new(CycleReport::default()));
    let (mut scheduler, busy_locks) = schedule(&settings, &gateway, &total, opts.fast).await?;
    let health = Arc::new(Health::default());
    let metrics = crate::telemetry::install_metrics();
    let http = if settings.daemon.admin_listen.is_empty() {
        None
    } else {
        Some(
            crate::http::serve(
                &settings.daemon.admin_listen,
                store.clone(),
                health.clone(),
                metrics.clone(),
                shutdown.clone(),
            )
            .await?,
        )
    };
    scheduler.start().await?;
    health.set_scheduler_running(true);
    if let Err(e) = calendar_check(&store, &settings).await {
        warn!(error = %e, "calendar check failed");
    }
    let status = refresh(&store, &settings).await.unwrap_or_default();
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    info!(%status, "daemon ready: migrations applied, scheduler running");

    let tick = Duration::from_secs(settings.daemon.tick_secs.max(1));
    let settle_check = Duration::from_millis(500);
    let mut last_tick = tokio::time::Instant::now() - tick;
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = tokio::time::sleep(if opts.exit_when_done { settle_check } else { tick }) => {}
        }
        if last_tick.elapsed() >= tick {
            last_tick = tokio::time::Instant::now();
            // The live loop: the watchdog is fed only when the database answered.
            match refresh(&store, &settings).await {
                Ok(status) => notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]),
                Err(e) => {
                    warn!(error = %e, "the database does not answer; not feeding the watchdog")
                }
            }
            if let Some(m) = &metrics {
                m.run_upkeep();
            }
        }
        if opts.exit_when_done && all_settled(&store).await? {
            info!("every filing is settled; exiting");
            break;
        }
    }

    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    gateway.stop_claiming();
    health.set_scheduler_running(false);
    if let Err(e) = scheduler.shutdown().await {
        warn!(error = %e, "stopping the scheduler");
    }
    let grace = Duration::from_secs(settings.daemon.shutdown_grace_secs);
    let finished = tokio::time::timeout(grace, async {
        let mut guards = Vec::new();
        for b in &busy_locks {
            guards.push(b.clone().lock_owned().await);
        }
        guards
    })
    .await;
    match finished {
        Ok(_guards) => {
            // Nothing runs any more: claims that were never sent can be given back safely.
            release_all_unsent(&store).await;
            info!("jobs finished; stopped");
        }
        Err(_) => warn!(
            grace_secs = grace.as_secs(),
            "jobs still running after the grace; exiting (the next start reconciles their claims)"
        ),
    }
    if let Some(h) = http {
        h.abort();
    }
    lock.release().await;
    let report = total.lock().await.clone();
    Ok(report)
}

// ---- `once` ----

/// What `once` did: the cycle and the deadline risk after it.
#[derive(Debug, Default)]
pub struct OnceOutcome {
    pub report: CycleReport,
    pub risk: DeadlineRisk,
}

/// `once`: takes the work lock, runs one full cycle (intake, submit, poll), reconciles stale
/// claims, and reports what is overdue. SIGTERM stops claiming and lets the cycle finish.
pub async fn once(settings: Arc<Settings>, store: Store) -> anyhow::Result<OnceOutcome> {
    let shutdown = listen_for_signals()?;
    let lock = WorkLock::acquire(&store, &settings, "once").await?;
    let gateway = Arc::new(Gateway::new(
        store.clone(),
        settings.clone(),
        calendar(&settings),
    ));
    let stopper = {
        let gateway = gateway.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.recv().await;
            gateway.stop_claiming();
        })
    };
    let mut report = reconcile(&gateway, &settings).await;
    report.merge(gateway.cycle().await);
    if shutdown.is_shutdown() {
        release_all_unsent(&store).await;
    }
    stopper.abort();
    let risk = deadline_risk(&store, &settings).await?;
    lock.release().await;
    Ok(OnceOutcome { report, risk })
}
