//! Tenants from a file (TOML), loaded at start beside (or instead of) the embedded default.
//! The format is documented in `docs/provisioning.md`; errors name the file, the tenant and the
//! node. Device ranges keep files for millions of devices small, and
//! [`generate`] writes such a file for load tests.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use jiff::tz::TimeZone;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::tenant::{
    AtLimit, Directory, FinalUnitAction, NumberKey, Policy, SubscriptionType, Tariff, Unmetered,
};
use crate::ledger::{
    AccountRef, Counter, Ledger, Level, MONEY_SCALE, Period, Threshold, Tree, Unit,
};
use crate::rules::spec::{Names, compile_all, personal_account};
use crate::rules::{Plmn, RuleSpec, Zones};
pub use crate::terms::Amount;
pub(crate) use crate::terms::{check_name, parse_amount};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tenant: Vec<TenantSpec>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub name: String,
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default)]
    pub policy: PolicySpec,
    #[serde(default)]
    pub node: Vec<NodeSpec>,
    #[serde(default)]
    pub devices: Vec<RangeSpec>,
}

fn utc() -> String {
    "UTC".into()
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice_octets: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice_events: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validity_time_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_percent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_holding_time_s: Option<u32>,
    /// terminate | redirect | restrict
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_unit_action: Option<String>,
    /// For redirect: the address, and its type: ipv4 | ipv6 | url | sip (default url).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_address_type: Option<String>,
    /// For restrict: Filter-Id values and IPFilterRule texts.
    #[serde(default)]
    pub filter_ids: Vec<String>,
    #[serde(default)]
    pub restriction_rules: Vec<String>,
    /// Rating groups this tenant may not use (4010 END_USER_SERVICE_DENIED).
    #[serde(default)]
    pub denied_rating_groups: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tariff: Option<TariffSpec>,
    /// Units no limit or tariff on the path counts: refuse (5031, the default) | grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmetered: Option<String>,
    /// The most one MSCC may report used in one request (default 100 GiB, one week, a million
    /// events); a larger report is refused as corrupt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_report_octets: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_report_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_report_events: Option<u64>,
    /// Tariffs rules may name (`charge = "tariff"`), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tariffs: BTreeMap<String, TariffSpec>,
    /// Roaming zones rules may name: serving networks (an MCC, or an MCC and MNC) by zone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub zones: BTreeMap<String, Vec<String>>,
    /// Classes of service for service allowances: limits with `class = "<name>"` count only
    /// the rating groups and service identifiers of their class.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<String, crate::rules::spec::ClassSpec>,
    /// The tenant's home networks (MCC and MNC); none: each IMSI's network is its home.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub home_networks: Vec<String>,
    /// Networks that count as home (not roaming).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub equivalent_networks: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TariffSpec {
    pub price: Decimal,
    pub per_octets: Amount,
    #[serde(default = "eur")]
    pub currency_code: u32,
}

fn eur() -> u32 {
    978
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    pub unit: Unit,
    #[serde(default = "month")]
    pub period: Period,
    pub amount: Amount,
    /// A service allowance: the limit counts only this class of service (one of the tenant's
    /// `classes`, or `roaming`: everything a roaming device uses). None: everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

fn month() -> Period {
    Period::Month
}

/// A threshold of a node (docs/thresholds.md): a percentage of its limits, or an amount of one
/// unit; of one unit and period, or of every limit it has.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    #[serde(default)]
    pub unit: Option<Unit>,
    #[serde(default)]
    pub period: Option<Period>,
    #[serde(default)]
    pub percent: Option<u8>,
    #[serde(default)]
    pub amount: Option<Amount>,
}

/// A node's thresholds, checked: each a percentage (1 to 100) or an amount of a named unit,
/// not both; at most [`crate::ledger::threshold::MAX_THRESHOLDS`], none twice.
pub fn thresholds(specs: &[ThresholdSpec]) -> Result<Vec<Threshold>, String> {
    use crate::ledger::threshold::MAX_THRESHOLDS;
    if specs.len() > MAX_THRESHOLDS {
        return Err(format!("at most {MAX_THRESHOLDS} thresholds on a node"));
    }
    let mut out: Vec<Threshold> = Vec::with_capacity(specs.len());
    for t in specs {
        let level = match (t.percent, &t.amount) {
            (Some(p @ 1..=100), None) => Level::Percent(p),
            (Some(p), None) => return Err(format!("threshold {p}%: a percentage is 1 to 100")),
            (None, Some(a)) => {
                let unit = t
                    .unit
                    .ok_or_else(|| "a threshold with an amount names its unit".to_owned())?;
                Level::Amount(parse_amount(a, unit)?)
            }
            _ => return Err("a threshold has a percent or an amount (one of them)".into()),
        };
        let th = Threshold {
            unit: t.unit,
            period: t.period,
            level,
        };
        if out.contains(&th) {
            return Err("a threshold is given twice".into());
        }
        out.push(th);
    }
    Ok(out)
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Names from the root, separated by '/': "globex", "globex/finance", ...
    pub path: String,
    #[serde(default)]
    pub limits: Vec<LimitSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<ThresholdSpec>,
    /// What happens at this node's limit, instead of the tenant's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_limit: Option<AtLimitSpec>,
    /// Rules over the request for this node and everything under it (docs/rules.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<toml::Spanned<RuleSpec>>,
    /// Guards against bill shock for this node and everything under it (docs/rules.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guards: Option<crate::rules::GuardSpec>,
    /// The subscription of the personal account this device's user pays with (an MSISDN, or
    /// `imsi:`, `nai:`, `private:` followed by the id, or a SIP URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_account: Option<String>,
    pub msisdn: Option<String>,
    pub imsi: Option<String>,
    pub nai: Option<String>,
    pub sip_uri: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    /// The node the devices hang under.
    pub parent: String,
    /// First MSISDN; device k has msisdn_from + k (and is named so).
    pub msisdn_from: u64,
    pub count: u64,
    /// First IMSI (15 digits); device k has imsi_from + k.
    pub imsi_from: Option<u64>,
    #[serde(default)]
    pub limits: Vec<LimitSpec>,
}

