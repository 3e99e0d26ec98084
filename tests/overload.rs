//! Overload shedding: credit-control requests that have waited past the overload budget since
//! the read that brought them are answered 3004 DIAMETER_TOO_BUSY (E bit, Session-Id echoed)
//! and charge nothing; the rest are answered as usual; nothing goes unanswered.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use bytes::BytesMut;
use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec};

fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_burst_past_the_budget_is_shed_with_3004_and_not_charged() {
    // A budget of 1 µs: within one read, anything after the first few requests is late.
    let mut d = Daemon::start("overload_queue_us = 1");
    let admin = logged_addr(&d.wait_log("listening transport=\"http\""));
    let mut conn = Conn::connect(d.addr);
    assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);
    const N: u32 = 400;
    let mut burst = BytesMut::new();
    for k in 0..N {
        CcrSpec::new(format!("burst;{k}"), INITIAL, 0)
            .msisdn(&(15551000000u64 + u64::from(k)).to_string())
            .mscc(MsccSpec {
                rating_group: Some(1),
                requested_octets: Some(Some(1000)),
                ..Default::default()
            })
            .write(&mut burst, 1000 + k, 1000 + k);
    }
    conn.send(&burst);
    let mut codes: HashMap<u32, u32> = HashMap::new();
    for _ in 0..N {
        let m = conn.expect_frame();
        let rc = result_code(&m);
        let k = m.header.hop_by_hop - 1000;
        let sid = m
            .session_id()
            .and_then(|a| a.utf8().ok())
            .map(str::to_owned);
        assert_eq!(sid.as_deref(), Some(format!("burst;{k}").as_str()));
        if rc == 3004 {
            assert!(m.header.flags.is_error(), "3004 carries the E bit");
        }
        *codes.entry(rc).or_default() += 1;
    }
    let (ok, busy) = (codes.get(&2001).copied(), codes.get(&3004).copied());
    assert_eq!(ok.unwrap_or(0) + busy.unwrap_or(0), N, "{codes:?}");
    assert!(ok.is_some() && busy.is_some(), "{codes:?}");
    // Shed requests opened no session and are counted; wait (bounded) for the gauges.
    let want = (u64::from(ok.unwrap_or(0)), u64::from(busy.unwrap_or(0)));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let seen = (
            metric(admin, "ocfd_sessions_open"),
            metric(admin, "ocfd_overload_shed_total"),
        );
        if seen == (Some(want.0), Some(want.1)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics {seen:?}, answers {want:?}"
        );
        let ticks = d.proc.output().matches("supervision tick").count();
        d.proc.wait_count("supervision tick", ticks + 1, WAIT);
    }
    d.assert_serving();
}
