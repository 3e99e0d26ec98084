//! Building the base protocol's messages (RFC 6733 §5): CER/CEA, DWR/DWA, DPR/DPA, and answers
//! that report an error (§7.2), straight into an output buffer.

use std::net::IpAddr;

use bytes::BytesMut;

use super::MessageWriter;
use super::codes::{ResultCode, application, avp as c, command};
use super::error::DiameterError;
use super::header::{CommandFlags, Header};
use super::message::Message;
use super::types::Address;

/// Who we are, as advertised in CER/CEA and every answer.
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    pub origin_host: String,
    pub origin_realm: String,
    /// Host-IP-Address values; the driver fills in the connection's local address(es).
    pub host_ip_addresses: Vec<IpAddr>,
    pub vendor_id: u32,
    pub product_name: String,
    pub firmware_revision: u32,
    pub origin_state_id: u32,
    /// Auth-Application-Ids we support (4 for credit control).
    pub auth_application_ids: Vec<u32>,
    /// Supported-Vendor-Id values (10415 for 3GPP).
    pub supported_vendor_ids: Vec<u32>,
}

impl LocalIdentity {
    fn origin(&self, w: &mut MessageWriter) {
        w.identity(c::ORIGIN_HOST, &self.origin_host);
        w.identity(c::ORIGIN_REALM, &self.origin_realm);
    }

    /// The capabilities AVPs shared by CER and CEA.
    fn capabilities(&self, w: &mut MessageWriter, vendor_specific: bool) {
        for ip in &self.host_ip_addresses {
            w.address(c::HOST_IP_ADDRESS, &Address::Ip(*ip));
        }
        w.u32(c::VENDOR_ID, self.vendor_id);
        w.utf8(c::PRODUCT_NAME, &self.product_name);
        w.u32(c::ORIGIN_STATE_ID, self.origin_state_id);
        for v in &self.supported_vendor_ids {
            w.u32(c::SUPPORTED_VENDOR_ID, *v);
        }
        for app in &self.auth_application_ids {
            w.u32(c::AUTH_APPLICATION_ID, *app);
        }
        if vendor_specific {
            // Echo the 3GPP way of naming the application for peers that used it.
            for app in &self.auth_application_ids {
                for v in &self.supported_vendor_ids {
                    let g = w.begin_group(c::VENDOR_SPECIFIC_APPLICATION_ID);
                    w.u32(c::VENDOR_ID, *v);
                    w.u32(c::AUTH_APPLICATION_ID, *app);
                    w.end_group(g);
                }
            }
        }
        w.u32(c::FIRMWARE_REVISION, self.firmware_revision);
    }

    pub fn write_cer(&self, out: &mut BytesMut, hop_by_hop: u32, end_to_end: u32) {
        let mut w = MessageWriter::new(
            out,
            &peer_request(command::CAPABILITIES_EXCHANGE, hop_by_hop, end_to_end),
        );
        self.origin(&mut w);
        self.capabilities(&mut w, false);
        w.finish();
    }

    /// CEA with `result`; for an error, Error-Message and Failed-AVP as given.
    pub fn write_cea(
        &self,
        out: &mut BytesMut,
        req: &Header,
        result: ResultCode,
        err: Option<&DiameterError>,
        vendor_specific: bool,
    ) {
        let mut h = req.answer();
        if result.is_protocol_error() {
            h.flags.0 |= CommandFlags::ERROR;
        }
        let mut w = MessageWriter::new(out, &h);
        w.u32(c::RESULT_CODE, result.code());
        self.origin(&mut w);
        self.capabilities(&mut w, vendor_specific);
        if let Some(e) = err {
            error_avps(&mut w, e);
        }
        w.finish();
    }

    pub fn write_dwr(&self, out: &mut BytesMut, hop_by_hop: u32, end_to_end: u32) {
        let mut w = MessageWriter::new(
            out,
            &peer_request(command::DEVICE_WATCHDOG, hop_by_hop, end_to_end),
        );
        self.origin(&mut w);
        w.u32(c::ORIGIN_STATE_ID, self.origin_state_id);
        w.finish();
    }

    pub fn write_dwa(&self, out: &mut BytesMut, req: &Header) {
        let mut w = MessageWriter::new(out, &req.answer());
        w.u32(c::RESULT_CODE, ResultCode::Success.code());
        self.origin(&mut w);
        w.u32(c::ORIGIN_STATE_ID, self.origin_state_id);
        w.finish();
    }

    pub(crate) fn write_dpr(
        &self,
        out: &mut BytesMut,
        hop_by_hop: u32,
        end_to_end: u32,
        cause: u32,
    ) {
        let mut w = MessageWriter::new(
            out,
            &peer_request(command::DISCONNECT_PEER, hop_by_hop, end_to_end),
        );
        self.origin(&mut w);
        w.u32(c::DISCONNECT_CAUSE, cause);
        w.finish();
    }

