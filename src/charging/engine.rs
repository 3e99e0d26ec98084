//! The credit-control server (RFC 4006 §5 and §6, TS 32.299 §6.3): turns a CCR into ledger
//! operations and a CCA. Sans-IO: `now` (Unix seconds) comes from the caller.

use bytes::BytesMut;
use tracing::debug;

use crate::diameter::base::LocalIdentity;
use crate::diameter::codes::{ResultCode, avp as c};
use crate::diameter::error::DiameterError;
use crate::diameter::message::Message;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use arc_swap::ArcSwap;

use crate::journal::record::Op;
use crate::journal::usage::UsageLog;
use crate::journal::writer::Journal;
use crate::ledger::{AccountRef, Ledger, Unit};

use super::answer::{EventAnswer, MsccAnswer, write_cca};
use super::recorder::{Outstanding, Recorder, Recovered};
use super::request::{CreditRequest, Mscc, RequestType, RequestedAction, Units};
use super::session::{Held, ServiceUsage, Session, Sessions, unit_index};
use super::snapshot::SnapshotInfo;
use super::tenant::{Directory, Policy, SubscriptionType};

/// Charging settings that are not per tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChargingConfig {
    /// Added to Validity-Time before a reservation returns to the pool by itself (RFC 4006 Tcc
    /// leaves the gateway time to report).
    pub reservation_grace_s: u32,
    /// How long a terminated session's last answer is kept for retransmissions.
    pub linger_s: u32,
}

impl Default for ChargingConfig {
    fn default() -> Self {
        ChargingConfig {
            reservation_grace_s: 30,
            linger_s: 15,
        }
    }
}

/// A supervision pass is made in this many parts.
const SUPERVISION_PARTS: usize = 16;

/// What a supervision pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Supervision {
    pub expired_reservations: usize,
    pub closed_sessions: usize,
    /// Reservations the walked sessions still hold.
    pub held_reservations: usize,
}

/// Where an answer goes: who we are, the request, and the output buffer.
struct Reply<'a> {
    identity: &'a LocalIdentity,
    req: &'a Message,
    out: &'a mut BytesMut,
}

pub struct Engine {
    pub(super) ledger: Ledger,
    /// Subscription ids to accounts; written only by account changes (rare, see
    /// [`super::changes`]), read at session start.
    directory: RwLock<Directory>,
    /// Each tree's policy, swapped whole by a change so requests never wait for one.
    policies: ArcSwap<Vec<Arc<Policy>>>,
    /// Account changes, one at a time: the imported provisioning and the change log.
    pub(super) changes: Mutex<super::changes::ChangeState>,
    /// Changes made so far (the change log's length), counted under the gate.
    pub(super) changes_applied: AtomicU64,
    pub(super) sessions: Sessions,
    /// [`ChargingConfig`], changed live by a reload.
    reservation_grace_s: AtomicU32,
    linger_s: AtomicU32,
    pub(super) journal: Option<Journal>,
    /// Held (shared) by every request from its first ledger change until its records are
    /// queued; a snapshot holds it exclusively, so the ledger it copies is exactly the effect
    /// of the records up to the sequence it names.
    pub(super) gate: RwLock<()>,
    usage: Option<UsageLog>,
    usage_interim: bool,
    next_reservation: AtomicU64,
    /// Reservations found open in the journal at start: counted until they expire.
    outstanding: Mutex<Vec<Outstanding>>,
}

/// A tree's policy (the default for a tree without one).
fn policy_of(policies: &[Arc<Policy>], tree: u32) -> &Policy {
    static DEFAULT: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
    policies
        .get(tree as usize)
        .map(|p| &**p)
        .unwrap_or_else(|| DEFAULT.get_or_init(Policy::default))
}

/// The unit a request asks for: time, service-specific units, else octets.
fn requested_unit(u: &Units) -> Unit {
    if u.time.is_some() {
        Unit::Seconds
    } else if u.events.is_some() {
        Unit::Events
    } else {
        Unit::Octets
    }
}

fn requested_amount(u: &Units, unit: Unit) -> Option<u64> {
    match unit {
        Unit::Octets => u.octets(),
        Unit::Seconds => u.time.map(u64::from),
        Unit::Events | Unit::Money => u.events,
    }
}

