//! The credit-control engine in process, in simulated time (RFC 4006 §5, DESIGN.md §5 and §7):
//! retransmissions, CC-Request-Number ordering, supervision of grants nobody reports on
//! (Validity-Time plus grace, the server's Tcc), and money at alice's tariff to the 10^-9 EUR.
//! No sockets, threads or clock: every request and supervision pass gets a `now` the test
//! advances by hand, and every figure is read from the ledger itself.

mod common;

use common::counter;

use bytes::{Bytes, BytesMut};
use ocf_charging::accounts::provisioning::default_tenant;
use ocf_charging::engine::Supervision;
use ocf_charging::engine::recorder::{Recovered, Replayer};
use ocf_charging::ledger::{Counter, OwnUsage, Unit};
use ocf_charging::ops::{Account, FiredLevel, Op};
use ocf_charging::{ChargingConfig, Engine};
use ocf_loadtest::gy::{CcaResult, CcrSpec, EVENT, INITIAL, MsccSpec, TERMINATION, UPDATE};
use ocf_protocol::base::LocalIdentity;
use ocf_protocol::codes::{ResultCode, avp as c};
use ocf_protocol::{CommandFlags, Message};
use serde_json::Value;

/// 2026-11-18, far from a month's end: no period rolls over during a test.
const NOW: i64 = 1_795_000_000;
const MIB: u64 = 1 << 20;

/// DESIGN.md §7 and `ChargingConfig::default()`.
const VALIDITY: i64 = 600;
const GRACE: i64 = 30;
const LINGER: i64 = 15;
const SLICE: u64 = 10 * MIB;

/// Device 0 of `acme/engineering` (50 GiB a month).
const DEVICE: &str = "15551000000";
const DEVICE_PATH: [&str; 3] = ["acme", "engineering", DEVICE];
/// The consumer: 5.00 EUR prepaid at 0.01 EUR per MiB.
const ALICE: &str = "15559990001";
/// alice's balance in ledger money units (10^-9 EUR).
const BALANCE: u64 = 5_000_000_000;
/// 0.01 EUR per MiB as ledger money units per octet: 10^7 / 2^20.
const PRICE: (u128, u128) = (10_000_000, 1 << 20);

const SUCCESS: u32 = ResultCode::Success.code();
const CREDIT_LIMIT_REACHED: u32 = ResultCode::CreditLimitReached.code();
const UNKNOWN_SESSION_ID: u32 = ResultCode::UnknownSessionId.code();
const INVALID_AVP_VALUE: u32 = ResultCode::InvalidAvpValue.code();

/// Requested-Action DIRECT_DEBITING and PRICE_ENQUIRY (RFC 4006 §8.41).
const DIRECT_DEBITING: u32 = 0;
const PRICE_ENQUIRY: u32 = 3;
/// Final-Unit-Action TERMINATE (RFC 4006 §8.35).
const TERMINATE: u32 = 0;
/// Currency-Code of EUR (ISO 4217).
const EUR: u32 = 978;

fn identity() -> LocalIdentity {
    common::identity("engine-test")
}

/// One request and what the engine made of it.
struct Sent {
    /// The request's Hop-by-Hop and End-to-End identifiers.
    ids: (u32, u32),
    raw: Bytes,
    answer: Message,
    cca: CcaResult,
    ops: Vec<Op>,
    replayed: bool,
}

impl Sent {
    fn granted(&self) -> Vec<Option<u64>> {
        self.cca.mscc.iter().map(|m| m.granted_octets).collect()
    }

    fn mscc_results(&self) -> Vec<Option<u32>> {
        self.cca.mscc.iter().map(|m| m.result_code).collect()
    }

    /// The CC-Request-Number inside the answer's Failed-AVP.
    fn failed_request_number(&self) -> Option<u32> {
        self.answer
            .find(c::FAILED_AVP)?
            .children()
            .find(|a| a.is(c::CC_REQUEST_NUMBER))?
            .u32()
            .ok()
    }

    /// The reservation ids of the Reserve ops, in order.
    fn reservations(&self) -> Vec<u64> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Reserve { reservation, .. } => Some(*reservation),
                _ => None,
            })
            .collect()
    }

    fn ledger_ops(&self) -> usize {
        self.ops
            .iter()
            .filter(|op| !matches!(op, Op::Session(_) | Op::Usage(_) | Op::SessionClosed(_)))
            .count()
    }
}

/// A gateway in front of an engine; each request gets identifiers of its own.
struct Gy {
    engine: Engine,
    identity: LocalIdentity,
    sent: u32,
}

impl Gy {
    fn new(config: ChargingConfig) -> Self {
        let (ledger, directory) = default_tenant();
        Gy::with(Engine::new(ledger, directory, config))
    }

    fn with(engine: Engine) -> Self {
        Gy {
            engine,
            identity: identity(),
            sent: 0,
        }
    }

    fn send(&mut self, spec: &CcrSpec, now: i64) -> Sent {
        self.sent += 1;
        let ids = (0x1000 + self.sent, 0x7700_0000 + self.sent);
        let mut b = BytesMut::new();
        spec.write(&mut b, ids.0, ids.1);
        let req = Message::decode(b.freeze()).expect("the CCR decodes");
        let mut out = BytesMut::new();
        let pending = self
            .engine
            .credit_control(&self.identity, &req, now, &mut out);
        let (ops, replayed) = (pending.ops().to_vec(), pending.replayed());
        drop(pending);
        let raw = out.freeze();
        let answer = Message::decode(raw.clone()).expect("the answer decodes");
        // Whatever the outcome, the answer is to this request (RFC 6733 §6.2).
        assert_eq!(
            (answer.header.hop_by_hop, answer.header.end_to_end),
            ids,
            "answer to {spec:?}"
        );
        assert!(!answer.header.is_request());
        let cca = CcaResult::read(&answer);
        Sent {
            ids,
            raw,
            answer,
            cca,
            ops,
            replayed,
        }
    }

    fn supervise(&self, now: i64) -> (Supervision, Vec<Op>) {
        let (sup, pending) = self.engine.supervise(now);
        (sup, pending.ops().to_vec())
    }

