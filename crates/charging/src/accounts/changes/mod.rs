//! Changes to the account tree while ocfd runs: provisioning imports (at start and on reload)
//! and the admin API's changes (tenants, nodes, limits, policies, allowance moves).
//!
//! Every change is planned first against the live tree, with every check made and nothing
//! touched; a bad change is refused whole. A planned change ([`PendingChange`], holding the
//! accounts' gate) is then logged to the change log by the store (synced) and carried out, so requests see the tree before it or after
//! it, never half of it, and a snapshot never cuts through one. Trees and nodes are only ever
//! appended (removal leaves a tombstone), so replaying the change log from the start rebuilds
//! every node at the index the ledger journal names.
//!
//! An import applies what its files changed since the last import and nothing else: a limit an
//! operator changed through the API stays as it is until the file changes that limit.
//!
//! `plan` checks a change and turns it into steps, `apply` carries the steps out.

mod apply;
mod plan;

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::ledger::{Period, Unit};

use super::Accounts;
use super::provisioning::{Amount, AtLimitSpec, LimitSpec, PolicySpec, TenantSpec, ThresholdSpec};
use plan::parse_sources;

/// One provisioning source of an import: a file's name and text.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// A change to the account tree, as logged and as the admin API takes it.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// The tenants of these sources replace those of the last import.
    Import { sources: Vec<Source> },
    /// A new tenant: its root node carries `limits`.
    AddTenant {
        name: String,
        #[serde(default)]
        time_zone: Option<String>,
        #[serde(default)]
        policy: PolicySpec,
        #[serde(default)]
        limits: Vec<LimitSpec>,
    },
    /// A tenant's whole policy, including what happens at a limit.
    SetPolicy { tenant: String, policy: PolicySpec },
    /// A node under an existing one: a cost centre, or a device if it has subscription ids.
    AddNode {
        path: String,
        #[serde(default)]
        limits: Vec<LimitSpec>,
        #[serde(default)]
        msisdn: Option<String>,
        #[serde(default)]
        imsi: Option<String>,
        #[serde(default)]
        nai: Option<String>,
        #[serde(default)]
        sip_uri: Option<String>,
    },
    /// A node's limits, all of them: usage in a period is kept for a limit of the same unit
    /// and period.
    SetLimits {
        path: String,
        limits: Vec<LimitSpec>,
    },
    /// A node's own thresholds, all of them (docs/thresholds.md); those usage already passed
    /// count as fired.
    SetThresholds {
        path: String,
        thresholds: Vec<ThresholdSpec>,
    },
    /// A node's own policy at its limit (none: the tenant's applies).
    SetAtLimit {
        path: String,
        #[serde(default)]
        at_limit: Option<AtLimitSpec>,
    },
    /// Blocks a device or everything under a node: no grant until it is unblocked; open
    /// sessions are aborted by the server (ASR).
    Block { path: String },
    /// Lifts a block.
    Unblock { path: String },
    /// A node's subscription ids, all of them (none: it is no longer a device).
    SetSubscriptions {
        path: String,
        #[serde(default)]
        msisdn: Option<String>,
        #[serde(default)]
        imsi: Option<String>,
        #[serde(default)]
        nai: Option<String>,
        #[serde(default)]
        sip_uri: Option<String>,
    },
    /// A node's rules over the request, all of them (docs/rules.md); none removes them.
    SetRules {
        path: String,
        rules: Vec<crate::rules::RuleSpec>,
    },
    /// A node's guards against bill shock, all of them (none: removed).
    SetGuards {
        path: String,
        #[serde(default)]
        guards: Option<crate::rules::GuardSpec>,
    },
    /// The personal account a device's user pays with (none: unlinked).
    SetPersonalAccount {
        path: String,
        #[serde(default)]
        personal_account: Option<String>,
    },
    /// A node and everything under it (a tenant, if the path is its root).
    Remove { path: String },
    /// Moves allowance: `amount` off the limit of `from` onto the limit of `to` (same unit and
    /// period), inside one tenant; refused if `from` has less headroom than that.
    Move {
        from: String,
        to: String,
        unit: Unit,
        #[serde(default = "month")]
        period: Period,
        amount: Amount,
        /// Between the limits of this class of service (none: the general limits).
        #[serde(default)]
        class: Option<String>,
    },
}

