//! ocf-loadtest: connects to a Diameter credit-control server and checks that it speaks the base
//! protocol: CER/CEA, then a bounded number of pipelined-free DWR/DWA round trips timed one by
//! one, then DPR/DPA. Load generation with CCR sessions builds on this client.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use ocf::diameter::codes::{avp, command};
use ocf_loadtest::client::{Client, ClientConfig};

#[derive(Parser)]
#[command(
    name = "ocf-loadtest",
    version,
    about = "Diameter Gy client for testing charging servers"
)]
struct Cli {
    /// Server address (ip:port).
    #[arg(long, default_value = "127.0.0.1:3868")]
    server: SocketAddr,
    /// Use SCTP instead of TCP.
    #[arg(long)]
    sctp: bool,
    /// Local addresses to bind for a multi-homed SCTP association.
    #[arg(long = "sctp-local", value_name = "IP")]
    sctp_local: Vec<IpAddr>,
    /// Our Origin-Host.
    #[arg(long, default_value = "loadtest.localdomain")]
    origin_host: String,
    /// Our Origin-Realm.
    #[arg(long, default_value = "localdomain")]
    origin_realm: String,
    /// Number of DWR/DWA round trips to time (at most 1,000,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    watchdogs: u32,
    /// Seconds to wait for any one answer.
    #[arg(long, default_value_t = 10)]
    timeout_s: u64,
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = ClientConfig {
        origin_host: cli.origin_host,
        origin_realm: cli.origin_realm,
        timeout: Duration::from_secs(cli.timeout_s),
        ..Default::default()
    };
    let mut client = if cli.sctp {
        Client::connect_sctp(cli.server, &cli.sctp_local, &cfg).await?
    } else {
        Client::connect_tcp(cli.server, &cfg).await?
    };
    println!("open: {} ({})", client.server_host, client.server_realm);
    let id = client.identity().clone();
    let mut rtts = Vec::with_capacity(cli.watchdogs as usize);
    let start = Instant::now();
    for _ in 0..cli.watchdogs {
        let t = Instant::now();
        let dwa = client
            .request(command::DEVICE_WATCHDOG, |b, hbh, e2e| {
                id.write_dwr(b, hbh, e2e)
            })
            .await?;
        rtts.push(t.elapsed());
        let rc = dwa.find(avp::RESULT_CODE).and_then(|a| a.u32().ok());
        if rc != Some(2001) {
            return Err(format!("DWA Result-Code {rc:?}").into());
        }
    }
    if !rtts.is_empty() {
        let total = start.elapsed();
        rtts.sort();
        let pct = |p: f64| rtts[((rtts.len() as f64 - 1.0) * p) as usize];
        println!(
            "{} DWR/DWA in {:.3} s: {:.0}/s, p50 {:?}, p99 {:?}, max {:?}",
            rtts.len(),
            total.as_secs_f64(),
            rtts.len() as f64 / total.as_secs_f64(),
            pct(0.5),
            pct(0.99),
            rtts[rtts.len() - 1]
        );
    }
    client.disconnect().await?;
    println!("disconnected");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ocf-loadtest: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ocf-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}
