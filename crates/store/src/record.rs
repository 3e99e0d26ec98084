//! The journal's record formats, versions 1 to 4. FROZEN: a record written by any version of
//! ocfd must be read the same way forever; changes need a new version number. A segment's
//! header names the version of all its records.
//!
//! ```text
//! record  = length:u32le  crc:u32le  body
//! body    = sequence:u64le  time:i64le  kind:u8  fields
//! length  = length of body in octets (18 .. max_body(version): 256 in version 1, 1 MiB in 2)
//! crc     = CRC-32 (IEEE, as crc32fast) of body
//! ```
//!
//! Fields by kind (all little-endian; `account` = tree:u32 node:u32; `unit` = u8: 0 octets,
//! 1 seconds, 2 events, 3 money; `data` = every remaining octet of the body):
//!
//! | kind | version | name | fields |
//! |---|---|---|---|
//! | 1 | 1, 2 | Reserve | reservation:u64 account unit amount:u64 expires:i64 |
//! | 2 | 1, 2 | Commit | reservation:u64 account unit reserved:u64 used:u64 |
//! | 3 | 1, 2 | CommitRated | reservation:u64 account reserved:u64 octets:u64 price_num:u128 price_den:u128 |
//! | 4 | 1, 2 | Release | reservation:u64 account unit amount:u64 |
//! | 5 | 1, 2 | Refund | account unit amount:u64 |
//! | 6 | 2 | Session | data: a credit-control session's state after a request (`charging::session`) |
//! | 7 | 2 | Usage | data: one usage record, a JSON object (`docs/durability.md`) |
//! | 8 | 2 | SessionClosed | data: the Session-Id of a session supervision closed |
//! | 9 | 3 | Threshold | account unit period:u8 period_end:i64 default:u8 bit:u8 level_kind:u8 level:u64 used:u64 limit:u64 data: the tenant and node path, UTF-8 |
//! | 10 | 3 | Event | data: one event for the outbox, a JSON object |
//! | 9 | 4 | Threshold | as in version 3, with `class_length:u8 class` (UTF-8: the service class of the limit, empty for a general one) between `limit` and the path |
//! | 11 | 4 | Classes | class:u32 class:u32 |
//!
//! Version 3 is version 2 with kinds 9 (a threshold that fired: `period` 0 day, 1 month,
//! 2 total; `level_kind` 1 a percentage of the limit, 2 an amount) and 10 (another event).
//! Version 4 is version 3 with kind 9 naming the class of its limit, and kind 11: the
//! service classes (0: none) of the record that follows it, a Reserve, Commit, CommitRated or
//! Release, so that the class
//! limits (service allowances, roaming caps) that counted it count it again on replay. A
//! record without one before it belongs to no class; one with nothing after it (the end of
//! the journal) means nothing.
//!
//! The journal keeps kinds 6 to 8 as opaque octets; the charging layer, which writes them,
//! reads them back. `time` is the `now` the operation ran with, so replay reproduces period
//! boundaries.

use bytes::Buf;

pub use ocf_charging::ops::{Account, Fired, FiredLevel, MAX_UNIT, Op, UnitCode};

/// Header octets before the body: length and CRC.
pub(crate) const FRAME_HEADER: usize = 8;
/// Body octets common to every record: sequence, time, kind.
pub(crate) const BODY_HEADER: usize = 17;
/// Largest body of a version 1 record; anything longer is corruption, not a record.
pub(crate) const MAX_BODY_V1: usize = 256;
/// Largest body of a version 2 record (a session's state with its last answer).
pub(crate) const MAX_BODY_V2: usize = 1 << 20;
/// The version this build writes.
pub const VERSION: u32 = 4;

/// The largest body a record of `version` may have (0: an unknown version).
pub(crate) fn max_body(version: u32) -> usize {
    match version {
        1 => MAX_BODY_V1,
        2..=4 => MAX_BODY_V2,
        _ => 0,
    }
}

/// A record: an operation, its sequence number and the time it ran with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub sequence: u64,
    pub time: i64,
    pub op: Op,
}

