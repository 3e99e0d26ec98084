//! The ledger: account trees with limits per unit kind and period, and reservations taken
//! atomically on every node of a path (DESIGN.md §5). Sans-IO: every call takes `now` (Unix
//! seconds); nothing here reads a clock.
//!
//! Each tree (an enterprise, or a consumer's one-node tree) sits behind its own lock, so
//! different enterprises never contend; the lock is held for a walk up one path.
//!
//! Invariant at every counter, always: `used + reserved <= limit`. Reservations never break it
//! (a grant is cut to the smallest headroom on the path); only usage a gateway reports beyond
//! what it was granted can push `used` past the limit, and that is charged, never hidden.

pub mod period;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crossbeam_utils::CachePadded;
use jiff::tz::TimeZone;

pub use period::Period;

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Data volume, octets (CC-Total-Octets).
    Octets,
    /// Time, seconds (CC-Time).
    Seconds,
    /// Events or service-specific units (CC-Service-Specific-Units).
    Events,
    /// Money in the ledger's minor unit (see [`MONEY_SCALE`]).
    Money,
}

/// Money is counted in 10^-9 of the currency unit on the hot path (integer), so prices with up
/// to nine decimals are exact; rust_decimal is used at the edges (tariffs, config, reports).
pub const MONEY_SCALE: u32 = 9;

/// Where an account sits: its tree and its node in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccountRef {
    pub tree: u32,
    pub node: u32,
}

/// One limit on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    pub unit: Unit,
    pub period: Period,
    pub limit: u64,
    pub used: u64,
    pub reserved: u64,
    /// When the current period ends (Unix seconds); `used` starts again from zero then.
    pub period_end: i64,
    /// Money counters charged by a tariff: the octets rated in this period. The money used is
    /// always derived from this total, so rounding never accumulates.
    pub rated: u128,
}

impl Counter {
    pub fn new(unit: Unit, period: Period, limit: u64) -> Self {
        Counter {
            unit,
            period,
            limit,
            used: 0,
            reserved: 0,
            period_end: i64::MIN,
            rated: 0,
        }
    }

    /// Units still free: limit − used − reserved (zero when overspent by reported usage).
    pub fn headroom(&self) -> u64 {
        self.limit
            .saturating_sub(self.used)
            .saturating_sub(self.reserved)
    }

    /// Starts a new period if `now` is past the current one. Outstanding reservations carry over.
    pub fn roll(&mut self, tz: &TimeZone, now: i64) {
        if now >= self.period_end {
            if self.period_end != i64::MIN {
                self.used = 0;
                self.rated = 0;
            }
            self.period_end = period::period_end(self.period, tz, now);
        }
    }
}

/// A node of an account tree: an enterprise, a cost centre, a device, or a consumer.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub parent: Option<u32>,
    pub counters: Vec<Counter>,
    /// Removed from the tree: found by no lookup, but kept (indices are stable, and sessions
    /// still open on it settle as usual).
    pub removed: bool,
}

/// One enterprise (or consumer) and everything under it.
#[derive(Clone, Debug)]
pub struct Tree {
    pub name: String,
    pub tz: TimeZone,
    pub nodes: Vec<Node>,
    /// Removed (see [`Node::removed`]).
    pub removed: bool,
}

/// The outcome of a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Units reserved on every node of the path (0: nothing was free).
    pub granted: u64,
    /// This grant takes the last free units of some level: the gateway must get a
    /// Final-Unit-Indication.
    pub last: bool,
}

/// Longest path from a node to its root that is walked; deeper trees are refused at provisioning.
pub const MAX_DEPTH: usize = 16;

impl Tree {
    pub fn new(name: impl Into<String>, tz: TimeZone) -> Self {
        Tree {
            name: name.into(),
            tz,
            nodes: Vec::new(),
            removed: false,
        }
    }

