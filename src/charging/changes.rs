//! Changes to the account tree while ocfd runs: provisioning imports (at start and on reload)
//! and the admin API's changes (tenants, nodes, limits, policies, allowance moves).
//!
//! Every change is planned first against the live tree, with every check made and nothing
//! touched; a bad change is refused whole. A planned change is then logged to the change log
//! (synced) and carried out under the engine's gate, so requests see the tree before it or after
//! it, never half of it, and a snapshot never cuts through one. Trees and nodes are only ever
//! appended (removal leaves a tombstone), so replaying the change log from the start rebuilds
//! every node at the index the ledger journal names.
//!
//! An import applies what its files changed since the last import and nothing else: a limit an
//! operator changed through the API stays as it is until the file changes that limit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::journal::changes::{ChangeLog, ChangeRecord};
use crate::ledger::{AccountRef, Counter, MAX_DEPTH, Period, Tree, Unit};

use super::engine::Engine;
use super::provisioning::{
    self, Amount, BuiltTenant, LimitSpec, NodeSpec, PolicySpec, Subscriptions, TenantSpec,
};
use super::tenant::{Policy, SubscriptionType};

/// One provisioning source of an import: a file's name and text.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// A change to the account tree, as logged and as the admin API takes it.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// The tenants of these sources replace those of the last import.
    Import { sources: Vec<Source> },
    /// A new tenant: its root node carries `limits`.
    AddTenant {
        name: String,
        #[serde(default)]
        time_zone: Option<String>,
        #[serde(default)]
        policy: PolicySpec,
        #[serde(default)]
        limits: Vec<LimitSpec>,
    },
    /// A tenant's whole policy, including what happens at a limit.
    SetPolicy { tenant: String, policy: PolicySpec },
    /// A node under an existing one: a cost centre, or a device if it has subscription ids.
    AddNode {
        path: String,
        #[serde(default)]
        limits: Vec<LimitSpec>,
        #[serde(default)]
        msisdn: Option<String>,
        #[serde(default)]
        imsi: Option<String>,
        #[serde(default)]
        nai: Option<String>,
        #[serde(default)]
        sip_uri: Option<String>,
    },
    /// A node's limits, all of them: usage in a period is kept for a limit of the same unit
    /// and period.
    SetLimits {
        path: String,
        limits: Vec<LimitSpec>,
    },
    /// A node's subscription ids, all of them (none: it is no longer a device).
    SetSubscriptions {
        path: String,
        #[serde(default)]
        msisdn: Option<String>,
        #[serde(default)]
        imsi: Option<String>,
        #[serde(default)]
        nai: Option<String>,
        #[serde(default)]
        sip_uri: Option<String>,
    },
    /// A node and everything under it (a tenant, if the path is its root).
    Remove { path: String },
    /// Moves allowance: `amount` off the limit of `from` onto the limit of `to` (same unit and
    /// period), inside one tenant; refused if `from` has less headroom than that.
    Move {
        from: String,
        to: String,
        unit: Unit,
        #[serde(default = "month")]
        period: Period,
        amount: Amount,
    },
}

fn month() -> Period {
    Period::Month
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The change itself is wrong (bad amount, bad path, unknown time zone...).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// It clashes with the tree as it is (exists already, not enough headroom...).
    #[error("{0}")]
    Conflict(String),
    /// It could not be logged, so it was not made.
    #[error("the change log cannot be written: {0}")]
    Log(String),
}

/// What changes have been made: the last import's tenants and the open change log.
#[derive(Default)]
pub struct ChangeState {
    base: Vec<TenantSpec>,
    log: Option<ChangeLog>,
}

/// A node's place: its tree and index, or one planned earlier in the same change.
#[derive(Clone, Copy, Debug)]
struct At {
    tree: u32,
    node: u32,
}

/// One step of a planned change; carrying it out cannot fail.
enum Step {
    AddTree(Box<BuiltTenant>),
    SetPolicy(u32, Policy),
    SetTimeZone(u32, jiff::tz::TimeZone),
    RemoveTree(u32),
    AddNode {
        parent: At,
        name: String,
        counters: Vec<Counter>,
        subs: Subscriptions,
    },
    SetLimits(At, Vec<Counter>),
    SetSubscriptions(At, Subscriptions),
    RemoveNode(At),
    Move {
        from: At,
        to: At,
        unit: Unit,
        period: Period,
        amount: u64,
    },
}

