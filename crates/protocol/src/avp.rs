//! AVPs (RFC 6733 §4): header with V/M/P flags and optional Vendor-Id, data, padding to 32 bits.
//!
//! Decoding borrows from the frame: an [`Avp`] is a view whose data is a slice of the frame's
//! `Bytes` (held by the [`super::Message`]), never a copy and not even a reference-count bump.
//! Grouped AVPs keep their data as one slice and are parsed on demand with [`Avp::children`],
//! which walks a bounded sub-slice that must be consumed exactly.

use bytes::{BufMut, Bytes, BytesMut};
use nom::IResult;

use super::codes::ResultCode;
use super::error::DiameterError;

/// AVP flags octet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AvpFlags(pub u8);

impl AvpFlags {
    /// V: a Vendor-Id field follows the length.
    pub(crate) const VENDOR: u8 = 0x80;
    /// M: the receiver must understand this AVP or reject the message.
    pub(crate) const MANDATORY: u8 = 0x40;
    /// P: end-to-end security (deprecated, kept for compatibility).
    pub const PROTECTED: u8 = 0x20;
    /// Reserved bits, which must be zero.
    pub const RESERVED: u8 = 0x1f;

    pub(crate) fn is_vendor(self) -> bool {
        self.0 & Self::VENDOR != 0
    }
    pub(crate) fn is_mandatory(self) -> bool {
        self.0 & Self::MANDATORY != 0
    }
}

/// Minimum AVP header length (no Vendor-Id).
pub(crate) const AVP_HEADER_LEN: usize = 8;
/// AVP header length with a Vendor-Id.
pub(crate) const AVP_VENDOR_HEADER_LEN: usize = 12;

/// One decoded AVP, borrowed from its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avp<'a> {
    pub code: u32,
    pub flags: AvpFlags,
    /// 0 when the V bit is clear.
    pub vendor_id: u32,
    /// The data, without header or padding.
    pub data: &'a [u8],
}

/// Rounds up to the next multiple of 4.
pub const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

impl<'a> Avp<'a> {
    pub fn new(code: u32, flags: u8, vendor_id: u32, data: &'a [u8]) -> Self {
        Avp {
            code,
            flags: AvpFlags(flags),
            vendor_id,
            data,
        }
    }

    pub(crate) fn header_len(&self) -> usize {
        if self.flags.is_vendor() {
            AVP_VENDOR_HEADER_LEN
        } else {
            AVP_HEADER_LEN
        }
    }

    /// AVP Length as written on the wire (header + data, no padding).
    pub fn wire_len(&self) -> usize {
        self.header_len() + self.data.len()
    }

    /// Whether this is the AVP named by `code`.
    pub fn is(&self, code: super::AvpCode) -> bool {
        self.code == code.code && self.vendor_id == code.vendor_id
    }

    /// Appends the AVP with its padding.
    pub fn encode(&self, out: &mut BytesMut) {
        put_header(
            out,
            self.code,
            self.flags.0,
            self.vendor_id,
            self.data.len(),
        );
        out.put_slice(self.data);
        put_padding(out, self.data.len());
    }

    /// The encoded AVP as a new buffer (for Failed-AVP).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(padded(self.wire_len()));
        self.encode(&mut out);
        out.freeze()
    }

    /// The children of a Grouped AVP.
    pub fn children(&self) -> AvpIter<'a> {
        AvpIter::new(self.data)
    }

    /// Decodes all children, wrapping any error so that Failed-AVP names this group too.
    pub fn decode_children(&self) -> Result<Vec<Avp<'a>>, DiameterError> {
        let mut it = self.children();
        let kids: Vec<_> = it.by_ref().collect();
        it.finish().map_err(|e| self.wrap_error(e))?;
        Ok(kids)
    }

    /// Wraps a child's Failed-AVP in this group's header, as RFC 6733 §7.5 allows, so the peer
    /// sees where the offending AVP sits.
    pub fn wrap_error(&self, mut err: DiameterError) -> DiameterError {
        if let Some(inner) = err.failed_avp.take() {
            let mut out = BytesMut::with_capacity(self.header_len() + inner.len());
            put_header(
                &mut out,
                self.code,
                self.flags.0,
                self.vendor_id,
                inner.len(),
            );
            out.put_slice(&inner);
            put_padding(&mut out, inner.len());
            err.failed_avp = Some(out.freeze());
        }
        err
    }
}