    /// Adds a node under `parent` (None: a root) and returns its index.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        parent: Option<u32>,
        counters: Vec<Counter>,
    ) -> u32 {
        self.nodes.push(Node {
            name: name.into(),
            parent,
            counters,
            removed: false,
        });
        (self.nodes.len() - 1) as u32
    }

    /// The node and its ancestors, leaf first, without allocating.
    fn path(&self, node: u32) -> ([usize; MAX_DEPTH], usize) {
        let mut path = [0usize; MAX_DEPTH];
        let mut len = 0;
        let mut next = Some(node);
        while let Some(n) = next {
            let Some(found) = self.nodes.get(n as usize) else {
                break;
            };
            if len == MAX_DEPTH {
                break;
            }
            path[len] = n as usize;
            len += 1;
            next = found.parent;
        }
        (path, len)
    }

    /// Applies `f` to every counter of `unit` on the path from `node` to the root, after
    /// starting a new period where one has ended.
    fn each_counter(&mut self, node: u32, unit: Unit, now: i64, mut f: impl FnMut(&mut Counter)) {
        let (path, len) = self.path(node);
        let Tree { tz, nodes, .. } = self;
        for &n in &path[..len] {
            for c in nodes[n].counters.iter_mut().filter(|c| c.unit == unit) {
                c.roll(tz, now);
                f(c);
            }
        }
    }

    /// Reserves up to `want` units on every counter of `unit` along the path from `node` to the
    /// root: the grant is the smallest headroom on the path, one amount for all. A path with no
    /// counter of that unit is unlimited.
    pub fn reserve(&mut self, node: u32, unit: Unit, want: u64, now: i64) -> Grant {
        let smallest = self.headroom(node, unit, now);
        let granted = want.min(smallest);
        if granted > 0 {
            self.each_counter(node, unit, now, |c| c.reserved += granted);
        }
        Grant {
            granted,
            last: smallest != u64::MAX && granted == smallest,
        }
    }

    /// Settles a reservation: `reserved` units are returned and `used` units are charged, on
    /// every counter of `unit` along the path. Usage may exceed the reservation (a gateway
    /// reporting more than it was granted); it is charged all the same.
    pub fn commit(&mut self, node: u32, unit: Unit, reserved: u64, used: u64, now: i64) {
        self.each_counter(node, unit, now, |c| {
            c.reserved = c.reserved.saturating_sub(reserved);
            c.used = c.used.saturating_add(used);
        });
    }

    /// Returns a reservation unused (expiry, termination without usage).
    pub fn release(&mut self, node: u32, unit: Unit, reserved: u64, now: i64) {
        self.commit(node, unit, reserved, 0, now);
    }

    /// Adds `amount` to the reserved units on the path as it is, without sizing (replaying a
    /// journal: the grant was sized when it was made).
    pub fn add_reserved(&mut self, node: u32, unit: Unit, amount: u64, now: i64) {
        self.each_counter(node, unit, now, |c| {
            c.reserved = c.reserved.saturating_add(amount)
        });
    }

    /// Gives back `amount` units of usage (a refund), never below zero.
    pub fn refund(&mut self, node: u32, unit: Unit, amount: u64, now: i64) {
        self.each_counter(node, unit, now, |c| c.used = c.used.saturating_sub(amount));
    }

    /// Money accounts: returns `reserved` money units and charges `octets` at `price` (money
    /// units per octet as numerator/denominator). Each money counter charges
    /// ceil(rated × price) in total, so the sum of charges is exact whatever the split.
    /// Returns the money charged at the first money counter on the path (the account's own).
    pub fn commit_rated(
        &mut self,
        node: u32,
        reserved: u64,
        octets: u64,
        price: (u128, u128),
        now: i64,
    ) -> u64 {
        let (num, den) = price;
        if den == 0 {
            return 0;
        }
        let cost = |rated: u128| (rated * num).div_ceil(den);
        let mut charged = None;
        self.each_counter(node, Unit::Money, now, |c| {
            let before = cost(c.rated);
            c.rated = c.rated.saturating_add(u128::from(octets));
            let delta = u64::try_from(cost(c.rated) - before).unwrap_or(u64::MAX);
            c.reserved = c.reserved.saturating_sub(reserved);
            c.used = c.used.saturating_add(delta);
            charged.get_or_insert(delta);
        });
        charged.unwrap_or(0)
    }

    /// The smallest headroom for `unit` along the path (u64::MAX: unlimited).
    pub fn headroom(&mut self, node: u32, unit: Unit, now: i64) -> u64 {
        let mut smallest = u64::MAX;
        self.each_counter(node, unit, now, |c| smallest = smallest.min(c.headroom()));
        smallest
    }

    /// The names from the root down to `node`.
    pub fn names(&self, node: u32) -> Vec<&str> {
        let (path, len) = self.path(node);
        path[..len]
            .iter()
            .rev()
            .map(|&n| self.nodes[n].name.as_str())
            .collect()
    }

    /// Finds a node by its path of names from the root, e.g. `["acme", "iot"]`.
    pub fn find(&self, names: &[&str]) -> Option<u32> {
        let (last, above) = names.split_last()?;
        (0..self.nodes.len() as u32).find(|&i| {
            let n = &self.nodes[i as usize];
            if n.removed || n.name != *last {
                return false;
            }
            // Walk up without allocating: each ancestor must carry the next name up.
            let mut at = n.parent;
            for want in above.iter().rev() {
                match at.and_then(|p| self.nodes.get(p as usize)) {
                    Some(p) if p.name == *want => at = p.parent,
                    _ => return false,
                }
            }
            at.is_none()
        })
    }

    /// The node and everything under it.
    pub fn subtree(&self, node: u32) -> Vec<u32> {
        let mut out = vec![node];
        // Parents always come before their children, so one pass in index order suffices.
        let mut inside = vec![false; self.nodes.len()];
        if let Some(f) = inside.get_mut(node as usize) {
            *f = true;
        }
        for (i, n) in self.nodes.iter().enumerate().skip(node as usize + 1) {
            if n.parent.is_some_and(|p| inside[p as usize]) {
                inside[i] = true;
                out.push(i as u32);
            }
        }
        out
    }
}