    /// Sends `spec` again, once as it was and once with the T flag (RFC 6733 §3): each time the
    /// answer is `original`'s but for the identifiers, nothing is charged and nothing changes.
    fn assert_replays(&mut self, spec: &CcrSpec, original: &Sent, now: i64) {
        let before = LedgerState::of(&self.engine);
        let open = self.engine.session_count();
        for t_flag in [false, true] {
            let mut again = spec.clone();
            again.retransmit = t_flag;
            let r = self.send(&again, now);
            assert_ne!(r.ids, original.ids);
            assert_eq!(r.cca, original.cca, "T flag {t_flag}");
            assert_eq!(
                without_ids(&r.raw),
                without_ids(&original.raw),
                "the same answer, octet for octet (T flag {t_flag})"
            );
            // The T flag is never set in an answer (RFC 6733 §3).
            assert_eq!(r.answer.header.flags.0 & CommandFlags::RETRANSMIT, 0);
            assert!(r.replayed, "answered from the session's cache");
            assert!(r.ops.is_empty(), "nothing to persist: {:?}", r.ops);
            before.assert_same(&self.engine, "a retransmission");
            assert_eq!(self.engine.session_count(), open);
        }
    }
}

/// An answer with its Hop-by-Hop and End-to-End identifiers blanked.
fn without_ids(raw: &[u8]) -> Vec<u8> {
    let mut v = raw.to_vec();
    v[12..20].fill(0);
    v
}

/// A node's path, counters, reserved units and own usage.
type NodeState = (String, Vec<Counter>, [u64; 4], Vec<OwnUsage>);

/// Every counter, reservation and account usage of every node of every tree.
#[derive(PartialEq)]
struct LedgerState(Vec<NodeState>);

impl LedgerState {
    fn of(engine: &Engine) -> Self {
        let ledger = engine.ledger();
        let mut all = Vec::new();
        for tree in 0..ledger.tree_count() as u32 {
            let t = ledger.lock(tree).unwrap();
            for (i, n) in t.nodes.iter().enumerate() {
                all.push((
                    t.names(i as u32).join("/"),
                    n.counters.clone(),
                    n.reserved,
                    n.own.clone(),
                ));
            }
        }
        LedgerState(all)
    }

    /// Fails with the first node that differs (the whole ledger is 10,000 devices).
    fn assert_same(&self, engine: &Engine, what: &str) {
        let now = LedgerState::of(engine);
        if let Some((a, b)) = self.0.iter().zip(&now.0).find(|(a, b)| a != b) {
            panic!("{what} changed the ledger:\nbefore {a:?}\nafter  {b:?}");
        }
        assert_eq!(self.0.len(), now.0.len());
    }
}

/// (used, reserved) octets of the device, its cost centre and the enterprise.
fn device_levels(engine: &Engine) -> [(u64, u64); 3] {
    [
        counter(engine, &DEVICE_PATH, Unit::Octets),
        counter(engine, &DEVICE_PATH[..2], Unit::Octets),
        counter(engine, &DEVICE_PATH[..1], Unit::Octets),
    ]
}

/// alice's (used, reserved) money, in 10^-9 EUR.
fn alice_money(engine: &Engine) -> (u64, u64) {
    counter(engine, &["alice"], Unit::Money)
}

/// The journal's name of the account at `path`.
fn account(engine: &Engine, path: &[&str]) -> Account {
    let ledger = engine.ledger();
    let tree = ledger.find_tree(path[0]).expect("tree");
    let node = ledger.lock(tree).unwrap().find(path).expect("node");
    Account { tree, node }
}

/// The usage records among `ops`, read as JSON.
fn usage_records(ops: &[Op]) -> Vec<Value> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Usage(json) => Some(serde_json::from_slice(json).expect("a usage record is JSON")),
            _ => None,
        })
        .collect()
}

/// A direct debit (RFC 4006 §6.3) of `octets` for rating group 10.
fn debit(session_id: &str, msisdn: &str, octets: u64) -> CcrSpec {
    let mut e = CcrSpec::new(session_id, EVENT, 0)
        .msisdn(msisdn)
        .mscc(MsccSpec::ask(10, octets));
    e.requested_action = Some(DIRECT_DEBITING);
    e
}

// 1. Retransmissions ------------------------------------------------------------------------

#[test]
fn retransmitted_ccr_i_u_t_get_the_same_answer_and_are_charged_once() {
    let mut gy = Gy::new(ChargingConfig::default());
    let sid = "pgw.localdomain;retx;1";

    let i = CcrSpec::new(sid, INITIAL, 0)
        .msisdn(DEVICE)
        .mscc(MsccSpec::rsu(10));
    let first = gy.send(&i, NOW);
    assert_eq!(first.cca.result_code, SUCCESS);
    assert_eq!(first.granted(), [Some(SLICE)]);
    assert!(!first.replayed);
    assert_eq!(device_levels(&gy.engine), [(0, SLICE); 3]);
    gy.assert_replays(&i, &first, NOW + 1);
    assert_eq!(device_levels(&gy.engine), [(0, SLICE); 3], "reserved once");

    let u = CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, 3 * MIB, true));
    let update = gy.send(&u, NOW + 10);
    assert_eq!(update.cca.result_code, SUCCESS);
    assert_eq!(update.granted(), [Some(SLICE)]);
    assert_eq!(device_levels(&gy.engine), [(3 * MIB, SLICE); 3]);
    gy.assert_replays(&u, &update, NOW + 11);
    assert_eq!(
        device_levels(&gy.engine),
        [(3 * MIB, SLICE); 3],
        "the report is charged once, the new grant reserved once"
    );

    let t = CcrSpec::new(sid, TERMINATION, 2).mscc(MsccSpec::report(10, 4 * MIB, false));
    let end = gy.send(&t, NOW + 20);
    assert_eq!(end.cca.result_code, SUCCESS);
    assert_eq!(end.granted(), [None]);
    assert_eq!(device_levels(&gy.engine), [(7 * MIB, 0); 3]);
    assert_eq!(gy.engine.session_count(), 0, "the session has ended");

    // Ended, it lingers LINGER seconds for a retransmission of its CCR-T; supervision keeps it
    // until then.
    assert_eq!(
        gy.supervise(NOW + 20 + LINGER - 1).0,
        Supervision::default()
    );
    gy.assert_replays(&t, &end, NOW + 20 + LINGER - 1);
    assert_eq!(device_levels(&gy.engine), [(7 * MIB, 0); 3]);

    // Once supervision has forgotten it, the Session-Id is unknown (RFC 4006 §5.5) and the
    // retransmission is not charged again either.
    let (sup, ops) = gy.supervise(NOW + 20 + LINGER);
    assert_eq!(
        sup,
        Supervision::default(),
        "a lingering session is not closed again"
    );
    assert!(ops.is_empty(), "{ops:?}");
    let before = LedgerState::of(&gy.engine);
    for t_flag in [false, true] {
        let mut late = t.clone();
        late.retransmit = t_flag;
        let r = gy.send(&late, NOW + 20 + LINGER);
        assert_eq!(r.cca.result_code, UNKNOWN_SESSION_ID, "T flag {t_flag}");
        assert!(!r.replayed);
        assert!(r.ops.is_empty(), "{:?}", r.ops);
    }
    before.assert_same(&gy.engine, "a CCR-T after the linger time");
    assert_eq!(device_levels(&gy.engine), [(7 * MIB, 0); 3]);
}

