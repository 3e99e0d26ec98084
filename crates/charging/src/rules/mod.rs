//! Rules over the request (DESIGN.md §5, BYOD): on any node of a tree, rules match a request's
//! attributes (rating group, service, APN, serving network and its zone, RAT type, roaming,
//! local weekday and time) and pick where each Multiple-Services-Credit-Control is charged:
//! the corporate path, the device user's personal account, a named tariff, or a denial.
//!
//! A device's own rules come first, then its parent's, up to the tenant's root; the first rule
//! that matches decides, and a request no rule matches is charged up the corporate path as
//! before. Rules are kept by the node's path, so an import that renumbers nodes keeps them.

pub mod attributes;
pub mod guards;
pub mod spec;

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

pub use attributes::{Plmn, RequestAttributes};
pub use guards::{GuardLimits, GuardSpec, Guards};
pub use spec::RuleSpec;

use crate::terms::SubscriptionType;

/// Where a rule sends an MSCC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Up the device's own path (what happens without rules).
    Corporate,
    /// To the personal account linked to the device.
    Personal,
    /// Up the corporate path, rated in money at the tenant's tariff of this name.
    Tariff(Arc<str>),
    /// Refused: 4010 DIAMETER_END_USER_SERVICE_DENIED for that MSCC only.
    Deny,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Corporate => "corporate",
            Action::Personal => "personal",
            Action::Tariff(_) => "tariff",
            Action::Deny => "deny",
        }
    }
}

/// One rule, compiled from its [`RuleSpec`]. Every condition given must hold; a condition not
/// given holds for any request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: Arc<str>,
    /// Inclusive ranges.
    rating_groups: Box<[(u32, u32)]>,
    service_ids: Box<[(u32, u32)]>,
    /// Lower case; a leading `*.` matches any APN ending in the rest.
    apn: Box<[Box<str>]>,
    /// Digit prefixes of the serving PLMN (an MCC, or an MCC and MNC).
    serving: Box<[Box<str>]>,
    zones: Box<[Box<str>]>,
    rat: Box<[u8]>,
    roaming: Option<bool>,
    /// Local weekdays, bit 0 Monday to bit 6 Sunday (0: any day).
    days: u8,
    /// Local times of day, seconds [from, to); from > to wraps past midnight.
    hours: Box<[(u32, u32)]>,
    pub action: Action,
    /// As it was given (for the API and explain).
    pub spec: RuleSpec,
}

/// What a rule is matched against: one MSCC of one request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts<'a> {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    pub apn: Option<&'a str>,
    pub serving: Option<Plmn>,
    pub zone: Option<&'a str>,
    pub rat: Option<u8>,
    pub roaming: bool,
    /// Local weekday (0 Monday) and second of the day, in the tenant's time zone.
    pub local: Option<(u8, u32)>,
}

fn in_ranges(v: Option<u32>, ranges: &[(u32, u32)]) -> bool {
    ranges.is_empty() || v.is_some_and(|v| ranges.iter().any(|&(a, b)| a <= v && v <= b))
}

fn apn_matches(apn: &str, pattern: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            apn.len() > suffix.len()
                && apn.as_bytes()[apn.len() - suffix.len() - 1] == b'.'
                && apn[apn.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => apn.eq_ignore_ascii_case(pattern),
    }
}

impl Rule {
    /// Whether the rule has conditions on the local time (its answer changes at edges).
    pub fn timed(&self) -> bool {
        self.days != 0 || !self.hours.is_empty()
    }

    pub fn matches(&self, f: &Facts) -> bool {
        if !in_ranges(f.rating_group, &self.rating_groups)
            || !in_ranges(f.service_identifier, &self.service_ids)
        {
            return false;
        }
        if !self.apn.is_empty()
            && !f
                .apn
                .is_some_and(|a| self.apn.iter().any(|p| apn_matches(a, p)))
        {
            return false;
        }
        if !self.serving.is_empty()
            && !f
                .serving
                .is_some_and(|s| self.serving.iter().any(|p| s.starts_with(p)))
        {
            return false;
        }
        if !self.zones.is_empty() && !f.zone.is_some_and(|z| self.zones.iter().any(|y| **y == *z)) {
            return false;
        }
        if !self.rat.is_empty() && !f.rat.is_some_and(|r| self.rat.contains(&r)) {
            return false;
        }
        if self.roaming.is_some_and(|r| r != f.roaming) {
            return false;
        }
        if self.timed() {
            let Some((day, second)) = f.local else {
                return false;
            };
            if self.days != 0 && self.days & (1 << day) == 0 {
                return false;
            }
            if !self.hours.is_empty()
                && !self.hours.iter().any(|&(from, to)| {
                    if from <= to {
                        from <= second && second < to
                    } else {
                        second >= from || second < to
                    }
                })
            {
                return false;
            }
        }
        true
    }