/// A provisioning file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct ProvisioningError {
    pub file: String,
    pub reason: String,
}

/// Devices per file at most, so a typo in a count cannot exhaust memory.
pub const MAX_DEVICES: u64 = 20_000_000;

fn counters(limits: &[LimitSpec], pol: &Policy) -> Result<Vec<Counter>, String> {
    limits
        .iter()
        .map(|l| {
            let mut c = Counter::new(l.unit, l.period, parse_amount(&l.amount, l.unit)?);
            if let Some(name) = &l.class {
                c.class = pol.class_named(name).ok_or_else(|| {
                    format!("class '{name}' is not one of the tenant's classes (or roaming)")
                })?;
            }
            Ok(c)
        })
        .collect()
}

/// A Final-Unit-Action from its name and the fields it needs.
fn final_unit_action(
    action: &str,
    redirect_address: &Option<String>,
    redirect_address_type: &Option<String>,
    filter_ids: &[String],
    restriction_rules: &[String],
) -> Result<FinalUnitAction, String> {
    // Checked whatever the action: a typo is an error even where it would not be used.
    let address_type = match redirect_address_type.as_deref().unwrap_or("url") {
        "ipv4" => 0,
        "ipv6" => 1,
        "url" => 2,
        "sip" => 3,
        other => {
            return Err(format!(
                "redirect_address_type '{other}': use ipv4, ipv6, url or sip"
            ));
        }
    };
    Ok(match action {
        "terminate" => FinalUnitAction::Terminate,
        "redirect" => {
            let address = redirect_address
                .clone()
                .ok_or("redirect needs redirect_address")?;
            FinalUnitAction::Redirect {
                address_type,
                address,
            }
        }
        "restrict" => {
            if filter_ids.is_empty() && restriction_rules.is_empty() {
                return Err("restrict needs filter_ids or restriction_rules".into());
            }
            for r in restriction_rules {
                ocf_protocol::types::decode_ipfilter(r.as_bytes())
                    .map_err(|e| format!("restriction rule '{r}': {}", e.reason()))?;
            }
            FinalUnitAction::RestrictAccess {
                filter_ids: filter_ids.to_vec(),
                rules: restriction_rules.to_vec(),
            }
        }
        other => {
            return Err(format!(
                "final_unit_action '{other}': use terminate, redirect or restrict"
            ));
        }
    })
}

/// A node's policy at its limit (docs/charging.md): what happens when the last units under
/// its limit go, instead of the tenant's policy.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AtLimitSpec {
    /// deny | terminate | redirect | restrict
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_address_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restriction_rules: Vec<String>,
}

/// Checks a node's policy at its limit.
pub fn at_limit(spec: &AtLimitSpec) -> Result<AtLimit, String> {
    match spec.action.as_str() {
        "deny" => Ok(AtLimit::Deny),
        "terminate" | "redirect" | "restrict" => final_unit_action(
            &spec.action,
            &spec.redirect_address,
            &spec.redirect_address_type,
            &spec.filter_ids,
            &spec.restriction_rules,
        )
        .map(AtLimit::Act),
        other => Err(format!(
            "action '{other}': use deny, terminate, redirect or restrict"
        )),
    }
}