#[test]
fn a_retransmitted_event_is_debited_once() {
    let mut gy = Gy::new(ChargingConfig::default());
    let e = debit("pgw.localdomain;event;1", DEVICE, 2 * MIB);
    let first = gy.send(&e, NOW);
    assert_eq!(first.cca.result_code, SUCCESS);
    assert_eq!(first.granted(), [Some(2 * MIB)]);
    assert_eq!(device_levels(&gy.engine), [(2 * MIB, 0); 3]);
    gy.assert_replays(&e, &first, NOW + LINGER - 1);
    assert_eq!(device_levels(&gy.engine), [(2 * MIB, 0); 3]);
}

#[test]
fn an_event_on_the_session_id_of_an_open_session_is_refused_and_charges_nothing() {
    let mut gy = Gy::new(ChargingConfig::default());
    let sid = "pgw.localdomain;shared;1";
    let i = gy.send(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(DEVICE)
            .mscc(MsccSpec::rsu(10)),
        NOW,
    );
    assert_eq!(i.cca.result_code, SUCCESS);
    // A client error (Session-Ids are never reused), but whatever the engine answers, the
    // same request sent again must get that answer and not be charged again (DESIGN.md §5).
    let mut e = debit(sid, DEVICE, 2 * MIB);
    e.request_number = 5;
    let before = device_levels(&gy.engine);
    let first = gy.send(&e, NOW + 1);
    assert_eq!(first.cca.result_code, INVALID_AVP_VALUE, "{:?}", first.cca);
    assert_eq!(first.ledger_ops(), 0);
    assert_eq!(device_levels(&gy.engine), before, "nothing debited");
    let again = gy.send(&e, NOW + 2);
    assert_eq!(again.cca, first.cca);
    assert_eq!(device_levels(&gy.engine), before, "nothing debited");
    // The session goes on as it was.
    let u = gy.send(
        &CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, MIB, true)),
        NOW + 3,
    );
    assert_eq!(u.cca.result_code, SUCCESS);
}

#[test]
fn a_retransmission_of_a_refused_update_gets_the_same_refusal() {
    let mut gy = Gy::new(ChargingConfig::default());
    let sid = "pgw.localdomain;refused;1";
    let i = gy.send(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(DEVICE)
            .mscc(MsccSpec::rsu(10)),
        NOW,
    );
    assert_eq!(i.cca.result_code, SUCCESS);
    // More than a gateway could have used (the policy's max_report, 100 GiB): refused whole.
    let u = CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, (100 << 30) + 1, true));
    let refused = gy.send(&u, NOW + 10);
    assert_eq!(refused.cca.result_code, INVALID_AVP_VALUE);
    assert_eq!(refused.ledger_ops(), 0);
    assert_eq!(
        device_levels(&gy.engine),
        [(0, SLICE); 3],
        "nothing charged"
    );
    let counted = gy
        .engine
        .reports_refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(counted, 1);

    gy.assert_replays(&u, &refused, NOW + 11);
    assert_eq!(
        gy.engine
            .reports_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the retransmission was not examined again"
    );
    // The session goes on from the refused number.
    let next = gy.send(
        &CcrSpec::new(sid, UPDATE, 2).mscc(MsccSpec::report(10, MIB, true)),
        NOW + 12,
    );
    assert_eq!(next.cca.result_code, SUCCESS);
    assert_eq!(device_levels(&gy.engine), [(MIB, SLICE); 3]);
}

#[test]
fn a_retransmission_after_a_restart_gets_the_same_answer_from_the_journal() {
    let config = ChargingConfig::default();
    let journaled = |now| {
        let (ledger, directory) = default_tenant();
        let start = Recovered {
            next_reservation: 1,
            ..Default::default()
        };
        Engine::new(ledger, directory, config).resume(start, now)
    };
    let mut gy = Gy::with(journaled(NOW));
    let sid = "pgw.localdomain;restart;1";
    let mut journal = Vec::new();
    let i = gy.send(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(DEVICE)
            .mscc(MsccSpec::rsu(10)),
        NOW,
    );
    journal.push((NOW, i.ops));
    let u = CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, 3 * MIB, true));
    let update = gy.send(&u, NOW + 10);
    assert_eq!(update.cca.result_code, SUCCESS);
    // Journaled, every request records the session's state with its answer.
    assert!(update.ops.iter().any(|op| matches!(op, Op::Session(_))));
    journal.push((NOW + 10, update.ops.clone()));
    let before = LedgerState::of(&gy.engine);

    // A restart: a fresh tenant, the journal replayed onto it.
    let (ledger, directory) = default_tenant();
    let fresh = Engine::new(ledger, directory, config);
    let mut replayer = Replayer::new(&fresh, Vec::new());
    for (now, ops) in &journal {
        for op in ops {
            replayer.apply(op, *now).unwrap();
        }
    }
    let recovered = replayer.finish();
    let restarted = fresh.resume(recovered, NOW + 20);
    let mut gy = Gy::with(restarted);
    // The gateway's identifiers go on from where they were.
    gy.sent = 100;
    before.assert_same(&gy.engine, "the restart");
    assert_eq!(gy.engine.session_count(), 1);
    // The answer kept compact in the journal is rebuilt octet for octet.
    gy.assert_replays(&u, &update, NOW + 21);
    assert_eq!(device_levels(&gy.engine), [(3 * MIB, SLICE); 3]);
}

