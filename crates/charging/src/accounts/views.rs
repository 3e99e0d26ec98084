//! What the admin API shows: a node with its limits and live usage (used, reserved, limit,
//! headroom per period), its subscription ids and children; the tenants; the open sessions of
//! a device or a cost centre. Read-only, and off the hot path: walks are linear in the tree or
//! the sessions, and each lock is held for one tree or one session shard at a time.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::ledger::{AccountRef, Counter, Level, MONEY_SCALE, Period, Unit, period};

use super::Accounts;
use super::changes::ChangeError;
use super::provisioning::{Amount, AtLimitSpec, PolicySpec, TariffSpec};
use super::tenant::{AtLimit, FinalUnitAction, Policy, SubscriptionType, Unmetered};

/// An amount as shown: a number of units, or for money a decimal string in the currency.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Shown {
    Units(u64),
    Money(String),
}

pub(crate) fn shown(unit: Unit, v: u64) -> Shown {
    match unit {
        Unit::Money => Shown::Money(
            Decimal::new(i64::try_from(v).unwrap_or(i64::MAX), MONEY_SCALE)
                .normalize()
                .to_string(),
        ),
        _ => Shown::Units(v),
    }
}

/// One limit and its usage in the current period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LimitView {
    pub unit: Unit,
    pub period: Period,
    pub limit: Shown,
    pub used: Shown,
    pub reserved: Shown,
    pub headroom: Shown,
    /// When the current period ends (RFC 3339), absent for a total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_end: Option<String>,
    /// A service allowance: the class of service it counts (absent: everything).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

/// A node's rules as the API shows them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RulesView {
    pub path: String,
    /// The node's own rules, first to last.
    pub rules: Vec<crate::rules::RuleSpec>,
    /// The personal account its user pays with (a device's).
    pub personal_account: Option<String>,
    /// The node's own guards.
    pub guards: Option<crate::rules::GuardSpec>,
    /// The rules and guards of the nodes above, nearest first: a request meets their rules
    /// after the node's, and takes a guard's setting from the nearest node that has it.
    pub inherited: Vec<InheritedRules>,
}

/// The rules and guards of a node above.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InheritedRules {
    pub path: String,
    pub rules: Vec<crate::rules::RuleSpec>,
    pub guards: Option<crate::rules::GuardSpec>,
}

/// A node of an account tree as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeView {
    pub path: String,
    pub name: String,
    pub limits: Vec<LimitView>,
    /// The node's own thresholds (the levels every device has are in the configuration).
    pub thresholds: Vec<ThresholdView>,
    /// The node, or one above it, is blocked: nothing under it is granted.
    pub blocked: bool,
    /// Which node's block that is (the nearest): unblocking is done there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
    /// The node's own policy at its limit (none: the tenant's applies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_limit: Option<AtLimitSpec>,
    pub subscriptions: Vec<SubscriptionView>,
    /// The children on the page asked for (all of them unless paged).
    pub children: Vec<String>,
    /// How many children the node has, on every page.
    pub children_total: usize,
}

/// Which of a node's children a view carries: `limit` of them from `offset`, in tree order
/// (a console shows a 1,000-device cost centre a page at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    pub const ALL: Page = Page {
        offset: 0,
        limit: usize::MAX,
    };
}

/// What a walk of a tree found for a page of a node's children, and what the last view of
/// them showed (see [`Accounts::usage_page_if_changed`]); empty until the first look.
#[derive(Clone, Debug, Default)]
pub struct PageIndex {
    found: Option<Found>,
    children: Vec<u32>,
    total: usize,
    /// A hash of the figures the last view showed.
    seen: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Found {
    tree: u32,
    node: u32,
    /// The tree's shape when it was found.
    shape: u64,
    page: Page,
}

/// A threshold as the API shows it: a percentage of the limits it applies to, or an amount.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThresholdView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<Unit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Shown>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubscriptionView {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
}

/// A node and its children's usage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UsageView {
    pub node: NodeUsage,
    pub children: Vec<NodeUsage>,
    /// How many children the node has, on every page.
    pub children_total: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeUsage {
    pub path: String,
    pub limits: Vec<LimitView>,
}

