//! The ledger against a reference model, in process (DESIGN.md §5, docs/charging.md): random
//! sequences of CCR-I/U/T with one to three services (the same Rating-Group twice now and then),
//! reports of up to twice the grant, EVENT debits and refunds, retransmissions, Session-Ids
//! reused by another Origin-Host, limit changes, allowance moves, policy patches, time passing
//! (across days and the month's end) and supervision, on the embedded default tenant
//! (DESIGN.md §7: iot and sales devices of `acme`, and `alice` on prepaid money).
//!
//! The model is built from the documented rules and the answers, never from the engine: it
//! keeps every charge of every account with its time, the grants each open session holds, the
//! limits of every node and the policies. It predicts each answer (Result-Codes, grants,
//! Final-Unit-Indication) and after every step the ledger is read and checked:
//!
//! 1. at every counter `used + reserved <= limit`, except where the model knows a report went
//!    past its grant or a limit was set below what it counts (relaxed there until it holds
//!    again);
//! 2. every counter's `reserved` is its node's, an inner node holds what its children hold, and
//!    an account holds what its open sessions were granted;
//! 3. every counter's `used` in its current period is what the model charged the accounts
//!    under it in that period;
//! 4. the root of each tree holds exactly what the open sessions were granted (octets for
//!    `acme`, money for `alice`);
//! 5. after supervision far in the future nothing is reserved anywhere.
//!
//! Where the documents say nothing, the model takes the engine's stated rule and says so: a
//! money grant cut short by the balance reserves all that is left; a move between a node and
//! its ancestor changes only the descendant's limit. A tariff on a tenant with no money limit
//! rates nothing: its octets stay octets (the engine once counted them nowhere; the test at the
//! end holds it to that).
//!
//! 64 cases of up to 60 steps; `PROPTEST_CASES=n` runs more.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::BytesMut;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use ocf_charging::accounts::changes::Change;
use ocf_charging::accounts::provisioning::default_tenant;
use ocf_charging::accounts::provisioning::{Amount, LimitSpec};
use ocf_charging::ledger::{Counter, OwnUsage, Period, Unit, unit_index};
use ocf_charging::{ChargingConfig, Engine};
use ocf_loadtest::gy::{
    CcaResult, CcrSpec, EVENT, INITIAL, MsccResult, MsccSpec, TERMINATION, UPDATE,
};
use ocf_protocol::Message;
use ocf_protocol::base::LocalIdentity;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// 2026-11-29T20:00:00Z: a day and a month end are a few advances away.
const START: i64 = 1_795_982_400;
const DAY: i64 = 86_400;

/// DESIGN.md §7 and `ChargingConfig::default()`.
const VALIDITY: i64 = 600;
const GRACE: i64 = 30;
const LINGER: i64 = 15;
const SLICE: u64 = 10 * MIB;
const THRESHOLD_PERCENT: u64 = 20;
/// alice: 5.00 EUR at 0.01 EUR per MiB, in 10^-9 EUR: 10^7 per 2^20 octets.
const BALANCE: u64 = 5_000_000_000;
const PRICE: (u128, u128) = (10_000_000, 1 << 20);

const HOST: &str = "pgw.localdomain";
const OTHER_HOST: &str = "pgw-b.localdomain";
/// 3GPP Reporting-Reason FINAL.
const FINAL: u32 = 2;

/// The accounts driven: (MSISDN, parent path; "" for a consumer).
const ACCOUNTS: [(&str, &str); 7] = [
    ("15551008000", "acme/iot"),
    ("15551008001", "acme/iot"),
    ("15551008002", "acme/iot"),
    ("15551008003", "acme/iot"),
    ("15551005000", "acme/sales"),
    ("15551005001", "acme/sales"),
    ("15559990001", ""),
];
const ALICE: usize = 6;
/// The devices of `acme` among [`ACCOUNTS`].
const DEVICES: usize = 6;
/// Session slots: each holds the latest session started in it.
const SLOTS: usize = 6;

const DEVICE_LIMITS: [u64; 4] = [MIB, 4 * MIB, 10 * MIB, 24 * MIB];
const IOT_LIMITS: [u64; 4] = [6 * MIB, 16 * MIB, 40 * MIB, GIB];
/// alice's balance, as written and in 10^-9 EUR.
const ALICE_LIMITS: [(&str, u64); 4] = [
    ("0.0123", 12_300_000),
    ("0.05", 50_000_000),
    ("0.2", 200_000_000),
    ("5.00", BALANCE),
];
const MOVES: [u64; 4] = [MIB, 3 * MIB, 8 * MIB, 64 * MIB];

type Limits = Vec<(Unit, Period, u64)>;

/// Our identity as the engine answers with it.
fn identity() -> LocalIdentity {
    common::identity("ocfd.localdomain")
}

/// The node paths from the root down to the account.
fn account_path(a: usize) -> Vec<String> {
    let (msisdn, parent) = ACCOUNTS[a];
    if parent.is_empty() {
        return vec!["alice".into()];
    }
    vec!["acme".into(), parent.into(), format!("{parent}/{msisdn}")]
}

/// The limits of every node the model follows, as DESIGN.md §7 gives them.
fn initial_limits() -> BTreeMap<String, Limits> {
    let month = |amount| vec![(Unit::Octets, Period::Month, amount)];
    let mut l = BTreeMap::new();
    l.insert("acme".into(), month(TIB));
    l.insert("acme/iot".into(), month(GIB));
    l.insert("acme/sales".into(), month(100 * GIB));
    for (a, (_, parent)) in ACCOUNTS.iter().enumerate().take(DEVICES) {
        let amount = if *parent == "acme/iot" {
            10 * MIB
        } else {
            5 * GIB
        };
        l.insert(account_path(a)[2].clone(), month(amount));
    }
    l.insert("alice".into(), vec![(Unit::Money, Period::Total, BALANCE)]);
    l
}

/// The calendar period (UTC, the embedded tenants' time zone) containing `t`: [start, end).
fn window(period: Period, t: i64) -> (i64, i64) {
    match period {
        Period::Total => (i64::MIN, i64::MAX),
        Period::Day => {
            let start = t.div_euclid(DAY) * DAY;
            (start, start + DAY)
        }
        Period::Month => {
            let date = Timestamp::from_second(t)
                .unwrap()
                .to_zoned(TimeZone::UTC)
                .date();
            let (y, m) = (date.year(), date.month());
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let at = |y: i16, m: i8| {
                jiff::civil::date(y, m, 1)
                    .at(0, 0, 0, 0)
                    .to_zoned(TimeZone::UTC)
                    .unwrap()
                    .timestamp()
                    .as_second()
            };
            (at(y, m), at(ny, nm))
        }
    }
}