// 2. CC-Request-Number ordering -------------------------------------------------------------

#[test]
fn out_of_order_request_numbers_are_refused_and_charge_nothing() {
    let mut gy = Gy::new(ChargingConfig::default());
    let sid = "pgw.localdomain;order;1";
    let i = CcrSpec::new(sid, INITIAL, 0)
        .msisdn(DEVICE)
        .mscc(MsccSpec::rsu(10));
    assert_eq!(gy.send(&i, NOW).cca.result_code, SUCCESS);
    let u1 = gy.send(
        &CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, 2 * MIB, true)),
        NOW + 10,
    );
    assert_eq!(u1.cca.result_code, SUCCESS);
    assert_eq!(device_levels(&gy.engine), [(2 * MIB, SLICE); 3]);

    // 5004 DIAMETER_INVALID_AVP_VALUE naming the CC-Request-Number: not after the last one
    // handled (1), and not a retransmission of it (another type or a lower number), or a
    // CCR-I for a session that exists.
    let before = LedgerState::of(&gy.engine);
    let stale = [
        CcrSpec::new(sid, UPDATE, 0).mscc(MsccSpec::report(10, 5 * MIB, true)),
        CcrSpec::new(sid, TERMINATION, 1).mscc(MsccSpec::report(10, 5 * MIB, false)),
        i.clone(),
        CcrSpec::new(sid, INITIAL, 9)
            .msisdn(DEVICE)
            .mscc(MsccSpec::rsu(10)),
    ];
    for spec in &stale {
        let r = gy.send(spec, NOW + 20);
        assert_eq!(r.cca.result_code, INVALID_AVP_VALUE, "{spec:?}");
        assert_eq!(r.failed_request_number(), Some(spec.request_number));
        assert!(!r.replayed);
        assert!(r.ops.is_empty(), "{:?}", r.ops);
    }
    before.assert_same(&gy.engine, "refused requests");
    assert_eq!(gy.engine.session_count(), 1, "the session is still open");

    // The same Session-Id, type and number is a retransmission whatever it carries (RFC 4006
    // §5.1 names a request by Session-Id and CC-Request-Number): the first answer, the first
    // report, charged once.
    let u1_again = CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, 9 * MIB, true));
    gy.assert_replays(&u1_again, &u1, NOW + 21);
    assert_eq!(device_levels(&gy.engine), [(2 * MIB, SLICE); 3]);

    // Numbers may skip ahead (a request lost on the way): handled, and the last one is now 3.
    let u3 = CcrSpec::new(sid, UPDATE, 3).mscc(MsccSpec::report(10, MIB, true));
    let skipped = gy.send(&u3, NOW + 30);
    assert_eq!(skipped.cca.result_code, SUCCESS);
    assert_eq!(skipped.granted(), [Some(SLICE)]);
    assert_eq!(device_levels(&gy.engine), [(3 * MIB, SLICE); 3]);
    let late = gy.send(
        &CcrSpec::new(sid, UPDATE, 2).mscc(MsccSpec::report(10, MIB, true)),
        NOW + 31,
    );
    assert_eq!(late.cca.result_code, INVALID_AVP_VALUE);
    assert_eq!(late.failed_request_number(), Some(2));
    // The refusals did not replace the answer kept for a retransmission.
    gy.assert_replays(&u3, &skipped, NOW + 32);

    // Ended: within the linger time only its CCR-T is answered again; a CCR-U gets 5002
    // DIAMETER_UNKNOWN_SESSION_ID and a CCR-I is still out of order.
    let t = CcrSpec::new(sid, TERMINATION, 4).mscc(MsccSpec::report(10, 0, false));
    let end = gy.send(&t, NOW + 40);
    assert_eq!(end.cca.result_code, SUCCESS);
    assert_eq!(device_levels(&gy.engine), [(3 * MIB, 0); 3]);
    let before = LedgerState::of(&gy.engine);
    let after_end = gy.send(
        &CcrSpec::new(sid, UPDATE, 5).mscc(MsccSpec::report(10, MIB, true)),
        NOW + 41,
    );
    assert_eq!(after_end.cca.result_code, UNKNOWN_SESSION_ID);
    for n in [0, 5] {
        let r = gy.send(
            &CcrSpec::new(sid, INITIAL, n)
                .msisdn(DEVICE)
                .mscc(MsccSpec::rsu(10)),
            NOW + 41,
        );
        assert_eq!(r.cca.result_code, INVALID_AVP_VALUE, "CCR-I {n}");
        assert_eq!(r.failed_request_number(), Some(n));
    }
    before.assert_same(&gy.engine, "requests to an ended session");
    gy.assert_replays(&t, &end, NOW + 42);
    assert_eq!(gy.engine.session_count(), 0);
}