/// A tenant in the list of tenants.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantView {
    pub name: String,
    pub time_zone: String,
    pub nodes: usize,
}

/// The page of `items` asked for, mapped, and how many items there are in all.
fn paged<I: Iterator, T>(items: I, page: Page, map: impl Fn(I::Item) -> T) -> (Vec<T>, usize) {
    let mut total = 0;
    let mut out = Vec::new();
    for n in items {
        if total >= page.offset && out.len() < page.limit {
            out.push(map(n));
        }
        total += 1;
    }
    (out, total)
}

fn kind_name(k: SubscriptionType) -> &'static str {
    match k {
        SubscriptionType::E164 => "e164",
        SubscriptionType::Imsi => "imsi",
        SubscriptionType::SipUri => "sip_uri",
        SubscriptionType::Nai => "nai",
        SubscriptionType::Private => "private",
    }
}

/// A counter as of `now`, without changing it: a period that has ended shows as a new one.
fn limit_view(c: &Counter, tz: &jiff::tz::TimeZone, now: i64, policy: &Policy) -> LimitView {
    let (used, end) = if now >= c.period_end {
        (0, period::period_end(c.period, tz, now))
    } else {
        (c.used, c.period_end)
    };
    let headroom = c.limit.saturating_sub(used).saturating_sub(c.reserved);
    LimitView {
        unit: c.unit,
        period: c.period,
        limit: shown(c.unit, c.limit),
        used: shown(c.unit, used),
        reserved: shown(c.unit, c.reserved),
        headroom: shown(c.unit, headroom),
        period_end: (end != i64::MAX)
            .then(|| jiff::Timestamp::from_second(end).ok())
            .flatten()
            .map(|t| t.to_string()),
        class: class_name(policy, c.class),
    }
}

/// The name of a class id in a tenant's policy (`#id` for a class the policy no longer has).
pub(crate) fn class_name(policy: &Policy, id: u32) -> Option<String> {
    if id == 0 {
        return None;
    }
    if id == crate::rules::spec::class_id(crate::rules::spec::ROAMING) {
        return Some(crate::rules::spec::ROAMING.into());
    }
    Some(
        policy
            .classes
            .iter()
            .find(|c| c.id == id)
            .map_or_else(|| format!("#{id}"), |c| c.name.clone()),
    )
}

fn path_parts(path: &str) -> Result<Vec<&str>, ChangeError> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ChangeError::Invalid(format!(
            "'{path}' is not a path of names like 'acme/sales'"
        )));
    }
    Ok(parts)
}

impl Accounts {
    /// Finds a live node by path.
    pub(crate) fn find_node(&self, path: &str) -> Result<AccountRef, ChangeError> {
        let parts = path_parts(path)?;
        let tree = self
            .ledger()
            .find_tree(parts[0])
            .ok_or_else(|| ChangeError::NotFound(format!("no tenant '{}'", parts[0])))?;
        let node = self
            .ledger()
            .lock(tree)
            .and_then(|t| t.find(&parts))
            .ok_or_else(|| ChangeError::NotFound(format!("no node '{path}'")))?;
        Ok(AccountRef { tree, node })
    }

    /// The name of the tenant a subscription id belongs to.
    pub fn tenant_of(&self, kind: SubscriptionType, id: &str) -> Option<String> {
        let at = self.directory().lookup(kind, id)?;
        let t = self.ledger().lock(at.tree)?;
        (!t.removed).then(|| t.name.clone())
    }

    /// The live tenants.
    pub fn tenants(&self) -> Vec<TenantView> {
        (0..self.ledger().tree_count() as u32)
            .filter_map(|t| {
                let g = self.ledger().lock(t)?;
                (!g.removed).then(|| TenantView {
                    name: g.name.clone(),
                    time_zone: g.tz.iana_name().unwrap_or("UTC").to_owned(),
                    nodes: g.nodes.iter().filter(|n| !n.removed).count(),
                })
            })
            .collect()
    }

