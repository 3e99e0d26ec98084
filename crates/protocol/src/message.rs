//! A whole Diameter message: header plus top-level AVPs, decoded from one frame without copying
//! AVP data, with typed accessors that report failures as RFC 6733 errors.

use bytes::{Bytes, BytesMut};

use super::avp::{self, AVP_HEADER_LEN, AVP_VENDOR_HEADER_LEN, Avp, AvpFlags, AvpIter};
use super::codes::{AvpCode, ResultCode};
use super::error::DiameterError;
use super::header::{HEADER_LEN, Header, parse_header};
use super::types::{self, TypeError};

/// Where one top-level AVP sits in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AvpPos {
    code: u32,
    flags: AvpFlags,
    vendor_id: u32,
    start: u32,
    end: u32,
}

/// A decoded message: the frame it came from and where each top-level AVP lies in it. AVPs
/// are handed out as [`Avp`] views borrowing the frame. Two messages are equal when their
/// headers and AVPs are (padding octets do not count).
#[derive(Clone, Debug)]
pub struct Message {
    pub header: Header,
    frame: Bytes,
    avps: Vec<AvpPos>,
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.header == other.header && self.avps().eq(other.avps())
    }
}

impl Eq for Message {}

/// A frame that could be split into header and AVPs only up to an error. The AVPs read before
/// the error (often Session-Id and Origin-Host) are kept so the answer can still carry them.
#[derive(Clone, Debug)]
pub struct DecodeFailure {
    pub partial: Message,
    pub error: DiameterError,
}

/// Top-level AVPs of a typical Gy message fit without growing the list.
const TYPICAL_AVPS: usize = 24;

impl Message {
    /// Decodes one frame, as cut by [`super::frame::check`] (so at least 20 octets, length as
    /// declared). AVP data are not checked against their types here; see the dictionary.
    pub fn decode(frame: Bytes) -> Result<Message, Box<DecodeFailure>> {
        let Ok((_, header)) = parse_header(&frame) else {
            // Unreachable with a cut frame; answer sensibly anyway.
            return Err(Box::new(DecodeFailure {
                partial: Message::header_only(Header::request(0, 0, 0, 0)),
                error: DiameterError::new(
                    ResultCode::InvalidMessageLength,
                    "message shorter than its header",
                ),
            }));
        };
        let body = &frame[HEADER_LEN.min(frame.len())..];
        let mut avps = Vec::with_capacity(TYPICAL_AVPS);
        let mut it = AvpIter::new(body);
        loop {
            let at = it.position();
            let Some(a) = it.next() else { break };
            let start = HEADER_LEN + at + a.header_len();
            avps.push(AvpPos {
                code: a.code,
                flags: a.flags,
                vendor_id: a.vendor_id,
                start: start as u32,
                end: (start + a.data.len()) as u32,
            });
        }
        let failure = it.finish().err();
        let msg = Message {
            header,
            frame,
            avps,
        };
        match failure {
            None => Ok(msg),
            Some(error) => Err(Box::new(DecodeFailure {
                partial: msg,
                error,
            })),
        }
    }

    /// A message with a header and no AVPs (for answering a frame that could not be read).
    pub(crate) fn header_only(header: Header) -> Self {
        Message {
            header,
            frame: Bytes::new(),
            avps: Vec::new(),
        }
    }

    /// The top-level AVPs, in order.
    pub fn avps(&self) -> impl Iterator<Item = Avp<'_>> + '_ {
        self.avps.iter().map(|p| self.view(p))
    }

    pub fn avp_count(&self) -> usize {
        self.avps.len()
    }

