//! Partition leases against a real `nats-server` with JetStream on 127.0.0.1 (Debian's
//! package; `scripts/test` installs it): of two nodes racing for a partition one takes it; the
//! other takes it only once the lease has ended, by the clocks the callers give; the deposed
//! owner's renewal is refused by the server; a released lease is taken at once; every new
//! owner's epoch is higher.

mod common;

use common::Nats;
use ocf_cluster::lease::{Claim, Epoch, Leases};

const TTL: i64 = 3_000;
const T0: i64 = 1_800_000_000_000;

#[tokio::test]
async fn one_owner_at_a_time_and_a_deposed_owner_is_refused() {
    let nats = Nats::start();
    let a = Leases::open(&nats.jetstream().await, "ocfd-a", TTL, 1)
        .await
        .unwrap();
    let b = Leases::open(&nats.jetstream().await, "ocfd-b", TTL, 1)
        .await
        .unwrap();

    // a takes partition 3; b finds it held until a's lease ends.
    let Claim::Taken(ea) = a.claim(3, T0).await.unwrap() else {
        panic!("a free partition is taken")
    };
    match b.claim(3, T0 + 1).await.unwrap() {
        Claim::Held(h) => assert_eq!((h.node.as_str(), h.until_ms), ("ocfd-a", T0 + TTL)),
        other => panic!("{other:?}"),
    }
    // Renewed, the epoch moves on and the lease with it.
    let ea2 = a
        .renew(3, ea, T0 + 1_000)
        .await
        .unwrap()
        .expect("still a's");
    assert!(ea2 > ea);
    assert!(matches!(
        b.claim(3, T0 + TTL).await.unwrap(),
        Claim::Held(_)
    ));

    // a stops renewing (it lost NATS, or died): once its lease ends, b takes it.
    let Claim::Taken(eb) = b.claim(3, T0 + 1_000 + TTL).await.unwrap() else {
        panic!("an ended lease is taken")
    };
    assert!(eb > ea2, "a later owner has a higher epoch");
    // a comes back and renews at its old epoch: refused, whatever its clock says.
    assert_eq!(a.renew(3, ea2, T0 + 2_000).await.unwrap(), None);
    assert!(!a.release(3, ea2).await.unwrap());
    let (h, e) = a.holder(3).await.unwrap().unwrap();
    assert_eq!((h.node.as_str(), e), ("ocfd-b", eb));

    // A drain: b releases, a takes it at once.
    assert!(b.release(3, eb).await.unwrap());
    let Claim::Taken(ea3) = a.claim(3, T0 + 2_500).await.unwrap() else {
        panic!("a released lease is taken at once")
    };
    assert!(ea3 > eb);
    // Other partitions are independent.
    assert!(matches!(
        b.claim(4, T0 + 2_500).await.unwrap(),
        Claim::Taken(_)
    ));
}

#[tokio::test]
async fn of_many_nodes_racing_for_a_partition_exactly_one_wins() {
    let nats = Nats::start();
    let mut nodes = Vec::new();
    for i in 0..8 {
        let leases = Leases::open(&nats.jetstream().await, &format!("ocfd-{i}"), TTL, 1)
            .await
            .unwrap();
        nodes.push(leases);
    }
    // All at once: each reads the lease, then writes it with compare-and-set.
    let tasks: Vec<_> = nodes
        .into_iter()
        .map(|n| tokio::spawn(async move { n.claim(7, T0).await }))
        .collect();
    let mut claims = Vec::new();
    for t in tasks {
        claims.push(t.await.unwrap());
    }
    let taken: Vec<Epoch> = claims
        .iter()
        .filter_map(|c| match c {
            Ok(Claim::Taken(e)) => Some(*e),
            _ => None,
        })
        .collect();
    assert_eq!(taken.len(), 1, "{claims:?}");
    assert!(claims.iter().all(|c| c.is_ok()), "{claims:?}");
}
