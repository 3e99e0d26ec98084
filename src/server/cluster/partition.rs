//! One engine of a cluster node: it serves a partition the node took over, from the takeover
//! until the node stops it, another node takes the lease, or a drain hands it over. Its
//! journal and account changes go to the partition's log, its snapshots to the object store,
//! its lease is kept; at a clean end the log gets the stop's last records before the lease
//! goes, and nothing of the partition is left running when the node stands by for it again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ocf_cluster::node::{Node, keep_lease};
use ocf_cluster::replicator::{self, Replicator};
use ocf_cluster::snapshots::{Publisher, Publishing};
use ocf_cluster::status::Role;
use tracing::info;

use super::Credentials;
use crate::config::Config;
use crate::server::admin::cluster::ClusterHandle;
use crate::server::{LoadConfig, Server, ServerError, reload};

/// How an engine stopped serving its partition.
pub(super) enum Ended {
    /// Asked to (the node stops): the lease was given up.
    Stopped,
    /// Another node took the lease.
    Deposed,
    /// Handed over on purpose (a drain), to the node named or any standby.
    HandedOver(String),
    /// It could not serve.
    Failed(ServerError),
}

/// What an engine serves its partition with.
pub(super) struct Partition {
    pub(super) config: Config,
    pub(super) node: Arc<Node>,
    pub(super) taken: ocf_cluster::node::Takeover,
    /// Its own listener (bound, where it is reached, as the lease names it); none: the
    /// node's listeners (one partition).
    pub(super) listener: Option<(tokio::net::TcpListener, std::net::SocketAddr, String)>,
    pub(super) admin: Option<(crate::server::admin::Slot, Credentials)>,
    pub(super) owners: crate::server::admin::forward::Owners,
    pub(super) engine_tx:
        tokio::sync::watch::Sender<std::collections::BTreeMap<u32, std::net::SocketAddr>>,
    /// The drains asked for (through the admin API, or by the spread).
    pub(super) drains: Drain,
    /// Told each time the engine's own liveness check passes (none: it tells systemd).
    pub(super) alive: Option<Alive>,
}

/// Told each time an engine's liveness check passes (true), and that it is stopping (false).
pub(crate) type Alive = Arc<dyn Fn(bool) + Send + Sync>;

/// How a drain is asked for, and heard.
pub(super) type Drain = (
    tokio::sync::mpsc::Sender<Option<String>>,
    tokio::sync::mpsc::Receiver<Option<String>>,
);