fn slice(policy: &Policy, unit: Unit) -> u64 {
    match unit {
        Unit::Octets => policy.slice_octets,
        Unit::Seconds => policy.slice_seconds,
        Unit::Events | Unit::Money => policy.slice_events,
    }
}

impl Engine {
    pub fn new(ledger: Ledger, mut directory: Directory, config: ChargingConfig) -> Self {
        let policies = directory
            .take_policies()
            .into_iter()
            .map(Arc::new)
            .collect();
        Engine {
            ledger,
            directory: RwLock::new(directory),
            policies: ArcSwap::from_pointee(policies),
            changes: Mutex::new(Default::default()),
            changes_applied: AtomicU64::new(0),
            sessions: Sessions::default(),
            reservation_grace_s: AtomicU32::new(config.reservation_grace_s),
            linger_s: AtomicU32::new(config.linger_s),
            journal: None,
            gate: RwLock::new(()),
            usage: None,
            usage_interim: false,
            next_reservation: AtomicU64::new(1),
            outstanding: Mutex::new(Vec::new()),
        }
    }

    /// Journals every ledger change from now on, continuing after what `recovered` found.
    pub fn with_journal(mut self, journal: Journal, recovered: Recovered) -> Self {
        self.journal = Some(journal);
        self.next_reservation = AtomicU64::new(recovered.next_reservation);
        self.outstanding = Mutex::new(recovered.outstanding);
        self
    }

