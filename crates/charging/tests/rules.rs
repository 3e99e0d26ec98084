//! Rules over the request in the engine, in simulated time (DESIGN.md §5, docs/rules.md): one
//! BYOD session charging RG 10 to the enterprise and RG 20 to the employee's personal money
//! account in the same CCR; a service a rule denies; a time window that closes mid-session, the
//! grant's Validity-Time cut to its edge and the next grant charged by the new rule; a video
//! allowance used up while other data goes on; a roaming cap warned at 40 EUR and reached at
//! 50 EUR exactly; a device at line rate restricted within one grant; a ceiling that refuses
//! an absurd report; explain and what-if for them; and, for any rules and any traffic, every
//! unit charged to exactly one account with every invariant kept.

mod common;

use common::counter;

use bytes::BytesMut;
use ocf_charging::accounts::provisioning::load_str;
use ocf_charging::accounts::tenant::Directory;
use ocf_charging::ledger::{Ledger, Unit};
use ocf_charging::ops::Op;
use ocf_charging::{ChargingConfig, Engine};
use ocf_loadtest::gy::{CcaResult, CcrSpec, INITIAL, MsccSpec, TERMINATION, UPDATE};
use ocf_protocol::Message;
use ocf_protocol::base::LocalIdentity;
use ocf_protocol::codes::ResultCode;
use proptest::prelude::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;
/// Wednesday 2026-11-18 12:00:00 UTC.
const NOON: i64 = 1_795_003_200;
/// The same day, 21:59:00 UTC: a minute before the night rule starts.
const BEFORE_NIGHT: i64 = 1_795_039_140;

const SUCCESS: u32 = ResultCode::Success.code();
const DENIED: u32 = ResultCode::EndUserServiceDenied.code();

/// Bob's phone in `byod/staff`: RG 20 (video) and nights go to his personal account, which pays
/// 0.01 EUR per MiB from 20.00 EUR; RG 30 is denied to all staff.
const TENANTS: &str = r#"
[[tenant]]
name = "byod"
[tenant.policy]
home_networks = ["00101"]

[[tenant.node]]
path = "byod"
limits = [{ unit = "octets", amount = "10 GiB" }]

[[tenant.node]]
path = "byod/staff"
limits = [{ unit = "octets", amount = "5 GiB" }]
  [[tenant.node.rules]]
  name = "no-gaming"
  rating_groups = [30]
  charge = "deny"

[[tenant.node]]
path = "byod/staff/bob"
msisdn = "15552000001"
personal_account = "15553000001"
limits = [{ unit = "octets", amount = "1 GiB" }]
  [[tenant.node.rules]]
  name = "personal-video"
  rating_groups = [20]
  charge = "personal"
  [[tenant.node.rules]]
  name = "night"
  hours = ["22:00-06:00"]
  charge = "personal"

[[tenant]]
name = "bob-personal"
[tenant.policy.tariff]
price = "0.01"
per_octets = "1 MiB"

[[tenant.node]]
path = "bob-personal"
msisdn = "15553000001"
limits = [{ unit = "money", amount = "20.00" }]
"#;

const BOB: &str = "15552000001";
/// 0.01 EUR per MiB in ledger money units (10^-9 EUR) per octet.
const PRICE: (u128, u128) = (10_000_000, 1 << 20);

fn identity() -> LocalIdentity {
    common::identity("rules-test")
}

fn engine(text: &str) -> Engine {
    let (mut ledger, mut dir) = (Ledger::new(), Directory::default());
    load_str("tenants.toml", text, &mut ledger, &mut dir).expect("the tenants load");
    Engine::new(ledger, dir, ChargingConfig::default()).with_usage_records(false)
}

/// Sends one CCR; the answer and the ops.
fn send(e: &Engine, spec: &CcrSpec, now: i64) -> (CcaResult, Vec<Op>) {
    let mut b = BytesMut::new();
    spec.write(&mut b, 1, 1);
    let req = Message::decode(b.freeze()).expect("the CCR decodes");
    let mut out = BytesMut::new();
    let pending = e.credit_control(&identity(), &req, now, &mut out);
    let ops = pending.ops().to_vec();
    drop(pending);
    let answer = Message::decode(out.freeze()).expect("the answer decodes");
    (CcaResult::read(&answer), ops)
}

const BOB_PATH: [&str; 3] = ["byod", "staff", "bob"];
const PERSONAL: [&str; 1] = ["bob-personal"];

fn usage_records(ops: &[Op]) -> Vec<Value> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Usage(json) => Some(serde_json::from_slice(json).expect("JSON")),
            _ => None,
        })
        .collect()
}

