//! The ledger to the octet and the cent, end to end over TCP against `ocfd` on the embedded
//! default tenant (DESIGN.md §7): duplicate services, refunds, Session-Ids shared by two
//! gateways, all-or-nothing events, limits and policies changed under open grants, moves,
//! IMSIs, zero requests, absurd reports, unmetered units, sessions across restarts and money
//! grants that add up exactly. Every figure is read back from the admin API.

mod common;

use common::*;
use ocf_loadtest::gy::{CcaResult, CcrSpec, EVENT, INITIAL, MsccSpec, TERMINATION, UPDATE};
use ocf_protocol::Message;
use ocf_protocol::avp::Avp;
use ocf_protocol::codes::avp as c;
use serde_json::Value;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

const ALICE: &str = "15559990001";

fn device(n: u64) -> String {
    format!("{}", 15_551_000_000 + n)
}

/// The account path of iot device `n` (8000–9999).
fn iot(n: u64) -> String {
    format!("acme/iot/{}", device(n))
}

/// The limit of `unit` per `period` on the node at `path`, as the usage view shows it.
fn limit_view(api: &Http, path: &str, unit: &str, period: &str) -> Value {
    let (st, v) = api.call("GET", &format!("/v1/usage/{path}"), None);
    assert_eq!(st, 200, "GET /v1/usage/{path}: {v}");
    v["node"]["limits"]
        .as_array()
        .and_then(|ls| {
            ls.iter()
                .find(|l| l["unit"] == unit && l["period"] == period)
                .cloned()
        })
        .unwrap_or_else(|| panic!("{path} has no {unit} limit per {period}: {v}"))
}

/// (used, reserved) octets this month on the node at `path`.
fn octets(api: &Http, path: &str) -> (u64, u64) {
    octets_per(api, path, "month")
}

fn octets_per(api: &Http, path: &str, period: &str) -> (u64, u64) {
    let l = limit_view(api, path, "octets", period);
    let n = |k: &str| {
        l[k].as_u64()
            .unwrap_or_else(|| panic!("{path}: {k} is not a number: {l}"))
    };
    (n("used"), n("reserved"))
}

/// Alice's (used, reserved) money as the API writes it (a decimal string in EUR).
fn alice_money(api: &Http) -> (String, String) {
    let l = limit_view(api, "alice", "money", "total");
    let s = |k: &str| {
        l[k].as_str()
            .unwrap_or_else(|| panic!("alice: {k} is not a decimal string: {l}"))
            .to_owned()
    };
    (s("used"), s("reserved"))
}

/// The octets limit per month of the node at `path` (GET /v1/nodes).
fn node_limit(api: &Http, path: &str) -> u64 {
    let (st, v) = api.call("GET", &format!("/v1/nodes/{path}"), None);
    assert_eq!(st, 200, "GET /v1/nodes/{path}: {v}");
    v["limits"]
        .as_array()
        .and_then(|ls| {
            ls.iter()
                .find(|l| l["unit"] == "octets" && l["period"] == "month")
        })
        .and_then(|l| l["limit"].as_u64())
        .unwrap_or_else(|| panic!("{path} has no octets limit per month: {v}"))
}

/// The AVPs directly inside the answer's Failed-AVP.
fn failed_avp(m: &Message) -> Vec<Avp<'_>> {
    m.find(c::FAILED_AVP)
        .unwrap_or_else(|| panic!("no Failed-AVP in {:?}", m.avps().collect::<Vec<_>>()))
        .children()
        .collect()
}

/// The AVP `code` inside the MSCC inside the answer's Failed-AVP.
fn failed_in_mscc(m: &Message, code: ocf_protocol::codes::AvpCode) -> Option<Avp<'_>> {
    failed_avp(m)
        .into_iter()
        .find(|a| a.is(c::MULTIPLE_SERVICES_CREDIT_CONTROL))
        .and_then(|g| g.children().find(|a| a.is(code)))
}