    /// Abort-Session-Request (RFC 6733 §8.5) for a credit-control session (Auth-Application-Id
    /// 4, as RFC 4006 §5.5 has it), to the gateway `destination_host` in
    /// `destination_realm`.
    pub fn write_asr(
        &self,
        out: &mut BytesMut,
        hop_by_hop: u32,
        end_to_end: u32,
        session_id: &str,
        destination_host: &str,
        destination_realm: &str,
    ) {
        let ids = (hop_by_hop, end_to_end);
        let to = (session_id, destination_host, destination_realm);
        let app = application::CREDIT_CONTROL;
        let w = self.session_request(out, (command::ABORT_SESSION, app), ids, to);
        w.finish();
    }

    /// Re-Auth-Request (RFC 6733 §8.3, RFC 4006 §5.5) for a credit-control session:
    /// Re-Auth-Request-Type AUTHORIZE_ONLY, and the Rating-Group when one service is meant.
    #[allow(clippy::too_many_arguments)]
    pub fn write_rar(
        &self,
        out: &mut BytesMut,
        hop_by_hop: u32,
        end_to_end: u32,
        session_id: &str,
        destination_host: &str,
        destination_realm: &str,
        rating_group: Option<u32>,
    ) {
        let ids = (hop_by_hop, end_to_end);
        let to = (session_id, destination_host, destination_realm);
        let app = application::CREDIT_CONTROL;
        let mut w = self.session_request(out, (command::RE_AUTH, app), ids, to);
        // AUTHORIZE_ONLY (RFC 6733 §8.12).
        w.u32(c::RE_AUTH_REQUEST_TYPE, 0);
        if let Some(rg) = rating_group {
            w.u32(c::RATING_GROUP, rg);
        }
        w.finish();
    }

    /// Spending-Status-Notification-Request (3GPP TS 29.219) for a PCRF's Sy session: each
    /// changed policy counter as (identifier, status).
    #[allow(clippy::too_many_arguments)]
    pub fn write_snr(
        &self,
        out: &mut BytesMut,
        hop_by_hop: u32,
        end_to_end: u32,
        session_id: &str,
        destination_host: &str,
        destination_realm: &str,
        reports: &[(String, String)],
    ) {
        let ids = (hop_by_hop, end_to_end);
        let to = (session_id, destination_host, destination_realm);
        let what = (command::SPENDING_STATUS_NOTIFICATION, application::SY);
        let mut w = self.session_request(out, what, ids, to);
        write_policy_counter_reports(
            &mut w,
            reports.iter().map(|(i, s)| (i.as_str(), s.as_str())),
        );
        w.finish();
    }

    /// The start of a request we send a peer about one of its sessions: Session-Id, our
    /// origin, its Destination-Host and -Realm, the Auth-Application-Id of the application and
    /// Origin-State-Id. The caller adds what the command needs and finishes it.
    fn session_request<'o>(
        &self,
        out: &'o mut BytesMut,
        (command_code, app): (u32, u32),
        (hop_by_hop, end_to_end): (u32, u32),
        (session_id, destination_host, destination_realm): (&str, &str, &str),
    ) -> MessageWriter<'o> {
        let mut h = Header::request(command_code, app, hop_by_hop, end_to_end);
        h.flags = CommandFlags(CommandFlags::REQUEST | CommandFlags::PROXIABLE);
        let mut w = MessageWriter::new(out, &h);
        w.utf8(c::SESSION_ID, session_id);
        self.origin(&mut w);
        w.identity(c::DESTINATION_REALM, destination_realm);
        w.identity(c::DESTINATION_HOST, destination_host);
        w.u32(c::AUTH_APPLICATION_ID, app);
        w.u32(c::ORIGIN_STATE_ID, self.origin_state_id);
        w
    }

    pub fn write_dpa(&self, out: &mut BytesMut, req: &Header) {
        let mut w = MessageWriter::new(out, &req.answer());
        w.u32(c::RESULT_CODE, ResultCode::Success.code());
        self.origin(&mut w);
        w.finish();
    }

    /// An answer reporting `err` to a request (RFC 6733 §7.2): Session-Id echoed first, our
    /// origin, Result-Code, Error-Message, Failed-AVP, Proxy-Info echoed; E bit for 3xxx.
    /// For credit control, the AVPs a CCA requires are echoed too (RFC 4006 §3.2) when the
    /// request carried them.
    pub fn write_error_answer(&self, out: &mut BytesMut, req: &Message, err: &DiameterError) {
        let mut h = req.header.answer();
        if err.result_code.is_protocol_error() {
            h.flags.0 |= CommandFlags::ERROR;
        }
        let mut w = MessageWriter::new(out, &h);
        if let Some(sid) = req.session_id() {
            w.avp(&sid);
        }
        w.u32(c::RESULT_CODE, err.result_code.code());
        self.origin(&mut w);
        if req.header.command_code == command::CREDIT_CONTROL
            && !err.result_code.is_protocol_error()
        {
            for k in [
                c::AUTH_APPLICATION_ID,
                c::CC_REQUEST_TYPE,
                c::CC_REQUEST_NUMBER,
            ] {
                if let Some(a) = req.find(k).filter(|a| a.data.len() == 4) {
                    w.avp(&a);
                }
            }
        }
        error_avps(&mut w, err);
        for p in req.find_all(c::PROXY_INFO) {
            w.avp(&p);
        }
        w.finish();
    }
}