fn events(ops: &[Op]) -> Vec<Value> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Event(json) => Some(serde_json::from_slice(json).expect("JSON")),
            _ => None,
        })
        .collect()
}

#[test]
fn one_ccr_charges_rg10_to_the_enterprise_and_rg20_to_the_personal_account() {
    let e = engine(TENANTS);
    let open = CcrSpec::new("byod;1", INITIAL, 0)
        .msisdn(BOB)
        .apn("internet")
        .mscc(MsccSpec::ask(10, 4 * MIB))
        .mscc(MsccSpec::ask(20, 4 * MIB))
        .mscc(MsccSpec::ask(30, MIB));
    let (cca, _) = send(&e, &open, NOON);
    assert_eq!(cca.result_code, SUCCESS);
    let results: Vec<_> = cca
        .mscc
        .iter()
        .map(|m| (m.rating_group, m.result_code))
        .collect();
    assert_eq!(
        results,
        [
            (Some(10), Some(SUCCESS)),
            (Some(20), Some(SUCCESS)),
            (Some(30), Some(DENIED))
        ],
        "each MSCC answered on its own; RG 30 denied by the cost centre's rule"
    );
    assert_eq!(cca.mscc[0].granted_octets, Some(4 * MIB));
    assert_eq!(cca.mscc[1].granted_octets, Some(4 * MIB));
    // RG 10 is held up the corporate path; RG 20 as money on the personal account.
    assert_eq!(counter(&e, &BOB_PATH, Unit::Octets), (0, 4 * MIB));
    assert_eq!(counter(&e, &["byod"], Unit::Octets), (0, 4 * MIB));
    let four_mib_cost = 40_000_000;
    assert_eq!(counter(&e, &PERSONAL, Unit::Money), (0, four_mib_cost));
    // Explain shows each MSCC's rule, account, answer and why.
    let x = e.explain(BOB, NOON).unwrap();
    assert_eq!(x.account, "byod/staff/bob");
    let d = &x.decisions[0];
    assert_eq!(
        (d.request_type.as_str(), d.attributes.apn.as_deref()),
        ("initial", Some("internet"))
    );
    let s = &d.services;
    assert_eq!(
        (
            s[0].rule.as_deref(),
            s[0].charge.as_str(),
            s[0].account.as_str()
        ),
        (None, "corporate", "byod/staff/bob")
    );
    assert_eq!(s[0].granted, Some(4 * MIB));
    assert_eq!(
        s[0].levels
            .iter()
            .map(|l| l.path.as_str())
            .collect::<Vec<_>>(),
        ["byod/staff/bob", "byod/staff", "byod"],
        "each level of the path, device first"
    );
    assert_eq!(
        (
            s[1].rule.as_deref(),
            s[1].charge.as_str(),
            s[1].account.as_str()
        ),
        (Some("personal-video"), "personal", "bob-personal")
    );
    assert_eq!(
        (s[2].rule.as_deref(), s[2].charge.as_str(), s[2].result_code),
        (Some("no-gaming"), "deny", DENIED)
    );
    assert_eq!(s[2].why.as_deref(), Some("a rule denies this service"));

    let e = e.with_usage_records(false);
    let report = CcrSpec::new("byod;1", UPDATE, 1)
        .msisdn(BOB)
        .mscc(MsccSpec::report(10, 3 * MIB, true))
        .mscc(MsccSpec::report(20, 2 * MIB, true));
    let (cca, _) = send(&e, &report, NOON + 60);
    assert_eq!(cca.result_code, SUCCESS);
    assert_eq!(counter(&e, &BOB_PATH, Unit::Octets).0, 3 * MIB);
    assert_eq!(counter(&e, &["byod", "staff"], Unit::Octets).0, 3 * MIB);
    assert_eq!(
        counter(&e, &PERSONAL, Unit::Money).0,
        20_000_000,
        "2 MiB at 0.01/MiB"
    );
    assert_eq!(
        counter(&e, &["byod"], Unit::Octets).0,
        3 * MIB,
        "the enterprise pays nothing of RG 20"
    );
    let end = CcrSpec::new("byod;1", TERMINATION, 2)
        .msisdn(BOB)
        .mscc(MsccSpec::report(10, MIB, false))
        .mscc(MsccSpec::report(20, MIB, false));
    let (cca, ops) = send(&e, &end, NOON + 120);
    assert_eq!(cca.result_code, SUCCESS);
    assert_eq!(counter(&e, &BOB_PATH, Unit::Octets), (4 * MIB, 0));
    assert_eq!(counter(&e, &PERSONAL, Unit::Money), (30_000_000, 0));
    // The usage record names the account that paid and the rule that matched.
    let records = usage_records(&ops);
    assert_eq!(records.len(), 1);
    let services = records[0]["services"].as_array().unwrap();
    let rg20 = services
        .iter()
        .find(|s| s["rating_group"] == 20 && s["octets"] != 0)
        .expect("RG 20's usage");
    assert_eq!(rg20["account"], "bob-personal");
    assert_eq!(rg20["rule"], "personal-video");
    assert_eq!(rg20["octets"], 3 * MIB);
    assert_eq!(rg20["money"], "0.030000000");
    let rg10 = services.iter().find(|s| s["rating_group"] == 10).unwrap();
    assert!(rg10.get("account").is_none() && rg10.get("rule").is_none());
    assert_eq!(rg10["octets"], 4 * MIB);
    assert_eq!(records[0]["account"], "byod/staff/bob");
    let _ = PRICE;
}

