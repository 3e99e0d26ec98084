//! Explain (DESIGN.md §5): every credit-control decision kept, compactly, in a bounded ring in
//! memory, so that a manager can see for any device what a request carried, which rule
//! matched, which account was charged, what each level had left, which level cut the grant,
//! and why a Final-Unit-Indication or a refusal was sent; and `what_if`, which decides a
//! hypothetical request the same way without charging anything.
//!
//! The ring is sharded by device, each shard a fixed number of entries overwritten oldest
//! first: recording takes one short lock of one shard. What has left the ring is in the usage
//! records (the daemon reads them).

use crossbeam_utils::CachePadded;
use serde::Serialize;

use super::*;
use crate::accounts::views::{Shown, shown};
use crate::ledger::Period;
use crate::rules::{Facts, Plmn, Rule};

const SHARDS: usize = 64;

/// Why an answer is what it is, as explain says it: the sites that decide name these, and a
/// decision keeps the place of its reason in [`WHYS`].
pub(super) mod why {
    pub(in crate::engine) const BLOCKED: &str = "the subscriber is blocked by its enterprise";
    pub(in crate::engine) const RULE_DENIES: &str = "a rule denies this service";
    pub(in crate::engine) const NO_PERSONAL: &str =
        "the rule charges a personal account, and none is linked";
    pub(in crate::engine) const POLICY_DENIES: &str =
        "the tenant's policy denies this rating group";
    pub(in crate::engine) const UNMETERED: &str = "no limit on the account's path counts this unit";
    pub(in crate::engine) const NO_HEADROOM: &str = "no headroom left on the account's path";
    pub(in crate::engine) const LAST_UNITS: &str = "the grant takes the last units under this level's limit: the policy at the limit goes with it";
    pub(in crate::engine) const LAST_UNITS_DENY: &str = "the grant takes the last units under this level's limit, whose policy is to deny: no Final-Unit-Indication";
    pub(in crate::engine) const VELOCITY_REFUSED: &str =
        "the velocity guard: the device used its amount within the window";
    pub(in crate::engine) const CEILING_REFUSED: &str =
        "a ceiling: the session or the device's month has reached its sanity bound";
    pub(in crate::engine) const VELOCITY_CUT: &str =
        "the velocity guard cut the grant: the device reaches its amount within the window";
    pub(in crate::engine) const GRANT_CEILING: &str = "the grant ceiling cut the grant";
    pub(in crate::engine) const CEILING_CUT: &str =
        "a ceiling cut the grant: the session or the device's month reaches its sanity bound";
}

/// Every reason, in the order decisions keep them.
pub(super) const WHYS: [&str; 13] = [
    why::BLOCKED,
    why::RULE_DENIES,
    why::NO_PERSONAL,
    why::POLICY_DENIES,
    why::UNMETERED,
    why::NO_HEADROOM,
    why::LAST_UNITS,
    why::LAST_UNITS_DENY,
    why::VELOCITY_REFUSED,
    why::CEILING_REFUSED,
    why::VELOCITY_CUT,
    why::GRANT_CEILING,
    why::CEILING_CUT,
];

/// The place of `why` in [`WHYS`] plus one (0: none or unknown).
fn why_code(why: Option<&'static str>) -> u8 {
    why.and_then(|w| WHYS.iter().position(|x| std::ptr::eq(*x, w) || *x == w))
        .map_or(0, |i| i as u8 + 1)
}

/// Rule actions as kept: 0 no rule, then these.
const CHARGES: [&str; 4] = ["corporate", "personal", "tariff", "deny"];

/// One MSCC's decision, kept compact (72 octets): the ring is written on every request,
/// and each octet more is memory the hot path touches.
#[derive(Clone, Copy, Debug)]
pub(super) struct ServiceDecision {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    /// The matching rule's name as [`crate::rules::spec::class_id`] hashes it (0: none),
    /// named again from the device's rules when shown.
    pub rule: u32,
    /// The account charged.
    pub account: AccountRef,
    pub result: u32,
    /// Units asked for and granted, in `unit` (see `flags`).
    pub requested: u64,
    pub granted: u64,
    /// Validity-Time (u32::MAX: none).
    pub validity_time: u32,
    /// The level (node of the account's tree) whose limit cut the grant (u32::MAX: none).
    pub cut_by: u32,
    /// The unit of `requested` and `granted` ([`unit_index`]).
    pub unit: u8,
    /// 1: asked for, 2: granted, 4: the Validity-Time was cut to a rule's time edge.
    pub flags: u8,
    /// Final-Unit-Action sent: 0 TERMINATE, 1 REDIRECT, 2 RESTRICT_ACCESS, 3 none (deny);
    /// u8::MAX: none.
    pub final_unit: u8,
    /// What the rule said: a place in [`CHARGES`] plus one (0: no rule).
    pub charge: u8,
    /// A place in [`WHYS`] plus one (0: none).
    pub why: u8,
}

