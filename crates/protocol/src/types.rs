//! AVP data formats (RFC 6733 §4.2 basic, §4.3 derived): decoding from an AVP's data and
//! encoding into a buffer. Decoding errors carry the Result-Code the RFC assigns: a wrong length
//! for a fixed-size type is 5014 INVALID_AVP_LENGTH, a value that cannot be valid is
//! 5004 INVALID_AVP_VALUE.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};

use super::codes::ResultCode;

/// The data formats a dictionary can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AvpType {
    OctetString,
    Integer32,
    Integer64,
    Unsigned32,
    Unsigned64,
    Float32,
    Float64,
    Grouped,
    Address,
    Time,
    UTF8String,
    DiameterIdentity,
    DiameterURI,
    Enumerated,
    IPFilterRule,
}

impl AvpType {
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "OctetString" => Self::OctetString,
            "Integer32" => Self::Integer32,
            "Integer64" => Self::Integer64,
            "Unsigned32" => Self::Unsigned32,
            "Unsigned64" => Self::Unsigned64,
            "Float32" => Self::Float32,
            "Float64" => Self::Float64,
            "Grouped" => Self::Grouped,
            "Address" => Self::Address,
            "Time" => Self::Time,
            "UTF8String" => Self::UTF8String,
            "DiameterIdentity" => Self::DiameterIdentity,
            "DiameterURI" => Self::DiameterURI,
            "Enumerated" => Self::Enumerated,
            "IPFilterRule" => Self::IPFilterRule,
            _ => return None,
        })
    }

    /// Fixed data length, for the types that have one.
    pub(crate) fn fixed_len(self) -> Option<usize> {
        match self {
            Self::Integer32 | Self::Unsigned32 | Self::Float32 | Self::Time | Self::Enumerated => {
                Some(4)
            }
            Self::Integer64 | Self::Unsigned64 | Self::Float64 => Some(8),
            _ => None,
        }
    }
}

/// Why data could not be read as its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeError {
    /// 5014: the length does not fit the type.
    Length,
    /// 5004: the octets are not a valid value of the type.
    Value(&'static str),
}

impl TypeError {
    pub fn result_code(self) -> ResultCode {
        match self {
            TypeError::Length => ResultCode::InvalidAvpLength,
            TypeError::Value(_) => ResultCode::InvalidAvpValue,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            TypeError::Length => "AVP length does not fit its data type",
            TypeError::Value(why) => why,
        }
    }
}

fn fixed<const N: usize>(data: &[u8]) -> Result<[u8; N], TypeError> {
    data.try_into().map_err(|_| TypeError::Length)
}

pub(crate) fn decode_u32(data: &[u8]) -> Result<u32, TypeError> {
    fixed::<4>(data).map(u32::from_be_bytes)
}
pub(crate) fn decode_u64(data: &[u8]) -> Result<u64, TypeError> {
    fixed::<8>(data).map(u64::from_be_bytes)
}
pub(crate) fn decode_i32(data: &[u8]) -> Result<i32, TypeError> {
    fixed::<4>(data).map(i32::from_be_bytes)
}
pub fn decode_i64(data: &[u8]) -> Result<i64, TypeError> {
    fixed::<8>(data).map(i64::from_be_bytes)
}
pub(crate) fn decode_f32(data: &[u8]) -> Result<f32, TypeError> {
    fixed::<4>(data).map(f32::from_be_bytes)
}
pub(crate) fn decode_f64(data: &[u8]) -> Result<f64, TypeError> {
    fixed::<8>(data).map(f64::from_be_bytes)
}

/// UTF8String (RFC 6733 §4.3.1).
pub(crate) fn decode_utf8(data: &[u8]) -> Result<&str, TypeError> {
    std::str::from_utf8(data).map_err(|_| TypeError::Value("UTF8String is not valid UTF-8"))
}