/// What `octets` cost at alice's tariff, rounded up (docs/charging.md, Money).
fn cost(octets: u128) -> u128 {
    (octets * PRICE.0).div_ceil(PRICE.1)
}

// The model -----------------------------------------------------------------------------------

/// Units a session holds for one service.
#[derive(Clone, Copy, Debug)]
struct Held {
    /// Octets for `acme`, money for `alice`.
    unit: Unit,
    reserved: u64,
    /// Octets granted to the gateway.
    granted: u64,
    expires: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Open,
    /// Terminated; its last answer is kept until a supervision at or after `deadline`.
    Ended {
        deadline: i64,
    },
    /// Forgotten by the server.
    Gone,
}

#[derive(Clone, Debug)]
struct Sess {
    id: String,
    account: usize,
    life: Life,
    next_number: u32,
    /// Supervision closes the session at this time if nothing more is heard.
    deadline: i64,
    /// Per Rating-Group.
    held: BTreeMap<u32, Held>,
    /// The last request the session took, and its answer's bytes.
    last: Option<(CcrSpec, Vec<u8>)>,
}

/// One MSCC as the model expects it answered (or as it came).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    rating_group: Option<u32>,
    result: Option<u32>,
    granted: Option<u64>,
    validity: Option<u32>,
    threshold: Option<u32>,
    final_unit_action: Option<u32>,
}

impl Answer {
    fn plain(rg: u32, result: u32) -> Self {
        Answer {
            rating_group: Some(rg),
            result: Some(result),
            granted: None,
            validity: None,
            threshold: None,
            final_unit_action: None,
        }
    }

    fn granted(rg: u32, octets: u64, last: bool) -> Self {
        Answer {
            granted: Some(octets),
            validity: Some(VALIDITY as u32),
            threshold: Some((octets * THRESHOLD_PERCENT / 100) as u32),
            final_unit_action: last.then_some(0),
            ..Answer::plain(rg, 2001)
        }
    }

    fn of(m: &MsccResult) -> Self {
        Answer {
            rating_group: m.rating_group,
            result: m.result_code,
            granted: m.granted_octets,
            validity: m.validity_time,
            threshold: m.volume_threshold,
            final_unit_action: m.final_unit_action,
        }
    }
}

/// The command-level Result-Code for these services: success if any succeeded, else their
/// common failure, else 4012.
fn command_result(answers: &[Answer]) -> u32 {
    if answers.is_empty() || answers.iter().any(|a| a.result == Some(2001)) {
        return 2001;
    }
    let first = answers[0].result.unwrap_or(0);
    if answers.iter().all(|a| a.result == Some(first)) {
        first
    } else {
        4012
    }
}

struct Model {
    now: i64,
    paths: Vec<Vec<String>>,
    limits: BTreeMap<String, Limits>,
    /// Per account: (time, unit, amount; negative for a refund), in order.
    charges: Vec<Vec<(i64, Unit, i128)>>,
    /// Octets rated on alice's money counter.
    rated: u128,
    acme_slice: u64,
    alice_tariff: bool,
    slots: Vec<Option<Sess>>,
    /// The last EVENT: its request, answer and life.
    last_event: Option<(CcrSpec, Vec<u8>, Life)>,
    /// The session a request is working on: its account and holdings.
    inflight: Option<(usize, BTreeMap<u32, Held>)>,
    /// Accounts charged past what they were granted in the current step.
    overage: Vec<usize>,
    serial: u32,
}

impl Model {
    fn new() -> Self {
        Model {
            now: START,
            paths: (0..ACCOUNTS.len()).map(account_path).collect(),
            limits: initial_limits(),
            charges: vec![Vec::new(); ACCOUNTS.len()],
            rated: 0,
            acme_slice: SLICE,
            alice_tariff: true,
            slots: vec![None; SLOTS],
            last_event: None,
            inflight: None,
            overage: Vec::new(),
            serial: 0,
        }
    }

    /// Whether a tariff rates account `a`'s octets: only where a money limit counts what it
    /// rates, i.e. alice's balance; acme has no money limit, so a tariff on it changes nothing
    /// and its octets stay octets (docs/charging.md).
    fn tariff(&self, a: usize) -> bool {
        a == ALICE && self.alice_tariff
    }

    fn under(&self, a: usize, node: &str) -> bool {
        self.paths[a].iter().any(|p| p == node)
    }

    /// What account `a` was charged in `unit` within [start, end): charges add, refunds give
    /// back no more than there is.
    fn replay(&self, a: usize, unit: Unit, (start, end): (i64, i64)) -> u64 {
        self.charges[a]
            .iter()
            .filter(|(t, u, _)| *u == unit && (start..end).contains(t))
            .fold(0u64, |sum, &(_, _, amount)| {
                if amount >= 0 {
                    sum + amount as u64
                } else {
                    sum.saturating_sub(amount.unsigned_abs() as u64)
                }
            })
    }

    /// What the accounts under `node` were charged in `unit` in the current `period`.
    fn used(&self, node: &str, unit: Unit, period: Period) -> u64 {
        let w = window(period, self.now);
        (0..ACCOUNTS.len())
            .filter(|&a| self.under(a, node))
            .map(|a| self.replay(a, unit, w))
            .sum()
    }

    /// Every holding of every open session (and of the one a request is working on).
    fn holdings(&self) -> Vec<(usize, Held)> {
        let mut out = Vec::new();
        for s in self.slots.iter().flatten() {
            if s.life == Life::Open {
                out.extend(s.held.values().map(|h| (s.account, *h)));
            }
        }
        if let Some((a, held)) = &self.inflight {
            out.extend(held.values().map(|h| (*a, *h)));
        }
        out
    }

    fn reserved(&self, node: &str, unit: Unit) -> u64 {
        self.holdings()
            .into_iter()
            .filter(|(a, h)| h.unit == unit && self.under(*a, node))
            .map(|(_, h)| h.reserved)
            .sum()
    }

    /// The smallest headroom (limit − used − reserved) of `unit` on the account's path;
    /// None: nothing limits it.
    fn headroom(&self, a: usize, unit: Unit) -> Option<u64> {
        let mut least: Option<u64> = None;
        for node in &self.paths[a] {
            for &(u, p, limit) in &self.limits[node] {
                if u == unit {
                    let free = limit
                        .saturating_sub(self.used(node, u, p))
                        .saturating_sub(self.reserved(node, u));
                    least = Some(least.map_or(free, |l| l.min(free)));
                }
            }
        }
        least
    }

    /// What a refund may give back: what the account itself was charged, in every period a
    /// limit on its path counts, and no more than any of those limits counts.
    fn refundable(&self, a: usize, unit: Unit) -> u64 {
        let mut most = self.replay(a, unit, (i64::MIN, i64::MAX));
        for node in &self.paths[a] {
            for &(u, p, _) in &self.limits[node] {
                if u == unit {
                    most =
                        most.min(self.used(node, u, p))
                            .min(self.replay(a, u, window(p, self.now)));
                }
            }
        }
        most
    }

