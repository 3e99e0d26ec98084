//! EVENT requests (RFC 4006 §6.3 - §6.5): one-shot debit, refund, balance check and price
//! enquiry. A debit or refund of several MSCCs is all or nothing.

use super::*;

/// One MSCC of an EVENT request: what it asks in service units and in ledger units.
#[derive(Clone, Copy)]
pub(super) struct EventItem {
    unit: Unit,
    amount: u64,
    ledger_unit: Unit,
    ledger_amount: u64,
    /// The tariff, for octets charged as money.
    price: Option<(u128, u128)>,
}

/// Every MSCC of an event that fails as a whole carries the failure.
pub(super) fn fail_all(answers: &mut [MsccAnswer], result: ResultCode) {
    for a in answers {
        a.result = result;
    }
}

impl Engine {
    /// EVENT requests (RFC 4006 §6.3 - §6.5): one-shot debit, refund, balance check, price.
    /// A debit or refund of several MSCCs is all or nothing.
    pub(super) fn event(
        &self,
        reply: Reply<'_>,
        cr: &CreditRequest,
        s: &mut Session,
        now: i64,
        rec: &mut Recorder,
    ) {
        let Reply { identity, req, out } = reply;
        let policies = self.accounts.policies();
        let policy = policy_of(&policies, s.account.tree);
        let tariff = self.tariff_for(policy, s.account);
        let action = cr
            .requested_action
            .unwrap_or(RequestedAction::DirectDebiting);
        let mut answers = Vec::with_capacity(cr.mscc.len());
        let mut extra = EventAnswer::default();
        let mut result = ResultCode::Success;
        // Each MSCC in service units and in ledger units (money for a tariffed account's
        // octets); None where nothing can count it.
        let mut items: Vec<Option<EventItem>> = Vec::with_capacity(cr.mscc.len());
        for m in &cr.mscc {
            let requested = m.requested.unwrap_or_default();
            let unit = requested_unit(&requested);
            let amount = requested_amount(&requested, unit).unwrap_or(1);
            let (ledger_unit, ledger_amount) = match (tariff, unit) {
                (Some(price), Unit::Octets) => (
                    Unit::Money,
                    u64::try_from(crate::ledger::cost(u128::from(amount), price))
                        .unwrap_or(u64::MAX),
                ),
                _ => (unit, amount),
            };
            let metered = policy.unmetered == Unmetered::Grant
                || self.accounts.ledger().limited(s.account, ledger_unit);
            items.push(metered.then_some(EventItem {
                unit,
                amount,
                ledger_unit,
                ledger_amount,
                price: if ledger_unit == Unit::Money {
                    tariff
                } else {
                    None
                },
            }));
            answers.push(MsccAnswer::new(
                m.rating_group,
                m.service_identifier,
                ResultCode::Success,
            ));
        }
        let unrated = items.iter().any(Option::is_none);
        match action {
            RequestedAction::DirectDebiting if unrated => {
                result = ResultCode::RatingFailed;
                fail_all(&mut answers, result);
            }
            RequestedAction::DirectDebiting => {
                // All or nothing: an event is not delivered in part.
                let mut taken = Vec::with_capacity(items.len());
                let mut short = vec![false; items.len()];
                for (i, it) in items.iter().flatten().enumerate() {
                    let (g, id) = rec.reserve(
                        s.account,
                        (it.ledger_unit, Classes::NONE),
                        it.ledger_amount,
                        now,
                        now,
                    );
                    short[i] = g.granted < it.ledger_amount;
                    taken.push((id, g.granted));
                }
                if short.iter().any(|&x| x) {
                    for ((id, granted), it) in taken.iter().zip(items.iter().flatten()) {
                        if *id != 0 {
                            rec.release(
                                *id,
                                s.account,
                                (it.ledger_unit, Classes::NONE),
                                *granted,
                                now,
                            );
                        }
                    }
                    result = ResultCode::CreditLimitReached;
                    fail_all(&mut answers, result);
                } else {
                    for (((id, granted), it), (m, a)) in taken
                        .iter()
                        .zip(items.iter().flatten())
                        .zip(cr.mscc.iter().zip(&mut answers))
                    {
                        let service = (m.rating_group, m.service_identifier);
                        match it.price {
                            Some(price) => {
                                let money = rec.commit_rated(
                                    *id,
                                    s.account,
                                    Classes::NONE,
                                    *granted,
                                    it.amount,
                                    price,
                                    now,
                                );
                                s.charge(
                                    service,
                                    (None, None),
                                    unit_index(Unit::Octets),
                                    it.amount,
                                );
                                s.charge(service, (None, None), unit_index(Unit::Money), money);
                            }
                            None => {
                                rec.commit(
                                    *id,
                                    s.account,
                                    (it.ledger_unit, Classes::NONE),
                                    *granted,
                                    it.ledger_amount,
                                    now,
                                );
                                s.charge(
                                    service,
                                    (None, None),
                                    unit_index(it.ledger_unit),
                                    it.ledger_amount,
                                );
                            }
                        }
                        a.granted = Some((it.unit, it.amount));
                    }
                }
            }
            RequestedAction::RefundAccount if unrated => {
                result = ResultCode::RatingFailed;
                fail_all(&mut answers, result);
            }
            RequestedAction::RefundAccount => {
                // A refund gives back at most what this account was charged this period, in
                // every unit it names, or nothing at all.
                let mut asked = [0u64; 4];
                for it in items.iter().flatten() {
                    let k = unit_index(it.ledger_unit);
                    asked[k] = asked[k].saturating_add(it.ledger_amount);
                }
                let too_much = {
                    let mut tree = self.accounts.ledger().lock(s.account.tree);
                    Unit::ALL.into_iter().find(|&u| {
                        asked[unit_index(u)] > 0
                            && tree
                                .as_mut()
                                .map_or(0, |t| t.refundable(s.account.node, u, now))
                                < asked[unit_index(u)]
                    })
                };
                if let Some(u) = too_much {
                    let culprit = items
                        .iter()
                        .position(|it| it.as_ref().is_some_and(|it| it.ledger_unit == u))
                        .unwrap_or(0);
                    let e = DiameterError::new(
                        ResultCode::InvalidAvpValue,
                        "the refund is more than this account was charged in the current period",
                    );
                    let e = failed_in(
                        e,
                        service_unit(req, cr, culprit, c::REQUESTED_SERVICE_UNIT, 0),
                    );
                    return identity.write_error_answer(out, req, &e);
                }
                for (it, a) in items.iter().flatten().zip(&mut answers) {
                    rec.refund(s.account, it.ledger_unit, it.ledger_amount, now);
                    a.granted = Some((it.unit, it.amount));
                }
            }
            RequestedAction::CheckBalance => {
                for (it, a) in items.iter().zip(&mut answers) {
                    match it {
                        Some(it) => {
                            let free = self
                                .ledger()
                                .lock(s.account.tree)
                                .map_or(0, |mut t| t.headroom(s.account.node, it.ledger_unit, now));
                            extra.check_balance =
                                Some(if free >= it.ledger_amount { 0 } else { 1 });
                        }
                        None => {
                            a.result = ResultCode::RatingFailed;
                            result = ResultCode::RatingFailed;
                        }
                    }
                }
            }
            RequestedAction::PriceEnquiry => {
                for (m, a) in cr.mscc.iter().zip(&mut answers) {
                    let requested = m.requested.unwrap_or_default();
                    let unit = requested_unit(&requested);
                    let amount = requested_amount(&requested, unit).unwrap_or(1);
                    match (&policy.tariff, unit) {
                        (Some(t), Unit::Octets) => {
                            // Exact: price × amount / per_octets, as Value-Digits × 10^Exponent.
                            let cost = t.price * rust_decimal::Decimal::from(amount)
                                / rust_decimal::Decimal::from(t.per_octets);
                            let cost = cost.normalize();
                            let digits = i64::try_from(cost.mantissa()).unwrap_or(i64::MAX);
                            extra.cost = Some((digits, -(cost.scale() as i32), t.currency_code));
                        }
                        _ => {
                            a.result = ResultCode::RatingFailed;
                            result = ResultCode::RatingFailed;
                        }
                    }
                }
            }
        }
        write_cca(
            identity,
            out,
            req,
            result,
            &answers,
            cr.multiple_services,
            &extra,
        );
    }
}