struct Out<'a>(&'a mut Vec<u8>);

impl Out<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn account(&mut self, a: Account) {
        self.u32(a.tree);
        self.u32(a.node);
    }
}

/// Reads the fields of a record body.
struct In<'a>(&'a [u8]);

impl In<'_> {
    fn u8(&mut self) -> Option<u8> {
        self.0.try_get_u8().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.0.try_get_u32_le().ok()
    }
    fn u64(&mut self) -> Option<u64> {
        self.0.try_get_u64_le().ok()
    }
    fn i64(&mut self) -> Option<i64> {
        self.0.try_get_i64_le().ok()
    }
    fn u128(&mut self) -> Option<u128> {
        self.0.try_get_u128_le().ok()
    }
    fn account(&mut self) -> Option<Account> {
        Some(Account {
            tree: self.u32()?,
            node: self.u32()?,
        })
    }
    fn unit(&mut self) -> Option<UnitCode> {
        self.u8().filter(|u| *u <= MAX_UNIT)
    }
}

impl Record {
    /// Appends the framed record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER]);
        let mut o = Out(out);
        o.u64(self.sequence);
        o.i64(self.time);
        match &self.op {
            Op::Reserve {
                reservation,
                account,
                unit,
                amount,
                expires,
            } => {
                o.u8(1);
                o.u64(*reservation);
                o.account(*account);
                o.u8(*unit);
                o.u64(*amount);
                o.i64(*expires);
            }
            Op::Commit {
                reservation,
                account,
                unit,
                reserved,
                used,
            } => {
                o.u8(2);
                o.u64(*reservation);
                o.account(*account);
                o.u8(*unit);
                o.u64(*reserved);
                o.u64(*used);
            }
            Op::CommitRated {
                reservation,
                account,
                reserved,
                octets,
                price,
            } => {
                o.u8(3);
                o.u64(*reservation);
                o.account(*account);
                o.u64(*reserved);
                o.u64(*octets);
                o.u128(price.0);
                o.u128(price.1);
            }
            Op::Release {
                reservation,
                account,
                unit,
                amount,
            } => {
                o.u8(4);
                o.u64(*reservation);
                o.account(*account);
                o.u8(*unit);
                o.u64(*amount);
            }
            Op::Refund {
                account,
                unit,
                amount,
            } => {
                o.u8(5);
                o.account(*account);
                o.u8(*unit);
                o.u64(*amount);
            }
            Op::Session(data) | Op::Usage(data) | Op::SessionClosed(data) => {
                o.u8(match &self.op {
                    Op::Session(_) => 6,
                    Op::Usage(_) => 7,
                    _ => 8,
                });
                o.0.extend_from_slice(data);
            }
            Op::Event(data) => {
                o.u8(10);
                o.0.extend_from_slice(data);
            }
            Op::Classes([a, b]) => {
                o.u8(KIND_CLASSES);
                o.u32(*a);
                o.u32(*b);
            }
            Op::Threshold(f) => {
                o.u8(9);
                o.account(f.account);
                o.u8(f.unit);
                o.u8(f.period);
                o.i64(f.period_end);
                o.u8(u8::from(f.default));
                o.u8(f.bit);
                match f.level {
                    FiredLevel::Percent(p) => {
                        o.u8(1);
                        o.u64(u64::from(p));
                    }
                    FiredLevel::Amount(a) => {
                        o.u8(2);
                        o.u64(a);
                    }
                }
                o.u64(f.used);
                o.u64(f.limit);
                // Class names are checked names, far shorter than 255 octets.
                let class = &f.class.as_bytes()[..f.class.len().min(255)];
                o.u8(class.len() as u8);
                o.0.extend_from_slice(class);
                o.0.extend_from_slice(f.path.as_bytes());
            }
        }
        let body_len = out.len() - start - FRAME_HEADER;
        let crc = crc32fast::hash(&out[start + FRAME_HEADER..]);
        out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a body whose CRC has been checked. `None`: not a record of `version`.
    pub(crate) fn decode_body(body: &[u8], version: u32) -> Option<Record> {
        let mut i = In(body);
        let sequence = i.u64()?;
        let time = i.i64()?;
        let kind = i.u8()?;
        if version >= 3 && kind == 10 {
            let data = body.get(BODY_HEADER..)?.to_vec();
            return Some(Record {
                sequence,
                time,
                op: Op::Event(data),
            });
        }
        if version >= 2 && (6..=8).contains(&kind) {
            let data = body.get(BODY_HEADER..)?.to_vec();
            let op = match kind {
                6 => Op::Session(data),
                7 => Op::Usage(data),
                _ => Op::SessionClosed(data),
            };
            return Some(Record { sequence, time, op });
        }
        let op = match kind {
            1 => Op::Reserve {
                reservation: i.u64()?,
                account: i.account()?,
                unit: i.unit()?,
                amount: i.u64()?,
                expires: i.i64()?,
            },
            2 => Op::Commit {
                reservation: i.u64()?,
                account: i.account()?,
                unit: i.unit()?,
                reserved: i.u64()?,
                used: i.u64()?,
            },
            3 => Op::CommitRated {
                reservation: i.u64()?,
                account: i.account()?,
                reserved: i.u64()?,
                octets: i.u64()?,
                price: (i.u128()?, i.u128()?),
            },
            4 => Op::Release {
                reservation: i.u64()?,
                account: i.account()?,
                unit: i.unit()?,
                amount: i.u64()?,
            },
            5 => Op::Refund {
                account: i.account()?,
                unit: i.unit()?,
                amount: i.u64()?,
            },
            KIND_CLASSES if version >= 4 => Op::Classes([i.u32()?, i.u32()?]),
            9 if version >= 3 => {
                let account = i.account()?;
                let unit = i.unit()?;
                let period = i.u8().filter(|p| *p <= 2)?;
                let period_end = i.i64()?;
                let default = match i.u8()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                };
                let bit = i.u8().filter(|b| *b < 16)?;
                let level = match (i.u8()?, i.u64()?) {
                    (1, p @ 1..=100) => FiredLevel::Percent(p as u8),
                    (2, a) => FiredLevel::Amount(a),
                    _ => return None,
                };
                let used = i.u64()?;
                let limit = i.u64()?;
                let class = if version >= 4 {
                    let n = usize::from(i.u8()?);
                    let (c, rest) = i.0.split_at_checked(n)?;
                    i.0 = rest;
                    String::from_utf8(c.to_vec()).ok()?
                } else {
                    String::new()
                };
                let path = String::from_utf8(std::mem::take(&mut i.0).to_vec()).ok()?;
                Op::Threshold(Box::new(Fired {
                    account,
                    unit,
                    period,
                    period_end,
                    default,
                    bit,
                    level,
                    used,
                    limit,
                    path,
                    class,
                }))
            }
            _ => return None,
        };
        // Every octet must be accounted for.
        if !i.0.is_empty() {
            return None;
        }
        Some(Record { sequence, time, op })
    }
}