fn policy(spec: &PolicySpec) -> Result<Policy, String> {
    let mut p = Policy::default();
    if let Some(s) = &spec.slice_octets {
        p.slice_octets = parse_amount(s, Unit::Octets)?;
    }
    if let Some(s) = spec.slice_seconds {
        p.slice_seconds = s;
    }
    if let Some(s) = spec.slice_events {
        p.slice_events = s;
    }
    if let Some(v) = spec.validity_time_s {
        p.validity_time_s = v;
    }
    if let Some(t) = spec.threshold_percent {
        if t > 100 {
            return Err("threshold_percent must be at most 100".into());
        }
        p.threshold_percent = t;
    }
    if let Some(q) = spec.quota_holding_time_s {
        p.quota_holding_time_s = q;
    }
    p.unmetered = match spec.unmetered.as_deref().unwrap_or("refuse") {
        "refuse" => Unmetered::Refuse,
        "grant" => Unmetered::Grant,
        other => return Err(format!("unmetered '{other}': use refuse or grant")),
    };
    if let Some(a) = &spec.max_report_octets {
        p.max_report[0] = parse_amount(a, Unit::Octets)?;
    }
    if let Some(v) = spec.max_report_seconds {
        p.max_report[1] = v;
    }
    if let Some(v) = spec.max_report_events {
        p.max_report[2] = v;
    }
    p.final_unit_action = final_unit_action(
        spec.final_unit_action.as_deref().unwrap_or("terminate"),
        &spec.redirect_address,
        &spec.redirect_address_type,
        &spec.filter_ids,
        &spec.restriction_rules,
    )?;
    p.denied_rating_groups = spec.denied_rating_groups.clone();
    if let Some(t) = &spec.tariff {
        p.tariff = Some(tariff_of(t)?);
    }
    for (name, t) in &spec.tariffs {
        check_name(name).map_err(|e| format!("tariffs: {e}"))?;
        p.tariffs.insert(name.clone(), tariff_of(t)?);
    }
    let mut zones = Vec::with_capacity(spec.zones.len());
    for (name, networks) in &spec.zones {
        check_name(name).map_err(|e| format!("zones: {e}"))?;
        for n in networks {
            if !(3..=6).contains(&n.len()) || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "zone '{name}': '{n}' is not an MCC or an MCC and MNC (3 to 6 digits)"
                ));
            }
        }
        zones.push((name.clone(), networks.clone()));
    }
    p.zones = Zones(zones);
    let plmns = |what: &str, list: &[String]| -> Result<Vec<Plmn>, String> {
        list.iter()
            .map(|n| {
                Plmn::parse(n.trim())
                    .ok_or_else(|| format!("{what}: '{n}' is not an MCC and MNC (5 or 6 digits)"))
            })
            .collect()
    };
    for (name, c) in &spec.classes {
        p.classes
            .push(crate::rules::spec::ServiceClass::compile(name, c)?);
    }
    let mut ids: Vec<u32> = p.classes.iter().map(|c| c.id).collect();
    ids.push(crate::rules::spec::class_id(crate::rules::spec::ROAMING));
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err("two classes have names whose ids collide: rename one".into());
    }
    p.home_networks = plmns("home_networks", &spec.home_networks)?;
    p.equivalent_networks = plmns("equivalent_networks", &spec.equivalent_networks)?;
    Ok(p)
}

/// A tariff, checked: its price must be exact in ledger money units.
fn tariff_of(t: &TariffSpec) -> Result<Tariff, String> {
    let tariff = Tariff {
        price: t.price,
        per_octets: parse_amount(&t.per_octets, Unit::Octets)?,
        currency_code: t.currency_code,
    };
    if tariff.per_octet().is_none() {
        return Err(format!(
            "tariff price {} has more than {MONEY_SCALE} decimals, is too large or negative, or per_octets is 0",
            t.price
        ));
    }
    Ok(tariff)
}

/// Compiles a node's rules against its tenant's policy (the tariffs and zones they name) and
/// sets them, with its personal account, in the policy's rule book.
pub(crate) fn set_node_rules(
    pol: &mut Policy,
    path: &str,
    rules: &[RuleSpec],
    personal: Option<&str>,
) -> Result<(), String> {
    let compiled = compile_all(rules, &names_of(pol))?;
    let personal = personal.map(personal_account).transpose()?;
    pol.rules.set(path, compiled);
    pol.rules.set_personal(path, personal);
    Ok(())
}

/// What rules of a tenant with this policy may name.
pub(crate) fn names_of(pol: &Policy) -> Names<'_> {
    Names {
        tariffs: pol.tariffs.keys().map(String::as_str).collect(),
        zones: &pol.zones,
    }
}

/// Reads the tenants of a provisioning text, checking only its syntax; [`build_tenant`]
/// checks the rest.
pub fn parse(file: &str, text: &str) -> Result<Vec<TenantSpec>, ProvisioningError> {
    let parsed: File = toml::from_str(text).map_err(|e| ProvisioningError {
        file: file.to_owned(),
        reason: e.to_string(),
    })?;
    // Rules are checked here, where the text is, so that a bad one is named with its line.
    for t in &parsed.tenant {
        let Ok(pol) = policy(&t.policy) else {
            // Reported by build_tenant, with the tenant.
            continue;
        };
        let names = names_of(&pol);
        for n in &t.node {
            for r in &n.rules {
                if let Err(e) = crate::rules::spec::compile(r.get_ref(), &names) {
                    let line = text.as_bytes()[..r.span().start.min(text.len())]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count()
                        + 1;
                    return Err(ProvisioningError {
                        file: file.to_owned(),
                        reason: format!("line {line}: tenant '{}': node '{}': {e}", t.name, n.path),
                    });
                }
            }
        }
    }
    Ok(parsed.tenant)
}

