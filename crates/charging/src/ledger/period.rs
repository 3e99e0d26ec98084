//! Calendar periods in an account's time zone: when the current day or month ends.

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// How often a limit starts again from zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// A calendar day in the account's time zone.
    Day,
    /// A calendar month in the account's time zone.
    Month,
    /// Never: a balance (prepaid money) that only changes by usage and top-ups.
    Total,
}

/// The Unix time (seconds) at which the period containing `now` ends.
pub fn period_end(period: Period, tz: &TimeZone, now: i64) -> i64 {
    if period == Period::Total {
        return i64::MAX;
    }
    let Ok(ts) = Timestamp::from_second(now) else {
        return i64::MAX;
    };
    let zoned = ts.to_zoned(tz.clone());
    let start_of_day = match zoned.start_of_day() {
        Ok(z) => z,
        Err(_) => return i64::MAX,
    };
    let next = match period {
        Period::Day => start_of_day.checked_add(1.day()),
        Period::Month => start_of_day
            .first_of_month()
            .and_then(|z| z.checked_add(1.month())),
        Period::Total => return i64::MAX,
    };
    next.map(|z| z.timestamp().as_second()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }

    #[test]
    fn utc_day_and_month() {
        let utc = TimeZone::UTC;
        assert_eq!(
            period_end(Period::Day, &utc, unix("2026-11-23T03:00:00Z")),
            unix("2026-11-24T00:00:00Z")
        );
        assert_eq!(
            period_end(Period::Month, &utc, unix("2026-11-23T03:00:00Z")),
            unix("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            period_end(Period::Month, &utc, unix("2026-12-31T23:59:59Z")),
            unix("2027-01-01T00:00:00Z")
        );
        // The boundary itself belongs to the next period.
        assert_eq!(
            period_end(Period::Day, &utc, unix("2026-11-24T00:00:00Z")),
            unix("2026-11-25T00:00:00Z")
        );
        assert_eq!(period_end(Period::Total, &utc, 0), i64::MAX);
    }

    #[test]
    fn months_follow_the_accounts_time_zone() {
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        // 2026-11-30T16:00Z is already 1 December 01:00 in Tokyo.
        assert_eq!(
            period_end(Period::Month, &tokyo, unix("2026-11-30T16:00:00Z")),
            unix("2026-12-31T15:00:00Z")
        );
        let london = TimeZone::get("Europe/London").unwrap();
        // 25 October 2026 (the DST change) begins at 00:00 BST and is 25 hours long.
        let start = unix("2026-10-25T00:00:00+01:00");
        let end = period_end(Period::Day, &london, start);
        assert_eq!(end, unix("2026-10-26T00:00:00Z"));
        assert_eq!(end - start, 25 * 3600);
        assert_eq!(period_end(Period::Day, &london, start - 1), start);
    }
}
