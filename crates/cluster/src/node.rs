//! One ocfd node in a cluster: connected to NATS, a standby of a partition until it takes the
//! partition's lease, then its owner until it stops or is deposed.
//!
//! - [`Node::stand_by`] follows the partition's log into a [`Mirror`] of its state directory
//!   and tries for the lease each time a renewal of it would be due. Once it has the lease it
//!   takes the log over (its takeover entry fences the previous owner off), copies what is left
//!   up to that entry, and hands back a [`Takeover`]: the directory then opens like any state
//!   directory (`ocf_store::recovery::open`), replaying the dead owner's journal.
//! - [`keep_lease`] renews the lease at a third of its time and keeps the store's [`Fence`]
//!   open until the lease's end less the margin, counted from when each renewal was sent; it
//!   returns when another node holds the lease.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use ocf_store::replication::{Fence, Mirror, MirrorError, now_ms};

use crate::directory::SharedDirectory;
use crate::lease::{Claim, Holder, LeaseError, Leases};
use crate::log::{Entry, Kind, LogError, PartitionLog};
use crate::ownership::{Ownership, Timers};
use crate::snapshots::{SnapshotError, Snapshots};
use crate::status::{NodeStatus, NodeTable, Role};

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

/// What a node holds once it owns a partition.
pub struct Takeover {
    pub log: PartitionLog,
    pub ownership: Ownership,
    pub fence: Arc<Fence>,
    /// The last journal sequence the log holds (the store's journal continues after it).
    pub journal_last: u64,
    /// The account changes the log holds.
    pub changes_last: u64,
}

