use std::sync::Arc;

use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_795_000_000; // 2026-11-17

/// enterprise (1000) → two cost centres (600, 300) → three devices each (250).
fn tree() -> Tree {
    let mut t = Tree::new("acme", TimeZone::UTC);
    let root = t.add(
        "acme",
        None,
        vec![Counter::new(Unit::Octets, Period::Month, 1000)],
    );
    for cc in 0..2 {
        let limit = if cc == 0 { 600 } else { 300 };
        let c = t.add(
            format!("cc{cc}"),
            Some(root),
            vec![Counter::new(Unit::Octets, Period::Month, limit)],
        );
        for d in 0..3 {
            t.add(
                format!("d{cc}{d}"),
                Some(c),
                vec![Counter::new(Unit::Octets, Period::Month, 250)],
            );
        }
    }
    t
}

fn leaves(t: &Tree) -> Vec<u32> {
    (0..t.nodes.len() as u32)
        .filter(|&i| t.names(i).len() == 3)
        .collect()
}

fn check_invariant(t: &Tree) {
    for n in &t.nodes {
        for c in &n.counters {
            assert!(
                c.used + c.reserved <= c.limit,
                "{}: used {} + reserved {} > limit {}",
                n.name,
                c.used,
                c.reserved,
                c.limit
            );
        }
    }
}

#[test]
fn grant_is_the_smallest_headroom_on_the_path() {
    let mut t = tree();
    let d = t.find(&["acme", "cc1", "d10"]).unwrap();
    assert_eq!(
        t.reserve(d, Unit::Octets, 100, NOW),
        Grant {
            granted: 100,
            last: false
        }
    );
    // Device headroom 150 is the smallest.
    assert_eq!(
        t.reserve(d, Unit::Octets, 1000, NOW),
        Grant {
            granted: 150,
            last: true
        }
    );
    assert_eq!(
        t.reserve(d, Unit::Octets, 1, NOW),
        Grant {
            granted: 0,
            last: true
        }
    );
    // The cost centre (300) now has 50 left for its other devices.
    let d2 = t.find(&["acme", "cc1", "d11"]).unwrap();
    assert_eq!(
        t.reserve(d2, Unit::Octets, 100, NOW),
        Grant {
            granted: 50,
            last: true
        }
    );
    check_invariant(&t);
    // Committing less than reserved frees the rest for the others.
    t.commit(d, Unit::Octets, 250, 200, NOW);
    assert_eq!(t.reserve(d2, Unit::Octets, 100, NOW).granted, 50);
    check_invariant(&t);
}

#[test]
fn path_without_a_limit_for_the_unit_is_unlimited() {
    let mut t = tree();
    let d = t.find(&["acme", "cc0", "d00"]).unwrap();
    assert_eq!(
        t.reserve(d, Unit::Seconds, 3600, NOW),
        Grant {
            granted: 3600,
            last: false
        }
    );
}

#[test]
fn usage_beyond_the_grant_is_charged() {
    let mut t = tree();
    let d = t.find(&["acme", "cc1", "d12"]).unwrap();
    let g = t.reserve(d, Unit::Octets, 100, NOW);
    t.commit(d, Unit::Octets, g.granted, 400, NOW);
    let c = &t.nodes[d as usize].counters[0];
    assert_eq!((c.used, c.reserved), (400, 0));
    assert_eq!(c.headroom(), 0);
    assert_eq!(t.reserve(d, Unit::Octets, 1, NOW).granted, 0);
    // The cost centre and enterprise are charged too.
    assert_eq!(
        t.nodes[t.find(&["acme", "cc1"]).unwrap() as usize].counters[0].used,
        400
    );
    assert_eq!(t.nodes[0].counters[0].used, 400);
}

