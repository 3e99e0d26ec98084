//! RFC 4006 server sessions: per Session-Id, the account, the last request number and answer
//! (for retransmissions), and the units held for each service until they are reported, released
//! or expire. Sharded by Session-Id so that sessions of different gateways rarely share a lock.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

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

/// All sessions.
pub struct Sessions {
    shards: Vec<CachePadded<Mutex<SessionMap>>>,
    /// Open sessions per shard as last counted by supervision (a count that costs the hot
    /// path nothing and a full walk never).
    open: Vec<AtomicUsize>,
    hasher: foldhash::fast::RandomState,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashMap::default())))
                .collect(),
            open: (0..SHARDS).map(|_| AtomicUsize::new(0)).collect(),
            hasher: Default::default(),
        }
    }
}

pub type Shard<'a> = MutexGuard<'a, SessionMap>;

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

    /// Open (not terminated) sessions, counted now (a walk of every session).
    pub fn len(&self) -> usize {
        (0..SHARDS)
            .map(|i| {
                self.lock_shard(i)
                    .values()
                    .filter(|s| !s.terminated)
                    .count()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Notes shard `i`'s open sessions (supervision counts them on its walk).
    pub fn set_open(&self, i: usize, n: usize) {
        if let Some(c) = self.open.get(i) {
            c.store(n, Ordering::Relaxed);
        }
    }

    /// Open sessions as of each shard's last supervision.
    pub fn open_counted(&self) -> usize {
        self.open.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}