/// What a standby tells about itself while it waits (for logs, systemd's status and metrics).
#[derive(Clone, Debug, Default)]
pub struct Standing {
    /// The log's last entry copied.
    pub entry: u64,
    /// The owner as the lease names it, and until when.
    pub owner: Option<Holder>,
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
        let leases = Leases::open(&js, &config.node, config.timers.ttl_ms, config.replicas).await?;
        let table = NodeTable::open(&js, config.replicas).await?;
        let directory = Arc::new(SharedDirectory::open(&js, config.replicas).await?);
        let snapshots = Arc::new(Snapshots::open(&js, config.replicas).await?);
        let tokens = Arc::new(crate::tokens::SharedTokens::open(&js, config.replicas).await?);
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
        })
    }

    /// Names where this node takes Diameter connections, in its entry of the node table.
    pub fn set_diameter(&self, addr: &str) {
        *self.diameter.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr.to_owned());
    }

    /// Writes this node's entry in the node table (a failure is only logged: the table is
    /// for people, nothing decides by it).
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
            at_ms: now_ms(),
        };
        if let Err(e) = self.table.put(&status).await {
            tracing::debug!(error = %e, "cannot write the node table");
        }
    }

    /// Takes this node's entry out of the node table (it stops; an entry left by a node that
    /// dies goes by itself after a while).
    pub async fn forget(&self) {
        self.forget_all_but(None).await
    }

    /// Removes this node's entries in the node table for every partition but `keep`.
    pub async fn forget_all_but(&self, keep: Option<u32>) {
        if let Err(e) = self.table.remove(&self.config.node, keep).await {
            tracing::debug!(error = %e, "cannot remove this node from the node table");
        }
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

    /// Stands by for `partition`: copies its log into a fresh mirror in `dir` as it grows and
    /// takes the partition once its lease has ended. `standing` hears where it is.
    pub async fn stand_by(
        &self,
        partition: u32,
        dir: &Path,
        segment_bytes: u64,
        standing: impl Fn(&Standing),
    ) -> Result<Takeover, ClusterError> {
        self.stand_by_for(
            partition,
            dir,
            segment_bytes,
            standing,
            &tokio::sync::Mutex::new(false),
        )
        .await
    }

    /// Stands by for each of `partitions` at once, each copied into `dir_of(partition)`, and
    /// takes over the first whose lease it wins: a node owns one partition at a time, so
    /// claims take turns (a claim in flight makes the others wait for it, not skip their
    /// turn: each partition gets its claim at every look), and once one is won the others
    /// only look.
    pub async fn stand_by_any(
        &self,
        partitions: &[u32],
        dir_of: impl Fn(u32) -> PathBuf,
        segment_bytes: u64,
        standing: impl Fn(u32, &Standing),
    ) -> Result<(u32, Takeover), ClusterError> {
        let slot = tokio::sync::Mutex::new(false);
        let (dir_of, standing, slot) = (&dir_of, &standing, &slot);
        let mut each: Vec<_> = partitions
            .iter()
            .map(|&p| {
                Box::pin(async move {
                    let dir = dir_of(p);
                    let t = self
                        .stand_by_for(p, &dir, segment_bytes, |s| standing(p, s), slot)
                        .await;
                    (p, t)
                })
            })
            .collect();
        let (p, taken) = std::future::poll_fn(|cx| {
            for f in each.iter_mut() {
                if let std::task::Poll::Ready(r) = f.as_mut().poll(cx) {
                    return std::task::Poll::Ready(r);
                }
            }
            std::task::Poll::Pending
        })
        .await;
        Ok((p, taken?))
    }

    async fn stand_by_for(
        &self,
        partition: u32,
        dir: &Path,
        segment_bytes: u64,
        standing: impl Fn(&Standing),
        slot: &tokio::sync::Mutex<bool>,
    ) -> Result<Takeover, ClusterError> {
        let mut log = self.log(partition).await?;
        let mut state = Standing::default();
        let (mut mirror, mut installed) = self.seed(partition, dir, segment_bytes, None).await?;
        state.entry = installed;
        let mut looked = tokio::time::Instant::now();
        // A newer snapshot being read for the copy (off the loop: following goes on).
        let mut fetching: Option<
            tokio::task::JoinHandle<Option<crate::snapshots::PartitionSnapshot>>,
        > = None;
        let every = Duration::from_millis(self.config.timers.renew_every_ms().max(50) as u64);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut follower = None;
        let (epoch, sent_at) = loop {
            if follower.is_none() {
                match log.follow(state.entry + 1).await {
                    Ok(f) => follower = Some(f),
                    Err(e) => {
                        tracing::warn!(error = %e, partition, "standby: cannot follow the log yet")
                    }
                }
            }
            tokio::select! {
                entry = async {
                    match follower.as_mut() {
                        Some(f) => f.next().await,
                        None => std::future::pending().await,
                    }
                } => match entry {
                    Ok(e) if e.sequence <= state.entry => {}
                    Ok(e) if e.sequence > state.entry + 1 => {
                        // The entries between were cut from the log: its snapshot has them.
                        tracing::info!(partition, from = state.entry + 1, next = e.sequence, "standby: entries were cut from the log; starting the copy again from the partition's snapshot");
                        (mirror, installed) = self.seed(partition, dir, segment_bytes, Some(state.entry)).await?;
                        state.entry = installed;
                        follower = None;
                    }
                    Ok(e) => {
                        mirror.apply(&e)?;
                        state.entry = e.sequence;
                    }
                    Err(e @ LogError::Damaged { .. }) => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(error = %e, partition, "standby: following the log again");
                        follower = None;
                    }
                },
                fetched = async {
                    match fetching.as_mut() {
                        Some(f) => f.await.ok().flatten(),
                        None => std::future::pending().await,
                    }
                } => {
                    fetching = None;
                    if let Some(s) = fetched.filter(|s| s.entry > installed && s.entry <= state.entry) {
                        match mirror.mirror.install(&s.snapshot) {
                            Ok(true) => {
                                tracing::info!(partition, entry = s.entry, "standby: the partition's snapshot is in the copy");
                                installed = s.entry;
                            }
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, partition, "standby: the partition's snapshot is not in the copy"),
                        }
                    }
                }
                _ = tick.tick() => {
                    self.report(partition, Role::Standby, state.entry).await;
                    if looked.elapsed() >= INSTALL_EVERY && fetching.is_none() {
                        looked = tokio::time::Instant::now();
                        fetching = self.fetch_newer(partition, installed, state.entry).await;
                    }
                    let mut taken = slot.lock().await;
                    if *taken {
                        // Another partition was taken here: only look at this one.
                        if let Ok(h) = self.leases.holder(partition).await {
                            state.owner = h.map(|(h, _)| h);
                            standing(&state);
                        }
                    } else {
                        let sent_at = now_ms();
                        match self.leases.claim(partition, sent_at).await {
                            Ok(Claim::Taken(epoch)) => {
                                *taken = true;
                                break (epoch, sent_at);
                            }
                            Ok(Claim::Held(h)) => {
                                state.owner = Some(h);
                                standing(&state);
                            }
                            Err(e) => tracing::warn!(error = %e, partition, "standby: cannot read the lease"),
                        }
                    }
                }
            }
        };
        drop(follower);
        if let Some(f) = fetching.take() {
            f.abort();
        }
        let ownership = Ownership::taken(epoch, sent_at, self.config.timers);
        // The takeover entry fences the previous owner off; its appends that land before it
        // are copied below. (It may append between our look at the log's end and our entry:
        // look again.)
        let mut attempts = 0;
        let taken_at = loop {
            match log.take_over(epoch.0).await {
                Ok(s) => break s,
                Err(LogError::Fenced(_)) if attempts < 50 => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        };
        let mut from = state.entry + 1;
        while from < taken_at {
            let entries = match log.read(from, 256).await {
                Ok(entries) => entries,
                Err(LogError::Cut { .. }) => {
                    (mirror, state.entry) = self
                        .seed(partition, dir, segment_bytes, Some(state.entry))
                        .await?;
                    from = state.entry + 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if entries.is_empty() {
                break;
            }
            for e in entries.iter().filter(|e| e.sequence < taken_at) {
                mirror.apply(e)?;
                state.entry = e.sequence;
            }
            from = entries.last().map_or(taken_at, |e| e.sequence + 1);
        }
        let mut mirror = mirror.mirror;
        mirror.sync()?;
        let fence = Arc::new(Fence::new(partition));
        fence.open_until(ownership.grant_until_ms());
        tracing::info!(
            partition,
            epoch = epoch.0,
            entries = state.entry,
            journal_last = mirror.last_sequence(),
            changes = mirror.changes(),
            "took the partition over"
        );
        Ok(Takeover {
            log,
            ownership,
            fence,
            journal_last: mirror.last_sequence(),
            changes_last: mirror.changes(),
        })
    }

    /// A fresh copy of `partition` in `dir` and the log's entry it starts after: from the
    /// partition's latest snapshot if it has one (the log's entries it includes may be cut).
    /// `past`: the copy being replaced had reached that entry and found the entries after it
    /// cut, so only a snapshot past it will do (looked for again, with pauses, until one is
    /// there); `None` (a start): no snapshot yet means an empty copy. The snapshot is looked
    /// for again, with pauses, while it cannot be read.
    async fn seed(
        &self,
        partition: u32,
        dir: &Path,
        segment_bytes: u64,
        past: Option<u64>,
    ) -> Result<(Copy, u64), ClusterError> {
        let mut pause = Duration::from_millis(200);
        loop {
            match self.snapshots.latest(partition).await {
                Ok(Some(s)) if past.is_none_or(|p| s.entry > p) => {
                    let mirror = Mirror::restore(dir, segment_bytes, &s.snapshot, &s.change_log)?;
                    tracing::info!(
                        partition,
                        entry = s.entry,
                        journal = mirror.last_sequence(),
                        changes = mirror.changes(),
                        "copy started from the partition's snapshot"
                    );
                    return Ok((Copy::new(mirror), s.entry));
                }
                Ok(None) if past.is_none() => {
                    return Ok((Copy::new(Mirror::create(dir, segment_bytes)?), 0));
                }
                Ok(_) => tracing::warn!(
                    partition,
                    past,
                    "the log was cut past this copy, and no snapshot includes the cut entries yet"
                ),
                Err(e @ SnapshotError::Damaged { .. }) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, partition, "standby: cannot read the partition's snapshot yet")
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Starts reading `partition`'s latest snapshot if it is newer than `installed` and the
    /// copy, at entry `at`, holds what it includes (None: nothing to read). A failure is only
    /// logged: the copy is whole without it.
    async fn fetch_newer(
        &self,
        partition: u32,
        installed: u64,
        at: u64,
    ) -> Option<tokio::task::JoinHandle<Option<crate::snapshots::PartitionSnapshot>>> {
        match self.snapshots.latest_entry(partition).await {
            Ok(Some(e)) if e > installed && e <= at => {}
            _ => return None,
        }
        let snapshots = self.snapshots.clone();
        Some(tokio::spawn(async move {
            match snapshots.latest(partition).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, partition, "standby: cannot read the partition's snapshot");
                    None
                }
            }
        }))
    }
}