/// The provisioning text with only the tenants `keep` accepts by name (a cluster partition's
/// share of a file), every other table as written. The tables are re-written as TOML, so the
/// text differs from the file's but reads the same.
pub fn select_tenants(
    file: &str,
    text: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<String, ProvisioningError> {
    let err = |reason: String| ProvisioningError {
        file: file.to_owned(),
        reason,
    };
    let mut table: toml::Table = toml::from_str(text).map_err(|e| err(e.to_string()))?;
    if let Some(toml::Value::Array(tenants)) = table.get_mut("tenant") {
        tenants.retain(|t| {
            // A tenant without a name is kept: the import names the fault.
            t.get("name")
                .and_then(toml::Value::as_str)
                .is_none_or(&keep)
        });
    }
    toml::to_string(&table).map_err(|e| err(e.to_string()))
}

/// Subscription ids of one node, by kind.
pub type Subscriptions = Vec<(SubscriptionType, String)>;

/// A tenant as built from its spec: the tree, each node's subscription ids, and the policy.
pub struct BuiltTenant {
    pub tree: Tree,
    /// The ids of nodes that name theirs (`[[tenant.node]]` with an MSISDN, IMSI, ...).
    pub subscriptions: Vec<(u32, Subscriptions)>,
    /// The ids of devices provisioned as ranges, kept as numbers.
    pub runs: Vec<DeviceRun>,
    pub policy: Policy,
}

impl BuiltTenant {
    /// How many subscription ids the tenant binds.
    pub(crate) fn id_count(&self) -> usize {
        let named: usize = self.subscriptions.iter().map(|(_, s)| s.len()).sum();
        let runs: usize = self
            .runs
            .iter()
            .map(|r| r.ids_per_device() * r.count as usize)
            .sum();
        named + runs
    }

    /// Every node's subscription ids as strings, ranges included (for comparing two imports of
    /// a tenant, not for a start-up).
    pub(crate) fn all_subscriptions(&self) -> impl Iterator<Item = (u32, Subscriptions)> + '_ {
        self.subscriptions
            .iter()
            .cloned()
            .chain(self.runs.iter().flat_map(|r| {
                r.keys().map(|(node, keys)| {
                    let subs = keys
                        .into_iter()
                        .flatten()
                        .map(|(kind, digits, n)| {
                            (kind, format!("{n:0width$}", width = digits as usize))
                        })
                        .collect();
                    (node, subs)
                })
            }))
    }
}

/// Devices provisioned as a range (`[[tenant.devices]]`): device k is node `first_node + k`,
/// with MSISDN `msisdn_from + k` and IMSI `imsi_from + k`. Their ids stay numbers from file to
/// directory: ten million of them formatted as strings and parsed back were a third of a
/// start-up.
#[derive(Clone, Debug)]
pub struct DeviceRun {
    pub first_node: u32,
    pub count: u32,
    pub msisdn_from: u64,
    pub imsi_from: Option<u64>,
}

/// An IMSI of a range is written with 15 digits at least (leading zeros count).
const IMSI_DIGITS: u8 = 15;

/// Decimal digits of `n` (1 for 0).
fn digits(n: u64) -> u8 {
    n.checked_ilog10().map_or(1, |d| d as u8 + 1)
}

impl DeviceRun {
    fn ids_per_device(&self) -> usize {
        1 + usize::from(self.imsi_from.is_some())
    }

    /// Each device's node and directory keys (the MSISDN, then the IMSI if the range has
    /// them), as [`number_key`](super::tenant::number_key) would make them from the strings.
    pub(crate) fn keys(&self) -> impl Iterator<Item = (u32, [Option<NumberKey>; 2])> + '_ {
        (0..self.count).map(move |k| {
            let msisdn = self.msisdn_from + u64::from(k);
            let imsi = self.imsi_from.map(|i| {
                let n = i + u64::from(k);
                (SubscriptionType::Imsi, digits(n).max(IMSI_DIGITS), n)
            });
            (
                self.first_node + k,
                [Some((SubscriptionType::E164, digits(msisdn), msisdn)), imsi],
            )
        })
    }

    /// The run's keys as spans of equal digit count, (kind, digits, first, last): what an
    /// import claims, so that overlapping ranges are found without a set of every number.
    pub(crate) fn spans(&self) -> Vec<(SubscriptionType, u8, u64, u64)> {
        let last = u64::from(self.count.saturating_sub(1));
        let mut out = Vec::new();
        let mut split = |kind: SubscriptionType, from: u64, min_digits: u8| {
            let to = from + last;
            let mut a = from;
            while a <= to {
                let d = digits(a);
                // The last number with d digits, or the end of the range.
                let top = 10u64.checked_pow(u32::from(d)).map_or(u64::MAX, |p| p - 1);
                let b = top.min(to);
                out.push((kind, d.max(min_digits), a, b));
                match b.checked_add(1) {
                    Some(next) => a = next,
                    None => break,
                }
            }
        };
        if self.count > 0 {
            split(SubscriptionType::E164, self.msisdn_from, 1);
            if let Some(i) = self.imsi_from {
                split(SubscriptionType::Imsi, i, IMSI_DIGITS);
            }
        }
        out
    }
}

