//! Usage records: one per session end (and per update if interim), as an [`Op::Usage`] with
//! the ops of the request that ended it; the store writes them to the usage files.

use rust_decimal::Decimal;
use serde::Serialize;

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
        if self.usage.is_none() {
            return;
        }
        // The tree's lock is held only to copy the account's path out.
        let account = self
            .accounts
            .ledger()
            .lock(s.account.tree)
            .map(|t| Path(&t.names(s.account.node)).to_string())
            .unwrap_or_default();
        let record = UsageRecord {
            account: &account,
            end: now,
            interim,
            outcome,
            services: services.iter().map(ServiceRecord::from).collect(),
            session_id,
            start: s.started,
            subscriber: &s.subscriber,
        };
        // Serialised straight into the op's buffer: no `Value` in between.
        let mut data = Vec::with_capacity(256);
        if serde_json::to_writer(&mut data, &record).is_ok() {
            rec.ops.push(Op::Usage(data));
        }
    }
}

/// A usage record (docs/durability.md): its keys in sorted order, as readers have them.
#[derive(Serialize)]
struct UsageRecord<'a> {
    account: &'a str,
    end: i64,
    interim: bool,
    outcome: &'a str,
    services: Vec<ServiceRecord>,
    session_id: &'a str,
    start: i64,
    subscriber: &'a str,
}

/// What one service (Rating-Group, Service-Identifier) used.
#[derive(Serialize)]
struct ServiceRecord {
    events: u64,
    /// In the currency, as a decimal string with the ledger's nine places.
    money: Decimal,
    octets: u64,
    rating_group: Option<u32>,
    seconds: u64,
    service_identifier: Option<u32>,
}

impl From<&ServiceUsage> for ServiceRecord {
    fn from(u: &ServiceUsage) -> Self {
        ServiceRecord {
            events: u.units[2],
            money: Decimal::new(
                i64::try_from(u.units[3]).unwrap_or(i64::MAX),
                crate::ledger::MONEY_SCALE,
            ),
            octets: u.units[0],
            rating_group: u.rating_group,
            seconds: u.units[1],
            service_identifier: u.service_identifier,
        }
    }
}

/// An account's names from the root, joined by '/'.
struct Path<'a>(&'a [&'a str]);

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}
