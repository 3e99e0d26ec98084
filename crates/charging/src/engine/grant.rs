//! Grant sizing (RFC 4006 §5.1.2, DESIGN.md §5): the units an MSCC asks for, capped by the
//! policy's slice and the smallest headroom on the account's path, with validity time,
//! thresholds and the Final-Unit-Indication when the last units go; tariffs for money.

use super::*;
use crate::accounts::tenant::{AtLimit, FinalUnitAction};
use crate::rules::GuardLimits;
use route::Payer;

/// The kind of service unit a reservation in `unit` was granted for: money reservations buy
/// octets.
pub(super) fn service_kind(unit: Unit) -> Unit {
    match unit {
        Unit::Money => Unit::Octets,
        u => u,
    }
}

/// The unit a request asks for: time, service-specific units, else octets.
pub(super) fn requested_unit(u: &Units) -> Unit {
    if u.time.is_some() {
        Unit::Seconds
    } else if u.events.is_some() {
        Unit::Events
    } else {
        Unit::Octets
    }
}

pub(super) fn requested_amount(u: &Units, unit: Unit) -> Option<u64> {
    match unit {
        Unit::Octets => u.octets(),
        Unit::Seconds => u.time.map(u64::from),
        Unit::Events | Unit::Money => u.events,
    }
}

pub(super) fn slice(policy: &Policy, unit: Unit) -> u64 {
    match unit {
        Unit::Octets => policy.slice_octets,
        Unit::Seconds => policy.slice_seconds,
        Unit::Events | Unit::Money => policy.slice_events,
    }
}

impl Engine {
    /// The price per octet that rates this account's data: the policy's tariff, if a money
    /// limit on the account's path counts what it rates. Without one, octets count as octets
    /// (rated money nobody counts would be usage counted nowhere).
    pub(super) fn tariff_for(&self, policy: &Policy, account: AccountRef) -> Option<(u128, u128)> {
        self.tariff_in(policy, account, Classes::NONE)
    }

    /// [`Self::tariff_for`] for a charge in `classes`: a class limit on money counts it too.
    pub(super) fn tariff_in(
        &self,
        policy: &Policy,
        account: AccountRef,
        classes: Classes,
    ) -> Option<(u128, u128)> {
        policy
            .tariff
            .as_ref()
            .and_then(|t| t.per_octet())
            .filter(|_| {
                self.accounts
                    .ledger()
                    .limited_in(account, Unit::Money, classes)
            })
    }