pub(crate) fn build_tenant(t: &TenantSpec, devices_total: &mut u64) -> Result<BuiltTenant, String> {
    let short: String = t.name.chars().take(40).collect();
    let terr = |reason: String| format!("tenant '{short}': {reason}");
    check_name(&t.name).map_err(&terr)?;
    // UTC needs no time zone database (a minimal host may have none).
    let tz = if t.time_zone == "UTC" {
        TimeZone::UTC
    } else {
        TimeZone::get(&t.time_zone)
            .map_err(|e| terr(format!("time zone '{}': {e}", t.time_zone)))?
    };
    let mut pol = policy(&t.policy).map_err(|r| terr(format!("policy: {r}")))?;
    let mut tree = Tree::new(t.name.clone(), tz);
    let mut by_path: HashMap<String, u32> = HashMap::new();
    let mut subscriptions = Vec::new();
    // Nodes that are devices (have subscription ids): nothing goes under them.
    let mut devices = std::collections::HashSet::new();
    for n in &t.node {
        let nerr = |reason: String| terr(format!("node '{}': {reason}", n.path));
        let (parent, name) = match n.path.rsplit_once('/') {
            Some((p, name)) => (
                Some(
                    *by_path
                        .get(p)
                        .ok_or_else(|| nerr(format!("parent '{p}' is not defined above it")))?,
                ),
                name,
            ),
            None => (None, n.path.as_str()),
        };
        if parent.is_none() && (!by_path.is_empty() || n.path != t.name) {
            return Err(nerr(
                "a tenant has one root, named as the tenant; give the full path".into(),
            ));
        }
        if name.is_empty() || by_path.contains_key(&n.path) {
            return Err(nerr("empty or repeated path".into()));
        }
        check_name(name).map_err(&nerr)?;
        if parent.is_some_and(|p| devices.contains(&p)) {
            return Err(nerr(
                "its parent is a device; devices have no children".into(),
            ));
        }
        if n.path.split('/').count() > crate::ledger::MAX_DEPTH {
            return Err(nerr(format!(
                "deeper than {} levels",
                crate::ledger::MAX_DEPTH
            )));
        }
        let id = tree.add(name, parent, counters(&n.limits, &pol).map_err(&nerr)?);
        let own = thresholds(&n.thresholds).map_err(&nerr)?;
        if let Some(a) = &n.at_limit {
            let a = at_limit(a).map_err(|e| nerr(format!("at_limit: {e}")))?;
            pol.at_limit.insert(n.path.clone(), a);
        }
        if !own.is_empty() {
            tree.set_thresholds(id, own);
        }
        if !n.rules.is_empty() || n.personal_account.is_some() {
            let specs: Vec<RuleSpec> = n.rules.iter().map(|r| r.get_ref().clone()).collect();
            set_node_rules(&mut pol, &n.path, &specs, n.personal_account.as_deref())
                .map_err(&nerr)?;
        }
        if let Some(g) = &n.guards {
            let g = crate::rules::Guards::compile(g).map_err(|e| nerr(format!("guards: {e}")))?;
            pol.rules.set_guards(&n.path, Some(g));
        }
        by_path.insert(n.path.clone(), id);
        let subs = node_subscriptions(n);
        if !subs.is_empty() {
            devices.insert(id);
            subscriptions.push((id, subs));
        }
    }
    // Ten million devices grown one doubling at a time were copied again and again: size the
    // tree and the list once (bounded: the count is checked against MAX_DEVICES below).
    let ranged = t
        .devices
        .iter()
        .fold(0u64, |n, r| n.saturating_add(r.count))
        .min(MAX_DEVICES) as usize;
    tree.nodes.reserve(ranged);
    let mut runs = Vec::with_capacity(t.devices.len());
    for r in &t.devices {
        let rerr = |reason: String| terr(format!("devices under '{}': {reason}", r.parent));
        let parent = *by_path
            .get(&r.parent)
            .ok_or_else(|| rerr("parent is not a node of this tenant".into()))?;
        if devices.contains(&parent) {
            return Err(rerr(
                "the parent is a device; devices have no children".into(),
            ));
        }
        if r.parent.split('/').count() >= crate::ledger::MAX_DEPTH {
            return Err(rerr(format!(
                "devices would be deeper than {} levels",
                crate::ledger::MAX_DEPTH
            )));
        }
        *devices_total = devices_total.saturating_add(r.count);
        if *devices_total > MAX_DEVICES {
            return Err(rerr(format!(
                "more than {MAX_DEVICES} devices in one import"
            )));
        }
        let limits = counters(&r.limits, &pol).map_err(&rerr)?;
        // A directory key holds 19 digits at most (E.164 numbers have 15, IMSIs 15).
        let fits = |from: u64| {
            from.checked_add(r.count.saturating_sub(1))
                .is_some_and(|last| last < 10u64.pow(19))
        };
        if !fits(r.msisdn_from) {
            return Err(rerr("the MSISDN range goes beyond 19 digits".into()));
        }
        if r.imsi_from.is_some_and(|i| !fits(i)) {
            return Err(rerr("the IMSI range goes beyond 19 digits".into()));
        }
        if r.count == 0 {
            continue;
        }
        let first_node = tree.nodes.len() as u32;
        for k in 0..r.count {
            tree.add(
                (r.msisdn_from + k).to_string(),
                Some(parent),
                limits.clone(),
            );
        }
        runs.push(DeviceRun {
            first_node,
            // At most MAX_DEVICES, checked above.
            count: r.count as u32,
            msisdn_from: r.msisdn_from,
            imsi_from: r.imsi_from,
        });
    }
    if tree.nodes.is_empty() {
        return Err(terr("has no nodes".into()));
    }
    Ok(BuiltTenant {
        tree,
        subscriptions,
        runs,
        policy: pol,
    })
}

/// The subscription ids a node spec names.
pub(crate) fn node_subscriptions(n: &NodeSpec) -> Subscriptions {
    subscriptions_of(&n.msisdn, &n.imsi, &n.nai, &n.sip_uri)
}

