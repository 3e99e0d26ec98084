//! One ocfd node in a cluster: connected to NATS, a standby of a partition until it takes the
//! partition's lease, then its owner until it stops or is deposed.
//!
//! - [`Node::stand_by_all`] (in `standby`) follows each partition's log into a copy of its
//!   state directory (`ocf_store::replication::Mirror`) and looks at its lease each time a
//!   renewal of it would be due. Once it wins one it takes that log over (its takeover entry
//!   fences the previous owner off), copies what is left up to that entry, and hands over a
//!   [`Takeover`]: the directory then opens like any state directory
//!   (`ocf_store::recovery::open`), replaying the dead owner's journal. It goes on standing
//!   by for the others, and for that one again once it is given back.
//! - [`keep_lease`] renews the lease at a third of its time and keeps the store's [`Fence`]
//!   open until the lease's end less the margin, counted from when each renewal was sent; it
//!   returns when another node holds the lease, or gives it up when the fence was poisoned.
//! - The node's look at the cluster: [`Node::status`] for `/v1/cluster`, its entry in the node
//!   table, the peers a DRA is given.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use ocf_store::replication::{Fence, MirrorError, now_ms};

use crate::directory::SharedDirectory;
use crate::lease::{Holder, LeaseError, Leases};
use crate::log::{LogError, PartitionLog};
use crate::ownership::{Ownership, Timers};
use crate::snapshots::{SnapshotError, Snapshots};
use crate::status::{NodeStatus, NodeTable, Role};

mod standby;
pub use standby::{StandBy, Standing, Taken, Takeover, Telling};

/// How a node reaches NATS and what it is called.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's name (in leases and the node table): unique in the cluster.
    pub node: String,
    /// Its Diameter identity (Origin-Host, Origin-Realm), told in the node table for DRAs.
    pub host: String,
    pub realm: String,
    /// NATS server URLs (`nats://host:port`, `tls://host:port`).
    pub servers: Vec<String>,
    /// A NATS credentials file (a user JWT and its NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// CA certificates (PEM) that NATS servers' certificates must chain to: TLS required.
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Servers each stream and bucket is kept on.
    pub replicas: usize,
    pub timers: Timers,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("NATS ({servers}): {reason}")]
    Connect { servers: String, reason: String },
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the partition's copy: {0}")]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl ClusterError {
    /// Whether what the cluster holds is damaged (a log entry, a snapshot, a lease that does
    /// not read as ocfd's): trying again cannot help.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            ClusterError::Log(LogError::Damaged { .. })
                | ClusterError::Snapshot(SnapshotError::Damaged { .. })
                | ClusterError::Lease(LeaseError::Damaged { .. })
                | ClusterError::Mirror(MirrorError::Damaged(_))
        )
    }
}

/// How long a node tries to open the cluster's buckets at its start.
const FORMING: Duration = Duration::from_secs(30);

/// A node connected to the cluster.
pub struct Node {
    config: NodeConfig,
    js: jetstream::Context,
    leases: Arc<Leases>,
    table: NodeTable,
    directory: Arc<SharedDirectory>,
    snapshots: Arc<Snapshots>,
    tokens: Arc<crate::tokens::SharedTokens>,
    max_payload: usize,
    /// Where this node takes Diameter connections (told in its entry of the node table).
    diameter: std::sync::Mutex<Option<String>>,
    /// It owns as many partitions as it may (told in its entries of the node table).
    full: std::sync::atomic::AtomicBool,
    /// The partitions it has entries for in the node table.
    reported: std::sync::Mutex<std::collections::BTreeSet<u32>>,
}

/// The cluster as `GET /v1/cluster` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterStatus {
    pub partition: u32,
    /// The lease as the bucket holds it, and its revision (the owner's epoch).
    pub owner: Option<Holder>,
    pub epoch: Option<u64>,
    /// The last entry of the partition's log.
    pub log_end: u64,
    /// Its first entry (those before were cut: its latest snapshot includes them).
    pub log_first: u64,
    /// The last entry its latest snapshot includes.
    pub snapshot_entry: Option<u64>,
    pub nodes: Vec<NodeView>,
}

/// A node's entry, with how far behind the log's end it is and how old the entry is.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub status: NodeStatus,
    pub lag_entries: u64,
    pub age_ms: i64,
}

