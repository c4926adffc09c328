//! The commands behind the CLI: each takes the loaded settings and does one thing. `main.rs`
//! only parses arguments and calls one of these.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{info, warn};

use crate::bureau::sandbox::{self, Extensions, SandboxConfig, SandboxHandle};
use crate::calendar::Calendar;
use crate::config::{Secret, Settings};
use crate::domain::import::parse_file;
use crate::pipeline::{CycleReport, Gateway};
use crate::store::{self, Store};

/// Credentials the bundled sandbox uses when the configuration leaves them empty.
const SANDBOX_PASSWORD: &str = "sandbox-password";
const SANDBOX_AES_KEY: &str = "0123456789abcdef";
const SANDBOX_AES_IV: &str = "fedcba9876543210";

pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::open(&settings.database.url, settings.database.max_connections)
        .await
        .with_context(|| {
            format!(
                "opening the database {}",
                redact_url(&settings.database.url)
            )
        })
}

/// A database URL without its password, for messages.
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

/// The files an import path names: a file, or every `*.json`/`*.jsonl` in a directory.
fn import_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("json" | "jsonl")
                )
            })
            .collect();
        files.sort();
        Ok(files)
    } else {
        Ok(vec![path.to_owned()])
    }
}

/// `import PATH…`: each file all or nothing. Returns (new, unchanged, failed files).
pub async fn import(store: &Store, paths: &[PathBuf]) -> anyhow::Result<(usize, usize, usize)> {
    let (mut new, mut unchanged, mut failed) = (0, 0, 0);
    for path in paths {
        for file in import_files(path)? {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    failed += 1;
                    continue;
                }
            };
            let filings = match parse_file(&file, &text) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("error: {e} (nothing imported from this file)");
                    failed += 1;
                    continue;
                }
            };
            match store.import(&filings, "import").await {
                Ok(s) => {
                    new += s.new;
                    unchanged += s.unchanged;
                }
                Err(e) => {
                    eprintln!(
                        "error: {}: {e} (nothing imported from this file)",
                        file.display()
                    );
                    failed += 1;
                }
            }
        }
    }
    Ok((new, unchanged, failed))
}

/// `export`: JSON Lines on standard output.
pub async fn export(
    store: &Store,
    id: Option<&str>,
    state: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(s) = state
        && !store::state::ALL.contains(&s)
    {
        bail!(
            "unknown state {s:?}; one of: {}",
            store::state::ALL.join(", ")
        );
    }
    let outcomes = store.export(id, state).await?;
    if id.is_some() && outcomes.is_empty() {
        bail!("no filing with id {:?}", id.unwrap_or_default());
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for o in &outcomes {
        if json {
            writeln!(out, "{}", serde_json::to_string(o)?)?;
        } else {
            let numbers: Vec<String> = o
                .subject_record_number
                .iter()
                .cloned()
                .chain(
                    o.site_record_numbers
                        .iter()
                        .map(|s| format!("{} {}", s.domain, s.number)),
                )
                .chain(
                    o.app_record_numbers
                        .iter()
                        .map(|a| format!("{} {}", a.package_name, a.number)),
                )
                .collect();
            let reasons: Vec<String> = o
                .reasons
                .iter()
                .map(|r| format!("{} {}", r.code, r.message))
                .collect();
            writeln!(
                out,
                "{:<16} {:<16} attempts={} {}{}",
                o.id,
                o.state,
                o.attempts,
                numbers.join(", "),
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!(" reasons: {}", reasons.join("; "))
                }
            )?;
        }
    }
    Ok(())
}

fn sandbox_config(settings: &Settings) -> SandboxConfig {
    let b = &settings.bureau;
    let s = &settings.sandbox;
    SandboxConfig {
        isp_id: b.isp_id,
        user_name: b.user.clone(),
        password: b.password.expose().to_owned(),
        aes_key: b.aes_key.expose().to_owned(),
        aes_iv: b.aes_iv.expose().to_owned(),
        soap_namespace: b.soap_namespace.clone(),
        extensions: Extensions {
            app: true,
            sms: true,
        },
        decision_delay: Duration::from_millis(s.decision_delay_ms),
        sms_time_factor: s.sms_time_factor,
        sms_confirm_delay: Duration::from_millis(s.sms_confirm_delay_ms),
        seed_path: s.seed.clone(),
        ..SandboxConfig::default()
    }
}