#[test]
fn a_time_window_that_opens_mid_session_cuts_the_grant_at_its_edge() {
    let e = engine(TENANTS);
    // 21:59:00: no rule matches RG 10 yet; the night rule starts at 22:00, so the grant lasts
    // 60 s, not the policy's 600.
    let open = CcrSpec::new("night;1", INITIAL, 0)
        .msisdn(BOB)
        .mscc(MsccSpec::ask(10, 2 * MIB));
    let (cca, _) = send(&e, &open, BEFORE_NIGHT);
    assert_eq!(cca.mscc[0].result_code, Some(SUCCESS));
    assert_eq!(cca.mscc[0].validity_time, Some(60));
    assert_eq!(counter(&e, &BOB_PATH, Unit::Octets), (0, 2 * MIB));
    let x = e.explain(BOB, BEFORE_NIGHT).unwrap();
    let d = &x.decisions[0];
    assert!(d.services[0].validity_cut_to_rule_edge);
    assert_eq!(d.attributes.local_time.as_deref(), Some("wed 21:59:00"));
    // What if bob used RG 10 at 22:00, or RG 20 at noon? Nothing is charged to find out.
    let at_ten = ocf_charging::engine::explain::WhatIf {
        rating_group: Some(10),
        day: Some(2),
        second: Some(22 * 3600),
        ..Default::default()
    };
    let w = e.what_if(BOB, &at_ten, BEFORE_NIGHT).unwrap();
    assert_eq!(
        (w.service.rule.as_deref(), w.service.account.as_str()),
        (Some("night"), "bob-personal")
    );
    assert_eq!(w.service.granted, Some(10 * MIB));
    assert_eq!(w.service.validity_time, Some(600));
    let noon_video = ocf_charging::engine::explain::WhatIf {
        rating_group: Some(20),
        second: Some(12 * 3600),
        ..Default::default()
    };
    let w = e.what_if(BOB, &noon_video, BEFORE_NIGHT).unwrap();
    assert_eq!(w.service.rule.as_deref(), Some("personal-video"));
    assert_eq!(
        counter(&e, &PERSONAL, Unit::Money),
        (0, 0),
        "what-if charges nothing"
    );
    // 22:00:05: the report of the old grant is charged as it was granted (corporate); the
    // new grant goes to the personal account, and lasts until 06:00 at most (600 s).
    let at = BEFORE_NIGHT + 65;
    let report = CcrSpec::new("night;1", UPDATE, 1)
        .msisdn(BOB)
        .mscc(MsccSpec::report(10, 2 * MIB, true));
    let (cca, _) = send(&e, &report, at);
    assert_eq!(cca.mscc[0].result_code, Some(SUCCESS));
    assert_eq!(cca.mscc[0].validity_time, Some(600));
    assert_eq!(counter(&e, &BOB_PATH, Unit::Octets), (2 * MIB, 0));
    assert_eq!(
        counter(&e, &PERSONAL, Unit::Money),
        (0, 100_000_000),
        "10 MiB held"
    );
    let end = CcrSpec::new("night;1", TERMINATION, 2)
        .msisdn(BOB)
        .mscc(MsccSpec::report(10, MIB, false));
    send(&e, &end, at + 10);
    assert_eq!(counter(&e, &BOB_PATH, Unit::Octets), (2 * MIB, 0));
    assert_eq!(counter(&e, &PERSONAL, Unit::Money), (10_000_000, 0));
    // At 05:59:30 the grant is cut to the morning edge.
    let dawn = BEFORE_NIGHT + 8 * 3600 + 30;
    let open = CcrSpec::new("night;2", INITIAL, 0)
        .msisdn(BOB)
        .mscc(MsccSpec::ask(10, MIB));
    let (cca, _) = send(&e, &open, dawn);
    assert_eq!(cca.mscc[0].validity_time, Some(30));
}