    fn charge(&mut self, a: usize, unit: Unit, amount: i128) {
        if amount != 0 {
            self.charges[a].push((self.now, unit, amount));
        }
    }

    /// Octets charged to alice at her tariff: her counter charges ceil(rated × price) in total.
    fn rate(&mut self, octets: u64) {
        let before = cost(self.rated);
        self.rated += u128::from(octets);
        let delta = cost(self.rated) - before;
        self.charge(ALICE, Unit::Money, delta as i128);
    }

    fn held_mut(&mut self) -> &mut BTreeMap<u32, Held> {
        &mut self.inflight.as_mut().expect("a request in flight").1
    }

    /// A report for one service: charged whatever was granted, then what was held for that
    /// service returns.
    fn settle(&mut self, a: usize, rg: u32, used: Option<u64>) {
        let held = self.held_mut().remove(&rg);
        let used = used.unwrap_or(0);
        if used == 0 {
            return;
        }
        let tariff = self.tariff(a);
        match held {
            // Charged in the unit it was granted in.
            Some(h) => {
                match (h.unit, tariff) {
                    (Unit::Money, true) => self.rate(used),
                    // The tariff has gone: the money returns, the octets are octets.
                    (Unit::Money, false) => self.charge(a, Unit::Octets, used.into()),
                    (unit, _) => self.charge(a, unit, used.into()),
                }
                if used > h.granted {
                    self.overage.push(a);
                }
            }
            // Nothing was reserved: charged as the policy says now.
            None => {
                match (tariff, a == ALICE) {
                    (true, true) => self.rate(used),
                    (_, _) => self.charge(a, Unit::Octets, used.into()),
                }
                self.overage.push(a);
            }
        }
    }

    /// The next grant for one service: the least of what was asked, the slice and the headroom.
    fn grant(&mut self, a: usize, rg: u32, rsu: &Rsu) -> Answer {
        let asked = match rsu {
            Rsu::Octets(n) => Some(*n),
            Rsu::Empty | Rsu::Zero => None,
        };
        let expires = self.now + VALIDITY + GRACE;
        if a == ALICE {
            if !self.alice_tariff {
                // No tariff, and nothing of hers counts octets.
                return Answer::plain(rg, 5031);
            }
            let want = asked.unwrap_or(SLICE).min(SLICE);
            let money = cost(want.into()) as u64;
            let free = self.headroom(a, Unit::Money).expect("alice has a balance");
            let take = money.min(free);
            // What the money that is free buys, if not all of it.
            let octets = if take == money {
                want
            } else {
                ((u128::from(take) * PRICE.1 / PRICE.0) as u64).min(want)
            };
            if octets == 0 {
                return Answer::plain(rg, 4012);
            }
            self.held_mut().insert(
                rg,
                Held {
                    unit: Unit::Money,
                    reserved: take,
                    granted: octets,
                    expires,
                },
            );
            Answer::granted(rg, octets, take == free)
        } else {
            let want = asked.unwrap_or(self.acme_slice).min(self.acme_slice);
            let free = self.headroom(a, Unit::Octets).expect("acme counts octets");
            let take = want.min(free);
            if take == 0 {
                return Answer::plain(rg, 4012);
            }
            self.held_mut().insert(
                rg,
                Held {
                    unit: Unit::Octets,
                    reserved: take,
                    granted: take,
                    expires,
                },
            );
            Answer::granted(rg, take, take == free)
        }
    }
}

// The steps -----------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Rsu {
    Empty,
    Zero,
    Octets(u64),
}

#[derive(Clone, Debug)]
enum Report {
    /// This percentage of what the service holds (nothing if it holds nothing).
    Share(u64),
    /// This many octets, whatever it holds.
    Raw(u64),
}

#[derive(Clone, Debug)]
struct Service {
    rsu: Option<Rsu>,
    report: Option<Report>,
    /// Reporting-Reason FINAL in the report.
    last: bool,
}

#[derive(Clone, Copy, Debug)]
enum Advance {
    By(i64),
    /// To the next UTC midnight, and this many seconds on.
    PastMidnight(i64),
}

#[derive(Clone, Debug)]
enum Step {
    /// CCR-I if the slot has no open session (on account `who`), else CCR-U or, if `end`,
    /// CCR-T. Services get Rating-Groups from `rg` on, all different unless `dup`.
    Ccr {
        slot: usize,
        who: usize,
        end: bool,
        rg: u32,
        dup: bool,
        services: Vec<Service>,
    },
    /// EVENT: DIRECT_DEBITING of these octets, one MSCC each; or REFUND_ACCOUNT of `share`
    /// percent of what the account was charged so far, over as many MSCCs (these octets if it
    /// was charged nothing), mostly on an account that was charged something.
    Event {
        who: usize,
        refund: bool,
        dup: bool,
        octets: Vec<u64>,
        share: u64,
    },
    /// The slot's last request again (slot == SLOTS: the last EVENT), T flag or not.
    Retransmit {
        slot: usize,
        flag: bool,
    },
    /// A CCR-U of the slot's open session with a CC-Request-Number before the last one.
    Old {
        slot: usize,
    },
    /// The slot's Session-Id from another Origin-Host: 0 I, 1 U, 2 T, 3 EVENT.
    Hijack {
        slot: usize,
        kind: u8,
    },
    /// New limits on device `target` (< DEVICES), acme/iot (DEVICES) or alice's balance: 0
    /// month, 1 day, 2 both, 3 none (devices only).
    SetLimits {
        target: usize,
        shape: u8,
        size: usize,
    },
    /// Octets per month between acme/iot, a device, acme and acme/sales.
    Move {
        pair: u8,
        device: usize,
        size: usize,
    },
    /// 0/1 acme's tariff on/off, 2/3 acme's slice 3 MiB/10 MiB, 4/5 alice's tariff off/on.
    Policy(u8),
    Advance(Advance),
    Supervise,
}

fn octets() -> impl Strategy<Value = u64> {
    prop_oneof![(1u64..=12).prop_map(|k| k * MIB), 1u64..=12 * MIB]
}