#[test]
fn a_new_month_starts_from_zero_and_keeps_reservations() {
    let mut t = tree();
    let d = t.find(&["acme", "cc0", "d01"]).unwrap();
    t.reserve(d, Unit::Octets, 250, NOW);
    t.commit(d, Unit::Octets, 250, 200, NOW);
    t.reserve(d, Unit::Octets, 50, NOW);
    assert_eq!(t.reserve(d, Unit::Octets, 1, NOW).granted, 0);
    let next_month = period::period_end(Period::Month, &TimeZone::UTC, NOW);
    // The outstanding 50 still counts; the 200 used belong to last month.
    assert_eq!(t.reserve(d, Unit::Octets, 1000, next_month).granted, 200);
    let c = &t.nodes[d as usize].counters[0];
    assert_eq!((c.used, c.reserved), (0, 250));
}

#[derive(Clone, Debug)]
enum Op {
    Reserve { leaf: usize, want: u64 },
    Commit { idx: usize, used_permille: u64 },
    Release { idx: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..6, 0u64..300).prop_map(|(leaf, want)| Op::Reserve { leaf, want }),
        (0usize..64, 0u64..=1000)
            .prop_map(|(idx, used_permille)| Op::Commit { idx, used_permille }),
        (0usize..64).prop_map(|idx| Op::Release { idx }),
    ]
}

/// The reference model: per node, used and reserved, and the limits, updated the obvious way.
struct Model {
    parent: Vec<Option<usize>>,
    limit: Vec<u64>,
    used: Vec<u64>,
    reserved: Vec<u64>,
}

impl Model {
    fn of(t: &Tree) -> Model {
        Model {
            parent: t
                .nodes
                .iter()
                .map(|n| n.parent.map(|p| p as usize))
                .collect(),
            limit: t.nodes.iter().map(|n| n.counters[0].limit).collect(),
            used: vec![0; t.nodes.len()],
            reserved: vec![0; t.nodes.len()],
        }
    }
    fn path(&self, mut n: usize) -> Vec<usize> {
        let mut p = vec![n];
        while let Some(up) = self.parent[n] {
            p.push(up);
            n = up;
        }
        p
    }
    fn reserve(&mut self, leaf: usize, want: u64) -> u64 {
        let path = self.path(leaf);
        let free = path
            .iter()
            .map(|&n| self.limit[n] - self.used[n] - self.reserved[n])
            .min()
            .unwrap();
        let g = want.min(free);
        for n in path {
            self.reserved[n] += g;
        }
        g
    }
    fn commit(&mut self, leaf: usize, reserved: u64, used: u64) {
        for n in self.path(leaf) {
            self.reserved[n] -= reserved;
            self.used[n] += used;
        }
    }
}

proptest! {
    /// Sequential: every reserve, commit and release matches the model exactly, and the
    /// invariant holds after every step.
    #[test]
    fn ledger_matches_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        let mut t = tree();
        let mut m = Model::of(&t);
        let leaves = leaves(&t);
        let mut outstanding: Vec<(usize, u64)> = Vec::new();
        for op in ops {
            match op {
                Op::Reserve { leaf, want } => {
                    let n = leaves[leaf] as usize;
                    let g = t.reserve(n as u32, Unit::Octets, want, NOW);
                    prop_assert_eq!(g.granted, m.reserve(n, want));
                    if g.granted > 0 {
                        outstanding.push((n, g.granted));
                    }
                }
                Op::Commit { idx, used_permille } if !outstanding.is_empty() => {
                    let (n, r) = outstanding.swap_remove(idx % outstanding.len());
                    let used = r * used_permille / 1000;
                    t.commit(n as u32, Unit::Octets, r, used, NOW);
                    m.commit(n, r, used);
                }
                Op::Release { idx } if !outstanding.is_empty() => {
                    let (n, r) = outstanding.swap_remove(idx % outstanding.len());
                    t.release(n as u32, Unit::Octets, r, NOW);
                    m.commit(n, r, 0);
                }
                _ => {}
            }
            check_invariant(&t);
            for (i, node) in t.nodes.iter().enumerate() {
                prop_assert_eq!((node.counters[0].used, node.counters[0].reserved), (m.used[i], m.reserved[i]));
            }
        }
    }
}

