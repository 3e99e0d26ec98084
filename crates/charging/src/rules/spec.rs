//! Rules as provisioning files, the admin API and the change log write them
//! (docs/rules.md), and their checks: a bad rule is refused with its reason, never half taken.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::attributes::RAT_TYPES;
use super::{Action, Rule, Zones};
use crate::terms::SubscriptionType;

/// A number, or a text such as a range ("30-39") or a name ("EUTRAN").
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(u64),
    Text(String),
}

/// One rule as written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Named in usage records, events and explain.
    pub name: String,
    /// Rating groups: numbers or inclusive ranges "from-to".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rating_groups: Vec<NumberOrText>,
    /// Service identifiers: numbers or inclusive ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_ids: Vec<NumberOrText>,
    /// APNs (Called-Station-Id), any case; "*.example.com" matches any APN ending so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apn: Vec<String>,
    /// Serving networks: an MCC ("208") or an MCC and MNC ("20801").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serving_networks: Vec<String>,
    /// Roaming zones of the tenant's policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// RAT types: names (UTRAN, GERAN, WLAN, EUTRAN, NR, ...) or 3GPP-RAT-Type values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rat_types: Vec<NumberOrText>,
    /// Only while roaming (true) or only at home (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roaming: Option<bool>,
    /// Local weekdays: "mon".."sun" or ranges "mon-fri".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// Local times of day "HH:MM-HH:MM" or "HH:MM:SS-HH:MM:SS" (end excluded; "22:00-06:00"
    /// spans midnight).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hours: Vec<String>,
    /// corporate, personal, tariff (with `tariff`) or deny.
    pub charge: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tariff: Option<String>,
}

/// A class of service as written: its rating groups and service identifiers (numbers or
/// ranges). Limits with `class = "<name>"` count only what belongs to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rating_groups: Vec<NumberOrText>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_ids: Vec<NumberOrText>,
}

/// A class of service, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceClass {
    pub id: u32,
    pub name: String,
    rating_groups: Box<[(u32, u32)]>,
    service_ids: Box<[(u32, u32)]>,
}

/// The name of the class every service of a roaming device belongs to.
pub const ROAMING: &str = "roaming";

/// A class's id: a hash of its name (FNV-1a), never 0, so that limits keep their class
/// whatever other classes come and go.
pub fn class_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

impl ServiceClass {
    pub fn compile(name: &str, spec: &ClassSpec) -> Result<ServiceClass, String> {
        crate::terms::check_name(name).map_err(|e| format!("class: {e}"))?;
        if name == ROAMING {
            return Err("class 'roaming' is built in (every service of a roaming device)".into());
        }
        if spec.rating_groups.is_empty() && spec.service_ids.is_empty() {
            return Err(format!(
                "class '{name}' names no rating_groups or service_ids"
            ));
        }
        let err = |e: String| format!("class '{name}': {e}");
        Ok(ServiceClass {
            id: class_id(name),
            name: name.to_owned(),
            rating_groups: ranges("rating_groups", &spec.rating_groups).map_err(err)?,
            service_ids: ranges("service_ids", &spec.service_ids).map_err(err)?,
        })
    }

    /// Whether a service (Rating-Group, Service-Identifier) belongs to this class: every list
    /// given must name it.
    pub fn covers(&self, rating_group: Option<u32>, service_identifier: Option<u32>) -> bool {
        let within = |v: Option<u32>, r: &[(u32, u32)]| {
            r.is_empty() || v.is_some_and(|v| r.iter().any(|&(a, b)| a <= v && v <= b))
        };
        within(rating_group, &self.rating_groups) && within(service_identifier, &self.service_ids)
    }

    /// As it was written.
    pub fn spec(&self) -> ClassSpec {
        let back = |r: &[(u32, u32)]| {
            r.iter()
                .map(|&(a, b)| {
                    if a == b {
                        NumberOrText::Number(u64::from(a))
                    } else {
                        NumberOrText::Text(format!("{a}-{b}"))
                    }
                })
                .collect()
        };
        ClassSpec {
            rating_groups: back(&self.rating_groups),
            service_ids: back(&self.service_ids),
        }
    }
}