/// DiameterIdentity (RFC 6733 §4.3.1): an FQDN or realm, in ASCII (IDNs are punycoded).
pub fn decode_identity(data: &[u8]) -> Result<&str, TypeError> {
    if data.is_empty() {
        return Err(TypeError::Value("DiameterIdentity is empty"));
    }
    if !data
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err(TypeError::Value("DiameterIdentity is not an FQDN"));
    }
    // Checked ASCII above, so this cannot fail; map anyway rather than unwrap.
    std::str::from_utf8(data).map_err(|_| TypeError::Value("DiameterIdentity is not an FQDN"))
}

/// Address (RFC 6733 §4.3.1): a 2-octet IANA address family, then the address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Ip(IpAddr),
    /// Another address family (e.g. 8 = E.164), kept as octets.
    Other(u16, Vec<u8>),
}

impl Address {
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Address::Ip(IpAddr::V4(a)) => {
                out.put_u16(1);
                out.put_slice(&a.octets());
            }
            Address::Ip(IpAddr::V6(a)) => {
                out.put_u16(2);
                out.put_slice(&a.octets());
            }
            Address::Other(family, data) => {
                out.put_u16(*family);
                out.put_slice(data);
            }
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => write!(f, "{ip}"),
            Address::Other(family, data) => write!(f, "family {family}: {}", hex(data)),
        }
    }
}

pub(crate) fn decode_address(data: &[u8]) -> Result<Address, TypeError> {
    if data.len() < 2 {
        return Err(TypeError::Length);
    }
    let family = u16::from_be_bytes([data[0], data[1]]);
    let rest = &data[2..];
    match family {
        1 => Ok(Address::Ip(IpAddr::V4(Ipv4Addr::from(fixed::<4>(rest)?)))),
        2 => Ok(Address::Ip(IpAddr::V6(Ipv6Addr::from(fixed::<16>(rest)?)))),
        0 | 65535 => Err(TypeError::Value("Address family is reserved")),
        _ => Ok(Address::Other(family, rest.to_vec())),
    }
}

/// Seconds between 1900-01-01 (NTP era 0) and 1970-01-01.
const NTP_UNIX_OFFSET: i64 = 2_208_988_800;

/// Time (RFC 6733 §4.3.1): NTP seconds. Values with the top bit clear are in NTP era 1
/// (from 2036-02-07 06:28:16 UTC), as RFC 4330 §3 extends the range to 2104.
pub(crate) fn time_to_unix(ntp: u32) -> i64 {
    if ntp & 0x8000_0000 != 0 {
        i64::from(ntp) - NTP_UNIX_OFFSET
    } else {
        i64::from(ntp) + (1i64 << 32) - NTP_UNIX_OFFSET
    }
}

/// The Time value for a Unix time; `None` outside 1968-01-20 .. 2104-02-26, which Time cannot hold.
pub fn unix_to_time(unix: i64) -> Option<u32> {
    let ntp = unix + NTP_UNIX_OFFSET;
    let lower = 1i64 << 31; // 1968-01-20, start of the era-0 half
    if (lower..1i64 << 32).contains(&ntp) {
        u32::try_from(ntp).ok()
    } else if (1i64 << 32..(1i64 << 32) + lower).contains(&ntp) {
        u32::try_from(ntp - (1i64 << 32)).ok()
    } else {
        None
    }
}

/// DiameterURI (RFC 6733 §4.3.1):
/// `aaa[s]://FQDN[:port][;transport=tcp|sctp|udp][;protocol=diameter|radius|tacacs+]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiameterUri {
    pub secure: bool,
    pub fqdn: String,
    pub port: Option<u16>,
    pub transport: Option<String>,
    pub protocol: Option<String>,
}