    /// Reserves the next grant for an MSCC on the account `payer` names, at its price, for at
    /// most `validity_s` (a rule's time edge may cut the policy's Validity-Time).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn grant(
        &self,
        s: &mut Session,
        m: &Mscc,
        policy: &Policy,
        payer: &Payer,
        (validity_s, guards): (u32, Option<&GuardLimits>),
        now: i64,
        a: &mut MsccAnswer,
        rec: &mut Recorder,
    ) {
        let Some(requested) = &m.requested else {
            return;
        };
        let account = payer.account;
        let expires =
            now + i64::from(validity_s) + i64::from(self.reservation_grace_s.load(Relaxed));
        let unit = requested_unit(requested);
        // An empty or zero Requested-Service-Unit leaves the amount to the server
        // (RFC 4006 §8.18): the slice.
        let want = requested_amount(requested, unit)
            .filter(|&n| n > 0)
            .unwrap_or(u64::MAX)
            .min(slice(policy, unit));
        let price = match (payer.price, unit) {
            (Some(p), Unit::Octets) => Some(p),
            _ => None,
        };
        // The guards' cap on data (ceilings, velocity).
        let cap = match (unit, guards) {
            (Unit::Octets, Some(g)) => self.guard_cap(s, g, price, now),
            _ => None,
        };
        let want = cap.map_or(want, |c| want.min(c.octets));
        if cap.is_some_and(|c| c.octets == 0) {
            a.result = ResultCode::CreditLimitReached;
            a.why = Some(match cap.map(|c| c.kind) {
                Some(guard::CapKind::Velocity(_)) => explain::why::VELOCITY_REFUSED,
                _ => explain::why::CEILING_REFUSED,
            });
            return;
        }
        let ledger_unit = if price.is_some() { Unit::Money } else { unit };
        // A tariff is only there where a money limit counts it; anything else must be counted
        // by a limit of its own unit. Nothing on the path counting it would be granting it
        // without bound.
        let classes = payer.classes;
        if price.is_none()
            && policy.unmetered == Unmetered::Refuse
            && !self
                .accounts
                .ledger()
                .limited_in(account, ledger_unit, classes)
        {
            a.result = ResultCode::RatingFailed;
            a.why = Some(explain::why::UNMETERED);
            return;
        }
        let (granted, reserved, last, id) = match price {
            Some((num, den)) => {
                // Money accounts: reserve the money the octets cost, grant what it buys. Each
                // settlement charges at most ceil(octets × price), so floor(money / price)
                // octets always fit the money reserved.
                let money = u64::try_from(crate::ledger::cost(u128::from(want), (num, den)))
                    .unwrap_or(u64::MAX);
                let (g, id) = rec.reserve(account, (Unit::Money, classes), money, now, expires);
                let octets = if g.granted == money {
                    want
                } else {
                    u64::try_from(u128::from(g.granted) * den / num)
                        .unwrap_or(u64::MAX)
                        .min(want)
                };
                if octets == 0 && g.granted > 0 {
                    rec.release(id, account, (Unit::Money, classes), g.granted, now);
                    (0, 0, true, 0)
                } else {
                    (octets, g.granted, g.last, id)
                }
            }
            None => {
                let (g, id) = rec.reserve(account, (unit, classes), want, now, expires);
                (g.granted, g.granted, g.last, id)
            }
        };
        if granted == 0 {
            a.result = ResultCode::CreditLimitReached;
            let limited = if price.is_some() { Unit::Money } else { unit };
            a.why = Some(explain::why::NO_HEADROOM);
            a.cut_by = self
                .accounts
                .ledger()
                .lock(account.tree)
                .and_then(|t| t.limiting_in(account.node, limited, classes));
            self.note_dry(account, limited);
            return;
        }
        // One more at a time: a Vec would round up to four, and a million sessions each
        // holding one reservation pay for that.
        s.held.reserve_exact(1);
        s.held.push(Held {
            id,
            rating_group: m.rating_group,
            service_identifier: m.service_identifier,
            unit: ledger_unit,
            reserved,
            granted,
            expires,
            route: payer.route.clone(),
            classes,
        });
        a.granted = Some((unit, granted));
        a.validity_time = Some(validity_s);
        let threshold = granted.saturating_mul(u64::from(policy.threshold_percent)) / 100;
        a.threshold = Some(u32::try_from(threshold).unwrap_or(u32::MAX));
        if policy.quota_holding_time_s > 0 {
            a.quota_holding_time = Some(policy.quota_holding_time_s);
        }
        if let Some(c) = cap.filter(|c| granted == c.octets && !last) {
            // A guard, not a limit, cut the grant: its action goes with the last units.
            let action = self.cap_action(c.kind, policy);
            a.final_unit_kind = explain::final_unit_code(&Some(action.clone()), true);
            a.final_unit = Some(action);
            a.why = Some(match c.kind {
                guard::CapKind::Velocity(_) => explain::why::VELOCITY_CUT,
                guard::CapKind::Grant => explain::why::GRANT_CEILING,
                _ => explain::why::CEILING_CUT,
            });
            if c.kind == guard::CapKind::Grant {
                // A grant ceiling is a slice: no final units.
                a.final_unit = None;
                a.final_unit_kind = None;
            } else {
                self.cap_reached(s, c, m, now, rec);
            }
        }
        if last {
            // The policy at the limit of the level that cut the grant, if it has one of its
            // own, else the tenant's.
            let limited = if price.is_some() { Unit::Money } else { unit };
            let (limit, path, node) = self.limiting_path(account, limited, classes);
            let action = match policy.at_limit.get(&limit) {
                Some(AtLimit::Deny) => None,
                Some(AtLimit::Act(f)) => Some(f.clone()),
                None => Some(policy.final_unit_action.clone()),
            };
            a.final_unit = action.clone();
            a.final_unit_kind = explain::final_unit_code(&action, true);
            a.cut_by = Some(node);
            a.why = Some(if action.is_some() {
                explain::why::LAST_UNITS
            } else {
                explain::why::LAST_UNITS_DENY
            });
            let rule = payer.route.as_ref().map(|r| &*r.rule);
            self.policy_applied(s, m, action.as_ref(), (limit, path, rule), now, rec);
        }
    }

    /// The path of the node whose limit cut a grant on `account`, of the account, and that
    /// node.
    fn limiting_path(
        &self,
        account: AccountRef,
        unit: Unit,
        classes: Classes,
    ) -> (String, String, u32) {
        self.accounts
            .ledger()
            .lock(account.tree)
            .map(|t| {
                let n = t
                    .limiting_in(account.node, unit, classes)
                    .unwrap_or(account.node);
                (t.names(n).join("/"), t.names(account.node).join("/"), n)
            })
            .unwrap_or((String::new(), String::new(), account.node))
    }

    /// Notes for the outbox that the policy at a limit was applied to a session: its last
    /// units went with a Final-Unit-Indication.
    fn policy_applied(
        &self,
        s: &Session,
        m: &Mscc,
        action: Option<&FinalUnitAction>,
        (limit, path, rule): (String, String, Option<&str>),
        now: i64,
        rec: &mut Recorder,
    ) {
        let action = match action {
            None => "deny",
            Some(FinalUnitAction::Terminate) => "terminate",
            Some(FinalUnitAction::Redirect { .. }) => "redirect",
            Some(FinalUnitAction::RestrictAccess { .. }) => "restrict",
        };
        let mut event = serde_json::json!({
            "kind": "policy_applied",
            "tenant": path.split('/').next().unwrap_or_default(),
            "path": path,
            "limit": limit,
            "time": now,
            "action": action,
            "subscriber": &*s.subscriber,
            "rating_group": m.rating_group,
        });
        if let Some(rule) = rule {
            event["rule"] = rule.into();
        }
        if let Ok(data) = serde_json::to_vec(&event) {
            rec.ops.push(crate::ops::Op::Event(data));
        }
    }
}
