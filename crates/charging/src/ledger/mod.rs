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
pub mod threshold;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crossbeam_utils::CachePadded;
use jiff::tz::TimeZone;

pub use period::Period;
pub use threshold::{Crossing, DefaultPercents, Level, Threshold};

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

/// The service classes one reservation or charge belongs to (docs/rules.md): a class of
/// service (a set of rating groups and service identifiers) and whether the device roams. A
/// counter with a class counts only what belongs to its class; 0 is no class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Classes(pub [u32; 2]);

impl Classes {
    /// A general charge: it counts against general limits only.
    pub const NONE: Classes = Classes([0, 0]);

    /// Whether a counter of class `class` counts this.
    pub fn covers(self, class: u32) -> bool {
        class == 0 || self.0.contains(&class)
    }

    pub fn is_none(self) -> bool {
        self == Classes::NONE
    }
}

/// One limit on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    pub unit: Unit,
    /// The service class it counts (0: everything of its unit).
    pub class: u32,
    pub period: Period,
    pub limit: u64,
    pub used: u64,
    pub reserved: u64,
    /// When the current period ends (Unix seconds); `used` starts again from zero then.
    pub period_end: i64,
    /// Money counters charged by a tariff: the octets rated in this period. The money used is
    /// always derived from this total, so rounding never accumulates.
    pub rated: u128,
    /// The node's own thresholds that fired this period, by their place among those that
    /// apply to this counter ([`threshold`]).
    pub fired: u16,
    /// The default levels (of accounts) that fired this period, by place.
    pub fired_default: u8,
}

impl Counter {
    pub fn new(unit: Unit, period: Period, limit: u64) -> Self {
        Counter {
            unit,
            class: 0,
            period,
            limit,
            used: 0,
            reserved: 0,
            period_end: i64::MIN,
            rated: 0,
            fired: 0,
            fired_default: 0,
        }
    }

    /// Whether this counter counts a charge of `unit` in `classes`.
    pub fn counts(&self, unit: Unit, classes: Classes) -> bool {
        self.unit == unit && classes.covers(self.class)
    }

    /// Units still free: limit − used − reserved (zero when overspent by reported usage).
    pub fn headroom(&self) -> u64 {
        self.limit
            .saturating_sub(self.used)
            .saturating_sub(self.reserved)
    }

    /// Starts a new period if `now` is past the current one. Outstanding reservations carry over.
    pub(crate) fn roll(&mut self, tz: &TimeZone, now: i64) {
        if now >= self.period_end {
            if self.period_end != i64::MIN {
                self.used = 0;
                self.rated = 0;
            }
            // A new period re-arms every threshold.
            self.fired = 0;
            self.fired_default = 0;
            self.period_end = period::period_end(self.period, tz, now);
        }
    }
}

impl Unit {
    /// Every unit, in the order of [`unit_index`] (the journal's and snapshots' unit codes).
    pub const ALL: [Unit; 4] = [Unit::Octets, Unit::Seconds, Unit::Events, Unit::Money];
}

/// What `octets` cost at `price` (money units per octet, as numerator and denominator),
/// rounded up; saturating, so no tariff and no amount can overflow it.
pub fn cost(octets: u128, price: (u128, u128)) -> u128 {
    octets.saturating_mul(price.0).div_ceil(price.1.max(1))
}

/// Index of a unit in per-unit arrays, and its code in the journal and snapshots.
pub const fn unit_index(u: Unit) -> usize {
    match u {
        Unit::Octets => 0,
        Unit::Seconds => 1,
        Unit::Events => 2,
        Unit::Money => 3,
    }
}

/// What one account (a device or consumer: the node a subscription names) was charged in one
/// unit, per kind of period, whether or not a limit counts it. A refund gives back at most this;
/// a limit added later on the account or above it starts from the sum of these below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnUsage {
    pub unit: Unit,
    /// Used in the current day, month, and in total (index: [`period_index`]).
    pub used: [u64; 3],
    /// When the current day and month end (Unix seconds; i64::MIN: not started).
    pub ends: [i64; 2],
}

/// Index of a period in [`OwnUsage::used`].
pub const fn period_index(p: Period) -> usize {
    match p {
        Period::Day => 0,
        Period::Month => 1,
        Period::Total => 2,
    }
}

