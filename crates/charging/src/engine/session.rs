//! RFC 4006 server sessions: per Session-Id, the account, the last request number and answer
//! (for retransmissions), and the units held for each service until they are reported, released
//! or expire. Sharded by Session-Id so that sessions of different gateways rarely share a lock.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_utils::CachePadded;

use crate::ledger::{AccountRef, Unit};

/// Where a rule sent a reservation: the account it is held on and settled against, the price
/// its money is settled at, and the rule's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub account: AccountRef,
    /// Money per octet (numerator, denominator) for a money reservation.
    pub price: Option<(u128, u128)>,
    pub rule: Arc<str>,
}

/// Units reserved for one service (rating group / service identifier) of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The reservation's id in the journal.
    pub id: u64,
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    /// The unit the ledger counts the reservation in (Money for tariffed accounts).
    pub unit: Unit,
    /// Ledger units reserved.
    pub reserved: u64,
    /// Service units granted to the gateway (octets, seconds or events).
    pub granted: u64,
    /// When the reservation returns to the pool by itself (Validity-Time plus grace).
    pub expires: i64,
    /// Set when a rule chose where it is held; none: on the session's account, settled at
    /// its policy's tariff.
    pub route: Option<Box<Route>>,
    /// The service classes it was reserved in (its class limits count it).
    pub classes: crate::ledger::Classes,
}

impl Held {
    /// The account the reservation is held on.
    pub fn account(&self, session: AccountRef) -> AccountRef {
        self.route.as_ref().map_or(session, |r| r.account)
    }
}

#[derive(Clone, Debug)]
pub struct Session {
    pub account: AccountRef,
    /// The client that opened it (Origin-Host): only it may continue or end it.
    pub origin_host: Arc<str>,
    pub last_number: u32,
    pub last_type: u8,
    /// The last answer, re-sent (with the new identifiers) for a retransmitted request.
    pub last_answer: Vec<u8>,
    pub held: Vec<Held>,
    /// When the session is closed if nothing more is heard (supervision, RFC 4006 Tcc).
    pub deadline: i64,
    /// Terminated: kept only to answer retransmissions until `deadline`.
    pub terminated: bool,
    pub started: i64,
    /// The subscription that named the account, e.g. `e164:15551008000`.
    pub subscriber: Box<str>,
    /// Units charged over the session's life, per service.
    pub services: Vec<ServiceUsage>,
}

/// Units charged to one service (rating group / service identifier) of a session, per unit
/// kind: octets, seconds, events, money (ledger units); apart for each account and rule that
/// paid for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceUsage {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    pub units: [u64; 4],
    /// The account that paid, when a rule sent it elsewhere than the session's account.
    pub account: Option<AccountRef>,
    /// The rule that matched.
    pub rule: Option<Arc<str>>,
}

impl ServiceUsage {
    /// Whether this is the usage of `service` paid as `paid` says (account, rule).
    pub fn is(&self, service: (Option<u32>, Option<u32>), paid: Paid<'_>) -> bool {
        (self.rating_group, self.service_identifier) == service
            && self.account == paid.0
            && self.rule.as_deref() == paid.1
    }
}

/// Who paid for usage: the account when it is not the session's, and the rule that matched.
pub type Paid<'a> = (Option<AccountRef>, Option<&'a str>);

impl Session {
    /// How a reservation's usage is recorded as paid.
    pub fn paid_by<'r>(&self, route: Option<&'r Route>) -> Paid<'r> {
        match route {
            None => (None, None),
            Some(r) => (
                (r.account != self.account).then_some(r.account),
                Some(&*r.rule),
            ),
        }
    }

    /// Adds `amount` of unit kind `unit` (see [`unit_index`]) to a service's usage.
    pub fn charge(
        &mut self,
        service: (Option<u32>, Option<u32>),
        paid: Paid<'_>,
        unit: usize,
        amount: u64,
    ) {
        if amount == 0 {
            return;
        }
        let i = match self.services.iter().position(|s| s.is(service, paid)) {
            Some(i) => i,
            None => {
                self.services.reserve_exact(1);
                self.services.push(ServiceUsage {
                    rating_group: service.0,
                    service_identifier: service.1,
                    units: [0; 4],
                    account: paid.0,
                    rule: paid.1.map(Arc::from),
                });
                self.services.len() - 1
            }
        };
        self.services[i].units[unit] = self.services[i].units[unit].saturating_add(amount);
    }

    /// Units charged over the session, per unit kind.
    pub fn totals(&self) -> [u64; 4] {
        let mut t = [0u64; 4];
        for s in &self.services {
            for (k, v) in s.units.iter().enumerate() {
                t[k] = t[k].saturating_add(*v);
            }
        }
        t
    }
}