#[test]
fn a_personal_rule_without_a_personal_account_denies_only_its_service() {
    let text = TENANTS.replace("personal_account = \"15553000001\"\n", "");
    let e = engine(&text);
    let open = CcrSpec::new("nolink;1", INITIAL, 0)
        .msisdn(BOB)
        .mscc(MsccSpec::ask(10, MIB))
        .mscc(MsccSpec::ask(20, MIB));
    let (cca, ops) = send(&e, &open, NOON);
    let results: Vec<_> = cca.mscc.iter().map(|m| m.result_code).collect();
    assert_eq!(results, [Some(SUCCESS), Some(DENIED)]);
    assert_eq!(counter(&e, &BOB_PATH, Unit::Octets), (0, MIB));
    assert!(events(&ops).is_empty());
}

#[test]
fn bad_rules_are_refused_with_the_file_and_line() {
    let good = "  rating_groups = [20]\n  charge = \"personal\"";
    assert!(TENANTS.contains(good));
    let text = TENANTS.replacen(good, "  rating_groups = [20]\n  charge = \"anywhere\"", 1);
    // Named by its header `[[tenant.node.rules]]`, the line above its name.
    let header = text[..text.find("name = \"personal-video\"").unwrap()]
        .lines()
        .count()
        - 1;
    let (mut ledger, mut dir) = (Ledger::new(), Directory::default());
    let e = load_str("tenants.toml", &text, &mut ledger, &mut dir).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("tenants.toml: line {header}: ")),
        "{msg} (header on line {header})"
    );
    assert!(msg.contains("node 'byod/staff/bob'"), "{msg}");
    assert!(
        msg.contains("rule 'personal-video': charge 'anywhere'"),
        "{msg}"
    );
    assert_eq!(ledger.tree_count(), 0, "nothing taken");
}

/// One device's traffic: per step, the rating group and what it reports.
#[derive(Clone, Debug)]
struct Step {
    rg: u32,
    used: u64,
    hour: u8,
}