/// What the front of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A valid record and the octets it took.
    Record(Record, usize),
    /// Fewer octets than the record needs: a write that stopped part way (at the end of the
    /// last segment, a torn record).
    Incomplete,
    /// The octets are whole but wrong: a bad length, checksum or body.
    Corrupt(&'static str),
}

/// The length, sequence and kind of the whole record at the front of `buf`, without checking
/// or decoding it (`None`: not a whole record of `version`).
pub(crate) fn peek(buf: &[u8], version: u32) -> Option<(usize, u64, u8)> {
    let head = buf.first_chunk::<FRAME_HEADER>()?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(BODY_HEADER + 1..=max_body(version)).contains(&len) {
        return None;
    }
    let body = buf.get(FRAME_HEADER..FRAME_HEADER + len)?;
    let sequence = u64::from_le_bytes(body[..8].try_into().ok()?);
    Some((FRAME_HEADER + len, sequence, body[16]))
}

/// The kind number of usage records.
pub(crate) const KIND_USAGE: u8 = 7;
/// The kind number of thresholds that fired.
pub(crate) const KIND_THRESHOLD: u8 = 9;
/// The kind number of other events.
pub(crate) const KIND_EVENT: u8 = 10;
/// The kind number of the classes of the next record.
pub(crate) const KIND_CLASSES: u8 = 11;

