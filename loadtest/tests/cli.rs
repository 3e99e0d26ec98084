//! The ocf-loadtest binary end to end: against an ocfd server running in this process on
//! 127.0.0.1 port 0, and against small servers of the test's own that answer only
//! retransmissions or nothing at all, or stamp a DOIC overload report into every answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};

use bytes::BytesMut;
use ocf::config::Config;
use ocf::server::Server;
use ocf_protocol::base::LocalIdentity;
use ocf_protocol::codes::{ResultCode, application, command};
use ocf_protocol::doic::{self, Olr};
use ocf_protocol::header::parse_header;
use ocf_protocol::{CommandFlags, Message};

struct InProcess {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<()>,
    _state: tempfile::TempDir,
}

#[path = "../../tests/common/pki.rs"]
mod pki;

fn start_ocfd() -> InProcess {
    start_ocfd_with(|_| {})
}

fn start_ocfd_with(adjust: impl FnOnce(&mut Config)) -> InProcess {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = Config::default();
    cfg.diameter.listen_tcp = vec!["127.0.0.1:0".into()];
    cfg.admin.listen = Some("127.0.0.1:0".into());
    // These tests count the tool's answers exactly: no overload shedding by a debug build on a
    // busy machine (tests/overload.rs tests shedding).
    cfg.diameter.overload_queue_us = 0;
    let state = tempfile::tempdir().unwrap();
    cfg.state_dir = state.path().to_path_buf();
    adjust(&mut cfg);
    let server = rt.block_on(async { Server::bind(&cfg) }).unwrap();
    // TLS if it listens, else TCP.
    let addrs = server.local_addrs();
    let addr = addrs.iter().find(|a| a.0 == "tls").unwrap_or(&addrs[0]).1;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = rt.spawn(server.run(async {
        let _ = stopped.await;
    }));
    InProcess {
        rt,
        addr,
        stop,
        running,
        _state: state,
    }
}

impl InProcess {
    fn stop(self) {
        self.stop.send(()).unwrap();
        self.rt.block_on(self.running).unwrap();
    }
}

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ocf-loadtest"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

