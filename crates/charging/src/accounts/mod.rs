//! The accounts: the ledger of quotas, who is who (subscription ids to accounts), each tree's
//! policy, and the changes made to them (provisioning imports and the admin API's changes),
//! with the views the admin API shows. The credit-control engine reads them; only changes
//! write the tree.
//!
//! `tenant` holds the directory and policies, `provisioning` the file format and the embedded
//! default tenant, `changes` plans and carries out changes, `views` reads.

pub mod changes;
pub mod provisioning;
pub mod tenant;
pub mod views;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use arc_swap::ArcSwap;

use crate::ledger::Ledger;
use changes::ChangeState;
use tenant::{Directory, Policy};

pub struct Accounts {
    ledger: Ledger,
    /// Subscription ids to accounts; written only by changes (rare), read at session start.
    directory: RwLock<Directory>,
    /// Each tree's policy, swapped whole by a change so requests never wait for one.
    policies: ArcSwap<Vec<Arc<Policy>>>,
    /// Changes, one at a time: the last import's tenants.
    changes: Mutex<ChangeState>,
    /// Changes made so far (the change log's length), counted under the gate.
    changes_applied: AtomicU64,
    /// Held shared by every request from its first ledger change until its ops are handed
    /// over, and exclusively by a change or a snapshot: a snapshot then copies exactly the
    /// effect of the ops handed over so far, and requests see the tree before a change or
    /// after it, never half of it.
    gate: RwLock<()>,
}

impl Accounts {
    pub fn new(ledger: Ledger, mut directory: Directory) -> Self {
        let policies = directory
            .take_policies()
            .into_iter()
            .map(Arc::new)
            .collect();
        Accounts {
            ledger,
            directory: RwLock::new(directory),
            policies: ArcSwap::from_pointee(policies),
            changes: Mutex::new(ChangeState::default()),
            changes_applied: AtomicU64::new(0),
            gate: RwLock::new(()),
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The subscription directory, read-locked: never hold it across a request.
    pub fn directory(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory.read().unwrap_or_else(|p| p.into_inner())
    }

    fn directory_mut(&self) -> RwLockWriteGuard<'_, Directory> {
        self.directory.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every tree's policy, as of now (a cheap guard: requests read it on every CCR).
    pub fn policies(&self) -> arc_swap::Guard<Arc<Vec<Arc<Policy>>>> {
        self.policies.load()
    }

    /// A tree's policy as it is now (shared, not copied).
    pub(crate) fn policy_of(&self, tree: u32) -> Arc<Policy> {
        self.policies()
            .get(tree as usize)
            .cloned()
            .unwrap_or_default()
    }

    /// A copy of a tree's policy, to change and swap in.
    pub(crate) fn policy_copy(&self, tree: u32) -> Policy {
        self.policies()
            .get(tree as usize)
            .map(|c| (**c).clone())
            .unwrap_or_default()
    }

    fn set_policies(&self, policies: Vec<Arc<Policy>>) {
        self.policies.store(Arc::new(policies));
    }

    /// How many changes the tree has had (the change log's length).
    pub fn changes_applied(&self) -> u64 {
        self.changes_applied.load(Ordering::Acquire)
    }

    fn changes_state(&self) -> MutexGuard<'_, ChangeState> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shares the gate: requests and supervision, from their first ledger change until their
    /// ops are handed over.
    pub(crate) fn share_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the gate alone: nothing changes the ledger or the tree meanwhile.
    pub fn stop(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|p| p.into_inner())
    }
}