fn arb_rule() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["corporate", "personal", "deny"]),
        prop::option::of(10u32..14),
        prop::option::of((0u8..24, 1u8..24)),
    )
        .prop_map(|(charge, rg, hours)| {
            let mut r = String::new();
            if let Some(rg) = rg {
                r.push_str(&format!("  rating_groups = [{rg}]\n"));
            }
            if let Some((from, len)) = hours {
                let to = (from + len) % 24;
                if to != from {
                    r.push_str(&format!("  hours = [\"{from:02}:00-{to:02}:00\"]\n"));
                }
            }
            format!("{r}  charge = \"{charge}\"\n")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Whatever the rules on the device and its cost centre, every octet a gateway reports is
    /// charged to exactly one account (the device's path or the personal account), nothing is
    /// held once the session ends, and no limit is passed.
    #[test]
    fn every_unit_is_charged_to_exactly_one_account(
        device_rules in prop::collection::vec(arb_rule(), 0..4),
        centre_rules in prop::collection::vec(arb_rule(), 0..3),
        steps in prop::collection::vec(
            (10u32..14, 0u64..3 * MIB, 0u8..24).prop_map(|(rg, used, hour)| Step { rg, used, hour }),
            1..12,
        ),
    ) {
        let mut text = String::from(
            "[[tenant]]\nname = \"p\"\n[[tenant.node]]\npath = \"p\"\nlimits = [{ unit = \"octets\", amount = \"1 GiB\" }]\n\
             [[tenant.node]]\npath = \"p/cc\"\nlimits = [{ unit = \"octets\", amount = \"200 MiB\" }]\n",
        );
        for (i, r) in centre_rules.iter().enumerate() {
            text.push_str(&format!("  [[tenant.node.rules]]\n  name = \"c{i}\"\n{r}"));
        }
        text.push_str("[[tenant.node]]\npath = \"p/cc/d\"\nmsisdn = \"15554000001\"\npersonal_account = \"15554000002\"\nlimits = [{ unit = \"octets\", amount = \"100 MiB\" }]\n");
        for (i, r) in device_rules.iter().enumerate() {
            text.push_str(&format!("  [[tenant.node.rules]]\n  name = \"d{i}\"\n{r}"));
        }
        text.push_str("[[tenant]]\nname = \"wallet\"\n[tenant.policy.tariff]\nprice = \"0.01\"\nper_octets = \"1 MiB\"\n[[tenant.node]]\npath = \"wallet\"\nmsisdn = \"15554000002\"\nlimits = [{ unit = \"money\", amount = \"0.50\" }]\n");
        let e = engine(&text);
        let mut granted: std::collections::HashMap<u32, u64> = Default::default();
        let mut reported = 0u64;
        let mut number = 0;
        let day = NOON - 12 * 3600;
        let open = CcrSpec::new("p;1", INITIAL, 0).msisdn("15554000001");
        let (cca, _) = send(&e, &open, day);
        // A rule may deny the session's one service (no MSCC).
        prop_assert!(cca.result_code == SUCCESS || cca.result_code == DENIED);
        let mut now = day;
        for s in &steps {
            number += 1;
            now = now.max(day + i64::from(s.hour) * 3600);
            // Report no more than was granted for the service, and ask again.
            let used = s.used.min(granted.remove(&s.rg).unwrap_or(0));
            reported += used;
            let spec = CcrSpec::new("p;1", UPDATE, number)
                .msisdn("15554000001")
                .mscc(MsccSpec::report(s.rg, used, true));
            let (cca, _) = send(&e, &spec, now);
            for m in &cca.mscc {
                if let (Some(rg), Some(g)) = (m.rating_group, m.granted_octets) {
                    granted.insert(rg, g);
                }
            }
            // No limit is passed, however the services were routed.
            for path in [&["p"][..], &["p", "cc"], &["p", "cc", "d"]] {
                let (used, reserved) = counter(&e, path, Unit::Octets);
                let t = e.ledger().find_tree("p").unwrap();
                let t = e.ledger().lock(t).unwrap();
                let n = t.find(path).unwrap();
                let limit = t.nodes[n as usize].counters[0].limit;
                prop_assert!(used + reserved <= limit, "{path:?}: {used} + {reserved} > {limit}");
            }
            let (mu, mr) = counter(&e, &["wallet"], Unit::Money);
            prop_assert!(mu + mr <= 500_000_000, "wallet: {mu} + {mr}");
        }
        number += 1;
        let end = CcrSpec::new("p;1", TERMINATION, number).msisdn("15554000001");
        send(&e, &end, now);
        // Every reported octet is in exactly one place: the device's path, or the wallet's
        // rated octets.
        let corporate = counter(&e, &["p", "cc", "d"], Unit::Octets);
        let wallet_tree = e.ledger().find_tree("wallet").unwrap();
        let rated = e.ledger().lock(wallet_tree).unwrap().nodes[0].counters[0].rated;
        prop_assert_eq!(u128::from(corporate.0) + rated, u128::from(reported));
        prop_assert_eq!(counter(&e, &["p"], Unit::Octets), (corporate.0, 0));
        prop_assert_eq!(counter(&e, &["wallet"], Unit::Money).1, 0);
    }
}

/// A cost centre whose devices have a velocity guard of 50 MiB an hour (`action`), and a
/// session ceiling of 35 MiB on `ceiling`.
fn guarded(action: &str) -> String {
    format!(
        r#"
[[tenant]]
name = "g"
[[tenant.node]]
path = "g"
limits = [{{ unit = "octets", amount = "10 GiB" }}]
[[tenant.node]]
path = "g/field"
guards = {{ velocity_octets = "50 MiB", velocity_window_s = 3600, velocity_action = "{action}" }}
[[tenant.node]]
path = "g/field/runaway"
msisdn = "15556000001"
[[tenant.node]]
path = "g/field/ceiling"
msisdn = "15556000002"
guards = {{ max_session_octets = "35 MiB", velocity_octets = "1 TiB" }}
"#
    )
}

/// Reports everything granted on RG 10 and asks again until a grant carries a
/// Final-Unit-Indication or nothing is granted; what was granted in all, the last answer.
fn run_until_cut(e: &Engine, sid: &str, msisdn: &str, now: i64) -> (u64, CcaResult, Vec<Op>) {
    let (mut cca, _) = send(
        e,
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(msisdn)
            .mscc(MsccSpec::rsu(10)),
        now,
    );
    let mut total = 0;
    let mut ops = Vec::new();
    for n in 1..100 {
        let granted = cca.mscc[0].granted_octets.unwrap_or(0);
        total += granted;
        if granted == 0 || cca.mscc[0].final_unit_action.is_some() {
            return (total, cca, ops);
        }
        let (next, o) = send(
            e,
            &CcrSpec::new(sid, UPDATE, n)
                .msisdn(msisdn)
                .mscc(MsccSpec::report(10, granted, true)),
            now + i64::from(n),
        );
        cca = next;
        ops.extend(o);
    }
    panic!("never cut: {total} granted")
}

#[test]
fn a_device_downloading_at_line_rate_is_restricted_within_one_grant() {
    let e = engine(&guarded("restrict"));
    let (total, cca, ops) = run_until_cut(&e, "v;1", "15556000001", NOON);
    // 10 MiB slices: the grant that reaches 50 MiB is cut to it and restricts.
    assert_eq!(total, 50 * MIB, "never past the guard's amount");
    assert_eq!(
        cca.mscc[0].final_unit_action,
        Some(2),
        "RESTRICT_ACCESS: {cca:?}"
    );
    assert_eq!(cca.mscc[0].granted_octets, Some(10 * MIB));
    // The device uses its last grant: the guard trips (one event), and nothing more is
    // granted until the window has moved on.
    let (after, ops2) = send(
        &e,
        &CcrSpec::new("v;1", UPDATE, 50)
            .msisdn("15556000001")
            .mscc(MsccSpec::report(10, 10 * MIB, true)),
        NOON + 60,
    );
    assert_eq!(
        after.mscc[0].result_code,
        Some(ResultCode::CreditLimitReached.code())
    );
    let tripped: Vec<Value> = events(&ops)
        .into_iter()
        .chain(events(&ops2))
        .filter(|e| e["kind"] == "velocity_exceeded")
        .collect();
    assert_eq!(tripped.len(), 1, "{tripped:?}");
    assert_eq!(tripped[0]["path"], "g/field/runaway");
    assert_eq!(
        (&tripped[0]["octets"], &tripped[0]["action"]),
        (&(50 * MIB).into(), &"restrict".into())
    );
    let x = e.explain("15556000001", NOON + 60).unwrap();
    assert!(
        x.decisions[0].services[0]
            .why
            .as_deref()
            .unwrap()
            .contains("velocity"),
        "{x:?}"
    );
    // An hour later the window has slid past it all: data flows again.
    let (later, _) = send(
        &e,
        &CcrSpec::new("v;1", UPDATE, 51)
            .msisdn("15556000001")
            .mscc(MsccSpec::rsu(10)),
        NOON + 60 + 3600,
    );
    assert_eq!(later.mscc[0].granted_octets, Some(10 * MIB));
}

#[test]
fn a_velocity_guard_that_notifies_lets_data_flow_and_says_so_once() {
    let e = engine(&guarded("notify"));
    let open = CcrSpec::new("n;1", INITIAL, 0)
        .msisdn("15556000001")
        .mscc(MsccSpec::rsu(10));
    let mut cca = send(&e, &open, NOON).0;
    let mut seen = Vec::new();
    for n in 1..10 {
        let granted = cca.mscc[0].granted_octets.unwrap();
        assert_eq!(granted, 10 * MIB, "never cut by a guard that notifies");
        let (next, ops) = send(
            &e,
            &CcrSpec::new("n;1", UPDATE, n)
                .msisdn("15556000001")
                .mscc(MsccSpec::report(10, granted, true)),
            NOON + i64::from(n),
        );
        cca = next;
        seen.extend(
            events(&ops)
                .into_iter()
                .filter(|e| e["kind"] == "velocity_exceeded"),
        );
    }
    assert_eq!(seen.len(), 1, "one event per crossing: {seen:?}");
    assert_eq!(seen[0]["action"], "notify");
}

#[test]
fn a_session_ceiling_cuts_grants_and_refuses_an_absurd_report() {
    let e = engine(&guarded("restrict"));
    let (total, cca, ops) = run_until_cut(&e, "c;1", "15556000002", NOON);
    assert_eq!(total, 35 * MIB);
    assert_eq!(
        cca.mscc[0].final_unit_action,
        Some(0),
        "TERMINATE at the ceiling"
    );
    let tripped: Vec<Value> = events(&ops)
        .into_iter()
        .filter(|e| e["kind"] == "ceiling_tripped")
        .collect();
    assert_eq!(tripped.len(), 1, "{tripped:?}");
    assert_eq!(tripped[0]["guard"], "max_session");
    // A report of 50 GiB on a 5 MiB grant (under the policy's bound on one report, past the
    // session's ceiling): refused whole, nothing charged, an event.
    let before = counter(&e, &["g"], Unit::Octets);
    let (refused, ops) = send(
        &e,
        &CcrSpec::new("c;1", UPDATE, 40)
            .msisdn("15556000002")
            .mscc(MsccSpec::report(10, 50 << 30, false)),
        NOON + 100,
    );
    assert_eq!(refused.result_code, ResultCode::InvalidAvpValue.code());
    assert_eq!(counter(&e, &["g"], Unit::Octets), before, "nothing charged");
    assert_eq!(before.0, 30 * MIB, "what was reported before");
    let ev = events(&ops);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        (&ev[0]["kind"], &ev[0]["refused"]),
        (&"ceiling_tripped".into(), &"report".into())
    );
}

