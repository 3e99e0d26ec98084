//! A node's own policy at its limit, end to end over TCP: set through the admin API (and
//! `ocfctl`), it decides the Final-Unit-Indication when the last units under that node's limit
//! go (redirect, restrict, terminate, or none at all for deny), the tenant's policy applies
//! where the level that cut the grant has none, each application is an event naming the level,
//! and it survives a restart.

mod common;

use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec};

const MIB: u64 = 1 << 20;
/// Final-Unit-Action values (RFC 4006 §8.35).
const TERMINATE: u32 = 0;
const REDIRECT: u32 = 1;

fn first(gw: &mut Gw, sid: &str, device: &str) -> ocf_loadtest::gy::CcaResult {
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(device)
            .mscc(MsccSpec::ask(10, 8 * MIB)),
    );
    assert_eq!(i.result_code, 2001, "{i:?}");
    i
}

#[test]
fn a_cost_centres_own_policy_decides_at_its_limit() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let put = |path: &str, body: &str| api.call("PUT", path, Some(body));
    // acme/iot: 5 MiB, redirect to an approval page at its limit; acme/sales: 3 MiB, deny.
    let limit = |mib: u64| format!(r#"{{"limits":[{{"unit":"octets","amount":"{mib} MiB"}}]}}"#);
    assert_eq!(put("/v1/limits/acme/iot", &limit(5)).0, 200);
    assert_eq!(put("/v1/limits/acme/sales", &limit(3)).0, 200);
    let (status, node) = put(
        "/v1/at-limit/acme/iot",
        r#"{"action":"redirect","redirect_address":"http://approve.acme.example/"}"#,
    );
    assert_eq!(status, 200, "{node}");
    assert_eq!(node["at_limit"]["action"], "redirect");
    assert_eq!(
        put("/v1/at-limit/acme/sales", r#"{"action":"deny"}"#).0,
        200
    );

    let mut gw = Gw::open(&d, "pgw.localdomain");
    // The cost centre's 5 MiB cut the grant: its redirect.
    let i = first(&mut gw, "pgw.localdomain;at-limit;1", "15551008800");
    assert_eq!(i.mscc[0].granted_octets, Some(5 * MIB));
    assert_eq!(i.mscc[0].final_unit_action, Some(REDIRECT), "{i:?}");
    // Sales denies at its limit: the last 3 MiB go with no Final-Unit-Indication.
    let s = first(&mut gw, "pgw.localdomain;at-limit;2", "15551005800");
    assert_eq!(s.mscc[0].granted_octets, Some(3 * MIB));
    assert_eq!(s.mscc[0].final_unit_action, None, "{s:?}");
    // With the cost centre's policy cleared and its limit raised, an iot device's own 10 MiB
    // cuts the grant: the device has no policy of its own, so the tenant's terminate.
    assert_eq!(api.call("DELETE", "/v1/at-limit/acme/iot", None).0, 200);
    assert_eq!(put("/v1/limits/acme/iot", &limit(1024)).0, 200);
    let t = gw.ask(
        &CcrSpec::new("pgw.localdomain;at-limit;3", INITIAL, 0)
            .msisdn("15551008801")
            .mscc(MsccSpec::ask(10, 12 * MIB)),
    );
    assert_eq!(t.mscc[0].granted_octets, Some(10 * MIB));
    assert_eq!(t.mscc[0].final_unit_action, Some(TERMINATE), "{t:?}");

    // Each is an event naming the level that decided.
    let ev = events_of(&api, "kind=policy_applied", 3);
    let seen: Vec<(String, String)> = ev
        .iter()
        .map(|e| {
            (
                e["limit"].as_str().unwrap_or_default().to_owned(),
                e["action"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("acme/iot".to_owned(), "redirect".to_owned()),
            ("acme/sales".to_owned(), "deny".to_owned()),
            ("acme/iot/15551008801".to_owned(), "terminate".to_owned()),
        ],
        "{ev:?}"
    );

    // Bad input: 400 with a reason, 404 for no node; nothing changed.
    for bad in [
        r#"{"action":"nope"}"#,
        r#"{"action":"redirect"}"#,
        r#"{"action":"restrict"}"#,
        r#"{"action":"deny","extra":1}"#,
        r#"{"action":"restrict","restriction_rules":["not a rule"]}"#,
    ] {
        let (status, v) = put("/v1/at-limit/acme/sales", bad);
        assert_eq!(status, 400, "{bad}: {v}");
    }
    assert_eq!(
        put("/v1/at-limit/acme/nowhere", r#"{"action":"deny"}"#).0,
        404
    );
    // The tenant's policy changed: the nodes' own policies stay.
    assert_eq!(put("/v1/policy/acme", r#"{"slice_octets":"2 MiB"}"#).0, 200);
    let (_, node) = api.call("GET", "/v1/nodes/acme/sales", None);
    assert_eq!(node["at_limit"]["action"], "deny", "{node}");

    // An account change: it survives a kill -9.
    drop(gw);
    d.kill9();
    let mut d = Daemon::start_in(d.into_dir(), "", &[]);
    let api = d.admin();
    let (_, node) = api.call("GET", "/v1/nodes/acme/sales", None);
    assert_eq!(node["at_limit"]["action"], "deny", "{node}");
    assert!(d.terminate().success());
}
