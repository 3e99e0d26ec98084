//! A Credit-Control-Request read into what charging needs (RFC 4006 §3.1 with the 3GPP
//! TS 32.299 additions), borrowing from the message. The dictionary has already checked the
//! AVPs' formats and the command's rules, so this only interprets them; what is still wrong
//! (an unknown CC-Request-Type value, a Subscription-Id of no known type) is reported with the
//! RFC's Result-Code and the AVP.

use ocf_protocol::avp::Avp;
use ocf_protocol::codes::{AvpCode, ResultCode, avp as c};
use ocf_protocol::error::DiameterError;
use ocf_protocol::message::Message;

use crate::accounts::tenant::SubscriptionType;
use crate::rules::{Plmn, RequestAttributes};

/// CC-Request-Type (RFC 4006 §8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RequestType {
    Initial = 1,
    Update = 2,
    Termination = 3,
    Event = 4,
}

/// Requested-Action (RFC 4006 §8.41).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RequestedAction {
    DirectDebiting = 0,
    RefundAccount = 1,
    CheckBalance = 2,
    PriceEnquiry = 3,
}

/// Reporting-Reason FINAL (TS 32.299 §7.2.175): the service is ending, no more units wanted.
pub(super) const REPORTING_REASON_FINAL: u32 = 2;

/// Units in a Requested-, Used- or Granted-Service-Unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Units {
    pub total_octets: Option<u64>,
    pub input_octets: Option<u64>,
    pub output_octets: Option<u64>,
    pub time: Option<u32>,
    pub events: Option<u64>,
}

impl Units {
    /// Octets: CC-Total-Octets, else input + output.
    pub(super) fn octets(&self) -> Option<u64> {
        self.total_octets
            .or(match (self.input_octets, self.output_octets) {
                (None, None) => None,
                (i, o) => Some(i.unwrap_or(0).saturating_add(o.unwrap_or(0))),
            })
    }

    fn read(group: &Avp) -> Result<Units, DiameterError> {
        let mut u = Units::default();
        for a in group.children() {
            if a.is(c::CC_TOTAL_OCTETS) {
                u.total_octets = Some(a.u64()?);
            } else if a.is(c::CC_INPUT_OCTETS) {
                u.input_octets = Some(a.u64()?);
            } else if a.is(c::CC_OUTPUT_OCTETS) {
                u.output_octets = Some(a.u64()?);
            } else if a.is(c::CC_TIME) {
                u.time = Some(a.u32()?);
            } else if a.is(c::CC_SERVICE_SPECIFIC_UNITS) {
                u.events = Some(a.u64()?);
            }
        }
        Ok(u)
    }
}

/// One Used-Service-Unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Used {
    pub units: Units,
    pub reporting_reason: Option<u32>,
}

/// One Multiple-Services-Credit-Control (or the top-level units of a single-service request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Mscc {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    /// Requested-Service-Unit, if present (present but empty: "the usual amount").
    pub requested: Option<Units>,
    pub used: Vec<Used>,
    /// Reporting-Reason at MSCC level.
    pub reporting_reason: Option<u32>,
}

impl Mscc {
    /// The service is ending for this MSCC: no new grant (FINAL at MSCC or USU level).
    pub(super) fn is_final(&self) -> bool {
        self.reporting_reason == Some(REPORTING_REASON_FINAL)
            || self
                .used
                .iter()
                .any(|u| u.reporting_reason == Some(REPORTING_REASON_FINAL))
    }

    fn read(group: &Avp) -> Result<Mscc, DiameterError> {
        let mut m = Mscc::default();
        for a in group.children() {
            if a.is(c::RATING_GROUP) {
                m.rating_group = Some(a.u32()?);
            } else if a.is(c::SERVICE_IDENTIFIER) {
                m.service_identifier.get_or_insert(a.u32()?);
            } else if a.is(c::REQUESTED_SERVICE_UNIT) {
                m.requested = Some(Units::read(&a)?);
            } else if a.is(c::USED_SERVICE_UNIT) {
                let mut used = Used {
                    units: Units::read(&a)?,
                    reporting_reason: None,
                };
                for r in a.children().filter(|r| r.is(c::REPORTING_REASON)) {
                    used.reporting_reason = Some(r.u32()?);
                }
                m.used.push(used);
            } else if a.is(c::REPORTING_REASON) {
                m.reporting_reason = Some(a.u32()?);
            }
        }
        Ok(m)
    }
}

/// The longest Session-Id taken, in octets: RFC 6733 sets no bound, a session's state is kept
/// and journaled with it, and real ones are a few dozen octets.
pub(super) const MAX_SESSION_ID: usize = 4096;

/// The most Multiple-Services-Credit-Control AVPs in one request: each is a service answered
/// and kept with the session.
pub(super) const MAX_MSCC: usize = 256;

