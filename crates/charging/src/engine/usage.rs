//! Usage records: one per session end (and per update if interim), as an [`Op::Usage`] with
//! the ops of the request that ended it; the store writes them to the usage files.

use super::*;

/// What each service used between two snapshots of a session's usage.
pub(super) fn usage_delta(before: &[ServiceUsage], after: &[ServiceUsage]) -> Vec<ServiceUsage> {
    after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| {
                (b.rating_group, b.service_identifier) == (a.rating_group, a.service_identifier)
            });
            let mut d = *a;
            for k in 0..4 {
                d.units[k] = a.units[k].saturating_sub(b.map_or(0, |b| b.units[k]));
            }
            (d.units != [0; 4]).then_some(d)
        })
        .collect()
}

/// Usage records are made; per update too if `interim`.
#[derive(Clone, Copy, Debug)]
pub(super) struct UsageRecords {
    pub(super) interim: bool,
}

/// Appends `v` as the inside of a JSON string (RFC 8259 §7).
pub(super) fn json_escape(out: &mut String, v: &str) {
    use std::fmt::Write as _;
    for ch in v.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// One debug line per session end (one per session: too many for info at full load; the usage
/// records have them all, and supervision logs a count at info).
pub(super) fn log_usage(session_id: &str, s: &Session, now: i64, outcome: &str) {
    let [octets, seconds, events, money] = s.totals();
    debug!(
        session_id,
        subscriber = &*s.subscriber,
        octets,
        seconds,
        events,
        money,
        duration_s = now - s.started,
        outcome,
        "usage"
    );
}

impl Engine {
    /// Records usage ([`Op::Usage`], one JSON object per session end; per update too if
    /// `interim`).
    pub fn with_usage_records(mut self, interim: bool) -> Self {
        self.usage = Some(UsageRecords { interim });
        self
    }

    /// Whether usage records are made, and per update too.
    pub fn usage_records(&self) -> Option<bool> {
        self.usage.map(|u| u.interim)
    }

    /// One usage record: who, which account, what each service used, when, how it ended.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_usage(
        &self,
        rec: &mut Recorder,
        session_id: &str,
        s: &Session,
        services: &[ServiceUsage],
        now: i64,
        outcome: &str,
        interim: bool,
    ) {
        use std::fmt::Write as _;
        if self.usage.is_none() {
            return;
        }
        // Written by hand: building a serde_json::Value per session end cost a tenth of a
        // worker's time under load. Keys are in sorted order, as serde_json writes them.
        let mut own = String::new();
        let line = &mut own;
        line.push_str("{\"account\":\"");
        if let Some(t) = self.accounts.ledger().lock(s.account.tree) {
            for (i, name) in t.names(s.account.node).iter().enumerate() {
                if i > 0 {
                    line.push('/');
                }
                json_escape(line, name);
            }
        }
        let _ = write!(
            line,
            "\",\"end\":{now},\"interim\":{interim},\"outcome\":\""
        );
        json_escape(line, outcome);
        line.push_str("\",\"services\":[");
        let opt = |v: Option<u32>| v.map_or_else(|| "null".to_owned(), |v| v.to_string());
        for (i, u) in services.iter().enumerate() {
            let money = rust_decimal::Decimal::new(
                i64::try_from(u.units[3]).unwrap_or(i64::MAX),
                crate::ledger::MONEY_SCALE,
            );
            let _ = write!(
                line,
                "{}{{\"events\":{},\"money\":\"{money}\",\"octets\":{},\"rating_group\":{},\"seconds\":{},\"service_identifier\":{}}}",
                if i > 0 { "," } else { "" },
                u.units[2],
                u.units[0],
                opt(u.rating_group),
                u.units[1],
                opt(u.service_identifier),
            );
        }
        line.push_str("],\"session_id\":\"");
        json_escape(line, session_id);
        let _ = write!(line, "\",\"start\":{},\"subscriber\":\"", s.started);
        json_escape(line, &s.subscriber);
        line.push_str("\"}");
        rec.ops.push(Op::Usage(own.into_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::json_escape;

    #[test]
    pub(super) fn escaped_strings_read_back_as_json() {
        for v in ["plain", "q\"uote", "back\\slash", "ctl\u{1}\n\t", "ünï;1;2"] {
            let mut s = String::from("\"");
            json_escape(&mut s, v);
            s.push('"');
            assert_eq!(serde_json::from_str::<String>(&s).unwrap(), v);
        }
    }
}
