//! A partition's replicated log against a real `nats-server`: entries read back in order with
//! their kinds; a second owner's takeover fences the first, whose next append is refused by the
//! server (no split brain can append); a node reading from any sequence sees the same entries;
//! a standby follows the owner entry by entry and resumes from where it left.

mod common;

use common::Nats;
use ocf_cluster::log::{Kind, LogError, PartitionLog};

#[tokio::test]
async fn a_takeover_fences_the_previous_owner_and_everyone_reads_the_same_log() {
    let nats = Nats::start();
    let mut a = PartitionLog::open(&nats.jetstream().await, 5, 1, 1 << 20)
        .await
        .unwrap();
    assert_eq!(a.last(), 0);
    assert_eq!(a.take_over(1).await.unwrap(), 1);
    assert_eq!(
        a.append(Kind::Change, b"{\"op\":\"remove\",\"path\":\"acme/x\"}")
            .await
            .unwrap(),
        2
    );
    assert_eq!(a.append(Kind::Records, b"batch 1").await.unwrap(), 3);

    // b takes over (a's lease ended): reads to the end, then fences a off.
    let mut b = PartitionLog::open(&nats.jetstream().await, 5, 1, 1 << 20)
        .await
        .unwrap();
    assert_eq!(b.last(), 3);
    assert_eq!(b.take_over(2).await.unwrap(), 4);
    // a, still believing it owns the partition, is refused by the server.
    match a
        .append(Kind::Records, b"batch 2 from the deposed owner")
        .await
    {
        Err(LogError::Fenced(5)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(b.append(Kind::Records, b"batch 2").await.unwrap(), 5);

    // Any node reads the same entries, from any point.
    let mut c = PartitionLog::open(&nats.jetstream().await, 5, 1, 1 << 20)
        .await
        .unwrap();
    let all = c.read(1, 100).await.unwrap();
    let seen: Vec<(u64, Kind, &[u8])> = all
        .iter()
        .map(|e| (e.sequence, e.kind, &e.body[..]))
        .collect();
    assert_eq!(
        seen,
        [
            (1, Kind::Takeover, &1u64.to_le_bytes()[..]),
            (
                2,
                Kind::Change,
                &b"{\"op\":\"remove\",\"path\":\"acme/x\"}"[..]
            ),
            (3, Kind::Records, &b"batch 1"[..]),
            (4, Kind::Takeover, &2u64.to_le_bytes()[..]),
            (5, Kind::Records, &b"batch 2"[..]),
        ]
    );
    assert_eq!(c.read(4, 1).await.unwrap()[0].sequence, 4);
    assert!(
        c.read(6, 10).await.unwrap().is_empty(),
        "nothing past the end"
    );
    // Cut below entry 3 (a snapshot includes 1 and 2): reading before it says so, by name;
    // a follower from before it is given entry 3 first, and the owner appends on.
    assert_eq!(c.first().await.unwrap(), 1);
    c.cut(3).await.unwrap();
    assert_eq!(c.first().await.unwrap(), 3);
    match c.read(1, 10).await {
        Err(LogError::Cut {
            partition: 5,
            wanted: 1,
            first: 3,
        }) => {}
        other => panic!("{other:?}"),
    }
    let rest: Vec<u64> = c
        .read(3, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(rest, [3, 4, 5]);
    assert_eq!(c.follow(1).await.unwrap().next().await.unwrap().sequence, 3);
    assert_eq!(b.append(Kind::Records, b"batch 3").await.unwrap(), 6);
    // Other partitions are other streams.
    let other = PartitionLog::open(&nats.jetstream().await, 6, 1, 1 << 20)
        .await
        .unwrap();
    assert_eq!(other.last(), 0);
}

#[tokio::test]
async fn a_standby_follows_the_owner_as_it_appends_and_resumes_where_it_left() {
    let nats = Nats::start();
    let mut owner = PartitionLog::open(&nats.jetstream().await, 2, 1, 1 << 20)
        .await
        .unwrap();
    owner.take_over(1).await.unwrap();
    owner.append(Kind::Records, b"before").await.unwrap();
    let standby = PartitionLog::open(&nats.jetstream().await, 2, 1, 1 << 20)
        .await
        .unwrap();
    let mut follower = standby.follow(1).await.unwrap();
    assert_eq!(follower.next().await.unwrap().kind, Kind::Takeover);
    assert_eq!(&follower.next().await.unwrap().body[..], b"before");
    // Appended after the standby caught up: it sees each as it comes.
    for i in 0..50u32 {
        let body = format!("live {i}");
        let sequence = owner.append(Kind::Records, body.as_bytes()).await.unwrap();
        let seen = follower.next().await.unwrap();
        assert_eq!((seen.sequence, &seen.body[..]), (sequence, body.as_bytes()));
    }
    // A standby that restarts resumes from the entry after the last it applied.
    let mut again = standby.follow(40).await.unwrap();
    assert_eq!(again.next().await.unwrap().sequence, 40);
}

/// A partition's snapshot in the object store: none at first, then the latest one put, read
/// back whole, an older one refused; its entry from the pointer alone; each partition its
/// own.
#[tokio::test]
async fn a_partitions_latest_snapshot_is_kept_in_the_object_store() {
    use ocf_cluster::snapshots::{PartitionSnapshot, Snapshots};
    let nats = Nats::start();
    let js = nats.jetstream().await;
    let store = Snapshots::open(&js, 1).await.unwrap();
    assert_eq!(store.latest(0).await.unwrap(), None);
    assert_eq!(store.latest_entry(0).await.unwrap(), None);
    let snapshot = |entry: u64, octets: usize| PartitionSnapshot {
        partition: 0,
        entry,
        epoch: 7,
        // Larger than an object's chunk (128 KiB) and a NATS message.
        snapshot: (0..octets)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into(),
        change_log: bytes::Bytes::from_static(b"the changes"),
    };
    assert!(store.put(&snapshot(10, 3 << 20)).await.unwrap());
    assert!(store.put(&snapshot(25, 300 << 10)).await.unwrap());
    // An older one (a deposed owner's, late) does not replace it.
    assert!(!store.put(&snapshot(20, 1 << 10)).await.unwrap());
    // Another node's handle sees the latest.
    let other = Snapshots::open(&js, 1).await.unwrap();
    assert_eq!(other.latest_entry(0).await.unwrap(), Some(25));
    assert_eq!(
        other.latest(0).await.unwrap(),
        Some(snapshot(25, 300 << 10))
    );
    assert_eq!(other.latest(1).await.unwrap(), None);
}