    fn view(&self, p: &AvpPos) -> Avp<'_> {
        Avp {
            code: p.code,
            flags: p.flags,
            vendor_id: p.vendor_id,
            data: &self.frame[p.start as usize..p.end as usize],
        }
    }

    /// Encodes the message, computing its length. AVP headers and data are copied from the
    /// frame as they are (they are what an encoder would write) and padding is written as
    /// zeros; runs of AVPs whose padding already is zero are copied in one piece.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        self.header.write(out, 0);
        // A run of frame bytes that can be copied as is: [run_from, run_to).
        let (mut run_from, mut run_to) = (0, 0);
        for p in &self.avps {
            let hlen = if p.flags.is_vendor() {
                AVP_VENDOR_HEADER_LEN
            } else {
                AVP_HEADER_LEN
            };
            let (from, to) = (p.start as usize - hlen, p.end as usize);
            let pad_to = from + avp::padded(to - from);
            let clean =
                pad_to <= self.frame.len() && self.frame[to..pad_to].iter().all(|&b| b == 0);
            if from != run_to {
                out.extend_from_slice(&self.frame[run_from..run_to]);
                run_from = from;
            }
            if clean {
                run_to = pad_to;
            } else {
                out.extend_from_slice(&self.frame[run_from..to]);
                avp::put_padding(out, to - from);
                let next = pad_to.min(self.frame.len());
                (run_from, run_to) = (next, next);
            }
        }
        out.extend_from_slice(&self.frame[run_from..run_to]);
        let len = (out.len() - start) as u32;
        out[start + 1..start + 4].copy_from_slice(&len.to_be_bytes()[1..]);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// The first AVP with this code and vendor.
    pub fn find(&self, code: AvpCode) -> Option<Avp<'_>> {
        self.avps
            .iter()
            .find(|p| p.code == code.code && p.vendor_id == code.vendor_id)
            .map(|p| self.view(p))
    }

    /// Every AVP with this code and vendor.
    pub fn find_all(&self, code: AvpCode) -> impl Iterator<Item = Avp<'_>> + '_ {
        self.avps().filter(move |a| a.is(code))
    }

    pub fn session_id(&self) -> Option<Avp<'_>> {
        self.find(super::codes::avp::SESSION_ID)
    }
}

/// The first AVP with this code and vendor among a group's children.
pub fn find<'a>(avps: &[Avp<'a>], code: AvpCode) -> Option<Avp<'a>> {
    avps.iter().copied().find(|a| a.is(code))
}

fn type_error(avp: &Avp, e: TypeError) -> DiameterError {
    DiameterError::new(e.result_code(), e.reason()).with_avp(avp.to_bytes())
}