/// The AVP `code` in the answer's Failed-AVP, directly or inside the MSCC it names.
fn failed_carries(m: &Message, code: ocf_protocol::codes::AvpCode) -> Option<Avp<'_>> {
    failed_avp(m)
        .into_iter()
        .find(|a| a.is(code))
        .or_else(|| failed_in_mscc(m, code))
}

fn granted(r: &CcaResult) -> Vec<Option<u64>> {
    r.mscc.iter().map(|m| m.granted_octets).collect()
}

// 1 ------------------------------------------------------------------------------------------

#[test]
fn two_msccs_of_one_service_are_refused_whole_and_reserve_nothing() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");

    // In a CCR-I: 5004, the second MSCC's Rating-Group as Failed-AVP, nothing reserved.
    let (m, r) = gw.send(
        &CcrSpec::new("dup;i", INITIAL, 0)
            .msisdn(&device(8000))
            .mscc(MsccSpec::rsu(10))
            .mscc(MsccSpec::rsu(10)),
    );
    assert_eq!(r.result_code, 5004, "{r:?}");
    let rg = failed_in_mscc(&m, c::RATING_GROUP).expect("Failed-AVP holds an MSCC with its RG");
    assert_eq!(rg.u32().unwrap(), 10);
    assert_eq!(octets(&api, &iot(8000)), (0, 0), "nothing reserved");
    assert_eq!(octets(&api, "acme/iot"), (0, 0));

    // In a CCR-U of an open session: 5004, the ledger as the CCR-I left it.
    let sid = "dup;u";
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(&device(8001))
            .mscc(MsccSpec::rsu(10)),
    );
    assert_eq!((i.result_code, granted(&i)), (2001, vec![Some(10 * MIB)]));
    assert_eq!(octets(&api, &iot(8001)), (0, 10 * MIB));
    let (m, r) = gw.send(
        &CcrSpec::new(sid, UPDATE, 1)
            .mscc(MsccSpec::report(10, 3 * MIB, true))
            .mscc(MsccSpec::report(10, 2 * MIB, false)),
    );
    assert_eq!(r.result_code, 5004, "{r:?}");
    assert_eq!(
        failed_in_mscc(&m, c::RATING_GROUP).map(|a| a.u32().unwrap()),
        Some(10)
    );
    assert_eq!(
        octets(&api, &iot(8001)),
        (0, 10 * MIB),
        "the refused update changed nothing"
    );
    // A correct update afterwards is charged once.
    let u = gw.ask(&CcrSpec::new(sid, UPDATE, 2).mscc(MsccSpec::report(10, 3 * MIB, true)));
    assert_eq!(u.result_code, 2001, "{u:?}");
    assert_eq!(granted(&u), vec![Some(7 * MIB)]);
    assert_eq!(octets(&api, &iot(8001)), (3 * MIB, 7 * MIB));
    assert_eq!(octets(&api, "acme/iot"), (3 * MIB, 7 * MIB));

    // Prepaid: refused, no money reserved.
    let r = gw.ask(
        &CcrSpec::new("dup;alice", INITIAL, 0)
            .msisdn(ALICE)
            .mscc(MsccSpec::rsu(10))
            .mscc(MsccSpec::rsu(10)),
    );
    assert_eq!(r.result_code, 5004, "{r:?}");
    assert_eq!(alice_money(&api), ("0".into(), "0".into()));

    // One Rating-Group, two Service-Identifiers: two services, both served, within the
    // device's 10 MiB.
    let svc = |si: u32| MsccSpec {
        service_identifier: Some(si),
        ..MsccSpec::ask(10, 6 * MIB)
    };
    let r = gw.ask(
        &CcrSpec::new("two;si", INITIAL, 0)
            .msisdn(&device(8002))
            .mscc(svc(1))
            .mscc(svc(2)),
    );
    assert_eq!(r.result_code, 2001, "{r:?}");
    let got: Vec<_> = r
        .mscc
        .iter()
        .map(|m| (m.service_identifier, m.result_code, m.granted_octets))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some(1), Some(2001), Some(6 * MIB)),
            (Some(2), Some(2001), Some(4 * MIB))
        ]
    );
    let sum: u64 = r.mscc.iter().filter_map(|m| m.granted_octets).sum();
    assert!(sum <= 10 * MIB);
    assert_eq!(octets(&api, &iot(8002)), (0, sum));
}

