//! Where each MSCC of a request is charged (rules over the request, [`crate::rules`]): the
//! request's attributes are read once, the rules on the device's path are found once, and each
//! MSCC gets the first rule that matches it and the account and price that rule sends it to.

use super::*;
use crate::rules::{Action, Chain, Facts, Plmn, Rule, local_time, next_edge};
use session::Route;

/// The rules that apply to one request and the facts they are matched against.
pub(super) struct RuleContext<'p> {
    chain: Chain<'p>,
    pub(super) facts: Facts<'p>,
    /// The personal account linked to the device, if any.
    personal: Option<(SubscriptionType, &'p str)>,
    /// Seconds to the next local time at which a timed rule may answer differently.
    pub(super) edge: Option<u32>,
    /// The guards that apply to the device.
    pub(super) guards: Option<crate::rules::GuardLimits>,
}

impl<'p> RuleContext<'p> {
    /// The first rule that matches an MSCC.
    pub(super) fn decide(&self, m: &Mscc) -> Option<&'p Rule> {
        let facts = Facts {
            rating_group: m.rating_group,
            service_identifier: m.service_identifier,
            ..self.facts
        };
        crate::rules::decide(&self.chain, &facts)
    }

    pub(super) fn facts(&self) -> &Facts<'p> {
        &self.facts
    }

    /// Decides as at another local time (explain's what-if).
    pub(super) fn at_local(&mut self, local: (u8, u32)) {
        self.facts.local = Some(local);
        self.edge = next_edge(&self.chain, local.1);
    }
}

/// Where an MSCC's units go.
#[derive(Clone, Debug)]
pub(super) struct Payer {
    pub account: AccountRef,
    /// Money per octet, if its money limits count the data.
    pub price: Option<(u128, u128)>,
    /// Set when a rule decided: kept on the reservation and in the usage.
    pub route: Option<Box<Route>>,
    /// Refused by the rule (or a personal account that cannot be found): 4010.
    pub denied: Option<&'static str>,
    /// The service classes of the MSCC: the class limits that count it.
    pub classes: Classes,
}

/// The home network of the IMSI a request names, if any.
pub(super) fn imsi_home(cr: &CreditRequest) -> Option<Plmn> {
    cr.subscriptions
        .iter()
        .find(|(k, _)| *k == SubscriptionType::Imsi)
        .and_then(|(_, imsi)| Plmn::of_imsi(imsi))
}

impl Engine {
    /// The rules that apply to a request on `s`, or none if the tree has none on its path.
    pub(super) fn rule_context<'p>(
        &self,
        cr: &CreditRequest<'p>,
        s: &Session,
        policy: &'p Policy,
        now: i64,
    ) -> Option<RuleContext<'p>> {
        if !policy.rules.has_rules() {
            return None;
        }
        self.rule_context_of(cr.attributes, imsi_home(cr), s, policy, now)
    }

    /// [`Self::rule_context`] from the attributes themselves.
    pub(super) fn rule_context_of<'p>(
        &self,
        attrs: crate::rules::RequestAttributes<'p>,
        imsi_home: Option<Plmn>,
        s: &Session,
        policy: &'p Policy,
        now: i64,
    ) -> Option<RuleContext<'p>> {
        let (found, tz) = {
            let t = self.accounts.ledger().lock(s.account.tree)?;
            let names = t.names(s.account.node);
            (policy.rules.lookup(&names), t.tz.clone())
        };
        let crate::rules::Lookup {
            chain,
            personal,
            guards,
        } = found;
        if chain.is_empty() && guards.is_none() {
            return None;
        }
        let timed = chain.iter().any(|r| r.iter().any(Rule::timed));
        let local = timed.then(|| local_time(&tz, now)).flatten();
        let edge = local.and_then(|(_, second)| next_edge(&chain, second));
        let facts = Facts {
            rating_group: None,
            service_identifier: None,
            apn: attrs.apn,
            serving: attrs.serving,
            zone: attrs.serving.and_then(|p| policy.zones.of(p)),
            rat: attrs.rat,
            roaming: policy.roaming(attrs.serving, imsi_home),
            local,
        };
        Some(RuleContext {
            chain,
            facts,
            personal,
            edge,
            guards,
        })
    }

    /// Where an MSCC of `classes` that `rule` decided (none: no rule) is charged; `tariff`
    /// is the price of the session's own account for general charges ([`Self::tariff_for`]).
    pub(super) fn payer(
        &self,
        s: &Session,
        policy: &Policy,
        ctx: Option<&RuleContext<'_>>,
        (rule, classes): (Option<&Rule>, Classes),
        tariff: Option<(u128, u128)>,
    ) -> Payer {
        // A class limit on money may rate what the general limits count in units.
        let tariff = if classes.is_none() {
            tariff
        } else {
            self.tariff_in(policy, s.account, classes)
        };
        let corporate = Payer {
            account: s.account,
            price: tariff,
            route: None,
            denied: None,
            classes,
        };
        let Some(rule) = rule else {
            return corporate;
        };
        let routed = |account: AccountRef, price: Option<(u128, u128)>| Payer {
            account,
            price,
            route: Some(Box::new(Route {
                account,
                price,
                rule: rule.name.clone(),
            })),
            denied: None,
            classes,
        };
        match &rule.action {
            Action::Corporate => routed(s.account, tariff),
            Action::Tariff(name) => {
                let price = policy
                    .tariffs
                    .get(&**name)
                    .and_then(|t| t.per_octet())
                    .filter(|_| {
                        self.accounts
                            .ledger()
                            .limited_in(s.account, Unit::Money, classes)
                    });
                routed(s.account, price)
            }
            Action::Personal => {
                let found = ctx
                    .and_then(|c| c.personal)
                    .and_then(|(kind, id)| self.accounts.directory().lookup(kind, id));
                match found {
                    Some(account) => {
                        let policies = self.accounts.policies();
                        let price =
                            self.tariff_in(policy_of(&policies, account.tree), account, classes);
                        routed(account, price)
                    }
                    None => Payer {
                        denied: Some(explain::why::NO_PERSONAL),
                        ..routed(s.account, tariff)
                    },
                }
            }
            Action::Deny => Payer {
                denied: Some(explain::why::RULE_DENIES),
                ..routed(s.account, tariff)
            },
        }
    }
}
