//! What a storm of admin API requests does to a gateway's latency: one gateway does CCR-I +
//! CCR-T pairs one after the other, first alone (the baseline), then while `--concurrency`
//! HTTP clients send admin requests back to back. Prints both latency distributions and the
//! admin requests served. Bounded in time; scripts/bench runs it (phase `admin`).
//!
//!   cargo run --release -p ocf-loadtest --example admin_storm -- \
//!       --server 127.0.0.1:3868 --admin 127.0.0.1:8868 --token-file ocfd-data/admin-token \
//!       --path /v1/usage/acme/engineering --concurrency 1000 --seconds 20

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use ocf_loadtest::client::{Client, ClientConfig};
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, TERMINATION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    /// ocfd's Diameter address.
    #[arg(long)]
    server: SocketAddr,
    /// ocfd's admin address.
    #[arg(long)]
    admin: SocketAddr,
    /// The admin API's bearer token file.
    #[arg(long)]
    token_file: std::path::PathBuf,
    /// The admin request: method and path (and body for PUT).
    #[arg(long, default_value = "GET")]
    method: String,
    #[arg(long, default_value = "/v1/usage/acme/engineering")]
    path: String,
    #[arg(long)]
    body: Option<String>,
    /// Admin clients sending at once.
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
    /// Seconds of each phase (baseline, then storm).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The gateway's device (MSISDN).
    #[arg(long, default_value = "15551005000")]
    msisdn: String,
}

/// One admin request over a fresh connection; true if it got a 2xx.
async fn admin_request(addr: SocketAddr, req: &[u8]) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    else {
        return false;
    };
    if s.write_all(req).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf)).await;
    read.is_ok() && buf.starts_with(b"HTTP/1.1 2")
}

/// CCR-I + CCR-T pairs until `stop`; the latency of each pair, microseconds.
async fn gateway(
    server: SocketAddr,
    msisdn: String,
    stop: Arc<AtomicBool>,
    tag: &str,
) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(3)?;
    let cfg = ClientConfig {
        origin_host: "storm-gw.localdomain".into(),
        timeout: Duration::from_secs(60),
        ..ClientConfig::default()
    };
    let mut c = Client::connect_tcp(server, &cfg).await?;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let sid = format!("storm;{tag};{n}");
        let started = Instant::now();
        let i = CcrSpec::new(&sid, INITIAL, 0)
            .msisdn(&msisdn)
            .mscc(MsccSpec {
                rating_group: Some(1),
                requested_octets: Some(None),
                ..Default::default()
            });
        c.request(272, |b, hbh, e2e| i.write(b, hbh, e2e)).await?;
        let t = CcrSpec::new(&sid, TERMINATION, 1).mscc(MsccSpec {
            rating_group: Some(1),
            used_octets: Some(1000),
            ..Default::default()
        });
        c.request(272, |b, hbh, e2e| t.write(b, hbh, e2e)).await?;
        h.record(started.elapsed().as_micros() as u64)?;
    }
    let _ = c.disconnect().await;
    Ok(h)
}

fn show(name: &str, h: &Histogram<u64>) {
    println!(
        "{name}: {} pairs, p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let token = std::fs::read_to_string(&a.token_file)
        .with_context(|| format!("{}", a.token_file.display()))?;
    let body = a.body.clone().unwrap_or_default();
    let req: Arc<[u8]> = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        a.method,
        a.path,
        a.admin,
        token.trim(),
        body.len(),
        body
    )
    .into_bytes()
    .into();
    anyhow::ensure!(
        admin_request(a.admin, &req).await,
        "the admin request does not succeed on its own"
    );
    let phase = Duration::from_secs(a.seconds);

    // Baseline: the gateway alone.
    let stop = Arc::new(AtomicBool::new(false));
    let gw = tokio::spawn(gateway(a.server, a.msisdn.clone(), stop.clone(), "base"));
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let base = gw.await??;

    // The storm: admin clients back to back, the gateway measured meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::with_capacity(a.concurrency);
    for _ in 0..a.concurrency {
        let (stop, served, failed, req) =
            (stop.clone(), served.clone(), failed.clone(), req.clone());
        let addr = a.admin;
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if admin_request(addr, &req).await {
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let gw = tokio::spawn(gateway(a.server, a.msisdn.clone(), stop.clone(), "storm"));
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let storm = gw.await??;
    for c in clients {
        let _ = c.await;
    }
    println!(
        "admin: {} {} × {} clients: {} served ({:.0}/s), {} failed",
        a.method,
        a.path,
        a.concurrency,
        served.load(Ordering::Relaxed),
        served.load(Ordering::Relaxed) as f64 / a.seconds as f64,
        failed.load(Ordering::Relaxed)
    );
    show("gateway alone", &base);
    show("gateway during the storm", &storm);
    Ok(())
}