pub(crate) fn decode_uri(data: &[u8]) -> Result<DiameterUri, TypeError> {
    const BAD: TypeError = TypeError::Value("DiameterURI is not aaa:// or aaas:// with an FQDN");
    let s = std::str::from_utf8(data).map_err(|_| BAD)?;
    let (secure, rest) = if let Some(r) = s.strip_prefix("aaas://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("aaa://") {
        (false, r)
    } else {
        return Err(BAD);
    };
    let mut parts = rest.split(';');
    let authority = parts.next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            Some(
                p.parse::<u16>()
                    .map_err(|_| TypeError::Value("DiameterURI port is not a number"))?,
            ),
        ),
        None => (authority, None),
    };
    decode_identity(host.as_bytes()).map_err(|_| BAD)?;
    let mut uri = DiameterUri {
        secure,
        fqdn: host.to_owned(),
        port,
        transport: None,
        protocol: None,
    };
    for param in parts {
        match param.split_once('=') {
            Some(("transport", t @ ("tcp" | "sctp" | "udp"))) => uri.transport = Some(t.to_owned()),
            Some(("protocol", p @ ("diameter" | "radius" | "tacacs+"))) => {
                uri.protocol = Some(p.to_owned())
            }
            _ => return Err(TypeError::Value("DiameterURI has an unknown parameter")),
        }
    }
    Ok(uri)
}

impl fmt::Display for DiameterUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}",
            if self.secure { "aaas" } else { "aaa" },
            self.fqdn
        )?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(t) = &self.transport {
            write!(f, ";transport={t}")?;
        }
        if let Some(p) = &self.protocol {
            write!(f, ";protocol={p}")?;
        }
        Ok(())
    }
}

/// IPFilterRule (RFC 6733 §4.3.1): `action dir proto from src to dst [options]`. Checked for its
/// grammar's skeleton; the rule itself is passed through as text.
pub fn decode_ipfilter(data: &[u8]) -> Result<&str, TypeError> {
    const BAD: TypeError =
        TypeError::Value("IPFilterRule is not 'permit|deny in|out proto from .. to ..'");
    let s = std::str::from_utf8(data).map_err(|_| BAD)?;
    let words: Vec<&str> = s.split_ascii_whitespace().collect();
    let ok = words.len() >= 7
        && matches!(words[0], "permit" | "deny")
        && matches!(words[1], "in" | "out")
        && (words[2] == "ip"
            || words[2].parse::<u8>().is_ok()
            || words[2].chars().all(|c| c.is_ascii_alphanumeric()))
        && words[3] == "from"
        && words[5..].contains(&"to");
    if ok { Ok(s) } else { Err(BAD) }
}

/// A typed value, for generic decoding (message dumps, round-trip tests).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    OctetString(Vec<u8>),
    Integer32(i32),
    Integer64(i64),
    Unsigned32(u32),
    Unsigned64(u64),
    Float32(f32),
    Float64(f64),
    /// Grouped data is kept raw here; children are decoded as AVPs.
    Grouped(Vec<u8>),
    Address(Address),
    Time(u32),
    UTF8String(String),
    DiameterIdentity(String),
    DiameterURI(DiameterUri),
    Enumerated(i32),
    IPFilterRule(String),
}

impl Value {
    pub fn decode(ty: AvpType, data: &[u8]) -> Result<Value, TypeError> {
        Ok(match ty {
            AvpType::OctetString => Value::OctetString(data.to_vec()),
            AvpType::Integer32 => Value::Integer32(decode_i32(data)?),
            AvpType::Integer64 => Value::Integer64(decode_i64(data)?),
            AvpType::Unsigned32 => Value::Unsigned32(decode_u32(data)?),
            AvpType::Unsigned64 => Value::Unsigned64(decode_u64(data)?),
            AvpType::Float32 => Value::Float32(decode_f32(data)?),
            AvpType::Float64 => Value::Float64(decode_f64(data)?),
            AvpType::Grouped => Value::Grouped(data.to_vec()),
            AvpType::Address => Value::Address(decode_address(data)?),
            AvpType::Time => Value::Time(decode_u32(data)?),
            AvpType::UTF8String => Value::UTF8String(decode_utf8(data)?.to_owned()),
            AvpType::DiameterIdentity => Value::DiameterIdentity(decode_identity(data)?.to_owned()),
            AvpType::DiameterURI => Value::DiameterURI(decode_uri(data)?),
            AvpType::Enumerated => Value::Enumerated(decode_i32(data)?),
            AvpType::IPFilterRule => Value::IPFilterRule(decode_ipfilter(data)?.to_owned()),
        })
    }

