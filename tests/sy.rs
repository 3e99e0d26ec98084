//! Sy end to end over TCP: a PCRF connects with application 16777302, subscribes to a
//! subscriber's policy counters with a Spending-Limit-Request, gets their statuses, is told by a
//! Spending-Status-Notification when usage through Gy moves one to `warn-80` and then
//! `exhausted`, and ends the subscription with a Session-Termination-Request; an unknown
//! subscriber gets DIAMETER_ERROR_USER_UNKNOWN.

mod common;

use bytes::BytesMut;
use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, UPDATE};
use ocf_protocol::codes::avp as c;
use ocf_protocol::{Header, Message, MessageWriter};

const MIB: u64 = 1 << 20;
const SY: u32 = 16777302;
const PCRF: &str = "pcrf.localdomain";
const DEVICE: &str = "15551009300";
const COUNTER: &str = "acme/iot/15551009300:octets:month";

fn slr(sid: &str, msisdn: &str, hop: u32) -> BytesMut {
    let mut b = BytesMut::new();
    let mut w = MessageWriter::new(&mut b, &Header::request(8388635, SY, hop, hop));
    w.utf8(c::SESSION_ID, sid);
    w.u32(c::AUTH_APPLICATION_ID, SY);
    w.identity(c::ORIGIN_HOST, PCRF);
    w.identity(c::ORIGIN_REALM, "localdomain");
    w.identity(c::DESTINATION_REALM, "localdomain");
    w.u32(c::SL_REQUEST_TYPE, 0);
    let g = w.begin_group(c::SUBSCRIPTION_ID);
    w.u32(c::SUBSCRIPTION_ID_TYPE, 0);
    w.utf8(c::SUBSCRIPTION_ID_DATA, msisdn);
    w.end_group(g);
    w.finish();
    b
}

/// Each Policy-Counter-Status-Report as (identifier, status).
fn reports(m: &Message) -> Vec<(String, String)> {
    m.avps()
        .filter(|a| a.is(c::POLICY_COUNTER_STATUS_REPORT))
        .map(|r| {
            let get = |k| {
                r.children()
                    .find(|a| a.is(k))
                    .and_then(|a| a.utf8().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            (
                get(c::POLICY_COUNTER_IDENTIFIER),
                get(c::POLICY_COUNTER_STATUS),
            )
        })
        .collect()
}

/// Reads the next SNR, answers it SNA 2001, and returns its reports.
fn expect_snr(pcrf: &mut Conn, sid: &str) -> Vec<(String, String)> {
    let snr = pcrf.expect_frame();
    assert_eq!(
        (snr.header.command_code, snr.header.application_id),
        (8388636, SY),
        "{snr:?}"
    );
    assert_eq!(snr.find(c::SESSION_ID).unwrap().utf8().unwrap(), sid);
    assert_eq!(
        snr.find(c::DESTINATION_HOST).unwrap().identity().unwrap(),
        PCRF
    );
    pcrf.send(&answer_of(&snr, PCRF, 2001));
    reports(&snr)
}

#[test]
fn a_pcrf_subscribes_is_notified_of_changes_and_unsubscribes() {
    let d = Daemon::start("");
    let mut pcrf = Conn::connect(d.addr);
    let mut id = identity(PCRF);
    id.auth_application_ids = vec![SY];
    let mut cer = BytesMut::new();
    id.write_cer(&mut cer, 1, 1);
    pcrf.send(&cer);
    let cea = pcrf.expect_frame();
    assert_eq!(result_code(&cea), 2001);
    assert!(
        cea.avps()
            .any(|a| a.is(c::AUTH_APPLICATION_ID) && a.u32() == Ok(SY)),
        "the CEA names Sy"
    );

    // An unknown subscriber: DIAMETER_ERROR_USER_UNKNOWN.
    pcrf.send(&slr("pcrf;sy;0", "4470000000", 2));
    let sla = pcrf.expect_frame();
    let er = sla
        .find(c::EXPERIMENTAL_RESULT)
        .expect("Experimental-Result");
    assert_eq!(
        er.children()
            .find(|a| a.is(c::EXPERIMENTAL_RESULT_CODE))
            .and_then(|a| a.u32().ok()),
        Some(5030)
    );

    // Subscribed: every counter on the device's path, each normal.
    let sid = "pcrf;sy;1";
    pcrf.send(&slr(sid, DEVICE, 3));
    let sla = pcrf.expect_frame();
    assert_eq!(
        (sla.header.command_code, result_code(&sla)),
        (8388635, 2001)
    );
    let all = reports(&sla);
    assert!(
        all.contains(&(COUNTER.to_owned(), "normal".to_owned())),
        "{all:?}"
    );
    assert!(
        all.contains(&("acme:octets:month".to_owned(), "normal".to_owned())),
        "{all:?}"
    );

    // Gy usage: 8 MiB of the device's 10 is warn-80, then 10 MiB exhausted.
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let gy = "pgw.localdomain;sy;1";
    let i = gw.ask(
        &CcrSpec::new(gy, INITIAL, 0)
            .msisdn(DEVICE)
            .mscc(MsccSpec::ask(10, MIB)),
    );
    assert_eq!(i.result_code, 2001);
    let u = gw.ask(&CcrSpec::new(gy, UPDATE, 1).mscc(MsccSpec::report(10, 8 * MIB, true)));
    assert_eq!(u.result_code, 2001);
    assert_eq!(
        expect_snr(&mut pcrf, sid),
        [(COUNTER.to_owned(), "warn-80".to_owned())],
        "only what changed"
    );
    // Charged; nothing more to grant (4012).
    let u = gw.ask(&CcrSpec::new(gy, UPDATE, 2).mscc(MsccSpec::report(10, 2 * MIB, true)));
    assert_eq!(u.result_code, 4012, "{u:?}");
    assert_eq!(
        expect_snr(&mut pcrf, sid),
        [(COUNTER.to_owned(), "exhausted".to_owned())]
    );

    // Unsubscribed; a second STR for it is unknown.
    for (hop, want) in [(4, 2001), (5, 5002)] {
        let mut str_ = BytesMut::new();
        let mut w = MessageWriter::new(&mut str_, &Header::request(275, SY, hop, hop));
        w.utf8(c::SESSION_ID, sid);
        w.identity(c::ORIGIN_HOST, PCRF);
        w.identity(c::ORIGIN_REALM, "localdomain");
        w.identity(c::DESTINATION_REALM, "localdomain");
        w.u32(c::AUTH_APPLICATION_ID, SY);
        w.u32(c::TERMINATION_CAUSE, 1);
        w.finish();
        pcrf.send(&str_);
        let sta = pcrf.expect_frame();
        assert_eq!((sta.header.command_code, result_code(&sta)), (275, want));
    }
    // A malformed SLR (no SL-Request-Type) gets 5005 with the missing AVP, the connection
    // stays.
    let mut bad = BytesMut::new();
    let mut w = MessageWriter::new(&mut bad, &Header::request(8388635, SY, 6, 6));
    w.utf8(c::SESSION_ID, "pcrf;sy;bad");
    w.u32(c::AUTH_APPLICATION_ID, SY);
    w.identity(c::ORIGIN_HOST, PCRF);
    w.identity(c::ORIGIN_REALM, "localdomain");
    w.identity(c::DESTINATION_REALM, "localdomain");
    w.finish();
    pcrf.send(&bad);
    assert_eq!(result_code(&pcrf.expect_frame()), 5005);
    pcrf.send(&slr("pcrf;sy;2", DEVICE, 7));
    assert_eq!(result_code(&pcrf.expect_frame()), 2001);
}