/// What charging needs from a CCR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CreditRequest<'a> {
    pub session_id: &'a str,
    /// The Origin-Host of the request: with the Session-Id, what names a session (a second
    /// gateway using the same Session-Id is another client, not a retransmission).
    pub origin_host: &'a str,
    pub request_type: RequestType,
    pub request_number: u32,
    pub subscriptions: Vec<(SubscriptionType, &'a str)>,
    pub requested_action: Option<RequestedAction>,
    /// The MSCCs; a request without any is read as one MSCC from its top-level units.
    pub mscc: Vec<Mscc>,
    /// Whether the request used Multiple-Services-Credit-Control (the answer mirrors it).
    pub multiple_services: bool,
    /// Where and how the device is, for rules.
    pub attributes: RequestAttributes<'a>,
}

/// Reads the APN, serving network and RAT type from the AVPs of a group (the command, or
/// PS-Information): later ones override. A value that is not one (an SGSN-MCC-MNC that is not
/// digits, a location without a PLMN) leaves the attribute unknown: a rule on it then does not
/// match, and nothing else depends on it.
fn read_attributes<'a>(
    avps: impl Iterator<Item = Avp<'a>>,
    out: &mut RequestAttributes<'a>,
    serving_from_uli: &mut Option<Plmn>,
) -> Result<(), DiameterError> {
    for a in avps {
        if a.is(c::CALLED_STATION_ID) {
            out.apn = Some(a.utf8()?);
        } else if a.is(c::THREEGPP_SGSN_MCC_MNC) {
            if let Some(p) = Plmn::parse(a.utf8()?) {
                out.serving = Some(p);
            }
        } else if a.is(c::THREEGPP_RAT_TYPE) {
            if let [rat] = a.data {
                out.rat = Some(*rat);
            }
        } else if a.is(c::THREEGPP_USER_LOCATION_INFO) {
            if let Some(p) = crate::rules::attributes::uli_plmn(a.data) {
                *serving_from_uli = Some(p);
            }
        }
    }
    Ok(())
}

/// The request's attributes: at command level and inside Service-Information/PS-Information
/// (TS 32.299 §7.2.158), the latter taking precedence; the serving network from
/// 3GPP-SGSN-MCC-MNC, else from 3GPP-User-Location-Info.
fn attributes_of<'a>(msg: &'a Message) -> Result<RequestAttributes<'a>, DiameterError> {
    let mut out = RequestAttributes::default();
    let mut uli = None;
    read_attributes(msg.avps(), &mut out, &mut uli)?;
    if let Some(si) = msg.find(c::SERVICE_INFORMATION) {
        for ps in si.children().filter(|a| a.is(c::PS_INFORMATION)) {
            read_attributes(ps.children(), &mut out, &mut uli)
                .map_err(|e| si.wrap_error(ps.wrap_error(e)))?;
        }
    }
    if out.serving.is_none() {
        out.serving = uli;
    }
    Ok(out)
}

/// 5005 with an example of the missing AVP (the dictionary's command rules normally catch it
/// first).
fn missing(avp: AvpCode) -> DiameterError {
    let flags = if avp.mandatory { 0x40 } else { 0 };
    DiameterError::new(ResultCode::MissingAvp, format!("missing AVP {}", avp.name))
        .with_avp(Avp::new(avp.code, flags, avp.vendor_id, &[0; 4]).to_bytes())
}

impl<'a> CreditRequest<'a> {
    /// The octets every MSCC of the request reports used, together (what guards count).
    pub(super) fn reported_octets(&self) -> u64 {
        self.mscc
            .iter()
            .flat_map(|m| &m.used)
            .map(|u| u.units.octets().unwrap_or(0))
            .fold(0, u64::saturating_add)
    }

    /// The first MSCC whose service (Rating-Group and Service-Identifier) an earlier MSCC of
    /// the same request already names, as an error with that MSCC's identifying AVPs as
    /// Failed-AVP. RFC 4006 §8.29 identifies a rating group by Rating-Group alone, and one
    /// service's usage before and after a tariff change is reported in a single MSCC (§5.1.2):
    /// two MSCCs of one service would ask for two grants of one headroom.
    pub(super) fn duplicate_service(&self, msg: &Message) -> Option<DiameterError> {
        if !self.multiple_services {
            return None;
        }
        let key = |m: &Mscc| (m.rating_group, m.service_identifier);
        let dup = (1..self.mscc.len())
            .find(|&i| self.mscc[..i].iter().any(|m| key(m) == key(&self.mscc[i])))?;
        let err = DiameterError::new(
            ResultCode::InvalidAvpValue,
            "two Multiple-Services-Credit-Control AVPs name the same service (Rating-Group and Service-Identifier)",
        );
        let Some(group) = msg.find_all(c::MULTIPLE_SERVICES_CREDIT_CONTROL).nth(dup) else {
            return Some(err);
        };
        let culprit = group
            .children()
            .find(|a| a.is(c::RATING_GROUP))
            .or_else(|| group.children().find(|a| a.is(c::SERVICE_IDENTIFIER)));
        Some(match culprit {
            Some(a) => group.wrap_error(err.with_avp(a.to_bytes())),
            None => err.with_avp(group.to_bytes()),
        })
    }

