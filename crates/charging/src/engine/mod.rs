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

mod answer;
mod ccr;
mod event;
pub mod explain;
mod grant;
mod guard;
pub mod recorder;
mod request;
mod route;
pub mod session;
mod supervision;
mod usage;
pub mod views;

pub use guard::VELOCITY_FILTER_ID;
pub use supervision::Supervision;
// Shared by the request kinds' modules (which `use super::*`).
use grant::{requested_amount, requested_unit, service_kind};
use usage::{UsageRecords, log_usage, usage_delta};

use crate::accounts::Accounts;
use crate::accounts::changes::ChangeError;
use crate::ledger::{AccountRef, Classes, Ledger, Unit, unit_index};
use crate::ops::Op;

use crate::accounts::tenant::{Directory, Policy, SubscriptionType, Unmetered};
use answer::{EventAnswer, MsccAnswer, write_cca};
use recorder::{Outstanding, Recorder, Recovered};
use request::{CreditRequest, Mscc, RequestType, RequestedAction, Units};
use route::Payer;
use session::{Held, ServiceUsage, Session, Sessions};

/// Charging settings that are not per tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChargingConfig {
    /// Added to Validity-Time before a reservation returns to the pool by itself (RFC 4006 Tcc
    /// leaves the gateway time to report).
    pub reservation_grace_s: u32,
    /// How long a terminated session's last answer is kept for retransmissions.
    pub linger_s: u32,
    /// The thresholds every account has on each of its limits.
    pub device_thresholds: crate::ledger::DefaultPercents,
    /// Recent decisions kept for explain (0: none).
    pub explain_decisions: usize,
}

impl Default for ChargingConfig {
    fn default() -> Self {
        ChargingConfig {
            reservation_grace_s: 30,
            linger_s: 15,
            device_thresholds: DEFAULT_DEVICE_THRESHOLDS,
            explain_decisions: DEFAULT_EXPLAIN_DECISIONS,
        }
    }
}

/// Decisions explain keeps by default.
pub const DEFAULT_EXPLAIN_DECISIONS: usize = 65_536;

/// 80% and 100% of every limit of every account.
pub const DEFAULT_DEVICE_THRESHOLDS: crate::ledger::DefaultPercents =
    match crate::ledger::DefaultPercents::from_const(&[80, 100]) {
        Some(d) => d,
        None => crate::ledger::DefaultPercents::NONE,
    };

/// Where an answer goes: who we are, the request, and the output buffer.
struct Reply<'a> {
    identity: &'a LocalIdentity,
    req: &'a Message,
    out: &'a mut BytesMut,
}

/// The credit-control server over the accounts: sessions, reservations and what each CCR
/// does to them.
pub struct Engine {
    accounts: Accounts,
    sessions: Sessions,
    /// [`ChargingConfig`], changed live by a reload.
    reservation_grace_s: AtomicU32,
    linger_s: AtomicU32,
    /// Whether ledger changes are persisted (a journal follows them): sessions are then
    /// recorded with every request, so a restart resumes them.
    journaled: bool,
    /// Usage records: none, one per session end, or (interim) one per update too.
    usage: Option<UsageRecords>,
    next_reservation: AtomicU64,
    /// Reservations found open in the journal at start: counted until they expire.
    outstanding: Mutex<Vec<Outstanding>>,
    /// Origin-Hosts of sessions, shared by their sessions.
    hosts: RwLock<std::collections::HashSet<Arc<str>>>,
    /// Usage reports refused as impossibly large (see [`Policy::max_report`]).
    pub reports_refused: AtomicU64,
    /// Levels (tree, node) that refused a grant while reservations under them held units:
    /// the server asks the gateways holding them to report (RAR) so that active devices can
    /// be served. Drained by [`Engine::take_dry_pools`]; bounded.
    dry: Mutex<Vec<AccountRef>>,
    /// Recent decisions, for explain.
    decisions: explain::Decisions,
    /// Velocity windows of guarded devices.
    velocities: guard::Velocities,
}

/// Dry levels noted at once at most (more are dropped until drained).
const MAX_DRY: usize = 64;

