//! Ledger operations that leave a journal record: every mutation the engine makes goes through
//! a [`Recorder`], which applies it and notes the [`Op`]; a batch's ops go to the store in one
//! hand-over. The store's replay applies them again at start ([`apply`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ledger::{
    AccountRef, Classes, Crossing, Grant, Ledger, Level, Period, Unit, period_index,
};
use crate::ops::{Account, Fired, FiredLevel, Op};

pub fn unit_code(u: Unit) -> u8 {
    crate::ledger::unit_index(u) as u8
}

/// The unit of a code, if it is one.
pub fn unit_from(c: u8) -> Option<Unit> {
    Unit::ALL.get(usize::from(c)).copied()
}

fn acc(a: AccountRef) -> Account {
    Account {
        tree: a.tree,
        node: a.node,
    }
}

fn at(a: Account) -> AccountRef {
    AccountRef {
        tree: a.tree,
        node: a.node,
    }
}

use crate::ops::MAX_DATA;

/// The journal's form of a threshold that fired.
pub fn fired_of(tree: u32, c: &Crossing, path: String, class: String) -> Fired {
    Fired {
        class,
        account: Account { tree, node: c.node },
        unit: unit_code(c.unit),
        period: period_index(c.period) as u8,
        period_end: c.period_end,
        default: c.default,
        bit: c.bit,
        level: match c.level {
            Level::Percent(p) => FiredLevel::Percent(p),
            Level::Amount(a) => FiredLevel::Amount(a),
        },
        used: c.used,
        limit: c.limit,
        path,
    }
}

/// The ledger's form of a threshold the journal says fired (`None`: not one this build
/// knows).
pub fn crossing_of(f: &Fired) -> Option<Crossing> {
    Some(Crossing {
        node: f.account.node,
        unit: unit_from(f.unit)?,
        class: if f.class.is_empty() {
            0
        } else {
            crate::rules::spec::class_id(&f.class)
        },
        period: [Period::Day, Period::Month, Period::Total]
            .get(usize::from(f.period))
            .copied()?,
        period_end: f.period_end,
        level: match f.level {
            FiredLevel::Percent(p) => Level::Percent(p),
            FiredLevel::Amount(a) => Level::Amount(a),
        },
        default: f.default,
        bit: f.bit,
        used: f.used,
        limit: f.limit,
    })
}

/// Applies ledger operations and notes their journal records.
pub struct Recorder<'a> {
    ledger: &'a Ledger,
    accounts: &'a crate::accounts::Accounts,
    ids: &'a AtomicU64,
    pub ops: Vec<Op>,
    /// An answer was sent again from a session's cache: it may leave only once what is
    /// queued now is as durable as the mode requires (its request's records are among it).
    pub replayed: bool,
    /// The batch's decisions, for explain's ring (kept there once per batch).
    pub(super) decisions: Vec<super::explain::Decision>,
}

impl<'a> Recorder<'a> {
    pub fn new(accounts: &'a crate::accounts::Accounts, ids: &'a AtomicU64) -> Self {
        Recorder {
            ledger: accounts.ledger(),
            accounts,
            ids,
            ops: Vec::new(),
            replayed: false,
            decisions: Vec::new(),
        }
    }

    pub fn ledger(&self) -> &Ledger {
        self.ledger
    }

    /// Notes the classes of the ledger op about to be noted, if any.
    fn classes(&mut self, classes: Classes) {
        if !classes.is_none() {
            self.ops.push(Op::Classes(classes.0));
        }
    }