#[test]
fn watchdog_round_trips_against_ocfd() {
    let d = start_ocfd();
    let addr = d.addr.to_string();
    let out = loadtest(&["watchdog", "--server", &addr, "--count", "200"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout.contains("open: ocfd.localdomain (localdomain)"),
        "{stdout}"
    );
    assert!(stdout.contains("200 DWR/DWA in"), "{stdout}");
    assert!(stdout.contains("disconnected"), "{stdout}");

    // A server that is not there: a clear failure, not a hang.
    let out = loadtest(&["watchdog", "--server", "127.0.0.1:1", "--timeout-s", "5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ocf-loadtest:"));
    d.stop();
}

#[test]
fn closed_loop_sessions_with_several_mscc_are_counted_exactly() {
    let d = start_ocfd();
    let addr = d.addr.to_string();
    let hdr = tempfile::NamedTempFile::new().unwrap();
    // 3 connections × 4 sessions of I, 2 × U, T; two MSCCs each; 600 requests in all, then the
    // open sessions are ended with CCR-T.
    let out = loadtest(&[
        "run",
        "--server",
        &addr,
        "--connections",
        "3",
        "--sessions",
        "4",
        "--updates",
        "2",
        "--rating-groups",
        "10,20",
        "--requests",
        "600",
        "--duration-s",
        "60",
        "--json",
        "--hdr-log",
        hdr.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r = &json(&out)["runs"][0];
    let sent = r["sent"].as_u64().unwrap();
    assert!((600..=612).contains(&sent), "{r}");
    assert_eq!(r["answers"], sent);
    assert_eq!(r["error_rate"], 0.0);
    let by = &r["by_type"];
    let i = by["initial"]["answers"].as_u64().unwrap();
    // Every session that started also ended, and each had its two updates unless the run
    // ended it early.
    assert_eq!(by["termination"]["answers"].as_u64().unwrap(), i, "{by}");
    assert!(by["update"]["answers"].as_u64().unwrap() <= 2 * i);
    for t in ["initial", "update", "termination"] {
        assert_eq!(by[t]["result_codes"]["2001"], by[t]["answers"], "{t}: {by}");
        assert!(by[t]["latency"]["p50_us"].as_f64().unwrap() > 0.0);
    }
    assert!(r["connection_failures"].as_array().unwrap().is_empty());
    // The log holds interval histograms tagged by request type.
    let log = std::fs::read_to_string(hdr.path()).unwrap();
    assert!(log.contains("Tag=initial,"), "{log}");
    assert!(log.contains("Tag=termination,"), "{log}");
    d.stop();
}

#[test]
fn open_loop_events_meet_their_rate_and_failures_set_the_exit_status() {
    let d = start_ocfd();
    let addr = d.addr.to_string();
    let out = loadtest(&[
        "run",
        "--server",
        &addr,
        "--scenario",
        "event",
        "--rate",
        "2000",
        "--ramp-s",
        "0.5",
        "--duration-s",
        "1.5",
        "--request-octets",
        "1000",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r = &json(&out)["runs"][0];
    // Half a second of ramp (500 requests) and one second at 2000/s.
    let sent = r["sent"].as_u64().unwrap();
    assert!((2300..=2600).contains(&sent), "{sent}");
    assert_eq!(r["by_type"]["event"]["result_codes"]["2001"], sent);

    // Subscribers ocfd does not know: 5030 for every session, so exit status 2.
    let out = loadtest(&[
        "run",
        "--server",
        &addr,
        "--subscribers",
        "19990000000:10",
        "--requests",
        "50",
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("5030×50"), "{stdout}");
    d.stop();
}

/// The identity of the test's own servers.
fn test_identity(addr: SocketAddr) -> LocalIdentity {
    LocalIdentity {
        origin_host: "t.localdomain".into(),
        origin_realm: "localdomain".into(),
        host_ip_addresses: vec![addr.ip()],
        vendor_id: 0,
        product_name: "t".into(),
        firmware_revision: 1,
        origin_state_id: 1,
        auth_application_ids: vec![application::CREDIT_CONTROL],
        supported_vendor_ids: vec![],
    }
}

/// A server of the test's own: CER/CEA and DPR/DPA, and for CCRs only the copies that carry
/// the T flag are answered (with a bare 2001).
fn retransmission_only_server() -> (SocketAddr, std::thread::JoinHandle<(u32, u32)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let id = test_identity(addr);
        let (mut plain, mut marked) = (0, 0);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                return (plain, marked);
            }
            buf.extend_from_slice(&chunk[..n]);
            while buf.len() >= 20 {
                let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
                if buf.len() < len {
                    break;
                }
                let frame: Vec<u8> = buf.drain(..len).collect();
                let (_, h) = parse_header(&frame).unwrap();
                let mut out = BytesMut::new();
                match h.command_code {
                    command::CAPABILITIES_EXCHANGE => {
                        id.write_cea(&mut out, &h, ResultCode::Success, None, false)
                    }
                    command::DISCONNECT_PEER => id.write_dpa(&mut out, &h),
                    command::CREDIT_CONTROL if h.flags.0 & CommandFlags::RETRANSMIT == 0 => {
                        plain += 1
                    }
                    command::CREDIT_CONTROL => {
                        marked += 1;
                        let m = Message::decode(frame.into()).unwrap();
                        let e = ocf_protocol::DiameterError::new(ResultCode::Success, "");
                        let mut w = BytesMut::new();
                        id.write_error_answer(&mut w, &m, &e);
                        out = w;
                    }
                    _ => {}
                }
                s.write_all(&out).unwrap();
            }
        }
    });
    (addr, t)
}

#[test]
fn unanswered_requests_are_retransmitted_with_the_t_flag() {
    let (addr, server) = retransmission_only_server();
    let out = loadtest(&[
        "run",
        "--server",
        &addr.to_string(),
        "--scenario",
        "event",
        "--sessions",
        "5",
        "--requests",
        "20",
        "--retransmit-ms",
        "30",
        "--answer-timeout-ms",
        "5000",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r = &json(&out)["runs"][0];
    assert_eq!(r["sent"], 20);
    assert_eq!(r["retransmits"], 20);
    assert_eq!(r["answers"], 20);
    assert_eq!(r["timeouts"], 0);
    assert_eq!(server.join().unwrap(), (20, 20));
}

#[test]
fn silence_is_counted_as_timeouts() {
    // CCRs without the T flag are never answered: with no retransmission, all time out.
    let (addr, server) = retransmission_only_server();
    let out = loadtest(&[
        "run",
        "--server",
        &addr.to_string(),
        "--sessions",
        "5",
        "--requests",
        "5",
        "--answer-timeout-ms",
        "200",
        "--json",
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let r = &json(&out)["runs"][0];
    assert_eq!(
        (r["sent"].as_u64(), r["timeouts"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(r["error_rate"], 1.0);
    assert_eq!(server.join().unwrap(), (5, 0));

    // A server that accepts but never answers the CER: a clear failure, not a hang.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let _keep = std::thread::spawn(move || l.accept().map(|(s, _)| s));
    let out = loadtest(&[
        "run",
        "--server",
        &addr.to_string(),
        "--requests",
        "5",
        "--timeout-s",
        "1",
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed out"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_load_tool_speaks_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new("peering CA");
    let ca_pem = ca.write(dir.path(), "ca.pem");
    let server = ca.issue(dir.path(), "ocfd", &["ocfd.localdomain"]);
    let client = ca.issue(dir.path(), "lt", &["loadtest.localdomain"]);
    let d = start_ocfd_with(|cfg| {
        let t = &mut cfg.diameter.tls;
        t.listen = vec!["127.0.0.1:0".into()];
        t.certificate = Some(server.cert.clone());
        t.private_key = Some(server.key.clone());
        t.peer_ca = Some(ca_pem.clone());
    });
    let addr = d.addr.to_string();
    let tls = [
        "--tls-ca",
        ca_pem.to_str().unwrap(),
        "--tls-cert",
        client.cert.to_str().unwrap(),
        "--tls-key",
        client.key.to_str().unwrap(),
    ];
    let mut args = vec![
        "run",
        "--server",
        &addr,
        "--sessions",
        "2",
        "--requests",
        "40",
    ];
    args.extend(tls);
    args.extend(["--duration-s", "60", "--json", "--quiet"]);
    let out = loadtest(&args);
    assert!(out.status.success(), "{}", text(&out));
    let r = &json(&out)["runs"][0];
    assert!(r["answers"].as_u64().unwrap() >= 40, "{r}");
    assert_eq!(r["error_rate"], 0.0, "{r}");
    // The server's certificate must name what the tool expects.
    let mut wrong = vec!["watchdog", "--server", &addr, "--count", "1"];
    wrong.extend(tls);
    wrong.extend(["--tls-server-name", "other.localdomain"]);
    let out = loadtest(&wrong);
    assert!(!out.status.success(), "{}", text(&out));
    let mut right = vec!["watchdog", "--server", &addr, "--count", "1"];
    right.extend(tls);
    let out = loadtest(&right);
    assert!(out.status.success(), "{}", text(&out));
    d.stop();
}

/// A DOIC reporting server of the test's own: every CCR is answered with a bare 2001 that
/// carries OC-Supported-Features and `olr`, whether the request announced DOIC or not (a tool
/// that did not announce it must still ignore it). Serves `connections` connections, one after
/// the other, and returns (CCRs, CCRs that announced the loss algorithm).
fn reporting_server(
    olr: Olr,
    connections: usize,
) -> (SocketAddr, std::thread::JoinHandle<(u64, u64)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let serve = move |mut s: std::net::TcpStream| {
        let id = test_identity(addr);
        let avps = doic::encode(doic::OLR_DEFAULT_ALGO, Some(&olr));
        let (mut ccrs, mut announcing) = (0, 0);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let n = s.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                return (ccrs, announcing);
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut out = BytesMut::new();
            while buf.len() >= 20 {
                let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
                if buf.len() < len {
                    break;
                }
                let frame: Vec<u8> = buf.drain(..len).collect();
                let (_, h) = parse_header(&frame).unwrap();
                match h.command_code {
                    command::CAPABILITIES_EXCHANGE => {
                        id.write_cea(&mut out, &h, ResultCode::Success, None, false)
                    }
                    command::DEVICE_WATCHDOG => id.write_dwa(&mut out, &h),
                    command::DISCONNECT_PEER => id.write_dpa(&mut out, &h),
                    command::CREDIT_CONTROL => {
                        ccrs += 1;
                        announcing += u64::from(doic::frame_announces_loss(&frame));
                        let m = Message::decode(frame.into()).unwrap();
                        let e = ocf_protocol::DiameterError::new(ResultCode::Success, "");
                        let start = out.len();
                        id.write_error_answer(&mut out, &m, &e);
                        assert!(doic::append(&mut out, start, &avps));
                    }
                    _ => {}
                }
            }
            s.write_all(&out).unwrap();
        }
    };
    let t = std::thread::spawn(move || {
        let mut served = Vec::new();
        for _ in 0..connections {
            let (s, _) = l.accept().unwrap();
            served.push(std::thread::spawn(move || serve(s)));
        }
        served
            .into_iter()
            .map(|t| t.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    (addr, t)
}

fn report(reduction: u32) -> Olr {
    Olr {
        sequence: 1_764_000_000_000,
        report_type: doic::HOST_REPORT,
        reduction,
        // Longer than any of these runs: the report holds throughout (expiry is unit-tested).
        validity_s: 600,
    }
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn with_doic_the_reported_share_is_abated_and_counted_apart() {
    let (addr, server) = reporting_server(report(50), 2);
    let addr = addr.to_string();
    // Events: every request may be abated, so half of them are once the first answer has
    // brought the report (the first window of 4 goes before it).
    let out = loadtest(&[
        "run",
        "--server",
        &addr,
        "--doic",
        "--scenario",
        "event",
        "--sessions",
        "4",
        "--requests",
        "2000",
        "--duration-s",
        "60",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r = &json(&out)["runs"][0];
    let (sent, abated) = (u(&r["sent"]), u(&r["abated"]));
    assert_eq!(sent + abated, 2000, "{r}");
    assert!((990..=1000).contains(&abated), "{r}");
    assert_eq!(r["answers"], sent, "abated requests are not answers");
    assert_eq!(r["error_rate"], 0.0);
    assert_eq!(r["by_type"]["event"]["abated"], abated);
    assert_eq!(r["by_type"]["event"]["latency"]["count"], sent);
    assert_eq!((u(&r["probes"]), r["doic"].as_bool()), (0, Some(true)));
    // Every answer carries the same report: accepted once.
    assert_eq!(r["olrs_accepted"], 1, "{r}");
    assert_eq!(r["last_reduction_percentage"], 50);

    // Sessions: CCR-Is (and CCR-Us when needed) are abated, never a CCR-T, so every session
    // that started also ended.
    let out = loadtest(&[
        "run",
        "--server",
        &addr,
        "--doic",
        "--sessions",
        "4",
        "--updates",
        "2",
        "--requests",
        "2000",
        "--duration-s",
        "60",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r2 = &json(&out)["runs"][0];
    let by = &r2["by_type"];
    assert_eq!(by["termination"]["abated"], 0, "{by}");
    assert_eq!(
        by["termination"]["answers"], by["initial"]["answers"],
        "{by}"
    );
    let abated2 = u(&r2["abated"]);
    assert_eq!(
        abated2,
        u(&by["initial"]["abated"]) + u(&by["update"]["abated"])
    );
    let share = abated2 as f64 / (abated2 + u(&r2["sent"])) as f64;
    assert!((0.45..=0.55).contains(&share), "{share}: {r2}");
    assert_eq!(r2["answers"], r2["sent"]);
    let (ccrs, announcing) = server.join().unwrap();
    assert_eq!(ccrs, sent + u(&r2["sent"]));
    assert_eq!(announcing, ccrs, "every CCR announced DOIC");
}

#[test]
fn at_reduction_100_only_probes_go_and_without_doic_reports_are_ignored() {
    let (addr, server) = reporting_server(report(100), 2);
    let addr = addr.to_string();
    let out = loadtest(&[
        "run",
        "--server",
        &addr,
        "--doic",
        "--scenario",
        "event",
        "--sessions",
        "4",
        "--requests",
        "1000",
        "--duration-s",
        "60",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // "  DOIC: abated 987 (event 987), probes 9; 1 OLRs accepted, last reduction 100%"
    let line = stdout
        .lines()
        .find(|l| l.contains("DOIC: abated"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let number_after = |word: &str| -> u64 {
        let mut w = line.split_whitespace();
        w.find(|x| *x == word);
        w.next()
            .and_then(|n| n.trim_end_matches([',', ';']).parse().ok())
            .unwrap_or_else(|| panic!("{word} in {line}"))
    };
    let (abated, probes) = (number_after("abated"), number_after("probes"));
    // After the first window (4 requests), one in 100 of what would be abated goes.
    assert!((9..=10).contains(&probes), "{line}");
    assert!((985..=991).contains(&abated), "{line}");
    assert!(
        line.contains(&format!("(event {abated})"))
            && line.contains("1 OLRs accepted, last reduction 100%"),
        "{line}"
    );
    let sent_with_doic = 1000 - abated;

    // Without --doic: the same reports change nothing, and no request announces DOIC.
    let out = loadtest(&[
        "run",
        "--server",
        &addr,
        "--scenario",
        "event",
        "--sessions",
        "4",
        "--requests",
        "1000",
        "--duration-s",
        "60",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r = &json(&out)["runs"][0];
    assert_eq!((u(&r["sent"]), u(&r["answers"])), (1000, 1000), "{r}");
    assert_eq!((u(&r["abated"]), u(&r["olrs_accepted"])), (0, 0), "{r}");
    assert_eq!(r["doic"], false);
    assert!(r["last_reduction_percentage"].is_null());
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("DOIC"),
        "no DOIC line in JSON"
    );
    let (ccrs, announcing) = server.join().unwrap();
    assert_eq!((ccrs, announcing), (sent_with_doic + 1000, sent_with_doic));
}

/// The load tool plays the network side: it answers RAR with RAA and sends the update at once
/// (FORCED_REAUTHORISATION), and answers ASR with ASA and ends the session; its report says
/// how many came and how long the re-authorisation took.
#[test]
fn the_load_tool_answers_rar_and_asr_as_a_gateway_does() {
    let admin_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let d = start_ocfd_with(|c| c.admin.listen = Some(format!("127.0.0.1:{admin_port}")));
    let addr = d.addr.to_string();
    let token = std::fs::read_to_string(d._state.path().join("admin-token")).unwrap();
    let api = ocf::ctl::http::Client {
        addr: format!("127.0.0.1:{admin_port}").parse().unwrap(),
        token: Some(token.trim().to_owned()),
        timeout: std::time::Duration::from_secs(10),
    };
    let sessions_open = |path: &str| {
        let a = api
            .call("GET", &format!("/v1/sessions/{path}"), None)
            .unwrap();
        a.json().as_array().map_or(0, Vec::len)
    };
    let wait_open = |path: &str, n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while sessions_open(path) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} sessions never opened"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let spawn = |requests: &str| {
        Command::new(env!("CARGO_BIN_EXE_ocf-loadtest"))
            .args([
                "run",
                "--server",
                &addr,
                "--connections",
                "1",
                "--sessions",
                "20",
                "--think-ms",
                "600000",
                "--requests",
                requests,
                "--duration-s",
                "60",
                "--max-error-rate",
                "1",
                "--json",
                "--quiet",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // 20 sessions think for ten minutes; a manager re-authorises them all: 20 RARs, 20 forced
    // updates, and the run (40 requests) is done.
    let run = spawn("40");
    wait_open("acme", 20);
    let a = api.call("POST", "/v1/reauth/acme", None).unwrap();
    assert_eq!(a.status, 202, "{}", a.reason());
    let out = run.wait_with_output().unwrap();
    let r = json(&out);
    let s = &r["runs"][0]["server_requests"];
    assert_eq!(s["rar"], 20, "{}", text(&out));
    assert_eq!(s["forced_updates_answered"], 20, "{}", text(&out));
    assert!(s["reauth_s"].as_f64().is_some_and(|t| t >= 0.0), "{s}");
    assert_eq!(
        r["runs"][0]["by_type"]["update"]["result_codes"]["2001"],
        20,
        "{}",
        text(&out)
    );

    // The same sessions blocked: 20 ASRs, each session ended with a CCR-T; the new sessions
    // that follow are refused 4010.
    let run = spawn("400");
    wait_open("acme", 20);
    let a = api
        .call("PUT", "/v1/blocked/acme/engineering", None)
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.reason());
    let out = run.wait_with_output().unwrap();
    let r = json(&out);
    let s = &r["runs"][0]["server_requests"];
    assert_eq!(s["asr"], 20, "{}", text(&out));
    let t = &r["runs"][0]["by_type"]["termination"]["result_codes"];
    assert!(
        t["2001"].as_u64().is_some_and(|n| n >= 20),
        "{}",
        text(&out)
    );
    assert!(
        r["runs"][0]["by_type"]["initial"]["result_codes"]["4010"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{}",
        text(&out)
    );
    d.stop();
}

/// The load tool as a PCRF on Sy: it subscribes to subscribers' policy counters, answers the
/// notification that Gy usage past 80% brings, and unsubscribes.
#[test]
fn the_load_tool_is_a_pcrf_on_sy() {
    use std::io::BufRead;
    let d = start_ocfd();
    let addr = d.addr.to_string();
    let mut pcrf = Command::new(env!("CARGO_BIN_EXE_ocf-loadtest"))
        .args([
            "sy",
            "--server",
            &addr,
            "--origin-host",
            "pcrf.localdomain",
            "--subscribers",
            "15551008000:3",
            "--duration-s",
            "6",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once subscribed (bounded: the child's stderr ends if it fails)...
    let mut err = std::io::BufReader::new(pcrf.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("subscribed") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "the PCRF ended before subscribing"
        );
    }
    assert!(line.contains("subscribed 3"), "{line}");
    // ...9 MiB of the first device's 10 through Gy: warn-80.
    let out = loadtest(&[
        "run",
        "--server",
        &addr,
        "--subscribers",
        "15551008000:1",
        "--connections",
        "1",
        "--sessions",
        "1",
        "--updates",
        "0",
        "--requests",
        "2",
        "--request-octets",
        "9437184",
        "--duration-s",
        "30",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = pcrf.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["subscribed"], 3, "{v}");
    assert_eq!(v["unsubscribed"], 3, "{v}");
    assert!(
        v["statuses"]["normal"].as_u64().is_some_and(|n| n >= 3),
        "{v}"
    );
    assert_eq!(v["notifications"], 1, "{v}");
    assert_eq!(v["changes"]["warn-80"], 1, "{v}");
    d.stop();
}
