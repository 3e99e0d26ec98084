//! Building Gy Credit-Control-Requests and reading their answers (RFC 4006, TS 32.299), with
//! only the `diameter` layer of the ocf library.

use bytes::BytesMut;
use ocf_protocol::avp::Avp;
use ocf_protocol::codes::{application, avp as c, command};
use ocf_protocol::message::Message;
use ocf_protocol::{Header, MessageWriter};

/// CC-Request-Type values.
pub const INITIAL: u32 = 1;
pub const UPDATE: u32 = 2;
pub const TERMINATION: u32 = 3;
pub const EVENT: u32 = 4;

/// One Multiple-Services-Credit-Control to send.
#[derive(Clone, Debug, Default)]
pub struct MsccSpec {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    /// Requested-Service-Unit: `Some(None)` sends an empty RSU, `Some(Some(n))` asks for n octets.
    pub requested_octets: Option<Option<u64>>,
    /// Requested-Service-Unit with CC-Time.
    pub requested_time: Option<u32>,
    /// Used-Service-Unit with CC-Total-Octets.
    pub used_octets: Option<u64>,
    /// 3GPP Reporting-Reason inside the USU.
    pub reporting_reason: Option<u32>,
}

impl MsccSpec {
    /// Asks for the usual amount (an empty Requested-Service-Unit) for rating group `rg`.
    pub fn rsu(rg: u32) -> Self {
        MsccSpec {
            rating_group: Some(rg),
            requested_octets: Some(None),
            ..Default::default()
        }
    }

    /// Asks for `octets` for rating group `rg`.
    pub fn ask(rg: u32, octets: u64) -> Self {
        MsccSpec {
            rating_group: Some(rg),
            requested_octets: Some(Some(octets)),
            ..Default::default()
        }
    }

    /// Reports `used` octets for rating group `rg`, asking for the usual amount more if `more`.
    pub fn report(rg: u32, used: u64, more: bool) -> Self {
        MsccSpec {
            rating_group: Some(rg),
            requested_octets: if more { Some(None) } else { None },
            used_octets: Some(used),
            ..Default::default()
        }
    }
}

/// A CCR to send.
#[derive(Clone, Debug)]
pub struct CcrSpec {
    pub session_id: String,
    pub origin_host: String,
    pub origin_realm: String,
    pub destination_realm: String,
    /// Destination-Host (none: left out, as in a session's first request).
    pub destination_host: Option<String>,
    pub request_type: u32,
    pub request_number: u32,
    /// (Subscription-Id-Type, data): 0 E.164, 1 IMSI, 2 SIP URI, 3 NAI.
    pub subscriptions: Vec<(u32, String)>,
    pub requested_action: Option<u32>,
    pub mscc: Vec<MsccSpec>,
    /// Set the T flag (a retransmission).
    pub retransmit: bool,
    /// Sent in Service-Information/PS-Information (TS 32.299 §7.2.158): the APN
    /// (Called-Station-Id), the serving network (3GPP-SGSN-MCC-MNC, "MCCMNC") and the RAT type
    /// (3GPP-RAT-Type: 1 UTRAN, 2 GERAN, 6 EUTRAN, 10 NR).
    pub apn: Option<String>,
    pub serving_network: Option<String>,
    pub rat_type: Option<u8>,
}

impl CcrSpec {
    pub fn new(session_id: impl Into<String>, request_type: u32, request_number: u32) -> Self {
        CcrSpec {
            session_id: session_id.into(),
            origin_host: "pgw.localdomain".into(),
            origin_realm: "localdomain".into(),
            destination_realm: "localdomain".into(),
            destination_host: None,
            request_type,
            request_number,
            subscriptions: Vec::new(),
            requested_action: None,
            mscc: Vec::new(),
            retransmit: false,
            apn: None,
            serving_network: None,
            rat_type: None,
        }
    }

    /// Sends the APN (Called-Station-Id).
    pub fn apn(mut self, apn: &str) -> Self {
        self.apn = Some(apn.into());
        self
    }

    /// Sends the serving network (3GPP-SGSN-MCC-MNC), "MCCMNC".
    pub fn serving_network(mut self, plmn: &str) -> Self {
        self.serving_network = Some(plmn.into());
        self
    }

