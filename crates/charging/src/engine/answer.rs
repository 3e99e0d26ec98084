//! Writing the Credit-Control-Answer (RFC 4006 §3.2 with the 3GPP TS 32.299 MSCC additions).

use bytes::BytesMut;

use crate::ledger::Unit;
use ocf_protocol::MessageWriter;
use ocf_protocol::base::LocalIdentity;
use ocf_protocol::codes::{ResultCode, avp as c};
use ocf_protocol::header::Header;
use ocf_protocol::message::Message;

use crate::accounts::tenant::FinalUnitAction;

/// The answer to one MSCC (or, for a single-service request, the command-level units).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct MsccAnswer {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    pub result: ResultCode,
    /// Units granted, in the service's unit (octets, seconds or events).
    pub granted: Option<(Unit, u64)>,
    pub validity_time: Option<u32>,
    /// Volume- or Time-Quota-Threshold, in the granted unit.
    pub threshold: Option<u32>,
    pub quota_holding_time: Option<u32>,
    /// Set on the grant that takes the last units.
    pub final_unit: Option<FinalUnitAction>,
    /// For explain: the Final-Unit-Action's code when the last units went (3: none, deny),
    /// the level (node of the charged account's tree) whose limit cut the grant, and why
    /// the answer is what it is.
    pub final_unit_kind: Option<u8>,
    pub cut_by: Option<u32>,
    pub why: Option<&'static str>,
}

impl MsccAnswer {
    pub(super) fn new(
        rating_group: Option<u32>,
        service_identifier: Option<u32>,
        result: ResultCode,
    ) -> Self {
        MsccAnswer {
            rating_group,
            service_identifier,
            result,
            granted: None,
            validity_time: None,
            threshold: None,
            quota_holding_time: None,
            final_unit: None,
            final_unit_kind: None,
            cut_by: None,
            why: None,
        }
    }
}

/// Extra command-level AVPs of EVENT answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct EventAnswer {
    /// Check-Balance-Result: 0 ENOUGH_CREDIT, 1 NO_CREDIT.
    pub check_balance: Option<u32>,
    /// Cost-Information: (Value-Digits, Exponent, Currency-Code).
    pub cost: Option<(i64, i32, u32)>,
}

fn write_units(w: &mut MessageWriter, unit: Unit, amount: u64) {
    match unit {
        Unit::Octets => w.u64(c::CC_TOTAL_OCTETS, amount),
        Unit::Seconds => w.u32(c::CC_TIME, u32::try_from(amount).unwrap_or(u32::MAX)),
        Unit::Events | Unit::Money => w.u64(c::CC_SERVICE_SPECIFIC_UNITS, amount),
    }
}

fn write_final_unit(w: &mut MessageWriter, fui: &FinalUnitAction) {
    let g = w.begin_group(c::FINAL_UNIT_INDICATION);
    match fui {
        FinalUnitAction::Terminate => w.u32(c::FINAL_UNIT_ACTION, 0),
        FinalUnitAction::Redirect {
            address_type,
            address,
        } => {
            w.u32(c::FINAL_UNIT_ACTION, 1);
            let r = w.begin_group(c::REDIRECT_SERVER);
            w.u32(c::REDIRECT_ADDRESS_TYPE, *address_type);
            w.utf8(c::REDIRECT_SERVER_ADDRESS, address);
            w.end_group(r);
        }
        FinalUnitAction::RestrictAccess { filter_ids, rules } => {
            w.u32(c::FINAL_UNIT_ACTION, 2);
            for rule in rules {
                w.utf8(c::RESTRICTION_FILTER_RULE, rule);
            }
            for id in filter_ids {
                w.utf8(c::FILTER_ID, id);
            }
        }
    }
    w.end_group(g);
}

/// The body of one MSCC (or the single-service units at command level), in RFC 4006 order.
fn write_service(w: &mut MessageWriter, m: &MsccAnswer, nested: bool) {
    if let Some((unit, amount)) = m.granted {
        let g = w.begin_group(c::GRANTED_SERVICE_UNIT);
        write_units(w, unit, amount);
        w.end_group(g);
    }
    if nested {
        if let Some(si) = m.service_identifier {
            w.u32(c::SERVICE_IDENTIFIER, si);
        }
        if let Some(rg) = m.rating_group {
            w.u32(c::RATING_GROUP, rg);
        }
    }
    if let Some(v) = m.validity_time {
        w.u32(c::VALIDITY_TIME, v);
    }
    if nested {
        w.u32(c::RESULT_CODE, m.result.code());
    }
    if let Some(f) = &m.final_unit {
        write_final_unit(w, f);
    }
    if let (Some(t), Some((unit, _))) = (m.threshold, m.granted) {
        match unit {
            Unit::Seconds => w.u32(c::TIME_QUOTA_THRESHOLD, t),
            Unit::Octets => w.u32(c::VOLUME_QUOTA_THRESHOLD, t),
            Unit::Events | Unit::Money => w.u32(c::UNIT_QUOTA_THRESHOLD, t),
        }
    }
    if let Some(q) = m.quota_holding_time {
        w.u32(c::QUOTA_HOLDING_TIME, q);
    }
}

/// Writes the CCA for `req`: Session-Id, Result-Code, our origin, Auth-Application-Id,
/// CC-Request-Type and -Number echoed, then the services.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_cca(
    identity: &LocalIdentity,
    out: &mut BytesMut,
    req: &Message,
    result: ResultCode,
    services: &[MsccAnswer],
    multiple_services: bool,
    event: &EventAnswer,
) {
    let mut h: Header = req.header.answer();
    if result.is_protocol_error() {
        h.flags.0 |= ocf_protocol::CommandFlags::ERROR;
    }
    let mut w = MessageWriter::new(out, &h);
    if let Some(sid) = req.session_id() {
        w.avp(&sid);
    }
    w.u32(c::RESULT_CODE, result.code());
    w.identity(c::ORIGIN_HOST, &identity.origin_host);
    w.identity(c::ORIGIN_REALM, &identity.origin_realm);
    w.u32(
        c::AUTH_APPLICATION_ID,
        ocf_protocol::codes::application::CREDIT_CONTROL,
    );
    for k in [c::CC_REQUEST_TYPE, c::CC_REQUEST_NUMBER] {
        if let Some(a) = req.find(k) {
            w.avp(&a);
        }
    }
    if multiple_services {
        for m in services {
            let g = w.begin_group(c::MULTIPLE_SERVICES_CREDIT_CONTROL);
            write_service(&mut w, m, true);
            w.end_group(g);
        }
    } else if let Some(m) = services.first() {
        write_service(&mut w, m, false);
    }
    if let Some((digits, exponent, currency)) = event.cost {
        let g = w.begin_group(c::COST_INFORMATION);
        let u = w.begin_group(c::UNIT_VALUE);
        w.i64(c::VALUE_DIGITS, digits);
        w.i32(c::EXPONENT, exponent);
        w.end_group(u);
        w.u32(c::CURRENCY_CODE, currency);
        w.end_group(g);
    }
    if let Some(cb) = event.check_balance {
        w.u32(c::CHECK_BALANCE_RESULT, cb);
    }
    for p in req.find_all(c::PROXY_INFO) {
        w.avp(&p);
    }
    w.finish();
}