    /// Checks that `data` is a valid value of `ty` without building the value.
    pub fn check(ty: AvpType, data: &[u8]) -> Result<(), TypeError> {
        match ty {
            AvpType::OctetString | AvpType::Grouped => Ok(()),
            AvpType::UTF8String => decode_utf8(data).map(drop),
            AvpType::DiameterIdentity => decode_identity(data).map(drop),
            AvpType::DiameterURI => decode_uri(data).map(drop),
            AvpType::IPFilterRule => decode_ipfilter(data).map(drop),
            AvpType::Address => decode_address(data).map(drop),
            t => match t.fixed_len() {
                Some(n) if n == data.len() => Ok(()),
                _ => Err(TypeError::Length),
            },
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Value::OctetString(b) | Value::Grouped(b) => out.put_slice(b),
            Value::Integer32(v) | Value::Enumerated(v) => out.put_i32(*v),
            Value::Integer64(v) => out.put_i64(*v),
            Value::Unsigned32(v) | Value::Time(v) => out.put_u32(*v),
            Value::Unsigned64(v) => out.put_u64(*v),
            Value::Float32(v) => out.put_f32(*v),
            Value::Float64(v) => out.put_f64(*v),
            Value::Address(a) => a.encode(out),
            Value::UTF8String(s) | Value::DiameterIdentity(s) | Value::IPFilterRule(s) => {
                out.put_slice(s.as_bytes())
            }
            Value::DiameterURI(u) => out.put_slice(u.to_string().as_bytes()),
        }
    }
}

