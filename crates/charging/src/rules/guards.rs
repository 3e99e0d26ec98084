//! Guards against bill shock (DESIGN.md §5), set on any node for every device under it, the
//! nearest node's setting winning field by field:
//!
//! - **velocity**: more than an amount of data within a sliding window (2 GiB in an hour) →
//!   notify, restrict or cut off the device at once; grants are sized so that a device cannot
//!   pass the amount by more than one grant;
//! - **ceilings**: no single grant, no session and no device's month can exceed a sanity bound,
//!   in octets or money, whatever the limits say; a report past one is refused whole.
//!
//! Each guard that trips is an event.

use serde::{Deserialize, Serialize};

use crate::ledger::Unit;
use crate::terms::{Amount, parse_amount};

/// Guards as written (on a `[[tenant.node]]` as `guards`, or through the API).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSpec {
    /// More than this many octets within `velocity_window_s` trips the velocity guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub velocity_octets: Option<Amount>,
    /// The sliding window, seconds (60 to 86,400; default 3,600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub velocity_window_s: Option<u32>,
    /// notify (an event, grants go on), restrict (the last grant carries RESTRICT_ACCESS with
    /// the tenant's filters, then nothing until the window allows) or terminate (the last
    /// grant carries TERMINATE). Default restrict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub velocity_action: Option<String>,
    /// The most one grant may be, octets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grant_octets: Option<Amount>,
    /// The most one session may use, octets and money.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_session_octets: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_session_money: Option<Amount>,
    /// The most one device may use in a calendar month (the tenant's time zone), octets and
    /// money.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_month_octets: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_month_money: Option<Amount>,
}

/// What the velocity guard does when it trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VelocityAction {
    Notify,
    Restrict,
    Terminate,
}

impl VelocityAction {
    pub fn name(self) -> &'static str {
        match self {
            VelocityAction::Notify => "notify",
            VelocityAction::Restrict => "restrict",
            VelocityAction::Terminate => "terminate",
        }
    }
}

/// The velocity guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Velocity {
    pub octets: u64,
    pub window_s: u32,
    pub action: VelocityAction,
}

/// Guards of a node, compiled, and as they were given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guards {
    pub limits: GuardLimits,
    pub spec: GuardSpec,
}

/// What guards a device: a field not set is inherited from above (none anywhere: no guard).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardLimits {
    pub velocity: Option<Velocity>,
    pub max_grant_octets: Option<u64>,
    pub max_session_octets: Option<u64>,
    pub max_session_money: Option<u64>,
    pub max_month_octets: Option<u64>,
    pub max_month_money: Option<u64>,
}

/// Velocity windows allowed, seconds.
pub const VELOCITY_WINDOWS: std::ops::RangeInclusive<u32> = 60..=86_400;

impl Guards {
    pub fn compile(spec: &GuardSpec) -> Result<Guards, String> {
        Ok(Guards {
            limits: GuardLimits::compile(spec)?,
            spec: spec.clone(),
        })
    }
}