    /// Reserves up to `want` of `unit` in `classes`; returns the grant and its reservation id
    /// (0 if nothing).
    pub fn reserve(
        &mut self,
        a: AccountRef,
        (unit, classes): (Unit, Classes),
        want: u64,
        now: i64,
        expires: i64,
    ) -> (Grant, u64) {
        let g = self.ledger.reserve_in(a, (unit, classes), want, now);
        if g.granted == 0 {
            return (g, 0);
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        self.classes(classes);
        self.ops.push(Op::Reserve {
            reservation: id,
            account: acc(a),
            unit: unit_code(unit),
            amount: g.granted,
            expires,
        });
        (g, id)
    }

    pub fn commit(
        &mut self,
        id: u64,
        a: AccountRef,
        (unit, classes): (Unit, Classes),
        reserved: u64,
        used: u64,
        now: i64,
    ) {
        let crossed = self
            .ledger
            .commit_watched_in(a, (unit, classes), reserved, used, now);
        self.classes(classes);
        self.ops.push(Op::Commit {
            reservation: id,
            account: acc(a),
            unit: unit_code(unit),
            reserved,
            used,
        });
        self.fired(a.tree, crossed);
    }

    /// Notes the thresholds a commit crossed, after the commit (replay marks them fired
    /// again; the store turns them into events). `classes` names the classes of the charge.
    fn fired(&mut self, tree: u32, crossed: Vec<Crossing>) {
        if crossed.is_empty() {
            return;
        }
        // The names of class limits, from the tenant's policy.
        let policy = crossed
            .iter()
            .any(|c| c.class != 0)
            .then(|| self.accounts.policy_of(tree));
        let Some(t) = self.ledger.lock(tree) else {
            return;
        };
        for c in crossed {
            let path = t.names(c.node).join("/");
            let class = policy
                .as_ref()
                .and_then(|p| crate::accounts::views::class_name(p, c.class))
                .unwrap_or_default();
            self.ops
                .push(Op::Threshold(Box::new(fired_of(tree, &c, path, class))));
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn commit_rated(
        &mut self,
        id: u64,
        a: AccountRef,
        classes: Classes,
        reserved: u64,
        octets: u64,
        price: (u128, u128),
        now: i64,
    ) -> u64 {
        let (charged, crossed) = self
            .ledger
            .commit_rated_watched_in(a, classes, reserved, octets, price, now);
        self.classes(classes);
        self.ops.push(Op::CommitRated {
            reservation: id,
            account: acc(a),
            reserved,
            octets,
            price,
        });
        self.fired(a.tree, crossed);
        charged
    }

    pub fn release(
        &mut self,
        id: u64,
        a: AccountRef,
        (unit, classes): (Unit, Classes),
        amount: u64,
        now: i64,
    ) {
        self.ledger.release_in(a, (unit, classes), amount, now);
        self.classes(classes);
        self.ops.push(Op::Release {
            reservation: id,
            account: acc(a),
            unit: unit_code(unit),
            amount,
        });
    }

    /// Returns everything a session holds, each reservation on its account and in its classes.
    pub(crate) fn release_all(&mut self, s: &mut super::session::Session, now: i64) {
        for h in s.held.drain(..) {
            let account = h.account(s.account);
            self.release(h.id, account, (h.unit, h.classes), h.reserved, now);
        }
    }

    /// Notes a session's state after a request, so that it outlives a restart.
    pub fn session(&mut self, session_id: &str, s: &super::session::Session, ended: bool) {
        let mut data = Vec::with_capacity(96 + session_id.len() + s.last_answer.len());
        super::session::encode_state(&mut data, session_id, s, ended);
        if data.len() > MAX_DATA {
            // Past what a record holds (a huge answer): the state without the answer, so the
            // session and its reservations still outlive a restart.
            tracing::warn!(
                session_id,
                octets = data.len(),
                "session state too large to journal with its answer; a retransmission of this request after a restart gets 5012"
            );
            let mut lean = s.clone();
            lean.last_answer = Vec::new();
            data.clear();
            super::session::encode_state(&mut data, session_id, &lean, ended);
        }
        self.ops.push(Op::Session(data));
    }

    /// Notes that supervision closed a session.
    pub(crate) fn session_closed(&mut self, session_id: &str) {
        self.ops
            .push(Op::SessionClosed(session_id.as_bytes().to_vec()));
    }

    /// Gives back usage; false (and no record) if the account was not charged that much.
    pub fn refund(&mut self, a: AccountRef, unit: Unit, amount: u64, now: i64) -> bool {
        if !self.ledger.refund(a, unit, amount, now) {
            return false;
        }
        self.ops.push(Op::Refund {
            account: acc(a),
            unit: unit_code(unit),
            amount,
        });
        true
    }
}

/// A reservation that was outstanding when the journal ends (the process stopped before it
/// was settled): its units stay counted until it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outstanding {
    pub id: u64,
    pub account: AccountRef,
    pub unit: Unit,
    /// The service classes it was reserved in.
    pub classes: Classes,
    pub amount: u64,
    pub expires: i64,
}

/// What the store's replay found: the state to resume from ([`crate::Engine::resume`]).
#[derive(Debug, Default)]
pub struct Recovered {
    /// The next reservation id to hand out.
    pub next_reservation: u64,
    /// Reservations still open, sessions' included, by id.
    pub outstanding: HashMap<u64, Outstanding, Fast>,
}

/// Replay fills maps of ten million entries: SipHash was a tenth of a start-up's time.
/// Journal records were checksummed when read back and come from our own writer.
type Fast = foldhash::fast::RandomState;

/// Applies ops read back from the journal to an engine provisioned as it was when they were
/// recorded (before [`super::Engine::resume`]): the ledger's, and the sessions' latest states
/// straight into the engine's session maps (ten million sessions were copied through two
/// maps of their own on the way, at the cost of a restart's time and memory). Keeps the
/// reservations still open.
pub struct Replayer<'e> {
    max_id: u64,
    open: HashMap<u64, Outstanding, Fast>,
    engine: &'e super::Engine,
    /// The classes an `Op::Classes` gave the next ledger op.
    classes: Classes,
}

/// An op that cannot be applied: the store reports it as corruption at its sequence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("unit code {0} is not a unit")]
    Unit(u8),
    #[error("the session state does not read back")]
    Session,
}

