//! `beian-gateway bench`: generates N reviewed filings, runs the real pipeline (import,
//! preflight, claim, build, upload, poll and write-back) against the sandbox bureau with rate
//! limits off, and measures beside it, in the same database and the same run, the raw limits:
//! the same state changes by plain batched SQL, and the same data files through the packaging
//! chain with nothing around it.
//!
//! The sandbox runs as a child process on loopback, so the peak RSS reported is the gateway's
//! alone. Filings are generated and imported in chunks and never held all at once.
//!
//! Owns: generating valid filings at scale and the bench report. Must not change what the
//! pipeline does: it only calls the gateway's public steps and reads its stage clock.

pub mod generate;
pub mod photo;
mod raw;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tracing::info;

use crate::config::Settings;
use crate::pipeline::{Gateway, Stage};
use crate::store::{Backend, Store};

pub use generate::Mix;

/// What `bench` was asked to do.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub n: usize,
    pub mix: Mix,
    /// Where the database (SQLite), photos and sandbox seed go; a fresh temporary directory
    /// when absent.
    pub dir: Option<PathBuf>,
    /// Keep the directory (and a PostgreSQL bench database) afterwards.
    pub keep: bool,
}

/// One stage's figures.
#[derive(Debug, Clone)]
pub struct StageFigure {
    pub name: &'static str,
    pub items: u64,
    pub calls: u64,
    pub busy: Duration,
    pub bytes: u64,
}

impl StageFigure {
    pub fn per_second(&self) -> f64 {
        rate(self.items as f64, self.busy)
    }
}

/// Everything `bench` measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub n: usize,
    pub mix: Mix,
    pub backend: Backend,
    pub bureaus: usize,
    pub import: Duration,
    pub stages: Vec<StageFigure>,
    /// From the first cycle until every filing was settled.
    pub end_to_end: Duration,
    pub cycles: usize,
    pub settled: i64,
    pub by_state: Vec<(String, i64)>,
    pub data_bytes: u64,
    pub files: u64,
    pub raw_db: Duration,
    pub raw_packaging: Duration,
    pub raw_packaging_bytes: u64,
    pub peak_rss_kib: Option<u64>,
    pub sandbox_peak_rss_kib: Option<u64>,
    pub db_bytes: Option<u64>,
    /// SQLite: how long the process's write turn was held during the end-to-end run, in how
    /// many turns (one writer at a time: the floor under the end-to-end time).
    pub write_turn: Option<(Duration, u64)>,
}