/// The most rules on one node.
pub const MAX_RULES: usize = 256;

fn ranges(what: &str, list: &[NumberOrText]) -> Result<Box<[(u32, u32)]>, String> {
    let one = |t: &str| -> Result<u32, String> {
        t.trim()
            .parse()
            .map_err(|_| format!("{what}: '{t}' is not a number up to 4294967295"))
    };
    list.iter()
        .map(|v| match v {
            NumberOrText::Number(n) => {
                let n = u32::try_from(*n).map_err(|_| format!("{what}: {n} is too large"))?;
                Ok((n, n))
            }
            NumberOrText::Text(t) => {
                let (a, b) = match t.split_once('-') {
                    Some((a, b)) => (one(a)?, one(b)?),
                    None => (one(t)?, one(t)?),
                };
                if a > b {
                    return Err(format!("{what}: range '{t}' ends before it starts"));
                }
                Ok((a, b))
            }
        })
        .collect()
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn days(list: &[String]) -> Result<u8, String> {
    let day = |d: &str| {
        DAYS.iter()
            .position(|x| x.eq_ignore_ascii_case(d.trim()))
            .ok_or_else(|| format!("days: '{d}' is not one of mon, tue, wed, thu, fri, sat, sun"))
    };
    let mut mask = 0u8;
    for d in list {
        let (a, b) = match d.split_once('-') {
            Some((a, b)) => (day(a)?, day(b)?),
            None => (day(d)?, day(d)?),
        };
        // "fri-mon" wraps over the weekend.
        let mut i = a;
        loop {
            mask |= 1 << i;
            if i == b {
                break;
            }
            i = (i + 1) % 7;
        }
    }
    Ok(mask)
}

fn second_of(t: &str) -> Result<u32, String> {
    let bad = || format!("hours: '{t}' is not a time HH:MM or HH:MM:SS");
    let mut parts = t.trim().split(':');
    let mut next =
        || -> Result<u32, String> { parts.next().ok_or_else(bad)?.parse().map_err(|_| bad()) };
    let (h, m) = (next()?, next()?);
    let s = match parts.next() {
        Some(s) => s.parse::<u32>().map_err(|_| bad())?,
        None => 0,
    };
    if parts.next().is_some() || m > 59 || s > 59 || h > 24 || (h == 24 && (m, s) != (0, 0)) {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60 + s)
}

fn hours(list: &[String]) -> Result<Box<[(u32, u32)]>, String> {
    list.iter()
        .map(|w| {
            let (a, b) = w
                .split_once('-')
                .ok_or_else(|| format!("hours: '{w}' is not a window HH:MM-HH:MM"))?;
            let (a, b) = (second_of(a)?, second_of(b)?);
            if a == b {
                return Err(format!("hours: window '{w}' is empty"));
            }
            Ok((a, b % 86_400))
        })
        .collect()
}

fn rat_types(list: &[NumberOrText]) -> Result<Box<[u8]>, String> {
    list.iter()
        .map(|v| match v {
            NumberOrText::Number(n) => {
                u8::try_from(*n).map_err(|_| format!("rat_types: {n} is not a 3GPP-RAT-Type"))
            }
            NumberOrText::Text(t) => RAT_TYPES
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(t.trim()))
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    let names: Vec<&str> = RAT_TYPES.iter().map(|(n, _)| *n).collect();
                    format!("rat_types: '{t}' is not one of {}", names.join(", "))
                }),
        })
        .collect()
}

/// What a rule may name in its tenant's policy.
pub struct Names<'a> {
    pub tariffs: Vec<&'a str>,
    pub zones: &'a Zones,
}

