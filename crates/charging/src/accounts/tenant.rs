//! Who is who: subscribers (by MSISDN, IMSI, NAI or SIP URI) mapped to accounts in the ledger,
//! and each tree's charging policy (grant size, validity, thresholds, what happens at the limit,
//! and for money accounts the tariff).

use std::collections::HashMap;

use foldhash::fast::RandomState;

use rust_decimal::Decimal;

use crate::ledger::AccountRef;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;

/// What the gateway is told to do once the last units are used (RFC 4006 §5.6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinalUnitAction {
    Terminate,
    /// Redirect the user's traffic, e.g. to an approval page.
    Redirect {
        address_type: u32,
        address: String,
    },
    /// Let only the traffic the filters allow through.
    RestrictAccess {
        filter_ids: Vec<String>,
        rules: Vec<String>,
    },
}

/// A price for money accounts: `price` (in the currency) per `per_octets` octets, exact as a
/// rational number of ledger money units per octet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tariff {
    pub price: Decimal,
    pub per_octets: u64,
    pub currency_code: u32,
}

impl Tariff {
    /// Price per octet as a fraction (numerator, denominator) in ledger money units
    /// (10^-MONEY_SCALE of the currency). `None` if the price has more decimals than that.
    pub(crate) fn per_octet(&self) -> Option<(u128, u128)> {
        // Checked: a price from a file or the admin API may be as large as a Decimal goes.
        let scaled = self
            .price
            .checked_mul(Decimal::from(10u64.pow(crate::ledger::MONEY_SCALE)))?;
        if scaled.fract() != Decimal::ZERO || scaled.is_sign_negative() || self.per_octets == 0 {
            return None;
        }
        use rust_decimal::prelude::ToPrimitive;
        Some((scaled.to_u128()?, u128::from(self.per_octets)))
    }
}

/// What a request gets for units that no limit (or, for a money account, no tariff) on the
/// account's path counts, such as time on a data-only device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmetered {
    /// 5031 DIAMETER_RATING_FAILED for that service: nothing counts it, so nothing grants it.
    Refuse,
    /// Granted up to the slice: the tenant chose not to limit that unit.
    Grant,
}

/// How one tree is charged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Largest grant per MSCC and request, per unit.
    pub slice_octets: u64,
    pub slice_seconds: u64,
    pub slice_events: u64,
    /// Validity-Time of a grant, seconds.
    pub validity_time_s: u32,
    /// Volume-/Time-Quota-Threshold as a percentage of the grant.
    pub threshold_percent: u32,
    /// Quota-Holding-Time, seconds (0: not sent).
    pub quota_holding_time_s: u32,
    pub final_unit_action: FinalUnitAction,
    /// For money accounts: the data tariff (any rating group). `None`: the limits are in units.
    pub tariff: Option<Tariff>,
    /// Rating groups this tree may not use: 4010 END_USER_SERVICE_DENIED.
    pub denied_rating_groups: Vec<u32>,
    /// Units nothing on the path counts.
    pub unmetered: Unmetered,
    /// The most one MSCC may report used in one request, per unit (octets, seconds, events):
    /// far above any grant, but a report past it is refused as corrupt (5004) and charges
    /// nothing, so one bad report cannot use up an enterprise.
    pub max_report: [u64; 3],
    /// Nodes (by path) whose limit has a policy of its own: applied instead of
    /// `final_unit_action` when the last units go under that node's limit.
    pub at_limit: std::collections::BTreeMap<String, AtLimit>,
    /// Rules over the request on the tree's nodes, and the personal accounts devices are
    /// linked to ([`crate::rules`]).
    pub rules: crate::rules::RuleBook,
    /// Tariffs rules may name (`charge = "tariff"`), by name.
    pub tariffs: std::collections::BTreeMap<String, Tariff>,
    /// Roaming zones rules may name.
    pub zones: crate::rules::Zones,
    /// The tenant's home networks: a device served elsewhere (and not in
    /// `equivalent_networks`) is roaming. Empty: each IMSI's own network is its home.
    pub home_networks: Vec<crate::rules::Plmn>,
    /// Networks that count as home.
    pub equivalent_networks: Vec<crate::rules::Plmn>,
    /// Classes of service that limits may count apart (service allowances), in name order.
    pub classes: Vec<crate::rules::spec::ServiceClass>,
}

