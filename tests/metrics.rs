//! The admin listener: Prometheus text on /metrics (journal lag and latencies, sessions and
//! reservations, requests and answers by command, request type and Result-Code, answer
//! latency histograms, peers by state, per-enterprise usage), checked by `promtool check
//! metrics`; and /health.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use bytes::BytesMut;
use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec};

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn metrics_show_the_journal_lag_and_sessions() {
    let mut d = Daemon::start("");
    let line = d.wait_log("listening transport=\"http\"");
    let addr = logged_addr(&line);
    assert!(get(addr, "/health").ends_with("ok\n"));
    let mut conn = Conn::connect(d.addr);
    assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);
    let mut b = BytesMut::new();
    CcrSpec::new("m;1", INITIAL, 0)
        .msisdn("15551000007")
        .mscc(MsccSpec {
            rating_group: Some(1),
            requested_octets: Some(None),
            ..Default::default()
        })
        .write(&mut b, 1, 1);
    conn.send(&b);
    assert_eq!(result_code(&conn.expect_frame()), 2001);
    // The gauges refresh every second: wait (bounded) until the session shows.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let body = get(addr, "/metrics");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        // The CCR's records (its reservation and the session's state: sequences 1 and 2) have
        // been written and the lag is a gauge line.
        if body.contains("ocfd_sessions_open 1")
            && body.contains("ocfd_journal_written_sequence 2")
            && body.contains("ocfd_reservations_open 1")
        {
            check_traffic(&body);
            promtool(&body);
            assert!(
                body.contains("# TYPE ocfd_journal_lag_records gauge"),
                "{body}"
            );
            assert!(
                body.lines()
                    .any(|l| l.starts_with("ocfd_journal_lag_records ")),
                "{body}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session in the metrics: {body}"
        );
        // The next refresh.
        let ticks = d.proc.output().matches("supervision tick").count();
        d.proc.wait_count("supervision tick", ticks + 1, WAIT);
    }
}

/// The CCR-I and the CER of the test show where they should.
fn check_traffic(body: &str) {
    for want in [
        "ocfd_diameter_requests_total{command=\"CER\"} 1\n",
        "ocfd_diameter_requests_total{command=\"CCR\"} 1\n",
        "ocfd_diameter_answers_total{command=\"CEA\",request_type=\"none\",result_code=\"2001\"} 1\n",
        "ocfd_diameter_answers_total{command=\"CCA\",request_type=\"initial\",result_code=\"2001\"} 1\n",
        "ocfd_diameter_answer_latency_seconds_count{request_type=\"initial\"} 1\n",
        "ocfd_diameter_answer_latency_seconds_bucket{request_type=\"initial\",le=\"+Inf\"} 1\n",
        "ocfd_peers{state=\"open\"} 1\n",
        "# TYPE ocfd_journal_sync_latency_seconds histogram\n",
        "# TYPE ocfd_journal_write_latency_seconds histogram\n",
        // 10 MiB reserved at acme's root for the CCR-I; 1 TiB a month there.
        "ocfd_enterprise_reserved{tenant=\"acme\",unit=\"octets\",period=\"month\"} 10485760\n",
        "ocfd_enterprise_limit{tenant=\"acme\",unit=\"octets\",period=\"month\"} 1099511627776\n",
        "# TYPE ocfd_overload_shed_total counter\n",
    ] {
        assert!(body.contains(want), "no {want:?} in\n{body}");
    }
    // A consumer (a one-node tree) is not an enterprise series.
    assert!(!body.contains("tenant=\"alice\""), "{body}");
    let write_count = body
        .lines()
        .find(|l| l.starts_with("ocfd_journal_write_latency_seconds_count"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(write_count.is_some_and(|n| n >= 1), "{body}");
}

/// `promtool check metrics` accepts the exposition (run on the body without its HTTP head).
fn promtool(response: &str) {
    require_tool("promtool", "prometheus");
    let body = response.split_once("\r\n\r\n").map_or(response, |(_, b)| b);
    let body = if response
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{body}");
    // Lint remarks (names, units, HELP) count as failures too.
    assert!(said.trim().is_empty(), "promtool: {said}");
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
