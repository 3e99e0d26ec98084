//! The credit-control server (RFC 4006 §5 and §6, TS 32.299 §6.3): turns a CCR into ledger
//! operations and a CCA. Sans-IO: `now` (Unix seconds) comes from the caller.

use bytes::BytesMut;
use tracing::{debug, warn};

use ocf_protocol::base::LocalIdentity;
use ocf_protocol::codes::{ResultCode, avp as c};
use ocf_protocol::error::DiameterError;
use ocf_protocol::message::Message;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use arc_swap::ArcSwap;

use crate::ledger::{AccountRef, Ledger, Unit, unit_index};
use crate::ops::Op;

use super::answer::{EventAnswer, MsccAnswer, write_cca};
use super::recorder::{Outstanding, Recorder, Recovered};
use super::request::{CreditRequest, Mscc, RequestType, RequestedAction, Units};
use super::session::{Held, ServiceUsage, Session, Sessions};
use super::tenant::{Directory, Policy, SubscriptionType, Unmetered};

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
    /// Whether ledger changes are persisted (a journal follows them): sessions are then
    /// recorded with every request, so a restart resumes them.
    journaled: bool,
    /// Held (shared) by every request from its first ledger change until its records are
    /// queued; a snapshot holds it exclusively, so the ledger it copies is exactly the effect
    /// of the records up to the sequence it names.
    pub(super) gate: RwLock<()>,
    /// Usage records: none, one per session end, or (interim) one per update too.
    usage: Option<UsageRecords>,
    next_reservation: AtomicU64,
    /// Reservations found open in the journal at start: counted until they expire.
    outstanding: Mutex<Vec<Outstanding>>,
    /// Origin-Hosts of sessions, shared by their sessions.
    hosts: RwLock<std::collections::HashSet<Arc<str>>>,
    /// Usage reports refused as impossibly large (see [`Policy::max_report`]).
    pub reports_refused: AtomicU64,
}

/// The most services (Rating-Group and Service-Identifier) one session may use.
const MAX_SERVICES: usize = 1024;

/// Distinct Origin-Hosts kept shared; past this, each session keeps its own copy.
const MAX_HOSTS: usize = 4096;

/// One MSCC of an EVENT request: what it asks in service units and in ledger units.
#[derive(Clone, Copy)]
struct EventItem {
    unit: Unit,
    amount: u64,
    ledger_unit: Unit,
    ledger_amount: u64,
    /// The tariff, for octets charged as money.
    price: Option<(u128, u128)>,
}

/// Every MSCC of an event that fails as a whole carries the failure.
fn fail_all(answers: &mut [MsccAnswer], result: ResultCode) {
    for a in answers {
        a.result = result;
    }
}

/// The kind of service unit a reservation in `unit` was granted for: money reservations buy
/// octets.
fn service_kind(unit: Unit) -> Unit {
    match unit {
        Unit::Money => Unit::Octets,
        u => u,
    }
}

/// `e` with the AVP `found` as its Failed-AVP, inside its MSCC if it has one (RFC 6733 §7.5).
fn failed_in(
    e: DiameterError,
    found: Option<(
        Option<ocf_protocol::avp::Avp<'_>>,
        ocf_protocol::avp::Avp<'_>,
    )>,
) -> DiameterError {
    match found {
        Some((Some(group), avp)) => group.wrap_error(e.with_avp(avp.to_bytes())),
        Some((None, avp)) => e.with_avp(avp.to_bytes()),
        None => e,
    }
}

/// A copy of the request's AVP `code` (empty if absent), for Failed-AVP.
fn copy_of(req: &Message, code: ocf_protocol::codes::AvpCode) -> bytes::Bytes {
    req.find(code).map(|a| a.to_bytes()).unwrap_or_default()
}

