//! ocfd: the online charging function daemon. Thin: parse the command line, run a tool, or load
//! and check the configuration (exit 64 before binding anything if it is bad), set up logging
//! and the runtime, and serve (`ocf::server::serve`) until SIGTERM or SIGINT, reloading on
//! SIGHUP.

mod logging;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use logging::explain;
use ocf::config::{Config, LogFormat};
use ocf::server::{EXIT_CONFIG, LoadConfig};

/// glibc's allocator spent a fifth of a worker's time under load (perf), much of it freeing on
/// one thread what another allocated; mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Parser)]
#[command(
    name = "ocfd",
    version,
    about = "Diameter Gy online charging function for shared enterprise quotas"
)]
struct Cli {
    /// Configuration file (TOML). Without it ocfd serves the embedded default: Origin-Host
    /// ocfd.localdomain on TCP 127.0.0.1:3868, state in ./ocfd-data.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration and dictionaries, print the result and exit (0 good, 64 bad).
    #[arg(long)]
    check_config: bool,
    /// Diameter TCP listen address (ip:port), replacing the configured ones; repeat for several.
    #[arg(long = "listen", value_name = "IP:PORT")]
    listen: Vec<String>,
    /// Diameter SCTP endpoint ("ip[,ip...]:port", several addresses = multi-homed), replacing
    /// the configured ones; repeat for several.
    #[arg(long = "listen-sctp", value_name = "IPS:PORT")]
    listen_sctp: Vec<String>,
    /// State directory (journal, snapshots, usage records).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Log level or tracing filter (e.g. info, debug, ocf=debug).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Subcommand)]
enum Command {
    /// The journal under the state directory (--state-dir or the config's state_dir).
    Journal {
        #[command(subcommand)]
        action: JournalAction,
    },
    /// Provisioning files: generate a synthetic one for load tests, or check one.
    Tenants {
        #[command(subcommand)]
        action: TenantsAction,
    },
    /// Print a human-readable dump of Diameter messages given as hex (from a capture); reads
    /// standard input when HEX is "-" or absent.
    Decode {
        /// Hex octets; spaces and colons are ignored.
        hex: Vec<String>,
        /// Extra dictionary directory, as diameter.dictionary_dir.
        #[arg(long, value_name = "DIR")]
        dictionary_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Subcommand)]
enum JournalAction {
    /// Read the journal and report what it holds (a torn last record is cut off).
    Check,
    /// After corruption: keep the journal up to the first bad record, move the damaged segment
    /// and all later ones to journal/quarantine-<time>/. What followed is lost.
    Repair,
}

#[derive(Clone, Subcommand)]
enum TenantsAction {
    /// Write a provisioning file with many enterprises sharing many devices (device ranges:
    /// MSISDNs from 155520000000, IMSIs from 001020000000000).
    Generate {
        #[arg(long, default_value_t = 1000)]
        enterprises: u64,
        #[arg(long, default_value_t = 1_000_000)]
        devices: u64,
        /// Output file (standard output if absent).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Load provisioning files as ocfd would and report what they hold.
    Check { files: Vec<PathBuf> },
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if !cli.listen.is_empty() {
        cfg.diameter.listen_tcp = cli.listen.clone();
    }
    if !cli.listen_sctp.is_empty() {
        cfg.diameter.listen_sctp = cli.listen_sctp.clone();
    }
    if let Some(d) = &cli.state_dir {
        cfg.state_dir = d.clone();
    }
    if let Some(l) = &cli.log_level {
        cfg.log.level = l.clone();
    }
    if let Some(f) = cli.log_format {
        cfg.log.format = f;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The server on a runtime of its own, with signals: SIGTERM or SIGINT stop it, SIGHUP reloads
/// the configuration file.
fn run(cli: &Cli, cfg: Config) -> anyhow::Result<()> {
    let set_log_level = logging::init(&cfg);
    // Every peer is a file descriptor; take what the hard limit allows.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open file limit");
    }
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create state directory {}", cfg.state_dir.display()))?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.worker_threads > 0 {
        rt.worker_threads(cfg.worker_threads);
    }
    let rt = rt.enable_all().build()?;
    let served = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Handlers are installed before the listeners announce themselves, so a SIGTERM that
        // follows readiness at once still stops the server cleanly.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (reload_tx, reloads) = tokio::sync::mpsc::unbounded_channel::<LoadConfig>();
        let cli = cli.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let cli = cli.clone();
                let load: LoadConfig = Box::new(move || load_config(&cli).map_err(|e| explain(&e)));
                if reload_tx.send(load).is_err() {
                    break;
                }
            }
        });
        let shutdown = async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        ocf::server::serve(&cfg, shutdown, reloads, Some(set_log_level)).await?;
        Ok(())
    });
    // Everything the server owed was done before it returned: a blocking task still running
    // (a thread joined that never ends) must not hold the process.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    served
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Tenants { action }) => {
            let done = match action {
                TenantsAction::Generate {
                    enterprises,
                    devices,
                    out,
                } => tools::tenants_generate(*enterprises, *devices, out.as_deref()),
                TenantsAction::Check { files } => tools::tenants_check(files),
            };
            return match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ocfd tenants: {}", explain(&e));
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        Some(Command::Journal { action }) => {
            let done = load_config(&cli).and_then(|cfg| match action {
                JournalAction::Check => tools::journal_check(&cfg.state_dir),
                JournalAction::Repair => tools::journal_repair(&cfg.state_dir, unix_now()),
            });
            return match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ocfd journal: {}", explain(&e));
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Decode {
            hex,
            dictionary_dir,
        }) => {
            return match tools::decode(hex, dictionary_dir.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ocfd decode: {}", explain(&e));
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        None => {}
    }
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ocfd: bad configuration: {}", explain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        if let Err(e) = ocf::server::recovery::check_provisioning(&cfg) {
            eprintln!("ocfd: bad configuration: {}", explain(&e.into()));
            return ExitCode::from(EXIT_CONFIG);
        }
        println!("ocfd: configuration OK");
        return ExitCode::SUCCESS;
    }
    match run(&cli, cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Bad provisioning or dictionaries are configuration errors: nothing was bound.
            let code = e
                .downcast_ref::<ocf::server::ServerError>()
                .map_or(1, |e| e.exit_code());
            tracing::error!(error = %explain(&e), "ocfd cannot start");
            if code == EXIT_CONFIG {
                eprintln!("ocfd: bad configuration: {}", explain(&e));
            } else {
                eprintln!("ocfd: {}", explain(&e));
            }
            ExitCode::from(code)
        }
    }
}

/// Unix seconds now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