#[test]
fn a_session_id_of_another_origin_host_is_not_a_retransmission() {
    let mut gy = Gy::new(ChargingConfig::default());
    let sid = "pgw.localdomain;host;1";
    let i = CcrSpec::new(sid, INITIAL, 0)
        .msisdn(DEVICE)
        .mscc(MsccSpec::rsu(10));
    assert_eq!(gy.send(&i, NOW).cca.result_code, SUCCESS);
    let before = LedgerState::of(&gy.engine);
    let other = |mut s: CcrSpec| {
        s.origin_host = "pgw-b.localdomain".into();
        s
    };
    // Session-Ids are unique to the host that made them (RFC 6733 §8.8).
    let r = gy.send(&other(i.clone()), NOW + 1);
    assert_eq!(r.cca.result_code, INVALID_AVP_VALUE);
    assert!(!r.replayed);
    let r = gy.send(
        &other(CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, MIB, true))),
        NOW + 1,
    );
    assert_eq!(r.cca.result_code, UNKNOWN_SESSION_ID);
    before.assert_same(&gy.engine, "another host's requests");
}

// 3. Supervision ----------------------------------------------------------------------------

#[test]
fn unreported_grants_return_to_the_pool_after_validity_time_and_grace() {
    let (ledger, directory) = default_tenant();
    let engine =
        Engine::new(ledger, directory, ChargingConfig::default()).with_usage_records(false);
    let mut gy = Gy::with(engine);
    let device = account(&gy.engine, &DEVICE_PATH);
    let sid = "pgw.localdomain;expiry;1";

    let i = gy.send(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(DEVICE)
            .mscc(MsccSpec::rsu(10))
            .mscc(MsccSpec::rsu(20)),
        NOW,
    );
    assert_eq!(i.cca.result_code, SUCCESS);
    assert_eq!(i.granted(), [Some(SLICE), Some(SLICE)]);
    let validity: Vec<_> = i.cca.mscc.iter().map(|m| m.validity_time).collect();
    assert_eq!(validity, [Some(VALIDITY as u32); 2]);
    let [rg10_first, rg20] = i.reservations()[..] else {
        panic!("two reservations: {:?}", i.ops)
    };
    assert_eq!(device_levels(&gy.engine), [(0, 2 * SLICE); 3]);

    // Rating group 10 reports and gets a new grant; 20 says nothing.
    let u = gy.send(
        &CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, 3 * MIB, true)),
        NOW + 100,
    );
    assert_eq!(u.cca.result_code, SUCCESS);
    let [rg10] = u.reservations()[..] else {
        panic!("one reservation: {:?}", u.ops)
    };
    assert_ne!(rg10, rg10_first);
    assert_eq!(device_levels(&gy.engine), [(3 * MIB, 2 * SLICE); 3]);

    // Up to the last second of Validity-Time + grace nothing moves.
    let (sup, ops) = gy.supervise(NOW + VALIDITY + GRACE - 1);
    let held = |n| Supervision {
        held_reservations: n,
        ..Default::default()
    };
    assert_eq!(sup, held(2));
    assert!(ops.is_empty(), "{ops:?}");
    assert_eq!(device_levels(&gy.engine), [(3 * MIB, 2 * SLICE); 3]);

    // Then rating group 20's grant returns by itself; the session lives on with the other.
    let (sup, ops) = gy.supervise(NOW + VALIDITY + GRACE);
    assert_eq!(
        sup,
        Supervision {
            expired_reservations: 1,
            closed_sessions: 0,
            held_reservations: 1,
        }
    );
    assert_eq!(
        ops,
        [Op::Release {
            reservation: rg20,
            account: device,
            unit: 0,
            amount: SLICE,
        }]
    );
    assert_eq!(device_levels(&gy.engine), [(3 * MIB, SLICE); 3]);
    assert_eq!(gy.engine.session_count(), 1);

    // Rating group 10's grant of NOW + 100 lasts until NOW + 100 + 630, and so does the
    // session (Tcc): then both go.
    let deadline = NOW + 100 + VALIDITY + GRACE;
    assert_eq!(gy.supervise(deadline - 1).0, held(1));
    assert_eq!(device_levels(&gy.engine), [(3 * MIB, SLICE); 3]);
    let (sup, ops) = gy.supervise(deadline);
    assert_eq!(
        sup,
        Supervision {
            expired_reservations: 1,
            closed_sessions: 1,
            held_reservations: 0,
        }
    );
    assert_eq!(
        device_levels(&gy.engine),
        [(3 * MIB, 0); 3],
        "every unit back at the device, engineering and acme; the usage stays"
    );
    assert_eq!(gy.engine.session_count(), 0);
    assert_eq!(
        ops[0],
        Op::Release {
            reservation: rg10,
            account: device,
            unit: 0,
            amount: SLICE,
        }
    );
    let records = usage_records(&ops);
    assert_eq!(records.len(), 1, "{ops:?}");
    let r = &records[0];
    assert_eq!(r["outcome"], "supervision timeout");
    assert_eq!(r["account"], "acme/engineering/15551000000");
    assert_eq!(r["subscriber"], "e164:15551000000");
    assert_eq!(r["session_id"], sid);
    assert_eq!(
        (r["start"].as_i64(), r["end"].as_i64()),
        (Some(NOW), Some(deadline))
    );
    assert_eq!(r["interim"], false);
    assert_eq!(
        r["services"],
        serde_json::json!([{
            "events": 0, "money": "0.000000000", "octets": 3 * MIB, "rating_group": 10,
            "seconds": 0, "service_identifier": null,
        }]),
        "only what was reported; the expired grants were not usage"
    );

    // Nothing left to do.
    assert_eq!(gy.supervise(deadline + 1), (Supervision::default(), vec![]));

    // A report after the session was closed: 5002, and it is not charged.
    let before = LedgerState::of(&gy.engine);
    for spec in [
        CcrSpec::new(sid, UPDATE, 2).mscc(MsccSpec::report(10, 5 * MIB, true)),
        CcrSpec::new(sid, TERMINATION, 2).mscc(MsccSpec::report(10, 5 * MIB, false)),
    ] {
        let r = gy.send(&spec, deadline + 1);
        assert_eq!(r.cca.result_code, UNKNOWN_SESSION_ID, "{spec:?}");
        assert!(r.ops.is_empty(), "{:?}", r.ops);
    }
    before.assert_same(&gy.engine, "reports after supervision closed the session");
}