/// The executives' cost centre: 30 MiB of video (RG 40) that their other data cannot use,
/// and 20 MiB for everything else, inside the enterprise's 1 GiB.
const ALLOWANCES: &str = r#"
[[tenant]]
name = "corp"
[tenant.policy.classes.video]
rating_groups = [40]
[tenant.policy.classes.data]
rating_groups = ["0-39", "41-4294967295"]

[[tenant.node]]
path = "corp"
limits = [{ unit = "octets", amount = "1 GiB" }]
[[tenant.node]]
path = "corp/exec"
limits = [
  { unit = "octets", amount = "30 MiB", class = "video" },
  { unit = "octets", amount = "20 MiB", class = "data" },
]
[[tenant.node]]
path = "corp/exec/ceo"
msisdn = "15557000001"
[[tenant.node]]
path = "corp/ops"
limits = [{ unit = "octets", amount = "10 MiB", class = "video" }]
"#;

/// (used, reserved) of the counter of `unit` of `class` at `path`.
fn class_counter(e: &Engine, path: &[&str], unit: Unit, class: &str) -> (u64, u64) {
    let ledger = e.ledger();
    let tree = ledger.find_tree(path[0]).expect("tree");
    let t = ledger.lock(tree).unwrap();
    let node = t.find(path).unwrap();
    let id = ocf_charging::rules::spec::class_id(class);
    let c = t.nodes[node as usize]
        .counters
        .iter()
        .find(|c| c.unit == unit && c.class == id)
        .unwrap_or_else(|| panic!("{path:?} has no {class} limit"));
    (c.used, c.reserved)
}

