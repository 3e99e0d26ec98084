//! ocf-loadtest: a Diameter Gy load generator for any credit-control server.
//!
//! `run` drives sessions or events at an open-loop rate or with a closed-loop window and
//! reports throughput, HDR latency percentiles per request type and Result-Codes;
//! `watchdog` times DWR/DWA round trips one by one; `responder` is a do-nothing Gy server that
//! measures the generator's own ceiling.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use ocf_loadtest::client::{Client, ClientConfig};
use ocf_loadtest::load::{self, LoadConfig, Model, Transport};
use ocf_loadtest::plan::{Kind, MAX_MSCC, Plan, Scenario, Subscribers};
use ocf_loadtest::stats::{Median, PerKind, RunReport};
use ocf_protocol::codes::{application, avp, command};

#[derive(Parser)]
#[command(
    name = "ocf-loadtest",
    version,
    about = "Diameter Gy load generator and test client for charging servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run credit-control load and report throughput and latency.
    Run(Box<RunArgs>),
    /// Time DWR/DWA round trips one at a time.
    Watchdog {
        #[command(flatten)]
        conn: Box<ConnArgs>,
        /// Number of round trips (at most 1,000,000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
        count: u32,
    },
    /// A PCRF on Sy (3GPP TS 29.219): subscribe to subscribers' policy counters
    /// (Spending-Limit), answer the status notifications that follow for --duration-s, then
    /// unsubscribe (Session-Termination); the statuses seen, as JSON on stdout.
    Sy {
        #[command(flatten)]
        conn: Box<ConnArgs>,
        /// Subscribers FIRST:COUNT (MSISDNs), at most 100,000.
        #[arg(long, default_value = "15551000000:10")]
        subscribers: String,
        /// Seconds to stay subscribed, answering notifications.
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
    },
    /// A Gy server that answers every CCR with a fixed grant and does nothing else; for
    /// measuring the generator's own ceiling.
    Responder {
        #[arg(long, default_value = "127.0.0.1:3869")]
        listen: SocketAddr,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

#[derive(Args, Clone)]
struct ConnArgs {
    /// Server address (ip:port).
    #[arg(long, default_value = "127.0.0.1:3868")]
    server: SocketAddr,
    /// Use SCTP instead of TCP.
    #[arg(long)]
    sctp: bool,
    /// Local addresses to bind for a multi-homed SCTP association.
    #[arg(long = "sctp-local", value_name = "IP")]
    sctp_local: Vec<IpAddr>,
    /// TLS over TCP: the CA certificate (PEM) that signs the server's certificate.
    #[arg(long, value_name = "PEM", requires_all = ["tls_cert", "tls_key"], conflicts_with = "sctp")]
    tls_ca: Option<std::path::PathBuf>,
    /// TLS: our certificate (PEM), which must name our Origin-Host.
    #[arg(long, value_name = "PEM", requires = "tls_ca")]
    tls_cert: Option<std::path::PathBuf>,
    /// TLS: our private key (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_ca")]
    tls_key: Option<std::path::PathBuf>,
    /// TLS: the name the server's certificate must be valid for.
    #[arg(long, default_value = "ocfd.localdomain")]
    tls_server_name: String,
    /// TLS: the lowest version, "1.2" or "1.3".
    #[arg(long, default_value = "1.2")]
    tls_min_version: String,
    /// Our Origin-Host.
    #[arg(long, default_value = "loadtest.localdomain")]
    origin_host: String,
    /// Our Origin-Realm.
    #[arg(long, default_value = "localdomain")]
    origin_realm: String,
    /// Auth-Application-Id in the CER and in requests.
    #[arg(long, default_value_t = application::CREDIT_CONTROL)]
    auth_application_id: u32,
    /// Seconds to wait for the CEA, a DWA or the DPA.
    #[arg(long, default_value_t = 10)]
    timeout_s: u64,
}

impl ConnArgs {
    /// TLS settings, if --tls-ca was given.
    fn tls(&self) -> Result<Option<ocf_loadtest::client::TlsClient>, BoxError> {
        let (Some(ca), Some(cert), Some(key)) = (&self.tls_ca, &self.tls_cert, &self.tls_key)
        else {
            return Ok(None);
        };
        let config = ocf_transport::tls::client_config(ca, cert, key, &self.tls_min_version)?;
        Ok(Some(ocf_loadtest::client::TlsClient {
            server_name: self.tls_server_name.clone(),
            config,
        }))
    }

    fn client(&self) -> ClientConfig {
        ClientConfig {
            origin_host: self.origin_host.clone(),
            origin_realm: self.origin_realm.clone(),
            timeout: Duration::from_secs(self.timeout_s),
            auth_application_id: self.auth_application_id,
            ..Default::default()
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Destination-Realm in requests (default: the server's Origin-Realm from its CEA).
    #[arg(long)]
    destination_realm: Option<String>,
    /// Destination-Host in requests (default: none).
    #[arg(long)]
    destination_host: Option<String>,
    #[arg(long, default_value = "32251@3gpp.org")]
    service_context_id: String,

    /// What each session is: `session` (CCR-I, --updates × CCR-U, CCR-T) or `event`.
    #[arg(long, default_value = "session", value_parser = ["session", "event"])]
    scenario: String,
    /// CCR-UPDATEs per session, each reporting the last grant as used.
    #[arg(long, default_value_t = 2)]
    updates: u32,
    /// Rating-Group of each MSCC, comma-separated (one MSCC per value).
    #[arg(long, value_delimiter = ',', default_value = "10")]
    rating_groups: Vec<u32>,
    /// Octets asked for in each Requested-Service-Unit.
    #[arg(long, default_value_t = 1 << 20)]
    request_octets: u64,
    /// APN (Called-Station-Id) sent in PS-Information, for rules over the request.
    #[arg(long)]
    apn: Option<String>,
    /// Serving network (3GPP-SGSN-MCC-MNC), MCC and MNC, e.g. 20801 (a roaming device).
    #[arg(long)]
    serving_network: Option<String>,
    /// RAT type (3GPP-RAT-Type): 1 UTRAN, 2 GERAN, 6 EUTRAN, 10 NR.
    #[arg(long)]
    rat_type: Option<u8>,
    /// Subscribers as FIRST:COUNT of consecutive MSISDNs (default: the engineering devices of
    /// ocfd's embedded tenant).
    #[arg(
        long,
        default_value = "15551000000:5000",
        conflicts_with = "subscribers_file"
    )]
    subscribers: String,
    /// Subscribers from a provisioning file (as written by `ocfd tenants generate`).
    #[arg(long)]
    subscribers_file: Option<PathBuf>,
    /// Milliseconds between an answer and the session's next request.
    #[arg(long, default_value_t = 0)]
    think_ms: u64,

    /// Connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Open loop: requests per second over all connections (latency from the intended send
    /// time).
    #[arg(long, conflicts_with = "sessions")]
    rate: Option<f64>,
    /// Closed loop: sessions per connection, each with one request outstanding (the default,
    /// with 64, when no --rate is given).
    #[arg(long)]
    sessions: Option<usize>,
    /// Seconds of linear ramp up to the rate (or the session count).
    #[arg(long, default_value_t = 0.0)]
    ramp_s: f64,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Stop after this many requests in all (sessions still open are then ended with
    /// CCR-TERMINATE).
    #[arg(long)]
    requests: Option<u64>,
    /// Cap on unanswered requests per connection.
    #[arg(long, default_value_t = 100_000)]
    max_outstanding: usize,
    /// Resend an unanswered request with the T flag after this many milliseconds (0: never).
    #[arg(long, default_value_t = 0)]
    retransmit_ms: u64,
    /// Retransmissions per request at most.
    #[arg(long, default_value_t = 1)]
    max_retransmits: u32,
    /// Milliseconds after which an unanswered request counts as a timeout.
    #[arg(long, default_value_t = 5000)]
    answer_timeout_ms: u64,
    /// Open-loop pacer period in microseconds.
    #[arg(long, default_value_t = 50)]
    tick_us: u64,
    /// Seconds of warm-up run before the measured runs (not reported).
    #[arg(long, default_value_t = 0.0)]
    warmup_s: f64,
    /// Measured runs; with more than one, the medians are reported too.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// DOIC reacting node (RFC 7683, loss algorithm): announce it and abate what overload
    /// reports ask.
    ///
    /// Every CCR carries OC-Supported-Features with OC-Feature-Vector 1 (the loss algorithm).
    /// While the last OC-OLR accepted (one with a new OC-Sequence-Number) holds, its
    /// OC-Reduction-Percentage of the requests due is abated and reported apart: CCR-Is and
    /// EVENTs are not sent (the session is not started), CCR-Us only when those are not enough
    /// (answered locally: the session goes on), CCR-Ts never. Sending resumes in full when the
    /// report expires or one with OC-Validity-Duration 0 arrives. At reduction 100, one request
    /// in 100 is still sent as a probe, to hear newer reports. --requests counts abated
    /// requests too. In the closed loop an abated session's place goes to the next at once:
    /// --rate shows what abatement takes off the server.
    #[arg(long)]
    doic: bool,

    /// Print the report as JSON on standard output.
    #[arg(long)]
    json: bool,
    /// Write every second's latency histograms (per request type) to this HdrHistogram log.
    #[arg(long)]
    hdr_log: Option<PathBuf>,
    /// No live line each second.
    #[arg(long)]
    quiet: bool,
    /// Exit with status 2 when the error rate of any run is above this fraction.
    #[arg(long, default_value_t = 0.01)]
    max_error_rate: f64,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Prints to standard output; a closed pipe (`| head`) is not an error worth a panic.
macro_rules! out {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

fn plan_of(a: &RunArgs) -> Result<Plan, BoxError> {
    let subscribers = match &a.subscribers_file {
        Some(p) => Subscribers::from_provisioning(p)?,
        None => Subscribers::parse_range(&a.subscribers)?,
    };
    if a.rating_groups.is_empty() || a.rating_groups.len() > MAX_MSCC {
        return Err(format!("--rating-groups takes 1 to {MAX_MSCC} values").into());
    }
    Ok(Plan {
        origin_host: a.conn.origin_host.clone(),
        origin_realm: a.conn.origin_realm.clone(),
        destination_realm: a.destination_realm.clone(),
        destination_host: a.destination_host.clone(),
        service_context_id: a.service_context_id.clone(),
        auth_application_id: a.conn.auth_application_id,
        scenario: if a.scenario == "event" {
            Scenario::Event
        } else {
            Scenario::Session { updates: a.updates }
        },
        rating_groups: a.rating_groups.clone(),
        requested_octets: a.request_octets,
        subscribers,
        think: Duration::from_millis(a.think_ms),
        attributes: ocf_loadtest::plan::Attributes {
            apn: a.apn.clone(),
            serving_network: a
                .serving_network
                .as_ref()
                .map(|n| {
                    if (5..=6).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()) {
                        Ok(n.clone())
                    } else {
                        Err(format!("--serving-network {n}: MCC and MNC, 5 or 6 digits"))
                    }
                })
                .transpose()?,
            rat_type: a.rat_type,
        },
    })
}

fn secs(s: f64, what: &str) -> Result<Duration, BoxError> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{what}: {s} is not a duration").into())
}

fn load_of(a: &RunArgs) -> Result<LoadConfig, BoxError> {
    let model = match (a.rate, a.sessions) {
        (Some(r), _) if !(r > 0.0 && r.is_finite()) => {
            return Err("--rate must be above 0".into());
        }
        (Some(rate), _) => Model::Open { rate },
        (None, s) => Model::Closed {
            sessions: s.unwrap_or(64).max(1),
        },
    };
    if a.connections == 0 || a.connections > 10_000 {
        return Err("--connections takes 1 to 10000".into());
    }
    Ok(LoadConfig {
        server: a.conn.server,
        transport: if let Some(tls) = a.conn.tls()? {
            Transport::Tls(tls)
        } else if a.conn.sctp {
            Transport::Sctp(a.conn.sctp_local.clone())
        } else {
            Transport::Tcp
        },
        client: a.conn.client(),
        connections: a.connections,
        model,
        ramp: secs(a.ramp_s, "--ramp-s")?,
        duration: Some(secs(a.duration_s, "--duration-s")?),
        requests: a.requests,
        max_outstanding: a.max_outstanding.max(1),
        retransmit: (a.retransmit_ms > 0).then(|| Duration::from_millis(a.retransmit_ms)),
        max_retransmits: a.max_retransmits,
        answer_timeout: Duration::from_millis(a.answer_timeout_ms.max(1)),
        tick: Duration::from_micros(a.tick_us.max(1)),
        live: !a.quiet,
        doic: a.doic,
    })
}

async fn run_load(a: RunArgs) -> Result<bool, BoxError> {
    let plan = Arc::new(plan_of(&a)?);
    let cfg = load_of(&a)?;
    let mut log_file = match &a.hdr_log {
        Some(p) => Some(BufWriter::new(
            File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => None,
    };
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = match log_file.as_mut() {
        Some(f) => Some(
            IntervalLogWriterBuilder::new()
                .add_comment("ocf-loadtest latency in nanoseconds, tagged by request type")
                .with_start_time(std::time::SystemTime::now())
                .begin_log_with(f, &mut serializer)?,
        ),
        None => None,
    };
    let mut log_error = None;
    let mut offset = Duration::ZERO;
    if a.warmup_s > 0.0 {
        let mut warm = cfg.clone();
        warm.duration = Some(secs(a.warmup_s, "--warmup-s")?);
        warm.requests = None;
        let r = load::run_once(Arc::new(warm), plan.clone(), 0, None).await?;
        eprintln!(
            "warm-up: {:.0} answers/s, p99 {:.1} µs",
            r.answers_per_s, r.latency.p99_us
        );
    }
    let cfg = Arc::new(cfg);
    let mut reports = Vec::new();
    for run in 1..=a.runs.max(1) {
        let mut sink = |start: Duration, len: Duration, kind: Kind, pk: &PerKind| {
            if let Some(w) = writer.as_mut() {
                let tag = Tag::new(kind.name());
                if let Err(e) = w.write_histogram(&pk.latency, offset + start, len, tag) {
                    log_error = Some(format!("{e:?}"));
                }
            }
        };
        let r = load::run_once(cfg.clone(), plan.clone(), run, Some(&mut sink)).await?;
        offset += Duration::from_secs_f64(r.duration_s) + Duration::from_secs(1);
        if !a.json {
            out!("run {run}: {}", r.text());
        }
        reports.push(r);
    }
    drop(writer);
    if let Some(mut f) = log_file {
        f.flush()?;
    }
    if let Some(e) = log_error {
        return Err(format!("writing the HdrHistogram log: {e}").into());
    }
    let median = Median::of(&reports);
    if a.json {
        let doc = serde_json::json!({ "runs": reports, "median": median });
        out!("{}", serde_json::to_string_pretty(&doc)?);
    } else if reports.len() > 1 {
        let l = &median.latency;
        out!(
            "median of {} runs: {:.0} answers/s, p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, \
             p99.9 {:.1} µs, max {:.1} µs, error rate {:.4}{}",
            median.runs,
            median.answers_per_s,
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            median.error_rate,
            if a.doic {
                format!(", abated {}", median.abated)
            } else {
                String::new()
            }
        );
    }
    let ok = reports
        .iter()
        .all(|r: &RunReport| r.error_rate <= a.max_error_rate && r.connection_failures.is_empty());
    for (i, r) in reports.iter().enumerate() {
        if r.error_rate > a.max_error_rate {
            eprintln!(
                "ocf-loadtest: run {}: error rate {:.4} is above {}",
                i + 1,
                r.error_rate,
                a.max_error_rate
            );
        }
        for f in &r.connection_failures {
            eprintln!("ocf-loadtest: run {}: {f}", i + 1);
        }
    }
    Ok(ok)
}

async fn watchdog(conn: ConnArgs, count: u32) -> Result<bool, BoxError> {
    let cfg = conn.client();
    let mut client = if let Some(tls) = conn.tls()? {
        Client::connect_tls(conn.server, &tls, &cfg).await?
    } else if conn.sctp {
        Client::connect_sctp(conn.server, &conn.sctp_local, &cfg).await?
    } else {
        Client::connect_tcp(conn.server, &cfg).await?
    };
    out!("open: {} ({})", client.server_host, client.server_realm);
    let id = client.identity().clone();
    let mut rtts = Vec::with_capacity(count as usize);
    let start = Instant::now();
    for _ in 0..count {
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
        out!(
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
    out!("disconnected");
    Ok(true)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Cmd::Run(a) => a.threads,
        Cmd::Responder { threads, .. } => *threads,
        Cmd::Watchdog { .. } | Cmd::Sy { .. } => 1,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.clamp(1, 64))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ocf-loadtest: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Cmd::Run(a) => run_load(*a).await,
            Cmd::Watchdog { conn, count } => watchdog(*conn, count).await,
            Cmd::Sy {
                conn,
                subscribers,
                duration_s,
            } => pcrf(*conn, &subscribers, duration_s).await,
            Cmd::Responder { listen, .. } => responder(listen).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("ocf-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Policy-Counter-Status-Reports of a message as (identifier, status).
fn counter_reports(m: &ocf_protocol::Message) -> Vec<(String, String)> {
    m.avps()
        .filter(|a| a.is(avp::POLICY_COUNTER_STATUS_REPORT))
        .map(|r| {
            let get = |k| {
                r.children()
                    .find(|a| a.is(k))
                    .and_then(|a| a.utf8().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            (
                get(avp::POLICY_COUNTER_IDENTIFIER),
                get(avp::POLICY_COUNTER_STATUS),
            )
        })
        .collect()
}

/// `sy`: a PCRF's subscriptions for `subscribers`, held for `duration_s`.
async fn pcrf(mut conn: ConnArgs, subscribers: &str, duration_s: u64) -> Result<bool, BoxError> {
    use ocf_protocol::{Header, MessageWriter};
    conn.auth_application_id = application::SY;
    let (first, count) = subscribers
        .split_once(':')
        .and_then(|(f, n)| Some((f.parse::<u64>().ok()?, n.parse::<u64>().ok()?)))
        .filter(|(_, n)| *n <= 100_000)
        .ok_or("--subscribers: FIRST:COUNT, at most 100,000")?;
    let cfg = conn.client();
    let mut client = Client::connect_tcp(conn.server, &cfg).await?;
    let id = client.identity().clone();
    let realm = client.server_realm.clone();
    let nonce = std::process::id();
    let sid = |k: u64| format!("{};sy;{nonce};{k}", id.origin_host);
    let mut statuses: std::collections::BTreeMap<String, u64> = Default::default();
    let mut failed = 0u64;
    for k in 0..count {
        let sla = client
            .request(command::SPENDING_LIMIT, |b, hbh, e2e| {
                let mut w = MessageWriter::new(
                    b,
                    &Header::request(command::SPENDING_LIMIT, application::SY, hbh, e2e),
                );
                w.utf8(avp::SESSION_ID, &sid(k));
                w.u32(avp::AUTH_APPLICATION_ID, application::SY);
                w.identity(avp::ORIGIN_HOST, &id.origin_host);
                w.identity(avp::ORIGIN_REALM, &id.origin_realm);
                w.identity(avp::DESTINATION_REALM, &realm);
                w.u32(avp::SL_REQUEST_TYPE, 0);
                let g = w.begin_group(avp::SUBSCRIPTION_ID);
                w.u32(avp::SUBSCRIPTION_ID_TYPE, 0);
                w.utf8(avp::SUBSCRIPTION_ID_DATA, &(first + k).to_string());
                w.end_group(g);
                w.finish();
            })
            .await?;
        if sla.find(avp::RESULT_CODE).and_then(|a| a.u32().ok()) != Some(2001) {
            failed += 1;
        }
        for (_, s) in counter_reports(&sla) {
            *statuses.entry(s).or_insert(0) += 1;
        }
    }
    eprintln!("ocf-loadtest: subscribed {}", count - failed);
    // Notifications until the time is up, each answered 2001.
    let (mut snr, mut changes) = (0u64, std::collections::BTreeMap::<String, u64>::new());
    let until = Instant::now() + Duration::from_secs(duration_s);
    while let Some(m) = client.next_request(until).await? {
        let ok = m.header.command_code == command::SPENDING_STATUS_NOTIFICATION;
        if ok {
            snr += 1;
            for (_, s) in counter_reports(&m) {
                *changes.entry(s).or_insert(0) += 1;
            }
        }
        let msid = m
            .find(avp::SESSION_ID)
            .and_then(|a| a.utf8().ok())
            .unwrap_or_default()
            .to_owned();
        let origin = (id.origin_host.clone(), id.origin_realm.clone());
        client.answer(|b| {
            let mut w = MessageWriter::new(b, &m.header.answer());
            w.utf8(avp::SESSION_ID, &msid);
            w.u32(avp::RESULT_CODE, if ok { 2001 } else { 3001 });
            w.identity(avp::ORIGIN_HOST, &origin.0);
            w.identity(avp::ORIGIN_REALM, &origin.1);
            w.finish();
        });
    }
    let mut ended = 0u64;
    for k in 0..count {
        let sta = client
            .request(command::SESSION_TERMINATION, |b, hbh, e2e| {
                let mut w = MessageWriter::new(
                    b,
                    &Header::request(command::SESSION_TERMINATION, application::SY, hbh, e2e),
                );
                w.utf8(avp::SESSION_ID, &sid(k));
                w.identity(avp::ORIGIN_HOST, &id.origin_host);
                w.identity(avp::ORIGIN_REALM, &id.origin_realm);
                w.identity(avp::DESTINATION_REALM, &realm);
                w.u32(avp::AUTH_APPLICATION_ID, application::SY);
                w.u32(avp::TERMINATION_CAUSE, 1);
                w.finish();
            })
            .await?;
        if sta.find(avp::RESULT_CODE).and_then(|a| a.u32().ok()) == Some(2001) {
            ended += 1;
        }
    }
    client.disconnect().await?;
    out!(
        "{}",
        serde_json::json!({
            "subscribed": count - failed,
            "refused": failed,
            "statuses": statuses,
            "notifications": snr,
            "changes": changes,
            "unsubscribed": ended,
        })
    );
    Ok(failed == 0)
}

async fn responder(listen: SocketAddr) -> Result<bool, BoxError> {
    ocf_loadtest::responder::run(listen).await?;
    Ok(true)
}