fn service() -> impl Strategy<Value = Service> {
    (
        prop_oneof![
            2 => Just(None),
            3 => Just(Some(Rsu::Empty)),
            1 => Just(Some(Rsu::Zero)),
            3 => octets().prop_map(|n| Some(Rsu::Octets(n))),
        ],
        prop_oneof![
            2 => Just(None),
            5 => (0u64..=200).prop_map(|p| Some(Report::Share(p))),
            1 => (0u64..=3 * MIB).prop_map(|n| Some(Report::Raw(n))),
        ],
        prop::bool::weighted(0.08),
    )
        .prop_map(|(rsu, report, last)| Service { rsu, report, last })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (
            0..SLOTS,
            0..ACCOUNTS.len(),
            prop::bool::weighted(0.3),
            0u32..4,
            prop::bool::weighted(0.1),
            prop::collection::vec(service(), 1..=3),
        )
            .prop_map(|(slot, who, end, rg, dup, services)| Step::Ccr {
                slot,
                who,
                end,
                rg,
                dup,
                services,
            }),
        3 => (
            0..ACCOUNTS.len(),
            prop::bool::weighted(0.4),
            prop::bool::weighted(0.1),
            prop::collection::vec(
                prop_oneof![(1u64..=6).prop_map(|k| k * MIB), 1u64..=6 * MIB],
                1..=3
            ),
            prop_oneof![3 => 1u64..=100, 1 => 101u64..=130],
        )
            .prop_map(|(who, refund, dup, octets, share)| Step::Event {
                who,
                refund,
                dup,
                octets,
                share,
            }),
        3 => (0..=SLOTS, any::<bool>()).prop_map(|(slot, flag)| Step::Retransmit { slot, flag }),
        1 => (0..SLOTS).prop_map(|slot| Step::Old { slot }),
        2 => (0..SLOTS, 0u8..4).prop_map(|(slot, kind)| Step::Hijack { slot, kind }),
        2 => (0..=DEVICES + 1, 0u8..4, 0..DEVICE_LIMITS.len()).prop_map(|(target, shape, size)| {
            Step::SetLimits {
                target,
                shape,
                size,
            }
        }),
        2 => (0u8..6, 0..DEVICES, 0..MOVES.len())
            .prop_map(|(pair, device, size)| Step::Move { pair, device, size }),
        1 => (0u8..6).prop_map(Step::Policy),
        3 => prop_oneof![
            3 => (1i64..=120).prop_map(Advance::By),
            2 => (VALIDITY + GRACE + 1..=VALIDITY + GRACE + 70).prop_map(Advance::By),
            1 => (0i64..=600).prop_map(Advance::PastMidnight),
        ]
        .prop_map(Step::Advance),
        2 => Just(Step::Supervise),
    ]
}

// The world: the engine and the model side by side -----------------------------------------

/// What a node holds, to see that a step changed nothing.
type Snapshot = Vec<(Vec<Counter>, [u64; 4], Vec<OwnUsage>)>;

struct World {
    engine: Engine,
    m: Model,
    /// Model node path to (tree, node), and back.
    place: BTreeMap<String, (u32, u32)>,
    path_of: HashMap<(u32, u32), String>,
    trees: [u32; 2],
    /// Counters allowed past their limit: a report went past its grant or a limit was set
    /// below what it counts. Dropped as soon as the counter is within its limit again.
    relaxed: HashSet<(u32, u32, Unit, Period)>,
    /// What happened so far, for failure messages.
    log: Vec<String>,
}

impl World {
    fn new() -> Self {
        let (ledger, directory) = default_tenant();
        let engine = Engine::new(ledger, directory, ChargingConfig::default());
        let m = Model::new();
        let acme = engine.ledger().find_tree("acme").unwrap();
        let alice = engine.ledger().find_tree("alice").unwrap();
        let mut place = BTreeMap::new();
        for path in m.limits.keys() {
            // "acme/iot/15551008000" names the nodes acme, iot and 15551008000.
            let names: Vec<&str> = path.split('/').collect();
            let tree = if names[0] == "alice" { alice } else { acme };
            let node = engine
                .ledger()
                .lock(tree)
                .unwrap()
                .find(&names)
                .unwrap_or_else(|| panic!("{path} is in the embedded tenant"));
            place.insert(path.clone(), (tree, node));
        }
        let path_of = place.iter().map(|(p, at)| (*at, p.clone())).collect();
        World {
            engine,
            m,
            place,
            path_of,
            trees: [acme, alice],
            relaxed: HashSet::new(),
            log: Vec::new(),
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "{what}\n  at time {} after:\n    {}",
            self.m.now,
            self.log.join("\n    ")
        );
    }

    fn send(&self, spec: &CcrSpec) -> (Vec<u8>, CcaResult) {
        let mut b = BytesMut::new();
        spec.write(&mut b, 1, 1);
        let req = Message::decode(b.freeze()).unwrap();
        let mut out = BytesMut::new();
        let _ = self
            .engine
            .credit_control(&identity(), &req, self.m.now, &mut out);
        let bytes = out.to_vec();
        let answer = CcaResult::read(&Message::decode(out.freeze()).unwrap());
        (bytes, answer)
    }

    fn snapshot(&self) -> Snapshot {
        self.place
            .values()
            .map(|&(tree, node)| {
                let t = self.engine.ledger().lock(tree).unwrap();
                let n = &t.nodes[node as usize];
                (n.counters.clone(), n.reserved, n.own.clone())
            })
            .collect()
    }

    fn unchanged(&self, before: &Snapshot, what: &str) {
        if *before != self.snapshot() {
            self.fail(format!("{what} changed the ledger"));
        }
    }

    /// Every counter on the account's path may pass its limit (until it is within it again).
    fn relax_path(&mut self, a: usize) {
        for node in self.m.paths[a].clone() {
            self.relax_node(&node);
        }
    }

    fn relax_node(&mut self, node: &str) {
        let (tree, n) = self.place[node];
        for &(u, p, _) in &self.m.limits[node] {
            self.relaxed.insert((tree, n, u, p));
        }
    }

    fn expect_answer(&self, what: &str, got: &CcaResult, result: u32, services: &[Answer]) {
        let got_services: Vec<Answer> = got.mscc.iter().map(Answer::of).collect();
        if got.result_code != result || got_services != services {
            self.fail(format!(
                "{what}: expected {result} {services:#?}\n  got {} {got_services:#?}",
                got.result_code
            ));
        }
    }

    fn run(&mut self, step: &Step) {
        self.log.push(format!("{step:?}"));
        match step {
            Step::Ccr {
                slot,
                who,
                end,
                rg,
                dup,
                services,
            } => self.ccr(*slot, *who, *end, *rg, *dup, services),
            Step::Event {
                who,
                refund,
                dup,
                octets,
                share,
            } => self.event(*who, *refund, *dup, octets, *share),
            Step::Retransmit { slot, flag } => self.retransmit(*slot, *flag),
            Step::Old { slot } => self.old(*slot),
            Step::Hijack { slot, kind } => self.hijack(*slot, *kind),
            Step::SetLimits {
                target,
                shape,
                size,
            } => self.set_limits(*target, *shape, *size),
            Step::Move { pair, device, size } => self.move_allowance(*pair, *device, *size),
            Step::Policy(p) => self.policy(*p),
            Step::Advance(Advance::By(s)) => self.m.now += s,
            Step::Advance(Advance::PastMidnight(s)) => {
                self.m.now = (self.m.now.div_euclid(DAY) + 1) * DAY + s;
            }
            Step::Supervise => self.supervise(),
        }
        for a in std::mem::take(&mut self.m.overage) {
            self.relax_path(a);
        }
        self.check();
    }