impl<'e> Replayer<'e> {
    /// Starts from the reservations a snapshot held open (its sessions already restored into
    /// `engine` with [`super::Engine::restore_session`]).
    pub fn new(engine: &'e super::Engine, open: Vec<Outstanding>) -> Self {
        let mut r = Replayer {
            max_id: open.iter().map(|o| o.id).max().unwrap_or(0),
            // Sized once for what the snapshot holds (and some), not grown and moved.
            open: HashMap::with_capacity_and_hasher(open.len() + open.len() / 4, Fast::default()),
            engine,
            classes: Classes::NONE,
        };
        r.open.extend(open.into_iter().map(|o| (o.id, o)));
        r
    }

    /// Applies one op as it ran at `now`.
    pub fn apply(&mut self, op: &Op, now: i64) -> Result<(), ReplayError> {
        let ledger = self.engine.ledger();
        let unit = |c: u8| unit_from(c).ok_or(ReplayError::Unit(c));
        // The classes of this op, if the op before named them.
        let classes = std::mem::replace(&mut self.classes, Classes::NONE);
        match op {
            Op::Classes(c) => self.classes = Classes(*c),
            &Op::Reserve {
                reservation,
                account,
                unit: u,
                amount,
                expires,
            } => {
                let u = unit(u)?;
                if let Some(mut t) = ledger.lock(account.tree) {
                    t.add_reserved(account.node, (u, classes), amount, now);
                }
                self.max_id = self.max_id.max(reservation);
                self.open.insert(
                    reservation,
                    Outstanding {
                        id: reservation,
                        account: at(account),
                        unit: u,
                        classes,
                        amount,
                        expires,
                    },
                );
            }
            &Op::Commit {
                reservation,
                account,
                unit: u,
                reserved,
                used,
            } => {
                ledger.commit_in(at(account), (unit(u)?, classes), reserved, used, now);
                self.open.remove(&reservation);
            }
            &Op::CommitRated {
                reservation,
                account,
                reserved,
                octets,
                price,
            } => {
                ledger.commit_rated_in(at(account), classes, reserved, octets, price, now);
                self.open.remove(&reservation);
            }
            &Op::Release {
                reservation,
                account,
                unit: u,
                amount,
            } => {
                ledger.release_in(at(account), (unit(u)?, classes), amount, now);
                self.open.remove(&reservation);
            }
            &Op::Refund {
                account,
                unit: u,
                amount,
            } => {
                let u = unit(u)?;
                if let Some(mut t) = ledger.lock(account.tree) {
                    t.refund(account.node, u, amount, now);
                }
            }
            Op::Session(data) => {
                let s = super::session::decode_state(data).ok_or(ReplayError::Session)?;
                self.engine.restore_session(s);
            }
            Op::SessionClosed(id) => {
                self.engine
                    .forget_session(String::from_utf8_lossy(id).as_ref());
            }
            Op::Usage(_) | Op::Event(_) => {}
            Op::Threshold(f) => {
                if let Some(c) = crossing_of(f) {
                    if let Some(mut t) = ledger.lock(f.account.tree) {
                        t.mark_fired(&c);
                    }
                }
            }
        }
        Ok(())
    }

    /// What to resume from.
    pub fn finish(self) -> Recovered {
        Recovered {
            next_reservation: self.max_id + 1,
            outstanding: self.open,
        }
    }
}
