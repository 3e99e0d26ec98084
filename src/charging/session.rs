//! RFC 4006 server sessions: per Session-Id, the account, the last request number and answer
//! (for retransmissions), and the units held for each service until they are reported, released
//! or expire. Sharded by Session-Id so that sessions of different gateways rarely share a lock.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_utils::CachePadded;

use crate::ledger::{AccountRef, Unit};

/// Units reserved for one service (rating group / service identifier) of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
/// kind: octets, seconds, events, money (ledger units).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceUsage {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    pub units: [u64; 4],
}

impl Session {
    /// Adds `amount` of unit kind `unit` (see [`unit_index`]) to a service's usage.
    pub fn charge(&mut self, service: (Option<u32>, Option<u32>), unit: usize, amount: u64) {
        if amount == 0 {
            return;
        }
        let i = match self
            .services
            .iter()
            .position(|s| (s.rating_group, s.service_identifier) == service)
        {
            Some(i) => i,
            None => {
                self.services.reserve_exact(1);
                self.services.push(ServiceUsage {
                    rating_group: service.0,
                    service_identifier: service.1,
                    units: [0; 4],
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
#[derive(Default)]
pub struct ShardMaps {
    pub open: SessionMap,
    pub ended: HashMap<Arc<str>, Ended, foldhash::fast::RandomState>,
    ended_order: VecDeque<(i64, Arc<str>)>,
}

impl ShardMaps {
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
    pub fn expire_ended(&mut self, now: i64) -> usize {
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

    pub fn shard_count(&self) -> usize {
        SHARDS
    }

    pub fn lock_index(&self, i: usize) -> Shard<'_> {
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

/// A session's state as the journal (record kind 6) and snapshots keep it, little-endian:
///
/// ```text
/// state    = session_id:str origin_host:str subscriber:str tree:u32 node:u32
///            started:i64 deadline:i64 last_number:u32 last_type:u8 ended:u8
///            held_count:u16 held* service_count:u16 service* answer:bytes
/// str      = length:u32 UTF-8 octets          bytes = length:u32 octets
/// held     = id:u64 ids reserved_unit:u8 reserved:u64 granted:u64 expires:i64
/// service  = ids units:u64*4 (octets, seconds, events, money)
/// ids      = flags:u8 (1: Rating-Group present, 2: Service-Identifier present)
///            rating_group:u32 service_identifier:u32
/// ```
pub fn encode_state(out: &mut Vec<u8>, session_id: &str, s: &Session, ended: bool) {
    fn put(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    fn ids(out: &mut Vec<u8>, rg: Option<u32>, si: Option<u32>) {
        out.push(u8::from(rg.is_some()) | (u8::from(si.is_some()) << 1));
        out.extend_from_slice(&rg.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&si.unwrap_or(0).to_le_bytes());
    }
    put(out, session_id.as_bytes());
    put(out, s.origin_host.as_bytes());
    put(out, s.subscriber.as_bytes());
    out.extend_from_slice(&s.account.tree.to_le_bytes());
    out.extend_from_slice(&s.account.node.to_le_bytes());
    out.extend_from_slice(&s.started.to_le_bytes());
    out.extend_from_slice(&s.deadline.to_le_bytes());
    out.extend_from_slice(&s.last_number.to_le_bytes());
    out.push(s.last_type);
    out.push(u8::from(ended));
    out.extend_from_slice(&(s.held.len().min(u16::MAX as usize) as u16).to_le_bytes());
    for h in s.held.iter().take(u16::MAX as usize) {
        out.extend_from_slice(&h.id.to_le_bytes());
        ids(out, h.rating_group, h.service_identifier);
        out.push(crate::ledger::unit_index(h.unit) as u8);
        out.extend_from_slice(&h.reserved.to_le_bytes());
        out.extend_from_slice(&h.granted.to_le_bytes());
        out.extend_from_slice(&h.expires.to_le_bytes());
    }
    out.extend_from_slice(&(s.services.len().min(u16::MAX as usize) as u16).to_le_bytes());
    for u in s.services.iter().take(u16::MAX as usize) {
        ids(out, u.rating_group, u.service_identifier);
        for v in u.units {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    put(out, &s.last_answer);
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
    use crate::journal::le::LeReader;
    fn bytes<'a>(r: &mut LeReader<'a>) -> Option<&'a [u8]> {
        let n = r.u32()? as usize;
        r.bytes(n)
    }
    fn text(r: &mut LeReader<'_>) -> Option<String> {
        String::from_utf8(bytes(r)?.to_vec()).ok()
    }
    fn ids(r: &mut LeReader<'_>) -> Option<(Option<u32>, Option<u32>)> {
        let flags = r.u8()?;
        let (rg, si) = (r.u32()?, r.u32()?);
        if flags > 3 {
            return None;
        }
        Some((
            (flags & 1 != 0).then_some(rg),
            (flags & 2 != 0).then_some(si),
        ))
    }
    fn unit(code: u8) -> Option<Unit> {
        Some(match code {
            0 => Unit::Octets,
            1 => Unit::Seconds,
            2 => Unit::Events,
            3 => Unit::Money,
            _ => return None,
        })
    }
    let mut r = LeReader::new(data);
    let session_id = text(&mut r)?;
    let origin_host: Arc<str> = Arc::from(text(&mut r)?);
    let subscriber = text(&mut r)?.into_boxed_str();
    let account = AccountRef {
        tree: r.u32()?,
        node: r.u32()?,
    };
    let (started, deadline) = (r.i64()?, r.i64()?);
    let (last_number, last_type) = (r.u32()?, r.u8()?);
    let ended = match r.u8()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let mut held = Vec::new();
    for _ in 0..r.u16()? {
        let id = r.u64()?;
        let (rating_group, service_identifier) = ids(&mut r)?;
        held.push(Held {
            id,
            rating_group,
            service_identifier,
            unit: unit(r.u8()?)?,
            reserved: r.u64()?,
            granted: r.u64()?,
            expires: r.i64()?,
        });
    }
    let mut services = Vec::new();
    for _ in 0..r.u16()? {
        let (rating_group, service_identifier) = ids(&mut r)?;
        services.push(ServiceUsage {
            rating_group,
            service_identifier,
            units: [r.u64()?, r.u64()?, r.u64()?, r.u64()?],
        });
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
pub fn encode_ended(out: &mut Vec<u8>, session_id: &str, e: &Ended) {
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
    // The answer is last: written from the lingering session without copying it first.
    out.truncate(out.len() - 4);
    out.extend_from_slice(&(e.last_answer.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.last_answer);
}

impl ShardMaps {
    /// Puts back a session read from the journal or a snapshot.
    pub fn restore(&mut self, r: Restored) {
        if r.ended {
            self.end(&r.session_id, r.session);
        } else {
            self.open.insert(r.session_id.into(), Box::new(r.session));
        }
    }
}