/// The most services (Rating-Group and Service-Identifier) one session may use.
const MAX_SERVICES: usize = 1024;

/// Distinct Origin-Hosts kept shared; past this, each session keeps its own copy.
const MAX_HOSTS: usize = 4096;

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

impl Engine {
    pub fn new(ledger: Ledger, directory: Directory, config: ChargingConfig) -> Self {
        ledger.set_default_levels(&config.device_thresholds.levels());
        Engine {
            accounts: Accounts::new(ledger, directory),
            sessions: Sessions::default(),
            reservation_grace_s: AtomicU32::new(config.reservation_grace_s),
            linger_s: AtomicU32::new(config.linger_s),
            journaled: false,
            usage: None,
            next_reservation: AtomicU64::new(1),
            outstanding: Mutex::new(Vec::new()),
            hosts: RwLock::new(Default::default()),
            reports_refused: AtomicU64::new(0),
            dry: Mutex::new(Vec::new()),
            decisions: explain::Decisions::new(config.explain_decisions),
            velocities: guard::Velocities::default(),
        }
    }

    /// Records sessions with every request from now on (a journal persists the ops), and
    /// continues after what `recovered` found: its sessions are open again (or linger, if they
    /// ended less than the linger time before `now`), holding the reservations they held, and
    /// the other open reservations count until they expire.
    pub fn resume(mut self, recovered: Recovered, now: i64) -> Self {
        self.journaled = true;
        // Reservation id 0 means "none".
        self.next_reservation = AtomicU64::new(recovered.next_reservation.max(1));
        let mut open = recovered.outstanding;
        for i in 0..self.sessions.shard_count() {
            let mut shard = self.sessions.lock_index(i);
            for s in shard.open.values_mut() {
                // What the session held and the journal still has open; anything else was
                // settled or expired after its last request.
                s.held.retain(|h| open.remove(&h.id).is_some());
            }
            shard.forget_ended_before(now);
        }
        let mut outstanding: Vec<Outstanding> = open.into_values().collect();
        outstanding.sort_by_key(|o| o.id);
        self.outstanding = Mutex::new(outstanding);
        self
    }

    /// Puts back a session as a snapshot or the journal last recorded it (recovery, before
    /// [`Self::resume`]): a later state of the same Session-Id replaces an earlier one.
    pub fn restore_session(&self, r: session::Restored) {
        self.sessions.lock(&r.session_id).restore(r);
    }

    /// Makes room for `n` sessions about to be restored, spread over the shards as they will
    /// be: ten million grown one doubling at a time were copied again and again.
    pub fn expect_sessions(&self, n: usize) {
        let shards = self.sessions.shard_count();
        let per = n / shards;
        for i in 0..shards {
            // A shard gets a little more or less than its share.
            self.sessions
                .lock_index(i)
                .open
                .reserve(per + per / 16 + 16);
        }
    }

    /// The paths of the levels that refused a grant since the last call while reservations
    /// under them held units (each once).
    pub fn take_dry_pools(&self) -> Vec<String> {
        let dry = std::mem::take(&mut *self.dry.lock().unwrap_or_else(|p| p.into_inner()));
        dry.into_iter()
            .filter_map(|at| {
                let t = self.accounts.ledger().lock(at.tree)?;
                Some(t.names(at.node).join("/"))
            })
            .collect()
    }

    /// Notes that the level above `account` that cut a grant to nothing has units held.
    pub(super) fn note_dry(&self, account: AccountRef, unit: Unit) {
        let Some(level) = self.accounts.ledger().lock(account.tree).and_then(|t| {
            let n = t.limiting(account.node, unit)?;
            t.nodes
                .get(n as usize)?
                .counters
                .iter()
                .any(|c| c.unit == unit && c.reserved > 0)
                .then_some(n)
        }) else {
            return;
        };
        let at = AccountRef {
            tree: account.tree,
            node: level,
        };
        let mut dry = self.dry.lock().unwrap_or_else(|p| p.into_inner());
        if dry.len() < MAX_DRY && !dry.contains(&at) {
            dry.push(at);
        }
    }

