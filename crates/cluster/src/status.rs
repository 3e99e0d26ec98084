//! The node table: what each node says of itself, a key per node in the JetStream key-value
//! bucket `ocfd_nodes`, written every few seconds and gone a while after the node stops
//! writing (the bucket's age limit). With the lease and the log's end it is the cluster as
//! `ocfctl cluster` shows it: who owns the partition, who stands by, how far behind each is.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::lease::LeaseError;

/// The bucket of node statuses.
pub const BUCKET: &str = "ocfd_nodes";

/// How long listing the node table may take.
const LIST_PATIENCE: Duration = Duration::from_secs(5);

/// How long a node's entry stays once it stops writing.
const MAX_AGE: Duration = Duration::from_secs(30);

/// What a node is to the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Standby,
}

/// One node's entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub role: Role,
    pub partition: u32,
    /// The last entry of the partition's log it has (a standby: copied; the owner: appended).
    pub entry: u64,
    /// Where it takes Diameter connections (the owner serves them, a standby relays them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diameter: Option<String>,
    /// Its Diameter identity (Origin-Host and Origin-Realm): the peer a DRA reaches at
    /// `diameter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// It owns as many partitions as it may (`max_partitions`): none is handed to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
    /// When it wrote this (milliseconds since 1970, its clock).
    pub at_ms: i64,
}

/// A node as a Diameter peer, for a DRA's peer table: its identity and where it takes
/// connections (gateways' requests reaching any node are routed to their partition's owner).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub node: String,
    pub host: String,
    pub realm: String,
    pub diameter: String,
    /// When it last wrote its entry (milliseconds since 1970, its clock).
    pub at_ms: i64,
}

/// Every node that names its Diameter identity and address, once each (its latest entry),
/// by host.
pub fn peers(entries: &[NodeStatus]) -> Vec<Peer> {
    let mut by_node: std::collections::BTreeMap<&str, Peer> = Default::default();
    for s in entries {
        let (Some(host), Some(realm), Some(diameter)) = (&s.host, &s.realm, &s.diameter) else {
            continue;
        };
        if by_node
            .get(s.node.as_str())
            .is_some_and(|p| p.at_ms >= s.at_ms)
        {
            continue;
        }
        by_node.insert(
            &s.node,
            Peer {
                node: s.node.clone(),
                host: host.clone(),
                realm: realm.clone(),
                diameter: diameter.clone(),
                at_ms: s.at_ms,
            },
        );
    }
    let mut out: Vec<Peer> = by_node.into_values().collect();
    out.sort_by(|a, b| a.host.cmp(&b.host));
    out
}

/// A node's entry for a partition.
fn key(node: &str, partition: u32) -> String {
    format!("{node}.p{partition}")
}

/// The node table.
pub struct NodeTable {
    kv: kv::Store,
}

impl NodeTable {
    /// Opens (or makes) the bucket, kept on `replicas` servers.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<NodeTable, LeaseError> {
        let kv = crate::lease::bucket(js, BUCKET, replicas, Some(MAX_AGE)).await?;
        Ok(NodeTable { kv })
    }

    /// Writes a node's entry.
    pub async fn put(&self, status: &NodeStatus) -> Result<(), LeaseError> {
        let value = serde_json::to_vec(status).unwrap_or_default();
        self.kv
            .put(key(&status.node, status.partition), value.into())
            .await
            .map(|_| ())
            .map_err(|e| LeaseError::Bucket(e.to_string()))
    }

    /// Removes a node's entries for `partitions` (it stops: no listing, which a bucket whose
    /// last operation was a removal can leave waiting).
    pub async fn remove(&self, node: &str, partitions: &[u32]) -> Result<(), LeaseError> {
        for p in partitions {
            self.kv
                .delete(key(node, *p))
                .await
                .map_err(|e| LeaseError::Bucket(e.to_string()))?;
        }
        Ok(())
    }

    /// Every node's entry, by name (an entry that does not read as one is left out).
    pub async fn list(&self) -> Result<Vec<NodeStatus>, LeaseError> {
        // The keys' listing may wait for ever on some buckets' histories (a removal last):
        // bounded, as a failure.
        tokio::time::timeout(LIST_PATIENCE, self.list_unbounded())
            .await
            .map_err(|_| LeaseError::Bucket("the node table's keys did not come in time".into()))?
    }

    async fn list_unbounded(&self) -> Result<Vec<NodeStatus>, LeaseError> {
        use futures_core::Stream;
        let bucket = |e: String| LeaseError::Bucket(e);
        let mut keys = self.kv.keys().await.map_err(|e| bucket(e.to_string()))?;
        let mut names = Vec::new();
        while let Some(k) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut keys).poll_next(cx)).await
        {
            names.push(k.map_err(|e| bucket(e.to_string()))?);
        }
        let mut out = Vec::new();
        for name in names {
            if let Some(v) = self
                .kv
                .get(&name)
                .await
                .map_err(|e| bucket(e.to_string()))?
            {
                if let Ok(s) = serde_json::from_slice::<NodeStatus>(&v) {
                    out.push(s);
                }
            }
        }
        out.sort_by(|a, b| (a.partition, &a.node).cmp(&(b.partition, &b.node)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(node: &str, partition: u32, at_ms: i64, diameter: Option<&str>) -> NodeStatus {
        NodeStatus {
            node: node.into(),
            role: Role::Standby,
            partition,
            entry: 1,
            diameter: diameter.map(str::to_owned),
            host: Some(format!("{node}.example.net")),
            realm: Some("example.net".into()),
            full: false,
            at_ms,
        }
    }

    /// A node is one peer whatever the partitions it has entries for, at its latest address;
    /// a node naming no address is none.
    #[test]
    fn each_node_is_one_peer_at_its_latest_address() {
        let peers = peers(&[
            entry("b", 0, 10, Some("10.0.0.2:3868")),
            entry("b", 1, 20, Some("10.0.0.9:3868")),
            entry("a", 0, 5, Some("10.0.0.1:3868")),
            entry("c", 0, 30, None),
        ]);
        let seen: Vec<(&str, &str)> = peers
            .iter()
            .map(|p| (p.host.as_str(), p.diameter.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("a.example.net", "10.0.0.1:3868"),
                ("b.example.net", "10.0.0.9:3868")
            ]
        );
    }
}
