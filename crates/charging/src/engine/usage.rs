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
                b.is(
                    (a.rating_group, a.service_identifier),
                    (a.account, a.rule.as_deref()),
                )
            });
            let mut d = a.clone();
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
    /// An account's path, "tenant/cost-centre/device" (empty if it is gone).
    pub(super) fn path_of(&self, at: AccountRef) -> String {
        self.accounts
            .ledger()
            .lock(at.tree)
            .map(|t| Path(&t.names(at.node)).to_string())
            .unwrap_or_default()
    }

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
        let account = self.path_of(s.account);
        let record = UsageRecord {
            account: &account,
            end: now,
            interim,
            outcome,
            services: services
                .iter()
                .map(|u| {
                    let mut r = ServiceRecord::from(u);
                    r.account = u.account.map(|a| self.path_of(a));
                    r
                })
                .collect(),
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

/// What one service (Rating-Group, Service-Identifier) used (per account and rule that paid).
#[derive(Serialize)]
struct ServiceRecord {
    /// The account that paid, when a rule sent the service elsewhere than the session's.
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    events: u64,
    /// In the currency, as a decimal string with the ledger's nine places.
    money: Decimal,
    octets: u64,
    rating_group: Option<u32>,
    /// The rule that decided where the service was charged.
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    seconds: u64,
    service_identifier: Option<u32>,
}

impl From<&ServiceUsage> for ServiceRecord {
    fn from(u: &ServiceUsage) -> Self {
        ServiceRecord {
            account: None,
            events: u.units[2],
            money: Decimal::new(
                i64::try_from(u.units[3]).unwrap_or(i64::MAX),
                crate::ledger::MONEY_SCALE,
            ),
            octets: u.units[0],
            rating_group: u.rating_group,
            rule: u.rule.as_deref().map(str::to_owned),
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
