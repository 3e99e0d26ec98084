//! The admin API end to end: a telecoms manager builds and steers an enterprise while a gateway
//! charges against it, over real HTTP and real Diameter; every change survives a restart and a
//! `kill -9`; refused changes leave nothing behind.

mod common;

use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, TERMINATION};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn rsu() -> MsccSpec {
    MsccSpec {
        rating_group: Some(1),
        requested_octets: Some(None),
        ..Default::default()
    }
}

fn limit(v: &Value) -> u64 {
    v["limits"][0]["limit"].as_u64().unwrap_or(0)
}

#[test]
fn a_manager_builds_and_steers_an_enterprise_live() {
    let mut d = Daemon::start("");
    let api = d.admin();

    // Without the token: 401, and nothing else is said.
    let anon = Http {
        addr: api.addr,
        token: None,
    };
    assert_eq!(anon.call("GET", "/v1/tenants", None).0, 401);
    let wrong = Http {
        addr: api.addr,
        token: Some("0123456789abcdef0123".into()),
    };
    assert_eq!(wrong.call("GET", "/v1/tenants", None).0, 401);
    assert_eq!(anon.call("GET", "/ready", None).0, 200);

    // A new enterprise with a cost centre and a device.
    let (st, t) = api.call(
        "POST",
        "/v1/tenants",
        Some(r#"{"name":"initech","limits":[{"unit":"octets","amount":"10 GiB"}]}"#),
    );
    assert_eq!(st, 201, "{t}");
    assert_eq!(limit(&t), 10 * GIB);
    let (st, cc) = api.call(
        "POST",
        "/v1/nodes/initech/field",
        Some(r#"{"limits":[{"unit":"octets","amount":"2 GiB"}]}"#),
    );
    assert_eq!(st, 201, "{cc}");
    let (st, dev) = api.call(
        "POST",
        "/v1/nodes/initech/field/van7",
        Some(r#"{"msisdn":"447700900777","limits":[{"unit":"octets","amount":"30 MiB"}]}"#),
    );
    assert_eq!(st, 201, "{dev}");
    assert_eq!(
        dev["subscriptions"],
        json!([{"type":"e164","id":"447700900777"}])
    );

    // The gateway charges it at once.
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let first = gw.ask(
        &CcrSpec::new("van;1", INITIAL, 0)
            .msisdn("447700900777")
            .mscc(rsu()),
    );
    assert_eq!(first.result_code, 2001);
    assert_eq!(first.mscc[0].granted_octets, Some(10 * MIB));
    let (st, sessions) = api.call("GET", "/v1/sessions/initech/field", None);
    assert_eq!(st, 200);
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");
    assert_eq!(sessions[0]["session_id"], "van;1");
    assert_eq!(sessions[0]["account"], "initech/field/van7");
    assert_eq!(sessions[0]["reservations"][0]["reserved"], 10 * MIB);
    let (_, usage) = api.call("GET", "/v1/usage/initech", None);
    assert_eq!(usage["node"]["limits"][0]["reserved"], 10 * MIB);
    assert_eq!(usage["children"][0]["path"], "initech/field");
    assert_eq!(
        usage["children"][0]["limits"][0]["headroom"],
        2 * GIB - 10 * MIB
    );

    // Moves: within the headroom, atomically; past it, 409 and nothing moves.
    let mv = |amount: &str| {
        format!(
            r#"{{"from":"initech/field","to":"initech/field/van7","unit":"octets","amount":"{amount}"}}"#
        )
    };
    let (st, e) = api.call("POST", "/v1/moves", Some(&mv("2 GiB")));
    assert_eq!(st, 409, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("free of its limit"),
        "{e}"
    );
    let (_, same) = api.call("GET", "/v1/nodes/initech/field", None);
    assert_eq!(limit(&same), 2 * GIB);
    let (st, moved) = api.call("POST", "/v1/moves", Some(&mv("20 MiB")));
    assert_eq!(st, 200, "{moved}");
    // From a cost centre to one of its devices: the device's share grows; the cost centre's
    // limit already counts everything below it, so its total stays.
    assert_eq!(limit(&moved["from"]), 2 * GIB);
    assert_eq!(limit(&moved["to"]), 50 * MIB);

    // Bad requests say why and change nothing.
    for (method, path, body, want) in [
        ("POST", "/v1/nodes/initech/field/van7", "{}", 409),
        ("POST", "/v1/nodes/initech/nowhere/x", "{}", 404),
        (
            "POST",
            "/v1/nodes/initech/field/van8",
            r#"{"msisdn":"447700900777"}"#,
            409,
        ),
        (
            "POST",
            "/v1/nodes/initech/field/van8",
            r#"{"colour":"red"}"#,
            400,
        ),
        ("POST", "/v1/nodes/initech/field/van8", "not json", 400),
        (
            "PUT",
            "/v1/limits/initech/field",
            r#"{"limits":[{"unit":"octets","amount":"lots"}]}"#,
            400,
        ),
        ("POST", "/v1/tenants", r#"{"name":"initech"}"#, 409),
        (
            "POST",
            "/v1/tenants",
            r#"{"name":"x","time_zone":"Mars/Olympus"}"#,
            400,
        ),
        ("GET", "/v1/nodes/nobody", "", 404),
        ("DELETE", "/v1/nodes/initech/ghost", "", 404),
        ("GET", "/v1/nowhere", "", 404),
    ] {
        let (st, e) = api.call(method, path, (!body.is_empty()).then_some(body));
        assert_eq!(st, want, "{method} {path} {body}: {e}");
        assert!(e["error"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
    }
    assert_eq!(api.call("GET", "/v1/nodes/initech/field/van8", None).0, 404);

    // Limits and the policy at the limit change live.
    let (st, v) = api.call(
        "PUT",
        "/v1/limits/initech/field",
        Some(r#"{"limits":[{"unit":"octets","amount":"3 GiB"},{"unit":"octets","period":"day","amount":"1 GiB"}]}"#),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["limits"].as_array().map(Vec::len), Some(2));
    let (st, p) = api.call(
        "PUT",
        "/v1/policy/initech",
        Some(r#"{"final_unit_action":"redirect","redirect_address":"http://approve.initech.example/"}"#),
    );
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["final_unit_action"], "redirect");
    let end = CcrSpec::new("van;1", TERMINATION, 1)
        .msisdn("447700900777")
        .mscc(MsccSpec {
            rating_group: Some(1),
            used_octets: Some(4 * MIB),
            ..Default::default()
        });
    assert_eq!(gw.ask(&end).result_code, 2001);

    // Removing the device: its number is unknown from then on.
    assert_eq!(
        api.call("DELETE", "/v1/nodes/initech/field/van7", None).0,
        204
    );
    let gone = gw.ask(
        &CcrSpec::new("van;2", INITIAL, 0)
            .msisdn("447700900777")
            .mscc(rsu()),
    );
    assert_eq!(gone.result_code, 5030);
    let (st, dev2) = api.call(
        "POST",
        "/v1/nodes/initech/field/van9",
        Some(r#"{"imsi":"234150000000999","limits":[{"unit":"octets","amount":"5 MiB"}]}"#),
    );
    assert_eq!(st, 201, "{dev2}");

    // Everything survives a clean restart ...
    assert!(d.terminate().success());
    let mut d = Daemon::start_in(d.into_dir(), "", &[]);
    let api = d.admin();
    let (st, field) = api.call("GET", "/v1/nodes/initech/field", None);
    assert_eq!(st, 200, "{field}");
    assert_eq!(limit(&field), 3 * GIB);
    assert_eq!(field["children"], json!(["van9"]));
    assert_eq!(
        api.call("GET", "/v1/policy/initech", None).1["final_unit_action"],
        "redirect"
    );
    // ... and a kill -9 right after a change was answered.
    let (st, _) = api.call(
        "PUT",
        "/v1/limits/initech/field/van9",
        Some(r#"{"limits":[{"unit":"octets","amount":"7 MiB"}]}"#),
    );
    assert_eq!(st, 200);
    d.kill9();
    let mut d = Daemon::start_in(d.into_dir(), "", &[]);
    let api = d.admin();
    let (_, van9) = api.call("GET", "/v1/nodes/initech/field/van9", None);
    assert_eq!(limit(&van9), 7 * MIB, "{van9}");
    assert_eq!(
        van9["subscriptions"],
        json!([{"type":"imsi","id":"234150000000999"}])
    );
    // Usage charged before the restarts is still there, and nothing is held.
    let (_, usage) = api.call("GET", "/v1/usage/initech", None);
    assert_eq!(usage["node"]["limits"][0]["used"], 4 * MIB, "{usage}");
    assert_eq!(usage["node"]["limits"][0]["reserved"], 0);
    // The device gets a number instead; the old IMSI is free, the number taken.
    let (st, v) = api.call(
        "PUT",
        "/v1/subscriptions/initech/field/van9",
        Some(r#"{"msisdn":"447700900999"}"#),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["subscriptions"],
        json!([{"type":"e164","id":"447700900999"}])
    );
    let (st, e) = api.call(
        "PUT",
        "/v1/subscriptions/initech/field",
        Some(r#"{"msisdn":"447700900999"}"#),
    );
    assert_eq!(st, 409, "{e}");
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let cca = gw.ask(
        &CcrSpec::new("van9;1", INITIAL, 0)
            .msisdn("447700900999")
            .mscc(rsu()),
    );
    assert_eq!(cca.result_code, 2001);
    let old = gw.ask(
        &CcrSpec::new("van9;2", INITIAL, 0)
            .imsi("234150000000999")
            .mscc(rsu()),
    );
    assert_eq!(old.result_code, 5030);
}

#[test]
fn the_tree_keeps_its_changes_without_a_ledger_journal() {
    let mut d = Daemon::start("[journal]\nenabled = false\n");
    let api = d.admin();
    let (st, _) = api.call(
        "POST",
        "/v1/tenants",
        Some(r#"{"name":"hooli","limits":[{"unit":"octets","amount":"1 GiB"}]}"#),
    );
    assert_eq!(st, 201);
    assert!(d.terminate().success());
    let mut d = Daemon::start_in(d.into_dir(), "[journal]\nenabled = false\n", &[]);
    let (st, v) = d.admin().call("GET", "/v1/nodes/hooli", None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(limit(&v), GIB);
}
