//! Statements: what a tenant's accounts used in a period, per device and per cost centre,
//! summed from the usage records (not the ledger, so that it can be held against it: a
//! statement of a period whose sessions have all ended equals the ledger's usage to the unit).
//!
//! A record counts in the period its session ended in (`end`); interim records are left out
//! (the record of the session's end carries all of it). A service charged to another account
//! than the session's (a personal account a rule chose) counts for that account.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use rust_decimal::Decimal;
use serde::Serialize;

/// What one account, or all the accounts under a node, used.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Used {
    pub octets: u64,
    pub seconds: u64,
    pub events: u64,
    /// In the currency, a decimal.
    pub money: Decimal,
    /// Usage records (session ends) that counted.
    pub records: u64,
}

impl Used {
    fn add(&mut self, s: &serde_json::Value) {
        let n = |k: &str| s.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        self.octets = self.octets.saturating_add(n("octets"));
        self.seconds = self.seconds.saturating_add(n("seconds"));
        self.events = self.events.saturating_add(n("events"));
        let money = s
            .get("money")
            .and_then(|v| v.as_str())
            .and_then(|m| m.parse::<Decimal>().ok())
            .unwrap_or_default();
        self.money = self.money.checked_add(money).unwrap_or(self.money);
    }
}

/// One line of a statement: a node (a device or a cost centre) and what it used.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Line {
    pub path: String,
    /// A device (an account records name), or a node above devices (the sum of those under it).
    pub device: bool,
    #[serde(flatten)]
    pub used: Used,
}

/// A tenant's statement for a period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Statement {
    pub tenant: String,
    /// Unix seconds, the period's start (included) and end (excluded).
    pub from: i64,
    pub to: i64,
    /// Every node with usage in the period, by path (the tenant's root first).
    pub lines: Vec<Line>,
}

/// Whether `path` is `tenant` or under it.
fn under(tenant: &str, path: &str) -> bool {
    path == tenant
        || path
            .strip_prefix(tenant)
            .is_some_and(|r| r.starts_with('/'))
}

/// Calls `each` with every usage record in `dir` that is not interim, whose line contains
/// `needle` (a cheap filter before parsing), with its `end` and each service and the account
/// that paid for it (the service's own `account`, else the record's).
fn each_service(
    dir: &Path,
    needle: &str,
    mut each: impl FnMut(i64, &[(&str, &serde_json::Value)]),
) -> io::Result<()> {
    let files = match super::usage::files(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    for f in files {
        for line in BufReader::new(std::fs::File::open(&f)?).lines() {
            let line = line?;
            if !line.contains(needle) {
                continue;
            }
            let Ok(r) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if r.get("interim").and_then(|v| v.as_bool()) == Some(true) {
                continue;
            }
            let end = r.get("end").and_then(|v| v.as_i64()).unwrap_or(i64::MIN);
            let account = r.get("account").and_then(|v| v.as_str()).unwrap_or("");
            let mut services = Vec::new();
            for s in r
                .get("services")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                let paid = s.get("account").and_then(|v| v.as_str()).unwrap_or(account);
                services.push((paid, s));
            }
            each(end, &services);
        }
    }
    Ok(())
}

/// The statement of `tenant` for [from, to) from the usage files in `dir` (none yet: empty).
pub fn statement(dir: &Path, tenant: &str, from: i64, to: i64) -> io::Result<Statement> {
    let mut devices: BTreeMap<String, Used> = BTreeMap::new();
    each_service(dir, tenant, |end, services| {
        if end < from || end >= to {
            return;
        }
        let mut counted: Vec<&str> = Vec::new();
        for &(paid, s) in services {
            if !under(tenant, paid) {
                continue;
            }
            devices.entry(paid.to_owned()).or_default().add(s);
            if !counted.contains(&paid) {
                counted.push(paid);
            }
        }
        for paid in counted {
            if let Some(u) = devices.get_mut(paid) {
                u.records += 1;
            }
        }
    })?;
    // Every node above a device sums the devices under it.
    let mut all: BTreeMap<String, (bool, Used)> = BTreeMap::new();
    for (path, used) in &devices {
        all.insert(path.clone(), (true, used.clone()));
    }
    for (path, used) in &devices {
        let mut at = path.as_str();
        while let Some((above, _)) = at.rsplit_once('/') {
            let e = all
                .entry(above.to_owned())
                .or_insert((false, Used::default()));
            e.1.octets = e.1.octets.saturating_add(used.octets);
            e.1.seconds = e.1.seconds.saturating_add(used.seconds);
            e.1.events = e.1.events.saturating_add(used.events);
            e.1.money = e.1.money.checked_add(used.money).unwrap_or(e.1.money);
            e.1.records = e.1.records.saturating_add(used.records);
            at = above;
        }
    }
    Ok(Statement {
        tenant: tenant.to_owned(),
        from,
        to,
        lines: all
            .into_iter()
            .map(|(path, (device, used))| Line { path, device, used })
            .collect(),
    })
}

impl Statement {
    /// The statement as CSV: a header, then one line per node.
    pub fn csv(&self) -> String {
        let mut out = String::from("path,kind,octets,seconds,events,money,records\n");
        for l in &self.lines {
            // Paths are names without control characters; quote any with a comma or quote.
            let path = if l.path.contains([',', '"']) {
                format!("\"{}\"", l.path.replace('"', "\"\""))
            } else {
                l.path.clone()
            };
            out.push_str(&format!(
                "{path},{},{},{},{},{},{}\n",
                if l.device { "device" } else { "node" },
                l.used.octets,
                l.used.seconds,
                l.used.events,
                l.used.money,
                l.used.records
            ));
        }
        out
    }
}

/// What the usage records in `dir` say each account was charged in total (interim records
/// aside), as the ledger counts it: octets, seconds, events, money in ledger units (10^-9 of
/// the currency); octets rated in money count as their money only.
pub fn charged_by_account(dir: &Path) -> io::Result<BTreeMap<String, [u64; 4]>> {
    let mut out: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    let scale = Decimal::from(10u64.pow(ocf_charging::ledger::MONEY_SCALE));
    each_service(dir, "", |_, services| {
        for &(paid, s) in services {
            let mut used = Used::default();
            used.add(s);
            let money = used
                .money
                .checked_mul(scale)
                .and_then(|m| rust_decimal::prelude::ToPrimitive::to_u64(&m.trunc()))
                .unwrap_or(0);
            // Octets rated in money are counted by the ledger as the money they cost.
            let octets = if money > 0 { 0 } else { used.octets };
            let e = out.entry(paid.to_owned()).or_default();
            for (k, v) in [octets, used.seconds, used.events, money]
                .into_iter()
                .enumerate()
            {
                e[k] = e[k].saturating_add(v);
            }
        }
    })?;
    Ok(out)
}