impl Node {
    /// Connects (retrying in the background if no server answers yet) and opens the lease
    /// bucket.
    pub async fn connect(config: NodeConfig) -> Result<Node, ClusterError> {
        let servers = config.servers.join(",");
        let err = |reason: String| ClusterError::Connect {
            servers: servers.clone(),
            reason,
        };
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("ocfd {}", config.node))
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect();
        if let Some(f) = &config.credentials_file {
            options = options
                .credentials_file(f)
                .await
                .map_err(|e| err(format!("credentials file {}: {e}", f.display())))?;
        }
        if let Some(ca) = &config.tls_ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &config.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let urls: Vec<async_nats::ServerAddr> = config
            .servers
            .iter()
            .map(|s| s.parse().map_err(|e| err(format!("{s}: {e}"))))
            .collect::<Result<_, _>>()?;
        let client = options
            .connect(urls)
            .await
            .map_err(|e| err(e.to_string()))?;
        let max_payload = client.server_info().max_payload.max(64 << 10);
        let js = jetstream::new(client);
        // A JetStream cluster that is still forming (its servers starting together with this
        // node) refuses to place the buckets for a while: tried again, for a bounded time.
        let deadline = tokio::time::Instant::now() + FORMING;
        let mut pause = Duration::from_millis(200);
        let (leases, table, directory, snapshots, tokens) = loop {
            let opened = async {
                let r = config.replicas;
                Ok::<_, ClusterError>((
                    Leases::open(&js, &config.node, config.timers.ttl_ms, r).await?,
                    NodeTable::open(&js, r).await?,
                    Arc::new(SharedDirectory::open(&js, r).await?),
                    Arc::new(Snapshots::open(&js, r).await?),
                    Arc::new(crate::tokens::SharedTokens::open(&js, r).await?),
                ))
            }
            .await;
            match opened {
                Ok(o) => break o,
                Err(e) if tokio::time::Instant::now() + pause < deadline => {
                    tracing::warn!(error = %e, "the cluster's buckets cannot be opened yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Node {
            config,
            js,
            leases: Arc::new(leases),
            table,
            directory,
            snapshots,
            tokens,
            max_payload,
            diameter: std::sync::Mutex::new(None),
            full: std::sync::atomic::AtomicBool::new(false),
            reported: Default::default(),
        })
    }

    /// Names where this node takes Diameter connections, in its entry of the node table.
    pub fn set_diameter(&self, addr: &str) {
        *self.diameter.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr.to_owned());
    }

    /// Writes this node's entry in the node table (a failure is only logged: the table is
    /// for people, and for the spread of partitions, which waits for the next look).
    pub async fn report(&self, partition: u32, role: Role, entry: u64) {
        let status = NodeStatus {
            node: self.config.node.clone(),
            role,
            partition,
            entry,
            diameter: self
                .diameter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            host: Some(self.config.host.clone()),
            realm: Some(self.config.realm.clone()),
            full: self.full.load(std::sync::atomic::Ordering::Relaxed),
            at_ms: now_ms(),
        };
        self.reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition);
        if let Err(e) = self.table.put(&status).await {
            tracing::debug!(error = %e, "cannot write the node table");
        }
    }

    /// Takes this node's entries out of the node table (it stops; an entry left by a node
    /// that dies goes by itself after a while), bounded in time.
    pub async fn forget(&self) {
        let reported: Vec<u32> = self
            .reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        let removed = self.table.remove(&self.config.node, &reported);
        match tokio::time::timeout(Duration::from_secs(5), removed).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot remove this node from the node table")
            }
            Err(_) => tracing::debug!("removing this node from the node table took too long"),
        }
    }

    /// Every live node with the partitions it owns, for the spread
    /// ([`crate::balance::hand_to`]).
    pub async fn spread(&self, partitions: u32) -> Result<Vec<crate::balance::Seen>, ClusterError> {
        let entries = self.table.list().await?;
        let mut holders = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            holders.push(self.leases.holder(p).await?.map(|(h, _)| h));
        }
        Ok(crate::balance::seen(&entries, &holders, now_ms()))
    }

    /// Every node as a Diameter peer (from the node table), for a DRA's peer table.
    pub async fn peers(&self) -> Result<Vec<crate::status::Peer>, ClusterError> {
        Ok(crate::status::peers(&self.table.list().await?))
    }

    /// The cluster now: the lease, the log's end, and every node's entry with its lag.
    pub async fn status(&self, partition: u32) -> Result<ClusterStatus, ClusterError> {
        let holder = self.leases.holder(partition).await?;
        let mut log = self.log(partition).await?;
        let log_end = log.last();
        let log_first = log.first().await?;
        let snapshot_entry = self.snapshots.latest_entry(partition).await.ok().flatten();
        let now = now_ms();
        let nodes = self
            .table
            .list()
            .await?
            .into_iter()
            .filter(|n| n.partition == partition)
            .map(|status| NodeView {
                lag_entries: log_end.saturating_sub(status.entry),
                age_ms: now.saturating_sub(status.at_ms),
                status,
            })
            .collect();
        Ok(ClusterStatus {
            partition,
            epoch: holder.as_ref().map(|(_, e)| e.0),
            owner: holder.map(|(h, _)| h),
            log_end,
            log_first,
            snapshot_entry,
            nodes,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.node
    }

    pub fn leases(&self) -> Arc<Leases> {
        self.leases.clone()
    }

    /// The admin API's named tokens, shared by every node.
    pub fn tokens(&self) -> Arc<crate::tokens::SharedTokens> {
        self.tokens.clone()
    }

    /// Every partition's latest snapshot.
    pub fn snapshots(&self) -> Arc<Snapshots> {
        self.snapshots.clone()
    }

    /// The subscription ids given through admin APIs, shared by every node.
    pub fn directory(&self) -> Arc<SharedDirectory> {
        self.directory.clone()
    }

    /// Opens a partition's log.
    pub async fn log(&self, partition: u32) -> Result<PartitionLog, LogError> {
        PartitionLog::open(&self.js, partition, self.config.replicas, self.max_payload).await
    }
}

/// How a kept lease ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseEnd {
    /// Another node holds it.
    Deposed,
    /// Given up on purpose (a stop or a drain): a standby may take it at once.
    Released,
}