impl OwnUsage {
    fn new(unit: Unit) -> Self {
        OwnUsage {
            unit,
            used: [0; 3],
            ends: [i64::MIN; 2],
        }
    }

    /// Starts a new day or month where one has ended.
    fn roll(&mut self, tz: &TimeZone, now: i64) {
        for (i, p) in [Period::Day, Period::Month].into_iter().enumerate() {
            if now >= self.ends[i] {
                self.used[i] = 0;
                self.ends[i] = period::period_end(p, tz, now);
            }
        }
    }

    /// Used in `period` as of `now`, without changing anything.
    pub(crate) fn used_in(&self, period: Period, now: i64) -> u64 {
        let i = period_index(period);
        if i < 2 && now >= self.ends[i] {
            0
        } else {
            self.used[i]
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
    /// Units held by reservations of this node's subtree, per unit ([`unit_index`]), whether or
    /// not a limit counts them: a limit set later starts with exactly this reserved.
    pub reserved: [u64; 4],
    /// What this node was charged as an account (only accounts, the leaves, have any).
    pub own: Vec<OwnUsage>,
}

/// One enterprise (or consumer) and everything under it.
#[derive(Clone, Debug)]
pub struct Tree {
    pub name: String,
    pub tz: TimeZone,
    pub nodes: Vec<Node>,
    /// Removed (see [`Node::removed`]).
    pub removed: bool,
    /// The nodes that have thresholds of their own, and those (most nodes have none).
    pub thresholds: HashMap<u32, Box<[Threshold]>>,
    /// The levels every account (the node a request charges) has on each of its limits.
    pub default_levels: Arc<[Level]>,
    /// Nodes a manager blocked: nothing under them is granted (most trees have none).
    pub blocked: std::collections::HashSet<u32>,
    /// Changes whenever a node is added or removed: what a view found by walking the tree
    /// (a node by its path, its children) holds while this stays the same.
    pub shape: u64,
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
            thresholds: HashMap::new(),
            default_levels: Arc::from([]),
            blocked: std::collections::HashSet::new(),
            shape: 0,
        }
    }

    /// The node on the path from `node` whose limits of `unit` have the least headroom (the
    /// one nearest `node` of those tied): the level that decides a grant.
    pub fn limiting(&self, node: u32, unit: Unit) -> Option<u32> {
        self.limiting_in(node, unit, Classes::NONE)
    }

    /// [`Self::limiting`] for a charge in `classes`.
    pub fn limiting_in(&self, node: u32, unit: Unit, classes: Classes) -> Option<u32> {
        let (path, len) = self.path(node);
        let mut best: Option<(u64, u32)> = None;
        for &n in &path[..len] {
            for c in self.nodes[n]
                .counters
                .iter()
                .filter(|c| c.counts(unit, classes))
            {
                let h = c.headroom();
                if best.is_none_or(|(b, _)| h < b) {
                    best = Some((h, n as u32));
                }
            }
        }
        best.map(|(_, n)| n)
    }

    /// Whether `node` or a node above it is blocked.
    pub fn is_blocked(&self, node: u32) -> bool {
        self.blocked_by(node).is_some()
    }

    /// The nearest node at or above `node` that is blocked, if any.
    pub fn blocked_by(&self, node: u32) -> Option<u32> {
        if self.blocked.is_empty() {
            return None;
        }
        let (path, len) = self.path(node);
        path[..len]
            .iter()
            .map(|&n| n as u32)
            .find(|n| self.blocked.contains(n))
    }

    /// The levels of a node's own thresholds that apply to `c`, in bit order.
    fn own_levels(
        thresholds: &HashMap<u32, Box<[Threshold]>>,
        node: u32,
        (unit, period): (Unit, Period),
    ) -> impl Iterator<Item = Level> {
        thresholds
            .get(&node)
            .into_iter()
            .flat_map(|t| t.iter())
            .filter(move |t| t.applies(unit, period))
            .map(|t| t.level)
    }

    /// After usage of `unit` was charged to the account `node`: the thresholds on its path
    /// that it crossed for the first time this period (the account's default levels included),
    /// now marked fired.
    pub fn crossings(&mut self, node: u32, unit: Unit) -> Vec<Crossing> {
        self.crossings_in(node, unit, Classes::NONE)
    }

