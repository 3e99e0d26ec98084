//! The charging engine with its persistence, in process: usage records reconcile with the
//! ledger (after sessions ended by the gateway, by supervision, and one-shot events, the
//! records' usage summed per account is exactly what the ledger holds as used, for octets and
//! money), and a journal that cannot keep up makes requests 3004 before anything is charged.

mod common;

use std::collections::HashMap;

use bytes::BytesMut;
use ocf_charging::accounts::provisioning::default_tenant;
use ocf_charging::ledger::Unit;
use ocf_charging::{ChargingConfig, Engine};
use ocf_loadtest::gy::{CcaResult, CcrSpec, EVENT, INITIAL, MsccSpec, TERMINATION, UPDATE};
use ocf_protocol::Message;
use ocf_protocol::base::LocalIdentity;
use ocf_store::Store;
use ocf_store::usage::{UsageLog, files};

const NOW: i64 = 1_795_000_000;

/// Our identity as the engine answers with it.
fn identity() -> LocalIdentity {
    common::identity("ocfd.localdomain")
}

fn ask(store: &Store, spec: &CcrSpec, now: i64) -> CcaResult {
    let mut b = BytesMut::new();
    spec.write(&mut b, 1, 1);
    let req = Message::decode(b.freeze()).unwrap();
    let mut out = BytesMut::new();
    store.answer(&identity(), &req, now, &mut out);
    CcaResult::read(&Message::decode(out.freeze()).unwrap())
}

fn mscc(rg: u32, used: Option<u64>, more: bool) -> MsccSpec {
    MsccSpec {
        rating_group: Some(rg),
        used_octets: used,
        requested_octets: if more { Some(None) } else { None },
        ..Default::default()
    }
}

