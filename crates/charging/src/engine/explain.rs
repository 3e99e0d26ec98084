//! Explain (DESIGN.md §5): every credit-control decision kept, compactly, in a bounded ring in
//! memory, so that a manager can see for any device what a request carried, which rule
//! matched, which account was charged, what each level had left, which level cut the grant,
//! and why a Final-Unit-Indication or a refusal was sent; and `what_if`, which decides a
//! hypothetical request the same way without charging anything.
//!
//! The ring is sharded by device, each shard a fixed number of entries overwritten oldest
//! first: recording takes one short lock of one shard. What has left the ring is in the usage
//! records (the daemon reads them).

use std::collections::VecDeque;
use std::hash::BuildHasher;

use crossbeam_utils::CachePadded;
use serde::Serialize;

use super::*;
use crate::accounts::views::{Shown, shown};
use crate::ledger::Period;
use crate::rules::{Facts, Plmn, Rule};

const SHARDS: usize = 64;

/// One MSCC's decision.
#[derive(Clone, Debug)]
pub(super) struct ServiceDecision {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    pub rule: Option<Arc<str>>,
    /// What the rule said: corporate, personal, tariff or deny (none: no rule).
    pub charge: Option<&'static str>,
    /// The account charged.
    pub account: AccountRef,
    pub result: u32,
    pub requested: Option<(Unit, u64)>,
    pub granted: Option<(Unit, u64)>,
    pub validity_time: Option<u32>,
    /// The Validity-Time was cut to a rule's time edge.
    pub validity_cut: bool,
    /// Final-Unit-Action sent: 0 TERMINATE, 1 REDIRECT, 2 RESTRICT_ACCESS, 3 none (deny).
    pub final_unit: Option<u8>,
    /// The level (node of the account's tree) whose limit cut the grant.
    pub cut_by: Option<u32>,
    pub why: Option<&'static str>,
}

/// One request's decision.
#[derive(Clone, Debug)]
pub(super) struct Decision {
    pub time: i64,
    /// The device.
    pub device: AccountRef,
    pub session_id: Box<str>,
    pub request_type: u8,
    pub request_number: u32,
    pub apn: Option<Box<str>>,
    pub serving: Option<Plmn>,
    pub rat: Option<u8>,
    pub roaming: bool,
    pub zone: Option<Box<str>>,
    pub local: Option<(u8, u32)>,
    pub services: Vec<ServiceDecision>,
}

/// The ring of recent decisions.
pub(super) struct Decisions {
    shards: Box<[CachePadded<Mutex<VecDeque<Decision>>>]>,
    per_shard: usize,
    hasher: foldhash::fast::FixedState,
}

impl Decisions {
    /// Room for about `total` decisions (0: none are kept).
    pub(super) fn new(total: usize) -> Self {
        let per_shard = total.div_ceil(SHARDS);
        Decisions {
            shards: (0..if per_shard == 0 { 0 } else { SHARDS })
                .map(|_| CachePadded::new(Mutex::new(VecDeque::new())))
                .collect(),
            per_shard,
            hasher: foldhash::fast::FixedState::with_seed(0x0cfd),
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.per_shard > 0
    }

    fn shard(&self, device: AccountRef) -> Option<&Mutex<VecDeque<Decision>>> {
        if self.shards.is_empty() {
            return None;
        }
        Some(&self.shards[self.hasher.hash_one(device) as usize % SHARDS])
    }

    pub(super) fn record(&self, d: Decision) {
        let Some(shard) = self.shard(d.device) else {
            return;
        };
        let mut q = shard.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= self.per_shard {
            q.pop_front();
        }
        q.push_back(d);
    }

    /// The decisions about `device` still in the ring, oldest first.
    fn of(&self, device: AccountRef) -> Vec<Decision> {
        let Some(shard) = self.shard(device) else {
            return Vec::new();
        };
        let q = shard.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().filter(|d| d.device == device).cloned().collect()
    }
}

/// The request attributes as explain shows them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AttributesView {
    pub apn: Option<String>,
    pub serving_network: Option<String>,
    pub zone: Option<String>,
    pub rat_type: Option<String>,
    pub roaming: bool,
    /// The tenant's local weekday and time, "wed 21:59:00" (when a rule depends on them).
    pub local_time: Option<String>,
}