/// A node's policy at its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AtLimit {
    /// The last units go without a Final-Unit-Indication; the next request gets 4012.
    Deny,
    /// The last units go with this Final-Unit-Action.
    Act(FinalUnitAction),
}

impl Policy {
    /// The classes a service of a device belongs to: the first class of service (by name)
    /// that covers it, and the roaming class when the device roams.
    pub fn classes_of(
        &self,
        rating_group: Option<u32>,
        service_identifier: Option<u32>,
        roaming: bool,
    ) -> crate::ledger::Classes {
        let service = self
            .classes
            .iter()
            .find(|c| c.covers(rating_group, service_identifier))
            .map_or(0, |c| c.id);
        let roaming = if roaming {
            crate::rules::spec::class_id(crate::rules::spec::ROAMING)
        } else {
            0
        };
        crate::ledger::Classes([service, roaming])
    }

    /// The id of a class a limit names (`roaming` or one of the tenant's).
    pub fn class_named(&self, name: &str) -> Option<u32> {
        if name == crate::rules::spec::ROAMING {
            return Some(crate::rules::spec::class_id(name));
        }
        self.classes.iter().find(|c| c.name == name).map(|c| c.id)
    }

    /// Whether a device served by `serving` roams: the serving network is known and is neither
    /// a home network (the tenant's, else the IMSI's) nor an equivalent one.
    pub fn roaming(
        &self,
        serving: Option<crate::rules::Plmn>,
        imsi_home: Option<crate::rules::Plmn>,
    ) -> bool {
        let Some(serving) = serving else {
            return false;
        };
        if self.equivalent_networks.contains(&serving) {
            return false;
        }
        if self.home_networks.is_empty() {
            imsi_home.is_some_and(|h| h != serving)
        } else {
            !self.home_networks.contains(&serving)
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            slice_octets: 10 * MIB,
            slice_seconds: 3600,
            slice_events: 100,
            validity_time_s: 600,
            threshold_percent: 20,
            quota_holding_time_s: 0,
            final_unit_action: FinalUnitAction::Terminate,
            tariff: None,
            denied_rating_groups: Vec::new(),
            unmetered: Unmetered::Refuse,
            max_report: [100 * GIB, 7 * 86_400, 1_000_000],
            at_limit: Default::default(),
            rules: Default::default(),
            tariffs: Default::default(),
            zones: Default::default(),
            home_networks: Vec::new(),
            equivalent_networks: Vec::new(),
            classes: Vec::new(),
        }
    }
}

pub use crate::terms::SubscriptionType;

/// Subscribers to accounts, and each tree's policy.
#[derive(Default)]
pub struct Directory {
    /// E.164 numbers and IMSIs as (type, number of digits, value): compact, and two strings
    /// name the same subscription only if their digits are the same (leading zeros count).
    numbers: HashMap<NumberKey, AccountRef, RandomState>,
    names: HashMap<(SubscriptionType, String), AccountRef, RandomState>,
    policies: Vec<Policy>,
}