#[test]
fn usage_records_sum_to_the_ledger_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, directory) = default_tenant();
    let engine = Store::new(
        Engine::new(ledger, directory, ChargingConfig::default()).with_usage_records(false),
    )
    .with_usage_log(UsageLog::start(dir.path(), 4096).unwrap());
    let mut rng = fastrand::Rng::with_seed(7);
    let subscribers: Vec<String> = (0..12)
        .map(|k| format!("{}", 15_551_008_400u64 + k))
        .chain(["15559990001".to_string(), "15551000001".to_string()])
        .collect();
    for n in 0..120 {
        let who = &subscribers[rng.usize(..subscribers.len())];
        let sid = format!("s;{n}");
        let rg = rng.u32(1..4);
        let i = ask(
            &engine,
            &CcrSpec::new(&sid, INITIAL, 0)
                .msisdn(who)
                .mscc(mscc(rg, None, true)),
            NOW,
        );
        let mut held = i.mscc.first().and_then(|m| m.granted_octets).unwrap_or(0);
        let updates = rng.u32(0..3);
        for u in 0..updates {
            let used = rng.u64(0..=held);
            let r = ask(
                &engine,
                &CcrSpec::new(&sid, UPDATE, u + 1).mscc(mscc(rg, Some(used), true)),
                NOW,
            );
            held = r.mscc.first().and_then(|m| m.granted_octets).unwrap_or(0);
        }
        match rng.u8(..3) {
            // Ended by the gateway.
            0 | 1 => {
                let used = rng.u64(0..=held);
                ask(
                    &engine,
                    &CcrSpec::new(&sid, TERMINATION, updates + 1).mscc(mscc(rg, Some(used), false)),
                    NOW,
                );
            }
            // Left open: supervision closes it below.
            _ => {}
        }
    }
    for n in 0..10 {
        let mut e = CcrSpec::new(format!("e;{n}"), EVENT, 0)
            .msisdn(&subscribers[n % subscribers.len()])
            .mscc(MsccSpec {
                rating_group: Some(9),
                requested_octets: Some(Some(100_000)),
                ..Default::default()
            });
        e.requested_action = Some(0);
        ask(&engine, &e, NOW);
    }
    let sup = engine.supervise(NOW + 100_000);
    assert!(
        sup.closed_sessions > 0,
        "some sessions were closed by supervision"
    );
    engine.usage_log().unwrap().close();

    // Sum the records per account.
    let mut octets: HashMap<String, u64> = HashMap::new();
    let mut money: HashMap<String, rust_decimal::Decimal> = HashMap::new();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for f in files(dir.path()).unwrap() {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(r["interim"], false);
            let account = r["account"].as_str().unwrap().to_owned();
            *outcomes
                .entry(r["outcome"].as_str().unwrap().into())
                .or_default() += 1;
            assert!(r["subscriber"].as_str().unwrap().starts_with("e164:"));
            for s in r["services"].as_array().unwrap() {
                *octets.entry(account.clone()).or_default() += s["octets"].as_u64().unwrap();
                *money.entry(account.clone()).or_default() += s["money"]
                    .as_str()
                    .unwrap()
                    .parse::<rust_decimal::Decimal>()
                    .unwrap();
            }
        }
    }
    assert!(outcomes.len() == 3, "{outcomes:?}");
    // Compare with the ledger: every device and alice.
    let mut checked = 0;
    for tree in 0..engine.engine().ledger().tree_count() as u32 {
        let t = engine.engine().ledger().lock(tree).unwrap();
        for (i, node) in t.nodes.iter().enumerate() {
            let path = t.names(i as u32).join("/");
            for c in &node.counters {
                let (expect, got) = match c.unit {
                    Unit::Octets if path.split('/').count() == 3 => {
                        (c.used, octets.get(&path).copied().unwrap_or(0))
                    }
                    Unit::Money => {
                        use rust_decimal::prelude::ToPrimitive;
                        let m = money.get(&path).copied().unwrap_or_default()
                            * rust_decimal::Decimal::from(1_000_000_000u64);
                        assert!(
                            path != "alice" || c.used > 0,
                            "alice was charged in this run"
                        );
                        (c.used, m.to_u64().unwrap())
                    }
                    _ => continue,
                };
                assert_eq!(
                    got, expect,
                    "{path}: records say {got}, ledger says {expect}"
                );
                if expect > 0 {
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 10, "accounts with usage checked: {checked}");
}

/// A journal that cannot take more (here: its writer has stopped) makes a CCR 3004
/// DIAMETER_TOO_BUSY with the E bit, and nothing is charged.
#[test]
fn a_journal_that_cannot_keep_up_refuses_before_charging() {
    use ocf_store::writer::{Durability, Journal, JournalConfig};
    let dir = tempfile::tempdir().unwrap();
    let (ledger, directory) = default_tenant();
    let journal = Journal::start(
        JournalConfig {
            dir: dir.path().into(),
            durability: Durability::Async,
            sync_interval: std::time::Duration::from_millis(100),
            segment_bytes: 1 << 20,
            capacity: 64,
        },
        0,
        false,
        None,
    )
    .unwrap();
    let engine = Store::new(
        Engine::new(ledger, directory, ChargingConfig::default()).resume(Default::default(), NOW),
    )
    .with_journal(journal);
    let ok = ask(
        &engine,
        &CcrSpec::new("b;1", INITIAL, 0)
            .msisdn("15551008500")
            .mscc(mscc(1, None, true)),
        NOW,
    );
    assert_eq!(ok.result_code, 2001);
    engine.journal().unwrap().close();
    let mut b = BytesMut::new();
    CcrSpec::new("b;2", INITIAL, 0)
        .msisdn("15551008501")
        .mscc(mscc(1, None, true))
        .write(&mut b, 1, 1);
    let mut out = BytesMut::new();
    engine.answer(
        &identity(),
        &Message::decode(b.freeze()).unwrap(),
        NOW,
        &mut out,
    );
    let answer = Message::decode(out.freeze()).unwrap();
    assert!(answer.header.flags.is_error());
    assert_eq!(CcaResult::read(&answer).result_code, 3004);
    // Nothing was reserved for the refused request's device.
    let t = engine.engine().ledger().lock(0).unwrap();
    let node = t.find(&["acme", "iot", "15551008501"]).unwrap();
    assert_eq!(t.nodes[node as usize].counters[0].reserved, 0);
}