/// Keeps the lease of `partition`, held as `ownership`, for as long as it can: renewed at a
/// third of its time, the fence open until its end less the margin. Returns once another node
/// holds it, or once `release` fires (it is then given up, to the node it names if any); the
/// fence is closed either way.
/// While NATS cannot be reached it keeps trying; the fence closes by time meanwhile and opens
/// again if a renewal gets through first.
pub async fn keep_lease(
    leases: Arc<Leases>,
    partition: u32,
    mut ownership: Ownership,
    fence: Arc<Fence>,
    release: tokio::sync::oneshot::Receiver<Option<String>>,
) -> LeaseEnd {
    let mut release = std::pin::pin!(release);
    let mut due = ownership.renew_at_ms();
    // A poisoned fence is handed over at once, not at the next renewal.
    let poisoned = Arc::new(tokio::sync::Notify::new());
    let wake = poisoned.clone();
    fence.when_poisoned(Box::new(move || wake.notify_one()));
    loop {
        let wait = due.saturating_sub(now_ms()).max(0) as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = poisoned.notified() => {}
            next = &mut release => {
                fence.close();
                let next = next.ok().flatten();
                match leases.hand_over(partition, ownership.epoch, next.as_deref(), now_ms()).await {
                    Ok(true) => tracing::info!(partition, next = ?next, "lease given up"),
                    Ok(false) => tracing::warn!(partition, "the lease was already another node's"),
                    Err(e) => tracing::warn!(error = %e, partition, "cannot give the lease up; it ends by itself"),
                }
                return LeaseEnd::Released;
            }
        }
        if fence.is_poisoned() {
            // This node's state no longer follows the log: another node takes over at once.
            match leases
                .hand_over(partition, ownership.epoch, None, now_ms())
                .await
            {
                Ok(_) => tracing::warn!(
                    partition,
                    "lease given up: this node's state left the partition's log"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, partition, "cannot give the lease up; it ends by itself")
                }
            }
            return LeaseEnd::Deposed;
        }
        let sent_at = now_ms();
        match leases.renew(partition, ownership.epoch, sent_at).await {
            Ok(Some(epoch)) => {
                ownership.renewed(epoch, sent_at);
                fence.open_until(ownership.grant_until_ms());
                due = ownership.renew_at_ms();
            }
            Ok(None) => {
                fence.close();
                tracing::warn!(
                    partition,
                    "the lease was taken by another node: this node stops charging for the partition"
                );
                return LeaseEnd::Deposed;
            }
            Err(e) => {
                tracing::warn!(error = %e, partition, "cannot renew the lease; trying again");
                if !fence.may_grant(now_ms()) {
                    tracing::warn!(
                        partition,
                        "the lease runs out: not charging until it is renewed"
                    );
                }
                // Tried again soon, not a third of a lease later.
                due = now_ms() + 200;
            }
        }
    }
}