#[test]
fn a_video_allowance_runs_out_while_the_devices_other_data_goes_on() {
    let e = engine(ALLOWANCES);
    let sid = "video;1";
    let open = CcrSpec::new(sid, INITIAL, 0)
        .msisdn("15557000001")
        .mscc(MsccSpec::rsu(40))
        .mscc(MsccSpec::ask(10, MIB));
    let (cca, _) = send(&e, &open, NOON);
    assert_eq!(cca.mscc[0].granted_octets, Some(10 * MIB));
    assert_eq!(cca.mscc[1].granted_octets, Some(MIB));
    assert_eq!(
        class_counter(&e, &["corp", "exec"], Unit::Octets, "video"),
        (0, 10 * MIB)
    );
    assert_eq!(
        class_counter(&e, &["corp", "exec"], Unit::Octets, "data"),
        (0, MIB)
    );
    assert_eq!(
        counter(&e, &["corp"], Unit::Octets),
        (0, 11 * MIB),
        "the enterprise counts both"
    );
    // Video is used up: the grant that reaches 30 MiB carries the final units; data goes on.
    let mut n = 0;
    let mut video_total = 10 * MIB;
    let mut last = cca;
    while last.mscc[0].final_unit_action.is_none() {
        n += 1;
        let g = last.mscc[0].granted_octets.unwrap();
        let (next, _) = send(
            &e,
            &CcrSpec::new(sid, UPDATE, n)
                .msisdn("15557000001")
                .mscc(MsccSpec::report(40, g, true))
                .mscc(MsccSpec::report(10, 0, true)),
            NOON + i64::from(n),
        );
        last = next;
        video_total += last.mscc[0].granted_octets.unwrap_or(0);
        assert!(n < 10);
    }
    assert_eq!(video_total, 30 * MIB);
    n += 1;
    let g = last.mscc[0].granted_octets.unwrap();
    let (after, _) = send(
        &e,
        &CcrSpec::new(sid, UPDATE, n)
            .msisdn("15557000001")
            .mscc(MsccSpec::report(40, g, true))
            .mscc(MsccSpec::report(10, MIB, true)),
        NOON + 100,
    );
    assert_eq!(
        after.mscc[0].result_code,
        Some(ResultCode::CreditLimitReached.code())
    );
    assert_eq!(
        after.mscc[1].result_code,
        Some(SUCCESS),
        "other data goes on: {after:?}"
    );
    assert_eq!(
        class_counter(&e, &["corp", "exec"], Unit::Octets, "video").0,
        30 * MIB
    );
    assert_eq!(
        class_counter(&e, &["corp", "exec"], Unit::Octets, "data").0,
        MIB
    );
    assert_eq!(counter(&e, &["corp"], Unit::Octets).0, 31 * MIB);
    // Explain names the class of each level.
    let x = e.explain("15557000001", NOON + 100).unwrap();
    let video = &x.decisions[0].services[0];
    assert_eq!(video.limited_by.as_deref(), Some("corp/exec"), "{video:?}");
    assert!(
        video
            .levels
            .iter()
            .any(|l| l.class.as_deref() == Some("video"))
    );
    // Moving video allowance from ops to exec lets video go on.
    e.accounts()
        .change(
            &ocf_charging::accounts::changes::Change::Move {
                from: "corp/ops".into(),
                to: "corp/exec".into(),
                unit: Unit::Octets,
                period: ocf_charging::ledger::Period::Month,
                amount: ocf_charging::accounts::provisioning::Amount::Text("5 MiB".into()),
                class: Some("video".into()),
            },
            NOON + 101,
        )
        .unwrap();
    let (again, _) = send(
        &e,
        &CcrSpec::new(sid, UPDATE, n + 1)
            .msisdn("15557000001")
            .mscc(MsccSpec::rsu(40)),
        NOON + 102,
    );
    assert_eq!(again.mscc[0].granted_octets, Some(5 * MIB));
}

