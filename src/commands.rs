//! The commands behind the CLI: each takes the loaded settings and does one thing. `main.rs`
//! only parses arguments and calls one of these.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tracing::info;

use crate::admin;
use crate::bureau::sandbox::{self, Extensions, SandboxConfig, SandboxHandle};
use crate::config::{Secret, Settings};
use crate::daemon;
use crate::domain::import::parse_file;
use crate::store::admin::Revision;
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

pub use crate::config::redact_url;

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
    import_with(store, paths, false, "import").await
}

/// `import --revise PATH…`: corrected documents for known filings, each stored as the next
/// revision (allowed before the bureau has the filing, or after its case ended without
/// approval). Returns (revised, unchanged, failed filings).
pub async fn import_revised(
    store: &Store,
    paths: &[PathBuf],
    actor: &str,
) -> anyhow::Result<(usize, usize, usize)> {
    import_with(store, paths, true, actor).await
}

async fn import_with(
    store: &Store,
    paths: &[PathBuf],
    revise: bool,
    actor: &str,
) -> anyhow::Result<(usize, usize, usize)> {
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
            if revise {
                for f in &filings {
                    let r = store.revise(f, &admin::REVISABLE, actor).await?;
                    match admin::describe_revision(&f.id, &r) {
                        Ok(msg) => {
                            eprintln!("{}: {msg}", file.display());
                            if r == Revision::Unchanged {
                                unchanged += 1;
                            } else {
                                new += 1;
                            }
                        }
                        Err(msg) => {
                            eprintln!("error: {}: {msg}", file.display());
                            failed += 1;
                        }
                    }
                }
                continue;
            }
            match store.import(&filings, actor).await {
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
        answer_delay: Duration::from_millis(s.answer_delay_ms),
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
    // A local stand-in, not a bureau to be polite to: the README's first run stays ~15 s
    // instead of ~45 s at provinces.toml's rates. A separate `sandbox` process gets the
    // gateway's configured limits (tests/instances.rs runs that way).
    settings.bureau.rate_limits = false;
    settings.bureau.extensions = vec!["app".into(), "sms".into()];
    info!(address = %handle.local_addr(), "sandbox bureau started in-process");
    Ok(handle)
}

/// `resubmit` / `--resubmit`: the admin flag on each filing; a refusal names the filing, its
/// state and why.
pub async fn resubmit(
    store: &Store,
    ids: &[String],
    operator: &str,
    reason: &str,
) -> anyhow::Result<()> {
    for id in ids {
        let from = admin::resubmit(store, id, operator, reason).await?;
        eprintln!("{id}: marked for resubmission (was {from}); the next cycle sends a new attempt");
    }
    Ok(())
}

/// `status`: counts per state and province, at-risk and overdue lists.
pub async fn status(store: &Store, settings: &Settings, json: bool) -> anyhow::Result<()> {
    let counts = store.counts_by_state_province().await?;
    let risk = daemon::deadline_risk(store, settings).await?;
    let view = admin::status_view(
        &counts,
        settings.status.at_risk_hours,
        risk.at_risk,
        risk.overdue,
    );
    if json {
        println!("{}", serde_json::to_string(&view)?);
    } else {
        print!("{}", admin::render_status(&view));
    }
    Ok(())
}

/// `show ID`: the filing's timeline.
pub async fn show(store: &Store, id: &str, json: bool) -> anyhow::Result<()> {
    let Some(t) = store.timeline(id).await? else {
        bail!("no filing with id {id:?}");
    };
    if json {
        println!("{}", serde_json::to_string(&t)?);
    } else {
        print!("{}", admin::render_timeline(&t));
    }
    Ok(())
}

/// The official calendar from `calendar.dir` with the configured deadline policy. A directory
/// that cannot be read is an error-level log and plain weekdays, never a failed start.
pub fn load_calendar(settings: &Settings) -> crate::calendar::Calendar {
    let c = &settings.calendar;
    match crate::calendar::Calendar::load(&c.dir) {
        Ok(cal) => cal.with_policy(c.deadline_policy),
        Err(e) => {
            tracing::error!(error = %e, "calendar not loaded; counting Monday–Friday only until it is fixed");
            crate::calendar::Calendar::weekdays_only().with_policy(c.deadline_policy)
        }
    }
}

/// The coverage alarm: false (and an error-level log) when the calendar does not cover the
/// next `calendar.coverage_days` days from `today`.
pub fn calendar_covered(
    calendar: &crate::calendar::Calendar,
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
