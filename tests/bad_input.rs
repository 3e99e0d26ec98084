//! Bad input against the real daemon over TCP: each case on its own connection, checking the
//! exact answer (Result-Code, E bit, Failed-AVP) or the close, then that a valid CER on a new
//! connection still completes.

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use ocf_protocol::avp::AvpIter;
use ocf_protocol::codes::avp as c;
use ocf_protocol::{Header, Message, MessageWriter};

/// A CER from `host` with `extra` raw octets appended as AVPs (the message length is fixed up).
fn cer_with(host: &str, omit_origin_host: bool, extra: &[u8]) -> BytesMut {
    let id = identity(host);
    let mut b = BytesMut::new();
    let mut h = Header::request(257, 0, 0x77, 0x88);
    h.flags.0 = 0x80;
    let mut w = MessageWriter::new(&mut b, &h);
    if !omit_origin_host {
        w.identity(c::ORIGIN_HOST, host);
    }
    w.identity(c::ORIGIN_REALM, &id.origin_realm);
    w.address(
        c::HOST_IP_ADDRESS,
        &ocf_protocol::types::Address::Ip(id.host_ip_addresses[0]),
    );
    w.u32(c::VENDOR_ID, 0);
    w.utf8(c::PRODUCT_NAME, "bad-input");
    w.u32(c::AUTH_APPLICATION_ID, 4);
    w.raw(extra);
    w.finish();
    b
}

fn failed_avp(m: &Message) -> ocf_protocol::Avp<'_> {
    let f = m.find(c::FAILED_AVP).expect("Failed-AVP");
    AvpIter::new(f.data).next().unwrap()
}

/// Sends `bytes` on a new connection and returns the one answer, checking the connection then
/// closes when `closes`.
fn answer_to(d: &mut Daemon, bytes: &[u8], closes: bool) -> Message {
    let mut conn = Conn::connect(d.addr);
    conn.send(bytes);
    let m = conn.expect_frame();
    if closes {
        conn.expect_closed();
    }
    m
}

fn header(version: u8, len: u32, flags: u8, code: u32) -> Vec<u8> {
    let mut v = vec![
        version,
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        flags,
        (code >> 16) as u8,
        (code >> 8) as u8,
        code as u8,
    ];
    v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78]);
    v
}

#[test]
fn truncated_header_is_closed_without_answer() {
    let mut d = Daemon::start("");
    let mut conn = Conn::connect(d.addr);
    conn.send(&header(1, 20, 0x80, 257)[..10]);
    conn.s.tcp().shutdown(std::net::Shutdown::Write).unwrap();
    conn.expect_closed();
    d.assert_serving();
}

#[test]
fn version_2_is_5011_then_close() {
    let mut d = Daemon::start("");
    let m = answer_to(&mut d, &header(2, 20, 0x80, 257), true);
    assert_eq!(result_code(&m), 5011);
    assert!(!m.header.flags.is_error());
    assert_eq!((m.header.hop_by_hop, m.header.end_to_end), (0x1234, 0x5678));
    assert!(m.find(c::ERROR_MESSAGE).is_some());
    d.assert_serving();
}

#[test]
fn length_below_20_is_5015_then_close() {
    let mut d = Daemon::start("");
    let m = answer_to(&mut d, &header(1, 12, 0x80, 257), true);
    assert_eq!(result_code(&m), 5015);
    d.assert_serving();
}

#[test]
fn length_over_the_maximum_is_5015_then_close() {
    let mut d = Daemon::start("");
    let m = answer_to(&mut d, &header(1, 64 * 1024 + 4, 0x80, 257), true);
    assert_eq!(result_code(&m), 5015);
    d.assert_serving();
}

#[test]
fn length_not_a_multiple_of_4_is_5015_and_the_connection_goes_on() {
    let mut d = Daemon::start("");
    let mut conn = Conn::connect(d.addr);
    let mut bad = header(1, 22, 0x80, 257);
    bad.extend_from_slice(&[0, 0]);
    conn.send(&bad);
    assert_eq!(result_code(&conn.expect_frame()), 5015);
    // The frame was delimited, so the stream is still good: the handshake works on it.
    assert_eq!(result_code(&conn.handshake("gw.localdomain")), 2001);
    d.assert_serving();
}

#[test]
fn avp_length_below_8_is_5014() {
    let mut d = Daemon::start("");
    let m = answer_to(
        &mut d,
        &cer_with("gw.localdomain", false, &[0, 0, 0x03, 0xe7, 0x40, 0, 0, 4]),
        true,
    );
    assert_eq!(result_code(&m), 5014);
    assert_eq!(m.header.command_code, 257);
    let f = failed_avp(&m);
    assert_eq!((f.code, f.data.len()), (999, 0));
    d.assert_serving();
}