/// Lower-case hex without separators.
pub fn hex(data: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = BytesMut::new();
        v.encode(&mut out);
        out.to_vec()
    }

    /// Value/bytes table for every basic and derived type, checked both ways.
    #[test]
    fn value_table_both_ways() {
        let uri = DiameterUri {
            secure: false,
            fqdn: "ocs.example.net".into(),
            port: Some(3868),
            transport: Some("sctp".into()),
            protocol: Some("diameter".into()),
        };
        let table: Vec<(AvpType, Value, Vec<u8>)> = vec![
            (
                AvpType::OctetString,
                Value::OctetString(vec![0, 0xff, 7]),
                vec![0, 0xff, 7],
            ),
            (AvpType::OctetString, Value::OctetString(vec![]), vec![]),
            (
                AvpType::Integer32,
                Value::Integer32(-2),
                vec![0xff, 0xff, 0xff, 0xfe],
            ),
            (
                AvpType::Integer32,
                Value::Integer32(i32::MAX),
                vec![0x7f, 0xff, 0xff, 0xff],
            ),
            (AvpType::Integer64, Value::Integer64(-1), vec![0xff; 8]),
            (
                AvpType::Integer64,
                Value::Integer64(1 << 40),
                vec![0, 0, 1, 0, 0, 0, 0, 0],
            ),
            (
                AvpType::Unsigned32,
                Value::Unsigned32(2001),
                vec![0, 0, 7, 0xd1],
            ),
            (
                AvpType::Unsigned32,
                Value::Unsigned32(u32::MAX),
                vec![0xff; 4],
            ),
            (
                AvpType::Unsigned64,
                Value::Unsigned64(10 * 1024 * 1024),
                vec![0, 0, 0, 0, 0, 0xa0, 0, 0],
            ),
            (
                AvpType::Float32,
                Value::Float32(1.5),
                vec![0x3f, 0xc0, 0, 0],
            ),
            (
                AvpType::Float64,
                Value::Float64(-2.0),
                vec![0xc0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                AvpType::Grouped,
                Value::Grouped(vec![0, 0, 1, 10, 0x40, 0, 0, 12, 0, 0, 0x28, 0xaf]),
                vec![0, 0, 1, 10, 0x40, 0, 0, 12, 0, 0, 0x28, 0xaf],
            ),
            (
                AvpType::Address,
                Value::Address(Address::Ip("127.0.0.1".parse().unwrap())),
                vec![0, 1, 127, 0, 0, 1],
            ),
            (
                AvpType::Address,
                Value::Address(Address::Ip("::1".parse().unwrap())),
                [&[0u8, 2][..], &[0; 15], &[1]].concat(),
            ),
            (
                AvpType::Address,
                Value::Address(Address::Other(8, b"15551000000".to_vec())),
                [&[0u8, 8][..], b"15551000000"].concat(),
            ),
            (
                AvpType::Time,
                Value::Time(0xe8b2_5a00),
                vec![0xe8, 0xb2, 0x5a, 0x00],
            ),
            (
                AvpType::UTF8String,
                Value::UTF8String("grüß".into()),
                "grüß".as_bytes().to_vec(),
            ),
            (
                AvpType::DiameterIdentity,
                Value::DiameterIdentity("ocfd.localdomain".into()),
                b"ocfd.localdomain".to_vec(),
            ),
            (
                AvpType::DiameterURI,
                Value::DiameterURI(uri),
                b"aaa://ocs.example.net:3868;transport=sctp;protocol=diameter".to_vec(),
            ),
            (AvpType::Enumerated, Value::Enumerated(3), vec![0, 0, 0, 3]),
            (
                AvpType::IPFilterRule,
                Value::IPFilterRule("permit out ip from any to 10.0.0.1".into()),
                b"permit out ip from any to 10.0.0.1".to_vec(),
            ),
        ];
        for (ty, value, bytes) in table {
            assert_eq!(enc(&value), bytes, "encode {value:?}");
            let decoded = Value::decode(ty, &bytes).unwrap();
            assert_eq!(decoded, value, "decode {ty:?}");
            assert_eq!(Value::check(ty, &bytes), Ok(()));
        }
    }

    #[test]
    fn invalid_values_have_their_result_codes() {
        let table: Vec<(AvpType, Vec<u8>, ResultCode)> = vec![
            (
                AvpType::Unsigned32,
                vec![0, 0, 1],
                ResultCode::InvalidAvpLength,
            ),
            (
                AvpType::Unsigned64,
                vec![0; 4],
                ResultCode::InvalidAvpLength,
            ),
            (AvpType::Integer32, vec![0; 5], ResultCode::InvalidAvpLength),
            (AvpType::Float64, vec![0; 7], ResultCode::InvalidAvpLength),
            (AvpType::Time, vec![], ResultCode::InvalidAvpLength),
            (
                AvpType::Enumerated,
                vec![0; 2],
                ResultCode::InvalidAvpLength,
            ),
            (AvpType::Address, vec![0], ResultCode::InvalidAvpLength),
            (
                AvpType::Address,
                vec![0, 1, 127, 0, 0],
                ResultCode::InvalidAvpLength,
            ),
            (
                AvpType::Address,
                vec![0, 2, 0, 0],
                ResultCode::InvalidAvpLength,
            ),
            (
                AvpType::Address,
                vec![0, 0, 1, 2, 3, 4],
                ResultCode::InvalidAvpValue,
            ),
            (
                AvpType::UTF8String,
                vec![0xc3, 0x28],
                ResultCode::InvalidAvpValue,
            ),
            (
                AvpType::DiameterIdentity,
                vec![],
                ResultCode::InvalidAvpValue,
            ),
            (
                AvpType::DiameterIdentity,
                b"a b".to_vec(),
                ResultCode::InvalidAvpValue,
            ),
            (
                AvpType::DiameterURI,
                b"http://x".to_vec(),
                ResultCode::InvalidAvpValue,
            ),
            (
                AvpType::DiameterURI,
                b"aaa://x:99999".to_vec(),
                ResultCode::InvalidAvpValue,
            ),
            (
                AvpType::DiameterURI,
                b"aaa://x;transport=carrier-pigeon".to_vec(),
                ResultCode::InvalidAvpValue,
            ),
            (
                AvpType::IPFilterRule,
                b"allow everything".to_vec(),
                ResultCode::InvalidAvpValue,
            ),
        ];
        for (ty, bytes, code) in table {
            let err = Value::decode(ty, &bytes).unwrap_err();
            assert_eq!(err.result_code(), code, "{ty:?} {bytes:?}");
            assert_eq!(Value::check(ty, &bytes).unwrap_err().result_code(), code);
        }
    }

    #[test]
    fn time_eras() {
        // 1970-01-01 is NTP 2208988800 (era 0, top bit set).
        assert_eq!(time_to_unix(2_208_988_800), 0);
        assert_eq!(unix_to_time(0), Some(2_208_988_800));
        // 2036-02-07 06:28:16 UTC is NTP 0 of era 1.
        assert_eq!(time_to_unix(0), 2_085_978_496);
        assert_eq!(unix_to_time(2_085_978_496), Some(0));
        assert_eq!(unix_to_time(-10_000_000_000), None);
        // The range is 1968-01-20 03:14:08 .. 2104-02-26 09:42:24 (exclusive).
        assert_eq!(unix_to_time(-61_505_152), Some(0x8000_0000));
        assert_eq!(unix_to_time(-61_505_153), None);
        assert_eq!(unix_to_time(4_233_462_143), Some(0x7fff_ffff));
        assert_eq!(unix_to_time(4_233_462_144), None);
    }

    proptest! {
        #[test]
        fn time_round_trips(unix in -61_505_152i64..4_233_462_144) {
            let t = unix_to_time(unix).unwrap();
            prop_assert_eq!(time_to_unix(t), unix);
        }

        #[test]
        fn numbers_round_trip(a: u32, b: u64, c: i32, d: i64, e: f64) {
            for (ty, v) in [
                (AvpType::Unsigned32, Value::Unsigned32(a)),
                (AvpType::Unsigned64, Value::Unsigned64(b)),
                (AvpType::Integer32, Value::Integer32(c)),
                (AvpType::Integer64, Value::Integer64(d)),
            ] {
                prop_assert_eq!(Value::decode(ty, &enc(&v)).unwrap(), v);
            }
            let f = Value::decode(AvpType::Float64, &enc(&Value::Float64(e))).unwrap();
            prop_assert_eq!(enc(&f), enc(&Value::Float64(e)));
        }

        #[test]
        fn utf8_round_trips(s in "\\PC*") {
            let v = Value::UTF8String(s);
            prop_assert_eq!(Value::decode(AvpType::UTF8String, &enc(&v)).unwrap(), v);
        }

        #[test]
        fn addresses_round_trip(v4: [u8; 4], v6: [u8; 16]) {
            for a in [Address::Ip(Ipv4Addr::from(v4).into()), Address::Ip(Ipv6Addr::from(v6).into())] {
                let v = Value::Address(a);
                prop_assert_eq!(Value::decode(AvpType::Address, &enc(&v)).unwrap(), v);
            }
        }

        #[test]
        fn any_bytes_never_panic(ty_i in 0usize..15, data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let types = [AvpType::OctetString, AvpType::Integer32, AvpType::Integer64, AvpType::Unsigned32,
                AvpType::Unsigned64, AvpType::Float32, AvpType::Float64, AvpType::Grouped, AvpType::Address,
                AvpType::Time, AvpType::UTF8String, AvpType::DiameterIdentity, AvpType::DiameterURI,
                AvpType::Enumerated, AvpType::IPFilterRule];
            let ty = types[ty_i];
            if let Ok(v) = Value::decode(ty, &data) {
                // What decodes re-encodes to the same octets (URIs are canonical text).
                if ty != AvpType::DiameterURI {
                    prop_assert_eq!(enc(&v), data);
                }
            }
        }
    }
}
