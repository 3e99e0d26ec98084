//! The terms the provisioning files, the admin API, the rules and the change log share:
//! names of tenants and nodes, amounts with units, and Subscription-Id types. Below the
//! accounts and the rules, which both use them.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ledger::{MONEY_SCALE, Unit};

/// Subscription-Id-Type values (RFC 4006 §8.47).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscriptionType {
    E164,
    Imsi,
    SipUri,
    Nai,
    Private,
}

impl SubscriptionType {
    /// The type's name in usage records (`e164:15551000000`).
    pub fn label(self) -> &'static str {
        match self {
            Self::E164 => "e164",
            Self::Imsi => "imsi",
            Self::SipUri => "sip",
            Self::Nai => "nai",
            Self::Private => "private",
        }
    }

    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::E164,
            1 => Self::Imsi,
            2 => Self::SipUri,
            3 => Self::Nai,
            4 => Self::Private,
            _ => return None,
        })
    }
}

/// A quantity: a number, or a string with a unit ("10 MiB", "1 TiB", "5.00" for money).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Amount {
    Number(u64),
    Text(String),
}

pub(crate) fn parse_amount(a: &Amount, unit: Unit) -> Result<u64, String> {
    let text = match a {
        Amount::Number(n) if unit != Unit::Money => return Ok(*n),
        Amount::Number(n) => n.to_string(),
        Amount::Text(t) => t.trim().to_owned(),
    };
    if unit == Unit::Money {
        let d: Decimal = text
            .parse()
            .map_err(|_| format!("'{text}' is not an amount of money"))?;
        let scaled = d
            .checked_mul(Decimal::from(10u64.pow(MONEY_SCALE)))
            .ok_or_else(|| format!("'{text}' is too large"))?;
        if scaled.is_sign_negative() || scaled.fract() != Decimal::ZERO {
            return Err(format!(
                "'{text}' has more than {MONEY_SCALE} decimals or is negative"
            ));
        }
        use rust_decimal::prelude::ToPrimitive;
        return scaled
            .to_u64()
            .ok_or_else(|| format!("'{text}' is too large"));
    }
    // A whole number or a decimal one ("1.5 GiB"), then the unit.
    let (num, suffix) = text.split_at(
        text.find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len()),
    );
    if num.is_empty() {
        return Err(format!("'{text}' is not a number"));
    }
    let mult: u64 = match suffix.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}' (use KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
            ));
        }
    };
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("'{text}' is too large"));
    }
    let d: Decimal = num
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    let whole = d
        .checked_mul(Decimal::from(mult))
        .ok_or_else(|| format!("'{text}' is too large"))?;
    if whole.is_sign_negative() || whole.fract() != Decimal::ZERO {
        return Err(format!("'{text}' is not a whole number of units"));
    }
    use rust_decimal::prelude::ToPrimitive;
    whole
        .to_u64()
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// The longest name of a tenant or node, in octets of UTF-8.
pub(crate) const MAX_NAME_BYTES: usize = 128;

/// Checks one name of a tenant or node: 1 to [`MAX_NAME_BYTES`] octets, no '/', no control
/// characters.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "a name has 1 to {MAX_NAME_BYTES} octets ('{}' has {})",
            name.chars().take(40).collect::<String>(),
            name.len()
        ));
    }
    if name.contains('/') || name.chars().any(char::is_control) {
        return Err(format!(
            "'{}': a name has no '/' and no control characters",
            name.escape_debug()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn octets(text: &str) -> Result<u64, String> {
        parse_amount(&Amount::Text(text.into()), Unit::Octets)
    }

    #[test]
    fn amounts_take_whole_and_decimal_numbers_with_a_unit() {
        assert_eq!(octets("10 MiB"), Ok(10 << 20));
        assert_eq!(octets("1.5 GiB"), Ok(3 << 29));
        assert_eq!(octets("2.5GB"), Ok(2_500_000_000));
        assert_eq!(octets("0.5 KiB"), Ok(512));
        assert_eq!(octets("7"), Ok(7));
        for bad in [
            "0.3 KiB",
            "1.5",
            "1..5 GiB",
            ".",
            "-1 GiB",
            "1 PiB",
            "",
            "99999999999 TiB",
        ] {
            assert!(octets(bad).is_err(), "{bad}");
        }
        assert!(octets("0.3 KiB").unwrap_err().contains("whole number"));
    }
}
