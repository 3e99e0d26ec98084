//! The attributes of a credit-control request that rules match on, read once per CCR from the
//! standard AVPs (TS 32.299 §7.2.158 PS-Information, TS 29.061 §16.4.7 3GPP vendor AVPs):
//! the APN (Called-Station-Id), the serving network (3GPP-SGSN-MCC-MNC, else the MCC and MNC
//! inside 3GPP-User-Location-Info), the RAT type (3GPP-RAT-Type) and the subscriber's IMSI,
//! whose first digits name its home network.

use std::fmt;

/// A PLMN id: MCC and MNC as digits (the MNC has two or three).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Plmn {
    /// Up to 6 ASCII digits; `len` of them are used.
    digits: [u8; 6],
    len: u8,
}

impl Plmn {
    /// A PLMN from its digits, "MCCMNC" (5 or 6 digits).
    pub fn parse(text: &str) -> Option<Plmn> {
        let b = text.as_bytes();
        if !(5..=6).contains(&b.len()) || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut digits = [0u8; 6];
        digits[..b.len()].copy_from_slice(b);
        Some(Plmn {
            digits,
            len: b.len() as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.digits[..usize::from(self.len)]).unwrap_or("")
    }

    /// The MCC (three digits).
    pub fn mcc(&self) -> &str {
        &self.as_str()[..3]
    }

    /// The home network of an IMSI: its MCC and an MNC of three digits in the North American
    /// MCCs (300-316) and two elsewhere (ITU-T E.212). A provisioned home network takes
    /// precedence over this guess.
    pub fn of_imsi(imsi: &str) -> Option<Plmn> {
        let b = imsi.as_bytes();
        if b.len() < 6 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mnc3 = matches!(&b[..3], [b'3', b'0', _] | [b'3', b'1', b'0'..=b'6']);
        Plmn::parse(std::str::from_utf8(&b[..if mnc3 { 6 } else { 5 }]).ok()?)
    }

    /// The PLMN in the three octets of TS 24.008 §10.5.1.3 (BCD: MCC digit 2 | MCC digit 1,
    /// MNC digit 3 | MCC digit 3, MNC digit 2 | MNC digit 1; MNC digit 3 is 0xF for two-digit
    /// MNCs).
    pub fn from_bcd(o: &[u8]) -> Option<Plmn> {
        let [a, b, c] = *o else { return None };
        let nibbles = [a & 0xf, a >> 4, b & 0xf, c & 0xf, c >> 4, b >> 4];
        let len = if nibbles[5] == 0xf { 5 } else { 6 };
        let mut digits = [0u8; 6];
        for (d, n) in digits.iter_mut().zip(&nibbles[..len]) {
            if *n > 9 {
                return None;
            }
            *d = b'0' + n;
        }
        Some(Plmn {
            digits,
            len: len as u8,
        })
    }

    /// Whether `prefix` (digits: an MCC, or an MCC and MNC) starts this PLMN.
    pub fn starts_with(&self, prefix: &str) -> bool {
        self.as_str().starts_with(prefix)
    }
}

impl fmt::Debug for Plmn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Plmn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The PLMN inside a 3GPP-User-Location-Info (TS 29.061 §16.4.7.2): its first octet is the
/// Geographic Location Type, the next three octets the MCC and MNC for every type that has
/// one (CGI 0, SAI 1, RAI 2, and 128-139: TAI, ECGI, eNodeB ids, NCGI, 5GS TAI, NG-RAN node
/// ids and their combinations).
pub fn uli_plmn(uli: &[u8]) -> Option<Plmn> {
    let (&kind, rest) = uli.split_first()?;
    if !matches!(kind, 0..=2 | 128..=139) {
        return None;
    }
    Plmn::from_bcd(rest.get(..3)?)
}

/// RAT types by name (3GPP-RAT-Type values of TS 29.061 §16.4.7.2).
pub const RAT_TYPES: [(&str, u8); 10] = [
    ("UTRAN", 1),
    ("GERAN", 2),
    ("WLAN", 3),
    ("GAN", 4),
    ("HSPA_EVOLUTION", 5),
    ("EUTRAN", 6),
    ("VIRTUAL", 7),
    ("EUTRAN_NB_IOT", 8),
    ("LTE_M", 9),
    ("NR", 10),
];

/// What a request says about where and how the device is, for rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestAttributes<'a> {
    /// Called-Station-Id (the APN), as sent.
    pub apn: Option<&'a str>,
    /// The serving network.
    pub serving: Option<Plmn>,
    /// 3GPP-RAT-Type.
    pub rat: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plmns_from_text_bcd_imsi_and_location() {
        assert_eq!(
            Plmn::parse("20801").map(|p| p.to_string()),
            Some("20801".into())
        );
        assert_eq!(
            Plmn::parse("310410").map(|p| p.mcc().to_owned()),
            Some("310".into())
        );
        assert!(Plmn::parse("2080").is_none() && Plmn::parse("20a01").is_none());
        // MCC 208, MNC 01: 02 f8 10. MCC 310, MNC 410: 13 00 14.
        assert_eq!(
            Plmn::from_bcd(&[0x02, 0xf8, 0x10]).map(|p| p.to_string()),
            Some("20801".into())
        );
        assert_eq!(
            Plmn::from_bcd(&[0x13, 0x00, 0x14]).map(|p| p.to_string()),
            Some("310410".into())
        );
        assert!(
            Plmn::from_bcd(&[0xa2, 0xf8, 0x10]).is_none(),
            "a nibble past 9"
        );
        assert!(Plmn::from_bcd(&[0x02, 0xf8]).is_none());
        assert_eq!(
            Plmn::of_imsi("001010000000001").map(|p| p.to_string()),
            Some("00101".into())
        );
        assert_eq!(
            Plmn::of_imsi("310410123456789").map(|p| p.to_string()),
            Some("310410".into())
        );
        assert!(Plmn::of_imsi("0010").is_none());
        // ECGI (129): type, PLMN, ECI.
        assert_eq!(
            uli_plmn(&[129, 0x02, 0xf8, 0x10, 0, 0, 0, 1]).map(|p| p.to_string()),
            Some("20801".into())
        );
        assert!(
            uli_plmn(&[140, 0x02, 0xf8, 0x10]).is_none(),
            "an unknown type"
        );
        assert!(uli_plmn(&[]).is_none() && uli_plmn(&[129, 2]).is_none());
    }
}