    /// The local seconds of the day at which this rule's answer may change.
    fn edges(&self, out: &mut Vec<u32>) {
        if self.days != 0 {
            out.push(0);
        }
        for &(from, to) in &*self.hours {
            out.push(from);
            out.push(to);
        }
    }
}

/// The rules of a tree: by node path, and the personal accounts linked to devices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleBook {
    by_path: HashMap<Box<str>, Arc<[Rule]>, RandomState>,
    /// Device paths to the subscription of the personal account they may charge.
    personal: HashMap<Box<str>, (SubscriptionType, Box<str>), RandomState>,
    /// Guards by node path.
    guards: HashMap<Box<str>, Guards, RandomState>,
    /// Path depths (1: the root) that have rules or guards: others are not looked up.
    depths: u32,
    timed: bool,
}

/// The rule lists that apply to a device, its own first, then upwards.
pub type Chain<'a> = Vec<&'a [Rule]>;

impl RuleBook {
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty() && self.personal.is_empty() && self.guards.is_empty()
    }

    /// Whether a request on this tree needs a look at its path: rules or guards are set.
    pub fn has_rules(&self) -> bool {
        !self.by_path.is_empty() || !self.guards.is_empty()
    }

    /// Sets the guards of the node at `path` (none: removes them).
    pub fn set_guards(&mut self, path: &str, guards: Option<Guards>) {
        let path = path.trim_matches('/');
        match guards.filter(|g| !g.limits.is_empty()) {
            Some(g) => {
                self.guards.insert(path.into(), g);
            }
            None => {
                self.guards.remove(path);
            }
        }
        self.reindex();
    }

    /// The guards set on the node at `path`.
    pub fn guards_of(&self, path: &str) -> Option<&Guards> {
        self.guards.get(path.trim_matches('/'))
    }

    /// Every node path that has guards, sorted.
    pub fn guard_paths(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.guards.keys().map(|k| &**k).collect();
        v.sort_unstable();
        v
    }

    /// Whether any rule depends on the local time.
    pub fn timed(&self) -> bool {
        self.timed
    }

    /// Replaces the rules of the node at `path` (none: removes them).
    pub fn set(&mut self, path: &str, rules: Vec<Rule>) {
        let path = path.trim_matches('/');
        if rules.is_empty() {
            self.by_path.remove(path);
        } else {
            self.by_path.insert(path.into(), rules.into());
        }
        self.reindex();
    }

    fn reindex(&mut self) {
        self.depths = 0;
        self.timed = false;
        for (path, rules) in &self.by_path {
            let depth = path.split('/').count().min(31);
            self.depths |= 1 << depth;
            self.timed |= rules.iter().any(Rule::timed);
        }
        for path in self.guards.keys() {
            self.depths |= 1 << path.split('/').count().min(31);
        }
    }

    /// The rules set on the node at `path`.
    pub fn rules_of(&self, path: &str) -> &[Rule] {
        self.by_path.get(path.trim_matches('/')).map_or(&[], |r| r)
    }

    /// Every node path that has rules, sorted.
    pub fn paths(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_path.keys().map(|k| &**k).collect();
        v.sort_unstable();
        v
    }

    /// Links a device to the subscription of its user's personal account (none: unlinks).
    pub fn set_personal(&mut self, path: &str, account: Option<(SubscriptionType, String)>) {
        let path = path.trim_matches('/');
        match account {
            Some((kind, id)) => {
                self.personal.insert(path.into(), (kind, id.into()));
            }
            None => {
                self.personal.remove(path);
            }
        }
    }

    /// The personal account linked to the device at `path`.
    pub fn personal_of(&self, path: &str) -> Option<(SubscriptionType, &str)> {
        self.personal
            .get(path.trim_matches('/'))
            .map(|(k, id)| (*k, &**id))
    }

    /// The links, sorted by device path.
    pub fn personal_links(&self) -> Vec<(&str, SubscriptionType, &str)> {
        let mut v: Vec<_> = self
            .personal
            .iter()
            .map(|(p, (k, id))| (&**p, *k, &**id))
            .collect();
        v.sort_unstable_by_key(|(p, _, _)| *p);
        v
    }

    /// The rule lists for a device whose path from the root is `names`, its own first.
    pub fn chain(&self, names: &[&str]) -> Chain<'_> {
        self.lookup(names).chain
    }

    /// What applies to the device whose path from the root is `names`: its rule lists (its own
    /// first), its personal account, and its guards (the nearest node's, field by field).
    pub fn lookup(&self, names: &[&str]) -> Lookup<'_> {
        let mut out = Lookup::default();
        if self.is_empty() {
            return out;
        }
        let mut path = String::with_capacity(names.iter().map(|n| n.len() + 1).sum());
        let mut ends = [0usize; crate::ledger::MAX_DEPTH];
        let depth = names.len().min(crate::ledger::MAX_DEPTH);
        for (i, n) in names.iter().enumerate().take(depth) {
            if i > 0 {
                path.push('/');
            }
            path.push_str(n);
            ends[i] = path.len();
        }
        for d in (1..=depth).rev() {
            if self.depths & (1 << d.min(31)) == 0 {
                continue;
            }
            let at = &path[..ends[d - 1]];
            if let Some(r) = self.by_path.get(at) {
                out.chain.push(&**r);
            }
            if let Some(g) = self.guards.get(at) {
                match &mut out.guards {
                    None => out.guards = Some(g.limits),
                    Some(mine) => mine.inherit(&g.limits),
                }
            }
        }
        if !self.personal.is_empty() {
            out.personal = self.personal_of(&path);
        }
        out
    }
}

