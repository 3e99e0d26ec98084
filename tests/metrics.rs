//! The admin listener: Prometheus text on /metrics with the journal lag and open sessions,
//! and /health.

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
        // The CCR's record (sequence 1) has been written and the lag is a gauge line.
        if body.contains("ocfd_sessions_open 1") && body.contains("ocfd_journal_written_sequence 1")
        {
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
