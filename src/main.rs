//! ocfd: the online charging function daemon. Thin: parse the command line, load and check the
//! configuration (exit 64 before binding anything if it is bad), set up logging and the
//! runtime, run the server until SIGTERM or SIGINT.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ocf::config::{Config, LogFormat};
use ocf::server::Server;
use ocf_protocol::dump;

/// glibc's allocator spent a fifth of a worker's time under load (perf), much of it freeing on
/// one thread what another allocated; mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// EX_USAGE from sysexits.h: the configuration or command line is wrong.
const EXIT_CONFIG: u8 = 64;

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

/// The journal sequence the snapshot in `state_dir` includes (0 without one).
fn snapshot_sequence(state_dir: &std::path::Path) -> anyhow::Result<u64> {
    let path = state_dir.join("snapshot");
    match std::fs::read(&path) {
        Ok(data) => Ok(ocf_store::snapshot::header(&data, &path)?.info.sequence),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

fn journal(cli: &Cli, action: &JournalAction) -> anyhow::Result<()> {
    let cfg = load_config(cli)?;
    let dir = cfg.state_dir.join("journal");
    let after = snapshot_sequence(&cfg.state_dir)?;
    match action {
        JournalAction::Check => {
            let s = ocf_store::segment::read_all(&dir, after, true, |_| {})?;
            println!(
                "{}: {} records, last sequence {}",
                dir.display(),
                s.records,
                s.last_sequence.unwrap_or(0)
            );
            if let Some((file, offset, dropped)) = s.truncated {
                println!(
                    "cut a torn last record: {} at {offset} ({dropped} octets)",
                    file.display()
                );
            }
        }
        JournalAction::Repair => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            match ocf_store::segment::cut_at_corruption(&dir, after, now)? {
                None => println!("{}: no corruption found; nothing changed", dir.display()),
                Some((file, offset)) => println!(
                    "cut {} at offset {offset}; the damaged and later segments are in {}",
                    file.display(),
                    dir.join(format!("quarantine-{now}")).display()
                ),
            }
        }
    }
    Ok(())
}

fn tenants(action: &TenantsAction) -> anyhow::Result<()> {
    match action {
        TenantsAction::Generate {
            enterprises,
            devices,
            out,
        } => {
            anyhow::ensure!(*enterprises >= 1, "--enterprises must be at least 1");
            anyhow::ensure!(
                *devices <= ocf_charging::accounts::provisioning::MAX_DEVICES,
                "--devices is at most {}",
                ocf_charging::accounts::provisioning::MAX_DEVICES
            );
            let text = ocf_charging::accounts::provisioning::generate(*enterprises, *devices);
            match out {
                Some(path) => std::fs::write(path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{text}"),
            }
        }
        TenantsAction::Check { files } => {
            let mut ledger = ocf_charging::ledger::Ledger::new();
            let mut dir = ocf_charging::accounts::tenant::Directory::default();
            for f in files {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?;
                let n = ocf_charging::accounts::provisioning::load_str(
                    &f.display().to_string(),
                    &text,
                    &mut ledger,
                    &mut dir,
                )?;
                println!("{}: {n} tenants", f.display());
            }
            println!(
                "{} tenants, {} subscription ids",
                ledger.tree_count(),
                dir.subscriber_count()
            );
        }
    }
    Ok(())
}

/// Imports the provisioning once, on an empty tree, as a check (exit 64 if it is refused).
fn check_tenant_files(cfg: &Config) -> anyhow::Result<()> {
    ocf::server::recovery::check_provisioning(cfg)?;
    Ok(())
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

fn decode(hex: &[String], dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    let dict = ocf::config::load_dictionary(dir)?;
    let text = if hex.is_empty() || hex == ["-"] {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        hex.join("")
    };
    let bytes = dump::parse_hex(&text).map_err(anyhow::Error::msg)?;
    print!("{}", dump::render(&dict, &bytes));
    Ok(())
}

/// Sets up logging; returns what changes the level on a reload.
/// An error and its causes on one line, each said once: a cause whose text the message
/// already holds (an error that embeds its source) is not repeated.
fn explain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Writes each log event on one line: a value with line breaks in it (a TOML error, say) has
/// them written as `\n`, so that whoever reads the log line by line reads whole events.
struct OneLine<W>(W);

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if !body.contains(&b'\n') {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut line = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => {}
                b => line.push(b),
            }
        }
        if body.len() < buf.len() {
            line.push(b'\n');
        }
        self.0.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn init_logging(cfg: &Config) -> ocf::server::reload::SetLogLevel {
    use tracing_subscriber::prelude::*;
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(|| OneLine(std::io::stderr()));
    let fmt = match cfg.log.format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.with_ansi(false).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(fmt).init();
    Box::new(move |level: &str| {
        let f = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    })
}

fn serve(
    cli: &Cli,
    cfg: Config,
    set_log_level: ocf::server::reload::SetLogLevel,
) -> anyhow::Result<()> {
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
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Handlers are installed here, before the listeners announce themselves, so a SIGTERM
        // that follows readiness at once still stops the server cleanly.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let server = Server::bind(&cfg)?;
        let reloader = std::sync::Arc::new(server.reloader(Some(set_log_level)));
        let cli = cli.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let (reloader, cli) = (reloader.clone(), cli.clone());
                // Reading files and planning the import block: off the runtime's workers.
                let _ = tokio::task::spawn_blocking(move || {
                    reloader.reload(|| load_config(&cli).map_err(|e| explain(&e)))
                })
                .await;
            }
        });
        server
            .run(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            })
            .await;
        Ok(())
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Tenants { action }) => {
            return match tenants(action) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ocfd tenants: {}", explain(&e));
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        Some(Command::Journal { action }) => {
            return match journal(&cli, action) {
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
            return match decode(hex, dictionary_dir.as_deref()) {
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
        if let Err(e) = check_tenant_files(&cfg) {
            eprintln!("ocfd: bad configuration: {}", explain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
        println!("ocfd: configuration OK");
        return ExitCode::SUCCESS;
    }
    let set_log_level = init_logging(&cfg);
    match serve(&cli, cfg, set_log_level) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Bad provisioning or dictionaries are configuration errors: nothing was bound.
            let config_error = e
                .downcast_ref::<ocf::server::ServerError>()
                .is_some_and(|e| e.is_config_error());
            tracing::error!(error = %explain(&e), "ocfd cannot start");
            if config_error {
                eprintln!("ocfd: bad configuration: {}", explain(&e));
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("ocfd: {}", explain(&e));
            ExitCode::FAILURE
        }
    }
}