/// One level of the charged account's path, as it stands now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelView {
    pub path: String,
    pub unit: Unit,
    /// A service allowance's class of service (absent: a general limit).
    pub class: Option<String>,
    pub period: Period,
    pub limit: Shown,
    pub used: Shown,
    pub reserved: Shown,
    pub headroom: Shown,
}

/// One MSCC's decision as explain shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceView {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    /// The rule that matched (none: no rule; the corporate path).
    pub rule: Option<String>,
    /// corporate, personal, tariff or deny.
    pub charge: String,
    /// The account charged.
    pub account: String,
    pub result_code: u32,
    pub requested: Option<u64>,
    pub granted: Option<u64>,
    pub unit: Option<Unit>,
    pub validity_time: Option<u32>,
    /// The Validity-Time was cut to the edge of a rule's time window.
    pub validity_cut_to_rule_edge: bool,
    /// terminate, redirect, restrict, or deny (the last units, no Final-Unit-Indication).
    pub final_unit_action: Option<String>,
    /// The level whose limit cut the grant.
    pub limited_by: Option<String>,
    pub why: Option<String>,
    /// Each level of the account's path, as it stands now.
    pub levels: Vec<LevelView>,
}

/// One request's decision as explain shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecisionView {
    /// Unix seconds.
    pub time: i64,
    pub session_id: String,
    pub request_type: String,
    pub request_number: u32,
    pub attributes: AttributesView,
    pub services: Vec<ServiceView>,
}

/// A device's recent decisions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExplainView {
    pub subscriber: String,
    /// The subscriber as usage records name it (`e164:15551000000`).
    pub usage_name: String,
    pub account: String,
    /// Newest first.
    pub decisions: Vec<DecisionView>,
}

/// A hypothetical request for `what_if`.
#[derive(Clone, Debug, Default)]
pub struct WhatIf<'a> {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    pub apn: Option<&'a str>,
    pub serving_network: Option<Plmn>,
    pub rat_type: Option<u8>,
    /// Octets asked for (none: the slice).
    pub requested: Option<u64>,
    /// Decides as if roaming (or not), in this zone, on this local weekday (0 Monday) and at
    /// this second of the local day, whatever the serving network and `now` say.
    pub roaming: Option<bool>,
    pub zone: Option<&'a str>,
    pub day: Option<u8>,
    pub second: Option<u32>,
}

/// What a hypothetical request would get.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WhatIfView {
    pub subscriber: String,
    pub account: String,
    /// Unix seconds it was evaluated at.
    pub time: i64,
    pub attributes: AttributesView,
    pub service: ServiceView,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn attributes_view(d: &Decision) -> AttributesView {
    AttributesView {
        apn: d.apn.as_deref().map(str::to_owned),
        serving_network: d.serving.map(|p| p.to_string()),
        zone: d.zone.as_deref().map(str::to_owned),
        rat_type: d.rat.map(rat_name),
        roaming: d.roaming,
        local_time: d.local.map(|(day, s)| {
            format!(
                "{} {:02}:{:02}:{:02}",
                DAYS[usize::from(day) % 7],
                s / 3600,
                s / 60 % 60,
                s % 60
            )
        }),
    }
}

fn rat_name(r: u8) -> String {
    crate::rules::attributes::RAT_TYPES
        .iter()
        .find(|(_, v)| *v == r)
        .map_or_else(|| r.to_string(), |(n, _)| (*n).to_owned())
}

fn request_name(t: u8) -> &'static str {
    match t {
        1 => "initial",
        2 => "update",
        3 => "termination",
        _ => "event",
    }
}

fn action_name(a: Option<u8>) -> Option<String> {
    a.map(|a| {
        match a {
            0 => "terminate",
            1 => "redirect",
            2 => "restrict",
            _ => "deny",
        }
        .to_owned()
    })
}