const SHARDS: usize = 64;

/// SipHash was a tenth of the server's time under load; Session-Ids come from authenticated
/// peers, and foldhash is still seeded per process. Sessions are boxed: a table grows by
/// doubling, and empty buckets of a pointer cost far less than empty sessions.
type SessionMap = HashMap<Box<str>, Box<Session>, foldhash::fast::RandomState>;

/// What is left of a finished session while it lingers: enough to answer a retransmission
/// of its last request and to refuse anything else.
#[derive(Clone, Debug)]
pub struct Ended {
    pub origin_host: Arc<str>,
    pub last_number: u32,
    pub last_type: u8,
    pub last_answer: Box<[u8]>,
    pub deadline: i64,
}

/// One shard: open sessions, which supervision walks, and ended ones, which it does not: they
/// leave in the order they ended (the linger time is the same for all), so expiring them costs
/// nothing per second for those that stay. A busy server ends tens of thousands of sessions a
/// second; walking them all every second stalled requests.
///
/// Nor does supervision walk the open sessions of a shard before the earliest time one of them
/// is due (its deadline, or a reservation's expiry): with ten million open sessions, a walk of
/// them all every second took a quarter of a core and held each shard's lock for milliseconds.
pub struct ShardMaps {
    pub open: SessionMap,
    pub ended: HashMap<Arc<str>, Ended, foldhash::fast::RandomState>,
    ended_order: VecDeque<(i64, Arc<str>)>,
    /// No open session is due before this (it may be earlier than the true earliest: then a
    /// walk finds nothing and sets it right; never later).
    pub(crate) next_due: i64,
    /// Reservations the open sessions hold, exact since the last walk.
    pub(crate) held: usize,
}

impl Default for ShardMaps {
    fn default() -> Self {
        ShardMaps {
            open: SessionMap::default(),
            ended: HashMap::default(),
            ended_order: VecDeque::new(),
            // Unknown until the first walk.
            next_due: i64::MIN,
            held: 0,
        }
    }
}

/// When supervision has something to do for a session: its deadline, or the expiry of a
/// reservation it holds, whichever is first.
pub(crate) fn due(s: &Session) -> i64 {
    s.held.iter().map(|h| h.expires).fold(s.deadline, i64::min)
}

impl ShardMaps {
    /// After a request changed the session `id` (or ended it), which held `held_before`
    /// reservations: keeps `next_due` and `held` true.
    pub(crate) fn settle(&mut self, id: &str, held_before: usize) {
        let (after, due) = self
            .open
            .get(id)
            .map_or((0, i64::MAX), |s| (s.held.len(), due(s)));
        self.held = (self.held + after).saturating_sub(held_before);
        self.next_due = self.next_due.min(due);
    }

    /// Keeps what a retransmission needs of a session that ended, until its deadline.
    pub fn end(&mut self, session_id: &str, s: Session) {
        let key: Arc<str> = Arc::from(session_id);
        self.ended_order.push_back((s.deadline, key.clone()));
        self.ended.insert(
            key,
            Ended {
                origin_host: s.origin_host,
                last_number: s.last_number,
                last_type: s.last_type,
                last_answer: s.last_answer.into_boxed_slice(),
                deadline: s.deadline,
            },
        );
    }

    /// Forgets ended sessions whose linger time is over; returns how many.
    pub(crate) fn expire_ended(&mut self, now: i64) -> usize {
        let mut n = 0;
        while let Some((deadline, _)) = self.ended_order.front() {
            if *deadline > now {
                break;
            }
            if let Some((deadline, key)) = self.ended_order.pop_front() {
                if self.ended.get(&key).is_some_and(|e| e.deadline <= deadline) {
                    self.ended.remove(&key);
                    n += 1;
                }
            }
        }
        n
    }
}