    /// Whether a node's units used and reserved no longer fit one of its limits (after its limit
    /// was lowered or allowance moved away): the gateways holding them are asked to
    /// re-authorise.
    pub fn overcommitted(&self, path: &str) -> Result<bool, ChangeError> {
        let at = self.find_node(path)?;
        let t = self
            .ledger()
            .lock(at.tree)
            .ok_or_else(|| ChangeError::NotFound(format!("no node '{path}'")))?;
        Ok(t.nodes[at.node as usize]
            .counters
            .iter()
            .any(|c| c.used.saturating_add(c.reserved) > c.limit && c.reserved > 0))
    }

    /// A node with its limits, usage, subscription ids and children.
    pub fn node_view(&self, path: &str, now: i64) -> Result<NodeView, ChangeError> {
        self.node_page(path, now, Page::ALL)
    }

    /// [`Self::node_view`] with a page of its children.
    pub fn node_page(&self, path: &str, now: i64, page: Page) -> Result<NodeView, ChangeError> {
        let at = self.find_node(path)?;
        let (name, counters, tz, (children, children_total), own, blocked) = {
            let t = self
                .ledger()
                .lock(at.tree)
                .ok_or_else(|| ChangeError::NotFound(format!("no node '{path}'")))?;
            let n = &t.nodes[at.node as usize];
            let children = paged(
                t.nodes
                    .iter()
                    .filter(|c| !c.removed && c.parent == Some(at.node)),
                page,
                |c| c.name.clone(),
            );
            let own: Vec<ThresholdView> = t
                .thresholds
                .get(&at.node)
                .into_iter()
                .flat_map(|l| l.iter())
                .map(|th| {
                    let (percent, amount) = match th.level {
                        Level::Percent(p) => (Some(p), None),
                        Level::Amount(a) => (None, th.unit.map(|u| shown(u, a))),
                    };
                    ThresholdView {
                        unit: th.unit,
                        period: th.period,
                        percent,
                        amount,
                    }
                })
                .collect();
            (
                n.name.clone(),
                n.counters.clone(),
                t.tz.clone(),
                children,
                own,
                t.blocked_by(at.node).map(|b| t.names(b).join("/")),
            )
        };
        let policy = self.policy_of(at.tree);
        let limits = counters
            .iter()
            .map(|c| limit_view(c, &tz, now, &policy))
            .collect();
        let subscriptions = self
            .directory()
            .bindings_of(at)
            .into_iter()
            .map(|(k, id)| SubscriptionView {
                kind: kind_name(k),
                id,
            })
            .collect();
        Ok(NodeView {
            path: path.to_owned(),
            name,
            limits,
            thresholds: own,
            blocked: blocked.is_some(),
            blocked_by: blocked,
            at_limit: self
                .policies()
                .get(at.tree as usize)
                .and_then(|p| p.at_limit.get(path.trim_matches('/')).map(at_limit_spec)),
            subscriptions,
            children,
            children_total,
        })
    }

    /// A node's usage and its children's, as of `now`. The tree is locked only to copy the
    /// counters out (charging waits on that lock); the view is built after.
    pub fn usage_view(&self, path: &str, now: i64) -> Result<UsageView, ChangeError> {
        self.usage_page(path, now, Page::ALL)
    }

    /// [`Self::usage_view`] with a page of the children.
    pub fn usage_page(&self, path: &str, now: i64, page: Page) -> Result<UsageView, ChangeError> {
        let view = self.usage_page_if_changed(path, now, page, &mut PageIndex::default())?;
        view.ok_or_else(|| ChangeError::NotFound(format!("no node '{path}'")))
    }