/// Subscription ids from the optional MSISDN, IMSI, NAI and SIP URI of a node.
pub(crate) fn subscriptions_of(
    msisdn: &Option<String>,
    imsi: &Option<String>,
    nai: &Option<String>,
    sip_uri: &Option<String>,
) -> Subscriptions {
    [
        (SubscriptionType::E164, msisdn),
        (SubscriptionType::Imsi, imsi),
        (SubscriptionType::Nai, nai),
        (SubscriptionType::SipUri, sip_uri),
    ]
    .into_iter()
    .filter_map(|(kind, v)| v.as_ref().map(|v| (kind, v.clone())))
    .collect()
}

/// Parses the limits of a node spec into counters (`pol`: its tenant's policy, for classes).
pub(crate) fn limits_to_counters(
    limits: &[LimitSpec],
    pol: &Policy,
) -> Result<Vec<Counter>, String> {
    counters(limits, pol)
}

/// Parses a policy spec.
pub(crate) fn policy_from_spec(spec: &PolicySpec) -> Result<Policy, String> {
    policy(spec)
}

/// Adds the tenants of a provisioning text to the ledger and directory (offline: checks and
/// tools; the server imports through [`crate::changes`]).
pub fn load_str(
    file: &str,
    text: &str,
    ledger: &mut Ledger,
    dir: &mut Directory,
) -> Result<usize, ProvisioningError> {
    let err = |reason: String| ProvisioningError {
        file: file.to_owned(),
        reason,
    };
    let tenants = parse(file, text)?;
    let mut devices_total = 0u64;
    for t in &tenants {
        let built = build_tenant(t, &mut devices_total).map_err(&err)?;
        if ledger.find_tree(&t.name).is_some() {
            return Err(err(format!("tenant '{}' is defined twice", t.name)));
        }
        let taken = |id: &str| {
            err(format!(
                "tenant '{}': subscription {id} is already provisioned",
                t.name
            ))
        };
        for (_, subs) in &built.subscriptions {
            for (kind, id) in subs {
                if dir.lookup(*kind, id).is_some() {
                    return Err(taken(id));
                }
            }
        }
        for run in &built.runs {
            for (_, keys) in run.keys() {
                for (kind, digits, n) in keys.into_iter().flatten() {
                    if dir.lookup_key(&(kind, digits, n)).is_some() {
                        return Err(taken(&format!("{n:0width$}", width = digits as usize)));
                    }
                }
            }
        }
        let tree_id = ledger.add_tree(built.tree);
        let at = |node| AccountRef {
            tree: tree_id,
            node,
        };
        for (node, subs) in built.subscriptions {
            for (kind, id) in subs {
                dir.add(kind, &id, at(node));
            }
        }
        for run in &built.runs {
            for (node, keys) in run.keys() {
                for key in keys.into_iter().flatten() {
                    dir.add_key(key, at(node));
                }
            }
        }
        dir.set_policy(tree_id, built.policy);
    }
    Ok(tenants.len())
}

/// Writes a synthetic provisioning file: `enterprises` tenants sharing `devices` devices, each
/// with three cost centres, MSISDNs from 1 555 2000 0000 and IMSIs from 001 02 0000000000.
pub fn generate(enterprises: u64, devices: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `ocfd tenants generate --enterprises {enterprises} --devices {devices}`."
    );
    let per = devices / enterprises.max(1);
    let mut next = 0u64;
    for e in 0..enterprises {
        let count = if e + 1 == enterprises {
            devices - next
        } else {
            per
        };
        let name = format!("ent{e:05}");
        let _ = writeln!(out, "\n[[tenant]]\nname = \"{name}\"\n");
        let _ = writeln!(
            out,
            "[[tenant.node]]\npath = \"{name}\"\nlimits = [{{ unit = \"octets\", period = \"month\", amount = \"100 TiB\" }}]"
        );
        let thirds = [count / 3, count / 3, count - 2 * (count / 3)];
        for (i, cc) in ["engineering", "sales", "iot"].iter().enumerate() {
            let _ = writeln!(
                out,
                "\n[[tenant.node]]\npath = \"{name}/{cc}\"\nlimits = [{{ unit = \"octets\", period = \"month\", amount = \"50 TiB\" }}]"
            );
            if thirds[i] > 0 {
                let _ = writeln!(
                    out,
                    "\n[[tenant.devices]]\nparent = \"{name}/{cc}\"\nmsisdn_from = {}\nimsi_from = {}\ncount = {}\nlimits = [{{ unit = \"octets\", period = \"month\", amount = \"1 TiB\" }}]",
                    155_520_000_000_u64 + next,
                    1_020_000_000_000_u64 + next,
                    thirds[i]
                );
            }
            next += thirds[i];
        }
    }
    out
}