/// All sessions.
pub struct Sessions {
    shards: Vec<CachePadded<Mutex<ShardMaps>>>,
    hasher: foldhash::fast::RandomState,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(ShardMaps::default())))
                .collect(),
            hasher: Default::default(),
        }
    }
}

pub type Shard<'a> = MutexGuard<'a, ShardMaps>;

impl Sessions {
    /// The shard holding `session_id`, locked.
    pub fn lock(&self, session_id: &str) -> Shard<'_> {
        let i = (self.hasher.hash_one(session_id) as usize) % SHARDS;
        self.lock_shard(i)
    }

    fn lock_shard(&self, i: usize) -> Shard<'_> {
        // Session state is updated in whole steps; a panic elsewhere leaves it usable.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn shard_count(&self) -> usize {
        SHARDS
    }

    pub(crate) fn lock_index(&self, i: usize) -> Shard<'_> {
        self.lock_shard(i)
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock_shard(i).open.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session's state as the journal (record kind 6) and snapshots keep it (`var` is an
/// unsigned LEB128 varint, `zig` a zigzag-encoded signed one):
///
/// ```text
/// state    = session_id:bytes origin_host:bytes subscriber:bytes tree:var node:var
///            started:zig deadline:zig last_number:var last_type:u8 ended:u8
///            held_count:var held* service_count:var service* answer:bytes
/// bytes    = length:var octets (strings in UTF-8)
/// held     = id:var ids reserved_unit:u8 reserved:var granted:var expires:zig [route]
/// service  = ids octets:var seconds:var events:var money:var [paid]
/// ids      = flags:u8 (1: Rating-Group present, 2: Service-Identifier present,
///            4: a rule chose the route or the payer, which follows at the end,
///            8: the reservation's service classes follow at its end, class:var class:var)
///            [rating_group:var] [service_identifier:var]
/// route    = tree:var node:var priced:u8 [num_high:var num_low:var den_high:var den_low:var]
///            rule:bytes
/// paid     = other_account:u8 [tree:var node:var] rule:bytes
/// ```
///
/// Flag 4 and what it announces came with rules over the request; a state without it reads as
/// it always did.
///
/// The answer is kept compact (see `put_answer`): its flags, its Result-Code and its AVPs after
/// the ones every answer starts with, which a retransmission and our identity give back; an
/// answer of another shape is kept whole (it starts with version 1).
/// A session that has ended keeps only what answering a retransmission needs: no subscriber,
/// reservations or services.
pub fn encode_state(out: &mut Vec<u8>, session_id: &str, s: &Session, ended: bool) {
    use crate::le::{put_varint as var, put_varint_i64 as zig};
    fn put(out: &mut Vec<u8>, b: &[u8]) {
        var(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    fn ids(out: &mut Vec<u8>, rg: Option<u32>, si: Option<u32>, ruled: bool, classed: bool) {
        out.push(
            u8::from(rg.is_some())
                | (u8::from(si.is_some()) << 1)
                | (u8::from(ruled) << 2)
                | (u8::from(classed) << 3),
        );
        for v in [rg, si].into_iter().flatten() {
            var(out, u64::from(v));
        }
    }
    fn account(out: &mut Vec<u8>, a: AccountRef) {
        var(out, u64::from(a.tree));
        var(out, u64::from(a.node));
    }
    fn wide(out: &mut Vec<u8>, v: u128) {
        var(out, (v >> 64) as u64);
        var(out, v as u64);
    }
    put(out, session_id.as_bytes());
    put(out, s.origin_host.as_bytes());
    put(out, if ended { b"" } else { s.subscriber.as_bytes() });
    var(out, u64::from(s.account.tree));
    var(out, u64::from(s.account.node));
    zig(out, s.started);
    zig(out, s.deadline);
    var(out, u64::from(s.last_number));
    out.push(s.last_type);
    out.push(u8::from(ended));
    let (held, services) = if ended {
        (&[][..], &[][..])
    } else {
        (&s.held[..], &s.services[..])
    };
    var(out, held.len() as u64);
    for h in held {
        var(out, h.id);
        ids(
            out,
            h.rating_group,
            h.service_identifier,
            h.route.is_some(),
            !h.classes.is_none(),
        );
        out.push(crate::ledger::unit_index(h.unit) as u8);
        var(out, h.reserved);
        var(out, h.granted);
        zig(out, h.expires);
        if let Some(r) = &h.route {
            account(out, r.account);
            out.push(u8::from(r.price.is_some()));
            if let Some((num, den)) = r.price {
                wide(out, num);
                wide(out, den);
            }
            put(out, r.rule.as_bytes());
        }
        if !h.classes.is_none() {
            var(out, u64::from(h.classes.0[0]));
            var(out, u64::from(h.classes.0[1]));
        }
    }
    var(out, services.len() as u64);
    for u in services {
        let ruled = u.account.is_some() || u.rule.is_some();
        ids(out, u.rating_group, u.service_identifier, ruled, false);
        for v in u.units {
            var(out, v);
        }
        if ruled {
            out.push(u8::from(u.account.is_some()));
            if let Some(a) = u.account {
                account(out, a);
            }
            put(out, u.rule.as_deref().unwrap_or("").as_bytes());
        }
    }
    put_answer(out, &s.last_answer);
}

/// The AVPs every credit-control answer starts with, in the order they are written, and what
/// a compact answer keeps of them: nothing but which were there (and the Result-Code's value),
/// as they come back from the retransmission (Session-Id, CC-Request-Type and -Number), from
/// our identity (Origin-Host, Origin-Realm) or are constant (Auth-Application-Id 4).
const LEADING: [u32; 7] = [263, 268, 264, 296, 258, 416, 415];

/// The parts of an answer's compact form (see [`put_answer`]).
struct Compact<'a> {
    flags: u8,
    /// Bit i: the answer starts with AVP i of [`LEADING`].
    present: u8,
    result_code: Option<[u8; 4]>,
    /// The rest, as it is.
    tail: &'a [u8],
}

impl Compact<'_> {
    fn len(&self) -> usize {
        3 + self.result_code.map_or(0, |_| 4) + self.tail.len()
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, self.flags, self.present]);
        if let Some(rc) = self.result_code {
            out.extend_from_slice(&rc);
        }
        out.extend_from_slice(self.tail);
    }
}

