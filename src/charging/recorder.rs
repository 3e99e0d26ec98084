//! Ledger operations that leave a journal record: every mutation the engine makes goes through
//! a [`Recorder`], which applies it and notes the record; the request's records go to the
//! journal in one batch. [`replay`] applies a journal to a freshly provisioned ledger.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::journal::record::{Account, Op};
use crate::journal::segment::{self, ReadError, ReadSummary};
use crate::ledger::{AccountRef, Grant, Ledger, Unit};

pub fn unit_code(u: Unit) -> u8 {
    crate::ledger::unit_index(u) as u8
}

/// The unit of a code the journal reader has checked (anything past the last reads as money).
pub fn unit_from(c: u8) -> Unit {
    Unit::ALL
        .get(usize::from(c))
        .copied()
        .unwrap_or(Unit::Money)
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

/// The most octets of data a session record may carry (the journal's bound, less its header).
const MAX_DATA: usize = crate::journal::record::MAX_BODY_V2 - crate::journal::record::BODY_HEADER;

/// Applies ledger operations and notes their journal records.
pub struct Recorder<'a> {
    ledger: &'a Ledger,
    ids: &'a AtomicU64,
    pub ops: Vec<Op>,
    /// Usage records (JSON lines) to hand to the usage log with the batch.
    pub usage: String,
    /// An answer was sent again from a session's cache: it may leave only once what is
    /// queued now is as durable as the mode requires (its request's records are among it).
    pub replayed: bool,
}

impl<'a> Recorder<'a> {
    pub fn new(ledger: &'a Ledger, ids: &'a AtomicU64) -> Self {
        Recorder {
            ledger,
            ids,
            ops: Vec::new(),
            usage: String::new(),
            replayed: false,
        }
    }

    pub fn ledger(&self) -> &Ledger {
        self.ledger
    }

    /// Reserves up to `want`; returns the grant and its reservation id (0 if nothing).
    pub fn reserve(
        &mut self,
        a: AccountRef,
        unit: Unit,
        want: u64,
        now: i64,
        expires: i64,
    ) -> (Grant, u64) {
        let g = self.ledger.reserve(a, unit, want, now);
        if g.granted == 0 {
            return (g, 0);
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
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
        unit: Unit,
        reserved: u64,
        used: u64,
        now: i64,
    ) {
        self.ledger.commit(a, unit, reserved, used, now);
        self.ops.push(Op::Commit {
            reservation: id,
            account: acc(a),
            unit: unit_code(unit),
            reserved,
            used,
        });
    }

    pub fn commit_rated(
        &mut self,
        id: u64,
        a: AccountRef,
        reserved: u64,
        octets: u64,
        price: (u128, u128),
        now: i64,
    ) -> u64 {
        let charged = self.ledger.commit_rated(a, reserved, octets, price, now);
        self.ops.push(Op::CommitRated {
            reservation: id,
            account: acc(a),
            reserved,
            octets,
            price,
        });
        charged
    }

    pub fn release(&mut self, id: u64, a: AccountRef, unit: Unit, amount: u64, now: i64) {
        self.ledger.release(a, unit, amount, now);
        self.ops.push(Op::Release {
            reservation: id,
            account: acc(a),
            unit: unit_code(unit),
            amount,
        });
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
    pub fn session_closed(&mut self, session_id: &str) {
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
    pub amount: u64,
    pub expires: i64,
}

/// What replay found.
#[derive(Debug, Default)]
pub struct Recovered {
    pub summary: ReadSummary,
    /// The next reservation id to hand out.
    pub next_reservation: u64,
    /// Reservations still open, sessions' included.
    pub outstanding: Vec<Outstanding>,
    /// Sessions as they were last recorded, open or lingering after their end, by Session-Id.
    pub sessions: HashMap<String, super::session::Restored>,
}

/// Applies the journal in `dir` (records after `after`) to `ledger`, which must be provisioned
/// as it was when the records were written. Truncates a torn tail; stops at corruption.
pub fn replay(
    ledger: &Ledger,
    dir: &Path,
    after: u64,
    open_before: Vec<Outstanding>,
    sessions_before: Vec<super::session::Restored>,
    mut before: impl FnMut(u64),
) -> Result<Recovered, ReadError> {
    let mut max_id = open_before.iter().map(|o| o.id).max().unwrap_or(0);
    let mut open: HashMap<u64, Outstanding> = open_before.into_iter().map(|o| (o.id, o)).collect();
    let mut sessions: HashMap<String, super::session::Restored> = sessions_before
        .into_iter()
        .map(|r| (r.session_id.clone(), r))
        .collect();
    let mut unreadable: Option<u64> = None;
    let summary = segment::read_all(dir, after, true, |r| {
        // Account changes logged before this record take effect first.
        before(r.sequence);
        let now = r.time;
        match &r.op {
            &Op::Reserve {
                reservation,
                account,
                unit,
                amount,
                expires,
            } => {
                let u = unit_from(unit);
                if let Some(mut t) = ledger.lock(account.tree) {
                    t.add_reserved(account.node, u, amount, now);
                }
                max_id = max_id.max(reservation);
                open.insert(
                    reservation,
                    Outstanding {
                        id: reservation,
                        account: at(account),
                        unit: u,
                        amount,
                        expires,
                    },
                );
            }
            &Op::Commit {
                reservation,
                account,
                unit,
                reserved,
                used,
            } => {
                ledger.commit(at(account), unit_from(unit), reserved, used, now);
                open.remove(&reservation);
            }
            &Op::CommitRated {
                reservation,
                account,
                reserved,
                octets,
                price,
            } => {
                ledger.commit_rated(at(account), reserved, octets, price, now);
                open.remove(&reservation);
            }
            &Op::Release {
                reservation,
                account,
                unit,
                amount,
            } => {
                ledger.release(at(account), unit_from(unit), amount, now);
                open.remove(&reservation);
            }
            &Op::Refund {
                account,
                unit,
                amount,
            } => {
                if let Some(mut t) = ledger.lock(account.tree) {
                    t.refund(account.node, unit_from(unit), amount, now);
                }
            }
            Op::Session(data) => match super::session::decode_state(data) {
                Some(s) => {
                    sessions.insert(s.session_id.clone(), s);
                }
                None => {
                    unreadable.get_or_insert(r.sequence);
                }
            },
            Op::SessionClosed(id) => {
                sessions.remove(String::from_utf8_lossy(id).as_ref());
            }
            Op::Usage(_) => {}
        }
    })?;
    if let Some(sequence) = unreadable {
        return Err(ReadError::Corrupt {
            file: dir.into(),
            offset: sequence,
            reason: format!("the session state in record {sequence} does not read back"),
        });
    }
    let mut outstanding: Vec<Outstanding> = open.into_values().collect();
    outstanding.sort_by_key(|o| o.id);
    Ok(Recovered {
        summary,
        next_reservation: max_id + 1,
        outstanding,
        sessions,
    })
}