    /// Sends the RAT type (3GPP-RAT-Type).
    pub fn rat_type(mut self, rat: u8) -> Self {
        self.rat_type = Some(rat);
        self
    }

    /// Names the server the request is for (Destination-Host).
    pub fn destination_host(mut self, host: &str) -> Self {
        self.destination_host = Some(host.to_owned());
        self
    }

    pub fn msisdn(mut self, msisdn: &str) -> Self {
        self.subscriptions.push((0, msisdn.into()));
        self
    }

    pub fn imsi(mut self, imsi: &str) -> Self {
        self.subscriptions.push((1, imsi.into()));
        self
    }

    pub fn mscc(mut self, m: MsccSpec) -> Self {
        self.mscc.push(m);
        self
    }

    /// Writes the request into `out`.
    pub fn write(&self, out: &mut BytesMut, hop_by_hop: u32, end_to_end: u32) {
        let mut h = Header::request(
            command::CREDIT_CONTROL,
            application::CREDIT_CONTROL,
            hop_by_hop,
            end_to_end,
        );
        if self.retransmit {
            h.flags.0 |= ocf_protocol::CommandFlags::RETRANSMIT;
        }
        let mut w = MessageWriter::new(out, &h);
        w.utf8(c::SESSION_ID, &self.session_id);
        w.identity(c::ORIGIN_HOST, &self.origin_host);
        w.identity(c::ORIGIN_REALM, &self.origin_realm);
        w.identity(c::DESTINATION_REALM, &self.destination_realm);
        if let Some(h) = &self.destination_host {
            w.identity(c::DESTINATION_HOST, h);
        }
        w.u32(c::AUTH_APPLICATION_ID, application::CREDIT_CONTROL);
        w.utf8(c::SERVICE_CONTEXT_ID, "32251@3gpp.org");
        w.u32(c::CC_REQUEST_TYPE, self.request_type);
        w.u32(c::CC_REQUEST_NUMBER, self.request_number);
        for (kind, data) in &self.subscriptions {
            let g = w.begin_group(c::SUBSCRIPTION_ID);
            w.u32(c::SUBSCRIPTION_ID_TYPE, *kind);
            w.utf8(c::SUBSCRIPTION_ID_DATA, data);
            w.end_group(g);
        }
        if let Some(a) = self.requested_action {
            w.u32(c::REQUESTED_ACTION, a);
        }
        if !self.mscc.is_empty() {
            w.u32(c::MULTIPLE_SERVICES_INDICATOR, 1);
        }
        if self.apn.is_some() || self.serving_network.is_some() || self.rat_type.is_some() {
            let si = w.begin_group(c::SERVICE_INFORMATION);
            let ps = w.begin_group(c::PS_INFORMATION);
            if let Some(plmn) = &self.serving_network {
                w.utf8(c::THREEGPP_SGSN_MCC_MNC, plmn);
            }
            if let Some(rat) = self.rat_type {
                w.bytes(c::THREEGPP_RAT_TYPE, &[rat]);
            }
            if let Some(apn) = &self.apn {
                w.utf8(c::CALLED_STATION_ID, apn);
            }
            w.end_group(ps);
            w.end_group(si);
        }
        for m in &self.mscc {
            let g = w.begin_group(c::MULTIPLE_SERVICES_CREDIT_CONTROL);
            if m.requested_octets.is_some() || m.requested_time.is_some() {
                let r = w.begin_group(c::REQUESTED_SERVICE_UNIT);
                if let Some(Some(n)) = m.requested_octets {
                    w.u64(c::CC_TOTAL_OCTETS, n);
                }
                if let Some(t) = m.requested_time {
                    w.u32(c::CC_TIME, t);
                }
                w.end_group(r);
            }
            if let Some(u) = m.used_octets {
                let g2 = w.begin_group(c::USED_SERVICE_UNIT);
                w.u64(c::CC_TOTAL_OCTETS, u);
                if let Some(rr) = m.reporting_reason {
                    w.u32(c::REPORTING_REASON, rr);
                }
                w.end_group(g2);
            }
            if let Some(si) = m.service_identifier {
                w.u32(c::SERVICE_IDENTIFIER, si);
            }
            if let Some(rg) = m.rating_group {
                w.u32(c::RATING_GROUP, rg);
            }
            w.end_group(g);
        }
        w.finish();
    }
}