#[test]
fn a_late_report_for_an_expired_grant_is_charged_and_not_released_twice() {
    let mut gy = Gy::new(ChargingConfig::default());
    let sid = "pgw.localdomain;late;1";
    let i = gy.send(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(DEVICE)
            .mscc(MsccSpec::rsu(10))
            .mscc(MsccSpec::rsu(20)),
        NOW,
    );
    assert_eq!(i.granted(), [Some(SLICE), Some(SLICE)]);
    let u = gy.send(
        &CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, MIB, true)),
        NOW + 100,
    );
    assert_eq!(u.cca.result_code, SUCCESS);
    let (sup, _) = gy.supervise(NOW + VALIDITY + GRACE);
    assert_eq!((sup.expired_reservations, sup.closed_sessions), (1, 0));
    assert_eq!(device_levels(&gy.engine), [(MIB, SLICE); 3]);

    // Rating group 20 reports after its grant went back: the usage is charged as usage
    // nothing was reserved for, and only the new grant is reserved (the expired one is not
    // taken off the pool a second time, which would hide rating group 10's grant).
    let late = gy.send(
        &CcrSpec::new(sid, UPDATE, 2).mscc(MsccSpec::report(20, 2 * MIB, true)),
        NOW + VALIDITY + GRACE + 5,
    );
    assert_eq!(late.cca.result_code, SUCCESS);
    assert_eq!(late.granted(), [Some(SLICE)]);
    assert_eq!(device_levels(&gy.engine), [(3 * MIB, 2 * SLICE); 3]);
}

#[test]
fn reservation_grace_is_the_configured_one() {
    let config = ChargingConfig {
        reservation_grace_s: 5,
        linger_s: 15,
        ..ChargingConfig::default()
    };
    let mut gy = Gy::new(config);
    let i = gy.send(
        &CcrSpec::new("pgw.localdomain;grace;1", INITIAL, 0)
            .msisdn(DEVICE)
            .mscc(MsccSpec::ask(10, 4 * MIB)),
        NOW,
    );
    assert_eq!(i.granted(), [Some(4 * MIB)]);
    let (sup, _) = gy.supervise(NOW + VALIDITY + 4);
    assert_eq!(sup.expired_reservations, 0);
    assert_eq!(device_levels(&gy.engine), [(0, 4 * MIB); 3]);
    let (sup, _) = gy.supervise(NOW + VALIDITY + 5);
    assert_eq!((sup.expired_reservations, sup.closed_sessions), (1, 1));
    assert_eq!(device_levels(&gy.engine), [(0, 0); 3]);
}

#[test]
fn an_expired_money_grant_gives_the_money_back() {
    let (ledger, directory) = default_tenant();
    let engine =
        Engine::new(ledger, directory, ChargingConfig::default()).with_usage_records(false);
    let mut gy = Gy::with(engine);
    let i = gy.send(
        &CcrSpec::new("pgw.localdomain;money-expiry;1", INITIAL, 0)
            .msisdn(ALICE)
            .mscc(MsccSpec::rsu(10)),
        NOW,
    );
    assert_eq!(i.granted(), [Some(SLICE)]);
    // 10 MiB at 0.01 EUR per MiB: 0.10 EUR held.
    assert_eq!(alice_money(&gy.engine), (0, 100_000_000));
    let (sup, ops) = gy.supervise(NOW + VALIDITY + GRACE);
    assert_eq!((sup.expired_reservations, sup.closed_sessions), (1, 1));
    assert_eq!(alice_money(&gy.engine), (0, 0));
    assert!(ops.contains(&Op::Release {
        reservation: i.reservations()[0],
        account: account(&gy.engine, &["alice"]),
        unit: 3,
        amount: 100_000_000,
    }));
    let records = usage_records(&ops);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["outcome"], "supervision timeout");
    assert_eq!(records[0]["services"], serde_json::json!([]));
}

// 4. Tariffs and money ----------------------------------------------------------------------

#[test]
fn alice_pays_for_octets_rounded_up_to_the_nano_euro() {
    // (octets, 10^-9 EUR, as the usage record writes it): ceil(octets × 10^7 / 2^20).
    let cases: [(u64, u64, &str); 4] = [
        (MIB, 10_000_000, "0.010000000"),
        // 9.5367431640625 rounds up.
        (1, 10, "0.000000010"),
        (MIB + MIB / 2, 15_000_000, "0.015000000"),
        (10 * MIB, 100_000_000, "0.100000000"),
    ];
    for (octets, money, written) in cases {
        // In a session: 0.10 EUR held for the 10 MiB grant, the report charged at the tariff.
        let (ledger, directory) = default_tenant();
        let engine =
            Engine::new(ledger, directory, ChargingConfig::default()).with_usage_records(false);
        let mut gy = Gy::with(engine);
        let sid = format!("pgw.localdomain;tariff;{octets}");
        let i = gy.send(
            &CcrSpec::new(&sid, INITIAL, 0)
                .msisdn(ALICE)
                .mscc(MsccSpec::rsu(10)),
            NOW,
        );
        assert_eq!(
            (i.cca.result_code, i.granted()),
            (SUCCESS, vec![Some(SLICE)])
        );
        assert_eq!(alice_money(&gy.engine), (0, 100_000_000));
        let t = gy.send(
            &CcrSpec::new(&sid, TERMINATION, 1).mscc(MsccSpec::report(10, octets, false)),
            NOW + 10,
        );
        assert_eq!(t.cca.result_code, SUCCESS);
        assert_eq!(alice_money(&gy.engine), (money, 0), "{octets} octets");
        assert!(t.ops.contains(&Op::CommitRated {
            reservation: i.reservations()[0],
            account: account(&gy.engine, &["alice"]),
            reserved: 100_000_000,
            octets,
            price: PRICE,
        }));
        let records = usage_records(&t.ops);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["outcome"], "terminated");
        assert_eq!(records[0]["account"], "alice");
        assert_eq!(records[0]["services"][0]["octets"], octets);
        assert_eq!(records[0]["services"][0]["money"], written);

        // A direct debit of the same octets costs the same.
        let (ledger, directory) = default_tenant();
        let engine =
            Engine::new(ledger, directory, ChargingConfig::default()).with_usage_records(false);
        let mut gy = Gy::with(engine);
        let e = gy.send(&debit(&sid, ALICE, octets), NOW);
        assert_eq!(
            (e.cca.result_code, e.granted()),
            (SUCCESS, vec![Some(octets)])
        );
        assert_eq!(
            alice_money(&gy.engine),
            (money, 0),
            "debit of {octets} octets"
        );
        let records = usage_records(&e.ops);
        assert_eq!(records[0]["outcome"], "event");
        assert_eq!(records[0]["services"][0]["money"], written);
    }
}

