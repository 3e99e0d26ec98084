//! Cutting whole messages out of a byte stream (RFC 6733 §3): check the header first, then take
//! the frame. The checks here decide whether the stream can still be delimited.

use super::codes::ResultCode;
use super::header::{HEADER_LEN, VERSION};

/// Default cap on a message's length (configurable).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 64 * 1024;

/// A stream-level problem found in the header of the next message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Version is not 1 (5011). The rest of the stream cannot be trusted.
    UnsupportedVersion(u8),
    /// Length below 20 or above the cap (5015). The stream cannot be delimited.
    BadLength(u32),
    /// Length not a multiple of 4 (5015). The frame is delimited and can be skipped.
    Unaligned(u32),
}

impl FrameError {
    pub fn result_code(self) -> ResultCode {
        match self {
            FrameError::UnsupportedVersion(_) => ResultCode::UnsupportedVersion,
            FrameError::BadLength(_) | FrameError::Unaligned(_) => ResultCode::InvalidMessageLength,
        }
    }

    /// Whether the connection must be closed after answering.
    pub fn is_fatal(self) -> bool {
        !matches!(self, FrameError::Unaligned(_))
    }

    pub fn reason(self) -> &'static str {
        match self {
            FrameError::UnsupportedVersion(_) => "Diameter version is not 1",
            FrameError::BadLength(_) => {
                "message length below 20 octets or above the configured maximum"
            }
            FrameError::Unaligned(_) => "message length is not a multiple of 4",
        }
    }
}

/// Looks at the start of `buf`: `Ok(None)` while the header is incomplete, `Ok(Some(len))` when
/// a frame of `len` octets starts here (it may not be complete yet), or the reason it cannot.
pub fn check(buf: &[u8], max_len: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(FrameError::UnsupportedVersion(buf[0]));
    }
    let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]);
    if (len as usize) < HEADER_LEN || len as usize > max_len {
        return Err(FrameError::BadLength(len));
    }
    if len % 4 != 0 {
        return Err(FrameError::Unaligned(len));
    }
    Ok(Some(len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(version: u8, len: u32) -> Vec<u8> {
        let mut v = vec![version, (len >> 16) as u8, (len >> 8) as u8, len as u8];
        v.extend_from_slice(&[0x80, 0, 1, 1]);
        v.extend_from_slice(&[0; 12]);
        v
    }

    #[test]
    fn frame_checks() {
        assert_eq!(check(&hdr(1, 20)[..19], 64), Ok(None));
        assert_eq!(check(&hdr(1, 20), 64), Ok(Some(20)));
        assert_eq!(check(&hdr(1, 64), 64), Ok(Some(64)));
        assert_eq!(
            check(&hdr(2, 20), 64),
            Err(FrameError::UnsupportedVersion(2))
        );
        assert_eq!(check(&hdr(1, 12), 64), Err(FrameError::BadLength(12)));
        assert_eq!(check(&hdr(1, 68), 64), Err(FrameError::BadLength(68)));
        assert_eq!(check(&hdr(1, 22), 64), Err(FrameError::Unaligned(22)));
        assert!(FrameError::BadLength(1).is_fatal());
        assert!(!FrameError::Unaligned(22).is_fatal());
        assert_eq!(
            FrameError::UnsupportedVersion(2).result_code(),
            ResultCode::UnsupportedVersion
        );
    }
}