/// Reads the record at the front of `buf`, in a segment of `version`.
pub fn next(buf: &[u8], version: u32) -> Next {
    let Some(head) = buf.first_chunk::<FRAME_HEADER>() else {
        return Next::Incomplete;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(BODY_HEADER + 1..=max_body(version)).contains(&len) {
        return Next::Corrupt("record length out of range");
    }
    let Some(body) = buf.get(FRAME_HEADER..FRAME_HEADER + len) else {
        return Next::Incomplete;
    };
    if crc32fast::hash(body) != crc {
        return Next::Corrupt("checksum mismatch");
    }
    match Record::decode_body(body, version) {
        Some(r) => Next::Record(r, FRAME_HEADER + len),
        None => Next::Corrupt("unknown record kind or bad fields"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: Account = Account { tree: 3, node: 77 };

    /// Frozen bytes: version 1 must decode these exactly, forever.
    #[test]
    fn frozen_encoding() {
        let r = Record {
            sequence: 1,
            time: 2,
            op: Op::Commit {
                reservation: 9,
                account: A,
                unit: 0,
                reserved: 10,
                used: 4,
            },
        };
        let mut out = Vec::new();
        r.encode(&mut out);
        #[rustfmt::skip]
        let body: &[u8] = &[
            1, 0, 0, 0, 0, 0, 0, 0,   2, 0, 0, 0, 0, 0, 0, 0,   2,
            9, 0, 0, 0, 0, 0, 0, 0,   3, 0, 0, 0, 77, 0, 0, 0,  0,
            10, 0, 0, 0, 0, 0, 0, 0,  4, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(&out[8..], body);
        assert_eq!(&out[..4], &(body.len() as u32).to_le_bytes());
        assert_eq!(&out[4..8], &crc32fast::hash(body).to_le_bytes());
        assert_eq!(next(&out, 1), Next::Record(r.clone(), out.len()));
        assert_eq!(next(&out, 2), Next::Record(r, out.len()));
    }

    /// Frozen bytes of a version 2 kind: opaque data after the kind; version 1 refuses it.
    #[test]
    fn frozen_encoding_of_version_2_kinds() {
        let r = Record {
            sequence: 3,
            time: 4,
            op: Op::Usage(b"{}".to_vec()),
        };
        let mut out = Vec::new();
        r.encode(&mut out);
        #[rustfmt::skip]
        let body: &[u8] = &[
            3, 0, 0, 0, 0, 0, 0, 0,   4, 0, 0, 0, 0, 0, 0, 0,   7,   b'{', b'}',
        ];
        assert_eq!(&out[8..], body);
        assert_eq!(next(&out, 2), Next::Record(r, out.len()));
        assert!(matches!(next(&out, 1), Next::Corrupt(_)));
        // A body past version 1's bound is a record only in version 2.
        let big = Record {
            sequence: 5,
            time: 6,
            op: Op::Session(vec![7; 1000]),
        };
        let mut out = Vec::new();
        big.encode(&mut out);
        assert_eq!(next(&out, 2), Next::Record(big, out.len()));
        assert!(matches!(next(&out, 1), Next::Corrupt(_)));
    }

    pub(super) fn arb_op() -> impl Strategy<Value = Op> {
        let acc = (any::<u32>(), any::<u32>()).prop_map(|(tree, node)| Account { tree, node });
        let unit = 0u8..=MAX_UNIT;
        prop_oneof![
            (
                any::<u64>(),
                acc.clone(),
                unit.clone(),
                any::<u64>(),
                any::<i64>()
            )
                .prop_map(|(reservation, account, unit, amount, expires)| {
                    Op::Reserve {
                        reservation,
                        account,
                        unit,
                        amount,
                        expires,
                    }
                }),
            (
                any::<u64>(),
                acc.clone(),
                unit.clone(),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(reservation, account, unit, reserved, used)| Op::Commit {
                    reservation,
                    account,
                    unit,
                    reserved,
                    used
                }),
            (
                any::<u64>(),
                acc.clone(),
                any::<u64>(),
                any::<u64>(),
                any::<u128>(),
                any::<u128>()
            )
                .prop_map(|(reservation, account, reserved, octets, n, d)| {
                    Op::CommitRated {
                        reservation,
                        account,
                        reserved,
                        octets,
                        price: (n, d),
                    }
                }),
            (any::<u64>(), acc.clone(), unit.clone(), any::<u64>()).prop_map(
                |(reservation, account, unit, amount)| Op::Release {
                    reservation,
                    account,
                    unit,
                    amount
                }
            ),
            (acc, unit, any::<u64>()).prop_map(|(account, unit, amount)| Op::Refund {
                account,
                unit,
                amount
            }),
            proptest::collection::vec(any::<u8>(), 1..600).prop_map(Op::Session),
            proptest::collection::vec(any::<u8>(), 1..300).prop_map(Op::Usage),
            proptest::collection::vec(any::<u8>(), 1..100).prop_map(Op::SessionClosed),
            proptest::collection::vec(any::<u8>(), 1..200).prop_map(Op::Event),
            (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Op::Classes([a, b])),
            (
                acc_fired(),
                (
                    0u8..=MAX_UNIT,
                    0u8..=2,
                    any::<i64>(),
                    any::<bool>(),
                    0u8..16
                ),
                prop_oneof![
                    (1u8..=100).prop_map(FiredLevel::Percent),
                    any::<u64>().prop_map(FiredLevel::Amount)
                ],
                (
                    any::<u64>(),
                    any::<u64>(),
                    "[a-z0-9/ é]{0,40}",
                    "[a-z0-9-]{0,20}"
                )
            )
                .prop_map(
                    |(
                        account,
                        (unit, period, period_end, default, bit),
                        level,
                        (used, limit, path, class),
                    )| {
                        Op::Threshold(Box::new(Fired {
                            account,
                            unit,
                            period,
                            period_end,
                            default,
                            bit,
                            level,
                            used,
                            limit,
                            path,
                            class,
                        }))
                    }
                ),
        ]
    }

    fn acc_fired() -> impl Strategy<Value = Account> {
        (any::<u32>(), any::<u32>()).prop_map(|(tree, node)| Account { tree, node })
    }

    /// A body framed as a record: length, CRC, body.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Frozen bytes of version 3's kind 9, and of version 4's with the class of its limit;
    /// versions 1 and 2 refuse it.
    #[test]
    fn frozen_encoding_of_version_3_kinds() {
        let mut fired = Fired {
            account: A,
            unit: 0,
            period: 1,
            period_end: 9,
            default: true,
            bit: 1,
            level: FiredLevel::Percent(80),
            used: 800,
            limit: 1000,
            path: "a/b".into(),
            class: String::new(),
        };
        #[rustfmt::skip]
        let v3: &[u8] = &[
            7, 0, 0, 0, 0, 0, 0, 0,   8, 0, 0, 0, 0, 0, 0, 0,   9,
            3, 0, 0, 0, 77, 0, 0, 0,  0,  1,  9, 0, 0, 0, 0, 0, 0, 0,  1,  1,
            1,  80, 0, 0, 0, 0, 0, 0, 0,
            0x20, 3, 0, 0, 0, 0, 0, 0,  0xe8, 3, 0, 0, 0, 0, 0, 0,  b'a', b'/', b'b',
        ];
        let r = Record {
            sequence: 7,
            time: 8,
            op: Op::Threshold(Box::new(fired.clone())),
        };
        let old = framed(v3);
        assert_eq!(next(&old, 3), Next::Record(r, old.len()));
        assert!(matches!(next(&old, 2), Next::Corrupt(_)));
        assert!(matches!(next(&old, 1), Next::Corrupt(_)));
        // Version 4: the class between the limit and the path.
        fired.class = "roaming".into();
        let r = Record {
            sequence: 7,
            time: 8,
            op: Op::Threshold(Box::new(fired)),
        };
        let mut out = Vec::new();
        r.encode(&mut out);
        let mut v4 = v3[..v3.len() - 3].to_vec();
        v4.push(7);
        v4.extend_from_slice(b"roaming");
        v4.extend_from_slice(b"a/b");
        assert_eq!(&out[8..], &v4[..]);
        assert_eq!(next(&out, 4), Next::Record(r, out.len()));
        let e = Record {
            sequence: 9,
            time: 10,
            op: Op::Event(b"{}".to_vec()),
        };
        let mut out = Vec::new();
        e.encode(&mut out);
        #[rustfmt::skip]
        let body: &[u8] = &[
            9, 0, 0, 0, 0, 0, 0, 0,   10, 0, 0, 0, 0, 0, 0, 0,   10,   b'{', b'}',
        ];
        assert_eq!(&out[8..], body);
        assert_eq!(next(&out, 3), Next::Record(e, out.len()));
        assert!(matches!(next(&out, 2), Next::Corrupt(_)));
    }

    /// Frozen bytes of version 4's kind 11; earlier versions refuse it.
    #[test]
    fn frozen_encoding_of_version_4_kinds() {
        let r = Record {
            sequence: 3,
            time: 4,
            op: Op::Classes([0x0102_0304, 0]),
        };
        let mut out = Vec::new();
        r.encode(&mut out);
        #[rustfmt::skip]
        let body: &[u8] = &[
            3, 0, 0, 0, 0, 0, 0, 0,   4, 0, 0, 0, 0, 0, 0, 0,   11,
            4, 3, 2, 1,   0, 0, 0, 0,
        ];
        assert_eq!(&out[8..], body);
        assert_eq!(next(&out, 4), Next::Record(r, out.len()));
        for v in 1..=3 {
            assert!(matches!(next(&out, v), Next::Corrupt(_)), "version {v}");
        }
    }

    proptest! {
        #[test]
        fn records_round_trip(sequence: u64, time: i64, op in arb_op()) {
            let r = Record { sequence, time, op };
            let mut out = Vec::new();
            r.encode(&mut out);
            let v4 = matches!(r.op, Op::Classes(_) | Op::Threshold(_));
            let v3 = v4 || matches!(r.op, Op::Event(_));
            let v1 = !v3 && !matches!(r.op, Op::Session(_) | Op::Usage(_) | Op::SessionClosed(_));
            if v1 {
                prop_assert_eq!(next(&out, 1), Next::Record(r.clone(), out.len()));
            }
            if !v3 {
                prop_assert_eq!(next(&out, 2), Next::Record(r.clone(), out.len()));
            }
            if !v4 {
                prop_assert_eq!(next(&out, 3), Next::Record(r.clone(), out.len()));
            }
            prop_assert_eq!(next(&out, 4), Next::Record(r, out.len()));
            // Every proper prefix is incomplete, never a record and never a panic.
            for cut in 0..out.len() {
                prop_assert_eq!(next(&out[..cut], 4), Next::Incomplete);
            }
        }

        #[test]
        fn any_flipped_bit_is_caught(op in arb_op(), bit in 0usize..1000) {
            let r = Record { sequence: 5, time: 6, op };
            let mut out = Vec::new();
            r.encode(&mut out);
            let bit = bit % (out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            match next(&out, 4) {
                Next::Record(got, _) => prop_assert!(false, "flipped bit {} accepted as {:?}", bit, got),
                Next::Incomplete | Next::Corrupt(_) => {}
            }
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = next(&data, 1);
            let _ = next(&data, 2);
            let _ = next(&data, 3);
        }
    }
}
