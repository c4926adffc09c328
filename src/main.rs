//! The command line only: parse, load configuration, call one command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use beian_gateway::config::Settings;
use beian_gateway::telemetry::{self, LogFormat};
use beian_gateway::{admin, commands, daemon};

#[derive(Parser)]
#[command(
    name = "beian-gateway",
    version,
    about = "Submits reviewed ICP filings to the provincial bureaus (MIIT enterprise interface V3.0)"
)]
struct Cli {
    /// A configuration file layered over config/default.toml.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Overrides database.url (sqlite:PATH or postgres://…).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Log format on standard error (auto: human on a terminal, JSON otherwise).
    #[arg(long, global = true, value_enum, default_value = "auto")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Who did an admin action: `--operator`, else $BEIAN_OPERATOR, $SUDO_USER or $USER.
#[derive(clap::Args, Clone)]
struct Actor {
    /// Why (recorded in the filing's events).
    #[arg(long)]
    reason: String,
    /// Who (recorded in the filing's events).
    #[arg(long)]
    operator: Option<String>,
}

impl Actor {
    fn operator(&self) -> String {
        self.operator
            .clone()
            .or_else(|| {
                ["BEIAN_OPERATOR", "SUDO_USER", "USER"]
                    .iter()
                    .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
            })
            .unwrap_or_else(|| "admin".into())
    }
}

/// `run --resubmit ID… --reason TEXT` / `once --resubmit …`: the admin flag before starting.
#[derive(clap::Args, Clone)]
struct ResubmitFirst {
    /// Mark these filings for resubmission first (needs --reason).
    #[arg(long, value_name = "ID", num_args = 1.., requires = "reason")]
    resubmit: Vec<String>,
    /// Why (with --resubmit).
    #[arg(long)]
    reason: Option<String>,
    /// Who (with --resubmit).
    #[arg(long)]
    operator: Option<String>,
}

impl ResubmitFirst {
    async fn apply(self, store: &beian_gateway::store::Store) -> anyhow::Result<()> {
        if self.resubmit.is_empty() {
            return Ok(());
        }
        let actor = Actor {
            reason: self.reason.unwrap_or_default(),
            operator: self.operator,
        };
        commands::resubmit(store, &self.resubmit, &actor.operator(), &actor.reason).await
    }
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: every job on its schedule until SIGTERM/SIGINT (systemd Type=notify).
    Run {
        /// Start the bundled sandbox bureau in-process and use it (fresh database var/sandbox.db).
        #[arg(long)]
        sandbox: bool,
        /// Import these filing files or directories first.
        #[arg(long = "import", value_name = "PATH")]
        import: Vec<PathBuf>,
        /// Exit once every filing is settled (approved, rejected, expired, needs_correction, held).
        #[arg(long)]
        exit_when_done: bool,
        #[command(flatten)]
        resubmit: ResubmitFirst,
    },
    /// One full cycle (intake, submit, poll, write-back), then exit: 0 fine, 1 errors,
    /// 2 something overdue, 3 configuration error. For cron.
    Once {
        #[arg(long)]
        sandbox: bool,
        #[arg(long = "import", value_name = "PATH")]
        import: Vec<PathBuf>,
        #[command(flatten)]
        resubmit: ResubmitFirst,
    },
    /// Import reviewed filings (files holding an object, an array or JSON Lines; directories).
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Corrected documents of known filings: each becomes the filing's next revision.
        #[arg(long)]
        revise: bool,
        /// Who revised (with --revise; recorded in the events).
        #[arg(long)]
        operator: Option<String>,
    },
    /// Print filing outcomes (JSON Lines with --json).
    Export {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        state: Option<String>,
    },
    /// Counts per state and province, filings at risk and overdue.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// A filing's timeline: events, attempts, upload files, downloads and results.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Mark a rejected, expired or corrected filing for resubmission (a new attempt).
    Resubmit {
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        actor: Actor,
    },
    /// Keep a filing from being submitted (only before the bureau has it).
    Hold {
        id: String,
        #[command(flatten)]
        actor: Actor,
    },
    /// Let a held filing be submitted again.
    Release {
        id: String,
        #[command(flatten)]
        actor: Actor,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Serve the sandbox bureau.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8990")]
        listen: String,
    },
    /// Benchmark: generate N reviewed filings, run the real pipeline against a sandbox bureau
    /// (rate limits off) and report per-stage throughput beside the raw database and packaging
    /// limits. Uses a fresh SQLite file, or a fresh database beside --database-url postgres://….
    Bench {
        /// How many filings.
        #[arg(long, default_value_t = 100_000)]
        n: usize,
        #[arg(long, value_enum, default_value = "records")]
        mix: beian_gateway::bench::Mix,
        /// Work directory (default: a fresh one under the system's temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the work directory and the bench database afterwards.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print it (secrets redacted); exit 3 when invalid.
    Check,
}

const EXIT_ERRORS: u8 = 1;
const EXIT_OVERDUE: u8 = 2;
const EXIT_CONFIG: u8 = 3;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_ERRORS);
        }
    };
    runtime.block_on(async {
        let cli = Cli::parse();
        telemetry::init(cli.log_format);
        match real_main(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_ERRORS)
            }
        }
    })
}