// 2 ------------------------------------------------------------------------------------------

#[test]
fn a_refund_gives_back_at_most_what_the_account_used() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    for (n, used) in [(8200, MIB), (8201, 5 * MIB)] {
        let sid = format!("use;{n}");
        let i = gw.ask(
            &CcrSpec::new(&sid, INITIAL, 0)
                .msisdn(&device(n))
                .mscc(MsccSpec::rsu(1)),
        );
        assert_eq!(i.result_code, 2001);
        let t = gw.ask(&CcrSpec::new(&sid, TERMINATION, 1).mscc(MsccSpec::report(1, used, false)));
        assert_eq!(t.result_code, 2001);
    }
    assert_eq!(octets(&api, &iot(8200)), (MIB, 0));
    assert_eq!(octets(&api, &iot(8201)), (5 * MIB, 0));
    assert_eq!(octets(&api, "acme/iot"), (6 * MIB, 0));
    assert_eq!(octets(&api, "acme"), (6 * MIB, 0));

    let refund = |sid: &str, n: u64, amount: u64| {
        let mut r = CcrSpec::new(sid, EVENT, 0)
            .msisdn(&device(n))
            .mscc(MsccSpec {
                requested_octets: Some(Some(amount)),
                ..Default::default()
            });
        r.requested_action = Some(1);
        r
    };
    // More than the device used, though its cost centre used that much.
    let (m, r) = gw.send(&refund("refund;1", 8200, 4 * MIB));
    assert_eq!(r.result_code, 5004, "{r:?}");
    let rsu = failed_carries(&m, c::REQUESTED_SERVICE_UNIT).expect("Failed-AVP carries the RSU");
    let asked = rsu
        .children()
        .find(|a| a.is(c::CC_TOTAL_OCTETS))
        .map(|a| a.u64().unwrap());
    assert_eq!(asked, Some(4 * MIB));
    assert_eq!(octets(&api, &iot(8200)), (MIB, 0));
    assert_eq!(octets(&api, "acme/iot"), (6 * MIB, 0));
    assert_eq!(octets(&api, "acme"), (6 * MIB, 0));

    let r = gw.ask(&refund("refund;2", 8200, MIB));
    assert_eq!(r.result_code, 2001, "{r:?}");
    assert_eq!(octets(&api, &iot(8200)), (0, 0));
    assert_eq!(octets(&api, "acme/iot"), (5 * MIB, 0));
    assert_eq!(octets(&api, "acme"), (5 * MIB, 0));

    // A device that used nothing gets nothing back.
    let (_, r) = gw.send(&refund("refund;3", 8202, GIB));
    assert_eq!(r.result_code, 5004, "{r:?}");
    assert_eq!(octets(&api, &iot(8202)), (0, 0));
    assert_eq!(octets(&api, "acme/iot"), (5 * MIB, 0));
    assert_eq!(octets(&api, "acme"), (5 * MIB, 0));
}

// 3 ------------------------------------------------------------------------------------------