    fn ccr(&mut self, slot: usize, who: usize, end: bool, rg: u32, dup: bool, asked: &[Service]) {
        let now = self.m.now;
        let open = self.m.slots[slot]
            .as_ref()
            .filter(|s| s.life == Life::Open)
            .cloned();
        let mut services = asked.to_vec();
        let mut rgs: Vec<u32> = (0..services.len() as u32)
            .map(|i| (rg + i) % 4 + 1)
            .collect();
        if dup {
            if services.len() == 1 {
                services.push(services[0].clone());
                rgs.push(rgs[0]);
            } else {
                let last = rgs.len() - 1;
                rgs[last] = rgs[0];
            }
        }
        let (id, account, kind, number) = match &open {
            Some(s) => (
                s.id.clone(),
                s.account,
                if end { TERMINATION } else { UPDATE },
                s.next_number,
            ),
            None => {
                self.m.serial += 1;
                (format!("s{slot};{}", self.m.serial), who, INITIAL, 0)
            }
        };
        // What each service reports: a share of what it holds, or a given amount.
        let used: Vec<Option<u64>> = services
            .iter()
            .zip(&rgs)
            .map(|(s, rg)| match s.report {
                None => None,
                Some(Report::Share(p)) => open
                    .as_ref()
                    .and_then(|o| o.held.get(rg))
                    .map(|h| h.granted * p / 100),
                Some(Report::Raw(n)) => Some(n),
            })
            .collect();
        let mut spec = CcrSpec::new(&id, kind, number);
        spec.origin_host = HOST.into();
        if open.is_none() {
            spec = spec.msisdn(ACCOUNTS[who].0);
        }
        for ((s, rg), used) in services.iter().zip(&rgs).zip(&used) {
            spec = spec.mscc(MsccSpec {
                rating_group: Some(*rg),
                requested_octets: s.rsu.as_ref().map(|r| match r {
                    Rsu::Empty => None,
                    Rsu::Zero => Some(0),
                    Rsu::Octets(n) => Some(*n),
                }),
                used_octets: *used,
                reporting_reason: (s.last && used.is_some()).then_some(FINAL),
                ..Default::default()
            });
        }
        self.log.push(format!(
            "  -> {id} type {kind} #{number} account {account} rgs {rgs:?} used {used:?}"
        ));
        let before = self.snapshot();
        let (bytes, got) = self.send(&spec);
        if dup {
            // Two MSCCs of one service: refused whole, before anything.
            self.expect_answer("a CCR with one service twice", &got, 5004, &[]);
            self.unchanged(&before, "a CCR with one service twice");
            return;
        }
        let mut sess = match open {
            Some(s) => {
                self.m.slots[slot] = None;
                s
            }
            None => Sess {
                id,
                account,
                life: Life::Open,
                next_number: 0,
                deadline: now,
                held: BTreeMap::new(),
                last: None,
            },
        };
        self.m.inflight = Some((account, std::mem::take(&mut sess.held)));
        // Every report is settled before anything is granted.
        for (rg, used) in rgs.iter().zip(&used) {
            self.m.settle(account, *rg, *used);
        }
        let mut expect = Vec::new();
        for ((s, rg), used) in services.iter().zip(&rgs).zip(&used) {
            let finished = s.last && used.is_some();
            match &s.rsu {
                Some(rsu) if kind != TERMINATION && !finished => {
                    expect.push(self.m.grant(account, *rg, rsu));
                }
                _ => expect.push(Answer::plain(*rg, 2001)),
            }
        }
        let (_, held) = self.m.inflight.take().unwrap();
        sess.held = held;
        sess.next_number = number + 1;
        if kind == TERMINATION {
            // Whatever was not reported returns.
            sess.held.clear();
            sess.life = Life::Ended {
                deadline: now + LINGER,
            };
        } else {
            sess.deadline = now + VALIDITY + GRACE;
        }
        sess.last = Some((spec, bytes));
        self.m.slots[slot] = Some(sess);
        self.expect_answer("a CCR", &got, command_result(&expect), &expect);
    }

    fn event(&mut self, who: usize, refund: bool, dup: bool, octets: &[u64], share: u64) {
        let now = self.m.now;
        let mut amounts = octets.to_vec();
        let mut who = who;
        if refund {
            // Mostly an account that was charged something.
            let charged: Vec<usize> = (0..ACCOUNTS.len())
                .filter(|&a| self.m.charges[a].iter().any(|&(_, _, n)| n > 0))
                .collect();
            if !charged.is_empty() && share % 8 != 0 {
                who = charged[who % charged.len()];
            }
            // A share of what the account was charged so far, in octets.
            let charged = if who == ALICE {
                let money = self.m.replay(ALICE, Unit::Money, (i64::MIN, i64::MAX));
                (u128::from(money) * PRICE.1 / PRICE.0) as u64
            } else {
                self.m.replay(who, Unit::Octets, (i64::MIN, i64::MAX))
            };
            let total = charged * share / 100;
            let n = amounts.len() as u64;
            if total >= n {
                amounts = (0..n)
                    .map(|i| total / n + u64::from(i == 0) * (total % n))
                    .collect();
            }
        }
        let mut rgs: Vec<u32> = (0..amounts.len() as u32).map(|i| 10 + i).collect();
        if dup {
            if amounts.len() == 1 {
                amounts.push(amounts[0]);
                rgs.push(rgs[0]);
            } else {
                let last = rgs.len() - 1;
                rgs[last] = rgs[0];
            }
        }
        self.m.serial += 1;
        let mut spec =
            CcrSpec::new(format!("e;{}", self.m.serial), EVENT, 0).msisdn(ACCOUNTS[who].0);
        spec.origin_host = HOST.into();
        spec.requested_action = Some(u32::from(refund));
        for (rg, n) in rgs.iter().zip(&amounts) {
            spec = spec.mscc(MsccSpec {
                rating_group: Some(*rg),
                requested_octets: Some(Some(*n)),
                ..Default::default()
            });
        }
        let before = self.snapshot();
        let (bytes, got) = self.send(&spec);
        if dup {
            self.expect_answer("an EVENT with one service twice", &got, 5004, &[]);
            self.unchanged(&before, "an EVENT with one service twice");
            return;
        }
        let alice = who == ALICE;
        // alice counts money and needs a tariff; acme counts octets and has no money limits.
        let rated = alice == self.m.tariff(who);
        let (unit, ledger_amounts): (Unit, Vec<u64>) = if alice {
            (
                Unit::Money,
                amounts.iter().map(|&n| cost(n.into()) as u64).collect(),
            )
        } else {
            (Unit::Octets, amounts.clone())
        };
        let all = |code: u32| -> Vec<Answer> {
            rgs.iter()
                .zip(&amounts)
                .map(|(rg, n)| Answer {
                    granted: (code == 2001).then_some(*n),
                    ..Answer::plain(*rg, code)
                })
                .collect()
        };
        let total: u64 = ledger_amounts.iter().sum();
        let (result, expect) = if !rated {
            (5031, all(5031))
        } else if !refund {
            // All or nothing.
            let free = self.m.headroom(who, unit).expect("limited");
            if total <= free {
                for &n in &amounts {
                    if alice {
                        self.m.rate(n);
                    } else {
                        self.m.charge(who, Unit::Octets, n.into());
                    }
                }
                (2001, all(2001))
            } else {
                (4012, all(4012))
            }
        } else if total > self.m.refundable(who, unit) {
            (5004, Vec::new())
        } else {
            for &n in &ledger_amounts {
                self.m.charge(who, unit, -i128::from(n));
            }
            (2001, all(2001))
        };
        self.m.last_event = Some((
            spec,
            bytes,
            Life::Ended {
                deadline: now + LINGER,
            },
        ));
        self.expect_answer(
            if refund { "a refund" } else { "a direct debit" },
            &got,
            result,
            &expect,
        );
    }

