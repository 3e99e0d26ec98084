//! A partition's log on three `nats-server`s in a cluster, replicated three times: the owner
//! appends while the stream's leader server is killed with SIGKILL and later started again;
//! every append that returned is in the log exactly once, in order, read from any server, and
//! the leases bucket keeps working through it.

mod common;

use common::Nats;
use ocf_cluster::lease::{Claim, Leases};
use ocf_cluster::log::{Kind, PartitionLog};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_survive_the_loss_of_the_stream_leader() {
    let mut nats = Nats::cluster(3);
    let js = nats.jetstream().await;
    let leases = Leases::open(&js, "ocfd-a", 3_000, 3).await.unwrap();
    let Claim::Taken(epoch) = leases.claim(9, 1_000).await.unwrap() else {
        panic!("a free partition is taken")
    };
    let mut log = PartitionLog::open(&js, 9, 3, 1 << 20).await.unwrap();
    log.take_over(epoch.0).await.unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..20u32 {
        let body = format!("batch {i}");
        acknowledged.push((
            log.append(Kind::Records, body.as_bytes()).await.unwrap(),
            body,
        ));
    }

    // The server leading the stream dies; the next appends wait out the election.
    let mut stream = js.get_stream("OCFD_P9").await.unwrap();
    let leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("a replicated stream has a leader");
    let at = nats
        .servers
        .iter()
        .position(|s| s.name == leader)
        .expect("the leader is one of ours");
    nats.servers[at].kill();
    for i in 20..40u32 {
        let body = format!("batch {i}");
        acknowledged.push((
            log.append(Kind::Records, body.as_bytes()).await.unwrap(),
            body,
        ));
    }
    // It comes back and catches up; the lease renews through all of it. Right after the
    // restart the bucket's stream may be between leaders ("no stream found"): the owner's
    // keeper tries again at its next renewal, and so does this (bounded).
    nats.servers[at].restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let renewed = loop {
        match leases.renew(9, epoch, 2_000).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the lease never renewed: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    // (None: the revision moved, which only an attempt of ours whose answer was lost did.)
    let holder = leases.holder(9).await.unwrap().map(|(h, _)| h.node);
    assert!(
        renewed.is_some() || holder.as_deref() == Some("ocfd-a"),
        "the lease is still ours: {holder:?}"
    );
    for i in 40..50u32 {
        let body = format!("batch {i}");
        acknowledged.push((
            log.append(Kind::Records, body.as_bytes()).await.unwrap(),
            body,
        ));
    }

    // Everything acknowledged, once, in order, after the takeover entry.
    let entries = log.read(1, 1_000).await.unwrap();
    assert_eq!(entries[0].kind, Kind::Takeover);
    let records: Vec<(u64, String)> = entries[1..]
        .iter()
        .map(|e| {
            assert_eq!(e.kind, Kind::Records);
            (e.sequence, String::from_utf8(e.body.to_vec()).unwrap())
        })
        .collect();
    assert_eq!(records, acknowledged);
}
