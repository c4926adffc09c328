//! The command line only: parse, load configuration, call one command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use beian_gateway::commands;
use beian_gateway::config::Settings;
use beian_gateway::telemetry::{self, LogFormat};

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

#[derive(Subcommand)]
enum Command {
    /// The daemon: submit and poll on the configured schedules until stopped.
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
    },
    /// One full cycle (intake, submit, poll, write-back), then exit.
    Once {
        #[arg(long)]
        sandbox: bool,
        #[arg(long = "import", value_name = "PATH")]
        import: Vec<PathBuf>,
    },
    /// Import reviewed filings (files holding an object, an array or JSON Lines; directories).
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
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
    /// Counts of filings per state.
    Status,
    /// Serve the sandbox bureau.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8990")]
        listen: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match real_main(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(3));
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
            let report = commands::run(
                Arc::new(settings),
                store.clone(),
                commands::RunOptions {
                    exit_when_done,
                    fast: sandbox,
                },
            )
            .await?;
            if exit_when_done {
                commands::export(&store, None, None, false).await?;
            }
            Ok(if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Once { sandbox, import } => {
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
            let report = commands::once(Arc::new(settings), store).await;
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            eprintln!(
                "once: queued {}, needs correction {}, files sent {}, filings sent {}, downloads applied {}",
                report.queued,
                report.needs_correction,
                report.files_sent,
                report.filings_sent,
                report.downloads_applied
            );
            Ok(if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Import { paths } => {
            let store = commands::open_store(&settings).await?;
            let (new, unchanged, failed) = commands::import(&store, &paths).await?;
            eprintln!("imported {new} filings ({unchanged} unchanged, {failed} files refused)");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Export { json, id, state } => {
            let store = commands::open_store(&settings).await?;
            commands::export(&store, id.as_deref(), state.as_deref(), json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            let store = commands::open_store(&settings).await?;
            commands::status(&store, &settings).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox { listen } => {
            commands::serve_sandbox(settings, &listen).await?;
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
