//! What the admin API shows of the engine's sessions: those charged to a node or under it.

use std::sync::Arc;

use serde::Serialize;

use super::Engine;
use crate::accounts::changes::ChangeError;
use crate::accounts::views::{Shown, shown};
use crate::ledger::{AccountRef, Unit};

/// An open credit-control session.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionView {
    pub session_id: String,
    pub subscriber: String,
    pub account: String,
    /// Unix seconds.
    pub started: i64,
    pub request_number: u32,
    pub reservations: Vec<ReservationView>,
    pub used: Vec<ServiceView>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReservationView {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    pub unit: Unit,
    pub reserved: Shown,
    /// Unix seconds at which it returns to the pool by itself.
    pub expires: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceView {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    pub octets: u64,
    pub seconds: u64,
    pub events: u64,
    pub money: Shown,
}

impl Engine {
    /// The open sessions charged to a node or anywhere under it. Each lock (the tree's, a
    /// session shard's) is held only to copy out what the view needs.
    /// The open sessions of a device or of everything under a node: each one's Session-Id,
    /// the Origin-Host of the gateway it came from and whether it holds reservations (to abort
    /// or re-authorise them).
    pub fn sessions_under(&self, path: &str) -> Result<Vec<(String, Arc<str>, bool)>, ChangeError> {
        let (at, inside) = self.subtree_of(path)?;
        let mut out = Vec::new();
        for i in 0..self.sessions.shard_count() {
            let shard = self.sessions.lock_index(i);
            for (id, s) in &shard.open {
                let n = s.account.node as usize;
                if s.account.tree == at.tree && inside.get(n).copied().unwrap_or(false) {
                    out.push((id.to_string(), s.origin_host.clone(), !s.held.is_empty()));
                }
            }
        }
        Ok(out)
    }

    /// The node at `path`, and which nodes of its tree are it or under it.
    fn subtree_of(&self, path: &str) -> Result<(AccountRef, Vec<bool>), ChangeError> {
        let at = self.accounts.find_node(path)?;
        let t = self
            .accounts
            .ledger()
            .lock(at.tree)
            .ok_or_else(|| ChangeError::NotFound(format!("no node '{path}'")))?;
        let mut inside = vec![false; t.nodes.len()];
        for n in t.subtree(at.node) {
            inside[n as usize] = true;
        }
        Ok((at, inside))
    }

    pub fn sessions_view(&self, path: &str) -> Result<Vec<SessionView>, ChangeError> {
        let (at, inside) = self.subtree_of(path)?;
        struct Found {
            account: AccountRef,
            subscriber: Box<str>,
            started: i64,
            last_number: u32,
            held: Vec<super::session::Held>,
            services: Vec<super::session::ServiceUsage>,
        }
        let mut found: Vec<(String, Found)> = Vec::new();
        for i in 0..self.sessions.shard_count() {
            let shard = self.sessions.lock_index(i);
            for (id, s) in &shard.open {
                let n = s.account.node as usize;
                if s.account.tree == at.tree && inside.get(n).copied().unwrap_or(false) {
                    found.push((
                        id.to_string(),
                        Found {
                            account: s.account,
                            subscriber: s.subscriber.clone(),
                            started: s.started,
                            last_number: s.last_number,
                            held: s.held.clone(),
                            services: s.services.clone(),
                        },
                    ));
                }
            }
        }
        // Account names, once each, under one short hold of the tree.
        let mut names: std::collections::HashMap<u32, String> = Default::default();
        if let Some(t) = self.ledger().lock(at.tree) {
            for (_, s) in &found {
                names
                    .entry(s.account.node)
                    .or_insert_with(|| t.names(s.account.node).join("/"));
            }
        }
        let mut out: Vec<SessionView> = found
            .into_iter()
            .map(|(id, s)| SessionView {
                session_id: id,
                subscriber: s.subscriber.to_string(),
                account: names.get(&s.account.node).cloned().unwrap_or_default(),
                started: s.started,
                request_number: s.last_number,
                reservations: s
                    .held
                    .iter()
                    .map(|h| ReservationView {
                        rating_group: h.rating_group,
                        service_identifier: h.service_identifier,
                        unit: h.unit,
                        reserved: shown(h.unit, h.reserved),
                        expires: h.expires,
                    })
                    .collect(),
                used: s
                    .services
                    .iter()
                    .map(|u| ServiceView {
                        rating_group: u.rating_group,
                        service_identifier: u.service_identifier,
                        octets: u.units[0],
                        seconds: u.units[1],
                        events: u.units[2],
                        money: shown(Unit::Money, u.units[3]),
                    })
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        Ok(out)
    }
}

/// What accounts were charged, per account path: octets, seconds, events, money (ledger units).
pub type Charged = std::collections::BTreeMap<String, [u64; 4]>;

impl Engine {
    /// What the accounts have been charged in total, as the ledger keeps it (each account's
    /// own usage), for reconciliation. A walk of every tree: not for the hot path.
    pub fn charged_by_account(&self) -> Charged {
        let mut out = Charged::new();
        let ledger = self.ledger();
        for t in 0..ledger.tree_count() as u32 {
            let Some(tree) = ledger.lock(t) else { continue };
            if tree.removed {
                continue;
            }
            for (i, n) in tree.nodes.iter().enumerate() {
                if n.removed || n.own.iter().all(|o| o.used[2] == 0) {
                    continue;
                }
                let mut units = [0u64; 4];
                for o in &n.own {
                    units[crate::ledger::unit_index(o.unit)] = o.used[2];
                }
                out.insert(tree.names(i as u32).join("/"), units);
            }
        }
        out
    }

    /// What the open sessions have charged so far (not yet in any usage record), per account
    /// path.
    pub fn charged_in_open_sessions(&self) -> Charged {
        let mut by_account: std::collections::HashMap<AccountRef, [u64; 4]> = Default::default();
        for i in 0..self.sessions.shard_count() {
            let shard = self.sessions.lock_index(i);
            for s in shard.open.values() {
                for u in &s.services {
                    let e = by_account
                        .entry(u.account.unwrap_or(s.account))
                        .or_default();
                    for (k, v) in u.units.iter().enumerate() {
                        // Octets rated in money count as their money only, as in the ledger.
                        if k == 0 && u.units[3] > 0 {
                            continue;
                        }
                        e[k] = e[k].saturating_add(*v);
                    }
                }
            }
        }
        by_account
            .into_iter()
            .map(|(a, units)| (self.path_of(a), units))
            .collect()
    }
}
