//! A whole Diameter message: header plus top-level AVPs, decoded from one frame without copying
//! AVP data, with typed accessors that report failures as RFC 6733 errors.

use bytes::{Bytes, BytesMut};

use super::avp::{Avp, AvpIter};
use super::codes::{AvpCode, ResultCode};
use super::error::DiameterError;
use super::header::{HEADER_LEN, Header, parse_header};
use super::types::{self, TypeError};

/// A decoded message. AVP data are views into the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub avps: Vec<Avp>,
}

/// A frame that could be split into header and AVPs only up to an error. The AVPs read before
/// the error (often Session-Id and Origin-Host) are kept so the answer can still carry them.
#[derive(Clone, Debug)]
pub struct DecodeFailure {
    pub header: Header,
    pub avps: Vec<Avp>,
    pub error: DiameterError,
}

impl Message {
    /// Decodes one frame, as cut by [`super::frame::check`] (so at least 20 octets, length as
    /// declared). AVP data are not checked against their types here; see the dictionary.
    pub fn decode(frame: Bytes) -> Result<Message, Box<DecodeFailure>> {
        let header = match parse_header(&frame) {
            Ok((_, h)) => h,
            Err(_) => {
                // Unreachable with a cut frame; answer sensibly anyway.
                return Err(Box::new(DecodeFailure {
                    header: Header::request(0, 0, 0, 0),
                    avps: Vec::new(),
                    error: DiameterError::new(
                        ResultCode::InvalidMessageLength,
                        "message shorter than its header",
                    ),
                }));
            }
        };
        let body = frame.slice(HEADER_LEN.min(frame.len())..);
        let mut avps = Vec::with_capacity(16);
        for avp in AvpIter::new(body) {
            match avp {
                Ok(avp) => avps.push(avp),
                Err(error) => {
                    return Err(Box::new(DecodeFailure {
                        header,
                        avps,
                        error,
                    }));
                }
            }
        }
        Ok(Message { header, avps })
    }

    pub fn new(header: Header) -> Self {
        Message {
            header,
            avps: Vec::new(),
        }
    }

    /// Encodes the message, computing its length.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        self.header.write(out, 0);
        for avp in &self.avps {
            avp.encode(out);
        }
        let len = (out.len() - start) as u32;
        out[start + 1..start + 4].copy_from_slice(&len.to_be_bytes()[1..]);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// The first AVP with this code and vendor.
    pub fn find(&self, code: AvpCode) -> Option<&Avp> {
        find(&self.avps, code)
    }

    /// Every AVP with this code and vendor.
    pub fn find_all(&self, code: AvpCode) -> impl Iterator<Item = &Avp> {
        self.avps.iter().filter(move |a| a.is(code))
    }

    pub fn session_id(&self) -> Option<&Avp> {
        self.find(super::codes::avp::SESSION_ID)
    }
}

/// The first AVP with this code and vendor in a list.
pub fn find(avps: &[Avp], code: AvpCode) -> Option<&Avp> {
    avps.iter().find(|a| a.is(code))
}

fn type_error(avp: &Avp, e: TypeError) -> DiameterError {
    DiameterError::new(e.result_code(), e.reason()).with_avp(avp.to_bytes())
}

/// Typed reads of an AVP, failing with the RFC error and the AVP as Failed-AVP.
impl Avp {
    pub fn u32(&self) -> Result<u32, DiameterError> {
        types::decode_u32(&self.data).map_err(|e| type_error(self, e))
    }
    pub fn u64(&self) -> Result<u64, DiameterError> {
        types::decode_u64(&self.data).map_err(|e| type_error(self, e))
    }
    pub fn i32(&self) -> Result<i32, DiameterError> {
        types::decode_i32(&self.data).map_err(|e| type_error(self, e))
    }
    pub fn utf8(&self) -> Result<&str, DiameterError> {
        types::decode_utf8(&self.data).map_err(|e| type_error(self, e))
    }
    pub fn identity(&self) -> Result<&str, DiameterError> {
        types::decode_identity(&self.data).map_err(|e| type_error(self, e))
    }
    pub fn address(&self) -> Result<types::Address, DiameterError> {
        types::decode_address(&self.data).map_err(|e| type_error(self, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diameter::codes::avp;
    use crate::diameter::encode::MessageWriter;
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
        assert_eq!(msg.avps.len(), 6);
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
        assert_eq!(fail.avps.len(), 2);
    }

    #[test]
    fn typed_read_errors_carry_the_avp() {
        let a = Avp::new(268, 0x40, 0, Bytes::from_static(&[1, 2]));
        let e = a.u32().unwrap_err();
        assert_eq!(e.result_code, ResultCode::InvalidAvpLength);
        assert_eq!(e.failed_avp.unwrap(), a.to_bytes());
    }

    fn arb_avp() -> impl Strategy<Value = Avp> {
        (
            any::<u32>(),
            any::<bool>(),
            any::<bool>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..24),
        )
            .prop_map(|(code, v, m, vendor, data)| {
                let flags = if v { 0x80 } else { 0 } | if m { 0x40 } else { 0 };
                Avp::new(code, flags, if v { vendor } else { 0 }, Bytes::from(data))
            })
    }

    proptest! {
        #[test]
        fn messages_round_trip(
            flags in any::<u8>(), code in 0u32..0x00ff_ffff, app: u32, hbh: u32, e2e: u32,
            avps in proptest::collection::vec(arb_avp(), 0..12),
        ) {
            let header = Header { version: 1, length: 0, flags: crate::diameter::CommandFlags(flags), command_code: code, application_id: app, hop_by_hop: hbh, end_to_end: e2e };
            let msg = Message { header, avps };
            let bytes = msg.to_bytes();
            let back = Message::decode(bytes.clone()).unwrap();
            prop_assert_eq!(back.header.length as usize, bytes.len());
            prop_assert_eq!(&back.avps, &msg.avps);
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
                prop_assert_eq!(again.avps, m.avps);
            }
        }
    }
}