/// Fills empty credentials with the sandbox's, so the sandbox works with no configuration.
pub fn with_sandbox_credentials(settings: &mut Settings) {
    let b = &mut settings.bureau;
    if b.password.is_empty() {
        b.password = Secret::new(SANDBOX_PASSWORD);
    }
    if b.aes_key.is_empty() {
        b.aes_key = Secret::new(SANDBOX_AES_KEY);
    }
    if b.aes_iv.is_empty() {
        b.aes_iv = Secret::new(SANDBOX_AES_IV);
    }
}

/// `sandbox --listen ADDR`: serve the sandbox bureau until interrupted.
pub async fn serve_sandbox(mut settings: Settings, listen: &str) -> anyhow::Result<()> {
    with_sandbox_credentials(&mut settings);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let handle = sandbox::start(listener, sandbox_config(&settings)).await?;
    info!(address = %handle.local_addr(), "sandbox bureau listening; base URL http://{}/{{province}}", handle.local_addr());
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}

/// Starts the in-process sandbox and points the bureau settings at it.
pub async fn start_sandbox_for(settings: &mut Settings) -> anyhow::Result<SandboxHandle> {
    with_sandbox_credentials(settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let handle = sandbox::start(listener, sandbox_config(settings)).await?;
    settings.bureau.url = format!("http://{}/{{province}}", handle.local_addr());
    settings.bureau.provinces.clear();
    settings.bureau.extensions = vec!["app".into(), "sms".into()];
    info!(address = %handle.local_addr(), "sandbox bureau started in-process");
    Ok(handle)
}

/// Whether every filing is in a state that waits for a person.
async fn all_settled(store: &Store) -> anyhow::Result<bool> {
    let counts = store.counts().await?;
    Ok(counts.iter().all(|(state, n)| {
        *n == 0 || store::state::is_terminal(state) || state == store::state::HELD
    }))
}

pub struct RunOptions {
    pub exit_when_done: bool,
    pub fast: bool,
}

/// `run`: the daemon. Schedules from config; a job still running is not started twice.
pub async fn run(
    settings: Arc<Settings>,
    store: Store,
    opts: RunOptions,
) -> anyhow::Result<CycleReport> {
    let calendar = load_calendar(&settings);
    calendar_covered(&calendar, &settings, store::now().date_naive());
    let gateway = Arc::new(Gateway::new(
        store.clone(),
        settings.clone(),
        calendar.clone(),
    ));
    let (submit_cron, poll_cron) = if opts.fast {
        ("*/1 * * * * *".to_owned(), "*/1 * * * * *".to_owned())
    } else {
        (
            settings.schedule.submit.clone(),
            settings.schedule.poll.clone(),
        )
    };
    let mut scheduler = JobScheduler::new().await?;
    let total = Arc::new(tokio::sync::Mutex::new(CycleReport::default()));
    for (name, cron, poll) in [
        ("schedule.submit", submit_cron, false),
        ("schedule.poll", poll_cron, true),
    ] {
        let gw = gateway.clone();
        let busy = Arc::new(tokio::sync::Mutex::new(()));
        let total = total.clone();
        let job = Job::new_async_tz(cron.as_str(), chrono_tz::Asia::Shanghai, move |_, _| {
            let gw = gw.clone();
            let busy = busy.clone();
            let total = total.clone();
            Box::pin(async move {
                let Ok(_running) = busy.try_lock() else {
                    return; // the previous run of this job is still going
                };
                let report = if poll {
                    gw.poll_all().await
                } else {
                    let mut r = match gw.intake().await {
                        Ok(r) => r,
                        Err(e) => CycleReport {
                            errors: vec![e.to_string()],
                            ..Default::default()
                        },
                    };
                    r.merge(gw.submit_all().await);
                    r
                };
                for e in &report.errors {
                    warn!(error = %e, "cycle error");
                }
                total.lock().await.merge(report);
            })
        })
        .with_context(|| format!("configuration key {name}: invalid cron expression {cron:?}"))?;
        scheduler.add(job).await?;
    }
    // The calendar coverage alarm, daily at 08:00, and the at-risk / overdue report with it.
    {
        let settings = settings.clone();
        let store = store.clone();
        let job = Job::new_async_tz("0 0 8 * * *", chrono_tz::Asia::Shanghai, move |_, _| {
            let calendar = calendar.clone();
            let settings = settings.clone();
            let store = store.clone();
            Box::pin(async move {
                calendar_covered(&calendar, &settings, store::now().date_naive());
                if let Err(e) = log_deadlines(&store, &settings).await {
                    warn!(error = %e, "deadline report failed");
                }
            })
        })
        .context("the daily calendar check")?;
        scheduler.add(job).await?;
    }
    scheduler.start().await?;
    info!("scheduler started");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                info!("interrupted; stopping");
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if opts.exit_when_done && all_settled(&store).await? {
                    info!("every filing is settled; exiting");
                    break;
                }
            }
        }
    }
    scheduler.shutdown().await?;
    gateway.release_leases().await?;
    let report = total.lock().await.clone();
    Ok(report)
}