/// Writes an AVP header for `data_len` octets of data.
pub(crate) fn put_header(
    out: &mut BytesMut,
    code: u32,
    flags: u8,
    vendor_id: u32,
    data_len: usize,
) {
    let vendor = flags & AvpFlags::VENDOR != 0;
    let header = if vendor {
        AVP_VENDOR_HEADER_LEN
    } else {
        AVP_HEADER_LEN
    };
    out.put_u32(code);
    out.put_u32((u32::from(flags) << 24) | ((header + data_len) as u32 & 0x00ff_ffff));
    if vendor {
        out.put_u32(vendor_id);
    }
}

/// Writes the zero padding that follows `data_len` octets of data.
pub(crate) fn put_padding(out: &mut BytesMut, data_len: usize) {
    const ZEROS: [u8; 3] = [0; 3];
    out.put_slice(&ZEROS[..padded(data_len) - data_len]);
}

/// Raw header fields as read, before any check.
struct RawHeader {
    code: u32,
    flags: u8,
    length: u32,
    vendor_id: u32,
}

/// Reads an AVP header: code, flags, 24-bit length and, with the V bit, Vendor-Id.
#[inline]
fn raw_header(input: &[u8]) -> IResult<&[u8], RawHeader> {
    let short = || nom::Err::Error(nom::error::Error::new(input, nom::error::ErrorKind::Eof));
    let fixed: &[u8; 8] = input
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(short)?;
    let code = u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]);
    let flags = fixed[4];
    let length = u32::from_be_bytes([0, fixed[5], fixed[6], fixed[7]]);
    if flags & AvpFlags::VENDOR == 0 {
        return Ok((
            &input[8..],
            RawHeader {
                code,
                flags,
                length,
                vendor_id: 0,
            },
        ));
    }
    let v: &[u8; 4] = input
        .get(8..12)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(short)?;
    Ok((
        &input[12..],
        RawHeader {
            code,
            flags,
            length,
            vendor_id: u32::from_be_bytes(*v),
        },
    ))
}

/// Failed-AVP content for an AVP whose length cannot be trusted: its header (zero-filled up to
/// the minimum header length) and an empty payload (RFC 6733 §7.1.5, 5014).
fn bad_length_avp(raw: &[u8]) -> Bytes {
    let mut hdr = [0u8; AVP_VENDOR_HEADER_LEN];
    let vendor = raw.get(4).is_some_and(|f| f & AvpFlags::VENDOR != 0);
    let hlen = if vendor {
        AVP_VENDOR_HEADER_LEN
    } else {
        AVP_HEADER_LEN
    };
    let n = raw.len().min(hlen);
    hdr[..n].copy_from_slice(&raw[..n]);
    // Length field: header only, so the Failed-AVP itself is well formed.
    hdr[5..8].copy_from_slice(&(hlen as u32).to_be_bytes()[1..]);
    Bytes::copy_from_slice(&hdr[..hlen])
}

/// Iterates over the AVPs in a buffer (a message body or a Grouped AVP's data). A malformed AVP
/// ends the iteration and is reported by [`AvpIter::finish`] (or [`AvpIter::error`]): the
/// well-formed path carries no error value, which keeps walking a message cheap.
pub struct AvpIter<'a> {
    buf: &'a [u8],
    pos: usize,
    error: Option<Box<DiameterError>>,
}

impl<'a> AvpIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        AvpIter {
            buf,
            pos: 0,
            error: None,
        }
    }

    /// Offset of the next AVP within the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The error that ended the iteration early, if any.
    pub fn error(&self) -> Option<&DiameterError> {
        self.error.as_deref()
    }

    /// Whether the buffer was consumed exactly, without a malformed AVP.
    pub fn finish(self) -> Result<(), DiameterError> {
        match self.error {
            None => Ok(()),
            Some(e) => Err(*e),
        }
    }

    /// A malformed AVP at the current position: 5014 with its header as Failed-AVP. Kept out
    /// of line so the well-formed path stays small.
    #[cold]
    #[inline(never)]
    fn bad_length(&mut self, why: &'static str) -> Option<Avp<'a>> {
        let rest = &self.buf[self.pos..];
        self.error = Some(Box::new(
            DiameterError::new(ResultCode::InvalidAvpLength, why).with_avp(bad_length_avp(rest)),
        ));
        self.pos = self.buf.len();
        None
    }
}

impl<'a> Iterator for AvpIter<'a> {
    type Item = Avp<'a>;

