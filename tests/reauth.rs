//! Re-authorisation end to end over TCP: when what a gateway holds no longer fits (a device's
//! limit lowered under its reservation, allowance moved away from its cost centre, its
//! tenant's policy changed) or a manager asks, ocfd sends Re-Auth-Request on the gateway's
//! connection; the gateway answers RAA and its CCR-U (FORCED_REAUTHORISATION) gets a grant
//! within the new limits. A raised limit sends nothing.

mod common;

use bytes::BytesMut;
use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, UPDATE};
use ocf_protocol::codes::avp as c;
use ocf_protocol::{Message, MessageWriter};

const MIB: u64 = 1 << 20;
const GW: &str = "pgw.localdomain";
/// Reporting-Reason FORCED_REAUTHORISATION (TS 32.299).
const FORCED_REAUTHORISATION: u32 = 7;

/// Reads the RAR ocfd sends for `sid` and answers it RAA 2001.
fn expect_rar(gw: &mut Gw, sid: &str) -> Message {
    let rar = gw.conn.expect_frame();
    assert_eq!(rar.header.command_code, 258, "{rar:?}");
    assert!(rar.header.flags.is_request());
    assert_eq!(rar.header.application_id, 4);
    assert_eq!(rar.find(c::SESSION_ID).unwrap().utf8().unwrap(), sid);
    assert_eq!(
        rar.find(c::DESTINATION_HOST).unwrap().identity().unwrap(),
        GW
    );
    assert_eq!(rar.find(c::RE_AUTH_REQUEST_TYPE).unwrap().u32().unwrap(), 0);
    gw.conn.send(&answer_of(&rar, GW, 2001));
    rar
}

/// The gateway's CCR-U after a RAR: reports `used`, asks for 8 MiB more; the grant.
fn forced_update(gw: &mut Gw, sid: &str, number: u32, used: u64) -> Option<u64> {
    let u = gw.ask(&CcrSpec::new(sid, UPDATE, number).mscc(MsccSpec {
        rating_group: Some(10),
        requested_octets: Some(Some(8 * MIB)),
        used_octets: Some(used),
        reporting_reason: Some(FORCED_REAUTHORISATION),
        ..Default::default()
    }));
    assert_eq!(u.result_code, 2001, "{u:?}");
    u.mscc[0].granted_octets
}

fn open(gw: &mut Gw, sid: &str, device: &str) -> Option<u64> {
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(device)
            .mscc(MsccSpec::ask(10, 8 * MIB)),
    );
    assert_eq!(i.result_code, 2001, "{i:?}");
    i.mscc[0].granted_octets
}

#[test]
fn what_no_longer_fits_is_reauthorised_and_granted_within_the_new_limits() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, GW);
    let device = "15551009000";
    let sid = "pgw.localdomain;rar;1";
    assert_eq!(open(&mut gw, sid, device), Some(8 * MIB));

    // Raised: nothing to re-authorise. Lowered under the 8 MiB held: RAR.
    let limits =
        |amount: &str| format!(r#"{{"limits":[{{"unit":"octets","amount":"{amount}"}}]}}"#);
    let path = format!("/v1/limits/acme/iot/{device}");
    let (status, _) = api.call("PUT", &path, Some(&limits("20 MiB")));
    assert_eq!(status, 200);
    let (status, _) = api.call("PUT", &path, Some(&limits("4 MiB")));
    assert_eq!(status, 200);
    let rar = expect_rar(&mut gw, sid);
    assert!(rar.find(c::ORIGIN_STATE_ID).is_some());
    // 1 MiB used: the new grant is what is left of 4 MiB, not the 8 asked for.
    assert_eq!(forced_update(&mut gw, sid, 1, MIB), Some(3 * MIB));

    // Allowance moved away from the cost centre until it no longer covers what is held.
    let (_, usage) = api.call("GET", "/v1/usage/acme/iot", None);
    let limit = usage["node"]["limits"][0]["limit"].as_u64().unwrap();
    let held = usage["node"]["limits"][0]["reserved"].as_u64().unwrap();
    let used = usage["node"]["limits"][0]["used"].as_u64().unwrap();
    assert_eq!((held, used), (3 * MIB, MIB));
    let away = limit - used - MIB;
    let (status, moved) = api.call(
        "POST",
        "/v1/moves",
        Some(&format!(
            r#"{{"from":"acme/iot","to":"acme","unit":"octets","amount":{away}}}"#
        )),
    );
    assert_eq!(status, 409, "the headroom bounds a move: {moved}");
    let (status, _) = api.call(
        "POST",
        "/v1/moves",
        Some(r#"{"from":"acme/iot","to":"acme","unit":"octets","amount":"1 MiB"}"#),
    );
    assert_eq!(status, 200);
    let ev = events_of(&api, "kind=allowance_moved", 1);
    let moved = &ev[0];
    assert_eq!(
        (
            moved["path"].as_str(),
            moved["to"].as_str(),
            moved["amount"].as_str()
        ),
        (Some("acme/iot"), Some("acme"), Some("1 MiB")),
        "{ev:?}"
    );
    // A move is bounded by the headroom, so what is held always fits after one. A manager
    // asking re-authorises every session under the node.
    let (status, n) = api.call("POST", "/v1/reauth/acme/iot", None);
    assert_eq!((status, n["sessions"].as_u64()), (202, Some(1)), "{n}");
    expect_rar(&mut gw, sid);
    assert_eq!(forced_update(&mut gw, sid, 2, 0), Some(3 * MIB));

    // The tenant's policy changed: what its gateways hold was granted under the old one.
    let (status, _) = api.call(
        "PUT",
        "/v1/policy/acme",
        Some(r#"{"slice_octets":"1 MiB"}"#),
    );
    assert_eq!(status, 200);
    expect_rar(&mut gw, sid);
    assert_eq!(
        forced_update(&mut gw, sid, 3, 0),
        Some(MIB),
        "the new slice"
    );

    // Every RAR was the one expected: none came while the gateway waited for a CCA (the
    // raised limit sent none).
    assert!(
        gw.answered.is_empty(),
        "unexpected requests: {:?}",
        gw.answered
    );
    // Bad input: 404 for no node, 400 for a bad path; nothing sent.
    assert_eq!(api.call("POST", "/v1/reauth/acme/nowhere", None).0, 404);
    assert_eq!(api.call("POST", "/v1/reauth/acme//x", None).0, 400);
    d.assert_serving();
    assert!(d.terminate().success());
}

#[test]
fn a_gateway_that_does_not_know_the_session_has_it_closed_here() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, GW);
    let device = "15551009100";
    let sid = "pgw.localdomain;rar;5002";
    assert_eq!(open(&mut gw, sid, device), Some(8 * MIB));
    let (status, _) = api.call("POST", &format!("/v1/reauth/acme/iot/{device}"), None);
    assert_eq!(status, 202);
    let rar = gw.conn.expect_frame();
    assert_eq!(rar.header.command_code, 258);
    gw.conn.send(&answer_of(&rar, GW, 5002));
    // Closed here (bounded wait): nothing open, nothing held.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, sessions) = api.call("GET", &format!("/v1/sessions/acme/iot/{device}"), None);
        if sessions.as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still open: {sessions}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (_, usage) = api.call("GET", &format!("/v1/usage/acme/iot/{device}"), None);
    assert_eq!(
        usage["node"]["limits"][0]["reserved"].as_u64(),
        Some(0),
        "{usage}"
    );
    let u = gw.ask(&CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, MIB, true)));
    assert_eq!(u.result_code, 5002, "{u:?}");
    assert!(d.terminate().success());
}