/// An answer's compact form, or None if it cannot be kept compact (it is kept whole).
fn compact_parts(answer: &[u8]) -> Option<Compact<'_>> {
    const HEADER: usize = ocf_protocol::header::HEADER_LEN;
    if answer.first() != Some(&1) || answer.len() < HEADER {
        return None;
    }
    let mut at = HEADER;
    let mut present = 0u8;
    let mut result_code = None;
    for (i, code) in LEADING.iter().enumerate() {
        let Some(h) = answer.get(at..at + 8) else {
            break;
        };
        let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
        if u32::from_be_bytes([h[0], h[1], h[2], h[3]]) != *code || h[4] & 0x80 != 0 || len < 8 {
            continue;
        }
        if *code == 268 {
            match answer.get(at + 8..at + 12) {
                Some(v) if len == 12 => result_code = Some([v[0], v[1], v[2], v[3]]),
                _ => return None,
            }
        }
        present |= 1 << i;
        at += len.div_ceil(4) * 4;
    }
    Some(Compact {
        flags: answer[4],
        present,
        result_code,
        tail: answer.get(at..)?,
    })
}

/// Writes an answer as `bytes`, compact where it can be (see [`encode_state`]):
/// `0x00 flags:u8 present:u8 [result_code:u32be] tail`, `present` having bit i set for each
/// AVP of [`LEADING`] the answer starts with. An answer already compact is written as it is.
fn put_answer(out: &mut Vec<u8>, answer: &[u8]) {
    match compact_parts(answer) {
        Some(c) => {
            crate::le::put_varint(out, c.len() as u64);
            c.put(out);
        }
        None => {
            crate::le::put_varint(out, answer.len() as u64);
            out.extend_from_slice(answer);
        }
    }
}

/// What a session keeps of the answer it just sent, for a retransmission: the compact form
/// (about half the octets: a third of a session's memory was its last answer, whole).
pub(crate) fn kept(answer: &[u8]) -> Vec<u8> {
    match compact_parts(answer) {
        Some(c) => {
            let mut v = Vec::with_capacity(c.len());
            c.put(&mut v);
            v
        }
        None => answer.to_vec(),
    }
}

