//! Carrying out planned steps, under the accounts' gate: trees and nodes appended or marked
//! removed, limits and subscription ids set, policies swapped whole.

use std::collections::HashSet;
use std::sync::Arc;

use crate::ledger::AccountRef;

use super::super::Accounts;
use super::super::provisioning::{BuiltTenant, Subscriptions};
use super::super::tenant::Policy;
use super::Summary;
use super::plan::Step;

impl Accounts {
    /// Carries out planned steps (under the gate; cannot fail).
    pub(super) fn carry_out(&self, steps: Vec<Step>, now: i64) -> Summary {
        let mut sum = Summary::default();
        let mut policies: Option<Vec<Arc<Policy>>> = None;
        let mut directory = self.directory_mut();
        let current = self.policies();
        let mut set_policy = |tree: u32, p: Policy| {
            let v = policies.get_or_insert_with(|| current.as_ref().clone());
            let i = tree as usize;
            if v.len() <= i {
                v.resize(i + 1, Arc::new(Policy::default()));
            }
            v[i] = Arc::new(p);
        };
        let bind = |directory: &mut super::super::tenant::Directory,
                    at: AccountRef,
                    subs: Subscriptions| {
            for (kind, id) in subs {
                directory.add(kind, &id, at);
            }
        };
        // The identities of new tenants go into the directory's map at once, not one rehash
        // of ten million entries after another.
        directory.reserve(
            steps
                .iter()
                .map(|s| match s {
                    Step::AddTree(b) => b.id_count(),
                    _ => 0,
                })
                .sum(),
        );
        for step in steps {
            match step {
                Step::AddTree(built) => {
                    let BuiltTenant {
                        tree,
                        subscriptions,
                        runs,
                        policy,
                    } = *built;
                    let id = self.ledger.add_tree(tree);
                    for (node, subs) in subscriptions {
                        bind(&mut directory, AccountRef { tree: id, node }, subs);
                    }
                    for run in &runs {
                        for (node, keys) in run.keys() {
                            for key in keys.into_iter().flatten() {
                                directory.add_key(key, AccountRef { tree: id, node });
                            }
                        }
                    }
                    set_policy(id, policy);
                    sum.tenants_added += 1;
                }
                Step::SetPolicy(tree, p) => set_policy(tree, *p),
                Step::SetTimeZone(tree, tz) => {
                    if let Some(mut t) = self.ledger.lock(tree) {
                        t.tz = tz;
                    }
                }
                Step::RemoveTree(tree) => {
                    if let Some(mut t) = self.ledger.lock(tree) {
                        t.removed = true;
                        t.shape = t.shape.wrapping_add(1);
                        for n in &mut t.nodes {
                            n.removed = true;
                        }
                    }
                    directory.unbind_where(|at| at.tree == tree);
                    sum.tenants_removed += 1;
                }
                Step::AddNode {
                    parent,
                    name,
                    counters,
                    subs,
                    thresholds,
                } => {
                    if let Some(mut t) = self.ledger.lock(parent.tree) {
                        let node = t.add(name, Some(parent.node), counters);
                        if !thresholds.is_empty() {
                            t.set_thresholds(node, thresholds);
                        }
                        bind(
                            &mut directory,
                            AccountRef {
                                tree: parent.tree,
                                node,
                            },
                            subs,
                        );
                    }
                    sum.nodes_added += 1;
                }
                Step::SetLimits(at, counters) => {
                    if let Some(mut t) = self.ledger.lock(at.tree) {
                        t.set_limits(at.node, counters, now);
                    }
                    sum.nodes_changed += 1;
                }
                Step::SetBlocked(at, block) => {
                    let at = AccountRef {
                        tree: at.tree,
                        node: at.node,
                    };
                    self.ledger.set_blocked(at, block);
                    sum.nodes_changed += 1;
                }
                Step::SetThresholds(at, list) => {
                    if let Some(mut t) = self.ledger.lock(at.tree) {
                        t.set_thresholds(at.node, list);
                    }
                }
                Step::SetSubscriptions(at, subs) => {
                    let at = AccountRef {
                        tree: at.tree,
                        node: at.node,
                    };
                    directory.unbind_where(|a| a == at);
                    bind(&mut directory, at, subs);
                }
                Step::RemoveNode(at) => {
                    let mut gone = HashSet::new();
                    if let Some(mut t) = self.ledger.lock(at.tree) {
                        t.shape = t.shape.wrapping_add(1);
                        for n in t.subtree(at.node) {
                            t.nodes[n as usize].removed = true;
                            gone.insert(n);
                        }
                    }
                    directory.unbind_where(|a| a.tree == at.tree && gone.contains(&a.node));
                    sum.nodes_removed += gone.len();
                }
                Step::Move {
                    from,
                    to,
                    unit,
                    period,
                    amount,
                    class,
                } => {
                    if let Some(mut t) = self.ledger.lock(from.tree) {
                        // Between a node and its ancestor, the ancestor's limit already covers
                        // the descendant's: only the descendant's own share changes, so the
                        // enterprise's total never does.
                        let ends = if t.is_ancestor(to.node, from.node) {
                            vec![(from.node, false)]
                        } else if t.is_ancestor(from.node, to.node) {
                            vec![(to.node, true)]
                        } else {
                            vec![(from.node, false), (to.node, true)]
                        };
                        for (n, add) in ends {
                            let Some(node) = t.nodes.get_mut(n as usize) else {
                                continue;
                            };
                            for c in node.counters.iter_mut().filter(|c| {
                                c.unit == unit && c.period == period && c.class == class
                            }) {
                                c.limit = if add {
                                    c.limit.saturating_add(amount)
                                } else {
                                    c.limit.saturating_sub(amount)
                                };
                            }
                            // Allowance moved in re-arms the levels usage is below again.
                            t.rearm(n);
                        }
                    }
                    sum.nodes_changed += 2;
                }
            }
        }
        drop(directory);
        if let Some(p) = policies {
            self.set_policies(p);
        }
        sum
    }
}