impl ServiceDecision {
    const ASKED: u8 = 1;
    const GRANTED: u8 = 2;
    const CUT: u8 = 4;

    /// A decision on an MSCC, as its answer and payer say.
    #[allow(clippy::too_many_arguments)]
    fn of(
        m: &Mscc,
        rule: Option<&Rule>,
        account: AccountRef,
        result: u32,
        granted: Option<(Unit, u64)>,
        validity_time: Option<u32>,
        cut: bool,
        (final_unit, cut_by, why): (Option<u8>, Option<u32>, Option<&'static str>),
    ) -> Self {
        let requested = m.requested.as_ref().map(|u| {
            let unit = requested_unit(u);
            (unit, requested_amount(u, unit).unwrap_or(0))
        });
        let unit = granted.or(requested).map_or(Unit::Octets, |(u, _)| u);
        ServiceDecision {
            rating_group: m.rating_group,
            service_identifier: m.service_identifier,
            rule: rule.map_or(0, |r| crate::rules::spec::class_id(&r.name)),
            account,
            result,
            requested: requested.map_or(0, |(_, n)| n),
            granted: granted.map_or(0, |(_, n)| n),
            validity_time: validity_time.unwrap_or(u32::MAX),
            cut_by: cut_by.unwrap_or(u32::MAX),
            unit: unit_index(unit) as u8,
            flags: if requested.is_some() { Self::ASKED } else { 0 }
                | if granted.is_some() { Self::GRANTED } else { 0 }
                | if cut && granted.is_some() {
                    Self::CUT
                } else {
                    0
                },
            final_unit: final_unit.unwrap_or(u8::MAX),
            charge: rule.map_or(0, |r| charge_code(r.action.name())),
            why: why_code(why),
        }
    }
}

/// Text kept in place, cut at `N` octets (on a character boundary): recording a decision
/// allocates nothing.
#[derive(Clone, Copy, Debug)]
pub(super) struct Text<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Text<N> {
    pub(super) fn new(s: &str) -> Self {
        let mut n = s.len().min(N).min(255);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        let mut bytes = [0u8; N];
        bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
        Text {
            len: n as u8,
            bytes,
        }
    }