    /// [`Self::crossings`] after a charge in `classes`.
    pub fn crossings_in(&mut self, node: u32, unit: Unit, classes: Classes) -> Vec<Crossing> {
        let mut out = Vec::new();
        if self.thresholds.is_empty() && self.default_levels.is_empty() {
            return out;
        }
        let (path, len) = self.path(node);
        let Tree {
            nodes,
            thresholds,
            default_levels,
            ..
        } = self;
        for (depth, &n) in path[..len].iter().enumerate() {
            let own = thresholds.contains_key(&(n as u32));
            if depth > 0 && !own {
                continue;
            }
            for c in nodes[n]
                .counters
                .iter_mut()
                .filter(|c| c.counts(unit, classes))
            {
                if depth == 0 {
                    c.cross(n as u32, true, default_levels.iter().copied(), &mut out);
                }
                if own {
                    let levels = Self::own_levels(thresholds, n as u32, (c.unit, c.period));
                    c.cross(n as u32, false, levels, &mut out);
                }
            }
        }
        out
    }

    /// Re-arms the thresholds of `node`'s limits that usage no longer reaches (after its limits
    /// changed).
    pub fn rearm(&mut self, node: u32) {
        let Tree {
            nodes,
            thresholds,
            default_levels,
            ..
        } = self;
        let Some(nd) = nodes.get_mut(node as usize) else {
            return;
        };
        for c in &mut nd.counters {
            c.rearm(true, default_levels.iter().copied());
            let levels = Self::own_levels(thresholds, node, (c.unit, c.period));
            c.rearm(false, levels);
        }
    }

    /// Replaces a node's own thresholds; levels usage already reached count as fired.
    pub fn set_thresholds(&mut self, node: u32, list: Vec<Threshold>) {
        if list.is_empty() {
            self.thresholds.remove(&node);
        } else {
            self.thresholds.insert(node, list.into_boxed_slice());
        }
        let Tree {
            nodes, thresholds, ..
        } = self;
        let Some(nd) = nodes.get_mut(node as usize) else {
            return;
        };
        for c in &mut nd.counters {
            let levels = Self::own_levels(thresholds, node, (c.unit, c.period));
            c.rebase(levels);
        }
    }

    /// Marks a threshold fired as the journal recorded it (replay), if its counter is still in
    /// the period it fired in and the level at that bit is still the one that fired.
    pub fn mark_fired(&mut self, c: &Crossing) {
        let Tree {
            nodes,
            thresholds,
            default_levels,
            ..
        } = self;
        let Some(nd) = nodes.get_mut(c.node as usize) else {
            return;
        };
        let Some(counter) = nd.counters.iter_mut().find(|k| {
            k.unit == c.unit
                && k.class == c.class
                && k.period == c.period
                && k.period_end == c.period_end
        }) else {
            return;
        };
        let level = if c.default {
            default_levels.get(usize::from(c.bit)).copied()
        } else {
            Self::own_levels(thresholds, c.node, (counter.unit, counter.period))
                .nth(usize::from(c.bit))
        };
        if level != Some(c.level) {
            return;
        }
        if c.default {
            counter.fired_default |= 1 << c.bit;
        } else {
            counter.fired |= 1 << c.bit;
        }
    }

    /// Counts the thresholds of `node`'s limits that usage already reached as fired: its own
    /// (`own`) and the default levels (`default`). For counters restored without that state.
    pub fn settle_fired(&mut self, node: u32, own: bool, default: bool) {
        let Tree {
            nodes,
            thresholds,
            default_levels,
            ..
        } = self;
        let Some(nd) = nodes.get_mut(node as usize) else {
            return;
        };
        for c in &mut nd.counters {
            if own {
                let levels = Self::own_levels(thresholds, node, (c.unit, c.period));
                c.rebase(levels);
            }
            if default {
                c.fired_default = 0;
                for (bit, level) in default_levels.iter().enumerate() {
                    if level.reached(c.used, c.limit) {
                        c.fired_default |= 1 << bit;
                    }
                }
            }
        }
    }

    /// Takes new default levels: those usage already reached count as fired.
    fn set_default_levels(&mut self, levels: Arc<[Level]>) {
        if *levels == *self.default_levels {
            return;
        }
        self.default_levels = levels;
        for n in 0..self.nodes.len() as u32 {
            self.settle_fired(n, false, true);
        }
    }