#[test]
fn rounding_never_accumulates_over_reports() {
    let (ledger, directory) = default_tenant();
    let engine = Engine::new(ledger, directory, ChargingConfig::default()).with_usage_records(true);
    let mut gy = Gy::with(engine);
    let sid = "pgw.localdomain;octets;1";
    let i = gy.send(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(ALICE)
            .mscc(MsccSpec::rsu(10)),
        NOW,
    );
    assert_eq!(i.cca.result_code, SUCCESS);
    // One octet at a time: what n octets cost in all is ceil(n × 9.5367431640625), so each
    // report pays what it adds to that: 10, 20 and 29 in all, not 30.
    let mut interim = Vec::new();
    for (n, total) in [(1u32, 10u64), (2, 20), (3, 29)] {
        let u = gy.send(
            &CcrSpec::new(sid, UPDATE, n).mscc(MsccSpec::report(10, 1, true)),
            NOW + i64::from(n),
        );
        assert_eq!(u.cca.result_code, SUCCESS);
        assert_eq!(alice_money(&gy.engine), (total, 100_000_000), "after {n}");
        let records = usage_records(&u.ops);
        assert_eq!(records.len(), 1, "an interim record per update");
        assert_eq!(records[0]["interim"], true);
        interim.push(records[0]["services"][0]["money"].clone());
    }
    assert_eq!(interim, ["0.000000010", "0.000000010", "0.000000009"]);
    let t = gy.send(&CcrSpec::new(sid, TERMINATION, 4), NOW + 10);
    assert_eq!(t.cca.result_code, SUCCESS);
    assert_eq!(alice_money(&gy.engine), (29, 0));
    let records = usage_records(&t.ops);
    assert_eq!(records[0]["interim"], false);
    assert_eq!(records[0]["services"][0]["octets"], 3);
    assert_eq!(records[0]["services"][0]["money"], "0.000000029");
}

#[test]
fn the_last_money_buys_a_final_grant_then_4012() {
    let (ledger, directory) = default_tenant();
    let engine =
        Engine::new(ledger, directory, ChargingConfig::default()).with_usage_records(false);
    let mut gy = Gy::with(engine);
    // Spend all but 0.01 EUR less a rounding: 499 MiB and an octet cost 4.990000010 EUR.
    let e = gy.send(&debit("pgw.localdomain;spend;1", ALICE, 499 * MIB + 1), NOW);
    assert_eq!(e.cca.result_code, SUCCESS);
    assert_eq!(alice_money(&gy.engine), (4_990_000_010, 0));

    // What is left, 9,999,990, is reserved whole; it buys floor(9,999,990 × 2^20 / 10^7)
    // octets, and being the last of the balance it comes with Final-Unit-Indication
    // TERMINATE.
    let sid = "pgw.localdomain;last;1";
    let i = gy.send(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(ALICE)
            .mscc(MsccSpec::rsu(10)),
        NOW + 10,
    );
    assert_eq!(i.cca.result_code, SUCCESS);
    assert_eq!(i.granted(), [Some(1_048_574)]);
    let m = &i.cca.mscc[0];
    assert_eq!(m.final_unit_action, Some(TERMINATE));
    assert_eq!(m.volume_threshold, Some(209_714), "20 % of the grant");
    assert_eq!(alice_money(&gy.engine), (4_990_000_010, 9_999_990));

    // Using the whole grant costs what is left to 4.999999991 EUR: it fits what was held.
    let u = gy.send(
        &CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, 1_048_574, true)),
        NOW + 20,
    );
    assert_eq!(alice_money(&gy.engine), (4_999_999_991, 0));
    // The 9 left cannot buy an octet (9.54 each): 4012 DIAMETER_CREDIT_LIMIT_REACHED, for
    // the MSCC and the command, and nothing stays reserved.
    assert_eq!(u.cca.result_code, CREDIT_LIMIT_REACHED);
    assert_eq!(u.mscc_results(), [Some(CREDIT_LIMIT_REACHED)]);
    assert_eq!(u.granted(), [None]);
    assert_eq!(u.cca.mscc[0].final_unit_action, None);

    let t = gy.send(&CcrSpec::new(sid, TERMINATION, 2), NOW + 30);
    assert_eq!(t.cca.result_code, SUCCESS);
    assert_eq!(alice_money(&gy.engine), (4_999_999_991, 0));
    let records = usage_records(&t.ops);
    assert_eq!(records[0]["services"][0]["octets"], 1_048_574);
    assert_eq!(records[0]["services"][0]["money"], "0.009999981");
    assert!(
        alice_money(&gy.engine).0 <= BALANCE,
        "never past the balance"
    );
}