    fn retransmit(&mut self, slot: usize, flag: bool) {
        let last = if slot == SLOTS {
            self.m
                .last_event
                .as_ref()
                .map(|(spec, bytes, life)| (spec.clone(), bytes.clone(), *life))
        } else {
            self.m.slots[slot].as_ref().and_then(|s| {
                s.last
                    .as_ref()
                    .map(|(spec, bytes)| (spec.clone(), bytes.clone(), s.life))
            })
        };
        let Some((mut spec, bytes, life)) = last else {
            return;
        };
        spec.retransmit = flag;
        if life == Life::Gone {
            // Forgotten: an update or termination finds no session (an INITIAL or EVENT would
            // be new).
            if spec.request_type == UPDATE || spec.request_type == TERMINATION {
                let before = self.snapshot();
                let (_, got) = self.send(&spec);
                self.expect_answer("a request of a forgotten session", &got, 5002, &[]);
                self.unchanged(&before, "a request of a forgotten session");
            }
            return;
        }
        let before = self.snapshot();
        let (again, _) = self.send(&spec);
        if again != bytes {
            self.fail(format!(
                "a retransmission of {} #{} got another answer",
                spec.session_id, spec.request_number
            ));
        }
        self.unchanged(&before, "a retransmission");
    }

    fn old(&mut self, slot: usize) {
        let Some(s) = self.m.slots[slot]
            .as_ref()
            .filter(|s| s.life == Life::Open && s.next_number >= 2)
        else {
            return;
        };
        let mut spec = CcrSpec::new(&s.id, UPDATE, s.next_number - 2).mscc(MsccSpec {
            rating_group: Some(1),
            requested_octets: Some(None),
            used_octets: Some(MIB),
            ..Default::default()
        });
        spec.origin_host = HOST.into();
        let before = self.snapshot();
        let (_, got) = self.send(&spec);
        self.expect_answer("an old CC-Request-Number", &got, 5004, &[]);
        self.unchanged(&before, "an old CC-Request-Number");
    }

    fn hijack(&mut self, slot: usize, kind: u8) {
        let Some(s) = self.m.slots[slot].as_ref().filter(|s| s.life != Life::Gone) else {
            return;
        };
        let (t, number, result) = match kind {
            0 => (INITIAL, 0, 5004),
            1 => (UPDATE, s.next_number, 5002),
            2 => (TERMINATION, s.next_number, 5002),
            _ => (EVENT, 0, 5004),
        };
        let mut spec = CcrSpec::new(&s.id, t, number);
        spec.origin_host = OTHER_HOST.into();
        if t == INITIAL || t == EVENT {
            spec = spec.msisdn(ACCOUNTS[0].0);
        }
        spec = spec.mscc(MsccSpec {
            rating_group: Some(1),
            requested_octets: Some(Some(MIB)),
            used_octets: (t == UPDATE || t == TERMINATION).then_some(MIB),
            ..Default::default()
        });
        let before = self.snapshot();
        let (_, got) = self.send(&spec);
        self.expect_answer("another host's request", &got, result, &[]);
        self.unchanged(&before, "another host's request");
    }

    fn set_limits(&mut self, target: usize, shape: u8, size: usize) {
        if target > DEVICES {
            let (text, amount) = ALICE_LIMITS[size];
            let change = Change::SetLimits {
                path: "alice".into(),
                limits: vec![LimitSpec {
                    unit: Unit::Money,
                    period: Period::Total,
                    amount: Amount::Text(text.into()),
                    class: None,
                }],
            };
            if let Err(e) = self.engine.accounts().change(&change, self.m.now) {
                self.fail(format!("{change:?} refused: {e}"));
            }
            self.m
                .limits
                .insert("alice".into(), vec![(Unit::Money, Period::Total, amount)]);
            self.relax_node("alice");
            return;
        }
        let (path, amount) = if target < DEVICES {
            (self.m.paths[target][2].clone(), DEVICE_LIMITS[size])
        } else {
            ("acme/iot".to_owned(), IOT_LIMITS[size])
        };
        let month = (Unit::Octets, Period::Month, amount);
        let day = (Unit::Octets, Period::Day, (amount / 2).max(1));
        let limits: Limits = match shape {
            0 => vec![month],
            1 => vec![(Unit::Octets, Period::Day, amount)],
            2 => vec![month, day],
            _ if target < DEVICES => Vec::new(),
            _ => vec![month],
        };
        let change = Change::SetLimits {
            path: path.clone(),
            limits: limits
                .iter()
                .map(|&(unit, period, n)| LimitSpec {
                    unit,
                    period,
                    amount: Amount::Number(n),
                    class: None,
                })
                .collect(),
        };
        if let Err(e) = self.engine.accounts().change(&change, self.m.now) {
            self.fail(format!("{change:?} refused: {e}"));
        }
        self.m.limits.insert(path.clone(), limits);
        // A limit may be set below what it counts: nothing more is granted there.
        self.relax_node(&path);
    }