    /// [`Self::usage_page`] for a view looked at again and again (a console's live bars), or
    /// none if nothing it shows changed since the last look with this `index`. Finding the
    /// node by its path and its children takes a walk of the whole tree under its lock, so
    /// `index` keeps what the walk found while the tree's shape stays the same: each look
    /// after the first copies only the page's counters, however large the tree, and builds
    /// the view only if they moved.
    pub fn usage_page_if_changed(
        &self,
        path: &str,
        now: i64,
        page: Page,
        index: &mut PageIndex,
    ) -> Result<Option<UsageView>, ChangeError> {
        let parts = path_parts(path)?;
        let no_node = || ChangeError::NotFound(format!("no node '{path}'"));
        let tree = match index.found {
            Some(f) => f.tree,
            None => self
                .ledger()
                .find_tree(parts[0])
                .ok_or_else(|| ChangeError::NotFound(format!("no tenant '{}'", parts[0])))?,
        };
        let (tz, own, children, children_total) = {
            let t = self.ledger().lock(tree).ok_or_else(no_node)?;
            let fresh = index
                .found
                .is_some_and(|f| f.tree == tree && f.shape == t.shape && f.page == page);
            if !fresh {
                let node = t.find(&parts).ok_or_else(no_node)?;
                let (children, total) = paged(
                    t.nodes
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| !c.removed && c.parent == Some(node)),
                    page,
                    |(i, _)| i as u32,
                );
                *index = PageIndex {
                    found: Some(Found {
                        tree,
                        node,
                        shape: t.shape,
                        page,
                    }),
                    children,
                    total,
                    seen: None,
                };
            }
            let node = index.found.map_or(0, |f| f.node);
            let own = t
                .nodes
                .get(node as usize)
                .map(|n| n.counters.clone())
                .ok_or_else(no_node)?;
            let children: Vec<(String, Vec<Counter>)> = index
                .children
                .iter()
                .filter_map(|&c| t.nodes.get(c as usize))
                .map(|c| (c.name.clone(), c.counters.clone()))
                .collect();
            // What the view shows of each counter, as of now (a period that ended shows 0).
            let seen = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                for c in own.iter().chain(children.iter().flat_map(|(_, c)| c)) {
                    (
                        c.limit,
                        c.used,
                        c.reserved,
                        c.period_end,
                        now >= c.period_end,
                    )
                        .hash(&mut h);
                }
                h.finish()
            };
            if index.seen == Some(seen) {
                return Ok(None);
            }
            index.seen = Some(seen);
            (t.tz.clone(), own, children, index.total)
        };
        let policy = self.policy_of(tree);
        let limits = |counters: &[Counter]| {
            counters
                .iter()
                .map(|c| limit_view(c, &tz, now, &policy))
                .collect::<Vec<_>>()
        };
        let children = children
            .iter()
            .map(|(name, counters)| NodeUsage {
                path: format!("{path}/{name}"),
                limits: limits(counters),
            })
            .collect();
        Ok(Some(UsageView {
            node: NodeUsage {
                path: path.to_owned(),
                limits: limits(&own),
            },
            children,
            children_total,
        }))
    }

    /// A node's rules over the request and its personal account, with the rules it inherits
    /// from above, in the order a request meets them.
    pub fn rules_view(&self, path: &str) -> Result<RulesView, ChangeError> {
        let at = self.find_node(path)?;
        let names: Vec<String> = self
            .ledger()
            .lock(at.tree)
            .map(|t| t.names(at.node).iter().map(|n| n.to_string()).collect())
            .unwrap_or_default();
        let policies = self.policies();
        let p = policies.get(at.tree as usize);
        let book = p.map(|p| &p.rules);
        let path = names.join("/");
        let specs = |path: &str| -> Vec<crate::rules::RuleSpec> {
            book.map(|b| b.rules_of(path).iter().map(|r| r.spec.clone()).collect())
                .unwrap_or_default()
        };
        let guards = |path: &str| book.and_then(|b| b.guards_of(path)).map(|g| g.spec.clone());
        let inherited = (1..names.len())
            .rev()
            .map(|d| names[..d].join("/"))
            .map(|p| InheritedRules {
                rules: specs(&p),
                guards: guards(&p),
                path: p,
            })
            .filter(|i| !i.rules.is_empty() || i.guards.is_some())
            .collect();
        Ok(RulesView {
            guards: guards(&path),
            rules: specs(&path),
            personal_account: book
                .and_then(|b| b.personal_of(&path))
                .map(|(k, id)| crate::rules::spec::personal_text(k, id)),
            inherited,
            path,
        })
    }

    /// A tenant's policy, in the form the API and provisioning files take.
    pub fn policy_view(&self, tenant: &str) -> Result<PolicySpec, ChangeError> {
        let tree = self
            .ledger()
            .find_tree(tenant)
            .ok_or_else(|| ChangeError::NotFound(format!("no tenant '{tenant}'")))?;
        let policies = self.policies();
        let p = policies
            .get(tree as usize)
            .map(|p| (**p).clone())
            .unwrap_or_default();
        Ok(policy_spec(&p))
    }
}

