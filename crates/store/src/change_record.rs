//! Account-change records, schema 4. FROZEN: the JSON object each change-log entry holds
//! (`changes.rs` frames it). A change log written by any version of ocfd must replay the same
//! way forever, so these types are the store's own, not the admin API's: renaming a field of
//! the API changes nothing here, and a new kind of change or field needs a new schema version.
//!
//! ```text
//! record     = {"op": kind, "by"?: string, ...fields}   (unknown fields are refused)
//!              (by: who made the change, a token's name; schema 4)
//! kind       = "import"            sources: [ {name, text} ]   (text: the provisioning file)
//!            | "add_tenant"        name, time_zone?, policy?, limits?
//!            | "set_policy"        tenant, policy
//!            | "add_node"          path, limits?, msisdn?, imsi?, nai?, sip_uri?
//!            | "set_limits"        path, limits
//!            | "set_subscriptions" path, msisdn?, imsi?, nai?, sip_uri?
//!            | "set_thresholds"    path, thresholds: [threshold]        (schema 2)
//!            | "set_at_limit"      path, at_limit: at_limit | null       (schema 2)
//!            | "block"             path                                  (schema 2)
//!            | "unblock"           path                                  (schema 2)
//!            | "set_rules"         path, rules: [rule]                   (schema 3)
//!            | "set_personal_account" path, personal_account: string | null (schema 3)
//!            | "set_guards"        path, guards: guards | null          (schema 3)
//!            | "remove"            path
//!            | "move"              from, to, unit, period? (default "month"), amount,
//!                                  class? (schema 3)
//! limit      = {unit, period? (default "month"), amount, class? (schema 3)}
//! threshold  = {unit?, period?, percent?, amount?}  (one of percent and amount)
//! at_limit   = {action: "deny" | "terminate" | "redirect" | "restrict", redirect_address?,
//!               redirect_address_type?, filter_ids?, restriction_rules?}
//! unit       = "octets" | "seconds" | "events" | "money"
//! period     = "day" | "month" | "total"
//! amount     = number | string with a unit ("10 MiB", "5.00")
//! policy     = {slice_octets?, slice_seconds?, slice_events?, validity_time_s?,
//!               threshold_percent?, quota_holding_time_s?, final_unit_action?,
//!               redirect_address?, redirect_address_type?, filter_ids?, restriction_rules?,
//!               denied_rating_groups?, tariff? {price: decimal string, per_octets: amount,
//!               currency_code? (default 978)}, unmetered?, max_report_octets?,
//!               max_report_seconds?, max_report_events?,
//!               tariffs? {name: tariff}, zones? {name: [network]}, home_networks? [network],
//!               equivalent_networks? [network], classes? {name: {rating_groups?,
//!               service_ids?}}}                             (the last five: schema 3)
//! rule       = {name, rating_groups?, service_ids?, apn?, serving_networks?, zones?, rat_types?,
//!               roaming?, days?, hours?, charge, tariff?}                 (schema 3)
//!               (rating_groups, service_ids, rat_types: numbers or strings)
//! guards     = {velocity_octets?, velocity_window_s?, velocity_action?, max_grant_octets?,
//!               max_session_octets?, max_session_money?, max_month_octets?, max_month_money?}
//!                                                                          (schema 3)
//! ```
//!
//! Schema 2 adds `set_thresholds`, `set_at_limit`, `block` and `unblock`; schema 3 adds
//! `set_rules`, `set_personal_account` and the policy's `tariffs`, `zones`, `home_networks` and
//! `equivalent_networks`; schema 4 adds `by` to every kind. Every record of an earlier schema
//! reads as it did.
//!
//! An import keeps the provisioning files' text, which replay parses again: the provisioning
//! file format (docs/provisioning.md) is therefore frozen too, in what it accepts.

