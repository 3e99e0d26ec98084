//! Planning a change: every check against the live tree, nothing touched; the result is a list
//! of steps that cannot fail.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::ledger::{AccountRef, Counter, MAX_DEPTH, Period, Threshold, Tree, Unit};

use super::super::Accounts;
use super::super::provisioning::{
    self, BuiltTenant, DeviceRun, LimitSpec, NodeSpec, Subscriptions, TenantSpec,
};
use super::super::tenant::{Policy, SubscriptionType, number_key};
use super::{Change, ChangeError, ChangeState, Source};

/// A node's place: its tree and index, or one planned earlier in the same change.
#[derive(Clone, Copy, Debug)]
pub(super) struct At {
    pub(super) tree: u32,
    pub(super) node: u32,
}

/// One step of a planned change; carrying it out cannot fail.
pub(super) enum Step {
    AddTree(Box<BuiltTenant>),
    SetPolicy(u32, Box<Policy>),
    SetTimeZone(u32, jiff::tz::TimeZone),
    RemoveTree(u32),
    AddNode {
        parent: At,
        name: String,
        counters: Vec<Counter>,
        subs: Subscriptions,
        thresholds: Vec<Threshold>,
    },
    SetLimits(At, Vec<Counter>),
    SetThresholds(At, Vec<Threshold>),
    SetBlocked(At, bool),
    SetSubscriptions(At, Subscriptions),
    RemoveNode(At),
    Move {
        from: At,
        to: At,
        unit: Unit,
        period: Period,
        amount: u64,
        class: u32,
    },
}

fn invalid(s: impl Into<String>) -> ChangeError {
    ChangeError::Invalid(s.into())
}