/// Writes the answer to `req` from an answer kept compact (see [`put_answer`]); false if
/// `answer` is not compact (it is whole: send it as it is).
pub(crate) fn write_compact(
    out: &mut bytes::BytesMut,
    answer: &[u8],
    req: &ocf_protocol::Message,
    identity: &ocf_protocol::base::LocalIdentity,
) -> bool {
    use ocf_protocol::codes::avp as c;
    let [0, flags, present, rest @ ..] = answer else {
        return false;
    };
    let (result_code, tail) = if present & 2 != 0 {
        match rest {
            [a, b, c, d, tail @ ..] => (u32::from_be_bytes([*a, *b, *c, *d]), tail),
            _ => return false,
        }
    } else {
        (0, rest)
    };
    let mut h = req.header.answer();
    h.flags.0 = *flags;
    let mut w = ocf_protocol::MessageWriter::new(out, &h);
    for (i, code) in LEADING.iter().enumerate() {
        if present & (1 << i) == 0 {
            continue;
        }
        let echoed = match *code {
            263 => Some(c::SESSION_ID),
            416 => Some(c::CC_REQUEST_TYPE),
            415 => Some(c::CC_REQUEST_NUMBER),
            _ => None,
        };
        match (echoed, *code) {
            (Some(k), _) => {
                if let Some(a) = req.find(k) {
                    w.avp(&a);
                }
            }
            (None, 268) => w.u32(c::RESULT_CODE, result_code),
            (None, 264) => w.identity(c::ORIGIN_HOST, &identity.origin_host),
            (None, 296) => w.identity(c::ORIGIN_REALM, &identity.origin_realm),
            (None, _) => w.u32(
                c::AUTH_APPLICATION_ID,
                ocf_protocol::codes::application::CREDIT_CONTROL,
            ),
        }
    }
    w.raw(tail);
    w.finish();
    true
}

/// A session read back from [`encode_state`].
#[derive(Clone, Debug)]
pub struct Restored {
    pub session_id: String,
    pub session: Session,
    /// Ended: kept only to answer a retransmission of its last request until its deadline.
    pub ended: bool,
}

/// Reads a session's state; `None` if the octets are not one.
pub fn decode_state(data: &[u8]) -> Option<Restored> {
    use crate::le::{get_varint as var, get_varint_i64 as zig};
    use bytes::Buf;
    fn bytes<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
        let n = usize::try_from(var(r)?).ok()?;
        let (octets, rest) = r.split_at_checked(n)?;
        *r = rest;
        Some(octets)
    }
    fn text(r: &mut &[u8]) -> Option<String> {
        String::from_utf8(bytes(r)?.to_vec()).ok()
    }
    fn u32_of(r: &mut &[u8]) -> Option<u32> {
        u32::try_from(var(r)?).ok()
    }
    fn ids(r: &mut &[u8]) -> Option<(Option<u32>, Option<u32>, bool, bool)> {
        let flags = r.try_get_u8().ok()?;
        if flags > 15 {
            return None;
        }
        let rg = if flags & 1 != 0 {
            Some(u32_of(r)?)
        } else {
            None
        };
        let si = if flags & 2 != 0 {
            Some(u32_of(r)?)
        } else {
            None
        };
        Some((rg, si, flags & 4 != 0, flags & 8 != 0))
    }
    fn account_of(r: &mut &[u8]) -> Option<AccountRef> {
        Some(AccountRef {
            tree: u32_of(r)?,
            node: u32_of(r)?,
        })
    }
    fn wide(r: &mut &[u8]) -> Option<u128> {
        Some((u128::from(var(r)?) << 64) | u128::from(var(r)?))
    }
    fn rule(r: &mut &[u8]) -> Option<Arc<str>> {
        Some(Arc::from(std::str::from_utf8(bytes(r)?).ok()?))
    }
    fn unit(code: u8) -> Option<Unit> {
        Unit::ALL.get(usize::from(code)).copied()
    }
    let mut r = data;
    let session_id = text(&mut r)?;
    let origin_host: Arc<str> = Arc::from(text(&mut r)?);
    let subscriber = text(&mut r)?.into_boxed_str();
    let account = AccountRef {
        tree: u32_of(&mut r)?,
        node: u32_of(&mut r)?,
    };
    let (started, deadline) = (zig(&mut r)?, zig(&mut r)?);
    let (last_number, last_type) = (u32_of(&mut r)?, r.try_get_u8().ok()?);
    let ended = match r.try_get_u8().ok()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    // Each entry takes at least a few octets: counts past what is left are damage.
    let held_count = usize::try_from(var(&mut r)?).ok()?.min(data.len());
    let mut held = Vec::with_capacity(held_count.min(64));
    for _ in 0..held_count {
        let id = var(&mut r)?;
        let (rating_group, service_identifier, routed, classed) = ids(&mut r)?;
        let mut h = Held {
            id,
            rating_group,
            service_identifier,
            unit: unit(r.try_get_u8().ok()?)?,
            reserved: var(&mut r)?,
            granted: var(&mut r)?,
            expires: zig(&mut r)?,
            route: None,
            classes: crate::ledger::Classes::NONE,
        };
        if routed {
            let account = account_of(&mut r)?;
            let price = match r.try_get_u8().ok()? {
                0 => None,
                1 => Some((wide(&mut r)?, wide(&mut r)?)),
                _ => return None,
            };
            h.route = Some(Box::new(Route {
                account,
                price,
                rule: rule(&mut r)?,
            }));
        }
        if classed {
            h.classes = crate::ledger::Classes([u32_of(&mut r)?, u32_of(&mut r)?]);
        }
        held.push(h);
    }
    let service_count = usize::try_from(var(&mut r)?).ok()?.min(data.len());
    let mut services = Vec::with_capacity(service_count.min(64));
    for _ in 0..service_count {
        let (rating_group, service_identifier, paid, classed) = ids(&mut r)?;
        if classed {
            // Only reservations have classes.
            return None;
        }
        let mut u = ServiceUsage {
            rating_group,
            service_identifier,
            units: [var(&mut r)?, var(&mut r)?, var(&mut r)?, var(&mut r)?],
            account: None,
            rule: None,
        };
        if paid {
            u.account = match r.try_get_u8().ok()? {
                0 => None,
                1 => Some(account_of(&mut r)?),
                _ => return None,
            };
            u.rule = Some(rule(&mut r)?).filter(|r| !r.is_empty());
        }
        services.push(u);
    }
    let last_answer = bytes(&mut r)?.to_vec();
    if !r.is_empty() {
        return None;
    }
    Some(Restored {
        session_id,
        session: Session {
            account,
            origin_host,
            last_number,
            last_type,
            last_answer,
            held,
            deadline,
            terminated: ended,
            started,
            subscriber,
            services,
        },
        ended,
    })
}

