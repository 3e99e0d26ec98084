//! Blocking end to end over TCP: a manager blocks a device (ocfctl); its gateway gets an
//! Abort-Session-Request for the open session on the connection it came from, ends the
//! session with a CCR-T that is charged, and every new request for the device is refused 4010;
//! an open session under a blocked cost centre gets 4010 for its services and holds nothing;
//! the block survives a kill -9; unblocking lets the device in again.

mod common;

use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, TERMINATION, UPDATE};
use ocf_protocol::codes::avp as c;

const MIB: u64 = 1 << 20;
const GW: &str = "pgw.localdomain";

fn ctl(api: &Http, state: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ocfctl"))
        .arg("--url")
        .arg(format!("http://{}", api.addr))
        .arg("--token-file")
        .arg(state.join("admin-token"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn open(gw: &mut Gw, sid: &str, device: &str) {
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(device)
            .mscc(MsccSpec::ask(10, MIB)),
    );
    assert_eq!(i.result_code, 2001, "{i:?}");
}

#[test]
fn a_blocked_device_is_aborted_refused_and_let_in_again() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let state = d.state_path();
    let mut gw = Gw::open(&d, GW);
    let device = "15551008600";
    let sid = "pgw.localdomain;blocked;1";
    open(&mut gw, sid, device);

    let shown = ctl(&api, &state, &["block", &format!("acme/iot/{device}")]);
    assert!(shown.contains("blocked"), "{shown}");
    // The ASR comes on the gateway's own connection, for the session, to the gateway.
    let asr = gw.conn.expect_frame();
    assert_eq!(asr.header.command_code, 274);
    assert!(asr.header.flags.is_request());
    assert_eq!(asr.header.application_id, 4);
    assert_eq!(asr.find(c::SESSION_ID).unwrap().utf8().unwrap(), sid);
    assert_eq!(
        asr.find(c::DESTINATION_HOST).unwrap().identity().unwrap(),
        GW
    );
    assert_eq!(asr.find(c::AUTH_APPLICATION_ID).unwrap().u32().unwrap(), 4);
    gw.conn.send(&answer_of(&asr, GW, 2001));
    // The gateway ends the session: what it used is charged.
    let t = gw.ask(&CcrSpec::new(sid, TERMINATION, 1).mscc(MsccSpec::report(10, MIB / 2, false)));
    assert_eq!(t.result_code, 2001);
    let (_, usage) = api.call("GET", &format!("/v1/usage/acme/iot/{device}"), None);
    assert_eq!(
        usage["node"]["limits"][0]["used"].as_u64(),
        Some(MIB / 2),
        "{usage}"
    );
    // Nothing more for it.
    let again = gw.ask(
        &CcrSpec::new("pgw.localdomain;blocked;2", INITIAL, 0)
            .msisdn(device)
            .mscc(MsccSpec::ask(10, MIB)),
    );
    assert_eq!(again.result_code, 4010, "{again:?}");

    // The outbox tells: blocked, and the session aborted (its gateway took the ASR).
    // The events of the device, waiting (long poll after the last one seen, bounded) until
    // there are `n`.
    let events = |api: &Http, n: usize| {
        let mut got: Vec<String> = Vec::new();
        let mut after = 0;
        let deadline = std::time::Instant::now() + WAIT;
        while got.len() < n && std::time::Instant::now() < deadline {
            let (_, v) = api.call(
                "GET",
                &format!(
                    "/v1/events?node=acme/iot/{device}&kind=blocked,unblocked,session_aborted&after={after}&wait_ms=2000"
                ),
                None,
            );
            for e in v["events"].as_array().into_iter().flatten() {
                got.push(e["kind"].as_str().unwrap_or_default().to_owned());
            }
            after = v["next_after"].as_u64().unwrap_or(after);
        }
        got
    };
    assert_eq!(events(&api, 2), ["blocked", "session_aborted"]);

    // A block is an account change: it survives a kill -9.
    drop(gw);
    d.kill9();
    let mut d = Daemon::start_in(d.into_dir(), "", &[]);
    let api = d.admin();
    let mut gw = Gw::open(&d, GW);
    let after = gw.ask(
        &CcrSpec::new("pgw.localdomain;blocked;3", INITIAL, 0)
            .msisdn(device)
            .mscc(MsccSpec::ask(10, MIB)),
    );
    assert_eq!(after.result_code, 4010);
    let (_, node) = api.call("GET", &format!("/v1/nodes/acme/iot/{device}"), None);
    assert_eq!(node["blocked"], true, "{node}");
    // Unblocked: in again.
    let shown = ctl(
        &api,
        &d.state_path(),
        &["unblock", &format!("acme/iot/{device}")],
    );
    assert!(!shown.contains("blocked"), "{shown}");
    open(&mut gw, "pgw.localdomain;blocked;4", device);
    assert_eq!(events(&api, 3), ["blocked", "session_aborted", "unblocked"]);
    assert!(d.terminate().success());
}

#[test]
fn a_blocked_cost_centre_denies_its_open_sessions_and_an_unanswered_asr_changes_nothing_else() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, GW);
    let sid = "pgw.localdomain;cc-blocked;1";
    open(&mut gw, sid, "15551008700");
    let (status, node) = api.call("PUT", "/v1/blocked/acme/iot", None);
    assert_eq!(status, 200, "{node}");
    assert_eq!(node["blocked"], true);
    // The gateway does not answer the ASR; its next update reports usage: charged, every
    // service refused (and so the request: 4010), nothing held.
    let asr = gw.conn.expect_frame();
    assert_eq!(asr.header.command_code, 274);
    let u = gw.ask(&CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, MIB / 4, true)));
    assert_eq!(u.result_code, 4010, "{u:?}");
    assert_eq!(u.mscc[0].result_code, Some(4010), "{u:?}");
    assert_eq!(u.mscc[0].granted_octets, None);
    let (_, sessions) = api.call("GET", "/v1/sessions/acme/iot", None);
    assert_eq!(
        sessions[0]["reservations"].as_array().map(Vec::len),
        Some(0),
        "{sessions}"
    );
    let (_, usage) = api.call("GET", "/v1/usage/acme/iot/15551008700", None);
    assert_eq!(
        usage["node"]["limits"][0]["used"].as_u64(),
        Some(MIB / 4),
        "{usage}"
    );
    // Devices of other cost centres are not touched.
    open(&mut gw, "pgw.localdomain;cc-blocked;2", "15551000700");
    // Bad paths: 404, nothing changed.
    let (status, _) = api.call("PUT", "/v1/blocked/acme/nowhere", None);
    assert_eq!(status, 404);
    let (status, _) = api.call("DELETE", "/v1/blocked/acme/iot", None);
    assert_eq!(status, 200);
    d.assert_serving();
    assert!(d.terminate().success());
}
