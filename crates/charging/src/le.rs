//! Little-endian reading of the journal's and snapshots' binary formats: each read takes the
//! octets it needs or fails, never panics.

/// A cursor over little-endian fields.
pub struct LeReader<'a>(&'a [u8]);

impl<'a> LeReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        LeReader(data)
    }

    /// Whether every octet has been read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    pub fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }
    pub fn u128(&mut self) -> Option<u128> {
        self.take().map(u128::from_le_bytes)
    }

    /// An unsigned LEB128 varint (at most 10 octets).
    pub fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return None;
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A signed varint, zigzag-encoded.
    pub fn varint_i64(&mut self) -> Option<i64> {
        self.varint().map(|v| ((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// The next `n` octets as they are.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(s)
    }

    /// A string written as a u16 length and UTF-8 octets.
    pub fn str(&mut self) -> Option<String> {
        let n = usize::from(self.u16()?);
        if self.0.len() < n {
            return None;
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8(s.to_vec()).ok()
    }
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-encoded as a varint.
pub fn put_varint_i64(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

#[cfg(test)]
mod varint_tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_their_edges() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(LeReader::new(&out).varint(), Some(v), "{v}");
            // Cut short: never a value.
            assert_eq!(LeReader::new(&out[..out.len() - 1]).varint(), None, "{v}");
        }
        for v in [
            0i64,
            -1,
            1,
            i64::MIN,
            i64::MAX,
            1_795_000_000,
            -1_795_000_000,
        ] {
            let mut out = Vec::new();
            put_varint_i64(&mut out, v);
            assert_eq!(LeReader::new(&out).varint_i64(), Some(v), "{v}");
        }
        assert_eq!(put_len(1_795_000_000), 5);
        // Eleven continuation octets are not a varint.
        assert_eq!(LeReader::new(&[0xff; 11]).varint(), None);
    }

    fn put_len(v: u64) -> usize {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out.len()
    }
}