/// The Final-Unit-Action code explain keeps for an answer's.
pub(super) fn final_unit_code(f: &Option<FinalUnitAction>, last: bool) -> Option<u8> {
    match f {
        Some(FinalUnitAction::Terminate) => Some(0),
        Some(FinalUnitAction::Redirect { .. }) => Some(1),
        Some(FinalUnitAction::RestrictAccess { .. }) => Some(2),
        None if last => Some(3),
        None => None,
    }
}

use crate::accounts::tenant::FinalUnitAction;

impl Engine {
    /// Keeps the decision on one request, if decisions are kept.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn note_decision(
        &self,
        cr: &CreditRequest,
        s: &Session,
        ctx: Option<&route::RuleContext<'_>>,
        rules: &[Option<&Rule>],
        payers: &[Payer],
        answers: &[MsccAnswer],
        cut: bool,
        now: i64,
    ) {
        if !self.decisions.enabled() {
            return;
        }
        let facts = ctx.map(|c| *c.facts());
        let services = cr
            .mscc
            .iter()
            .zip(answers)
            .enumerate()
            .map(|(i, (m, a))| {
                let rule = rules.get(i).copied().flatten();
                let payer = payers.get(i);
                ServiceDecision {
                    rating_group: m.rating_group,
                    service_identifier: m.service_identifier,
                    rule: rule.map(|r| r.name.clone()),
                    charge: rule.map(|r| r.action.name()),
                    account: payer.map_or(s.account, |p| p.account),
                    result: a.result.code(),
                    requested: m.requested.as_ref().map(|u| {
                        let unit = requested_unit(u);
                        (unit, requested_amount(u, unit).unwrap_or(0))
                    }),
                    granted: a.granted,
                    validity_time: a.validity_time,
                    validity_cut: cut && a.granted.is_some(),
                    final_unit: a.final_unit_kind,
                    cut_by: a.cut_by,
                    why: a.why,
                }
            })
            .collect();
        self.decisions.record(Decision {
            time: now,
            device: s.account,
            session_id: cr.session_id.into(),
            request_type: cr.request_type as u8,
            request_number: cr.request_number,
            apn: cr.attributes.apn.map(Box::from),
            serving: cr.attributes.serving,
            rat: cr.attributes.rat,
            roaming: facts.is_some_and(|f| f.roaming),
            zone: facts.and_then(|f| f.zone).map(Box::from),
            local: facts.and_then(|f| f.local),
            services,
        });
    }

    /// The account and subscription text of a subscriber given as an MSISDN, or `imsi:`,
    /// `nai:`, `private:` and the id, or a SIP URI.
    fn subscriber(&self, subscriber: &str) -> Result<AccountRef, ChangeError> {
        let (kind, id) =
            crate::rules::spec::personal_account(subscriber).map_err(ChangeError::Invalid)?;
        self.accounts
            .directory()
            .lookup(kind, &id)
            .ok_or_else(|| ChangeError::NotFound(format!("no subscriber '{subscriber}'")))
    }

    /// Each level of `account`'s path with limits, as it stands now, and its names.
    fn levels(&self, account: AccountRef, now: i64) -> (Vec<LevelView>, Vec<(u32, String)>) {
        let policy = self.accounts.policy_of(account.tree);
        let Some(t) = self.accounts.ledger().lock(account.tree) else {
            return (Vec::new(), Vec::new());
        };
        let mut levels = Vec::new();
        let mut names = Vec::new();
        let mut at = Some(account.node);
        while let Some(n) = at {
            let Some(node) = t.nodes.get(n as usize) else {
                break;
            };
            let path = t.names(n).join("/");
            for c in &node.counters {
                // As of now: a period that has ended counts nothing used.
                let used = if now >= c.period_end && c.period_end != i64::MIN {
                    0
                } else {
                    c.used
                };
                levels.push(LevelView {
                    path: path.clone(),
                    unit: c.unit,
                    class: crate::accounts::views::class_name(&policy, c.class),
                    period: c.period,
                    limit: shown(c.unit, c.limit),
                    used: shown(c.unit, used),
                    reserved: shown(c.unit, c.reserved),
                    headroom: shown(
                        c.unit,
                        c.limit.saturating_sub(used).saturating_sub(c.reserved),
                    ),
                });
            }
            names.push((n, path));
            at = node.parent;
            if names.len() > crate::ledger::MAX_DEPTH {
                break;
            }
        }
        (levels, names)
    }

    fn service_view(&self, sd: &ServiceDecision, now: i64) -> ServiceView {
        let (levels, names) = self.levels(sd.account, now);
        let account = names
            .first()
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| self.path_of(sd.account));
        let limited_by = sd.cut_by.map(|n| {
            names.iter().find(|(m, _)| *m == n).map_or_else(
                || {
                    self.path_of(AccountRef {
                        tree: sd.account.tree,
                        node: n,
                    })
                },
                |(_, p)| p.clone(),
            )
        });
        ServiceView {
            rating_group: sd.rating_group,
            service_identifier: sd.service_identifier,
            rule: sd.rule.as_deref().map(str::to_owned),
            charge: sd.charge.unwrap_or("corporate").to_owned(),
            account,
            result_code: sd.result,
            requested: sd.requested.map(|(_, n)| n),
            granted: sd.granted.map(|(_, n)| n),
            unit: sd.granted.or(sd.requested).map(|(u, _)| u),
            validity_time: sd.validity_time,
            validity_cut_to_rule_edge: sd.validity_cut,
            final_unit_action: action_name(sd.final_unit),
            limited_by,
            why: sd.why.map(str::to_owned),
            levels,
        }
    }

    /// The recent decisions on a subscriber's requests, newest first.
    pub fn explain(&self, subscriber: &str, now: i64) -> Result<ExplainView, ChangeError> {
        let device = self.subscriber(subscriber)?;
        let mut decisions: Vec<DecisionView> = self
            .decisions
            .of(device)
            .iter()
            .rev()
            .map(|d| DecisionView {
                time: d.time,
                session_id: d.session_id.to_string(),
                request_type: request_name(d.request_type).to_owned(),
                request_number: d.request_number,
                attributes: attributes_view(d),
                services: d
                    .services
                    .iter()
                    .map(|s| self.service_view(s, now))
                    .collect(),
            })
            .collect();
        decisions.truncate(64);
        let (kind, id) =
            crate::rules::spec::personal_account(subscriber).map_err(ChangeError::Invalid)?;
        Ok(ExplainView {
            usage_name: format!("{}:{id}", kind.label()),
            subscriber: subscriber.to_owned(),
            account: self.path_of(device),
            decisions,
        })
    }

    /// Decides a hypothetical request for `subscriber` at `now` as a CCR would be decided,
    /// charging nothing: the rule that would match, the account, and the grant each level's
    /// headroom would allow.
    pub fn what_if(
        &self,
        subscriber: &str,
        q: &WhatIf<'_>,
        now: i64,
    ) -> Result<WhatIfView, ChangeError> {
        let device = self.subscriber(subscriber)?;
        let policies = self.accounts.policies();
        let policy = policy_of(&policies, device.tree);
        let (kind, id) =
            crate::rules::spec::personal_account(subscriber).map_err(ChangeError::Invalid)?;
        let subscriptions = [(kind, id.as_str())];
        let imsi_home = subscriptions
            .iter()
            .find(|(k, _)| *k == SubscriptionType::Imsi)
            .and_then(|(_, i)| Plmn::of_imsi(i));
        let session = Session {
            account: device,
            origin_host: Arc::from(""),
            last_number: 0,
            last_type: 0,
            last_answer: Vec::new(),
            held: Vec::new(),
            deadline: now,
            terminated: false,
            started: now,
            subscriber: Box::from(subscriber),
            services: Vec::new(),
        };
        let attrs = crate::rules::RequestAttributes {
            apn: q.apn,
            serving: q.serving_network,
            rat: q.rat_type,
        };
        let mut ctx = self.rule_context_of(attrs, imsi_home, &session, policy, now);
        if let Some(c) = ctx.as_mut() {
            if let Some(r) = q.roaming {
                c.facts.roaming = r;
            }
            if let Some(z) = q.zone {
                c.facts.zone = Some(z);
            }
            if q.day.is_some() || q.second.is_some() {
                let tz = self
                    .accounts
                    .ledger()
                    .lock(device.tree)
                    .map(|t| t.tz.clone());
                let (day, second) = tz
                    .and_then(|tz| crate::rules::local_time(&tz, now))
                    .unwrap_or((0, 0));
                c.at_local((
                    q.day.unwrap_or(day) % 7,
                    q.second.unwrap_or(second) % 86_400,
                ));
            }
        }
        let m = Mscc {
            rating_group: q.rating_group,
            service_identifier: q.service_identifier,
            requested: Some(Units {
                total_octets: q.requested,
                ..Units::default()
            }),
            ..Mscc::default()
        };
        let rule = ctx.as_ref().and_then(|c| c.decide(&m));
        let tariff = self.tariff_for(policy, device);
        let roaming = ctx.as_ref().map_or_else(
            || {
                q.roaming
                    .unwrap_or(policy.roaming(q.serving_network, imsi_home))
            },
            |c| c.facts.roaming,
        );
        let classes = policy.classes_of(q.rating_group, q.service_identifier, roaming);
        let payer = self.payer(&session, policy, ctx.as_ref(), (rule, classes), tariff);
        let facts: Option<Facts> = ctx.as_ref().map(|c| *c.facts());
        let edge = ctx.as_ref().and_then(|c| c.edge);
        let validity = edge.map_or(policy.validity_time_s, |e| e.min(policy.validity_time_s));
        let mut sd = ServiceDecision {
            rating_group: q.rating_group,
            service_identifier: q.service_identifier,
            rule: rule.map(|r| r.name.clone()),
            charge: rule.map(|r| r.action.name()),
            account: payer.account,
            result: ResultCode::Success.code(),
            requested: q.requested.map(|n| (Unit::Octets, n)),
            granted: None,
            validity_time: None,
            validity_cut: false,
            final_unit: None,
            cut_by: None,
            why: payer.denied,
        };
        if payer.denied.is_some() || self.accounts.ledger().is_blocked(device) {
            sd.result = ResultCode::EndUserServiceDenied.code();
            sd.why = sd
                .why
                .or(Some("the subscriber is blocked by its enterprise"));
        } else {
            let want = q
                .requested
                .filter(|&n| n > 0)
                .unwrap_or(u64::MAX)
                .min(policy.slice_octets);
            let (unit, want_ledger) = match payer.price {
                Some(price) => (
                    Unit::Money,
                    u64::try_from(crate::ledger::cost(u128::from(want), price)).unwrap_or(u64::MAX),
                ),
                None => (Unit::Octets, want),
            };
            let (headroom, limiting) = self
                .accounts
                .ledger()
                .lock(payer.account.tree)
                .map(|mut t| {
                    (
                        t.headroom_in(payer.account.node, (unit, classes), now),
                        t.limiting_in(payer.account.node, unit, classes),
                    )
                })
                .unwrap_or((0, None));
            let granted_ledger = want_ledger.min(headroom);
            let granted = match payer.price {
                Some((num, den)) if granted_ledger < want_ledger => {
                    u64::try_from(u128::from(granted_ledger) * den / num.max(1)).unwrap_or(0)
                }
                _ => granted_ledger.min(want),
            };
            if granted == 0 {
                sd.result = ResultCode::CreditLimitReached.code();
                sd.cut_by = limiting;
                sd.why = Some("no headroom left on the account's path");
            } else {
                sd.granted = Some((Unit::Octets, granted));
                sd.validity_time = Some(validity);
                sd.validity_cut = validity < policy.validity_time_s;
                if headroom != u64::MAX && granted_ledger == headroom {
                    sd.cut_by = limiting;
                    sd.why = Some("the grant takes the last units under this level's limit");
                }
            }
        }
        let d = Decision {
            time: now,
            device,
            session_id: Box::from(""),
            request_type: 2,
            request_number: 0,
            apn: q.apn.map(Box::from),
            serving: q.serving_network,
            rat: q.rat_type,
            roaming: facts.is_some_and(|f| f.roaming),
            zone: facts.and_then(|f| f.zone).map(Box::from),
            local: facts.and_then(|f| f.local),
            services: Vec::new(),
        };
        Ok(WhatIfView {
            subscriber: subscriber.to_owned(),
            account: self.path_of(device),
            time: now,
            attributes: attributes_view(&d),
            service: self.service_view(&sd, now),
        })
    }
}