fn month() -> Period {
    Period::Month
}

impl Change {
    /// The tenant the change is made in (the first part of its path); none for an import,
    /// which may touch every tenant.
    pub fn tenant(&self) -> Option<&str> {
        let path = match self {
            Change::Import { .. } => return None,
            Change::AddTenant { name, .. } => name,
            Change::SetPolicy { tenant, .. } => tenant,
            Change::AddNode { path, .. }
            | Change::SetLimits { path, .. }
            | Change::SetThresholds { path, .. }
            | Change::SetAtLimit { path, .. }
            | Change::Block { path }
            | Change::Unblock { path }
            | Change::SetSubscriptions { path, .. }
            | Change::SetRules { path, .. }
            | Change::SetGuards { path, .. }
            | Change::SetPersonalAccount { path, .. }
            | Change::Remove { path } => path,
            Change::Move { from, .. } => from,
        };
        path.split('/').next()
    }

    /// The subscription ids the change gives a device, with their Subscription-Id-Type
    /// codes (RFC 4006 §8.47).
    pub fn subscription_ids(&self) -> Vec<(u32, &str)> {
        match self {
            Change::AddNode {
                msisdn,
                imsi,
                nai,
                sip_uri,
                ..
            }
            | Change::SetSubscriptions {
                msisdn,
                imsi,
                nai,
                sip_uri,
                ..
            } => [(0, msisdn), (1, imsi), (2, sip_uri), (3, nai)]
                .into_iter()
                .filter_map(|(k, id)| id.as_deref().map(|id| (k, id)))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The change itself is wrong (bad amount, bad path, unknown time zone...).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// It clashes with the tree as it is (exists already, not enough headroom...).
    #[error("{0}")]
    Conflict(String),
    /// It could not be logged, so it was not made.
    #[error("the change log cannot be written: {0}")]
    Log(String),
}

/// What changes have been made: the last import's tenants.
#[derive(Default)]
pub struct ChangeState {
    base: Vec<TenantSpec>,
}

/// Counts of what an import changed, for the log.
#[derive(Debug, Default)]
pub struct Summary {
    pub tenants_added: usize,
    pub tenants_removed: usize,
    pub nodes_added: usize,
    pub nodes_changed: usize,
    pub nodes_removed: usize,
}

impl Accounts {
    /// Makes a change that nothing logs (a check, or a tree without a change log): plans it
    /// and carries it out.
    pub fn change(&self, change: &Change, now: i64) -> Result<Summary, ChangeError> {
        Ok(self.prepare_change(change, now)?.carry_out())
    }

    /// Changes the keys of a tenant's policy that `patch` names, unlogged; see
    /// [`Self::prepare_policy_patch`].
    pub fn patch_policy(
        &self,
        tenant: &str,
        patch: &serde_json::Value,
        now: i64,
    ) -> Result<Summary, ChangeError> {
        Ok(self.prepare_policy_patch(tenant, patch, now)?.carry_out())
    }

    /// Plans a change and stops requests and other changes: the store logs
    /// [`PendingChange::record`] (synced), then carries it out. Dropping it changes nothing.
    pub fn prepare_change(
        &self,
        change: &Change,
        now: i64,
    ) -> Result<PendingChange<'_>, ChangeError> {
        let state = self.changes_state();
        self.prepare_locked(state, change, now)
    }

    /// Prepares a change of only the keys of a tenant's policy that `patch` names (a JSON merge
    /// patch, RFC 7396: null sets a key back to its default). Logged as the whole policy it
    /// results in, so replaying the log needs nothing but the log.
    pub fn prepare_policy_patch(
        &self,
        tenant: &str,
        patch: &serde_json::Value,
        now: i64,
    ) -> Result<PendingChange<'_>, ChangeError> {
        let serde_json::Value::Object(patch) = patch else {
            return Err(ChangeError::Invalid(
                "a policy change is a JSON object of the keys to change".into(),
            ));
        };
        let state = self.changes_state();
        let current = self.policy_view(tenant)?;
        let mut merged = match serde_json::to_value(&current) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        for (k, v) in patch {
            if v.is_null() {
                merged.remove(k);
            } else {
                merged.insert(k.clone(), v.clone());
            }
        }
        let policy: PolicySpec = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|e| ChangeError::Invalid(format!("policy: {e}")))?;
        let change = Change::SetPolicy {
            tenant: tenant.to_owned(),
            policy,
        };
        self.prepare_locked(state, &change, now)
    }

    fn prepare_locked<'e>(
        &'e self,
        state: std::sync::MutexGuard<'e, ChangeState>,
        change: &Change,
        now: i64,
    ) -> Result<PendingChange<'e>, ChangeError> {
        let (steps, base) = self.plan(&state, change)?;
        let stop = self.stop();
        self.recheck(&steps, now)?;
        Ok(PendingChange {
            accounts: self,
            state,
            _stop: stop,
            steps,
            base,
            change: change.clone(),
            now,
        })
    }

    /// Carries out a change read back from the change log (at start, before serving), as it
    /// was made at `time`.
    pub fn replay_change(&self, time: i64, change: &Change) -> Result<Summary, String> {
        let mut state = self.changes_state();
        let (steps, base) = self.plan(&state, change).map_err(|e| {
            format!(
                "change {} ({}) no longer applies: {e}",
                self.changes_applied(),
                format!("{change:?}").chars().take(200).collect::<String>()
            )
        })?;
        let summary = self.carry_out(steps, time);
        if let Some(base) = base {
            state.base = base;
        }
        self.changes_applied.fetch_add(1, Ordering::AcqRel);
        Ok(summary)
    }

    /// Whether an import of these sources would change nothing.
    pub fn import_is_unchanged(&self, sources: &[Source]) -> Result<bool, ChangeError> {
        let (next, _) = parse_sources(sources)?;
        Ok(self.changes_state().base == next)
    }
}