fn rate(items: f64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        items / d.as_secs_f64()
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

impl BenchReport {
    pub fn end_to_end_per_second(&self) -> f64 {
        rate(self.n as f64, self.end_to_end)
    }

    pub fn raw_db_per_second(&self) -> f64 {
        rate(self.n as f64, self.raw_db)
    }

    pub fn raw_packaging_mb_per_second(&self) -> f64 {
        rate(mb(self.raw_packaging_bytes), self.raw_packaging)
    }

    /// The report as printed.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let store = match self.backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        };
        let _ = writeln!(
            o,
            "bench: {} filings, mix {}, {store}, {} bureaus, sandbox on loopback, rate limits off",
            self.n,
            self.mix.name(),
            self.bureaus
        );
        let _ = writeln!(
            o,
            "  {:<16} {:>9} {:>8} {:>10} {:>12} {:>9}",
            "stage", "filings", "calls", "busy s", "filings/s", "MB/s"
        );
        let _ = writeln!(
            o,
            "  {:<16} {:>9} {:>8} {:>10.2} {:>12.0} {:>9}",
            "import",
            self.n,
            "",
            self.import.as_secs_f64(),
            rate(self.n as f64, self.import),
            ""
        );
        for s in &self.stages {
            let mbs = if s.bytes > 0 {
                format!("{:.1}", rate(mb(s.bytes), s.busy))
            } else {
                String::new()
            };
            let items = if s.name == Stage::Package.name() || s.name == Stage::Poll.name() {
                String::new()
            } else {
                s.items.to_string()
            };
            let per_s = if items.is_empty() {
                String::new()
            } else {
                format!("{:.0}", s.per_second())
            };
            let _ = writeln!(
                o,
                "  {:<16} {:>9} {:>8} {:>10.2} {:>12} {:>9}",
                s.name,
                items,
                s.calls,
                s.busy.as_secs_f64(),
                per_s,
                mbs
            );
        }
        let per_claim = self
            .stages
            .iter()
            .find(|s| s.name == Stage::Claim.name())
            .filter(|s| s.calls > 0)
            .map(|s| s.busy.as_secs_f64() * 1000.0 / s.calls as f64);
        let per_poll = self
            .stages
            .iter()
            .find(|s| s.name == Stage::Poll.name())
            .filter(|s| s.calls > 0)
            .map(|s| s.busy.as_secs_f64() * 1000.0 / s.calls as f64);
        let _ = writeln!(
            o,
            "  busy time is summed over bureaus working at once; claim {:.1} ms per file, poll {:.1} ms per bureau poll",
            per_claim.unwrap_or(0.0),
            per_poll.unwrap_or(0.0)
        );
        let e2e = self.end_to_end_per_second();
        let raw_db = self.raw_db_per_second();
        let e2e_mb = rate(mb(self.data_bytes), self.end_to_end);
        let raw_pack = self.raw_packaging_mb_per_second();
        let _ = writeln!(
            o,
            "  end to end      {:>9} filings in {:.2} s over {} cycles: {:.0} filings/s, {} files, {:.1} MB of data files ({:.1} MB/s)",
            self.settled,
            self.end_to_end.as_secs_f64(),
            self.cycles,
            e2e,
            self.files,
            mb(self.data_bytes),
            e2e_mb
        );
        let states: Vec<String> = self
            .by_state
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        let _ = writeln!(o, "  outcomes        {}", states.join(", "));
        let _ = writeln!(
            o,
            "  raw database    {:.0} filings/s (plain batched SQL: claim, file insert, submitted, decided)   end to end ÷ raw = {:.2}",
            raw_db,
            if raw_db > 0.0 { e2e / raw_db } else { 0.0 }
        );
        let _ = writeln!(
            o,
            "  raw packaging   {:.1} MB/s (zip, MD5, AES, base64 of the same data files)   end to end ÷ raw = {:.2}",
            raw_pack,
            if raw_pack > 0.0 {
                e2e_mb / raw_pack
            } else {
                0.0
            }
        );
        if let Some(p) = self
            .stages
            .iter()
            .find(|s| s.name == Stage::Package.name())
            .filter(|s| !s.busy.is_zero() && raw_pack > 0.0)
        {
            let _ = writeln!(
                o,
                "  packaging in the pipeline {:.1} MB/s ÷ raw = {:.2}",
                rate(mb(p.bytes), p.busy),
                rate(mb(p.bytes), p.busy) / raw_pack
            );
        }
        if let Some((held, turns)) = self.write_turn {
            let _ = writeln!(
                o,
                "  write turn      held {:.2} s of the {:.2} s end to end ({:.0}%), {} transactions and writes (SQLite has one writer)",
                held.as_secs_f64(),
                self.end_to_end.as_secs_f64(),
                100.0 * held.as_secs_f64() / self.end_to_end.as_secs_f64().max(1e-9),
                turns
            );
        }
        let kib = |k: Option<u64>| k.map_or("n/a".to_owned(), |k| format!("{} MB", k / 1024));
        let _ = writeln!(
            o,
            "  peak RSS        gateway {} (sandbox process {}); database {}",
            kib(self.peak_rss_kib),
            kib(self.sandbox_peak_rss_kib),
            self.db_bytes
                .map_or("n/a".to_owned(), |b| format!("{:.1} MB", mb(b)))
        );
        o
    }
}

/// A sandbox bureau in a child process (`beian-gateway sandbox`), killed on drop.
struct ChildSandbox {
    child: std::process::Child,
    addr: String,
}