use ocf_charging::accounts::changes::{Change, Source};
use ocf_charging::accounts::provisioning::{
    Amount, AtLimitSpec, LimitSpec, PolicySpec, TariffSpec, ThresholdSpec,
};
use ocf_charging::ledger::{Period, Unit};
use ocf_charging::rules::spec::{ClassSpec, NumberOrText};
use ocf_charging::rules::{GuardSpec, RuleSpec};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Record {
    Import {
        sources: Vec<SourceV1>,
    },
    AddTenant {
        name: String,
        #[serde(default)]
        time_zone: Option<String>,
        #[serde(default)]
        policy: PolicyV1,
        #[serde(default)]
        limits: Vec<LimitV1>,
    },
    SetPolicy {
        tenant: String,
        policy: PolicyV1,
    },
    AddNode {
        path: String,
        #[serde(default)]
        limits: Vec<LimitV1>,
        #[serde(default)]
        msisdn: Option<String>,
        #[serde(default)]
        imsi: Option<String>,
        #[serde(default)]
        nai: Option<String>,
        #[serde(default)]
        sip_uri: Option<String>,
    },
    SetLimits {
        path: String,
        limits: Vec<LimitV1>,
    },
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
    SetThresholds {
        path: String,
        thresholds: Vec<ThresholdV2>,
    },
    SetAtLimit {
        path: String,
        at_limit: Option<AtLimitV2>,
    },
    Block {
        path: String,
    },
    Unblock {
        path: String,
    },
    SetRules {
        path: String,
        rules: Vec<RuleV3>,
    },
    SetPersonalAccount {
        path: String,
        personal_account: Option<String>,
    },
    SetGuards {
        path: String,
        guards: Option<GuardV3>,
    },
    Remove {
        path: String,
    },
    Move {
        from: String,
        to: String,
        unit: UnitV1,
        #[serde(default = "month")]
        period: PeriodV1,
        amount: AmountV1,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<String>,
    },
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SourceV1 {
    name: String,
    text: String,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum UnitV1 {
    Octets,
    Seconds,
    Events,
    Money,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum PeriodV1 {
    Day,
    Month,
    Total,
}

fn month() -> PeriodV1 {
    PeriodV1::Month
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum AmountV1 {
    Number(u64),
    Text(String),
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct LimitV1 {
    unit: UnitV1,
    #[serde(default = "month")]
    period: PeriodV1,
    amount: AmountV1,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    class: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ClassV3 {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rating_groups: Vec<NumberOrTextV3>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    service_ids: Vec<NumberOrTextV3>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AtLimitV2 {
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redirect_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redirect_address_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    filter_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    restriction_rules: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ThresholdV2 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<UnitV1>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    period: Option<PeriodV1>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    percent: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    amount: Option<AmountV1>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PolicyV1 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slice_octets: Option<AmountV1>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slice_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slice_events: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    validity_time_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threshold_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quota_holding_time_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    final_unit_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redirect_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redirect_address_type: Option<String>,
    #[serde(default)]
    filter_ids: Vec<String>,
    #[serde(default)]
    restriction_rules: Vec<String>,
    #[serde(default)]
    denied_rating_groups: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tariff: Option<TariffV1>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unmetered: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_report_octets: Option<AmountV1>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_report_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_report_events: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tariffs: BTreeMap<String, TariffV1>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    zones: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    home_networks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    equivalent_networks: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    classes: BTreeMap<String, ClassV3>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct GuardV3 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    velocity_octets: Option<AmountV1>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    velocity_window_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    velocity_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_grant_octets: Option<AmountV1>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_session_octets: Option<AmountV1>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_session_money: Option<AmountV1>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_month_octets: Option<AmountV1>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_month_money: Option<AmountV1>,
}

impl From<GuardSpec> for GuardV3 {
    fn from(g: GuardSpec) -> GuardV3 {
        GuardV3 {
            velocity_octets: g.velocity_octets.map(Into::into),
            velocity_window_s: g.velocity_window_s,
            velocity_action: g.velocity_action,
            max_grant_octets: g.max_grant_octets.map(Into::into),
            max_session_octets: g.max_session_octets.map(Into::into),
            max_session_money: g.max_session_money.map(Into::into),
            max_month_octets: g.max_month_octets.map(Into::into),
            max_month_money: g.max_month_money.map(Into::into),
        }
    }
}

impl From<GuardV3> for GuardSpec {
    fn from(g: GuardV3) -> GuardSpec {
        GuardSpec {
            velocity_octets: g.velocity_octets.map(Into::into),
            velocity_window_s: g.velocity_window_s,
            velocity_action: g.velocity_action,
            max_grant_octets: g.max_grant_octets.map(Into::into),
            max_session_octets: g.max_session_octets.map(Into::into),
            max_session_money: g.max_session_money.map(Into::into),
            max_month_octets: g.max_month_octets.map(Into::into),
            max_month_money: g.max_month_money.map(Into::into),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum NumberOrTextV3 {
    Number(u64),
    Text(String),
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RuleV3 {
    name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rating_groups: Vec<NumberOrTextV3>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    service_ids: Vec<NumberOrTextV3>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    apn: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    serving_networks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rat_types: Vec<NumberOrTextV3>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    roaming: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    days: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hours: Vec<String>,
    charge: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tariff: Option<String>,
}

fn nots_v3(v: Vec<NumberOrText>) -> Vec<NumberOrTextV3> {
    v.into_iter()
        .map(|n| match n {
            NumberOrText::Number(n) => NumberOrTextV3::Number(n),
            NumberOrText::Text(t) => NumberOrTextV3::Text(t),
        })
        .collect()
}

fn nots_of(v: Vec<NumberOrTextV3>) -> Vec<NumberOrText> {
    v.into_iter()
        .map(|n| match n {
            NumberOrTextV3::Number(n) => NumberOrText::Number(n),
            NumberOrTextV3::Text(t) => NumberOrText::Text(t),
        })
        .collect()
}

impl From<RuleSpec> for RuleV3 {
    fn from(r: RuleSpec) -> RuleV3 {
        RuleV3 {
            name: r.name,
            rating_groups: nots_v3(r.rating_groups),
            service_ids: nots_v3(r.service_ids),
            apn: r.apn,
            serving_networks: r.serving_networks,
            zones: r.zones,
            rat_types: nots_v3(r.rat_types),
            roaming: r.roaming,
            days: r.days,
            hours: r.hours,
            charge: r.charge,
            tariff: r.tariff,
        }
    }
}

impl From<RuleV3> for RuleSpec {
    fn from(r: RuleV3) -> RuleSpec {
        RuleSpec {
            name: r.name,
            rating_groups: nots_of(r.rating_groups),
            service_ids: nots_of(r.service_ids),
            apn: r.apn,
            serving_networks: r.serving_networks,
            zones: r.zones,
            rat_types: nots_of(r.rat_types),
            roaming: r.roaming,
            days: r.days,
            hours: r.hours,
            charge: r.charge,
            tariff: r.tariff,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TariffV1 {
    price: Decimal,
    per_octets: AmountV1,
    #[serde(default = "eur")]
    currency_code: u32,
}

fn eur() -> u32 {
    978
}

/// The record of a change, as the change log keeps it.
pub fn encode(change: &Change) -> Vec<u8> {
    encode_by(change, None)
}

/// A change as its record, naming who made it (`by`, schema 4).
pub fn encode_by(change: &Change, by: Option<&str>) -> Vec<u8> {
    // Plain data with string keys: serialising cannot fail.
    let record = serde_json::to_vec(&Record::from(change)).unwrap_or_default();
    let Some(by) = by else {
        return record;
    };
    // `by` first, then the record's own fields in their order: `{"by":..,"op":..}`.
    let mut out = serde_json::to_vec(&serde_json::json!({ "by": by })).unwrap_or_default();
    out.pop();
    out.push(b',');
    out.extend_from_slice(record.get(1..).unwrap_or_default());
    out
}

/// A change read back from its record.
pub fn decode(data: &[u8]) -> Result<Change, String> {
    decode_by(data).map(|(c, _)| c)
}

/// A change read back from its record, with who made it (absent before schema 4).
pub fn decode_by(data: &[u8]) -> Result<(Change, Option<String>), String> {
    let mut v: serde_json::Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    let by = match v.as_object_mut().and_then(|o| o.remove("by")) {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => return Err("'by' must be a string".into()),
    };
    serde_json::from_value::<Record>(v)
        .map(|r| (Change::from(r), by))
        .map_err(|e| e.to_string())
}

impl From<&Change> for Record {
    fn from(c: &Change) -> Record {
        match c.clone() {
            Change::Import { sources } => Record::Import {
                sources: sources
                    .into_iter()
                    .map(|s| SourceV1 {
                        name: s.name,
                        text: s.text,
                    })
                    .collect(),
            },
            Change::AddTenant {
                name,
                time_zone,
                policy,
                limits,
            } => Record::AddTenant {
                name,
                time_zone,
                policy: policy.into(),
                limits: limits_v1(limits),
            },
            Change::SetPolicy { tenant, policy } => Record::SetPolicy {
                tenant,
                policy: policy.into(),
            },
            Change::AddNode {
                path,
                limits,
                msisdn,
                imsi,
                nai,
                sip_uri,
            } => Record::AddNode {
                path,
                limits: limits_v1(limits),
                msisdn,
                imsi,
                nai,
                sip_uri,
            },
            Change::SetLimits { path, limits } => Record::SetLimits {
                path,
                limits: limits_v1(limits),
            },
            Change::SetSubscriptions {
                path,
                msisdn,
                imsi,
                nai,
                sip_uri,
            } => Record::SetSubscriptions {
                path,
                msisdn,
                imsi,
                nai,
                sip_uri,
            },
            Change::SetThresholds { path, thresholds } => Record::SetThresholds {
                path,
                thresholds: thresholds
                    .into_iter()
                    .map(|t| ThresholdV2 {
                        unit: t.unit.map(UnitV1::from),
                        period: t.period.map(PeriodV1::from),
                        percent: t.percent,
                        amount: t.amount.map(AmountV1::from),
                    })
                    .collect(),
            },
            Change::SetAtLimit { path, at_limit } => Record::SetAtLimit {
                path,
                at_limit: at_limit.map(|a| AtLimitV2 {
                    action: a.action,
                    redirect_address: a.redirect_address,
                    redirect_address_type: a.redirect_address_type,
                    filter_ids: a.filter_ids,
                    restriction_rules: a.restriction_rules,
                }),
            },
            Change::Block { path } => Record::Block { path },
            Change::Unblock { path } => Record::Unblock { path },
            Change::SetRules { path, rules } => Record::SetRules {
                path,
                rules: rules.into_iter().map(RuleV3::from).collect(),
            },
            Change::SetPersonalAccount {
                path,
                personal_account,
            } => Record::SetPersonalAccount {
                path,
                personal_account,
            },
            Change::SetGuards { path, guards } => Record::SetGuards {
                path,
                guards: guards.map(GuardV3::from),
            },
            Change::Remove { path } => Record::Remove { path },
            Change::Move {
                from,
                to,
                unit,
                period,
                amount,
                class,
            } => Record::Move {
                from,
                to,
                unit: unit.into(),
                period: period.into(),
                amount: amount.into(),
                class,
            },
        }
    }
}

impl From<Record> for Change {
    fn from(r: Record) -> Change {
        match r {
            Record::Import { sources } => Change::Import {
                sources: sources
                    .into_iter()
                    .map(|s| Source {
                        name: s.name,
                        text: s.text,
                    })
                    .collect(),
            },
            Record::AddTenant {
                name,
                time_zone,
                policy,
                limits,
            } => Change::AddTenant {
                name,
                time_zone,
                policy: policy.into(),
                limits: limits_of(limits),
            },
            Record::SetPolicy { tenant, policy } => Change::SetPolicy {
                tenant,
                policy: policy.into(),
            },
            Record::AddNode {
                path,
                limits,
                msisdn,
                imsi,
                nai,
                sip_uri,
            } => Change::AddNode {
                path,
                limits: limits_of(limits),
                msisdn,
                imsi,
                nai,
                sip_uri,
            },
            Record::SetLimits { path, limits } => Change::SetLimits {
                path,
                limits: limits_of(limits),
            },
            Record::SetSubscriptions {
                path,
                msisdn,
                imsi,
                nai,
                sip_uri,
            } => Change::SetSubscriptions {
                path,
                msisdn,
                imsi,
                nai,
                sip_uri,
            },
            Record::SetThresholds { path, thresholds } => Change::SetThresholds {
                path,
                thresholds: thresholds
                    .into_iter()
                    .map(|t| ThresholdSpec {
                        unit: t.unit.map(Unit::from),
                        period: t.period.map(Period::from),
                        percent: t.percent,
                        amount: t.amount.map(Amount::from),
                    })
                    .collect(),
            },
            Record::SetAtLimit { path, at_limit } => Change::SetAtLimit {
                path,
                at_limit: at_limit.map(|a| AtLimitSpec {
                    action: a.action,
                    redirect_address: a.redirect_address,
                    redirect_address_type: a.redirect_address_type,
                    filter_ids: a.filter_ids,
                    restriction_rules: a.restriction_rules,
                }),
            },
            Record::Block { path } => Change::Block { path },
            Record::Unblock { path } => Change::Unblock { path },
            Record::SetRules { path, rules } => Change::SetRules {
                path,
                rules: rules.into_iter().map(RuleSpec::from).collect(),
            },
            Record::SetPersonalAccount {
                path,
                personal_account,
            } => Change::SetPersonalAccount {
                path,
                personal_account,
            },
            Record::SetGuards { path, guards } => Change::SetGuards {
                path,
                guards: guards.map(GuardSpec::from),
            },
            Record::Remove { path } => Change::Remove { path },
            Record::Move {
                from,
                to,
                unit,
                period,
                amount,
                class,
            } => Change::Move {
                from,
                to,
                unit: unit.into(),
                period: period.into(),
                amount: amount.into(),
                class,
            },
        }
    }
}

fn limits_v1(limits: Vec<LimitSpec>) -> Vec<LimitV1> {
    limits
        .into_iter()
        .map(|l| LimitV1 {
            unit: l.unit.into(),
            period: l.period.into(),
            amount: l.amount.into(),
            class: l.class,
        })
        .collect()
}

fn limits_of(limits: Vec<LimitV1>) -> Vec<LimitSpec> {
    limits
        .into_iter()
        .map(|l| LimitSpec {
            unit: l.unit.into(),
            period: l.period.into(),
            amount: l.amount.into(),
            class: l.class,
        })
        .collect()
}

impl From<Unit> for UnitV1 {
    fn from(u: Unit) -> UnitV1 {
        match u {
            Unit::Octets => UnitV1::Octets,
            Unit::Seconds => UnitV1::Seconds,
            Unit::Events => UnitV1::Events,
            Unit::Money => UnitV1::Money,
        }
    }
}

impl From<UnitV1> for Unit {
    fn from(u: UnitV1) -> Unit {
        match u {
            UnitV1::Octets => Unit::Octets,
            UnitV1::Seconds => Unit::Seconds,
            UnitV1::Events => Unit::Events,
            UnitV1::Money => Unit::Money,
        }
    }
}

impl From<Period> for PeriodV1 {
    fn from(p: Period) -> PeriodV1 {
        match p {
            Period::Day => PeriodV1::Day,
            Period::Month => PeriodV1::Month,
            Period::Total => PeriodV1::Total,
        }
    }
}

impl From<PeriodV1> for Period {
    fn from(p: PeriodV1) -> Period {
        match p {
            PeriodV1::Day => Period::Day,
            PeriodV1::Month => Period::Month,
            PeriodV1::Total => Period::Total,
        }
    }
}

impl From<Amount> for AmountV1 {
    fn from(a: Amount) -> AmountV1 {
        match a {
            Amount::Number(n) => AmountV1::Number(n),
            Amount::Text(t) => AmountV1::Text(t),
        }
    }
}

impl From<AmountV1> for Amount {
    fn from(a: AmountV1) -> Amount {
        match a {
            AmountV1::Number(n) => Amount::Number(n),
            AmountV1::Text(t) => Amount::Text(t),
        }
    }
}

impl From<TariffSpec> for TariffV1 {
    fn from(t: TariffSpec) -> TariffV1 {
        TariffV1 {
            price: t.price,
            per_octets: t.per_octets.into(),
            currency_code: t.currency_code,
        }
    }
}

impl From<TariffV1> for TariffSpec {
    fn from(t: TariffV1) -> TariffSpec {
        TariffSpec {
            price: t.price,
            per_octets: t.per_octets.into(),
            currency_code: t.currency_code,
        }
    }
}

impl From<PolicySpec> for PolicyV1 {
    fn from(p: PolicySpec) -> PolicyV1 {
        PolicyV1 {
            slice_octets: p.slice_octets.map(Into::into),
            slice_seconds: p.slice_seconds,
            slice_events: p.slice_events,
            validity_time_s: p.validity_time_s,
            threshold_percent: p.threshold_percent,
            quota_holding_time_s: p.quota_holding_time_s,
            final_unit_action: p.final_unit_action,
            redirect_address: p.redirect_address,
            redirect_address_type: p.redirect_address_type,
            filter_ids: p.filter_ids,
            restriction_rules: p.restriction_rules,
            denied_rating_groups: p.denied_rating_groups,
            tariff: p.tariff.map(TariffV1::from),
            unmetered: p.unmetered,
            max_report_octets: p.max_report_octets.map(Into::into),
            max_report_seconds: p.max_report_seconds,
            max_report_events: p.max_report_events,
            tariffs: p
                .tariffs
                .into_iter()
                .map(|(k, t)| (k, TariffV1::from(t)))
                .collect(),
            zones: p.zones,
            home_networks: p.home_networks,
            equivalent_networks: p.equivalent_networks,
            classes: p
                .classes
                .into_iter()
                .map(|(k, c)| {
                    (
                        k,
                        ClassV3 {
                            rating_groups: nots_v3(c.rating_groups),
                            service_ids: nots_v3(c.service_ids),
                        },
                    )
                })
                .collect(),
        }
    }
}

impl From<PolicyV1> for PolicySpec {
    fn from(p: PolicyV1) -> PolicySpec {
        PolicySpec {
            slice_octets: p.slice_octets.map(Into::into),
            slice_seconds: p.slice_seconds,
            slice_events: p.slice_events,
            validity_time_s: p.validity_time_s,
            threshold_percent: p.threshold_percent,
            quota_holding_time_s: p.quota_holding_time_s,
            final_unit_action: p.final_unit_action,
            redirect_address: p.redirect_address,
            redirect_address_type: p.redirect_address_type,
            filter_ids: p.filter_ids,
            restriction_rules: p.restriction_rules,
            denied_rating_groups: p.denied_rating_groups,
            tariff: p.tariff.map(TariffSpec::from),
            unmetered: p.unmetered,
            max_report_octets: p.max_report_octets.map(Into::into),
            max_report_seconds: p.max_report_seconds,
            max_report_events: p.max_report_events,
            tariffs: p
                .tariffs
                .into_iter()
                .map(|(k, t)| (k, TariffSpec::from(t)))
                .collect(),
            zones: p.zones,
            home_networks: p.home_networks,
            equivalent_networks: p.equivalent_networks,
            classes: p
                .classes
                .into_iter()
                .map(|(k, c)| {
                    (
                        k,
                        ClassSpec {
                            rating_groups: nots_of(c.rating_groups),
                            service_ids: nots_of(c.service_ids),
                        },
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record of every kind, as schemas 1 to 3 write them: these bytes must never change.
    const GOLDEN: &[&str] = &[
        r#"{"op":"import","sources":[{"name":"(embedded)","text":"[[tenant]]\nname = \"acme\"\n"}]}"#,
        r#"{"op":"add_tenant","name":"globex","time_zone":"Europe/London","policy":{"slice_octets":"5 MiB","validity_time_s":300,"final_unit_action":"redirect","redirect_address":"http://top-up.example","filter_ids":[],"restriction_rules":[],"denied_rating_groups":[9]},"limits":[{"unit":"octets","period":"month","amount":"10 GiB"},{"unit":"money","period":"day","amount":"5.00"}]}"#,
        r#"{"op":"set_policy","tenant":"alice","policy":{"filter_ids":["f1"],"restriction_rules":["permit out ip from any to 10.0.0.1"],"denied_rating_groups":[],"tariff":{"price":"0.01","per_octets":"1 MiB","currency_code":978},"unmetered":"grant","max_report_octets":1000,"max_report_seconds":60,"max_report_events":10}}"#,
        r#"{"op":"add_node","path":"globex/sales/phone","limits":[{"unit":"seconds","period":"month","amount":3600}],"msisdn":"447700900001","imsi":"001010000000001","nai":null,"sip_uri":null}"#,
        r#"{"op":"set_limits","path":"globex/sales","limits":[{"unit":"money","period":"total","amount":"5.00"}]}"#,
        r#"{"op":"set_subscriptions","path":"globex/sales/laptop","msisdn":null,"imsi":null,"nai":"laptop@globex.example","sip_uri":"sip:laptop@globex.example"}"#,
        r#"{"op":"remove","path":"globex/ops"}"#,
        r#"{"op":"move","from":"globex/sales","to":"globex/ops","unit":"events","period":"day","amount":7}"#,
        r#"{"op":"set_thresholds","path":"globex/sales","thresholds":[{"percent":50},{"unit":"octets","period":"month","amount":"4 GiB"},{"unit":"money","percent":90}]}"#,
        r#"{"op":"set_at_limit","path":"globex/sales","at_limit":{"action":"redirect","redirect_address":"http://approve.globex.example/"}}"#,
        r#"{"op":"set_at_limit","path":"globex/ops","at_limit":null}"#,
        r#"{"op":"block","path":"globex/sales/phone"}"#,
        r#"{"op":"unblock","path":"globex/sales"}"#,
        r#"{"op":"set_policy","tenant":"globex","policy":{"filter_ids":[],"restriction_rules":[],"denied_rating_groups":[],"tariffs":{"roaming-eu":{"price":"0.50","per_octets":"1 MiB","currency_code":978}},"zones":{"eu":["208","262"]},"home_networks":["23415"],"equivalent_networks":["23410"]}}"#,
        r#"{"op":"set_rules","path":"globex/sales/phone","rules":[{"name":"video","rating_groups":[20,"30-39"],"service_ids":[1],"apn":["*.corp.example"],"serving_networks":["208"],"zones":["eu"],"rat_types":["EUTRAN",10],"roaming":true,"days":["mon-fri"],"hours":["08:00-18:00"],"charge":"tariff","tariff":"roaming-eu"},{"name":"rest","charge":"personal"}]}"#,
        r#"{"op":"set_rules","path":"globex","rules":[]}"#,
        r#"{"op":"set_personal_account","path":"globex/sales/phone","personal_account":"imsi:001019990000002"}"#,
        r#"{"op":"set_personal_account","path":"globex/sales/phone","personal_account":null}"#,
        r#"{"op":"set_guards","path":"globex","guards":{"velocity_octets":"2 GiB","velocity_window_s":3600,"velocity_action":"restrict","max_grant_octets":"1 GiB","max_session_octets":"50 GiB","max_session_money":"100.00","max_month_octets":500000000000,"max_month_money":"1000"}}"#,
        r#"{"op":"set_guards","path":"globex/sales","guards":null}"#,
        r#"{"op":"set_policy","tenant":"globex","policy":{"filter_ids":[],"restriction_rules":[],"denied_rating_groups":[],"classes":{"video":{"rating_groups":[40,"41-49"],"service_ids":[7]}}}}"#,
        r#"{"op":"set_limits","path":"globex/exec","limits":[{"unit":"octets","period":"month","amount":"200 GiB","class":"video"},{"unit":"money","period":"month","amount":"50.00","class":"roaming"}]}"#,
        r#"{"op":"move","from":"globex/exec","to":"globex/ops","unit":"octets","period":"month","amount":"10 GiB","class":"video"}"#,
    ];

    #[test]
    fn every_schema_reads_and_writes_the_same_bytes() {
        for golden in GOLDEN {
            let change = decode(golden.as_bytes()).unwrap_or_else(|e| panic!("{golden}: {e}"));
            assert_eq!(String::from_utf8(encode(&change)).unwrap(), *golden);
        }
    }

    #[test]
    fn schema_4_names_who_made_the_change() {
        let c = decode(GOLDEN[7].as_bytes()).unwrap();
        let bytes = encode_by(&c, Some("mgr \"acme\""));
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"by":"mgr \"acme\"","op":"move","from":"globex/sales","to":"globex/ops","unit":"events","period":"day","amount":7}"#
        );
        assert_eq!(
            decode_by(&bytes).unwrap(),
            (c.clone(), Some("mgr \"acme\"".into()))
        );
        assert_eq!(decode_by(GOLDEN[7].as_bytes()).unwrap(), (c, None));
        assert!(decode_by(br#"{"by":7,"op":"remove","path":"a"}"#).is_err());
    }

    #[test]
    fn defaults_of_schema_1_hold() {
        let c = decode(br#"{"op":"move","from":"a","to":"a/b","unit":"octets","amount":"1 GiB"}"#)
            .unwrap();
        let Change::Move { period, .. } = c else {
            panic!("{c:?}")
        };
        assert_eq!(period, Period::Month);
        let c = decode(br#"{"op":"add_tenant","name":"t"}"#).unwrap();
        assert_eq!(
            c,
            Change::AddTenant {
                name: "t".into(),
                time_zone: None,
                policy: PolicySpec::default(),
                limits: vec![],
            }
        );
        let c = decode(
            br#"{"op":"set_policy","tenant":"t","policy":{"tariff":{"price":"1","per_octets":1}}}"#,
        )
        .unwrap();
        let Change::SetPolicy { policy, .. } = c else {
            panic!("{c:?}")
        };
        assert_eq!(policy.tariff.map(|t| t.currency_code), Some(978));
    }

    #[test]
    fn records_outside_schema_1_are_refused() {
        for bad in [
            r#"{"op":"rename","path":"a"}"#,
            r#"{"op":"remove","path":"a","extra":1}"#,
            r#"{"op":"move","from":"a","to":"b","unit":"bytes","amount":1}"#,
            r#"{"op":"set_limits","path":"a","limits":[{"unit":"octets","period":"week","amount":1}]}"#,
            r#"{"op":"set_policy","tenant":"t","policy":{"slice":1}}"#,
            r#"not json"#,
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