/// What came back for one MSCC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MsccResult {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    pub result_code: Option<u32>,
    pub granted_octets: Option<u64>,
    pub granted_time: Option<u32>,
    pub validity_time: Option<u32>,
    pub volume_threshold: Option<u32>,
    /// Final-Unit-Action: 0 TERMINATE, 1 REDIRECT, 2 RESTRICT_ACCESS.
    pub final_unit_action: Option<u32>,
    pub redirect_address: Option<String>,
}

/// A decoded CCA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CcaResult {
    pub result_code: u32,
    pub request_type: Option<u32>,
    pub request_number: Option<u32>,
    pub mscc: Vec<MsccResult>,
    pub check_balance: Option<u32>,
    /// Cost-Information: (Value-Digits, Exponent, Currency-Code).
    pub cost: Option<(i64, i32, u32)>,
}

fn read_service<'a>(avps: impl Iterator<Item = Avp<'a>>, r: &mut MsccResult) {
    for a in avps {
        if a.is(c::RATING_GROUP) {
            r.rating_group = a.u32().ok();
        } else if a.is(c::SERVICE_IDENTIFIER) {
            r.service_identifier = a.u32().ok();
        } else if a.is(c::RESULT_CODE) {
            r.result_code = a.u32().ok();
        } else if a.is(c::GRANTED_SERVICE_UNIT) {
            for g in a.children() {
                if g.is(c::CC_TOTAL_OCTETS) {
                    r.granted_octets = g.u64().ok();
                } else if g.is(c::CC_TIME) {
                    r.granted_time = g.u32().ok();
                }
            }
        } else if a.is(c::VALIDITY_TIME) {
            r.validity_time = a.u32().ok();
        } else if a.is(c::VOLUME_QUOTA_THRESHOLD) {
            r.volume_threshold = a.u32().ok();
        } else if a.is(c::FINAL_UNIT_INDICATION) {
            for f in a.children() {
                if f.is(c::FINAL_UNIT_ACTION) {
                    r.final_unit_action = f.u32().ok();
                } else if f.is(c::REDIRECT_SERVER) {
                    for rs in f.children() {
                        if rs.is(c::REDIRECT_SERVER_ADDRESS) {
                            r.redirect_address = rs.utf8().ok().map(str::to_owned);
                        }
                    }
                }
            }
        }
    }
}

impl CcaResult {
    pub fn read(m: &Message) -> CcaResult {
        let mut r = CcaResult {
            result_code: m
                .find(c::RESULT_CODE)
                .and_then(|a| a.u32().ok())
                .unwrap_or(0),
            request_type: m.find(c::CC_REQUEST_TYPE).and_then(|a| a.u32().ok()),
            request_number: m.find(c::CC_REQUEST_NUMBER).and_then(|a| a.u32().ok()),
            check_balance: m.find(c::CHECK_BALANCE_RESULT).and_then(|a| a.u32().ok()),
            ..Default::default()
        };
        for mscc in m.find_all(c::MULTIPLE_SERVICES_CREDIT_CONTROL) {
            let mut one = MsccResult::default();
            read_service(mscc.children(), &mut one);
            r.mscc.push(one);
        }
        if r.mscc.is_empty() && m.find(c::GRANTED_SERVICE_UNIT).is_some() {
            let mut one = MsccResult::default();
            read_service(m.avps(), &mut one);
            one.result_code = None;
            r.mscc.push(one);
        }
        if let Some(ci) = m.find(c::COST_INFORMATION) {
            let (mut digits, mut exp, mut cur) = (0, 0, 0);
            for a in ci.children() {
                if a.is(c::UNIT_VALUE) {
                    for u in a.children() {
                        if u.is(c::VALUE_DIGITS) {
                            digits = ocf_protocol::types::decode_i64(u.data).unwrap_or(0);
                        } else if u.is(c::EXPONENT) {
                            exp = u.i32().unwrap_or(0);
                        }
                    }
                } else if a.is(c::CURRENCY_CODE) {
                    cur = a.u32().unwrap_or(0);
                }
            }
            r.cost = Some((digits, exp, cur));
        }
        r
    }
}