#[test]
fn a_report_past_the_balance_is_charged_in_full_and_nothing_more_is_granted() {
    let (ledger, directory) = default_tenant();
    let engine =
        Engine::new(ledger, directory, ChargingConfig::default()).with_usage_records(false);
    let mut gy = Gy::with(engine);
    let sid = "pgw.localdomain;overspent;1";
    let i = gy.send(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(ALICE)
            .mscc(MsccSpec::rsu(10)),
        NOW,
    );
    assert_eq!(i.granted(), [Some(SLICE)]);
    // 600 MiB reported against a 10 MiB grant: 6.00 EUR, charged in full (never hidden), and
    // with the balance gone no new grant.
    let u = gy.send(
        &CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, 600 * MIB, true)),
        NOW + 10,
    );
    assert_eq!(alice_money(&gy.engine), (6_000_000_000, 0));
    assert!(
        alice_money(&gy.engine).0 > BALANCE,
        "overspent, and it shows"
    );
    assert_eq!(u.cca.result_code, CREDIT_LIMIT_REACHED);
    assert_eq!(u.mscc_results(), [Some(CREDIT_LIMIT_REACHED)]);
    assert_eq!(u.granted(), [None]);

    // A debit is all or nothing: refused, nothing taken.
    let e = gy.send(&debit("pgw.localdomain;overspent;2", ALICE, 1), NOW + 11);
    assert_eq!(e.cca.result_code, CREDIT_LIMIT_REACHED);
    assert_eq!(e.ledger_ops(), 0, "{:?}", e.ops);
    assert_eq!(alice_money(&gy.engine), (6_000_000_000, 0));

    let t = gy.send(&CcrSpec::new(sid, TERMINATION, 2), NOW + 20);
    assert_eq!(t.cca.result_code, SUCCESS);
    let records = usage_records(&t.ops);
    assert_eq!(records[0]["services"][0]["money"], "6.000000000");
}

#[test]
fn price_enquiry_quotes_the_exact_tariff_and_charges_nothing() {
    let mut gy = Gy::new(ChargingConfig::default());
    // (octets, Value-Digits, Exponent): 0.01 EUR × octets / 2^20, exactly.
    for (n, (octets, digits, exponent)) in [
        (1, 95_367_431_640_625, -22),
        (MIB + MIB / 2, 15, -3),
        (500 * MIB, 5, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let mut q = CcrSpec::new(format!("pgw.localdomain;price;{n}"), EVENT, 0)
            .msisdn(ALICE)
            .mscc(MsccSpec::ask(10, octets));
        q.requested_action = Some(PRICE_ENQUIRY);
        let r = gy.send(&q, NOW);
        assert_eq!(r.cca.result_code, SUCCESS);
        assert_eq!(r.cca.cost, Some((digits, exponent, EUR)), "{octets} octets");
        assert_eq!(r.ledger_ops(), 0);
    }
    assert_eq!(alice_money(&gy.engine), (0, 0));
}

// Thresholds ----------------------------------------------------------------------------------

/// The thresholds that fired in `ops`: (path, default level or own, level, used, limit).
fn fired(ops: &[Op]) -> Vec<(String, bool, FiredLevel, u64, u64)> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Threshold(f) => Some((f.path.clone(), f.default, f.level, f.used, f.limit)),
            _ => None,
        })
        .collect()
}

#[test]
fn device_thresholds_fire_once_per_crossing_and_not_again_after_a_replay() {
    // acme/iot devices have 10 MiB a month; every account has 80% and 100% by default.
    const IOT: &str = "15551008000";
    let path = format!("acme/iot/{IOT}");
    let config = ChargingConfig::default();
    let (ledger, directory) = default_tenant();
    let start = Recovered {
        next_reservation: 1,
        ..Default::default()
    };
    let mut gy = Gy::with(Engine::new(ledger, directory, config).resume(start, NOW));
    let mut journal = Vec::new();
    let sid = "pgw.localdomain;thresholds;1";
    let i = gy.send(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(IOT)
            .mscc(MsccSpec::ask(10, 4 * MIB)),
        NOW,
    );
    assert_eq!(i.cca.result_code, SUCCESS);
    assert!(fired(&i.ops).is_empty(), "a reservation is not usage");
    journal.push((NOW, i.ops));
    // 7 MiB used: under 80% (8 MiB).
    let u1 = gy.send(
        &CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, 7 * MIB, true)),
        NOW + 1,
    );
    assert!(fired(&u1.ops).is_empty(), "{:?}", fired(&u1.ops));
    journal.push((NOW + 1, u1.ops));
    // 1 MiB more: exactly 80%, once, after the commit that crossed it.
    let u2 = gy.send(
        &CcrSpec::new(sid, UPDATE, 2).mscc(MsccSpec::report(10, MIB, true)),
        NOW + 2,
    );
    assert_eq!(
        fired(&u2.ops),
        [(
            path.clone(),
            true,
            FiredLevel::Percent(80),
            8 * MIB,
            10 * MIB
        )]
    );
    let commit = u2.ops.iter().position(|op| matches!(op, Op::Commit { .. }));
    let threshold = u2.ops.iter().position(|op| matches!(op, Op::Threshold(_)));
    assert!(commit < threshold, "the event follows the usage it reports");
    journal.push((NOW + 2, u2.ops.clone()));
    // A retransmission is answered from the session: nothing fires again.
    let again = gy.send(
        &CcrSpec::new(sid, UPDATE, 2).mscc(MsccSpec::report(10, MIB, true)),
        NOW + 3,
    );
    assert!(fired(&again.ops).is_empty());
    let journal_len = journal.len();

    // A restart from the journal: the 80% bit comes back with it.
    let (ledger, directory) = default_tenant();
    let fresh = Engine::new(ledger, directory, config);
    let mut replayer = Replayer::new(&fresh, Vec::new());
    for (now, ops) in &journal[..journal_len] {
        for op in ops {
            replayer.apply(op, *now).unwrap();
        }
    }
    let recovered = replayer.finish();
    let mut gy = Gy::with(fresh.resume(recovered, NOW + 4));
    gy.sent = 100;
    // 1 MiB more (9 MiB): 80% does not fire again; then 100% fires once.
    let u3 = gy.send(
        &CcrSpec::new(sid, UPDATE, 3).mscc(MsccSpec::report(10, MIB, true)),
        NOW + 5,
    );
    assert!(fired(&u3.ops).is_empty(), "{:?}", fired(&u3.ops));
    let t = gy.send(
        &CcrSpec::new(sid, TERMINATION, 4).mscc(MsccSpec::report(10, MIB, true)),
        NOW + 6,
    );
    assert_eq!(
        fired(&t.ops),
        [(path, true, FiredLevel::Percent(100), 10 * MIB, 10 * MIB)]
    );
}