/// Trees sit in segments that never move once allocated: segment k holds 2^k trees. Trees
/// are added while requests run, and readers find them without any lock.
const SEGMENTS: usize = 32;

type Slot = CachePadded<Mutex<Tree>>;

/// All trees, each behind its own cache-line-padded lock. Trees are only ever appended (a
/// removed tree stays as a tombstone), so an index, once handed out, names the same tree forever.
pub struct Ledger {
    segments: [OnceLock<Box<[OnceLock<Slot>]>>; SEGMENTS],
    len: AtomicUsize,
    /// Serialises appends.
    append: Mutex<()>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            segments: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
            append: Mutex::new(()),
        }
    }
}

/// Segment and offset of tree `i`: segment k covers indices 2^k − 1 .. 2^(k+1) − 1.
fn segment_of(i: usize) -> (usize, usize) {
    let k = (usize::BITS - 1 - (i + 1).leading_zeros()) as usize;
    (k, i + 1 - (1 << k))
}

impl Ledger {
    pub fn new() -> Self {
        Ledger::default()
    }

    /// Adds a tree and returns its index.
    pub fn add_tree(&self, tree: Tree) -> u32 {
        let _one = self.append.lock().unwrap_or_else(|p| p.into_inner());
        let i = self.len.load(Ordering::Acquire);
        let (k, at) = segment_of(i);
        let Some(segment) = self.segments.get(k) else {
            // 2^32 trees: the index space of the journal is exhausted long before.
            return u32::MAX;
        };
        let slots = segment.get_or_init(|| (0..1usize << k).map(|_| OnceLock::new()).collect());
        let _ = slots[at].set(CachePadded::new(Mutex::new(tree)));
        self.len.store(i + 1, Ordering::Release);
        i as u32
    }

    pub fn tree_count(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Locks one tree. The guard must not be held across I/O or `.await`.
    pub fn lock(&self, tree: u32) -> Option<MutexGuard<'_, Tree>> {
        let i = tree as usize;
        if i >= self.len.load(Ordering::Acquire) {
            return None;
        }
        let (k, at) = segment_of(i);
        let m = self.segments.get(k)?.get()?.get(at)?.get()?;
        // A poisoned lock means a panic while holding it; the counters are plain integers
        // updated in single statements, so the data is still consistent.
        Some(m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The live (not removed) tree of this name.
    pub fn find_tree(&self, name: &str) -> Option<u32> {
        (0..self.tree_count() as u32)
            .rev()
            .find(|&t| self.lock(t).is_some_and(|g| !g.removed && g.name == name))
    }

    pub fn reserve(&self, at: AccountRef, unit: Unit, want: u64, now: i64) -> Grant {
        match self.lock(at.tree) {
            Some(mut t) => t.reserve(at.node, unit, want, now),
            None => Grant {
                granted: 0,
                last: true,
            },
        }
    }

    pub fn commit(&self, at: AccountRef, unit: Unit, reserved: u64, used: u64, now: i64) {
        if let Some(mut t) = self.lock(at.tree) {
            t.commit(at.node, unit, reserved, used, now);
        }
    }

    pub fn release(&self, at: AccountRef, unit: Unit, reserved: u64, now: i64) {
        self.commit(at, unit, reserved, 0, now);
    }

    /// See [`Tree::commit_rated`].
    pub fn commit_rated(
        &self,
        at: AccountRef,
        reserved: u64,
        octets: u64,
        price: (u128, u128),
        now: i64,
    ) -> u64 {
        self.lock(at.tree).map_or(0, |mut t| {
            t.commit_rated(at.node, reserved, octets, price, now)
        })
    }
}

#[cfg(test)]
mod tests;