/// What [`RuleBook::lookup`] finds for a device.
#[derive(Debug, Default)]
pub struct Lookup<'a> {
    pub chain: Chain<'a>,
    pub personal: Option<(SubscriptionType, &'a str)>,
    pub guards: Option<GuardLimits>,
}

/// The first rule of the chain that matches.
pub fn decide<'r>(chain: &[&'r [Rule]], facts: &Facts) -> Option<&'r Rule> {
    chain
        .iter()
        .flat_map(|r| r.iter())
        .find(|r| r.matches(facts))
}

/// Seconds from `second` (of the local day) to the next local time at which any timed rule of
/// the chain may answer differently: a grant made now must not outlast it. `None`: no rule
/// depends on the time. (Days are taken as 86,400 s; on the day a clock changes, an edge
/// after the change comes an hour early or late.)
pub fn next_edge(chain: &[&[Rule]], second: u32) -> Option<u32> {
    let mut edges = Vec::new();
    for r in chain.iter().flat_map(|r| r.iter()) {
        r.edges(&mut edges);
    }
    edges
        .into_iter()
        .map(|t| {
            if t > second {
                t - second
            } else {
                t + 86_400 - second
            }
        })
        .min()
}

/// The local weekday (0 Monday) and second of the day of `now` in `tz`.
pub fn local_time(tz: &jiff::tz::TimeZone, now: i64) -> Option<(u8, u32)> {
    let z = jiff::Timestamp::from_second(now).ok()?.to_zoned(tz.clone());
    let day = z.weekday().to_monday_zero_offset() as u8;
    let second = z.hour() as u32 * 3600 + z.minute() as u32 * 60 + z.second() as u32;
    Some((day, second))
}

/// Roaming zones: names to the serving networks (MCC or MCC and MNC prefixes) they cover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zones(pub Vec<(String, Vec<String>)>);

impl Zones {
    /// The first zone (in name order) that covers `plmn`.
    pub fn of(&self, plmn: Plmn) -> Option<&str> {
        self.0
            .iter()
            .find(|(_, prefixes)| prefixes.iter().any(|p| plmn.starts_with(p)))
            .map(|(name, _)| name.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }
}

#[cfg(test)]
mod tests;
