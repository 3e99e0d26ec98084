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

/// A burst of `n` CCR-Is; with `doic`, each announces the loss algorithm (RFC 7683).
fn burst(round: u32, n: u32, doic: bool) -> BytesMut {
    let mut out = BytesMut::new();
    let features = ocf_protocol::doic::encode(ocf_protocol::doic::OLR_DEFAULT_ALGO, None);
    for k in 0..n {
        let start = out.len();
        CcrSpec::new(format!("doic;{round};{k}"), INITIAL, 0)
            .msisdn(&(15551000000u64 + u64::from(k)).to_string())
            .mscc(MsccSpec {
                rating_group: Some(1),
                requested_octets: Some(Some(1000)),
                ..Default::default()
            })
            .write(&mut out, round * n + k, round * n + k);
        if doic {
            assert!(ocf_protocol::doic::append(&mut out, start, &features));
        }
    }
    out
}

/// Sends bursts of `n` until an answer carries an OC-OLR (or `rounds` are spent), checking
/// every answer's DOIC AVPs against what its request announced. Returns the first OLR seen
/// and the 3004 count.
fn overload_until_reported(
    d: &mut Daemon,
    conn: &mut Conn,
    n: u32,
    rounds: u32,
    doic_on: bool,
) -> (Option<ocf_protocol::doic::Olr>, u32) {
    let mut busy = 0;
    for round in 1..=rounds {
        conn.send(&burst(round, n, true));
        let mut seen = None;
        for _ in 0..n {
            let m = conn.expect_frame();
            let rc = result_code(&m);
            assert!(rc == 2001 || rc == 3004, "result {rc}");
            busy += u32::from(rc == 3004);
            let announced = ocf_protocol::doic::announced(m.avps());
            let olr = ocf_protocol::doic::olr(m.avps());
            if doic_on {
                // Every answer to a request that announced the loss algorithm selects it,
                // 3004s included.
                assert_eq!(
                    announced,
                    Some(ocf_protocol::doic::OLR_DEFAULT_ALGO),
                    "rc {rc}"
                );
                seen = seen.or(olr);
            } else {
                assert_eq!((announced, olr), (None, None), "DOIC is off");
            }
        }
        // A request that does not announce DOIC gets no DOIC AVP, overloaded or not.
        conn.send(&burst(round + 1000, 1, false));
        let plain = conn.expect_frame();
        assert!(
            plain
                .find(ocf_protocol::codes::avp::OC_SUPPORTED_FEATURES)
                .is_none()
        );
        assert!(plain.find(ocf_protocol::codes::avp::OC_OLR).is_none());
        if seen.is_some() {
            return (seen, busy);
        }
        // The report follows the refusals of the last second: wait for the next tick.
        let ticks = d.proc.output().matches("supervision tick").count();
        d.proc.wait_count("supervision tick", ticks + 1, WAIT);
    }
    (None, busy)
}

#[test]
fn doic_peers_are_told_to_reduce_while_requests_are_shed() {
    let mut d = Daemon::start("overload_queue_us = 1");
    let admin = logged_addr(&d.wait_log("listening transport=\"http\""));
    let mut conn = Conn::connect(d.addr);
    assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);
    let (olr, busy) = overload_until_reported(&mut d, &mut conn, 200, 10, true);
    assert!(busy > 0, "nothing was shed");
    let olr = olr.expect("an OC-OLR while requests were shed");
    assert_eq!(olr.report_type, ocf_protocol::doic::HOST_REPORT);
    assert!(olr.reduction > 0 && olr.reduction <= 100, "{olr:?}");
    assert_eq!(olr.validity_s, 10, "diameter.doic_validity_s's default");
    // Sequence numbers start from the clock, so they keep rising across restarts.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        olr.sequence > now_ms - 3_600_000 && olr.sequence <= now_ms,
        "{olr:?}"
    );
    // The reduction and the reports sent are in the metrics (refreshed by the next tick).
    let ticks = d.proc.output().matches("supervision tick").count();
    d.proc.wait_count("supervision tick", ticks + 1, WAIT);
    assert!(metric(admin, "ocfd_doic_reduction_percent").is_some_and(|r| r > 0));
    assert!(metric(admin, "ocfd_doic_olr_sent_total").is_some_and(|n| n > 0));
    d.assert_serving();
}

#[test]
fn with_doic_off_no_answer_carries_doic_avps() {
    let mut d = Daemon::start("overload_queue_us = 1\ndoic_validity_s = 0");
    let mut conn = Conn::connect(d.addr);
    assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);
    // Three rounds with ticks between them: long enough for a report to have gone out.
    let (olr, busy) = overload_until_reported(&mut d, &mut conn, 200, 3, false);
    assert!(busy > 0, "nothing was shed");
    assert_eq!(olr, None);
    d.assert_serving();
}