/// Counts of what an import changed, for the log.
#[derive(Debug, Default)]
pub struct Summary {
    pub tenants_added: usize,
    pub tenants_removed: usize,
    pub nodes_added: usize,
    pub nodes_changed: usize,
    pub nodes_removed: usize,
}

fn invalid(s: impl Into<String>) -> ChangeError {
    ChangeError::Invalid(s.into())
}

/// Path components, checked: non-empty names, at most [`MAX_DEPTH`] of them.
fn components(path: &str) -> Result<Vec<&str>, ChangeError> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(invalid(format!(
            "'{path}' is not a path of names like 'acme/sales'"
        )));
    }
    if parts.len() > MAX_DEPTH {
        return Err(invalid(format!(
            "'{path}' is deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(parts)
}

/// Directory key of a subscription id, as the directory compares them.
/// Numbers are kept as numbers: an import of millions of devices claims them without a string
/// each.
fn sub_key(kind: SubscriptionType, id: &str) -> SubKey {
    let code = kind as u8;
    if matches!(kind, SubscriptionType::E164 | SubscriptionType::Imsi) {
        if let Ok(n) = id.strip_prefix('+').unwrap_or(id).parse::<u64>() {
            return SubKey::Number(code, n);
        }
    }
    SubKey::Name(code, id.to_ascii_lowercase())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum SubKey {
    Number(u8, u64),
    Name(u8, String),
}

/// Each node's path from the root ("acme/sales/15551005000"), skipping removed nodes.
fn paths(tree: &Tree) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = Vec::with_capacity(tree.nodes.len());
    for n in &tree.nodes {
        let p = if n.removed {
            None
        } else {
            match n.parent {
                None => Some(n.name.clone()),
                Some(p) => out
                    .get(p as usize)
                    .and_then(|pp| pp.as_ref())
                    .map(|pp| format!("{pp}/{}", n.name)),
            }
        };
        out.push(p);
    }
    out
}

/// Limits as compared between imports: unit, period, amount.
type LimitKey = Vec<(Unit, Period, u64)>;

fn limit_key(c: &[Counter]) -> LimitKey {
    c.iter().map(|c| (c.unit, c.period, c.limit)).collect()
}

impl Engine {
    /// Opens the change log: changes from now on are logged there.
    pub fn attach_change_log(&self, log: ChangeLog) {
        self.changes_state().log = Some(log);
    }

    /// How many changes the tree has had (the change log's length).
    pub fn changes_applied(&self) -> u64 {
        self.changes_applied.load(Ordering::Acquire)
    }

    fn changes_state(&self) -> std::sync::MutexGuard<'_, ChangeState> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a change: plans it, logs it (synced) and carries it out; nothing happens if any
    /// of that fails.
    pub fn change(&self, change: &Change, now: i64) -> Result<Summary, ChangeError> {
        let mut state = self.changes_state();
        let (steps, base) = self.plan(&state, change)?;
        let json = serde_json::to_vec(change).map_err(|e| invalid(e.to_string()))?;
        let _stop = self.gate.write().unwrap_or_else(|p| p.into_inner());
        self.recheck(&steps, now)?;
        let after_sequence = self.journal.as_ref().map_or(0, |j| {
            j.progress()
                .queued
                .load(std::sync::atomic::Ordering::Acquire)
        });
        if let Some(log) = &mut state.log {
            log.append(&ChangeRecord {
                after_sequence,
                time: now,
                change: json,
            })
            .map_err(|e| ChangeError::Log(e.to_string()))?;
        }
        let summary = self.carry_out(steps);
        if let Some(base) = base {
            state.base = base;
        }
        // Counted under the gate, where a snapshot reads it.
        self.changes_applied.fetch_add(1, Ordering::AcqRel);
        Ok(summary)
    }

    /// Carries out a change read back from the change log (at start, before serving).
    pub fn replay_change(&self, record: &ChangeRecord) -> Result<Summary, String> {
        let change: Change = serde_json::from_slice(&record.change)
            .map_err(|e| format!("change {} cannot be read: {e}", self.changes_applied()))?;
        let mut state = self.changes_state();
        let (steps, base) = self.plan(&state, &change).map_err(|e| {
            format!(
                "change {} ({}) no longer applies: {e}",
                self.changes_applied(),
                String::from_utf8_lossy(&record.change)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )
        })?;
        let summary = self.carry_out(steps);
        if let Some(base) = base {
            state.base = base;
        }
        self.changes_applied.fetch_add(1, Ordering::AcqRel);
        Ok(summary)
    }

    /// Whether an import of these sources would change nothing.
    pub fn import_is_unchanged(&self, sources: &[Source]) -> Result<bool, ChangeError> {
        let (next, _) = parse_sources(sources)?;
        Ok(self.changes_state().base == next)
    }

    fn plan(
        &self,
        state: &ChangeState,
        change: &Change,
    ) -> Result<(Vec<Step>, Option<Vec<TenantSpec>>), ChangeError> {
        let mut plan = Planner::new(self);
        match change {
            Change::Import { sources } => {
                let (next, origin) = parse_sources(sources)?;
                plan.import(&state.base, &next, &origin)?;
                return Ok((plan.steps, Some(next)));
            }
            Change::AddTenant {
                name,
                time_zone,
                policy,
                limits,
            } => {
                if self.ledger.find_tree(name).is_some() {
                    return Err(ChangeError::Conflict(format!(
                        "tenant '{name}' exists already"
                    )));
                }
                let spec = TenantSpec {
                    name: name.clone(),
                    time_zone: time_zone.clone().unwrap_or_else(|| "UTC".into()),
                    policy: policy.clone(),
                    node: vec![NodeSpec {
                        path: name.clone(),
                        limits: limits.clone(),
                        msisdn: None,
                        imsi: None,
                        nai: None,
                        sip_uri: None,
                    }],
                    devices: Vec::new(),
                };
                let built = provisioning::build_tenant(&spec, &mut 0).map_err(invalid)?;
                plan.steps.push(Step::AddTree(Box::new(built)));
            }
            Change::SetPolicy { tenant, policy } => {
                let tree = plan.tree(tenant)?;
                let p = provisioning::policy_from_spec(policy)
                    .map_err(|e| invalid(format!("policy: {e}")))?;
                plan.steps.push(Step::SetPolicy(tree, p));
            }
            Change::AddNode {
                path,
                limits,
                msisdn,
                imsi,
                nai,
                sip_uri,
            } => {
                let parts = components(path)?;
                let Some((name, above)) = parts.split_last().filter(|(_, a)| !a.is_empty()) else {
                    return Err(invalid(
                        "a node's path names its tenant first; add a tenant with add_tenant",
                    ));
                };
                let parent = plan.node(&above.join("/"))?;
                let tree = self.ledger.lock(parent.tree);
                if tree.as_ref().is_some_and(|t| t.find(&parts).is_some()) {
                    return Err(ChangeError::Conflict(format!("'{path}' exists already")));
                }
                drop(tree);
                let counters = provisioning::limits_to_counters(limits)
                    .map_err(|e| invalid(format!("limits: {e}")))?;
                check_unique_limits(&counters)?;
                let subs = provisioning::subscriptions_of(msisdn, imsi, nai, sip_uri);
                plan.claim_free(&subs, None)?;
                plan.steps.push(Step::AddNode {
                    parent,
                    name: (*name).to_owned(),
                    counters,
                    subs,
                });
            }
            Change::SetLimits { path, limits } => {
                let at = plan.node(path)?;
                let counters = provisioning::limits_to_counters(limits)
                    .map_err(|e| invalid(format!("limits: {e}")))?;
                check_unique_limits(&counters)?;
                plan.steps.push(Step::SetLimits(at, counters));
            }
            Change::SetSubscriptions {
                path,
                msisdn,
                imsi,
                nai,
                sip_uri,
            } => {
                let at = plan.node(path)?;
                let subs = provisioning::subscriptions_of(msisdn, imsi, nai, sip_uri);
                plan.claim_free(&subs, Some(at))?;
                plan.steps.push(Step::SetSubscriptions(at, subs));
            }
            Change::Remove { path } => {
                let parts = components(path)?;
                if parts.len() == 1 {
                    let tree = plan.tree(path)?;
                    plan.steps.push(Step::RemoveTree(tree));
                } else {
                    let at = plan.node(path)?;
                    plan.steps.push(Step::RemoveNode(at));
                }
            }
            Change::Move {
                from,
                to,
                unit,
                period,
                amount,
            } => {
                let (f, t) = (plan.node(from)?, plan.node(to)?);
                if f.tree != t.tree {
                    return Err(invalid("an allowance moves inside one tenant"));
                }
                if f.node == t.node {
                    return Err(invalid("'from' and 'to' are the same node"));
                }
                let amount = provisioning::limits_to_counters(&[LimitSpec {
                    unit: *unit,
                    period: *period,
                    amount: amount.clone(),
                }])
                .map_err(|e| invalid(format!("amount: {e}")))?
                .first()
                .map_or(0, |c| c.limit);
                if amount == 0 {
                    return Err(invalid("the amount to move is zero"));
                }
                plan.steps.push(Step::Move {
                    from: f,
                    to: t,
                    unit: *unit,
                    period: *period,
                    amount,
                });
            }
        }
        Ok((plan.steps, None))
    }

    /// Checks made again under the gate, where usage cannot move: a move needs the headroom
    /// at the moment it is made, and both limits must exist.
    fn recheck(&self, steps: &[Step], now: i64) -> Result<(), ChangeError> {
        for s in steps {
            if let Step::Move {
                from,
                to,
                unit,
                period,
                amount,
            } = s
            {
                let Some(mut t) = self.ledger.lock(from.tree) else {
                    return Err(ChangeError::NotFound("no such tenant".into()));
                };
                let find = |t: &mut Tree, n: At| -> Option<(u64, u64)> {
                    let tz = t.tz.clone();
                    let c = t
                        .nodes
                        .get_mut(n.node as usize)?
                        .counters
                        .iter_mut()
                        .find(|c| c.unit == *unit && c.period == *period)?;
                    c.roll(&tz, now);
                    Some((c.headroom(), c.limit))
                };
                let Some((headroom, _)) = find(&mut t, *from) else {
                    return Err(ChangeError::Conflict(format!(
                        "'from' has no {unit:?} limit per {period:?}"
                    )));
                };
                if find(&mut t, *to).is_none() {
                    return Err(ChangeError::Conflict(format!(
                        "'to' has no {unit:?} limit per {period:?}"
                    )));
                }
                if headroom < *amount {
                    return Err(ChangeError::Conflict(format!(
                        "'from' has {headroom} free of its limit, less than the {amount} to move"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Carries out planned steps (under the gate; cannot fail).
    fn carry_out(&self, steps: Vec<Step>) -> Summary {
        let mut sum = Summary::default();
        let mut policies: Option<Vec<Arc<Policy>>> = None;
        let mut directory = self.directory_mut();
        let current = self.policies();
        let mut set_policy = |tree: u32, p: Policy| {
            let v = policies.get_or_insert_with(|| current.as_ref().clone());
            let i = tree as usize;
            if v.len() <= i {
                v.resize(i + 1, Arc::new(Policy::default()));
            }
            v[i] = Arc::new(p);
        };
        let bind =
            |directory: &mut super::tenant::Directory, at: AccountRef, subs: Subscriptions| {
                for (kind, id) in subs {
                    directory.add(kind, &id, at);
                }
            };
        for step in steps {
            match step {
                Step::AddTree(built) => {
                    let BuiltTenant {
                        tree,
                        subscriptions,
                        policy,
                    } = *built;
                    let id = self.ledger.add_tree(tree);
                    for (node, subs) in subscriptions {
                        bind(&mut directory, AccountRef { tree: id, node }, subs);
                    }
                    set_policy(id, policy);
                    sum.tenants_added += 1;
                }
                Step::SetPolicy(tree, p) => set_policy(tree, p),
                Step::SetTimeZone(tree, tz) => {
                    if let Some(mut t) = self.ledger.lock(tree) {
                        t.tz = tz;
                    }
                }
                Step::RemoveTree(tree) => {
                    if let Some(mut t) = self.ledger.lock(tree) {
                        t.removed = true;
                        for n in &mut t.nodes {
                            n.removed = true;
                        }
                    }
                    directory.unbind_where(|at| at.tree == tree);
                    sum.tenants_removed += 1;
                }
                Step::AddNode {
                    parent,
                    name,
                    counters,
                    subs,
                } => {
                    if let Some(mut t) = self.ledger.lock(parent.tree) {
                        let node = t.add(name, Some(parent.node), counters);
                        bind(
                            &mut directory,
                            AccountRef {
                                tree: parent.tree,
                                node,
                            },
                            subs,
                        );
                    }
                    sum.nodes_added += 1;
                }
                Step::SetLimits(at, counters) => {
                    if let Some(mut t) = self.ledger.lock(at.tree) {
                        if let Some(n) = t.nodes.get_mut(at.node as usize) {
                            set_limits(&mut n.counters, counters);
                        }
                    }
                    sum.nodes_changed += 1;
                }
                Step::SetSubscriptions(at, subs) => {
                    let at = AccountRef {
                        tree: at.tree,
                        node: at.node,
                    };
                    directory.unbind_where(|a| a == at);
                    bind(&mut directory, at, subs);
                }
                Step::RemoveNode(at) => {
                    let mut gone = HashSet::new();
                    if let Some(mut t) = self.ledger.lock(at.tree) {
                        for n in t.subtree(at.node) {
                            t.nodes[n as usize].removed = true;
                            gone.insert(n);
                        }
                    }
                    directory.unbind_where(|a| a.tree == at.tree && gone.contains(&a.node));
                    sum.nodes_removed += gone.len();
                }
                Step::Move {
                    from,
                    to,
                    unit,
                    period,
                    amount,
                } => {
                    if let Some(mut t) = self.ledger.lock(from.tree) {
                        for (n, add) in [(from.node, false), (to.node, true)] {
                            let Some(node) = t.nodes.get_mut(n as usize) else {
                                continue;
                            };
                            for c in node
                                .counters
                                .iter_mut()
                                .filter(|c| c.unit == unit && c.period == period)
                            {
                                c.limit = if add {
                                    c.limit.saturating_add(amount)
                                } else {
                                    c.limit.saturating_sub(amount)
                                };
                            }
                        }
                    }
                    sum.nodes_changed += 2;
                }
            }
        }
        drop(directory);
        if let Some(p) = policies {
            self.set_policies(p);
        }
        sum
    }
}

/// Replaces a node's limits, keeping the usage of a limit whose unit and period stay.
fn set_limits(counters: &mut Vec<Counter>, new: Vec<Counter>) {
    let mut next = Vec::with_capacity(new.len());
    for n in new {
        match counters
            .iter()
            .find(|c| c.unit == n.unit && c.period == n.period)
        {
            Some(old) => next.push(Counter {
                limit: n.limit,
                ..old.clone()
            }),
            None => next.push(n),
        }
    }
    *counters = next;
}

fn check_unique_limits(counters: &[Counter]) -> Result<(), ChangeError> {
    let mut seen = HashSet::new();
    for c in counters {
        if !seen.insert((c.unit, c.period)) {
            return Err(invalid(format!(
                "two limits for {:?} per {:?}",
                c.unit, c.period
            )));
        }
    }
    Ok(())
}

/// The tenants of the sources, and the source each came from.
fn parse_sources(sources: &[Source]) -> Result<(Vec<TenantSpec>, Vec<&str>), ChangeError> {
    let mut out: Vec<TenantSpec> = Vec::new();
    let mut origin = Vec::new();
    for s in sources {
        let tenants = provisioning::parse(&s.name, &s.text).map_err(|e| invalid(e.to_string()))?;
        for t in tenants {
            if out.iter().any(|o| o.name == t.name) {
                return Err(invalid(format!(
                    "{}: tenant '{}' is defined twice",
                    s.name, t.name
                )));
            }
            out.push(t);
            origin.push(s.name.as_str());
        }
    }
    Ok((out, origin))
}

/// Plans the steps of one change against the live tree.
struct Planner<'e> {
    engine: &'e Engine,
    steps: Vec<Step>,
    /// Subscription ids this change binds.
    claimed: HashSet<SubKey, foldhash::fast::RandomState>,
}

impl<'e> Planner<'e> {
    fn new(engine: &'e Engine) -> Self {
        Planner {
            engine,
            steps: Vec::new(),
            claimed: HashSet::default(),
        }
    }

    fn tree(&self, name: &str) -> Result<u32, ChangeError> {
        self.engine
            .ledger
            .find_tree(name)
            .ok_or_else(|| ChangeError::NotFound(format!("no tenant '{name}'")))
    }

    fn node(&self, path: &str) -> Result<At, ChangeError> {
        let parts = components(path)?;
        let tree = self.tree(parts[0])?;
        let node = self
            .engine
            .ledger
            .lock(tree)
            .and_then(|t| t.find(&parts))
            .ok_or_else(|| ChangeError::NotFound(format!("no node '{path}'")))?;
        Ok(At { tree, node })
    }

    /// Claims subscription ids that must be free, or already `owner`'s (the admin API adding
    /// a device or changing its ids).
    fn claim_free(&mut self, subs: &Subscriptions, owner: Option<At>) -> Result<(), ChangeError> {
        let directory = self.engine.directory();
        let mine = |a: AccountRef| owner.is_some_and(|o| o.tree == a.tree && o.node == a.node);
        for (kind, id) in subs {
            let taken = directory.lookup(*kind, id).is_some_and(|a| !mine(a));
            if taken || !self.claimed.insert(sub_key(*kind, id)) {
                return Err(ChangeError::Conflict(format!(
                    "subscription {id} is already provisioned"
                )));
            }
        }
        Ok(())
    }

    /// Claims subscription ids for an import: the import may take an id from a tenant it
    /// replaces or from one made through the API, but not from a tenant of its own it leaves
    /// as it is, and not twice.
    fn claim_for_import(
        &mut self,
        tenant: &str,
        subs: &Subscriptions,
        kept: &HashSet<u32>,
    ) -> Result<(), ChangeError> {
        let directory = self.engine.directory();
        for (kind, id) in subs {
            let taken = directory
                .lookup(*kind, id)
                .is_some_and(|a| kept.contains(&a.tree));
            if taken || !self.claimed.insert(sub_key(*kind, id)) {
                return Err(invalid(format!(
                    "tenant '{tenant}': subscription {id} is already provisioned"
                )));
            }
        }
        Ok(())
    }

    fn import(
        &mut self,
        prev: &[TenantSpec],
        next: &[TenantSpec],
        origin: &[&str],
    ) -> Result<(), ChangeError> {
        let ledger = &self.engine.ledger;
        // Trees the import leaves as they are: their ids stay theirs.
        let kept: HashSet<u32> = next
            .iter()
            .filter(|t| prev.iter().any(|p| p == *t))
            .filter_map(|t| ledger.find_tree(&t.name))
            .collect();
        let mut devices = 0u64;
        let mut removed = Vec::new();
        for old in prev
            .iter()
            .filter(|o| !next.iter().any(|n| n.name == o.name))
        {
            if let Some(tree) = ledger.find_tree(&old.name) {
                removed.push(tree);
                self.steps.push(Step::RemoveTree(tree));
            }
        }
        for (t, from) in next.iter().zip(origin) {
            let in_file = |e: ChangeError| match e {
                ChangeError::Invalid(r) => ChangeError::Invalid(format!("{from}: {r}")),
                other => other,
            };
            let old = prev.iter().find(|o| o.name == t.name);
            let live = ledger.find_tree(&t.name);
            if old == Some(t) {
                // Unchanged in the files: whatever was done through the API since stands.
                continue;
            }
            let built = provisioning::build_tenant(t, &mut devices)
                .map_err(|e| invalid(format!("{from}: {e}")))?;
            for (_, subs) in &built.subscriptions {
                self.claim_for_import(&t.name, subs, &kept)
                    .map_err(in_file)?;
            }
            match live {
                None => self.steps.push(Step::AddTree(Box::new(built))),
                Some(tree) => {
                    let old_built = old
                        .map(|o| provisioning::build_tenant(o, &mut 0))
                        .transpose()
                        .map_err(invalid)?;
                    let changed_policy = old.is_none_or(|o| o.policy != t.policy);
                    self.diff(tree, old_built.as_ref(), built, changed_policy)
                        .map_err(in_file)?;
                }
            }
        }
        Ok(())
    }

    /// Steps that bring a live tree from what the last import said (`old`) to what this one
    /// says (`new`), touching only what the two differ in.
    fn diff(
        &mut self,
        tree: u32,
        old: Option<&BuiltTenant>,
        new: BuiltTenant,
        changed_policy: bool,
    ) -> Result<(), ChangeError> {
        let (mut live, live_tz, mut next_node) = {
            let t = self
                .engine
                .ledger
                .lock(tree)
                .ok_or_else(|| ChangeError::NotFound("tree gone".into()))?;
            let live: HashMap<String, u32> = paths(&t)
                .into_iter()
                .enumerate()
                .filter_map(|(i, p)| p.map(|p| (p, i as u32)))
                .collect();
            (live, t.tz.clone(), t.nodes.len() as u32)
        };
        if changed_policy {
            self.steps.push(Step::SetPolicy(tree, new.policy.clone()));
        }
        if live_tz != new.tree.tz {
            self.steps
                .push(Step::SetTimeZone(tree, new.tree.tz.clone()));
        }
        let subs_of = |b: &BuiltTenant| -> HashMap<u32, Subscriptions> {
            b.subscriptions.iter().cloned().collect()
        };
        let old_state: HashMap<String, (LimitKey, Subscriptions)> = match old {
            Some(o) => {
                let subs = subs_of(o);
                paths(&o.tree)
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, p)| {
                        let n = &o.tree.nodes[i];
                        p.map(|p| {
                            (
                                p,
                                (
                                    limit_key(&n.counters),
                                    subs.get(&(i as u32)).cloned().unwrap_or_default(),
                                ),
                            )
                        })
                    })
                    .collect()
            }
            None => HashMap::new(),
        };
        let new_subs = subs_of(&new);
        let new_paths = paths(&new.tree);
        let mut in_new = HashSet::new();
        for (i, n) in new.tree.nodes.into_iter().enumerate() {
            let Some(path) = new_paths[i].clone() else {
                continue;
            };
            in_new.insert(path.clone());
            let subs = new_subs.get(&(i as u32)).cloned().unwrap_or_default();
            let same = old_state
                .get(&path)
                .is_some_and(|(l, s)| *l == limit_key(&n.counters) && *s == subs);
            if same {
                // Unchanged in the files: an API change to it (even its removal) stands.
                continue;
            }
            match live.get(&path) {
                Some(&node) => {
                    let at = At { tree, node };
                    self.steps.push(Step::SetLimits(at, n.counters));
                    self.steps.push(Step::SetSubscriptions(at, subs));
                }
                None => {
                    let parent = match path.rsplit_once('/') {
                        Some((p, _)) => *live.get(p).ok_or_else(|| {
                            invalid(format!("'{path}': its parent is not in the tree"))
                        })?,
                        None => {
                            // A root of another name than the live one: not a tree's shape.
                            return Err(invalid(format!(
                                "tenant '{}': its root cannot change",
                                path
                            )));
                        }
                    };
                    self.steps.push(Step::AddNode {
                        parent: At { tree, node: parent },
                        name: n.name,
                        counters: n.counters,
                        subs,
                    });
                    live.insert(path, next_node);
                    next_node += 1;
                }
            }
        }
        for path in old_state.keys() {
            if !in_new.contains(path) {
                if let Some(&node) = live.get(path) {
                    self.steps.push(Step::RemoveNode(At { tree, node }));
                }
            }
        }
        Ok(())
    }
}

/// Logs what an import did.
pub fn log_summary(what: &str, s: &Summary) {
    if s.tenants_added + s.tenants_removed + s.nodes_added + s.nodes_changed + s.nodes_removed == 0
    {
        info!(what, "provisioning unchanged");
    } else {
        info!(
            what,
            tenants_added = s.tenants_added,
            tenants_removed = s.tenants_removed,
            nodes_added = s.nodes_added,
            nodes_changed = s.nodes_changed,
            nodes_removed = s.nodes_removed,
            "provisioning imported"
        );
    }
}

/// Warns about an import that could not be made.
pub fn warn_refused(what: &str, e: &ChangeError) {
    warn!(what, error = %e, "provisioning refused; the accounts stay as they were");
}

#[cfg(test)]
#[path = "changes_tests.rs"]
mod tests;