impl Directory {
    /// Makes room for `n` more subscription identities at once.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.numbers.reserve(n);
    }

    /// Registers a subscription identity for an account.
    pub fn add(&mut self, kind: SubscriptionType, id: &str, at: AccountRef) {
        match number_key(kind, id) {
            Some(k) => {
                self.numbers.insert(k, at);
            }
            None => {
                self.names.insert((kind, id.to_ascii_lowercase()), at);
            }
        }
    }

    /// Registers a subscription identity already in its compact form.
    pub(crate) fn add_key(&mut self, key: NumberKey, at: AccountRef) {
        self.numbers.insert(key, at);
    }

    /// Finds the account of a subscription identity in its compact form.
    pub(crate) fn lookup_key(&self, key: &NumberKey) -> Option<AccountRef> {
        self.numbers.get(key).copied()
    }

    /// Finds the account of a subscription identity: E.164 numbers and IMSIs by their digit
    /// string (a leading `+` aside), so `0001010000008400` is not `001010000008400`.
    pub fn lookup(&self, kind: SubscriptionType, id: &str) -> Option<AccountRef> {
        match number_key(kind, id) {
            Some(k) => self.numbers.get(&k).copied(),
            None => self.names.get(&(kind, id.to_ascii_lowercase())).copied(),
        }
    }

    pub fn set_policy(&mut self, tree: u32, policy: Policy) {
        let i = tree as usize;
        if self.policies.len() <= i {
            self.policies.resize(i + 1, Policy::default());
        }
        self.policies[i] = policy;
    }

    pub fn policy(&self, tree: u32) -> &Policy {
        static DEFAULT: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
        self.policies
            .get(tree as usize)
            .unwrap_or_else(|| DEFAULT.get_or_init(Policy::default))
    }

    /// Drops every subscription id bound to an account `gone` says is gone.
    pub(crate) fn unbind_where(&mut self, gone: impl Fn(AccountRef) -> bool) {
        self.numbers.retain(|_, at| !gone(*at));
        self.names.retain(|_, at| !gone(*at));
    }

    /// Whether any subscription id names the account: it is a device (a scan, stopping at the
    /// first: for account changes, not the hot path).
    pub(crate) fn is_bound(&self, at: AccountRef) -> bool {
        self.numbers.values().any(|a| *a == at) || self.names.values().any(|a| *a == at)
    }

    /// The subscription ids bound to an account (a scan: for the admin API, not the hot path).
    pub(crate) fn bindings_of(&self, at: AccountRef) -> Vec<(SubscriptionType, String)> {
        let mut out: Vec<(SubscriptionType, String)> = self
            .numbers
            .iter()
            .filter(|(_, a)| **a == at)
            .map(|((kind, digits, n), _)| (*kind, format!("{n:0width$}", width = *digits as usize)))
            .chain(
                self.names
                    .iter()
                    .filter(|(_, a)| **a == at)
                    .map(|((kind, id), _)| (*kind, id.clone())),
            )
            .collect();
        out.sort_by_key(|(kind, id)| (*kind as u8, id.clone()));
        out
    }

    /// Hands the policies over (the engine keeps them where they can be swapped live).
    pub(crate) fn take_policies(&mut self) -> Vec<Policy> {
        std::mem::take(&mut self.policies)
    }

    pub fn subscriber_count(&self) -> usize {
        self.numbers.len() + self.names.len()
    }
}

/// An E.164 number or IMSI as (type, number of digits, value).
pub(crate) type NumberKey = (SubscriptionType, u8, u64);

/// The compact key of an E.164 number or IMSI written in plain digits (an E.164 number may
/// start with `+`); `None` for anything else, which is kept as a name.
pub(crate) fn number_key(kind: SubscriptionType, id: &str) -> Option<NumberKey> {
    if !matches!(kind, SubscriptionType::E164 | SubscriptionType::Imsi) {
        return None;
    }
    let digits = match kind {
        SubscriptionType::E164 => id.strip_prefix('+').unwrap_or(id),
        _ => id,
    };
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((kind, digits.len() as u8, digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tariff_is_an_exact_fraction() {
        let t = Tariff {
            price: Decimal::new(1, 2),
            per_octets: MIB,
            currency_code: 978,
        };
        // 0.01 EUR = 10^7 nano-EUR per 2^20 octets.
        assert_eq!(t.per_octet(), Some((10_000_000, 1_048_576)));
        let too_fine = Tariff {
            price: Decimal::new(1, 12),
            per_octets: 1,
            currency_code: 978,
        };
        assert_eq!(too_fine.per_octet(), None);
        let too_large = Tariff {
            price: Decimal::MAX,
            per_octets: 1,
            currency_code: 978,
        };
        assert_eq!(too_large.per_octet(), None, "refused, not a panic");
    }
}