/// [`encode_state`] for a session that has ended and lingers: what a retransmission needs.
pub(crate) fn encode_ended(out: &mut Vec<u8>, session_id: &str, e: &Ended) {
    let s = Session {
        account: AccountRef { tree: 0, node: 0 },
        origin_host: e.origin_host.clone(),
        last_number: e.last_number,
        last_type: e.last_type,
        last_answer: Vec::new(),
        held: Vec::new(),
        deadline: e.deadline,
        terminated: true,
        started: 0,
        subscriber: Box::from(""),
        services: Vec::new(),
    };
    encode_state(out, session_id, &s, true);
    // The answer is last (an empty one is the one octet of its length): written from the
    // lingering session without copying it first.
    out.truncate(out.len() - 1);
    put_answer(out, &e.last_answer);
}

impl ShardMaps {
    /// Puts back a session read from the journal or a snapshot, in place of any earlier state
    /// of it.
    pub fn restore(&mut self, r: Restored) {
        if r.ended {
            self.open.remove(r.session_id.as_str());
            self.end(&r.session_id, r.session);
        } else {
            self.ended.remove(r.session_id.as_str());
            self.open.insert(r.session_id.into(), Box::new(r.session));
        }
    }

    /// After a restore: forgets ended sessions whose linger time is over and puts the rest in
    /// the order they leave (the journal and a snapshot give them in any order).
    pub(crate) fn forget_ended_before(&mut self, now: i64) {
        self.ended.retain(|_, e| e.deadline > now);
        let mut order: Vec<(i64, Arc<str>)> = self
            .ended
            .iter()
            .map(|(k, e)| (e.deadline, k.clone()))
            .collect();
        order.sort_unstable_by_key(|(d, _)| *d);
        self.ended_order = order.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::answer::{EventAnswer, MsccAnswer, write_cca};
    use bytes::BytesMut;
    use ocf_protocol::base::LocalIdentity;
    use ocf_protocol::codes::{ResultCode, application, avp as c, command};
    use ocf_protocol::error::DiameterError;
    use ocf_protocol::{Header, Message, MessageWriter};

    fn identity() -> LocalIdentity {
        LocalIdentity {
            origin_host: "ocfd.localdomain".into(),
            origin_realm: "localdomain".into(),
            host_ip_addresses: vec![],
            vendor_id: 0,
            product_name: "ocfd".into(),
            firmware_revision: 1,
            origin_state_id: 1,
            auth_application_ids: vec![4],
            supported_vendor_ids: vec![],
        }
    }

    /// A CCR-U of session "s;1" with the given Hop-by-Hop id.
    fn request(hop: u32) -> Message {
        let mut b = BytesMut::new();
        let h = Header::request(
            command::CREDIT_CONTROL,
            application::CREDIT_CONTROL,
            hop,
            hop,
        );
        let mut w = MessageWriter::new(&mut b, &h);
        w.utf8(c::SESSION_ID, "s;1");
        w.identity(c::ORIGIN_HOST, "pgw.example");
        w.u32(c::CC_REQUEST_TYPE, 2);
        w.u32(c::CC_REQUEST_NUMBER, 7);
        w.finish();
        Message::decode(b.freeze()).unwrap()
    }

    /// A CCA with one granted MSCC, and an error answer, to `request(hop)`.
    fn answers(hop: u32) -> [Vec<u8>; 2] {
        let req = request(hop);
        let mut a = MsccAnswer::new(Some(10), None, ResultCode::Success);
        a.granted = Some((Unit::Octets, 10 << 20));
        a.validity_time = Some(600);
        let mut cca = BytesMut::new();
        write_cca(
            &identity(),
            &mut cca,
            &req,
            ResultCode::Success,
            &[a],
            true,
            &EventAnswer::default(),
        );
        let mut err = BytesMut::new();
        let e = DiameterError::new(ResultCode::InvalidAvpValue, "no")
            .with_avp(req.find(c::CC_REQUEST_NUMBER).unwrap().to_bytes());
        identity().write_error_answer(&mut err, &req, &e);
        [cca.to_vec(), err.to_vec()]
    }

    fn session(answer: Vec<u8>) -> Session {
        Session {
            account: AccountRef {
                tree: 3,
                node: 70_000,
            },
            origin_host: Arc::from("pgw.example"),
            last_number: 7,
            last_type: 2,
            last_answer: answer,
            held: vec![
                Held {
                    id: 1 << 40,
                    rating_group: Some(10),
                    service_identifier: None,
                    unit: Unit::Money,
                    reserved: 123_456_789,
                    granted: 10 << 20,
                    expires: 1_795_000_600,
                    route: None,
                    classes: crate::ledger::Classes::NONE,
                },
                // Sent by a rule to a personal account, priced.
                Held {
                    id: 2,
                    rating_group: Some(20),
                    service_identifier: Some(1),
                    unit: Unit::Money,
                    reserved: 5,
                    granted: 1 << 20,
                    expires: 1_795_000_600,
                    route: Some(Box::new(Route {
                        account: AccountRef { tree: 9, node: 0 },
                        price: Some((u128::MAX - 1, 1 << 70)),
                        rule: Arc::from("personal-video"),
                    })),
                    classes: crate::ledger::Classes([7, u32::MAX]),
                },
            ],
            deadline: 1_795_000_630,
            terminated: false,
            started: -5,
            subscriber: Box::from("e164:15551008000"),
            services: vec![
                ServiceUsage {
                    rating_group: None,
                    service_identifier: Some(u32::MAX),
                    units: [u64::MAX, 0, 1, 2],
                    account: None,
                    rule: None,
                },
                ServiceUsage {
                    rating_group: Some(20),
                    service_identifier: None,
                    units: [1, 0, 0, 2],
                    account: Some(AccountRef { tree: 9, node: 0 }),
                    rule: Some(Arc::from("personal-video")),
                },
                ServiceUsage {
                    rating_group: Some(10),
                    service_identifier: None,
                    units: [1, 0, 0, 0],
                    account: None,
                    rule: Some(Arc::from("work")),
                },
            ],
        }
    }

    #[test]
    fn session_state_round_trips_and_its_compact_answer_is_the_answer_again() {
        for (k, answer) in answers(1).into_iter().enumerate() {
            let s = session(answer.clone());
            let mut data = Vec::new();
            encode_state(&mut data, "s;1", &s, false);
            let r = decode_state(&data).expect("reads back");
            assert_eq!((r.session_id.as_str(), r.ended), ("s;1", false));
            let back = r.session;
            assert_eq!(
                (
                    back.account,
                    &*back.origin_host,
                    back.last_number,
                    back.last_type
                ),
                (s.account, "pgw.example", 7, 2)
            );
            assert_eq!((&back.held, &back.services), (&s.held, &s.services));
            assert_eq!((back.started, back.deadline), (s.started, s.deadline));
            // Kept compact, far smaller than the answer; rebuilt for a retransmission (another
            // Hop-by-Hop id) it is the answer to that retransmission, octet for octet.
            assert!(back.last_answer.len() < answer.len() / 2, "answer {k}");
            let mut out = BytesMut::new();
            assert!(write_compact(
                &mut out,
                &back.last_answer,
                &request(2),
                &identity()
            ));
            assert_eq!(out.to_vec(), answers(2)[k], "answer {k}");
            // Kept compact again in a snapshot: the same octets.
            let mut again = Vec::new();
            encode_state(&mut again, "s;1", &back, false);
            assert_eq!(again, data);
            // Every cut is refused, never a panic.
            for cut in 0..data.len() {
                assert!(decode_state(&data[..cut]).is_none(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn an_ended_session_keeps_only_what_a_retransmission_needs() {
        let [answer, _] = answers(1);
        let mut data = Vec::new();
        encode_state(&mut data, "s;1", &session(answer.clone()), true);
        let r = decode_state(&data).expect("reads back");
        assert!(r.ended);
        assert!(r.session.held.is_empty() && r.session.services.is_empty());
        assert_eq!(&*r.session.subscriber, "");
        let e = Ended {
            origin_host: Arc::from("pgw.example"),
            last_number: 7,
            last_type: 2,
            last_answer: answer.into_boxed_slice(),
            deadline: 1_795_000_630,
        };
        let mut lingering = Vec::new();
        encode_ended(&mut lingering, "s;1", &e);
        let r = decode_state(&lingering).expect("reads back");
        assert_eq!(r.session.deadline, 1_795_000_630);
        let mut out = BytesMut::new();
        assert!(write_compact(
            &mut out,
            &r.session.last_answer,
            &request(3),
            &identity()
        ));
        assert_eq!(out.to_vec(), answers(3)[0]);
    }

    #[test]
    fn a_whole_answer_is_not_taken_for_a_compact_one() {
        let mut out = BytesMut::new();
        assert!(!write_compact(
            &mut out,
            &answers(1)[0],
            &request(1),
            &identity()
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn a_later_restored_state_replaces_an_earlier_one_and_expired_ended_ones_go() {
        let restored = |id: &str, ended: bool, deadline: i64| Restored {
            session_id: id.into(),
            session: Session {
                deadline,
                terminated: ended,
                ..session(vec![1, 2, 3])
            },
            ended,
        };
        let mut shard = ShardMaps::default();
        // Open, then ended (journal order): only the ended state is left.
        shard.restore(restored("a", false, 100));
        shard.restore(restored("a", true, 50));
        assert!(shard.open.is_empty());
        assert_eq!(shard.ended.get("a").map(|e| e.deadline), Some(50));
        // A session id used again after its end: open once more.
        shard.restore(restored("a", false, 200));
        assert!(shard.ended.is_empty());
        assert_eq!(shard.open.get("a").map(|s| s.deadline), Some(200));
        // Ended sessions in any order: at resume those past their linger time go, the rest
        // leave in deadline order.
        for (id, deadline) in [("c", 40), ("b", 20), ("d", 30), ("e", 10)] {
            shard.restore(restored(id, true, deadline));
        }
        shard.forget_ended_before(15);
        assert!(!shard.ended.contains_key("e"));
        let order: Vec<i64> = shard.ended_order.iter().map(|(d, _)| *d).collect();
        assert_eq!(order, [20, 30, 40]);
        assert_eq!(shard.expire_ended(30), 2);
        assert_eq!(shard.ended.keys().map(|k| &**k).collect::<Vec<_>>(), ["c"]);
        assert_eq!(shard.open.len(), 1, "open sessions are not touched");
    }
}