impl ChildSandbox {
    fn start(settings: &Settings, seed: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let exe = std::env::current_exe().context("locating the beian-gateway binary")?;
        let b = &settings.bureau;
        let child = std::process::Command::new(exe)
            .args(["sandbox", "--listen", &addr])
            .env("BEIAN__SANDBOX__SEED", seed)
            .env("BEIAN__SANDBOX__DECISION_DELAY_MS", "0")
            .env("BEIAN__SANDBOX__SMS_CONFIRM_DELAY_MS", "0")
            .env("BEIAN__BUREAU__ISP_ID", b.isp_id.to_string())
            .env("BEIAN__BUREAU__USER", &b.user)
            .env("BEIAN__BUREAU__PASSWORD", b.password.expose())
            .env("BEIAN__BUREAU__AES_KEY", b.aes_key.expose())
            .env("BEIAN__BUREAU__AES_IV", b.aes_iv.expose())
            .env("BEIAN__DAEMON__ADMIN_LISTEN", "")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting the sandbox bureau")?;
        let mut sandbox = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(&sandbox.addr).is_ok() {
                return Ok(sandbox);
            }
            if let Some(status) = sandbox.child.try_wait()? {
                bail!("the sandbox bureau exited at start ({status})");
            }
            if Instant::now() > deadline {
                bail!(
                    "the sandbox bureau did not listen on {} in 60 s",
                    sandbox.addr
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(&format!("/proc/{}/status", self.child.id()))
    }
}

impl Drop for ChildSandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmHWM (peak resident set) from a /proc status file, in KiB.
fn peak_rss_kib(status_file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs the bench and returns its report (printing is the caller's).
pub async fn run(mut settings: Settings, opts: BenchOptions) -> anyhow::Result<BenchReport> {
    if opts.n == 0 {
        bail!("--n must be at least 1");
    }
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("beian-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run_in(&mut settings, &opts, &dir).await;
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_in(
    settings: &mut Settings,
    opts: &BenchOptions,
    dir: &Path,
) -> anyhow::Result<BenchReport> {
    crate::commands::with_sandbox_credentials(settings);
    let provinces: Vec<crate::provinces::Province> = settings.provinces.iter().cloned().collect();
    let generator = generate::Generator::new(opts.mix, dir, &provinces)?;
    info!(dir = %dir.display(), "writing the sandbox seed");
    let seed = generator.write_seed(opts.n)?;
    let sandbox = ChildSandbox::start(settings, &seed)?;
    settings.bureau.url = format!("http://{}/{{province}}", sandbox.addr);
    settings.bureau.provinces.clear();
    settings.bureau.extensions = vec!["app".into(), "sms".into()];
    settings.bureau.rate_limits = false;
    settings.provinces.clear_business_hours();
    settings.attachments.dir = generator.attachments_dir();
    settings.daemon.admin_listen = String::new();

    let (database_url, pg_database) = bench_database(settings, dir).await?;
    settings.database.url = database_url;
    let store = crate::commands::open_store(settings).await?;
    let backend = store.backend();
    let result = run_gateway(settings, opts, &generator, &store, backend).await;
    store.pool().close().await;
    let mut report = result?;
    report.db_bytes = match &pg_database {
        None => Some(sqlite_size(&settings.database.url)),
        Some(_) => None,
    };
    if let Some((admin_url, name)) = pg_database {
        report.db_bytes = pg_size(&admin_url, &name).await.ok();
        if !opts.keep {
            drop_pg_database(&admin_url, &name).await;
        }
    }
    report.sandbox_peak_rss_kib = sandbox.peak_rss_kib();
    drop(sandbox);
    Ok(report)
}

async fn run_gateway(
    settings: &Settings,
    opts: &BenchOptions,
    generator: &generate::Generator,
    store: &Store,
    backend: Backend,
) -> anyhow::Result<BenchReport> {
    // Import, in chunks: the generator never holds more than a chunk.
    let started = Instant::now();
    let mut imported = 0;
    for chunk in generator.chunks(opts.n, 2000) {
        let filings = chunk?;
        let summary = store.import(&filings, "bench").await?;
        imported += summary.new;
    }
    let import = started.elapsed();
    if imported != opts.n {
        bail!(
            "imported {imported} of {} generated filings; a fresh database was expected",
            opts.n
        );
    }
    info!(filings = imported, secs = import.as_secs_f64(), "imported");

    let settings = Arc::new(settings.clone());
    let calendar = crate::commands::load_calendar(&settings);
    let gateway = Arc::new(Gateway::new(store.clone(), settings.clone(), calendar));
    let turns_before = store.write_turns().read();
    let started = Instant::now();
    let mut cycles = 0;
    let mut last_progress = (Instant::now(), 0i64);
    let (settled, by_state) = loop {
        let report = gateway.cycle().await;
        cycles += 1;
        for e in &report.errors {
            tracing::warn!(error = %e, "cycle error");
        }
        let counts = store.counts().await?;
        let settled: i64 = counts
            .iter()
            .filter(|(s, _)| {
                crate::store::state::is_terminal(s) || s.as_str() == "needs_correction"
            })
            .map(|(_, n)| n)
            .sum();
        if settled as usize >= opts.n {
            break (settled, counts.into_iter().collect::<Vec<_>>());
        }
        if settled > last_progress.1 {
            last_progress = (Instant::now(), settled);
        } else if last_progress.0.elapsed() > Duration::from_secs(120) {
            bail!(
                "no filing settled for 120 s ({settled} of {} settled): {counts:?}",
                opts.n
            );
        }
        if report.files_sent == 0 && report.downloads_applied == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let end_to_end = started.elapsed();
    let turns_after = store.write_turns().read();
    let write_turn = (backend == Backend::Sqlite).then(|| {
        (
            turns_after.0.saturating_sub(turns_before.0),
            turns_after.1 - turns_before.1,
        )
    });

    let clock = gateway.clock();
    let stages: Vec<StageFigure> = Stage::ALL
        .iter()
        .map(|s| {
            let r = clock.read(*s);
            StageFigure {
                name: s.name(),
                items: r.items,
                calls: r.calls,
                busy: r.busy,
                bytes: r.bytes,
            }
        })
        .collect();
    let build = clock.read(Stage::Build);
    let package = clock.read(Stage::Package);
    drop(gateway);

    info!("measuring the raw database limit");
    let raw_db = raw::database(store, backend, opts.n, settings.as_ref()).await?;
    info!("measuring the raw packaging limit");
    let (raw_packaging, raw_packaging_bytes) = raw::packaging(store, settings.as_ref()).await?;
    Ok(BenchReport {
        n: opts.n,
        mix: opts.mix,
        backend,
        bureaus: settings.provinces.len(),
        import,
        stages,
        end_to_end,
        cycles,
        settled,
        by_state,
        data_bytes: package.bytes,
        files: build.calls,
        raw_db,
        raw_packaging,
        raw_packaging_bytes,
        peak_rss_kib: peak_rss_kib("/proc/self/status"),
        sandbox_peak_rss_kib: None,
        db_bytes: None,
        write_turn,
    })
}

/// The bench's own database: a SQLite file in the bench directory, or a fresh database beside
/// the one `database.url` names when that is PostgreSQL. Returns (url, Some((admin url, name))
/// for PostgreSQL).
async fn bench_database(
    settings: &Settings,
    dir: &Path,
) -> anyhow::Result<(String, Option<(String, String)>)> {
    let url = settings.database.url.clone();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        let file = dir.join("bench.db");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
        return Ok((format!("sqlite:{}", file.display()), None));
    }
    use sqlx::Connection;
    let name = format!("beian_bench_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .with_context(|| format!("connecting to {}", crate::config::redact_url(&url)))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok((replace_database(&url, &name), Some((url, name))))
}

/// `postgres://u@h:p/db?x` with the database replaced.
fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = &base[scheme_end..];
    let prefix = match host_part.find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

async fn pg_size(admin_url: &str, name: &str) -> anyhow::Result<u64> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    let size: i64 = sqlx::query_scalar("SELECT pg_database_size($1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    Ok(size.max(0) as u64)
}

async fn drop_pg_database(admin_url: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

fn sqlite_size(url: &str) -> u64 {
    let file = url.trim_start_matches("sqlite:");
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{file}{s}")).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_in_a_postgres_url_is_replaced() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/test", "b1"),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            replace_database("postgres://u:p@h/test?sslmode=disable", "b1"),
            "postgres://u:p@h/b1?sslmode=disable"
        );
        assert_eq!(
            replace_database("postgres://h:5432", "b1"),
            "postgres://h:5432/b1"
        );
    }

    #[test]
    fn peak_rss_reads_vmhwm() {
        assert!(peak_rss_kib("/proc/self/status").is_some_and(|k| k > 0));
        assert_eq!(peak_rss_kib("/nonexistent/status"), None);
    }
}
