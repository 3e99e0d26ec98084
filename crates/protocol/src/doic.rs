//! Diameter Overload Indication Conveyance (RFC 7683): what a request announces in
//! OC-Supported-Features, the overload report (OC-OLR) an answer carries, and appending these
//! to an answer already written. Only the loss algorithm (OLR_DEFAULT_ALGO) exists here; the
//! reporting and reacting logic (when to report, how much to abate) is the caller's.

use bytes::{BufMut, BytesMut};

use super::avp::{Avp, AvpIter};
use super::codes::avp as c;
use super::encode::MessageWriter;
use super::header::{HEADER_LEN, Header};

/// OC-Feature-Vector bit of the loss abatement algorithm (RFC 7683 §7.3).
pub const OLR_DEFAULT_ALGO: u64 = 0x1;

/// OC-Report-Type (RFC 7683 §7.6).
pub const HOST_REPORT: u32 = 0;
pub const REALM_REPORT: u32 = 1;

/// The largest OC-Validity-Duration a report may carry, in seconds (RFC 7683 §7.4).
pub const MAX_VALIDITY_S: u32 = 86_400;
/// What OC-Validity-Duration means when it is absent, in seconds (RFC 7683 §7.4).
pub const DEFAULT_VALIDITY_S: u32 = 30;

/// One overload report, as sent or received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Olr {
    pub sequence: u64,
    pub report_type: u32,
    /// Share of the traffic to abate, 0 to 100.
    pub reduction: u32,
    /// Seconds the report holds; 0 ends it.
    pub validity_s: u32,
}

/// The OC-Feature-Vector of a top-level OC-Supported-Features among `avps`: None if there is
/// none (the peer does not support DOIC). Without a vector only the loss algorithm is meant
/// (RFC 7683 §7.2); a vector that does not decode counts as none of the algorithms.
pub fn announced<'a>(avps: impl IntoIterator<Item = Avp<'a>>) -> Option<u64> {
    let sf = avps.into_iter().find(|a| a.is(c::OC_SUPPORTED_FEATURES))?;
    let vector = match sf.children().find(|a| a.is(c::OC_FEATURE_VECTOR)) {
        Some(v) => v.u64().unwrap_or(0),
        None => OLR_DEFAULT_ALGO,
    };
    Some(vector)
}

/// Whether a whole request frame announces the loss algorithm (a cheap scan of its top-level
/// AVPs, for requests refused before they are decoded).
pub fn frame_announces_loss(frame: &[u8]) -> bool {
    frame.len() > HEADER_LEN
        && announced(AvpIter::new(&frame[HEADER_LEN..])).is_some_and(|v| v & OLR_DEFAULT_ALGO != 0)
}

/// The OC-OLR among an answer's top-level AVPs, if it has a well-formed one.
pub fn olr<'a>(avps: impl IntoIterator<Item = Avp<'a>>) -> Option<Olr> {
    let o = avps.into_iter().find(|a| a.is(c::OC_OLR))?;
    let (mut sequence, mut report_type) = (None, None);
    let (mut reduction, mut validity_s) = (0, DEFAULT_VALIDITY_S);
    for a in o.children() {
        if a.is(c::OC_SEQUENCE_NUMBER) {
            sequence = a.u64().ok();
        } else if a.is(c::OC_REPORT_TYPE) {
            report_type = a.u32().ok();
        } else if a.is(c::OC_REDUCTION_PERCENTAGE) {
            reduction = a.u32().ok()?.min(100);
        } else if a.is(c::OC_VALIDITY_DURATION) {
            validity_s = a.u32().ok()?.min(MAX_VALIDITY_S);
        }
    }
    Some(Olr {
        sequence: sequence?,
        report_type: report_type?,
        reduction,
        validity_s,
    })
}