    pub(super) fn read(msg: &'a Message) -> Result<CreditRequest<'a>, DiameterError> {
        let sid = msg
            .find(c::SESSION_ID)
            .ok_or_else(|| missing(c::SESSION_ID))?;
        let session_id = sid.utf8()?;
        if session_id.len() > MAX_SESSION_ID {
            return Err(DiameterError::new(
                ResultCode::InvalidAvpValue,
                "Session-Id longer than 4096 octets",
            )
            .with_avp(sid.to_bytes()));
        }
        let origin_host = msg
            .find(c::ORIGIN_HOST)
            .ok_or_else(|| missing(c::ORIGIN_HOST))?
            .identity()?;
        let rt = msg
            .find(c::CC_REQUEST_TYPE)
            .ok_or_else(|| missing(c::CC_REQUEST_TYPE))?;
        let request_type = match rt.u32()? {
            1 => RequestType::Initial,
            2 => RequestType::Update,
            3 => RequestType::Termination,
            4 => RequestType::Event,
            _ => {
                return Err(DiameterError::new(
                    ResultCode::InvalidAvpValue,
                    "unknown CC-Request-Type",
                )
                .with_avp(rt.to_bytes()));
            }
        };
        let request_number = msg
            .find(c::CC_REQUEST_NUMBER)
            .ok_or_else(|| missing(c::CC_REQUEST_NUMBER))?
            .u32()?;
        let mut subscriptions = Vec::with_capacity(2);
        for sub in msg.find_all(c::SUBSCRIPTION_ID) {
            let mut kind = None;
            let mut data = None;
            for a in sub.children() {
                if a.is(c::SUBSCRIPTION_ID_TYPE) {
                    kind = Some(a);
                } else if a.is(c::SUBSCRIPTION_ID_DATA) {
                    data = Some(a.utf8()?);
                }
            }
            let (Some(kind), Some(data)) = (kind, data) else {
                continue;
            };
            match SubscriptionType::from_code(kind.u32()?) {
                Some(k) => subscriptions.push((k, data)),
                None => {
                    return Err(sub.wrap_error(
                        DiameterError::new(
                            ResultCode::InvalidAvpValue,
                            "unknown Subscription-Id-Type",
                        )
                        .with_avp(kind.to_bytes()),
                    ));
                }
            }
        }
        let requested_action = match msg.find(c::REQUESTED_ACTION) {
            None => None,
            Some(a) => Some(match a.u32()? {
                0 => RequestedAction::DirectDebiting,
                1 => RequestedAction::RefundAccount,
                2 => RequestedAction::CheckBalance,
                3 => RequestedAction::PriceEnquiry,
                _ => {
                    return Err(DiameterError::new(
                        ResultCode::InvalidAvpValue,
                        "unknown Requested-Action",
                    )
                    .with_avp(a.to_bytes()));
                }
            }),
        };
        let mut mscc = Vec::new();
        for m in msg.find_all(c::MULTIPLE_SERVICES_CREDIT_CONTROL) {
            if mscc.len() == MAX_MSCC {
                return Err(DiameterError::new(
                    ResultCode::AvpOccursTooManyTimes,
                    "more than 256 Multiple-Services-Credit-Control AVPs",
                )
                .with_avp(m.to_bytes()));
            }
            mscc.push(Mscc::read(&m).map_err(|e| m.wrap_error(e))?);
        }
        let multiple_services = !mscc.is_empty();
        if !multiple_services {
            // Single service: the units at command level (RFC 4006 §5.1.1).
            let mut single = Mscc {
                service_identifier: msg
                    .find(c::SERVICE_IDENTIFIER)
                    .map(|a| a.u32())
                    .transpose()?,
                ..Mscc::default()
            };
            if let Some(r) = msg.find(c::REQUESTED_SERVICE_UNIT) {
                single.requested = Some(Units::read(&r).map_err(|e| r.wrap_error(e))?);
            }
            for u in msg.find_all(c::USED_SERVICE_UNIT) {
                single.used.push(Used {
                    units: Units::read(&u).map_err(|e| u.wrap_error(e))?,
                    reporting_reason: None,
                });
            }
            if single.requested.is_some()
                || !single.used.is_empty()
                || request_type == RequestType::Initial
            {
                mscc.push(single);
            }
        }
        let attributes = attributes_of(msg)?;
        Ok(CreditRequest {
            attributes,
            session_id,
            origin_host,
            request_type,
            request_number,
            subscriptions,
            requested_action,
            mscc,
            multiple_services,
        })
    }
}