#[test]
fn avp_running_past_the_message_is_5014() {
    let mut d = Daemon::start("");
    let m = answer_to(
        &mut d,
        &cer_with(
            "gw.localdomain",
            false,
            &[0, 0, 0x01, 0x0b, 0, 0, 0, 200, 0, 0, 0, 1],
        ),
        true,
    );
    assert_eq!(result_code(&m), 5014);
    assert_eq!(failed_avp(&m).code, 267);
    d.assert_serving();
}

#[test]
fn grouped_avp_whose_children_overflow_it_is_5014() {
    let mut d = Daemon::start("");
    // Vendor-Specific-Application-Id (260, 20 octets) holding Vendor-Id claiming 40 octets.
    let group = [
        0, 0, 1, 4, 0x40, 0, 0, 20, 0, 0, 1, 10, 0x40, 0, 0, 40, 0, 0, 0x28, 0xaf,
    ];
    let m = answer_to(&mut d, &cer_with("gw.localdomain", false, &group), true);
    assert_eq!(result_code(&m), 5014);
    let f = failed_avp(&m);
    assert_eq!(f.code, 260, "Failed-AVP names the group");
    assert_eq!(
        f.children().next().unwrap().code,
        266,
        "and the child inside it"
    );
    d.assert_serving();
}

#[test]
fn unknown_avp_with_m_bit_is_5001() {
    let mut d = Daemon::start("");
    let unknown = [0, 0, 0x27, 0x0f, 0x40, 0, 0, 12, 1, 2, 3, 4];
    let m = answer_to(&mut d, &cer_with("gw.localdomain", false, &unknown), true);
    assert_eq!(result_code(&m), 5001);
    let f = failed_avp(&m);
    assert_eq!((f.code, f.data), (9999, &[1u8, 2, 3, 4][..]));
    d.assert_serving();
}

#[test]
fn cer_without_origin_host_is_5005() {
    let mut d = Daemon::start("");
    let m = answer_to(&mut d, &cer_with("gw.localdomain", true, &[]), true);
    assert_eq!(result_code(&m), 5005);
    assert_eq!(failed_avp(&m).code, 264);
    d.assert_serving();
}

#[test]
fn repeated_origin_host_is_5009() {
    let mut d = Daemon::start("");
    let mut extra = BytesMut::new();
    ocf_protocol::Avp::new(264, 0x40, 0, b"second.localdomain").encode(&mut extra);
    let m = answer_to(&mut d, &cer_with("gw.localdomain", false, &extra), true);
    assert_eq!(result_code(&m), 5009);
    d.assert_serving();
}

#[test]
fn reserved_avp_flag_bits_are_3009() {
    let mut d = Daemon::start("");
    let odd = [0, 0, 0x01, 0x0b, 0x01, 0, 0, 12, 0, 0, 0, 1];
    let m = answer_to(&mut d, &cer_with("gw.localdomain", false, &odd), true);
    assert_eq!(result_code(&m), 3009);
    assert!(m.header.flags.is_error());
    d.assert_serving();
}

fn open_conn(d: &Daemon) -> Conn {
    let mut conn = Conn::connect(d.addr);
    assert_eq!(result_code(&conn.handshake("gw.localdomain")), 2001);
    conn
}

#[test]
fn answer_without_a_request_is_dropped_silently() {
    let mut d = Daemon::start("");
    let mut conn = open_conn(&d);
    let mut dwa = BytesMut::new();
    identity("gw.localdomain").write_dwa(&mut dwa, &Header::request(280, 0, 0xabcd, 0xef01));
    conn.send(&dwa);
    let mut dwr = BytesMut::new();
    identity("gw.localdomain").write_dwr(&mut dwr, 0x4242, 0x4343);
    conn.send(&dwr);
    // The first thing back is the DWA to our DWR: nothing was sent for the stray answer.
    let m = conn.expect_frame();
    assert_eq!(
        (m.header.command_code, m.header.hop_by_hop, result_code(&m)),
        (280, 0x4242, 2001)
    );
    d.assert_serving();
}

#[test]
fn request_with_e_bit_is_3008() {
    let mut d = Daemon::start("");
    let mut conn = open_conn(&d);
    let mut dwr = BytesMut::new();
    identity("gw.localdomain").write_dwr(&mut dwr, 0x99, 0x98);
    dwr[4] |= 0x20;
    conn.send(&dwr);
    let m = conn.expect_frame();
    assert_eq!(
        (
            result_code(&m),
            m.header.flags.is_error(),
            m.header.hop_by_hop
        ),
        (3008, true, 0x99)
    );
    d.assert_serving();
}