/// A policy as a spec (the inverse of parsing one).
pub(crate) fn policy_spec(p: &Policy) -> PolicySpec {
    let mut spec = PolicySpec {
        slice_octets: Some(Amount::Number(p.slice_octets)),
        slice_seconds: Some(p.slice_seconds),
        slice_events: Some(p.slice_events),
        validity_time_s: Some(p.validity_time_s),
        threshold_percent: Some(p.threshold_percent),
        quota_holding_time_s: Some(p.quota_holding_time_s),
        final_unit_action: None,
        redirect_address: None,
        redirect_address_type: None,
        filter_ids: Vec::new(),
        restriction_rules: Vec::new(),
        denied_rating_groups: p.denied_rating_groups.clone(),
        tariff: p.tariff.as_ref().map(tariff_spec),
        unmetered: Some(
            match p.unmetered {
                Unmetered::Refuse => "refuse",
                Unmetered::Grant => "grant",
            }
            .into(),
        ),
        max_report_octets: Some(Amount::Number(p.max_report[0])),
        max_report_seconds: Some(p.max_report[1]),
        max_report_events: Some(p.max_report[2]),
        tariffs: p
            .tariffs
            .iter()
            .map(|(name, t)| (name.clone(), tariff_spec(t)))
            .collect(),
        zones: p.zones.0.iter().cloned().collect(),
        classes: p
            .classes
            .iter()
            .map(|c| (c.name.clone(), c.spec()))
            .collect(),
        home_networks: p.home_networks.iter().map(|n| n.to_string()).collect(),
        equivalent_networks: p
            .equivalent_networks
            .iter()
            .map(|n| n.to_string())
            .collect(),
    };
    let a = action_spec(&p.final_unit_action);
    spec.final_unit_action = Some(a.action);
    spec.redirect_address = a.redirect_address;
    spec.redirect_address_type = a.redirect_address_type;
    spec.filter_ids = a.filter_ids;
    spec.restriction_rules = a.restriction_rules;
    spec
}

fn tariff_spec(t: &super::tenant::Tariff) -> TariffSpec {
    TariffSpec {
        price: t.price,
        per_octets: Amount::Number(t.per_octets),
        currency_code: t.currency_code,
    }
}

/// A Final-Unit-Action as the API writes it.
fn action_spec(f: &FinalUnitAction) -> AtLimitSpec {
    let mut a = AtLimitSpec {
        action: String::new(),
        redirect_address: None,
        redirect_address_type: None,
        filter_ids: Vec::new(),
        restriction_rules: Vec::new(),
    };
    match f {
        FinalUnitAction::Terminate => a.action = "terminate".into(),
        FinalUnitAction::Redirect {
            address_type,
            address,
        } => {
            a.action = "redirect".into();
            a.redirect_address = Some(address.clone());
            a.redirect_address_type = Some(
                match address_type {
                    0 => "ipv4",
                    1 => "ipv6",
                    3 => "sip",
                    _ => "url",
                }
                .into(),
            );
        }
        FinalUnitAction::RestrictAccess { filter_ids, rules } => {
            a.action = "restrict".into();
            a.filter_ids = filter_ids.clone();
            a.restriction_rules = rules.clone();
        }
    }
    a
}

/// A node's policy at its limit as the API writes it.
fn at_limit_spec(a: &AtLimit) -> AtLimitSpec {
    match a {
        AtLimit::Deny => AtLimitSpec {
            action: "deny".into(),
            redirect_address: None,
            redirect_address_type: None,
            filter_ids: Vec::new(),
            restriction_rules: Vec::new(),
        },
        AtLimit::Act(f) => action_spec(f),
    }
}
