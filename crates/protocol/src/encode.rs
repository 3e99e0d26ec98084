//! Writing messages straight into a `BytesMut`: the header and Grouped AVP lengths are
//! back-patched once their contents are written, so nothing is built twice.

use bytes::{BufMut, BytesMut};

use super::avp::{self, Avp, AvpFlags};
use super::codes::AvpCode;
use super::header::Header;
use super::types::Address;

/// Writes one message into a buffer that may already hold other messages (answers of one read
/// batch share a buffer and a write).
pub struct MessageWriter<'a> {
    buf: &'a mut BytesMut,
    start: usize,
}

/// Where an open Grouped AVP starts, returned by [`MessageWriter::begin_group`].
#[must_use = "close the group with end_group"]
pub struct GroupMark(usize);

fn flags_for(code: AvpCode) -> u8 {
    let mut f = 0;
    if code.vendor_id != 0 {
        f |= AvpFlags::VENDOR;
    }
    if code.mandatory {
        f |= AvpFlags::MANDATORY;
    }
    f
}

impl<'a> MessageWriter<'a> {
    pub fn new(buf: &'a mut BytesMut, header: &Header) -> Self {
        let start = buf.len();
        header.write(buf, 0);
        MessageWriter { buf, start }
    }

    /// Writes the final length into the header; returns the message's length.
    pub fn finish(self) -> usize {
        let len = self.buf.len() - self.start;
        self.buf[self.start + 1..self.start + 4].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
        len
    }

    /// Writes an AVP whose data is `data`.
    pub fn bytes(&mut self, code: AvpCode, data: &[u8]) {
        avp::put_header(
            self.buf,
            code.code,
            flags_for(code),
            code.vendor_id,
            data.len(),
        );
        self.buf.put_slice(data);
        avp::put_padding(self.buf, data.len());
    }

    pub fn u32(&mut self, code: AvpCode, v: u32) {
        self.bytes(code, &v.to_be_bytes());
    }
    pub fn u64(&mut self, code: AvpCode, v: u64) {
        self.bytes(code, &v.to_be_bytes());
    }
    pub fn i32(&mut self, code: AvpCode, v: i32) {
        self.bytes(code, &v.to_be_bytes());
    }
    pub fn i64(&mut self, code: AvpCode, v: i64) {
        self.bytes(code, &v.to_be_bytes());
    }
    pub fn utf8(&mut self, code: AvpCode, s: &str) {
        self.bytes(code, s.as_bytes());
    }
    pub fn identity(&mut self, code: AvpCode, s: &str) {
        self.bytes(code, s.as_bytes());
    }
    pub fn address(&mut self, code: AvpCode, a: &Address) {
        let mut tmp = BytesMut::with_capacity(18);
        a.encode(&mut tmp);
        self.bytes(code, &tmp);
    }

    /// Copies an AVP as decoded (echoing Session-Id, Proxy-Info, Failed-AVP contents).
    pub fn avp(&mut self, avp: &Avp<'_>) {
        avp.encode(self.buf);
    }

    /// Writes already-encoded AVPs.
    pub fn raw(&mut self, encoded: &[u8]) {
        self.buf.put_slice(encoded);
    }

    /// Opens a Grouped AVP; children follow until [`Self::end_group`].
    pub fn begin_group(&mut self, code: AvpCode) -> GroupMark {
        let mark = self.buf.len();
        avp::put_header(self.buf, code.code, flags_for(code), code.vendor_id, 0);
        GroupMark(mark)
    }

    /// Closes a Grouped AVP: back-patches its length (children are already padded).
    pub fn end_group(&mut self, mark: GroupMark) {
        let len = (self.buf.len() - mark.0) as u32;
        self.buf[mark.0 + 5..mark.0 + 8].copy_from_slice(&len.to_be_bytes()[1..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::avp as c;

    #[test]
    fn writer_table() {
        let mut buf = BytesMut::new();
        buf.put_slice(b"prior"); // another message already in the batch buffer
        let mut w = MessageWriter::new(&mut buf, &Header::request(280, 0, 0x11, 0x22));
        w.identity(c::ORIGIN_HOST, "a.b");
        let g = w.begin_group(c::VENDOR_SPECIFIC_APPLICATION_ID);
        w.u32(c::AUTH_APPLICATION_ID, 4);
        w.end_group(g);
        w.u32(c::VOLUME_QUOTA_THRESHOLD, 1);
        let len = w.finish();
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &b"prior"[..],
            &[1, 0, 0, 68, 0xc0, 0, 1, 0x18, 0, 0, 0, 0, 0, 0, 0, 0x11, 0, 0, 0, 0x22],
            &[0, 0, 1, 8, 0x40, 0, 0, 11, b'a', b'.', b'b', 0],
            &[0, 0, 1, 4, 0x40, 0, 0, 20, 0, 0, 1, 2, 0x40, 0, 0, 12, 0, 0, 0, 4],
            &[0, 0, 3, 0x65, 0xc0, 0, 0, 16, 0, 0, 0x28, 0xaf, 0, 0, 0, 1],
        ].concat();
        assert_eq!(len, 68);
        assert_eq!(&buf[..], &want[..]);
    }
}