/// The embedded default tenant (DESIGN.md §7) as a provisioning text, so that it is imported,
/// changed and reloaded like any file: enterprise `acme` with three cost centres and 10,000
/// devices, and consumer `alice` with 5.00 EUR prepaid at 0.01 EUR per MiB. `validity_time_s`
/// is `charging.validity_time_s`.
pub fn embedded_text(validity_time_s: u32) -> String {
    format!(
        r#"[[tenant]]
name = "acme"
policy = {{ validity_time_s = {validity_time_s} }}
node = [
  {{ path = "acme", limits = [{{ unit = "octets", period = "month", amount = "1 TiB" }}] }},
  {{ path = "acme/engineering", limits = [{{ unit = "octets", amount = "500 GiB" }}] }},
  {{ path = "acme/sales", limits = [{{ unit = "octets", amount = "100 GiB" }}] }},
  {{ path = "acme/iot", limits = [{{ unit = "octets", amount = "1 GiB" }}] }},
]
devices = [
  {{ parent = "acme/engineering", msisdn_from = 15551000000, imsi_from = 1010000000000, count = 5000, limits = [{{ unit = "octets", amount = "50 GiB" }}] }},
  {{ parent = "acme/sales", msisdn_from = 15551005000, imsi_from = 1010000005000, count = 3000, limits = [{{ unit = "octets", amount = "5 GiB" }}] }},
  {{ parent = "acme/iot", msisdn_from = 15551008000, imsi_from = 1010000008000, count = 2000, limits = [{{ unit = "octets", amount = "10 MiB" }}] }},
]

[[tenant]]
name = "alice"
policy = {{ validity_time_s = {validity_time_s}, tariff = {{ price = "0.01", per_octets = "1 MiB", currency_code = 978 }} }}
node = [
  {{ path = "alice", msisdn = "15559990001", imsi = "001019990000001", limits = [{{ unit = "money", period = "total", amount = "5.00" }}] }},
]
"#
    )
}