/// glibc gives threads that allocate at once their own malloc arenas (up to 8 per core), and
/// memory freed in one arena is not reused by another. With the runtime's, SQLite's and the
/// preflight's threads, `bench --n 100 --mix attachments` peaked at 235 MB; with two arenas at
/// 161 MB, in the same time (issue 10: under 200 MB). `MALLOC_ARENA_MAX` in the environment
/// still decides when it is set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter, and no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    if let Some(url) = cli.database_url {
        settings.database.url = url;
    }
    match cli.command {
        Command::Run {
            sandbox,
            import,
            exit_when_done,
            resubmit,
        } => {
            let _sandbox = if sandbox {
                fresh_sandbox_db(&mut settings)?;
                Some(commands::start_sandbox_for(&mut settings).await?)
            } else {
                None
            };
            let store = commands::open_store(&settings).await?;
            if !import.is_empty() {
                let (new, unchanged, failed) = commands::import(&store, &import).await?;
                eprintln!("imported {new} filings ({unchanged} unchanged, {failed} files refused)");
            }
            resubmit.apply(&store).await?;
            let report = daemon::run(
                Arc::new(settings),
                store.clone(),
                daemon::RunOptions {
                    exit_when_done,
                    fast: sandbox,
                },
            )
            .await?;
            if exit_when_done {
                commands::export(&store, None, None, false).await?;
            }
            // A daemon's job errors are logged, counted (beian_errors_total) and retried by
            // the next tick; a graceful stop is a success whatever happened before it.
            eprintln!(
                "run: files sent {}, filings sent {}, downloads applied {}, job errors {}",
                report.files_sent,
                report.filings_sent,
                report.downloads_applied,
                report.errors.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Once {
            sandbox,
            import,
            resubmit,
        } => {
            let _sandbox = if sandbox {
                fresh_sandbox_db(&mut settings)?;
                Some(commands::start_sandbox_for(&mut settings).await?)
            } else {
                None
            };
            let store = commands::open_store(&settings).await?;
            if !import.is_empty() {
                commands::import(&store, &import).await?;
            }
            resubmit.apply(&store).await?;
            let outcome = daemon::once(Arc::new(settings), store).await?;
            let report = &outcome.report;
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            for o in &outcome.risk.overdue {
                eprintln!(
                    "overdue: {} ({}, {}) was due {}",
                    o.id, o.province, o.state, o.deadline
                );
            }
            eprintln!(
                "once: queued {}, needs correction {}, files sent {}, filings sent {}, downloads applied {}, errors {}, overdue {}, at risk {}",
                report.queued,
                report.needs_correction,
                report.files_sent,
                report.filings_sent,
                report.downloads_applied,
                report.errors.len(),
                outcome.risk.overdue.len(),
                outcome.risk.at_risk.len()
            );
            Ok(if !outcome.risk.overdue.is_empty() {
                ExitCode::from(EXIT_OVERDUE)
            } else if !report.errors.is_empty() {
                ExitCode::from(EXIT_ERRORS)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Import {
            paths,
            revise,
            operator,
        } => {
            let store = commands::open_store(&settings).await?;
            let (new, unchanged, failed) = if revise {
                let actor = Actor {
                    reason: String::new(),
                    operator,
                }
                .operator();
                let (revised, unchanged, failed) =
                    commands::import_revised(&store, &paths, &actor).await?;
                eprintln!("revised {revised} filings ({unchanged} unchanged, {failed} refused)");
                (revised, unchanged, failed)
            } else {
                let r = commands::import(&store, &paths).await?;
                eprintln!(
                    "imported {} filings ({} unchanged, {} files refused)",
                    r.0, r.1, r.2
                );
                r
            };
            let _ = (new, unchanged);
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_ERRORS)
            })
        }
        Command::Export { json, id, state } => {
            let store = commands::open_store(&settings).await?;
            commands::export(&store, id.as_deref(), state.as_deref(), json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            let store = commands::open_store(&settings).await?;
            commands::status(&store, &settings, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, json } => {
            let store = commands::open_store(&settings).await?;
            commands::show(&store, &id, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Resubmit { ids, actor } => {
            let store = commands::open_store(&settings).await?;
            commands::resubmit(&store, &ids, &actor.operator(), &actor.reason).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Hold { id, actor } => {
            let store = commands::open_store(&settings).await?;
            let from = admin::hold(&store, &id, &actor.operator(), &actor.reason).await?;
            eprintln!("{id}: held (was {from})");
            Ok(ExitCode::SUCCESS)
        }
        Command::Release { id, actor } => {
            let store = commands::open_store(&settings).await?;
            admin::release(&store, &id, &actor.operator(), &actor.reason).await?;
            eprintln!("{id}: released; intake queues it again");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            // Settings::load validated everything already (an invalid one exits 3 above).
            println!("{}", settings.redacted_json());
            eprintln!("configuration is valid");
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox { listen } => {
            commands::serve_sandbox(settings, &listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { n, mix, dir, keep } => {
            let opts = beian_gateway::bench::BenchOptions { n, mix, dir, keep };
            let report = beian_gateway::bench::run(settings, opts).await?;
            print!("{}", report.render());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The in-process sandbox keeps its state in memory, so a sandbox run starts from a fresh
/// database (var/sandbox.db) unless --database-url names another.
fn fresh_sandbox_db(settings: &mut Settings) -> anyhow::Result<()> {
    if settings.database.url == "sqlite:var/beian-gateway.db" {
        settings.database.url = "sqlite:var/sandbox.db".into();
        for suffix in ["", "-wal", "-shm"] {
            let p = format!("var/sandbox.db{suffix}");
            if std::path::Path::new(&p).exists() {
                std::fs::remove_file(&p)?;
            }
        }
    }
    Ok(())
}
