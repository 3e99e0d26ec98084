//! LEB128 and zigzag varints (session state), hand-written because `bytes` has no varints.

use bytes::Buf;

/// Reads an unsigned LEB128 varint (at most 10 octets); `None` if cut short or too long.
pub(crate) fn get_varint(buf: &mut impl Buf) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = buf.try_get_u8().ok()?;
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Reads a signed varint, zigzag-encoded.
pub(crate) fn get_varint_i64(buf: &mut impl Buf) -> Option<i64> {
    get_varint(buf).map(|v| ((v >> 1) as i64) ^ -((v & 1) as i64))
}

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-encoded as a varint.
pub(crate) fn put_varint_i64(out: &mut Vec<u8>, v: i64) {
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
            let mut r = &out[..];
            assert_eq!(get_varint(&mut r), Some(v), "{v}");
            assert!(r.is_empty(), "{v}");
            // Cut short: never a value.
            assert_eq!(get_varint(&mut &out[..out.len() - 1]), None, "{v}");
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
            assert_eq!(get_varint_i64(&mut &out[..]), Some(v), "{v}");
        }
        assert_eq!(put_len(1_795_000_000), 5);
        // Eleven continuation octets are not a varint.
        assert_eq!(get_varint(&mut &[0xff; 11][..]), None);
        // Nor is a tenth octet carrying more than the 64th bit.
        let mut too_big = [0xff; 10];
        too_big[9] = 0x02;
        assert_eq!(get_varint(&mut &too_big[..]), None);
    }

    fn put_len(v: u64) -> usize {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out.len()
    }
}
