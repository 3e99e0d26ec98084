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

pub fn unit_index(u: Unit) -> usize {
    match u {
        Unit::Octets => 0,
        Unit::Seconds => 1,
        Unit::Events => 2,
        Unit::Money => 3,
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