    /// Adds a node under `parent` (None: a root) and returns its index.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        parent: Option<u32>,
        counters: Vec<Counter>,
    ) -> u32 {
        self.shape = self.shape.wrapping_add(1);
        self.nodes.push(Node {
            name: name.into(),
            parent,
            counters,
            removed: false,
            reserved: [0; 4],
            own: Vec::new(),
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

    /// Applies `f` to every node on the path from `node` to the root and to its counters,
    /// after starting a new period where one has ended in a counter of `unit` in `classes`.
    fn each_node(
        &mut self,
        node: u32,
        (unit, classes): (Unit, Classes),
        now: i64,
        mut f: impl FnMut(&mut [u64; 4], &mut [Counter]),
    ) {
        let (path, len) = self.path(node);
        let Tree { tz, nodes, .. } = self;
        for &n in &path[..len] {
            let Node {
                counters, reserved, ..
            } = &mut nodes[n];
            for c in counters.iter_mut().filter(|c| c.counts(unit, classes)) {
                c.roll(tz, now);
            }
            f(reserved, counters);
        }
    }

    /// Applies `f` to every counter of `unit` in `classes` on the path from `node` to the
    /// root, after starting a new period where one has ended.
    fn each_counter(
        &mut self,
        node: u32,
        (unit, classes): (Unit, Classes),
        now: i64,
        mut f: impl FnMut(&mut Counter),
    ) {
        self.each_node(node, (unit, classes), now, |_, counters| {
            for c in counters.iter_mut().filter(|c| c.counts(unit, classes)) {
                f(c);
            }
        });
    }

    /// Moves `add` units into and `sub` units out of reservation on every node of the path
    /// and every counter of `unit` in `classes` there.
    fn hold(&mut self, node: u32, scope: (Unit, Classes), add: u64, sub: u64, now: i64) {
        let (unit, classes) = scope;
        let u = unit_index(unit);
        self.each_node(node, scope, now, |reserved, counters| {
            reserved[u] = reserved[u].saturating_sub(sub).saturating_add(add);
            for c in counters.iter_mut().filter(|c| c.counts(unit, classes)) {
                c.reserved = c.reserved.saturating_sub(sub).saturating_add(add);
            }
        });
    }

    /// The account's own usage of `unit`, rolled to `now` (created on first use).
    fn own_mut(&mut self, node: u32, unit: Unit, now: i64) -> Option<&mut OwnUsage> {
        let Tree { tz, nodes, .. } = self;
        let n = nodes.get_mut(node as usize)?;
        let i = match n.own.iter().position(|o| o.unit == unit) {
            Some(i) => i,
            None => {
                n.own.reserve_exact(1);
                n.own.push(OwnUsage::new(unit));
                n.own.len() - 1
            }
        };
        let o = &mut n.own[i];
        o.roll(tz, now);
        Some(o)
    }

    /// Adds `used` to the account's own usage in every period.
    fn charge_own(&mut self, node: u32, unit: Unit, used: u64, now: i64) {
        if used == 0 {
            return;
        }
        if let Some(o) = self.own_mut(node, unit, now) {
            for v in &mut o.used {
                *v = v.saturating_add(used);
            }
        }
    }

    /// Reserves up to `want` units on every counter of `unit` along the path from `node` to the
    /// root: the grant is the smallest headroom on the path, one amount for all. A path with no
    /// counter of that unit is unlimited (the engine decides whether to grant on such a path).
    pub fn reserve(&mut self, node: u32, unit: Unit, want: u64, now: i64) -> Grant {
        self.reserve_in(node, (unit, Classes::NONE), want, now)
    }

    /// [`Self::reserve`] of a charge in some classes: the class limits that count them apply
    /// beside the general ones.
    pub fn reserve_in(&mut self, node: u32, scope: (Unit, Classes), want: u64, now: i64) -> Grant {
        let smallest = self.headroom_in(node, scope, now);
        let granted = want.min(smallest);
        if granted > 0 {
            self.hold(node, scope, granted, 0, now);
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
        self.commit_in(node, (unit, Classes::NONE), reserved, used, now);
    }

    /// [`Self::commit`] of a charge in some classes.
    pub fn commit_in(
        &mut self,
        node: u32,
        scope: (Unit, Classes),
        reserved: u64,
        used: u64,
        now: i64,
    ) {
        self.hold(node, scope, 0, reserved, now);
        if used > 0 {
            self.each_counter(node, scope, now, |c| c.used = c.used.saturating_add(used));
            self.charge_own(node, scope.0, used, now);
        }
    }

    /// Returns a reservation unused (expiry, termination without usage).
    pub fn release(&mut self, node: u32, unit: Unit, reserved: u64, now: i64) {
        self.commit(node, unit, reserved, 0, now);
    }

    /// Adds `amount` to the reserved units on the path as it is, without sizing (replaying a
    /// journal: the grant was sized when it was made).
    pub(crate) fn add_reserved(
        &mut self,
        node: u32,
        scope: (Unit, Classes),
        amount: u64,
        now: i64,
    ) {
        self.hold(node, scope, amount, 0, now);
    }

    /// How much of `unit` a refund to the account `node` may give back: what the account itself
    /// was charged in the period of every limit on the path (and no more than any of those
    /// limits counts as used), so a refund never takes back another account's usage.
    pub fn refundable(&mut self, node: u32, unit: Unit, now: i64) -> u64 {
        let own = match self.own_mut(node, unit, now) {
            Some(o) => o.clone(),
            None => return 0,
        };
        let mut most = own.used[period_index(Period::Total)];
        self.each_counter(node, (unit, Classes::NONE), now, |c| {
            most = most.min(c.used).min(own.used[period_index(c.period)]);
        });
        most
    }

    /// Gives back `amount` units of usage (a refund) on the path and in the account's own
    /// usage. Returns false, changing nothing, if that is more than [`Self::refundable`].
    pub fn refund(&mut self, node: u32, unit: Unit, amount: u64, now: i64) -> bool {
        if amount > self.refundable(node, unit, now) {
            return false;
        }
        self.each_counter(node, (unit, Classes::NONE), now, |c| c.used -= amount);
        if let Some(o) = self.own_mut(node, unit, now) {
            for v in &mut o.used {
                *v = v.saturating_sub(amount);
            }
        }
        true
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
        self.commit_rated_in(node, Classes::NONE, reserved, octets, price, now)
    }

    /// [`Self::commit_rated`] of a charge in some classes.
    pub fn commit_rated_in(
        &mut self,
        node: u32,
        classes: Classes,
        reserved: u64,
        octets: u64,
        price: (u128, u128),
        now: i64,
    ) -> u64 {
        let scope = (Unit::Money, classes);
        self.hold(node, scope, 0, reserved, now);
        if price.1 == 0 {
            return 0;
        }
        let cost = |rated: u128| cost(rated, price);
        let mut charged = None;
        self.each_counter(node, scope, now, |c| {
            let before = cost(c.rated);
            c.rated = c.rated.saturating_add(u128::from(octets));
            let delta = u64::try_from(cost(c.rated).saturating_sub(before)).unwrap_or(u64::MAX);
            c.used = c.used.saturating_add(delta);
            charged.get_or_insert(delta);
        });
        let charged = charged.unwrap_or(0);
        self.charge_own(node, Unit::Money, charged, now);
        charged
    }

    /// What the accounts of `node`'s subtree used of `unit` in the current `period`: where a
    /// new limit starts.
    pub(crate) fn subtree_used(&self, node: u32, unit: Unit, period: Period, now: i64) -> u64 {
        self.subtree(node)
            .into_iter()
            .filter_map(|n| self.nodes.get(n as usize))
            .flat_map(|n| n.own.iter().filter(|o| o.unit == unit))
            .fold(0u64, |sum, o| sum.saturating_add(o.used_in(period, now)))
    }

    /// Replaces a node's limits. A limit of the same unit and period keeps its count; a new one
    /// starts with what the subtree used in its period and what it holds reserved, so a limit
    /// changed while sessions are open neither forgets their grants nor lets them be spent twice.
    pub fn set_limits(&mut self, node: u32, new: Vec<Counter>, now: i64) {
        let mut next = Vec::with_capacity(new.len());
        for n in new {
            let old = self.nodes.get(node as usize).and_then(|nd| {
                nd.counters
                    .iter()
                    .find(|c| c.unit == n.unit && c.period == n.period && c.class == n.class)
                    .cloned()
            });
            match old {
                Some(old) => next.push(Counter {
                    limit: n.limit,
                    ..old
                }),
                None => {
                    let mut c = Counter::new(n.unit, n.period, n.limit);
                    c.class = n.class;
                    c.roll(&self.tz, now);
                    // A class limit starts from nothing: what the subtree used and holds is
                    // not kept by class.
                    if n.class == 0 {
                        c.used = self.subtree_used(node, n.unit, n.period, now);
                        c.reserved = self
                            .nodes
                            .get(node as usize)
                            .map_or(0, |nd| nd.reserved[unit_index(n.unit)]);
                    }
                    next.push(c);
                }
            }
        }
        if let Some(nd) = self.nodes.get_mut(node as usize) {
            nd.counters = next;
        }
        self.rearm(node);
    }

    /// Whether any node on the path from `node` to the root has a limit in `unit`.
    pub fn limited(&self, node: u32, unit: Unit) -> bool {
        self.limited_in(node, unit, Classes::NONE)
    }

    /// Whether any limit on the path counts a charge of `unit` in `classes`.
    pub fn limited_in(&self, node: u32, unit: Unit, classes: Classes) -> bool {
        let (path, len) = self.path(node);
        path[..len].iter().any(|&n| {
            self.nodes[n]
                .counters
                .iter()
                .any(|c| c.counts(unit, classes))
        })
    }

    /// Whether `ancestor` is `node` or above it.
    pub(crate) fn is_ancestor(&self, ancestor: u32, node: u32) -> bool {
        let (path, len) = self.path(node);
        path[..len].contains(&(ancestor as usize))
    }

    /// The smallest headroom for `unit` along the path (u64::MAX: unlimited).
    pub fn headroom(&mut self, node: u32, unit: Unit, now: i64) -> u64 {
        self.headroom_in(node, (unit, Classes::NONE), now)
    }

    /// [`Self::headroom`] for a charge in some classes.
    pub fn headroom_in(&mut self, node: u32, scope: (Unit, Classes), now: i64) -> u64 {
        let mut smallest = u64::MAX;
        self.each_counter(node, scope, now, |c| smallest = smallest.min(c.headroom()));
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
    /// Nodes blocked in all trees: while none is, a request's check takes no lock.
    blocked: AtomicUsize,
    /// Serialises appends, and holds the default levels new trees get.
    append: Mutex<Arc<[Level]>>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            segments: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
            blocked: AtomicUsize::new(0),
            append: Mutex::new(Arc::from([])),
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
    pub fn add_tree(&self, mut tree: Tree) -> u32 {
        let defaults = self.append.lock().unwrap_or_else(|p| p.into_inner());
        tree.set_default_levels(defaults.clone());
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

    /// Sets the levels every account has on each of its limits (at most
    /// [`threshold::MAX_DEFAULT_LEVELS`]; more are ignored). Where they change, levels usage
    /// already reached count as fired.
    pub fn set_default_levels(&self, levels: &[Level]) {
        let levels: Arc<[Level]> = levels
            .iter()
            .copied()
            .take(threshold::MAX_DEFAULT_LEVELS)
            .collect();
        let mut defaults = self.append.lock().unwrap_or_else(|p| p.into_inner());
        *defaults = levels.clone();
        for t in 0..self.tree_count() as u32 {
            if let Some(mut tree) = self.lock(t) {
                tree.set_default_levels(levels.clone());
            }
        }
    }

    /// The default levels of accounts.
    pub fn default_levels(&self) -> Arc<[Level]> {
        self.append
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
        self.reserve_in(at, (unit, Classes::NONE), want, now)
    }

    /// See [`Tree::reserve_in`].
    pub fn reserve_in(&self, at: AccountRef, scope: (Unit, Classes), want: u64, now: i64) -> Grant {
        match self.lock(at.tree) {
            Some(mut t) => t.reserve_in(at.node, scope, want, now),
            None => Grant {
                granted: 0,
                last: true,
            },
        }
    }

    pub fn commit(&self, at: AccountRef, unit: Unit, reserved: u64, used: u64, now: i64) {
        self.commit_in(at, (unit, Classes::NONE), reserved, used, now);
    }

    /// See [`Tree::commit_in`].
    pub fn commit_in(
        &self,
        at: AccountRef,
        scope: (Unit, Classes),
        reserved: u64,
        used: u64,
        now: i64,
    ) {
        if let Some(mut t) = self.lock(at.tree) {
            t.commit_in(at.node, scope, reserved, used, now);
        }
    }

    pub fn release(&self, at: AccountRef, unit: Unit, reserved: u64, now: i64) {
        self.commit(at, unit, reserved, 0, now);
    }

    /// Returns a reservation made in some classes.
    pub fn release_in(&self, at: AccountRef, scope: (Unit, Classes), reserved: u64, now: i64) {
        self.commit_in(at, scope, reserved, 0, now);
    }

    /// See [`Tree::is_blocked`].
    pub fn is_blocked(&self, at: AccountRef) -> bool {
        self.blocked.load(Ordering::Acquire) > 0
            && self.lock(at.tree).is_some_and(|t| t.is_blocked(at.node))
    }

    /// Blocks or unblocks a node (an account change, under the tree's lock).
    pub fn set_blocked(&self, at: AccountRef, block: bool) {
        let Some(mut t) = self.lock(at.tree) else {
            return;
        };
        let changed = if block {
            t.blocked.insert(at.node)
        } else {
            t.blocked.remove(&at.node)
        };
        if changed {
            if block {
                self.blocked.fetch_add(1, Ordering::AcqRel);
            } else {
                self.blocked.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// See [`Tree::limited`].
    pub fn limited(&self, at: AccountRef, unit: Unit) -> bool {
        self.limited_in(at, unit, Classes::NONE)
    }

    /// See [`Tree::limited_in`].
    pub fn limited_in(&self, at: AccountRef, unit: Unit, classes: Classes) -> bool {
        self.lock(at.tree)
            .is_some_and(|t| t.limited_in(at.node, unit, classes))
    }

    /// See [`Tree::refund`].
    pub fn refund(&self, at: AccountRef, unit: Unit, amount: u64, now: i64) -> bool {
        self.lock(at.tree)
            .is_some_and(|mut t| t.refund(at.node, unit, amount, now))
    }

    /// Commits as [`Self::commit`] and returns the thresholds the usage crossed.
    pub fn commit_watched(
        &self,
        at: AccountRef,
        unit: Unit,
        reserved: u64,
        used: u64,
        now: i64,
    ) -> Vec<Crossing> {
        self.commit_watched_in(at, (unit, Classes::NONE), reserved, used, now)
    }

    /// Commits as [`Self::commit_in`] and returns the thresholds the usage crossed.
    pub fn commit_watched_in(
        &self,
        at: AccountRef,
        scope: (Unit, Classes),
        reserved: u64,
        used: u64,
        now: i64,
    ) -> Vec<Crossing> {
        let Some(mut t) = self.lock(at.tree) else {
            return Vec::new();
        };
        t.commit_in(at.node, scope, reserved, used, now);
        if used == 0 {
            return Vec::new();
        }
        t.crossings_in(at.node, scope.0, scope.1)
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
        self.commit_rated_in(at, Classes::NONE, reserved, octets, price, now)
    }

    /// See [`Tree::commit_rated_in`].
    pub fn commit_rated_in(
        &self,
        at: AccountRef,
        classes: Classes,
        reserved: u64,
        octets: u64,
        price: (u128, u128),
        now: i64,
    ) -> u64 {
        self.lock(at.tree).map_or(0, |mut t| {
            t.commit_rated_in(at.node, classes, reserved, octets, price, now)
        })
    }

    /// Commits as [`Self::commit_rated_in`]; returns what it charged and the thresholds of
    /// money limits the charge crossed.
    pub fn commit_rated_watched_in(
        &self,
        at: AccountRef,
        classes: Classes,
        reserved: u64,
        octets: u64,
        price: (u128, u128),
        now: i64,
    ) -> (u64, Vec<Crossing>) {
        let Some(mut t) = self.lock(at.tree) else {
            return (0, Vec::new());
        };
        let charged = t.commit_rated_in(at.node, classes, reserved, octets, price, now);
        if charged == 0 {
            return (0, Vec::new());
        }
        (charged, t.crossings_in(at.node, Unit::Money, classes))
    }
}

#[cfg(test)]
mod tests;