    /// Takes new charging settings (a reload): they apply to grants and ends from now on.
    pub fn set_charging_config(&self, config: ChargingConfig) {
        self.reservation_grace_s
            .store(config.reservation_grace_s, Relaxed);
        self.linger_s.store(config.linger_s, Relaxed);
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Writes usage records (one JSON line per session end; per update too if `interim`).
    pub fn with_usage(mut self, log: UsageLog, interim: bool) -> Self {
        self.usage = Some(log);
        self.usage_interim = interim;
        self
    }

    pub fn usage_log(&self) -> Option<&UsageLog> {
        self.usage.as_ref()
    }

    /// One usage record: who, which account, what each service used, when, how it ended.
    #[allow(clippy::too_many_arguments)]
    fn record_usage(
        &self,
        rec: &mut Recorder,
        session_id: &str,
        s: &Session,
        services: &[ServiceUsage],
        now: i64,
        outcome: &str,
        interim: bool,
    ) {
        use std::fmt::Write as _;
        if self.usage.is_none() {
            return;
        }
        // Written by hand: building a serde_json::Value per session end cost a tenth of a
        // worker's time under load. Keys are in sorted order, as serde_json writes them.
        let line = &mut rec.usage;
        line.push_str("{\"account\":\"");
        if let Some(t) = self.ledger.lock(s.account.tree) {
            for (i, name) in t.names(s.account.node).iter().enumerate() {
                if i > 0 {
                    line.push('/');
                }
                json_escape(line, name);
            }
        }
        let _ = write!(
            line,
            "\",\"end\":{now},\"interim\":{interim},\"outcome\":\""
        );
        json_escape(line, outcome);
        line.push_str("\",\"services\":[");
        let opt = |v: Option<u32>| v.map_or_else(|| "null".to_owned(), |v| v.to_string());
        for (i, u) in services.iter().enumerate() {
            let money = rust_decimal::Decimal::new(
                i64::try_from(u.units[3]).unwrap_or(i64::MAX),
                crate::ledger::MONEY_SCALE,
            );
            let _ = write!(
                line,
                "{}{{\"events\":{},\"money\":\"{money}\",\"octets\":{},\"rating_group\":{},\"seconds\":{},\"service_identifier\":{}}}",
                if i > 0 { "," } else { "" },
                u.units[2],
                u.units[0],
                opt(u.rating_group),
                u.units[1],
                opt(u.service_identifier),
            );
        }
        line.push_str("],\"session_id\":\"");
        json_escape(line, session_id);
        let _ = write!(line, "\",\"start\":{},\"subscriber\":\"", s.started);
        json_escape(line, &s.subscriber);
        line.push_str("\"}\n");
    }

    /// Hands a batch's records to the journal and its usage records to the usage log;
    /// returns the journal sequence to wait for (0: none).
    fn journal_ops(&self, now: i64, ops: Vec<Op>, usage: String) -> u64 {
        if let (Some(log), false) = (&self.usage, usage.is_empty()) {
            log.write(usage);
        }
        match &self.journal {
            Some(j) => j.append(now, ops),
            None => 0,
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The subscription directory, read-locked: never hold it across a request.
    pub fn directory(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn directory_mut(&self) -> std::sync::RwLockWriteGuard<'_, Directory> {
        self.directory.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every tree's policy, as of now.
    pub fn policies(&self) -> Arc<Vec<Arc<Policy>>> {
        self.policies.load_full()
    }

    pub(super) fn set_policies(&self, policies: Vec<Arc<Policy>>) {
        self.policies.store(Arc::new(policies));
    }

    /// Open (not terminated) sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The account of the first provisioned Subscription-Id, and that id as `type:data`.
    fn lookup(&self, cr: &CreditRequest) -> Option<(AccountRef, Box<str>)> {
        let directory = self.directory();
        cr.subscriptions.iter().find_map(|(kind, id)| {
            let at = directory.lookup(*kind, id)?;
            let label = match kind {
                SubscriptionType::E164 => "e164",
                SubscriptionType::Imsi => "imsi",
                SubscriptionType::SipUri => "sip",
                SubscriptionType::Nai => "nai",
                SubscriptionType::Private => "private",
            };
            Some((at, format!("{label}:{id}").into_boxed_str()))
        })
    }

    /// Answers one CCR (already checked by the base protocol and the dictionary) into `out`.
    /// Returns the journal sequence the answer must wait for (per the durability mode), or 0.
    pub fn credit_control(
        &self,
        identity: &LocalIdentity,
        req: &Message,
        now: i64,
        out: &mut BytesMut,
    ) -> u64 {
        let mut batch = self.batch(now);
        batch.credit_control(identity, req, out);
        batch.finish()
    }

    /// Starts answering the requests of one read together: they share one hold of the
    /// snapshot gate and one hand-over to the journal.
    pub fn batch(&self, now: i64) -> CcrBatch<'_> {
        CcrBatch {
            engine: self,
            _gate: self.gate.read().unwrap_or_else(|p| p.into_inner()),
            rec: Recorder::new(&self.ledger, &self.next_reservation),
            now,
        }
    }

    /// Takes a snapshot of the ledger and writes it to `path` (atomically). Returns the journal
    /// sequence it includes; segments wholly at or below it may be removed.
    pub fn snapshot(&self, path: &std::path::Path) -> std::io::Result<u64> {
        let data = {
            let _stop = self.gate.write().unwrap_or_else(|p| p.into_inner());
            let sequence = self.journal.as_ref().map_or(0, |j| {
                j.progress()
                    .queued
                    .load(std::sync::atomic::Ordering::Acquire)
            });
            // Reservations still open, in sessions and from before the last start.
            let mut outstanding = self
                .outstanding
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for i in 0..self.sessions.shard_count() {
                for s in self.sessions.lock_index(i).open.values() {
                    outstanding.extend(s.held.iter().map(|h| Outstanding {
                        id: h.id,
                        account: s.account,
                        unit: h.unit,
                        amount: h.reserved,
                        expires: h.expires,
                    }));
                }
            }
            let info = SnapshotInfo {
                sequence,
                next_reservation: self
                    .next_reservation
                    .load(std::sync::atomic::Ordering::Relaxed),
                outstanding,
                fingerprint: super::snapshot::fingerprint(&self.ledger),
                changes: self.changes_applied(),
            };
            (super::snapshot::encode(&self.ledger, &info), sequence)
        };
        super::snapshot::write_atomically(path, &data.0)?;
        Ok(data.1)
    }

    fn answer_ccr(
        &self,
        identity: &LocalIdentity,
        req: &Message,
        now: i64,
        out: &mut BytesMut,
        rec: &mut Recorder,
    ) {
        let cr = match CreditRequest::read(req) {
            Ok(cr) => cr,
            Err(e) => return identity.write_error_answer(out, req, &e),
        };
        let mut shard = self.sessions.lock(cr.session_id);
        let seen = match shard.open.get(cr.session_id) {
            Some(s) => Some((s.last_number, s.last_type, &s.last_answer[..], false)),
            None => shard
                .ended
                .get(cr.session_id)
                .map(|e| (e.last_number, e.last_type, &e.last_answer[..], true)),
        };
        if let Some((last_number, last_type, last_answer, ended)) = seen {
            if last_number == cr.request_number && last_type == cr.request_type as u8 {
                // A retransmission (T flag or not): the same answer, charged once.
                return replay(out, last_answer, req);
            }
            if ended && cr.request_type != RequestType::Initial {
                let e = DiameterError::new(
                    ResultCode::UnknownSessionId,
                    "the credit-control session has ended",
                );
                return identity.write_error_answer(out, req, &e);
            }
            if cr.request_number <= last_number || cr.request_type == RequestType::Initial {
                let e = DiameterError::new(
                    ResultCode::InvalidAvpValue,
                    "CC-Request-Number is not after the last one handled",
                )
                .with_avp(
                    req.find(c::CC_REQUEST_NUMBER)
                        .map(|a| a.to_bytes())
                        .unwrap_or_default(),
                );
                return identity.write_error_answer(out, req, &e);
            }
        }
        let start = out.len();
        match cr.request_type {
            RequestType::Initial | RequestType::Event => {
                let Some((account, subscriber)) = self.lookup(&cr) else {
                    let e = DiameterError::new(
                        ResultCode::UserUnknown,
                        "no subscriber with these Subscription-Ids",
                    );
                    return identity.write_error_answer(out, req, &e);
                };
                let mut session = Session {
                    account,
                    last_number: cr.request_number,
                    last_type: cr.request_type as u8,
                    last_answer: Vec::new(),
                    held: Vec::new(),
                    deadline: now,
                    terminated: cr.request_type == RequestType::Event,
                    started: now,
                    subscriber,
                    services: Vec::new(),
                };
                if cr.request_type == RequestType::Event {
                    self.event(Reply { identity, req, out }, &cr, &mut session, now, rec);
                    session.deadline = now + i64::from(self.linger_s.load(Relaxed));
                    self.record_usage(
                        rec,
                        cr.session_id,
                        &session,
                        &session.services,
                        now,
                        "event",
                        false,
                    );
                } else {
                    self.session_step(Reply { identity, req, out }, &cr, &mut session, now, rec);
                }
                session.last_answer = out[start..].to_vec();
                if session.terminated {
                    shard.end(cr.session_id, session);
                } else {
                    shard.open.insert(cr.session_id.into(), Box::new(session));
                }
            }
            RequestType::Update | RequestType::Termination => {
                let Some(session) = shard.open.get_mut(cr.session_id) else {
                    let e = DiameterError::new(
                        ResultCode::UnknownSessionId,
                        "no credit-control session with this Session-Id",
                    );
                    return identity.write_error_answer(out, req, &e);
                };
                session.last_number = cr.request_number;
                session.last_type = cr.request_type as u8;
                let before = self.usage_interim.then(|| session.services.clone());
                self.session_step(Reply { identity, req, out }, &cr, session, now, rec);
                session.last_answer = out[start..].to_vec();
                if session.terminated {
                    log_usage(cr.session_id, session, now, "terminated");
                    self.record_usage(
                        rec,
                        cr.session_id,
                        session,
                        &session.services,
                        now,
                        "terminated",
                        false,
                    );
                    if let Some(s) = shard.open.remove(cr.session_id) {
                        shard.end(cr.session_id, *s);
                    }
                } else if let Some(before) = before {
                    // Interim record: what this update reported.
                    let delta = usage_delta(&before, &session.services);
                    if !delta.is_empty() {
                        self.record_usage(
                            rec,
                            cr.session_id,
                            session,
                            &delta,
                            now,
                            "interim",
                            true,
                        );
                    }
                }
            }
        }
    }

    /// INITIAL, UPDATE or TERMINATION on a session: settle reported usage, then grant.
    fn session_step(
        &self,
        reply: Reply<'_>,
        cr: &CreditRequest,
        s: &mut Session,
        now: i64,
        rec: &mut Recorder,
    ) {
        let Reply { identity, req, out } = reply;
        let policies = self.policies.load();
        let policy = policy_of(&policies, s.account.tree);
        let terminating = cr.request_type == RequestType::Termination;
        let mut answers = Vec::with_capacity(cr.mscc.len());
        for m in &cr.mscc {
            self.settle(s, m, policy, now, rec);
            let mut a = MsccAnswer::new(m.rating_group, m.service_identifier, ResultCode::Success);
            if m.rating_group
                .is_some_and(|rg| policy.denied_rating_groups.contains(&rg))
            {
                a.result = ResultCode::EndUserServiceDenied;
            } else if !terminating && !m.is_final() {
                self.grant(s, m, now, &mut a, rec);
            }
            answers.push(a);
        }
        if terminating {
            // Anything not reported is returned.
            for h in s.held.drain(..) {
                rec.release(h.id, s.account, h.unit, h.reserved, now);
            }
            s.terminated = true;
            s.deadline = now + i64::from(self.linger_s.load(Relaxed));
        } else {
            s.deadline = now
                + i64::from(policy.validity_time_s)
                + i64::from(self.reservation_grace_s.load(Relaxed));
        }
        let result = command_result(&answers, cr.multiple_services);
        write_cca(
            identity,
            out,
            req,
            result,
            &answers,
            cr.multiple_services,
            &EventAnswer::default(),
        );
    }

    /// Charges the usage an MSCC reports against what was held for its service, and returns
    /// what is left of the reservation.
    fn settle(&self, s: &mut Session, m: &Mscc, policy: &Policy, now: i64, rec: &mut Recorder) {
        let key = (m.rating_group, m.service_identifier);
        let mut held: Vec<Held> = Vec::new();
        s.held.retain(|h| {
            let mine = (h.rating_group, h.service_identifier) == key;
            if mine {
                held.push(*h);
            }
            !mine
        });
        // Every kind of unit reported is charged; the reservation of that kind is settled by
        // the first report and what is left of it goes back.
        let mut used = [0u64; 3];
        for u in &m.used {
            used[0] = used[0].saturating_add(u.units.octets().unwrap_or(0));
            used[1] = used[1].saturating_add(u64::from(u.units.time.unwrap_or(0)));
            used[2] = used[2].saturating_add(u.units.events.unwrap_or(0));
        }
        let tariff = policy.tariff.as_ref().and_then(|t| t.per_octet());
        for (i, unit) in [Unit::Octets, Unit::Seconds, Unit::Events]
            .into_iter()
            .enumerate()
        {
            let reserved_unit = if tariff.is_some() && unit == Unit::Octets {
                Unit::Money
            } else {
                unit
            };
            let reserved: u64 = held
                .iter()
                .filter(|h| h.unit == reserved_unit)
                .map(|h| h.reserved)
                .sum();
            // One reservation per service and unit: the grant replaced any earlier one.
            let id = held
                .iter()
                .find(|h| h.unit == reserved_unit)
                .map_or(0, |h| h.id);
            if used[i] == 0 && reserved == 0 {
                continue;
            }
            match (tariff, unit) {
                (Some(price), Unit::Octets) => {
                    let money = rec.commit_rated(id, s.account, reserved, used[i], price, now);
                    s.charge(key, unit_index(Unit::Money), money);
                }
                _ => rec.commit(id, s.account, unit, reserved, used[i], now),
            }
            s.charge(key, i, used[i]);
        }
        // Reservations of a kind not reported (none here) would be released; a money
        // reservation with no octets reported was settled above with used = 0.
    }

    /// Reserves the next grant for an MSCC.
    fn grant(&self, s: &mut Session, m: &Mscc, now: i64, a: &mut MsccAnswer, rec: &mut Recorder) {
        let Some(requested) = &m.requested else {
            return;
        };
        let policies = self.policies.load();
        let policy = policy_of(&policies, s.account.tree);
        let expires = now
            + i64::from(policy.validity_time_s)
            + i64::from(self.reservation_grace_s.load(Relaxed));
        let unit = requested_unit(requested);
        let want = requested_amount(requested, unit)
            .unwrap_or(u64::MAX)
            .min(slice(policy, unit));
        let tariff = policy.tariff.as_ref().and_then(|t| t.per_octet());
        let (granted, reserved, last, id) = match (tariff, unit) {
            (Some((num, den)), Unit::Octets) => {
                // Money accounts: reserve the money the octets cost, grant what it buys.
                let money =
                    u64::try_from((u128::from(want) * num).div_ceil(den)).unwrap_or(u64::MAX);
                let (g, id) = rec.reserve(s.account, Unit::Money, money, now, expires);
                // One unit less than bought, so that rounding up when it is charged stays
                // inside the reservation.
                let octets = if g.granted == money {
                    want
                } else {
                    u64::try_from(u128::from(g.granted.saturating_sub(1)) * den / num).unwrap_or(0)
                };
                if octets == 0 && g.granted > 0 {
                    rec.release(id, s.account, Unit::Money, g.granted, now);
                    (0, 0, true, 0)
                } else {
                    (octets, g.granted, g.last, id)
                }
            }
            (Some(_), _) => {
                a.result = ResultCode::RatingFailed;
                return;
            }
            (None, _) => {
                let (g, id) = rec.reserve(s.account, unit, want, now, expires);
                (g.granted, g.granted, g.last, id)
            }
        };
        if granted == 0 {
            a.result = ResultCode::CreditLimitReached;
            return;
        }
        // One more at a time: a Vec would round up to four, and a million sessions each
        // holding one reservation pay for that.
        s.held.reserve_exact(1);
        s.held.push(Held {
            id,
            rating_group: m.rating_group,
            service_identifier: m.service_identifier,
            unit: if tariff.is_some() { Unit::Money } else { unit },
            reserved,
            granted,
            expires,
        });
        a.granted = Some((unit, granted));
        a.validity_time = Some(policy.validity_time_s);
        let threshold = granted.saturating_mul(u64::from(policy.threshold_percent)) / 100;
        a.threshold = Some(u32::try_from(threshold).unwrap_or(u32::MAX));
        if policy.quota_holding_time_s > 0 {
            a.quota_holding_time = Some(policy.quota_holding_time_s);
        }
        if last {
            a.final_unit = Some(policy.final_unit_action.clone());
        }
    }

    /// EVENT requests (RFC 4006 §6.3 - §6.5): one-shot debit, refund, balance check, price.
    fn event(
        &self,
        reply: Reply<'_>,
        cr: &CreditRequest,
        s: &mut Session,
        now: i64,
        rec: &mut Recorder,
    ) {
        let Reply { identity, req, out } = reply;
        let policies = self.policies.load();
        let policy = policy_of(&policies, s.account.tree);
        let tariff = policy.tariff.as_ref().and_then(|t| t.per_octet());
        let action = cr
            .requested_action
            .unwrap_or(RequestedAction::DirectDebiting);
        let mut answers = Vec::new();
        let mut extra = EventAnswer::default();
        let mut result = ResultCode::Success;
        for m in &cr.mscc {
            let requested = m.requested.unwrap_or_default();
            let unit = requested_unit(&requested);
            let amount = requested_amount(&requested, unit).unwrap_or(1);
            // Money accounts count octets as money.
            let (ledger_unit, ledger_amount) = match (tariff, unit) {
                (Some((num, den)), Unit::Octets) => (
                    Unit::Money,
                    u64::try_from((u128::from(amount) * num).div_ceil(den)).unwrap_or(u64::MAX),
                ),
                (Some(_), _) => {
                    result = ResultCode::RatingFailed;
                    answers.push(MsccAnswer::new(
                        m.rating_group,
                        m.service_identifier,
                        ResultCode::RatingFailed,
                    ));
                    continue;
                }
                (None, _) => (unit, amount),
            };
            let mut a = MsccAnswer::new(m.rating_group, m.service_identifier, ResultCode::Success);
            match action {
                RequestedAction::DirectDebiting => {
                    // All or nothing: an event is not delivered in part.
                    let (g, id) = rec.reserve(s.account, ledger_unit, ledger_amount, now, now);
                    if g.granted < ledger_amount {
                        if id != 0 {
                            rec.release(id, s.account, ledger_unit, g.granted, now);
                        }
                        a.result = ResultCode::CreditLimitReached;
                        result = ResultCode::CreditLimitReached;
                    } else {
                        let service = (m.rating_group, m.service_identifier);
                        match (tariff, unit) {
                            (Some(price), Unit::Octets) => {
                                let money =
                                    rec.commit_rated(id, s.account, g.granted, amount, price, now);
                                s.charge(service, unit_index(Unit::Octets), amount);
                                s.charge(service, unit_index(Unit::Money), money);
                            }
                            _ => {
                                rec.commit(
                                    id,
                                    s.account,
                                    ledger_unit,
                                    g.granted,
                                    ledger_amount,
                                    now,
                                );
                                s.charge(service, unit_index(ledger_unit), ledger_amount);
                            }
                        }
                        a.granted = Some((unit, amount));
                    }
                }
                RequestedAction::RefundAccount => {
                    rec.refund(s.account, ledger_unit, ledger_amount, now);
                    a.granted = Some((unit, amount));
                }
                RequestedAction::CheckBalance => {
                    let free = self
                        .ledger
                        .lock(s.account.tree)
                        .map_or(0, |mut t| t.headroom(s.account.node, ledger_unit, now));
                    extra.check_balance = Some(if free >= ledger_amount { 0 } else { 1 });
                }
                RequestedAction::PriceEnquiry => match (&policy.tariff, unit) {
                    (Some(t), Unit::Octets) => {
                        // Exact: price × amount / per_octets, as Value-Digits × 10^Exponent.
                        let cost = t.price * rust_decimal::Decimal::from(amount)
                            / rust_decimal::Decimal::from(t.per_octets);
                        let cost = cost.normalize();
                        let digits = i64::try_from(cost.mantissa()).unwrap_or(i64::MAX);
                        extra.cost = Some((digits, -(cost.scale() as i32), t.currency_code));
                    }
                    _ => {
                        a.result = ResultCode::RatingFailed;
                        result = ResultCode::RatingFailed;
                    }
                },
            }
            answers.push(a);
        }
        write_cca(
            identity,
            out,
            req,
            result,
            &answers,
            cr.multiple_services,
            &extra,
        );
    }

    /// Returns expired reservations to the pool and closes sessions nobody reported on in time;
    /// forgets terminated sessions once their answers need not be kept.
    pub fn supervise(&self, now: i64) -> Supervision {
        self.supervise_shards(now, 0..self.sessions.shard_count())
    }

    /// Reservations found open at the last start and not yet expired.
    pub fn outstanding_count(&self) -> usize {
        self.outstanding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Session shards per supervision pass of [`Engine::supervise_part`].
    pub fn supervision_parts(&self) -> usize {
        SUPERVISION_PARTS
    }

    /// One part of a supervision pass: the sessions of shards `part`·n/parts up to the next
    /// part. Spreading a pass over a second keeps its work (a walk of every session) from
    /// stalling requests all at once.
    pub fn supervise_part(&self, now: i64, part: usize) -> Supervision {
        let n = self.sessions.shard_count();
        let each = n.div_ceil(SUPERVISION_PARTS);
        let first = (part % SUPERVISION_PARTS) * each;
        self.supervise_shards(now, first..(first + each).min(n))
    }

    fn supervise_shards(&self, now: i64, shards: std::ops::Range<usize>) -> Supervision {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let mut sup = Supervision::default();
        let mut rec = Recorder::new(&self.ledger, &self.next_reservation);
        {
            // Reservations open at the last stop: spent until they expire, then returned.
            let mut left = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
            left.retain(|o| {
                let keep = o.expires > now;
                if !keep {
                    rec.release(o.id, o.account, o.unit, o.amount, now);
                    sup.expired_reservations += 1;
                }
                keep
            });
        }
        for i in shards {
            let mut shard = self.sessions.lock_index(i);
            shard.expire_ended(now);
            shard.open.retain(|id, s| {
                let account = s.account;
                let before = s.held.len();
                s.held.retain(|h| {
                    let keep = h.expires > now;
                    if !keep {
                        rec.release(h.id, account, h.unit, h.reserved, now);
                    }
                    keep
                });
                sup.expired_reservations += before - s.held.len();
                if now < s.deadline {
                    sup.held_reservations += s.held.len();
                    return true;
                }
                if !s.terminated {
                    for h in s.held.drain(..) {
                        rec.release(h.id, account, h.unit, h.reserved, now);
                    }
                    log_usage(id, s, now, "supervision timeout");
                    self.record_usage(
                        &mut rec,
                        id,
                        s,
                        &s.services,
                        now,
                        "supervision timeout",
                        false,
                    );
                    sup.closed_sessions += 1;
                }
                false
            });
        }
        self.journal_ops(now, rec.ops, rec.usage);
        sup
    }
}

/// What each service used between two snapshots of a session's usage.
fn usage_delta(before: &[ServiceUsage], after: &[ServiceUsage]) -> Vec<ServiceUsage> {
    after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| {
                (b.rating_group, b.service_identifier) == (a.rating_group, a.service_identifier)
            });
            let mut d = *a;
            for k in 0..4 {
                d.units[k] = a.units[k].saturating_sub(b.map_or(0, |b| b.units[k]));
            }
            (d.units != [0; 4]).then_some(d)
        })
        .collect()
}

/// The command-level Result-Code: success if any service succeeded; otherwise the services'
/// common failure (4012 when nothing could be granted anywhere).
fn command_result(answers: &[MsccAnswer], multiple_services: bool) -> ResultCode {
    if answers.is_empty() || answers.iter().any(|a| a.result == ResultCode::Success) {
        return ResultCode::Success;
    }
    if !multiple_services || answers.iter().all(|a| a.result == answers[0].result) {
        return answers[0].result;
    }
    ResultCode::CreditLimitReached
}

/// Requests answered together; see [`Engine::batch`]. A snapshot waits until the batch is
/// finished, so it never sees a ledger change whose record is not queued.
pub struct CcrBatch<'e> {
    engine: &'e Engine,
    _gate: RwLockReadGuard<'e, ()>,
    rec: Recorder<'e>,
    now: i64,
}