impl LocalIdentity {
    /// Answers the request in `frame` with 3004 DIAMETER_TOO_BUSY (E bit), echoing its
    /// Session-Id and Proxy-Info, without decoding or validating the rest: under overload
    /// refusing must cost far less than answering. Returns false (writing nothing) when the
    /// frame's AVPs cannot be walked; the full path then answers with the right error.
    pub fn write_busy_answer(&self, out: &mut BytesMut, frame: &[u8]) -> bool {
        let Ok((body, req)) = super::header::parse_header(frame) else {
            return false;
        };
        let mut it = super::avp::AvpIter::new(body);
        let (mut session, mut proxies) = (None, 0);
        for a in it.by_ref() {
            if a.is(c::SESSION_ID) && session.is_none() {
                session = Some(a);
            } else if a.is(c::PROXY_INFO) {
                proxies += 1;
            }
        }
        if it.error().is_some() {
            return false;
        }
        let mut h = req.answer();
        h.flags.0 |= CommandFlags::ERROR;
        let mut w = MessageWriter::new(out, &h);
        if let Some(sid) = session {
            w.avp(&sid);
        }
        w.u32(c::RESULT_CODE, ResultCode::TooBusy.code());
        self.origin(&mut w);
        w.utf8(c::ERROR_MESSAGE, "overloaded; try again later");
        if proxies > 0 {
            for p in super::avp::AvpIter::new(body).filter(|a| a.is(c::PROXY_INFO)) {
                w.avp(&p);
            }
        }
        w.finish();
        true
    }
}

/// The header of a request between peers (CER, DWR, DPR): R set, not proxiable (RFC 6733 §5).
/// A Policy-Counter-Status-Report (3GPP TS 29.219) per (identifier, status): in an SLA and in
/// an SNR.
pub fn write_policy_counter_reports<'a>(
    w: &mut MessageWriter<'_>,
    reports: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    for (id, status) in reports {
        let g = w.begin_group(c::POLICY_COUNTER_STATUS_REPORT);
        w.utf8(c::POLICY_COUNTER_IDENTIFIER, id);
        w.utf8(c::POLICY_COUNTER_STATUS, status);
        w.end_group(g);
    }
}

fn peer_request(command_code: u32, hop_by_hop: u32, end_to_end: u32) -> Header {
    let mut h = Header::request(
        command_code,
        application::COMMON_MESSAGES,
        hop_by_hop,
        end_to_end,
    );
    h.flags = CommandFlags(CommandFlags::REQUEST);
    h
}

/// Error-Message and Failed-AVP for an error.
fn error_avps(w: &mut MessageWriter, err: &DiameterError) {
    if !err.message.is_empty() {
        w.utf8(c::ERROR_MESSAGE, &err.message);
    }
    if let Some(failed) = &err.failed_avp {
        let g = w.begin_group(c::FAILED_AVP);
        w.raw(failed);
        w.end_group(g);
    }
}

/// The Application-Ids a CER or CEA advertises (plain and inside Vendor-Specific-Application-Id),
/// and whether any were named the vendor-specific way.
pub(crate) fn advertised_applications(msg: &Message) -> (Vec<u32>, bool) {
    let mut apps = Vec::new();
    let mut vendor_specific = false;
    for a in msg.avps() {
        if a.is(c::AUTH_APPLICATION_ID) || a.is(c::ACCT_APPLICATION_ID) {
            apps.extend(a.u32().ok());
        } else if a.is(c::VENDOR_SPECIFIC_APPLICATION_ID) {
            vendor_specific = true;
            for child in a.children() {
                if child.is(c::AUTH_APPLICATION_ID) || child.is(c::ACCT_APPLICATION_ID) {
                    apps.extend(child.u32().ok());
                }
            }
        }
    }
    (apps, vendor_specific)
}