/// Serves `partition` from its takeover until `stop` fires, the lease is lost or a drain
/// hands it over: its journal and account changes replicated, its snapshots published, its
/// lease kept, and at a clean end the log given the last records before the lease goes.
pub(super) async fn serve_partition(
    partition: u32,
    p: Partition,
    stop: tokio::sync::oneshot::Receiver<()>,
    reloads: tokio::sync::mpsc::UnboundedReceiver<LoadConfig>,
    set_log_level: Option<reload::SetLogLevel>,
) -> Ended {
    let cluster = |e: String| Ended::Failed(ServerError::Cluster(e));
    let (config, node, takeover) = (&p.config, p.node, p.taken);
    let name = node.name().to_owned();
    let (sink, changes) = replicator::changes();
    let fence = takeover.fence.clone();
    let epoch = takeover.ownership.epoch.0;
    // Before its lease is kept: a failure gives it up at once (another node takes over).
    let give_up = |e: String| {
        let (leases, epoch) = (node.leases(), takeover.ownership.epoch);
        async move {
            let _ = leases.release(partition, epoch).await;
            cluster(e)
        }
    };
    let log = match node.log(partition).await {
        Ok(l) => l,
        Err(e) => return give_up(e.to_string()).await,
    };
    let replicator = match Replicator::start(
        takeover.log,
        changes,
        fence.clone(),
        takeover.journal_last,
        takeover.changes_last,
    ) {
        Ok(r) => r,
        Err(e) => return give_up(e.to_string()).await,
    };
    // Its periodic snapshots go to the object store, and the log is cut behind them.
    let (publisher, publishing) = Publisher::start(Publishing {
        snapshots: node.snapshots(),
        log,
        cuts: replicator.cuts(),
        fence: fence.clone(),
        epoch,
        change_log: config.partition_copy(partition).join("changes"),
        published: Box::new(move |entry| snapshot_published(partition, Some(entry))),
    });
    // Counted from the takeover until the first one.
    snapshot_published(partition, None);
    // Keep the lease while the store opens: replay may take a while.
    let (release, released) = tokio::sync::oneshot::channel();
    let lease = tokio::spawn(keep_lease(
        node.leases(),
        partition,
        takeover.ownership,
        fence.clone(),
        released,
    ));
    let replication = ocf_store::Replication {
        fence: fence.clone(),
        changes: sink,
    };
    // Off the runtime's threads: recovery blocks, and the changes it makes wait for the
    // replicator's task.
    let (engine, engine_addr, advertised) = match p.listener {
        Some((l, bound, advertised)) => (Some(l), Some(bound), Some(advertised)),
        None => (None, None, None),
    };
    let cfg = engine_config(config, partition, engine_addr);
    let bind = crate::server::PartitionBind {
        replication,
        engine,
        credentials: p
            .admin
            .as_ref()
            .map(|(_, (token, tokens))| (token.clone(), tokens.clone())),
    };
    let opened =
        tokio::task::spawn_blocking(move || Server::bind_partition(&cfg, Some(bind))).await;
    let winding = Winding {
        partition,
        release,
        lease,
        replicator,
        publishing,
    };
    let mut server = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            drop(publisher);
            return winding.give_up(Ended::Failed(e)).await;
        }
        Err(e) => {
            drop(publisher);
            return winding
                .give_up(cluster(format!("opening the partition: {e}")))
                .await;
        }
    };
    // Its journal replicated from now on.
    if let Err(e) = winding.replicator.attach(server.shared.store.clone()) {
        drop((server, publisher));
        return winding.give_up(cluster(e.to_string())).await;
    }
    let Winding {
        partition: _,
        release,
        mut lease,
        replicator,
        publishing,
    } = winding;
    let (drain, mut drains) = p.drains;
    server.admin_slot = p.admin.as_ref().map(|(slot, _)| slot.clone());
    server.on_snapshot = Some(Arc::new(move |t| publisher.taken(t)));
    server.alive = p.alive.clone();
    server.cluster = Some(Arc::new(ClusterHandle {
        node: node.clone(),
        partition,
        partitions: config.cluster.partitions.max(1),
        owners: p.owners,
        drain,
    }));
    let advertised = match engine_addr {
        Some(a) => {
            p.engine_tx.send_modify(|e| {
                e.insert(partition, a);
            });
            advertised.unwrap_or_else(|| a.to_string())
        }
        None => {
            // Its own listeners: named in the lease from the next renewal on.
            let a = config.cluster.advertise_diameter.clone().or_else(|| {
                server
                    .local_addrs()
                    .into_iter()
                    .find(|(t, _)| *t == "tcp")
                    .map(|(_, a)| a.to_string())
            });
            if let Some(a) = &a {
                node.leases().advertise(a);
                node.set_diameter(a);
            }
            a.unwrap_or_default()
        }
    };
    let store = server.shared.store.clone();
    info!(node = %name, partition, engine = %advertised, "serving the partition");
    // The node table says who owns the partition and how far the log is.
    let reporter = {
        let (node, appended) = (node.clone(), replicator.appended_handle());
        tokio::spawn(async move {
            loop {
                node.report(partition, Role::Owner, appended.load(Ordering::Acquire))
                    .await;
                tokio::time::sleep(REPORT_EVERY).await;
            }
        })
    };
    let deposed = Arc::new(AtomicBool::new(false));
    // A drain asked for through the admin API: to whom (None: any standby).
    let drained: Arc<std::sync::Mutex<Option<Option<String>>>> = Arc::default();
    let stopping = {
        let (deposed, drained) = (deposed.clone(), drained.clone());
        // Borrowed: the replicator goes on after the stop, for the stop's last records.
        let (lease, replicator) = (&mut lease, &replicator);
        async move {
            tokio::select! {
                _ = stop => {}
                _ = replicator.deposed() => deposed.store(true, Ordering::Release),
                _ = lease => deposed.store(true, Ordering::Release),
                Some(to) = drains.recv() => {
                    info!(partition, to = ?to, "draining: handing the partition over");
                    *drained.lock().unwrap_or_else(|p| p.into_inner()) = Some(to);
                }
            }
        }
    };
    server.serve(stopping, reloads, set_log_level).await;
    reporter.abort();
    if deposed.load(Ordering::Acquire) {
        // The lease is someone else's: nothing more goes to the log.
        lease.abort();
        wound_down(partition, replicator, publishing).await;
        return Ended::Deposed;
    }
    // A clean stop: the log gets what the stop wrote, then the lease is given up so that a
    // standby takes over at once.
    let written = store
        .journal()
        .map_or(0, |j| j.progress().written.load(Ordering::Acquire));
    let deadline = tokio::time::Instant::now() + STOP_PATIENCE;
    while store
        .journal()
        .is_some_and(|j| j.progress().replicated.load(Ordering::Acquire) < written)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The lease first (its fence closes: nothing more is published), then what is left of
    // the replication ends.
    let drained = drained.lock().unwrap_or_else(|p| p.into_inner()).take();
    let _ = release.send(drained.clone().flatten());
    let _ = tokio::time::timeout(STOP_PATIENCE, lease).await;
    wound_down(partition, replicator, publishing).await;
    match drained {
        Some(to) => {
            Ended::HandedOver(to.unwrap_or_else(|| "whichever standby claims it first".into()))
        }
        None => Ended::Stopped,
    }
}