/// `once`: one full cycle (intake, submit, poll), then return its report.
pub async fn once(settings: Arc<Settings>, store: Store) -> CycleReport {
    let calendar = load_calendar(&settings);
    calendar_covered(&calendar, &settings, store::now().date_naive());
    let gateway = Gateway::new(store, settings, calendar);
    gateway.cycle().await
}

/// The official calendar from `calendar.dir` with the configured deadline policy. A directory
/// that cannot be read is an error-level log and plain weekdays, never a failed start.
pub fn load_calendar(settings: &Settings) -> Calendar {
    let c = &settings.calendar;
    match Calendar::load(&c.dir) {
        Ok(cal) => cal.with_policy(c.deadline_policy),
        Err(e) => {
            tracing::error!(error = %e, "calendar not loaded; counting Monday–Friday only until it is fixed");
            Calendar::weekdays_only().with_policy(c.deadline_policy)
        }
    }
}

/// The coverage alarm: false (and an error-level log) when the calendar does not cover the
/// next `calendar.coverage_days` days from `today`.
pub fn calendar_covered(
    calendar: &Calendar,
    settings: &Settings,
    today: chrono::NaiveDate,
) -> bool {
    let days = settings.calendar.coverage_days;
    match calendar.first_uncovered(today, days) {
        None => true,
        Some(day) => {
            tracing::error!(
                first_uncovered = %day,
                coverage_days = days,
                dir = %settings.calendar.dir.display(),
                "the official calendar does not cover the coming days: add the State Council notice for {}; until then those days count as plain weekdays/weekends",
                chrono::Datelike::year(&day)
            );
            false
        }
    }
}

/// Filings at risk (due within `calendar.at_risk_minutes`) and overdue, not yet submitted.
async fn due_filings(
    store: &Store,
    settings: &Settings,
) -> anyhow::Result<(
    Vec<store::deadlines::DueFiling>,
    Vec<store::deadlines::DueFiling>,
)> {
    let now = store::now();
    let until = now + chrono::Duration::minutes(settings.calendar.at_risk_minutes);
    Ok((store.at_risk(now, until).await?, store.overdue(now).await?))
}

async fn log_deadlines(store: &Store, settings: &Settings) -> anyhow::Result<()> {
    let (at_risk, overdue) = due_filings(store, settings).await?;
    for f in &overdue {
        warn!(filing = %f.id, province = %f.province, deadline = %f.deadline, "overdue");
    }
    for f in &at_risk {
        warn!(filing = %f.id, province = %f.province, deadline = %f.deadline, "at risk");
    }
    Ok(())
}

/// `status`: counts per state, then the filings at risk and overdue, then calendar coverage.
pub async fn status(store: &Store, settings: &Settings) -> anyhow::Result<()> {
    for (state, n) in store.counts().await? {
        println!("{state:<18} {n}");
    }
    let (at_risk, overdue) = due_filings(store, settings).await?;
    let list = |v: &[store::deadlines::DueFiling]| {
        v.iter()
            .map(|f| format!("{} ({} {}, due {})", f.id, f.province, f.state, f.deadline))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "at risk (due within {} min): {} {}",
        settings.calendar.at_risk_minutes,
        at_risk.len(),
        list(&at_risk)
    );
    println!("overdue: {} {}", overdue.len(), list(&overdue));
    let calendar = load_calendar(settings);
    let covered = calendar_covered(&calendar, settings, store::now().date_naive());
    let years: Vec<String> = calendar.years().map(|y| y.to_string()).collect();
    println!(
        "calendar: {} ({}), next {} days {}",
        years.join(", "),
        settings.calendar.dir.display(),
        settings.calendar.coverage_days,
        if covered { "covered" } else { "NOT covered" }
    );
    Ok(())
}
