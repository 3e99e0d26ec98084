//! A trivial Gy responder that does no charging: CER → CEA, DWR → DWA, DPR → DPA, and every
//! CCR → a CCA that copies the request's Session-Id, CC-Request-Type and CC-Request-Number in
//! front of a pre-encoded body (Result-Code 2001, one MSCC granting 10 MiB per Rating-Group 10).
//! It measures the load generator's own ceiling: what the tool can drive when the server
//! costs next to nothing.

use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use ocf_protocol::avp::AvpIter;
use ocf_protocol::base::LocalIdentity;
use ocf_protocol::codes::{ResultCode, VENDOR_3GPP, application, avp as c, command};
use ocf_protocol::header::{HEADER_LEN, parse_header};
use ocf_protocol::{CommandFlags, Header, MessageWriter, frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn identity(local: IpAddr) -> LocalIdentity {
    LocalIdentity {
        origin_host: "responder.localdomain".into(),
        origin_realm: "localdomain".into(),
        host_ip_addresses: vec![local],
        vendor_id: 0,
        product_name: "ocf-loadtest responder".into(),
        firmware_revision: 1,
        origin_state_id: 1,
        auth_application_ids: vec![application::CREDIT_CONTROL],
        supported_vendor_ids: vec![VENDOR_3GPP],
    }
}

/// The part of every CCA after the copied AVPs.
fn cca_tail(id: &LocalIdentity) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let h = Header::request(0, 0, 0, 0);
    let mut w = MessageWriter::new(&mut buf, &h);
    w.u32(c::RESULT_CODE, ResultCode::Success.code());
    w.identity(c::ORIGIN_HOST, &id.origin_host);
    w.identity(c::ORIGIN_REALM, &id.origin_realm);
    w.u32(c::AUTH_APPLICATION_ID, application::CREDIT_CONTROL);
    let m = w.begin_group(c::MULTIPLE_SERVICES_CREDIT_CONTROL);
    let g = w.begin_group(c::GRANTED_SERVICE_UNIT);
    w.u64(c::CC_TOTAL_OCTETS, 10 << 20);
    w.end_group(g);
    w.u32(c::RATING_GROUP, 10);
    w.u32(c::RESULT_CODE, ResultCode::Success.code());
    w.end_group(m);
    w.finish();
    buf[HEADER_LEN..].to_vec()
}

/// Appends the answer to the CCR in `req`.
fn answer_ccr(out: &mut BytesMut, h: &Header, req: &[u8], tail: &[u8]) {
    let start = out.len();
    h.answer().write(out, 0);
    for a in AvpIter::new(&req[HEADER_LEN..]) {
        if a.is(c::SESSION_ID) || a.is(c::CC_REQUEST_TYPE) || a.is(c::CC_REQUEST_NUMBER) {
            a.encode(out);
        }
    }
    out.extend_from_slice(tail);
    let len = (out.len() - start) as u32;
    out[start + 1..start + 4].copy_from_slice(&len.to_be_bytes()[1..]);
}

async fn serve(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let id = identity(s.local_addr()?.ip());
    let tail = cca_tail(&id);
    let mut rbuf = BytesMut::with_capacity(256 * 1024);
    let mut out = BytesMut::with_capacity(256 * 1024);
    loop {
        rbuf.reserve(64 * 1024);
        if s.read_buf(&mut rbuf).await? == 0 {
            return Ok(());
        }
        let mut close = false;
        while let Ok(Some(len)) = frame::check(&rbuf, 1 << 20) {
            if rbuf.len() < len {
                break;
            }
            let f = rbuf.split_to(len);
            let Ok((_, h)) = parse_header(&f) else {
                continue;
            };
            if h.flags.0 & CommandFlags::REQUEST == 0 {
                continue;
            }
            match h.command_code {
                command::CREDIT_CONTROL => answer_ccr(&mut out, &h, &f, &tail),
                command::CAPABILITIES_EXCHANGE => {
                    id.write_cea(&mut out, &h, ResultCode::Success, None, false)
                }
                command::DEVICE_WATCHDOG => id.write_dwa(&mut out, &h),
                command::DISCONNECT_PEER => {
                    id.write_dpa(&mut out, &h);
                    close = true;
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        if close {
            return Ok(());
        }
    }
}

/// Serves until the process ends; prints the bound address first.
pub async fn run(listen: SocketAddr) -> std::io::Result<()> {
    let l = TcpListener::bind(listen).await?;
    println!("responder listening on {}", l.local_addr()?);
    loop {
        let (s, _) = l.accept().await?;
        tokio::spawn(async move {
            let _ = serve(s).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gy::{CcaResult, CcrSpec, INITIAL, MsccSpec};
    use ocf_protocol::Message;

    #[test]
    fn answers_copy_the_session_and_validate() {
        let id = identity(IpAddr::from([127, 0, 0, 1]));
        let mut req = BytesMut::new();
        CcrSpec::new("gw;1;2", INITIAL, 0)
            .msisdn("15551000000")
            .mscc(MsccSpec {
                rating_group: Some(10),
                requested_octets: Some(Some(1000)),
                ..Default::default()
            })
            .write(&mut req, 7, 9);
        let (_, h) = parse_header(&req).unwrap();
        let mut out = BytesMut::new();
        answer_ccr(&mut out, &h, &req, &cca_tail(&id));
        let m = Message::decode(out.freeze()).unwrap();
        ocf_protocol::dictionary::Dictionary::builtin()
            .unwrap()
            .validate(&m)
            .unwrap();
        assert_eq!((m.header.hop_by_hop, m.header.end_to_end), (7, 9));
        assert_eq!(m.session_id().unwrap().utf8().unwrap(), "gw;1;2");
        let r = CcaResult::read(&m);
        assert_eq!(
            (r.result_code, r.request_type, r.mscc[0].granted_octets),
            (2001, Some(INITIAL), Some(10 << 20))
        );
    }
}
