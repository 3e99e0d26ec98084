//! The 20-byte Diameter message header (RFC 6733 §3).

use nom::IResult;
use nom::number::complete::{be_u8, be_u24, be_u32};

/// Length of the fixed message header.
pub const HEADER_LEN: usize = 20;
/// The only protocol version (RFC 6733 §3).
pub const VERSION: u8 = 1;

/// Command flags octet (RFC 6733 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CommandFlags(pub u8);

impl CommandFlags {
    /// R: the message is a request.
    pub const REQUEST: u8 = 0x80;
    /// P: the message may be proxied, relayed or redirected.
    pub(crate) const PROXIABLE: u8 = 0x40;
    /// E: the answer carries a protocol error (3xxx).
    pub const ERROR: u8 = 0x20;
    /// T: potentially retransmitted after a link failover.
    pub const RETRANSMIT: u8 = 0x10;
    /// The four reserved bits, which must be zero.
    pub const RESERVED: u8 = 0x0f;

    pub fn is_request(self) -> bool {
        self.0 & Self::REQUEST != 0
    }
    pub fn is_proxiable(self) -> bool {
        self.0 & Self::PROXIABLE != 0
    }
    pub fn is_error(self) -> bool {
        self.0 & Self::ERROR != 0
    }
    pub fn is_retransmit(self) -> bool {
        self.0 & Self::RETRANSMIT != 0
    }
}

/// A decoded message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    pub version: u8,
    /// Message length including the header, in octets (24 bits on the wire).
    pub length: u32,
    pub flags: CommandFlags,
    /// Command-Code (24 bits on the wire).
    pub command_code: u32,
    pub application_id: u32,
    pub hop_by_hop: u32,
    pub end_to_end: u32,
}

impl Header {
    /// A header for a new request; `length` is filled in by the encoder.
    pub fn request(
        command_code: u32,
        application_id: u32,
        hop_by_hop: u32,
        end_to_end: u32,
    ) -> Self {
        Header {
            version: VERSION,
            length: 0,
            flags: CommandFlags(CommandFlags::REQUEST | CommandFlags::PROXIABLE),
            command_code,
            application_id,
            hop_by_hop,
            end_to_end,
        }
    }

    /// The header of the answer to this request: R and T cleared, P kept, identifiers copied
    /// (RFC 6733 §6.2).
    pub fn answer(&self) -> Self {
        Header {
            version: VERSION,
            length: 0,
            flags: CommandFlags(self.flags.0 & CommandFlags::PROXIABLE),
            ..*self
        }
    }

    pub fn is_request(&self) -> bool {
        self.flags.is_request()
    }

    /// Writes the header with the given total length.
    pub fn write(&self, out: &mut bytes::BytesMut, length: u32) {
        use bytes::BufMut;
        out.put_u32((u32::from(self.version) << 24) | (length & 0x00ff_ffff));
        out.put_u32((u32::from(self.flags.0) << 24) | (self.command_code & 0x00ff_ffff));
        out.put_u32(self.application_id);
        out.put_u32(self.hop_by_hop);
        out.put_u32(self.end_to_end);
    }
}

/// Parses the 20 header octets; every bit pattern is accepted here, the checks are in
/// [`crate::frame`] and [`crate::message`].
pub fn parse_header(input: &[u8]) -> IResult<&[u8], Header> {
    let (input, version) = be_u8(input)?;
    let (input, length) = be_u24(input)?;
    let (input, flags) = be_u8(input)?;
    let (input, command_code) = be_u24(input)?;
    let (input, application_id) = be_u32(input)?;
    let (input, hop_by_hop) = be_u32(input)?;
    let (input, end_to_end) = be_u32(input)?;
    Ok((
        input,
        Header {
            version,
            length,
            flags: CommandFlags(flags),
            command_code,
            application_id,
            hop_by_hop,
            end_to_end,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn header_table_both_ways() {
        // (header, bytes) pairs: a CER and an answer with E bit.
        let cases: &[(Header, [u8; 20])] = &[
            (
                Header {
                    version: 1,
                    length: 20,
                    flags: CommandFlags(0x80),
                    command_code: 257,
                    application_id: 0,
                    hop_by_hop: 0x0102_0304,
                    end_to_end: 0xa0b0_c0d0,
                },
                [
                    1, 0, 0, 20, 0x80, 0, 1, 1, 0, 0, 0, 0, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0,
                ],
            ),
            (
                Header {
                    version: 1,
                    length: 0x00ff_fffc,
                    flags: CommandFlags(0x60),
                    command_code: 272,
                    application_id: 4,
                    hop_by_hop: 0xffff_ffff,
                    end_to_end: 0,
                },
                [
                    1, 0xff, 0xff, 0xfc, 0x60, 0, 1, 0x10, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff, 0,
                    0, 0, 0,
                ],
            ),
        ];
        for (header, bytes) in cases {
            let (rest, parsed) = parse_header(bytes).unwrap();
            assert!(rest.is_empty());
            assert_eq!(&parsed, header);
            let mut out = BytesMut::new();
            header.write(&mut out, header.length);
            assert_eq!(&out[..], &bytes[..]);
        }
    }

    #[test]
    fn answer_header_clears_request_and_retransmit_bits() {
        let mut req = Header::request(280, 0, 7, 9);
        req.flags.0 |= CommandFlags::RETRANSMIT;
        let ans = req.answer();
        assert_eq!(ans.flags.0, CommandFlags::PROXIABLE);
        assert_eq!(
            (ans.hop_by_hop, ans.end_to_end, ans.command_code),
            (7, 9, 280)
        );
    }

    #[test]
    fn short_header_is_incomplete_error() {
        assert!(parse_header(&[1, 0, 0]).is_err());
    }
}