/// Typed reads of an AVP, failing with the RFC error and the AVP as Failed-AVP.
impl<'a> Avp<'a> {
    pub fn u32(&self) -> Result<u32, DiameterError> {
        types::decode_u32(self.data).map_err(|e| type_error(self, e))
    }
    pub fn u64(&self) -> Result<u64, DiameterError> {
        types::decode_u64(self.data).map_err(|e| type_error(self, e))
    }
    pub fn i32(&self) -> Result<i32, DiameterError> {
        types::decode_i32(self.data).map_err(|e| type_error(self, e))
    }
    pub fn utf8(&self) -> Result<&'a str, DiameterError> {
        types::decode_utf8(self.data).map_err(|e| type_error(self, e))
    }
    pub fn identity(&self) -> Result<&'a str, DiameterError> {
        types::decode_identity(self.data).map_err(|e| type_error(self, e))
    }
    pub fn address(&self) -> Result<types::Address, DiameterError> {
        types::decode_address(self.data).map_err(|e| type_error(self, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::avp;
    use crate::encode::MessageWriter;
    use proptest::prelude::*;

    fn sample() -> Bytes {
        let mut buf = BytesMut::new();
        let mut w = MessageWriter::new(&mut buf, &Header::request(257, 0, 1, 2));
        w.identity(avp::ORIGIN_HOST, "gw.example.net");
        w.identity(avp::ORIGIN_REALM, "example.net");
        w.address(
            avp::HOST_IP_ADDRESS,
            &types::Address::Ip("10.1.2.3".parse().unwrap()),
        );
        w.u32(avp::VENDOR_ID, 10415);
        w.utf8(avp::PRODUCT_NAME, "pgw");
        let g = w.begin_group(avp::VENDOR_SPECIFIC_APPLICATION_ID);
        w.u32(avp::VENDOR_ID, 10415);
        w.u32(avp::AUTH_APPLICATION_ID, 4);
        w.end_group(g);
        w.finish();
        buf.freeze()
    }

    #[test]
    fn decode_then_encode_is_identity() {
        let frame = sample();
        let msg = Message::decode(frame.clone()).unwrap();
        assert_eq!(msg.avp_count(), 6);
        // Views into the frame, not copies.
        let host = msg.find(avp::ORIGIN_HOST).unwrap();
        assert!(frame.as_ptr_range().contains(&host.data.as_ptr()));
        assert_eq!(
            msg.find(avp::ORIGIN_HOST).unwrap().identity().unwrap(),
            "gw.example.net"
        );
        let vsai = msg.find(avp::VENDOR_SPECIFIC_APPLICATION_ID).unwrap();
        let kids = vsai.decode_children().unwrap();
        assert_eq!(
            find(&kids, avp::AUTH_APPLICATION_ID)
                .unwrap()
                .u32()
                .unwrap(),
            4
        );
        assert_eq!(msg.to_bytes(), frame);
    }

    #[test]
    fn failure_keeps_avps_read_before_it() {
        let mut raw = sample().to_vec();
        // Corrupt the length of the third AVP (Host-IP-Address) to run past the message.
        let third = 20 + 24 + 20;
        raw[third + 7] = 0xff;
        let fail = Message::decode(Bytes::from(raw)).unwrap_err();
        assert_eq!(fail.error.result_code, ResultCode::InvalidAvpLength);
        assert_eq!(fail.partial.avp_count(), 2);
    }

    #[test]
    fn typed_read_errors_carry_the_avp() {
        let a = Avp::new(268, 0x40, 0, &[1, 2]);
        let e = a.u32().unwrap_err();
        assert_eq!(e.result_code, ResultCode::InvalidAvpLength);
        assert_eq!(e.failed_avp.unwrap(), a.to_bytes());
    }

    /// (code, flags, vendor, data) of an arbitrary AVP.
    fn arb_avp() -> impl Strategy<Value = (u32, u8, u32, Vec<u8>)> {
        (
            any::<u32>(),
            any::<bool>(),
            any::<bool>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..24),
        )
            .prop_map(|(code, v, m, vendor, data)| {
                let flags = if v { 0x80 } else { 0 } | if m { 0x40 } else { 0 };
                (code, flags, if v { vendor } else { 0 }, data)
            })
    }

    proptest! {
        #[test]
        fn messages_round_trip(
            flags in any::<u8>(), code in 0u32..0x00ff_ffff, app: u32, hbh: u32, e2e: u32,
            avps in proptest::collection::vec(arb_avp(), 0..12),
        ) {
            let header = Header { version: 1, length: 0, flags: crate::CommandFlags(flags), command_code: code, application_id: app, hop_by_hop: hbh, end_to_end: e2e };
            let mut buf = BytesMut::new();
            let mut w = MessageWriter::new(&mut buf, &header);
            for (code, flags, vendor, data) in &avps {
                w.avp(&Avp::new(*code, *flags, *vendor, data));
            }
            w.finish();
            let bytes = buf.freeze();
            let back = Message::decode(bytes.clone()).unwrap();
            prop_assert_eq!(back.header.length as usize, bytes.len());
            let got: Vec<_> = back.avps().map(|a| (a.code, a.flags.0, a.vendor_id, a.data.to_vec())).collect();
            prop_assert_eq!(&got, &avps);
            prop_assert_eq!(back.to_bytes(), bytes);
        }

        #[test]
        fn random_frames_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut raw = vec![1, 0, 0, 0, 0x80, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
            raw.extend_from_slice(&body);
            let len = raw.len() as u32;
            raw[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
            if let Ok(m) = Message::decode(Bytes::from(raw)) {
                // Whatever decodes re-encodes to a frame that decodes to the same message.
                let again = Message::decode(m.to_bytes()).unwrap();
                prop_assert_eq!(again, m);
            }
        }
    }
}