/// A device roaming in the EU at 1.00 EUR per MiB, its roaming capped at 50.00 EUR a month.
const ROAMER: &str = include_str!("../../../tests/common/roamers.toml");

#[test]
fn a_roaming_device_is_warned_at_40_eur_and_cut_off_at_50_eur_exactly() {
    let e = engine(ROAMER);
    let sid = "roam;1";
    let roaming = |spec: CcrSpec| spec.msisdn("15558000003").serving_network("20801");
    let (mut cca, _) = send(
        &e,
        &roaming(CcrSpec::new(sid, INITIAL, 0)).mscc(MsccSpec::rsu(10)),
        NOON,
    );
    let device = ["travel", "15558000003"];
    let mut warned_at = None;
    let mut n = 0;
    let mut granted_total = 0;
    while cca.mscc[0].final_unit_action.is_none() {
        let g = cca.mscc[0].granted_octets.unwrap();
        granted_total += g;
        n += 1;
        let (next, ops) = send(
            &e,
            &roaming(CcrSpec::new(sid, UPDATE, n)).mscc(MsccSpec::report(10, g, true)),
            NOON + i64::from(n),
        );
        for (i, op) in ops.iter().enumerate() {
            if let Op::Threshold(f) = op {
                // The roaming cap's 80 %: a level of the roaming class's limit.
                assert_eq!(f.class, "roaming", "{:?}", ops[i]);
                if f.level == ocf_charging::ops::FiredLevel::Percent(80) {
                    warned_at = Some(class_counter(&e, &device, Unit::Money, "roaming").0);
                }
            }
        }
        cca = next;
        assert!(n < 20);
    }
    granted_total += cca.mscc[0].granted_octets.unwrap();
    assert_eq!(warned_at, Some(40_000_000_000), "warned at 40.00 EUR");
    assert_eq!(
        granted_total,
        50 * MIB,
        "50 EUR of roaming data at 1.00 per MiB"
    );
    assert_eq!(cca.mscc[0].final_unit_action, Some(0), "cut off at the cap");
    let last = cca.mscc[0].granted_octets.unwrap();
    let (after, _) = send(
        &e,
        &roaming(CcrSpec::new(sid, UPDATE, n + 1)).mscc(MsccSpec::report(10, last, true)),
        NOON + 100,
    );
    assert_eq!(
        after.mscc[0].result_code,
        Some(ResultCode::CreditLimitReached.code())
    );
    assert_eq!(
        class_counter(&e, &device, Unit::Money, "roaming"),
        (50_000_000_000, 0),
        "50.00 EUR exactly"
    );
    // At home the device's data is not roaming: no money, no cap.
    let (home, _) = send(
        &e,
        &CcrSpec::new("home;1", INITIAL, 0)
            .msisdn("15558000003")
            .serving_network("00101")
            .mscc(MsccSpec::rsu(10)),
        NOON + 200,
    );
    assert_eq!(home.mscc[0].granted_octets, Some(10 * MIB));
    assert_eq!(counter(&e, &["travel"], Unit::Octets).1, 10 * MIB);
    let x = e.explain("15558000003", NOON + 100).unwrap();
    let roam = x
        .decisions
        .iter()
        .find(|d| d.attributes.roaming)
        .expect("a roaming decision");
    assert_eq!(roam.attributes.zone.as_deref(), Some("eu"));
    assert_eq!(roam.services[0].rule.as_deref(), Some("eu-roaming"));
}
