//! Spreading partitions over the nodes. Claims already favour the nodes owning fewest when a
//! lease is free (`node::standby`); this moves partitions when a node joins a cluster whose
//! leases are all held: a node owning at least two more than the live node owning fewest hands
//! one of its partitions to that node (a drain), one at a time.

use std::collections::BTreeMap;

use crate::lease::Holder;
use crate::status::NodeStatus;

/// A node as the spread sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub node: String,
    /// The partitions whose lease it holds now.
    pub owns: usize,
    /// Whether it may take one more (it does not own as many as its `max_partitions`).
    pub may_take: bool,
}

/// A node whose entry in the node table is older than this is not counted as live.
pub const FRESH_MS: i64 = 10_000;

/// Every live node (an entry in the node table written in the last [`FRESH_MS`], or a lease
/// held now) with the partitions it owns, by name.
pub fn seen(entries: &[NodeStatus], holders: &[Option<Holder>], now_ms: i64) -> Vec<Seen> {
    let mut by_node: BTreeMap<&str, Seen> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| now_ms.saturating_sub(e.at_ms) <= FRESH_MS)
    {
        let s = by_node.entry(&e.node).or_insert_with(|| Seen {
            node: e.node.clone(),
            owns: 0,
            may_take: true,
        });
        s.may_take &= !e.full;
    }
    for h in holders.iter().flatten().filter(|h| h.until_ms > now_ms) {
        by_node
            .entry(&h.node)
            .or_insert_with(|| Seen {
                node: h.node.clone(),
                owns: 0,
                may_take: true,
            })
            .owns += 1;
    }
    by_node.into_values().collect()
}

/// The node `me` should hand one of its partitions to, if that evens the spread: the live node
/// that may take one and owns fewest (by name among equals), when `me` owns at least two more
/// and no node owns more than `me` (the nodes owning most move first: a newcomer is not handed
/// partitions by every node at once).
pub fn hand_to(me: &str, nodes: &[Seen]) -> Option<String> {
    let mine = nodes.iter().find(|n| n.node == me)?.owns;
    if nodes.iter().any(|n| n.owns > mine) {
        return None;
    }
    nodes
        .iter()
        .filter(|n| n.node != me && n.may_take)
        .min_by(|a, b| (a.owns, &a.node).cmp(&(b.owns, &b.node)))
        .filter(|n| n.owns + 2 <= mine)
        .map(|n| n.node.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Role;

    fn entry(node: &str, at_ms: i64, full: bool) -> NodeStatus {
        NodeStatus {
            node: node.into(),
            role: Role::Standby,
            partition: 0,
            entry: 1,
            diameter: None,
            host: None,
            realm: None,
            full,
            at_ms,
        }
    }

    fn held(node: &str, until_ms: i64) -> Option<Holder> {
        Some(Holder {
            node: node.into(),
            until_ms,
            diameter: None,
            admin: None,
            next: None,
        })
    }

    /// Two more than the node owning fewest: one goes to it; one more only: stays.
    #[test]
    fn a_node_hands_a_partition_to_the_one_owning_fewest_only_if_that_evens_the_spread() {
        let now = 100_000;
        let entries = [entry("a", now - 500, false), entry("b", now - 900, false)];
        let holders = [held("a", now + 1), held("a", now + 1), None];
        let nodes = seen(&entries, &holders, now);
        assert_eq!(hand_to("a", &nodes), Some("b".into()));
        assert_eq!(hand_to("b", &nodes), None);
        let holders = [held("a", now + 1), held("a", now + 1), held("b", now + 1)];
        assert_eq!(hand_to("a", &seen(&entries, &holders, now)), None);
        let holders = [held("a", now + 1), held("a", now + 1), held("a", now + 1)];
        let nodes = seen(&entries, &holders, now);
        assert_eq!(
            nodes,
            [
                Seen {
                    node: "a".into(),
                    owns: 3,
                    may_take: true
                },
                Seen {
                    node: "b".into(),
                    owns: 0,
                    may_take: true
                }
            ]
        );
        assert_eq!(hand_to("a", &nodes), Some("b".into()));
    }

    /// A node not seen lately, a full one, and ended leases do not count.
    #[test]
    fn only_live_nodes_that_may_take_more_are_handed_partitions() {
        let now = 100_000;
        let holders = [held("a", now + 1), held("a", now + 1), held("c", now - 1)];
        let stale = [
            entry("a", now, false),
            entry("b", now - FRESH_MS - 1, false),
        ];
        assert_eq!(hand_to("a", &seen(&stale, &holders, now)), None);
        let full = [entry("a", now, false), entry("b", now, true)];
        assert_eq!(hand_to("a", &seen(&full, &holders, now)), None);
        let both = [
            entry("a", now, false),
            entry("b", now, true),
            entry("c", now, false),
        ];
        assert_eq!(hand_to("a", &seen(&both, &holders, now)), Some("c".into()));
    }

    /// Of two nodes that could hand one over, only the one owning most does.
    #[test]
    fn the_node_owning_most_moves_first() {
        let now = 100_000;
        let entries = [
            entry("a", now, false),
            entry("b", now, false),
            entry("c", now, false),
        ];
        let holders: Vec<Option<Holder>> = ["a", "a", "a", "b", "b"]
            .iter()
            .map(|n| held(n, now + 1))
            .collect();
        let nodes = seen(&entries, &holders, now);
        assert_eq!(hand_to("a", &nodes), Some("c".into()));
        assert_eq!(hand_to("b", &nodes), None, "a owns more");
    }
}