/// Many threads reserving, committing, releasing and expiring at once on one shared tree: the
/// invariant holds after every step (checked under the same lock), and at the end the usage on
/// every node is exactly the sum of what the threads committed below it.
#[test]
fn concurrent_operations_keep_the_invariant_and_add_up() {
    for seed in 0..8u64 {
        let ledger = Ledger::new();
        let t = tree();
        let leaf_ids = leaves(&t);
        let model = Model::of(&t);
        let id = ledger.add_tree(t);
        let ledger = Arc::new(ledger);
        let threads: Vec<_> = (0..4u64)
            .map(|k| {
                let (ledger, leaf_ids) = (ledger.clone(), leaf_ids.clone());
                std::thread::spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(seed * 31 + k);
                    let mut outstanding: Vec<(u32, u64)> = Vec::new();
                    let mut committed = vec![0u64; 16];
                    for _ in 0..2000 {
                        let mut t = ledger.lock(id).unwrap();
                        match rng.u8(..4) {
                            0 | 1 => {
                                let leaf = leaf_ids[rng.usize(..leaf_ids.len())];
                                let g = t.reserve(leaf, Unit::Octets, rng.u64(..120), NOW);
                                if g.granted > 0 {
                                    outstanding.push((leaf, g.granted));
                                }
                            }
                            2 if !outstanding.is_empty() => {
                                let (leaf, r) =
                                    outstanding.swap_remove(rng.usize(..outstanding.len()));
                                let used = rng.u64(..=r);
                                t.commit(leaf, Unit::Octets, r, used, NOW);
                                committed[leaf as usize] += used;
                            }
                            _ if !outstanding.is_empty() => {
                                // Release or expiry: units go back unused.
                                let (leaf, r) =
                                    outstanding.swap_remove(rng.usize(..outstanding.len()));
                                t.release(leaf, Unit::Octets, r, NOW);
                            }
                            _ => {}
                        }
                        check_invariant(&t);
                    }
                    let mut t = ledger.lock(id).unwrap();
                    for (leaf, r) in outstanding {
                        t.release(leaf, Unit::Octets, r, NOW);
                    }
                    committed
                })
            })
            .collect();
        let mut committed = [0u64; 16];
        for th in threads {
            for (i, u) in th.join().unwrap().into_iter().enumerate() {
                committed[i] += u;
            }
        }
        let mut m = model;
        for (leaf, used) in committed.iter().enumerate().filter(|(_, u)| **u > 0) {
            m.commit(leaf, 0, *used);
        }
        let t = ledger.lock(id).unwrap();
        for (i, node) in t.nodes.iter().enumerate() {
            assert_eq!(
                (node.counters[0].used, node.counters[0].reserved),
                (m.used[i], 0),
                "seed {seed} node {}",
                node.name
            );
        }
        assert!(m.used[0] > 0, "the threads did charge something");
    }
}

#[test]
fn rated_money_is_exact_whatever_the_split() {
    // 0.01 per MiB in 10^-9 units: 10^7 per 2^20 octets.
    let price = (10_000_000u128, 1_048_576u128);
    let mut a = Tree::new("alice", TimeZone::UTC);
    let n = a.add(
        "alice",
        None,
        vec![Counter::new(Unit::Money, Period::Total, 5_000_000_000)],
    );
    // 4.5 MiB in 3 reports of odd sizes and 1000 tiny ones.
    let mut b = a.clone();
    for chunk in [1_000_001u64, 2_000_003, 1_718_588] {
        a.commit_rated(n, 0, chunk, price, NOW);
    }
    let total: u64 = 4 * 1_048_576 + 524_288;
    assert_eq!(1_000_001 + 2_000_003 + 1_718_588, total);
    for _ in 0..1000 {
        b.commit_rated(n, 0, total / 1000, price, NOW);
    }
    b.commit_rated(n, 0, total % 1000, price, NOW);
    // 4.5 MiB at 0.01/MiB = 0.045 exactly, however it was reported.
    assert_eq!(a.nodes[0].counters[0].used, 45_000_000);
    assert_eq!(b.nodes[0].counters[0].used, 45_000_000);
}
