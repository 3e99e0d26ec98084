//! RFC 4006 server sessions: per Session-Id, the account, the last request number and answer
//! (for retransmissions), and the units held for each service until they are reported, released
//! or expire. Sharded by Session-Id so that sessions of different gateways rarely share a lock.

use std::collections::HashMap;
use std::hash::BuildHasher;
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
    /// Units charged over the session's life, per unit kind (octets, seconds, events, money).
    pub charged: [u64; 4],
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

type SessionMap = HashMap<Box<str>, Session>;

/// All sessions.
pub struct Sessions {
    shards: Vec<CachePadded<Mutex<SessionMap>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashMap::new())))
                .collect(),
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
}