    #[inline]
    fn next(&mut self) -> Option<Avp<'a>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let Ok((_, raw)) = raw_header(rest) else {
            return self.bad_length("AVP header runs past its container");
        };
        let hlen = if raw.flags & AvpFlags::VENDOR != 0 {
            AVP_VENDOR_HEADER_LEN
        } else {
            AVP_HEADER_LEN
        };
        let len = raw.length as usize;
        if len < hlen {
            return self.bad_length("AVP Length shorter than its header");
        }
        if len > rest.len() {
            return self.bad_length("AVP Length runs past its container");
        }
        let data = &rest[hlen..len];
        // Some peers leave out the padding of the last AVP in a group; accept that (the data
        // itself fits), but never let padding overlap a following AVP.
        self.pos += padded(len).min(rest.len());
        Some(Avp {
            code: raw.code,
            flags: AvpFlags(raw.flags),
            vendor_id: raw.vendor_id,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avp_table_both_ways() {
        // (avp, wire bytes incl. padding)
        let cases: Vec<(Avp, Vec<u8>)> = vec![
            (
                Avp::new(268, 0x40, 0, &[0, 0, 7, 0xd1]),
                vec![0, 0, 1, 12, 0x40, 0, 0, 12, 0, 0, 7, 0xd1],
            ),
            (
                Avp::new(264, 0x40, 0, b"abcde"),
                vec![
                    0, 0, 1, 8, 0x40, 0, 0, 13, b'a', b'b', b'c', b'd', b'e', 0, 0, 0,
                ],
            ),
            (
                Avp::new(869, 0xc0, 10415, &[0, 0, 0, 1]),
                vec![0, 0, 3, 0x65, 0xc0, 0, 0, 16, 0, 0, 0x28, 0xaf, 0, 0, 0, 1],
            ),
            (Avp::new(1, 0, 0, &[]), vec![0, 0, 0, 1, 0, 0, 0, 8]),
        ];
        for (avp, wire) in cases {
            let mut out = BytesMut::new();
            avp.encode(&mut out);
            assert_eq!(&out[..], &wire[..], "encode {avp:?}");
            let mut it = AvpIter::new(&wire);
            assert_eq!(it.next().unwrap(), avp);
            assert!(it.next().is_none());
        }
    }

    #[test]
    fn decode_shares_the_frame() {
        let wire = Bytes::from(vec![
            0, 0, 1, 8, 0x40, 0, 0, 13, b'a', b'b', b'c', b'd', b'e', 0, 0, 0,
        ]);
        let avp = AvpIter::new(&wire).next().unwrap();
        // Same memory, not a copy.
        assert_eq!(avp.data.as_ptr(), wire[8..].as_ptr());
    }

    #[test]
    fn bad_lengths_are_5014_with_failed_avp() {
        let cases: &[&[u8]] = &[
            &[0, 0, 1, 8, 0x40, 0, 0, 4],              // length < header
            &[0, 0, 1, 8, 0x40, 0, 0, 40, 1, 2, 3, 4], // past the container
            &[0, 0, 1, 8, 0x40, 0],                    // header cut short
            &[0, 0, 1, 8, 0xc0, 0, 0, 10, 0, 0],       // vendor header cut short
        ];
        for wire in cases {
            let mut it = AvpIter::new(wire);
            assert!(it.next().is_none());
            let err = it.finish().unwrap_err();
            assert_eq!(err.result_code, ResultCode::InvalidAvpLength, "{wire:?}");
            let failed = err.failed_avp.unwrap();
            assert_eq!(
                &failed[..4],
                &wire[..4.min(wire.len())]
                    .iter()
                    .copied()
                    .chain([0; 4])
                    .take(4)
                    .collect::<Vec<_>>()[..]
            );
            // The Failed-AVP content is itself a well-formed AVP.
            assert!(AvpIter::new(&failed).next().is_some());
        }
    }

    #[test]
    fn group_error_is_wrapped_in_the_parent() {
        // Vendor-Specific-Application-Id holding a child whose length overflows the group.
        let child_bad = [0u8, 0, 1, 10, 0x40, 0, 0, 20, 0, 0, 0, 4];
        let group = Avp::new(260, 0x40, 0, &child_bad);
        let err = group.decode_children().unwrap_err();
        assert_eq!(err.result_code, ResultCode::InvalidAvpLength);
        let failed = err.failed_avp.unwrap();
        let outer = AvpIter::new(&failed).next().unwrap();
        assert_eq!(outer.code, 260);
        let inner = outer.children().next().unwrap();
        assert_eq!(inner.code, 266);
    }
}