/// The `j`th `code` AVP (a Used- or Requested-Service-Unit) of the `i`th MSCC as it came, and
/// that MSCC (none for a request without MSCCs, whose units are at command level), for
/// Failed-AVP.
fn service_unit<'m>(
    req: &'m Message,
    cr: &CreditRequest,
    i: usize,
    code: ocf_protocol::codes::AvpCode,
    j: usize,
) -> Option<(
    Option<ocf_protocol::avp::Avp<'m>>,
    ocf_protocol::avp::Avp<'m>,
)> {
    if cr.multiple_services {
        let group = req.find_all(c::MULTIPLE_SERVICES_CREDIT_CONTROL).nth(i)?;
        let unit = group.children().filter(|a| a.is(code)).nth(j)?;
        Some((Some(group), unit))
    } else {
        Some((None, req.find_all(code).nth(j)?))
    }
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
            journaled: false,
            gate: RwLock::new(()),
            usage: None,
            next_reservation: AtomicU64::new(1),
            outstanding: Mutex::new(Vec::new()),
            hosts: RwLock::new(Default::default()),
            reports_refused: AtomicU64::new(0),
        }
    }

    /// Records sessions with every request from now on (a journal persists the ops), and
    /// continues after what `recovered` found: its sessions are open again (or linger, if they
    /// ended less than the linger time before `now`), holding the reservations they held, and
    /// the other open reservations count until they expire.
    pub fn resume(mut self, recovered: Recovered, now: i64) -> Self {
        self.journaled = true;
        self.next_reservation = AtomicU64::new(recovered.next_reservation);
        let mut open: std::collections::HashMap<u64, Outstanding> = recovered
            .outstanding
            .into_iter()
            .map(|o| (o.id, o))
            .collect();
        for (_, mut r) in recovered.sessions {
            if r.ended {
                if r.session.deadline <= now {
                    continue;
                }
            } else {
                // What the session held and the journal still has open; anything else was
                // settled or expired after its last request.
                r.session.held.retain(|h| open.remove(&h.id).is_some());
            }
            self.sessions.lock(&r.session_id).restore(r);
        }
        let mut outstanding: Vec<Outstanding> = open.into_values().collect();
        outstanding.sort_by_key(|o| o.id);
        self.outstanding = Mutex::new(outstanding);
        self
    }

    /// Takes new charging settings (a reload): they apply to grants and ends from now on.
    pub fn set_charging_config(&self, config: ChargingConfig) {
        self.reservation_grace_s
            .store(config.reservation_grace_s, Relaxed);
        self.linger_s.store(config.linger_s, Relaxed);
    }

    /// Records usage ([`Op::Usage`], one JSON object per session end; per update too if
    /// `interim`).
    pub fn with_usage_records(mut self, interim: bool) -> Self {
        self.usage = Some(UsageRecords { interim });
        self
    }

    /// Whether usage records are made, and per update too.
    pub fn usage_records(&self) -> Option<bool> {
        self.usage.map(|u| u.interim)
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
        let mut own = String::new();
        let line = &mut own;
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
        line.push_str("\"}");
        rec.ops.push(Op::Usage(own.into_bytes()));
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
    /// Returns what must be persisted, for the store to hand over.
    pub fn credit_control(
        &self,
        identity: &LocalIdentity,
        req: &Message,
        now: i64,
        out: &mut BytesMut,
    ) -> Pending<'_> {
        let mut batch = self.batch(now);
        batch.credit_control(identity, req, out);
        batch.finish()
    }

    /// Starts answering the requests of one read together: they share one hold of the
    /// snapshot gate and one hand-over to the journal.
    pub fn batch(&self, now: i64) -> CcrBatch<'_> {
        CcrBatch {
            engine: self,
            gate: self.gate.read().unwrap_or_else(|p| p.into_inner()),
            rec: Recorder::new(&self.ledger, &self.next_reservation),
            now,
        }
    }

    /// Runs `f` with every request and change stopped (the snapshot gate held exclusively),
    /// on the state as it stands: the store takes a snapshot this way, so the ledger it copies
    /// is exactly the effect of the ops handed over so far.
    pub fn frozen<R>(&self, f: impl FnOnce(&Frozen<'_>) -> R) -> R {
        let _stop = self.gate.write().unwrap_or_else(|p| p.into_inner());
        // Reservations still open, in sessions and from before the last start, and the
        // sessions themselves, open or lingering.
        let mut outstanding = self
            .outstanding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut sessions = Vec::new();
        for i in 0..self.sessions.shard_count() {
            let shard = self.sessions.lock_index(i);
            for (id, s) in &shard.open {
                outstanding.extend(s.held.iter().map(|h| Outstanding {
                    id: h.id,
                    account: s.account,
                    unit: h.unit,
                    amount: h.reserved,
                    expires: h.expires,
                }));
                let mut data = Vec::with_capacity(128 + s.last_answer.len());
                super::session::encode_state(&mut data, id, s, false);
                sessions.push(data);
            }
            for (id, e) in &shard.ended {
                let mut data = Vec::with_capacity(128 + e.last_answer.len());
                super::session::encode_ended(&mut data, id, e);
                sessions.push(data);
            }
        }
        f(&Frozen {
            ledger: &self.ledger,
            outstanding,
            sessions,
            next_reservation: self.next_reservation.load(Relaxed),
            changes: self.changes_applied(),
        })
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
        if let Some(e) = cr.duplicate_service(req) {
            return identity.write_error_answer(out, req, &e);
        }
        let mut shard = self.sessions.lock(cr.session_id);
        let seen = match shard.open.get(cr.session_id) {
            Some(s) => Some((
                s.origin_host.clone(),
                s.last_number,
                s.last_type,
                &s.last_answer[..],
                false,
            )),
            None => shard.ended.get(cr.session_id).map(|e| {
                (
                    e.origin_host.clone(),
                    e.last_number,
                    e.last_type,
                    &e.last_answer[..],
                    true,
                )
            }),
        };
        if let Some((origin, last_number, last_type, last_answer, ended)) = seen {
            if !origin.eq_ignore_ascii_case(cr.origin_host) {
                // Another client's session: Session-Ids are unique to the host that made them
                // (RFC 6733 §8.8), so this is neither a retransmission nor this host's session.
                let e = match cr.request_type {
                    RequestType::Update | RequestType::Termination => DiameterError::new(
                        ResultCode::UnknownSessionId,
                        "no credit-control session with this Session-Id from this Origin-Host",
                    ),
                    RequestType::Initial | RequestType::Event => DiameterError::new(
                        ResultCode::InvalidAvpValue,
                        "this Session-Id belongs to a session of another Origin-Host",
                    )
                    .with_avp(copy_of(req, c::SESSION_ID)),
                };
                return identity.write_error_answer(out, req, &e);
            }
            if last_number == cr.request_number && last_type == cr.request_type as u8 {
                // A retransmission (T flag or not): the same answer, charged once.
                rec.replayed = true;
                if last_answer.is_empty() {
                    // Too large to journal, so not kept across a restart.
                    let e = DiameterError::new(
                        ResultCode::UnableToComply,
                        "the answer to this request was not kept across a restart",
                    );
                    return identity.write_error_answer(out, req, &e);
                }
                return replay(out, last_answer, req, identity);
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
                .with_avp(copy_of(req, c::CC_REQUEST_NUMBER));
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
                    origin_host: self.intern_host(cr.origin_host),
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
                } else if let Err(e) =
                    self.session_step(Reply { identity, req, out }, &cr, &mut session, now, rec)
                {
                    // Refused before anything was charged: no session.
                    return identity.write_error_answer(out, req, &e);
                }
                session.last_answer = out[start..].to_vec();
                if self.journaled {
                    rec.session(cr.session_id, &session, session.terminated);
                }
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
                let before = self
                    .usage
                    .is_some_and(|u| u.interim)
                    .then(|| session.services.clone());
                if let Err(e) =
                    self.session_step(Reply { identity, req, out }, &cr, session, now, rec)
                {
                    // Refused whole, nothing charged; the session stays as it was, and a
                    // retransmission gets the same refusal.
                    identity.write_error_answer(out, req, &e);
                    session.last_answer = out[start..].to_vec();
                    if self.journaled {
                        rec.session(cr.session_id, session, false);
                    }
                    return;
                }
                session.last_answer = out[start..].to_vec();
                if self.journaled {
                    rec.session(cr.session_id, session, session.terminated);
                }
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

    /// The price per octet that rates this account's data: the policy's tariff, if a money
    /// limit on the account's path counts what it rates. Without one, octets count as octets
    /// (rated money nobody counts would be usage counted nowhere).
    fn tariff_for(&self, policy: &Policy, account: AccountRef) -> Option<(u128, u128)> {
        policy
            .tariff
            .as_ref()
            .and_then(|t| t.per_octet())
            .filter(|_| self.ledger.limited(account, Unit::Money))
    }

    /// The Origin-Host as a shared string: sessions of one gateway share one copy.
    fn intern_host(&self, host: &str) -> Arc<str> {
        if let Some(h) = self
            .hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
        {
            return h.clone();
        }
        let mut hosts = self.hosts.write().unwrap_or_else(|p| p.into_inner());
        // Bounded: a host that sends garbage names cannot grow this without limit.
        if hosts.len() >= MAX_HOSTS {
            return Arc::from(host);
        }
        if let Some(h) = hosts.get(host) {
            return h.clone();
        }
        let h: Arc<str> = Arc::from(host);
        hosts.insert(h.clone());
        h
    }

    /// Refuses a request in which one MSCC reports more than a gateway could have used (the
    /// policy's `max_report`, far above any grant). Checked before anything is charged.
    fn check_reports(
        &self,
        cr: &CreditRequest,
        req: &Message,
        s: &Session,
        policy: &Policy,
    ) -> Result<(), DiameterError> {
        const KINDS: [Unit; 3] = [Unit::Octets, Unit::Seconds, Unit::Events];
        for (i, m) in cr.mscc.iter().enumerate() {
            let mut total = [0u64; 3];
            for (j, u) in m.used.iter().enumerate() {
                let this = [
                    u.units.octets().unwrap_or(0),
                    u64::from(u.units.time.unwrap_or(0)),
                    u.units.events.unwrap_or(0),
                ];
                for k in 0..3 {
                    total[k] = total[k].saturating_add(this[k]);
                    if total[k] <= policy.max_report[k] {
                        continue;
                    }
                    warn!(
                        session_id = cr.session_id,
                        subscriber = &*s.subscriber,
                        unit = ?KINDS[k],
                        reported = total[k],
                        bound = policy.max_report[k],
                        "usage report refused: more than a gateway could have used"
                    );
                    self.reports_refused.fetch_add(1, Relaxed);
                    let e = DiameterError::new(
                        ResultCode::InvalidAvpValue,
                        "Used-Service-Unit reports more than a gateway could have used",
                    );
                    return Err(failed_in(
                        e,
                        service_unit(req, cr, i, c::USED_SERVICE_UNIT, j),
                    ));
                }
            }
        }
        Ok(())
    }

    /// INITIAL, UPDATE or TERMINATION on a session: settle reported usage, then grant. `Err`:
    /// refused whole before anything was charged.
    fn session_step(
        &self,
        reply: Reply<'_>,
        cr: &CreditRequest,
        s: &mut Session,
        now: i64,
        rec: &mut Recorder,
    ) -> Result<(), DiameterError> {
        let Reply { identity, req, out } = reply;
        let policies = self.policies.load();
        let policy = policy_of(&policies, s.account.tree);
        self.check_reports(cr, req, s, policy)?;
        // A session keeps (and journals) what each service used: their number is bounded.
        let new_services = cr
            .mscc
            .iter()
            .filter(|m| {
                !s.services.iter().any(|u| {
                    (u.rating_group, u.service_identifier) == (m.rating_group, m.service_identifier)
                })
            })
            .count();
        if s.services.len() + new_services > MAX_SERVICES {
            return Err(DiameterError::new(
                ResultCode::UnableToComply,
                "a session may use at most 1024 services (Rating-Group and Service-Identifier)",
            ));
        }
        let terminating = cr.request_type == RequestType::Termination;
        // Looked up once for the request: it takes the tree's lock.
        let tariff = self.tariff_for(policy, s.account);
        // Every report is settled before anything is granted, so that no settlement can
        // return what this request has just granted.
        for m in &cr.mscc {
            self.settle(s, m, tariff, now, rec);
        }
        let mut answers = Vec::with_capacity(cr.mscc.len());
        for m in &cr.mscc {
            let mut a = MsccAnswer::new(m.rating_group, m.service_identifier, ResultCode::Success);
            if m.rating_group
                .is_some_and(|rg| policy.denied_rating_groups.contains(&rg))
            {
                a.result = ResultCode::EndUserServiceDenied;
            } else if !terminating && !m.is_final() {
                self.grant(s, m, policy, tariff, now, &mut a, rec);
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
        Ok(())
    }

    /// Charges the usage an MSCC reports and returns what the session held for that service.
    /// Each reservation is settled in the unit it was granted in (octets against an octets
    /// grant, money at the tariff against a money grant), whatever the policy says now, so a
    /// policy changed mid-session neither leaks nor double-counts a reservation; usage that
    /// nothing was reserved for is charged as the policy says now (`tariff`: see
    /// [`Self::tariff_for`]).
    fn settle(
        &self,
        s: &mut Session,
        m: &Mscc,
        tariff: Option<(u128, u128)>,
        now: i64,
        rec: &mut Recorder,
    ) {
        let key = (m.rating_group, m.service_identifier);
        let mut held: Vec<Held> = Vec::new();
        s.held.retain(|h| {
            let mine = (h.rating_group, h.service_identifier) == key;
            if mine {
                held.push(*h);
            }
            !mine
        });
        let mut used = [0u64; 3];
        for u in &m.used {
            used[0] = used[0].saturating_add(u.units.octets().unwrap_or(0));
            used[1] = used[1].saturating_add(u64::from(u.units.time.unwrap_or(0)));
            used[2] = used[2].saturating_add(u.units.events.unwrap_or(0));
        }
        let account = s.account;
        for (k, kind) in [Unit::Octets, Unit::Seconds, Unit::Events]
            .into_iter()
            .enumerate()
        {
            // The report is charged once, against the first reservation of its kind.
            let mut charged = used[k] == 0;
            for h in held.iter().filter(|h| service_kind(h.unit) == kind) {
                if charged {
                    rec.release(h.id, account, h.unit, h.reserved, now);
                    continue;
                }
                charged = true;
                match (h.unit, tariff) {
                    (Unit::Money, Some(price)) => {
                        let money =
                            rec.commit_rated(h.id, account, h.reserved, used[k], price, now);
                        s.charge(key, unit_index(Unit::Money), money);
                    }
                    (Unit::Money, None) => {
                        // The tariff is gone: the money goes back, the octets count as octets.
                        rec.release(h.id, account, Unit::Money, h.reserved, now);
                        rec.commit(0, account, kind, 0, used[k], now);
                    }
                    (unit, _) => rec.commit(h.id, account, unit, h.reserved, used[k], now),
                }
                s.charge(key, k, used[k]);
            }
            if !charged {
                match (kind, tariff) {
                    (Unit::Octets, Some(price)) => {
                        let money = rec.commit_rated(0, account, 0, used[k], price, now);
                        s.charge(key, unit_index(Unit::Money), money);
                    }
                    _ => rec.commit(0, account, kind, 0, used[k], now),
                }
                s.charge(key, k, used[k]);
            }
        }
    }

    /// Reserves the next grant for an MSCC (`tariff`: see [`Self::tariff_for`]).
    #[allow(clippy::too_many_arguments)]
    fn grant(
        &self,
        s: &mut Session,
        m: &Mscc,
        policy: &Policy,
        tariff: Option<(u128, u128)>,
        now: i64,
        a: &mut MsccAnswer,
        rec: &mut Recorder,
    ) {
        let Some(requested) = &m.requested else {
            return;
        };
        let expires = now
            + i64::from(policy.validity_time_s)
            + i64::from(self.reservation_grace_s.load(Relaxed));
        let unit = requested_unit(requested);
        // An empty or zero Requested-Service-Unit leaves the amount to the server
        // (RFC 4006 §8.18): the slice.
        let want = requested_amount(requested, unit)
            .filter(|&n| n > 0)
            .unwrap_or(u64::MAX)
            .min(slice(policy, unit));
        let price = match (tariff, unit) {
            (Some(p), Unit::Octets) => Some(p),
            _ => None,
        };
        let ledger_unit = if price.is_some() { Unit::Money } else { unit };
        // A tariff is only there where a money limit counts it; anything else must be counted
        // by a limit of its own unit. Nothing on the path counting it would be granting it
        // without bound.
        if price.is_none()
            && policy.unmetered == Unmetered::Refuse
            && !self.ledger.limited(s.account, ledger_unit)
        {
            a.result = ResultCode::RatingFailed;
            return;
        }
        let (granted, reserved, last, id) = match price {
            Some((num, den)) => {
                // Money accounts: reserve the money the octets cost, grant what it buys. Each
                // settlement charges at most ceil(octets × price), so floor(money / price)
                // octets always fit the money reserved.
                let money = u64::try_from(crate::ledger::cost(u128::from(want), (num, den)))
                    .unwrap_or(u64::MAX);
                let (g, id) = rec.reserve(s.account, Unit::Money, money, now, expires);
                let octets = if g.granted == money {
                    want
                } else {
                    u64::try_from(u128::from(g.granted) * den / num)
                        .unwrap_or(u64::MAX)
                        .min(want)
                };
                if octets == 0 && g.granted > 0 {
                    rec.release(id, s.account, Unit::Money, g.granted, now);
                    (0, 0, true, 0)
                } else {
                    (octets, g.granted, g.last, id)
                }
            }
            None => {
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
            unit: ledger_unit,
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
    /// A debit or refund of several MSCCs is all or nothing.
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
        let tariff = self.tariff_for(policy, s.account);
        let action = cr
            .requested_action
            .unwrap_or(RequestedAction::DirectDebiting);
        let mut answers = Vec::with_capacity(cr.mscc.len());
        let mut extra = EventAnswer::default();
        let mut result = ResultCode::Success;
        // Each MSCC in service units and in ledger units (money for a tariffed account's
        // octets); None where nothing can count it.
        let mut items: Vec<Option<EventItem>> = Vec::with_capacity(cr.mscc.len());
        for m in &cr.mscc {
            let requested = m.requested.unwrap_or_default();
            let unit = requested_unit(&requested);
            let amount = requested_amount(&requested, unit).unwrap_or(1);
            let (ledger_unit, ledger_amount) = match (tariff, unit) {
                (Some(price), Unit::Octets) => (
                    Unit::Money,
                    u64::try_from(crate::ledger::cost(u128::from(amount), price))
                        .unwrap_or(u64::MAX),
                ),
                _ => (unit, amount),
            };
            let metered =
                policy.unmetered == Unmetered::Grant || self.ledger.limited(s.account, ledger_unit);
            items.push(metered.then_some(EventItem {
                unit,
                amount,
                ledger_unit,
                ledger_amount,
                price: if ledger_unit == Unit::Money {
                    tariff
                } else {
                    None
                },
            }));
            answers.push(MsccAnswer::new(
                m.rating_group,
                m.service_identifier,
                ResultCode::Success,
            ));
        }
        let unrated = items.iter().any(Option::is_none);
        match action {
            RequestedAction::DirectDebiting if unrated => {
                result = ResultCode::RatingFailed;
                fail_all(&mut answers, result);
            }
            RequestedAction::DirectDebiting => {
                // All or nothing: an event is not delivered in part.
                let mut taken = Vec::with_capacity(items.len());
                let mut short = vec![false; items.len()];
                for (i, it) in items.iter().flatten().enumerate() {
                    let (g, id) =
                        rec.reserve(s.account, it.ledger_unit, it.ledger_amount, now, now);
                    short[i] = g.granted < it.ledger_amount;
                    taken.push((id, g.granted));
                }
                if short.iter().any(|&x| x) {
                    for ((id, granted), it) in taken.iter().zip(items.iter().flatten()) {
                        if *id != 0 {
                            rec.release(*id, s.account, it.ledger_unit, *granted, now);
                        }
                    }
                    result = ResultCode::CreditLimitReached;
                    fail_all(&mut answers, result);
                } else {
                    for (((id, granted), it), (m, a)) in taken
                        .iter()
                        .zip(items.iter().flatten())
                        .zip(cr.mscc.iter().zip(&mut answers))
                    {
                        let service = (m.rating_group, m.service_identifier);
                        match it.price {
                            Some(price) => {
                                let money = rec
                                    .commit_rated(*id, s.account, *granted, it.amount, price, now);
                                s.charge(service, unit_index(Unit::Octets), it.amount);
                                s.charge(service, unit_index(Unit::Money), money);
                            }
                            None => {
                                rec.commit(
                                    *id,
                                    s.account,
                                    it.ledger_unit,
                                    *granted,
                                    it.ledger_amount,
                                    now,
                                );
                                s.charge(service, unit_index(it.ledger_unit), it.ledger_amount);
                            }
                        }
                        a.granted = Some((it.unit, it.amount));
                    }
                }
            }
            RequestedAction::RefundAccount if unrated => {
                result = ResultCode::RatingFailed;
                fail_all(&mut answers, result);
            }
            RequestedAction::RefundAccount => {
                // A refund gives back at most what this account was charged this period, in
                // every unit it names, or nothing at all.
                let mut asked = [0u64; 4];
                for it in items.iter().flatten() {
                    let k = unit_index(it.ledger_unit);
                    asked[k] = asked[k].saturating_add(it.ledger_amount);
                }
                let too_much = {
                    let mut tree = self.ledger.lock(s.account.tree);
                    Unit::ALL.into_iter().find(|&u| {
                        asked[unit_index(u)] > 0
                            && tree
                                .as_mut()
                                .map_or(0, |t| t.refundable(s.account.node, u, now))
                                < asked[unit_index(u)]
                    })
                };
                if let Some(u) = too_much {
                    let culprit = items
                        .iter()
                        .position(|it| it.as_ref().is_some_and(|it| it.ledger_unit == u))
                        .unwrap_or(0);
                    let e = DiameterError::new(
                        ResultCode::InvalidAvpValue,
                        "the refund is more than this account was charged in the current period",
                    );
                    let e = failed_in(
                        e,
                        service_unit(req, cr, culprit, c::REQUESTED_SERVICE_UNIT, 0),
                    );
                    return identity.write_error_answer(out, req, &e);
                }
                for (it, a) in items.iter().flatten().zip(&mut answers) {
                    rec.refund(s.account, it.ledger_unit, it.ledger_amount, now);
                    a.granted = Some((it.unit, it.amount));
                }
            }
            RequestedAction::CheckBalance => {
                for (it, a) in items.iter().zip(&mut answers) {
                    match it {
                        Some(it) => {
                            let free = self
                                .ledger
                                .lock(s.account.tree)
                                .map_or(0, |mut t| t.headroom(s.account.node, it.ledger_unit, now));
                            extra.check_balance =
                                Some(if free >= it.ledger_amount { 0 } else { 1 });
                        }
                        None => {
                            a.result = ResultCode::RatingFailed;
                            result = ResultCode::RatingFailed;
                        }
                    }
                }
            }
            RequestedAction::PriceEnquiry => {
                for (m, a) in cr.mscc.iter().zip(&mut answers) {
                    let requested = m.requested.unwrap_or_default();
                    let unit = requested_unit(&requested);
                    let amount = requested_amount(&requested, unit).unwrap_or(1);
                    match (&policy.tariff, unit) {
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
                    }
                }
            }
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
    pub fn supervise(&self, now: i64) -> (Supervision, Pending<'_>) {
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
    /// Returns what it did and the ops to persist.
    pub fn supervise_part(&self, now: i64, part: usize) -> (Supervision, Pending<'_>) {
        let n = self.sessions.shard_count();
        let each = n.div_ceil(SUPERVISION_PARTS);
        let first = (part % SUPERVISION_PARTS) * each;
        self.supervise_shards(now, first..(first + each).min(n))
    }

    fn supervise_shards(
        &self,
        now: i64,
        shards: std::ops::Range<usize>,
    ) -> (Supervision, Pending<'_>) {
        let gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
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
                    if self.journaled {
                        rec.session_closed(id);
                    }
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
        let pending = Pending {
            ops: rec.ops,
            replayed: false,
            now,
            _gate: gate,
        };
        (sup, pending)
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
/// finished and its ops handed over, so it never sees a ledger change whose op is not queued.
pub struct CcrBatch<'e> {
    gate: RwLockReadGuard<'e, ()>,
    engine: &'e Engine,
    rec: Recorder<'e>,
    now: i64,
}

impl<'e> CcrBatch<'e> {
    /// Answers one CCR (already checked by the base protocol and the dictionary, and
    /// admitted by the store) into `out`.
    pub fn credit_control(&mut self, identity: &LocalIdentity, req: &Message, out: &mut BytesMut) {
        self.engine
            .answer_ccr(identity, req, self.now, out, &mut self.rec);
    }

    /// The batch's ops, for the store to hand over.
    pub fn finish(self) -> Pending<'e> {
        Pending {
            ops: self.rec.ops,
            replayed: self.rec.replayed,
            now: self.now,
            _gate: self.gate,
        }
    }
}

/// What a batch of requests or a supervision pass changed, to be persisted in this order. It
/// holds the requests' share of the snapshot gate: drop it once the ops are handed over.
#[must_use = "the ops must be handed to the store"]
pub struct Pending<'e> {
    ops: Vec<Op>,
    replayed: bool,
    now: i64,
    _gate: RwLockReadGuard<'e, ()>,
}

impl Pending<'_> {
    /// Takes the ops (the gate stays held until `self` is dropped).
    pub fn take_ops(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.ops)
    }

    /// The `now` they ran with (a journal record's time).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The ops, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// An answer was sent again from a session's cache: it may leave only once everything
    /// queued so far (its request's ops among it) is as durable as the mode requires.
    pub fn replayed(&self) -> bool {
        self.replayed
    }
}

/// Usage records are made; per update too if `interim`.
#[derive(Clone, Copy, Debug)]
struct UsageRecords {
    interim: bool,
}

/// The state as it stands while requests are stopped; see [`Engine::frozen`].
pub struct Frozen<'e> {
    pub ledger: &'e Ledger,
    /// Reservations still open, in sessions and from before the last start.
    pub outstanding: Vec<Outstanding>,
    /// Sessions, open or lingering, each encoded as a journal Session op's data.
    pub sessions: Vec<Vec<u8>>,
    pub next_reservation: u64,
    /// Account changes made so far (the change log's length).
    pub changes: u64,
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
fn replay(out: &mut BytesMut, answer: &[u8], req: &Message, identity: &LocalIdentity) {
    // Kept compact (restored from the journal): rebuilt for this retransmission, which
    // carries the same Session-Id, CC-Request-Type and -Number.
    if super::session::write_compact(out, answer, req, identity) {
        return;
    }
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