#[test]
fn a_dry_pool_asks_the_idle_holder_to_report_so_an_active_device_is_served() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let (status, _) = api.call(
        "PUT",
        "/v1/limits/acme/iot",
        Some(r#"{"limits":[{"unit":"octets","amount":"4 MiB"}]}"#),
    );
    assert_eq!(status, 200);
    let mut gw = Gw::open(&d, GW);
    // A takes the whole pool and goes idle.
    let idle = "pgw.localdomain;pool;idle";
    assert_eq!(open(&mut gw, idle, "15551009200"), Some(4 * MIB));
    // B finds it dry.
    let active = "pgw.localdomain;pool;active";
    let b = gw.ask(
        &CcrSpec::new(active, INITIAL, 0)
            .msisdn("15551009201")
            .mscc(MsccSpec::ask(10, MIB)),
    );
    assert_eq!(b.mscc[0].result_code, Some(4012), "{b:?}");
    // The holder is asked to report (RAR, within a supervision tick), reports 1 MiB used
    // and asks for nothing more: the rest returns to the pool.
    let rar = gw.conn.expect_frame();
    assert_eq!(rar.header.command_code, 258, "{rar:?}");
    assert_eq!(rar.find(c::SESSION_ID).unwrap().utf8().unwrap(), idle);
    gw.conn.send(&answer_of(&rar, GW, 2001));
    let u = gw.ask(&CcrSpec::new(idle, UPDATE, 1).mscc(MsccSpec {
        rating_group: Some(10),
        used_octets: Some(MIB),
        reporting_reason: Some(FORCED_REAUTHORISATION),
        ..Default::default()
    }));
    assert_eq!(u.result_code, 2001, "{u:?}");
    // B is served now.
    let b = gw.ask(&CcrSpec::new(active, UPDATE, 1).mscc(MsccSpec::ask(10, MIB)));
    assert_eq!(b.mscc[0].granted_octets, Some(MIB), "{b:?}");
    assert!(gw.answered.is_empty(), "{:?}", gw.answered);
    assert!(d.terminate().success());
}

#[test]
fn bad_answers_to_our_requests_lose_nothing() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, GW);
    let sid = "pgw.localdomain;rar;bad";
    assert_eq!(open(&mut gw, sid, "15551009500"), Some(8 * MIB));
    let (status, _) = api.call("POST", "/v1/reauth/acme/iot/15551009500", None);
    assert_eq!(status, 202);
    let rar = gw.conn.expect_frame();
    assert_eq!(rar.header.command_code, 258);
    // An answer that matches nothing we sent, then one with no Result-Code at all.
    for hbh in [
        rar.header.hop_by_hop.wrapping_add(1000),
        rar.header.hop_by_hop,
    ] {
        let mut h = rar.header.answer();
        h.hop_by_hop = hbh;
        let mut out = BytesMut::new();
        let mut w = MessageWriter::new(&mut out, &h);
        w.utf8(c::SESSION_ID, sid);
        w.identity(c::ORIGIN_HOST, GW);
        w.identity(c::ORIGIN_REALM, "localdomain");
        w.finish();
        gw.conn.send(&out);
    }
    // Nothing was lost: the session and its reservation are there and the gateway is served.
    let (_, sessions) = api.call("GET", "/v1/sessions/acme/iot/15551009500", None);
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");
    let u = gw.ask(&CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, MIB, true)));
    assert_eq!(u.result_code, 2001, "{u:?}");
    d.assert_serving();
    assert!(d.terminate().success());
}