/// What an engine holds of its partition besides its store, until it is done with it.
struct Winding {
    partition: u32,
    release: tokio::sync::oneshot::Sender<Option<String>>,
    lease: tokio::task::JoinHandle<ocf_cluster::node::LeaseEnd>,
    replicator: Replicator,
    publishing: tokio::task::JoinHandle<()>,
}

impl Winding {
    /// The engine could not serve the partition: its lease is given up at once (another
    /// node takes it over), and nothing of it is left running.
    async fn give_up(self, why: Ended) -> Ended {
        let _ = self.release.send(None);
        let _ = tokio::time::timeout(STOP_PATIENCE, self.lease).await;
        wound_down(self.partition, self.replicator, self.publishing).await;
        why
    }
}

/// Waits (bounded) until the replicator and the snapshot publisher of a partition have ended:
/// its copy may then be made afresh, nothing else reading or writing it.
async fn wound_down(
    partition: u32,
    replicator: Replicator,
    publishing: tokio::task::JoinHandle<()>,
) {
    let stopped = replicator.stop(STOP_PATIENCE).await;
    let published = tokio::time::timeout(STOP_PATIENCE, publishing)
        .await
        .is_ok();
    if !(stopped && published) {
        tracing::warn!(
            partition,
            "the partition's replication did not end in time; its copy is made afresh anyway"
        );
    }
}

/// The configuration of this node's engine for `partition`: its store is the partition's
/// copy, with the partition's tenants only; with an `engine` listener, it takes Diameter there
/// alone (the routers', this node's and the others'), else on the node's own listeners.
fn engine_config(config: &Config, partition: u32, engine: Option<std::net::SocketAddr>) -> Config {
    let mut c = config.clone();
    c.serving = Some(partition);
    if let Some(engine) = engine {
        c.diameter.listen_tcp = vec![engine.to_string()];
        c.diameter.listen_sctp.clear();
        c.diameter.tls.listen.clear();
    }
    c
}

/// The gauges of the partition's latest snapshot this owner published (`entry` none: none yet,
/// counted from now).
fn snapshot_published(partition: u32, entry: Option<u64>) {
    let label = [("partition", partition.to_string())];
    let now = ocf_store::replication::now_ms() as f64 / 1000.0;
    metrics::gauge!("ocfd_cluster_snapshot_timestamp_seconds", &label).set(now);
    if let Some(e) = entry {
        metrics::gauge!("ocfd_cluster_snapshot_entry", &label).set(e as f64);
    }
}

/// How often the owner writes its entry in the node table.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// How long a stopping owner waits for the log to take its last records.
const STOP_PATIENCE: Duration = Duration::from_secs(10);