impl CcrBatch<'_> {
    /// Answers one CCR (already checked by the base protocol and the dictionary) into `out`.
    pub fn credit_control(&mut self, identity: &LocalIdentity, req: &Message, out: &mut BytesMut) {
        if let Some(j) = &self.engine.journal {
            if j.admit().is_err() {
                // The writer is behind: refuse before anything is charged (RFC 6733 3004).
                let e = DiameterError::new(
                    ResultCode::TooBusy,
                    "the charging journal is behind; try again",
                );
                identity.write_error_answer(out, req, &e);
                return;
            }
        }
        self.engine
            .answer_ccr(identity, req, self.now, out, &mut self.rec);
    }

    /// Queues the batch's journal records; returns the sequence its answers must wait for
    /// (per the durability mode), or 0.
    pub fn finish(self) -> u64 {
        let CcrBatch {
            engine, rec, now, ..
        } = self;
        engine.journal_ops(now, rec.ops, rec.usage)
    }
}

/// Appends `v` as the inside of a JSON string (RFC 8259 §7).
fn json_escape(out: &mut String, v: &str) {
    use std::fmt::Write as _;
    for ch in v.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// Sends the cached answer again with the retransmission's identifiers.
fn replay(out: &mut BytesMut, answer: &[u8], req: &Message) {
    let start = out.len();
    out.extend_from_slice(answer);
    if out.len() >= start + 20 {
        out[start + 12..start + 16].copy_from_slice(&req.header.hop_by_hop.to_be_bytes());
        out[start + 16..start + 20].copy_from_slice(&req.header.end_to_end.to_be_bytes());
    }
}

/// One debug line per session end (one per session: too many for info at full load; the usage
/// records have them all, and supervision logs a count at info).
fn log_usage(session_id: &str, s: &Session, now: i64, outcome: &str) {
    let [octets, seconds, events, money] = s.totals();
    debug!(
        session_id,
        subscriber = &*s.subscriber,
        octets,
        seconds,
        events,
        money,
        duration_s = now - s.started,
        outcome,
        "usage"
    );
}

#[cfg(test)]
mod tests {
    use super::json_escape;

    #[test]
    fn escaped_strings_read_back_as_json() {
        for v in ["plain", "q\"uote", "back\\slash", "ctl\u{1}\n\t", "ünï;1;2"] {
            let mut s = String::from("\"");
            json_escape(&mut s, v);
            s.push('"');
            assert_eq!(serde_json::from_str::<String>(&s).unwrap(), v);
        }
    }
}