impl GuardLimits {
    fn compile(spec: &GuardSpec) -> Result<GuardLimits, String> {
        let amount = |a: &Option<Amount>, unit: Unit, what: &str| -> Result<Option<u64>, String> {
            a.as_ref()
                .map(|a| parse_amount(a, unit).map_err(|e| format!("{what}: {e}")))
                .transpose()
        };
        let velocity = match amount(&spec.velocity_octets, Unit::Octets, "velocity_octets")? {
            None => {
                if spec.velocity_window_s.is_some() || spec.velocity_action.is_some() {
                    return Err("velocity_window_s and velocity_action need velocity_octets".into());
                }
                None
            }
            Some(octets) => {
                let window_s = spec.velocity_window_s.unwrap_or(3600);
                if !VELOCITY_WINDOWS.contains(&window_s) {
                    return Err(format!(
                        "velocity_window_s {window_s}: between 60 and 86400 seconds"
                    ));
                }
                if octets == 0 {
                    return Err("velocity_octets must be more than 0".into());
                }
                let action = match spec.velocity_action.as_deref().unwrap_or("restrict") {
                    "notify" => VelocityAction::Notify,
                    "restrict" => VelocityAction::Restrict,
                    "terminate" => VelocityAction::Terminate,
                    other => {
                        return Err(format!(
                            "velocity_action '{other}': use notify, restrict or terminate"
                        ));
                    }
                };
                Some(Velocity {
                    octets,
                    window_s,
                    action,
                })
            }
        };
        let g = GuardLimits {
            velocity,
            max_grant_octets: amount(&spec.max_grant_octets, Unit::Octets, "max_grant_octets")?,
            max_session_octets: amount(
                &spec.max_session_octets,
                Unit::Octets,
                "max_session_octets",
            )?,
            max_session_money: amount(&spec.max_session_money, Unit::Money, "max_session_money")?,
            max_month_octets: amount(&spec.max_month_octets, Unit::Octets, "max_month_octets")?,
            max_month_money: amount(&spec.max_month_money, Unit::Money, "max_month_money")?,
        };
        if g.max_grant_octets == Some(0) {
            return Err("max_grant_octets must be more than 0".into());
        }
        Ok(g)
    }

    /// Fills what `self` leaves unset from `above`.
    pub fn inherit(&mut self, above: &GuardLimits) {
        self.velocity = self.velocity.or(above.velocity);
        self.max_grant_octets = self.max_grant_octets.or(above.max_grant_octets);
        self.max_session_octets = self.max_session_octets.or(above.max_session_octets);
        self.max_session_money = self.max_session_money.or(above.max_session_money);
        self.max_month_octets = self.max_month_octets.or(above.max_month_octets);
        self.max_month_money = self.max_month_money.or(above.max_month_money);
    }

    pub fn is_empty(&self) -> bool {
        self.velocity.is_none()
            && self.max_grant_octets.is_none()
            && self.max_session_octets.is_none()
            && self.max_session_money.is_none()
            && self.max_month_octets.is_none()
            && self.max_month_money.is_none()
    }

    /// The ceiling on a session and on a month in `unit` (octets or money).
    pub fn ceilings(&self, unit: Unit) -> (Option<u64>, Option<u64>) {
        match unit {
            Unit::Octets => (self.max_session_octets, self.max_month_octets),
            Unit::Money => (self.max_session_money, self.max_month_money),
            _ => (None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_compile_inherit_and_say_what_is_wrong() {
        let spec: GuardSpec = toml::from_str(
            "velocity_octets = \"2 GiB\"\nvelocity_action = \"terminate\"\nmax_month_money = \"50.00\"",
        )
        .unwrap();
        let mut g = Guards::compile(&spec).unwrap().limits;
        assert_eq!(
            g.velocity,
            Some(Velocity {
                octets: 2 << 30,
                window_s: 3600,
                action: VelocityAction::Terminate
            })
        );
        assert_eq!(g.max_month_money, Some(50_000_000_000));
        let above = Guards::compile(&GuardSpec {
            max_grant_octets: Some(Amount::Text("1 GiB".into())),
            max_month_money: Some(Amount::Text("1.00".into())),
            ..GuardSpec::default()
        })
        .unwrap()
        .limits;
        g.inherit(&above);
        assert_eq!(g.max_grant_octets, Some(1 << 30));
        assert_eq!(
            g.max_month_money,
            Some(50_000_000_000),
            "the nearer one wins"
        );
        for (text, why) in [
            ("velocity_window_s = 10", "need velocity_octets"),
            ("velocity_octets = 1\nvelocity_window_s = 10", "between 60"),
            ("velocity_octets = 1\nvelocity_action = \"panic\"", "panic"),
            ("max_grant_octets = 0", "more than 0"),
            ("max_month_money = \"-1\"", "negative"),
        ] {
            let spec: GuardSpec = toml::from_str(text).unwrap();
            let e = Guards::compile(&spec).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