fn ccr(app: u32, code: u32, realm: &str) -> BytesMut {
    let mut b = BytesMut::new();
    let mut w = MessageWriter::new(&mut b, &Header::request(code, app, 5, 6));
    w.utf8(c::SESSION_ID, "gw.localdomain;1;1");
    w.identity(c::ORIGIN_HOST, "gw.localdomain");
    w.identity(c::ORIGIN_REALM, "localdomain");
    w.identity(c::DESTINATION_REALM, realm);
    w.u32(c::AUTH_APPLICATION_ID, app);
    w.utf8(c::SERVICE_CONTEXT_ID, "32251@3gpp.org");
    w.u32(c::CC_REQUEST_TYPE, 1);
    w.u32(c::CC_REQUEST_NUMBER, 0);
    w.finish();
    b
}

#[test]
fn unsupported_command_application_and_realm() {
    let mut d = Daemon::start("");
    let mut conn = open_conn(&d);
    for (bytes, want, e_bit) in [
        (ccr(4, 999, "localdomain"), 3001, true),
        (ccr(16777238, 272, "localdomain"), 3007, true),
        (ccr(4, 272, "elsewhere.example"), 3003, true),
        // A valid CCR for nobody the server knows.
        (ccr(4, 272, "localdomain"), 5030, false),
    ] {
        conn.send(&bytes);
        let m = conn.expect_frame();
        assert_eq!(result_code(&m), want);
        assert_eq!(m.header.flags.is_error(), e_bit);
        assert_eq!(
            m.session_id().unwrap().utf8().unwrap(),
            "gw.localdomain;1;1",
            "Session-Id echoed"
        );
    }
    d.assert_serving();
}

#[test]
fn a_mebibyte_of_random_bytes_closes_only_that_connection() {
    let mut d = Daemon::start("");
    let mut rng = fastrand::Rng::with_seed(0x0cfd);
    let mut junk: Vec<u8> = (0..1 << 20).map(|_| rng.u8(..)).collect();
    junk[0] = 0x5a; // not version 1, so the very first header is rejected
    let mut conn = Conn::connect(d.addr);
    // The daemon may close before reading everything; a failed write is part of the outcome.
    let _ = std::io::Write::write_all(&mut conn.s, &junk);
    loop {
        match conn.read(WAIT) {
            Read_::Frame(m) => assert_eq!(result_code(&m), 5011),
            Read_::Closed => break,
            Read_::Timeout => panic!("connection not closed"),
        }
    }
    d.assert_serving();
}

#[test]
fn half_a_message_then_silence_is_closed_after_the_timeout() {
    let mut d = Daemon::start("partial_message_timeout_s = 1");
    let mut conn = open_conn(&d);
    let mut dwr = BytesMut::new();
    identity("gw.localdomain").write_dwr(&mut dwr, 1, 2);
    let start = Instant::now();
    conn.send(&dwr[..dwr.len() / 2]);
    conn.expect_closed();
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
    d.wait_log("message left half sent");
    d.assert_serving();
}

#[test]
fn a_thousand_idle_connections_do_not_block_service_and_are_reaped() {
    let mut d = Daemon::start("handshake_timeout_s = 3");
    let mut idle: Vec<Conn> = (0..1000).map(|_| Conn::connect(d.addr)).collect();
    d.assert_serving();
    // Connections that never send CER are closed after the handshake timeout.
    for conn in &mut idle {
        conn.expect_closed();
    }
    d.assert_serving();
}

#[test]
fn shutdown_sends_dpr_and_exits_cleanly() {
    let mut d = Daemon::start("");
    let mut conn = open_conn(&d);
    let ok = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(d.pid().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let dpr = conn.expect_frame();
    assert_eq!(
        (dpr.header.command_code, dpr.header.flags.is_request()),
        (282, true)
    );
    assert_eq!(
        dpr.find(c::DISCONNECT_CAUSE).unwrap().u32().unwrap(),
        0,
        "REBOOTING"
    );
    let mut dpa = BytesMut::new();
    identity("gw.localdomain").write_dpa(&mut dpa, &dpr.header);
    conn.send(&dpa);
    conn.expect_closed();
    let status = d.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn several_listeners_on_ipv4_and_ipv6() {
    let mut d = Daemon::start_with("", &["--listen", "127.0.0.1:0", "--listen", "[::1]:0"]);
    let v6 = d.wait_log("listening transport=\"tcp\" addr=[::1]:");
    let addr = logged_addr(&v6);
    let mut conn = Conn::connect(addr);
    let cea = conn.handshake("gw6.localdomain");
    assert_eq!(result_code(&cea), 2001);
    // Host-IP-Address is the address the peer reached us on.
    let ip = cea.find(c::HOST_IP_ADDRESS).unwrap().address().unwrap();
    assert_eq!(ip, ocf_protocol::types::Address::Ip("::1".parse().unwrap()));
    d.assert_serving();
}