/// A planned and checked change, with requests and other changes stopped until it is carried
/// out or dropped; see [`Accounts::prepare_change`].
#[must_use = "a prepared change does nothing until it is carried out"]
pub struct PendingChange<'e> {
    accounts: &'e Accounts,
    state: std::sync::MutexGuard<'e, ChangeState>,
    _stop: std::sync::RwLockWriteGuard<'e, ()>,
    steps: Vec<plan::Step>,
    base: Option<Vec<TenantSpec>>,
    change: Change,
    now: i64,
}

impl PendingChange<'_> {
    /// The change, whole (a policy patch as the policy it results in): what the change log
    /// keeps.
    pub fn change(&self) -> &Change {
        &self.change
    }

    /// The time it is made at.
    pub fn time(&self) -> i64 {
        self.now
    }

    /// Carries it out (cannot fail).
    pub fn carry_out(mut self) -> Summary {
        let summary = self
            .accounts
            .carry_out(std::mem::take(&mut self.steps), self.now);
        if let Some(base) = self.base.take() {
            self.state.base = base;
        }
        // Counted under the gate, where a snapshot reads it.
        self.accounts.changes_applied.fetch_add(1, Ordering::AcqRel);
        summary
    }
}

/// Logs what an import did.
pub fn log_summary(what: &str, s: &Summary) {
    if s.tenants_added + s.tenants_removed + s.nodes_added + s.nodes_changed + s.nodes_removed == 0
    {
        info!(what, "provisioning unchanged");
    } else {
        info!(
            what,
            tenants_added = s.tenants_added,
            tenants_removed = s.tenants_removed,
            nodes_added = s.nodes_added,
            nodes_changed = s.nodes_changed,
            nodes_removed = s.nodes_removed,
            "provisioning imported"
        );
    }
}

#[cfg(test)]
mod tests;