/// Path components, checked: names of 1 to [`crate::terms::MAX_NAME_BYTES`] octets, at most
/// [`MAX_DEPTH`] of them.
fn components(path: &str) -> Result<Vec<&str>, ChangeError> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(invalid(format!(
            "'{}' is not a path of names like 'acme/sales'",
            path.chars().take(200).collect::<String>()
        )));
    }
    for p in &parts {
        provisioning::check_name(p).map_err(invalid)?;
    }
    if parts.len() > MAX_DEPTH {
        return Err(invalid(format!(
            "'{path}' is deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(parts)
}

/// Subscription ids a change binds, as the directory compares them. Numbers are kept as
/// numbers, in a set of their own: an import of ten million devices claims twenty million of
/// them, and a set whose entries could also be strings was twice the size (and most of a
/// start-up's time went on first touching memory).
#[derive(Default)]
struct Claimed {
    numbers: HashSet<(u8, u8, u64), foldhash::fast::RandomState>,
    names: HashSet<(u8, String), foldhash::fast::RandomState>,
    /// Ranges of devices, as spans (kind, digits, first) → last: ten million numbers claimed
    /// one by one were a fifth of a start-up.
    spans: BTreeMap<(u8, u8, u64), u64>,
}

impl Claimed {
    /// Claims an id; false if this change has claimed it already.
    fn claim(&mut self, kind: SubscriptionType, id: &str) -> bool {
        let code = kind as u8;
        match number_key(kind, id) {
            Some((_, digits, n)) => {
                self.span_holding(code, digits, n, n).is_none()
                    && self.numbers.insert((code, digits, n))
            }
            None => self.names.insert((code, id.to_ascii_lowercase())),
        }
    }

    /// The first number of `first..=last` that a claimed span holds.
    fn span_holding(&self, kind: u8, digits: u8, first: u64, last: u64) -> Option<u64> {
        // Spans are disjoint: only the last one starting at or before `last` can overlap.
        let (&(_, _, from), &to) = self
            .spans
            .range((kind, digits, 0)..=(kind, digits, last))
            .next_back()?;
        (to >= first).then(|| from.max(first))
    }

    /// Claims the ids of a range of devices; the first one claimed already if any.
    fn claim_run(&mut self, run: &DeviceRun) -> Result<(), (SubscriptionType, u8, u64)> {
        let spans = run.spans();
        for &(kind, digits, first, last) in &spans {
            let code = kind as u8;
            if let Some(n) = self.span_holding(code, digits, first, last) {
                return Err((kind, digits, n));
            }
            if !self.numbers.is_empty() {
                if let Some(n) = (first..=last).find(|n| self.numbers.contains(&(code, digits, *n)))
                {
                    return Err((kind, digits, n));
                }
            }
        }
        for (kind, digits, first, last) in spans {
            self.spans.insert((kind as u8, digits, first), last);
        }
        Ok(())
    }
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

/// Carries the rules of `old` over to the new policy `p`, compiled again against its tariffs
/// and zones: a policy that takes away a tariff or zone a rule names is refused.
fn keep_rules(old: &Policy, p: &mut Policy) -> Result<(), ChangeError> {
    p.rules = old.rules.clone();
    let names = provisioning::names_of(p);
    let mut again = Vec::new();
    for path in old.rules.paths() {
        let specs: Vec<_> = old
            .rules
            .rules_of(path)
            .iter()
            .map(|r| r.spec.clone())
            .collect();
        let rules = crate::rules::spec::compile_all(&specs, &names)
            .map_err(|e| invalid(format!("policy: the rules of '{path}' would break: {e}")))?;
        again.push((path.to_owned(), rules));
    }
    drop(names);
    for (path, rules) in again {
        p.rules.set(&path, rules);
    }
    Ok(())
}

fn limit_key(c: &[Counter]) -> LimitKey {
    c.iter().map(|c| (c.unit, c.period, c.limit)).collect()
}

impl Accounts {
    pub(super) fn plan(
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
                        thresholds: Vec::new(),
                        at_limit: None,
                        rules: Vec::new(),
                        guards: None,
                        personal_account: None,
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
                let mut p = provisioning::policy_from_spec(policy)
                    .map_err(|e| invalid(format!("policy: {e}")))?;
                // The nodes' own policies at their limits and their rules stay; the rules must
                // still find the tariffs and zones they name.
                let current = self.policies().get(tree as usize).cloned();
                if let Some(c) = current {
                    p.at_limit = c.at_limit.clone();
                    keep_rules(&c, &mut p)?;
                }
                plan.steps.push(Step::SetPolicy(tree, Box::new(p)));
            }
            Change::SetRules { path, rules } => {
                let at = plan.node(path)?;
                let mut p = self.policy_copy(at.tree);
                let path = path.trim_matches('/');
                let personal = p
                    .rules
                    .personal_of(path)
                    .map(|(k, id)| crate::rules::spec::personal_text(k, id));
                provisioning::set_node_rules(&mut p, path, rules, personal.as_deref())
                    .map_err(|e| invalid(format!("rules: {e}")))?;
                plan.steps.push(Step::SetPolicy(at.tree, Box::new(p)));
            }
            Change::SetGuards { path, guards } => {
                let at = plan.node(path)?;
                let mut p = self.policy_copy(at.tree);
                let g = guards
                    .as_ref()
                    .map(crate::rules::Guards::compile)
                    .transpose()
                    .map_err(|e| invalid(format!("guards: {e}")))?;
                p.rules.set_guards(path, g);
                plan.steps.push(Step::SetPolicy(at.tree, Box::new(p)));
            }
            Change::SetPersonalAccount {
                path,
                personal_account,
            } => {
                let at = plan.node(path)?;
                let mut p = self.policy_copy(at.tree);
                let link = personal_account
                    .as_deref()
                    .map(crate::rules::spec::personal_account)
                    .transpose()
                    .map_err(invalid)?;
                p.rules.set_personal(path, link);
                plan.steps.push(Step::SetPolicy(at.tree, Box::new(p)));
            }
            Change::SetAtLimit { path, at_limit } => {
                let at = plan.node(path)?;
                let mut p = self
                    .policies()
                    .get(at.tree as usize)
                    .map(|c| (**c).clone())
                    .unwrap_or_default();
                match at_limit {
                    Some(spec) => {
                        let a = provisioning::at_limit(spec)
                            .map_err(|e| invalid(format!("at_limit: {e}")))?;
                        p.at_limit.insert(path.trim_matches('/').to_owned(), a);
                    }
                    None => {
                        p.at_limit.remove(path.trim_matches('/'));
                    }
                }
                plan.steps.push(Step::SetPolicy(at.tree, Box::new(p)));
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
                let parent_ref = AccountRef {
                    tree: parent.tree,
                    node: parent.node,
                };
                if self.directory().is_bound(parent_ref) {
                    return Err(ChangeError::Conflict(format!(
                        "'{}' is a device; devices have no children",
                        above.join("/")
                    )));
                }
                let tree = self.ledger.lock(parent.tree);
                if tree.as_ref().is_some_and(|t| t.find(&parts).is_some()) {
                    return Err(ChangeError::Conflict(format!("'{path}' exists already")));
                }
                drop(tree);
                let counters =
                    provisioning::limits_to_counters(limits, &self.policy_copy(parent.tree))
                        .map_err(|e| invalid(format!("limits: {e}")))?;
                check_unique_limits(&counters)?;
                let subs = provisioning::subscriptions_of(msisdn, imsi, nai, sip_uri);
                plan.claim_free(&subs, None)?;
                plan.steps.push(Step::AddNode {
                    parent,
                    name: (*name).to_owned(),
                    counters,
                    subs,
                    thresholds: Vec::new(),
                });
            }
            Change::SetLimits { path, limits } => {
                let at = plan.node(path)?;
                let counters = provisioning::limits_to_counters(limits, &self.policy_copy(at.tree))
                    .map_err(|e| invalid(format!("limits: {e}")))?;
                check_unique_limits(&counters)?;
                plan.steps.push(Step::SetLimits(at, counters));
            }
            Change::Block { path } | Change::Unblock { path } => {
                let at = plan.node(path)?;
                let block = matches!(change, Change::Block { .. });
                plan.steps.push(Step::SetBlocked(at, block));
            }
            Change::SetThresholds { path, thresholds } => {
                let at = plan.node(path)?;
                let list = provisioning::thresholds(thresholds)
                    .map_err(|e| invalid(format!("thresholds: {e}")))?;
                plan.steps.push(Step::SetThresholds(at, list));
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
                let has_children = self.ledger.lock(at.tree).is_some_and(|t| {
                    t.nodes
                        .iter()
                        .any(|n| !n.removed && n.parent == Some(at.node))
                });
                if !subs.is_empty() && has_children {
                    return Err(ChangeError::Conflict(format!(
                        "'{path}' has nodes under it; only a leaf can be a device"
                    )));
                }
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
                class,
            } => {
                let (f, t) = (plan.node(from)?, plan.node(to)?);
                if f.tree != t.tree {
                    return Err(invalid("an allowance moves inside one tenant"));
                }
                if f.node == t.node {
                    return Err(invalid("'from' and 'to' are the same node"));
                }
                let policy = self.policy_copy(f.tree);
                let counter = provisioning::limits_to_counters(
                    &[LimitSpec {
                        unit: *unit,
                        period: *period,
                        amount: amount.clone(),
                        class: class.clone(),
                    }],
                    &policy,
                )
                .map_err(invalid)?;
                let (amount, class) = counter.first().map_or((0, 0), |c| (c.limit, c.class));
                if amount == 0 {
                    return Err(invalid("the amount to move is zero"));
                }
                plan.steps.push(Step::Move {
                    from: f,
                    to: t,
                    unit: *unit,
                    period: *period,
                    amount,
                    class,
                });
            }
        }
        Ok((plan.steps, None))
    }

    /// Checks made again under the gate, where usage cannot move: a move needs the headroom
    /// at the moment it is made, and both limits must exist.
    pub(super) fn recheck(&self, steps: &[Step], now: i64) -> Result<(), ChangeError> {
        for s in steps {
            if let Step::Move {
                from,
                to,
                unit,
                period,
                amount,
                class,
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
                        .find(|c| c.unit == *unit && c.period == *period && c.class == *class)?;
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
}

fn check_unique_limits(counters: &[Counter]) -> Result<(), ChangeError> {
    let mut seen = HashSet::new();
    for c in counters {
        if !seen.insert((c.unit, c.period, c.class)) {
            return Err(invalid(format!(
                "two limits for {:?} per {:?}",
                c.unit, c.period
            )));
        }
    }
    Ok(())
}

/// The tenants of the sources, and the source each came from.
pub(super) fn parse_sources(
    sources: &[Source],
) -> Result<(Vec<TenantSpec>, Vec<&str>), ChangeError> {
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
    accounts: &'e Accounts,
    steps: Vec<Step>,
    /// Subscription ids this change binds.
    claimed: Claimed,
}

impl<'e> Planner<'e> {
    fn new(accounts: &'e Accounts) -> Self {
        Planner {
            accounts,
            steps: Vec::new(),
            claimed: Claimed::default(),
        }
    }

    fn tree(&self, name: &str) -> Result<u32, ChangeError> {
        self.accounts
            .ledger
            .find_tree(name)
            .ok_or_else(|| ChangeError::NotFound(format!("no tenant '{name}'")))
    }

    fn node(&self, path: &str) -> Result<At, ChangeError> {
        let parts = components(path)?;
        let tree = self.tree(parts[0])?;
        let node = self
            .accounts
            .ledger
            .lock(tree)
            .and_then(|t| t.find(&parts))
            .ok_or_else(|| ChangeError::NotFound(format!("no node '{path}'")))?;
        Ok(At { tree, node })
    }

    /// Claims subscription ids that must be free, or already `owner`'s (the admin API adding
    /// a device or changing its ids).
    fn claim_free(&mut self, subs: &Subscriptions, owner: Option<At>) -> Result<(), ChangeError> {
        let directory = self.accounts.directory();
        let mine = |a: AccountRef| owner.is_some_and(|o| o.tree == a.tree && o.node == a.node);
        for (kind, id) in subs {
            let taken = directory.lookup(*kind, id).is_some_and(|a| !mine(a));
            if taken || !self.claimed.claim(*kind, id) {
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
        let directory = self.accounts.directory();
        for (kind, id) in subs {
            let taken = directory
                .lookup(*kind, id)
                .is_some_and(|a| kept.contains(&a.tree));
            if taken || !self.claimed.claim(*kind, id) {
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
        let ledger = &self.accounts.ledger;
        // Trees the import leaves as they are: their ids stay theirs.
        let kept: HashSet<u32> = next
            .iter()
            .filter(|t| prev.iter().any(|p| p == *t))
            .filter_map(|t| ledger.find_tree(&t.name))
            .collect();
        let mut devices = 0u64;
        // Every id of a node is claimed once, into a set sized once (ranges of devices are
        // claimed as spans). Bounded like the import itself.
        let ids: u64 = next
            .iter()
            .map(|t| t.node.len() as u64)
            .fold(0u64, u64::saturating_add);
        self.claimed
            .numbers
            .reserve(ids.min(2 * provisioning::MAX_DEVICES) as usize);
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
            for run in &built.runs {
                self.claim_run_for_import(&t.name, run, &kept)
                    .map_err(in_file)?;
            }
            match live {
                None => self.steps.push(Step::AddTree(Box::new(built))),
                Some(tree) => {
                    let old_built = old
                        .map(|o| provisioning::build_tenant(o, &mut 0))
                        .transpose()
                        .map_err(invalid)?;
                    // What of the nodes goes into the policy: their policies at their limits,
                    // their rules and personal accounts.
                    let at_limits = |t: &TenantSpec| -> Vec<_> {
                        t.node
                            .iter()
                            .map(|n| {
                                (
                                    n.path.clone(),
                                    n.at_limit.clone(),
                                    n.rules.clone(),
                                    (n.personal_account.clone(), n.guards.clone()),
                                )
                            })
                            .collect()
                    };
                    let changed_policy =
                        old.is_none_or(|o| o.policy != t.policy || at_limits(o) != at_limits(t));
                    self.diff(tree, old_built.as_ref(), built, changed_policy)
                        .map_err(in_file)?;
                }
            }
        }
        Ok(())
    }

    /// Claims the ids of a range of devices for an import, as [`Self::claim_for_import`].
    fn claim_run_for_import(
        &mut self,
        tenant: &str,
        run: &DeviceRun,
        kept: &HashSet<u32>,
    ) -> Result<(), ChangeError> {
        let taken = |(_, digits, n): (SubscriptionType, u8, u64)| {
            invalid(format!(
                "tenant '{tenant}': subscription {n:0width$} is already provisioned",
                width = digits as usize
            ))
        };
        let directory = self.accounts.directory();
        if !kept.is_empty() {
            for (_, keys) in run.keys() {
                for key in keys.into_iter().flatten() {
                    if directory
                        .lookup_key(&key)
                        .is_some_and(|a| kept.contains(&a.tree))
                    {
                        return Err(taken(key));
                    }
                }
            }
        }
        drop(directory);
        self.claimed
            .claim_run(run)
            .map_err(|(kind, digits, n)| taken((kind, digits, n)))
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
                .accounts
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
            self.steps
                .push(Step::SetPolicy(tree, Box::new(new.policy.clone())));
        }
        if live_tz != new.tree.tz {
            self.steps
                .push(Step::SetTimeZone(tree, new.tree.tz.clone()));
        }
        let subs_of =
            |b: &BuiltTenant| -> HashMap<u32, Subscriptions> { b.all_subscriptions().collect() };
        let own = |b: &BuiltTenant, i: u32| -> Vec<Threshold> {
            b.tree
                .thresholds
                .get(&i)
                .map(|t| t.to_vec())
                .unwrap_or_default()
        };
        let old_state: HashMap<String, (LimitKey, Subscriptions, Vec<Threshold>)> = match old {
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
                                    own(o, i as u32),
                                ),
                            )
                        })
                    })
                    .collect()
            }
            None => HashMap::new(),
        };
        let new_own: HashMap<u32, Vec<Threshold>> = new
            .tree
            .thresholds
            .iter()
            .map(|(k, v)| (*k, v.to_vec()))
            .collect();
        let new_subs = subs_of(&new);
        let new_paths = paths(&new.tree);
        let mut in_new = HashSet::new();
        for (i, n) in new.tree.nodes.into_iter().enumerate() {
            let Some(path) = new_paths[i].clone() else {
                continue;
            };
            in_new.insert(path.clone());
            let subs = new_subs.get(&(i as u32)).cloned().unwrap_or_default();
            let thresholds = new_own.get(&(i as u32)).cloned().unwrap_or_default();
            let same = old_state.get(&path).is_some_and(|(l, s, t)| {
                *l == limit_key(&n.counters) && *s == subs && *t == thresholds
            });
            if same {
                // Unchanged in the files: an API change to it (even its removal) stands.
                continue;
            }
            match live.get(&path) {
                Some(&node) => {
                    let at = At { tree, node };
                    self.steps.push(Step::SetLimits(at, n.counters));
                    self.steps.push(Step::SetSubscriptions(at, subs));
                    self.steps.push(Step::SetThresholds(at, thresholds));
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
                        thresholds,
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