    fn move_allowance(&mut self, pair: u8, device: usize, size: usize) {
        let dev = self.m.paths[device][2].clone();
        let iot = "acme/iot".to_owned();
        let (from, to) = match pair {
            0 => (iot, dev),
            1 => (dev, iot),
            2 => (iot, "acme".to_owned()),
            3 => ("acme".to_owned(), iot),
            4 => (dev, "acme".to_owned()),
            _ => (iot, "acme/sales".to_owned()),
        };
        if from == to {
            return;
        }
        let amount = MOVES[size];
        let month = |m: &Model, node: &str| {
            m.limits[node]
                .iter()
                .position(|&(u, p, _)| u == Unit::Octets && p == Period::Month)
        };
        let ok = match (month(&self.m, &from), month(&self.m, &to)) {
            (Some(i), Some(_)) => {
                let limit = self.m.limits[&from][i].2;
                let free = limit
                    .saturating_sub(self.m.used(&from, Unit::Octets, Period::Month))
                    .saturating_sub(self.m.reserved(&from, Unit::Octets));
                free >= amount
            }
            _ => false,
        };
        let change = Change::Move {
            from: from.clone(),
            to: to.clone(),
            unit: Unit::Octets,
            period: Period::Month,
            amount: Amount::Number(amount),
            class: None,
        };
        let r = self.engine.accounts().change(&change, self.m.now);
        if r.is_ok() != ok {
            self.fail(format!("{change:?}: expected ok={ok}, got {r:?}"));
        }
        if !ok {
            return;
        }
        // Between a node and its ancestor only the descendant's share changes (the ancestor's
        // limit covers it already); otherwise both.
        let below = |a: &str, b: &str| a.starts_with(&format!("{b}/"));
        let mut adjust = |node: &str, add: bool| {
            let l = self.m.limits.get_mut(node).unwrap();
            for (u, p, limit) in l.iter_mut() {
                if *u == Unit::Octets && *p == Period::Month {
                    *limit = if add {
                        *limit + amount
                    } else {
                        *limit - amount
                    };
                }
            }
        };
        if below(&from, &to) {
            adjust(&from, false);
        } else if below(&to, &from) {
            adjust(&to, true);
        } else {
            adjust(&from, false);
            adjust(&to, true);
        }
    }

    fn policy(&mut self, which: u8) {
        let tariff = serde_json::json!({
            "tariff": {"price": "0.01", "per_octets": "1 MiB", "currency_code": 978}
        });
        let none = serde_json::json!({ "tariff": null });
        let (tenant, patch) = match which {
            0 => ("acme", tariff),
            1 => ("acme", none),
            2 => ("acme", serde_json::json!({ "slice_octets": 3 * MIB })),
            3 => ("acme", serde_json::json!({ "slice_octets": 10 * MIB })),
            4 => ("alice", none),
            _ => ("alice", tariff),
        };
        if let Err(e) = self
            .engine
            .accounts()
            .patch_policy(tenant, &patch, self.m.now)
        {
            self.fail(format!("policy patch {tenant} {patch} refused: {e}"));
        }
        match which {
            // A tariff on acme rates nothing: no money limit of acme counts it.
            0 | 1 => {}
            2 => self.m.acme_slice = 3 * MIB,
            3 => self.m.acme_slice = 10 * MIB,
            4 => self.m.alice_tariff = false,
            _ => self.m.alice_tariff = true,
        }
    }

    fn supervise(&mut self) {
        let now = self.m.now;
        let (sup, _) = self.engine.supervise(now);
        let (mut expired, mut closed, mut held) = (0, 0, 0);
        for s in self.m.slots.iter_mut().flatten() {
            match s.life {
                Life::Open => {
                    let before = s.held.len();
                    s.held.retain(|_, h| h.expires > now);
                    expired += before - s.held.len();
                    if now >= s.deadline {
                        s.held.clear();
                        s.life = Life::Gone;
                        closed += 1;
                    } else {
                        held += s.held.len();
                    }
                }
                Life::Ended { deadline } if now >= deadline => s.life = Life::Gone,
                _ => {}
            }
        }
        if let Some((_, _, life)) = &mut self.m.last_event {
            if matches!(*life, Life::Ended { deadline } if now >= deadline) {
                *life = Life::Gone;
            }
        }
        let got = (
            sup.expired_reservations,
            sup.closed_sessions,
            sup.held_reservations,
        );
        if got != (expired, closed, held) {
            self.fail(format!(
                "supervision: expected (expired, closed, held) {:?}, got {got:?}",
                (expired, closed, held)
            ));
        }
    }

    /// The invariants, read from the ledger.
    fn check(&mut self) {
        let now = self.m.now;
        let holdings = self.m.holdings();
        let mut problems = Vec::new();
        for tree in self.trees {
            let t = self.engine.ledger().lock(tree).unwrap();
            let n = t.nodes.len();
            let mut below = vec![[0u64; 4]; n];
            let mut inner = vec![false; n];
            for node in &t.nodes {
                if let Some(p) = node.parent {
                    inner[p as usize] = true;
                    for (s, r) in below[p as usize].iter_mut().zip(node.reserved) {
                        *s += r;
                    }
                }
            }
            for (i, node) in t.nodes.iter().enumerate() {
                let path = self.path_of.get(&(tree, i as u32));
                let name = || t.names(i as u32).join("/");
                // 2: what a node holds.
                let expect = if inner[i] {
                    below[i]
                } else {
                    let mut r = [0u64; 4];
                    if let Some(p) = path {
                        for (a, h) in &holdings {
                            if self.m.paths[*a].last() == Some(p) {
                                r[unit_index(h.unit)] += h.reserved;
                            }
                        }
                    }
                    r
                };
                if node.reserved != expect {
                    problems.push(format!(
                        "{}: reserved {:?}, expected {expect:?}",
                        name(),
                        node.reserved
                    ));
                }
                for c in &node.counters {
                    let key = (tree, i as u32, c.unit, c.period);
                    if c.reserved != node.reserved[unit_index(c.unit)] {
                        problems.push(format!(
                            "{}: {:?}/{:?} counter reserves {}, the node {}",
                            name(),
                            c.unit,
                            c.period,
                            c.reserved,
                            node.reserved[unit_index(c.unit)]
                        ));
                    }
                    // 3: used in the current period (a counter not touched since its period
                    // ended starts again from zero).
                    if c.period_end == i64::MIN && c.used != 0 {
                        problems.push(format!("{}: used before any period", name()));
                    }
                    let used = if c.period != Period::Total && now >= c.period_end {
                        0
                    } else {
                        c.used
                    };
                    let expect = path.map_or(0, |p| self.m.used(p, c.unit, c.period));
                    if used != expect {
                        problems.push(format!(
                            "{}: {:?}/{:?} used {used} (raw {} to {}), the model says {expect}",
                            name(),
                            c.unit,
                            c.period,
                            c.used,
                            c.period_end
                        ));
                    }
                    if c.unit == Unit::Money && c.rated != self.m.rated {
                        problems.push(format!(
                            "{}: rated {}, the model says {}",
                            name(),
                            c.rated,
                            self.m.rated
                        ));
                    }
                    // 1: within the limit, unless the model knows why not.
                    if c.used.saturating_add(c.reserved) <= c.limit {
                        self.relaxed.remove(&key);
                    } else if !self.relaxed.contains(&key) {
                        problems.push(format!(
                            "{}: {:?}/{:?} used {} + reserved {} > limit {}",
                            name(),
                            c.unit,
                            c.period,
                            c.used,
                            c.reserved,
                            c.limit
                        ));
                    }
                }
                if let Some(p) = path {
                    let limits: Limits = node
                        .counters
                        .iter()
                        .map(|c| (c.unit, c.period, c.limit))
                        .collect();
                    if limits != self.m.limits[p] {
                        problems.push(format!(
                            "{p}: limits {limits:?}, the model says {:?}",
                            self.m.limits[p]
                        ));
                    }
                }
            }
            // 4: the root holds every grant of the tree's open sessions.
            let root = self.place[if tree == self.trees[0] {
                "acme"
            } else {
                "alice"
            }];
            let granted = |unit: Unit| -> u64 {
                holdings
                    .iter()
                    .filter(|(a, h)| h.unit == unit && (*a == ALICE) == (tree == self.trees[1]))
                    .map(|(_, h)| h.reserved)
                    .sum()
            };
            let held = t.nodes[root.1 as usize].reserved;
            let expect = [
                granted(Unit::Octets),
                granted(Unit::Seconds),
                granted(Unit::Events),
                granted(Unit::Money),
            ];
            if held != expect {
                problems.push(format!(
                    "{}: the root holds {held:?}, the sessions were granted {expect:?}",
                    t.name
                ));
            }
        }
        if !problems.is_empty() {
            self.fail(problems.join("\n  "));
        }
    }