/// The embedded default tenant built on its own (tests, tools, benchmarks).
pub fn default_tenant() -> (Ledger, Directory) {
    let mut ledger = Ledger::new();
    let mut dir = Directory::default();
    // The embedded text is a constant of this program; a failure is a bug caught by tests.
    if let Err(e) = load_str("(embedded)", &embedded_text(600), &mut ledger, &mut dir) {
        panic!("the embedded tenant does not load: {e}");
    }
    (ledger, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition's share of a file: only the tenants asked for, each read as before.
    #[test]
    fn select_tenants_keeps_only_the_named() {
        let text = embedded_text(600);
        let acme = select_tenants("f", &text, |n| n == "acme").unwrap();
        let specs = parse("f", &acme).unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs, parse("f", &text).unwrap()[..1]);
        let none = select_tenants("f", &text, |_| false).unwrap();
        assert!(parse("f", &none).unwrap().is_empty());
        let e = select_tenants("bad.toml", "[[tenant]\n", |_| true).unwrap_err();
        assert_eq!(e.file, "bad.toml");
    }

    #[test]
    fn default_tenant_is_design_section_7() {
        use crate::accounts::tenant::{GIB, MIB, SubscriptionType, TIB};
        let (ledger, dir) = default_tenant();
        assert_eq!(ledger.tree_count(), 2);
        let eng0 = dir.lookup(SubscriptionType::E164, "15551000000").unwrap();
        assert_eq!(
            dir.lookup(SubscriptionType::Imsi, "001010000000000"),
            Some(eng0)
        );
        let iot_last = dir.lookup(SubscriptionType::E164, "15551009999").unwrap();
        assert_eq!(
            dir.lookup(SubscriptionType::Imsi, "001010000009999"),
            Some(iot_last)
        );
        assert_eq!(dir.lookup(SubscriptionType::E164, "15551010000"), None);
        assert_eq!(
            dir.lookup(SubscriptionType::E164, "+15559990001")
                .map(|a| a.tree),
            Some(1)
        );
        let t = ledger.lock(0).unwrap();
        assert_eq!(t.names(eng0.node), ["acme", "engineering", "15551000000"]);
        assert_eq!(t.names(iot_last.node), ["acme", "iot", "15551009999"]);
        let limit = |n: u32| t.nodes[n as usize].counters[0].limit;
        assert_eq!(limit(0), TIB);
        assert_eq!(limit(t.find(&["acme", "sales"]).unwrap()), 100 * GIB);
        assert_eq!(
            limit(t.find(&["acme", "sales", "15551005000"]).unwrap()),
            5 * GIB
        );
        assert_eq!(limit(iot_last.node), 10 * MIB);
        assert_eq!(dir.policy(0).slice_octets, 10 * MIB);
    }

    use crate::accounts::tenant::MIB;

    const SAMPLE: &str = r#"
[[tenant]]
name = "globex"
time_zone = "Europe/London"
[tenant.policy]
slice_octets = "5 MiB"
final_unit_action = "redirect"
redirect_address = "http://approve.globex.example/"
denied_rating_groups = [666]

[[tenant.node]]
path = "globex"
limits = [{ unit = "octets", period = "month", amount = "1 GiB" }, { unit = "octets", period = "day", amount = "100 MiB" }]

[[tenant.node]]
path = "globex/finance"
limits = [{ unit = "octets", amount = "500 MiB" }]

[[tenant.node]]
path = "globex/finance/ceo"
msisdn = "447700900001"
nai = "ceo@globex.example"
limits = [{ unit = "octets", amount = "50 MiB" }]

[[tenant.devices]]
parent = "globex/finance"
msisdn_from = 447700900100
imsi_from = 234150000000100
count = 3
limits = [{ unit = "octets", amount = 1048576 }]

[[tenant]]
name = "bob"
[tenant.policy]
tariff = { price = "0.02", per_octets = "1 MiB" }
[[tenant.node]]
path = "bob"
msisdn = "447700900999"
limits = [{ unit = "money", period = "total", amount = "2.50" }]
"#;

    #[test]
    fn sample_loads() {
        let mut ledger = Ledger::new();
        let mut dir = Directory::default();
        assert_eq!(
            load_str("sample.toml", SAMPLE, &mut ledger, &mut dir).unwrap(),
            2
        );
        let ceo = dir
            .lookup(SubscriptionType::Nai, "CEO@globex.example")
            .unwrap();
        assert_eq!(
            dir.lookup(SubscriptionType::E164, "447700900001"),
            Some(ceo)
        );
        let d2 = dir
            .lookup(SubscriptionType::Imsi, "234150000000102")
            .unwrap();
        assert_eq!(dir.lookup(SubscriptionType::E164, "447700900102"), Some(d2));
        let t = ledger.lock(0).unwrap();
        assert_eq!(t.names(d2.node), ["globex", "finance", "447700900102"]);
        assert_eq!(t.nodes[0].counters.len(), 2);
        assert_eq!(t.nodes[d2.node as usize].counters[0].limit, MIB);
        let p = dir.policy(0);
        assert_eq!(p.slice_octets, 5 * MIB);
        assert_eq!(p.denied_rating_groups, vec![666]);
        assert!(
            matches!(&p.final_unit_action, FinalUnitAction::Redirect { address_type: 2, address } if address.contains("approve"))
        );
        drop(t);
        let bob = ledger.lock(1).unwrap();
        assert_eq!(bob.nodes[0].counters[0].limit, 2_500_000_000);
        assert!(dir.policy(1).tariff.is_some());
    }

    #[test]
    fn errors_name_the_file_tenant_and_node() {
        let cases = [
            ("[[tenant]]\nname = \"x\"\nbogus = 1\n", "unknown field"),
            (
                "[[tenant]]\nname = \"x\"\ntime_zone = \"Mars/Olympus\"\n[[tenant.node]]\npath = \"x\"\n",
                "tenant 'x': time zone 'Mars/Olympus'",
            ),
            (
                "[[tenant]]\nname = \"x\"\n[[tenant.node]]\npath = \"x/y\"\n",
                "tenant 'x': node 'x/y': parent 'x' is not defined",
            ),
            (
                "[[tenant]]\nname = \"x\"\n[[tenant.node]]\npath = \"x\"\nlimits = [{ unit = \"octets\", amount = \"3 PiB\" }]\n",
                "unknown unit 'PiB'",
            ),
            (
                "[[tenant]]\nname = \"x\"\n[tenant.policy]\nfinal_unit_action = \"redirect\"\n[[tenant.node]]\npath = \"x\"\n",
                "redirect needs redirect_address",
            ),
            (
                "[[tenant]]\nname = \"x\"\n[[tenant.node]]\npath = \"x\"\nmsisdn = \"15551000000\"\n",
                "subscription 15551000000 is already provisioned",
            ),
            (
                "[[tenant]]\nname = \"x\"\n[[tenant.node]]\npath = \"x\"\n[[tenant.devices]]\nparent = \"x\"\nmsisdn_from = 1\ncount = 99999999999\n",
                "more than",
            ),
            (
                "[[tenant]]\nname = \"x\"\n[[tenant.node]]\npath = \"x\"\n[[tenant.node]]\npath = \"x/d\"\nmsisdn = \"447700900555\"\n[[tenant.node]]\npath = \"x/d/e\"\n",
                "node 'x/d/e': its parent is a device",
            ),
            (
                "[[tenant]]\nname = \"x\"\n[[tenant.node]]\npath = \"x\"\n[[tenant.node]]\npath = \"x/d\"\nmsisdn = \"447700900555\"\n[[tenant.devices]]\nparent = \"x/d\"\nmsisdn_from = 447700900600\ncount = 2\n",
                "devices under 'x/d': the parent is a device",
            ),
            (
                "[[tenant]]\nname = \"x\"\n[[tenant.node]]\npath = \"x\"\nlimits = [{ unit = \"money\", period = \"total\", amount = \"79228162514264337593543950335\" }]\n",
                "is too large",
            ),
            (
                "[[tenant]]\nname = \"x\"\n[tenant.policy]\ntariff = { price = \"79228162514264337593543950335\", per_octets = 1 }\n[[tenant.node]]\npath = \"x\"\n",
                "is too large",
            ),
            (
                &format!(
                    "[[tenant]]\nname = \"x\"\n[[tenant.node]]\npath = \"x\"\n[[tenant.node]]\npath = \"x/{}\"\n",
                    "n".repeat(129)
                ),
                "a name has 1 to 128 octets",
            ),
        ];
        for (text, want) in cases {
            let (mut ledger, mut dir) = default_tenant();
            let e = load_str("t.toml", text, &mut ledger, &mut dir)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("t.toml: "), "{e}");
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }

    #[test]
    fn generated_files_load() {
        let text = generate(10, 1000);
        let mut ledger = Ledger::new();
        let mut dir = Directory::default();
        assert_eq!(
            load_str("gen.toml", &text, &mut ledger, &mut dir).unwrap(),
            10
        );
        assert_eq!(ledger.tree_count(), 10);
        assert_eq!(dir.subscriber_count(), 2000);
        assert!(dir.lookup(SubscriptionType::E164, "155520000999").is_some());
        assert!(
            dir.lookup(SubscriptionType::Imsi, "001020000000999")
                .is_some()
        );
        assert!(dir.lookup(SubscriptionType::E164, "155520001000").is_none());
    }
}