    pub(super) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// MSCCs of a request kept in full (a request rarely has more; the rest are counted).
pub(super) const KEPT_SERVICES: usize = 3;

/// One request's decision (about 300 octets).
#[derive(Clone, Copy, Debug)]
pub(super) struct Decision {
    /// The batch it was kept with, and its place there: the order decisions were kept in.
    order: (u64, u32),
    pub time: i64,
    /// The device.
    pub device: AccountRef,
    /// The Session-Id, its first 31 octets.
    pub session_id: Text<31>,
    pub request_type: u8,
    pub request_number: u32,
    /// The APN, its first 23 octets (empty: none).
    pub apn: Text<23>,
    pub serving: Option<Plmn>,
    pub rat: Option<u8>,
    pub roaming: bool,
    /// The zone's place in the tenant's zones plus one (0: none).
    pub zone: u8,
    pub local: Option<(u8, u32)>,
    /// MSCCs in the request (the first [`KEPT_SERVICES`] are kept).
    pub service_count: u16,
    pub services: [Option<ServiceDecision>; KEPT_SERVICES],
}

/// One shard of the ring: a fixed number of places, the oldest overwritten first.
struct Ring {
    places: Vec<Decision>,
    next: usize,
}

/// The ring of recent decisions. A batch of requests keeps its decisions together, in one
/// shard taken in turn: one hold of one lock per batch, and the shard's places written one
/// after the other. (A lock and its release after every request, with the decision written to
/// a cold place of a shard chosen by device, was 5-8 % of the whole server's throughput.)
pub(super) struct Decisions {
    shards: Box<[CachePadded<Mutex<Ring>>]>,
    per_shard: usize,
    batches: std::sync::atomic::AtomicU64,
}

impl Decisions {
    /// Room for about `total` decisions (0: none are kept).
    pub(super) fn new(total: usize) -> Self {
        let per_shard = total.div_ceil(SHARDS);
        Decisions {
            shards: (0..if per_shard == 0 { 0 } else { SHARDS })
                .map(|_| {
                    CachePadded::new(Mutex::new(Ring {
                        places: Vec::with_capacity(per_shard),
                        next: 0,
                    }))
                })
                .collect(),
            per_shard,
            batches: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.per_shard > 0
    }

    /// Keeps a batch's decisions (oldest first), overwriting the oldest of a shard.
    pub(super) fn record_all(&self, mut ds: Vec<Decision>) {
        if ds.is_empty() || self.shards.is_empty() {
            return;
        }
        let batch = self.batches.fetch_add(1, Relaxed);
        let shard = &self.shards[(batch % self.shards.len() as u64) as usize];
        let mut ring = shard.lock().unwrap_or_else(|p| p.into_inner());
        for (i, mut d) in ds.drain(..).enumerate() {
            d.order = (batch, i as u32);
            let at = ring.next;
            ring.next = (at + 1) % self.per_shard;
            if at < ring.places.len() {
                ring.places[at] = d;
            } else {
                // Filled once, then only overwritten.
                ring.places.push(d);
            }
        }
    }

    /// The decisions about `device` still in the ring, oldest first.
    fn of(&self, device: AccountRef) -> Vec<Decision> {
        let mut out: Vec<Decision> = Vec::new();
        for shard in self.shards.iter() {
            let ring = shard.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(ring.places.iter().filter(|d| d.device == device));
        }
        out.sort_by_key(|d| d.order);
        out
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
    /// MSCCs of the request past those kept.
    pub more_services: usize,
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

fn attributes_view(d: &Decision, policy: &Policy) -> AttributesView {
    AttributesView {
        apn: (d.apn.len > 0).then(|| d.apn.as_str().to_owned()),
        serving_network: d.serving.map(|p| p.to_string()),
        zone: d
            .zone
            .checked_sub(1)
            .and_then(|i| policy.zones.0.get(usize::from(i)))
            .map(|(name, _)| name.clone()),
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

/// The code of a rule action's name (its place in [`CHARGES`] plus one).
fn charge_code(name: &str) -> u8 {
    CHARGES
        .iter()
        .position(|c| *c == name)
        .map_or(0, |i| i as u8 + 1)
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
        (s, policy): (&Session, &Policy),
        ctx: Option<&route::RuleContext<'_>>,
        rules: &[Option<&Rule>],
        charged: &[Option<AccountRef>],
        answers: &[MsccAnswer],
        cut: bool,
        now: i64,
        rec: &mut Recorder,
    ) {
        if !self.decisions.enabled() {
            return;
        }
        let facts = ctx.map(|c| *c.facts());
        let mut services = [None; KEPT_SERVICES];
        for (i, (m, a)) in cr.mscc.iter().zip(answers).enumerate().take(KEPT_SERVICES) {
            let rule = rules.get(i).copied().flatten();
            services[i] = Some(ServiceDecision::of(
                m,
                rule,
                charged.get(i).copied().flatten().unwrap_or(s.account),
                a.result.code(),
                a.granted,
                a.validity_time,
                cut,
                (a.final_unit_kind, a.cut_by, a.why),
            ));
        }
        let zone = facts.and_then(|f| f.zone).map_or(0, |z| {
            policy
                .zones
                .0
                .iter()
                .position(|(n, _)| n == z)
                .map_or(0, |i| (i + 1).min(255) as u8)
        });
        rec.decisions.push(Decision {
            order: (0, 0),
            time: now,
            device: s.account,
            session_id: Text::new(cr.session_id),
            request_type: cr.request_type as u8,
            request_number: cr.request_number,
            apn: Text::new(cr.attributes.apn.unwrap_or("")),
            serving: cr.attributes.serving,
            rat: cr.attributes.rat,
            roaming: facts.is_some_and(|f| f.roaming),
            zone,
            local: facts.and_then(|f| f.local),
            service_count: cr.mscc.len().min(usize::from(u16::MAX)) as u16,
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

    /// The path of the account a subscriber (as [`Self::explain`] takes it) names, if any.
    pub fn subscriber_path(&self, subscriber: &str) -> Option<String> {
        self.subscriber(subscriber).ok().map(|a| self.path_of(a))
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

    /// The names of the rules on a device's path, by the hash a decision keeps.
    fn rule_names(&self, device: AccountRef, policy: &Policy) -> Vec<(u32, Arc<str>)> {
        let Some(t) = self.accounts.ledger().lock(device.tree) else {
            return Vec::new();
        };
        let names = t.names(device.node);
        policy
            .rules
            .lookup(&names)
            .chain
            .iter()
            .flat_map(|r| r.iter())
            .map(|r| (crate::rules::spec::class_id(&r.name), r.name.clone()))
            .collect()
    }

    fn service_view(
        &self,
        sd: &ServiceDecision,
        now: i64,
        rule_names: &[(u32, Arc<str>)],
    ) -> ServiceView {
        let (levels, names) = self.levels(sd.account, now);
        let account = names
            .first()
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| self.path_of(sd.account));
        let limited_by = (sd.cut_by != u32::MAX).then_some(sd.cut_by).map(|n| {
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
            rule: (sd.rule != 0).then(|| {
                rule_names
                    .iter()
                    .find(|(h, _)| *h == sd.rule)
                    .map_or_else(|| format!("#{:08x}", sd.rule), |(_, n)| n.to_string())
            }),
            charge: sd
                .charge
                .checked_sub(1)
                .and_then(|i| CHARGES.get(usize::from(i)))
                .unwrap_or(&"corporate")
                .to_string(),
            account,
            result_code: sd.result,
            requested: (sd.flags & ServiceDecision::ASKED != 0).then_some(sd.requested),
            granted: (sd.flags & ServiceDecision::GRANTED != 0).then_some(sd.granted),
            unit: (sd.flags & (ServiceDecision::ASKED | ServiceDecision::GRANTED) != 0)
                .then(|| Unit::ALL.get(usize::from(sd.unit)).copied())
                .flatten(),
            validity_time: (sd.validity_time != u32::MAX).then_some(sd.validity_time),
            validity_cut_to_rule_edge: sd.flags & ServiceDecision::CUT != 0,
            final_unit_action: action_name((sd.final_unit != u8::MAX).then_some(sd.final_unit)),
            limited_by,
            why: sd
                .why
                .checked_sub(1)
                .and_then(|i| WHYS.get(usize::from(i)))
                .map(|w| w.to_string()),
            levels,
        }
    }

    /// The recent decisions on a subscriber's requests, newest first.
    pub fn explain(&self, subscriber: &str, now: i64) -> Result<ExplainView, ChangeError> {
        let device = self.subscriber(subscriber)?;
        let policy = self.accounts.policy_of(device.tree);
        let rule_names = self.rule_names(device, &policy);
        let mut decisions: Vec<DecisionView> = self
            .decisions
            .of(device)
            .iter()
            .rev()
            .map(|d| DecisionView {
                time: d.time,
                session_id: d.session_id.as_str().to_owned(),
                request_type: request_name(d.request_type).to_owned(),
                request_number: d.request_number,
                attributes: attributes_view(d, &policy),
                services: d
                    .services
                    .iter()
                    .flatten()
                    .map(|s| self.service_view(s, now, &rule_names))
                    .collect(),
                more_services: usize::from(d.service_count).saturating_sub(KEPT_SERVICES),
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
        // What the request would get: (result, granted, Validity-Time, cut by, why).
        let (result, granted, validity_time, cut_by, why) = if payer.denied.is_some()
            || self.accounts.ledger().is_blocked(device)
        {
            (
                ResultCode::EndUserServiceDenied.code(),
                None,
                None,
                None,
                Some(payer.denied.unwrap_or(why::BLOCKED)),
            )
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
                (
                    ResultCode::CreditLimitReached.code(),
                    None,
                    None,
                    limiting,
                    Some(why::NO_HEADROOM),
                )
            } else {
                let last = headroom != u64::MAX && granted_ledger == headroom;
                (
                    ResultCode::Success.code(),
                    Some((Unit::Octets, granted)),
                    Some(validity),
                    limiting.filter(|_| last),
                    last.then_some(why::LAST_UNITS),
                )
            }
        };
        let sd = ServiceDecision::of(
            &m,
            rule,
            payer.account,
            result,
            granted,
            validity_time,
            validity < policy.validity_time_s,
            (None, cut_by, why),
        );
        let d = Decision {
            order: (0, 0),
            time: now,
            device,
            session_id: Text::new(""),
            request_type: 2,
            request_number: 0,
            apn: Text::new(q.apn.unwrap_or("")),
            serving: q.serving_network,
            rat: q.rat_type,
            roaming: facts.is_some_and(|f| f.roaming),
            zone: facts.and_then(|f| f.zone).map_or(0, |z| {
                policy
                    .zones
                    .0
                    .iter()
                    .position(|(n, _)| n == z)
                    .map_or(0, |i| (i + 1).min(255) as u8)
            }),
            local: facts.and_then(|f| f.local),
            service_count: 1,
            services: [None; KEPT_SERVICES],
        };
        let rule_names: Vec<(u32, Arc<str>)> = rule
            .map(|r| vec![(sd.rule, r.name.clone())])
            .unwrap_or_default();
        Ok(WhatIfView {
            subscriber: subscriber.to_owned(),
            account: self.path_of(device),
            time: now,
            attributes: attributes_view(&d, policy),
            service: self.service_view(&sd, now, &rule_names),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring is written on every request: its entries stay small.
    #[test]
    fn a_decision_is_a_few_cache_lines() {
        assert!(std::mem::size_of::<ServiceDecision>() <= 72);
        assert!(
            std::mem::size_of::<Decision>() <= 320,
            "{}",
            std::mem::size_of::<Decision>()
        );
        let t = Text::<8>::new("héllo wörld");
        assert_eq!(t.as_str(), "héllo w", "cut on a character boundary");
    }
}