/// Compiles one rule, checking every condition and what it names.
pub fn compile(spec: &RuleSpec, names: &Names) -> Result<Rule, String> {
    let err = |r: String| format!("rule '{}': {r}", spec.name);
    crate::terms::check_name(&spec.name).map_err(|e| format!("rule: {e}"))?;
    let action = match (spec.charge.as_str(), &spec.tariff) {
        ("corporate", None) => Action::Corporate,
        ("personal", None) => Action::Personal,
        ("deny", None) => Action::Deny,
        ("tariff", Some(t)) => {
            if !names.tariffs.contains(&t.as_str()) {
                return Err(err(format!(
                    "tariff '{t}' is not one of the tenant's tariffs"
                )));
            }
            Action::Tariff(Arc::from(t.as_str()))
        }
        ("tariff", None) => {
            return Err(err("charge = \"tariff\" needs tariff = \"<name>\"".into()));
        }
        (_, Some(_)) if matches!(spec.charge.as_str(), "corporate" | "personal" | "deny") => {
            return Err(err("tariff is only for charge = \"tariff\"".into()));
        }
        (other, _) => {
            return Err(err(format!(
                "charge '{other}': use corporate, personal, tariff or deny"
            )));
        }
    };
    for z in &spec.zones {
        if !names.zones.contains(z) {
            return Err(err(format!("zone '{z}' is not one of the tenant's zones")));
        }
    }
    let mut serving = Vec::with_capacity(spec.serving_networks.len());
    for s in &spec.serving_networks {
        let s = s.trim();
        if !(3..=6).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(format!(
                "serving_networks: '{s}' is not an MCC or an MCC and MNC (3 to 6 digits)"
            )));
        }
        serving.push(Box::from(s));
    }
    let mut apn = Vec::with_capacity(spec.apn.len());
    for a in &spec.apn {
        let a = a.trim().to_ascii_lowercase();
        if a.is_empty() || a.len() > 100 || a == "*." {
            return Err(err(format!("apn: '{a}' is not an APN")));
        }
        apn.push(a.into_boxed_str());
    }
    Ok(Rule {
        name: Arc::from(spec.name.as_str()),
        rating_groups: ranges("rating_groups", &spec.rating_groups).map_err(err)?,
        service_ids: ranges("service_ids", &spec.service_ids).map_err(err)?,
        apn: apn.into(),
        serving: serving.into(),
        zones: spec.zones.iter().map(|z| Box::from(z.as_str())).collect(),
        rat: rat_types(&spec.rat_types).map_err(err)?,
        roaming: spec.roaming,
        days: days(&spec.days).map_err(err)?,
        hours: hours(&spec.hours).map_err(err)?,
        action,
        spec: spec.clone(),
    })
}

/// Compiles a node's rules: all of them or none.
pub fn compile_all(specs: &[RuleSpec], names: &Names) -> Result<Vec<Rule>, String> {
    if specs.len() > MAX_RULES {
        return Err(format!("more than {MAX_RULES} rules on one node"));
    }
    let mut out = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.name == s.name) {
            return Err(format!("rule '{}' is named twice on this node", s.name));
        }
        out.push(compile(s, names)?);
    }
    Ok(out)
}

/// A personal account's subscription as written: an MSISDN in digits, or `type:id` with type
/// e164, imsi, nai or private, or a SIP URI.
pub fn personal_account(text: &str) -> Result<(SubscriptionType, String), String> {
    let text = text.trim();
    let (kind, id) = match text.split_once(':') {
        Some(("e164", id)) => (SubscriptionType::E164, id),
        Some(("imsi", id)) => (SubscriptionType::Imsi, id),
        Some(("nai", id)) => (SubscriptionType::Nai, id),
        Some(("private", id)) => (SubscriptionType::Private, id),
        // A SIP URI is its whole text.
        Some(("sip" | "sips", _)) => (SubscriptionType::SipUri, text),
        Some((other, _)) => {
            return Err(format!(
                "personal_account '{text}': '{other}' is not one of e164, imsi, nai, sip, private"
            ));
        }
        None => (SubscriptionType::E164, text),
    };
    if id.is_empty() || id.len() > 256 {
        return Err(format!("personal_account '{text}' is empty or too long"));
    }
    Ok((kind, id.to_owned()))
}

/// A personal account's subscription written back (see [`personal_account`]).
pub fn personal_text(kind: SubscriptionType, id: &str) -> String {
    match kind {
        SubscriptionType::E164 => id.to_owned(),
        SubscriptionType::Imsi => format!("imsi:{id}"),
        SubscriptionType::Nai => format!("nai:{id}"),
        SubscriptionType::SipUri => id.to_owned(),
        SubscriptionType::Private => format!("private:{id}"),
    }
}