/// How often a standby looks for a newer snapshot of a partition for its copy.
const INSTALL_EVERY: Duration = Duration::from_secs(10);

/// The most octets the pieces of one change may add up to (a change record's frame).
const MAX_CHANGE_PIECES: usize = (64 << 20) + 64;

/// A standby's copy being written, with the pieces of a large change read so far.
struct Copy {
    mirror: Mirror,
    pieces: Vec<u8>,
}

impl Copy {
    fn new(mirror: Mirror) -> Copy {
        Copy {
            mirror,
            pieces: Vec::new(),
        }
    }

    /// Copies one entry of the log.
    fn apply(&mut self, e: &Entry) -> Result<(), MirrorError> {
        match e.kind {
            Kind::Records => self.mirror.records(&e.body).map(|_| ()),
            Kind::ChangePart => {
                // A change is at most 64 MiB (the change log's bound): pieces beyond are not
                // ocfd's.
                if self.pieces.len() + e.body.len() > MAX_CHANGE_PIECES {
                    return Err(MirrorError::Damaged(format!(
                        "entry {}: the pieces of a change exceed what a change may hold",
                        e.sequence
                    )));
                }
                self.pieces.extend_from_slice(&e.body);
                Ok(())
            }
            Kind::Change if self.pieces.is_empty() => self.mirror.change(&e.body),
            Kind::Change => {
                self.pieces.extend_from_slice(&e.body);
                let whole = std::mem::take(&mut self.pieces);
                self.mirror.change(&whole)
            }
            // A change whose owner was deposed half way never took effect.
            Kind::Takeover => {
                self.pieces.clear();
                Ok(())
            }
        }
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
    loop {
        let wait = due.saturating_sub(now_ms()).max(0) as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
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