    /// Forgets a session that supervision closed (recovery, before [`Self::resume`]).
    pub fn forget_session(&self, session_id: &str) {
        let mut shard = self.sessions.lock(session_id);
        shard.open.remove(session_id);
        shard.ended.remove(session_id);
    }

    /// Takes new charging settings (a reload): they apply to grants and ends from now on.
    pub fn set_charging_config(&self, config: ChargingConfig) {
        self.reservation_grace_s
            .store(config.reservation_grace_s, Relaxed);
        self.linger_s.store(config.linger_s, Relaxed);
        self.ledger()
            .set_default_levels(&config.device_thresholds.levels());
    }

    /// The accounts this engine charges: the ledger, directory, policies, their changes and
    /// views.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    pub fn ledger(&self) -> &Ledger {
        self.accounts.ledger()
    }

    /// Open (not terminated) sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The account of the first provisioned Subscription-Id, and that id as `type:data`.
    fn lookup(&self, cr: &CreditRequest) -> Option<(AccountRef, Box<str>)> {
        let directory = self.accounts.directory();
        cr.subscriptions.iter().find_map(|(kind, id)| {
            let at = directory.lookup(*kind, id)?;
            Some((at, format!("{}:{id}", kind.label()).into_boxed_str()))
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
            gate: self.accounts.share_gate(),
            rec: Recorder::new(&self.accounts, &self.next_reservation),
            now,
        }
    }

    /// Runs `f` with every request and change stopped (the snapshot gate held exclusively),
    /// on the state as it stands: the store takes a snapshot this way, so the ledger it copies
    /// is exactly the effect of the ops handed over so far.
    pub fn frozen<R>(&self, f: impl FnOnce(Frozen<'_>) -> R) -> R {
        let _stop = self.accounts.stop();
        // Reservations still open, in sessions and from before the last start, and the
        // sessions themselves, open or lingering.
        let mut outstanding = self
            .outstanding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for i in 0..self.sessions.shard_count() {
            let shard = self.sessions.lock_index(i);
            for s in shard.open.values() {
                outstanding.extend(s.held.iter().map(|h| Outstanding {
                    id: h.id,
                    account: h.account(s.account),
                    unit: h.unit,
                    classes: h.classes,
                    amount: h.reserved,
                    expires: h.expires,
                }));
            }
        }
        f(Frozen {
            ledger: self.accounts.ledger(),
            outstanding,
            sessions: &self.sessions,
            next_reservation: self.next_reservation.load(Relaxed),
            changes: self.accounts.changes_applied(),
        })
    }
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
    pub fn finish(mut self) -> Pending<'e> {
        // One hold of explain's ring for the whole batch.
        self.engine
            .decisions
            .record_all(std::mem::take(&mut self.rec.decisions));
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

/// The state as it stands while requests are stopped; see [`Engine::frozen`].
pub struct Frozen<'e> {
    pub ledger: &'e Ledger,
    /// Reservations still open, in sessions and from before the last start.
    pub outstanding: Vec<Outstanding>,
    sessions: &'e session::Sessions,
    pub next_reservation: u64,
    /// Account changes made so far (the change log's length).
    pub changes: u64,
}

impl Frozen<'_> {
    /// Sessions, open or lingering.
    pub fn session_count(&self) -> usize {
        (0..self.sessions.shard_count())
            .map(|i| {
                let shard = self.sessions.lock_index(i);
                shard.open.len() + shard.ended.len()
            })
            .sum()
    }

    /// Calls `each` with every session, open or lingering, encoded as a journal Session op's
    /// data, one after the other in one buffer: ten million sessions were ten million
    /// allocations, and twice their size in memory, while requests waited.
    pub fn each_session(&self, mut each: impl FnMut(&[u8])) {
        let mut data = Vec::with_capacity(1024);
        for i in 0..self.sessions.shard_count() {
            let shard = self.sessions.lock_index(i);
            for (id, s) in &shard.open {
                data.clear();
                session::encode_state(&mut data, id, s, false);
                each(&data);
            }
            for (id, e) in &shard.ended {
                data.clear();
                session::encode_ended(&mut data, id, e);
                each(&data);
            }
        }
    }
}