#[test]
fn a_session_id_belongs_to_the_gateway_that_opened_it() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let (host_a, host_b) = ("pgw-a.localdomain", "pgw-b.localdomain");
    let mut a = Gw::open(&d, host_a);
    let mut b = Gw::open(&d, host_b);
    let sid = "shared;1";
    let from = |host: &str, spec: CcrSpec| CcrSpec {
        origin_host: host.into(),
        ..spec
    };

    let i = a.ask(&from(
        host_a,
        CcrSpec::new(sid, INITIAL, 0)
            .msisdn(&device(8000))
            .mscc(MsccSpec::rsu(1)),
    ));
    assert_eq!((i.result_code, granted(&i)), (2001, vec![Some(10 * MIB)]));
    assert_eq!(octets(&api, &iot(8000)), (0, 10 * MIB));

    // B's CCR-I with A's Session-Id: 5004, the Session-Id as Failed-AVP, nothing reserved.
    let (m, r) = b.send(&from(
        host_b,
        CcrSpec::new(sid, INITIAL, 0)
            .msisdn(&device(8001))
            .mscc(MsccSpec::rsu(1)),
    ));
    assert_eq!(r.result_code, 5004, "{r:?}");
    let culprit = failed_avp(&m)
        .into_iter()
        .find(|a| a.is(c::SESSION_ID))
        .map(|a| a.utf8().unwrap().to_owned());
    assert_eq!(culprit.as_deref(), Some(sid));
    assert_eq!(octets(&api, &iot(8000)), (0, 10 * MIB));
    assert_eq!(octets(&api, &iot(8001)), (0, 0));
    assert_eq!(octets(&api, "acme/iot"), (0, 10 * MIB));

    // B cannot update or end A's session.
    let bu = b.ask(&from(
        host_b,
        CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(1, 5 * MIB, true)),
    ));
    assert_eq!(bu.result_code, 5002, "{bu:?}");
    let bt = b.ask(&from(
        host_b,
        CcrSpec::new(sid, TERMINATION, 2).mscc(MsccSpec::report(1, 5 * MIB, false)),
    ));
    assert_eq!(bt.result_code, 5002, "{bt:?}");
    assert_eq!(octets(&api, "acme/iot"), (0, 10 * MIB));

    // A's session is untouched: its update is charged once, its retransmission replayed.
    let update = from(
        host_a,
        CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(1, 4 * MIB, true)),
    );
    let u = a.ask(&update);
    assert_eq!(u.result_code, 2001, "{u:?}");
    assert_eq!(granted(&u), vec![Some(6 * MIB)]);
    assert_eq!(octets(&api, &iot(8000)), (4 * MIB, 6 * MIB));
    let again = a.ask(&CcrSpec {
        retransmit: true,
        ..update
    });
    assert_eq!(again, u, "the same answer again");
    assert_eq!(octets(&api, &iot(8000)), (4 * MIB, 6 * MIB), "charged once");
    assert_eq!(octets(&api, "acme/iot"), (4 * MIB, 6 * MIB));
}

// 4 ------------------------------------------------------------------------------------------

#[test]
fn a_direct_debit_of_several_msccs_is_all_or_nothing() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let mut debit = CcrSpec::new("debit;1", EVENT, 0)
        .msisdn(&device(8000))
        .mscc(MsccSpec::ask(10, MIB))
        .mscc(MsccSpec::ask(20, 20 * MIB));
    debit.requested_action = Some(0);
    let r = gw.ask(&debit);
    assert_eq!(r.result_code, 4012, "{r:?}");
    let per: Vec<_> = r
        .mscc
        .iter()
        .map(|m| (m.rating_group, m.result_code, m.granted_octets))
        .collect();
    assert_eq!(
        per,
        vec![(Some(10), Some(4012), None), (Some(20), Some(4012), None)]
    );
    assert_eq!(octets(&api, &iot(8000)), (0, 0));
    assert_eq!(octets(&api, "acme/iot"), (0, 0));
}

// 5 ------------------------------------------------------------------------------------------