/// Encodes OC-Supported-Features with `vector` and, if given, an OC-OLR: the AVPs a reporting
/// node adds to its answers, or a reacting node to its requests.
pub fn encode(vector: u64, olr: Option<&Olr>) -> BytesMut {
    // A throwaway header gives the writer somewhere to start; only the AVPs are kept.
    let mut buf = BytesMut::with_capacity(HEADER_LEN + 96);
    let mut w = MessageWriter::new(&mut buf, &Header::request(0, 0, 0, 0));
    let g = w.begin_group(c::OC_SUPPORTED_FEATURES);
    w.u64(c::OC_FEATURE_VECTOR, vector);
    w.end_group(g);
    if let Some(o) = olr {
        let g = w.begin_group(c::OC_OLR);
        w.u64(c::OC_SEQUENCE_NUMBER, o.sequence);
        w.u32(c::OC_REPORT_TYPE, o.report_type);
        w.u32(c::OC_REDUCTION_PERCENTAGE, o.reduction.min(100));
        w.u32(c::OC_VALIDITY_DURATION, o.validity_s.min(MAX_VALIDITY_S));
        w.end_group(g);
    }
    w.finish();
    buf.split_off(HEADER_LEN)
}

/// Appends already-encoded AVPs to the message that starts at `start` in `out` and is the
/// last one there, and fixes its length. False (nothing changed) if `out` does not hold one
/// whole message from `start`.
pub fn append(out: &mut BytesMut, start: usize, avps: &[u8]) -> bool {
    let Some(head) = out.get(start..start + HEADER_LEN) else {
        return false;
    };
    let len = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
    let new_len = len + avps.len();
    if start + len != out.len() || new_len >= 1 << 24 {
        return false;
    }
    out.put_slice(avps);
    out[start + 1..start + 4].copy_from_slice(&(new_len as u32).to_be_bytes()[1..]);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn message_with(avps: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        out.put_slice(b"an earlier answer");
        let start = out.len();
        let mut w = MessageWriter::new(&mut out, &Header::request(272, 4, 7, 9));
        w.utf8(c::SESSION_ID, "s;1");
        w.finish();
        assert!(append(&mut out, start, avps));
        out.split_off(start)
    }

    #[test]
    fn a_report_appended_to_an_answer_decodes_back() {
        let report = Olr {
            sequence: 1_764_000_000_123,
            report_type: HOST_REPORT,
            reduction: 37,
            validity_s: 10,
        };
        let m = Message::decode(message_with(&encode(OLR_DEFAULT_ALGO, Some(&report))).freeze())
            .unwrap();
        assert_eq!(announced(m.avps()), Some(OLR_DEFAULT_ALGO));
        assert_eq!(olr(m.avps()), Some(report));
        assert!(frame_announces_loss(&m.to_bytes()));
        // Out-of-range values are clamped, not trusted.
        let wild = Olr {
            reduction: 250,
            validity_s: u32::MAX,
            ..report
        };
        let m = Message::decode(message_with(&encode(0, Some(&wild))).freeze()).unwrap();
        let got = olr(m.avps()).unwrap();
        assert_eq!((got.reduction, got.validity_s), (100, MAX_VALIDITY_S));
        assert!(!frame_announces_loss(&m.to_bytes()), "vector 0");
        // OC-Supported-Features without a vector: the loss algorithm.
        let mut buf = BytesMut::new();
        let mut w = MessageWriter::new(&mut buf, &Header::request(272, 4, 7, 9));
        let g = w.begin_group(c::OC_SUPPORTED_FEATURES);
        w.end_group(g);
        w.finish();
        assert!(frame_announces_loss(&buf));
    }

    #[test]
    fn without_doic_nothing_is_found_and_a_partial_buffer_is_left_alone() {
        let m = Message::decode(message_with(&[]).freeze()).unwrap();
        assert_eq!(announced(m.avps()), None);
        assert_eq!(olr(m.avps()), None);
        assert!(!frame_announces_loss(&m.to_bytes()));
        assert!(!frame_announces_loss(&[1, 0, 0]));
        let mut out = BytesMut::from(&m.to_bytes()[..]);
        out.truncate(out.len() - 4);
        let before = out.clone();
        assert!(
            !append(&mut out, 0, &encode(1, None)),
            "not a whole message"
        );
        assert!(
            !append(&mut out, 5000, &encode(1, None)),
            "start out of range"
        );
        assert_eq!(out, before);
    }

    #[test]
    fn an_olr_without_sequence_or_type_is_ignored() {
        let mut buf = BytesMut::new();
        let mut w = MessageWriter::new(&mut buf, &Header::request(272, 4, 7, 9));
        let g = w.begin_group(c::OC_OLR);
        w.u32(c::OC_REDUCTION_PERCENTAGE, 50);
        w.end_group(g);
        w.finish();
        let m = Message::decode(buf.freeze()).unwrap();
        assert_eq!(olr(m.avps()), None);
    }
}