    /// 5: far in the future, after supervision, nothing is reserved anywhere.
    fn finish(&mut self) {
        self.log.push("finish: +60 days, supervise".into());
        self.m.now += 60 * DAY;
        self.supervise();
        self.check();
        for tree in self.trees {
            let t = self.engine.ledger().lock(tree).unwrap();
            for (i, node) in t.nodes.iter().enumerate() {
                if node.reserved != [0; 4] || node.counters.iter().any(|c| c.reserved != 0) {
                    let name = t.names(i as u32).join("/");
                    drop(t);
                    self.fail(format!("{name} still holds units after supervision"));
                }
            }
        }
        if self.engine.session_count() != 0 {
            self.fail(format!(
                "{} sessions open after supervision",
                self.engine.session_count()
            ));
        }
    }
}

fn run(steps: &[Step]) {
    let mut w = World::new();
    w.check();
    for s in steps {
        w.run(s);
    }
    w.finish();
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    // PROPTEST_CASES=n runs more.
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_ledger_follows_the_model(steps in prop::collection::vec(step(), 1..=60)) {
        run(&steps);
    }
}

/// Found while building the model (the engine now counts such octets as octets): with a
/// tariff on `acme`, which has octets limits but no money limit, usage a device reports with
/// nothing reserved for it (on a CCR-I, as here, or on an update after supervision returned an
/// expired grant) is answered 2001 and counted nowhere. The engine rates it as money
/// (`Engine::settle`, `(Unit::Octets, Some(price)) => commit_rated(0, ...)`), and
/// `Tree::commit_rated` takes the money charged from the first money counter on the path: with
/// none, it is 0, so neither an octets counter nor the account's own usage (`Node::own`, "what
/// one account was charged ... whether or not a limit counts it") records anything, and a money
/// limit set afterwards starts from 0. docs/charging.md: reported usage "is charged on every node
/// from the device to the enterprise ... Usage reported beyond the grant is charged all the
/// same".
#[test]
fn usage_reported_under_a_tariff_without_a_money_limit_is_counted_somewhere() {
    let (ledger, directory) = default_tenant();
    let engine = Engine::new(ledger, directory, ChargingConfig::default());
    let tariff = serde_json::json!({
        "tariff": {"price": "0.01", "per_octets": "1 MiB", "currency_code": 978}
    });
    engine
        .accounts()
        .patch_policy("acme", &tariff, START)
        .unwrap();
    let mut report = CcrSpec::new("late;1", INITIAL, 0)
        .msisdn("15551008000")
        .mscc(MsccSpec {
            rating_group: Some(1),
            used_octets: Some(5 * MIB),
            ..Default::default()
        });
    report.origin_host = HOST.into();
    let mut b = BytesMut::new();
    report.write(&mut b, 1, 1);
    let mut out = BytesMut::new();
    let _ = engine.credit_control(
        &identity(),
        &Message::decode(b.freeze()).unwrap(),
        START,
        &mut out,
    );
    let answer = CcaResult::read(&Message::decode(out.freeze()).unwrap());
    assert_eq!(answer.result_code, 2001, "{answer:?}");
    // A money limit on the device starts from what the device was charged in money.
    engine
        .accounts()
        .change(
            &Change::SetLimits {
                path: "acme/iot/15551008000".into(),
                limits: vec![
                    LimitSpec {
                        unit: Unit::Octets,
                        period: Period::Month,
                        amount: Amount::Text("10 MiB".into()),
                        class: None,
                    },
                    LimitSpec {
                        unit: Unit::Money,
                        period: Period::Month,
                        amount: Amount::Text("1.00".into()),
                        class: None,
                    },
                ],
            },
            START,
        )
        .unwrap();
    let t = engine.ledger().lock(0).unwrap();
    let device = t.find(&["acme", "iot", "15551008000"]).unwrap();
    let mut octets = Vec::new();
    let mut at = Some(device);
    while let Some(n) = at {
        let node = &t.nodes[n as usize];
        octets.extend(
            node.counters
                .iter()
                .filter(|c| c.unit == Unit::Octets)
                .map(|c| c.used),
        );
        at = node.parent;
    }
    let money = t.nodes[device as usize]
        .counters
        .iter()
        .find(|c| c.unit == Unit::Money)
        .map_or(0, |c| c.used);
    // Either the octets count against the octets limits, or their price against money.
    let counted_as_octets = octets.iter().all(|&u| u == 5 * MIB);
    let counted_as_money = money == cost(u128::from(5 * MIB)) as u64;
    assert!(
        counted_as_octets || counted_as_money,
        "5 MiB reported by acme/iot/15551008000 are counted nowhere: octets used on its path \
         {octets:?}, money used on a limit set afterwards {money} (expected {} for 5 MiB), own \
         usage {:?}",
        cost(u128::from(5 * MIB)),
        t.nodes[device as usize].own
    );
}