#[test]
fn a_new_limit_period_starts_from_what_is_reserved() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let i = gw.ask(
        &CcrSpec::new("period;1", INITIAL, 0)
            .msisdn(&device(8300))
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!(granted(&i), vec![Some(10 * MIB)]);
    let (st, v) = api.call(
        "PUT",
        &format!("/v1/limits/{}", iot(8300)),
        Some(r#"{"limits":[{"unit":"octets","period":"day","amount":"10 MiB"}]}"#),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(octets_per(&api, &iot(8300), "day"), (0, 10 * MIB));

    // Nothing is free under the new day limit: the open grant holds all of it.
    let second = gw.ask(
        &CcrSpec::new("period;2", INITIAL, 0)
            .msisdn(&device(8300))
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!(
        (second.result_code, second.mscc[0].result_code),
        (4012, Some(4012)),
        "{second:?}"
    );
    assert_eq!(second.mscc[0].granted_octets, None);

    let t = gw
        .ask(&CcrSpec::new("period;1", TERMINATION, 1).mscc(MsccSpec::report(1, 10 * MIB, false)));
    assert_eq!(t.result_code, 2001, "{t:?}");
    assert_eq!(octets_per(&api, &iot(8300), "day"), (10 * MIB, 0));
}

// 6 ------------------------------------------------------------------------------------------

#[test]
fn policy_changes_keep_the_tariff_and_leak_no_reservation() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");

    // A patch of one key keeps the others.
    let (st, p) = api.call(
        "PUT",
        "/v1/policy/alice",
        Some(r#"{"validity_time_s":300}"#),
    );
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["validity_time_s"], 300);
    let (st, p) = api.call("GET", "/v1/policy/alice", None);
    assert_eq!(st, 200);
    assert_eq!(p["tariff"]["currency_code"], 978, "{p}");
    assert_eq!(p["tariff"]["per_octets"], MIB, "{p}");
    let i = gw.ask(
        &CcrSpec::new("alice;1", INITIAL, 0)
            .msisdn(ALICE)
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!((i.result_code, granted(&i)), (2001, vec![Some(10 * MIB)]));
    assert_eq!(i.mscc[0].validity_time, Some(300));
    let (_, reserved) = alice_money(&api);
    assert_eq!(reserved, "0.1", "10 MiB at 0.01 EUR per MiB");

    // The tariff goes while she holds money, and comes back before she ends.
    let (st, p) = api.call("PUT", "/v1/policy/alice", Some(r#"{"tariff":null}"#));
    assert_eq!(st, 200, "{p}");
    assert!(p["tariff"].is_null(), "{p}");
    let u = gw.ask(&CcrSpec::new("alice;1", UPDATE, 1).mscc(MsccSpec::report(1, MIB, false)));
    assert_eq!(u.result_code, 2001, "{u:?}");
    let (st, p) = api.call(
        "PUT",
        "/v1/policy/alice",
        Some(r#"{"tariff":{"price":"0.01","per_octets":"1 MiB","currency_code":978}}"#),
    );
    assert_eq!(st, 200, "{p}");
    let t = gw.ask(&CcrSpec::new("alice;1", TERMINATION, 2).mscc(MsccSpec::report(1, 0, false)));
    assert_eq!(t.result_code, 2001, "{t:?}");
    let (_, reserved) = alice_money(&api);
    assert_eq!(reserved, "0", "no money left reserved");

    // An octets grant settled after acme got a tariff.
    let i = gw.ask(
        &CcrSpec::new("acme;1", INITIAL, 0)
            .msisdn(&device(8400))
            .mscc(MsccSpec::ask(1, 4 * MIB)),
    );
    assert_eq!(granted(&i), vec![Some(4 * MIB)]);
    assert_eq!(octets(&api, &iot(8400)), (0, 4 * MIB));
    let (st, p) = api.call(
        "PUT",
        "/v1/policy/acme",
        Some(r#"{"tariff":{"price":"0.01","per_octets":"1 MiB","currency_code":978}}"#),
    );
    assert_eq!(st, 200, "{p}");
    let t =
        gw.ask(&CcrSpec::new("acme;1", TERMINATION, 1).mscc(MsccSpec::report(1, 4 * MIB, false)));
    assert_eq!(t.result_code, 2001, "{t:?}");
    assert_eq!(octets(&api, &iot(8400)), (4 * MIB, 0));
    assert_eq!(octets(&api, "acme/iot"), (4 * MIB, 0));
}

// 7 ------------------------------------------------------------------------------------------

#[test]
fn moves_change_only_the_descendant_or_both_siblings() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mv = |from: &str, to: &str, amount: &str| {
        let (st, v) = api.call(
            "POST",
            "/v1/moves",
            Some(&format!(
                r#"{{"from":"{from}","to":"{to}","unit":"octets","amount":"{amount}"}}"#
            )),
        );
        assert_eq!(st, 200, "move {amount} from {from} to {to}: {v}");
        v
    };
    let shown = |v: &Value| {
        v["limits"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["unit"] == "octets"))
            .and_then(|l| l["limit"].as_u64())
            .unwrap_or_else(|| panic!("no octets limit in {v}"))
    };

    let v = mv("acme/iot", "acme", "512 MiB");
    assert_eq!((shown(&v["from"]), shown(&v["to"])), (512 * MIB, TIB));
    assert_eq!(node_limit(&api, "acme"), TIB);
    assert_eq!(node_limit(&api, "acme/iot"), 512 * MIB);

    let v = mv("acme", "acme/iot", "256 MiB");
    assert_eq!((shown(&v["from"]), shown(&v["to"])), (TIB, 768 * MIB));
    assert_eq!(node_limit(&api, "acme"), TIB);
    assert_eq!(node_limit(&api, "acme/iot"), 768 * MIB);

    let v = mv("acme/iot", "acme/sales", "100 MiB");
    assert_eq!(
        (shown(&v["from"]), shown(&v["to"])),
        (668 * MIB, 100 * GIB + 100 * MIB)
    );
    assert_eq!(node_limit(&api, "acme/iot"), 668 * MIB);
    assert_eq!(node_limit(&api, "acme/sales"), 100 * GIB + 100 * MIB);
    assert_eq!(node_limit(&api, "acme"), TIB);
    assert_eq!(node_limit(&api, "acme/engineering"), 500 * GIB);
}

// 8 ------------------------------------------------------------------------------------------

#[test]
fn imsis_are_compared_as_digit_strings() {
    let d = Daemon::start("");
    let mut gw = Gw::open(&d, "pgw.localdomain");
    for (k, (imsi, want)) in [
        ("1010000008400", 5030),
        ("0001010000008400", 5030),
        ("001010000008400", 2001),
    ]
    .into_iter()
    .enumerate()
    {
        let r = gw.ask(
            &CcrSpec::new(format!("imsi;{k}"), INITIAL, 0)
                .imsi(imsi)
                .mscc(MsccSpec::rsu(1)),
        );
        assert_eq!(r.result_code, want, "IMSI {imsi}: {r:?}");
    }
}

// 9 ------------------------------------------------------------------------------------------

#[test]
fn a_zero_or_empty_request_gets_the_usual_grant() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let zero = gw.ask(
        &CcrSpec::new("zero;1", INITIAL, 0)
            .msisdn(&device(5001))
            .mscc(MsccSpec::ask(1, 0)),
    );
    assert_eq!(zero.result_code, 2001, "{zero:?}");
    assert_eq!(
        (zero.mscc[0].result_code, zero.mscc[0].granted_octets),
        (Some(2001), Some(10 * MIB))
    );
    let empty = gw.ask(
        &CcrSpec::new("zero;2", INITIAL, 0)
            .msisdn(&device(5001))
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!(empty.result_code, 2001, "{empty:?}");
    assert_eq!(
        (empty.mscc[0].result_code, empty.mscc[0].granted_octets),
        (Some(2001), Some(10 * MIB))
    );
    assert_eq!(
        octets(&api, &format!("acme/sales/{}", device(5001))),
        (0, 20 * MIB)
    );
}

// 10 -----------------------------------------------------------------------------------------

#[test]
fn an_impossible_report_is_refused_and_a_large_one_charged_in_full() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let sid = "report;1";
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(&device(8000))
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!(granted(&i), vec![Some(10 * MIB)]);

    let (m, r) = gw.send(&CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(1, u64::MAX, true)));
    assert_eq!(r.result_code, 5004, "{r:?}");
    let usu = failed_carries(&m, c::USED_SERVICE_UNIT).expect("Failed-AVP carries the USU");
    let reported = usu
        .children()
        .find(|a| a.is(c::CC_TOTAL_OCTETS))
        .map(|a| a.u64().unwrap());
    assert_eq!(reported, Some(u64::MAX));
    assert_eq!(octets(&api, "acme/iot"), (0, 10 * MIB));
    assert_eq!(octets(&api, &iot(8000)), (0, 10 * MIB));

    // Three times the grant is possible (the gateway overran it): charged in full.
    let t = gw.ask(&CcrSpec::new(sid, TERMINATION, 2).mscc(MsccSpec::report(1, 30 * MIB, false)));
    assert_eq!(t.result_code, 2001, "{t:?}");
    assert_eq!(octets(&api, &iot(8000)), (30 * MIB, 0));
    assert_eq!(octets(&api, "acme/iot"), (30 * MIB, 0));
}

// 11 -----------------------------------------------------------------------------------------

#[test]
fn time_on_a_data_only_device_is_refused_unless_the_policy_grants_it() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let time = |sid: &str| {
        CcrSpec::new(sid, INITIAL, 0)
            .msisdn(&device(8000))
            .mscc(MsccSpec {
                rating_group: Some(1),
                requested_time: Some(60),
                ..Default::default()
            })
    };
    let r = gw.ask(&time("time;1"));
    assert_eq!(r.mscc[0].result_code, Some(5031), "{r:?}");
    assert_eq!(
        (r.mscc[0].granted_time, r.mscc[0].granted_octets),
        (None, None)
    );

    let (st, p) = api.call("PUT", "/v1/policy/acme", Some(r#"{"unmetered":"grant"}"#));
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["unmetered"], "grant");
    let r = gw.ask(&time("time;2"));
    assert_eq!(r.result_code, 2001, "{r:?}");
    assert_eq!(
        (r.mscc[0].result_code, r.mscc[0].granted_time),
        (Some(2001), Some(60))
    );
    assert_eq!(octets(&api, &iot(8000)), (0, 0), "no octets taken for time");
}

// 12 -----------------------------------------------------------------------------------------

/// Every answer waits for its journal record to be synced, so that a `kill -9` right after an
/// answer loses nothing that was answered.
const FSYNC: &str = "[journal]\ndurability = \"fsync\"\n";

#[test]
fn sessions_and_their_answers_survive_restarts() {
    let mut d = Daemon::start(FSYNC);
    let (open, ended) = ("restart;open", "restart;ended");
    {
        let mut gw = Gw::open(&d, "pgw.localdomain");
        let i = gw.ask(
            &CcrSpec::new(open, INITIAL, 0)
                .msisdn(&device(8500))
                .mscc(MsccSpec::rsu(1)),
        );
        assert_eq!(granted(&i), vec![Some(10 * MIB)]);
        let i = gw.ask(
            &CcrSpec::new(ended, INITIAL, 0)
                .msisdn(&device(8501))
                .mscc(MsccSpec::rsu(1)),
        );
        assert_eq!(granted(&i), vec![Some(10 * MIB)]);
    }
    let end = CcrSpec::new(ended, TERMINATION, 1).mscc(MsccSpec::report(1, 2 * MIB, false));
    let ended_answer = Gw::open(&d, "pgw.localdomain").ask(&end);
    assert_eq!(ended_answer.result_code, 2001);

    // A clean stop.
    assert!(d.terminate().success());
    let mut d = Daemon::start_in(d.into_dir(), FSYNC, &[]);
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let again = gw.ask(&CcrSpec {
        retransmit: true,
        ..end
    });
    assert_eq!(
        again, ended_answer,
        "the ended session's last answer, not 5002"
    );
    assert_eq!(octets(&api, &iot(8501)), (2 * MIB, 0));
    assert_eq!(
        octets(&api, &iot(8500)),
        (0, 10 * MIB),
        "the open grant is held"
    );
    let update = CcrSpec::new(open, UPDATE, 1).mscc(MsccSpec::report(1, 3 * MIB, true));
    let u = gw.ask(&update);
    assert_eq!(u.result_code, 2001, "{u:?}");
    assert_eq!(granted(&u), vec![Some(7 * MIB)]);
    assert_eq!(octets(&api, &iot(8500)), (3 * MIB, 7 * MIB));

    // A crash right after that answer.
    drop(gw);
    d.kill9();
    let mut d = Daemon::start_in(d.into_dir(), FSYNC, &[]);
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let again = gw.ask(&CcrSpec {
        retransmit: true,
        ..update
    });
    assert_eq!(again, u, "the same answer, the same grant");
    assert_eq!(octets(&api, &iot(8500)).0, 3 * MIB, "charged once");
    let t = gw.ask(&CcrSpec::new(open, TERMINATION, 2).mscc(MsccSpec::report(1, MIB, false)));
    assert_eq!(t.result_code, 2001, "{t:?}");
    assert_eq!(octets(&api, &iot(8500)), (4 * MIB, 0));
    assert_eq!(octets(&api, "acme/iot"), (6 * MIB, 0));
}

// 14 -----------------------------------------------------------------------------------------

#[test]
fn prepaid_money_buys_exactly_its_octets_whatever_the_slice() {
    for slice in [7 * MIB, 10 * MIB] {
        let mut d = Daemon::start("");
        let api = d.admin();
        let mut gw = Gw::open(&d, "pgw.localdomain");
        let sid = "alice;all";
        let mut r = gw.ask(
            &CcrSpec::new(sid, INITIAL, 0)
                .msisdn(ALICE)
                .mscc(MsccSpec::ask(1, slice)),
        );
        let mut total = 0u64;
        let mut number = 0;
        while let Some(g) = r.mscc[0].granted_octets {
            assert_eq!(r.result_code, 2001, "slice {slice}: {r:?}");
            assert!(g <= slice, "slice {slice}: granted {g}");
            total += g;
            number += 1;
            assert!(number < 200, "slice {slice}: no end after {total} octets");
            r = gw.ask(&CcrSpec::new(sid, UPDATE, number).mscc(MsccSpec {
                used_octets: Some(g),
                ..MsccSpec::ask(1, slice)
            }));
        }
        assert_eq!(
            (r.result_code, r.mscc[0].result_code),
            (4012, Some(4012)),
            "slice {slice}: {r:?}"
        );
        assert_eq!(
            total, 524_288_000,
            "slice {slice}: 5.00 EUR at 0.01 EUR per MiB"
        );
        let t = gw.ask(&CcrSpec::new(sid, TERMINATION, number + 1));
        assert_eq!(t.result_code, 2001);
        assert_eq!(alice_money(&api), ("5".into(), "0".into()), "slice {slice}");
    }
}

/// What a session keeps is bounded: a Session-Id past 4096 octets is refused 5004 (Failed-AVP:
/// the Session-Id), more than 256 MSCCs in one request 5009 (Failed-AVP: the 257th), and
/// neither charges anything.
#[test]
fn oversized_session_ids_and_mscc_lists_are_refused_and_charge_nothing() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let long = "s".repeat(5000);
    let (m, r) = gw.send(
        &CcrSpec::new(&long, INITIAL, 0)
            .msisdn(&device(8600))
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!(r.result_code, 5004);
    assert!(
        failed_carries(&m, c::SESSION_ID).is_some(),
        "Failed-AVP carries the Session-Id"
    );
    let mut many = CcrSpec::new("many;1", INITIAL, 0).msisdn(&device(8601));
    for rg in 0..257 {
        many = many.mscc(MsccSpec::ask(rg, 1000));
    }
    let (m, r) = gw.send(&many);
    assert_eq!(r.result_code, 5009);
    assert!(
        failed_carries(&m, c::MULTIPLE_SERVICES_CREDIT_CONTROL).is_some(),
        "Failed-AVP carries an MSCC"
    );
    assert_eq!(octets(&api, &iot(8600)), (0, 0));
    assert_eq!(octets(&api, &iot(8601)), (0, 0));
    // 256 are fine.
    let mut most = CcrSpec::new("many;2", INITIAL, 0).msisdn(&device(8601));
    for rg in 0..256 {
        most = most.mscc(MsccSpec::ask(rg, 1000));
    }
    assert_eq!(gw.ask(&most).result_code, 2001);
    assert_eq!(octets(&api, &iot(8601)), (0, 256 * 1000));
}
